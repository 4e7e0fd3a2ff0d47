/*
 * filevol: volumes by name for the gateway (contract in filevol.h). One struct fvol per
 * volume in use, in a hash table, with a small state machine (filevol_int.h, enum fv_state).
 * An operation on an open volume goes straight to its engine; otherwise it waits in the
 * volume's queue, in arrival order, and the queue runs again after each state change.
 * Control-API calls (create, delete, allocated bytes, listing) run on the helper thread
 * (filevol_http.c).
 */
#include <errno.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "nfsgw/filevol_int.h"

#define USED_REFRESH_MS 2000

static void vol_run(struct fvol *v);
static void check_close(struct filevol *fv);

static uint64_t round_up(uint64_t x, uint64_t step)
{
	return (x + step - 1) / step * step;
}

/* ---- table ---- */

static size_t name_hash(const char *s)
{
	uint64_t h = 1469598103934665603ull;
	for (; *s; s++)
		h = (h ^ (unsigned char)*s) * 1099511628211ull;
	return (size_t)h;
}

static struct fvol *vol_find(struct filevol *fv, const char *name)
{
	for (struct fvol *v = fv->tab[name_hash(name) & (fv->tabsz - 1)]; v; v = v->hnext)
		if (!strcmp(v->name, name))
			return v;
	return NULL;
}

static void tab_grow(struct filevol *fv)
{
	size_t nsz = fv->tabsz * 2;
	struct fvol **nt = calloc(nsz, sizeof(*nt));
	if (!nt)
		return; /* longer chains, still correct */
	for (size_t i = 0; i < fv->tabsz; i++) {
		while (fv->tab[i]) {
			struct fvol *v = fv->tab[i];
			fv->tab[i] = v->hnext;
			size_t b = name_hash(v->name) & (nsz - 1);
			v->hnext = nt[b];
			nt[b] = v;
		}
	}
	free(fv->tab);
	fv->tab = nt;
	fv->tabsz = nsz;
}

static struct fvol *vol_get(struct filevol *fv, const char *name)
{
	struct fvol *v = vol_find(fv, name);
	if (v)
		return v;
	v = calloc(1, sizeof(*v));
	if (!v)
		return NULL;
	v->fv = fv;
	snprintf(v->name, sizeof(v->name), "%s", name);
	v->last_use = loop_now_ms();
	if (fv->nvols >= fv->tabsz)
		tab_grow(fv);
	size_t b = name_hash(name) & (fv->tabsz - 1);
	v->hnext = fv->tab[b];
	fv->tab[b] = v;
	fv->nvols++;
	return v;
}

static void vol_free(struct fvol *v)
{
	struct filevol *fv = v->fv;
	struct fvol **pp = &fv->tab[name_hash(v->name) & (fv->tabsz - 1)];
	while (*pp != v)
		pp = &(*pp)->hnext;
	*pp = v->hnext;
	fv->nvols--;
	free(v);
}

/* ---- requests ---- */

static struct fvreq *req_get(struct filevol *fv)
{
	struct fvreq *q = fv->free_reqs;
	if (q)
		fv->free_reqs = q->next;
	else
		q = malloc(sizeof(*q));
	if (q)
		memset(q, 0, offsetof(struct fvreq, snap) + 1);
	return q;
}

static void req_finish(struct fvreq *q, int res)
{
	struct filevol *fv = q->v->fv;
	filevol_cb cb = q->cb;
	void *arg = q->arg;
	q->v->last_use = loop_now_ms();
	q->next = fv->free_reqs;
	fv->free_reqs = q;
	cb(arg, res);
}

static void deferred_finish(void *arg)
{
	struct fvreq *q = arg;
	struct fvol *v = q->v;
	v->jobs--;
	req_finish(q, q->res);
	check_close(v->fv);
}

/* Completes q at the end of this loop iteration (never inside the caller's call). */
static void req_defer(struct fvreq *q, int res)
{
	q->res = res;
	q->v->jobs++;
	if (loop_defer(q->v->fv->l, deferred_finish, q) < 0) {
		/* Without memory for a defer, a timer is the other way to get out of the call. */
		while (loop_timer_add(q->v->fv->l, 0, deferred_finish, q, NULL) < 0)
			;
	}
}

static void q_push_head(struct fvol *v, struct fvreq *q)
{
	q->next = v->qhead;
	v->qhead = q;
	if (!v->qtail)
		v->qtail = q;
}

static void q_push_tail(struct fvol *v, struct fvreq *q)
{
	q->next = NULL;
	if (v->qtail)
		v->qtail->next = q;
	else
		v->qhead = q;
	v->qtail = q;
}

static struct fvreq *q_pop(struct fvol *v)
{
	struct fvreq *q = v->qhead;
	if (q) {
		v->qhead = q->next;
		if (!v->qhead)
			v->qtail = NULL;
	}
	return q;
}

static void q_fail_all(struct fvol *v, int res)
{
	struct fvreq *q;
	while ((q = q_pop(v)))
		req_defer(q, res);
}

static int io_err(int r)
{
	return r == -ESTALE || r == -ENOMEM || r == -ENOSPC || r == -EFBIG ? r : -EIO;
}

/* ---- engine lifecycle ---- */

static void fenced_closed(void *arg, int res)
{
	(void)res;
	struct fvol *v = arg;
	v->e = NULL;
	v->jobs--;
	check_close(v->fv);
}

static void fence_close(void *arg)
{
	struct fvol *v = arg;
	if (v->e && engine_close(v->e, fenced_closed, v) == 0)
		return;
	v->jobs--;
	check_close(v->fv);
}

/* A newer engine owns the volume: never reopen it here (that would fence the new owner). */
static void vol_fence(struct fvol *v)
{
	if (v->st != FV_OPEN)
		return;
	fprintf(stderr, "filevol: %s: fenced by a newer engine (ours had epoch %llu)\n", v->name,
		(unsigned long long)engine_epoch(v->e));
	v->st = FV_FENCED;
	q_fail_all(v, -ESTALE);
	if (v->pinned)
		return; /* its bdev is in use until filevol_close: it keeps failing -ESTALE */
	/* Not from inside the engine's own callback. */
	v->jobs++;
	if (loop_defer(v->fv->l, fence_close, v) < 0)
		v->jobs--;
}

static void opened(void *arg, int res);

static void probe_done(struct fv_job *j)
{
	struct fvol *v = j->v;
	int res = j->res;
	v->jobs--;
	free(j);
	opened(v, res == -ENOENT ? -ENOENT : -ENOTCONN);
}

/* The engine says -ENOENT only when every node answered so; with one down, ask the nodes'
 * API whether the volume can exist at all (a write to a new file must get -ENOSPC, a read
 * zeros, not -EIO). */
static bool probe_missing(struct fvol *v)
{
	struct fv_job *j = calloc(1, sizeof(*j));
	if (!j)
		return false;
	j->kind = JOB_PROBE;
	j->v = v;
	j->done = probe_done;
	j->replicas = v->fv->replicas;
	snprintf(j->name, sizeof(j->name), "%s", v->name);
	v->jobs++;
	fvh_submit(v->fv, j);
	return true;
}

static void opened(void *arg, int res)
{
	struct fvol *v = arg;
	struct filevol *fv = v->fv;
	if (res == -ENOTCONN && v->e) {
		v->e = NULL;
		if (!fv->closing && probe_missing(v))
			return;
	}
	if (res == 0) {
		v->st = FV_OPEN;
		v->size = engine_size(v->e);
		v->last_use = loop_now_ms();
		vol_run(v);
		check_close(fv);
		return;
	}
	v->e = NULL;
	if (res == -ENOENT) {
		v->st = FV_MISSING;
		vol_run(v);
	} else {
		fprintf(stderr, "filevol: %s: open failed: %s\n", v->name, strerror(-res));
		v->st = FV_CLOSED;
		q_fail_all(v, io_err(res));
	}
	check_close(fv);
}

static void open_failed_deferred(void *arg)
{
	struct fvol *v = arg;
	v->jobs--;
	opened(v, -EIO);
}

static void start_open(struct fvol *v)
{
	struct filevol *fv = v->fv;
	struct engine_params p = {.volume = v->name,
				  .local_node = fv->engine_id,
				  .local = NULL,
				  .naddrs = fv->naddrs,
				  .addrs = fv->addrs,
				  .io_timeout_ms = fv->io_timeout_ms};
	v->st = FV_OPENING;
	int r = engine_open(fv->l, &p, &v->e, opened, v);
	if (r < 0) {
		v->e = NULL;
		v->jobs++;
		if (loop_defer(fv->l, open_failed_deferred, v) < 0) {
			v->jobs--;
			v->st = FV_CLOSED;
		}
	}
}

static void closed(void *arg, int res)
{
	(void)res;
	struct fvol *v = arg;
	v->jobs--;
	v->e = NULL;
	v->st = FV_CLOSED;
	vol_run(v); /* I/O that arrived meanwhile reopens it */
	check_close(v->fv);
}

static void start_close(struct fvol *v)
{
	v->st = FV_CLOSING;
	v->pinned = false;
	v->jobs++;
	if (engine_close(v->e, closed, v) < 0) {
		/* Busy (a snapshot op, a resync step): try again at the next sweep. */
		v->jobs--;
		v->st = FV_OPEN;
	}
}

/* ---- create / grow / delete ---- */

static void create_done(struct fv_job *j)
{
	struct fvol *v = j->v;
	int res = j->res;
	v->jobs--;
	if (res == 0)
		fprintf(stderr, "filevol: created %s (%llu bytes) on %s\n", v->name,
			(unsigned long long)j->size, j->members);
	free(j);
	if (res == 0 || res == -EEXIST) {
		if (v->fv->closing) {
			v->st = FV_CLOSED;
			vol_run(v);
		} else {
			start_open(v);
		}
	} else {
		fprintf(stderr, "filevol: %s: create failed: %s\n", v->name, strerror(-res));
		v->st = FV_MISSING;
		/* Only what needed the volume fails; reads still see zeros. */
		struct fvreq *keep = NULL, **tail = &keep;
		struct fvreq *q;
		while ((q = q_pop(v))) {
			if (q->op == OP_WRITE || q->op == OP_SNAP_CREATE ||
			    (q->op == OP_OPEN && q->create_size)) {
				req_defer(q, res);
			} else {
				q->next = NULL;
				*tail = q;
				tail = &q->next;
			}
		}
		for (q = keep; q; q = keep) {
			keep = q->next;
			q_push_tail(v, q);
		}
		vol_run(v);
	}
	check_close(v->fv);
}

static int start_create(struct fvol *v, uint64_t size)
{
	struct filevol *fv = v->fv;
	struct fv_job *j = calloc(1, sizeof(*j));
	if (!j)
		return -ENOMEM;
	v->st = FV_CREATING;
	j->kind = JOB_CREATE;
	j->v = v;
	j->done = create_done;
	snprintf(j->name, sizeof(j->name), "%s", v->name);
	j->size = size;
	j->replicas = fv->replicas;
	j->start = fv->rot++ % (fv->cfg.nnodes ? fv->cfg.nnodes : 1);
	v->jobs++;
	fvh_submit(fv, j);
	return 0;
}

static void grow_done(void *arg, int res)
{
	struct fvol *v = arg;
	v->jobs--;
	v->growing = false;
	if (res == 0) {
		uint64_t old = v->size;
		v->size = engine_size(v->e);
		fprintf(stderr, "filevol: grew %s from %llu to %llu bytes\n", v->name,
			(unsigned long long)old, (unsigned long long)v->size);
	} else {
		fprintf(stderr, "filevol: %s: grow failed: %s\n", v->name, strerror(-res));
		struct fvreq *q = q_pop(v); /* the write that asked for it */
		if (q)
			req_defer(q, io_err(res));
		if (res == -ESTALE || engine_fenced(v->e))
			vol_fence(v);
	}
	vol_run(v);
	check_close(v->fv);
}

static void grow_failed_deferred(void *arg)
{
	struct fvol *v = arg;
	grow_done(v, -EIO);
}

static void start_grow(struct fvol *v, uint64_t end)
{
	uint64_t ns = round_up(end, FILEVOL_CAP_STEP);
	if (v->size <= FILEVOL_MAX_SIZE / 2 && ns < 2 * v->size)
		ns = 2 * v->size;
	if (ns > FILEVOL_MAX_SIZE)
		ns = FILEVOL_MAX_SIZE;
	v->growing = true;
	v->jobs++;
	if (engine_resize(v->e, ns, grow_done, v) < 0 &&
	    loop_defer(v->fv->l, grow_failed_deferred, v) < 0) {
		v->jobs--;
		v->growing = false;
	}
}

static void delete_done(struct fv_job *j)
{
	struct fvol *v = j->v;
	struct fvreq *q = j->ctx;
	int res = j->res;
	v->jobs--;
	if (res == 0)
		fprintf(stderr, "filevol: deleted %s%s\n", v->name,
			j->failed ? " (some nodes unreachable: replicas left there)" : "");
	else if (res != -ENOENT)
		fprintf(stderr, "filevol: %s: delete failed: %s\n", v->name, strerror(-res));
	free(j);
	if (res == 0 || res == -ENOENT) {
		v->st = FV_MISSING;
		v->used = 0;
		v->used_at = loop_now_ms();
	} else {
		v->st = FV_CLOSED; /* still there: the next use reopens it */
	}
	req_defer(q, res);
	vol_run(v);
	check_close(v->fv);
}

static void delete_submit(struct fvol *v, struct fvreq *q)
{
	struct fv_job *j = calloc(1, sizeof(*j));
	if (!j) {
		v->st = FV_CLOSED;
		req_defer(q, -ENOMEM);
		vol_run(v);
		return;
	}
	j->kind = JOB_DELETE;
	j->v = v;
	j->ctx = q;
	j->done = delete_done;
	snprintf(j->name, sizeof(j->name), "%s", v->name);
	v->jobs++;
	fvh_submit(v->fv, j);
}

static void delete_closed(void *arg, int res)
{
	(void)res;
	struct fvreq *q = arg;
	struct fvol *v = q->v;
	v->jobs--;
	v->e = NULL;
	delete_submit(v, q);
}

static void start_delete(struct fvol *v, struct fvreq *q)
{
	v->st = FV_DELETING;
	v->pinned = false;
	if (v->e) {
		v->jobs++;
		if (engine_close(v->e, delete_closed, q) == 0)
			return;
		v->jobs--;
		/* The engine is busy: the replicas go anyway (force) and it gets fenced. */
		v->e = NULL;
	}
	delete_submit(v, q);
}

/* ---- I/O ---- */

static void engine_done(void *arg, int res)
{
	struct fvreq *q = arg;
	struct fvol *v = q->v;
	v->inflight--;
	if (res == -ESTALE || (v->e && engine_fenced(v->e)))
		vol_fence(v);
	req_finish(q, res == 0 ? 0 : io_err(res));
	check_close(v->fv);
}

static int open_io(struct fvol *v, struct fvreq *q)
{
	struct bdev b = engine_bdev(v->e);
	uint64_t n;
	int r;
	switch (q->op) {
	case OP_READ:
		if (q->off >= v->size) {
			memset(q->buf, 0, q->len);
			req_defer(q, 0);
			return 1;
		}
		n = v->size - q->off < q->len ? v->size - q->off : q->len;
		if (n < q->len)
			memset((char *)q->buf + n, 0, q->len - n);
		r = b.ops->read(b.ctx, q->off, (uint32_t)n, q->buf, engine_done, q);
		break;
	case OP_WRITE:
		if (q->off + q->len > v->size) {
			start_grow(v, q->off + q->len);
			return 0;
		}
		r = b.ops->write(b.ctx, q->off, (uint32_t)q->len, q->buf, q->flags, engine_done, q);
		break;
	case OP_FLUSH:
		r = b.ops->flush(b.ctx, engine_done, q);
		break;
	case OP_ZERO:
		if (q->off >= v->size || q->len == 0) {
			req_defer(q, 0);
			return 1;
		}
		n = v->size - q->off < q->len ? v->size - q->off : q->len;
		r = b.ops->trim(b.ctx, q->off, n, true, 0, engine_done, q);
		break;
	case OP_DELETE:
		if (v->pinned) {
			req_defer(q, -EBUSY); /* its bdev is in use */
			return 1;
		}
		start_delete(v, q);
		return 1;
	case OP_OPEN:
		if (q->pin)
			v->pinned = true;
		if (q->bdev_out)
			*q->bdev_out = b;
		req_defer(q, 0);
		return 1;
	case OP_SNAP_CREATE:
		r = engine_snapshot_create(v->e, q->snap, engine_done, q);
		break;
	case OP_SNAP_DELETE:
		r = engine_snapshot_delete(v->e, q->snap, engine_done, q);
		break;
	case OP_SNAP_REVERT:
		r = engine_snapshot_revert(v->e, q->snap, engine_done, q);
		break;
	default:
		r = -EINVAL;
	}
	if (r < 0)
		req_defer(q, io_err(r));
	else
		v->inflight++;
	return 1;
}

static int missing_io(struct fvol *v, struct fvreq *q)
{
	int r = 0;
	switch (q->op) {
	case OP_READ:
		memset(q->buf, 0, q->len);
		req_defer(q, 0);
		return 1;
	case OP_FLUSH:
	case OP_ZERO:
		req_defer(q, 0);
		return 1;
	case OP_SNAP_DELETE:
	case OP_SNAP_REVERT:
		req_defer(q, -ENOENT);
		return 1;
	case OP_DELETE:
		/* Replicas may still sit on a node that was down when the open looked. */
		start_delete(v, q);
		return 1;
	case OP_OPEN:
		if (!q->create_size) {
			req_defer(q, -ENOENT);
			return 1;
		}
		r = start_create(v, round_up(q->create_size, STORE_BLOCK));
		break;
	case OP_WRITE:
		r = start_create(v, round_up(q->off + q->len, FILEVOL_CAP_STEP));
		break;
	case OP_SNAP_CREATE:
		r = start_create(v, FILEVOL_CAP_STEP);
		break;
	}
	if (r < 0)
		req_defer(q, r);
	return r < 0;
}

/* Runs q now if the volume's state allows (1), else starts what it waits for (0). */
static int dispatch(struct fvol *v, struct fvreq *q)
{
	if (v->fv->closing) {
		req_defer(q, -ECANCELED);
		return 1;
	}
	if (v->st == FV_FENCED) {
		req_defer(q, -ESTALE);
		return 1;
	}
	if ((q->op == OP_READ || q->op == OP_WRITE) && q->len == 0) {
		req_defer(q, 0); /* nothing to move, nothing to create */
		return 1;
	}
	switch (v->st) {
	case FV_CLOSED:
		if (q->op == OP_DELETE) {
			start_delete(v, q);
			return 1;
		}
		start_open(v);
		return 0;
	case FV_OPEN:
		if (v->growing)
			return 0;
		return open_io(v, q);
	case FV_MISSING:
		return missing_io(v, q);
	default:
		return 0;
	}
}

static void vol_run(struct fvol *v)
{
	struct fvreq *q;
	while ((q = q_pop(v))) {
		if (!dispatch(v, q)) {
			q_push_head(v, q);
			break;
		}
	}
}

static int submit(struct filevol *fv, const char *vol, struct fvreq *q)
{
	struct fvol *v = vol_get(fv, vol);
	if (!v) {
		q->next = fv->free_reqs;
		fv->free_reqs = q;
		return -ENOMEM;
	}
	q->v = v;
	v->last_use = loop_now_ms();
	if (v->qhead || !dispatch(v, q))
		q_push_tail(v, q);
	return 0;
}

static struct fvreq *new_req(struct filevol *fv, const char *vol, enum fv_op op, filevol_cb cb,
			     void *arg)
{
	if (!vol || strlen(vol) >= STORE_NAME_MAX || !store_name_valid(vol) || fv->closing)
		return NULL;
	struct fvreq *q = req_get(fv);
	if (!q)
		return NULL;
	q->op = op;
	q->cb = cb;
	q->arg = arg;
	return q;
}

static int bad_req(struct filevol *fv, const char *vol)
{
	if (fv->closing)
		return -ECANCELED;
	if (!vol || strlen(vol) >= STORE_NAME_MAX || !store_name_valid(vol))
		return -EINVAL;
	return -ENOMEM;
}

int filevol_read(struct filevol *fv, const char *vol, uint64_t off, uint32_t len, void *buf,
		 filevol_cb cb, void *arg)
{
	struct fvreq *q = new_req(fv, vol, OP_READ, cb, arg);
	if (!q)
		return bad_req(fv, vol);
	q->off = off;
	q->len = len;
	q->buf = buf;
	return submit(fv, vol, q);
}

int filevol_write(struct filevol *fv, const char *vol, uint64_t off, uint32_t len, const void *buf,
		  uint32_t flags, filevol_cb cb, void *arg)
{
	if (off > FILEVOL_MAX_SIZE || len > FILEVOL_MAX_SIZE - off)
		return -EFBIG;
	struct fvreq *q = new_req(fv, vol, OP_WRITE, cb, arg);
	if (!q)
		return bad_req(fv, vol);
	q->off = off;
	q->len = len;
	q->buf = (void *)buf;
	q->flags = flags;
	return submit(fv, vol, q);
}

int filevol_flush(struct filevol *fv, const char *vol, filevol_cb cb, void *arg)
{
	struct fvreq *q = new_req(fv, vol, OP_FLUSH, cb, arg);
	if (!q)
		return bad_req(fv, vol);
	return submit(fv, vol, q);
}

int filevol_zero(struct filevol *fv, const char *vol, uint64_t off, uint64_t len, filevol_cb cb,
		 void *arg)
{
	struct fvreq *q = new_req(fv, vol, OP_ZERO, cb, arg);
	if (!q)
		return bad_req(fv, vol);
	q->off = off;
	q->len = len;
	return submit(fv, vol, q);
}

int filevol_delete(struct filevol *fv, const char *vol, filevol_cb cb, void *arg)
{
	struct fvreq *q = new_req(fv, vol, OP_DELETE, cb, arg);
	if (!q)
		return bad_req(fv, vol);
	return submit(fv, vol, q);
}

int filevol_open_bdev(struct filevol *fv, const char *vol, uint64_t size, struct bdev *out,
		      filevol_cb cb, void *arg)
{
	if (size == 0 || size > FILEVOL_MAX_SIZE)
		return size ? -EFBIG : -EINVAL;
	struct fvreq *q = new_req(fv, vol, OP_OPEN, cb, arg);
	if (!q)
		return bad_req(fv, vol);
	q->create_size = size;
	q->bdev_out = out;
	q->pin = true;
	return submit(fv, vol, q);
}

static int snap_req(struct filevol *fv, const char *vol, enum fv_op op, const char *snap,
		    filevol_cb cb, void *arg)
{
	if (!snap || strlen(snap) >= STORE_NAME_MAX || !store_name_valid(snap))
		return -EINVAL;
	struct fvreq *q = new_req(fv, vol, op, cb, arg);
	if (!q)
		return bad_req(fv, vol);
	snprintf(q->snap, sizeof(q->snap), "%s", snap);
	return submit(fv, vol, q);
}

int filevol_snapshot_create(struct filevol *fv, const char *vol, const char *snap, filevol_cb cb,
			    void *arg)
{
	return snap_req(fv, vol, OP_SNAP_CREATE, snap, cb, arg);
}

int filevol_snapshot_delete(struct filevol *fv, const char *vol, const char *snap, filevol_cb cb,
			    void *arg)
{
	return snap_req(fv, vol, OP_SNAP_DELETE, snap, cb, arg);
}

int filevol_snapshot_revert(struct filevol *fv, const char *vol, const char *snap, filevol_cb cb,
			    void *arg)
{
	return snap_req(fv, vol, OP_SNAP_REVERT, snap, cb, arg);
}

uint64_t filevol_epoch(struct filevol *fv, const char *vol)
{
	struct fvol *v = vol ? vol_find(fv, vol) : NULL;
	return v && v->st == FV_OPEN ? engine_epoch(v->e) : 0;
}

/* ---- used ---- */

static void job_free(struct fv_job *j)
{
	for (size_t i = 0; i < j->nnames; i++)
		free(j->names[i]);
	free(j->names);
	free(j->alloc);
	free(j);
}

static void used_done(struct fv_job *j)
{
	struct filevol *fv = j->fv;
	fv->used_job = false;
	for (size_t i = 0; j->res == 0 && i < j->nnames; i++) {
		struct fvol *v = vol_find(fv, j->names[i]);
		if (v && v->used_pending) {
			v->used_seen = true;
			if (j->alloc[i] > v->used_new)
				v->used_new = j->alloc[i];
		}
	}
	uint64_t now = loop_now_ms();
	for (size_t b = 0; b < fv->tabsz; b++) {
		for (struct fvol *v = fv->tab[b]; v; v = v->hnext) {
			if (!v->used_pending)
				continue;
			/* Not seen anywhere: gone, unless a node that did not answer has it. */
			if (j->res == 0 && v->st != FV_MISSING && (v->used_seen || !j->failed))
				v->used = v->used_new;
			v->used_at = now;
			v->used_pending = v->used_seen = false;
			v->used_new = 0;
			v->jobs--;
		}
	}
	job_free(j);
	check_close(fv);
}

uint64_t filevol_used(struct filevol *fv, const char *vol)
{
	if (!vol || strlen(vol) >= STORE_NAME_MAX || !store_name_valid(vol) || fv->closing)
		return 0;
	struct fvol *v = vol_get(fv, vol);
	if (!v)
		return 0;
	if (v->st == FV_MISSING)
		return 0;
	uint64_t now = loop_now_ms();
	if (v->used_pending || (v->used_at && now - v->used_at < USED_REFRESH_MS))
		return v->used;
	if (!fv->used_job) {
		/* One listing per node serves every volume asking meanwhile. */
		struct fv_job *j = calloc(1, sizeof(*j));
		if (!j)
			return v->used;
		j->kind = JOB_USED;
		j->done = used_done;
		fv->used_job = true;
		fvh_submit(fv, j);
	}
	v->used_pending = true;
	v->jobs++;
	return v->used;
}

/* ---- open_all ---- */

struct open_all {
	filevol_cb cb;
	void *arg;
	unsigned pending;
};

static void open_all_one(void *arg, int res)
{
	struct open_all *oa = arg;
	(void)res; /* failures were logged by the open */
	if (--oa->pending == 0) {
		oa->cb(oa->arg, 0);
		free(oa);
	}
}

static void list_done(struct fv_job *j)
{
	struct filevol *fv = j->fv;
	struct open_all *oa = j->ctx;
	oa->pending = 1;
	for (size_t i = 0; i < j->nnames; i++) {
		struct fvreq *q = new_req(fv, j->names[i], OP_OPEN, open_all_one, oa);
		if (q) {
			oa->pending++;
			if (submit(fv, j->names[i], q) < 0)
				oa->pending--;
		}
	}
	job_free(j);
	open_all_one(oa, 0);
	check_close(fv);
}

int filevol_open_all(struct filevol *fv, const char *prefix, filevol_cb cb, void *arg)
{
	if (!prefix || strlen(prefix) >= STORE_NAME_MAX)
		return -EINVAL;
	if (fv->closing)
		return -ECANCELED;
	struct fv_job *j = calloc(1, sizeof(*j));
	struct open_all *oa = calloc(1, sizeof(*oa));
	if (!j || !oa) {
		free(j);
		free(oa);
		return -ENOMEM;
	}
	oa->cb = cb;
	oa->arg = arg;
	j->kind = JOB_LIST;
	j->ctx = oa;
	j->done = list_done;
	snprintf(j->prefix, sizeof(j->prefix), "%s", prefix);
	fvh_submit(fv, j);
	return 0;
}

/* ---- idle sweep, new, close ---- */

static bool vol_quiet(const struct fvol *v)
{
	return !v->qhead && !v->inflight && !v->jobs && !v->growing;
}

static void sweep(void *arg)
{
	struct filevol *fv = arg;
	fv->sweep = NULL;
	uint64_t now = loop_now_ms();
	for (size_t b = 0; b < fv->tabsz; b++) {
		struct fvol *next;
		for (struct fvol *v = fv->tab[b]; v; v = next) {
			next = v->hnext;
			if (!vol_quiet(v) || now - v->last_use < fv->idle_ms)
				continue;
			if (v->st == FV_OPEN && !v->pinned)
				start_close(v);
			else if (v->st == FV_MISSING ||
				 /* keeps its cached used bytes a while longer */
				 (v->st == FV_CLOSED && now - v->last_use >= 10ull * fv->idle_ms))
				vol_free(v);
		}
	}
	uint64_t period = fv->idle_ms / 2;
	loop_timer_add(fv->l,
		       period < 10     ? 10
		       : period > 1000 ? 1000
				       : period,
		       sweep, fv, &fv->sweep);
}

int filevol_new(const struct filevol_params *p, struct filevol **out)
{
	if (!p->l || !p->cluster || p->cluster->nnodes == 0)
		return -EINVAL;
	unsigned reps = p->replicas ? p->replicas : p->cluster->replicas;
	if (reps == 0 || reps > p->cluster->nnodes || reps > ENGINE_MAX_REPLICAS)
		return -EINVAL;
	struct filevol *fv = calloc(1, sizeof(*fv));
	if (!fv)
		return -ENOMEM;
	fv->l = p->l;
	fv->cfg = *p->cluster;
	fv->replicas = reps;
	snprintf(fv->engine_id, sizeof(fv->engine_id), "%s", p->engine_id ? p->engine_id : "");
	fv->io_timeout_ms = p->io_timeout_ms ? p->io_timeout_ms : fv->cfg.io_timeout_ms;
	fv->idle_ms = p->idle_ms ? p->idle_ms : FILEVOL_IDLE_MS;
	for (unsigned i = 0; i < fv->cfg.nnodes; i++) {
		struct engine_replica_addr *a = &fv->addrs[i];
		snprintf(a->node, sizeof(a->node), "%s", p->cluster->nodes[i].name);
		snprintf(a->host, sizeof(a->host), "%s", p->cluster->nodes[i].host);
		a->port = fv->cfg.nodes[i].replica_port;
	}
	fv->naddrs = fv->cfg.nnodes;
	fv->tabsz = 64;
	fv->tab = calloc(fv->tabsz, sizeof(*fv->tab));
	int r = fv->tab ? fvh_start(fv) : -ENOMEM;
	if (r == 0)
		r = loop_timer_add(fv->l, 10, sweep, fv, &fv->sweep);
	if (r < 0) {
		fvh_stop(fv);
		free(fv->tab);
		free(fv);
		return r;
	}
	*out = fv;
	return 0;
}

static void close_final(void *arg)
{
	struct filevol *fv = arg;
	for (size_t b = 0; b < fv->tabsz; b++)
		while (fv->tab[b])
			vol_free(fv->tab[b]);
	while (fv->free_reqs) {
		struct fvreq *q = fv->free_reqs;
		fv->free_reqs = q->next;
		free(q);
	}
	fvh_stop(fv);
	filevol_cb cb = fv->close_cb;
	void *cbarg = fv->close_arg;
	free(fv->tab);
	free(fv);
	cb(cbarg, 0);
}

/* During close: closes every idle engine, and finishes once nothing is left running. */
static void check_close(struct filevol *fv)
{
	if (!fv->closing || fv->close_queued)
		return;
	bool busy = fv->jobs_out > 0;
	for (size_t b = 0; b < fv->tabsz; b++) {
		for (struct fvol *v = fv->tab[b]; v; v = v->hnext) {
			if (v->st == FV_OPEN && vol_quiet(v)) {
				start_close(v);
			} else if (v->st == FV_FENCED && v->e && vol_quiet(v)) {
				v->jobs++;
				if (engine_close(v->e, fenced_closed, v) < 0) {
					v->jobs--;
					v->e = NULL; /* cannot happen: nothing else runs on it */
				}
			}
			busy |= v->e != NULL || !vol_quiet(v);
		}
	}
	if (busy)
		return;
	fv->close_queued = true;
	if (loop_defer(fv->l, close_final, fv) < 0)
		while (loop_timer_add(fv->l, 0, close_final, fv, NULL) < 0)
			;
}

int filevol_close(struct filevol *fv, filevol_cb cb, void *arg)
{
	if (fv->closing)
		return -EALREADY;
	fv->closing = true;
	fv->close_cb = cb;
	fv->close_arg = arg;
	if (fv->sweep) {
		loop_timer_cancel(fv->l, fv->sweep);
		fv->sweep = NULL;
	}
	for (size_t b = 0; b < fv->tabsz; b++)
		for (struct fvol *v = fv->tab[b]; v; v = v->hnext)
			q_fail_all(v, -ECANCELED);
	check_close(fv);
	return 0;
}

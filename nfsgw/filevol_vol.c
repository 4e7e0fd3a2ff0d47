/*
 * filevol_vol: one volume's state machine (enum fv_state in filevol_int.h). Runs a request
 * when the state allows, else starts what it waits for (open, create, grow) and leaves it
 * queued; every state change runs the queue again. The engine of an open volume serves I/O
 * directly; reads past the capacity are zeros, writes past it grow it first.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "nfsgw/filevol_int.h"

static uint64_t round_up(uint64_t x, uint64_t step)
{
	return (x + step - 1) / step * step;
}

static void deferred_finish(void *arg)
{
	struct fvreq *q = arg;
	struct fvol *v = q->v;
	v->jobs--;
	fvi_req_finish(q, q->res);
	fvi_check_close(v->fv);
}

/* Completes q at the end of this loop iteration (never inside the caller's call). */
void fvi_req_defer(struct fvreq *q, int res)
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

void fvi_push_tail(struct fvol *v, struct fvreq *q)
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

void fvi_fail_all(struct fvol *v, int res)
{
	struct fvreq *q;
	while ((q = q_pop(v)))
		fvi_req_defer(q, res);
}

static int io_err(int r)
{
	return r == -ESTALE || r == -ENOMEM || r == -ENOSPC || r == -EFBIG ? r : -EIO;
}

/* ---- engine lifecycle ---- */

void fvi_fenced_closed(void *arg, int res)
{
	(void)res;
	struct fvol *v = arg;
	v->e = NULL;
	v->jobs--;
	fvi_check_close(v->fv);
}

static void fence_close(void *arg)
{
	struct fvol *v = arg;
	if (v->e && engine_close(v->e, fvi_fenced_closed, v) == 0)
		return;
	v->jobs--;
	fvi_check_close(v->fv);
}

/* A newer engine owns the volume: never reopen it here (that would fence the new owner). */
static void vol_fence(struct fvol *v)
{
	if (v->st != FV_OPEN)
		return;
	fprintf(stderr, "filevol: %s: fenced by a newer engine (ours had epoch %llu)\n", v->name,
		(unsigned long long)engine_epoch(v->e));
	v->st = FV_FENCED;
	fvi_fail_all(v, -ESTALE);
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
		fvi_run(v);
		fvi_check_close(fv);
		return;
	}
	v->e = NULL;
	if (res == -ENOENT) {
		v->st = FV_MISSING;
		fvi_run(v);
	} else {
		fprintf(stderr, "filevol: %s: open failed: %s\n", v->name, strerror(-res));
		v->st = FV_CLOSED;
		fvi_fail_all(v, io_err(res));
	}
	fvi_check_close(fv);
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
				  .io_timeout_ms = fv->io_timeout_ms,
				  .label = fv->engine_id /* "nfsgw-NAME": who holds it */};
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
	fvi_run(v); /* I/O that arrived meanwhile reopens it */
	fvi_check_close(v->fv);
}

void fvi_start_close(struct fvol *v)
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
			fvi_run(v);
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
				fvi_req_defer(q, res);
			} else {
				q->next = NULL;
				*tail = q;
				tail = &q->next;
			}
		}
		for (q = keep; q; q = keep) {
			keep = q->next;
			fvi_push_tail(v, q);
		}
		fvi_run(v);
	}
	fvi_check_close(v->fv);
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
			fvi_req_defer(q, io_err(res));
		if (res == -ESTALE || engine_fenced(v->e))
			vol_fence(v);
	}
	fvi_run(v);
	fvi_check_close(v->fv);
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
	fvi_req_defer(q, res);
	fvi_run(v);
	fvi_check_close(v->fv);
}

static void delete_submit(struct fvol *v, struct fvreq *q)
{
	struct fv_job *j = calloc(1, sizeof(*j));
	if (!j) {
		v->st = FV_CLOSED;
		fvi_req_defer(q, -ENOMEM);
		fvi_run(v);
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
	bool snap = q->op == OP_SNAP_CREATE || q->op == OP_SNAP_DELETE || q->op == OP_SNAP_REVERT ||
		    q->op == OP_SNAP_READ;
	/* A snapshot that is not there (or already is) is the caller's answer, not an I/O
	 * error. */
	if (snap && (res == -ENOENT || res == -EEXIST))
		fvi_req_finish(q, res);
	else
		fvi_req_finish(q, res == 0 ? 0 : io_err(res));
	fvi_check_close(v->fv);
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
			fvi_req_defer(q, 0);
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
			fvi_req_defer(q, 0);
			return 1;
		}
		n = v->size - q->off < q->len ? v->size - q->off : q->len;
		r = b.ops->trim(b.ctx, q->off, n, true, 0, engine_done, q);
		break;
	case OP_DELETE:
		if (v->pinned) {
			fvi_req_defer(q, -EBUSY); /* its bdev is in use */
			return 1;
		}
		start_delete(v, q);
		return 1;
	case OP_OPEN:
		if (q->pin)
			v->pinned = true;
		if (q->bdev_out)
			*q->bdev_out = b;
		fvi_req_defer(q, 0);
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
	case OP_SNAP_READ:
		/* Zeros past the engine's size come from engine_snap_read itself. */
		r = engine_snap_read(v->e, q->snap, q->off, (uint32_t)q->len, q->buf, engine_done,
				     q);
		break;
	default:
		r = -EINVAL;
	}
	if (r < 0)
		fvi_req_defer(q, io_err(r));
	else
		v->inflight++;
	return 1;
}

static int missing_io(struct fvol *v, struct fvreq *q)
{
	int r = 0;
	switch (q->op) {
	case OP_READ:
	case OP_SNAP_READ:
		memset(q->buf, 0, q->len);
		fvi_req_defer(q, 0);
		return 1;
	case OP_FLUSH:
	case OP_ZERO:
		fvi_req_defer(q, 0);
		return 1;
	case OP_SNAP_DELETE:
	case OP_SNAP_REVERT:
		fvi_req_defer(q, -ENOENT);
		return 1;
	case OP_DELETE:
		/* Replicas may still sit on a node that was down when the open looked. */
		start_delete(v, q);
		return 1;
	case OP_OPEN:
		if (!q->create_size) {
			fvi_req_defer(q, -ENOENT);
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
		fvi_req_defer(q, r);
	return r < 0;
}

/* Runs q now if the volume's state allows (1), else starts what it waits for (0). */
int fvi_dispatch(struct fvol *v, struct fvreq *q)
{
	if (v->fv->closing) {
		fvi_req_defer(q, -ECANCELED);
		return 1;
	}
	if (v->st == FV_FENCED) {
		fvi_req_defer(q, -ESTALE);
		return 1;
	}
	if ((q->op == OP_READ || q->op == OP_WRITE || q->op == OP_SNAP_READ) && q->len == 0) {
		fvi_req_defer(q, 0); /* nothing to move, nothing to create */
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

void fvi_run(struct fvol *v)
{
	struct fvreq *q;
	while ((q = q_pop(v))) {
		if (!fvi_dispatch(v, q)) {
			q_push_head(v, q);
			break;
		}
	}
}

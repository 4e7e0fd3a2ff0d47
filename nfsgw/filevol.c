/*
 * filevol: volumes by name for the gateway (contract in filevol.h). One struct fvol per
 * volume in use, in a hash table, with a small state machine (filevol_int.h, enum fv_state).
 * An operation on an open volume goes straight to its engine; otherwise it waits in the
 * volume's queue, in arrival order, and the queue runs again after each state change.
 * The per-volume state machine is filevol_vol.c; control-API calls (create, delete,
 * allocated bytes, listing) run on the helper thread (filevol_http.c).
 */
#include <errno.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "nfsgw/filevol_int.h"

#define USED_REFRESH_MS 2000

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

void fvi_req_finish(struct fvreq *q, int res)
{
	struct filevol *fv = q->v->fv;
	filevol_cb cb = q->cb;
	void *arg = q->arg;
	q->v->last_use = loop_now_ms();
	q->next = fv->free_reqs;
	fv->free_reqs = q;
	cb(arg, res);
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
	if (v->qhead || !fvi_dispatch(v, q))
		fvi_push_tail(v, q);
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

int filevol_snap_read(struct filevol *fv, const char *vol, const char *snap, uint64_t off,
		      uint32_t len, void *buf, filevol_cb cb, void *arg)
{
	if (!snap || strlen(snap) >= STORE_NAME_MAX || !store_name_valid(snap) || (len && !buf))
		return -EINVAL;
	struct fvreq *q = new_req(fv, vol, OP_SNAP_READ, cb, arg);
	if (!q)
		return bad_req(fv, vol);
	snprintf(q->snap, sizeof(q->snap), "%s", snap);
	q->off = off;
	q->len = len;
	q->buf = buf;
	return submit(fv, vol, q);
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
	fvi_check_close(fv);
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
	fvi_check_close(fv);
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

bool fvi_quiet(const struct fvol *v)
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
			if (!fvi_quiet(v) || now - v->last_use < fv->idle_ms)
				continue;
			if (v->st == FV_OPEN && !v->pinned)
				fvi_start_close(v);
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
void fvi_check_close(struct filevol *fv)
{
	if (!fv->closing || fv->close_queued)
		return;
	bool busy = fv->jobs_out > 0;
	for (size_t b = 0; b < fv->tabsz; b++) {
		for (struct fvol *v = fv->tab[b]; v; v = v->hnext) {
			if (v->st == FV_OPEN && fvi_quiet(v)) {
				fvi_start_close(v);
			} else if (v->st == FV_FENCED && v->e && fvi_quiet(v)) {
				v->jobs++;
				if (engine_close(v->e, fvi_fenced_closed, v) < 0) {
					v->jobs--;
					v->e = NULL; /* cannot happen: nothing else runs on it */
				}
			}
			busy |= v->e != NULL || !fvi_quiet(v);
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
			fvi_fail_all(v, -ECANCELED);
	fvi_check_close(fv);
	return 0;
}

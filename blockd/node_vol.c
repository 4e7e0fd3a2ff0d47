/*
 * node_vol: the table of engines running on this node.
 *
 * An entry is OPENING while engine_open runs, OPEN while usable and CLOSING from the moment
 * it is detached (or the node stops) until engine_close has finished. refs counts the API
 * calls and NBD connections using the engine; a closing engine is closed when refs reaches
 * zero, so no caller ever sees it freed. Attached entries are exported over NBD; temporary
 * ones serve one API call (or several concurrent ones) and close when the last finishes.
 * Only one entry per volume exists at a time: an API call that finds the volume opening or
 * closing waits for that to settle (then shares the engine, or opens a new one) rather than
 * start a second engine that would fence the first.
 */
#include "blockd/node_priv.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "blockd/nbd_server.h"
#include "replica/server.h"

struct vol *node_vol_find(struct node *n, const char *name)
{
	for (struct vol *v = n->vols; v; v = v->next)
		if (!strcmp(v->name, name))
			return v;
	return NULL;
}

static void vol_unlink(struct vol *v)
{
	struct vol **pp = &v->n->vols;
	while (*pp != v)
		pp = &(*pp)->next;
	*pp = v->next;
}

static void nbd_url(const struct node *n, const char *vol, char *buf, size_t len)
{
	snprintf(buf, len, "nbd://%s:%u/%s", n->self->host, n->self->nbd_port, vol);
}

static json_t *attach_json(struct vol *v)
{
	char url[256];
	nbd_url(v->n, v->name, url, sizeof(url));
	return json_pack("{s:s, s:s, s:I}", "volume", v->name, "nbd", url, "epoch",
			 (json_int_t)engine_epoch(v->e));
}

/* ---- close ---- */

/* An entry was freed: shutdown may be waiting for the last one. */
static void vol_gone(struct node *n)
{
	if (n->stopping && n->nclosing && --n->nclosing == 0)
		node_shutdown_done(n);
}

static void closed_cb(void *arg, int res)
{
	struct vol *v = arg;
	struct node *n = v->n;
	if (res)
		node_log(n, "closing %s: %s", v->name, strerror(-res));
	else
		node_log(n, "closed %s engine for %s", v->attached ? "attached" : "temporary",
			 v->name);
	struct loop_waiter *w = v->close_w;
	vol_unlink(v);
	free(v);
	if (w)
		loop_done(w, res);
	vol_gone(n);
}

/* Closes v once nothing uses it. */
static void vol_maybe_close(struct vol *v)
{
	if (v->refs || v->st != VOL_CLOSING || !v->e)
		return;
	struct engine *e = v->e;
	v->e = NULL;
	int r = engine_close(e, closed_cb, v);
	if (r)
		closed_cb(v, r);
}

static void vol_begin_close(struct vol *v)
{
	v->st = VOL_CLOSING;
	if (v->attached)
		nbd_server_drop_export(v->n->nbd, v->name);
	vol_maybe_close(v);
}

/* ---- open ---- */

static void opened_cb(void *arg, int res)
{
	struct vol *v = arg;
	struct node *n = v->n;
	struct loop_waiter *w = v->open_w;
	v->open_w = NULL;
	if (res == -EBUSY)
		node_log(n, "not opening %s: an engine elsewhere holds it", v->name);
	else if (res)
		node_log(n, "opening %s failed: %s", v->name, strerror(-res));
	if (res) {
		vol_unlink(v);
		free(v);
		loop_done(w, res);
		vol_gone(n);
		return;
	}
	v->st = VOL_OPEN;
	if (n->stopping) {
		/* node_vol_shutdown counted this one; close it now it can be. */
		v->refs = 0;
		vol_begin_close(v);
		loop_done(w, -ESHUTDOWN);
		return;
	}
	if (v->attached) {
		char url[256];
		nbd_url(n, v->name, url, sizeof(url));
		node_want(n, v->name, true);
		node_log(n, "attached %s epoch %llu at %s", v->name,
			 (unsigned long long)engine_epoch(v->e), url);
	} else {
		node_log(n, "opened temporary engine for %s epoch %llu", v->name,
			 (unsigned long long)engine_epoch(v->e));
	}
	loop_done(w, 0);
}

/*
 * Creates an OPENING entry and starts its engine; w is woken when it is open or failed. held:
 * refuse (-EBUSY, *held filled in) a volume an engine outside this node holds (an NFS gateway,
 * say) rather than fence it; NULL: take it over.
 */
static void vol_open(struct node *n, const char *name, bool attached, struct engine_held *held,
		     struct loop_waiter *w)
{
	if (n->stopping) {
		loop_done(w, -ESHUTDOWN);
		return;
	}
	struct vol *v = calloc(1, sizeof(*v));
	if (!v) {
		loop_done(w, -ENOMEM);
		return;
	}
	v->n = n;
	snprintf(v->name, sizeof(v->name), "%s", name);
	v->st = VOL_OPENING;
	v->attached = attached;
	v->refs = attached ? 0 : 1;
	v->open_w = w;
	v->next = n->vols;
	n->vols = v;
	struct engine_params p = {
	    .volume = v->name,
	    .local_node = n->self->name,
	    .local = n->rs,
	    .naddrs = n->naddrs,
	    .addrs = n->addrs,
	    .io_timeout_ms = n->cfg.io_timeout_ms,
	    .refuse_if_held = held != NULL,
	    .held = held,
	};
	int r = engine_open(n->loop, &p, &v->e, opened_cb, v);
	if (r) {
		v->e = NULL;
		opened_cb(v, r);
	}
}

/* ---- attach / detach ---- */

struct attach {
	struct node *n;
	const char *vol;
	bool reattach;
	bool force;
	bool open; /* the volume is not here: open it */
	struct engine_held held;
	int res;
	json_t *out;
	struct node_err *e;
};

static void attach_check(void *arg)
{
	struct attach *a = arg;
	struct node *n = a->n;
	if (n->stopping) {
		a->res = -ESHUTDOWN;
		node_set_err(a->e, "node is shutting down");
		return;
	}
	if (a->reattach && !node_wanted(n, a->vol)) {
		a->res = -ECANCELED;
		return;
	}
	struct vol *v = node_vol_find(n, a->vol);
	if (!v) {
		a->open = true;
		return;
	}
	if (v->st != VOL_OPEN) {
		a->res = -EINPROGRESS;
		return;
	}
	if (!v->attached) {
		/* A temporary engine is serving an API call: keep it, exported. */
		v->attached = true;
		node_want(n, v->name, true);
		node_log(n, "attached %s epoch %llu (engine already open)", v->name,
			 (unsigned long long)engine_epoch(v->e));
	}
	a->out = attach_json(v);
}

static void attach_open(void *arg, struct loop_waiter *w)
{
	struct attach *a = arg;
	if (a->reattach && !a->n->stopping && !node_wanted(a->n, a->vol)) {
		loop_done(w, -ECANCELED);
		return;
	}
	if (node_vol_find(a->n, a->vol)) {
		loop_done(w, -EINPROGRESS);
		return;
	}
	vol_open(a->n, a->vol, true, a->force ? NULL : &a->held, w);
}

static void attach_result(void *arg)
{
	struct attach *a = arg;
	struct vol *v = node_vol_find(a->n, a->vol);
	if (v && v->st == VOL_OPEN && v->attached)
		a->out = attach_json(v);
}

static void open_err(struct node_err *e, const char *vol, int r)
{
	if (r == -ENOENT)
		node_set_err(e, "%s: no such volume (no replica answered for it)", vol);
	else if (r == -EBUSY || r == -EINPROGRESS)
		node_set_err(e, "%s is busy on this node (being opened or closed)", vol);
	else if (r == -ESHUTDOWN)
		node_set_err(e, "node is shutting down");
	else
		node_set_err(e, "%s: cannot open (no quorum of replicas?): %s", vol, strerror(-r));
}

static int attach_once(struct node *n, const char *vol, bool reattach, bool force, json_t **out,
		       struct node_err *e)
{
	struct attach a = {.n = n, .vol = vol, .reattach = reattach, .force = force, .e = e};
	int r = loop_call(n->loop, attach_check, &a);
	if (r || a.res || !a.open) {
		r = r ? r : a.res;
		goto done;
	}
	node_find_attached(n, vol, e->node);
	if (e->node[0] && force) {
		/* Let a live owner flush and let go; a dead or hung one is fenced by our epoch. */
		char path[128];
		snprintf(path, sizeof(path), "/v1/volumes/%s/detach", vol);
		int d = node_peer_post(n, e->node, path, NODE_TAKEOVER_TIMEOUT_MS);
		node_log(n, "force-attaching %s: detach on %s %s", vol, e->node,
			 d ? "failed, fencing it" : "done");
		e->node[0] = 0;
	}
	if (e->node[0]) {
		node_set_err(e, "%s is attached on %s", vol, e->node);
		r = -EBUSY;
		goto done;
	}
	r = loop_call_wait(n->loop, attach_open, &a);
	free(a.held.snapshots);
	if (r == -EBUSY && a.held.label[0]) {
		node_set_held(e, vol, a.held.label);
		goto done;
	}
	if (r) {
		if (r != -ECANCELED && r != -EINPROGRESS)
			open_err(e, vol, r);
		goto done;
	}
	r = loop_call(n->loop, attach_result, &a);
	if (!r && !a.out) {
		/* Detached again before we could look. */
		node_set_err(e, "%s was detached meanwhile", vol);
		r = -EBUSY;
	}
done:
	if (out && !r)
		*out = a.out;
	else
		json_decref(a.out);
	return r;
}

int node_attach_impl(struct node *n, const char *vol, bool reattach, bool force, json_t **out,
		     struct node_err *e)
{
	uint64_t deadline = loop_now_ms() + NODE_BUSY_WAIT_MS;
	int r;
	while ((r = attach_once(n, vol, reattach, force, out, e)) == -EINPROGRESS &&
	       loop_now_ms() < deadline)
		usleep(NODE_BUSY_POLL_MS * 1000);
	if (r == -EINPROGRESS) {
		open_err(e, vol, r);
		r = -EBUSY;
	}
	return r;
}

int node_attach(struct node *n, const char *vol, bool force, json_t **out, struct node_err *e)
{
	if (!store_name_valid(vol)) {
		node_set_err(e, "bad volume name");
		return -EINVAL;
	}
	return node_attach_impl(n, vol, false, force, out, e);
}

struct detach {
	struct node *n;
	const char *vol;
	struct node_err *e;
};

static void detach_start(void *arg, struct loop_waiter *w)
{
	struct detach *d = arg;
	struct node *n = d->n;
	struct vol *v = node_vol_find(n, d->vol);
	if (!v || !v->attached) {
		if (node_wanted(n, d->vol)) {
			/* Waiting for a re-attach that now must not happen. */
			node_want(n, d->vol, false);
			node_log(n, "detached %s (was waiting to re-attach)", d->vol);
			loop_done(w, 0);
			return;
		}
		node_set_err(d->e, "%s is not attached on this node", d->vol);
		loop_done(w, -ENOENT);
		return;
	}
	if (v->st != VOL_OPEN) {
		loop_done(w, -EINPROGRESS);
		return;
	}
	node_want(n, v->name, false);
	node_log(n, "detaching %s (%u NBD clients)", v->name, nbd_server_clients(n->nbd, v->name));
	v->close_w = w;
	vol_begin_close(v);
}

int node_detach(struct node *n, const char *vol, struct node_err *e)
{
	if (!store_name_valid(vol)) {
		node_set_err(e, "bad volume name");
		return -EINVAL;
	}
	struct detach d = {n, vol, e};
	uint64_t deadline = loop_now_ms() + NODE_BUSY_WAIT_MS;
	int r;
	while ((r = loop_call_wait(n->loop, detach_start, &d)) == -EINPROGRESS &&
	       loop_now_ms() < deadline)
		usleep(NODE_BUSY_POLL_MS * 1000);
	if (r == -EINPROGRESS) {
		node_set_err(e, "%s is being attached or detached on this node", vol);
		return -EBUSY;
	}
	/* A close that failed (fenced, no quorum for the last flush) still detached it: the
	 * error is in the log, and the caller's intent is done. */
	return r == -ENOENT ? r : 0;
}

/* ---- volume ops on an engine here, or a temporary one ---- */

struct acquire {
	struct node *n;
	const char *vol;
	struct vol *v;
	int res;
	struct engine_held *held;
};

static void acquire_local(void *arg)
{
	struct acquire *a = arg;
	struct vol *v = node_vol_find(a->n, a->vol);
	if (a->n->stopping)
		a->res = -ESHUTDOWN;
	else if (v && v->st == VOL_OPEN) {
		v->refs++;
		a->v = v;
	} else if (v) {
		a->res = -EINPROGRESS;
	}
}

static void acquire_temp(void *arg, struct loop_waiter *w)
{
	struct acquire *a = arg;
	struct vol *v = node_vol_find(a->n, a->vol);
	if (v) {
		if (v->st != VOL_OPEN) {
			loop_done(w, -EINPROGRESS);
			return;
		}
		v->refs++;
		a->v = v;
		loop_done(w, 0);
		return;
	}
	vol_open(a->n, a->vol, false, a->held, w);
}

static void acquire_found(void *arg)
{
	struct acquire *a = arg;
	struct vol *v = node_vol_find(a->n, a->vol);
	/* The temporary engine we opened: refs was set to 1 for us at creation. */
	a->v = v;
}

static void release_start(void *arg, struct loop_waiter *w)
{
	struct vol *v = arg;
	v->refs--;
	if (v->refs == 0 && !v->attached && v->st == VOL_OPEN) {
		v->close_w = w;
		vol_begin_close(v);
		return;
	}
	vol_maybe_close(v);
	loop_done(w, 0);
}

static int acquire_once(struct node *n, const char *vol, struct vol **out, struct engine_held *held,
			struct node_err *e)
{
	struct acquire a = {.n = n, .vol = vol, .held = held};
	int r = loop_call(n->loop, acquire_local, &a);
	if (!r)
		r = a.res;
	if (!r && !a.v) {
		node_find_attached(n, vol, e->node);
		if (e->node[0]) {
			node_set_err(e, "%s is attached on %s", vol, e->node);
			return -EBUSY;
		}
		r = loop_call_wait(n->loop, acquire_temp, &a);
		if (r == -EBUSY && held->label[0])
			return r; /* held outside this node: the caller answers */
		if (!r && !a.v)
			r = loop_call(n->loop, acquire_found, &a);
		if (!r && !a.v)
			r = -EINPROGRESS;
	}
	if (r) {
		if (r != -EINPROGRESS)
			open_err(e, vol, r);
		return r;
	}
	*out = a.v;
	return 0;
}

static int acquire(struct node *n, const char *vol, struct vol **out, struct engine_held *held,
		   struct node_err *e)
{
	uint64_t deadline = loop_now_ms() + NODE_BUSY_WAIT_MS;
	int r;
	while ((r = acquire_once(n, vol, out, held, e)) == -EINPROGRESS && loop_now_ms() < deadline)
		usleep(NODE_BUSY_POLL_MS * 1000);
	if (r == -EINPROGRESS) {
		open_err(e, vol, r);
		r = -EBUSY;
	}
	return r;
}

static void release(struct node *n, struct vol *v)
{
	loop_call_wait(n->loop, release_start, v);
}

struct opctx {
	struct vol *v;
	enum node_op op;
	const struct node_op_args *args;
	char *json;
	json_t *out;
	struct loop_waiter *w;
};

static void op_cb(void *arg, int res)
{
	struct opctx *o = arg;
	loop_done(o->w, res);
}

static const char *state_name(enum engine_replica_state s)
{
	switch (s) {
	case ENGINE_HEALTHY:
		return "healthy";
	case ENGINE_REBUILDING:
		return "rebuilding";
	case ENGINE_STALE:
		return "stale";
	}
	return "unknown";
}

static int replicas_json(struct engine *e, json_t **out)
{
	struct engine_replica_status st[ENGINE_MAX_REPLICAS];
	uint32_t cnt = ENGINE_MAX_REPLICAS;
	memset(st, 0, sizeof(st));
	int r = engine_replicas(e, st, &cnt);
	if (r)
		return r;
	json_t *a = json_array();
	for (uint32_t i = 0; i < cnt && i < ENGINE_MAX_REPLICAS; i++) {
		json_array_append_new(
		    a, json_pack("{s:s, s:s, s:I, s:I, s:I, s:I, s:b, s:s}", "node", st[i].node,
				 "state", state_name(st[i].state), "epoch", (json_int_t)st[i].epoch,
				 "resync_copied", (json_int_t)st[i].resync_copied, "resync_total",
				 (json_int_t)st[i].resync_total, "resync_done",
				 (json_int_t)st[i].resync_done, "resync_full", st[i].resync_full,
				 "error", st[i].error));
	}
	*out = a;
	return 0;
}

static void op_start(void *arg, struct loop_waiter *w)
{
	struct opctx *o = arg;
	struct engine *e = o->v->e;
	const struct node_op_args *a = o->args;
	o->w = w;
	int r;
	switch (o->op) {
	case NODE_OP_RESIZE:
		r = engine_resize(e, a->size, op_cb, o);
		break;
	case NODE_OP_SNAP_LIST:
		r = engine_snapshot_list(e, &o->json, op_cb, o);
		break;
	case NODE_OP_SNAP_CREATE:
		r = engine_snapshot_create(e, a->snap, op_cb, o);
		break;
	case NODE_OP_SNAP_DELETE:
		r = engine_snapshot_delete(e, a->snap, op_cb, o);
		break;
	case NODE_OP_SNAP_REVERT:
		r = engine_snapshot_revert(e, a->snap, op_cb, o);
		break;
	case NODE_OP_CLONE:
		r = engine_clone(e, a->snap, a->name, op_cb, o);
		break;
	case NODE_OP_VERIFY:
		r = engine_verify(e, &o->json, op_cb, o);
		break;
	case NODE_OP_REPAIR:
		r = engine_repair(e, &o->json, op_cb, o);
		break;
	case NODE_OP_WAIT_HEALTHY:
		r = engine_wait_healthy(e, a->timeout_ms, op_cb, o);
		break;
	case NODE_OP_REPLICAS:
	default:
		loop_done(w, replicas_json(e, &o->out));
		return;
	}
	if (r)
		loop_done(w, r);
}

static const char *op_name(enum node_op op)
{
	static const char *const names[] = {
	    [NODE_OP_RESIZE] = "resize",
	    [NODE_OP_SNAP_LIST] = "snapshot list",
	    [NODE_OP_SNAP_CREATE] = "snapshot create",
	    [NODE_OP_SNAP_DELETE] = "snapshot delete",
	    [NODE_OP_SNAP_REVERT] = "snapshot revert",
	    [NODE_OP_CLONE] = "clone",
	    [NODE_OP_REPLICAS] = "replica status",
	    [NODE_OP_VERIFY] = "verify",
	    [NODE_OP_WAIT_HEALTHY] = "wait-healthy",
	    [NODE_OP_REPAIR] = "repair",
	};
	return (unsigned)op < sizeof(names) / sizeof(names[0]) ? names[op] : "op";
}

static bool op_mutates(enum node_op op)
{
	return op == NODE_OP_RESIZE || op == NODE_OP_SNAP_CREATE || op == NODE_OP_SNAP_DELETE ||
	       op == NODE_OP_SNAP_REVERT || op == NODE_OP_CLONE || op == NODE_OP_REPAIR;
}

static json_t *op_result(const char *vol, enum node_op op, const struct node_op_args *a)
{
	switch (op) {
	case NODE_OP_RESIZE:
		return json_pack("{s:s, s:I}", "volume", vol, "size", (json_int_t)a->size);
	case NODE_OP_SNAP_CREATE:
	case NODE_OP_SNAP_DELETE:
	case NODE_OP_SNAP_REVERT:
		return json_pack("{s:s, s:s}", "volume", vol, "snapshot", a->snap);
	case NODE_OP_CLONE:
		return json_pack("{s:s, s:s, s:s}", "volume", a->name, "source", vol, "snapshot",
				 a->snap);
	case NODE_OP_WAIT_HEALTHY:
		return json_pack("{s:s, s:b}", "volume", vol, "healthy", 1);
	default:
		return json_pack("{s:s}", "volume", vol);
	}
}

void node_set_held(struct node_err *e, const char *vol, const char *label)
{
	node_set_err(e, "volume %s is in use by %s", vol, label);
	snprintf(e->holder, sizeof(e->holder), "%s", label);
}

/*
 * The volume is open in an engine outside this node (held.label): read-only ops answer from
 * what its replicas reported without an OPEN (so nobody is fenced); the others would need an
 * engine of ours and are refused.
 */
static int held_answer(const char *vol, enum node_op op, const struct engine_held *h, json_t **out,
		       struct node_err *e)
{
	if (op == NODE_OP_SNAP_LIST && h->snapshots) {
		*out = json_loads(h->snapshots, JSON_DECODE_ANY, NULL);
		if (*out)
			return 0;
	}
	if (op == NODE_OP_REPLICAS) {
		json_t *a = json_array();
		for (uint32_t i = 0; i < h->n && i < ENGINE_MAX_REPLICAS; i++) {
			bool ok = h->r[i].in_sync;
			json_array_append_new(a, json_pack("{s:s, s:s, s:I, s:s, s:s}", "node",
							   h->r[i].node, "state",
							   ok ? "healthy" : "stale", "epoch",
							   (json_int_t)h->r[i].epoch, "error",
							   ok		       ? ""
							   : h->r[i].reachable ? "out of sync"
									       : "unreachable",
							   "holder", h->label));
		}
		*out = a;
		return 0;
	}
	node_set_held(e, vol, h->label);
	return -EBUSY;
}

/* A newer engine elsewhere has the volume: this one can never serve it again, so stop
 * exporting it and close it (once our reference is released). */
static void vol_fenced(void *arg)
{
	struct vol *v = arg;
	if (v->st != VOL_OPEN)
		return;
	node_log(v->n, "%s: fenced by a newer engine elsewhere; detaching it here", v->name);
	if (v->attached)
		node_want(v->n, v->name, false);
	vol_begin_close(v);
}

bool node_vol_drop_fenced(struct vol *v)
{
	if (v->st != VOL_OPEN || !engine_fenced(v->e))
		return false;
	vol_fenced(v);
	return true;
}

static void op_log(struct node *n, const char *vol, enum node_op op, const struct node_op_args *a,
		   int r)
{
	if (r)
		node_log(n, "%s %s failed: %s", op_name(op), vol, strerror(-r));
	else
		node_log(n, "%s %s%s%s%s%s", op_name(op), vol, a->snap ? " " : "",
			 a->snap ? a->snap : "", a->name ? " -> " : "", a->name ? a->name : "");
}

int node_volume_op(struct node *n, const char *vol, enum node_op op, const struct node_op_args *a,
		   json_t **out, struct node_err *e)
{
	*out = NULL;
	if (!store_name_valid(vol)) {
		node_set_err(e, "bad volume name");
		return -EINVAL;
	}
	struct vol *v = NULL;
	struct engine_held held;
	memset(&held, 0, sizeof(held));
	int r = acquire(n, vol, &v, &held, e);
	if (r == -EBUSY && held.label[0]) {
		r = held_answer(vol, op, &held, out, e);
		free(held.snapshots);
		return r;
	}
	if (r)
		return r;
	struct opctx o = {.v = v, .op = op, .args = a};
	r = loop_call_wait(n->loop, op_start, &o);
	if (op_mutates(op))
		op_log(n, vol, op, a, r);
	if (r == -ESTALE)
		loop_call(n->loop, vol_fenced, v);
	release(n, v);
	if (!r && o.json) {
		o.out = json_loads(o.json, JSON_DECODE_ANY, NULL);
		if (!o.out)
			r = -EBADMSG;
	}
	free(o.json);
	if (!r && !o.out)
		o.out = op_result(vol, op, a);
	if (r) {
		json_decref(o.out);
		bool snap = op == NODE_OP_SNAP_DELETE || op == NODE_OP_SNAP_REVERT ||
			    op == NODE_OP_CLONE || op == NODE_OP_SNAP_CREATE;
		if (r == -ETIMEDOUT && op == NODE_OP_WAIT_HEALTHY)
			node_set_err(e, "%s: not healthy within %u ms", vol, a->timeout_ms);
		else if (r == -ENOENT && snap && op != NODE_OP_SNAP_CREATE)
			node_set_err(e, "%s: no snapshot %s", vol, a->snap);
		else if (r == -EEXIST && op == NODE_OP_SNAP_CREATE)
			node_set_err(e, "%s: snapshot %s already exists", vol, a->snap);
		else if (r == -EEXIST && op == NODE_OP_CLONE)
			node_set_err(e, "volume %s already exists", a->name);
		else if (r == -ESTALE)
			node_set_err(
			    e, "%s: this node's engine was fenced by a newer one elsewhere", vol);
		else if (r == -EINVAL && op == NODE_OP_RESIZE)
			node_set_err(e, "%s: cannot resize to %llu bytes (grow only)", vol,
				     (unsigned long long)a->size);
		else
			node_set_err(e, "%s: %s: %s", vol, op_name(op), strerror(-r));
		return r;
	}
	*out = o.out;
	return 0;
}

/* ---- NBD exports: attached, open volumes ---- */

static int exp_lookup(void *arg, const char *name, struct bdev *out)
{
	struct node *n = arg;
	struct vol *v = node_vol_find(n, name);
	if (!v || !v->attached || v->st != VOL_OPEN)
		return -ENOENT;
	v->refs++;
	*out = engine_bdev(v->e);
	return 0;
}

static void exp_release(void *arg, const char *name)
{
	struct node *n = arg;
	struct vol *v = node_vol_find(n, name);
	if (!v || !v->refs)
		return;
	v->refs--;
	vol_maybe_close(v);
}

static void exp_list(void *arg, void (*fn)(void *fnarg, const char *name), void *fnarg)
{
	struct node *n = arg;
	for (struct vol *v = n->vols; v; v = v->next)
		if (v->attached && v->st == VOL_OPEN)
			fn(fnarg, v->name);
}

const struct nbd_exports node_nbd_exports = {
    .lookup = exp_lookup,
    .release = exp_release,
    .list = exp_list,
};

/* ---- shutdown ---- */

void node_vol_shutdown(struct node *n)
{
	n->stopping = true;
	n->nclosing = 0;
	for (struct vol *v = n->vols; v; v = v->next)
		n->nclosing++;
	if (n->nclosing == 0) {
		node_shutdown_done(n);
		return;
	}
	/* Count first: a close may complete inside the loop below. Opening entries close
	 * when their open finishes (opened_cb). */
	struct vol *next;
	for (struct vol *v = n->vols; v; v = next) {
		next = v->next;
		if (v->st == VOL_OPEN)
			vol_begin_close(v);
	}
}

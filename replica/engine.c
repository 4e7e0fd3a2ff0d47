/*
 * engine: open (probe, fence with a new epoch, decide who is in sync), close, membership,
 * ejection and reconnection of replicas, quiesced control ops, status. The data path is in
 * engine_io.c, resync / rebuild / verify in engine_resync.c. See engine.h for the contract.
 */
#include "engine_int.h"

#include <errno.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>

static void tick(void *arg);
static void conn_hello_done(struct tio *io, int res, const uint8_t *p, uint32_t len);

/* ---- small helpers ---- */

uint32_t eng_quorum(const struct engine *e)
{
	return e->ntargets / 2 + 1;
}

uint32_t eng_ninsync(const struct engine *e)
{
	uint32_t n = 0;
	for (uint32_t i = 0; i < e->ntargets; i++)
		n += e->t[i]->state == T_INSYNC;
	return n;
}

static bool ready(const struct target *t)
{
	return t->store || (t->conn && t->conn->ready);
}

bool eng_takes_writes(const struct target *t)
{
	return (t->state == T_INSYNC || t->state == T_REBUILDING) && ready(t);
}

bool eng_readable(const struct target *t)
{
	return t->state == T_INSYNC && !t->suspect && ready(t);
}

int eng_tindex(const struct engine *e, const struct target *t)
{
	for (uint32_t i = 0; i < e->ntargets; i++)
		if (e->t[i] == t)
			return (int)i;
	return 0;
}

uint64_t eng_long_timeout(const struct engine *e)
{
	/* fdatasync of a busy replica, HASH of a large range and metadata writes take longer
	 * than one data I/O; a dead replica is still noticed by its connection dropping. */
	uint64_t t = (uint64_t)e->io_timeout_ms * 10;
	return t < 5000 ? 5000 : t;
}

static const char *errstr(int err)
{
	return err < 0 ? strerror(-err) : "ok";
}

static struct target *target_new(struct engine *e, const char *node)
{
	struct target *t = calloc(1, sizeof(*t));
	if (!t)
		return NULL;
	t->e = e;
	snprintf(t->node, sizeof(t->node), "%s", node);
	bitmap_init(&t->dirty);
	t->state = T_STALE;
	for (uint32_t i = 0; i < e->naddrs; i++) {
		if (strcmp(e->addrs[i].node, node) == 0) {
			t->has_addr = true;
			snprintf(t->host, sizeof(t->host), "%s", e->addrs[i].host);
			t->port = e->addrs[i].port;
		}
	}
	return t;
}

/* ---- connections ---- */

static void conn_close(struct target *t)
{
	struct conn *c = t->conn;
	if (!c)
		return;
	t->conn = NULL;
	c->t = NULL;
	rclient_close(c->rc);
}

static void probe_answer(struct target *t, int res);

static void conn_connected(void *arg, int res)
{
	struct conn *c = arg;
	struct target *t = c->t;
	if (res < 0 || !t)
		return; /* closed() follows */
	tio_prep(&c->hello, t, PROTO_HELLO, conn_hello_done, c);
	c->hello.payload = t->e->hello;
	c->hello.plen = t->e->hello_len;
	c->hello.off = t->e->sess_id;
	c->hello.arg = ++t->e->sess_last;
	tio_submit(&c->hello);
}

static void conn_closed(void *arg, int err)
{
	struct conn *c = arg;
	struct target *t = c->t;
	bool current = t && t->conn == c;
	rclient_close(c->rc); /* frees the client after a transport failure */
	free(c);
	if (!current)
		return;
	t->conn = NULL;
	struct engine *e = t->e;
	if (e->dying)
		return;
	if (t->probe_pending)
		probe_answer(t, err ? err : -ECONNRESET);
	else
		eng_eject(t, err ? err : -ECONNRESET, "connection closed");
}

static int conn_start(struct target *t)
{
	struct conn *c = calloc(1, sizeof(*c));
	if (!c)
		return -ENOMEM;
	c->t = t;
	c->started = loop_now_ms();
	struct rclient_cbs cbs = {.connected = conn_connected, .closed = conn_closed, .arg = c};
	t->conn = c;
	int r = rclient_connect(t->e->l, t->host, t->port, &cbs, &c->rc);
	if (r < 0) {
		t->conn = NULL;
		free(c);
	}
	return r;
}

static int parse_info(const uint8_t *p, uint32_t len, struct store_info *in)
{
	json_error_t jerr;
	json_t *j = json_loadb((const char *)p, len, 0, &jerr);
	if (!j)
		return -EBADMSG;
	memset(in, 0, sizeof(*in));
	snprintf(in->name, sizeof(in->name), "%s",
		 json_string_value(json_object_get(j, "name")) ?: "");
	in->size = (uint64_t)json_integer_value(json_object_get(j, "size"));
	in->epoch = (uint64_t)json_integer_value(json_object_get(j, "epoch"));
	in->members_gen = (uint64_t)json_integer_value(json_object_get(j, "members_gen"));
	in->clean = json_is_true(json_object_get(j, "clean"));
	json_t *sn = json_object_get(j, "snapshots");
	in->nsnapshots =
	    json_is_array(sn) ? (uint32_t)json_array_size(sn) : (uint32_t)json_integer_value(sn);
	json_t *m = json_object_get(j, "members"), *v;
	size_t i;
	json_array_foreach(m, i, v)
	{
		if (i >= STORE_MAX_MEMBERS)
			break;
		snprintf(in->members[i].node, sizeof(in->members[i].node), "%s",
			 json_string_value(json_object_get(v, "node")) ?: "");
		in->members[i].in_sync = json_is_true(json_object_get(v, "in_sync"));
		in->nmembers = (uint32_t)i + 1;
	}
	json_decref(j);
	return 0;
}

/* The holder (proto.h) a probed replica's INFO reports; replicas without holders report none. */
static void parse_holder(const uint8_t *p, uint32_t len, struct target *t)
{
	json_error_t jerr;
	json_t *j = json_loadb((const char *)p, len, 0, &jerr);
	json_t *h = json_object_get(j, "holder");
	const char *label = json_string_value(json_object_get(h, "label"));
	t->held = json_is_object(h) && label;
	if (t->held) {
		snprintf(t->hold_label, sizeof(t->hold_label), "%s", label);
		t->hold_epoch = (uint64_t)json_integer_value(json_object_get(h, "epoch"));
	}
	json_decref(j);
}

/* ---- reconnecting a stale replica ---- */

void eng_target_rejoin(struct target *t)
{
	struct engine *e = t->e;
	t->error[0] = 0;
	t->state = T_REBUILDING;
	resync_start(t);
	eng_kick(e);
}

/* Its snapshots first (engine_snapsync.c), then its head. */
static void target_returned(struct target *t)
{
	t->error[0] = 0;
	snapsync_start(t);
}

/* Last step of a reconnection: a replica that missed a resize grows first. */
static void reconnect_ready(struct tio *io, int res, const uint8_t *p, uint32_t len)
{
	(void)p;
	(void)len;
	struct conn *c = io->ctx;
	struct target *t = c->t;
	if (!t || t->e->dying)
		return;
	if (res < 0) {
		snprintf(t->error, sizeof(t->error), "%s: %s",
			 io->op == PROTO_RESIZE ? "resize" : "reopen", errstr(res));
		conn_close(t);
		return;
	}
	if (io->op != PROTO_RESIZE && t->info.size < t->e->size) {
		tio_prep(&c->open, t, PROTO_RESIZE, reconnect_ready, c);
		c->open.arg = t->e->size;
		tio_submit(&c->open);
		return;
	}
	c->ready = true;
	target_returned(t);
}

static void reconnect_hello(struct target *t, struct conn *c, int res, const uint8_t *p,
			    uint32_t len)
{
	struct engine *e = t->e;
	if (res == 0)
		res = parse_info(p, len, &t->info);
	if (res == 0 && t->info.size > e->size)
		res = -EMEDIUMTYPE;
	if (res < 0) {
		snprintf(t->error, sizeof(t->error), "reconnect: %s", errstr(res));
		conn_close(t);
		return;
	}
	t->epoch = t->info.epoch;
	if (t->info.epoch > e->epoch) {
		t->ahead = true;
		snprintf(t->error, sizeof(t->error), "epoch %llu above ours: a newer engine has it",
			 (unsigned long long)t->info.epoch);
		conn_close(t);
		return;
	}
	if (t->info.epoch < e->epoch) {
		/* Never opened by us: it was unreachable since our open. If it was in sync
		 * then but the last engine did not close it cleanly (or it missed membership
		 * changes), it may lack writes that no bitmap records. */
		if (t->auth_insync && !t->need_full &&
		    (!t->info.clean || t->info.members_gen != e->auth.members_gen)) {
			t->need_full = true;
			t->dirty_changed = true;
		}
		tio_prep(&c->open, t, PROTO_OPEN, reconnect_ready, c);
		tio_submit(&c->open);
		return;
	}
	struct tio none = {.ctx = c, .op = PROTO_OPEN};
	reconnect_ready(&none, 0, NULL, 0);
}

static void conn_hello_done(struct tio *io, int res, const uint8_t *p, uint32_t len)
{
	struct conn *c = io->ctx;
	struct target *t = c->t;
	if (!t || t->e->dying)
		return;
	if (t->probe_pending) {
		if (res == 0)
			res = parse_info(p, len, &t->info);
		if (res == 0)
			parse_holder(p, len, t);
		probe_answer(t, res);
		return;
	}
	reconnect_hello(t, c, res, p, len);
}

static void try_reconnect(struct target *t)
{
	struct engine *e = t->e;
	if (t->state != T_STALE || t->diverged || t->conn || t->ss || e->fenced || e->closing)
		return;
	t->last_try = loop_now_ms();
	if (t->store) {
		uint64_t ep = store_epoch(t->store);
		if (ep > e->epoch) {
			t->ahead = true;
			snprintf(t->error, sizeof(t->error), "epoch above ours");
			return;
		}
		struct store_info in;
		int r = ep < e->epoch ? store_bump_epoch(t->store, e->epoch) : 0;
		if (r == 0)
			r = store_set_clean(t->store, false);
		if (r == 0)
			eng_local_hold(e);
		if (r == 0)
			r = store_get_info(t->store, &in);
		if (r == 0 && in.size < e->size)
			r = store_resize(t->store, e->size);
		if (r < 0) {
			snprintf(t->error, sizeof(t->error), "reopen: %s", errstr(r));
			return;
		}
		target_returned(t);
		return;
	}
	if (!t->has_addr)
		return;
	int r = conn_start(t);
	if (r < 0)
		snprintf(t->error, sizeof(t->error), "connect: %s", errstr(r));
}

/* ---- ejection, fencing, membership ---- */

void eng_fence(struct engine *e)
{
	if (e->fenced)
		return;
	e->fenced = true;
	for (uint32_t i = 0; i < e->ntargets; i++) {
		resync_cancel(e->t[i]);
		snapsync_cancel(e->t[i]);
	}
	eio_expire(e, 0);
	eio_release_barrier(e);
}

void eng_eject(struct target *t, int err, const char *why)
{
	struct engine *e = t->e;
	if (e->dying)
		return;
	if (t->state == T_STALE) {
		conn_close(t);
		return;
	}
	bool was_insync = t->state == T_INSYNC;
	if (t->suspect)
		t->need_full = true; /* its hash check did not finish */
	t->state = T_STALE;
	t->suspect = false;
	snprintf(t->error, sizeof(t->error), "%s: %s", why, errstr(err));
	/* Whatever it may not have made durable yet (power loss) must be copied back too. */
	bitmap_or(&t->dirty, &e->wr_prev);
	bitmap_or(&t->dirty, &e->wr_cur);
	t->dirty_changed = true;
	resync_cancel(t);
	conn_close(t);
	if (was_insync) {
		eng_members_bump(e);
		resync_persist_bitmaps(e, NULL, NULL);
	}
	if (e->opening)
		return;
	eng_kick(e);
}

static void members_done(struct tio *io, int res, const uint8_t *p, uint32_t len);

struct mop {
	struct engine *e;
	char *json;
	uint64_t gen;
	int pending;
	struct tio tio[ENGINE_MAX_REPLICAS];
};

static void mop_finish(struct mop *m)
{
	struct engine *e = m->e;
	e->members_busy = false;
	free(m->json);
	free(m);
	if (e->dying)
		return;
	eio_release_barrier(e);
	eng_persist_members(e);
	eng_kick(e);
}

static void members_done(struct tio *io, int res, const uint8_t *p, uint32_t len)
{
	(void)p;
	(void)len;
	struct mop *m = io->ctx;
	struct engine *e = m->e;
	if (!e->dying) {
		if (res == -ESTALE)
			eng_fence(e);
		else if (res < 0)
			eng_eject(io->t, res, "membership update failed");
	}
	if (--m->pending == 0) {
		/* Every in-sync replica that failed was ejected, which bumped the generation
		 * again; what remains in sync has this one. */
		if (!e->dying && !e->fenced && m->gen > e->members_persisted)
			e->members_persisted = m->gen;
		mop_finish(m);
	}
}

void eng_members_bump(struct engine *e)
{
	e->members_gen++;
	e->members_dirty = true;
	eng_persist_members(e);
}

void eng_persist_members(struct engine *e)
{
	if (e->members_busy || !e->members_dirty || e->dying || e->fenced)
		return;
	struct mop *m = calloc(1, sizeof(*m));
	json_t *arr = json_array();
	for (uint32_t i = 0; i < e->ntargets; i++)
		json_array_append_new(arr, json_pack("{s:s,s:b}", "node", e->t[i]->node, "in_sync",
						     e->t[i]->state == T_INSYNC));
	json_t *j = json_pack("{s:I,s:o}", "gen", (json_int_t)e->members_gen, "members", arr);
	if (!m || !j || !(m->json = json_dumps(j, JSON_COMPACT))) {
		json_decref(j);
		free(m);
		return; /* retried by the next tick */
	}
	json_decref(j);
	m->e = e;
	m->gen = e->members_gen;
	m->pending = 1;
	e->members_busy = true;
	e->members_dirty = false;
	for (uint32_t i = 0; i < e->ntargets; i++) {
		struct target *t = e->t[i];
		if (t->state != T_INSYNC || !ready(t))
			continue;
		tio_prep(&m->tio[i], t, PROTO_MEMBERS, members_done, m);
		m->tio[i].payload = m->json;
		m->tio[i].plen = (uint32_t)strlen(m->json);
		m->pending++;
		tio_submit(&m->tio[i]);
	}
	if (--m->pending == 0)
		mop_finish(m); /* no in-sync replica to write it to: not persisted */
}

static void drop_done(struct tio *io, int res, const uint8_t *p, uint32_t len)
{
	(void)res;
	(void)p;
	(void)len;
	free(io->ctx);
}

void eng_set_insync(struct target *t)
{
	struct engine *e = t->e;
	t->state = T_INSYNC;
	t->need_full = false;
	t->suspect = false;
	t->error[0] = 0;
	bitmap_clear_all(&t->dirty);
	t->dirty_changed = false;
	eng_members_bump(e);
	/* Its bitmap is obsolete everywhere; a stale copy would only cost a useless copy. */
	for (uint32_t i = 0; i < e->ntargets; i++) {
		struct target *o = e->t[i];
		if (o->state != T_INSYNC || o == t || !ready(o))
			continue;
		struct tio *io = calloc(1, sizeof(*io) + STORE_NAME_MAX);
		if (!io)
			continue;
		char *name = (char *)(io + 1);
		snprintf(name, STORE_NAME_MAX, "%s", t->node);
		tio_prep(io, o, PROTO_DIRTY_DROP, drop_done, io);
		io->payload = name;
		io->plen = (uint32_t)strlen(name);
		tio_submit(io);
	}
	eng_kick(e);
}

/* ---- quiesced control ops ---- */

static bool all_healthy(const struct engine *e)
{
	for (uint32_t i = 0; i < e->ntargets; i++)
		if (e->t[i]->state != T_INSYNC || e->t[i]->suspect)
			return false;
	return true;
}

void eng_kick(struct engine *e)
{
	if (e->dying)
		return;
	if (e->qops && !e->running && e->active.n == 0 && e->copies == 0 && !e->verify) {
		struct qop *q = e->qops;
		e->running = q;
		q->run(q);
		return;
	}
	eio_dispatch_queue(e);
	/* Even under a quiesce: a reserved copy must start (and end) for the quiesce to end;
	 * resync_pump starts nothing new while a control op waits. */
	for (uint32_t i = 0; i < e->ntargets; i++)
		resync_pump(e->t[i]);
}

static void qop_enqueue(struct engine *e, struct qop *q)
{
	struct qop **pp = &e->qops;
	while (*pp)
		pp = &(*pp)->next;
	*pp = q;
	eng_kick(e);
}

/* Ends the running qop and lets I/O and the next qop go. */
static void qop_end(struct qop *q, int res)
{
	struct engine *e = q->e;
	e->qops = q->next;
	e->running = NULL;
	engine_cb cb = q->cb;
	void *arg = q->arg;
	free(q->json);
	free(q);
	if (cb)
		cb(arg, res);
	eng_kick(e);
}

static void qop_defer_end(void *arg)
{
	struct qop *q = arg;
	qop_end(q, q->res);
}

static struct qop *qop_new(struct engine *e, void (*run)(struct qop *), engine_cb cb, void *arg)
{
	struct qop *q = calloc(1, sizeof(*q));
	if (!q)
		return NULL;
	q->e = e;
	q->run = run;
	q->cb = cb;
	q->arg = arg;
	return q;
}

static void snap_missed(struct target *t, uint16_t op);

/*
 * The clone failed on some replicas: its replica set (made before the op) names them though
 * they lack it. The local clone replica, if it was made, gets the set of those that have it
 * under a higher generation, which makes it authoritative for whoever opens the clone.
 */
static void clone_fix_members(struct qop *q)
{
	struct engine *e = q->e;
	struct store_member m[STORE_MAX_MEMBERS];
	uint32_t n = 0;
	bool local_ok = false;
	for (uint32_t i = 0; i < e->ntargets; i++) {
		struct tio *t = &q->tio[i];
		if (!t->t || t->lres != 0)
			continue;
		local_ok |= t->t->store != NULL;
		snprintf(m[n].node, sizeof(m[n].node), "%s", t->t->node);
		m[n++].in_sync = true;
	}
	json_error_t jerr;
	json_t *j = json_loads(q->json, 0, &jerr);
	const char *name = json_string_value(json_object_get(j, "name"));
	struct store *s;
	struct store_info in;
	if (local_ok && name && replica_server_store(e->local, name, &s) == 0 &&
	    store_get_info(s, &in) == 0)
		store_set_members(s, m, n, in.members_gen + 1);
	json_decref(j);
}

static void snap_done(struct tio *io, int res, const uint8_t *p, uint32_t len)
{
	(void)p;
	(void)len;
	struct qop *q = io->ctx;
	struct engine *e = q->e;
	io->lres = res;
	if (res < 0 && q->res == 0)
		q->res = res;
	if (res == 0)
		q->nok++;
	if (--q->pending)
		return;
	if (e->dying) {
		qop_end(q, -EIO);
		return;
	}
	for (uint32_t i = 0; i < e->ntargets; i++) {
		struct tio *t = &q->tio[i];
		if (!t->t || t->lres == 0)
			continue;
		if (t->lres == -ESTALE) {
			eng_fence(e);
		} else if (q->nok && q->op != PROTO_CLONE && q->op != PROTO_SNAP_DELETE) {
			/* It failed where others succeeded: it may or may not have applied the
			 * op. (Failing everywhere, e.g. a bad name, changed nothing anywhere.) */
			eng_eject(t->t, t->lres, "snapshot op failed");
			snap_missed(t->t, q->op);
		}
	}
	if (q->nok && q->op == PROTO_RESIZE)
		e->size = q->arg64;
	if (q->nok && q->op == PROTO_CLONE && q->res)
		clone_fix_members(q);
	if (q->op != PROTO_RESIZE && q->op != PROTO_CLONE)
		e->snap_gen++;
	/* Done where it counts: on a majority, the ones that failed now out of sync. */
	if (q->nok >= eng_quorum(e) && !e->fenced)
		q->res = 0;
	else if (q->res == 0)
		q->res = e->fenced ? -ESTALE : -EIO;
	qop_end(q, q->res);
}

/*
 * A replica out of sync during a snapshot op misses it; the snapshot catch-up
 * (engine_snapsync.c) replays creates, deletes and reverts when it returns. Its dirty bitmap
 * stays valid across a create or delete (the head's differences are still the grains written
 * since it left), not across a revert (the source discarded head writes the bitmap does not
 * name), so a revert makes its head resync compare everything. A missed resize is made up
 * when it reconnects; a missed clone is not (the clone lists only the replicas that got it).
 */
static void snap_missed(struct target *t, uint16_t op)
{
	if (op == PROTO_CLONE || t->diverged)
		return;
	if (op == PROTO_RESIZE) {
		/* It is grown when it reconnects (reconnect_ready); its bitmap stays valid. */
		if (t->state == T_REBUILDING)
			eng_eject(t, -EXDEV, "missed a resize");
		return;
	}
	if (op == PROTO_SNAP_REVERT) {
		t->need_full = true;
		t->dirty_changed = true; /* drops its persisted bitmap at the next flush */
	}
	if (t->state == T_REBUILDING && (t->store || (t->conn && t->conn->ready)))
		snapsync_start(t); /* again: it must get this op first */
}

/* The clone's replica set is the replicas it is made on (the in-sync ones), so it never
 * names a node that lacks its replica. */
static int clone_members(struct qop *q)
{
	struct engine *e = q->e;
	json_error_t jerr;
	json_t *j = json_loads(q->json, 0, &jerr), *m = json_array();
	for (uint32_t i = 0; j && m && i < e->ntargets; i++)
		if (e->t[i]->state == T_INSYNC)
			json_array_append_new(m, json_string(e->t[i]->node));
	char *txt = NULL;
	if (j && m && json_object_set(j, "members", m) == 0)
		txt = json_dumps(j, JSON_COMPACT);
	json_decref(m);
	json_decref(j);
	if (!txt)
		return -ENOMEM;
	free(q->json);
	q->json = txt;
	return 0;
}

/* Sends q->op to every in-sync replica; the others can no longer follow the layer chain. */
static void snap_run(struct qop *q)
{
	struct engine *e = q->e;
	if (e->fenced) {
		q->res = -ESTALE;
		loop_defer(e->l, qop_defer_end, q);
		return;
	}
	if (eng_ninsync(e) < eng_quorum(e)) {
		q->res = -EIO;
		loop_defer(e->l, qop_defer_end, q);
		return;
	}
	if (q->op != PROTO_RESIZE && q->op != PROTO_CLONE)
		e->snap_gen++;
	if (q->op == PROTO_CLONE && clone_members(q) < 0) {
		q->res = -ENOMEM;
		loop_defer(e->l, qop_defer_end, q);
		return;
	}
	q->pending = 1;
	for (uint32_t i = 0; i < e->ntargets; i++) {
		struct target *t = e->t[i];
		if (t->state != T_INSYNC) {
			snap_missed(t, q->op);
			continue;
		}
		struct tio *io = &q->tio[i];
		tio_prep(io, t, q->op, snap_done, q);
		if (q->op == PROTO_SNAP_CREATE) {
			/* name NUL identity: every replica records the same identity */
			int n = snprintf(q->pl, sizeof(q->pl), "%s", q->name);
			n += 1 +
			     snprintf(q->pl + n + 1, sizeof(q->pl) - (size_t)n - 1, "%s", q->sid);
			io->payload = q->pl;
			io->plen = (uint32_t)n;
		} else if (q->op == PROTO_CLONE) {
			io->payload = q->json;
			io->plen = (uint32_t)strlen(q->json);
		} else if (q->op == PROTO_RESIZE) {
			io->arg = q->arg64;
		} else {
			io->payload = q->name;
			io->plen = (uint32_t)strlen(q->name);
		}
		q->pending++;
		tio_submit(io);
	}
	if (--q->pending == 0)
		loop_defer(e->l, qop_defer_end, q);
}

static int snap_op(struct engine *e, uint16_t op, const char *name, char *json, uint64_t arg64,
		   engine_cb cb, void *arg)
{
	if (!e->open || e->closing) {
		free(json);
		return -EIO;
	}
	if (name && (strlen(name) >= STORE_NAME_MAX || !store_name_valid(name))) {
		free(json);
		return -EINVAL;
	}
	struct qop *q = qop_new(e, snap_run, cb, arg);
	if (!q) {
		free(json);
		return -ENOMEM;
	}
	q->op = op;
	q->json = json;
	q->arg64 = arg64;
	if (op == PROTO_SNAP_CREATE && eng_snap_id(q->sid) < 0) {
		free(q->json);
		free(q);
		return -EIO;
	}
	if (name)
		snprintf(q->name, sizeof(q->name), "%s", name);
	qop_enqueue(e, q);
	return 0;
}

int engine_snapshot_create(struct engine *e, const char *name, engine_cb cb, void *arg)
{
	return snap_op(e, PROTO_SNAP_CREATE, name, NULL, 0, cb, arg);
}

int engine_snapshot_delete(struct engine *e, const char *name, engine_cb cb, void *arg)
{
	return snap_op(e, PROTO_SNAP_DELETE, name, NULL, 0, cb, arg);
}

int engine_snapshot_revert(struct engine *e, const char *name, engine_cb cb, void *arg)
{
	return snap_op(e, PROTO_SNAP_REVERT, name, NULL, 0, cb, arg);
}

int engine_resize(struct engine *e, uint64_t size, engine_cb cb, void *arg)
{
	if (size < e->size)
		return -EINVAL;
	return snap_op(e, PROTO_RESIZE, NULL, NULL, size, cb, arg);
}

int engine_clone(struct engine *e, const char *snap, const char *new_name, engine_cb cb, void *arg)
{
	if (!snap || !new_name || strlen(new_name) >= STORE_NAME_MAX || !store_name_valid(new_name))
		return -EINVAL;
	json_t *j = json_pack("{s:s,s:s}", "snapshot", snap, "name", new_name);
	char *txt = j ? json_dumps(j, JSON_COMPACT) : NULL;
	json_decref(j);
	if (!txt)
		return -ENOMEM;
	return snap_op(e, PROTO_CLONE, snap, txt, 0, cb, arg);
}

struct listop {
	struct engine *e;
	char **json;
	engine_cb cb;
	void *arg;
	struct tio io;
};

static void list_done(struct tio *io, int res, const uint8_t *p, uint32_t len)
{
	struct listop *lo = io->ctx;
	if (res == 0) {
		*lo->json = malloc(len + 1);
		if (*lo->json) {
			memcpy(*lo->json, p, len);
			(*lo->json)[len] = 0;
		} else {
			res = -ENOMEM;
		}
	} else if (res == -ESTALE && !lo->e->dying) {
		eng_fence(lo->e);
	}
	lo->cb(lo->arg, res);
	free(lo);
}

int engine_snapshot_list(struct engine *e, char **json, engine_cb cb, void *arg)
{
	if (!e->open || e->closing)
		return -EIO;
	struct target *src = NULL;
	for (uint32_t i = 0; i < e->ntargets; i++) {
		struct target *t = e->t[i];
		if (eng_readable(t) && (!src || t->store))
			src = t;
	}
	if (!src)
		return -EIO;
	struct listop *lo = calloc(1, sizeof(*lo));
	if (!lo)
		return -ENOMEM;
	lo->e = e;
	lo->json = json;
	lo->cb = cb;
	lo->arg = arg;
	tio_prep(&lo->io, src, PROTO_SNAP_LIST, list_done, lo);
	tio_submit(&lo->io);
	return 0;
}

/* ---- status ---- */

struct bdev engine_bdev(struct engine *e)
{
	return (struct bdev){.ops = &engine_bdev_ops, .ctx = e};
}

uint64_t engine_size(struct engine *e)
{
	return e->size;
}

uint64_t engine_epoch(struct engine *e)
{
	return e->epoch;
}

bool engine_fenced(struct engine *e)
{
	return e->fenced;
}

int engine_replicas(struct engine *e, struct engine_replica_status *out, uint32_t *n)
{
	uint32_t max = *n;
	*n = e->ntargets;
	if (max < e->ntargets)
		return -ENOSPC;
	for (uint32_t i = 0; i < e->ntargets; i++) {
		struct target *t = e->t[i];
		struct engine_replica_status *s = &out[i];
		memset(s, 0, sizeof(*s));
		snprintf(s->node, sizeof(s->node), "%s", t->node);
		/* Catching up snapshots (engine_snapsync.c) is part of rebuilding it. */
		s->state = t->ss				    ? ENGINE_REBUILDING
			   : t->state == T_STALE		    ? ENGINE_STALE
			   : t->state == T_REBUILDING || t->suspect ? ENGINE_REBUILDING
								    : ENGINE_HEALTHY;
		s->epoch = t->epoch;
		s->resync_copied = t->resync_copied;
		s->resync_total = t->resync_total;
		s->resync_done = t->resync_done;
		s->resync_full = t->resync_full;
		if (t->state == T_STALE && e->fenced && !t->error[0])
			snprintf(s->error, sizeof(s->error), "engine fenced");
		else
			snprintf(s->error, sizeof(s->error), "%s", t->error);
	}
	return 0;
}

static void waiters_check(struct engine *e, uint64_t now, bool all)
{
	struct waiter **pp = &e->waiters;
	bool healthy = all_healthy(e);
	while (*pp) {
		struct waiter *w = *pp;
		int res = healthy ? 0 : (all || now >= w->deadline) ? -ETIMEDOUT : 1;
		if (res == 1) {
			pp = &w->next;
			continue;
		}
		*pp = w->next;
		w->cb(w->arg, res);
		free(w);
	}
}

int engine_wait_healthy(struct engine *e, uint32_t timeout_ms, engine_cb cb, void *arg)
{
	if (!e->open)
		return -EIO;
	struct waiter *w = calloc(1, sizeof(*w));
	if (!w)
		return -ENOMEM;
	w->cb = cb;
	w->arg = arg;
	w->deadline = loop_now_ms() + timeout_ms;
	w->next = e->waiters;
	e->waiters = w;
	return 0; /* answered by the next tick, never from inside this call */
}

/* ---- the periodic tick ---- */

static void tick(void *arg)
{
	struct engine *e = arg;
	e->tick = NULL;
	if (e->dying)
		return;
	uint64_t now = loop_now_ms();
	/* A replica counts as silent only for a deadline that had passed by the previous tick:
	 * the loop has read every socket for a whole tick since. Judging by `now` would eject
	 * replicas whose answers wait unread after a stall of our own loop (synchronous store
	 * work, the process not scheduled), and a stall as long as the io timeout would eject
	 * them all at once and fail guest I/O for want of a quorum. */
	uint64_t silent_by = e->prev_tick;
	e->prev_tick = now;
	if (e->opening) {
		/* Only requests of the open itself are outstanding; probes have their own timer. */
		for (uint32_t i = 0; i < e->ntargets; i++)
			if (e->t[i]->ifl_head && silent_by >= e->t[i]->ifl_head->deadline)
				eng_eject(e->t[i], -ETIMEDOUT, "no answer");
		loop_timer_add(e->l, ENGINE_TICK_MS, tick, e, &e->tick);
		return;
	}
	for (uint32_t i = 0; i < e->ntargets; i++) {
		struct target *t = e->t[i];
		if (t->ifl_head && silent_by >= t->ifl_head->deadline)
			eng_eject(t, -ETIMEDOUT, "no answer");
		else if (t->conn && !t->conn->ready &&
			 silent_by >= t->conn->started + eng_long_timeout(e))
			eng_eject(t, -ETIMEDOUT, "connect");
	}
	eio_expire(e, now);
	if (!e->members_busy && e->members_dirty)
		eng_persist_members(e);
	if (now - e->last_reconnect >= ENGINE_RECONNECT_MS) {
		e->last_reconnect = now;
		for (uint32_t i = 0; i < e->ntargets; i++)
			try_reconnect(e->t[i]);
	}
	waiters_check(e, now, false);
	eng_kick(e);
	if (!e->dying)
		loop_timer_add(e->l, ENGINE_TICK_MS, tick, e, &e->tick);
}

/* ---- teardown ---- */

static void free_now(void *arg)
{
	struct engine *e = arg;
	if (e->tick)
		loop_timer_cancel(e->l, e->tick);
	if (e->open_timer)
		loop_timer_cancel(e->l, e->open_timer);
	for (uint32_t i = 0; i < e->ntargets; i++) {
		bitmap_free(&e->t[i]->dirty);
		free(e->t[i]);
	}
	for (uint32_t i = 0; i < e->nprobes; i++) {
		if (e->probes[i]) {
			bitmap_free(&e->probes[i]->dirty);
			free(e->probes[i]);
		}
	}
	bitmap_free(&e->wr_cur);
	bitmap_free(&e->wr_prev);
	if (e->local_held)
		replica_server_release(e->local, e->volume, e->sess_id);
	engine_cb cb = e->close_cb;
	void *cbarg = e->close_arg;
	int res = e->close_res;
	free(e->probes);
	free(e->addrs);
	free(e);
	if (cb)
		cb(cbarg, res);
}

void eng_try_free(struct engine *e)
{
	if (e->tios_pending == 0 && !e->freeing) {
		e->freeing = true;
		if (loop_defer(e->l, free_now, e) < 0)
			free_now(e);
	}
}

/* Stops everything and frees once no op of ours is outstanding; cb(arg, res) then. */
static void engine_die(struct engine *e, int res, engine_cb cb, void *arg)
{
	e->close_cb = cb;
	e->close_arg = arg;
	e->close_res = res;
	for (uint32_t i = 0; i < e->ntargets; i++) {
		resync_cancel(e->t[i]);
		snapsync_cancel(e->t[i]);
	}
	e->dying = true;
	e->open = false;
	/* Guest I/O still queued cannot run any more. */
	while (e->queue.head) {
		struct eio *io = e->queue.head;
		eio_list_del(&e->queue, io);
		io->cb(io->arg, -EIO);
		free(io);
	}
	while (e->barrier.head) {
		struct eio *io = e->barrier.head;
		eio_list_del(&e->barrier, io);
		io->cb(io->arg, -EIO);
		free(io);
	}
	waiters_check(e, 0, true);
	while (e->qops) {
		struct qop *q = e->qops;
		e->qops = q->next;
		if (q->cb)
			q->cb(q->arg, -EIO);
		free(q->json);
		free(q);
	}
	for (uint32_t i = 0; i < e->ntargets; i++)
		conn_close(e->t[i]);
	for (uint32_t i = 0; i < e->nprobes; i++)
		if (e->probes[i])
			conn_close(e->probes[i]);
	eng_try_free(e);
}

/* ---- close ---- */

static void close_step(struct qop *q);
static void close_step_fn(void *arg);

static void close_tio_done(struct tio *io, int res, const uint8_t *p, uint32_t len)
{
	(void)p;
	(void)len;
	struct qop *q = io->ctx;
	if (res < 0 && q->res == 0)
		q->res = res;
	if (res == 0 && io->op == PROTO_CLOSE && io->t->state == T_INSYNC)
		q->nok++;
	if (--q->pending == 0)
		close_step(q);
}

static void close_bitmaps_done(void *arg, int res)
{
	struct qop *q = arg;
	if (res < 0 && q->res == 0)
		q->res = res;
	close_step(q);
}

static void close_send(struct qop *q, uint16_t op)
{
	struct engine *e = q->e;
	q->pending = 1;
	for (uint32_t i = 0; i < e->ntargets; i++) {
		if (!eng_takes_writes(e->t[i]))
			continue;
		tio_prep(&q->tio[i], e->t[i], op, close_tio_done, q);
		q->pending++;
		tio_submit(&q->tio[i]);
	}
	if (--q->pending == 0)
		loop_defer(e->l, close_step_fn, q);
}

/* flush → persist bitmaps → CLOSE (marks clean) → die. */
static void close_step(struct qop *q)
{
	struct engine *e = q->e;
	q->arg64++;
	if (e->fenced && q->arg64 < 4)
		q->arg64 = 4;
	switch (q->arg64) {
	case 1:
		close_send(q, PROTO_FLUSH);
		return;
	case 2:
		resync_persist_bitmaps(e, close_bitmaps_done, q);
		return;
	case 3: {
		/* A replica whose hash check did not finish must not be called clean:
		 * leaving every replica unclean makes the next open check again. */
		bool checking = false;
		for (uint32_t i = 0; i < e->ntargets; i++)
			checking |= e->t[i]->suspect;
		if (!checking) {
			close_send(q, PROTO_CLOSE);
			return;
		}
		close_step(q);
		return;
	}
	default: {
		engine_cb cb = q->cb;
		void *arg = q->arg;
		/* A replica that failed to close stays unclean, which the next open notices;
		 * the close itself succeeded if a majority is closed cleanly. */
		int res = e->fenced		    ? -ESTALE
			  : q->nok >= eng_quorum(e) ? 0
			  : q->res		    ? q->res
						    : -EIO;
		e->qops = q->next;
		e->running = NULL;
		free(q);
		engine_die(e, res, cb, arg);
	}
	}
}

static void close_step_fn(void *arg)
{
	close_step(arg);
}

static void close_run(struct qop *q)
{
	q->arg64 = 0;
	close_step(q);
}

int engine_close(struct engine *e, engine_cb cb, void *arg)
{
	if (e->closing || e->opening || e->dying)
		return -EBUSY;
	struct qop *q = qop_new(e, close_run, cb, arg);
	if (!q)
		return -ENOMEM;
	e->closing = true;
	qop_enqueue(e, q);
	return 0;
}

/* ---- open ---- */

static void open_fail(struct engine *e, int err)
{
	engine_cb cb = e->open_cb;
	void *arg = e->open_arg;
	e->opening = false;
	engine_die(e, err, cb, arg);
}

static void open_finish(struct engine *e)
{
	e->opening = false;
	e->open = true;
	e->last_reconnect = loop_now_ms();
	for (uint32_t i = 0; i < e->ntargets; i++) {
		struct target *t = e->t[i];
		if (t->state == T_REBUILDING)
			snapsync_start(t); /* it may have missed snapshot ops */
		else if (t->suspect)
			resync_start(t);
	}
	e->open_cb(e->open_arg, 0);
}

static void open_members_check(void *arg)
{
	struct engine *e = arg;
	e->open_timer = NULL;
	if (!e->opening)
		return;
	if (e->fenced) {
		open_fail(e, -ESTALE);
		return;
	}
	if (e->members_persisted >= e->open_gen) {
		open_finish(e);
		return;
	}
	if (!e->members_busy && eng_ninsync(e) == 0) {
		open_fail(e, -EIO); /* nobody left to hold the membership */
		return;
	}
	loop_timer_add(e->l, 10, open_members_check, e, &e->open_timer);
}

static void dirty_get_done(struct tio *io, int res, const uint8_t *p, uint32_t len)
{
	struct engine *e = io->t->e;
	struct target *m = io->ctx;
	if (!e->dying) {
		uint32_t grain = 0;
		if (res == 0 && len >= 4)
			grain = (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 |
				(uint32_t)p[3] << 24;
		if (res == 0 && grain == ENGINE_GRAIN) {
			bitmap_from_bytes(&m->dirty, p + 4, len - 4);
		} else {
			/* No usable bitmap: compare everything. */
			m->need_full = true;
			m->dirty_changed = true;
		}
	}
	free(io);
	if (--e->open_pending == 0 && !e->dying) {
		e->open_gen = e->members_gen + 1;
		eng_members_bump(e);
		open_members_check(e);
	}
}

static void open_decide(struct engine *e)
{
	uint32_t naccepted = 0, nstale = 0, nreach = 0;
	for (uint32_t i = 0; i < e->ntargets; i++) {
		struct target *t = e->t[i];
		naccepted += t->accepted;
		nstale += t->probe_err == -ESTALE;
		nreach += t->probed;
	}
	if (naccepted < eng_quorum(e)) {
		open_fail(e, nstale ? -ESTALE : nreach < eng_quorum(e) ? -ENOTCONN : -EIO);
		return;
	}
	struct store_info *auth = &e->auth;
	struct target *ref = NULL;
	bool insync_auth[ENGINE_MAX_REPLICAS];
	for (uint32_t i = 0; i < e->ntargets; i++) {
		struct target *t = e->t[i];
		insync_auth[i] = false;
		for (uint32_t k = 0; k < auth->nmembers; k++)
			if (strcmp(auth->members[k].node, t->node) == 0)
				insync_auth[i] = auth->members[k].in_sync;
		t->auth_insync = insync_auth[i];
		bool ok = t->accepted && insync_auth[i] &&
			  t->info.members_gen == auth->members_gen &&
			  !(e->auth_clean && !t->info.clean);
		if (ok && (!ref || t->store || (t == e->auth_t && !ref->store)))
			ref = t;
		t->state = ok ? T_INSYNC : t->accepted ? T_REBUILDING : T_STALE;
	}
	if (!ref) {
		open_fail(e, -EIO);
		return;
	}
	e->ref = ref;
	e->open_pending = 1;
	for (uint32_t i = 0; i < e->ntargets; i++) {
		struct target *t = e->t[i];
		if (t->probed && t->info.size != e->size) {
			/* Missed a resize: the reconnection grows it (or refuses a bigger one). */
			t->state = T_STALE;
			if (t->conn)
				conn_close(t);
			snprintf(t->error, sizeof(t->error), "size differs");
			if (t->info.size > e->size)
				t->diverged = true;
		}
		if (t->state == T_STALE && !t->error[0])
			snprintf(t->error, sizeof(t->error), "unreachable at open: %s",
				 errstr(t->probe_err));
		if (!e->auth_clean) {
			/* The last engine died: replicas may differ by unflushed writes.
			 * Compare everything against ref; in-sync ones keep serving quorum. */
			if (t != ref) {
				t->need_full = true;
				t->suspect = t->state == T_INSYNC;
				t->dirty_changed = true;
			}
			continue;
		}
		/* Missed snapshot ops are replayed by the catch-up; a missed revert already
		 * dropped its bitmap (snap_missed()), so it is rebuilt by hash. */
		if (!insync_auth[i]) {
			struct tio *io = calloc(1, sizeof(*io) + STORE_NAME_MAX);
			if (!io) {
				t->need_full = true;
				continue;
			}
			char *name = (char *)(io + 1);
			snprintf(name, STORE_NAME_MAX, "%s", t->node);
			tio_prep(io, ref, PROTO_DIRTY_GET, dirty_get_done, t);
			io->payload = name;
			io->plen = (uint32_t)strlen(name);
			e->open_pending++;
			tio_submit(io);
		} else if (t->state != T_INSYNC && t->accepted) {
			t->need_full = true; /* generation behind or unclean: trust nothing */
			t->dirty_changed = true;
		}
	}
	if (--e->open_pending == 0) {
		e->open_gen = e->members_gen + 1;
		eng_members_bump(e);
		open_members_check(e);
	}
}

static void open_op_done(struct tio *io, int res, const uint8_t *p, uint32_t len)
{
	(void)p;
	(void)len;
	struct target *t = io->t;
	struct engine *e = t->e;
	free(io);
	if (e->dying)
		return;
	if (res == 0) {
		t->accepted = true;
		if (t->conn)
			t->conn->ready = true;
	} else {
		t->probe_err = res;
		conn_close(t);
	}
	if (--e->open_pending == 0)
		open_decide(e);
}

void eng_local_hold(struct engine *e)
{
	if (e->local &&
	    replica_server_hold(e->local, e->volume, e->sess_id, e->label, e->epoch) == 0)
		e->local_held = true;
}

static void held_list_done(struct tio *io, int res, const uint8_t *p, uint32_t len)
{
	struct engine *e = io->t->e;
	free(io);
	if (e->held && res == 0 && (e->held->snapshots = malloc((size_t)len + 1))) {
		if (len)
			memcpy(e->held->snapshots, p, len);
		e->held->snapshots[len] = 0;
	}
	open_fail(e, -EBUSY);
}

/*
 * refuse_if_held: another engine has the volume open (a replica at the highest epoch names a
 * holder that is not us), so opening would fence it. Describes the volume from the probes and
 * the authoritative replica's SNAP_LIST (sent at its current epoch: no OPEN), then fails the
 * open with -EBUSY. False if nobody else holds it.
 */
static bool refuse_held(struct engine *e, struct target *auth, uint64_t maxep)
{
	struct target *h = NULL;
	for (uint32_t i = 0; i < e->nprobes && !h; i++) {
		struct target *t = e->probes[i];
		if (t && t->probed && t->held && t->hold_epoch == maxep && t->info.epoch == maxep &&
		    strcmp(t->hold_label, e->local_node) != 0)
			h = t;
	}
	if (!h)
		return false;
	struct engine_held *d = e->held;
	if (!d) {
		open_fail(e, -EBUSY);
		return true;
	}
	memset(d, 0, sizeof(*d));
	snprintf(d->label, sizeof(d->label), "%s", h->hold_label[0] ? h->hold_label : "?");
	d->epoch = h->hold_epoch;
	d->auth = auth->info;
	for (uint32_t k = 0; k < auth->info.nmembers && k < ENGINE_MAX_REPLICAS; k++) {
		snprintf(d->r[k].node, sizeof(d->r[k].node), "%s", auth->info.members[k].node);
		d->r[k].in_sync = auth->info.members[k].in_sync;
		for (uint32_t i = 0; i < e->nprobes; i++) {
			struct target *t = e->probes[i];
			if (t && t->probed && strcmp(t->node, d->r[k].node) == 0) {
				d->r[k].reachable = true;
				d->r[k].epoch = t->info.epoch;
			}
		}
		d->n = k + 1;
	}
	struct tio *io = calloc(1, sizeof(*io));
	if (!io) {
		open_fail(e, -EBUSY);
		return true;
	}
	e->epoch = auth->info.epoch; /* read at its epoch: no OPEN, nobody fenced */
	tio_prep(io, auth, PROTO_SNAP_LIST, held_list_done, NULL);
	tio_submit(io);
	return true;
}

static void probe_done(void *arg)
{
	struct engine *e = arg;
	if (e->open_timer) {
		loop_timer_cancel(e->l, e->open_timer);
		e->open_timer = NULL;
	}
	struct target *auth = NULL;
	uint64_t maxep = 0;
	bool all_enoent = e->nprobes > 0;
	for (uint32_t i = 0; i < e->nprobes; i++) {
		struct target *t = e->probes[i];
		all_enoent &= t->probe_err == -ENOENT;
		if (!t->probed)
			continue;
		if (t->info.epoch > maxep)
			maxep = t->info.epoch;
		if (!auth || t->info.members_gen > auth->info.members_gen ||
		    (t->info.members_gen == auth->info.members_gen && t->store))
			auth = t;
	}
	if (!auth || auth->info.nmembers == 0) {
		open_fail(e, all_enoent ? -ENOENT : -ENOTCONN);
		return;
	}
	if (e->refuse_if_held && refuse_held(e, auth, maxep))
		return;
	e->auth = auth->info;
	e->auth_t = auth;
	e->auth_clean = auth->info.clean;
	e->size = auth->info.size;
	e->epoch = maxep + 1;
	e->members_gen = e->members_persisted = auth->info.members_gen;
	/* Members come from the authoritative replica; other probes are dropped. */
	for (uint32_t k = 0; k < auth->info.nmembers && k < ENGINE_MAX_REPLICAS; k++) {
		const char *node = auth->info.members[k].node;
		struct target *t = NULL;
		for (uint32_t i = 0; i < e->nprobes; i++) {
			if (e->probes[i] && strcmp(e->probes[i]->node, node) == 0) {
				t = e->probes[i];
				e->probes[i] = NULL;
				break;
			}
		}
		if (!t)
			t = target_new(e, node);
		if (!t) {
			open_fail(e, -ENOMEM);
			return;
		}
		e->t[e->ntargets++] = t;
	}
	for (uint32_t i = 0; i < e->nprobes; i++) {
		if (e->probes[i]) {
			conn_close(e->probes[i]);
			if (e->probes[i]->ifl_head == NULL) {
				bitmap_free(&e->probes[i]->dirty);
				free(e->probes[i]);
				e->probes[i] = NULL;
			}
		}
	}
	e->open_pending = 1;
	for (uint32_t i = 0; i < e->ntargets; i++) {
		struct target *t = e->t[i];
		if (!t->probed)
			continue;
		struct tio *io = calloc(1, sizeof(*io));
		if (!io)
			continue;
		tio_prep(io, t, PROTO_OPEN, open_op_done, NULL);
		e->open_pending++;
		tio_submit(io);
	}
	if (--e->open_pending == 0)
		open_decide(e);
}

static void probe_answer(struct target *t, int res)
{
	struct engine *e = t->e;
	if (!t->probe_pending)
		return;
	t->probe_pending = false;
	if (res == 0) {
		t->probed = true;
		t->epoch = t->info.epoch;
	} else {
		t->probe_err = res;
		conn_close(t);
	}
	if (--e->open_pending == 0)
		loop_defer(e->l, probe_done, e);
}

static void probe_timeout(void *arg)
{
	struct engine *e = arg;
	e->open_timer = NULL;
	for (uint32_t i = 0; i < e->nprobes; i++)
		if (e->probes[i] && e->probes[i]->probe_pending) {
			conn_close(e->probes[i]);
			probe_answer(e->probes[i], -ETIMEDOUT);
		}
}

int engine_open(struct loop *l, const struct engine_params *p, struct engine **out, engine_cb cb,
		void *arg)
{
	if (!p->volume || strlen(p->volume) >= STORE_NAME_MAX || !store_name_valid(p->volume))
		return -EINVAL;
	struct engine *e = calloc(1, sizeof(*e));
	if (!e)
		return -ENOMEM;
	e->l = l;
	/* Not secret, only distinct from other engines of this volume: a collision costs just
	 * a needless refusal of the other engine's HELLOs, which its epoch fences anyway. */
	if (getrandom(&e->sess_id, sizeof(e->sess_id), 0) != sizeof(e->sess_id))
		e->sess_id = loop_now_ms() ^ (uint64_t)(uintptr_t)e;
	snprintf(e->volume, sizeof(e->volume), "%s", p->volume);
	snprintf(e->local_node, sizeof(e->local_node), "%s", p->local_node ? p->local_node : "");
	e->local = p->local;
	snprintf(e->label, sizeof(e->label), "%s", p->label ? p->label : e->local_node);
	for (char *c = e->label; *c; c++)
		if (*c < 0x20 || *c > 0x7e)
			*c = '?'; /* replicas refuse unprintable labels */
	size_t vlen = strlen(e->volume), llen = strlen(e->label);
	memcpy(e->hello, e->volume, vlen);
	if (llen) {
		e->hello[vlen] = 0;
		memcpy(e->hello + vlen + 1, e->label, llen);
	}
	e->hello_len = (uint32_t)(vlen + (llen ? 1 + llen : 0));
	e->refuse_if_held = p->refuse_if_held;
	e->held = p->held;
	e->io_timeout_ms = p->io_timeout_ms ? p->io_timeout_ms : 1000;
	e->open_cb = cb;
	e->open_arg = arg;
	bitmap_init(&e->wr_cur);
	bitmap_init(&e->wr_prev);
	e->addrs = calloc(p->naddrs + 1, sizeof(*e->addrs));
	e->probes = calloc(p->naddrs + 1, sizeof(*e->probes));
	if (!e->addrs || !e->probes) {
		free(e->addrs);
		free(e->probes);
		free(e);
		return -ENOMEM;
	}
	if (p->naddrs)
		memcpy(e->addrs, p->addrs, p->naddrs * sizeof(*e->addrs));
	e->naddrs = p->naddrs;
	e->opening = true;
	*out = e;
	e->open_pending = 1;
	struct store *s;
	if (p->local && p->local_node && replica_server_store(p->local, p->volume, &s) == 0) {
		struct target *t = target_new(e, p->local_node);
		if (t) {
			t->store = s;
			if (store_get_info(s, &t->info) == 0) {
				t->probed = true;
				t->epoch = t->info.epoch;
			}
			t->held = replica_server_holder(p->local, p->volume, t->hold_label,
							&t->hold_epoch) == 1;
			e->probes[e->nprobes++] = t;
		}
	}
	for (uint32_t i = 0; i < p->naddrs; i++) {
		if (e->nprobes && e->probes[0]->store &&
		    strcmp(p->addrs[i].node, p->local_node) == 0)
			continue;
		struct target *t = target_new(e, p->addrs[i].node);
		if (!t)
			continue;
		e->probes[e->nprobes++] = t;
		t->probe_pending = true;
		e->open_pending++;
		int r = conn_start(t);
		if (r < 0) {
			t->probe_pending = false;
			t->probe_err = r;
			e->open_pending--;
		}
	}
	loop_timer_add(l, ENGINE_TICK_MS, tick, e, &e->tick);
	uint64_t pt = 2ull * e->io_timeout_ms;
	loop_timer_add(l, pt < 2000 ? 2000 : pt, probe_timeout, e, &e->open_timer);
	if (--e->open_pending == 0)
		loop_defer(l, probe_done, e);
	return 0;
}

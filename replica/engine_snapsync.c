/*
 * engine_snapsync: snapshot catch-up. A replica that returns (reconnect, or out of sync at
 * open) first gets the snapshot tree of an in-sync source, by snapshot identity, before its
 * head is resynced (engine_resync.c). While catching up it stays stale: it receives no guest
 * writes, so what is copied into its head before a SNAP_CREATE is exactly the source's view.
 *
 * One step at a time, re-listing both sides after every change (the plan is recomputed from
 * the lists, so an interrupted catch-up simply starts over and finds less to do):
 *   1. delete on the target every snapshot the source does not have (by identity), or whose
 *      parent differs;
 *   2. for each source snapshot the target lacks, in creation order: revert the target to the
 *      snapshot's parent (or to an empty chain), copy the extents whose XXH3 differs between
 *      the source's view of the snapshot (SNAP_HASH / SNAP_READ) and the target's head, then
 *      SNAP_CREATE it on the target with the same identity;
 *   3. revert the target to the source head's parent if it differs;
 *   4. if no snapshot op ran on the engine meanwhile, hand over to the head resync.
 * Any failure abandons the catch-up and drops the connection; the next reconnection retries.
 */
#include "engine_int.h"

#include <errno.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>

#define SS_RETRY_MS 200
#define SS_MAX_RETRIES 100 /* a deleted snapshot's name is free once its merge ends */
#define SS_MAX_STEPS (8 * STORE_MAX_LAYERS + 64)
/* Grains per SNAP_HASH / HASH: a hash is synchronous on the replica's loop (a local one is
 * ours), so small batches keep guest I/O flowing meanwhile. */
#define SS_HASH_BATCH 8

struct snent {
	char name[STORE_NAME_MAX];
	char id[STORE_SNAP_ID_MAX];
	char parent_id[STORE_SNAP_ID_MAX];
};

/* Snapshots not being deleted, oldest first, and the head's parent. */
struct snlist {
	uint32_t n;
	char head_parent[STORE_SNAP_ID_MAX];
	struct snent v[STORE_MAX_LAYERS];
};

struct snapsync {
	struct target *t, *src;
	bool cancelled;
	int pending;
	int res_src, res_dst;
	uint64_t gen; /* e->snap_gen when the lists were asked for */
	struct snlist *ls, *ld;
	struct tio ts, td;
	struct loop_timer *timer;
	int retries;
	uint32_t steps;
	/* a mutation of the target */
	char pl[STORE_NAME_MAX + STORE_SNAP_ID_MAX + 1];
	/* copying one snapshot's view */
	char cur_id[STORE_SNAP_ID_MAX];
	char cur_name[STORE_NAME_MAX];
	uint64_t pos, hlen;
	uint32_t hn, hi;
	uint64_t hs[SS_HASH_BATCH], hd[SS_HASH_BATCH];
	uint8_t *buf;
	uint32_t clen;
	uint64_t copied;
};

static void ss_list(void *arg);

int eng_snap_id(char out[STORE_SNAP_ID_MAX])
{
	uint8_t b[16];
	if (getrandom(b, sizeof(b), 0) != (ssize_t)sizeof(b))
		return -EIO;
	for (int i = 0; i < 16; i++)
		snprintf(out + 2 * i, 3, "%02x", b[i]);
	return 0;
}

static void ss_free(struct snapsync *ss)
{
	if (ss->timer)
		loop_timer_cancel(ss->t->e->l, ss->timer);
	free(ss->ls);
	free(ss->ld);
	free(ss->buf);
	free(ss);
}

void snapsync_cancel(struct target *t)
{
	struct snapsync *ss = t->ss;
	if (!ss)
		return;
	t->ss = NULL;
	ss->cancelled = true;
	if (ss->timer) {
		loop_timer_cancel(t->e->l, ss->timer);
		ss->timer = NULL;
	}
	if (!ss->pending)
		ss_free(ss);
}

/* True when the catch-up must stop looking at results (and ss may have been freed). */
static bool ss_gone(struct snapsync *ss)
{
	if (!ss->cancelled && !ss->t->e->dying)
		return false;
	if (!ss->pending) {
		if (ss->t->ss == ss)
			ss->t->ss = NULL;
		ss_free(ss);
	}
	return true;
}

static void ss_fail(struct snapsync *ss, int res, const char *why)
{
	struct target *t = ss->t;
	struct engine *e = t->e;
	t->ss = NULL;
	ss_free(ss);
	if (res == -ESTALE) {
		eng_fence(e);
		return;
	}
	/* Stays stale; dropping the connection makes the reconnection try again. */
	eng_eject(t, res, why);
	snprintf(t->error, sizeof(t->error), "snapshot catch-up: %s: %s", why,
		 strerror(res < 0 ? -res : EIO));
}

static void ss_finish(struct snapsync *ss)
{
	struct target *t = ss->t;
	uint64_t copied = ss->copied;
	t->ss = NULL;
	ss_free(ss);
	eng_target_rejoin(t);
	t->resync_copied += copied;
}

static void ss_later(struct snapsync *ss, uint64_t ms)
{
	loop_timer_add(ss->t->e->l, ms, ss_list, ss, &ss->timer);
}

/* ---- lists ---- */

static int parse_list(const uint8_t *p, uint32_t len, struct snlist *out)
{
	json_error_t jerr;
	json_t *j = json_loadb((const char *)p, len, 0, &jerr), *v;
	if (!json_is_array(j)) {
		json_decref(j);
		return -EBADMSG;
	}
	memset(out, 0, sizeof(*out));
	size_t i;
	int r = 0;
	json_array_foreach(j, i, v)
	{
		const char *name = json_string_value(json_object_get(v, "name"));
		const char *id = json_string_value(json_object_get(v, "id"));
		const char *pid = json_string_value(json_object_get(v, "parent_id"));
		if (!name || !id || !pid || out->n >= STORE_MAX_LAYERS) {
			r = -EBADMSG;
			break;
		}
		if (json_is_true(json_object_get(v, "deleting")))
			continue;
		struct snent *s = &out->v[out->n++];
		snprintf(s->name, sizeof(s->name), "%s", name);
		snprintf(s->id, sizeof(s->id), "%s", id);
		snprintf(s->parent_id, sizeof(s->parent_id), "%s", pid);
		if (json_is_true(json_object_get(v, "in_head_chain")))
			snprintf(out->head_parent, sizeof(out->head_parent), "%s", id);
	}
	json_decref(j);
	return r;
}

static const struct snent *find(const struct snlist *l, const char *id)
{
	for (uint32_t i = 0; i < l->n; i++)
		if (!strcmp(l->v[i].id, id))
			return &l->v[i];
	return NULL;
}

static void ss_plan(struct snapsync *ss);

static void list_done(struct tio *io, int res, const uint8_t *p, uint32_t len)
{
	struct snapsync *ss = io->ctx;
	ss->pending--;
	if (ss_gone(ss))
		return;
	bool src = io == &ss->ts;
	if (res == 0)
		res = parse_list(p, len, src ? ss->ls : ss->ld);
	if (src)
		ss->res_src = res;
	else
		ss->res_dst = res;
	if (ss->pending)
		return;
	if (ss->res_src < 0 || ss->res_dst < 0) {
		ss_fail(ss, ss->res_src < 0 ? ss->res_src : ss->res_dst, "list");
		return;
	}
	ss_plan(ss);
}

static void ss_list(void *arg)
{
	struct snapsync *ss = arg;
	struct engine *e = ss->t->e;
	ss->timer = NULL;
	if (ss_gone(ss))
		return;
	if (e->running || e->qops) {
		/* A snapshot op is changing the source: look once it is done. */
		ss_later(ss, 20);
		return;
	}
	if (!ss->src || !eng_readable(ss->src)) {
		ss_fail(ss, -EIO, "no in-sync source");
		return;
	}
	ss->gen = e->snap_gen;
	ss->pending = 2;
	tio_prep(&ss->ts, ss->src, PROTO_SNAP_LIST, list_done, ss);
	tio_prep(&ss->td, ss->t, PROTO_SNAP_LIST, list_done, ss);
	tio_submit(&ss->ts);
	tio_submit(&ss->td);
}

/* ---- changing the target ---- */

static void mutate(struct snapsync *ss, uint16_t op, const char *name, const char *id);

static void create_retry(void *arg)
{
	struct snapsync *ss = arg;
	ss->timer = NULL;
	if (ss_gone(ss))
		return;
	mutate(ss, PROTO_SNAP_CREATE, ss->cur_name, ss->cur_id);
}

static void mut_done(struct tio *io, int res, const uint8_t *p, uint32_t len)
{
	(void)p;
	(void)len;
	struct snapsync *ss = io->ctx;
	ss->pending--;
	if (ss_gone(ss))
		return;
	if (res == -EEXIST && io->op == PROTO_SNAP_CREATE && ss->retries++ < SS_MAX_RETRIES) {
		/* A deleted snapshot with that name is still merging: the head is ready, only
		 * the create waits. */
		loop_timer_add(ss->t->e->l, SS_RETRY_MS, create_retry, ss, &ss->timer);
		return;
	}
	if (res < 0) {
		ss_fail(ss, res, proto_op_name(io->op));
		return;
	}
	ss_list(ss);
}

static void mutate(struct snapsync *ss, uint16_t op, const char *name, const char *id)
{
	tio_prep(&ss->td, ss->t, op, mut_done, ss);
	if (name) {
		int n = snprintf(ss->pl, sizeof(ss->pl), "%s", name);
		if (id) {
			n++;
			n += snprintf(ss->pl + n, sizeof(ss->pl) - (size_t)n, "%s", id);
		}
		ss->td.payload = ss->pl;
		ss->td.plen = (uint32_t)n;
	} else {
		ss->td.arg = 1; /* SNAP_REVERT to an empty chain */
	}
	ss->pending = 1;
	tio_submit(&ss->td);
}

static void revert_to(struct snapsync *ss, const char *parent_id)
{
	const struct snent *p = parent_id[0] ? find(ss->ld, parent_id) : NULL;
	if (parent_id[0] && !p) {
		/* Parents come first in creation order, so this cannot happen; never loop on it. */
		ss_fail(ss, -EPROTO, "parent snapshot missing");
		return;
	}
	mutate(ss, PROTO_SNAP_REVERT, p ? p->name : NULL, NULL);
}

/* ---- copying a snapshot's view into the target's head ---- */

static void hash_step(struct snapsync *ss);
static void copy_next(struct snapsync *ss);

static void copy_wr_done(struct tio *io, int res, const uint8_t *p, uint32_t len)
{
	(void)p;
	(void)len;
	struct snapsync *ss = io->ctx;
	ss->pending--;
	if (ss_gone(ss))
		return;
	if (res < 0) {
		ss_fail(ss, res, "write");
		return;
	}
	ss->copied += ss->clen;
	ss->hi++;
	copy_next(ss);
}

static void copy_rd_done(struct tio *io, int res, const uint8_t *p, uint32_t len)
{
	struct snapsync *ss = io->ctx;
	ss->pending--;
	if (ss_gone(ss))
		return;
	if (res == 0 && len != ss->clen)
		res = -EBADMSG;
	if (res < 0) {
		/* The source changed under us (e.g. the snapshot is being deleted): re-plan. */
		if (res == -ENOENT) {
			ss_list(ss);
			return;
		}
		ss_fail(ss, res, "snapshot read");
		return;
	}
	memcpy(ss->buf, p, len);
	tio_prep(&ss->td, ss->t, PROTO_WRITE, copy_wr_done, ss);
	ss->td.off = ss->pos + (uint64_t)ss->hi * ENGINE_GRAIN;
	ss->td.len = ss->clen;
	ss->td.payload = ss->buf;
	ss->td.plen = ss->clen;
	ss->pending = 1;
	tio_submit(&ss->td);
}

static void copy_next(struct snapsync *ss)
{
	struct engine *e = ss->t->e;
	while (ss->hi < ss->hn && ss->hs[ss->hi] == ss->hd[ss->hi])
		ss->hi++;
	if (ss->hi == ss->hn) {
		ss->pos += ss->hlen;
		hash_step(ss);
		return;
	}
	uint64_t off = ss->pos + (uint64_t)ss->hi * ENGINE_GRAIN;
	ss->clen = (uint32_t)(e->size - off < ENGINE_GRAIN ? e->size - off : ENGINE_GRAIN);
	tio_prep(&ss->ts, ss->src, PROTO_SNAP_READ, copy_rd_done, ss);
	ss->ts.off = off;
	ss->ts.len = ss->clen;
	ss->ts.payload = ss->cur_id;
	ss->ts.plen = (uint32_t)strlen(ss->cur_id);
	ss->pending = 1;
	tio_submit(&ss->ts);
}

static void hash_done(struct tio *io, int res, const uint8_t *p, uint32_t len)
{
	struct snapsync *ss = io->ctx;
	ss->pending--;
	if (ss_gone(ss))
		return;
	bool src = io == &ss->ts;
	if (res == 0 && len != ss->hn * 8)
		res = -EBADMSG;
	for (uint32_t i = 0; res == 0 && i < ss->hn; i++)
		(src ? ss->hs : ss->hd)[i] = proto_get_le64(p + 8 * i);
	if (src)
		ss->res_src = res;
	else
		ss->res_dst = res;
	if (ss->pending)
		return;
	if (ss->res_src == -ENOENT) {
		ss_list(ss);
		return;
	}
	if (ss->res_src < 0 || ss->res_dst < 0) {
		ss_fail(ss, ss->res_src < 0 ? ss->res_src : ss->res_dst, "hash");
		return;
	}
	ss->hi = 0;
	copy_next(ss);
}

static void hash_step(struct snapsync *ss)
{
	struct engine *e = ss->t->e;
	if (ss->pos >= e->size) {
		mutate(ss, PROTO_SNAP_CREATE, ss->cur_name, ss->cur_id);
		return;
	}
	uint64_t left = e->size - ss->pos;
	ss->hlen = (uint64_t)SS_HASH_BATCH * ENGINE_GRAIN;
	if (ss->hlen > left)
		ss->hlen = left;
	ss->hn = (uint32_t)((ss->hlen + ENGINE_GRAIN - 1) / ENGINE_GRAIN);
	tio_prep(&ss->ts, ss->src, PROTO_SNAP_HASH, hash_done, ss);
	ss->ts.payload = ss->cur_id;
	ss->ts.plen = (uint32_t)strlen(ss->cur_id);
	tio_prep(&ss->td, ss->t, PROTO_HASH, hash_done, ss);
	struct tio *ios[2] = {&ss->ts, &ss->td};
	for (int i = 0; i < 2; i++) {
		ios[i]->off = ss->pos;
		ios[i]->len = ss->hlen;
		ios[i]->arg = ENGINE_GRAIN;
	}
	ss->pending = 2;
	tio_submit(&ss->ts);
	tio_submit(&ss->td);
}

static void copy_snapshot(struct snapsync *ss, const struct snent *s)
{
	if (!ss->buf && !(ss->buf = malloc(ENGINE_GRAIN))) {
		ss_fail(ss, -ENOMEM, "copy");
		return;
	}
	snprintf(ss->cur_id, sizeof(ss->cur_id), "%s", s->id);
	snprintf(ss->cur_name, sizeof(ss->cur_name), "%s", s->name);
	ss->pos = 0;
	hash_step(ss);
}

/* ---- the plan ---- */

static void ss_plan(struct snapsync *ss)
{
	struct snlist *ls = ss->ls, *ld = ss->ld;
	struct engine *e = ss->t->e;
	/* Each step deletes, reverts or creates one snapshot: bounded unless something is wrong. */
	if (++ss->steps > SS_MAX_STEPS) {
		ss_fail(ss, -ELOOP, "no progress");
		return;
	}
	for (uint32_t i = 0; i < ld->n; i++) {
		const struct snent *s = find(ls, ld->v[i].id);
		if (!s || strcmp(s->parent_id, ld->v[i].parent_id)) {
			mutate(ss, PROTO_SNAP_DELETE, ld->v[i].name, NULL);
			return;
		}
	}
	for (uint32_t i = 0; i < ls->n; i++) {
		const struct snent *s = &ls->v[i];
		if (find(ld, s->id))
			continue;
		if (strcmp(ld->head_parent, s->parent_id)) {
			revert_to(ss, s->parent_id);
			return;
		}
		copy_snapshot(ss, s);
		return;
	}
	if (strcmp(ld->head_parent, ls->head_parent)) {
		revert_to(ss, ls->head_parent);
		return;
	}
	if (e->snap_gen != ss->gen) {
		ss_list(ss);
		return;
	}
	ss_finish(ss);
}

static struct target *pick_source(struct engine *e, struct target *t)
{
	struct target *best = NULL;
	for (uint32_t i = 0; i < e->ntargets; i++) {
		struct target *s = e->t[i];
		if (s != t && eng_readable(s) && (!best || s->store))
			best = s;
	}
	return best;
}

void snapsync_start(struct target *t)
{
	struct engine *e = t->e;
	snapsync_cancel(t);
	resync_cancel(t);
	t->state = T_STALE;
	struct snapsync *ss = calloc(1, sizeof(*ss));
	if (ss) {
		ss->ls = malloc(sizeof(*ss->ls));
		ss->ld = malloc(sizeof(*ss->ld));
	}
	if (!ss || !ss->ls || !ss->ld) {
		if (ss)
			ss_free(ss);
		eng_eject(t, -ENOMEM, "snapshot catch-up");
		return;
	}
	ss->t = t;
	ss->src = pick_source(e, t);
	t->ss = ss;
	ss_list(ss);
}

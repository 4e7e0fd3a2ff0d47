/*
 * engine_snapread: engine_snap_read (engine.h). Reads a snapshot's view from one in-sync
 * replica by SNAP_READ, which takes the snapshot's identity: the name is resolved by SNAP_LIST
 * on the replica being read (or from the engine's one-entry cache, dropped by any snapshot op).
 *
 * - Targets: readable in-sync ones first, the local one before remote ones; then in-sync ones
 *   not yet trusted for reads. A failed target is not tried again by that read; the bytes
 *   already read stay (every in-sync replica holds the same view).
 * - A snapshot missing from the list is -ENOENT at once (in-sync replicas agree on their
 *   snapshots); a SNAP_READ answering -ENOENT with a cached identity re-lists once (the name
 *   may have been deleted and taken again).
 * - Failures here never eject a replica: guest I/O and the timeout sweep judge replicas.
 */
#include "engine_int.h"

#include <errno.h>
#include <jansson.h>
#include <stdlib.h>
#include <string.h>

struct sread {
	struct engine *e;
	char name[STORE_NAME_MAX];
	char id[STORE_SNAP_ID_MAX];
	uint64_t off;
	uint32_t len; /* bytes to read from the replicas (the rest was zeroed) */
	uint32_t pos; /* of them, read so far */
	uint8_t *buf;
	uint32_t chunk;
	uint32_t tried; /* bit per target index */
	bool have_id, from_cache, relisted;
	int res;
	engine_cb cb;
	void *arg;
	struct tio tio;
};

static void sr_next_target(struct sread *s);

static void sr_end(struct sread *s, int res)
{
	s->cb(s->arg, res);
	free(s);
}

static void sr_end_deferred(void *arg)
{
	struct sread *s = arg;
	sr_end(s, s->res);
}

static void sr_end_later(struct sread *s, int res)
{
	s->res = res;
	if (loop_defer(s->e->l, sr_end_deferred, s) < 0)
		sr_end(s, res);
}

static struct target *sr_pick(struct sread *s)
{
	struct engine *e = s->e;
	struct target *best = NULL;
	for (int pass = 0; pass < 2 && !best; pass++) {
		for (uint32_t i = 0; i < e->ntargets; i++) {
			struct target *t = e->t[i];
			if ((s->tried & (1u << i)) || t->state != T_INSYNC)
				continue;
			if (pass == 0 && !eng_readable(t))
				continue;
			if (t->store)
				return t;
			if (!best)
				best = t;
		}
	}
	return best;
}

/* The identity of name in a SNAP_LIST reply: 0, -ENOENT, -EBADMSG. */
static int find_id(const uint8_t *p, uint32_t len, const char *name, char id[STORE_SNAP_ID_MAX])
{
	json_error_t jerr;
	json_t *j = json_loadb((const char *)p, len, 0, &jerr), *v;
	if (!json_is_array(j)) {
		json_decref(j);
		return -EBADMSG;
	}
	int r = -ENOENT;
	size_t i;
	json_array_foreach(j, i, v)
	{
		const char *n = json_string_value(json_object_get(v, "name"));
		const char *sid = json_string_value(json_object_get(v, "id"));
		if (!n || !sid || strcmp(n, name) || json_is_true(json_object_get(v, "deleting")))
			continue;
		if (strlen(sid) >= STORE_SNAP_ID_MAX) {
			r = -EBADMSG;
			break;
		}
		strcpy(id, sid);
		r = 0;
		break;
	}
	json_decref(j);
	return r;
}

/* A target failed: another one, or the end. */
static void sr_failover(struct sread *s, int res)
{
	struct engine *e = s->e;
	if (res == -ESTALE) {
		eng_fence(e);
		sr_end(s, -ESTALE);
		return;
	}
	s->tried |= 1u << eng_tindex(e, s->tio.t);
	s->res = res;
	sr_next_target(s);
}

static void sr_read_chunk(struct sread *s, struct target *t);

static void sr_list(struct sread *s, struct target *t);

static void read_done(struct tio *io, int res, const uint8_t *p, uint32_t len)
{
	struct sread *s = io->ctx;
	struct engine *e = s->e;
	if (e->dying) {
		sr_end(s, -EIO);
		return;
	}
	if (res == 0 && len != s->chunk)
		res = -EBADMSG;
	if (res == -ENOENT) {
		if (s->from_cache && !s->relisted) {
			s->relisted = true;
			s->have_id = false;
			e->sr_cached = false;
			sr_list(s, io->t);
			return;
		}
		sr_end(s, -ENOENT);
		return;
	}
	if (res < 0) {
		sr_failover(s, res);
		return;
	}
	memcpy(s->buf + s->pos, p, len);
	s->pos += len;
	if (s->pos == s->len) {
		sr_end(s, 0);
		return;
	}
	sr_read_chunk(s, io->t);
}

static void sr_read_chunk(struct sread *s, struct target *t)
{
	uint32_t left = s->len - s->pos;
	s->chunk = left < PROTO_MAX_IO ? left : PROTO_MAX_IO;
	tio_prep(&s->tio, t, PROTO_SNAP_READ, read_done, s);
	s->tio.off = s->off + s->pos;
	s->tio.len = s->chunk;
	s->tio.payload = s->id;
	s->tio.plen = (uint32_t)strlen(s->id);
	tio_submit(&s->tio);
}

static void list_done(struct tio *io, int res, const uint8_t *p, uint32_t len)
{
	struct sread *s = io->ctx;
	struct engine *e = s->e;
	if (e->dying) {
		sr_end(s, -EIO);
		return;
	}
	if (res == 0)
		res = find_id(p, len, s->name, s->id);
	if (res == -ENOENT) {
		sr_end(s, -ENOENT);
		return;
	}
	if (res < 0) {
		sr_failover(s, res);
		return;
	}
	s->have_id = true;
	s->from_cache = false;
	/* Only while no snapshot op runs: one that is running bumps snap_gen again at its end
	 * anyway, but this keeps the cache simple to reason about. */
	if (!e->running) {
		e->sr_cached = true;
		e->sr_gen = e->snap_gen;
		strcpy(e->sr_name, s->name);
		strcpy(e->sr_id, s->id);
	}
	if (s->pos == s->len) {
		sr_end(s, 0);
		return;
	}
	sr_read_chunk(s, io->t);
}

static void sr_list(struct sread *s, struct target *t)
{
	tio_prep(&s->tio, t, PROTO_SNAP_LIST, list_done, s);
	tio_submit(&s->tio);
}

static void sr_next_target(struct sread *s)
{
	struct engine *e = s->e;
	if (e->fenced) {
		sr_end(s, -ESTALE);
		return;
	}
	struct target *t = e->open && !e->closing ? sr_pick(s) : NULL;
	if (!t) {
		sr_end(s, s->res ? s->res : -EIO);
		return;
	}
	if (s->have_id)
		sr_read_chunk(s, t);
	else
		sr_list(s, t);
}

int engine_snap_read(struct engine *e, const char *snap, uint64_t off, uint32_t len, void *buf,
		     engine_cb cb, void *arg)
{
	if (!e || !snap || !cb || (!buf && len) || strlen(snap) >= STORE_NAME_MAX ||
	    !store_name_valid(snap))
		return -EINVAL;
	if (e->fenced)
		return -ESTALE;
	if (!e->open || e->closing || e->dying)
		return -EIO;
	if (len > UINT64_MAX - off)
		return -EINVAL;
	struct sread *s = calloc(1, sizeof(*s));
	if (!s)
		return -ENOMEM;
	s->e = e;
	strcpy(s->name, snap);
	s->off = off;
	s->buf = buf;
	s->cb = cb;
	s->arg = arg;
	uint64_t in = off >= e->size ? 0 : e->size - off;
	s->len = in < len ? (uint32_t)in : len;
	if (s->len < len)
		memset(s->buf + s->len, 0, len - s->len);
	if (e->sr_cached && e->sr_gen == e->snap_gen && !strcmp(e->sr_name, snap)) {
		strcpy(s->id, e->sr_id);
		s->have_id = true;
		s->from_cache = true;
	}
	if (s->len == 0 && s->have_id) {
		sr_end_later(s, 0);
		return 0;
	}
	struct target *t = sr_pick(s);
	if (!t) {
		free(s);
		return -EIO;
	}
	/* Even a read entirely past the end lists once: a missing snapshot is -ENOENT. */
	if (s->have_id)
		sr_read_chunk(s, t);
	else
		sr_list(s, t);
	return 0;
}

/*
 * engine_snapverify: engine_verify (see engine.h) = verify's head scan (engine_resync.c), then
 * a comparison of every snapshot's view (SNAP_HASH per extent) across the in-sync reachable
 * replicas; and eng_snap_verify, the second half, which engine_repair also runs. Snapshot
 * views are only compared, never repaired.
 *
 * A snapshot's view never changes (deleting another snapshot merges layers but keeps every
 * remaining view), so no guest write or copy has to wait: the views are hashed while I/O goes
 * on, a few extents per request (a local hash runs on our loop). Snapshots being deleted are
 * skipped; a replica that cannot hash a snapshot (e.g. lacks it) is listed in
 * "snapshots_unchecked" rather than as a difference.
 */
#include "engine_int.h"

#include <errno.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define SV_BATCH 8 /* extents per SNAP_HASH: keeps a local hash short */

struct snapverify {
	struct engine *e;
	json_t *out;
	engine_cb cb;
	void *arg;
	json_t *snaps; /* [[name, id], ...] */
	size_t idx;
	uint64_t pos, len;
	uint32_t n;
	uint32_t nts;
	struct target *ts[ENGINE_MAX_REPLICAS];
	bool got[ENGINE_MAX_REPLICAS];
	bool skip[ENGINE_MAX_REPLICAS]; /* failed earlier on this snapshot */
	uint64_t h[ENGINE_MAX_REPLICAS][SV_BATCH];
	int pending;
	int res;
	json_t *differ, *unchecked;
	struct tio tio[ENGINE_MAX_REPLICAS];
};

static void sv_next(struct snapverify *sv);

static void sv_end(struct snapverify *sv)
{
	if (sv->res == 0 &&
	    (json_object_set_new(sv->out, "snapshots_checked",
				 json_integer((json_int_t)json_array_size(sv->snaps))) ||
	     json_object_set(sv->out, "snapshots_differ", sv->differ) ||
	     json_object_set(sv->out, "snapshots_unchecked", sv->unchecked)))
		sv->res = -ENOMEM;
	json_decref(sv->snaps);
	json_decref(sv->differ);
	json_decref(sv->unchecked);
	engine_cb cb = sv->cb;
	void *arg = sv->arg;
	int res = sv->res;
	free(sv);
	cb(arg, res);
}

static bool sv_gone(struct snapverify *sv)
{
	struct engine *e = sv->e;
	if (!e->dying && !e->closing && !e->fenced)
		return false;
	sv->res = e->fenced ? -ESTALE : -ECANCELED;
	return true;
}

static const char *snap_field(struct snapverify *sv, size_t i)
{
	return json_string_value(json_array_get(json_array_get(sv->snaps, sv->idx), i));
}

static void hash_done(struct tio *io, int res, const uint8_t *p, uint32_t len)
{
	struct snapverify *sv = io->ctx;
	uint32_t k = (uint32_t)(io - sv->tio);
	if (res == 0 && len == sv->n * 8) {
		sv->got[k] = true;
		for (uint32_t i = 0; i < sv->n; i++)
			sv->h[k][i] = proto_get_le64(p + i * 8);
	} else if (res == -ESTALE) {
		sv->res = res;
	} else {
		sv->skip[k] = true;
		json_array_append_new(sv->unchecked,
				      json_pack("{s:s,s:s,s:s}", "snapshot", snap_field(sv, 0),
						"node", sv->ts[k]->node, "error",
						strerror(res < 0 ? -res : EBADMSG)));
	}
	if (--sv->pending)
		return;
	if (sv->res || sv_gone(sv)) {
		sv_end(sv);
		return;
	}
	for (uint32_t i = 0; i < sv->n; i++) {
		bool have = false, diff = false;
		uint64_t first = 0;
		for (uint32_t a = 0; a < sv->nts; a++) {
			if (!sv->got[a])
				continue;
			if (have && sv->h[a][i] != first)
				diff = true;
			first = have ? first : sv->h[a][i];
			have = true;
		}
		if (!diff)
			continue;
		json_t *hs = json_object();
		for (uint32_t a = 0; a < sv->nts; a++) {
			if (!sv->got[a])
				continue;
			char hex[17];
			snprintf(hex, sizeof(hex), "%016llx", (unsigned long long)sv->h[a][i]);
			json_object_set_new(hs, sv->ts[a]->node, json_string(hex));
		}
		uint64_t off = sv->pos + (uint64_t)i * ENGINE_GRAIN;
		uint64_t l =
		    sv->pos + sv->len - off < ENGINE_GRAIN ? sv->pos + sv->len - off : ENGINE_GRAIN;
		json_array_append_new(sv->differ,
				      json_pack("{s:s,s:I,s:I,s:o}", "snapshot", snap_field(sv, 0),
						"offset", (json_int_t)off, "length", (json_int_t)l,
						"hashes", hs));
	}
	sv->pos += sv->len;
	sv_next(sv);
}

/* Hashes the next batch of the current snapshot, or moves to the next snapshot. */
static void sv_next(struct snapverify *sv)
{
	struct engine *e = sv->e;
	if (sv_gone(sv)) {
		sv_end(sv);
		return;
	}
	uint32_t live = 0;
	for (uint32_t a = 0; a < sv->nts; a++)
		live += !sv->skip[a];
	if (sv->pos >= e->size || live < 2) {
		sv->idx++;
		sv->pos = 0;
		memset(sv->skip, 0, sizeof(sv->skip));
	}
	if (sv->idx >= json_array_size(sv->snaps)) {
		sv_end(sv);
		return;
	}
	const char *id = snap_field(sv, 1);
	uint64_t left = e->size - sv->pos;
	sv->len = (uint64_t)SV_BATCH * ENGINE_GRAIN;
	if (sv->len > left)
		sv->len = left;
	sv->n = (uint32_t)((sv->len + ENGINE_GRAIN - 1) / ENGINE_GRAIN);
	memset(sv->got, 0, sizeof(sv->got));
	sv->pending = 1; /* completions may not run before every submission */
	for (uint32_t a = 0; a < sv->nts; a++) {
		if (sv->skip[a])
			continue;
		struct tio *io = &sv->tio[a];
		tio_prep(io, sv->ts[a], PROTO_SNAP_HASH, hash_done, sv);
		io->off = sv->pos;
		io->len = sv->len;
		io->arg = ENGINE_GRAIN;
		io->payload = id;
		io->plen = (uint32_t)strlen(id);
		sv->pending++;
		tio_submit(io);
	}
	if (--sv->pending == 0)
		sv_next(sv); /* cannot happen: live >= 2 */
}

static void list_done(struct tio *io, int res, const uint8_t *p, uint32_t len)
{
	struct snapverify *sv = io->ctx;
	if (res == 0) {
		json_t *j = json_loadb((const char *)p, len, 0, NULL), *v;
		size_t i;
		res = json_is_array(j) ? 0 : -EBADMSG;
		json_array_foreach(j, i, v)
		{
			const char *name = json_string_value(json_object_get(v, "name"));
			const char *id = json_string_value(json_object_get(v, "id"));
			if (!name || !id || json_is_true(json_object_get(v, "deleting")))
				continue;
			json_array_append_new(sv->snaps, json_pack("[s,s]", name, id));
		}
		json_decref(j);
	}
	if (res < 0 || sv_gone(sv)) {
		if (res < 0 && !sv->res)
			sv->res = res;
		sv_end(sv);
		return;
	}
	sv->idx = 0;
	sv->pos = 0;
	if (!json_array_size(sv->snaps)) {
		sv_end(sv);
		return;
	}
	sv->pos = 0;
	sv->idx = 0;
	sv_next(sv);
}

static void sv_start(struct snapverify *sv)
{
	struct engine *e = sv->e;
	if (sv_gone(sv)) {
		sv_end(sv);
		return;
	}
	struct target *src = NULL;
	for (uint32_t i = 0; i < e->ntargets; i++) {
		struct target *t = e->t[i];
		if (t->state != T_INSYNC || !eng_takes_writes(t))
			continue;
		sv->ts[sv->nts++] = t;
		if (!src || t->store)
			src = t;
	}
	if (sv->nts < 2) {
		sv_end(sv); /* nothing to compare */
		return;
	}
	tio_prep(&sv->tio[0], src, PROTO_SNAP_LIST, list_done, sv);
	tio_submit(&sv->tio[0]);
}

int eng_snap_verify(struct engine *e, json_t *out, engine_cb cb, void *arg)
{
	struct snapverify *sv = calloc(1, sizeof(*sv));
	if (!sv)
		return -ENOMEM;
	sv->e = e;
	sv->out = out;
	sv->cb = cb;
	sv->arg = arg;
	sv->snaps = json_array();
	sv->differ = json_array();
	sv->unchecked = json_array();
	if (!sv->snaps || !sv->differ || !sv->unchecked) {
		json_decref(sv->snaps);
		json_decref(sv->differ);
		json_decref(sv->unchecked);
		free(sv);
		return -ENOMEM;
	}
	/* Not deferred: nothing of ours would keep the engine alive until it ran. */
	sv_start(sv);
	return 0;
}

/* ---- engine_verify: the head, then the snapshots ---- */

struct vctx {
	struct engine *e;
	char **json;
	engine_cb cb;
	void *arg;
	char *head;
	json_t *j;
};

static void vctx_end(struct vctx *v, int res)
{
	if (res == 0 && !(*v->json = json_dumps(v->j, JSON_COMPACT)))
		res = -ENOMEM;
	json_decref(v->j);
	free(v->head);
	engine_cb cb = v->cb;
	void *arg = v->arg;
	free(v);
	cb(arg, res);
}

static void snaps_done(void *arg, int res)
{
	vctx_end(arg, res);
}

static void head_done(void *arg, int res)
{
	struct vctx *v = arg;
	if (res == 0 && !(v->j = json_loads(v->head, 0, NULL)))
		res = -ENOMEM;
	if (res == 0 && v->e->dying)
		res = -ECANCELED;
	if (res == 0)
		res = eng_snap_verify(v->e, v->j, snaps_done, v);
	if (res < 0)
		vctx_end(v, res);
}

int engine_verify(struct engine *e, char **json, engine_cb cb, void *arg)
{
	struct vctx *v = calloc(1, sizeof(*v));
	if (!v)
		return -ENOMEM;
	v->e = e;
	v->json = json;
	v->cb = cb;
	v->arg = arg;
	int r = eng_verify_scan(e, &v->head, NULL, NULL, head_done, v);
	if (r < 0)
		free(v);
	return r;
}

/*
 * engine_repair: engine_repair (see engine.h). Verify's scan (engine_resync.c) finds the
 * extents whose hashes differ; then, one extent at a time:
 *
 *   lock the extent (guest writes to it wait, as for a resync copy: eng_grain_locked), wait
 *   for the writes to it in flight, hash it again on every in-sync reachable replica (the scan's
 *   answer may be stale: a snapshot op or a write may have run since), and if a strict
 *   majority of those that answered agree on one hash, read it from one of them, write it to
 *   every other, flush those, hash again to confirm, unlock.
 *
 * Without a majority nothing is written: the extent is reported unrepairable. The whole repair
 * counts as a copy in flight (e->copies), so a quiesce (snapshot op, close) waits for it.
 * Snapshot views are then compared like verify does (engine_snapverify.c) but never repaired.
 */
#include "engine_int.h"

#include <errno.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct repair {
	struct engine *e;
	char **json;
	engine_cb cb;
	void *arg;
	char *vjson; /* verify's result */
	json_t *out;
	uint64_t *items;
	size_t n, cap, cur;
	json_t *repaired, *unrepairable;
	int res;
	bool counted; /* holds e->copies */
	/* the extent being repaired */
	bool locked;
	uint64_t off, len;
	int step; /* 0: first hash, 1: read, 2: write, 3: flush, 4: confirming hash */
	int pending;
	uint32_t nts;
	struct target *ts[ENGINE_MAX_REPLICAS];
	bool got[ENGINE_MAX_REPLICAS];
	bool dst[ENGINE_MAX_REPLICAS];
	uint64_t h[ENGINE_MAX_REPLICAS];
	uint32_t src;
	int ioerr;
	uint8_t *buf;
	struct tio rd;
	struct tio tio[ENGINE_MAX_REPLICAS];
};

bool repair_range_busy(struct engine *e, uint64_t off, uint64_t len)
{
	struct repair *r = e->repair;
	return r && r->locked && off < r->off + r->len && r->off < off + len;
}

static void item_next(struct repair *r);

static void repair_free(struct repair *r)
{
	if (r->res == 0 && !(*r->json = json_dumps(r->out, JSON_COMPACT)))
		r->res = -ENOMEM;
	json_decref(r->out);
	json_decref(r->repaired);
	json_decref(r->unrepairable);
	free(r->vjson);
	free(r->items);
	free(r->buf);
	engine_cb cb = r->cb;
	void *arg = r->arg;
	int res = r->res;
	free(r);
	cb(arg, res);
}

static void snaps_done(void *arg, int res)
{
	struct repair *r = arg;
	r->res = res;
	repair_free(r);
}

/* The head is done: release the engine, then compare the snapshot views. */
static void repair_end(struct repair *r)
{
	struct engine *e = r->e;
	if (r->counted) {
		r->counted = false;
		e->copies--;
	}
	e->repair = NULL;
	if (!e->dying)
		eng_kick(e); /* a quiesce may have waited for us */
	if (r->res == 0) {
		r->out = json_loads(r->vjson, 0, NULL);
		if (!r->out || json_object_set(r->out, "repaired", r->repaired) ||
		    json_object_set(r->out, "unrepairable", r->unrepairable))
			r->res = -ENOMEM;
	}
	if (r->res == 0 && e->dying)
		r->res = -ECANCELED;
	if (r->res == 0) {
		int res = eng_snap_verify(e, r->out, snaps_done, r); /* r may be gone */
		if (res < 0) {
			r->res = res;
			repair_free(r);
		}
		return;
	}
	repair_free(r);
}

static void handle_err(struct engine *e, struct target *t, int res, const char *why)
{
	if (res == -ESTALE)
		eng_fence(e);
	else
		eng_eject(t, res, why);
}

/* Verify's chunk hook: remember every extent whose hashes differ. */
static void on_chunk(void *arg, uint64_t pos, uint32_t n, uint32_t nts, struct target *const *ts,
		     const bool *got, uint64_t *const *h)
{
	(void)ts;
	struct repair *r = arg;
	for (uint32_t i = 0; i < n; i++) {
		bool have = false, diff = false;
		uint64_t first = 0;
		for (uint32_t k = 0; k < nts; k++) {
			if (!got[k])
				continue;
			if (!have) {
				first = h[k][i];
				have = true;
			} else if (h[k][i] != first) {
				diff = true;
			}
		}
		if (!diff)
			continue;
		if (r->n == r->cap) {
			size_t cap = r->cap ? r->cap * 2 : 16;
			uint64_t *p = realloc(r->items, cap * sizeof(*p));
			if (!p) {
				r->res = -ENOMEM;
				return;
			}
			r->items = p;
			r->cap = cap;
		}
		r->items[r->n++] = pos + (uint64_t)i * ENGINE_GRAIN;
	}
}

static json_t *hashes_json(struct repair *r)
{
	json_t *hs = json_object();
	for (uint32_t k = 0; k < r->nts; k++) {
		if (!r->got[k])
			continue;
		char hex[17];
		snprintf(hex, sizeof(hex), "%016llx", (unsigned long long)r->h[k]);
		json_object_set_new(hs, r->ts[k]->node, json_string(hex));
	}
	return hs;
}

static void unrepairable(struct repair *r, const char *why)
{
	json_array_append_new(r->unrepairable,
			      json_pack("{s:I,s:I,s:o,s:s}", "offset", (json_int_t)r->off, "length",
					(json_int_t)r->len, "hashes", hashes_json(r), "reason",
					why));
}

static void unlock_next(struct repair *r)
{
	r->locked = false;
	r->cur++;
	if (!r->e->dying)
		eng_kick(r->e); /* releases guest writes held on the extent */
	item_next(r);
}

static void hash_all(struct repair *r);

static void step_done(struct tio *io, int res, const uint8_t *p, uint32_t len)
{
	struct repair *r = io->ctx;
	struct engine *e = r->e;
	if (r->step == 0 || r->step == 4) {
		uint32_t k = (uint32_t)(io - r->tio);
		if (res == 0 && len == 8) {
			r->h[k] = proto_get_le64(p);
			r->got[k] = true;
		} else if (res == -ESTALE) {
			r->ioerr = res;
		}
	} else if (res < 0) {
		if (!e->dying)
			handle_err(e, io == &r->rd ? r->ts[r->src] : io->t, res,
				   r->step == 1 ? "repair read failed" : "repair write failed");
		if (!r->ioerr)
			r->ioerr = res;
	}
	if (--r->pending)
		return;
	if (e->dying || e->closing || e->fenced || r->ioerr == -ESTALE) {
		r->res = e->fenced || r->ioerr == -ESTALE ? -ESTALE : -ECANCELED;
		r->locked = false;
		repair_end(r);
		return;
	}
	if (r->ioerr) {
		unrepairable(r, r->step == 1 ? "read from the source failed"
					     : "write to a replica failed (it was ejected)");
		unlock_next(r);
		return;
	}
	if (r->step == 0) {
		/* A strict majority of the replicas that answered must agree. */
		uint32_t ngot = 0, best = 0;
		for (uint32_t a = 0; a < r->nts; a++) {
			if (!r->got[a])
				continue;
			ngot++;
			uint32_t c = 0;
			for (uint32_t b = 0; b < r->nts; b++)
				c += r->got[b] && r->h[b] == r->h[a];
			if (c > best || (c == best && r->ts[a]->store)) {
				best = c; /* the local replica is the cheapest source */
				r->src = a;
			}
		}
		if (best == ngot) {
			unlock_next(r); /* equal now: a write or snapshot op since the scan */
			return;
		}
		if (best * 2 <= ngot) {
			unrepairable(r, "no majority");
			unlock_next(r);
			return;
		}
		for (uint32_t a = 0; a < r->nts; a++)
			r->dst[a] = r->got[a] && r->h[a] != r->h[r->src];
		r->step = 1;
		r->pending = 1;
		tio_prep(&r->rd, r->ts[r->src], PROTO_READ, step_done, r);
		r->rd.off = r->off;
		r->rd.len = r->len;
		r->rd.rbuf = r->buf;
		r->rd.rbuf_len = (uint32_t)r->len;
		tio_submit(&r->rd);
	} else if (r->step == 1 || r->step == 2) {
		uint16_t op = r->step == 1 ? PROTO_WRITE : PROTO_FLUSH;
		if (r->step == 1)
			eng_mark_written(e, r->off, r->len);
		r->step++;
		r->pending = 1; /* submissions may complete before the loop ends */
		for (uint32_t a = 0; a < r->nts; a++) {
			if (!r->dst[a])
				continue;
			tio_prep(&r->tio[a], r->ts[a], op, step_done, r);
			if (op == PROTO_WRITE) {
				r->tio[a].off = r->off;
				r->tio[a].len = r->len;
				r->tio[a].payload = r->buf;
				r->tio[a].plen = (uint32_t)r->len;
			}
			r->pending++;
			tio_submit(&r->tio[a]);
		}
		struct tio dummy = {.ctx = r};
		step_done(&dummy, 0, NULL, 0);
	} else if (r->step == 3) {
		r->step = 4;
		hash_all(r);
	} else {
		bool same = true;
		for (uint32_t a = 0; a < r->nts; a++)
			same = same && r->got[a] && r->h[a] == r->h[r->src];
		if (!same) {
			unrepairable(r, "still differs after the copy");
		} else {
			json_t *to = json_array();
			for (uint32_t a = 0; a < r->nts; a++)
				if (r->dst[a])
					json_array_append_new(to, json_string(r->ts[a]->node));
			json_array_append_new(
			    r->repaired,
			    json_pack("{s:I,s:I,s:s,s:o}", "offset", (json_int_t)r->off, "length",
				      (json_int_t)r->len, "from", r->ts[r->src]->node, "to", to));
		}
		unlock_next(r);
	}
}

/* Hashes the locked extent on the replicas chosen by hash_start. */
static void hash_all(struct repair *r)
{
	memset(r->got, 0, sizeof(r->got));
	r->pending = (int)r->nts;
	for (uint32_t k = 0; k < r->nts; k++) {
		tio_prep(&r->tio[k], r->ts[k], PROTO_HASH, step_done, r);
		r->tio[k].off = r->off;
		r->tio[k].len = r->len;
		r->tio[k].arg = ENGINE_GRAIN;
		tio_submit(&r->tio[k]);
	}
}

/* The extent is locked: once the guest writes to it in flight are done, hash it. */
static void hash_start(void *arg)
{
	struct repair *r = arg;
	struct engine *e = r->e;
	if (e->dying || e->closing || e->fenced) {
		r->res = e->fenced ? -ESTALE : -ECANCELED;
		r->locked = false;
		repair_end(r);
		return;
	}
	if (eng_write_overlaps(e, r->off, r->len)) {
		if (loop_timer_add(e->l, 1, hash_start, r, NULL) < 0) {
			r->res = -ENOMEM;
			r->locked = false;
			repair_end(r);
		}
		return;
	}
	r->nts = 0;
	for (uint32_t i = 0; i < e->ntargets; i++)
		if (e->t[i]->state == T_INSYNC && eng_takes_writes(e->t[i]))
			r->ts[r->nts++] = e->t[i];
	r->step = 0;
	r->ioerr = 0;
	memset(r->dst, 0, sizeof(r->dst));
	if (r->nts < 2) {
		unlock_next(r); /* nothing to compare with any more */
		return;
	}
	hash_all(r);
}

static void item_next(struct repair *r)
{
	struct engine *e = r->e;
	if (r->cur >= r->n || r->res) {
		repair_end(r);
		return;
	}
	if (e->dying || e->closing || e->fenced) {
		r->res = e->fenced ? -ESTALE : -ECANCELED;
		repair_end(r);
		return;
	}
	r->off = r->items[r->cur];
	r->len = e->size - r->off < ENGINE_GRAIN ? e->size - r->off : ENGINE_GRAIN;
	r->locked = true;
	hash_start(r);
}

static void scanned(void *arg, int res)
{
	struct repair *r = arg;
	struct engine *e = r->e;
	if (res == 0 && r->res)
		res = r->res;
	r->res = res;
	if (res < 0 || e->dying) {
		if (res == 0)
			r->res = -ECANCELED;
		repair_end(r);
		return;
	}
	if (!r->counted) {
		r->counted = true;
		e->copies++;
	}
	item_next(r);
}

int engine_repair(struct engine *e, char **json, engine_cb cb, void *arg)
{
	if (!e->open || e->closing)
		return -EIO;
	if (e->verify || e->repair)
		return -EBUSY;
	struct repair *r = calloc(1, sizeof(*r));
	if (!r)
		return -ENOMEM;
	r->e = e;
	r->json = json;
	r->cb = cb;
	r->arg = arg;
	r->repaired = json_array();
	r->unrepairable = json_array();
	r->buf = malloc(ENGINE_GRAIN);
	int res = -ENOMEM;
	if (r->repaired && r->unrepairable && r->buf)
		res = eng_verify_scan(e, &r->vjson, on_chunk, r, scanned, r);
	if (res < 0) {
		json_decref(r->repaired);
		json_decref(r->unrepairable);
		free(r->buf);
		free(r);
		return res;
	}
	e->repair = r;
	return 0;
}

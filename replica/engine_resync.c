/*
 * engine_resync: bringing a replica back (resync by dirty bitmap, rebuild by per-extent
 * XXH3 compare), persisting dirty bitmaps, and engine_verify.
 *
 * A resync copies dirty grains from an in-sync replica to the target while guest I/O goes on
 * (the target receives every write meanwhile). A grain being copied is locked: guest writes
 * to it wait (engine_io.c), and a copy never starts on a grain with a guest write in flight,
 * so a copy can never put old data over a newer write. A grain's bit is cleared only after
 * its copy is written. Rebuild hashes ranges on both sides first (no lock needed: the target
 * receives every write, so a difference seen at any moment is a grain to copy) and feeds
 * differing grains into the same copy machinery.
 *
 * A bitmap resync checkpoints every ENGINE_CKPT_BYTES copied (and every ENGINE_CKPT_MS while
 * copying): new copies wait, the target is flushed (the cleared bits' copies are durable),
 * then the bitmaps are persisted on the in-sync replicas, so the next engine resumes there.
 */
#include "engine_int.h"

#include <errno.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Checkpoints of a bitmap resync: after this much copied, or this long while copying. */
#define ENGINE_CKPT_BYTES (64ull << 20)
#define ENGINE_CKPT_MS 2000

struct copy {
	struct resync *rs;
	bool busy;
	bool waiting; /* reserved, waiting for guest writes to the grain to finish */
	uint64_t grain;
	uint32_t len;
	uint8_t *buf;
	struct target *src;
	struct tio rd, wr;
};

struct resync {
	struct target *t;
	bool cancelled;
	bool hash_mode;
	uint64_t hash_pos;
	bool hash_busy;
	int hash_pending, hash_res_src, hash_res_dst;
	uint32_t hash_n;
	uint64_t hash_len;
	uint64_t *hsrc, *hdst;
	struct target *hash_from;
	struct tio ht_src, ht_dst;
	uint64_t cursor;
	int ncopies;
	bool finishing;
	struct tio fl;
	/* checkpoint: no copy in flight, flush the target, persist the bitmaps */
	uint64_t ckpt_bytes; /* copied since the last checkpoint */
	uint64_t ckpt_at;    /* when it ended (ms) */
	bool ckpt_want, ckpt_busy;
	struct tio ckpt_fl;
	struct copy c[ENGINE_RESYNC_PAR];
};

static void rs_free_if_idle(struct resync *rs)
{
	if (!rs->cancelled || rs->ncopies || rs->hash_busy || rs->finishing || rs->ckpt_busy)
		return;
	for (int i = 0; i < ENGINE_RESYNC_PAR; i++)
		free(rs->c[i].buf);
	free(rs->hsrc);
	free(rs->hdst);
	free(rs);
}

/* A reserved grain with no I/O yet just goes back to the bitmap. */
static void slot_unreserve(struct copy *c, struct engine *e)
{
	c->busy = false;
	c->waiting = false;
	c->rs->ncopies--;
	e->copies--;
}

void resync_cancel(struct target *t)
{
	struct resync *rs = t->rs;
	if (!rs)
		return;
	t->rs = NULL;
	rs->cancelled = true;
	for (int i = 0; i < ENGINE_RESYNC_PAR; i++)
		if (rs->c[i].busy && rs->c[i].waiting)
			slot_unreserve(&rs->c[i], t->e);
	rs_free_if_idle(rs);
}

bool resync_range_busy(struct target *t, uint64_t off, uint64_t len)
{
	struct resync *rs = t->rs;
	for (int i = 0; rs && i < ENGINE_RESYNC_PAR; i++) {
		uint64_t g = rs->c[i].grain * ENGINE_GRAIN;
		if (rs->c[i].busy && off < g + ENGINE_GRAIN && g < off + len)
			return true;
	}
	return false;
}

void resync_start(struct target *t)
{
	struct engine *e = t->e;
	resync_cancel(t);
	struct resync *rs = calloc(1, sizeof(*rs));
	if (!rs)
		return; /* retried: the target stays rebuilding and the tick pumps */
	rs->t = t;
	rs->hash_mode = t->need_full;
	rs->ckpt_at = loop_now_ms();
	t->rs = rs;
	t->resync_full = rs->hash_mode;
	t->resync_copied = 0;
	t->resync_done = 0;
	t->resync_total = rs->hash_mode ? e->size : bitmap_count(&t->dirty) * ENGINE_GRAIN;
	if (t->resync_total > e->size)
		t->resync_total = e->size;
	resync_pump(t);
}

static struct target *pick_source(struct engine *e, struct target * not )
{
	struct target *best = NULL;
	for (uint32_t i = 0; i < e->ntargets; i++) {
		struct target *s = e->t[i];
		if (s == not || !eng_readable(s))
			continue;
		if (!best || s->store)
			best = s;
	}
	return best;
}

static void handle_err(struct engine *e, struct target *t, int res, const char *why)
{
	if (res == -ESTALE)
		eng_fence(e);
	else
		eng_eject(t, res, why);
}

static void copy_release(struct copy *c)
{
	struct resync *rs = c->rs;
	struct engine *e = c->src->e;
	c->busy = false;
	rs->ncopies--;
	e->copies--;
	if (rs->cancelled) {
		rs_free_if_idle(rs);
		if (!e->dying)
			eng_kick(e);
		return;
	}
	if (!e->dying)
		eng_kick(e); /* releases writes held on this grain, pumps the next copy */
}

static void copy_wr_done(struct tio *io, int res, const uint8_t *p, uint32_t len)
{
	(void)p;
	(void)len;
	struct copy *c = io->ctx;
	struct resync *rs = c->rs;
	struct engine *e = c->src->e;
	if (!e->dying && !rs->cancelled) {
		struct target *t = rs->t;
		if (res == 0) {
			bitmap_clear_range(&t->dirty, c->grain, 1);
			t->dirty_changed = true;
			t->resync_copied += c->len;
			if (!rs->hash_mode) {
				t->resync_done += c->len;
				rs->ckpt_bytes += c->len;
			}
			/* not durable on t until the next flush */
			eng_mark_written(e, c->grain * ENGINE_GRAIN, c->len);
		} else {
			handle_err(e, t, res, "resync write failed");
		}
	}
	copy_release(c);
}

static void copy_rd_done(struct tio *io, int res, const uint8_t *p, uint32_t len)
{
	(void)p;
	(void)len;
	struct copy *c = io->ctx;
	struct resync *rs = c->rs;
	struct engine *e = c->src->e;
	if (e->dying || rs->cancelled || res < 0) {
		if (res < 0 && !e->dying)
			handle_err(e, c->src, res, "resync read failed");
		copy_release(c);
		return;
	}
	tio_prep(&c->wr, rs->t, PROTO_WRITE, copy_wr_done, c);
	c->wr.off = c->grain * ENGINE_GRAIN;
	c->wr.len = c->len;
	c->wr.payload = c->buf;
	c->wr.plen = c->len;
	tio_submit(&c->wr);
}

static bool grain_copying(struct resync *rs, uint64_t g)
{
	for (int i = 0; i < ENGINE_RESYNC_PAR; i++)
		if (rs->c[i].busy && rs->c[i].grain == g)
			return true;
	return false;
}

/* Reads a reserved grain once no guest write to it is in flight (none can start: the grain is
 * locked from its reservation on). */
static void copy_try_start(struct copy *c, struct target *src)
{
	struct engine *e = c->rs->t->e;
	uint64_t off = c->grain * ENGINE_GRAIN;
	if (!c->waiting || eng_write_overlaps(e, off, c->len))
		return;
	c->waiting = false;
	c->src = src;
	tio_prep(&c->rd, src, PROTO_READ, copy_rd_done, c);
	c->rd.off = off;
	c->rd.len = c->len;
	c->rd.rbuf = c->buf;
	c->rd.rbuf_len = c->len;
	tio_submit(&c->rd);
}

/* Reserves the next dirty grain; false when none can be reserved now. */
static bool copy_next(struct resync *rs, struct target *src)
{
	struct target *t = rs->t;
	struct engine *e = t->e;
	struct copy *c = NULL;
	for (int i = 0; i < ENGINE_RESYNC_PAR && !c; i++)
		if (!rs->c[i].busy)
			c = &rs->c[i];
	if (!c)
		return false;
	uint64_t ngrains = (e->size + ENGINE_GRAIN - 1) / ENGINE_GRAIN;
	for (int tries = 0; tries < ENGINE_RESYNC_PAR + 1; tries++) {
		int64_t g = bitmap_next_set(&t->dirty, rs->cursor);
		if (g < 0 && rs->cursor) {
			rs->cursor = 0;
			g = bitmap_next_set(&t->dirty, 0);
		}
		if (g < 0)
			return false;
		rs->cursor = (uint64_t)g + 1;
		if ((uint64_t)g >= ngrains) {
			bitmap_clear_range(&t->dirty, (uint64_t)g, 1);
			continue;
		}
		if (grain_copying(rs, (uint64_t)g))
			continue;
		uint64_t off = (uint64_t)g * ENGINE_GRAIN;
		if (!c->buf && !(c->buf = malloc(ENGINE_GRAIN)))
			return false;
		c->rs = rs;
		c->busy = true;
		c->waiting = true;
		c->grain = (uint64_t)g;
		c->len = (uint32_t)(e->size - off < ENGINE_GRAIN ? e->size - off : ENGINE_GRAIN);
		c->src = src;
		rs->ncopies++;
		e->copies++;
		copy_try_start(c, src);
		return true;
	}
	return false;
}

static void hash_done(struct tio *io, int res, const uint8_t *p, uint32_t len)
{
	struct resync *rs = io->ctx;
	struct engine *e = io->t->e;
	uint64_t *dst = io == &rs->ht_src ? rs->hsrc : rs->hdst;
	if (res == 0 && len != rs->hash_n * 8)
		res = -EBADMSG;
	if (res == 0)
		for (uint32_t i = 0; i < rs->hash_n; i++)
			dst[i] = proto_get_le64(p + i * 8);
	if (io == &rs->ht_src)
		rs->hash_res_src = res;
	else
		rs->hash_res_dst = res;
	if (--rs->hash_pending)
		return;
	rs->hash_busy = false;
	if (e->dying || rs->cancelled) {
		rs_free_if_idle(rs);
		return;
	}
	struct target *t = rs->t;
	if (rs->hash_res_src < 0) {
		handle_err(e, rs->hash_from, rs->hash_res_src, "hash failed");
	} else if (rs->hash_res_dst < 0) {
		handle_err(e, t, rs->hash_res_dst, "hash failed");
	} else {
		uint64_t g0 = rs->hash_pos / ENGINE_GRAIN;
		for (uint32_t i = 0; i < rs->hash_n; i++)
			if (rs->hsrc[i] != rs->hdst[i]) {
				bitmap_set_range(&t->dirty, g0 + i, 1);
				t->dirty_changed = true;
			}
		rs->hash_pos += rs->hash_len;
		t->resync_done += rs->hash_len;
	}
	eng_kick(e);
}

static void hash_next(struct resync *rs, struct target *src)
{
	struct engine *e = rs->t->e;
	uint64_t left = e->size - rs->hash_pos;
	uint64_t len = (uint64_t)ENGINE_HASH_BATCH * ENGINE_GRAIN;
	if (len > left)
		len = left;
	uint32_t n = (uint32_t)((len + ENGINE_GRAIN - 1) / ENGINE_GRAIN);
	if (!rs->hsrc)
		rs->hsrc = malloc(ENGINE_HASH_BATCH * 8);
	if (!rs->hdst)
		rs->hdst = malloc(ENGINE_HASH_BATCH * 8);
	if (!rs->hsrc || !rs->hdst)
		return;
	rs->hash_busy = true;
	rs->hash_pending = 2;
	rs->hash_n = n;
	rs->hash_len = len;
	rs->hash_from = src;
	struct tio *ios[2] = {&rs->ht_src, &rs->ht_dst};
	struct target *ts[2] = {src, rs->t};
	for (int i = 0; i < 2; i++) {
		tio_prep(ios[i], ts[i], PROTO_HASH, hash_done, rs);
		ios[i]->off = rs->hash_pos;
		ios[i]->len = len;
		ios[i]->arg = ENGINE_GRAIN;
	}
	tio_submit(ios[0]);
	tio_submit(ios[1]);
}

static void finish_done(struct tio *io, int res, const uint8_t *p, uint32_t len)
{
	(void)p;
	(void)len;
	struct resync *rs = io->ctx;
	struct engine *e = io->t->e;
	rs->finishing = false;
	if (e->dying || rs->cancelled) {
		rs_free_if_idle(rs);
		return;
	}
	struct target *t = rs->t;
	if (res < 0) {
		handle_err(e, t, res, "resync flush failed");
		return;
	}
	if (!bitmap_empty(&t->dirty) || rs->ncopies) {
		eng_kick(e); /* something got dirty meanwhile: go on */
		return;
	}
	t->resync_done = t->resync_total;
	resync_cancel(t);
	if (t->state == T_REBUILDING) {
		eng_set_insync(t);
	} else {
		t->suspect = false;
		t->need_full = false;
		eng_kick(e);
	}
}

static void ckpt_persisted(void *arg, int res)
{
	(void)res; /* a failed persist is retried: the bitmap stays marked changed */
	struct resync *rs = arg;
	struct engine *e = rs->t->e;
	rs->ckpt_busy = false;
	if (rs->cancelled || e->dying) {
		rs_free_if_idle(rs);
		return;
	}
	rs->ckpt_bytes = 0;
	rs->ckpt_at = loop_now_ms();
	eng_kick(e);
}

static void ckpt_flushed(struct tio *io, int res, const uint8_t *p, uint32_t len)
{
	(void)p;
	(void)len;
	struct resync *rs = io->ctx;
	struct engine *e = io->t->e;
	if (rs->cancelled || e->dying) {
		rs->ckpt_busy = false;
		rs_free_if_idle(rs);
		return;
	}
	if (res < 0) {
		rs->ckpt_busy = false;
		handle_err(e, rs->t, res, "resync checkpoint flush failed");
		return;
	}
	/* Every cleared bit is durable on the target now: record them where the next engine
	 * looks, so an interrupted resync does not copy them again. */
	resync_persist_bitmaps(e, ckpt_persisted, rs);
}

/* True while a checkpoint holds new copies back. */
static bool ckpt_pump(struct resync *rs)
{
	struct target *t = rs->t;
	if (rs->ckpt_busy)
		return true;
	if (!rs->ckpt_want && !rs->hash_mode && rs->ckpt_bytes && !bitmap_empty(&t->dirty) &&
	    (rs->ckpt_bytes >= ENGINE_CKPT_BYTES || loop_now_ms() - rs->ckpt_at >= ENGINE_CKPT_MS))
		rs->ckpt_want = true;
	if (!rs->ckpt_want)
		return false;
	if (rs->ncopies)
		return true; /* the copies in flight end first */
	rs->ckpt_want = false;
	rs->ckpt_busy = true;
	tio_prep(&rs->ckpt_fl, t, PROTO_FLUSH, ckpt_flushed, rs);
	tio_submit(&rs->ckpt_fl);
	return true;
}

void resync_pump(struct target *t)
{
	struct resync *rs = t->rs;
	struct engine *e = t->e;
	if (!rs || rs->cancelled || e->dying || e->fenced || rs->finishing)
		return;
	if (t->state == T_STALE || !eng_takes_writes(t))
		return;
	struct target *src = pick_source(e, t);
	/* Reserved grains go first, even under a quiesce: the quiesce waits for them. */
	for (int i = 0; i < ENGINE_RESYNC_PAR; i++) {
		struct copy *c = &rs->c[i];
		if (!c->busy || !c->waiting)
			continue;
		if (src) {
			copy_try_start(c, src);
		} else {
			slot_unreserve(c, e);
		}
	}
	if (!src || e->qops || e->hold_writes)
		return; /* the tick tries again */
	if (ckpt_pump(rs))
		return;
	if (rs->hash_mode && !rs->hash_busy && rs->hash_pos < e->size)
		hash_next(rs, src);
	while (rs->ncopies < ENGINE_RESYNC_PAR && copy_next(rs, src))
		;
	if (t->rs != rs || rs->cancelled)
		return;
	if ((!rs->hash_mode || rs->hash_pos >= e->size) && !rs->hash_busy && !rs->ncopies &&
	    bitmap_empty(&t->dirty)) {
		/* Copies are on t but maybe not durable: flush before calling it in sync. */
		rs->finishing = true;
		tio_prep(&rs->fl, t, PROTO_FLUSH, finish_done, rs);
		tio_submit(&rs->fl);
	}
}

/* ---- dirty bitmap persistence ---- */

struct bop {
	struct engine *e;
	engine_cb cb;
	void *arg;
	int pending;
	int res;
	bool owns; /* holds e->bitmaps_busy */
	uint32_t nbufs;
	struct {
		uint8_t *buf;
		uint32_t len;
		struct target *member;
	} b[ENGINE_MAX_REPLICAS];
	struct tio tio[ENGINE_MAX_REPLICAS * ENGINE_MAX_REPLICAS];
};

static void bop_done(struct tio *io, int res, const uint8_t *p, uint32_t len)
{
	(void)p;
	(void)len;
	struct bop *b = io->ctx;
	struct engine *e = b->e;
	if (res < 0 && res != -ENOENT) {
		if (b->res == 0)
			b->res = res;
		/* the member's bitmap must be sent again */
		uint32_t k = (uint32_t)(io - b->tio) / ENGINE_MAX_REPLICAS;
		if (!e->dying)
			b->b[k].member->dirty_changed = true;
	}
	if (--b->pending)
		return;
	if (b->owns)
		e->bitmaps_busy = false;
	for (uint32_t i = 0; i < b->nbufs; i++)
		free(b->b[i].buf);
	engine_cb cb = b->cb;
	void *arg = b->arg;
	int r = b->res;
	free(b);
	if (cb)
		cb(arg, r);
}

static void bop_defer(void *arg)
{
	struct tio io = {.ctx = arg};
	struct bop *b = arg;
	b->pending = 1;
	bop_done(&io, 0, NULL, 0);
}

/* Persists the bitmap of every out-of-sync member whose bitmap changed (or drops it when
 * it is not trustworthy) on every in-sync replica. cb (may be NULL) runs once, later. */
void resync_persist_bitmaps(struct engine *e, engine_cb cb, void *arg)
{
	struct bop *b = calloc(1, sizeof(*b));
	if (!b) {
		if (cb)
			cb(arg, -ENOMEM);
		return;
	}
	b->e = e;
	b->cb = cb;
	b->arg = arg;
	if (e->bitmaps_busy || e->fenced || e->dying) {
		/* One at a time; the next flush or the close persists the rest. */
		loop_defer(e->l, bop_defer, b);
		return;
	}
	e->bitmaps_busy = true;
	b->owns = true;
	b->pending = 1;
	for (uint32_t k = 0; k < e->ntargets; k++) {
		struct target *m = e->t[k];
		if (m->state == T_INSYNC || !m->dirty_changed)
			continue;
		uint8_t *bits = NULL;
		size_t n = 0;
		char hdr[160];
		int hl;
		uint8_t *buf;
		if (m->need_full) {
			hl = snprintf(hdr, sizeof(hdr), "%s", m->node);
			buf = malloc((size_t)hl);
			if (!buf)
				continue;
			memcpy(buf, hdr, (size_t)hl);
			b->b[b->nbufs].len = (uint32_t)hl;
		} else {
			if (bitmap_to_bytes(&m->dirty, &bits, &n) < 0)
				continue;
			hl = snprintf(hdr, sizeof(hdr), "{\"member\":\"%s\",\"grain\":%u}", m->node,
				      ENGINE_GRAIN);
			buf = malloc((size_t)hl + 1 + n);
			if (!buf) {
				free(bits);
				continue;
			}
			memcpy(buf, hdr, (size_t)hl + 1);
			if (n)
				memcpy(buf + hl + 1, bits, n);
			free(bits);
			b->b[b->nbufs].len = (uint32_t)(hl + 1 + n);
		}
		m->dirty_changed = false;
		b->b[b->nbufs].buf = buf;
		b->b[b->nbufs].member = m;
		uint32_t slot = b->nbufs++;
		for (uint32_t i = 0; i < e->ntargets; i++) {
			struct target *t = e->t[i];
			if (t->state != T_INSYNC || !eng_takes_writes(t))
				continue;
			struct tio *io = &b->tio[slot * ENGINE_MAX_REPLICAS + i];
			tio_prep(io, t, m->need_full ? PROTO_DIRTY_DROP : PROTO_DIRTY_PUT, bop_done,
				 b);
			io->payload = buf;
			io->plen = b->b[slot].len;
			b->pending++;
			tio_submit(io);
		}
	}
	if (b->pending == 1)
		loop_defer(e->l, bop_defer, b);
	else
		b->pending--;
}

/* ---- verify ---- */

struct verify {
	struct engine *e;
	char **json;
	engine_cb cb;
	void *arg;
	uint64_t pos, len;
	uint32_t n;
	int pending;
	int res;
	uint64_t checked;
	json_t *differ;
	struct target *ts[ENGINE_MAX_REPLICAS];
	uint32_t nts;
	uint64_t *h[ENGINE_MAX_REPLICAS];
	bool got[ENGINE_MAX_REPLICAS];
	bool holding;
	verify_chunk_fn chunk_fn; /* repair: sees each chunk's hashes */
	void *chunk_arg;
	struct tio tio[ENGINE_MAX_REPLICAS];
};

static void verify_chunk(struct verify *v);

static void verify_end(struct verify *v)
{
	if (v->res == 0) {
		json_t *j = json_pack("{s:I,s:I,s:O}", "extent", (json_int_t)ENGINE_GRAIN,
				      "checked", (json_int_t)v->checked, "differ", v->differ);
		*v->json = j ? json_dumps(j, JSON_COMPACT) : NULL;
		json_decref(j);
		if (!*v->json)
			v->res = -ENOMEM;
	}
	json_decref(v->differ);
	for (uint32_t i = 0; i < ENGINE_MAX_REPLICAS; i++)
		free(v->h[i]);
	v->cb(v->arg, v->res);
	free(v);
}

static void verify_hash_done(struct tio *io, int res, const uint8_t *p, uint32_t len)
{
	struct verify *v = io->ctx;
	uint32_t k = (uint32_t)(io - v->tio);
	if (res == 0 && len == v->n * 8) {
		v->got[k] = true;
		for (uint32_t i = 0; i < v->n; i++)
			v->h[k][i] = proto_get_le64(p + i * 8);
	} else if (res == -ESTALE && !v->e->dying) {
		v->res = -ESTALE;
	}
	if (--v->pending)
		return;
	v->e->hold_writes--;
	uint32_t ngot = 0;
	for (uint32_t k2 = 0; k2 < v->nts; k2++)
		ngot += v->got[k2];
	if (ngot == 0 && v->res == 0)
		v->res = -EIO;
	if (v->res == 0) {
		for (uint32_t i = 0; i < v->n; i++) {
			bool diff = false;
			uint64_t first = 0;
			bool have = false;
			for (uint32_t k2 = 0; k2 < v->nts; k2++) {
				if (!v->got[k2])
					continue;
				if (!have) {
					first = v->h[k2][i];
					have = true;
				} else if (v->h[k2][i] != first) {
					diff = true;
				}
			}
			v->checked++;
			if (!diff)
				continue;
			json_t *hs = json_object();
			for (uint32_t k2 = 0; k2 < v->nts; k2++) {
				if (!v->got[k2])
					continue;
				char hex[17];
				snprintf(hex, sizeof(hex), "%016llx",
					 (unsigned long long)v->h[k2][i]);
				json_object_set_new(hs, v->ts[k2]->node, json_string(hex));
			}
			uint64_t off = v->pos + (uint64_t)i * ENGINE_GRAIN;
			uint64_t l =
			    v->e->size - off < ENGINE_GRAIN ? v->e->size - off : ENGINE_GRAIN;
			json_array_append_new(v->differ,
					      json_pack("{s:I,s:I,s:o}", "offset", (json_int_t)off,
							"length", (json_int_t)l, "hashes", hs));
		}
		if (v->chunk_fn)
			v->chunk_fn(v->chunk_arg, v->pos, v->n, v->nts, v->ts, v->got, v->h);
	}
	v->pos += v->len;
	struct engine *e = v->e;
	if (v->res || v->pos >= e->size || e->dying || e->closing) {
		if (!v->res && v->pos < e->size)
			v->res = -ECANCELED;
		e->verify = NULL;
		verify_end(v);
		if (!e->dying)
			eng_kick(e);
		return;
	}
	verify_chunk(v);
}

static void verify_end_fn(void *arg)
{
	verify_end(arg);
}

/* One chunk at a time, with writes and copies drained first so that hashes compare the same
 * content; e->hold_writes keeps new writes and copies queued while the chunk is hashed. */
static void verify_chunk_start(void *arg)
{
	struct verify *v = arg;
	struct engine *e = v->e;
	if (!v->holding) {
		v->holding = true;
		e->hold_writes++;
	}
	if (e->dying || e->closing) {
		e->hold_writes--;
		v->res = -ECANCELED;
		e->verify = NULL;
		verify_end(v);
		return;
	}
	if (eng_write_overlaps(e, 0, e->size) || e->copies) {
		loop_timer_add(e->l, 1, verify_chunk_start, v, NULL);
		return;
	}
	v->holding = false;
	memset(v->got, 0, sizeof(v->got));
	v->nts = 0;
	for (uint32_t i = 0; i < e->ntargets; i++)
		if (e->t[i]->state == T_INSYNC && eng_takes_writes(e->t[i]))
			v->ts[v->nts++] = e->t[i];
	if (!v->nts) {
		e->hold_writes--;
		v->res = -EIO;
		e->verify = NULL;
		verify_end(v);
		return;
	}
	uint64_t left = e->size - v->pos;
	v->len = (uint64_t)ENGINE_HASH_BATCH * ENGINE_GRAIN;
	if (v->len > left)
		v->len = left;
	v->n = (uint32_t)((v->len + ENGINE_GRAIN - 1) / ENGINE_GRAIN);
	v->pending = (int)v->nts;
	for (uint32_t k = 0; k < v->nts; k++) {
		tio_prep(&v->tio[k], v->ts[k], PROTO_HASH, verify_hash_done, v);
		v->tio[k].off = v->pos;
		v->tio[k].len = v->len;
		v->tio[k].arg = ENGINE_GRAIN;
		tio_submit(&v->tio[k]);
	}
}

static void verify_chunk(struct verify *v)
{
	verify_chunk_start(v);
}

int eng_verify_scan(struct engine *e, char **json, verify_chunk_fn fn, void *fn_arg, engine_cb cb,
		    void *arg)
{
	if (!e->open || e->closing)
		return -EIO;
	if (e->verify)
		return -EBUSY;
	struct verify *v = calloc(1, sizeof(*v));
	if (!v)
		return -ENOMEM;
	v->e = e;
	v->json = json;
	v->cb = cb;
	v->arg = arg;
	v->chunk_fn = fn;
	v->chunk_arg = fn_arg;
	v->differ = json_array();
	for (uint32_t i = 0; i < ENGINE_MAX_REPLICAS; i++)
		v->h[i] = malloc(ENGINE_HASH_BATCH * 8);
	for (uint32_t i = 0; i < ENGINE_MAX_REPLICAS; i++)
		if (!v->h[i] || !v->differ) {
			v->res = -ENOMEM;
			v->cb = NULL;
		}
	if (v->res) {
		json_decref(v->differ);
		for (uint32_t i = 0; i < ENGINE_MAX_REPLICAS; i++)
			free(v->h[i]);
		free(v);
		return -ENOMEM;
	}
	e->verify = v;
	if (e->size == 0) {
		loop_defer(e->l, verify_end_fn, v);
		e->verify = NULL;
		return 0;
	}
	loop_defer(e->l, verify_chunk_start, v);
	return 0;
}

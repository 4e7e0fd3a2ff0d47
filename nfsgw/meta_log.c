/*
 * meta_log: group commit and replay of the log.
 *
 * Writing: one log write is in flight at a time. The operations queued meanwhile (their
 * entries in m->q, their callbacks in m->w) become the next record: a 32-byte header
 * (magic, payload length, checkpoint generation, sequence number, XXH3) and whole operations,
 * cut at the first operation boundary past META_REC_TARGET, padded to 4 KiB so the next
 * record starts on a fresh block. Lazy timestamps ride along in a record that empties the
 * queue and carries entries (or is due to META_LAZY_MS or a meta_sync). Operations complete in
 * queue order. A record with namespace changes (or a meta_sync) is written with FUA, or followed
 * by a flush when an earlier record went without FUA (a lost earlier record would end replay
 * before it); a record of size changes only is written plainly (engine writes reach every
 * in-sync replica before they complete).
 *
 * Replay reads the log in windows and applies records while header, generation, sequence and
 * checksum all verify; the first that does not ends the log.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <xxhash.h>

#include "nfsgw/meta_priv.h"

#define ALIGN_UP(x) (((x) + META_BLOCK - 1) / META_BLOCK * META_BLOCK)

uint64_t ml_hash(const uint8_t *hdr, const uint8_t *payload, size_t len)
{
	return XXH3_64bits_withSeed(payload, len, XXH3_64bits(hdr, 24));
}

void ml_put_hdr(uint8_t *hdr, uint32_t magic, uint32_t plen, uint64_t gen, uint64_t seq)
{
	le_put32(hdr, magic);
	le_put32(hdr + 4, plen);
	le_put64(hdr + 8, gen);
	le_put64(hdr + 16, seq);
	le_put64(hdr + 24, ml_hash(hdr, hdr + META_HDR_SIZE, plen));
}

static void run(void *arg)
{
	struct mtoken *t = arg;
	t->armed = false;
	struct meta *m = t->m;
	if (!m) {
		free(t);
		return;
	}
	/* Only those queued before this run: a callback that queues another runs next time. */
	size_t n = m->ndq;
	if (!n) {
		ml_kick(m);
		return;
	}
	for (size_t i = 0; i < n; i++) {
		struct mdeferred d = m->dq[i];
		d.cb(d.arg, d.res);
	}
	memmove(m->dq, m->dq + n, (m->ndq - n) * sizeof(*m->dq));
	m->ndq -= n;
	if (m->ndq)
		ml_schedule(m);
	ml_kick(m);
}

void ml_schedule(struct meta *m)
{
	if (!m->tok->armed && loop_defer(m->l, run, m->tok) == 0)
		m->tok->armed = true;
}

int ml_defer(struct meta *m, meta_cb cb, void *arg, int res)
{
	if (m->ndq == m->capdq) {
		size_t cap = m->capdq ? m->capdq * 2 : 64;
		struct mdeferred *v = realloc(m->dq, cap * sizeof(*v));
		if (!v)
			return -ENOMEM;
		m->dq = v;
		m->capdq = cap;
	}
	m->dq[m->ndq++] = (struct mdeferred){cb, arg, res};
	ml_schedule(m);
	return 0;
}

static int waits_reserve(struct mwaits *w, size_t n)
{
	if (n <= w->cap)
		return 0;
	size_t cap = w->cap ? w->cap : 64;
	while (cap < n)
		cap *= 2;
	struct mwait *v = realloc(w->v, cap * sizeof(*v));
	if (!v)
		return -ENOMEM;
	w->v = v;
	w->cap = cap;
	return 0;
}

int ml_wait(struct meta *m, meta_cb cb, void *arg, uint32_t flags)
{
	if (waits_reserve(&m->w, m->w.n + 1) < 0)
		return -ENOMEM;
	m->w.v[m->w.n++] = (struct mwait){cb, arg, m->q.len, flags, ++m->wserial};
	return 0;
}

/* Moves the first k waiters (and their queued entries) to the flight list. */
static int take(struct meta *m, size_t k)
{
	if (waits_reserve(&m->flight, m->flight.n + k) < 0)
		return -ENOMEM;
	size_t bytes = k ? m->w.v[k - 1].end : 0;
	if (k == 0)
		return 0;
	memcpy(m->flight.v + m->flight.n, m->w.v, k * sizeof(*m->w.v));
	m->flight.n += k;
	memmove(m->w.v, m->w.v + k, (m->w.n - k) * sizeof(*m->w.v));
	m->w.n -= k;
	for (size_t i = 0; i < m->w.n; i++)
		m->w.v[i].end -= bytes;
	if (bytes) {
		memmove(m->q.p, m->q.p + bytes, m->q.len - bytes);
		m->q.len -= bytes;
	}
	return 0;
}

/* Callbacks may queue new operations (into m->w), never touch the flight list. */
static void complete_flight(struct meta *m, int res)
{
	size_t n = m->flight.n;
	if (!n)
		return;
	for (size_t i = 0; i < n; i++) {
		m->done_serial = m->flight.v[i].serial;
		m->flight.v[i].cb(m->flight.v[i].arg, res);
	}
	memmove(m->flight.v, m->flight.v + n, (m->flight.n - n) * sizeof(*m->flight.v));
	m->flight.n -= n;
}

void ml_complete(struct meta *m, size_t n, int res)
{
	if (take(m, n) < 0) {
		ml_fail(m, -ENOMEM);
		return;
	}
	complete_flight(m, res);
}

void ml_fail(struct meta *m, int res)
{
	if (!m->err) {
		m->err = res == -ESTALE ? -ESTALE : -EROFS;
		m->ferr = res;
	}
	if (m->lazy_timer) {
		loop_timer_cancel(m->l, m->lazy_timer);
		m->lazy_timer = NULL;
	}
	ml_schedule(m);
}

static void lazy_fire(void *arg)
{
	struct meta *m = arg;
	m->lazy_timer = NULL;
	m->lazy_due = true;
	ml_kick(m);
}

void ml_lazy_arm(struct meta *m)
{
	if (!m->lazy_timer && !m->err)
		loop_timer_add(m->l, META_LAZY_MS, lazy_fire, m, &m->lazy_timer);
}

static void flush_done(struct meta *m, struct mio *io, int res)
{
	mio_free(m, io);
	m->inflight = false;
	if (res < 0) {
		complete_flight(m, res);
		ml_fail(m, res);
		return;
	}
	m->unflushed = false;
	complete_flight(m, 0);
	ml_kick(m);
}

static void start_flush(struct meta *m)
{
	struct mio *io = mio_new(m, flush_done, 0, 0);
	int r = io ? mio_flush(m, io) : -ENOMEM;
	if (r < 0) {
		if (io)
			mio_free(m, io);
		m->inflight = true; /* flush_done clears it */
		flush_done(m, NULL, r);
	}
}

static void write_done(struct meta *m, struct mio *io, int res)
{
	bool then_flush = io->idx & 1, plain = io->idx & 2;
	mio_free(m, io);
	if (res < 0) {
		m->inflight = false;
		complete_flight(m, res);
		ml_fail(m, res);
		return;
	}
	if (plain)
		m->unflushed = true;
	if (then_flush) {
		start_flush(m);
		return;
	}
	m->inflight = false;
	complete_flight(m, 0);
	ml_kick(m);
}

/* Completes, with the failure, everything waiting once nothing is in flight. */
static void drain(struct meta *m)
{
	ml_complete(m, m->w.n, m->ferr);
	m->q.len = 0;
}

void ml_kick(struct meta *m)
{
	for (;;) {
		if (!m->loaded || m->inflight || m->compacting)
			return;
		if (m->err) {
			drain(m);
			if (m->closing)
				meta_close_done(m, m->ferr);
			return;
		}
		if (m->closing) {
			mc_start(m, CKPT_CLOSE);
			return;
		}
		bool lazy = m->lazy_head && m->lazy_due;
		if (!m->w.n && !lazy)
			return;
		if (m->log_pos >= m->compact_at) {
			mc_start(m, CKPT_COMPACT);
			return;
		}
		size_t k = 0, bytes = 0;
		uint32_t flags = 0;
		while (k < m->w.n) {
			flags |= m->w.v[k].flags;
			bytes = m->w.v[k].end;
			k++;
			if (bytes >= META_REC_TARGET)
				break;
		}
		/* Lazy timestamps ride along with real entries only: operations that merely wait
		 * for earlier ones must not start a chain of timestamp-only records. */
		size_t lazy_bytes = 0;
		if (k == m->w.n && (bytes || m->lazy_due || (flags & MW_SYNC)))
			for (struct minode *in = m->lazy_head; in; in = in->lazy_next)
				lazy_bytes += mt_inode_esize(in->symlink ? strlen(in->symlink) : 0);
		size_t plen = bytes + lazy_bytes;
		if (plen == 0) {
			if ((flags & MW_SYNC) && m->unflushed) {
				if (take(m, k) < 0) {
					ml_fail(m, -ENOMEM);
					continue;
				}
				m->inflight = true;
				start_flush(m);
				return;
			}
			ml_complete(m, k, 0);
			continue;
		}
		uint64_t reclen = ALIGN_UP(META_HDR_SIZE + plen);
		if (m->log_pos + reclen > m->log_cap || plen > META_WINDOW - META_HDR_SIZE) {
			if (m->log_pos == 0) {
				ml_fail(m, -EFBIG);
				continue;
			}
			mc_start(m, CKPT_COMPACT);
			return;
		}
		struct mio *io = mio_new(m, write_done, m->log_off + m->log_pos, (uint32_t)reclen);
		if (!io || waits_reserve(&m->flight, k) < 0) {
			if (io)
				mio_free(m, io);
			ml_fail(m, -ENOMEM);
			continue;
		}
		uint8_t *b = io->buf;
		if (bytes)
			memcpy(b + META_HDR_SIZE, m->q.p, bytes);
		if (lazy_bytes) {
			struct mbuf lb = {0};
			for (struct minode *in = m->lazy_head; in; in = in->lazy_next)
				if (mr_inode(&lb, in) < 0)
					break;
			if (lb.len != lazy_bytes) {
				mbuf_free(&lb);
				mio_free(m, io);
				ml_fail(m, -ENOMEM);
				continue;
			}
			memcpy(b + META_HDR_SIZE + bytes, lb.p, lazy_bytes);
			mbuf_free(&lb);
			while (m->lazy_head)
				mt_lazy_unmark(m, m->lazy_head);
			m->lazy_due = false;
		}
		memset(b + META_HDR_SIZE + plen, 0, reclen - META_HDR_SIZE - plen);
		ml_put_hdr(b, META_REC_MAGIC, (uint32_t)plen, m->gen, m->seq);
		m->log_pos += reclen;
		m->seq++;
		take(m, k);
		m->inflight = true;
		uint32_t wflags = 0;
		if ((flags & (MW_SYNC | MW_FUA)) && m->unflushed)
			io->idx = 1; /* write, then flush */
		else if (flags & (MW_SYNC | MW_FUA))
			wflags = BDEV_FUA;
		else
			io->idx = 2;
		int r = mio_write(m, io, wflags);
		if (r < 0)
			write_done(m, io, r);
		return;
	}
}

/* ---- replay ---- */

static void read_window(struct meta *m);

static void window_done(struct meta *m, struct mio *io, int res)
{
	if (res < 0) {
		mio_free(m, io);
		meta_open_done(m, res);
		return;
	}
	const uint8_t *b = io->buf;
	uint64_t base = m->scan_off;
	bool more = false;
	for (;;) {
		uint64_t rel = m->log_pos - base;
		if (rel + META_HDR_SIZE > io->len) {
			more = rel > 0;
			break;
		}
		const uint8_t *h = b + rel;
		uint32_t plen = le_get32(h + 4);
		if (le_get32(h) != META_REC_MAGIC || le_get64(h + 8) != m->gen ||
		    le_get64(h + 16) != m->seq || plen > META_WINDOW - META_HDR_SIZE)
			break;
		uint64_t reclen = ALIGN_UP(META_HDR_SIZE + (uint64_t)plen);
		if (m->log_pos + reclen > m->log_cap)
			break;
		if (rel + reclen > io->len) {
			more = rel > 0;
			break;
		}
		if (le_get64(h + 24) != ml_hash(h, h + META_HDR_SIZE, plen))
			break;
		int r = mr_apply(m, h + META_HDR_SIZE, plen);
		if (r < 0) {
			mio_free(m, io);
			meta_open_done(m, r);
			return;
		}
		m->log_pos += reclen;
		m->seq++;
	}
	mio_free(m, io);
	if (more) {
		read_window(m);
		return;
	}
	mc_start(m, CKPT_OPEN);
}

static void read_window(struct meta *m)
{
	uint64_t left = m->log_cap - m->log_pos;
	if (left < META_BLOCK) {
		mc_start(m, CKPT_OPEN);
		return;
	}
	uint32_t len =
	    left < META_WINDOW ? (uint32_t)(left / META_BLOCK * META_BLOCK) : META_WINDOW;
	struct mio *io = mio_new(m, window_done, m->log_off + m->log_pos, len);
	if (!io) {
		meta_open_done(m, -ENOMEM);
		return;
	}
	m->scan_off = m->log_pos;
	int r = mio_read(m, io);
	if (r < 0) {
		mio_free(m, io);
		meta_open_done(m, r);
	}
}

void ml_replay_start(struct meta *m)
{
	m->log_pos = 0;
	m->seq = 1;
	read_window(m);
}

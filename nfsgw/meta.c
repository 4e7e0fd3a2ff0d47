/*
 * meta: open (read the superblocks; format a blank volume, or load the checkpoint and
 * replay the log), close (a final checkpoint), the bdev I/O wrapper every meta_*.c uses, and
 * the small shared helpers. See meta.h for the contract and nfsgw/README.md ("Metadata") for
 * the on-volume format. A failed meta_open frees the meta before its callback runs.
 *
 * An opened meta always starts by writing a fresh checkpoint under a new generation: a log
 * tail left by a crash (a torn record, or records after it from an abandoned history) can
 * then never be mistaken for records of the new history written over it.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>

#include "nfsgw/meta_priv.h"

/* ---- I/O ---- */

static void mio_cb(void *arg, int res)
{
	struct mio *io = arg;
	if (!io->m) {
		free(io->buf);
		free(io);
		return;
	}
	io->fn(io->m, io, res);
}

struct mio *mio_new(struct meta *m, mio_fn fn, uint64_t off, uint32_t len)
{
	struct mio *io = calloc(1, sizeof(*io));
	if (!io)
		return NULL;
	if (len && posix_memalign(&io->buf, META_BLOCK, len) != 0) {
		free(io);
		return NULL;
	}
	io->m = m;
	io->fn = fn;
	io->off = off;
	io->len = len;
	io->next = m->ios;
	if (m->ios)
		m->ios->prev = io;
	m->ios = io;
	return io;
}

void mio_free(struct meta *m, struct mio *io)
{
	if (!io)
		return;
	if (io->prev)
		io->prev->next = io->next;
	else
		m->ios = io->next;
	if (io->next)
		io->next->prev = io->prev;
	free(io->buf);
	free(io);
}

int mio_read(struct meta *m, struct mio *io)
{
	return m->dev.ops->read(m->dev.ctx, io->off, io->len, io->buf, mio_cb, io);
}

int mio_write(struct meta *m, struct mio *io, uint32_t flags)
{
	return m->dev.ops->write(m->dev.ctx, io->off, io->len, io->buf, flags, mio_cb, io);
}

int mio_flush(struct meta *m, struct mio *io)
{
	return m->dev.ops->flush(m->dev.ctx, mio_cb, io);
}

/* ---- helpers ---- */

void meta_now(struct meta_time *t)
{
	struct timespec ts;
	clock_gettime(CLOCK_REALTIME, &ts);
	t->sec = ts.tv_sec;
	t->nsec = (uint32_t)ts.tv_nsec;
}

uint64_t meta_rand(struct meta *m)
{
	/* xorshift64*, seeded from getrandom: generations need to be unpredictable across
	 * re-creations of a name, not cryptographic. */
	m->rng ^= m->rng >> 12;
	m->rng ^= m->rng << 25;
	m->rng ^= m->rng >> 27;
	return m->rng * 0x2545F4914F6CDD1Dull;
}

static void fill_random(struct meta *m, uint8_t *p, size_t n)
{
	if (getrandom(p, n, 0) == (ssize_t)n)
		return;
	for (size_t i = 0; i < n; i++)
		p[i] = (uint8_t)meta_rand(m);
}

/* ---- lifetime ---- */

static void meta_free(struct meta *m)
{
	if (m->lazy_timer)
		loop_timer_cancel(m->l, m->lazy_timer);
	for (struct mio *io = m->ios, *next; io; io = next) {
		next = io->next;
		io->m = NULL;
	}
	if (m->tok->armed)
		m->tok->m = NULL;
	else
		free(m->tok);
	mt_free_all(m);
	free(m->exports);
	mbuf_free(&m->q);
	free(m->w.v);
	free(m->flight.v);
	free(m->dq);
	free(m->ck_img);
	free(m);
}

void meta_abandon(struct meta *m)
{
	meta_free(m);
}

void meta_open_done(struct meta *m, int res)
{
	meta_cb cb = m->open_cb;
	void *arg = m->open_arg;
	if (res < 0) {
		meta_free(m);
		cb(arg, res);
		return;
	}
	m->loaded = true;
	cb(arg, 0);
	ml_schedule(m);
}

void meta_close_done(struct meta *m, int res)
{
	meta_cb cb = m->close_cb;
	void *arg = m->close_arg;
	meta_free(m);
	cb(arg, res);
}

static void format(struct meta *m)
{
	fill_random(m, m->fsid, sizeof(m->fsid));
	fill_random(m, m->verifier, sizeof(m->verifier));
	m->gen = meta_rand(m) | 1;
	m->sb_seq = 0;
	m->sb_slot = 1;
	m->ckpt_area = 1;
	m->next_fileid = META_ROOT + 1;
	struct meta_attr a = {0};
	a.fileid = META_ROOT;
	a.gen = meta_rand(m) | 1;
	a.type = META_DIR;
	a.mode = 0755;
	a.nlink = 2;
	meta_now(&a.atime);
	a.mtime = a.ctime = a.atime;
	a.parent = META_ROOT;
	int r = mt_upsert(m, &a, NULL, 0);
	if (r < 0) {
		meta_open_done(m, r);
		return;
	}
	mc_start(m, CKPT_FORMAT);
}

static void sb_read(struct meta *m, struct mio *io, int res)
{
	int r = res < 0 ? res : mc_sb_pick(m, io->buf);
	mio_free(m, io);
	if (r < 0)
		meta_open_done(m, r);
	else if (r == 1)
		format(m);
	else
		mc_read(m);
}

int meta_open(struct loop *l, struct bdev dev, struct meta **out, meta_cb cb, void *arg)
{
	uint64_t size = dev.ops->size(dev.ctx);
	if (size < (4u << 20))
		return -EINVAL;
	struct meta *m = calloc(1, sizeof(*m));
	if (!m)
		return -ENOMEM;
	m->tok = calloc(1, sizeof(*m->tok));
	if (!m->tok) {
		free(m);
		return -ENOMEM;
	}
	m->tok->m = m;
	m->l = l;
	m->dev = dev;
	m->open_cb = cb;
	m->open_arg = arg;
	if (getrandom(&m->rng, sizeof(m->rng), 0) != sizeof(m->rng) || !m->rng)
		m->rng = (uint64_t)time(NULL) ^ (uint64_t)(uintptr_t)m ^ 0x9E3779B97F4A7C15ull;
	mc_layout(m, size);
	struct mio *io = mio_new(m, sb_read, 0, 2 * META_BLOCK);
	int r = io ? mio_read(m, io) : -ENOMEM;
	if (r < 0) {
		meta_free(m);
		return r;
	}
	*out = m;
	return 0;
}

int meta_close(struct meta *m, meta_cb cb, void *arg)
{
	if (!m->loaded)
		return -EBUSY;
	if (m->closing)
		return -EALREADY;
	m->closing = true;
	m->close_cb = cb;
	m->close_arg = arg;
	if (m->lazy_timer) {
		loop_timer_cancel(m->l, m->lazy_timer);
		m->lazy_timer = NULL;
	}
	ml_schedule(m);
	return 0;
}

void meta_info(struct meta *m, struct meta_info *out)
{
	memcpy(out->fsid, m->fsid, sizeof(out->fsid));
	memcpy(out->verifier, m->verifier, sizeof(out->verifier));
	out->files = m->ninodes;
	out->log_bytes = m->log_pos;
	out->next_fileid = m->next_fileid;
}

bool meta_failed(struct meta *m)
{
	return m->err != 0;
}

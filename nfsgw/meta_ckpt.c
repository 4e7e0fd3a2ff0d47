/*
 * meta_ckpt: the volume layout, superblocks and checkpoints.
 *
 * Layout (from the volume size S, fixed at format and recorded in the superblock):
 *   [0, 4K) superblock A, [4K, 8K) superblock B, then two checkpoint areas of C bytes each
 *   (C = (S - 8K) / 4, 4 KiB aligned), then the log up to S.
 * A superblock holds magic, version, sequence number, the generation and area of its
 * checkpoint, that checkpoint's length and header hash, fsid, write verifier and the layout,
 * XXH3-checksummed. The newest verifying one wins.
 * A checkpoint is a header (as a log record's, magic MCKP, sequence 0) and the entries
 * recreating the tree: counter, exports, the snapshots (meta_snap.c) in creation order, every
 * inode, then per directory its next cookie and its entries in cookie order. Writing one: the image
 * goes to the area not in use, a flush makes it (and every log record before) durable, then the
 * other superblock is written with FUA and names it with the next generation; the log restarts at
 * its start, and records of older generations left there can never verify again.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <xxhash.h>

#include "nfsgw/meta_priv.h"

#define SB_LEN 120u

void mc_layout(struct meta *m, uint64_t size)
{
	m->dev_size = size;
	m->ckpt_cap = (size - 2 * META_BLOCK) / 4 / META_BLOCK * META_BLOCK;
	m->ckpt_off[0] = 2 * META_BLOCK;
	m->ckpt_off[1] = m->ckpt_off[0] + m->ckpt_cap;
	m->log_off = m->ckpt_off[1] + m->ckpt_cap;
	m->log_cap = (size - m->log_off) / META_BLOCK * META_BLOCK;
	m->compact_at = META_LOG_COMPACT < m->log_cap / 2 ? META_LOG_COMPACT : m->log_cap / 2;
}

static void sb_encode(struct meta *m, uint8_t *b, uint64_t seq, uint64_t gen, int area)
{
	memset(b, 0, META_BLOCK);
	le_put64(b, META_SB_MAGIC);
	le_put32(b + 8, META_VERSION);
	le_put32(b + 12, (uint32_t)area);
	le_put64(b + 16, seq);
	le_put64(b + 24, gen);
	le_put64(b + 32, m->ck_len);
	le_put64(b + 40, m->ck_hash);
	memcpy(b + 48, m->fsid, 16);
	memcpy(b + 64, m->verifier, 8);
	le_put64(b + 72, m->dev_size);
	le_put64(b + 80, m->ckpt_off[0]);
	le_put64(b + 88, m->ckpt_off[1]);
	le_put64(b + 96, m->ckpt_cap);
	le_put64(b + 104, m->log_off);
	le_put64(b + 112, m->log_cap);
	le_put64(b + SB_LEN, XXH3_64bits(b, SB_LEN));
}

static bool sb_valid(const uint8_t *b, uint64_t dev_size)
{
	if (le_get64(b) != META_SB_MAGIC || le_get32(b + 8) != META_VERSION ||
	    le_get64(b + SB_LEN) != XXH3_64bits(b, SB_LEN) || le_get32(b + 12) > 1)
		return false;
	uint64_t coff0 = le_get64(b + 80), coff1 = le_get64(b + 88), ccap = le_get64(b + 96);
	uint64_t loff = le_get64(b + 104), lcap = le_get64(b + 112);
	return coff0 >= 2 * META_BLOCK && coff1 >= coff0 + ccap && loff >= coff1 + ccap &&
	       loff + lcap <= dev_size && le_get64(b + 32) <= ccap && lcap >= META_BLOCK;
}

static bool blank(const uint8_t *b, size_t n)
{
	for (size_t i = 0; i < n; i++)
		if (b[i])
			return false;
	return true;
}

int mc_sb_pick(struct meta *m, const uint8_t *blocks)
{
	if (blank(blocks, 2 * META_BLOCK))
		return 1;
	int best = -1;
	for (int i = 0; i < 2; i++) {
		const uint8_t *b = blocks + i * META_BLOCK;
		if (!sb_valid(b, m->dev_size))
			continue;
		if (best < 0 || le_get64(b + 16) > le_get64(blocks + best * META_BLOCK + 16))
			best = i;
	}
	if (best < 0)
		return -EUCLEAN;
	const uint8_t *b = blocks + best * META_BLOCK;
	m->sb_slot = best;
	m->ckpt_area = (int)le_get32(b + 12);
	m->sb_seq = le_get64(b + 16);
	m->gen = le_get64(b + 24);
	m->ck_len = le_get64(b + 32);
	m->ck_hash = le_get64(b + 40);
	memcpy(m->fsid, b + 48, 16);
	memcpy(m->verifier, b + 64, 8);
	m->dev_size = le_get64(b + 72);
	m->ckpt_off[0] = le_get64(b + 80);
	m->ckpt_off[1] = le_get64(b + 88);
	m->ckpt_cap = le_get64(b + 96);
	m->log_off = le_get64(b + 104);
	m->log_cap = le_get64(b + 112);
	m->compact_at = META_LOG_COMPACT < m->log_cap / 2 ? META_LOG_COMPACT : m->log_cap / 2;
	return 0;
}

static int load(struct meta *m, const uint8_t *img, size_t len)
{
	if (len < META_HDR_SIZE || le_get32(img) != META_CKPT_MAGIC ||
	    le_get64(img + 8) != m->gen || le_get64(img + 24) != m->ck_hash)
		return -EUCLEAN;
	uint32_t plen = le_get32(img + 4);
	if ((size_t)plen + META_HDR_SIZE != len ||
	    m->ck_hash != ml_hash(img, img + META_HDR_SIZE, plen))
		return -EUCLEAN;
	return mr_apply(m, img + META_HDR_SIZE, plen);
}

static int encode(struct meta *m, struct mbuf *b)
{
	int r = mbuf_reserve(b, META_HDR_SIZE);
	if (r < 0)
		return r;
	b->len = META_HDR_SIZE;
	r = mr_u64(b, ME_COUNTER, m->next_fileid);
	if (r == 0 && m->exports)
		r = mr_exports(b, m->exports, strlen(m->exports));
	if (r == 0)
		r = ms_encode(m, b);
	for (size_t i = 0; i < m->ihn && r == 0; i++)
		for (struct minode *in = m->ih[i]; in && r == 0; in = in->hnext)
			r = mr_inode(b, in);
	for (size_t i = 0; i < m->ihn && r == 0; i++) {
		for (struct minode *in = m->ih[i]; in && r == 0; in = in->hnext) {
			if (!in->dir)
				continue;
			r = mr_dirnext(b, in->a.fileid, in->dir->next_cookie);
			for (size_t k = 0; k < in->dir->n && r == 0; k++) {
				struct mdent *d = in->dir->v[k].d;
				if (d)
					r = mr_dirent_add(b, d->dir, d->cookie, d->fileid, d->name,
							  d->namelen);
			}
		}
	}
	return r;
}

static void ck_finish(struct meta *m, int res)
{
	m->compacting = false;
	enum meta_ckpt_why why = m->ck_why;
	if (res < 0) {
		ml_fail(m, res);
		if (why == CKPT_FORMAT || why == CKPT_OPEN)
			meta_open_done(m, res);
		else if (why == CKPT_CLOSE)
			meta_close_done(m, res);
		else
			ml_kick(m);
		return;
	}
	/* The queued operations the image contains are durable now. */
	ml_complete(m, m->ck_covered, 0);
	if (why == CKPT_FORMAT || why == CKPT_OPEN)
		meta_open_done(m, 0);
	else if (why == CKPT_CLOSE)
		meta_close_done(m, m->err ? m->ferr : 0);
	else
		ml_kick(m);
}

static void sb_done(struct meta *m, struct mio *io, int res)
{
	mio_free(m, io);
	if (res == 0) {
		m->gen = m->ck_gen;
		m->seq = 1;
		m->log_pos = 0;
		m->ckpt_area = 1 - m->ckpt_area;
		m->sb_slot = 1 - m->sb_slot;
		m->sb_seq++;
		m->unflushed = false;
	}
	ck_finish(m, res);
}

static void flushed(struct meta *m, struct mio *io, int res)
{
	mio_free(m, io);
	if (res < 0) {
		ck_finish(m, res);
		return;
	}
	int slot = 1 - m->sb_slot;
	struct mio *sb = mio_new(m, sb_done, (uint64_t)slot * META_BLOCK, META_BLOCK);
	if (!sb) {
		ck_finish(m, -ENOMEM);
		return;
	}
	sb_encode(m, sb->buf, m->sb_seq + 1, m->ck_gen, 1 - m->ckpt_area);
	int r = mio_write(m, sb, BDEV_FUA);
	if (r < 0)
		sb_done(m, sb, r);
}

static void chunk_done(struct meta *m, struct mio *io, int res)
{
	mio_free(m, io);
	if (res < 0 && !m->ck_err)
		m->ck_err = res;
	if (--m->ck_pending)
		return;
	if (m->ck_err) {
		ck_finish(m, m->ck_err);
		return;
	}
	struct mio *f = mio_new(m, flushed, 0, 0);
	int r = f ? mio_flush(m, f) : -ENOMEM;
	if (r < 0)
		flushed(m, f, r);
}

void mc_start(struct meta *m, enum meta_ckpt_why why)
{
	m->compacting = true;
	m->ck_why = why;
	m->ck_covered = m->w.n;
	m->ck_err = 0;
	while (m->lazy_head)
		mt_lazy_unmark(m, m->lazy_head);
	m->lazy_due = false;
	struct mbuf b = {0};
	int r = encode(m, &b);
	size_t padded = (b.len + META_BLOCK - 1) / META_BLOCK * META_BLOCK;
	if (r == 0 && padded > m->ckpt_cap)
		r = -ENOSPC;
	m->ck_gen = why == CKPT_FORMAT ? m->gen : m->gen + 1;
	if (r == 0)
		r = mbuf_reserve(&b, padded - b.len);
	if (r < 0) {
		mbuf_free(&b);
		ck_finish(m, r);
		return;
	}
	memset(b.p + b.len, 0, padded - b.len);
	ml_put_hdr(b.p, META_CKPT_MAGIC, (uint32_t)(b.len - META_HDR_SIZE), m->ck_gen, 0);
	m->ck_len = b.len;
	m->ck_hash = le_get64(b.p + 24);
	uint64_t base = m->ckpt_off[1 - m->ckpt_area];
	/* Each chunk owns a copy, so an abandoned meta never leaves I/O on freed memory. Hold
	 * one count until every chunk is submitted, so no completion ends it early. */
	m->ck_pending = 1;
	for (size_t off = 0; off < padded; off += META_IO_CHUNK) {
		uint32_t len =
		    padded - off < META_IO_CHUNK ? (uint32_t)(padded - off) : META_IO_CHUNK;
		struct mio *io = mio_new(m, chunk_done, base + off, len);
		if (!io) {
			m->ck_err = -ENOMEM;
			break;
		}
		memcpy(io->buf, b.p + off, len);
		m->ck_pending++;
		r = mio_write(m, io, 0);
		if (r < 0)
			chunk_done(m, io, r);
	}
	mbuf_free(&b);
	chunk_done(m, NULL, 0);
}

/* ---- reading at open ---- */

static void read_chunk_done(struct meta *m, struct mio *io, int res)
{
	if (res < 0 && !m->ck_err)
		m->ck_err = res;
	if (io && res == 0)
		memcpy(m->ck_img + (io->off - m->ckpt_off[m->ckpt_area]), io->buf, io->len);
	mio_free(m, io);
	if (--m->ck_pending)
		return;
	int r = m->ck_err;
	if (r == 0)
		r = load(m, m->ck_img, m->ck_len);
	free(m->ck_img);
	m->ck_img = NULL;
	if (r < 0) {
		meta_open_done(m, r);
		return;
	}
	ml_replay_start(m);
}

void mc_read(struct meta *m)
{
	size_t padded = (m->ck_len + META_BLOCK - 1) / META_BLOCK * META_BLOCK;
	m->ck_err = 0;
	m->ck_img = malloc(padded ? padded : 1);
	if (!m->ck_img) {
		meta_open_done(m, -ENOMEM);
		return;
	}
	uint64_t base = m->ckpt_off[m->ckpt_area];
	m->ck_pending = 1;
	for (size_t off = 0; off < padded; off += META_IO_CHUNK) {
		uint32_t len =
		    padded - off < META_IO_CHUNK ? (uint32_t)(padded - off) : META_IO_CHUNK;
		struct mio *io = mio_new(m, read_chunk_done, base + off, len);
		if (!io) {
			m->ck_err = -ENOMEM;
			break;
		}
		m->ck_pending++;
		int r = mio_read(m, io);
		if (r < 0)
			read_chunk_done(m, io, r);
	}
	read_chunk_done(m, NULL, 0);
}

/*
 * store_io: the asynchronous data path (read, write, trim, flush) on the loop's io_uring.
 *
 * A request becomes one or more sub-I/Os (struct sio, each with its own loop_io) and
 * completes when all of them have. Partial-block writes to a block the head does not own
 * are read-modify-writes (the rest of the block comes from its owner, or zeros); any request
 * touching a block with a read-modify-write in flight waits for it, so concurrent sub-block
 * writes never lose each other's bytes and reads never see a half-copied block.
 * Completions are always asynchronous: a request with nothing to do submits a NOP.
 */
#include "store_int.h"

#include <errno.h>
#include <fcntl.h>
#include <linux/falloc.h>
#include <stdlib.h>
#include <string.h>

#define BS STORE_BLOCK

enum { RQ_READ, RQ_WRITE, RQ_TRIM };
enum { SIO_READ, SIO_WRITE, SIO_RMW_READ, SIO_PUNCH, SIO_NOP };

struct sio {
	struct loop_io io; /* first: the completion is cast back */
	struct sreq *r;
	struct layer *layer; /* holds a ref */
	uint8_t *buf;
	uint64_t off;
	uint64_t len;
	uint8_t op;
	uint8_t slot;
};

struct sreq {
	struct store *s;
	uint8_t kind;
	uint64_t off;
	uint64_t len;
	uint8_t *rbuf;
	const uint8_t *wbuf;
	store_cb cb;
	void *arg;
	int res;
	uint32_t pending;
	struct sreq *next;  /* wait queue */
	struct sreq *wnext; /* in-flight writes */
	struct sreq *wprev;
	struct layer *layer; /* writes: the layer written (head at start) */
	uint32_t nrmw;
	uint64_t rmw_blk[2];
	uint8_t *bounce;
	struct sio *subs;
	struct sio isub[3];
};

struct fio {
	struct loop_io io;
	struct sflush *f;
};

struct fpage {
	struct layer *L;
	uint64_t p;
	uint32_t gen;
	uint8_t *copy; /* NULL: the page became empty */
};

struct sflush {
	struct store *s;
	store_cb cb;
	void *arg;
	int res;
	struct sflush *next;
	uint32_t pending;
	int stage;
	uint32_t sync_gen;
	struct layer **lays;
	bool *wrote;
	uint32_t nlays;
	struct fpage *pg;
	uint32_t npg;
	struct fio *ios;
};

static void sio_done(struct loop_io *io, int res);
static void flush_start(struct store *s);

static void sio_init(struct sio *x, struct sreq *r, uint8_t op, struct layer *L, uint8_t *buf,
		     uint64_t off, uint64_t len)
{
	memset(x, 0, sizeof(*x));
	x->io.fn = sio_done;
	x->r = r;
	x->op = op;
	x->layer = L;
	if (L)
		L->refs++;
	x->buf = buf;
	x->off = off;
	x->len = len;
}

static void sio_submit(struct store *s, struct sio *x)
{
	struct io_uring_sqe *sqe = loop_sqe(s->loop, &x->io);
	/* Larger requests come back short and are resubmitted. */
	uint32_t n = x->len > (1u << 30) ? (1u << 30) : (uint32_t)x->len;
	switch (x->op) {
	case SIO_READ:
	case SIO_RMW_READ:
		io_uring_prep_read(sqe, x->layer->data_fd, x->buf, n, x->off);
		break;
	case SIO_WRITE:
		io_uring_prep_write(sqe, x->layer->data_fd, x->buf, n, x->off);
		break;
	case SIO_PUNCH:
		io_uring_prep_fallocate(sqe, x->layer->data_fd,
					FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, (off_t)x->off,
					(off_t)x->len);
		break;
	default:
		io_uring_prep_nop(sqe);
		break;
	}
}

static void req_range(const struct sreq *r, uint64_t *fb, uint64_t *lb)
{
	*fb = r->off / BS;
	*lb = r->len ? (r->off + r->len - 1) / BS : *fb;
}

static bool blocked(struct store *s, const struct sreq *r)
{
	uint64_t fb, lb;
	if (!r->len)
		return false;
	req_range(r, &fb, &lb);
	bool pfirst = r->kind == RQ_WRITE && r->off % BS;
	bool plast = r->kind == RQ_WRITE && (r->off + r->len) % BS;
	for (const struct sreq *w = s->writes; w; w = w->wnext) {
		for (uint32_t k = 0; k < w->nrmw; k++)
			if (w->rmw_blk[k] >= fb && w->rmw_blk[k] <= lb)
				return true;
		if (w->layer == s->head || !(pfirst || plast))
			continue;
		/* A write still landing in a layer that is no longer the head (a snapshot was
		 * taken meanwhile) may be the source of our read-modify-write: wait for it. */
		uint64_t wf, wl;
		req_range(w, &wf, &wl);
		if ((pfirst && fb >= wf && fb <= wl) || (plast && lb >= wf && lb <= wl))
			return true;
	}
	return false;
}

static void req_done(struct store *s, store_cb cb, void *arg, int res)
{
	s->inflight--;
	bool fin = s->closing && s->inflight == 0;
	if (cb)
		cb(arg, res);
	if (fin)
		store_finish_close(s);
}

static void kick(struct store *s);

static void req_free(struct sreq *r)
{
	struct store *s = r->s;
	if (r->kind == RQ_WRITE && r->layer) {
		if (r->wprev)
			r->wprev->wnext = r->wnext;
		else
			s->writes = r->wnext;
		if (r->wnext)
			r->wnext->wprev = r->wprev;
		layer_put(s, r->layer);
	}
	if (r->subs != r->isub)
		free(r->subs);
	free(r->bounce);
	free(r);
}

static void req_finish(struct sreq *r)
{
	struct store *s = r->s;
	if (r->kind == RQ_WRITE && r->len) {
		uint64_t fb, lb;
		req_range(r, &fb, &lb);
		/* Only now may a flush persist the bits: the data is in the file. */
		int e = smap_set_range(&r->layer->map, fb, lb - fb + 1);
		if (e && !r->res)
			r->res = e;
	}
	bool was_write = r->kind == RQ_WRITE;
	store_cb cb = r->cb;
	void *arg = r->arg;
	int res = r->res;
	req_free(r);
	if (was_write && s->wait_head)
		kick(s);
	req_done(s, cb, arg, res);
}

static void submit_nop(struct sreq *r)
{
	sio_init(&r->isub[0], r, SIO_NOP, NULL, NULL, 0, 0);
	r->pending = 1;
	sio_submit(r->s, &r->isub[0]);
}

/* Length of the run from off (< end) whose blocks share one owner. */
static uint64_t run_len(struct store *s, uint64_t off, uint64_t end, uint8_t *own)
{
	uint64_t b = off / BS, eb = (end + BS - 1) / BS;
	uint8_t o = sidx_get(&s->idx, b);
	uint64_t nb = b + 1;
	while (nb < eb) {
		const uint8_t *leaf = s->idx.leaves[nb >> SMAP_SHIFT];
		if (!leaf) {
			if (o)
				break;
			nb = ((nb >> SMAP_SHIFT) + 1) << SMAP_SHIFT;
			continue;
		}
		if (leaf[nb & SMAP_MASK] != o)
			break;
		nb++;
	}
	uint64_t rend = nb * BS < end ? nb * BS : end;
	*own = o;
	return rend - off;
}

static int read_start(struct sreq *r)
{
	struct store *s = r->s;
	uint64_t end = r->off + r->len;
	uint32_t n = 0;
	uint8_t own;
	for (uint64_t o = r->off; o < end;) {
		uint64_t l = run_len(s, o, end, &own);
		n += own != 0;
		o += l;
	}
	if (n > 3) {
		r->subs = malloc(n * sizeof(*r->subs));
		if (!r->subs)
			return -ENOMEM;
	}
	uint32_t k = 0;
	for (uint64_t o = r->off; o < end;) {
		uint64_t l = run_len(s, o, end, &own);
		uint8_t *buf = r->rbuf + (o - r->off);
		if (own)
			sio_init(&r->subs[k++], r, SIO_READ, s->chain[own], buf, o, l);
		else
			memset(buf, 0, l);
		o += l;
	}
	if (!n) {
		submit_nop(r);
		return 0;
	}
	r->pending = n;
	for (uint32_t i = 0; i < n; i++)
		sio_submit(s, &r->subs[i]);
	return 0;
}

/* Puts the write's bytes for RMW block k over the block image in the bounce buffer. */
static void rmw_fill(struct sreq *r, uint32_t k)
{
	uint64_t bs = r->rmw_blk[k] * BS, be = bs + BS, end = r->off + r->len;
	uint64_t lo = r->off > bs ? r->off : bs, hi = end < be ? end : be;
	memcpy(r->bounce + k * BS + (lo - bs), r->wbuf + (lo - r->off), hi - lo);
}

static int write_start(struct sreq *r)
{
	struct store *s = r->s;
	struct layer *h = s->head;
	uint8_t hidx = (uint8_t)h->cidx, own[2];
	uint64_t end = r->off + r->len, fb, lb;
	if (!r->len) {
		submit_nop(r);
		return 0;
	}
	req_range(r, &fb, &lb);
	bool rmw_first = false, rmw_last = false;
	if (r->off % BS && (own[0] = sidx_get(&s->idx, fb)) != hidx) {
		r->rmw_blk[r->nrmw++] = fb;
		rmw_first = true;
		rmw_last = fb == lb;
	}
	if (end % BS && !rmw_last && (own[r->nrmw] = sidx_get(&s->idx, lb)) != hidx) {
		r->rmw_blk[r->nrmw++] = lb;
		rmw_last = true;
	}
	if (r->nrmw && !(r->bounce = malloc(r->nrmw * BS)))
		return -ENOMEM;
	int e = sidx_set_range(&s->idx, fb, lb - fb + 1, hidx);
	if (e < 0) {
		free(r->bounce);
		r->bounce = NULL;
		r->nrmw = 0;
		return e;
	}
	r->layer = h;
	h->refs++;
	r->wnext = s->writes;
	if (s->writes)
		s->writes->wprev = r;
	s->writes = r;

	uint32_t n = 0;
	for (uint32_t k = 0; k < r->nrmw; k++) {
		struct sio *x = &r->subs[n++];
		uint8_t *buf = r->bounce + k * BS;
		if (own[k]) {
			sio_init(x, r, SIO_RMW_READ, s->chain[own[k]], buf, r->rmw_blk[k] * BS, BS);
		} else {
			/* Nobody has the block: the rest of it is zeros, no read needed. */
			memset(buf, 0, BS);
			rmw_fill(r, k);
			sio_init(x, r, SIO_WRITE, h, buf, r->rmw_blk[k] * BS, BS);
		}
		x->slot = (uint8_t)k;
	}
	uint64_t ms = rmw_first ? (fb + 1) * BS : r->off, me = rmw_last ? lb * BS : end;
	if (ms < me)
		sio_init(&r->subs[n++], r, SIO_WRITE, h, (uint8_t *)r->wbuf + (ms - r->off), ms,
			 me - ms);
	r->pending = n;
	for (uint32_t i = 0; i < n; i++)
		sio_submit(s, &r->subs[i]);
	return 0;
}

/*
 * Whole blocks [wb, we) of the head are discarded: where a lower layer has the block the
 * head keeps its bit (and the punched hole reads as zeros), elsewhere the bit goes.
 */
static int trim_bits(struct store *s, uint64_t wb, uint64_t we)
{
	struct layer *h = s->head;
	uint8_t hidx = (uint8_t)h->cidx;
	for (uint64_t b = wb; b < we;) {
		uint64_t p = b >> SMAP_SHIFT, pe = (p + 1) << SMAP_SHIFT;
		if (pe > we)
			pe = we;
		uint8_t *leaf = s->idx.leaves[p];
		if (!leaf) {
			b = pe;
			continue;
		}
		for (; b < pe; b++) {
			uint8_t o = leaf[b & SMAP_MASK];
			if (!o)
				continue;
			bool lower = o < hidx;
			for (uint32_t c = hidx - 1u; c >= 1 && !lower; c--)
				lower = smap_test(&s->chain[c]->map, b);
			if (lower) {
				if (!smap_test(&h->map, b)) {
					int e = smap_set_range(&h->map, b, 1);
					if (e < 0)
						return e;
				}
				leaf[b & SMAP_MASK] = hidx;
			} else {
				smap_clear(&h->map, b);
				leaf[b & SMAP_MASK] = 0;
			}
		}
	}
	return 0;
}

static void trim_edge_done(void *arg, int res)
{
	struct sreq *r = arg;
	if (res < 0 && !r->res)
		r->res = res;
	if (--r->pending == 0)
		req_finish(r);
}

static void trim_edge(struct sreq *r, uint64_t off, uint64_t len)
{
	static const uint8_t zero[BS];
	r->pending++;
	int e = store_write(r->s, off, (uint32_t)len, zero, trim_edge_done, r);
	if (e < 0) {
		r->pending--;
		if (!r->res)
			r->res = e;
	}
}

static int trim_start(struct sreq *r)
{
	struct store *s = r->s;
	uint64_t end = r->off + r->len;
	uint64_t up = (r->off + BS - 1) / BS * BS, down = end / BS * BS;
	if (up < down) {
		int e = trim_bits(s, up / BS, down / BS);
		if (e < 0)
			return e;
		sio_init(&r->isub[0], r, SIO_PUNCH, s->head, NULL, up, down - up);
		r->pending++;
		sio_submit(s, &r->isub[0]);
	}
	if (r->off % BS)
		trim_edge(r, r->off, (end < up ? end : up) - r->off);
	if (end % BS && down >= up)
		trim_edge(r, down, end - down);
	if (!r->pending)
		submit_nop(r);
	return 0;
}

static int req_start(struct sreq *r)
{
	switch (r->kind) {
	case RQ_READ:
		return read_start(r);
	case RQ_WRITE:
		return write_start(r);
	default:
		return trim_start(r);
	}
}

static void kick(struct store *s)
{
	struct sreq *r = s->wait_head;
	s->wait_head = s->wait_tail = NULL;
	while (r) {
		struct sreq *next = r->next;
		r->next = NULL;
		if (blocked(s, r)) {
			if (s->wait_tail)
				s->wait_tail->next = r;
			else
				s->wait_head = r;
			s->wait_tail = r;
		} else {
			int e = req_start(r);
			if (e < 0) {
				store_cb cb = r->cb;
				void *arg = r->arg;
				req_free(r);
				req_done(s, cb, arg, e);
			}
		}
		r = next;
	}
}

static void sio_done(struct loop_io *io, int res)
{
	struct sio *x = (struct sio *)io;
	struct sreq *r = x->r;
	struct store *s = r->s;
	bool rw = x->op == SIO_READ || x->op == SIO_RMW_READ || x->op == SIO_WRITE;
	if (rw && res > 0 && (uint64_t)res < x->len) {
		x->buf += res;
		x->off += (uint64_t)res;
		x->len -= (uint64_t)res;
		sio_submit(s, x);
		return;
	}
	if (rw && res == 0 && x->len) {
		if (x->op == SIO_WRITE)
			res = -EIO;
		else
			memset(x->buf, 0, x->len); /* past a lower layer's EOF: zeros */
	}
	if (x->op == SIO_RMW_READ && res >= 0) {
		uint32_t k = x->slot;
		rmw_fill(r, k);
		layer_put(s, x->layer);
		sio_init(x, r, SIO_WRITE, r->layer, r->bounce + k * BS, r->rmw_blk[k] * BS, BS);
		x->slot = (uint8_t)k;
		sio_submit(s, x);
		return;
	}
	if (res < 0 && !r->res)
		r->res = res;
	if (x->layer)
		layer_put(s, x->layer);
	if (--r->pending == 0)
		req_finish(r);
}

static int req_new(struct store *s, uint8_t kind, uint64_t off, uint64_t len, store_cb cb,
		   void *arg, struct sreq **out)
{
	/* A closing store still finishes what it accepted, trims' edge writes included. */
	if (s->closing && cb != trim_edge_done)
		return -ESHUTDOWN;
	if (off > s->size || len > s->size - off)
		return -EINVAL;
	struct sreq *r = calloc(1, sizeof(*r));
	if (!r)
		return -ENOMEM;
	r->s = s;
	r->kind = kind;
	r->off = off;
	r->len = len;
	r->cb = cb;
	r->arg = arg;
	r->subs = r->isub;
	*out = r;
	return 0;
}

static int req_submit(struct sreq *r)
{
	struct store *s = r->s;
	if (blocked(s, r)) {
		if (s->wait_tail)
			s->wait_tail->next = r;
		else
			s->wait_head = r;
		s->wait_tail = r;
		s->inflight++;
		return 0;
	}
	int e = req_start(r);
	if (e < 0) {
		req_free(r);
		return e;
	}
	s->inflight++;
	return 0;
}

int store_read(struct store *s, uint64_t off, uint32_t len, void *buf, store_cb cb, void *arg)
{
	struct sreq *r;
	int e = req_new(s, RQ_READ, off, len, cb, arg, &r);
	if (e < 0)
		return e;
	r->rbuf = buf;
	return req_submit(r);
}

int store_write(struct store *s, uint64_t off, uint32_t len, const void *buf, store_cb cb,
		void *arg)
{
	struct sreq *r;
	int e = req_new(s, RQ_WRITE, off, len, cb, arg, &r);
	if (e < 0)
		return e;
	r->wbuf = buf;
	return req_submit(r);
}

int store_trim(struct store *s, uint64_t off, uint64_t len, bool zero, store_cb cb, void *arg)
{
	/* A discarded range reads back as zeros, so zero and discard are the same here. */
	(void)zero;
	struct sreq *r;
	int e = req_new(s, RQ_TRIM, off, len, cb, arg, &r);
	if (e < 0)
		return e;
	return req_submit(r);
}

int store_io_reapply(struct store *s)
{
	for (struct sreq *w = s->writes; w; w = w->wnext) {
		uint8_t c = (uint8_t)w->layer->cidx;
		if (!c || w->layer->dead)
			continue;
		uint64_t fb, lb;
		req_range(w, &fb, &lb);
		for (uint64_t b = fb; b <= lb; b++) {
			if (sidx_get(&s->idx, b) >= c)
				continue;
			int e = sidx_set(&s->idx, b, c);
			if (e < 0)
				return e;
		}
	}
	return 0;
}

/* ---- flush ---- */

static void flush_free(struct sflush *f)
{
	for (uint32_t i = 0; i < f->nlays; i++)
		layer_put(f->s, f->lays[i]);
	for (uint32_t i = 0; i < f->npg; i++)
		free(f->pg[i].copy);
	free(f->lays);
	free(f->wrote);
	free(f->pg);
	free(f->ios);
	free(f);
}

static void flush_finish(struct sflush *f)
{
	struct store *s = f->s;
	store_cb cb = f->cb;
	void *arg = f->arg;
	int res = f->res;
	flush_free(f);
	s->flushing = NULL;
	if (s->flush_head)
		flush_start(s);
	req_done(s, cb, arg, res);
}

static void flush_io_done(struct loop_io *io, int res);

static void flush_submit_fsync(struct sflush *f, uint32_t i, int fd)
{
	f->ios[i].io.fn = flush_io_done;
	f->ios[i].f = f;
	struct io_uring_sqe *sqe = loop_sqe(f->s->loop, &f->ios[i].io);
	io_uring_prep_fsync(sqe, fd, IORING_FSYNC_DATASYNC);
	f->pending++;
}

/* Stage 2: map pages captured at the start, written only if no synchronous persist wrote
 * newer content meanwhile (an older image must never land after a newer one). */
static void flush_write_maps(struct sflush *f)
{
	struct store *s = f->s;
	if (s->sync_gen == f->sync_gen) {
		static const uint8_t zero[SMAP_PAGE];
		for (uint32_t i = 0; i < f->npg && !f->res; i++) {
			struct fpage *fp = &f->pg[i];
			int e = sio_pwrite(s->loop, fp->L->map_fd, fp->copy ? fp->copy : zero,
					   SMAP_PAGE, fp->p * SMAP_PAGE);
			if (e < 0) {
				f->res = e;
				break;
			}
			if ((int32_t)(fp->gen - fp->L->map.saved[fp->p]) > 0)
				fp->L->map.saved[fp->p] = fp->gen;
			for (uint32_t k = 0; k < f->nlays; k++)
				if (f->lays[k] == fp->L)
					f->wrote[k] = true;
		}
	}
	f->stage = 2;
	for (uint32_t k = 0; k < f->nlays && !f->res; k++)
		if (f->wrote[k])
			flush_submit_fsync(f, k, f->lays[k]->map_fd);
	if (!f->pending)
		flush_finish(f);
}

static void flush_io_done(struct loop_io *io, int res)
{
	struct sflush *f = ((struct fio *)io)->f;
	if (res < 0 && !f->res)
		f->res = res;
	if (--f->pending)
		return;
	if (f->stage == 1 && !f->res)
		flush_write_maps(f);
	else
		flush_finish(f);
}

static int flush_prepare(struct sflush *f)
{
	struct store *s = f->s;
	uint32_t n = 0, np = 0;
	for (uint32_t i = 0; i < s->nlayers; i++) {
		struct layer *L = s->layers[i];
		if (L != s->head && !smap_dirty(&L->map))
			continue;
		n++;
		for (uint64_t p = 0; p < L->map.npages; p++)
			np += L->map.gen[p] != L->map.saved[p];
	}
	f->lays = calloc(n, sizeof(*f->lays));
	f->wrote = calloc(n, sizeof(*f->wrote));
	f->ios = calloc(n, sizeof(*f->ios));
	f->pg = calloc(np ? np : 1, sizeof(*f->pg));
	if (!f->lays || !f->wrote || !f->ios || !f->pg)
		return -ENOMEM;
	for (uint32_t i = 0; i < s->nlayers; i++) {
		struct layer *L = s->layers[i];
		if (L != s->head && !smap_dirty(&L->map))
			continue;
		f->lays[f->nlays++] = L;
		L->refs++;
		for (uint64_t p = 0; p < L->map.npages; p++) {
			if (L->map.gen[p] == L->map.saved[p])
				continue;
			struct fpage *fp = &f->pg[f->npg++];
			fp->L = L;
			fp->p = p;
			fp->gen = L->map.gen[p];
			if (L->map.pages[p]) {
				fp->copy = malloc(SMAP_PAGE);
				if (!fp->copy)
					return -ENOMEM;
				memcpy(fp->copy, L->map.pages[p], SMAP_PAGE);
			}
		}
	}
	return 0;
}

static void flush_start(struct store *s)
{
	struct sflush *f = s->flush_head;
	s->flush_head = f->next;
	if (!s->flush_head)
		s->flush_tail = NULL;
	s->flushing = f;
	f->sync_gen = s->sync_gen;
	f->stage = 1;
	/* The page images are taken now: their bits belong to writes already completed, which
	 * the data fdatasync below covers. */
	int e = flush_prepare(f);
	if (e < 0) {
		f->res = e;
		flush_finish(f);
		return;
	}
	for (uint32_t i = 0; i < f->nlays; i++)
		flush_submit_fsync(f, i, f->lays[i]->data_fd);
}

int store_flush(struct store *s, store_cb cb, void *arg)
{
	if (s->closing)
		return -ESHUTDOWN;
	struct sflush *f = calloc(1, sizeof(*f));
	if (!f)
		return -ENOMEM;
	f->s = s;
	f->cb = cb;
	f->arg = arg;
	s->inflight++;
	if (s->flush_tail)
		s->flush_tail->next = f;
	else
		s->flush_head = f;
	s->flush_tail = f;
	if (!s->flushing)
		flush_start(s);
	return 0;
}

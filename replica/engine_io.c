/*
 * engine_io: the per-target op layer (struct tio, local or remote) and the guest data path
 * (bdev read / write / flush / trim fanned out to the replica set). See engine.h for the
 * guarantees and engine_int.h for the state.
 *
 * Guest I/O goes through one FIFO queue so that nothing overtakes a request that must wait
 * (for quorum, for a quiesce, or for a resync copy of the grain it touches).
 */
#include "engine_int.h"
#include "snapops.h"

#include <errno.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- target ops ---- */

static bool is_data_op(uint16_t op)
{
	return op == PROTO_READ || op == PROTO_WRITE || op == PROTO_TRIM || op == PROTO_ZERO;
}

static void ifl_del(struct target *t, struct tio *io)
{
	if (!io->listed)
		return;
	if (io->prev)
		io->prev->next = io->next;
	else
		t->ifl_head = io->next;
	if (io->next)
		io->next->prev = io->prev;
	else
		t->ifl_tail = io->prev;
	io->prev = io->next = NULL;
	io->listed = false;
}

static void ifl_add(struct target *t, struct tio *io)
{
	io->next = NULL;
	io->prev = t->ifl_tail;
	if (t->ifl_tail)
		t->ifl_tail->next = io;
	else
		t->ifl_head = io;
	t->ifl_tail = io;
	io->listed = true;
}

static void tio_finish(struct tio *io, int res, const uint8_t *payload, uint32_t len)
{
	struct engine *e = io->t->e;
	e->tios_pending--;
	io->fn(io, res, payload, len);
	if (e->dying && e->tios_pending == 0)
		eng_try_free(e);
}

static void tio_deferred(void *arg)
{
	struct tio *io = arg;
	uint8_t *p = io->lpayload;
	io->lpayload = NULL;
	tio_finish(io, io->lres, p, io->lplen);
	free(p);
}

static void tio_defer(struct tio *io, int res)
{
	io->lres = res;
	if (loop_defer(io->t->e->l, tio_deferred, io) < 0)
		tio_deferred(io); /* out of memory: better early than never */
}

static void remote_reply(void *arg, int status, const struct proto_rep *rep, const uint8_t *payload,
			 uint32_t len)
{
	struct tio *io = arg;
	ifl_del(io->t, io);
	if (rep)
		io->t->epoch = rep->epoch;
	tio_finish(io, status, payload, len);
}

static void local_cb(void *arg, int res)
{
	struct tio *io = arg;
	struct store *s = io->t->store;
	if (res >= 0 && io->op == PROTO_WRITE && (io->flags & PROTO_FLAG_FUA) && !io->fua_flushed) {
		io->fua_flushed = true;
		res = store_flush(s, local_cb, io);
		if (res >= 0)
			return;
	}
	if (res >= 0 && io->op == PROTO_CLOSE)
		res = store_set_clean(s, true);
	if (res > 0)
		res = 0;
	tio_finish(io, res, io->op == PROTO_READ ? io->rbuf : NULL,
		   io->op == PROTO_READ ? (uint32_t)io->len : 0);
}

static int payload_name(const struct tio *io, char out[STORE_NAME_MAX])
{
	if (io->plen == 0 || io->plen >= STORE_NAME_MAX)
		return -EINVAL;
	memcpy(out, io->payload, io->plen);
	out[io->plen] = 0;
	return 0;
}

static int local_members(struct store *s, const char *txt, uint32_t len)
{
	json_error_t jerr;
	json_t *j = json_loadb(txt, len, 0, &jerr);
	json_t *arr = json_object_get(j, "members"), *v;
	struct store_member m[STORE_MAX_MEMBERS];
	int r = -EINVAL;
	size_t i;
	if (!json_is_array(arr) || json_array_size(arr) > STORE_MAX_MEMBERS)
		goto out;
	memset(m, 0, sizeof(m));
	json_array_foreach(arr, i, v)
	{
		const char *n = json_string_value(json_object_get(v, "node"));
		if (!n || strlen(n) >= STORE_NAME_MAX)
			goto out;
		strcpy(m[i].node, n);
		m[i].in_sync = json_is_true(json_object_get(v, "in_sync"));
	}
	r = store_set_members(s, m, (uint32_t)json_array_size(arr),
			      (uint64_t)json_integer_value(json_object_get(j, "gen")));
out:
	json_decref(j);
	return r;
}

static int local_dirty_put(struct store *s, const uint8_t *p, uint32_t len)
{
	const uint8_t *nul = memchr(p, 0, len);
	if (!nul)
		return -EINVAL;
	json_error_t jerr;
	json_t *j = json_loadb((const char *)p, (size_t)(nul - p), 0, &jerr);
	const char *m = json_string_value(json_object_get(j, "member"));
	json_int_t g = json_integer_value(json_object_get(j, "grain"));
	int r = -EINVAL;
	if (m && g > 0)
		r = store_put_dirty(s, m, (uint32_t)g, nul + 1, len - (size_t)(nul - p) - 1);
	json_decref(j);
	return r;
}

static int local_dirty_get(struct tio *io, struct store *s)
{
	char name[STORE_NAME_MAX];
	uint32_t grain;
	uint8_t *bits = NULL;
	size_t n = 0;
	int r = payload_name(io, name);
	if (r == 0)
		r = store_get_dirty(s, name, &grain, &bits, &n);
	if (r < 0)
		return r;
	io->lpayload = malloc(4 + n);
	if (!io->lpayload) {
		free(bits);
		return -ENOMEM;
	}
	for (int i = 0; i < 4; i++)
		io->lpayload[i] = (uint8_t)(grain >> (8 * i));
	if (n)
		memcpy(io->lpayload + 4, bits, n);
	io->lplen = (uint32_t)(4 + n);
	free(bits);
	return 0;
}

static int local_hash(struct tio *io, struct store *s)
{
	if (!io->arg || !io->len)
		return -EINVAL;
	uint64_t n = io->len / io->arg + (io->len % io->arg != 0);
	uint64_t *h = malloc(n * 8);
	if (!h)
		return -ENOMEM;
	int r = store_hash(s, io->off, io->len, (uint32_t)io->arg, h);
	if (r < 0) {
		free(h);
		return r;
	}
	uint8_t *p = (uint8_t *)h;
	for (uint64_t i = 0; i < n; i++)
		proto_put_le64(p + i * 8,
			       h[i]); /* in place: entry i is read before it is written */
	io->lpayload = p;
	io->lplen = (uint32_t)(n * 8);
	return 0;
}

/* The local target runs the replica server's op semantics (server_ops.c) on the store. */
static void local_submit(struct tio *io)
{
	struct engine *e = io->t->e;
	struct store *s = io->t->store;
	char name[STORE_NAME_MAX];
	int r;
	io->lpayload = NULL;
	io->lplen = 0;
	io->fua_flushed = false;
	io->t->epoch = store_epoch(s);
	if (io->op != PROTO_OPEN && io->op != PROTO_INFO && store_epoch(s) != e->epoch) {
		r = -ESTALE;
		goto defer;
	}
	switch (io->op) {
	case PROTO_READ:
		r = store_read(s, io->off, (uint32_t)io->len, io->rbuf, local_cb, io);
		break;
	case PROTO_WRITE:
		r = store_write(s, io->off, (uint32_t)io->len, io->payload, local_cb, io);
		break;
	case PROTO_FLUSH:
	case PROTO_CLOSE:
		r = store_flush(s, local_cb, io);
		break;
	case PROTO_TRIM:
	case PROTO_ZERO:
		r = store_trim(s, io->off, io->len, io->op == PROTO_ZERO, local_cb, io);
		break;
	default:
		goto sync;
	}
	if (r >= 0)
		return;
	goto defer;
sync:
	switch (io->op) {
	case PROTO_OPEN:
		r = store_bump_epoch(s, e->epoch);
		if (r == 0)
			r = store_set_clean(s, false);
		if (r == 0)
			eng_local_hold(e);
		io->t->epoch = store_epoch(s);
		break;
	case PROTO_MEMBERS:
		r = local_members(s, io->payload, io->plen);
		break;
	case PROTO_DIRTY_PUT:
		r = local_dirty_put(s, io->payload, io->plen);
		break;
	case PROTO_DIRTY_GET:
		r = local_dirty_get(io, s);
		break;
	case PROTO_DIRTY_DROP:
		r = payload_name(io, name);
		if (r == 0)
			r = store_drop_dirty(s, name);
		break;
	case PROTO_SNAP_DELETE:
		r = payload_name(io, name);
		if (r == 0)
			r = store_snapshot_delete(s, name);
		break;
	case PROTO_HASH:
		r = local_hash(io, s);
		break;
	case PROTO_RESIZE:
		r = store_resize(s, io->arg);
		break;
	default: /* snapshot ops with payloads shared with the server: snapops.c */
		r = snapops_exec(e->local, s, io->op, io->off, io->len, io->arg, io->payload,
				 io->plen, &io->lpayload, &io->lplen);
	}
defer:
	tio_defer(io, r < 0 ? r : 0);
}

uint64_t tio_timeout(const struct engine *e, uint16_t op)
{
	return is_data_op(op) ? e->io_timeout_ms : eng_long_timeout(e);
}

void tio_submit(struct tio *io)
{
	struct target *t = io->t;
	struct engine *e = t->e;
	e->tios_pending++;
	io->listed = false;
	io->lpayload = NULL;
	io->lplen = 0;
	if (t->store) {
		local_submit(io);
		return;
	}
	if (!t->conn || !t->conn->rc) {
		tio_defer(io, -ENOTCONN);
		return;
	}
	struct proto_req req = {
	    .op = io->op,
	    .epoch = e->epoch,
	    .offset = io->off,
	    .length = io->len,
	    .flags = io->flags,
	    .payload_len = io->plen,
	    .arg = io->arg,
	};
	io->deadline = loop_now_ms() + tio_timeout(e, io->op);
	ifl_add(t, io);
	int r =
	    rclient_send(t->conn->rc, &req, io->payload, io->rbuf, io->rbuf_len, remote_reply, io);
	if (r < 0) {
		ifl_del(t, io);
		tio_defer(io, r);
	}
}

void tio_prep(struct tio *io, struct target *t, uint16_t op, tio_fn fn, void *ctx)
{
	memset(io, 0, sizeof(*io));
	io->t = t;
	io->op = op;
	io->fn = fn;
	io->ctx = ctx;
}

/* ---- guest I/O ---- */

void eio_list_add(struct eio_list *l, struct eio *io, int where)
{
	io->next = NULL;
	io->prev = l->tail;
	if (l->tail)
		l->tail->next = io;
	else
		l->head = io;
	l->tail = io;
	l->n++;
	io->where = where;
}

static void eio_list_push(struct eio_list *l, struct eio *io, int where)
{
	io->prev = NULL;
	io->next = l->head;
	if (l->head)
		l->head->prev = io;
	else
		l->tail = io;
	l->head = io;
	l->n++;
	io->where = where;
}

void eio_list_del(struct eio_list *l, struct eio *io)
{
	if (io->prev)
		io->prev->next = io->next;
	else
		l->head = io->next;
	if (io->next)
		io->next->prev = io->prev;
	else
		l->tail = io->prev;
	io->prev = io->next = NULL;
	l->n--;
	io->where = 0;
}

static void grains(uint64_t off, uint64_t len, uint64_t *first, uint64_t *count)
{
	*first = off / ENGINE_GRAIN;
	*count = len ? (off + len - 1) / ENGINE_GRAIN - *first + 1 : 0;
}

void eng_mark_written(struct engine *e, uint64_t off, uint64_t len)
{
	uint64_t f, c;
	grains(off, len, &f, &c);
	bitmap_set_range(&e->wr_cur, f, c);
}

void eng_mark_dirty(struct target *t, uint64_t off, uint64_t len)
{
	uint64_t f, c;
	grains(off, len, &f, &c);
	bitmap_set_range(&t->dirty, f, c);
	t->dirty_changed = true;
}

static bool overlaps(uint64_t a, uint64_t alen, uint64_t b, uint64_t blen)
{
	return a < b + blen && b < a + alen;
}

bool eng_write_overlaps(struct engine *e, uint64_t off, uint64_t len)
{
	for (struct eio *io = e->active.head; io; io = io->next)
		if (io->kind != EIO_READ && io->kind != EIO_FLUSH &&
		    overlaps(io->off, io->len, off, len))
			return true;
	return false;
}

bool eng_grain_locked(struct engine *e, uint64_t off, uint64_t len)
{
	if (!e->copies)
		return false;
	for (uint32_t i = 0; i < e->ntargets; i++)
		if (e->t[i]->rs && resync_range_busy(e->t[i], off, len))
			return true;
	return e->repair && repair_range_busy(e, off, len);
}

static void eio_cb_deferred(void *arg)
{
	struct eio *io = arg;
	io->cb(io->arg, io->res);
	free(io);
}

static void eio_finish(struct eio *io, int res)
{
	struct engine *e = io->e;
	if (io->where == 1)
		eio_list_del(&e->queue, io);
	else if (io->where == 2)
		eio_list_del(&e->active, io);
	else if (io->where == 3)
		eio_list_del(&e->barrier, io);
	io->res = res;
	/* bdev contract: never complete inside the submitting call. */
	if (e->submitting) {
		if (loop_defer(e->l, eio_cb_deferred, io) == 0)
			return;
	}
	eio_cb_deferred(io);
}

static void start_read(struct eio *io);

static void read_done(struct tio *tio, int res, const uint8_t *p, uint32_t len)
{
	(void)p;
	(void)len;
	struct eio *io = tio->ctx;
	struct engine *e = io->e;
	struct target *t = tio->t;
	if (e->dying)
		return;
	if (res == 0) {
		eio_finish(io, 0);
	} else if (res == -ESTALE) {
		eng_fence(e);
		eio_finish(io, -ESTALE);
	} else {
		eng_eject(t, res, "read failed");
		io->tried |= 1u << eng_tindex(e, t);
		eio_list_del(&e->active, io);
		start_read(io);
		return;
	}
	eng_kick(e);
}

static struct target *pick_read(struct engine *e, uint32_t tried)
{
	struct target *best = NULL;
	for (int pass = 0; pass < 2 && !best; pass++) {
		for (uint32_t i = 0; i < e->ntargets; i++) {
			struct target *t = e->t[i];
			if (tried & (1u << i) || t->state != T_INSYNC)
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

static void start_read(struct eio *io)
{
	struct engine *e = io->e;
	if (e->fenced) {
		eio_finish(io, -ESTALE);
		return;
	}
	struct target *t = pick_read(e, io->tried);
	if (!t) {
		if (eng_ninsync(e) == 0) {
			/* no replica to read from: wait for one like a write waits for quorum */
			io->deadline = loop_now_ms() + e->io_timeout_ms;
			eio_list_push(&e->queue, io, 1);
		} else {
			eio_finish(io, -EIO);
		}
		return;
	}
	eio_list_add(&e->active, io, 2);
	struct tio *tio = &io->tio[eng_tindex(e, t)];
	tio_prep(tio, t, PROTO_READ, read_done, io);
	tio->off = io->off;
	tio->len = io->len;
	tio->rbuf = io->rbuf;
	tio->rbuf_len = (uint32_t)io->len;
	tio_submit(tio);
}

static void persist_bitmaps_done(void *arg, int res);

static void write_all_done(struct eio *io)
{
	struct engine *e = io->e;
	eio_list_del(&e->active, io);
	if (io->fenced || e->fenced) {
		eio_finish(io, -ESTALE);
		eng_kick(e);
		return;
	}
	if (io->kind == EIO_FLUSH && --e->flushes == 0 && io->ok_insync >= eng_quorum(e))
		bitmap_clear_all(&e->wr_prev);
	if (io->ok_insync < eng_quorum(e)) {
		/* Too few in-sync replicas have it: retry once quorum is back (writes are
		 * idempotent), or fail when the deadline passes. */
		if (!io->deadline)
			io->deadline = loop_now_ms() + e->io_timeout_ms;
		if (loop_now_ms() >= io->deadline)
			eio_finish(io, -EIO);
		else
			eio_list_push(&e->queue, io, 1);
		eng_kick(e);
		return;
	}
	if (io->kind == EIO_FLUSH) {
		eio_list_add(&e->barrier, io, 3);
		io->need_gen = 0;
		io->deadline = 0;
		resync_persist_bitmaps(e, persist_bitmaps_done, io);
		eng_kick(e);
		return;
	}
	if (e->members_persisted < e->members_gen) {
		/* An ejection is not yet on disk: acknowledging now could let a crash
		 * resurrect the ejected replica as in sync. */
		io->need_gen = e->members_gen;
		io->deadline = loop_now_ms() + eng_long_timeout(e);
		eio_list_add(&e->barrier, io, 3);
		eng_kick(e);
		return;
	}
	eio_finish(io, 0);
	eng_kick(e);
}

static void persist_bitmaps_done(void *arg, int res)
{
	(void)res; /* best effort: a later flush or the close persists them again */
	struct eio *io = arg;
	struct engine *e = io->e;
	if (e->dying)
		return;
	io->need_gen = e->members_gen;
	io->deadline = loop_now_ms() + eng_long_timeout(e);
	eio_release_barrier(e);
}

static void write_done(struct tio *tio, int res, const uint8_t *p, uint32_t len)
{
	(void)p;
	(void)len;
	struct eio *io = tio->ctx;
	struct engine *e = io->e;
	struct target *t = tio->t;
	int i = eng_tindex(e, t);
	if (e->dying)
		return;
	if (res == 0) {
		if (io->in_sync_at[i] && t->state == T_INSYNC)
			io->ok_insync++;
	} else if (res == -ESTALE) {
		io->fenced = true;
		eng_fence(e);
	} else {
		if (io->kind != EIO_FLUSH)
			eng_mark_dirty(t, io->off, io->len);
		eng_eject(t, res, io->kind == EIO_FLUSH ? "flush failed" : "write failed");
	}
	if (--io->pending == 0)
		write_all_done(io);
}

static void start_write(struct eio *io)
{
	struct engine *e = io->e;
	uint16_t op = io->kind == EIO_WRITE   ? PROTO_WRITE
		      : io->kind == EIO_FLUSH ? PROTO_FLUSH
		      : io->zero	      ? PROTO_ZERO
					      : PROTO_TRIM;
	eio_list_add(&e->active, io, 2);
	io->ok_insync = 0;
	io->pending = 1;
	if (io->kind == EIO_FLUSH) {
		e->flushes++;
		bitmap_or(&e->wr_prev, &e->wr_cur);
		bitmap_clear_all(&e->wr_cur);
	} else {
		eng_mark_written(e, io->off, io->len);
	}
	for (uint32_t i = 0; i < e->ntargets; i++) {
		struct target *t = e->t[i];
		io->in_sync_at[i] = t->state == T_INSYNC;
		if (!eng_takes_writes(t)) {
			if (io->kind != EIO_FLUSH)
				eng_mark_dirty(t, io->off, io->len);
			continue;
		}
		struct tio *tio = &io->tio[i];
		tio_prep(tio, t, op, write_done, io);
		if (io->kind != EIO_FLUSH) {
			tio->off = io->off;
			tio->len = io->len;
		}
		if (io->kind == EIO_WRITE) {
			tio->payload = io->wbuf;
			tio->plen = (uint32_t)io->len;
			tio->flags = io->flags & BDEV_FUA ? PROTO_FLAG_FUA : 0;
		}
		io->pending++;
		tio_submit(tio);
	}
	if (--io->pending == 0)
		write_all_done(io);
}

void eio_release_barrier(struct engine *e)
{
	struct eio *io = e->barrier.head;
	while (io) {
		struct eio *next = io->next;
		if (io->need_gen && io->need_gen <= e->members_persisted)
			eio_finish(io, 0);
		else if (io->need_gen && e->fenced)
			eio_finish(io, -ESTALE);
		io = next;
	}
}

void eio_expire(struct engine *e, uint64_t now)
{
	for (struct eio *io = e->barrier.head, *next; io; io = next) {
		next = io->next;
		if (io->need_gen && io->deadline && now >= io->deadline)
			eio_finish(io, -EIO);
	}
	for (struct eio *io = e->queue.head, *next; io; io = next) {
		next = io->next;
		if (e->fenced)
			eio_finish(io, -ESTALE);
		else if (io->deadline && now >= io->deadline)
			eio_finish(io, -EIO);
	}
}

void eio_dispatch_queue(struct engine *e)
{
	while (e->queue.head && !e->dying) {
		struct eio *io = e->queue.head;
		if (e->fenced) {
			eio_finish(io, -ESTALE);
			continue;
		}
		if (e->qops)
			break;
		uint32_t need = io->kind == EIO_READ ? 1 : eng_quorum(e);
		if (eng_ninsync(e) < need) {
			uint64_t now = loop_now_ms();
			/* Everything queued waits for quorum from now, not one after another. */
			for (struct eio *q = io; q; q = q->next)
				if (!q->deadline)
					q->deadline = now + e->io_timeout_ms;
			if (now >= io->deadline) {
				eio_finish(io, -EIO);
				continue;
			}
			break;
		}
		if (io->kind != EIO_READ && e->hold_writes)
			break;
		if ((io->kind == EIO_WRITE || io->kind == EIO_TRIM) &&
		    eng_grain_locked(e, io->off, io->len))
			break;
		eio_list_del(&e->queue, io);
		if (io->kind == EIO_READ)
			start_read(io);
		else
			start_write(io);
	}
}

/* Large guest I/O is cut into pieces that each fit one replica request. */
struct split {
	bdev_cb cb;
	void *arg;
	int pending;
	int res;
};

static void split_done(void *arg, int res)
{
	struct split *s = arg;
	if (res < 0 && s->res == 0)
		s->res = res;
	if (--s->pending == 0) {
		s->cb(s->arg, s->res);
		free(s);
	}
}

static int submit(struct engine *e, enum eio_kind kind, uint64_t off, uint64_t len, void *rbuf,
		  const void *wbuf, uint32_t flags, bool zero, bdev_cb cb, void *arg)
{
	if (!e->open || e->closing)
		return -EIO;
	if (kind != EIO_FLUSH && (off > e->size || len > e->size - off))
		return -EINVAL;
	uint64_t piece = kind == EIO_TRIM || kind == EIO_FLUSH ? len : ENGINE_SPLIT;
	uint32_t n = piece ? (uint32_t)((len + piece - 1) / piece) : 1;
	if (n == 0)
		n = 1;
	struct split *s = NULL;
	if (n > 1) {
		s = calloc(1, sizeof(*s));
		if (!s)
			return -ENOMEM;
		s->cb = cb;
		s->arg = arg;
		s->pending = (int)n;
	}
	e->submitting++;
	for (uint32_t i = 0; i < n; i++) {
		uint64_t o = i * piece, l = n > 1 ? (len - o < piece ? len - o : piece) : len;
		struct eio *io = calloc(1, sizeof(*io));
		if (!io) {
			/* earlier pieces are queued; fail the rest through the split */
			for (; i < n; i++)
				split_done(s, -ENOMEM);
			break;
		}
		io->e = e;
		io->kind = kind;
		io->off = off + o;
		io->len = l;
		io->flags = flags;
		io->zero = zero;
		io->rbuf = rbuf ? (uint8_t *)rbuf + o : NULL;
		io->wbuf = wbuf ? (const uint8_t *)wbuf + o : NULL;
		io->cb = s ? split_done : cb;
		io->arg = s ? (void *)s : arg;
		eio_list_add(&e->queue, io, 1);
	}
	eio_dispatch_queue(e);
	e->submitting--;
	return 0;
}

static int b_read(void *ctx, uint64_t off, uint32_t len, void *buf, bdev_cb cb, void *arg)
{
	return submit(ctx, EIO_READ, off, len, buf, NULL, 0, false, cb, arg);
}

static int b_write(void *ctx, uint64_t off, uint32_t len, const void *buf, uint32_t flags,
		   bdev_cb cb, void *arg)
{
	return submit(ctx, EIO_WRITE, off, len, NULL, buf, flags, false, cb, arg);
}

static int b_flush(void *ctx, bdev_cb cb, void *arg)
{
	return submit(ctx, EIO_FLUSH, 0, 0, NULL, NULL, 0, false, cb, arg);
}

/* A FUA trim: the replica protocol has no FUA on TRIM, so a flush follows it. */
struct fua_trim {
	struct engine *e;
	bdev_cb cb;
	void *arg;
};

static void fua_trim_flushed(void *arg, int res)
{
	struct fua_trim *f = arg;
	f->cb(f->arg, res);
	free(f);
}

static void fua_trim_done(void *arg, int res)
{
	struct fua_trim *f = arg;
	if (res == 0)
		res = submit(f->e, EIO_FLUSH, 0, 0, NULL, NULL, 0, false, fua_trim_flushed, f);
	if (res != 0)
		fua_trim_flushed(f, res);
}

static int b_trim(void *ctx, uint64_t off, uint64_t len, bool zero, uint32_t flags, bdev_cb cb,
		  void *arg)
{
	if (!(flags & BDEV_FUA))
		return submit(ctx, EIO_TRIM, off, len, NULL, NULL, 0, zero, cb, arg);
	struct fua_trim *f = malloc(sizeof(*f));
	if (!f)
		return -ENOMEM;
	*f = (struct fua_trim){ctx, cb, arg};
	int r = submit(ctx, EIO_TRIM, off, len, NULL, NULL, 0, zero, fua_trim_done, f);
	if (r < 0)
		free(f);
	return r;
}

static uint64_t b_size(void *ctx)
{
	return engine_size(ctx);
}

const struct bdev_ops engine_bdev_ops = {
    .read = b_read,
    .write = b_write,
    .flush = b_flush,
    .trim = b_trim,
    .size = b_size,
};

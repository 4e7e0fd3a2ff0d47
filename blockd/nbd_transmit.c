/*
 * nbd_transmit: the transmission phase. Each request header becomes an nbd_req that is
 * checked, handed to the bdev and answered with a simple reply when the bdev calls back
 * (out of order). A request that is well framed but invalid gets an EINVAL reply (a WRITE's
 * payload is read and dropped); one that cannot be framed (bad magic, WRITE payload over
 * NBD_MAX_PAYLOAD) closes the connection.
 */
#include "blockd/nbd_priv.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

uint32_t nbd_errno(int res)
{
	switch (-res) {
	case 0:
		return 0;
	case EPERM:
	case EROFS:
	case EACCES:
		return NBD_EPERM;
	case ENOMEM:
		return NBD_ENOMEM;
	case EINVAL:
		return NBD_EINVAL;
	case ENOSPC:
	case EDQUOT:
		return NBD_ENOSPC;
	case EOVERFLOW:
		return NBD_EOVERFLOW;
	case ENOTSUP:
		return NBD_ENOTSUP;
	case ESHUTDOWN:
		return NBD_ESHUTDOWN;
	default:
		return NBD_EIO;
	}
}

bool nbd_tx_at_cap(const struct nbd_conn *c)
{
	return c->inflight >= NBD_MAX_INFLIGHT || c->inflight_bytes >= NBD_MAX_INFLIGHT_BYTES;
}

void nbd_req_cache_drop(struct nbd_conn *c)
{
	while (c->req_cache) {
		struct nbd_req *r = c->req_cache;
		c->req_cache = (struct nbd_req *)r->out.next;
		free(r);
	}
	c->nreq_cache = 0;
	while (c->nbuf_cache)
		free(c->buf_cache[--c->nbuf_cache]);
}

void nbd_req_free(struct nbd_req *r)
{
	struct nbd_conn *c = r->c;
	bool was_at_cap = nbd_tx_at_cap(c);
	c->inflight--;
	c->inflight_bytes -= r->bytes;
	/* A closed connection frees its caches and must not refill them. */
	if (r->buf && r->bytes <= NBD_SMALL_BUF && !c->closed && c->nbuf_cache < NBD_CACHE_MAX)
		c->buf_cache[c->nbuf_cache++] = r->buf;
	else
		free(r->buf);
	if (!c->closed && c->nreq_cache < NBD_CACHE_MAX) {
		r->out.next = (struct nbd_out *)c->req_cache;
		c->req_cache = r;
		c->nreq_cache++;
	} else {
		free(r);
	}
	/* Input paused at the cap resumes only from a kick: no socket event may come. */
	if (was_at_cap && !nbd_tx_at_cap(c))
		nbd_conn_kick(c);
}

static void req_out_free(struct nbd_out *o)
{
	nbd_req_free((struct nbd_req *)o);
}

static struct nbd_req *req_new(struct nbd_conn *c, uint32_t buflen)
{
	struct nbd_req *r = c->req_cache;
	if (r) {
		c->req_cache = (struct nbd_req *)r->out.next;
		c->nreq_cache--;
		memset(r, 0, sizeof(*r));
	} else if (!(r = calloc(1, sizeof(*r)))) {
		return NULL;
	}
	if (buflen && buflen <= NBD_SMALL_BUF && c->nbuf_cache) {
		r->buf = c->buf_cache[--c->nbuf_cache];
	} else if (buflen &&
		   posix_memalign((void **)&r->buf, 4096,
				  buflen <= NBD_SMALL_BUF ? NBD_SMALL_BUF : buflen) != 0) {
		free(r);
		return NULL;
	}
	r->c = c;
	r->type = nbd_get16(c->hdr + 6);
	r->flags = nbd_get16(c->hdr + 4);
	r->handle = nbd_get64(c->hdr + 8);
	r->off = nbd_get64(c->hdr + 16);
	r->len = nbd_get32(c->hdr + 24);
	r->bytes = buflen;
	r->out.free = req_out_free;
	c->inflight++;
	c->inflight_bytes += buflen;
	return r;
}

static void req_reply(struct nbd_req *r, int res)
{
	uint32_t err = nbd_errno(res);
	nbd_put32(r->reply, NBD_SIMPLE_REPLY_MAGIC);
	nbd_put32(r->reply + 4, err);
	nbd_put64(r->reply + 8, r->handle);
	r->out.p1 = r->reply;
	r->out.n1 = sizeof(r->reply);
	if (r->type == NBD_CMD_READ && err == 0) {
		r->out.p2 = r->buf;
		r->out.n2 = r->len;
	}
	nbd_conn_queue(r->c, &r->out);
}

/* Answers without touching the bdev; the caller keeps framing the stream. */
static void reply_now(struct nbd_conn *c, int res)
{
	struct nbd_req *r = req_new(c, 0);
	if (!r) {
		nbd_conn_close(c);
		return;
	}
	req_reply(r, res);
}

static void req_done(void *arg, int res)
{
	struct nbd_req *r = arg;
	struct nbd_conn *c = r->c;
	c->bdev_pending--;
	if (c->closed) {
		nbd_req_free(r);
		nbd_conn_maybe_free(c);
		return;
	}
	req_reply(r, res);
	nbd_conn_kick(c);
}

static void submit(struct nbd_req *r)
{
	struct nbd_conn *c = r->c;
	const struct bdev_ops *ops = c->bdev.ops;
	void *ctx = c->bdev.ctx;
	uint32_t fua = (r->flags & NBD_CMD_FLAG_FUA) ? BDEV_FUA : 0;
	int res;
	c->bdev_pending++;
	switch (r->type) {
	case NBD_CMD_READ:
		res = ops->read(ctx, r->off, r->len, r->buf, req_done, r);
		break;
	case NBD_CMD_WRITE:
		res = ops->write(ctx, r->off, r->len, r->buf, fua, req_done, r);
		break;
	case NBD_CMD_FLUSH:
		res = ops->flush(ctx, req_done, r);
		break;
	case NBD_CMD_TRIM:
		res = ops->trim(ctx, r->off, r->len, false, fua, req_done, r);
		break;
	case NBD_CMD_WRITE_ZEROES:
		res = ops->trim(ctx, r->off, r->len, true, fua, req_done, r);
		break;
	default:
		res = -EINVAL;
		break;
	}
	if (res < 0) {
		c->bdev_pending--;
		req_reply(r, res);
	}
}

static bool in_range(const struct nbd_conn *c, uint64_t off, uint32_t len)
{
	uint64_t size = c->bdev.ops->size(c->bdev.ctx);
	return off <= size && len <= size - off;
}

static void next_request(struct nbd_conn *c)
{
	nbd_conn_expect(c, NBD_RX_REQ_HDR, c->hdr, NBD_REQUEST_SIZE);
}

static void on_write_header(struct nbd_conn *c, uint64_t off, uint32_t len)
{
	if (len > NBD_MAX_PAYLOAD) {
		/* The payload cannot be skipped safely: the stream is lost. */
		nbd_conn_close(c);
		return;
	}
	if (len == 0 || !in_range(c, off, len)) {
		reply_now(c, -EINVAL);
		nbd_conn_expect(c, NBD_RX_DISCARD, NULL, len);
		return;
	}
	struct nbd_req *r = req_new(c, len);
	if (!r) {
		reply_now(c, -ENOMEM);
		nbd_conn_expect(c, NBD_RX_DISCARD, NULL, len);
		return;
	}
	c->cur = r;
	nbd_conn_expect(c, NBD_RX_REQ_PAYLOAD, r->buf, len);
}

static void on_header(struct nbd_conn *c)
{
	if (nbd_get32(c->hdr) != NBD_REQUEST_MAGIC) {
		nbd_conn_close(c);
		return;
	}
	uint16_t type = nbd_get16(c->hdr + 6);
	uint64_t off = nbd_get64(c->hdr + 16);
	uint32_t len = nbd_get32(c->hdr + 24);
	next_request(c);
	switch (type) {
	case NBD_CMD_WRITE:
		on_write_header(c, off, len);
		return;
	case NBD_CMD_DISC:
		c->draining = true;
		c->rx = NBD_RX_STOP;
		return;
	case NBD_CMD_READ:
		if (len == 0 || len > NBD_MAX_PAYLOAD || !in_range(c, off, len)) {
			reply_now(c, -EINVAL);
			return;
		}
		break;
	case NBD_CMD_FLUSH:
		break;
	case NBD_CMD_TRIM:
	case NBD_CMD_WRITE_ZEROES:
		/* No payload, so the READ/WRITE size cap does not apply: qemu and the
		 * kernel send discards far larger than the advertised maximum. */
		if (len == 0 || !in_range(c, off, len)) {
			reply_now(c, -EINVAL);
			return;
		}
		break;
	default:
		reply_now(c, -EINVAL);
		return;
	}
	struct nbd_req *r = req_new(c, type == NBD_CMD_READ ? len : 0);
	if (!r) {
		reply_now(c, -ENOMEM);
		return;
	}
	submit(r);
}

void nbd_tx_dispatch(struct nbd_conn *c)
{
	switch (c->rx) {
	case NBD_RX_REQ_HDR:
		on_header(c);
		return;
	case NBD_RX_REQ_PAYLOAD: {
		struct nbd_req *r = c->cur;
		c->cur = NULL;
		next_request(c);
		submit(r);
		return;
	}
	case NBD_RX_DISCARD:
		next_request(c);
		return;
	default:
		return;
	}
}

/*
 * nbd_handshake: the fixed newstyle negotiation. Greeting, client flags, then options until
 * EXPORT_NAME or GO moves the connection to transmission (nbd_transmit.c). Anything that
 * cannot be framed (bad magic, unknown client flags, option longer than NBD_MAX_OPTION)
 * closes the connection; well-framed but unsupported options get an error reply.
 */
#include "blockd/nbd_priv.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#define NBD_TFLAGS                                                                                 \
	(NBD_FLAG_HAS_FLAGS | NBD_FLAG_SEND_FLUSH | NBD_FLAG_SEND_FUA | NBD_FLAG_SEND_TRIM |       \
	 NBD_FLAG_SEND_WRITE_ZEROES)

static void opt_reply(struct nbd_conn *c, uint32_t type, const void *data, size_t len)
{
	uint8_t h[NBD_OPT_REPLY_HDR_SIZE];
	nbd_put64(h, NBD_OPT_REPLY_MAGIC);
	nbd_put32(h + 8, c->opt);
	nbd_put32(h + 12, type);
	nbd_put32(h + 16, (uint32_t)len);
	nbd_conn_send_copy(c, h, sizeof(h), data, len);
}

static void opt_error(struct nbd_conn *c, uint32_t type, const char *msg)
{
	opt_reply(c, type, msg, strlen(msg));
}

void nbd_hs_start(struct nbd_conn *c)
{
	uint8_t g[18];
	nbd_put64(g, NBD_MAGIC);
	nbd_put64(g + 8, NBD_IHAVEOPT);
	nbd_put16(g + 16, NBD_FLAG_FIXED_NEWSTYLE | NBD_FLAG_NO_ZEROES);
	nbd_conn_send_copy(c, g, sizeof(g), NULL, 0);
	nbd_conn_expect(c, NBD_RX_CLIENT_FLAGS, c->hdr, 4);
}

static int attach(struct nbd_conn *c, const char *name, const struct bdev *b)
{
	c->export_name = strdup(name);
	if (!c->export_name) {
		if (c->exports.release)
			c->exports.release(c->exports.arg, name);
		nbd_conn_close(c);
		return -ENOMEM;
	}
	c->bdev = *b;
	c->attached = true;
	c->tflags = NBD_TFLAGS;
	return 0;
}

static void enter_transmission(struct nbd_conn *c)
{
	nbd_conn_negotiated(c);
	nbd_conn_expect(c, NBD_RX_REQ_HDR, c->hdr, NBD_REQUEST_SIZE);
}

static void opt_export_name(struct nbd_conn *c, const char *name)
{
	struct bdev b;
	/* The protocol has no error reply for EXPORT_NAME: closing is the answer. */
	if (c->exports.lookup(c->exports.arg, name, &b) < 0) {
		nbd_conn_close(c);
		return;
	}
	if (attach(c, name, &b) < 0)
		return;
	uint8_t r[10 + 124];
	memset(r, 0, sizeof(r));
	nbd_put64(r, b.ops->size(b.ctx));
	nbd_put16(r + 8, c->tflags);
	nbd_conn_send_copy(c, r, c->no_zeroes ? 10 : sizeof(r), NULL, 0);
	enter_transmission(c);
}

struct list_ctx {
	struct nbd_conn *c;
};

static void list_one(void *arg, const char *name)
{
	struct list_ctx *lc = arg;
	size_t n = strlen(name);
	if (n > NBD_MAX_OPTION)
		return;
	uint8_t *d = malloc(4 + n);
	if (!d) {
		nbd_conn_close(lc->c);
		return;
	}
	nbd_put32(d, (uint32_t)n);
	memcpy(d + 4, name, n);
	opt_reply(lc->c, NBD_REP_SERVER, d, 4 + n);
	free(d);
}

static void opt_list(struct nbd_conn *c, uint32_t len)
{
	if (len != 0) {
		opt_error(c, NBD_REP_ERR_INVALID, "LIST takes no data");
		return;
	}
	struct list_ctx lc = {c};
	if (c->exports.list)
		c->exports.list(c->exports.arg, list_one, &lc);
	opt_reply(c, NBD_REP_ACK, NULL, 0);
}

static void opt_info_go(struct nbd_conn *c, const uint8_t *d, uint32_t len)
{
	if (len < 6) {
		opt_error(c, NBD_REP_ERR_INVALID, "option too short");
		return;
	}
	uint32_t nlen = nbd_get32(d);
	if (nlen > len - 6) {
		opt_error(c, NBD_REP_ERR_INVALID, "name length past option end");
		return;
	}
	uint16_t nreq = nbd_get16(d + 4 + nlen);
	if ((uint64_t)6 + nlen + 2ull * nreq != len) {
		opt_error(c, NBD_REP_ERR_INVALID, "bad information request count");
		return;
	}
	char *name = malloc(nlen + 1);
	if (!name) {
		nbd_conn_close(c);
		return;
	}
	memcpy(name, d + 4, nlen);
	name[nlen] = 0;
	if (strlen(name) != nlen) {
		opt_error(c, NBD_REP_ERR_INVALID, "NUL in export name");
		free(name);
		return;
	}
	bool want_name = false, want_bs = false;
	for (uint16_t i = 0; i < nreq; i++) {
		uint16_t t = nbd_get16(d + 6 + nlen + 2 * i);
		want_name |= t == NBD_INFO_NAME;
		want_bs |= t == NBD_INFO_BLOCK_SIZE;
	}
	struct bdev b;
	int r = c->exports.lookup(c->exports.arg, name, &b);
	if (r < 0) {
		if (r == -ESHUTDOWN)
			opt_error(c, NBD_REP_ERR_SHUTDOWN, "export is shutting down");
		else if (r == -ENOENT)
			opt_error(c, NBD_REP_ERR_UNKNOWN, "no such export");
		else
			opt_error(c, NBD_REP_ERR_PLATFORM, "export unavailable");
		free(name);
		return;
	}
	uint8_t info[14];
	nbd_put16(info, NBD_INFO_EXPORT);
	nbd_put64(info + 2, b.ops->size(b.ctx));
	nbd_put16(info + 10, NBD_TFLAGS);
	opt_reply(c, NBD_REP_INFO, info, 12);
	if (want_name) {
		uint8_t *t = malloc(2 + (size_t)nlen);
		if (!t) {
			if (c->exports.release)
				c->exports.release(c->exports.arg, name);
			free(name);
			nbd_conn_close(c);
			return;
		}
		nbd_put16(t, NBD_INFO_NAME);
		memcpy(t + 2, name, nlen);
		opt_reply(c, NBD_REP_INFO, t, 2 + (size_t)nlen);
		free(t);
	}
	if (want_bs) {
		nbd_put16(info, NBD_INFO_BLOCK_SIZE);
		nbd_put32(info + 2, 1);
		nbd_put32(info + 6, NBD_PREF_BLOCK);
		nbd_put32(info + 10, NBD_MAX_PAYLOAD);
		opt_reply(c, NBD_REP_INFO, info, 14);
	}
	opt_reply(c, NBD_REP_ACK, NULL, 0);
	if (c->opt == NBD_OPT_INFO) {
		if (c->exports.release)
			c->exports.release(c->exports.arg, name);
	} else if (attach(c, name, &b) == 0) {
		enter_transmission(c);
	}
	free(name);
}

static void do_option(struct nbd_conn *c, uint8_t *d, uint32_t len)
{
	switch (c->opt) {
	case NBD_OPT_EXPORT_NAME:
		d[len] = 0;
		if (strlen((char *)d) != len)
			nbd_conn_close(c);
		else
			opt_export_name(c, (char *)d);
		break;
	case NBD_OPT_ABORT:
		opt_reply(c, NBD_REP_ACK, NULL, 0);
		c->close_after_tx = true;
		c->rx = NBD_RX_STOP;
		break;
	case NBD_OPT_LIST:
		opt_list(c, len);
		break;
	case NBD_OPT_INFO:
	case NBD_OPT_GO:
		opt_info_go(c, d, len);
		break;
	case NBD_OPT_STRUCTURED_REPLY:
		opt_error(c, NBD_REP_ERR_UNSUP, "only simple replies");
		break;
	default:
		opt_error(c, NBD_REP_ERR_UNSUP, "unsupported option");
		break;
	}
}

void nbd_hs_dispatch(struct nbd_conn *c)
{
	switch (c->rx) {
	case NBD_RX_CLIENT_FLAGS: {
		uint32_t f = nbd_get32(c->hdr);
		if (f & ~(NBD_FLAG_C_FIXED_NEWSTYLE | NBD_FLAG_C_NO_ZEROES)) {
			nbd_conn_close(c);
			return;
		}
		c->no_zeroes = f & NBD_FLAG_C_NO_ZEROES;
		nbd_conn_expect(c, NBD_RX_OPT_HDR, c->hdr, NBD_OPT_HDR_SIZE);
		return;
	}
	case NBD_RX_OPT_HDR: {
		uint32_t len = nbd_get32(c->hdr + 12);
		if (nbd_get64(c->hdr) != NBD_IHAVEOPT || len > NBD_MAX_OPTION) {
			nbd_conn_close(c);
			return;
		}
		c->opt = nbd_get32(c->hdr + 8);
		c->optbuf = malloc(len + 1);
		if (!c->optbuf) {
			nbd_conn_close(c);
			return;
		}
		nbd_conn_expect(c, NBD_RX_OPT_DATA, c->optbuf, len);
		return;
	}
	case NBD_RX_OPT_DATA: {
		uint8_t *d = c->optbuf;
		uint32_t len = (uint32_t)c->need;
		c->optbuf = NULL;
		/* Default next state; EXPORT_NAME, GO and ABORT override it. */
		nbd_conn_expect(c, NBD_RX_OPT_HDR, c->hdr, NBD_OPT_HDR_SIZE);
		do_option(c, d, len);
		free(d);
		return;
	}
	default:
		return;
	}
}

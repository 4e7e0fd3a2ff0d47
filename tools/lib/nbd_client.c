/* nbd_client: blocking NBD client. See nbd_client.h. */
#include "tools/lib/nbd_client.h"

#include <errno.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <sys/uio.h>
#include <unistd.h>

#include "blockd/nbd_proto.h"

struct nbd_client {
	int fd;
	uint64_t size;
	uint16_t tflags;
	uint32_t max_block; /* largest READ/WRITE the server accepts */
	bool no_zeroes;
	bool broken;
	uint32_t timeout_ms;
	uint64_t next_handle;
	uint32_t inflight;
	struct nbd_client_req *pending;
	char err[256];
};

static int fail(struct nbd_client *c, int r, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(c->err, sizeof(c->err), fmt, ap);
	va_end(ap);
	return r;
}

/* A transport failure: the stream can no longer be trusted. */
static int broken(struct nbd_client *c, int r, const char *what)
{
	c->broken = true;
	if (r == -EAGAIN)
		r = -ETIMEDOUT;
	return fail(c, r, "%s: %s", what, r == -EPIPE ? "connection closed" : strerror(-r));
}

static int err_from_nbd(uint32_t e)
{
	switch (e) {
	case NBD_EPERM:
		return -EPERM;
	case NBD_EIO:
		return -EIO;
	case NBD_ENOMEM:
		return -ENOMEM;
	case NBD_EINVAL:
		return -EINVAL;
	case NBD_ENOSPC:
		return -ENOSPC;
	case NBD_EOVERFLOW:
		return -EOVERFLOW;
	case NBD_ENOTSUP:
		return -ENOTSUP;
	case NBD_ESHUTDOWN:
		return -ESHUTDOWN;
	default:
		return -EIO;
	}
}

static int read_full(struct nbd_client *c, void *buf, size_t n)
{
	uint8_t *p = buf;
	while (n) {
		ssize_t r = recv(c->fd, p, n, 0);
		if (r < 0 && errno == EINTR)
			continue;
		if (r < 0)
			return -errno;
		if (r == 0)
			return -EPIPE;
		p += r;
		n -= (size_t)r;
	}
	return 0;
}

static int write_iov(struct nbd_client *c, struct iovec *iov, int cnt)
{
	while (cnt) {
		struct msghdr msg = {.msg_iov = iov, .msg_iovlen = (size_t)cnt};
		ssize_t w = sendmsg(c->fd, &msg, MSG_NOSIGNAL);
		if (w < 0 && errno == EINTR)
			continue;
		if (w < 0)
			return -errno;
		size_t left = (size_t)w;
		while (cnt && left >= iov->iov_len) {
			left -= iov->iov_len;
			iov++;
			cnt--;
		}
		if (cnt) {
			iov->iov_base = (uint8_t *)iov->iov_base + left;
			iov->iov_len -= left;
		}
	}
	return 0;
}

static int write_full(struct nbd_client *c, const void *buf, size_t n)
{
	struct iovec iov = {(void *)buf, n};
	return write_iov(c, &iov, 1);
}

int nbd_client_parse_url(const char *url, char *host, uint16_t *port, char *export)
{
	const char *p = url;
	if (strncmp(p, "nbd://", 6) != 0)
		return -EINVAL;
	p += 6;
	const char *hend;
	const char *rest;
	if (*p == '[') {
		hend = strchr(p, ']');
		if (!hend)
			return -EINVAL;
		p++;
		rest = hend + 1;
	} else {
		hend = p + strcspn(p, ":/");
		rest = hend;
	}
	size_t hl = (size_t)(hend - p);
	if (hl == 0 || hl >= NBD_CLIENT_URL_MAX)
		return -EINVAL;
	memcpy(host, p, hl);
	host[hl] = 0;
	*port = NBD_DEFAULT_PORT;
	if (*rest == ':') {
		char *end;
		unsigned long v = strtoul(rest + 1, &end, 10);
		if (end == rest + 1 || v == 0 || v > 65535)
			return -EINVAL;
		*port = (uint16_t)v;
		rest = end;
	}
	if (*rest == '/')
		rest++;
	else if (*rest)
		return -EINVAL;
	if (strlen(rest) >= NBD_CLIENT_URL_MAX)
		return -EINVAL;
	strcpy(export, rest);
	return 0;
}

int nbd_client_new(struct nbd_client **out)
{
	struct nbd_client *c = calloc(1, sizeof(*c));
	if (!c)
		return -ENOMEM;
	c->fd = -1;
	c->next_handle = 1;
	*out = c;
	return 0;
}

const char *nbd_client_error(const struct nbd_client *c)
{
	return c->err[0] ? c->err : "no error";
}

static void apply_timeout(struct nbd_client *c)
{
	if (c->fd < 0)
		return;
	struct timeval tv = {.tv_sec = c->timeout_ms / 1000,
			     .tv_usec = (suseconds_t)(c->timeout_ms % 1000) * 1000};
	setsockopt(c->fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
	setsockopt(c->fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
}

void nbd_client_set_timeout(struct nbd_client *c, uint32_t ms)
{
	c->timeout_ms = ms;
	apply_timeout(c);
}

uint64_t nbd_client_size(const struct nbd_client *c)
{
	return c->size;
}

uint32_t nbd_client_inflight(const struct nbd_client *c)
{
	return c->inflight;
}

static int tcp_connect(struct nbd_client *c, const char *host, uint16_t port)
{
	struct addrinfo hints = {
	    .ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM, .ai_flags = AI_NUMERICSERV};
	struct addrinfo *res;
	char ps[8];
	snprintf(ps, sizeof(ps), "%u", port);
	int r = getaddrinfo(host, ps, &hints, &res);
	if (r != 0)
		return fail(c, -EHOSTUNREACH, "resolve %s: %s", host, gai_strerror(r));
	r = -ECONNREFUSED;
	for (struct addrinfo *ai = res; ai; ai = ai->ai_next) {
		int fd = socket(ai->ai_family, ai->ai_socktype | SOCK_CLOEXEC, 0);
		if (fd < 0) {
			r = -errno;
			continue;
		}
		if (connect(fd, ai->ai_addr, ai->ai_addrlen) < 0) {
			r = -errno;
			close(fd);
			continue;
		}
		int one = 1;
		setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
		c->fd = fd;
		r = 0;
		break;
	}
	freeaddrinfo(res);
	if (r < 0)
		return fail(c, r, "connect %s:%u: %s", host, port, strerror(-r));
	apply_timeout(c);
	return 0;
}

static int send_option(struct nbd_client *c, uint32_t opt, const void *data, uint32_t len)
{
	uint8_t h[NBD_OPT_HDR_SIZE];
	nbd_put64(h, NBD_IHAVEOPT);
	nbd_put32(h + 8, opt);
	nbd_put32(h + 12, len);
	struct iovec iov[2] = {{h, sizeof(h)}, {(void *)data, len}};
	int r = write_iov(c, iov, len ? 2 : 1);
	return r < 0 ? broken(c, r, "send option") : 0;
}

/* Reads one option reply; data (up to NBD_MAX_OPTION) goes to buf, its length to *len. */
static int read_opt_reply(struct nbd_client *c, uint32_t opt, uint32_t *type, uint8_t *buf,
			  uint32_t *len)
{
	uint8_t h[NBD_OPT_REPLY_HDR_SIZE];
	int r = read_full(c, h, sizeof(h));
	if (r < 0)
		return broken(c, r, "read option reply");
	if (nbd_get64(h) != NBD_OPT_REPLY_MAGIC || nbd_get32(h + 8) != opt)
		return broken(c, -EPROTO, "bad option reply");
	*type = nbd_get32(h + 12);
	*len = nbd_get32(h + 16);
	if (*len > NBD_MAX_OPTION)
		return broken(c, -EPROTO, "option reply too long");
	r = read_full(c, buf, *len);
	if (r < 0)
		return broken(c, r, "read option reply");
	return 0;
}

/* 1: the server does not know GO (use EXPORT_NAME). */
static int do_go(struct nbd_client *c, const char *export)
{
	size_t nl = strlen(export);
	uint8_t *d = malloc(4 + nl + 4);
	uint8_t *buf = malloc(NBD_MAX_OPTION + 1);
	int r = -ENOMEM;
	if (!d || !buf) {
		fail(c, r, "out of memory");
		goto out;
	}
	nbd_put32(d, (uint32_t)nl);
	memcpy(d + 4, export, nl);
	nbd_put16(d + 4 + nl, 1);
	nbd_put16(d + 6 + nl, NBD_INFO_BLOCK_SIZE);
	r = send_option(c, NBD_OPT_GO, d, (uint32_t)(nl + 8));
	bool have_size = false;
	while (r == 0) {
		uint32_t type = 0, len = 0;
		r = read_opt_reply(c, NBD_OPT_GO, &type, buf, &len);
		if (r < 0)
			break;
		if (type == NBD_REP_ACK) {
			if (!have_size)
				r = broken(c, -EPROTO, "GO acknowledged without export size");
			break;
		}
		if (type == NBD_REP_INFO) {
			if (len >= 14 && nbd_get16(buf) == NBD_INFO_BLOCK_SIZE) {
				uint32_t max = nbd_get32(buf + 10);
				if (max >= 512 && max < c->max_block)
					c->max_block = max;
			}
			if (len >= 12 && nbd_get16(buf) == NBD_INFO_EXPORT) {
				c->size = nbd_get64(buf + 2);
				c->tflags = nbd_get16(buf + 10);
				have_size = true;
			}
			continue;
		}
		if (type == NBD_REP_ERR_UNSUP) {
			r = 1;
			break;
		}
		buf[len] = 0;
		if (type == NBD_REP_ERR_UNKNOWN)
			r = fail(c, -ENOENT, "export '%s' not found: %s", export, (char *)buf);
		else if (type & NBD_REP_FLAG_ERROR)
			r = fail(c, -EIO, "export '%s': server error 0x%x: %s", export, type,
				 (char *)buf);
		/* Other reply types are informational: skip them. */
	}
out:
	free(d);
	free(buf);
	return r;
}

static int do_export_name(struct nbd_client *c, const char *export)
{
	int r = send_option(c, NBD_OPT_EXPORT_NAME, export, (uint32_t)strlen(export));
	if (r < 0)
		return r;
	uint8_t b[10 + 124];
	r = read_full(c, b, c->no_zeroes ? 10 : sizeof(b));
	if (r == -EPIPE) {
		c->broken = true;
		return fail(c, -ENOENT, "export '%s' refused by server", export);
	}
	if (r < 0)
		return broken(c, r, "read export info");
	c->size = nbd_get64(b);
	c->tflags = nbd_get16(b + 8);
	return 0;
}

int nbd_client_connect(struct nbd_client *c, const char *host, uint16_t port, const char *export)
{
	if (c->fd >= 0)
		return fail(c, -EISCONN, "already connected");
	c->broken = false;
	c->err[0] = 0;
	c->max_block = NBD_MAX_PAYLOAD;
	if (strlen(export) > 4096)
		return fail(c, -ENAMETOOLONG, "export name too long");
	int r = tcp_connect(c, host, port);
	if (r < 0)
		return r;
	uint8_t g[18];
	r = read_full(c, g, sizeof(g));
	if (r < 0) {
		r = broken(c, r, "read greeting");
		goto fail;
	}
	if (nbd_get64(g) != NBD_MAGIC || nbd_get64(g + 8) != NBD_IHAVEOPT) {
		r = broken(c, -EPROTO, "not a newstyle NBD server");
		goto fail;
	}
	uint16_t sflags = nbd_get16(g + 16);
	bool fixed = sflags & NBD_FLAG_FIXED_NEWSTYLE;
	c->no_zeroes = sflags & NBD_FLAG_NO_ZEROES;
	uint8_t cf[4];
	nbd_put32(cf, (fixed ? NBD_FLAG_C_FIXED_NEWSTYLE : 0) |
			  (c->no_zeroes ? NBD_FLAG_C_NO_ZEROES : 0));
	r = write_full(c, cf, sizeof(cf));
	if (r < 0) {
		r = broken(c, r, "send client flags");
		goto fail;
	}
	r = fixed ? do_go(c, export) : 1;
	if (r == 1)
		r = do_export_name(c, export);
	if (r < 0)
		goto fail;
	return 0;
fail:
	close(c->fd);
	c->fd = -1;
	return r;
}

int nbd_client_connect_url(struct nbd_client *c, const char *url)
{
	char host[NBD_CLIENT_URL_MAX], export[NBD_CLIENT_URL_MAX];
	uint16_t port;
	if (nbd_client_parse_url(url, host, &port, export) < 0)
		return fail(c, -EINVAL, "bad NBD URL '%s' (want nbd://host[:port]/export)", url);
	return nbd_client_connect(c, host, port, export);
}

static int send_request(struct nbd_client *c, uint16_t type, uint16_t flags, uint64_t handle,
			uint64_t off, uint32_t len, const void *payload)
{
	uint8_t h[NBD_REQUEST_SIZE];
	nbd_put32(h, NBD_REQUEST_MAGIC);
	nbd_put16(h + 4, flags);
	nbd_put16(h + 6, type);
	nbd_put64(h + 8, handle);
	nbd_put64(h + 16, off);
	nbd_put32(h + 24, len);
	struct iovec iov[2] = {{h, sizeof(h)}, {(void *)payload, payload ? len : 0}};
	int r = write_iov(c, iov, payload ? 2 : 1);
	return r < 0 ? broken(c, r, "send request") : 0;
}

int nbd_client_submit(struct nbd_client *c, struct nbd_client_req *r)
{
	static const uint16_t types[] = {
	    [NBD_CLIENT_READ] = NBD_CMD_READ,	      [NBD_CLIENT_WRITE] = NBD_CMD_WRITE,
	    [NBD_CLIENT_FLUSH] = NBD_CMD_FLUSH,	      [NBD_CLIENT_TRIM] = NBD_CMD_TRIM,
	    [NBD_CLIENT_ZERO] = NBD_CMD_WRITE_ZEROES,
	};
	if (c->fd < 0 || c->broken)
		return fail(c, -ENOTCONN, "not connected");
	if ((unsigned)r->op > NBD_CLIENT_ZERO)
		return fail(c, -EINVAL, "bad request op");
	if ((r->op == NBD_CLIENT_READ || r->op == NBD_CLIENT_WRITE) && r->len > c->max_block)
		return fail(c, -EINVAL, "request of %u bytes over the server's maximum %u", r->len,
			    c->max_block);
	uint16_t flags = (r->flags & NBD_CLIENT_FUA) ? NBD_CMD_FLAG_FUA : 0;
	r->handle = c->next_handle++;
	r->result = 0;
	int e = send_request(
	    c, types[r->op], flags, r->handle, r->op == NBD_CLIENT_FLUSH ? 0 : r->off,
	    r->op == NBD_CLIENT_FLUSH ? 0 : r->len, r->op == NBD_CLIENT_WRITE ? r->buf : NULL);
	if (e < 0)
		return e;
	r->next = c->pending;
	c->pending = r;
	c->inflight++;
	return 0;
}

int nbd_client_collect(struct nbd_client *c, struct nbd_client_req **done)
{
	if (c->fd < 0 || c->broken)
		return fail(c, -ENOTCONN, "not connected");
	if (!c->pending)
		return fail(c, -ENOENT, "nothing in flight");
	uint8_t h[NBD_SIMPLE_REPLY_SIZE];
	int e = read_full(c, h, sizeof(h));
	if (e < 0)
		return broken(c, e, "read reply");
	if (nbd_get32(h) != NBD_SIMPLE_REPLY_MAGIC)
		return broken(c, -EPROTO, "bad reply magic");
	uint64_t handle = nbd_get64(h + 8);
	struct nbd_client_req **pp = &c->pending;
	while (*pp && (*pp)->handle != handle)
		pp = &(*pp)->next;
	if (!*pp)
		return broken(c, -EPROTO, "reply for an unknown handle");
	struct nbd_client_req *r = *pp;
	*pp = r->next;
	c->inflight--;
	uint32_t err = nbd_get32(h + 4);
	r->result = err ? err_from_nbd(err) : 0;
	if (!err && r->op == NBD_CLIENT_READ) {
		e = read_full(c, r->buf, r->len);
		if (e < 0)
			return broken(c, e, "read data");
	}
	if (err)
		fail(c, r->result, "server error: %s", strerror(-r->result));
	*done = r;
	return 0;
}

static int sync_io(struct nbd_client *c, enum nbd_client_op op, void *buf, uint32_t len,
		   uint64_t off, uint32_t flags)
{
	if (c->pending)
		return fail(c, -EBUSY, "pipelined requests outstanding");
	struct nbd_client_req r = {.op = op, .flags = flags, .off = off, .len = len, .buf = buf};
	struct nbd_client_req *done;
	int e = nbd_client_submit(c, &r);
	if (e == 0)
		e = nbd_client_collect(c, &done);
	return e < 0 ? e : r.result;
}

int nbd_client_pread(struct nbd_client *c, void *buf, uint32_t len, uint64_t off)
{
	return sync_io(c, NBD_CLIENT_READ, buf, len, off, 0);
}

int nbd_client_pwrite(struct nbd_client *c, const void *buf, uint32_t len, uint64_t off,
		      uint32_t flags)
{
	return sync_io(c, NBD_CLIENT_WRITE, (void *)buf, len, off, flags);
}

int nbd_client_flush(struct nbd_client *c)
{
	return sync_io(c, NBD_CLIENT_FLUSH, NULL, 0, 0, 0);
}

int nbd_client_trim(struct nbd_client *c, uint64_t off, uint32_t len)
{
	return sync_io(c, NBD_CLIENT_TRIM, NULL, len, off, 0);
}

int nbd_client_zero(struct nbd_client *c, uint64_t off, uint32_t len, uint32_t flags)
{
	return sync_io(c, NBD_CLIENT_ZERO, NULL, len, off, flags);
}

int nbd_client_disconnect(struct nbd_client *c)
{
	if (c->fd < 0)
		return 0;
	int r = 0;
	if (!c->broken)
		r = send_request(c, NBD_CMD_DISC, 0, c->next_handle++, 0, 0, NULL);
	shutdown(c->fd, SHUT_RDWR);
	close(c->fd);
	c->fd = -1;
	c->pending = NULL;
	c->inflight = 0;
	return r;
}

void nbd_client_free(struct nbd_client *c)
{
	if (!c)
		return;
	nbd_client_disconnect(c);
	free(c);
}

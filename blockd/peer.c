/*
 * peer: parallel HTTP/1.0 requests over non-blocking sockets and one poll() loop (see peer.h).
 * HTTP/1.0 makes the server close the connection after the body, so the body is simply
 * everything after the headers.
 */
#include "blockd/peer.h"

#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <poll.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

/* Control replies are small; anything bigger is not a blockd talking. */
#define PEER_MAX_REPLY (8u << 20)

/* P_DONE is 0 so that a zeroed connection owns no socket. */
enum pstate { P_DONE, P_CONNECTING, P_READING };

struct pconn {
	int fd;
	char req[512];
	size_t reqlen;
	enum pstate st;
	char *buf;
	size_t len, cap;
};

static int64_t now_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static int start_connect(const char *host, uint16_t port, int *fdout)
{
	char ports[8];
	snprintf(ports, sizeof(ports), "%u", port);
	/* IPv4 first, as every blockd listener resolves its host: "localhost" must name the
	 * same socket on both ends. */
	struct addrinfo hints = {.ai_family = AF_INET, .ai_socktype = SOCK_STREAM};
	struct addrinfo *ai;
	if (getaddrinfo(host, ports, &hints, &ai)) {
		hints.ai_family = AF_UNSPEC;
		if (getaddrinfo(host, ports, &hints, &ai))
			return -EHOSTUNREACH;
	}
	int fd = socket(ai->ai_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (fd < 0) {
		int e = -errno;
		freeaddrinfo(ai);
		return e;
	}
	int r = connect(fd, ai->ai_addr, ai->ai_addrlen);
	freeaddrinfo(ai);
	if (r && errno != EINPROGRESS) {
		int e = -errno;
		close(fd);
		return e;
	}
	*fdout = fd;
	return 0;
}

static void finish(struct peer_get *p, struct pconn *c, int err)
{
	close(c->fd);
	c->fd = -1;
	c->st = P_DONE;
	p->err = err;
	if (err)
		return;
	int status;
	if (c->len < 12 || sscanf(c->buf, "HTTP/1.%*1[01] %3d", &status) != 1) {
		p->err = -EPROTO;
		return;
	}
	char *body = memmem(c->buf, c->len, "\r\n\r\n", 4);
	if (!body) {
		p->err = -EPROTO;
		return;
	}
	body += 4;
	p->status = status;
	p->reply = json_loadb(body, c->len - (size_t)(body - c->buf), JSON_DECODE_ANY, NULL);
}

static void on_writable(struct peer_get *p, struct pconn *c)
{
	int soerr = 0;
	socklen_t sl = sizeof(soerr);
	if (getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &soerr, &sl) || soerr) {
		finish(p, c, soerr ? -soerr : -errno);
		return;
	}
	/* A request this small fits in any fresh socket's send buffer. */
	ssize_t w = send(c->fd, c->req, c->reqlen, MSG_NOSIGNAL);
	if (w != (ssize_t)c->reqlen) {
		finish(p, c, w < 0 ? -errno : -EIO);
		return;
	}
	c->st = P_READING;
}

static void on_readable(struct peer_get *p, struct pconn *c)
{
	if (c->cap - c->len < 4096) {
		size_t cap = c->cap ? c->cap * 2 : 16384;
		if (cap > PEER_MAX_REPLY) {
			finish(p, c, -EFBIG);
			return;
		}
		char *nb = realloc(c->buf, cap + 1);
		if (!nb) {
			finish(p, c, -ENOMEM);
			return;
		}
		c->buf = nb;
		c->cap = cap;
	}
	ssize_t r = recv(c->fd, c->buf + c->len, c->cap - c->len, 0);
	if (r < 0) {
		if (errno != EAGAIN && errno != EINTR)
			finish(p, c, -errno);
		return;
	}
	c->len += (size_t)r;
	c->buf[c->len] = 0;
	if (r == 0)
		finish(p, c, 0);
}

void peer_get_all(struct peer_get *p, unsigned n, int timeout_ms)
{
	struct pconn *c = calloc(n ? n : 1, sizeof(*c));
	struct pollfd *pfd = calloc(n ? n : 1, sizeof(*pfd));
	unsigned *idx = calloc(n ? n : 1, sizeof(*idx));
	for (unsigned i = 0; i < n; i++) {
		p[i].err = -ETIMEDOUT;
		p[i].status = 0;
		p[i].reply = NULL;
	}
	if (!c || !pfd || !idx) {
		for (unsigned i = 0; i < n; i++)
			p[i].err = -ENOMEM;
		goto out;
	}
	for (unsigned i = 0; i < n; i++) {
		c[i].fd = -1;
		int len = snprintf(
		    c[i].req, sizeof(c[i].req),
		    "%s %s HTTP/1.0\r\nAccept: application/json\r\nContent-Length: 0\r\n\r\n",
		    p[i].method ? p[i].method : "GET", p[i].path);
		int r = len > 0 && len < (int)sizeof(c[i].req) ? 0 : -ENAMETOOLONG;
		c[i].reqlen = (size_t)len;
		if (!r)
			r = start_connect(p[i].host, p[i].port, &c[i].fd);
		if (r)
			p[i].err = r;
		else
			c[i].st = P_CONNECTING;
	}
	int64_t deadline = now_ms() + timeout_ms;
	for (;;) {
		nfds_t np = 0;
		for (unsigned i = 0; i < n; i++) {
			if (c[i].st == P_DONE)
				continue;
			pfd[np].fd = c[i].fd;
			pfd[np].events = c[i].st == P_CONNECTING ? POLLOUT : POLLIN;
			pfd[np].revents = 0;
			idx[np++] = i;
		}
		int64_t left = deadline - now_ms();
		if (np == 0 || left <= 0)
			break;
		int r = poll(pfd, np, (int)left);
		if (r < 0 && errno != EINTR)
			break;
		for (nfds_t k = 0; r > 0 && k < np; k++) {
			unsigned i = idx[k];
			if (!pfd[k].revents)
				continue;
			if (c[i].st == P_CONNECTING)
				on_writable(&p[i], &c[i]);
			else
				on_readable(&p[i], &c[i]);
		}
	}
out:
	for (unsigned i = 0; c && i < n; i++) {
		if (c[i].st != P_DONE && c[i].fd >= 0)
			close(c[i].fd);
		free(c[i].buf);
	}
	free(c);
	free(pfd);
	free(idx);
}

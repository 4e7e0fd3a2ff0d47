/*
 * nbd_server: listening socket, connection lifetime, output queue (sendmsg of many replies
 * at once, EPOLLOUT when the socket is full) and input framing (a 64 KiB staging buffer;
 * large payloads are received straight into their request buffer). See nbd_server.h and
 * nbd_priv.h; options are in nbd_handshake.c and commands in nbd_transmit.c.
 */
#include "blockd/nbd_priv.h"

#include <errno.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <unistd.h>

#define NBD_IOV_MAX 64
/* recv() calls per readiness event, so one busy client cannot starve the others. */
#define NBD_RX_BUDGET 16

static void conn_rx(struct nbd_conn *c);
static void conn_event(void *arg, uint32_t events);

static void free_heap_out(struct nbd_out *o)
{
	free(o);
}

void nbd_conn_queue(struct nbd_conn *c, struct nbd_out *o)
{
	if (c->closed) {
		o->free(o);
		return;
	}
	o->next = NULL;
	o->sent = 0;
	c->tx_bytes += o->n1 + o->n2;
	*c->tx_tail = o;
	c->tx_tail = &o->next;
}

int nbd_conn_send_copy(struct nbd_conn *c, const void *p1, size_t n1, const void *p2, size_t n2)
{
	struct nbd_out *o = malloc(sizeof(*o) + n1 + n2);
	if (!o) {
		nbd_conn_close(c);
		return -ENOMEM;
	}
	uint8_t *p = (uint8_t *)(o + 1);
	if (n1)
		memcpy(p, p1, n1);
	if (n2)
		memcpy(p + n1, p2, n2);
	o->p1 = p;
	o->n1 = n1 + n2;
	o->p2 = NULL;
	o->n2 = 0;
	o->free = free_heap_out;
	nbd_conn_queue(c, o);
	return 0;
}

void nbd_conn_expect(struct nbd_conn *c, enum nbd_rx state, uint8_t *dst, size_t n)
{
	c->rx = state;
	c->dst = dst;
	c->need = n;
	c->got = 0;
}

static bool rx_wanted(const struct nbd_conn *c)
{
	if (c->closed || c->draining || c->close_after_tx || c->rx == NBD_RX_STOP)
		return false;
	if (c->rx <= NBD_RX_OPT_DATA && c->tx_bytes > NBD_MAX_HS_BACKLOG)
		return false;
	/* Only pause between requests: a half-received frame is always completed. */
	if (c->rx == NBD_RX_REQ_HDR && c->got == 0 && nbd_tx_at_cap(c))
		return false;
	return true;
}

static void update_events(struct nbd_conn *c)
{
	if (c->closed)
		return;
	uint32_t ev = (rx_wanted(c) ? EPOLLIN : 0) | (c->tx_blocked ? EPOLLOUT : 0);
	if (ev != c->events && loop_mod_fd(c->loop, c->fd, ev, conn_event, c) == 0)
		c->events = ev;
}

void nbd_conn_close(struct nbd_conn *c)
{
	if (c->closed)
		return;
	c->closed = true;
	nbd_conn_negotiated(c);
	loop_del_fd(c->loop, c->fd);
	close(c->fd);
	c->fd = -1;
	while (c->tx_head) {
		struct nbd_out *o = c->tx_head;
		c->tx_head = o->next;
		o->free(o);
	}
	c->tx_tail = &c->tx_head;
	c->tx_bytes = 0;
	if (c->cur) {
		nbd_req_free(c->cur);
		c->cur = NULL;
	}
	nbd_req_cache_drop(c);
	free(c->optbuf);
	c->optbuf = NULL;
	free(c->rbuf);
	c->rbuf = NULL;
	c->rx = NBD_RX_STOP;
}

static void conn_unlink(struct nbd_conn *c)
{
	if (!c->srv)
		return;
	if (c->prev)
		c->prev->next = c->next;
	else
		c->srv->conns = c->next;
	if (c->next)
		c->next->prev = c->prev;
	c->srv = NULL;
	c->prev = c->next = NULL;
}

void nbd_conn_maybe_free(struct nbd_conn *c)
{
	if (!c->closed || c->busy || c->bdev_pending || c->kick_scheduled)
		return;
	conn_unlink(c);
	if (c->attached && c->exports.release)
		c->exports.release(c->exports.arg, c->export_name);
	nbd_req_cache_drop(c);
	free(c->export_name);
	free(c);
}

static void conn_flush(struct nbd_conn *c)
{
	while (!c->closed && c->tx_head) {
		struct iovec iov[NBD_IOV_MAX];
		int n = 0;
		for (struct nbd_out *o = c->tx_head; o && n < NBD_IOV_MAX - 1; o = o->next) {
			size_t s = o->sent;
			if (s < o->n1)
				iov[n++] = (struct iovec){(void *)(o->p1 + s), o->n1 - s};
			size_t s2 = s > o->n1 ? s - o->n1 : 0;
			if (o->n2 > s2)
				iov[n++] = (struct iovec){(void *)(o->p2 + s2), o->n2 - s2};
		}
		struct msghdr msg = {.msg_iov = iov, .msg_iovlen = (size_t)n};
		ssize_t w = sendmsg(c->fd, &msg, MSG_NOSIGNAL);
		if (w < 0) {
			if (errno == EINTR)
				continue;
			if (errno == EAGAIN || errno == EWOULDBLOCK) {
				c->tx_blocked = true;
				return;
			}
			nbd_conn_close(c);
			return;
		}
		size_t left = (size_t)w;
		c->tx_bytes -= left;
		while (c->tx_head) {
			struct nbd_out *o = c->tx_head;
			size_t rem = o->n1 + o->n2 - o->sent;
			if (left < rem) {
				o->sent += left;
				break;
			}
			left -= rem;
			c->tx_head = o->next;
			if (!c->tx_head)
				c->tx_tail = &c->tx_head;
			o->free(o);
		}
	}
	c->tx_blocked = false;
	if (!c->closed && c->close_after_tx)
		nbd_conn_close(c);
}

/* A draining connection closes once nothing can still complete on it. */
static void check_drain(struct nbd_conn *c)
{
	if (c->closed || !c->draining || c->bdev_pending)
		return;
	c->close_after_tx = true;
	conn_flush(c);
	if (c->drop_hard)
		nbd_conn_close(c);
}

/* Everything a connection may need after any change: send, read, drain, rearm. */
static void conn_service(struct nbd_conn *c)
{
	if (c->closed)
		return;
	if (c->tx_head && !c->tx_blocked)
		conn_flush(c);
	conn_rx(c);
	if (!c->closed && c->tx_head && !c->tx_blocked)
		conn_flush(c);
	check_drain(c);
	update_events(c);
}

static void kick_fn(void *arg)
{
	struct nbd_conn *c = arg;
	c->kick_scheduled = false;
	c->busy++;
	conn_service(c);
	c->busy--;
	nbd_conn_maybe_free(c);
}

void nbd_conn_kick(struct nbd_conn *c)
{
	if (c->closed || c->kick_scheduled)
		return;
	if (loop_defer(c->loop, kick_fn, c) == 0) {
		c->kick_scheduled = true;
		return;
	}
	/* Out of memory for the deferral: flushing now is always safe. */
	conn_flush(c);
}

static void conn_dispatch(struct nbd_conn *c)
{
	switch (c->rx) {
	case NBD_RX_CLIENT_FLAGS:
	case NBD_RX_OPT_HDR:
	case NBD_RX_OPT_DATA:
		nbd_hs_dispatch(c);
		break;
	case NBD_RX_REQ_HDR:
	case NBD_RX_REQ_PAYLOAD:
	case NBD_RX_DISCARD:
		nbd_tx_dispatch(c);
		break;
	case NBD_RX_STOP:
		break;
	}
}

static void conn_rx(struct nbd_conn *c)
{
	int budget = NBD_RX_BUDGET;
	while (rx_wanted(c)) {
		if (c->got == c->need) {
			conn_dispatch(c);
			continue;
		}
		size_t want = c->need - c->got;
		if (c->rpos == c->rlen) {
			/* Level-triggered: after a short recv, epoll says when more arrives, so
			 * kicks after replies cost no recv that would end in EAGAIN. */
			if (!c->readable || budget-- == 0)
				break;
			bool direct = c->dst && want >= NBD_RBUF_SIZE;
			size_t ask = direct ? want : NBD_RBUF_SIZE;
			ssize_t n = recv(c->fd, direct ? c->dst + c->got : c->rbuf, ask, 0);
			if (n < 0 && errno == EINTR)
				continue;
			if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
				c->readable = false;
				break;
			}
			if (n > 0 && (size_t)n < ask)
				c->readable = false;
			if (n < 0) {
				nbd_conn_close(c);
				break;
			}
			if (n == 0) {
				/* EOF without DISC: still answer what is in flight if the
				 * peer only half-closed, then close. */
				c->draining = true;
				break;
			}
			if (direct) {
				c->got += (size_t)n;
				continue;
			}
			c->rpos = 0;
			c->rlen = (size_t)n;
		}
		size_t k = c->rlen - c->rpos;
		if (k > want)
			k = want;
		if (c->dst)
			memcpy(c->dst + c->got, c->rbuf + c->rpos, k);
		c->rpos += k;
		c->got += k;
	}
}

static void conn_event(void *arg, uint32_t events)
{
	struct nbd_conn *c = arg;
	c->busy++;
	if (events & (EPOLLERR | EPOLLHUP)) {
		nbd_conn_close(c);
	} else {
		if (events & EPOLLIN)
			c->readable = true;
		if (events & EPOLLOUT)
			conn_flush(c);
		conn_service(c);
	}
	c->busy--;
	nbd_conn_maybe_free(c);
}

static void hs_timeout(void *arg)
{
	struct nbd_conn *c = arg;
	c->hs_timer = NULL;
	c->busy++;
	nbd_conn_close(c);
	c->busy--;
	nbd_conn_maybe_free(c);
}

void nbd_conn_negotiated(struct nbd_conn *c)
{
	if (c->hs_timer) {
		loop_timer_cancel(c->loop, c->hs_timer);
		c->hs_timer = NULL;
	}
}

static void conn_new(struct nbd_server *s, int fd)
{
	int one = 1;
	setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	struct nbd_conn *c = calloc(1, sizeof(*c));
	uint8_t *rbuf = malloc(NBD_RBUF_SIZE);
	if (!c || !rbuf || loop_add_fd(s->loop, fd, EPOLLIN, conn_event, c) < 0) {
		free(c);
		free(rbuf);
		close(fd);
		return;
	}
	c->srv = s;
	c->loop = s->loop;
	c->exports = s->exports;
	c->fd = fd;
	c->readable = true;
	c->events = EPOLLIN;
	c->rbuf = rbuf;
	c->tx_tail = &c->tx_head;
	c->next = s->conns;
	if (s->conns)
		s->conns->prev = c;
	s->conns = c;
	loop_timer_add(c->loop, NBD_HANDSHAKE_MS, hs_timeout, c, &c->hs_timer);
	c->busy++;
	nbd_hs_start(c);
	conn_service(c);
	c->busy--;
	nbd_conn_maybe_free(c);
}

static void accept_event(void *arg, uint32_t events);

static void accept_resume(void *arg)
{
	struct nbd_server *s = arg;
	s->accept_timer = NULL;
	loop_mod_fd(s->loop, s->fd, EPOLLIN, accept_event, s);
}

static void accept_event(void *arg, uint32_t events)
{
	struct nbd_server *s = arg;
	(void)events;
	for (;;) {
		int fd = accept4(s->fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
		if (fd >= 0) {
			conn_new(s, fd);
			continue;
		}
		if (errno == EINTR || errno == ECONNABORTED)
			continue;
		if (errno == EAGAIN || errno == EWOULDBLOCK)
			return;
		/* Out of descriptors or memory: the level-triggered listener would spin,
		 * so stop watching it for a moment. */
		if (!s->accept_timer &&
		    loop_timer_add(s->loop, 100, accept_resume, s, &s->accept_timer) == 0)
			loop_mod_fd(s->loop, s->fd, 0, accept_event, s);
		return;
	}
}

static int listen_on(const char *host, uint16_t port, int *fd_out, uint16_t *port_out)
{
	struct addrinfo hints = {.ai_family = AF_UNSPEC,
				 .ai_socktype = SOCK_STREAM,
				 .ai_flags = AI_PASSIVE | AI_NUMERICSERV};
	struct addrinfo *res;
	char ps[8];
	snprintf(ps, sizeof(ps), "%u", port);
	int r = getaddrinfo(host && *host ? host : NULL, ps, &hints, &res);
	if (r != 0)
		return r == EAI_SYSTEM ? -errno : -EADDRNOTAVAIL;
	r = -EADDRNOTAVAIL;
	for (struct addrinfo *ai = res; ai; ai = ai->ai_next) {
		int fd = socket(ai->ai_family, ai->ai_socktype | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
		if (fd < 0) {
			r = -errno;
			continue;
		}
		int one = 1;
		setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
		if (bind(fd, ai->ai_addr, ai->ai_addrlen) < 0 || listen(fd, 128) < 0) {
			r = -errno;
			close(fd);
			continue;
		}
		struct sockaddr_storage ss;
		socklen_t sl = sizeof(ss);
		if (getsockname(fd, (struct sockaddr *)&ss, &sl) < 0) {
			r = -errno;
			close(fd);
			continue;
		}
		*port_out = ntohs(ss.ss_family == AF_INET6 ? ((struct sockaddr_in6 *)&ss)->sin6_port
							   : ((struct sockaddr_in *)&ss)->sin_port);
		*fd_out = fd;
		r = 0;
		break;
	}
	freeaddrinfo(res);
	return r;
}

int nbd_server_new(struct loop *l, const char *host, uint16_t port,
		   const struct nbd_exports *exports, struct nbd_server **out)
{
	struct nbd_server *s = calloc(1, sizeof(*s));
	if (!s)
		return -ENOMEM;
	s->loop = l;
	s->exports = *exports;
	int r = listen_on(host, port, &s->fd, &s->port);
	if (r < 0) {
		free(s);
		return r;
	}
	r = loop_add_fd(l, s->fd, EPOLLIN, accept_event, s);
	if (r < 0) {
		close(s->fd);
		free(s);
		return r;
	}
	*out = s;
	return 0;
}

void nbd_server_free(struct nbd_server *s)
{
	if (!s)
		return;
	if (s->accept_timer)
		loop_timer_cancel(s->loop, s->accept_timer);
	loop_del_fd(s->loop, s->fd);
	close(s->fd);
	while (s->conns) {
		struct nbd_conn *c = s->conns;
		/* Connections with bdev calls still out outlive the server and free
		 * themselves when the last one returns. */
		conn_unlink(c);
		nbd_conn_close(c);
		nbd_conn_maybe_free(c);
	}
	free(s);
}

uint16_t nbd_server_port(struct nbd_server *s)
{
	return s->port;
}

uint32_t nbd_server_clients(struct nbd_server *s, const char *name)
{
	uint32_t n = 0;
	for (struct nbd_conn *c = s->conns; c; c = c->next)
		if (c->attached && strcmp(c->export_name, name) == 0)
			n++;
	return n;
}

void nbd_server_drop_export(struct nbd_server *s, const char *name)
{
	for (struct nbd_conn *c = s->conns; c; c = c->next) {
		if (c->closed || !c->attached || strcmp(c->export_name, name) != 0)
			continue;
		c->draining = true;
		c->drop_hard = true;
		nbd_conn_kick(c);
	}
}

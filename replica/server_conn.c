/*
 * server_conn: one replica-protocol connection on the server side: framing, payload checks,
 * the reply queue and flow control. See server_priv.h for a request's life.
 *
 * The socket is level-triggered, so a short read means it is drained for now (epoll reports
 * more): reading stops there instead of paying a read() that ends in EAGAIN. Reading stops (EPOLLIN
 * dropped) while the connection has SRV_MAX_INFLIGHT requests or SRV_MAX_INFLIGHT_BYTES of payload
 * and reply buffers in flight, so a client can make the server hold only a bounded amount of
 * memory. Replies are written as their requests complete, header and payload in one sendmsg without
 * copying the payload. Every entry point goes through conn_run(), which is re-entrant safe: a store
 * callback that completes inside an op only marks the connection for another pass.
 */
#include "server_priv.h"

#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

/* read() calls per pass, so one busy connection cannot starve the others. */
#define READS_PER_RUN 16
#define IOV_PER_SEND 64

static void conn_run(struct srv_conn *c);
static void conn_event(void *arg, uint32_t events);

static bool throttled(const struct srv_conn *c)
{
	return c->inflight >= SRV_MAX_INFLIGHT || c->inflight_bytes >= SRV_MAX_INFLIGHT_BYTES;
}

static void conn_free(struct srv_conn *c)
{
	struct replica_server *s = c->srv;
	if (s) {
		if (c->prev)
			c->prev->next = c->next;
		else
			s->conns = c->next;
		if (c->next)
			c->next->prev = c->prev;
	}
	free(c->rbuf);
	free(c);
}

static void req_free(struct srv_req *r)
{
	struct srv_conn *c = r->c;
	if (r->all_prev)
		r->all_prev->all_next = r->all_next;
	else
		c->all = r->all_next;
	if (r->all_next)
		r->all_next->all_prev = r->all_prev;
	c->inflight--;
	c->inflight_bytes -= r->cost;
	free(r->payload);
	free(r->rpayload);
	free(r);
}

/* Frees a dead connection once nothing refers to it. */
static void conn_settle(struct srv_conn *c)
{
	if (c->dead) {
		if (!c->running && c->inflight == 0)
			conn_free(c);
		return;
	}
	uint32_t want = 0;
	if (c->cur || !throttled(c))
		want |= EPOLLIN;
	if (c->wq_head)
		want |= EPOLLOUT;
	if (want != c->events) {
		if (loop_mod_fd(c->srv->l, c->fd, want, conn_event, c) == 0)
			c->events = want;
	}
}

void srv_conn_kill(struct srv_conn *c, const char *why)
{
	if (c->dead)
		return;
	if (why)
		fprintf(stderr, "replica server: closing connection: %s\n", why);
	c->dead = true;
	c->srv->nconns--;
	srv_hold_conn_gone(c);
	if (c->flush_timer)
		loop_timer_cancel(c->srv->l, c->flush_timer);
	c->flush_timer = NULL;
	loop_del_fd(c->srv->l, c->fd);
	close(c->fd);
	c->fd = -1;
	free(c->rbuf);
	c->rbuf = NULL;
	if (c->cur) {
		struct srv_req *r = c->cur;
		c->cur = NULL;
		req_free(r);
	}
	while (c->wq_head) {
		struct srv_req *r = c->wq_head;
		c->wq_head = r->next;
		req_free(r);
	}
	c->wq_tail = NULL;
	conn_settle(c);
}

static void conn_flush_tick(void *arg)
{
	struct srv_conn *c = arg;
	c->flush_timer = NULL;
	conn_run(c);
}

void srv_req_done(struct srv_req *r, int status)
{
	struct srv_conn *c = r->c;
	r->done = true;
	if (c->dead) {
		req_free(r);
		conn_settle(c);
		return;
	}
	if (status < 0) {
		free(r->rpayload);
		r->rpayload = NULL;
		r->rlen = 0;
	}
	struct srv_store *vol = r->vol ? r->vol : c->vol;
	struct proto_rep rep = {
	    .op = r->req.op,
	    .handle = r->req.handle,
	    .status = status,
	    .payload_len = r->rlen,
	    .epoch = vol ? store_epoch(vol->st) : 0,
	    .payload_hash = r->rlen ? proto_hash(r->rpayload, r->rlen) : 0,
	};
	proto_rep_encode(&rep, r->rhdr);
	/* The request payload is not needed any more; give its memory back early. */
	c->inflight_bytes -= r->req.payload_len;
	r->cost -= r->req.payload_len;
	free(r->payload);
	r->payload = NULL;
	r->next = NULL;
	if (c->wq_tail)
		c->wq_tail->next = r;
	else
		c->wq_head = r;
	c->wq_tail = r;
	/* Completions arrive in batches from the ring: one sendmsg for the batch, from a
	 * 0 ms timer that runs after them in this same loop iteration. */
	if (c->running)
		c->rerun = true;
	else if (!c->flush_timer &&
		 loop_timer_add(c->srv->l, 0, conn_flush_tick, c, &c->flush_timer) < 0)
		conn_run(c);
}

static void conn_flush(struct srv_conn *c)
{
	while (c->wq_head && !c->dead) {
		struct iovec iov[IOV_PER_SEND];
		int n = 0;
		for (struct srv_req *r = c->wq_head; r && n < IOV_PER_SEND - 1; r = r->next) {
			size_t off = r->sent;
			if (off < PROTO_REP_SIZE) {
				iov[n].iov_base = r->rhdr + off;
				iov[n++].iov_len = PROTO_REP_SIZE - off;
				off = PROTO_REP_SIZE;
			}
			if (r->rlen) {
				iov[n].iov_base = r->rpayload + (off - PROTO_REP_SIZE);
				iov[n++].iov_len = r->rlen - (off - PROTO_REP_SIZE);
			}
		}
		struct msghdr mh = {.msg_iov = iov, .msg_iovlen = (size_t)n};
		ssize_t w = sendmsg(c->fd, &mh, MSG_NOSIGNAL);
		if (w < 0) {
			if (errno == EINTR)
				continue;
			if (errno != EAGAIN && errno != EWOULDBLOCK)
				srv_conn_kill(c, NULL);
			return;
		}
		size_t left = (size_t)w;
		while (left && c->wq_head) {
			struct srv_req *r = c->wq_head;
			size_t rest = PROTO_REP_SIZE + r->rlen - r->sent;
			if (left < rest) {
				r->sent += left;
				break;
			}
			left -= rest;
			c->wq_head = r->next;
			if (!c->wq_head)
				c->wq_tail = NULL;
			req_free(r);
		}
	}
}

static void dispatch(struct srv_req *r)
{
	if (r->req.payload_len && proto_hash(r->payload, r->req.payload_len) != r->req.payload_hash)
		srv_req_done(r, -EBADMSG);
	else
		srv_exec(r);
}

static uint64_t reply_cost(const struct proto_req *h)
{
	if (h->op == PROTO_READ)
		return h->length;
	if (h->op == PROTO_HASH && h->arg) {
		uint64_t n = h->length / h->arg + 1;
		return n > PROTO_MAX_PAYLOAD / 8 ? PROTO_MAX_PAYLOAD : n * 8;
	}
	return 0;
}

/* Returns false when the connection died. */
static bool parse_header(struct srv_conn *c)
{
	struct proto_req h;
	int e = proto_req_decode(c->rbuf + c->rpos, &h);
	if (e < 0) {
		char why[160];
		snprintf(why, sizeof(why),
			 "bad request header (%s): magic %08x version %u op %u payload_len %u "
			 "length %llu",
			 strerror(-e), h.magic, h.version, h.op, h.payload_len,
			 (unsigned long long)h.length);
		srv_conn_kill(c, why);
		return false;
	}
	c->rpos += PROTO_REQ_SIZE;
	struct srv_req *r = calloc(1, sizeof(*r));
	if (r && h.payload_len) {
		r->payload = malloc(h.payload_len);
		if (!r->payload) {
			free(r);
			r = NULL;
		}
	}
	if (!r) {
		srv_conn_kill(c, "out of memory");
		return false;
	}
	r->c = c;
	r->req = h;
	r->cost = h.payload_len + reply_cost(&h);
	r->all_next = c->all;
	if (c->all)
		c->all->all_prev = r;
	c->all = r;
	c->inflight++;
	c->inflight_bytes += r->cost;
	if (h.payload_len)
		c->cur = r;
	else
		dispatch(r);
	return true;
}

/* Reads and executes requests until the socket is drained, the budget is used or the
 * connection is throttled. */
static void conn_parse(struct srv_conn *c)
{
	int reads = 0;
	while (!c->dead) {
		ssize_t n;
		if (c->cur) {
			struct srv_req *r = c->cur;
			uint32_t need = r->req.payload_len - r->got;
			uint32_t avail = c->rend - c->rpos;
			uint32_t take = avail < need ? avail : need;
			memcpy(r->payload + r->got, c->rbuf + c->rpos, take);
			c->rpos += take;
			r->got += take;
			need -= take;
			if (!need) {
				c->cur = NULL;
				dispatch(r);
				continue;
			}
			if (!c->readable || reads++ >= READS_PER_RUN)
				return;
			c->rpos = c->rend = 0;
			/* Large payloads go straight to their buffer: no copy. */
			if (need >= SRV_RBUF_SIZE) {
				n = read(c->fd, r->payload + r->got, need);
				if (n > 0) {
					c->readable = (uint32_t)n == need;
					r->got += (uint32_t)n;
					continue;
				}
			} else {
				n = read(c->fd, c->rbuf, SRV_RBUF_SIZE);
				if (n > 0) {
					c->readable = n == SRV_RBUF_SIZE;
					c->rend = (uint32_t)n;
					continue;
				}
			}
		} else {
			if (throttled(c))
				return;
			if (c->rend - c->rpos >= PROTO_REQ_SIZE) {
				if (!parse_header(c))
					return;
				continue;
			}
			if (!c->readable || reads++ >= READS_PER_RUN)
				return;
			memmove(c->rbuf, c->rbuf + c->rpos, c->rend - c->rpos);
			c->rend -= c->rpos;
			c->rpos = 0;
			n = read(c->fd, c->rbuf + c->rend, SRV_RBUF_SIZE - c->rend);
			if (n > 0) {
				c->readable = (uint32_t)n == SRV_RBUF_SIZE - c->rend;
				c->rend += (uint32_t)n;
				continue;
			}
		}
		if (n == 0) {
			srv_conn_kill(c, NULL);
			return;
		}
		if (errno == EINTR)
			continue;
		if (errno != EAGAIN && errno != EWOULDBLOCK)
			srv_conn_kill(c, NULL);
		c->readable = false;
		return;
	}
}

static void conn_run(struct srv_conn *c)
{
	if (c->running) {
		c->rerun = true;
		return;
	}
	c->running = true;
	do {
		c->rerun = false;
		if (!c->dead)
			conn_flush(c);
		if (!c->dead)
			conn_parse(c);
	} while (c->rerun && !c->dead);
	c->running = false;
	conn_settle(c);
}

static void conn_event(void *arg, uint32_t events)
{
	struct srv_conn *c = arg;
	/* The peer can no longer read replies: whatever it still sent is moot. */
	if (events & (EPOLLERR | EPOLLHUP)) {
		srv_conn_kill(c, NULL);
		return;
	}
	if (events & EPOLLIN)
		c->readable = true;
	conn_run(c);
}

int srv_conn_new(struct replica_server *s, int fd)
{
	int one = 1;
	setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	struct srv_conn *c = calloc(1, sizeof(*c));
	if (!c)
		return -ENOMEM;
	c->rbuf = malloc(SRV_RBUF_SIZE);
	if (!c->rbuf) {
		free(c);
		return -ENOMEM;
	}
	c->srv = s;
	c->fd = fd;
	c->events = EPOLLIN;
	int r = loop_add_fd(s->l, fd, EPOLLIN, conn_event, c);
	if (r < 0) {
		free(c->rbuf);
		free(c);
		return r;
	}
	c->next = s->conns;
	if (s->conns)
		s->conns->prev = c;
	s->conns = c;
	s->nconns++;
	return 0;
}

void srv_conn_orphan_all(struct replica_server *s)
{
	while (s->conns) {
		struct srv_conn *c = s->conns;
		srv_conn_kill(c, NULL);
		if (s->conns != c)
			continue; /* freed: nothing was in flight */
		/* Its requests are still in a (closing) store, which calls them back later;
		 * the connection then frees itself without the server. */
		s->conns = c->next;
		if (s->conns)
			s->conns->prev = NULL;
		c->srv = NULL;
		c->prev = c->next = NULL;
	}
}

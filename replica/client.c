/*
 * client: one pipelined replica-protocol connection from an engine (see client.h).
 *
 * Requests live in a slot table; a handle is (sequence << 32 | slot), so a reply finds its
 * request in O(1) and a stale or forged handle is rejected. Sends are queued and flushed once
 * per loop iteration (a 0 ms timer), so a burst of requests costs one sendmsg; payloads go
 * from the caller's buffer. Replies are read through a 64 KiB buffer; a large payload is
 * read straight into the request's rbuf (or a scratch buffer). The socket is level-triggered,
 * so a short read means it is drained for now and reading stops without an EAGAIN read().
 *
 * Failure: the first transport or framing error fails every pending request once with the
 * error, then calls closed(err) once. rclient_close() does the same with -ECANCELED for the
 * requests and closed(0), and frees the client when no call of ours is on the stack.
 */
#include "client.h"

#include <errno.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

#define RC_RBUF_SIZE (64u << 10)
#define RC_READS_PER_EVENT 16
#define RC_IOV 64
/* Finished requests kept for reuse, so a request costs no calloc/free pair. */
#define RC_REQ_CACHE 64
/* Scratch buffers above this are released after use. */
#define RC_SCRATCH_KEEP (1u << 20)

enum rc_state { RC_CONNECTING, RC_UP, RC_DOWN };

struct rc_req {
	uint64_t handle;
	uint8_t hdr[PROTO_REQ_SIZE];
	const uint8_t *payload;
	uint32_t plen;
	size_t sent; /* bytes of header + payload written */
	bool queued; /* still (partly) in the send queue */
	void *rbuf;
	uint32_t rbuf_len;
	rclient_reply_fn fn;
	void *arg;
	struct rc_req *next;
};

struct rclient {
	struct loop *l;
	int fd;
	enum rc_state state;
	struct rclient_cbs cbs;
	uint32_t events;
	/* requests by slot; free slots on a stack */
	struct rc_req **slots;
	uint32_t *free_slots;
	uint32_t nslots, nfree;
	uint32_t seq;
	uint32_t inflight;
	struct rc_req *sq_head, *sq_tail;
	struct rc_req *req_cache; /* linked through next */
	uint32_t nreq_cache;
	struct loop_timer *flush_timer; /* a 0 ms timer: cancellable, unlike loop_defer */
	/* receive side */
	bool readable; /* no short read since the last EPOLLIN: the socket may hold more */
	uint8_t *rbuf;
	uint32_t rpos, rend;
	bool have_hdr;
	struct proto_rep rep;
	struct rc_req *cur;
	uint8_t *dst;
	uint32_t got;
	int cur_err;
	uint8_t *scratch;
	uint32_t scratch_cap;
	/* lifetime */
	int depth;
	bool free_pending;
};

static void on_event(void *arg, uint32_t events);

static void req_put(struct rclient *c, struct rc_req *r)
{
	if (c->nreq_cache >= RC_REQ_CACHE) {
		free(r);
		return;
	}
	r->next = c->req_cache;
	c->req_cache = r;
	c->nreq_cache++;
}

static void really_free(struct rclient *c)
{
	if (c->flush_timer)
		loop_timer_cancel(c->l, c->flush_timer);
	while (c->req_cache) {
		struct rc_req *r = c->req_cache;
		c->req_cache = r->next;
		free(r);
	}
	free(c->slots);
	free(c->free_slots);
	free(c->rbuf);
	free(c->scratch);
	free(c);
}

static void leave(struct rclient *c)
{
	if (--c->depth == 0 && c->free_pending)
		really_free(c);
}

static void set_events(struct rclient *c, uint32_t ev)
{
	if (c->state == RC_DOWN || ev == c->events)
		return;
	if (loop_mod_fd(c->l, c->fd, ev, on_event, c) == 0)
		c->events = ev;
}

static void slot_release(struct rclient *c, uint32_t slot)
{
	c->slots[slot] = NULL;
	c->free_slots[c->nfree++] = slot;
	c->inflight--;
}

/* Transport failure (or close): fail everything once, then closed() once. */
static void shut(struct rclient *c, int err, int closed_err)
{
	if (c->state == RC_DOWN)
		return;
	bool connecting = c->state == RC_CONNECTING;
	c->state = RC_DOWN;
	loop_del_fd(c->l, c->fd);
	close(c->fd);
	c->fd = -1;
	c->sq_head = c->sq_tail = NULL;
	c->cur = NULL;
	c->have_hdr = false;
	if (connecting && c->cbs.connected)
		c->cbs.connected(c->cbs.arg, err);
	for (uint32_t i = 0; i < c->nslots; i++) {
		struct rc_req *r = c->slots[i];
		if (!r)
			continue;
		slot_release(c, i);
		r->fn(r->arg, err, NULL, NULL, 0);
		free(r);
	}
	if (c->cbs.closed)
		c->cbs.closed(c->cbs.arg, closed_err);
}

static void fail(struct rclient *c, int err)
{
	shut(c, err, err);
}

static void flush(struct rclient *c)
{
	while (c->state == RC_UP && c->sq_head) {
		struct iovec iov[RC_IOV];
		int n = 0;
		for (struct rc_req *r = c->sq_head; r && n < RC_IOV - 1; r = r->next) {
			size_t off = r->sent;
			if (off < PROTO_REQ_SIZE) {
				iov[n].iov_base = r->hdr + off;
				iov[n++].iov_len = PROTO_REQ_SIZE - off;
				off = PROTO_REQ_SIZE;
			}
			if (r->plen) {
				iov[n].iov_base = (void *)(r->payload + (off - PROTO_REQ_SIZE));
				iov[n++].iov_len = r->plen - (off - PROTO_REQ_SIZE);
			}
		}
		struct msghdr mh = {.msg_iov = iov, .msg_iovlen = (size_t)n};
		ssize_t w = sendmsg(c->fd, &mh, MSG_NOSIGNAL);
		if (w < 0) {
			if (errno == EINTR)
				continue;
			if (errno == EAGAIN || errno == EWOULDBLOCK)
				break;
			fail(c, -errno);
			return;
		}
		size_t left = (size_t)w;
		while (left && c->sq_head) {
			struct rc_req *r = c->sq_head;
			size_t rest = PROTO_REQ_SIZE + r->plen - r->sent;
			if (left < rest) {
				r->sent += left;
				break;
			}
			left -= rest;
			r->sent += rest;
			r->queued = false;
			c->sq_head = r->next;
			if (!c->sq_head)
				c->sq_tail = NULL;
		}
	}
	if (c->state == RC_UP)
		set_events(c, EPOLLIN | (c->sq_head ? EPOLLOUT : 0));
}

static void flush_deferred(void *arg)
{
	struct rclient *c = arg;
	c->flush_timer = NULL;
	c->depth++;
	flush(c);
	leave(c);
}

/* Runs the callback of the request whose payload (if any) is complete. */
static void deliver(struct rclient *c)
{
	struct rc_req *r = c->cur;
	uint32_t len = c->rep.payload_len;
	const uint8_t *p = len ? c->dst : NULL;
	int status = c->cur_err ? c->cur_err : c->rep.status;
	if (!c->cur_err && len && proto_hash(c->dst, len) != c->rep.payload_hash)
		status = -EBADMSG;
	if (status != c->rep.status) {
		p = NULL;
		len = 0;
	}
	c->cur = NULL;
	c->have_hdr = false;
	slot_release(c, (uint32_t)(r->handle & 0xffffffffu));
	struct proto_rep rep = c->rep;
	r->fn(r->arg, status, &rep, p, len);
	req_put(c, r);
	if (c->scratch_cap > RC_SCRATCH_KEEP) {
		free(c->scratch);
		c->scratch = NULL;
		c->scratch_cap = 0;
	}
}

/* Returns 0, or -errno to fail the connection with. */
static int parse_header(struct rclient *c)
{
	int e = proto_rep_decode(c->rbuf + c->rpos, &c->rep);
	if (e < 0)
		return e;
	c->rpos += PROTO_REP_SIZE;
	uint32_t slot = (uint32_t)(c->rep.handle & 0xffffffffu);
	struct rc_req *r = slot < c->nslots ? c->slots[slot] : NULL;
	/* A reply before its request was fully sent cannot be ours. */
	if (!r || r->handle != c->rep.handle || r->queued)
		return -EPROTO;
	c->cur = r;
	c->have_hdr = true;
	c->got = 0;
	c->cur_err = 0;
	uint32_t len = c->rep.payload_len;
	if (!len)
		return 0;
	if (r->rbuf && len <= r->rbuf_len) {
		c->dst = r->rbuf;
		return 0;
	}
	if (r->rbuf)
		c->cur_err = -EMSGSIZE;
	if (c->scratch_cap < len) {
		free(c->scratch);
		c->scratch_cap = 0;
		c->scratch = malloc(len);
		if (!c->scratch)
			return -ENOMEM;
		c->scratch_cap = len;
	}
	c->dst = c->scratch;
	return 0;
}

static void do_read(struct rclient *c)
{
	int reads = 0;
	while (c->state == RC_UP) {
		ssize_t n;
		if (c->have_hdr) {
			uint32_t need = c->rep.payload_len - c->got;
			uint32_t avail = c->rend - c->rpos;
			uint32_t take = avail < need ? avail : need;
			if (take)
				memcpy(c->dst + c->got, c->rbuf + c->rpos, take);
			c->rpos += take;
			c->got += take;
			need -= take;
			if (!need) {
				deliver(c);
				continue;
			}
			if (!c->readable || reads++ >= RC_READS_PER_EVENT)
				return;
			c->rpos = c->rend = 0;
			if (need >= RC_RBUF_SIZE) {
				n = read(c->fd, c->dst + c->got, need);
				if (n > 0) {
					c->readable = (uint32_t)n == need;
					c->got += (uint32_t)n;
					continue;
				}
			} else {
				n = read(c->fd, c->rbuf, RC_RBUF_SIZE);
				if (n > 0) {
					c->readable = n == RC_RBUF_SIZE;
					c->rend = (uint32_t)n;
					continue;
				}
			}
		} else {
			if (c->rend - c->rpos >= PROTO_REP_SIZE) {
				int e = parse_header(c);
				if (e < 0) {
					fail(c, e);
					return;
				}
				continue;
			}
			if (!c->readable || reads++ >= RC_READS_PER_EVENT)
				return;
			memmove(c->rbuf, c->rbuf + c->rpos, c->rend - c->rpos);
			c->rend -= c->rpos;
			c->rpos = 0;
			n = read(c->fd, c->rbuf + c->rend, RC_RBUF_SIZE - c->rend);
			if (n > 0) {
				c->readable = (uint32_t)n == RC_RBUF_SIZE - c->rend;
				c->rend += (uint32_t)n;
				continue;
			}
		}
		if (n == 0) {
			fail(c, -ECONNRESET);
			return;
		}
		if (errno == EINTR)
			continue;
		if (errno != EAGAIN && errno != EWOULDBLOCK)
			fail(c, -errno);
		c->readable = false;
		return;
	}
}

static int sock_error(int fd)
{
	int err = 0;
	socklen_t len = sizeof(err);
	if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &len) < 0)
		return -errno;
	return -err;
}

static void on_event(void *arg, uint32_t events)
{
	struct rclient *c = arg;
	c->depth++;
	if (c->state == RC_CONNECTING) {
		int err = sock_error(c->fd);
		if (err == 0 && (events & (EPOLLERR | EPOLLHUP)))
			err = -ECONNREFUSED;
		if (err < 0) {
			fail(c, err);
		} else {
			c->state = RC_UP;
			set_events(c, EPOLLIN | (c->sq_head ? EPOLLOUT : 0));
			if (c->cbs.connected)
				c->cbs.connected(c->cbs.arg, 0);
			flush(c);
		}
	} else if (c->state == RC_UP) {
		if (events & EPOLLERR) {
			int err = sock_error(c->fd);
			fail(c, err < 0 ? err : -ECONNRESET);
		}
		if (events & (EPOLLIN | EPOLLHUP)) {
			c->readable = true;
			do_read(c);
		}
		if (events & EPOLLOUT)
			flush(c);
	}
	leave(c);
}

static int slot_get(struct rclient *c, uint32_t *slot)
{
	if (!c->nfree) {
		uint32_t n = c->nslots ? c->nslots * 2 : 64;
		struct rc_req **s = realloc(c->slots, n * sizeof(*s));
		if (!s)
			return -ENOMEM;
		c->slots = s;
		uint32_t *f = realloc(c->free_slots, n * sizeof(*f));
		if (!f)
			return -ENOMEM;
		c->free_slots = f;
		/* Lowest slots on top of the stack. */
		for (uint32_t i = n; i > c->nslots; i--) {
			c->slots[i - 1] = NULL;
			c->free_slots[c->nfree++] = i - 1;
		}
		c->nslots = n;
	}
	*slot = c->free_slots[--c->nfree];
	return 0;
}

int rclient_send(struct rclient *c, struct proto_req *req, const void *payload, void *rbuf,
		 uint32_t rbuf_len, rclient_reply_fn fn, void *arg)
{
	if (c->state == RC_DOWN || c->free_pending)
		return -ENOTCONN;
	if (!fn || req->payload_len > PROTO_MAX_PAYLOAD || (req->payload_len && !payload))
		return -EINVAL;
	struct rc_req *r = c->req_cache;
	if (r) {
		c->req_cache = r->next;
		c->nreq_cache--;
		memset(r, 0, sizeof(*r));
	} else if (!(r = calloc(1, sizeof(*r)))) {
		return -ENOMEM;
	}
	uint32_t slot;
	int e = slot_get(c, &slot);
	if (e < 0) {
		free(r);
		return e;
	}
	if (++c->seq == 0)
		c->seq = 1;
	req->handle = ((uint64_t)c->seq << 32) | slot;
	req->payload_hash = req->payload_len ? proto_hash(payload, req->payload_len) : 0;
	req->magic = PROTO_REQ_MAGIC;
	req->version = PROTO_VERSION;
	proto_req_encode(req, r->hdr);
	r->handle = req->handle;
	r->payload = payload;
	r->plen = req->payload_len;
	r->queued = true;
	r->rbuf = rbuf;
	r->rbuf_len = rbuf ? rbuf_len : 0;
	r->fn = fn;
	r->arg = arg;
	c->slots[slot] = r;
	c->inflight++;
	if (c->sq_tail)
		c->sq_tail->next = r;
	else
		c->sq_head = r;
	c->sq_tail = r;
	if (c->state == RC_UP && !c->flush_timer &&
	    loop_timer_add(c->l, 0, flush_deferred, c, &c->flush_timer) < 0)
		set_events(c, EPOLLIN | EPOLLOUT);
	return 0;
}

uint32_t rclient_inflight(struct rclient *c)
{
	return c->inflight;
}

int rclient_connect(struct loop *l, const char *host, uint16_t port, const struct rclient_cbs *cbs,
		    struct rclient **out)
{
	struct addrinfo hints = {.ai_family = AF_UNSPEC,
				 .ai_socktype = SOCK_STREAM,
				 .ai_flags = AI_NUMERICSERV},
			*res;
	char ports[8];
	snprintf(ports, sizeof(ports), "%u", port);
	int e = getaddrinfo(host, ports, &hints, &res);
	if (e)
		return e == EAI_SYSTEM ? -errno : -EHOSTUNREACH;
	struct rclient *c = calloc(1, sizeof(*c));
	if (!c || !(c->rbuf = malloc(RC_RBUF_SIZE))) {
		free(c);
		freeaddrinfo(res);
		return -ENOMEM;
	}
	c->l = l;
	if (cbs)
		c->cbs = *cbs;
	/* IPv4 first, as the server binds: "localhost" must reach a server on "localhost". */
	struct addrinfo *ai = res;
	for (struct addrinfo *x = res; x; x = x->ai_next)
		if (x->ai_family == AF_INET) {
			ai = x;
			break;
		}
	c->fd = socket(ai->ai_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (c->fd < 0) {
		e = -errno;
		goto fail;
	}
	int one = 1;
	setsockopt(c->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	if (connect(c->fd, ai->ai_addr, ai->ai_addrlen) < 0 && errno != EINPROGRESS) {
		e = -errno;
		goto fail;
	}
	/* Even an immediate success is reported from the loop, never from inside this call. */
	c->events = EPOLLOUT;
	e = loop_add_fd(l, c->fd, EPOLLOUT, on_event, c);
	if (e < 0)
		goto fail;
	freeaddrinfo(res);
	c->state = RC_CONNECTING;
	*out = c;
	return 0;
fail:
	freeaddrinfo(res);
	if (c->fd >= 0)
		close(c->fd);
	really_free(c);
	return e;
}

void rclient_close(struct rclient *c)
{
	if (!c || c->free_pending)
		return;
	c->depth++;
	c->free_pending = true;
	/* The caller gave up on what is still queued: a reset drops it from the kernel's send
	 * queue rather than delivering it late (the replica also fences by HELLO session). */
	if (c->state != RC_DOWN && c->fd >= 0) {
		struct linger lg = {.l_onoff = 1, .l_linger = 0};
		setsockopt(c->fd, SOL_SOCKET, SO_LINGER, &lg, sizeof(lg));
	}
	shut(c, -ECANCELED, 0);
	leave(c);
}

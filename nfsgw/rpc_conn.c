/*
 * rpc_conn: one RPC client connection (see nfsgw/rpc.h): record marking (RFC 5531 sec. 11)
 * with fragment reassembly, per-connection flow control, dispatch to the server's programs and
 * batched reply sending (one deferred sendmsg per connection per loop pass).
 *
 * Lifetime: a connection holds one reference for being open, one per call not yet finished
 * and one per pending deferred kick. Closing it (error, EOF after the last reply, bad input,
 * server free) closes the socket and drops queued replies at once; the memory goes with the
 * last reference, so a handler may finish a call long after its client left.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <unistd.h>

#include "nfsgw/rpc_int.h"

#define RPC_INBUF (64u << 10)
/* A fragment body at least this large is received straight into the record, not via inbuf. */
#define RPC_DIRECT_MIN (16u << 10)
/* Reads per readiness event, so one busy client cannot starve the others. */
#define RPC_READ_BUDGET 16
#define RPC_IOV 256

static const uint8_t zero_pad[4];

static uint64_t out_total(const struct rpc_out *o)
{
	return (uint64_t)o->hdr_len + o->data_len + o->pad;
}

static void out_free(struct rpc_out *o)
{
	if (o->release)
		o->release(o->release_arg);
	free(o);
}

static void conn_unref(struct rpc_conn *c)
{
	if (--c->refs == 0)
		free(c);
}

static bool conn_throttled(const struct rpc_conn *c)
{
	return c->inflight >= RPC_MAX_INFLIGHT || c->inflight_bytes >= RPC_MAX_INFLIGHT_BYTES;
}

static void conn_on_event(void *arg, uint32_t events);

static void conn_update_events(struct rpc_conn *c)
{
	if (c->dead)
		return;
	uint32_t ev = 0;
	if (!c->closing && !c->eof && !conn_throttled(c))
		ev |= EPOLLIN;
	if (c->out_head && c->out_blocked)
		ev |= EPOLLOUT;
	if (ev != c->events && loop_mod_fd(c->l, c->fd, ev, conn_on_event, c) == 0)
		c->events = ev;
}

void rpc_conn_close(struct rpc_conn *c)
{
	if (c->dead)
		return;
	c->dead = true;
	loop_del_fd(c->l, c->fd);
	close(c->fd);
	c->fd = -1;
	if (c->prev)
		c->prev->next = c->next;
	else
		c->s->conns = c->next;
	if (c->next)
		c->next->prev = c->prev;
	c->s->nconns--;
	c->s = NULL;
	while (c->out_head) {
		struct rpc_out *o = c->out_head;
		c->out_head = o->next;
		out_free(o);
	}
	c->out_tail = &c->out_head;
	free(c->in);
	c->in = NULL;
	free(c->rec);
	c->rec = NULL;
	conn_unref(c);
}

/* Sends as much of the queue as the socket takes, in one sendmsg per RPC_IOV segments. */
static void conn_flush(struct rpc_conn *c)
{
	while (c->out_head && !c->closing) {
		struct iovec iov[RPC_IOV];
		int n = 0;
		uint64_t want = 0;
		uint32_t skip = c->out_off;
		for (struct rpc_out *o = c->out_head; o && n + 3 <= RPC_IOV; o = o->next) {
			const void *seg[3] = {o->hdr, o->data, zero_pad};
			uint32_t len[3] = {o->hdr_len, o->data_len, o->pad};
			for (int i = 0; i < 3; i++) {
				if (skip >= len[i]) {
					skip -= len[i];
					continue;
				}
				iov[n].iov_base = (uint8_t *)seg[i] + skip;
				iov[n].iov_len = len[i] - skip;
				want += iov[n].iov_len;
				skip = 0;
				n++;
			}
		}
		struct msghdr msg = {.msg_iov = iov, .msg_iovlen = (size_t)n};
		ssize_t w = sendmsg(c->fd, &msg, MSG_NOSIGNAL | MSG_DONTWAIT);
		if (w < 0) {
			if (errno == EINTR)
				continue;
			if (errno == EAGAIN || errno == EWOULDBLOCK)
				c->out_blocked = true;
			else
				c->closing = true;
			break;
		}
		uint64_t done = (uint64_t)w;
		while (done > 0 && c->out_head) {
			struct rpc_out *o = c->out_head;
			uint64_t left = out_total(o) - c->out_off;
			if (done < left) {
				c->out_off += (uint32_t)done;
				break;
			}
			done -= left;
			c->out_head = o->next;
			if (!c->out_head)
				c->out_tail = &c->out_head;
			c->out_off = 0;
			c->inflight_bytes -= out_total(o);
			out_free(o);
		}
		if ((uint64_t)w < want) {
			c->out_blocked = true;
			break;
		}
		c->out_blocked = false;
	}
	if (!c->out_head)
		c->out_blocked = false;
}

static void dispatch(struct rpc_conn *c, struct rpc_callx *x)
{
	switch (rpc_parse_call(x)) {
	case RPC_PARSE_CLOSE:
		c->closing = true;
		rpc_finish(x, NULL);
		return;
	case RPC_PARSE_RPCVERS:
		rpc_reply_rpcvers(&x->call);
		return;
	case RPC_PARSE_BADCRED:
		rpc_reply_auth_error(&x->call, RPC_AUTH_BADCRED);
		return;
	case RPC_PARSE_OK:
		break;
	}
	const struct rpc_program *p = NULL;
	bool prog_known = false;
	for (uint32_t i = 0; i < c->s->nprogs; i++) {
		const struct rpc_program *q = &c->s->progs[i];
		if (q->prog != x->call.prog)
			continue;
		if (!prog_known || q->vers_low < x->low)
			x->low = q->vers_low;
		if (!prog_known || q->vers_high > x->high)
			x->high = q->vers_high;
		prog_known = true;
		if (x->call.vers >= q->vers_low && x->call.vers <= q->vers_high)
			p = q;
	}
	if (!prog_known) {
		rpc_reply_accept(&x->call, RPC_PROG_UNAVAIL);
	} else if (!p) {
		rpc_reply_accept(&x->call, RPC_PROG_MISMATCH);
	} else {
		x->low = p->vers_low;
		x->high = p->vers_high;
		p->dispatch(p->ctx, &x->call);
	}
}

/* A whole record is in c->rec: it becomes a call that owns the buffer. */
static void record_done(struct rpc_conn *c)
{
	struct rpc_callx *x = calloc(1, sizeof(*x));
	if (!x) {
		c->closing = true;
		return;
	}
	x->conn = c;
	x->rec = c->rec;
	x->rec_len = c->rec_len;
	memset(x->rec + x->rec_len, 0, RPC_REC_SLACK);
	c->rec = NULL;
	c->rec_len = c->rec_cap = 0;
	x->call.priv = x;
	x->call.peer = c->peer;
	x->call.local = c->local;
	c->refs++;
	c->inflight++;
	c->inflight_bytes += x->rec_len;
	dispatch(c, x);
}

static void frag_start(struct rpc_conn *c)
{
	uint32_t m = (uint32_t)c->mark[0] << 24 | (uint32_t)c->mark[1] << 16 |
		     (uint32_t)c->mark[2] << 8 | c->mark[3];
	c->mark_have = 0;
	uint32_t len = m & 0x7fffffffu;
	c->frag_last = m >> 31;
	if ((!c->frag_last && len == 0) || (uint64_t)c->rec_len + len > RPC_MAX_RECORD) {
		c->closing = true;
		return;
	}
	uint32_t need = c->rec_len + len + RPC_REC_SLACK;
	if (need > c->rec_cap) {
		/* Geometric growth: a record sent as many tiny fragments stays linear. */
		uint32_t cap = c->rec_cap * 2;
		if (cap < need)
			cap = need;
		if (cap > RPC_MAX_RECORD + RPC_REC_SLACK)
			cap = RPC_MAX_RECORD + RPC_REC_SLACK;
		uint8_t *r = realloc(c->rec, cap);
		if (!r) {
			c->closing = true;
			return;
		}
		c->rec = r;
		c->rec_cap = cap;
	}
	c->in_frag = true;
	c->frag_left = len;
}

static void frag_progress(struct rpc_conn *c)
{
	if (c->frag_left > 0)
		return;
	c->in_frag = false;
	if (c->frag_last)
		record_done(c);
}

/* Parses buffered bytes and reads more, until EAGAIN, throttling, closing or the budget. */
static void conn_input(struct rpc_conn *c)
{
	int budget = RPC_READ_BUDGET;
	while (!c->closing && !c->dead && !c->eof && !conn_throttled(c)) {
		if (c->in_off < c->in_len) {
			uint32_t avail = c->in_len - c->in_off;
			if (!c->in_frag) {
				uint32_t n = 4 - c->mark_have;
				if (n > avail)
					n = avail;
				memcpy(c->mark + c->mark_have, c->in + c->in_off, n);
				c->mark_have += n;
				c->in_off += n;
				if (c->mark_have == 4) {
					frag_start(c);
					if (c->in_frag)
						frag_progress(c);
				}
			} else {
				uint32_t n = c->frag_left < avail ? c->frag_left : avail;
				memcpy(c->rec + c->rec_len, c->in + c->in_off, n);
				c->rec_len += n;
				c->frag_left -= n;
				c->in_off += n;
				frag_progress(c);
			}
			continue;
		}
		if (budget-- == 0)
			break;
		bool direct = c->in_frag && c->frag_left >= RPC_DIRECT_MIN;
		ssize_t r = direct ? recv(c->fd, c->rec + c->rec_len, c->frag_left, 0)
				   : recv(c->fd, c->in, RPC_INBUF, 0);
		if (r < 0) {
			if (errno == EINTR)
				continue;
			if (errno != EAGAIN && errno != EWOULDBLOCK)
				c->closing = true;
			break;
		}
		if (r == 0) {
			c->eof = true;
			break;
		}
		if (direct) {
			c->rec_len += (uint32_t)r;
			c->frag_left -= (uint32_t)r;
			frag_progress(c);
		} else {
			c->in_off = 0;
			c->in_len = (uint32_t)r;
		}
	}
}

static void conn_settle(struct rpc_conn *c)
{
	if (c->eof && c->inflight == 0 && !c->out_head)
		c->closing = true;
	if (c->closing)
		rpc_conn_close(c);
	else
		conn_update_events(c);
}

static void conn_kick(void *arg)
{
	struct rpc_conn *c = arg;
	c->kick_pending = false;
	if (!c->dead) {
		/* Input first: calls it dispatches may answer at once and join this send. */
		if (!c->eof && (c->in_off < c->in_len || c->in_frag || c->mark_have))
			conn_input(c);
		conn_flush(c);
		conn_settle(c);
	}
	conn_unref(c);
}

static void conn_schedule_kick(struct rpc_conn *c)
{
	if (c->kick_pending || c->dead)
		return;
	if (loop_defer(c->l, conn_kick, c) == 0) {
		c->kick_pending = true;
		c->refs++;
	} else {
		conn_flush(c); /* no memory to defer: send now rather than never */
	}
}

static void conn_on_event(void *arg, uint32_t events)
{
	struct rpc_conn *c = arg;
	c->refs++;
	if (events & EPOLLOUT)
		conn_flush(c);
	if (events & (EPOLLHUP | EPOLLERR))
		c->closing = true; /* both directions gone: nobody to answer */
	else if ((events & EPOLLIN) && !conn_throttled(c) && !c->eof)
		conn_input(c);
	/* Replies produced by the calls just read go out in this pass's kick. */
	conn_settle(c);
	conn_unref(c);
}

bool rpc_conn_dead(const struct rpc_conn *c)
{
	return c->dead;
}

void rpc_finish(struct rpc_callx *x, struct rpc_out *out)
{
	struct rpc_conn *c = x->conn;
	if (x->zdr_live)
		libnfs_zdr_destroy(&x->zdr);
	bool was_throttled = conn_throttled(c);
	c->inflight--;
	c->inflight_bytes -= x->rec_len;
	free(x->rec);
	free(x);
	if (out && c->dead) {
		out_free(out);
	} else if (out) {
		out->next = NULL;
		*c->out_tail = out;
		c->out_tail = &out->next;
		c->inflight_bytes += out_total(out);
		conn_schedule_kick(c);
	} else if ((was_throttled && !conn_throttled(c)) || (c->eof && c->inflight == 0)) {
		conn_schedule_kick(c);
	}
	conn_unref(c);
}

int rpc_conn_new(struct rpc_server *s, int fd, const struct sockaddr_storage *peer)
{
	struct rpc_conn *c = calloc(1, sizeof(*c));
	uint8_t *in = malloc(RPC_INBUF);
	if (!c || !in) {
		free(c);
		free(in);
		return -ENOMEM;
	}
	c->s = s;
	c->l = s->l;
	c->fd = fd;
	c->refs = 1;
	c->in = in;
	c->out_tail = &c->out_head;
	c->peer = *peer;
	socklen_t llen = sizeof(c->local);
	getsockname(fd, (struct sockaddr *)&c->local, &llen);
	int r = loop_add_fd(s->l, fd, EPOLLIN, conn_on_event, c);
	if (r < 0) {
		free(in);
		free(c);
		return r;
	}
	c->events = EPOLLIN;
	c->next = s->conns;
	if (s->conns)
		s->conns->prev = c;
	s->conns = c;
	s->nconns++;
	return 0;
}

/*
 * test_client: the replica client against a scripted peer on a real 127.0.0.1 socket (the
 * test plays the server byte by byte): reply matching out of order, direct reads into rbuf,
 * checksum and size errors, forged handles, transport failures (every pending request fails
 * once, then closed() once) and rclient_close() from inside callbacks.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cmocka.h>

#include "replica/client.h"
#include "replica/loop.h"
#include "replica/proto.h"
#include "tests/unit/loop_wait.h"

#define PEER_BUF (20u << 20)

struct peer {
	int lfd, fd;
	uint16_t port;
	uint8_t *buf; /* received request bytes */
	size_t got;
	struct proto_req reqs[64];
	uint8_t *payloads[64];
	int nreqs;
};

struct fx {
	struct loop *l;
	struct peer p;
	struct rclient *c;
	int connected_calls, connected_res;
	int closed_calls, closed_err;
	/* what callbacks do */
	bool close_in_connected, close_in_closed;
};

struct req_state {
	struct fx *f;
	int calls;
	int status;
	bool had_rep;
	const uint8_t *payload;
	uint32_t len;
	uint8_t copy[64];
	bool close_client;
};

/* ---- loop driving ---- */

static bool int_positive(void *arg)
{
	return *(int *)arg > 0;
}

/* ---- the scripted peer ---- */

static void peer_listen(struct peer *p)
{
	p->lfd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
	p->fd = -1;
	struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
	socklen_t len = sizeof(a);
	assert_int_equal(bind(p->lfd, (struct sockaddr *)&a, sizeof(a)), 0);
	assert_int_equal(listen(p->lfd, 4), 0);
	assert_int_equal(getsockname(p->lfd, (struct sockaddr *)&a, &len), 0);
	p->port = ntohs(a.sin_port);
	p->buf = malloc(PEER_BUF);
}

static bool peer_accepted(void *arg)
{
	struct peer *p = arg;
	if (p->fd < 0)
		p->fd = accept(p->lfd, NULL, NULL);
	return p->fd >= 0;
}

struct nreq_want {
	struct peer *p;
	int n;
};

/* Receives until n requests (headers and payloads) have arrived. */
static bool peer_has(void *arg)
{
	struct nreq_want *w = arg;
	struct peer *p = w->p;
	for (;;) {
		ssize_t n = recv(p->fd, p->buf + p->got, PEER_BUF - p->got, MSG_DONTWAIT);
		if (n <= 0)
			break;
		p->got += (size_t)n;
	}
	size_t off = 0;
	p->nreqs = 0;
	while (p->got - off >= PROTO_REQ_SIZE && p->nreqs < 64) {
		struct proto_req r;
		assert_int_equal(proto_req_decode(p->buf + off, &r), 0);
		if (p->got - off < PROTO_REQ_SIZE + r.payload_len)
			break;
		p->reqs[p->nreqs] = r;
		p->payloads[p->nreqs++] = p->buf + off + PROTO_REQ_SIZE;
		off += PROTO_REQ_SIZE + r.payload_len;
	}
	return p->nreqs >= w->n;
}

static void peer_wait_reqs(struct fx *f, int n)
{
	struct nreq_want w = {&f->p, n};
	assert_true(run_until(f->l, peer_has, &w, 5000));
}

static bool always(void *arg);

/* Sends without blocking the test thread: the client (same thread) must read meanwhile. */
static void peer_send(struct loop *l, struct peer *p, const void *buf, size_t len)
{
	size_t sent = 0;
	while (sent < len) {
		ssize_t n = send(p->fd, (const uint8_t *)buf + sent, len - sent,
				 MSG_NOSIGNAL | MSG_DONTWAIT);
		if (n > 0)
			sent += (size_t)n;
		else
			run_until(l, always, NULL, 10);
	}
}

static void peer_reply(struct loop *l, struct peer *p, const struct proto_req *req, int status,
		       const void *payload, uint32_t len, uint64_t hash_xor)
{
	struct proto_rep rep = {.op = req->op,
				.handle = req->handle,
				.status = status,
				.payload_len = len,
				.epoch = 9,
				.payload_hash = (len ? proto_hash(payload, len) : 0) ^ hash_xor};
	uint8_t hdr[PROTO_REP_SIZE];
	proto_rep_encode(&rep, hdr);
	peer_send(l, p, hdr, sizeof(hdr));
	peer_send(l, p, payload, len);
}

/* ---- client callbacks ---- */

static void on_connected(void *arg, int res)
{
	struct fx *f = arg;
	f->connected_calls++;
	f->connected_res = res;
	if (f->close_in_connected)
		rclient_close(f->c);
}

static void on_closed(void *arg, int err)
{
	struct fx *f = arg;
	f->closed_calls++;
	f->closed_err = err;
	if (f->close_in_closed)
		rclient_close(f->c);
}

static void on_reply(void *arg, int status, const struct proto_rep *rep, const uint8_t *payload,
		     uint32_t len)
{
	struct req_state *s = arg;
	s->calls++;
	s->status = status;
	s->had_rep = rep != NULL;
	s->payload = payload;
	s->len = len;
	if (len && len <= sizeof(s->copy))
		memcpy(s->copy, payload, len);
	if (s->close_client)
		rclient_close(s->f->c);
}

static int setup(void **state)
{
	struct fx *f = calloc(1, sizeof(*f));
	assert_int_equal(loop_new(&f->l), 0);
	peer_listen(&f->p);
	*state = f;
	return 0;
}

static int teardown(void **state)
{
	struct fx *f = *state;
	run_until(f->l, always, NULL, 50);
	if (f->p.fd >= 0)
		close(f->p.fd);
	close(f->p.lfd);
	free(f->p.buf);
	loop_free(f->l);
	free(f);
	return 0;
}

static void connect_client(struct fx *f)
{
	struct rclient_cbs cbs = {.connected = on_connected, .closed = on_closed, .arg = f};
	assert_int_equal(rclient_connect(f->l, "127.0.0.1", f->p.port, &cbs, &f->c), 0);
	assert_int_equal(f->connected_calls, 0); /* never from inside connect */
	assert_true(run_until(f->l, peer_accepted, &f->p, 2000));
	assert_true(run_until(f->l, int_positive, &f->connected_calls, 2000));
	assert_int_equal(f->connected_res, 0);
}

static void send_req(struct fx *f, uint16_t op, const void *payload, uint32_t plen, void *rbuf,
		     uint32_t rlen, struct req_state *s)
{
	struct proto_req req = {.op = op,
				.epoch = 3,
				.offset = 4096,
				.length = op == PROTO_WRITE ? plen : rlen,
				.payload_len = plen};
	s->f = f;
	assert_int_equal(rclient_send(f->c, &req, payload, rbuf, rlen, on_reply, s), 0);
}

/* ---- tests ---- */

static void test_out_of_order(void **state)
{
	struct fx *f = *state;
	connect_client(f);
	struct req_state s[3] = {0};
	uint8_t rbuf[3][100];
	const char *wdata = "hello replica";
	send_req(f, PROTO_READ, NULL, 0, rbuf[0], 100, &s[0]);
	send_req(f, PROTO_WRITE, wdata, (uint32_t)strlen(wdata), NULL, 0, &s[1]);
	send_req(f, PROTO_INFO, NULL, 0, NULL, 0, &s[2]);
	assert_int_equal(rclient_inflight(f->c), 3);
	peer_wait_reqs(f, 3);
	struct peer *p = &f->p;
	/* The request went out as sent, with its payload and checksum. */
	assert_int_equal(p->reqs[0].op, PROTO_READ);
	assert_int_equal(p->reqs[0].epoch, 3);
	assert_int_equal(p->reqs[1].payload_len, strlen(wdata));
	assert_memory_equal(p->payloads[1], wdata, strlen(wdata));
	assert_true(p->reqs[1].payload_hash == proto_hash(wdata, strlen(wdata)));
	assert_true(p->reqs[0].handle != p->reqs[1].handle);
	/* Replies in reverse order. */
	peer_reply(f->l, p, &p->reqs[2], 0, "{\"x\":1}", 7, 0);
	peer_reply(f->l, p, &p->reqs[1], -ENOSPC, NULL, 0, 0);
	uint8_t data[100];
	for (int i = 0; i < 100; i++)
		data[i] = (uint8_t)(i * 7);
	peer_reply(f->l, p, &p->reqs[0], 0, data, 100, 0);
	assert_true(run_until(f->l, int_positive, &s[0].calls, 2000));
	assert_int_equal(s[2].calls, 1);
	assert_int_equal(s[2].status, 0);
	assert_int_equal(s[2].len, 7);
	assert_memory_equal(s[2].copy, "{\"x\":1}", 7);
	assert_int_equal(s[1].calls, 1);
	assert_int_equal(s[1].status, -ENOSPC);
	assert_true(s[1].had_rep);
	assert_int_equal(s[0].calls, 1);
	assert_int_equal(s[0].status, 0);
	assert_ptr_equal(s[0].payload, rbuf[0]); /* read straight into the caller's buffer */
	assert_memory_equal(rbuf[0], data, 100);
	assert_int_equal(rclient_inflight(f->c), 0);
	/* A replayed handle is not ours any more: the connection fails. */
	peer_reply(f->l, p, &p->reqs[2], 0, NULL, 0, 0);
	assert_true(run_until(f->l, int_positive, &f->closed_calls, 2000));
	assert_int_equal(f->closed_err, -EPROTO);
	assert_int_equal(rclient_send(f->c, &(struct proto_req){.op = PROTO_INFO}, NULL, NULL, 0,
				      on_reply, &s[2]),
			 -ENOTCONN);
	rclient_close(f->c);
	assert_int_equal(f->closed_calls, 1);
	assert_int_equal(s[0].calls + s[1].calls + s[2].calls, 3);
}

static void test_bad_reply_payloads(void **state)
{
	struct fx *f = *state;
	connect_client(f);
	struct req_state s[3] = {0};
	uint8_t small[16];
	send_req(f, PROTO_READ, NULL, 0, small, sizeof(small), &s[0]);
	send_req(f, PROTO_INFO, NULL, 0, NULL, 0, &s[1]);
	send_req(f, PROTO_INFO, NULL, 0, NULL, 0, &s[2]);
	peer_wait_reqs(f, 3);
	struct peer *p = &f->p;
	uint8_t data[64];
	memset(data, 0xab, sizeof(data));
	peer_reply(f->l, p, &p->reqs[0], 0, data, sizeof(data), 0); /* longer than rbuf */
	peer_reply(f->l, p, &p->reqs[1], 0, data, 20, 1);	    /* checksum mismatch */
	peer_reply(f->l, p, &p->reqs[2], 0, data, 20, 0);	    /* fine: framing survived */
	assert_true(run_until(f->l, int_positive, &s[2].calls, 2000));
	assert_int_equal(s[0].status, -EMSGSIZE);
	assert_int_equal(s[1].status, -EBADMSG);
	assert_int_equal(s[2].status, 0);
	assert_int_equal(s[2].len, 20);
	assert_int_equal(f->closed_calls, 0);
	/* A garbage reply header fails everything still pending, once. */
	struct req_state t[2] = {0};
	send_req(f, PROTO_FLUSH, NULL, 0, NULL, 0, &t[0]);
	send_req(f, PROTO_FLUSH, NULL, 0, NULL, 0, &t[1]);
	peer_wait_reqs(f, 5);
	uint8_t junk[PROTO_REP_SIZE];
	memset(junk, 'z', sizeof(junk));
	assert_int_equal(send(p->fd, junk, sizeof(junk), 0), (ssize_t)sizeof(junk));
	assert_true(run_until(f->l, int_positive, &f->closed_calls, 2000));
	assert_int_equal(t[0].calls, 1);
	assert_int_equal(t[1].calls, 1);
	assert_int_equal(t[0].status, -EPROTO);
	assert_false(t[0].had_rep);
	assert_int_equal(f->closed_calls, 1);
	rclient_close(f->c);
	assert_int_equal(f->closed_calls, 1);
}

static void test_peer_closes(void **state)
{
	struct fx *f = *state;
	connect_client(f);
	struct req_state s[4] = {0};
	for (int i = 0; i < 4; i++)
		send_req(f, PROTO_FLUSH, NULL, 0, NULL, 0, &s[i]);
	peer_wait_reqs(f, 4);
	peer_reply(f->l, &f->p, &f->p.reqs[1], 0, NULL, 0, 0);
	assert_true(run_until(f->l, int_positive, &s[1].calls, 2000));
	close(f->p.fd);
	f->p.fd = -1;
	assert_true(run_until(f->l, int_positive, &f->closed_calls, 2000));
	for (int i = 0; i < 4; i++)
		assert_int_equal(s[i].calls, 1);
	assert_int_equal(s[0].status, -ECONNRESET);
	assert_int_equal(s[1].status, 0);
	assert_int_equal(s[3].status, -ECONNRESET);
	assert_int_equal(f->closed_err, -ECONNRESET);
	rclient_close(f->c);
}

static void test_close_in_reply(void **state)
{
	struct fx *f = *state;
	connect_client(f);
	struct req_state s[3] = {0};
	for (int i = 0; i < 3; i++)
		send_req(f, PROTO_FLUSH, NULL, 0, NULL, 0, &s[i]);
	s[0].close_client = true;
	peer_wait_reqs(f, 3);
	/* Two replies in one segment: the second must not be delivered after the close. */
	peer_reply(f->l, &f->p, &f->p.reqs[0], 0, NULL, 0, 0);
	peer_reply(f->l, &f->p, &f->p.reqs[2], 0, NULL, 0, 0);
	assert_true(run_until(f->l, int_positive, &s[0].calls, 2000));
	assert_int_equal(s[0].status, 0);
	assert_int_equal(s[1].calls, 1);
	assert_int_equal(s[1].status, -ECANCELED);
	assert_int_equal(s[2].calls, 1);
	assert_int_equal(s[2].status, -ECANCELED);
	assert_int_equal(f->closed_calls, 1);
	assert_int_equal(f->closed_err, 0);
	run_until(f->l, always, NULL, 20);
}

static void test_close_in_closed(void **state)
{
	struct fx *f = *state;
	f->close_in_closed = true;
	connect_client(f);
	struct req_state s = {0};
	send_req(f, PROTO_FLUSH, NULL, 0, NULL, 0, &s);
	peer_wait_reqs(f, 1);
	close(f->p.fd);
	f->p.fd = -1;
	assert_true(run_until(f->l, int_positive, &f->closed_calls, 2000));
	assert_int_equal(s.calls, 1);
	assert_int_equal(f->closed_calls, 1);
	run_until(f->l, always, NULL, 20);
}

static void test_close_before_connected(void **state)
{
	struct fx *f = *state;
	struct rclient_cbs cbs = {.connected = on_connected, .closed = on_closed, .arg = f};
	assert_int_equal(rclient_connect(f->l, "127.0.0.1", f->p.port, &cbs, &f->c), 0);
	struct req_state s = {0};
	send_req(f, PROTO_INFO, NULL, 0, NULL, 0, &s);
	/* Closed straight away, outside any callback: freed now, callbacks ran once. */
	rclient_close(f->c);
	assert_int_equal(s.calls, 1);
	assert_int_equal(s.status, -ECANCELED);
	assert_int_equal(f->closed_calls, 1);
	run_until(f->l, always, NULL, 20);
	assert_int_equal(s.calls, 1);
}

static void test_connect_refused(void **state)
{
	struct fx *f = *state;
	/* Nothing listens on the port any more. */
	close(f->p.lfd);
	f->p.lfd = socket(AF_INET, SOCK_STREAM, 0);
	struct rclient_cbs cbs = {.connected = on_connected, .closed = on_closed, .arg = f};
	assert_int_equal(rclient_connect(f->l, "127.0.0.1", f->p.port, &cbs, &f->c), 0);
	struct req_state s = {0};
	send_req(f, PROTO_INFO, NULL, 0, NULL, 0, &s);
	assert_true(run_until(f->l, int_positive, &f->closed_calls, 2000));
	assert_int_equal(f->connected_calls, 1);
	assert_int_equal(f->connected_res, -ECONNREFUSED);
	assert_int_equal(s.calls, 1);
	assert_int_equal(s.status, -ECONNREFUSED);
	assert_int_equal(f->closed_err, -ECONNREFUSED);
	rclient_close(f->c);
	assert_int_equal(f->closed_calls, 1);
}

static void test_close_in_connected(void **state)
{
	struct fx *f = *state;
	f->close_in_connected = true;
	struct rclient_cbs cbs = {.connected = on_connected, .closed = on_closed, .arg = f};
	assert_int_equal(rclient_connect(f->l, "127.0.0.1", f->p.port, &cbs, &f->c), 0);
	struct req_state s = {0};
	send_req(f, PROTO_INFO, NULL, 0, NULL, 0, &s);
	assert_true(run_until(f->l, int_positive, &f->closed_calls, 2000));
	assert_int_equal(f->connected_calls, 1);
	assert_int_equal(s.calls, 1);
	assert_int_equal(s.status, -ECANCELED);
	run_until(f->l, always, NULL, 20);
}

static void test_large_payloads(void **state)
{
	struct fx *f = *state;
	connect_client(f);
	uint32_t n = PROTO_MAX_IO;
	uint8_t *w = malloc(n), *r = malloc(n);
	for (uint32_t i = 0; i < n; i++)
		w[i] = (uint8_t)(i * 31 + (i >> 12));
	struct req_state s[3] = {0};
	send_req(f, PROTO_WRITE, w, n, NULL, 0, &s[0]);
	send_req(f, PROTO_READ, NULL, 0, r, n, &s[1]);
	send_req(f, PROTO_HASH, NULL, 0, NULL, 0, &s[2]);
	peer_wait_reqs(f, 3);
	struct peer *p = &f->p;
	assert_int_equal(p->reqs[0].payload_len, n);
	assert_memory_equal(p->payloads[0], w, n);
	peer_reply(f->l, p, &p->reqs[1], 0, w, n, 0);
	/* A reply without rbuf goes through a scratch buffer. */
	peer_reply(f->l, p, &p->reqs[2], 0, w, n, 0);
	peer_reply(f->l, p, &p->reqs[0], 0, NULL, 0, 0);
	assert_true(run_until(f->l, int_positive, &s[0].calls, 5000));
	assert_int_equal(s[1].status, 0);
	assert_memory_equal(r, w, n);
	assert_int_equal(s[2].status, 0);
	assert_int_equal(s[2].len, n);
	rclient_close(f->c);
	free(w);
	free(r);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test_setup_teardown(test_out_of_order, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_bad_reply_payloads, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_peer_closes, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_close_in_reply, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_close_in_closed, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_close_before_connected, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_connect_refused, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_close_in_connected, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_large_payloads, setup, teardown),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}

/*
 * test_server: the replica server over real sockets on 127.0.0.1 with real stores in a
 * mkdtemp directory, driven by the replica client (replica/client.h) and by raw sockets
 * sending hostile frames. The loop runs in the test thread until a condition holds.
 */
#include <errno.h>
#include <ftw.h>
#include <jansson.h>
#include <netinet/in.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>
#include <arpa/inet.h>

#include <cmocka.h>

#include "replica/client.h"
#include "replica/loop.h"
#include "replica/proto.h"
#include "replica/server.h"
#include "tests/unit/loop_wait.h"

#define VOL_SIZE (64ull << 20)

struct fx {
	char dir[64];
	struct loop *l;
	struct replica_server *srv;
	uint16_t port;
};

/* ---- loop driving ---- */

static bool never(void *arg)
{
	(void)arg;
	return false;
}

/* ---- fixture ---- */

static uint16_t free_port(void)
{
	int fd = socket(AF_INET, SOCK_STREAM, 0);
	struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
	socklen_t len = sizeof(a);
	assert_int_equal(bind(fd, (struct sockaddr *)&a, sizeof(a)), 0);
	assert_int_equal(getsockname(fd, (struct sockaddr *)&a, &len), 0);
	close(fd);
	return ntohs(a.sin_port);
}

static int rm_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
	(void)st;
	(void)flag;
	(void)ftw;
	return remove(path);
}

static int setup(void **state)
{
	struct fx *f = calloc(1, sizeof(*f));
	strcpy(f->dir, "/tmp/test_server.XXXXXX");
	assert_non_null(mkdtemp(f->dir));
	assert_int_equal(loop_new(&f->l), 0);
	f->port = free_port();
	assert_int_equal(replica_server_new(f->l, "node1", f->dir, "127.0.0.1", f->port, &f->srv),
			 0);
	struct store_member m = {.node = "node1", .in_sync = true};
	assert_int_equal(replica_server_create(f->srv, "vol1", VOL_SIZE, &m, 1), 0);
	*state = f;
	return 0;
}

static int teardown(void **state)
{
	struct fx *f = *state;
	replica_server_free(f->srv);
	/* Let deferred frees (fd watches) and closing stores' last I/O run. */
	run_until(f->l, never, NULL, 50);
	loop_free(f->l);
	nftw(f->dir, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
	free(f);
	return 0;
}

/* ---- client helpers ---- */

struct conn {
	struct rclient *c;
	bool connected_done;
	int connected_res;
	bool closed;
	int closed_err;
};

static void on_connected(void *arg, int res)
{
	struct conn *k = arg;
	k->connected_done = true;
	k->connected_res = res;
}

static void on_closed(void *arg, int err)
{
	struct conn *k = arg;
	k->closed = true;
	k->closed_err = err;
}

struct call {
	bool done;
	int status;
	struct proto_rep rep;
	uint8_t *payload;
	uint32_t len;
	int *counter;
};

static void call_cb(void *arg, int status, const struct proto_rep *rep, const uint8_t *p,
		    uint32_t len)
{
	struct call *k = arg;
	k->done = true;
	k->status = status;
	if (rep)
		k->rep = *rep;
	free(k->payload);
	k->payload = NULL;
	k->len = len;
	if (len) {
		k->payload = malloc(len + 1);
		memcpy(k->payload, p, len);
		k->payload[len] = 0;
	}
	if (k->counter)
		(*k->counter)++;
}

static bool call_done(void *arg)
{
	return ((struct call *)arg)->done;
}

static void connect_to(struct fx *f, struct conn *k)
{
	memset(k, 0, sizeof(*k));
	struct rclient_cbs cbs = {.connected = on_connected, .closed = on_closed, .arg = k};
	assert_int_equal(rclient_connect(f->l, "127.0.0.1", f->port, &cbs, &k->c), 0);
	assert_true(run_until(f->l, call_done, &k->connected_done, 2000));
	assert_int_equal(k->connected_res, 0);
}

/* Sends one request and waits for its reply; returns the status. */
static int call(struct fx *f, struct conn *k, struct proto_req *req, const void *payload,
		void *rbuf, uint32_t rbuf_len, struct call *out)
{
	struct call local = {0};
	if (!out)
		out = &local;
	free(out->payload);
	memset(out, 0, sizeof(*out));
	assert_int_equal(rclient_send(k->c, req, payload, rbuf, rbuf_len, call_cb, out), 0);
	assert_true(run_until(f->l, call_done, out, 10000));
	free(local.payload);
	return out->status;
}

static int op_name(struct fx *f, struct conn *k, uint16_t op, uint64_t epoch, const char *name,
		   struct call *out)
{
	struct proto_req req = {
	    .op = op, .epoch = epoch, .payload_len = name ? (uint32_t)strlen(name) : 0};
	return call(f, k, &req, name, NULL, 0, out);
}

static int hello(struct fx *f, struct conn *k, const char *name, struct call *out)
{
	return op_name(f, k, PROTO_HELLO, 0, name, out);
}

static int do_open(struct fx *f, struct conn *k, uint64_t epoch)
{
	struct proto_req req = {.op = PROTO_OPEN, .epoch = epoch};
	return call(f, k, &req, NULL, NULL, 0, NULL);
}

static int do_write(struct fx *f, struct conn *k, uint64_t epoch, uint64_t off, const void *buf,
		    uint32_t len, uint32_t flags)
{
	struct proto_req req = {.op = PROTO_WRITE,
				.epoch = epoch,
				.offset = off,
				.length = len,
				.payload_len = len,
				.flags = flags};
	return call(f, k, &req, buf, NULL, 0, NULL);
}

static int do_read(struct fx *f, struct conn *k, uint64_t epoch, uint64_t off, void *buf,
		   uint32_t len)
{
	struct proto_req req = {.op = PROTO_READ, .epoch = epoch, .offset = off, .length = len};
	struct call out = {0};
	int r = call(f, k, &req, NULL, buf, len, &out);
	if (r == 0)
		assert_int_equal(out.len, len);
	free(out.payload);
	return r;
}

struct count_want {
	int *n;
	int target;
};

static bool count_reached(void *arg)
{
	struct count_want *w = arg;
	return *w->n >= w->target;
}

static bool conn_closed(void *arg)
{
	return ((struct conn *)arg)->closed;
}

static void close_conn(struct fx *f, struct conn *k)
{
	rclient_close(k->c);
	run_until(f->l, always, NULL, 100);
}

static void fill_random(uint8_t *p, size_t n, unsigned seed)
{
	uint64_t x = seed * 0x9e3779b97f4a7c15ull + 1;
	for (size_t i = 0; i < n; i++) {
		x ^= x << 13;
		x ^= x >> 7;
		x ^= x << 17;
		p[i] = (uint8_t)x;
	}
}

static json_t *payload_json(const struct call *k)
{
	json_error_t err;
	json_t *j = json_loadb((const char *)k->payload, k->len, 0, &err);
	assert_non_null(j);
	return j;
}

/* ---- raw socket helpers (hostile peers) ---- */

struct raw {
	int fd;
	uint8_t buf[4096];
	size_t got;
	bool eof;
};

static void raw_connect(struct fx *f, struct raw *r)
{
	memset(r, 0, sizeof(*r));
	r->fd = socket(AF_INET, SOCK_STREAM, 0);
	struct sockaddr_in a = {.sin_family = AF_INET,
				.sin_port = htons(f->port),
				.sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
	assert_int_equal(connect(r->fd, (struct sockaddr *)&a, sizeof(a)), 0);
}

static void raw_send_req(struct raw *r, struct proto_req *req, const void *payload, bool good_hash)
{
	uint8_t hdr[PROTO_REQ_SIZE];
	if (req->payload_len)
		req->payload_hash = proto_hash(payload, req->payload_len) ^ (good_hash ? 0 : 1);
	proto_req_encode(req, hdr);
	assert_int_equal(send(r->fd, hdr, sizeof(hdr), MSG_NOSIGNAL), (ssize_t)sizeof(hdr));
	if (req->payload_len)
		assert_int_equal(send(r->fd, payload, req->payload_len, MSG_NOSIGNAL),
				 (ssize_t)req->payload_len);
}

struct raw_want {
	struct raw *r;
	size_t n;
};

static bool raw_poll(void *arg)
{
	struct raw_want *w = arg;
	struct raw *r = w->r;
	while (!r->eof && r->got < sizeof(r->buf)) {
		ssize_t n = recv(r->fd, r->buf + r->got, sizeof(r->buf) - r->got, MSG_DONTWAIT);
		if (n > 0)
			r->got += (size_t)n;
		else if (n == 0 || (errno != EAGAIN && errno != EWOULDBLOCK))
			r->eof = true;
		else
			break;
	}
	return r->eof || r->got >= w->n;
}

/* Waits for a reply header (and its payload) on r; returns false on EOF. */
static bool raw_reply(struct fx *f, struct raw *r, struct proto_rep *rep)
{
	struct raw_want w = {.r = r, .n = PROTO_REP_SIZE};
	assert_true(run_until(f->l, raw_poll, &w, 3000));
	if (r->got < PROTO_REP_SIZE)
		return false;
	assert_int_equal(proto_rep_decode(r->buf, rep), 0);
	w.n = PROTO_REP_SIZE + rep->payload_len;
	assert_true(run_until(f->l, raw_poll, &w, 3000));
	assert_true(r->got >= w.n);
	memmove(r->buf, r->buf + w.n, r->got - w.n);
	r->got -= w.n;
	return true;
}

static void raw_expect_closed(struct fx *f, struct raw *r)
{
	struct raw_want w = {.r = r, .n = SIZE_MAX};
	assert_true(run_until(f->l, raw_poll, &w, 3000));
	assert_true(r->eof);
	assert_int_equal(r->got, 0);
}

static void raw_hello(struct fx *f, struct raw *r)
{
	struct proto_req req = {.op = PROTO_HELLO, .handle = 1, .payload_len = 4};
	struct proto_rep rep;
	raw_send_req(r, &req, "vol1", true);
	assert_true(raw_reply(f, r, &rep));
	assert_int_equal(rep.status, 0);
	assert_true(rep.handle == 1);
}

struct nconns_want {
	struct replica_server *s;
	uint32_t n;
};

static bool nconns_is(void *arg)
{
	struct nconns_want *w = arg;
	return replica_server_nconns(w->s) == w->n;
}

static void wait_nconns(struct fx *f, uint32_t n)
{
	struct nconns_want w = {.s = f->srv, .n = n};
	assert_true(run_until(f->l, nconns_is, &w, 3000));
}

/* ---- tests ---- */

static void test_hello_info(void **state)
{
	struct fx *f = *state;
	struct conn k;
	struct call out = {0};
	connect_to(f, &k);
	wait_nconns(f, 1);
	assert_int_equal(hello(f, &k, "vol1", &out), 0);
	json_t *j = payload_json(&out);
	assert_string_equal(json_string_value(json_object_get(j, "name")), "vol1");
	assert_string_equal(json_string_value(json_object_get(j, "node")), "node1");
	assert_int_equal(json_integer_value(json_object_get(j, "size")), VOL_SIZE);
	json_decref(j);

	struct proto_req req = {.op = PROTO_INFO};
	assert_int_equal(call(f, &k, &req, NULL, NULL, 0, &out), 0);
	j = payload_json(&out);
	assert_string_equal(json_string_value(json_object_get(j, "node")), "node1");
	assert_int_equal(json_integer_value(json_object_get(j, "epoch")), 0);
	json_t *members = json_object_get(j, "members");
	assert_int_equal(json_array_size(members), 1);
	assert_string_equal(json_string_value(json_object_get(json_array_get(members, 0), "node")),
			    "node1");
	assert_non_null(json_object_get(j, "uuid"));
	assert_non_null(json_object_get(j, "clean"));
	assert_non_null(json_object_get(j, "snapshots"));
	json_decref(j);
	free(out.payload);
	close_conn(f, &k);
	wait_nconns(f, 0);
}

static void test_hello_errors(void **state)
{
	struct fx *f = *state;
	struct conn k;
	connect_to(f, &k);
	/* Before HELLO nothing but HELLO is allowed. */
	struct proto_req req = {.op = PROTO_INFO};
	assert_int_equal(call(f, &k, &req, NULL, NULL, 0, NULL), -EPROTO);
	struct proto_req rd = {.op = PROTO_READ, .length = 4096};
	uint8_t buf[4096];
	assert_int_equal(call(f, &k, &rd, NULL, buf, sizeof(buf), NULL), -EPROTO);
	assert_int_equal(hello(f, &k, "nosuchvol", NULL), -ENOENT);
	assert_int_equal(hello(f, &k, "../etc", NULL), -EINVAL);
	assert_int_equal(hello(f, &k, "", NULL), -EINVAL);
	/* Still usable after errors. */
	assert_int_equal(hello(f, &k, "vol1", NULL), 0);
	close_conn(f, &k);
}

static void test_read_write(void **state)
{
	struct fx *f = *state;
	struct conn k;
	connect_to(f, &k);
	assert_int_equal(hello(f, &k, "vol1", NULL), 0);
	assert_int_equal(do_open(f, &k, 1), 0);
	uint32_t big = PROTO_MAX_IO;
	uint8_t *w = malloc(big), *r = malloc(big);
	fill_random(w, big, 1);
	/* unaligned small I/O */
	assert_int_equal(do_write(f, &k, 1, 4096 + 123, w, 10000, 0), 0);
	memset(r, 0, big);
	assert_int_equal(do_read(f, &k, 1, 4096 + 123, r, 10000), 0);
	assert_memory_equal(w, r, 10000);
	/* the largest I/O the protocol allows */
	fill_random(w, big, 2);
	assert_int_equal(do_write(f, &k, 1, 16 << 20, w, big, 0), 0);
	memset(r, 0, big);
	assert_int_equal(do_read(f, &k, 1, 16 << 20, r, big), 0);
	assert_memory_equal(w, r, big);
	/* unwritten space reads as zeros */
	assert_int_equal(do_read(f, &k, 1, 40 << 20, r, 65536), 0);
	for (int i = 0; i < 65536; i++)
		assert_int_equal(r[i], 0);
	/* past the end */
	assert_true(do_read(f, &k, 1, VOL_SIZE - 4096, r, 8192) < 0);
	assert_true(do_read(f, &k, 1, UINT64_MAX - 100, r, 4096) < 0);
	assert_true(do_write(f, &k, 1, UINT64_MAX - 100, w, 4096, 0) < 0);
	struct proto_req hostile = {
	    .op = PROTO_TRIM, .epoch = 1, .offset = 4096, .length = UINT64_MAX};
	assert_true(call(f, &k, &hostile, NULL, NULL, 0, NULL) < 0);
	hostile.op = PROTO_ZERO;
	hostile.offset = UINT64_MAX - 4095;
	hostile.length = 8192;
	assert_true(call(f, &k, &hostile, NULL, NULL, 0, NULL) < 0);
	hostile.op = PROTO_HASH;
	hostile.arg = 65536;
	hostile.length = 65536;
	assert_true(call(f, &k, &hostile, NULL, NULL, 0, NULL) < 0);
	/* FUA and FLUSH */
	assert_int_equal(do_write(f, &k, 1, 0, w, 4096, PROTO_FLAG_FUA), 0);
	struct proto_req fl = {.op = PROTO_FLUSH, .epoch = 1};
	assert_int_equal(call(f, &k, &fl, NULL, NULL, 0, NULL), 0);
	/* TRIM and ZERO read back zeros */
	struct proto_req tr = {.op = PROTO_ZERO, .epoch = 1, .offset = 16 << 20, .length = 8192};
	assert_int_equal(call(f, &k, &tr, NULL, NULL, 0, NULL), 0);
	tr.op = PROTO_TRIM;
	tr.offset = (16 << 20) + 65536;
	assert_int_equal(call(f, &k, &tr, NULL, NULL, 0, NULL), 0);
	assert_int_equal(do_read(f, &k, 1, 16 << 20, r, 65536 + 8192), 0);
	for (int i = 0; i < 8192; i++)
		assert_int_equal(r[i], 0);
	assert_memory_equal(r + 8192, w + 8192, 65536 - 8192);
	for (int i = 0; i < 8192; i++)
		assert_int_equal(r[65536 + i], 0);
	free(w);
	free(r);
	close_conn(f, &k);
}

static void test_pipelined(void **state)
{
	struct fx *f = *state;
	struct conn k;
	connect_to(f, &k);
	assert_int_equal(hello(f, &k, "vol1", NULL), 0);
	assert_int_equal(do_open(f, &k, 1), 0);
	enum { N = 600, SZ = 16384 };
	uint8_t *w = malloc((size_t)N * SZ), *r = calloc(N, SZ);
	fill_random(w, (size_t)N * SZ, 3);
	struct call *calls = calloc(N, sizeof(*calls));
	int ndone = 0;
	/* More than the server's in-flight limit: it must throttle, not fail. */
	for (int i = 0; i < N; i++) {
		struct proto_req req = {.op = PROTO_WRITE,
					.epoch = 1,
					.offset = (uint64_t)i * SZ,
					.length = SZ,
					.payload_len = SZ};
		calls[i].counter = &ndone;
		assert_int_equal(
		    rclient_send(k.c, &req, w + (size_t)i * SZ, NULL, 0, call_cb, &calls[i]), 0);
	}
	assert_int_equal(rclient_inflight(k.c), N);
	struct count_want cw = {&ndone, N};
	assert_true(run_until(f->l, count_reached, &cw, 10000));
	for (int i = 0; i < N; i++)
		assert_int_equal(calls[i].status, 0);
	ndone = 0;
	for (int i = 0; i < N; i++) {
		struct proto_req req = {
		    .op = PROTO_READ, .epoch = 1, .offset = (uint64_t)i * SZ, .length = SZ};
		calls[i].done = false;
		assert_int_equal(
		    rclient_send(k.c, &req, NULL, r + (size_t)i * SZ, SZ, call_cb, &calls[i]), 0);
	}
	assert_true(run_until(f->l, count_reached, &cw, 10000));
	for (int i = 0; i < N; i++)
		assert_int_equal(calls[i].status, 0);
	assert_memory_equal(w, r, (size_t)N * SZ);
	assert_int_equal(rclient_inflight(k.c), 0);
	for (int i = 0; i < N; i++)
		free(calls[i].payload);
	free(calls);
	free(w);
	free(r);
	close_conn(f, &k);
}

static void test_epochs(void **state)
{
	struct fx *f = *state;
	struct conn a, b;
	struct call out = {0};
	uint8_t buf[4096] = {1, 2, 3};
	connect_to(f, &a);
	connect_to(f, &b);
	assert_int_equal(hello(f, &a, "vol1", NULL), 0);
	assert_int_equal(hello(f, &b, "vol1", NULL), 0);
	struct proto_req req = {.op = PROTO_OPEN, .epoch = 5};
	assert_int_equal(call(f, &a, &req, NULL, NULL, 0, &out), 0);
	assert_int_equal(out.rep.epoch, 5);
	assert_int_equal(do_open(f, &a, 5), -ESTALE);
	assert_int_equal(do_open(f, &b, 4), -ESTALE);
	assert_int_equal(do_write(f, &a, 4, 0, buf, sizeof(buf), 0), -ESTALE);
	assert_int_equal(do_write(f, &a, 6, 0, buf, sizeof(buf), 0), -ESTALE);
	assert_int_equal(do_write(f, &a, 5, 0, buf, sizeof(buf), 0), 0);
	/* Open marks the replica unclean. */
	struct proto_req info = {.op = PROTO_INFO};
	assert_int_equal(call(f, &b, &info, NULL, NULL, 0, &out), 0);
	json_t *j = payload_json(&out);
	assert_int_equal(json_integer_value(json_object_get(j, "epoch")), 5);
	assert_true(json_is_false(json_object_get(j, "clean")));
	json_decref(j);
	/* A second engine takes over: the first is fenced for good. */
	assert_int_equal(do_open(f, &b, 6), 0);
	assert_int_equal(do_write(f, &a, 5, 0, buf, sizeof(buf), 0), -ESTALE);
	struct proto_req fl = {.op = PROTO_FLUSH, .epoch = 5};
	assert_int_equal(call(f, &a, &fl, NULL, NULL, 0, &out), -ESTALE);
	assert_int_equal(out.rep.epoch, 6);
	assert_int_equal(do_write(f, &b, 6, 0, buf, sizeof(buf), 0), 0);
	/* CLOSE by the stale engine is refused; by the current one marks clean. */
	struct proto_req cl = {.op = PROTO_CLOSE, .epoch = 5};
	assert_int_equal(call(f, &a, &cl, NULL, NULL, 0, NULL), -ESTALE);
	cl.epoch = 6;
	assert_int_equal(call(f, &b, &cl, NULL, NULL, 0, NULL), 0);
	assert_int_equal(call(f, &a, &info, NULL, NULL, 0, &out), 0);
	j = payload_json(&out);
	assert_true(json_is_true(json_object_get(j, "clean")));
	json_decref(j);
	free(out.payload);
	close_conn(f, &a);
	close_conn(f, &b);
}

/* HELLO with a session (proto.h): an engine's newer connection fences its older ones. */
static int hello_sess(struct fx *f, struct conn *k, uint64_t engine, uint64_t sess)
{
	struct proto_req req = {.op = PROTO_HELLO, .offset = engine, .arg = sess, .payload_len = 4};
	return call(f, k, &req, "vol1", NULL, 0, NULL);
}

static void test_session_fence(void **state)
{
	struct fx *f = *state;
	enum { SZ = 4096, ENG = 42 };
	uint8_t old[SZ], neu[SZ], got[SZ];
	fill_random(old, SZ, 11);
	fill_random(neu, SZ, 12);
	struct raw a;
	struct proto_rep rep;
	raw_connect(f, &a);
	struct proto_req h = {
	    .op = PROTO_HELLO, .handle = 1, .offset = ENG, .arg = 1, .payload_len = 4};
	raw_send_req(&a, &h, "vol1", true);
	assert_true(raw_reply(f, &a, &rep));
	assert_int_equal(rep.status, 0);
	struct proto_req op = {.op = PROTO_OPEN, .handle = 2, .epoch = 1};
	raw_send_req(&a, &op, NULL, true);
	assert_true(raw_reply(f, &a, &rep));
	assert_int_equal(rep.status, 0);
	struct proto_req w = {
	    .op = PROTO_WRITE, .handle = 3, .epoch = 1, .length = SZ, .payload_len = SZ};
	raw_send_req(&a, &w, old, true);
	assert_true(raw_reply(f, &a, &rep));
	assert_int_equal(rep.status, 0);

	/* A write the engine gave up on: its header is read, its payload still in the pipe. */
	w.handle = 4;
	w.payload_hash = proto_hash(neu, SZ);
	uint8_t hdr[PROTO_REQ_SIZE];
	proto_req_encode(&w, hdr);
	assert_int_equal(send(a.fd, hdr, sizeof(hdr), MSG_NOSIGNAL), (ssize_t)sizeof(hdr));
	assert_int_equal(send(a.fd, neu, SZ / 2, MSG_NOSIGNAL), SZ / 2);
	run_until(f->l, never, NULL, 100);

	/* The engine's new connection. */
	struct conn b;
	connect_to(f, &b);
	assert_int_equal(hello_sess(f, &b, ENG, 2), 0);
	/* The rest of the old write arrives late: it must not be applied. */
	(void)send(a.fd, neu + SZ / 2, SZ / 2, MSG_NOSIGNAL);
	run_until(f->l, never, NULL, 100);
	assert_int_equal(do_read(f, &b, 1, 0, got, SZ), 0);
	assert_memory_equal(got, old, SZ);
	raw_expect_closed(f, &a);
	close(a.fd);

	/* An older session of that engine is refused; other engines and old clients are not. */
	struct conn c;
	connect_to(f, &c);
	assert_int_equal(hello_sess(f, &c, ENG, 1), -ESTALE);
	assert_int_equal(hello_sess(f, &c, ENG + 1, 1), 0);
	assert_int_equal(hello(f, &c, "vol1", NULL), 0);
	assert_int_equal(do_read(f, &b, 1, 0, got, SZ), 0);
	close_conn(f, &b);
	close_conn(f, &c);
	wait_nconns(f, 0);
}

/* HELLO with a label (proto.h): volume NUL label. */
static int hello_label(struct fx *f, struct conn *k, uint64_t engine, uint64_t sess,
		       const char *label)
{
	char buf[256];
	size_t n = (size_t)snprintf(buf, sizeof(buf), "vol1") + 1;
	memcpy(buf + n, label, strlen(label));
	struct proto_req req = {.op = PROTO_HELLO,
				.offset = engine,
				.arg = sess,
				.payload_len = (uint32_t)(n + strlen(label))};
	return call(f, k, &req, buf, NULL, 0, NULL);
}

/* The holder INFO reports: its label (into label) and epoch; -1 if none. */
static int64_t info_holder(struct fx *f, struct conn *k, char label[PROTO_LABEL_MAX])
{
	struct call out = {0};
	struct proto_req req = {.op = PROTO_INFO};
	assert_int_equal(call(f, k, &req, NULL, NULL, 0, &out), 0);
	json_t *j = payload_json(&out);
	json_t *h = json_object_get(j, "holder");
	assert_non_null(h); /* present, null when nobody holds it */
	int64_t ep = -1;
	label[0] = 0;
	if (!json_is_null(h)) {
		snprintf(label, PROTO_LABEL_MAX, "%s",
			 json_string_value(json_object_get(h, "label")));
		ep = json_integer_value(json_object_get(h, "epoch"));
	}
	json_decref(j);
	free(out.payload);
	return ep;
}

static void test_holder(void **state)
{
	struct fx *f = *state;
	char label[PROTO_LABEL_MAX];
	struct conn a, a2, b, c;
	connect_to(f, &a);
	connect_to(f, &b);
	connect_to(f, &c);
	/* An engine before labels (no label, no id) still binds. */
	assert_int_equal(hello(f, &b, "vol1", NULL), 0);
	assert_int_equal(info_holder(f, &b, label), -1);
	/* Labels must be printable and short. */
	assert_int_equal(hello_label(f, &c, 9, 1, "bad\x01label"), -EINVAL);
	char longl[80];
	memset(longl, 'x', sizeof(longl) - 1);
	longl[sizeof(longl) - 1] = 0;
	assert_int_equal(hello_label(f, &c, 9, 1, longl), -EINVAL);

	/* OPEN makes the connection's engine the holder; HELLO alone does not. */
	assert_int_equal(hello_label(f, &a, 7, 1, "nfsgw gw1 127.0.0.65"), 0);
	assert_int_equal(info_holder(f, &b, label), -1);
	assert_int_equal(do_open(f, &a, 1), 0);
	assert_int_equal(info_holder(f, &b, label), 1);
	assert_string_equal(label, "nfsgw gw1 127.0.0.65");
	/* Its newer connection replaces the older one: still held. */
	connect_to(f, &a2);
	assert_int_equal(hello_label(f, &a2, 7, 2, "nfsgw gw1 127.0.0.65"), 0);
	wait_nconns(f, 3);
	close_conn(f, &a); /* the server closed it: free our end */
	assert_int_equal(info_holder(f, &b, label), 1);
	assert_string_equal(label, "nfsgw gw1 127.0.0.65");
	/* A second engine's OPEN replaces the holder. */
	assert_int_equal(hello_label(f, &c, 8, 1, "node2"), 0);
	assert_int_equal(do_open(f, &c, 2), 0);
	assert_int_equal(info_holder(f, &b, label), 2);
	assert_string_equal(label, "node2");
	/* The first engine going away changes nothing. */
	close_conn(f, &a2);
	wait_nconns(f, 2);
	assert_int_equal(info_holder(f, &b, label), 2);
	/* The holder's last connection closing clears it. */
	close_conn(f, &c);
	wait_nconns(f, 1);
	assert_int_equal(info_holder(f, &b, label), -1);
	/* The same engine reconnecting at the same epoch is the holder again. */
	connect_to(f, &c);
	assert_int_equal(hello_label(f, &c, 8, 2, "node2"), 0);
	assert_int_equal(info_holder(f, &b, label), 2);
	close_conn(f, &c);
	wait_nconns(f, 1);
	assert_int_equal(info_holder(f, &b, label), -1);

	/* An engine on this node without a socket (replica_server_hold/release). */
	assert_int_equal(replica_server_hold(f->srv, "vol1", 99, "node1", 3), 0);
	assert_int_equal(info_holder(f, &b, label), 3);
	assert_string_equal(label, "node1");
	uint64_t ep = 0;
	assert_int_equal(replica_server_holder(f->srv, "vol1", label, &ep), 1);
	assert_int_equal(ep, 3);
	replica_server_release(f->srv, "vol1", 98); /* another engine's release: no effect */
	assert_int_equal(info_holder(f, &b, label), 3);
	replica_server_release(f->srv, "vol1", 99);
	assert_int_equal(info_holder(f, &b, label), -1);
	assert_int_equal(replica_server_holder(f->srv, "vol1", label, &ep), 0);
	/* An unlabelled client's OPEN holds it until that connection closes. */
	assert_int_equal(do_open(f, &b, 4), 0);
	connect_to(f, &c);
	assert_int_equal(hello(f, &c, "vol1", NULL), 0);
	assert_int_equal(info_holder(f, &c, label), 4);
	assert_string_equal(label, "");
	close_conn(f, &b);
	wait_nconns(f, 1);
	assert_int_equal(info_holder(f, &c, label), -1);
	close_conn(f, &c);
	wait_nconns(f, 0);
}

static void test_bad_magic(void **state)
{
	struct fx *f = *state;
	struct conn k;
	struct raw r;
	connect_to(f, &k);
	assert_int_equal(hello(f, &k, "vol1", NULL), 0);
	raw_connect(f, &r);
	wait_nconns(f, 2);
	uint8_t junk[PROTO_REQ_SIZE];
	memset(junk, 'x', sizeof(junk));
	assert_int_equal(send(r.fd, junk, sizeof(junk), 0), (ssize_t)sizeof(junk));
	raw_expect_closed(f, &r);
	close(r.fd);
	wait_nconns(f, 1);
	/* The well-behaved connection is unaffected. */
	struct proto_req info = {.op = PROTO_INFO};
	assert_int_equal(call(f, &k, &info, NULL, NULL, 0, NULL), 0);
	close_conn(f, &k);
}

static void test_bad_frames(void **state)
{
	struct fx *f = *state;
	struct raw r;
	/* Oversize payload: closed before the payload is read. */
	raw_connect(f, &r);
	raw_hello(f, &r);
	struct proto_req req = {.op = PROTO_MEMBERS, .payload_len = PROTO_MAX_PAYLOAD + 1};
	uint8_t hdr[PROTO_REQ_SIZE];
	proto_req_encode(&req, hdr);
	assert_int_equal(send(r.fd, hdr, sizeof(hdr), 0), (ssize_t)sizeof(hdr));
	raw_expect_closed(f, &r);
	close(r.fd);
	/* READ larger than 8 MiB */
	raw_connect(f, &r);
	struct proto_req rd = {.op = PROTO_READ, .length = PROTO_MAX_IO + 1};
	proto_req_encode(&rd, hdr);
	assert_int_equal(send(r.fd, hdr, sizeof(hdr), 0), (ssize_t)sizeof(hdr));
	raw_expect_closed(f, &r);
	close(r.fd);
	/* Unknown op */
	raw_connect(f, &r);
	raw_hello(f, &r);
	struct proto_req un = {.op = PROTO_OP_MAX};
	proto_req_encode(&un, hdr);
	assert_int_equal(send(r.fd, hdr, sizeof(hdr), 0), (ssize_t)sizeof(hdr));
	raw_expect_closed(f, &r);
	close(r.fd);
	/* Bad version */
	raw_connect(f, &r);
	struct proto_req v = {.op = PROTO_INFO};
	proto_req_encode(&v, hdr);
	hdr[4] = 7;
	assert_int_equal(send(r.fd, hdr, sizeof(hdr), 0), (ssize_t)sizeof(hdr));
	raw_expect_closed(f, &r);
	close(r.fd);
	wait_nconns(f, 0);
}

static void test_bad_checksum(void **state)
{
	struct fx *f = *state;
	struct raw r;
	struct proto_rep rep;
	raw_connect(f, &r);
	struct proto_req h = {.op = PROTO_HELLO, .handle = 7, .payload_len = 4};
	raw_send_req(&r, &h, "vol1", false);
	assert_true(raw_reply(f, &r, &rep));
	assert_int_equal(rep.status, -EBADMSG);
	assert_true(rep.handle == 7);
	/* The connection still works. */
	raw_hello(f, &r);
	struct proto_req info = {.op = PROTO_INFO, .handle = 9};
	raw_send_req(&r, &info, NULL, true);
	assert_true(raw_reply(f, &r, &rep));
	assert_int_equal(rep.status, 0);
	assert_true(rep.handle == 9);
	assert_true(rep.payload_len > 0);
	/* Before HELLO on a fresh connection: -EPROTO, not a close. */
	struct raw r2;
	raw_connect(f, &r2);
	raw_send_req(&r2, &info, NULL, true);
	assert_true(raw_reply(f, &r2, &rep));
	assert_int_equal(rep.status, -EPROTO);
	close(r.fd);
	close(r2.fd);
	wait_nconns(f, 0);
}

static void test_abandon(void **state)
{
	struct fx *f = *state;
	struct raw r;
	raw_connect(f, &r);
	raw_hello(f, &r);
	struct proto_req op = {.op = PROTO_OPEN, .handle = 2, .epoch = 1};
	struct proto_rep rep;
	raw_send_req(&r, &op, NULL, true);
	assert_true(raw_reply(f, &r, &rep));
	assert_int_equal(rep.status, 0);
	enum { N = 100, SZ = 65536 };
	uint8_t *buf = malloc(SZ);
	fill_random(buf, SZ, 4);
	/* 6.4 MiB of writes, never reading a reply, then a reset. */
	for (int i = 0; i < N; i++) {
		struct proto_req w = {.op = PROTO_WRITE,
				      .handle = 100 + (uint64_t)i,
				      .epoch = 1,
				      .offset = (uint64_t)i * SZ,
				      .length = SZ,
				      .payload_len = SZ};
		uint8_t hdr[PROTO_REQ_SIZE];
		w.payload_hash = proto_hash(buf, SZ);
		proto_req_encode(&w, hdr);
		size_t sent = 0;
		/* The server drains as we go: run the loop whenever the socket is full. */
		while (sent < sizeof(hdr) + SZ) {
			const uint8_t *p =
			    sent < sizeof(hdr) ? hdr + sent : buf + sent - sizeof(hdr);
			size_t n =
			    sent < sizeof(hdr) ? sizeof(hdr) - sent : SZ + sizeof(hdr) - sent;
			ssize_t k = send(r.fd, p, n, MSG_DONTWAIT | MSG_NOSIGNAL);
			if (k > 0)
				sent += (size_t)k;
			else
				run_until(f->l, always, NULL, 10);
		}
		if (i == N / 2)
			run_until(f->l, always, NULL, 10);
	}
	struct linger lg = {.l_onoff = 1, .l_linger = 0};
	setsockopt(r.fd, SOL_SOCKET, SO_LINGER, &lg, sizeof(lg));
	close(r.fd);
	wait_nconns(f, 0);
	/* Let the in-flight writes complete into the dead connection. */
	run_until(f->l, always, NULL, 200);
	struct conn k;
	connect_to(f, &k);
	assert_int_equal(hello(f, &k, "vol1", NULL), 0);
	struct proto_req info = {.op = PROTO_INFO};
	assert_int_equal(call(f, &k, &info, NULL, NULL, 0, NULL), 0);
	close_conn(f, &k);
	free(buf);
}

static void test_abandon_then_free(void **state)
{
	/* Requests still in flight when the server is freed: freed with it, no leak. */
	struct fx *f = *state;
	struct conn k;
	connect_to(f, &k);
	assert_int_equal(hello(f, &k, "vol1", NULL), 0);
	assert_int_equal(do_open(f, &k, 1), 0);
	static uint8_t buf[65536];
	struct call calls[32];
	memset(calls, 0, sizeof(calls));
	for (int i = 0; i < 32; i++) {
		struct proto_req w = {.op = PROTO_WRITE,
				      .epoch = 1,
				      .offset = (uint64_t)i * sizeof(buf),
				      .length = sizeof(buf),
				      .payload_len = sizeof(buf)};
		assert_int_equal(rclient_send(k.c, &w, buf, NULL, 0, call_cb, &calls[i]), 0);
	}
	/* A couple of iterations: the requests reach the server, a few may complete. */
	run_until(f->l, always, NULL, 10);
	run_until(f->l, always, NULL, 10);
	replica_server_free(f->srv);
	f->srv = NULL;
	assert_true(run_until(f->l, conn_closed, &k, 3000));
	for (int i = 0; i < 32; i++) {
		assert_true(calls[i].done);
		free(calls[i].payload);
	}
	rclient_close(k.c);
	/* The closed store finishes its in-flight writes, then frees itself and them. */
	run_until(f->l, never, NULL, 200);
	assert_int_equal(replica_server_new(f->l, "node1", f->dir, "127.0.0.1", f->port, &f->srv),
			 0);
}

static long rss_mib(void)
{
	long pages = 0, rss = 0;
	FILE *fp = fopen("/proc/self/statm", "r");
	assert_non_null(fp);
	assert_int_equal(fscanf(fp, "%ld %ld", &pages, &rss), 2);
	fclose(fp);
	return rss * (sysconf(_SC_PAGESIZE) / 1024) / 1024;
}

struct drain {
	int fd;
	size_t got, want;
};

static bool drained(void *arg)
{
	struct drain *d = arg;
	static uint8_t sink[1 << 16];
	for (;;) {
		ssize_t n = recv(d->fd, sink, sizeof(sink), MSG_DONTWAIT);
		if (n <= 0)
			break;
		d->got += (size_t)n;
	}
	return d->got >= d->want;
}

static void test_throttle(void **state)
{
	/* A client that never reads replies cannot make the server buffer without bound:
	 * past the in-flight limit the server stops reading, then resumes. */
	struct fx *f = *state;
	struct raw r;
	raw_connect(f, &r);
	raw_hello(f, &r);
	struct proto_req op = {.op = PROTO_OPEN, .handle = 2, .epoch = 1};
	struct proto_rep rep;
	raw_send_req(&r, &op, NULL, true);
	assert_true(raw_reply(f, &r, &rep));
	assert_int_equal(rep.status, 0);
	enum { N = 1000, SZ = 512 << 10 };
	long before = rss_mib();
	int sent = 0;
	uint64_t deadline = loop_now_ms() + 3000;
	while (sent < N && loop_now_ms() < deadline) {
		struct proto_req rd = {.op = PROTO_READ,
				       .handle = 10 + (uint64_t)sent,
				       .epoch = 1,
				       .offset = (uint64_t)(sent % 100) * SZ,
				       .length = SZ};
		uint8_t hdr[PROTO_REQ_SIZE];
		proto_req_encode(&rd, hdr);
		ssize_t k = send(r.fd, hdr, sizeof(hdr), MSG_DONTWAIT | MSG_NOSIGNAL);
		if (k == (ssize_t)sizeof(hdr))
			sent++;
		else {
			assert_true(k < 0); /* headers are never split at this size */
			run_until(f->l, always, NULL, 5);
		}
	}
	assert_int_equal(sent, N);
	/* Let the server do all it is willing to do without us reading. */
	for (int i = 0; i < 50; i++)
		run_until(f->l, always, NULL, 5);
	long grown = rss_mib() - before;
	/* The byte limit (64 MiB) plus slack; unthrottled it holds ~500 MiB of replies, and
	 * with only the request-count limit 128 MiB. */
	assert_true(grown < 110);
	/* Reading resumes the flow: more replies than the limit arrive. */
	struct drain d = {.fd = r.fd, .got = r.got, .want = (size_t)400 * (PROTO_REP_SIZE + SZ)};
	assert_true(run_until(f->l, drained, &d, 10000));
	close(r.fd);
	wait_nconns(f, 0);
}

static void test_hash(void **state)
{
	struct fx *f = *state;
	struct conn k;
	struct call out = {0};
	connect_to(f, &k);
	assert_int_equal(hello(f, &k, "vol1", NULL), 0);
	assert_int_equal(do_open(f, &k, 1), 0);
	enum { EXT = 65536, N = 16 };
	uint8_t *w = malloc(EXT * N);
	fill_random(w, EXT * N, 5);
	/* Extents 0..7 written, 8..15 never written. */
	assert_int_equal(do_write(f, &k, 1, 0, w, EXT * 8, 0), 0);
	memset(w + EXT * 8, 0, EXT * 8);
	struct proto_req h = {
	    .op = PROTO_HASH, .epoch = 1, .offset = 0, .length = EXT * N, .arg = EXT};
	assert_int_equal(call(f, &k, &h, NULL, NULL, 0, &out), 0);
	assert_int_equal(out.len, 8 * N);
	for (int i = 0; i < N; i++) {
		uint64_t v = 0;
		for (int b = 7; b >= 0; b--)
			v = (v << 8) | out.payload[i * 8 + b];
		assert_true(v == proto_hash(w + (size_t)i * EXT, EXT));
	}
	/* A short last extent. */
	h.length = EXT + 100;
	assert_int_equal(call(f, &k, &h, NULL, NULL, 0, &out), 0);
	assert_int_equal(out.len, 16);
	/* Bounds */
	h.arg = 0;
	assert_int_equal(call(f, &k, &h, NULL, NULL, 0, NULL), -EINVAL);
	h.arg = 1;
	h.length = (uint64_t)PROTO_MAX_PAYLOAD / 8 + 1;
	assert_int_equal(call(f, &k, &h, NULL, NULL, 0, NULL), -EINVAL);
	h.arg = 1ull << 33;
	assert_int_equal(call(f, &k, &h, NULL, NULL, 0, NULL), -EINVAL);
	h.arg = EXT;
	h.epoch = 0;
	assert_int_equal(call(f, &k, &h, NULL, NULL, 0, NULL), -ESTALE);
	free(out.payload);
	free(w);
	close_conn(f, &k);
}

static json_t *snap_list(struct fx *f, struct conn *k, uint64_t epoch)
{
	struct call out = {0};
	struct proto_req req = {.op = PROTO_SNAP_LIST, .epoch = epoch};
	assert_int_equal(call(f, k, &req, NULL, NULL, 0, &out), 0);
	json_t *j = payload_json(&out);
	free(out.payload);
	assert_true(json_is_array(j));
	return j;
}

struct merge_wait {
	struct fx *f;
	struct conn *k;
};

static bool snap_gone(void *arg)
{
	struct merge_wait *m = arg;
	/* Cannot run the loop from inside it: peek through the local store instead. */
	struct store *st;
	struct store_snap *snaps = NULL;
	uint32_t n = 0;
	if (replica_server_store(m->f->srv, "vol1", &st) < 0 ||
	    store_snapshot_list(st, &snaps, &n) < 0)
		return false;
	bool gone = true;
	for (uint32_t i = 0; i < n; i++)
		if (strcmp(snaps[i].name, "s1") == 0)
			gone = false;
	free(snaps);
	return gone;
}

static void test_snapshots(void **state)
{
	struct fx *f = *state;
	struct conn k;
	connect_to(f, &k);
	assert_int_equal(hello(f, &k, "vol1", NULL), 0);
	assert_int_equal(do_open(f, &k, 1), 0);
	uint8_t a[8192], b[8192], r[8192];
	fill_random(a, sizeof(a), 6);
	fill_random(b, sizeof(b), 7);
	assert_int_equal(do_write(f, &k, 1, 0, a, sizeof(a), 0), 0);
	assert_int_equal(op_name(f, &k, PROTO_SNAP_CREATE, 1, "s1", NULL), 0);
	assert_int_equal(op_name(f, &k, PROTO_SNAP_CREATE, 1, "s1", NULL) < 0, 1);
	assert_int_equal(op_name(f, &k, PROTO_SNAP_CREATE, 1, "bad/name", NULL), -EINVAL);
	assert_int_equal(op_name(f, &k, PROTO_SNAP_CREATE, 0, "s2", NULL), -ESTALE);
	assert_int_equal(do_write(f, &k, 1, 0, b, sizeof(b), 0), 0);
	json_t *j = snap_list(f, &k, 1);
	assert_int_equal(json_array_size(j), 1);
	json_t *s = json_array_get(j, 0);
	assert_string_equal(json_string_value(json_object_get(s, "name")), "s1");
	assert_non_null(json_object_get(s, "created"));
	assert_true(json_is_true(json_object_get(s, "in_head_chain")));
	assert_true(json_is_false(json_object_get(s, "deleting")));
	json_decref(j);
	/* clone from s1 creates a new replica on this node */
	struct call out = {0};
	const char *cj = "{\"snapshot\":\"s1\",\"name\":\"vol2\"}";
	struct proto_req cr = {.op = PROTO_CLONE, .epoch = 1, .payload_len = (uint32_t)strlen(cj)};
	assert_int_equal(call(f, &k, &cr, cj, NULL, 0, NULL), 0);
	const char *bad = "{\"snapshot\":\"s1\",\"name\":\"../x\"}";
	cr.payload_len = (uint32_t)strlen(bad);
	assert_int_equal(call(f, &k, &cr, bad, NULL, 0, NULL), -EINVAL);
	/* revert: the head is back at s1's content */
	assert_int_equal(op_name(f, &k, PROTO_SNAP_REVERT, 1, "s1", NULL), 0);
	assert_int_equal(do_read(f, &k, 1, 0, r, sizeof(r)), 0);
	assert_memory_equal(r, a, sizeof(r));
	/* the clone has s1's content */
	struct conn k2;
	connect_to(f, &k2);
	assert_int_equal(hello(f, &k2, "vol2", &out), 0);
	json_t *info = payload_json(&out);
	uint64_t e2 = (uint64_t)json_integer_value(json_object_get(info, "epoch"));
	json_decref(info);
	assert_int_equal(do_read(f, &k2, e2, 0, r, sizeof(r)), 0);
	assert_memory_equal(r, a, sizeof(r));
	close_conn(f, &k2);
	/* delete merges in the background until the snapshot is gone */
	assert_int_equal(op_name(f, &k, PROTO_SNAP_DELETE, 1, "nosuch", NULL) < 0, 1);
	assert_int_equal(op_name(f, &k, PROTO_SNAP_DELETE, 1, "s1", NULL), 0);
	struct merge_wait mw = {f, &k};
	assert_true(run_until(f->l, snap_gone, &mw, 5000));
	assert_int_equal(do_read(f, &k, 1, 0, r, sizeof(r)), 0);
	assert_memory_equal(r, a, sizeof(r));
	free(out.payload);
	close_conn(f, &k);
	char **names;
	uint32_t n;
	assert_int_equal(replica_server_list(f->srv, &names, &n), 0);
	assert_int_equal(n, 2);
	for (uint32_t i = 0; i < n; i++)
		free(names[i]);
	free(names);
}

/* Snapshot identities and views over the wire: SNAP_CREATE with an identity, SNAP_LIST shows
 * it, SNAP_HASH / SNAP_READ serve the view as of it, SNAP_REVERT arg 1 empties the chain, and
 * a clone with members lists exactly those. */
static void test_snapshot_views(void **state)
{
	struct fx *f = *state;
	struct conn k;
	connect_to(f, &k);
	assert_int_equal(hello(f, &k, "vol1", NULL), 0);
	assert_int_equal(do_open(f, &k, 1), 0);
	uint8_t a[8192], b[8192], r[8192];
	fill_random(a, sizeof(a), 8);
	fill_random(b, sizeof(b), 9);
	assert_int_equal(do_write(f, &k, 1, 0, a, sizeof(a), 0), 0);
	const char pl[] = "s1\0id-abc";
	struct proto_req cr = {.op = PROTO_SNAP_CREATE, .epoch = 1, .payload_len = sizeof(pl) - 1};
	assert_int_equal(call(f, &k, &cr, pl, NULL, 0, NULL), 0);
	const char bad[] = "s2\0bad id";
	cr.payload_len = sizeof(bad) - 1;
	assert_int_equal(call(f, &k, &cr, bad, NULL, 0, NULL), -EINVAL);
	assert_int_equal(do_write(f, &k, 1, 0, b, sizeof(b), 0), 0);
	json_t *j = snap_list(f, &k, 1);
	json_t *s = json_array_get(j, 0);
	assert_string_equal(json_string_value(json_object_get(s, "id")), "id-abc");
	assert_string_equal(json_string_value(json_object_get(s, "parent_id")), "");
	json_decref(j);

	struct call out = {0};
	struct proto_req rr = {
	    .op = PROTO_SNAP_READ, .epoch = 1, .offset = 0, .length = sizeof(r), .payload_len = 6};
	assert_int_equal(call(f, &k, &rr, "id-abc", NULL, 0, &out), 0);
	assert_int_equal(out.len, sizeof(r));
	assert_memory_equal(out.payload, a, sizeof(a));
	rr.payload_len = 4;
	assert_int_equal(call(f, &k, &rr, "nope", NULL, 0, NULL), -ENOENT);
	struct proto_req hr = {.op = PROTO_SNAP_HASH,
			       .epoch = 1,
			       .offset = 0,
			       .length = 8192,
			       .arg = 4096,
			       .payload_len = 6};
	assert_int_equal(call(f, &k, &hr, "id-abc", NULL, 0, &out), 0);
	assert_int_equal(out.len, 16);
	uint64_t h0 = 0;
	for (int i = 7; i >= 0; i--)
		h0 = h0 << 8 | out.payload[i];
	assert_true(h0 == proto_hash(a, 4096));

	/* To an empty chain: the head reads zeros, s1 stays. */
	struct proto_req vr = {.op = PROTO_SNAP_REVERT, .epoch = 1, .arg = 1};
	assert_int_equal(call(f, &k, &vr, NULL, NULL, 0, NULL), 0);
	assert_int_equal(do_read(f, &k, 1, 0, r, sizeof(r)), 0);
	memset(b, 0, sizeof(b));
	assert_memory_equal(r, b, sizeof(r));
	j = snap_list(f, &k, 1);
	assert_int_equal(json_array_size(j), 1);
	assert_true(json_is_false(json_object_get(json_array_get(j, 0), "in_head_chain")));
	json_decref(j);

	const char *cj = "{\"snapshot\":\"s1\",\"name\":\"vol3\",\"members\":[\"n1\",\"n7\"]}";
	struct proto_req cl = {.op = PROTO_CLONE, .epoch = 1, .payload_len = (uint32_t)strlen(cj)};
	assert_int_equal(call(f, &k, &cl, cj, NULL, 0, NULL), 0);
	struct conn k2;
	connect_to(f, &k2);
	assert_int_equal(hello(f, &k2, "vol3", &out), 0);
	json_t *info = payload_json(&out);
	json_t *m = json_object_get(info, "members");
	assert_int_equal(json_array_size(m), 2);
	assert_string_equal(json_string_value(json_object_get(json_array_get(m, 1), "node")), "n7");
	json_decref(info);
	close_conn(f, &k2);
	free(out.payload);
	close_conn(f, &k);
}

static void test_members_dirty_resize(void **state)
{
	struct fx *f = *state;
	struct conn k;
	struct call out = {0};
	connect_to(f, &k);
	assert_int_equal(hello(f, &k, "vol1", NULL), 0);
	assert_int_equal(do_open(f, &k, 3), 0);
	const char *m = "{\"gen\":7,\"members\":[{\"node\":\"node1\",\"in_sync\":true},"
			"{\"node\":\"node2\",\"in_sync\":false}]}";
	struct proto_req req = {
	    .op = PROTO_MEMBERS, .epoch = 3, .payload_len = (uint32_t)strlen(m)};
	assert_int_equal(call(f, &k, &req, m, NULL, 0, NULL), 0);
	const char *bad = "{\"gen\":8,\"members\":[{\"node\":\"a/b\",\"in_sync\":true}]}";
	req.payload_len = (uint32_t)strlen(bad);
	assert_int_equal(call(f, &k, &req, bad, NULL, 0, NULL), -EINVAL);
	req.payload_len = 3;
	assert_int_equal(call(f, &k, &req, "{{{", NULL, 0, NULL), -EINVAL);
	struct proto_req info = {.op = PROTO_INFO};
	assert_int_equal(call(f, &k, &info, NULL, NULL, 0, &out), 0);
	json_t *j = payload_json(&out);
	assert_int_equal(json_integer_value(json_object_get(j, "members_gen")), 7);
	json_t *mem = json_object_get(j, "members");
	assert_int_equal(json_array_size(mem), 2);
	assert_true(json_is_false(json_object_get(json_array_get(mem, 1), "in_sync")));
	json_decref(j);

	/* dirty bitmaps */
	assert_int_equal(op_name(f, &k, PROTO_DIRTY_GET, 3, "node2", NULL), -ENOENT);
	uint8_t put[64];
	const char *dj = "{\"member\":\"node2\",\"grain\":1048576}";
	size_t dl = strlen(dj);
	memcpy(put, dj, dl);
	put[dl] = 0;
	uint8_t bits[8] = {0x81, 0, 0, 0xff, 0, 0, 0, 1};
	memcpy(put + dl + 1, bits, sizeof(bits));
	struct proto_req dp = {
	    .op = PROTO_DIRTY_PUT, .epoch = 3, .payload_len = (uint32_t)(dl + 1 + sizeof(bits))};
	assert_int_equal(call(f, &k, &dp, put, NULL, 0, NULL), 0);
	dp.payload_len = (uint32_t)dl; /* no NUL separator */
	assert_int_equal(call(f, &k, &dp, put, NULL, 0, NULL), -EINVAL);
	assert_int_equal(op_name(f, &k, PROTO_DIRTY_GET, 3, "node2", &out), 0);
	assert_true(out.len >= 4 + sizeof(bits));
	uint32_t grain = out.payload[0] | out.payload[1] << 8 | out.payload[2] << 16 |
			 (uint32_t)out.payload[3] << 24;
	assert_int_equal(grain, 1048576);
	assert_memory_equal(out.payload + 4, bits, sizeof(bits));
	assert_int_equal(op_name(f, &k, PROTO_DIRTY_DROP, 3, "node2", NULL), 0);
	assert_int_equal(op_name(f, &k, PROTO_DIRTY_GET, 3, "node2", NULL), -ENOENT);

	/* resize: grow only */
	struct proto_req rs = {.op = PROTO_RESIZE, .epoch = 3, .arg = VOL_SIZE * 2};
	assert_int_equal(call(f, &k, &rs, NULL, NULL, 0, NULL), 0);
	rs.arg = VOL_SIZE;
	assert_int_equal(call(f, &k, &rs, NULL, NULL, 0, NULL), -EINVAL);
	assert_int_equal(call(f, &k, &info, NULL, NULL, 0, &out), 0);
	j = payload_json(&out);
	assert_int_equal(json_integer_value(json_object_get(j, "size")), VOL_SIZE * 2);
	json_decref(j);
	free(out.payload);
	close_conn(f, &k);
}

static void test_localhost(void **state)
{
	/* Names resolve the same way on both ends (IPv4 first). */
	struct fx *f = *state;
	struct replica_server *s2;
	uint16_t port = free_port();
	assert_int_equal(replica_server_new(f->l, "node1", f->dir, "localhost", port, &s2), 0);
	uint16_t saved = f->port;
	f->port = port;
	struct conn k;
	memset(&k, 0, sizeof(k));
	struct rclient_cbs cbs = {.connected = on_connected, .closed = on_closed, .arg = &k};
	assert_int_equal(rclient_connect(f->l, "localhost", port, &cbs, &k.c), 0);
	assert_true(run_until(f->l, call_done, &k.connected_done, 2000));
	assert_int_equal(k.connected_res, 0);
	/* The second server opens its own store object for the same replica. */
	assert_int_equal(hello(f, &k, "vol1", NULL), 0);
	close_conn(f, &k);
	f->port = saved;
	replica_server_free(s2);
	run_until(f->l, never, NULL, 20);
}

static void test_accept_emfile(void **state)
{
	/* Out of file descriptors: the server pauses accepting instead of spinning, and
	 * resumes by itself once descriptors are available again. */
	struct fx *f = *state;
	struct raw r[4];
	for (int i = 0; i < 4; i++)
		raw_connect(f, &r[i]);
	struct rlimit saved, low;
	assert_int_equal(getrlimit(RLIMIT_NOFILE, &saved), 0);
	/* Count the server's complaints: one per pause, not one per loop iteration. */
	char logpath[] = "/tmp/test_server_log.XXXXXX";
	int logfd = mkstemp(logpath);
	assert_true(logfd >= 0);
	unlink(logpath);
	fflush(stderr);
	int saved_err = dup(2);
	dup2(logfd, 2);
	int hole = dup(0);
	assert_true(hole >= 0);
	close(hole);
	low = saved;
	low.rlim_cur = (rlim_t)hole + 1; /* room for exactly one more descriptor */
	assert_int_equal(setrlimit(RLIMIT_NOFILE, &low), 0);
	wait_nconns(f, 1);
	run_until(f->l, never, NULL, 50);
	assert_int_equal(replica_server_nconns(f->srv), 1);
	assert_int_equal(setrlimit(RLIMIT_NOFILE, &saved), 0);
	fflush(stderr);
	dup2(saved_err, 2);
	close(saved_err);
	char log[4096];
	ssize_t n = pread(logfd, log, sizeof(log) - 1, 0);
	close(logfd);
	assert_true(n > 0);
	log[n] = 0;
	int lines = 0;
	for (char *p = log; (p = strchr(p, '\n')); p++)
		lines++;
	assert_true(lines >= 1 && lines <= 2);
	wait_nconns(f, 4);
	for (int i = 0; i < 4; i++)
		close(r[i].fd);
	wait_nconns(f, 0);
}

static void test_registry(void **state)
{
	struct fx *f = *state;
	struct store *a, *b;
	assert_int_equal(replica_server_store(f->srv, "vol1", &a), 0);
	assert_int_equal(replica_server_store(f->srv, "vol1", &b), 0);
	assert_ptr_equal(a, b);
	assert_int_equal(replica_server_store(f->srv, "nosuch", &a), -ENOENT);
	assert_int_equal(replica_server_create(f->srv, "vol1", VOL_SIZE, NULL, 0), -EEXIST);
	assert_int_equal(replica_server_create(f->srv, "a/b", VOL_SIZE, NULL, 0), -EINVAL);
	assert_int_equal(replica_server_create(f->srv, "vol3", VOL_SIZE, NULL, 0), 0);
	/* An engine has it open (unclean): destroy refuses unless forced. */
	struct conn k;
	connect_to(f, &k);
	assert_int_equal(hello(f, &k, "vol3", NULL), 0);
	assert_int_equal(do_open(f, &k, 1), 0);
	assert_int_equal(replica_server_destroy(f->srv, "vol3", 0), -EBUSY);
	assert_int_equal(replica_server_destroy(f->srv, "vol3", 1), 0);
	assert_true(run_until(f->l, conn_closed, &k, 3000));
	rclient_close(k.c);
	assert_int_equal(replica_server_destroy(f->srv, "vol3", 0), -ENOENT);
	char **names;
	uint32_t n;
	assert_int_equal(replica_server_list(f->srv, &names, &n), 0);
	assert_int_equal(n, 1);
	assert_string_equal(names[0], "vol1");
	free(names[0]);
	free(names);
	/* A clean replica can be destroyed without force. */
	assert_int_equal(replica_server_destroy(f->srv, "vol1", 0), 0);
	assert_int_equal(replica_server_list(f->srv, &names, &n), 0);
	assert_int_equal(n, 0);
	free(names);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test_setup_teardown(test_hello_info, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_hello_errors, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_read_write, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_pipelined, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_epochs, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_session_fence, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_holder, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_bad_magic, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_bad_frames, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_bad_checksum, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_abandon, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_abandon_then_free, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_throttle, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_hash, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_snapshots, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_snapshot_views, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_members_dirty_resize, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_registry, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_localhost, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_accept_emfile, setup, teardown),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}

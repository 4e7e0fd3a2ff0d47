/*
 * test_nbd: the NBD server (blockd/nbd_*.c) against the client library
 * (tools/lib/nbd_client.c), real tools (qemu-img, qemu-io, nbdinfo, nbdcopy) and hostile
 * raw sockets. The server runs on its own loop thread over a bdev implemented here on a
 * temp file (I/O through the loop's io_uring); the bdev can park completions to test
 * disconnects with requests in flight.
 */
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <sys/uio.h>
#include <sys/wait.h>
#include <netinet/in.h>
#include <arpa/inet.h>
#include <unistd.h>

#include <cmocka.h>

#include "blockd/nbd_proto.h"
#include "blockd/nbd_server.h"
#include "tools/lib/nbd_client.h"

#define DEV_SIZE (64ull << 20)

struct held;

struct env {
	char dir[64];
	char path[96];
	int fd;
	struct loop *loop;
	struct nbd_server *srv;
	uint16_t port;
	pthread_t thread;
	/* Loop-thread state, read from the test thread only through loop_call. */
	bool hold;
	bool long_list;	  /* LIST also names many long dummy exports */
	int inject;	  /* writes fail with this (negative errno)... */
	bool inject_sync; /* ...returned by the call itself rather than its callback */
	int next_inject;  /* set by the test thread, applied on the loop by set_inject */
	bool next_inject_sync;
	struct held *held;
	uint32_t nheld;
	uint32_t lookups, releases, fua_writes, flushes, trims, zeroes;
};

struct held {
	struct loop_io io;
	struct env *e;
	bdev_cb cb;
	void *arg;
	uint32_t len;
	int res;
	int forced; /* completion result regardless of the I/O's */
	struct held *next;
};

/* ---- the test bdev ---- */

static void op_done(struct loop_io *io, int res)
{
	struct held *h = (struct held *)io;
	if (res >= 0)
		res = h->len && (uint32_t)res != h->len ? -EIO : 0;
	if (h->forced)
		res = h->forced;
	if (h->e->hold) {
		h->res = res;
		h->next = h->e->held;
		h->e->held = h;
		h->e->nheld++;
		return;
	}
	h->cb(h->arg, res);
	free(h);
}

static struct io_uring_sqe *op_new(struct env *e, uint32_t len, bdev_cb cb, void *arg)
{
	struct held *h = calloc(1, sizeof(*h));
	if (!h)
		return NULL;
	h->io.fn = op_done;
	h->e = e;
	h->cb = cb;
	h->arg = arg;
	h->len = len;
	return loop_sqe(e->loop, &h->io);
}

static int dev_read(void *ctx, uint64_t off, uint32_t len, void *buf, bdev_cb cb, void *arg)
{
	struct env *e = ctx;
	struct io_uring_sqe *sqe = op_new(e, len, cb, arg);
	if (!sqe)
		return -ENOMEM;
	io_uring_prep_read(sqe, e->fd, buf, len, off);
	return 0;
}

static int dev_write(void *ctx, uint64_t off, uint32_t len, const void *buf, uint32_t flags,
		     bdev_cb cb, void *arg)
{
	struct env *e = ctx;
	if (e->inject && e->inject_sync)
		return e->inject;
	struct io_uring_sqe *sqe = op_new(e, len, cb, arg);
	if (!sqe)
		return -ENOMEM;
	/* The write still happens; only its result is replaced. */
	((struct held *)(uintptr_t)sqe->user_data)->forced = e->inject;
	io_uring_prep_write(sqe, e->fd, buf, len, off);
	if (flags & BDEV_FUA) {
		sqe->rw_flags = RWF_DSYNC;
		e->fua_writes++;
	}
	return 0;
}

static int dev_flush(void *ctx, bdev_cb cb, void *arg)
{
	struct env *e = ctx;
	struct io_uring_sqe *sqe = op_new(e, 0, cb, arg);
	if (!sqe)
		return -ENOMEM;
	io_uring_prep_fsync(sqe, e->fd, IORING_FSYNC_DATASYNC);
	e->flushes++;
	return 0;
}

static int dev_trim(void *ctx, uint64_t off, uint64_t len, bool zero, uint32_t flags, bdev_cb cb,
		    void *arg)
{
	struct env *e = ctx;
	(void)flags;
	struct io_uring_sqe *sqe = op_new(e, 0, cb, arg);
	if (!sqe)
		return -ENOMEM;
	io_uring_prep_fallocate(sqe, e->fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, off, len);
	if (zero)
		e->zeroes++;
	else
		e->trims++;
	return 0;
}

static uint64_t dev_size(void *ctx)
{
	(void)ctx;
	return DEV_SIZE;
}

static const struct bdev_ops dev_ops = {
    .read = dev_read,
    .write = dev_write,
    .flush = dev_flush,
    .trim = dev_trim,
    .size = dev_size,
};

static int exp_lookup(void *arg, const char *name, struct bdev *out)
{
	struct env *e = arg;
	if (strcmp(name, "exp") != 0)
		return -ENOENT;
	e->lookups++;
	out->ops = &dev_ops;
	out->ctx = e;
	return 0;
}

static void exp_release(void *arg, const char *name)
{
	struct env *e = arg;
	assert_string_equal(name, "exp");
	e->releases++;
}

static void exp_list(void *arg, void (*fn)(void *fnarg, const char *name), void *fnarg)
{
	struct env *e = arg;
	fn(fnarg, "exp");
	if (!e->long_list)
		return;
	char name[1001];
	memset(name, 'n', 1000);
	name[1000] = 0;
	for (int i = 0; i < 8; i++)
		fn(fnarg, name);
}

static void long_list_on(void *arg)
{
	((struct env *)arg)->long_list = true;
}

static void long_list_off(void *arg)
{
	((struct env *)arg)->long_list = false;
}

/* ---- loop-thread helpers ---- */

static void *loop_thread(void *arg)
{
	struct env *e = arg;
	loop_run(e->loop);
	return NULL;
}

struct query {
	struct env *e;
	uint32_t clients, nheld, lookups, releases, fua_writes, flushes, trims, zeroes;
};

static void query_fn(void *arg)
{
	struct query *q = arg;
	struct env *e = q->e;
	q->clients = nbd_server_clients(e->srv, "exp");
	q->nheld = e->nheld;
	q->lookups = e->lookups;
	q->releases = e->releases;
	q->fua_writes = e->fua_writes;
	q->flushes = e->flushes;
	q->trims = e->trims;
	q->zeroes = e->zeroes;
}

static struct query query(struct env *e)
{
	struct query q = {.e = e};
	assert_int_equal(loop_call(e->loop, query_fn, &q), 0);
	return q;
}

static void hold_on(void *arg)
{
	((struct env *)arg)->hold = true;
}

static void hold_off(void *arg)
{
	struct env *e = arg;
	e->hold = false;
	while (e->held) {
		struct held *h = e->held;
		e->held = h->next;
		e->nheld--;
		h->cb(h->arg, h->res);
		free(h);
	}
}

static void drop_fn(void *arg)
{
	struct env *e = arg;
	nbd_server_drop_export(e->srv, "exp");
}

/* Waits up to 5 s for the number of attached clients to reach n. */
static void wait_clients(struct env *e, uint32_t n)
{
	for (int i = 0; i < 500; i++) {
		if (query(e).clients == n)
			return;
		usleep(10000);
	}
	fail_msg("clients stayed at %u, want %u", query(e).clients, n);
}

static void wait_held(struct env *e, uint32_t n)
{
	for (int i = 0; i < 500; i++) {
		if (query(e).nheld >= n)
			return;
		usleep(10000);
	}
	fail_msg("only %u bdev completions held, want %u", query(e).nheld, n);
}

static int group_setup(void **state)
{
	struct env *e = calloc(1, sizeof(*e));
	assert_non_null(e);
	strcpy(e->dir, "/tmp/test_nbd.XXXXXX");
	assert_non_null(mkdtemp(e->dir));
	snprintf(e->path, sizeof(e->path), "%s/dev", e->dir);
	e->fd = open(e->path, O_RDWR | O_CREAT, 0600);
	assert_true(e->fd >= 0);
	assert_int_equal(ftruncate(e->fd, (off_t)DEV_SIZE), 0);
	assert_int_equal(loop_new(&e->loop), 0);
	struct nbd_exports ex = {exp_lookup, exp_release, exp_list, e};
	assert_int_equal(nbd_server_new(e->loop, "127.0.0.1", 0, &ex, &e->srv), 0);
	e->port = nbd_server_port(e->srv);
	assert_true(e->port != 0);
	assert_int_equal(pthread_create(&e->thread, NULL, loop_thread, e), 0);
	*state = e;
	return 0;
}

static void stop_fn(void *arg)
{
	struct env *e = arg;
	nbd_server_free(e->srv);
	e->srv = NULL;
	loop_stop(e->loop);
}

static int group_teardown(void **state)
{
	struct env *e = *state;
	loop_call(e->loop, hold_off, e);
	loop_call(e->loop, stop_fn, e);
	pthread_join(e->thread, NULL);
	loop_free(e->loop);
	close(e->fd);
	unlink(e->path);
	rmdir(e->dir);
	free(e);
	return 0;
}

/* ---- client helpers ---- */

static struct nbd_client *client(struct env *e)
{
	struct nbd_client *c;
	assert_int_equal(nbd_client_new(&c), 0);
	nbd_client_set_timeout(c, 10000);
	int r = nbd_client_connect(c, "127.0.0.1", e->port, "exp");
	if (r < 0)
		fail_msg("connect: %s", nbd_client_error(c));
	assert_int_equal(nbd_client_size(c), DEV_SIZE);
	return c;
}

static uint64_t rnd(uint64_t *s)
{
	*s ^= *s << 13;
	*s ^= *s >> 7;
	*s ^= *s << 17;
	return *s;
}

static void fill(uint8_t *p, size_t n, uint64_t *seed)
{
	for (size_t i = 0; i < n; i++)
		p[i] = (uint8_t)rnd(seed);
}

/* A quick check that a client still works. */
static void ping(struct nbd_client *c, uint64_t seed)
{
	uint8_t w[4096], r[4096];
	fill(w, sizeof(w), &seed);
	uint64_t off = DEV_SIZE - 8192;
	assert_int_equal(nbd_client_pwrite(c, w, sizeof(w), off, 0), 0);
	assert_int_equal(nbd_client_pread(c, r, sizeof(r), off), 0);
	assert_memory_equal(w, r, sizeof(w));
}

static uint8_t *snapshot_file(struct env *e)
{
	uint8_t *s = malloc(DEV_SIZE);
	assert_non_null(s);
	assert_int_equal(pread(e->fd, s, DEV_SIZE, 0), (ssize_t)DEV_SIZE);
	return s;
}

/* ---- tests ---- */

static void test_roundtrip(void **state)
{
	struct env *e = *state;
	struct nbd_client *c = client(e);
	uint8_t *shadow = snapshot_file(e);
	uint8_t *buf = malloc(1 << 20);
	assert_non_null(buf);
	uint64_t seed = 0x1234567;
	for (int i = 0; i < 200; i++) {
		uint32_t len = 1 + (uint32_t)(rnd(&seed) % (256 << 10));
		uint64_t off = rnd(&seed) % (DEV_SIZE - len);
		fill(buf, len, &seed);
		assert_int_equal(nbd_client_pwrite(c, buf, len, off, 0), 0);
		memcpy(shadow + off, buf, len);
	}
	for (int i = 0; i < 200; i++) {
		uint32_t len = 1 + (uint32_t)(rnd(&seed) % (1 << 20));
		uint64_t off = rnd(&seed) % (DEV_SIZE - len);
		assert_int_equal(nbd_client_pread(c, buf, len, off), 0);
		assert_memory_equal(buf, shadow + off, len);
	}
	/* The largest allowed transfer, then the backing file must match byte for byte. */
	uint8_t *big = malloc(NBD_MAX_PAYLOAD);
	assert_non_null(big);
	fill(big, NBD_MAX_PAYLOAD, &seed);
	assert_int_equal(nbd_client_pwrite(c, big, NBD_MAX_PAYLOAD, 4096, 0), 0);
	memcpy(shadow + 4096, big, NBD_MAX_PAYLOAD);
	memset(big, 0, NBD_MAX_PAYLOAD);
	assert_int_equal(nbd_client_pread(c, big, NBD_MAX_PAYLOAD, 4096), 0);
	assert_memory_equal(big, shadow + 4096, NBD_MAX_PAYLOAD);
	uint8_t *file = snapshot_file(e);
	assert_memory_equal(file, shadow, DEV_SIZE);
	free(file);
	free(big);
	free(buf);
	free(shadow);
	nbd_client_free(c);
}

static void test_pipelined(void **state)
{
	struct env *e = *state;
	struct nbd_client *c = client(e);
	enum { N = 64, LEN = 64 << 10 };
	uint8_t *wbuf = malloc((size_t)N * LEN), *rbuf = malloc((size_t)N * LEN);
	assert_non_null(wbuf);
	assert_non_null(rbuf);
	uint64_t seed = 99;
	fill(wbuf, (size_t)N * LEN, &seed);
	struct nbd_client_req reqs[N];
	for (int i = 0; i < N; i++) {
		reqs[i] = (struct nbd_client_req){.op = NBD_CLIENT_WRITE,
						  .off = (uint64_t)i * LEN,
						  .len = LEN,
						  .buf = wbuf + (size_t)i * LEN};
		assert_int_equal(nbd_client_submit(c, &reqs[i]), 0);
	}
	assert_int_equal(nbd_client_inflight(c), N);
	bool seen[N] = {false};
	for (int i = 0; i < N; i++) {
		struct nbd_client_req *d;
		assert_int_equal(nbd_client_collect(c, &d), 0);
		assert_int_equal(d->result, 0);
		ptrdiff_t k = d - reqs;
		assert_true(k >= 0 && k < N && !seen[k]);
		seen[k] = true;
	}
	for (int i = 0; i < N; i++) {
		reqs[i] = (struct nbd_client_req){.op = NBD_CLIENT_READ,
						  .off = (uint64_t)i * LEN,
						  .len = LEN,
						  .buf = rbuf + (size_t)i * LEN};
		assert_int_equal(nbd_client_submit(c, &reqs[i]), 0);
	}
	for (int i = 0; i < N; i++) {
		struct nbd_client_req *d;
		assert_int_equal(nbd_client_collect(c, &d), 0);
		assert_int_equal(d->result, 0);
	}
	assert_memory_equal(wbuf, rbuf, (size_t)N * LEN);

	/* More requests than the server's in-flight cap: it must pause and resume reading. */
	enum { M = 400 };
	struct nbd_client_req *many = calloc(M, sizeof(*many));
	assert_non_null(many);
	for (int i = 0; i < M; i++) {
		many[i] = (struct nbd_client_req){.op = NBD_CLIENT_WRITE,
						  .off = (uint64_t)i * 4096,
						  .len = 4096,
						  .buf = wbuf + (size_t)i * 4096};
		assert_int_equal(nbd_client_submit(c, &many[i]), 0);
	}
	for (int i = 0; i < M; i++) {
		struct nbd_client_req *d;
		assert_int_equal(nbd_client_collect(c, &d), 0);
		assert_int_equal(d->result, 0);
	}
	assert_int_equal(nbd_client_pread(c, rbuf, M * 4096, 0), 0);
	assert_memory_equal(wbuf, rbuf, M * 4096);
	free(many);
	free(wbuf);
	free(rbuf);
	nbd_client_free(c);
}

static void test_trim_zero_flush_fua(void **state)
{
	struct env *e = *state;
	struct nbd_client *c = client(e);
	uint8_t *buf = malloc(1 << 20), *zero = calloc(1, 1 << 20);
	assert_non_null(buf);
	assert_non_null(zero);
	memset(buf, 0xcc, 1 << 20);
	struct query before = query(e);
	assert_int_equal(nbd_client_pwrite(c, buf, 1 << 20, 8 << 20, 0), 0);
	assert_int_equal(nbd_client_zero(c, (8 << 20) + 4096, 256 << 10, 0), 0);
	assert_int_equal(nbd_client_pread(c, buf, 1 << 20, 8 << 20), 0);
	assert_int_equal(buf[0], 0xcc);
	assert_memory_equal(buf + 4096, zero, 256 << 10);
	assert_int_equal(buf[4096 + (256 << 10)], 0xcc);
	assert_int_equal(nbd_client_trim(c, (8 << 20) + (512 << 10), 512 << 10), 0);
	assert_int_equal(nbd_client_flush(c), 0);
	memset(buf, 0xdd, 4096);
	assert_int_equal(nbd_client_pwrite(c, buf, 4096, 8 << 20, NBD_CLIENT_FUA), 0);
	assert_int_equal(nbd_client_zero(c, 9 << 20, 4096, NBD_CLIENT_FUA), 0);
	/* Discards larger than the 32 MiB transfer cap are allowed (no payload). */
	assert_int_equal(nbd_client_trim(c, 16 << 20, 40u << 20), 0);
	struct query after = query(e);
	assert_int_equal(after.zeroes - before.zeroes, 2);
	assert_int_equal(after.trims - before.trims, 2);
	assert_int_equal(after.flushes - before.flushes, 1);
	assert_int_equal(after.fua_writes - before.fua_writes, 1);
	assert_int_equal(nbd_client_pread(c, buf, 4096, 8 << 20), 0);
	assert_int_equal(buf[0], 0xdd);
	free(buf);
	free(zero);
	nbd_client_free(c);
}

static void set_inject(void *arg)
{
	struct env *e = arg;
	e->inject = e->next_inject;
	e->inject_sync = e->next_inject_sync;
}

/* bdev errors reach the client as the NBD protocol's errno values. */
static void test_error_mapping(void **state)
{
	struct env *e = *state;
	struct nbd_client *c = client(e);
	static const struct {
		int in, out;
	} map[] = {
	    {-EPERM, -EPERM},	      {-EROFS, -EPERM},		{-EIO, -EIO},
	    {-ENOMEM, -ENOMEM},	      {-EINVAL, -EINVAL},	{-ENOSPC, -ENOSPC},
	    {-EOVERFLOW, -EOVERFLOW}, {-ESHUTDOWN, -ESHUTDOWN}, {-ENOTSUP, -ENOTSUP},
	    {-ESTALE, -EIO},	      {-ETIMEDOUT, -EIO},
	};
	uint8_t buf[4096] = {0};
	for (int sync = 0; sync < 2; sync++) {
		for (size_t i = 0; i < sizeof(map) / sizeof(map[0]); i++) {
			e->next_inject = map[i].in;
			e->next_inject_sync = sync;
			loop_call(e->loop, set_inject, e);
			assert_int_equal(nbd_client_pwrite(c, buf, sizeof(buf), 0, 0), map[i].out);
		}
	}
	e->next_inject = 0;
	loop_call(e->loop, set_inject, e);
	ping(c, 31);
	nbd_client_free(c);
}

static void test_client_errors(void **state)
{
	struct env *e = *state;
	struct nbd_client *c = client(e);
	uint8_t buf[8192] = {0};
	assert_int_equal(nbd_client_pread(c, buf, 8192, DEV_SIZE - 4096), -EINVAL);
	assert_int_equal(nbd_client_pread(c, buf, 1, DEV_SIZE), -EINVAL);
	assert_int_equal(nbd_client_pread(c, buf, 0, 0), -EINVAL);
	assert_int_equal(nbd_client_pwrite(c, buf, 8192, DEV_SIZE - 4096, 0), -EINVAL);
	assert_int_equal(nbd_client_pwrite(c, buf, 4096, UINT64_MAX - 100, 0), -EINVAL);
	assert_int_equal(nbd_client_trim(c, DEV_SIZE, 4096), -EINVAL);
	assert_int_equal(nbd_client_zero(c, 0, 0, 0), -EINVAL);
	/* Over the advertised maximum block size: refused before it reaches the wire. */
	assert_int_equal(nbd_client_pread(c, buf, NBD_MAX_PAYLOAD + 1, 0), -EINVAL);
	assert_non_null(strstr(nbd_client_error(c), "maximum"));
	ping(c, 7);

	struct nbd_client *m;
	assert_int_equal(nbd_client_new(&m), 0);
	assert_int_equal(nbd_client_connect(m, "127.0.0.1", e->port, "missing"), -ENOENT);
	assert_non_null(strstr(nbd_client_error(m), "missing"));
	nbd_client_free(m);
	assert_int_equal(nbd_client_new(&m), 0);
	assert_int_equal(nbd_client_connect_url(m, "http://x"), -EINVAL);
	nbd_client_free(m);

	char host[NBD_CLIENT_URL_MAX], ex[NBD_CLIENT_URL_MAX];
	uint16_t port;
	assert_int_equal(nbd_client_parse_url("nbd://h:123/vol1", host, &port, ex), 0);
	assert_string_equal(host, "h");
	assert_int_equal(port, 123);
	assert_string_equal(ex, "vol1");
	assert_int_equal(nbd_client_parse_url("nbd://[::1]", host, &port, ex), 0);
	assert_string_equal(host, "::1");
	assert_int_equal(port, NBD_DEFAULT_PORT);
	assert_string_equal(ex, "");
	assert_int_equal(nbd_client_parse_url("nbd://h:0/x", host, &port, ex), -EINVAL);
	nbd_client_free(c);
}

/* ---- raw socket helpers ---- */

/* bufs: SO_SNDBUF/SO_RCVBUF to set before connecting, 0 for the defaults. */
static int raw_connect_bufs(struct env *e, int bufs)
{
	int fd = socket(AF_INET, SOCK_STREAM, 0);
	assert_true(fd >= 0);
	if (bufs) {
		setsockopt(fd, SOL_SOCKET, SO_SNDBUF, &bufs, sizeof(bufs));
		setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &bufs, sizeof(bufs));
	}
	struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons(e->port)};
	a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	assert_int_equal(connect(fd, (struct sockaddr *)&a, sizeof(a)), 0);
	struct timeval tv = {.tv_sec = 5};
	setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
	uint8_t g[18];
	assert_int_equal(recv(fd, g, sizeof(g), MSG_WAITALL), 18);
	assert_true(nbd_get64(g) == NBD_MAGIC);
	assert_true(nbd_get64(g + 8) == NBD_IHAVEOPT);
	assert_int_equal(nbd_get16(g + 16), NBD_FLAG_FIXED_NEWSTYLE | NBD_FLAG_NO_ZEROES);
	return fd;
}

static int raw_connect(struct env *e)
{
	return raw_connect_bufs(e, 0);
}

static void raw_send(int fd, const void *p, size_t n)
{
	assert_int_equal(send(fd, p, n, MSG_NOSIGNAL), (ssize_t)n);
}

static void raw_flags(int fd, uint32_t f)
{
	uint8_t b[4];
	nbd_put32(b, f);
	raw_send(fd, b, 4);
}

static void raw_option(int fd, uint32_t opt, const void *data, uint32_t len)
{
	uint8_t h[16];
	nbd_put64(h, NBD_IHAVEOPT);
	nbd_put32(h + 8, opt);
	nbd_put32(h + 12, len);
	raw_send(fd, h, 16);
	if (len)
		raw_send(fd, data, len);
}

/* Reads one option reply; returns its type, data into buf (len into *len). */
static uint32_t raw_opt_reply(int fd, uint32_t opt, uint8_t *buf, uint32_t *len)
{
	uint8_t h[20];
	assert_int_equal(recv(fd, h, 20, MSG_WAITALL), 20);
	assert_true(nbd_get64(h) == NBD_OPT_REPLY_MAGIC);
	assert_int_equal(nbd_get32(h + 8), opt);
	*len = nbd_get32(h + 16);
	assert_true(*len < 4096);
	if (*len)
		assert_int_equal(recv(fd, buf, *len, MSG_WAITALL), (ssize_t)*len);
	return nbd_get32(h + 12);
}

/* Sends GO/INFO for name asking for the given info types; returns the reply type list end. */
static void raw_info_go(int fd, uint32_t opt, const char *name, uint16_t nreq, const uint16_t *reqs)
{
	uint8_t d[256];
	size_t n = strlen(name);
	nbd_put32(d, (uint32_t)n);
	memcpy(d + 4, name, n);
	nbd_put16(d + 4 + n, nreq);
	for (uint16_t i = 0; i < nreq; i++)
		nbd_put16(d + 6 + n + 2 * i, reqs[i]);
	raw_option(fd, opt, d, (uint32_t)(6 + n + 2u * nreq));
}

#define expect_closed(fd) expect_closed_at(fd, __LINE__)
static void expect_closed_at(int fd, int line)
{
	uint8_t b[256];
	ssize_t n;
	/* Anything already queued (an error reply) may come first. */
	while ((n = recv(fd, b, sizeof(b), 0)) > 0)
		;
	if (!(n == 0 || (n < 0 && errno == ECONNRESET)))
		fail_msg("line %d: connection not closed (recv %zd, %s)", line, n, strerror(errno));
	close(fd);
}

static int raw_attach(struct env *e)
{
	int fd = raw_connect(e);
	raw_flags(fd, NBD_FLAG_C_FIXED_NEWSTYLE | NBD_FLAG_C_NO_ZEROES);
	raw_info_go(fd, NBD_OPT_GO, "exp", 0, NULL);
	uint8_t buf[4096];
	uint32_t len, t;
	while ((t = raw_opt_reply(fd, NBD_OPT_GO, buf, &len)) == NBD_REP_INFO)
		;
	assert_int_equal(t, NBD_REP_ACK);
	return fd;
}

static void raw_req(int fd, uint32_t magic, uint16_t flags, uint16_t type, uint64_t handle,
		    uint64_t off, uint32_t len)
{
	uint8_t h[28];
	nbd_put32(h, magic);
	nbd_put16(h + 4, flags);
	nbd_put16(h + 6, type);
	nbd_put64(h + 8, handle);
	nbd_put64(h + 16, off);
	nbd_put32(h + 24, len);
	raw_send(fd, h, 28);
}

static uint32_t raw_reply(int fd, uint64_t handle)
{
	uint8_t h[16];
	assert_int_equal(recv(fd, h, 16, MSG_WAITALL), 16);
	assert_int_equal(nbd_get32(h), NBD_SIMPLE_REPLY_MAGIC);
	assert_true(nbd_get64(h + 8) == handle);
	return nbd_get32(h + 4);
}

static void test_hostile_handshake(void **state)
{
	struct env *e = *state;
	struct nbd_client *good = client(e);
	uint8_t buf[4096];
	uint32_t len;

	int fd = raw_connect(e);
	raw_send(fd, "\xde\xad\xbe\xef", 4);
	expect_closed(fd);
	ping(good, 1);

	fd = raw_connect(e);
	raw_flags(fd, NBD_FLAG_C_FIXED_NEWSTYLE);
	uint8_t h[16];
	nbd_put64(h, NBD_IHAVEOPT);
	nbd_put32(h + 8, NBD_OPT_GO);
	nbd_put32(h + 12, 1u << 30);
	raw_send(fd, h, 16);
	expect_closed(fd);
	ping(good, 2);

	fd = raw_connect(e);
	raw_flags(fd, NBD_FLAG_C_FIXED_NEWSTYLE);
	raw_send(fd, "GARBAGE!GARBAGE!GARBAGE!", 24);
	expect_closed(fd);
	ping(good, 3);

	/* Well-framed but unsupported or bad options get replies; the session goes on. */
	fd = raw_connect(e);
	raw_flags(fd, NBD_FLAG_C_FIXED_NEWSTYLE);
	raw_option(fd, 99, "xyz", 3);
	assert_int_equal(raw_opt_reply(fd, 99, buf, &len), NBD_REP_ERR_UNSUP);
	raw_option(fd, NBD_OPT_STRUCTURED_REPLY, NULL, 0);
	assert_int_equal(raw_opt_reply(fd, NBD_OPT_STRUCTURED_REPLY, buf, &len), NBD_REP_ERR_UNSUP);
	raw_info_go(fd, NBD_OPT_GO, "nope", 0, NULL);
	assert_int_equal(raw_opt_reply(fd, NBD_OPT_GO, buf, &len), NBD_REP_ERR_UNKNOWN);
	raw_option(fd, NBD_OPT_GO, "\0\0\0\x10", 4);
	assert_int_equal(raw_opt_reply(fd, NBD_OPT_GO, buf, &len), NBD_REP_ERR_INVALID);
	uint16_t want[] = {NBD_INFO_BLOCK_SIZE, NBD_INFO_NAME};
	raw_info_go(fd, NBD_OPT_INFO, "exp", 2, want);
	bool got_export = false, got_bs = false, got_name = false;
	uint32_t t;
	while ((t = raw_opt_reply(fd, NBD_OPT_INFO, buf, &len)) == NBD_REP_INFO) {
		uint16_t it = nbd_get16(buf);
		if (it == NBD_INFO_EXPORT) {
			assert_int_equal(len, 12);
			assert_true(nbd_get64(buf + 2) == DEV_SIZE);
			uint16_t tf = nbd_get16(buf + 10);
			assert_true(tf & NBD_FLAG_HAS_FLAGS);
			assert_true(tf & NBD_FLAG_SEND_FLUSH);
			assert_true(tf & NBD_FLAG_SEND_FUA);
			assert_true(tf & NBD_FLAG_SEND_TRIM);
			assert_true(tf & NBD_FLAG_SEND_WRITE_ZEROES);
			got_export = true;
		} else if (it == NBD_INFO_BLOCK_SIZE) {
			assert_int_equal(len, 14);
			assert_int_equal(nbd_get32(buf + 2), 1);
			assert_int_equal(nbd_get32(buf + 6), 4096);
			assert_int_equal(nbd_get32(buf + 10), 32u << 20);
			got_bs = true;
		} else if (it == NBD_INFO_NAME) {
			assert_int_equal(len, 5);
			assert_memory_equal(buf + 2, "exp", 3);
			got_name = true;
		}
	}
	assert_int_equal(t, NBD_REP_ACK);
	assert_true(got_export && got_bs && got_name);
	raw_option(fd, NBD_OPT_LIST, NULL, 0);
	assert_int_equal(raw_opt_reply(fd, NBD_OPT_LIST, buf, &len), NBD_REP_SERVER);
	assert_int_equal(len, 7);
	assert_int_equal(nbd_get32(buf), 3);
	assert_memory_equal(buf + 4, "exp", 3);
	assert_int_equal(raw_opt_reply(fd, NBD_OPT_LIST, buf, &len), NBD_REP_ACK);
	raw_option(fd, NBD_OPT_ABORT, NULL, 0);
	assert_int_equal(raw_opt_reply(fd, NBD_OPT_ABORT, buf, &len), NBD_REP_ACK);
	expect_closed(fd);
	ping(good, 4);

	/* EXPORT_NAME: with NO_ZEROES exactly size + flags, then transmission. */
	fd = raw_connect(e);
	raw_flags(fd, NBD_FLAG_C_FIXED_NEWSTYLE | NBD_FLAG_C_NO_ZEROES);
	raw_option(fd, NBD_OPT_EXPORT_NAME, "exp", 3);
	assert_int_equal(recv(fd, buf, 10, MSG_WAITALL), 10);
	assert_true(nbd_get64(buf) == DEV_SIZE);
	raw_req(fd, NBD_REQUEST_MAGIC, 0, NBD_CMD_READ, 42, 0, 512);
	assert_int_equal(raw_reply(fd, 42), 0);
	assert_int_equal(recv(fd, buf, 512, MSG_WAITALL), 512);
	raw_req(fd, NBD_REQUEST_MAGIC, 0, NBD_CMD_DISC, 43, 0, 0);
	expect_closed(fd);

	/* ... and without NO_ZEROES, 124 zero bytes follow. */
	fd = raw_connect(e);
	raw_flags(fd, NBD_FLAG_C_FIXED_NEWSTYLE);
	raw_option(fd, NBD_OPT_EXPORT_NAME, "exp", 3);
	assert_int_equal(recv(fd, buf, 134, MSG_WAITALL), 134);
	uint8_t z[124] = {0};
	assert_memory_equal(buf + 10, z, 124);
	raw_req(fd, NBD_REQUEST_MAGIC, 0, NBD_CMD_FLUSH, 44, 0, 0);
	assert_int_equal(raw_reply(fd, 44), 0);
	close(fd);

	fd = raw_connect(e);
	raw_flags(fd, NBD_FLAG_C_FIXED_NEWSTYLE);
	raw_option(fd, NBD_OPT_EXPORT_NAME, "missing", 7);
	expect_closed(fd);
	ping(good, 5);
	nbd_client_free(good);
}

/*
 * A negotiating client that sends options without reading the replies: the server stops
 * reading it once its unsent replies pass a bound, instead of queueing without limit, and
 * answers everything once the client reads again.
 */
static void test_handshake_backlog(void **state)
{
	struct env *e = *state;
	struct nbd_client *good = client(e);
	/* Each LIST answer is ~8 KiB: the bound is reached after a few hundred options. */
	loop_call(e->loop, long_list_on, e);
	int fd = raw_connect_bufs(e, 64 << 10);
	raw_flags(fd, NBD_FLAG_C_FIXED_NEWSTYLE);
	enum { BATCH = 4096 };
	uint8_t *opts = malloc(BATCH * 16);
	assert_non_null(opts);
	for (int i = 0; i < BATCH; i++) {
		nbd_put64(opts + 16 * i, NBD_IHAVEOPT);
		nbd_put32(opts + 16 * i + 8, NBD_OPT_LIST);
		nbd_put32(opts + 16 * i + 12, 0);
	}
	size_t sent = 0;
	const size_t limit = 1u << 20;
	while (sent < limit) {
		ssize_t n = send(fd, opts + sent % (BATCH * 16), BATCH * 16 - sent % (BATCH * 16),
				 MSG_DONTWAIT | MSG_NOSIGNAL);
		if (n < 0 && errno == EAGAIN) {
			usleep(200000);
			n = send(fd, opts + sent % (BATCH * 16), BATCH * 16 - sent % (BATCH * 16),
				 MSG_DONTWAIT | MSG_NOSIGNAL);
			if (n < 0 && errno == EAGAIN)
				break;
		}
		assert_true(n > 0);
		sent += (size_t)n;
	}
	/* Without the bound the server would have taken all 1 MiB (512 MiB of replies). */
	assert_true(sent < limit);
	printf("backlog: the server stopped reading after %zu options\n", sent / 16);
	/* Short answers from here on: what was sent but not read yet is cheap to answer. */
	loop_call(e->loop, long_list_off, e);
	ping(good, 21);
	/* Read every reply to the complete options, then finish the torn one (sending it
	 * earlier could block: both directions are full). */
	size_t tail = (16 - sent % 16) % 16;
	size_t nopts = sent / 16, acks = 0, have = 0;
	uint8_t buf[4096];
	uint32_t len;
	uint8_t *rb = malloc(1 << 20);
	assert_non_null(rb);
	while (acks < nopts) {
		ssize_t n = recv(fd, rb + have, (1 << 20) - have, 0);
		assert_true(n > 0);
		have += (size_t)n;
		size_t p = 0;
		while (have - p >= 20) {
			uint32_t l = nbd_get32(rb + p + 16);
			if (have - p < 20 + l)
				break;
			assert_true(nbd_get64(rb + p) == NBD_OPT_REPLY_MAGIC);
			uint32_t t = nbd_get32(rb + p + 12);
			assert_true(t == NBD_REP_ACK || t == NBD_REP_SERVER);
			acks += t == NBD_REP_ACK;
			p += 20 + l;
		}
		memmove(rb, rb + p, have - p);
		have -= p;
	}
	assert_int_equal(have, 0);
	free(rb);
	if (tail) {
		raw_send(fd, opts + sent % 16, tail);
		assert_int_equal(raw_opt_reply(fd, NBD_OPT_LIST, buf, &len), NBD_REP_SERVER);
		assert_int_equal(raw_opt_reply(fd, NBD_OPT_LIST, buf, &len), NBD_REP_ACK);
	}
	free(opts);
	raw_option(fd, NBD_OPT_ABORT, NULL, 0);
	assert_int_equal(raw_opt_reply(fd, NBD_OPT_ABORT, buf, &len), NBD_REP_ACK);
	expect_closed(fd);
	nbd_client_free(good);
}

static void test_hostile_transmission(void **state)
{
	struct env *e = *state;
	struct nbd_client *good = client(e);
	uint8_t buf[8192];
	memset(buf, 0x5a, sizeof(buf));

	int fd = raw_attach(e);
	raw_req(fd, NBD_REQUEST_MAGIC, 0, NBD_CMD_READ, 1, DEV_SIZE - 4096, 8192);
	assert_int_equal(raw_reply(fd, 1), NBD_EINVAL);
	raw_req(fd, NBD_REQUEST_MAGIC, 0, NBD_CMD_READ, 2, 0, 0);
	assert_int_equal(raw_reply(fd, 2), NBD_EINVAL);
	raw_req(fd, NBD_REQUEST_MAGIC, 0, NBD_CMD_READ, 3, 0, (32u << 20) + 1);
	assert_int_equal(raw_reply(fd, 3), NBD_EINVAL);
	raw_req(fd, NBD_REQUEST_MAGIC, 0, NBD_CMD_CACHE, 4, 0, 4096);
	assert_int_equal(raw_reply(fd, 4), NBD_EINVAL);
	raw_req(fd, NBD_REQUEST_MAGIC, 0, 77, 5, 0, 4096);
	assert_int_equal(raw_reply(fd, 5), NBD_EINVAL);
	/* A WRITE past the end: its payload is consumed, the stream stays framed. */
	raw_req(fd, NBD_REQUEST_MAGIC, 0, NBD_CMD_WRITE, 6, DEV_SIZE, 8192);
	raw_send(fd, buf, 8192);
	assert_int_equal(raw_reply(fd, 6), NBD_EINVAL);
	raw_req(fd, NBD_REQUEST_MAGIC, 0, NBD_CMD_WRITE, 7, 0, 0);
	assert_int_equal(raw_reply(fd, 7), NBD_EINVAL);
	raw_req(fd, NBD_REQUEST_MAGIC, NBD_CMD_FLAG_FUA, NBD_CMD_WRITE, 8, 1 << 20, 4096);
	raw_send(fd, buf, 4096);
	assert_int_equal(raw_reply(fd, 8), 0);
	raw_req(fd, NBD_REQUEST_MAGIC, NBD_CMD_FLAG_FUA | NBD_CMD_FLAG_NO_HOLE,
		NBD_CMD_WRITE_ZEROES, 9, 2 << 20, 4096);
	assert_int_equal(raw_reply(fd, 9), 0);
	raw_req(fd, NBD_REQUEST_MAGIC, 0, NBD_CMD_READ, 10, 1 << 20, 4096);
	assert_int_equal(raw_reply(fd, 10), 0);
	uint8_t r[4096];
	assert_int_equal(recv(fd, r, 4096, MSG_WAITALL), 4096);
	assert_memory_equal(r, buf, 4096);
	ping(good, 11);
	raw_req(fd, 0x12345678, 0, NBD_CMD_READ, 11, 0, 4096);
	expect_closed(fd);
	ping(good, 12);

	/* A WRITE whose payload is over the cap cannot be skipped: closed. */
	fd = raw_attach(e);
	raw_req(fd, NBD_REQUEST_MAGIC, 0, NBD_CMD_WRITE, 1, 0, 64u << 20);
	raw_send(fd, buf, 4096);
	expect_closed(fd);
	ping(good, 13);

	/* Torn request then EOF. */
	fd = raw_attach(e);
	raw_send(fd, buf, 13);
	close(fd);
	ping(good, 14);
	nbd_client_free(good);
	wait_clients(e, 0);
}

/* Closes (or resets) a connection with 21 requests parked in the bdev. */
static void disconnect_with_inflight(struct env *e, bool reset)
{
	wait_clients(e, 0);
	struct query q0 = query(e);
	assert_int_equal(q0.lookups, q0.releases);
	loop_call(e->loop, hold_on, e);
	int fd = raw_attach(e);
	uint8_t buf[4096] = {1};
	for (int i = 0; i < 16; i++) {
		raw_req(fd, NBD_REQUEST_MAGIC, 0, NBD_CMD_WRITE, (uint64_t)i, (uint64_t)i * 4096,
			4096);
		raw_send(fd, buf, 4096);
	}
	for (int i = 0; i < 4; i++)
		raw_req(fd, NBD_REQUEST_MAGIC, 0, NBD_CMD_READ, 100 + (uint64_t)i, 0, 4096);
	raw_req(fd, NBD_REQUEST_MAGIC, 0, NBD_CMD_FLUSH, 200, 0, 0);
	wait_held(e, 21);
	if (reset) {
		struct linger lg = {.l_onoff = 1, .l_linger = 0};
		setsockopt(fd, SOL_SOCKET, SO_LINGER, &lg, sizeof(lg));
	}
	close(fd);
	usleep(100000);
	/* The connection is gone but cannot be freed while the bdev holds its requests. */
	struct query q = query(e);
	assert_int_equal(q.clients, 1);
	assert_int_equal(q.releases, q0.releases);
	loop_call(e->loop, hold_off, e);
	wait_clients(e, 0);
	q = query(e);
	assert_int_equal(q.lookups, q.releases);
}

static void test_disconnect_inflight(void **state)
{
	disconnect_with_inflight(*state, false);
	disconnect_with_inflight(*state, true);
}

/* The server stops reading at 128 requests (or 128 MiB) in flight and resumes after. */
static void test_inflight_cap(void **state)
{
	struct env *e = *state;
	wait_clients(e, 0);
	loop_call(e->loop, hold_on, e);
	int fd = raw_attach(e);
	enum { N = 150 };
	for (int i = 0; i < N; i++)
		raw_req(fd, NBD_REQUEST_MAGIC, 0, NBD_CMD_FLUSH, (uint64_t)i, 0, 0);
	wait_held(e, 128);
	usleep(100000);
	assert_int_equal(query(e).nheld, 128);
	loop_call(e->loop, hold_off, e);
	bool seen[N] = {false};
	for (int i = 0; i < N; i++) {
		uint8_t h[16];
		assert_int_equal(recv(fd, h, 16, MSG_WAITALL), 16);
		assert_int_equal(nbd_get32(h), NBD_SIMPLE_REPLY_MAGIC);
		assert_int_equal(nbd_get32(h + 4), 0);
		uint64_t k = nbd_get64(h + 8);
		assert_true(k < N && !seen[k]);
		seen[k] = true;
	}

	/* Bytes: four 32 MiB reads reach the cap, the fifth waits. */
	loop_call(e->loop, hold_on, e);
	for (int i = 0; i < 5; i++)
		raw_req(fd, NBD_REQUEST_MAGIC, 0, NBD_CMD_READ, 1000 + (uint64_t)i, 0,
			NBD_MAX_PAYLOAD);
	wait_held(e, 4);
	usleep(100000);
	assert_int_equal(query(e).nheld, 4);
	loop_call(e->loop, hold_off, e);
	uint8_t *buf = malloc(NBD_MAX_PAYLOAD);
	assert_non_null(buf);
	for (int i = 0; i < 5; i++) {
		uint8_t h[16];
		assert_int_equal(recv(fd, h, 16, MSG_WAITALL), 16);
		assert_int_equal(nbd_get32(h + 4), 0);
		assert_int_equal(recv(fd, buf, NBD_MAX_PAYLOAD, MSG_WAITALL), NBD_MAX_PAYLOAD);
	}
	free(buf);
	raw_req(fd, NBD_REQUEST_MAGIC, 0, NBD_CMD_DISC, 0, 0, 0);
	expect_closed(fd);
	wait_clients(e, 0);
}

static void test_drop_export(void **state)
{
	struct env *e = *state;
	wait_clients(e, 0);
	struct nbd_client *c = client(e);
	struct nbd_client *c2 = client(e);
	wait_clients(e, 2);
	loop_call(e->loop, hold_on, e);
	uint8_t buf[4 * 4096] = {0};
	struct nbd_client_req reqs[4];
	for (int i = 0; i < 4; i++) {
		reqs[i] = (struct nbd_client_req){
		    .op = NBD_CLIENT_WRITE, .off = (uint64_t)i * 4096, .len = 4096, .buf = buf};
		assert_int_equal(nbd_client_submit(c, &reqs[i]), 0);
	}
	wait_held(e, 4);
	loop_call(e->loop, drop_fn, e);
	usleep(50000);
	/* Still attached: its requests have not completed. */
	assert_int_equal(query(e).clients, 1);
	loop_call(e->loop, hold_off, e);
	/* In-flight requests are answered before the connection closes. */
	for (int i = 0; i < 4; i++) {
		struct nbd_client_req *d;
		assert_int_equal(nbd_client_collect(c, &d), 0);
		assert_int_equal(d->result, 0);
	}
	wait_clients(e, 0);
	assert_true(nbd_client_pread(c, buf, 4096, 0) < 0);
	assert_true(nbd_client_pread(c2, buf, 4096, 0) < 0);
	nbd_client_free(c);
	nbd_client_free(c2);
	struct query q = query(e);
	assert_int_equal(q.lookups, q.releases);
	/* New connections still work. */
	c = client(e);
	ping(c, 77);
	nbd_client_free(c);
}

/* ---- interop with real tools ---- */

static bool have_tool(const char *name)
{
	char cmd[128];
	snprintf(cmd, sizeof(cmd), "command -v %s >/dev/null 2>&1", name);
	if (system(cmd) == 0)
		return true;
	printf("NOTE: %s not installed, skipping its interop check\n", name);
	return false;
}

/* Runs a shell command; its output (truncated) goes to out. Returns the exit status. */
static int run(char *out, size_t outlen, const char *fmt, ...)
{
	char cmd[1024];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(cmd, sizeof(cmd), fmt, ap);
	va_end(ap);
	FILE *p = popen(cmd, "r");
	assert_non_null(p);
	size_t n = fread(out, 1, outlen - 1, p);
	out[n] = 0;
	while (fgetc(p) != EOF)
		;
	int st = pclose(p);
	if (st != 0)
		printf("command failed (%d): %s\n%s\n", st, cmd, out);
	return st;
}

static void test_interop(void **state)
{
	struct env *e = *state;
	char out[16384];
	char url[128];
	snprintf(url, sizeof(url), "nbd://127.0.0.1:%u/exp", e->port);
	if (have_tool("qemu-img")) {
		assert_int_equal(run(out, sizeof(out), "qemu-img info %s 2>&1", url), 0);
		assert_non_null(strstr(out, "virtual size: 64 MiB"));
	}
	if (have_tool("qemu-io")) {
		assert_int_equal(
		    run(out, sizeof(out),
			"qemu-io -f raw -c 'write -P 0xab 0 1M' -c 'read -P 0xab 0 1M' "
			"-c 'write -z 1M 1M' -c 'read -P 0 1M 1M' "
			"-c 'aio_write -P 0x11 2M 64k' -c 'aio_write -P 0x22 3M 64k' "
			"-c 'aio_flush' -c 'read -P 0x22 3M 64k' -c 'discard 4M 1M' "
			"-c 'write -f -P 0x33 5M 4k' -c 'flush' %s 2>&1",
			url),
		    0);
		assert_null(strstr(out, "failed"));
		assert_null(strstr(out, "error"));
		uint8_t b[4096];
		assert_int_equal(pread(e->fd, b, 4096, 5 << 20), 4096);
		assert_int_equal(b[0], 0x33);
		assert_int_equal(b[4095], 0x33);
	}
	if (have_tool("nbdinfo")) {
		assert_int_equal(run(out, sizeof(out), "nbdinfo %s 2>&1", url), 0);
		assert_non_null(strstr(out, "export-size: 67108864"));
		assert_int_equal(
		    run(out, sizeof(out), "nbdinfo --list nbd://127.0.0.1:%u 2>&1", e->port), 0);
		assert_non_null(strstr(out, "export=\"exp\""));
		char cmd[128];
		snprintf(cmd, sizeof(cmd), "nbdinfo nbd://127.0.0.1:%u/nope >/dev/null 2>&1",
			 e->port);
		assert_true(system(cmd) != 0);
	}
	if (have_tool("nbdcopy")) {
		/* Pipelined bulk traffic both ways, checked against the backing file. */
		char src[128], dst[128];
		snprintf(src, sizeof(src), "%s/src", e->dir);
		snprintf(dst, sizeof(dst), "%s/dst", e->dir);
		uint8_t *data = malloc(DEV_SIZE);
		assert_non_null(data);
		uint64_t seed = 4242;
		fill(data, DEV_SIZE, &seed);
		FILE *f = fopen(src, "w");
		assert_non_null(f);
		assert_int_equal(fwrite(data, 1, DEV_SIZE, f), DEV_SIZE);
		fclose(f);
		assert_int_equal(run(out, sizeof(out), "nbdcopy %s %s 2>&1", src, url), 0);
		uint8_t *file = snapshot_file(e);
		assert_memory_equal(file, data, DEV_SIZE);
		assert_int_equal(run(out, sizeof(out), "nbdcopy %s %s 2>&1", url, dst), 0);
		f = fopen(dst, "r");
		assert_non_null(f);
		assert_int_equal(fread(file, 1, DEV_SIZE, f), DEV_SIZE);
		fclose(f);
		assert_memory_equal(file, data, DEV_SIZE);
		unlink(src);
		unlink(dst);
		free(file);
		free(data);
	}
	wait_clients(e, 0);
	struct query q = query(e);
	assert_int_equal(q.lookups, q.releases);
}

/* tests/tools/nbd_load against this server: a clean run verifies, a corrupted block does not. */
static void test_nbd_load(void **state)
{
	struct env *e = *state;
	char exe[4096], tool[4200], st[128], out[16384];
	ssize_t n = readlink("/proc/self/exe", exe, sizeof(exe) - 1);
	assert_true(n > 0);
	exe[n] = 0;
	*strrchr(exe, '/') = 0;
	snprintf(tool, sizeof(tool), "%s/nbd_load", exe);
	if (access(tool, X_OK) != 0) {
		printf("NOTE: %s not built, skipping\n", tool);
		return;
	}
	snprintf(st, sizeof(st), "%s/load.state", e->dir);
	assert_int_equal(run(out, sizeof(out),
			     "%s --url nbd://127.0.0.1:%u/exp --seconds 1 --region 4M --qd 16 "
			     "--seed 3 --state %s 2>&1",
			     tool, e->port, st),
			 0);
	assert_non_null(strstr(out, "errors=0"));
	assert_non_null(strstr(out, "mismatches=0"));
	assert_null(strstr(out, "verified=0 "));
	assert_int_equal(run(out, sizeof(out),
			     "%s --url nbd://127.0.0.1:%u/exp --verify-only --state %s 2>&1", tool,
			     e->port, st),
			 0);
	/* Corrupt the first block the load wrote (its generation is in the state file). */
	FILE *f = fopen(st, "rb");
	assert_non_null(f);
	uint8_t h[32], g[4];
	assert_int_equal(fread(h, 1, 32, f), 32);
	uint64_t b = 0;
	while (fread(g, 1, 4, f) == 4 && !(g[0] | g[1] | g[2] | g[3]))
		b++;
	fclose(f);
	assert_true(b < 1024);
	assert_int_equal(pwrite(e->fd, "XX", 2, (off_t)(b * 4096 + 100)), 2);
	int stc =
	    run(out, sizeof(out), "%s --url nbd://127.0.0.1:%u/exp --verify-only --state %s 2>&1",
		tool, e->port, st);
	assert_true(WIFEXITED(stc) && WEXITSTATUS(stc) == 2);
	assert_non_null(strstr(out, "mismatches=1"));
	assert_non_null(strstr(out, "MISMATCH"));
	unlink(st);
	wait_clients(e, 0);
}

/* A minimal old-fashioned server: refuses GO, so the client must fall back to EXPORT_NAME. */
struct fake {
	int lfd;
	bool no_zeroes_seen;
};

static void *fake_server(void *arg)
{
	struct fake *f = arg;
	int fd = accept(f->lfd, NULL, NULL);
	if (fd < 0)
		return NULL;
	uint8_t b[256];
	nbd_put64(b, NBD_MAGIC);
	nbd_put64(b + 8, NBD_IHAVEOPT);
	nbd_put16(b + 16, NBD_FLAG_FIXED_NEWSTYLE);
	send(fd, b, 18, MSG_NOSIGNAL);
	recv(fd, b, 4, MSG_WAITALL);
	f->no_zeroes_seen = nbd_get32(b) & NBD_FLAG_C_NO_ZEROES;
	for (;;) {
		if (recv(fd, b, 16, MSG_WAITALL) != 16)
			break;
		uint32_t opt = nbd_get32(b + 8), len = nbd_get32(b + 12);
		if (len > sizeof(b) || recv(fd, b, len, MSG_WAITALL) != (ssize_t)len)
			break;
		if (opt == NBD_OPT_EXPORT_NAME) {
			memset(b, 0, sizeof(b));
			nbd_put64(b, 1 << 20);
			nbd_put16(b + 8, NBD_FLAG_HAS_FLAGS);
			send(fd, b, 10 + 124, MSG_NOSIGNAL);
			/* One READ, answered with 0x42 bytes. */
			if (recv(fd, b, 28, MSG_WAITALL) != 28)
				break;
			uint8_t r[16 + 512];
			nbd_put32(r, NBD_SIMPLE_REPLY_MAGIC);
			nbd_put32(r + 4, 0);
			memcpy(r + 8, b + 8, 8);
			memset(r + 16, 0x42, 512);
			send(fd, r, sizeof(r), MSG_NOSIGNAL);
			recv(fd, b, 28, MSG_WAITALL); /* DISC */
			break;
		}
		uint8_t h[20];
		nbd_put64(h, NBD_OPT_REPLY_MAGIC);
		nbd_put32(h + 8, opt);
		nbd_put32(h + 12, NBD_REP_ERR_UNSUP);
		nbd_put32(h + 16, 0);
		send(fd, h, 20, MSG_NOSIGNAL);
	}
	close(fd);
	return NULL;
}

static void test_client_export_name_fallback(void **state)
{
	(void)state;
	struct fake f = {0};
	f.lfd = socket(AF_INET, SOCK_STREAM, 0);
	assert_true(f.lfd >= 0);
	struct sockaddr_in a = {.sin_family = AF_INET};
	a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	assert_int_equal(bind(f.lfd, (struct sockaddr *)&a, sizeof(a)), 0);
	socklen_t al = sizeof(a);
	assert_int_equal(getsockname(f.lfd, (struct sockaddr *)&a, &al), 0);
	assert_int_equal(listen(f.lfd, 1), 0);
	pthread_t t;
	assert_int_equal(pthread_create(&t, NULL, fake_server, &f), 0);
	struct nbd_client *c;
	assert_int_equal(nbd_client_new(&c), 0);
	nbd_client_set_timeout(c, 5000);
	int r = nbd_client_connect(c, "127.0.0.1", ntohs(a.sin_port), "x");
	if (r < 0)
		fail_msg("connect: %s", nbd_client_error(c));
	assert_int_equal(nbd_client_size(c), 1 << 20);
	uint8_t buf[512];
	assert_int_equal(nbd_client_pread(c, buf, sizeof(buf), 0), 0);
	assert_int_equal(buf[0], 0x42);
	assert_int_equal(buf[511], 0x42);
	nbd_client_free(c);
	pthread_join(t, NULL);
	close(f.lfd);
	assert_false(f.no_zeroes_seen);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_roundtrip),
	    cmocka_unit_test(test_pipelined),
	    cmocka_unit_test(test_trim_zero_flush_fua),
	    cmocka_unit_test(test_client_errors),
	    cmocka_unit_test(test_error_mapping),
	    cmocka_unit_test(test_client_export_name_fallback),
	    cmocka_unit_test(test_hostile_handshake),
	    cmocka_unit_test(test_handshake_backlog),
	    cmocka_unit_test(test_hostile_transmission),
	    cmocka_unit_test(test_disconnect_inflight),
	    cmocka_unit_test(test_inflight_cap),
	    cmocka_unit_test(test_drop_export),
	    cmocka_unit_test(test_interop),
	    cmocka_unit_test(test_nbd_load),
	};
	return cmocka_run_group_tests(tests, group_setup, group_teardown);
}

/*
 * test_mount: the MOUNT program (v1, v2, v3) on a real rpc_server on 127.0.0.45, driven by
 * libnfs's raw client (MNT, EXPORT, DUMP, UMNT, UMNTALL) and by a hand-rolled client that
 * binds chosen source addresses and sends what libnfs cannot (hostile lengths, unknown
 * procedures). The file system is a small fake resolver in this file.
 *
 * The server's loop runs on its own thread; the test thread only talks to it over sockets
 * or through loop_call().
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "nfsgw/mount.h"
#include "nfsgw/rpc.h"
#include "replica/loop.h"

#define CLI_WAIT_MS 5000
#include "tests/unit/mount_client.h"

#define HOST "127.0.0.45"

static const char exports_text[] = "/vm 127.0.0.0/8(rw) 10.0.0.0/8(ro)\n"
				   "/only10 10.0.0.0/8(rw)\n"
				   "/peer 127.0.0.46(rw)\n"
				   "/many *(rw)\n";

struct fixture {
	struct loop *l;
	struct rpc_server *s;
	struct mount_prog *m;
	struct exports ex;
	uint16_t port;
	pthread_t thread;
	unsigned resolves;
};

/* The fake tree: directories /vm, /vm/a, /vm/a/b, /peer, /many and anything under /many;
 * regular file /vm/file; /vm/big has a 40-byte handle (too big for v1). Handles are the
 * path's bytes, padded to 32. */
static int fake_resolve(void *ctx, const struct export *e, const char *path, uint8_t *fh,
			uint32_t *fh_len)
{
	struct fixture *f = ctx;
	f->resolves++;
	if (strncmp(path, e->path, strlen(e->path)))
		return -EINVAL; /* the mount program must only ask below the export */
	static const char *const dirs[] = {"/vm", "/vm/a", "/vm/a/b", "/peer", "/many", "/vm/big"};
	bool dir = !strncmp(path, "/many/", 6);
	for (size_t i = 0; i < sizeof(dirs) / sizeof(dirs[0]); i++)
		if (!strcmp(path, dirs[i]))
			dir = true;
	if (!strcmp(path, "/vm/file"))
		return -ENOTDIR;
	if (!dir)
		return -ENOENT;
	uint32_t len = !strcmp(path, "/vm/big") ? 40 : 32;
	memset(fh, 0, len);
	memcpy(fh, path, strlen(path) < len ? strlen(path) : len);
	*fh_len = len;
	return 0;
}

static const struct exports *fake_exports(void *ctx)
{
	struct fixture *f = ctx;
	return &f->ex;
}

static void *loop_thread(void *arg)
{
	struct fixture *f = arg;
	loop_run(f->l);
	return NULL;
}

static int setup(void **state)
{
	struct fixture *f = calloc(1, sizeof(*f));
	assert_non_null(f);
	char err[128];
	assert_int_equal(exports_parse(exports_text, &f->ex, err, sizeof(err)), 0);
	assert_int_equal(loop_new(&f->l), 0);
	assert_int_equal(rpc_server_new(f->l, &f->s), 0);
	const struct mount_fs fs = {.resolve = fake_resolve, .exports = fake_exports, .ctx = f};
	assert_int_equal(mount_prog_new(f->s, &fs, &f->m), 0);
	assert_int_equal(rpc_server_listen(f->s, HOST, 0, &f->port), 0);
	assert_true(f->port != 0);
	assert_int_equal(pthread_create(&f->thread, NULL, loop_thread, f), 0);
	*state = f;
	return 0;
}

static void stop_fn(void *arg)
{
	loop_stop(arg);
}

static int teardown(void **state)
{
	struct fixture *f = *state;
	assert_int_equal(loop_post(f->l, stop_fn, f->l), 0);
	pthread_join(f->thread, NULL);
	/* The server first: it dispatches into the mount program. */
	rpc_server_free(f->s);
	mount_prog_free(f->m);
	loop_free(f->l);
	free(f);
	return 0;
}

/* ---- libnfs raw client ---- */

static void mnt1_cb(struct rpc_context *rpc, int status, void *data, void *priv)
{
	(void)rpc;
	struct cli *c = priv;
	if (!cli_finish(c, status))
		return;
	mountres1 *res = data;
	c->mnt_status = res->fhs_status;
	if (res->fhs_status == MNT1_OK) {
		c->fh_len = FHSIZE;
		memcpy(c->fh, res->mountres1_u.mountinfo.fhandle, FHSIZE);
	}
}

static void dump_cb(struct rpc_context *rpc, int status, void *data, void *priv)
{
	(void)rpc;
	struct cli *c = priv;
	c->list[0] = 0;
	if (!cli_finish(c, status))
		return;
	size_t off = 0;
	/* libnfs's decoder leaves list nodes 4-byte aligned: copy each out before use. */
	mountbody b;
	for (void *p = *(mountlist *)data; p; p = b.ml_next) {
		memcpy(&b, p, sizeof(b));
		off += (size_t)snprintf(c->list + off, sizeof(c->list) - off, "%s:%s;",
					b.ml_hostname, b.ml_directory);
	}
}

static const char *dump3(struct cli *c)
{
	assert_int_equal(rpc_mount3_dump_async(c->rpc, dump_cb, c), 0);
	cli_wait(c);
	assert_int_equal(c->status, RPC_STATUS_SUCCESS);
	return c->list;
}

static void export_cb(struct rpc_context *rpc, int status, void *data, void *priv)
{
	(void)rpc;
	struct cli *c = priv;
	c->list[0] = 0;
	if (!cli_finish(c, status))
		return;
	size_t off = 0;
	exportnode e;
	groupnode g;
	for (void *p = *(exports *)data; p; p = e.ex_next) {
		memcpy(&e, p, sizeof(e));
		off += (size_t)snprintf(c->list + off, sizeof(c->list) - off, "%s=", e.ex_dir);
		for (void *q = e.ex_groups; q; q = g.gr_next) {
			memcpy(&g, q, sizeof(g));
			off += (size_t)snprintf(c->list + off, sizeof(c->list) - off, "%s%s",
						g.gr_name, g.gr_next ? "," : "");
		}
		off += (size_t)snprintf(c->list + off, sizeof(c->list) - off, ";");
	}
}

/* ---- hand-rolled client ---- */

static int raw_connect(const char *src, uint16_t port)
{
	int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	assert_true(fd >= 0);
	struct sockaddr_in a = {.sin_family = AF_INET};
	assert_int_equal(inet_pton(AF_INET, src, &a.sin_addr), 1);
	assert_int_equal(bind(fd, (struct sockaddr *)&a, sizeof(a)), 0);
	a.sin_port = htons(port);
	assert_int_equal(inet_pton(AF_INET, HOST, &a.sin_addr), 1);
	assert_int_equal(connect(fd, (struct sockaddr *)&a, sizeof(a)), 0);
	struct timeval tv = {.tv_sec = 5};
	setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
	return fd;
}

static size_t put32(uint8_t *p, uint32_t v)
{
	p[0] = (uint8_t)(v >> 24);
	p[1] = (uint8_t)(v >> 16);
	p[2] = (uint8_t)(v >> 8);
	p[3] = (uint8_t)v;
	return 4;
}

static uint32_t get32(const uint8_t *p)
{
	return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

/* Sends one call (AUTH_NONE) with args as given, raw. */
static void raw_call(int fd, uint32_t xid, uint32_t vers, uint32_t proc, const uint8_t *args,
		     size_t args_len)
{
	size_t cap = 64 + args_len;
	uint8_t *b = malloc(cap);
	size_t n = 4;
	n += put32(b + n, xid);
	n += put32(b + n, 0);
	n += put32(b + n, 2);
	n += put32(b + n, MOUNT_PROG);
	n += put32(b + n, vers);
	n += put32(b + n, proc);
	for (int i = 0; i < 4; i++)
		n += put32(b + n, 0);
	if (args_len)
		memcpy(b + n, args, args_len);
	n += args_len;
	put32(b, 0x80000000u | (uint32_t)(n - 4));
	assert_int_equal(write(fd, b, n), (ssize_t)n);
	free(b);
}

static size_t enc_string(uint8_t *p, const char *s, size_t len)
{
	size_t n = put32(p, (uint32_t)len);
	memcpy(p + n, s, len);
	n += len;
	while (n & 3)
		p[n++] = 0;
	return n;
}

static void read_full(int fd, uint8_t *b, size_t len)
{
	size_t got = 0;
	while (got < len) {
		ssize_t r = read(fd, b + got, len - got);
		if (r < 0 && errno == EINTR)
			continue;
		if (r <= 0)
			fail_msg("read: %zd (%s) after %zu of %zu bytes", r, strerror(errno), got,
				 len);
		got += (size_t)r;
	}
}

/* Reads one reply; returns accept_stat (or 100 + reply_stat for MSG_DENIED) and the body. */
static uint32_t raw_reply(int fd, uint32_t xid, uint8_t *body, size_t cap, size_t *body_len)
{
	uint8_t mark[4];
	read_full(fd, mark, 4);
	uint32_t len = get32(mark) & 0x7fffffffu;
	assert_true(get32(mark) & 0x80000000u);
	uint8_t *rec = malloc(len);
	read_full(fd, rec, len);
	assert_int_equal(get32(rec), xid);
	assert_int_equal(get32(rec + 4), 1);
	uint32_t stat;
	if (get32(rec + 8) != 0) {
		stat = 100 + get32(rec + 12);
	} else {
		uint32_t vlen = get32(rec + 16);
		size_t off = 20 + ((vlen + 3) & ~3u);
		stat = get32(rec + off);
		off += 4;
		*body_len = len - off;
		assert_true(*body_len <= cap);
		memcpy(body, rec + off, *body_len);
	}
	free(rec);
	return stat;
}

static uint32_t raw_mnt(int fd, uint32_t vers, const char *path)
{
	uint8_t args[EXPORT_PATH_MAX * 3];
	size_t n = enc_string(args, path, strlen(path));
	raw_call(fd, 7, vers, 1, args, n);
	uint8_t body[256];
	size_t blen = 0;
	assert_int_equal(raw_reply(fd, 7, body, sizeof(body), &blen), RPC_SUCCESS);
	assert_true(blen >= 4);
	return get32(body);
}

/* ---- tests ---- */

static void test_mnt_v3(void **state)
{
	struct fixture *f = *state;
	struct cli c;
	cli_open(&c, HOST, f->port);
	assert_int_equal(cli_mnt3(&c, "/vm"), MNT3_OK);
	assert_int_equal(c.fh_len, 32);
	assert_memory_equal(c.fh, "/vm\0\0\0", 6);
	assert_int_equal(c.nflavors, 2);
	assert_int_equal(c.flavors[0], 1);
	assert_int_equal(c.flavors[1], 0);
	assert_int_equal(cli_mnt3(&c, "/vm/a/b"), MNT3_OK);
	assert_memory_equal(c.fh, "/vm/a/b\0", 8);
	/* Normalised before lookup; ".." cannot climb out of the export. */
	assert_int_equal(cli_mnt3(&c, "//vm/./a/../a/"), MNT3_OK);
	assert_memory_equal(c.fh, "/vm/a\0", 6);
	assert_int_equal(cli_mnt3(&c, "/vm/../only10"), MNT3ERR_ACCES);
	assert_int_equal(cli_mnt3(&c, "/vm/missing"), MNT3ERR_NOENT);
	assert_int_equal(cli_mnt3(&c, "/vm/file"), MNT3ERR_NOTDIR);
	assert_int_equal(cli_mnt3(&c, "/vm/big"), MNT3_OK);
	assert_int_equal(c.fh_len, 40);
	/* Not exported, or exported to others only: refused before any lookup. */
	unsigned before = f->resolves;
	assert_int_equal(cli_mnt3(&c, "/"), MNT3ERR_ACCES);
	assert_int_equal(cli_mnt3(&c, "/other"), MNT3ERR_ACCES);
	assert_int_equal(cli_mnt3(&c, "/vmx"), MNT3ERR_ACCES);
	assert_int_equal(cli_mnt3(&c, "/only10"), MNT3ERR_ACCES);
	assert_int_equal(cli_mnt3(&c, "relative"), MNT3ERR_ACCES);
	assert_int_equal(f->resolves, before);
	cli_close(&c);
}

static void test_mnt_v1(void **state)
{
	struct fixture *f = *state;
	struct cli c;
	cli_open(&c, HOST, f->port);
	assert_int_equal(rpc_mount1_mnt_async(c.rpc, mnt1_cb, "/vm/a", &c), 0);
	cli_wait(&c);
	assert_int_equal(c.status, RPC_STATUS_SUCCESS);
	assert_int_equal(c.mnt_status, MNT1_OK);
	assert_memory_equal(c.fh, "/vm/a\0\0", 7);
	assert_int_equal(rpc_mount1_mnt_async(c.rpc, mnt1_cb, "/only10", &c), 0);
	cli_wait(&c);
	assert_int_equal(c.mnt_status, MNT1ERR_ACCES);
	/* A handle longer than v1's 32-byte fhandle cannot be returned. */
	assert_int_equal(rpc_mount1_mnt_async(c.rpc, mnt1_cb, "/vm/big", &c), 0);
	cli_wait(&c);
	assert_int_equal(c.mnt_status, MNT1ERR_IO);
	cli_close(&c);
}

static void count_fn(void *arg, const char *client, const char *path)
{
	char *s = arg;
	size_t off = strlen(s);
	snprintf(s + off, 4096 - off, "%s:%s;", client, path);
}

struct each_arg {
	struct fixture *f;
	char text[4096];
};

static void each_on_loop(void *arg)
{
	struct each_arg *a = arg;
	a->text[0] = 0;
	mount_prog_each(a->f->m, count_fn, a->text);
}

static void test_export_dump_umnt(void **state)
{
	struct fixture *f = *state;
	struct cli c;
	cli_open(&c, HOST, f->port);
	assert_int_equal(rpc_mount3_export_async(c.rpc, export_cb, &c), 0);
	cli_wait(&c);
	assert_int_equal(c.status, RPC_STATUS_SUCCESS);
	assert_string_equal(c.list, "/vm=127.0.0.0/8,10.0.0.0/8;/only10=10.0.0.0/8;"
				    "/peer=127.0.0.46;/many=*;");
	/* EXPORT v1 answers the same list. */
	assert_int_equal(rpc_mount1_export_async(c.rpc, export_cb, &c), 0);
	cli_wait(&c);
	assert_string_equal(c.list, "/vm=127.0.0.0/8,10.0.0.0/8;/only10=10.0.0.0/8;"
				    "/peer=127.0.0.46;/many=*;");

	assert_string_equal(dump3(&c), "");
	assert_int_equal(cli_mnt3(&c, "/vm"), MNT3_OK);
	assert_int_equal(cli_mnt3(&c, "/vm/a/"), MNT3_OK);
	assert_int_equal(cli_mnt3(&c, "/vm"), MNT3_OK);		      /* listed once */
	assert_int_equal(cli_mnt3(&c, "/vm/missing"), MNT3ERR_NOENT); /* failures are not listed */
	assert_string_equal(dump3(&c), "127.0.0.1:/vm;127.0.0.1:/vm/a;");
	struct each_arg ea = {.f = f};
	assert_int_equal(loop_call(f->l, each_on_loop, &ea), 0);
	assert_string_equal(ea.text, "127.0.0.1:/vm;127.0.0.1:/vm/a;");

	assert_int_equal(rpc_mount3_umnt_async(c.rpc, cli_void_cb, "/vm/./", &c), 0);
	cli_wait(&c);
	assert_int_equal(c.status, RPC_STATUS_SUCCESS);
	assert_string_equal(dump3(&c), "127.0.0.1:/vm/a;");
	/* Unmounting what is not mounted is fine. */
	assert_int_equal(rpc_mount3_umnt_async(c.rpc, cli_void_cb, "/nope", &c), 0);
	cli_wait(&c);
	assert_int_equal(c.status, RPC_STATUS_SUCCESS);

	/* Another client's entries survive this client's UMNTALL. */
	int fd = raw_connect("127.0.0.46", f->port);
	assert_int_equal(raw_mnt(fd, 3, "/peer"), MNT3_OK);
	assert_string_equal(dump3(&c), "127.0.0.1:/vm/a;127.0.0.46:/peer;");
	assert_int_equal(rpc_mount3_umntall_async(c.rpc, cli_void_cb, &c), 0);
	cli_wait(&c);
	assert_int_equal(c.status, RPC_STATUS_SUCCESS);
	assert_string_equal(dump3(&c), "127.0.0.46:/peer;");
	close(fd);
	cli_close(&c);
}

static void test_client_address(void **state)
{
	struct fixture *f = *state;
	int in = raw_connect("127.0.0.46", f->port);
	int out = raw_connect("127.0.0.47", f->port);
	assert_int_equal(raw_mnt(in, 3, "/peer"), MNT3_OK);
	assert_int_equal(raw_mnt(out, 3, "/peer"), MNT3ERR_ACCES);
	assert_int_equal(raw_mnt(out, 1, "/peer"), MNT1ERR_ACCES);
	/* v2 is served like v1. */
	assert_int_equal(raw_mnt(in, 2, "/peer"), MNT1_OK);
	assert_int_equal(raw_mnt(out, 3, "/vm"), MNT3_OK);
	close(in);
	close(out);
}

static void test_hostile(void **state)
{
	struct fixture *f = *state;
	int fd = raw_connect("127.0.0.1", f->port);
	uint8_t body[256];
	size_t blen;
	/* A path longer than MNTPATHLEN (libnfs's codec would take it). */
	char *longp = malloc(2001);
	longp[0] = '/';
	memset(longp + 1, 'p', 1999);
	longp[2000] = 0;
	uint32_t st = raw_mnt(fd, 3, longp);
	free(longp);
	assert_int_equal(st, MNT3ERR_NAMETOOLONG);
	/* A string length past the end of the call. */
	uint8_t args[8];
	put32(args, 1u << 20);
	memcpy(args + 4, "/vm\0", 4);
	raw_call(fd, 9, 3, 1, args, sizeof(args));
	assert_int_equal(raw_reply(fd, 9, body, sizeof(body), &blen), RPC_GARBAGE_ARGS);
	raw_call(fd, 10, 3, 3, args, sizeof(args)); /* UMNT */
	assert_int_equal(raw_reply(fd, 10, body, sizeof(body), &blen), RPC_GARBAGE_ARGS);
	/* No arguments at all. */
	raw_call(fd, 11, 3, 1, NULL, 0);
	assert_int_equal(raw_reply(fd, 11, body, sizeof(body), &blen), RPC_GARBAGE_ARGS);
	/* Unknown procedure; NULL works. */
	raw_call(fd, 12, 3, 9, NULL, 0);
	assert_int_equal(raw_reply(fd, 12, body, sizeof(body), &blen), RPC_PROC_UNAVAIL);
	raw_call(fd, 13, 1, 0, NULL, 0);
	assert_int_equal(raw_reply(fd, 13, body, sizeof(body), &blen), RPC_SUCCESS);
	assert_int_equal(blen, 0);
	/* The connection still serves. */
	assert_int_equal(raw_mnt(fd, 3, "/vm"), MNT3_OK);
	close(fd);
}

static void test_list_bounded(void **state)
{
	struct fixture *f = *state;
	int fd = raw_connect("127.0.0.1", f->port);
	const unsigned n = MOUNT_MAX_ENTRIES + 6;
	for (unsigned i = 0; i < n; i++) {
		char p[64];
		snprintf(p, sizeof(p), "/many/d%u", i);
		assert_int_equal(raw_mnt(fd, 3, p), MNT3_OK);
	}
	close(fd);
	struct each_arg *ea = calloc(1, sizeof(*ea) + 64 * 1024);
	ea->f = f;
	/* Counting through DUMP: the oldest six went. */
	struct cli c;
	cli_open(&c, HOST, f->port);
	assert_int_equal(rpc_mount3_dump_async(c.rpc, cli_void_cb, &c), 0);
	cli_wait(&c);
	assert_int_equal(c.status, RPC_STATUS_SUCCESS);
	cli_close(&c);
	assert_int_equal(loop_call(f->l, each_on_loop, ea), 0);
	assert_true(strncmp(ea->text, "127.0.0.1:/many/d6;127.0.0.1:/many/d7;", 38) == 0);
	free(ea);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test_setup_teardown(test_mnt_v3, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_mnt_v1, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_export_dump_umnt, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_client_address, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_hostile, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_list_bounded, setup, teardown),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}

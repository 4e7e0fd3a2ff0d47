/*
 * test_rpc: the RPC transport (nfsgw/rpc.h) over real loopback sockets. The server runs its
 * loop on a thread; the test is a blocking client that builds records by hand. Test program
 * 400000 v1-2: 0 NULL, 1 echo opaque, 2 reply after N ms, 3 reply with N data bytes (zero
 * copy), 4 like 3 but after N ms, 5 echo credentials, 6 decode {opaque, uint} (bad lengths),
 * 7 a reply too big to encode, 8 decode libnfs's READ3args and answer its count, 9 decode
 * READDIR3args (a fixed-size opaque) and answer its count.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

#include <nfsc/libnfs-raw-nfs.h>

#include "nfsgw/rpc.h"
#include "tests/unit/rpc_client.h"

#define HOST "127.0.0.31"
#define TPROG 400000u

struct echo {
	char *val;
	uint32_t len;
};

static uint32_t zdr_echo(ZDR *z, void *p, ...)
{
	struct echo *e = p;
	return zdr_bytes(z, &e->val, &e->len, 4u << 20);
}

static uint32_t zdr_u32(ZDR *z, void *p, ...)
{
	return zdr_u_int(z, p);
}

static uint32_t zdr_read3(ZDR *z, void *p, ...)
{
	return zdr_READ3args(z, p);
}

static uint32_t zdr_readdir3(ZDR *z, void *p, ...)
{
	return zdr_READDIR3args(z, p);
}

struct pair {
	char *val;
	uint32_t len;
	uint32_t n;
};

static uint32_t zdr_pair(ZDR *z, void *p, ...)
{
	struct pair *e = p;
	return zdr_bytes(z, &e->val, &e->len, 64) && zdr_u_int(z, &e->n);
}

struct credres {
	struct rpc_cred *cr;
};

static uint32_t zdr_cred(ZDR *z, void *p, ...)
{
	struct rpc_cred *cr = ((struct credres *)p)->cr;
	char *m = cr->machine;
	if (!zdr_u_int(z, &cr->flavor) || !zdr_u_int(z, &cr->uid) || !zdr_u_int(z, &cr->gid) ||
	    !zdr_u_int(z, &cr->ngids))
		return 0;
	for (uint32_t i = 0; i < cr->ngids; i++)
		if (!zdr_u_int(z, &cr->gids[i]))
			return 0;
	return zdr_string(z, &m, 255);
}

struct env {
	struct rpc_srv srv;
	uint8_t data[4u << 20];
	int released, finished, dispatched; /* atomics */
};

struct later {
	struct env *e;
	struct rpc_call *c;
	uint32_t n;
	bool data;
};

static void data_release(void *arg)
{
	struct env *e = arg;
	__atomic_add_fetch(&e->released, 1, __ATOMIC_SEQ_CST);
}

static void later_fire(void *arg)
{
	struct later *lt = arg;
	struct env *e = lt->e;
	if (lt->data)
		rpc_reply_data(lt->c, zdr_u32, &lt->n, e->data, lt->n, data_release, e);
	else
		rpc_reply(lt->c, zdr_u32, &lt->n);
	__atomic_add_fetch(&e->finished, 1, __ATOMIC_SEQ_CST);
	free(lt);
}

static void tprog(void *ctx, struct rpc_call *c)
{
	struct env *e = ctx;
	__atomic_add_fetch(&e->dispatched, 1, __ATOMIC_SEQ_CST);
	switch (c->proc) {
	case 0:
		rpc_reply(c, NULL, NULL);
		return;
	case 1: {
		struct echo a;
		if (rpc_decode_args(c, zdr_echo, &a, sizeof(a)) < 0) {
			rpc_reply_accept(c, RPC_GARBAGE_ARGS);
			return;
		}
		/* opaque data points into c->args, which lives until the reply */
		rpc_args_free(c, zdr_echo, &a);
		rpc_reply(c, zdr_echo, &a);
		return;
	}
	case 2:
	case 4: {
		uint32_t n;
		if (rpc_decode_args(c, zdr_u32, &n, sizeof(n)) < 0) {
			rpc_reply_accept(c, RPC_GARBAGE_ARGS);
			return;
		}
		rpc_args_free(c, zdr_u32, &n);
		struct later *lt = calloc(1, sizeof(*lt));
		assert_non_null(lt);
		*lt =
		    (struct later){.e = e, .c = c, .n = c->proc == 4 ? 8 : n, .data = c->proc == 4};
		loop_timer_add(e->srv.l, n, later_fire, lt, NULL);
		return;
	}
	case 3: {
		uint32_t n;
		if (rpc_decode_args(c, zdr_u32, &n, sizeof(n)) < 0 || n > sizeof(e->data)) {
			rpc_reply_accept(c, RPC_GARBAGE_ARGS);
			return;
		}
		rpc_args_free(c, zdr_u32, &n);
		rpc_reply_data(c, zdr_u32, &n, e->data, n, data_release, e);
		return;
	}
	case 5: {
		struct credres r = {.cr = &c->cred};
		rpc_reply(c, zdr_cred, &r);
		return;
	}
	case 6: {
		struct pair a;
		if (rpc_decode_args(c, zdr_pair, &a, sizeof(a)) < 0) {
			rpc_reply_accept(c, RPC_GARBAGE_ARGS);
			return;
		}
		rpc_args_free(c, zdr_pair, &a);
		rpc_reply(c, zdr_u32, &a.n);
		return;
	}
	case 7: {
		struct echo a = {.val = (char *)e->data, .len = sizeof(e->data)};
		rpc_reply(c, zdr_echo, &a);
		return;
	}
	case 8: {
		READ3args a;
		if (rpc_decode_args(c, zdr_read3, &a, sizeof(a)) < 0) {
			rpc_reply_accept(c, RPC_GARBAGE_ARGS);
			return;
		}
		uint32_t n = a.count + a.file.data.data_len;
		rpc_args_free(c, zdr_read3, &a);
		rpc_reply(c, zdr_u32, &n);
		return;
	}
	case 9: {
		READDIR3args a;
		if (rpc_decode_args(c, zdr_readdir3, &a, sizeof(a)) < 0) {
			rpc_reply_accept(c, RPC_GARBAGE_ARGS);
			return;
		}
		uint32_t n = a.count;
		rpc_args_free(c, zdr_readdir3, &a);
		rpc_reply(c, zdr_u32, &n);
		return;
	}
	default:
		rpc_reply_accept(c, RPC_PROC_UNAVAIL);
	}
}

static int setup(void **state)
{
	struct env *e = calloc(1, sizeof(*e));
	assert_non_null(e);
	for (size_t i = 0; i < sizeof(e->data); i++)
		e->data[i] = (uint8_t)(i * 7 + 3);
	rpc_srv_new(&e->srv, HOST);
	struct rpc_program p = {
	    .prog = TPROG, .vers_low = 1, .vers_high = 2, .dispatch = tprog, .ctx = e};
	assert_int_equal(rpc_server_add_program(e->srv.s, &p), 0);
	rpc_srv_run(&e->srv);
	*state = e;
	return 0;
}

static int teardown(void **state)
{
	struct env *e = *state;
	rpc_srv_stop(&e->srv);
	loop_free(e->srv.l);
	free(e);
	return 0;
}

static int cl_connect(struct env *e)
{
	int fd = rpc_cl_connect(NULL, HOST, e->srv.port);
	assert_true(fd >= 0);
	return fd;
}

/* ---- tests ---- */

static void test_null_and_echo(void **state)
{
	struct env *e = *state;
	int fd = cl_connect(e);
	struct buf r = {0}, b = {0};
	simple_call(fd, 7, TPROG, 1, 0, &r);
	assert_int_equal(r.len, 24);
	expect_success(&r, 7);
	call_hdr(&b, 8, 2, TPROG, 2, 1, 0, NULL);
	putbytes(&b, "hello", 5);
	send_rec(fd, &b, 1);
	assert_int_equal(recv_rec(fd, &r), 0);
	uint32_t i = expect_success(&r, 8);
	assert_int_equal(word(&r, i), 5);
	assert_memory_equal(r.p + 4 * i + 4, "hello", 5);
	assert_int_equal(r.len, 4 * i + 4 + 8);
	close(fd);
	free(r.p);
	free(b.p);
}

static void test_pipelined_out_of_order(void **state)
{
	struct env *e = *state;
	int fd = cl_connect(e);
	struct buf b = {0}, r = {0};
	/* xid 1 answers after 300 ms, xid 2 after 0 ms, xid 3 at once; all sent in one go. */
	uint32_t delays[3] = {300, 0, 0};
	for (uint32_t x = 1; x <= 3; x++) {
		uint32_t l = b.len;
		put(&b, 0);
		call_hdr(&b, x, 2, TPROG, 1, x == 3 ? 0 : 2, 0, NULL);
		if (x < 3)
			put(&b, delays[x - 1]);
		uint32_t mark = htonl(0x80000000u | (b.len - l - 4));
		memcpy(b.p + l, &mark, 4);
	}
	writeall(fd, b.p, b.len);
	uint32_t order[3];
	for (int i = 0; i < 3; i++) {
		assert_int_equal(recv_rec(fd, &r), 0);
		order[i] = word(&r, 0);
		expect_success(&r, order[i]);
	}
	assert_int_equal(order[2], 1);
	assert_true(order[0] != 1 && order[1] != 1);
	close(fd);
	free(b.p);
	free(r.p);
}

static void test_multi_fragment(void **state)
{
	struct env *e = *state;
	int fd = cl_connect(e);
	struct buf b = {0}, r = {0};
	uint32_t n = 1u << 20;
	uint8_t *big = malloc(n);
	for (uint32_t i = 0; i < n; i++)
		big[i] = (uint8_t)(i * 13);
	call_hdr(&b, 21, 2, TPROG, 1, 1, 0, NULL);
	putbytes(&b, big, n);
	send_rec(fd, &b, 5); /* fragments cut mid-header and mid-data */
	assert_int_equal(recv_rec(fd, &r), 0);
	uint32_t i = expect_success(&r, 21);
	assert_int_equal(word(&r, i), n);
	assert_memory_equal(r.p + 4 * i + 4, big, n);
	/* tiny fragments: 3-byte pieces */
	b.len = 0;
	call_hdr(&b, 22, 2, TPROG, 1, 1, 0, NULL);
	putbytes(&b, "abc", 3);
	send_rec(fd, &b, b.len / 3);
	assert_int_equal(recv_rec(fd, &r), 0);
	i = expect_success(&r, 22);
	assert_memory_equal(r.p + 4 * i + 4, "abc", 3);
	close(fd);
	free(big);
	free(b.p);
	free(r.p);
}

static void test_oversize_and_empty_fragment(void **state)
{
	struct env *e = *state;
	struct buf r = {0};
	int fd = cl_connect(e);
	uint32_t mark = htonl(0x80000000u | (RPC_MAX_RECORD + 1));
	writeall(fd, &mark, 4);
	assert_true(closed_by_server(fd));
	close(fd);

	/* Two fragments adding up to more than the bound. */
	fd = cl_connect(e);
	uint32_t half = RPC_MAX_RECORD / 2 + 8;
	uint8_t *junk = calloc(1, half);
	mark = htonl(half);
	writeall(fd, &mark, 4);
	writeall(fd, junk, half);
	mark = htonl(0x80000000u | half);
	writeall(fd, &mark, 4);
	assert_true(closed_by_server(fd));
	close(fd);
	free(junk);

	fd = cl_connect(e);
	mark = htonl(0); /* empty, not last */
	writeall(fd, &mark, 4);
	assert_true(closed_by_server(fd));
	close(fd);

	/* The server still serves a new connection. */
	fd = cl_connect(e);
	simple_call(fd, 5, TPROG, 1, 0, &r);
	expect_success(&r, 5);
	close(fd);
	free(r.p);
}

static void test_garbage_header(void **state)
{
	struct env *e = *state;
	struct buf b = {0}, r = {0};
	int fd = cl_connect(e);
	put(&b, 1);
	put(&b, 0); /* xid + CALL, then nothing */
	send_rec(fd, &b, 1);
	assert_true(closed_by_server(fd));
	close(fd);

	fd = cl_connect(e);
	b.len = 0;
	call_hdr(&b, 9, 2, TPROG, 1, 0, 0, NULL);
	((uint32_t *)b.p)[1] = htonl(1); /* a REPLY */
	send_rec(fd, &b, 1);
	assert_true(closed_by_server(fd));
	close(fd);

	fd = cl_connect(e);
	b.len = 0;
	call_hdr(&b, 9, 2, TPROG, 1, 0, 0, NULL);
	b.len -= 4; /* verifier length missing */
	send_rec(fd, &b, 1);
	assert_true(closed_by_server(fd));
	close(fd);

	fd = cl_connect(e);
	simple_call(fd, 6, TPROG, 1, 0, &r);
	expect_success(&r, 6);
	close(fd);
	free(b.p);
	free(r.p);
}

static void test_rejections(void **state)
{
	struct env *e = *state;
	struct buf b = {0}, r = {0};
	int fd = cl_connect(e);

	call_hdr(&b, 30, 3, TPROG, 1, 0, 0, NULL); /* rpcvers 3 */
	send_rec(fd, &b, 1);
	assert_int_equal(recv_rec(fd, &r), 0);
	assert_int_equal(word(&r, 0), 30);
	assert_int_equal(word(&r, 2), 1); /* MSG_DENIED */
	assert_int_equal(word(&r, 3), 0); /* RPC_MISMATCH */
	assert_int_equal(word(&r, 4), 2);
	assert_int_equal(word(&r, 5), 2);

	simple_call(fd, 31, TPROG + 1, 1, 0, &r);
	assert_int_equal(word(&r, 2), 0);
	assert_int_equal(word(&r, 5), RPC_PROG_UNAVAIL);
	assert_int_equal(r.len, 24);

	simple_call(fd, 32, TPROG, 3, 0, &r);
	assert_int_equal(word(&r, 5), RPC_PROG_MISMATCH);
	assert_int_equal(word(&r, 6), 1);
	assert_int_equal(word(&r, 7), 2);

	simple_call(fd, 33, TPROG, 1, 99, &r);
	assert_int_equal(word(&r, 5), RPC_PROC_UNAVAIL);

	b.len = 0;
	call_hdr(&b, 34, 2, TPROG, 1, 0, 6, NULL); /* RPCSEC_GSS */
	send_rec(fd, &b, 1);
	assert_int_equal(recv_rec(fd, &r), 0);
	assert_int_equal(word(&r, 0), 34);
	assert_int_equal(word(&r, 2), 1); /* MSG_DENIED */
	assert_int_equal(word(&r, 3), 1); /* AUTH_ERROR */
	assert_int_equal(word(&r, 4), RPC_AUTH_BADCRED);

	/* The connection is still good. */
	simple_call(fd, 35, TPROG, 2, 0, &r);
	expect_success(&r, 35);
	close(fd);
	free(b.p);
	free(r.p);
}

static void auth_sys_body(struct buf *c, const char *machine, uint32_t ngids, uint32_t gids_sent)
{
	c->len = 0;
	put(c, 12345);
	putbytes(c, machine, (uint32_t)strlen(machine));
	put(c, 1000);
	put(c, 100);
	put(c, ngids);
	for (uint32_t i = 0; i < gids_sent; i++)
		put(c, 500 + i);
}

static void test_auth_sys(void **state)
{
	struct env *e = *state;
	struct buf b = {0}, r = {0}, cred = {0};
	int fd = cl_connect(e);
	auth_sys_body(&cred, "client-host", 3, 3);
	call_hdr(&b, 40, 2, TPROG, 1, 5, 1, &cred);
	send_rec(fd, &b, 1);
	assert_int_equal(recv_rec(fd, &r), 0);
	uint32_t i = expect_success(&r, 40);
	assert_int_equal(word(&r, i), 1);
	assert_int_equal(word(&r, i + 1), 1000);
	assert_int_equal(word(&r, i + 2), 100);
	assert_int_equal(word(&r, i + 3), 3);
	assert_int_equal(word(&r, i + 4), 500);
	assert_int_equal(word(&r, i + 6), 502);
	assert_int_equal(word(&r, i + 7), 11);
	assert_memory_equal(r.p + 4 * (i + 8), "client-host", 11);

	char longname[300];
	memset(longname, 'a', sizeof(longname) - 1);
	longname[299] = 0;
	struct {
		const char *m;
		uint32_t ngids, sent;
	} bad[] = {{longname, 0, 0}, {"h", 17, 17}, {"h", 4, 2}};
	for (int k = 0; k < 3; k++) {
		auth_sys_body(&cred, bad[k].m, bad[k].ngids, bad[k].sent);
		b.len = 0;
		call_hdr(&b, 41 + k, 2, TPROG, 1, 5, 1, &cred);
		send_rec(fd, &b, 1);
		assert_int_equal(recv_rec(fd, &r), 0);
		assert_int_equal(word(&r, 0), 41 + k);
		assert_int_equal(word(&r, 2), 1);
		assert_int_equal(word(&r, 3), 1);
		assert_int_equal(word(&r, 4), RPC_AUTH_BADCRED);
	}
	/* cred longer than 400 bytes */
	auth_sys_body(&cred, "h", 16, 16);
	for (int k = 0; k < 90; k++)
		put(&cred, 0);
	b.len = 0;
	call_hdr(&b, 50, 2, TPROG, 1, 5, 1, &cred);
	send_rec(fd, &b, 1);
	assert_int_equal(recv_rec(fd, &r), 0);
	assert_int_equal(word(&r, 4), RPC_AUTH_BADCRED);
	close(fd);
	free(b.p);
	free(r.p);
	free(cred.p);
}

static void test_bad_xdr_lengths(void **state)
{
	struct env *e = *state;
	struct buf b = {0}, r = {0};
	int fd = cl_connect(e);
	uint32_t lens[] = {0x80000000u, 0xfffffff0u, 0x7ffffffcu, 65, 100};
	for (uint32_t k = 0; k < 5; k++) {
		b.len = 0;
		call_hdr(&b, 60 + k, 2, TPROG, 1, 6, 0, NULL);
		put(&b, lens[k]);
		put(&b, 1);
		put(&b, 2);
		send_rec(fd, &b, 1);
		assert_int_equal(recv_rec(fd, &r), 0);
		assert_int_equal(word(&r, 0), 60 + k);
		assert_int_equal(word(&r, 5), RPC_GARBAGE_ARGS);
	}
	/* libnfs's own codecs go through the checked zdr_bytes too: a file handle length word
	 * of 2^31 would otherwise send the offset read 2 GiB before the record. */
	for (uint32_t k = 0; k < 3; k++) {
		b.len = 0;
		call_hdr(&b, 80 + k, 2, TPROG, 1, 8, 0, NULL);
		put(&b, k == 0 ? 0x80000000u : k == 1 ? 0xfffffffcu : 8);
		for (int w = 0; w < 2; w++)
			put(&b, 0x01010101);
		put(&b, 0);
		put(&b, 4096); /* offset */
		put(&b, 1000); /* count */
		send_rec(fd, &b, 1);
		assert_int_equal(recv_rec(fd, &r), 0);
		assert_int_equal(word(&r, 0), 80 + k);
		if (k < 2) {
			assert_int_equal(word(&r, 5), RPC_GARBAGE_ARGS);
		} else {
			assert_int_equal(word(&r, 5), RPC_SUCCESS);
			assert_int_equal(word(&r, 6), 1008);
		}
	}
	/* A fixed-size opaque (the cookie verifier) cut short at the end of the record, and
	 * then whole. */
	for (uint32_t k = 0; k < 2; k++) {
		b.len = 0;
		call_hdr(&b, 85 + k, 2, TPROG, 1, 9, 0, NULL);
		put(&b, 8);
		put(&b, 1);
		put(&b, 2);
		put(&b, 0);
		put(&b, 3); /* cookie */
		put(&b, 0x11111111);
		if (k == 1) {
			put(&b, 0x22222222);
			put(&b, 4321); /* count */
		}
		send_rec(fd, &b, 1);
		assert_int_equal(recv_rec(fd, &r), 0);
		assert_int_equal(word(&r, 0), 85 + k);
		if (k == 0) {
			assert_int_equal(word(&r, 5), RPC_GARBAGE_ARGS);
		} else {
			assert_int_equal(word(&r, 5), RPC_SUCCESS);
			assert_int_equal(word(&r, 6), 4321);
		}
	}
	/* and a good one */
	b.len = 0;
	call_hdr(&b, 70, 2, TPROG, 1, 6, 0, NULL);
	putbytes(&b, "xy", 2);
	put(&b, 77);
	send_rec(fd, &b, 1);
	assert_int_equal(recv_rec(fd, &r), 0);
	assert_int_equal(word(&r, expect_success(&r, 70)), 77);
	/* truncated args */
	b.len = 0;
	call_hdr(&b, 71, 2, TPROG, 1, 6, 0, NULL);
	putbytes(&b, "xy", 2);
	send_rec(fd, &b, 1);
	assert_int_equal(recv_rec(fd, &r), 0);
	assert_int_equal(word(&r, 5), RPC_GARBAGE_ARGS);
	close(fd);
	free(b.p);
	free(r.p);
}

static void test_reply_data_zero_copy(void **state)
{
	struct env *e = *state;
	struct buf b = {0}, r = {0};
	int fd = cl_connect(e);
	int base = __atomic_load_n(&e->released, __ATOMIC_SEQ_CST);
	call_hdr(&b, 80, 2, TPROG, 1, 3, 0, NULL);
	put(&b, 5);
	send_rec(fd, &b, 1);
	assert_int_equal(recv_rec(fd, &r), 0);
	uint32_t i = expect_success(&r, 80);
	assert_int_equal(word(&r, i), 5);
	assert_int_equal(r.len, 4 * i + 4 + 8);
	assert_memory_equal(r.p + 4 * i + 4, e->data, 5);
	assert_memory_equal(r.p + 4 * i + 9, "\0\0\0", 3);
	for (int k = 0; k < 200 && __atomic_load_n(&e->released, __ATOMIC_SEQ_CST) != base + 1; k++)
		usleep(5000);
	assert_int_equal(__atomic_load_n(&e->released, __ATOMIC_SEQ_CST), base + 1);

	/* 4 MiB does not fit the socket buffers: the server must hold our buffer (not a copy)
	 * and release it only once everything was sent, exactly once. */
	int rcv = 64 << 10;
	setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &rcv, sizeof(rcv));
	b.len = 0;
	call_hdr(&b, 81, 2, TPROG, 1, 3, 0, NULL);
	put(&b, 4u << 20);
	send_rec(fd, &b, 1);
	usleep(300000);
	assert_int_equal(__atomic_load_n(&e->released, __ATOMIC_SEQ_CST), base + 1);
	assert_int_equal(recv_rec(fd, &r), 0);
	i = expect_success(&r, 81);
	assert_int_equal(word(&r, i), 4u << 20);
	assert_memory_equal(r.p + 4 * i + 4, e->data, 4u << 20);
	for (int k = 0; k < 200 && __atomic_load_n(&e->released, __ATOMIC_SEQ_CST) != base + 2; k++)
		usleep(5000);
	assert_int_equal(__atomic_load_n(&e->released, __ATOMIC_SEQ_CST), base + 2);
	close(fd);
	free(b.p);
	free(r.p);
}

struct nconns_q {
	struct env *e;
	uint32_t n;
};

static void q_nconns(void *arg)
{
	struct nconns_q *q = arg;
	q->n = rpc_server_nconns(q->e->srv.s);
}

static void close_with_calls_pending(struct env *e, bool reset)
{
	struct buf b = {0};
	int fin0 = __atomic_load_n(&e->finished, __ATOMIC_SEQ_CST);
	int rel0 = __atomic_load_n(&e->released, __ATOMIC_SEQ_CST);
	int dis0 = __atomic_load_n(&e->dispatched, __ATOMIC_SEQ_CST);
	int fd = cl_connect(e);
	/* More than RPC_MAX_INFLIGHT so the server also stops reading for a while. */
	const int n = 300;
	for (int k = 0; k < n; k++) {
		uint32_t l = b.len;
		put(&b, 0);
		call_hdr(&b, 1000 + (uint32_t)k, 2, TPROG, 1, k % 2 ? 4 : 2, 0, NULL);
		put(&b, 300);
		uint32_t mark = htonl(0x80000000u | (b.len - l - 4));
		memcpy(b.p + l, &mark, 4);
	}
	writeall(fd, b.p, b.len);
	/* Wait until the first batch is dispatched, then leave. */
	for (int k = 0;
	     k < 400 && __atomic_load_n(&e->dispatched, __ATOMIC_SEQ_CST) - dis0 < RPC_MAX_INFLIGHT;
	     k++)
		usleep(5000);
	assert_int_equal(__atomic_load_n(&e->dispatched, __ATOMIC_SEQ_CST) - dis0,
			 RPC_MAX_INFLIGHT);
	if (reset) {
		/* RST: the server sees the connection die while its calls are pending. */
		struct linger lg = {.l_onoff = 1, .l_linger = 0};
		setsockopt(fd, SOL_SOCKET, SO_LINGER, &lg, sizeof(lg));
	}
	close(fd);
	/* After a FIN the server may read more calls (until its first reply to the dead client
	 * draws a RST); after our RST nothing more is dispatched. Either way every dispatched
	 * call finishes and the connection goes away. */
	struct nconns_q q = {.e = e, .n = 99};
	int disp = 0, fin = -1;
	for (int k = 0; k < 600; k++) {
		loop_call(e->srv.l, q_nconns, &q);
		disp = __atomic_load_n(&e->dispatched, __ATOMIC_SEQ_CST) - dis0;
		fin = __atomic_load_n(&e->finished, __ATOMIC_SEQ_CST) - fin0;
		if (q.n == 0 && fin == disp)
			break;
		usleep(5000);
	}
	assert_int_equal(q.n, 0);
	assert_int_equal(fin, disp);
	if (reset)
		assert_int_equal(disp, RPC_MAX_INFLIGHT);
	assert_true(disp >= RPC_MAX_INFLIGHT && disp <= n);
	/* Every reply_data (odd xids) was released exactly once, sent or not. */
	assert_int_equal(__atomic_load_n(&e->released, __ATOMIC_SEQ_CST) - rel0, disp / 2);
	free(b.p);
}

static void test_close_with_calls_pending(void **state)
{
	close_with_calls_pending(*state, false);
}

static void test_reset_with_calls_pending(void **state)
{
	close_with_calls_pending(*state, true);
}

/* More calls than RPC_MAX_INFLIGHT: the server pauses reading, then resumes and answers all. */
static void test_flow_control(void **state)
{
	struct env *e = *state;
	struct buf b = {0}, r = {0};
	int fd = cl_connect(e);
	const uint32_t n = 3 * RPC_MAX_INFLIGHT + 7;
	for (uint32_t k = 0; k < n; k++) {
		uint32_t l = b.len;
		put(&b, 0);
		call_hdr(&b, 5000 + k, 2, TPROG, 1, k % 3 ? 2 : 3, 0, NULL);
		put(&b, k % 3 ? 5 : 100);
		uint32_t mark = htonl(0x80000000u | (b.len - l - 4));
		memcpy(b.p + l, &mark, 4);
	}
	writeall(fd, b.p, b.len);
	uint8_t *seen = calloc(n, 1);
	for (uint32_t k = 0; k < n; k++) {
		assert_int_equal(recv_rec(fd, &r), 0);
		uint32_t x = word(&r, 0) - 5000;
		assert_true(x < n);
		assert_false(seen[x]);
		seen[x] = 1;
		expect_success(&r, x + 5000);
	}
	/* Half-close: calls still in flight are answered before the server closes. */
	b.len = 0;
	call_hdr(&b, 9000, 2, TPROG, 1, 2, 0, NULL);
	put(&b, 200);
	send_rec(fd, &b, 1);
	shutdown(fd, SHUT_WR);
	assert_int_equal(recv_rec(fd, &r), 0);
	expect_success(&r, 9000);
	assert_true(closed_by_server(fd));
	close(fd);
	free(seen);
	free(b.p);
	free(r.p);
}

static void test_reply_too_big(void **state)
{
	struct env *e = *state;
	struct buf r = {0};
	int fd = cl_connect(e);
	simple_call(fd, 90, TPROG, 1, 7, &r);
	assert_int_equal(word(&r, 0), 90);
	assert_int_equal(word(&r, 2), 0);
	assert_int_equal(word(&r, 5), RPC_SYSTEM_ERR);
	simple_call(fd, 91, TPROG, 1, 0, &r);
	expect_success(&r, 91);
	close(fd);
	free(r.p);
}

static double cpu_seconds(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* Out of descriptors: the server neither spins on its listener nor loses the connections
 * waiting in the backlog once descriptors are back. */
static void test_accept_emfile(void **state)
{
	struct env *e = *state;
	struct buf r = {0};
	int fds[3];
	struct rlimit old, low;
	assert_int_equal(getrlimit(RLIMIT_NOFILE, &old), 0);
	int top = dup(0); /* the lowest free descriptor: all new ones would be >= top */
	assert_true(top >= 0);
	close(top);
	for (int i = 0; i < 3; i++)
		fds[i] = socket(AF_INET, SOCK_STREAM, 0);
	low = old;
	int maxfd = fds[0];
	for (int i = 1; i < 3; i++)
		if (fds[i] > maxfd)
			maxfd = fds[i];
	low.rlim_cur = (rlim_t)maxfd + 1;
	/* Connect after lowering: the server cannot accept these. */
	assert_int_equal(setrlimit(RLIMIT_NOFILE, &low), 0);
	struct sockaddr_in sin = {.sin_family = AF_INET, .sin_port = htons(e->srv.port)};
	inet_pton(AF_INET, HOST, &sin.sin_addr);
	for (int i = 0; i < 3; i++)
		assert_int_equal(connect(fds[i], (struct sockaddr *)&sin, sizeof(sin)), 0);
	double c0 = cpu_seconds();
	usleep(400000);
	double spent = cpu_seconds() - c0;
	assert_int_equal(setrlimit(RLIMIT_NOFILE, &old), 0);
	assert_true(spent < 0.2);
	for (int i = 0; i < 3; i++) {
		struct timeval tv = {.tv_sec = 5};
		setsockopt(fds[i], SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
		simple_call(fds[i], 100 + (uint32_t)i, TPROG, 1, 0, &r);
		expect_success(&r, 100 + (uint32_t)i);
		close(fds[i]);
	}
	free(r.p);
}

static void test_listen_errors(void **state)
{
	struct env *e = *state;
	struct rpc_server *s2;
	assert_int_equal(rpc_server_new(e->srv.l, &s2), 0);
	/* not an IPv4 address */
	assert_int_equal(rpc_server_listen(s2, "nonsense", 0, NULL), -EINVAL);
	rpc_server_free(s2);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test_setup_teardown(test_null_and_echo, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_pipelined_out_of_order, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_multi_fragment, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_oversize_and_empty_fragment, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_garbage_header, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_rejections, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_auth_sys, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_bad_xdr_lengths, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_reply_data_zero_copy, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_close_with_calls_pending, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_reset_with_calls_pending, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_flow_control, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_reply_too_big, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_accept_emfile, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_listen_errors, setup, teardown),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}

/*
 * rpc_client: a blocking, hand-rolled ONC RPC client over TCP for the tests of RPC servers
 * (test_rpc, test_portmap): connect (from a chosen source address), build records word by
 * word, send them in any number of fragments, receive and reassemble replies, and check the
 * reply header. Built by hand so tests can send what a real client never would. Also the
 * server side's usual fixture: an rpc_server listening on a loop thread of its own.
 * Test-only, header-only: each test binary includes it once.
 */
#ifndef BLOCKD_TEST_RPC_CLIENT_H
#define BLOCKD_TEST_RPC_CLIENT_H

#include <arpa/inet.h>
#include <errno.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#include "nfsgw/rpc.h"
#include "replica/loop.h"

/* A TCP connection to host:port (bound to src first when src is set) with a 5 s receive
 * timeout; the descriptor, or -1 when the bind or connect fails. */
static inline int rpc_cl_connect(const struct sockaddr_in *src, const char *host, uint16_t port)
{
	int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	assert_true(fd >= 0);
	struct sockaddr_in dst = {.sin_family = AF_INET, .sin_port = htons(port)};
	assert_int_equal(inet_pton(AF_INET, host, &dst.sin_addr), 1);
	if ((src && bind(fd, (const struct sockaddr *)src, sizeof(*src)) < 0) ||
	    connect(fd, (struct sockaddr *)&dst, sizeof(dst)) < 0) {
		close(fd);
		return -1;
	}
	struct timeval tv = {.tv_sec = 5};
	setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
	return fd;
}

/* An XDR record being built or received (free p when done). */
struct buf {
	uint8_t *p;
	uint32_t len, cap;
	uint32_t nfrag; /* fragments recv_rec() reassembled it from */
};

static inline void put(struct buf *b, uint32_t v)
{
	if (b->len + 4 > b->cap) {
		b->cap = b->cap ? b->cap * 2 : 256;
		b->p = realloc(b->p, b->cap);
		assert_non_null(b->p);
	}
	uint32_t be = htonl(v);
	memcpy(b->p + b->len, &be, 4);
	b->len += 4;
}

static inline void putbytes(struct buf *b, const void *d, uint32_t n)
{
	put(b, n);
	while (b->len + n + 4 > b->cap) {
		b->cap *= 2;
		b->p = realloc(b->p, b->cap);
		assert_non_null(b->p);
	}
	memcpy(b->p + b->len, d, n);
	b->len += n;
	while (b->len & 3)
		b->p[b->len++] = 0;
}

/* Call header with AUTH_NONE (flavor 0) or the given cred body. */
static inline void call_hdr(struct buf *b, uint32_t xid, uint32_t rpcvers, uint32_t prog,
			    uint32_t vers, uint32_t proc, uint32_t flavor, const struct buf *cred)
{
	put(b, xid);
	put(b, 0);
	put(b, rpcvers);
	put(b, prog);
	put(b, vers);
	put(b, proc);
	put(b, flavor);
	if (cred)
		putbytes(b, cred->p, cred->len);
	else
		put(b, 0);
	put(b, 0);
	put(b, 0);
}

static inline void writeall(int fd, const void *p, size_t n)
{
	const uint8_t *q = p;
	while (n > 0) {
		ssize_t w = send(fd, q, n, MSG_NOSIGNAL);
		if (w < 0 && errno == EINTR)
			continue;
		assert_true(w > 0);
		q += w;
		n -= (size_t)w;
	}
}

/* Sends b as one record in nfrag fragments. */
static inline void send_rec(int fd, const struct buf *b, uint32_t nfrag)
{
	uint32_t off = 0;
	for (uint32_t i = 0; i < nfrag; i++) {
		uint32_t n = i + 1 == nfrag ? b->len - off : b->len / nfrag;
		uint32_t mark = htonl(n | (i + 1 == nfrag ? 0x80000000u : 0));
		writeall(fd, &mark, 4);
		writeall(fd, b->p + off, n);
		off += n;
	}
}

static inline int readall(int fd, void *p, size_t n)
{
	uint8_t *q = p;
	while (n > 0) {
		ssize_t r = recv(fd, q, n, 0);
		if (r < 0 && errno == EINTR)
			continue;
		if (r <= 0)
			return -1;
		q += r;
		n -= (size_t)r;
	}
	return 0;
}

/* Receives one record (reassembled); -1 on EOF/timeout. */
static inline int recv_rec(int fd, struct buf *b)
{
	b->len = 0;
	b->nfrag = 0;
	for (;;) {
		uint32_t mark;
		if (readall(fd, &mark, 4) < 0)
			return -1;
		mark = ntohl(mark);
		uint32_t n = mark & 0x7fffffffu;
		if (b->len + n > b->cap) {
			b->cap = b->len + n;
			b->p = realloc(b->p, b->cap);
		}
		if (readall(fd, b->p + b->len, n) < 0)
			return -1;
		b->len += n;
		b->nfrag++;
		if (mark >> 31)
			return 0;
	}
}

static inline uint32_t word(const struct buf *b, uint32_t i)
{
	assert_true(4 * i + 4 <= b->len);
	uint32_t v;
	memcpy(&v, b->p + 4 * i, 4);
	return ntohl(v);
}

/* For an accepted SUCCESS reply: index of the first body word. */
static inline uint32_t expect_success(const struct buf *r, uint32_t xid)
{
	assert_int_equal(word(r, 0), xid);
	assert_int_equal(word(r, 1), 1);
	assert_int_equal(word(r, 2), 0); /* MSG_ACCEPTED */
	assert_int_equal(word(r, 5), 0); /* SUCCESS */
	return 6;
}

static inline bool closed_by_server(int fd)
{
	uint8_t c;
	ssize_t r;
	while ((r = recv(fd, &c, 1, 0)) < 0 && errno == EINTR)
		;
	return r == 0;
}

static inline void simple_call(int fd, uint32_t xid, uint32_t prog, uint32_t vers, uint32_t proc,
			       struct buf *reply)
{
	struct buf b = {0};
	call_hdr(&b, xid, 2, prog, vers, proc, 0, NULL);
	send_rec(fd, &b, 1);
	free(b.p);
	assert_int_equal(recv_rec(fd, reply), 0);
}

/* ---- the server under test, on a loop thread of its own ---- */

struct rpc_srv {
	struct loop *l;
	struct rpc_server *s;
	pthread_t th;
	uint16_t port;
};

/* A loop and a server listening on host (ephemeral port); add programs, then rpc_srv_run. */
static inline void rpc_srv_new(struct rpc_srv *v, const char *host)
{
	assert_int_equal(loop_new(&v->l), 0);
	assert_int_equal(rpc_server_new(v->l, &v->s), 0);
	assert_int_equal(rpc_server_listen(v->s, host, 0, &v->port), 0);
	assert_true(v->port > 0);
}

static inline void *rpc_srv_main(void *arg)
{
	loop_run(arg);
	return NULL;
}

static inline void rpc_srv_run(struct rpc_srv *v)
{
	assert_int_equal(pthread_create(&v->th, NULL, rpc_srv_main, v->l), 0);
}

static inline void rpc_srv_stop_fn(void *arg)
{
	struct rpc_srv *v = arg;
	rpc_server_free(v->s);
	loop_stop(v->l);
}

/* Frees the server on its loop thread (it may be mid-dispatch) and joins it; the caller frees
 * what the programs hold, then loop_free(v->l). */
static inline void rpc_srv_stop(struct rpc_srv *v)
{
	loop_post(v->l, rpc_srv_stop_fn, v);
	pthread_join(v->th, NULL);
}

#endif

/*
 * nbd_priv: state shared by the NBD server's files (nbd_server.c: sockets, connection
 * lifetime, output queue, input framing; nbd_handshake.c: options; nbd_transmit.c:
 * commands). Not a public interface.
 *
 * Connection lifetime: a connection is closed (socket gone) as soon as it fails or ends,
 * but its memory is freed only when no bdev callback and no deferred kick can still
 * reach it, and no handler is running on it (busy == 0).
 */
#ifndef BLOCKD_NBD_PRIV_H
#define BLOCKD_NBD_PRIV_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "blockd/nbd_proto.h"
#include "blockd/nbd_server.h"

/* Per-connection caps on requests received but not yet answered; reads pause past them. */
#define NBD_MAX_INFLIGHT 128u
#define NBD_MAX_INFLIGHT_BYTES (128ull << 20)
#define NBD_RBUF_SIZE (64u << 10)
/* Requests and buffers up to NBD_SMALL_BUF are recycled per connection (up to NBD_CACHE_MAX
 * of each): a 4 KiB I/O then costs no malloc, and no posix_memalign, which glibc serves
 * slowly (split chunks, consolidation). */
#define NBD_SMALL_BUF 4096u
#define NBD_CACHE_MAX 64u
/* Unsent option replies past which a negotiating client is not read (it is not reading). */
#define NBD_MAX_HS_BACKLOG (1u << 20)
/* A client must finish negotiating within this time. */
#define NBD_HANDSHAKE_MS 30000u

/* One queued piece of output: up to two byte ranges sent back to back. */
struct nbd_out {
	struct nbd_out *next;
	const uint8_t *p1;
	size_t n1;
	const uint8_t *p2;
	size_t n2;
	size_t sent;
	void (*free)(struct nbd_out *o);
};

enum nbd_rx {
	NBD_RX_CLIENT_FLAGS,
	NBD_RX_OPT_HDR,
	NBD_RX_OPT_DATA,
	NBD_RX_REQ_HDR,
	NBD_RX_REQ_PAYLOAD,
	NBD_RX_DISCARD,
	NBD_RX_STOP,
};

struct nbd_conn;

struct nbd_req {
	struct nbd_out out;
	uint8_t reply[NBD_SIMPLE_REPLY_SIZE];
	struct nbd_conn *c;
	uint64_t handle;
	uint64_t off;
	uint32_t len;
	uint16_t type;
	uint16_t flags;
	uint8_t *buf;
	uint64_t bytes; /* counted in c->inflight_bytes */
};

struct nbd_server {
	struct loop *loop;
	int fd;
	uint16_t port;
	struct nbd_exports exports;
	struct nbd_conn *conns;
	struct loop_timer *accept_timer; /* accept paused after EMFILE and the like */
};

struct nbd_conn {
	struct nbd_server *srv; /* NULL once orphaned by nbd_server_free */
	struct loop *loop;
	struct nbd_exports exports;
	struct nbd_conn *prev, *next;
	int fd;
	uint32_t events;
	bool closed;
	bool no_zeroes;
	bool attached;
	bool kick_scheduled;
	bool tx_blocked;
	bool close_after_tx;
	bool draining;	/* no new requests; close once the bdev is idle */
	bool drop_hard; /* draining for drop_export: do not wait for a slow reader */
	int busy;
	uint32_t bdev_pending;
	char *export_name;
	struct bdev bdev;
	uint16_t tflags;
	uint32_t inflight;
	uint64_t inflight_bytes;
	struct loop_timer *hs_timer;
	size_t tx_bytes; /* queued, not yet sent */
	struct nbd_out *tx_head;
	struct nbd_out **tx_tail;
	enum nbd_rx rx;
	bool readable; /* no short recv since the last EPOLLIN: the socket may hold more */
	uint8_t *rbuf;
	size_t rpos, rlen;
	uint8_t hdr[NBD_REQUEST_SIZE];
	uint8_t *dst; /* NULL: discard */
	size_t need, got;
	uint32_t opt;
	uint8_t *optbuf;
	struct nbd_req *cur;	   /* WRITE whose payload is being received */
	struct nbd_req *req_cache; /* linked through out.next */
	uint32_t nreq_cache, nbuf_cache;
	void *buf_cache[NBD_CACHE_MAX]; /* NBD_SMALL_BUF bytes each, 4 KiB aligned */
};

/* nbd_server.c */
void nbd_conn_expect(struct nbd_conn *c, enum nbd_rx state, uint8_t *dst, size_t n);
void nbd_conn_queue(struct nbd_conn *c, struct nbd_out *o);
/* Queues a copy of the bytes; -ENOMEM closes the connection. */
int nbd_conn_send_copy(struct nbd_conn *c, const void *p1, size_t n1, const void *p2, size_t n2);
void nbd_conn_close(struct nbd_conn *c);
/* Schedules a flush and input resume at the end of this loop iteration. */
void nbd_conn_kick(struct nbd_conn *c);
void nbd_conn_maybe_free(struct nbd_conn *c);

/* Called when negotiation ends (transmission starts). */
void nbd_conn_negotiated(struct nbd_conn *c);

/* nbd_handshake.c */
void nbd_hs_start(struct nbd_conn *c);
void nbd_hs_dispatch(struct nbd_conn *c);

/* nbd_transmit.c */
void nbd_tx_dispatch(struct nbd_conn *c);
bool nbd_tx_at_cap(const struct nbd_conn *c);
void nbd_req_free(struct nbd_req *r);
/* Frees the recycled requests and buffers (at close). */
void nbd_req_cache_drop(struct nbd_conn *c);
uint32_t nbd_errno(int res);

#endif

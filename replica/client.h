/*
 * client: one pipelined connection from an engine to a replica server (proto.h).
 *
 * Requests are queued and written in order with writev (payloads are sent from the caller's
 * buffer, not copied); replies are matched by handle and may come in any order. A reply's
 * payload checksum is verified (mismatch: the request fails with -EBADMSG). When the
 * connection fails or is closed, every pending request's callback runs once with a negative
 * errno (-ECONNRESET, -ETIMEDOUT, ...) and then closed() runs once.
 * All calls and callbacks on the loop thread.
 */
#ifndef BLOCKD_CLIENT_H
#define BLOCKD_CLIENT_H

#include <stdint.h>

#include "loop.h"
#include "proto.h"

struct rclient;

/*
 * status: <0 transport error (rep NULL) or the replica's rep->status.
 * payload/len: the reply payload; for a request given rbuf, the data is in rbuf (payload ==
 * rbuf); otherwise payload points to a buffer valid only during the callback.
 */
typedef void (*rclient_reply_fn)(void *arg, int status, const struct proto_rep *rep,
				 const uint8_t *payload, uint32_t len);

struct rclient_cbs {
	void (*connected)(void *arg, int res); /* res 0 or -errno (then closed() follows) */
	void (*closed)(void *arg, int err);
	void *arg;
};

/* Non-blocking connect (TCP_NODELAY). */
int rclient_connect(struct loop *l, const char *host, uint16_t port,
		    const struct rclient_cbs *cbs, struct rclient **out);
/*
 * Sends req (handle assigned here; payload_hash computed here). payload must stay valid
 * until fn runs. rbuf (may be NULL) receives a reply payload of up to rbuf_len bytes
 * directly (READ); a longer reply fails with -EMSGSIZE.
 */
int rclient_send(struct rclient *c, struct proto_req *req, const void *payload,
		 void *rbuf, uint32_t rbuf_len, rclient_reply_fn fn, void *arg);
/* Requests sent but not yet answered. */
uint32_t rclient_inflight(struct rclient *c);
/* Fails pending requests, calls closed(), frees. Safe inside any callback of this client. */
void rclient_close(struct rclient *c);

#endif

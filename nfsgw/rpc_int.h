/*
 * rpc_int: what rpc.c (server, listeners), rpc_conn.c (connections, record marking, queues)
 * and rpc_msg.c (call headers, reply encoding, argument decoding) share. Private to the RPC
 * transport.
 */
#ifndef BLOCKD_NFSGW_RPC_INT_H
#define BLOCKD_NFSGW_RPC_INT_H

#include "nfsgw/rpc.h"

#define RPC_MAX_AUTH 400u /* RFC 5531 opaque_auth body bound */
#define RPC_MAX_PROGRAMS 8
/* Zeroed bytes after every record so a fixed-size opaque codec that runs off the end reads
 * our zeros, never a neighbour's memory (the read is then rejected by the position check). */
#define RPC_REC_SLACK 256u

struct rpc_conn;

/* One encoded reply waiting to be sent: hdr (record mark included), then data, then pad. */
struct rpc_out {
	struct rpc_out *next;
	uint32_t hdr_len;
	uint32_t data_len;
	uint32_t pad;
	const void *data;
	void (*release)(void *arg);
	void *release_arg;
	uint8_t hdr[];
};

/* The transport's per-call state; the public rpc_call is its first member. */
struct rpc_callx {
	struct rpc_call call;
	struct rpc_conn *conn;
	uint8_t *rec; /* the whole record, RPC_REC_SLACK zeroed bytes after rec_len */
	uint32_t rec_len;
	uint32_t low, high; /* for PROG_MISMATCH */
	bool zdr_live;
	ZDR zdr; /* owns what the argument codec allocated */
};

struct rpc_listener {
	struct loop_timer *pause; /* re-enables accept after EMFILE & co */
	struct rpc_listener *next;
	struct rpc_server *s;
	int fd;
};

struct rpc_server {
	struct loop *l;
	struct rpc_program progs[RPC_MAX_PROGRAMS];
	uint32_t nprogs;
	struct rpc_listener *listeners;
	struct rpc_conn *conns;
	uint32_t nconns;
};

struct rpc_conn {
	struct rpc_conn *prev, *next; /* in s->conns while open */
	struct rpc_server *s;	      /* NULL once closed */
	struct loop *l;
	int fd;
	uint32_t refs;
	bool dead, closing, kick_pending, out_blocked;
	bool eof;	 /* the client sent FIN: answer what is in flight, then close */
	uint32_t events; /* the epoll mask currently registered */

	uint8_t *in; /* received bytes not yet parsed: [in_off, in_len) */
	uint32_t in_off, in_len;
	uint8_t mark[4];
	uint32_t mark_have;
	bool in_frag, frag_last;
	uint32_t frag_left;
	uint8_t *rec; /* the record being assembled */
	uint32_t rec_len, rec_cap;

	uint32_t inflight;
	uint64_t inflight_bytes; /* records of unfinished calls + replies not yet sent */

	struct rpc_out *out_head, **out_tail;
	uint32_t out_off; /* bytes of out_head already sent */

	struct sockaddr_storage peer, local;
};

/* Takes over an accepted socket: a new connection of s. */
int rpc_conn_new(struct rpc_server *s, int fd, const struct sockaddr_storage *peer);
/* Closes the socket and drops queued replies; calls in flight keep the memory alive. */
void rpc_conn_close(struct rpc_conn *c);

enum rpc_parse {
	RPC_PARSE_OK,	   /* dispatch it */
	RPC_PARSE_CLOSE,   /* not a call we can answer: close the connection */
	RPC_PARSE_RPCVERS, /* answer RPC_MISMATCH */
	RPC_PARSE_BADCRED, /* answer AUTH_ERROR/AUTH_BADCRED */
};

/* Decodes the call header of x->rec into x->call (xid, prog, vers, proc, cred, args). */
enum rpc_parse rpc_parse_call(struct rpc_callx *x);

/* Whether the call's connection is gone (its reply would be dropped). */
bool rpc_conn_dead(const struct rpc_conn *conn);
/* Finishes the call: queues out (may be NULL: nothing to send) and frees x. */
void rpc_finish(struct rpc_callx *x, struct rpc_out *out);
/* Denied reply for a call the transport refuses itself. */
void rpc_reply_rpcvers(struct rpc_call *c);

#endif

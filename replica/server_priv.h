/*
 * server_priv: the replica server's internal types, shared by server.c (listening, store
 * registry, background merges), server_conn.c (per-connection framing and flow control) and
 * server_ops.c (executing one request against a store). Not a public contract.
 *
 * Request life: server_conn parses a header, reads the payload, then hands the request to
 * srv_exec(); the op finishes (now or from a store callback) with srv_req_done(), which
 * queues the reply. The request is freed once its reply is written, or at once when its
 * connection has died. A dead connection is freed when its last request is, even after the
 * server itself is gone (a closing store calls its in-flight requests back later).
 */
#ifndef BLOCKD_SERVER_PRIV_H
#define BLOCKD_SERVER_PRIV_H

#include <stdbool.h>
#include <stdint.h>
#include <sys/uio.h>

#include "loop.h"
#include "proto.h"
#include "server.h"
#include "store.h"

#define SRV_MAX_INFLIGHT 256
#define SRV_MAX_INFLIGHT_BYTES (64ull << 20)
#define SRV_RBUF_SIZE (64u << 10)

struct srv_store {
	char name[STORE_NAME_MAX];
	struct store *st;
	bool merging; /* store_merge_step has work (or may have) */
	/* Highest HELLO session of the last engine (sess_engine) that sent one: an older
	 * connection of that engine is fenced (server_ops.c op_hello). */
	uint64_t sess_engine, sess_max;
	/* The holder (proto.h): the engine whose OPEN succeeded last, while it stays connected
	 * (a local engine: until replica_server_release). hold_conn identifies an engine that
	 * sent no id. hold_* survive a release so the same engine reconnecting at the same
	 * epoch (a replica it ejected and took back) is the holder again. */
	bool held;
	uint64_t hold_engine, hold_epoch;
	struct srv_conn *hold_conn;
	char hold_label[PROTO_LABEL_MAX];
	struct srv_store *next;
};

struct srv_conn;

struct srv_req {
	struct srv_conn *c;
	struct srv_store *vol; /* the volume bound when the request arrived */
	struct proto_req req;
	uint8_t *payload; /* req.payload_len bytes */
	uint32_t got;	  /* payload bytes received */
	uint64_t cost;	  /* bytes charged to the connection's in-flight budget */
	int status;
	uint8_t *rpayload; /* reply payload (malloc'd), rlen bytes */
	uint32_t rlen;
	uint8_t rhdr[PROTO_REP_SIZE];
	size_t sent; /* bytes of header+payload written */
	bool done;
	struct srv_req *next;		     /* write queue */
	struct srv_req *all_prev, *all_next; /* every request of the connection */
};

struct srv_conn {
	struct replica_server *srv;
	int fd;
	bool dead;
	bool running;			/* inside conn_run: defer frees and recursion */
	bool rerun;			/* something changed while running */
	uint32_t events;		/* currently registered epoll events */
	bool readable;			/* EPOLLIN seen and no read since came back short */
	struct loop_timer *flush_timer; /* replies completed this iteration go out together */
	struct srv_store *vol;
	uint64_t sess_engine, session; /* from HELLO; session 0: none (no fencing) */
	char label[PROTO_LABEL_MAX];   /* from HELLO; "" if none */
	uint8_t *rbuf;		       /* SRV_RBUF_SIZE; rpos..rend unparsed */
	uint32_t rpos, rend;
	struct srv_req *cur; /* request whose payload is being received */
	uint32_t inflight;
	uint64_t inflight_bytes;
	struct srv_req *wq_head, *wq_tail;
	struct srv_req *all;
	struct srv_conn *prev, *next;
};

struct replica_server {
	struct loop *l;
	char *node;
	char *data_dir;
	int lfd;
	struct srv_store *stores;
	struct srv_conn *conns;
	uint32_t nconns; /* live (not dead) connections */
	struct loop_timer *merge_timer;
	struct loop_timer *accept_timer; /* listening paused after EMFILE and the like */
	bool freeing;
};

/* server.c */
int srv_store_get(struct replica_server *s, const char *name, struct srv_store **out);
int srv_volume_dir(struct replica_server *s, const char *name, char *buf, size_t len);
void srv_merge_kick(struct replica_server *s);

/* server_conn.c */
int srv_conn_new(struct replica_server *s, int fd);
void srv_conn_kill(struct srv_conn *c, const char *why);
/* Finishes r with status and the reply payload already in r->rpayload/rlen. */
void srv_req_done(struct srv_req *r, int status);
/* Kills every connection; those with requests still in a store outlive the server. */
void srv_conn_orphan_all(struct replica_server *s);

/* server_ops.c: executes r (payload verified); always ends in srv_req_done(). */
void srv_exec(struct srv_req *r);
/* c is dying: its volume's holder is cleared if c was its engine's last connection. */
void srv_hold_conn_gone(struct srv_conn *c);

#endif

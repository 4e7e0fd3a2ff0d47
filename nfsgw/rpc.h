/*
 * rpc: ONC RPC (RFC 5531) server over TCP on the replica loop (replica/loop.h).
 *
 * The transport is ours (libnfs's server context is unsafe, see nfsgw/README.md): sockets,
 * record marking, bounds, dispatch and reply framing. XDR bodies are encoded/decoded by the
 * caller with libnfs's zdr_* codecs.
 *
 * Contract:
 * - Listeners accept TCP (TCP_NODELAY on every connection). A record (all fragments) larger
 *   than RPC_MAX_RECORD, a fragment of length 0 without the last bit, or a call whose header
 *   does not decode closes that connection; other connections are unaffected.
 * - A call for an unknown program gets PROG_UNAVAIL, a known program at an unsupported version
 *   PROG_MISMATCH (low/high), a bad rpcvers RPC_MISMATCH, an auth flavour other than AUTH_NONE
 *   / AUTH_SYS (or a malformed AUTH_SYS body) AUTH_ERROR (AUTH_BADCRED). Unknown procedures
 *   are the program's business (rpc_reply_accept(c, PROC_UNAVAIL)).
 * - Calls are dispatched as they arrive; many may be in flight per connection and replies go
 *   out in completion order (one sendmsg per loop pass when several are ready). At most
 *   RPC_MAX_INFLIGHT calls / RPC_MAX_INFLIGHT_BYTES of records per connection; beyond that
 *   the connection is not read until replies drain. At most RPC_MAX_CONNS connections.
 * - Every dispatched call must be finished exactly once with one of the rpc_reply*() calls.
 *   A call stays valid until then even if its connection died (the reply is then dropped),
 *   so handlers never check connection state.
 * - All calls on the loop thread.
 */
#ifndef BLOCKD_NFSGW_RPC_H
#define BLOCKD_NFSGW_RPC_H

#include <netinet/in.h>
#include <stdbool.h>
#include <stdint.h>
#include <sys/socket.h>
#include <sys/uio.h>

#include <nfsc/libnfs-zdr.h>

#include "replica/loop.h"

#define RPC_MAX_RECORD ((1u << 20) + (64u << 10)) /* a 1 MiB WRITE plus headers */
#define RPC_MAX_INFLIGHT 128
#define RPC_MAX_INFLIGHT_BYTES (64u << 20)
#define RPC_MAX_CONNS 1024 /* per server; more are accepted and closed at once */
#define RPC_MAX_GIDS 16
#define RPC_MAX_MACHINE 255

/* accept_stat values (RFC 5531). */
enum rpc_accept {
	RPC_SUCCESS = 0,
	RPC_PROG_UNAVAIL = 1,
	RPC_PROG_MISMATCH = 2,
	RPC_PROC_UNAVAIL = 3,
	RPC_GARBAGE_ARGS = 4,
	RPC_SYSTEM_ERR = 5,
};

/* auth_stat values for MSG_DENIED/AUTH_ERROR. */
enum rpc_auth_stat {
	RPC_AUTH_BADCRED = 1,
	RPC_AUTH_REJECTEDCRED = 2,
	RPC_AUTH_TOOWEAK = 5,
};

struct rpc_cred {
	uint32_t flavor; /* 0 AUTH_NONE, 1 AUTH_SYS */
	uint32_t uid, gid;
	uint32_t ngids;
	uint32_t gids[RPC_MAX_GIDS];
	char machine[RPC_MAX_MACHINE + 1];
};

struct rpc_call {
	uint32_t xid, prog, vers, proc;
	struct rpc_cred cred;
	/* The XDR-encoded arguments: points into the call's record, valid until the reply. */
	const uint8_t *args;
	uint32_t args_len;
	struct sockaddr_storage peer; /* the client's address (AF_INET or AF_INET6) */
	struct sockaddr_storage local; /* the address the client connected to */
	void *priv; /* the transport's; do not touch */
};

/* Handles one call; must eventually finish it with an rpc_reply*(). */
typedef void (*rpc_dispatch_fn)(void *ctx, struct rpc_call *c);

struct rpc_program {
	uint32_t prog;
	uint32_t vers_low, vers_high;
	rpc_dispatch_fn dispatch;
	void *ctx;
};

struct rpc_server;

int rpc_server_new(struct loop *l, struct rpc_server **out);
/* Frees listeners and connections; calls still in handlers are finished by their replies
 * (which are then dropped). */
void rpc_server_free(struct rpc_server *s);
/* Programs are shared by every listener of the server. At most 8. */
int rpc_server_add_program(struct rpc_server *s, const struct rpc_program *p);
/* Listens on host:port (IPv4 dotted quad); port 0 picks one, *bound_port (may be NULL) tells
 * which. SO_REUSEADDR. Returns -EADDRINUSE etc. */
int rpc_server_listen(struct rpc_server *s, const char *host, uint16_t port,
		      uint16_t *bound_port);
/* Number of open client connections, and a callback per connection (for `gateway status`). */
uint32_t rpc_server_nconns(struct rpc_server *s);
void rpc_server_each_peer(struct rpc_server *s,
			  void (*fn)(void *arg, const struct sockaddr_storage *peer), void *arg);

/* Decodes the call's arguments with a libnfs codec into *args (zeroed first by this call;
 * args_size = sizeof(*args)). Fails (-EBADMSG) when the codec fails or reads past the end.
 * Memory the codec allocates is released by rpc_args_free() (call it once, always, after a
 * successful decode, before replying). Opaque/string data may point into c->args. */
int rpc_decode_args(struct rpc_call *c, zdrproc_t codec, void *args, size_t args_size);
void rpc_args_free(struct rpc_call *c, zdrproc_t codec, void *args);

/* MSG_ACCEPTED, SUCCESS, with body encoded by codec(res) (codec may be NULL: empty body). */
void rpc_reply(struct rpc_call *c, zdrproc_t codec, void *res);
/* MSG_ACCEPTED, SUCCESS, body = codec(res) followed by data[0..len) and XDR padding, sent
 * from data without copying; release(release_arg) runs once the bytes are no longer needed
 * (sent, or the connection died). For READ: codec encodes everything up to and including
 * the opaque's length word. */
void rpc_reply_data(struct rpc_call *c, zdrproc_t codec, void *res, const void *data,
		    uint32_t len, void (*release)(void *arg), void *release_arg);
/* MSG_ACCEPTED with a non-SUCCESS accept_stat (PROG_MISMATCH takes low/high). */
void rpc_reply_accept(struct rpc_call *c, enum rpc_accept stat);
/* MSG_DENIED, AUTH_ERROR. */
void rpc_reply_auth_error(struct rpc_call *c, enum rpc_auth_stat stat);
/* Finish without replying (e.g. a dropped duplicate). */
void rpc_drop(struct rpc_call *c);

#endif

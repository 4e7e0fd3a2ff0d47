/*
 * nbd_server: exports block devices over NBD (fixed newstyle handshake).
 *
 * Options: EXPORT_NAME, LIST, INFO, GO (with NBD_INFO_EXPORT/NAME/BLOCK_SIZE), ABORT,
 * STRUCTURED_REPLY is refused (simple replies only). Commands: READ, WRITE, DISC, FLUSH,
 * TRIM, WRITE_ZEROES, each with FUA where NBD allows it. Requests are pipelined and
 * answered as they complete. Any malformed frame (bad magic, oversize length, request past
 * the end) gets an error reply when the stream can still be framed, otherwise the
 * connection is closed; other connections are unaffected.
 *
 * Exports are resolved through lookup() at handshake time; release() is called when the
 * last request of a connection that resolved it has finished and the connection closed.
 * All calls on the loop thread; functions return 0 or a negative errno.
 */
#ifndef BLOCKD_NBD_SERVER_H
#define BLOCKD_NBD_SERVER_H

#include <stdint.h>

#include "replica/bdev.h"
#include "replica/loop.h"

struct nbd_server;

struct nbd_exports {
	/* -ENOENT when there is no such export. */
	int (*lookup)(void *arg, const char *name, struct bdev *out);
	void (*release)(void *arg, const char *name);
	/* For NBD_OPT_LIST: calls fn for each export name. */
	void (*list)(void *arg, void (*fn)(void *fnarg, const char *name), void *fnarg);
	void *arg;
};

int nbd_server_new(struct loop *l, const char *host, uint16_t port,
		   const struct nbd_exports *exports, struct nbd_server **out);
void nbd_server_free(struct nbd_server *s);
/* The port actually bound (useful when port 0 asked for an ephemeral one). */
uint16_t nbd_server_port(struct nbd_server *s);
/* Connections currently attached to export name. */
uint32_t nbd_server_clients(struct nbd_server *s, const char *name);
/* Closes every connection to export name (in-flight requests complete first). */
void nbd_server_drop_export(struct nbd_server *s, const char *name);

#endif

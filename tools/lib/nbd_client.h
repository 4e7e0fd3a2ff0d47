/*
 * nbd_client: a small BLOCKING NBD client (fixed newstyle, OPT_GO with a fallback to
 * EXPORT_NAME, simple replies) for blockctl and tests. Not thread-safe: one thread per
 * client. Every function returns 0 or a negative errno; after a failure
 * nbd_client_error() says what went wrong. A transport failure (socket error, bad reply)
 * leaves the client unusable except for nbd_client_free().
 *
 * Two ways to do I/O:
 * - synchronous: nbd_client_pread/pwrite/flush/trim/zero, one request at a time;
 * - pipelined: nbd_client_submit() sends a request without waiting, nbd_client_collect()
 *   waits for the next reply (any order). Keep the bytes in flight well under the
 *   server's per-connection cap (blockd: 128 requests / 128 MiB), since a server that
 *   stops reading cannot be sent more while its replies are not collected.
 */
#ifndef TOOLS_LIB_NBD_CLIENT_H
#define TOOLS_LIB_NBD_CLIENT_H

#include <stdint.h>

#define NBD_CLIENT_FUA 1u
#define NBD_CLIENT_URL_MAX 256

struct nbd_client;

enum nbd_client_op {
	NBD_CLIENT_READ,
	NBD_CLIENT_WRITE,
	NBD_CLIENT_FLUSH,
	NBD_CLIENT_TRIM,
	NBD_CLIENT_ZERO,
};

/* A pipelined request; owned by the caller, must stay valid until collected. */
struct nbd_client_req {
	enum nbd_client_op op;
	uint32_t flags; /* NBD_CLIENT_FUA */
	uint64_t off;
	uint32_t len;
	void *buf;  /* READ: filled; WRITE: sent */
	int result; /* set by nbd_client_collect: 0 or -errno from the server */
	void *user;
	/* private */
	uint64_t handle;
	struct nbd_client_req *next;
};

/*
 * Parses "nbd://host[:port][/export]" (host may be [v6]). port defaults to 10809, export to
 * "". host and export must each hold NBD_CLIENT_URL_MAX bytes. -EINVAL if malformed.
 */
int nbd_client_parse_url(const char *url, char *host, uint16_t *port, char *export);

int nbd_client_new(struct nbd_client **out);
/* Disconnects (NBD_CMD_DISC) if connected, and frees. */
void nbd_client_free(struct nbd_client *c);
const char *nbd_client_error(const struct nbd_client *c);
/* Send/receive timeout in ms for later calls (0: none, the default). -ETIMEDOUT on expiry. */
void nbd_client_set_timeout(struct nbd_client *c, uint32_t ms);

/* -ENOENT when the server has no such export. */
int nbd_client_connect(struct nbd_client *c, const char *host, uint16_t port, const char *export);
int nbd_client_connect_url(struct nbd_client *c, const char *url);
uint64_t nbd_client_size(const struct nbd_client *c);
/* Sends NBD_CMD_DISC (after collecting nothing: pending replies are abandoned) and closes. */
int nbd_client_disconnect(struct nbd_client *c);

/* Synchronous; -EBUSY if pipelined requests are outstanding. */
int nbd_client_pread(struct nbd_client *c, void *buf, uint32_t len, uint64_t off);
int nbd_client_pwrite(struct nbd_client *c, const void *buf, uint32_t len, uint64_t off,
		      uint32_t flags);
int nbd_client_flush(struct nbd_client *c);
int nbd_client_trim(struct nbd_client *c, uint64_t off, uint32_t len);
int nbd_client_zero(struct nbd_client *c, uint64_t off, uint32_t len, uint32_t flags);

/* Pipelined. */
int nbd_client_submit(struct nbd_client *c, struct nbd_client_req *r);
/* Waits for one reply; *done is the request it answers (its result set). */
int nbd_client_collect(struct nbd_client *c, struct nbd_client_req **done);
uint32_t nbd_client_inflight(const struct nbd_client *c);

#endif

/*
 * mount_client: a raw RPC client on libnfs's API for the tests that talk to a MOUNT program
 * (test_mount, test_gateway): connect to host:port, run one call to its callback with a
 * bounded wait, and MNT3 with the status, handle and auth flavors kept in struct cli.
 * Test-only, header-only: each test binary includes it once.
 */
#ifndef BLOCKD_TEST_MOUNT_CLIENT_H
#define BLOCKD_TEST_MOUNT_CLIENT_H

#include <poll.h>
#include <stdbool.h>
#include <stdint.h>
#include <string.h>

#include <nfsc/libnfs.h>
#include <nfsc/libnfs-raw.h>
#include <nfsc/libnfs-raw-mount.h>

#include "replica/loop.h"

/* How long one call may take before the test fails (a hang guard). */
#ifndef CLI_WAIT_MS
#define CLI_WAIT_MS 10000
#endif

struct cli {
	struct rpc_context *rpc;
	bool done;
	int status;
	/* results */
	int mnt_status;
	uint8_t fh[64];
	uint32_t fh_len;
	int flavors[4];
	uint32_t nflavors;
	char list[4096]; /* DUMP/EXPORT flattened: "host:path;" or "path=g1,g2;" */
	uint32_t port;	 /* PMAP GETPORT */
};

/* Services the context until the pending call's callback set c->done. */
static inline void cli_wait(struct cli *c)
{
	uint64_t deadline = loop_now_ms() + CLI_WAIT_MS;
	while (!c->done) {
		assert_true(loop_now_ms() < deadline);
		struct pollfd p = {.fd = rpc_get_fd(c->rpc),
				   .events = (short)rpc_which_events(c->rpc)};
		int n = poll(&p, 1, 100);
		assert_true(n >= 0);
		assert_int_equal(rpc_service(c->rpc, n > 0 ? p.revents : 0), 0);
	}
	c->done = false;
}

/* Every callback starts here: records the call's status; true when the call succeeded (and
 * data holds its result). */
static inline bool cli_finish(struct cli *c, int status)
{
	c->status = status;
	c->done = true;
	return status == RPC_STATUS_SUCCESS;
}

/* The callback of a connect, or of a call whose result does not matter. */
static inline void cli_void_cb(struct rpc_context *rpc, int status, void *data, void *priv)
{
	(void)rpc;
	(void)data;
	cli_finish(priv, status);
}

static inline void cli_open(struct cli *c, const char *host, uint16_t port)
{
	memset(c, 0, sizeof(*c));
	c->rpc = rpc_init_context();
	assert_non_null(c->rpc);
	assert_int_equal(rpc_connect_async(c->rpc, host, port, cli_void_cb, c), 0);
	cli_wait(c);
	assert_int_equal(c->status, RPC_STATUS_SUCCESS);
}

static inline void cli_close(struct cli *c)
{
	rpc_destroy_context(c->rpc);
	c->rpc = NULL;
}

static inline void cli_mnt3_cb(struct rpc_context *rpc, int status, void *data, void *priv)
{
	(void)rpc;
	struct cli *c = priv;
	if (!cli_finish(c, status))
		return;
	mountres3 *res = data;
	c->mnt_status = res->fhs_status;
	c->fh_len = 0;
	c->nflavors = 0;
	if (res->fhs_status != MNT3_OK)
		return;
	mountres3_ok *ok = &res->mountres3_u.mountinfo;
	assert_true(ok->fhandle.fhandle3_len <= sizeof(c->fh));
	c->fh_len = ok->fhandle.fhandle3_len;
	memcpy(c->fh, ok->fhandle.fhandle3_val, c->fh_len);
	for (u_int i = 0; i < ok->auth_flavors.auth_flavors_len && i < 4; i++)
		c->flavors[c->nflavors++] = ok->auth_flavors.auth_flavors_val[i];
}

/* MNT3 of path; returns the mount status, the handle in c. */
static inline int cli_mnt3(struct cli *c, const char *path)
{
	assert_int_equal(rpc_mount3_mnt_async(c->rpc, cli_mnt3_cb, (char *)path, c), 0);
	cli_wait(c);
	assert_int_equal(c->status, RPC_STATUS_SUCCESS);
	return c->mnt_status;
}

#endif

/*
 * gateway_int: the gateway's private state, shared by gateway.c (start-up, stop, fencing),
 * gateway_exports.c (the export table, MOUNT's file system view) and gateway_status.c.
 * Everything here belongs to the loop thread.
 */
#ifndef BLOCKD_NFSGW_GATEWAY_INT_H
#define BLOCKD_NFSGW_GATEWAY_INT_H

#include <stdbool.h>
#include <stdint.h>

#include "blockd/config.h"
#include "nfsgw/exports.h"
#include "nfsgw/filevol.h"
#include "nfsgw/gateway.h"
#include "nfsgw/meta.h"
#include "nfsgw/mount.h"
#include "nfsgw/nfs3.h"
#include "nfsgw/portmap.h"
#include "nfsgw/rpc.h"
#include "replica/bdev.h"

enum gw_pmap { GW_PMAP_OFF, GW_PMAP_OWN, GW_PMAP_HOST };
enum gw_state { GW_STARTING, GW_SERVING, GW_STOPPING };

/* An export table replaced while requests may still hold pointers into it: freed later. */
struct gw_old_table {
	struct gw_old_table *next;
	struct exports *ex;
	struct loop_timer *t;
	struct gateway *g;
};

struct gateway {
	struct loop *l;
	struct config cluster;
	struct config_gateway cfg;
	void (*on_fenced)(void *arg);
	void *fenced_arg;
	enum gw_state state;
	bool fenced;
	bool torn_down;	     /* a fenced teardown finished; only the memory is left */
	bool stop_requested; /* gateway_stop during a fenced teardown */
	char engine_id[CONFIG_NAME_MAX + 8];

	struct filevol *fv;
	struct bdev meta_dev;
	bool meta_dev_open;
	struct meta *meta;
	bool meta_open;

	struct exports *ex; /* never NULL once meta is open */
	struct gw_old_table *old;
	char *file_text; /* the configured exports file's text, read before start-up */

	struct rpc_server *rpc;
	struct portmap *pm;
	enum gw_pmap pmap;
	bool pmap_host_tried; /* registration with the host's rpcbind was attempted */
	struct mount_prog *mnt;
	struct nfs3 *nfs;
	bool snap_busy; /* a snapshot operation is under way (gateway_snap.c) */

	struct loop_timer *fence_timer;
	void *fence_buf;
	bool fence_reading;
	uint64_t fence_errors;

	/* start-up / stop completion */
	gateway_cb cb;
	void *cb_arg;
	int err;
	void *td; /* the teardown in progress (gateway.c) */
	struct loop_timer *drain_timer;
	uint64_t drain_polls;
};

void gw_log(const struct gateway *g, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* gateway_exports.c */
int gw_read_exports_file(struct gateway *g, char *err, size_t errlen);
/* Installs the table (after meta_open): the file's text replaces the replicated one.
 * cb(g, res) when the text is durable and the export directories exist. */
int gw_exports_load(struct gateway *g, void (*cb)(struct gateway *g, int res));
const struct exports *gw_exports(void *ctx);
int gw_mount_resolve(void *ctx, const struct export *e, const char *path, uint8_t *fh,
		     uint32_t *fh_len);
void gw_exports_free(struct gateway *g);

/* gateway_pmap.c: MOUNT v1-v3 and NFS v3 into our portmapper (at once) or the host's
 * rpcbind (on a helper thread; the client blocks). done(g, res) on the loop thread. */
void gw_pmap_register(struct gateway *g, void (*done)(struct gateway *g, int res));
void gw_pmap_unregister(struct gateway *g, void (*done)(struct gateway *g, int res));

#endif

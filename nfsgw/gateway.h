/*
 * gateway: one NFS gateway process (build/nfsgw): wires the replicated metadata, the file
 * volumes, the RPC programs (portmap, MOUNT, NFSv3) and the control API together.
 *
 * Start-up (gateway_start, on the loop thread, asynchronous):
 *   1. open the meta volume's engine (filevol_open_bdev of gw->meta_volume, created with
 *      META_VOLUME_SIZE when missing): this bumps its epoch, fencing any previous gateway;
 *   2. meta_open; if the config names an exports file, its text replaces the replicated
 *      export table (meta_set_exports_text), else the replicated one is used;
 *   3. filevol_open_all("nfs-<fsid>-"): fences the previous gateway's file engines;
 *   4. listen: portmapper on gw->portmap_port when non-zero and free (else register MOUNT
 *      and NFS with the host's portmapper), MOUNT on mount_port, NFS on nfs_port, all on
 *      gw->host;
 *   5. cb(arg, 0).
 * While serving, a 4 KiB read of the meta volume every GATEWAY_FENCE_CHECK_MS notices that a
 * newer gateway took the export over (-ESTALE): this gateway then stops (closes every
 * listener and connection, logs it, and gateway_start's on_fenced runs so main exits).
 */
#ifndef BLOCKD_NFSGW_GATEWAY_H
#define BLOCKD_NFSGW_GATEWAY_H

#include <jansson.h>
#include <stdint.h>

#include "blockd/config.h"
#include "replica/loop.h"

#define GATEWAY_FENCE_CHECK_MS 500

struct gateway;
typedef void (*gateway_cb)(void *arg, int res);

struct gateway_params {
	struct loop *l;
	const struct config *cluster; /* copied */
	const char *name;             /* a [gateway.NAME] section of the cluster file */
	void (*on_fenced)(void *arg);
	void *arg;
};

int gateway_start(const struct gateway_params *p, struct gateway **out, gateway_cb cb,
		  void *arg);
/* Stops serving, syncs and closes the meta, closes file engines; cb when done. */
int gateway_stop(struct gateway *g, gateway_cb cb, void *arg);

/* Control-API helpers (loop thread). status: {"gateway","host","nfs_port","mount_port",
 * "portmap":"own"|"host"|"off","meta_volume","epoch","fsid","files","exports":[{"path",
 * "clients":[spec..],"url":"nfs://host/path"}],"clients":[{"address","mounts":[path..]}],
 * "connections":N}. */
json_t *gateway_status(struct gateway *g);
/* The export table as exports(5) text (malloc'd). */
char *gateway_exports_text(struct gateway *g);
/* Adds (or replaces, same path) one exports(5) line, creating the directory when missing;
 * removes an export by path. cb(arg, 0 | -EINVAL | -ENOENT | -errno); err gets a reason. */
int gateway_export_add(struct gateway *g, const char *line, char *err, size_t errlen,
		       gateway_cb cb, void *arg);
int gateway_export_rm(struct gateway *g, const char *path, gateway_cb cb, void *arg);

/* Snapshots through the export (path: "/export/dir/file", any file or directory under an
 * export). create: holds NFS changes (nfs3_hold), snapshots every regular file's volume under
 * path (filevol_snapshot_create, meta_snap_volsnap(name)), records the metadata
 * (meta_snapshot_create), releases. revert: holds, reverts each file's volume, then the
 * metadata (meta_snapshot_revert), deletes freed volumes, releases. delete: the metadata, then
 * the volume snapshots and any freed volumes. Errors: -ENOENT (path or snapshot), -EEXIST,
 * -EINVAL (bad name; path inside .snapshots), -EIO. err gets one line. */
int gateway_snapshot_create(struct gateway *g, const char *path, const char *name, char *err,
			    size_t errlen, gateway_cb cb, void *arg);
int gateway_snapshot_delete(struct gateway *g, const char *name, char *err, size_t errlen,
			    gateway_cb cb, void *arg);
int gateway_snapshot_revert(struct gateway *g, const char *name, char *err, size_t errlen,
			    gateway_cb cb, void *arg);
/* [{"name","path","created","files","index"}]; path NULL: all, else those at or under it. */
json_t *gateway_snapshot_list(struct gateway *g, const char *path);

#endif

/*
 * filevol: the replicated volumes behind the gateway's files, by volume name.
 *
 * The gateway is an engine host without a local replica: it opens a replica/engine for each
 * volume it uses (replicas live on the blockd nodes of the cluster file) and creates and
 * deletes volumes through the nodes' control API (POST/DELETE /v1/replicas on each member;
 * those blocking HTTP calls run on a helper thread, never on the loop).
 *
 * - A volume that does not exist reads as zeros and flushes as a no-op; the first write (or
 *   zero) to it creates it: `replicas` members chosen among the nodes (rotating, so files
 *   spread), thin, capacity = the write's end rounded up to FILEVOL_CAP_STEP. A write past
 *   the capacity first grows it (engine_resize) to max(end rounded up, 2 x capacity).
 *   Concurrent first writes create once; creation that finds the volume already exists
 *   (a crash between create and use) just opens it.
 * - Engines open on first use (fencing any previous engine of the volume by epoch) and close
 *   after FILEVOL_IDLE_MS without I/O. I/O arriving while a volume is being opened, created or
 *   grown waits for it.
 * - Errors: -EIO (no quorum etc.), -ESTALE (a newer engine owns the volume: the gateway was
 *   taken over), -ENOSPC (cannot create: too few nodes), -EFBIG (past FILEVOL_MAX_SIZE).
 * - All calls and callbacks on the loop thread; cb exactly once, never before the call returns.
 */
#ifndef BLOCKD_NFSGW_FILEVOL_H
#define BLOCKD_NFSGW_FILEVOL_H

#include <stdbool.h>
#include <stdint.h>

#include "blockd/config.h"
#include "replica/bdev.h"
#include "replica/loop.h"

#define FILEVOL_CAP_STEP (1ull << 30)
#define FILEVOL_MAX_SIZE (8ull << 40)
#define FILEVOL_IDLE_MS 30000

struct filevol;
typedef void (*filevol_cb)(void *arg, int res);

struct filevol_params {
	struct loop *l;
	const struct config *cluster; /* copied */
	unsigned replicas;            /* members of each new volume (<= nodes) */
	const char *engine_id;        /* names this gateway as the engines' local_node */
	uint32_t io_timeout_ms;       /* 0: the cluster's */
	uint32_t idle_ms;             /* test-only: idle close after this (0: FILEVOL_IDLE_MS) */
};

int filevol_new(const struct filevol_params *p, struct filevol **out);
/* Closes every engine (flushing), then frees; cb when done. */
int filevol_close(struct filevol *fv, filevol_cb cb, void *arg);

int filevol_read(struct filevol *fv, const char *vol, uint64_t off, uint32_t len, void *buf,
		 filevol_cb cb, void *arg);
/* flags: BDEV_FUA. */
int filevol_write(struct filevol *fv, const char *vol, uint64_t off, uint32_t len,
		  const void *buf, uint32_t flags, filevol_cb cb, void *arg);
int filevol_flush(struct filevol *fv, const char *vol, filevol_cb cb, void *arg);
/* Reads of [off, off+len) return zeros afterwards (truncate; no-op on a missing volume). */
int filevol_zero(struct filevol *fv, const char *vol, uint64_t off, uint64_t len,
		 filevol_cb cb, void *arg);
/* Deletes the volume's replicas on every member (-ENOENT when it never existed: fine). */
int filevol_delete(struct filevol *fv, const char *vol, filevol_cb cb, void *arg);
/* Bytes allocated (the largest replica's head+snapshots), cached; refreshed in the background
 * at most every 2 s while the volume is in use. 0 for a missing volume. */
uint64_t filevol_used(struct filevol *fv, const char *vol);

/* The volume as a block device, opened (created with size when missing, never grown) and
 * kept open until filevol_close: for the gateway's meta volume. */
int filevol_open_bdev(struct filevol *fv, const char *vol, uint64_t size, struct bdev *out,
		      filevol_cb cb, void *arg);
/* The epoch of vol's engine (0 when not open). */
uint64_t filevol_epoch(struct filevol *fv, const char *vol);
/* Opens (so fences any older engine of) every existing volume whose name starts with prefix;
 * cb(arg, 0) when all are open or known unreachable (logged). For takeover. */
int filevol_open_all(struct filevol *fv, const char *prefix, filevol_cb cb, void *arg);

/* Snapshots of one file's volume (a missing volume is created empty first so the snapshot
 * exists). */
int filevol_snapshot_create(struct filevol *fv, const char *vol, const char *snap,
			    filevol_cb cb, void *arg);
int filevol_snapshot_delete(struct filevol *fv, const char *vol, const char *snap,
			    filevol_cb cb, void *arg);
int filevol_snapshot_revert(struct filevol *fv, const char *vol, const char *snap,
			    filevol_cb cb, void *arg);
/* Reads [off, off+len) of vol as it was in its snapshot snap: zeros past the volume's size at
 * the time and for a missing volume; -ENOENT when the volume has no such snapshot. */
int filevol_snap_read(struct filevol *fv, const char *vol, const char *snap, uint64_t off,
		      uint32_t len, void *buf, filevol_cb cb, void *arg);

#endif

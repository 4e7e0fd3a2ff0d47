/*
 * engine: serves one volume from its replica set. Exactly one engine per volume at a time,
 * enforced by epochs (see docs/ARCHITECTURE.md, "Fencing").
 *
 * - Opening bumps the epoch on a majority of replicas (new epoch = highest seen + 1);
 *   replicas that refuse (-ESTALE) or do not answer leave the volume unopened when they are
 *   a majority.
 * - A write completes after every in-sync replica has it; it fails (-EIO, or -ESTALE when
 *   fenced) rather than let in-sync replicas diverge. Reads go to one in-sync replica, the
 *   local one when there is one. Flush and FUA reach every in-sync replica.
 * - Writes need a majority of the replica set in sync and reachable; without it, I/O waits
 *   up to the io timeout for it to come back, then fails with -EIO ("no quorum").
 * - A replica that errors or does not answer within io_timeout_ms is ejected; the engine
 *   keeps a dirty bitmap (ENGINE_GRAIN per bit) of what it misses, persists membership and
 *   the bitmap on the in-sync replicas (on ejection and on every flush), keeps trying to
 *   reconnect, and resyncs it by copying only dirty grains while serving I/O. A replica with
 *   no bitmap is rebuilt by comparing XXH3 per extent and copying only differing extents.
 *
 * All calls on the loop thread; callbacks on the loop thread.
 */
#ifndef BLOCKD_ENGINE_H
#define BLOCKD_ENGINE_H

#include <stdbool.h>
#include <stdint.h>

#include "bdev.h"
#include "loop.h"
#include "store.h"

#define ENGINE_GRAIN (1u << 20)
#define ENGINE_MAX_REPLICAS STORE_MAX_MEMBERS

struct engine;
struct replica_server;

struct engine_replica_addr {
	char node[STORE_NAME_MAX];
	char host[64];
	uint16_t port;
};

struct engine_params {
	const char *volume;
	const char *local_node; /* this node's name */
	/* Local replicas are served without a socket through this server; may be NULL. */
	struct replica_server *local;
	/* Addresses of every node that may hold a replica (the engine learns the members
	 * from the replicas themselves). */
	uint32_t naddrs;
	const struct engine_replica_addr *addrs;
	uint32_t io_timeout_ms; /* 0: 1000 */
	/* Who runs this engine, sent in HELLO and reported by the replicas as the volume's
	 * holder while it has it open (proto.h); NULL: local_node. Truncated to 63 bytes. */
	const char *label;
	/* Open only a volume nobody else holds: when a reachable replica at the highest epoch
	 * reports a holder whose label is not local_node, the open fails with -EBUSY before
	 * any epoch is bumped, and *held (if not NULL; it must outlive the open) describes the
	 * volume as the replicas report it. */
	bool refuse_if_held;
	struct engine_held *held;
};

/* What a refused open (refuse_if_held) saw. Free snapshots with free(). */
struct engine_held {
	char label[64];		/* the holder's label */
	uint64_t epoch;		/* the holder's epoch */
	struct store_info auth; /* INFO of the authoritative replica (highest members_gen) */
	uint32_t n;		/* auth's members, with what their replicas answered */
	struct {
		char node[STORE_NAME_MAX];
		bool in_sync;	/* per auth's membership */
		bool reachable; /* it answered HELLO */
		uint64_t epoch;
	} r[ENGINE_MAX_REPLICAS];
	char *snapshots; /* auth's SNAP_LIST JSON (malloc'd), NULL if it could not be read */
};

enum engine_replica_state {
	ENGINE_HEALTHY,
	ENGINE_REBUILDING,
	ENGINE_STALE,
};

struct engine_replica_status {
	char node[STORE_NAME_MAX];
	enum engine_replica_state state;
	uint64_t epoch;
	uint64_t resync_copied; /* bytes copied by the last (or current) resync */
	uint64_t resync_total;	/* bytes that resync has to examine */
	uint64_t resync_done;	/* bytes of resync_total done */
	bool resync_full;	/* rebuild by hash compare rather than bitmap */
	char error[128];	/* why it is stale, if it is */
};

typedef void (*engine_cb)(void *arg, int res);

/* cb(arg, 0) when open; *out is valid from the call on, but unusable until cb. */
int engine_open(struct loop *l, const struct engine_params *p, struct engine **out, engine_cb cb,
		void *arg);
/* Waits for in-flight I/O, flushes, marks replicas clean, frees. */
int engine_close(struct engine *e, engine_cb cb, void *arg);
/* The engine as a block device (valid while open). */
struct bdev engine_bdev(struct engine *e);
uint64_t engine_size(struct engine *e);
uint64_t engine_epoch(struct engine *e);
/* True once a replica answered -ESTALE: a newer engine owns the volume and this one can never
 * serve it again (close it). */
bool engine_fenced(struct engine *e);

int engine_replicas(struct engine *e, struct engine_replica_status *out, uint32_t *n);

/* Snapshot ops quiesce I/O, apply on every in-sync replica, then resume. A replica out of sync
 * meanwhile gets them (same snapshot identities and content) when it returns. */
int engine_snapshot_create(struct engine *e, const char *name, engine_cb cb, void *arg);
int engine_snapshot_delete(struct engine *e, const char *name, engine_cb cb, void *arg);
int engine_snapshot_revert(struct engine *e, const char *name, engine_cb cb, void *arg);
/* *json receives a malloc'd JSON array (see SNAP_LIST) when cb runs with 0. */
int engine_snapshot_list(struct engine *e, char **json, engine_cb cb, void *arg);
/* Clone snapshot into a new volume new_name on the nodes of the in-sync replicas (the clone's
 * replica set lists only those). */
int engine_clone(struct engine *e, const char *snap, const char *new_name, engine_cb cb, void *arg);
int engine_resize(struct engine *e, uint64_t size, engine_cb cb, void *arg);

/* Compares XXH3 of every extent across in-sync and reachable replicas, the head and then each
 * snapshot's view. On cb(arg, 0), *json is a malloc'd JSON object {"extent":N,"checked":N,
 * "differ":[{"offset":..,"length":..,"hashes":{"node1":"..",...}}],"snapshots_checked":N,
 * "snapshots_differ":[{"snapshot":name,"offset","length","hashes"}],"snapshots_unchecked":
 * [{"snapshot","node","error"}]} (a replica that could not hash that snapshot). */
int engine_verify(struct engine *e, char **json, engine_cb cb, void *arg);
/* Verify, then repair (engine_repair.c): each differing extent on which a strict majority of
 * the in-sync reachable replicas agree is copied from one of them to the others (guest writes
 * to it wait meanwhile), flushed and hashed again. *json: verify's object plus
 * "repaired":[{"offset","length","from","to":[node,..]}] and "unrepairable":[{"offset",
 * "length","hashes":{..},"reason"}] (no majority, or the copy failed). Snapshot views are
 * compared as by verify but never repaired. */
int engine_repair(struct engine *e, char **json, engine_cb cb, void *arg);

/* Reads [off, off+len) of snapshot snap's view (SNAP_READ) from one in-sync replica, the local
 * one first, failing over to another in-sync replica on an error (engine_snapread.c). What lies
 * past the volume's size reads as zeros. -ENOENT (through cb): no such snapshot; -ESTALE:
 * fenced. The snapshot's identity comes from SNAP_LIST and is cached until the next snapshot op.
 * cb never runs before the call returns. */
int engine_snap_read(struct engine *e, const char *snap, uint64_t off, uint32_t len, void *buf,
		     engine_cb cb, void *arg);

/* Wait until every replica is healthy (cb 0) or timeout_ms passes (cb -ETIMEDOUT). */
int engine_wait_healthy(struct engine *e, uint32_t timeout_ms, engine_cb cb, void *arg);

#endif

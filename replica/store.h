/*
 * store: one replica of one volume on local disk, with a tree of snapshot layers.
 *
 * On-disk format (a directory per replica, see docs/ARCHITECTURE.md):
 *   volume.meta        JSON: name, uuid, size, epoch, members, layers (id, parent,
 *                      snapshot name or null for the head, created, flags). Replaced
 *                      atomically (write tmp, fsync, rename, fsync dir).
 *   layer-<id>.data    sparse file; a block written in a layer lives at its volume offset.
 *   layer-<id>.map     allocation bitmap, 1 bit per STORE_BLOCK, sparse; a page of
 *                      4096 bytes covers 128 MiB of volume and exists only when a bit is set.
 *   dirty-<member>.bmp dirty-region bitmap kept for an ejected member (engine-provided).
 *
 * Reads see the head's chain (head, its parent, ...) merged through one in-memory index
 * (owner layer per block), so read cost does not depend on chain length. Opening reads only
 * the map pages that exist.
 *
 * Crash safety: data is written before the map bits that point to it are persisted; map
 * pages and the metadata are persisted by store_flush() and by every metadata change. After
 * a crash, a volume reads back everything that was flushed.
 *
 * Concurrency: single-threaded, on the loop that opened it. Data-path calls are
 * asynchronous (cb on the loop thread); control calls (snapshot, revert, clone, resize,
 * epoch) are synchronous and take effect before they return. Overlapping writes that need
 * a read-modify-write of one block are serialised inside the store.
 * All functions return 0 or a negative errno.
 */
#ifndef BLOCKD_STORE_H
#define BLOCKD_STORE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "loop.h"

#define STORE_BLOCK 4096u
#define STORE_NAME_MAX 64 /* names: [A-Za-z0-9._-], 1..63 chars, not starting with . or - */
#define STORE_MAX_LAYERS 250
#define STORE_MAX_MEMBERS 8
#define STORE_SNAP_ID_MAX 40 /* snapshot identity: [A-Za-z0-9:._-], 1..39 chars */

struct store;

typedef void (*store_cb)(void *arg, int res);

struct store_member {
	char node[STORE_NAME_MAX]; /* node name */
	bool in_sync;
};

struct store_info {
	char name[STORE_NAME_MAX];
	char uuid[40];
	uint64_t size;
	uint64_t epoch;        /* highest epoch accepted (fencing) */
	uint64_t members_gen;  /* bumped by every store_set_members() */
	uint32_t nmembers;
	struct store_member members[STORE_MAX_MEMBERS];
	uint64_t allocated;    /* bytes allocated in the head's chain */
	uint32_t nsnapshots;
	bool clean;            /* false while opened by an engine and not cleanly closed */
};

struct store_snap {
	char name[STORE_NAME_MAX];
	uint64_t layer_id;
	char parent[STORE_NAME_MAX]; /* parent snapshot name, "" if none */
	int64_t created;             /* unix seconds */
	uint64_t allocated;          /* bytes written in this layer alone */
	bool in_head_chain;          /* false after a revert past it */
	bool deleting;               /* merge into its children in progress */
	char id[STORE_SNAP_ID_MAX];  /* identity, the same on every replica */
	char parent_id[STORE_SNAP_ID_MAX]; /* nearest ancestor snapshot not deleting, "" if none */
};

bool store_name_valid(const char *name);

/* Creates dir and an empty volume (one head layer). Fails with -EEXIST if dir has a volume. */
int store_create(struct loop *l, const char *dir, const char *name, uint64_t size,
		 struct store **out);
int store_open(struct loop *l, const char *dir, struct store **out);
/* Flushes and marks clean; frees. Waits for in-flight I/O. */
void store_close(struct store *s);
/* Removes a closed volume's directory. */
int store_destroy(const char *dir);

int store_get_info(struct store *s, struct store_info *out);

/* Data path. len may be any size; offsets need no alignment. -EINVAL past the end. */
int store_read(struct store *s, uint64_t off, uint32_t len, void *buf, store_cb cb, void *arg);
int store_write(struct store *s, uint64_t off, uint32_t len, const void *buf, store_cb cb,
		void *arg);
/* zero=false: discard (reads back zeros afterwards too); zero=true: write zeros. */
int store_trim(struct store *s, uint64_t off, uint64_t len, bool zero, store_cb cb, void *arg);
/* Makes every completed write durable (data, then map pages, then metadata if changed). */
int store_flush(struct store *s, store_cb cb, void *arg);

/* Fencing. Accepts epoch only if greater than the stored one; persists it. -ESTALE otherwise. */
int store_bump_epoch(struct store *s, uint64_t epoch);
uint64_t store_epoch(struct store *s);
int store_set_clean(struct store *s, bool clean);

/* Membership as the engine last saw it; persisted. */
int store_set_members(struct store *s, const struct store_member *m, uint32_t n, uint64_t gen);
/* Dirty bitmap for an ejected member; bytes is the bitmap (1 bit per grain). */
int store_put_dirty(struct store *s, const char *member, uint32_t grain, const uint8_t *bits,
		    size_t nbytes);
/* *bits is malloc'd; -ENOENT if none. */
int store_get_dirty(struct store *s, const char *member, uint32_t *grain, uint8_t **bits,
		    size_t *nbytes);
int store_drop_dirty(struct store *s, const char *member);

/* Snapshots. create: O(1) beyond one flush; the current head becomes snapshot NAME. */
int store_snapshot_create(struct store *s, const char *name);
/* The same with the identity given (id NULL: a new uuid). Snapshots created before identities
 * existed get "n:<name>", so replicas agree on them too. */
int store_snapshot_create_id(struct store *s, const char *name, const char *id);
bool store_snap_id_valid(const char *id);
/* *out is malloc'd, ordered oldest first. */
int store_snapshot_list(struct store *s, struct store_snap **out, uint32_t *n);
/* Marks NAME deleting and merges it into its children in the background (store_merge_step). */
int store_snapshot_delete(struct store *s, const char *name);
/* Does a bounded amount of merge work; returns 1 if more remains, 0 when idle. */
int store_merge_step(struct store *s);
/* Discards the head; a new empty head whose parent is NAME. */
int store_snapshot_revert(struct store *s, const char *name);
/* Discards the head; a new empty head with no parent (an empty chain). */
int store_snapshot_revert_root(struct store *s);
/* Creates a new volume in new_dir whose base is snapshot NAME (layers shared copy-on-write). */
int store_clone(struct store *s, const char *snap, const char *new_dir, const char *new_name);
/* The same, with the clone's members given (NULL: this volume's members). */
int store_clone_members(struct store *s, const char *snap, const char *new_dir,
			const char *new_name, const struct store_member *m, uint32_t n);
/* Grow only (-EINVAL to shrink). */
int store_resize(struct store *s, uint64_t size);

/*
 * XXH3-64 of the merged volume content in [off, off+len) per extent of extent bytes;
 * writes len/extent hashes (last may be short). Unallocated extents hash as zeros without
 * reading. Synchronous.
 */
int store_hash(struct store *s, uint64_t off, uint64_t len, uint32_t extent, uint64_t *hashes);
/*
 * The volume as it was when snapshot id was taken (its layer and its ancestors merged).
 * Synchronous (control path: snapshot catch-up). -ENOENT if no snapshot has that identity.
 */
int store_snap_read(struct store *s, const char *id, uint64_t off, uint32_t len, void *buf);
int store_snap_hash(struct store *s, const char *id, uint64_t off, uint64_t len, uint32_t extent,
		    uint64_t *hashes);
/* Whether any layer in the head chain has a block in [off, off+len). */
bool store_allocated(struct store *s, uint64_t off, uint64_t len);

#endif

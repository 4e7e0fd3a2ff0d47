/*
 * store_int: private state shared by the store_*.c files. Not a contract for other
 * components (use store.h).
 *
 * store.c       lifecycle (create/open/close), layers, info, fencing, members, hash
 * store_io.c    data path (read/write/trim/flush) through the loop's io_uring
 * store_map.c   per-layer bitmap pages and the merged owner index
 * store_meta.c  volume.meta and dirty-<member>.bmp files
 * store_snap.c  snapshot create/list/delete+merge/revert, clone, resize
 *
 * Routing invariant: the owner index is updated when a write is submitted (so later reads
 * see it), a layer's bitmap bit when the write completes (so a flush only persists bits
 * whose data it has synced).
 */
#ifndef BLOCKD_STORE_INT_H
#define BLOCKD_STORE_INT_H

#include "store.h"

#include <sys/types.h>

#define SMAP_PAGE 4096u
#define SMAP_SHIFT 15 /* blocks per bitmap page / index leaf: 32768 = 128 MiB */
#define SMAP_BLOCKS (1u << SMAP_SHIFT)
#define SMAP_MASK (SMAP_BLOCKS - 1)
#define STORE_META "volume.meta"

/* One layer's allocation bitmap: pages[p] covers blocks [p*SMAP_BLOCKS, (p+1)*SMAP_BLOCKS). */
struct smap {
	uint64_t npages;
	uint8_t **pages; /* NULL: all zero */
	uint32_t *gen;	 /* bumped on every change of the page */
	uint32_t *saved; /* gen last written to the map file */
};

/* Owner index: per block of the head chain, the chain position (1..n) of its top owner. */
struct sidx {
	uint64_t nleaves;
	uint8_t **leaves; /* SMAP_BLOCKS entries each; NULL: all 0 */
};

struct layer {
	uint64_t id;
	uint64_t parent;	   /* 0: none */
	char snap[STORE_NAME_MAX]; /* "" for the head */
	char sid[STORE_SNAP_ID_MAX]; /* snapshot identity, the same on every replica */
	int64_t created;
	bool deleting;
	int data_fd;
	int map_fd;
	struct smap map;
	int refs;      /* in-flight I/O using the fds; closed when dead and 0 */
	bool dead;     /* removed from the volume */
	uint32_t cidx; /* position in the head chain (1..n), 0 if not in it */
};

struct sreq;
struct sflush;

struct store {
	struct loop *loop;
	char *dir;
	int dirfd;
	char name[STORE_NAME_MAX];
	char uuid[40];
	uint64_t size;
	uint64_t nblocks;
	uint64_t epoch;
	uint64_t members_gen;
	uint64_t next_layer_id;
	uint32_t nmembers;
	struct store_member members[STORE_MAX_MEMBERS];
	bool clean;

	struct layer *layers[STORE_MAX_LAYERS + 1]; /* creation order */
	uint32_t nlayers;
	struct layer *head;
	struct layer *chain[STORE_MAX_LAYERS + 1]; /* [1..nchain], chain[nchain] == head */
	uint32_t nchain;
	struct sidx idx;

	/* data path (store_io.c) */
	uint32_t inflight;	/* requests accepted and not yet called back */
	struct sreq *writes;	/* in-flight writes */
	struct sreq *wait_head; /* requests blocked behind a read-modify-write */
	struct sreq *wait_tail;
	struct sflush *flushing; /* flushes run one at a time */
	struct sflush *flush_head;
	struct sflush *flush_tail;
	uint32_t sync_gen; /* bumped by every synchronous map write */
	bool closing;

	/* merge cursor (store_snap.c) */
	uint64_t merge_id;
	uint64_t merge_child;
	uint64_t merge_blk;

	/* hash of one all-zero extent of zh_len bytes */
	uint32_t zh_len;
	uint64_t zh;
};

/* store_map.c */
int smap_init(struct smap *m, uint64_t nblocks);
int smap_grow(struct smap *m, uint64_t nblocks);
void smap_free(struct smap *m);
bool smap_test(const struct smap *m, uint64_t b);
int smap_set_range(struct smap *m, uint64_t b, uint64_t n);
void smap_clear(struct smap *m, uint64_t b);
uint64_t smap_count(const struct smap *m);
bool smap_dirty(const struct smap *m);
int smap_load(struct loop *l, int fd, struct smap *m);
/* Writes every page changed since last saved (no fsync). */
int smap_save_dirty(struct loop *l, int fd, struct smap *m);
/* Writes every non-empty page (for a fresh file). */
int smap_save_all(struct loop *l, int fd, struct smap *m);

int sidx_grow(struct sidx *x, uint64_t nblocks);
void sidx_free(struct sidx *x);
static inline uint8_t sidx_get(const struct sidx *x, uint64_t b)
{
	const uint8_t *leaf = x->leaves[b >> SMAP_SHIFT];
	return leaf ? leaf[b & SMAP_MASK] : 0;
}
int sidx_set(struct sidx *x, uint64_t b, uint8_t v);
int sidx_set_range(struct sidx *x, uint64_t b, uint64_t n, uint8_t v);
/* Rebuilds from the bitmaps of chain[1..nchain]. */
int sidx_build(struct sidx *x, struct layer *const *chain, uint32_t nchain, uint64_t nblocks);

/* store.c: synchronous I/O on the loop's sync ring; reads zero-fill past EOF. */
int sio_pread(struct loop *l, int fd, void *buf, size_t len, uint64_t off);
int sio_pwrite(struct loop *l, int fd, const void *buf, size_t len, uint64_t off);
int sio_fdatasync(struct loop *l, int fd);
int layer_open_files(struct store *s, struct layer *L, bool create);
void layer_put(struct store *s, struct layer *L);
/* Removes L from the volume: unlinks its files, closes them once no I/O uses them. */
void layer_kill(struct store *s, struct layer *L);
struct layer *layer_new(uint64_t id, uint64_t parent);
struct layer *layer_by_id(struct store *s, uint64_t id);
struct layer *layer_by_snap(struct store *s, const char *name);
/* Recomputes chain[] and the owner index (keeping in-flight writes routed). */
int store_rebuild_index(struct store *s);
/* Data, then map pages, then map fsync for L (synchronous). */
int store_sync_layer(struct store *s, struct layer *L);
/* store_sync_layer for the head and every layer with unsaved map pages. */
int store_sync_all(struct store *s);
int store_dirfsync(struct store *s);
struct store *store_alloc(struct loop *l, const char *dir);
/* Frees memory and fds only (no persist). */
void store_release(struct store *s);
/* Persists, marks clean and frees (store_close once no request is in flight). */
void store_finish_close(struct store *s);

/* store_io.c */
/* Re-applies in-flight writes to a freshly built index. */
int store_io_reapply(struct store *s);

/* store_meta.c */
int meta_save(struct store *s);
int meta_load(struct store *s);
int meta_uuid(char out[40]);
int store_write_atomic(int dirfd, const char *name, const void *buf, size_t len);

#endif

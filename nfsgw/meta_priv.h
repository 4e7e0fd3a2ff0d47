/*
 * meta_priv: the internals shared by the meta_*.c files (and white-box tests): the in-memory
 * tree (meta_tree.c), the entry codec shared by log records and checkpoints (meta_rec.c), the
 * mutations (meta_ops.c), group commit and replay (meta_log.c), checkpoints and superblocks
 * (meta_ckpt.c), open/close (meta.c), snapshots' frozen copies (meta_snap.c). Not a contract
 * for other components.
 */
#ifndef BLOCKD_NFSGW_META_PRIV_H
#define BLOCKD_NFSGW_META_PRIV_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "nfsgw/meta.h"
#include "replica/loop.h"

#define META_BLOCK 4096u
#define META_SB_MAGIC 0x4154454d444b4c42ull /* "BLKDMETA" */
#define META_REC_MAGIC 0x474f4c4du	    /* "MLOG" */
#define META_CKPT_MAGIC 0x504b434du	    /* "MCKP" */
#define META_VERSION 1u
#define META_HDR_SIZE 32u
/* A group commit closes its record at the first operation boundary past this. */
#define META_REC_TARGET (1u << 20)
/* Replay reads the log in windows this large; a record is never longer. */
#define META_WINDOW (4u << 20)
#define META_EXPORTS_MAX (1u << 20)
#define META_NLINK_MAX 65000u
#define META_IO_CHUNK (4u << 20)

/* Entry types: one vocabulary for log records and checkpoints, so replay re-applies. */
enum meta_etype {
	ME_INODE = 1,	   /* upsert every attribute (+ symlink target) */
	ME_DIRENT_ADD = 2, /* dir, cookie, fileid, name */
	ME_DIRENT_DEL = 3, /* dir, name */
	ME_INODE_FREE = 4, /* fileid */
	ME_EXPORTS = 5,	   /* text */
	ME_COUNTER = 6,	   /* next fileid (only ever grows) */
	ME_DIRNEXT = 7,	   /* dir, next cookie (only ever grows) */
	/* Snapshot trees (meta_snap.c): */
	ME_SNAP = 8,	     /* index, root, root parent, created, name, root name: (re)creates */
	ME_SNAP_INODE = 9,   /* index, then an ME_INODE body (live fileids) */
	ME_SNAP_DIRENT = 10, /* index, then an ME_DIRENT_ADD body */
	ME_SNAP_DEL = 11,    /* index */
	ME_SNAPNEXT = 12,    /* next snapshot index to try (only ever grows) */
};

static inline void le_put16(uint8_t *p, uint16_t v)
{
	p[0] = (uint8_t)v;
	p[1] = (uint8_t)(v >> 8);
}
static inline void le_put32(uint8_t *p, uint32_t v)
{
	for (int i = 0; i < 4; i++)
		p[i] = (uint8_t)(v >> (8 * i));
}
static inline void le_put64(uint8_t *p, uint64_t v)
{
	for (int i = 0; i < 8; i++)
		p[i] = (uint8_t)(v >> (8 * i));
}
static inline uint16_t le_get16(const uint8_t *p)
{
	return (uint16_t)(p[0] | (p[1] << 8));
}
static inline uint32_t le_get32(const uint8_t *p)
{
	uint32_t v = 0;
	for (int i = 3; i >= 0; i--)
		v = (v << 8) | p[i];
	return v;
}
static inline uint64_t le_get64(const uint8_t *p)
{
	uint64_t v = 0;
	for (int i = 7; i >= 0; i--)
		v = (v << 8) | p[i];
	return v;
}

struct mdent {
	struct mdent *hnext;
	uint64_t dir, fileid, cookie, hash;
	uint8_t namelen;
	char name[]; /* NUL-terminated */
};

/* A directory's entries in cookie order; d == NULL marks a removed one (compacted lazily). */
struct mslot {
	uint64_t cookie;
	struct mdent *d;
};

struct mdir {
	struct mslot *v;
	size_t n, cap;
	uint64_t live;
	uint64_t next_cookie;
};

struct minode {
	struct minode *hnext;
	struct meta_attr a;
	char *symlink;
	struct mdir *dir;
	/* On the lazy list: timestamps changed by writes, not yet in any record. */
	struct minode *lazy_prev, *lazy_next;
	bool lazy;
	/* The operation that last set the size: a write answered before it is durable could
	 * show a size that a crash takes back. */
	uint64_t size_serial;
};

struct mbuf {
	uint8_t *p;
	size_t len, cap;
};

#define MW_FUA 1u  /* a namespace change: durable before cb */
#define MW_SYNC 2u /* meta_sync: everything before it durable */

struct mwait {
	meta_cb cb;
	void *arg;
	size_t end; /* where this operation's entries end in the queue */
	uint32_t flags;
	uint64_t serial; /* operations complete in serial order */
};

struct mwaits {
	struct mwait *v;
	size_t n, cap;
};

struct mdeferred {
	meta_cb cb;
	void *arg;
	int res;
};

/* The handle loop_defer holds: survives meta_abandon (m = NULL then). */
struct mtoken {
	struct meta *m;
	bool armed;
};

struct mio;
typedef void (*mio_fn)(struct meta *m, struct mio *io, int res);
struct mio {
	struct meta *m; /* NULL once abandoned: the completion only frees */
	struct mio *prev, *next;
	mio_fn fn;
	void *buf;
	uint64_t off;
	uint32_t len;
	uint32_t idx;
};

/* A snapshot's frozen copy (meta_snap.c): inodes by live fileid, each directory's entries in
 * cookie order. Never changes once recorded. */
struct msent {
	uint64_t cookie, fileid;
	char *name;
};

struct msino {
	struct meta_attr a; /* live fileids, as when frozen */
	char *symlink;
	struct msent *e;
	size_t n, cap;
};

struct msnap {
	struct meta_snapinfo info;
	struct msino *v;
	size_t n, cap;
	uint32_t *h; /* open addressing: 1 + index into v, 0 empty */
	size_t hn;
	uint64_t bytes; /* its share of img_bytes */
	/* Names by (directory, name), built at the first lookup (a snapshot never changes after
	 * its record is applied): open addressing, ino index << 32 | entry index, +1; 0 empty. */
	uint64_t *nh;
	size_t nhn;
};

enum meta_ckpt_why { CKPT_FORMAT, CKPT_OPEN, CKPT_COMPACT, CKPT_CLOSE };

struct meta {
	struct loop *l;
	struct bdev dev;
	/* layout */
	uint64_t dev_size, ckpt_off[2], ckpt_cap, log_off, log_cap;
	uint64_t compact_at; /* tests may lower it after meta_open */
	/* persistent identity and position */
	uint8_t fsid[16], verifier[8];
	uint64_t sb_seq;
	int sb_slot;   /* slot of the newest superblock */
	int ckpt_area; /* area its checkpoint is in */
	uint64_t gen;  /* generation of that checkpoint: every record carries it */
	uint64_t seq;  /* sequence number of the next record */
	uint64_t log_pos;
	/* the tree */
	struct minode **ih;
	size_t ihn, ninodes;
	struct mdent **dh;
	size_t dhn, ndents;
	uint64_t next_fileid;
	char *exports;
	/* snapshots: by index (META_SNAP_DIRS_INDEX slots, allocated at the first one) and in
	 * creation order */
	struct msnap **snap_idx;
	struct msnap **snaps;
	size_t nsnaps, capsnaps;
	uint32_t snap_next;
	uint64_t img_bytes; /* size of a checkpoint of the tree now */
	uint64_t rng;
	struct minode *lazy_head;
	struct loop_timer *lazy_timer;
	bool lazy_due;
	/* group commit */
	struct mbuf q;
	struct mwaits w, flight;
	uint64_t wserial;     /* of the last operation queued */
	uint64_t done_serial; /* of the last operation completed */
	bool inflight, loaded, compacting, closing, unflushed;
	int err;  /* -EROFS / -ESTALE once failed */
	int ferr; /* the I/O error that failed it */
	/* deferred callbacks */
	struct mdeferred *dq;
	size_t ndq, capdq;
	struct mtoken *tok;
	struct mio *ios;
	/* open / close / checkpoint state */
	meta_cb open_cb, close_cb;
	void *open_arg, *close_arg;
	uint64_t scan_off; /* where the replay window starts */
	uint8_t *ck_img;   /* while reading a checkpoint */
	uint64_t ck_len;
	uint64_t ck_gen, ck_hash;
	uint32_t ck_pending;
	int ck_err;
	enum meta_ckpt_why ck_why;
	size_t ck_covered; /* queued waiters the checkpoint makes durable */
};

/* meta_tree.c */
struct minode *mt_inode(struct meta *m, uint64_t fileid);
struct mdent *mt_dent(struct meta *m, uint64_t dir, const char *name, size_t len);
int mt_upsert(struct meta *m, const struct meta_attr *a, const char *symlink, size_t symlen);
void mt_free_inode(struct meta *m, uint64_t fileid);
int mt_dirent_add(struct meta *m, uint64_t dir, uint64_t cookie, uint64_t fileid, const char *name,
		  size_t len);
void mt_dirent_del(struct meta *m, uint64_t dir, const char *name, size_t len);
void mt_lazy_mark(struct meta *m, struct minode *in);
void mt_lazy_unmark(struct meta *m, struct minode *in);
void mt_free_all(struct meta *m);
size_t mt_inode_esize(size_t symlen);
size_t mt_dirent_esize(size_t namelen);

/* meta_rec.c: entries appended to b; *_apply decodes entries and applies them. */
int mr_inode(struct mbuf *b, const struct minode *in);
int mr_dirent_add(struct mbuf *b, uint64_t dir, uint64_t cookie, uint64_t fileid, const char *name,
		  size_t len);
int mr_dirent_del(struct mbuf *b, uint64_t dir, const char *name, size_t len);
int mr_u64(struct mbuf *b, enum meta_etype t, uint64_t v);
int mr_dirnext(struct mbuf *b, uint64_t dir, uint64_t next);
int mr_exports(struct mbuf *b, const char *text, size_t len);
int mr_apply(struct meta *m, const uint8_t *p, size_t len);
/* An entry of type t with body bytes appended to b: where the body goes (NULL: no memory). */
uint8_t *mr_ent(struct mbuf *b, enum meta_etype t, size_t body);
/* An ME_INODE body at p (mt_inode_esize(symlen) - 4 bytes) and its decoding. */
void mr_inode_body(uint8_t *p, const struct meta_attr *a, const char *symlink, size_t symlen);
int mr_inode_decode(const uint8_t *p, size_t n, struct meta_attr *a, const char **symlink,
		    size_t *symlen);
int mbuf_reserve(struct mbuf *b, size_t more);
void mbuf_free(struct mbuf *b);

/* meta_log.c: a header is magic u32, payload length u32, generation u64, sequence u64 and
 * the XXH3 of its first 24 bytes and the payload that follows it. */
uint64_t ml_hash(const uint8_t *hdr, const uint8_t *payload, size_t len);
void ml_put_hdr(uint8_t *hdr, uint32_t magic, uint32_t plen, uint64_t gen, uint64_t seq);
void ml_schedule(struct meta *m);
int ml_defer(struct meta *m, meta_cb cb, void *arg, int res);
int ml_wait(struct meta *m, meta_cb cb, void *arg, uint32_t flags);
void ml_kick(struct meta *m);
void ml_fail(struct meta *m, int res);
/* Completes the first n queued operations with res (they are durable, or failed). */
void ml_complete(struct meta *m, size_t n, int res);
void ml_replay_start(struct meta *m);
void ml_lazy_arm(struct meta *m);

/* meta_ops.c: shared by the mutations of meta_snap.c */
int mo_begin(struct meta *m);
int mo_space(struct meta *m, size_t more);
int mo_commit(struct meta *m, size_t start, int enc, meta_cb cb, void *arg, uint32_t flags);

/* meta_snap.c */
int ms_apply(struct meta *m, enum meta_etype t, const uint8_t *p, size_t n);
/* Appends every snapshot's entries (checkpoints). */
int ms_encode(struct meta *m, struct mbuf *b);
void ms_free_all(struct meta *m);
/* Some snapshot other than except (NULL: any) holds live fileid. */
bool ms_holds(struct meta *m, uint64_t fileid, const struct msnap *except);
/* Lookups of meta.h for fileids with META_SNAP_BIT. */
int ms_getattr(struct meta *m, uint64_t fileid, struct meta_attr *out);
int ms_lookup(struct meta *m, uint64_t dir, const char *name, uint64_t *fileid);
int ms_readlink(struct meta *m, uint64_t fileid, char *buf, size_t len);
int ms_readdir(struct meta *m, uint64_t dir, uint64_t after, meta_dirent_fn fn, void *arg);

/* meta_ckpt.c */
void mc_layout(struct meta *m, uint64_t size);
/* Both superblocks (8 KiB): 1 when both are blank (format), 0 with the newest verifying one
 * loaded into m (layout, identity, generation, checkpoint place), -EUCLEAN otherwise. */
int mc_sb_pick(struct meta *m, const uint8_t *blocks);
/* Writes a checkpoint of the tree in the other area, then the other superblock. */
void mc_start(struct meta *m, enum meta_ckpt_why why);
/* Reads the current checkpoint, applies it, then replays the log (meta_open). */
void mc_read(struct meta *m);

/* meta.c */
struct mio *mio_new(struct meta *m, mio_fn fn, uint64_t off, uint32_t len);
int mio_read(struct meta *m, struct mio *io);
int mio_write(struct meta *m, struct mio *io, uint32_t flags);
int mio_flush(struct meta *m, struct mio *io);
void mio_free(struct meta *m, struct mio *io);
void meta_now(struct meta_time *t);
uint64_t meta_rand(struct meta *m);
void meta_open_done(struct meta *m, int res);
void meta_close_done(struct meta *m, int res);
/* Test-only: a crash. Frees m without writing anything; I/O in flight completes unseen. */
void meta_abandon(struct meta *m);

#endif

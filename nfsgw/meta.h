/*
 * meta: the gateway's file system metadata (inodes, directories, names, attributes, the
 * export table text), kept in memory and persisted on a replicated volume, so that a gateway
 * started on any node finds the same tree and the same file handles.
 *
 * Persistence (on the bdev of the meta volume, normally an engine):
 * - A superblock pair (A/B, alternating, each XXH3-checksummed with a sequence number), a
 *   checkpoint (a full image of the tree) and a log of records after it. A record holds the
 *   complete effect of one operation (a rename is one record), is checksummed, numbered, and
 *   starts on a fresh 4 KiB block, so a torn write can only lose the record being written
 *   and never one written before. Opening replays the checkpoint then the log up to the first
 *   record that does not verify. When the log passes META_LOG_COMPACT bytes a new checkpoint
 *   is written in the other checkpoint area and the superblock switched to it.
 * - Group commit: records queued while a log write is in flight are written together next.
 * - Namespace changes (create, mkdir, link, remove, rename, setattr) complete (cb) only when
 *   their record is durable (written with FUA) on every in-sync replica of the meta volume.
 * - meta_note_write() is the data path: a write that extends a file queues a size record
 *   written without FUA (on every in-sync replica before cb, like an UNSTABLE write's data);
 *   mtime/ctime changes from writes are applied in memory at once and persisted lazily (at
 *   the next record, meta_sync(), or within META_LAZY_MS), so a gateway crash can lose up to
 *   that much timestamp history but never a size a client was told about.
 * - meta_sync() makes everything applied so far durable (COMMIT, FILE_SYNC).
 *
 * Semantics: fileids are never reused (a persisted 64-bit counter; root is META_ROOT); each
 * inode has a generation (random at creation) that goes into file handles. Directory entries
 * carry a cookie unique within their directory and increasing in creation order, so READDIR
 * resumes after any cookie even when entries were removed meanwhile; cookies 1 and 2 are
 * reserved for "." and "..". A regular file's data lives in volume meta_volume_name(); meta
 * never touches it. Removing the last link of a regular file reports its fileid so the
 * caller deletes the volume.
 *
 * Every call is on the loop thread. Mutations validate first and return a negative errno
 * synchronously without calling cb (-ENOENT, -EEXIST, -ENOTDIR, -EISDIR, -ENOTEMPTY,
 * -ENAMETOOLONG, -EINVAL for "."/".."/names with '/' or NUL, -EMLINK, -EXDEV, -EROFS after
 * the volume failed, -ESTALE when fenced); otherwise they apply the change in memory (so
 * lookups see it at once), return 0 and later call cb(arg, 0) or cb(arg, -errno) if the
 * record could not be persisted (then the meta is failed: every later mutation gets -EROFS
 * and the gateway must stop serving).
 */
#ifndef BLOCKD_NFSGW_META_H
#define BLOCKD_NFSGW_META_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "replica/bdev.h"
#include "replica/loop.h"

#define META_ROOT 1ull
#define META_NAME_MAX 255
#define META_SYMLINK_MAX 4095
#define META_LOG_COMPACT (64ull << 20)
#define META_LAZY_MS 1000
/* The meta volume's size: superblocks, two checkpoint areas and the log fit inside it. */
#define META_VOLUME_SIZE (4ull << 30)

enum meta_type { /* the NFSv3 ftype3 values */
	META_REG = 1,
	META_DIR = 2,
	META_BLK = 3,
	META_CHR = 4,
	META_LNK = 5,
	META_SOCK = 6,
	META_FIFO = 7,
};

struct meta_time {
	int64_t sec;
	uint32_t nsec;
};

struct meta_attr {
	uint64_t fileid;
	uint64_t gen;
	enum meta_type type;
	uint32_t mode; /* permission bits only (07777) */
	uint32_t nlink;
	uint32_t uid, gid;
	uint64_t size; /* directories: a value derived from the entry count */
	uint32_t rdev_major, rdev_minor;
	struct meta_time atime, mtime, ctime;
	uint64_t parent; /* directories: the parent's fileid (root: itself); others: 0 */
};

/* Which fields of meta_setattr to apply. */
#define META_SET_MODE 0x01u
#define META_SET_UID 0x02u
#define META_SET_GID 0x04u
#define META_SET_SIZE 0x08u
#define META_SET_ATIME 0x10u /* to atime as given */
#define META_SET_MTIME 0x20u
#define META_SET_ATIME_NOW 0x40u
#define META_SET_MTIME_NOW 0x80u

struct meta_setattr {
	uint32_t mask;
	uint32_t mode, uid, gid;
	uint64_t size;
	struct meta_time atime, mtime;
};

struct meta_info {
	uint8_t fsid[16];     /* random at format: the file system's identity */
	uint8_t verifier[8];  /* the NFS write verifier (see nfs3.h) */
	uint64_t files;       /* inodes in use */
	uint64_t log_bytes;   /* log since the last checkpoint */
	uint64_t next_fileid;
};

struct meta;
typedef void (*meta_cb)(void *arg, int res);

/* Opens the metadata on dev: loads it, or formats it (root directory mode 0755 uid 0 gid 0)
 * when the volume holds no superblock. cb(arg, 0) when ready; *out is valid from the call on
 * but unusable until cb. -EUCLEAN if superblocks exist but neither verifies. */
int meta_open(struct loop *l, struct bdev dev, struct meta **out, meta_cb cb, void *arg);
/* Writes lazy state and a checkpoint, then frees; cb when done (the bdev is the caller's). */
int meta_close(struct meta *m, meta_cb cb, void *arg);
void meta_info(struct meta *m, struct meta_info *out);
/* A persistent failure happened (see above). */
bool meta_failed(struct meta *m);

/* Lookups: never block, never fail for lack of I/O. */
int meta_getattr(struct meta *m, uint64_t fileid, struct meta_attr *out);
int meta_lookup(struct meta *m, uint64_t dir, const char *name, uint64_t *fileid);
/* Symlink target (NUL-terminated) into buf. */
int meta_readlink(struct meta *m, uint64_t fileid, char *buf, size_t len);
/* Calls fn for each entry of dir with cookie > after, in cookie order, until fn returns
 * non-zero (then stops; that entry counts as not consumed). Does not list "." or "..".
 * -ENOTDIR, -ENOENT. */
typedef int (*meta_dirent_fn)(void *arg, const char *name, uint64_t fileid, uint64_t cookie);
int meta_readdir(struct meta *m, uint64_t dir, uint64_t after, meta_dirent_fn fn, void *arg);
/* Changes whenever dir's entry set changes (for READDIR cookie verifiers). */
uint64_t meta_dir_version(struct meta *m, uint64_t dir);
/* The volume name of regular file fileid: "nfs-<fsid hex 8>-<fileid>" (< 64 bytes). */
void meta_volume_name(struct meta *m, uint64_t fileid, char *buf, size_t len);

/* Namespace mutations (see the header comment for the error and callback rules). */
struct meta_create_args {
	uint64_t dir;
	const char *name;
	enum meta_type type;
	uint32_t mode, uid, gid;
	uint32_t rdev_major, rdev_minor;
	const char *symlink; /* META_LNK only */
	bool exclusive;      /* fail with -EEXIST if name exists (else: return the existing file
				for META_REG, -EEXIST for others) */
};
/* *fileid and *existed are set synchronously. */
int meta_create(struct meta *m, const struct meta_create_args *a, uint64_t *fileid,
		bool *existed, meta_cb cb, void *arg);
int meta_link(struct meta *m, uint64_t fileid, uint64_t dir, const char *name, meta_cb cb,
	      void *arg);
/* Removes name from dir (rmdir: must be an empty directory; else must not be a directory).
 * *freed_reg gets the fileid of a regular file whose last link went (its volume can go),
 * else 0. */
int meta_remove(struct meta *m, uint64_t dir, const char *name, bool rmdir,
		uint64_t *freed_reg, meta_cb cb, void *arg);
/* POSIX rename semantics (replaces a compatible target; a directory cannot move under
 * itself: -EINVAL). *freed_reg as for meta_remove (a replaced regular file). */
int meta_rename(struct meta *m, uint64_t from_dir, const char *from, uint64_t to_dir,
		const char *to, uint64_t *freed_reg, meta_cb cb, void *arg);
/* Size changes are the caller's to apply to the data volume (shrink: discard the tail
 * first). ctime is updated. */
int meta_setattr(struct meta *m, uint64_t fileid, const struct meta_setattr *sa, meta_cb cb,
		 void *arg);

/* Data path: a write [off, end) to regular file fileid happened (or is about to be
 * acknowledged). Grows size to end if larger (durable without FUA before cb), updates
 * mtime/ctime lazily. cb is always called (deferred when there is nothing to write). */
int meta_note_write(struct meta *m, uint64_t fileid, uint64_t end, meta_cb cb, void *arg);
/* Makes every change applied so far durable (FUA/flush on the meta volume). */
int meta_sync(struct meta *m, meta_cb cb, void *arg);

/* The export table text (exports(5)), replicated with the tree. NULL/"" when never set. */
const char *meta_exports_text(struct meta *m);
int meta_set_exports_text(struct meta *m, const char *text, meta_cb cb, void *arg);

/*
 * Snapshots through the export (issue 3): a snapshot NAME of a file or directory is a frozen
 * copy of that subtree's metadata, taken together with a snapshot of every regular file's
 * volume, named meta_snap_volsnap(NAME), in one consistent cut (the gateway holds NFS
 * writes while it takes them). Names are unique in the file system.
 *
 * Objects inside a snapshot have fileids with META_SNAP_BIT set, the snapshot's index in
 * bits 48..62 and the fileid the object had when the snapshot was taken in bits 0..47 (live
 * fileids stay below 2^48). meta_getattr, meta_lookup, meta_readdir and meta_readlink accept
 * them and answer from the frozen copy (attributes carry the virtual fileid and the live
 * generation). Index META_SNAP_DIRS_INDEX is reserved for the virtual `.snapshots`
 * directories that the NFS layer shows in each export root; fileid META_SNAP_BIT | idx << 48
 * (live part 0) is the virtual `.snapshots/NAME` directory, whose only entry is the
 * snapshotted object under its own name. Both kinds are the NFS layer's to present.
 *
 * A regular file's volume is not deleted while a snapshot refers to it: meta_remove and
 * meta_rename report freed_reg only when no snapshot holds the file; deleting the last
 * snapshot that holds a removed file reports it then.
 */
#define META_SNAP_BIT (1ull << 63)
#define META_SNAP_SHIFT 48
#define META_SNAP_DIRS_INDEX 0x7fffu
#define META_SNAP_MAX 4096
#define META_SNAP_FILEID(idx, live) \
	(META_SNAP_BIT | ((uint64_t)(idx) << META_SNAP_SHIFT) | ((live) & ((1ull << 48) - 1)))
#define META_SNAP_INDEX(fileid) ((uint32_t)(((fileid) >> META_SNAP_SHIFT) & 0x7fffu))
#define META_SNAP_LIVE(fileid) ((fileid) & ((1ull << 48) - 1))

struct meta_snapinfo {
	uint32_t index;
	char name[META_NAME_MAX + 1];
	uint64_t root;      /* the live fileid that was snapshotted */
	uint64_t root_parent; /* its parent directory then */
	char root_name[META_NAME_MAX + 1]; /* its name in that directory */
	struct meta_time created;
	uint64_t files;     /* regular files in it */
};

/* The volume snapshot name used for snapshot NAME ("nfsgw-" NAME, < 64 bytes). */
void meta_snap_volsnap(const char *name, char *buf, size_t len);
/* Records the snapshot of the subtree at fileid (the caller has already snapshotted every
 * regular file's volume under it, while holding writes). -EEXIST, -ENOSPC (META_SNAP_MAX),
 * -EINVAL (bad name, or fileid is itself in a snapshot). */
int meta_snapshot_create(struct meta *m, uint64_t fileid, const char *name, uint32_t *index,
			 meta_cb cb, void *arg);
/* Calls fn(arg, fileid) synchronously for every regular file under fileid (live tree), e.g.
 * to snapshot their volumes; stops at non-zero. */
int meta_each_regular(struct meta *m, uint64_t fileid, int (*fn)(void *arg, uint64_t fileid),
		      void *arg);
/* Deletes snapshot name. freed[] (up to nfreed_max) gets the fileids of removed files whose
 * volumes no other snapshot or live name holds any more (delete those volumes); *nfreed. The
 * caller deletes the volume snapshots of the others. */
int meta_snapshot_delete(struct meta *m, const char *name, uint64_t *freed, uint32_t nfreed_max,
			 uint32_t *nfreed, meta_cb cb, void *arg);
int meta_snapshot_find(struct meta *m, const char *name, struct meta_snapinfo *out);
int meta_snapshot_by_index(struct meta *m, uint32_t index, struct meta_snapinfo *out);
/* Snapshots in creation order; stops when fn returns non-zero. */
int meta_snapshot_each(struct meta *m, int (*fn)(void *arg, const struct meta_snapinfo *si),
		       void *arg);
/* Reverts the live subtree to snapshot name's metadata: entries that exist in both get the
 * snapshot's attributes (size included), entries created since are removed (reported in
 * freed[] like meta_snapshot_delete when nothing else holds their volume), entries removed
 * since are restored under their old fileid and name (their volumes still exist because the
 * snapshot held them). The caller reverts each regular file's volume to meta_snap_volsnap()
 * first (meta_each_snapfile lists them). -ENOENT when the snapshotted object's parent is gone. */
int meta_snapshot_revert(struct meta *m, const char *name, uint64_t *freed, uint32_t nfreed_max,
			 uint32_t *nfreed, meta_cb cb, void *arg);
/* fn(arg, live fileid) for every regular file in snapshot name. */
int meta_each_snapfile(struct meta *m, const char *name, int (*fn)(void *arg, uint64_t fileid),
		       void *arg);

#endif

/*
 * nfs3_priv: shared internals of the NFSv3 program (nfs3*.c).
 *
 * A call becomes a heap struct nfs3_req holding the decoded args and the result until the
 * reply; procedure handlers finish it exactly once with nfs3_reply()/nfs3_fail()/
 * nfs3_fail_errno(). The pure helpers (errno mapping, attribute conversion, permission
 * decisions) are exposed here for the unit tests.
 *
 * Errors: a negative errno from meta/filevol maps through nfs3_status(). -ESTALE from them
 * means this gateway was fenced (another one took the export over): the call is dropped
 * without a reply, so the client retransmits to the new gateway and never sees an error or
 * a success for something not done. (A stale file handle is a different thing: handlers
 * answer NFS3ERR_STALE for it directly.)
 */
#ifndef BLOCKD_NFSGW_NFS3_PRIV_H
#define BLOCKD_NFSGW_NFS3_PRIV_H

#include <stdbool.h>
#include <stdint.h>

#include <nfsc/libnfs-raw-nfs.h>
#include <nfsc/libnfs-zdr.h>

#include "nfsgw/nfs3.h"

/* libnfs codecs have typed second arguments; zdrproc_t is variadic. */
#define NFS3_ZDR(fn) ((zdrproc_t)(void (*)(void))(fn))

#define NFS3_NPROCS 22

/* Effective credentials after squashing. */
struct nfs3_cred {
	uint32_t uid, gid;
	uint32_t ngids;
	uint32_t gids[RPC_MAX_GIDS];
};

struct nfs3 {
	struct nfs3_params p;
	/* From meta_info(), refreshed at every call (the meta may open after us). */
	uint8_t fsid[16];
	uint64_t fsid8; /* first 8 bytes of fsid, big-endian */
	uint8_t verf[8];
	uint64_t files;
	uint32_t inflight; /* requests not yet finished */
	bool dying;	   /* nfs3_prog_free ran with requests in flight */
	/* nfs3_hold: changing calls running, holds taken, calls held (FIFO), and hold callbacks
	 * waiting for the running ones to finish. */
	uint32_t changing;
	uint32_t holds;
	struct nfs3_req *held_head, *held_tail;
	struct nfs3_hold_waiter *waiters;
};

union nfs3_args {
	GETATTR3args getattr;
	SETATTR3args setattr;
	LOOKUP3args lookup;
	ACCESS3args access;
	READLINK3args readlink;
	READ3args read;
	WRITE3args write;
	CREATE3args create;
	MKDIR3args mkdir;
	SYMLINK3args symlink;
	MKNOD3args mknod;
	REMOVE3args remove;
	RMDIR3args rmdir;
	RENAME3args rename;
	LINK3args link;
	READDIR3args readdir;
	READDIRPLUS3args readdirplus;
	FSSTAT3args fsstat;
	FSINFO3args fsinfo;
	PATHCONF3args pathconf;
	COMMIT3args commit;
};

union nfs3_res {
	nfsstat3 status; /* every result starts with it */
	GETATTR3res getattr;
	SETATTR3res setattr;
	LOOKUP3res lookup;
	ACCESS3res access;
	READLINK3res readlink;
	READ3res read;
	WRITE3res write;
	CREATE3res create;
	MKDIR3res mkdir;
	SYMLINK3res symlink;
	MKNOD3res mknod;
	REMOVE3res remove;
	RMDIR3res rmdir;
	RENAME3res rename;
	LINK3res link;
	READDIR3res readdir;
	READDIRPLUS3res readdirplus;
	FSSTAT3res fsstat;
	FSINFO3res fsinfo;
	PATHCONF3res pathconf;
	COMMIT3res commit;
};

struct nfs3_req {
	struct nfs3 *n;
	struct rpc_call *c;
	uint32_t proc;
	bool args_live; /* rpc_args_free still owed */
	bool changing;	/* counted in n->changing while it runs */
	struct nfs3_req *held_next;
	bool have_export;
	/* From the prologue of the first handle. */
	uint32_t export_id;
	bool ro;
	struct nfs3_cred cred;
	union nfs3_args args;
	union nfs3_res res;
	/* Per-operation state. */
	int pending;
	int err;
	uint64_t fileid, fileid2;
	uint64_t freed_reg;
	struct meta_attr pre, pre2; /* wcc pre-op attributes */
	struct meta_setattr sa;
	meta_cb next; /* where a multi-step change continues */
	uint8_t fh[NFS3_FH_LEN];
	char vol[64];	  /* the file's volume name, alive while filevol uses it */
	char snapvol[64]; /* READ in a snapshot: the volume snapshot's name */
	char *buf;	  /* READ data, READLINK target (freed at finish unless handed off) */
	void *scratch;	  /* READDIR entries (freed at finish) */
	void (*scratch_free)(void *);
};

/* Handlers (one per procedure), each finishes r. */
typedef void (*nfs3_proc_fn)(struct nfs3_req *r);
void nfs3_proc_getattr(struct nfs3_req *r);
void nfs3_proc_setattr(struct nfs3_req *r);
void nfs3_proc_lookup(struct nfs3_req *r);
void nfs3_proc_access(struct nfs3_req *r);
void nfs3_proc_readlink(struct nfs3_req *r);
void nfs3_proc_read(struct nfs3_req *r);
void nfs3_proc_write(struct nfs3_req *r);
void nfs3_proc_create(struct nfs3_req *r);
void nfs3_proc_mkdir(struct nfs3_req *r);
void nfs3_proc_symlink(struct nfs3_req *r);
void nfs3_proc_mknod(struct nfs3_req *r);
void nfs3_proc_remove(struct nfs3_req *r);
void nfs3_proc_rmdir(struct nfs3_req *r);
void nfs3_proc_rename(struct nfs3_req *r);
void nfs3_proc_link(struct nfs3_req *r);
void nfs3_proc_readdir(struct nfs3_req *r);
void nfs3_proc_readdirplus(struct nfs3_req *r);
void nfs3_proc_fsstat(struct nfs3_req *r);
void nfs3_proc_fsinfo(struct nfs3_req *r);
void nfs3_proc_pathconf(struct nfs3_req *r);
void nfs3_proc_commit(struct nfs3_req *r);

/* Finishing (nfs3.c). nfs3_reply encodes r->res with the procedure's result codec. */
void nfs3_reply(struct nfs3_req *r);
/* Sets status (the rest of r->res must already be the resfail form) and replies. */
void nfs3_fail(struct nfs3_req *r, nfsstat3 st);
/* -ESTALE drops the call (fenced, see above); others reply nfs3_status(err). */
void nfs3_fail_errno(struct nfs3_req *r, int err);
/* READ: replies with data sent from buf; frees buf when sent. */
void nfs3_reply_read(struct nfs3_req *r, char *buf, uint32_t len);
/* Finishes without a reply. */
void nfs3_drop(struct nfs3_req *r);
/* Runs r's procedure handler (nfs3.c). */
void nfs3_run(struct nfs3_req *r);

/* Holds (nfs3_hold.c). admit: false when r was queued behind a hold (it runs at release).
 * finished: from every request's finish. drop_all: drops the queued calls (no reply). */
bool nfs3_proc_changes(uint32_t proc);
bool nfs3_hold_admit(struct nfs3_req *r);
void nfs3_hold_finished(struct nfs3_req *r);
void nfs3_hold_drop_all(struct nfs3 *n);

/* Resolves a handle (nfs3.c): the export must exist and list the client (the first handle
 * of a call also sets r->export_id, r->ro and r->cred; later ones must be in the same
 * export, else NFS3ERR_XDEV), the fsid/fileid/generation must be current. Returns NFS3_OK
 * with *fileid and *attr, or the status to answer. */
nfsstat3 nfs3_resolve(struct nfs3_req *r, const nfs_fh3 *fh, uint64_t *fileid,
		      struct meta_attr *attr);
/* The fileid of r's export root directory (0 if the path no longer resolves). */
uint64_t nfs3_export_root(struct nfs3_req *r);
/* Writes the handle of fileid (generation gen) in r's export into out[NFS3_FH_LEN]. */
void nfs3_make_fh(struct nfs3_req *r, uint64_t fileid, uint64_t gen, uint8_t *out);

/* Snapshots through the export (nfs3_snap.c). */
#define NFS3_SNAPDIR ".snapshots"
#define NFS3_SNAPDIR_COOKIE (1ull << 62) /* the export root's .snapshots entry: after all */
bool nfs3_is_snap(uint64_t fileid);
/* The fileid of the .snapshots directory of the export rooted at root. */
uint64_t nfs3_snapdir_id(uint64_t root);
/* Does snapshot si belong under the export rooted at root? */
bool nfs3_snap_under(struct meta *m, const struct meta_snapinfo *si, uint64_t root);
/* meta_getattr, plus the virtual .snapshots directories (r's export must be bound). */
int nfs3_getattr(struct nfs3_req *r, uint64_t id, struct meta_attr *out);
/* meta_lookup, plus .snapshots in the export root and the names in it. */
int nfs3_lookup_name(struct nfs3_req *r, uint64_t dir, const char *name, uint64_t *id);
/* meta_readdir, plus the listing of .snapshots and its entry in the export root. */
int nfs3_readdir_entries(struct nfs3_req *r, uint64_t dir, uint64_t after, meta_dirent_fn fn,
			 void *arg);
/* Is name in dir the export root's reserved .snapshots? */
bool nfs3_snap_reserved(struct nfs3_req *r, uint64_t dir, const char *name);
/* READ of a frozen regular file (cb(r, res)). */
int nfs3_snap_read(struct nfs3_req *r, uint64_t fileid, uint64_t off, uint32_t len, void *buf,
		   filevol_cb cb);

/* errno -> nfsstat3 (pure). err is negative or 0. */
nfsstat3 nfs3_status(int err);

/* Attributes (nfs3_attr.c). */
void nfs3_fattr(struct nfs3 *n, const struct meta_attr *a, fattr3 *out);
/* post_op_attr of fileid now (absent if it cannot be read). */
void nfs3_post_op(struct nfs3 *n, uint64_t fileid, post_op_attr *out);
void nfs3_post_op_from(struct nfs3 *n, const struct meta_attr *a, post_op_attr *out);
void nfs3_pre_op(const struct meta_attr *a, pre_op_attr *out);
/* wcc_data: before from *pre (may be NULL), after from fileid now. */
void nfs3_wcc(struct nfs3 *n, const struct meta_attr *pre, uint64_t fileid, wcc_data *out);
/* Converts sattr3 into meta_setattr (mask of what is set); -EINVAL for a bad mode. */
int nfs3_sattr(const sattr3 *in, struct meta_setattr *out);
uint64_t nfs3_fsid8(const uint8_t fsid[16]);

/* Permissions (nfs3_attr.c), pure. */
#define NFS3_MAY_READ 4u
#define NFS3_MAY_WRITE 2u
#define NFS3_MAY_EXEC 1u
bool nfs3_cred_in_group(const struct nfs3_cred *c, uint32_t gid);
/* The subset of want (NFS3_MAY_*) that c is granted on a by its mode bits. Root gets
 * read/write always and exec when any x bit is set or a is a directory. */
uint32_t nfs3_perm(const struct meta_attr *a, const struct nfs3_cred *c, uint32_t want);
/* 0 or -EACCES. owner_override: the owner may read/write whatever the mode (what knfsd does
 * for READ/WRITE, so a file opened before a chmod stays usable). */
int nfs3_may(const struct meta_attr *a, const struct nfs3_cred *c, uint32_t want,
	     bool owner_override);
/* The ACCESS3 bits of requested that are granted (ro: no MODIFY/EXTEND/DELETE). */
uint32_t nfs3_access_bits(const struct meta_attr *a, const struct nfs3_cred *c, bool ro,
			  uint32_t requested);
/* May c remove (or rename away) victim from dir? write+exec on dir, and with the sticky bit
 * only dir's or victim's owner (or root). 0 or -EACCES/-EPERM. */
int nfs3_may_delete(const struct meta_attr *dir, const struct meta_attr *victim,
		    const struct nfs3_cred *c);
/* SETATTR rules on a: chmod by owner/root (a non-member's setgid bit is dropped from
 * sa->mode); chown only by root (or to the current owner); chgrp by root or the owner to a
 * group it is in; explicit times by owner/root, "now" also with write permission; size
 * needs write permission (owner override). May adjust sa. 0, -EPERM or -EACCES. */
int nfs3_may_setattr(const struct meta_attr *a, const struct nfs3_cred *c, struct meta_setattr *sa);

#endif

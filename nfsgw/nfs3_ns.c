/*
 * nfs3_ns: namespace changes — SETATTR, CREATE, MKDIR, SYMLINK, MKNOD, REMOVE, RMDIR,
 * RENAME, LINK. Each replies only after meta's record is durable (its callback), so a
 * client never hears of a change that a crash could lose.
 *
 * - Truncation zeroes the volume's tail (filevol_zero) before meta_setattr shrinks the size,
 *   so a later growth reads back zeros; growth is meta_setattr alone (sparse).
 * - CREATE EXCLUSIVE keeps the verifier in atime.sec/mtime.sec (as Linux does): a retry with
 *   the same verifier finds the file and succeeds; the client's following SETATTR sets real
 *   times.
 * - A regular file whose last link goes (REMOVE, RENAME over it) has its volume deleted after
 *   the meta record is durable; a failed delete is logged, never the op's failure (the volume
 *   is then orphaned, not the file).
 * - New objects belong to the caller's (squashed) uid and gid, or the directory's gid when
 *   the directory has the setgid bit (which new directories inherit).
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "nfsgw/nfs3_priv.h"

/* ---- helpers ---- */

static bool name_bad(const char *name, nfsstat3 *st)
{
	if (!name || !*name) {
		*st = NFS3ERR_INVAL;
		return true;
	}
	if (strlen(name) > META_NAME_MAX) {
		*st = NFS3ERR_NAMETOOLONG;
		return true;
	}
	return false;
}

struct vol_del {
	char vol[64];
};

static void vol_deleted(void *arg, int res)
{
	struct vol_del *v = arg;
	if (res && res != -ENOENT)
		fprintf(stderr, "nfsgw: deleting volume %s of a removed file: %s (orphaned)\n",
			v->vol, strerror(-res));
	free(v);
}

static void delete_volume(struct nfs3 *n, uint64_t fileid)
{
	if (!fileid || !n->p.fv)
		return;
	struct vol_del *v = calloc(1, sizeof(*v));
	if (!v) {
		fprintf(stderr, "nfsgw: volume of file %llu orphaned (no memory)\n",
			(unsigned long long)fileid);
		return;
	}
	meta_volume_name(n->p.meta, fileid, v->vol, sizeof(v->vol));
	int rc = filevol_delete(n->p.fv, v->vol, vol_deleted, v);
	if (rc)
		vol_deleted(v, rc);
}

/* Applies r->sa to r->fileid (pre-op attrs r->pre): zeroes a truncated tail first. cb
 * gets the result. */
static void setattr_meta(void *arg, int res);

static void setattr_apply(struct nfs3_req *r, meta_cb cb)
{
	r->err = 0;
	r->next = cb;
	if ((r->sa.mask & META_SET_SIZE) && r->pre.type == META_REG && r->sa.size < r->pre.size) {
		meta_volume_name(r->n->p.meta, r->fileid, r->vol, sizeof(r->vol));
		int rc = filevol_zero(r->n->p.fv, r->vol, r->sa.size, r->pre.size - r->sa.size,
				      setattr_meta, r);
		if (rc)
			cb(r, rc);
		return;
	}
	setattr_meta(r, 0);
}

static void setattr_meta(void *arg, int res)
{
	struct nfs3_req *r = arg;
	meta_cb cb = r->next;
	if (res == 0) {
		res = meta_setattr(r->n->p.meta, r->fileid, &r->sa, cb, r);
		if (res == 0)
			return;
	}
	cb(r, res);
}

/* ---- SETATTR ---- */

static void setattr_done(void *arg, int res)
{
	struct nfs3_req *r = arg;
	nfs3_wcc(r->n, &r->pre, r->fileid, &r->res.setattr.SETATTR3res_u.resok.obj_wcc);
	if (res)
		nfs3_fail_errno(r, res);
	else
		nfs3_fail(r, NFS3_OK);
}

void nfs3_proc_setattr(struct nfs3_req *r)
{
	SETATTR3args *a = &r->args.setattr;
	wcc_data *wcc = &r->res.setattr.SETATTR3res_u.resfail.obj_wcc;
	nfsstat3 st = nfs3_resolve(r, &a->object, &r->fileid, &r->pre);
	if (st != NFS3_OK) {
		nfs3_fail(r, st);
		return;
	}
	nfs3_pre_op(&r->pre, &wcc->before);
	nfs3_post_op_from(r->n, &r->pre, &wcc->after);
	if (r->ro) {
		nfs3_fail(r, NFS3ERR_ROFS);
		return;
	}
	if (nfs3_sattr(&a->new_attributes, &r->sa)) {
		nfs3_fail(r, NFS3ERR_INVAL);
		return;
	}
	if (a->guard.check &&
	    (a->guard.sattrguard3_u.obj_ctime.seconds != (uint32_t)r->pre.ctime.sec ||
	     a->guard.sattrguard3_u.obj_ctime.nseconds != r->pre.ctime.nsec)) {
		nfs3_fail(r, NFS3ERR_NOT_SYNC);
		return;
	}
	if (r->sa.mask & META_SET_SIZE) {
		if (r->pre.type == META_DIR) {
			nfs3_fail(r, NFS3ERR_ISDIR);
			return;
		}
		if (r->pre.type != META_REG) {
			nfs3_fail(r, NFS3ERR_INVAL);
			return;
		}
		if (r->sa.size > FILEVOL_MAX_SIZE) {
			nfs3_fail(r, NFS3ERR_FBIG);
			return;
		}
	}
	int rc = nfs3_may_setattr(&r->pre, &r->cred, &r->sa);
	if (rc) {
		nfs3_fail_errno(r, rc);
		return;
	}
	if (!r->sa.mask) {
		nfs3_fail(r, NFS3_OK);
		return;
	}
	setattr_apply(r, setattr_done);
}

/* ---- CREATE, MKDIR, SYMLINK, MKNOD ---- */

/* The four results share one layout: {post_op_fh3, post_op_attr, wcc_data} / {wcc_data}. */
static CREATE3res *cres(struct nfs3_req *r)
{
	return &r->res.create;
}

static void created_reply(struct nfs3_req *r, int res)
{
	CREATE3res *cr = cres(r);
	if (res) {
		nfs3_wcc(r->n, &r->pre2, r->fileid2, &cr->CREATE3res_u.resfail.dir_wcc);
		nfs3_fail_errno(r, res);
		return;
	}
	CREATE3resok *ok = &cr->CREATE3res_u.resok;
	memset(ok, 0, sizeof(*ok)); /* resfail's dir_wcc overlapped obj */
	struct meta_attr at;
	if (meta_getattr(r->n->p.meta, r->fileid, &at) == 0) {
		nfs3_make_fh(r, r->fileid, at.gen, r->fh);
		ok->obj.handle_follows = 1;
		ok->obj.post_op_fh3_u.handle.data.data_len = NFS3_FH_LEN;
		ok->obj.post_op_fh3_u.handle.data.data_val = (char *)r->fh;
		nfs3_post_op_from(r->n, &at, &ok->obj_attributes);
	}
	nfs3_wcc(r->n, &r->pre2, r->fileid2, &ok->dir_wcc);
	nfs3_fail(r, NFS3_OK);
}

static void created_cb(void *arg, int res)
{
	created_reply(arg, res);
}

/* After the create record: the attributes meta_create does not take. */
static void created_then_setattr(void *arg, int res)
{
	struct nfs3_req *r = arg;
	if (res || !r->sa.mask) {
		created_reply(r, res);
		return;
	}
	if (meta_getattr(r->n->p.meta, r->fileid, &r->pre)) {
		created_reply(r, -EIO);
		return;
	}
	setattr_apply(r, created_cb);
}

/* Common checks on the parent directory (r->pre2/fileid2). */
static bool parent_ok(struct nfs3_req *r, const diropargs3 *where)
{
	CREATE3res *cr = cres(r);
	nfsstat3 st = nfs3_resolve(r, &where->dir, &r->fileid2, &r->pre2);
	if (st != NFS3_OK) {
		nfs3_fail(r, st);
		return false;
	}
	nfs3_pre_op(&r->pre2, &cr->CREATE3res_u.resfail.dir_wcc.before);
	nfs3_post_op_from(r->n, &r->pre2, &cr->CREATE3res_u.resfail.dir_wcc.after);
	if (r->ro) {
		nfs3_fail(r, NFS3ERR_ROFS);
		return false;
	}
	if (r->pre2.type != META_DIR) {
		nfs3_fail(r, NFS3ERR_NOTDIR);
		return false;
	}
	if (name_bad(where->name, &st)) {
		nfs3_fail(r, st);
		return false;
	}
	if (nfs3_snap_reserved(r, r->fileid2, where->name)) {
		nfs3_fail(r, NFS3ERR_EXIST); /* the snapshot directory is there */
		return false;
	}
	if (nfs3_may(&r->pre2, &r->cred, NFS3_MAY_WRITE | NFS3_MAY_EXEC, false)) {
		nfs3_fail(r, NFS3ERR_ACCES);
		return false;
	}
	return true;
}

/* Creates where->name of type t from sattr s (NULL: defaults) and replies. */
static void create_obj(struct nfs3_req *r, const diropargs3 *where, enum meta_type t,
		       const sattr3 *s, uint32_t def_mode, const char *target, uint32_t major,
		       uint32_t minor)
{
	if (s && nfs3_sattr(s, &r->sa)) {
		nfs3_fail(r, NFS3ERR_INVAL);
		return;
	}
	struct meta_create_args ca = {
	    .dir = r->fileid2,
	    .name = where->name,
	    .type = t,
	    .mode = (r->sa.mask & META_SET_MODE) ? r->sa.mode : def_mode,
	    .uid = r->cred.uid,
	    .gid = (r->pre2.mode & 02000) ? r->pre2.gid : r->cred.gid,
	    .rdev_major = major,
	    .rdev_minor = minor,
	    .symlink = target,
	    .exclusive = true,
	};
	if (t == META_DIR && (r->pre2.mode & 02000))
		ca.mode |= 02000;
	/* Ownership the client asks for is applied at creation, under chown's rules. */
	struct meta_attr owner = {.type = t, .uid = ca.uid, .gid = ca.gid, .mode = ca.mode};
	struct meta_setattr own = r->sa;
	own.mask &= META_SET_UID | META_SET_GID;
	int rc = nfs3_may_setattr(&owner, &r->cred, &own);
	if (rc) {
		nfs3_fail_errno(r, rc);
		return;
	}
	if (own.mask & META_SET_UID)
		ca.uid = own.uid;
	if (own.mask & META_SET_GID)
		ca.gid = own.gid;
	r->sa.mask &= ~(META_SET_MODE | META_SET_UID | META_SET_GID);
	if ((r->sa.mask & META_SET_SIZE) && (t != META_REG || r->sa.size == 0))
		r->sa.mask &= ~META_SET_SIZE;
	bool existed = false;
	rc = meta_create(r->n->p.meta, &ca, &r->fileid, &existed, created_then_setattr, r);
	if (rc)
		created_reply(r, rc);
}

void nfs3_proc_create(struct nfs3_req *r)
{
	CREATE3args *a = &r->args.create;
	if (!parent_ok(r, &a->where))
		return;
	uint64_t id;
	int found = meta_lookup(r->n->p.meta, r->fileid2, a->where.name, &id);
	if (found != 0 && found != -ENOENT) {
		nfs3_fail_errno(r, found);
		return;
	}
	switch (a->how.mode) {
	case UNCHECKED:
		if (found == 0) {
			/* An existing file: only a size (truncation) applies, as in knfsd. */
			r->fileid = id;
			if (meta_getattr(r->n->p.meta, id, &r->pre) || r->pre.type != META_REG) {
				nfs3_fail(r, NFS3ERR_EXIST);
				return;
			}
			if (nfs3_sattr(&a->how.createhow3_u.obj_attributes, &r->sa)) {
				nfs3_fail(r, NFS3ERR_INVAL);
				return;
			}
			r->sa.mask &= META_SET_SIZE;
			if (!r->sa.mask) {
				created_reply(r, 0);
				return;
			}
			int rc = nfs3_may_setattr(&r->pre, &r->cred, &r->sa);
			if (rc) {
				nfs3_fail_errno(r, rc);
				return;
			}
			setattr_apply(r, created_cb);
			return;
		}
		create_obj(r, &a->where, META_REG, &a->how.createhow3_u.obj_attributes, 0644, NULL,
			   0, 0);
		return;
	case GUARDED:
		if (found == 0) {
			nfs3_fail(r, NFS3ERR_EXIST);
			return;
		}
		create_obj(r, &a->where, META_REG, &a->how.createhow3_u.g_obj_attributes, 0644,
			   NULL, 0, 0);
		return;
	case EXCLUSIVE: {
		const uint8_t *v = (const uint8_t *)a->how.createhow3_u.verf;
		int64_t s1 = (int64_t)((uint32_t)v[0] << 24 | v[1] << 16 | v[2] << 8 | v[3]);
		int64_t s2 = (int64_t)((uint32_t)v[4] << 24 | v[5] << 16 | v[6] << 8 | v[7]);
		if (found == 0) {
			struct meta_attr at;
			if (meta_getattr(r->n->p.meta, id, &at) == 0 && at.type == META_REG &&
			    at.atime.sec == s1 && at.mtime.sec == s2 && at.atime.nsec == 0 &&
			    at.mtime.nsec == 0) {
				r->fileid = id; /* a retransmission of our own create */
				created_reply(r, 0);
			} else {
				nfs3_fail(r, NFS3ERR_EXIST);
			}
			return;
		}
		r->sa.mask = META_SET_ATIME | META_SET_MTIME;
		r->sa.atime.sec = s1;
		r->sa.mtime.sec = s2;
		create_obj(r, &a->where, META_REG, NULL, 0600, NULL, 0, 0);
		return;
	}
	default:
		nfs3_fail(r, NFS3ERR_INVAL);
	}
}

void nfs3_proc_mkdir(struct nfs3_req *r)
{
	MKDIR3args *a = &r->args.mkdir;
	if (parent_ok(r, &a->where))
		create_obj(r, &a->where, META_DIR, &a->attributes, 0755, NULL, 0, 0);
}

void nfs3_proc_symlink(struct nfs3_req *r)
{
	SYMLINK3args *a = &r->args.symlink;
	if (!parent_ok(r, &a->where))
		return;
	const char *t = a->symlink.symlink_data;
	if (!t || !*t) {
		nfs3_fail(r, NFS3ERR_INVAL);
		return;
	}
	if (strlen(t) > META_SYMLINK_MAX) {
		nfs3_fail(r, NFS3ERR_NAMETOOLONG);
		return;
	}
	sattr3 s = a->symlink.symlink_attributes;
	s.mode.set_it = 0; /* symlinks are 0777 */
	create_obj(r, &a->where, META_LNK, &s, 0777, t, 0, 0);
}

void nfs3_proc_mknod(struct nfs3_req *r)
{
	MKNOD3args *a = &r->args.mknod;
	if (!parent_ok(r, &a->where))
		return;
	mknoddata3 *w = &a->what;
	switch (w->type) {
	case NF3CHR:
	case NF3BLK: {
		devicedata3 *d =
		    w->type == NF3CHR ? &w->mknoddata3_u.chr_device : &w->mknoddata3_u.blk_device;
		if (r->cred.uid != 0) {
			nfs3_fail(r, NFS3ERR_PERM);
			return;
		}
		create_obj(r, &a->where, (enum meta_type)w->type, &d->dev_attributes, 0644, NULL,
			   d->spec.specdata1, d->spec.specdata2);
		return;
	}
	case NF3SOCK:
		create_obj(r, &a->where, META_SOCK, &w->mknoddata3_u.sock_attributes, 0644, NULL, 0,
			   0);
		return;
	case NF3FIFO:
		create_obj(r, &a->where, META_FIFO, &w->mknoddata3_u.pipe_attributes, 0644, NULL, 0,
			   0);
		return;
	default:
		nfs3_fail(r, NFS3ERR_BADTYPE);
	}
}

/* ---- REMOVE, RMDIR ---- */

static void removed(void *arg, int res)
{
	struct nfs3_req *r = arg;
	nfs3_wcc(r->n, &r->pre2, r->fileid2, &r->res.remove.REMOVE3res_u.resok.dir_wcc);
	if (res) {
		nfs3_fail_errno(r, res);
		return;
	}
	delete_volume(r->n, r->freed_reg);
	nfs3_fail(r, NFS3_OK);
}

static void remove_common(struct nfs3_req *r, const diropargs3 *obj, bool rmdir)
{
	/* REMOVE3res and RMDIR3res share one layout. */
	wcc_data *wcc = &r->res.remove.REMOVE3res_u.resfail.dir_wcc;
	nfsstat3 st = nfs3_resolve(r, &obj->dir, &r->fileid2, &r->pre2);
	if (st != NFS3_OK) {
		nfs3_fail(r, st);
		return;
	}
	nfs3_pre_op(&r->pre2, &wcc->before);
	nfs3_post_op_from(r->n, &r->pre2, &wcc->after);
	if (r->ro) {
		nfs3_fail(r, NFS3ERR_ROFS);
		return;
	}
	if (r->pre2.type != META_DIR) {
		nfs3_fail(r, NFS3ERR_NOTDIR);
		return;
	}
	if (name_bad(obj->name, &st)) {
		nfs3_fail(r, st);
		return;
	}
	if (!strcmp(obj->name, ".") || !strcmp(obj->name, "..")) {
		nfs3_fail(r, rmdir && !strcmp(obj->name, "..") ? NFS3ERR_NOTEMPTY : NFS3ERR_INVAL);
		return;
	}
	if (nfs3_snap_reserved(r, r->fileid2, obj->name)) {
		nfs3_fail(r, NFS3ERR_ACCES);
		return;
	}
	uint64_t vid;
	struct meta_attr victim;
	int rc = meta_lookup(r->n->p.meta, r->fileid2, obj->name, &vid);
	if (rc == 0)
		rc = meta_getattr(r->n->p.meta, vid, &victim);
	if (rc) {
		nfs3_fail_errno(r, rc);
		return;
	}
	rc = nfs3_may_delete(&r->pre2, &victim, &r->cred);
	if (rc) {
		nfs3_fail_errno(r, rc);
		return;
	}
	rc = meta_remove(r->n->p.meta, r->fileid2, obj->name, rmdir, &r->freed_reg, removed, r);
	if (rc)
		nfs3_fail_errno(r, rc);
}

void nfs3_proc_remove(struct nfs3_req *r)
{
	remove_common(r, &r->args.remove.object, false);
}

void nfs3_proc_rmdir(struct nfs3_req *r)
{
	remove_common(r, &r->args.rmdir.object, true);
}

/* ---- RENAME ---- */

static void renamed(void *arg, int res)
{
	struct nfs3_req *r = arg;
	RENAME3resok *ok = &r->res.rename.RENAME3res_u.resok;
	nfs3_wcc(r->n, &r->pre, r->fileid, &ok->fromdir_wcc);
	nfs3_wcc(r->n, &r->pre2, r->fileid2, &ok->todir_wcc);
	if (res) {
		nfs3_fail_errno(r, res);
		return;
	}
	delete_volume(r->n, r->freed_reg);
	nfs3_fail(r, NFS3_OK);
}

void nfs3_proc_rename(struct nfs3_req *r)
{
	RENAME3args *a = &r->args.rename;
	RENAME3resfail *f = &r->res.rename.RENAME3res_u.resfail;
	nfsstat3 st = nfs3_resolve(r, &a->from.dir, &r->fileid, &r->pre);
	if (st != NFS3_OK) {
		nfs3_fail(r, st);
		return;
	}
	nfs3_wcc(r->n, &r->pre, r->fileid, &f->fromdir_wcc);
	st = nfs3_resolve(r, &a->to.dir, &r->fileid2, &r->pre2);
	if (st != NFS3_OK) {
		nfs3_fail(r, st);
		return;
	}
	nfs3_wcc(r->n, &r->pre2, r->fileid2, &f->todir_wcc);
	if (r->ro) {
		nfs3_fail(r, NFS3ERR_ROFS);
		return;
	}
	if (r->pre.type != META_DIR || r->pre2.type != META_DIR) {
		nfs3_fail(r, NFS3ERR_NOTDIR);
		return;
	}
	if (name_bad(a->from.name, &st) || name_bad(a->to.name, &st)) {
		nfs3_fail(r, st);
		return;
	}
	if (!strcmp(a->from.name, ".") || !strcmp(a->from.name, "..") || !strcmp(a->to.name, ".") ||
	    !strcmp(a->to.name, "..")) {
		nfs3_fail(r, NFS3ERR_INVAL);
		return;
	}
	if (nfs3_snap_reserved(r, r->fileid, a->from.name) ||
	    nfs3_snap_reserved(r, r->fileid2, a->to.name)) {
		nfs3_fail(r, NFS3ERR_ACCES);
		return;
	}
	uint64_t sid, tid;
	struct meta_attr src, tgt;
	int rc = meta_lookup(r->n->p.meta, r->fileid, a->from.name, &sid);
	if (rc == 0)
		rc = meta_getattr(r->n->p.meta, sid, &src);
	if (rc) {
		nfs3_fail_errno(r, rc);
		return;
	}
	rc = nfs3_may_delete(&r->pre, &src, &r->cred);
	if (!rc && nfs3_may(&r->pre2, &r->cred, NFS3_MAY_WRITE | NFS3_MAY_EXEC, false))
		rc = -EACCES;
	if (!rc && meta_lookup(r->n->p.meta, r->fileid2, a->to.name, &tid) == 0 &&
	    meta_getattr(r->n->p.meta, tid, &tgt) == 0)
		rc = nfs3_may_delete(&r->pre2, &tgt, &r->cred);
	/* A directory changing parents rewrites its "..": write permission on it. */
	if (!rc && src.type == META_DIR && r->fileid != r->fileid2 &&
	    nfs3_may(&src, &r->cred, NFS3_MAY_WRITE, false))
		rc = -EACCES;
	if (rc) {
		nfs3_fail_errno(r, rc);
		return;
	}
	rc = meta_rename(r->n->p.meta, r->fileid, a->from.name, r->fileid2, a->to.name,
			 &r->freed_reg, renamed, r);
	if (rc)
		nfs3_fail_errno(r, rc);
}

/* ---- LINK ---- */

static void linked(void *arg, int res)
{
	struct nfs3_req *r = arg;
	LINK3resok *ok = &r->res.link.LINK3res_u.resok;
	nfs3_post_op(r->n, r->fileid, &ok->file_attributes);
	nfs3_wcc(r->n, &r->pre2, r->fileid2, &ok->linkdir_wcc);
	if (res)
		nfs3_fail_errno(r, res);
	else
		nfs3_fail(r, NFS3_OK);
}

void nfs3_proc_link(struct nfs3_req *r)
{
	LINK3args *a = &r->args.link;
	LINK3resfail *f = &r->res.link.LINK3res_u.resfail;
	nfsstat3 st = nfs3_resolve(r, &a->file, &r->fileid, &r->pre);
	if (st != NFS3_OK) {
		nfs3_fail(r, st);
		return;
	}
	nfs3_post_op_from(r->n, &r->pre, &f->file_attributes);
	st = nfs3_resolve(r, &a->link.dir, &r->fileid2, &r->pre2);
	if (st != NFS3_OK) {
		nfs3_fail(r, st);
		return;
	}
	nfs3_wcc(r->n, &r->pre2, r->fileid2, &f->linkdir_wcc);
	if (r->ro) {
		nfs3_fail(r, NFS3ERR_ROFS);
		return;
	}
	if (r->pre2.type != META_DIR) {
		nfs3_fail(r, NFS3ERR_NOTDIR);
		return;
	}
	if (r->pre.type == META_DIR) {
		nfs3_fail(r, NFS3ERR_ISDIR);
		return;
	}
	if (name_bad(a->link.name, &st)) {
		nfs3_fail(r, st);
		return;
	}
	if (nfs3_snap_reserved(r, r->fileid2, a->link.name)) {
		nfs3_fail(r, NFS3ERR_EXIST);
		return;
	}
	if (nfs3_may(&r->pre2, &r->cred, NFS3_MAY_WRITE | NFS3_MAY_EXEC, false)) {
		nfs3_fail(r, NFS3ERR_ACCES);
		return;
	}
	int rc = meta_link(r->n->p.meta, r->fileid, r->fileid2, a->link.name, linked, r);
	if (rc)
		nfs3_fail_errno(r, rc);
}

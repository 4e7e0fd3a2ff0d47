/*
 * nfs3_io: READ, WRITE, COMMIT — the data path.
 *
 * WRITE UNSTABLE: filevol_write of the data (pointing into the call's record) in parallel
 * with meta_note_write(end); the reply waits for both, so the data is on every in-sync
 * replica and a size extension is recorded before the client hears of it; we still answer
 * committed = UNSTABLE (not flushed) and let COMMIT flush. DATA_SYNC/FILE_SYNC: a FUA write
 * and meta_note_write followed by meta_sync; answered FILE_SYNC. The verifier is the meta's
 * (stable across restarts, see nfs3.h).
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "nfsgw/nfs3_priv.h"

/* ---- READ ---- */

static void read_done(void *arg, int res)
{
	struct nfs3_req *r = arg;
	char *buf = r->buf;
	READ3resok *ok = &r->res.read.READ3res_u.resok;
	nfs3_post_op(r->n, r->fileid, &ok->file_attributes);
	if (res == -ENOENT)
		res = -EIO; /* a frozen file without its volume snapshot: never "no such file" */
	if (res) {
		nfs3_fail_errno(r, res);
		return;
	}
	r->buf = NULL; /* handed to the transport */
	nfs3_reply_read(r, buf, ok->count);
}

void nfs3_proc_read(struct nfs3_req *r)
{
	READ3args *a = &r->args.read;
	READ3resok *ok = &r->res.read.READ3res_u.resok;
	struct meta_attr at;
	nfsstat3 st = nfs3_resolve(r, &a->file, &r->fileid, &at);
	if (st != NFS3_OK) {
		nfs3_fail(r, st);
		return;
	}
	if (at.type != META_REG) {
		nfs3_post_op_from(r->n, &at, &ok->file_attributes);
		nfs3_fail(r, at.type == META_DIR ? NFS3ERR_ISDIR : NFS3ERR_INVAL);
		return;
	}
	/* Exec permission is enough: a client executing a file reads it. */
	if (nfs3_may(&at, &r->cred, NFS3_MAY_READ, true) &&
	    nfs3_may(&at, &r->cred, NFS3_MAY_EXEC, false)) {
		nfs3_post_op_from(r->n, &at, &ok->file_attributes);
		nfs3_fail(r, NFS3ERR_ACCES);
		return;
	}
	uint32_t len = a->count > NFS3_MAX_IO ? NFS3_MAX_IO : a->count;
	if (a->offset >= at.size)
		len = 0;
	else if (at.size - a->offset < len)
		len = (uint32_t)(at.size - a->offset);
	ok->count = len;
	ok->eof = a->offset + len >= at.size;
	if (len == 0) {
		nfs3_post_op_from(r->n, &at, &ok->file_attributes);
		nfs3_reply_read(r, NULL, 0);
		return;
	}
	void *buf;
	if (posix_memalign(&buf, 4096, ((size_t)len + 4095) & ~(size_t)4095)) {
		nfs3_fail(r, NFS3ERR_SERVERFAULT);
		return;
	}
	r->buf = buf;
	int rc;
	if (nfs3_is_snap(r->fileid)) {
		rc = nfs3_snap_read(r, r->fileid, a->offset, len, buf, read_done);
		if (rc == -ENOENT)
			rc = -EIO; /* the frozen file exists: its data must too */
	} else {
		meta_volume_name(r->n->p.meta, r->fileid, r->vol, sizeof(r->vol));
		rc = filevol_read(r->n->p.fv, r->vol, a->offset, len, buf, read_done, r);
	}
	if (rc)
		nfs3_fail_errno(r, rc);
}

/* ---- WRITE ---- */

static void write_finish(struct nfs3_req *r)
{
	WRITE3args *a = &r->args.write;
	WRITE3res *res = &r->res.write;
	nfs3_wcc(r->n, &r->pre, r->fileid, &res->WRITE3res_u.resok.file_wcc);
	if (r->err) {
		nfs3_fail_errno(r, r->err);
		return;
	}
	res->WRITE3res_u.resok.count = (count3)r->sa.size;
	res->WRITE3res_u.resok.committed = a->stable == UNSTABLE ? UNSTABLE : FILE_SYNC;
	memcpy(res->WRITE3res_u.resok.verf, r->n->verf, NFS3_WRITEVERFSIZE);
	nfs3_fail(r, NFS3_OK);
}

static void write_part(void *arg, int res)
{
	struct nfs3_req *r = arg;
	if (res && !r->err)
		r->err = res;
	if (--r->pending == 0)
		write_finish(r);
}

static void write_meta_noted(void *arg, int res)
{
	struct nfs3_req *r = arg;
	if (res == 0 && r->args.write.stable != UNSTABLE) {
		int rc = meta_sync(r->n->p.meta, write_part, r);
		if (rc == 0)
			return;
		res = rc;
	}
	write_part(r, res);
}

/* A refusal before any I/O: the file is unchanged, before and after are the same. */
static void write_refuse(struct nfs3_req *r, nfsstat3 st)
{
	wcc_data *w = &r->res.write.WRITE3res_u.resfail.file_wcc;
	nfs3_pre_op(&r->pre, &w->before);
	nfs3_post_op_from(r->n, &r->pre, &w->after);
	nfs3_fail(r, st);
}

void nfs3_proc_write(struct nfs3_req *r)
{
	WRITE3args *a = &r->args.write;
	nfsstat3 st = nfs3_resolve(r, &a->file, &r->fileid, &r->pre);
	if (st != NFS3_OK) {
		nfs3_fail(r, st);
		return;
	}
	if (r->ro) {
		write_refuse(r, NFS3ERR_ROFS);
		return;
	}
	if (r->pre.type != META_REG) {
		write_refuse(r, r->pre.type == META_DIR ? NFS3ERR_ISDIR : NFS3ERR_INVAL);
		return;
	}
	if (nfs3_may(&r->pre, &r->cred, NFS3_MAY_WRITE, true)) {
		write_refuse(r, NFS3ERR_ACCES);
		return;
	}
	if (a->data.data_len != a->count ||
	    (a->stable != UNSTABLE && a->stable != DATA_SYNC && a->stable != FILE_SYNC)) {
		write_refuse(r, NFS3ERR_INVAL);
		return;
	}
	uint32_t len = a->count > NFS3_MAX_IO ? NFS3_MAX_IO : a->count;
	if (a->offset > FILEVOL_MAX_SIZE || FILEVOL_MAX_SIZE - a->offset < len) {
		write_refuse(r, NFS3ERR_FBIG);
		return;
	}
	r->sa.size = len; /* the count we answer */
	r->pending = 1;	  /* held until both parts are issued */
	if (len) {
		meta_volume_name(r->n->p.meta, r->fileid, r->vol, sizeof(r->vol));
		uint32_t flags = a->stable == UNSTABLE ? 0 : BDEV_FUA;
		r->pending++;
		int rc = filevol_write(r->n->p.fv, r->vol, a->offset, len, a->data.data_val, flags,
				       write_part, r);
		if (rc) {
			r->pending--;
			r->err = rc;
		}
	}
	if (!r->err) {
		r->pending++;
		int rc =
		    meta_note_write(r->n->p.meta, r->fileid, a->offset + len, write_meta_noted, r);
		if (rc) {
			r->pending--;
			r->err = rc;
		}
	}
	write_part(r, 0);
}

/* ---- COMMIT ---- */

static void commit_finish(struct nfs3_req *r)
{
	COMMIT3res *res = &r->res.commit;
	nfs3_wcc(r->n, &r->pre, r->fileid, &res->COMMIT3res_u.resok.file_wcc);
	if (r->err) {
		nfs3_fail_errno(r, r->err);
		return;
	}
	memcpy(res->COMMIT3res_u.resok.verf, r->n->verf, NFS3_WRITEVERFSIZE);
	nfs3_fail(r, NFS3_OK);
}

static void commit_part(void *arg, int res)
{
	struct nfs3_req *r = arg;
	if (res && !r->err)
		r->err = res;
	if (--r->pending == 0)
		commit_finish(r);
}

void nfs3_proc_commit(struct nfs3_req *r)
{
	COMMIT3args *a = &r->args.commit;
	nfsstat3 st = nfs3_resolve(r, &a->file, &r->fileid, &r->pre);
	if (st != NFS3_OK) {
		nfs3_fail(r, st);
		return;
	}
	if (r->pre.type == META_DIR) {
		nfs3_wcc(r->n, &r->pre, r->fileid, &r->res.commit.COMMIT3res_u.resfail.file_wcc);
		nfs3_fail(r, NFS3ERR_ISDIR);
		return;
	}
	r->pending = 1;
	if (r->pre.type == META_REG) {
		meta_volume_name(r->n->p.meta, r->fileid, r->vol, sizeof(r->vol));
		r->pending++;
		int rc = filevol_flush(r->n->p.fv, r->vol, commit_part, r);
		if (rc) {
			r->pending--;
			r->err = rc;
		}
	}
	r->pending++;
	int rc = meta_sync(r->n->p.meta, commit_part, r);
	if (rc) {
		r->pending--;
		if (!r->err)
			r->err = rc;
	}
	commit_part(r, 0);
}

/*
 * nfs3: program registration, the dispatch table and the common prologue of every call
 * (argument decoding, handle -> export -> client check -> squashed credentials ->
 * fsid/fileid/generation check) and epilogue (reply, freeing). See nfs3.h, nfs3_priv.h.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "nfsgw/nfs3_priv.h"

struct proc_ent {
	zdrproc_t args, res;
	size_t args_size;
	nfs3_proc_fn fn;
};

#define P(ARGS, RES, FN)                                                                           \
	{                                                                                          \
		NFS3_ZDR(zdr_##ARGS), NFS3_ZDR(zdr_##RES), sizeof(ARGS), FN                        \
	}

static const struct proc_ent procs[NFS3_NPROCS] = {
    {NULL, NULL, 0, NULL},
    P(GETATTR3args, GETATTR3res, nfs3_proc_getattr),
    P(SETATTR3args, SETATTR3res, nfs3_proc_setattr),
    P(LOOKUP3args, LOOKUP3res, nfs3_proc_lookup),
    P(ACCESS3args, ACCESS3res, nfs3_proc_access),
    P(READLINK3args, READLINK3res, nfs3_proc_readlink),
    P(READ3args, READ3res, nfs3_proc_read),
    P(WRITE3args, WRITE3res, nfs3_proc_write),
    P(CREATE3args, CREATE3res, nfs3_proc_create),
    P(MKDIR3args, MKDIR3res, nfs3_proc_mkdir),
    P(SYMLINK3args, SYMLINK3res, nfs3_proc_symlink),
    P(MKNOD3args, MKNOD3res, nfs3_proc_mknod),
    P(REMOVE3args, REMOVE3res, nfs3_proc_remove),
    P(RMDIR3args, RMDIR3res, nfs3_proc_rmdir),
    P(RENAME3args, RENAME3res, nfs3_proc_rename),
    P(LINK3args, LINK3res, nfs3_proc_link),
    P(READDIR3args, READDIR3res, nfs3_proc_readdir),
    P(READDIRPLUS3args, READDIRPLUS3res, nfs3_proc_readdirplus),
    P(FSSTAT3args, FSSTAT3res, nfs3_proc_fsstat),
    P(FSINFO3args, FSINFO3res, nfs3_proc_fsinfo),
    P(PATHCONF3args, PATHCONF3res, nfs3_proc_pathconf),
    P(COMMIT3args, COMMIT3res, nfs3_proc_commit),
};

nfsstat3 nfs3_status(int err)
{
	switch (-err) {
	case 0:
		return NFS3_OK;
	case EPERM:
		return NFS3ERR_PERM;
	case ENOENT:
		return NFS3ERR_NOENT;
	case ENXIO:
		return NFS3ERR_NXIO;
	case EACCES:
		return NFS3ERR_ACCES;
	case EEXIST:
		return NFS3ERR_EXIST;
	case EXDEV:
		return NFS3ERR_XDEV;
	case ENODEV:
		return NFS3ERR_NODEV;
	case ENOTDIR:
		return NFS3ERR_NOTDIR;
	case EISDIR:
		return NFS3ERR_ISDIR;
	case EINVAL:
		return NFS3ERR_INVAL;
	case EFBIG:
		return NFS3ERR_FBIG;
	case ENOSPC:
		return NFS3ERR_NOSPC;
	case EROFS:
		return NFS3ERR_ROFS;
	case EMLINK:
		return NFS3ERR_MLINK;
	case ENAMETOOLONG:
		return NFS3ERR_NAMETOOLONG;
	case ENOTEMPTY:
		return NFS3ERR_NOTEMPTY;
	case EDQUOT:
		return NFS3ERR_DQUOT;
	case EOPNOTSUPP:
		return NFS3ERR_NOTSUPP;
	case EAGAIN:
		return NFS3ERR_JUKEBOX;
	case ENOMEM:
		return NFS3ERR_SERVERFAULT;
	default:
		/* EIO, ETIMEDOUT, ESTALE (a fenced backend; normally dropped instead) and
		 * anything unexpected: never claim success, never a misleading specific error. */
		return NFS3ERR_IO;
	}
}

static void nfs3_destroy(struct nfs3 *n)
{
	free(n);
}

static void req_free(struct nfs3_req *r)
{
	struct nfs3 *n = r->n;
	if (r->scratch_free)
		r->scratch_free(r->scratch);
	free(r->buf);
	/* Hold callbacks run here; our own inflight count keeps n alive through them. */
	nfs3_hold_finished(r);
	free(r);
	n->inflight--;
	if (n->dying && n->inflight == 0)
		nfs3_destroy(n);
}

static void args_release(struct nfs3_req *r)
{
	if (r->args_live) {
		rpc_args_free(r->c, procs[r->proc].args, &r->args);
		r->args_live = false;
	}
}

void nfs3_reply(struct nfs3_req *r)
{
	args_release(r);
	rpc_reply(r->c, procs[r->proc].res, &r->res);
	req_free(r);
}

void nfs3_fail(struct nfs3_req *r, nfsstat3 st)
{
	r->res.status = st;
	nfs3_reply(r);
}

void nfs3_drop(struct nfs3_req *r)
{
	args_release(r);
	rpc_drop(r->c);
	req_free(r);
}

void nfs3_fail_errno(struct nfs3_req *r, int err)
{
	if (err == -ESTALE) {
		fprintf(stderr, "nfsgw: nfs3 proc %u: backend fenced (ESTALE), call dropped\n",
			r->proc);
		nfs3_drop(r);
		return;
	}
	nfs3_fail(r, nfs3_status(err));
}

/* READ's head: everything up to and including the data's length word (rpc_reply_data). */
static uint32_t zdr_read_head(ZDR *z, READ3res *res)
{
	if (!zdr_nfsstat3(z, &res->status))
		return 0;
	READ3resok *ok = &res->READ3res_u.resok;
	return zdr_post_op_attr(z, &ok->file_attributes) && zdr_count3(z, &ok->count) &&
	       zdr_bool(z, (bool_t *)&ok->eof) && zdr_u_int(z, &ok->data.data_len);
}

void nfs3_reply_read(struct nfs3_req *r, char *buf, uint32_t len)
{
	args_release(r);
	r->res.read.READ3res_u.resok.data.data_len = len;
	rpc_reply_data(r->c, NFS3_ZDR(zdr_read_head), &r->res, buf, len, free, buf);
	req_free(r);
}

static bool port_reserved(const struct sockaddr_storage *ss)
{
	if (ss->ss_family == AF_INET)
		return ntohs(((const struct sockaddr_in *)ss)->sin_port) < 1024;
	if (ss->ss_family == AF_INET6)
		return ntohs(((const struct sockaddr_in6 *)ss)->sin6_port) < 1024;
	return false;
}

static nfsstat3 bind_export(struct nfs3_req *r, uint32_t eid)
{
	struct nfs3 *n = r->n;
	const struct exports *ex = n->p.exports ? n->p.exports(n->p.ctx) : NULL;
	const struct export *e = ex ? exports_find_id(ex, eid) : NULL;
	if (!e)
		return NFS3ERR_STALE; /* the export went away */
	const struct export_client *cl = export_match(e, &r->c->peer);
	if (!cl || (cl->secure && !port_reserved(&r->c->peer)))
		return NFS3ERR_ACCES;
	const struct rpc_cred *rc = &r->c->cred;
	struct nfs3_cred *cr = &r->cred;
	cr->uid = rc->uid;
	cr->gid = rc->gid;
	cr->ngids = rc->ngids > RPC_MAX_GIDS ? RPC_MAX_GIDS : rc->ngids;
	memcpy(cr->gids, rc->gids, sizeof(cr->gids));
	export_squash_ids(cl, rc->flavor, &cr->uid, &cr->gid, &cr->ngids, cr->gids);
	if (cr->ngids > RPC_MAX_GIDS)
		cr->ngids = RPC_MAX_GIDS;
	r->ro = !cl->rw;
	r->export_id = eid;
	r->have_export = true;
	return NFS3_OK;
}

nfsstat3 nfs3_resolve(struct nfs3_req *r, const nfs_fh3 *fh, uint64_t *fileid,
		      struct meta_attr *attr)
{
	uint32_t eid;
	uint64_t fsid8, id, gen;
	if (nfs3_fh_decode((const uint8_t *)fh->data.data_val, fh->data.data_len, &eid, &fsid8, &id,
			   &gen))
		return NFS3ERR_BADHANDLE;
	if (fsid8 != r->n->fsid8)
		return NFS3ERR_STALE;
	if (r->have_export) {
		if (eid != r->export_id)
			return NFS3ERR_XDEV;
	} else {
		nfsstat3 st = bind_export(r, eid);
		if (st != NFS3_OK)
			return st;
	}
	struct meta_attr a;
	if (nfs3_getattr(r, id, &a) || a.gen != gen)
		return NFS3ERR_STALE;
	/* Snapshots never change (nfs3_snap.c). */
	if (nfs3_is_snap(id) && nfs3_proc_changes(r->proc))
		return NFS3ERR_ROFS;
	*fileid = id;
	if (attr)
		*attr = a;
	return NFS3_OK;
}

uint64_t nfs3_export_root(struct nfs3_req *r)
{
	struct nfs3 *n = r->n;
	const struct exports *ex = n->p.exports ? n->p.exports(n->p.ctx) : NULL;
	const struct export *e = ex ? exports_find_id(ex, r->export_id) : NULL;
	if (!e)
		return 0;
	uint64_t id = META_ROOT;
	const char *p = e->path;
	while (*p) {
		while (*p == '/')
			p++;
		size_t len = strcspn(p, "/");
		if (!len)
			break;
		char name[META_NAME_MAX + 1];
		if (len > META_NAME_MAX)
			return 0;
		memcpy(name, p, len);
		name[len] = 0;
		if (meta_lookup(n->p.meta, id, name, &id))
			return 0;
		p += len;
	}
	return id;
}

void nfs3_make_fh(struct nfs3_req *r, uint64_t fileid, uint64_t gen, uint8_t *out)
{
	nfs3_fh_encode(out, r->export_id, r->n->fsid, fileid, gen);
}

static void dispatch(void *ctx, struct rpc_call *c)
{
	struct nfs3 *n = ctx;
	if (c->proc >= NFS3_NPROCS) {
		rpc_reply_accept(c, RPC_PROC_UNAVAIL);
		return;
	}
	if (c->proc == 0) {
		rpc_reply(c, NULL, NULL);
		return;
	}
	struct nfs3_req *r = calloc(1, sizeof(*r));
	if (!r) {
		rpc_reply_accept(c, RPC_SYSTEM_ERR);
		return;
	}
	const struct proc_ent *pe = &procs[c->proc];
	if (rpc_decode_args(c, pe->args, &r->args, pe->args_size)) {
		free(r);
		rpc_reply_accept(c, RPC_GARBAGE_ARGS);
		return;
	}
	struct meta_info mi;
	meta_info(n->p.meta, &mi);
	memcpy(n->fsid, mi.fsid, sizeof(n->fsid));
	memcpy(n->verf, mi.verifier, sizeof(n->verf));
	n->fsid8 = nfs3_fsid8(mi.fsid);
	n->files = mi.files;
	r->n = n;
	r->c = c;
	r->proc = c->proc;
	r->args_live = true;
	n->inflight++;
	if (nfs3_hold_admit(r))
		nfs3_run(r);
}

void nfs3_run(struct nfs3_req *r)
{
	procs[r->proc].fn(r);
}

int nfs3_prog_new(struct rpc_server *s, const struct nfs3_params *p, struct nfs3 **out)
{
	if (!s || !p || !p->meta || !p->exports || !out)
		return -EINVAL;
	struct nfs3 *n = calloc(1, sizeof(*n));
	if (!n)
		return -ENOMEM;
	n->p = *p;
	struct rpc_program prog = {
	    .prog = NFS3_PROG, .vers_low = 3, .vers_high = 3, .dispatch = dispatch, .ctx = n};
	int rc = rpc_server_add_program(s, &prog);
	if (rc) {
		free(n);
		return rc;
	}
	*out = n;
	return 0;
}

void nfs3_prog_free(struct nfs3 *n)
{
	if (!n)
		return;
	/* Held calls would wait for a release that may never come: the clients retransmit. */
	n->holds = 0;
	nfs3_hold_drop_all(n);
	if (n->inflight) {
		n->dying = true; /* the last request frees it */
		return;
	}
	nfs3_destroy(n);
}

/*
 * nfs3_fs: GETATTR, ACCESS, READLINK, FSSTAT, FSINFO, PATHCONF (NULL is answered by the
 * dispatcher). All synchronous: they only read the in-memory meta.
 *
 * FSSTAT: the cluster's free space is not cheaply known on the call path (it lives on the
 * nodes), so it reports constants: 1 PiB total/free and 2^32 files less those in use.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "nfsgw/nfs3_priv.h"

#define FSSTAT_BYTES (1ull << 50)
#define FSSTAT_FILES (1ull << 32)

void nfs3_proc_getattr(struct nfs3_req *r)
{
	uint64_t id;
	struct meta_attr a;
	nfsstat3 st = nfs3_resolve(r, &r->args.getattr.object, &id, &a);
	if (st != NFS3_OK) {
		nfs3_fail(r, st);
		return;
	}
	nfs3_fattr(r->n, &a, &r->res.getattr.GETATTR3res_u.resok.obj_attributes);
	nfs3_fail(r, NFS3_OK);
}

void nfs3_proc_access(struct nfs3_req *r)
{
	uint64_t id;
	struct meta_attr a;
	nfsstat3 st = nfs3_resolve(r, &r->args.access.object, &id, &a);
	if (st != NFS3_OK) {
		nfs3_fail(r, st);
		return;
	}
	ACCESS3resok *ok = &r->res.access.ACCESS3res_u.resok;
	nfs3_post_op_from(r->n, &a, &ok->obj_attributes);
	ok->access =
	    nfs3_access_bits(&a, &r->cred, r->ro || nfs3_is_snap(id), r->args.access.access);
	nfs3_fail(r, NFS3_OK);
}

void nfs3_proc_readlink(struct nfs3_req *r)
{
	uint64_t id;
	struct meta_attr a;
	nfsstat3 st = nfs3_resolve(r, &r->args.readlink.symlink, &id, &a);
	if (st != NFS3_OK) {
		nfs3_fail(r, st);
		return;
	}
	nfs3_post_op_from(r->n, &a, &r->res.readlink.READLINK3res_u.resfail.symlink_attributes);
	if (a.type != META_LNK) {
		nfs3_fail(r, NFS3ERR_INVAL);
		return;
	}
	r->buf = malloc(META_SYMLINK_MAX + 1);
	if (!r->buf) {
		nfs3_fail(r, NFS3ERR_SERVERFAULT);
		return;
	}
	int rc = meta_readlink(r->n->p.meta, id, r->buf, META_SYMLINK_MAX + 1);
	if (rc) {
		nfs3_fail_errno(r, rc);
		return;
	}
	r->res.readlink.READLINK3res_u.resok.data = r->buf;
	nfs3_fail(r, NFS3_OK);
}

void nfs3_proc_fsstat(struct nfs3_req *r)
{
	uint64_t id;
	struct meta_attr a;
	nfsstat3 st = nfs3_resolve(r, &r->args.fsstat.fsroot, &id, &a);
	if (st != NFS3_OK) {
		nfs3_fail(r, st);
		return;
	}
	FSSTAT3resok *ok = &r->res.fsstat.FSSTAT3res_u.resok;
	nfs3_post_op_from(r->n, &a, &ok->obj_attributes);
	ok->tbytes = ok->fbytes = ok->abytes = FSSTAT_BYTES;
	ok->tfiles = FSSTAT_FILES;
	ok->ffiles = ok->afiles = r->n->files < FSSTAT_FILES ? FSSTAT_FILES - r->n->files : 0;
	ok->invarsec = 0;
	nfs3_fail(r, NFS3_OK);
}

void nfs3_proc_fsinfo(struct nfs3_req *r)
{
	uint64_t id;
	struct meta_attr a;
	nfsstat3 st = nfs3_resolve(r, &r->args.fsinfo.fsroot, &id, &a);
	if (st != NFS3_OK) {
		nfs3_fail(r, st);
		return;
	}
	FSINFO3resok *ok = &r->res.fsinfo.FSINFO3res_u.resok;
	nfs3_post_op_from(r->n, &a, &ok->obj_attributes);
	ok->rtmax = ok->rtpref = NFS3_MAX_IO;
	ok->wtmax = ok->wtpref = NFS3_MAX_IO;
	ok->rtmult = ok->wtmult = 4096;
	ok->dtpref = 64u << 10;
	ok->maxfilesize = FILEVOL_MAX_SIZE;
	ok->time_delta.seconds = 0;
	ok->time_delta.nseconds = 1;
	ok->properties = FSF3_LINK | FSF3_SYMLINK | FSF3_HOMOGENEOUS | FSF3_CANSETTIME;
	nfs3_fail(r, NFS3_OK);
}

void nfs3_proc_pathconf(struct nfs3_req *r)
{
	uint64_t id;
	struct meta_attr a;
	nfsstat3 st = nfs3_resolve(r, &r->args.pathconf.object, &id, &a);
	if (st != NFS3_OK) {
		nfs3_fail(r, st);
		return;
	}
	PATHCONF3resok *ok = &r->res.pathconf.PATHCONF3res_u.resok;
	nfs3_post_op_from(r->n, &a, &ok->obj_attributes);
	ok->linkmax = 65000;
	ok->name_max = META_NAME_MAX;
	ok->no_trunc = 1;
	ok->chown_restricted = 1;
	ok->case_insensitive = 0;
	ok->case_preserving = 1;
	nfs3_fail(r, NFS3_OK);
}

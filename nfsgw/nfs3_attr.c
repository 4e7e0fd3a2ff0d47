/*
 * nfs3_attr: meta_attr -> fattr3 / wcc / post_op conversions, sattr3 -> meta_setattr, and
 * the POSIX permission decisions every procedure applies (pure functions, unit-tested).
 */
#include <errno.h>
#include <string.h>

#include "nfsgw/nfs3_priv.h"

uint64_t nfs3_fsid8(const uint8_t fsid[16])
{
	uint64_t v = 0;
	for (int i = 0; i < 8; i++)
		v = v << 8 | fsid[i];
	return v;
}

/* nfstime3 seconds are unsigned 32-bit: clamp what does not fit. */
static nfstime3 to_nfstime(struct meta_time t)
{
	nfstime3 o;
	if (t.sec < 0) {
		o.seconds = 0;
		o.nseconds = 0;
	} else if (t.sec > UINT32_MAX) {
		o.seconds = UINT32_MAX;
		o.nseconds = 999999999;
	} else {
		o.seconds = (uint32_t)t.sec;
		o.nseconds = t.nsec;
	}
	return o;
}

void nfs3_fattr(struct nfs3 *n, const struct meta_attr *a, fattr3 *out)
{
	memset(out, 0, sizeof(*out));
	out->type = (ftype3)a->type;
	out->mode = a->mode & 07777;
	out->nlink = a->nlink;
	out->uid = a->uid;
	out->gid = a->gid;
	out->size = a->size;
	if (a->type == META_REG && (a->fileid & META_SNAP_BIT)) {
		out->used = a->size; /* shared with the live file: not cheaply known */
	} else if (a->type == META_REG && n && n->p.fv) {
		char vol[64];
		meta_volume_name(n->p.meta, a->fileid, vol, sizeof(vol));
		out->used = filevol_used(n->p.fv, vol);
	} else if (a->type == META_DIR) {
		out->used = 4096;
	} else if (a->type == META_LNK && a->size == 0 && n) {
		/* A symlink's size is its target's length (lstat, readlink buffer sizing). */
		char t[META_SYMLINK_MAX + 1];
		if (meta_readlink(n->p.meta, a->fileid, t, sizeof(t)) == 0)
			out->size = strlen(t);
	}
	out->rdev.specdata1 = a->rdev_major;
	out->rdev.specdata2 = a->rdev_minor;
	out->fsid = n ? n->fsid8 : 0;
	out->fileid = a->fileid;
	out->atime = to_nfstime(a->atime);
	out->mtime = to_nfstime(a->mtime);
	out->ctime = to_nfstime(a->ctime);
}

void nfs3_post_op_from(struct nfs3 *n, const struct meta_attr *a, post_op_attr *out)
{
	memset(out, 0, sizeof(*out));
	out->attributes_follow = 1;
	nfs3_fattr(n, a, &out->post_op_attr_u.attributes);
}

void nfs3_post_op(struct nfs3 *n, uint64_t fileid, post_op_attr *out)
{
	struct meta_attr a;
	memset(out, 0, sizeof(*out));
	if (fileid && meta_getattr(n->p.meta, fileid, &a) == 0)
		nfs3_post_op_from(n, &a, out);
}

void nfs3_pre_op(const struct meta_attr *a, pre_op_attr *out)
{
	memset(out, 0, sizeof(*out));
	if (!a)
		return;
	out->attributes_follow = 1;
	out->pre_op_attr_u.attributes.size = a->size;
	out->pre_op_attr_u.attributes.mtime = to_nfstime(a->mtime);
	out->pre_op_attr_u.attributes.ctime = to_nfstime(a->ctime);
}

void nfs3_wcc(struct nfs3 *n, const struct meta_attr *pre, uint64_t fileid, wcc_data *out)
{
	nfs3_pre_op(pre, &out->before);
	nfs3_post_op(n, fileid, &out->after);
}

int nfs3_sattr(const sattr3 *in, struct meta_setattr *out)
{
	memset(out, 0, sizeof(*out));
	if (in->mode.set_it) {
		if (in->mode.set_mode3_u.mode & ~07777u)
			return -EINVAL;
		out->mask |= META_SET_MODE;
		out->mode = in->mode.set_mode3_u.mode;
	}
	if (in->uid.set_it) {
		out->mask |= META_SET_UID;
		out->uid = in->uid.set_uid3_u.uid;
	}
	if (in->gid.set_it) {
		out->mask |= META_SET_GID;
		out->gid = in->gid.set_gid3_u.gid;
	}
	if (in->size.set_it) {
		out->mask |= META_SET_SIZE;
		out->size = in->size.set_size3_u.size;
	}
	switch (in->atime.set_it) {
	case DONT_CHANGE:
		break;
	case SET_TO_SERVER_TIME:
		out->mask |= META_SET_ATIME_NOW;
		break;
	case SET_TO_CLIENT_TIME:
		out->mask |= META_SET_ATIME;
		out->atime.sec = in->atime.set_atime_u.atime.seconds;
		out->atime.nsec = in->atime.set_atime_u.atime.nseconds;
		if (out->atime.nsec >= 1000000000u)
			return -EINVAL;
		break;
	default:
		return -EINVAL;
	}
	switch (in->mtime.set_it) {
	case DONT_CHANGE:
		break;
	case SET_TO_SERVER_TIME:
		out->mask |= META_SET_MTIME_NOW;
		break;
	case SET_TO_CLIENT_TIME:
		out->mask |= META_SET_MTIME;
		out->mtime.sec = in->mtime.set_mtime_u.mtime.seconds;
		out->mtime.nsec = in->mtime.set_mtime_u.mtime.nseconds;
		if (out->mtime.nsec >= 1000000000u)
			return -EINVAL;
		break;
	default:
		return -EINVAL;
	}
	return 0;
}

bool nfs3_cred_in_group(const struct nfs3_cred *c, uint32_t gid)
{
	if (c->gid == gid)
		return true;
	for (uint32_t i = 0; i < c->ngids && i < RPC_MAX_GIDS; i++)
		if (c->gids[i] == gid)
			return true;
	return false;
}

uint32_t nfs3_perm(const struct meta_attr *a, const struct nfs3_cred *c, uint32_t want)
{
	want &= 7;
	if (c->uid == 0) {
		uint32_t g = NFS3_MAY_READ | NFS3_MAY_WRITE;
		if (a->type == META_DIR || (a->mode & 0111))
			g |= NFS3_MAY_EXEC;
		return want & g;
	}
	uint32_t bits;
	if (c->uid == a->uid)
		bits = (a->mode >> 6) & 7;
	else if (nfs3_cred_in_group(c, a->gid))
		bits = (a->mode >> 3) & 7;
	else
		bits = a->mode & 7;
	return want & bits;
}

int nfs3_may(const struct meta_attr *a, const struct nfs3_cred *c, uint32_t want,
	     bool owner_override)
{
	want &= 7;
	if (owner_override && c->uid == a->uid)
		want &= ~(NFS3_MAY_READ | NFS3_MAY_WRITE);
	return nfs3_perm(a, c, want) == want ? 0 : -EACCES;
}

uint32_t nfs3_access_bits(const struct meta_attr *a, const struct nfs3_cred *c, bool ro,
			  uint32_t requested)
{
	uint32_t p = nfs3_perm(a, c, 7), g = 0;
	if (p & NFS3_MAY_READ)
		g |= ACCESS3_READ;
	if (p & NFS3_MAY_WRITE)
		g |= ACCESS3_MODIFY | ACCESS3_EXTEND;
	if (a->type == META_DIR) {
		if (p & NFS3_MAY_EXEC)
			g |= ACCESS3_LOOKUP;
		/* Deleting entries needs write and search on the directory. */
		if ((p & (NFS3_MAY_WRITE | NFS3_MAY_EXEC)) == (NFS3_MAY_WRITE | NFS3_MAY_EXEC))
			g |= ACCESS3_DELETE;
		else
			g &= ~(ACCESS3_MODIFY | ACCESS3_EXTEND);
	} else if (p & NFS3_MAY_EXEC) {
		g |= ACCESS3_EXECUTE;
	}
	if (ro)
		g &= ~(ACCESS3_MODIFY | ACCESS3_EXTEND | ACCESS3_DELETE);
	return g & requested;
}

int nfs3_may_delete(const struct meta_attr *dir, const struct meta_attr *victim,
		    const struct nfs3_cred *c)
{
	if (nfs3_may(dir, c, NFS3_MAY_WRITE | NFS3_MAY_EXEC, false))
		return -EACCES;
	if ((dir->mode & 01000) && c->uid != 0 && c->uid != dir->uid &&
	    (!victim || c->uid != victim->uid))
		return -EACCES;
	return 0;
}

int nfs3_may_setattr(const struct meta_attr *a, const struct nfs3_cred *c, struct meta_setattr *sa)
{
	bool root = c->uid == 0, owner = c->uid == a->uid;
	if ((sa->mask & META_SET_UID) && sa->uid != a->uid && !root)
		return -EPERM;
	if ((sa->mask & META_SET_GID) && sa->gid != a->gid && !root &&
	    !(owner && nfs3_cred_in_group(c, sa->gid)))
		return -EPERM;
	if (sa->mask & META_SET_MODE) {
		if (!root && !owner)
			return -EPERM;
		uint32_t g = (sa->mask & META_SET_GID) ? sa->gid : a->gid;
		/* As chmod(2): a non-member cannot set the setgid bit of a file. */
		if (!root && a->type != META_DIR && (sa->mode & 02000) && !nfs3_cred_in_group(c, g))
			sa->mode &= ~02000u;
	}
	if ((sa->mask & (META_SET_ATIME | META_SET_MTIME)) && !root && !owner)
		return -EPERM;
	if ((sa->mask & (META_SET_ATIME_NOW | META_SET_MTIME_NOW)) && !root && !owner &&
	    nfs3_may(a, c, NFS3_MAY_WRITE, false))
		return -EACCES;
	if ((sa->mask & META_SET_SIZE) && nfs3_may(a, c, NFS3_MAY_WRITE, true))
		return -EACCES;
	return 0;
}

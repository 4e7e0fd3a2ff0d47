/*
 * meta_ops: the mutations of meta.h. Each one validates against the in-memory tree (errors
 * are returned synchronously, nothing changed), encodes its whole effect as entries at the
 * end of the commit queue, and applies exactly those bytes to the tree, so that what a
 * lookup sees now is what replay rebuilds. The callback waits for group commit (meta_log.c).
 */
#include <errno.h>
#include <string.h>

#include "nfsgw/meta_priv.h"

/* Room kept in a checkpoint area beyond the tree's image, for the entries of one operation. */
#define SPACE_SLACK (64u << 10)

int mo_begin(struct meta *m)
{
	if (!m->loaded || m->closing)
		return -EBUSY;
	return m->err;
}

static int name_check(const char *name, size_t *len)
{
	size_t n = strnlen(name, META_NAME_MAX + 1);
	if (n > META_NAME_MAX)
		return -ENAMETOOLONG;
	if (n == 0 || strcmp(name, ".") == 0 || strcmp(name, "..") == 0 || memchr(name, '/', n))
		return -EINVAL;
	*len = n;
	return 0;
}

static int dir_get(struct meta *m, uint64_t dir, struct minode **out)
{
	struct minode *di = mt_inode(m, dir);
	if (!di)
		return -ENOENT;
	if (!di->dir)
		return -ENOTDIR;
	*out = di;
	return 0;
}

int mo_space(struct meta *m, size_t more)
{
	if (m->img_bytes + more + SPACE_SLACK > m->ckpt_cap)
		return -ENOSPC;
	return 0;
}

/* Applies the entries queued since start and registers the callback. */
int mo_commit(struct meta *m, size_t start, int enc, meta_cb cb, void *arg, uint32_t flags)
{
	int r = enc;
	if (r == 0)
		r = mr_apply(m, m->q.p + start, m->q.len - start);
	if (r == 0)
		r = ml_wait(m, cb, arg, flags);
	if (r < 0) {
		/* Out of memory half way: the tree may hold part of it, which no record will
		 * ever describe, so stop mutating rather than diverge from the volume. */
		m->q.len = start;
		ml_fail(m, r);
		return r;
	}
	ml_schedule(m);
	return 0;
}

/* A callback that only needs what is already queued to be durable. */
static int wait_only(struct meta *m, meta_cb cb, void *arg)
{
	int r = ml_wait(m, cb, arg, MW_FUA);
	if (r == 0)
		ml_schedule(m);
	return r;
}

static void touch(struct minode *in, struct meta_time now)
{
	in->a.mtime = now;
	in->a.ctime = now;
}

int meta_create(struct meta *m, const struct meta_create_args *a, uint64_t *fileid, bool *existed,
		meta_cb cb, void *arg)
{
	struct minode *di = NULL;
	size_t len = 0, sl = 0;
	int r = mo_begin(m);
	if (r == 0)
		r = dir_get(m, a->dir, &di);
	if (r == 0)
		r = name_check(a->name, &len);
	if (r < 0)
		return r;
	if (a->type < META_REG || a->type > META_FIFO)
		return -EINVAL;
	if (a->type == META_LNK) {
		if (!a->symlink)
			return -EINVAL;
		sl = strnlen(a->symlink, META_SYMLINK_MAX + 1);
		if (sl > META_SYMLINK_MAX)
			return -ENAMETOOLONG;
	}
	struct mdent *d = mt_dent(m, a->dir, a->name, len);
	if (d) {
		struct minode *in = mt_inode(m, d->fileid);
		if (a->exclusive || a->type != META_REG || !in || in->a.type != META_REG)
			return -EEXIST;
		r = wait_only(m, cb, arg);
		if (r == 0) {
			*fileid = d->fileid;
			*existed = true;
		}
		return r;
	}
	if (a->type == META_DIR && di->a.nlink >= META_NLINK_MAX)
		return -EMLINK;
	if ((r = mo_space(m, mt_inode_esize(sl) + mt_dirent_esize(len) + 20)) < 0)
		return r;
	struct meta_time now;
	meta_now(&now);
	struct minode n = {0};
	n.a.fileid = m->next_fileid;
	n.a.gen = meta_rand(m) | 1;
	n.a.type = a->type;
	n.a.mode = a->mode & 07777;
	n.a.nlink = a->type == META_DIR ? 2 : 1;
	n.a.uid = a->uid;
	n.a.gid = a->gid;
	if (a->type == META_BLK || a->type == META_CHR) {
		n.a.rdev_major = a->rdev_major;
		n.a.rdev_minor = a->rdev_minor;
	}
	n.a.atime = n.a.mtime = n.a.ctime = now;
	n.a.parent = a->type == META_DIR ? a->dir : 0;
	n.symlink = a->type == META_LNK ? (char *)a->symlink : NULL;
	struct minode dn = *di;
	touch(&dn, now);
	if (a->type == META_DIR)
		dn.a.nlink++;
	size_t start = m->q.len;
	uint64_t id = n.a.fileid;
	r = mr_inode(&m->q, &n);
	if (r == 0)
		r = mr_inode(&m->q, &dn);
	if (r == 0)
		r = mr_dirent_add(&m->q, a->dir, di->dir->next_cookie, id, a->name, len);
	r = mo_commit(m, start, r, cb, arg, MW_FUA);
	if (r == 0) {
		*fileid = id;
		*existed = false;
	}
	return r;
}

int meta_link(struct meta *m, uint64_t fileid, uint64_t dir, const char *name, meta_cb cb,
	      void *arg)
{
	struct minode *di = NULL, *in = NULL;
	size_t len = 0;
	int r = mo_begin(m);
	if (r == 0 && !(in = mt_inode(m, fileid)))
		r = -ENOENT;
	if (r == 0)
		r = dir_get(m, dir, &di);
	if (r == 0)
		r = name_check(name, &len);
	if (r < 0)
		return r;
	if (in->dir)
		return -EISDIR;
	if (mt_dent(m, dir, name, len))
		return -EEXIST;
	if (in->a.nlink >= META_NLINK_MAX)
		return -EMLINK;
	if ((r = mo_space(m, mt_dirent_esize(len))) < 0)
		return r;
	struct meta_time now;
	meta_now(&now);
	struct minode tn = *in, dn = *di;
	tn.a.nlink++;
	tn.a.ctime = now;
	touch(&dn, now);
	size_t start = m->q.len;
	r = mr_inode(&m->q, &tn);
	if (r == 0)
		r = mr_inode(&m->q, &dn);
	if (r == 0)
		r = mr_dirent_add(&m->q, dir, di->dir->next_cookie, fileid, name, len);
	return mo_commit(m, start, r, cb, arg, MW_FUA);
}

/* Entries dropping one link of t (whose name is already removed). */
static int unlink_target(struct meta *m, struct minode *t, struct meta_time now,
			 uint64_t *freed_reg)
{
	if (t->dir || t->a.nlink <= 1) {
		/* A snapshot still reads the file's volume (and revert brings it back). */
		if (t->a.type == META_REG && !ms_holds(m, t->a.fileid, NULL))
			*freed_reg = t->a.fileid;
		return mr_u64(&m->q, ME_INODE_FREE, t->a.fileid);
	}
	struct minode tn = *t;
	tn.a.nlink--;
	tn.a.ctime = now;
	return mr_inode(&m->q, &tn);
}

int meta_remove(struct meta *m, uint64_t dir, const char *name, bool rmdir, uint64_t *freed_reg,
		meta_cb cb, void *arg)
{
	struct minode *di = NULL;
	size_t len = 0;
	int r = mo_begin(m);
	if (r == 0)
		r = dir_get(m, dir, &di);
	if (r == 0)
		r = name_check(name, &len);
	if (r < 0)
		return r;
	struct mdent *d = mt_dent(m, dir, name, len);
	if (!d)
		return -ENOENT;
	struct minode *t = mt_inode(m, d->fileid);
	if (t && rmdir && !t->dir)
		return -ENOTDIR;
	if (t && !rmdir && t->dir)
		return -EISDIR;
	if (t && t->dir && t->dir->live)
		return -ENOTEMPTY;
	uint64_t freed = 0;
	struct meta_time now;
	meta_now(&now);
	struct minode dn = *di;
	touch(&dn, now);
	if (t && t->dir)
		dn.a.nlink--;
	size_t start = m->q.len;
	r = mr_dirent_del(&m->q, dir, name, len);
	if (r == 0)
		r = mr_inode(&m->q, &dn);
	if (r == 0 && t)
		r = unlink_target(m, t, now, &freed);
	r = mo_commit(m, start, r, cb, arg, MW_FUA);
	if (r == 0)
		*freed_reg = freed;
	return r;
}

/* -EINVAL when moving directory src to dir would put it under itself. */
static int ancestry_check(struct meta *m, uint64_t src, uint64_t dir)
{
	for (uint64_t p = dir, hops = 0; hops <= m->ninodes; hops++) {
		if (p == src)
			return -EINVAL;
		if (p == META_ROOT)
			return 0;
		struct minode *pi = mt_inode(m, p);
		if (!pi)
			return -EUCLEAN;
		p = pi->a.parent;
	}
	return -EUCLEAN;
}

int meta_rename(struct meta *m, uint64_t from_dir, const char *from, uint64_t to_dir,
		const char *to, uint64_t *freed_reg, meta_cb cb, void *arg)
{
	struct minode *fdi = NULL, *tdi = NULL;
	size_t flen = 0, tlen = 0;
	int r = mo_begin(m);
	if (r == 0)
		r = dir_get(m, from_dir, &fdi);
	if (r == 0)
		r = dir_get(m, to_dir, &tdi);
	if (r == 0)
		r = name_check(from, &flen);
	if (r == 0)
		r = name_check(to, &tlen);
	if (r < 0)
		return r;
	struct mdent *sd = mt_dent(m, from_dir, from, flen);
	struct minode *s = sd ? mt_inode(m, sd->fileid) : NULL;
	if (!s)
		return -ENOENT;
	if (s->dir && (r = ancestry_check(m, s->a.fileid, to_dir)) < 0)
		return r;
	struct mdent *td = mt_dent(m, to_dir, to, tlen);
	if (td && td->fileid == sd->fileid) {
		/* Both names are links to one file: POSIX says do nothing. */
		r = wait_only(m, cb, arg);
		if (r == 0)
			*freed_reg = 0;
		return r;
	}
	struct minode *t = td ? mt_inode(m, td->fileid) : NULL;
	if (t && s->dir && !t->dir)
		return -ENOTDIR;
	if (t && !s->dir && t->dir)
		return -EISDIR;
	if (t && t->dir && t->dir->live)
		return -ENOTEMPTY;
	if (s->dir && from_dir != to_dir && !(t && t->dir) && tdi->a.nlink >= META_NLINK_MAX)
		return -EMLINK;
	if (tlen > flen && (r = mo_space(m, tlen - flen)) < 0)
		return r;
	uint64_t freed = 0;
	struct meta_time now;
	meta_now(&now);
	struct minode sn = *s, fdn = *fdi;
	sn.a.ctime = now;
	if (s->dir)
		sn.a.parent = to_dir;
	touch(&fdn, now);
	size_t start = m->q.len;
	r = mr_dirent_del(&m->q, from_dir, from, flen);
	if (r == 0 && td)
		r = mr_dirent_del(&m->q, to_dir, to, tlen);
	if (r == 0 && t)
		r = unlink_target(m, t, now, &freed);
	if (r == 0)
		r = mr_dirent_add(&m->q, to_dir, tdi->dir->next_cookie, s->a.fileid, to, tlen);
	if (r == 0)
		r = mr_inode(&m->q, &sn);
	/* A directory's nlink counts its subdirectories' "..": one leaves from_dir, one
	 * arrives in to_dir, and a replaced directory target leaves to_dir. */
	int dropped = t && t->dir ? 1 : 0;
	if (from_dir == to_dir) {
		fdn.a.nlink -= (uint32_t)dropped;
		if (r == 0)
			r = mr_inode(&m->q, &fdn);
	} else {
		struct minode tdn = *tdi;
		touch(&tdn, now);
		if (s->dir) {
			fdn.a.nlink--;
			tdn.a.nlink++;
		}
		tdn.a.nlink -= (uint32_t)dropped;
		if (r == 0)
			r = mr_inode(&m->q, &fdn);
		if (r == 0)
			r = mr_inode(&m->q, &tdn);
	}
	r = mo_commit(m, start, r, cb, arg, MW_FUA);
	if (r == 0)
		*freed_reg = freed;
	return r;
}

int meta_setattr(struct meta *m, uint64_t fileid, const struct meta_setattr *sa, meta_cb cb,
		 void *arg)
{
	struct minode *in = NULL;
	int r = mo_begin(m);
	if (r == 0 && !(in = mt_inode(m, fileid)))
		r = -ENOENT;
	if (r < 0)
		return r;
	if (sa->mask & ~0xffu)
		return -EINVAL;
	if ((sa->mask & META_SET_SIZE) && in->dir)
		return -EISDIR;
	if ((sa->mask & META_SET_SIZE) && in->a.type != META_REG)
		return -EINVAL;
	struct meta_time now;
	meta_now(&now);
	struct minode n = *in;
	if (sa->mask & META_SET_MODE)
		n.a.mode = sa->mode & 07777;
	if (sa->mask & META_SET_UID)
		n.a.uid = sa->uid;
	if (sa->mask & META_SET_GID)
		n.a.gid = sa->gid;
	if (sa->mask & META_SET_SIZE) {
		n.a.size = sa->size;
		n.a.mtime = now;
	}
	if (sa->mask & META_SET_ATIME)
		n.a.atime = sa->atime;
	if (sa->mask & META_SET_ATIME_NOW)
		n.a.atime = now;
	if (sa->mask & META_SET_MTIME)
		n.a.mtime = sa->mtime;
	if (sa->mask & META_SET_MTIME_NOW)
		n.a.mtime = now;
	n.a.ctime = now;
	size_t start = m->q.len;
	r = mr_inode(&m->q, &n);
	mt_lazy_unmark(m, in);
	r = mo_commit(m, start, r, cb, arg, MW_FUA);
	if (r == 0 && (sa->mask & META_SET_SIZE))
		in->size_serial = m->wserial;
	return r;
}

int meta_note_write(struct meta *m, uint64_t fileid, uint64_t end, meta_cb cb, void *arg)
{
	if (!m->loaded || m->closing)
		return -EBUSY;
	if (m->err)
		return m->err;
	struct minode *in = mt_inode(m, fileid);
	if (!in)
		return -ENOENT;
	if (in->dir)
		return -EISDIR;
	if (in->a.type != META_REG)
		return -EINVAL;
	meta_now(&in->a.mtime);
	in->a.ctime = in->a.mtime;
	if (end > in->a.size) {
		in->a.size = end;
		size_t start = m->q.len;
		int r = mr_inode(&m->q, in);
		if (r == 0)
			r = ml_wait(m, cb, arg, 0);
		if (r < 0) {
			m->q.len = start;
			return r;
		}
		mt_lazy_unmark(m, in);
		in->size_serial = m->wserial;
		ml_schedule(m);
		return 0;
	}
	mt_lazy_mark(m, in);
	ml_lazy_arm(m);
	/* A size change still on its way must be durable before this write is answered: its
	 * reply may show that size. */
	if (in->size_serial > m->done_serial) {
		int r = ml_wait(m, cb, arg, 0);
		if (r == 0)
			ml_schedule(m);
		return r;
	}
	return ml_defer(m, cb, arg, 0);
}

int meta_sync(struct meta *m, meta_cb cb, void *arg)
{
	if (!m->loaded || m->closing)
		return -EBUSY;
	if (m->err)
		return m->err;
	int r = ml_wait(m, cb, arg, MW_SYNC);
	if (r == 0)
		ml_schedule(m);
	return r;
}

const char *meta_exports_text(struct meta *m)
{
	return m->exports;
}

int meta_set_exports_text(struct meta *m, const char *text, meta_cb cb, void *arg)
{
	int r = mo_begin(m);
	if (r < 0)
		return r;
	if (!text)
		text = "";
	size_t len = strnlen(text, META_EXPORTS_MAX + 1);
	if (len > META_EXPORTS_MAX)
		return -EINVAL;
	if ((r = mo_space(m, len + 4)) < 0)
		return r;
	size_t start = m->q.len;
	r = mr_exports(&m->q, text, len);
	return mo_commit(m, start, r, cb, arg, MW_FUA);
}

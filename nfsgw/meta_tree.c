/*
 * meta_tree: the in-memory tree: inodes by fileid, one name hash on (dir, name), each
 * directory's entries in cookie order, the lazy-timestamp list, and the lookups of meta.h.
 * The primitives here are what records apply; they never do I/O and keep img_bytes (the size
 * of a checkpoint of the tree) current.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <xxhash.h>

#include "nfsgw/meta_priv.h"

#define INODE_BODY 93u
#define DIRENT_BODY 25u

size_t mt_inode_esize(size_t symlen)
{
	return 4 + INODE_BODY + symlen;
}

size_t mt_dirent_esize(size_t namelen)
{
	return 4 + DIRENT_BODY + namelen;
}

static size_t ihash(uint64_t fileid, size_t nb)
{
	return (size_t)((fileid * 0x9E3779B97F4A7C15ull) >> 17) & (nb - 1);
}

static uint64_t nhash(uint64_t dir, const char *name, size_t len)
{
	return XXH3_64bits_withSeed(name, len, dir);
}

struct minode *mt_inode(struct meta *m, uint64_t fileid)
{
	if (!m->ihn)
		return NULL;
	for (struct minode *in = m->ih[ihash(fileid, m->ihn)]; in; in = in->hnext)
		if (in->a.fileid == fileid)
			return in;
	return NULL;
}

struct mdent *mt_dent(struct meta *m, uint64_t dir, const char *name, size_t len)
{
	if (!m->dhn)
		return NULL;
	uint64_t h = nhash(dir, name, len);
	for (struct mdent *d = m->dh[h & (m->dhn - 1)]; d; d = d->hnext)
		if (d->hash == h && d->dir == dir && d->namelen == len &&
		    memcmp(d->name, name, len) == 0)
			return d;
	return NULL;
}

static int igrow(struct meta *m)
{
	size_t nb = m->ihn ? m->ihn * 2 : 1024;
	struct minode **v = calloc(nb, sizeof(*v));
	if (!v)
		return -ENOMEM;
	for (size_t i = 0; i < m->ihn; i++) {
		struct minode *in = m->ih[i], *next;
		for (; in; in = next) {
			next = in->hnext;
			size_t b = ihash(in->a.fileid, nb);
			in->hnext = v[b];
			v[b] = in;
		}
	}
	free(m->ih);
	m->ih = v;
	m->ihn = nb;
	return 0;
}

static int dgrow(struct meta *m)
{
	size_t nb = m->dhn ? m->dhn * 2 : 1024;
	struct mdent **v = calloc(nb, sizeof(*v));
	if (!v)
		return -ENOMEM;
	for (size_t i = 0; i < m->dhn; i++) {
		struct mdent *d = m->dh[i], *next;
		for (; d; d = next) {
			next = d->hnext;
			d->hnext = v[d->hash & (nb - 1)];
			v[d->hash & (nb - 1)] = d;
		}
	}
	free(m->dh);
	m->dh = v;
	m->dhn = nb;
	return 0;
}

static size_t inode_size(const struct minode *in)
{
	size_t s = mt_inode_esize(in->symlink ? strlen(in->symlink) : 0);
	if (in->dir)
		s += 4 + 16; /* its ME_DIRNEXT */
	return s;
}

int mt_upsert(struct meta *m, const struct meta_attr *a, const char *symlink, size_t symlen)
{
	if (a->fileid == 0 || a->type < META_REG || a->type > META_FIFO)
		return -EUCLEAN;
	struct minode *in = mt_inode(m, a->fileid);
	bool fresh = !in;
	if (fresh) {
		if (m->ninodes >= m->ihn && igrow(m) < 0)
			return -ENOMEM;
		in = calloc(1, sizeof(*in));
		if (!in)
			return -ENOMEM;
	} else {
		m->img_bytes -= inode_size(in);
	}
	char *sl = NULL;
	if (symlen || a->type == META_LNK) {
		sl = malloc(symlen + 1);
		if (!sl) {
			if (fresh)
				free(in);
			else
				m->img_bytes += inode_size(in);
			return -ENOMEM;
		}
		memcpy(sl, symlink, symlen);
		sl[symlen] = 0;
	}
	if (a->type == META_DIR && !in->dir) {
		in->dir = calloc(1, sizeof(*in->dir));
		if (!in->dir) {
			free(sl);
			if (fresh)
				free(in);
			else
				m->img_bytes += inode_size(in);
			return -ENOMEM;
		}
		in->dir->next_cookie = 3;
	}
	free(in->symlink);
	in->symlink = sl;
	in->a = *a;
	in->a.mode &= 07777;
	if (fresh) {
		size_t b = ihash(a->fileid, m->ihn);
		in->hnext = m->ih[b];
		m->ih[b] = in;
		m->ninodes++;
	}
	m->img_bytes += inode_size(in);
	if (a->fileid >= m->next_fileid)
		m->next_fileid = a->fileid + 1;
	return 0;
}

static void dent_unlink(struct meta *m, struct mdent *d)
{
	struct mdent **pp = &m->dh[d->hash & (m->dhn - 1)];
	while (*pp != d)
		pp = &(*pp)->hnext;
	*pp = d->hnext;
	m->ndents--;
	m->img_bytes -= mt_dirent_esize(d->namelen);
}

static size_t slot_find(const struct mdir *dir, uint64_t cookie)
{
	size_t lo = 0, hi = dir->n;
	while (lo < hi) {
		size_t mid = lo + (hi - lo) / 2;
		if (dir->v[mid].cookie < cookie)
			lo = mid + 1;
		else
			hi = mid;
	}
	return lo;
}

static void dir_compact(struct mdir *dir)
{
	size_t k = 0;
	for (size_t i = 0; i < dir->n; i++)
		if (dir->v[i].d)
			dir->v[k++] = dir->v[i];
	dir->n = k;
}

static void dir_drop(struct mdir *dir, struct mdent *d)
{
	size_t i = slot_find(dir, d->cookie);
	if (i < dir->n && dir->v[i].d == d) {
		dir->v[i].d = NULL;
		dir->live--;
	}
	if (dir->n > 32 && dir->live < dir->n / 2)
		dir_compact(dir);
}

void mt_free_inode(struct meta *m, uint64_t fileid)
{
	struct minode *in = mt_inode(m, fileid);
	if (!in)
		return;
	mt_lazy_unmark(m, in);
	struct minode **pp = &m->ih[ihash(fileid, m->ihn)];
	while (*pp != in)
		pp = &(*pp)->hnext;
	*pp = in->hnext;
	m->ninodes--;
	m->img_bytes -= inode_size(in);
	if (in->dir) {
		for (size_t i = 0; i < in->dir->n; i++) {
			if (in->dir->v[i].d) {
				dent_unlink(m, in->dir->v[i].d);
				free(in->dir->v[i].d);
			}
		}
		free(in->dir->v);
		free(in->dir);
	}
	free(in->symlink);
	free(in);
}

int mt_dirent_add(struct meta *m, uint64_t dir, uint64_t cookie, uint64_t fileid, const char *name,
		  size_t len)
{
	struct minode *di = mt_inode(m, dir);
	if (!di || !di->dir || len == 0 || len > META_NAME_MAX || cookie < 3)
		return -EUCLEAN;
	mt_dirent_del(m, dir, name, len);
	struct mdir *dd = di->dir;
	if (dd->n == dd->cap) {
		if (dd->live < dd->n)
			dir_compact(dd);
		if (dd->n == dd->cap) {
			size_t cap = dd->cap ? dd->cap * 2 : 8;
			struct mslot *v = realloc(dd->v, cap * sizeof(*v));
			if (!v)
				return -ENOMEM;
			dd->v = v;
			dd->cap = cap;
		}
	}
	if (m->ndents >= m->dhn && dgrow(m) < 0)
		return -ENOMEM;
	struct mdent *d = malloc(sizeof(*d) + len + 1);
	if (!d)
		return -ENOMEM;
	d->dir = dir;
	d->fileid = fileid;
	d->cookie = cookie;
	d->hash = nhash(dir, name, len);
	d->namelen = (uint8_t)len;
	memcpy(d->name, name, len);
	d->name[len] = 0;
	size_t i = slot_find(dd, cookie);
	if (i < dd->n && dd->v[i].cookie == cookie) {
		/* A replayed cookie already in use: keep the newer entry only. */
		if (dd->v[i].d) {
			dent_unlink(m, dd->v[i].d);
			free(dd->v[i].d);
			dd->live--;
		}
	} else {
		memmove(&dd->v[i + 1], &dd->v[i], (dd->n - i) * sizeof(dd->v[0]));
		dd->n++;
	}
	dd->v[i] = (struct mslot){cookie, d};
	dd->live++;
	d->hnext = m->dh[d->hash & (m->dhn - 1)];
	m->dh[d->hash & (m->dhn - 1)] = d;
	m->ndents++;
	m->img_bytes += mt_dirent_esize(len);
	if (cookie >= dd->next_cookie)
		dd->next_cookie = cookie + 1;
	return 0;
}

void mt_dirent_del(struct meta *m, uint64_t dir, const char *name, size_t len)
{
	struct mdent *d = mt_dent(m, dir, name, len);
	if (!d)
		return;
	struct minode *di = mt_inode(m, dir);
	dent_unlink(m, d);
	if (di && di->dir)
		dir_drop(di->dir, d);
	free(d);
}

void mt_lazy_mark(struct meta *m, struct minode *in)
{
	if (in->lazy)
		return;
	in->lazy = true;
	in->lazy_prev = NULL;
	in->lazy_next = m->lazy_head;
	if (m->lazy_head)
		m->lazy_head->lazy_prev = in;
	m->lazy_head = in;
}

void mt_lazy_unmark(struct meta *m, struct minode *in)
{
	if (!in->lazy)
		return;
	if (in->lazy_prev)
		in->lazy_prev->lazy_next = in->lazy_next;
	else
		m->lazy_head = in->lazy_next;
	if (in->lazy_next)
		in->lazy_next->lazy_prev = in->lazy_prev;
	in->lazy = false;
	in->lazy_prev = in->lazy_next = NULL;
}

void mt_free_all(struct meta *m)
{
	for (size_t i = 0; i < m->ihn; i++) {
		struct minode *in = m->ih[i], *next;
		for (; in; in = next) {
			next = in->hnext;
			if (in->dir) {
				for (size_t k = 0; k < in->dir->n; k++)
					free(in->dir->v[k].d);
				free(in->dir->v);
				free(in->dir);
			}
			free(in->symlink);
			free(in);
		}
	}
	free(m->ih);
	free(m->dh);
	ms_free_all(m);
	m->ih = NULL;
	m->dh = NULL;
	m->ihn = m->dhn = m->ninodes = m->ndents = 0;
	m->lazy_head = NULL;
}

/* ---- lookups ---- */

int meta_getattr(struct meta *m, uint64_t fileid, struct meta_attr *out)
{
	if (fileid & META_SNAP_BIT)
		return ms_getattr(m, fileid, out);
	struct minode *in = mt_inode(m, fileid);
	if (!in)
		return -ENOENT;
	*out = in->a;
	if (in->dir)
		out->size = 4096 + in->dir->live * 64;
	return 0;
}

int meta_lookup(struct meta *m, uint64_t dir, const char *name, uint64_t *fileid)
{
	if (dir & META_SNAP_BIT)
		return ms_lookup(m, dir, name, fileid);
	struct minode *di = mt_inode(m, dir);
	if (!di)
		return -ENOENT;
	if (!di->dir)
		return -ENOTDIR;
	size_t len = strnlen(name, META_NAME_MAX + 1);
	if (len > META_NAME_MAX)
		return -ENAMETOOLONG;
	if (strcmp(name, ".") == 0) {
		*fileid = dir;
		return 0;
	}
	if (strcmp(name, "..") == 0) {
		*fileid = di->a.parent;
		return 0;
	}
	struct mdent *d = mt_dent(m, dir, name, len);
	if (!d)
		return -ENOENT;
	*fileid = d->fileid;
	return 0;
}

int meta_readlink(struct meta *m, uint64_t fileid, char *buf, size_t len)
{
	if (fileid & META_SNAP_BIT)
		return ms_readlink(m, fileid, buf, len);
	struct minode *in = mt_inode(m, fileid);
	if (!in)
		return -ENOENT;
	if (in->a.type != META_LNK || !in->symlink)
		return -EINVAL;
	size_t n = strlen(in->symlink);
	if (n + 1 > len)
		return -ERANGE;
	memcpy(buf, in->symlink, n + 1);
	return 0;
}

int meta_readdir(struct meta *m, uint64_t dir, uint64_t after, meta_dirent_fn fn, void *arg)
{
	if (dir & META_SNAP_BIT)
		return ms_readdir(m, dir, after, fn, arg);
	struct minode *di = mt_inode(m, dir);
	if (!di)
		return -ENOENT;
	if (!di->dir)
		return -ENOTDIR;
	struct mdir *dd = di->dir;
	if (after == UINT64_MAX)
		return 0;
	/* Resume by cookie, not by index: fn may not change dd, but the slot array may have
	 * been compacted since the caller's last page. */
	for (size_t i = slot_find(dd, after + 1); i < dd->n; i++) {
		struct mdent *d = dd->v[i].d;
		if (!d)
			continue;
		if (fn(arg, d->name, d->fileid, d->cookie))
			break;
	}
	return 0;
}

uint64_t meta_dir_version(struct meta *m, uint64_t dir)
{
	if (dir & META_SNAP_BIT)
		return 1; /* a snapshot never changes */
	struct minode *di = mt_inode(m, dir);
	if (!di || !di->dir)
		return 0;
	/* Along any history, next_cookie only grows (on every add) and live only shrinks
	 * between adds (on every remove), so the pair changes at every change of the entry
	 * set, and it survives restarts without being stored. */
	uint64_t v[2] = {di->dir->next_cookie, di->dir->live};
	uint64_t h = XXH3_64bits(v, sizeof(v));
	return h ? h : 1;
}

void meta_volume_name(struct meta *m, uint64_t fileid, char *buf, size_t len)
{
	snprintf(buf, len, "nfs-%02x%02x%02x%02x-%" PRIu64, m->fsid[0], m->fsid[1], m->fsid[2],
		 m->fsid[3], fileid);
}

/*
 * meta_rec: the entry codec shared by log records and checkpoints. An entry is a LE u32
 * (type << 24 | body length) and a body of LE fields. Applying entries is idempotent: an
 * inode upsert sets every attribute, adding a name replaces any entry of that name, removals
 * of what is missing do nothing, counters only grow. Every length is checked on decode.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "nfsgw/meta_priv.h"

int mbuf_reserve(struct mbuf *b, size_t more)
{
	if (b->len + more <= b->cap)
		return 0;
	size_t cap = b->cap ? b->cap : 4096;
	while (cap < b->len + more)
		cap *= 2;
	uint8_t *p = realloc(b->p, cap);
	if (!p)
		return -ENOMEM;
	b->p = p;
	b->cap = cap;
	return 0;
}

void mbuf_free(struct mbuf *b)
{
	free(b->p);
	*b = (struct mbuf){0};
}

uint8_t *mr_ent(struct mbuf *b, enum meta_etype t, size_t body)
{
	if (mbuf_reserve(b, 4 + body) < 0)
		return NULL;
	uint8_t *p = b->p + b->len;
	le_put32(p, (uint32_t)t << 24 | (uint32_t)body);
	b->len += 4 + body;
	return p + 4;
}

static uint8_t *put_time(uint8_t *p, struct meta_time t)
{
	le_put64(p, (uint64_t)t.sec);
	le_put32(p + 8, t.nsec);
	return p + 12;
}

static const uint8_t *get_time(const uint8_t *p, struct meta_time *t)
{
	t->sec = (int64_t)le_get64(p);
	t->nsec = le_get32(p + 8);
	return p + 12;
}

void mr_inode_body(uint8_t *p, const struct meta_attr *a, const char *symlink, size_t sl)
{
	le_put64(p, a->fileid);
	le_put64(p + 8, a->gen);
	p[16] = (uint8_t)a->type;
	le_put16(p + 17, (uint16_t)(a->mode & 07777));
	le_put32(p + 19, a->nlink);
	le_put32(p + 23, a->uid);
	le_put32(p + 27, a->gid);
	le_put64(p + 31, a->size);
	le_put32(p + 39, a->rdev_major);
	le_put32(p + 43, a->rdev_minor);
	p = put_time(p + 47, a->atime);
	p = put_time(p, a->mtime);
	p = put_time(p, a->ctime);
	le_put64(p, a->parent);
	le_put16(p + 8, (uint16_t)sl);
	memcpy(p + 10, symlink ? symlink : "", sl);
}

int mr_inode(struct mbuf *b, const struct minode *in)
{
	size_t sl = in->symlink ? strlen(in->symlink) : 0;
	uint8_t *p = mr_ent(b, ME_INODE, mt_inode_esize(sl) - 4);
	if (!p)
		return -ENOMEM;
	mr_inode_body(p, &in->a, in->symlink, sl);
	return 0;
}

int mr_dirent_add(struct mbuf *b, uint64_t dir, uint64_t cookie, uint64_t fileid, const char *name,
		  size_t len)
{
	uint8_t *p = mr_ent(b, ME_DIRENT_ADD, mt_dirent_esize(len) - 4);
	if (!p)
		return -ENOMEM;
	le_put64(p, dir);
	le_put64(p + 8, cookie);
	le_put64(p + 16, fileid);
	p[24] = (uint8_t)len;
	memcpy(p + 25, name, len);
	return 0;
}

int mr_dirent_del(struct mbuf *b, uint64_t dir, const char *name, size_t len)
{
	uint8_t *p = mr_ent(b, ME_DIRENT_DEL, 9 + len);
	if (!p)
		return -ENOMEM;
	le_put64(p, dir);
	p[8] = (uint8_t)len;
	memcpy(p + 9, name, len);
	return 0;
}

int mr_u64(struct mbuf *b, enum meta_etype t, uint64_t v)
{
	uint8_t *p = mr_ent(b, t, 8);
	if (!p)
		return -ENOMEM;
	le_put64(p, v);
	return 0;
}

int mr_dirnext(struct mbuf *b, uint64_t dir, uint64_t next)
{
	uint8_t *p = mr_ent(b, ME_DIRNEXT, 16);
	if (!p)
		return -ENOMEM;
	le_put64(p, dir);
	le_put64(p + 8, next);
	return 0;
}

int mr_exports(struct mbuf *b, const char *text, size_t len)
{
	uint8_t *p = mr_ent(b, ME_EXPORTS, len);
	if (!p)
		return -ENOMEM;
	memcpy(p, text, len);
	return 0;
}

int mr_inode_decode(const uint8_t *p, size_t n, struct meta_attr *a, const char **symlink,
		    size_t *symlen)
{
	if (n < 93)
		return -EUCLEAN;
	*a = (struct meta_attr){0};
	a->fileid = le_get64(p);
	a->gen = le_get64(p + 8);
	a->type = (enum meta_type)p[16];
	a->mode = le_get16(p + 17);
	a->nlink = le_get32(p + 19);
	a->uid = le_get32(p + 23);
	a->gid = le_get32(p + 27);
	a->size = le_get64(p + 31);
	a->rdev_major = le_get32(p + 39);
	a->rdev_minor = le_get32(p + 43);
	const uint8_t *q = get_time(p + 47, &a->atime);
	q = get_time(q, &a->mtime);
	q = get_time(q, &a->ctime);
	a->parent = le_get64(q);
	size_t sl = le_get16(q + 8);
	if (n != 93 + sl || sl > META_SYMLINK_MAX)
		return -EUCLEAN;
	*symlink = (const char *)q + 10;
	*symlen = sl;
	return 0;
}

static int apply_inode(struct meta *m, const uint8_t *p, size_t n)
{
	struct meta_attr a;
	const char *sl;
	size_t len;
	int r = mr_inode_decode(p, n, &a, &sl, &len);
	return r < 0 ? r : mt_upsert(m, &a, sl, len);
}

static int apply_one(struct meta *m, enum meta_etype t, const uint8_t *p, size_t n)
{
	switch (t) {
	case ME_INODE:
		return apply_inode(m, p, n);
	case ME_DIRENT_ADD:
		if (n < 25 || n != 25u + p[24])
			return -EUCLEAN;
		return mt_dirent_add(m, le_get64(p), le_get64(p + 8), le_get64(p + 16),
				     (const char *)p + 25, p[24]);
	case ME_DIRENT_DEL:
		if (n < 9 || n != 9u + p[8])
			return -EUCLEAN;
		mt_dirent_del(m, le_get64(p), (const char *)p + 9, p[8]);
		return 0;
	case ME_INODE_FREE:
		if (n != 8)
			return -EUCLEAN;
		mt_free_inode(m, le_get64(p));
		return 0;
	case ME_EXPORTS: {
		if (n > META_EXPORTS_MAX)
			return -EUCLEAN;
		char *s = malloc(n + 1);
		if (!s)
			return -ENOMEM;
		memcpy(s, p, n);
		s[n] = 0;
		if (m->exports)
			m->img_bytes -= 4 + strlen(m->exports);
		free(m->exports);
		m->exports = s;
		m->img_bytes += 4 + n;
		return 0;
	}
	case ME_COUNTER:
		if (n != 8)
			return -EUCLEAN;
		if (le_get64(p) > m->next_fileid)
			m->next_fileid = le_get64(p);
		return 0;
	case ME_DIRNEXT: {
		if (n != 16)
			return -EUCLEAN;
		struct minode *di = mt_inode(m, le_get64(p));
		if (!di || !di->dir)
			return -EUCLEAN;
		if (le_get64(p + 8) > di->dir->next_cookie)
			di->dir->next_cookie = le_get64(p + 8);
		return 0;
	}
	case ME_SNAP:
	case ME_SNAP_INODE:
	case ME_SNAP_DIRENT:
	case ME_SNAP_DEL:
	case ME_SNAPNEXT:
		return ms_apply(m, t, p, n);
	}
	return -EUCLEAN;
}

int mr_apply(struct meta *m, const uint8_t *p, size_t len)
{
	size_t off = 0;
	while (off < len) {
		if (len - off < 4)
			return -EUCLEAN;
		uint32_t h = le_get32(p + off);
		size_t n = h & 0xffffff;
		if (n > len - off - 4)
			return -EUCLEAN;
		int r = apply_one(m, (enum meta_etype)(h >> 24), p + off + 4, n);
		if (r < 0)
			return r;
		off += 4 + n;
	}
	return 0;
}

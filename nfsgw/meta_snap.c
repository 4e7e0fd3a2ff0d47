/*
 * meta_snap: snapshots of a file or directory's metadata (meta.h, "Snapshots through the
 * export"): frozen copies kept beside the live tree, their records and checkpoint entries
 * (ME_SNAP*), the lookups by snapshot fileid, and create / delete / revert.
 *
 * A snapshot is recorded as one operation: ME_SNAPNEXT, ME_SNAP, then an ME_SNAP_INODE per
 * object and an ME_SNAP_DIRENT per name under it (live fileids, live cookies). A revert is one
 * operation of ordinary live entries (names removed, inodes freed or upserted, names added),
 * so replay needs nothing new for it. Either must fit one log record: larger subtrees get
 * -EFBIG (about 15 000 objects).
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <xxhash.h>

#include "nfsgw/meta_priv.h"

/* One operation's entries stay well below a log record's limit (META_WINDOW), with room for
 * the operations grouped before it. */
#define OP_MAX (2u << 20)
#define VIRT_GEN 1ull
#define NAME_MAX_SNAP 57 /* "nfsgw-" NAME < 64 (a volume snapshot name) */

static size_t hslot(uint64_t id, size_t nb)
{
	return (size_t)((id * 0x9E3779B97F4A7C15ull) >> 17) & (nb - 1);
}

/* ---- a fileid -> count map for walks ---- */

struct idmap {
	uint64_t *k;
	uint32_t *v;
	size_t n, cap;
};

static uint32_t *idmap_get(struct idmap *s, uint64_t id)
{
	if (!s->cap)
		return NULL;
	for (size_t i = hslot(id, s->cap);; i = (i + 1) & (s->cap - 1)) {
		if (s->k[i] == id)
			return &s->v[i];
		if (!s->k[i])
			return NULL;
	}
}

/* The counter of id, created at 0 (*fresh then). NULL: no memory. */
static uint32_t *idmap_add(struct idmap *s, uint64_t id, bool *fresh)
{
	uint32_t *c = idmap_get(s, id);
	if (fresh)
		*fresh = !c;
	if (c)
		return c;
	if ((s->n + 1) * 2 > s->cap) {
		struct idmap g = {0};
		g.cap = s->cap ? s->cap * 2 : 64;
		g.k = calloc(g.cap, sizeof(*g.k));
		g.v = calloc(g.cap, sizeof(*g.v));
		if (!g.k || !g.v) {
			free(g.k);
			free(g.v);
			return NULL;
		}
		for (size_t i = 0; i < s->cap; i++) {
			if (!s->k[i])
				continue;
			size_t j = hslot(s->k[i], g.cap);
			while (g.k[j])
				j = (j + 1) & (g.cap - 1);
			g.k[j] = s->k[i];
			g.v[j] = s->v[i];
		}
		g.n = s->n;
		free(s->k);
		free(s->v);
		*s = g;
	}
	size_t i = hslot(id, s->cap);
	while (s->k[i])
		i = (i + 1) & (s->cap - 1);
	s->k[i] = id;
	s->v[i] = 0;
	s->n++;
	return &s->v[i];
}

static void idmap_free(struct idmap *s)
{
	free(s->k);
	free(s->v);
	*s = (struct idmap){0};
}

struct idvec {
	uint64_t *v;
	size_t n, cap;
};

static int idvec_push(struct idvec *q, uint64_t id)
{
	if (q->n == q->cap) {
		size_t cap = q->cap ? q->cap * 2 : 64;
		uint64_t *v = realloc(q->v, cap * sizeof(*v));
		if (!v)
			return -ENOMEM;
		q->v = v;
		q->cap = cap;
	}
	q->v[q->n++] = id;
	return 0;
}

/* ---- frozen copies ---- */

static struct msino *ms_ino(const struct msnap *s, uint64_t id)
{
	if (!s->hn)
		return NULL;
	for (size_t i = hslot(id, s->hn);; i = (i + 1) & (s->hn - 1)) {
		uint32_t k = s->h[i];
		if (!k)
			return NULL;
		if (s->v[k - 1].a.fileid == id)
			return &s->v[k - 1];
	}
}

static int ms_rehash(struct msnap *s)
{
	size_t hn = s->hn ? s->hn * 2 : 64;
	uint32_t *h = calloc(hn, sizeof(*h));
	if (!h)
		return -ENOMEM;
	for (size_t k = 0; k < s->n; k++) {
		size_t i = hslot(s->v[k].a.fileid, hn);
		while (h[i])
			i = (i + 1) & (hn - 1);
		h[i] = (uint32_t)k + 1;
	}
	free(s->h);
	s->h = h;
	s->hn = hn;
	return 0;
}

static void ino_free(struct msino *in)
{
	for (size_t i = 0; i < in->n; i++)
		free(in->e[i].name);
	free(in->e);
	free(in->symlink);
}

static void snap_free(struct msnap *s)
{
	if (!s)
		return;
	for (size_t i = 0; i < s->n; i++)
		ino_free(&s->v[i]);
	free(s->v);
	free(s->h);
	free(s->nh);
	free(s);
}

void ms_free_all(struct meta *m)
{
	for (size_t i = 0; i < m->nsnaps; i++)
		snap_free(m->snaps[i]);
	free(m->snaps);
	free(m->snap_idx);
	m->snaps = NULL;
	m->snap_idx = NULL;
	m->nsnaps = m->capsnaps = 0;
}

static struct msnap *by_index(struct meta *m, uint32_t idx)
{
	return m->snap_idx && idx < META_SNAP_DIRS_INDEX ? m->snap_idx[idx] : NULL;
}

static struct msnap *by_name(struct meta *m, const char *name)
{
	for (size_t i = 0; i < m->nsnaps; i++)
		if (strcmp(m->snaps[i]->info.name, name) == 0)
			return m->snaps[i];
	return NULL;
}

static void snap_drop(struct meta *m, struct msnap *s)
{
	for (size_t i = 0; i < m->nsnaps; i++) {
		if (m->snaps[i] == s) {
			memmove(&m->snaps[i], &m->snaps[i + 1],
				(m->nsnaps - i - 1) * sizeof(*m->snaps));
			m->nsnaps--;
			break;
		}
	}
	m->snap_idx[s->info.index] = NULL;
	m->img_bytes -= s->bytes;
	snap_free(s);
}

bool ms_holds(struct meta *m, uint64_t fileid, const struct msnap *except)
{
	for (size_t i = 0; i < m->nsnaps; i++)
		if (m->snaps[i] != except && ms_ino(m->snaps[i], fileid))
			return true;
	return false;
}

/* ---- entries ---- */

static size_t snap_esize(size_t nl, size_t rl)
{
	return 4 + 34 + nl + rl;
}

static int enc_snap(struct mbuf *b, const struct meta_snapinfo *si)
{
	size_t nl = strlen(si->name), rl = strlen(si->root_name);
	uint8_t *p = mr_ent(b, ME_SNAP, snap_esize(nl, rl) - 4);
	if (!p)
		return -ENOMEM;
	le_put32(p, si->index);
	le_put64(p + 4, si->root);
	le_put64(p + 12, si->root_parent);
	le_put64(p + 20, (uint64_t)si->created.sec);
	le_put32(p + 28, si->created.nsec);
	p[32] = (uint8_t)nl;
	memcpy(p + 33, si->name, nl);
	p[33 + nl] = (uint8_t)rl;
	memcpy(p + 34 + nl, si->root_name, rl);
	return 0;
}

static int enc_ino(struct mbuf *b, uint32_t idx, const struct meta_attr *a, const char *symlink)
{
	size_t sl = symlink ? strlen(symlink) : 0;
	uint8_t *p = mr_ent(b, ME_SNAP_INODE, 4 + mt_inode_esize(sl) - 4);
	if (!p)
		return -ENOMEM;
	le_put32(p, idx);
	mr_inode_body(p + 4, a, symlink, sl);
	return 0;
}

static int enc_dent(struct mbuf *b, uint32_t idx, uint64_t dir, uint64_t cookie, uint64_t fileid,
		    const char *name, size_t len)
{
	uint8_t *p = mr_ent(b, ME_SNAP_DIRENT, 4 + mt_dirent_esize(len) - 4);
	if (!p)
		return -ENOMEM;
	le_put32(p, idx);
	le_put64(p + 4, dir);
	le_put64(p + 12, cookie);
	le_put64(p + 20, fileid);
	p[28] = (uint8_t)len;
	memcpy(p + 29, name, len);
	return 0;
}

static int apply_snap(struct meta *m, const uint8_t *p, size_t n)
{
	if (n < 34)
		return -EUCLEAN;
	uint32_t idx = le_get32(p);
	size_t nl = p[32];
	if (n < 34 + nl)
		return -EUCLEAN;
	size_t rl = p[33 + nl];
	if (n != 34 + nl + rl || idx >= META_SNAP_DIRS_INDEX || nl == 0)
		return -EUCLEAN;
	if (!m->snap_idx) {
		m->snap_idx = calloc(META_SNAP_DIRS_INDEX, sizeof(*m->snap_idx));
		if (!m->snap_idx)
			return -ENOMEM;
	}
	if (m->snap_idx[idx])
		snap_drop(m, m->snap_idx[idx]);
	if (m->nsnaps == m->capsnaps) {
		size_t cap = m->capsnaps ? m->capsnaps * 2 : 16;
		struct msnap **v = realloc(m->snaps, cap * sizeof(*v));
		if (!v)
			return -ENOMEM;
		m->snaps = v;
		m->capsnaps = cap;
	}
	struct msnap *s = calloc(1, sizeof(*s));
	if (!s)
		return -ENOMEM;
	s->info.index = idx;
	s->info.root = le_get64(p + 4);
	s->info.root_parent = le_get64(p + 12);
	s->info.created.sec = (int64_t)le_get64(p + 20);
	s->info.created.nsec = le_get32(p + 28);
	memcpy(s->info.name, p + 33, nl);
	memcpy(s->info.root_name, p + 34 + nl, rl);
	s->bytes = snap_esize(nl, rl);
	m->img_bytes += s->bytes;
	m->snap_idx[idx] = s;
	m->snaps[m->nsnaps++] = s;
	if (idx + 1 > m->snap_next)
		m->snap_next = idx + 1;
	return 0;
}

static int apply_ino(struct meta *m, const uint8_t *p, size_t n)
{
	if (n < 4)
		return -EUCLEAN;
	struct msnap *s = by_index(m, le_get32(p));
	struct meta_attr a;
	const char *sl;
	size_t sll;
	int r = mr_inode_decode(p + 4, n - 4, &a, &sl, &sll);
	if (r < 0)
		return r;
	if (!s || a.fileid == 0 || a.fileid >> META_SNAP_SHIFT || a.type < META_REG ||
	    a.type > META_FIFO)
		return -EUCLEAN;
	char *copy = NULL;
	if (a.type == META_LNK || sll) {
		copy = malloc(sll + 1);
		if (!copy)
			return -ENOMEM;
		memcpy(copy, sl, sll);
		copy[sll] = 0;
	}
	struct msino *in = ms_ino(s, a.fileid);
	if (in) {
		if (in->a.type == META_REG)
			s->info.files--;
		free(in->symlink);
	} else {
		if ((s->n + 1) * 2 > s->hn && ms_rehash(s) < 0) {
			free(copy);
			return -ENOMEM;
		}
		if (s->n == s->cap) {
			size_t cap = s->cap ? s->cap * 2 : 16;
			struct msino *v = realloc(s->v, cap * sizeof(*v));
			if (!v) {
				free(copy);
				return -ENOMEM;
			}
			s->v = v;
			s->cap = cap;
		}
		in = &s->v[s->n++];
		*in = (struct msino){0};
		size_t i = hslot(a.fileid, s->hn);
		while (s->h[i])
			i = (i + 1) & (s->hn - 1);
		s->h[i] = (uint32_t)s->n;
		s->bytes += 4 + n;
		m->img_bytes += 4 + n;
	}
	in->a = a;
	in->symlink = copy;
	free(s->nh);
	s->nh = NULL;
	if (a.type == META_REG)
		s->info.files++;
	return 0;
}

static size_t ent_find(const struct msino *d, uint64_t cookie)
{
	size_t lo = 0, hi = d->n;
	while (lo < hi) {
		size_t mid = lo + (hi - lo) / 2;
		if (d->e[mid].cookie < cookie)
			lo = mid + 1;
		else
			hi = mid;
	}
	return lo;
}

static int apply_dent(struct meta *m, const uint8_t *p, size_t n)
{
	if (n < 29 || n != 29u + p[28] || p[28] == 0)
		return -EUCLEAN;
	struct msnap *s = by_index(m, le_get32(p));
	struct msino *d = s ? ms_ino(s, le_get64(p + 4)) : NULL;
	uint64_t cookie = le_get64(p + 12);
	if (!d || d->a.type != META_DIR || cookie < 3)
		return -EUCLEAN;
	char *name = malloc((size_t)p[28] + 1);
	if (!name)
		return -ENOMEM;
	memcpy(name, p + 29, p[28]);
	name[p[28]] = 0;
	size_t i = ent_find(d, cookie);
	if (i < d->n && d->e[i].cookie == cookie) {
		free(d->e[i].name);
	} else {
		if (d->n == d->cap) {
			size_t cap = d->cap ? d->cap * 2 : 8;
			struct msent *v = realloc(d->e, cap * sizeof(*v));
			if (!v) {
				free(name);
				return -ENOMEM;
			}
			d->e = v;
			d->cap = cap;
		}
		memmove(&d->e[i + 1], &d->e[i], (d->n - i) * sizeof(*d->e));
		d->n++;
		s->bytes += 4 + n;
		m->img_bytes += 4 + n;
	}
	d->e[i] = (struct msent){cookie, le_get64(p + 20), name};
	free(s->nh);
	s->nh = NULL;
	return 0;
}

int ms_apply(struct meta *m, enum meta_etype t, const uint8_t *p, size_t n)
{
	switch (t) {
	case ME_SNAP:
		return apply_snap(m, p, n);
	case ME_SNAP_INODE:
		return apply_ino(m, p, n);
	case ME_SNAP_DIRENT:
		return apply_dent(m, p, n);
	case ME_SNAP_DEL: {
		if (n != 4)
			return -EUCLEAN;
		struct msnap *s = by_index(m, le_get32(p));
		if (s)
			snap_drop(m, s);
		return 0;
	}
	case ME_SNAPNEXT:
		if (n != 8)
			return -EUCLEAN;
		if (le_get64(p) > m->snap_next && le_get64(p) <= META_SNAP_DIRS_INDEX)
			m->snap_next = (uint32_t)le_get64(p);
		return 0;
	default:
		return -EUCLEAN;
	}
}

static int encode_one(struct mbuf *b, const struct msnap *s)
{
	int r = enc_snap(b, &s->info);
	for (size_t i = 0; i < s->n && r == 0; i++)
		r = enc_ino(b, s->info.index, &s->v[i].a, s->v[i].symlink);
	for (size_t i = 0; i < s->n && r == 0; i++)
		for (size_t k = 0; k < s->v[i].n && r == 0; k++)
			r = enc_dent(b, s->info.index, s->v[i].a.fileid, s->v[i].e[k].cookie,
				     s->v[i].e[k].fileid, s->v[i].e[k].name,
				     strlen(s->v[i].e[k].name));
	return r;
}

int ms_encode(struct meta *m, struct mbuf *b)
{
	int r = m->snap_next ? mr_u64(b, ME_SNAPNEXT, m->snap_next) : 0;
	for (size_t i = 0; i < m->nsnaps && r == 0; i++)
		r = encode_one(b, m->snaps[i]);
	return r;
}

/* ---- lookups by snapshot fileid ---- */

/* The snapshot and frozen object of fileid; *in NULL for the virtual .snapshots/NAME. */
static int resolve(struct meta *m, uint64_t fileid, struct msnap **s, struct msino **in)
{
	uint32_t idx = META_SNAP_INDEX(fileid);
	*s = idx == META_SNAP_DIRS_INDEX ? NULL : by_index(m, idx);
	if (!*s)
		return -ENOENT;
	*in = NULL;
	if (META_SNAP_LIVE(fileid) == 0)
		return 0;
	*in = ms_ino(*s, META_SNAP_LIVE(fileid));
	return *in ? 0 : -ENOENT;
}

static uint64_t vparent(const struct msnap *s, const struct msino *in)
{
	if (!in)
		return META_SNAP_FILEID(META_SNAP_DIRS_INDEX, 0);
	if (in->a.type != META_DIR)
		return 0;
	if (in->a.fileid == s->info.root)
		return META_SNAP_FILEID(s->info.index, 0);
	return META_SNAP_FILEID(s->info.index, in->a.parent);
}

int ms_getattr(struct meta *m, uint64_t fileid, struct meta_attr *out)
{
	struct msnap *s;
	struct msino *in;
	int r = resolve(m, fileid, &s, &in);
	if (r < 0)
		return r;
	if (!in) {
		const struct msino *root = ms_ino(s, s->info.root);
		*out = (struct meta_attr){0};
		out->gen = VIRT_GEN;
		out->type = META_DIR;
		out->mode = 0555;
		out->nlink = 2 + (root && root->a.type == META_DIR);
		out->size = 4096 + 64;
		out->atime = out->mtime = out->ctime = s->info.created;
	} else {
		*out = in->a;
		if (in->a.type == META_DIR)
			out->size = 4096 + in->n * 64;
	}
	out->fileid = META_SNAP_FILEID(s->info.index, META_SNAP_LIVE(fileid));
	out->parent = vparent(s, in);
	return 0;
}

static size_t name_slot(uint64_t dir, const char *name, size_t nb)
{
	return (size_t)XXH3_64bits_withSeed(name, strlen(name), dir) & (nb - 1);
}

static int names_build(struct msnap *s)
{
	size_t total = 0;
	for (size_t i = 0; i < s->n; i++)
		total += s->v[i].n;
	size_t nb = 16;
	while (nb < total * 2)
		nb *= 2;
	uint64_t *h = calloc(nb, sizeof(*h));
	if (!h)
		return -ENOMEM;
	for (size_t i = 0; i < s->n; i++) {
		for (size_t k = 0; k < s->v[i].n; k++) {
			size_t j = name_slot(s->v[i].a.fileid, s->v[i].e[k].name, nb);
			while (h[j])
				j = (j + 1) & (nb - 1);
			h[j] = ((uint64_t)i << 32 | k) + 1;
		}
	}
	s->nh = h;
	s->nhn = nb;
	return 0;
}

/* The frozen entry name in frozen directory in (of s); NULL when there is none. */
static const struct msent *name_find(struct msnap *s, const struct msino *in, const char *name)
{
	if (!s->nh && names_build(s) < 0) {
		for (size_t i = 0; i < in->n; i++)
			if (strcmp(in->e[i].name, name) == 0)
				return &in->e[i];
		return NULL;
	}
	for (size_t j = name_slot(in->a.fileid, name, s->nhn);; j = (j + 1) & (s->nhn - 1)) {
		uint64_t v = s->nh[j];
		if (!v)
			return NULL;
		const struct msino *d = &s->v[(v - 1) >> 32];
		const struct msent *e = &d->e[(uint32_t)(v - 1)];
		if (d == in && strcmp(e->name, name) == 0)
			return e;
	}
}

int ms_lookup(struct meta *m, uint64_t dir, const char *name, uint64_t *fileid)
{
	struct msnap *s;
	struct msino *in;
	int r = resolve(m, dir, &s, &in);
	if (r < 0)
		return r;
	if (in && in->a.type != META_DIR)
		return -ENOTDIR;
	if (strnlen(name, META_NAME_MAX + 1) > META_NAME_MAX)
		return -ENAMETOOLONG;
	if (strcmp(name, ".") == 0) {
		*fileid = dir;
		return 0;
	}
	if (strcmp(name, "..") == 0) {
		*fileid = vparent(s, in);
		return 0;
	}
	if (!in) {
		if (strcmp(name, s->info.root_name) != 0)
			return -ENOENT;
		*fileid = META_SNAP_FILEID(s->info.index, s->info.root);
		return 0;
	}
	const struct msent *e = name_find(s, in, name);
	if (!e)
		return -ENOENT;
	*fileid = META_SNAP_FILEID(s->info.index, e->fileid);
	return 0;
}

int ms_readlink(struct meta *m, uint64_t fileid, char *buf, size_t len)
{
	struct msnap *s;
	struct msino *in;
	int r = resolve(m, fileid, &s, &in);
	if (r < 0)
		return r;
	if (!in || in->a.type != META_LNK || !in->symlink)
		return -EINVAL;
	size_t n = strlen(in->symlink);
	if (n + 1 > len)
		return -ERANGE;
	memcpy(buf, in->symlink, n + 1);
	return 0;
}

int ms_readdir(struct meta *m, uint64_t dir, uint64_t after, meta_dirent_fn fn, void *arg)
{
	struct msnap *s;
	struct msino *in;
	int r = resolve(m, dir, &s, &in);
	if (r < 0)
		return r;
	if (after == UINT64_MAX)
		return 0;
	if (!in) {
		if (after < 3)
			fn(arg, s->info.root_name, META_SNAP_FILEID(s->info.index, s->info.root),
			   3);
		return 0;
	}
	if (in->a.type != META_DIR)
		return -ENOTDIR;
	for (size_t i = ent_find(in, after + 1); i < in->n; i++)
		if (fn(arg, in->e[i].name, META_SNAP_FILEID(s->info.index, in->e[i].fileid),
		       in->e[i].cookie))
			break;
	return 0;
}

/* ---- the operations ---- */

void meta_snap_volsnap(const char *name, char *buf, size_t len)
{
	snprintf(buf, len, "nfsgw-%s", name);
}

static int name_ok(const char *name)
{
	size_t n = strnlen(name, NAME_MAX_SNAP + 1);
	if (n == 0 || n > NAME_MAX_SNAP || name[0] == '.' || name[0] == '-')
		return -EINVAL;
	for (size_t i = 0; i < n; i++) {
		char c = name[i];
		if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
		      c == '.' || c == '_' || c == '-'))
			return -EINVAL;
	}
	return 0;
}

/* Where fileid is named: a directory's parent entry, else the first name found. */
static struct mdent *name_of(struct meta *m, const struct minode *in)
{
	if (in->dir) {
		struct minode *p = mt_inode(m, in->a.parent);
		if (!p || !p->dir)
			return NULL;
		for (size_t i = 0; i < p->dir->n; i++)
			if (p->dir->v[i].d && p->dir->v[i].d->fileid == in->a.fileid)
				return p->dir->v[i].d;
		return NULL;
	}
	for (size_t b = 0; b < m->dhn; b++)
		for (struct mdent *d = m->dh[b]; d; d = d->hnext)
			if (d->fileid == in->a.fileid)
				return d;
	return NULL;
}

/* Calls fn for every object under root once (hard links once), and dfn for every name. */
struct walk {
	int (*fn)(void *arg, struct minode *in);
	int (*dfn)(void *arg, const struct mdent *d);
	void *arg;
	struct idmap seen;
};

static int walk(struct meta *m, uint64_t root, struct walk *w)
{
	struct idvec q = {0};
	struct minode *ri = mt_inode(m, root);
	int r = ri ? 0 : -ENOENT;
	bool fresh;
	if (r == 0 && !idmap_add(&w->seen, root, &fresh))
		r = -ENOMEM;
	if (r == 0)
		r = idvec_push(&q, root);
	while (r == 0 && q.n) {
		struct minode *in = mt_inode(m, q.v[--q.n]);
		if (!in)
			continue;
		if (w->fn && (r = w->fn(w->arg, in)) != 0)
			break;
		if (!in->dir)
			continue;
		for (size_t i = 0; i < in->dir->n && r == 0; i++) {
			struct mdent *d = in->dir->v[i].d;
			if (!d)
				continue;
			if (w->dfn && (r = w->dfn(w->arg, d)) != 0)
				break;
			if (!idmap_add(&w->seen, d->fileid, &fresh))
				r = -ENOMEM;
			else if (fresh)
				r = idvec_push(&q, d->fileid);
		}
	}
	free(q.v);
	return r;
}

struct freeze {
	struct meta *m;
	uint32_t idx;
};

static int freeze_ino(void *arg, struct minode *in)
{
	struct freeze *f = arg;
	return enc_ino(&f->m->q, f->idx, &in->a, in->symlink);
}

static int freeze_dent(void *arg, const struct mdent *d)
{
	struct freeze *f = arg;
	return enc_dent(&f->m->q, f->idx, d->dir, d->cookie, d->fileid, d->name, d->namelen);
}

static int pick_index(struct meta *m, uint32_t *out)
{
	uint32_t start = m->snap_next && m->snap_next < META_SNAP_DIRS_INDEX ? m->snap_next : 1;
	/* Indices are not reused while others are free, so an old handle into a deleted
	 * snapshot stays stale for as long as possible. */
	for (uint32_t k = 0; k < META_SNAP_DIRS_INDEX - 1; k++) {
		uint32_t i = 1 + (start - 1 + k) % (META_SNAP_DIRS_INDEX - 1);
		if (!by_index(m, i)) {
			*out = i;
			return 0;
		}
	}
	return -ENOSPC;
}

int meta_snapshot_create(struct meta *m, uint64_t fileid, const char *name, uint32_t *index,
			 meta_cb cb, void *arg)
{
	int r = mo_begin(m);
	if (r < 0)
		return r;
	if ((r = name_ok(name)) < 0)
		return r;
	if ((fileid & META_SNAP_BIT) || fileid == META_ROOT)
		return -EINVAL;
	struct minode *in = mt_inode(m, fileid);
	if (!in)
		return -ENOENT;
	if (by_name(m, name))
		return -EEXIST;
	if (m->nsnaps >= META_SNAP_MAX)
		return -ENOSPC;
	struct mdent *where = name_of(m, in);
	if (!where)
		return -ENOENT;
	if (!m->snap_idx) {
		m->snap_idx = calloc(META_SNAP_DIRS_INDEX, sizeof(*m->snap_idx));
		if (!m->snap_idx)
			return -ENOMEM;
	}
	uint32_t idx;
	if ((r = pick_index(m, &idx)) < 0)
		return r;
	struct meta_snapinfo si = {.index = idx, .root = fileid, .root_parent = where->dir};
	snprintf(si.name, sizeof(si.name), "%s", name);
	memcpy(si.root_name, where->name, where->namelen);
	meta_now(&si.created);
	size_t start = m->q.len;
	r = mr_u64(&m->q, ME_SNAPNEXT, idx + 1);
	if (r == 0)
		r = enc_snap(&m->q, &si);
	struct freeze f = {m, idx};
	struct walk w = {.fn = freeze_ino, .dfn = freeze_dent, .arg = &f};
	if (r == 0)
		r = walk(m, fileid, &w);
	idmap_free(&w.seen);
	size_t bytes = m->q.len - start;
	if (r == 0 && bytes > OP_MAX)
		r = -EFBIG;
	if (r == 0)
		r = mo_space(m, bytes);
	if (r < 0) {
		m->q.len = start;
		return r;
	}
	r = mo_commit(m, start, 0, cb, arg, MW_FUA);
	if (r == 0 && index)
		*index = idx;
	return r;
}

struct each_reg {
	int (*fn)(void *arg, uint64_t fileid);
	void *arg;
};

static int each_reg_fn(void *arg, struct minode *in)
{
	struct each_reg *e = arg;
	return in->a.type == META_REG ? e->fn(e->arg, in->a.fileid) : 0;
}

int meta_each_regular(struct meta *m, uint64_t fileid, int (*fn)(void *arg, uint64_t fileid),
		      void *arg)
{
	if (fileid & META_SNAP_BIT)
		return -EINVAL;
	struct each_reg e = {fn, arg};
	struct walk w = {.fn = each_reg_fn, .arg = &e};
	int r = walk(m, fileid, &w);
	idmap_free(&w.seen);
	return r;
}

int meta_each_snapfile(struct meta *m, const char *name, int (*fn)(void *arg, uint64_t fileid),
		       void *arg)
{
	struct msnap *s = by_name(m, name);
	if (!s)
		return -ENOENT;
	for (size_t i = 0; i < s->n; i++) {
		if (s->v[i].a.type != META_REG)
			continue;
		int r = fn(arg, s->v[i].a.fileid);
		if (r)
			return r;
	}
	return 0;
}

int meta_snapshot_delete(struct meta *m, const char *name, uint64_t *freed, uint32_t nfreed_max,
			 uint32_t *nfreed, meta_cb cb, void *arg)
{
	int r = mo_begin(m);
	if (r < 0)
		return r;
	struct msnap *s = by_name(m, name);
	if (!s)
		return -ENOENT;
	uint32_t n = 0;
	for (size_t i = 0; i < s->n; i++) {
		uint64_t id = s->v[i].a.fileid;
		if (s->v[i].a.type != META_REG || mt_inode(m, id) || ms_holds(m, id, s))
			continue;
		if (n >= nfreed_max)
			return -ENOBUFS;
		freed[n++] = id;
	}
	size_t start = m->q.len;
	uint8_t *p = mr_ent(&m->q, ME_SNAP_DEL, 4);
	if (p)
		le_put32(p, s->info.index);
	r = mo_commit(m, start, p ? 0 : -ENOMEM, cb, arg, MW_FUA);
	if (r == 0)
		*nfreed = n;
	return r;
}

static void fill_info(const struct msnap *s, struct meta_snapinfo *out)
{
	*out = s->info;
}

int meta_snapshot_find(struct meta *m, const char *name, struct meta_snapinfo *out)
{
	struct msnap *s = by_name(m, name);
	if (!s)
		return -ENOENT;
	fill_info(s, out);
	return 0;
}

int meta_snapshot_by_index(struct meta *m, uint32_t index, struct meta_snapinfo *out)
{
	struct msnap *s = by_index(m, index);
	if (!s)
		return -ENOENT;
	fill_info(s, out);
	return 0;
}

int meta_snapshot_each(struct meta *m, int (*fn)(void *arg, const struct meta_snapinfo *si),
		       void *arg)
{
	for (size_t i = 0; i < m->nsnaps; i++) {
		struct meta_snapinfo si;
		fill_info(m->snaps[i], &si);
		if (fn(arg, &si))
			break;
	}
	return 0;
}

/* ---- revert ---- */

/* The live name (dir, cookie, fileid, name) is in the frozen copy as it is: a revert leaves
 * it alone. The same test from both sides keeps the two passes consistent. */
static bool kept(const struct msnap *s, uint64_t dir, uint64_t cookie, uint64_t fileid,
		 const char *name)
{
	const struct msino *fi = ms_ino(s, dir);
	if (!fi || fi->a.type != META_DIR)
		return false;
	size_t i = ent_find(fi, cookie);
	return i < fi->n && fi->e[i].cookie == cookie && fi->e[i].fileid == fileid &&
	       strcmp(fi->e[i].name, name) == 0;
}

struct region {
	const struct msnap *s;
	struct idmap removed; /* names removed, by target */
	struct idvec dirs;    /* live directories in the region */
};

static int region_ino(void *arg, struct minode *in)
{
	struct region *g = arg;
	return in->dir ? idvec_push(&g->dirs, in->a.fileid) : 0;
}

static int region_dent(void *arg, const struct mdent *d)
{
	struct region *g = arg;
	if (kept(g->s, d->dir, d->cookie, d->fileid, d->name))
		return 0;
	uint32_t *c = idmap_add(&g->removed, d->fileid, NULL);
	if (!c)
		return -ENOMEM;
	(*c)++;
	return 0;
}

static int rv_inode(struct meta *m, const struct meta_attr *a, const char *symlink)
{
	struct minode t = {0};
	t.a = *a;
	t.symlink = (char *)symlink;
	return mr_inode(&m->q, &t);
}

static bool time_same(struct meta_time x, struct meta_time y)
{
	return x.sec == y.sec && x.nsec == y.nsec;
}

static bool attr_same(const struct minode *in, const struct meta_attr *a, const char *symlink)
{
	const struct meta_attr *b = &in->a;
	bool sl = (!symlink && !in->symlink) ||
		  (symlink && in->symlink && strcmp(symlink, in->symlink) == 0);
	return sl && a->gen == b->gen && a->type == b->type && a->mode == b->mode &&
	       a->nlink == b->nlink && a->uid == b->uid && a->gid == b->gid && a->size == b->size &&
	       a->rdev_major == b->rdev_major && a->rdev_minor == b->rdev_minor &&
	       time_same(a->atime, b->atime) && time_same(a->mtime, b->mtime) &&
	       time_same(a->ctime, b->ctime) && a->parent == b->parent;
}

static uint32_t count_of(const struct idmap *map, uint64_t id)
{
	uint32_t *c = idmap_get((struct idmap *)map, id);
	return c ? *c : 0;
}

/*
 * Encodes the revert (see meta.h) into the queue as a difference: the region is what is named
 * root_name in root_parent now and everything under it; names there that the frozen copy
 * lacks go, frozen names missing there come back, objects get the frozen attributes with link
 * counts recomputed (links from outside the region count), and region objects left without
 * a name are freed. Unchanged names and attributes produce no entries.
 */
static int revert_encode(struct meta *m, struct msnap *s, struct region *g, struct walk *w,
			 struct idmap *added, uint64_t *freed, uint32_t nfreed_max,
			 uint32_t *nfreed)
{
	const struct meta_snapinfo *si = &s->info;
	struct minode *pi = mt_inode(m, si->root_parent);
	if (!pi || !pi->dir)
		return -ENOENT;
	size_t rl = strlen(si->root_name);
	struct mdent *cur = mt_dent(m, si->root_parent, si->root_name, rl);
	struct minode *x = cur ? mt_inode(m, cur->fileid) : NULL;
	bool keep_top = x && cur->fileid == si->root;
	int r = 0;
	uint32_t *c;
	if (x) {
		if (!keep_top) {
			if (!(c = idmap_add(&g->removed, x->a.fileid, NULL)))
				return -ENOMEM;
			(*c)++;
		}
		w->fn = region_ino;
		w->dfn = region_dent;
		w->arg = g;
		if ((r = walk(m, x->a.fileid, w)) < 0)
			return r;
	}
	if (!keep_top) {
		if (!(c = idmap_add(added, si->root, NULL)))
			return -ENOMEM;
		(*c)++;
	}
	for (size_t i = 0; i < s->n; i++) {
		const struct msino *fi = &s->v[i];
		bool live_dir = fi->a.type == META_DIR && mt_inode(m, fi->a.fileid);
		/* A frozen directory alive outside the region would get a second name. */
		if (live_dir && !idmap_get(&w->seen, fi->a.fileid))
			return -EBUSY;
		for (size_t k = 0; k < fi->n; k++) {
			const struct msent *e = &fi->e[k];
			struct mdent *ld =
			    live_dir ? mt_dent(m, fi->a.fileid, e->name, strlen(e->name)) : NULL;
			if (ld && ld->cookie == e->cookie && ld->fileid == e->fileid)
				continue;
			if (!(c = idmap_add(added, e->fileid, NULL)))
				return -ENOMEM;
			(*c)++;
		}
	}
	/* What is freed: region objects the frozen copy lacks, left without a name. */
	uint32_t n = 0;
	for (size_t i = 0; i < g->removed.cap; i++) {
		uint64_t id = g->removed.k[i];
		struct minode *in = id ? mt_inode(m, id) : NULL;
		if (!in || ms_ino(s, id))
			continue;
		if (!in->dir && in->a.nlink > g->removed.v[i])
			continue;
		if (in->a.type == META_REG && !ms_holds(m, id, NULL)) {
			if (n >= nfreed_max)
				return -ENOBUFS;
			freed[n++] = id;
		}
	}
	struct meta_time now;
	meta_now(&now);
	/* 1. names that go */
	for (size_t i = 0; i < g->dirs.n && r == 0; i++) {
		struct minode *d = mt_inode(m, g->dirs.v[i]);
		for (size_t k = 0; d && k < d->dir->n && r == 0; k++) {
			struct mdent *de = d->dir->v[k].d;
			if (de && !kept(s, de->dir, de->cookie, de->fileid, de->name))
				r = mr_dirent_del(&m->q, de->dir, de->name, de->namelen);
		}
	}
	if (r == 0 && cur && !keep_top)
		r = mr_dirent_del(&m->q, si->root_parent, si->root_name, rl);
	/* 2. region objects the frozen copy lacks: freed, or left with their outside links */
	for (size_t i = 0; i < g->removed.cap && r == 0; i++) {
		uint64_t id = g->removed.k[i];
		struct minode *in = id ? mt_inode(m, id) : NULL;
		if (!in || ms_ino(s, id))
			continue;
		if (in->dir || in->a.nlink <= g->removed.v[i]) {
			r = mr_u64(&m->q, ME_INODE_FREE, id);
		} else {
			struct meta_attr a = in->a;
			a.nlink -= g->removed.v[i];
			a.ctime = now;
			r = rv_inode(m, &a, in->symlink);
		}
	}
	/* 3. the frozen objects' attributes, with their links as they will be */
	for (size_t i = 0; i < s->n && r == 0; i++) {
		const struct msino *fi = &s->v[i];
		struct minode *in = mt_inode(m, fi->a.fileid);
		struct meta_attr a = fi->a;
		if (a.type != META_DIR)
			a.nlink = (in ? in->a.nlink - count_of(&g->removed, a.fileid) : 0) +
				  count_of(added, a.fileid);
		if (!in || !attr_same(in, &a, fi->symlink))
			r = rv_inode(m, &a, fi->symlink);
	}
	/* 4. names that come back; a directory that comes back counts cookies on from its
	 * largest (a live one's next cookie is past every frozen one already) */
	for (size_t i = 0; i < s->n && r == 0; i++) {
		const struct msino *fi = &s->v[i];
		if (fi->a.type != META_DIR)
			continue;
		bool live = mt_inode(m, fi->a.fileid) != NULL;
		for (size_t k = 0; k < fi->n && r == 0; k++) {
			const struct msent *e = &fi->e[k];
			size_t len = strlen(e->name);
			struct mdent *ld = live ? mt_dent(m, fi->a.fileid, e->name, len) : NULL;
			if (!(ld && ld->cookie == e->cookie && ld->fileid == e->fileid))
				r = mr_dirent_add(&m->q, fi->a.fileid, e->cookie, e->fileid,
						  e->name, len);
		}
		if (r == 0 && !live && fi->n)
			r = mr_dirnext(&m->q, fi->a.fileid, fi->e[fi->n - 1].cookie + 1);
	}
	/* 5. the snapshotted object back under its name */
	if (!keep_top) {
		const struct msino *root = ms_ino(s, si->root);
		struct minode pn = *pi;
		pn.a.mtime = pn.a.ctime = now;
		if (root && root->a.type == META_DIR)
			pn.a.nlink++;
		if (x && x->dir)
			pn.a.nlink--;
		if (r == 0)
			r = mr_inode(&m->q, &pn);
		if (r == 0)
			r = mr_dirent_add(&m->q, si->root_parent, pi->dir->next_cookie, si->root,
					  si->root_name, rl);
	}
	if (r == 0)
		*nfreed = n;
	return r;
}

int meta_snapshot_revert(struct meta *m, const char *name, uint64_t *freed, uint32_t nfreed_max,
			 uint32_t *nfreed, meta_cb cb, void *arg)
{
	int r = mo_begin(m);
	if (r < 0)
		return r;
	struct msnap *s = by_name(m, name);
	if (!s)
		return -ENOENT;
	if (!ms_ino(s, s->info.root))
		return -EUCLEAN;
	struct region g = {.s = s};
	struct walk w = {0};
	struct idmap added = {0};
	size_t start = m->q.len;
	uint32_t n = 0;
	r = revert_encode(m, s, &g, &w, &added, freed, nfreed_max, &n);
	idmap_free(&g.removed);
	idmap_free(&w.seen);
	idmap_free(&added);
	free(g.dirs.v);
	size_t bytes = m->q.len - start;
	if (r == 0 && bytes > OP_MAX)
		r = -EFBIG;
	if (r == 0)
		r = mo_space(m, bytes);
	if (r < 0) {
		m->q.len = start;
		return r;
	}
	/* Nothing differs: still a callback, after what is queued is durable. */
	r = mo_commit(m, start, 0, cb, arg, MW_FUA);
	if (r == 0)
		*nfreed = n;
	return r;
}

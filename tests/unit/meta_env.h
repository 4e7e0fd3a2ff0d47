/*
 * meta_env: helpers shared by the gateway metadata tests (test_meta.c, test_meta_snap.c) on
 * top of engine_env.h: open/close a meta on an engine, run one metadata operation to its
 * callback, list a directory, and white-box checks (tree consistency, attribute equality).
 * Test-only, header-only: each test binary includes it once.
 */
#ifndef BLOCKD_TEST_META_ENV_H
#define BLOCKD_TEST_META_ENV_H

#include "engine_env.h"
#include "nfsgw/meta.h"
#include "nfsgw/meta_priv.h"

static inline struct meta *mopen(struct env *env, struct engine *e)
{
	struct meta *m = NULL;
	struct hop *h = hop_new(0);
	assert_int_equal(meta_open(env->l, engine_bdev(e), &m, done_cb, &h->d), 0);
	int r = hop_wait(env, h, 10000);
	free(h);
	assert_int_equal(r, 0);
	return m;
}

static inline void mclose(struct env *env, struct meta *m)
{
	struct hop *h = hop_new(0);
	assert_int_equal(meta_close(m, done_cb, &h->d), 0);
	int r = hop_wait(env, h, 10000);
	free(h);
	assert_int_equal(r, 0);
}

/* Waits for the callback of an operation that returned r. */
static inline int finish(struct env *env, struct hop *h, int r)
{
	if (r == 0)
		r = hop_wait(env, h, 10000);
	free(h);
	return r;
}

static inline int mk_ex(struct env *env, struct meta *m, uint64_t dir, const char *name,
			enum meta_type t, const char *sl, bool excl, uint64_t *id)
{
	struct meta_create_args a = {.dir = dir,
				     .name = name,
				     .type = t,
				     .mode = 0644,
				     .uid = 7,
				     .gid = 8,
				     .rdev_major = 3,
				     .rdev_minor = 4,
				     .symlink = sl,
				     .exclusive = excl};
	struct hop *h = hop_new(0);
	bool existed = false;
	uint64_t fid = 0;
	int r = finish(env, h, meta_create(m, &a, &fid, &existed, done_cb, &h->d));
	if (id)
		*id = fid;
	return r;
}

static inline uint64_t mk(struct env *env, struct meta *m, uint64_t dir, const char *name,
			  enum meta_type t, const char *sl)
{
	uint64_t id;
	assert_int_equal(mk_ex(env, m, dir, name, t, sl, true, &id), 0);
	assert_true(id > META_ROOT);
	return id;
}

static inline int rm(struct env *env, struct meta *m, uint64_t dir, const char *name, bool isdir,
		     uint64_t *freed)
{
	uint64_t f = 0;
	struct hop *h = hop_new(0);
	int r = finish(env, h, meta_remove(m, dir, name, isdir, &f, done_cb, &h->d));
	if (freed)
		*freed = f;
	return r;
}

static inline int mv(struct env *env, struct meta *m, uint64_t fd, const char *from, uint64_t td,
		     const char *to, uint64_t *freed)
{
	uint64_t f = 0;
	struct hop *h = hop_new(0);
	int r = finish(env, h, meta_rename(m, fd, from, td, to, &f, done_cb, &h->d));
	if (freed)
		*freed = f;
	return r;
}

static inline int ln(struct env *env, struct meta *m, uint64_t id, uint64_t dir, const char *name)
{
	struct hop *h = hop_new(0);
	return finish(env, h, meta_link(m, id, dir, name, done_cb, &h->d));
}

static inline int setattr(struct env *env, struct meta *m, uint64_t id,
			  const struct meta_setattr *sa)
{
	struct hop *h = hop_new(0);
	return finish(env, h, meta_setattr(m, id, sa, done_cb, &h->d));
}

static inline uint64_t look(struct meta *m, uint64_t dir, const char *name)
{
	uint64_t id = 0;
	int r = meta_lookup(m, dir, name, &id);
	return r == 0 ? id : 0;
}

struct listing {
	int n, max, stop_after;
	char names[128][32];
	uint64_t ids[128], cookies[128];
	uint64_t last;
};

static inline int list_fn(void *arg, const char *name, uint64_t fileid, uint64_t cookie)
{
	struct listing *ls = arg;
	if (ls->stop_after && ls->n >= ls->stop_after)
		return 1;
	assert_true(ls->n < 128);
	assert_true(cookie > ls->last);
	ls->last = cookie;
	snprintf(ls->names[ls->n], sizeof(ls->names[0]), "%s", name);
	ls->ids[ls->n] = fileid;
	ls->cookies[ls->n] = cookie;
	ls->n++;
	return 0;
}

static inline void list_dir(struct meta *m, uint64_t dir, struct listing *ls)
{
	memset(ls, 0, sizeof(*ls));
	assert_int_equal(meta_readdir(m, dir, 0, list_fn, ls), 0);
}

/* Every entry names a live inode, directories' nlink and parent agree with the entries,
 * every other inode's nlink is its number of names, and nothing is unreachable. */
static inline void check_tree(struct meta *m)
{
	uint32_t *links = calloc(m->next_fileid + 1, sizeof(*links));
	assert_non_null(links);
	for (size_t i = 0; i < m->ihn; i++) {
		for (struct minode *in = m->ih[i]; in; in = in->hnext) {
			assert_true(in->a.fileid < m->next_fileid);
			if (!in->dir)
				continue;
			uint32_t subdirs = 0;
			uint64_t live = 0;
			for (size_t k = 0; k < in->dir->n; k++) {
				struct mdent *d = in->dir->v[k].d;
				if (!d)
					continue;
				live++;
				assert_true(d->cookie < in->dir->next_cookie);
				struct minode *t = mt_inode(m, d->fileid);
				assert_non_null(t);
				links[d->fileid]++;
				if (t->dir) {
					subdirs++;
					assert_int_equal(t->a.parent, in->a.fileid);
				}
			}
			assert_int_equal(live, in->dir->live);
			assert_int_equal(in->a.nlink, 2 + subdirs);
		}
	}
	for (size_t i = 0; i < m->ihn; i++) {
		for (struct minode *in = m->ih[i]; in; in = in->hnext) {
			if (in->a.fileid == META_ROOT)
				continue;
			if (in->dir)
				assert_int_equal(links[in->a.fileid], 1);
			else
				assert_int_equal(links[in->a.fileid], in->a.nlink);
		}
	}
	free(links);
}

static inline void attr_equal(const struct meta_attr *a, const struct meta_attr *b)
{
	assert_int_equal(a->fileid, b->fileid);
	assert_int_equal(a->gen, b->gen);
	assert_int_equal(a->type, b->type);
	assert_int_equal(a->mode, b->mode);
	assert_int_equal(a->nlink, b->nlink);
	assert_int_equal(a->uid, b->uid);
	assert_int_equal(a->gid, b->gid);
	assert_int_equal(a->size, b->size);
	assert_int_equal(a->rdev_major, b->rdev_major);
	assert_int_equal(a->rdev_minor, b->rdev_minor);
	assert_int_equal(a->atime.sec, b->atime.sec);
	assert_int_equal(a->atime.nsec, b->atime.nsec);
	assert_int_equal(a->mtime.sec, b->mtime.sec);
	assert_int_equal(a->mtime.nsec, b->mtime.nsec);
	assert_int_equal(a->ctime.sec, b->ctime.sec);
	assert_int_equal(a->ctime.nsec, b->ctime.nsec);
	assert_int_equal(a->parent, b->parent);
}

#endif

/*
 * test_meta: the gateway's replicated metadata (nfsgw/meta.h) on a real engine over three real
 * replica servers (engine_env.h). White-box where the API cannot show a property: the log
 * position (to write a garbage tail), the compaction threshold, a consistency walk of the
 * tree, and meta_abandon() to simulate a gateway crash.
 */
#include "meta_env.h"
#include <xxhash.h>

/* Files in test_many's one directory. */
#ifndef MANY
#define MANY 10000
#endif

/* ---- helpers ---- */

/* A snapshot of every inode's attributes, to compare a tree before and after a reopen. */
struct snap {
	size_t n;
	struct meta_attr *a;
	uint64_t next_fileid;
};

static void snap_take(struct meta *m, struct snap *s)
{
	s->a = calloc(m->next_fileid, sizeof(*s->a));
	assert_non_null(s->a);
	s->n = 0;
	for (uint64_t id = 1; id < m->next_fileid; id++)
		if (meta_getattr(m, id, &s->a[s->n]) == 0)
			s->n++;
	s->next_fileid = m->next_fileid;
}

static void snap_check(struct meta *m, struct snap *s)
{
	struct meta_info mi;
	meta_info(m, &mi);
	assert_int_equal(mi.files, s->n);
	assert_int_equal(mi.next_fileid, s->next_fileid);
	for (size_t i = 0; i < s->n; i++) {
		struct meta_attr a;
		assert_int_equal(meta_getattr(m, s->a[i].fileid, &a), 0);
		attr_equal(&a, &s->a[i]);
	}
	free(s->a);
	s->a = NULL;
}

/* ---- tests ---- */

static void test_format_reopen(void **state)
{
	struct env *env = *state;
	struct engine *e;
	assert_int_equal(open_engine(env, &e), 0);
	struct meta *m = mopen(env, e);
	struct meta_attr ra;
	assert_int_equal(meta_getattr(m, META_ROOT, &ra), 0);
	assert_int_equal(ra.type, META_DIR);
	assert_int_equal(ra.mode, 0755);
	assert_int_equal(ra.nlink, 2);
	assert_int_equal(ra.uid, 0);
	assert_int_equal(ra.parent, META_ROOT);
	assert_null(meta_exports_text(m));
	struct meta_info mi0;
	meta_info(m, &mi0);
	assert_int_equal(mi0.files, 1);
	assert_int_equal(mi0.next_fileid, 2);
	uint8_t zero[16] = {0};
	assert_memory_not_equal(mi0.fsid, zero, 16);
	assert_memory_not_equal(mi0.verifier, zero, 8);

	uint64_t d = mk(env, m, META_ROOT, "d", META_DIR, NULL);
	uint64_t sub = mk(env, m, d, "sub", META_DIR, NULL);
	uint64_t f = mk(env, m, d, "f", META_REG, NULL);
	uint64_t l = mk(env, m, d, "l", META_LNK, "../target/of/link");
	uint64_t fifo = mk(env, m, META_ROOT, "fifo", META_FIFO, NULL);
	uint64_t chr = mk(env, m, META_ROOT, "chr", META_CHR, NULL);
	assert_int_equal(ln(env, m, f, META_ROOT, "f-link"), 0);
	uint64_t gone = mk(env, m, d, "zlast", META_REG, NULL);
	assert_int_equal(rm(env, m, d, "zlast", false, NULL), 0);
	struct meta_setattr sa = {.mask = META_SET_MODE | META_SET_UID | META_SET_GID |
					  META_SET_SIZE | META_SET_ATIME | META_SET_MTIME,
				  .mode = 0600,
				  .uid = 1000,
				  .gid = 1001,
				  .size = 5ull << 32,
				  .atime = {1234, 5},
				  .mtime = {5678, 9}};
	assert_int_equal(setattr(env, m, f, &sa), 0);
	struct hop *h = hop_new(0);
	assert_int_equal(
	    finish(env, h, meta_set_exports_text(m, "/vm 127.0.0.0/8(rw)\n", done_cb, &h->d)), 0);

	struct meta_attr fa, ca, sa2, da;
	assert_int_equal(meta_getattr(m, f, &fa), 0);
	assert_int_equal(fa.nlink, 2);
	assert_int_equal(fa.mode, 0600);
	assert_int_equal(fa.size, 5ull << 32);
	assert_int_equal(fa.atime.sec, 1234);
	assert_int_equal(fa.mtime.sec, 5678);
	assert_int_equal(fa.parent, 0);
	assert_int_equal(meta_getattr(m, chr, &ca), 0);
	assert_int_equal(ca.rdev_major, 3);
	assert_int_equal(ca.rdev_minor, 4);
	assert_int_equal(meta_getattr(m, sub, &sa2), 0);
	assert_int_equal(sa2.parent, d);
	assert_int_equal(meta_getattr(m, d, &da), 0);
	assert_int_equal(da.nlink, 3);
	assert_int_equal(look(m, sub, ".."), d);
	assert_int_equal(look(m, d, "."), d);
	char vol[64];
	meta_volume_name(m, f, vol, sizeof(vol));
	char want[64];
	snprintf(want, sizeof(want), "nfs-%02x%02x%02x%02x-%llu", mi0.fsid[0], mi0.fsid[1],
		 mi0.fsid[2], mi0.fsid[3], (unsigned long long)f);
	assert_string_equal(vol, want);
	struct listing before;
	list_dir(m, d, &before);
	assert_int_equal(before.n, 3);
	uint64_t ver = meta_dir_version(m, d);
	check_tree(m);
	struct snap s;
	snap_take(m, &s);
	mclose(env, m);
	assert_int_equal(close_engine(env, e), 0);

	/* A new engine and a new meta on the same replicas. */
	assert_int_equal(open_engine(env, &e), 0);
	m = mopen(env, e);
	snap_check(m, &s);
	struct meta_info mi;
	meta_info(m, &mi);
	assert_memory_equal(mi.fsid, mi0.fsid, 16);
	assert_memory_equal(mi.verifier, mi0.verifier, 8);
	assert_true(mi.next_fileid > gone);
	assert_int_equal(look(m, META_ROOT, "d"), d);
	assert_int_equal(look(m, d, "sub"), sub);
	assert_int_equal(look(m, d, "f"), f);
	assert_int_equal(look(m, META_ROOT, "f-link"), f);
	assert_int_equal(look(m, META_ROOT, "fifo"), fifo);
	assert_int_equal(look(m, d, "zlast"), 0);
	char buf[64];
	assert_int_equal(meta_readlink(m, l, buf, sizeof(buf)), 0);
	assert_string_equal(buf, "../target/of/link");
	assert_string_equal(meta_exports_text(m), "/vm 127.0.0.0/8(rw)\n");
	struct listing after;
	list_dir(m, d, &after);
	assert_int_equal(after.n, before.n);
	for (int i = 0; i < after.n; i++) {
		assert_string_equal(after.names[i], before.names[i]);
		assert_int_equal(after.cookies[i], before.cookies[i]);
		assert_int_equal(after.ids[i], before.ids[i]);
	}
	assert_int_equal(meta_dir_version(m, d), ver);
	check_tree(m);
	/* Neither the removed entry's cookie nor its fileid comes back. */
	uint64_t n2 = mk(env, m, d, "new", META_REG, NULL);
	assert_true(n2 > gone);
	list_dir(m, d, &after);
	assert_int_equal(after.n, 4);
	assert_true(after.cookies[3] > before.cookies[2] + 1);
	mclose(env, m);
	assert_int_equal(close_engine(env, e), 0);
}

static void test_errors(void **state)
{
	struct env *env = *state;
	struct engine *e;
	assert_int_equal(open_engine(env, &e), 0);
	struct meta *m = mopen(env, e);
	uint64_t d = mk(env, m, META_ROOT, "d", META_DIR, NULL);
	uint64_t f = mk(env, m, META_ROOT, "f", META_REG, NULL);
	uint64_t l = mk(env, m, META_ROOT, "l", META_LNK, "x");
	mk(env, m, d, "inner", META_REG, NULL);
	char longname[300];
	memset(longname, 'a', sizeof(longname));
	longname[256] = 0;
	uint64_t id;

	/* create */
	assert_int_equal(mk_ex(env, m, 999, "x", META_REG, NULL, true, &id), -ENOENT);
	assert_int_equal(mk_ex(env, m, f, "x", META_REG, NULL, true, &id), -ENOTDIR);
	assert_int_equal(mk_ex(env, m, META_ROOT, longname, META_REG, NULL, true, &id),
			 -ENAMETOOLONG);
	longname[255] = 0;
	assert_int_equal(mk_ex(env, m, META_ROOT, longname, META_REG, NULL, true, &id), 0);
	const char *bad[] = {"", ".", "..", "a/b", "/"};
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
		assert_int_equal(mk_ex(env, m, META_ROOT, bad[i], META_REG, NULL, true, &id),
				 -EINVAL);
	assert_int_equal(mk_ex(env, m, META_ROOT, "f", META_REG, NULL, true, &id), -EEXIST);
	assert_int_equal(mk_ex(env, m, META_ROOT, "f", META_REG, NULL, false, &id), 0);
	assert_int_equal(id, f);
	assert_int_equal(mk_ex(env, m, META_ROOT, "d", META_DIR, NULL, false, &id), -EEXIST);
	assert_int_equal(mk_ex(env, m, META_ROOT, "d", META_REG, NULL, false, &id), -EEXIST);
	assert_int_equal(mk_ex(env, m, META_ROOT, "f", META_FIFO, NULL, false, &id), -EEXIST);
	assert_int_equal(mk_ex(env, m, META_ROOT, "t", (enum meta_type)0, NULL, true, &id),
			 -EINVAL);
	assert_int_equal(mk_ex(env, m, META_ROOT, "t", (enum meta_type)8, NULL, true, &id),
			 -EINVAL);
	assert_int_equal(mk_ex(env, m, META_ROOT, "t", META_LNK, NULL, true, &id), -EINVAL);
	char *longlink = malloc(META_SYMLINK_MAX + 2);
	memset(longlink, 'x', META_SYMLINK_MAX + 1);
	longlink[META_SYMLINK_MAX + 1] = 0;
	assert_int_equal(mk_ex(env, m, META_ROOT, "t", META_LNK, longlink, true, &id),
			 -ENAMETOOLONG);
	longlink[META_SYMLINK_MAX] = 0;
	assert_int_equal(mk_ex(env, m, META_ROOT, "t", META_LNK, longlink, true, &id), 0);
	free(longlink);

	/* link */
	assert_int_equal(ln(env, m, 999, META_ROOT, "x"), -ENOENT);
	assert_int_equal(ln(env, m, d, META_ROOT, "x"), -EISDIR);
	assert_int_equal(ln(env, m, f, META_ROOT, "l"), -EEXIST);
	assert_int_equal(ln(env, m, f, f, "x"), -ENOTDIR);
	assert_int_equal(ln(env, m, f, 999, "x"), -ENOENT);
	assert_int_equal(ln(env, m, f, META_ROOT, ".."), -EINVAL);
	mt_inode(m, f)->a.nlink = META_NLINK_MAX;
	assert_int_equal(ln(env, m, f, META_ROOT, "x"), -EMLINK);
	mt_inode(m, f)->a.nlink = 1;

	/* remove */
	assert_int_equal(rm(env, m, META_ROOT, "nope", false, NULL), -ENOENT);
	assert_int_equal(rm(env, m, 999, "f", false, NULL), -ENOENT);
	assert_int_equal(rm(env, m, f, "f", false, NULL), -ENOTDIR);
	assert_int_equal(rm(env, m, META_ROOT, "f", true, NULL), -ENOTDIR);
	assert_int_equal(rm(env, m, META_ROOT, "d", false, NULL), -EISDIR);
	assert_int_equal(rm(env, m, META_ROOT, "d", true, NULL), -ENOTEMPTY);
	assert_int_equal(rm(env, m, d, ".", true, NULL), -EINVAL);
	assert_int_equal(rm(env, m, d, "..", true, NULL), -EINVAL);

	/* rename */
	uint64_t sub = mk(env, m, d, "sub", META_DIR, NULL);
	assert_int_equal(mv(env, m, META_ROOT, "nope", META_ROOT, "x", NULL), -ENOENT);
	assert_int_equal(mv(env, m, META_ROOT, "d", sub, "x", NULL), -EINVAL);
	assert_int_equal(mv(env, m, META_ROOT, "d", d, "x", NULL), -EINVAL);
	assert_int_equal(mv(env, m, META_ROOT, "d", META_ROOT, "f", NULL), -ENOTDIR);
	assert_int_equal(mv(env, m, META_ROOT, "f", d, "sub", NULL), -EISDIR);
	uint64_t d2 = mk(env, m, META_ROOT, "d2", META_DIR, NULL);
	assert_int_equal(mv(env, m, META_ROOT, "d2", META_ROOT, "d", NULL), -ENOTEMPTY);
	assert_int_equal(mv(env, m, META_ROOT, "f", META_ROOT, "a/b", NULL), -EINVAL);
	assert_int_equal(mv(env, m, META_ROOT, ".", META_ROOT, "x", NULL), -EINVAL);
	assert_int_equal(mv(env, m, f, "x", META_ROOT, "y", NULL), -ENOTDIR);
	assert_int_equal(mv(env, m, META_ROOT, "f", 999, "y", NULL), -ENOENT);
	(void)d2;

	/* setattr */
	struct meta_setattr sa = {.mask = META_SET_SIZE, .size = 1};
	assert_int_equal(setattr(env, m, 999, &sa), -ENOENT);
	assert_int_equal(setattr(env, m, d, &sa), -EISDIR);
	assert_int_equal(setattr(env, m, l, &sa), -EINVAL);

	/* lookups */
	struct meta_attr a;
	char buf[8];
	struct listing ls;
	assert_int_equal(meta_getattr(m, 999, &a), -ENOENT);
	assert_int_equal(meta_lookup(m, META_ROOT, "nope", &id), -ENOENT);
	assert_int_equal(meta_lookup(m, f, "x", &id), -ENOTDIR);
	assert_int_equal(meta_lookup(m, 999, "x", &id), -ENOENT);
	assert_int_equal(meta_readlink(m, f, buf, sizeof(buf)), -EINVAL);
	assert_int_equal(meta_readlink(m, 999, buf, sizeof(buf)), -ENOENT);
	assert_int_equal(meta_readlink(m, l, buf, 1), -ERANGE);
	assert_int_equal(meta_readdir(m, f, 0, list_fn, &ls), -ENOTDIR);
	assert_int_equal(meta_readdir(m, 999, 0, list_fn, &ls), -ENOENT);
	/* A tree whose checkpoint would not fit its area refuses to grow. */
	uint64_t cap = m->ckpt_cap;
	m->ckpt_cap = m->img_bytes + 1000;
	assert_int_equal(mk_ex(env, m, META_ROOT, "big", META_REG, NULL, true, &id), -ENOSPC);
	assert_int_equal(ln(env, m, f, META_ROOT, "big"), -ENOSPC);
	m->ckpt_cap = cap;
	struct hop *h = hop_new(0);
	char *huge = malloc(META_EXPORTS_MAX + 2);
	memset(huge, 'x', META_EXPORTS_MAX + 1);
	huge[META_EXPORTS_MAX + 1] = 0;
	assert_int_equal(meta_set_exports_text(m, huge, done_cb, &h->d), -EINVAL);
	free(huge);
	assert_int_equal(meta_note_write(m, d, 10, done_cb, &h->d), -EISDIR);
	assert_int_equal(meta_note_write(m, 999, 10, done_cb, &h->d), -ENOENT);
	assert_int_equal(meta_note_write(m, l, 10, done_cb, &h->d), -EINVAL);
	free(h);
	check_tree(m);
	mclose(env, m);
	assert_int_equal(close_engine(env, e), 0);
}

/* A newer engine on the meta volume fences this gateway: -ESTALE from then on. */
static void test_fenced(void **state)
{
	struct env *env = *state;
	struct engine *e, *e2;
	assert_int_equal(open_engine(env, &e), 0);
	struct meta *m = mopen(env, e);
	mk(env, m, META_ROOT, "a", META_REG, NULL);
	assert_int_equal(open_engine(env, &e2), 0);
	uint64_t id;
	int r = mk_ex(env, m, META_ROOT, "b", META_REG, NULL, true, &id);
	assert_int_equal(r, -ESTALE);
	assert_true(meta_failed(m));
	assert_int_equal(mk_ex(env, m, META_ROOT, "c", META_REG, NULL, true, &id), -ESTALE);
	struct hop *h = hop_new(0);
	assert_int_equal(meta_sync(m, done_cb, &h->d), -ESTALE);
	assert_int_equal(meta_close(m, done_cb, &h->d), 0);
	assert_int_equal(hop_wait(env, h, 10000), -ESTALE);
	free(h);
	close_engine(env, e);
	/* The new owner sees what the old one had made durable. */
	m = mopen(env, e2);
	assert_true(look(m, META_ROOT, "a") > 0);
	mclose(env, m);
	assert_int_equal(close_engine(env, e2), 0);
}

/* The meta volume loses quorum: the record fails, and every later mutation gets -EROFS. */
static void test_failed_rofs(void **state)
{
	struct env *env = *state;
	env->io_timeout_ms = TIMEOUT_MS;
	struct engine *e;
	assert_int_equal(open_engine(env, &e), 0);
	struct meta *m = mopen(env, e);
	mk(env, m, META_ROOT, "a", META_REG, NULL);
	for (int i = 1; i < NSRV; i++) {
		replica_server_free(env->srv[i]);
		env->srv[i] = NULL;
	}
	uint64_t id;
	int r = mk_ex(env, m, META_ROOT, "b", META_REG, NULL, true, &id);
	assert_true(r < 0);
	assert_true(meta_failed(m));
	assert_int_equal(mk_ex(env, m, META_ROOT, "c", META_REG, NULL, true, &id), -EROFS);
	assert_int_equal(rm(env, m, META_ROOT, "a", false, NULL), -EROFS);
	/* Lookups still answer from memory. */
	assert_true(look(m, META_ROOT, "a") > 0);
	struct hop *h = hop_new(0);
	assert_int_equal(meta_close(m, done_cb, &h->d), 0);
	assert_true(hop_wait(env, h, 10000) < 0);
	free(h);
	close_engine(env, e);
}

static void test_rename(void **state)
{
	struct env *env = *state;
	struct engine *e;
	assert_int_equal(open_engine(env, &e), 0);
	struct meta *m = mopen(env, e);
	uint64_t a = mk(env, m, META_ROOT, "a", META_DIR, NULL);
	uint64_t b = mk(env, m, META_ROOT, "b", META_DIR, NULL);
	uint64_t f1 = mk(env, m, a, "f1", META_REG, NULL);
	uint64_t f2 = mk(env, m, b, "f2", META_REG, NULL);
	uint64_t freed;

	/* Replace a file: its last link goes, so its volume can go. */
	assert_int_equal(mv(env, m, a, "f1", b, "f2", &freed), 0);
	assert_int_equal(freed, f2);
	assert_int_equal(look(m, b, "f2"), f1);
	assert_int_equal(look(m, a, "f1"), 0);
	struct meta_attr at;
	assert_int_equal(meta_getattr(m, f2, &at), -ENOENT);

	/* Replace a file that has another link: nothing freed. */
	uint64_t g = mk(env, m, a, "g", META_REG, NULL);
	assert_int_equal(ln(env, m, g, META_ROOT, "g-link"), 0);
	assert_int_equal(mv(env, m, b, "f2", a, "g", &freed), 0);
	assert_int_equal(freed, 0);
	assert_int_equal(meta_getattr(m, g, &at), 0);
	assert_int_equal(at.nlink, 1);

	/* Two links of one file: nothing happens. */
	assert_int_equal(ln(env, m, g, a, "g2"), 0);
	assert_int_equal(mv(env, m, META_ROOT, "g-link", a, "g2", &freed), 0);
	assert_int_equal(look(m, META_ROOT, "g-link"), g);
	assert_int_equal(look(m, a, "g2"), g);
	assert_int_equal(mv(env, m, a, "g2", a, "g2", &freed), 0);

	/* Replace an empty directory, across directories. */
	uint64_t sd = mk(env, m, a, "sd", META_DIR, NULL);
	uint64_t empty = mk(env, m, b, "empty", META_DIR, NULL);
	mk(env, m, sd, "inside", META_REG, NULL);
	assert_int_equal(mv(env, m, a, "sd", b, "empty", &freed), 0);
	assert_int_equal(freed, 0);
	assert_int_equal(meta_getattr(m, empty, &at), -ENOENT);
	assert_int_equal(look(m, b, "empty"), sd);
	assert_int_equal(look(m, sd, ".."), b);
	assert_true(look(m, sd, "inside") > 0);
	assert_int_equal(meta_getattr(m, a, &at), 0);
	assert_int_equal(at.nlink, 2);
	assert_int_equal(meta_getattr(m, b, &at), 0);
	assert_int_equal(at.nlink, 3);

	/* Within one directory, dir over empty dir. */
	uint64_t e2 = mk(env, m, b, "e2", META_DIR, NULL);
	assert_int_equal(mv(env, m, b, "empty", b, "e2", &freed), 0);
	assert_int_equal(meta_getattr(m, e2, &at), -ENOENT);
	assert_int_equal(look(m, b, "e2"), sd);
	assert_int_equal(meta_getattr(m, b, &at), 0);
	assert_int_equal(at.nlink, 3);

	/* Into its own subtree: refused; moving a directory up is fine. */
	uint64_t deep = mk(env, m, sd, "deep", META_DIR, NULL);
	assert_int_equal(mv(env, m, b, "e2", deep, "x", &freed), -EINVAL);
	assert_int_equal(mv(env, m, sd, "deep", META_ROOT, "deep", &freed), 0);
	assert_int_equal(look(m, deep, ".."), META_ROOT);

	/* Non-empty target. */
	mk(env, m, deep, "z", META_REG, NULL);
	mk(env, m, a, "d3", META_DIR, NULL);
	assert_int_equal(mv(env, m, a, "d3", META_ROOT, "deep", &freed), -ENOTEMPTY);
	check_tree(m);

	/* All of it survives a reopen. */
	struct snap s;
	snap_take(m, &s);
	mclose(env, m);
	m = mopen(env, e);
	snap_check(m, &s);
	check_tree(m);
	assert_int_equal(look(m, b, "e2"), sd);
	assert_int_equal(look(m, sd, ".."), b);
	mclose(env, m);
	assert_int_equal(close_engine(env, e), 0);
}

struct pager {
	int n;
	int limit;
	uint64_t last;
	char seen[200];
	int order[400];
	int norder;
};

static int page_fn(void *arg, const char *name, uint64_t fileid, uint64_t cookie)
{
	(void)fileid;
	struct pager *p = arg;
	if (p->n == p->limit)
		return 1;
	assert_true(cookie > p->last);
	p->last = cookie;
	int i = atoi(name + 1);
	assert_true(i >= 0 && i < 200);
	p->seen[i]++;
	p->order[p->norder++] = i;
	p->n++;
	return 0;
}

static void test_readdir_paging(void **state)
{
	struct env *env = *state;
	struct engine *e;
	assert_int_equal(open_engine(env, &e), 0);
	struct meta *m = mopen(env, e);
	uint64_t d = mk(env, m, META_ROOT, "d", META_DIR, NULL);
	char name[16];
	for (int i = 0; i < 50; i++) {
		snprintf(name, sizeof(name), "f%d", i);
		mk(env, m, d, name, META_REG, NULL);
	}
	struct pager p = {.limit = 7};
	uint64_t v0 = meta_dir_version(m, d);
	assert_int_equal(meta_dir_version(m, d), v0);
	int pages = 0;
	for (;;) {
		p.n = 0;
		assert_int_equal(meta_readdir(m, d, p.last, page_fn, &p), 0);
		if (p.n == 0)
			break;
		pages++;
		if (pages == 2) {
			/* Remove one already listed, the next one to list and a later one; add
			 * new ones: the resumed listing skips the removed and ends with the new. */
			assert_int_equal(rm(env, m, d, "f0", false, NULL), 0);
			assert_int_equal(rm(env, m, d, "f14", false, NULL), 0);
			assert_int_equal(rm(env, m, d, "f40", false, NULL), 0);
			assert_true(meta_dir_version(m, d) != v0);
			uint64_t v1 = meta_dir_version(m, d);
			mk(env, m, d, "f100", META_REG, NULL);
			mk(env, m, d, "f101", META_REG, NULL);
			assert_true(meta_dir_version(m, d) != v1);
			/* Re-adding a removed name gives it a new, later cookie. */
			mk(env, m, d, "f0", META_REG, NULL);
		}
	}
	for (int i = 1; i < 50; i++)
		assert_int_equal(p.seen[i], i == 14 || i == 40 ? 0 : 1);
	assert_int_equal(p.seen[0], 2);
	assert_int_equal(p.seen[100], 1);
	assert_int_equal(p.seen[101], 1);
	assert_int_equal(p.order[p.norder - 1], 0);
	assert_int_equal(p.order[p.norder - 3], 100);

	/* Many removals compact the slot array; resume after a removed cookie still works. */
	struct listing ls;
	list_dir(m, d, &ls);
	assert_int_equal(ls.n, 50);
	uint64_t mid = ls.cookies[25];
	for (int i = 1; i < 45; i++) {
		snprintf(name, sizeof(name), "f%d", i);
		if (i != 14 && i != 40)
			assert_int_equal(rm(env, m, d, name, false, NULL), 0);
	}
	struct pager none = {.limit = 1000};
	assert_int_equal(meta_readdir(m, d, UINT64_MAX, page_fn, &none), 0);
	assert_int_equal(none.n, 0);
	struct pager q = {.limit = 1000};
	q.last = mid;
	assert_int_equal(meta_readdir(m, d, mid, page_fn, &q), 0);
	for (int i = 0; i < 200; i++) {
		bool want = i == 0 || i == 100 || i == 101 || (i >= 45 && i < 50);
		assert_int_equal(q.seen[i], want ? 1 : 0);
	}
	check_tree(m);
	mclose(env, m);
	assert_int_equal(close_engine(env, e), 0);
}

struct pending {
	int done, failed;
};

static void pend_cb(void *arg, int res)
{
	struct pending *p = arg;
	p->done++;
	if (res)
		p->failed++;
}

/* Queues a create without waiting; the callback goes to p (which the test keeps alive). */
static void mk_async(struct meta *m, uint64_t dir, const char *name, struct pending *p)
{
	struct meta_create_args a = {.dir = dir, .name = name, .type = META_REG, .mode = 0644};
	uint64_t id;
	bool existed;
	assert_int_equal(meta_create(m, &a, &id, &existed, pend_cb, p), 0);
}

static void test_crash(void **state)
{
	struct env *env = *state;
	struct engine *e;
	assert_int_equal(open_engine(env, &e), 0);
	struct meta *m = mopen(env, e);
	uint64_t d = mk(env, m, META_ROOT, "d", META_DIR, NULL);
	uint64_t f = mk(env, m, d, "f", META_REG, NULL);
	mk(env, m, d, "g", META_REG, NULL);
	assert_int_equal(mv(env, m, d, "g", META_ROOT, "g2", NULL), 0);
	assert_int_equal(ln(env, m, f, META_ROOT, "flink"), 0);
	struct meta_setattr sa = {.mask = META_SET_MODE, .mode = 0640};
	assert_int_equal(setattr(env, m, f, &sa), 0);
	struct hop *h = hop_new(0);
	assert_int_equal(finish(env, h, meta_note_write(m, f, 12345, done_cb, &h->d)), 0);
	struct snap s;
	snap_take(m, &s);
	/* Operations whose callbacks never run: may be there or not after the crash. */
	struct pending *p = calloc(1, sizeof(*p));
	mk_async(m, d, "maybe1", p);
	mk_async(m, META_ROOT, "maybe2", p);
	meta_abandon(m);
	run_for(env, 50);
	assert_int_equal(p->done, 0);
	free(p);

	m = mopen(env, e);
	check_tree(m);
	assert_int_equal(look(m, META_ROOT, "d"), d);
	assert_int_equal(look(m, d, "f"), f);
	assert_int_equal(look(m, META_ROOT, "flink"), f);
	assert_true(look(m, META_ROOT, "g2") > 0);
	assert_int_equal(look(m, d, "g"), 0);
	struct meta_attr a;
	assert_int_equal(meta_getattr(m, f, &a), 0);
	assert_int_equal(a.mode, 0640);
	assert_int_equal(a.size, 12345);
	assert_int_equal(a.nlink, 2);
	for (size_t i = 0; i < s.n; i++) {
		struct meta_attr b;
		assert_int_equal(meta_getattr(m, s.a[i].fileid, &b), 0);
		assert_int_equal(b.nlink, s.a[i].nlink);
		assert_int_equal(b.size, s.a[i].size);
	}
	free(s.a);
	/* Crash again right after the recovery: nothing lost either. */
	mk(env, m, META_ROOT, "after", META_REG, NULL);
	meta_abandon(m);
	m = mopen(env, e);
	check_tree(m);
	assert_true(look(m, META_ROOT, "after") > 0);
	assert_int_equal(look(m, d, "f"), f);
	mclose(env, m);
	assert_int_equal(close_engine(env, e), 0);
}

static void test_torn_tail(void **state)
{
	struct env *env = *state;
	struct engine *e;
	assert_int_equal(open_engine(env, &e), 0);
	struct meta *m = mopen(env, e);
	char name[16];
	for (int i = 0; i < 5; i++) {
		snprintf(name, sizeof(name), "f%d", i);
		mk(env, m, META_ROOT, name, META_REG, NULL);
	}
	uint64_t tail = m->log_off + m->log_pos, gen = m->gen, seq = m->seq;
	meta_abandon(m);
	run_for(env, 20);
	/* Garbage in the next block, and a record that looks right but fails its checksum
	 * in the one after. */
	uint8_t *blk = malloc(2 * META_BLOCK);
	fill(blk, 2 * META_BLOCK);
	uint8_t *h = blk + META_BLOCK;
	le_put32(h, META_REC_MAGIC);
	le_put32(h + 4, 100);
	le_put64(h + 8, gen);
	le_put64(h + 16, seq + 1);
	assert_int_equal(eng_write(env, e, tail, 2 * META_BLOCK, blk, BDEV_FUA), 0);
	m = mopen(env, e);
	for (int i = 0; i < 5; i++) {
		snprintf(name, sizeof(name), "f%d", i);
		assert_true(look(m, META_ROOT, name) > 0);
	}
	check_tree(m);
	/* A torn record at the tail: the same, with a valid header but a bad payload. */
	mk(env, m, META_ROOT, "g", META_REG, NULL);
	tail = m->log_off + m->log_pos;
	gen = m->gen;
	seq = m->seq;
	meta_abandon(m);
	run_for(env, 20);
	fill(blk, META_BLOCK);
	le_put32(blk, META_REC_MAGIC);
	le_put32(blk + 4, 200);
	le_put64(blk + 8, gen);
	le_put64(blk + 16, seq);
	le_put64(blk + 24, 0);
	assert_int_equal(eng_write(env, e, tail, META_BLOCK, blk, BDEV_FUA), 0);
	free(blk);
	m = mopen(env, e);
	assert_true(look(m, META_ROOT, "g") > 0);
	check_tree(m);
	mclose(env, m);
	assert_int_equal(close_engine(env, e), 0);
}

/* Records of an older generation left in the log after a compaction are never replayed. */
static void test_stale_generation(void **state)
{
	struct env *env = *state;
	struct engine *e;
	assert_int_equal(open_engine(env, &e), 0);
	struct meta *m = mopen(env, e);
	uint64_t f = mk(env, m, META_ROOT, "f", META_REG, NULL);
	/* Old history: records 2..7 set mode 0600, each in its own block. */
	struct meta_setattr sa = {.mask = META_SET_MODE, .mode = 0600};
	for (int i = 0; i < 6; i++)
		assert_int_equal(setattr(env, m, f, &sa), 0);
	uint64_t g0 = m->gen;
	mclose(env, m);
	m = mopen(env, e);
	assert_true(m->gen != g0);
	assert_int_equal(m->log_pos, 0);
	/* New history: record 1 sets 0644; the old record 2 right after it must not apply. */
	sa.mode = 0644;
	assert_int_equal(setattr(env, m, f, &sa), 0);
	mk(env, m, META_ROOT, "new", META_REG, NULL);
	meta_abandon(m);
	m = mopen(env, e);
	assert_true(look(m, META_ROOT, "new") > 0);
	struct meta_attr a;
	assert_int_equal(meta_getattr(m, f, &a), 0);
	assert_int_equal(a.mode, 0644);
	check_tree(m);
	mclose(env, m);
	assert_int_equal(close_engine(env, e), 0);
}

/* A torn superblock write leaves the other one, whose checkpoint and log are intact; with
 * neither verifying, the volume is not taken for blank. */
static void test_superblocks(void **state)
{
	struct env *env = *state;
	struct engine *e;
	assert_int_equal(open_engine(env, &e), 0);
	struct meta *m = mopen(env, e);
	uint64_t f = mk(env, m, META_ROOT, "f", META_REG, NULL);
	int slot = m->sb_slot;
	mclose(env, m);
	uint8_t *blk = malloc(META_BLOCK);
	fill(blk, META_BLOCK);
	assert_int_equal(eng_write(env, e, (uint64_t)slot * META_BLOCK, META_BLOCK, blk, BDEV_FUA),
			 0);
	m = mopen(env, e);
	assert_int_equal(look(m, META_ROOT, "f"), f);
	check_tree(m);
	slot = m->sb_slot;
	mclose(env, m);
	/* Both bad: -EUCLEAN, and nothing is formatted over them. */
	assert_int_equal(eng_write(env, e, (uint64_t)slot * META_BLOCK, META_BLOCK, blk, BDEV_FUA),
			 0);
	blk[0] ^= 1;
	assert_int_equal(
	    eng_write(env, e, (uint64_t)(1 - slot) * META_BLOCK, META_BLOCK, blk, BDEV_FUA), 0);
	struct hop *h = hop_new(0);
	assert_int_equal(meta_open(env->l, engine_bdev(e), &m, done_cb, &h->d), 0);
	assert_int_equal(hop_wait(env, h, 10000), -EUCLEAN);
	free(h);
	uint8_t *rd = malloc(META_BLOCK);
	assert_int_equal(eng_read(env, e, (uint64_t)(1 - slot) * META_BLOCK, META_BLOCK, rd), 0);
	assert_memory_equal(rd, blk, META_BLOCK);
	free(rd);
	free(blk);
	assert_int_equal(close_engine(env, e), 0);
}

static void test_compaction(void **state)
{
	struct env *env = *state;
	struct engine *e;
	assert_int_equal(open_engine(env, &e), 0);
	struct meta *m = mopen(env, e);
	m->compact_at = 64 << 10;
	uint64_t g0 = m->gen;
	uint64_t d = mk(env, m, META_ROOT, "d", META_DIR, NULL);
	char name[16];
	for (int i = 0; i < 120; i++) {
		snprintf(name, sizeof(name), "f%d", i);
		mk(env, m, d, name, META_REG, NULL);
		if (i % 3 == 0) {
			snprintf(name, sizeof(name), "f%d", i / 2);
			rm(env, m, d, name, false, NULL);
		}
		struct meta_info mi;
		meta_info(m, &mi);
		assert_true(mi.log_bytes <= m->compact_at + 64 * 1024);
	}
	assert_true(m->gen >= g0 + 5);
	/* Lazy timestamps and a size survive compactions too. */
	uint64_t f = look(m, d, "f119");
	struct hop *h = hop_new(0);
	assert_int_equal(finish(env, h, meta_note_write(m, f, 1 << 20, done_cb, &h->d)), 0);
	check_tree(m);
	struct snap s;
	snap_take(m, &s);
	struct listing ls;
	list_dir(m, d, &ls);
	assert_int_equal(ls.n, 80);
	meta_abandon(m);
	m = mopen(env, e);
	snap_check(m, &s);
	struct listing ls2;
	list_dir(m, d, &ls2);
	assert_int_equal(ls2.n, ls.n);
	for (int i = 0; i < ls.n; i++)
		assert_int_equal(ls2.cookies[i], ls.cookies[i]);
	check_tree(m);

	/* A crash with a compaction half written: the old superblock, checkpoint and log still
	 * hold everything acknowledged. */
	m->compact_at = META_BLOCK;
	uint64_t c1 = mk(env, m, d, "c1", META_REG, NULL);
	struct pending *p = calloc(1, sizeof(*p));
	env_hook_add(env, NULL, p, 0);
	mk_async(m, d, "c2", p);
	ml_kick(m);
	assert_true(m->compacting);
	meta_abandon(m);
	m = mopen(env, e);
	assert_int_equal(look(m, d, "c1"), c1);
	assert_int_equal(p->done, 0);
	check_tree(m);
	mclose(env, m);
	assert_int_equal(close_engine(env, e), 0);
}

struct counter {
	int n;
	uint64_t last;
	int page;
	int limit;
};

static int count_fn(void *arg, const char *name, uint64_t fileid, uint64_t cookie)
{
	(void)name;
	(void)fileid;
	struct counter *c = arg;
	if (c->page == c->limit)
		return 1;
	assert_true(cookie > c->last);
	c->last = cookie;
	c->n++;
	c->page++;
	return 0;
}

static int count_paged(struct meta *m, uint64_t d)
{
	struct counter c = {.limit = 100};
	for (;;) {
		c.page = 0;
		assert_int_equal(meta_readdir(m, d, c.last, count_fn, &c), 0);
		if (c.page == 0)
			return c.n;
	}
}

static bool pend_n(void *arg)
{
	return ((struct pending *)arg)->done >= MANY;
}

static void test_many(void **state)
{
	struct env *env = *state;
	struct engine *e;
	assert_int_equal(open_engine(env, &e), 0);
	struct meta *m = mopen(env, e);
	uint64_t d = mk(env, m, META_ROOT, "big", META_DIR, NULL);
	struct pending *p = calloc(1, sizeof(*p));
	env_hook_add(env, NULL, p, 0);
	uint64_t seq0 = m->seq, gen0 = m->gen;
	char name[32];
	for (int i = 0; i < MANY; i++) {
		snprintf(name, sizeof(name), "disk-%05d.img", i);
		mk_async(m, d, name, p);
	}
	assert_true(run_until(env, pend_n, p, 15000));
	assert_int_equal(p->failed, 0);
	/* Group commit: far fewer records than operations (and, at this size, no compaction). */
	if (MANY <= 10000) {
		assert_int_equal(m->gen, gen0);
		assert_true(m->seq - seq0 < 100);
	}
	assert_int_equal(count_paged(m, d), MANY);
	assert_true(look(m, d, "disk-04567.img") > 0);
	mclose(env, m);
	m = mopen(env, e);
	assert_int_equal(count_paged(m, d), MANY);
	struct meta_info mi;
	meta_info(m, &mi);
	assert_int_equal(mi.files, MANY + 2);
	mclose(env, m);
	assert_int_equal(close_engine(env, e), 0);
}

struct order {
	int n;
	struct order_slot {
		struct order *o;
		int at; /* 1 + how many callbacks ran before this one */
		int res;
	} slot[4];
};

static void order_cb(void *arg, int res)
{
	struct order_slot *s = arg;
	s->at = ++s->o->n;
	s->res = res;
}

static bool order_all(void *arg)
{
	return ((struct order *)arg)->n == 4;
}

static void test_note_write(void **state)
{
	struct env *env = *state;
	struct engine *e;
	assert_int_equal(open_engine(env, &e), 0);
	struct meta *m = mopen(env, e);
	uint64_t f = mk(env, m, META_ROOT, "disk", META_REG, NULL);
	struct hop *h = hop_new(0);
	assert_int_equal(finish(env, h, meta_note_write(m, f, 10ull << 30, done_cb, &h->d)), 0);
	/* Within the size: never called back synchronously, nothing to write. */
	h = hop_new(0);
	uint64_t pos = m->log_pos;
	assert_int_equal(meta_note_write(m, f, 4096, done_cb, &h->d), 0);
	assert_false(h->d.done);
	assert_int_equal(finish(env, h, 0), 0);
	assert_int_equal(m->log_pos, pos);
	struct meta_attr a1;
	assert_int_equal(meta_getattr(m, f, &a1), 0);
	assert_int_equal(a1.size, 10ull << 30);
	/* A crash: the size a client was told about is there. */
	meta_abandon(m);
	m = mopen(env, e);
	struct meta_attr a2;
	assert_int_equal(meta_getattr(m, f, &a2), 0);
	assert_int_equal(a2.size, 10ull << 30);

	/* Lazy mtime: persisted by meta_sync. */
	h = hop_new(0);
	assert_int_equal(finish(env, h, meta_note_write(m, f, 8192, done_cb, &h->d)), 0);
	assert_int_equal(meta_getattr(m, f, &a1), 0);
	h = hop_new(0);
	assert_int_equal(finish(env, h, meta_sync(m, done_cb, &h->d)), 0);
	meta_abandon(m);
	m = mopen(env, e);
	assert_int_equal(meta_getattr(m, f, &a2), 0);
	attr_equal(&a1, &a2);

	/* ... and without meta_sync within META_LAZY_MS. */
	h = hop_new(0);
	assert_int_equal(finish(env, h, meta_note_write(m, f, 8192, done_cb, &h->d)), 0);
	assert_int_equal(meta_getattr(m, f, &a1), 0);
	pos = m->log_pos;
	run_for(env, META_LAZY_MS + 300);
	assert_true(m->log_pos > pos);
	meta_abandon(m);
	m = mopen(env, e);
	assert_int_equal(meta_getattr(m, f, &a2), 0);
	attr_equal(&a1, &a2);

	/* Ordering: a write within a size already durable is not held up by an unrelated
	 * record; one within a size still on its way waits for it. */
	struct order *o = calloc(1, sizeof(*o));
	env_hook_add(env, NULL, o, 0);
	struct meta_create_args ca = {.dir = META_ROOT, .name = "other", .type = META_REG};
	uint64_t oid;
	bool existed;
	assert_int_equal(meta_create(m, &ca, &oid, &existed, order_cb, &o->slot[0]), 0);
	assert_int_equal(meta_note_write(m, f, 100, order_cb, &o->slot[1]), 0);
	assert_int_equal(meta_note_write(m, f, 20ull << 30, order_cb, &o->slot[2]), 0);
	assert_int_equal(meta_note_write(m, f, 200, order_cb, &o->slot[3]), 0);
	for (int i = 0; i < 4; i++)
		o->slot[i].o = o;
	assert_true(run_until(env, order_all, o, 10000));
	assert_true(o->slot[1].at < o->slot[0].at);
	assert_true(o->slot[3].at > o->slot[2].at);
	for (int i = 0; i < 4; i++)
		assert_int_equal(o->slot[i].res, 0);

	/* Growth again through meta_sync with nothing pending. */
	h = hop_new(0);
	assert_int_equal(finish(env, h, meta_sync(m, done_cb, &h->d)), 0);
	mclose(env, m);
	assert_int_equal(close_engine(env, e), 0);
}

/* The whole tree as one hash: every inode's attributes, symlink target and entries. */
static uint64_t tree_hash(struct meta *m)
{
	uint64_t h = 0;
	for (uint64_t id = 1; id < m->next_fileid; id++) {
		struct minode *in = mt_inode(m, id);
		if (!in)
			continue;
		struct meta_attr a = in->a;
		uint64_t v[16] = {a.fileid,
				  a.gen,
				  a.type,
				  a.mode,
				  a.nlink,
				  a.uid,
				  a.gid,
				  a.size,
				  a.rdev_major,
				  a.rdev_minor,
				  (uint64_t)a.mtime.sec,
				  a.mtime.nsec,
				  (uint64_t)a.ctime.sec,
				  a.ctime.nsec,
				  (uint64_t)a.atime.sec,
				  a.parent};
		h = XXH3_64bits_withSeed(v, sizeof(v), h);
		if (in->symlink)
			h = XXH3_64bits_withSeed(in->symlink, strlen(in->symlink), h);
		if (in->dir) {
			h = XXH3_64bits_withSeed(&in->dir->next_cookie, 8, h);
			for (size_t k = 0; k < in->dir->n; k++) {
				struct mdent *d = in->dir->v[k].d;
				if (!d)
					continue;
				uint64_t e[2] = {d->cookie, d->fileid};
				h = XXH3_64bits_withSeed(e, sizeof(e), h);
				h = XXH3_64bits_withSeed(d->name, d->namelen, h);
			}
		}
	}
	return XXH3_64bits_withSeed(&m->next_fileid, 8, h);
}

/* A random live inode (a directory when dir). */
static uint64_t pick(struct meta *m, bool dir)
{
	uint64_t ids[512];
	size_t n = 0;
	for (size_t i = 0; i < m->ihn; i++)
		for (struct minode *in = m->ih[i]; in && n < 512; in = in->hnext)
			if (!dir || in->dir)
				ids[n++] = in->a.fileid;
	return n ? ids[(size_t)rand() % n] : META_ROOT;
}

/* Random operations (errors included) on a small name space, with frequent compactions;
 * every so often a crash or a clean close, after which the reopened tree must be exactly the
 * acknowledged one. */
static void test_random(void **state)
{
	struct env *env = *state;
	struct engine *e;
	assert_int_equal(open_engine(env, &e), 0);
	struct meta *m = mopen(env, e);
	srand(42);
	char a[8], b[8];
	int ok = 0;
	for (int step = 1; step <= 360; step++) {
		m->compact_at = 48 << 10;
		uint64_t d1 = pick(m, true), d2 = pick(m, true), id = pick(m, rand() % 8 == 0);
		snprintf(a, sizeof(a), "n%d", rand() % 6);
		snprintf(b, sizeof(b), "n%d", rand() % 6);
		if (rand() % 3 == 0)
			d1 = META_ROOT;
		int r;
		switch (rand() % 8) {
		case 0:
		case 1: {
			enum meta_type t = rand() % 3 == 0 ? META_DIR : META_REG;
			if (rand() % 8 == 0)
				t = META_LNK;
			r = mk_ex(env, m, d1, a, t, "tgt", rand() % 2, NULL);
			break;
		}
		case 2:
			r = ln(env, m, id, d1, a);
			break;
		case 3:
			r = rm(env, m, d1, a, rand() % 2, NULL);
			break;
		case 4:
		case 5:
			r = mv(env, m, d1, a, d2, b, NULL);
			break;
		case 6: {
			struct meta_setattr sa = {.mask = META_SET_MODE | META_SET_SIZE,
						  .mode = (uint32_t)rand() & 0777,
						  .size = (uint64_t)rand()};
			r = setattr(env, m, id, &sa);
			break;
		}
		default: {
			struct hop *h = hop_new(0);
			r = finish(
			    env, h,
			    meta_note_write(m, id, (uint64_t)rand() % 100000, done_cb, &h->d));
			break;
		}
		}
		assert_true(r <= 0);
		ok += r == 0;
		check_tree(m);
		if (step % 40 == 0) {
			struct hop *h = hop_new(0);
			assert_int_equal(finish(env, h, meta_sync(m, done_cb, &h->d)), 0);
			uint64_t want = tree_hash(m);
			if (step % 80 == 0)
				mclose(env, m);
			else
				meta_abandon(m);
			m = mopen(env, e);
			assert_int_equal(tree_hash(m), want);
		}
	}
	assert_true(ok > 100);
	mclose(env, m);
	assert_int_equal(close_engine(env, e), 0);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test_setup_teardown(test_format_reopen, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_errors, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_fenced, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_failed_rofs, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_rename, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_readdir_paging, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_crash, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_torn_tail, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_stale_generation, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_superblocks, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_compaction, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_many, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_note_write, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_random, setup, teardown),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}

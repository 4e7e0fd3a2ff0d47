/*
 * test_meta_snap: snapshots in the gateway's metadata (nfsgw/meta.h, "Snapshots through the
 * export") on a real engine over three real replica servers (engine_env.h): frozen copies
 * seen through snapshot fileids while the live tree changes, persistence across crashes,
 * closes and compactions, which volumes are reported freed, revert, and the name and count
 * rules. White-box only for the compaction threshold and the tree consistency walk.
 */
#include "meta_env.h"

/* ---- helpers ---- */

static int snap_create(struct env *env, struct meta *m, uint64_t id, const char *name,
		       uint32_t *idx)
{
	struct hop *h = hop_new(0);
	uint32_t i = 0;
	int r = finish(env, h, meta_snapshot_create(m, id, name, &i, done_cb, &h->d));
	if (idx)
		*idx = i;
	return r;
}

/* Runs a snapshot delete or revert (same signature) and waits; freed may be NULL. */
static int snap_freeing(struct env *env, struct meta *m,
			int (*op)(struct meta *, const char *, uint64_t *, uint32_t, uint32_t *,
				  meta_cb, void *),
			const char *name, uint64_t *freed, uint32_t *n)
{
	struct hop *h = hop_new(0);
	uint64_t tmp[64];
	uint32_t k = 0;
	int r = finish(env, h, op(m, name, freed ? freed : tmp, 64, &k, done_cb, &h->d));
	if (n)
		*n = k;
	return r;
}

static int snap_delete(struct env *env, struct meta *m, const char *name, uint64_t *freed,
		       uint32_t *n)
{
	return snap_freeing(env, m, meta_snapshot_delete, name, freed, n);
}

static int snap_revert(struct env *env, struct meta *m, const char *name, uint64_t *freed,
		       uint32_t *n)
{
	return snap_freeing(env, m, meta_snapshot_revert, name, freed, n);
}

static int count_fn(void *arg, uint64_t fileid)
{
	(void)fileid;
	(*(int *)arg)++;
	return 0;
}

/* The tree built by build(): d/{f1 (100 bytes, 0644), f2, sub/g, l -> "target", h = f1} and
 * /out = f2 (a link outside d). */
struct tree {
	uint64_t d, f1, f2, sub, g, l, h_unused;
	struct meta_attr f1a, da, suba;
};

static void build(struct env *env, struct meta *m, struct tree *t)
{
	t->d = mk(env, m, META_ROOT, "d", META_DIR, NULL);
	t->f1 = mk(env, m, t->d, "f1", META_REG, NULL);
	t->f2 = mk(env, m, t->d, "f2", META_REG, NULL);
	t->sub = mk(env, m, t->d, "sub", META_DIR, NULL);
	t->g = mk(env, m, t->sub, "g", META_REG, NULL);
	t->l = mk(env, m, t->d, "l", META_LNK, "target");
	assert_int_equal(ln(env, m, t->f1, t->d, "h"), 0);
	assert_int_equal(ln(env, m, t->f2, META_ROOT, "out"), 0);
	struct meta_setattr sa = {.mask = META_SET_SIZE, .size = 100};
	assert_int_equal(setattr(env, m, t->f1, &sa), 0);
	assert_int_equal(meta_getattr(m, t->f1, &t->f1a), 0);
	assert_int_equal(meta_getattr(m, t->d, &t->da), 0);
	assert_int_equal(meta_getattr(m, t->sub, &t->suba), 0);
}

/* The snapshot (index idx) of t->d as it was when built. */
static void check_frozen(struct meta *m, const struct tree *t, uint32_t idx)
{
	uint64_t top = META_SNAP_FILEID(idx, 0);
	struct meta_attr a;
	assert_int_equal(meta_getattr(m, top, &a), 0);
	assert_int_equal(a.type, META_DIR);
	uint64_t d = look(m, top, "d");
	assert_int_equal(d, META_SNAP_FILEID(idx, t->d));
	assert_int_equal(look(m, top, "other"), 0);
	assert_int_equal(meta_getattr(m, d, &a), 0);
	assert_int_equal(a.fileid, d);
	assert_int_equal(a.gen, t->da.gen);
	assert_int_equal(a.nlink, 3);
	assert_int_equal(a.parent, top);
	assert_int_equal(look(m, d, ".."), top);
	struct listing ls;
	list_dir(m, d, &ls);
	assert_int_equal(ls.n, 5);
	const char *names[] = {"f1", "f2", "sub", "l", "h"};
	for (int i = 0; i < 5; i++)
		assert_string_equal(ls.names[i], names[i]);
	uint64_t f1 = look(m, d, "f1");
	assert_int_equal(f1, META_SNAP_FILEID(idx, t->f1));
	assert_int_equal(look(m, d, "h"), f1);
	assert_int_equal(meta_getattr(m, f1, &a), 0);
	assert_int_equal(a.size, 100);
	assert_int_equal(a.mode, 0644);
	assert_int_equal(a.nlink, 2);
	assert_int_equal(a.gen, t->f1a.gen);
	assert_int_equal(a.mtime.sec, t->f1a.mtime.sec);
	assert_int_equal(a.mtime.nsec, t->f1a.mtime.nsec);
	uint64_t f2 = look(m, d, "f2");
	assert_int_equal(meta_getattr(m, f2, &a), 0);
	assert_int_equal(a.nlink, 2);
	uint64_t sub = look(m, d, "sub");
	assert_int_equal(look(m, sub, ".."), d);
	assert_int_equal(look(m, sub, "g"), META_SNAP_FILEID(idx, t->g));
	assert_int_equal(meta_lookup(m, f1, "x", &(uint64_t){0}), -ENOTDIR);
	char buf[64];
	assert_int_equal(meta_readlink(m, look(m, d, "l"), buf, sizeof(buf)), 0);
	assert_string_equal(buf, "target");
	struct meta_snapinfo si;
	assert_int_equal(meta_snapshot_by_index(m, idx, &si), 0);
	assert_int_equal(si.root, t->d);
	assert_int_equal(si.root_parent, META_ROOT);
	assert_string_equal(si.root_name, "d");
	assert_int_equal(si.files, 3); /* f1 (twice named), f2, g */
}

/* Changes everything the snapshot of d froze. */
static void churn(struct env *env, struct meta *m, const struct tree *t, uint64_t *fresh)
{
	struct meta_setattr sa = {.mask = META_SET_SIZE | META_SET_MODE, .size = 5, .mode = 0600};
	assert_int_equal(setattr(env, m, t->f1, &sa), 0);
	uint64_t freed = 1;
	assert_int_equal(rm(env, m, t->d, "f2", false, &freed), 0);
	assert_int_equal(freed, 0);
	/* g's last name goes, but the snapshot still reads its volume. */
	assert_int_equal(rm(env, m, t->sub, "g", false, &freed), 0);
	assert_int_equal(freed, 0);
	assert_int_equal(rm(env, m, t->d, "l", false, &freed), 0);
	*fresh = mk(env, m, t->d, "new", META_REG, NULL);
	uint64_t nd = mk(env, m, t->d, "newdir", META_DIR, NULL);
	mk(env, m, nd, "deep", META_REG, NULL);
	assert_int_equal(mv(env, m, t->d, "sub", t->d, "sub2", NULL), 0);
	check_tree(m);
}

static void test_snapshot_view(void **state)
{
	struct env *env = *state;
	struct engine *e;
	assert_int_equal(open_engine(env, &e), 0);
	struct meta *m = mopen(env, e);
	struct tree t;
	build(env, m, &t);
	uint32_t idx = 0;
	assert_int_equal(snap_create(env, m, t.d, "s1", &idx), 0);
	assert_true(idx > 0 && idx < META_SNAP_DIRS_INDEX);
	check_frozen(m, &t, idx);
	int n = 0;
	assert_int_equal(meta_each_snapfile(m, "s1", count_fn, &n), 0);
	assert_int_equal(n, 3);
	uint64_t fresh;
	churn(env, m, &t, &fresh);
	check_frozen(m, &t, idx);
	n = 0;
	assert_int_equal(meta_each_regular(m, t.d, count_fn, &n), 0);
	assert_int_equal(n, 3); /* f1, new, newdir/deep */
	/* A crash, a clean close and compactions: the frozen copy comes back the same. */
	meta_abandon(m);
	m = mopen(env, e);
	check_frozen(m, &t, idx);
	mclose(env, m);
	m = mopen(env, e);
	check_frozen(m, &t, idx);
	m->compact_at = 16 << 10;
	uint64_t g0 = m->gen;
	char name[16];
	for (int i = 0; i < 40; i++) {
		snprintf(name, sizeof(name), "c%d", i);
		mk(env, m, META_ROOT, name, META_REG, NULL);
	}
	assert_true(m->gen > g0);
	check_frozen(m, &t, idx);
	meta_abandon(m);
	m = mopen(env, e);
	check_frozen(m, &t, idx);
	check_tree(m);
	/* The snapshot does not change the live tree's view of the old names. */
	assert_int_equal(look(m, t.d, "f2"), 0);
	assert_int_equal(look(m, t.d, "sub2"), t.sub);
	mclose(env, m);
	assert_int_equal(close_engine(env, e), 0);
}

static void test_snapshot_revert(void **state)
{
	struct env *env = *state;
	struct engine *e;
	assert_int_equal(open_engine(env, &e), 0);
	struct meta *m = mopen(env, e);
	struct tree t;
	build(env, m, &t);
	uint32_t idx = 0;
	assert_int_equal(snap_create(env, m, t.d, "s1", &idx), 0);
	uint64_t fresh;
	churn(env, m, &t, &fresh);
	uint64_t deep = look(m, look(m, t.d, "newdir"), "deep");
	uint64_t freed[64];
	uint32_t nf = 0;
	assert_int_equal(snap_revert(env, m, "s1", freed, &nf), 0);
	/* Created since: gone, their volumes reported. */
	assert_int_equal(nf, 2);
	assert_true((freed[0] == fresh && freed[1] == deep) ||
		    (freed[0] == deep && freed[1] == fresh));
	check_tree(m);
	for (int round = 0; round < 2; round++) {
		assert_int_equal(look(m, t.d, "new"), 0);
		assert_int_equal(look(m, t.d, "newdir"), 0);
		assert_int_equal(look(m, t.d, "sub2"), 0);
		assert_int_equal(look(m, t.d, "f1"), t.f1);
		assert_int_equal(look(m, t.d, "h"), t.f1);
		assert_int_equal(look(m, t.d, "f2"), t.f2);
		assert_int_equal(look(m, t.d, "sub"), t.sub);
		assert_int_equal(look(m, t.sub, "g"), t.g);
		assert_int_equal(look(m, META_ROOT, "out"), t.f2);
		struct meta_attr a;
		assert_int_equal(meta_getattr(m, t.f1, &a), 0);
		attr_equal(&a, &t.f1a);
		assert_int_equal(meta_getattr(m, t.f2, &a), 0);
		assert_int_equal(a.nlink, 2); /* d/f2 and /out */
		assert_int_equal(meta_getattr(m, t.sub, &a), 0);
		assert_int_equal(a.parent, t.d);
		assert_int_equal(meta_getattr(m, t.g, &a), 0);
		assert_int_equal(a.nlink, 1);
		char buf[64];
		uint64_t l = look(m, t.d, "l");
		assert_int_equal(l, t.l);
		assert_int_equal(meta_readlink(m, l, buf, sizeof(buf)), 0);
		assert_string_equal(buf, "target");
		struct listing ls;
		list_dir(m, t.d, &ls);
		assert_int_equal(ls.n, 5);
		check_tree(m);
		/* The snapshot itself is unchanged by a revert. */
		check_frozen(m, &t, idx);
		meta_abandon(m);
		m = mopen(env, e);
	}
	/* Deleting the snapshot frees nothing: every file it held is live again. */
	uint32_t n = 9;
	assert_int_equal(snap_delete(env, m, "s1", NULL, &n), 0);
	assert_int_equal(n, 0);
	struct meta_attr a;
	assert_int_equal(meta_getattr(m, META_SNAP_FILEID(idx, t.d), &a), -ENOENT);
	assert_int_equal(snap_revert(env, m, "s1", NULL, NULL), -ENOENT);
	uint64_t f = 0;
	assert_int_equal(rm(env, m, t.sub, "g", false, &f), 0);
	assert_int_equal(f, t.g);
	mclose(env, m);
	assert_int_equal(close_engine(env, e), 0);
}

static void test_snapshot_freed(void **state)
{
	struct env *env = *state;
	struct engine *e;
	assert_int_equal(open_engine(env, &e), 0);
	struct meta *m = mopen(env, e);
	uint64_t d = mk(env, m, META_ROOT, "d", META_DIR, NULL);
	uint64_t a = mk(env, m, d, "a", META_REG, NULL);
	uint64_t b = mk(env, m, d, "b", META_REG, NULL);
	assert_int_equal(snap_create(env, m, d, "one", NULL), 0);
	assert_int_equal(snap_create(env, m, d, "two", NULL), 0);
	uint64_t f = 1;
	assert_int_equal(rm(env, m, d, "a", false, &f), 0);
	assert_int_equal(f, 0);
	uint64_t freed[4];
	uint32_t n = 9;
	assert_int_equal(snap_delete(env, m, "one", freed, &n), 0);
	assert_int_equal(n, 0); /* "two" still holds a */
	/* A file snapshot holds b; a rename over b does not free it. */
	uint32_t fi = 0;
	assert_int_equal(snap_create(env, m, b, "fileb", &fi), 0);
	struct meta_snapinfo si;
	assert_int_equal(meta_snapshot_find(m, "fileb", &si), 0);
	assert_int_equal(si.root_parent, d);
	assert_string_equal(si.root_name, "b");
	assert_int_equal(si.files, 1);
	assert_int_equal(look(m, META_SNAP_FILEID(fi, 0), "b"), META_SNAP_FILEID(fi, b));
	uint64_t c = mk(env, m, d, "c", META_REG, NULL);
	assert_int_equal(mv(env, m, d, "c", d, "b", &f), 0);
	assert_int_equal(f, 0);
	/* Reverting the file snapshot brings b back under its name and frees c. */
	assert_int_equal(snap_revert(env, m, "fileb", freed, &n), 0);
	assert_int_equal(n, 1);
	assert_int_equal(freed[0], c);
	assert_int_equal(look(m, d, "b"), b);
	check_tree(m);
	meta_abandon(m);
	m = mopen(env, e);
	assert_int_equal(look(m, d, "b"), b);
	assert_int_equal(snap_delete(env, m, "two", freed, &n), 0);
	assert_int_equal(n, 1);
	assert_int_equal(freed[0], a);
	assert_int_equal(rm(env, m, d, "b", false, &f), 0);
	assert_int_equal(f, 0); /* fileb */
	assert_int_equal(snap_delete(env, m, "fileb", freed, &n), 0);
	assert_int_equal(n, 1);
	assert_int_equal(freed[0], b);
	/* Revert where the parent is gone. */
	uint64_t p = mk(env, m, META_ROOT, "p", META_DIR, NULL);
	uint64_t q = mk(env, m, p, "q", META_REG, NULL);
	assert_int_equal(snap_create(env, m, q, "pq", NULL), 0);
	assert_int_equal(rm(env, m, p, "q", false, NULL), 0);
	assert_int_equal(rm(env, m, META_ROOT, "p", true, NULL), 0);
	assert_int_equal(snap_revert(env, m, "pq", NULL, NULL), -ENOENT);
	/* A snapshotted directory moved out of the subtree cannot get a second name. */
	uint64_t x = mk(env, m, META_ROOT, "x", META_DIR, NULL);
	mk(env, m, x, "y", META_DIR, NULL);
	assert_int_equal(snap_create(env, m, x, "xs", NULL), 0);
	assert_int_equal(mv(env, m, x, "y", META_ROOT, "y", NULL), 0);
	assert_int_equal(snap_revert(env, m, "xs", NULL, NULL), -EBUSY);
	assert_int_equal(mv(env, m, META_ROOT, "y", x, "y", NULL), 0);
	assert_int_equal(snap_revert(env, m, "xs", NULL, NULL), 0);
	check_tree(m);
	mclose(env, m);
	assert_int_equal(close_engine(env, e), 0);
}

static void count_cb(void *arg, int res)
{
	int *p = arg;
	p[0]++;
	if (res)
		p[1]++;
}

static bool count_all(void *arg)
{
	int *p = arg;
	return p[0] == META_SNAP_MAX;
}

static int each_fn(void *arg, const struct meta_snapinfo *si)
{
	int *n = arg;
	char want[32];
	snprintf(want, sizeof(want), "s%d", *n);
	assert_string_equal(si->name, want);
	(*n)++;
	return 0;
}

static void test_snapshot_rules(void **state)
{
	struct env *env = *state;
	struct engine *e;
	assert_int_equal(open_engine(env, &e), 0);
	struct meta *m = mopen(env, e);
	uint64_t f = mk(env, m, META_ROOT, "f", META_REG, NULL);
	char long57[58], long58[59];
	memset(long57, 'a', 57);
	long57[57] = 0;
	memset(long58, 'a', 58);
	long58[58] = 0;
	const char *bad[] = {"", ".x", "-x", "a/b", "a b", long58};
	for (size_t i = 0; i < sizeof(bad) / sizeof(*bad); i++)
		assert_int_equal(snap_create(env, m, f, bad[i], NULL), -EINVAL);
	assert_int_equal(snap_create(env, m, f, long57, NULL), 0);
	char vs[80];
	meta_snap_volsnap(long57, vs, sizeof(vs));
	assert_true(strlen(vs) < 64);
	assert_int_equal(strncmp(vs, "nfsgw-", 6), 0);
	assert_int_equal(snap_create(env, m, f, long57, NULL), -EEXIST);
	assert_int_equal(snap_create(env, m, META_ROOT, "root", NULL), -EINVAL);
	assert_int_equal(snap_create(env, m, 999999, "none", NULL), -ENOENT);
	assert_int_equal(snap_create(env, m, META_SNAP_FILEID(1, f), "insnap", NULL), -EINVAL);
	assert_int_equal(snap_delete(env, m, "none", NULL, NULL), -ENOENT);
	assert_int_equal(snap_delete(env, m, long57, NULL, NULL), 0);
	/* META_SNAP_MAX snapshots, queued together; one more is refused. */
	int *cnt = calloc(2, sizeof(int));
	env_hook_add(env, NULL, cnt, 0);
	char name[32];
	for (int i = 0; i < META_SNAP_MAX; i++) {
		snprintf(name, sizeof(name), "s%d", i);
		assert_int_equal(meta_snapshot_create(m, f, name, NULL, count_cb, cnt), 0);
	}
	assert_true(run_until(env, count_all, cnt, 15000));
	assert_int_equal(cnt[1], 0);
	assert_int_equal(snap_create(env, m, f, "more", NULL), -ENOSPC);
	mclose(env, m);
	m = mopen(env, e);
	int n = 0;
	assert_int_equal(meta_snapshot_each(m, each_fn, &n), 0);
	assert_int_equal(n, META_SNAP_MAX);
	assert_int_equal(snap_create(env, m, f, "more", NULL), -ENOSPC);
	uint32_t k;
	assert_int_equal(snap_delete(env, m, "s7", NULL, &k), 0);
	assert_int_equal(snap_create(env, m, f, "more", NULL), 0);
	struct meta_snapinfo si;
	assert_int_equal(meta_snapshot_find(m, "s7", &si), -ENOENT);
	assert_int_equal(meta_snapshot_find(m, "more", &si), 0);
	mclose(env, m);
	assert_int_equal(close_engine(env, e), 0);
}

static bool count_n(void *arg)
{
	int *p = arg;
	return p[0] == p[2];
}

/* Queues n creates of DIR/fNNNNN from first on. */
static void mk_many(struct env *env, struct meta *m, uint64_t dir, int first, int n)
{
	int *cnt = calloc(3, sizeof(int));
	env_hook_add(env, NULL, cnt, 0);
	cnt[2] = n;
	char name[32];
	for (int i = first; i < first + n; i++) {
		struct meta_create_args a = {
		    .dir = dir, .name = name, .type = META_REG, .mode = 0644};
		snprintf(name, sizeof(name), "f%05d", i);
		uint64_t id;
		bool existed;
		assert_int_equal(meta_create(m, &a, &id, &existed, count_cb, cnt), 0);
	}
	assert_true(run_until(env, count_n, cnt, 15000));
	assert_int_equal(cnt[1], 0);
}

/* The largest snapshots one log record holds, across a reopen; larger ones are refused up
 * front with nothing changed. */
static void test_snapshot_big(void **state)
{
	struct env *env = *state;
	struct engine *e;
	assert_int_equal(open_engine(env, &e), 0);
	struct meta *m = mopen(env, e);
	uint64_t d = mk(env, m, META_ROOT, "big", META_DIR, NULL);
	mk_many(env, m, d, 0, 14000);
	uint32_t idx;
	assert_int_equal(snap_create(env, m, d, "big", &idx), 0);
	assert_int_equal(rm(env, m, d, "f00007", false, NULL), 0);
	mk_many(env, m, d, 14000, 2000);
	assert_int_equal(snap_create(env, m, d, "bigger", NULL), -EFBIG);
	struct meta_snapinfo si;
	assert_int_equal(meta_snapshot_find(m, "bigger", &si), -ENOENT);
	/* The revert would have to remove 2000 names too: still one record. */
	uint64_t freed[2048];
	uint32_t nf = 0;
	struct hop *h = hop_new(0);
	assert_int_equal(
	    finish(env, h, meta_snapshot_revert(m, "big", freed, 2048, &nf, done_cb, &h->d)), 0);
	assert_int_equal(nf, 2000);
	meta_abandon(m);
	m = mopen(env, e);
	assert_int_equal(meta_snapshot_find(m, "big", &si), 0);
	assert_int_equal(si.files, 14000);
	assert_true(look(m, d, "f00007") > 0);
	assert_int_equal(look(m, d, "f14000"), 0);
	uint64_t sd = META_SNAP_FILEID(idx, d);
	char nm[32];
	for (int i = 0; i < 14000; i++) {
		snprintf(nm, sizeof(nm), "f%05d", i);
		uint64_t live = look(m, d, nm);
		assert_true(live > 0);
		assert_int_equal(look(m, sd, nm), META_SNAP_FILEID(idx, live));
	}
	assert_int_equal(look(m, sd, "f14000"), 0);
	check_tree(m);
	mclose(env, m);
	assert_int_equal(close_engine(env, e), 0);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test_setup_teardown(test_snapshot_view, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_snapshot_revert, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_snapshot_freed, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_snapshot_rules, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_snapshot_big, setup, teardown),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}

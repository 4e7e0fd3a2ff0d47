/*
 * test_snapsync: snapshot catch-up of a returning replica (engine_snapsync.c), clones made
 * while a replica is out, and resync checkpoints, against three real replica servers
 * (engine_env.h). White-box where a property is not observable through the API.
 */
#include "engine_env.h"

/* ---- snapshot catch-up ---- */

static bool merges_done(void *arg)
{
	struct env *env = arg;
	for (int i = 0; i < NSRV; i++) {
		struct store *s;
		struct store_snap *sn;
		uint32_t n;
		if (!env->srv[i] || replica_server_store(env->srv[i], VOL, &s) < 0)
			continue;
		assert_int_equal(store_snapshot_list(s, &sn, &n), 0);
		bool deleting = false;
		for (uint32_t k = 0; k < n; k++)
			deleting |= sn[k].deleting;
		free(sn);
		if (deleting)
			return false;
	}
	return true;
}

/* Every replica has the same snapshots (identity, name, order, parent, chain membership) and
 * the same content in each, extent by extent; returns how many there are. */
static uint32_t snaps_equal(struct env *env)
{
	assert_true(run_until(env, merges_done, env, 10000));
	struct store_snap *ref = NULL;
	uint32_t nref = 0;
	struct store *s0 = NULL;
	uint64_t *h0 = malloc(VSIZE / ENGINE_GRAIN * 8), *h = malloc(VSIZE / ENGINE_GRAIN * 8);
	assert_non_null(h0);
	assert_non_null(h);
	for (int i = 0; i < NSRV; i++) {
		struct store *s;
		struct store_snap *sn;
		uint32_t n;
		assert_int_equal(replica_server_store(env->srv[i], VOL, &s), 0);
		assert_int_equal(store_snapshot_list(s, &sn, &n), 0);
		if (!ref) {
			ref = sn;
			nref = n;
			s0 = s;
			continue;
		}
		if (n != nref)
			fail_msg("%s has %u snapshots, %s has %u", env->node[i], n, env->node[0],
				 nref);
		for (uint32_t k = 0; k < n; k++) {
			assert_string_equal(sn[k].name, ref[k].name);
			assert_string_equal(sn[k].id, ref[k].id);
			assert_string_equal(sn[k].parent_id, ref[k].parent_id);
			assert_int_equal(sn[k].in_head_chain, ref[k].in_head_chain);
			assert_int_equal(store_snap_hash(s0, ref[k].id, 0, VSIZE, ENGINE_GRAIN, h0),
					 0);
			assert_int_equal(store_snap_hash(s, sn[k].id, 0, VSIZE, ENGINE_GRAIN, h),
					 0);
			for (uint64_t g = 0; g < VSIZE / ENGINE_GRAIN; g++)
				if (h[g] != h0[g])
					fail_msg("snapshot %s differs on %s at grain %llu",
						 sn[k].name, env->node[i], (unsigned long long)g);
		}
		free(sn);
	}
	free(ref);
	free(h0);
	free(h);
	return nref;
}

static void snap_op_ok(struct env *env, struct engine *e,
		       int (*op)(struct engine *, const char *, engine_cb, void *),
		       const char *name)
{
	struct done d = {0};
	assert_int_equal(op(e, name, done_cb, &d), 0);
	assert_int_equal(wait_done(env, &d, 5000), 0);
}

static uint64_t copied_of(struct engine *e, const char *node)
{
	struct engine_replica_status st[NSRV];
	get_status(e, st);
	return st[find_node(st, node)].resync_copied;
}

/* A replica down during snapshot creates gets them (same identities, same content) when it
 * returns to a running engine, and again when an engine opens with it behind. */
static void test_snapshot_catchup_create(void **state)
{
	struct env *env = *state;
	struct engine *e;
	assert_int_equal(open_engine(env, &e), 0);
	wpat(env, e, 0xa1, 2u << 20, 65536);
	snap_op_ok(env, e, engine_snapshot_create, "s0");
	/* Two flushes: no grain counts as possibly unflushed when n3 goes. */
	assert_int_equal(eng_flush(env, e), 0);
	assert_int_equal(eng_flush(env, e), 0);
	replica_server_free(env->srv[2]);
	env->srv[2] = NULL;
	wpat(env, e, 0xb2, 5u << 20, 65536);
	snap_op_ok(env, e, engine_snapshot_create, "s1");
	wpat(env, e, 0xc3, 9u << 20, 65536);
	snap_op_ok(env, e, engine_snapshot_create, "s2");
	wpat(env, e, 0xd4, 12u << 20, 65536);
	assert_int_equal(start_server(env, 2), 0);
	wait_healthy(env, e);
	assert_int_equal(snaps_equal(env), 3);
	/* s1 and s2 differ from what n3 had by one grain each; the head by three. */
	assert_int_equal(copied_of(e, "n3"), 5 * ENGINE_GRAIN);
	verify_clean(env, e);
	check_all(env, e);

	/* Behind at open: the new engine catches it up before resyncing. */
	replica_server_free(env->srv[2]);
	env->srv[2] = NULL;
	wpat(env, e, 0xe5, 20u << 20, 65536);
	snap_op_ok(env, e, engine_snapshot_create, "s3");
	wpat(env, e, 0xf6, 30u << 20, 65536);
	assert_int_equal(close_engine(env, e), 0);
	assert_int_equal(start_server(env, 2), 0);
	assert_int_equal(open_engine(env, &e), 0);
	wait_healthy(env, e);
	assert_int_equal(snaps_equal(env), 4);
	verify_clean(env, e);
	check_all(env, e);
	assert_int_equal(close_engine(env, e), 0);
}

/* Deletes and a revert while a replica is down: it loses the deleted snapshots (also one
 * whose name was re-used for a new snapshot), follows the revert, and gets the new one. */
static void test_snapshot_catchup_delete_revert(void **state)
{
	struct env *env = *state;
	struct engine *e;
	assert_int_equal(open_engine(env, &e), 0);
	uint8_t *at_s0 = malloc(VSIZE);
	assert_non_null(at_s0);
	wpat(env, e, 0x11, 2u << 20, 65536);
	snap_op_ok(env, e, engine_snapshot_create, "s0");
	memcpy(at_s0, env->model, VSIZE);
	wpat(env, e, 0x22, 4u << 20, 65536);
	snap_op_ok(env, e, engine_snapshot_create, "s1");
	wpat(env, e, 0x33, 6u << 20, 65536);
	snap_op_ok(env, e, engine_snapshot_create, "s2");
	wpat(env, e, 0x44, 7u << 20, 65536);
	replica_server_free(env->srv[2]);
	env->srv[2] = NULL;

	snap_op_ok(env, e, engine_snapshot_delete, "s1");
	snap_op_ok(env, e, engine_snapshot_revert, "s0");
	memcpy(env->model, at_s0, VSIZE);
	wpat(env, e, 0x55, 8u << 20, 65536);
	assert_true(run_until(env, merges_done, env, 10000)); /* the name is free again */
	snap_op_ok(env, e, engine_snapshot_create, "s1");     /* a new s1 */
	wpat(env, e, 0x66, 10u << 20, 65536);
	assert_true(run_until(env, merges_done, env, 10000));

	assert_int_equal(start_server(env, 2), 0);
	wait_healthy(env, e);
	assert_int_equal(snaps_equal(env), 3); /* s0, s2 (off the head chain), the new s1 */
	struct store *s;
	struct store_snap *sn;
	uint32_t n;
	assert_int_equal(replica_server_store(env->srv[2], VOL, &s), 0);
	assert_int_equal(store_snapshot_list(s, &sn, &n), 0);
	assert_string_equal(sn[1].name, "s2");
	assert_false(sn[1].in_head_chain);
	assert_string_equal(sn[2].name, "s1");
	assert_true(sn[2].in_head_chain);
	free(sn);
	verify_clean(env, e);
	check_all(env, e);

	/* Reverting to what it caught up works the same everywhere. */
	snap_op_ok(env, e, engine_snapshot_revert, "s2");
	struct engine_replica_status st[NSRV];
	get_status(e, st);
	for (int i = 0; i < NSRV; i++)
		assert_int_equal(st[i].state, ENGINE_HEALTHY);
	verify_clean(env, e);
	free(at_s0);
	assert_int_equal(close_engine(env, e), 0);
}

/* The local replica is the one that missed snapshot ops (made by an engine elsewhere): the
 * next local engine catches it up from a remote source through the local target. */
static void test_snapshot_catchup_local(void **state)
{
	struct env *env = *state;
	struct engine *e;
	assert_int_equal(open_engine_at(env, &e, false), 0);
	wpat(env, e, 0x12, 1u << 20, 65536);
	snap_op_ok(env, e, engine_snapshot_create, "a");
	assert_int_equal(eng_flush(env, e), 0);
	assert_int_equal(eng_flush(env, e), 0);
	replica_server_free(env->srv[0]);
	env->srv[0] = NULL;
	wpat(env, e, 0x23, 3u << 20, 65536);
	snap_op_ok(env, e, engine_snapshot_delete, "a");
	snap_op_ok(env, e, engine_snapshot_create, "b");
	wpat(env, e, 0x34, 5u << 20, 65536);
	assert_int_equal(close_engine(env, e), 0);

	assert_int_equal(start_server(env, 0), 0);
	assert_int_equal(open_engine(env, &e), 0);
	assert_non_null(target_of(e, "n1")->store);
	wait_healthy(env, e);
	assert_int_equal(snaps_equal(env), 1);
	verify_clean(env, e);
	check_all(env, e);
	assert_int_equal(close_engine(env, e), 0);
}

/* A revert that only discards the head (to the snapshot it is already on) changes no snapshot
 * list, yet the returning replica must lose its head writes too: its head is compared by hash. */
static void test_snapshot_catchup_discard(void **state)
{
	struct env *env = *state;
	struct engine *e;
	assert_int_equal(open_engine(env, &e), 0);
	uint8_t *at_s0 = malloc(VSIZE);
	assert_non_null(at_s0);
	wpat(env, e, 0x41, 2u << 20, 65536);
	snap_op_ok(env, e, engine_snapshot_create, "s0");
	memcpy(at_s0, env->model, VSIZE);
	wpat(env, e, 0x42, 3u << 20, 65536); /* n3 has it; the revert discards it */
	assert_int_equal(eng_flush(env, e), 0);
	assert_int_equal(eng_flush(env, e), 0);
	replica_server_free(env->srv[2]);
	env->srv[2] = NULL;
	snap_op_ok(env, e, engine_snapshot_revert, "s0");
	memcpy(env->model, at_s0, VSIZE);
	wpat(env, e, 0x43, 6u << 20, 65536);
	assert_int_equal(start_server(env, 2), 0);
	wait_healthy(env, e);
	assert_int_equal(snaps_equal(env), 1);
	struct engine_replica_status st[NSRV];
	get_status(e, st);
	assert_true(st[find_node(st, "n3")].resync_full);
	verify_clean(env, e);
	check_all(env, e);
	free(at_s0);
	assert_int_equal(close_engine(env, e), 0);
}

static bool catching_up(void *arg)
{
	return ((struct target *)arg)->ss != NULL;
}

static bool rebuilding(void *arg)
{
	return ((struct target *)arg)->state == T_REBUILDING;
}

/* Snapshot ops land while the returning replica catches up and while its head resyncs, all
 * under guest writes: it ends with the same snapshots and content as the others. */
static void test_snapshot_catchup_under_load(void **state)
{
	struct env *env = *state;
	struct engine *e;
	/* Everything shares one loop here, so a replica's synchronous work (a merge step, an
	 * fsync on a busy disk) delays the others' answers too: a longer io timeout keeps that
	 * from ejecting a healthy replica, which is not what this test is about. */
	struct engine_params p = {
	    .volume = VOL,
	    .local_node = env->node[0],
	    .local = env->srv[0],
	    .naddrs = NSRV,
	    .addrs = env->addrs,
	    .io_timeout_ms = 3000,
	};
	struct done d = {0};
	assert_int_equal(engine_open(env->l, &p, &e, done_cb, &d), 0);
	assert_int_equal(wait_done(env, &d, 10000), 0);
	env->open[0] = e;
	wpat(env, e, 0x31, 2u << 20, 65536);
	replica_server_free(env->srv[2]);
	env->srv[2] = NULL;
	wpat(env, e, 0x32, 4u << 20, 65536);
	snap_op_ok(env, e, engine_snapshot_create, "s1");
	struct loader ld = {.env = env, .e = e, .region_off = 0, .region_len = VSIZE, .depth = 8};
	load_start(&ld);
	run_for(env, 100);
	snap_op_ok(env, e, engine_snapshot_create, "s2");
	struct target *t3 = target_of(e, "n3");
	assert_int_equal(start_server(env, 2), 0);
	assert_true(run_until(env, catching_up, t3, 5000));
	snap_op_ok(env, e, engine_snapshot_create, "s3"); /* during its catch-up */
	assert_true(run_until(env, rebuilding, t3, 10000));
	snap_op_ok(env, e, engine_snapshot_delete, "s1"); /* during its head resync */
	run_for(env, 100);
	snap_op_ok(env, e, engine_snapshot_create, "s4");
	run_for(env, 100);
	load_stop(&ld);
	if (ld.failed) {
		fprintf(stderr, "failed %llu last %d\n", (unsigned long long)ld.failed,
			ld.last_err);
		dump_status(e);
	}
	assert_int_equal(ld.failed, 0);
	wait_healthy(env, e);
	assert_int_equal(snaps_equal(env), 3);
	assert_int_equal(eng_flush(env, e), 0);
	verify_clean(env, e);
	check_all(env, e);
	assert_int_equal(close_engine(env, e), 0);
}

/* A clone made while a replica is down lists only the replicas it was made on. */
static void test_clone_while_stale(void **state)
{
	struct env *env = *state;
	struct engine *e;
	assert_int_equal(open_engine(env, &e), 0);
	wpat(env, e, 0x77, 0, 4096);
	snap_op_ok(env, e, engine_snapshot_create, "base");
	replica_server_free(env->srv[2]);
	env->srv[2] = NULL;
	wpat(env, e, 0x78, 4096, 4096); /* the engine notices n3 is gone */
	struct stale_wait sw = {e, "n3"};
	assert_true(run_until(env, node_stale, &sw, 5000));
	struct done d = {0};
	assert_int_equal(engine_clone(e, "base", "vol2", done_cb, &d), 0);
	assert_int_equal(wait_done(env, &d, 5000), 0);
	for (int i = 0; i < 2; i++) {
		struct store *s;
		struct store_info in;
		assert_int_equal(replica_server_store(env->srv[i], "vol2", &s), 0);
		assert_int_equal(store_get_info(s, &in), 0);
		assert_int_equal(in.nmembers, 2);
		for (uint32_t k = 0; k < in.nmembers; k++)
			assert_string_not_equal(in.members[k].node, "n3");
	}
	assert_int_equal(start_server(env, 2), 0);
	wait_healthy(env, e);
	assert_int_equal(close_engine(env, e), 0);
}

/* A clone that fails on one in-sync replica (a volume of that name is in the way there) is
 * listed, by the local replica that has it, under a newer generation without that node. */
static void test_clone_partial(void **state)
{
	struct env *env = *state;
	struct engine *e;
	assert_int_equal(open_engine(env, &e), 0);
	wpat(env, e, 0x79, 0, 4096);
	snap_op_ok(env, e, engine_snapshot_create, "base");
	struct store_member only3 = {.node = "n3", .in_sync = true};
	assert_int_equal(replica_server_create(env->srv[2], "vol2", VSIZE, &only3, 1), 0);
	struct done d = {0};
	assert_int_equal(engine_clone(e, "base", "vol2", done_cb, &d), 0);
	assert_int_equal(wait_done(env, &d, 5000), 0);
	struct store *s;
	struct store_info in;
	assert_int_equal(replica_server_store(env->srv[0], "vol2", &s), 0);
	assert_int_equal(store_get_info(s, &in), 0);
	assert_int_equal(in.nmembers, 2);
	for (uint32_t k = 0; k < in.nmembers; k++)
		assert_string_not_equal(in.members[k].node, "n3");
	assert_int_equal(close_engine(env, e), 0);
}

/* ---- resync checkpoints ---- */

#define BIG "big"
#define BIGSIZE (160ull << 20)
#define BIG_DIRTY 150u

static int open_big(struct env *env, struct engine **e)
{
	struct engine_params p = {
	    .volume = BIG,
	    .local_node = env->node[0],
	    .local = env->srv[0],
	    .naddrs = NSRV,
	    .addrs = env->addrs,
	    .io_timeout_ms = IO_TIMEOUT_MS,
	};
	struct done d = {0};
	int r = engine_open(env->l, &p, e, done_cb, &d);
	if (r < 0)
		return r;
	r = wait_done(env, &d, 10000);
	for (int i = 0; i < 4 && r == 0; i++) {
		if (!env->open[i]) {
			env->open[i] = *e;
			break;
		}
	}
	return r;
}

/* Dirty grains of n3 as persisted on n1. */
static uint64_t persisted_dirty(struct env *env)
{
	struct store *s;
	uint32_t grain;
	uint8_t *bits;
	size_t n;
	assert_int_equal(replica_server_store(env->srv[0], BIG, &s), 0);
	assert_int_equal(store_get_dirty(s, "n3", &grain, &bits, &n), 0);
	assert_int_equal(grain, ENGINE_GRAIN);
	uint64_t c = 0;
	for (size_t i = 0; i < n; i++)
		c += (uint64_t)__builtin_popcount(bits[i]);
	free(bits);
	return c;
}

struct copied_wait {
	struct engine *e;
	uint64_t min;
};

static bool copied_enough(void *arg)
{
	struct copied_wait *w = arg;
	return copied_of(w->e, "n3") >= w->min;
}

/* A long bitmap resync persists its progress as it goes (every 64 MiB): an engine that dies
 * half way leaves a bitmap that no longer names what was copied, and the next engine's
 * resync copies only the rest. */
static void test_resync_checkpoint(void **state)
{
	struct env *env = *state;
	struct store_member m[NSRV];
	for (int i = 0; i < NSRV; i++) {
		snprintf(m[i].node, sizeof(m[i].node), "%s", env->node[i]);
		m[i].in_sync = true;
	}
	for (int i = 0; i < NSRV; i++)
		assert_int_equal(replica_server_create(env->srv[i], BIG, BIGSIZE, m, NSRV), 0);
	struct engine *e1, *e2;
	assert_int_equal(open_big(env, &e1), 0);
	replica_server_free(env->srv[2]);
	env->srv[2] = NULL;
	uint8_t buf[4096];
	for (uint32_t g = 0; g < BIG_DIRTY; g++) {
		memset(buf, (int)g + 1, sizeof(buf));
		assert_int_equal(
		    eng_write(env, e1, (uint64_t)g * ENGINE_GRAIN, sizeof(buf), buf, 0), 0);
	}
	assert_int_equal(eng_flush(env, e1), 0);
	uint64_t before = persisted_dirty(env);
	assert_true(before >= BIG_DIRTY);

	assert_int_equal(start_server(env, 2), 0);
	struct copied_wait w = {e1, 80ull << 20};
	assert_true(run_until(env, copied_enough, &w, 20000));
	/* No guest flush happened: only a checkpoint can have persisted the progress. */
	uint64_t mid = persisted_dirty(env);
	if (mid + 64 > before)
		fail_msg("persisted bitmap still has %llu of %llu grains", (unsigned long long)mid,
			 (unsigned long long)before);

	/* e1 dies (a new engine fences it); e2 finishes the job. */
	assert_int_equal(open_big(env, &e2), 0);
	wait_healthy(env, e2);
	assert_true(copied_of(e2, "n3") <= (uint64_t)(BIG_DIRTY - 64) * ENGINE_GRAIN);
	char *json = NULL;
	struct done d = {0};
	assert_int_equal(engine_verify(e2, &json, done_cb, &d), 0);
	assert_int_equal(wait_done(env, &d, 20000), 0);
	json_error_t jerr;
	json_t *j = json_loads(json, 0, &jerr);
	assert_non_null(j);
	assert_int_equal(json_integer_value(json_object_get(j, "checked")), BIGSIZE / ENGINE_GRAIN);
	assert_int_equal(json_array_size(json_object_get(j, "differ")), 0);
	json_decref(j);
	free(json);
	assert_int_equal(close_engine(env, e2), 0);
	assert_int_equal(close_engine(env, e1), -ESTALE);
}

int main(void)
{
	srand((unsigned)getpid());
	if (getenv("TEST_FILTER"))
		cmocka_set_test_filter(getenv("TEST_FILTER"));
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test_setup_teardown(test_snapshot_catchup_create, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_snapshot_catchup_delete_revert, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_snapshot_catchup_local, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_snapshot_catchup_discard, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_snapshot_catchup_under_load, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_clone_while_stale, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_clone_partial, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_resync_checkpoint, setup, teardown),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}

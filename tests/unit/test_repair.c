/*
 * test_repair: engine_repair on three real replica servers (tests/unit/engine_env.h): a replica
 * corrupted behind the engine's back is repaired from the majority while guest writes hit the
 * same extent, a 1-vs-1 split is reported unrepairable and left as it is, and a difference in a
 * snapshot's view is found by verify and repair (and left alone).
 */
#include "engine_env.h"

static void store_get(struct env *env, int srv, uint64_t off, uint32_t len, void *buf)
{
	struct store *s;
	assert_int_equal(replica_server_store(env->srv[srv], VOL, &s), 0);
	struct done d = {0};
	assert_int_equal(store_read(s, off, len, buf, done_cb, &d), 0);
	assert_int_equal(wait_done(env, &d, 5000), 0);
}

/* Every replica's store holds exactly the model. */
static void stores_equal_model(struct env *env)
{
	uint8_t *buf = malloc(8u << 20);
	assert_non_null(buf);
	for (int i = 0; i < NSRV; i++)
		for (uint64_t off = 0; off < VSIZE; off += 8u << 20) {
			store_get(env, i, off, 8u << 20, buf);
			if (memcmp(buf, env->model + off, 8u << 20) != 0)
				fail_msg("replica n%d differs from the model in [%llu, +8M)", i + 1,
					 (unsigned long long)off);
		}
	free(buf);
}

static json_t *run_repair(struct env *env, struct engine *e)
{
	char *json = NULL;
	struct done d = {0};
	assert_int_equal(engine_repair(e, &json, done_cb, &d), 0);
	assert_int_equal(wait_done(env, &d, 15000), 0);
	json_error_t jerr;
	json_t *j = json_loads(json, 0, &jerr);
	assert_non_null(j);
	free(json);
	return j;
}

static json_t *find_extent(json_t *arr, uint64_t off)
{
	size_t i;
	json_t *x;
	json_array_foreach(arr, i, x)
	{
		if ((uint64_t)json_integer_value(json_object_get(x, "offset")) == off)
			return x;
	}
	return NULL;
}

static void test_repair_under_load(void **state)
{
	struct env *env = *state;
	struct engine *e;
	assert_int_equal(open_engine(env, &e), 0);
	wpat(env, e, 0x42, 8u << 20, 8u << 20);
	assert_int_equal(eng_flush(env, e), 0);

	/* n2's extent at 9 MiB and n3's at 14 MiB become garbage behind the engine's back. */
	uint8_t *junk = malloc(ENGINE_GRAIN);
	assert_non_null(junk);
	fill(junk, ENGINE_GRAIN);
	store_poke(env, 1, 9u << 20, junk, ENGINE_GRAIN);
	fill(junk, ENGINE_GRAIN);
	store_poke(env, 2, 14u << 20, junk, ENGINE_GRAIN);
	free(junk);

	/* Guest writes keep landing in n2's extent while repair copies it. */
	struct loader ld = {
	    .env = env, .e = e, .region_off = 9u << 20, .region_len = 1u << 20, .depth = 4};
	load_start(&ld);
	run_for(env, 20);
	json_t *j = run_repair(env, e);
	run_for(env, 50);
	load_stop(&ld);
	assert_int_equal(ld.failed, 0);
	assert_true(ld.ok > 0);

	json_t *rep = json_object_get(j, "repaired");
	assert_int_equal(json_array_size(json_object_get(j, "unrepairable")), 0);
	assert_int_equal(json_array_size(rep), 2);
	json_t *x = find_extent(rep, 9u << 20);
	assert_non_null(x);
	assert_int_equal(json_array_size(json_object_get(x, "to")), 1);
	assert_string_equal(json_string_value(json_array_get(json_object_get(x, "to"), 0)), "n2");
	assert_string_equal(json_string_value(json_object_get(x, "from")), "n1"); /* local */
	x = find_extent(rep, 14u << 20);
	assert_non_null(x);
	assert_string_equal(json_string_value(json_array_get(json_object_get(x, "to"), 0)), "n3");
	json_decref(j);

	verify_clean(env, e);
	assert_int_equal(eng_flush(env, e), 0);
	stores_equal_model(env);
	check_all(env, e);
	assert_int_equal(close_engine(env, e), 0);
}

static void test_repair_split_is_unrepairable(void **state)
{
	struct env *env = *state;
	struct engine *e;
	assert_int_equal(open_engine(env, &e), 0);
	wpat(env, e, 0x42, 3u << 20, 2u << 20);
	assert_int_equal(eng_flush(env, e), 0);
	replica_server_free(env->srv[2]);
	env->srv[2] = NULL;
	struct stale_wait sw = {e, "n3"};
	/* The ejection happens on the next I/O that n3 misses. */
	wpat(env, e, 0x43, 0, 4096);
	assert_true(run_until(env, node_stale, &sw, 3000));

	uint8_t junk[4096];
	memset(junk, 0x99, sizeof(junk));
	store_poke(env, 1, (3u << 20) + 8192, junk, sizeof(junk));

	json_t *j = run_repair(env, e);
	assert_int_equal(json_array_size(json_object_get(j, "repaired")), 0);
	json_t *un = json_object_get(j, "unrepairable");
	assert_int_equal(json_array_size(un), 1);
	json_t *x = find_extent(un, 3u << 20);
	assert_non_null(x);
	assert_string_equal(json_string_value(json_object_get(x, "reason")), "no majority");
	assert_int_equal(json_object_size(json_object_get(x, "hashes")), 2);
	json_decref(j);

	/* Neither side was touched. */
	uint8_t *buf = malloc(ENGINE_GRAIN);
	assert_non_null(buf);
	store_get(env, 0, 3u << 20, ENGINE_GRAIN, buf);
	assert_memory_equal(buf, env->model + (3u << 20), ENGINE_GRAIN);
	store_get(env, 1, 3u << 20, ENGINE_GRAIN, buf);
	assert_memory_equal(buf + 8192, junk, sizeof(junk));
	assert_memory_equal(buf, env->model + (3u << 20), 8192);
	free(buf);
	assert_int_equal(close_engine(env, e), 0);
}

/* Nothing differs: repair reports nothing and writes nothing. */
static void test_repair_clean(void **state)
{
	struct env *env = *state;
	struct engine *e;
	assert_int_equal(open_engine(env, &e), 0);
	wpat(env, e, 0x17, 1u << 20, 1u << 20);
	json_t *j = run_repair(env, e);
	assert_int_equal(json_array_size(json_object_get(j, "repaired")), 0);
	assert_int_equal(json_array_size(json_object_get(j, "unrepairable")), 0);
	assert_int_equal(json_array_size(json_object_get(j, "differ")), 0);
	assert_int_equal(json_integer_value(json_object_get(j, "checked")), VSIZE / ENGINE_GRAIN);
	json_decref(j);
	assert_int_equal(close_engine(env, e), 0);
}

/* A difference frozen into a snapshot's layer: verify and repair name the snapshot's extent
 * (repair does not touch snapshot layers) while the head matches everywhere. */
static void test_snapshot_view_differs(void **state)
{
	struct env *env = *state;
	struct engine *e;
	assert_int_equal(open_engine(env, &e), 0);
	wpat(env, e, 0x42, 2u << 20, 2u << 20);
	uint8_t junk[4096];
	memset(junk, 0x99, sizeof(junk));
	store_poke(env, 2, (3u << 20) + 4096, junk, sizeof(junk));
	struct done d = {0};
	assert_int_equal(engine_snapshot_create(e, "s1", done_cb, &d), 0);
	assert_int_equal(wait_done(env, &d, 10000), 0);
	wpat(env, e, 0x43, 3u << 20, 1u << 20); /* the head agrees again */

	char *json = NULL;
	d = (struct done){0};
	assert_int_equal(engine_verify(e, &json, done_cb, &d), 0);
	assert_int_equal(wait_done(env, &d, 10000), 0);
	json_t *j = json_loads(json, 0, NULL);
	assert_non_null(j);
	free(json);
	for (int pass = 0; pass < 2; pass++) {
		assert_int_equal(json_array_size(json_object_get(j, "differ")), 0);
		assert_int_equal(json_integer_value(json_object_get(j, "snapshots_checked")), 1);
		assert_int_equal(json_array_size(json_object_get(j, "snapshots_unchecked")), 0);
		json_t *sd = json_object_get(j, "snapshots_differ");
		assert_int_equal(json_array_size(sd), 1);
		json_t *x = json_array_get(sd, 0);
		assert_string_equal(json_string_value(json_object_get(x, "snapshot")), "s1");
		assert_int_equal(json_integer_value(json_object_get(x, "offset")), 3u << 20);
		assert_int_equal(json_object_size(json_object_get(x, "hashes")), 3);
		json_decref(j);
		if (pass == 0) {
			j = run_repair(env, e);
			assert_int_equal(json_array_size(json_object_get(j, "repaired")), 0);
			assert_int_equal(json_array_size(json_object_get(j, "unrepairable")), 0);
		}
	}
	check_all(env, e);
	assert_int_equal(close_engine(env, e), 0);
}

/* n2 gets garbage in extents [first, first + n). */
static void corrupt_n2(struct env *env, uint32_t first, uint32_t n)
{
	uint8_t junk[4096];
	for (uint32_t i = 0; i < n; i++) {
		fill(junk, sizeof(junk));
		store_poke(env, 1, (uint64_t)(first + i) * ENGINE_GRAIN + 8192, junk, sizeof(junk));
	}
}

static bool repairing(void *arg)
{
	struct engine *e = arg;
	return e->repair && e->copies > 0;
}

/* A snapshot op asked for in the middle of a repair waits for it, then runs. */
static void test_repair_then_snapshot(void **state)
{
	struct env *env = *state;
	struct engine *e;
	assert_int_equal(open_engine(env, &e), 0);
	wpat(env, e, 0x42, 0, 32u << 20);
	corrupt_n2(env, 4, 24);
	char *json = NULL;
	struct done dr = {0}, ds = {0};
	assert_int_equal(engine_repair(e, &json, done_cb, &dr), 0);
	assert_int_equal(engine_repair(e, &json, done_cb, &dr), -EBUSY);
	assert_true(run_until(env, repairing, e, 10000));
	assert_int_equal(engine_snapshot_create(e, "s1", done_cb, &ds), 0);
	assert_int_equal(wait_done(env, &dr, 15000), 0);
	assert_int_equal(wait_done(env, &ds, 15000), 0);
	json_t *j = json_loads(json, 0, NULL);
	free(json);
	assert_non_null(j);
	assert_int_equal(json_array_size(json_object_get(j, "repaired")), 24);
	assert_int_equal(json_array_size(json_object_get(j, "unrepairable")), 0);
	json_decref(j);
	verify_clean(env, e);
	stores_equal_model(env);
	assert_int_equal(close_engine(env, e), 0);
}

/* Closing the engine cancels a repair cleanly; the next engine's repair finishes the job. */
static void test_close_during_repair(void **state)
{
	struct env *env = *state;
	struct engine *e;
	assert_int_equal(open_engine(env, &e), 0);
	wpat(env, e, 0x42, 0, 32u << 20);
	corrupt_n2(env, 2, 28);
	char *json = NULL;
	struct done dr = {0}, dc = {0};
	assert_int_equal(engine_repair(e, &json, done_cb, &dr), 0);
	assert_true(run_until(env, repairing, e, 10000));
	for (int i = 0; i < 4; i++)
		if (env->open[i] == e)
			env->open[i] = NULL;
	assert_int_equal(engine_close(e, done_cb, &dc), 0);
	assert_int_equal(wait_done(env, &dc, 15000), 0);
	assert_true(dr.done);
	assert_true(dr.res == -ECANCELED || dr.res == 0);
	free(json);

	assert_int_equal(open_engine(env, &e), 0);
	json_t *j = run_repair(env, e);
	assert_int_equal(json_array_size(json_object_get(j, "unrepairable")), 0);
	json_decref(j);
	verify_clean(env, e);
	stores_equal_model(env);
	assert_int_equal(close_engine(env, e), 0);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test_setup_teardown(test_repair_clean, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_repair_under_load, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_repair_split_is_unrepairable, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_snapshot_view_differs, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_repair_then_snapshot, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_close_during_repair, setup, teardown),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}

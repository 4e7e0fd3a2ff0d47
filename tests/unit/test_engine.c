/*
 * test_engine: the replica engine against three real replica servers on 127.0.0.1 (separate
 * mkdtemp data dirs), all on one loop with the engine. White-box where a property is not
 * observable through the API (the dirty bitmap of an ejected replica).
 */

#include "engine_env.h"

/* ---- tests ---- */

static void test_rw_basic(void **state)
{
	struct env *env = *state;
	struct engine *e;
	assert_int_equal(open_engine(env, &e), 0);
	assert_int_equal(engine_size(e), VSIZE);
	assert_true(engine_epoch(e) > 0);
	struct engine_replica_status st[NSRV];
	get_status(e, st);
	for (int i = 0; i < NSRV; i++)
		assert_int_equal(st[i].state, ENGINE_HEALTHY);

	/* Sequential fill of part of the volume, odd sizes included, plus a split-size I/O. */
	uint8_t *buf = malloc(12u << 20);
	assert_non_null(buf);
	fill(buf, 12u << 20);
	memcpy(env->model + (3u << 20) + 5, buf, (12u << 20) - 77);
	assert_int_equal(eng_write(env, e, (3u << 20) + 5, (12u << 20) - 77, buf, 0), 0);
	fill(buf, 8192);
	memcpy(env->model + 100, buf, 8192);
	assert_int_equal(eng_write(env, e, 100, 8192, buf, BDEV_FUA), 0);
	free(buf);
	struct loader ld = {.env = env, .e = e, .region_off = 0, .region_len = VSIZE, .depth = 16};
	load_start(&ld);
	load_wait_ok(&ld, 50);
	load_stop(&ld);
	assert_int_equal(ld.failed, 0);
	assert_int_equal(eng_flush(env, e), 0);
	check_all(env, e);

	/* Out of range is refused. */
	struct bdev b = engine_bdev(e);
	struct done d = {0};
	uint8_t small[16];
	assert_int_equal(b.ops->read(b.ctx, VSIZE - 8, 16, small, done_cb, &d), -EINVAL);

	assert_int_equal(close_engine(env, e), 0);

	/* Reopen: the data is there, and the epoch moved on. */
	assert_int_equal(open_engine(env, &e), 0);
	check_all(env, e);
	assert_int_equal(close_engine(env, e), 0);
}

static void test_eject_resync(void **state)
{
	struct env *env = *state;
	struct engine *e;
	assert_int_equal(open_engine(env, &e), 0);
	/* A full first pass so the volume has data everywhere. */
	uint8_t *buf = malloc(4u << 20);
	assert_non_null(buf);
	for (uint64_t off = 0; off < VSIZE; off += 4u << 20) {
		fill(buf, 4u << 20);
		memcpy(env->model + off, buf, 4u << 20);
		assert_int_equal(eng_write(env, e, off, 4u << 20, buf, 0), 0);
	}
	free(buf);
	assert_int_equal(eng_flush(env, e), 0);

	/* Load on 4 MiB while n3 dies. */
	struct loader ld = {
	    .env = env, .e = e, .region_off = 8u << 20, .region_len = 4u << 20, .depth = 8};
	load_start(&ld);
	run_for(env, 100);
	replica_server_free(env->srv[2]);
	env->srv[2] = NULL;
	struct stale_wait sw = {e, "n3"};
	assert_true(run_until(env, node_stale, &sw, 10000));
	{
		/* Ejected because its connection dropped, not after an io timeout. */
		struct engine_replica_status st[NSRV];
		get_status(e, st);
		assert_null(strstr(st[find_node(st, "n3")].error, "no answer"));
	}
	run_for(env, 300);
	load_stop(&ld);
	assert_int_equal(ld.failed, 0);
	struct target *t3 = NULL;
	for (uint32_t i = 0; i < e->ntargets; i++)
		if (strcmp(e->t[i]->node, "n3") == 0)
			t3 = e->t[i];
	assert_non_null(t3);
	uint64_t ndirty = bitmap_count(&t3->dirty);
	assert_true(ndirty > 0);
	assert_true(ndirty <= 8);
	assert_int_equal(eng_flush(env, e), 0);
	/* The flush persisted n3's bitmap on the in-sync replicas. */
	for (int i = 0; i < 2; i++) {
		struct store *s;
		uint32_t grain;
		uint8_t *bits;
		size_t nb;
		assert_int_equal(replica_server_store(env->srv[i], VOL, &s), 0);
		assert_int_equal(store_get_dirty(s, "n3", &grain, &bits, &nb), 0);
		assert_int_equal(grain, ENGINE_GRAIN);
		struct bitmap bm;
		bitmap_init(&bm);
		assert_int_equal(bitmap_from_bytes(&bm, bits, nb), 0);
		assert_int_equal(bitmap_count(&bm), ndirty);
		bitmap_free(&bm);
		free(bits);
	}

	/* Back on the same port and dir: reconnect and resync while load goes on. */
	assert_int_equal(start_server(env, 2), 0);
	struct loader ld2 = {
	    .env = env, .e = e, .region_off = 20u << 20, .region_len = 4u << 20, .depth = 4};
	load_start(&ld2);
	struct done d = {0};
	assert_int_equal(engine_wait_healthy(e, 10000, done_cb, &d), 0);
	if (wait_done(env, &d, 12000) != 0) {
		dump_status(e);
		fail();
	}
	run_for(env, 200);
	load_stop(&ld2);
	assert_int_equal(ld2.failed, 0);

	struct engine_replica_status st[NSRV];
	get_status(e, st);
	int k = find_node(st, "n3");
	assert_int_equal(st[k].state, ENGINE_HEALTHY);
	assert_false(st[k].resync_full);
	assert_true(st[k].resync_copied > 0);
	assert_true(st[k].resync_copied <= VSIZE / 4);
	/* In sync again: its bitmap is gone everywhere. */
	assert_int_equal(eng_flush(env, e), 0);
	for (int i = 0; i < 2; i++) {
		struct store *s;
		uint32_t grain;
		uint8_t *bits = NULL;
		size_t nb;
		assert_int_equal(replica_server_store(env->srv[i], VOL, &s), 0);
		assert_int_equal(store_get_dirty(s, "n3", &grain, &bits, &nb), -ENOENT);
	}

	assert_int_equal(eng_flush(env, e), 0);
	char *json = NULL;
	d = (struct done){0};
	assert_int_equal(engine_verify(e, &json, done_cb, &d), 0);
	assert_int_equal(wait_done(env, &d, 10000), 0);
	assert_non_null(json);
	json_error_t jerr;
	json_t *j = json_loads(json, 0, &jerr);
	assert_non_null(j);
	assert_int_equal(json_integer_value(json_object_get(j, "checked")), VSIZE / ENGINE_GRAIN);
	assert_int_equal(json_array_size(json_object_get(j, "differ")), 0);
	json_decref(j);
	free(json);
	check_all(env, e);
	assert_int_equal(close_engine(env, e), 0);
}

static void test_verify_finds_difference(void **state)
{
	struct env *env = *state;
	struct engine *e;
	assert_int_equal(open_engine(env, &e), 0);
	uint8_t buf[4096];
	fill(buf, sizeof(buf));
	assert_int_equal(eng_write(env, e, 5u << 20, sizeof(buf), buf, 0), 0);
	/* Corrupt n2's copy behind the engine's back. */
	struct store *s;
	assert_int_equal(replica_server_store(env->srv[1], VOL, &s), 0);
	buf[0] ^= 1;
	struct done d = {0};
	assert_int_equal(store_write(s, 5u << 20, sizeof(buf), buf, done_cb, &d), 0);
	assert_true(wait_done(env, &d, 5000) >= 0);
	char *json = NULL;
	d = (struct done){0};
	assert_int_equal(engine_verify(e, &json, done_cb, &d), 0);
	assert_int_equal(wait_done(env, &d, 10000), 0);
	json_error_t jerr;
	json_t *j = json_loads(json, 0, &jerr);
	assert_non_null(j);
	json_t *differ = json_object_get(j, "differ");
	assert_int_equal(json_array_size(differ), 1);
	assert_int_equal(json_integer_value(json_object_get(json_array_get(differ, 0), "offset")),
			 5u << 20);
	json_decref(j);
	free(json);
	assert_int_equal(close_engine(env, e), 0);
}

static void test_fencing(void **state)
{
	struct env *env = *state;
	struct engine *e1, *e2;
	uint8_t buf[4096];
	assert_int_equal(open_engine(env, &e1), 0);
	fill(buf, sizeof(buf));
	assert_int_equal(eng_write(env, e1, 0, sizeof(buf), buf, 0), 0);
	assert_int_equal(open_engine(env, &e2), 0);
	assert_true(engine_epoch(e2) > engine_epoch(e1));
	/* The old engine can no longer write, ever; the new one can. */
	assert_int_equal(eng_write(env, e1, 0, sizeof(buf), buf, 0), -ESTALE);
	assert_int_equal(eng_write(env, e1, 8192, sizeof(buf), buf, 0), -ESTALE);
	uint8_t rb[4096];
	assert_int_equal(eng_read(env, e1, 0, sizeof(rb), rb), -ESTALE);
	assert_int_equal(eng_write(env, e2, 0, sizeof(buf), buf, 0), 0);
	assert_int_equal(eng_read(env, e2, 0, sizeof(rb), rb), 0);
	assert_memory_equal(rb, buf, sizeof(buf));
	close_engine(env, e1);
	assert_int_equal(close_engine(env, e2), 0);

	/* Under load: once the new engine is open, the old one completes nothing new. */
	assert_int_equal(open_engine(env, &e1), 0);
	struct loader ld = {.env = env, .e = e1, .region_off = 0, .region_len = VSIZE, .depth = 8};
	load_start(&ld);
	load_wait_ok(&ld, 1);
	assert_int_equal(open_engine(env, &e2), 0);
	uint64_t ok_at_open = ld.ok;
	run_for(env, 200);
	load_stop(&ld);
	assert_true(ld.ok - ok_at_open <= 8);
	assert_true(ld.failed > 0);
	assert_int_equal(ld.last_err, -ESTALE);
	assert_int_equal(eng_write(env, e2, 0, sizeof(buf), buf, 0), 0);
	close_engine(env, e1);
	assert_int_equal(close_engine(env, e2), 0);
}

static void test_no_quorum(void **state)
{
	struct env *env = *state;
	struct engine *e;
	uint8_t buf[4096];
	env->io_timeout_ms = TIMEOUT_MS;
	assert_int_equal(open_engine(env, &e), 0);
	fill(buf, sizeof(buf));
	assert_int_equal(eng_write(env, e, 0, sizeof(buf), buf, 0), 0);
	replica_server_free(env->srv[1]);
	replica_server_free(env->srv[2]);
	env->srv[1] = env->srv[2] = NULL;
	uint64_t t0 = loop_now_ms();
	assert_int_equal(eng_write(env, e, 4096, sizeof(buf), buf, 0), -EIO);
	/* It waited the io timeout for quorum to come back (eng_write bounds the wait). */
	assert_true(loop_now_ms() - t0 >= TIMEOUT_MS);
	/* Reads still come from the local replica. */
	uint8_t rb[4096];
	assert_int_equal(eng_read(env, e, 0, sizeof(rb), rb), 0);
	assert_memory_equal(rb, buf, sizeof(buf));
	close_engine(env, e);
	/* A new engine cannot open without a majority. */
	assert_int_equal(open_engine(env, &e), -ENOTCONN);
}

static void test_snapshots(void **state)
{
	struct env *env = *state;
	struct engine *e;
	uint8_t a[4096], b[4096], rb[4096];
	assert_int_equal(open_engine(env, &e), 0);
	fill(a, sizeof(a));
	fill(b, sizeof(b));
	assert_int_equal(eng_write(env, e, 0, sizeof(a), a, 0), 0);
	struct done d = {0};
	assert_int_equal(engine_snapshot_create(e, "s1", done_cb, &d), 0);
	assert_int_equal(wait_done(env, &d, 5000), 0);
	assert_int_equal(eng_write(env, e, 0, sizeof(b), b, 0), 0);
	char *json = NULL;
	d = (struct done){0};
	assert_int_equal(engine_snapshot_list(e, &json, done_cb, &d), 0);
	assert_int_equal(wait_done(env, &d, 5000), 0);
	assert_non_null(json);
	assert_non_null(strstr(json, "\"s1\""));
	free(json);
	/* Every replica has the snapshot. */
	for (int i = 0; i < NSRV; i++) {
		struct store *s;
		struct store_info in;
		assert_int_equal(replica_server_store(env->srv[i], VOL, &s), 0);
		assert_int_equal(store_get_info(s, &in), 0);
		assert_int_equal(in.nsnapshots, 1);
	}
	assert_int_equal(eng_read(env, e, 0, sizeof(rb), rb), 0);
	assert_memory_equal(rb, b, sizeof(b));
	/* A sub-block write over a block the head already owns (after the snapshot). */
	uint8_t *big = malloc(1u << 20), *rbig = malloc(1u << 20);
	assert_non_null(big);
	assert_non_null(rbig);
	memset(big, 0xb1, 1u << 20);
	assert_int_equal(eng_write(env, e, 0, 1u << 20, big, 0), 0);
	memset(big + 4096, 0xb3, 512);
	assert_int_equal(eng_write(env, e, 4096, 512, big + 4096, 0), 0);
	assert_int_equal(eng_read(env, e, 0, 1u << 20, rbig), 0);
	assert_memory_equal(rbig, big, 1u << 20);
	free(big);
	free(rbig);
	d = (struct done){0};
	assert_int_equal(engine_snapshot_revert(e, "s1", done_cb, &d), 0);
	assert_int_equal(wait_done(env, &d, 5000), 0);
	assert_int_equal(eng_read(env, e, 0, sizeof(rb), rb), 0);
	assert_memory_equal(rb, a, sizeof(a));
	d = (struct done){0};
	assert_int_equal(engine_snapshot_create(e, "bad/name", done_cb, &d), -EINVAL);
	assert_int_equal(close_engine(env, e), 0);
}

static int snap_read(struct env *env, struct engine *e, const char *name, uint64_t off,
		     uint32_t len, void *buf)
{
	struct hop *h = hop_new(len);
	int r = engine_snap_read(e, name, off, len, h->data, done_cb, &h->d);
	if (r == 0) {
		assert_false(h->d.done); /* never before the call returns */
		r = hop_wait(env, h, 10000);
	}
	if (r == 0)
		memcpy(buf, h->data, len);
	free(h);
	return r;
}

static int snap_op(struct env *env, struct engine *e,
		   int (*fn)(struct engine *, const char *, engine_cb, void *), const char *name)
{
	struct done d = {0};
	int r = fn(e, name, done_cb, &d);
	return r ? r : wait_done(env, &d, 5000);
}

/* engine_snap_read: the snapshot's view (not the head), chunked past PROTO_MAX_IO, zeros past
 * the volume's end, -ENOENT for an unknown name, a re-created name read fresh (the cached
 * identity is dropped), and failover when the replica being read dies. */
static void test_snap_read(void **state)
{
	struct env *env = *state;
	struct engine *e;
	const uint32_t big = PROTO_MAX_IO + (3u << 20);
	uint8_t *a = malloc(big), *b = malloc(big), *rb = malloc(big);
	assert_true(a && b && rb);
	fill(a, big);
	fill(b, big);
	assert_int_equal(open_engine(env, &e), 0);
	assert_int_equal(eng_write(env, e, 0, big, a, 0), 0);
	assert_int_equal(eng_write(env, e, VSIZE - 4096, 4096, a, 0), 0);
	assert_int_equal(snap_op(env, e, engine_snapshot_create, "s1"), 0);
	assert_int_equal(eng_write(env, e, 0, big, b, 0), 0);
	assert_int_equal(eng_write(env, e, VSIZE - 4096, 4096, b, 0), 0);
	assert_int_equal(snap_read(env, e, "s1", 0, big, rb), 0);
	assert_memory_equal(rb, a, big);
	assert_int_equal(snap_read(env, e, "s1", 4096, 512, rb), 0);
	assert_memory_equal(rb, a + 4096, 512);
	assert_int_equal(eng_read(env, e, 0, 4096, rb), 0);
	assert_memory_equal(rb, b, 4096);
	/* across the end: the tail, then zeros; wholly past it: zeros */
	memset(rb, 0x55, 8192);
	assert_int_equal(snap_read(env, e, "s1", VSIZE - 4096, 8192, rb), 0);
	assert_memory_equal(rb, a, 4096);
	for (int i = 4096; i < 8192; i++)
		assert_int_equal(rb[i], 0);
	memset(rb, 0x55, 4096);
	assert_int_equal(snap_read(env, e, "s1", VSIZE + (1u << 20), 4096, rb), 0);
	for (int i = 0; i < 4096; i++)
		assert_int_equal(rb[i], 0);
	/* unknown names, also past the end; bad names */
	assert_int_equal(snap_read(env, e, "nope", 0, 4096, rb), -ENOENT);
	assert_int_equal(snap_read(env, e, "nope", VSIZE, 4096, rb), -ENOENT);
	struct done d = {0};
	assert_int_equal(engine_snap_read(e, "bad/name", 0, 4096, rb, done_cb, &d), -EINVAL);
	/* deleted, then the name taken again by a snapshot of b */
	assert_int_equal(snap_op(env, e, engine_snapshot_delete, "s1"), 0);
	assert_int_equal(snap_read(env, e, "s1", 0, 4096, rb), -ENOENT);
	assert_int_equal(snap_op(env, e, engine_snapshot_create, "s1"), 0);
	assert_int_equal(snap_read(env, e, "s1", 0, 4096, rb), 0);
	assert_memory_equal(rb, b, 4096);
	assert_int_equal(close_engine(env, e), 0);

	/* Remote only (reads go to n1 first): n1 dies with reads in flight. */
	assert_int_equal(open_engine_at(env, &e, false), 0);
	enum { N = 8 };
	struct hop *h[N];
	for (int i = 0; i < N; i++) {
		h[i] = hop_new(1u << 20);
		env_hook_add(env, NULL, h[i], 0); /* freed by teardown */
		assert_int_equal(engine_snap_read(e, "s1", (uint64_t)i << 20, 1u << 20, h[i]->data,
						  done_cb, &h[i]->d),
				 0);
	}
	replica_server_free(env->srv[0]);
	env->srv[0] = NULL;
	for (int i = 0; i < N; i++) {
		assert_int_equal(hop_wait(env, h[i], 10000), 0);
		assert_memory_equal(h[i]->data, b + ((size_t)i << 20), 1u << 20);
	}
	/* later reads skip it */
	assert_int_equal(snap_read(env, e, "s1", 0, 4096, rb), 0);
	assert_memory_equal(rb, b, 4096);
	assert_int_equal(close_engine(env, e), 0);
	free(a);
	free(b);
	free(rb);
}

static void test_unclean_rebuild(void **state)
{
	struct env *env = *state;
	struct engine *e1, *e2;
	uint8_t buf[65536];
	assert_int_equal(open_engine(env, &e1), 0);
	for (int g = 0; g < 16; g++) {
		fill(buf, sizeof(buf));
		memcpy(env->model + (uint64_t)g * ENGINE_GRAIN + 4096, buf, sizeof(buf));
		assert_int_equal(
		    eng_write(env, e1, (uint64_t)g * ENGINE_GRAIN + 4096, sizeof(buf), buf, 0), 0);
	}
	assert_int_equal(eng_flush(env, e1), 0);
	/* Divergence as unflushed writes at a crash could leave it. */
	fill(buf, 4096);
	store_poke(env, 2, 7 * ENGINE_GRAIN + 100, buf, 4096);
	store_poke(env, 1, 9 * ENGINE_GRAIN, buf, 4096);

	assert_int_equal(open_engine(env, &e2), 0);
	/* It serves at once, from the reference replica. */
	uint8_t rb[4096];
	assert_int_equal(eng_read(env, e2, 7 * ENGINE_GRAIN + 100, sizeof(rb), rb), 0);
	assert_memory_equal(rb, env->model + 7 * ENGINE_GRAIN + 100, sizeof(rb));
	wait_healthy(env, e2);
	struct engine_replica_status st[NSRV];
	get_status(e2, st);
	for (int i = 1; i < NSRV; i++) {
		int k = find_node(st, env->node[i]);
		assert_true(st[k].resync_full);
		assert_int_equal(st[k].resync_copied, ENGINE_GRAIN);
		assert_int_equal(st[k].resync_done, VSIZE);
	}
	verify_clean(env, e2);
	check_all(env, e2);
	assert_int_equal(close_engine(env, e1), -ESTALE);
	assert_int_equal(close_engine(env, e2), 0);
}

/* A replica that was stale at a clean close is resynced by the next engine from the bitmap
 * persisted on the others. */
static void test_bitmap_across_engines(void **state)
{
	struct env *env = *state;
	struct engine *e;
	uint8_t buf[65536];
	assert_int_equal(open_engine(env, &e), 0);
	assert_int_equal(eng_flush(env, e), 0);
	replica_server_free(env->srv[2]);
	env->srv[2] = NULL;
	for (int i = 0; i < 20; i++) {
		uint64_t off = (3u << 20) + (uint64_t)(i % 4) * 65536 + (i >= 10) * (40u << 20);
		fill(buf, sizeof(buf));
		memcpy(env->model + off, buf, sizeof(buf));
		assert_int_equal(eng_write(env, e, off, sizeof(buf), buf, 0), 0);
	}
	assert_int_equal(eng_flush(env, e), 0);
	struct engine_replica_status st[NSRV];
	get_status(e, st);
	assert_int_equal(st[find_node(st, "n3")].state, ENGINE_STALE);
	assert_int_equal(close_engine(env, e), 0);

	assert_int_equal(start_server(env, 2), 0);
	assert_int_equal(open_engine(env, &e), 0);
	struct target *t3 = target_of(e, "n3");
	assert_false(t3->need_full);
	wait_healthy(env, e);
	get_status(e, st);
	int k = find_node(st, "n3");
	assert_false(st[k].resync_full);
	assert_int_equal(st[k].resync_copied, 2 * ENGINE_GRAIN);
	verify_clean(env, e);
	check_all(env, e);
	assert_int_equal(close_engine(env, e), 0);
}

/* The local replica is the one that fell behind: an engine without it runs on the two
 * remote ones; the next engine (local again) takes the remote authoritative membership,
 * reads from remote replicas and resyncs the local one from the persisted bitmap. */
static void test_local_behind(void **state)
{
	struct env *env = *state;
	struct engine *e;
	uint8_t buf[65536];
	assert_int_equal(open_engine_at(env, &e, false), 0);
	for (uint64_t off = 0; off < VSIZE; off += 8u << 20) {
		fill(buf, sizeof(buf));
		memcpy(env->model + off, buf, sizeof(buf));
		assert_int_equal(eng_write(env, e, off, sizeof(buf), buf, 0), 0);
	}
	assert_int_equal(eng_flush(env, e), 0);
	replica_server_free(env->srv[0]);
	env->srv[0] = NULL;
	for (int i = 0; i < 3; i++) {
		uint64_t off = (17u << 20) + (uint64_t)i * (1u << 20);
		fill(buf, sizeof(buf));
		memcpy(env->model + off, buf, sizeof(buf));
		assert_int_equal(eng_write(env, e, off, sizeof(buf), buf, BDEV_FUA), 0);
	}
	assert_int_equal(close_engine(env, e), 0);

	assert_int_equal(start_server(env, 0), 0);
	assert_int_equal(open_engine(env, &e), 0);
	struct target *t1 = target_of(e, "n1");
	assert_non_null(t1->store);
	check_all(env, e); /* served by n2 / n3 while n1 catches up */
	wait_healthy(env, e);
	struct engine_replica_status st[NSRV];
	get_status(e, st);
	int k = find_node(st, "n1");
	assert_false(st[k].resync_full);
	assert_int_equal(st[k].resync_copied, 3 * ENGINE_GRAIN);
	verify_clean(env, e);
	check_all(env, e);
	assert_int_equal(close_engine(env, e), 0);
}

/* A replica down during a snapshot create gets the snapshot by catch-up, then its head by
 * its bitmap. */
static void test_snapshot_while_stale(void **state)
{
	struct env *env = *state;
	struct engine *e;
	uint8_t buf[65536];
	assert_int_equal(open_engine(env, &e), 0);
	replica_server_free(env->srv[2]);
	env->srv[2] = NULL;
	fill(buf, sizeof(buf));
	memcpy(env->model + (5u << 20), buf, sizeof(buf));
	assert_int_equal(eng_write(env, e, 5u << 20, sizeof(buf), buf, 0), 0);
	struct done d = {0};
	assert_int_equal(engine_snapshot_create(e, "s1", done_cb, &d), 0);
	assert_int_equal(wait_done(env, &d, 5000), 0);
	fill(buf, sizeof(buf));
	memcpy(env->model + (9u << 20), buf, sizeof(buf));
	assert_int_equal(eng_write(env, e, 9u << 20, sizeof(buf), buf, 0), 0);
	assert_int_equal(start_server(env, 2), 0);
	wait_healthy(env, e);
	struct engine_replica_status st[NSRV];
	get_status(e, st);
	int k = find_node(st, "n3");
	/* The catch-up copies s1's one differing grain; its bitmap stays valid for the head. */
	assert_false(st[k].resync_full);
	assert_int_equal(st[k].resync_copied, 3 * ENGINE_GRAIN);
	verify_clean(env, e);
	check_all(env, e);
	assert_int_equal(close_engine(env, e), 0);
}

struct readop {
	struct done d;
	uint8_t buf[1 << 20];
};

/* Reads in flight on a replica that dies are retried on another in-sync replica. */
static void test_read_failover(void **state)
{
	struct env *env = *state;
	struct engine *e;
	assert_int_equal(open_engine_at(env, &e, false), 0);
	uint8_t *buf = malloc(16u << 20);
	assert_non_null(buf);
	fill(buf, 16u << 20);
	memcpy(env->model, buf, 16u << 20);
	assert_int_equal(eng_write(env, e, 0, 16u << 20, buf, 0), 0);
	free(buf);
	enum { N = 16 };
	struct readop *ops = calloc(N, sizeof(*ops));
	assert_non_null(ops);
	struct bdev b = engine_bdev(e);
	for (int i = 0; i < N; i++)
		assert_int_equal(
		    b.ops->read(b.ctx, (uint64_t)i << 20, 1u << 20, ops[i].buf, done_cb, &ops[i].d),
		    0);
	/* Reads go to the first in-sync replica: n1. */
	replica_server_free(env->srv[0]);
	env->srv[0] = NULL;
	for (int i = 0; i < N; i++) {
		assert_int_equal(wait_done(env, &ops[i].d, 5000), 0);
		assert_memory_equal(ops[i].buf, env->model + ((uint64_t)i << 20), 1u << 20);
	}
	free(ops);
	struct engine_replica_status st[NSRV];
	get_status(e, st);
	assert_int_equal(st[find_node(st, "n1")].state, ENGINE_STALE);
	assert_int_equal(close_engine(env, e), 0);
}

/* A replica down during a resize is grown when it comes back, then resynced. */
static void test_resize_while_stale(void **state)
{
	struct env *env = *state;
	struct engine *e;
	uint8_t buf[65536], rb[65536];
	assert_int_equal(open_engine(env, &e), 0);
	replica_server_free(env->srv[2]);
	env->srv[2] = NULL;
	struct done d = {0};
	assert_int_equal(engine_resize(e, VSIZE + (32u << 20), done_cb, &d), 0);
	assert_int_equal(wait_done(env, &d, 5000), 0);
	assert_int_equal(engine_size(e), VSIZE + (32u << 20));
	fill(buf, sizeof(buf));
	assert_int_equal(eng_write(env, e, VSIZE + (8u << 20), sizeof(buf), buf, 0), 0);
	assert_int_equal(start_server(env, 2), 0);
	wait_healthy(env, e);
	struct engine_replica_status st[NSRV];
	get_status(e, st);
	assert_int_equal(st[find_node(st, "n3")].resync_copied, ENGINE_GRAIN);
	assert_int_equal(eng_read(env, e, VSIZE + (8u << 20), sizeof(rb), rb), 0);
	assert_memory_equal(rb, buf, sizeof(buf));
	char *json = NULL;
	d = (struct done){0};
	assert_int_equal(engine_verify(e, &json, done_cb, &d), 0);
	assert_int_equal(wait_done(env, &d, 10000), 0);
	assert_non_null(strstr(json, "\"differ\":[]"));
	assert_non_null(strstr(json, "\"checked\":96"));
	free(json);
	assert_int_equal(close_engine(env, e), 0);
	/* The next engine sees the new size everywhere. */
	assert_int_equal(open_engine(env, &e), 0);
	assert_int_equal(engine_size(e), VSIZE + (32u << 20));
	get_status(e, st);
	for (int i = 0; i < NSRV; i++)
		assert_int_equal(st[i].state, ENGINE_HEALTHY);
	assert_int_equal(close_engine(env, e), 0);
}

/* The e2e snapshot sequence, byte for byte. */
static void test_snapshot_subblock(void **state)
{
	struct env *env = *state;
	struct engine *e;
	assert_int_equal(open_engine(env, &e), 0);
	wpat(env, e, 0xa1, 0, 4u << 20);
	wpat(env, e, 0xa2, 8u << 20, 1u << 20);
	wpat(env, e, 0xa3, 4095, 2);
	struct done d = {0};
	assert_int_equal(engine_snapshot_create(e, "s1", done_cb, &d), 0);
	assert_int_equal(wait_done(env, &d, 5000), 0);
	wpat(env, e, 0xb1, 0, 1u << 20);
	wpat(env, e, 0xb2, 20u << 20, 1u << 20);
	wpat(env, e, 0xb3, 4096, 512);
	check_all(env, e);
	verify_clean(env, e);
	assert_int_equal(close_engine(env, e), 0);
}

static void test_trim(void **state)
{
	struct env *env = *state;
	struct engine *e;
	uint8_t *buf = malloc(4u << 20);
	assert_non_null(buf);
	assert_int_equal(open_engine(env, &e), 0);
	fill(buf, 4u << 20);
	memcpy(env->model + (1u << 20), buf, 4u << 20);
	assert_int_equal(eng_write(env, e, 1u << 20, 4u << 20, buf, 0), 0);
	struct bdev b = engine_bdev(e);
	for (int zero = 0; zero < 2; zero++) {
		struct done d = {0};
		uint64_t off = zero ? (3u << 20) : (1u << 20) + 4096;
		assert_int_equal(
		    b.ops->trim(b.ctx, off, 1u << 20, zero, zero ? BDEV_FUA : 0, done_cb, &d), 0);
		assert_int_equal(wait_done(env, &d, 5000), 0);
		memset(env->model + off, 0, 1u << 20);
	}
	check_all(env, e);
	verify_clean(env, e);
	free(buf);
	assert_int_equal(close_engine(env, e), 0);
}

/* ---- a TCP proxy that can stop forwarding, to make a replica hang without dying ---- */

struct pipe_end {
	struct proxy *p;
	int from, to;
	bool open;
};

struct proxy {
	struct loop *l;
	int lfd;
	uint16_t port, target;
	bool frozen;
	bool refuse; /* drop new connections at once */
	struct pipe_end ends[32];
	int nends;
};

static void end_close(struct pipe_end *pe)
{
	struct proxy *p = pe->p;
	for (int i = 0; i < p->nends; i++) {
		struct pipe_end *o = &p->ends[i];
		if (o->open && (o->from == pe->from || o->from == pe->to)) {
			loop_del_fd(p->l, o->from);
			close(o->from);
			o->open = false;
		}
	}
}

static void end_event(void *arg, uint32_t ev)
{
	(void)ev;
	struct pipe_end *pe = arg;
	char buf[65536];
	ssize_t n = read(pe->from, buf, sizeof(buf));
	if (n <= 0) {
		end_close(pe);
		return;
	}
	for (ssize_t off = 0; off < n;) {
		ssize_t w = write(pe->to, buf + off, (size_t)(n - off));
		if (w <= 0) {
			end_close(pe);
			return;
		}
		off += w;
	}
}

static void proxy_accept(void *arg, uint32_t ev)
{
	(void)ev;
	struct proxy *p = arg;
	int a = accept(p->lfd, NULL, NULL);
	if (a < 0)
		return;
	if (p->refuse) {
		close(a);
		return;
	}
	int b = socket(AF_INET, SOCK_STREAM, 0);
	struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons(p->target)};
	sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	if (b < 0 || connect(b, (struct sockaddr *)&sa, sizeof(sa)) < 0 || p->nends + 2 > 32) {
		close(a);
		if (b >= 0)
			close(b);
		return;
	}
	struct pipe_end *x = &p->ends[p->nends++], *y = &p->ends[p->nends++];
	*x = (struct pipe_end){p, a, b, true};
	*y = (struct pipe_end){p, b, a, true};
	uint32_t evs = p->frozen ? 0 : EPOLLIN;
	loop_add_fd(p->l, a, evs, end_event, x);
	loop_add_fd(p->l, b, evs, end_event, y);
}

static void proxy_stop(struct proxy *p);

static void proxy_detach(void *arg, int n)
{
	(void)n;
	proxy_stop(arg);
}

/* On the heap and registered with env: its fds call back into it from the loop. */
static struct proxy *proxy_start(struct env *env, uint16_t target)
{
	struct loop *l = env->l;
	struct proxy *p = calloc(1, sizeof(*p));
	assert_non_null(p);
	p->l = l;
	p->target = target;
	p->lfd = socket(AF_INET, SOCK_STREAM, 0);
	assert_true(p->lfd >= 0);
	int one = 1;
	setsockopt(p->lfd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
	struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = 0};
	sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	assert_int_equal(bind(p->lfd, (struct sockaddr *)&sa, sizeof(sa)), 0);
	socklen_t sl = sizeof(sa);
	assert_int_equal(getsockname(p->lfd, (struct sockaddr *)&sa, &sl), 0);
	p->port = ntohs(sa.sin_port);
	assert_int_equal(listen(p->lfd, 8), 0);
	assert_int_equal(loop_add_fd(l, p->lfd, EPOLLIN, proxy_accept, p), 0);
	env_hook_add(env, proxy_detach, p, 0);
	return p;
}

static void proxy_freeze(struct proxy *p, bool frozen)
{
	p->frozen = frozen;
	for (int i = 0; i < p->nends; i++)
		if (p->ends[i].open)
			loop_mod_fd(p->l, p->ends[i].from, frozen ? 0 : EPOLLIN, end_event,
				    &p->ends[i]);
}

static void proxy_stop(struct proxy *p)
{
	for (int i = 0; i < p->nends; i++)
		if (p->ends[i].open)
			end_close(&p->ends[i]);
	if (p->lfd >= 0) {
		loop_del_fd(p->l, p->lfd);
		close(p->lfd);
		p->lfd = -1;
	}
}

static void proxy_free(struct env *env, struct proxy *p)
{
	proxy_stop(p);
	env_hook_del(env, p);
	free(p);
}

/* A replica that stops answering (but keeps its connection) is ejected after the io
 * timeout; writes go on; once it answers again it is reconnected and resynced. */
static void test_timeout_eject(void **state)
{
	struct env *env = *state;
	env->io_timeout_ms = TIMEOUT_MS;
	struct proxy *px = proxy_start(env, env->port[2]);
	env->addrs[2].port = px->port;
	struct engine *e;
	assert_int_equal(open_engine(env, &e), 0);
	assert_int_equal(target_of(e, "n3")->store, NULL);
	struct loader ld = {
	    .env = env, .e = e, .region_off = 0, .region_len = 4u << 20, .depth = 4};
	load_start(&ld);
	run_for(env, 100);
	proxy_freeze(px, true);
	/* Ejected for its oldest request left unanswered, once that one's deadline passed (a
	 * request already in flight counts from when it was sent, not from the freeze). */
	struct target *t3 = target_of(e, "n3");
	uint64_t due = t3->ifl_head ? t3->ifl_head->deadline : loop_now_ms() + TIMEOUT_MS;
	struct stale_wait sw = {e, "n3"};
	assert_true(run_until(env, node_stale, &sw, 10000));
	assert_true(loop_now_ms() >= due);
	struct engine_replica_status st[NSRV];
	get_status(e, st);
	assert_non_null(strstr(st[find_node(st, "n3")].error, "no answer"));
	/* Still writing without n3. */
	load_wait_ok(&ld, ld.ok + 8);
	proxy_freeze(px, false);
	wait_healthy(env, e);
	load_stop(&ld);
	assert_int_equal(ld.failed, 0);
	assert_int_equal(eng_flush(env, e), 0);
	verify_clean(env, e);
	check_all(env, e);
	assert_int_equal(close_engine(env, e), 0);
	proxy_free(env, px);
}

/* A replica in sync by the membership but not closed cleanly by the last engine, and
 * unreachable when the next one opens, is rebuilt by hash when it comes back. */
static void test_unclean_late_return(void **state)
{
	struct env *env = *state;
	struct proxy *px = proxy_start(env, env->port[2]);
	env->addrs[2].port = px->port;
	struct engine *e;
	uint8_t buf[65536];
	assert_int_equal(open_engine(env, &e), 0);
	fill(buf, sizeof(buf));
	memcpy(env->model + (6u << 20), buf, sizeof(buf));
	assert_int_equal(eng_write(env, e, 6u << 20, sizeof(buf), buf, 0), 0);
	assert_int_equal(close_engine(env, e), 0);
	/* As if its CLOSE had been lost along with its last writes. */
	struct store *s3;
	assert_int_equal(replica_server_store(env->srv[2], VOL, &s3), 0);
	assert_int_equal(store_set_clean(s3, false), 0);
	fill(buf, 4096);
	store_poke(env, 2, (6u << 20) + 8192, buf, 4096);

	px->refuse = true; /* n3 is unreachable for the next open */
	assert_int_equal(open_engine(env, &e), 0);
	struct engine_replica_status st[NSRV];
	get_status(e, st);
	assert_int_equal(st[find_node(st, "n3")].state, ENGINE_STALE);
	px->refuse = false;
	wait_healthy(env, e);
	get_status(e, st);
	int k = find_node(st, "n3");
	assert_true(st[k].resync_full);
	assert_int_equal(st[k].resync_copied, ENGINE_GRAIN);
	verify_clean(env, e);
	assert_int_equal(close_engine(env, e), 0);
	proxy_free(env, px);
}

/* Replicas die and come back (one at a time: with two of three out of sync there is no
 * quorum) under load, resyncing under load: no write fails, and at the end every replica
 * holds exactly the model. */
static void test_chaos(void **state)
{
	struct env *env = *state;
	struct engine *e;
	assert_int_equal(open_engine(env, &e), 0);
	struct loader ld = {.env = env, .e = e, .region_off = 0, .region_len = VSIZE, .depth = 16};
	load_start(&ld);
	for (int round = 0; round < 4; round++) {
		int victim = 1 + round % 2;
		run_for(env, 150 + (uint32_t)(rand() % 200));
		replica_server_free(env->srv[victim]);
		env->srv[victim] = NULL;
		run_for(env, 150 + (uint32_t)(rand() % 300));
		assert_int_equal(start_server(env, victim), 0);
		assert_int_equal(eng_flush(env, e), 0);
		wait_healthy(env, e);
	}
	run_for(env, 200);
	load_stop(&ld);
	if (ld.failed) {
		fprintf(stderr, "failed %llu last %d\n", (unsigned long long)ld.failed,
			ld.last_err);
		dump_status(e);
	}
	assert_int_equal(ld.failed, 0);
	wait_healthy(env, e);
	assert_int_equal(eng_flush(env, e), 0);
	verify_clean(env, e);
	check_all(env, e);
	assert_int_equal(close_engine(env, e), 0);
	/* And a fresh engine agrees. */
	assert_int_equal(open_engine(env, &e), 0);
	check_all(env, e);
	assert_int_equal(close_engine(env, e), 0);
}

static void test_open_errors(void **state)
{
	struct env *env = *state;
	struct engine *e;
	struct done d = {0};
	struct engine_params p = {
	    .volume = "nosuch",
	    .local_node = env->node[0],
	    .local = env->srv[0],
	    .naddrs = NSRV,
	    .addrs = env->addrs,
	    .io_timeout_ms = TIMEOUT_MS,
	};
	assert_int_equal(engine_open(env->l, &p, &e, done_cb, &d), 0);
	assert_int_equal(wait_done(env, &d, 5000), -ENOENT);
	p.volume = "bad/name";
	assert_int_equal(engine_open(env->l, &p, &e, done_cb, &d), -EINVAL);
	/* Nobody to ask at all. */
	p.volume = VOL;
	p.local = NULL;
	p.naddrs = 0;
	d = (struct done){0};
	assert_int_equal(engine_open(env->l, &p, &e, done_cb, &d), 0);
	assert_int_equal(wait_done(env, &d, 5000), -ENOTCONN);
}

static void test_clone(void **state)
{
	struct env *env = *state;
	struct engine *e;
	uint8_t a[4096];
	assert_int_equal(open_engine(env, &e), 0);
	fill(a, sizeof(a));
	assert_int_equal(eng_write(env, e, 0, sizeof(a), a, 0), 0);
	struct done d = {0};
	assert_int_equal(engine_snapshot_create(e, "base", done_cb, &d), 0);
	assert_int_equal(wait_done(env, &d, 5000), 0);
	d = (struct done){0};
	assert_int_equal(engine_clone(e, "base", "vol2", done_cb, &d), 0);
	assert_int_equal(wait_done(env, &d, 5000), 0);
	for (int i = 0; i < NSRV; i++) {
		struct store *s;
		assert_int_equal(replica_server_store(env->srv[i], "vol2", &s), 0);
		uint8_t rb[4096];
		d = (struct done){0};
		assert_int_equal(store_read(s, 0, sizeof(rb), rb, done_cb, &d), 0);
		assert_true(wait_done(env, &d, 5000) >= 0);
		assert_memory_equal(rb, a, sizeof(a));
	}
	d = (struct done){0};
	assert_int_equal(engine_clone(e, "nosuch", "vol3", done_cb, &d), 0);
	assert_true(wait_done(env, &d, 5000) < 0);
	/* Failing the same way everywhere changes nothing: nobody is ejected. */
	struct engine_replica_status st[NSRV];
	get_status(e, st);
	for (int i = 0; i < NSRV; i++)
		assert_int_equal(st[i].state, ENGINE_HEALTHY);
	d = (struct done){0};
	assert_int_equal(engine_snapshot_delete(e, "nosuch", done_cb, &d), 0);
	assert_true(wait_done(env, &d, 5000) < 0);
	assert_int_equal(eng_write(env, e, 0, sizeof(a), a, 0), 0);
	assert_int_equal(close_engine(env, e), 0);
}

int main(void)
{
	srand((unsigned)getpid());
	if (getenv("TEST_FILTER"))
		cmocka_set_test_filter(getenv("TEST_FILTER"));
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test_setup_teardown(test_rw_basic, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_eject_resync, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_verify_finds_difference, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_fencing, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_no_quorum, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_snapshots, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_snap_read, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_unclean_rebuild, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_bitmap_across_engines, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_trim, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_snapshot_subblock, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_resize_while_stale, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_read_failover, setup, teardown),

	    cmocka_unit_test_setup_teardown(test_snapshot_while_stale, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_local_behind, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_timeout_eject, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_clone, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_open_errors, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_chaos, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_unclean_late_return, setup, teardown),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}

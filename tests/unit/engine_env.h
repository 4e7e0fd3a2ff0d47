/*
 * engine_env: the fixture shared by the engine tests (test_engine.c, test_snapsync.c): three
 * real replica servers on 127.0.0.1 (separate mkdtemp data dirs), all on one loop with the
 * engine, and helpers to run the loop, do I/O and look at replica status. Test-only.
 */
#ifndef BLOCKD_TEST_ENGINE_ENV_H
#define BLOCKD_TEST_ENGINE_ENV_H

#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>
#include <cmocka.h>
#include <jansson.h>
#include "replica/engine.h"
#include "replica/engine_int.h"
#include "replica/loop.h"
#include "replica/server.h"

#define VOL "vol1"
#define VSIZE (64ull << 20)
#define NSRV 3
/* The io timeout of tests about timeouts and quorum waits (set env->io_timeout_ms). */
#define TIMEOUT_MS 300
/* Everyone else's: the engine and all three replicas share one thread here (under ASan, on a
 * busy CI machine), so 4 MiB pieces pipelined to every replica can take longer than
 * TIMEOUT_MS without any replica being at fault. */
#define IO_TIMEOUT_MS 3000

struct env {
	struct loop *l;
	struct replica_server *srv[NSRV];
	char dir[NSRV][64];
	char node[NSRV][16];
	uint16_t port[NSRV];
	struct engine_replica_addr addrs[NSRV];
	uint8_t *model;
	struct engine *open[4]; /* closed by teardown if a test failed half way */
	uint32_t io_timeout_ms; /* of the engines open_engine_at() opens; 0: IO_TIMEOUT_MS */
	/*
	 * Test state that loop callbacks reach lives on the heap and is registered here while
	 * it is live: a test that fails half way is left by a longjmp, so teardown must detach
	 * it (fn) before closing the engines and running the loop, and frees it afterwards.
	 */
	struct env_hook {
		void (*fn)(void *arg, int n);
		void *arg;
		int n;
	} hooks[8];
};

static inline void env_hook_add(struct env *env, void (*fn)(void *, int), void *arg, int n)
{
	for (int i = 0; i < 8; i++) {
		if (!env->hooks[i].arg) {
			env->hooks[i] = (struct env_hook){fn, arg, n};
			return;
		}
	}
	fail_msg("too many env hooks");
}

static inline void env_hook_del(struct env *env, void *arg)
{
	for (int i = 0; i < 8; i++)
		if (env->hooks[i].arg == arg)
			env->hooks[i] = (struct env_hook){0};
}

struct done {
	bool done;
	int res;
};

static inline void done_cb(void *arg, int res)
{
	struct done *d = arg;
	d->done = true;
	d->res = res;
}

/* ---- running the loop until something happens ---- */

struct waitctx {
	struct loop *l;
	bool (*pred)(void *);
	void *arg;
	uint64_t deadline;
};

static inline void wait_tick(void *p)
{
	struct waitctx *w = p;
	if (w->pred(w->arg) || loop_now_ms() >= w->deadline) {
		loop_stop(w->l);
		return;
	}
	loop_timer_add(w->l, 2, wait_tick, w, NULL);
}

static inline bool run_until(struct env *env, bool (*pred)(void *), void *arg, uint32_t ms)
{
	struct waitctx w = {env->l, pred, arg, loop_now_ms() + ms};
	loop_timer_add(env->l, 0, wait_tick, &w, NULL);
	loop_run(env->l);
	return pred(arg);
}

static inline bool is_done(void *arg)
{
	return ((struct done *)arg)->done;
}

static inline bool never(void *arg)
{
	(void)arg;
	return false;
}

static inline void run_for(struct env *env, uint32_t ms)
{
	run_until(env, never, NULL, ms);
}

static inline int wait_done(struct env *env, struct done *d, uint32_t ms)
{
	assert_true(run_until(env, is_done, d, ms));
	return d->res;
}

/* ---- setup ---- */

static inline int start_server(struct env *env, int i)
{
	return replica_server_new(env->l, env->node[i], env->dir[i], "127.0.0.1", env->port[i],
				  &env->srv[i]);
}

static inline int setup(void **state)
{
	struct env *env = calloc(1, sizeof(*env));
	assert_non_null(env);
	assert_int_equal(loop_new(&env->l), 0);
	struct store_member m[NSRV];
	for (int i = 0; i < NSRV; i++) {
		snprintf(env->dir[i], sizeof(env->dir[i]), "/tmp/test_engine.XXXXXX");
		assert_non_null(mkdtemp(env->dir[i]));
		snprintf(env->node[i], sizeof(env->node[i]), "n%d", i + 1);
		snprintf(m[i].node, sizeof(m[i].node), "%s", env->node[i]);
		m[i].in_sync = true;
	}
	/* Below the ephemeral range; another process may hold a port, so retry elsewhere. */
	int r = -1;
	for (int attempt = 0; attempt < 50 && r != 0; attempt++) {
		uint16_t base = (uint16_t)(12000 + (getpid() * 7 + rand()) % 20000);
		for (int i = 0; i < NSRV; i++) {
			env->port[i] = (uint16_t)(base + i);
			r = start_server(env, i);
			if (r != 0) {
				for (int k = 0; k < i; k++)
					replica_server_free(env->srv[k]);
				break;
			}
		}
	}
	assert_int_equal(r, 0);
	for (int i = 0; i < NSRV; i++) {
		snprintf(env->addrs[i].node, sizeof(env->addrs[i].node), "%s", env->node[i]);
		snprintf(env->addrs[i].host, sizeof(env->addrs[i].host), "127.0.0.1");
		env->addrs[i].port = env->port[i];
	}
	for (int i = 0; i < NSRV; i++)
		assert_int_equal(replica_server_create(env->srv[i], VOL, VSIZE, m, NSRV), 0);
	env->model = calloc(1, VSIZE);
	assert_non_null(env->model);
	*state = env;
	return 0;
}

/*
 * The completion record (and data) of an op a helper waits for, on the heap: when the wait
 * gives up, the test fails and its stack is gone, so the record is left to teardown, which
 * frees it once the engines are closed and their callbacks have run.
 */
struct hop {
	struct done d;
	uint8_t data[];
};

static inline struct hop *hop_new(size_t len)
{
	struct hop *h = calloc(1, sizeof(*h) + len);
	assert_non_null(h);
	return h;
}

static inline int hop_wait(struct env *env, struct hop *h, uint32_t ms)
{
	if (!run_until(env, is_done, &h->d, ms)) {
		env_hook_add(env, NULL, h, 0);
		fail_msg("no completion in %u ms", ms);
	}
	return h->d.res;
}

static inline int close_engine(struct env *env, struct engine *e);

static inline int teardown(void **state)
{
	struct env *env = *state;
	for (int i = 0; i < 8; i++)
		if (env->hooks[i].fn)
			env->hooks[i].fn(env->hooks[i].arg, env->hooks[i].n);
	for (int i = 0; i < 4; i++)
		if (env->open[i])
			close_engine(env, env->open[i]);
	run_for(env, 10); /* every callback of the engines runs while their state is live */
	for (int i = 0; i < 8; i++)
		free(env->hooks[i].arg);
	for (int i = 0; i < NSRV; i++) {
		if (env->srv[i])
			replica_server_free(env->srv[i]);
		char cmd[128];
		snprintf(cmd, sizeof(cmd), "rm -rf %s", env->dir[i]);
		assert_int_equal(system(cmd), 0);
	}
	run_for(env, 10); /* let deferred frees run */
	loop_free(env->l);
	free(env->model);
	free(env);
	return 0;
}

static inline int open_engine_at(struct env *env, struct engine **e, bool local)
{
	struct engine_params p = {
	    .volume = VOL,
	    .local_node = local ? env->node[0] : "elsewhere",
	    .local = local ? env->srv[0] : NULL,
	    .naddrs = NSRV,
	    .addrs = env->addrs,
	    .io_timeout_ms = env->io_timeout_ms ? env->io_timeout_ms : IO_TIMEOUT_MS,
	};
	struct hop *h = hop_new(0);
	int r = engine_open(env->l, &p, e, done_cb, &h->d);
	if (r == 0)
		r = hop_wait(env, h, 10000);
	free(h);
	for (int i = 0; i < 4 && r == 0; i++) {
		if (!env->open[i]) {
			env->open[i] = *e;
			break;
		}
	}
	return r;
}

static inline int open_engine(struct env *env, struct engine **e)
{
	return open_engine_at(env, e, true);
}

static inline int close_engine(struct env *env, struct engine *e)
{
	for (int i = 0; i < 4; i++)
		if (env->open[i] == e)
			env->open[i] = NULL;
	struct hop *h = hop_new(0);
	int r = engine_close(e, done_cb, &h->d);
	if (r == 0)
		r = hop_wait(env, h, 10000);
	free(h);
	return r;
}

/* ---- I/O helpers ---- */

static inline int eng_write(struct env *env, struct engine *e, uint64_t off, uint32_t len,
			    const void *buf, uint32_t flags)
{
	struct bdev b = engine_bdev(e);
	struct hop *h = hop_new(len);
	memcpy(h->data, buf, len);
	int r = b.ops->write(b.ctx, off, len, h->data, flags, done_cb, &h->d);
	if (r == 0)
		r = hop_wait(env, h, 10000);
	free(h);
	return r;
}

static inline int eng_read(struct env *env, struct engine *e, uint64_t off, uint32_t len, void *buf)
{
	struct bdev b = engine_bdev(e);
	struct hop *h = hop_new(len);
	int r = b.ops->read(b.ctx, off, len, h->data, done_cb, &h->d);
	if (r == 0)
		r = hop_wait(env, h, 10000);
	if (r == 0)
		memcpy(buf, h->data, len);
	free(h);
	return r;
}

static inline int eng_flush(struct env *env, struct engine *e)
{
	struct bdev b = engine_bdev(e);
	struct hop *h = hop_new(0);
	int r = b.ops->flush(b.ctx, done_cb, &h->d);
	if (r == 0)
		r = hop_wait(env, h, 10000);
	free(h);
	return r;
}

static inline void fill(uint8_t *p, size_t n)
{
	for (size_t i = 0; i < n; i++)
		p[i] = (uint8_t)rand();
}

static inline void check_all(struct env *env, struct engine *e)
{
	uint8_t *buf = malloc(8u << 20);
	assert_non_null(buf);
	for (uint64_t off = 0; off < VSIZE; off += 8u << 20) {
		assert_int_equal(eng_read(env, e, off, 8u << 20, buf), 0);
		assert_memory_equal(buf, env->model + off, 8u << 20);
	}
	free(buf);
}

/* Keeps `depth` writes in flight, each slot in its own region so that the model can be
 * updated at submission. */
struct loader {
	struct env *env;
	struct engine *e;
	uint64_t region_off, region_len;
	int depth;
	bool stop;
	int inflight;
	uint64_t ok, failed;
	int last_err;
	struct slot {
		struct loader *ld; /* NULL once detached by teardown: completions are ignored */
		int idx;
		uint8_t buf[64 << 10];
	} * slots;
};

static inline void load_submit(struct slot *s);

static inline void load_done(void *arg, int res)
{
	struct slot *s = arg;
	struct loader *ld = s->ld;
	if (!ld)
		return;
	ld->inflight--;
	if (res == 0) {
		ld->ok++;
	} else {
		ld->failed++;
		ld->last_err = res;
		return; /* this slot stops: an immediate retry would spin */
	}
	if (!ld->stop)
		load_submit(s);
}

static inline void load_submit(struct slot *s)
{
	struct loader *ld = s->ld;
	uint64_t per = ld->region_len / (uint64_t)ld->depth;
	uint32_t len = (uint32_t)(4096 * (1 + rand() % 16));
	uint64_t off = ld->region_off + per * (uint64_t)s->idx +
		       4096 * (uint64_t)(rand() % (int)((per - len) / 4096));
	fill(s->buf, len);
	memcpy(ld->env->model + off, s->buf, len);
	struct bdev b = engine_bdev(ld->e);
	ld->inflight++;
	int r = b.ops->write(b.ctx, off, len, s->buf, 0, load_done, s);
	if (r < 0) {
		ld->inflight--;
		ld->failed++;
		ld->last_err = r;
	}
}

/* Teardown of a test that failed with the loader running (its struct loader, on the test's
 * stack, is gone): the writes still in flight end unseen. */
static inline void load_detach(void *arg, int n)
{
	struct slot *slots = arg;
	for (int i = 0; i < n; i++)
		slots[i].ld = NULL;
}

static inline void load_start(struct loader *ld)
{
	ld->slots = calloc((size_t)ld->depth, sizeof(*ld->slots));
	assert_non_null(ld->slots);
	env_hook_add(ld->env, load_detach, ld->slots, ld->depth);
	for (int i = 0; i < ld->depth; i++) {
		ld->slots[i].ld = ld;
		ld->slots[i].idx = i;
		load_submit(&ld->slots[i]);
	}
}

static inline bool load_idle(void *arg)
{
	return ((struct loader *)arg)->inflight == 0;
}

struct load_progress {
	struct loader *ld;
	uint64_t ok;
};

static inline bool load_progressed(void *arg)
{
	struct load_progress *lp = arg;
	return lp->ld->ok >= lp->ok;
}

/* Until ok writes have succeeded (however slow the machine), failing after a generous bound. */
static inline void load_wait_ok(struct loader *ld, uint64_t ok)
{
	struct load_progress lp = {ld, ok};
	if (!run_until(ld->env, load_progressed, &lp, 10000))
		fail_msg("only %llu writes in 10 s (%llu failed, last %d)",
			 (unsigned long long)ld->ok, (unsigned long long)ld->failed, ld->last_err);
}

static inline void load_stop(struct loader *ld)
{
	ld->stop = true;
	assert_true(run_until(ld->env, load_idle, ld, 10000));
	env_hook_del(ld->env, ld->slots);
	free(ld->slots);
}

static inline void get_status(struct engine *e, struct engine_replica_status *st)
{
	uint32_t n = NSRV;
	assert_int_equal(engine_replicas(e, st, &n), 0);
	assert_int_equal(n, NSRV);
}

static inline void dump_status(struct engine *e)
{
	struct engine_replica_status st[NSRV];
	get_status(e, st);
	for (int i = 0; i < NSRV; i++)
		fprintf(stderr, "%s state %d epoch %llu copied %llu done %llu/%llu full %d: %s\n",
			st[i].node, st[i].state, (unsigned long long)st[i].epoch,
			(unsigned long long)st[i].resync_copied,
			(unsigned long long)st[i].resync_done,
			(unsigned long long)st[i].resync_total, st[i].resync_full, st[i].error);
}

static inline int find_node(struct engine_replica_status *st, const char *node)
{
	for (int i = 0; i < NSRV; i++)
		if (strcmp(st[i].node, node) == 0)
			return i;
	fail_msg("node %s not in status", node);
	return -1;
}

struct stale_wait {
	struct engine *e;
	const char *node;
};

static inline bool node_stale(void *arg)
{
	struct stale_wait *w = arg;
	struct engine_replica_status st[NSRV];
	get_status(w->e, st);
	return st[find_node(st, w->node)].state == ENGINE_STALE;
}

static inline struct target *target_of(struct engine *e, const char *node)
{
	for (uint32_t i = 0; i < e->ntargets; i++)
		if (strcmp(e->t[i]->node, node) == 0)
			return e->t[i];
	fail_msg("no target %s", node);
	return NULL;
}

static inline void wait_healthy(struct env *env, struct engine *e)
{
	struct hop *h = hop_new(0);
	assert_int_equal(engine_wait_healthy(e, 10000, done_cb, &h->d), 0);
	int r = hop_wait(env, h, 12000);
	free(h);
	if (r != 0) {
		dump_status(e);
		fail();
	}
}

static inline void verify_clean(struct env *env, struct engine *e)
{
	char *json = NULL;
	struct done d = {0};
	assert_int_equal(engine_verify(e, &json, done_cb, &d), 0);
	assert_int_equal(wait_done(env, &d, 10000), 0);
	json_error_t jerr;
	json_t *j = json_loads(json, 0, &jerr);
	assert_non_null(j);
	assert_int_equal(json_integer_value(json_object_get(j, "checked")), VSIZE / ENGINE_GRAIN);
	if (json_array_size(json_object_get(j, "differ")) != 0)
		fail_msg("verify: %s", json);
	json_decref(j);
	free(json);
}

static inline void store_poke(struct env *env, int srv, uint64_t off, const void *buf, uint32_t len)
{
	struct store *s;
	assert_int_equal(replica_server_store(env->srv[srv], VOL, &s), 0);
	struct done d = {0};
	assert_int_equal(store_write(s, off, len, buf, done_cb, &d), 0);
	assert_true(wait_done(env, &d, 5000) >= 0);
}

/* An engine that vanished without closing leaves the replicas unclean: the next engine
 * compares every extent against one replica and repairs what differs, serving meanwhile. */
static inline void wpat(struct env *env, struct engine *e, int pat, uint64_t off, uint32_t len)
{
	uint8_t *b = malloc(len);
	assert_non_null(b);
	memset(b, pat, len);
	memcpy(env->model + off, b, len);
	assert_int_equal(eng_write(env, e, off, len, b, 0), 0);
	free(b);
}

#endif

/*
 * cluster_env: the fixture of the tests that need a real 3-node cluster of blockd processes
 * (test_filevol, test_gateway, test_gateway_snap, test_nfsgw_api): `blockctl cluster up
 * --no-gateway` from $BUILD (default build-san) in a fresh mkdtemp directory, a gateway
 * section for it, a loop on a thread of its own, and gateways started and stopped on that
 * thread. cluster_down() kills whatever blockd a failed start or stop left, so no process
 * outlives the test. Test-only, header-only: each test binary includes it once.
 */
#ifndef BLOCKD_TEST_CLUSTER_ENV_H
#define BLOCKD_TEST_CLUSTER_ENV_H

#include <errno.h>
#include <glob.h>
#include <pthread.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "blockd/config.h"
#include "nfsgw/gateway.h"
#include "replica/loop.h"

struct cluster {
	char dir[64];
	char build[1024];
	char conf[128];
	char exports[128]; /* dir/exports: the file cluster_add_gateway() points gateways at */
	struct config cfg;
};

static inline void cluster_kill_pidfile(const char *path)
{
	FILE *f = fopen(path, "r");
	int pid = 0;
	if (!f)
		return;
	if (fscanf(f, "%d", &pid) == 1 && pid > 0)
		kill(pid, SIGKILL);
	fclose(f);
}

/* Stops the cluster, kills any node that survived (a failed `cluster up` may have left some
 * before writing the config, hence the directory scan too) and removes the directory. */
static inline void cluster_down(struct cluster *c)
{
	char cmd[2048];
	snprintf(cmd, sizeof(cmd), "'%s/blockctl' -c '%s' cluster down >/dev/null 2>&1", c->build,
		 c->conf);
	if (system(cmd) != 0)
		fprintf(stderr, "cluster down failed\n");
	char err[256];
	if (!c->cfg.nnodes && config_load(c->conf, &c->cfg, err, sizeof(err)) != 0)
		c->cfg.nnodes = 0;
	for (unsigned i = 0; i < c->cfg.nnodes; i++) {
		char p[CONFIG_PATH_MAX + 16];
		snprintf(p, sizeof(p), "%s/blockd.pid", c->cfg.nodes[i].data);
		cluster_kill_pidfile(p);
	}
	char pat[128];
	snprintf(pat, sizeof(pat), "%s/*/blockd.pid", c->dir);
	glob_t g;
	if (glob(pat, 0, NULL, &g) == 0)
		for (size_t i = 0; i < g.gl_pathc; i++)
			cluster_kill_pidfile(g.gl_pathv[i]);
	globfree(&g);
	snprintf(cmd, sizeof(cmd), "rm -rf '%s'", c->dir);
	if (system(cmd) != 0)
		fprintf(stderr, "rm %s failed\n", c->dir);
	memset(&c->cfg, 0, sizeof(c->cfg));
}

/*
 * Starts 3 nodes in /tmp/<name>.XXXXXX with base port base_of(k, arg) on try k: another run
 * may hold a port range, so up to 4 tries, each in a fresh directory, each failure cleaned
 * up. Returns 0 with c->cfg loaded (no gateways), or -1 with nothing left running.
 */
static inline int cluster_up(struct cluster *c, const char *name,
			     unsigned (*base_of)(unsigned k, void *arg), void *arg)
{
	const char *b = getenv("BUILD");
	snprintf(c->build, sizeof(c->build), "%s", b && *b ? b : "build-san");
	int r = -1;
	char err[256] = "";
	for (unsigned k = 0; k < 4 && r != 0; k++) {
		snprintf(c->dir, sizeof(c->dir), "/tmp/%s.XXXXXX", name);
		if (!mkdtemp(c->dir))
			return -1;
		snprintf(c->conf, sizeof(c->conf), "%s/cluster.conf", c->dir);
		snprintf(c->exports, sizeof(c->exports), "%s/exports", c->dir);
		char cmd[4096];
		snprintf(cmd, sizeof(cmd),
			 "BLOCKD_BIN='%s/blockd' ASAN_OPTIONS=detect_leaks=0 '%s/blockctl' cluster "
			 "up --nodes 3 --dir '%s' --base-port %u --no-gateway >/dev/null",
			 c->build, c->build, c->dir, base_of(k, arg));
		r = system(cmd);
		if (r == 0)
			r = config_load(c->conf, &c->cfg, err, sizeof(err));
		if (r != 0) {
			fprintf(stderr, "cluster up failed (%d) %s\n", r, err);
			cluster_down(c);
		}
	}
	if (r != 0)
		return -1;
	c->cfg.ngateways = 0;
	return 0;
}

/* A base port for try k: one of slots ranges of step ports from first, by pid. */
static inline unsigned cluster_base(unsigned first, unsigned slots, unsigned step, unsigned k)
{
	return first + (unsigned)((getpid() + 3 * (int)k) % (int)slots) * step;
}

/* Adds gateway section name on host (NFS 2049, MOUNT 20048, portmapper 111, 2 replicas,
 * exports c->exports) with meta volume meta; the caller may adjust the rest. */
static inline struct config_gateway *cluster_add_gateway(struct cluster *c, const char *name,
							 const char *host, const char *meta)
{
	struct config_gateway *g = &c->cfg.gateways[c->cfg.ngateways++];
	memset(g, 0, sizeof(*g));
	snprintf(g->name, sizeof(g->name), "%s", name);
	snprintf(g->host, sizeof(g->host), "%s", host);
	g->nfs_port = 2049;
	g->mount_port = 20048;
	g->portmap_port = 111;
	g->replicas = 2;
	snprintf(g->exports, sizeof(g->exports), "%s", c->exports);
	snprintf(g->meta_volume, sizeof(g->meta_volume), "%s", meta);
	return g;
}

/* Writes text to path; 0 or -errno. */
static inline int cluster_write_file(const char *path, const char *text)
{
	FILE *f = fopen(path, "w");
	if (!f)
		return -errno;
	fputs(text, f);
	return fclose(f) == 0 ? 0 : -errno;
}

/* ---- the loop on a thread of its own ---- */

struct loop_thread {
	struct loop *l;
	pthread_t t;
	bool running;
};

static inline void *loop_thread_main(void *arg)
{
	loop_run(arg);
	return NULL;
}

static inline int loop_thread_start(struct loop_thread *lt)
{
	int r = loop_new(&lt->l);
	if (r == 0)
		r = -pthread_create(&lt->t, NULL, loop_thread_main, lt->l);
	lt->running = r == 0;
	return r;
}

static inline void loop_thread_stop_fn(void *arg)
{
	loop_stop(arg);
}

/* Stops and frees whatever loop_thread_start() got to. */
static inline void loop_thread_stop(struct loop_thread *lt)
{
	if (lt->running) {
		loop_post(lt->l, loop_thread_stop_fn, lt->l);
		pthread_join(lt->t, NULL);
		lt->running = false;
	}
	if (lt->l)
		loop_free(lt->l);
	lt->l = NULL;
}

/* ---- gateway start and stop from the test thread ---- */

struct gw_call {
	const struct gateway_params *p;
	struct gateway **g;
	struct loop_waiter *w;
	bool in_call, done;
	int res;
};

static inline void gw_call_cb(void *arg, int res)
{
	struct gw_call *c = arg;
	c->done = true;
	c->res = res;
	/* A callback from inside gateway_start/stop is answered once it returns. */
	if (!c->in_call)
		loop_done(c->w, res);
}

static inline void gw_call_fn(void *arg, struct loop_waiter *w)
{
	struct gw_call *c = arg;
	c->w = w;
	c->in_call = true;
	int r =
	    c->p ? gateway_start(c->p, c->g, gw_call_cb, c) : gateway_stop(*c->g, gw_call_cb, c);
	c->in_call = false;
	if (c->done)
		loop_done(w, c->res);
	else if (r)
		loop_done(w, r);
}

/* gateway_start(p) on loop l, waited for: 0 with *g, or the error (*g NULL). */
static inline int gw_start_wait(struct loop *l, const struct gateway_params *p, struct gateway **g)
{
	struct gw_call c = {.p = p, .g = g};
	int r = loop_call_wait(l, gw_call_fn, &c);
	if (r)
		*g = NULL;
	return r;
}

/* gateway_stop(*g) on loop l, waited for; *g is NULL after. */
static inline int gw_stop_wait(struct loop *l, struct gateway **g)
{
	struct gw_call c = {.g = g};
	int r = loop_call_wait(l, gw_call_fn, &c);
	*g = NULL;
	return r;
}

#endif

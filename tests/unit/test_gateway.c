/*
 * test_gateway: whole gateways (gateway_start/stop) against a real 3-node cluster of blockd
 * processes (`blockctl cluster up --no-gateway`, $BUILD or build-san), on 127.0.0.47 and
 * 127.0.0.48 with their own portmappers: start-up refusals, MNT and a libnfs mount, status
 * JSON, export add/rm (directory created, exports file rewritten), handles that survive a
 * restart, fencing of a gateway by a newer one; and on 127.0.0.49, where port 111 is taken by
 * a "host rpcbind", registration there (and removal at stop).
 *
 * The loop runs on its own thread; the test thread drives gateways with loop_call_wait.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include "blockd/config.h"
#include "nfsgw/gateway.h"
#include "nfsgw/nfs3.h"
#include "nfsgw/portmap.h"
#include "nfsgw/rpc.h"
#include "replica/loop.h"
#include "tests/unit/cluster_env.h"
#include "tests/unit/mount_client.h"

#define HOST_A "127.0.0.47"
#define HOST_B "127.0.0.48"
#define HOST_C "127.0.0.49" /* a "host rpcbind" (our portmapper on a loop of its own) there */

struct env {
	struct cluster c;
	struct loop_thread lt;
};

static struct env *E;

static unsigned base_of(unsigned k, void *arg)
{
	(void)arg;
	return cluster_base(23600, 4, 50, k);
}

static void write_file(const char *path, const char *text)
{
	assert_int_equal(cluster_write_file(path, text), 0);
}

static int group_setup(void **state)
{
	(void)state;
	struct env *e = calloc(1, sizeof(*e));
	if (!e)
		return -1;
	if (cluster_up(&e->c, "test_gateway", base_of, NULL) != 0) {
		free(e);
		return -1;
	}
	if (loop_thread_start(&e->lt) != 0) {
		loop_thread_stop(&e->lt);
		cluster_down(&e->c);
		free(e);
		return -1;
	}
	cluster_add_gateway(&e->c, "gwa", HOST_A, "gwtest-meta");
	cluster_add_gateway(&e->c, "gwb", HOST_B, "gwtest-meta");
	cluster_add_gateway(&e->c, "gwc", HOST_C, "gwtest-meta");
	E = e;
	return 0;
}

static int group_teardown(void **state)
{
	(void)state;
	struct env *e = E;
	if (!e)
		return 0;
	loop_thread_stop(&e->lt);
	cluster_down(&e->c);
	free(e);
	return 0;
}

/* ---- gateways driven from the test thread ---- */

struct gw {
	const char *name;
	struct gateway *g;
	struct loop_waiter *w;
	atomic_bool fenced;
	/* export add/rm */
	const char *line, *path;
	char err[256];
	bool in_call, done;
	int res;
	json_t *status;
};

static void gw_cb(void *arg, int res)
{
	struct gw *x = arg;
	x->done = true;
	x->res = res;
	if (!x->in_call)
		loop_done(x->w, res);
}

static void gw_on_fenced(void *arg)
{
	struct gw *x = arg;
	atomic_store(&x->fenced, true);
}

/* Gateways a failed test left running, stopped by the test teardown. */
static struct gw *live[4];

static void track(struct gw *x, bool on)
{
	for (size_t i = 0; i < 4; i++) {
		if (on && !live[i]) {
			live[i] = x;
			return;
		}
		if (!on && live[i] == x) {
			live[i] = NULL;
			return;
		}
	}
}

static int gw_start(struct gw *x, const char *name)
{
	memset(x, 0, sizeof(*x));
	x->name = name;
	const struct gateway_params p = {
	    .l = E->lt.l, .cluster = &E->c.cfg, .name = name, .on_fenced = gw_on_fenced, .arg = x};
	int r = gw_start_wait(E->lt.l, &p, &x->g);
	if (r == 0)
		track(x, true);
	return r;
}

static int gw_stop(struct gw *x)
{
	int r = gw_stop_wait(E->lt.l, &x->g);
	track(x, false);
	return r;
}

static void change_fn(void *arg, struct loop_waiter *w)
{
	struct gw *x = arg;
	x->w = w;
	x->done = false;
	x->in_call = true;
	int r = x->line ? gateway_export_add(x->g, x->line, x->err, sizeof(x->err), gw_cb, x)
			: gateway_export_rm(x->g, x->path, gw_cb, x);
	x->in_call = false;
	if (x->done)
		loop_done(w, x->res);
	else if (r)
		loop_done(w, r);
}

static int gw_add(struct gw *x, const char *line)
{
	x->line = line;
	x->path = NULL;
	x->err[0] = 0;
	return loop_call_wait(E->lt.l, change_fn, x);
}

static int gw_rm(struct gw *x, const char *path)
{
	x->line = NULL;
	x->path = path;
	return loop_call_wait(E->lt.l, change_fn, x);
}

static void status_fn(void *arg)
{
	struct gw *x = arg;
	x->status = gateway_status(x->g);
}

static json_t *gw_status(struct gw *x)
{
	assert_int_equal(loop_call(E->lt.l, status_fn, x), 0);
	assert_non_null(x->status);
	json_t *s = x->status;
	x->status = NULL;
	return s;
}

/* MNT3 of path at host:20048; returns the mount status, the handle in c. */
static int mnt(struct cli *c, const char *host, const char *path)
{
	cli_open(c, host, 20048);
	int r = cli_mnt3(c, path);
	cli_close(c);
	return r;
}

/* ---- tests ---- */

static void test_start_refused(void **state)
{
	(void)state;
	struct gw x;
	write_file(E->c.exports, "/vm-shared 127.0.0.0/8(rw,no_root_squash)\n");
	/* No such section. */
	assert_int_equal(gw_start(&x, "nope"), -ENOENT);
	/* A bad exports file. */
	write_file(E->c.exports, "/vm-shared 127.0.0.0/8(rw,bogus)\n");
	assert_int_equal(gw_start(&x, "gwa"), -EINVAL);
	/* The MOUNT port taken: refused before the meta volume is touched. */
	write_file(E->c.exports, "/vm-shared 127.0.0.0/8(rw,no_root_squash)\n");
	int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons(20048)};
	inet_pton(AF_INET, HOST_A, &a.sin_addr);
	assert_int_equal(bind(fd, (struct sockaddr *)&a, sizeof(a)), 0);
	assert_int_equal(listen(fd, 1), 0);
	assert_int_equal(gw_start(&x, "gwa"), -EADDRINUSE);
	close(fd);
}

static void test_serve(void **state)
{
	(void)state;
	struct gw x;
	write_file(E->c.exports, "/vm-shared 127.0.0.0/8(rw,no_root_squash)\n"
				 "/deep/er/dir 127.0.0.0/8(ro)\n/others 10.0.0.0/8(rw)\n");
	assert_int_equal(gw_start(&x, "gwa"), 0);

	json_t *s = gw_status(&x);
	assert_string_equal(json_string_value(json_object_get(s, "gateway")), "gwa");
	assert_string_equal(json_string_value(json_object_get(s, "portmap")), "own");
	assert_int_equal(json_integer_value(json_object_get(s, "nfs_port")), 2049);
	assert_true(json_integer_value(json_object_get(s, "epoch")) > 0);
	assert_int_equal(strlen(json_string_value(json_object_get(s, "fsid"))), 32);
	json_t *exps = json_object_get(s, "exports");
	assert_int_equal(json_array_size(exps), 3);
	assert_string_equal(json_string_value(json_object_get(json_array_get(exps, 0), "url")),
			    "nfs://" HOST_A "/vm-shared");
	json_decref(s);

	struct cli c;
	assert_int_equal(mnt(&c, HOST_A, "/vm-shared"), MNT3_OK);
	assert_int_equal(c.fh_len, NFS3_FH_LEN);
	uint32_t eid;
	uint64_t fsid8, fileid, gen;
	assert_int_equal(nfs3_fh_decode(c.fh, c.fh_len, &eid, &fsid8, &fileid, &gen), 0);
	assert_int_not_equal(fileid, META_ROOT);
	/* Export directories are created, nested ones too. */
	assert_int_equal(mnt(&c, HOST_A, "/deep/er/dir"), MNT3_OK);
	assert_int_equal(mnt(&c, HOST_A, "/deep/er"), MNT3ERR_ACCES);
	assert_int_equal(mnt(&c, HOST_A, "/others"), MNT3ERR_ACCES);
	assert_int_equal(mnt(&c, HOST_A, "/vm-shared/nothing"), MNT3ERR_NOENT);

	/* A whole libnfs mount (MOUNT, NFS FSINFO/GETATTR; ports named in the URL so this does
	 * not depend on the portmapper), then a directory. */
	struct nfs_context *nfs = nfs_init_context();
	assert_non_null(nfs);
	struct nfs_url *url =
	    nfs_parse_url_dir(nfs, "nfs://" HOST_A "/vm-shared?nfsport=2049&mountport=20048");
	assert_non_null(url);
	int r = nfs_mount(nfs, url->server, url->path);
	nfs_destroy_url(url);
	if (r)
		fail_msg("nfs_mount: %s", nfs_get_error(nfs));
	r = nfs_mkdir(nfs, "/sub");
	if (r && r != -EEXIST)
		fail_msg("nfs_mkdir: %s", nfs_get_error(nfs));
	struct nfs_stat_64 st;
	assert_int_equal(nfs_stat64(nfs, "/sub", &st), 0);
	nfs_destroy_context(nfs);
	assert_int_equal(mnt(&c, HOST_A, "/vm-shared/sub"), MNT3_OK);

	s = gw_status(&x);
	json_t *clients = json_object_get(s, "clients");
	assert_true(json_array_size(clients) >= 1);
	json_decref(s);

	/* Export add: the directory appears, the file is rewritten; rm refuses MNT again. */
	assert_int_equal(gw_add(&x, "/added 127.0.0.1(rw)"), 0);
	assert_int_equal(mnt(&c, HOST_A, "/added"), MNT3_OK);
	char text[4096] = "";
	FILE *f = fopen(E->c.exports, "r");
	assert_non_null(f);
	size_t n = fread(text, 1, sizeof(text) - 1, f);
	text[n] = 0;
	fclose(f);
	assert_non_null(strstr(text, "/added 127.0.0.1(rw,"));
	assert_non_null(strstr(text, "/vm-shared 127.0.0.0/8(rw,no_root_squash"));
	assert_int_equal(gw_add(&x, "/bad *(nope)"), -EINVAL);
	assert_non_null(strstr(x.err, "unknown option 'nope'"));
	assert_int_equal(gw_add(&x, "/two *\n/three *\n"), -EINVAL);
	assert_int_equal(gw_rm(&x, "/added/"), 0);
	assert_int_equal(mnt(&c, HOST_A, "/added"), MNT3ERR_ACCES);
	assert_int_equal(gw_rm(&x, "/added"), -ENOENT);

	assert_int_equal(gw_stop(&x), 0);
	/* The listeners are gone. */
	int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons(20048)};
	inet_pton(AF_INET, HOST_A, &a.sin_addr);
	assert_int_not_equal(connect(fd, (struct sockaddr *)&a, sizeof(a)), 0);
	close(fd);
}

static void test_restart_keeps_handles(void **state)
{
	(void)state;
	struct gw x;
	write_file(E->c.exports, "/vm-shared 127.0.0.0/8(rw,no_root_squash)\n");
	assert_int_equal(gw_start(&x, "gwa"), 0);
	struct cli c1, c2;
	assert_int_equal(mnt(&c1, HOST_A, "/vm-shared"), MNT3_OK);
	assert_int_equal(gw_stop(&x), 0);
	/* Another gateway (other address) over the same meta volume: same handle. */
	assert_int_equal(gw_start(&x, "gwb"), 0);
	assert_int_equal(mnt(&c2, HOST_B, "/vm-shared"), MNT3_OK);
	assert_int_equal(c1.fh_len, c2.fh_len);
	assert_memory_equal(c1.fh, c2.fh, c1.fh_len);
	assert_int_equal(gw_stop(&x), 0);
}

static void test_replicated_table(void **state)
{
	(void)state;
	struct gw x;
	write_file(E->c.exports, "/one 127.0.0.0/8(rw)\n/two 127.0.0.1(ro)\n");
	assert_int_equal(gw_start(&x, "gwa"), 0);
	assert_int_equal(gw_add(&x, "/three 127.0.0.0/8(rw)"), 0);
	assert_int_equal(gw_stop(&x), 0);
	/* Without an exports file the replicated table (with the API's change) is served. */
	struct config_gateway *gb = &E->c.cfg.gateways[1];
	char saved[sizeof(gb->exports)];
	memcpy(saved, gb->exports, sizeof(saved));
	gb->exports[0] = 0;
	int r = gw_start(&x, "gwb");
	memcpy(gb->exports, saved, sizeof(saved));
	assert_int_equal(r, 0);
	struct cli c;
	assert_int_equal(mnt(&c, HOST_B, "/three"), MNT3_OK);
	assert_int_equal(mnt(&c, HOST_B, "/two"), MNT3_OK);
	assert_int_equal(mnt(&c, HOST_B, "/one"), MNT3_OK);
	json_t *s = gw_status(&x);
	assert_int_equal(json_array_size(json_object_get(s, "exports")), 3);
	json_decref(s);
	assert_int_equal(gw_stop(&x), 0);
}

static void test_fencing(void **state)
{
	(void)state;
	struct gw a, b;
	write_file(E->c.exports, "/vm-shared 127.0.0.0/8(rw,no_root_squash)\n");
	assert_int_equal(gw_start(&a, "gwa"), 0);
	struct cli c;
	assert_int_equal(mnt(&c, HOST_A, "/vm-shared"), MNT3_OK);
	assert_false(atomic_load(&a.fenced));
	/* B opens the meta volume with a newer epoch: A notices within a few checks. */
	assert_int_equal(gw_start(&b, "gwb"), 0);
	uint64_t deadline = loop_now_ms() + 15000;
	while (!atomic_load(&a.fenced) && loop_now_ms() < deadline)
		usleep(20000);
	assert_true(atomic_load(&a.fenced));
	/* A no longer answers; B does. */
	int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons(20048)};
	inet_pton(AF_INET, HOST_A, &sa.sin_addr);
	assert_int_not_equal(connect(fd, (struct sockaddr *)&sa, sizeof(sa)), 0);
	close(fd);
	assert_int_equal(mnt(&c, HOST_B, "/vm-shared"), MNT3_OK);
	assert_int_equal(gw_stop(&a), 0);
	assert_int_equal(gw_stop(&b), 0);
}

static void getport_cb(struct rpc_context *rpc, int status, void *data, void *priv)
{
	(void)rpc;
	struct cli *c = priv;
	if (cli_finish(c, status) && data)
		c->port = *(uint32_t *)data;
}

/* PMAP2 GETPORT at host:111 (0: not registered). */
static uint32_t getport(const char *host, uint32_t prog, uint32_t vers)
{
	struct cli c;
	cli_open(&c, host, 111);
	assert_int_equal(
	    rpc_pmap2_getport_async(c.rpc, (int)prog, (int)vers, PMAP_PROT_TCP, getport_cb, &c), 0);
	cli_wait(&c);
	assert_int_equal(c.status, RPC_STATUS_SUCCESS);
	cli_close(&c);
	return c.port;
}

struct rpcbind {
	struct loop_thread lt;
	struct rpc_server *s;
	struct portmap *pm;
};

static void test_host_rpcbind(void **state)
{
	(void)state;
	/* The gateway's registration client blocks, so the "host rpcbind" runs elsewhere. */
	struct rpcbind rb = {0};
	assert_int_equal(loop_new(&rb.lt.l), 0);
	assert_int_equal(rpc_server_new(rb.lt.l, &rb.s), 0);
	assert_int_equal(portmap_new(rb.s, 111, &rb.pm), 0);
	assert_int_equal(rpc_server_listen(rb.s, HOST_C, 111, NULL), 0);
	rb.lt.running = pthread_create(&rb.lt.t, NULL, loop_thread_main, rb.lt.l) == 0;
	assert_true(rb.lt.running);

	write_file(E->c.exports, "/vm-shared 127.0.0.0/8(rw,no_root_squash)\n");
	struct gw x;
	assert_int_equal(gw_start(&x, "gwc"), 0);
	json_t *s = gw_status(&x);
	assert_string_equal(json_string_value(json_object_get(s, "portmap")), "host");
	assert_string_equal(json_string_value(json_object_get(
				json_array_get(json_object_get(s, "exports"), 0), "url")),
			    "nfs://" HOST_C "/vm-shared");
	json_decref(s);
	assert_int_equal(getport(HOST_C, 100005, 3), 20048);
	assert_int_equal(getport(HOST_C, 100005, 1), 20048);
	assert_int_equal(getport(HOST_C, 100003, 3), 2049);
	/* A libnfs mount that asks the portmapper, as QEMU does. */
	struct nfs_context *nfs = nfs_init_context();
	assert_non_null(nfs);
	if (nfs_mount(nfs, HOST_C, "/vm-shared"))
		fail_msg("nfs_mount: %s", nfs_get_error(nfs));
	struct nfs_stat_64 st;
	assert_int_equal(nfs_stat64(nfs, "/", &st), 0);
	nfs_destroy_context(nfs);
	/* Stopping takes the registrations back. */
	assert_int_equal(gw_stop(&x), 0);
	assert_int_equal(getport(HOST_C, 100005, 3), 0);
	assert_int_equal(getport(HOST_C, 100003, 3), 0);

	loop_post(rb.lt.l, loop_thread_stop_fn, rb.lt.l);
	pthread_join(rb.lt.t, NULL);
	rpc_server_free(rb.s);
	portmap_free(rb.pm);
	loop_free(rb.lt.l);
}

/* Runs $BUILD/nfsgw with args (BLOCKD_CONF=conf when conf is set); returns its pid. Everything
 * the child needs is built before fork: this process has other threads. */
extern char **environ;

static pid_t spawn_nfsgw(const char *conf, const char *gw, const char *pidfile)
{
	char bin[1100], log[160], confenv[200];
	snprintf(bin, sizeof(bin), "%s/nfsgw", E->c.build);
	snprintf(log, sizeof(log), "%s/nfsgw-test.log", E->c.dir);
	snprintf(confenv, sizeof(confenv), "BLOCKD_CONF=%s", conf ? conf : "");
	size_t n = 0;
	while (environ[n])
		n++;
	char **envp = calloc(n + 2, sizeof(*envp));
	assert_non_null(envp);
	size_t k = 0;
	for (size_t i = 0; i < n; i++)
		if (strncmp(environ[i], "BLOCKD_CONF=", 12))
			envp[k++] = environ[i];
	if (conf)
		envp[k++] = confenv;
	char *argv[6] = {bin};
	int a = 1;
	if (gw) {
		argv[a++] = "--gateway";
		argv[a++] = (char *)gw;
	}
	if (pidfile) {
		argv[a++] = "--pidfile";
		argv[a++] = (char *)pidfile;
	}
	int fd = open(log, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
	assert_true(fd >= 0);
	pid_t pid = fork();
	assert_true(pid >= 0);
	if (pid == 0) {
		dup2(fd, 2);
		execve(bin, argv, envp);
		_exit(127);
	}
	close(fd);
	free(envp);
	return pid;
}

static int wait_exit(pid_t pid)
{
	int st = 0;
	uint64_t deadline = loop_now_ms() + 20000;
	for (;;) {
		pid_t r = waitpid(pid, &st, WNOHANG);
		if (r == pid)
			break;
		if (loop_now_ms() > deadline) {
			kill(pid, SIGKILL);
			waitpid(pid, &st, 0);
			fail_msg("nfsgw %d did not exit", (int)pid);
		}
		usleep(10000);
	}
	assert_true(WIFEXITED(st));
	return WEXITSTATUS(st);
}

static void test_process(void **state)
{
	(void)state;
	char conf[160], pidfile[160];
	snprintf(conf, sizeof(conf), "%s/with-gateways.conf", E->c.dir);
	snprintf(pidfile, sizeof(pidfile), "%s/gwa.pid", E->c.dir);
	assert_int_equal(config_save(conf, &E->c.cfg), 0);
	write_file(E->c.exports, "/vm-shared 127.0.0.0/8(rw,no_root_squash)\n");
	/* Usage: 2; no such gateway: 1. */
	assert_int_equal(wait_exit(spawn_nfsgw(NULL, "gwa", NULL)), 2);
	assert_int_equal(wait_exit(spawn_nfsgw(conf, NULL, NULL)), 2);
	assert_int_equal(wait_exit(spawn_nfsgw(conf, "nope", NULL)), 1);
	/* Serves once the pidfile exists; SIGTERM: exit 0, pidfile gone. */
	unlink(pidfile);
	pid_t pid = spawn_nfsgw(conf, "gwa", pidfile);
	uint64_t deadline = loop_now_ms() + 20000;
	while (access(pidfile, F_OK) != 0) {
		if (loop_now_ms() > deadline || waitpid(pid, NULL, WNOHANG) == pid) {
			kill(pid, SIGKILL);
			fail_msg("nfsgw did not write its pidfile");
		}
		usleep(10000);
	}
	struct cli c;
	assert_int_equal(mnt(&c, HOST_A, "/vm-shared"), MNT3_OK);
	/* A second one on the same address is refused without fencing the first. */
	assert_int_equal(wait_exit(spawn_nfsgw(conf, "gwa", NULL)), 1);
	assert_int_equal(mnt(&c, HOST_A, "/vm-shared"), MNT3_OK);
	assert_int_equal(kill(pid, SIGTERM), 0);
	assert_int_equal(wait_exit(pid), 0);
	assert_int_not_equal(access(pidfile, F_OK), 0);
}

static int test_teardown(void **state)
{
	(void)state;
	for (size_t i = 0; i < 4; i++)
		if (live[i])
			gw_stop(live[i]);
	return 0;
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test_teardown(test_start_refused, test_teardown),
	    cmocka_unit_test_teardown(test_serve, test_teardown),
	    cmocka_unit_test_teardown(test_restart_keeps_handles, test_teardown),
	    cmocka_unit_test_teardown(test_replicated_table, test_teardown),
	    cmocka_unit_test_teardown(test_fencing, test_teardown),
	    cmocka_unit_test_teardown(test_host_rpcbind, test_teardown),
	    cmocka_unit_test_teardown(test_process, test_teardown),
	};
	return cmocka_run_group_tests(tests, group_setup, group_teardown);
}

/*
 * test_config: the cluster file parser (config_load) and writer (config_save) on real files
 * in a temporary directory.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "blockd/config.h"

struct fixture {
	char dir[64];
	char path[128];
};

static int setup(void **state)
{
	struct fixture *f = calloc(1, sizeof(*f));
	assert_non_null(f);
	strcpy(f->dir, "/tmp/test_config.XXXXXX");
	assert_non_null(mkdtemp(f->dir));
	snprintf(f->path, sizeof(f->path), "%s/cluster.conf", f->dir);
	*state = f;
	return 0;
}

static int teardown(void **state)
{
	struct fixture *f = *state;
	char cmd[128];
	snprintf(cmd, sizeof(cmd), "rm -rf %s", f->dir);
	assert_int_equal(system(cmd), 0);
	free(f);
	return 0;
}

static void write_file(const char *path, const char *text)
{
	FILE *fp = fopen(path, "w");
	assert_non_null(fp);
	assert_int_equal(fputs(text, fp) >= 0, 1);
	assert_int_equal(fclose(fp), 0);
}

static const char valid[] = "; a comment\n"
			    "[cluster]\n"
			    "dir = /tmp/cl\n"
			    "replicas = 2           ; inline comment\n"
			    "io_timeout_ms = 750\n"
			    "\n"
			    "[node.node1]\n"
			    "host = 127.0.0.1\n"
			    "http_port = 7411\n"
			    "replica_port = 7412\n"
			    "nbd_port = 7413\n"
			    "data = /tmp/cl/node1\n"
			    "\n"
			    "[node.node-2]\n"
			    "host = 127.0.0.1\n"
			    "http_port = 7421\n"
			    "replica_port = 7422\n"
			    "nbd_port = 7423\n"
			    "data = /tmp/cl/node2\n";

static void test_valid(void **state)
{
	struct fixture *f = *state;
	struct config c;
	char err[256] = "";
	write_file(f->path, valid);
	assert_int_equal(config_load(f->path, &c, err, sizeof(err)), 0);
	assert_string_equal(err, "");
	assert_string_equal(c.dir, "/tmp/cl");
	assert_int_equal(c.replicas, 2);
	assert_int_equal(c.io_timeout_ms, 750);
	assert_int_equal(c.nnodes, 2);
	const struct config_node *n = config_node(&c, "node-2");
	assert_non_null(n);
	assert_string_equal(n->host, "127.0.0.1");
	assert_int_equal(n->http_port, 7421);
	assert_int_equal(n->replica_port, 7422);
	assert_int_equal(n->nbd_port, 7423);
	assert_string_equal(n->data, "/tmp/cl/node2");
	assert_ptr_equal(config_node(&c, "node1"), &c.nodes[0]);
	assert_null(config_node(&c, "node3"));
}

static void test_defaults(void **state)
{
	struct fixture *f = *state;
	struct config c;
	char err[256];
	write_file(f->path, "[cluster]\ndir=/x\n[node.a]\nhost=h\nhttp_port=1\n"
			    "replica_port=2\nnbd_port=3\ndata=/x/a\n");
	assert_int_equal(config_load(f->path, &c, err, sizeof(err)), 0);
	assert_int_equal(c.replicas, 3);
	assert_int_equal(c.io_timeout_ms, 1000);
}

static void expect_error(const char *path, const char *text, const char *want)
{
	struct config c;
	char err[256] = "";
	write_file(path, text);
	int r = config_load(path, &c, err, sizeof(err));
	assert_true(r < 0);
	if (!strstr(err, want))
		fail_msg("error '%s' does not contain '%s'", err, want);
}

static void test_unknown_key(void **state)
{
	struct fixture *f = *state;
	expect_error(f->path, "[cluster]\ndir = /x\nreplica = 3\n",
		     "line 3: unknown key 'replica'");
	char text[sizeof(valid) + 32];
	snprintf(text, sizeof(text), "%snbd_prot = 9\n", valid);
	expect_error(f->path, text, "line 20: unknown key 'nbd_prot' in [node.node-2]");
	expect_error(f->path, "[cluster]\ndir=/x\n[nodes.a]\nhost=h\n", "line 4: unknown section");
	expect_error(f->path, "dir = /x\n", "line 1: key 'dir' outside any section");
	expect_error(f->path, "[cluster]\ndir=/x\ndir=/y\n", "line 3: duplicate key dir");
	expect_error(f->path, "[cluster]\ndir=/x\nthis is not a key\n", "line 3: syntax error");
}

static void test_bad_port(void **state)
{
	struct fixture *f = *state;
	const char *bad[] = {"0", "65536", "-1", "12x", "", "99999999999999999999"};
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		char text[256];
		snprintf(text, sizeof(text), "[cluster]\ndir=/x\n[node.a]\nhost=h\nhttp_port=%s\n",
			 bad[i]);
		expect_error(f->path, text, "line 5: http_port");
	}
	expect_error(f->path,
		     "[cluster]\ndir=/x\n[node.a]\nhost=h\nhttp_port=1\nreplica_port=1\n"
		     "nbd_port=3\ndata=/x/a\n",
		     "port 1 on h used twice");
	expect_error(f->path, "[cluster]\ndir=/x\nreplicas=0\n", "line 3: replicas");
}

static void test_missing(void **state)
{
	struct fixture *f = *state;
	expect_error(f->path,
		     "[node.a]\nhost=h\nhttp_port=1\nreplica_port=2\nnbd_port=3\ndata=/d\n",
		     "missing section [cluster]");
	expect_error(f->path, "[cluster]\ndir=/x\n", "no [node.NAME] section");
	expect_error(f->path,
		     "[cluster]\ndir=/x\n[node.a]\nhost=h\nhttp_port=1\nnbd_port=3\n"
		     "data=/d\n",
		     "[node.a]: missing key replica_port");
	expect_error(f->path, "[cluster]\ndir=relative\n", "line 2: dir: must be an absolute path");
	char longline[400];
	memset(longline, 'a', sizeof(longline));
	memcpy(longline, "[cluster]\ndir=/", 15);
	strcpy(longline + 300, "\n");
	expect_error(f->path, longline, "line 2: line longer than");
	struct config c;
	char err[256];
	char missing[160];
	snprintf(missing, sizeof(missing), "%s/nope.conf", f->dir);
	assert_int_equal(config_load(missing, &c, err, sizeof(err)), -ENOENT);
}

static void test_round_trip(void **state)
{
	struct fixture *f = *state;
	struct config a, b;
	char err[256];
	write_file(f->path, valid);
	assert_int_equal(config_load(f->path, &a, err, sizeof(err)), 0);
	/* A node added programmatically, as blockctl does, must survive the round trip. */
	struct config_node *n = &a.nodes[a.nnodes++];
	memset(n, 0, sizeof(*n));
	strcpy(n->name, "node3");
	strcpy(n->host, "10.0.0.3");
	n->http_port = 8001;
	n->replica_port = 8002;
	n->nbd_port = 8003;
	strcpy(n->data, "/srv/blockd data/node3");
	a.io_timeout_ms = 1234;
	char out[160];
	snprintf(out, sizeof(out), "%s/saved.conf", f->dir);
	assert_int_equal(config_save(out, &a), 0);
	assert_int_equal(config_load(out, &b, err, sizeof(err)), 0);
	assert_memory_equal(&a, &b, sizeof(a));
	/* Saving over an existing file replaces it and leaves no temporary behind. */
	b.replicas = 1;
	assert_int_equal(config_save(out, &b), 0);
	assert_int_equal(config_load(out, &a, err, sizeof(err)), 0);
	assert_int_equal(a.replicas, 1);
	char cmd[256];
	snprintf(cmd, sizeof(cmd), "test $(ls %s | wc -l) -eq 2", f->dir);
	assert_int_equal(system(cmd), 0);
}

static const char gwbase[] = "[cluster]\ndir=/x\n[node.a]\nhost=127.0.0.1\nhttp_port=1\n"
			     "replica_port=2\nnbd_port=3\ndata=/x/a\n";

static void test_gateway_defaults(void **state)
{
	struct fixture *f = *state;
	struct config c;
	char err[256] = "";
	char text[512];
	snprintf(text, sizeof(text), "%s[gateway.gw1]\n", gwbase);
	write_file(f->path, text);
	/* A section with no keys is not seen by inih: it must be named by a key. */
	assert_int_equal(config_load(f->path, &c, err, sizeof(err)), 0);
	assert_null(config_gateway(&c, "gw1"));
	snprintf(text, sizeof(text), "%s[gateway.gw1]\nreplicas = 0\n", gwbase);
	write_file(f->path, text);
	assert_int_equal(config_load(f->path, &c, err, sizeof(err)), 0);
	assert_int_equal(c.ngateways, 1);
	const struct config_gateway *g = config_gateway(&c, "gw1");
	assert_non_null(g);
	assert_string_equal(g->name, "gw1");
	assert_string_equal(g->host, "127.0.0.1");
	assert_int_equal(g->nfs_port, 2049);
	assert_int_equal(g->mount_port, 20048);
	assert_int_equal(g->portmap_port, 111);
	assert_int_equal(g->http_port, 0);
	assert_int_equal(g->replicas, 0);
	assert_string_equal(g->exports, "");
	assert_string_equal(g->meta_volume, "nfsgw-meta");
	assert_null(config_gateway(&c, "gw2"));
}

static void test_gateway_keys(void **state)
{
	struct fixture *f = *state;
	struct config c;
	char err[256] = "";
	char text[1024];
	snprintf(text, sizeof(text),
		 "%s[gateway.gw1]\nhost = 127.0.0.41\nnfs_port = 12049\nmount_port = 12048\n"
		 "portmap_port = 0\nhttp_port = 7400\nexports = /etc/exports.gw\nreplicas = 2\n"
		 "meta_volume = meta-1\n[gateway.gw2]\nhost = 127.0.0.42\n",
		 gwbase);
	write_file(f->path, text);
	assert_int_equal(config_load(f->path, &c, err, sizeof(err)), 0);
	assert_int_equal(c.ngateways, 2);
	const struct config_gateway *g = config_gateway(&c, "gw1");
	assert_string_equal(g->host, "127.0.0.41");
	assert_int_equal(g->nfs_port, 12049);
	assert_int_equal(g->mount_port, 12048);
	assert_int_equal(g->portmap_port, 0);
	assert_int_equal(g->http_port, 7400);
	assert_string_equal(g->exports, "/etc/exports.gw");
	assert_int_equal(g->replicas, 2);
	assert_string_equal(g->meta_volume, "meta-1");
	g = config_gateway(&c, "gw2");
	assert_string_equal(g->host, "127.0.0.42");
	assert_int_equal(g->nfs_port, 2049);
}

static void test_gateway_errors(void **state)
{
	struct fixture *f = *state;
	char text[1024];
	/* gwbase is 8 lines; the section header is line 9, its first key line 10. */
	snprintf(text, sizeof(text), "%s[gateway.gw1]\nnfs_prot = 1\n", gwbase);
	expect_error(f->path, text, "line 10: unknown key 'nfs_prot' in [gateway.gw1]");
	snprintf(text, sizeof(text), "%s[gateway.gw1]\nnfs_port = 0\n", gwbase);
	expect_error(f->path, text, "line 10: nfs_port");
	snprintf(text, sizeof(text), "%s[gateway.gw1]\nmount_port = 70000\n", gwbase);
	expect_error(f->path, text, "line 10: mount_port");
	snprintf(text, sizeof(text), "%s[gateway.gw1]\nhttp_port = x\n", gwbase);
	expect_error(f->path, text, "line 10: http_port");
	snprintf(text, sizeof(text), "%s[gateway.gw1]\nexports = rel\n", gwbase);
	expect_error(f->path, text, "line 10: exports: must be an absolute path");
	snprintf(text, sizeof(text), "%s[gateway.gw1]\nreplicas = 9\n", gwbase);
	expect_error(f->path, text, "line 10: replicas");
	snprintf(text, sizeof(text), "%s[gateway.gw1]\nmeta_volume = a/b\n", gwbase);
	expect_error(f->path, text, "line 10: meta_volume");
	snprintf(text, sizeof(text), "%s[gateway.gw1]\nhost = h\nhost = i\n", gwbase);
	expect_error(f->path, text, "line 11: duplicate key host");
	snprintf(text, sizeof(text), "%s[gateway.g/1]\nhost = h\n", gwbase);
	expect_error(f->path, text, "line 10: bad gateway name");
	/* Ports collide within a gateway, between gateways and with a node on the same host. */
	snprintf(text, sizeof(text), "%s[gateway.gw1]\nmount_port = 2049\n", gwbase);
	expect_error(f->path, text, "port 2049 on 127.0.0.1 used twice (gw1, gw1)");
	snprintf(text, sizeof(text), "%s[gateway.gw1]\nhttp_port=9\n[gateway.gw2]\nhttp_port=9\n",
		 gwbase);
	expect_error(f->path, text, "port 2049 on 127.0.0.1 used twice (gw1, gw2)");
	snprintf(text, sizeof(text), "%s[gateway.gw1]\nhttp_port = 3\n", gwbase);
	expect_error(f->path, text, "port 3 on 127.0.0.1 used twice (gw1, a)");
	/* Another host: no collision; 0 ports never collide. */
	snprintf(text, sizeof(text),
		 "%s[gateway.gw1]\nhttp_port=0\nportmap_port=0\n[gateway.gw2]\nhost=127.0.0.2\n"
		 "http_port=0\nportmap_port=0\n",
		 gwbase);
	write_file(f->path, text);
	struct config c;
	char err[256] = "";
	assert_int_equal(config_load(f->path, &c, err, sizeof(err)), 0);
	char many[2048];
	size_t off = (size_t)snprintf(many, sizeof(many), "%s", gwbase);
	for (int i = 0; i <= CONFIG_MAX_GATEWAYS; i++)
		off += (size_t)snprintf(many + off, sizeof(many) - off,
					"[gateway.g%d]\nhost=10.0.0.%d\n", i, i);
	expect_error(f->path, many, "more than 8 gateways");
}

static void test_gateway_round_trip(void **state)
{
	struct fixture *f = *state;
	struct config a, b;
	char err[256];
	char text[1024];
	snprintf(text, sizeof(text),
		 "%s[gateway.gw1]\nhost = 127.0.0.41\nportmap_port = 0\nexports = /e x/p\n"
		 "[gateway.gw2]\nreplicas = 1\n",
		 gwbase);
	write_file(f->path, text);
	assert_int_equal(config_load(f->path, &a, err, sizeof(err)), 0);
	/* A gateway added programmatically, as blockctl would. */
	struct config_gateway *g = &a.gateways[a.ngateways++];
	memset(g, 0, sizeof(*g));
	strcpy(g->name, "gw3");
	strcpy(g->host, "127.0.0.43");
	g->nfs_port = 2049;
	g->mount_port = 20048;
	g->portmap_port = 111;
	g->http_port = 7400;
	strcpy(g->meta_volume, "m3");
	char out[160];
	snprintf(out, sizeof(out), "%s/saved.conf", f->dir);
	assert_int_equal(config_save(out, &a), 0);
	assert_int_equal(config_load(out, &b, err, sizeof(err)), 0);
	assert_int_equal(b.ngateways, 3);
	assert_string_equal(config_gateway(&b, "gw1")->exports, "/e x/p");
	assert_int_equal(config_gateway(&b, "gw3")->http_port, 7400);
	assert_memory_equal(&a, &b, sizeof(a));
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test_setup_teardown(test_valid, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_defaults, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_unknown_key, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_bad_port, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_missing, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_round_trip, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_gateway_defaults, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_gateway_keys, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_gateway_errors, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_gateway_round_trip, setup, teardown),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}

/*
 * test_api: two real nodes (node_start + api_start, as blockd's main does) in this process,
 * on 127.0.0.1 with data in a temporary directory, driven over HTTP and NBD: routes and
 * their JSON, error codes, attach/detach, refusal when attached elsewhere, temporary
 * engines, and re-attach of attachments.json after a restart.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <arpa/inet.h>
#include <errno.h>
#include <jansson.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "blockd/api.h"
#include "blockd/config.h"
#include "blockd/node.h"
#include "blockd/peer.h"
#include "blockd/http_client.h"
#include "replica/engine.h"
#include "replica/loop.h"
#include "tools/lib/nbd_client.h"

#define VOLSIZE (16u << 20)

struct cluster {
	char dir[64];
	struct config cfg;
	struct node *node[2];
	struct api *api[2];
};

static uint16_t free_port(void)
{
	int fd = socket(AF_INET, SOCK_STREAM, 0);
	struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
	socklen_t len = sizeof(a);
	assert_int_equal(bind(fd, (struct sockaddr *)&a, sizeof(a)), 0);
	assert_int_equal(getsockname(fd, (struct sockaddr *)&a, &len), 0);
	close(fd);
	return ntohs(a.sin_port);
}

static void start_node(struct cluster *c, int i)
{
	char err[256] = "";
	const struct config_node *me = &c->cfg.nodes[i];
	mkdir(me->data, 0755);
	char rdir[CONFIG_PATH_MAX + 16];
	snprintf(rdir, sizeof(rdir), "%s/replicas", me->data);
	mkdir(rdir, 0755);
	int r = node_start(&c->cfg, me->name, &c->node[i], err, sizeof(err));
	if (r)
		fail_msg("node_start %s: %s", me->name, err);
	assert_int_equal(api_start(c->node[i], me->host, me->http_port, &c->api[i]), 0);
	assert_int_equal(node_reattach_start(c->node[i]), 0);
}

static void stop_node(struct cluster *c, int i)
{
	api_stop(c->api[i]);
	node_stop(c->node[i]);
	c->api[i] = NULL;
	c->node[i] = NULL;
}

static int setup(void **state)
{
	struct cluster *c = calloc(1, sizeof(*c));
	assert_non_null(c);
	strcpy(c->dir, "/tmp/test_api.XXXXXX");
	assert_non_null(mkdtemp(c->dir));
	strcpy(c->cfg.dir, c->dir);
	c->cfg.replicas = 2;
	c->cfg.io_timeout_ms = 1000;
	c->cfg.nnodes = 2;
	for (int i = 0; i < 2; i++) {
		struct config_node *n = &c->cfg.nodes[i];
		char name[16];
		snprintf(name, sizeof(name), "node%d", i + 1);
		strcpy(n->name, name);
		strcpy(n->host, "127.0.0.1");
		n->http_port = free_port();
		n->replica_port = free_port();
		n->nbd_port = free_port();
		snprintf(n->data, sizeof(n->data), "%s/%s", c->dir, name);
	}
	for (int i = 0; i < 2; i++)
		start_node(c, i);
	*state = c;
	return 0;
}

static int teardown(void **state)
{
	struct cluster *c = *state;
	for (int i = 0; i < 2; i++)
		if (c->node[i])
			stop_node(c, i);
	char cmd[128];
	snprintf(cmd, sizeof(cmd), "rm -rf %s", c->dir);
	assert_int_equal(system(cmd), 0);
	free(c);
	return 0;
}

/* One request; returns the status, *out the parsed body (checked to be one line). */
static int req(struct cluster *c, int i, const char *method, const char *path, const char *body,
	       json_t **out)
{
	struct http_resp resp;
	const struct config_node *n = &c->cfg.nodes[i];
	int r = http_request(n->host, n->http_port, method, path, body, 30000, &resp);
	if (r)
		fail_msg("%s %s: %s", method, path, strerror(-r));
	assert_true(resp.len > 0 && resp.body[resp.len - 1] == '\n');
	assert_null(memchr(resp.body, '\n', resp.len - 1));
	json_t *j = json_loadb(resp.body, resp.len, JSON_DECODE_ANY, NULL);
	if (!j)
		fail_msg("%s %s: not JSON: %s", method, path, resp.body);
	int status = resp.status;
	if (status >= 400 && !json_is_string(json_object_get(j, "error")))
		fail_msg("%s %s: error without \"error\": %s", method, path, resp.body);
	http_resp_free(&resp);
	if (out)
		*out = j;
	else
		json_decref(j);
	return status;
}

static const char *jstr(json_t *o, const char *k)
{
	return json_string_value(json_object_get(o, k));
}

static json_int_t jint(json_t *o, const char *k)
{
	return json_integer_value(json_object_get(o, k));
}

static void create_volume(struct cluster *c, const char *vol)
{
	char body[256];
	snprintf(body, sizeof(body),
		 "{\"volume\":\"%s\",\"size\":%u,\"members\":[\"node1\",\"node2\"]}", vol, VOLSIZE);
	for (int i = 0; i < 2; i++)
		assert_int_equal(req(c, i, "POST", "/v1/replicas", body, NULL), 201);
}

static json_t *find(json_t *arr, const char *vol)
{
	size_t i;
	json_t *x;
	json_array_foreach(arr, i,
			   x) if (jstr(x, "volume") && !strcmp(jstr(x, "volume"), vol)) return x;
	return NULL;
}

static void test_health_node(void **state)
{
	struct cluster *c = *state;
	json_t *j;
	assert_int_equal(req(c, 1, "GET", "/v1/health", NULL, &j), 200);
	assert_string_equal(jstr(j, "node"), "node2");
	assert_true(json_is_true(json_object_get(j, "ok")));
	json_decref(j);
	assert_int_equal(req(c, 0, "GET", "/v1/node", NULL, &j), 200);
	assert_string_equal(jstr(j, "node"), "node1");
	assert_string_equal(jstr(j, "host"), "127.0.0.1");
	assert_int_equal(jint(j, "http_port"), c->cfg.nodes[0].http_port);
	assert_int_equal(jint(j, "replica_port"), c->cfg.nodes[0].replica_port);
	assert_int_equal(jint(j, "nbd_port"), c->cfg.nodes[0].nbd_port);
	assert_true(json_is_integer(json_object_get(j, "replicas")));
	assert_true(json_is_integer(json_object_get(j, "attached")));
	assert_true(json_is_integer(json_object_get(j, "uptime_s")));
	json_decref(j);
}

static void test_replicas(void **state)
{
	struct cluster *c = *state;
	json_t *j;
	assert_int_equal(req(c, 0, "POST", "/v1/replicas",
			     "{\"volume\":\"r1\",\"size\":1048576,\"members\":[\"node1\"]}", &j),
			 201);
	assert_string_equal(jstr(j, "volume"), "r1");
	assert_int_equal(jint(j, "size"), 1048576);
	json_decref(j);
	/* Exists already, bad name, bad size, unknown member, not a member itself. */
	assert_int_equal(req(c, 0, "POST", "/v1/replicas",
			     "{\"volume\":\"r1\",\"size\":1048576,\"members\":[\"node1\"]}", NULL),
			 409);
	assert_int_equal(req(c, 0, "POST", "/v1/replicas",
			     "{\"volume\":\"a/b\",\"size\":1048576,\"members\":[\"node1\"]}", NULL),
			 400);
	assert_int_equal(req(c, 0, "POST", "/v1/replicas",
			     "{\"volume\":\"r2\",\"size\":-5,\"members\":[\"node1\"]}", NULL),
			 400);
	assert_int_equal(req(c, 0, "POST", "/v1/replicas",
			     "{\"volume\":\"r2\",\"size\":\"1M\",\"members\":[\"node1\"]}", NULL),
			 400);
	assert_int_equal(req(c, 0, "POST", "/v1/replicas",
			     "{\"volume\":\"r2\",\"size\":4096,\"members\":[\"node1\",\"node9\"]}",
			     NULL),
			 400);
	assert_int_equal(req(c, 0, "POST", "/v1/replicas",
			     "{\"volume\":\"r2\",\"size\":4096,\"members\":[\"node2\"]}", NULL),
			 400);
	assert_int_equal(req(c, 0, "GET", "/v1/replicas", NULL, &j), 200);
	json_t *r = find(j, "r1");
	assert_non_null(r);
	assert_int_equal(jint(r, "size"), 1048576);
	assert_true(json_is_true(json_object_get(r, "clean")));
	assert_int_equal(json_array_size(json_object_get(r, "members")), 1);
	assert_null(find(j, "r2"));
	json_decref(j);
	assert_int_equal(req(c, 0, "DELETE", "/v1/replicas/r1", NULL, NULL), 200);
	assert_int_equal(req(c, 0, "DELETE", "/v1/replicas/r1", NULL, NULL), 404);
	assert_int_equal(req(c, 0, "GET", "/v1/replicas", NULL, &j), 200);
	assert_null(find(j, "r1"));
	json_decref(j);
}

static void test_bad_requests(void **state)
{
	struct cluster *c = *state;
	json_t *j;
	assert_int_equal(req(c, 0, "GET", "/v1/nosuch", NULL, NULL), 404);
	assert_int_equal(req(c, 0, "GET", "/v2/health", NULL, NULL), 404);
	assert_int_equal(req(c, 0, "PUT", "/v1/replicas", "{}", NULL), 404);
	assert_int_equal(req(c, 0, "POST", "/v1/replicas", "{not json", &j), 400);
	assert_non_null(strstr(jstr(j, "error"), "JSON"));
	json_decref(j);
	assert_int_equal(req(c, 0, "POST", "/v1/replicas", "[1,2]", NULL), 400);
	assert_int_equal(req(c, 0, "GET", "/v1/volumes/bad%21name", NULL, NULL), 400);
	assert_int_equal(req(c, 0, "POST", "/v1/volumes/nosuch/detach", NULL, NULL), 404);
	assert_int_equal(req(c, 0, "GET", "/v1/volumes/nosuch", NULL, NULL), 404);
	/* A body over 1 MiB is refused, and the server goes on serving. */
	size_t big = (1u << 20) + 100;
	char *b = malloc(big + 1);
	assert_non_null(b);
	memset(b, ' ', big);
	b[big] = 0;
	b[0] = '{';
	b[big - 1] = '}';
	assert_int_equal(req(c, 0, "POST", "/v1/replicas", b, &j), 400);
	assert_non_null(strstr(jstr(j, "error"), "1 MiB"));
	json_decref(j);
	free(b);
	assert_int_equal(req(c, 0, "GET", "/v1/health", NULL, NULL), 200);
}

static void nbd_io(const char *url, uint8_t pattern, bool write)
{
	struct nbd_client *n;
	assert_int_equal(nbd_client_new(&n), 0);
	nbd_client_set_timeout(n, 10000);
	int r = nbd_client_connect_url(n, url);
	if (r)
		fail_msg("nbd connect %s: %s", url, nbd_client_error(n));
	assert_int_equal(nbd_client_size(n), VOLSIZE);
	uint8_t *buf = malloc(1 << 20);
	assert_non_null(buf);
	if (write) {
		memset(buf, pattern, 1 << 20);
		assert_int_equal(nbd_client_pwrite(n, buf, 1 << 20, 4096, 0), 0);
		assert_int_equal(nbd_client_flush(n), 0);
	}
	memset(buf, 0xEE, 1 << 20);
	assert_int_equal(nbd_client_pread(n, buf, 1 << 20, 4096), 0);
	for (int i = 0; i < 1 << 20; i++)
		if (buf[i] != pattern)
			fail_msg("byte %d is %u, want %u", i, buf[i], pattern);
	free(buf);
	nbd_client_free(n);
}

static void read_attachments_file(struct cluster *c, int i, char *out, size_t len)
{
	char path[CONFIG_PATH_MAX + 32];
	snprintf(path, sizeof(path), "%s/attachments.json", c->cfg.nodes[i].data);
	FILE *f = fopen(path, "r");
	out[0] = 0;
	if (!f)
		return;
	size_t n = fread(out, 1, len - 1, f);
	out[n] = 0;
	fclose(f);
}

static void test_attach_detach(void **state)
{
	struct cluster *c = *state;
	json_t *j;
	create_volume(c, "va");
	assert_int_equal(req(c, 0, "POST", "/v1/volumes/va/attach", NULL, &j), 200);
	char url[128];
	snprintf(url, sizeof(url), "nbd://127.0.0.1:%u/va", c->cfg.nodes[0].nbd_port);
	assert_string_equal(jstr(j, "nbd"), url);
	assert_string_equal(jstr(j, "volume"), "va");
	json_int_t epoch = jint(j, "epoch");
	assert_true(epoch > 0);
	json_decref(j);
	/* Attaching again here is harmless; on the other node it is a conflict naming us. */
	assert_int_equal(req(c, 0, "POST", "/v1/volumes/va/attach", NULL, &j), 200);
	assert_int_equal(jint(j, "epoch"), epoch);
	json_decref(j);
	assert_int_equal(req(c, 1, "POST", "/v1/volumes/va/attach", NULL, &j), 409);
	assert_string_equal(jstr(j, "node"), "node1");
	json_decref(j);
	assert_int_equal(req(c, 1, "POST", "/v1/volumes/va/snapshots", "{\"name\":\"s\"}", &j),
			 409);
	assert_string_equal(jstr(j, "node"), "node1");
	json_decref(j);

	nbd_io(url, 0x5A, true);

	assert_int_equal(req(c, 1, "GET", "/v1/volumes/va", NULL, &j), 200);
	assert_string_equal(jstr(j, "attached"), "node1");
	assert_string_equal(jstr(j, "nbd"), url);
	assert_int_equal(jint(j, "size"), VOLSIZE);
	assert_int_equal(json_array_size(json_object_get(j, "members")), 2);
	json_decref(j);
	assert_int_equal(req(c, 0, "GET", "/v1/volumes/va", NULL, &j), 200);
	assert_string_equal(jstr(j, "attached"), "node1");
	assert_int_equal(jint(j, "epoch"), epoch);
	json_decref(j);
	assert_int_equal(req(c, 0, "GET", "/v1/attachments", NULL, &j), 200);
	json_t *a = find(j, "va");
	assert_non_null(a);
	assert_string_equal(jstr(a, "nbd"), url);
	assert_int_equal(jint(a, "epoch"), epoch);
	assert_true(json_is_integer(json_object_get(a, "clients")));
	json_decref(j);
	assert_int_equal(req(c, 0, "GET", "/v1/volumes/va/replicas", NULL, &j), 200);
	assert_true(json_array_size(j) >= 1);
	assert_non_null(jstr(json_array_get(j, 0), "state"));
	json_decref(j);
	/* The replica under an attached engine cannot be deleted here. */
	assert_int_equal(req(c, 0, "DELETE", "/v1/replicas/va", NULL, NULL), 409);

	char file[256];
	read_attachments_file(c, 0, file, sizeof(file));
	assert_non_null(strstr(file, "\"va\""));
	/* Detach with an NBD client connected: it is cut off, the detach completes. */
	struct nbd_client *held;
	assert_int_equal(nbd_client_new(&held), 0);
	nbd_client_set_timeout(held, 10000);
	assert_int_equal(nbd_client_connect_url(held, url), 0);
	assert_int_equal(req(c, 0, "GET", "/v1/attachments", NULL, &j), 200);
	assert_int_equal(jint(find(j, "va"), "clients"), 1);
	json_decref(j);
	assert_int_equal(req(c, 0, "POST", "/v1/volumes/va/detach", NULL, NULL), 200);
	char small[512];
	assert_true(nbd_client_pread(held, small, sizeof(small), 0) != 0);
	nbd_client_free(held);
	assert_int_equal(req(c, 0, "POST", "/v1/volumes/va/detach", NULL, NULL), 404);
	read_attachments_file(c, 0, file, sizeof(file));
	assert_null(strstr(file, "\"va\""));
	assert_int_equal(req(c, 0, "GET", "/v1/attachments", NULL, &j), 200);
	assert_null(find(j, "va"));
	json_decref(j);

	/* Now node2 may take it, and sees the data. */
	assert_int_equal(req(c, 1, "POST", "/v1/volumes/va/attach", NULL, &j), 200);
	assert_true(jint(j, "epoch") > epoch);
	snprintf(url, sizeof(url), "%s", jstr(j, "nbd"));
	json_decref(j);
	nbd_io(url, 0x5A, false);
	assert_int_equal(req(c, 1, "POST", "/v1/volumes/va/detach", NULL, NULL), 200);
}

static void test_temporary_engine(void **state)
{
	struct cluster *c = *state;
	json_t *j;
	create_volume(c, "vt");
	assert_int_equal(req(c, 1, "POST", "/v1/volumes/vt/snapshots", "{\"name\":\"s1\"}", &j),
			 200);
	json_decref(j);
	assert_int_equal(req(c, 0, "GET", "/v1/volumes/vt/snapshots", NULL, &j), 200);
	assert_true(json_is_array(j));
	json_decref(j);
	assert_int_equal(req(c, 0, "POST", "/v1/volumes/vt/snapshots", "{\"name\":\"a/b\"}", NULL),
			 400);
	assert_int_equal(req(c, 0, "POST", "/v1/volumes/vt/resize", "{}", NULL), 400);
	/* Temporary engines are gone after the call: nothing attached, replicas clean. */
	for (int i = 0; i < 2; i++) {
		assert_int_equal(req(c, i, "GET", "/v1/attachments", NULL, &j), 200);
		assert_int_equal(json_array_size(j), 0);
		json_decref(j);
		assert_int_equal(req(c, i, "GET", "/v1/replicas", NULL, &j), 200);
		json_t *r = find(j, "vt");
		assert_non_null(r);
		assert_true(json_is_true(json_object_get(r, "clean")));
		json_decref(j);
	}
	assert_int_equal(req(c, 1, "GET", "/v1/volumes/vt", NULL, &j), 200);
	assert_true(json_is_null(json_object_get(j, "attached")));
	json_decref(j);
}

static void test_reattach_after_restart(void **state)
{
	struct cluster *c = *state;
	json_t *j;
	create_volume(c, "vr");
	assert_int_equal(req(c, 0, "POST", "/v1/volumes/vr/attach", NULL, &j), 200);
	char url[128];
	snprintf(url, sizeof(url), "%s", jstr(j, "nbd"));
	json_decref(j);
	nbd_io(url, 0x33, true);
	stop_node(c, 0);
	start_node(c, 0);
	bool found = false;
	for (int i = 0; i < 100 && !found; i++) {
		assert_int_equal(req(c, 0, "GET", "/v1/attachments", NULL, &j), 200);
		found = find(j, "vr") != NULL;
		json_decref(j);
		if (!found)
			usleep(100 * 1000);
	}
	assert_true(found);
	nbd_io(url, 0x33, false);
	assert_int_equal(req(c, 0, "POST", "/v1/volumes/vr/detach", NULL, NULL), 200);
}

static bool attached_on(struct cluster *c, int i, const char *vol)
{
	json_t *j;
	assert_int_equal(req(c, i, "GET", "/v1/attachments", NULL, &j), 200);
	bool found = find(j, vol) != NULL;
	json_decref(j);
	return found;
}

static void test_force_attach(void **state)
{
	struct cluster *c = *state;
	json_t *j;
	create_volume(c, "vf");
	assert_int_equal(req(c, 0, "POST", "/v1/volumes/vf/attach", NULL, NULL), 200);
	assert_int_equal(req(c, 1, "POST", "/v1/volumes/vf/attach", NULL, NULL), 409);
	/* A live owner is asked to detach. */
	assert_int_equal(req(c, 1, "POST", "/v1/volumes/vf/attach?force=1", NULL, &j), 200);
	char url2[128];
	snprintf(url2, sizeof(url2), "%s", jstr(j, "nbd"));
	json_decref(j);
	assert_false(attached_on(c, 0, "vf"));
	assert_true(attached_on(c, 1, "vf"));
	nbd_io(url2, 0x44, true);

	/* An owner that does not answer is fenced: its engine refuses I/O, and it drops the
	 * volume when it finds out. */
	api_stop(c->api[1]);
	c->api[1] = NULL;
	assert_int_equal(req(c, 0, "POST", "/v1/volumes/vf/attach", "{\"force\":true}", &j), 200);
	char url1[128];
	snprintf(url1, sizeof(url1), "%s", jstr(j, "nbd"));
	json_decref(j);
	nbd_io(url1, 0x44, false);
	struct nbd_client *n;
	assert_int_equal(nbd_client_new(&n), 0);
	nbd_client_set_timeout(n, 10000);
	assert_int_equal(nbd_client_connect_url(n, url2), 0);
	char buf[4096] = {0};
	assert_true(nbd_client_pwrite(n, buf, sizeof(buf), 0, NBD_CLIENT_FUA) != 0);
	nbd_client_free(n);
	assert_int_equal(api_start(c->node[1], "127.0.0.1", c->cfg.nodes[1].http_port, &c->api[1]),
			 0);
	/* Its engine found out by that write: the listing no longer shows it. */
	assert_false(attached_on(c, 1, "vf"));
	assert_int_equal(req(c, 1, "POST", "/v1/volumes/vf/snapshots", "{\"name\":\"x\"}", NULL),
			 409);
	assert_false(attached_on(c, 1, "vf"));
	assert_true(attached_on(c, 0, "vf"));
	assert_int_equal(req(c, 0, "POST", "/v1/volumes/vf/detach", NULL, NULL), 200);
}

static void test_reattach_yields(void **state)
{
	struct cluster *c = *state;
	/* Replica only on node2; node1 serves it remotely. */
	assert_int_equal(req(c, 1, "POST", "/v1/replicas",
			     "{\"volume\":\"vy\",\"size\":16777216,\"members\":[\"node2\"]}", NULL),
			 201);
	assert_int_equal(req(c, 0, "POST", "/v1/volumes/vy/attach", NULL, NULL), 200);
	stop_node(c, 0);
	/* Failover while node1 is down. */
	assert_int_equal(req(c, 1, "POST", "/v1/volumes/vy/attach", NULL, NULL), 200);
	start_node(c, 0);
	char file[256] = "\"vy\"";
	for (int i = 0; i < 100 && strstr(file, "\"vy\""); i++) {
		usleep(50 * 1000);
		read_attachments_file(c, 0, file, sizeof(file));
	}
	assert_null(strstr(file, "\"vy\""));
	assert_false(attached_on(c, 0, "vy"));
	assert_true(attached_on(c, 1, "vy"));
	assert_int_equal(req(c, 1, "POST", "/v1/volumes/vy/detach", NULL, NULL), 200);
}

static void test_peer_timeout(void **state)
{
	(void)state;
	/* A listener that never answers, and a port nobody listens on. */
	int fd = socket(AF_INET, SOCK_STREAM, 0);
	struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
	socklen_t len = sizeof(a);
	assert_int_equal(bind(fd, (struct sockaddr *)&a, sizeof(a)), 0);
	assert_int_equal(listen(fd, 4), 0);
	assert_int_equal(getsockname(fd, (struct sockaddr *)&a, &len), 0);
	struct peer_get p[2] = {
	    {.host = "127.0.0.1", .port = ntohs(a.sin_port), .path = "/v1/attachments"},
	    {.host = "127.0.0.1", .port = free_port(), .path = "/v1/attachments"},
	};
	struct timespec t0, t1;
	clock_gettime(CLOCK_MONOTONIC, &t0);
	peer_get_all(p, 2, 300);
	clock_gettime(CLOCK_MONOTONIC, &t1);
	long ms = (t1.tv_sec - t0.tv_sec) * 1000 + (t1.tv_nsec - t0.tv_nsec) / 1000000;
	assert_true(ms >= 250 && ms < 2000);
	assert_int_equal(p[0].err, -ETIMEDOUT);
	assert_int_equal(p[1].err, -ECONNREFUSED);
	assert_null(p[0].reply);
	close(fd);
}

/* ---- a volume held by an engine outside any blockd (an NFS gateway, say) ---- */

#define EXT_LABEL "nfsgw gwx 127.0.0.99"

struct ext {
	struct cluster *c;
	struct loop *l;
	pthread_t t;
	struct engine *e;
	struct engine_replica_addr addrs[2];
	int res;
};

static void *ext_loop(void *arg)
{
	loop_run(arg);
	return NULL;
}

static void ext_cb(void *arg, int res)
{
	loop_done(arg, res);
}

static void ext_open(void *arg, struct loop_waiter *w)
{
	struct ext *x = arg;
	struct engine_params p = {.volume = "vh",
				  .local_node = "nfsgw-gwx",
				  .naddrs = 2,
				  .addrs = x->addrs,
				  .io_timeout_ms = 1000,
				  .label = EXT_LABEL};
	int r = engine_open(x->l, &p, &x->e, ext_cb, w);
	if (r)
		loop_done(w, r);
}

static void ext_close(void *arg, struct loop_waiter *w)
{
	struct ext *x = arg;
	int r = engine_close(x->e, ext_cb, w);
	if (r)
		loop_done(w, r);
}

static void ext_state(void *arg)
{
	struct ext *x = arg;
	x->res = engine_fenced(x->e) ? -ESTALE : (int)engine_epoch(x->e);
}

/* The epoch node i's replica of vol stores, and its holder's label into holder ("" if none). */
static json_int_t replica_epoch(struct cluster *c, int i, const char *vol, char *holder, size_t cap)
{
	json_t *j;
	assert_int_equal(req(c, i, "GET", "/v1/replicas", NULL, &j), 200);
	json_t *r = find(j, vol);
	assert_non_null(r);
	json_int_t ep = jint(r, "epoch");
	snprintf(holder, cap, "%s", jstr(r, "holder") ? jstr(r, "holder") : "");
	json_decref(j);
	return ep;
}

static void test_held_volume(void **state)
{
	struct cluster *c = *state;
	struct ext x = {.c = c};
	char holder[64];
	json_t *j;
	create_volume(c, "vh");
	for (int i = 0; i < 2; i++) {
		strcpy(x.addrs[i].node, c->cfg.nodes[i].name);
		strcpy(x.addrs[i].host, c->cfg.nodes[i].host);
		x.addrs[i].port = c->cfg.nodes[i].replica_port;
	}
	assert_int_equal(loop_new(&x.l), 0);
	assert_int_equal(pthread_create(&x.t, NULL, ext_loop, x.l), 0);
	assert_int_equal(loop_call_wait(x.l, ext_open, &x), 0);
	assert_int_equal(loop_call(x.l, ext_state, &x), 0);
	int ext_epoch = x.res;
	assert_true(ext_epoch > 0);
	for (int i = 0; i < 2; i++) {
		assert_int_equal(replica_epoch(c, i, "vh", holder, sizeof(holder)), ext_epoch);
		assert_string_equal(holder, EXT_LABEL);
	}

	/* Read-only routes answer from the replicas without opening (bumping) anything. */
	assert_int_equal(req(c, 0, "GET", "/v1/volumes/vh/replicas", NULL, &j), 200);
	assert_int_equal(json_array_size(j), 2);
	for (size_t k = 0; k < 2; k++) {
		json_t *r = json_array_get(j, k);
		assert_string_equal(jstr(r, "state"), "healthy");
		assert_string_equal(jstr(r, "holder"), EXT_LABEL);
		assert_int_equal(jint(r, "epoch"), ext_epoch);
	}
	json_decref(j);
	assert_int_equal(req(c, 1, "GET", "/v1/volumes/vh/snapshots", NULL, &j), 200);
	assert_true(json_is_array(j));
	json_decref(j);
	assert_int_equal(req(c, 1, "GET", "/v1/volumes/vh", NULL, &j), 200);
	assert_string_equal(jstr(j, "holder"), EXT_LABEL);
	assert_int_equal(jint(j, "epoch"), ext_epoch);
	json_decref(j);

	/* Routes that need an engine are refused, naming the holder. */
	assert_int_equal(req(c, 0, "POST", "/v1/volumes/vh/snapshots", "{\"name\":\"s1\"}", &j),
			 409);
	assert_string_equal(jstr(j, "error"), "volume vh is in use by " EXT_LABEL);
	assert_string_equal(jstr(j, "holder"), EXT_LABEL);
	json_decref(j);
	assert_int_equal(req(c, 1, "POST", "/v1/volumes/vh/verify", NULL, &j), 409);
	assert_string_equal(jstr(j, "holder"), EXT_LABEL);
	json_decref(j);
	assert_int_equal(req(c, 0, "POST", "/v1/volumes/vh/resize", "{\"size\":33554432}", NULL),
			 409);
	assert_int_equal(req(c, 0, "POST", "/v1/volumes/vh/attach", NULL, &j), 409);
	assert_string_equal(jstr(j, "holder"), EXT_LABEL);
	json_decref(j);
	for (int i = 0; i < 2; i++)
		assert_int_equal(replica_epoch(c, i, "vh", holder, sizeof(holder)), ext_epoch);
	assert_int_equal(loop_call(x.l, ext_state, &x), 0);
	assert_int_equal(x.res, ext_epoch); /* not fenced */

	/* A forced attach takes over (fencing the outside engine). */
	assert_int_equal(req(c, 0, "POST", "/v1/volumes/vh/attach?force=1", NULL, NULL), 200);
	assert_true(replica_epoch(c, 0, "vh", holder, sizeof(holder)) > ext_epoch);
	assert_string_equal(holder, "node1");
	/* This node's own engine is no obstacle to it, and the other node answers 409 "node". */
	assert_int_equal(req(c, 0, "GET", "/v1/volumes/vh/replicas", NULL, &j), 200);
	assert_null(jstr(json_array_get(j, 0), "holder"));
	json_decref(j);
	assert_int_equal(req(c, 0, "POST", "/v1/volumes/vh/detach", NULL, NULL), 200);
	/* Detached: nobody holds it any more. */
	replica_epoch(c, 0, "vh", holder, sizeof(holder));
	assert_string_equal(holder, "");

	loop_call_wait(x.l, ext_close, &x); /* fenced: it may fail, it still frees */
	loop_stop(x.l);
	pthread_join(x.t, NULL);
	loop_free(x.l);
	/* Free again: a temporary engine works as before. */
	assert_int_equal(req(c, 1, "POST", "/v1/volumes/vh/snapshots", "{\"name\":\"s2\"}", NULL),
			 200);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_health_node),	     cmocka_unit_test(test_replicas),
	    cmocka_unit_test(test_bad_requests),     cmocka_unit_test(test_attach_detach),
	    cmocka_unit_test(test_temporary_engine), cmocka_unit_test(test_reattach_after_restart),
	    cmocka_unit_test(test_force_attach),     cmocka_unit_test(test_reattach_yields),
	    cmocka_unit_test(test_peer_timeout),     cmocka_unit_test(test_held_volume),
	};
	return cmocka_run_group_tests(tests, setup, teardown);
}

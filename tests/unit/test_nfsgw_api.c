/*
 * test_nfsgw_api: the gateway's control API (nfsgw/api.c) over real HTTP, in front of a real
 * gateway (gateway_start on a loop thread of this process) whose replicas live on a real
 * 3-node cluster of blockd processes started with the built blockctl ($BUILD or build-san):
 * health and status, the export listing, add/rm with their replies, refusals of bad input
 * with the right status and one-line error, and concurrent changes from several clients.
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
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "blockd/config.h"
#include "blockd/http_client.h"
#include "nfsgw/api.h"
#include "nfsgw/gateway.h"
#include "replica/loop.h"
#include "tests/unit/cluster_env.h"

#define GW_HOST "127.0.0.73"
#define T_MS 30000

struct env {
	struct cluster c;
	uint16_t api_port;
	struct loop_thread lt;
	struct gateway *g;
	struct nfsgw_api *api;
};

static bool port_free(const char *host, unsigned port)
{
	struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
	inet_pton(AF_INET, host, &a.sin_addr);
	int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return false;
	int one = 1;
	setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
	bool ok = bind(fd, (struct sockaddr *)&a, sizeof(a)) == 0;
	close(fd);
	return ok;
}

/* A base port in 27100-27800 whose API and node ports are free: other tests of the same
 * range (e2e 75_gateway_cli) may be running. */
static unsigned free_base(unsigned seed)
{
	unsigned base = 27100;
	for (unsigned k = 0; k < 8; k++) {
		base = 27100 + ((seed + k) % 8) * 100;
		bool ok = port_free(GW_HOST, base + 1);
		for (unsigned i = 1; i <= 3 && ok; i++)
			for (unsigned j = 1; j <= 3 && ok; j++)
				ok = port_free("127.0.0.1", base + 10 * i + j);
		if (ok)
			break;
	}
	return base;
}

/* The try-k base port, and the gateway's API port with it. */
static unsigned base_of(unsigned k, void *arg)
{
	struct env *e = arg;
	unsigned base = free_base((unsigned)getpid() + k);
	e->api_port = (uint16_t)(base + 1);
	return base;
}

static int setup(void **state)
{
	struct env *e = calloc(1, sizeof(*e));
	if (!e)
		return -1;
	if (cluster_up(&e->c, "test_nfsgw_api", base_of, e) != 0) {
		free(e);
		return -1;
	}
	int r = cluster_write_file(e->c.exports, "/vm-shared 127.0.0.0/8(rw,no_root_squash)\n");
	struct config_gateway *g = cluster_add_gateway(&e->c, "gwt", GW_HOST, "nfsgw-meta");
	g->replicas = 0;
	g->http_port = e->api_port;
	if (r == 0)
		r = loop_thread_start(&e->lt);
	if (r == 0) {
		const struct gateway_params p = {.l = e->lt.l, .cluster = &e->c.cfg, .name = "gwt"};
		r = gw_start_wait(e->lt.l, &p, &e->g);
	}
	if (r == 0)
		r = nfsgw_api_start(e->g, e->lt.l, GW_HOST, e->api_port, &e->api);
	if (r != 0) {
		fprintf(stderr, "setup failed (%d)\n", r);
		if (e->g)
			gw_stop_wait(e->lt.l, &e->g);
		loop_thread_stop(&e->lt);
		cluster_down(&e->c);
		free(e);
		return -1;
	}
	*state = e;
	return 0;
}

static int teardown(void **state)
{
	struct env *e = *state;
	if (!e)
		return 0;
	nfsgw_api_stop(e->api);
	int r = gw_stop_wait(e->lt.l, &e->g);
	if (r != 0)
		fprintf(stderr, "gateway_stop: %d\n", r);
	loop_thread_stop(&e->lt);
	cluster_down(&e->c);
	free(e);
	return 0;
}

/* One request; returns the status and (if out) the parsed body. */
static int req(struct env *e, const char *method, const char *path, const char *body, json_t **out)
{
	struct http_resp r;
	assert_int_equal(http_request(GW_HOST, e->api_port, method, path, body, T_MS, &r), 0);
	int st = r.status;
	json_t *j = json_loadb(r.body, r.len, 0, NULL);
	http_resp_free(&r);
	if (st >= 400) {
		/* Every error is {"error":"one line"}. */
		const char *msg = json_string_value(json_object_get(j, "error"));
		assert_non_null(msg);
		assert_null(strchr(msg, '\n'));
	}
	if (out)
		*out = j;
	else
		json_decref(j);
	return st;
}

static json_t *find_export(json_t *ls, const char *path)
{
	size_t i;
	json_t *x;
	json_array_foreach(json_object_get(ls, "exports"), i, x)
	{
		if (!strcmp(json_string_value(json_object_get(x, "path")), path))
			return x;
	}
	return NULL;
}

static void test_health_status(void **state)
{
	struct env *e = *state;
	json_t *j;
	assert_int_equal(req(e, "GET", "/v1/health", NULL, &j), 200);
	assert_string_equal(json_string_value(json_object_get(j, "gateway")), "gwt");
	assert_true(json_is_true(json_object_get(j, "ok")));
	json_decref(j);
	assert_int_equal(req(e, "GET", "/v1/gateway", NULL, &j), 200);
	assert_string_equal(json_string_value(json_object_get(j, "host")), GW_HOST);
	json_t *ex = json_object_get(j, "exports");
	assert_int_equal(json_array_size(ex), 1);
	assert_string_equal(json_string_value(json_object_get(json_array_get(ex, 0), "path")),
			    "/vm-shared");
	assert_true(json_integer_value(json_object_get(j, "epoch")) >= 1);
	json_decref(j);
}

static void test_exports_ls(void **state)
{
	struct env *e = *state;
	json_t *j;
	assert_int_equal(req(e, "GET", "/v1/exports", NULL, &j), 200);
	assert_non_null(strstr(json_string_value(json_object_get(j, "text")), "/vm-shared"));
	json_t *x = find_export(j, "/vm-shared");
	assert_non_null(x);
	json_t *c = json_array_get(json_object_get(x, "clients"), 0);
	assert_string_equal(json_string_value(json_object_get(c, "spec")), "127.0.0.0/8");
	assert_true(json_is_true(json_object_get(c, "rw")));
	assert_string_equal(json_string_value(json_object_get(c, "squash")), "no_root_squash");
	json_decref(j);
}

static void test_export_add_rm(void **state)
{
	struct env *e = *state;
	json_t *j;
	assert_int_equal(req(e, "POST", "/v1/exports",
			     "{\"line\":\"/isos 127.0.0.0/8(ro,all_squash,anonuid=1000)\"}", &j),
			 201);
	assert_string_equal(json_string_value(json_object_get(j, "path")), "/isos");
	json_decref(j);
	assert_int_equal(req(e, "GET", "/v1/exports", NULL, &j), 200);
	json_t *x = find_export(j, "/isos");
	assert_non_null(x);
	json_t *c = json_array_get(json_object_get(x, "clients"), 0);
	assert_false(json_is_true(json_object_get(c, "rw")));
	assert_string_equal(json_string_value(json_object_get(c, "squash")), "all_squash");
	assert_int_equal(json_integer_value(json_object_get(c, "anonuid")), 1000);
	assert_non_null(find_export(j, "/vm-shared"));
	json_decref(j);
	/* The same path again replaces its line. */
	assert_int_equal(req(e, "POST", "/v1/exports", "{\"line\":\"/isos 10.0.0.0/8(rw)\"}", NULL),
			 201);
	assert_int_equal(req(e, "GET", "/v1/exports", NULL, &j), 200);
	c = json_array_get(json_object_get(find_export(j, "/isos"), "clients"), 0);
	assert_string_equal(json_string_value(json_object_get(c, "spec")), "10.0.0.0/8");
	json_decref(j);

	assert_int_equal(req(e, "DELETE", "/v1/exports?path=/isos", NULL, &j), 200);
	assert_true(json_is_true(json_object_get(j, "removed")));
	json_decref(j);
	assert_int_equal(req(e, "DELETE", "/v1/exports?path=/isos", NULL, NULL), 404);
	assert_int_equal(req(e, "GET", "/v1/exports", NULL, &j), 200);
	assert_null(find_export(j, "/isos"));
	assert_non_null(find_export(j, "/vm-shared"));
	json_decref(j);
}

static void test_bad_input(void **state)
{
	struct env *e = *state;
	json_t *j;
	assert_int_equal(req(e, "POST", "/v1/exports", "{\"line\":\"/x 1.2.3.4(bogus)\"}", &j),
			 400);
	assert_non_null(strstr(json_string_value(json_object_get(j, "error")), "bad export line"));
	json_decref(j);
	assert_int_equal(req(e, "POST", "/v1/exports", "{\"line\":\"relative *(rw)\"}", NULL), 400);
	assert_int_equal(req(e, "POST", "/v1/exports", "{\"line\":\"/a *(rw)\\n/b *(rw)\"}", NULL),
			 400);
	assert_int_equal(req(e, "POST", "/v1/exports", "{\"line\":\"# only a comment\"}", NULL),
			 400);
	assert_int_equal(req(e, "POST", "/v1/exports", "not json", NULL), 400);
	assert_int_equal(req(e, "POST", "/v1/exports", "{\"line\":7}", NULL), 400);
	assert_int_equal(req(e, "DELETE", "/v1/exports", NULL, NULL), 400);
	assert_int_equal(req(e, "DELETE", "/v1/exports?path=relative", NULL, NULL), 400);
	assert_int_equal(req(e, "GET", "/v1/nope", NULL, NULL), 404);
	assert_int_equal(req(e, "PUT", "/v1/exports", "{}", NULL), 404);
	size_t big = 100 * 1024;
	char *b = malloc(big + 32);
	assert_non_null(b);
	strcpy(b, "{\"line\":\"");
	memset(b + 9, 'a', big);
	strcpy(b + 9 + big, "\"}");
	assert_int_equal(req(e, "POST", "/v1/exports", b, NULL), 400);
	free(b);
	/* Nothing of that reached the table. */
	assert_int_equal(req(e, "GET", "/v1/exports", NULL, &j), 200);
	assert_int_equal(json_array_size(json_object_get(j, "exports")), 1);
	json_decref(j);
}

struct worker {
	struct env *e;
	int id;
	int failures;
};

static void *worker_main(void *arg)
{
	struct worker *w = arg;
	for (int i = 0; i < 5; i++) {
		char body[128], path[64];
		snprintf(body, sizeof(body), "{\"line\":\"/w%d 127.0.0.%d(rw)\"}", w->id,
			 w->id + 1);
		snprintf(path, sizeof(path), "/v1/exports?path=/w%d", w->id);
		struct http_resp r;
		if (http_request(GW_HOST, w->e->api_port, "POST", "/v1/exports", body, T_MS, &r) ||
		    r.status != 201)
			w->failures++;
		else
			http_resp_free(&r);
		if (http_request(GW_HOST, w->e->api_port, "DELETE", path, NULL, T_MS, &r) ||
		    r.status != 200)
			w->failures++;
		else
			http_resp_free(&r);
	}
	return NULL;
}

static void test_concurrent_changes(void **state)
{
	struct env *e = *state;
	enum { N = 4 };
	struct worker w[N];
	pthread_t t[N];
	for (int i = 0; i < N; i++) {
		w[i] = (struct worker){.e = e, .id = i + 1};
		assert_int_equal(pthread_create(&t[i], NULL, worker_main, &w[i]), 0);
	}
	for (int i = 0; i < N; i++) {
		pthread_join(t[i], NULL);
		assert_int_equal(w[i].failures, 0);
	}
	json_t *j;
	assert_int_equal(req(e, "GET", "/v1/exports", NULL, &j), 200);
	assert_int_equal(json_array_size(json_object_get(j, "exports")), 1);
	json_decref(j);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_health_status),      cmocka_unit_test(test_exports_ls),
	    cmocka_unit_test(test_export_add_rm),      cmocka_unit_test(test_bad_input),
	    cmocka_unit_test(test_concurrent_changes),
	};
	return cmocka_run_group_tests(tests, setup, teardown);
}

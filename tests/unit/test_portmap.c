/*
 * test_portmap: the portmapper (nfsgw/portmap.c) on a real rpc_server, queried with
 * libnfs's own client (rpc_connect_async + rpc_pmap*_async driven by poll), and the blocking
 * pmap_client against it on an ephemeral port.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <ifaddrs.h>
#include <poll.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>
#include <nfsc/libnfs.h>
#include <nfsc/libnfs-raw.h>
#include <nfsc/libnfs-raw-portmap.h>

#include "nfsgw/portmap.h"
#include "tests/unit/rpc_client.h"

#define HOST "127.0.0.32"

int pmap_client_call_port(const char *host, uint16_t port, uint32_t proc, uint32_t prog,
			  uint32_t vers, uint32_t prot, uint16_t pport);

struct env {
	struct rpc_srv srv;
	struct portmap *pm;
};

static int setup(void **state)
{
	struct env *e = calloc(1, sizeof(*e));
	assert_non_null(e);
	rpc_srv_new(&e->srv, HOST);
	assert_int_equal(portmap_new(e->srv.s, e->srv.port, &e->pm), 0);
	assert_int_equal(portmap_set(e->pm, 100005, 3, PMAP_PROT_TCP, 20048), 0);
	assert_int_equal(portmap_set(e->pm, 100003, 3, PMAP_PROT_TCP, 2049), 0);
	rpc_srv_run(&e->srv);
	*state = e;
	return 0;
}

static int teardown(void **state)
{
	struct env *e = *state;
	rpc_srv_stop(&e->srv);
	portmap_free(e->pm);
	loop_free(e->srv.l);
	free(e);
	return 0;
}

/* ---- libnfs client driven synchronously ---- */

struct res {
	bool done;
	int status;
	uint32_t u;
	char str[128];
	int nentries;
	bool saw_mount, saw_self;
	char dump_addr[64];
};

static void cb_connect(struct rpc_context *rpc, int status, void *data, void *priv)
{
	(void)rpc;
	(void)data;
	struct res *r = priv;
	r->status = status;
	r->done = true;
}

static void cb_u32(struct rpc_context *rpc, int status, void *data, void *priv)
{
	(void)rpc;
	struct res *r = priv;
	r->status = status;
	if (status == RPC_STATUS_SUCCESS)
		r->u = *(uint32_t *)data;
	r->done = true;
}

static void cb_str(struct rpc_context *rpc, int status, void *data, void *priv)
{
	(void)rpc;
	struct res *r = priv;
	r->status = status;
	if (status == RPC_STATUS_SUCCESS)
		snprintf(r->str, sizeof(r->str), "%s", ((pmap3_string_result *)data)->addr);
	r->done = true;
}

static void cb_dump2(struct rpc_context *rpc, int status, void *data, void *priv)
{
	(void)rpc;
	struct res *r = priv;
	r->status = status;
	if (status == RPC_STATUS_SUCCESS)
		/* libnfs's decoder hands out list nodes at 4-byte alignment: copy them out. */
		for (char *p = (char *)((pmap2_dump_result *)data)->list; p;) {
			pmap2_mapping_list l;
			memcpy(&l, p, sizeof(l));
			r->nentries++;
			if (l.map.prog == 100005 && l.map.vers == 3 && l.map.port == 20048 &&
			    l.map.prot == 6)
				r->saw_mount = true;
			if (l.map.prog == 100000 && l.map.vers == 2)
				r->saw_self = true;
			p = (char *)l.next;
		}
	r->done = true;
}

static void cb_dump3(struct rpc_context *rpc, int status, void *data, void *priv)
{
	(void)rpc;
	struct res *r = priv;
	r->status = status;
	if (status == RPC_STATUS_SUCCESS)
		for (char *p = (char *)((pmap3_dump_result *)data)->list; p;) {
			pmap3_mapping_list l;
			memcpy(&l, p, sizeof(l));
			r->nentries++;
			if (l.map.prog == 100003 && !strcmp(l.map.netid, "tcp"))
				snprintf(r->dump_addr, sizeof(r->dump_addr), "%s", l.map.addr);
			p = (char *)l.next;
		}
	r->done = true;
}

static void drive(struct rpc_context *rpc, struct res *r)
{
	uint64_t end = (uint64_t)time(NULL) + 5;
	while (!r->done && (uint64_t)time(NULL) < end) {
		struct pollfd p = {.fd = rpc_get_fd(rpc), .events = (short)rpc_which_events(rpc)};
		if (poll(&p, 1, 100) < 0)
			continue;
		if (rpc_service(rpc, p.revents) < 0)
			break;
	}
	assert_true(r->done);
}

static struct rpc_context *client(struct env *e)
{
	struct rpc_context *rpc = rpc_init_context();
	assert_non_null(rpc);
	struct res r = {0};
	assert_int_equal(rpc_connect_async(rpc, HOST, e->srv.port, cb_connect, &r), 0);
	drive(rpc, &r);
	assert_int_equal(r.status, RPC_STATUS_SUCCESS);
	return rpc;
}

static uint32_t getport(struct rpc_context *rpc, uint32_t prog, uint32_t vers)
{
	struct res r = {0};
	assert_int_equal(rpc_pmap2_getport_async(rpc, (int)prog, (int)vers, 6, cb_u32, &r), 0);
	drive(rpc, &r);
	assert_int_equal(r.status, RPC_STATUS_SUCCESS);
	return r.u;
}

static void test_getport(void **state)
{
	struct env *e = *state;
	struct rpc_context *rpc = client(e);
	assert_int_equal(getport(rpc, 100005, 3), 20048);
	assert_int_equal(getport(rpc, 100003, 3), 2049);
	assert_int_equal(getport(rpc, 100000, 2), e->srv.port);
	assert_int_equal(getport(rpc, 100003, 4), 0); /* not registered at that version */
	assert_int_equal(getport(rpc, 123456, 1), 0);
	rpc_destroy_context(rpc);
}

static void test_dump(void **state)
{
	struct env *e = *state;
	struct rpc_context *rpc = client(e);
	struct res r = {0};
	assert_int_equal(rpc_pmap2_dump_async(rpc, cb_dump2, &r), 0);
	drive(rpc, &r);
	assert_int_equal(r.status, RPC_STATUS_SUCCESS);
	assert_int_equal(r.nentries, 5); /* portmap v2-4, mount, nfs */
	assert_true(r.saw_mount);
	assert_true(r.saw_self);
	rpc_destroy_context(rpc);

	rpc = rpc_init_context();
	struct res c = {0};
	assert_int_equal(rpc_connect_async(rpc, HOST, e->srv.port, cb_connect, &c), 0);
	drive(rpc, &c);
	struct res r3 = {0};
	assert_int_equal(rpc_pmap3_dump_async(rpc, cb_dump3, &r3), 0);
	drive(rpc, &r3);
	assert_int_equal(r3.status, RPC_STATUS_SUCCESS);
	assert_int_equal(r3.nentries, 5);
	assert_string_equal(r3.dump_addr, HOST ".8.1"); /* 2049 = 8*256 + 1 */
	rpc_destroy_context(rpc);
}

static void test_getaddr_v3(void **state)
{
	struct env *e = *state;
	struct rpc_context *rpc = client(e);
	struct pmap3_mapping m = {
	    .prog = 100005, .vers = 3, .netid = "tcp", .addr = "", .owner = ""};
	struct res r = {0};
	assert_int_equal(rpc_pmap3_getaddr_async(rpc, &m, cb_str, &r), 0);
	drive(rpc, &r);
	assert_int_equal(r.status, RPC_STATUS_SUCCESS);
	assert_string_equal(r.str, HOST ".78.80"); /* 20048 = 78*256 + 80 */

	m.prog = 999999;
	r = (struct res){0};
	assert_int_equal(rpc_pmap3_getaddr_async(rpc, &m, cb_str, &r), 0);
	drive(rpc, &r);
	assert_int_equal(r.status, RPC_STATUS_SUCCESS);
	assert_string_equal(r.str, "");

	r = (struct res){0};
	assert_int_equal(rpc_pmap3_gettime_async(rpc, cb_u32, &r), 0);
	drive(rpc, &r);
	assert_int_equal(r.status, RPC_STATUS_SUCCESS);
	assert_true(r.u + 10 >= (uint32_t)time(NULL) && r.u <= (uint32_t)time(NULL) + 10);
	rpc_destroy_context(rpc);
}

static void test_set_unset_loopback(void **state)
{
	struct env *e = *state;
	struct rpc_context *rpc = client(e);
	struct res r = {0};
	assert_int_equal(rpc_pmap2_set_async(rpc, 300000, 1, 6, 4444, cb_u32, &r), 0);
	drive(rpc, &r);
	assert_int_equal(r.status, RPC_STATUS_SUCCESS);
	assert_int_equal(r.u, 1);
	assert_int_equal(getport(rpc, 300000, 1), 4444);
	/* A second SET of the same mapping is refused. */
	r = (struct res){0};
	assert_int_equal(rpc_pmap2_set_async(rpc, 300000, 1, 6, 5555, cb_u32, &r), 0);
	drive(rpc, &r);
	assert_int_equal(r.u, 0);
	r = (struct res){0};
	assert_int_equal(rpc_pmap2_unset_async(rpc, 300000, 1, 6, 0, cb_u32, &r), 0);
	drive(rpc, &r);
	assert_int_equal(r.u, 1);
	assert_int_equal(getport(rpc, 300000, 1), 0);
	rpc_destroy_context(rpc);
}

static void test_pmap_client(void **state)
{
	struct env *e = *state;
	assert_int_equal(pmap_client_call_port(HOST, e->srv.port, 1, 300001, 2, 6, 7777), 0);
	assert_int_equal(pmap_client_call_port(HOST, e->srv.port, 1, 300001, 2, 6, 7777), -EEXIST);
	struct rpc_context *rpc = client(e);
	assert_int_equal(getport(rpc, 300001, 2), 7777);
	assert_int_equal(pmap_client_call_port(HOST, e->srv.port, 2, 300001, 2, 0, 0), 0);
	assert_int_equal(getport(rpc, 300001, 2), 0);
	assert_int_equal(pmap_client_call_port(HOST, e->srv.port, 2, 300001, 2, 0, 0), -EEXIST);
	rpc_destroy_context(rpc);
	/* Nobody listening: a transport error, not a FALSE. */
	int r = pmap_client_call_port("127.0.0.33", 1, 1, 300001, 2, 6, 7777);
	assert_true(r < 0 && r != -EEXIST);
}

/* A PMAP2 SET sent from src (any local address) by hand; the reply's boolean, or -1. */
static int raw_set(struct env *e, const struct sockaddr_in *src)
{
	int fd = rpc_cl_connect(src, HOST, e->srv.port);
	if (fd < 0)
		return -1;
	struct buf b = {0}, r = {0};
	call_hdr(&b, 77, 2, 100000, 2, 1, 0, NULL);
	put(&b, 300002);
	put(&b, 1);
	put(&b, 6);
	put(&b, 9999);
	send_rec(fd, &b, 1);
	assert_int_equal(recv_rec(fd, &r), 0);
	close(fd);
	assert_int_equal(r.nfrag, 1);
	assert_int_equal(r.len, 28);
	uint32_t i = expect_success(&r, 77);
	int v = (int)word(&r, i);
	free(b.p);
	free(r.p);
	return v;
}

static void test_set_from_non_loopback(void **state)
{
	struct env *e = *state;
	struct sockaddr_in lo = {.sin_family = AF_INET};
	inet_pton(AF_INET, "127.0.0.34", &lo.sin_addr);
	/* Loopback (raw path sanity): accepted, and a duplicate refused. */
	assert_int_equal(raw_set(e, &lo), 1);
	assert_int_equal(raw_set(e, &lo), 0);
	struct ifaddrs *ifs, *ifa;
	assert_int_equal(getifaddrs(&ifs), 0);
	struct sockaddr_in ext = {0};
	for (ifa = ifs; ifa; ifa = ifa->ifa_next)
		if (ifa->ifa_addr && ifa->ifa_addr->sa_family == AF_INET &&
		    (ntohl(((struct sockaddr_in *)ifa->ifa_addr)->sin_addr.s_addr) >> 24) != 127) {
			ext = *(struct sockaddr_in *)ifa->ifa_addr;
			break;
		}
	freeifaddrs(ifs);
	if (!ext.sin_family)
		skip(); /* no non-loopback address on this machine */
	ext.sin_port = 0;
	/* From a non-loopback source, SET is answered FALSE even for a new mapping. */
	struct rpc_context *rpc = client(e);
	struct res r = {0};
	assert_int_equal(rpc_pmap2_unset_async(rpc, 300002, 1, 6, 0, cb_u32, &r), 0);
	drive(rpc, &r);
	assert_int_equal(r.u, 1);
	int v = raw_set(e, &ext);
	if (v < 0)
		skip(); /* this host does not route from that address to loopback */
	assert_int_equal(v, 0);
	assert_int_equal(getport(rpc, 300002, 1), 0);
	rpc_destroy_context(rpc);
}

static void test_getaddrlist_v4(void **state)
{
	struct env *e = *state;
	int fd = rpc_cl_connect(NULL, HOST, e->srv.port);
	assert_true(fd >= 0);
	/* GETADDRLIST(100005, 3, netid "", addr "", owner "") */
	struct buf b = {0}, r = {0};
	call_hdr(&b, 78, 2, 100000, 4, 11, 0, NULL);
	put(&b, 100005);
	put(&b, 3);
	put(&b, 0);
	put(&b, 0);
	put(&b, 0);
	send_rec(fd, &b, 1);
	assert_int_equal(recv_rec(fd, &r), 0);
	close(fd);
	assert_int_equal(r.nfrag, 1);
	uint32_t i = expect_success(&r, 78);
	assert_int_equal(word(&r, i), 1); /* one entry follows */
	const char *want = HOST ".78.80";
	assert_int_equal(word(&r, i + 1), strlen(want));
	assert_memory_equal(r.p + 4 * (i + 2), want, strlen(want));
	i += 2 + (uint32_t)(strlen(want) + 3) / 4;
	assert_int_equal(word(&r, i), 3);
	assert_memory_equal(r.p + 4 * (i + 1), "tcp", 3);
	assert_int_equal(word(&r, i + 2), 3); /* NC_TPI_COTS_ORD */
	assert_int_equal(word(&r, i + 3), 4);
	assert_memory_equal(r.p + 4 * (i + 4), "inet", 4);
	assert_int_equal(word(&r, i + 5), 3);
	assert_int_equal(word(&r, i + 7), 0); /* end of list */
	assert_int_equal(r.len, 4 * (i + 8));
	free(b.p);
	free(r.p);
}

static void test_callit_unavail(void **state)
{
	struct env *e = *state;
	struct rpc_context *rpc = client(e);
	struct res r = {0};
	assert_int_equal(rpc_pmap2_callit_async(rpc, 100003, 3, 0, NULL, 0, cb_u32, &r), 0);
	drive(rpc, &r);
	assert_int_not_equal(r.status, RPC_STATUS_SUCCESS);
	rpc_destroy_context(rpc);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test_setup_teardown(test_getport, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_dump, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_getaddr_v3, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_set_unset_loopback, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_pmap_client, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_callit_unavail, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_getaddrlist_v4, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_set_from_non_loopback, setup, teardown),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}

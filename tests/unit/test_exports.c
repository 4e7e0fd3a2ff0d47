/*
 * test_exports: the exports(5) parser (syntax, errors with line numbers), the writer's round
 * trip, path normalisation, prefix lookup, client matching and credential squashing.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <arpa/inet.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "nfsgw/exports.h"

static const char sample[] =
    "# the VM store\n"
    "/vm-shared   127.0.0.0/8(rw,sync,no_subtree_check,no_root_squash) 10.1.2.3(ro)\n"
    "\n"
    "   # indented comment\n"
    "/isos *(ro,all_squash,anonuid=1000,anongid=1001)   # trailing comment\n"
    "/data/./x//y/ 192.168.1.0/255.255.255.0(rw,secure,async,wdelay,no_wdelay,fsid=7) \\\n"
    "    localhost(rw,subtree_check,insecure,root_squash)\n"
    "\"/with space\" -rw,no_root_squash 10.0.0.1 10.0.0.2(ro)\n";

static void test_parse_syntax(void **state)
{
	(void)state;
	struct exports *ex = calloc(1, sizeof(*ex));
	char err[128] = "";
	assert_int_equal(exports_parse(sample, ex, err, sizeof(err)), 0);
	assert_string_equal(err, "");
	assert_int_equal(ex->n, 4);

	const struct export *e = &ex->e[0];
	assert_string_equal(e->path, "/vm-shared");
	assert_int_equal(e->nclients, 2);
	assert_string_equal(e->clients[0].spec, "127.0.0.0/8");
	assert_int_equal(e->clients[0].addr, 0x7f000000);
	assert_int_equal(e->clients[0].mask, 0xff000000);
	assert_true(e->clients[0].rw);
	assert_int_equal(e->clients[0].squash, EXPORT_NO_ROOT_SQUASH);
	assert_false(e->clients[0].secure);
	assert_int_equal(e->clients[0].anonuid, 65534);
	assert_string_equal(e->clients[1].spec, "10.1.2.3");
	assert_int_equal(e->clients[1].mask, 0xffffffff);
	assert_false(e->clients[1].rw);
	assert_int_equal(e->clients[1].squash, EXPORT_ROOT_SQUASH);

	e = &ex->e[1];
	assert_string_equal(e->path, "/isos");
	assert_int_equal(e->clients[0].mask, 0);
	assert_int_equal(e->clients[0].squash, EXPORT_ALL_SQUASH);
	assert_int_equal(e->clients[0].anonuid, 1000);
	assert_int_equal(e->clients[0].anongid, 1001);

	e = &ex->e[2];
	assert_string_equal(e->path, "/data/x/y");
	assert_int_equal(e->nclients, 2);
	assert_int_equal(e->clients[0].addr, 0xc0a80100);
	assert_int_equal(e->clients[0].mask, 0xffffff00);
	assert_true(e->clients[0].secure);
	assert_string_equal(e->clients[1].spec, "localhost");
	assert_int_equal(e->clients[1].addr, 0x7f000001);
	assert_false(e->clients[1].secure);

	e = &ex->e[3];
	assert_string_equal(e->path, "/with space");
	assert_true(e->clients[0].rw);
	assert_int_equal(e->clients[0].squash, EXPORT_NO_ROOT_SQUASH);
	assert_false(e->clients[1].rw);
	assert_int_equal(e->clients[1].squash, EXPORT_NO_ROOT_SQUASH);

	/* Ids are stable functions of the path and distinct. */
	assert_int_not_equal(ex->e[0].id, ex->e[1].id);
	struct exports *again = calloc(1, sizeof(*again));
	assert_int_equal(exports_parse("/vm-shared *\n", again, NULL, 0), 0);
	assert_int_equal(again->e[0].id, ex->e[0].id);
	assert_ptr_equal(exports_find_id(ex, ex->e[2].id), &ex->e[2]);
	assert_ptr_equal(exports_find_path(ex, "/isos"), &ex->e[1]);
	assert_null(exports_find_path(ex, "/iso"));

	/* Empty text: an empty table. */
	assert_int_equal(exports_parse("", again, err, sizeof(err)), 0);
	assert_int_equal(again->n, 0);
	assert_int_equal(exports_parse("# nothing\n\n", again, err, sizeof(err)), 0);
	assert_int_equal(again->n, 0);
	free(again);
	free(ex);
}

static void expect_error(const char *text, const char *want)
{
	struct exports *ex = calloc(1, sizeof(*ex));
	char err[256] = "";
	assert_int_equal(exports_parse(text, ex, err, sizeof(err)), -EINVAL);
	if (!strstr(err, want))
		fail_msg("error '%s' does not contain '%s'", err, want);
	assert_int_equal(ex->n, 0);
	free(ex);
}

static void test_parse_errors(void **state)
{
	(void)state;
	expect_error("/a *(rw)\n\n/b *(rw,bogus)\n", "line 3: unknown option 'bogus'");
	expect_error("/a 10.0.0.300(rw)\n", "line 1: bad address");
	expect_error("/a 10.0.0.0/33\n", "line 1: bad netmask");
	expect_error("/a 10.0.0.0/255.0.255.0\n", "line 1: bad netmask");
	expect_error("/a *\n/b *\n/a/ *\n", "line 3: duplicate export /a");
	expect_error("relative *\n", "line 1: bad export path");
	expect_error("/a\n", "line 1: export /a lists no client");
	expect_error("/a (rw)\n", "line 1: options without a client");
	expect_error("/a *(rw\n", "line 1: missing ')'");
	expect_error("/a *(anonuid=x)\n", "bad anonuid");
	expect_error("/a *(anongid=99999999999)\n", "bad anongid");
	expect_error("/a *(rw,,ro)\n", "empty option");
	expect_error("/a no-such-host.invalid\n", "line 1: host 'no-such-host.invalid' does not");
	expect_error("/a *.example.com\n", "wildcard");
	expect_error("/a @group\n", "netgroups");
	expect_error("\"/a *\n", "unterminated quote");
	/* A continued line reports the line it started on, and counts the lines it used. */
	expect_error("/a *(rw) \\\n  *(ro)\n/b *(nope)\n", "line 3: unknown option 'nope'");
	expect_error("/a 10.0.0.1 \\\n  10.0.0.2(xx)\n", "line 1: unknown option 'xx'");
	/* A backslash in a comment does not continue. */
	struct exports *ex = calloc(1, sizeof(*ex));
	assert_int_equal(exports_parse("/a * # x \\\n/b *\n", ex, NULL, 0), 0);
	assert_int_equal(ex->n, 2);
	free(ex);
}

static void test_limits(void **state)
{
	(void)state;
	size_t cap = 64 * 1024;
	char *text = malloc(cap);
	size_t off = 0;
	for (int i = 0; i < EXPORT_MAX + 1; i++)
		off += (size_t)snprintf(text + off, cap - off, "/e%d *\n", i);
	expect_error(text, "more than 64 exports");
	off = (size_t)snprintf(text, cap, "/a");
	for (int i = 0; i < EXPORT_MAX_CLIENTS + 1; i++)
		off += (size_t)snprintf(text + off, cap - off, " 10.0.0.%d", i);
	expect_error(text, "too many clients");
	text[0] = '/';
	memset(text + 1, 'x', EXPORT_PATH_MAX);
	strcpy(text + 1 + EXPORT_PATH_MAX, " *\n");
	expect_error(text, "bad export path");
	free(text);
}

static void test_normalize(void **state)
{
	(void)state;
	char out[EXPORT_PATH_MAX];
	assert_int_equal(exports_normalize_path("/", out), 0);
	assert_string_equal(out, "/");
	assert_int_equal(exports_normalize_path("//a//b/", out), 0);
	assert_string_equal(out, "/a/b");
	assert_int_equal(exports_normalize_path("/a/./b/../c", out), 0);
	assert_string_equal(out, "/a/c");
	assert_int_equal(exports_normalize_path("/../..", out), 0);
	assert_string_equal(out, "/");
	assert_int_equal(exports_normalize_path("/a/b/../../..", out), 0);
	assert_string_equal(out, "/");
	assert_int_equal(exports_normalize_path("/..a/.b", out), 0);
	assert_string_equal(out, "/..a/.b");
	assert_int_equal(exports_normalize_path("a/b", out), -EINVAL);
	assert_int_equal(exports_normalize_path("", out), -EINVAL);
	char *longp = malloc(EXPORT_PATH_MAX + 2);
	longp[0] = '/';
	memset(longp + 1, 'y', EXPORT_PATH_MAX - 2);
	longp[EXPORT_PATH_MAX - 1] = 0; /* strlen EXPORT_PATH_MAX - 1: fits */
	assert_int_equal(exports_normalize_path(longp, out), 0);
	longp[EXPORT_PATH_MAX - 1] = 'y';
	longp[EXPORT_PATH_MAX] = 0;
	assert_int_equal(exports_normalize_path(longp, out), -EINVAL);
	free(longp);
}

static void test_find_prefix(void **state)
{
	(void)state;
	struct exports *ex = calloc(1, sizeof(*ex));
	assert_int_equal(exports_parse("/vm *\n/vm/sub *\n/vmx *\n", ex, NULL, 0), 0);
	const char *rest = NULL;
	assert_ptr_equal(exports_find_prefix(ex, "/vm", &rest), &ex->e[0]);
	assert_string_equal(rest, "");
	assert_ptr_equal(exports_find_prefix(ex, "/vm/a/b", &rest), &ex->e[0]);
	assert_string_equal(rest, "a/b");
	assert_ptr_equal(exports_find_prefix(ex, "/vm/sub", &rest), &ex->e[1]);
	assert_string_equal(rest, "");
	assert_ptr_equal(exports_find_prefix(ex, "/vm/sub/c", &rest), &ex->e[1]);
	assert_string_equal(rest, "c");
	assert_ptr_equal(exports_find_prefix(ex, "/vm/subx", &rest), &ex->e[0]);
	assert_string_equal(rest, "subx");
	assert_ptr_equal(exports_find_prefix(ex, "/vmx/q", &rest), &ex->e[2]);
	assert_string_equal(rest, "q");
	assert_null(exports_find_prefix(ex, "/v", &rest));
	assert_null(exports_find_prefix(ex, "/", &rest));
	assert_int_equal(exports_parse("/ *\n/a *\n", ex, NULL, 0), 0);
	assert_ptr_equal(exports_find_prefix(ex, "/b/c", &rest), &ex->e[0]);
	assert_string_equal(rest, "b/c");
	assert_ptr_equal(exports_find_prefix(ex, "/a/c", &rest), &ex->e[1]);
	assert_string_equal(rest, "c");
	free(ex);
}

static struct sockaddr_storage v4(const char *a, uint16_t port)
{
	struct sockaddr_storage ss;
	memset(&ss, 0, sizeof(ss));
	struct sockaddr_in *s = (struct sockaddr_in *)&ss;
	s->sin_family = AF_INET;
	s->sin_port = htons(port);
	assert_int_equal(inet_pton(AF_INET, a, &s->sin_addr), 1);
	return ss;
}

static struct sockaddr_storage v6(const char *a, uint16_t port)
{
	struct sockaddr_storage ss;
	memset(&ss, 0, sizeof(ss));
	struct sockaddr_in6 *s = (struct sockaddr_in6 *)&ss;
	s->sin6_family = AF_INET6;
	s->sin6_port = htons(port);
	assert_int_equal(inet_pton(AF_INET6, a, &s->sin6_addr), 1);
	return ss;
}

static void test_match(void **state)
{
	(void)state;
	struct exports *ex = calloc(1, sizeof(*ex));
	assert_int_equal(exports_parse("/a 10.1.2.3(rw) 127.0.0.0/8(ro) "
				       "192.168.0.0/255.255.0.0(rw,secure)\n"
				       "/b *(rw)\n/c 10.9.9.9\n",
				       ex, NULL, 0),
			 0);
	const struct export *a = &ex->e[0], *b = &ex->e[1], *c = &ex->e[2];
	struct sockaddr_storage p;

	p = v4("10.1.2.3", 40000);
	assert_ptr_equal(export_match(a, &p), &a->clients[0]);
	p = v4("10.1.2.4", 40000);
	assert_null(export_match(a, &p));
	p = v4("127.5.6.7", 40000);
	assert_ptr_equal(export_match(a, &p), &a->clients[1]);
	p = v4("128.0.0.1", 40000);
	assert_null(export_match(a, &p));
	/* Netmask entry with `secure`: privileged ports only, no fall-through. */
	p = v4("192.168.44.1", 1023);
	assert_ptr_equal(export_match(a, &p), &a->clients[2]);
	p = v4("192.168.44.1", 1024);
	assert_null(export_match(a, &p));
	p = v4("192.169.0.1", 1000);
	assert_null(export_match(a, &p));
	/* v4-mapped IPv6 matches like its IPv4 address; other IPv6 never does. */
	p = v6("::ffff:127.0.0.9", 40000);
	assert_ptr_equal(export_match(a, &p), &a->clients[1]);
	p = v6("::ffff:10.1.2.3", 40000);
	assert_ptr_equal(export_match(a, &p), &a->clients[0]);
	p = v6("::1", 40000);
	assert_null(export_match(a, &p));
	assert_null(export_match(b, &p));
	/* `*` matches any IPv4. */
	p = v4("8.8.8.8", 5);
	assert_ptr_equal(export_match(b, &p), &b->clients[0]);
	p = v4("10.9.9.9", 5);
	assert_ptr_equal(export_match(c, &p), &c->clients[0]);
	p = v4("10.9.9.8", 5);
	assert_null(export_match(c, &p));
	free(ex);
}

static void test_squash(void **state)
{
	(void)state;
	struct exports *ex = calloc(1, sizeof(*ex));
	assert_int_equal(exports_parse("/a 10.0.0.1(rw) 10.0.0.2(no_root_squash) "
				       "10.0.0.3(all_squash,anonuid=7,anongid=8) "
				       "10.0.0.4(anonuid=70,anongid=80)\n",
				       ex, NULL, 0),
			 0);
	const struct export_client *rs = &ex->e[0].clients[0];
	const struct export_client *nrs = &ex->e[0].clients[1];
	const struct export_client *all = &ex->e[0].clients[2];
	const struct export_client *anon = &ex->e[0].clients[3];
	uint32_t uid, gid, ngids, gids[3];

	/* root_squash: uid 0 and gid 0 (also in the group list) become the anonymous ids. */
	uid = 0, gid = 0, ngids = 3, gids[0] = 5, gids[1] = 0, gids[2] = 6;
	export_squash_ids(rs, 1, &uid, &gid, &ngids, gids);
	assert_int_equal(uid, 65534);
	assert_int_equal(gid, 65534);
	assert_int_equal(ngids, 3);
	assert_int_equal(gids[0], 5);
	assert_int_equal(gids[1], 65534);
	assert_int_equal(gids[2], 6);
	uid = 1000, gid = 100, ngids = 0;
	export_squash_ids(rs, 1, &uid, &gid, &ngids, gids);
	assert_int_equal(uid, 1000);
	assert_int_equal(gid, 100);
	uid = 0, gid = 0;
	export_squash_ids(anon, 1, &uid, &gid, &ngids, gids);
	assert_int_equal(uid, 70);
	assert_int_equal(gid, 80);

	/* no_root_squash keeps root. */
	uid = 0, gid = 0, ngids = 1, gids[0] = 0;
	export_squash_ids(nrs, 1, &uid, &gid, &ngids, gids);
	assert_int_equal(uid, 0);
	assert_int_equal(gid, 0);
	assert_int_equal(gids[0], 0);

	/* all_squash maps everyone and drops the groups. */
	uid = 1000, gid = 100, ngids = 2, gids[0] = 1, gids[1] = 2;
	export_squash_ids(all, 1, &uid, &gid, &ngids, gids);
	assert_int_equal(uid, 7);
	assert_int_equal(gid, 8);
	assert_int_equal(ngids, 0);

	/* AUTH_NONE is anonymous even on no_root_squash. */
	uid = 0, gid = 0, ngids = 1;
	export_squash_ids(nrs, 0, &uid, &gid, &ngids, gids);
	assert_int_equal(uid, 65534);
	assert_int_equal(gid, 65534);
	assert_int_equal(ngids, 0);
	free(ex);
}

static void assert_same(const struct exports *a, const struct exports *b)
{
	assert_int_equal(a->n, b->n);
	for (uint32_t i = 0; i < a->n; i++) {
		const struct export *x = &a->e[i], *y = &b->e[i];
		assert_string_equal(x->path, y->path);
		assert_int_equal(x->id, y->id);
		assert_int_equal(x->nclients, y->nclients);
		for (uint32_t j = 0; j < x->nclients; j++) {
			const struct export_client *p = &x->clients[j], *q = &y->clients[j];
			assert_string_equal(p->spec, q->spec);
			assert_int_equal(p->addr, q->addr);
			assert_int_equal(p->mask, q->mask);
			assert_int_equal(p->rw, q->rw);
			assert_int_equal(p->secure, q->secure);
			assert_int_equal(p->squash, q->squash);
			assert_int_equal(p->anonuid, q->anonuid);
			assert_int_equal(p->anongid, q->anongid);
		}
	}
}

static void test_format_round_trip(void **state)
{
	(void)state;
	struct exports *a = calloc(1, sizeof(*a)), *b = calloc(1, sizeof(*b));
	char err[128];
	assert_int_equal(exports_parse(sample, a, err, sizeof(err)), 0);
	char buf[4096];
	int n = exports_format(a, buf, sizeof(buf));
	assert_true(n > 0);
	assert_int_equal((size_t)n, strlen(buf));
	assert_non_null(strstr(buf, "/vm-shared 127.0.0.0/8(rw,no_root_squash,insecure) "
				    "10.1.2.3(ro,root_squash,insecure)\n"));
	assert_non_null(strstr(buf, "/isos *(ro,all_squash,insecure,anonuid=1000,anongid=1001)"));
	assert_non_null(strstr(buf, "\"/with space\" 10.0.0.1(rw,"));
	assert_int_equal(exports_parse(buf, b, err, sizeof(err)), 0);
	assert_same(a, b);
	/* Formatting the re-parsed table gives the same text. */
	char buf2[4096];
	assert_int_equal(exports_format(b, buf2, sizeof(buf2)), n);
	assert_string_equal(buf, buf2);
	/* Too small a buffer: -ENOSPC, for every size short of the text. */
	for (size_t len = 0; len <= (size_t)n; len++)
		assert_int_equal(exports_format(a, buf2, len), -ENOSPC);
	/* An empty table formats to "". */
	memset(b, 0, sizeof(*b));
	assert_int_equal(exports_format(b, buf2, sizeof(buf2)), 0);
	assert_string_equal(buf2, "");
	free(a);
	free(b);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_parse_syntax), cmocka_unit_test(test_parse_errors),
	    cmocka_unit_test(test_limits),	 cmocka_unit_test(test_normalize),
	    cmocka_unit_test(test_find_prefix),	 cmocka_unit_test(test_match),
	    cmocka_unit_test(test_squash),	 cmocka_unit_test(test_format_round_trip),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}

/*
 * blockctl util + http_client tests: size parsing (valid, malformed, overflow), size
 * formatting, table layout, option parsing, the progress line, and the HTTP client against
 * a real server thread on 127.0.0.1 (Content-Length, chunked, close-delimited bodies,
 * malformed replies, timeouts, refused connections).
 *
 * util.c is not in any library (it belongs to the blockctl binary), so it is compiled in.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "tools/blockctl/util.c"
#include "blockd/http_client.h"

static void test_size_valid(void **state)
{
	(void)state;
	static const struct {
		const char *s;
		uint64_t v;
	} ok[] = {
	    {"0", 0},
	    {"1", 1},
	    {"512", 512},
	    {"100B", 100},
	    {"1K", 1024},
	    {"1k", 1024},
	    {"4KiB", 4096},
	    {"10M", 10ull << 20},
	    {"10MB", 10ull << 20},
	    {"1G", 1ull << 30},
	    {"1g", 1ull << 30},
	    {"2T", 2ull << 40},
	    {"1.5G", 3ull << 29},
	    {"0.5K", 512},
	    {"1.25M", 5ull << 18},
	    {"8388607T", 8388607ull << 40},
	    {"9223372036854775807", 9223372036854775807ull},
	};
	for (size_t i = 0; i < sizeof(ok) / sizeof(ok[0]); i++) {
		uint64_t v = 12345;
		int r = parse_size(ok[i].s, &v);
		if (r != 0 || v != ok[i].v)
			fail_msg("parse_size(\"%s\") = %d, %llu; want 0, %llu", ok[i].s, r,
				 (unsigned long long)v, (unsigned long long)ok[i].v);
	}
}

static void test_size_invalid(void **state)
{
	(void)state;
	static const char *const bad[] = {
	    "",	   "-1",   "+1",  " 1",		"1 ",  "K",   "1X", "1.",  ".5",    "1.5", "1KK",
	    "1iB", "0x10", "1e6", "1.0000001G", "1Ki", "1 G", "G1", "1/2", "1.5.2", "1KBB"};
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		uint64_t v = 777;
		int r = parse_size(bad[i], &v);
		if (r != -EINVAL || v != 777)
			fail_msg("parse_size(\"%s\") = %d (v %llu); want -EINVAL, untouched",
				 bad[i], r, (unsigned long long)v);
	}
	uint64_t v;
	assert_int_equal(parse_size(NULL, &v), -EINVAL);
}

static void test_size_overflow(void **state)
{
	(void)state;
	static const char *const big[] = {
	    "9223372036854775808", "18446744073709551616", "99999999999999999999999", "8388608T",
	    "16777216T",	   "9007199254740992K",	   "8796093022208M",	      "8589934592G",
	    "8388608.5T"};
	for (size_t i = 0; i < sizeof(big) / sizeof(big[0]); i++) {
		uint64_t v = 777;
		int r = parse_size(big[i], &v);
		if (r != -ERANGE || v != 777)
			fail_msg("parse_size(\"%s\") = %d; want -ERANGE", big[i], r);
	}
}

static void test_format_size(void **state)
{
	(void)state;
	char b[16];
	format_size(0, b, sizeof(b));
	assert_string_equal(b, "0");
	format_size(1023, b, sizeof(b));
	assert_string_equal(b, "1023");
	format_size(1024, b, sizeof(b));
	assert_string_equal(b, "1K");
	format_size(1536, b, sizeof(b));
	assert_string_equal(b, "1.5K");
	format_size(10ull << 30, b, sizeof(b));
	assert_string_equal(b, "10G");
	format_size(3ull << 40, b, sizeof(b));
	assert_string_equal(b, "3T");
	/* Round trip: what we print parses back to the same value when exact. */
	uint64_t v;
	format_size(3ull << 29, b, sizeof(b));
	assert_int_equal(parse_size(b, &v), 0);
	assert_int_equal(v, 3ull << 29);
}

static void test_parse_uint(void **state)
{
	(void)state;
	uint64_t v;
	assert_int_equal(parse_uint("16", 16, &v), 0);
	assert_int_equal(v, 16);
	assert_int_equal(parse_uint("17", 16, &v), -ERANGE);
	assert_int_equal(parse_uint("", 16, &v), -EINVAL);
	assert_int_equal(parse_uint("-1", 16, &v), -EINVAL);
	assert_int_equal(parse_uint("3x", 16, &v), -EINVAL);
	assert_int_equal(parse_uint("99999999999999999999999", UINT64_MAX, &v), -ERANGE);
}

static char *render(const struct table *t)
{
	char *buf = NULL;
	size_t len = 0;
	FILE *f = open_memstream(&buf, &len);
	assert_non_null(f);
	assert_int_equal(table_print(t, f), 0);
	fclose(f);
	return buf;
}

static void test_table(void **state)
{
	(void)state;
	struct table t;
	const char *h[] = {"NAME", ">SIZE", "NODES"};
	assert_int_equal(table_init(&t, 3, h), 0);
	const char *r1[] = {"vol1", "10G", "node1,node2"};
	const char *r2[] = {"a-much-longer-name", "512M", NULL};
	assert_int_equal(table_add(&t, r1), 0);
	assert_int_equal(table_add(&t, r2), 0);
	char *out = render(&t);
	assert_string_equal(out, "NAME                SIZE  NODES\n"
				 "vol1                 10G  node1,node2\n"
				 "a-much-longer-name  512M  -\n");
	free(out);
	table_free(&t);

	/* An empty last cell leaves no trailing blanks. */
	const char *h3[] = {"NODE", "ERROR"};
	assert_int_equal(table_init(&t, 2, h3), 0);
	const char *r3[] = {"node1", ""};
	const char *r4[] = {"n2", "gone"};
	assert_int_equal(table_add(&t, r3), 0);
	assert_int_equal(table_add(&t, r4), 0);
	out = render(&t);
	assert_string_equal(out, "NODE   ERROR\nnode1\nn2     gone\n");
	free(out);
	table_free(&t);

	/* Header only; widths come from the header. */
	const char *h2[] = {"A", "B"};
	assert_int_equal(table_init(&t, 2, h2), 0);
	out = render(&t);
	assert_string_equal(out, "A  B\n");
	free(out);
	table_free(&t);

	assert_int_equal(table_init(&t, 0, h2), -EINVAL);
	table_free(&t);
	assert_int_equal(table_init(&t, TABLE_MAX_COLS + 1, h2), -EINVAL);
	table_free(&t);
}

static void test_opts(void **state)
{
	(void)state;
	const char *size = NULL, *node = NULL, *flag = NULL;
	const struct optspec specs[] = {
	    {"size", true, &size}, {"node", true, &node}, {"force", false, &flag}, {0}};
	char err[128], *pos[2];
	char *a1[] = {"vol", "--size", "1G", "--node=node2", "--force"};
	assert_int_equal(opts_parse(5, a1, specs, pos, 2, err, sizeof(err)), 1);
	assert_string_equal(pos[0], "vol");
	assert_string_equal(size, "1G");
	assert_string_equal(node, "node2");
	assert_string_equal(flag, "");

	char *a2[] = {"--bogus"};
	assert_int_equal(opts_parse(1, a2, specs, pos, 2, err, sizeof(err)), -EINVAL);
	assert_non_null(strstr(err, "--bogus"));
	char *a3[] = {"--size"};
	assert_int_equal(opts_parse(1, a3, specs, pos, 2, err, sizeof(err)), -EINVAL);
	assert_non_null(strstr(err, "needs a value"));
	char *a4[] = {"a", "b", "c"};
	assert_int_equal(opts_parse(3, a4, specs, pos, 2, err, sizeof(err)), -EINVAL);
	assert_non_null(strstr(err, "'c'"));
	char *a5[] = {"--force=1"};
	assert_int_equal(opts_parse(1, a5, specs, pos, 2, err, sizeof(err)), -EINVAL);
	char *a6[] = {"--", "--size"};
	assert_int_equal(opts_parse(2, a6, specs, pos, 2, err, sizeof(err)), 1);
	assert_string_equal(pos[0], "--size");
	char *a7[] = {"-s"}; /* one dash only for one-letter names */
	assert_int_equal(opts_parse(1, a7, specs, pos, 2, err, sizeof(err)), -EINVAL);
}

static void test_progress_render(void **state)
{
	(void)state;
	char buf[256];
	progress_render(buf, sizeof(buf), "vol1", 512ull << 20, 1ull << 30, 1000);
	assert_string_equal(buf, "vol1 [###############...............]  50% 512M/1G 512M/s");
	progress_render(buf, sizeof(buf), "v", 5, 0, 0);
	assert_non_null(strstr(buf, "100%"));
	progress_render(buf, sizeof(buf), "v", 2000, 1000, 10);
	assert_non_null(strstr(buf, "100%"));
}

/* ---- HTTP client against a real server thread ---- */

struct srv {
	int lfd;
	uint16_t port;
	const char *reply; /* written verbatim after the request is read; NULL: never answer */
	size_t reply_len;
	char request[4096];
	pthread_t th;
};

static void *srv_main(void *arg)
{
	struct srv *s = arg;
	int fd = accept(s->lfd, NULL, NULL);
	if (fd < 0)
		return NULL;
	size_t n = 0;
	/* Read headers plus a Content-Length body. */
	for (;;) {
		ssize_t r = read(fd, s->request + n, sizeof(s->request) - 1 - n);
		if (r <= 0)
			break;
		n += (size_t)r;
		s->request[n] = 0;
		char *end = strstr(s->request, "\r\n\r\n");
		if (!end)
			continue;
		char *cl = strcasestr(s->request, "content-length: ");
		size_t want = cl ? strtoul(cl + 16, NULL, 10) : 0;
		if (n >= (size_t)(end + 4 - s->request) + want)
			break;
	}
	if (s->reply) {
		/* Dribble small replies in pieces so the parser sees split lines; large ones
		 * go in big writes that still span many of the client's buffer fills. */
		size_t step = s->reply_len > 4096 ? 65536 : 7;
		for (size_t off = 0; off < s->reply_len; off += step) {
			size_t k = s->reply_len - off < step ? s->reply_len - off : step;
			if (write(fd, s->reply + off, k) < 0)
				break;
			usleep(200);
		}
	} else {
		char b[16];
		while (read(fd, b, sizeof(b)) > 0) /* until the client gives up */
			;
	}
	close(fd);
	return NULL;
}

static void srv_start(struct srv *s, const char *reply)
{
	memset(s, 0, sizeof(*s));
	s->reply = reply;
	s->reply_len = reply ? strlen(reply) : 0;
	s->lfd = socket(AF_INET, SOCK_STREAM, 0);
	assert_true(s->lfd >= 0);
	struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
	assert_int_equal(bind(s->lfd, (struct sockaddr *)&a, sizeof(a)), 0);
	assert_int_equal(listen(s->lfd, 4), 0);
	socklen_t al = sizeof(a);
	assert_int_equal(getsockname(s->lfd, (struct sockaddr *)&a, &al), 0);
	s->port = ntohs(a.sin_port);
	assert_int_equal(pthread_create(&s->th, NULL, srv_main, s), 0);
}

static void srv_stop(struct srv *s)
{
	pthread_join(s->th, NULL);
	close(s->lfd);
}

static void test_http_content_length(void **state)
{
	(void)state;
	struct srv s;
	srv_start(&s, "HTTP/1.1 201 Created\r\nContent-Type: application/json\r\n"
		      "Content-Length: 13\r\n\r\n{\"ok\":true}\r\nEXTRA");
	struct http_resp r;
	assert_int_equal(http_request("127.0.0.1", s.port, "POST", "/v1/replicas",
				      "{\"volume\":\"v\"}", 5000, &r),
			 0);
	srv_stop(&s);
	assert_int_equal(r.status, 201);
	assert_int_equal(r.len, 13);
	assert_string_equal(r.body, "{\"ok\":true}\r\n");
	assert_non_null(strstr(s.request, "POST /v1/replicas HTTP/1.1\r\n"));
	assert_non_null(strstr(s.request, "Content-Length: 14\r\n"));
	assert_non_null(strstr(s.request, "\r\n\r\n{\"volume\":\"v\"}"));
	http_resp_free(&r);
}

static void test_http_chunked(void **state)
{
	(void)state;
	struct srv s;
	srv_start(&s, "HTTP/1.1 100 Continue\r\n\r\n"
		      "HTTP/1.1 404 Not Found\r\ntransfer-encoding: Chunked\r\n\r\n"
		      "5\r\n{\"err\r\n"
		      "A;ext=1\r\nor\":\"no su\r\n"
		      "c\r\nch volume\"}\n\r\n"
		      "0\r\nX-Trailer: 1\r\n\r\n");
	struct http_resp r;
	assert_int_equal(http_request("127.0.0.1", s.port, "GET", "/v1/volumes/x", NULL, 5000, &r),
			 0);
	srv_stop(&s);
	assert_int_equal(r.status, 404);
	assert_string_equal(r.body, "{\"error\":\"no such volume\"}\n");
	assert_int_equal(r.len, strlen(r.body));
	assert_non_null(strstr(s.request, "GET /v1/volumes/x HTTP/1.1\r\n"));
	assert_null(strstr(s.request, "Content-Length"));
	http_resp_free(&r);
}

static void test_http_until_close(void **state)
{
	(void)state;
	struct srv s;
	srv_start(&s, "HTTP/1.0 200 OK\r\n\r\n[1,2,3]");
	struct http_resp r;
	assert_int_equal(http_request("127.0.0.1", s.port, "GET", "/", NULL, 5000, &r), 0);
	srv_stop(&s);
	assert_int_equal(r.status, 200);
	assert_string_equal(r.body, "[1,2,3]");
	http_resp_free(&r);

	srv_start(&s, "HTTP/1.1 204 No Content\r\n\r\n");
	assert_int_equal(http_request("127.0.0.1", s.port, "DELETE", "/x", NULL, 5000, &r), 0);
	srv_stop(&s);
	assert_int_equal(r.status, 204);
	assert_non_null(r.body);
	assert_int_equal(r.len, 0);
	assert_non_null(strstr(s.request, "Content-Length: 0\r\n"));
	http_resp_free(&r);
}

/* Bodies larger than the client's 16 KiB read buffer, both framings. */
static void test_http_large_body(void **state)
{
	(void)state;
	enum { N = 300000 };
	char *body = malloc(N + 1);
	assert_non_null(body);
	for (size_t i = 0; i < N; i++)
		body[i] = (char)('a' + i % 26);
	body[N] = 0;
	char *reply = NULL;
	assert_true(asprintf(&reply, "HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s", N, body) >
		    0);
	struct srv s;
	srv_start(&s, reply);
	struct http_resp r;
	assert_int_equal(http_request("127.0.0.1", s.port, "GET", "/", NULL, 5000, &r), 0);
	srv_stop(&s);
	assert_int_equal(r.len, N);
	assert_memory_equal(r.body, body, N);
	http_resp_free(&r);
	free(reply);

	/* Chunked in 7 chunks of uneven size, sizes in upper- and lower-case hex. */
	size_t cap = N + 1024, off = 0;
	reply = malloc(cap);
	assert_non_null(reply);
	off +=
	    (size_t)snprintf(reply, cap, "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n");
	for (size_t pos = 0, k = 0; pos < N; k++) {
		size_t len = k == 6 ? N - pos : 1000 + k * 17000;
		off += (size_t)snprintf(reply + off, cap - off, k % 2 ? "%zX\r\n" : "%zx\r\n", len);
		memcpy(reply + off, body + pos, len);
		off += len;
		off += (size_t)snprintf(reply + off, cap - off, "\r\n");
		pos += len;
	}
	snprintf(reply + off, cap - off, "0\r\n\r\n");
	srv_start(&s, reply);
	assert_int_equal(http_request("127.0.0.1", s.port, "GET", "/", NULL, 5000, &r), 0);
	srv_stop(&s);
	assert_int_equal(r.len, N);
	assert_memory_equal(r.body, body, N);
	assert_int_equal(r.body[N], 0);
	http_resp_free(&r);
	free(reply);
	free(body);
}

static void test_http_malformed(void **state)
{
	(void)state;
	static const char *const bad[] = {
	    "HTTP/1.1 20 OK\r\n\r\n",
	    "SMTP 220 hello\r\n\r\n",
	    "HTTP/1.1 200 OK\r\nno colon here\r\n\r\n",
	    "HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nshort",
	    "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
	    "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabcXY",
	    "HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n",
	    "HTTP/1.1 200 OK\r\n",
	};
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		struct srv s;
		srv_start(&s, bad[i]);
		struct http_resp r;
		int rc = http_request("127.0.0.1", s.port, "GET", "/", NULL, 5000, &r);
		srv_stop(&s);
		if (rc != -EPROTO)
			fail_msg("reply %zu: http_request = %d, want -EPROTO", i, rc);
		assert_null(r.body);
	}
	struct srv s;
	srv_start(&s, "HTTP/1.1 200 OK\r\nContent-Length: 999999999999\r\n\r\n");
	struct http_resp r;
	assert_int_equal(http_request("127.0.0.1", s.port, "GET", "/", NULL, 5000, &r), -EFBIG);
	srv_stop(&s);
}

static void test_http_timeout_refused(void **state)
{
	(void)state;
	struct srv s;
	srv_start(&s, NULL);
	struct http_resp r;
	int64_t t0 = mono_ms();
	assert_int_equal(http_request("127.0.0.1", s.port, "GET", "/", NULL, 300, &r), -ETIMEDOUT);
	int64_t took = mono_ms() - t0;
	assert_true(took >= 290 && took < 2000);
	srv_stop(&s);

	/* A port nobody listens on: bind one, note it, close it. */
	int fd = socket(AF_INET, SOCK_STREAM, 0);
	struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
	assert_int_equal(bind(fd, (struct sockaddr *)&a, sizeof(a)), 0);
	socklen_t al = sizeof(a);
	getsockname(fd, (struct sockaddr *)&a, &al);
	close(fd);
	assert_int_equal(http_request("127.0.0.1", ntohs(a.sin_port), "GET", "/", NULL, 1000, &r),
			 -ECONNREFUSED);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_size_valid),
	    cmocka_unit_test(test_size_invalid),
	    cmocka_unit_test(test_size_overflow),
	    cmocka_unit_test(test_format_size),
	    cmocka_unit_test(test_parse_uint),
	    cmocka_unit_test(test_table),
	    cmocka_unit_test(test_opts),
	    cmocka_unit_test(test_progress_render),
	    cmocka_unit_test(test_http_content_length),
	    cmocka_unit_test(test_http_chunked),
	    cmocka_unit_test(test_http_until_close),
	    cmocka_unit_test(test_http_large_body),
	    cmocka_unit_test(test_http_malformed),
	    cmocka_unit_test(test_http_timeout_refused),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}

/*
 * nfsgw api: the control API's HTTP side (routes in api.h). libmicrohttpd runs a thread per
 * connection; each handler hands gateway work to the loop thread and blocks for its answer,
 * so a slow export change (a replicated metadata write) stalls only its own caller.
 */
#include "nfsgw/api.h"

#include <errno.h>
#include <jansson.h>
#include <microhttpd.h>
#include <netdb.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "nfsgw/exports.h"
#include "nfsgw/gateway.h"
#include "nfsgw/meta.h"
#include "replica/loop.h"

#define API_MAX_BODY (64u * 1024)
#define API_MAX_CONNECTIONS 64
#define API_IDLE_TIMEOUT_S 300
#define API_ERR_MAX 256

struct nfsgw_api {
	struct MHD_Daemon *d;
	struct gateway *g;
	struct loop *l;
};

struct req {
	char *body;
	size_t len;
	bool too_big;
};

struct reply {
	int status;
	json_t *body;
};

static void reply_json(struct reply *r, int status, json_t *body)
{
	r->status = status;
	r->body = body;
}

static void reply_err(struct reply *r, int status, const char *msg)
{
	reply_json(r, status, json_pack("{s:s}", "error", msg));
}

static int errno_status(int err)
{
	switch (-err) {
	case EINVAL:
	case E2BIG:
	case ERANGE:
	case ENAMETOOLONG:
		return 400;
	case ENOENT:
		return 404;
	case EEXIST:
	case EBUSY:
	case ENOTEMPTY:
	case ESTALE:
	case ENOSPC:
		return 409;
	case EIO:
	case ETIMEDOUT:
	case EAGAIN:
	case ENOTCONN:
	case ECONNREFUSED:
	case ECONNRESET:
	case EHOSTUNREACH:
	case ENETUNREACH:
	case ESHUTDOWN:
	case EROFS:
		return 503;
	default:
		return 500;
	}
}

/* ---- work on the loop thread ---- */

struct query_call {
	struct gateway *g;
	json_t *status;
	char *text;
};

static void status_on_loop(void *arg)
{
	struct query_call *q = arg;
	q->status = gateway_status(q->g);
}

static void text_on_loop(void *arg)
{
	struct query_call *q = arg;
	q->text = gateway_exports_text(q->g);
}

/* An asynchronous export change. The callback may run inside gateway_export_add itself:
 * loop_done is then deferred until the call returns, because the waiting handler frees this
 * struct (its stack) as soon as loop_done wakes it. */
struct change_call {
	struct gateway *g;
	const char *line; /* add */
	const char *path; /* rm */
	char err[API_ERR_MAX];
	struct loop_waiter *w;
	bool in_start, done;
	int res;
};

static void change_done(void *arg, int res)
{
	struct change_call *c = arg;
	c->done = true;
	c->res = res;
	if (!c->in_start)
		loop_done(c->w, res);
}

static void change_start(void *arg, struct loop_waiter *w)
{
	struct change_call *c = arg;
	c->w = w;
	c->in_start = true;
	int r = c->line ? gateway_export_add(c->g, c->line, c->err, sizeof(c->err), change_done, c)
			: gateway_export_rm(c->g, c->path, change_done, c);
	c->in_start = false;
	if (c->done)
		loop_done(w, c->res);
	else if (r < 0)
		loop_done(w, r);
}

/* ---- JSON ---- */

static const char *squash_name(enum export_squash s)
{
	switch (s) {
	case EXPORT_NO_ROOT_SQUASH:
		return "no_root_squash";
	case EXPORT_ALL_SQUASH:
		return "all_squash";
	default:
		return "root_squash";
	}
}

/* The structured form of an export table's text; NULL (with err) when it does not parse. */
static json_t *exports_json(const char *text, char *err, size_t errlen)
{
	struct exports *ex = calloc(1, sizeof(*ex));
	if (!ex) {
		snprintf(err, errlen, "out of memory");
		return NULL;
	}
	if (exports_parse(text, ex, err, errlen) < 0) {
		free(ex);
		return NULL;
	}
	json_t *arr = json_array();
	for (uint32_t i = 0; i < ex->n; i++) {
		const struct export *e = &ex->e[i];
		json_t *cl = json_array();
		for (uint32_t k = 0; k < e->nclients; k++) {
			const struct export_client *c = &e->clients[k];
			json_array_append_new(
			    cl, json_pack("{s:s,s:b,s:s,s:I,s:I,s:b}", "spec", c->spec, "rw", c->rw,
					  "squash", squash_name(c->squash), "anonuid",
					  (json_int_t)c->anonuid, "anongid", (json_int_t)c->anongid,
					  "secure", c->secure));
		}
		json_array_append_new(arr, json_pack("{s:s,s:I,s:o}", "path", e->path, "id",
						     (json_int_t)e->id, "clients", cl));
	}
	free(ex);
	return arr;
}

/* A snapshot operation (create, delete, revert): the same deferral as change_call. */
struct snap_call {
	struct gateway *g;
	enum { SC_CREATE, SC_DELETE, SC_REVERT } kind;
	const char *path, *name;
	char err[API_ERR_MAX];
	struct loop_waiter *w;
	bool in_start, done;
	int res;
};

static void snap_done(void *arg, int res)
{
	struct snap_call *c = arg;
	c->done = true;
	c->res = res;
	if (!c->in_start)
		loop_done(c->w, res);
}

static void snap_start(void *arg, struct loop_waiter *w)
{
	struct snap_call *c = arg;
	c->w = w;
	c->in_start = true;
	int r;
	if (c->kind == SC_CREATE)
		r = gateway_snapshot_create(c->g, c->path, c->name, c->err, sizeof(c->err),
					    snap_done, c);
	else if (c->kind == SC_DELETE)
		r = gateway_snapshot_delete(c->g, c->name, c->err, sizeof(c->err), snap_done, c);
	else
		r = gateway_snapshot_revert(c->g, c->name, c->err, sizeof(c->err), snap_done, c);
	c->in_start = false;
	if (c->done)
		loop_done(w, c->res);
	else if (r < 0)
		loop_done(w, r);
}

struct snap_list_call {
	struct gateway *g;
	const char *path;
	json_t *list;
};

static void snap_list_on_loop(void *arg)
{
	struct snap_list_call *q = arg;
	q->list = gateway_snapshot_list(q->g, q->path);
}

/* ---- handlers ---- */

static void do_health(struct nfsgw_api *a, struct reply *r)
{
	struct query_call q = {.g = a->g};
	if (loop_call(a->l, status_on_loop, &q) < 0 || !q.status) {
		reply_err(r, 503, "gateway is not serving");
		return;
	}
	const char *name = json_string_value(json_object_get(q.status, "gateway"));
	reply_json(r, 200, json_pack("{s:s,s:b}", "gateway", name ? name : "", "ok", 1));
	json_decref(q.status);
}

static void do_status(struct nfsgw_api *a, struct reply *r)
{
	struct query_call q = {.g = a->g};
	if (loop_call(a->l, status_on_loop, &q) < 0 || !q.status)
		reply_err(r, 503, "gateway is not serving");
	else
		reply_json(r, 200, q.status);
}

static void do_exports_ls(struct nfsgw_api *a, struct reply *r)
{
	struct query_call q = {.g = a->g};
	if (loop_call(a->l, text_on_loop, &q) < 0 || !q.text) {
		reply_err(r, 503, "gateway is not serving");
		return;
	}
	char err[API_ERR_MAX];
	json_t *arr = exports_json(q.text, err, sizeof(err));
	if (!arr) {
		char msg[API_ERR_MAX + 64];
		snprintf(msg, sizeof(msg), "the gateway's export table does not parse: %s", err);
		reply_err(r, 500, msg);
	} else {
		reply_json(r, 200, json_pack("{s:s,s:o}", "text", q.text, "exports", arr));
	}
	free(q.text);
}

static int run_change(struct nfsgw_api *a, struct change_call *c)
{
	c->g = a->g;
	return loop_call_wait(a->l, change_start, c);
}

static void do_export_add(struct nfsgw_api *a, const struct req *q, struct reply *r)
{
	json_error_t je;
	json_t *b = q->len ? json_loadb(q->body, q->len, 0, &je) : NULL;
	const char *line = json_string_value(json_object_get(b, "line"));
	if (!line) {
		reply_err(r, 400, "body must be {\"line\":\"/path client(options)\"}");
		goto out;
	}
	size_t n = strlen(line);
	while (n && (line[n - 1] == '\n' || line[n - 1] == ' '))
		n--;
	char *one = strndup(line, n);
	if (!one) {
		reply_err(r, 500, "out of memory");
		goto out;
	}
	if (strchr(one, '\n') || n == 0) {
		reply_err(r, 400, "give exactly one exports(5) line");
		goto free_one;
	}
	/* Parse here first: the reply can name the path, and a bad line is refused without a
	 * trip to the loop. */
	struct exports *ex = calloc(1, sizeof(*ex));
	char err[API_ERR_MAX];
	if (!ex) {
		reply_err(r, 500, "out of memory");
		goto free_one;
	}
	err[0] = 0;
	int pr = exports_parse(one, ex, err, sizeof(err));
	if (pr < 0 || ex->n != 1) {
		char msg[API_ERR_MAX + 32];
		const char *why = pr < 0 ? err : "no export in it";
		/* The line number is noise for a single line. */
		if (!strncmp(why, "line 1: ", 8))
			why += 8;
		snprintf(msg, sizeof(msg), "bad export line: %s", why);
		reply_err(r, 400, msg);
		free(ex);
		goto free_one;
	}
	char path[EXPORT_PATH_MAX];
	snprintf(path, sizeof(path), "%s", ex->e[0].path);
	free(ex);
	struct change_call c = {.line = one};
	int res = run_change(a, &c);
	if (res < 0) {
		char msg[API_ERR_MAX + 32];
		snprintf(msg, sizeof(msg), "%s", c.err[0] ? c.err : strerror(-res));
		reply_err(r, errno_status(res), msg);
		goto free_one;
	}
	reply_json(r, 201, json_pack("{s:s,s:b}", "path", path, "added", 1));
free_one:
	free(one);
out:
	json_decref(b);
}

static void do_export_rm(struct nfsgw_api *a, struct MHD_Connection *conn, struct reply *r)
{
	const char *p = MHD_lookup_connection_value(conn, MHD_GET_ARGUMENT_KIND, "path");
	char path[EXPORT_PATH_MAX];
	if (!p || !*p) {
		reply_err(r, 400, "give the export as ?path=/x");
		return;
	}
	if (exports_normalize_path(p, path) < 0) {
		reply_err(r, 400, "export path must be absolute and at most 1023 bytes");
		return;
	}
	struct change_call c = {.path = path};
	int res = run_change(a, &c);
	if (res == -ENOENT) {
		char msg[EXPORT_PATH_MAX + 32];
		snprintf(msg, sizeof(msg), "no export %s", path);
		reply_err(r, 404, msg);
	} else if (res < 0) {
		reply_err(r, errno_status(res), c.err[0] ? c.err : strerror(-res));
	} else {
		reply_json(r, 200, json_pack("{s:s,s:b}", "path", path, "removed", 1));
	}
}

static void snap_reply(struct reply *r, const struct snap_call *c, int res, int ok_status,
		       json_t *ok_body)
{
	if (res < 0) {
		json_decref(ok_body);
		reply_err(r, errno_status(res), c->err[0] ? c->err : strerror(-res));
	} else {
		reply_json(r, ok_status, ok_body);
	}
}

static void do_snapshot_create(struct nfsgw_api *a, const struct req *q, struct reply *r)
{
	json_error_t je;
	json_t *b = q->len ? json_loadb(q->body, q->len, 0, &je) : NULL;
	const char *path = json_string_value(json_object_get(b, "path"));
	const char *name = json_string_value(json_object_get(b, "name"));
	if (!path || !name) {
		reply_err(r, 400, "body must be {\"path\":\"/export/dir\",\"name\":\"NAME\"}");
	} else {
		struct snap_call c = {.g = a->g, .kind = SC_CREATE, .path = path, .name = name};
		int res = loop_call_wait(a->l, snap_start, &c);
		snap_reply(r, &c, res, 201,
			   json_pack("{s:s,s:s,s:b}", "name", name, "path", path, "created", 1));
	}
	json_decref(b);
}

static void do_snapshot_ls(struct nfsgw_api *a, struct MHD_Connection *conn, struct reply *r)
{
	const char *p = MHD_lookup_connection_value(conn, MHD_GET_ARGUMENT_KIND, "path");
	char path[EXPORT_PATH_MAX];
	if (p && *p && exports_normalize_path(p, path) < 0) {
		reply_err(r, 400, "path must be absolute and at most 1023 bytes");
		return;
	}
	struct snap_list_call q = {.g = a->g, .path = p && *p ? path : NULL};
	if (loop_call(a->l, snap_list_on_loop, &q) < 0 || !q.list) {
		reply_err(r, 503, "gateway is not serving");
		return;
	}
	reply_json(r, 200, json_pack("{s:o}", "snapshots", q.list));
}

/* /v1/snapshots/NAME and /v1/snapshots/NAME/revert */
static void do_snapshot_name(struct nfsgw_api *a, const char *method, const char *rest,
			     struct reply *r)
{
	char name[META_NAME_MAX + 1];
	size_t n = strcspn(rest, "/");
	bool revert = !strcmp(rest + n, "/revert");
	if (n == 0 || n > META_NAME_MAX || (rest[n] && !revert)) {
		reply_err(r, 404, "no such route");
		return;
	}
	memcpy(name, rest, n);
	name[n] = 0;
	struct snap_call c = {.g = a->g, .name = name};
	if (revert && !strcmp(method, "POST")) {
		c.kind = SC_REVERT;
		int res = loop_call_wait(a->l, snap_start, &c);
		snap_reply(r, &c, res, 200, json_pack("{s:s,s:b}", "name", name, "reverted", 1));
	} else if (!revert && !strcmp(method, "DELETE")) {
		c.kind = SC_DELETE;
		int res = loop_call_wait(a->l, snap_start, &c);
		snap_reply(r, &c, res, 200, json_pack("{s:s,s:b}", "name", name, "deleted", 1));
	} else {
		reply_err(r, 404, "no such route");
	}
}

static void route(struct nfsgw_api *a, struct MHD_Connection *conn, const char *method,
		  const char *url, const struct req *q, struct reply *r)
{
	bool get = !strcmp(method, "GET");
	if (!strcmp(url, "/v1/health") && get)
		do_health(a, r);
	else if (!strcmp(url, "/v1/gateway") && get)
		do_status(a, r);
	else if (!strcmp(url, "/v1/exports") && get)
		do_exports_ls(a, r);
	else if (!strcmp(url, "/v1/exports") && !strcmp(method, "POST"))
		do_export_add(a, q, r);
	else if (!strcmp(url, "/v1/exports") && !strcmp(method, "DELETE"))
		do_export_rm(a, conn, r);
	else if (!strcmp(url, "/v1/snapshots") && get)
		do_snapshot_ls(a, conn, r);
	else if (!strcmp(url, "/v1/snapshots") && !strcmp(method, "POST"))
		do_snapshot_create(a, q, r);
	else if (!strncmp(url, "/v1/snapshots/", 14))
		do_snapshot_name(a, method, url + 14, r);
	else
		reply_err(r, 404, "no such route");
}

static enum MHD_Result send_reply(struct MHD_Connection *conn, const struct reply *r)
{
	char *s = json_dumps(r->body, JSON_COMPACT | JSON_ENCODE_ANY);
	if (!s)
		return MHD_NO;
	size_t len = strlen(s);
	char *buf = realloc(s, len + 2);
	if (!buf) {
		free(s);
		return MHD_NO;
	}
	buf[len++] = '\n';
	buf[len] = 0;
	struct MHD_Response *resp =
	    MHD_create_response_from_buffer(len, buf, MHD_RESPMEM_MUST_FREE);
	if (!resp) {
		free(buf);
		return MHD_NO;
	}
	MHD_add_response_header(resp, MHD_HTTP_HEADER_CONTENT_TYPE, "application/json");
	enum MHD_Result ret = MHD_queue_response(conn, (unsigned)r->status, resp);
	MHD_destroy_response(resp);
	return ret;
}

static enum MHD_Result handler(void *cls, struct MHD_Connection *conn, const char *url,
			       const char *method, const char *version, const char *upload,
			       size_t *upload_size, void **con_cls)
{
	(void)version;
	struct nfsgw_api *a = cls;
	struct req *q = *con_cls;
	if (!q) {
		q = calloc(1, sizeof(*q));
		if (!q)
			return MHD_NO;
		*con_cls = q;
		return MHD_YES;
	}
	if (*upload_size) {
		if (!q->too_big && q->len + *upload_size <= API_MAX_BODY) {
			char *nb = realloc(q->body, q->len + *upload_size + 1);
			if (!nb)
				return MHD_NO;
			q->body = nb;
			memcpy(q->body + q->len, upload, *upload_size);
			q->len += *upload_size;
			q->body[q->len] = 0;
		} else {
			q->too_big = true;
		}
		*upload_size = 0;
		return MHD_YES;
	}
	struct reply r = {0};
	if (q->too_big)
		reply_err(&r, 400, "request body over 64 KiB");
	else
		route(a, conn, method, url, q, &r);
	if (!r.body)
		reply_err(&r, 500, "out of memory");
	if (strcmp(method, "GET") || r.status >= 400) {
		/* The same line shape as the gateway's own log (main.c). */
		const char *err = json_string_value(json_object_get(r.body, "error"));
		struct timespec ts;
		struct tm tm;
		char when[32];
		clock_gettime(CLOCK_REALTIME, &ts);
		gmtime_r(&ts.tv_sec, &tm);
		strftime(when, sizeof(when), "%Y-%m-%dT%H:%M:%S", &tm);
		fprintf(stderr, "%s.%03ldZ nfsgw api: %s %s -> %d%s%s\n", when,
			ts.tv_nsec / 1000000, method, url, r.status, err ? ": " : "",
			err ? err : "");
	}
	enum MHD_Result ret = send_reply(conn, &r);
	json_decref(r.body);
	return ret;
}

static void completed(void *cls, struct MHD_Connection *conn, void **con_cls,
		      enum MHD_RequestTerminationCode toe)
{
	(void)cls;
	(void)conn;
	(void)toe;
	struct req *q = *con_cls;
	if (q) {
		free(q->body);
		free(q);
		*con_cls = NULL;
	}
}

int nfsgw_api_start(struct gateway *g, struct loop *l, const char *host, uint16_t port,
		    struct nfsgw_api **out)
{
	char ports[8];
	snprintf(ports, sizeof(ports), "%u", port);
	struct addrinfo hints = {
	    .ai_family = AF_INET, .ai_socktype = SOCK_STREAM, .ai_flags = AI_PASSIVE};
	struct addrinfo *ai;
	if (getaddrinfo(host, ports, &hints, &ai)) {
		hints.ai_family = AF_UNSPEC;
		if (getaddrinfo(host, ports, &hints, &ai))
			return -EADDRNOTAVAIL;
	}
	struct nfsgw_api *a = calloc(1, sizeof(*a));
	if (!a) {
		freeaddrinfo(ai);
		return -ENOMEM;
	}
	a->g = g;
	a->l = l;
	unsigned flags =
	    MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_THREAD_PER_CONNECTION | MHD_USE_POLL;
	if (ai->ai_family == AF_INET6)
		flags |= MHD_USE_IPv6;
	a->d = MHD_start_daemon(flags, port, NULL, NULL, handler, a, MHD_OPTION_SOCK_ADDR,
				ai->ai_addr, MHD_OPTION_NOTIFY_COMPLETED, completed, a,
				MHD_OPTION_CONNECTION_TIMEOUT, (unsigned)API_IDLE_TIMEOUT_S,
				MHD_OPTION_CONNECTION_LIMIT, (unsigned)API_MAX_CONNECTIONS,
				MHD_OPTION_END);
	freeaddrinfo(ai);
	if (!a->d) {
		free(a);
		return -EADDRINUSE;
	}
	*out = a;
	return 0;
}

void nfsgw_api_stop(struct nfsgw_api *a)
{
	if (!a)
		return;
	MHD_stop_daemon(a->d);
	free(a);
}

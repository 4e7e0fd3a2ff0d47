/*
 * api: the control API's HTTP side (see api.h for the routes). libmicrohttpd runs a thread
 * per connection, so a handler may block on node work (an engine open, wait-healthy) without
 * stalling the other callers, in particular other nodes asking /v1/attachments. This file
 * only routes, checks input and maps errors to status codes; node_* does the work.
 */
#include "blockd/api.h"

#include <arpa/inet.h>
#include <errno.h>
#include <jansson.h>
#include <microhttpd.h>
#include <netdb.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "blockd/node.h"

#define API_MAX_BODY (1u << 20)
/* A thread per connection: bound them, and drop idle ones. */
#define API_MAX_CONNECTIONS 128
#define API_IDLE_TIMEOUT_S 300
#define API_MAX_SEGS 8
#define API_WAIT_DEFAULT_MS 30000
#define API_WAIT_MAX_MS (3600u * 1000)

struct api {
	struct MHD_Daemon *d;
	struct node *n;
};

/* One request: its body, collected across calls of the access handler. */
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

static void reply_err(struct reply *r, int status, const char *msg, const char *node)
{
	json_t *o = json_pack("{s:s}", "error", msg);
	if (node && *node)
		json_object_set_new(o, "node", json_string(node));
	reply_json(r, status, o);
}

/* A volume held by an engine outside any blockd (e.g. an NFS gateway): 409 naming it. */
static void reply_held(struct reply *r, const struct node_err *e)
{
	json_t *o = json_pack("{s:s, s:s}", "error", e->msg, "holder", e->holder);
	reply_json(r, 409, o);
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
		return 503;
	default:
		return 500;
	}
}

/* The result of a node call: body on success, else the error it filled in. */
static void reply_node(struct reply *r, int res, int ok_status, json_t *body,
		       const struct node_err *e)
{
	if (res == 0) {
		reply_json(r, ok_status, body ? body : json_object());
		return;
	}
	json_decref(body);
	if (e->holder[0]) {
		reply_held(r, e);
		return;
	}
	reply_err(r, e->node[0] ? 409 : errno_status(res), e->msg[0] ? e->msg : strerror(-res),
		  e->node);
}

/* ---- input ---- */

/* Parses the body as a JSON object; an empty body is an empty object. */
static json_t *body_object(const struct req *q, struct reply *r)
{
	if (q->len == 0)
		return json_object();
	json_error_t je;
	json_t *j = json_loadb(q->body, q->len, 0, &je);
	if (!json_is_object(j)) {
		char msg[200];
		if (j)
			snprintf(msg, sizeof(msg), "body must be a JSON object");
		else
			snprintf(msg, sizeof(msg), "bad JSON body: %s", je.text);
		json_decref(j);
		reply_err(r, 400, msg, NULL);
		return NULL;
	}
	return j;
}

/* An integer field in [min, max]; *out untouched and false when absent or bad. */
static bool get_uint(json_t *o, const char *key, uint64_t min, uint64_t max, uint64_t *out,
		     bool *bad)
{
	json_t *v = json_object_get(o, key);
	if (!v)
		return false;
	if (!json_is_integer(v) || json_integer_value(v) < 0 ||
	    (uint64_t)json_integer_value(v) < min || (uint64_t)json_integer_value(v) > max) {
		*bad = true;
		return false;
	}
	*out = (uint64_t)json_integer_value(v);
	return true;
}

static bool name_ok(const char *what, const char *name, struct reply *r)
{
	if (name && store_name_valid(name))
		return true;
	char msg[160];
	snprintf(msg, sizeof(msg), "bad %s name (use 1-63 of A-Z a-z 0-9 . _ -)", what);
	reply_err(r, 400, msg, NULL);
	return false;
}

/* ---- handlers ---- */

static void do_replica_create(struct api *a, const struct req *q, struct reply *r)
{
	json_t *b = body_object(q, r);
	if (!b)
		return;
	const char *vol = json_string_value(json_object_get(b, "volume"));
	json_t *mem = json_object_get(b, "members");
	uint64_t size = 0;
	bool bad = false;
	struct store_member m[STORE_MAX_MEMBERS];
	memset(m, 0, sizeof(m));
	size_t nm = json_array_size(mem);
	if (!name_ok("volume", vol, r))
		goto out;
	if (!get_uint(b, "size", 1, INT64_MAX, &size, &bad)) {
		reply_err(r, 400, "\"size\" must be a positive integer (bytes)", NULL);
		goto out;
	}
	if (!json_is_array(mem) || nm == 0 || nm > STORE_MAX_MEMBERS) {
		reply_err(r, 400, "\"members\" must be an array of 1 to 8 node names", NULL);
		goto out;
	}
	for (size_t i = 0; i < nm; i++) {
		json_t *x = json_array_get(mem, i);
		const char *s = json_is_object(x) ? json_string_value(json_object_get(x, "node"))
						  : json_string_value(x);
		if (!s || strlen(s) >= sizeof(m[i].node)) {
			reply_err(r, 400, "\"members\" must be an array of node names", NULL);
			goto out;
		}
		strcpy(m[i].node, s);
		m[i].in_sync = true;
	}
	struct node_err e = {{0}, {0}, {0}};
	json_t *o = NULL;
	int res = node_replica_create(a->n, vol, size, m, (uint32_t)nm, &o, &e);
	reply_node(r, res, 201, o, &e);
out:
	json_decref(b);
}

static void do_volume_op(struct api *a, const char *vol, enum node_op op,
			 const struct node_op_args *args, struct reply *r)
{
	struct node_err e = {{0}, {0}, {0}};
	json_t *o = NULL;
	int res = node_volume_op(a->n, vol, op, args, &o, &e);
	reply_node(r, res, 200, o, &e);
}

static void do_snapshots(struct api *a, const char *method, const char *vol, const char *snap,
			 const char *action, const struct req *q, struct reply *r)
{
	struct node_op_args args = {.snap = snap};
	if (snap && !name_ok("snapshot", snap, r))
		return;
	if (!snap && !strcmp(method, "GET")) {
		do_volume_op(a, vol, NODE_OP_SNAP_LIST, &args, r);
	} else if (!snap && !strcmp(method, "POST")) {
		json_t *b = body_object(q, r);
		if (!b)
			return;
		args.snap = json_string_value(json_object_get(b, "name"));
		if (name_ok("snapshot", args.snap, r))
			do_volume_op(a, vol, NODE_OP_SNAP_CREATE, &args, r);
		json_decref(b);
	} else if (snap && !action && !strcmp(method, "DELETE")) {
		do_volume_op(a, vol, NODE_OP_SNAP_DELETE, &args, r);
	} else if (snap && action && !strcmp(action, "revert") && !strcmp(method, "POST")) {
		do_volume_op(a, vol, NODE_OP_SNAP_REVERT, &args, r);
	} else if (snap && action && !strcmp(action, "clone") && !strcmp(method, "POST")) {
		json_t *b = body_object(q, r);
		if (!b)
			return;
		args.name = json_string_value(json_object_get(b, "name"));
		if (name_ok("volume", args.name, r))
			do_volume_op(a, vol, NODE_OP_CLONE, &args, r);
		json_decref(b);
	} else {
		reply_err(r, 404, "no such route", NULL);
	}
}

static void do_volume(struct api *a, const char *method, char **seg, int nseg, const struct req *q,
		      bool force, struct reply *r)
{
	/* seg: "volumes", VOL, [sub, [SNAP, [action]]] */
	const char *vol = seg[1];
	if (!name_ok("volume", vol, r))
		return;
	const char *sub = nseg > 2 ? seg[2] : NULL;
	struct node_err e = {{0}, {0}, {0}};
	json_t *o = NULL;
	bool get = !strcmp(method, "GET"), post = !strcmp(method, "POST");
	if (!sub && get) {
		int res = node_volume(a->n, vol, &o, &e);
		reply_node(r, res, 200, o, &e);
	} else if (sub && !strcmp(sub, "snapshots") && nseg <= 5) {
		do_snapshots(a, method, vol, nseg > 3 ? seg[3] : NULL, nseg > 4 ? seg[4] : NULL, q,
			     r);
	} else if (nseg != 3) {
		reply_err(r, 404, "no such route", NULL);
	} else if (post && !strcmp(sub, "attach")) {
		json_t *b = body_object(q, r);
		if (!b)
			return;
		force |= json_is_true(json_object_get(b, "force"));
		json_decref(b);
		int res = node_attach(a->n, vol, force, &o, &e);
		reply_node(r, res, 200, o, &e);
	} else if (post && !strcmp(sub, "detach")) {
		int res = node_detach(a->n, vol, &e);
		reply_node(r, res, 200, json_pack("{s:s, s:b}", "volume", vol, "detached", 1), &e);
	} else if (post && !strcmp(sub, "resize")) {
		json_t *b = body_object(q, r);
		if (!b)
			return;
		struct node_op_args args = {0};
		bool bad = false;
		if (get_uint(b, "size", 1, INT64_MAX, &args.size, &bad))
			do_volume_op(a, vol, NODE_OP_RESIZE, &args, r);
		else
			reply_err(r, 400, "\"size\" must be a positive integer (bytes)", NULL);
		json_decref(b);
	} else if (get && !strcmp(sub, "replicas")) {
		struct node_op_args args = {0};
		do_volume_op(a, vol, NODE_OP_REPLICAS, &args, r);
	} else if (post && !strcmp(sub, "verify")) {
		struct node_op_args args = {0};
		do_volume_op(a, vol, NODE_OP_VERIFY, &args, r);
	} else if (post && !strcmp(sub, "repair")) {
		struct node_op_args args = {0};
		do_volume_op(a, vol, NODE_OP_REPAIR, &args, r);
	} else if (post && !strcmp(sub, "wait-healthy")) {
		json_t *b = body_object(q, r);
		if (!b)
			return;
		uint64_t t = API_WAIT_DEFAULT_MS;
		bool bad = false;
		get_uint(b, "timeout_ms", 0, API_WAIT_MAX_MS, &t, &bad);
		json_decref(b);
		if (bad) {
			reply_err(r, 400, "\"timeout_ms\" must be an integer from 0 to 3600000",
				  NULL);
			return;
		}
		struct node_op_args args = {.timeout_ms = (uint32_t)t};
		do_volume_op(a, vol, NODE_OP_WAIT_HEALTHY, &args, r);
	} else {
		reply_err(r, 404, "no such route", NULL);
	}
}

static void route(struct api *a, struct MHD_Connection *conn, const char *method, char *url,
		  const struct req *q, struct reply *r)
{
	char *seg[API_MAX_SEGS + 1];
	int nseg = 0;
	char *save = NULL;
	for (char *s = strtok_r(url, "/", &save); s; s = strtok_r(NULL, "/", &save)) {
		if (nseg == API_MAX_SEGS + 1) {
			reply_err(r, 404, "no such route", NULL);
			return;
		}
		seg[nseg++] = s;
	}
	if (nseg < 2 || strcmp(seg[0], "v1")) {
		reply_err(r, 404, "no such route", NULL);
		return;
	}
	char **s = seg + 1;
	int ns = nseg - 1;
	bool get = !strcmp(method, "GET");
	const char *f = MHD_lookup_connection_value(conn, MHD_GET_ARGUMENT_KIND, "force");
	bool force = f && strcmp(f, "0") && strcmp(f, "false");
	struct node_err e = {{0}, {0}, {0}};
	json_t *o = NULL;
	int res;
	if (ns == 1 && get && !strcmp(s[0], "health")) {
		reply_json(r, 200, json_pack("{s:s, s:b}", "node", node_self(a->n)->name, "ok", 1));
	} else if (ns == 1 && get && !strcmp(s[0], "node")) {
		res = node_info(a->n, &o, &e);
		reply_node(r, res, 200, o, &e);
	} else if (ns == 1 && get && !strcmp(s[0], "attachments")) {
		res = node_attachments(a->n, &o, &e);
		reply_node(r, res, 200, o, &e);
	} else if (ns == 1 && !strcmp(s[0], "replicas") && (get || !strcmp(method, "POST"))) {
		if (get) {
			res = node_replicas(a->n, &o, &e);
			reply_node(r, res, 200, o, &e);
		} else {
			do_replica_create(a, q, r);
		}
	} else if (ns == 2 && !strcmp(s[0], "replicas") && !strcmp(method, "DELETE")) {
		if (!name_ok("volume", s[1], r))
			return;
		res = node_replica_delete(a->n, s[1], force, &e);
		reply_node(r, res, 200, json_pack("{s:s, s:b}", "volume", s[1], "deleted", 1), &e);
	} else if (ns >= 2 && !strcmp(s[0], "volumes")) {
		do_volume(a, method, s, ns, q, force, r);
	} else {
		reply_err(r, 404, "no such route", NULL);
	}
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
	struct api *a = cls;
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
	if (q->too_big) {
		reply_err(&r, 400, "request body over 1 MiB", NULL);
	} else {
		char *path = strdup(url);
		if (!path)
			return MHD_NO;
		route(a, conn, method, path, q, &r);
		free(path);
	}
	if (!r.body)
		reply_err(&r, 500, "out of memory", NULL);
	if (strcmp(method, "GET") || r.status >= 400) {
		const char *err = json_string_value(json_object_get(r.body, "error"));
		node_log(a->n, "%s %s -> %d%s%s", method, url, r.status, err ? ": " : "",
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

int api_start(struct node *n, const char *host, uint16_t port, struct api **out)
{
	char ports[8];
	snprintf(ports, sizeof(ports), "%u", port);
	/* IPv4 first, like the replica server and every client (see peer.c). */
	struct addrinfo hints = {
	    .ai_family = AF_INET, .ai_socktype = SOCK_STREAM, .ai_flags = AI_PASSIVE};
	struct addrinfo *ai;
	if (getaddrinfo(host, ports, &hints, &ai)) {
		hints.ai_family = AF_UNSPEC;
		if (getaddrinfo(host, ports, &hints, &ai))
			return -EADDRNOTAVAIL;
	}
	struct api *a = calloc(1, sizeof(*a));
	if (!a) {
		freeaddrinfo(ai);
		return -ENOMEM;
	}
	a->n = n;
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

void api_stop(struct api *a)
{
	if (!a)
		return;
	MHD_stop_daemon(a->d);
	free(a);
}

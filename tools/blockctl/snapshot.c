/*
 * snapshot: create / ls / rm / revert / clone, each one volume route (see nodeapi.c for
 * how the node is chosen). A first argument starting with '/' is a path in the NFS gateway's
 * namespace instead (volume names never contain '/'): create / ls / rm / revert then go to
 * the gateway's /v1/snapshots routes (nfsgw/api.h), on [gateway.NAME] (--gateway NAME,
 * default the first one), and snapshot the file or directory with every file under it.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "tools/blockctl/blockctl.h"

#define GW_SNAP_T_MS T_LONG_MS

static void args(const char *what, int argc, char **argv, char **pos, int npos)
{
	const struct optspec specs[] = {{0}};
	char err[256];
	int n = opts_parse(argc, argv, specs, pos, npos, err, sizeof(err));
	if (n < 0)
		usage_die("%s: %s", what, err);
	if (n != npos)
		usage_die("%s: missing argument (see 'blockctl snapshot --help')", what);
	for (int i = 0; i < npos; i++)
		check_name(what, pos[i]);
}

static void format_time(json_t *v, char *buf, size_t cap)
{
	if (json_is_string(v)) {
		snprintf(buf, cap, "%s", json_string_value(v));
		return;
	}
	if (!json_is_integer(v) && !json_is_real(v)) {
		snprintf(buf, cap, "-");
		return;
	}
	time_t t = (time_t)json_number_value(v);
	/* Some nodes may report milliseconds; anything past year 5000 in seconds is that. */
	if (t > 95617584000LL)
		t /= 1000;
	struct tm tm;
	gmtime_r(&t, &tm);
	strftime(buf, cap, "%Y-%m-%d %H:%M:%SZ", &tm);
}

static int snap_ls(struct ctx *c, const char *vol)
{
	json_t *list = vol_call(c, "snapshot ls", vol, "GET", "/snapshots", NULL, T_LONG_MS);
	if (c->json) {
		print_json(list ? list : json_array());
		json_decref(list);
		return 0;
	}
	if (!json_is_array(list) || json_array_size(list) == 0) {
		printf("%s has no snapshots\n", vol);
		json_decref(list);
		return 0;
	}
	struct table t;
	const char *h[] = {"NAME", "PARENT", "CREATED", ">ALLOCATED", "STATE"};
	table_init(&t, 5, h);
	size_t i;
	json_t *s;
	json_array_foreach(list, i, s)
	{
		char created[48], al[16];
		format_time(json_object_get(s, "created"), created, sizeof(created));
		format_size(jint(s, "allocated"), al, sizeof(al));
		const char *state = json_is_true(json_object_get(s, "deleting")) ? "deleting"
				    : json_is_false(json_object_get(s, "in_head_chain"))
					? "off-chain"
					: "ok";
		const char *parent = jstr(s, "parent");
		const char *row[] = {jstr(s, "name"), parent && *parent ? parent : NULL, created,
				     al, state};
		table_add(&t, row);
	}
	table_print(&t, stdout);
	table_free(&t);
	json_decref(list);
	return 0;
}

/* ---- snapshots through the NFS gateway ---- */

static const struct config_gateway *gw_pick(struct ctx *c, const char *name)
{
	ctx_config(c);
	if (c->cfg.ngateways == 0)
		die("%s has no [gateway.NAME] section (start one with 'blockctl cluster up')",
		    c->conf_path);
	if (!name || !*name)
		return &c->cfg.gateways[0];
	const struct config_gateway *g = config_gateway(&c->cfg, name);
	if (!g)
		die("no gateway '%s' in %s", name, c->conf_path);
	return g;
}

/* One gateway request; dies unless the reply is 2xx. Returns the reply (caller frees). */
static json_t *gw_call(const char *what, const struct config_gateway *g, const char *method,
		       const char *path, json_t *body)
{
	struct config_node n = {0};
	snprintf(n.name, sizeof(n.name), "%s", g->name);
	snprintf(n.host, sizeof(n.host), "%s", g->host);
	n.http_port = g->http_port;
	int status = 0;
	json_t *out = NULL;
	int r = node_req(&n, method, path, body, GW_SNAP_T_MS, &status, &out);
	if (r < 0)
		die("%s: gateway %s (%s:%u) does not answer: %s (is it up? see 'blockctl gateway "
		    "status')",
		    what, g->name, g->host, g->http_port, strerror(-r));
	if (status < 200 || status > 299) {
		char buf[32];
		die("%s: %s", what, reply_error(out, status, buf, sizeof(buf)));
	}
	return out;
}

/* Percent-encodes a path for a query string ('/' stays). */
static void query_escape(const char *in, char *out, size_t cap)
{
	static const char hex[] = "0123456789ABCDEF";
	size_t k = 0;
	for (; *in && k + 4 < cap; in++) {
		unsigned char ch = (unsigned char)*in;
		if ((ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') ||
		    (ch >= '0' && ch <= '9') || ch == '/' || ch == '-' || ch == '_' || ch == '.' ||
		    ch == '~') {
			out[k++] = (char)ch;
		} else {
			out[k++] = '%';
			out[k++] = hex[ch >> 4];
			out[k++] = hex[ch & 15];
		}
	}
	out[k] = 0;
}

static json_t *gw_list(const char *what, const struct config_gateway *g, const char *path)
{
	char q[4096], url[4200];
	if (path) {
		query_escape(path, q, sizeof(q));
		snprintf(url, sizeof(url), "/v1/snapshots?path=%s", q);
	} else {
		snprintf(url, sizeof(url), "/v1/snapshots");
	}
	json_t *r = gw_call(what, g, "GET", url, NULL);
	json_t *arr = json_incref(json_object_get(r, "snapshots"));
	json_decref(r);
	if (!json_is_array(arr)) {
		json_decref(arr);
		die("%s: gateway %s: reply without a snapshot list", what, g->name);
	}
	return arr;
}

/* Dies unless snapshot name exists and is of path (or under it). */
static void gw_check_snap(const char *what, const struct config_gateway *g, const char *path,
			  const char *name)
{
	json_t *all = gw_list(what, g, NULL);
	size_t i;
	json_t *s;
	bool found = false;
	json_array_foreach(all, i, s)
	{
		if (!jstr(s, "name") || strcmp(jstr(s, "name"), name) != 0)
			continue;
		found = true;
		const char *p = jstr(s, "path");
		size_t n = strlen(path);
		while (n > 1 && path[n - 1] == '/')
			n--;
		/* A snapshot whose directory is gone has no path: its name alone decides. */
		if (p && strcmp(path, "/") != 0 &&
		    !(strncmp(p, path, n) == 0 && (p[n] == 0 || p[n] == '/')))
			die("%s: snapshot %s is of %s, not of %s", what, name, p, path);
	}
	json_decref(all);
	if (!found)
		die("%s: no snapshot %s on gateway %s", what, name, g->name);
}

static int gw_snap_ls(struct ctx *c, const struct config_gateway *g, const char *path)
{
	json_t *list = gw_list("snapshot ls", g, path);
	if (c->json) {
		print_json(list);
		json_decref(list);
		return 0;
	}
	if (json_array_size(list) == 0) {
		printf("no snapshots of %s\n", path);
		json_decref(list);
		return 0;
	}
	struct table t;
	const char *h[] = {"NAME", "PATH", "CREATED", ">FILES"};
	table_init(&t, 4, h);
	size_t i;
	json_t *s;
	json_array_foreach(list, i, s)
	{
		char created[48], files[24];
		format_time(json_object_get(s, "created"), created, sizeof(created));
		snprintf(files, sizeof(files), "%" PRIu64, jint(s, "files"));
		const char *p = jstr(s, "path");
		const char *row[] = {jstr(s, "name"), p ? p : "(gone)", created, files};
		table_add(&t, row);
	}
	table_print(&t, stdout);
	table_free(&t);
	json_decref(list);
	return 0;
}

static int gw_snapshot(struct ctx *c, const char *cmd, int argc, char **argv)
{
	char what[64];
	snprintf(what, sizeof(what), "snapshot %s", cmd);
	const char *gwname = NULL;
	const struct optspec specs[] = {{"gateway", true, &gwname}, {0}};
	char *pos[2];
	char err[256];
	bool ls = strcmp(cmd, "ls") == 0 || strcmp(cmd, "list") == 0;
	int npos = ls ? 1 : 2;
	int n = opts_parse(argc, argv, specs, pos, npos, err, sizeof(err));
	if (n < 0)
		usage_die("%s: %s", what, err);
	if (n != npos)
		usage_die("%s: give %s (see 'blockctl snapshot --help')", what,
			  ls ? "PATH" : "PATH NAME");
	if (!ls)
		check_name(what, pos[1]);
	const struct config_gateway *g = gw_pick(c, gwname);
	if (ls)
		return gw_snap_ls(c, g, pos[0]);
	char url[256];
	json_t *r = NULL, *body = NULL;
	if (strcmp(cmd, "create") == 0) {
		body = json_pack("{s:s,s:s}", "path", pos[0], "name", pos[1]);
		r = gw_call(what, g, "POST", "/v1/snapshots", body);
		printf("created snapshot %s of %s\n", pos[1], pos[0]);
	} else if (strcmp(cmd, "rm") == 0 || strcmp(cmd, "delete") == 0) {
		gw_check_snap(what, g, pos[0], pos[1]);
		snprintf(url, sizeof(url), "/v1/snapshots/%s", pos[1]);
		r = gw_call(what, g, "DELETE", url, NULL);
		printf("removed snapshot %s of %s\n", pos[1], pos[0]);
	} else if (strcmp(cmd, "revert") == 0) {
		gw_check_snap(what, g, pos[0], pos[1]);
		snprintf(url, sizeof(url), "/v1/snapshots/%s/revert", pos[1]);
		r = gw_call(what, g, "POST", url, NULL);
		printf("reverted %s to snapshot %s\n", pos[0], pos[1]);
	} else {
		usage_die("snapshot: '%s' is not a command for a gateway path (create, ls, rm, "
			  "revert)",
			  cmd);
	}
	if (c->json && r)
		print_json(r);
	json_decref(r);
	json_decref(body);
	return 0;
}

int cmd_snapshot(struct ctx *c, int argc, char **argv)
{
	if (argc > 1 && argv[1][0] == '/')
		return gw_snapshot(c, argv[0], argc - 1, argv + 1);
	const char *cmd = argv[0];
	char *pos[3];
	char what[64], sub[256];
	snprintf(what, sizeof(what), "snapshot %s", cmd);
	json_t *body = NULL, *r = NULL;
	if (strcmp(cmd, "ls") == 0 || strcmp(cmd, "list") == 0) {
		args(what, argc - 1, argv + 1, pos, 1);
		return snap_ls(c, pos[0]);
	} else if (strcmp(cmd, "create") == 0) {
		args(what, argc - 1, argv + 1, pos, 2);
		body = json_pack("{s:s}", "name", pos[1]);
		r = vol_call(c, what, pos[0], "POST", "/snapshots", body, T_LONG_MS);
		printf("created snapshot %s of %s\n", pos[1], pos[0]);
	} else if (strcmp(cmd, "rm") == 0 || strcmp(cmd, "delete") == 0) {
		args(what, argc - 1, argv + 1, pos, 2);
		snprintf(sub, sizeof(sub), "/snapshots/%s", pos[1]);
		r = vol_call(c, what, pos[0], "DELETE", sub, NULL, T_LONG_MS);
		printf("removed snapshot %s of %s\n", pos[1], pos[0]);
	} else if (strcmp(cmd, "revert") == 0) {
		args(what, argc - 1, argv + 1, pos, 2);
		snprintf(sub, sizeof(sub), "/snapshots/%s/revert", pos[1]);
		r = vol_call(c, what, pos[0], "POST", sub, NULL, T_LONG_MS);
		printf("reverted %s to snapshot %s\n", pos[0], pos[1]);
	} else if (strcmp(cmd, "clone") == 0) {
		args(what, argc - 1, argv + 1, pos, 3);
		snprintf(sub, sizeof(sub), "/snapshots/%s/clone", pos[1]);
		body = json_pack("{s:s}", "name", pos[2]);
		r = vol_call(c, what, pos[0], "POST", sub, body, T_LONG_MS);
		printf("cloned snapshot %s of %s into new volume %s\n", pos[1], pos[0], pos[2]);
	} else {
		usage_die("snapshot: unknown command '%s' (create, ls, rm, revert, clone)", cmd);
	}
	json_decref(r);
	json_decref(body);
	return 0;
}

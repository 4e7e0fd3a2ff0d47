/*
 * gateway: blockctl's commands for the NFS gateway's control API (nfsgw/api.h):
 * `gateway status`, `export ls|add|rm`. The gateway is a [gateway.NAME] section of the
 * cluster file (--gateway NAME, default the first one). A gateway that does not answer is
 * one line on stderr and exit 1.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#include "blockd/http_client.h"
#include "tools/blockctl/blockctl.h"

#define GW_T_MS 30000

static const struct config_gateway *pick_gateway(struct ctx *c, const char *name)
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

/* One request; dies with a clear line when the gateway cannot be reached. */
static int gw_req(const char *what, const struct config_gateway *g, const char *method,
		  const char *path, json_t *body, json_t **out)
{
	struct config_node n = {0};
	snprintf(n.name, sizeof(n.name), "%s", g->name);
	snprintf(n.host, sizeof(n.host), "%s", g->host);
	n.http_port = g->http_port;
	int status = 0;
	int r = node_req(&n, method, path, body, GW_T_MS, &status, out);
	if (r < 0)
		die("%s: gateway %s (%s:%u) does not answer: %s (is it up? see 'blockctl cluster "
		    "status')",
		    what, g->name, g->host, g->http_port, strerror(-r));
	return status;
}

static json_t *gw_get(const char *what, const struct config_gateway *g, const char *path)
{
	json_t *j = NULL;
	int st = gw_req(what, g, "GET", path, NULL, &j);
	if (st != 200 || !json_is_object(j)) {
		char buf[32];
		die("%s: gateway %s: %s", what, g->name, reply_error(j, st, buf, sizeof(buf)));
	}
	return j;
}

bool gateway_up(const struct config_gateway *g)
{
	struct config_node n = {0};
	snprintf(n.host, sizeof(n.host), "%s", g->host);
	n.http_port = g->http_port;
	return node_up(&n);
}

static void url_fmt(const struct config_gateway *g, const char *path, bool pm111, char *buf,
		    size_t cap)
{
	if (pm111)
		snprintf(buf, cap, "nfs://%s%s", g->host, path);
	else
		snprintf(buf, cap, "nfs://%s%s?nfsport=%u&mountport=%u", g->host, path, g->nfs_port,
			 g->mount_port);
}

void gateway_url(const struct config_gateway *g, const char *path, char *buf, size_t cap)
{
	url_fmt(g, path, g->portmap_port == 111, buf, cap);
}

/* Parses [--gateway NAME] plus up to maxpos positional args; returns their count. */
static int gw_opts(const char *what, int argc, char **argv, const char **name, char **pos,
		   int maxpos)
{
	const struct optspec specs[] = {{"gateway", true, name}, {0}};
	char err[256];
	int n = opts_parse(argc, argv, specs, pos, maxpos, err, sizeof(err));
	if (n < 0)
		usage_die("%s: %s", what, err);
	return n;
}

static char *join_clients(json_t *arr)
{
	size_t cap = 1;
	size_t i;
	json_t *v;
	json_array_foreach(arr, i, v)
	{
		const char *s = json_is_string(v) ? json_string_value(v) : jstr(v, "spec");
		cap += (s ? strlen(s) : 1) + 1;
	}
	char *out = calloc(1, cap);
	if (!out)
		die("out of memory");
	json_array_foreach(arr, i, v)
	{
		const char *s = json_is_string(v) ? json_string_value(v) : jstr(v, "spec");
		if (i)
			strcat(out, " ");
		strcat(out, s ? s : "?");
	}
	return out;
}

static int gateway_status_cmd(struct ctx *c, int argc, char **argv)
{
	const char *name = NULL;
	char *pos[1];
	gw_opts("gateway status", argc, argv, &name, pos, 0);
	const struct config_gateway *g = pick_gateway(c, name);
	json_t *s = gw_get("gateway status", g, "/v1/gateway");
	if (c->json) {
		print_json(s);
		json_decref(s);
		return 0;
	}
	const char *pm = jstr(s, "portmap");
	bool pm111 =
	    (pm && !strcmp(pm, "own") && g->portmap_port == 111) || (pm && !strcmp(pm, "host"));
	printf("gateway %s on %s: nfs port %" PRIu64 ", mount port %" PRIu64
	       ", portmapper %s, control %s:%u\n",
	       jstr(s, "gateway") ? jstr(s, "gateway") : g->name,
	       jstr(s, "host") ? jstr(s, "host") : g->host, jint(s, "nfs_port"),
	       jint(s, "mount_port"), pm ? pm : "?", g->host, g->http_port);
	/* fsid is a hex string; older answers had a number. */
	char fsid[64];
	json_t *fs = json_object_get(s, "fsid");
	if (json_is_string(fs))
		snprintf(fsid, sizeof(fsid), "%s", json_string_value(fs));
	else
		snprintf(fsid, sizeof(fsid), "%" PRIu64, jint(s, "fsid"));
	printf("state %s, meta volume %s, epoch %" PRIu64 ", fsid %s, %" PRIu64 " files, %" PRIu64
	       " connections\n\n",
	       jstr(s, "state") ? jstr(s, "state") : "?",
	       jstr(s, "meta_volume") ? jstr(s, "meta_volume") : g->meta_volume, jint(s, "epoch"),
	       fsid, jint(s, "files"), jint(s, "connections"));
	struct table t;
	const char *h[] = {"EXPORT", "URL", "CLIENTS"};
	table_init(&t, 3, h);
	size_t i;
	json_t *e;
	json_array_foreach(json_object_get(s, "exports"), i, e)
	{
		const char *path = jstr(e, "path");
		char url[CONFIG_PATH_MAX + 128];
		url_fmt(g, path ? path : "/", pm111, url, sizeof(url));
		char *cl = join_clients(json_object_get(e, "clients"));
		const char *row[] = {path, url, cl};
		table_add(&t, row);
		free(cl);
	}
	table_print(&t, stdout);
	table_free(&t);
	json_t *clients = json_object_get(s, "clients");
	if (json_array_size(clients)) {
		putchar('\n');
		const char *hc[] = {"CLIENT", "MOUNTS"};
		table_init(&t, 2, hc);
		json_array_foreach(clients, i, e)
		{
			char *m = join_clients(json_object_get(e, "mounts"));
			const char *row[] = {jstr(e, "address"), m};
			table_add(&t, row);
			free(m);
		}
		table_print(&t, stdout);
		table_free(&t);
	} else {
		printf("\nno client has the export mounted\n");
	}
	json_decref(s);
	return 0;
}

static int export_ls(struct ctx *c, int argc, char **argv)
{
	const char *name = NULL;
	char *pos[1];
	gw_opts("export ls", argc, argv, &name, pos, 0);
	const struct config_gateway *g = pick_gateway(c, name);
	json_t *s = gw_get("export ls", g, "/v1/exports");
	if (c->json) {
		print_json(s);
		json_decref(s);
		return 0;
	}
	struct table t;
	const char *h[] = {"EXPORT", "CLIENT", "ACCESS", "SQUASH", "URL"};
	table_init(&t, 5, h);
	size_t i, k;
	json_t *e, *cl;
	json_array_foreach(json_object_get(s, "exports"), i, e)
	{
		const char *path = jstr(e, "path");
		char url[CONFIG_PATH_MAX + 128];
		gateway_url(g, path ? path : "/", url, sizeof(url));
		json_array_foreach(json_object_get(e, "clients"), k, cl)
		{
			const char *row[] = {k ? "" : path, jstr(cl, "spec"),
					     json_is_true(json_object_get(cl, "rw")) ? "rw" : "ro",
					     jstr(cl, "squash"), k ? "" : url};
			table_add(&t, row);
		}
	}
	if (t.nrows)
		table_print(&t, stdout);
	else
		printf("no exports\n");
	table_free(&t);
	json_decref(s);
	return 0;
}

static int export_add(struct ctx *c, int argc, char **argv)
{
	const char *name = NULL;
	char *pos[16];
	int n = gw_opts("export add", argc, argv, &name, pos, 16);
	if (n == 0)
		usage_die("export add: give one exports(5) line, quoted, e.g. "
			  "'/isos 127.0.0.0/8(ro)'");
	/* An unquoted line arrives as several words: put it back together. */
	char line[8192] = "";
	for (int i = 0; i < n; i++) {
		if (strlen(line) + strlen(pos[i]) + 2 > sizeof(line))
			usage_die("export add: line too long");
		if (i)
			strcat(line, " ");
		strcat(line, pos[i]);
	}
	const struct config_gateway *g = pick_gateway(c, name);
	json_t *body = json_pack("{s:s}", "line", line);
	json_t *j = NULL;
	int st = gw_req("export add", g, "POST", "/v1/exports", body, &j);
	json_decref(body);
	if (st != 201 && st != 200) {
		char buf[32];
		die("export add: %s", reply_error(j, st, buf, sizeof(buf)));
	}
	const char *path = jstr(j, "path");
	char url[CONFIG_PATH_MAX + 128];
	gateway_url(g, path ? path : "/", url, sizeof(url));
	if (c->json)
		print_json(j);
	else
		printf("export %s added: %s\n", path ? path : "?", url);
	json_decref(j);
	return 0;
}

/* path, percent-encoded for a query string. */
static void query_escape(const char *s, char *out, size_t cap)
{
	static const char hex[] = "0123456789ABCDEF";
	size_t o = 0;
	for (; *s && o + 4 < cap; s++) {
		unsigned char ch = (unsigned char)*s;
		if ((ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') ||
		    (ch >= '0' && ch <= '9') || strchr("/._-~", ch)) {
			out[o++] = (char)ch;
		} else {
			out[o++] = '%';
			out[o++] = hex[ch >> 4];
			out[o++] = hex[ch & 15];
		}
	}
	out[o] = 0;
}

static int export_rm(struct ctx *c, int argc, char **argv)
{
	const char *name = NULL;
	char *pos[1];
	int n = gw_opts("export rm", argc, argv, &name, pos, 1);
	if (n != 1)
		usage_die("export rm: give the export's path, e.g. /isos");
	if (pos[0][0] != '/')
		usage_die("export rm: '%s' is not an absolute path", pos[0]);
	const struct config_gateway *g = pick_gateway(c, name);
	char esc[3 * 1024 + 16], path[3 * 1024 + 64];
	if (strlen(pos[0]) > 1023)
		usage_die("export rm: path too long");
	query_escape(pos[0], esc, sizeof(esc));
	snprintf(path, sizeof(path), "/v1/exports?path=%s", esc);
	json_t *j = NULL;
	int st = gw_req("export rm", g, "DELETE", path, NULL, &j);
	if (st != 200) {
		char buf[32];
		die("export rm: %s", reply_error(j, st, buf, sizeof(buf)));
	}
	if (c->json)
		print_json(j);
	else
		printf("export %s removed\n", jstr(j, "path") ? jstr(j, "path") : pos[0]);
	json_decref(j);
	return 0;
}

int cmd_gateway(struct ctx *c, int argc, char **argv)
{
	if (strcmp(argv[0], "status") == 0)
		return gateway_status_cmd(c, argc - 1, argv + 1);
	usage_die("gateway: unknown command '%s' (status)", argv[0]);
}

int cmd_export(struct ctx *c, int argc, char **argv)
{
	if (strcmp(argv[0], "ls") == 0)
		return export_ls(c, argc - 1, argv + 1);
	if (strcmp(argv[0], "add") == 0)
		return export_add(c, argc - 1, argv + 1);
	if (strcmp(argv[0], "rm") == 0)
		return export_rm(c, argc - 1, argv + 1);
	usage_die("export: unknown command '%s' (ls, add, rm)", argv[0]);
}

/*
 * nodeapi: blockctl's view of the cluster, built from each node's control API, and the
 * routing of volume calls to the node that owns the volume's engine.
 */
#include "tools/blockctl/blockctl.h"

#include <errno.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#include "blockd/http_client.h"
#include "blockd/peer.h"
#include "replica/store.h"

void ctx_config(struct ctx *c)
{
	if (c->cfg_loaded)
		return;
	if (!c->conf_path)
		die("no cluster file: use -c FILE or set BLOCKD_CONF (see 'blockctl cluster up')");
	char err[512] = "";
	int r = config_load(c->conf_path, &c->cfg, err, sizeof(err));
	if (r < 0)
		die("%s: %s", c->conf_path, err[0] ? err : strerror(-r));
	c->cfg_loaded = true;
}

int node_req(const struct config_node *n, const char *method, const char *path, json_t *body,
	     int timeout_ms, int *status, json_t **out)
{
	if (out)
		*out = NULL;
	char *b = NULL;
	if (body) {
		b = json_dumps(body, JSON_COMPACT);
		if (!b)
			return -ENOMEM;
	}
	struct http_resp resp;
	int r = http_request(n->host, n->http_port, method, path, b, timeout_ms, &resp);
	free(b);
	if (r < 0)
		return r;
	*status = resp.status;
	if (out && resp.len > 0)
		*out = json_loadb(resp.body, resp.len, JSON_DECODE_ANY, NULL);
	http_resp_free(&resp);
	return 0;
}

const char *reply_error(json_t *reply, int status, char *buf, size_t cap)
{
	const char *e = reply ? jstr(reply, "error") : NULL;
	if (e && *e)
		return e;
	snprintf(buf, cap, "HTTP %d", status);
	return buf;
}

bool node_up(const struct config_node *n)
{
	int status;
	json_t *j;
	if (node_req(n, "GET", "/v1/health", NULL, T_HEALTH_MS, &status, &j) < 0)
		return false;
	json_decref(j);
	return status == 200;
}

void check_name(const char *what, const char *name)
{
	if (!store_name_valid(name))
		usage_die("%s: bad name '%s' (use 1-63 of A-Z a-z 0-9 . _ -, not starting with . "
			  "or -)",
			  what, name);
}

uint64_t jint(json_t *o, const char *key)
{
	json_t *v = json_object_get(o, key);
	if (json_is_integer(v) && json_integer_value(v) >= 0)
		return (uint64_t)json_integer_value(v);
	if (json_is_real(v) && json_real_value(v) >= 0)
		return (uint64_t)json_real_value(v);
	return 0;
}

const char *jstr(json_t *o, const char *key)
{
	return json_string_value(json_object_get(o, key));
}

void print_json(json_t *j)
{
	json_dumpf(j, stdout, JSON_INDENT(2) | JSON_ENCODE_ANY);
	fputc('\n', stdout);
}

static json_t *take_array(struct peer_get *p)
{
	if (p->err == 0 && p->status == 200 && json_is_array(p->reply))
		return p->reply;
	json_decref(p->reply);
	return NULL;
}

/* Asks every node at once, so a dead node costs one timeout, not one per node and call. */
void view_load(struct ctx *c, struct view *v)
{
	ctx_config(c);
	memset(v, 0, sizeof(*v));
	v->n = c->cfg.nnodes;
	struct peer_get q[2 * CONFIG_MAX_NODES] = {0};
	for (unsigned i = 0; i < v->n; i++) {
		const struct config_node *n = &c->cfg.nodes[i];
		q[2 * i] = (struct peer_get){.host = n->host, .port = n->http_port,
					     .path = "/v1/replicas"};
		q[2 * i + 1] = (struct peer_get){.host = n->host, .port = n->http_port,
						 .path = "/v1/attachments"};
	}
	peer_get_all(q, 2 * v->n, T_LIST_MS);
	unsigned nup = 0;
	for (unsigned i = 0; i < v->n; i++) {
		struct nodeview *nv = &v->nodes[i];
		nv->n = &c->cfg.nodes[i];
		nv->replicas = take_array(&q[2 * i]);
		nv->attachments = take_array(&q[2 * i + 1]);
		nv->up = nv->replicas && nv->attachments;
		if (!nv->up) {
			json_decref(nv->replicas);
			json_decref(nv->attachments);
			nv->replicas = nv->attachments = NULL;
		} else {
			nup++;
		}
	}
	if (nup == 0)
		die("no node of %s answers (is the cluster up? see 'blockctl cluster status')",
		    c->conf_path);
}

void view_load_volume(struct ctx *c, const char *what, const char *vol, struct view *v,
		      struct volinfo *vi)
{
	view_load(c, v);
	if (view_volume(v, vol, vi) < 0)
		die("%s: %s: no such volume (on any node that is up)", what, vol);
}

void view_free(struct view *v)
{
	for (unsigned i = 0; i < v->n; i++) {
		json_decref(v->nodes[i].replicas);
		json_decref(v->nodes[i].attachments);
	}
	memset(v, 0, sizeof(*v));
}

static json_t *find_by_volume(json_t *arr, const char *name)
{
	size_t i;
	json_t *e;
	json_array_foreach(arr, i, e)
	{
		const char *vn = jstr(e, "volume");
		if (vn && strcmp(vn, name) == 0)
			return e;
	}
	return NULL;
}

int view_volume(const struct view *v, const char *name, struct volinfo *out)
{
	memset(out, 0, sizeof(*out));
	json_t *best = NULL;
	uint64_t best_gen = 0;
	for (unsigned i = 0; i < v->n; i++) {
		const struct nodeview *nv = &v->nodes[i];
		if (!nv->up)
			continue;
		json_t *r = find_by_volume(nv->replicas, name);
		if (r) {
			out->holders[out->nholders++] = nv->n;
			uint64_t gen = jint(r, "members_gen");
			if (!best || gen > best_gen) {
				best = r;
				best_gen = gen;
			}
			if (jint(r, "allocated") > out->allocated)
				out->allocated = jint(r, "allocated");
			if (jint(r, "epoch") > out->epoch)
				out->epoch = jint(r, "epoch");
		}
		json_t *a = find_by_volume(nv->attachments, name);
		if (a) {
			out->attached = nv->n;
			out->nbd = jstr(a, "nbd");
			if (jint(a, "epoch") > out->epoch)
				out->epoch = jint(a, "epoch");
		}
	}
	if (!best)
		return -ENOENT;
	out->name = jstr(best, "volume");
	out->size = jint(best, "size");
	size_t i;
	json_t *m;
	json_array_foreach(json_object_get(best, "members"), i, m)
	{
		if (out->nmembers >= CONFIG_MAX_NODES)
			break;
		const char *node = json_is_string(m) ? json_string_value(m) : jstr(m, "node");
		if (!node)
			continue;
		json_t *ins = json_object_get(m, "in_sync");
		out->member_in_sync[out->nmembers] = !json_is_false(ins);
		out->members[out->nmembers++] = node;
	}
	return 0;
}

static int cmp_str(const void *a, const void *b)
{
	return strcmp(*(const char *const *)a, *(const char *const *)b);
}

json_t *view_volume_names(const struct view *v)
{
	size_t cap = 0, n = 0;
	const char **names = NULL;
	for (unsigned i = 0; i < v->n; i++) {
		size_t k;
		json_t *e;
		json_array_foreach(v->nodes[i].replicas, k, e)
		{
			const char *vn = jstr(e, "volume");
			if (!vn)
				continue;
			if (n == cap) {
				cap = cap ? cap * 2 : 16;
				const char **nn = realloc(names, cap * sizeof(*names));
				if (!nn)
					die("out of memory");
				names = nn;
			}
			names[n++] = vn;
		}
	}
	if (n)
		qsort(names, n, sizeof(*names), cmp_str);
	json_t *out = json_array();
	for (size_t i = 0; i < n; i++)
		if (i == 0 || strcmp(names[i], names[i - 1]) != 0)
			json_array_append_new(out, json_string(names[i]));
	free(names);
	return out;
}

static const struct nodeview *view_node(const struct view *v, const char *name)
{
	for (unsigned i = 0; i < v->n; i++)
		if (strcmp(v->nodes[i].n->name, name) == 0)
			return &v->nodes[i];
	return NULL;
}

const struct config_node *vol_route(struct ctx *c, const struct view *v, const char *what,
				    const char *vol)
{
	(void)c;
	struct volinfo vi;
	if (view_volume(v, vol, &vi) < 0)
		die("%s: %s: no such volume (on any node that is up)", what, vol);
	if (vi.attached)
		return vi.attached;
	for (unsigned i = 0; i < vi.nmembers; i++) {
		const struct nodeview *nv = view_node(v, vi.members[i]);
		if (nv && nv->up)
			return nv->n;
	}
	die("%s: %s: none of its member nodes is up", what, vol);
}

int vol_call_status(struct ctx *c, const char *what, const char *vol, const char *method,
		    const char *sub, json_t *body, int timeout_ms, json_t **out)
{
	struct view v;
	view_load(c, &v);
	const struct config_node *n = vol_route(c, &v, what, vol);
	char path[512];
	snprintf(path, sizeof(path), "/v1/volumes/%s%s", vol, sub ? sub : "");
	int status = 0;
	for (int attempt = 0;; attempt++) {
		int r = node_req(n, method, path, body, timeout_ms, &status, out);
		if (r < 0)
			die("%s: %s: %s (%s:%u): %s", what, vol, n->name, n->host, n->http_port,
			    strerror(-r));
		const char *other = *out ? jstr(*out, "node") : NULL;
		if (status != 409 || attempt > 0 || !other || strcmp(other, n->name) == 0)
			break;
		const struct config_node *nn = config_node(&c->cfg, other);
		if (!nn)
			break;
		json_decref(*out);
		*out = NULL;
		n = nn;
	}
	view_free(&v);
	return status;
}

json_t *vol_call(struct ctx *c, const char *what, const char *vol, const char *method,
		 const char *sub, json_t *body, int timeout_ms)
{
	json_t *out = NULL;
	int status = vol_call_status(c, what, vol, method, sub, body, timeout_ms, &out);
	if (status < 200 || status > 299) {
		char buf[32];
		const char *e = reply_error(out, status, buf, sizeof(buf));
		size_t n = strlen(vol);
		/* The node names the volume in most of its errors already. */
		if (strncmp(e, vol, n) == 0 && e[n] == ':')
			die("%s: %s", what, e);
		die("%s: %s: %s", what, vol, e);
	}
	return out;
}

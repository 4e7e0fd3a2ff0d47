/*
 * node_query: the node's status calls (node, replicas, attachments, one volume) and the
 * replica create/delete calls, plus the questions asked of the other nodes' APIs.
 */
#include "blockd/node_priv.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "blockd/nbd_server.h"
#include "blockd/peer.h"
#include "replica/proto.h"
#include "replica/server.h"

void node_set_err(struct node_err *e, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(e->msg, sizeof(e->msg), fmt, ap);
	va_end(ap);
}

json_t *node_replica_json(const struct store_info *i)
{
	json_t *m = json_array();
	for (uint32_t k = 0; k < i->nmembers && k < STORE_MAX_MEMBERS; k++)
		json_array_append_new(m, json_pack("{s:s, s:b}", "node", i->members[k].node,
						   "in_sync", i->members[k].in_sync));
	return json_pack("{s:s, s:I, s:I, s:I, s:o, s:I, s:b, s:I}", "volume", i->name, "size",
			 (json_int_t)i->size, "epoch", (json_int_t)i->epoch, "members_gen",
			 (json_int_t)i->members_gen, "members", m, "allocated",
			 (json_int_t)i->allocated, "clean", i->clean, "snapshots",
			 (json_int_t)i->nsnapshots);
}

/* "holder" (the label of the engine that has vol open, per this node's replica) into o. */
static void add_holder(struct node *n, const char *vol, json_t *o)
{
	char label[PROTO_LABEL_MAX];
	uint64_t epoch;
	if (o && replica_server_holder(n->rs, vol, label, &epoch) == 1)
		json_object_set_new(o, "holder", json_string(label));
}

/* ---- other nodes ---- */

/* GETs path from every other node; p must have room for cfg.nnodes entries. */
static unsigned ask_others(struct node *n, const char *path, struct peer_get *p, const char **names)
{
	unsigned k = 0;
	for (unsigned i = 0; i < n->cfg.nnodes; i++) {
		const struct config_node *o = &n->cfg.nodes[i];
		if (o == n->self)
			continue;
		p[k].host = o->host;
		p[k].port = o->http_port;
		p[k].method = NULL;
		p[k].path = path;
		names[k++] = o->name;
	}
	peer_get_all(p, k, NODE_PEER_TIMEOUT_MS);
	return k;
}

static json_t *find_volume(json_t *arr, const char *vol)
{
	size_t i;
	json_t *x;
	json_array_foreach(arr, i, x)
	{
		const char *name = json_string_value(json_object_get(x, "volume"));
		if (name && !strcmp(name, vol))
			return x;
	}
	return NULL;
}

void node_find_attached(struct node *n, const char *vol, char out[CONFIG_NAME_MAX])
{
	struct peer_get p[CONFIG_MAX_NODES];
	const char *names[CONFIG_MAX_NODES];
	unsigned k = ask_others(n, "/v1/attachments", p, names);
	out[0] = 0;
	for (unsigned i = 0; i < k; i++) {
		if (!out[0] && !p[i].err && p[i].status == 200 && find_volume(p[i].reply, vol))
			snprintf(out, CONFIG_NAME_MAX, "%s", names[i]);
		json_decref(p[i].reply);
	}
}

int node_peer_post(struct node *n, const char *node, const char *path, int timeout_ms)
{
	const struct config_node *o = config_node(&n->cfg, node);
	if (!o)
		return -ENOENT;
	struct peer_get p = {.host = o->host, .port = o->http_port, .method = "POST", .path = path};
	peer_get_all(&p, 1, timeout_ms);
	json_decref(p.reply);
	if (p.err)
		return p.err;
	return p.status >= 200 && p.status < 300 ? 0 : -EPROTO;
}

/* ---- node, replicas, attachments ---- */

struct q {
	struct node *n;
	const char *vol;
	int res;
	json_t *out;
	struct node_err *e;
};

static void info_on_loop(void *arg)
{
	struct q *q = arg;
	struct node *n = q->n;
	char **names = NULL;
	uint32_t nrep = 0, natt = 0;
	if (replica_server_list(n->rs, &names, &nrep) == 0) {
		for (uint32_t i = 0; i < nrep; i++)
			free(names[i]);
		free(names);
	}
	for (struct vol *v = n->vols, *next; v; v = next) {
		next = v->next; /* dropping a fenced volume may free it */
		natt += v->attached && v->st == VOL_OPEN && !node_vol_drop_fenced(v);
	}
	const struct config_node *me = n->self;
	q->out = json_pack("{s:s, s:s, s:i, s:i, s:i, s:I, s:I, s:I}", "node", me->name, "host",
			   me->host, "http_port", me->http_port, "replica_port", me->replica_port,
			   "nbd_port", me->nbd_port, "replicas", (json_int_t)nrep, "attached",
			   (json_int_t)natt, "uptime_s",
			   (json_int_t)((loop_now_ms() - n->start_ms) / 1000));
}

static int run(struct node *n, void (*fn)(void *), struct q *q)
{
	int r = loop_call(n->loop, fn, q);
	if (!r)
		r = q->res;
	if (!r && !q->out) {
		node_set_err(q->e, "out of memory");
		r = -ENOMEM;
	}
	if (r) {
		json_decref(q->out);
		q->out = NULL;
		if (!q->e->msg[0])
			node_set_err(q->e, "%s", strerror(-r));
	}
	return r;
}

int node_info(struct node *n, json_t **out, struct node_err *e)
{
	struct q q = {.n = n, .e = e};
	int r = run(n, info_on_loop, &q);
	*out = q.out;
	return r;
}

static void replicas_on_loop(void *arg)
{
	struct q *q = arg;
	char **names = NULL;
	uint32_t cnt = 0;
	q->res = replica_server_list(q->n->rs, &names, &cnt);
	if (q->res)
		return;
	q->out = json_array();
	for (uint32_t i = 0; i < cnt; i++) {
		struct store *st;
		struct store_info info;
		int r = replica_server_store(q->n->rs, names[i], &st);
		if (!r)
			r = store_get_info(st, &info);
		if (r)
			node_log(q->n, "replica %s unreadable: %s", names[i], strerror(-r));
		else {
			json_t *o = node_replica_json(&info);
			add_holder(q->n, names[i], o);
			json_array_append_new(q->out, o);
		}
		free(names[i]);
	}
	free(names);
}

int node_replicas(struct node *n, json_t **out, struct node_err *e)
{
	struct q q = {.n = n, .e = e};
	int r = run(n, replicas_on_loop, &q);
	*out = q.out;
	return r;
}

static void attachments_on_loop(void *arg)
{
	struct q *q = arg;
	struct node *n = q->n;
	q->out = json_array();
	for (struct vol *v = n->vols, *next; v; v = next) {
		next = v->next; /* dropping a fenced volume may free it */
		/* A fenced engine is not attached any more, whatever it last believed. */
		if (!v->attached || v->st != VOL_OPEN || node_vol_drop_fenced(v))
			continue;
		char url[256];
		snprintf(url, sizeof(url), "nbd://%s:%u/%s", n->self->host, n->self->nbd_port,
			 v->name);
		json_array_append_new(
		    q->out, json_pack("{s:s, s:s, s:I, s:I}", "volume", v->name, "nbd", url,
				      "epoch", (json_int_t)engine_epoch(v->e), "clients",
				      (json_int_t)nbd_server_clients(n->nbd, v->name)));
	}
}

int node_attachments(struct node *n, json_t **out, struct node_err *e)
{
	struct q q = {.n = n, .e = e};
	int r = run(n, attachments_on_loop, &q);
	*out = q.out;
	return r;
}

/* ---- replica create / delete ---- */

struct create {
	struct q q;
	uint64_t size;
	const struct store_member *members;
	uint32_t nmembers;
};

static void create_on_loop(void *arg)
{
	struct create *c = arg;
	struct q *q = &c->q;
	int r = replica_server_create(q->n->rs, q->vol, c->size, c->members, c->nmembers);
	if (r == -EEXIST)
		node_set_err(q->e, "a replica of %s already exists on this node", q->vol);
	else if (r)
		node_set_err(q->e, "creating replica %s: %s", q->vol, strerror(-r));
	struct store *st;
	struct store_info info;
	if (!r)
		r = replica_server_store(q->n->rs, q->vol, &st);
	if (!r)
		r = store_get_info(st, &info);
	q->res = r;
	if (r)
		return;
	q->out = node_replica_json(&info);
	node_log(q->n, "created replica %s (%llu bytes, %u members)", q->vol,
		 (unsigned long long)c->size, c->nmembers);
}

int node_replica_create(struct node *n, const char *vol, uint64_t size,
			const struct store_member *members, uint32_t nmembers, json_t **out,
			struct node_err *e)
{
	*out = NULL;
	if (!store_name_valid(vol)) {
		node_set_err(e, "bad volume name '%s'", vol);
		return -EINVAL;
	}
	if (size == 0 || size % STORE_BLOCK) {
		node_set_err(e, "size must be a positive multiple of %u bytes", STORE_BLOCK);
		return -EINVAL;
	}
	if (nmembers == 0 || nmembers > STORE_MAX_MEMBERS) {
		node_set_err(e, "a volume has 1 to %d members", STORE_MAX_MEMBERS);
		return -EINVAL;
	}
	bool me = false;
	for (uint32_t i = 0; i < nmembers; i++) {
		if (!config_node(&n->cfg, members[i].node)) {
			node_set_err(e, "member '%s' is not a node of this cluster",
				     members[i].node);
			return -EINVAL;
		}
		for (uint32_t j = 0; j < i; j++) {
			if (!strcmp(members[i].node, members[j].node)) {
				node_set_err(e, "member '%s' listed twice", members[i].node);
				return -EINVAL;
			}
		}
		me |= !strcmp(members[i].node, n->self->name);
	}
	if (!me) {
		node_set_err(e, "this node (%s) is not among the members", n->self->name);
		return -EINVAL;
	}
	struct create c = {.q = {.n = n, .vol = vol, .e = e},
			   .size = size,
			   .members = members,
			   .nmembers = nmembers};
	int r = run(n, create_on_loop, &c.q);
	*out = c.q.out;
	return r;
}

struct del {
	struct q q;
	int force;
};

static void delete_on_loop(void *arg)
{
	struct del *d = arg;
	struct q *q = &d->q;
	if (node_vol_find(q->n, q->vol)) {
		node_set_err(q->e, "%s has an engine on this node (detach it first)", q->vol);
		q->res = -EBUSY;
		return;
	}
	int r = replica_server_destroy(q->n->rs, q->vol, d->force);
	if (r == -ENOENT)
		node_set_err(q->e, "no replica of %s on this node", q->vol);
	else if (r == -EBUSY)
		node_set_err(q->e, "replica %s is open by an engine (force=1 to delete anyway)",
			     q->vol);
	else if (r)
		node_set_err(q->e, "deleting replica %s: %s", q->vol, strerror(-r));
	else
		node_log(q->n, "deleted replica %s%s", q->vol, d->force ? " (forced)" : "");
	q->res = r;
	q->out = json_pack("{s:s}", "volume", q->vol);
}

int node_replica_delete(struct node *n, const char *vol, int force, struct node_err *e)
{
	if (!store_name_valid(vol)) {
		node_set_err(e, "bad volume name '%s'", vol);
		return -EINVAL;
	}
	struct del d = {.q = {.n = n, .vol = vol, .e = e}, .force = force};
	int r = run(n, delete_on_loop, &d.q);
	json_decref(d.q.out);
	return r;
}

/* ---- one volume ---- */

struct volq {
	struct node *n;
	const char *vol;
	bool here;  /* attached on this node */
	bool local; /* this node has a replica */
	uint64_t size, epoch;
	char nbd[256];
	struct store_info info;
	char holder[PROTO_LABEL_MAX];
};

static void volume_on_loop(void *arg)
{
	struct volq *v = arg;
	struct vol *x = node_vol_find(v->n, v->vol);
	if (x && x->attached && x->st == VOL_OPEN && !node_vol_drop_fenced(x)) {
		v->here = true;
		v->size = engine_size(x->e);
		v->epoch = engine_epoch(x->e);
		snprintf(v->nbd, sizeof(v->nbd), "nbd://%s:%u/%s", v->n->self->host,
			 v->n->self->nbd_port, v->vol);
	}
	char **names = NULL;
	uint32_t cnt = 0;
	if (replica_server_list(v->n->rs, &names, &cnt))
		return;
	for (uint32_t i = 0; i < cnt; i++) {
		if (!strcmp(names[i], v->vol)) {
			struct store *st;
			v->local = !replica_server_store(v->n->rs, v->vol, &st) &&
				   !store_get_info(st, &v->info);
			uint64_t ep;
			if (replica_server_holder(v->n->rs, v->vol, v->holder, &ep) != 1)
				v->holder[0] = 0;
		}
		free(names[i]);
	}
	free(names);
}

/* The best replica description the other nodes have of vol (highest members_gen). */
static json_t *remote_replica(json_t *const *replies, unsigned k, const char *vol)
{
	json_t *best = NULL;
	for (unsigned i = 0; i < k; i++) {
		json_t *r = find_volume(replies[i], vol);
		if (r && (!best || json_integer_value(json_object_get(r, "members_gen")) >
				       json_integer_value(json_object_get(best, "members_gen"))))
			best = r;
	}
	return best ? json_incref(best) : NULL;
}

int node_volume(struct node *n, const char *vol, json_t **out, struct node_err *e)
{
	*out = NULL;
	if (!store_name_valid(vol)) {
		node_set_err(e, "bad volume name '%s'", vol);
		return -EINVAL;
	}
	struct volq v = {.n = n, .vol = vol};
	int r = loop_call(n->loop, volume_on_loop, &v);
	if (r) {
		node_set_err(e, "%s", strerror(-r));
		return r;
	}
	json_t *attached = v.here ? json_string(n->self->name) : json_null();
	json_t *rep = v.local ? node_replica_json(&v.info) : NULL;
	if (rep && v.holder[0])
		json_object_set_new(rep, "holder", json_string(v.holder));
	if (!v.here || !v.local) {
		/* Both questions in one round: one timeout's worth of waiting at most. */
		struct peer_get p[2 * CONFIG_MAX_NODES];
		const char *names[CONFIG_MAX_NODES];
		unsigned k = 0;
		for (unsigned i = 0; i < n->cfg.nnodes; i++) {
			const struct config_node *o = &n->cfg.nodes[i];
			if (o != n->self)
				names[k++] = o->name;
		}
		unsigned np = 0;
		for (unsigned pass = 0; pass < 2; pass++) {
			if ((pass == 0 && v.here) || (pass == 1 && v.local))
				continue;
			for (unsigned i = 0; i < n->cfg.nnodes; i++) {
				const struct config_node *o = &n->cfg.nodes[i];
				if (o == n->self)
					continue;
				p[np].host = o->host;
				p[np].port = o->http_port;
				p[np].method = NULL;
				p[np++].path = pass == 0 ? "/v1/attachments" : "/v1/replicas";
			}
		}
		peer_get_all(p, np, NODE_PEER_TIMEOUT_MS);
		json_t *replies[CONFIG_MAX_NODES];
		struct peer_get *att = v.here ? NULL : p;
		struct peer_get *reps = v.local ? NULL : (v.here ? p : p + k);
		for (unsigned i = 0; i < k; i++) {
			if (att && json_is_null(attached) && !att[i].err && att[i].status == 200 &&
			    find_volume(att[i].reply, vol)) {
				json_decref(attached);
				attached = json_string(names[i]);
				const char *url = json_string_value(
				    json_object_get(find_volume(att[i].reply, vol), "nbd"));
				if (url)
					snprintf(v.nbd, sizeof(v.nbd), "%s", url);
			}
			replies[i] =
			    reps && !reps[i].err && reps[i].status == 200 ? reps[i].reply : NULL;
		}
		if (!rep)
			rep = remote_replica(replies, k, vol);
		for (unsigned i = 0; i < np; i++)
			json_decref(p[i].reply);
	}
	if (!rep) {
		json_decref(attached);
		node_set_err(e, "%s: no such volume (no replica on any node that answered)", vol);
		return -ENOENT;
	}
	json_t *o = json_object();
	json_object_set_new(o, "volume", json_string(vol));
	json_object_set(o, "size", json_object_get(rep, "size"));
	json_object_set(o, "epoch", json_object_get(rep, "epoch"));
	if (v.here) {
		json_object_set_new(o, "size", json_integer((json_int_t)v.size));
		json_object_set_new(o, "epoch", json_integer((json_int_t)v.epoch));
	}
	if (v.nbd[0])
		json_object_set_new(o, "nbd", json_string(v.nbd));
	json_object_set_new(o, "attached", attached);
	json_object_set(o, "members", json_object_get(rep, "members"));
	json_object_set(o, "members_gen", json_object_get(rep, "members_gen"));
	json_object_set(o, "allocated", json_object_get(rep, "allocated"));
	json_object_set(o, "snapshots", json_object_get(rep, "snapshots"));
	if (json_is_string(json_object_get(rep, "holder")))
		json_object_set(o, "holder", json_object_get(rep, "holder"));
	json_decref(rep);
	*out = o;
	return 0;
}

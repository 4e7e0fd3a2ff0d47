/*
 * volume: create / ls / info / rm / resize / attach / detach. Placement and the cluster
 * view come from asking every node (no catalogue); import/export live in transfer.c.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#include "tools/blockctl/blockctl.h"

static int parse_args(const char *what, int argc, char **argv, const struct optspec *specs,
		      char **pos, int npos)
{
	char err[256];
	int n = opts_parse(argc, argv, specs, pos, npos, err, sizeof(err));
	if (n < 0)
		usage_die("%s: %s", what, err);
	if (n != npos)
		usage_die("%s: missing argument (see 'blockctl volume --help')", what);
	return n;
}

static uint64_t size_arg(const char *what, const char *s)
{
	if (!s)
		usage_die("%s: --size SIZE is required", what);
	uint64_t v;
	int r = parse_size(s, &v);
	if (r == -ERANGE)
		usage_die("%s: size '%s' is too large", what, s);
	if (r < 0)
		usage_die("%s: bad size '%s' (use e.g. 512M, 10G, 1T)", what, s);
	if (v == 0)
		usage_die("%s: size must not be 0", what);
	return v;
}

struct cand {
	const struct config_node *n;
	unsigned nreplicas;
	unsigned order;
};

static int cand_cmp(const void *a, const void *b)
{
	const struct cand *x = a, *y = b;
	if (x->nreplicas != y->nreplicas)
		return x->nreplicas < y->nreplicas ? -1 : 1;
	return x->order < y->order ? -1 : (x->order > y->order);
}

/* --nodes a,b,c: the operator's placement, in that order; every node must exist and be up. */
static unsigned pick_nodes(struct ctx *c, const struct view *v, const char *what,
			   const char *list, uint64_t want, struct cand *out)
{
	char buf[CONFIG_MAX_NODES * CONFIG_NAME_MAX];
	unsigned n = 0;
	if (strlen(list) >= sizeof(buf))
		usage_die("%s: --nodes list too long", what);
	strcpy(buf, list);
	for (char *save = NULL, *tok = strtok_r(buf, ",", &save); tok;
	     tok = strtok_r(NULL, ",", &save)) {
		unsigned i = 0;
		while (i < v->n && strcmp(v->nodes[i].n->name, tok) != 0)
			i++;
		if (i == v->n)
			usage_die("%s: --nodes: no node '%s' in %s", what, tok, c->conf_path);
		for (unsigned k = 0; k < n; k++)
			if (out[k].n == v->nodes[i].n)
				usage_die("%s: --nodes: '%s' given twice", what, tok);
		if (!v->nodes[i].up)
			die("%s: --nodes: %s is down", what, tok);
		if (n == CONFIG_MAX_NODES)
			usage_die("%s: --nodes: too many nodes", what);
		out[n++] = (struct cand){v->nodes[i].n, 0, i};
	}
	if (n == 0)
		usage_die("%s: --nodes: empty list", what);
	if (want && want != n)
		usage_die("%s: --replicas %" PRIu64 " but --nodes names %u nodes", what, want, n);
	return n;
}

static int vol_create(struct ctx *c, int argc, char **argv)
{
	const char *what = "volume create";
	const char *o_size = NULL, *o_rep = NULL, *o_nodes = NULL;
	const struct optspec specs[] = {
	    {"size", true, &o_size}, {"replicas", true, &o_rep}, {"nodes", true, &o_nodes}, {0}};
	char *pos[1];
	parse_args(what, argc, argv, specs, pos, 1);
	const char *name = pos[0];
	check_name(what, name);
	uint64_t size = size_arg(what, o_size);
	ctx_config(c);
	uint64_t nrep = c->cfg.replicas ? c->cfg.replicas : 1;
	if (o_rep && (parse_uint(o_rep, CONFIG_MAX_NODES, &nrep) < 0 || nrep == 0))
		usage_die("%s: bad --replicas '%s'", what, o_rep);
	if (!o_nodes && nrep > c->cfg.nnodes)
		die("%s: %s: %" PRIu64 " replicas wanted but the cluster has only %u nodes", what,
		    name, nrep, c->cfg.nnodes);

	struct view v;
	view_load(c, &v);
	struct volinfo vi;
	if (view_volume(&v, name, &vi) == 0)
		die("%s: %s: volume already exists", what, name);
	struct cand cands[CONFIG_MAX_NODES];
	unsigned ncand = 0;
	for (unsigned i = 0; i < v.n; i++) {
		if (!v.nodes[i].up)
			continue;
		cands[ncand] =
		    (struct cand){v.nodes[i].n, (unsigned)json_array_size(v.nodes[i].replicas), i};
		ncand++;
	}
	if (o_nodes)
		ncand = pick_nodes(c, &v, what, o_nodes, o_rep ? nrep : 0, cands);
	if (o_nodes)
		nrep = ncand;
	if (ncand < nrep)
		die("%s: %s: %" PRIu64 " replicas wanted but only %u nodes are up", what, name,
		    nrep, ncand);
	if (!o_nodes)
		qsort(cands, ncand, sizeof(cands[0]), cand_cmp);

	json_t *members = json_array();
	for (unsigned i = 0; i < nrep; i++)
		json_array_append_new(members, json_string(cands[i].n->name));
	json_t *body = json_pack("{s:s,s:I,s:O}", "volume", name, "size", (json_int_t)size,
				 "members", members);
	unsigned created = 0;
	char errbuf[512] = "";
	for (; created < nrep; created++) {
		const struct config_node *n = cands[created].n;
		int status = 0;
		json_t *reply = NULL;
		int r = node_req(n, "POST", "/v1/replicas", body, T_DEFAULT_MS, &status, &reply);
		if (r < 0)
			snprintf(errbuf, sizeof(errbuf), "%s: %s", n->name, strerror(-r));
		else if (status < 200 || status > 299) {
			char b[32];
			snprintf(errbuf, sizeof(errbuf), "%s: %s", n->name,
				 reply_error(reply, status, b, sizeof(b)));
		}
		json_decref(reply);
		if (errbuf[0])
			break;
	}
	if (errbuf[0]) {
		char path[256];
		snprintf(path, sizeof(path), "/v1/replicas/%s?force=1", name);
		for (unsigned i = 0; i < created; i++) {
			int status = 0;
			int r =
			    node_req(cands[i].n, "DELETE", path, NULL, T_DEFAULT_MS, &status, NULL);
			if (r < 0 || status < 200 || status > 299)
				warnx_("%s: %s: could not remove the replica created on %s", what,
				       name, cands[i].n->name);
		}
		die("%s: %s: %s", what, name, errbuf);
	}
	char sz[16];
	format_size(size, sz, sizeof(sz));
	printf("created %s (%s) on", name, sz);
	for (unsigned i = 0; i < nrep; i++)
		printf("%s%s", i ? "," : " ", cands[i].n->name);
	printf("\n");
	json_decref(body);
	json_decref(members);
	view_free(&v);
	return 0;
}

static bool node_is_up(const struct view *v, const char *name)
{
	for (unsigned i = 0; i < v->n; i++)
		if (strcmp(v->nodes[i].n->name, name) == 0)
			return v->nodes[i].up;
	return false;
}

static json_t *vol_json(const struct view *v, const struct volinfo *vi)
{
	json_t *members = json_array();
	for (unsigned i = 0; i < vi->nmembers; i++)
		json_array_append_new(members, json_pack("{s:s,s:b,s:b}", "node", vi->members[i],
							 "in_sync", vi->member_in_sync[i], "up",
							 node_is_up(v, vi->members[i])));
	return json_pack("{s:s,s:s,s:I,s:i,s:o,s:o,s:o,s:I,s:I}", "name", vi->name, "volume",
			 vi->name, "size", (json_int_t)vi->size, "replicas", (int)vi->nmembers,
			 "members", members, "attached",
			 vi->attached ? json_string(vi->attached->name) : json_null(), "nbd",
			 vi->nbd ? json_string(vi->nbd) : json_null(), "allocated",
			 (json_int_t)vi->allocated, "epoch", (json_int_t)vi->epoch);
}

static void members_str(const struct view *v, const struct volinfo *vi, char *buf, size_t cap)
{
	size_t off = 0;
	buf[0] = 0;
	for (unsigned i = 0; i < vi->nmembers && off < cap; i++) {
		bool up = node_is_up(v, vi->members[i]);
		int n = snprintf(buf + off, cap - off, "%s%s%s", i ? "," : "", vi->members[i],
				 !up ? "(down)" : (!vi->member_in_sync[i] ? "(stale)" : ""));
		if (n < 0)
			break;
		off += (size_t)n;
	}
}

static int vol_ls(struct ctx *c, int argc, char **argv)
{
	const struct optspec specs[] = {{0}};
	char *pos[1];
	parse_args("volume ls", argc, argv, specs, pos, 0);
	struct view v;
	view_load(c, &v);
	unsigned down = 0;
	for (unsigned i = 0; i < v.n; i++)
		down += !v.nodes[i].up;
	json_t *names = view_volume_names(&v);
	json_t *arr = json_array();
	struct table t;
	const char *h[] = {"NAME", ">SIZE", ">REPLICAS", "NODES", "ATTACHED", ">ALLOCATED"};
	table_init(&t, 6, h);
	size_t i;
	json_t *nm;
	json_array_foreach(names, i, nm)
	{
		struct volinfo vi;
		if (view_volume(&v, json_string_value(nm), &vi) < 0)
			continue;
		json_array_append_new(arr, vol_json(&v, &vi));
		char sz[16], al[16], reps[16], nodes[512];
		format_size(vi.size, sz, sizeof(sz));
		format_size(vi.allocated, al, sizeof(al));
		snprintf(reps, sizeof(reps), "%u", vi.nmembers);
		members_str(&v, &vi, nodes, sizeof(nodes));
		const char *row[] = {
		    vi.name, sz, reps, nodes, vi.attached ? vi.attached->name : NULL, al};
		table_add(&t, row);
	}
	if (c->json)
		print_json(arr);
	else if (t.nrows == 0)
		printf("no volumes\n");
	else
		table_print(&t, stdout);
	if (down && !c->json)
		fprintf(stderr, "note: %u node(s) down; their replicas are not listed\n", down);
	table_free(&t);
	json_decref(arr);
	json_decref(names);
	view_free(&v);
	return 0;
}

static int vol_info(struct ctx *c, int argc, char **argv)
{
	const char *what = "volume info";
	const struct optspec specs[] = {{0}};
	char *pos[1];
	parse_args(what, argc, argv, specs, pos, 1);
	check_name(what, pos[0]);
	struct view v;
	struct volinfo vi;
	view_load_volume(c, what, pos[0], &v, &vi);
	json_t *o = vol_json(&v, &vi);
	/* Snapshots live in the replicas' metadata; the merged /v1/replicas entry has the
	 * count. The engine's own view (GET /v1/volumes/VOL) would open a temporary engine,
	 * which a read-only command should not do. */
	uint64_t nsnap = 0;
	for (unsigned i = 0; i < v.n; i++) {
		size_t k;
		json_t *e;
		json_array_foreach(v.nodes[i].replicas, k, e)
		{
			const char *vn = jstr(e, "volume");
			json_t *s = json_object_get(e, "snapshots");
			uint64_t ns = json_is_array(s) ? json_array_size(s) : jint(e, "snapshots");
			if (vn && strcmp(vn, pos[0]) == 0 && ns > nsnap)
				nsnap = ns;
		}
	}
	json_object_set_new(o, "snapshots", json_integer((json_int_t)nsnap));
	if (c->json) {
		print_json(o);
	} else {
		char sz[16], al[16], nodes[512];
		format_size(vi.size, sz, sizeof(sz));
		format_size(vi.allocated, al, sizeof(al));
		members_str(&v, &vi, nodes, sizeof(nodes));
		printf("volume:    %s\n", vi.name);
		printf("size:      %s (%" PRIu64 " bytes)\n", sz, vi.size);
		printf("allocated: %s\n", al);
		printf("replicas:  %u (%s)\n", vi.nmembers, nodes);
		printf("epoch:     %" PRIu64 "\n", vi.epoch);
		printf("attached:  %s\n", vi.attached ? vi.attached->name : "no");
		if (vi.nbd)
			printf("nbd:       %s\n", vi.nbd);
		printf("snapshots: %" PRIu64 "\n", nsnap);
	}
	json_decref(o);
	view_free(&v);
	return 0;
}

static int vol_rm(struct ctx *c, int argc, char **argv)
{
	const char *what = "volume rm";
	const struct optspec specs[] = {{0}};
	char *pos[1];
	parse_args(what, argc, argv, specs, pos, 1);
	const char *name = pos[0];
	check_name(what, name);
	struct view v;
	struct volinfo vi;
	view_load_volume(c, what, name, &v, &vi);
	if (vi.attached)
		die("%s: %s: attached on %s; run 'blockctl volume detach %s' first", what, name,
		    vi.attached->name, name);
	char path[256];
	snprintf(path, sizeof(path), "/v1/replicas/%s", name);
	int rc = 0;
	for (unsigned i = 0; i < vi.nholders; i++) {
		int status = 0;
		json_t *reply = NULL;
		int r =
		    node_req(vi.holders[i], "DELETE", path, NULL, T_DEFAULT_MS, &status, &reply);
		char b[32];
		if (r < 0)
			warnx_("%s: %s: %s: %s", what, name, vi.holders[i]->name, strerror(-r));
		else if (status < 200 || status > 299)
			warnx_("%s: %s: %s: %s", what, name, vi.holders[i]->name,
			       reply_error(reply, status, b, sizeof(b)));
		if (r < 0 || status < 200 || status > 299)
			rc = 1;
		json_decref(reply);
	}
	for (unsigned i = 0; i < vi.nmembers; i++)
		if (!node_is_up(&v, vi.members[i])) {
			warnx_("%s: %s: %s is down; its replica was not removed", what, name,
			       vi.members[i]);
			rc = 1;
		}
	if (rc == 0)
		printf("removed %s\n", name);
	view_free(&v);
	return rc;
}

static int vol_resize(struct ctx *c, int argc, char **argv)
{
	const char *what = "volume resize";
	const char *o_size = NULL;
	const struct optspec specs[] = {{"size", true, &o_size}, {0}};
	char *pos[1];
	parse_args(what, argc, argv, specs, pos, 1);
	check_name(what, pos[0]);
	uint64_t size = size_arg(what, o_size);
	json_t *body = json_pack("{s:I}", "size", (json_int_t)size);
	json_t *r = vol_call(c, what, pos[0], "POST", "/resize", body, T_LONG_MS);
	char sz[16];
	format_size(size, sz, sizeof(sz));
	printf("resized %s to %s\n", pos[0], sz);
	json_decref(r);
	json_decref(body);
	return 0;
}

json_t *volume_attach(struct ctx *c, const char *what, const char *vol, const char *node_name,
		      bool force, const struct config_node **on)
{
	ctx_config(c);
	struct view v;
	struct volinfo vi;
	view_load_volume(c, what, vol, &v, &vi);
	const struct config_node *n = NULL;
	if (node_name) {
		n = config_node(&c->cfg, node_name);
		if (!n)
			die("%s: %s: no node named '%s' in %s", what, vol, node_name, c->conf_path);
	} else {
		for (unsigned i = 0; i < vi.nmembers && !n; i++)
			if (node_is_up(&v, vi.members[i]))
				n = config_node(&c->cfg, vi.members[i]);
		if (!n)
			die("%s: %s: none of its member nodes is up", what, vol);
	}
	if (vi.attached && vi.attached != n && !force)
		die("%s: %s: already attached on %s (detach it first, or --force to take it over)",
		    what, vol, vi.attached->name);
	if (vi.attached == n && vi.nbd) {
		json_t *reply = json_pack("{s:s,s:s,s:I}", "volume", vol, "nbd", vi.nbd, "epoch",
					  (json_int_t)vi.epoch);
		*on = n;
		view_free(&v);
		return reply;
	}
	char path[256];
	snprintf(path, sizeof(path), "/v1/volumes/%s/attach%s", vol, force ? "?force=1" : "");
	int status = 0;
	json_t *reply = NULL;
	int r = node_req(n, "POST", path, NULL, T_LONG_MS, &status, &reply);
	if (r < 0)
		die("%s: %s: %s: %s", what, vol, n->name, strerror(-r));
	if (status < 200 || status > 299) {
		char b[32];
		die("%s: %s: %s: %s", what, vol, n->name, reply_error(reply, status, b, sizeof(b)));
	}
	if (!jstr(reply, "nbd"))
		die("%s: %s: %s answered without an nbd URL", what, vol, n->name);
	*on = n;
	view_free(&v);
	return reply;
}

void volume_detach_on(const char *what, const char *vol, const struct config_node *n)
{
	char path[256];
	snprintf(path, sizeof(path), "/v1/volumes/%s/detach", vol);
	int status = 0;
	json_t *reply = NULL;
	int r = node_req(n, "POST", path, NULL, T_LONG_MS, &status, &reply);
	if (r < 0)
		die("%s: %s: %s: %s", what, vol, n->name, strerror(-r));
	if (status < 200 || status > 299) {
		char b[32];
		die("%s: %s: %s: %s", what, vol, n->name, reply_error(reply, status, b, sizeof(b)));
	}
	json_decref(reply);
}

static int vol_attach(struct ctx *c, int argc, char **argv)
{
	const char *what = "volume attach";
	const char *o_node = NULL, *o_force = NULL;
	const struct optspec specs[] = {{"node", true, &o_node}, {"force", false, &o_force}, {0}};
	char *pos[1];
	parse_args(what, argc, argv, specs, pos, 1);
	check_name(what, pos[0]);
	const struct config_node *n;
	json_t *reply = volume_attach(c, what, pos[0], o_node, o_force != NULL, &n);
	if (c->json) {
		json_object_set_new(reply, "node", json_string(n->name));
		print_json(reply);
	} else {
		printf("%s\n", jstr(reply, "nbd"));
	}
	json_decref(reply);
	return 0;
}

static int vol_detach(struct ctx *c, int argc, char **argv)
{
	const char *what = "volume detach";
	const struct optspec specs[] = {{0}};
	char *pos[1];
	parse_args(what, argc, argv, specs, pos, 1);
	check_name(what, pos[0]);
	struct view v;
	struct volinfo vi;
	view_load_volume(c, what, pos[0], &v, &vi);
	if (!vi.attached) {
		/* Attached on a node that is down looks the same as not attached. */
		for (unsigned i = 0; i < vi.nmembers; i++)
			if (!node_is_up(&v, vi.members[i]))
				die("%s: %s: not attached on any node that is up (%s is down)",
				    what, pos[0], vi.members[i]);
		die("%s: %s: not attached", what, pos[0]);
	}
	volume_detach_on(what, pos[0], vi.attached);
	printf("detached %s from %s\n", pos[0], vi.attached->name);
	view_free(&v);
	return 0;
}

int cmd_volume(struct ctx *c, int argc, char **argv)
{
	static const struct {
		const char *name;
		int (*fn)(struct ctx *, int, char **);
	} cmds[] = {
	    {"create", vol_create},
	    {"ls", vol_ls},
	    {"list", vol_ls},
	    {"info", vol_info},
	    {"rm", vol_rm},
	    {"delete", vol_rm},
	    {"resize", vol_resize},
	    {"attach", vol_attach},
	    {"detach", vol_detach},
	    {"import", cmd_volume_import},
	    {"export", cmd_volume_export},
	};
	for (size_t i = 0; i < sizeof(cmds) / sizeof(cmds[0]); i++)
		if (strcmp(cmds[i].name, argv[0]) == 0)
			return cmds[i].fn(c, argc - 1, argv + 1);
	usage_die("volume: unknown command '%s' (create, ls, info, rm, resize, attach, detach, "
		  "import, export)",
		  argv[0]);
}

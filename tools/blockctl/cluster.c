/*
 * cluster: a local test cluster of blockd processes, plus its NFS gateway (cluster_gw.c),
 * described by DIR/cluster.conf. `up` writes the file once and (re)starts only the daemons
 * that are down, so running it again keeps data; `down` stops the gateways, then the nodes;
 * `status` and `node ls` report them. Processes and pid files: proc.h.
 */
#include <errno.h>
#include <inttypes.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "tools/blockctl/blockctl.h"
#include "tools/blockctl/proc.h"

#define UP_TIMEOUT_MS 20000

static void pid_path(const struct config_node *n, char *buf, size_t cap)
{
	snprintf(buf, cap, "%s/blockd.pid", n->data);
}

static void log_path(const struct config_node *n, char *buf, size_t cap)
{
	snprintf(buf, cap, "%s/blockd.log", n->data);
}

/* The pid of the running node, or 0. */
static pid_t node_pid(const struct config_node *n)
{
	char pf[CONFIG_PATH_MAX + 16];
	pid_path(n, pf, sizeof(pf));
	return pidfile_pid(pf);
}

static pid_t start_node(const char *bin, const char *conf, const struct config_node *n)
{
	char pf[CONFIG_PATH_MAX + 16], lf[CONFIG_PATH_MAX + 16];
	pid_path(n, pf, sizeof(pf));
	log_path(n, lf, sizeof(lf));
	int r = mkdir_p(n->data);
	if (r < 0)
		die("cluster up: %s: %s", n->data, strerror(-r));
	unlink(pf); /* stale: the node is not running */
	char *args[] = {(char *)bin,	 "-c",	      (char *)conf, "--node",
			(char *)n->name, "--pidfile", pf,	    NULL};
	return spawn(args, lf);
}

static void print_log_tail(const struct config_node *n)
{
	char lf[CONFIG_PATH_MAX + 16];
	log_path(n, lf, sizeof(lf));
	print_file_tail(lf);
}

static void make_config(struct config *cfg, const char *dir, unsigned nodes, unsigned base,
			unsigned replicas)
{
	memset(cfg, 0, sizeof(*cfg));
	snprintf(cfg->dir, sizeof(cfg->dir), "%s", dir);
	cfg->replicas = replicas;
	cfg->io_timeout_ms = 1000;
	cfg->nnodes = nodes;
	for (unsigned i = 1; i <= nodes; i++) {
		struct config_node *n = &cfg->nodes[i - 1];
		snprintf(n->name, sizeof(n->name), "node%u", i);
		snprintf(n->host, sizeof(n->host), "127.0.0.1");
		n->http_port = (uint16_t)(base + 10 * i + 1);
		n->replica_port = (uint16_t)(base + 10 * i + 2);
		n->nbd_port = (uint16_t)(base + 10 * i + 3);
		if (snprintf(n->data, sizeof(n->data), "%s/node%u", dir, i) >= (int)sizeof(n->data))
			die("cluster up: %s: path too long", dir);
	}
}

static void print_nodes(const struct config *cfg, const pid_t *pids)
{
	struct table t;
	const char *h[] = {"NODE", "HTTP", "REPLICA", "NBD", ">PID", "DATA"};
	table_init(&t, 6, h);
	for (unsigned i = 0; i < cfg->nnodes; i++) {
		const struct config_node *n = &cfg->nodes[i];
		char http[96], rep[16], nbd[16], pid[16];
		snprintf(http, sizeof(http), "%s:%u", n->host, n->http_port);
		snprintf(rep, sizeof(rep), "%u", n->replica_port);
		snprintf(nbd, sizeof(nbd), "%u", n->nbd_port);
		snprintf(pid, sizeof(pid), "%d", (int)pids[i]);
		const char *row[] = {n->name, http, rep, nbd, pid, n->data};
		table_add(&t, row);
	}
	table_print(&t, stdout);
	table_free(&t);
}

static int cluster_up(struct ctx *c, int argc, char **argv)
{
	const char *o_nodes = NULL, *o_dir = NULL, *o_port = NULL, *o_rep = NULL;
	const char *o_gwhost = NULL, *o_nogw = NULL;
	const struct optspec specs[] = {{"nodes", true, &o_nodes},
					{"dir", true, &o_dir},
					{"base-port", true, &o_port},
					{"replicas", true, &o_rep},
					{"gateway-host", true, &o_gwhost},
					{"no-gateway", false, &o_nogw},
					{0}};
	char err[256], *pos[1];
	if (opts_parse(argc, argv, specs, pos, 0, err, sizeof(err)) < 0)
		usage_die("cluster up: %s", err);
	if (!o_dir)
		usage_die("cluster up: --dir DIR is required");
	uint64_t nodes = 0, base = 7400, replicas = 0;
	if (o_nodes && (parse_uint(o_nodes, CONFIG_MAX_NODES, &nodes) < 0 || nodes == 0))
		usage_die("cluster up: --nodes must be 1..%d, not '%s'", CONFIG_MAX_NODES, o_nodes);
	if (o_port && (parse_uint(o_port, 65535, &base) < 0 || base == 0))
		usage_die("cluster up: bad --base-port '%s'", o_port);
	if (o_rep && (parse_uint(o_rep, CONFIG_MAX_NODES, &replicas) < 0 || replicas == 0))
		usage_die("cluster up: bad --replicas '%s'", o_rep);
	if (o_gwhost && o_nogw)
		usage_die("cluster up: --gateway-host and --no-gateway exclude each other");
	if (o_gwhost && !*o_gwhost)
		usage_die("cluster up: empty --gateway-host");

	char conf[PATH_MAX + 16];
	snprintf(conf, sizeof(conf), "%s/cluster.conf", o_dir);
	bool exists = access(conf, F_OK) == 0;
	if (!exists) {
		if (!o_nodes)
			usage_die("cluster up: --nodes N is required for a new cluster");
		if (base + 10 * nodes + 3 > 65535)
			usage_die("cluster up: --base-port %" PRIu64 " leaves no room for %" PRIu64
				  " nodes",
				  base, nodes);
		if (!o_rep)
			replicas = nodes < 3 ? nodes : 3;
		if (replicas > nodes)
			usage_die("cluster up: --replicas %" PRIu64
				  " is more than --nodes %" PRIu64,
				  replicas, nodes);
	}
	int r = mkdir_p(o_dir);
	if (r < 0)
		die("cluster up: %s: %s", o_dir, strerror(-r));
	char dir[PATH_MAX];
	if (!realpath(o_dir, dir))
		die("cluster up: %s: %s", o_dir, strerror(errno));
	snprintf(conf, sizeof(conf), "%s/cluster.conf", dir);
	c->conf_path = conf;

	if (exists) {
		ctx_config(c);
		if (o_nodes && nodes != c->cfg.nnodes)
			die("cluster up: %s has %u nodes, not %" PRIu64
			    " (omit --nodes to reuse it, or use another --dir)",
			    conf, c->cfg.nnodes, nodes);
		printf("reusing %s\n", conf);
		if (o_gwhost)
			warnx_("cluster up: --gateway-host ignored: %s already names its gateways",
			       conf);
	} else {
		make_config(&c->cfg, dir, (unsigned)nodes, (unsigned)base, (unsigned)replicas);
		if (!o_nogw)
			cluster_make_gateway(&c->cfg, dir, (unsigned)base,
					     o_gwhost ? o_gwhost : "127.0.0.1");
		r = config_save(conf, &c->cfg);
		if (r < 0)
			die("cluster up: %s: %s", conf, strerror(-r));
		c->cfg_loaded = true;
	}

	const struct config *cfg = &c->cfg;
	char bin[PATH_MAX];
	pid_t pids[CONFIG_MAX_NODES] = {0};
	bool started[CONFIG_MAX_NODES] = {0}, ok[CONFIG_MAX_NODES] = {0};
	unsigned nstart = 0;
	for (unsigned i = 0; i < cfg->nnodes; i++) {
		pids[i] = node_pid(&cfg->nodes[i]);
		if (pids[i])
			continue;
		if (nstart++ == 0)
			find_bin("blockd", "BLOCKD_BIN", false, bin, sizeof(bin));
		pids[i] = start_node(bin, conf, &cfg->nodes[i]);
		started[i] = true;
		printf("%s: started (pid %d)\n", cfg->nodes[i].name, (int)pids[i]);
	}

	int64_t deadline = mono_ms() + UP_TIMEOUT_MS;
	for (;;) {
		unsigned pending = 0;
		for (unsigned i = 0; i < cfg->nnodes; i++) {
			if (ok[i])
				continue;
			const struct config_node *n = &cfg->nodes[i];
			int st;
			if (started[i] && waitpid(pids[i], &st, WNOHANG) == pids[i]) {
				started[i] = false;
				/* Exit 0 means it daemonized: keep polling its health. */
				if (!WIFEXITED(st) || WEXITSTATUS(st) != 0) {
					if (WIFEXITED(st))
						warnx_(
						    "cluster up: %s exited with status %d before "
						    "answering /v1/health",
						    n->name, WEXITSTATUS(st));
					else
						warnx_(
						    "cluster up: %s was killed by signal %d before "
						    "answering /v1/health",
						    n->name, WTERMSIG(st));
					print_log_tail(n);
					exit(1);
				}
			}
			/* The pid file is written once the node listens; requiring it keeps
			 * another cluster's daemon on the same port from passing for this one. */
			ok[i] = node_pid(n) != 0 && node_up(n);
			pending += !ok[i];
		}
		if (!pending)
			break;
		if (mono_ms() > deadline) {
			for (unsigned i = 0; i < cfg->nnodes; i++) {
				if (ok[i])
					continue;
				warnx_(
				    "cluster up: %s (%s:%u) did not answer /v1/health within %d s",
				    cfg->nodes[i].name, cfg->nodes[i].host, cfg->nodes[i].http_port,
				    UP_TIMEOUT_MS / 1000);
				print_log_tail(&cfg->nodes[i]);
			}
			exit(1);
		}
		sleep_ms(100);
	}
	/* A node may rewrite its pid file after daemonizing: report what it says now. */
	for (unsigned i = 0; i < cfg->nnodes; i++) {
		pid_t p = node_pid(&cfg->nodes[i]);
		if (p)
			pids[i] = p;
	}
	print_nodes(cfg, pids);
	if (!o_nogw)
		cluster_gateways_up(cfg, conf);
	printf("\ncluster of %u node%s is up in %s; to use it:\n"
	       "  export BLOCKD_CONF=%s\n"
	       "  blockctl volume create vol1 --size 1G\n"
	       "  blockctl volume attach vol1\n",
	       cfg->nnodes, cfg->nnodes == 1 ? "" : "s", cfg->dir, conf);
	if (!o_nogw && cfg->ngateways)
		printf("  blockctl gateway status; blockctl export ls\n");
	printf("stop it with 'blockctl cluster down'\n");
	return 0;
}

/* --dir DIR as an alternative to -c / $BLOCKD_CONF. */
static void dir_option(struct ctx *c, const char *what, int argc, char **argv, char *conf,
		       size_t cap)
{
	const char *o_dir = NULL;
	const struct optspec specs[] = {{"dir", true, &o_dir}, {0}};
	char err[256], *pos[1];
	if (opts_parse(argc, argv, specs, pos, 0, err, sizeof(err)) < 0)
		usage_die("%s: %s", what, err);
	if (o_dir) {
		snprintf(conf, cap, "%s/cluster.conf", o_dir);
		c->conf_path = conf;
	}
	ctx_config(c);
}

static int cluster_status(struct ctx *c, int argc, char **argv)
{
	char conf[PATH_MAX + 16];
	dir_option(c, "cluster status", argc, argv, conf, sizeof(conf));
	json_t *arr = json_array();
	struct table t;
	const char *h[] = {"NODE", "ADDRESS", ">PID", "STATE"};
	table_init(&t, 4, h);
	unsigned nup = 0;
	for (unsigned i = 0; i < c->cfg.nnodes; i++) {
		const struct config_node *n = &c->cfg.nodes[i];
		pid_t pid = node_pid(n);
		bool up = node_up(n);
		nup += up;
		char addr[96], ps[16];
		snprintf(addr, sizeof(addr), "%s:%u", n->host, n->http_port);
		snprintf(ps, sizeof(ps), "%d", (int)pid);
		/* Something answers but this cluster started nothing there: likely another
		 * cluster on the same ports. */
		const char *state = !up ? "down" : pid ? "up" : "up (no pid file: another daemon?)";
		const char *row[] = {n->name, addr, pid ? ps : NULL, state};
		table_add(&t, row);
		json_array_append_new(arr, json_pack("{s:s,s:s,s:i,s:i,s:i,s:o,s:b,s:s}", "node",
						     n->name, "host", n->host, "http_port",
						     n->http_port, "replica_port", n->replica_port,
						     "nbd_port", n->nbd_port, "pid",
						     pid ? json_integer(pid) : json_null(), "up",
						     up, "data", n->data));
	}
	json_t *gws = json_array();
	struct table tg;
	const char *hg[] = {"GATEWAY", "ADDRESS", ">PID", "STATE", "URL"};
	table_init(&tg, 5, hg);
	for (unsigned i = 0; i < c->cfg.ngateways; i++) {
		const struct config_gateway *g = &c->cfg.gateways[i];
		pid_t pid = gw_pid(&c->cfg, g);
		bool up = gateway_up(g);
		char addr[96], ps[16], url[CONFIG_PATH_MAX + 128];
		snprintf(addr, sizeof(addr), "%s:%u", g->host, g->http_port);
		snprintf(ps, sizeof(ps), "%d", (int)pid);
		gateway_url(g, "/vm-shared", url, sizeof(url));
		const char *state = !up ? "down" : pid ? "up" : "up (no pid file: another daemon?)";
		const char *row[] = {g->name, addr, pid ? ps : NULL, state, url};
		table_add(&tg, row);
		json_array_append_new(
		    gws,
		    json_pack("{s:s,s:s,s:i,s:i,s:i,s:i,s:o,s:b,s:s}", "gateway", g->name, "host",
			      g->host, "http_port", g->http_port, "nfs_port", g->nfs_port,
			      "mount_port", g->mount_port, "portmap_port", g->portmap_port, "pid",
			      pid ? json_integer(pid) : json_null(), "up", up, "url", url));
	}
	if (c->json) {
		json_t *o = json_pack("{s:O,s:O}", "nodes", arr, "gateways", gws);
		print_json(o);
		json_decref(o);
	} else {
		table_print(&t, stdout);
		if (tg.nrows) {
			putchar('\n');
			table_print(&tg, stdout);
		}
	}
	table_free(&t);
	table_free(&tg);
	json_decref(arr);
	json_decref(gws);
	return 0;
}

static int cluster_down(struct ctx *c, int argc, char **argv)
{
	char conf[PATH_MAX + 16];
	dir_option(c, "cluster down", argc, argv, conf, sizeof(conf));
	const struct config *cfg = &c->cfg;
	static struct proc
	    p[CONFIG_MAX_NODES > CONFIG_MAX_GATEWAYS ? CONFIG_MAX_NODES : CONFIG_MAX_GATEWAYS];
	/* Gateways first: they hold engines on the nodes' replicas and would only log errors
	 * while the nodes go away under them. */
	for (unsigned i = 0; i < cfg->ngateways; i++) {
		const struct config_gateway *g = &cfg->gateways[i];
		p[i].name = g->name;
		gw_file(cfg, g, "pid", p[i].pf, sizeof(p[i].pf));
		p[i].pid = gw_pid(cfg, g);
	}
	int rc = stop_procs(p, cfg->ngateways);
	for (unsigned i = 0; i < cfg->nnodes; i++) {
		p[i].name = cfg->nodes[i].name;
		pid_path(&cfg->nodes[i], p[i].pf, sizeof(p[i].pf));
		p[i].pid = node_pid(&cfg->nodes[i]);
	}
	return stop_procs(p, cfg->nnodes) | rc;
}

static int node_ls(struct ctx *c, int argc, char **argv)
{
	char err[256], *pos[1];
	const struct optspec specs[] = {{0}};
	if (opts_parse(argc, argv, specs, pos, 0, err, sizeof(err)) < 0)
		usage_die("node ls: %s", err);
	ctx_config(c);
	json_t *arr = json_array();
	struct table t;
	const char *h[] = {"NODE", "ADDRESS", "STATE", ">REPLICAS", ">ATTACHED", ">UPTIME"};
	table_init(&t, 6, h);
	for (unsigned i = 0; i < c->cfg.nnodes; i++) {
		const struct config_node *n = &c->cfg.nodes[i];
		int status = 0;
		json_t *j = NULL;
		int r = node_req(n, "GET", "/v1/node", NULL, T_HEALTH_MS * 3, &status, &j);
		bool up = r == 0 && status == 200 && json_is_object(j);
		char addr[96], reps[24], att[24], upt[32];
		snprintf(addr, sizeof(addr), "%s:%u", n->host, n->http_port);
		json_t *o;
		if (up) {
			snprintf(reps, sizeof(reps), "%" PRIu64, jint(j, "replicas"));
			snprintf(att, sizeof(att), "%" PRIu64, jint(j, "attached"));
			uint64_t s = jint(j, "uptime_s");
			if (s >= 3600)
				snprintf(upt, sizeof(upt), "%" PRIu64 "h%02" PRIu64 "m", s / 3600,
					 s / 60 % 60);
			else
				snprintf(upt, sizeof(upt), "%" PRIu64 "m%02" PRIu64 "s", s / 60,
					 s % 60);
			o = json_deep_copy(j);
			json_object_set_new(o, "up", json_true());
		} else {
			o = json_pack("{s:s,s:s,s:i,s:i,s:i,s:b}", "node", n->name, "host", n->host,
				      "http_port", n->http_port, "replica_port", n->replica_port,
				      "nbd_port", n->nbd_port, "up", 0);
		}
		json_array_append_new(arr, o);
		const char *row[] = {
		    n->name,	     addr,	     up ? "up" : "down", up ? reps : NULL,
		    up ? att : NULL, up ? upt : NULL};
		table_add(&t, row);
		json_decref(j);
	}
	if (c->json)
		print_json(arr);
	else
		table_print(&t, stdout);
	table_free(&t);
	json_decref(arr);
	return 0;
}

int cmd_cluster(struct ctx *c, int argc, char **argv)
{
	if (strcmp(argv[0], "up") == 0)
		return cluster_up(c, argc - 1, argv + 1);
	if (strcmp(argv[0], "status") == 0)
		return cluster_status(c, argc - 1, argv + 1);
	if (strcmp(argv[0], "down") == 0)
		return cluster_down(c, argc - 1, argv + 1);
	usage_die("cluster: unknown command '%s' (up, status, down)", argv[0]);
}

int cmd_node(struct ctx *c, int argc, char **argv)
{
	if (strcmp(argv[0], "ls") == 0)
		return node_ls(c, argc - 1, argv + 1);
	usage_die("node: unknown command '%s' (ls)", argv[0]);
}

/*
 * cluster: a local test cluster of blockd processes described by DIR/cluster.conf.
 * `up` writes the file once and (re)starts only the nodes that are down, so running it
 * again keeps data; `down` stops them; `status` and `node ls` report them.
 *
 * A node is "running" when its pid file names a live process whose command line carries
 * that same pid file: a stale file whose pid was reused by another program is not ours.
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <libgen.h>
#include <limits.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "tools/blockctl/blockctl.h"

#define UP_TIMEOUT_MS 20000
#define DOWN_TIMEOUT_MS 10000

static void sleep_ms(int ms)
{
	struct timespec ts = {.tv_sec = ms / 1000, .tv_nsec = (long)(ms % 1000) * 1000000};
	nanosleep(&ts, NULL);
}

static int mkdir_p(const char *path)
{
	char tmp[CONFIG_PATH_MAX];
	if (snprintf(tmp, sizeof(tmp), "%s", path) >= (int)sizeof(tmp))
		return -ENAMETOOLONG;
	for (char *p = tmp + 1; *p; p++) {
		if (*p != '/')
			continue;
		*p = 0;
		if (mkdir(tmp, 0755) < 0 && errno != EEXIST)
			return -errno;
		*p = '/';
	}
	if (mkdir(tmp, 0755) < 0 && errno != EEXIST)
		return -errno;
	return 0;
}

static void pid_path(const struct config_node *n, char *buf, size_t cap)
{
	snprintf(buf, cap, "%s/blockd.pid", n->data);
}

static void log_path(const struct config_node *n, char *buf, size_t cap)
{
	snprintf(buf, cap, "%s/blockd.log", n->data);
}

/* True when pid is alive and was started with pidfile on its command line. */
static bool pid_is_node(pid_t pid, const char *pidfile)
{
	char path[64], buf[8192];
	snprintf(path, sizeof(path), "/proc/%d/cmdline", (int)pid);
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return false;
	ssize_t n = read(fd, buf, sizeof(buf) - 1);
	close(fd);
	if (n <= 0)
		return false; /* a zombie has an empty command line */
	buf[n] = 0;
	for (ssize_t i = 0; i < n; i += (ssize_t)strlen(buf + i) + 1)
		if (strcmp(buf + i, pidfile) == 0)
			return true;
	return false;
}

/* The pid of the running node, or 0. */
static pid_t node_pid(const struct config_node *n)
{
	char pf[CONFIG_PATH_MAX + 16], buf[32];
	pid_path(n, pf, sizeof(pf));
	int fd = open(pf, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return 0;
	ssize_t r = read(fd, buf, sizeof(buf) - 1);
	close(fd);
	if (r <= 0)
		return 0;
	buf[r] = 0;
	long pid = strtol(buf, NULL, 10);
	if (pid <= 0 || pid > INT_MAX)
		return 0;
	return pid_is_node((pid_t)pid, pf) ? (pid_t)pid : 0;
}

static void find_blockd(char *out, size_t cap)
{
	const char *env = getenv("BLOCKD_BIN");
	if (env && *env) {
		snprintf(out, cap, "%s", env);
		if (access(out, X_OK) < 0)
			die("cluster up: BLOCKD_BIN=%s: %s", env, strerror(errno));
		return;
	}
	char self[PATH_MAX];
	ssize_t n = readlink("/proc/self/exe", self, sizeof(self) - 1);
	if (n < 0)
		die("cluster up: /proc/self/exe: %s", strerror(errno));
	self[n] = 0;
	snprintf(out, cap, "%s/blockd", dirname(self));
	if (access(out, X_OK) < 0)
		die("cluster up: blockd binary not found at %s (%s); build it with 'make' or set "
		    "BLOCKD_BIN",
		    out, strerror(errno));
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
	int logfd = open(lf, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
	if (logfd < 0)
		die("cluster up: %s: %s", lf, strerror(errno));
	int nullfd = open("/dev/null", O_RDONLY | O_CLOEXEC);
	if (nullfd < 0)
		die("cluster up: /dev/null: %s", strerror(errno));
	fflush(NULL);
	pid_t pid = fork();
	if (pid < 0)
		die("cluster up: fork: %s", strerror(errno));
	if (pid == 0) {
		setsid();
		dup2(nullfd, 0);
		dup2(logfd, 1);
		dup2(logfd, 2);
		char *args[] = {(char *)bin,	 "-c",	      (char *)conf, "--node",
				(char *)n->name, "--pidfile", pf,	    NULL};
		execv(bin, args);
		dprintf(2, "blockctl: exec %s: %s\n", bin, strerror(errno));
		_exit(127);
	}
	close(logfd);
	close(nullfd);
	return pid;
}

static void print_log_tail(const struct config_node *n)
{
	char lf[CONFIG_PATH_MAX + 16];
	log_path(n, lf, sizeof(lf));
	FILE *f = fopen(lf, "r");
	if (!f)
		return;
	enum { LINES = 15 };
	char *ring[LINES] = {0};
	size_t count = 0;
	char *line = NULL;
	size_t cap = 0;
	while (getline(&line, &cap, f) >= 0) {
		free(ring[count % LINES]);
		ring[count % LINES] = strdup(line);
		count++;
	}
	free(line);
	fclose(f);
	fprintf(stderr, "--- last lines of %s ---\n", lf);
	if (count == 0)
		fprintf(stderr, "(empty)\n");
	for (size_t i = count > LINES ? count - LINES : 0; i < count; i++)
		fprintf(stderr, "%s", ring[i % LINES] ? ring[i % LINES] : "\n");
	for (size_t i = 0; i < LINES; i++)
		free(ring[i]);
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
	const struct optspec specs[] = {{"nodes", true, &o_nodes},
					{"dir", true, &o_dir},
					{"base-port", true, &o_port},
					{"replicas", true, &o_rep},
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
	} else {
		make_config(&c->cfg, dir, (unsigned)nodes, (unsigned)base, (unsigned)replicas);
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
			find_blockd(bin, sizeof(bin));
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
	printf("\ncluster of %u node%s is up in %s; to use it:\n"
	       "  export BLOCKD_CONF=%s\n"
	       "  blockctl volume create vol1 --size 1G\n"
	       "  blockctl volume attach vol1\n"
	       "stop it with 'blockctl cluster down'\n",
	       cfg->nnodes, cfg->nnodes == 1 ? "" : "s", cfg->dir, conf);
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
	if (c->json)
		print_json(arr);
	else
		table_print(&t, stdout);
	table_free(&t);
	json_decref(arr);
	return 0;
}

static int cluster_down(struct ctx *c, int argc, char **argv)
{
	char conf[PATH_MAX + 16];
	dir_option(c, "cluster down", argc, argv, conf, sizeof(conf));
	const struct config *cfg = &c->cfg;
	pid_t pids[CONFIG_MAX_NODES] = {0};
	for (unsigned i = 0; i < cfg->nnodes; i++) {
		pids[i] = node_pid(&cfg->nodes[i]);
		if (pids[i] && kill(pids[i], SIGTERM) < 0 && errno != ESRCH)
			warnx_("cluster down: %s: kill %d: %s", cfg->nodes[i].name, (int)pids[i],
			       strerror(errno));
	}
	int64_t deadline = mono_ms() + DOWN_TIMEOUT_MS;
	bool killed = false;
	for (;;) {
		unsigned alive = 0;
		char pf[CONFIG_PATH_MAX + 16];
		for (unsigned i = 0; i < cfg->nnodes; i++) {
			pid_path(&cfg->nodes[i], pf, sizeof(pf));
			if (pids[i] && pid_is_node(pids[i], pf))
				alive++;
		}
		if (!alive)
			break;
		if (mono_ms() > deadline) {
			if (killed)
				break;
			for (unsigned i = 0; i < cfg->nnodes; i++) {
				pid_path(&cfg->nodes[i], pf, sizeof(pf));
				if (pids[i] && pid_is_node(pids[i], pf)) {
					warnx_(
					    "cluster down: %s (pid %d) ignored SIGTERM for %d s: "
					    "sending SIGKILL",
					    cfg->nodes[i].name, (int)pids[i],
					    DOWN_TIMEOUT_MS / 1000);
					kill(pids[i], SIGKILL);
				}
			}
			killed = true;
			deadline = mono_ms() + 2000;
		}
		sleep_ms(50);
	}
	int rc = 0;
	for (unsigned i = 0; i < cfg->nnodes; i++) {
		const struct config_node *n = &cfg->nodes[i];
		char pf[CONFIG_PATH_MAX + 16];
		pid_path(n, pf, sizeof(pf));
		if (pids[i] && pid_is_node(pids[i], pf)) {
			warnx_("cluster down: %s (pid %d) is still running", n->name, (int)pids[i]);
			rc = 1;
			continue;
		}
		unlink(pf); /* stale now, or left by a crash */
		if (pids[i])
			printf("%s: stopped (pid %d)\n", n->name, (int)pids[i]);
		else
			printf("%s: was not running\n", n->name);
	}
	return rc;
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

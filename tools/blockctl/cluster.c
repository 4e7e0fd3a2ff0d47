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
#include <netinet/in.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <arpa/inet.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "tools/blockctl/blockctl.h"

#define UP_TIMEOUT_MS 20000
#define GW_UP_TIMEOUT_MS 30000
#define DOWN_TIMEOUT_MS 10000
#define DEFAULT_EXPORT "/vm-shared 127.0.0.0/8(rw,sync,no_subtree_check,no_root_squash)"
#define MOUNT_POINT "/var/lib/rancher/vm"

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

/* The pid in pidfile when it names a live process started with that pid file, or 0. */
static pid_t pidfile_pid(const char *pf)
{
	char buf[32];
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

/* The pid of the running node, or 0. */
static pid_t node_pid(const struct config_node *n)
{
	char pf[CONFIG_PATH_MAX + 16];
	pid_path(n, pf, sizeof(pf));
	return pidfile_pid(pf);
}

/* DIR/nfsgw.EXT for the first gateway (the one `cluster up` writes), nfsgw-NAME.EXT else. */
static void gw_file(const struct config *cfg, const struct config_gateway *g, const char *ext,
		    char *buf, size_t cap)
{
	if (g == &cfg->gateways[0])
		snprintf(buf, cap, "%s/nfsgw.%s", cfg->dir, ext);
	else
		snprintf(buf, cap, "%s/nfsgw-%s.%s", cfg->dir, g->name, ext);
}

static pid_t gw_pid(const struct config *cfg, const struct config_gateway *g)
{
	char pf[CONFIG_PATH_MAX + 16 + CONFIG_NAME_MAX];
	gw_file(cfg, g, "pid", pf, sizeof(pf));
	return pidfile_pid(pf);
}

/* A daemon binary: $env_name, else next to blockctl's own executable. Dies when it is not
 * there, unless optional (then returns false). */
static bool find_bin(const char *name, const char *env_name, bool optional, char *out, size_t cap)
{
	const char *env = getenv(env_name);
	if (env && *env) {
		snprintf(out, cap, "%s", env);
		if (access(out, X_OK) < 0)
			die("cluster up: %s=%s: %s", env_name, env, strerror(errno));
		return true;
	}
	char self[PATH_MAX];
	ssize_t n = readlink("/proc/self/exe", self, sizeof(self) - 1);
	if (n < 0)
		die("cluster up: /proc/self/exe: %s", strerror(errno));
	self[n] = 0;
	snprintf(out, cap, "%s/%s", dirname(self), name);
	if (access(out, X_OK) == 0)
		return true;
	if (optional)
		return false;
	die("cluster up: %s binary not found at %s (%s); build it with 'make' or set %s", name, out,
	    strerror(errno), env_name);
}

/* Starts args[0] in a session of its own, stdout and stderr appended to logfile. */
static pid_t spawn(char *const *args, const char *logfile)
{
	int logfd = open(logfile, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
	if (logfd < 0)
		die("cluster up: %s: %s", logfile, strerror(errno));
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
		execv(args[0], args);
		dprintf(2, "blockctl: exec %s: %s\n", args[0], strerror(errno));
		_exit(127);
	}
	close(logfd);
	close(nullfd);
	return pid;
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

static void print_file_tail(const char *lf)
{
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

/* True unless something listens on host:port (TCP). A name, or an address that is not
 * ours, counts as free: the gateway reports that itself. */
static bool port_free(const char *host, unsigned port)
{
	struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
	if (inet_pton(AF_INET, host, &a.sin_addr) != 1)
		return true;
	int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return true;
	int one = 1;
	setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
	bool free_ = bind(fd, (struct sockaddr *)&a, sizeof(a)) == 0 || errno != EADDRINUSE;
	close(fd);
	return free_;
}

/* [gateway.gw1]: the standard NFS ports on host when all are free (QEMU's nfs:// driver only
 * asks a portmapper on 111), else ports from the cluster's range and no own portmapper. */
static void make_gateway(struct config *cfg, const char *dir, unsigned base, const char *host)
{
	struct config_gateway *g = &cfg->gateways[cfg->ngateways++];
	memset(g, 0, sizeof(*g));
	snprintf(g->name, sizeof(g->name), "gw1");
	if (snprintf(g->host, sizeof(g->host), "%s", host) >= (int)sizeof(g->host))
		usage_die("cluster up: --gateway-host '%s' is too long", host);
	g->http_port = (uint16_t)(base + 1);
	if (snprintf(g->exports, sizeof(g->exports), "%s/exports", dir) >= (int)sizeof(g->exports))
		die("cluster up: %s: path too long", dir);
	snprintf(g->meta_volume, sizeof(g->meta_volume), "nfsgw-meta");
	static const unsigned std[] = {111, 2049, 20048};
	char taken[64] = "";
	for (size_t i = 0; i < sizeof(std) / sizeof(std[0]); i++)
		if (!port_free(host, std[i]))
			snprintf(taken + strlen(taken), sizeof(taken) - strlen(taken), "%s%u",
				 taken[0] ? ", " : "", std[i]);
	if (!taken[0]) {
		g->nfs_port = 2049;
		g->mount_port = 20048;
		g->portmap_port = 111;
		return;
	}
	g->nfs_port = (uint16_t)(base + 2);
	g->mount_port = (uint16_t)(base + 3);
	g->portmap_port = 0;
	printf("note: port %s of %s already taken: gateway %s uses nfs port %u, mount port %u "
	       "and no portmapper of its own (QEMU's nfs:// driver needs one on port 111; "
	       "use --gateway-host with a free address for that)\n",
	       taken, host, g->name, g->nfs_port, g->mount_port);
}

static void write_default_exports(const char *path)
{
	if (access(path, F_OK) == 0)
		return;
	FILE *f = fopen(path, "w");
	if (!f)
		die("cluster up: %s: %s", path, strerror(errno));
	fprintf(f, "# exports(5) lines of the NFS gateway: they replace its export table each\n"
		   "# time it starts\n" DEFAULT_EXPORT "\n");
	if (fclose(f) != 0)
		die("cluster up: %s: %s", path, strerror(errno));
}

static pid_t start_gateway(const char *bin, const char *conf, const struct config *cfg,
			   const struct config_gateway *g)
{
	char pf[CONFIG_PATH_MAX + 96], lf[CONFIG_PATH_MAX + 96];
	gw_file(cfg, g, "pid", pf, sizeof(pf));
	gw_file(cfg, g, "log", lf, sizeof(lf));
	char def[CONFIG_PATH_MAX + 16];
	snprintf(def, sizeof(def), "%s/exports", cfg->dir);
	if (g->exports[0] && strcmp(g->exports, def) == 0)
		write_default_exports(def);
	unlink(pf); /* stale: the gateway is not running */
	char *args[] = {(char *)bin,	 "-c",	      (char *)conf, "--gateway",
			(char *)g->name, "--pidfile", pf,	    NULL};
	return spawn(args, lf);
}

/* Prints each export's nfs:// URL and the mount line for the first one. */
static void print_gateway_urls(const struct config_gateway *g)
{
	struct config_node n = {0};
	snprintf(n.host, sizeof(n.host), "%s", g->host);
	n.http_port = g->http_port;
	int st = 0;
	json_t *j = NULL;
	const char *first = "/vm-shared";
	json_t *exps = NULL;
	if (node_req(&n, "GET", "/v1/exports", NULL, T_DEFAULT_MS, &st, &j) == 0 && st == 200)
		exps = json_object_get(j, "exports");
	if (json_array_size(exps))
		first = jstr(json_array_get(exps, 0), "path");
	char url[CONFIG_PATH_MAX + 128];
	size_t i;
	json_t *e;
	json_array_foreach(exps, i, e)
	{
		gateway_url(g, jstr(e, "path"), url, sizeof(url));
		printf("  export %s: %s\n", jstr(e, "path"), url);
	}
	if (!json_array_size(exps)) {
		gateway_url(g, first, url, sizeof(url));
		printf("  export %s: %s\n", first, url);
	}
	char opts[96] = "vers=3,proto=tcp,nolock";
	if (g->portmap_port != 111)
		snprintf(opts + strlen(opts), sizeof(opts) - strlen(opts), ",port=%u,mountport=%u",
			 g->nfs_port, g->mount_port);
	printf("  a host mounts it with:\n    mount -t nfs -o %s %s:%s " MOUNT_POINT "\n", opts,
	       g->host, first);
	json_decref(j);
}

/* Starts every gateway of the cluster that is down (after the nodes: it needs their
 * replicas) and waits for its control API. */
static void gateways_up(const struct config *cfg, const char *conf)
{
	char bin[PATH_MAX];
	bool have_bin = false;
	pid_t pids[CONFIG_MAX_GATEWAYS] = {0};
	bool started[CONFIG_MAX_GATEWAYS] = {0};
	for (unsigned i = 0; i < cfg->ngateways; i++) {
		const struct config_gateway *g = &cfg->gateways[i];
		pids[i] = gw_pid(cfg, g);
		if (pids[i])
			continue;
		/* A build without the gateway still gets its nodes (the gateway starts on a
		 * later `cluster up` once built). */
		if (!have_bin && !find_bin("nfsgw", "NFSGW_BIN", true, bin, sizeof(bin))) {
			warnx_("cluster up: no nfsgw binary at %s (build it with 'make' or set "
			       "NFSGW_BIN): not starting the NFS gateway",
			       bin);
			return;
		}
		have_bin = true;
		pids[i] = start_gateway(bin, conf, cfg, g);
		started[i] = true;
		printf("%s: started nfsgw (pid %d)\n", g->name, (int)pids[i]);
	}
	for (unsigned i = 0; i < cfg->ngateways; i++) {
		const struct config_gateway *g = &cfg->gateways[i];
		char lf[CONFIG_PATH_MAX + 96];
		gw_file(cfg, g, "log", lf, sizeof(lf));
		int64_t deadline = mono_ms() + GW_UP_TIMEOUT_MS;
		for (;;) {
			int st;
			if (started[i] && waitpid(pids[i], &st, WNOHANG) == pids[i]) {
				started[i] = false;
				if (!WIFEXITED(st) || WEXITSTATUS(st) != 0) {
					if (WIFEXITED(st))
						warnx_("cluster up: gateway %s exited with status "
						       "%d before answering /v1/health",
						       g->name, WEXITSTATUS(st));
					else
						warnx_(
						    "cluster up: gateway %s was killed by signal "
						    "%d before answering /v1/health",
						    g->name, WTERMSIG(st));
					print_file_tail(lf);
					exit(1);
				}
			}
			if (gw_pid(cfg, g) && gateway_up(g))
				break;
			if (mono_ms() > deadline) {
				warnx_("cluster up: gateway %s (%s:%u) did not answer /v1/health "
				       "within %d s",
				       g->name, g->host, g->http_port, GW_UP_TIMEOUT_MS / 1000);
				print_file_tail(lf);
				exit(1);
			}
			sleep_ms(100);
		}
		printf("\nNFS gateway %s (pid %d) serves on %s, control API %s:%u\n", g->name,
		       (int)gw_pid(cfg, g), g->host, g->host, g->http_port);
		print_gateway_urls(g);
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
		if (!o_nogw) {
			make_gateway(&c->cfg, dir, (unsigned)base,
				     o_gwhost ? o_gwhost : "127.0.0.1");
			write_default_exports(c->cfg.gateways[0].exports);
		}
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
		gateways_up(cfg, conf);
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

struct proc {
	const char *name;
	pid_t pid; /* 0: not running */
	char pf[CONFIG_PATH_MAX + 96];
};

/* SIGTERM, then SIGKILL for what is still running after DOWN_TIMEOUT_MS; removes the pid
 * files. Returns 1 when one survives even that. */
static int stop_procs(struct proc *p, unsigned n)
{
	for (unsigned i = 0; i < n; i++)
		if (p[i].pid && kill(p[i].pid, SIGTERM) < 0 && errno != ESRCH)
			warnx_("cluster down: %s: kill %d: %s", p[i].name, (int)p[i].pid,
			       strerror(errno));
	int64_t deadline = mono_ms() + DOWN_TIMEOUT_MS;
	bool killed = false;
	for (;;) {
		unsigned alive = 0;
		for (unsigned i = 0; i < n; i++)
			alive += p[i].pid && pid_is_node(p[i].pid, p[i].pf);
		if (!alive)
			break;
		if (mono_ms() > deadline) {
			if (killed)
				break;
			for (unsigned i = 0; i < n; i++) {
				if (p[i].pid && pid_is_node(p[i].pid, p[i].pf)) {
					warnx_(
					    "cluster down: %s (pid %d) ignored SIGTERM for %d s: "
					    "sending SIGKILL",
					    p[i].name, (int)p[i].pid, DOWN_TIMEOUT_MS / 1000);
					kill(p[i].pid, SIGKILL);
				}
			}
			killed = true;
			deadline = mono_ms() + 2000;
		}
		sleep_ms(50);
	}
	int rc = 0;
	for (unsigned i = 0; i < n; i++) {
		if (p[i].pid && pid_is_node(p[i].pid, p[i].pf)) {
			warnx_("cluster down: %s (pid %d) is still running", p[i].name,
			       (int)p[i].pid);
			rc = 1;
			continue;
		}
		unlink(p[i].pf); /* stale now, or left by a crash */
		if (p[i].pid)
			printf("%s: stopped (pid %d)\n", p[i].name, (int)p[i].pid);
		else
			printf("%s: was not running\n", p[i].name);
	}
	return rc;
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

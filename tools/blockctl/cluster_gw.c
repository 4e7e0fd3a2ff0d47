/*
 * cluster_gw: the NFS gateway of a local cluster: its [gateway.gw1] section (standard NFS
 * ports on its address when free, else ports of the cluster's range), the default exports
 * file, and starting it after the nodes with the URLs and mount line a user needs.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <limits.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include "tools/blockctl/blockctl.h"
#include "tools/blockctl/proc.h"

#define GW_UP_TIMEOUT_MS 30000
#define DEFAULT_EXPORT "/vm-shared 127.0.0.0/8(rw,sync,no_subtree_check,no_root_squash)"
#define MOUNT_POINT "/var/lib/rancher/vm"

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

static void write_default_exports(const char *path)
{
	if (access(path, F_OK) == 0)
		return;
	FILE *f = fopen(path, "w");
	if (!f)
		die("cluster up: %s: %s", path, strerror(errno));
	fprintf(f, "# exports(5) lines of the NFS gateway: read when it starts, rewritten by\n"
		   "# 'blockctl export add|rm'\n" DEFAULT_EXPORT "\n");
	if (fclose(f) != 0)
		die("cluster up: %s: %s", path, strerror(errno));
}

/* [gateway.gw1]: the standard NFS ports on host when all are free (QEMU's nfs:// driver only
 * asks a portmapper on 111), else ports from the cluster's range and no own portmapper. */
void cluster_make_gateway(struct config *cfg, const char *dir, unsigned base, const char *host)
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
	write_default_exports(g->exports);
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
void cluster_gateways_up(const struct config *cfg, const char *conf)
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

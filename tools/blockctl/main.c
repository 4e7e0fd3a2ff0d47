/*
 * blockctl main: global options (-c FILE, $BLOCKD_CONF, --json, --help) and dispatch to the
 * command groups. Exit status: 0 ok, 1 failure, 2 usage error.
 */
#include <stdlib.h>
#include <string.h>

#include "tools/blockctl/blockctl.h"

static const struct group {
	const char *name;
	int (*fn)(struct ctx *c, int argc, char **argv);
	const char *usage;
} groups[] = {
    {"cluster", cmd_cluster,
     "  blockctl cluster up --nodes N --dir DIR [--base-port P] [--replicas R]\n"
     "                     [--gateway-host H | --no-gateway]\n"
     "      create DIR/cluster.conf (or reuse it), start every node that is down, then the\n"
     "      NFS gateway (export /vm-shared; prints its nfs:// URL and mount line)\n"
     "  blockctl cluster status [--json] [--dir DIR]\n"
     "  blockctl cluster down [--dir DIR]\n"},
    {"node", cmd_node, "  blockctl node ls [--json]\n"},
    {"volume", cmd_volume,
     "  blockctl volume create NAME --size SIZE [--replicas N | --nodes A,B,C]   (SIZE: 10G, 512M, "
     "...)\n"
     "  blockctl volume ls [--json]\n"
     "  blockctl volume info NAME [--json]\n"
     "  blockctl volume rm NAME\n"
     "  blockctl volume resize NAME --size SIZE\n"
     "  blockctl volume attach NAME [--node NODE] [--force]\n"
     "      prints the nbd:// URL; --force takes it over from the node it is attached on\n"
     "  blockctl volume detach NAME\n"
     "  blockctl volume import NAME FILE               copy FILE into the volume\n"
     "  blockctl volume export NAME FILE               copy the volume into FILE (sparse)\n"},
    {"snapshot", cmd_snapshot,
     "  blockctl snapshot create VOL SNAP\n"
     "  blockctl snapshot ls VOL [--json]\n"
     "  blockctl snapshot rm VOL SNAP\n"
     "  blockctl snapshot revert VOL SNAP\n"
     "  blockctl snapshot clone VOL SNAP NEWVOL\n"
     "  blockctl snapshot create|rm|revert PATH SNAP   (PATH: /export/dir/file on the gateway)\n"
     "  blockctl snapshot ls PATH [--json]\n"},
    {"replica", cmd_replica,
     "  blockctl replica ls VOL [--json]\n"
     "  blockctl replica verify VOL [--repair] [--json]\n"
     "  blockctl replica wait VOL [--timeout SECONDS]\n"},
    {"gateway", cmd_gateway,
     "  blockctl gateway status [--json] [--gateway NAME]\n"
     "      the NFS gateway: its address, epoch, exports and the clients that mounted them\n"},
    {"export", cmd_export,
     "  blockctl export ls [--json] [--gateway NAME]\n"
     "  blockctl export add 'PATH CLIENT(OPTIONS)...' [--gateway NAME]\n"
     "      one exports(5) line, e.g. '/isos 127.0.0.0/8(ro)'\n"
     "  blockctl export rm PATH [--gateway NAME]\n"},
};

static void usage(FILE *f, const struct group *only)
{
	fputs("usage: blockctl [-c FILE] [--json] GROUP COMMAND [ARGS]\n\n"
	      "The cluster file comes from -c FILE or $BLOCKD_CONF.\n\n",
	      f);
	for (size_t i = 0; i < sizeof(groups) / sizeof(groups[0]); i++)
		if (!only || only == &groups[i])
			fputs(groups[i].usage, f);
}

int main(int argc, char **argv)
{
	struct ctx c = {.conf_path = getenv("BLOCKD_CONF")};
	if (c.conf_path && !*c.conf_path)
		c.conf_path = NULL;
	/* Global options may appear anywhere before "--"; strip them so that commands see
	 * only their own arguments. */
	int n = 0;
	bool help = false, dashdash = false;
	for (int i = 1; i < argc; i++) {
		const char *a = argv[i];
		if (!dashdash && strcmp(a, "--") == 0)
			dashdash = true;
		if (dashdash) {
			argv[n++] = argv[i];
			continue;
		}
		if (strcmp(a, "--json") == 0) {
			c.json = true;
		} else if (strcmp(a, "-c") == 0 || strcmp(a, "--config") == 0) {
			if (i + 1 >= argc)
				usage_die("option '%s' needs a file", a);
			c.conf_path = argv[++i];
		} else if (strncmp(a, "--config=", 9) == 0) {
			c.conf_path = a + 9;
		} else if (strcmp(a, "-h") == 0 || strcmp(a, "--help") == 0) {
			help = true;
		} else {
			argv[n++] = argv[i];
		}
	}
	if (n == 0 || strcmp(argv[0], "help") == 0) {
		const struct group *g = NULL;
		if (n > 1)
			for (size_t i = 0; i < sizeof(groups) / sizeof(groups[0]); i++)
				if (strcmp(groups[i].name, argv[1]) == 0)
					g = &groups[i];
		if (n == 0 && !help) {
			usage(stderr, NULL);
			return EXIT_USAGE;
		}
		usage(stdout, g);
		return 0;
	}
	for (size_t i = 0; i < sizeof(groups) / sizeof(groups[0]); i++) {
		const struct group *g = &groups[i];
		if (strcmp(g->name, argv[0]) != 0)
			continue;
		if (n > 1 && strcmp(argv[1], "help") == 0)
			help = true;
		if (help || n == 1) {
			usage(help ? stdout : stderr, g);
			return help ? 0 : EXIT_USAGE;
		}
		return g->fn(&c, n - 1, argv + 1);
	}
	usage_die("unknown command group '%s'", argv[0]);
}

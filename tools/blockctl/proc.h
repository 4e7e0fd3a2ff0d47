/*
 * proc: the daemons of a local cluster (blockd nodes, nfsgw gateways) as processes: pid
 * files, spawning, stopping, log tails.
 *
 * A daemon is "running" when its pid file names a live process whose command line carries
 * that same pid file: a stale file whose pid was reused by another program is not ours.
 */
#ifndef BLOCKCTL_PROC_H
#define BLOCKCTL_PROC_H

#include <stdbool.h>
#include <stddef.h>
#include <sys/types.h>

#include "blockd/config.h"

#define DOWN_TIMEOUT_MS 10000

void sleep_ms(int ms);
int mkdir_p(const char *path);
/* True when pid is alive and was started with pidfile on its command line. */
bool pid_is_node(pid_t pid, const char *pidfile);
/* The pid in pidfile when it names a live process started with that pid file, or 0. */
pid_t pidfile_pid(const char *pf);
/* DIR/nfsgw.EXT for the first gateway (the one `cluster up` writes), nfsgw-NAME.EXT else. */
void gw_file(const struct config *cfg, const struct config_gateway *g, const char *ext, char *buf,
	     size_t cap);
/* The pid of the running gateway, or 0. */
pid_t gw_pid(const struct config *cfg, const struct config_gateway *g);
/* A daemon binary: $env_name, else next to blockctl's own executable. Dies when it is not
 * there, unless optional (then returns false). */
bool find_bin(const char *name, const char *env_name, bool optional, char *out, size_t cap);
/* Starts args[0] in a session of its own, stdout and stderr appended to logfile. */
pid_t spawn(char *const *args, const char *logfile);
/* The last lines of a daemon's log, on stderr. */
void print_file_tail(const char *path);

struct proc {
	const char *name;
	pid_t pid; /* 0: not running */
	char pf[CONFIG_PATH_MAX + 96];
};
/* SIGTERM, then SIGKILL for what is still running after DOWN_TIMEOUT_MS; removes the pid
 * files. Returns 1 when one survives even that. */
int stop_procs(struct proc *p, unsigned n);

#endif

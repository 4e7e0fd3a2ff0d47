/*
 * proc: process helpers for the daemons of a local cluster (see proc.h).
 */
#include "tools/blockctl/proc.h"

#include <errno.h>
#include <fcntl.h>
#include <libgen.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "tools/blockctl/blockctl.h"

void sleep_ms(int ms)
{
	struct timespec ts = {.tv_sec = ms / 1000, .tv_nsec = (long)(ms % 1000) * 1000000};
	nanosleep(&ts, NULL);
}

int mkdir_p(const char *path)
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

bool pid_is_node(pid_t pid, const char *pidfile)
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

pid_t pidfile_pid(const char *pf)
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

void gw_file(const struct config *cfg, const struct config_gateway *g, const char *ext, char *buf,
	     size_t cap)
{
	if (g == &cfg->gateways[0])
		snprintf(buf, cap, "%s/nfsgw.%s", cfg->dir, ext);
	else
		snprintf(buf, cap, "%s/nfsgw-%s.%s", cfg->dir, g->name, ext);
}

pid_t gw_pid(const struct config *cfg, const struct config_gateway *g)
{
	char pf[CONFIG_PATH_MAX + 16 + CONFIG_NAME_MAX];
	gw_file(cfg, g, "pid", pf, sizeof(pf));
	return pidfile_pid(pf);
}

bool find_bin(const char *name, const char *env_name, bool optional, char *out, size_t cap)
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

pid_t spawn(char *const *args, const char *logfile)
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

void print_file_tail(const char *lf)
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

int stop_procs(struct proc *p, unsigned n)
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

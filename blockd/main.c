/*
 * blockd: the node daemon. `blockd -c CONF --node NAME [--pidfile FILE]`.
 *
 * Loads the cluster file, creates this node's data directories, starts the loop with the
 * replica and NBD servers, then the HTTP API, and writes the pidfile only once everything
 * listens (so a caller may wait for the pidfile). SIGTERM/SIGINT arrive through a signalfd
 * on the loop, which wakes the main thread to shut down in order: API, re-attach, engines
 * (flushed by engine_close), servers, loop; then the pidfile goes. Exit 0 after a clean
 * stop, 1 when startup fails, 2 on bad usage.
 */
#include <errno.h>
#include <getopt.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/signalfd.h>
#include <sys/stat.h>
#include <unistd.h>

#include "blockd/api.h"
#include "blockd/config.h"
#include "blockd/node.h"
#include "replica/loop.h"

struct sigwatch {
	struct node *n;
	int sfd;
	int efd; /* written once a stop signal arrived; the main thread waits on it */
	int res;
};

static void usage(void)
{
	fprintf(stderr, "usage: blockd -c CLUSTER.CONF --node NAME [--pidfile FILE]\n");
	exit(2);
}

static int mkdir_p(const char *path)
{
	char buf[CONFIG_PATH_MAX];
	if (snprintf(buf, sizeof(buf), "%s", path) >= (int)sizeof(buf))
		return -ENAMETOOLONG;
	for (char *p = buf + 1;; p++) {
		if (*p != '/' && *p)
			continue;
		char c = *p;
		*p = 0;
		if (mkdir(buf, 0755) && errno != EEXIST)
			return -errno;
		*p = c;
		if (!c)
			break;
	}
	return 0;
}

static int write_pidfile(const char *path)
{
	char tmp[CONFIG_PATH_MAX + 16];
	snprintf(tmp, sizeof(tmp), "%s.tmp", path);
	FILE *f = fopen(tmp, "we");
	if (!f)
		return -errno;
	fprintf(f, "%d\n", (int)getpid());
	if (fclose(f)) {
		unlink(tmp);
		return -EIO;
	}
	if (rename(tmp, path)) {
		int e = -errno;
		unlink(tmp);
		return e;
	}
	return 0;
}

static void on_signal(void *arg, uint32_t events)
{
	(void)events;
	struct sigwatch *w = arg;
	struct signalfd_siginfo si;
	while (read(w->sfd, &si, sizeof(si)) == sizeof(si)) {
		node_log(w->n, "%s: shutting down", strsignal((int)si.ssi_signo));
		uint64_t one = 1;
		if (write(w->efd, &one, sizeof(one)) < 0)
			node_log(w->n, "cannot wake the main thread: %s", strerror(errno));
	}
}

static void watch_add(void *arg)
{
	struct sigwatch *w = arg;
	w->res = loop_add_fd(node_loop(w->n), w->sfd, EPOLLIN, on_signal, w);
}

static void watch_del(void *arg)
{
	struct sigwatch *w = arg;
	loop_del_fd(node_loop(w->n), w->sfd);
}

int main(int argc, char **argv)
{
	const char *conf = NULL, *name = NULL, *pidfile = NULL;
	static const struct option opts[] = {
	    {"config", required_argument, NULL, 'c'},
	    {"node", required_argument, NULL, 'n'},
	    {"pidfile", required_argument, NULL, 'p'},
	    {"help", no_argument, NULL, 'h'},
	    {NULL, 0, NULL, 0},
	};
	int o;
	while ((o = getopt_long(argc, argv, "c:n:p:h", opts, NULL)) != -1) {
		switch (o) {
		case 'c':
			conf = optarg;
			break;
		case 'n':
			name = optarg;
			break;
		case 'p':
			pidfile = optarg;
			break;
		default:
			usage();
		}
	}
	if (!conf || !name || optind != argc)
		usage();

	/* Blocked before any thread exists, so every thread inherits the mask and only the
	 * signalfd sees these. */
	sigset_t mask;
	sigemptyset(&mask);
	sigaddset(&mask, SIGTERM);
	sigaddset(&mask, SIGINT);
	pthread_sigmask(SIG_BLOCK, &mask, NULL);
	signal(SIGPIPE, SIG_IGN);

	static struct config cfg;
	char err[512] = "";
	int r = config_load(conf, &cfg, err, sizeof(err));
	if (r) {
		node_log(NULL, "%s: %s", conf, err);
		return 1;
	}
	const struct config_node *me = config_node(&cfg, name);
	if (!me) {
		node_log(NULL, "%s: no node '%s'", conf, name);
		return 1;
	}
	char rdir[CONFIG_PATH_MAX + 16];
	snprintf(rdir, sizeof(rdir), "%s/replicas", me->data);
	if ((r = mkdir_p(me->data)) || (r = mkdir_p(rdir))) {
		node_log(NULL, "cannot create %s: %s", rdir, strerror(-r));
		return 1;
	}

	struct node *n;
	r = node_start(&cfg, name, &n, err, sizeof(err));
	if (r) {
		node_log(NULL, "%s: cannot start: %s", name, err);
		return 1;
	}
	struct sigwatch sw = {.n = n, .sfd = -1, .efd = -1};
	sw.sfd = signalfd(-1, &mask, SFD_NONBLOCK | SFD_CLOEXEC);
	sw.efd = eventfd(0, EFD_CLOEXEC);
	if (sw.sfd < 0 || sw.efd < 0 || loop_call(node_loop(n), watch_add, &sw) || sw.res) {
		node_log(n, "cannot watch signals: %s", strerror(errno));
		node_stop(n);
		return 1;
	}
	struct api *api = NULL;
	r = api_start(n, me->host, me->http_port, &api);
	if (r) {
		node_log(n, "control API on %s:%u: %s", me->host, me->http_port, strerror(-r));
		loop_call(node_loop(n), watch_del, &sw);
		node_stop(n);
		return 1;
	}
	node_reattach_start(n);
	if (pidfile && (r = write_pidfile(pidfile))) {
		node_log(n, "pidfile %s: %s", pidfile, strerror(-r));
		api_stop(api);
		loop_call(node_loop(n), watch_del, &sw);
		node_stop(n);
		return 1;
	}
	node_log(n, "ready: api %s:%u, replicas :%u, nbd :%u, data %s (pid %d)", me->host,
		 me->http_port, me->replica_port, me->nbd_port, me->data, (int)getpid());

	uint64_t v;
	while (read(sw.efd, &v, sizeof(v)) < 0 && errno == EINTR)
		;
	api_stop(api);
	loop_call(node_loop(n), watch_del, &sw);
	node_stop(n);
	close(sw.sfd);
	close(sw.efd);
	if (pidfile)
		unlink(pidfile);
	node_log(NULL, "%s: stopped", name);
	return 0;
}

/*
 * nfsgw: the NFS gateway process. `nfsgw -c CLUSTER.CONF --gateway NAME [--pidfile FILE]`
 * (-c defaults to $BLOCKD_CONF).
 *
 * The loop runs on the main thread; everything is started from it (gateway_start, then the
 * control API when http_port is set, then the pidfile, so a caller may wait for the pidfile).
 * SIGTERM/SIGINT arrive through a signalfd on the loop. Stopping: the control API first, on a
 * helper thread (nfsgw_api_stop waits for handlers that wait for the loop), then
 * gateway_stop, then the loop ends. Exit 0 after a clean stop, 1 when start-up fails or the
 * gateway was fenced by a newer one, 2 on bad usage. Logs go to stderr, one timestamped line
 * each.
 */
#include <errno.h>
#include <getopt.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/signalfd.h>
#include <time.h>
#include <unistd.h>

#include "blockd/config.h"
#include "nfsgw/api.h"
#include "nfsgw/gateway.h"
#include "replica/loop.h"

struct app {
	struct loop *l;
	const struct config *cfg;
	const struct config_gateway *gc;
	const char *name, *pidfile;
	struct gateway *g;
	struct nfsgw_api *api;
	int sfd;
	bool started, stopping, stop_pending, pidfile_written;
	bool api_thread_started;
	pthread_t api_thread;
	int exit_code;
};

static void logf_(const char *name, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void logf_(const char *name, const char *fmt, ...)
{
	char line[1024];
	struct timespec ts;
	struct tm tm;
	clock_gettime(CLOCK_REALTIME, &ts);
	gmtime_r(&ts.tv_sec, &tm);
	int k = (int)strftime(line, sizeof(line), "%Y-%m-%dT%H:%M:%S", &tm);
	k += snprintf(line + k, sizeof(line) - (size_t)k,
		      ".%03ldZ nfsgw %s: ", ts.tv_nsec / 1000000, name ? name : "-");
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(line + k, sizeof(line) - (size_t)k, fmt, ap);
	va_end(ap);
	size_t len = strnlen(line, sizeof(line) - 2);
	line[len++] = '\n';
	if (write(STDERR_FILENO, line, len) < 0)
		return;
}

static void usage(void)
{
	fprintf(stderr, "usage: nfsgw [-c CLUSTER.CONF] --gateway NAME [--pidfile FILE]\n"
			"       (-c defaults to $BLOCKD_CONF)\n");
	exit(2);
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

static void on_stopped(void *arg, int res)
{
	struct app *a = arg;
	if (res)
		logf_(a->name, "stop: %s", strerror(-res));
	a->g = NULL;
	loop_stop(a->l);
}

static void stop_gateway(void *arg)
{
	struct app *a = arg;
	if (!a->g) {
		loop_stop(a->l);
		return;
	}
	int r = gateway_stop(a->g, on_stopped, a);
	if (r) {
		logf_(a->name, "stop: %s", strerror(-r));
		loop_stop(a->l);
	}
}

static void *api_stop_thread(void *arg)
{
	struct app *a = arg;
	nfsgw_api_stop(a->api);
	a->api = NULL;
	if (loop_post(a->l, stop_gateway, a))
		logf_(a->name, "cannot reach the loop to stop the gateway");
	return NULL;
}

static void begin_stop(struct app *a)
{
	if (a->stopping)
		return;
	a->stopping = true;
	if (!a->api) {
		stop_gateway(a);
		return;
	}
	/* nfsgw_api_stop waits for handlers that may be waiting for this (the loop) thread. */
	if (pthread_create(&a->api_thread, NULL, api_stop_thread, a) == 0) {
		a->api_thread_started = true;
		return;
	}
	logf_(a->name, "cannot start a thread to stop the control API; stopping without it");
	stop_gateway(a);
}

/* Start-up cannot be cancelled half way (an engine may be opening); nothing is served yet,
 * so leaving without cleanup loses nothing. */
#define START_STOP_GRACE_MS 10000

static void start_too_long(void *arg)
{
	struct app *a = arg;
	if (a->started)
		return;
	logf_(a->name, "start-up still running %d s after the stop signal: exiting now",
	      START_STOP_GRACE_MS / 1000);
	_exit(1);
}

static void on_signal(void *arg, uint32_t events)
{
	(void)events;
	struct app *a = arg;
	struct signalfd_siginfo si;
	while (read(a->sfd, &si, sizeof(si)) == sizeof(si)) {
		logf_(a->name, "%s: shutting down", strsignal((int)si.ssi_signo));
		if (a->started) {
			begin_stop(a);
		} else if (a->stop_pending) {
			logf_(a->name, "second stop signal during start-up: exiting now");
			_exit(1);
		} else {
			a->stop_pending = true;
			loop_timer_add(a->l, START_STOP_GRACE_MS, start_too_long, a, NULL);
		}
	}
}

static void on_fenced(void *arg)
{
	struct app *a = arg;
	logf_(a->name, "no longer serving (fenced, or the meta volume failed): exiting");
	a->exit_code = 1;
	begin_stop(a);
}

static void on_started(void *arg, int res)
{
	struct app *a = arg;
	if (res) {
		/* The gateway logged why and freed itself. */
		a->g = NULL;
		a->exit_code = 1;
		loop_stop(a->l);
		return;
	}
	a->started = true;
	const struct config_gateway *gc = a->gc;
	if (gc->http_port) {
		int r = nfsgw_api_start(a->g, a->l, gc->host, gc->http_port, &a->api);
		if (r) {
			logf_(a->name, "cannot start: control API on %s:%u: %s", gc->host,
			      gc->http_port, strerror(-r));
			a->api = NULL;
			a->exit_code = 1;
			begin_stop(a);
			return;
		}
	}
	if (a->pidfile) {
		int r = write_pidfile(a->pidfile);
		if (r) {
			logf_(a->name, "cannot start: pidfile %s: %s", a->pidfile, strerror(-r));
			a->exit_code = 1;
			begin_stop(a);
			return;
		}
		a->pidfile_written = true;
	}
	if (gc->http_port)
		logf_(a->name, "ready: control API %s:%u (pid %d)", gc->host, gc->http_port,
		      (int)getpid());
	else
		logf_(a->name, "ready: no control API (http_port = 0) (pid %d)", (int)getpid());
	if (a->stop_pending)
		begin_stop(a);
}

/* Client connections (up to RPC_MAX_CONNS) plus three sockets per open file volume need more
 * descriptors than the usual soft limit of 1024: take the hard limit. */
static void raise_nofile(void)
{
	struct rlimit rl;
	if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
		rl.rlim_cur = rl.rlim_max;
		setrlimit(RLIMIT_NOFILE, &rl);
	}
}

int main(int argc, char **argv)
{
	const char *conf = getenv("BLOCKD_CONF");
	const char *name = NULL, *pidfile = NULL;
	raise_nofile();
	static const struct option opts[] = {
	    {"config", required_argument, NULL, 'c'},
	    {"gateway", required_argument, NULL, 'g'},
	    {"pidfile", required_argument, NULL, 'p'},
	    {"help", no_argument, NULL, 'h'},
	    {NULL, 0, NULL, 0},
	};
	int o;
	while ((o = getopt_long(argc, argv, "c:g:p:h", opts, NULL)) != -1) {
		switch (o) {
		case 'c':
			conf = optarg;
			break;
		case 'g':
			name = optarg;
			break;
		case 'p':
			pidfile = optarg;
			break;
		default:
			usage();
		}
	}
	if (!conf || !*conf || !name || optind != argc)
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
		logf_(name, "cannot start: %s: %s", conf, err);
		return 1;
	}
	const struct config_gateway *gc = config_gateway(&cfg, name);
	if (!gc) {
		logf_(name, "cannot start: %s has no [gateway.%s] section", conf, name);
		return 1;
	}
	struct app a = {.cfg = &cfg, .gc = gc, .name = name, .pidfile = pidfile, .sfd = -1};
	r = loop_new(&a.l);
	if (r) {
		logf_(name, "cannot start: event loop: %s", strerror(-r));
		return 1;
	}
	a.sfd = signalfd(-1, &mask, SFD_NONBLOCK | SFD_CLOEXEC);
	if (a.sfd < 0 || loop_add_fd(a.l, a.sfd, EPOLLIN, on_signal, &a)) {
		logf_(name, "cannot start: signalfd: %s", strerror(errno));
		loop_free(a.l);
		return 1;
	}
	const struct gateway_params gp = {
	    .l = a.l, .cluster = &cfg, .name = name, .on_fenced = on_fenced, .arg = &a};
	r = gateway_start(&gp, &a.g, on_started, &a);
	if (r) {
		/* gateway_start logged the reason. */
		loop_del_fd(a.l, a.sfd);
		close(a.sfd);
		loop_free(a.l);
		return 1;
	}
	r = loop_run(a.l);
	if (r)
		logf_(name, "event loop: %s", strerror(-r));
	if (a.api_thread_started)
		pthread_join(a.api_thread, NULL);
	loop_del_fd(a.l, a.sfd);
	close(a.sfd);
	loop_free(a.l);
	if (a.pidfile_written)
		unlink(pidfile);
	logf_(name, "exit %d", a.exit_code);
	return a.exit_code;
}

/*
 * gateway: start-up, stop and fencing of one NFS gateway (contract in gateway.h).
 *
 * Start-up is a chain of asynchronous steps (meta volume, meta, export table, file engines,
 * listeners). What can be checked without touching the cluster is checked first and fails
 * synchronously: the section, the exports file, and whether our ports are free, so that a
 * second gateway started by mistake on a busy address never fences the one serving there.
 * A failure later tears down what was built, frees the gateway, then calls cb(arg, err):
 * after an error callback the gateway pointer is gone.
 *
 * gateway_stop is only valid after a successful start callback. Stopping closes the
 * listeners first, waits for the NFS requests in flight (they use the meta and the engines),
 * then closes the meta and the engines.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "nfsgw/gateway_int.h"
#include "nfsgw/nfs3.h"

#define GW_DRAIN_POLL_MS 10
#define GW_DRAIN_MAX_MS 60000
#define GW_FENCE_READ 4096u

static void teardown(struct gateway *g, void (*done)(struct gateway *g));

void gw_log(const struct gateway *g, const char *fmt, ...)
{
	char line[1024];
	struct timespec ts;
	struct tm tm;
	clock_gettime(CLOCK_REALTIME, &ts);
	gmtime_r(&ts.tv_sec, &tm);
	int k = (int)strftime(line, sizeof(line), "%Y-%m-%dT%H:%M:%S", &tm);
	k += snprintf(line + k, sizeof(line) - (size_t)k,
		      ".%03ldZ nfsgw %s: ", ts.tv_nsec / 1000000, g ? g->cfg.name : "-");
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(line + k, sizeof(line) - (size_t)k, fmt, ap);
	va_end(ap);
	/* One write per line, so lines from the API threads never interleave. */
	size_t len = strnlen(line, sizeof(line) - 2);
	for (size_t i = 0; i < len; i++)
		if (line[i] == '\n')
			line[i] = ' ';
	line[len++] = '\n';
	if (write(STDERR_FILENO, line, len) < 0)
		return;
}

/* 0 when host:port can be bound now (nobody listens there), else -errno. */
static int port_probe(const char *host, uint16_t port)
{
	struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons(port)};
	if (inet_pton(AF_INET, host, &a.sin_addr) != 1)
		return -EINVAL;
	int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return -errno;
	int one = 1;
	setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
	int r = bind(fd, (struct sockaddr *)&a, sizeof(a)) ? -errno : 0;
	close(fd);
	return r;
}

/* ---- failure ---- */

static void failed_done(struct gateway *g)
{
	gateway_cb cb = g->cb;
	void *arg = g->cb_arg;
	int err = g->err;
	free(g->fence_buf);
	free(g);
	cb(arg, err);
}

static void fail(struct gateway *g, int err, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static void fail(struct gateway *g, int err, const char *fmt, ...)
{
	char msg[512];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	gw_log(g, "cannot start: %s", msg);
	g->err = err ? err : -EIO;
	teardown(g, failed_done);
}

/* ---- fencing ---- */

static void fence_arm(struct gateway *g);

static void stopped(struct gateway *g);

static void fenced_stop_done(struct gateway *g)
{
	g->torn_down = true;
	if (g->stop_requested)
		stopped(g); /* gateway_stop came while this teardown ran */
	else if (g->on_fenced)
		g->on_fenced(g->fenced_arg);
}

static void fence_read_done(void *arg, int res)
{
	struct gateway *g = arg;
	g->fence_reading = false;
	if (g->state != GW_SERVING)
		return; /* a teardown polls fence_reading */
	if (res == -ESTALE || (g->meta && meta_failed(g->meta))) {
		g->fenced = true;
		gw_log(g,
		       res == -ESTALE
			   ? "fenced: a newer gateway took the meta volume %s over; stopping"
			   : "the meta volume %s failed; stopping",
		       g->cfg.meta_volume);
		/* Stop answering at once: the other gateway owns the file system now. */
		teardown(g, fenced_stop_done);
		return;
	}
	if (res < 0) {
		if (g->fence_errors++ % 20 == 0)
			gw_log(g, "meta volume check failed: %s", strerror(-res));
	} else if (g->fence_errors) {
		gw_log(g, "meta volume reachable again");
		g->fence_errors = 0;
	}
	fence_arm(g);
}

static void fence_tick(void *arg)
{
	struct gateway *g = arg;
	g->fence_timer = NULL;
	if (g->state != GW_SERVING)
		return;
	g->fence_reading = true;
	int r = g->meta_dev.ops->read(g->meta_dev.ctx, 0, GW_FENCE_READ, g->fence_buf,
				      fence_read_done, g);
	if (r < 0) {
		g->fence_reading = false;
		fence_read_done(g, r);
	}
}

static void fence_arm(struct gateway *g)
{
	if (loop_timer_add(g->l, GATEWAY_FENCE_CHECK_MS, fence_tick, g, &g->fence_timer))
		g->fence_timer = NULL;
}

/* ---- start-up chain ---- */

static void on_registered(struct gateway *g, int r);

static void on_files(void *arg, int res)
{
	struct gateway *g = arg;
	if (res)
		gw_log(g, "opening the file volumes: %s (continuing)", strerror(-res));
	int r = rpc_server_new(g->l, &g->rpc);
	if (r) {
		fail(g, r, "rpc server: %s", strerror(-r));
		return;
	}
	const struct mount_fs mfs = {.resolve = gw_mount_resolve, .exports = gw_exports, .ctx = g};
	r = mount_prog_new(g->rpc, &mfs, &g->mnt);
	if (r) {
		fail(g, r, "MOUNT program: %s", strerror(-r));
		return;
	}
	const struct nfs3_params np = {
	    .meta = g->meta, .fv = g->fv, .exports = gw_exports, .ctx = g};
	r = nfs3_prog_new(g->rpc, &np, &g->nfs);
	if (r) {
		fail(g, r, "NFS program: %s", strerror(-r));
		return;
	}
	const char *host = g->cfg.host;
	if (g->cfg.portmap_port && port_probe(host, g->cfg.portmap_port) == 0) {
		r = portmap_new(g->rpc, g->cfg.portmap_port, &g->pm);
		if (!r)
			r = rpc_server_listen(g->rpc, host, g->cfg.portmap_port, NULL);
		if (r) {
			fail(g, r, "portmapper on %s:%u: %s", host, g->cfg.portmap_port,
			     strerror(-r));
			return;
		}
		g->pmap = GW_PMAP_OWN;
	} else {
		g->pmap = GW_PMAP_HOST;
	}
	r = rpc_server_listen(g->rpc, host, g->cfg.mount_port, NULL);
	if (r) {
		fail(g, r, "MOUNT on %s:%u: %s", host, g->cfg.mount_port, strerror(-r));
		return;
	}
	r = rpc_server_listen(g->rpc, host, g->cfg.nfs_port, NULL);
	if (r) {
		fail(g, r, "NFS on %s:%u: %s", host, g->cfg.nfs_port, strerror(-r));
		return;
	}
	gw_pmap_register(g, on_registered);
}

static void on_registered(struct gateway *g, int r)
{
	const char *host = g->cfg.host;
	if (r && g->pmap == GW_PMAP_OWN) {
		fail(g, r, "portmapper registration: %s", strerror(-r));
		return;
	}
	if (r) {
		gw_log(g,
		       "no portmapper on %s:111 to register with (%s): clients must name the "
		       "ports (nfs://%s/PATH?nfsport=%u&mountport=%u)",
		       host, strerror(-r), host, g->cfg.nfs_port, g->cfg.mount_port);
		g->pmap = GW_PMAP_OFF;
	}
	g->state = GW_SERVING;
	fence_arm(g);
	struct meta_info mi;
	meta_info(g->meta, &mi);
	gw_log(g,
	       "serving on %s: nfs %u, mount %u, portmap %s; meta volume %s epoch %llu, %llu "
	       "files, %u exports",
	       host, g->cfg.nfs_port, g->cfg.mount_port,
	       g->pmap == GW_PMAP_OWN	 ? "own"
	       : g->pmap == GW_PMAP_HOST ? "host"
					 : "off",
	       g->cfg.meta_volume, (unsigned long long)filevol_epoch(g->fv, g->cfg.meta_volume),
	       (unsigned long long)mi.files, gw_exports(g)->n);
	gateway_cb cb = g->cb;
	g->cb = NULL;
	cb(g->cb_arg, 0);
}

static void on_exports(struct gateway *g, int res)
{
	if (res) {
		fail(g, res, "export table: %s", strerror(-res));
		return;
	}
	/* Every file volume is "nfs-<fsid>-<fileid>": the prefix is the name of fileid 1
	 * without the id. */
	char prefix[80];
	meta_volume_name(g->meta, 1, prefix, sizeof(prefix));
	size_t n = strlen(prefix);
	if (n && prefix[n - 1] == '1')
		prefix[n - 1] = 0;
	int r = filevol_open_all(g->fv, prefix, on_files, g);
	if (r)
		on_files(g, r);
}

static void on_meta(void *arg, int res)
{
	struct gateway *g = arg;
	if (res) {
		g->meta = NULL; /* a meta whose open failed has freed itself */
		fail(g, res, "meta volume %s: cannot load the metadata: %s", g->cfg.meta_volume,
		     strerror(-res));
		return;
	}
	g->meta_open = true;
	int r = gw_exports_load(g, on_exports);
	if (r)
		fail(g, r, "export table: %s", strerror(-r));
}

static void on_meta_dev(void *arg, int res)
{
	struct gateway *g = arg;
	if (res) {
		fail(g, res, "meta volume %s unreachable%s: %s", g->cfg.meta_volume,
		     res == -EIO ? " (no quorum of its replicas answered)" : "", strerror(-res));
		return;
	}
	g->meta_dev_open = true;
	int r = meta_open(g->l, g->meta_dev, &g->meta, on_meta, g);
	if (r) {
		g->meta = NULL;
		fail(g, r, "meta: %s", strerror(-r));
	}
}

static int check_ports(const struct config_gateway *c, char *err, size_t errlen)
{
	struct in_addr a;
	if (inet_pton(AF_INET, c->host, &a) != 1) {
		snprintf(err, errlen, "host '%s' is not an IPv4 address", c->host);
		return -EINVAL;
	}
	const struct {
		const char *what;
		uint16_t port;
	} ports[] = {{"nfs_port", c->nfs_port}, {"mount_port", c->mount_port}};
	for (size_t i = 0; i < 2; i++) {
		int r = port_probe(c->host, ports[i].port);
		if (r) {
			snprintf(err, errlen, "%s %s:%u: %s", ports[i].what, c->host, ports[i].port,
				 strerror(-r));
			return r;
		}
	}
	return 0;
}

int gateway_start(const struct gateway_params *p, struct gateway **out, gateway_cb cb, void *arg)
{
	const struct config_gateway *cg = config_gateway(p->cluster, p->name);
	if (!cg) {
		gw_log(NULL, "no [gateway.%s] section in the cluster file", p->name);
		return -ENOENT;
	}
	struct gateway *g = calloc(1, sizeof(*g));
	if (!g)
		return -ENOMEM;
	g->l = p->l;
	g->cluster = *p->cluster;
	g->cfg = *cg;
	g->on_fenced = p->on_fenced;
	g->fenced_arg = p->arg;
	g->state = GW_STARTING;
	g->cb = cb;
	g->cb_arg = arg;
	snprintf(g->engine_id, sizeof(g->engine_id), "nfsgw-%s", g->cfg.name);
	char err[512] = "";
	int r = check_ports(&g->cfg, err, sizeof(err));
	if (!r)
		r = gw_read_exports_file(g, err, sizeof(err));
	if (!r && !(g->fence_buf = aligned_alloc(4096, GW_FENCE_READ)))
		r = -ENOMEM;
	if (r) {
		gw_log(g, "cannot start: %s", err[0] ? err : strerror(-r));
		free(g->file_text);
		free(g->fence_buf);
		free(g);
		return r;
	}
	const struct filevol_params fp = {
	    .l = g->l,
	    .cluster = &g->cluster,
	    .replicas = g->cfg.replicas ? g->cfg.replicas : g->cluster.replicas,
	    .engine_id = g->engine_id,
	};
	r = filevol_new(&fp, &g->fv);
	if (r) {
		gw_log(g, "cannot start: file volumes: %s", strerror(-r));
		free(g->file_text);
		free(g->fence_buf);
		free(g);
		return r;
	}
	gw_log(g, "starting: opening meta volume %s (this fences any previous gateway)",
	       g->cfg.meta_volume);
	*out = g;
	r = filevol_open_bdev(g->fv, g->cfg.meta_volume, META_VOLUME_SIZE, &g->meta_dev,
			      on_meta_dev, g);
	if (r)
		fail(g, r, "meta volume %s: %s", g->cfg.meta_volume, strerror(-r));
	return 0;
}

/* ---- teardown (stop, failed start, fenced) ---- */

struct gw_teardown {
	struct gateway *g;
	void (*done)(struct gateway *g);
};

static void td_fv_closed(void *arg, int res)
{
	struct gw_teardown *t = arg;
	struct gateway *g = t->g;
	if (res)
		gw_log(g, "closing the file volumes: %s", strerror(-res));
	g->fv = NULL;
	gw_exports_free(g);
	void (*done)(struct gateway *) = t->done;
	free(t);
	if (done)
		done(g);
}

static void td_close_fv(struct gw_teardown *t)
{
	struct gateway *g = t->g;
	if (!g->fv) {
		td_fv_closed(t, 0);
		return;
	}
	int r = filevol_close(g->fv, td_fv_closed, t);
	if (r)
		td_fv_closed(t, r);
}

static void td_meta_closed(void *arg, int res)
{
	struct gw_teardown *t = arg;
	if (res)
		gw_log(t->g, "closing the meta: %s", strerror(-res));
	t->g->meta = NULL;
	t->g->meta_open = false;
	td_close_fv(t);
}

static void td_close_meta(struct gw_teardown *t)
{
	struct gateway *g = t->g;
	/* A meta whose open failed is not ours to close (meta_open's callback reported it). */
	if (!g->meta || !g->meta_open) {
		td_close_fv(t);
		return;
	}
	int r = meta_close(g->meta, td_meta_closed, t);
	if (r)
		td_meta_closed(t, r);
}

static void td_drain(void *arg)
{
	struct gw_teardown *t = arg;
	struct gateway *g = t->g;
	g->drain_timer = NULL;
	/* NFS requests in flight still use the meta and the engines: wait for them before
	 * closing those (and for a fence read on the meta volume). */
	bool busy = g->fence_reading || g->snap_busy || (g->nfs && nfs3_inflight(g->nfs));
	static const uint64_t max_polls = GW_DRAIN_MAX_MS / GW_DRAIN_POLL_MS;
	if (busy && g->drain_polls < max_polls) {
		g->drain_polls++;
		if (loop_timer_add(g->l, GW_DRAIN_POLL_MS, td_drain, t, &g->drain_timer) == 0)
			return;
	}
	if (busy)
		gw_log(g, "stopping with requests still in flight");
	nfs3_prog_free(g->nfs);
	g->nfs = NULL;
	td_close_meta(t);
}

static void td_unregistered(struct gateway *g, int res);

static void teardown(struct gateway *g, void (*done)(struct gateway *g))
{
	g->state = GW_STOPPING;
	if (g->fence_timer) {
		loop_timer_cancel(g->l, g->fence_timer);
		g->fence_timer = NULL;
	}
	struct gw_teardown *t = calloc(1, sizeof(*t));
	if (!t) {
		/* Nothing sane is left to do without memory; leave the rest to exit. */
		if (done)
			done(g);
		return;
	}
	t->g = g;
	t->done = done;
	g->td = t;
	/* Off the host's rpcbind first, so nobody is sent to ports about to close. */
	gw_pmap_unregister(g, td_unregistered);
}

static void td_unregistered(struct gateway *g, int res)
{
	(void)res;
	struct gw_teardown *t = g->td;
	g->td = NULL;
	if (g->rpc) {
		/* Closes every listener and connection; calls still in handlers finish into
		 * the void. MOUNT and the portmapper answer synchronously: nothing of theirs is
		 * in flight. */
		rpc_server_free(g->rpc);
		g->rpc = NULL;
	}
	mount_prog_free(g->mnt);
	g->mnt = NULL;
	if (g->pm)
		portmap_free(g->pm);
	g->pm = NULL;
	g->drain_polls = 0;
	td_drain(t);
}

/* ---- stop ---- */

static void stopped(struct gateway *g)
{
	gateway_cb cb = g->cb;
	void *arg = g->cb_arg;
	gw_log(g, "stopped");
	free(g->fence_buf);
	free(g);
	if (cb)
		cb(arg, 0);
}

static void fenced_free(void *arg)
{
	/* Fenced earlier: the teardown already ran; only the memory is left. */
	stopped(arg);
}

int gateway_stop(struct gateway *g, gateway_cb cb, void *arg)
{
	if (!g)
		return -EINVAL;
	if (g->state == GW_STARTING)
		return -EBUSY;
	g->cb = cb;
	g->cb_arg = arg;
	if (g->torn_down) {
		/* The fenced teardown finished (on_fenced ran after it): free and report. */
		return loop_defer(g->l, fenced_free, g);
	}
	if (g->state == GW_STOPPING) {
		g->stop_requested = true; /* a fenced teardown is running; it finishes the stop */
		return 0;
	}
	gw_log(g, "stopping");
	teardown(g, stopped);
	return 0;
}

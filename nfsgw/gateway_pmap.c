/*
 * gateway_pmap: registering the gateway's MOUNT (v1-v3) and NFS (v3) programs with a
 * portmapper. With our own portmapper it is a table update; with the host's rpcbind it is a
 * blocking client (pmap_client_set), so it runs on a helper thread and reports back to the
 * loop with loop_post: the loop keeps serving the engines meanwhile.
 */
#include <errno.h>
#include <pthread.h>
#include <stdlib.h>

#include "nfsgw/gateway_int.h"

struct pmap_job {
	struct gateway *g;
	bool set;
	int res;
	pthread_t thread;
	void (*done)(struct gateway *g, int res);
};

static const uint32_t mount_versions[] = {1, 2, 3};

static int host_register(const struct gateway *g)
{
	const struct {
		uint32_t prog, vers;
		uint16_t port;
	} regs[] = {{MOUNT_PROG, 1, g->cfg.mount_port},
		    {MOUNT_PROG, 2, g->cfg.mount_port},
		    {MOUNT_PROG, 3, g->cfg.mount_port},
		    {NFS3_PROG, 3, g->cfg.nfs_port}};
	for (size_t i = 0; i < sizeof(regs) / sizeof(regs[0]); i++) {
		int r = pmap_client_set(g->cfg.host, regs[i].prog, regs[i].vers, PMAP_PROT_TCP,
					regs[i].port);
		/* A registration left by an earlier run makes SET answer FALSE. */
		if (r == -EEXIST) {
			pmap_client_unset(g->cfg.host, regs[i].prog, regs[i].vers);
			r = pmap_client_set(g->cfg.host, regs[i].prog, regs[i].vers, PMAP_PROT_TCP,
					    regs[i].port);
		}
		if (r)
			return r;
	}
	return 0;
}

static void host_unregister(const struct gateway *g)
{
	for (size_t i = 0; i < 3; i++)
		pmap_client_unset(g->cfg.host, MOUNT_PROG, mount_versions[i]);
	pmap_client_unset(g->cfg.host, NFS3_PROG, 3);
}

static void job_done(void *arg)
{
	struct pmap_job *j = arg;
	pthread_join(j->thread, NULL);
	struct gateway *g = j->g;
	void (*done)(struct gateway *, int) = j->done;
	int res = j->res;
	free(j);
	done(g, res);
}

static void *job_thread(void *arg)
{
	struct pmap_job *j = arg;
	if (j->set)
		j->res = host_register(j->g);
	else
		host_unregister(j->g);
	/* Only fails when the loop is being freed, which waits for nothing of ours. */
	loop_post(j->g->l, job_done, j);
	return NULL;
}

static void run_job(struct gateway *g, bool set, void (*done)(struct gateway *g, int res))
{
	struct pmap_job *j = calloc(1, sizeof(*j));
	if (j) {
		j->g = g;
		j->set = set;
		j->done = done;
		if (pthread_create(&j->thread, NULL, job_thread, j) == 0)
			return;
		free(j);
	}
	done(g, -ENOMEM);
}

void gw_pmap_register(struct gateway *g, void (*done)(struct gateway *g, int res))
{
	if (g->pmap == GW_PMAP_OWN) {
		int r = 0;
		for (size_t i = 0; i < 3 && !r; i++)
			r = portmap_set(g->pm, MOUNT_PROG, mount_versions[i], PMAP_PROT_TCP,
					g->cfg.mount_port);
		if (!r)
			r = portmap_set(g->pm, NFS3_PROG, 3, PMAP_PROT_TCP, g->cfg.nfs_port);
		done(g, r);
		return;
	}
	g->pmap_host_tried = true;
	run_job(g, true, done);
}

void gw_pmap_unregister(struct gateway *g, void (*done)(struct gateway *g, int res))
{
	/* Also after a failed registration: part of it may have been accepted. */
	if (!g->pmap_host_tried) {
		done(g, 0);
		return;
	}
	run_job(g, false, done);
}

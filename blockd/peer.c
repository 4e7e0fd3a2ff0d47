/*
 * peer: parallel control-API requests to other nodes (see peer.h): one thread per peer, each
 * a plain http_request() under the shared deadline, so one dead node costs the deadline once.
 */
#include "blockd/peer.h"

#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <time.h>

#include "blockd/http_client.h"

struct job {
	struct peer_get *p;
	int timeout_ms;
	pthread_t th;
	bool started;
};

static void *run_one(void *arg)
{
	struct job *j = arg;
	struct peer_get *p = j->p;
	struct http_resp resp = {0};
	p->err = http_request(p->host, p->port, p->method ? p->method : "GET", p->path, NULL,
			      j->timeout_ms, &resp);
	if (p->err == 0) {
		p->status = resp.status;
		p->reply = json_loadb(resp.body, resp.len, 0, NULL);
	}
	http_resp_free(&resp);
	return NULL;
}

void peer_get_all(struct peer_get *p, unsigned n, int timeout_ms)
{
	struct job *jobs = calloc(n ? n : 1, sizeof(*jobs));
	for (unsigned i = 0; i < n; i++) {
		p[i].err = -ENOMEM;
		p[i].status = 0;
		p[i].reply = NULL;
	}
	if (!jobs)
		return;
	for (unsigned i = 0; i < n; i++) {
		jobs[i] = (struct job){.p = &p[i], .timeout_ms = timeout_ms};
		jobs[i].started = pthread_create(&jobs[i].th, NULL, run_one, &jobs[i]) == 0;
		if (!jobs[i].started)
			p[i].err = -EAGAIN;
	}
	for (unsigned i = 0; i < n; i++)
		if (jobs[i].started)
			pthread_join(jobs[i].th, NULL);
	free(jobs);
}

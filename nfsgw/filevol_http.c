/*
 * filevol_http: the helper thread of filevol. Runs the blocking control-API calls (replica
 * create/delete on the nodes, a volume's allocated bytes, the volume list) one job at a time
 * and posts each finished job back to the loop. Touches nothing but the job and the
 * read-only cluster copy.
 */
#include <errno.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "blockd/http_client.h"
#include "nfsgw/filevol_int.h"

#define FVH_TIMEOUT_MS 5000
#define FVH_HEALTH_MS 1000

static int req(const struct config_node *n, const char *method, const char *path, const char *body,
	       int timeout_ms, json_t **reply)
{
	struct http_resp r;
	if (reply)
		*reply = NULL;
	int e = http_request(n->host, n->http_port, method, path, body, timeout_ms, &r);
	if (e < 0)
		return e;
	if (reply)
		*reply = json_loads(r.body, 0, NULL);
	int st = r.status;
	http_resp_free(&r);
	return st;
}

static void job_create(struct fv_job *j)
{
	const struct config *c = &j->fv->cfg;
	const struct config_node *pick[CONFIG_MAX_NODES];
	unsigned n = 0;
	for (unsigned i = 0; i < c->nnodes && n < j->replicas; i++) {
		const struct config_node *nd = &c->nodes[(j->start + i) % c->nnodes];
		if (req(nd, "GET", "/v1/health", NULL, FVH_HEALTH_MS, NULL) == 200)
			pick[n++] = nd;
	}
	if (n < j->replicas || n == 0) {
		j->res = -ENOSPC;
		return;
	}
	json_t *members = json_array();
	size_t off = 0;
	for (unsigned i = 0; i < n; i++) {
		json_array_append_new(members, json_string(pick[i]->name));
		int w = snprintf(j->members + off, sizeof(j->members) - off, "%s%s", i ? "," : "",
				 pick[i]->name);
		if (w > 0 && (size_t)w < sizeof(j->members) - off)
			off += (size_t)w;
	}
	json_t *b = json_pack("{s:s,s:I,s:o}", "volume", j->name, "size", (json_int_t)j->size,
			      "members", members);
	char *body = b ? json_dumps(b, JSON_COMPACT) : NULL;
	json_decref(b);
	if (!body) {
		j->res = -ENOMEM;
		return;
	}
	unsigned made = 0;
	int res = 0;
	for (; made < n; made++) {
		int st = req(pick[made], "POST", "/v1/replicas", body, FVH_TIMEOUT_MS, NULL);
		if (st >= 200 && st < 300)
			continue;
		/* 409: a replica exists (a crash between create and use, or a racing create
		 * elsewhere): the volume exists, open it. */
		res = st == 409 ? -EEXIST : -EIO;
		break;
	}
	free(body);
	if (res == -EIO) {
		char path[128];
		snprintf(path, sizeof(path), "/v1/replicas/%s?force=1", j->name);
		for (unsigned i = 0; i < made; i++)
			req(pick[i], "DELETE", path, NULL, FVH_TIMEOUT_MS, NULL);
	}
	j->res = res;
}

static void job_delete(struct fv_job *j)
{
	const struct config *c = &j->fv->cfg;
	char path[128];
	snprintf(path, sizeof(path), "/v1/replicas/%s?force=1", j->name);
	unsigned deleted = 0, failed = 0;
	for (unsigned i = 0; i < c->nnodes; i++) {
		int st = req(&c->nodes[i], "DELETE", path, NULL, FVH_TIMEOUT_MS, NULL);
		if (st >= 200 && st < 300)
			deleted++;
		else if (st != 404)
			failed++;
	}
	j->failed = failed;
	j->res = deleted ? 0 : failed ? -EIO : -ENOENT;
}

static int add_name(struct fv_job *j, const char *nm, uint64_t alloc)
{
	if ((j->nnames & (j->nnames - 1)) == 0) { /* grows at powers of two */
		size_t cap = j->nnames ? 2 * j->nnames : 1;
		char **nn = realloc(j->names, cap * sizeof(*nn));
		if (nn)
			j->names = nn;
		uint64_t *na = realloc(j->alloc, cap * sizeof(*na));
		if (na)
			j->alloc = na;
		if (!nn || !na)
			return -ENOMEM;
	}
	char *d = strdup(nm);
	if (!d)
		return -ENOMEM;
	j->names[j->nnames] = d;
	j->alloc[j->nnames] = alloc;
	j->nnames++;
	return 0;
}

static void job_used(struct fv_job *j)
{
	const struct config *c = &j->fv->cfg;
	j->res = 0;
	for (unsigned i = 0; i < c->nnodes; i++) {
		json_t *reply;
		int st = req(&c->nodes[i], "GET", "/v1/replicas", NULL, FVH_TIMEOUT_MS, &reply);
		if (st != 200 || !json_is_array(reply)) {
			j->failed++;
			json_decref(reply);
			continue;
		}
		size_t k;
		json_t *x;
		json_array_foreach(reply, k, x)
		{
			const char *nm = json_string_value(json_object_get(x, "volume"));
			json_t *a = json_object_get(x, "allocated");
			if (nm && json_is_integer(a) &&
			    add_name(j, nm, (uint64_t)json_integer_value(a)) < 0) {
				j->res = -ENOMEM;
				break;
			}
		}
		json_decref(reply);
	}
	if (j->failed == c->nnodes)
		j->res = -EIO;
}

static bool have_name(const struct fv_job *j, const char *s)
{
	for (size_t i = 0; i < j->nnames; i++)
		if (!strcmp(j->names[i], s))
			return true;
	return false;
}

static void job_list(struct fv_job *j)
{
	const struct config *c = &j->fv->cfg;
	size_t plen = strlen(j->prefix);
	j->res = 0;
	for (unsigned i = 0; i < c->nnodes; i++) {
		json_t *reply;
		int st = req(&c->nodes[i], "GET", "/v1/replicas", NULL, FVH_TIMEOUT_MS, &reply);
		if (st != 200 || !json_is_array(reply)) {
			fprintf(stderr, "filevol: listing volumes: %s unreachable\n",
				c->nodes[i].name);
			json_decref(reply);
			continue;
		}
		size_t k;
		json_t *x;
		json_array_foreach(reply, k, x)
		{
			const char *nm = json_string_value(json_object_get(x, "volume"));
			if (!nm || strncmp(nm, j->prefix, plen) || have_name(j, nm))
				continue;
			if (add_name(j, nm, 0) < 0) {
				j->res = -ENOMEM;
				break;
			}
		}
		json_decref(reply);
	}
}

static void job_probe(struct fv_job *j)
{
	const struct config *c = &j->fv->cfg;
	unsigned down = 0;
	bool found = false;
	for (unsigned i = 0; i < c->nnodes && !found; i++) {
		json_t *reply;
		int st = req(&c->nodes[i], "GET", "/v1/replicas", NULL, FVH_TIMEOUT_MS, &reply);
		if (st != 200 || !json_is_array(reply)) {
			down++;
		} else {
			size_t k;
			json_t *x;
			json_array_foreach(reply, k, x)
			{
				const char *nm = json_string_value(json_object_get(x, "volume"));
				found |= nm && !strcmp(nm, j->name);
			}
		}
		json_decref(reply);
	}
	j->res = !found && down < j->replicas ? -ENOENT : -EIO;
}

static void job_back(void *arg)
{
	struct fv_job *j = arg;
	j->fv->jobs_out--;
	j->done(j);
}

static void *helper(void *arg)
{
	struct filevol *fv = arg;
	pthread_mutex_lock(&fv->mu);
	for (;;) {
		while (!fv->jhead && !fv->th_stop)
			pthread_cond_wait(&fv->cv, &fv->mu);
		if (!fv->jhead)
			break;
		struct fv_job *j = fv->jhead;
		fv->jhead = j->next;
		if (!fv->jhead)
			fv->jtail = NULL;
		pthread_mutex_unlock(&fv->mu);
		switch (j->kind) {
		case JOB_CREATE:
			job_create(j);
			break;
		case JOB_DELETE:
			job_delete(j);
			break;
		case JOB_USED:
			job_used(j);
			break;
		case JOB_LIST:
			job_list(j);
			break;
		case JOB_PROBE:
			job_probe(j);
			break;
		}
		/* loop_post only fails without memory; retrying keeps the loop side's count
		 * of outstanding jobs exact. */
		while (loop_post(fv->l, job_back, j) < 0)
			;
		pthread_mutex_lock(&fv->mu);
	}
	pthread_mutex_unlock(&fv->mu);
	return NULL;
}

int fvh_start(struct filevol *fv)
{
	pthread_mutex_init(&fv->mu, NULL);
	pthread_cond_init(&fv->cv, NULL);
	int r = pthread_create(&fv->th, NULL, helper, fv);
	if (r) {
		pthread_cond_destroy(&fv->cv);
		pthread_mutex_destroy(&fv->mu);
		return -r;
	}
	fv->th_started = true;
	return 0;
}

void fvh_stop(struct filevol *fv)
{
	if (!fv->th_started)
		return;
	pthread_mutex_lock(&fv->mu);
	fv->th_stop = true;
	pthread_cond_signal(&fv->cv);
	pthread_mutex_unlock(&fv->mu);
	pthread_join(fv->th, NULL);
	pthread_cond_destroy(&fv->cv);
	pthread_mutex_destroy(&fv->mu);
	fv->th_started = false;
}

void fvh_submit(struct filevol *fv, struct fv_job *j)
{
	j->fv = fv;
	j->next = NULL;
	fv->jobs_out++;
	pthread_mutex_lock(&fv->mu);
	if (fv->jtail)
		fv->jtail->next = j;
	else
		fv->jhead = j;
	fv->jtail = j;
	pthread_cond_signal(&fv->cv);
	pthread_mutex_unlock(&fv->mu);
}

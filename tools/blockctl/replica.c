/*
 * replica: ls / verify [--repair] / wait for one volume's replica set, through the volume's
 * engine (the node it is attached to, else a temporary engine on a member node). verify
 * without --repair only reads; with it, exit 0 means every replica matches afterwards.
 */
#include <inttypes.h>
#include <string.h>
#include <time.h>

#include "tools/blockctl/blockctl.h"

#define WAIT_DEFAULT_S 300
#define WAIT_POLL_MS 1000

static const char *state_str(json_t *r)
{
	json_t *s = json_object_get(r, "state");
	if (json_is_string(s))
		return json_string_value(s);
	static const char *const names[] = {"healthy", "rebuilding", "stale"};
	if (json_is_integer(s) && json_integer_value(s) >= 0 && json_integer_value(s) < 3)
		return names[json_integer_value(s)];
	return "?";
}

static void progress_str(json_t *r, char *buf, size_t cap)
{
	uint64_t total = jint(r, "resync_total"), done = jint(r, "resync_done");
	if (total)
		snprintf(buf, cap, "%u%%",
			 (unsigned)((double)(done > total ? total : done) * 100.0 / (double)total));
	else if (strcmp(state_str(r), "healthy") == 0)
		snprintf(buf, cap, "100%%");
	else
		snprintf(buf, cap, "-");
}

static int rep_ls(struct ctx *c, const char *vol)
{
	json_t *list = vol_call(c, "replica ls", vol, "GET", "/replicas", NULL, T_LONG_MS);
	if (!json_is_array(list))
		die("replica ls: %s: the node answered without a replica list", vol);
	if (c->json) {
		size_t i;
		json_t *r;
		json_array_foreach(list, i, r)
		{
			char p[16];
			progress_str(r, p, sizeof(p));
			json_object_set_new(r, "progress", json_string(p));
		}
		print_json(list);
		json_decref(list);
		return 0;
	}
	struct table t;
	const char *h[] = {"NODE", "STATE", ">EPOCH", ">COPIED", ">PROGRESS", "ERROR"};
	table_init(&t, 6, h);
	size_t i;
	json_t *r;
	json_array_foreach(list, i, r)
	{
		char ep[24], cp[16], p[16];
		snprintf(ep, sizeof(ep), "%" PRIu64, jint(r, "epoch"));
		format_size(jint(r, "resync_copied"), cp, sizeof(cp));
		progress_str(r, p, sizeof(p));
		const char *err = jstr(r, "error");
		const char *row[] = {jstr(r, "node"),	    state_str(r), ep, cp, p,
				     err && *err ? err : ""};
		table_add(&t, row);
	}
	table_print(&t, stdout);
	table_free(&t);
	json_decref(list);
	return 0;
}

static void print_hashes(json_t *d)
{
	const char *node;
	json_t *h;
	const char *sep = ":";
	json_object_foreach(json_object_get(d, "hashes"), node, h)
	{
		printf("%s %s=%s", sep, node, json_is_string(h) ? json_string_value(h) : "?");
		sep = "";
	}
}

/* Snapshot views that differ (verify and repair compare them, neither repairs them). */
static size_t print_snapshots(json_t *res)
{
	size_t i;
	json_t *d;
	json_array_foreach(json_object_get(res, "snapshots_differ"), i, d)
	{
		printf("snapshot %s differs: offset %" PRIu64 " length %" PRIu64,
		       jstr(d, "snapshot") ? jstr(d, "snapshot") : "?", jint(d, "offset"),
		       jint(d, "length"));
		print_hashes(d);
		printf("\n");
	}
	json_array_foreach(json_object_get(res, "snapshots_unchecked"), i, d) printf(
	    "snapshot %s not checked on %s: %s\n", jstr(d, "snapshot") ? jstr(d, "snapshot") : "?",
	    jstr(d, "node") ? jstr(d, "node") : "?", jstr(d, "error") ? jstr(d, "error") : "?");
	return json_array_size(json_object_get(res, "snapshots_differ"));
}

static int rep_verify(struct ctx *c, const char *vol)
{
	json_t *res = vol_call(c, "replica verify", vol, "POST", "/verify", NULL, T_LONG_MS);
	if (!json_is_object(res))
		die("replica verify: %s: the node answered without a result", vol);
	json_t *differ = json_object_get(res, "differ");
	size_t ndiff = json_array_size(differ);
	size_t nsnap = json_array_size(json_object_get(res, "snapshots_differ"));
	if (c->json) {
		print_json(res);
	} else {
		size_t i;
		json_t *d;
		json_array_foreach(differ, i, d)
		{
			printf("differ: offset %" PRIu64 " length %" PRIu64, jint(d, "offset"),
			       jint(d, "length"));
			print_hashes(d);
			printf("\n");
		}
		print_snapshots(res);
		if (ndiff || nsnap)
			fprintf(stderr,
				"blockctl: replica verify: %s: %zu of %" PRIu64
				" extents differ between replicas, %zu in snapshots\n",
				vol, ndiff, jint(res, "checked"), nsnap);
		else
			printf("all %" PRIu64 " extents match\n", jint(res, "checked"));
	}
	json_decref(res);
	return ndiff || nsnap ? 1 : 0;
}

/* Exit 1 only for what is still inconsistent: the extents repair could not fix, and
 * snapshot views that differ. */
static int rep_repair(struct ctx *c, const char *vol)
{
	json_t *res =
	    vol_call(c, "replica verify --repair", vol, "POST", "/repair", NULL, T_LONG_MS);
	if (!json_is_object(res))
		die("replica verify --repair: %s: the node answered without a result", vol);
	json_t *rep = json_object_get(res, "repaired");
	json_t *un = json_object_get(res, "unrepairable");
	size_t nun = json_array_size(un);
	size_t nsnap = json_array_size(json_object_get(res, "snapshots_differ"));
	if (c->json) {
		print_json(res);
	} else {
		size_t i;
		json_t *d;
		json_array_foreach(rep, i, d)
		{
			printf("repaired: offset %" PRIu64 " length %" PRIu64 " from %s to",
			       jint(d, "offset"), jint(d, "length"), jstr(d, "from"));
			size_t k;
			json_t *to;
			json_array_foreach(json_object_get(d, "to"), k, to)
			    printf("%s%s", k ? "," : " ",
				   json_is_string(to) ? json_string_value(to) : "?");
			printf("\n");
		}
		json_array_foreach(un, i, d)
		{
			printf("unrepairable: offset %" PRIu64 " length %" PRIu64 " (%s)",
			       jint(d, "offset"), jint(d, "length"),
			       jstr(d, "reason") ? jstr(d, "reason") : "?");
			print_hashes(d);
			printf("\n");
		}
		print_snapshots(res);
		if (nun)
			fprintf(stderr,
				"blockctl: replica verify --repair: %s: %zu extents still differ "
				"between replicas (no majority agrees, or the copy failed)\n",
				vol, nun);
		if (nsnap)
			fprintf(
			    stderr,
			    "blockctl: replica verify --repair: %s: %zu snapshot extents differ "
			    "between replicas (snapshots are not repaired)\n",
			    vol, nsnap);
		if (!nun && !nsnap)
			printf("all %" PRIu64 " extents match (%zu repaired)\n",
			       jint(res, "checked"), json_array_size(rep));
	}
	json_decref(res);
	return nun || nsnap ? 1 : 0;
}

/* Sums resync progress over the replicas that are not healthy yet. */
static void resync_progress(json_t *list, uint64_t *done, uint64_t *total)
{
	*done = *total = 0;
	size_t i;
	json_t *r;
	json_array_foreach(list, i, r)
	{
		if (strcmp(state_str(r), "healthy") == 0)
			continue;
		*done += jint(r, "resync_done");
		*total += jint(r, "resync_total");
	}
}

static int rep_wait(struct ctx *c, const char *vol, uint64_t timeout_s)
{
	const char *what = "replica wait";
	struct view v;
	struct volinfo vi;
	view_load_volume(c, what, vol, &v, &vi);
	bool attached = vi.attached != NULL;
	view_free(&v);
	int64_t deadline = mono_ms() + (int64_t)timeout_s * 1000;
	struct progress p;
	bool shown = false;
	for (;;) {
		int64_t left = deadline - mono_ms();
		if (left < 0)
			left = 0;
		/* Attached: poll in short steps to show progress. Otherwise each call opens a
		 * temporary engine, so make a single call that waits the whole time. */
		int64_t step = attached && left > WAIT_POLL_MS ? WAIT_POLL_MS : left;
		json_t *body = json_pack("{s:I}", "timeout_ms", (json_int_t)step);
		json_t *out = NULL;
		int status = vol_call_status(c, what, vol, "POST", "/wait-healthy", body,
					     (int)step + T_DEFAULT_MS, &out);
		json_decref(body);
		if (status >= 200 && status <= 299) {
			json_decref(out);
			break;
		}
		if (status != 503 || mono_ms() >= deadline) {
			if (shown)
				progress_end(&p);
			char b[32];
			if (status == 503)
				die("%s: %s: not healthy after %" PRIu64 " s (%s)", what, vol,
				    timeout_s, reply_error(out, status, b, sizeof(b)));
			die("%s: %s: %s", what, vol, reply_error(out, status, b, sizeof(b)));
		}
		json_decref(out);
		json_t *list = NULL;
		status =
		    vol_call_status(c, what, vol, "GET", "/replicas", NULL, T_DEFAULT_MS, &list);
		if (status == 200 && json_is_array(list)) {
			uint64_t done, total;
			resync_progress(list, &done, &total);
			if (total) {
				if (!shown)
					progress_start(&p, vol, total);
				shown = true;
				p.total = total;
				progress_update(&p, done);
			}
		}
		json_decref(list);
	}
	if (shown) {
		progress_update(&p, p.total);
		progress_end(&p);
	}
	printf("%s: all replicas healthy\n", vol);
	return 0;
}

int cmd_replica(struct ctx *c, int argc, char **argv)
{
	const char *cmd = argv[0];
	char what[64];
	snprintf(what, sizeof(what), "replica %s", cmd);
	const char *o_timeout = NULL;
	const struct optspec wait_specs[] = {{"timeout", true, &o_timeout}, {0}};
	const char *o_repair = NULL;
	const struct optspec none[] = {{0}};
	const struct optspec verify_specs[] = {{"repair", false, &o_repair}, {0}};
	bool is_wait = strcmp(cmd, "wait") == 0;
	if (!is_wait && strcmp(cmd, "ls") != 0 && strcmp(cmd, "verify") != 0)
		usage_die("replica: unknown command '%s' (ls, verify, wait)", cmd);
	char err[256], *pos[1];
	int n = opts_parse(argc - 1, argv + 1,
			   is_wait			? wait_specs
			   : strcmp(cmd, "verify") == 0 ? verify_specs
							: none,
			   pos, 1, err, sizeof(err));
	if (n < 0)
		usage_die("%s: %s", what, err);
	if (n != 1)
		usage_die("%s: missing VOL (see 'blockctl replica --help')", what);
	check_name(what, pos[0]);
	if (strcmp(cmd, "ls") == 0)
		return rep_ls(c, pos[0]);
	if (strcmp(cmd, "verify") == 0)
		return o_repair ? rep_repair(c, pos[0]) : rep_verify(c, pos[0]);
	uint64_t timeout = WAIT_DEFAULT_S;
	if (o_timeout && parse_uint(o_timeout, 86400 * 7, &timeout) < 0)
		usage_die("%s: bad --timeout '%s' (seconds)", what, o_timeout);
	return rep_wait(c, pos[0], timeout);
}

/*
 * snapshot: create / ls / rm / revert / clone, each one volume route (see nodeapi.c for
 * how the node is chosen).
 */
#include <inttypes.h>
#include <string.h>
#include <time.h>

#include "tools/blockctl/blockctl.h"

static void args(const char *what, int argc, char **argv, char **pos, int npos)
{
	const struct optspec specs[] = {{0}};
	char err[256];
	int n = opts_parse(argc, argv, specs, pos, npos, err, sizeof(err));
	if (n < 0)
		usage_die("%s: %s", what, err);
	if (n != npos)
		usage_die("%s: missing argument (see 'blockctl snapshot --help')", what);
	for (int i = 0; i < npos; i++)
		check_name(what, pos[i]);
}

static void format_time(json_t *v, char *buf, size_t cap)
{
	if (json_is_string(v)) {
		snprintf(buf, cap, "%s", json_string_value(v));
		return;
	}
	if (!json_is_integer(v) && !json_is_real(v)) {
		snprintf(buf, cap, "-");
		return;
	}
	time_t t = (time_t)json_number_value(v);
	/* Some nodes may report milliseconds; anything past year 5000 in seconds is that. */
	if (t > 95617584000LL)
		t /= 1000;
	struct tm tm;
	gmtime_r(&t, &tm);
	strftime(buf, cap, "%Y-%m-%d %H:%M:%SZ", &tm);
}

static int snap_ls(struct ctx *c, const char *vol)
{
	json_t *list = vol_call(c, "snapshot ls", vol, "GET", "/snapshots", NULL, T_LONG_MS);
	if (c->json) {
		print_json(list ? list : json_array());
		json_decref(list);
		return 0;
	}
	if (!json_is_array(list) || json_array_size(list) == 0) {
		printf("%s has no snapshots\n", vol);
		json_decref(list);
		return 0;
	}
	struct table t;
	const char *h[] = {"NAME", "PARENT", "CREATED", ">ALLOCATED", "STATE"};
	table_init(&t, 5, h);
	size_t i;
	json_t *s;
	json_array_foreach(list, i, s)
	{
		char created[48], al[16];
		format_time(json_object_get(s, "created"), created, sizeof(created));
		format_size(jint(s, "allocated"), al, sizeof(al));
		const char *state = json_is_true(json_object_get(s, "deleting")) ? "deleting"
				    : json_is_false(json_object_get(s, "in_head_chain"))
					? "off-chain"
					: "ok";
		const char *parent = jstr(s, "parent");
		const char *row[] = {jstr(s, "name"), parent && *parent ? parent : NULL, created,
				     al, state};
		table_add(&t, row);
	}
	table_print(&t, stdout);
	table_free(&t);
	json_decref(list);
	return 0;
}

int cmd_snapshot(struct ctx *c, int argc, char **argv)
{
	const char *cmd = argv[0];
	char *pos[3];
	char what[64], sub[256];
	snprintf(what, sizeof(what), "snapshot %s", cmd);
	json_t *body = NULL, *r = NULL;
	if (strcmp(cmd, "ls") == 0 || strcmp(cmd, "list") == 0) {
		args(what, argc - 1, argv + 1, pos, 1);
		return snap_ls(c, pos[0]);
	} else if (strcmp(cmd, "create") == 0) {
		args(what, argc - 1, argv + 1, pos, 2);
		body = json_pack("{s:s}", "name", pos[1]);
		r = vol_call(c, what, pos[0], "POST", "/snapshots", body, T_LONG_MS);
		printf("created snapshot %s of %s\n", pos[1], pos[0]);
	} else if (strcmp(cmd, "rm") == 0 || strcmp(cmd, "delete") == 0) {
		args(what, argc - 1, argv + 1, pos, 2);
		snprintf(sub, sizeof(sub), "/snapshots/%s", pos[1]);
		r = vol_call(c, what, pos[0], "DELETE", sub, NULL, T_LONG_MS);
		printf("removed snapshot %s of %s\n", pos[1], pos[0]);
	} else if (strcmp(cmd, "revert") == 0) {
		args(what, argc - 1, argv + 1, pos, 2);
		snprintf(sub, sizeof(sub), "/snapshots/%s/revert", pos[1]);
		r = vol_call(c, what, pos[0], "POST", sub, NULL, T_LONG_MS);
		printf("reverted %s to snapshot %s\n", pos[0], pos[1]);
	} else if (strcmp(cmd, "clone") == 0) {
		args(what, argc - 1, argv + 1, pos, 3);
		snprintf(sub, sizeof(sub), "/snapshots/%s/clone", pos[1]);
		body = json_pack("{s:s}", "name", pos[2]);
		r = vol_call(c, what, pos[0], "POST", sub, body, T_LONG_MS);
		printf("cloned snapshot %s of %s into new volume %s\n", pos[1], pos[0], pos[2]);
	} else {
		usage_die("snapshot: unknown command '%s' (create, ls, rm, revert, clone)", cmd);
	}
	json_decref(r);
	json_decref(body);
	return 0;
}

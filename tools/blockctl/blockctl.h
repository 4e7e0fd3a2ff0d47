/*
 * blockctl: shared state of one invocation (the parsed cluster file, --json) and the
 * helpers every command group uses to talk to nodes (nodeapi.c).
 *
 * There is no central catalogue: the cluster view is rebuilt on each call by asking every
 * node for its replicas and attachments (see docs/ARCHITECTURE.md).
 */
#ifndef BLOCKCTL_H
#define BLOCKCTL_H

#include <jansson.h>
#include <stdbool.h>
#include <stdint.h>

#include "blockd/config.h"
#include "tools/blockctl/util.h"

#define T_HEALTH_MS 1000
#define T_LIST_MS 5000 /* a hung node must not stall every listing for long */
#define T_DEFAULT_MS 30000
#define T_LONG_MS 600000

struct ctx {
	const char *conf_path; /* -c, else $BLOCKD_CONF; NULL when neither */
	bool json;
	bool cfg_loaded;
	struct config cfg;
};

/* Loads the cluster file once; dies with a clear line when there is none. */
void ctx_config(struct ctx *c);

int cmd_cluster(struct ctx *c, int argc, char **argv);
int cmd_node(struct ctx *c, int argc, char **argv);
int cmd_volume(struct ctx *c, int argc, char **argv);
int cmd_snapshot(struct ctx *c, int argc, char **argv);
int cmd_replica(struct ctx *c, int argc, char **argv);
/* volume import / export (transfer.c). */
int cmd_volume_import(struct ctx *c, int argc, char **argv);
int cmd_volume_export(struct ctx *c, int argc, char **argv);
/* gateway status, export ls|add|rm (gateway.c). */
int cmd_gateway(struct ctx *c, int argc, char **argv);
int cmd_export(struct ctx *c, int argc, char **argv);
/* True when the NFS gateway answers /v1/health. */
bool gateway_up(const struct config_gateway *g);
/* The nfs:// URL of path on g: plain when its portmapper is on 111 (what QEMU needs), else
 * with libnfs's ?nfsport=N&mountport=M. */
void gateway_url(const struct config_gateway *g, const char *path, char *buf, size_t cap);
/* cluster up's gateway (cluster_gw.c): adds [gateway.gw1] on host to cfg and writes the
 * default exports file; starts every gateway of cfg that is down and waits for it. */
void cluster_make_gateway(struct config *cfg, const char *dir, unsigned base, const char *host);
void cluster_gateways_up(const struct config *cfg, const char *conf);

/* One request to a node. body may be NULL. *out receives the parsed JSON reply (NULL when
 * the body is empty or not JSON); pass out NULL to ignore it. Returns 0 (any status) or a
 * negative errno when the node could not be reached. */
int node_req(const struct config_node *n, const char *method, const char *path, json_t *body,
	     int timeout_ms, int *status, json_t **out);
/* The error text of a reply: its "error" field, else "HTTP <status>". */
const char *reply_error(json_t *reply, int status, char *buf, size_t cap);
bool node_up(const struct config_node *n);

/* Dies unless name is a usable volume / snapshot / node name ([A-Za-z0-9._-], 1..63). */
void check_name(const char *what, const char *name);

/* Everything the nodes report, fetched once. */
struct nodeview {
	const struct config_node *n;
	bool up;
	json_t *replicas;    /* array, or NULL when down */
	json_t *attachments; /* array, or NULL when down */
};
struct view {
	unsigned n;
	struct nodeview nodes[CONFIG_MAX_NODES];
};
void view_load(struct ctx *c, struct view *v);
void view_free(struct view *v);

struct volinfo {
	const char *name;
	uint64_t size;
	uint64_t allocated;
	uint64_t epoch;
	unsigned nmembers;
	const char *members[CONFIG_MAX_NODES]; /* from the replica with the highest members_gen */
	bool member_in_sync[CONFIG_MAX_NODES];
	unsigned nholders; /* nodes (up) that hold a replica */
	const struct config_node *holders[CONFIG_MAX_NODES];
	const struct config_node *attached; /* NULL when not attached (or its node is down) */
	const char *nbd;
};
/* view_load, then the volume vol, or die naming it. */
void view_load_volume(struct ctx *c, const char *what, const char *vol, struct view *v,
		      struct volinfo *vi);
/* -ENOENT when no up node has a replica of name. Strings point into v. */
int view_volume(const struct view *v, const char *name, struct volinfo *out);
/* Sorted, de-duplicated volume names across the view; returns a json array of strings. */
json_t *view_volume_names(const struct view *v);
/* The node volume routes go to: where attached, else the first up member. Dies if none. */
const struct config_node *vol_route(struct ctx *c, const struct view *v, const char *what,
				    const char *vol);

/* A volume route (path "/v1/volumes/VOL" + sub) sent to the node vol_route picks; a 409
 * naming another node is retried there once. Dies (with what) unless the reply is 2xx;
 * returns the parsed reply (may be NULL) which the caller frees. */
json_t *vol_call(struct ctx *c, const char *what, const char *vol, const char *method,
		 const char *sub, json_t *body, int timeout_ms);
/* Like vol_call but returns the status instead of dying on a non-2xx reply. */
int vol_call_status(struct ctx *c, const char *what, const char *vol, const char *method,
		    const char *sub, json_t *body, int timeout_ms, json_t **out);

/* Attaches vol on node_name (NULL: the first up member); dies on failure, including when
 * it is attached elsewhere unless force (then the node takes it over, fencing the other).
 * Returns the reply ({"nbd",...}); *on is the node. */
json_t *volume_attach(struct ctx *c, const char *what, const char *vol, const char *node_name,
		      bool force, const struct config_node **on);
/* Detaches vol from n, or dies. */
void volume_detach_on(const char *what, const char *vol, const struct config_node *n);

void print_json(json_t *j);
uint64_t jint(json_t *o, const char *key);
const char *jstr(json_t *o, const char *key);

#endif

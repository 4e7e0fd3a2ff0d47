/*
 * gateway_status: the `gateway status` JSON (see gateway.h), built on the loop thread from
 * the meta, the engines, the export table, the mount list and the open connections.
 */
#include <arpa/inet.h>
#include <stdio.h>
#include <string.h>

#include "nfsgw/gateway_int.h"

static const char *pmap_name(enum gw_pmap p)
{
	switch (p) {
	case GW_PMAP_OWN:
		return "own";
	case GW_PMAP_HOST:
		return "host";
	default:
		return "off";
	}
}

/* The client entry for address, created on first use. */
static json_t *client_entry(json_t *clients, const char *address)
{
	size_t i;
	json_t *c;
	json_array_foreach(clients, i, c)
	{
		if (!strcmp(json_string_value(json_object_get(c, "address")), address))
			return c;
	}
	c = json_pack("{s:s,s:[]}", "address", address, "mounts");
	if (c)
		json_array_append_new(clients, c);
	return c;
}

static void add_mount(void *arg, const char *client, const char *path)
{
	json_t *c = client_entry(arg, client);
	if (c)
		json_array_append_new(json_object_get(c, "mounts"), json_string(path));
}

static void add_peer(void *arg, const struct sockaddr_storage *peer)
{
	char text[INET6_ADDRSTRLEN] = "";
	if (peer->ss_family == AF_INET) {
		inet_ntop(AF_INET, &((const struct sockaddr_in *)peer)->sin_addr, text,
			  sizeof(text));
	} else if (peer->ss_family == AF_INET6) {
		const struct in6_addr *a = &((const struct sockaddr_in6 *)peer)->sin6_addr;
		if (IN6_IS_ADDR_V4MAPPED(a))
			inet_ntop(AF_INET, a->s6_addr + 12, text, sizeof(text));
		else
			inet_ntop(AF_INET6, a, text, sizeof(text));
	}
	if (text[0])
		client_entry(arg, text);
}

/* nfs://host/path, with the ports in the query unless a portmapper on 111 finds them. */
static void export_url(const struct gateway *g, const char *path, char *buf, size_t len)
{
	bool plain =
	    g->pmap != GW_PMAP_OFF && (g->pmap == GW_PMAP_HOST || g->cfg.portmap_port == PMAP_PORT);
	if (plain)
		snprintf(buf, len, "nfs://%s%s", g->cfg.host, path);
	else
		snprintf(buf, len, "nfs://%s%s?nfsport=%u&mountport=%u", g->cfg.host, path,
			 g->cfg.nfs_port, g->cfg.mount_port);
}

json_t *gateway_status(struct gateway *g)
{
	json_t *o = json_object();
	if (!o)
		return NULL;
	json_object_set_new(o, "gateway", json_string(g->cfg.name));
	json_object_set_new(o, "host", json_string(g->cfg.host));
	json_object_set_new(o, "nfs_port", json_integer(g->cfg.nfs_port));
	json_object_set_new(o, "mount_port", json_integer(g->cfg.mount_port));
	json_object_set_new(o, "portmap", json_string(pmap_name(g->pmap)));
	json_object_set_new(o, "meta_volume", json_string(g->cfg.meta_volume));
	json_object_set_new(
	    o, "epoch",
	    json_integer(g->fv ? (json_int_t)filevol_epoch(g->fv, g->cfg.meta_volume) : 0));
	json_object_set_new(o, "state",
			    json_string(g->state == GW_SERVING	  ? "serving"
					: g->state == GW_STARTING ? "starting"
								  : "stopping"));
	if (g->meta && g->meta_open) {
		struct meta_info mi;
		meta_info(g->meta, &mi);
		char fsid[33];
		for (int i = 0; i < 16; i++)
			snprintf(fsid + 2 * i, 3, "%02x", mi.fsid[i]);
		json_object_set_new(o, "fsid", json_string(fsid));
		json_object_set_new(o, "files", json_integer((json_int_t)mi.files));
	} else {
		json_object_set_new(o, "fsid", json_string(""));
		json_object_set_new(o, "files", json_integer(0));
	}
	json_t *exps = json_array();
	const struct exports *ex = gw_exports(g);
	for (uint32_t i = 0; i < ex->n; i++) {
		const struct export *e = &ex->e[i];
		json_t *cl = json_array();
		for (uint32_t j = 0; j < e->nclients; j++)
			json_array_append_new(cl, json_string(e->clients[j].spec));
		char url[EXPORT_PATH_MAX + 128];
		export_url(g, e->path, url, sizeof(url));
		json_array_append_new(
		    exps, json_pack("{s:s,s:o,s:s}", "path", e->path, "clients", cl, "url", url));
	}
	json_object_set_new(o, "exports", exps);
	json_t *clients = json_array();
	if (g->mnt)
		mount_prog_each(g->mnt, add_mount, clients);
	if (g->rpc)
		rpc_server_each_peer(g->rpc, add_peer, clients);
	json_object_set_new(o, "clients", clients);
	json_object_set_new(o, "connections",
			    json_integer(g->rpc ? (json_int_t)rpc_server_nconns(g->rpc) : 0));
	return o;
}

/*
 * config: the cluster file (inih syntax) shared by every blockd and by blockctl.
 *
 *   [cluster]
 *   dir = /abs/path          ; the cluster directory (pids, logs, node data)
 *   replicas = 3             ; default replica count for new volumes
 *   io_timeout_ms = 1000     ; a replica silent this long is ejected
 *
 *   [node.node1]
 *   host = 127.0.0.1
 *   http_port = 7411         ; control API
 *   replica_port = 7412      ; replica protocol
 *   nbd_port = 7413          ; NBD exports
 *   data = /abs/path/node1   ; this node's data directory (replicas under data/replicas/)
 *
 *   [gateway.gw1]            ; an NFS gateway (nfsgw --gateway gw1); all keys optional
 *   host = 127.0.0.1         ; address of its portmapper, MOUNT and NFS listeners
 *   nfs_port = 2049
 *   mount_port = 20048
 *   portmap_port = 111       ; 0: no own portmapper, register with the host's rpcbind
 *   http_port = 7400         ; control API (gateway status, export ls|add|rm)
 *   exports = /abs/path      ; exports(5) file; when set it replaces the replicated table
 *   replicas = 3             ; replicas of each file's volume (default: [cluster] replicas)
 *   meta_volume = nfsgw-meta ; the volume holding the gateway's metadata
 *
 * Unknown keys and sections are errors (a typo must not silently fall back to a default).
 */
#ifndef BLOCKD_CONFIG_H
#define BLOCKD_CONFIG_H

#include <stddef.h>
#include <stdint.h>

#define CONFIG_MAX_NODES 16
#define CONFIG_NAME_MAX 64
#define CONFIG_PATH_MAX 4096

struct config_node {
	char name[CONFIG_NAME_MAX];
	char host[64];
	uint16_t http_port;
	uint16_t replica_port;
	uint16_t nbd_port;
	char data[CONFIG_PATH_MAX];
};

#define CONFIG_MAX_GATEWAYS 8

struct config_gateway {
	char name[CONFIG_NAME_MAX];
	char host[64];
	uint16_t nfs_port;
	uint16_t mount_port;
	uint16_t portmap_port;
	uint16_t http_port;
	char exports[CONFIG_PATH_MAX];
	unsigned replicas; /* 0: the cluster's */
	char meta_volume[CONFIG_NAME_MAX];
};

struct config {
	char dir[CONFIG_PATH_MAX];
	unsigned replicas;
	unsigned io_timeout_ms;
	unsigned nnodes;
	struct config_node nodes[CONFIG_MAX_NODES];
	unsigned ngateways;
	struct config_gateway gateways[CONFIG_MAX_GATEWAYS];
};

/* Parses path into *c. On error returns a negative errno and writes a one-line reason
 * (with the line number) into err. */
int config_load(const char *path, struct config *c, char *err, size_t errlen);
/* Writes c to path atomically. */
int config_save(const char *path, const struct config *c);
const struct config_node *config_node(const struct config *c, const char *name);
const struct config_gateway *config_gateway(const struct config *c, const char *name);

#endif

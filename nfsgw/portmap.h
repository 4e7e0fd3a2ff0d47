/*
 * portmap: the portmapper (program 100000) v2 (NULL, SET, UNSET, GETPORT, DUMP) and rpcbind
 * v3/v4 (NULL, SET, UNSET, GETADDR, DUMP; GETTIME; v4 GETVERSADDR) served on an rpc_server, so
 * `rpcinfo -p ADDR` lists 100000, 100005 and 100003 and libnfs/QEMU find MOUNT and NFS on
 * port 111. SET/UNSET from the network are refused (answer FALSE) unless they come from a
 * loopback address. CALLIT is PROC_UNAVAIL.
 *
 * When port 111 of the gateway's address is taken (the host runs rpcbind), the gateway
 * instead registers its programs there with pmap_client_set() (PMAP v2 SET over TCP).
 */
#ifndef BLOCKD_NFSGW_PORTMAP_H
#define BLOCKD_NFSGW_PORTMAP_H

#include <stdint.h>

#include "nfsgw/rpc.h"

#define PMAP_PROG 100000u
#define PMAP_PORT 111
#define PMAP_PROT_TCP 6
#define PMAP_PROT_UDP 17

struct portmap;

/* Registers program 100000 v2-v4 on s. The table starts with portmap itself (tcp, port). */
int portmap_new(struct rpc_server *s, uint16_t port, struct portmap **out);
void portmap_free(struct portmap *pm);
/* Local registration (the gateway's own programs). netid is derived from prot. */
int portmap_set(struct portmap *pm, uint32_t prog, uint32_t vers, uint32_t prot, uint16_t port);
int portmap_unset(struct portmap *pm, uint32_t prog, uint32_t vers);

/* Blocking client (control path, not the loop thread): PMAP2 SET / UNSET at host:111. 0 when
 * the portmapper answered TRUE, -EEXIST when FALSE, other negative errno on transport errors. */
int pmap_client_set(const char *host, uint32_t prog, uint32_t vers, uint32_t prot, uint16_t port);
int pmap_client_unset(const char *host, uint32_t prog, uint32_t vers);

#endif

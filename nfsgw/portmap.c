/*
 * portmap: program 100000 v2 (PMAP) and v3/v4 (RPCBIND) on an rpc_server (see
 * nfsgw/portmap.h), plus v4 GETADDRLIST for `rpcinfo -l`. The table is a small array (a gateway
 * registers a handful of programs); every answer is computed and sent synchronously, so no call
 * outlives its handler. Addresses in v3/v4 answers are the address the client connected to, with
 * the entry's port: the gateway's programs listen on every address the portmapper does.
 * portmap_free() must come after rpc_server_free() (the server keeps a pointer to us).
 */
#include <arpa/inet.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <nfsc/libnfs-raw-portmap.h>

#include "nfsgw/portmap.h"

#define PM_MAX 64
#define PM_UADDR 64 /* "255.255.255.255.255.255" and room to spare */

struct pm_entry {
	uint32_t prog, vers, prot;
	uint16_t port;
};

struct portmap {
	struct pm_entry e[PM_MAX];
	uint32_t n;
};

static int pm_find(const struct portmap *pm, uint32_t prog, uint32_t vers, uint32_t prot)
{
	for (uint32_t i = 0; i < pm->n; i++)
		if (pm->e[i].prog == prog && pm->e[i].vers == vers && pm->e[i].prot == prot)
			return (int)i;
	return -1;
}

int portmap_set(struct portmap *pm, uint32_t prog, uint32_t vers, uint32_t prot, uint16_t port)
{
	if (prot != PMAP_PROT_TCP && prot != PMAP_PROT_UDP)
		return -EINVAL;
	int i = pm_find(pm, prog, vers, prot);
	if (i < 0) {
		if (pm->n == PM_MAX)
			return -ENOSPC;
		i = (int)pm->n++;
	}
	pm->e[i] = (struct pm_entry){.prog = prog, .vers = vers, .prot = prot, .port = port};
	return 0;
}

int portmap_unset(struct portmap *pm, uint32_t prog, uint32_t vers)
{
	uint32_t kept = 0;
	for (uint32_t i = 0; i < pm->n; i++)
		if (pm->e[i].prog != prog || pm->e[i].vers != vers)
			pm->e[kept++] = pm->e[i];
	bool any = kept != pm->n;
	pm->n = kept;
	return any ? 0 : -ENOENT;
}

static const char *netid_of(uint32_t prot)
{
	return prot == PMAP_PROT_UDP ? "udp" : "tcp";
}

static uint32_t prot_of(const char *netid)
{
	if (!netid || !*netid)
		return 0;
	if (!strcmp(netid, "tcp"))
		return PMAP_PROT_TCP;
	if (!strcmp(netid, "udp"))
		return PMAP_PROT_UDP;
	return UINT32_MAX; /* a transport we do not serve (tcp6, local, ...) */
}

static bool peer_is_loopback(const struct sockaddr_storage *ss)
{
	if (ss->ss_family == AF_INET) {
		const struct sockaddr_in *s = (const struct sockaddr_in *)ss;
		return (ntohl(s->sin_addr.s_addr) >> 24) == 127;
	}
	if (ss->ss_family == AF_INET6) {
		const struct sockaddr_in6 *s = (const struct sockaddr_in6 *)ss;
		if (IN6_IS_ADDR_LOOPBACK(&s->sin6_addr))
			return true;
		return IN6_IS_ADDR_V4MAPPED(&s->sin6_addr) && s->sin6_addr.s6_addr[12] == 127;
	}
	return false;
}

/* Universal address (RFC 5665) of the client's local address with another port. */
static void uaddr(const struct sockaddr_storage *local, uint16_t port, char *out, size_t n)
{
	uint8_t a[4] = {0};
	if (local->ss_family == AF_INET) {
		memcpy(a, &((const struct sockaddr_in *)local)->sin_addr, 4);
	} else if (local->ss_family == AF_INET6) {
		const struct sockaddr_in6 *s = (const struct sockaddr_in6 *)local;
		if (IN6_IS_ADDR_V4MAPPED(&s->sin6_addr))
			memcpy(a, &s->sin6_addr.s6_addr[12], 4);
	}
	snprintf(out, n, "%u.%u.%u.%u.%u.%u", a[0], a[1], a[2], a[3], port >> 8, port & 0xff);
}

/* The port of a universal address "h1.h2.h3.h4.p1.p2"; -1 when it is not one. */
static int uaddr_port(const char *s)
{
	unsigned v[6];
	char tail;
	if (!s ||
	    sscanf(s, "%u.%u.%u.%u.%u.%u%c", &v[0], &v[1], &v[2], &v[3], &v[4], &v[5], &tail) != 6)
		return -1;
	for (int i = 0; i < 6; i++)
		if (v[i] > 255)
			return -1;
	return (int)(v[4] << 8 | v[5]);
}

static uint32_t zdr_u32(ZDR *z, void *p, ...)
{
	return zdr_u_int(z, p);
}

static uint32_t zdr_map2(ZDR *z, void *p, ...)
{
	return zdr_pmap2_mapping(z, p);
}

static uint32_t zdr_map3(ZDR *z, void *p, ...)
{
	return zdr_pmap3_mapping(z, p);
}

static uint32_t zdr_dump2(ZDR *z, void *p, ...)
{
	return zdr_pmap2_dump_result(z, p);
}

static uint32_t zdr_dump3(ZDR *z, void *p, ...)
{
	return zdr_pmap3_dump_result(z, p);
}

static uint32_t zdr_str3(ZDR *z, void *p, ...)
{
	return zdr_pmap3_string_result(z, p);
}

static void reply_bool(struct rpc_call *c, bool v)
{
	uint32_t r = v;
	rpc_reply(c, zdr_u32, &r);
}

static void v2_call(struct portmap *pm, struct rpc_call *c)
{
	pmap2_mapping m;
	if (c->proc == 4) {
		pmap2_mapping_list l[PM_MAX];
		for (uint32_t i = 0; i < pm->n; i++) {
			l[i].map = (pmap2_mapping){pm->e[i].prog, pm->e[i].vers, pm->e[i].prot,
						   pm->e[i].port};
			l[i].next = i + 1 < pm->n ? &l[i + 1] : NULL;
		}
		pmap2_dump_result d = {.list = pm->n ? &l[0] : NULL};
		rpc_reply(c, zdr_dump2, &d);
		return;
	}
	if (rpc_decode_args(c, zdr_map2, &m, sizeof(m)) < 0) {
		rpc_reply_accept(c, RPC_GARBAGE_ARGS);
		return;
	}
	rpc_args_free(c, zdr_map2, &m);
	switch (c->proc) {
	case 1: /* SET: never replaces another registration */
		reply_bool(c, peer_is_loopback(&c->peer) && m.port <= UINT16_MAX &&
				  pm_find(pm, m.prog, m.vers, m.prot) < 0 &&
				  portmap_set(pm, m.prog, m.vers, m.prot, (uint16_t)m.port) == 0);
		return;
	case 2:
		reply_bool(c, peer_is_loopback(&c->peer) && portmap_unset(pm, m.prog, m.vers) == 0);
		return;
	case 3: {
		int i = pm_find(pm, m.prog, m.vers, m.prot);
		uint32_t port = i < 0 ? 0 : pm->e[i].port;
		rpc_reply(c, zdr_u32, &port);
		return;
	}
	}
}

/* v3/v4 GETADDR (any_vers: fall back to another version of the program) and GETVERSADDR. */
static void getaddr(struct portmap *pm, struct rpc_call *c, uint32_t prog, uint32_t vers,
		    uint32_t prot, bool any_vers)
{
	if (prot == 0)
		prot = PMAP_PROT_TCP; /* empty netid: the transport of this call */
	int found = -1;
	for (uint32_t i = 0; i < pm->n && found < 0; i++)
		if (pm->e[i].prog == prog && pm->e[i].prot == prot && pm->e[i].vers == vers)
			found = (int)i;
	for (uint32_t i = 0; i < pm->n && found < 0 && any_vers; i++)
		if (pm->e[i].prog == prog && pm->e[i].prot == prot)
			found = (int)i;
	char a[PM_UADDR] = "";
	if (found >= 0)
		uaddr(&c->local, pm->e[found].port, a, sizeof(a));
	pmap3_string_result r = {.addr = a};
	rpc_reply(c, zdr_str3, &r);
}

/* rpcb_entry_list_ptr (RFC 1833) for GETADDRLIST: no libnfs codec, so encoded here. */
struct addrlist {
	struct portmap *pm;
	const struct sockaddr_storage *local;
	uint32_t prog, vers;
};

static uint32_t zdr_addrlist(ZDR *z, void *p, ...)
{
	struct addrlist *a = p;
	uint32_t yes = 1, no = 0, cots_ord = 3;
	for (uint32_t i = 0; i < a->pm->n; i++) {
		const struct pm_entry *e = &a->pm->e[i];
		if (e->prog != a->prog || e->vers != a->vers)
			continue;
		char addr[PM_UADDR];
		uaddr(a->local, e->port, addr, sizeof(addr));
		char *maddr = addr, *netid = (char *)netid_of(e->prot), *fam = "inet";
		if (!zdr_u_int(z, &yes) || !zdr_string(z, &maddr, PM_UADDR) ||
		    !zdr_string(z, &netid, 8) || !zdr_u_int(z, &cots_ord) ||
		    !zdr_string(z, &fam, 8) || !zdr_string(z, &netid, 8))
			return 0;
	}
	return zdr_u_int(z, &no);
}

static void getaddrlist(struct portmap *pm, struct rpc_call *c, uint32_t prog, uint32_t vers)
{
	struct addrlist a = {.pm = pm, .local = &c->local, .prog = prog, .vers = vers};
	rpc_reply(c, zdr_addrlist, &a);
}

static void v34_call(struct portmap *pm, struct rpc_call *c)
{
	switch (c->proc) {
	case 4: {
		static const char owner[] = "superuser";
		pmap3_mapping_list l[PM_MAX];
		char addr[PM_MAX][PM_UADDR];
		for (uint32_t i = 0; i < pm->n; i++) {
			uaddr(&c->local, pm->e[i].port, addr[i], PM_UADDR);
			l[i].map = (pmap3_mapping){.prog = pm->e[i].prog,
						   .vers = pm->e[i].vers,
						   .netid = (char *)netid_of(pm->e[i].prot),
						   .addr = addr[i],
						   .owner = (char *)owner};
			l[i].next = i + 1 < pm->n ? &l[i + 1] : NULL;
		}
		pmap3_dump_result d = {.list = pm->n ? &l[0] : NULL};
		rpc_reply(c, zdr_dump3, &d);
		return;
	}
	case 6: {
		uint32_t now = (uint32_t)time(NULL);
		rpc_reply(c, zdr_u32, &now);
		return;
	}
	case 1:
	case 2:
	case 3:
	case 9:
	case 11:
		break;
	default:
		rpc_reply_accept(c, RPC_PROC_UNAVAIL);
		return;
	}
	if ((c->proc == 9 || c->proc == 11) && c->vers < 4) {
		rpc_reply_accept(c, RPC_PROC_UNAVAIL);
		return;
	}
	pmap3_mapping m;
	if (rpc_decode_args(c, zdr_map3, &m, sizeof(m)) < 0) {
		rpc_reply_accept(c, RPC_GARBAGE_ARGS);
		return;
	}
	/* The strings live in the decoder's memory: use them before rpc_args_free. */
	uint32_t prot = prot_of(m.netid);
	int port = uaddr_port(m.addr);
	bool ok = false;
	if (c->proc == 1) {
		ok = peer_is_loopback(&c->peer) && prot != 0 && prot != UINT32_MAX && port >= 0 &&
		     pm_find(pm, m.prog, m.vers, prot) < 0 &&
		     portmap_set(pm, m.prog, m.vers, prot, (uint16_t)port) == 0;
	} else if (c->proc == 2 && peer_is_loopback(&c->peer)) {
		if (prot == 0) {
			ok = portmap_unset(pm, m.prog, m.vers) == 0;
		} else {
			int i = pm_find(pm, m.prog, m.vers, prot);
			if (i >= 0) {
				pm->e[i] = pm->e[--pm->n];
				ok = true;
			}
		}
	}
	if (c->proc == 11) {
		rpc_args_free(c, zdr_map3, &m);
		getaddrlist(pm, c, m.prog, m.vers);
		return;
	}
	if (c->proc == 3 || c->proc == 9) {
		rpc_args_free(c, zdr_map3, &m);
		getaddr(pm, c, m.prog, m.vers, prot, c->proc == 3 && c->vers == 4);
		return;
	}
	rpc_args_free(c, zdr_map3, &m);
	reply_bool(c, ok);
}

static void pm_dispatch(void *ctx, struct rpc_call *c)
{
	struct portmap *pm = ctx;
	if (c->proc == 0) {
		rpc_reply(c, NULL, NULL);
	} else if (c->vers == 2) {
		if (c->proc >= 1 && c->proc <= 4)
			v2_call(pm, c);
		else
			rpc_reply_accept(c, RPC_PROC_UNAVAIL); /* CALLIT and beyond */
	} else {
		v34_call(pm, c);
	}
}

int portmap_new(struct rpc_server *s, uint16_t port, struct portmap **out)
{
	struct portmap *pm = calloc(1, sizeof(*pm));
	if (!pm)
		return -ENOMEM;
	for (uint32_t v = 2; v <= 4; v++)
		portmap_set(pm, PMAP_PROG, v, PMAP_PROT_TCP, port);
	struct rpc_program p = {
	    .prog = PMAP_PROG, .vers_low = 2, .vers_high = 4, .dispatch = pm_dispatch, .ctx = pm};
	int r = rpc_server_add_program(s, &p);
	if (r < 0) {
		free(pm);
		return r;
	}
	*out = pm;
	return 0;
}

void portmap_free(struct portmap *pm)
{
	free(pm);
}

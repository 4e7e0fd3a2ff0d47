/*
 * exports_access: lookups in a parsed export table and the per-call access decision
 * (client matching and credential squashing, see exports.h).
 */
#include "nfsgw/exports.h"

#include <netinet/in.h>
#include <string.h>

const struct export *exports_find_path(const struct exports *ex, const char *path)
{
	for (uint32_t i = 0; i < ex->n; i++)
		if (!strcmp(ex->e[i].path, path))
			return &ex->e[i];
	return NULL;
}

const struct export *exports_find_id(const struct exports *ex, uint32_t id)
{
	for (uint32_t i = 0; i < ex->n; i++)
		if (ex->e[i].id == id)
			return &ex->e[i];
	return NULL;
}

/* Length of the component-wise prefix match of export path ep in path, or 0 if none. */
static size_t prefix_len(const char *ep, const char *path)
{
	if (!strcmp(ep, "/"))
		return path[0] == '/' ? 1 : 0;
	size_t n = strlen(ep);
	if (strncmp(ep, path, n))
		return 0;
	if (path[n] != 0 && path[n] != '/')
		return 0;
	return n;
}

const struct export *exports_find_prefix(const struct exports *ex, const char *path,
					 const char **rest)
{
	const struct export *best = NULL;
	size_t best_len = 0;
	for (uint32_t i = 0; i < ex->n; i++) {
		size_t n = prefix_len(ex->e[i].path, path);
		if (n && n > best_len) {
			best = &ex->e[i];
			best_len = n;
		}
	}
	if (best && rest) {
		const char *r = path + best_len;
		while (*r == '/')
			r++;
		*rest = r;
	}
	return best;
}

/* The peer's IPv4 address (host order) and port; false for a non-IPv4 peer. */
static bool peer_v4(const struct sockaddr_storage *peer, uint32_t *addr, uint16_t *port)
{
	if (peer->ss_family == AF_INET) {
		const struct sockaddr_in *s = (const struct sockaddr_in *)peer;
		*addr = ntohl(s->sin_addr.s_addr);
		*port = ntohs(s->sin_port);
		return true;
	}
	if (peer->ss_family == AF_INET6) {
		const struct sockaddr_in6 *s = (const struct sockaddr_in6 *)peer;
		if (!IN6_IS_ADDR_V4MAPPED(&s->sin6_addr))
			return false;
		const uint8_t *b = s->sin6_addr.s6_addr + 12;
		*addr = (uint32_t)b[0] << 24 | (uint32_t)b[1] << 16 | (uint32_t)b[2] << 8 | b[3];
		*port = ntohs(s->sin6_port);
		return true;
	}
	return false;
}

const struct export_client *export_match(const struct export *e,
					 const struct sockaddr_storage *peer)
{
	uint32_t addr;
	uint16_t port;
	if (!e || !peer || !peer_v4(peer, &addr, &port))
		return NULL;
	for (uint32_t i = 0; i < e->nclients; i++) {
		const struct export_client *c = &e->clients[i];
		if ((addr & c->mask) != c->addr)
			continue;
		/* Like exportfs, the first entry that names the host decides: a secure entry
		 * refuses an unprivileged port rather than falling through to a later one. */
		if (c->secure && port >= 1024)
			return NULL;
		return c;
	}
	return NULL;
}

void export_squash_ids(const struct export_client *c, uint32_t flavor, uint32_t *uid, uint32_t *gid,
		       uint32_t *ngids, uint32_t *gids)
{
	/* AUTH_NONE carries no identity: it is the anonymous user, whatever the export. */
	if (c->squash == EXPORT_ALL_SQUASH || flavor != 1) {
		*uid = c->anonuid;
		*gid = c->anongid;
		if (ngids)
			*ngids = 0;
		return;
	}
	if (c->squash == EXPORT_NO_ROOT_SQUASH)
		return;
	if (*uid == 0)
		*uid = c->anonuid;
	if (*gid == 0)
		*gid = c->anongid;
	if (ngids && gids)
		for (uint32_t i = 0; i < *ngids; i++)
			if (gids[i] == 0)
				gids[i] = c->anongid;
}

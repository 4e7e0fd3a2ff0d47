/*
 * exports: the export table in exports(5) syntax, and the per-call access decision.
 *
 *   # comment
 *   /vm-shared   127.0.0.0/8(rw,sync,no_subtree_check,no_root_squash) 10.1.2.3(ro)
 *   /isos        *(ro,all_squash,anonuid=1000,anongid=1000)
 *
 * Clients: a single IPv4 address, a CIDR (a.b.c.d/N or a.b.c.d/netmask), `*`, or a host name
 * (resolved once at load with getaddrinfo; a name that does not resolve is an error). Options:
 * rw | ro (default ro), sync | async (accepted; writes are always replicated before the
 * reply), root_squash (default) | no_root_squash | all_squash, anonuid=N, anongid=N (default
 * 65534), secure | insecure (default insecure: libnfs clients use unprivileged ports),
 * subtree_check | no_subtree_check (accepted; handles are never subtree-checked), fsid=N,
 * wdelay/no_wdelay (accepted). Unknown options, bad addresses or duplicate export paths are
 * errors reported with the line number. A line continues with a trailing backslash.
 *
 * Export paths are absolute, normalised (no `.`/`..`/empty components, no trailing slash
 * except "/"), at most EXPORT_PATH_MAX bytes.
 */
#ifndef BLOCKD_NFSGW_EXPORTS_H
#define BLOCKD_NFSGW_EXPORTS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

#define EXPORT_PATH_MAX 1024
#define EXPORT_MAX 64
#define EXPORT_MAX_CLIENTS 32

enum export_squash { EXPORT_ROOT_SQUASH = 0, EXPORT_NO_ROOT_SQUASH, EXPORT_ALL_SQUASH };

struct export_client {
	char spec[256];      /* as written, for listings */
	uint32_t addr, mask; /* IPv4, host byte order; `*` is 0/0 */
	bool rw;
	bool secure;
	enum export_squash squash;
	uint32_t anonuid, anongid;
};

struct export {
	char path[EXPORT_PATH_MAX];
	uint32_t id; /* stable: XXH3 of the path, truncated; goes into file handles */
	uint32_t nclients;
	struct export_client clients[EXPORT_MAX_CLIENTS];
};

struct exports {
	uint32_t n;
	struct export e[EXPORT_MAX];
};

/* Parses text (the whole file). On error returns -EINVAL and writes "line N: reason". */
int exports_parse(const char *text, struct exports *out, char *err, size_t errlen);
/* Renders back to exports(5) text (canonical option order); returns bytes written or -ENOSPC. */
int exports_format(const struct exports *ex, char *buf, size_t len);
/* Normalises an absolute path into out (EXPORT_PATH_MAX); -EINVAL if not absolute/too long. */
int exports_normalize_path(const char *path, char *out);

const struct export *exports_find_path(const struct exports *ex, const char *path);
const struct export *exports_find_id(const struct exports *ex, uint32_t id);
/* The export whose path is the longest prefix (component-wise) of path; *rest gets the
 * remainder ("" or "a/b"). NULL if none. */
const struct export *exports_find_prefix(const struct exports *ex, const char *path,
					 const char **rest);

/* The first client entry of e matching peer (IPv4 or v4-mapped IPv6), or NULL: refused. */
const struct export_client *export_match(const struct export *e,
					 const struct sockaddr_storage *peer);

/* Applies squashing to AUTH_SYS (or AUTH_NONE: anonymous) credentials. */
void export_squash_ids(const struct export_client *c, uint32_t flavor, uint32_t *uid,
		       uint32_t *gid, uint32_t *ngids, uint32_t *gids);

#endif

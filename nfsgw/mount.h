/*
 * mount: the MOUNT program (100005) v1 and v3 on an rpc_server: NULL, MNT, DUMP, UMNT,
 * UMNTALL, EXPORT. MNT of an export path or any directory below it returns that directory's
 * NFSv3 file handle with auth flavours [AUTH_SYS, AUTH_NONE] (v3); a client the export does
 * not list gets MNT3ERR_ACCES, a path that does not exist MNT3ERR_NOENT, a non-directory
 * MNT3ERR_NOTDIR, a path not under any export MNT3ERR_ACCES. v1 MNT returns the handle in a
 * 32-byte fhandle (our handles fit). The mount list (DUMP) is kept in memory, per client
 * address and path, bounded (MOUNT_MAX_ENTRIES; oldest dropped).
 *
 * The mount program does not know the file system: it resolves paths through
 * struct mount_fs callbacks the gateway provides.
 */
#ifndef BLOCKD_NFSGW_MOUNT_H
#define BLOCKD_NFSGW_MOUNT_H

#include <stdint.h>

#include "nfsgw/exports.h"
#include "nfsgw/rpc.h"

#define MOUNT_PROG 100005u
#define MOUNT_MAX_ENTRIES 1024

struct mount_fs {
	/* Resolves path (normalised, absolute, under export e) to a handle. Returns 0, -ENOENT,
	 * -ENOTDIR. fh gets at most 64 bytes, *fh_len its length. */
	int (*resolve)(void *ctx, const struct export *e, const char *path, uint8_t *fh,
		       uint32_t *fh_len);
	/* The current export table (may change between calls; never NULL). */
	const struct exports *(*exports)(void *ctx);
	void *ctx;
};

struct mount_prog;

int mount_prog_new(struct rpc_server *s, const struct mount_fs *fs, struct mount_prog **out);
void mount_prog_free(struct mount_prog *m);
/* Entries of the mount list (for `gateway status`): fn(arg, client address text, path). */
void mount_prog_each(struct mount_prog *m, void (*fn)(void *arg, const char *client,
						      const char *path),
		     void *arg);

#endif

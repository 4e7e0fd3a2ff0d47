/*
 * nfs3: the NFSv3 program (100003 v3, RFC 1813), all 22 procedures, on an rpc_server, over
 * the gateway's metadata (meta.h) and file volumes (filevol.h).
 *
 * - File handles (NFS3_FH_LEN bytes): magic "BG", version 1, reserved byte, export id u32,
 *   the first 8 bytes of the meta fsid, fileid u64, generation u64 (big-endian). A handle
 *   whose fsid, fileid or generation does not match is NFS3ERR_STALE; a malformed one
 *   NFS3ERR_BADHANDLE. Handles survive restarts and takeovers (everything in them is
 *   replicated).
 * - Every call: the handle's export must list the client (else NFS3ERR_ACCES), credentials
 *   are squashed per the export, a ro export answers NFS3ERR_ROFS to every change, and
 *   AUTH_SYS uid/gids are checked against mode bits (root bypasses, except squashed).
 * - WRITE: the data is on every in-sync replica before the reply (UNSTABLE included), with
 *   a size extension recorded by meta_note_write(); FILE_SYNC/DATA_SYNC use FUA and
 *   meta_sync(). COMMIT flushes the file's volume and the meta. The write verifier is
 *   meta_info().verifier: constant across restarts and takeovers, because nothing
 *   acknowledged is ever only in the gateway's memory.
 * - READ replies are sent from the read buffer (rpc_reply_data). rtmax = wtmax = 1 MiB,
 *   dtpref 64 KiB, maxfilesize FILEVOL_MAX_SIZE, time_delta 1 ns.
 * - READDIR/READDIRPLUS page by the entry cookies of meta_readdir with cookie verifier
 *   meta_dir_version(), for caches only: cookies never go stale, so any verifier is
 *   accepted (libnfs does not restart a listing on NFS3ERR_BAD_COOKIE); "." and ".." come first
 *   (cookies 1 and 2).
 * - CREATE UNCHECKED/GUARDED/EXCLUSIVE (the verifier is kept in atime/mtime as Linux does);
 *   MKNOD of sockets, fifos and devices; SETATTR with guard (NFS3ERR_NOT_SYNC); truncation
 *   zeroes the volume's tail first so a later growth reads back zeros.
 */
#ifndef BLOCKD_NFSGW_NFS3_H
#define BLOCKD_NFSGW_NFS3_H

#include <stdint.h>

#include "nfsgw/exports.h"
#include "nfsgw/filevol.h"
#include "nfsgw/meta.h"
#include "nfsgw/rpc.h"

#define NFS3_PROG 100003u
#define NFS3_FH_LEN 32
#define NFS3_MAX_IO (1u << 20)

struct nfs3_params {
	struct meta *meta;
	struct filevol *fv;
	/* The current export table (may change between calls). */
	const struct exports *(*exports)(void *ctx);
	void *ctx;
};

struct nfs3;

int nfs3_prog_new(struct rpc_server *s, const struct nfs3_params *p, struct nfs3 **out);
void nfs3_prog_free(struct nfs3 *n);

/* Holds every call that changes anything (WRITE, COMMIT, SETATTR, CREATE, MKDIR, SYMLINK,
 * MKNOD, REMOVE, RMDIR, RENAME, LINK) from now on and calls cb(arg, 0) once those already in
 * progress have finished; held calls wait in arrival order until nfs3_release. Reads go on.
 * Holds nest (counted). For consistent snapshots. cb runs before nfs3_hold returns when
 * nothing changing is in progress. nfs3_prog_free drops held calls (clients retransmit). */
int nfs3_hold(struct nfs3 *n, void (*cb)(void *arg, int res), void *arg);
void nfs3_release(struct nfs3 *n);
/* Calls dispatched and not yet answered (the gateway waits for 0 before closing the meta). */
uint32_t nfs3_inflight(struct nfs3 *n);

/* MNT below an export, the `.snapshots` tree included: resolves path (absolute, normalised,
 * under export_path) to the fileid, generation and type its NFS file handle carries.
 * -ENOENT, -ENAMETOOLONG, -ENOTDIR. */
int nfs3_path_resolve(struct meta *m, const char *export_path, const char *path, uint64_t *fileid,
		      uint64_t *gen, enum meta_type *type);

/* File handles. decode: -EBADMSG malformed, 0 otherwise (staleness is checked by callers). */
void nfs3_fh_encode(uint8_t out[NFS3_FH_LEN], uint32_t export_id, const uint8_t fsid[16],
		    uint64_t fileid, uint64_t gen);
int nfs3_fh_decode(const uint8_t *fh, uint32_t len, uint32_t *export_id, uint64_t *fsid8,
		   uint64_t *fileid, uint64_t *gen);

#endif

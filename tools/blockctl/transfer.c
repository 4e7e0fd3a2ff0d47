/*
 * transfer: volume import / export over NBD. 1 MiB requests, QUEUE_DEPTH in flight
 * (pipelined), zero chunks never cross the wire in either direction: import skips them on a
 * volume that has nothing allocated (and sends WRITE_ZEROES otherwise, so old data cannot
 * show through), export seeks over them and sets the final size with ftruncate.
 *
 * The volume is attached for the transfer when it is not attached already, and detached
 * again afterwards, also when the transfer fails.
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <linux/fs.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <unistd.h>

#include "tools/blockctl/blockctl.h"
#include "tools/lib/nbd_client.h"

#define CHUNK (1u << 20)
#define QUEUE_DEPTH 8

struct xfer {
	const char *what;
	const char *vol;
	const struct config_node *attached_by_us; /* detach this at the end */
	struct nbd_client *nbd;
	uint64_t vol_size;
	uint64_t vol_allocated;
	struct progress prog;
	struct nbd_client_req reqs[QUEUE_DEPTH];
	char *bufs[QUEUE_DEPTH];
	int free_slots[QUEUE_DEPTH];
	int nfree;
	char err[1024];
};

static bool all_zero(const char *p, size_t n)
{
	return n == 0 || (p[0] == 0 && memcmp(p, p + 1, n - 1) == 0);
}

/* Connects to the volume's export, attaching it first if it is attached nowhere. */
static int xfer_open(struct ctx *c, struct xfer *x)
{
	struct view v;
	struct volinfo vi;
	view_load_volume(c, x->what, x->vol, &v, &vi);
	x->vol_size = vi.size;
	x->vol_allocated = vi.allocated;
	char url[NBD_CLIENT_URL_MAX * 2 + 32] = "";
	if (vi.attached && vi.nbd) {
		snprintf(url, sizeof(url), "%s", vi.nbd);
	} else {
		const struct config_node *n;
		json_t *reply = volume_attach(c, x->what, x->vol, NULL, false, &n);
		snprintf(url, sizeof(url), "%s", jstr(reply, "nbd"));
		json_decref(reply);
		x->attached_by_us = n;
	}
	view_free(&v);
	for (int i = 0; i < QUEUE_DEPTH; i++) {
		x->bufs[i] = aligned_alloc(4096, CHUNK);
		if (!x->bufs[i]) {
			snprintf(x->err, sizeof(x->err), "out of memory");
			return -ENOMEM;
		}
		x->free_slots[i] = i;
	}
	x->nfree = QUEUE_DEPTH;
	int r = nbd_client_new(&x->nbd);
	if (r < 0) {
		snprintf(x->err, sizeof(x->err), "nbd client: %s", strerror(-r));
		return r;
	}
	nbd_client_set_timeout(x->nbd, 60000);
	r = nbd_client_connect_url(x->nbd, url);
	if (r < 0) {
		snprintf(x->err, sizeof(x->err), "%s: %s", url, nbd_client_error(x->nbd));
		return r;
	}
	if (nbd_client_size(x->nbd) != x->vol_size)
		x->vol_size = nbd_client_size(x->nbd);
	return 0;
}

/* Disconnects, detaches if we attached, and dies with x->err if failed. */
static int xfer_close(struct xfer *x, int res)
{
	if (x->nbd) {
		if (res == 0) {
			int r = nbd_client_flush(x->nbd);
			if (r < 0) {
				snprintf(x->err, sizeof(x->err), "flush: %s",
					 nbd_client_error(x->nbd));
				res = r;
			}
		}
		nbd_client_free(x->nbd);
	}
	for (int i = 0; i < QUEUE_DEPTH; i++)
		free(x->bufs[i]);
	if (x->attached_by_us)
		volume_detach_on(x->what, x->vol, x->attached_by_us);
	if (res < 0)
		die("%s: %s: %s", x->what, x->vol, x->err[0] ? x->err : strerror(-res));
	return 0;
}

static int submit(struct xfer *x, enum nbd_client_op op, uint64_t off, uint32_t len)
{
	int slot = x->free_slots[--x->nfree];
	struct nbd_client_req *q = &x->reqs[slot];
	memset(q, 0, sizeof(*q));
	q->op = op;
	q->off = off;
	q->len = len;
	q->buf = x->bufs[slot];
	q->user = x->bufs[slot];
	int r = nbd_client_submit(x->nbd, q);
	if (r < 0) {
		x->free_slots[x->nfree++] = slot;
		snprintf(x->err, sizeof(x->err), "at offset %" PRIu64 ": %s", off,
			 nbd_client_error(x->nbd));
	}
	return r;
}

/* Waits for one request; returns it (its slot freed by the caller via release()). */
static int collect(struct xfer *x, struct nbd_client_req **done)
{
	int r = nbd_client_collect(x->nbd, done);
	if (r < 0) {
		snprintf(x->err, sizeof(x->err), "%s", nbd_client_error(x->nbd));
		return r;
	}
	if ((*done)->result < 0) {
		snprintf(x->err, sizeof(x->err), "%s at offset %" PRIu64 ": %s",
			 (*done)->op == NBD_CLIENT_READ ? "read" : "write", (*done)->off,
			 strerror(-(*done)->result));
		return (*done)->result;
	}
	return 0;
}

static void release(struct xfer *x, struct nbd_client_req *q)
{
	x->free_slots[x->nfree++] = (int)(q - x->reqs);
}

static int file_size(int fd, uint64_t *out)
{
	struct stat st;
	if (fstat(fd, &st) < 0)
		return -errno;
	if (S_ISBLK(st.st_mode))
		return ioctl(fd, BLKGETSIZE64, out) < 0 ? -errno : 0;
	/* A pipe has no size to check against the volume's, and no offsets to pread. */
	if (!S_ISREG(st.st_mode))
		return -EINVAL;
	*out = (uint64_t)st.st_size;
	return 0;
}

static int do_import(struct xfer *x, int fd, uint64_t fsize)
{
	/* A fresh volume reads as zeros, so zero chunks need no request at all. */
	bool skip_zero = x->vol_allocated == 0;
	uint64_t off = 0, done = 0;
	progress_start(&x->prog, x->vol, fsize);
	while (off < fsize || nbd_client_inflight(x->nbd) > 0) {
		while (off < fsize && x->nfree > 0) {
			uint32_t len = fsize - off < CHUNK ? (uint32_t)(fsize - off) : CHUNK;
			char *buf = x->bufs[x->free_slots[x->nfree - 1]];
			for (uint32_t got = 0; got < len;) {
				ssize_t n = pread(fd, buf + got, len - got, (off_t)(off + got));
				if (n < 0 && errno == EINTR)
					continue;
				if (n <= 0) {
					snprintf(x->err, sizeof(x->err), "reading the file: %s",
						 n < 0 ? strerror(errno)
						       : "unexpected end of file");
					return n < 0 ? -errno : -EIO;
				}
				got += (uint32_t)n;
			}
			bool zero = all_zero(buf, len);
			if (zero && skip_zero) {
				off += len;
				done += len;
				continue;
			}
			int r = submit(x, zero ? NBD_CLIENT_ZERO : NBD_CLIENT_WRITE, off, len);
			if (r < 0)
				return r;
			off += len;
		}
		if (nbd_client_inflight(x->nbd) == 0)
			continue;
		struct nbd_client_req *q;
		int r = collect(x, &q);
		if (r < 0)
			return r;
		done += q->len;
		release(x, q);
		progress_update(&x->prog, done);
	}
	progress_update(&x->prog, fsize);
	progress_end(&x->prog);
	return 0;
}

static int do_export(struct xfer *x, int fd, bool regular)
{
	uint64_t size = x->vol_size, off = 0, done = 0;
	progress_start(&x->prog, x->vol, size);
	while (off < size || nbd_client_inflight(x->nbd) > 0) {
		while (off < size && x->nfree > 0) {
			uint32_t len = size - off < CHUNK ? (uint32_t)(size - off) : CHUNK;
			int r = submit(x, NBD_CLIENT_READ, off, len);
			if (r < 0)
				return r;
			off += len;
		}
		struct nbd_client_req *q;
		int r = collect(x, &q);
		if (r < 0)
			return r;
		/* A regular file was truncated to empty, so its holes already read as zero. */
		if (!regular || !all_zero(q->buf, q->len)) {
			for (uint32_t put = 0; put < q->len;) {
				ssize_t n = pwrite(fd, (char *)q->buf + put, q->len - put,
						   (off_t)(q->off + put));
				if (n < 0 && errno == EINTR)
					continue;
				if (n < 0) {
					snprintf(x->err, sizeof(x->err), "writing the file: %s",
						 strerror(errno));
					return -errno;
				}
				put += (uint32_t)n;
			}
		}
		done += q->len;
		release(x, q);
		progress_update(&x->prog, done);
	}
	progress_end(&x->prog);
	if (regular && ftruncate(fd, (off_t)size) < 0) {
		snprintf(x->err, sizeof(x->err), "ftruncate: %s", strerror(errno));
		return -errno;
	}
	if (fsync(fd) < 0) {
		snprintf(x->err, sizeof(x->err), "fsync: %s", strerror(errno));
		return -errno;
	}
	return 0;
}

static void two_args(const char *what, int argc, char **argv, char **pos)
{
	const struct optspec specs[] = {{0}};
	char err[256];
	int n = opts_parse(argc, argv, specs, pos, 2, err, sizeof(err));
	if (n < 0)
		usage_die("%s: %s", what, err);
	if (n != 2)
		usage_die("%s: expected NAME FILE", what);
	check_name(what, pos[0]);
}

int cmd_volume_import(struct ctx *c, int argc, char **argv)
{
	char *pos[2];
	two_args("volume import", argc, argv, pos);
	struct xfer *x = calloc(1, sizeof(*x));
	if (!x)
		die("volume import: out of memory");
	x->what = "volume import";
	x->vol = pos[0];
	int fd = open(pos[1], O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		die("volume import: %s: %s", pos[1], strerror(errno));
	uint64_t fsize;
	int r = file_size(fd, &fsize);
	if (r == -EINVAL)
		die("volume import: %s: not a regular file or block device", pos[1]);
	if (r < 0)
		die("volume import: %s: %s", pos[1], strerror(-r));
	/* Check the size before attaching anything. */
	struct view v;
	struct volinfo vi;
	view_load_volume(c, "volume import", x->vol, &v, &vi);
	if (fsize > vi.size)
		die("volume import: %s: %s is %" PRIu64 " bytes, larger than the volume (%" PRIu64
		    " bytes); resize it first",
		    x->vol, pos[1], fsize, vi.size);
	view_free(&v);
	r = xfer_open(c, x);
	if (r == 0 && fsize > x->vol_size) {
		snprintf(x->err, sizeof(x->err), "%s is larger than the export (%" PRIu64 " bytes)",
			 pos[1], x->vol_size);
		r = -EFBIG;
	}
	if (r == 0)
		r = do_import(x, fd, fsize);
	close(fd);
	xfer_close(x, r);
	char sz[16];
	format_size(fsize, sz, sizeof(sz));
	printf("imported %s (%s) into %s\n", pos[1], sz, x->vol);
	free(x);
	return 0;
}

int cmd_volume_export(struct ctx *c, int argc, char **argv)
{
	char *pos[2];
	two_args("volume export", argc, argv, pos);
	struct xfer *x = calloc(1, sizeof(*x));
	if (!x)
		die("volume export: out of memory");
	x->what = "volume export";
	x->vol = pos[0];
	struct stat st;
	bool regular = stat(pos[1], &st) < 0 || S_ISREG(st.st_mode);
	int fd = -1;
	int r = xfer_open(c, x);
	if (r == 0) {
		fd = open(pos[1], O_WRONLY | O_CREAT | O_CLOEXEC | (regular ? O_TRUNC : 0), 0644);
		if (fd < 0) {
			r = -errno;
			snprintf(x->err, sizeof(x->err), "%s: %s", pos[1], strerror(errno));
		}
	}
	if (r == 0)
		r = do_export(x, fd, regular);
	if (fd >= 0)
		close(fd);
	xfer_close(x, r);
	char sz[16];
	format_size(x->vol_size, sz, sizeof(sz));
	printf("exported %s (%s) to %s\n", x->vol, sz, pos[1]);
	free(x);
	return 0;
}

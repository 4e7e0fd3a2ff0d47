/*
 * nfs_ops: one file-system operation through libnfs's sync client, for end-to-end tests.
 *
 *   nfs_ops nfs://HOST/EXPORT[?nfsport=N&mountport=M&uid=U&gid=G] CMD ARGS...
 *
 * PATHs are relative to the export root and start with '/'. Commands:
 *   mkdir PATH [MODE] | rmdir PATH | create PATH [MODE] | unlink PATH
 *   rename OLD NEW | link OLD NEW | symlink TARGET PATH | readlink PATH (prints the target)
 *   chmod PATH MODE | truncate PATH SIZE
 *   stat PATH | lstat PATH: prints "type=reg|dir|lnk|other mode=0NNN nlink=N uid=N gid=N
 *       size=N used=N ino=N"
 *   ls PATH: prints one name per line (READDIRPLUS through nfs_opendir)
 *   mkfiles DIR N: creates DIR/f0 .. DIR/f<N-1> (empty) on one connection
 *   write PATH OFF LEN BYTE: LEN bytes of value BYTE at OFF (creates the file when missing)
 *   check PATH OFF LEN BYTE: reads exactly LEN bytes at OFF, each must be BYTE
 *   xclient PATH SIZE: two connections (two mounts): A creates PATH and writes SIZE
 *       pseudo-random bytes without closing it, B opens PATH and must read back exactly
 *       those SIZE bytes; then B overwrites the first 64 KiB and A must read B's bytes.
 *
 * Exit: 0 ok, 1 the operation failed (the errno is printed), 2 data or size mismatch,
 * 3 mount failed, 64 usage.
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include <nfsc/libnfs.h>

#define CHUNK (1u << 20)

struct conn {
	struct nfs_context *nfs;
};

static int usage(void)
{
	fprintf(stderr, "usage: nfs_ops nfs://HOST/EXPORT[?ARGS] CMD ARGS... (see the source)\n");
	return 64;
}

static int mount_url(const char *url, struct conn *c)
{
	c->nfs = nfs_init_context();
	if (!c->nfs) {
		fprintf(stderr, "nfs_ops: nfs_init_context failed\n");
		return 3;
	}
	/* A test must fail rather than hang when the gateway stops answering. */
	nfs_set_timeout(c->nfs, 60000);
	struct nfs_url *u = nfs_parse_url_dir(c->nfs, url);
	if (!u) {
		fprintf(stderr, "nfs_ops: bad url %s: %s\n", url, nfs_get_error(c->nfs));
		return 64;
	}
	int r = nfs_mount(c->nfs, u->server, u->path);
	if (r < 0) {
		fprintf(stderr, "nfs_ops: mount %s:%s failed: %s (%s)\n", u->server, u->path,
			strerror(-r), nfs_get_error(c->nfs));
		nfs_destroy_url(u);
		return 3;
	}
	nfs_destroy_url(u);
	return 0;
}

static void conn_close(struct conn *c)
{
	if (c->nfs)
		nfs_destroy_context(c->nfs);
	c->nfs = NULL;
}

static int fail(struct conn *c, const char *what, const char *path, int r)
{
	fprintf(stderr, "nfs_ops: %s %s: %s (%s)\n", what, path, strerror(-r),
		nfs_get_error(c->nfs));
	return 1;
}

static bool parse_u64(const char *s, uint64_t *out)
{
	char *end;
	errno = 0;
	unsigned long long v = strtoull(s, &end, 0);
	if (errno || end == s || *end)
		return false;
	*out = v;
	return true;
}

static bool parse_mode(const char *s, int *out)
{
	char *end;
	errno = 0;
	long v = strtol(s, &end, 8);
	if (errno || end == s || *end || v < 0 || v > 07777)
		return false;
	*out = (int)v;
	return true;
}

static const char *type_name(uint64_t mode)
{
	switch (mode & S_IFMT) {
	case S_IFREG:
		return "reg";
	case S_IFDIR:
		return "dir";
	case S_IFLNK:
		return "lnk";
	default:
		return "other";
	}
}

static int do_stat(struct conn *c, const char *path, bool link)
{
	struct nfs_stat_64 st = {0};
	int r = link ? nfs_lstat64(c->nfs, path, &st) : nfs_stat64(c->nfs, path, &st);
	if (r < 0)
		return fail(c, link ? "lstat" : "stat", path, r);
	printf("type=%s mode=0%03" PRIo64 " nlink=%" PRIu64 " uid=%" PRIu64 " gid=%" PRIu64
	       " size=%" PRIu64 " used=%" PRIu64 " ino=%" PRIu64 "\n",
	       type_name(st.nfs_mode), st.nfs_mode & 07777, st.nfs_nlink, st.nfs_uid, st.nfs_gid,
	       st.nfs_size, st.nfs_used, st.nfs_ino);
	return 0;
}

static int do_ls(struct conn *c, const char *path)
{
	struct nfsdir *d = NULL;
	int r = nfs_opendir(c->nfs, path, &d);
	if (r < 0)
		return fail(c, "opendir", path, r);
	struct nfsdirent *e;
	while ((e = nfs_readdir(c->nfs, d)) != NULL)
		printf("%s\n", e->name);
	nfs_closedir(c->nfs, d);
	return 0;
}

static int do_mkfiles(struct conn *c, const char *dir, uint64_t n)
{
	char path[4096];
	for (uint64_t i = 0; i < n; i++) {
		snprintf(path, sizeof(path), "%s/f%" PRIu64, dir, i);
		struct nfsfh *fh = NULL;
		int r = nfs_create(c->nfs, path, O_RDWR | O_CREAT | O_EXCL, 0644, &fh);
		if (r < 0)
			return fail(c, "create", path, r);
		nfs_close(c->nfs, fh);
	}
	return 0;
}

static int open_rw(struct conn *c, const char *path, bool create, struct nfsfh **fh)
{
	int r = nfs_open(c->nfs, path, O_RDWR, fh);
	if (r == -ENOENT && create)
		r = nfs_create(c->nfs, path, O_RDWR | O_CREAT, 0644, fh);
	return r;
}

/* Writes len bytes from buf at off in pieces the server accepts. */
static int pwrite_all(struct conn *c, struct nfsfh *fh, uint64_t off, uint64_t len,
		      const uint8_t *buf)
{
	while (len) {
		uint64_t n = len < CHUNK ? len : CHUNK;
		int r = nfs_pwrite(c->nfs, fh, off, n, buf);
		if (r < 0)
			return r;
		if (r == 0)
			return -EIO;
		off += (uint64_t)r;
		buf += r;
		len -= (uint64_t)r;
	}
	return 0;
}

/* Reads up to len bytes at off; returns the count read (short only at EOF) or -errno. */
static int64_t pread_all(struct conn *c, struct nfsfh *fh, uint64_t off, uint64_t len, uint8_t *buf)
{
	uint64_t done = 0;
	while (done < len) {
		uint64_t n = len - done < CHUNK ? len - done : CHUNK;
		int r = nfs_pread(c->nfs, fh, off + done, n, buf + done);
		if (r < 0)
			return r;
		if (r == 0)
			break;
		done += (uint64_t)r;
	}
	return (int64_t)done;
}

static int do_write(struct conn *c, const char *path, uint64_t off, uint64_t len, int byte)
{
	struct nfsfh *fh = NULL;
	int r = open_rw(c, path, true, &fh);
	if (r < 0)
		return fail(c, "open", path, r);
	uint8_t *buf = malloc(CHUNK);
	if (!buf)
		return 1;
	memset(buf, byte, CHUNK);
	for (uint64_t done = 0; done < len && r >= 0;) {
		uint64_t n = len - done < CHUNK ? len - done : CHUNK;
		r = pwrite_all(c, fh, off + done, n, buf);
		done += n;
	}
	free(buf);
	if (r >= 0)
		r = nfs_fsync(c->nfs, fh);
	int rc = nfs_close(c->nfs, fh);
	if (r < 0)
		return fail(c, "write", path, r);
	if (rc < 0)
		return fail(c, "close", path, rc);
	return 0;
}

static int do_check(struct conn *c, const char *path, uint64_t off, uint64_t len, int byte)
{
	struct nfsfh *fh = NULL;
	int r = nfs_open(c->nfs, path, O_RDONLY, &fh);
	if (r < 0)
		return fail(c, "open", path, r);
	uint8_t *buf = malloc(CHUNK);
	if (!buf)
		return 1;
	int ret = 0;
	for (uint64_t done = 0; done < len;) {
		uint64_t n = len - done < CHUNK ? len - done : CHUNK;
		int64_t got = pread_all(c, fh, off + done, n, buf);
		if (got < 0) {
			ret = fail(c, "read", path, (int)got);
			break;
		}
		for (int64_t i = 0; i < got; i++) {
			if (buf[i] != (uint8_t)byte) {
				fprintf(stderr,
					"nfs_ops: check %s: byte at %" PRIu64
					" is 0x%02x, want 0x%02x\n",
					path, off + done + (uint64_t)i, buf[i], byte);
				ret = 2;
				break;
			}
		}
		if (ret)
			break;
		if ((uint64_t)got < n) {
			fprintf(stderr, "nfs_ops: check %s: short read at %" PRIu64 "\n", path,
				off + done + (uint64_t)got);
			ret = 2;
			break;
		}
		done += n;
	}
	free(buf);
	nfs_close(c->nfs, fh);
	return ret;
}

static void fill(uint8_t *buf, uint64_t len, uint64_t seed)
{
	uint64_t s = seed;
	for (uint64_t i = 0; i < len; i++) {
		s = s * 6364136223846793005ull + 1442695040888963407ull;
		buf[i] = (uint8_t)(s >> 56);
	}
}

static int compare(const char *what, const uint8_t *got, const uint8_t *want, uint64_t len)
{
	for (uint64_t i = 0; i < len; i++) {
		if (got[i] != want[i]) {
			fprintf(stderr,
				"nfs_ops: xclient %s: first difference at byte %" PRIu64 "\n", what,
				i);
			return 2;
		}
	}
	return 0;
}

static int do_xclient(const char *url, const char *path, uint64_t size)
{
	struct conn a = {0}, b = {0};
	struct nfsfh *fa = NULL, *fb = NULL;
	uint8_t *want = malloc(size ? size : 1), *got = malloc(size ? size : 1);
	int ret = 1, r;
	if (!want || !got)
		goto out;
	fill(want, size, size ^ 0x9e3779b97f4a7c15ull);
	if ((ret = mount_url(url, &a)) || (ret = mount_url(url, &b)))
		goto out;
	ret = 1;
	r = nfs_create(a.nfs, path, O_RDWR | O_CREAT | O_TRUNC, 0644, &fa);
	if (r < 0) {
		ret = fail(&a, "create (client A)", path, r);
		goto out;
	}
	if ((r = pwrite_all(&a, fa, 0, size, want)) < 0) {
		ret = fail(&a, "write (client A)", path, r);
		goto out;
	}
	/* No close, no COMMIT: B must see A's acknowledged (UNSTABLE) writes as they are. */
	r = nfs_open(b.nfs, path, O_RDWR, &fb);
	if (r < 0) {
		ret = fail(&b, "open (client B)", path, r);
		goto out;
	}
	struct nfs_stat_64 st = {0};
	if ((r = nfs_fstat64(b.nfs, fb, &st)) < 0) {
		ret = fail(&b, "fstat (client B)", path, r);
		goto out;
	}
	if (st.nfs_size != size) {
		fprintf(stderr, "nfs_ops: xclient: B sees size %" PRIu64 ", A wrote %" PRIu64 "\n",
			st.nfs_size, size);
		ret = 2;
		goto out;
	}
	int64_t n = pread_all(&b, fb, 0, size, got);
	if (n < 0) {
		ret = fail(&b, "read (client B)", path, (int)n);
		goto out;
	}
	if ((uint64_t)n != size) {
		fprintf(stderr, "nfs_ops: xclient: B read %" PRId64 " of %" PRIu64 " bytes\n", n,
			size);
		ret = 2;
		goto out;
	}
	if ((ret = compare("B reading A's data", got, want, size)))
		goto out;
	uint64_t part = size < 65536 ? size : 65536;
	fill(want, part, 42);
	if ((r = pwrite_all(&b, fb, 0, part, want)) < 0) {
		ret = fail(&b, "write (client B)", path, r);
		goto out;
	}
	n = pread_all(&a, fa, 0, part, got);
	if (n < 0) {
		ret = fail(&a, "read (client A)", path, (int)n);
		goto out;
	}
	if ((uint64_t)n != part) {
		fprintf(stderr, "nfs_ops: xclient: A read %" PRId64 " of %" PRIu64 " bytes\n", n,
			part);
		ret = 2;
		goto out;
	}
	ret = compare("A reading B's data", got, want, part);
out:
	if (fa)
		nfs_close(a.nfs, fa);
	if (fb)
		nfs_close(b.nfs, fb);
	conn_close(&a);
	conn_close(&b);
	free(want);
	free(got);
	return ret;
}

static int run(struct conn *c, int argc, char **argv)
{
	const char *cmd = argv[0];
	int mode = 0755, r;
	uint64_t a, b, v;
	if (!strcmp(cmd, "mkdir") && (argc == 2 || argc == 3)) {
		if (argc == 3 && !parse_mode(argv[2], &mode))
			return usage();
		r = nfs_mkdir2(c->nfs, argv[1], mode);
		return r < 0 ? fail(c, "mkdir", argv[1], r) : 0;
	}
	if (!strcmp(cmd, "rmdir") && argc == 2) {
		r = nfs_rmdir(c->nfs, argv[1]);
		return r < 0 ? fail(c, "rmdir", argv[1], r) : 0;
	}
	if (!strcmp(cmd, "create") && (argc == 2 || argc == 3)) {
		mode = 0644;
		if (argc == 3 && !parse_mode(argv[2], &mode))
			return usage();
		struct nfsfh *fh = NULL;
		r = nfs_create(c->nfs, argv[1], O_RDWR | O_CREAT, mode, &fh);
		if (r < 0)
			return fail(c, "create", argv[1], r);
		r = nfs_close(c->nfs, fh);
		return r < 0 ? fail(c, "close", argv[1], r) : 0;
	}
	if (!strcmp(cmd, "unlink") && argc == 2) {
		r = nfs_unlink(c->nfs, argv[1]);
		return r < 0 ? fail(c, "unlink", argv[1], r) : 0;
	}
	if (!strcmp(cmd, "rename") && argc == 3) {
		r = nfs_rename(c->nfs, argv[1], argv[2]);
		return r < 0 ? fail(c, "rename", argv[1], r) : 0;
	}
	if (!strcmp(cmd, "link") && argc == 3) {
		r = nfs_link(c->nfs, argv[1], argv[2]);
		return r < 0 ? fail(c, "link", argv[1], r) : 0;
	}
	if (!strcmp(cmd, "symlink") && argc == 3) {
		r = nfs_symlink(c->nfs, argv[1], argv[2]);
		return r < 0 ? fail(c, "symlink", argv[2], r) : 0;
	}
	if (!strcmp(cmd, "readlink") && argc == 2) {
		char buf[4096] = {0};
		r = nfs_readlink(c->nfs, argv[1], buf, sizeof(buf) - 1);
		if (r < 0)
			return fail(c, "readlink", argv[1], r);
		printf("%s\n", buf);
		return 0;
	}
	if (!strcmp(cmd, "chmod") && argc == 3) {
		if (!parse_mode(argv[2], &mode))
			return usage();
		r = nfs_chmod(c->nfs, argv[1], mode);
		return r < 0 ? fail(c, "chmod", argv[1], r) : 0;
	}
	if (!strcmp(cmd, "truncate") && argc == 3) {
		if (!parse_u64(argv[2], &a))
			return usage();
		r = nfs_truncate(c->nfs, argv[1], a);
		return r < 0 ? fail(c, "truncate", argv[1], r) : 0;
	}
	if ((!strcmp(cmd, "stat") || !strcmp(cmd, "lstat")) && argc == 2)
		return do_stat(c, argv[1], cmd[0] == 'l');
	if (!strcmp(cmd, "ls") && argc == 2)
		return do_ls(c, argv[1]);
	if (!strcmp(cmd, "mkfiles") && argc == 3) {
		if (!parse_u64(argv[2], &a))
			return usage();
		return do_mkfiles(c, argv[1], a);
	}
	if ((!strcmp(cmd, "write") || !strcmp(cmd, "check")) && argc == 5) {
		if (!parse_u64(argv[2], &a) || !parse_u64(argv[3], &b) || !parse_u64(argv[4], &v) ||
		    v > 255)
			return usage();
		return cmd[0] == 'w' ? do_write(c, argv[1], a, b, (int)v)
				     : do_check(c, argv[1], a, b, (int)v);
	}
	return usage();
}

int main(int argc, char **argv)
{
	if (argc < 3)
		return usage();
	if (!strcmp(argv[2], "xclient")) {
		uint64_t size;
		if (argc != 5 || !parse_u64(argv[4], &size) || size > (1ull << 31))
			return usage();
		return do_xclient(argv[1], argv[3], size);
	}
	struct conn c = {0};
	int ret = mount_url(argv[1], &c);
	if (!ret)
		ret = run(&c, argc - 2, argv + 2);
	conn_close(&c);
	return ret;
}

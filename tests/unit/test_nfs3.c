/*
 * test_nfs3: the NFSv3 program's pure parts — file handle encoding and every malformed
 * handle, errno -> nfsstat3, meta_attr -> fattr3 / wcc conversion, sattr3 decoding, and the
 * permission decisions (ACCESS bits, may/may_delete/may_setattr tables); and the protocol
 * itself for everything that does not touch file data: a real rpc_server on 127.0.0.52 with
 * the real meta (on an in-memory bdev in this file) and no file volumes, driven by a
 * hand-rolled AUTH_SYS client encoding with libnfs's codecs (handles, refusals, namespace
 * ops, READDIR paging and cookie verifiers, ro exports, permissions, nfs3_hold/release, the
 * .snapshots tree); the data path, snapshot reads included, on a real 3-node cluster.
 */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <unistd.h>

#include "blockd/config.h"
#include "nfsgw/nfs3_priv.h"

static const uint8_t FSID[16] = {0x11, 0x22, 0x33, 0x44, 0x55, 0x66, 0x77, 0x88,
				 0x99, 0xaa, 0xbb, 0xcc, 0xdd, 0xee, 0xff, 0x01};

static void test_fh_roundtrip(void **state)
{
	(void)state;
	uint8_t fh[NFS3_FH_LEN];
	nfs3_fh_encode(fh, 0xdeadbeef, FSID, 0x0102030405060708ull, 0xfedcba9876543210ull);
	assert_memory_equal(fh, "BG\x01\x00\xde\xad\xbe\xef", 8);
	assert_memory_equal(fh + 8, FSID, 8);
	uint32_t eid;
	uint64_t fsid8, id, gen;
	assert_int_equal(nfs3_fh_decode(fh, sizeof(fh), &eid, &fsid8, &id, &gen), 0);
	assert_int_equal(eid, 0xdeadbeef);
	assert_true(fsid8 == 0x1122334455667788ull);
	assert_true(fsid8 == nfs3_fsid8(FSID));
	assert_true(id == 0x0102030405060708ull);
	assert_true(gen == 0xfedcba9876543210ull);
	nfs3_fh_encode(fh, 0, FSID, META_ROOT, 0);
	assert_int_equal(nfs3_fh_decode(fh, sizeof(fh), &eid, &fsid8, &id, &gen), 0);
	assert_true(id == META_ROOT && gen == 0 && eid == 0);
}

static void test_fh_malformed(void **state)
{
	(void)state;
	uint8_t fh[NFS3_FH_LEN + 8], bad[NFS3_FH_LEN + 8];
	memset(fh, 0, sizeof(fh));
	nfs3_fh_encode(fh, 7, FSID, 42, 9);
	uint32_t eid;
	uint64_t fsid8, id, gen;
	/* every length but the exact one */
	for (uint32_t len = 0; len <= sizeof(fh); len++)
		if (len != NFS3_FH_LEN)
			assert_int_equal(nfs3_fh_decode(fh, len, &eid, &fsid8, &id, &gen),
					 -EBADMSG);
	assert_int_equal(nfs3_fh_decode(NULL, NFS3_FH_LEN, &eid, &fsid8, &id, &gen), -EBADMSG);
	/* each header byte changed */
	for (int i = 0; i < 4; i++) {
		memcpy(bad, fh, sizeof(fh));
		bad[i] ^= 0x40;
		assert_int_equal(nfs3_fh_decode(bad, NFS3_FH_LEN, &eid, &fsid8, &id, &gen),
				 -EBADMSG);
	}
	/* fileid 0 never exists */
	nfs3_fh_encode(bad, 7, FSID, 0, 9);
	assert_int_equal(nfs3_fh_decode(bad, NFS3_FH_LEN, &eid, &fsid8, &id, &gen), -EBADMSG);
	/* body bytes are data, not structure */
	memcpy(bad, fh, sizeof(fh));
	bad[20] ^= 1;
	assert_int_equal(nfs3_fh_decode(bad, NFS3_FH_LEN, &eid, &fsid8, &id, &gen), 0);
	assert_true(id != 42);
}

static void test_errno_map(void **state)
{
	(void)state;
	static const struct {
		int err;
		nfsstat3 st;
	} t[] = {
	    {0, NFS3_OK},
	    {-EPERM, NFS3ERR_PERM},
	    {-ENOENT, NFS3ERR_NOENT},
	    {-EIO, NFS3ERR_IO},
	    {-ENXIO, NFS3ERR_NXIO},
	    {-EACCES, NFS3ERR_ACCES},
	    {-EEXIST, NFS3ERR_EXIST},
	    {-EXDEV, NFS3ERR_XDEV},
	    {-ENODEV, NFS3ERR_NODEV},
	    {-ENOTDIR, NFS3ERR_NOTDIR},
	    {-EISDIR, NFS3ERR_ISDIR},
	    {-EINVAL, NFS3ERR_INVAL},
	    {-EFBIG, NFS3ERR_FBIG},
	    {-ENOSPC, NFS3ERR_NOSPC},
	    {-EROFS, NFS3ERR_ROFS},
	    {-EMLINK, NFS3ERR_MLINK},
	    {-ENAMETOOLONG, NFS3ERR_NAMETOOLONG},
	    {-ENOTEMPTY, NFS3ERR_NOTEMPTY},
	    {-EDQUOT, NFS3ERR_DQUOT},
	    {-EOPNOTSUPP, NFS3ERR_NOTSUPP},
	    {-EAGAIN, NFS3ERR_JUKEBOX},
	    {-ENOMEM, NFS3ERR_SERVERFAULT},
	    {-ESTALE, NFS3ERR_IO}, /* fenced backend: never success, never "stale handle" */
	    {-ETIMEDOUT, NFS3ERR_IO},
	    {-EUCLEAN, NFS3ERR_IO},
	    {-EBADMSG, NFS3ERR_IO}, /* corrupt data below us is not a bad handle */
	    {-12345, NFS3ERR_IO},
	};
	for (size_t i = 0; i < sizeof(t) / sizeof(t[0]); i++) {
		if (nfs3_status(t[i].err) != t[i].st)
			fail_msg("errno %d: got %d want %d", t[i].err, nfs3_status(t[i].err),
				 t[i].st);
	}
}

static struct meta_attr mkattr(enum meta_type t, uint32_t mode, uint32_t uid, uint32_t gid)
{
	struct meta_attr a = {
	    .fileid = 77,
	    .gen = 5,
	    .type = t,
	    .mode = mode,
	    .nlink = 2,
	    .uid = uid,
	    .gid = gid,
	    .size = 1ull << 40,
	    .rdev_major = 8,
	    .rdev_minor = 3,
	    .atime = {1700000000, 1},
	    .mtime = {1700000001, 999999999},
	    .ctime = {1700000002, 0},
	};
	return a;
}

static void test_fattr(void **state)
{
	(void)state;
	struct meta_attr a = mkattr(META_CHR, 04755, 1000, 100);
	fattr3 f;
	nfs3_fattr(NULL, &a, &f);
	assert_int_equal(f.type, NF3CHR);
	assert_int_equal(f.mode, 04755);
	assert_int_equal(f.nlink, 2);
	assert_int_equal(f.uid, 1000);
	assert_int_equal(f.gid, 100);
	assert_true(f.size == 1ull << 40);
	assert_true(f.used == 0);
	assert_int_equal(f.rdev.specdata1, 8);
	assert_int_equal(f.rdev.specdata2, 3);
	assert_true(f.fileid == 77);
	assert_int_equal(f.atime.seconds, 1700000000);
	assert_int_equal(f.atime.nseconds, 1);
	assert_int_equal(f.mtime.seconds, 1700000001);
	assert_int_equal(f.mtime.nseconds, 999999999);
	assert_int_equal(f.ctime.seconds, 1700000002);
	/* times outside nfstime3's range clamp */
	a.mtime.sec = -5;
	a.atime.sec = (int64_t)1 << 40;
	a.type = META_DIR;
	nfs3_fattr(NULL, &a, &f);
	assert_int_equal(f.mtime.seconds, 0);
	assert_int_equal(f.mtime.nseconds, 0);
	assert_int_equal(f.atime.seconds, UINT32_MAX);
	assert_int_equal(f.type, NF3DIR);
	assert_true(f.used == 4096);
	/* pre-op (wcc) attributes */
	pre_op_attr pre;
	nfs3_pre_op(&a, &pre);
	assert_true(pre.attributes_follow);
	assert_true(pre.pre_op_attr_u.attributes.size == 1ull << 40);
	assert_int_equal(pre.pre_op_attr_u.attributes.ctime.seconds, 1700000002);
	nfs3_pre_op(NULL, &pre);
	assert_false(pre.attributes_follow);
	post_op_attr post;
	nfs3_post_op_from(NULL, &a, &post);
	assert_true(post.attributes_follow);
	assert_int_equal(post.post_op_attr_u.attributes.type, NF3DIR);
}

static void test_sattr(void **state)
{
	(void)state;
	sattr3 s;
	struct meta_setattr sa;
	memset(&s, 0, sizeof(s));
	assert_int_equal(nfs3_sattr(&s, &sa), 0);
	assert_int_equal(sa.mask, 0);
	s.mode.set_it = 1;
	s.mode.set_mode3_u.mode = 0640;
	s.uid.set_it = 1;
	s.uid.set_uid3_u.uid = 5;
	s.gid.set_it = 1;
	s.gid.set_gid3_u.gid = 6;
	s.size.set_it = 1;
	s.size.set_size3_u.size = 1ull << 33;
	s.atime.set_it = SET_TO_SERVER_TIME;
	s.mtime.set_it = SET_TO_CLIENT_TIME;
	s.mtime.set_mtime_u.mtime.seconds = 123;
	s.mtime.set_mtime_u.mtime.nseconds = 456;
	assert_int_equal(nfs3_sattr(&s, &sa), 0);
	assert_int_equal(sa.mask, META_SET_MODE | META_SET_UID | META_SET_GID | META_SET_SIZE |
				      META_SET_ATIME_NOW | META_SET_MTIME);
	assert_int_equal(sa.mode, 0640);
	assert_int_equal(sa.uid, 5);
	assert_int_equal(sa.gid, 6);
	assert_true(sa.size == 1ull << 33);
	assert_true(sa.mtime.sec == 123 && sa.mtime.nsec == 456);
	s.mode.set_mode3_u.mode = 010644; /* a type bit */
	assert_int_equal(nfs3_sattr(&s, &sa), -EINVAL);
	s.mode.set_mode3_u.mode = 0644;
	s.mtime.set_mtime_u.mtime.nseconds = 1000000000;
	assert_int_equal(nfs3_sattr(&s, &sa), -EINVAL);
	s.mtime.set_it = 7;
	assert_int_equal(nfs3_sattr(&s, &sa), -EINVAL);
}

static struct nfs3_cred cred(uint32_t uid, uint32_t gid, uint32_t g2)
{
	struct nfs3_cred c = {.uid = uid, .gid = gid, .ngids = g2 ? 1 : 0};
	c.gids[0] = g2;
	return c;
}

static void test_perm_table(void **state)
{
	(void)state;
	struct meta_attr f = mkattr(META_REG, 0754, 1000, 100);
	struct nfs3_cred owner = cred(1000, 1, 0), member = cred(2000, 1, 100),
			 other = cred(3000, 3000, 0), root = cred(0, 0, 0);
	assert_int_equal(nfs3_perm(&f, &owner, 7), 7);
	assert_int_equal(nfs3_perm(&f, &member, 7), 5);
	assert_int_equal(nfs3_perm(&f, &other, 7), 4);
	assert_int_equal(nfs3_perm(&f, &root, 7), 7);
	f.mode = 0600;
	assert_int_equal(nfs3_perm(&f, &root, 7), 6); /* no x bit: root cannot exec */
	assert_int_equal(nfs3_perm(&f, &member, 7), 0);
	/* owner class wins even when it grants less than group */
	f.mode = 0070;
	assert_int_equal(nfs3_perm(&f, &owner, 7), 0);
	assert_int_equal(nfs3_may(&f, &owner, NFS3_MAY_WRITE, false), -EACCES);
	assert_int_equal(nfs3_may(&f, &owner, NFS3_MAY_WRITE, true), 0);
	assert_int_equal(nfs3_may(&f, &owner, NFS3_MAY_EXEC, true), -EACCES);
	assert_int_equal(nfs3_may(&f, &member, NFS3_MAY_WRITE, true), 0);
	assert_int_equal(nfs3_may(&f, &other, NFS3_MAY_READ, true), -EACCES);
	assert_true(nfs3_cred_in_group(&member, 100));
	assert_true(nfs3_cred_in_group(&member, 1));
	assert_false(nfs3_cred_in_group(&member, 2));
	struct meta_attr d = mkattr(META_DIR, 0700, 1000, 100);
	assert_int_equal(nfs3_perm(&d, &root, 7), 7); /* root searches any directory */
}

static void test_access_bits(void **state)
{
	(void)state;
	const uint32_t all = ACCESS3_READ | ACCESS3_LOOKUP | ACCESS3_MODIFY | ACCESS3_EXTEND |
			     ACCESS3_DELETE | ACCESS3_EXECUTE;
	struct meta_attr f = mkattr(META_REG, 0754, 1000, 100);
	struct nfs3_cred owner = cred(1000, 1000, 0), member = cred(2000, 100, 0),
			 other = cred(3000, 3000, 0), root = cred(0, 0, 0);
	assert_int_equal(nfs3_access_bits(&f, &owner, false, all),
			 ACCESS3_READ | ACCESS3_MODIFY | ACCESS3_EXTEND | ACCESS3_EXECUTE);
	assert_int_equal(nfs3_access_bits(&f, &member, false, all), ACCESS3_READ | ACCESS3_EXECUTE);
	assert_int_equal(nfs3_access_bits(&f, &other, false, all), ACCESS3_READ);
	assert_int_equal(nfs3_access_bits(&f, &owner, true, all), ACCESS3_READ | ACCESS3_EXECUTE);
	assert_int_equal(nfs3_access_bits(&f, &owner, false, ACCESS3_READ), ACCESS3_READ);
	struct meta_attr d = mkattr(META_DIR, 0775, 1000, 100);
	assert_int_equal(nfs3_access_bits(&d, &member, false, all),
			 ACCESS3_READ | ACCESS3_LOOKUP | ACCESS3_MODIFY | ACCESS3_EXTEND |
			     ACCESS3_DELETE);
	assert_int_equal(nfs3_access_bits(&d, &other, false, all), ACCESS3_READ | ACCESS3_LOOKUP);
	assert_int_equal(nfs3_access_bits(&d, &root, true, all), ACCESS3_READ | ACCESS3_LOOKUP);
	/* write without search on a directory changes nothing */
	d.mode = 0620;
	assert_int_equal(nfs3_access_bits(&d, &member, false, all), 0);
}

static void test_may_delete(void **state)
{
	(void)state;
	struct meta_attr d = mkattr(META_DIR, 01777, 0, 0);
	struct meta_attr f = mkattr(META_REG, 0644, 1000, 100);
	struct nfs3_cred owner = cred(1000, 1000, 0), other = cred(3000, 3000, 0),
			 root = cred(0, 0, 0);
	assert_int_equal(nfs3_may_delete(&d, &f, &owner), 0);
	assert_int_equal(nfs3_may_delete(&d, &f, &other), -EACCES); /* sticky */
	assert_int_equal(nfs3_may_delete(&d, &f, &root), 0);
	d.mode = 0777;
	assert_int_equal(nfs3_may_delete(&d, &f, &other), 0);
	d.mode = 0755;
	assert_int_equal(nfs3_may_delete(&d, &f, &owner), -EACCES); /* no write on dir */
	d.uid = 3000;
	d.mode = 01700;
	assert_int_equal(nfs3_may_delete(&d, &f, &other), 0); /* dir owner, sticky */
}

static void test_may_setattr(void **state)
{
	(void)state;
	struct meta_attr f = mkattr(META_REG, 0644, 1000, 100);
	struct nfs3_cred owner = cred(1000, 100, 200), other = cred(3000, 3000, 0),
			 root = cred(0, 0, 0);
	struct meta_setattr sa = {.mask = META_SET_UID, .uid = 5};
	assert_int_equal(nfs3_may_setattr(&f, &owner, &sa), -EPERM); /* only root chowns */
	assert_int_equal(nfs3_may_setattr(&f, &root, &sa), 0);
	sa.uid = 1000; /* chown to oneself is a no-op */
	assert_int_equal(nfs3_may_setattr(&f, &owner, &sa), 0);
	sa = (struct meta_setattr){.mask = META_SET_GID, .gid = 200};
	assert_int_equal(nfs3_may_setattr(&f, &owner, &sa), 0);
	sa.gid = 300;
	assert_int_equal(nfs3_may_setattr(&f, &owner, &sa), -EPERM); /* not a member */
	assert_int_equal(nfs3_may_setattr(&f, &other, &sa), -EPERM);
	assert_int_equal(nfs3_may_setattr(&f, &root, &sa), 0);
	sa = (struct meta_setattr){.mask = META_SET_MODE, .mode = 0600};
	assert_int_equal(nfs3_may_setattr(&f, &other, &sa), -EPERM);
	assert_int_equal(nfs3_may_setattr(&f, &owner, &sa), 0);
	/* a non-member owner loses the setgid bit; a member keeps it */
	f.gid = 999;
	sa.mode = 02755;
	assert_int_equal(nfs3_may_setattr(&f, &owner, &sa), 0);
	assert_int_equal(sa.mode, 0755);
	f.gid = 200;
	sa.mode = 02755;
	assert_int_equal(nfs3_may_setattr(&f, &owner, &sa), 0);
	assert_int_equal(sa.mode, 02755);
	/* size: write permission, owner override */
	f.mode = 0444;
	sa = (struct meta_setattr){.mask = META_SET_SIZE, .size = 0};
	assert_int_equal(nfs3_may_setattr(&f, &owner, &sa), 0);
	assert_int_equal(nfs3_may_setattr(&f, &other, &sa), -EACCES);
	f.mode = 0666;
	assert_int_equal(nfs3_may_setattr(&f, &other, &sa), 0);
	/* times: explicit only by owner/root; "now" also with write permission */
	sa = (struct meta_setattr){.mask = META_SET_MTIME};
	assert_int_equal(nfs3_may_setattr(&f, &other, &sa), -EPERM);
	assert_int_equal(nfs3_may_setattr(&f, &owner, &sa), 0);
	sa = (struct meta_setattr){.mask = META_SET_MTIME_NOW | META_SET_ATIME_NOW};
	assert_int_equal(nfs3_may_setattr(&f, &other, &sa), 0);
	f.mode = 0644;
	assert_int_equal(nfs3_may_setattr(&f, &other, &sa), -EACCES);
}

/* ---- protocol over a real rpc_server and meta ---- */

#define HOST "127.0.0.52"
#define FATTR3_XDR_LEN 84

/* A memory bdev for the meta volume (sparse anonymous mapping); completions deferred. */
struct membdev {
	struct loop *l;
	uint8_t *mem;
};

struct dcb {
	bdev_cb cb;
	void *arg;
};

static void dcb_run(void *p)
{
	struct dcb d = *(struct dcb *)p;
	free(p);
	d.cb(d.arg, 0);
}

static int mb_done(struct membdev *b, bdev_cb cb, void *arg)
{
	struct dcb *d = malloc(sizeof(*d));
	if (!d)
		return -ENOMEM;
	d->cb = cb;
	d->arg = arg;
	return loop_defer(b->l, dcb_run, d);
}

static int mb_read(void *ctx, uint64_t off, uint32_t len, void *buf, bdev_cb cb, void *arg)
{
	struct membdev *b = ctx;
	memcpy(buf, b->mem + off, len);
	return mb_done(b, cb, arg);
}

static int mb_write(void *ctx, uint64_t off, uint32_t len, const void *buf, uint32_t flags,
		    bdev_cb cb, void *arg)
{
	(void)flags;
	struct membdev *b = ctx;
	memcpy(b->mem + off, buf, len);
	return mb_done(b, cb, arg);
}

static int mb_flush(void *ctx, bdev_cb cb, void *arg)
{
	return mb_done(ctx, cb, arg);
}

static int mb_trim(void *ctx, uint64_t off, uint64_t len, bool zero, uint32_t flags, bdev_cb cb,
		   void *arg)
{
	(void)zero;
	(void)flags;
	struct membdev *b = ctx;
	memset(b->mem + off, 0, len);
	return mb_done(b, cb, arg);
}

static uint64_t mb_size(void *ctx)
{
	(void)ctx;
	return META_VOLUME_SIZE;
}

static const struct bdev_ops mb_ops = {mb_read, mb_write, mb_flush, mb_trim, mb_size};

static const char exports_text[] = "/exp 127.0.0.0/8(rw,no_root_squash)\n"
				   "/ro 127.0.0.0/8(ro,no_root_squash)\n"
				   "/other 10.0.0.0/8(rw)\n";

struct fx {
	struct loop *l;
	struct membdev mb;
	struct meta *meta;
	struct rpc_server *s;
	struct nfs3 *n;
	struct exports ex;
	pthread_t thread;
	uint16_t port;
	int res;
	bool done;
	uint8_t fsid[16];
	uint8_t root[3][NFS3_FH_LEN]; /* /exp, /ro, /other */
	int sock;
	uint32_t xid;
	/* The data-path test: file volumes on a real cluster (blockctl cluster up). */
	bool data;
	char dir[64], conf[128], build[1024];
	struct config cfg;
	struct filevol *fv;
};

static const struct exports *fx_exports(void *ctx)
{
	return &((struct fx *)ctx)->ex;
}

static void *fx_thread(void *arg)
{
	loop_run(((struct fx *)arg)->l);
	return NULL;
}

static void fx_cb(void *arg, int res)
{
	struct fx *f = arg;
	f->res = res;
	__atomic_store_n(&f->done, true, __ATOMIC_RELEASE);
}

static void fx_wait(struct fx *f)
{
	for (int i = 0; i < 10000 && !__atomic_load_n(&f->done, __ATOMIC_ACQUIRE); i++)
		usleep(1000);
	assert_true(__atomic_load_n(&f->done, __ATOMIC_ACQUIRE));
	__atomic_store_n(&f->done, false, __ATOMIC_RELEASE);
}

static void fx_open(void *arg)
{
	struct fx *f = arg;
	int rc = meta_open(f->l, (struct bdev){&mb_ops, &f->mb}, &f->meta, fx_cb, f);
	if (rc)
		fx_cb(f, rc);
}

static const char *const roots[3] = {"exp", "ro", "other"};

static void noop_cb(void *arg, int res)
{
	(void)arg;
	(void)res;
}

/* The export directories; the last creation's callback means all are durable (one log). */
static void fx_mkroots(void *arg)
{
	struct fx *f = arg;
	for (int i = 0; i < 3; i++) {
		uint64_t id;
		bool existed;
		struct meta_create_args ca = {
		    .dir = META_ROOT, .name = roots[i], .type = META_DIR, .mode = 0755};
		int rc = meta_create(f->meta, &ca, &id, &existed, i == 2 ? fx_cb : noop_cb, f);
		if (rc && i == 2)
			fx_cb(f, rc);
	}
}

static void fx_serve(void *arg)
{
	struct fx *f = arg;
	struct meta_info mi;
	meta_info(f->meta, &mi);
	memcpy(f->fsid, mi.fsid, 16);
	for (int i = 0; i < 3; i++) {
		uint64_t id;
		struct meta_attr a;
		char path[16];
		snprintf(path, sizeof(path), "/%s", roots[i]);
		assert_int_equal(meta_lookup(f->meta, META_ROOT, roots[i], &id), 0);
		assert_int_equal(meta_getattr(f->meta, id, &a), 0);
		nfs3_fh_encode(f->root[i], exports_find_path(&f->ex, path)->id, mi.fsid, id, a.gen);
	}
	int rc = 0;
	if (f->data) {
		struct filevol_params fp = {
		    .l = f->l, .cluster = &f->cfg, .replicas = 3, .engine_id = "test_nfs3"};
		rc = filevol_new(&fp, &f->fv);
	}
	struct nfs3_params p = {.meta = f->meta, .fv = f->fv, .exports = fx_exports, .ctx = f};
	if (!rc)
		rc = rpc_server_new(f->l, &f->s);
	if (!rc)
		rc = nfs3_prog_new(f->s, &p, &f->n);
	if (!rc)
		rc = rpc_server_listen(f->s, HOST, 0, &f->port);
	fx_cb(f, rc);
}

static void fx_meta_closed(void *arg, int res)
{
	struct fx *f = arg;
	if (!f->fv || res) {
		fx_cb(f, res);
		return;
	}
	int rc = filevol_close(f->fv, fx_cb, f);
	if (rc)
		fx_cb(f, rc);
}

static void fx_stop(void *arg)
{
	struct fx *f = arg;
	rpc_server_free(f->s);
	nfs3_prog_free(f->n);
	meta_close(f->meta, fx_meta_closed, f);
}

static void fx_quit(void *arg)
{
	loop_stop(arg);
}

static int fx_start(struct fx *f, void **state)
{
	char err[128];
	assert_int_equal(exports_parse(exports_text, &f->ex, err, sizeof(err)), 0);
	f->mb.mem = mmap(NULL, META_VOLUME_SIZE, PROT_READ | PROT_WRITE,
			 MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
	assert_true(f->mb.mem != MAP_FAILED);
	assert_int_equal(loop_new(&f->l), 0);
	f->mb.l = f->l;
	assert_int_equal(pthread_create(&f->thread, NULL, fx_thread, f), 0);
	assert_int_equal(loop_post(f->l, fx_open, f), 0);
	fx_wait(f);
	assert_int_equal(f->res, 0);
	assert_int_equal(loop_post(f->l, fx_mkroots, f), 0);
	fx_wait(f);
	assert_int_equal(f->res, 0);
	assert_int_equal(loop_post(f->l, fx_serve, f), 0);
	fx_wait(f);
	assert_int_equal(f->res, 0);
	f->sock = socket(AF_INET, SOCK_STREAM, 0);
	struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons(f->port)};
	inet_pton(AF_INET, HOST, &sa.sin_addr);
	assert_int_equal(connect(f->sock, (struct sockaddr *)&sa, sizeof(sa)), 0);
	*state = f;
	return 0;
}

static int fx_setup(void **state)
{
	struct fx *f = calloc(1, sizeof(*f));
	assert_non_null(f);
	return fx_start(f, state);
}

static void cluster_down(struct fx *f)
{
	char cmd[2048];
	snprintf(cmd, sizeof(cmd), "'%s/blockctl' -c '%s' cluster down >/dev/null 2>&1", f->build,
		 f->conf);
	if (system(cmd) != 0)
		fprintf(stderr, "cluster down failed\n");
	snprintf(cmd, sizeof(cmd), "rm -rf '%s'", f->dir);
	if (system(cmd) != 0)
		fprintf(stderr, "rm %s failed\n", f->dir);
}

/* A 3-node cluster of the built blockd ($BUILD, else build-san) for the file volumes. */
static int fx_data_setup(void **state)
{
	struct fx *f = calloc(1, sizeof(*f));
	assert_non_null(f);
	f->data = true;
	const char *b = getenv("BUILD");
	snprintf(f->build, sizeof(f->build), "%s", b && *b ? b : "build-san");
	int r = -1;
	/* Another run may hold a port range: try the next (each in a fresh directory). */
	for (unsigned k = 0; k < 4 && r != 0; k++) {
		if (k)
			cluster_down(f);
		strcpy(f->dir, "/tmp/test_nfs3.XXXXXX");
		assert_non_null(mkdtemp(f->dir));
		snprintf(f->conf, sizeof(f->conf), "%s/cluster.conf", f->dir);
		unsigned base = 25100 + (unsigned)((getpid() + 3 * k) % 8) * 100;
		char cmd[4096];
		snprintf(cmd, sizeof(cmd),
			 "BLOCKD_BIN='%s/blockd' ASAN_OPTIONS=detect_leaks=0 '%s/blockctl' cluster "
			 "up --nodes 3 --dir '%s' --base-port %u --no-gateway >/dev/null",
			 f->build, f->build, f->dir, base);
		r = system(cmd);
	}
	char err[256] = "";
	if (r == 0)
		r = config_load(f->conf, &f->cfg, err, sizeof(err));
	if (r != 0) {
		fprintf(stderr, "cluster setup failed (%d) %s\n", r, err);
		cluster_down(f);
		free(f);
		return -1;
	}
	return fx_start(f, state);
}

static int fx_teardown(void **state)
{
	struct fx *f = *state;
	close(f->sock);
	assert_int_equal(loop_post(f->l, fx_stop, f), 0);
	fx_wait(f);
	assert_int_equal(loop_post(f->l, fx_quit, f->l), 0);
	pthread_join(f->thread, NULL);
	loop_free(f->l);
	munmap(f->mb.mem, META_VOLUME_SIZE);
	if (f->data)
		cluster_down(f);
	free(f);
	return 0;
}

static void put32(uint8_t *p, uint32_t v)
{
	v = htonl(v);
	memcpy(p, &v, 4);
}

static uint32_t get32(const uint8_t *p)
{
	uint32_t v;
	memcpy(&v, p, 4);
	return ntohl(v);
}

static void full_read(int fd, void *buf, size_t len)
{
	for (size_t got = 0; got < len;) {
		ssize_t r = read(fd, (uint8_t *)buf + got, len - got);
		assert_true(r > 0);
		got += (size_t)r;
	}
}

/* One call as uid/gid; returns the accept_stat (decoding res on SUCCESS). The reply buffer
 * stays in *keep (decoded strings may point into it) until the next call frees it. */
struct reply {
	uint8_t *buf;
	uint32_t off, len; /* the result body within buf */
	ZDR z;
	bool live;
};

static void reply_free(struct reply *rp)
{
	if (rp->live)
		zdr_destroy(&rp->z);
	free(rp->buf);
	memset(rp, 0, sizeof(*rp));
}

/* Sends one call; returns its xid. */
static uint32_t send_raw(struct fx *f, uint32_t proc, uint32_t uid, uint32_t gid,
			 const uint8_t *args, uint32_t alen)
{
	uint8_t hdr[4 + 40 + 20 + 8];
	uint32_t xid = ++f->xid, w = 4;
	uint32_t words[] = {xid, 0, 2, NFS3_PROG, 3, proc, 1, 20, 0, 0, uid, gid, 0, 0, 0};
	for (size_t i = 0; i < sizeof(words) / 4; i++, w += 4)
		put32(hdr + w, words[i]);
	put32(hdr, 0x80000000u | (w - 4 + alen));
	/* One write: a header and args in two segments would wait on Nagle + delayed ACK. */
	struct iovec iov[2] = {{hdr, w}, {(void *)args, alen}};
	assert_int_equal(writev(f->sock, iov, alen ? 2 : 1), (ssize_t)(w + alen));
	return xid;
}

/* Receives the reply to xid (the next one on the socket). */
static int recv_raw(struct fx *f, uint32_t xid, zdrproc_t rescodec, void *res, size_t ressize,
		    struct reply *rp)
{
	uint8_t mark[4];
	full_read(f->sock, mark, 4);
	uint32_t len = get32(mark) & 0x7fffffffu;
	reply_free(rp);
	rp->buf = calloc(1, len + 8);
	full_read(f->sock, rp->buf, len);
	assert_int_equal(get32(rp->buf), xid);
	assert_int_equal(get32(rp->buf + 4), 1); /* REPLY */
	assert_int_equal(get32(rp->buf + 8), 0); /* MSG_ACCEPTED */
	uint32_t vlen = get32(rp->buf + 16);
	uint32_t stat = get32(rp->buf + 20 + vlen);
	rp->off = 24 + vlen;
	rp->len = len - rp->off;
	if (stat == 0 && rescodec) {
		memset(res, 0, ressize);
		zdrmem_create(&rp->z, (char *)rp->buf + 24 + vlen, len - 24 - vlen, ZDR_DECODE);
		rp->live = true;
		assert_true(rescodec(&rp->z, res));
	}
	return (int)stat;
}

static int call_raw(struct fx *f, uint32_t proc, uint32_t uid, uint32_t gid, const uint8_t *args,
		    uint32_t alen, zdrproc_t rescodec, void *res, size_t ressize, struct reply *rp)
{
	uint32_t xid = send_raw(f, proc, uid, gid, args, alen);
	return recv_raw(f, xid, rescodec, res, ressize, rp);
}

static int call(struct fx *f, uint32_t proc, uint32_t uid, zdrproc_t argcodec, void *args,
		zdrproc_t rescodec, void *res, size_t ressize, struct reply *rp)
{
	const size_t asize = NFS3_MAX_IO + 4096;
	uint8_t *abuf = malloc(asize);
	assert_non_null(abuf);
	ZDR z;
	zdrmem_create(&z, (char *)abuf, asize, ZDR_ENCODE);
	assert_true(argcodec(&z, args));
	uint32_t alen = (uint32_t)zdr_getpos(&z);
	zdr_destroy(&z);
	int st = call_raw(f, proc, uid, uid, abuf, alen, rescodec, res, ressize, rp);
	free(abuf);
	return st;
}

#define CALL(f, proc, uid, A, args, R, res, rp)                                                    \
	call(f, proc, uid, NFS3_ZDR(zdr_##A), args, NFS3_ZDR(zdr_##R), res, sizeof(*(res)), rp)

static nfs_fh3 fh3(uint8_t *b, uint32_t len)
{
	nfs_fh3 h = {.data = {.data_len = len, .data_val = (char *)b}};
	return h;
}

static nfsstat3 getattr(struct fx *f, uint8_t *fh, uint32_t len, fattr3 *out)
{
	GETATTR3args a = {.object = fh3(fh, len)};
	GETATTR3res r;
	struct reply rp = {0};
	assert_int_equal(CALL(f, 1, 0, GETATTR3args, &a, GETATTR3res, &r, &rp), 0);
	if (out && r.status == NFS3_OK)
		*out = r.GETATTR3res_u.resok.obj_attributes;
	reply_free(&rp);
	return r.status;
}

static void test_proto_handles(void **state)
{
	struct fx *f = *state;
	struct reply rp = {0};
	/* NULL, an unknown procedure, undecodable args */
	assert_int_equal(call_raw(f, 0, 0, 0, NULL, 0, NULL, NULL, 0, &rp), 0);
	assert_int_equal(call_raw(f, 22, 0, 0, NULL, 0, NULL, NULL, 0, &rp), 3);
	uint8_t trunc[4] = {0, 0, 0, 32};
	assert_int_equal(call_raw(f, 1, 0, 0, trunc, 4, NULL, NULL, 0, &rp), 4);
	reply_free(&rp);
	fattr3 fa;
	assert_int_equal(getattr(f, f->root[0], NFS3_FH_LEN, &fa), NFS3_OK);
	assert_int_equal(fa.type, NF3DIR);
	assert_int_equal(fa.mode, 0755);
	assert_true(fa.fsid == nfs3_fsid8(f->fsid));
	uint8_t b[NFS3_FH_LEN + 4];
	memcpy(b, f->root[0], NFS3_FH_LEN);
	assert_int_equal(getattr(f, b, NFS3_FH_LEN - 1, NULL), NFS3ERR_BADHANDLE);
	assert_int_equal(getattr(f, b, NFS3_FH_LEN + 4, NULL), NFS3ERR_BADHANDLE);
	assert_int_equal(getattr(f, b, 0, NULL), NFS3ERR_BADHANDLE);
	b[0] = 'X';
	assert_int_equal(getattr(f, b, NFS3_FH_LEN, NULL), NFS3ERR_BADHANDLE);
	/* wrong generation, unknown fileid, other fsid, unknown export: stale */
	uint64_t id = fa.fileid;
	uint32_t eid = exports_find_path(&f->ex, "/exp")->id;
	nfs3_fh_encode(b, eid, f->fsid, id, 12345);
	assert_int_equal(getattr(f, b, NFS3_FH_LEN, NULL), NFS3ERR_STALE);
	nfs3_fh_encode(b, eid, f->fsid, 999999, 0);
	assert_int_equal(getattr(f, b, NFS3_FH_LEN, NULL), NFS3ERR_STALE);
	uint8_t fsid2[16] = {1};
	memcpy(b, f->root[0], NFS3_FH_LEN);
	memcpy(b + 8, fsid2, 8);
	assert_int_equal(getattr(f, b, NFS3_FH_LEN, NULL), NFS3ERR_STALE);
	memcpy(b, f->root[0], NFS3_FH_LEN);
	b[4] ^= 0xff;
	assert_int_equal(getattr(f, b, NFS3_FH_LEN, NULL), NFS3ERR_STALE);
	/* an export that does not list this client */
	assert_int_equal(getattr(f, f->root[2], NFS3_FH_LEN, NULL), NFS3ERR_ACCES);
	/* FSINFO, PATHCONF, FSSTAT */
	FSINFO3args fi = {.fsroot = fh3(f->root[0], NFS3_FH_LEN)};
	FSINFO3res fr;
	assert_int_equal(CALL(f, 19, 0, FSINFO3args, &fi, FSINFO3res, &fr, &rp), 0);
	assert_int_equal(fr.status, NFS3_OK);
	assert_int_equal(fr.FSINFO3res_u.resok.rtmax, NFS3_MAX_IO);
	assert_int_equal(fr.FSINFO3res_u.resok.wtmax, NFS3_MAX_IO);
	assert_int_equal(fr.FSINFO3res_u.resok.dtpref, 65536);
	assert_true(fr.FSINFO3res_u.resok.maxfilesize == FILEVOL_MAX_SIZE);
	assert_int_equal(fr.FSINFO3res_u.resok.time_delta.nseconds, 1);
	assert_int_equal(fr.FSINFO3res_u.resok.properties,
			 FSF3_LINK | FSF3_SYMLINK | FSF3_HOMOGENEOUS | FSF3_CANSETTIME);
	PATHCONF3args pa = {.object = fh3(f->root[0], NFS3_FH_LEN)};
	PATHCONF3res pr;
	assert_int_equal(CALL(f, 20, 0, PATHCONF3args, &pa, PATHCONF3res, &pr, &rp), 0);
	assert_int_equal(pr.PATHCONF3res_u.resok.name_max, 255);
	assert_true(pr.PATHCONF3res_u.resok.no_trunc && pr.PATHCONF3res_u.resok.case_preserving);
	FSSTAT3args sa = {.fsroot = fh3(f->root[0], NFS3_FH_LEN)};
	FSSTAT3res sr;
	assert_int_equal(CALL(f, 18, 0, FSSTAT3args, &sa, FSSTAT3res, &sr, &rp), 0);
	assert_int_equal(sr.status, NFS3_OK);
	assert_true(sr.FSSTAT3res_u.resok.fbytes > 0);
	reply_free(&rp);
}

static nfsstat3 lookup(struct fx *f, uint8_t *dir, const char *name, uint8_t *out, fattr3 *fa)
{
	LOOKUP3args a = {.what = {.dir = fh3(dir, NFS3_FH_LEN), .name = (char *)name}};
	LOOKUP3res r;
	struct reply rp = {0};
	assert_int_equal(CALL(f, 3, 0, LOOKUP3args, &a, LOOKUP3res, &r, &rp), 0);
	if (r.status == NFS3_OK) {
		assert_int_equal(r.LOOKUP3res_u.resok.object.data.data_len, NFS3_FH_LEN);
		if (out)
			memcpy(out, r.LOOKUP3res_u.resok.object.data.data_val, NFS3_FH_LEN);
		if (fa)
			*fa = r.LOOKUP3res_u.resok.obj_attributes.post_op_attr_u.attributes;
	}
	reply_free(&rp);
	return r.status;
}

static nfsstat3 create(struct fx *f, uint32_t uid, uint8_t *dir, const char *name, createmode3 mode,
		       const char *verf, uint8_t *out)
{
	CREATE3args a;
	memset(&a, 0, sizeof(a));
	a.where.dir = fh3(dir, NFS3_FH_LEN);
	a.where.name = (char *)name;
	a.how.mode = mode;
	if (mode == EXCLUSIVE) {
		memcpy(a.how.createhow3_u.verf, verf, 8);
	} else {
		a.how.createhow3_u.obj_attributes.mode.set_it = 1;
		a.how.createhow3_u.obj_attributes.mode.set_mode3_u.mode = 0640;
	}
	CREATE3res r;
	struct reply rp = {0};
	assert_int_equal(CALL(f, 8, uid, CREATE3args, &a, CREATE3res, &r, &rp), 0);
	if (r.status == NFS3_OK && out) {
		assert_true(r.CREATE3res_u.resok.obj.handle_follows);
		memcpy(out, r.CREATE3res_u.resok.obj.post_op_fh3_u.handle.data.data_val,
		       NFS3_FH_LEN);
	}
	reply_free(&rp);
	return r.status;
}

static void test_proto_namespace(void **state)
{
	struct fx *f = *state;
	uint8_t *root = f->root[0], fh[NFS3_FH_LEN], fh2[NFS3_FH_LEN], d[NFS3_FH_LEN];
	struct reply rp = {0};
	fattr3 fa;
	assert_int_equal(create(f, 0, root, "f", GUARDED, NULL, fh), NFS3_OK);
	assert_int_equal(getattr(f, fh, NFS3_FH_LEN, &fa), NFS3_OK);
	assert_int_equal(fa.type, NF3REG);
	assert_int_equal(fa.mode, 0640);
	assert_int_equal(create(f, 0, root, "f", GUARDED, NULL, NULL), NFS3ERR_EXIST);
	assert_int_equal(create(f, 0, root, "f", UNCHECKED, NULL, fh2), NFS3_OK);
	assert_memory_equal(fh, fh2, NFS3_FH_LEN);
	/* EXCLUSIVE: a retry with the same verifier succeeds, another verifier does not */
	assert_int_equal(create(f, 0, root, "x", EXCLUSIVE, "verf0001", fh), NFS3_OK);
	assert_int_equal(create(f, 0, root, "x", EXCLUSIVE, "verf0001", fh2), NFS3_OK);
	assert_memory_equal(fh, fh2, NFS3_FH_LEN);
	assert_int_equal(create(f, 0, root, "x", EXCLUSIVE, "verf0002", NULL), NFS3ERR_EXIST);
	/* names */
	assert_int_equal(lookup(f, root, "nope", NULL, NULL), NFS3ERR_NOENT);
	char longname[300];
	memset(longname, 'a', sizeof(longname) - 1);
	longname[sizeof(longname) - 1] = 0;
	assert_int_equal(lookup(f, root, longname, NULL, NULL), NFS3ERR_NAMETOOLONG);
	assert_int_equal(create(f, 0, root, longname, GUARDED, NULL, NULL), NFS3ERR_NAMETOOLONG);
	assert_int_equal(lookup(f, fh, "a", NULL, NULL), NFS3ERR_NOTDIR);
	/* ".." of the export root stays there */
	assert_int_equal(lookup(f, root, "..", fh2, NULL), NFS3_OK);
	assert_memory_equal(fh2, root, NFS3_FH_LEN);
	/* MKDIR, then ".." of it is the root */
	MKDIR3args ma;
	memset(&ma, 0, sizeof(ma));
	ma.where.dir = fh3(root, NFS3_FH_LEN);
	ma.where.name = "d";
	MKDIR3res mr;
	assert_int_equal(CALL(f, 9, 0, MKDIR3args, &ma, MKDIR3res, &mr, &rp), 0);
	assert_int_equal(mr.status, NFS3_OK);
	memcpy(d, mr.MKDIR3res_u.resok.obj.post_op_fh3_u.handle.data.data_val, NFS3_FH_LEN);
	assert_int_equal(mr.MKDIR3res_u.resok.obj_attributes.post_op_attr_u.attributes.mode, 0755);
	assert_int_equal(CALL(f, 9, 0, MKDIR3args, &ma, MKDIR3res, &mr, &rp), 0);
	assert_int_equal(mr.status, NFS3ERR_EXIST);
	assert_int_equal(lookup(f, d, "..", fh2, NULL), NFS3_OK);
	assert_memory_equal(fh2, root, NFS3_FH_LEN);
	/* SYMLINK + READLINK */
	SYMLINK3args sa;
	memset(&sa, 0, sizeof(sa));
	sa.where.dir = fh3(d, NFS3_FH_LEN);
	sa.where.name = "s";
	sa.symlink.symlink_data = "../target";
	SYMLINK3res sr;
	assert_int_equal(CALL(f, 10, 0, SYMLINK3args, &sa, SYMLINK3res, &sr, &rp), 0);
	assert_int_equal(sr.status, NFS3_OK);
	assert_int_equal(lookup(f, d, "s", fh2, &fa), NFS3_OK);
	assert_int_equal(fa.type, NF3LNK);
	assert_true(fa.size == 9);
	READLINK3args ra = {.symlink = fh3(fh2, NFS3_FH_LEN)};
	READLINK3res rr;
	assert_int_equal(CALL(f, 5, 0, READLINK3args, &ra, READLINK3res, &rr, &rp), 0);
	assert_int_equal(rr.status, NFS3_OK);
	assert_string_equal(rr.READLINK3res_u.resok.data, "../target");
	/* RMDIR of a non-empty directory */
	RMDIR3args rd = {.object = {.dir = fh3(root, NFS3_FH_LEN), .name = "d"}};
	RMDIR3res rdr;
	assert_int_equal(CALL(f, 13, 0, RMDIR3args, &rd, RMDIR3res, &rdr, &rp), 0);
	assert_int_equal(rdr.status, NFS3ERR_NOTEMPTY);
	/* RENAME f -> d/g, LINK d/g -> h: nlink 2 */
	RENAME3args rn = {.from = {.dir = fh3(root, NFS3_FH_LEN), .name = "f"},
			  .to = {.dir = fh3(d, NFS3_FH_LEN), .name = "g"}};
	RENAME3res rnr;
	assert_int_equal(CALL(f, 14, 0, RENAME3args, &rn, RENAME3res, &rnr, &rp), 0);
	assert_int_equal(rnr.status, NFS3_OK);
	assert_int_equal(lookup(f, root, "f", NULL, NULL), NFS3ERR_NOENT);
	assert_int_equal(lookup(f, d, "g", fh, NULL), NFS3_OK);
	LINK3args la = {.file = fh3(fh, NFS3_FH_LEN),
			.link = {.dir = fh3(root, NFS3_FH_LEN), .name = "h"}};
	LINK3res lr;
	assert_int_equal(CALL(f, 15, 0, LINK3args, &la, LINK3res, &lr, &rp), 0);
	assert_int_equal(lr.status, NFS3_OK);
	assert_int_equal(lr.LINK3res_u.resok.file_attributes.post_op_attr_u.attributes.nlink, 2);
	/* SETATTR: guard mismatch, then a chmod */
	SETATTR3args st;
	memset(&st, 0, sizeof(st));
	st.object = fh3(fh, NFS3_FH_LEN);
	st.new_attributes.mode.set_it = 1;
	st.new_attributes.mode.set_mode3_u.mode = 0600;
	st.guard.check = 1;
	st.guard.sattrguard3_u.obj_ctime.seconds = 1;
	SETATTR3res str;
	assert_int_equal(CALL(f, 2, 0, SETATTR3args, &st, SETATTR3res, &str, &rp), 0);
	assert_int_equal(str.status, NFS3ERR_NOT_SYNC);
	st.guard.check = 0;
	assert_int_equal(CALL(f, 2, 0, SETATTR3args, &st, SETATTR3res, &str, &rp), 0);
	assert_int_equal(str.status, NFS3_OK);
	assert_true(str.SETATTR3res_u.resok.obj_wcc.before.attributes_follow);
	assert_int_equal(str.SETATTR3res_u.resok.obj_wcc.after.post_op_attr_u.attributes.mode,
			 0600);
	/* REMOVE both names; the handle goes stale */
	REMOVE3args rm = {.object = {.dir = fh3(root, NFS3_FH_LEN), .name = "h"}};
	REMOVE3res rmr;
	assert_int_equal(CALL(f, 12, 0, REMOVE3args, &rm, REMOVE3res, &rmr, &rp), 0);
	assert_int_equal(rmr.status, NFS3_OK);
	rm.object.dir = fh3(d, NFS3_FH_LEN);
	rm.object.name = "g";
	assert_int_equal(CALL(f, 12, 0, REMOVE3args, &rm, REMOVE3res, &rmr, &rp), 0);
	assert_int_equal(rmr.status, NFS3_OK);
	assert_int_equal(getattr(f, fh, NFS3_FH_LEN, NULL), NFS3ERR_STALE);
	rm.object.name = "s";
	assert_int_equal(CALL(f, 12, 0, REMOVE3args, &rm, REMOVE3res, &rmr, &rp), 0);
	assert_int_equal(CALL(f, 13, 0, RMDIR3args, &rd, RMDIR3res, &rdr, &rp), 0);
	assert_int_equal(rdr.status, NFS3_OK);
	assert_int_equal(CALL(f, 12, 0, REMOVE3args, &rm, REMOVE3res, &rmr, &rp), 0);
	assert_int_equal(rmr.status, NFS3ERR_STALE); /* its directory is gone */
	reply_free(&rp);
}

/* READDIR / READDIRPLUS results parsed by hand: libnfs's decoder builds the entry list in
 * 4-byte-aligned allocations, which UBSan rejects. */
struct dent {
	uint64_t fileid, cookie, attr_fileid;
	char name[64];
	bool attr, fh;
};

struct dres {
	nfsstat3 status;
	uint8_t verf[8];
	bool eof;
	int n;
	struct dent e[512];
};

struct rd {
	const uint8_t *p, *end;
};

static uint32_t rd32(struct rd *r)
{
	assert_true(r->p + 4 <= r->end);
	uint32_t v = get32(r->p);
	r->p += 4;
	return v;
}

static uint64_t rd64(struct rd *r)
{
	uint64_t hi = rd32(r);
	return hi << 32 | rd32(r);
}

static void rdskip(struct rd *r, uint32_t n)
{
	n = (n + 3) & ~3u;
	assert_true(r->p + n <= r->end);
	r->p += n;
}

static void readdir_call(struct fx *f, bool plus, uint64_t cookie, const uint8_t *verf,
			 uint32_t count, struct dres *out)
{
	uint8_t abuf[256];
	ZDR z;
	zdrmem_create(&z, (char *)abuf, sizeof(abuf), ZDR_ENCODE);
	if (plus) {
		READDIRPLUS3args a = {.dir = fh3(f->root[0], NFS3_FH_LEN),
				      .cookie = cookie,
				      .dircount = count / 2,
				      .maxcount = count};
		memcpy(a.cookieverf, verf, 8);
		assert_true(zdr_READDIRPLUS3args(&z, &a));
	} else {
		READDIR3args a = {
		    .dir = fh3(f->root[0], NFS3_FH_LEN), .cookie = cookie, .count = count};
		memcpy(a.cookieverf, verf, 8);
		assert_true(zdr_READDIR3args(&z, &a));
	}
	uint32_t alen = (uint32_t)zdr_getpos(&z);
	zdr_destroy(&z);
	struct reply rp = {0};
	assert_int_equal(call_raw(f, plus ? 17 : 16, 0, 0, abuf, alen, NULL, NULL, 0, &rp), 0);
	struct rd r = {rp.buf + rp.off, rp.buf + rp.off + rp.len};
	memset(out, 0, sizeof(*out));
	out->status = rd32(&r);
	if (rd32(&r))
		rdskip(&r, FATTR3_XDR_LEN);
	if (out->status == NFS3_OK) {
		memcpy(out->verf, r.p, 8);
		rdskip(&r, 8);
		while (rd32(&r)) {
			assert_true(out->n < 512);
			struct dent *e = &out->e[out->n++];
			e->fileid = rd64(&r);
			uint32_t nl = rd32(&r);
			assert_true(nl < sizeof(e->name));
			memcpy(e->name, r.p, nl);
			rdskip(&r, nl);
			e->cookie = rd64(&r);
			if (plus) {
				if ((e->attr = rd32(&r))) {
					struct rd a = r;
					rdskip(&a, 4 * 13); /* type..gid, size, used, rdev, fsid */
					e->attr_fileid = rd64(&a);
					rdskip(&r, FATTR3_XDR_LEN);
				}
				if ((e->fh = rd32(&r)))
					rdskip(&r, rd32(&r));
			}
		}
		out->eof = rd32(&r);
		assert_true(r.p == r.end);
		/* the reply honours the client's size limit */
		assert_true(rp.len <= count);
	}
	reply_free(&rp);
}

static void test_proto_readdir(void **state)
{
	struct fx *f = *state;
	uint8_t *root = f->root[0];
	enum { N = 300 };
	for (int i = 0; i < N; i++) {
		char name[32];
		snprintf(name, sizeof(name), "file%04d", i);
		assert_int_equal(create(f, 0, root, name, GUARDED, NULL, NULL), NFS3_OK);
	}
	struct dres *d = calloc(1, sizeof(*d));
	assert_non_null(d);
	for (int plus = 0; plus < 2; plus++) {
		/* small pages: every name once, "." and ".." first */
		bool seen[N] = {0};
		uint64_t cookie = 0;
		uint8_t verf[8] = {0};
		int pages = 0, total = 0;
		char last[64] = "";
		for (;;) {
			readdir_call(f, plus, cookie, verf, plus ? 2048 : 1024, d);
			assert_int_equal(d->status, NFS3_OK);
			assert_true(d->n > 0 || d->eof);
			pages++;
			for (int i = 0; i < d->n; i++, total++) {
				struct dent *e = &d->e[i];
				if (total == 0)
					assert_string_equal(e->name, ".");
				if (total == 1)
					assert_string_equal(e->name, "..");
				int k;
				if (sscanf(e->name, "file%d", &k) == 1) {
					assert_false(seen[k]);
					seen[k] = true;
				}
				if (plus) {
					assert_true(e->attr && e->fh);
					assert_true(e->attr_fileid == e->fileid);
				}
				cookie = e->cookie;
				snprintf(last, sizeof(last), "%s", e->name);
			}
			memcpy(verf, d->verf, 8);
			if (d->eof)
				break;
			assert_true(pages < 1000);
		}
		assert_true(pages > 5);
		/* ".snapshots" comes last (nfs3_snap.c) */
		assert_int_equal(total, N + 3);
		assert_string_equal(last, ".snapshots");
		for (int i = 0; i < N; i++)
			assert_true(seen[i]);
	}
	/* an old verifier after the directory changed: the listing resumes after its cookie */
	readdir_call(f, false, 0, (const uint8_t *)"\0\0\0\0\0\0\0\0", 4096, d);
	uint8_t oldverf[8];
	memcpy(oldverf, d->verf, 8);
	uint64_t c5 = d->e[5].cookie;
	readdir_call(f, false, c5, oldverf, 4096, d);
	assert_int_equal(d->status, NFS3_OK);
	assert_int_equal(create(f, 0, root, "new", GUARDED, NULL, NULL), NFS3_OK);
	readdir_call(f, false, c5, oldverf, 4096, d);
	assert_int_equal(d->status, NFS3_OK);
	assert_true(d->n > 0);
	assert_true(d->e[0].cookie > c5);
	readdir_call(f, true, c5, oldverf, 4096, d);
	assert_int_equal(d->status, NFS3_OK);
	assert_true(d->e[0].cookie > c5);
	readdir_call(f, false, 0, oldverf, 4096, d); /* a fresh listing: the new verifier */
	assert_int_equal(d->status, NFS3_OK);
	assert_memory_not_equal(d->verf, oldverf, 8);
	readdir_call(f, false, 0, oldverf, 60, d); /* not even one entry fits */
	assert_int_equal(d->status, NFS3ERR_TOOSMALL);
	free(d);
}

static void test_proto_refusals(void **state)
{
	struct fx *f = *state;
	struct reply rp = {0};
	/* ro export: changes are ROFS, ACCESS drops MODIFY/EXTEND/DELETE */
	assert_int_equal(create(f, 0, f->root[1], "f", GUARDED, NULL, NULL), NFS3ERR_ROFS);
	ACCESS3args aa = {.object = fh3(f->root[1], NFS3_FH_LEN), .access = 0x3f};
	ACCESS3res ar;
	assert_int_equal(CALL(f, 4, 0, ACCESS3args, &aa, ACCESS3res, &ar, &rp), 0);
	assert_int_equal(ar.status, NFS3_OK);
	assert_int_equal(ar.ACCESS3res_u.resok.access, ACCESS3_READ | ACCESS3_LOOKUP);
	/* rw export, root: everything on the directory */
	aa.object = fh3(f->root[0], NFS3_FH_LEN);
	assert_int_equal(CALL(f, 4, 0, ACCESS3args, &aa, ACCESS3res, &ar, &rp), 0);
	assert_int_equal(ar.ACCESS3res_u.resok.access, ACCESS3_READ | ACCESS3_LOOKUP |
							   ACCESS3_MODIFY | ACCESS3_EXTEND |
							   ACCESS3_DELETE);
	/* uid 1000 in a 0755 root-owned directory: read and search only, create refused */
	assert_int_equal(CALL(f, 4, 1000, ACCESS3args, &aa, ACCESS3res, &ar, &rp), 0);
	assert_int_equal(ar.ACCESS3res_u.resok.access, ACCESS3_READ | ACCESS3_LOOKUP);
	assert_int_equal(create(f, 1000, f->root[0], "u", GUARDED, NULL, NULL), NFS3ERR_ACCES);
	/* a file of root's, mode 0640: uid 1000 cannot write or chmod it */
	uint8_t fh[NFS3_FH_LEN];
	assert_int_equal(create(f, 0, f->root[0], "rootfile", GUARDED, NULL, fh), NFS3_OK);
	WRITE3args wa;
	memset(&wa, 0, sizeof(wa));
	wa.file = fh3(fh, NFS3_FH_LEN);
	WRITE3res wr;
	assert_int_equal(CALL(f, 7, 1000, WRITE3args, &wa, WRITE3res, &wr, &rp), 0);
	assert_int_equal(wr.status, NFS3ERR_ACCES);
	SETATTR3args st;
	memset(&st, 0, sizeof(st));
	st.object = fh3(fh, NFS3_FH_LEN);
	st.new_attributes.mode.set_it = 1;
	st.new_attributes.mode.set_mode3_u.mode = 0777;
	SETATTR3res str;
	assert_int_equal(CALL(f, 2, 1000, SETATTR3args, &st, SETATTR3res, &str, &rp), 0);
	assert_int_equal(str.status, NFS3ERR_PERM);
	/* a zero-length write by root: the verifier, and READ of the empty file is eof */
	assert_int_equal(CALL(f, 7, 0, WRITE3args, &wa, WRITE3res, &wr, &rp), 0);
	assert_int_equal(wr.status, NFS3_OK);
	assert_int_equal(wr.WRITE3res_u.resok.count, 0);
	wa.count = 10; /* data shorter than count */
	assert_int_equal(CALL(f, 7, 0, WRITE3args, &wa, WRITE3res, &wr, &rp), 0);
	assert_int_equal(wr.status, NFS3ERR_INVAL);
	READ3args ra = {.file = fh3(fh, NFS3_FH_LEN), .offset = 0, .count = 4096};
	READ3res rr;
	assert_int_equal(CALL(f, 6, 0, READ3args, &ra, READ3res, &rr, &rp), 0);
	assert_int_equal(rr.status, NFS3_OK);
	assert_int_equal(rr.READ3res_u.resok.count, 0);
	assert_true(rr.READ3res_u.resok.eof);
	ra.file = fh3(f->root[0], NFS3_FH_LEN);
	assert_int_equal(CALL(f, 6, 0, READ3args, &ra, READ3res, &rr, &rp), 0);
	assert_int_equal(rr.status, NFS3ERR_ISDIR);
	/* two handles from different exports */
	RENAME3args rn = {.from = {.dir = fh3(f->root[0], NFS3_FH_LEN), .name = "rootfile"},
			  .to = {.dir = fh3(f->root[1], NFS3_FH_LEN), .name = "x"}};
	RENAME3res rnr;
	assert_int_equal(CALL(f, 14, 0, RENAME3args, &rn, RENAME3res, &rnr, &rp), 0);
	assert_int_equal(rnr.status, NFS3ERR_XDEV);
	reply_free(&rp);
}

/* ---- nfs3_hold / nfs3_release / nfs3_inflight ---- */

struct holdctl {
	struct fx *f;
	int fired;	/* hold callbacks run */
	int fired_sync; /* of those, before nfs3_hold returned */
	uint32_t inflight;
	int rc;
};

static void hold_cb(void *arg, int res)
{
	struct holdctl *h = arg;
	assert_int_equal(res, 0);
	__atomic_add_fetch(&h->fired, 1, __ATOMIC_ACQ_REL);
}

static void hold_take(void *arg)
{
	struct holdctl *h = arg;
	int before = h->fired;
	h->rc = nfs3_hold(h->f->n, hold_cb, h);
	h->fired_sync = h->fired - before;
	h->inflight = nfs3_inflight(h->f->n);
}

static void hold_count(void *arg)
{
	struct holdctl *h = arg;
	h->inflight = nfs3_inflight(h->f->n);
}

static void hold_release(void *arg)
{
	struct holdctl *h = arg;
	nfs3_release(h->f->n);
	h->inflight = nfs3_inflight(h->f->n);
}

/* Release, then hold again at once: the released MKDIR is now running (waiting for its meta
 * record), so the new hold's callback must wait for it. */
static void hold_release_retake(void *arg)
{
	struct holdctl *h = arg;
	nfs3_release(h->f->n);
	hold_take(h);
}

static uint32_t send_mkdir(struct fx *f, uint8_t *dir, const char *name)
{
	MKDIR3args ma;
	memset(&ma, 0, sizeof(ma));
	ma.where.dir = fh3(dir, NFS3_FH_LEN);
	ma.where.name = (char *)name;
	uint8_t abuf[256];
	ZDR z;
	zdrmem_create(&z, (char *)abuf, sizeof(abuf), ZDR_ENCODE);
	assert_true(zdr_MKDIR3args(&z, &ma));
	uint32_t alen = (uint32_t)zdr_getpos(&z);
	zdr_destroy(&z);
	return send_raw(f, 9, 0, 0, abuf, alen);
}

static bool sock_readable(struct fx *f, int ms)
{
	struct pollfd pfd = {.fd = f->sock, .events = POLLIN};
	return poll(&pfd, 1, ms) == 1;
}

static void test_proto_hold(void **state)
{
	struct fx *f = *state;
	uint8_t *root = f->root[0];
	struct holdctl h = {.f = f};
	struct reply rp = {0};
	MKDIR3res mr;
	/* nothing changing runs: the hold is granted at once */
	assert_int_equal(loop_call(f->l, hold_take, &h), 0);
	assert_int_equal(h.rc, 0);
	assert_int_equal(h.fired_sync, 1);
	assert_int_equal(h.inflight, 0);
	/* a MKDIR waits; reads are answered meanwhile (their reply comes first) */
	uint32_t x1 = send_mkdir(f, root, "held1");
	assert_int_equal(getattr(f, root, NFS3_FH_LEN, NULL), NFS3_OK);
	assert_int_equal(lookup(f, root, "held1", NULL, NULL), NFS3ERR_NOENT);
	/* nested: a second hold, one release, still held */
	assert_int_equal(loop_call(f->l, hold_take, &h), 0);
	assert_int_equal(h.fired_sync, 1);
	assert_int_equal(h.inflight, 1); /* the held MKDIR counts */
	assert_int_equal(loop_call(f->l, hold_release, &h), 0);
	assert_false(sock_readable(f, 200));
	assert_int_equal(lookup(f, root, "held1", NULL, NULL), NFS3ERR_NOENT);
	/* the last release runs it */
	assert_int_equal(loop_call(f->l, hold_release, &h), 0);
	assert_int_equal(recv_raw(f, x1, NFS3_ZDR(zdr_MKDIR3res), &mr, sizeof(mr), &rp), 0);
	assert_int_equal(mr.status, NFS3_OK);
	assert_int_equal(lookup(f, root, "held1", NULL, NULL), NFS3_OK);
	/* held calls run in arrival order at release; a hold taken while a change still runs
	 * (the first MKDIR waits for its meta record) waits for its end */
	assert_int_equal(loop_call(f->l, hold_take, &h), 0);
	uint32_t x2 = send_mkdir(f, root, "held2");
	uint32_t x3 = send_mkdir(f, root, "held2"); /* the same name again: EXIST at once */
	assert_int_equal(getattr(f, root, NFS3_FH_LEN, NULL), NFS3_OK);
	int before = h.fired;
	assert_int_equal(loop_call(f->l, hold_release_retake, &h), 0);
	assert_int_equal(h.rc, 0);
	assert_int_equal(h.fired_sync, 0);
	assert_int_equal(h.inflight, 1); /* the first, still running */
	assert_int_equal(recv_raw(f, x3, NFS3_ZDR(zdr_MKDIR3res), &mr, sizeof(mr), &rp), 0);
	assert_int_equal(mr.status, NFS3ERR_EXIST);
	assert_int_equal(recv_raw(f, x2, NFS3_ZDR(zdr_MKDIR3res), &mr, sizeof(mr), &rp), 0);
	assert_int_equal(mr.status, NFS3_OK);
	for (int i = 0; i < 2000 && __atomic_load_n(&h.fired, __ATOMIC_ACQUIRE) == before; i++)
		usleep(1000);
	assert_int_equal(__atomic_load_n(&h.fired, __ATOMIC_ACQUIRE), before + 1);
	/* under that hold a new change waits */
	uint32_t x4 = send_mkdir(f, root, "held4");
	assert_false(sock_readable(f, 100));
	assert_int_equal(loop_call(f->l, hold_release, &h), 0);
	assert_int_equal(recv_raw(f, x4, NFS3_ZDR(zdr_MKDIR3res), &mr, sizeof(mr), &rp), 0);
	assert_int_equal(mr.status, NFS3_OK);
	assert_int_equal(loop_call(f->l, hold_count, &h), 0);
	assert_int_equal(h.inflight, 0);
	/* a hold left taken at teardown: the held call is dropped, nothing leaks */
	assert_int_equal(loop_call(f->l, hold_take, &h), 0);
	send_mkdir(f, root, "held3");
	assert_int_equal(getattr(f, root, NFS3_FH_LEN, NULL), NFS3_OK);
	reply_free(&rp);
}

static nfsstat3 write3(struct fx *f, uint8_t *fh, uint64_t off, uint32_t len, int pat,
		       stable_how how, WRITE3resok *ok)
{
	char *buf = malloc(len ? len : 1);
	assert_non_null(buf);
	memset(buf, pat, len);
	WRITE3args a = {.file = fh3(fh, NFS3_FH_LEN), .offset = off, .count = len, .stable = how};
	a.data.data_len = len;
	a.data.data_val = buf;
	WRITE3res r;
	struct reply rp = {0};
	assert_int_equal(CALL(f, 7, 0, WRITE3args, &a, WRITE3res, &r, &rp), 0);
	if (r.status == NFS3_OK && ok)
		*ok = r.WRITE3res_u.resok;
	reply_free(&rp);
	free(buf);
	return r.status;
}

/* READ: checks the bytes are pat; returns the count and eof through the pointers. */
static nfsstat3 read3(struct fx *f, uint8_t *fh, uint64_t off, uint32_t len, int pat,
		      uint32_t *count, bool *eof)
{
	READ3args a = {.file = fh3(fh, NFS3_FH_LEN), .offset = off, .count = len};
	READ3res r;
	struct reply rp = {0};
	assert_int_equal(CALL(f, 6, 0, READ3args, &a, READ3res, &r, &rp), 0);
	if (r.status == NFS3_OK) {
		READ3resok *ok = &r.READ3res_u.resok;
		assert_int_equal(ok->data.data_len, ok->count);
		for (uint32_t i = 0; i < ok->count; i++)
			if ((uint8_t)ok->data.data_val[i] != (uint8_t)pat)
				fail_msg("byte %u at %llu is %#x, want %#x", i,
					 (unsigned long long)off, (uint8_t)ok->data.data_val[i],
					 pat);
		*count = ok->count;
		*eof = ok->eof;
	}
	reply_free(&rp);
	return r.status;
}

static nfsstat3 setsize(struct fx *f, uint8_t *fh, uint64_t size)
{
	SETATTR3args a;
	memset(&a, 0, sizeof(a));
	a.object = fh3(fh, NFS3_FH_LEN);
	a.new_attributes.size.set_it = 1;
	a.new_attributes.size.set_size3_u.size = size;
	SETATTR3res r;
	struct reply rp = {0};
	assert_int_equal(CALL(f, 2, 0, SETATTR3args, &a, SETATTR3res, &r, &rp), 0);
	reply_free(&rp);
	return r.status;
}

/* ---- snapshots through the export (nfs3_snap.c) ---- */

struct snapctl {
	struct fx *f;
	uint64_t fileid;
	const char *name;
	char vol[64], volsnap[64];
	uint32_t idx;
	uint64_t freed[8];
	uint32_t nfreed;
};

static void snap_meta_create(void *arg)
{
	struct snapctl *c = arg;
	int rc = meta_snapshot_create(c->f->meta, c->fileid, c->name, &c->idx, fx_cb, c->f);
	if (rc)
		fx_cb(c->f, rc);
}

static void snap_meta_delete(void *arg)
{
	struct snapctl *c = arg;
	int rc = meta_snapshot_delete(c->f->meta, c->name, c->freed, 8, &c->nfreed, fx_cb, c->f);
	if (rc)
		fx_cb(c->f, rc);
}

static void snap_vol_create(void *arg)
{
	struct snapctl *c = arg;
	meta_volume_name(c->f->meta, c->fileid, c->vol, sizeof(c->vol));
	meta_snap_volsnap(c->name, c->volsnap, sizeof(c->volsnap));
	int rc = filevol_snapshot_create(c->f->fv, c->vol, c->volsnap, fx_cb, c->f);
	if (rc)
		fx_cb(c->f, rc);
}

static uint64_t fh_fileid(const uint8_t *fh)
{
	uint32_t eid;
	uint64_t fsid8, id, gen;
	assert_int_equal(nfs3_fh_decode(fh, NFS3_FH_LEN, &eid, &fsid8, &id, &gen), 0);
	return id;
}

/* The snapshot of the object behind fh, as the gateway takes it (volumes first, while nothing
 * writes in this test). */
static int take_snapshot(struct fx *f, const uint8_t *fh, const char *name, uint64_t file)
{
	struct snapctl c = {.f = f, .fileid = file, .name = name};
	if (file) {
		assert_int_equal(loop_post(f->l, snap_vol_create, &c), 0);
		fx_wait(f);
		if (f->res)
			return f->res;
	}
	c.fileid = fh_fileid(fh);
	assert_int_equal(loop_post(f->l, snap_meta_create, &c), 0);
	fx_wait(f);
	return f->res;
}

static int drop_snapshot(struct fx *f, const char *name)
{
	struct snapctl c = {.f = f, .name = name};
	assert_int_equal(loop_post(f->l, snap_meta_delete, &c), 0);
	fx_wait(f);
	return f->res;
}

static nfsstat3 mkdir3(struct fx *f, uint8_t *dir, const char *name, uint8_t *out)
{
	MKDIR3args ma;
	memset(&ma, 0, sizeof(ma));
	ma.where.dir = fh3(dir, NFS3_FH_LEN);
	ma.where.name = (char *)name;
	MKDIR3res mr;
	struct reply rp = {0};
	assert_int_equal(CALL(f, 9, 0, MKDIR3args, &ma, MKDIR3res, &mr, &rp), 0);
	if (mr.status == NFS3_OK && out)
		memcpy(out, mr.MKDIR3res_u.resok.obj.post_op_fh3_u.handle.data.data_val,
		       NFS3_FH_LEN);
	reply_free(&rp);
	return mr.status;
}

static nfsstat3 remove3(struct fx *f, uint8_t *dir, const char *name, bool rmdir)
{
	REMOVE3args rm = {.object = {.dir = fh3(dir, NFS3_FH_LEN), .name = (char *)name}};
	REMOVE3res rmr;
	struct reply rp = {0};
	assert_int_equal(call(f, rmdir ? 13 : 12, 0, NFS3_ZDR(zdr_REMOVE3args), &rm,
			      NFS3_ZDR(zdr_REMOVE3res), &rmr, sizeof(rmr), &rp),
			 0);
	reply_free(&rp);
	return rmr.status;
}

static void readdir_dir(struct fx *f, uint8_t *dir, bool plus, struct dres *out)
{
	uint8_t save[NFS3_FH_LEN];
	memcpy(save, f->root[0], NFS3_FH_LEN);
	memcpy(f->root[0], dir, NFS3_FH_LEN); /* readdir_call lists root[0] */
	readdir_call(f, plus, 0, (const uint8_t *)"\0\0\0\0\0\0\0\0", 8192, out);
	memcpy(f->root[0], save, NFS3_FH_LEN);
}

static bool dres_has(const struct dres *d, const char *name)
{
	for (int i = 0; i < d->n; i++)
		if (!strcmp(d->e[i].name, name))
			return true;
	return false;
}

struct pathq {
	struct fx *f;
	const char *exp, *path;
	uint64_t id, gen;
	enum meta_type type;
	int rc;
};

static void pathq_run(void *arg)
{
	struct pathq *q = arg;
	q->rc = nfs3_path_resolve(q->f->meta, q->exp, q->path, &q->id, &q->gen, &q->type);
}

/* nfs3_path_resolve (MNT) of path under /exp; the handle it would make must be fh's. */
static int path_resolve(struct fx *f, const char *path, const uint8_t *fh)
{
	struct pathq q = {.f = f, .exp = "/exp", .path = path};
	assert_int_equal(loop_call(f->l, pathq_run, &q), 0);
	if (q.rc == 0 && fh) {
		uint8_t b[NFS3_FH_LEN];
		nfs3_fh_encode(b, exports_find_path(&f->ex, "/exp")->id, f->fsid, q.id, q.gen);
		assert_memory_equal(b, fh, NFS3_FH_LEN);
	}
	return q.rc;
}

static void test_proto_snapshots(void **state)
{
	struct fx *f = *state;
	uint8_t *root = f->root[0];
	uint8_t d[NFS3_FH_LEN], file[NFS3_FH_LEN], snaps[NFS3_FH_LEN], s1[NFS3_FH_LEN],
	    sd[NFS3_FH_LEN], sf[NFS3_FH_LEN], x[NFS3_FH_LEN];
	fattr3 fa;
	struct reply rp = {0};
	struct dres *dr = calloc(1, sizeof(*dr));
	assert_non_null(dr);
	/* /exp/d/{f, s -> target, sub/} */
	assert_int_equal(mkdir3(f, root, "d", d), NFS3_OK);
	assert_int_equal(create(f, 0, d, "f", GUARDED, NULL, file), NFS3_OK);
	assert_int_equal(mkdir3(f, d, "sub", NULL), NFS3_OK);
	SYMLINK3args sa;
	memset(&sa, 0, sizeof(sa));
	sa.where.dir = fh3(d, NFS3_FH_LEN);
	sa.where.name = "s";
	sa.symlink.symlink_data = "target";
	SYMLINK3res sr;
	assert_int_equal(CALL(f, 10, 0, SYMLINK3args, &sa, SYMLINK3res, &sr, &rp), 0);
	assert_int_equal(sr.status, NFS3_OK);
	/* .snapshots exists, empty, before any snapshot */
	assert_int_equal(lookup(f, root, ".snapshots", snaps, &fa), NFS3_OK);
	assert_int_equal(fa.type, NF3DIR);
	assert_int_equal(fa.mode, 0555);
	readdir_dir(f, snaps, false, dr);
	assert_int_equal(dr->status, NFS3_OK);
	assert_int_equal(dr->n, 2);
	assert_int_equal(take_snapshot(f, d, "snap1", 0), 0);
	/* the live tree changes afterwards */
	assert_int_equal(remove3(f, d, "f", false), NFS3_OK);
	assert_int_equal(create(f, 0, d, "new", GUARDED, NULL, NULL), NFS3_OK);
	for (int plus = 0; plus < 2; plus++) {
		readdir_dir(f, snaps, plus, dr);
		assert_int_equal(dr->status, NFS3_OK);
		assert_int_equal(dr->n, 3);
		assert_string_equal(dr->e[2].name, "snap1");
		if (plus)
			assert_true(dr->e[2].attr && dr->e[2].fh &&
				    dr->e[2].attr_fileid == dr->e[2].fileid);
	}
	assert_int_equal(lookup(f, snaps, "nope", NULL, NULL), NFS3ERR_NOENT);
	assert_int_equal(lookup(f, snaps, "snap1", s1, &fa), NFS3_OK);
	assert_int_equal(fa.type, NF3DIR);
	assert_int_equal(lookup(f, s1, "d", sd, &fa), NFS3_OK);
	assert_int_equal(fa.type, NF3DIR);
	/* the frozen d: f (removed live since), s, sub; not "new" */
	readdir_dir(f, sd, true, dr);
	assert_int_equal(dr->status, NFS3_OK);
	assert_true(dres_has(dr, "f") && dres_has(dr, "s") && dres_has(dr, "sub"));
	assert_false(dres_has(dr, "new"));
	assert_int_equal(lookup(f, sd, "f", sf, &fa), NFS3_OK);
	assert_int_equal(fa.type, NF3REG);
	assert_int_equal(getattr(f, sf, NFS3_FH_LEN, &fa), NFS3_OK);
	assert_int_equal(lookup(f, sd, "s", x, NULL), NFS3_OK);
	READLINK3args ra = {.symlink = fh3(x, NFS3_FH_LEN)};
	READLINK3res rr;
	assert_int_equal(CALL(f, 5, 0, READLINK3args, &ra, READLINK3res, &rr, &rp), 0);
	assert_int_equal(rr.status, NFS3_OK);
	assert_string_equal(rr.READLINK3res_u.resok.data, "target");
	/* an empty frozen file reads as nothing */
	uint32_t count;
	bool eof;
	assert_int_equal(read3(f, sf, 0, 4096, 0, &count, &eof), NFS3_OK);
	assert_true(count == 0 && eof);
	/* ".." climbs: d -> snap1 -> .snapshots -> the export root */
	assert_int_equal(lookup(f, sd, "..", x, NULL), NFS3_OK);
	assert_memory_equal(x, s1, NFS3_FH_LEN);
	assert_int_equal(lookup(f, s1, "..", x, NULL), NFS3_OK);
	assert_memory_equal(x, snaps, NFS3_FH_LEN);
	assert_int_equal(lookup(f, snaps, "..", x, NULL), NFS3_OK);
	assert_memory_equal(x, root, NFS3_FH_LEN);
	/* read-only everywhere in it */
	ACCESS3args aa = {.object = fh3(sd, NFS3_FH_LEN), .access = 0x3f};
	ACCESS3res ar;
	assert_int_equal(CALL(f, 4, 0, ACCESS3args, &aa, ACCESS3res, &ar, &rp), 0);
	assert_int_equal(ar.status, NFS3_OK);
	assert_int_equal(ar.ACCESS3res_u.resok.access, ACCESS3_READ | ACCESS3_LOOKUP);
	aa.object = fh3(snaps, NFS3_FH_LEN);
	assert_int_equal(CALL(f, 4, 0, ACCESS3args, &aa, ACCESS3res, &ar, &rp), 0);
	assert_int_equal(ar.ACCESS3res_u.resok.access, ACCESS3_READ | ACCESS3_LOOKUP);
	assert_int_equal(create(f, 0, sd, "c", GUARDED, NULL, NULL), NFS3ERR_ROFS);
	assert_int_equal(create(f, 0, snaps, "c", GUARDED, NULL, NULL), NFS3ERR_ROFS);
	assert_int_equal(create(f, 0, s1, "c", GUARDED, NULL, NULL), NFS3ERR_ROFS);
	assert_int_equal(mkdir3(f, snaps, "m", NULL), NFS3ERR_ROFS);
	assert_int_equal(remove3(f, sd, "f", false), NFS3ERR_ROFS);
	assert_int_equal(remove3(f, sd, "sub", true), NFS3ERR_ROFS);
	assert_int_equal(remove3(f, snaps, "snap1", true), NFS3ERR_ROFS);
	assert_int_equal(setsize(f, sf, 0), NFS3ERR_ROFS);
	assert_int_equal(write3(f, sf, 0, 10, 1, UNSTABLE, NULL), NFS3ERR_ROFS);
	RENAME3args rn = {.from = {.dir = fh3(d, NFS3_FH_LEN), .name = "new"},
			  .to = {.dir = fh3(sd, NFS3_FH_LEN), .name = "new"}};
	RENAME3res rnr;
	assert_int_equal(CALL(f, 14, 0, RENAME3args, &rn, RENAME3res, &rnr, &rp), 0);
	assert_int_equal(rnr.status, NFS3ERR_ROFS);
	LINK3args la = {.file = fh3(sf, NFS3_FH_LEN),
			.link = {.dir = fh3(root, NFS3_FH_LEN), .name = "l"}};
	LINK3res lr;
	assert_int_equal(CALL(f, 15, 0, LINK3args, &la, LINK3res, &lr, &rp), 0);
	assert_int_equal(lr.status, NFS3ERR_ROFS);
	/* the name .snapshots in the export root is taken (elsewhere it is an ordinary name) */
	assert_int_equal(create(f, 0, root, ".snapshots", GUARDED, NULL, NULL), NFS3ERR_EXIST);
	assert_int_equal(create(f, 0, root, ".snapshots", UNCHECKED, NULL, NULL), NFS3ERR_EXIST);
	assert_int_equal(mkdir3(f, root, ".snapshots", NULL), NFS3ERR_EXIST);
	assert_int_equal(remove3(f, root, ".snapshots", true), NFS3ERR_ACCES);
	rn = (RENAME3args){.from = {.dir = fh3(d, NFS3_FH_LEN), .name = "new"},
			   .to = {.dir = fh3(root, NFS3_FH_LEN), .name = ".snapshots"}};
	assert_int_equal(CALL(f, 14, 0, RENAME3args, &rn, RENAME3res, &rnr, &rp), 0);
	assert_int_equal(rnr.status, NFS3ERR_ACCES);
	assert_int_equal(mkdir3(f, d, ".snapshots", NULL), NFS3_OK);
	/* FSINFO, FSSTAT, PATHCONF answer on the virtual directories */
	FSINFO3args fi = {.fsroot = fh3(snaps, NFS3_FH_LEN)};
	FSINFO3res fr;
	assert_int_equal(CALL(f, 19, 0, FSINFO3args, &fi, FSINFO3res, &fr, &rp), 0);
	assert_int_equal(fr.status, NFS3_OK);
	FSSTAT3args fs = {.fsroot = fh3(s1, NFS3_FH_LEN)};
	FSSTAT3res fsr;
	assert_int_equal(CALL(f, 18, 0, FSSTAT3args, &fs, FSSTAT3res, &fsr, &rp), 0);
	assert_int_equal(fsr.status, NFS3_OK);
	PATHCONF3args pa = {.object = fh3(sd, NFS3_FH_LEN)};
	PATHCONF3res pr;
	assert_int_equal(CALL(f, 20, 0, PATHCONF3args, &pa, PATHCONF3res, &pr, &rp), 0);
	assert_int_equal(pr.status, NFS3_OK);
	/* MNT of paths into the tree */
	assert_int_equal(path_resolve(f, "/exp/.snapshots", snaps), 0);
	assert_int_equal(path_resolve(f, "/exp/.snapshots/snap1", s1), 0);
	assert_int_equal(path_resolve(f, "/exp/.snapshots/snap1/d", sd), 0);
	assert_int_equal(path_resolve(f, "/exp/.snapshots/snap1/d/f", sf), 0);
	assert_int_equal(path_resolve(f, "/exp/.snapshots/nope", NULL), -ENOENT);
	assert_int_equal(path_resolve(f, "/exp/d/.snapshots/snap1", NULL), -ENOENT);
	assert_int_equal(path_resolve(f, "/expx", NULL), -ENOENT);
	/* another export's .snapshots does not show snap1; its handle is not ours */
	assert_int_equal(lookup(f, f->root[1], ".snapshots", x, NULL), NFS3_OK);
	readdir_dir(f, x, false, dr);
	assert_int_equal(dr->status, NFS3_OK);
	assert_int_equal(dr->n, 2);
	assert_int_equal(lookup(f, x, "snap1", NULL, NULL), NFS3ERR_NOENT);
	/* a snapshot of the export root itself is listed too */
	assert_int_equal(take_snapshot(f, root, "whole", 0), 0);
	readdir_dir(f, snaps, false, dr);
	assert_int_equal(dr->n, 4);
	assert_true(dres_has(dr, "whole") && dres_has(dr, "snap1"));
	assert_int_equal(lookup(f, snaps, "whole", x, NULL), NFS3_OK);
	assert_int_equal(lookup(f, x, "exp", x, NULL), NFS3_OK);
	assert_int_equal(lookup(f, x, "d", NULL, NULL), NFS3_OK);
	/* a deleted snapshot's handles go stale */
	assert_int_equal(drop_snapshot(f, "snap1"), 0);
	assert_int_equal(getattr(f, s1, NFS3_FH_LEN, NULL), NFS3ERR_STALE);
	assert_int_equal(getattr(f, sd, NFS3_FH_LEN, NULL), NFS3ERR_STALE);
	assert_int_equal(lookup(f, snaps, "snap1", NULL, NULL), NFS3ERR_NOENT);
	assert_int_equal(getattr(f, snaps, NFS3_FH_LEN, NULL), NFS3_OK);
	reply_free(&rp);
	free(dr);
}

/* Snapshot data on a real cluster: the frozen bytes after the live file is overwritten. */
static void test_proto_snapshot_data(void **state)
{
	struct fx *f = *state;
	uint8_t fh[NFS3_FH_LEN], snaps[NFS3_FH_LEN], x[NFS3_FH_LEN];
	uint32_t count;
	bool eof;
	fattr3 fa;
	assert_int_equal(create(f, 0, f->root[0], "img", GUARDED, NULL, fh), NFS3_OK);
	assert_int_equal(write3(f, fh, 0, NFS3_MAX_IO, 0x11, UNSTABLE, NULL), NFS3_OK);
	assert_int_equal(write3(f, fh, NFS3_MAX_IO, 4096, 0x22, UNSTABLE, NULL), NFS3_OK);
	assert_int_equal(take_snapshot(f, fh, "s1", fh_fileid(fh)), 0);
	assert_int_equal(write3(f, fh, 0, NFS3_MAX_IO, 0x33, FILE_SYNC, NULL), NFS3_OK);
	assert_int_equal(write3(f, fh, 3 * NFS3_MAX_IO, 4096, 0x44, UNSTABLE, NULL), NFS3_OK);
	assert_int_equal(lookup(f, f->root[0], ".snapshots", snaps, NULL), NFS3_OK);
	assert_int_equal(lookup(f, snaps, "s1", x, NULL), NFS3_OK);
	assert_int_equal(lookup(f, x, "img", x, &fa), NFS3_OK);
	assert_true(fa.size == NFS3_MAX_IO + 4096);
	assert_int_equal(read3(f, x, 0, NFS3_MAX_IO, 0x11, &count, &eof), NFS3_OK);
	assert_true(count == NFS3_MAX_IO && !eof);
	assert_int_equal(read3(f, x, NFS3_MAX_IO, NFS3_MAX_IO, 0x22, &count, &eof), NFS3_OK);
	assert_true(count == 4096 && eof);
	assert_int_equal(read3(f, x, 3 * NFS3_MAX_IO, 4096, 0, &count, &eof), NFS3_OK);
	assert_true(count == 0 && eof);
	assert_int_equal(read3(f, fh, 0, 4096, 0x33, &count, &eof), NFS3_OK);
	/* the live file removed: the snapshot still reads (its volume stays) */
	assert_int_equal(remove3(f, f->root[0], "img", false), NFS3_OK);
	assert_int_equal(read3(f, x, 0, 65536, 0x11, &count, &eof), NFS3_OK);
	assert_true(count == 65536);
}

static void test_proto_data(void **state)
{
	struct fx *f = *state;
	uint8_t fh[NFS3_FH_LEN];
	uint32_t count;
	bool eof;
	fattr3 fa;
	assert_int_equal(create(f, 0, f->root[0], "disk", GUARDED, NULL, fh), NFS3_OK);
	/* a never-written file reads as nothing, then UNSTABLE and FILE_SYNC writes */
	assert_int_equal(read3(f, fh, 0, 4096, 0, &count, &eof), NFS3_OK);
	assert_true(count == 0 && eof);
	WRITE3resok w1, w2;
	assert_int_equal(write3(f, fh, 0, NFS3_MAX_IO, 0x5a, UNSTABLE, &w1), NFS3_OK);
	assert_int_equal(w1.count, NFS3_MAX_IO);
	assert_int_equal(w1.committed, UNSTABLE);
	assert_true(w1.file_wcc.before.attributes_follow && w1.file_wcc.after.attributes_follow);
	assert_true(w1.file_wcc.before.pre_op_attr_u.attributes.size == 0);
	assert_true(w1.file_wcc.after.post_op_attr_u.attributes.size == NFS3_MAX_IO);
	const uint64_t far = 5ull << 30; /* above 4 GiB */
	assert_int_equal(write3(f, fh, far, 4096, 0x77, FILE_SYNC, &w2), NFS3_OK);
	assert_int_equal(w2.committed, FILE_SYNC);
	assert_memory_equal(w1.verf, w2.verf, 8);
	assert_int_equal(getattr(f, fh, NFS3_FH_LEN, &fa), NFS3_OK);
	assert_true(fa.size == far + 4096);
	/* reads: the data, zeros in the hole, eof at the end, nothing past it */
	assert_int_equal(read3(f, fh, 0, NFS3_MAX_IO, 0x5a, &count, &eof), NFS3_OK);
	assert_true(count == NFS3_MAX_IO && !eof);
	assert_int_equal(read3(f, fh, 3ull << 30, 65536, 0, &count, &eof), NFS3_OK);
	assert_true(count == 65536 && !eof);
	assert_int_equal(read3(f, fh, far, 2 * NFS3_MAX_IO, 0x77, &count, &eof), NFS3_OK);
	assert_true(count == 4096 && eof);
	assert_int_equal(read3(f, fh, far + 4096, 100, 0, &count, &eof), NFS3_OK);
	assert_true(count == 0 && eof);
	/* COMMIT answers the same verifier */
	COMMIT3args ca = {.file = fh3(fh, NFS3_FH_LEN)};
	COMMIT3res cr;
	struct reply rp = {0};
	assert_int_equal(CALL(f, 21, 0, COMMIT3args, &ca, COMMIT3res, &cr, &rp), 0);
	assert_int_equal(cr.status, NFS3_OK);
	assert_memory_equal(cr.COMMIT3res_u.resok.verf, w1.verf, 8);
	reply_free(&rp);
	/* truncate to 1000 then grow: the old bytes past 1000 read back as zeros */
	assert_int_equal(setsize(f, fh, 1000), NFS3_OK);
	assert_int_equal(read3(f, fh, 0, 1000, 0x5a, &count, &eof), NFS3_OK);
	assert_true(count == 1000 && eof);
	assert_int_equal(setsize(f, fh, 2 * NFS3_MAX_IO), NFS3_OK);
	assert_int_equal(read3(f, fh, 1000, NFS3_MAX_IO, 0, &count, &eof), NFS3_OK);
	assert_true(count == NFS3_MAX_IO);
	assert_int_equal(read3(f, fh, 0, 1000, 0x5a, &count, &eof), NFS3_OK);
	/* a write past the largest file size */
	assert_int_equal(write3(f, fh, FILEVOL_MAX_SIZE - 10, 4096, 1, UNSTABLE, NULL),
			 NFS3ERR_FBIG);
	/* removing the last name: the handle is stale */
	REMOVE3args rm = {.object = {.dir = fh3(f->root[0], NFS3_FH_LEN), .name = "disk"}};
	REMOVE3res rmr;
	assert_int_equal(CALL(f, 12, 0, REMOVE3args, &rm, REMOVE3res, &rmr, &rp), 0);
	assert_int_equal(rmr.status, NFS3_OK);
	reply_free(&rp);
	assert_int_equal(read3(f, fh, 0, 10, 0, &count, &eof), NFS3ERR_STALE);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_fh_roundtrip),
	    cmocka_unit_test(test_fh_malformed),
	    cmocka_unit_test(test_errno_map),
	    cmocka_unit_test(test_fattr),
	    cmocka_unit_test(test_sattr),
	    cmocka_unit_test(test_perm_table),
	    cmocka_unit_test(test_access_bits),
	    cmocka_unit_test(test_may_delete),
	    cmocka_unit_test(test_may_setattr),
	    cmocka_unit_test_setup_teardown(test_proto_handles, fx_setup, fx_teardown),
	    cmocka_unit_test_setup_teardown(test_proto_namespace, fx_setup, fx_teardown),
	    cmocka_unit_test_setup_teardown(test_proto_readdir, fx_setup, fx_teardown),
	    cmocka_unit_test_setup_teardown(test_proto_refusals, fx_setup, fx_teardown),
	    cmocka_unit_test_setup_teardown(test_proto_hold, fx_setup, fx_teardown),
	    cmocka_unit_test_setup_teardown(test_proto_snapshots, fx_setup, fx_teardown),
	    cmocka_unit_test_setup_teardown(test_proto_data, fx_data_setup, fx_teardown),
	    cmocka_unit_test_setup_teardown(test_proto_snapshot_data, fx_data_setup, fx_teardown),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}

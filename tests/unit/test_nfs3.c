/*
 * test_nfs3: the NFSv3 program's pure parts — file handle encoding and every malformed
 * handle, errno -> nfsstat3, meta_attr -> fattr3 / wcc conversion, sattr3 decoding, and the
 * permission decisions (ACCESS bits, may/may_delete/may_setattr tables).
 */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

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

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_fh_roundtrip), cmocka_unit_test(test_fh_malformed),
	    cmocka_unit_test(test_errno_map),	 cmocka_unit_test(test_fattr),
	    cmocka_unit_test(test_sattr),	 cmocka_unit_test(test_perm_table),
	    cmocka_unit_test(test_access_bits),	 cmocka_unit_test(test_may_delete),
	    cmocka_unit_test(test_may_setattr),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}

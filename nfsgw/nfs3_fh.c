/*
 * nfs3_fh: the NFSv3 file handle format (see nfs3.h): "BG", version 1, a reserved zero byte,
 * export id u32, fsid8 u64, fileid u64, generation u64, all big-endian, NFS3_FH_LEN bytes.
 */
#include <errno.h>
#include <string.h>

#include "nfsgw/nfs3.h"

#define FH_VERSION 1

static void put_be32(uint8_t *p, uint32_t v)
{
	for (int i = 3; i >= 0; i--, v >>= 8)
		p[i] = (uint8_t)v;
}

static void put_be64(uint8_t *p, uint64_t v)
{
	for (int i = 7; i >= 0; i--, v >>= 8)
		p[i] = (uint8_t)v;
}

static uint64_t get_be(const uint8_t *p, int n)
{
	uint64_t v = 0;
	for (int i = 0; i < n; i++)
		v = v << 8 | p[i];
	return v;
}

void nfs3_fh_encode(uint8_t out[NFS3_FH_LEN], uint32_t export_id, const uint8_t fsid[16],
		    uint64_t fileid, uint64_t gen)
{
	out[0] = 'B';
	out[1] = 'G';
	out[2] = FH_VERSION;
	out[3] = 0;
	put_be32(out + 4, export_id);
	memcpy(out + 8, fsid, 8);
	put_be64(out + 16, fileid);
	put_be64(out + 24, gen);
}

int nfs3_fh_decode(const uint8_t *fh, uint32_t len, uint32_t *export_id, uint64_t *fsid8,
		   uint64_t *fileid, uint64_t *gen)
{
	if (!fh || len != NFS3_FH_LEN || fh[0] != 'B' || fh[1] != 'G' || fh[2] != FH_VERSION ||
	    fh[3] != 0)
		return -EBADMSG;
	uint64_t id = get_be(fh + 16, 8);
	if (id == 0) /* fileids start at META_ROOT */
		return -EBADMSG;
	*export_id = (uint32_t)get_be(fh + 4, 4);
	*fsid8 = get_be(fh + 8, 8);
	*fileid = id;
	*gen = get_be(fh + 24, 8);
	return 0;
}

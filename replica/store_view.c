/*
 * store_view: reading and hashing the volume as of a snapshot (the snapshot's layer and its
 * ancestors merged), for snapshot catch-up between replicas. Synchronous, through the loop's
 * sync ring: it runs on the control path, one extent at a time.
 *
 * Snapshot layers are immutable except for a background merge of a deleted ancestor, which
 * only copies blocks into a child that lacks them, so a view never changes under us.
 */
#include "store_int.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <xxhash.h>

struct view {
	struct layer *chain[STORE_MAX_LAYERS + 1]; /* [0] is the snapshot, then its ancestors */
	uint32_t n;
};

static int view_get(struct store *s, const char *id, struct view *v)
{
	struct layer *L = NULL;
	for (uint32_t i = 0; i < s->nlayers && !L; i++)
		if (s->layers[i]->snap[0] && !strcmp(s->layers[i]->sid, id))
			L = s->layers[i];
	if (!L)
		return -ENOENT;
	v->n = 0;
	for (; L && v->n <= STORE_MAX_LAYERS; L = L->parent ? layer_by_id(s, L->parent) : NULL)
		v->chain[v->n++] = L;
	return 0;
}

static struct layer *view_owner(const struct view *v, uint64_t b)
{
	for (uint32_t i = 0; i < v->n; i++)
		if (smap_test(&v->chain[i]->map, b))
			return v->chain[i];
	return NULL;
}

static int view_read(struct store *s, const struct view *v, uint64_t off, uint32_t len,
		     uint8_t *buf, bool *any)
{
	while (len) {
		struct layer *own = view_owner(v, off / STORE_BLOCK);
		uint32_t n = 0;
		while (n < len) {
			uint64_t cur = off + n;
			if (n && view_owner(v, cur / STORE_BLOCK) != own)
				break;
			uint32_t step = STORE_BLOCK - (uint32_t)(cur % STORE_BLOCK);
			n += step > len - n ? len - n : step;
		}
		int r = 0;
		if (own) {
			*any = true;
			r = sio_pread(s->loop, own->data_fd, buf, n, off);
		} else {
			memset(buf, 0, n);
		}
		if (r < 0)
			return r;
		buf += n;
		off += n;
		len -= n;
	}
	return 0;
}

int store_snap_read(struct store *s, const char *id, uint64_t off, uint32_t len, void *buf)
{
	if (!id || off > s->size || len > s->size - off)
		return -EINVAL;
	struct view *v = malloc(sizeof(*v));
	if (!v)
		return -ENOMEM;
	bool any = false;
	int r = view_get(s, id, v);
	if (r == 0)
		r = view_read(s, v, off, len, buf, &any);
	free(v);
	return r;
}

int store_snap_hash(struct store *s, const char *id, uint64_t off, uint64_t len, uint32_t extent,
		    uint64_t *hashes)
{
	if (!id || !extent || off > s->size || len > s->size - off)
		return -EINVAL;
	struct view *v = malloc(sizeof(*v));
	uint8_t *buf = malloc(extent);
	int r = v && buf ? view_get(s, id, v) : -ENOMEM;
	for (uint64_t i = 0; r == 0 && len; i++) {
		uint32_t n = len < extent ? (uint32_t)len : extent;
		bool any = false;
		/* Same hash as store_hash(): XXH3 of the extent's bytes, zeros where unwritten. */
		r = view_read(s, v, off, n, buf, &any);
		hashes[i] = XXH3_64bits(buf, n);
		off += n;
		len -= n;
	}
	free(buf);
	free(v);
	return r;
}

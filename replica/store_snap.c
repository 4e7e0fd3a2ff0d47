/*
 * store_snap: snapshot create/list/delete, the background merge of a deleted snapshot into
 * its children, revert, clone and resize. All synchronous (control path); bulk data moves
 * through the loop's synchronous ring.
 *
 * Merge protocol (restartable, idempotent): for each child, copy every block the deleted
 * layer has and the child lacks, persist the child (data, then map); then drop the layer
 * from the metadata; then unlink its files. A crash anywhere repeats at most some copies.
 * A child whose files are shared with a clone (link count > 1) is first replaced by a
 * private copy, so a merge never changes a shared file.
 */
#include "store_int.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define BS STORE_BLOCK
#define MERGE_STEP_BLOCKS (16384u)     /* 64 MiB copied per merge step */
#define MERGE_SCAN_BLOCKS (1ull << 24) /* bitmap positions looked at per step */
#define COPY_RUN 256u		       /* blocks per read/write: 1 MiB */

static struct layer *new_head(struct store *s, uint64_t parent, int *err)
{
	struct layer *N = layer_new(s->next_layer_id, parent);
	if (!N) {
		*err = -ENOMEM;
		return NULL;
	}
	*err = layer_open_files(s, N, true);
	if (*err < 0) {
		layer_kill(s, N);
		return NULL;
	}
	return N;
}

bool store_snap_id_valid(const char *id)
{
	size_t n = id ? strlen(id) : 0;
	if (n == 0 || n >= STORE_SNAP_ID_MAX)
		return false;
	for (size_t i = 0; i < n; i++) {
		char c = id[i];
		if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
		      c == '.' || c == '_' || c == '-' || c == ':'))
			return false;
	}
	return true;
}

static struct layer *layer_by_sid(struct store *s, const char *id)
{
	for (uint32_t i = 0; i < s->nlayers; i++)
		if (s->layers[i]->snap[0] && !strcmp(s->layers[i]->sid, id))
			return s->layers[i];
	return NULL;
}

int store_snapshot_create(struct store *s, const char *name)
{
	return store_snapshot_create_id(s, name, NULL);
}

int store_snapshot_create_id(struct store *s, const char *name, const char *id)
{
	char sid[STORE_SNAP_ID_MAX];
	if (!store_name_valid(name) || (id && !store_snap_id_valid(id)))
		return -EINVAL;
	if (id && layer_by_sid(s, id))
		return -EEXIST;
	if (id)
		snprintf(sid, sizeof(sid), "%s", id);
	else if (meta_uuid(sid) < 0)
		return -EIO;
	if (layer_by_snap(s, name))
		return -EEXIST;
	if (s->nlayers >= STORE_MAX_LAYERS || s->nchain >= STORE_MAX_LAYERS)
		return -EMLINK;
	/* The snapshot's content is what was written before it: make it durable first. */
	int r = store_sync_all(s);
	if (r < 0)
		return r;
	struct layer *old = s->head, *N = new_head(s, old->id, &r);
	if (!N)
		return r;
	int64_t old_created = old->created;
	snprintf(old->snap, sizeof(old->snap), "%s", name);
	memcpy(old->sid, sid, sizeof(old->sid));
	old->created = (int64_t)time(NULL);
	s->layers[s->nlayers++] = N;
	s->head = N;
	s->next_layer_id++;
	r = meta_save(s);
	if (r < 0) {
		old->snap[0] = 0;
		old->created = old_created;
		s->nlayers--;
		s->head = old;
		s->next_layer_id--;
		layer_kill(s, N);
		return r;
	}
	/* Owners keep their positions; the new head is one more on top. */
	N->cidx = ++s->nchain;
	s->chain[N->cidx] = N;
	return 0;
}

int store_snapshot_list(struct store *s, struct store_snap **out, uint32_t *n)
{
	uint32_t cnt = 0;
	for (uint32_t i = 0; i < s->nlayers; i++)
		cnt += s->layers[i]->snap[0] != 0;
	struct store_snap *v = calloc(cnt ? cnt : 1, sizeof(*v));
	if (!v)
		return -ENOMEM;
	uint32_t k = 0;
	/* layers[] is in creation order, and a layer becomes a snapshot only as the newest. */
	for (uint32_t i = 0; i < s->nlayers; i++) {
		struct layer *L = s->layers[i];
		if (!L->snap[0])
			continue;
		struct store_snap *o = &v[k++];
		memcpy(o->name, L->snap, sizeof(o->name));
		o->layer_id = L->id;
		struct layer *p = L->parent ? layer_by_id(s, L->parent) : NULL;
		if (p)
			memcpy(o->parent, p->snap, sizeof(o->parent));
		o->created = L->created;
		o->allocated = smap_count(&L->map) * BS;
		o->in_head_chain = L->cidx != 0;
		o->deleting = L->deleting;
		memcpy(o->id, L->sid, sizeof(o->id));
		while (p && p->deleting)
			p = p->parent ? layer_by_id(s, p->parent) : NULL;
		if (p)
			memcpy(o->parent_id, p->sid, sizeof(o->parent_id));
	}
	*out = v;
	*n = cnt;
	return 0;
}

int store_snapshot_delete(struct store *s, const char *name)
{
	if (!store_name_valid(name))
		return -EINVAL;
	struct layer *L = layer_by_snap(s, name);
	if (!L)
		return -ENOENT;
	if (L->deleting)
		return 0;
	L->deleting = true;
	int r = meta_save(s);
	if (r < 0)
		L->deleting = false;
	return r;
}

static bool layer_shared(struct layer *L)
{
	struct stat a, b;
	if (fstat(L->data_fd, &a) < 0 || fstat(L->map_fd, &b) < 0)
		return true;
	return a.st_nlink > 1 || b.st_nlink > 1;
}

/* Copies n blocks at block b from fd src to fd dst at the same offset. */
static int copy_blocks(struct store *s, int src, int dst, uint64_t b, uint32_t n, uint8_t *buf)
{
	int r = sio_pread(s->loop, src, buf, (size_t)n * BS, b * BS);
	return r < 0 ? r : sio_pwrite(s->loop, dst, buf, (size_t)n * BS, b * BS);
}

/* Replaces C's files (shared with a clone) by private copies with the same content. */
static int make_private(struct store *s, struct layer *C)
{
	char dname[64], mname[64], dtmp[80], mtmp[80];
	snprintf(dname, sizeof(dname), "layer-%" PRIu64 ".data", C->id);
	snprintf(mname, sizeof(mname), "layer-%" PRIu64 ".map", C->id);
	snprintf(dtmp, sizeof(dtmp), "%s.tmp", dname);
	snprintf(mtmp, sizeof(mtmp), "%s.tmp", mname);
	int dfd = openat(s->dirfd, dtmp, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
	int mfd = openat(s->dirfd, mtmp, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
	uint8_t *buf = malloc((size_t)COPY_RUN * BS);
	int r = 0;
	if (dfd < 0 || mfd < 0 || !buf) {
		r = buf ? -errno : -ENOMEM;
		goto fail;
	}
	if (ftruncate(dfd, (off_t)s->size) < 0) {
		r = -errno;
		goto fail;
	}
	for (uint64_t b = 0; b < s->nblocks;) {
		uint64_t p = b >> SMAP_SHIFT;
		if (!C->map.pages[p]) {
			b = (p + 1) << SMAP_SHIFT;
			continue;
		}
		if (!smap_test(&C->map, b)) {
			b++;
			continue;
		}
		uint32_t n = 1;
		while (n < COPY_RUN && b + n < s->nblocks && smap_test(&C->map, b + n))
			n++;
		r = copy_blocks(s, C->data_fd, dfd, b, n, buf);
		if (r < 0)
			goto fail;
		b += n;
	}
	if ((r = sio_fdatasync(s->loop, dfd)) < 0 ||
	    (r = smap_save_all(s->loop, mfd, &C->map)) < 0 || (r = sio_fdatasync(s->loop, mfd)) < 0)
		goto fail;
	if (renameat(s->dirfd, dtmp, s->dirfd, dname) < 0 ||
	    renameat(s->dirfd, mtmp, s->dirfd, mname) < 0) {
		r = -errno;
		goto fail;
	}
	store_dirfsync(s);
	s->sync_gen++; /* a flush in flight must not write its older page images now */
	/* Reads already prepared on the old fds must reach the kernel before we close them. */
	loop_submit(s->loop);
	close(C->data_fd);
	close(C->map_fd);
	C->data_fd = dfd;
	C->map_fd = mfd;
	free(buf);
	return 0;
fail:
	if (dfd >= 0)
		close(dfd);
	if (mfd >= 0)
		close(mfd);
	unlinkat(s->dirfd, dtmp, 0);
	unlinkat(s->dirfd, mtmp, 0);
	free(buf);
	return r;
}

static bool child_has(struct store *s, struct layer *C, uint64_t b)
{
	/* The index also knows writes still in flight to C (bits come at completion). */
	if (C->cidx && sidx_get(&s->idx, b) == C->cidx)
		return true;
	return smap_test(&C->map, b);
}

static bool want(struct store *s, struct layer *L, struct layer *C, uint64_t b)
{
	return smap_test(&L->map, b) && !child_has(s, C, b);
}

/* Copies L's blocks that C lacks from the cursor on; 1 if the budget ran out, 0 if done. */
static int merge_into(struct store *s, struct layer *L, struct layer *C, uint32_t *budget)
{
	if (layer_shared(C)) {
		int r = make_private(s, C);
		if (r < 0)
			return r;
	}
	uint8_t *buf = malloc((size_t)COPY_RUN * BS);
	if (!buf)
		return -ENOMEM;
	int r = 0;
	uint64_t b = s->merge_blk, scanned = 0;
	while (b < s->nblocks) {
		uint64_t p = b >> SMAP_SHIFT;
		if (++scanned > MERGE_SCAN_BLOCKS) {
			/* Bounds a step over a layer the child already mostly has. */
			r = 1;
			break;
		}
		if (p >= L->map.npages)
			break;
		const uint8_t *pg = L->map.pages[p];
		if (!pg) {
			b = (p + 1) << SMAP_SHIFT;
			continue;
		}
		if (!(b & 7) && !pg[(b & SMAP_MASK) >> 3]) {
			b += 8;
			continue;
		}
		if (!want(s, L, C, b)) {
			b++;
			continue;
		}
		if (!*budget) {
			r = 1;
			break;
		}
		uint32_t n = 1, max = *budget < COPY_RUN ? *budget : COPY_RUN;
		while (n < max && b + n < s->nblocks && want(s, L, C, b + n))
			n++;
		r = copy_blocks(s, L->data_fd, C->data_fd, b, n, buf);
		if (r < 0)
			break;
		r = smap_set_range(&C->map, b, n);
		if (r < 0)
			break;
		if (L->cidx && C->cidx)
			for (uint32_t i = 0; i < n; i++)
				if (sidx_get(&s->idx, b + i) == L->cidx)
					sidx_set(&s->idx, b + i, (uint8_t)C->cidx);
		*budget -= n;
		b += n;
	}
	s->merge_blk = b;
	free(buf);
	return r;
}

static struct layer *next_child(struct store *s, uint64_t parent, uint64_t min_id)
{
	struct layer *best = NULL;
	for (uint32_t i = 0; i < s->nlayers; i++) {
		struct layer *L = s->layers[i];
		if (L->parent == parent && L->id >= min_id && (!best || L->id < best->id))
			best = L;
	}
	return best;
}

static int merge_finish(struct store *s, struct layer *L)
{
	uint32_t pos = 0;
	while (s->layers[pos] != L)
		pos++;
	uint64_t children[STORE_MAX_LAYERS];
	uint32_t nc = 0;
	for (uint32_t i = 0; i < s->nlayers; i++)
		if (s->layers[i]->parent == L->id) {
			children[nc++] = s->layers[i]->id;
			s->layers[i]->parent = L->parent;
		}
	memmove(&s->layers[pos], &s->layers[pos + 1], (s->nlayers - pos - 1) * sizeof(L));
	s->nlayers--;
	int r = meta_save(s);
	if (r < 0) {
		memmove(&s->layers[pos + 1], &s->layers[pos], (s->nlayers - pos) * sizeof(L));
		s->layers[pos] = L;
		s->nlayers++;
		for (uint32_t i = 0; i < nc; i++)
			layer_by_id(s, children[i])->parent = L->id;
		return r;
	}
	s->merge_id = 0;
	layer_kill(s, L);
	return store_rebuild_index(s);
}

int store_merge_step(struct store *s)
{
	struct layer *L = NULL;
	for (uint32_t i = 0; i < s->nlayers && !L; i++)
		if (s->layers[i]->deleting)
			L = s->layers[i];
	if (!L) {
		s->merge_id = 0;
		return 0;
	}
	if (s->merge_id != L->id) {
		s->merge_id = L->id;
		s->merge_child = 0;
		s->merge_blk = 0;
	}
	uint32_t budget = MERGE_STEP_BLOCKS;
	struct layer *C;
	while ((C = next_child(s, L->id, s->merge_child))) {
		if (C->id != s->merge_child) {
			s->merge_child = C->id;
			s->merge_blk = 0;
		}
		int r = merge_into(s, L, C, &budget);
		if (r)
			return r;
		r = store_sync_layer(s, C);
		if (r < 0)
			return r;
		s->merge_child = C->id + 1;
		s->merge_blk = 0;
	}
	int r = merge_finish(s, L);
	if (r < 0)
		return r;
	for (uint32_t i = 0; i < s->nlayers; i++)
		if (s->layers[i]->deleting)
			return 1;
	return 0;
}

static int revert_to(struct store *s, uint64_t parent);

int store_snapshot_revert(struct store *s, const char *name)
{
	if (!store_name_valid(name))
		return -EINVAL;
	struct layer *L = layer_by_snap(s, name);
	if (!L)
		return -ENOENT;
	return revert_to(s, L->id);
}

int store_snapshot_revert_root(struct store *s)
{
	return revert_to(s, 0);
}

static int revert_to(struct store *s, uint64_t parent)
{
	int r;
	struct layer *old = s->head, *N = new_head(s, parent, &r);
	if (!N)
		return r;
	uint32_t pos = 0;
	while (s->layers[pos] != old)
		pos++;
	s->layers[pos] = N;
	s->head = N;
	s->next_layer_id++;
	r = meta_save(s);
	if (r < 0) {
		s->layers[pos] = old;
		s->head = old;
		s->next_layer_id--;
		layer_kill(s, N);
		return r;
	}
	/* Keep layers[] in creation order: the new head is the newest. */
	memmove(&s->layers[pos], &s->layers[pos + 1], (s->nlayers - pos - 1) * sizeof(N));
	s->layers[s->nlayers - 1] = N;
	old->cidx = 0;
	layer_kill(s, old);
	return store_rebuild_index(s);
}

static int link_layer(struct store *s, int dst_dirfd, uint64_t id)
{
	char name[64];
	const char *ext[2] = {"data", "map"};
	for (int i = 0; i < 2; i++) {
		snprintf(name, sizeof(name), "layer-%" PRIu64 ".%s", id, ext[i]);
		if (linkat(s->dirfd, name, dst_dirfd, name, 0) < 0)
			return -errno;
	}
	return 0;
}

int store_clone(struct store *s, const char *snap, const char *new_dir, const char *new_name)
{
	return store_clone_members(s, snap, new_dir, new_name, NULL, 0);
}

int store_clone_members(struct store *s, const char *snap, const char *new_dir,
			const char *new_name, const struct store_member *m, uint32_t nm)
{
	if (m && (nm == 0 || nm > STORE_MAX_MEMBERS))
		return -EINVAL;
	if (!store_name_valid(new_name) || !store_name_valid(snap))
		return -EINVAL;
	struct layer *L = layer_by_snap(s, snap);
	if (!L)
		return -ENOENT;
	/* The links share the files as they are on disk: their maps must be current. */
	int r = store_sync_all(s);
	if (r < 0)
		return r;
	if (mkdir(new_dir, 0755) < 0) {
		if (errno != EEXIST)
			return -errno;
		char p[4096];
		snprintf(p, sizeof(p), "%s/%s", new_dir, STORE_META);
		if (access(p, F_OK) == 0)
			return -EEXIST;
	}
	struct store *c = store_alloc(s->loop, new_dir);
	if (!c)
		return -ENOMEM;
	c->dirfd = open(new_dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (c->dirfd < 0) {
		r = -errno;
		goto out;
	}
	snprintf(c->name, sizeof(c->name), "%s", new_name);
	if ((r = meta_uuid(c->uuid)) < 0)
		goto out;
	c->size = s->size;
	c->nblocks = s->nblocks;
	c->members_gen = s->members_gen;
	c->nmembers = m ? nm : s->nmembers;
	if (m)
		memcpy(c->members, m, nm * sizeof(*m));
	else
		memcpy(c->members, s->members, sizeof(c->members));
	c->clean = true;
	struct layer *anc[STORE_MAX_LAYERS];
	uint32_t na = 0;
	for (struct layer *X = L; X; X = X->parent ? layer_by_id(s, X->parent) : NULL)
		anc[na++] = X;
	for (uint32_t i = na; i-- > 0;) {
		struct layer *X = anc[i], *Y = layer_new(X->id, X->parent);
		if (!Y) {
			r = -ENOMEM;
			goto out;
		}
		memcpy(Y->snap, X->snap, sizeof(Y->snap));
		memcpy(Y->sid, X->sid, sizeof(Y->sid));
		Y->created = X->created;
		Y->deleting = X->deleting;
		c->layers[c->nlayers++] = Y;
		if ((r = link_layer(s, c->dirfd, X->id)) < 0)
			goto out;
	}
	c->next_layer_id = s->next_layer_id;
	c->head = new_head(c, L->id, &r);
	if (!c->head)
		goto out;
	c->layers[c->nlayers++] = c->head;
	c->next_layer_id++;
	r = meta_save(c);
out:
	store_release(c);
	if (r < 0)
		store_destroy(new_dir);
	return r;
}

int store_resize(struct store *s, uint64_t size)
{
	if (size < s->size || size % BS)
		return -EINVAL;
	if (size == s->size)
		return 0;
	uint64_t nb = size / BS;
	for (uint32_t i = 0; i < s->nlayers; i++) {
		int r = smap_grow(&s->layers[i]->map, nb);
		if (r < 0)
			return r;
	}
	int r = sidx_grow(&s->idx, nb);
	if (r < 0)
		return r;
	if (ftruncate(s->head->data_fd, (off_t)size) < 0)
		return -errno;
	uint64_t old = s->size;
	s->size = size;
	s->nblocks = nb;
	r = meta_save(s);
	if (r < 0) {
		s->size = old;
		s->nblocks = old / BS;
	}
	return r;
}

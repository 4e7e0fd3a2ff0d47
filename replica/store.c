/*
 * store: lifecycle of a replica store (create, open, close, destroy), its layers and
 * their files, info, fencing, membership, the synchronous persist used by control
 * operations, and the per-extent hash. The data path is in store_io.c, snapshots in
 * store_snap.c, bitmaps and the owner index in store_map.c, metadata in store_meta.c.
 */
#include "store_int.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>
#include <xxhash.h>

struct sync_rw {
	int op;
	int fd;
	void *buf;
	uint32_t len;
	uint64_t off;
};

static void prep_rw(struct io_uring_sqe *sqe, void *arg)
{
	struct sync_rw *a = arg;
	if (a->op == 0)
		io_uring_prep_read(sqe, a->fd, a->buf, a->len, a->off);
	else if (a->op == 1)
		io_uring_prep_write(sqe, a->fd, a->buf, a->len, a->off);
	else
		io_uring_prep_fsync(sqe, a->fd, IORING_FSYNC_DATASYNC);
}

#define SIO_CHUNK (1u << 30)

int sio_pread(struct loop *l, int fd, void *buf, size_t len, uint64_t off)
{
	uint8_t *p = buf;
	while (len) {
		struct sync_rw a = {0, fd, p, len > SIO_CHUNK ? SIO_CHUNK : (uint32_t)len, off};
		int r = loop_io_sync(l, prep_rw, &a);
		if (r < 0)
			return r;
		if (r == 0) {
			/* Past a lower layer's EOF the volume reads as zeros. */
			memset(p, 0, len);
			return 0;
		}
		p += r;
		len -= (size_t)r;
		off += (uint64_t)r;
	}
	return 0;
}

int sio_pwrite(struct loop *l, int fd, const void *buf, size_t len, uint64_t off)
{
	const uint8_t *p = buf;
	while (len) {
		struct sync_rw a = {1, fd, (void *)p, len > SIO_CHUNK ? SIO_CHUNK : (uint32_t)len,
				    off};
		int r = loop_io_sync(l, prep_rw, &a);
		if (r < 0)
			return r;
		if (r == 0)
			return -EIO;
		p += r;
		len -= (size_t)r;
		off += (uint64_t)r;
	}
	return 0;
}

int sio_fdatasync(struct loop *l, int fd)
{
	struct sync_rw a = {2, fd, NULL, 0, 0};
	return loop_io_sync(l, prep_rw, &a);
}

bool store_name_valid(const char *name)
{
	size_t n = name ? strlen(name) : 0;
	/* No leading '.' (hidden, "..") or '-' (read as an option by every CLI). */
	if (n == 0 || n >= STORE_NAME_MAX || name[0] == '.' || name[0] == '-')
		return false;
	for (size_t i = 0; i < n; i++) {
		char c = name[i];
		if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
		      c == '.' || c == '_' || c == '-'))
			return false;
	}
	return true;
}

struct layer *layer_new(uint64_t id, uint64_t parent)
{
	struct layer *L = calloc(1, sizeof(*L));
	if (!L)
		return NULL;
	L->id = id;
	L->parent = parent;
	L->data_fd = L->map_fd = -1;
	L->created = (int64_t)time(NULL);
	return L;
}

struct layer *layer_by_id(struct store *s, uint64_t id)
{
	for (uint32_t i = 0; i < s->nlayers; i++)
		if (s->layers[i]->id == id)
			return s->layers[i];
	return NULL;
}

struct layer *layer_by_snap(struct store *s, const char *name)
{
	for (uint32_t i = 0; i < s->nlayers; i++)
		if (s->layers[i]->snap[0] && !strcmp(s->layers[i]->snap, name))
			return s->layers[i];
	return NULL;
}

static void layer_free(struct layer *L)
{
	if (L->data_fd >= 0)
		close(L->data_fd);
	if (L->map_fd >= 0)
		close(L->map_fd);
	smap_free(&L->map);
	free(L);
}

int layer_open_files(struct store *s, struct layer *L, bool create)
{
	char name[64];
	int flags = O_RDWR | O_CLOEXEC | (create ? O_CREAT | O_EXCL : 0);
	int r = smap_init(&L->map, s->nblocks);
	if (r < 0)
		return r;
	snprintf(name, sizeof(name), "layer-%" PRIu64 ".data", L->id);
	L->data_fd = openat(s->dirfd, name, flags, 0644);
	if (L->data_fd < 0)
		return -errno;
	/* Sized to the volume so reads inside it never hit EOF. */
	if (create && ftruncate(L->data_fd, (off_t)s->size) < 0)
		return -errno;
	snprintf(name, sizeof(name), "layer-%" PRIu64 ".map", L->id);
	L->map_fd = openat(s->dirfd, name, flags, 0644);
	if (L->map_fd < 0)
		return -errno;
	return create ? 0 : smap_load(s->loop, L->map_fd, &L->map);
}

static void unlink_layer_files(int dirfd, uint64_t id)
{
	char name[64];
	snprintf(name, sizeof(name), "layer-%" PRIu64 ".data", id);
	unlinkat(dirfd, name, 0);
	snprintf(name, sizeof(name), "layer-%" PRIu64 ".map", id);
	unlinkat(dirfd, name, 0);
}

void layer_put(struct store *s, struct layer *L)
{
	(void)s;
	if (--L->refs == 0 && L->dead)
		layer_free(L);
}

void layer_kill(struct store *s, struct layer *L)
{
	unlink_layer_files(s->dirfd, L->id);
	L->dead = true;
	/* SQEs prepared this iteration name the fds by number; once submitted the kernel
	 * holds the files, so closing is safe. */
	loop_submit(s->loop);
	if (L->refs == 0)
		layer_free(L);
}

int store_dirfsync(struct store *s)
{
	return fsync(s->dirfd) < 0 ? -errno : 0;
}

int store_rebuild_index(struct store *s)
{
	struct layer *rev[STORE_MAX_LAYERS + 1];
	uint32_t n = 0;
	for (uint32_t i = 0; i < s->nlayers; i++)
		s->layers[i]->cidx = 0;
	for (struct layer *L = s->head; L; L = L->parent ? layer_by_id(s, L->parent) : NULL) {
		if (n >= STORE_MAX_LAYERS)
			return -EUCLEAN;
		rev[n++] = L;
	}
	s->nchain = n;
	for (uint32_t i = 0; i < n; i++) {
		s->chain[i + 1] = rev[n - 1 - i];
		s->chain[i + 1]->cidx = i + 1;
	}
	int r = sidx_build(&s->idx, s->chain, s->nchain, s->nblocks);
	return r < 0 ? r : store_io_reapply(s);
}

int store_sync_layer(struct store *s, struct layer *L)
{
	int r = sio_fdatasync(s->loop, L->data_fd);
	if (r < 0)
		return r;
	if (!smap_dirty(&L->map))
		return 0;
	r = smap_save_dirty(s->loop, L->map_fd, &L->map);
	if (r < 0)
		return r;
	s->sync_gen++;
	return sio_fdatasync(s->loop, L->map_fd);
}

int store_sync_all(struct store *s)
{
	for (uint32_t i = 0; i < s->nlayers; i++) {
		struct layer *L = s->layers[i];
		if (L != s->head && !smap_dirty(&L->map))
			continue;
		int r = store_sync_layer(s, L);
		if (r < 0)
			return r;
	}
	return 0;
}

void store_release(struct store *s)
{
	for (uint32_t i = 0; i < s->nlayers; i++) {
		/* In-flight I/O is gone by now (close waits for it). */
		layer_free(s->layers[i]);
	}
	sidx_free(&s->idx);
	if (s->dirfd >= 0)
		close(s->dirfd);
	free(s->dir);
	free(s);
}

struct store *store_alloc(struct loop *l, const char *dir)
{
	struct store *s = calloc(1, sizeof(*s));
	if (!s)
		return NULL;
	s->loop = l;
	s->dirfd = -1;
	s->dir = strdup(dir);
	if (!s->dir) {
		free(s);
		return NULL;
	}
	return s;
}

/* Files of layers the metadata no longer names: leftovers of a crash mid-merge/revert. */
static void remove_orphans(struct store *s)
{
	int fd = dup(s->dirfd);
	DIR *d = fd >= 0 ? fdopendir(fd) : NULL;
	if (!d) {
		if (fd >= 0)
			close(fd);
		return;
	}
	struct dirent *e;
	while ((e = readdir(d))) {
		uint64_t id;
		int pos = 0;
		if (sscanf(e->d_name, "layer-%" SCNu64 ".%n", &id, &pos) != 1 || pos == 0)
			continue;
		if (!layer_by_id(s, id) || strstr(e->d_name, ".tmp"))
			unlinkat(s->dirfd, e->d_name, 0);
	}
	closedir(d);
}

int store_open(struct loop *l, const char *dir, struct store **out)
{
	struct store *s = store_alloc(l, dir);
	if (!s)
		return -ENOMEM;
	int r;
	s->dirfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (s->dirfd < 0) {
		r = -errno;
		goto fail;
	}
	r = meta_load(s);
	if (r < 0)
		goto fail;
	s->nblocks = s->size / STORE_BLOCK;
	for (uint32_t i = 0; i < s->nlayers; i++) {
		r = layer_open_files(s, s->layers[i], false);
		if (r < 0)
			goto fail;
	}
	remove_orphans(s);
	r = store_rebuild_index(s);
	if (r < 0)
		goto fail;
	*out = s;
	return 0;
fail:
	store_release(s);
	return r;
}

int store_create(struct loop *l, const char *dir, const char *name, uint64_t size,
		 struct store **out)
{
	if (!store_name_valid(name) || size == 0 || size % STORE_BLOCK)
		return -EINVAL;
	if (mkdir(dir, 0755) < 0 && errno != EEXIST)
		return -errno;
	struct store *s = store_alloc(l, dir);
	if (!s)
		return -ENOMEM;
	int r;
	s->dirfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (s->dirfd < 0) {
		r = -errno;
		goto fail;
	}
	if (faccessat(s->dirfd, STORE_META, F_OK, 0) == 0) {
		r = -EEXIST;
		goto fail;
	}
	snprintf(s->name, sizeof(s->name), "%s", name);
	r = meta_uuid(s->uuid);
	if (r < 0)
		goto fail;
	s->size = size;
	s->nblocks = size / STORE_BLOCK;
	s->clean = true;
	s->next_layer_id = 2;
	s->layers[0] = s->head = layer_new(1, 0);
	if (!s->head) {
		r = -ENOMEM;
		goto fail;
	}
	s->nlayers = 1;
	/* Stale files of an earlier failed create would make O_EXCL fail. */
	unlink_layer_files(s->dirfd, 1);
	r = layer_open_files(s, s->head, true);
	if (r < 0)
		goto fail;
	r = meta_save(s);
	if (r < 0)
		goto fail;
	r = store_rebuild_index(s);
	if (r < 0)
		goto fail;
	*out = s;
	return 0;
fail:
	store_release(s);
	return r;
}

void store_finish_close(struct store *s)
{
	/* Best effort: a failure here leaves clean=false, which makes the engine rebuild. */
	if (store_sync_all(s) == 0) {
		s->clean = true;
		meta_save(s);
	}
	store_release(s);
}

void store_close(struct store *s)
{
	if (!s)
		return;
	if (s->inflight) {
		s->closing = true;
		return;
	}
	store_finish_close(s);
}

int store_destroy(const char *dir)
{
	DIR *d = opendir(dir);
	if (!d)
		return -errno;
	struct dirent *e;
	int dfd = dirfd(d);
	while ((e = readdir(d))) {
		if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, ".."))
			continue;
		unlinkat(dfd, e->d_name, 0);
	}
	closedir(d);
	return rmdir(dir) < 0 ? -errno : 0;
}

static uint64_t allocated_bytes(struct store *s)
{
	uint64_t n = 0;
	for (uint64_t p = 0; p < s->idx.nleaves; p++) {
		const uint8_t *leaf = s->idx.leaves[p];
		if (!leaf)
			continue;
		const uint64_t *w = (const uint64_t *)(const void *)leaf;
		for (uint32_t i = 0; i < SMAP_BLOCKS / 8; i++) {
			/* Count the non-zero bytes of 8 owners at once. */
			uint64_t x = w[i];
			x |= x >> 4;
			x |= x >> 2;
			x |= x >> 1;
			n += (uint64_t)__builtin_popcountll(x & 0x0101010101010101ull);
		}
	}
	return n * STORE_BLOCK;
}

int store_get_info(struct store *s, struct store_info *out)
{
	memset(out, 0, sizeof(*out));
	memcpy(out->name, s->name, sizeof(out->name));
	memcpy(out->uuid, s->uuid, sizeof(out->uuid));
	out->size = s->size;
	out->epoch = s->epoch;
	out->members_gen = s->members_gen;
	out->nmembers = s->nmembers;
	memcpy(out->members, s->members, sizeof(out->members));
	out->allocated = allocated_bytes(s);
	for (uint32_t i = 0; i < s->nlayers; i++)
		out->nsnapshots += s->layers[i]->snap[0] != 0;
	out->clean = s->clean;
	return 0;
}

int store_bump_epoch(struct store *s, uint64_t epoch)
{
	if (epoch <= s->epoch)
		return -ESTALE;
	uint64_t old = s->epoch;
	s->epoch = epoch;
	int r = meta_save(s);
	if (r < 0)
		s->epoch = old;
	return r;
}

uint64_t store_epoch(struct store *s)
{
	return s->epoch;
}

int store_set_clean(struct store *s, bool clean)
{
	if (s->clean == clean)
		return 0;
	if (clean) {
		/* Clean promises the replica holds everything written to it. */
		int r = store_sync_all(s);
		if (r < 0)
			return r;
	}
	s->clean = clean;
	int r = meta_save(s);
	if (r < 0)
		s->clean = !clean;
	return r;
}

int store_set_members(struct store *s, const struct store_member *m, uint32_t n, uint64_t gen)
{
	if (n > STORE_MAX_MEMBERS)
		return -EINVAL;
	for (uint32_t i = 0; i < n; i++)
		if (!store_name_valid(m[i].node))
			return -EINVAL;
	struct store_member old[STORE_MAX_MEMBERS];
	uint32_t oldn = s->nmembers;
	uint64_t oldgen = s->members_gen;
	memcpy(old, s->members, sizeof(old));
	memset(s->members, 0, sizeof(s->members));
	memcpy(s->members, m, n * sizeof(*m));
	s->nmembers = n;
	s->members_gen = gen;
	int r = meta_save(s);
	if (r < 0) {
		memcpy(s->members, old, sizeof(old));
		s->nmembers = oldn;
		s->members_gen = oldgen;
	}
	return r;
}

bool store_allocated(struct store *s, uint64_t off, uint64_t len)
{
	if (!len || off >= s->size)
		return false;
	if (len > s->size - off)
		len = s->size - off;
	uint64_t b = off / STORE_BLOCK, e = (off + len - 1) / STORE_BLOCK + 1;
	while (b < e) {
		uint64_t p = b >> SMAP_SHIFT;
		uint64_t pe = (p + 1) << SMAP_SHIFT;
		if (pe > e)
			pe = e;
		const uint8_t *leaf = s->idx.leaves[p];
		if (leaf)
			for (uint64_t i = b; i < pe; i++)
				if (leaf[i & SMAP_MASK])
					return true;
		b = pe;
	}
	return false;
}

/* Merged content of [off, off+len) through the sync ring. */
static int read_merged_sync(struct store *s, uint64_t off, uint32_t len, uint8_t *buf)
{
	while (len) {
		uint64_t b = off / STORE_BLOCK;
		uint8_t own = sidx_get(&s->idx, b);
		uint32_t n = 0;
		while (n < len) {
			uint64_t cur = off + n;
			if (sidx_get(&s->idx, cur / STORE_BLOCK) != own)
				break;
			uint32_t step = STORE_BLOCK - (uint32_t)(cur % STORE_BLOCK);
			n += step > len - n ? len - n : step;
		}
		int r = 0;
		if (own)
			r = sio_pread(s->loop, s->chain[own]->data_fd, buf, n, off);
		else
			memset(buf, 0, n);
		if (r < 0)
			return r;
		buf += n;
		off += n;
		len -= n;
	}
	return 0;
}

static int zero_hash(struct store *s, uint32_t len, uint64_t *out)
{
	static const uint8_t zero[STORE_BLOCK];
	if (s->zh_len == len) {
		*out = s->zh;
		return 0;
	}
	XXH3_state_t *st = XXH3_createState();
	if (!st)
		return -ENOMEM;
	XXH3_64bits_reset(st);
	for (uint32_t left = len; left;) {
		uint32_t n = left > STORE_BLOCK ? STORE_BLOCK : left;
		XXH3_64bits_update(st, zero, n);
		left -= n;
	}
	*out = XXH3_64bits_digest(st);
	XXH3_freeState(st);
	s->zh_len = len;
	s->zh = *out;
	return 0;
}

int store_hash(struct store *s, uint64_t off, uint64_t len, uint32_t extent, uint64_t *hashes)
{
	if (!extent || off > s->size || len > s->size - off)
		return -EINVAL;
	uint8_t *buf = NULL;
	int r = 0;
	for (uint64_t i = 0; len; i++) {
		uint32_t n = len < extent ? (uint32_t)len : extent;
		if (!store_allocated(s, off, n)) {
			r = zero_hash(s, n, &hashes[i]);
		} else {
			if (!buf && !(buf = malloc(extent))) {
				r = -ENOMEM;
				break;
			}
			r = read_merged_sync(s, off, n, buf);
			hashes[i] = XXH3_64bits(buf, n);
		}
		if (r < 0)
			break;
		off += n;
		len -= n;
	}
	free(buf);
	return r;
}

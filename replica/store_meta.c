/*
 * store_meta: volume.meta (JSON, replaced atomically: tmp, fsync, rename, fsync dir) and
 * the dirty-<member>.bmp files. A malformed meta file fails the open with -EUCLEAN rather
 * than producing a half-initialised store.
 */
#include "store_int.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define DIRTY_MAGIC 0x31424442u /* "BDB1" */
#define META_MAX (1u << 20)

struct dirty_hdr {
	uint32_t magic;
	uint32_t grain;
	uint64_t nbytes;
};

int meta_uuid(char out[40])
{
	uint8_t b[16];
	int fd = open("/dev/urandom", O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return -errno;
	ssize_t n = read(fd, b, sizeof(b));
	close(fd);
	if (n != (ssize_t)sizeof(b))
		return -EIO;
	b[6] = (b[6] & 0x0f) | 0x40; /* version 4 */
	b[8] = (b[8] & 0x3f) | 0x80; /* RFC 4122 variant */
	snprintf(out, 40, "%02x%02x%02x%02x-%02x%02x-%02x%02x-%02x%02x-%02x%02x%02x%02x%02x%02x",
		 b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7], b[8], b[9], b[10], b[11], b[12],
		 b[13], b[14], b[15]);
	return 0;
}

int store_write_atomic(int dirfd, const char *name, const void *buf, size_t len)
{
	char tmp[STORE_NAME_MAX + 32];
	snprintf(tmp, sizeof(tmp), "%s.tmp", name);
	int fd = openat(dirfd, tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
	if (fd < 0)
		return -errno;
	const uint8_t *p = buf;
	size_t left = len;
	int r = 0;
	while (left) {
		ssize_t n = write(fd, p, left);
		if (n < 0) {
			if (errno == EINTR)
				continue;
			r = -errno;
			break;
		}
		p += n;
		left -= (size_t)n;
	}
	if (!r && fsync(fd) < 0)
		r = -errno;
	close(fd);
	if (!r && renameat(dirfd, tmp, dirfd, name) < 0)
		r = -errno;
	if (!r && fsync(dirfd) < 0)
		r = -errno;
	if (r)
		unlinkat(dirfd, tmp, 0);
	return r;
}

int meta_save(struct store *s)
{
	json_t *root = json_object();
	json_t *members = json_array();
	json_t *layers = json_array();
	if (!root || !members || !layers) {
		json_decref(root);
		json_decref(members);
		json_decref(layers);
		return -ENOMEM;
	}
	json_object_set_new(root, "name", json_string(s->name));
	json_object_set_new(root, "uuid", json_string(s->uuid));
	json_object_set_new(root, "size", json_integer((json_int_t)s->size));
	json_object_set_new(root, "block_size", json_integer(STORE_BLOCK));
	json_object_set_new(root, "epoch", json_integer((json_int_t)s->epoch));
	json_object_set_new(root, "members_gen", json_integer((json_int_t)s->members_gen));
	for (uint32_t i = 0; i < s->nmembers; i++)
		json_array_append_new(members, json_pack("{s:s,s:b}", "node", s->members[i].node,
							 "in_sync", s->members[i].in_sync));
	json_object_set_new(root, "members", members);
	json_object_set_new(root, "clean", json_boolean(s->clean));
	json_object_set_new(root, "next_layer_id", json_integer((json_int_t)s->next_layer_id));
	json_object_set_new(root, "head", json_integer((json_int_t)s->head->id));
	for (uint32_t i = 0; i < s->nlayers; i++) {
		struct layer *L = s->layers[i];
		json_t *o = json_pack("{s:I,s:I,s:o,s:I,s:b}", "id", (json_int_t)L->id, "parent",
				      (json_int_t)L->parent, "snapshot",
				      L->snap[0] ? json_string(L->snap) : json_null(), "created",
				      (json_int_t)L->created, "deleting", L->deleting);
		if (o && L->snap[0])
			json_object_set_new(o, "sid", json_string(L->sid));
		json_array_append_new(layers, o);
	}
	json_object_set_new(root, "layers", layers);
	char *text = json_dumps(root, JSON_INDENT(1));
	json_decref(root);
	if (!text)
		return -ENOMEM;
	int r = store_write_atomic(s->dirfd, STORE_META, text, strlen(text));
	free(text);
	return r;
}

static int get_u64(json_t *o, const char *key, uint64_t *out)
{
	json_t *v = json_object_get(o, key);
	if (!json_is_integer(v) || json_integer_value(v) < 0)
		return -EUCLEAN;
	*out = (uint64_t)json_integer_value(v);
	return 0;
}

static int get_name(json_t *o, const char *key, char *out)
{
	json_t *v = json_object_get(o, key);
	if (!json_is_string(v) || !store_name_valid(json_string_value(v)))
		return -EUCLEAN;
	snprintf(out, STORE_NAME_MAX, "%s", json_string_value(v));
	return 0;
}

static int load_layers(struct store *s, json_t *arr, uint64_t head_id)
{
	if (!json_is_array(arr) || json_array_size(arr) == 0 ||
	    json_array_size(arr) > STORE_MAX_LAYERS)
		return -EUCLEAN;
	size_t i;
	json_t *o;
	json_array_foreach(arr, i, o)
	{
		uint64_t id, parent, created;
		if (!json_is_object(o) || get_u64(o, "id", &id) || get_u64(o, "parent", &parent) ||
		    get_u64(o, "created", &created) || id == 0 || id >= s->next_layer_id)
			return -EUCLEAN;
		json_t *d = json_object_get(o, "deleting");
		json_t *sn = json_object_get(o, "snapshot");
		if (!json_is_boolean(d) || (!json_is_null(sn) && !json_is_string(sn)))
			return -EUCLEAN;
		if (layer_by_id(s, id))
			return -EUCLEAN;
		struct layer *L = layer_new(id, parent);
		if (!L)
			return -ENOMEM;
		s->layers[s->nlayers++] = L;
		L->created = (int64_t)created;
		L->deleting = json_is_true(d);
		if (json_is_string(sn)) {
			if (!store_name_valid(json_string_value(sn)) ||
			    layer_by_snap(s, json_string_value(sn)))
				return -EUCLEAN;
			snprintf(L->snap, sizeof(L->snap), "%s", json_string_value(sn));
			/* Older volumes have no identities: derive one every replica agrees on. */
			const char *sid = json_string_value(json_object_get(o, "sid"));
			if (sid && !store_snap_id_valid(sid))
				return -EUCLEAN;
			if (sid)
				snprintf(L->sid, sizeof(L->sid), "%s", sid);
			else
				snprintf(L->sid, sizeof(L->sid), "n:%.37s", L->snap);
		}
		if ((id == head_id) != !L->snap[0])
			return -EUCLEAN; /* exactly the head has no snapshot name */
	}
	s->head = layer_by_id(s, head_id);
	if (!s->head || s->head->deleting)
		return -EUCLEAN;
	for (uint32_t k = 0; k < s->nlayers; k++) {
		struct layer *L = s->layers[k];
		if (L->parent &&
		    (!layer_by_id(s, L->parent) || layer_by_id(s, L->parent) == s->head))
			return -EUCLEAN;
		/* A parent cycle would make chain walks loop forever. */
		uint32_t depth = 0;
		for (struct layer *p = L; p && p->parent; p = layer_by_id(s, p->parent))
			if (++depth > s->nlayers)
				return -EUCLEAN;
	}
	return 0;
}

int meta_load(struct store *s)
{
	int fd = openat(s->dirfd, STORE_META, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return -errno;
	struct stat st;
	if (fstat(fd, &st) < 0 || st.st_size > META_MAX) {
		close(fd);
		return -EUCLEAN;
	}
	char *buf = malloc((size_t)st.st_size + 1);
	if (!buf) {
		close(fd);
		return -ENOMEM;
	}
	ssize_t n = pread(fd, buf, (size_t)st.st_size, 0);
	close(fd);
	if (n != st.st_size) {
		free(buf);
		return n < 0 ? -errno : -EIO;
	}
	json_error_t err;
	json_t *root = json_loadb(buf, (size_t)n, 0, &err);
	free(buf);
	if (!json_is_object(root)) {
		json_decref(root);
		return -EUCLEAN;
	}
	int r = -EUCLEAN;
	uint64_t bs, head_id;
	json_t *uuid = json_object_get(root, "uuid");
	json_t *clean = json_object_get(root, "clean");
	json_t *members = json_object_get(root, "members");
	if (get_name(root, "name", s->name) || !json_is_string(uuid) ||
	    strlen(json_string_value(uuid)) >= sizeof(s->uuid) || get_u64(root, "size", &s->size) ||
	    get_u64(root, "block_size", &bs) || get_u64(root, "epoch", &s->epoch) ||
	    get_u64(root, "members_gen", &s->members_gen) ||
	    get_u64(root, "next_layer_id", &s->next_layer_id) || get_u64(root, "head", &head_id) ||
	    !json_is_boolean(clean) || !json_is_array(members) ||
	    json_array_size(members) > STORE_MAX_MEMBERS)
		goto out;
	if (bs != STORE_BLOCK || s->size == 0 || s->size % STORE_BLOCK)
		goto out;
	snprintf(s->uuid, sizeof(s->uuid), "%s", json_string_value(uuid));
	s->clean = json_is_true(clean);
	size_t i;
	json_t *m;
	s->nmembers = 0;
	json_array_foreach(members, i, m)
	{
		json_t *in_sync = json_object_get(m, "in_sync");
		if (!json_is_object(m) || get_name(m, "node", s->members[i].node) ||
		    !json_is_boolean(in_sync))
			goto out;
		s->members[i].in_sync = json_is_true(in_sync);
		s->nmembers++;
	}
	r = load_layers(s, json_object_get(root, "layers"), head_id);
out:
	json_decref(root);
	return r;
}

static int dirty_name(const char *member, char *out, size_t n)
{
	if (!store_name_valid(member))
		return -EINVAL;
	snprintf(out, n, "dirty-%s.bmp", member);
	return 0;
}

int store_put_dirty(struct store *s, const char *member, uint32_t grain, const uint8_t *bits,
		    size_t nbytes)
{
	char name[STORE_NAME_MAX + 16];
	int r = dirty_name(member, name, sizeof(name));
	if (r < 0)
		return r;
	if (grain == 0 || nbytes > (64u << 20))
		return -EINVAL;
	struct dirty_hdr h = {.magic = DIRTY_MAGIC, .grain = grain, .nbytes = nbytes};
	uint8_t *buf = malloc(sizeof(h) + nbytes);
	if (!buf)
		return -ENOMEM;
	memcpy(buf, &h, sizeof(h));
	if (nbytes)
		memcpy(buf + sizeof(h), bits, nbytes);
	r = store_write_atomic(s->dirfd, name, buf, sizeof(h) + nbytes);
	free(buf);
	return r;
}

int store_get_dirty(struct store *s, const char *member, uint32_t *grain, uint8_t **bits,
		    size_t *nbytes)
{
	char name[STORE_NAME_MAX + 16];
	int r = dirty_name(member, name, sizeof(name));
	if (r < 0)
		return r;
	int fd = openat(s->dirfd, name, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return -errno;
	struct dirty_hdr h;
	struct stat st;
	r = -EUCLEAN;
	if (fstat(fd, &st) < 0 || pread(fd, &h, sizeof(h), 0) != (ssize_t)sizeof(h) ||
	    h.magic != DIRTY_MAGIC || h.grain == 0 || (uint64_t)st.st_size != sizeof(h) + h.nbytes)
		goto out;
	uint8_t *b = malloc(h.nbytes ? h.nbytes : 1);
	if (!b) {
		r = -ENOMEM;
		goto out;
	}
	if (h.nbytes && pread(fd, b, h.nbytes, sizeof(h)) != (ssize_t)h.nbytes) {
		free(b);
		goto out;
	}
	*grain = h.grain;
	*bits = b;
	*nbytes = h.nbytes;
	r = 0;
out:
	close(fd);
	return r;
}

int store_drop_dirty(struct store *s, const char *member)
{
	char name[STORE_NAME_MAX + 16];
	int r = dirty_name(member, name, sizeof(name));
	if (r < 0)
		return r;
	if (unlinkat(s->dirfd, name, 0) < 0)
		return errno == ENOENT ? 0 : -errno;
	return store_dirfsync(s);
}

/*
 * bdev: the block-device interface a front end (the NBD server, later nfsgw) drives.
 *
 * Every call is made on the loop thread and completes by calling cb(arg, res) on the loop
 * thread, exactly once, with 0 or a negative errno; never before the call returns
 * (implementations defer an immediate result). Buffers stay owned by the caller until cb.
 * A write completed with BDEV_FUA, and every write completed before a flush completes, is
 * durable on every in-sync replica.
 */
#ifndef BLOCKD_BDEV_H
#define BLOCKD_BDEV_H

#include <stdbool.h>
#include <stdint.h>

#define BDEV_FUA 1u

typedef void (*bdev_cb)(void *arg, int res);

struct bdev_ops {
	int (*read)(void *ctx, uint64_t off, uint32_t len, void *buf, bdev_cb cb, void *arg);
	int (*write)(void *ctx, uint64_t off, uint32_t len, const void *buf, uint32_t flags,
		     bdev_cb cb, void *arg);
	int (*flush)(void *ctx, bdev_cb cb, void *arg);
	/* zero=false: discard; zero=true: reads return zeros afterwards. */
	int (*trim)(void *ctx, uint64_t off, uint64_t len, bool zero, uint32_t flags, bdev_cb cb,
		    void *arg);
	uint64_t (*size)(void *ctx);
};

struct bdev {
	const struct bdev_ops *ops;
	void *ctx;
};

#endif

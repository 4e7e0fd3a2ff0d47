# blockd build. `make` builds, `make test` runs every test under ASan+UBSan,
# `make bench` runs the benchmarks, `make deps` installs the Debian packages.
CC ?= cc
SAN ?= 0
ifeq ($(SAN),1)
BUILD ?= build-san
SANFLAGS = -fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=undefined
else
BUILD ?= build
SANFLAGS =
endif

PKGS = liburing libxxhash jansson libmicrohttpd inih libnfs
CFLAGS ?= -O2 -g
CFLAGS += -std=c11 -D_GNU_SOURCE -Wall -Wextra -Werror -pthread -MMD -MP $(SANFLAGS) \
	  -I. $(shell pkg-config --cflags $(PKGS) 2>/dev/null)
LDLIBS = $(shell pkg-config --libs $(PKGS) 2>/dev/null) -lpthread
LDFLAGS += $(SANFLAGS)

REPLICA_SRC = $(wildcard replica/*.c)
BLOCKD_LIB_SRC = $(filter-out blockd/main.c,$(wildcard blockd/*.c))
TOOLS_LIB_SRC = $(wildcard tools/lib/*.c)
NFSGW_LIB_SRC = $(filter-out nfsgw/main.c,$(wildcard nfsgw/*.c))
BLOCKCTL_SRC = $(wildcard tools/blockctl/*.c)
UNIT_SRC = $(wildcard tests/unit/test_*.c)
TESTTOOL_SRC = $(wildcard tests/tools/*.c)

# Objects live under obj/ so that $(BUILD)/blockd can be the daemon, not a directory of objects.
obj = $(patsubst %.c,$(BUILD)/obj/%.o,$(1))

LIBREPLICA = $(BUILD)/libreplica.a
LIBBLOCKD = $(BUILD)/libblockd.a
LIBTOOLS = $(BUILD)/libtools.a
LIBNFSGW = $(BUILD)/libnfsgw.a
NFSGW = $(BUILD)/nfsgw
BLOCKD = $(BUILD)/blockd
# Earlier builds kept blockd/*.o in a directory of that name: clear it out of the way.
$(shell [ -d $(BLOCKD) ] && rm -rf $(BLOCKD))
BLOCKCTL = $(BUILD)/blockctl
UNIT_BINS = $(patsubst tests/unit/%.c,$(BUILD)/tests/%,$(UNIT_SRC))
TESTTOOL_BINS = $(patsubst tests/tools/%.c,$(BUILD)/tests/%,$(TESTTOOL_SRC))

.PHONY: all test unit e2e bench deps clean format
all: $(BLOCKD) $(BLOCKCTL) $(if $(wildcard nfsgw/main.c),$(NFSGW)) $(TESTTOOL_BINS)

$(BUILD)/obj/%.o: %.c
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -c $< -o $@

$(LIBREPLICA): $(call obj,$(REPLICA_SRC))
	@mkdir -p $(dir $@)
	rm -f $@; ar rcs $@ $^
$(LIBBLOCKD): $(call obj,$(BLOCKD_LIB_SRC))
	@mkdir -p $(dir $@)
	rm -f $@; ar rcs $@ $^
$(LIBTOOLS): $(call obj,$(TOOLS_LIB_SRC))
	@mkdir -p $(dir $@)
	rm -f $@; ar rcs $@ $^
$(LIBNFSGW): $(call obj,$(NFSGW_LIB_SRC))
	@mkdir -p $(dir $@)
	rm -f $@; ar rcs $@ $^

$(BLOCKD): $(call obj,blockd/main.c) $(LIBBLOCKD) $(LIBREPLICA)
	$(CC) $(LDFLAGS) -o $@ $^ $(LDLIBS)
$(BLOCKCTL): $(call obj,$(BLOCKCTL_SRC)) $(LIBTOOLS) $(LIBBLOCKD) $(LIBREPLICA)
	$(CC) $(LDFLAGS) -o $@ $^ $(LDLIBS)
$(NFSGW): $(call obj,nfsgw/main.c) $(LIBNFSGW) $(LIBBLOCKD) $(LIBREPLICA)
	$(CC) $(LDFLAGS) -o $@ $^ $(LDLIBS)
$(BUILD)/tests/%: $(BUILD)/obj/tests/unit/%.o $(LIBNFSGW) $(LIBBLOCKD) $(LIBTOOLS) $(LIBREPLICA)
	@mkdir -p $(dir $@)
	$(CC) $(LDFLAGS) -o $@ $^ $(LDLIBS) -lcmocka
$(BUILD)/tests/%: $(BUILD)/obj/tests/tools/%.o $(LIBNFSGW) $(LIBTOOLS) $(LIBBLOCKD) $(LIBREPLICA)
	@mkdir -p $(dir $@)
	$(CC) $(LDFLAGS) -o $@ $^ $(LDLIBS)

unit: $(UNIT_BINS)

# The README's test command. Everything under ASan+UBSan.
test:
	$(MAKE) SAN=1 all unit
	tests/run.sh build-san

bench: all
	tools/bench/run.sh build
	tools/bench/nfs.sh build

deps:
	tools/deps.sh

format:
	clang-format -i $(REPLICA_SRC) $(wildcard replica/*.h blockd/*.[ch] nfsgw/*.[ch] tools/lib/*.[ch] tools/blockctl/*.[ch] tests/unit/*.c tests/tools/*.c)

clean:
	rm -rf build build-san

-include $(shell find $(BUILD) -name '*.d' 2>/dev/null)

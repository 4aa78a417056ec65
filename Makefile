# dynd — build, test, bench. `make help` lists the targets.
#   make            build the engine library, the `dyn` CLI and tests
#   make deps       install Debian packages and fetch MNIST / Fashion-MNIST into data/
#   make test       deps + build + unit tests + real-data smoke run
#   make bench      benchmarks (ratios measured side by side in one run)
#   make experiments  the paper's MNIST table (long: hours on 2 cores)
#   SAN=1           AddressSanitizer + UBSan build (separate build dir)
#   CC=clang        build with clang
SHELL := /bin/bash
CC ?= cc
SAN ?= 0
O ?= 3
ARCH ?= native

BUILD := build
ifeq ($(SAN),1)
BUILD := build-san
endif
ifneq ($(notdir $(CC)),cc)
BUILD := $(BUILD)-$(notdir $(CC))
endif

PKGS := jansson zlib
PKG_CFLAGS := $(shell pkg-config --cflags $(PKGS) 2>/dev/null)
PKG_LIBS := $(shell pkg-config --libs $(PKGS) 2>/dev/null)
# OpenBLAS built on OpenMP (Debian libopenblas-openmp-dev), so BLAS and our own OpenMP kernels
# share one thread pool: with the pthread build the two pools fight for the cores and spin
# (measured 3x slower LeNet-5 training on 2 cores).
BLAS_DIR ?= /usr/lib/x86_64-linux-gnu/openblas-openmp
BLAS_INC ?= /usr/include/x86_64-linux-gnu/openblas-openmp
PKG_CFLAGS += -I$(BLAS_INC)
PKG_LIBS += -L$(BLAS_DIR) -Wl,-rpath,$(BLAS_DIR) -lopenblas

CFLAGS := -std=c17 -D_GNU_SOURCE -O$(O) -g -Wall -Wextra -Werror -fopenmp -march=$(ARCH) \
          -MMD -MP $(PKG_CFLAGS) -Iengine
LDFLAGS := -fopenmp
LDLIBS := $(PKG_LIBS) -lm -lpthread
ifeq ($(SAN),1)
CFLAGS += -fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=undefined
LDFLAGS += -fsanitize=address,undefined
endif

ENGINE_SRC := $(wildcard engine/*.c engine/ops/*.c engine/dyn/*.c engine/io/*.c engine/cpu/*.c)
ENGINE_OBJ := $(ENGINE_SRC:%.c=$(BUILD)/%.o)
CLI_SRC := $(wildcard engine/cli/*.c)
CLI_OBJ := $(CLI_SRC:%.c=$(BUILD)/%.o)
TEST_SRC := $(wildcard tests/unit/test_*.c)
TEST_BIN := $(TEST_SRC:tests/unit/%.c=$(BUILD)/tests/%)
TESTUTIL_OBJ := $(BUILD)/tests/unit/testutil.o
BENCH_SRC := $(wildcard tests/bench/bench_*.c)
BENCH_BIN := $(BENCH_SRC:tests/bench/%.c=$(BUILD)/bench/%)

.SECONDARY:
.PHONY: all deps data test unit smoke bench experiments clean help run
all: $(BUILD)/libdyn.a $(BUILD)/dyn $(TEST_BIN) $(BENCH_BIN)

$(BUILD)/%.o: %.c
	@mkdir -p $(dir $@)
	@echo "CC $<"
	@$(CC) $(CFLAGS) -c $< -o $@

$(BUILD)/libdyn.a: $(ENGINE_OBJ)
	@mkdir -p $(dir $@)
	@rm -f $@ && ar rcs $@ $^

$(BUILD)/dyn: $(CLI_OBJ) $(BUILD)/libdyn.a
	$(CC) $(LDFLAGS) $^ -o $@ $(LDLIBS)

$(BUILD)/tests/%: $(BUILD)/tests/unit/%.o $(TESTUTIL_OBJ) $(BUILD)/libdyn.a
	@mkdir -p $(dir $@)
	$(CC) $(LDFLAGS) $^ -o $@ $(LDLIBS) $(shell pkg-config --libs check)

$(BUILD)/bench/%: $(BUILD)/tests/bench/%.o $(BUILD)/libdyn.a
	@mkdir -p $(dir $@)
	$(CC) $(LDFLAGS) $^ -o $@ $(LDLIBS)

deps:
	./tests/deps.sh

data:
	./tests/data.sh

# Unit tests first (fast, no data needed), then the real-data smoke run.
test: deps
	$(MAKE) all
	$(MAKE) unit
	$(MAKE) smoke

unit: $(TEST_BIN)
	@fail=0; for t in $(TEST_BIN); do echo "== $$t"; CK_DEFAULT_TIMEOUT=600 $$t || fail=1; done; \
	  if [ $$fail -ne 0 ]; then echo "UNIT TESTS FAILED"; exit 1; fi; echo "all unit tests passed"

smoke: $(BUILD)/dyn
	./tests/smoke.sh $(BUILD)/dyn

bench: $(BENCH_BIN)
	@for b in $(BENCH_BIN); do $$b || exit 1; done

experiments: $(BUILD)/dyn
	./tests/experiments/run.sh $(BUILD)/dyn

clean:
	rm -rf build build-*

help:
	@sed -n '1,10p' Makefile

-include $(ENGINE_OBJ:.o=.d) $(CLI_OBJ:.o=.d) $(TEST_BIN:$(BUILD)/tests/%=$(BUILD)/tests/unit/%.d)

# attnbench — build everything.
#   make              build/attnbench (CPU; CUDA too when nvcc is found)
#   make test         Criterion suite + CLI/kill tests (the CI command)
#   make figures      figures from RESULTS (default results/quick.h5)
#   make SAN=1 test   the same under ASan + UBSan (objects in build-san/)
#   make CUDA=no|yes|auto   WERROR=1 turns warnings into errors
#   make V=1          show full commands
#   make format      apply .clang-format (clang-format 14)
#   make clean
.SUFFIXES:
.DEFAULT_GOAL := all

CC      ?= gcc
ifeq ($(origin CC),default)
CC      := gcc
endif
# -mprefer-vector-width=512: on AVX-512 CPUs GCC otherwise auto-vectorises
# with 256-bit registers; loops left to the compiler (the methods' element
# passes) then run at half width. Same results (no reassociation, no
# contraction under -std=c11); ignored without AVX-512. docs/selectors.md.
OPT     ?= -O3 -march=native -mprefer-vector-width=512
CUDA    ?= auto
SAN     ?= 0
WERROR  ?= 0
NVCC    ?= nvcc
CUDA_ARCH ?= 80 90
RESULTS ?= results/quick.h5
V       ?= 0
comma   := ,
Q       := $(if $(filter 1,$(V)),,@)
FIGDIR  ?= $(basename $(RESULTS))

ifeq ($(SAN),1)
BUILD   ?= build-san
OPT     := -O1 -g -fno-omit-frame-pointer
SANFLAGS := -fsanitize=address,undefined -fno-sanitize-recover=undefined
else
BUILD   ?= build
SANFLAGS :=
endif

PKGS    := hdf5 openblas inih sleef
PKG_CFLAGS := $(shell pkg-config --cflags $(PKGS) 2>/dev/null)
PKG_LIBS   := $(shell pkg-config --libs $(PKGS) 2>/dev/null)
CRIT_CFLAGS := $(shell pkg-config --cflags criterion 2>/dev/null)
CRIT_LIBS   := $(shell pkg-config --libs criterion 2>/dev/null || echo -lcriterion)

WARN    := -Wall -Wextra -Wshadow -Wno-unused-parameter
ifeq ($(WERROR),1)
WARN    += -Werror
endif
GIT_SHA := $(shell git rev-parse --short=12 HEAD 2>/dev/null || echo unknown)$(shell git diff --quiet HEAD 2>/dev/null || echo -dirty)
CPPFLAGS += -Iinclude -I. -D_GNU_SOURCE -DAB_BUILD_FLAGS='"$(strip $(OPT) $(SANFLAGS))"'
CFLAGS  ?=
CFLAGS  += -std=c11 $(OPT) $(WARN) -fopenmp -MMD -MP $(SANFLAGS) $(PKG_CFLAGS)
LDLIBS  += $(PKG_LIBS) -lm -fopenmp $(SANFLAGS)

# ---- CUDA detection ------------------------------------------------------
NVCC_PATH := $(shell command -v $(NVCC) 2>/dev/null)
ifeq ($(CUDA),auto)
  HAVE_CUDA := $(if $(NVCC_PATH),yes,no)
else
  HAVE_CUDA := $(CUDA)
endif
ifeq ($(HAVE_CUDA),yes)
  ifeq ($(NVCC_PATH),)
    $(error CUDA=yes but $(NVCC) was not found on PATH)
  endif
  CUDA_HOME ?= $(patsubst %/bin/,%,$(dir $(NVCC_PATH)))
  CU_SRCS  := $(wildcard kernels/cuda/*.cu)
  CU_OBJS  := $(CU_SRCS:%.cu=$(BUILD)/%.o)
  CPPFLAGS += -DAB_HAVE_CUDA=1
  LDLIBS   += -L$(CUDA_HOME)/lib64 -Wl,-rpath,$(CUDA_HOME)/lib64 -lcudart -lstdc++
  NVFLAGS  := -O3 -std=c++17 $(foreach a,$(CUDA_ARCH),-gencode arch=compute_$(a),code=sm_$(a)) \
              -Iinclude -I. -Xcompiler -Wall,-Wextra$(if $(filter 1,$(WERROR)),$(comma)-Werror) -MMD -MP
else
  CU_OBJS  :=
endif

# ---- sources ---------------------------------------------------------------
# Layers, lowest first (docs/architecture.md): include/ (the ABI), kernels/,
# runtime/, the plugins (methods/, masks/, datasets/), then harness/store,
# engine, report and cli. scripts/check_layers.sh enforces the order.
HARNESS_SRCS := $(filter-out harness/cli/main.c,$(wildcard harness/*/*.c))
RUNTIME_SRCS := $(wildcard runtime/*.c)
KERNEL_SRCS  := $(wildcard kernels/cpu/*.c) $(wildcard kernels/*.c)
METHOD_SRCS  := $(wildcard methods/*.c)
TASK_SRCS    := $(wildcard datasets/tasks/*.c)
GENR_SRCS    := $(wildcard datasets/gen/*.c)
MASK_SRCS    := $(wildcard masks/*.c)
GEN_SRCS     := $(BUILD)/gen/registry.c
LIB_SRCS     := $(HARNESS_SRCS) $(RUNTIME_SRCS) $(KERNEL_SRCS) $(METHOD_SRCS) $(TASK_SRCS) $(GENR_SRCS) $(MASK_SRCS)
LIB_OBJS     := $(LIB_SRCS:%.c=$(BUILD)/%.o) $(BUILD)/gen/registry.o $(CU_OBJS)
TEST_SRCS    := $(wildcard tests/test_*.c)
TEST_OBJS    := $(TEST_SRCS:%.c=$(BUILD)/%.o)
FIXTURE_SRCS := $(wildcard tests/fixtures/*.c)
FIXTURE_OBJS := $(FIXTURE_SRCS:%.c=$(BUILD)/%.o)

BIN   := $(BUILD)/attnbench
TBIN  := $(BUILD)/attnbench_tests

.PHONY: all test test-layers test-unit test-cli figures clean summary check-cuda bench format
all: summary $(BIN)

summary:
	@echo "attnbench: cc=$(CC) opt='$(OPT)' cuda=$(HAVE_CUDA)$(if $(NVCC_PATH), ($(NVCC_PATH)),) san=$(SAN) werror=$(WERROR) hdf5=$(shell pkg-config --modversion hdf5 2>/dev/null || echo MISSING) openblas=$(shell pkg-config --modversion openblas 2>/dev/null || echo MISSING) criterion=$(shell pkg-config --modversion criterion 2>/dev/null || echo MISSING) build=$(BUILD)/"

# Rebuild everything when flags change.
FLAGS_LINE := $(CC) $(CPPFLAGS) $(CFLAGS) $(LDLIBS) $(HAVE_CUDA) $(NVFLAGS)
$(BUILD)/.flags: FORCE
	@mkdir -p $(BUILD)
	@echo '$(FLAGS_LINE)' | cmp -s - $@ || echo '$(FLAGS_LINE)' > $@
FORCE:
# The commit goes into sysinfo.o only, so a commit does not rebuild everything.
$(BUILD)/.gitsha: FORCE
	@mkdir -p $(BUILD)
	@echo '$(GIT_SHA)' | cmp -s - $@ || echo '$(GIT_SHA)' > $@
$(BUILD)/harness/engine/sysinfo.o: $(BUILD)/.gitsha
$(BUILD)/harness/engine/sysinfo.o: CPPFLAGS += -DAB_GIT_SHA='"$(GIT_SHA)"'

# The registries: one line per AB_REGISTER(...) in methods/,
# AB_REGISTER_TASK(...) in datasets/tasks/ and AB_REGISTER_MASK(...) in masks/,
# in file-name order.
# The list of plugin files is a prerequisite too, so a renamed or removed
# plugin (same mtime) regenerates the registry.
REG_INPUTS := $(METHOD_SRCS) | $(TASK_SRCS) | $(MASK_SRCS)
$(BUILD)/gen/.inputs: FORCE
	@mkdir -p $(dir $@)
	@echo '$(REG_INPUTS)' | cmp -s - $@ || echo '$(REG_INPUTS)' > $@
$(BUILD)/gen/registry.c: $(METHOD_SRCS) $(TASK_SRCS) $(MASK_SRCS) scripts/gen_registry.sh $(BUILD)/gen/.inputs | $(BUILD)/.flags
	@mkdir -p $(dir $@)
	@sh scripts/gen_registry.sh "$(METHOD_SRCS)" "$(TASK_SRCS)" "$(MASK_SRCS)" > $@.tmp && mv $@.tmp $@

$(BUILD)/%.o: %.c $(BUILD)/.flags
	@mkdir -p $(dir $@)
	@echo '  CC    $<'
	$(Q)$(CC) $(CPPFLAGS) $(CFLAGS) -c $< -o $@

$(BUILD)/gen/registry.o: $(BUILD)/gen/registry.c $(BUILD)/.flags
	@echo '  CC    $<'
	$(Q)$(CC) $(CPPFLAGS) $(CFLAGS) -c $< -o $@

$(BUILD)/kernels/cuda/%.o: kernels/cuda/%.cu $(BUILD)/.flags
	@mkdir -p $(dir $@)
	@echo '  NVCC  $<'
	$(Q)$(NVCC) $(NVFLAGS) $(CPPFLAGS) -c $< -o $@

$(BIN): $(BUILD)/harness/cli/main.o $(LIB_OBJS)
	@echo '  LD    $@'
	$(Q)$(CC) $^ -o $@ $(LDFLAGS) $(LDLIBS)

$(TBIN): $(TEST_OBJS) $(FIXTURE_OBJS) $(LIB_OBJS)
	@echo '  LD    $@'
	$(Q)$(CC) $^ -o $@ $(LDFLAGS) $(LDLIBS) $(CRIT_LIBS)

$(TEST_OBJS): CFLAGS += $(CRIT_CFLAGS)

# ---- tests -----------------------------------------------------------------
# Criterion runs each test in its own process; -j2 matches this machine.
test: test-layers test-unit test-cli test-check
# OMP_WAIT_POLICY=passive: two test processes x 2 threads on 2 cores must
# not spin-wait against each other.
TEST_ENV := AB_BIN=$(abspath $(BIN)) OMP_WAIT_POLICY=passive LSAN_OPTIONS=suppressions=$(abspath tests/lsan.supp)
# the sanitizer build re-derives the selectors on a smaller grid (tests/rederive/rederive.py)
ifeq ($(SAN),1)
TEST_ENV += RD_QUICK=1
endif
test-unit: $(TBIN) $(BIN)
	$(TEST_ENV) $(TBIN) -j2 --short-filename
# The folder layering of docs/architecture.md (who may include whom, and
# only runtime/ defines ABI functions).
test-layers:
	@sh scripts/check_layers.sh
test-cli: $(BIN)
	@for t in tests/cli_*.sh; do [ -f "$$t" ] || continue; \
	  echo "== $$t"; $(TEST_ENV) bash "$$t" || exit 1; done

figures: $(BIN)
	$(BIN) plot $(RESULTS) -d $(FIGDIR)

# Compile the CUDA sources even without a GPU (CI does this when nvcc exists).
check-cuda:
	$(MAKE) CUDA=yes WERROR=1 $(BIN)

# The checked-in .clang-format over every tracked C/CUDA source.
format:
	@command -v clang-format >/dev/null || { echo "make format: clang-format not found (apt-get install clang-format)"; exit 2; }
	git ls-files '*.c' '*.h' '*.cu' | xargs clang-format -i

clean:
	rm -rf build build-san

# Feature makefiles (bench, fuzz, figures checks, ...): one per concern.
-include $(sort $(wildcard mk/*.mk))

-include $(shell find $(BUILD) -name '*.d' 2>/dev/null)

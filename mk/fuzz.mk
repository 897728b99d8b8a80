# mk/fuzz.mk — libFuzzer targets (fuzz/*.c) for the config parser/validator,
# the `run` argument parser and the results/journal loaders.
#   make fuzz                   build them and run each for FUZZ_SECONDS (60)
#   make fuzz FUZZ_SECONDS=600  one after another, each on its own corpus
#   make fuzz-build             just build $(FUZZ_DIR)/fuzz_*
# The whole library is rebuilt with clang under ASan + UBSan + fuzzer
# coverage into $(FUZZ_DIR) (default build-fuzz/). Seed corpora live in
# fuzz/corpus/TARGET/ (committed); new inputs go to $(FUZZ_DIR)/corpus/TARGET
# and crash inputs to $(FUZZ_DIR)/crash-TARGET-*: copy each into
# tests/fuzz_regressions/TARGET/ so `make test` replays it.
# Needs Debian's clang and libclang-rt-14-dev (installed here when missing
# and running as root).
# fuzz_results: libhdf5 1.10 crashes on many damaged files; attnbench parses
# HDF5 in a forked child (harness/store/store.c) and reports such a file as
# damaged. libFuzzer's crash handler still runs in that child and writes a
# crash-results-* file while the fuzzer itself goes on: replay it with
# `$(FUZZ_DIR)/fuzz_results FILE`; "Executed FILE" at the end means the
# caller survived (a contained libhdf5 bug), anything else is ours to fix.
FUZZ_CC      ?= clang
FUZZ_SECONDS ?= 60
FUZZ_DIR     ?= build-fuzz
FUZZ_SAN     := -fsanitize=address,undefined -fno-sanitize-recover=undefined
FUZZ_CFLAGS  := -std=c11 -O1 -g -fno-omit-frame-pointer -fopenmp $(PKG_CFLAGS) -Wall -Wextra -Wno-unused-parameter \
                $(FUZZ_SAN) -fsanitize=fuzzer-no-link
FUZZ_CPPFLAGS := -Iinclude -I. -D_GNU_SOURCE -DAB_BUILD_FLAGS='"fuzz"'
FUZZ_LIB_SRCS := $(filter-out $(GEN_SRCS),$(LIB_SRCS))
FUZZ_LIB_OBJS := $(FUZZ_LIB_SRCS:%.c=$(FUZZ_DIR)/%.o) $(FUZZ_DIR)/gen/registry.o
FUZZ_SRCS    := $(wildcard fuzz/fuzz_*.c)
FUZZ_BINS    := $(FUZZ_SRCS:fuzz/%.c=$(FUZZ_DIR)/%)
FUZZ_TARGETS := $(FUZZ_SRCS:fuzz/fuzz_%.c=%)

.PHONY: fuzz fuzz-build fuzz-deps
fuzz-deps:
	@command -v $(FUZZ_CC) >/dev/null 2>&1 && echo 'int LLVMFuzzerTestOneInput(const char*d,unsigned long n){return 0;}' | \
	  $(FUZZ_CC) -x c - -fsanitize=fuzzer -o /dev/null 2>/dev/null || { \
	  if [ "$$(id -u)" = 0 ]; then DEBIAN_FRONTEND=noninteractive apt-get install -y -qq clang libclang-rt-14-dev >/dev/null; \
	  else echo "fuzz: needs clang with libFuzzer: apt-get install clang libclang-rt-14-dev" >&2; exit 1; fi; }

fuzz-build: fuzz-deps $(FUZZ_BINS)

$(FUZZ_DIR)/gen/registry.c: $(METHOD_SRCS) $(TASK_SRCS) $(MASK_SRCS) scripts/gen_registry.sh
	@mkdir -p $(dir $@)
	@sh scripts/gen_registry.sh "$(METHOD_SRCS)" "$(TASK_SRCS)" "$(MASK_SRCS)" > $@.tmp && mv $@.tmp $@

$(FUZZ_DIR)/%.o: %.c
	@mkdir -p $(dir $@)
	@echo '  FUZZCC $<'
	$(Q)$(FUZZ_CC) $(FUZZ_CPPFLAGS) $(FUZZ_CFLAGS) -MMD -MP -c $< -o $@

$(FUZZ_DIR)/gen/registry.o: $(FUZZ_DIR)/gen/registry.c
	$(Q)$(FUZZ_CC) $(FUZZ_CPPFLAGS) $(FUZZ_CFLAGS) -c $< -o $@

$(FUZZ_DIR)/fuzz_%: $(FUZZ_DIR)/fuzz/fuzz_%.o $(FUZZ_LIB_OBJS)
	@echo '  FUZZLD $@'
	$(Q)$(FUZZ_CC) $^ -o $@ $(FUZZ_SAN) -fsanitize=fuzzer -fopenmp $(PKG_LIBS) -lm

# One target after another (the machine is shared): each gets FUZZ_SECONDS.
fuzz: fuzz-build
	@for t in $(FUZZ_TARGETS); do \
	  mkdir -p $(FUZZ_DIR)/corpus/$$t; \
	  echo "== fuzz $$t for $(FUZZ_SECONDS) s"; \
	  ASAN_OPTIONS=detect_leaks=1:allocator_may_return_null=1:fast_unwind_on_malloc=0 LSAN_OPTIONS=suppressions=$(abspath fuzz/lsan.supp) AB_H5_READ_TIMEOUT_S=5 \
	  $(FUZZ_DIR)/fuzz_$$t $(FUZZ_DIR)/corpus/$$t fuzz/corpus/$$t -max_total_time=$(FUZZ_SECONDS) \
	    -max_len=65536 -rss_limit_mb=4096 -timeout=20 -close_fd_mask=3 -print_final_stats=1 \
	    -artifact_prefix=$(FUZZ_DIR)/crash-$$t- </dev/null || exit 1; \
	done

-include $(shell find $(FUZZ_DIR) -name '*.d' 2>/dev/null)
.SECONDARY: $(FUZZ_LIB_OBJS) $(FUZZ_SRCS:%.c=$(FUZZ_DIR)/%.o)
# clang ignores `#pragma GCC target`: give the ISA-specific kernels their
# flags on the command line (they are only called after a CPUID check).
$(FUZZ_DIR)/kernels/cpu/simd_avx2.o: FUZZ_CFLAGS += -mavx2 -mfma
$(FUZZ_DIR)/kernels/cpu/simd_avx512.o: FUZZ_CFLAGS += -mavx512f -mfma -mavx512bw -mavx512vl -mavx512bf16 -mamx-tile -mamx-bf16

.PHONY: fuzz-clean
clean: fuzz-clean
fuzz-clean:
	rm -rf $(FUZZ_DIR)

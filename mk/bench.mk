# mk/bench.mk — `make bench`: speed of the CPU kernels against the OpenBLAS
# SGEMM roofline, the sparse kernels against flash, and (when PyTorch is in
# build/venv) torch SDPA, all also as fractions of the measured fp32 FMA
# peak; writes $(BENCH_OUT)/*.tsv (peak.tsv: the peak; chunk.tsv: the chunk step
# alone in cache, the kernels' ceiling; sparse.tsv and peer.tsv: the sparse
# kernels and SDPA against flash, timed in rounds with it) and roofline.png.
# SDPA runs in a child process (bench/sdpa_peer.py --serve) that times one
# call per request, so flash and SDPA alternate seconds apart.
#   make bench                 full grid: N = 1K..32K, d = 64,128, 1 and 2 threads
#   make bench BENCH_QUICK=1   N = 1K..4K, shorter repeats (CI-size)
#   make bench BENCH_ARGS='--n 4096 --d 128'   any kernels_bench option
#   make bench BENCH_METHODS=0    the kernels only (else bench-methods follows, below)
# The PyTorch peer: python3 -m venv build/venv && build/venv/bin/pip install torch
# (never needed by `make test`). See docs/kernels.md.
BENCH_BIN   := $(BUILD)/bench/kernels_bench
BENCH_OUT   ?= results/bench
BENCH_QUICK ?= 0
BENCH_ARGS  ?=
BENCH_PY    ?= build/venv/bin/python
BENCH_METHODS ?= 1
BENCH_FLAGS := $(if $(filter 1,$(BENCH_QUICK)),--quick,) $(BENCH_ARGS)

# Only the CPU kernels are linked, plus harness/engine/blascore.o (OpenBLAS core
# selection; libc and OpenBLAS only): the bench does not depend on the rest
# of the harness.
BENCH_OBJS  := $(BUILD)/bench/kernels_bench.o $(BUILD)/harness/engine/blascore.o \
               $(filter $(BUILD)/kernels/cpu/% $(BUILD)/masks/% $(BUILD)/runtime/layout.o $(BUILD)/runtime/errors.o $(BUILD)/runtime/mask.o $(BUILD)/runtime/kernels.o $(BUILD)/runtime/handle.o,$(LIB_OBJS))

$(BENCH_BIN): $(BENCH_OBJS)
	@echo '  LD    $@'
	$(Q)$(CC) $^ -o $@ $(LDFLAGS) $(LDLIBS)

bench: $(BENCH_BIN)
	@mkdir -p $(BENCH_OUT)
	@rm -f $(BENCH_OUT)/sdpa.tsv $(BENCH_OUT)/peer.tsv
	@set --; if [ -x "$(BENCH_PY)" ] && "$(BENCH_PY)" -c 'import torch' 2>/dev/null; then \
	  set -- --sdpa-serve 'OMP_WAIT_POLICY=passive $(BENCH_PY) bench/sdpa_peer.py --serve'; \
	else echo "bench: no PyTorch in $(BENCH_PY): SDPA peer skipped"; fi; \
	set -x; OMP_WAIT_POLICY=passive $(BENCH_BIN) $(BENCH_FLAGS) --out $(BENCH_OUT) "$$@"
	@if command -v gnuplot >/dev/null; then \
	  gnuplot -e "dir='$(BENCH_OUT)'" bench/roofline.gp && echo "bench: wrote $(BENCH_OUT)/roofline.png"; \
	else echo "bench: no gnuplot: roofline.png skipped"; fi
	@if [ "$(BENCH_QUICK)" != 1 ]; then $(MAKE) --no-print-directory bench-decode; \
	else echo "bench: decode bandwidth skipped (BENCH_QUICK=1; make bench-decode runs it)"; fi
	@if [ "$(BENCH_QUICK)" != 1 ] && [ "$(BENCH_METHODS)" != 0 ]; then $(MAKE) --no-print-directory bench-methods; \
	else echo "bench: methods table skipped (BENCH_QUICK=1 or BENCH_METHODS=0; make bench-methods runs it)"; fi

# `make bench-masks`: dense flash (and block-sparse at 10%) under every base
# mask against causal, with the ideal ratio (allowed pairs); bench/masks_bench.c.
#   make bench-masks MASKS_BENCH_ARGS='--n 16384 --d 64 --heads 8 --threads 2'
MASKS_BENCH_BIN  := $(BUILD)/bench/masks_bench
MASKS_BENCH_ARGS ?=

$(MASKS_BENCH_BIN): $(BUILD)/bench/masks_bench.o $(LIB_OBJS)
	@echo '  LD    $@'
	$(Q)$(CC) $^ -o $@ $(LDFLAGS) $(LDLIBS)

.PHONY: bench-masks
bench-masks: $(MASKS_BENCH_BIN)
	@mkdir -p $(BENCH_OUT)
	OMP_WAIT_POLICY=passive $(MASKS_BENCH_BIN) --out $(BENCH_OUT)/masks.tsv $(MASKS_BENCH_ARGS)

# `make bench-methods`: every registered method at the speed issue's shape
# (configs/speed.ini: N = 16K, H = 4, d = 64, causal, needle, density 0.1,
# timed and paired with dense), then the figures and the table of
# selectors.tsv: select / dense against the bound each select() states,
# run / dense against the density, the paired speedup (docs/selectors.md).
# `make bench` runs it after the kernels.
#   make bench-methods SPEED_ARGS='--methods xattention,hip --threads 1'
SPEED_CONFIG ?= configs/speed.ini
SPEED_OUT    ?= $(BENCH_OUT)/methods
SPEED_ARGS   ?=

.PHONY: bench-methods bench-kernels
bench-methods: $(BIN)
	@mkdir -p $(SPEED_OUT)
	OMP_WAIT_POLICY=passive $(BIN) run -c $(SPEED_CONFIG) -o $(SPEED_OUT)/speed.h5 $(SPEED_ARGS) || [ $$? -eq 1 ]
	@if command -v gnuplot >/dev/null; then $(BIN) plot $(SPEED_OUT)/speed.h5 -d $(SPEED_OUT) --no-gallery; \
	else $(BIN) export $(SPEED_OUT)/speed.h5 -d $(SPEED_OUT); fi
	@scripts/selectors_table.sh $(SPEED_OUT)/selectors.tsv | tee $(SPEED_OUT)/selectors.txt

# `make bench-decode`: STREAM triad bandwidth at 1 and 2 threads, then the
# decode kernel (dense, d = 128, N = 16K..512K, H = 1 and 8, kv_heads = 1 and
# 8, HEADS / SPLITK / LEAN) as GB/s and a fraction of the triad;
# bench/decode_bench.c, $(BENCH_OUT)/triad.tsv and decode.tsv (about a
# minute). `make bench` runs it unless BENCH_QUICK=1.
#   make bench-decode DECODE_BENCH_ARGS='--n 65536 --threads 1,2'
DECODE_BENCH_BIN  := $(BUILD)/bench/decode_bench
DECODE_BENCH_ARGS ?=
DECODE_BENCH_OBJS := $(BUILD)/bench/decode_bench.o \
               $(filter $(BUILD)/kernels/cpu/% $(BUILD)/masks/% $(BUILD)/runtime/layout.o $(BUILD)/runtime/errors.o $(BUILD)/runtime/mask.o $(BUILD)/runtime/kernels.o $(BUILD)/runtime/handle.o,$(LIB_OBJS))

$(DECODE_BENCH_BIN): $(DECODE_BENCH_OBJS)
	@echo '  LD    $@'
	$(Q)$(CC) $^ -o $@ $(LDFLAGS) $(LDLIBS)

.PHONY: bench-decode
bench-decode: $(DECODE_BENCH_BIN)
	@mkdir -p $(BENCH_OUT)
	OMP_WAIT_POLICY=passive $(DECODE_BENCH_BIN) $(if $(filter 1,$(BENCH_QUICK)),--quick,) --out $(BENCH_OUT) $(DECODE_BENCH_ARGS)

# `make bench-ab AB_METHOD=pbs [AB_REV=HEAD] [AB_ARGS='select 16384 4 64 20 KNOB']`:
# one method's select() (or `run ...`) from two builds in one process
# (bench/method_ab.c): methods/$(AB_METHOD).c with every methods/*.h as at git
# revision AB_REV ("old") against the work tree's ("new"), the calls
# alternated, the order swapped every pair; prints the layout hashes (and the
# outputs' equality for run), then new / old per pair: median, p10, p90.
# Exit 3 when the layouts or outputs differ. Only methods/ differs between
# the two builds: the kernels, the runtime and attnbench.h are the work
# tree's. AB_ARGS: select|run N H D PAIRS [KNOB|-] [causal|full]; the
# method's registered symbol is ab_$(AB_METHOD) unless AB_SYM says otherwise.
AB_METHOD ?=
AB_REV    ?= HEAD
AB_ARGS   ?= select 16384 4 64 20
AB_SYM    ?= ab_$(AB_METHOD)
AB_DIR    := $(BUILD)/ab

.PHONY: bench-ab
bench-ab: $(LIB_OBJS) $(BUILD)/bench/method_ab.o
	@if [ -z "$(AB_METHOD)" ] || [ ! -f methods/$(AB_METHOD).c ]; then \
	  echo "bench-ab: AB_METHOD must name a file of methods/ (make bench-ab AB_METHOD=pbs)" >&2; exit 2; fi
	@rm -rf $(AB_DIR) && mkdir -p $(AB_DIR)/old
	@git archive "$(AB_REV)" methods | tar -x -C $(AB_DIR)/old || \
	  { echo "bench-ab: cannot read methods/ at revision $(AB_REV)" >&2; exit 2; }
	@if [ ! -f $(AB_DIR)/old/methods/$(AB_METHOD).c ]; then \
	  echo "bench-ab: $(AB_REV) has no methods/$(AB_METHOD).c" >&2; exit 2; fi
	@echo '  CC    $(AB_METHOD) at $(AB_REV) (old), work tree (new)'
	$(Q)$(CC) -I$(AB_DIR)/old $(CPPFLAGS) $(CFLAGS) -D$(AB_SYM)=ab_ab_old -Dab_registered_$(AB_SYM)=ab_ab_reg_old \
	  -c $(AB_DIR)/old/methods/$(AB_METHOD).c -o $(AB_DIR)/old.o
	$(Q)$(CC) $(CPPFLAGS) $(CFLAGS) -D$(AB_SYM)=ab_ab_new -Dab_registered_$(AB_SYM)=ab_ab_reg_new \
	  -c methods/$(AB_METHOD).c -o $(AB_DIR)/new.o
	$(Q)$(CC) $(BUILD)/bench/method_ab.o $(AB_DIR)/old.o $(AB_DIR)/new.o $(LIB_OBJS) -o $(AB_DIR)/method_ab \
	  $(LDFLAGS) $(LDLIBS)
	OMP_WAIT_POLICY=passive $(AB_DIR)/method_ab $(AB_ARGS)

$(BUILD)/bench/method_ab.o: CPPFLAGS += -DAB_OLD=ab_ab_old -DAB_NEW=ab_ab_new

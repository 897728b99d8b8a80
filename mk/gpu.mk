# mk/gpu.mk — the CUDA backend (kernels/cuda, harness/engine/gpu.c; docs/gpu.md).
#   make test-gpu    the GPU Criterion tests (tests/test_gpu.c), then every
#                    kernel under compute-sanitizer when it is installed
#   make bench-gpu   bench/gpu_bench.c: flash, blocksparse at 5/10/20/50%,
#                    gather, cuBLAS and (when torch with CUDA imports)
#                    PyTorch SDPA; TSV + gnuplot figure in $(GPU_BENCH_OUT)
# Both print why and exit 0 on a machine without a usable GPU.
GPU_BENCH_BIN  := $(BUILD)/bench/gpu_bench
GPU_BENCH_OUT  ?= results/gpu_bench
GPU_BENCH_ARGS ?=
GPU_PY         ?= $(if $(wildcard build/venv/bin/python),build/venv/bin/python,python3)
SANITIZER      ?= $(shell command -v compute-sanitizer 2>/dev/null || ls $(CUDA_HOME)/bin/compute-sanitizer 2>/dev/null)

ifeq ($(HAVE_CUDA),yes)
  LDLIBS += -lcublas
  # nvcc's own front-end warnings too, not only the host compiler's
  ifeq ($(WERROR),1)
    NVFLAGS += --Werror all-warnings
  endif
endif

.PHONY: test-gpu bench-gpu

$(GPU_BENCH_BIN): $(BUILD)/bench/gpu_bench.o $(LIB_OBJS)
	@echo '  LD    $@'
	$(Q)$(CC) $^ -o $@ $(LDFLAGS) $(LDLIBS)

# gpu_bench --probe: exit 0 with the device, or 3 with the reason.
# compute-sanitizer cannot follow Criterion's forked test processes ("No
# attachable process found"), so the tests run plain and memcheck watches
# every kernel through gpu_bench on small ragged shapes (N not a multiple of
# the 64-row tile; d = 64 and 128; causal fp16 and full bf16).
SAN_BENCH := --n 1000,2048 --d 64,128 --heads 2 --reps 1 --out $(BUILD)/gpu_memcheck
test-gpu: $(TBIN) $(BIN) $(GPU_BENCH_BIN)
	@if ! $(GPU_BENCH_BIN) --probe; then \
	  echo "test-gpu: skipped (no usable GPU); the GPU tests skip themselves:"; \
	  $(TEST_ENV) $(TBIN) --filter 'gpu/*' --verbose 2>&1 | grep -E '^\[(SKIP|FAIL|PASS)\] gpu::|Synthesis' || true; \
	  exit 0; fi; \
	$(TEST_ENV) $(TBIN) -j1 --filter 'gpu/*' || exit 1; \
	if [ -n "$(SANITIZER)" ]; then \
	  echo "test-gpu: every kernel under $(SANITIZER) (memcheck)"; \
	  $(SANITIZER) --tool memcheck --error-exitcode 1 $(GPU_BENCH_BIN) $(SAN_BENCH) --causal 1 --dtype fp16 >/dev/null && \
	  $(SANITIZER) --tool memcheck --error-exitcode 1 $(GPU_BENCH_BIN) $(SAN_BENCH) --causal 0 --dtype bf16 >/dev/null || exit 1; \
	else \
	  echo "test-gpu: compute-sanitizer not found: memcheck skipped"; \
	fi

bench-gpu: $(GPU_BENCH_BIN)
	@if ! $(GPU_BENCH_BIN) --probe; then echo "bench-gpu: skipped (no usable GPU)"; exit 0; fi; \
	mkdir -p $(GPU_BENCH_OUT); rm -f $(GPU_BENCH_OUT)/sdpa.tsv; \
	if "$(GPU_PY)" -c 'import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)' 2>/dev/null; then \
	  "$(GPU_PY)" bench/sdpa_gpu.py $(GPU_BENCH_ARGS) --out $(GPU_BENCH_OUT)/sdpa.tsv \
	    || echo "bench-gpu: SDPA peer failed (skipped)"; \
	else echo "bench-gpu: no PyTorch with CUDA in $(GPU_PY): SDPA peer skipped"; fi; \
	$(GPU_BENCH_BIN) $(GPU_BENCH_ARGS) --sdpa $(GPU_BENCH_OUT)/sdpa.tsv --out $(GPU_BENCH_OUT) || exit 1; \
	if command -v gnuplot >/dev/null; then \
	  gnuplot -e "dir='$(GPU_BENCH_OUT)'" bench/gpu_bench.gp && echo "bench-gpu: wrote $(GPU_BENCH_OUT)/gpu_bench.png"; \
	else echo "bench-gpu: no gnuplot: figure skipped"; fi

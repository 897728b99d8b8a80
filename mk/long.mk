# mk/long.mk — `make test-long`: the long kill test of issue 9 (50 seeded
# stops: SIGKILL, SIGTERM, SIGINT, each followed by --resume; then the file
# must equal an uninterrupted run), checked in C (tests/test_kill_long.c),
# with h5dump, and with h5py (tests/kill_check_h5py.py; h5py comes from
# PyPI into $(BUILD)/venv-h5py when python3 cannot import it). The short
# kill test stays in `make test`.
KILL_ROUNDS ?= 50
KILL_SEED   ?= 20240901
H5PY_VENV   := $(BUILD)/venv-h5py
.PHONY: test-long
test-long: $(TBIN) $(BIN)
	@rm -f $(BUILD)/kill_long.h5 $(BUILD)/kill_long.h5.ref.h5
	$(TEST_ENV) AB_KILL_ROUNDS=$(KILL_ROUNDS) AB_KILL_SEED=$(KILL_SEED) AB_KILL_KEEP=$(abspath $(BUILD))/kill_long.h5 \
	  $(TBIN) --short-filename --filter 'kill_long/*'
	h5dump -H $(BUILD)/kill_long.h5 >/dev/null && echo "h5dump: $(BUILD)/kill_long.h5 opens"
	@if python3 -c 'import h5py' 2>/dev/null; then py=python3; \
	 else [ -x $(H5PY_VENV)/bin/python ] || python3 -m venv $(H5PY_VENV); \
	   $(H5PY_VENV)/bin/python -c 'import h5py' 2>/dev/null || $(H5PY_VENV)/bin/pip install -q h5py; \
	   py=$(H5PY_VENV)/bin/python; fi; \
	 $$py tests/kill_check_h5py.py $(BUILD)/kill_long.h5 $(BUILD)/kill_long.h5.ref.h5

# `make test-valgrind`: the quick path (run, show, merge) under valgrind
# memcheck, leak check included, on a build without -march=native (valgrind
# 3.19 cannot decode AVX-512) in $(VG_BUILD). Forked children (data, points,
# the HDF5 reader) are checked too; their exit status does not reach ours,
# so the logs are searched for errors. Suppressions: tests/valgrind.supp.
VG_BUILD ?= build-vg
# OPENBLAS_CORETYPE is set so `run` does not re-execute itself (a
# re-executed program would run outside valgrind: children are not traced);
# Haswell: valgrind 3.19 cannot decode OpenBLAS's AVX-512 kernels.
VG := OPENBLAS_CORETYPE=Haswell valgrind --leak-check=full --error-exitcode=1 --trace-children=no --suppressions=$(abspath tests/valgrind.supp)
.PHONY: test-valgrind
test-valgrind:
	$(MAKE) --no-print-directory OPT='-O1 -g' BUILD=$(VG_BUILD) $(VG_BUILD)/attnbench
	@rm -rf $(VG_BUILD)/vg && mkdir -p $(VG_BUILD)/vg
	$(VG) $(VG_BUILD)/attnbench run -c tests/valgrind_tiny.ini -o $(VG_BUILD)/vg/r.h5 -q 2>$(VG_BUILD)/vg/run.log
	$(VG) $(VG_BUILD)/attnbench show $(VG_BUILD)/vg/r.h5 >/dev/null 2>$(VG_BUILD)/vg/show.log
	$(VG) $(VG_BUILD)/attnbench merge $(VG_BUILD)/vg/r.h5 $(VG_BUILD)/vg/r.h5 -o $(VG_BUILD)/vg/m.h5 2>$(VG_BUILD)/vg/merge.log
	@if grep -h 'ERROR SUMMARY: [1-9]' $(VG_BUILD)/vg/*.log; then echo "valgrind: errors, see $(VG_BUILD)/vg/*.log"; exit 1; fi
	@echo "valgrind: run, show, merge clean ($$(grep -h -c 'ERROR SUMMARY: 0' $(VG_BUILD)/vg/*.log | paste -sd+ | bc) processes checked)"
clean: vg-clean
.PHONY: vg-clean
vg-clean:
	rm -rf $(VG_BUILD)

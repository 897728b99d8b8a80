# mk/tasks.mk — `make tasks-bench`: cost of generating a task's data and its
# fp64 reference on the scored rows vs one dense attention pass
# (bench/tasks_bench.c; docs/spec/TASKS.md §5). TASKS_BENCH_ARGS passes options, e.g.
#   make tasks-bench TASKS_BENCH_ARGS='--n 131072 --no-dense'
TASKS_BENCH_BIN  := $(BUILD)/bench/tasks_bench
TASKS_BENCH_ARGS ?=

$(TASKS_BENCH_BIN): $(BUILD)/bench/tasks_bench.o $(LIB_OBJS)
	@echo '  LD    $@'
	$(Q)$(CC) $^ -o $@ $(LDFLAGS) $(LDLIBS)

.PHONY: tasks-bench
tasks-bench: $(TASKS_BENCH_BIN)
	OMP_WAIT_POLICY=passive $(TASKS_BENCH_BIN) $(TASKS_BENCH_ARGS)

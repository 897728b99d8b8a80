# check.mk — `attnbench check --quick` over the whole registry: every method
# against the fp64 reference on its own layout, layout validity, exact
# density (harness/engine/check.c). An extra step of `make test`, no prerequisites
# beyond the binary.
.PHONY: test-check
test-check: $(BIN)
	$(TEST_ENV) $(BIN) check --quick

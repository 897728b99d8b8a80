#!/usr/bin/env python3
"""export_trace.py — attention traces (trace format version 2) from a local
Hugging Face causal LM, for attnbench's `trace` task (docs/traces.md).

  export_trace.py --model DIR (--text FILE | --tokens N) [--layers 0,8,15|all]
      [--heads 0-7|all] [--chunk 2048] [--dtype keep|float32]
      [--needle-depth 0.5 --passkey 68231] [--with-output] -o T.h5

The model runs unchanged, offline, in chunks of --chunk tokens over a KV cache.
A custom attention function registered with transformers' AttentionInterface
sees each layer's query [B, H, n, d] and key/value [B, Hkv, past+n, d] after
the rotary embedding, writes the n new rows of the chosen layers to the HDF5
file, and computes the output with the stock "sdpa" function. Only one
chunk's Q/K/V (and output) of one layer is in memory at a time besides the
model and its KV cache; no attention matrix is kept.

Exit status: 0 written; 2 bad flags, a model that cannot be loaded or traced,
or bad input (the reason on stderr). Needs torch, transformers (>= 4.48),
h5py and numpy (make trace-venv).
"""
import argparse
import hashlib
import json
import os
import sys
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")

FORMAT_VERSION = 2
ATTN_NAME = "attnbench_trace"
SYNTHETIC_MARKER = "attnbench_synthetic"  # a file of this name in the model dir: random weights
NEEDLE = "The pass key is {p}. Remember it. {p} is the pass key."
QUESTION = "What is the pass key? The pass key is"


class ExportError(Exception):
    """A reason to stop with exit status 2."""


def die(msg):
    print(f"export_trace: {msg}", file=sys.stderr)
    sys.exit(2)


def rss_gib():
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / (1 << 20)
    except OSError:
        pass
    return float("nan")


def parse_index_list(spec, n, what):
    """'all', '3', '0,8,15', '0-7', '0-3,8' -> sorted unique ints in [0, n)."""
    if spec == "all":
        return list(range(n))
    out = set()
    for part in spec.split(","):
        part = part.strip()
        if not part:
            raise ExportError(f"--{what} {spec!r}: empty item")
        try:
            if "-" in part:
                a, b = part.split("-", 1)
                lo, hi = int(a), int(b)
                if hi < lo:
                    raise ValueError
                out.update(range(lo, hi + 1))
            else:
                out.add(int(part))
        except ValueError:
            raise ExportError(f"--{what} {spec!r}: want 'all' or a list like 0,8,15 or 0-7") from None
    bad = [i for i in out if i < 0 or i >= n]
    if bad:
        raise ExportError(f"--{what}: {bad[0]} is out of range (the model has {n})")
    return sorted(out)


def build_parser():
    p = argparse.ArgumentParser(
        prog="export_trace.py",
        description="Export the Q, K, V that attention sees (after RoPE) from a local Hugging Face "
        "causal LM to an attnbench trace file (format version 2).")
    p.add_argument("--model", required=True, metavar="DIR", help="local model directory (config.json, weights)")
    p.add_argument("--text", metavar="FILE", help="prompt text, tokenized with the model dir's tokenizer")
    p.add_argument("--tokens", type=int, metavar="N",
                   help="number of tokens: random ids when no --text, else a cap on the prompt")
    p.add_argument("--seed", type=int, default=0, help="seed of the random token ids (default 0)")
    p.add_argument("--layers", default="all", help="layers to store: all, 0,8,15 or 0-3 (default all)")
    p.add_argument("--heads", default="all", help="query heads to store: all, 0-7, 0,3 (default all)")
    p.add_argument("--chunk", type=int, default=2048, help="prefill chunk in tokens (default 2048)")
    p.add_argument("--dtype", choices=["keep", "float32"], default="keep",
                   help="keep: run and store in the model's dtype; float32: run and store in float32")
    p.add_argument("--needle-depth", type=float, metavar="D",
                   help="insert the pass-key sentence at relative depth D in [0, 1] of the text")
    p.add_argument("--passkey", help="the pass key (with --needle-depth)")
    p.add_argument("--with-output", action="store_true",
                   help="also store /layer_L/out, the attention output before o_proj (float32)")
    p.add_argument("--synthetic-weights", action="store_true",
                   help=f"mark the trace synthetic = 1 (randomly initialised weights; "
                   f"also set by a file named {SYNTHETIC_MARKER} in the model dir)")
    p.add_argument("--threads", type=int, help="torch threads (default: torch's)")
    p.add_argument("--quiet", action="store_true", help="no progress lines")
    p.add_argument("-o", "--output", required=True, metavar="T.h5", help="trace file to write")
    return p


def check_args(p, a):
    # --text or --tokens (argparse cannot say "at least one of")
    if a.text is None and a.tokens is None:
        p.error("one of --text FILE or --tokens N is required")
    if a.tokens is not None and a.tokens < 1:
        p.error("--tokens must be >= 1")
    if a.chunk < 1:
        p.error("--chunk must be >= 1")
    if (a.needle_depth is None) != (a.passkey is None):
        p.error("--needle-depth and --passkey go together")
    if a.needle_depth is not None:
        if a.text is None:
            p.error("--needle-depth needs --text (and the model dir's tokenizer)")
        if not 0.0 <= a.needle_depth <= 1.0:
            p.error("--needle-depth must be in [0, 1]")
        if not a.passkey.strip():
            p.error("--passkey must not be empty")
    if a.threads is not None and a.threads < 1:
        p.error("--threads must be >= 1")


def rope_info(config, cfg_json):
    """(rope_theta or None, rope_scaling json string or '')."""
    params = getattr(config, "rope_parameters", None)
    theta = getattr(config, "rope_theta", None)
    if theta is None and isinstance(params, dict):
        theta = params.get("rope_theta")
    if theta is None:
        theta = cfg_json.get("rope_theta")
    if theta is None and isinstance(cfg_json.get("rope_parameters"), dict):
        theta = cfg_json["rope_parameters"].get("rope_theta")
    scaling = cfg_json.get("rope_scaling")
    if scaling is None:
        rp = cfg_json.get("rope_parameters")
        if isinstance(rp, dict) and rp.get("rope_type", "default") != "default":
            scaling = {k: v for k, v in rp.items() if k != "rope_theta"}
    return (float(theta) if theta is not None else None,
            json.dumps(scaling, sort_keys=True) if scaling else "")


def sliding_window_limit(config, layers):
    """The smallest sliding window of a stored layer, or None (full causal)."""
    sw = getattr(config, "sliding_window", None)
    if not sw:
        return None
    if getattr(config, "use_sliding_window", True) is False:
        return None
    types = getattr(config, "layer_types", None)
    if types:
        if not any(types[l] == "sliding_attention" for l in layers if l < len(types)):
            return None
    return int(sw)


def load_model(path, dtype_flag, torch, transformers):
    from transformers import AutoConfig, AutoModelForCausalLM
    try:
        config = AutoConfig.from_pretrained(path, local_files_only=True)
    except Exception as e:  # noqa: BLE001 - any loader failure is reported, never papered over
        raise ExportError(f"cannot read the config of {path}: {e}") from None
    kw = {"local_files_only": True, "attn_implementation": ATTN_NAME, "low_cpu_mem_usage": True}
    dt = "auto" if dtype_flag == "keep" else torch.float32
    major = int(transformers.__version__.split(".")[0])
    minor = int(transformers.__version__.split(".")[1])
    kw["dtype" if (major, minor) >= (4, 56) else "torch_dtype"] = dt
    try:
        model = AutoModelForCausalLM.from_pretrained(path, **kw)
    except Exception as e:  # noqa: BLE001
        msg = str(e).splitlines()[0] if str(e) else type(e).__name__
        if "attn_implementation" in msg or ATTN_NAME in msg or "AttentionInterface" in msg:
            raise ExportError(f"{path}: the model class does not accept a custom attention function "
                              f"(transformers' AttentionInterface): {msg}") from None
        raise ExportError(f"cannot load the model in {path}: {type(e).__name__}: {msg}") from None
    if dtype_flag == "float32":
        model = model.float()
    model.eval()
    impl = getattr(model.config, "_attn_implementation", None)
    if impl != ATTN_NAME:
        try:
            model.set_attn_implementation(ATTN_NAME)
        except Exception:  # noqa: BLE001
            model.config._attn_implementation = ATTN_NAME
    return config, model


def build_prompt(a, model_dir, vocab_size, torch):
    """token ids (list of int) and the needle/question spans (dict or None)."""
    if a.text is None:
        g = torch.Generator().manual_seed(a.seed)
        ids = torch.randint(0, vocab_size, (a.tokens,), generator=g).tolist()
        return ids, None, "random token ids (seed %d)" % a.seed
    try:
        with open(a.text, encoding="utf-8") as f:
            text = f.read()
    except OSError as e:
        raise ExportError(f"--text {a.text}: {e.strerror}") from None
    from transformers import AutoTokenizer
    try:
        tok = AutoTokenizer.from_pretrained(model_dir, local_files_only=True)
    except Exception as e:  # noqa: BLE001
        raise ExportError(f"--text needs the model dir's tokenizer; loading it from {model_dir} failed: "
                          f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}") from None
    cap = a.tokens
    if a.needle_depth is None:
        ids = tok(text)["input_ids"]
        if cap is not None:
            ids = ids[:cap]
        if not ids:
            raise ExportError(f"--text {a.text}: no tokens")
        return ids, None, f"text {os.path.basename(a.text)}"
    # The pieces are tokenized apart and joined: the needle starts and the
    # question ends at token boundaries by construction.
    prefix = tok("")["input_ids"]  # BOS (and the like) that the tokenizer adds
    enc = lambda s: tok(s, add_special_tokens=False)["input_ids"]  # noqa: E731
    hay = enc(text)
    needle = enc(" " + NEEDLE.format(p=a.passkey.strip()))
    question = enc(" " + QUESTION)
    room = (cap if cap is not None else len(prefix) + len(hay) + len(needle) + len(question)) \
        - len(prefix) - len(needle) - len(question)
    if room < 0:
        raise ExportError(f"--tokens {cap} is too small for the needle and the question "
                          f"({len(prefix) + len(needle) + len(question)} tokens)")
    hay = hay[:room]
    at = int(round(a.needle_depth * len(hay)))
    ids = prefix + hay[:at] + needle + hay[at:] + question
    ns = len(prefix) + at
    spans = {
        "needle_start": ns, "needle_end": ns + len(needle),
        "question_start": len(ids) - len(question), "question_end": len(ids),
        "passkey": a.passkey.strip(), "needle_depth": float(a.needle_depth),
    }
    return ids, spans, f"text {os.path.basename(a.text)} + pass key at depth {a.needle_depth}"


class Recorder:
    """Writes the new Q/K/V rows of the chosen layers as the attention function sees them."""

    def __init__(self, f, layers, heads, n_heads, n_kv, head_dim, n_tokens, store_dtype, with_output,
                 np, torch):
        self.np, self.torch = np, torch
        self.f = f
        self.layers = set(layers)
        self.last_layer = max(layers)
        self.heads = heads
        self.n_heads, self.n_kv = n_heads, n_kv
        self.n_rep = n_heads // n_kv
        kv_needed = sorted({h // self.n_rep for h in heads})
        self.kv_heads = kv_needed
        self.kv_map = [kv_needed.index(h // self.n_rep) for h in heads]
        self.n = n_tokens
        self.d = head_dim
        self.store_dtype = store_dtype  # "float32" | "float16" | "bfloat16"
        self.with_output = with_output
        self.pos = 0  # first row of the current chunk
        self.fired = set()
        self.fired_chunk = set()
        self.scale = {}
        self.delegate = None
        self.ds = {}
        h5dt = {"float32": "<f4", "float16": "<f2", "bfloat16": "<u2"}[store_dtype]
        for L in layers:
            g = f.create_group(f"layer_{L}")
            H, Hk = len(heads), len(kv_needed)
            d = {
                "q": g.create_dataset("q", (H, self.n, self.d), dtype=h5dt),
                "k": g.create_dataset("k", (Hk, self.n, self.d), dtype=h5dt),
                "v": g.create_dataset("v", (Hk, self.n, self.d), dtype=h5dt),
            }
            if store_dtype == "bfloat16":
                for x in d.values():
                    x.attrs["dtype"] = "bfloat16"
            if with_output:
                d["out"] = g.create_dataset("out", (H, self.n, self.d), dtype="<f4")
            g.create_dataset("kv_map", data=np.asarray(self.kv_map, dtype="<i4"))
            g.create_dataset("heads", data=np.asarray(heads, dtype="<i4"))
            g.attrs["causal"] = np.int32(1)
            g.attrs["rope_applied"] = np.int32(1)
            g.attrs["layer"] = np.int32(L)
            self.ds[L] = d

    def _np(self, t):
        torch = self.torch
        t = t.detach().contiguous()
        if self.store_dtype == "bfloat16":
            return t.view(torch.int16).cpu().numpy().view(self.np.uint16)
        if self.store_dtype == "float16":
            return t.to(torch.float16).cpu().numpy()
        return t.to(torch.float32).cpu().numpy()

    def __call__(self, module, query, key, value, attention_mask, scaling=None, **kwargs):
        L = getattr(module, "layer_idx", None)
        if L is None:
            raise ExportError(f"{type(module).__name__} has no layer_idx: cannot tell which layer this is")
        out = self.delegate(module, query, key, value, attention_mask, scaling=scaling, **kwargs)
        if L not in self.layers:
            return out
        if query.shape[0] != 1:
            raise ExportError("batch size must be 1")
        n = query.shape[2]
        lo, hi = self.pos, self.pos + n
        if hi > self.n or key.shape[2] < n:
            raise ExportError(f"layer {L}: unexpected shapes q {tuple(query.shape)} k {tuple(key.shape)} "
                              f"at rows {lo}..{hi}")
        if query.shape[1] != self.n_heads or key.shape[1] != self.n_kv or query.shape[3] != self.d:
            raise ExportError(f"layer {L}: attention sees q {tuple(query.shape)}, k {tuple(key.shape)}; "
                              f"the config says {self.n_heads} heads, {self.n_kv} kv heads, head_dim {self.d}")
        s = float(scaling) if scaling is not None else float(getattr(module, "scaling", self.d ** -0.5))
        if L in self.scale and abs(self.scale[L] - s) > 1e-12 * abs(s):
            raise ExportError(f"layer {L}: the scaling changed between chunks ({self.scale[L]} -> {s})")
        self.scale[L] = s
        d = self.ds[L]
        hs, ks = self.heads, self.kv_heads
        d["q"][:, lo:hi, :] = self._np(query[0, hs, :, :])
        d["k"][:, lo:hi, :] = self._np(key[0, ks, -n:, :])
        d["v"][:, lo:hi, :] = self._np(value[0, ks, -n:, :])
        if self.with_output:
            o = out[0] if isinstance(out, tuple) else out  # [B, n, H, d]
            d["out"][:, lo:hi, :] = o[0, :, hs, :].transpose(0, 1).to(self.torch.float32).cpu().numpy()
        self.fired.add(L)
        self.fired_chunk.add(L)
        if L == self.last_layer:
            raise _StopForward
        return out


class _StopForward(Exception):
    """Raised after the last stored layer of a chunk: later layers are not needed."""


def main(argv=None):
    p = build_parser()
    a = p.parse_args(argv)
    check_args(p, a)
    try:
        return run(a)
    except ExportError as e:
        die(str(e))


def run(a):
    if not os.path.isdir(a.model):
        raise ExportError(f"--model {a.model}: not a directory")
    cfg_path = os.path.join(a.model, "config.json")
    try:
        with open(cfg_path, "rb") as f:
            cfg_bytes = f.read()
        cfg_json = json.loads(cfg_bytes)
    except (OSError, ValueError) as e:
        raise ExportError(f"{cfg_path}: {e}") from None
    try:
        import h5py
        import numpy as np
        import torch
        import transformers
    except ImportError as e:
        raise ExportError(f"{e} (make trace-venv, then run with build/venv-trace/bin/python)") from None
    try:
        from transformers.integrations.sdpa_attention import sdpa_attention_forward
        try:
            from transformers import AttentionInterface
            register = AttentionInterface.register
        except ImportError:  # 4.48, 4.49: a plain dict
            from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS
            register = ALL_ATTENTION_FUNCTIONS.__setitem__
    except ImportError:
        raise ExportError(f"transformers {transformers.__version__} has no attention function interface "
                          "(need >= 4.48)") from None
    if a.threads:
        torch.set_num_threads(a.threads)
    try:
        transformers.utils.logging.disable_progress_bar()
    except AttributeError:
        pass

    rec_holder = {}

    def traced(module, query, key, value, attention_mask, **kw):
        return rec_holder["rec"](module, query, key, value, attention_mask, **kw)

    register(ATTN_NAME, traced)
    try:  # transformers >= 4.53: the mask is built per attention implementation
        from transformers.masking_utils import AttentionMaskInterface, sdpa_mask
        AttentionMaskInterface.register(ATTN_NAME, sdpa_mask)
    except ImportError:
        pass

    config, model = load_model(a.model, a.dtype, torch, transformers)
    cfg = model.config
    get = lambda *names: next((getattr(cfg, n) for n in names if getattr(cfg, n, None) is not None), None)  # noqa: E731
    n_layers = get("num_hidden_layers", "n_layer", "num_layers")
    n_heads = get("num_attention_heads", "n_head")
    n_kv = get("num_key_value_heads") or n_heads
    hidden = get("hidden_size", "n_embd")
    head_dim = get("head_dim") or (hidden // n_heads if hidden and n_heads else None)
    vocab = get("vocab_size")
    if not (n_layers and n_heads and head_dim and vocab):
        raise ExportError(f"{a.model}: config lacks layer/head/vocab sizes")
    if n_heads % n_kv:
        raise ExportError(f"{a.model}: {n_heads} query heads are not a multiple of {n_kv} kv heads")
    layers = parse_index_list(a.layers, n_layers, "layers")
    heads = parse_index_list(a.heads, n_heads, "heads")

    ids, spans, prompt_desc = build_prompt(a, a.model, vocab, torch)
    N = len(ids)
    if a.text is None and a.tokens is not None:
        assert N == a.tokens
    sw = sliding_window_limit(cfg, layers)
    if sw is not None and N > sw:
        raise ExportError(f"{a.model} uses sliding-window attention (window {sw} < {N} tokens): trace format 2 "
                          f"records full causal attention only; export at most {sw} tokens")

    pdt = next(model.parameters()).dtype
    store_dtype = {torch.float32: "float32", torch.float16: "float16", torch.bfloat16: "bfloat16"}.get(pdt)
    if store_dtype is None:
        raise ExportError(f"unsupported model dtype {pdt} (use --dtype float32)")

    ids_arr = np.asarray(ids, dtype="<i4")
    synthetic = 1 if (a.synthetic_weights or os.path.exists(os.path.join(a.model, SYNTHETIC_MARKER))) else 0
    theta, scaling_json = rope_info(cfg, cfg_json)
    source = str(getattr(cfg, "_name_or_path", "") or "")
    if not source or os.path.exists(source):  # a local path, not a hub name: the dir's basename
        source = os.path.basename(os.path.abspath(a.model))

    tmp = a.output + ".tmp"
    t0 = time.time()
    try:
        f = h5py.File(tmp, "w")
    except OSError as e:
        raise ExportError(f"-o {a.output}: {e}") from None
    ok = False
    try:
        at = f.attrs
        at["format"] = "attnbench-trace"
        at["version"] = np.int32(FORMAT_VERSION)
        at["source"] = source
        at["model_type"] = str(getattr(cfg, "model_type", "") or "")
        at["config_sha256"] = hashlib.sha256(cfg_bytes).hexdigest()
        at["prompt_sha256"] = hashlib.sha256(ids_arr.tobytes()).hexdigest()
        at["prompt"] = prompt_desc
        at["n_tokens"] = np.int32(N)
        at["heads"] = np.int32(n_heads)
        at["kv_heads"] = np.int32(n_kv)
        at["head_dim"] = np.int32(head_dim)
        at["layers"] = np.asarray(layers, dtype="<i4")
        at["dtype"] = store_dtype
        if theta is not None:
            at["rope_theta"] = np.float64(theta)
        at["rope_scaling"] = scaling_json
        at["synthetic"] = np.int32(synthetic)
        at["exporter"] = "scripts/export_trace.py"
        at["transformers_version"] = str(transformers.__version__)
        at["torch_version"] = str(torch.__version__)
        if spans:
            for k in ("needle_start", "needle_end", "question_start", "question_end"):
                at[k] = np.int32(spans[k])
            at["passkey"] = spans["passkey"]
            at["needle_depth"] = np.float64(spans["needle_depth"])
        f.create_dataset("tokens", data=ids_arr)

        rec = Recorder(f, layers, heads, n_heads, n_kv, head_dim, N, store_dtype, a.with_output, np, torch)
        rec.delegate = sdpa_attention_forward
        rec_holder["rec"] = rec
        prefill(model, ids, rec, a, t0, torch)
        missing = [L for L in layers if L not in rec.fired]
        if missing:
            raise ExportError(
                f"the attention hook never fired for layer(s) {missing}: {type(model).__name__} "
                f"(model_type {cfg.model_type}) does not call its attention through transformers' "
                "AttentionInterface; this exporter cannot trace it")
        for L in layers:
            f[f"layer_{L}"].attrs["scale"] = np.float64(rec.scale[L])
        f.close()
        os.replace(tmp, a.output)
        ok = True
    finally:
        if not ok:
            try:
                f.close()
            except Exception:  # noqa: BLE001
                pass
            try:
                os.unlink(tmp)
            except OSError:
                pass
    if not a.quiet:
        print(f"export: wrote {a.output}: {N} tokens, layers {compact(layers)}, {len(heads)} heads, "
              f"{store_dtype}, {time.time() - t0:.0f} s, peak rss {peak_rss_gib():.1f} GiB", file=sys.stderr)
    return 0


def compact(xs):
    return ",".join(map(str, xs)) if len(xs) <= 8 else f"{xs[0]}..{xs[-1]} ({len(xs)})"


def peak_rss_gib():
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / (1 << 20)
    except OSError:
        pass
    return float("nan")


def prefill(model, ids, rec, a, t0, torch):
    from transformers import DynamicCache
    base = model.base_model if getattr(model, "base_model", None) is not None else model
    try:
        cache = DynamicCache(config=model.config)
    except TypeError:
        cache = DynamicCache()
    import inspect
    try:
        params = inspect.signature(base.forward).parameters
    except (TypeError, ValueError):
        params = {}
    cache_kw = "cache" if "cache" in params else "past_key_values"  # transformers >= 5.2x: cache
    N = len(ids)
    x = torch.tensor([ids], dtype=torch.long)
    with torch.inference_mode():
        for lo in range(0, N, a.chunk):
            hi = min(N, lo + a.chunk)
            rec.pos = lo
            rec.fired_chunk = set()
            try:
                base(input_ids=x[:, lo:hi], position_ids=torch.arange(lo, hi).unsqueeze(0), use_cache=True,
                     **{cache_kw: cache})
            except _StopForward:
                pass
            if rec.fired_chunk != rec.layers:
                break  # reported by the caller (the hook never fired)
            if not a.quiet:
                print(f"export: {hi}/{N} tokens, {100 * hi // N}%, {time.time() - t0:.0f} s, "
                      f"rss {rss_gib():.1f} GiB", file=sys.stderr, flush=True)


if __name__ == "__main__":
    sys.exit(main())

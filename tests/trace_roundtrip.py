#!/usr/bin/env python3
"""trace_roundtrip.py — scripts/export_trace.py on tiny random models (`make test-trace`).

For each family (llama, mistral, qwen2, gpt_neox) a tiny randomly initialised
model (2-3 layers, hidden 64, 4 query heads, 2 KV heads where the family has
GQA, RoPE, float32) is saved to a temp dir and exported with --tokens 200
--chunk 64 --with-output --synthetic-weights; then
  1. the chunked export equals an unchunked one (q, k, v, out; 1e-5 rel), and
     out equals the stock model's own attention output (the input of o_proj,
     one unchunked forward with attn_implementation="sdpa": the traced run is
     the model unchanged);
  2. out equals softmax(q k^T * scale, causal) v in numpy fp64 from the
     stored q, k, v (1e-4 rel), through kv_map;
  3. `$AB_BIN trace-run T.h5 --layer L -o OUT.f32` (attnbench's dense
     attention) equals out (1e-4 rel; also on the head-subset and the
     float16/bfloat16 files below; skipped while the binary has no trace-run);
  4. a --heads subset of layer 0 alone (the forward stops after it) stores
     the same slices and only the needed K/V heads;
and once (llama): float16 and bfloat16 copies keep their dtype in the file
(bfloat16 as uint16 bits) and --dtype float32 converts; an answer-bearing
export with a word-level tokenizer (--text, --needle-depth 0.5 --passkey
4242) whose span attributes point at the needle and the question; plus the
exporter's exit status 2 on bad flags and on a directory that holds no model.
Before transformers 4.50 GPT-NeoX did not use the attention interface: there
the exporter's refusal (exit 2, the reason) is checked instead.

Runs without network, 2 torch threads. Exit 0 and "trace_roundtrip: PASS
(...)" or a message and exit 1. AB_BIN: the attnbench binary (default
build/attnbench).
"""
import contextlib
import io
import json
import os
import subprocess
import sys
import tempfile
import time

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"
os.environ.setdefault("OMP_NUM_THREADS", "2")

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
EXPORTER = os.path.join(ROOT, "scripts", "export_trace.py")
sys.path.insert(0, os.path.join(ROOT, "scripts"))

import h5py  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
import transformers  # noqa: E402

import export_trace  # noqa: E402

torch.set_num_threads(2)
transformers.utils.logging.set_verbosity_error()
transformers.utils.logging.disable_progress_bar()

_TV = tuple(int(x) for x in transformers.__version__.split(".")[:2])
DTYPE_KW = "dtype" if _TV >= (4, 56) else "torch_dtype"
N_TOK = 200
CHUNK = 64
VOCAB = 500


class Fail(Exception):
    pass


def check(cond, msg):
    if not cond:
        raise Fail(msg)


def rel_err(a, b):
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    den = np.max(np.abs(b))
    return float(np.max(np.abs(a - b)) / (den if den > 0 else 1.0))


def tiny_config(family):
    common = dict(vocab_size=VOCAB, hidden_size=64, num_attention_heads=4, max_position_embeddings=1024)
    if family == "llama":
        return transformers.LlamaConfig(intermediate_size=128, num_hidden_layers=2, num_key_value_heads=2,
                                        **common)
    if family == "mistral":
        return transformers.MistralConfig(intermediate_size=128, num_hidden_layers=2, num_key_value_heads=2,
                                          sliding_window=4096, **common)
    if family == "qwen2":
        return transformers.Qwen2Config(intermediate_size=128, num_hidden_layers=3, num_key_value_heads=2,
                                        **common)
    if family == "gpt_neox":  # no GQA in GPT-NeoX; partial rotary (25% of head_dim)
        return transformers.GPTNeoXConfig(intermediate_size=128, num_hidden_layers=2, rotary_pct=0.25,
                                          **common)
    raise ValueError(family)


def make_model(family, root):
    torch.manual_seed({"llama": 1, "mistral": 2, "qwen2": 3, "gpt_neox": 4}[family])
    cfg = tiny_config(family)
    model = transformers.AutoModelForCausalLM.from_config(cfg)
    with torch.no_grad():  # larger weights than the init's 0.02 std: peaky attention, a sharper test
        for name, p in model.named_parameters():
            if p.dim() == 2 and "embed" not in name:
                p.mul_(4.0)
    d = os.path.join(root, family)
    model.save_pretrained(d)
    return d


def export(argv):
    """Run the exporter in this process (one torch import for the whole test)."""
    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        try:
            rc = export_trace.main(argv)
        except SystemExit as e:
            rc = e.code
    if rc not in (0, None):
        raise Fail(f"export_trace {' '.join(argv)}: exit {rc}\n{err.getvalue()}")
    return err.getvalue()


def read_trace(path):
    out = {"attrs": {}, "layers": {}}
    with h5py.File(path, "r") as f:
        out["attrs"] = {k: f.attrs[k] for k in f.attrs}
        out["tokens"] = f["tokens"][()]
        for L in f.attrs["layers"]:
            g = f[f"layer_{L}"]
            out["layers"][int(L)] = {k: g[k][()] for k in g}
            out["layers"][int(L)]["attrs"] = {k: g.attrs[k] for k in g.attrs}
    return out


def reference(q, k, v, kv_map, scale):
    """softmax(q k^T * scale, causal) v in fp64: q [H, N, d], k/v [Hkv, N, d] -> [H, N, d]."""
    q = q.astype(np.float64)
    k = k.astype(np.float64)
    v = v.astype(np.float64)
    H, N, _ = q.shape
    causal = np.tril(np.ones((N, N), dtype=bool))
    out = np.empty_like(q)
    for h in range(H):
        s = (q[h] @ k[kv_map[h]].T) * scale
        s = np.where(causal, s, -np.inf)
        s -= s.max(axis=1, keepdims=True)
        p = np.exp(s)
        p /= p.sum(axis=1, keepdims=True)
        out[h] = p @ v[kv_map[h]]
    return out


def stock_outputs(model_dir, tokens, n_heads, head_dim):
    """The unmodified model ("sdpa", one forward, no chunks): per layer, the
    input of the attention's output projection as [H, N, d]."""
    model = transformers.AutoModelForCausalLM.from_pretrained(model_dir, local_files_only=True,
                                                              attn_implementation="sdpa")
    model.eval()
    got = {}
    hooks = []
    for name, mod in model.named_modules():
        leaf = name.rsplit(".", 1)[-1]
        if leaf not in ("o_proj", "dense"):
            continue
        parent = model.get_submodule(name.rsplit(".", 1)[0])
        L = getattr(parent, "layer_idx", None)
        if L is None or not hasattr(parent, "scaling"):
            continue

        def pre(mod, args, L=L):
            x = args[0][0].detach().to(torch.float64).numpy()  # [N, H*d]
            got[L] = x.reshape(x.shape[0], n_heads, head_dim).transpose(1, 0, 2)
        hooks.append(mod.register_forward_pre_hook(pre))
    with torch.inference_mode():
        model(input_ids=torch.from_numpy(tokens.astype(np.int64)[None, :]))
    for h in hooks:
        h.remove()
    return got


def trace_run_available(ab_bin):
    if not ab_bin or not os.access(ab_bin, os.X_OK):
        return False
    try:
        r = subprocess.run([ab_bin, "trace-run", "--help"], capture_output=True, timeout=60)
    except OSError:
        return False
    return r.returncode == 0


def ab_trace_run(ab_bin, trace, L, shape, root, what):
    """attnbench's dense attention on /layer_L of trace, as float32 [H, N, d]."""
    of = os.path.join(root, f"ab_{os.path.basename(trace)}_L{L}.f32")
    r = subprocess.run([ab_bin, "trace-run", trace, "--layer", str(L), "-o", of],
                       capture_output=True, text=True, timeout=300)
    check(r.returncode == 0, f"{what} layer {L}: trace-run exit {r.returncode}: {r.stderr.strip()}")
    got = np.fromfile(of, dtype="<f4")
    n = int(np.prod(shape))
    check(got.size == n, f"{what} layer {L}: trace-run wrote {got.size} floats, want {n} {tuple(shape)}")
    return got.reshape(shape)


def family_checks(family, root, ab_bin, have_trace_run, figures):
    mdir = make_model(family, root)
    cfg = json.load(open(os.path.join(mdir, "config.json")))
    t_a = os.path.join(root, f"{family}_chunked.h5")
    t_b = os.path.join(root, f"{family}_whole.h5")
    t_c = os.path.join(root, f"{family}_heads.h5")
    base = ["--model", mdir, "--tokens", str(N_TOK), "--with-output", "--synthetic-weights", "--quiet"]
    export(base + ["--chunk", str(CHUNK), "-o", t_a])
    export(base + ["--chunk", str(N_TOK), "-o", t_b])
    A, B = read_trace(t_a), read_trace(t_b)

    at = A["attrs"]
    n_layers = cfg["num_hidden_layers"]
    n_heads = cfg["num_attention_heads"]
    n_kv = cfg.get("num_key_value_heads") or n_heads
    d = cfg.get("head_dim") or cfg["hidden_size"] // n_heads
    check(at["format"] == "attnbench-trace" and int(at["version"]) == 2, f"{family}: format/version {at}")
    check(at["model_type"] == family, f"{family}: model_type {at['model_type']}")
    check(int(at["n_tokens"]) == N_TOK and A["tokens"].shape == (N_TOK,) and A["tokens"].dtype == np.int32,
          f"{family}: tokens")
    check((int(at["heads"]), int(at["kv_heads"]), int(at["head_dim"])) == (n_heads, n_kv, d),
          f"{family}: heads/kv_heads/head_dim {at['heads']}/{at['kv_heads']}/{at['head_dim']}")
    check(list(at["layers"]) == list(range(n_layers)), f"{family}: layers {at['layers']}")
    check(int(at["synthetic"]) == 1 and at["dtype"] == "float32", f"{family}: synthetic/dtype")
    check("rope_theta" in at and at["rope_theta"] > 0, f"{family}: rope_theta")
    import hashlib
    check(at["prompt_sha256"] == hashlib.sha256(A["tokens"].astype("<i4").tobytes()).hexdigest(),
          f"{family}: prompt_sha256")
    check(at["config_sha256"] == hashlib.sha256(open(os.path.join(mdir, "config.json"), "rb").read()).hexdigest(),
          f"{family}: config_sha256")
    check(np.array_equal(A["tokens"], B["tokens"]), f"{family}: the two exports drew different tokens")

    stock = stock_outputs(mdir, A["tokens"], n_heads, d)
    check(sorted(stock) == list(range(n_layers)), f"{family}: stock hooks saw layers {sorted(stock)}")
    worst = {"chunk": 0.0, "stock": 0.0, "ref": 0.0, "ab": None}
    for L in range(n_layers):
        a, b = A["layers"][L], B["layers"][L]
        check(a["q"].shape == (n_heads, N_TOK, d) and a["k"].shape == (n_kv, N_TOK, d)
              and a["v"].shape == (n_kv, N_TOK, d) and a["out"].shape == (n_heads, N_TOK, d),
              f"{family} layer {L}: shapes q {a['q'].shape} k {a['k'].shape} out {a['out'].shape}")
        rep = n_heads // n_kv
        check(list(a["kv_map"]) == [h // rep for h in range(n_heads)], f"{family} layer {L}: kv_map {a['kv_map']}")
        check(list(a["heads"]) == list(range(n_heads)), f"{family} layer {L}: heads {a['heads']}")
        la = a["attrs"]
        check(int(la["causal"]) == 1 and int(la["rope_applied"]) == 1 and int(la["layer"]) == L,
              f"{family} layer {L}: attrs {la}")
        check(abs(float(la["scale"]) - d ** -0.5) < 1e-12, f"{family} layer {L}: scale {la['scale']}")
        # 1. chunked == unchunked, and == the stock model
        for x in ("q", "k", "v", "out"):
            e = rel_err(a[x], b[x])
            worst["chunk"] = max(worst["chunk"], e)
            check(e <= 1e-5, f"{family} layer {L}: chunked {x} differs from unchunked: rel {e:.2e}")
        e = rel_err(a["out"], stock[L])
        worst["stock"] = max(worst["stock"], e)
        check(e <= 1e-5, f"{family} layer {L}: traced out differs from the stock model's: rel {e:.2e}")
        # 2. out == fp64 attention from the stored q, k, v
        ref = reference(a["q"], a["k"], a["v"], a["kv_map"], float(la["scale"]))
        e = rel_err(a["out"], ref)
        worst["ref"] = max(worst["ref"], e)
        check(e <= 1e-4, f"{family} layer {L}: out vs fp64 softmax(qk^T*scale)v: rel {e:.2e}")
        # 3. attnbench's dense attention on the file
        if have_trace_run:
            got = ab_trace_run(ab_bin, t_a, L, a["out"].shape, root, family)
            e = rel_err(got, a["out"])
            worst["ab"] = max(worst["ab"] or 0.0, e)
            print(f"  {family} layer {L}: attnbench trace-run vs model out: max rel {e:.2e}")
            check(e <= 1e-4, f"{family} layer {L}: attnbench dense vs model out: rel {e:.2e}")
    # 4. a head subset: the last two query heads, only their K/V heads; layer 0
    # only (each chunk's forward stops after it: the later layers are not run)
    L = 0
    export(["--model", mdir, "--tokens", str(N_TOK), "--chunk", str(CHUNK), "--heads", f"{n_heads - 2}-{n_heads - 1}",
            "--layers", str(L), "--with-output", "--synthetic-weights", "--quiet", "-o", t_c])
    C = read_trace(t_c)
    check(list(C["attrs"]["layers"]) == [L] and list(C["layers"]) == [L], f"{family}: --layers {L}")
    c, a = C["layers"][L], A["layers"][L]
    rep = n_heads // n_kv
    hs = [n_heads - 2, n_heads - 1]
    kvs = sorted({h // rep for h in hs})
    check(list(c["heads"]) == hs and list(c["kv_map"]) == [kvs.index(h // rep) for h in hs],
          f"{family}: --heads subset heads {c['heads']} kv_map {c['kv_map']}")
    check(c["k"].shape == (len(kvs), N_TOK, d), f"{family}: --heads subset k {c['k'].shape}")
    for x, idx in (("q", hs), ("out", hs), ("k", kvs), ("v", kvs)):
        e = rel_err(c[x], a[x][idx])
        check(e <= 1e-6, f"{family}: --heads subset {x} differs from the full export: rel {e:.2e}")
    if have_trace_run:
        e = rel_err(ab_trace_run(ab_bin, t_c, L, c["out"].shape, root, family), c["out"])
        check(e <= 1e-4, f"{family}: --heads subset: attnbench dense vs model out: rel {e:.2e}")
    figures.append((family, n_layers, worst))
    line = (f"{family}: {n_layers} layers, H {n_heads}, Hkv {n_kv}, d {d}: chunked vs whole {worst['chunk']:.1e}, "
            f"vs stock model {worst['stock']:.1e}, vs fp64 {worst['ref']:.1e}")
    if worst["ab"] is not None:
        line += f", attnbench {worst['ab']:.1e}"
    print("  " + line, flush=True)


def dtype_checks(root, ab_bin, have_trace_run):
    """Half-precision models: the trace keeps the model's dtype (float16 as HDF5
    float16, bfloat16 as uint16 bits with dtype = "bfloat16"); --dtype float32 converts."""
    src = os.path.join(root, "llama")  # made by family_checks
    figs = []
    for name, tdt in (("float16", torch.float16), ("bfloat16", torch.bfloat16)):
        mdir = os.path.join(root, f"llama_{name}")
        transformers.AutoModelForCausalLM.from_pretrained(src, **{DTYPE_KW: tdt}).save_pretrained(mdir)
        t = os.path.join(root, f"{name}.h5")
        export(["--model", mdir, "--tokens", "96", "--chunk", "32", "--layers", "1", "--with-output",
                "--synthetic-weights", "--quiet", "-o", t])
        with h5py.File(t, "r") as f:
            check(f.attrs["dtype"] == name, f"{name}: root dtype {f.attrs['dtype']}")
            g = f["layer_1"]
            want = np.float16 if name == "float16" else np.uint16
            for x in ("q", "k", "v"):
                check(g[x].dtype == want, f"{name}: {x} stored as {g[x].dtype}")
                if name == "bfloat16":
                    check(g[x].attrs.get("dtype") == "bfloat16", f"{name}: {x} lacks attribute dtype = bfloat16")
            check(g["out"].dtype == np.float32, f"{name}: out stored as {g['out'].dtype}")

            def as_f32(a):
                return (a.astype(np.uint32) << 16).view(np.float32) if name == "bfloat16" else a.astype(np.float32)
            q, k, v = (as_f32(g[x][()]) for x in ("q", "k", "v"))
            check(np.isfinite(q).all() and np.abs(q).max() > 0, f"{name}: q values")
            ref = reference(q, k, v, g["kv_map"][()], float(g.attrs["scale"]))
            e = rel_err(g["out"][()], ref)
            check(e <= 3e-2, f"{name}: out vs fp64 attention of the stored q, k, v: rel {e:.2e}")
            figs.append(f"{name} {e:.1e}")
            if have_trace_run:  # attnbench reads the half-precision file (bf16 bits) into float32
                e = rel_err(ab_trace_run(ab_bin, t, 1, g["out"].shape, root, name), ref)
                check(e <= 1e-5, f"{name}: attnbench dense vs fp64 attention of the stored q, k, v: rel {e:.2e}")
                figs[-1] += f" (attnbench {e:.1e})"
        t32 = os.path.join(root, f"{name}_f32.h5")
        export(["--model", mdir, "--tokens", "96", "--layers", "1", "--dtype", "float32", "--synthetic-weights",
                "--quiet", "-o", t32])
        with h5py.File(t32, "r") as f:
            check(f.attrs["dtype"] == "float32" and f["layer_1/q"].dtype == np.float32, f"{name}: --dtype float32")
            e = rel_err(f["layer_1/q"][()], q)
            check(e <= 3e-2, f"{name}: --dtype float32 q vs the {name} trace: rel {e:.2e}")
    print(f"  dtypes: half-precision traces, out vs fp64 from the stored q, k, v: {', '.join(figs)}", flush=True)


HAY_WORDS = ("the grass is green and the sky is blue while the river runs past a quiet town where "
             "people walk to the market every morning to buy bread fish and fruit").split()


def needle_check(root):
    """An answer-bearing export: --text + a word-level tokenizer + --needle-depth/--passkey."""
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers
    mdir = os.path.join(root, "llama")  # made by family_checks
    rng = np.random.default_rng(7)
    words = [HAY_WORDS[i] for i in rng.integers(0, len(HAY_WORDS), 600)]
    text = " ".join(words) + "."
    train = [text, export_trace.NEEDLE.format(p="4242"), export_trace.QUESTION]
    tok = Tokenizer(models.WordLevel(unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.train_from_iterator(train, trainers.WordLevelTrainer(special_tokens=["[UNK]", "<s>"]))
    check(tok.get_vocab_size() <= VOCAB, f"tokenizer vocab {tok.get_vocab_size()} > model vocab")
    fast = transformers.PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="[UNK]", bos_token="<s>")
    fast.save_pretrained(mdir)
    tf = os.path.join(root, "hay.txt")
    with open(tf, "w") as f:
        f.write(text)
    out = os.path.join(root, "needle.h5")
    cap = 300
    export(["--model", mdir, "--text", tf, "--tokens", str(cap), "--needle-depth", "0.5", "--passkey", "4242",
            "--chunk", "64", "--layers", "0", "--with-output", "--synthetic-weights", "--quiet", "-o", out])
    T = read_trace(out)
    at, ids = T["attrs"], T["tokens"]
    N = int(at["n_tokens"])
    check(N == len(ids) and N <= cap, f"needle: n_tokens {N}, {len(ids)} tokens, cap {cap}")
    ns, ne, qs, qe = (int(at[k]) for k in ("needle_start", "needle_end", "question_start", "question_end"))
    check(0 <= ns < ne <= qs < qe == N, f"needle: spans needle [{ns},{ne}) question [{qs},{qe}) N {N}")
    check(at["passkey"] == "4242" and abs(float(at["needle_depth"]) - 0.5) < 1e-12, "needle: passkey/depth attrs")
    needle_txt = fast.decode(ids[ns:ne].tolist())
    check("4242" in needle_txt, f"needle: tokens[needle_start:needle_end] decode to {needle_txt!r}")
    check("4242" not in fast.decode(ids[:ns].tolist()) and "4242" not in fast.decode(ids[ne:].tolist()),
          "needle: the pass key occurs outside the needle span")
    q_txt = fast.decode(ids[qs:qe].tolist())
    check(q_txt.split() == export_trace.QUESTION.replace("?", " ?").split(), f"needle: question rows {q_txt!r}")
    depth = (ns - 1) / max(1, (qs - 1) - (ne - ns))  # BOS first, haystack fraction before the needle
    check(abs(depth - 0.5) < 0.02, f"needle: inserted at depth {depth:.3f}, want 0.5")
    check(T["layers"][0]["q"].shape[1] == N, "needle: q rows")
    print(f"  needle: N {N}, needle [{ns},{ne}) = {needle_txt!r}, question [{qs},{qe})", flush=True)


def refused_check(family, root):
    """Before transformers 4.50 GPT-NeoX's attention did not go through the
    attention interface: the exporter must refuse it with the reason."""
    mdir = make_model(family, root)
    r = subprocess.run([sys.executable, EXPORTER, "--model", mdir, "--tokens", "16", "-o",
                        os.path.join(root, "x.h5")], capture_output=True, text=True, timeout=300)
    check(r.returncode == 2 and "custom attention function" in r.stderr,
          f"{family} on transformers {transformers.__version__}: want a refusal, got exit {r.returncode}: {r.stderr}")
    print(f"  {family}: skipped, transformers {transformers.__version__} < 4.50 (refused with the reason, exit 2)")


def cli_checks(root):
    """Exit status 2 with a reason: bad flags, no model in the directory."""
    py = sys.executable
    empty = os.path.join(root, "empty")
    os.makedirs(empty, exist_ok=True)
    cases = [
        (["--model", empty, "-o", "x.h5"], "--text FILE or --tokens N"),
        (["--model", empty, "--tokens", "8", "--layers", "x", "-o", os.path.join(root, "x.h5")], None),
        (["--model", empty, "--tokens", "8", "--needle-depth", "0.5", "--passkey", "1", "-o", "x.h5"],
         "needs --text"),
        (["--model", empty, "--tokens", "8", "-o", os.path.join(root, "x.h5")], "config.json"),
        (["--model", os.path.join(root, "llama"), "--tokens", "8", "--layers", "7", "-o",
          os.path.join(root, "x.h5")], "out of range"),
    ]
    for argv, want in cases:
        r = subprocess.run([py, EXPORTER] + argv, capture_output=True, text=True, timeout=300)
        check(r.returncode == 2, f"export_trace {' '.join(argv)}: exit {r.returncode}, want 2\n{r.stderr}")
        if want:
            check(want in r.stderr, f"export_trace {' '.join(argv)}: stderr lacks {want!r}: {r.stderr!r}")
        check(not os.path.exists(os.path.join(root, "x.h5")), "a failed export left a file")


def main():
    t0 = time.time()
    ab_bin = os.environ.get("AB_BIN", os.path.join(ROOT, "build", "attnbench"))
    have_trace_run = trace_run_available(ab_bin)
    if not have_trace_run:
        print("step 3 skipped: no trace-run" + ("" if os.access(ab_bin, os.X_OK) else f" ({ab_bin} missing)"))
    figures = []
    with tempfile.TemporaryDirectory(prefix="trace_roundtrip.") as root:
        try:
            for family in ("llama", "mistral", "qwen2", "gpt_neox"):
                if family == "gpt_neox" and _TV < (4, 50):
                    refused_check(family, root)
                    continue
                family_checks(family, root, ab_bin, have_trace_run, figures)
            dtype_checks(root, ab_bin, have_trace_run)
            needle_check(root)
            cli_checks(root)
        except Fail as e:
            print(f"trace_roundtrip: FAIL: {e}", file=sys.stderr)
            return 1
    fams = ",".join(f for f, _, _ in figures)
    if not figures:
        print("trace_roundtrip: FAIL: no family was checked", file=sys.stderr)
        return 1
    print(f"trace_roundtrip: PASS ({fams}; chunked, stock model, fp64 reference"
          f"{', attnbench trace-run' if have_trace_run else ''}, head subset, fp16/bf16 storage, needle spans, exit codes; "
          f"transformers {transformers.__version__}, torch {torch.__version__}; {time.time() - t0:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())

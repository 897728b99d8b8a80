#!/usr/bin/env python3
"""sdpa_peer.py — the PyTorch peer of bench/kernels_bench.c: times
torch.nn.functional.scaled_dot_product_attention on the CPU (fp32) for the
same shapes, thread counts and repeat rule, and writes rows in the same TSV
columns (kind = sdpa; sdpa_bf16 for the same tensors in bfloat16), which
kernels_bench joins with --sdpa FILE.

Never needed by `make test`. Usage: sdpa_peer.py [--quick] [--n 1024,...]
[--d 64,128] [--threads 1,2] [--heads 8] [--min-time S] [--min-reps R]
[--max-reps R] --out FILE (kernels_bench options it does not use are
accepted and ignored).

sdpa_peer.py --serve: the form `make bench` uses (kernels_bench
--sdpa-serve): after importing torch it prints "ready", then for each line
"KIND N D HEADS CAUSAL THREADS" on stdin (KIND sdpa or sdpa_bf16) times one
call on the CPU and prints its seconds (or "error MESSAGE"), so that
kernels_bench can time SDPA in rounds with its own flash, seconds apart,
instead of minutes (docs/kernels.md). The tensors of the last shape are
kept; the first call of a case is not timed apart: kernels_bench's first
round is its warm-up. Ends at end of input.
"""
import argparse
import math
import os
import sys
import time


def ints(s):
    return [int(x) for x in s.split(",") if x]


def load_torch():
    """torch, or None after saying why on stderr (missing, or older than 2.1)."""
    try:
        import torch
    except ImportError as e:
        print(f"sdpa_peer: {e}", file=sys.stderr)
        return None
    ver = tuple(int(x) for x in torch.__version__.split("+")[0].split(".")[:2])
    if ver < (2, 1):
        print(f"sdpa_peer: torch {torch.__version__} < 2.1, skipped", file=sys.stderr)
        return None
    return torch


def make_qkv(torch, n, d, heads):
    """Q, K, V of one shape (uniform in [-1, 1), seeded by the shape) and their bf16 copies."""
    g = torch.Generator().manual_seed(n * 131 + d)
    qkv = tuple(torch.rand(1, heads, n, d, generator=g) * 2 - 1 for _ in range(3))
    return qkv, tuple(x.to(torch.bfloat16) for x in qkv)


def serve():
    """One timed SDPA call per request line (see the module's docstring)."""
    torch = load_torch()
    if torch is None:
        print("error no usable torch", flush=True)
        return 1
    import torch.nn.functional as F
    print(f"ready torch={torch.__version__} capability={torch.backends.cpu.get_cpu_capability()}",
          flush=True)
    shape, qkv, qkv16 = None, None, None
    for line in sys.stdin:
        f = line.split()
        try:
            kind, n, d, heads, causal, t = f[0], *map(int, f[1:6])
            if kind not in ("sdpa", "sdpa_bf16") or len(f) != 6:
                raise ValueError(kind)
        except (ValueError, IndexError):
            print(f"error bad request: {line.strip()!r}", flush=True)
            continue
        if shape != (n, d, heads):
            qkv = qkv16 = None  # the last shape's tensors freed first
            qkv, qkv16 = make_qkv(torch, n, d, heads)
            shape = (n, d, heads)
        torch.set_num_threads(t)
        tq, tk, tv = qkv16 if kind == "sdpa_bf16" else qkv
        with torch.no_grad():
            t0 = time.perf_counter()
            F.scaled_dot_product_attention(tq, tk, tv, is_causal=bool(causal))
            e = time.perf_counter() - t0
        print(f"{e:.9g}", flush=True)
    return 0


def main():
    if "--serve" in sys.argv[1:]:
        return serve()
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--n", type=ints, default=[1024, 2048, 4096, 8192, 16384, 32768])
    ap.add_argument("--d", type=ints, default=[64, 128])
    ap.add_argument("--threads", type=ints, default=[1, 2])
    ap.add_argument("--heads", type=int, default=8)
    ap.add_argument("--min-time", type=float, default=1.0)
    ap.add_argument("--min-reps", type=int, default=3)
    ap.add_argument("--max-reps", type=int, default=11)
    ap.add_argument("--out", required=True)
    args, _unused = ap.parse_known_args()
    if args.quick:
        if "--n" not in sys.argv:
            args.n = [1024, 2048, 4096]
        args.min_time, args.max_reps = 0.3, 7

    torch = load_torch()
    if torch is None:
        return 1
    import torch.nn.functional as F

    print(f"sdpa_peer: torch {torch.__version__}, "
          f"cpu capability {torch.backends.cpu.get_cpu_capability()}, "
          f"OPENBLAS_CORETYPE={os.environ.get('OPENBLAS_CORETYPE', '(unset)')}", flush=True)
    rows = []
    with open(args.out, "w") as f:
        f.write(f"# torch={torch.__version__} capability={torch.backends.cpu.get_cpu_capability()}\n")
        f.write("kind\tN\td\theads\tcausal\tthreads\tdensity\tactual_density\treps"
                "\tmedian_s\tp10_s\tp90_s\tgflops\tgflops_p10\tgflops_p90\n")
        for n in args.n:
            for d in args.d:
                (q, k, v), qkv16 = make_qkv(torch, n, d, args.heads)
                cases = [(causal, kind, t) for causal in (0, 1) for kind in ("sdpa", "sdpa_bf16")
                         for t in args.threads]
                for causal, kind, t in cases:
                    torch.set_num_threads(t)
                    tq, tk, tv = qkv16 if kind == "sdpa_bf16" else (q, k, v)
                    run = lambda: F.scaled_dot_product_attention(tq, tk, tv, is_causal=bool(causal))
                    with torch.no_grad():
                        t0 = time.perf_counter()
                        run()  # warm-up
                        first = time.perf_counter() - t0
                        reps = math.ceil(args.min_time / first) if first > 0 else args.max_reps
                        reps = max(args.min_reps, min(args.max_reps, reps))
                        ts = []
                        for _ in range(reps):
                            t0 = time.perf_counter()
                            run()
                            ts.append(time.perf_counter() - t0)
                    ts.sort()
                    med = ts[reps // 2] if reps % 2 else 0.5 * (ts[reps // 2 - 1] + ts[reps // 2])
                    q10 = ts[max(0, math.ceil(0.1 * reps) - 1)]
                    q90 = ts[min(reps - 1, math.ceil(0.9 * reps) - 1)]
                    gfl = 4.0 * args.heads * n * n * d * (0.5 if causal else 1.0) * 1e-9
                    line = (f"{kind}\t{n}\t{d}\t{args.heads}\t{causal}\t{t}\t1.0000\t1.0000\t{reps}"
                            f"\t{med:.6g}\t{q10:.6g}\t{q90:.6g}\t{gfl / med:.2f}"
                            f"\t{gfl / q90:.2f}\t{gfl / q10:.2f}")
                    f.write(line + "\n")
                    f.flush()
                    print(line, flush=True)
                del q, k, v, qkv16
    return 0


if __name__ == "__main__":
    sys.exit(main())

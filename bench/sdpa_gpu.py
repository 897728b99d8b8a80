#!/usr/bin/env python3
"""sdpa_gpu.py — the PyTorch peer of bench/gpu_bench.c: times
torch.nn.functional.scaled_dot_product_attention on CUDA (the
FlashAttention-2 backend when PyTorch selects it; Dao 2023, arXiv
2307.08691) on the same shapes, with CUDA events, 2 warm-ups and the median
of --reps runs, and writes TSV rows `torch_sdpa N d heads causal dtype ms`
that gpu_bench joins with --sdpa FILE.

Run by `make bench-gpu` only when torch with CUDA imports. Usage:
sdpa_gpu.py [--quick] [--n 4096,...] [--d 128] [--heads 16] [--causal 1]
[--reps 10] [--dtype fp16|bf16] --out FILE (other gpu_bench options are
accepted and ignored).
"""
import argparse
import statistics
import sys


def ints(s):
    return [int(x) for x in s.split(",") if x]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--n", type=ints, default=[4096, 16384, 65536])
    ap.add_argument("--d", type=ints, default=[128])
    ap.add_argument("--heads", type=int, default=16)
    ap.add_argument("--causal", type=int, default=1)
    ap.add_argument("--reps", type=int, default=10)
    ap.add_argument("--dtype", default="fp16", choices=["fp16", "bf16"])
    ap.add_argument("--out", required=True)
    args, _unknown = ap.parse_known_args()
    if args.quick:
        args.n, args.reps = [4096, 16384], 5
    import torch
    import torch.nn.functional as F

    if not torch.cuda.is_available():
        print("sdpa_gpu: torch has no CUDA device", file=sys.stderr)
        return 3
    dt = torch.float16 if args.dtype == "fp16" else torch.bfloat16
    rows = []
    for d in args.d:
        for n in args.n:
            g = torch.Generator(device="cuda").manual_seed(42)
            shape = (1, args.heads, n, d)
            q, k, v = (torch.rand(shape, device="cuda", dtype=dt, generator=g) * 2 - 1 for _ in range(3))
            times = []
            for i in range(2 + args.reps):
                a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
                a.record()
                F.scaled_dot_product_attention(q, k, v, is_causal=bool(args.causal))
                b.record()
                torch.cuda.synchronize()
                if i >= 2:
                    times.append(a.elapsed_time(b))
            ms = statistics.median(times)
            rows.append(f"torch_sdpa\t{n}\t{d}\t{args.heads}\t{args.causal}\t{args.dtype}\t{ms:.4f}\n")
            print(f"torch_sdpa N={n} d={d}: {ms:.3f} ms", file=sys.stderr)
            del q, k, v
            torch.cuda.empty_cache()
    with open(args.out, "w") as f:
        f.write("# kernel\tn\td\theads\tcausal\tdtype\tms (torch %s)\n" % torch.__version__)
        f.writelines(rows)
    return 0


if __name__ == "__main__":
    sys.exit(main())

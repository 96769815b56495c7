#!/usr/bin/env python3
"""torch.matmul GFLOP/s at given f32 shapes: the baseline for the generated CPU matmul.

Usage: bench_matmul_torch.py [--threads N] [--min-time S] M,N,K [M,N,K ...]
Prints one JSON object per shape: {"m", "n", "k", "gflops", "reps"} (median over reps).
compiler/examples/bench_matmul.rs runs this in the same run as its own measurements.
"""
import argparse
import json
import time

import torch


def bench(m, n, k, min_time):
    gen = torch.Generator().manual_seed(0)
    a = torch.rand(m, k, generator=gen) * 2 - 1
    b = torch.rand(k, n, generator=gen) * 2 - 1
    c = torch.empty(m, n)
    for _ in range(3):
        torch.matmul(a, b, out=c)
    times = []
    start = time.perf_counter()
    while len(times) < 10 or (time.perf_counter() - start < min_time and len(times) < 500):
        t0 = time.perf_counter()
        torch.matmul(a, b, out=c)
        times.append(time.perf_counter() - t0)
    times.sort()
    return 2.0 * m * n * k / times[len(times) // 2] / 1e9, len(times)


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--min-time", type=float, default=1.0)
    p.add_argument("shapes", nargs="+", help="M,N,K")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    for shape in args.shapes:
        m, n, k = (int(x) for x in shape.split(","))
        gflops, reps = bench(m, n, k, args.min_time)
        print(json.dumps({"m": m, "n": n, "k": k, "gflops": gflops, "reps": reps,
                          "threads": torch.get_num_threads(), "torch": torch.__version__}),
              flush=True)


if __name__ == "__main__":
    main()

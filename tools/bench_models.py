#!/usr/bin/env python3
"""Model forward passes, archc against PyTorch, in one run on this machine.

For each configuration (model, batch, seq) this alternates `archc bench --json` and
`tools/bench_torch.py --json` (Hugging Face transformers, eager and SDPA attention, f32,
no_grad) for several rounds, both with the same thread count, and reports the median of
the per-round medians and the speed ratio torch_ms / archc_ms (> 1: archc is faster).
Alternating rounds spreads the machine's noise over both sides.

    cargo build --release -p archc
    python3 tools/bench_models.py [--threads 2] [--rounds 3] [--reps 5] [--markdown]
"""

import argparse
import json
import os
import statistics
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ARCHC = os.path.join(ROOT, "target", "release", "archc")

# (torch model, archc spec, batch, seq)
CONFIGS = [
    ("gpt2", "specs/gpt2.arch:gpt2", 1, 256),
    ("gpt2", "specs/gpt2.arch:gpt2", 4, 128),
    ("llama4", "specs/bench.arch:llama_bench", 1, 256),
    ("llama4", "specs/bench.arch:llama_bench", 4, 128),
    ("mamba130m", "specs/mamba.arch:mamba_130m", 1, 256),
]


def run_json(cmd):
    out = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
    if out.returncode != 0:
        sys.exit(f"failed: {' '.join(cmd)}\n{out.stderr}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--only", help="run only configurations whose model contains this")
    ap.add_argument("--markdown", action="store_true")
    args = ap.parse_args()
    if not os.path.exists(ARCHC):
        sys.exit("build archc first: cargo build --release -p archc")

    rows = []
    for model, spec, b, t in CONFIGS:
        if args.only and args.only not in model:
            continue
        ours, eager, sdpa, rss = [], [], [], []
        for _ in range(args.rounds):
            a = run_json([ARCHC, "bench", spec, "--batch", str(b), "--seq", str(t),
                          "--threads", str(args.threads), "--reps", str(args.reps),
                          "--warmup", "2", "--json"])
            ours.append(a["median_ms"])
            rss.append(a.get("peak_rss_mib", 0.0))
            p = run_json([sys.executable, "tools/bench_torch.py", "--model", model,
                          "--batch", str(b), "--seq", str(t), "--threads", str(args.threads),
                          "--reps", str(args.reps), "--warmup", "2", "--json"])
            eager.append(p["median_ms"])
            if "sdpa" in p:
                sdpa.append(p["sdpa"]["median_ms"])
        row = {
            "model": model, "spec": spec, "batch": b, "seq": t,
            "archc_ms": statistics.median(ours),
            "torch_eager_ms": statistics.median(eager),
            "torch_sdpa_ms": statistics.median(sdpa) if sdpa else None,
            "archc_rounds": ours, "torch_eager_rounds": eager,
        }
        row["speedup_vs_eager"] = row["torch_eager_ms"] / row["archc_ms"]
        if row["torch_sdpa_ms"]:
            row["speedup_vs_sdpa"] = row["torch_sdpa_ms"] / row["archc_ms"]
        row["tokens_per_s"] = b * t / (row["archc_ms"] / 1e3)
        rows.append(row)
        print(json.dumps(row), file=sys.stderr)

    if args.markdown:
        print(f"| model | batch × seq | archc ms | torch eager ms | torch SDPA ms | "
              f"× vs eager | × vs SDPA | archc tokens/s |")
        print("|---|---|---:|---:|---:|---:|---:|---:|")
        for r in rows:
            sd = f"{r['torch_sdpa_ms']:.1f}" if r["torch_sdpa_ms"] else "—"
            xs = f"{r['speedup_vs_sdpa']:.2f}×" if r.get("speedup_vs_sdpa") else "—"
            print(f"| {r['spec']} | {r['batch']} × {r['seq']} | {r['archc_ms']:.1f} | "
                  f"{r['torch_eager_ms']:.1f} | {sd} | {r['speedup_vs_eager']:.2f}× | {xs} | "
                  f"{r['tokens_per_s']:.0f} |")
    else:
        print(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()

#!/usr/bin/env python3
"""Training-step speed and memory: archc against PyTorch eager, each in its own process.

Usage: python3 tools/bench_train.py [--model gpt2] [--batch 4] [--seq 128] [--threads 2]
                                    [--reps 5] [--markdown]

One AdamW step (forward, next-token loss, backward, clip to 1.0, update; weight decay on
>= 2-D parameters) on `batch` x `seq` random tokens, from the same kind of fresh weights:

  torch  GPT2LMHeadModel(GPT2Config()) (GPT-2 small), f32, dropout off, torch.optim.AdamW
         (foreach=False, the single-tensor path), timed with perf_counter after one
         warm-up step; peak memory = the process's ru_maxrss.
  archc  `archc bench specs/gpt2.arch:gpt2 --mode train --json` (same shape, threads and
         step count), peak memory = VmHWM of its process.

Each side runs in a fresh process (PyTorch's OpenMP threads keep spinning after a call).
Prints one JSON object per side and a summary line (or a markdown table row).
"""

import argparse
import json
import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SPECS = {"gpt2": "specs/gpt2.arch:gpt2"}


def torch_side(a):
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import resource
    import statistics
    import time

    import torch
    import transformers

    torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    cfg = transformers.GPT2Config(resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0)
    model = transformers.GPT2LMHeadModel(cfg).float()
    model.train()
    decay = [p for p in model.parameters() if p.dim() >= 2]
    rest = [p for p in model.parameters() if p.dim() < 2]
    opt = torch.optim.AdamW(
        [{"params": decay, "weight_decay": 0.01}, {"params": rest, "weight_decay": 0.0}],
        lr=1e-4,
        foreach=False,
    )
    g = torch.Generator().manual_seed(7)
    x = torch.randint(0, cfg.vocab_size, (a.batch, a.seq), generator=g)

    def step():
        opt.zero_grad(set_to_none=True)
        loss = model(input_ids=x, labels=x).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        return loss.item()

    step()
    times = []
    for _ in range(a.reps):
        t0 = time.perf_counter()
        loss = step()
        times.append((time.perf_counter() - t0) * 1e3)
    med = statistics.median(times)
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(
        json.dumps(
            {
                "side": "torch",
                "torch": torch.__version__,
                "median_ms": med,
                "tokens_per_s": a.batch * a.seq / (med / 1e3),
                "loss": loss,
                "peak_rss_mib": rss,
            }
        )
    )


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--model", default="gpt2", choices=sorted(SPECS))
    p.add_argument("--batch", type=int, default=4)
    p.add_argument("--seq", type=int, default=128)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--reps", type=int, default=5)
    p.add_argument("--markdown", action="store_true")
    p.add_argument("--torch-side", action="store_true", help=argparse.SUPPRESS)
    a = p.parse_args()
    if a.torch_side:
        torch_side(a)
        return
    archc = os.path.join(ROOT, "target", "release", "archc")
    ours = json.loads(
        subprocess.run(
            [archc, "bench", SPECS[a.model], "--mode", "train", "--batch", str(a.batch),
             "--seq", str(a.seq), "--threads", str(a.threads), "--reps", str(a.reps),
             "--warmup", "1", "--json"],
            cwd=ROOT, check=True, capture_output=True, text=True,
        ).stdout
    )
    theirs = json.loads(
        subprocess.run(
            [sys.executable, __file__, "--torch-side", "--batch", str(a.batch), "--seq",
             str(a.seq), "--threads", str(a.threads), "--reps", str(a.reps)],
            check=True, capture_output=True, text=True,
        ).stdout
    )
    print(json.dumps(ours))
    print(json.dumps(theirs))
    ratio = ours["tokens_per_s"] / theirs["tokens_per_s"]
    mem = ours["peak_rss_mib"] / theirs["peak_rss_mib"]
    if a.markdown:
        print(
            f"| {a.model} train step {a.batch}×{a.seq} | {a.threads} | "
            f"{ours['median_ms']:.0f} ms ({ours['tokens_per_s']:.0f} tok/s) | "
            f"{theirs['median_ms']:.0f} ms ({theirs['tokens_per_s']:.0f} tok/s) | {ratio:.2f}× | "
            f"{ours['peak_rss_mib']:.0f} / {theirs['peak_rss_mib']:.0f} MiB |"
        )
    else:
        print(f"archc / torch: {ratio:.2f}× tokens/s, peak memory {mem:.2f}×")


if __name__ == "__main__":
    main()

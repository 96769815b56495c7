#!/usr/bin/env python3
"""Decode speed: archc against Hugging Face `generate` (with its KV cache / recurrent
state), each in its own process, on the same machine in one run.

Usage:
  tools/bench_generate.py [--threads 2] [--reps 3] [--markdown] [--only gpt2]
  tools/bench_generate.py --torch MODEL --batch B --prompt P --new N [--threads 2]
                          [--device cuda]

Configurations (random weights, f32, greedy, no early stop):
  gpt2       GPT-2 small (GPT2LMHeadModel(GPT2Config())), spec specs/gpt2.arch:gpt2:
             batch 1 and batch 8, prompt 16, 128 new tokens
  mamba130m  Mamba-130M (MambaForCausalLM, d 768, 24 layers, d_state 16), spec
             specs/mamba.arch:mamba_130m: batch 1, prompt 16, 128 new tokens
  llama4     specs/bench.arch:llama_bench (LlamaForCausalLM, GQA 16/4 heads, 4 layers):
             batch 1, prompt 16, 128 new tokens

Both sides report new tokens per second over the whole batch with the prefill excluded:
HF's from the time between the first and the last call of a logits processor (called
once per new token, after each forward), archc's from `archc bench --mode decode --json`
(`tokens_per_s`, the decode steps only). The memory-bandwidth floor is the weight bytes
each decode step reads divided by the machine's copy bandwidth, measured here as bytes
read plus bytes written per second by a large memcpy on `--threads` threads (numpy, the
STREAM "copy" convention); the read floor divides by the bandwidth of a sum over the same
memory (reads only). "of it" is floor time / archc's time per step.

Needs torch and transformers (CPU), HF_HUB_OFFLINE=1; builds nothing but runs
target/release/archc (build it with `cargo build --release -p archc`).
"""
import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import argparse  # noqa: E402
import json  # noqa: E402
import resource  # noqa: E402
import statistics  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ARCHC = os.path.join(ROOT, "target", "release", "archc")

CONFIGS = [
    # (name, spec, batch, prompt, new)
    ("gpt2", "specs/gpt2.arch:gpt2", 1, 16, 128),
    ("gpt2", "specs/gpt2.arch:gpt2", 8, 16, 128),
    ("llama4", "specs/bench.arch:llama_bench", 1, 16, 128),
    ("mamba130m", "specs/mamba.arch:mamba_130m", 1, 16, 128),
]


def build_torch(name):
    import torch
    import transformers as tf

    tf.logging.set_verbosity_error()
    torch.manual_seed(0)
    if name == "gpt2":
        model = tf.GPT2LMHeadModel(tf.GPT2Config())
    elif name == "llama4":
        cfg = tf.LlamaConfig(
            vocab_size=32000,
            hidden_size=1024,
            intermediate_size=2816,
            num_hidden_layers=4,
            num_attention_heads=16,
            num_key_value_heads=4,
            max_position_embeddings=2048,
            rms_norm_eps=1e-5,
            tie_word_embeddings=False,
        )
        model = tf.LlamaForCausalLM(cfg)
    elif name == "mamba130m":
        cfg = tf.MambaConfig(
            vocab_size=50280, hidden_size=768, num_hidden_layers=24, state_size=16,
            expand=2, conv_kernel=4, tie_word_embeddings=True,
        )
        model = tf.MambaForCausalLM(cfg)
    else:
        raise SystemExit(f"unknown model {name}")
    return model.float().eval()


def torch_side(args):
    """One configuration with transformers; prints a JSON object."""
    import torch

    torch.set_num_threads(args.threads)
    cuda = args.device == "cuda"
    if cuda:
        # Like for like with archc's f32 kernels: no TF32 in cuBLAS.
        torch.backends.cuda.matmul.allow_tf32 = False
        torch.backends.cudnn.allow_tf32 = False
    model = build_torch(args.torch).to(args.device)
    if args.dtype != "f32":
        # Half-precision weights and activations (transformers' usual way on a GPU).
        model = model.to(torch.bfloat16 if args.dtype == "bf16" else torch.float16)
    vocab = model.config.vocab_size
    g = torch.Generator().manual_seed(7)
    ids = torch.randint(0, vocab, (args.batch, args.prompt), generator=g).to(args.device)
    stamps = []

    class Stamp:
        def __call__(self, input_ids, scores):
            if cuda:
                torch.cuda.synchronize()
            stamps.append(time.perf_counter())
            return scores

    def run():
        stamps.clear()
        with torch.no_grad():
            model.generate(
                ids,
                attention_mask=torch.ones_like(ids),
                max_new_tokens=args.new,
                min_new_tokens=args.new,
                do_sample=False,
                num_beams=1,
                use_cache=True,
                eos_token_id=None,
                pad_token_id=0,
                logits_processor=[Stamp()],
            )
        # The first stamp follows the prefill; each later one a decode step.
        return (stamps[-1] - stamps[0]) / (len(stamps) - 1)

    run()  # warm-up
    per_step = statistics.median(run() for _ in range(args.reps))
    print(json.dumps({
        "model": args.torch,
        "batch": args.batch,
        "prompt": args.prompt,
        "new": args.new,
        "threads": torch.get_num_threads(),
        "ms_per_token": per_step * 1e3,
        "tokens_per_s": args.batch / per_step,
        "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "device": torch.cuda.get_device_name() if cuda else "cpu",
        "dtype": args.dtype,
        "torch": torch.__version__,
    }))


def bandwidths(threads):
    """(copy, read) bandwidth over 512 MiB split across `threads` threads: bytes read +
    written per second by a memcpy (STREAM's convention), and bytes per second of a sum
    (reads only, what a matrix-vector product does with the weights)."""
    import threading

    import numpy as np

    n = 128 << 20
    src = np.ones(n, dtype=np.float32)
    dst = np.empty_like(src)
    step = n // threads
    bounds = [(i * step, n if i == threads - 1 else (i + 1) * step) for i in range(threads)]

    def best_of(work, bytes_moved):
        best = 0.0
        for _ in range(5):
            ts = [threading.Thread(target=work, args=b) for b in bounds]
            t = time.perf_counter()
            for th in ts:
                th.start()
            for th in ts:
                th.join()
            best = max(best, bytes_moved / (time.perf_counter() - t))
        return best

    copy = best_of(lambda lo, hi: np.copyto(dst[lo:hi], src[lo:hi]), 2 * src.nbytes)
    read = best_of(lambda lo, hi: src[lo:hi].sum(), src.nbytes)
    return copy, read


def run_json(cmd):
    out = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT)
    if out.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed:\n{out.stderr}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def cpu_name():
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return "unknown CPU"


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--markdown", action="store_true")
    ap.add_argument("--only")
    ap.add_argument("--torch", help="run one configuration with transformers (internal)")
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--prompt", type=int, default=16)
    ap.add_argument("--new", type=int, default=128)
    ap.add_argument("--device", choices=("cpu", "cuda"), default="cpu",
                    help="--torch only: where transformers runs")
    ap.add_argument("--dtype", choices=("f32", "bf16", "f16"), default="f32",
                    help="--torch only: the model's dtype")
    args = ap.parse_args()
    if args.torch:
        return torch_side(args)
    if not os.path.exists(ARCHC):
        raise SystemExit("build archc first: cargo build --release -p archc")
    bw, read_bw = bandwidths(args.threads)
    rows = []
    for name, spec, b, p, n in CONFIGS:
        if args.only and args.only not in name:
            continue
        hf = run_json([sys.executable, __file__, "--torch", name, "--batch", str(b),
                       "--prompt", str(p), "--new", str(n), "--threads", str(args.threads),
                       "--reps", str(args.reps)])
        ours = run_json([ARCHC, "bench", spec, "--mode", "decode", "--batch", str(b),
                         "--prompt", str(p), "--new", str(n), "--threads", str(args.threads),
                         "--reps", str(args.reps), "--json"])
        floor_ms = ours["weight_bytes"] / bw * 1e3
        read_floor_ms = ours["weight_bytes"] / read_bw * 1e3
        rows.append({
            "model": name, "batch": b, "prompt": p, "new": n,
            "archc_tok_s": ours["tokens_per_s"], "hf_tok_s": hf["tokens_per_s"],
            "ratio": ours["tokens_per_s"] / hf["tokens_per_s"],
            "archc_ms": ours["ms_per_token"], "hf_ms": hf["ms_per_token"],
            "floor_ms": floor_ms, "floor_pct": 100 * floor_ms / ours["ms_per_token"],
            "read_floor_ms": read_floor_ms,
            "read_floor_pct": 100 * read_floor_ms / ours["ms_per_token"],
            "archc_rss_mib": ours["peak_rss_mib"], "hf_rss_mib": hf["peak_rss_mib"],
        })
    head = (f"{cpu_name()}, {args.threads} threads, copy bandwidth {bw / 1e9:.1f} GB/s "
            f"(read + write), read bandwidth {read_bw / 1e9:.1f} GB/s, "
            f"torch {hf['torch'] if rows else '?'}")
    if args.markdown:
        print(head + "\n")
        print("| model | batch | prompt + new | archc tok/s | HF tok/s | ratio | archc ms/step "
              "| copy floor ms (of it) | read floor ms (of it) | archc RSS MiB | HF RSS MiB |")
        print("|---|---|---|---|---|---|---|---|---|---|---|")
        for r in rows:
            print(f"| {r['model']} | {r['batch']} | {r['prompt']} + {r['new']} | "
                  f"{r['archc_tok_s']:.1f} | {r['hf_tok_s']:.1f} | {r['ratio']:.2f}× | "
                  f"{r['archc_ms']:.2f} | {r['floor_ms']:.2f} ({r['floor_pct']:.0f}%) | "
                  f"{r['read_floor_ms']:.2f} ({r['read_floor_pct']:.0f}%) | "
                  f"{r['archc_rss_mib']:.0f} | {r['hf_rss_mib']:.0f} |")
    else:
        print(head)
        for r in rows:
            print(json.dumps(r))


if __name__ == "__main__":
    main()

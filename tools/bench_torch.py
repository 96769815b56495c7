#!/usr/bin/env python3
"""PyTorch (Hugging Face transformers) forward-pass timing: the reference for model benchmarks.

Usage:
  bench_torch.py --model gpt2|llama4|mamba130m --batch B --seq T [--threads 2]
                 [--warmup 3] [--reps 10] [--attn eager|sdpa|both] [--device cpu|cuda] [--json]
  bench_torch.py --model MODEL --params-only

The model is built from a config written here (random weights, seed 0; nothing is
downloaded: HF_HUB_OFFLINE=1), in f32, eval() and torch.no_grad(), and its forward
(input ids -> logits for every position, use_cache=False) is timed with
time.perf_counter: `warmup` untimed calls, then `reps` timed ones.

  gpt2       GPT2LMHeadModel(GPT2Config()): GPT-2 small, 12 layers, d 768, 12 heads,
             vocab 50257, context 1024, tied head. Spec: specs/gpt2.arch:gpt2
  llama4     LlamaForCausalLM: d 1024, 16 query / 4 kv heads, 4 layers, SwiGLU 2816,
             vocab 32000, context 2048, RMSNorm eps 1e-5, untied head, no biases.
             Spec: specs/bench.arch:llama_bench
  mamba130m  MambaForCausalLM: d 768, 24 layers, vocab 50280, d_state 16, expand 2,
             conv 4, tied head. Spec: specs/mamba.arch:mamba_130m

For gpt2 and llama4 both attention implementations are timed (same weights, same
inputs): the top-level fields are `eager`; the `sdpa` object holds the
scaled_dot_product_attention run. Mamba on CPU runs transformers' pure-torch path
(see `mamba_path` in the output): without the mamba_ssm / causal_conv1d CUDA packages
the selective scan is a Python loop over the sequence, one step per token.

--json prints one JSON object on stdout; otherwise one readable line per
attention implementation. --params-only prints the parameter count
(sum(p.numel() for p in model.parameters())) and exits.
"""
import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import argparse  # noqa: E402
import importlib.util  # noqa: E402
import json  # noqa: E402
import statistics  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
import warnings  # noqa: E402

import torch  # noqa: E402
import transformers  # noqa: E402

MODELS = ("gpt2", "llama4", "mamba130m")
ATTENTION = {"gpt2": True, "llama4": True, "mamba130m": False}
SPECS = {
    "gpt2": "specs/gpt2.arch:gpt2",
    "llama4": "specs/bench.arch:llama_bench",
    "mamba130m": "specs/mamba.arch:mamba_130m",
}


def build(name, attn="eager"):
    """The model in f32, eval mode, with weights drawn from seed 0."""
    torch.manual_seed(0)
    if name == "gpt2":
        from transformers import GPT2Config, GPT2LMHeadModel

        config = GPT2Config(attn_implementation=attn)
        model = GPT2LMHeadModel(config)
    elif name == "llama4":
        from transformers import LlamaConfig, LlamaForCausalLM

        config = LlamaConfig(
            hidden_size=1024,
            num_attention_heads=16,
            num_key_value_heads=4,
            head_dim=64,
            num_hidden_layers=4,
            intermediate_size=2816,
            vocab_size=32000,
            max_position_embeddings=2048,
            rms_norm_eps=1e-5,
            rope_theta=10000.0,
            hidden_act="silu",
            tie_word_embeddings=False,
            attention_bias=False,
            mlp_bias=False,
            attn_implementation=attn,
        )
        model = LlamaForCausalLM(config)
    elif name == "mamba130m":
        from transformers import MambaConfig, MambaForCausalLM

        config = MambaConfig(
            hidden_size=768,
            num_hidden_layers=24,
            vocab_size=50280,
            state_size=16,
            expand=2,
            conv_kernel=4,
        )
        model = MambaForCausalLM(config)
    else:
        raise ValueError(f"unknown model {name!r}")
    return model.float().eval()


def param_count(model):
    return sum(p.numel() for p in model.parameters())


def mamba_path(model):
    """Which selective-scan implementation MambaMixer uses in eager mode on this machine."""
    if importlib.util.find_spec("mamba_ssm") is not None and torch.cuda.is_available():
        return "mamba_ssm kernels"
    mixer = model.backbone.layers[0].mixer
    if mixer.use_mambapy and importlib.util.find_spec("mambapy") is not None:
        return "torch slow path: mambapy parallel scan"
    # use_associative_scan only applies under torch.compile; eager falls to the loop.
    return "torch slow path: sequential scan (Python loop over the sequence)"


def forward(model, ids):
    return model(input_ids=ids, use_cache=False).logits


def sync(ids):
    if ids.is_cuda:
        torch.cuda.synchronize()


def time_forward(model, ids, warmup, reps):
    with torch.no_grad():
        for _ in range(warmup):
            logits = forward(model, ids)
        sync(ids)
        times = []
        for _ in range(reps):
            t0 = time.perf_counter()
            logits = forward(model, ids)
            sync(ids)
            times.append(time.perf_counter() - t0)
    median = statistics.median(times)
    tokens = ids.shape[0] * ids.shape[1]
    result = {
        "median_ms": median * 1e3,
        "min_ms": min(times) * 1e3,
        "max_ms": max(times) * 1e3,
        "tokens_per_s": tokens / median,
    }
    return result, logits


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", required=True, choices=MODELS)
    p.add_argument("--batch", type=int, default=1)
    p.add_argument("--seq", type=int, default=256)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--reps", type=int, default=10)
    p.add_argument("--attn", choices=("eager", "sdpa", "both"), default="both",
                   help="attention implementation(s) to time for gpt2/llama4 (default both)")
    p.add_argument("--device", choices=("cpu", "cuda"), default="cpu",
                   help="where the model runs (cuda: the first GPU, f32, TF32 off)")
    p.add_argument("--dtype", choices=("f32", "bf16", "f16"), default="f32",
                   help="the model's dtype (bf16/f16: cuda only, tensor-core products)")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.add_argument("--params-only", action="store_true",
                   help="print the parameter count and exit")
    args = p.parse_args()

    warnings.filterwarnings("ignore")
    transformers.logging.set_verbosity_error()
    torch.set_num_threads(args.threads)

    model = build(args.model, "eager")
    params = param_count(model)
    if args.params_only:
        print(json.dumps({"model": args.model, "params": params}) if args.json else params)
        return

    gen = torch.Generator().manual_seed(1234)
    vocab = model.config.vocab_size
    ids = torch.randint(0, vocab, (args.batch, args.seq), generator=gen)
    if args.device == "cuda":
        # The same f32 arithmetic archc's kernels do: no TF32 tensor-core shortcuts.
        torch.backends.cuda.matmul.allow_tf32 = False
        torch.backends.cudnn.allow_tf32 = False
        model = model.to("cuda")
        ids = ids.to("cuda")
    if args.dtype != "f32":
        if args.device != "cuda":
            raise SystemExit("--dtype bf16|f16 times the GPU's half-precision products: add --device cuda")
        model = model.to(torch.bfloat16 if args.dtype == "bf16" else torch.float16)

    out = {
        "model": args.model,
        "spec": SPECS[args.model],
        "batch": args.batch,
        "seq": args.seq,
        "threads": torch.get_num_threads(),
        "warmup": args.warmup,
        "reps": args.reps,
        "params": params,
        "dtype": {"f32": "float32", "bf16": "bfloat16", "f16": "float16"}[args.dtype],
        "device": args.device if args.device == "cpu" else torch.cuda.get_device_name(0),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
    }

    if ATTENTION[args.model]:
        impls = ["eager", "sdpa"] if args.attn == "both" else [args.attn]
        logits = {}
        for impl in impls:
            model.set_attn_implementation(impl)
            res, logits[impl] = time_forward(model, ids, args.warmup, args.reps)
            if impl == impls[0]:
                out["attn"] = impl
                out.update(res)
            else:
                out[impl] = res
        if len(impls) == 2:
            out["sdpa"]["max_abs_diff_vs_eager"] = (
                (logits["eager"] - logits["sdpa"]).abs().max().item())
    else:
        out["mamba_path"] = mamba_path(model)
        res, _ = time_forward(model, ids, args.warmup, args.reps)
        out.update(res)

    if args.json:
        print(json.dumps(out))
        return

    def line(label, r):
        return (f"{args.model} {label}B={args.batch} T={args.seq} threads={out['threads']} "
                f"params={params:,}: median {r['median_ms']:.1f} ms "
                f"(min {r['min_ms']:.1f}, max {r['max_ms']:.1f}), "
                f"{r['tokens_per_s']:,.0f} tok/s")

    if ATTENTION[args.model]:
        print(line(f"[{out['attn']}] ", out))
        if "sdpa" in out and out["attn"] != "sdpa":
            print(line("[sdpa] ", out["sdpa"])
                  + f", max |logits - eager| {out['sdpa']['max_abs_diff_vs_eager']:.2e}")
    else:
        print(line("", out) + f" [{out['mamba_path']}]")
    print(f"torch {torch.__version__}, transformers {transformers.__version__}",
          file=sys.stderr)


if __name__ == "__main__":
    main()

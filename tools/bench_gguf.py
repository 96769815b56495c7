#!/usr/bin/env python3
"""Decode and prompt-processing speed on the same GGUF files: archc against llama.cpp
(through llama-cpp-python, built from source), each in its own process, the same threads.

Build llama.cpp for the host's vector units. Where the CPU reports AMX but the OS (a VM)
faults on its tile instructions (`ldtilecfg`), build without AMX:

    CMAKE_ARGS="-DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON \
      -DGGML_BMI2=ON -DGGML_AVX512=ON -DGGML_AVX512_VNNI=ON -DGGML_AVX512_VBMI=ON \
      -DGGML_AVX512_BF16=ON" pip install --no-cache-dir llama-cpp-python

The model is a randomly initialised LLaMA-shaped network (no downloads here): by default
d_model 1024, 16 layers, 16 heads over 4 key/value heads, SwiGLU 2816, vocabulary 32000
(~245M parameters), saved as Hugging Face safetensors with the repository's byte-level BPE
tokenizer (its token list padded to the vocabulary), then written by `archc quantize` in
each type. For each type:

    archc      `archc bench model.arch --mode decode --batch 1 --prompt 16 --new N
               --weights model-T.gguf --json` (tokens/s of the new tokens, prefill
               excluded), and the same with `--prompt 512 --new 2`: 512 / its prefill
               time (prompt tokens/s — the step program's prefill, as `archc generate`
               runs a prompt: the LM head on the last position only, as llama.cpp's eval
               computes it); peak RSS
    llama.cpp  `Llama(model-T.gguf).eval()` of a 512-token prompt (tokens/s), then N
               single-token evals after a 16-token prompt (tokens/s); peak RSS

With `--int-dots`, K-quant files (Q4_K, Q6_K) are decoded and prefilled a second time with
`archc bench … --int-dots` (integer dot products over activations quantized per 256 values to
8 bits, as llama.cpp computes them; the default is f32 products over the dequantized weights).

Usage: python3 tools/bench_gguf.py [--workdir DIR] [--types q8_0,q4_k] [--threads 2]
                                   [--new 64] [--int-dots] [--rounds R] [--markdown]

With `--rounds R` every side is timed R times, alternating, and the table shows medians
(each round's ratios printed below it): the VMs this runs on drift by tens of percent
within minutes.
"""

import argparse
import json
import os
import resource
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ARCHC = os.environ.get("ARCHC", os.path.join(ROOT, "target", "release", "archc"))


def make_model(work, a):
    hf = os.path.join(work, "hf")
    if os.path.exists(os.path.join(hf, "model.safetensors")):
        return hf
    import shutil

    import torch
    import transformers as tf

    torch.manual_seed(0)
    cfg = tf.LlamaConfig(vocab_size=32000, hidden_size=a.d_model, intermediate_size=a.ffn,
                         num_hidden_layers=a.layers, num_attention_heads=16,
                         num_key_value_heads=4, max_position_embeddings=2048,
                         rms_norm_eps=1e-5, tie_word_embeddings=False)
    model = tf.LlamaForCausalLM(cfg)
    model.save_pretrained(hf, safe_serialization=True)
    shutil.copy(os.path.join(ROOT, "data", "tinytales-tokenizer.json"), os.path.join(hf, "tokenizer.json"))
    return hf


def llama_cpp_side(a):
    from llama_cpp import Llama

    llm = Llama(model_path=a.model, n_threads=a.threads, n_threads_batch=a.threads, n_ctx=1024,
                n_batch=512, verbose=False)
    prompt = [10 + (i * 7) % 400 for i in range(512)]
    llm.eval(prompt[:16])  # warm up
    llm.reset()
    t0 = time.perf_counter()
    llm.eval(prompt)
    pp = len(prompt) / (time.perf_counter() - t0)
    rates = []
    for _ in range(a.reps):
        llm.reset()
        llm.eval(prompt[:16])
        tok = 11
        t0 = time.perf_counter()
        for _ in range(a.new):
            llm.eval([tok])
            tok = 10 + (tok * 31) % 400
        rates.append(a.new / (time.perf_counter() - t0))
    rates.sort()
    print(json.dumps({"pp_tokens_per_s": pp, "decode_tokens_per_s": rates[len(rates) // 2],
                      "peak_rss_mib": vm_hwm_mib()}))


def vm_hwm_mib():
    """This process's peak resident memory (VmHWM). Not `ru_maxrss`: Linux carries that
    across `exec` from the forking parent, which may hold torch (1.6 GiB) when the script
    has just written the model."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def run_json(cmd):
    out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--workdir", default="/tmp/archc-gguf-bench")
    p.add_argument("--types", default="q8_0,q4_k")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--new", type=int, default=64)
    p.add_argument("--reps", type=int, default=3)
    p.add_argument("--d-model", dest="d_model", type=int, default=1024)
    p.add_argument("--ffn", type=int, default=2816)
    p.add_argument("--layers", type=int, default=16)
    p.add_argument("--markdown", action="store_true")
    p.add_argument("--int-dots", dest="int_dots", action="store_true")
    p.add_argument("--rounds", type=int, default=1)
    p.add_argument("--llama-cpp-side", action="store_true")
    p.add_argument("--model")
    a = p.parse_args()
    if a.llama_cpp_side:
        llama_cpp_side(a)
        return
    os.makedirs(a.workdir, exist_ok=True)
    hf = make_model(a.workdir, a)
    rows = []
    for t in a.types.split(","):
        gguf = os.path.join(a.workdir, f"model-{t}.gguf")
        if not os.path.exists(gguf):
            subprocess.run([ARCHC, "quantize", hf, "--type", t, "-o", gguf], check=True)
        spec = os.path.join(a.workdir, "model.arch")
        subprocess.run([ARCHC, "import-gguf", gguf, "-o", spec, "--name", "bench"], check=True,
                       capture_output=True)
        th = str(a.threads)
        decode = [ARCHC, "bench", spec, "--mode", "decode", "--batch", "1", "--prompt", "16",
                  "--new", str(a.new), "--weights", gguf, "--threads", th,
                  "--reps", str(a.reps), "--warmup", "1", "--json"]
        with_int = a.int_dots and t in ("q4_k", "q5_k", "q6_k")
        # pp512: the step program's prefill of a 512-token prompt (what `archc generate`
        # runs), logits of the last position only, as llama.cpp's `eval` computes them.
        prompt = [ARCHC, "bench", spec, "--mode", "decode", "--batch", "1", "--prompt", "512",
                  "--new", "2", "--weights", gguf, "--threads", th, "--reps", str(a.reps),
                  "--warmup", "1", "--json"]

        def prefill(extra):
            r = run_json(prompt + extra)
            return {"tokens_per_s": 512 / (r["prefill_ms"] / 1e3), "prefill_ms": r["prefill_ms"]}

        rounds = []
        # Each round times every side once, one after the other, so a machine whose speed
        # drifts moves the sides of a round together; the table takes medians.
        for _ in range(a.rounds):
            dec = run_json(decode)
            dec_int = run_json(decode + ["--int-dots"]) if with_int else None
            pre = prefill([])
            pre_int = prefill(["--int-dots"]) if with_int else None
            theirs = run_json([sys.executable, __file__, "--llama-cpp-side", "--model", gguf,
                               "--threads", th, "--new", str(a.new), "--reps", str(a.reps)])
            size = os.path.getsize(gguf) / 2**20
            print(json.dumps({"type": t, "file_mib": size, "archc_decode": dec, "archc_prefill": pre,
                              "archc_decode_int_dots": dec_int, "archc_prefill_int_dots": pre_int,
                              "llama_cpp": theirs}))
            rounds.append((dec, pre, theirs, dec_int, pre_int))
        med = lambda xs: sorted(xs)[len(xs) // 2]
        pick = lambda i, key: med([r[i][key] for r in rounds]) if rounds[0][i] else None
        dec = {"tokens_per_s": pick(0, "tokens_per_s"), "peak_rss_mib": pick(0, "peak_rss_mib")}
        pre = {"tokens_per_s": pick(1, "tokens_per_s")}
        theirs = {k: pick(2, k) for k in ("decode_tokens_per_s", "pp_tokens_per_s", "peak_rss_mib")}
        dec_int = {"tokens_per_s": pick(3, "tokens_per_s"), "pp": pick(4, "tokens_per_s")} if with_int else None
        ratios = {
            "decode": [r[0]["tokens_per_s"] / r[2]["decode_tokens_per_s"] for r in rounds],
            "pp512": [r[1]["tokens_per_s"] / r[2]["pp_tokens_per_s"] for r in rounds],
        }
        if with_int:
            ratios["decode --int-dots"] = [r[3]["tokens_per_s"] / r[2]["decode_tokens_per_s"]
                                           for r in rounds]
            ratios["pp512 --int-dots"] = [r[4]["tokens_per_s"] / r[2]["pp_tokens_per_s"]
                                          for r in rounds]
        rows.append((t, size, dec, pre, theirs, dec_int, ratios))
    if a.markdown:
        print("| type | file | decode archc | decode llama.cpp | ratio | pp512 archc | pp512 llama.cpp | ratio | peak RSS archc / llama.cpp |")
        print("|---|---|---|---|---|---|---|---|---|")
        for t, size, dec, pre, th, dec_int, _ in rows:
            d, dl = dec["tokens_per_s"], th["decode_tokens_per_s"]
            pp, ppl = pre["tokens_per_s"], th["pp_tokens_per_s"]
            print(f"| {t} | {size:.0f} MiB | {d:.1f} tok/s | {dl:.1f} tok/s | {d / dl:.2f}× | "
                  f"{pp:.0f} tok/s | {ppl:.0f} tok/s | {pp / ppl:.2f}× | "
                  f"{dec.get('peak_rss_mib', 0):.0f} / {th['peak_rss_mib']:.0f} MiB |")
        for t, size, dec, pre, th, dec_int, ratios in rows:
            if dec_int:
                d, dl = dec_int["tokens_per_s"], th["decode_tokens_per_s"]
                pp, ppl = dec_int["pp"], th["pp_tokens_per_s"]
                print(f"\n{t} with --int-dots: decode {d:.1f} vs {dl:.1f} tok/s = {d / dl:.2f}×, "
                      f"pp512 {pp:.0f} vs {ppl:.0f} tok/s = {pp / ppl:.2f}× llama.cpp")
            if a.rounds > 1:
                per = "; ".join(f"{k} " + ", ".join(f"{x:.2f}×" for x in v) for k, v in ratios.items())
                print(f"\n{t} per round (archc / llama.cpp): {per}")


if __name__ == "__main__":
    main()

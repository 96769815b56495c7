#!/usr/bin/env bash
# The main job on a fresh machine: install prerequisites, build archc, check a spec and
# print its statistics. Usage: tools/run.sh [FILE[:MODEL]]   (default specs/llama3.arch)
set -euo pipefail
cd "$(dirname "$0")/.."
source tools/prereqs.sh
export PATH="$HOME/.cargo/bin:$PATH"
target="${1:-specs/llama3.arch}"
cargo build --release --locked -p archc
./target/release/archc check "${target%%:*}"
./target/release/archc stats "$target"

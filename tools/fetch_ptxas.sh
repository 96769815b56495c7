#!/usr/bin/env bash
# Fetches NVIDIA's PTX assembler `ptxas` — shipped in the PyPI wheel `nvidia-cuda-nvcc-cu12`
# (about 40 MiB; no GPU, driver or CUDA install needed) — so the test suite can check
# that every generated PTX file assembles for sm_80 and sm_90. Needs pip and python3.
#
#   tools/fetch_ptxas.sh            # downloads once, then prints the path of ptxas
#   ARCHC_PTXAS=$(tools/fetch_ptxas.sh | tail -n 1)
#
# The wheel is unpacked into target/ptxas/ (ignored by git). Idempotent.
set -euo pipefail
cd "$(dirname "$0")/.."

PKG=nvidia-cuda-nvcc-cu12
VERSION=${PTXAS_VERSION:-12.9.86}
DEST=target/ptxas
BIN=$DEST/nvidia/cuda_nvcc/bin/ptxas
STAMP=$DEST/.version

if [[ -x $BIN && -f $STAMP && $(cat "$STAMP") == "$VERSION" ]]; then
    echo "$(pwd)/$BIN"
    exit 0
fi

PIP=(python3 -m pip)
if ! "${PIP[@]}" --version >/dev/null 2>&1; then
    PIP=(pip)
fi

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
echo "downloading $PKG==$VERSION" >&2
"${PIP[@]}" download --no-deps --only-binary=:all: "$PKG==$VERSION" -d "$tmp" >&2
wheel=$(ls "$tmp"/*.whl | head -n 1)

rm -rf "$DEST"
mkdir -p "$DEST"
# Only the assembler: a wheel is a zip file, and python's zipfile avoids needing `unzip`.
python3 - "$wheel" "$DEST" <<'PY'
import os, sys, zipfile
wheel, dest = sys.argv[1], sys.argv[2]
with zipfile.ZipFile(wheel) as z:
    member = "nvidia/cuda_nvcc/bin/ptxas"
    z.extract(member, dest)
    os.chmod(os.path.join(dest, member), 0o755)
PY
"$BIN" --version >/dev/null
echo "$VERSION" > "$STAMP"
echo "$(pwd)/$BIN"

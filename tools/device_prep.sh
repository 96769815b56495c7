#!/usr/bin/env bash
# Prepares what tools/device_check.sh runs on a GPU machine (which has no Rust): the
# runtime binary and cuda packages built here, under target/device/ (ignored by git;
# carry it with the device tool). Every Hugging Face fixture's model, GPT-2 small and
# specs/bench.arch:llama_bench for the timings (GPT-2 also with bf16 and q8_0 weights).
#
#   tools/device_prep.sh [--sm 90] [--sim]
#
# --sim also compiles each package's thread programs for this CPU, so that
# `DEVICE_CHECK_SIM=1 tools/device_check.sh` rehearses the check here on the simulator.
set -euo pipefail
cd "$(dirname "$0")/.."
SM=90
SIM=()
while [[ $# -gt 0 ]]; do
    case $1 in
        --sm) SM=$2; shift 2 ;;
        --sim) SIM=(--sim); shift ;;
        *) echo "usage: tools/device_prep.sh [--sm 80|90] [--sim]" >&2; exit 2 ;;
    esac
done
export LLVM_SYS_191_PREFIX=${LLVM_SYS_191_PREFIX:-/usr/lib/llvm-19}
cargo build --release --locked -p archc -p arch-runtime >&2
cargo build --release --locked -p archc --example matmul_package --example attention_package >&2
OUT=target/device
rm -rf "$OUT"
mkdir -p "$OUT/bin" "$OUT/pkg"
cp target/release/arch-run "$OUT/bin/"
strip "$OUT/bin/arch-run" 2>/dev/null || true
ARCHC=target/release/archc
for dir in compiler/tests/fixtures/hf/*/; do
    name=$(basename "$dir")
    MASK=()
    # The package takes an attention_mask when the fixture's inputs have one.
    if python3 -c "import sys; from safetensors import safe_open; f = safe_open(sys.argv[1], 'np'); sys.exit(0 if 'attention_mask' in f.keys() else 1)" "$dir/inputs.safetensors"; then
        MASK=(--attention-mask)
    fi
    # A fixture of a bare encoder (BertModel) recorded only the hidden states.
    if ! python3 -c "import sys; from safetensors import safe_open; f = safe_open(sys.argv[1], 'np'); sys.exit(0 if 'logits' in f.keys() else 1)" "$dir/outputs.safetensors"; then
        MASK+=(--output hidden)
    fi
    "$ARCHC" build "$dir/model.arch" --target cuda --sm "$SM" "${SIM[@]}" "${MASK[@]}" \
        --no-cache -o "$OUT/pkg/$name" >/dev/null 2>"$OUT/pkg/$name.log"
    echo "built $name" >&2
done
"$ARCHC" build specs/gpt2.arch:gpt2 --target cuda --sm "$SM" "${SIM[@]}" --no-cache -o "$OUT/pkg/perf_gpt2" >/dev/null
"$ARCHC" build specs/bench.arch:llama_bench --target cuda --sm "$SM" "${SIM[@]}" --no-cache -o "$OUT/pkg/perf_llama4" >/dev/null
# GPT-2 small with its matrices stored in bf16 and q8_0 on the device (decode reads half or
# a quarter of the bytes; activations stay f32).
for q in bf16 q8_0; do
    "$ARCHC" build specs/gpt2.arch:gpt2 --target cuda --sm "$SM" "${SIM[@]}" --quant "$q" --no-cache \
        -o "$OUT/pkg/perf_gpt2_$q" >/dev/null
done
# --dtype bf16: matrices stored in bf16 and the matmul tiles on bf16 tensor-core products
# (f32 accumulation; activations between kernels stay f32).
for m in gpt2:gpt2 bench:llama_bench; do
    "$ARCHC" build "specs/${m%%:*}.arch:${m#*:}" --target cuda --sm "$SM" "${SIM[@]}" --dtype bf16 \
        --no-cache -o "$OUT/pkg/perf_${m%%:*}_dtype_bf16" >/dev/null
done
# One 4096³ matmul (both operands parameters, resident on the device) in f32 (3×TF32) and
# with bf16 products, to time against torch.matmul (cuBLAS).
for d in f32 bf16; do
    target/release/examples/matmul_package "$OUT/pkg/perf_matmul_$d" 4096 4096 4096 cuda "$d" \
        --sm "$SM" "${SIM[@]}" >/dev/null 2>&1
done
# The same with more shared-memory stages in the k loop (ARCHC_STAGES; past 48 KiB a
# block's stages are dynamic shared memory), to pick the default from their times.
for st in 3 4; do
    for d in f32 bf16; do
        ARCHC_STAGES=$st target/release/examples/matmul_package "$OUT/pkg/perf_matmul_${d}_s$st" \
            4096 4096 4096 cuda "$d" --sm "$SM" "${SIM[@]}" >/dev/null 2>&1
    done
done
# And with 32 words of k per staged row instead of 16 (ARCHC_KWORDS=32: half the waits and
# barriers per flop, twice the shared memory).
for d in f32 bf16; do
    ARCHC_KWORDS=32 target/release/examples/matmul_package "$OUT/pkg/perf_matmul_${d}_k32" \
        4096 4096 4096 cuda "$d" --sm "$SM" "${SIM[@]}" >/dev/null 2>&1
done
# And with the mma fragments loaded word by word instead of by ldmatrix (ARCHC_LDMATRIX=0).
for d in f32 bf16; do
    ARCHC_LDMATRIX=0 target/release/examples/matmul_package "$OUT/pkg/perf_matmul_${d}_words" \
        4096 4096 4096 cuda "$d" --sm "$SM" "${SIM[@]}" >/dev/null 2>&1
done
# One causal attention, 8 × 16 heads × 1024 × 64 (q, k, v parameters, resident on the
# device) in f32 (3×TF32) and with bf16 products, to time against
# scaled_dot_product_attention.
for d in f32 bf16; do
    target/release/examples/attention_package "$OUT/pkg/perf_attention_$d" 8 16 1024 64 cuda "$d" \
        --sm "$SM" "${SIM[@]}" >/dev/null 2>&1
done
# Hopper's warpgroup products (ARCHC_MMA=wgmma: sm_90a, the matmul tiles on `wgmma`), not
# run on a GPU before: the check compares them with the mma.sync packages (a matmul with
# partial tiles, GPT-2's bf16 forward) and times them.
if [[ $SM == 90 && ${#SIM[@]} == 0 ]]; then
    for mma in mma wgmma; do
        ARCHC_MMA=$mma target/release/examples/matmul_package "$OUT/pkg/check_matmul_$mma" 300 200 72 \
            cuda bf16 --sm 90 >/dev/null 2>&1
        # The same with 32 words of k per staged row (ARCHC_KWORDS=32).
        ARCHC_MMA=$mma ARCHC_KWORDS=32 target/release/examples/matmul_package \
            "$OUT/pkg/check_matmul_${mma}_k32" 300 200 72 cuda bf16 --sm 90 >/dev/null 2>&1
    done
    ARCHC_MMA=wgmma target/release/examples/matmul_package "$OUT/pkg/perf_matmul_bf16_wgmma" \
        4096 4096 4096 cuda bf16 --sm 90 >/dev/null 2>&1
    ARCHC_MMA=wgmma ARCHC_STAGES=4 target/release/examples/matmul_package \
        "$OUT/pkg/perf_matmul_bf16_wgmma_s4" 4096 4096 4096 cuda bf16 --sm 90 >/dev/null 2>&1
    ARCHC_MMA=wgmma ARCHC_KWORDS=32 target/release/examples/matmul_package \
        "$OUT/pkg/perf_matmul_bf16_wgmma_k32" 4096 4096 4096 cuda bf16 --sm 90 >/dev/null 2>&1
    ARCHC_MMA=wgmma "$ARCHC" build specs/gpt2.arch:gpt2 --target cuda --sm 90 --dtype bf16 --no-cache \
        -o "$OUT/pkg/perf_gpt2_dtype_bf16_wgmma" >/dev/null
fi
# Training: the GPT-2 fixture's train package for the GPU, and what two AdamW steps on one
# batch give on this CPU (losses, gradient norms, weights), for the check to compare.
mkdir -p "$OUT/train"
python3 - "$OUT/train/batch.safetensors" <<'PY'
import sys
from safetensors.numpy import load_file, save_file
ids = load_file("compiler/tests/fixtures/train/gpt2/data.safetensors")["input_ids"][:2]
save_file({"input_ids": ids, "labels": ids.copy()}, sys.argv[1])
PY
"$ARCHC" build compiler/tests/fixtures/hf/gpt2/model.arch --mode train --target cuda --sm "$SM" \
    "${SIM[@]}" --no-cache -o "$OUT/train/gpt2" >/dev/null
CPU_TRAIN=$(mktemp -d)
"$ARCHC" build compiler/tests/fixtures/hf/gpt2/model.arch --mode train -o "$CPU_TRAIN/gpt2" >/dev/null
target/release/arch-run "$CPU_TRAIN/gpt2" --weights compiler/tests/fixtures/hf/gpt2/model.safetensors \
    --inputs "$OUT/train/batch.safetensors" --out "$OUT/train/expected.safetensors" --train-steps 2 >&2
rm -rf "$CPU_TRAIN"
echo "sm_$SM" > "$OUT/sm"
du -sh "$OUT" >&2

#!/usr/bin/env bash
# llm.c's CPU trainer (karpathy/llm.c, train_gpt2.c; not part of this repository) as a
# second anchor for `archc bench --mode train`: one AdamW step of GPT-2 small (124M) at
# batch B × T tokens on fresh random weights, OpenMP on THREADS threads.
#
# Usage: LLMC_DIR=/path/to/llm.c tools/bench_llmc.sh [B] [T] [THREADS]
#
# It builds train_gpt2.c with -O3 -march=native -fopenmp after patching its batch and
# sequence length and dropping the validation and sampling passes, writes a random
# gpt2_124M.bin (llm.c's checkpoint layout, N(0, 0.02)) and a token file of random ids, runs
# 6 steps and prints the median of the last 5 step times llm.c reports.
set -euo pipefail
B=${1:-4}; T=${2:-128}; THREADS=${3:-2}
: "${LLMC_DIR:?set LLMC_DIR to a checkout of karpathy/llm.c}"
work=$(mktemp -d)
cp -r "$LLMC_DIR/train_gpt2.c" "$LLMC_DIR/llmc" "$work/"
cd "$work"
sed -i -e "s/int B = 4;/int B = $B;/" -e "s/int T = 64;/int T = $T;/" \
    -e 's/for (int step = 0; step <= 40; step++) {/for (int step = 0; step <= 5; step++) {/' \
    -e 's/if (step % 10 == 0) {/if (0) {/' -e 's/if (step > 0 \&\& step % 20 == 0) {/if (0) {/' train_gpt2.c
gcc -O3 -march=native -fopenmp -Wno-unused-result -o train_gpt2 train_gpt2.c -lm
python3 - "$T" <<'PY'
import sys, numpy as np
C, L, NH, maxT, V, Vp = 768, 12, 12, 1024, 50257, 50304
header = np.zeros(256, dtype=np.int32)
header[:8] = [20240326, 3, maxT, V, L, NH, C, Vp]
n = (Vp * C + maxT * C
     + L * (2 * C + 3 * C * C + 3 * C + C * C + C + 2 * C + 4 * C * C + 4 * C + 4 * C * C + C)
     + 2 * C)
rng = np.random.default_rng(0)
with open("gpt2_124M.bin", "wb") as f:
    f.write(header.tobytes())
    f.write((rng.standard_normal(n, dtype=np.float32) * 0.02).tobytes())
import os
os.makedirs("dev/data/tinyshakespeare", exist_ok=True)
for split in ("train", "val"):
    ntok = 200_000
    h = np.zeros(256, dtype=np.int32)
    h[:3] = [20240520, 1, ntok]
    with open(f"dev/data/tinyshakespeare/tiny_shakespeare_{split}.bin", "wb") as f:
        f.write(h.tobytes())
        f.write(rng.integers(0, 50257, ntok, dtype=np.uint16).tobytes())
print(f"{n} parameters")
PY
OMP_NUM_THREADS=$THREADS ./train_gpt2 | tee log.txt | grep "^step"
python3 - <<'PY'
import re, statistics
ms = [float(m) for m in re.findall(r"took ([0-9.]+) ms", open("log.txt").read())]
med = statistics.median(ms[1:])
print(f"llm.c train step: median {med:.0f} ms of {len(ms) - 1} steps after the first")
PY
rm -rf "$work"

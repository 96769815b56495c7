#!/usr/bin/env bash
# The GPU check (issue 10), for a machine with an NVIDIA GPU, its driver, PyTorch and
# transformers, and no Rust: it runs the runtime binary and cuda packages that
# tools/device_prep.sh built on the CPU machine (target/device/, carried over).
#
#   1. every Hugging Face fixture through its cuda package (arch-run) against the outputs
#      transformers recorded (≤ 1e-4 relative, real tokens only);
#   2. greedy generation (caches on the device) of the GPT-2 (left-padded batch), LLaMA,
#      Mamba and T5 fixtures against transformers' `generate`: the same tokens, logits
#      within 1e-4;
#   3. two AdamW steps of the GPT-2 fixture's train package (parameters and moments on the
#      device) against the CPU's losses and gradient norms (≤ 1e-4 relative) and weights
#      (≤ 1e-3: AdamW magnifies the last bits of gradients that are small by cancellation);
#   4. timings against PyTorch CUDA (eager f32, TF32 off) in the same run: GPT-2 small and
#      a LLaMA-style model (specs/bench.arch:llama_bench) forward at batch 8 × 512; GPT-2
#      small decode at batch 1 and 32 against transformers' `generate`; the same forwards
#      built with `--dtype bf16` (bf16 tensor-core products) against PyTorch in bf16; one
#      4096³ matmul (f32 and bf16) against torch.matmul; a causal attention against
#      scaled_dot_product_attention.
#
# Results go to stdout and to $OUT/device_check.md (the device tool brings $OUT back).
# DEVICE_CHECK_SIM=1 rehearses it on the CPU machine with the host simulator (packages
# built with `tools/device_prep.sh --sim`; timings skipped). Finishes in a few minutes.
set -uo pipefail
cd "$(dirname "$0")/.."
DEV=${DEVICE_DIR:-target/device}
OUT=${OUT:-/tmp/device_check}
mkdir -p "$OUT"
REPORT=$OUT/device_check.md
RUN=("$DEV/bin/arch-run")
SIMFLAG=()
if [[ ${DEVICE_CHECK_SIM:-0} == 1 ]]; then
    SIMFLAG=(--sim)
fi
: > "$REPORT"
say() { echo "$*" | tee -a "$REPORT"; }

say "# archc device check — $(date -u +%Y-%m-%dT%H:%MZ)"
if command -v nvidia-smi >/dev/null 2>&1; then
    say ""
    say '```'
    nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader | tee -a "$REPORT"
    say '```'
fi
say ""
say "packages: $(cat "$DEV/sm" 2>/dev/null || echo '?'); ${SIMFLAG[*]:-GPU}"
say ""
say "## Hugging Face fixtures through cuda packages (max rel. error, ≤ 1e-4)"
say ""
fail=0
for pkg in "$DEV"/pkg/*/; do
    name=$(basename "$pkg")
    [[ $name == perf_* ]] && continue
    fx=compiler/tests/fixtures/hf/$name
    if timeout 120 "${RUN[@]}" "$pkg" --weights "$fx/model.safetensors" --inputs "$fx/inputs.safetensors" \
        --out "$OUT/$name.safetensors" "${SIMFLAG[@]}" > "$OUT/$name.log" 2>&1; then
        if res=$(python3 tools/device_compare.py "$fx" "$OUT/$name.safetensors"); then
            say "- $name: ok"
        else
            say "- $name: MISMATCH"
            fail=1
        fi
        echo "$res" | tee -a "$REPORT"
    else
        say "- $name: FAILED to run: $(tail -n 2 "$OUT/$name.log" | tr '\n' ' ')"
        fail=1
    fi
done

say ""
say "## Greedy generation through cuda step packages (tokens equal, logits ≤ 1e-4)"
say ""
for spec in gpt2:generate_padded llama:generate mamba:generate t5:generate; do
    name=${spec%%:*}
    file=${spec#*:}.safetensors
    fx=compiler/tests/fixtures/hf/$name
    n=$(python3 -c "import sys; from safetensors.numpy import load_file; d = load_file(sys.argv[1]); print(d['logits'].shape[1])" "$fx/$file")
    if timeout 120 "${RUN[@]}" "$DEV/pkg/$name" --weights "$fx/model.safetensors" --inputs "$fx/$file" \
        --out "$OUT/gen_$name.safetensors" --max-new-tokens "$n" --save-logits "${SIMFLAG[@]}" \
        > "$OUT/gen_$name.log" 2>&1; then
        if res=$(python3 tools/device_compare.py "$fx" "$OUT/gen_$name.safetensors" --generated "$file"); then
            say "- $name ($file): ok"
        else
            say "- $name ($file): MISMATCH"
            fail=1
        fi
        echo "$res" | tee -a "$REPORT"
        grep -h "tokens/s" "$OUT/gen_$name.log" | tee -a "$REPORT"
    else
        say "- $name generation: FAILED to run: $(tail -n 2 "$OUT/gen_$name.log" | tr '\n' ' ')"
        fail=1
    fi
done

say ""
say "## Training: two AdamW steps on the device against the CPU's (losses and gradient norms ≤ 1e-4, weights ≤ 1e-3 relative)"
say ""
if timeout 180 "${RUN[@]}" "$DEV/train/gpt2" --weights compiler/tests/fixtures/hf/gpt2/model.safetensors \
    --inputs "$DEV/train/batch.safetensors" --out "$OUT/train_gpt2.safetensors" --train-steps 2 \
    "${SIMFLAG[@]}" > "$OUT/train_gpt2.log" 2>&1; then
    if res=$(python3 - "$DEV/train/expected.safetensors" "$OUT/train_gpt2.safetensors" <<'PY'
import sys
import numpy as np
from safetensors.numpy import load_file
want, got = load_file(sys.argv[1]), load_file(sys.argv[2])
worst, where = 0.0, ""
bound = {"loss": 1e-4, "grad_norm": 1e-4}
for name, w in want.items():
    g = got.get(name)
    if g is None or g.shape != w.shape or not np.all(np.isfinite(g)):
        print(f"  {name}: missing, misshapen or not finite")
        sys.exit(1)
    diff = float(np.max(np.abs(g.astype(np.float64) - w)))
    if name.endswith("attention.k.bias"):
        # Its gradient is zero in exact arithmetic (softmax ignores a score added to every
        # key): rounding noise that AdamW turns into steps of ±lr; two steps of 1e-3.
        if diff > 4e-3:
            print(f"  {name}: differs by {diff:.2e}, more than two AdamW steps")
            sys.exit(1)
        continue
    # As a fraction of each tensor's bound: losses and norms 1e-4, weights 1e-3.
    d = diff / max(float(np.max(np.abs(w))), 1e-30) / bound.get(name, 1e-3)
    if d > worst:
        worst, where = d, name
print(f"  losses {got['loss'].tolist()} (cpu {want['loss'].tolist()}); worst {worst:.2e} of its bound ({where})")
sys.exit(0 if worst <= 1 else 1)
PY
    ); then
        say "- gpt2 train step: ok"
    else
        say "- gpt2 train step: MISMATCH"
        fail=1
    fi
    echo "$res" | tee -a "$REPORT"
else
    say "- gpt2 train step: FAILED to run: $(tail -n 2 "$OUT/train_gpt2.log" | tr '\n' ' ')"
    fail=1
fi

# Hopper's warpgroup products (ARCHC_MMA=wgmma) and 32 words of k per staged row
# (ARCHC_KWORDS=32), first run on a GPU here: the same bf16 matmul built each way must
# agree with the default mma.sync package (only the order of the f32 sums may differ).
if [[ -d $DEV/pkg/check_matmul_wgmma ]]; then
    python3 -c "from safetensors.numpy import save_file; save_file({}, '$OUT/none.safetensors')"
    timeout 120 "${RUN[@]}" "$DEV/pkg/check_matmul_mma" --random-weights 0 --inputs "$OUT/none.safetensors" \
        --out "$OUT/check_matmul_mma.safetensors" > "$OUT/check_matmul_mma.log" 2>&1 || true
    for v in wgmma mma_k32 wgmma_k32; do
        [[ -d $DEV/pkg/check_matmul_$v ]] || continue
        ok=1
        timeout 120 "${RUN[@]}" "$DEV/pkg/check_matmul_$v" --random-weights 0 --inputs "$OUT/none.safetensors" \
            --out "$OUT/check_matmul_$v.safetensors" > "$OUT/check_matmul_$v.log" 2>&1 || ok=0
        res=""
        if [[ $ok == 1 ]] && res=$(python3 - "$OUT/check_matmul_mma.safetensors" "$OUT/check_matmul_$v.safetensors" "$v" <<'PY'
import sys
import numpy as np
from safetensors.numpy import load_file
a, b = load_file(sys.argv[1]), load_file(sys.argv[2])
for name, x in a.items():
    y = b[name]
    d = float(np.max(np.abs(x.astype(np.float64) - y))) / max(float(np.max(np.abs(x))), 1e-30)
    print(f"  {name} {x.shape}: {sys.argv[3]} vs mma.sync max relative difference {d:.2e}")
    if not np.all(np.isfinite(y)) or d > 1e-5:
        sys.exit(1)
PY
        ); then
            say "- $v matmul 300 × 200 × 72 (bf16): ok"
        else
            say "- $v matmul 300 × 200 × 72 (bf16): MISMATCH or FAILED ($(tail -n 1 "$OUT/check_matmul_$v.log"))"
            fail=1
        fi
        echo "${res:-}" | tee -a "$REPORT"
    done
fi

if [[ ${DEVICE_CHECK_SIM:-0} != 1 ]]; then
    say ""
    say "## Forward timings, batch 8 × 512, f32 (median of 10 after 3 warm-up runs)"
    say ""
    say "| model | archc ms | PyTorch eager ms | PyTorch SDPA ms | archc ÷ eager speed |"
    say "|---|---|---|---|---|"
    python3 - "$OUT" <<'PY'
import sys
import numpy as np
from safetensors.numpy import save_file
out = sys.argv[1]
rng = np.random.default_rng(1234)
save_file({"input_ids": rng.integers(0, 32000, (8, 512)).astype(np.int64)}, f"{out}/perf_ids.safetensors")
PY
    for m in gpt2 llama4; do
        pkg=$DEV/pkg/perf_$m
        t_archc=$(timeout 240 "${RUN[@]}" "$pkg" --random-weights 0 --inputs "$OUT/perf_ids.safetensors" \
            --out "$OUT/perf_$m.safetensors" --repeat 13 2>&1 | sed -n 's/^median \([0-9.]*\) ms.*/\1/p')
        torch_json=$(timeout 240 python3 tools/bench_torch.py --model "$m" --batch 8 --seq 512 \
            --device cuda --warmup 3 --reps 10 --json 2>/dev/null)
        read -r t_eager t_sdpa < <(echo "$torch_json" | python3 -c "import json,sys; d=json.load(sys.stdin); print(d['median_ms'], d.get('sdpa', {}).get('median_ms', 'nan'))")
        ratio=$(python3 -c "print(f'{float(\"${t_eager:-nan}\") / float(\"${t_archc:-nan}\"):.2f}×')" 2>/dev/null || echo "?")
        say "| $m | ${t_archc:-failed} | ${t_eager:-failed} | ${t_sdpa:-?} | $ratio |"
    done
    say ""
    say "## Matmul 4096 × 4096 × 4096 (archc: one matmul package, operands resident; torch.matmul: cuBLAS), median of 13"
    say ""
    say "| dtype | archc ms | archc TFLOPS | torch.matmul ms | torch TFLOPS | archc ÷ torch speed |"
    say "|---|---|---|---|---|---|"
    python3 -c "from safetensors.numpy import save_file; save_file({}, '$OUT/none.safetensors')"
    # bf16_wgmma: the same bf16 matmul on Hopper's warpgroup products (sm_90 only); _s3,
    # _s4: three and four shared-memory stages (ARCHC_STAGES) instead of the default;
    # _words: mma fragments loaded word by word (ARCHC_LDMATRIX=0) instead of by ldmatrix;
    # _k32: 32 words of k per staged row instead of 16 (ARCHC_KWORDS=32).
    mm_kinds=()
    for d in f32 bf16 bf16_wgmma f32_s3 f32_s4 bf16_s3 bf16_s4 bf16_wgmma_s4 f32_words bf16_words \
        f32_k32 bf16_k32 bf16_wgmma_k32; do
        [[ -d $DEV/pkg/perf_matmul_$d ]] && mm_kinds+=("$d")
    done
    declare -A torch_ms=()
    for d in "${mm_kinds[@]}"; do
        t_archc=$(timeout 240 "${RUN[@]}" "$DEV/pkg/perf_matmul_$d" --random-weights 0 --inputs "$OUT/none.safetensors" \
            --out "$OUT/matmul_$d.safetensors" --repeat 13 2>&1 | sed -n 's/^median \([0-9.]*\) ms.*/\1/p')
        # torch.matmul timed once per dtype.
        dt=${d%%_*}
        if [[ -z ${torch_ms[$dt]:-} ]]; then
            torch_ms[$dt]=$(timeout 240 python3 - "$dt" <<'PY'
import sys, statistics, torch
torch.backends.cuda.matmul.allow_tf32 = False  # f32 against archc's f32-accurate 3×TF32
dt = torch.bfloat16 if sys.argv[1].startswith("bf16") else torch.float32
a = torch.randn(4096, 4096, device="cuda", dtype=dt)
b = torch.randn(4096, 4096, device="cuda", dtype=dt)
times = []
for i in range(16):
    s, e = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    s.record(); torch.matmul(a, b.T); e.record(); torch.cuda.synchronize()
    if i >= 3:
        times.append(s.elapsed_time(e))
print(statistics.median(times))
PY
            )
        fi
        t_torch=${torch_ms[$dt]}
        read -r ta tt ratio < <(python3 -c "
a, t = float('${t_archc:-nan}'), float('${t_torch:-nan}')
f = 2 * 4096 ** 3 / 1e9
print(f'{f / a:.1f} {f / t:.1f} {t / a:.2f}×')" 2>/dev/null || echo "? ? ?")
        say "| $d | ${t_archc:-failed} | $ta | ${t_torch:-failed} | $tt | $ratio |"
    done
    say ""
    say "## Attention, causal, 8 × 16 heads × 1024 × 64 (archc: one attention package, q/k/v resident, by tiles on the tensor cores: f32 in 3×TF32, bf16 products; PyTorch: scaled_dot_product_attention), median of 13"
    say ""
    say "| dtype | archc ms | SDPA ms | archc ÷ SDPA speed |"
    say "|---|---|---|---|"
    read -r t_f32 t_bf16 < <(timeout 240 python3 - <<'PY'
import statistics, torch
import torch.nn.functional as F
torch.backends.cuda.matmul.allow_tf32 = False
out = []
for dt in (torch.float32, torch.bfloat16):
    q, k, v = (torch.randn(8, 16, 1024, 64, device="cuda", dtype=dt) for _ in range(3))
    times = []
    for i in range(16):
        s, e = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        s.record(); F.scaled_dot_product_attention(q, k, v, is_causal=True); e.record()
        torch.cuda.synchronize()
        if i >= 3:
            times.append(s.elapsed_time(e))
    out.append(statistics.median(times))
print(*out)
PY
    )
    for d in f32 bf16; do
        t_archc=$(timeout 240 "${RUN[@]}" "$DEV/pkg/perf_attention_$d" --random-weights 0 --inputs "$OUT/none.safetensors" \
            --out "$OUT/attention_$d.safetensors" --repeat 13 2>&1 | sed -n 's/^median \([0-9.]*\) ms.*/\1/p')
        case $d in f32) t_sdpa=$t_f32 ;; bf16) t_sdpa=$t_bf16 ;; esac
        ratio=$(python3 -c "print(f'{float(\"${t_sdpa:-nan}\") / float(\"${t_archc:-nan}\"):.2f}×')" 2>/dev/null || echo "?")
        say "| $d | ${t_archc:-failed} | ${t_sdpa:-failed} | $ratio |"
    done
    say ""
    say "## Forward with bf16 products, batch 8 × 512 (archc: \`--dtype bf16\`, bf16 matrices and tensor-core products, f32 activations; PyTorch: the whole model in bf16)"
    say ""
    say "| model | archc ms | PyTorch eager ms | PyTorch SDPA ms | archc ÷ eager speed |"
    say "|---|---|---|---|---|"
    bf16_models=(gpt2 llama4)
    [[ -d $DEV/pkg/perf_gpt2_dtype_bf16_wgmma ]] && bf16_models+=(gpt2_wgmma)
    for m in "${bf16_models[@]}"; do
        case $m in
            gpt2) pkg=$DEV/pkg/perf_gpt2_dtype_bf16 ;;
            gpt2_wgmma) pkg=$DEV/pkg/perf_gpt2_dtype_bf16_wgmma ;;
            llama4) pkg=$DEV/pkg/perf_bench_dtype_bf16 ;;
        esac
        t_archc=$(timeout 240 "${RUN[@]}" "$pkg" --random-weights 0 --inputs "$OUT/perf_ids.safetensors" \
            --out "$OUT/perf_${m}_bf16.safetensors" --repeat 13 2>&1 | sed -n 's/^median \([0-9.]*\) ms.*/\1/p')
        # gpt2_wgmma: PyTorch's gpt2 figures again, not re-timed.
        if [[ $m != gpt2_wgmma ]]; then
            torch_json=$(timeout 240 python3 tools/bench_torch.py --model "$m" --batch 8 --seq 512 \
                --device cuda --dtype bf16 --warmup 3 --reps 10 --json 2>/dev/null)
            read -r t_eager t_sdpa < <(echo "$torch_json" | python3 -c "import json,sys; d=json.load(sys.stdin); print(d['median_ms'], d.get('sdpa', {}).get('median_ms', 'nan'))")
        fi
        ratio=$(python3 -c "print(f'{float(\"${t_eager:-nan}\") / float(\"${t_archc:-nan}\"):.2f}×')" 2>/dev/null || echo "?")
        say "| $m | ${t_archc:-failed} | ${t_eager:-failed} | ${t_sdpa:-?} | $ratio |"
    done
    if [[ -f $OUT/perf_gpt2_wgmma_bf16.safetensors ]]; then
        # The same forward on wgmma and on mma.sync: bf16-rounded activations feed every
        # matmul, so sums in another order may flip roundings that twelve layers carry on.
        python3 - "$OUT/perf_gpt2_bf16.safetensors" "$OUT/perf_gpt2_wgmma_bf16.safetensors" <<'PY' | tee -a "$REPORT" || fail=1
import sys
import numpy as np
from safetensors.numpy import load_file
a, b = load_file(sys.argv[1]), load_file(sys.argv[2])
worst = 0.0
for name, x in a.items():
    y = b[name]
    if not np.all(np.isfinite(y)):
        print(f"gpt2_wgmma {name}: not finite: MISMATCH")
        sys.exit(1)
    worst = max(worst, float(np.max(np.abs(x.astype(np.float64) - y))) / max(float(np.max(np.abs(x))), 1e-30))
ok = worst <= 5e-2
print(f"\ngpt2_wgmma against gpt2 (mma.sync), both --dtype bf16: max relative difference {worst:.2e}{'' if ok else ': MISMATCH'}")
sys.exit(0 if ok else 1)
PY
    fi
    say ""
    say "## Decode, GPT-2 small, prompt 16, 128 new tokens (new tokens/s over the batch, prefill excluded)"
    say ""
    say "| batch | archc tok/s | transformers generate tok/s | ratio |"
    say "|---|---|---|---|"
    for b in 1 32; do
        python3 -c "
import sys, numpy as np
from safetensors.numpy import save_file
save_file({'input_ids': np.random.default_rng(7).integers(0, 50257, ($b, 16)).astype(np.int64)}, sys.argv[1])" "$OUT/dec_ids_$b.safetensors"
        a_tps=$(timeout 240 "${RUN[@]}" "$DEV/pkg/perf_gpt2" --random-weights 0 --inputs "$OUT/dec_ids_$b.safetensors" \
            --out "$OUT/dec_$b.safetensors" --max-new-tokens 128 2>&1 | sed -n 's/.*decode \([0-9.]*\) tokens\/s.*/\1/p')
        h_tps=$(timeout 240 python3 tools/bench_generate.py --torch gpt2 --batch "$b" --prompt 16 --new 128 \
            --device cuda --reps 3 2>/dev/null | tail -n 1 | python3 -c "import json,sys; print(json.load(sys.stdin)['tokens_per_s'])")
        ratio=$(python3 -c "print(f'{float(\"${a_tps:-nan}\") / float(\"${h_tps:-nan}\"):.2f}×')" 2>/dev/null || echo "?")
        say "| $b | ${a_tps:-failed} | ${h_tps:-failed} | $ratio |"
    done
    say ""
    say "## Decode with stored-type weights, GPT-2 small (archc: matrices as bf16 or q8_0 blocks, f32 activations; transformers: the whole model in bf16)"
    say ""
    say "| batch | archc bf16 tok/s | archc q8_0 tok/s | transformers bf16 tok/s | bf16 ratio |"
    say "|---|---|---|---|---|"
    for b in 1 32; do
        tps=()
        for q in bf16 q8_0; do
            tps+=("$(timeout 240 "${RUN[@]}" "$DEV/pkg/perf_gpt2_$q" --random-weights 0 --inputs "$OUT/dec_ids_$b.safetensors" \
                --out "$OUT/dec_${q}_$b.safetensors" --max-new-tokens 128 2>&1 | sed -n 's/.*decode \([0-9.]*\) tokens\/s.*/\1/p')")
        done
        h_tps=$(timeout 240 python3 tools/bench_generate.py --torch gpt2 --batch "$b" --prompt 16 --new 128 \
            --device cuda --dtype bf16 --reps 3 2>/dev/null | tail -n 1 | python3 -c "import json,sys; print(json.load(sys.stdin)['tokens_per_s'])")
        ratio=$(python3 -c "print(f'{float(\"${tps[0]:-nan}\") / float(\"${h_tps:-nan}\"):.2f}×')" 2>/dev/null || echo "?")
        say "| $b | ${tps[0]:-failed} | ${tps[1]:-failed} | ${h_tps:-failed} | $ratio |"
    done
fi
say ""
if [[ $fail == 0 ]]; then say "RESULT: every fixture matched"; else say "RESULT: FAILURES above"; fi
exit $fail

//! The CUDA backend's thread programs, run by the host simulator (one OS thread per GPU
//! thread, real barriers and warp shuffles), against the reference evaluator on the tiny
//! model of every family with random weights: the same odd shapes and padding masks as
//! the CPU backend's tests, ≤ 1e-4 relative.

mod common;

use arch_dsl::spec::{ArchSpec, Family};
use arch_runtime::gguf::GgmlType;
use archc::autodiff::check::Rng;
use archc::backend::cuda::{Mode, Tiling};
use archc::eval::{evaluate, evaluate_cuda_sim, evaluate_cuda_sim_with};
use archc::interp::Value;
use archc::tensor::Tensor;
use archc::tensor_io::write_f32;
use common::{fixture, random_params, spec_of, TOLERANCE};
use std::collections::HashMap;

fn ids(rng: &mut Rng, shape: &[usize], vocab: u64) -> Value {
    let n = shape.iter().product();
    Value::I(Tensor {
        shape: shape.to_vec(),
        data: (0..n)
            .map(|_| {
                (((rng.uniform() as f64 + 1.0) / 2.0 * vocab as f64) as i64).min(vocab as i64 - 1)
            })
            .collect(),
    })
}

fn compare(spec: &ArchSpec, shapes: &[(usize, usize)], mask: bool) {
    let mut rng = Rng::new(23);
    let params = random_params(&mut rng, spec, (1e-2, 0.1));
    let dir = tempfile::tempdir().unwrap();
    let weights = dir.path().join("w.safetensors");
    let list: Vec<_> = params.clone().into_iter().collect();
    write_f32(&weights, &list).unwrap();
    for &(b, t) in shapes {
        let t = t.min(spec.context as usize);
        let mut inputs = HashMap::new();
        inputs.insert("input_ids".to_string(), ids(&mut rng, &[b, t], spec.vocab));
        if spec.family == Family::EncoderDecoder {
            let td = (t + 2).min(spec.context as usize);
            inputs.insert(
                "decoder_input_ids".to_string(),
                ids(&mut rng, &[b, td], spec.vocab),
            );
        }
        if mask {
            let data = (0..b * t)
                .map(|i| i64::from(i / t + 1 != b || i % t < t.div_ceil(2)))
                .collect();
            inputs.insert(
                "attention_mask".to_string(),
                Value::I(Tensor {
                    shape: vec![b, t],
                    data,
                }),
            );
        }
        let want = evaluate(spec, &weights, inputs.clone(), &[])
            .unwrap_or_else(|e| panic!("{} interp {b}×{t}: {e}", spec.name));
        let got = evaluate_cuda_sim(spec, &params, inputs)
            .unwrap_or_else(|e| panic!("{} cuda sim {b}×{t}: {e}", spec.name));
        assert_eq!(got.len(), want.len(), "{}: outputs", spec.name);
        for ((name, g), (wname, w)) in got.iter().zip(&want) {
            assert_eq!(name, wname);
            assert_eq!(g.shape, w.shape, "{} {name} {b}×{t}: shape", spec.name);
            let err = g.rel_max_diff(w);
            eprintln!("{} {name} {b}×{t}: {err:e}", spec.name);
            assert!(
                err <= TOLERANCE,
                "{} {name} {b}×{t}: relative error {err:e} > {TOLERANCE:e}",
                spec.name
            );
        }
    }
}

/// The other families run two shapes (a multi-row batch, and one row of the context's
/// length); GPT-2 also one token and a batch past the 64-row matmul tile.
const SHAPES: &[(usize, usize)] = &[(3, 7), (1, 70)];

fn hf(name: &str) {
    compare(&spec_of(&fixture("hf").join(name)), SHAPES, false);
}

#[test]
fn gpt2() {
    compare(
        &spec_of(&fixture("hf").join("gpt2")),
        &[(1, 1), (3, 7), (5, 16)],
        false,
    );
}

fn hf_masked(name: &str) {
    compare(
        &spec_of(&fixture("hf").join(name)),
        &[(3, 7), (2, 50)],
        true,
    );
}

fn inline(source: &str, model: &str, shapes: &[(usize, usize)]) {
    let prog = arch_dsl::elab::Program::from_source("tiny.arch", source.to_string(), None);
    let (spec, diags) = prog.elaborate(model);
    let spec = spec.unwrap_or_else(|| panic!("{model}: {diags:?}"));
    compare(&spec, shapes, false);
}

#[test]
fn decoders() {
    hf("openai_gpt");
    // GQA and RoPE (a row-local matmul epilogue).
    hf("llama");
}

#[test]
fn encoders() {
    hf_masked("bert");
    hf("roberta");
    hf("albert");
    hf_masked("electra");
}

#[test]
fn encoder_decoders() {
    // T5: relative position bias, no scaling.
    hf_masked("t5");
    hf("bart");
}

#[test]
fn recurrent() {
    hf("mamba");
    hf("rwkv");
    // Six rows over the simulator's four blocks: two blocks run two rows each.
    inline(common::TINY_S4, "tiny", &[(1, 1), (3, 7), (6, 3)]);
    inline(common::TINY_TTT, "tiny_linear", &[(3, 9)]);
    inline(common::TINY_TTT, "tiny_mlp", &[(1, 3), (2, 12)]);
    inline(common::TINY_HYBRID, "tiny_hybrid", &[(3, 7)]);
}

#[test]
fn options() {
    let root = fixture("options");
    let mut names: Vec<String> = std::fs::read_dir(&root)
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.path().join("model.arch").is_file())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    for name in names {
        compare(&spec_of(&root.join(name)), &[(3, 7)], false);
    }
}

/// Generation with cuda packages (step and encode programs: KV caches, recurrent states
/// and cross-attention keys as device state) on the host simulator: the same greedy tokens
/// as Hugging Face `generate` and the logits that chose them within 1e-4.
#[test]
fn generation_matches_transformers() {
    use arch_runtime::generate::{Decoding, GenerateOptions, Generator};
    for (name, file) in [
        ("gpt2", "generate_padded.safetensors"),
        ("llama", "generate.safetensors"),
        ("mamba", "generate.safetensors"),
        ("t5", "generate.safetensors"),
    ] {
        let dir = fixture(&format!("hf/{name}"));
        let spec = spec_of(&dir);
        let want = archc::tensor_io::read_values(&dir.join(file)).unwrap();
        let int = |v: &Value| match v {
            Value::I(t) => (t.shape.clone(), t.data.clone()),
            _ => panic!("expected integers"),
        };
        let (shape, ids) = int(&want["input_ids"]);
        let mask = want.get("attention_mask").map(|m| int(m).1);
        let (tok_shape, tokens) = int(&want["tokens"]);
        let logits = want["logits"].as_f32().unwrap().clone();
        let start = want.get("decoder_start_token_id").map(|v| int(v).1[0]);
        let n = tok_shape[1] - if start.is_some() { 1 } else { shape[1] };
        let out = tempfile::tempdir().unwrap();
        let opts = archc::package::BuildOptions {
            cache: false,
            cuda: Some(80),
            sim: true,
            ..archc::package::BuildOptions::host().unwrap()
        };
        archc::package::build(&spec, &opts, Some(out.path())).unwrap();
        let mut g = Generator::load_cuda(out.path(), &dir.join("model.safetensors"), true, 0)
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        let gen_opts = GenerateOptions {
            max_new_tokens: n,
            decoding: Decoding::Greedy,
            eos: vec![],
            pad: 0,
            save_logits: true,
        };
        let b = shape[0];
        let got = match start {
            Some(s) => g.generate_seq2seq(&ids, mask.as_deref(), b, &vec![s; b], &gen_opts, |_| {}),
            None => g.generate(&ids, mask.as_deref(), b, &gen_opts, |_| {}),
        }
        .unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(got.tokens, tokens, "{name} ({file}): greedy tokens");
        let ours = Tensor {
            shape: logits.shape.clone(),
            data: got.logits.unwrap(),
        };
        let err = ours.rel_max_diff(&logits);
        eprintln!("{name} ({file}): {n} tokens equal, logits within {err:e}");
        assert!(err <= TOLERANCE, "{name}: logits {err:e}");
    }
}

/// The math a GPU gets without libm, through the simulator: sin and cos over RoPE-sized
/// angles (one π/4 reduction), pow (in f64 inside) with powf's special cases, against f64.
#[test]
fn transcendentals_without_libm() {
    use archc::graph::{BinaryOp, DType, Dim, Graph, UnaryOp};
    let n = 4099usize;
    let mut g = Graph::new("math");
    let x = g.input("x", vec![Dim::c(n as u64)], DType::F32);
    let y = g.input("y", vec![Dim::c(n as u64)], DType::F32);
    let sin = g.unary(UnaryOp::Sin, x);
    let cos = g.unary(UnaryOp::Cos, x);
    let pow = g.binary(BinaryOp::Pow, y, x);
    g.output("sin", sin);
    g.output("cos", cos);
    g.output("pow", pow);
    let g = g.finish().unwrap();
    // Angles over ±4096 (RoPE: positions × frequencies ≤ 1); bases in (0, 1e4], with
    // zeros and negative bases (an integral exponent gives a sign, others NaN).
    let xs: Vec<f32> = (0..n).map(|i| (i as f32 - 2049.0) * 1.999_7).collect();
    let mut ys: Vec<f32> = (0..n)
        .map(|i| 1e4 * ((i * 7919) % n + 1) as f32 / n as f32)
        .collect();
    let mut xs_pow: Vec<f32> = xs.iter().map(|x| (x / 2048.0).clamp(-4.0, 4.0)).collect();
    // 0^y: 0 for y > 0, 1 for y = 0, ∞ for y < 0; (−2)^y: a sign for integral y, NaN else.
    let special = [
        (0.0, 2.0),
        (0.0, 0.0),
        (0.0, -1.0),
        (-2.0, 3.0),
        (-2.0, 2.0),
        (-2.0, 0.5),
    ];
    for (i, &(base, e)) in special.iter().enumerate() {
        ys[i] = base;
        xs_pow[i] = e;
    }
    let run = |x: &[f32], y: &[f32]| {
        let dir = tempfile::tempdir().unwrap();
        let opts = archc::package::BuildOptions {
            cuda: Some(80),
            sim: true,
            ..archc::package::BuildOptions::host().unwrap()
        };
        archc::package::build_graph(&g, "math", &opts, dir.path()).unwrap();
        let inputs = HashMap::from([
            (
                "x".to_string(),
                Value::F(Tensor {
                    shape: vec![n],
                    data: x.to_vec(),
                }),
            ),
            (
                "y".to_string(),
                Value::F(Tensor {
                    shape: vec![n],
                    data: y.to_vec(),
                }),
            ),
        ]);
        let params = archc::interp::Params::new();
        archc::eval::run_cuda_package(
            dir.path(),
            &archc::eval::WeightSource::Tensors(&params),
            inputs,
            archc::eval::CudaRun::Sim,
        )
        .unwrap()
        .into_iter()
        .collect::<HashMap<_, _>>()
    };
    let trig = run(&xs, &ys);
    let (mut worst_sin, mut worst_cos) = (0f64, 0f64);
    for (i, &x) in xs.iter().enumerate() {
        worst_sin = worst_sin.max((trig["sin"].data[i] as f64 - (x as f64).sin()).abs());
        worst_cos = worst_cos.max((trig["cos"].data[i] as f64 - (x as f64).cos()).abs());
    }
    eprintln!("sin {worst_sin:e}, cos {worst_cos:e} over |x| ≤ 4096");
    assert!(
        worst_sin < 2e-6 && worst_cos < 2e-6,
        "sin {worst_sin:e} cos {worst_cos:e}"
    );
    let p = run(&xs_pow, &ys);
    let mut worst_pow = 0f64;
    for i in special.len()..n {
        let want = (ys[i] as f64).powf(xs_pow[i] as f64);
        let got = p["pow"].data[i] as f64;
        worst_pow = worst_pow.max(((got - want) / want).abs());
    }
    eprintln!("pow relative {worst_pow:e}");
    assert!(worst_pow < 3e-7, "pow {worst_pow:e}");
    for (i, &(base, e)) in special.iter().enumerate() {
        let (got, want) = (p["pow"].data[i], f32::powf(base, e));
        assert!(
            got == want || (got.is_nan() && want.is_nan()),
            "pow({base}, {e}) = {got}, not {want}"
        );
    }
}

/// `x` rounded to nearest even in bf16, back as f32.
fn round_bf16(x: f32) -> f32 {
    let b = x.to_bits();
    f32::from_bits((b + 0x7FFF + ((b >> 16) & 1)) & 0xFFFF_0000)
}

fn round_f16(x: f32) -> f32 {
    use arch_runtime::gguf::f32_to_f16;
    arch_runtime::safetensors_file::f16_to_f32(f32_to_f16(x))
}

/// `y = x · wᵀ` (x [1, rows, k], w [n, k]; rows = x.len() / k) on the simulator with
/// `half` products: through the matmul tiles, or with 8 rows or fewer the matrix–vector
/// products of decoding.
fn sim_linear(x: &[f32], w: &[f32], k: usize, n: usize, half: GgmlType) -> Vec<f32> {
    let case = SimMatmul {
        k,
        n,
        half: Some(half),
        ..SimMatmul::default()
    };
    case.run(x, w, Tiling::for_mode(Mode::Host))
}

/// One matmul on the simulator: `x · wᵀ` with w [n, k] (`w_kn`: `x · w` with w [k, n]);
/// `half` products; w stored in the half type (`w_half`, 2 bytes per value, as `--dtype`
/// builds store weights); x read transposed from a [k, rows] input (`x_t`).
#[derive(Clone, Copy, Default)]
struct SimMatmul {
    k: usize,
    n: usize,
    half: Option<GgmlType>,
    w_half: bool,
    w_kn: bool,
    x_t: bool,
}

impl SimMatmul {
    /// y [rows, n] for x (rows × k, row-major as [rows, k] whatever `x_t` says) and w
    /// (as [n, k] or [k, n]), with the matmul tiled as `tiling`.
    fn run(&self, x: &[f32], w: &[f32], tiling: Tiling) -> Vec<f32> {
        use archc::backend::cuda::sim::{SimData, Simulator};
        use archc::graph::{DType, Dim, Graph};
        let (k, n) = (self.k as u64, self.n as u64);
        let rows = (x.len() / self.k) as u64;
        let mut g = Graph::new("mm");
        let xi = if self.x_t {
            let xt = g.input("x", vec![Dim::c(1), Dim::c(k), Dim::c(rows)], DType::F32);
            g.permute(xt, &[0, 2, 1])
        } else {
            g.input("x", vec![Dim::c(1), Dim::c(rows), Dim::c(k)], DType::F32)
        };
        let y = if self.w_kn {
            let wi = g.param("w", vec![Dim::c(k), Dim::c(n)]);
            g.matmul(xi, wi, false)
        } else {
            let wi = g.param("w", vec![Dim::c(n), Dim::c(k)]);
            g.linear(xi, wi)
        };
        g.output("y", y);
        let g = g.finish().unwrap();
        let mut prog = archc::package::package_program(&g).unwrap();
        prog.half_matmul = self.half;
        let w_id = prog.params[0].1;
        let mut bufs: Vec<SimData> = prog
            .buffers
            .iter()
            .map(|b| SimData::F32(vec![0.0; b.elems.eval(&HashMap::new()).unwrap()]))
            .collect();
        let x_data: Vec<f32> = if self.x_t {
            let r = rows as usize;
            (0..x.len()).map(|e| x[(e % r) * self.k + e / r]).collect()
        } else {
            x.to_vec()
        };
        let SimData::F32(v) = &mut bufs[prog.inputs[0].1] else {
            unreachable!()
        };
        v.copy_from_slice(&x_data);
        let SimData::F32(v) = &mut bufs[w_id] else {
            unreachable!()
        };
        match self.half.filter(|_| self.w_half) {
            // The half type's bits, two per f32 slot (low half first).
            Some(ty) => {
                prog.buffers[w_id].quant = Some(ty);
                let bits: Vec<u16> = w
                    .iter()
                    .map(|&x| match ty {
                        GgmlType::BF16 => (round_bf16(x).to_bits() >> 16) as u16,
                        _ => arch_runtime::gguf::f32_to_f16(x),
                    })
                    .collect();
                for (slot, pair) in v.iter_mut().zip(bits.chunks(2)) {
                    let hi = pair.get(1).copied().unwrap_or(0);
                    *slot = f32::from_bits(u32::from(pair[0]) | (u32::from(hi) << 16));
                }
            }
            None => v.copy_from_slice(w),
        }
        Simulator::tiled(&prog, tiling)
            .unwrap()
            .run(&[], &mut bufs)
            .unwrap();
        let SimData::F32(y) = &bufs[prog.outputs[0].1] else {
            panic!("y is not f32")
        };
        y.clone()
    }
}

/// `x · wᵀ` in f64 over the operands as given.
fn linear_f64(x: &[f32], w: &[f32], k: usize, n: usize) -> Vec<f64> {
    let rows = x.len() / k;
    let mut y = vec![0f64; rows * n];
    for i in 0..rows {
        for j in 0..n {
            y[i * n + j] = (0..k)
                .map(|p| f64::from(x[i * k + p]) * f64::from(w[j * k + p]))
                .sum();
        }
    }
    y
}

/// `--dtype bf16|f16` (`mma.sync` m16n8k16, f32 accumulation): 74 rows (two 64-row tiles),
/// 70 columns (two tiles, the second partial), k = 40 (the last 16-step partial).
/// Operands that both types hold exactly (eighths up to ±15/8) give the f32 product
/// exactly — every fragment's row, column and k where the PTX ISA puts it; other values
/// give the product of the operands rounded to nearest even, f16 subnormals and values
/// past f16's range (±inf) included.
#[test]
fn half_precision_matmul_tiles() {
    let (k, n) = (40, 70);
    let mut rng = Rng::new(5);
    let mut eighths = |len: usize| -> Vec<f32> {
        (0..len)
            .map(|_| (rng.uniform() * 15.0).round() / 8.0)
            .collect()
    };
    let (x, w) = (eighths(74 * k), eighths(n * k));
    let exact = linear_f64(&x, &w, k, n);
    assert!(exact.iter().any(|&v| v != 0.0));
    for half in [GgmlType::BF16, GgmlType::F16] {
        let y = sim_linear(&x, &w, k, n, half);
        for (i, (&got, &want)) in y.iter().zip(&exact).enumerate() {
            assert_eq!(
                f64::from(got),
                want,
                "{half:?}: element {i} (row {}, column {})",
                i / n,
                i % n
            );
        }
    }
    // The tiles (74 rows) and the matrix–vector products (5 rows, 1 row) round alike.
    for rows in [74, 5, 1] {
        rounded_operands(rows, k, n);
    }
}

/// [`half_precision_matmul_tiles`]' second half for `rows` rows of x.
fn rounded_operands(rows: usize, k: usize, n: usize) {
    let mut rng = Rng::new(6);
    let mut x: Vec<f32> = (0..rows * k).map(|_| rng.uniform()).collect();
    let w: Vec<f32> = (0..n * k).map(|_| rng.uniform()).collect();
    // f16 subnormals (below 2⁻¹⁴) in row 0; row 1 column 0 past f16's range.
    for (p, v) in x.iter_mut().take(k).enumerate() {
        *v = (p as f32 - 20.0) * 3.1e-6;
    }
    if rows > 1 {
        x[k] = 70_000.0;
    }
    for half in [GgmlType::BF16, GgmlType::F16] {
        let round = if half == GgmlType::BF16 {
            round_bf16
        } else {
            round_f16
        };
        let xr: Vec<f32> = x.iter().map(|&v| round(v)).collect();
        let wr: Vec<f32> = w.iter().map(|&v| round(v)).collect();
        let want = linear_f64(&xr, &wr, k, n);
        let unrounded = linear_f64(&x, &w, k, n);
        // The scale of each sum's rounding error in f32: Σ |x·w|.
        let xa: Vec<f32> = xr.iter().map(|v| v.abs()).collect();
        let wa: Vec<f32> = wr.iter().map(|v| v.abs()).collect();
        let scales = linear_f64(&xa, &wa, k, n);
        let y = sim_linear(&x, &w, k, n, half);
        let mut moved = 0f64;
        for (i, (&got, &want)) in y.iter().zip(&want).enumerate() {
            if !want.is_finite() {
                assert_eq!(f64::from(got), want, "{half:?}, {rows} rows: element {i}");
                continue;
            }
            let scale = scales[i];
            assert!(
                (f64::from(got) - want).abs() <= 1e-6 * scale,
                "{half:?}, {rows} rows: element {i}: {got} vs {want} (rounded operands)"
            );
            moved = moved.max((want - unrounded[i]).abs() / scale);
        }
        // The rounding is there: the products differ from the f32 operands' ones.
        assert!(
            moved > 1e-4,
            "{half:?}, {rows} rows: the operands were not rounded ({moved:e})"
        );
        if half == GgmlType::F16 && rows > 1 {
            assert!(
                y[n..2 * n].iter().all(|v| v.is_infinite()),
                "row 1: 70000 is ±inf in f16"
            );
        }
    }
}

/// The matmul tiles' staging, both ways, on the GPU's tiling and the simulator's:
/// k-contiguous operands whose rows start 16-byte aligned go by `cp.async` (zero-filled
/// past k and past the last row or column), others element by element (k not a multiple
/// of the 16 bytes, A read transposed, B stored [k, n], f32 activations rounded to a half
/// type, weights stored in one); two row tiles and two column tiles, the second of each
/// partial, and k steps enough to reuse both stages; with 16 and 32 words of k per
/// staged row. Each product within 2e-6 of Σ|x·w| of the f64 product of the operands as
/// the tensor cores see them.
#[test]
fn matmul_staging_and_tilings() {
    use GgmlType::{BF16, F16};
    let gpu = Tiling::for_mode(Mode::Ptx { sm: 80 });
    let host = Tiling::for_mode(Mode::Host);
    // Hopper's warpgroup products (half precision only), in the GPU's blocks.
    let wg = Tiling::wgmma();
    // More stages (`ARCHC_STAGES`; past 48 KiB a block's stages are dynamic shared
    // memory on the GPU): more k steps in flight than a product has, and refilled.
    let stages = |t: Tiling, stages| Tiling { stages, ..t };
    let (gpu3, gpu4, wg4) = (stages(gpu, 3), stages(gpu, 4), stages(wg, 4));
    // Fragments word by word (`ARCHC_LDMATRIX=0`) instead of by `ldmatrix`.
    let words = Tiling {
        ldmatrix: false,
        ..gpu
    };
    // Twice the k per stage (`ARCHC_KWORDS=32`): 32 words a staged row.
    let k32 = |t: Tiling| Tiling { kw: 32, ..t };
    let (gpu_k32, host_k32, wg_k32) = (k32(gpu), k32(host), k32(stages(wg, 4)));
    assert!(gpu.ldmatrix && host.ldmatrix);
    assert_ne!(
        gpu, host,
        "the GPU tiling is tested here besides the simulator's own"
    );
    let f32_case = |k, x_t, w_kn| SimMatmul {
        k,
        n: 200,
        x_t,
        w_kn,
        ..SimMatmul::default()
    };
    let half_case = |k, ty, w_half| SimMatmul {
        k,
        n: 200,
        half: Some(ty),
        w_half,
        ..SimMatmul::default()
    };
    let cases = [
        // f32, both operands by cp.async (k = 40: three 16-steps, the last partial).
        (
            f32_case(40, false, false),
            vec![gpu, host, gpu4, words, gpu_k32],
        ),
        // f32, rows not 16-byte aligned: element by element.
        (f32_case(37, false, false), vec![gpu, host, host_k32]),
        // f32, A transposed and B [k, n]: element by element in both layouts.
        (f32_case(40, true, true), vec![gpu, host, host_k32]),
        // bf16 weights by cp.async (k = 72: three 32-steps), A rounded as staged.
        (
            half_case(72, BF16, true),
            vec![gpu, host, wg, words, gpu_k32, wg_k32],
        ),
        // f16 weights whose rows are not 16-byte aligned (68 · 2 bytes).
        (half_case(68, F16, true), vec![host, wg]),
        // bf16 products of f32 weights: both rounded as staged.
        (half_case(72, BF16, false), vec![host, wg]),
        // bf16 weights, five k steps: wgmma's three stages each refilled.
        (
            half_case(136, BF16, true),
            vec![wg, gpu3, gpu4, wg4, wg_k32, k32(gpu3)],
        ),
        // bf16, A transposed and B [k, n]: element by element into wgmma's layout.
        (
            SimMatmul {
                x_t: true,
                w_kn: true,
                ..half_case(40, BF16, false)
            },
            vec![wg],
        ),
    ];
    let rows = 150;
    let mut rng = Rng::new(11);
    for (case, tilings) in cases {
        let k = case.k;
        let x: Vec<f32> = (0..rows * k).map(|_| rng.uniform() - 0.5).collect();
        let w: Vec<f32> = (0..case.n * k).map(|_| rng.uniform() - 0.5).collect();
        let round = |v: f32| match case.half {
            Some(BF16) => round_bf16(v),
            Some(_) => round_f16(v),
            None => v,
        };
        let xr: Vec<f32> = x.iter().map(|&v| round(v)).collect();
        let wr: Vec<f32> = w.iter().map(|&v| round(v)).collect();
        // w as [n, k] for the reference.
        let w_nk = |w: &[f32]| -> Vec<f32> {
            if !case.w_kn {
                return w.to_vec();
            }
            (0..w.len()).map(|e| w[(e % k) * case.n + e / k]).collect()
        };
        let want = linear_f64(&xr, &w_nk(&wr), k, case.n);
        let abs = |v: &[f32]| v.iter().map(|x| x.abs()).collect::<Vec<f32>>();
        let scales = linear_f64(&abs(&xr), &w_nk(&abs(&wr)), k, case.n);
        for tiling in tilings {
            let y = case.run(&x, &w, tiling);
            assert_eq!(y.len(), rows * case.n);
            for (i, ((&got, &want), &scale)) in y.iter().zip(&want).zip(&scales).enumerate() {
                assert!(
                    (f64::from(got) - want).abs() <= 2e-6 * scale,
                    "k {k}, {:?}, x_t {}, w_kn {}, w_half {}, {tiling:?}: element {i} \
                     (row {}, column {}): {got} vs {want}",
                    case.half,
                    case.x_t,
                    case.w_kn,
                    case.w_half,
                    i / case.n,
                    i % case.n
                );
            }
        }
    }
}

/// One attention case for [`attention_tiles`].
#[derive(Clone, Copy)]
struct AttnCase {
    b: usize,
    h: usize,
    hkv: usize,
    t: usize,
    s: usize,
    d: usize,
    dv: usize,
    mask: archc::graph::MaskKind,
    scale: f64,
    bias: bool,
    key_mask: bool,
    /// `--dtype` products (the reference then takes q, k and v rounded to the type).
    half: Option<GgmlType>,
    /// How the kernel reads q, k and v.
    views: AttnViews,
    /// Fragments word by word (`ARCHC_LDMATRIX=0`) instead of by `ldmatrix`.
    words: bool,
}

/// The buffers an [`AttnCase`]'s attention reads.
#[derive(Clone, Copy, Debug, PartialEq)]
enum AttnViews {
    /// The inputs themselves (f32, rows contiguous: staged by `cp.async` in f32).
    Inputs,
    /// Negated inputs, negated again by a map: with `--dtype`, temporaries held in the
    /// half type (staged by `cp.async`, as a model's activations are).
    Stored,
    /// Keys and values given [b, hkv, d, s] and permuted: strided rows, staged element
    /// by element.
    Transposed,
}

impl AttnCase {
    /// The attention's output [b, h, t, dv] on the simulator and in f64 (keys a query
    /// may not see, and keys the key mask drops, left out; a query that sees none
    /// gives 0, as the kernels do).
    fn run(&self, rng: &mut Rng) -> (Vec<f32>, Vec<f64>) {
        use archc::backend::cuda::sim::{SimData, Simulator};
        use archc::graph::{DType, Dim, Graph, MaskKind, Op};
        let c = |v: usize| Dim::c(v as u64);
        let mut g = Graph::new("attn");
        let q = g.input(
            "q",
            vec![c(self.b), c(self.h), c(self.t), c(self.d)],
            DType::F32,
        );
        let kv_shape = |d: usize| match self.views {
            AttnViews::Transposed => vec![c(self.b), c(self.hkv), c(d), c(self.s)],
            _ => vec![c(self.b), c(self.hkv), c(self.s), c(d)],
        };
        let k = g.input("k", kv_shape(self.d), DType::F32);
        let v = g.input("v", kv_shape(self.dv), DType::F32);
        let mut inputs = match self.views {
            AttnViews::Inputs => vec![q, k, v],
            AttnViews::Stored => [q, k, v]
                .map(|x| g.unary(archc::graph::UnaryOp::Neg, x))
                .to_vec(),
            AttnViews::Transposed => {
                vec![q, g.permute(k, &[0, 1, 3, 2]), g.permute(v, &[0, 1, 3, 2])]
            }
        };
        if self.bias {
            inputs.push(g.input(
                "bias",
                vec![c(1), c(self.h), c(self.t), c(self.s)],
                DType::F32,
            ));
        }
        if self.key_mask {
            inputs.push(g.input("key_mask", vec![c(self.b), c(self.s)], DType::F32));
        }
        let op = Op::Attention {
            mask: self.mask,
            scale: self.scale,
            has_bias: self.bias,
            has_key_mask: self.key_mask,
            ring: None,
        };
        let o = g.push(op, inputs, None, DType::F32);
        g.output("o", o);
        let g = g.finish().unwrap();
        let mut prog = archc::package::package_program(&g).unwrap();
        prog.half_matmul = self.half;
        if let (AttnViews::Stored, Some(ty)) = (self.views, self.half) {
            let held = archc::kernel::quant::store_activations(&mut prog, ty, &[]);
            assert_eq!(held, 3, "q, k and v held in {ty:?}");
        }
        let attn = prog
            .kernels
            .iter()
            .find_map(|k| match &k.body {
                archc::kernel::Body::Attention(a) => Some(a),
                _ => None,
            })
            .expect("an attention kernel");
        let unit = attn.k.strides[3] == archc::kernel::Ix::c(1);
        assert_eq!(unit, self.views != AttnViews::Transposed, "{:?}", attn.k);
        let mut data: HashMap<String, Vec<f32>> = HashMap::new();
        let mut fill = |name: &str, len: usize, f: &mut dyn FnMut(usize) -> f32| {
            data.insert(name.to_string(), (0..len).map(&mut *f).collect());
        };
        let (b, h, t, s) = (self.b, self.h, self.t, self.s);
        fill("q", b * h * t * self.d, &mut |_| rng.uniform() * 2.0 - 1.0);
        fill("k", b * self.hkv * s * self.d, &mut |_| {
            rng.uniform() * 2.0 - 1.0
        });
        fill("v", b * self.hkv * s * self.dv, &mut |_| {
            rng.uniform() * 2.0 - 1.0
        });
        fill("bias", h * t * s, &mut |_| rng.uniform() * 3.0 - 1.5);
        // Batch 0 drops every third key; batch 1 (if any) drops them all.
        fill("key_mask", b * s, &mut |i| {
            f32::from(i / s == 0 && i % 3 != 0)
        });
        let mut bufs: Vec<SimData> = prog
            .buffers
            .iter()
            .map(|bf| SimData::F32(vec![0.0; bf.elems.eval(&HashMap::new()).unwrap()]))
            .collect();
        for (name, id, _) in &prog.inputs {
            let SimData::F32(dst) = &mut bufs[*id] else {
                unreachable!()
            };
            // The reference's data: negated for a negating map, k and v [b, hkv, s, d]
            // transposed for a permute.
            let x = &data[name.as_str()];
            match (self.views, name.as_str()) {
                (AttnViews::Stored, "q" | "k" | "v") => {
                    for (o, &v) in dst.iter_mut().zip(x) {
                        *o = -v;
                    }
                }
                (AttnViews::Transposed, "k" | "v") => {
                    let d = if name == "k" { self.d } else { self.dv };
                    for (i, &v) in x.iter().enumerate() {
                        let (plane, key, col) = (i / (s * d), i / d % s, i % d);
                        dst[(plane * d + col) * s + key] = v;
                    }
                }
                _ => dst.copy_from_slice(x),
            }
        }
        let mut tiling = archc::backend::cuda::Tiling::for_mode(archc::backend::cuda::Mode::Host);
        tiling.ldmatrix = !self.words;
        Simulator::tiled(&prog, tiling)
            .unwrap()
            .run(&[], &mut bufs)
            .unwrap();
        let SimData::F32(got) = &bufs[prog.outputs[0].1] else {
            panic!("o is not f32")
        };
        let round = |name: &str| -> Vec<f32> {
            data[name]
                .iter()
                .map(|&x| match self.half {
                    Some(GgmlType::BF16) => round_bf16(x),
                    Some(_) => round_f16(x),
                    None => x,
                })
                .collect()
        };
        let (qd, kd, vd) = (&round("q"), &round("k"), &round("v"));
        let mut want = vec![0f64; b * h * t * self.dv];
        for bi in 0..b {
            for hi in 0..h {
                let kh = hi / (h / self.hkv);
                for ti in 0..t {
                    let pos = s - t + ti;
                    let (lo, hi_k) = match self.mask {
                        MaskKind::Bidirectional => (0, s),
                        MaskKind::Causal => (0, pos + 1),
                        MaskKind::Sliding(w) => ((pos + 1).saturating_sub(w as usize), pos + 1),
                    };
                    let mut scores = Vec::new();
                    for key in lo..hi_k.min(s) {
                        if self.key_mask && data["key_mask"][bi * s + key] == 0.0 {
                            continue;
                        }
                        let dot: f64 = (0..self.d)
                            .map(|x| {
                                f64::from(qd[((bi * h + hi) * t + ti) * self.d + x])
                                    * f64::from(kd[((bi * self.hkv + kh) * s + key) * self.d + x])
                            })
                            .sum();
                        let bias = if self.bias {
                            f64::from(data["bias"][(hi * t + ti) * s + key])
                        } else {
                            0.0
                        };
                        scores.push((key, dot * self.scale + bias));
                    }
                    let mx = scores.iter().map(|x| x.1).fold(f64::NEG_INFINITY, f64::max);
                    let total: f64 = scores.iter().map(|x| (x.1 - mx).exp()).sum();
                    for &(key, sc) in &scores {
                        let p = (sc - mx).exp() / total;
                        for x in 0..self.dv {
                            want[((bi * h + hi) * t + ti) * self.dv + x] +=
                                p * f64::from(vd[((bi * self.hkv + kh) * s + key) * self.dv + x]);
                        }
                    }
                }
            }
        }
        (got.clone(), want)
    }
}

/// Attention by tiles on the tensor cores (prompts of 16 queries and more): causal with
/// grouped-query heads; cross-attention with a T5-style bias, no scaling, a key mask
/// (one batch row drops every key) and head dims that are not multiples of 8; a sliding
/// window; head dims of 80 (32 keys per step) — several query blocks and key steps each,
/// the last of each partial; keys and values staged by `cp.async` and, read through a
/// permute, element by element; fragments by `ldmatrix` and word by word. Within 4e-5
/// of the f64 attention; and 8 queries (the one-row-per-warp kernel) too.
#[test]
fn attention_tiles() {
    let mut rng = Rng::new(21);
    let mut cases = attention_cases(None);
    cases.push(AttnCase {
        t: 45,
        s: 45,
        mask: archc::graph::MaskKind::Sliding(7),
        ..cases[0]
    });
    cases.extend(staging_variants(&cases));
    for case in cases {
        let worst = attention_error(&case, &mut rng);
        assert!(
            worst <= 4e-5,
            "t {} s {} d {} dv {} {:?}: worst error {worst:e}",
            case.t,
            case.s,
            case.d,
            case.dv,
            case.mask
        );
    }
}

/// Variants of the first three of `cases` (causal, cross, head dims of 80) that read
/// their views another way: keys and values through a permute (staged element by
/// element), q, k and v held in the `--dtype` type (staged by `cp.async` in it),
/// fragments word by word.
fn staging_variants(cases: &[AttnCase]) -> Vec<AttnCase> {
    let (causal, cross, wide) = (cases[0], cases[1], cases[2]);
    let stored = AttnViews::Stored;
    vec![
        AttnCase {
            views: AttnViews::Transposed,
            ..cross
        },
        AttnCase {
            views: AttnViews::Transposed,
            words: true,
            ..causal
        },
        AttnCase {
            views: stored,
            ..cross
        },
        AttnCase {
            views: stored,
            words: true,
            ..cross
        },
        AttnCase {
            views: stored,
            words: true,
            ..wide
        },
    ]
}

/// Causal with grouped-query heads (50 queries); cross-attention (40 queries, 70 keys)
/// with a bias, no scaling, a key mask and head dims of 12 and 20; head dims of 80 (the
/// first key step unmasked); 8 queries (the one-row-per-warp kernel); bidirectional
/// without bias or mask (unmasked steps) — with `half` products.
fn attention_cases(half: Option<GgmlType>) -> Vec<AttnCase> {
    use archc::graph::MaskKind;
    let base = AttnCase {
        b: 1,
        h: 4,
        hkv: 2,
        t: 50,
        s: 50,
        d: 16,
        dv: 16,
        mask: MaskKind::Causal,
        scale: 0.25,
        bias: false,
        key_mask: false,
        half,
        views: AttnViews::Inputs,
        words: false,
    };
    vec![
        AttnCase { ..base },
        AttnCase {
            b: 2,
            h: 2,
            hkv: 2,
            t: 40,
            s: 70,
            d: 12,
            dv: 20,
            mask: MaskKind::Bidirectional,
            scale: 1.0,
            bias: true,
            key_mask: true,
            ..base
        },
        AttnCase {
            h: 1,
            hkv: 1,
            t: 33,
            s: 75,
            d: 80,
            dv: 80,
            ..base
        },
        AttnCase {
            t: 8,
            s: 20,
            ..base
        },
        // Every query sees every key, no bias or mask: the steps' unmasked path, but for
        // the last, partial one.
        AttnCase {
            t: 40,
            s: 70,
            mask: MaskKind::Bidirectional,
            ..base
        },
    ]
}

/// The largest difference between `case` on the simulator and in f64.
fn attention_error(case: &AttnCase, rng: &mut Rng) -> f64 {
    let (got, want) = case.run(rng);
    assert!(want.iter().any(|&w| w != 0.0));
    let worst = got
        .iter()
        .zip(&want)
        .map(|(&g, &w)| (f64::from(g) - w).abs())
        .fold(0f64, |a, e| {
            if e.is_nan() || a.is_nan() {
                f64::NAN
            } else {
                a.max(e)
            }
        });
    eprintln!(
        "t {} s {} d {} {:?} {:?} words {}: worst {worst:e}",
        case.t, case.s, case.d, case.half, case.views, case.words
    );
    worst
}

/// Attention with `--dtype bf16|f16` products: the tiles on m16n8k16 `mma` (Q, K, V and
/// P rounded to the half type, sums in f32; V's fragments by `ldmatrix.trans` and value
/// by value; q, k and v from f32 inputs, from activations held in the half type, and
/// through a permute), the one-row-per-warp kernel (8 queries) rounding alike — within the rounding of P (bf16 keeps 8 significant bits, f16 11) of
/// the f64 attention over q, k and v rounded to the type.
#[test]
fn attention_tiles_half() {
    let mut rng = Rng::new(22);
    for (ty, tol) in [(GgmlType::BF16, 6e-3), (GgmlType::F16, 8e-4)] {
        let mut cases = attention_cases(Some(ty));
        cases.extend(staging_variants(&cases));
        for case in cases {
            let worst = attention_error(&case, &mut rng);
            assert!(
                worst <= tol,
                "{ty:?}: t {} s {} d {}: worst error {worst:e}",
                case.t,
                case.s,
                case.d
            );
        }
    }
}

/// Whole models with `--dtype bf16|f16` products on the simulator: within the half
/// types' rounding of the f32 evaluation (bf16 keeps 8 significant bits, f16 11), f16
/// closer than bf16.
#[test]
fn half_precision_models() {
    for name in ["gpt2", "llama"] {
        let spec = spec_of(&fixture("hf").join(name));
        let mut rng = Rng::new(29);
        let params = random_params(&mut rng, &spec, (1e-2, 0.1));
        let mut inputs = HashMap::new();
        let t = (spec.context as usize).min(16);
        inputs.insert("input_ids".to_string(), ids(&mut rng, &[5, t], spec.vocab));
        let f32s = evaluate_cuda_sim(&spec, &params, inputs.clone())
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        let mut errs = Vec::new();
        for half in [GgmlType::BF16, GgmlType::F16] {
            let got = evaluate_cuda_sim_with(&spec, &params, inputs.clone(), Some(half))
                .unwrap_or_else(|e| panic!("{name} {half:?}: {e}"));
            let err = got[0].1.rel_max_diff(&f32s[0].1);
            eprintln!("{name} {half:?}: {err:e}");
            errs.push(err);
        }
        let (bf16, f16) = (errs[0], errs[1]);
        assert!(bf16 < 3e-2 && bf16 > 1e-4, "{name}: bf16 {bf16:e}");
        assert!(f16 < 4e-3 && f16 > 1e-6, "{name}: f16 {f16:e}");
        assert!(
            f16 < bf16,
            "{name}: f16 {f16:e} not closer than bf16 {bf16:e}"
        );
    }
}

/// A `--dtype bf16` step program keeps its KV caches in bf16: the session allocates half
/// the bytes `archc stats` counts for f32 caches, and values written and read through the
/// runtime are rounded to bf16 (nearest even) on the way in and decoded on the way out.
#[test]
fn half_precision_kv_caches() {
    use arch_dsl::stats::{stats, StatsOptions};
    use arch_runtime::device::{open_device, read_cuda_manifest, DeviceSession};
    use arch_runtime::manifest::Dtype;
    let dir = fixture("hf/gpt2");
    let spec = spec_of(&dir);
    let out = tempfile::tempdir().unwrap();
    let mut opts = archc::package::BuildOptions {
        kind: archc::package::PackageKind::Step,
        cache: false,
        cuda: Some(80),
        sim: true,
        ..archc::package::BuildOptions::host().unwrap()
    };
    opts.set_dtype(&spec, "bf16").unwrap();
    archc::package::build(&spec, &opts, Some(out.path())).unwrap();
    let m = read_cuda_manifest(out.path()).unwrap();
    assert!(!m.states.is_empty());
    assert!(
        m.states.iter().all(|s| s.dtype == Dtype::Bf16),
        "{:?}",
        m.states
    );
    let device = open_device(out.path(), &m, true, 0).unwrap();
    let w = arch_runtime::Weights::open(&m, &dir.join("model.safetensors")).unwrap();
    let name = m.states[0].name.clone();
    let mut session = DeviceSession::new(m, &w, device).unwrap();
    let capacity = 7;
    let f32_bytes = stats(
        &spec,
        &StatsOptions {
            seq: Some(capacity),
            ..Default::default()
        },
    )
    .state_bytes_at_seq;
    assert_eq!(session.reset_state(3, capacity).unwrap(), 3 * f32_bytes / 2);
    let values: Vec<f32> = (0..100).map(|i| 1.0 + i as f32 * 1e-3).collect();
    session.set_state(&name, &values).unwrap();
    let back = session.state_data(&name).unwrap();
    for (i, (&v, &b)) in values.iter().zip(&back).enumerate() {
        assert_eq!(b, round_bf16(v), "value {i}: {v} stored as {b}");
    }
    assert!(
        back[100..].iter().all(|&x| x == 0.0),
        "a fresh cache is zero"
    );
    assert!(
        values.iter().zip(&back).any(|(v, b)| v != b),
        "nothing rounded"
    );
}

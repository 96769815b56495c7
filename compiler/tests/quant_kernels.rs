//! Matmuls over parameters stored as ggml blocks (`kernel::quant`, `backend/cpu/quant_ir`):
//! the generated kernels, fed weights quantized to every block type, against the evaluator
//! on the same weights dequantized (gguf-py's values, bit-exact in `runtime::gguf`), for
//! the matrix–vector rows of decoding and the packed matmul of prompts, on every vector
//! set this machine runs.

use arch_runtime::gguf::{dequantize, quantize, GgmlType};
use archc::autodiff::check::Rng;
use archc::backend::cpu::{CpuTarget, VectorIsa};
use archc::eval::{run_package_with, WeightSource};
use archc::graph::{DType, Dim, Graph};
use archc::interp::{run, Value};
use archc::tensor::Tensor;
use std::collections::{BTreeMap, HashMap};

fn linear_graph(k: u64, n: u64) -> Graph {
    let mut g = Graph::new("linear");
    let x = g.input(
        "x",
        vec![Dim::sym("batch"), Dim::sym("seq"), Dim::c(k)],
        DType::F32,
    );
    let w = g.param("w", vec![Dim::c(n), Dim::c(k)]);
    let y = g.linear(x, w);
    g.output("y", y);
    g.finish().unwrap()
}

/// `g` built with `quant` for every vector set this CPU runs: (set, package directory, the
/// storage each parameter got).
fn packages(
    g: &Graph,
    quant: &BTreeMap<String, GgmlType>,
) -> Vec<(
    VectorIsa,
    tempfile::TempDir,
    HashMap<String, Option<String>>,
)> {
    let mut out = Vec::new();
    for isa in [VectorIsa::Sse2, VectorIsa::Avx2, VectorIsa::Avx512] {
        if !isa.runs_here() {
            eprintln!("skipping {isa}: this CPU cannot run it");
            continue;
        }
        let dir = tempfile::tempdir().unwrap();
        let mut opts = archc::package::BuildOptions::host().unwrap();
        opts.target = CpuTarget::generic(isa);
        opts.quant = quant.clone();
        archc::package::build_graph(g, &g.name, &opts, dir.path()).unwrap();
        let m = arch_runtime::Manifest::read(dir.path()).unwrap();
        let storage = m.params.into_iter().map(|p| (p.name, p.storage)).collect();
        out.push((isa, dir, storage));
    }
    out
}

/// The package at `dir` given `given` against the evaluator given `reference` (the values
/// the kernels should see), on `inputs`: the relative error of the first output.
fn error(
    g: &Graph,
    dir: &std::path::Path,
    given: &archc::interp::Params,
    reference: &archc::interp::Params,
    inputs: HashMap<String, Value>,
) -> f64 {
    let want = run(g, &inputs, reference).unwrap()[0]
        .1
        .as_f32()
        .unwrap()
        .clone();
    let got = run_package_with(dir, &WeightSource::Tensors(given), inputs, 2)
        .unwrap()
        .remove(0)
        .1;
    got.rel_max_diff(&want)
}

#[test]
fn quantized_weights_match_their_dequantized_values() {
    let mut checked = 0;
    // n = 37: a partial panel and an odd column tail; Q8_0's k = 288 leaves a 32-deep
    // last k block after KC = 256.
    for (ty, k) in [
        (GgmlType::F16, 288u64),
        (GgmlType::BF16, 96),
        (GgmlType::Q8_0, 288),
        (GgmlType::Q4_0, 288),
        (GgmlType::Q4_1, 96),
        (GgmlType::Q5_0, 288),
        (GgmlType::Q5_1, 96),
        (GgmlType::Q4_K, 512),
        (GgmlType::Q5_K, 512),
        (GgmlType::Q6_K, 512),
    ] {
        let n = 37u64;
        let g = linear_graph(k, n);
        let mut rng = Rng::new(7);
        let raw: Vec<f32> = (0..n * k).map(|_| rng.uniform() * 2.0 - 1.0).collect();
        let blocks = quantize(ty, &raw).unwrap();
        let deq = dequantize(ty, &blocks, raw.len());
        let shape = vec![n as usize, k as usize];
        // The runtime quantizes the canonical f32 weights it is given to the storage type:
        // equal blocks, so the kernels see exactly `deq`.
        let given = HashMap::from([(
            "w".to_string(),
            Tensor {
                shape: shape.clone(),
                data: raw,
            },
        )]);
        let reference = HashMap::from([("w".to_string(), Tensor { shape, data: deq })]);
        let quant = BTreeMap::from([("w".to_string(), ty)]);
        for (isa, dir, storage) in packages(&g, &quant) {
            let want_storage = ty.name().to_ascii_lowercase();
            assert_eq!(storage["w"].as_deref(), Some(want_storage.as_str()));
            for (b, t) in [
                (1, 1),
                (2, 1),
                (3, 1),
                (5, 1),
                (8, 1),
                (9, 1),
                (2, 75),
                (1, 150),
            ] {
                let data = (0..b * t * k as usize).map(|_| rng.uniform()).collect();
                let input = Value::F(Tensor {
                    shape: vec![b, t, k as usize],
                    data,
                });
                let inputs = HashMap::from([("x".to_string(), input)]);
                let err = error(&g, dir.path(), &given, &reference, inputs);
                assert!(err <= 1e-5, "{ty:?} {isa} {b}×{t} rows: {err:e}");
                checked += 1;
            }
        }
    }
    assert!(checked >= 80, "at least one vector set ran");
}

/// A tied embedding table stored as blocks: the gather decodes the rows it reads one
/// value at a time, the LM head reads it as a matmul weight; a weight whose rows are not
/// whole blocks stays f32. Every vector set, against the evaluator on the dequantized
/// values.
#[test]
fn gathers_read_blocks_and_ragged_rows_stay_f32() {
    let mut checked = 0;
    for (ty, d) in [
        (GgmlType::F16, 64u64),
        (GgmlType::BF16, 64),
        (GgmlType::Q8_0, 64),
        (GgmlType::Q4_0, 64),
        (GgmlType::Q4_1, 64),
        (GgmlType::Q5_0, 64),
        (GgmlType::Q5_1, 64),
        (GgmlType::Q4_K, 256),
        (GgmlType::Q5_K, 256),
        (GgmlType::Q6_K, 256),
    ] {
        let vocab = 40u64;
        let mut g = Graph::new("tied");
        let ids = g.input("ids", vec![Dim::sym("batch"), Dim::sym("seq")], DType::I64);
        let table = g.param("embed", vec![Dim::c(vocab), Dim::c(d)]);
        let ragged = g.param("ragged", vec![Dim::c(8), Dim::c(vocab)]);
        let x = g.gather(table, ids);
        let y = g.linear(x, table);
        let z = g.linear(y, ragged);
        g.output("z", z);
        let g = g.finish().unwrap();
        let mut rng = Rng::new(11);
        let raw: Vec<f32> = (0..vocab * d).map(|_| rng.uniform() - 0.5).collect();
        let deq = dequantize(ty, &quantize(ty, &raw).unwrap(), raw.len());
        let other: Vec<f32> = (0..8 * vocab).map(|_| rng.uniform() - 0.5).collect();
        let params = |table: Vec<f32>| {
            HashMap::from([
                (
                    "embed".to_string(),
                    Tensor {
                        shape: vec![vocab as usize, d as usize],
                        data: table,
                    },
                ),
                (
                    "ragged".to_string(),
                    Tensor {
                        shape: vec![8, vocab as usize],
                        data: other.clone(),
                    },
                ),
            ])
        };
        let (given, reference) = (params(raw), params(deq));
        let quant = BTreeMap::from([("embed".to_string(), ty), ("ragged".to_string(), ty)]);
        for (isa, dir, storage) in packages(&g, &quant) {
            assert_eq!(storage["embed"], Some(ty.name().to_ascii_lowercase()));
            assert_eq!(storage["ragged"], None);
            for (b, t) in [(1, 1), (2, 5)] {
                let data = (0..b * t)
                    .map(|i| ((i * 7 + 3) % vocab as usize) as i64)
                    .collect();
                let inputs = HashMap::from([(
                    "ids".to_string(),
                    Value::I(archc::tensor::I64Tensor {
                        shape: vec![b, t],
                        data,
                    }),
                )]);
                let err = error(&g, dir.path(), &given, &reference, inputs);
                assert!(err <= 1e-5, "{ty:?} {isa} {b}×{t}: {err:e}");
                checked += 1;
            }
        }
    }
    assert!(checked >= 20, "at least one vector set ran");
}

/// f32 matmuls large enough to be cut into several row blocks of parallel iterations
/// (`Lowerer::blocks`: rows dealt evenly, an extra block when the count is odd): decode
/// and prompt shapes, B stored [n, k] or [k, n], A read transposed (a weight gradient,
/// Xᵀ·dY), against the evaluator.
#[test]
fn large_matmuls_split_into_even_row_blocks() {
    let mut rng = Rng::new(5);
    for (m, n, k, how) in [
        (1153, 770, 40, "a·bᵀ"),
        (777, 3000, 24, "a·bᵀ"),
        (1200, 100, 30, "a·b"),
        (768, 1000, 64, "aᵀ·b"),
    ] {
        let mut g = Graph::new("mm");
        let (a_shape, b_shape) = match how {
            "a·bᵀ" => (vec![m, k], vec![n, k]),
            "a·b" => (vec![m, k], vec![k, n]),
            _ => (vec![k, m], vec![k, n]),
        };
        let a = g.input(
            "a",
            a_shape.iter().map(|&d| Dim::c(d)).collect(),
            DType::F32,
        );
        let b = g.param("b", b_shape.iter().map(|&d| Dim::c(d)).collect());
        let y = match how {
            "a·bᵀ" => g.matmul(a, b, true),
            "a·b" => g.matmul(a, b, false),
            _ => {
                let at = g.permute(a, &[1, 0]);
                g.matmul(at, b, false)
            }
        };
        g.output("y", y);
        let g = g.finish().unwrap();
        let dir = tempfile::tempdir().unwrap();
        let opts = archc::package::BuildOptions::host().unwrap();
        archc::package::build_graph(&g, "mm", &opts, dir.path()).unwrap();
        let numel = |s: &[u64]| s.iter().product::<u64>() as usize;
        let bt = Tensor::new(
            b_shape.iter().map(|&d| d as usize).collect(),
            (0..numel(&b_shape)).map(|_| rng.uniform() - 0.5).collect(),
        )
        .unwrap();
        let at = Tensor::new(
            a_shape.iter().map(|&d| d as usize).collect(),
            (0..numel(&a_shape)).map(|_| rng.uniform() - 0.5).collect(),
        )
        .unwrap();
        let params: archc::interp::Params = [("b".to_string(), bt)].into_iter().collect();
        let inputs = HashMap::from([("a".to_string(), Value::F(at))]);
        let err = error(&g, dir.path(), &params, &params, inputs);
        assert!(err <= 1e-5, "{m}×{n}×{k} {how}: {err:e}");
    }
}

/// `x` quantized per 256 values as the integer-dot routine does (ggml's Q8_K:
/// d = max|x| / 127, q = x · (127 / max|x|) rounded to nearest even) and dequantized.
fn q8k_roundtrip(x: &[f32]) -> Vec<f32> {
    x.chunks(256)
        .flat_map(|b| {
            let amax = b.iter().fold(0f32, |m, v| m.max(v.abs()));
            let d = amax / 127.0;
            let id = if amax > 0.0 { 127.0 / amax } else { 0.0 };
            b.iter()
                .map(move |&v| d * (v * id).round_ties_even())
                .collect::<Vec<_>>()
        })
        .collect()
}

/// An integer-dot test's linear layer: the graph, its f32 weights `w` [n, k] as given to
/// the package (quantized to `ty` when loaded) and as the kernels see them (dequantized).
struct IntDotCase {
    g: Graph,
    k: usize,
    given: archc::interp::Params,
    reference: archc::interp::Params,
}

impl IntDotCase {
    fn new(ty: GgmlType, k: u64, n: u64, rng: &mut Rng) -> IntDotCase {
        let raw: Vec<f32> = (0..n * k).map(|_| rng.uniform() * 2.0 - 1.0).collect();
        let deq = dequantize(ty, &quantize(ty, &raw).unwrap(), raw.len());
        let shape = vec![n as usize, k as usize];
        let w =
            |data| HashMap::from([("w".to_string(), Tensor::new(shape.clone(), data).unwrap())]);
        IntDotCase {
            g: linear_graph(k, n),
            k: k as usize,
            given: w(raw),
            reference: w(deq),
        }
    }

    /// The layer built for `target` with `w` stored as `ty` and integer dots.
    fn package(&self, ty: GgmlType, target: CpuTarget) -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        let mut opts = archc::package::BuildOptions::host().unwrap();
        opts.target = target;
        opts.quant = BTreeMap::from([("w".to_string(), ty)]);
        opts.int_dots = true;
        archc::package::build_graph(&self.g, &self.g.name, &opts, dir.path()).unwrap();
        dir
    }

    fn input(&self, rows: [usize; 2], data: Vec<f32>) -> HashMap<String, Value> {
        let shape = vec![rows[0], rows[1], self.k];
        HashMap::from([("x".to_string(), Value::F(Tensor::new(shape, data).unwrap()))])
    }

    /// The package at `dir` on `data` ([rows[0], rows[1], k]).
    fn run(&self, dir: &std::path::Path, rows: [usize; 2], data: Vec<f32>) -> Tensor<f32> {
        let x = self.input(rows, data);
        run_package_with(dir, &WeightSource::Tensors(&self.given), x, 2)
            .unwrap()
            .remove(0)
            .1
    }

    /// The evaluator's product of the dequantized weights with `data`.
    fn product(&self, rows: [usize; 2], data: Vec<f32>) -> Tensor<f32> {
        run(&self.g, &self.input(rows, data), &self.reference).unwrap()[0]
            .1
            .as_f32()
            .unwrap()
            .clone()
    }
}

/// K-quant (Q4_K, Q5_K, Q6_K) products with integer dots (`BuildOptions::int_dots`):
/// decode steps (up to eight rows, the matrix–vector routine) and prompts (more rows, the
/// packed integer matmul) compute the product of the dequantized weights with the
/// activations as quantized per 256 values to 8 bits, on every vector set with integer
/// dots and the host's own target (AVX-512 VNNI where it has it). 37 and 400 columns
/// leave edge panels (32 columns per AVX-512 panel, 8 per AVX2 one) and pass one block of
/// 384 columns; 75 and 13 rows leave edge row panels (6 rows each). The f32 reference
/// shows the activations' rounding does move the result.
#[test]
fn k_quant_integer_dots_compute_the_q8_product() {
    let mut checked = 0;
    for (ty, k, n) in [
        (GgmlType::Q4_K, 768u64, 37usize),
        (GgmlType::Q5_K, 512, 37),
        (GgmlType::Q6_K, 768, 37),
        (GgmlType::Q4_K, 256, 400),
        (GgmlType::Q6_K, 512, 400),
    ] {
        let mut rng = Rng::new(13);
        let case = IntDotCase::new(ty, k, n as u64, &mut rng);
        let mut targets = vec![];
        for isa in [VectorIsa::Avx2, VectorIsa::Avx512] {
            if isa.runs_here() {
                targets.push((isa.to_string(), CpuTarget::generic(isa)));
            }
        }
        targets.push(("host".to_string(), CpuTarget::host().unwrap()));
        for (name, target) in targets {
            if target.isa == VectorIsa::Sse2 {
                continue;
            }
            let dir = case.package(ty, target);
            for (b, t) in [(1, 1), (3, 1), (8, 1), (9, 1), (1, 13), (2, 75)] {
                let rows = b * t;
                let mut data: Vec<f32> = (0..rows * k as usize)
                    .map(|_| rng.uniform() - 0.5)
                    .collect();
                // A block of zeros (scale 0) in the first row where it has more.
                if k > 256 {
                    data[..256].iter_mut().for_each(|v| *v = 0.0);
                }
                let got = case.run(dir.path(), [b, t], data.clone());
                let want = case.product([b, t], q8k_roundtrip(&data));
                let f32_want = case.product([b, t], data);
                let (err, err_f32) = (got.rel_max_diff(&want), got.rel_max_diff(&f32_want));
                assert!(
                    err <= 1e-5,
                    "{ty:?} k={k} n={n} {name} {rows} rows: {err:e} from the q8 product"
                );
                assert!(
                    err_f32 > 1e-5 && err_f32 < 3e-2,
                    "{ty:?} k={k} n={n} {name} {rows} rows: {err_f32:e} from the f32 product"
                );
                checked += 1;
            }
        }
    }
    assert!(checked >= 30, "at least one vector set ran");
}

/// The integer-dot routine keeps A's quantized rows on its stack up to 256 KiB (rows · k
/// bytes); a larger product takes the f32 routine: with k = 43776, one row is quantized
/// (43 KiB), six rows (256.5 KiB, one row block) compute in f32.
#[test]
fn integer_dots_fall_back_to_f32_past_their_stack_budget() {
    let (ty, k) = (GgmlType::Q4_K, 43776usize);
    let mut rng = Rng::new(17);
    let case = IntDotCase::new(ty, k as u64, 5, &mut rng);
    let dir = case.package(ty, CpuTarget::host().unwrap());
    for (rows, int) in [(1usize, true), (6, false)] {
        let data: Vec<f32> = (0..rows * k).map(|_| rng.uniform() - 0.5).collect();
        let got = case.run(dir.path(), [rows, 1], data.clone());
        // Sums over 43776 terms differ in their last bits by the order of the additions
        // (~1e-4 here); the two products differ by the activations' rounding (~1e-2).
        let q8 = got.rel_max_diff(&case.product([rows, 1], q8k_roundtrip(&data)));
        let f32 = got.rel_max_diff(&case.product([rows, 1], data));
        let (near, far) = if int { (q8, f32) } else { (f32, q8) };
        eprintln!("{rows} rows: {q8:e} from the q8 product, {f32:e} from the f32 one");
        assert!(
            near <= 1e-3 && far > 10.0 * near,
            "{rows} rows (integer dots: {int}): {q8:e} from the q8 product, {f32:e} from the f32 one"
        );
    }
}

/// A NaN or an infinity among the activations makes the integer-dot products it enters
/// NaN, as the f32 products are non-finite, instead of finite numbers from the bytes a NaN
/// rounds to; the rows without one are unaffected — in decode steps (3 rows) and prompts
/// (13 rows, the integer matmul).
#[test]
fn integer_dots_keep_non_finite_activations_non_finite() {
    let (ty, k, n) = (GgmlType::Q4_K, 512usize, 8usize);
    let mut rng = Rng::new(19);
    let case = IntDotCase::new(ty, k as u64, n as u64, &mut rng);
    let dir = case.package(ty, CpuTarget::host().unwrap());
    for rows in [3usize, 13] {
        for bad in [f32::NAN, f32::INFINITY] {
            let mut data: Vec<f32> = (0..rows * k).map(|_| rng.uniform() - 0.5).collect();
            data[k + 300] = bad;
            let y = case.run(dir.path(), [rows, 1], data);
            let out: Vec<&[f32]> = y.data.chunks(n).collect();
            assert!(
                out[1].iter().all(|v| !v.is_finite()),
                "{rows} rows, {bad}: {:?}",
                out[1]
            );
            for (r, row) in out.iter().enumerate().filter(|(r, _)| *r != 1) {
                assert!(
                    row.iter().all(|v| v.is_finite()),
                    "{rows} rows, {bad}: row {r} {row:?}"
                );
            }
        }
    }
}

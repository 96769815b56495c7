//! The CPU backend against the reference evaluator on the tiny model of every family, at
//! random weights and odd shapes: batch 1 and 3, sequences of 1, 7 and 50 tokens (TTT:
//! multiples of its mini-batch), with and without padding masks. Every output of the
//! forward graph must match to max|Δ| / max|ref| ≤ 1e-4, and 1 and 2 threads must give
//! identical bits.

mod common;

use arch_dsl::elab::Program;
use arch_dsl::spec::{ArchSpec, Family};
use archc::autodiff::check::Rng;
use archc::eval::{evaluate, evaluate_cpu};
use archc::interp::Value;
use archc::tensor::Tensor;
use archc::tensor_io::write_f32;
use common::{fixture, random_params, spec_of, TINY_HYBRID, TINY_S4, TINY_TTT, TOLERANCE};
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

/// Compares the backends on `spec` at each (batch, seq), with a padding mask when `mask`.
fn compare(spec: &ArchSpec, shapes: &[(usize, usize)], mask: bool) {
    let mut rng = Rng::new(17);
    let params = random_params(&mut rng, spec, (1e-2, 0.1));
    let dir = tempfile::tempdir().unwrap();
    let weights = dir.path().join("w.safetensors");
    let list: Vec<_> = params.into_iter().collect();
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
            // The last sequence of the batch is padded after its first half.
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
        let got = evaluate_cpu(spec, &weights, inputs.clone(), &[], 2)
            .unwrap_or_else(|e| panic!("{} cpu {b}×{t}: {e}", spec.name));
        let one = evaluate_cpu(spec, &weights, inputs, &[], 1).unwrap();
        assert_eq!(got.len(), want.len(), "{}: outputs", spec.name);
        for ((name, g), (wname, w)) in got.iter().zip(&want) {
            assert_eq!(name, wname);
            assert_eq!(g.shape, w.shape, "{} {name} {b}×{t}: shape", spec.name);
            let err = g.rel_max_diff(w);
            eprintln!(
                "{} {name} {b}×{t}{}: {err:e}",
                spec.name,
                if mask { " masked" } else { "" }
            );
            assert!(
                err <= TOLERANCE,
                "{} {name} {b}×{t}: relative error {err:e} > {TOLERANCE:e}",
                spec.name
            );
        }
        for ((name, a), (_, c)) in got.iter().zip(&one) {
            assert!(
                a.data
                    .iter()
                    .zip(&c.data)
                    .all(|(x, y)| x.to_bits() == y.to_bits()),
                "{} {name} {b}×{t}: 1 and 2 threads differ",
                spec.name
            );
        }
    }
}

const SHAPES: &[(usize, usize)] = &[(1, 1), (3, 7), (1, 50), (3, 50)];

fn hf(name: &str) {
    let spec = spec_of(&fixture("hf").join(name));
    compare(&spec, SHAPES, false);
}

fn hf_masked(name: &str) {
    let spec = spec_of(&fixture("hf").join(name));
    compare(&spec, &[(3, 7), (2, 50)], true);
}

fn option(name: &str) {
    let spec = spec_of(&fixture("options").join(name));
    compare(&spec, SHAPES, false);
}

fn inline(source: &str, model: &str, shapes: &[(usize, usize)]) {
    let prog = Program::from_source("tiny.arch", source.to_string(), None);
    let (spec, diags) = prog.elaborate(model);
    let spec = spec.unwrap_or_else(|| panic!("{model}: {diags:?}"));
    compare(&spec, shapes, false);
}

#[test]
fn gpt2() {
    hf("gpt2");
}

#[test]
fn openai_gpt() {
    hf("openai_gpt");
}

#[test]
fn llama_gqa() {
    hf("llama");
}

#[test]
fn bert() {
    hf("bert");
    hf_masked("bert");
}

#[test]
fn roberta() {
    hf("roberta");
}

#[test]
fn albert() {
    hf("albert");
}

#[test]
fn electra() {
    hf("electra");
    hf_masked("electra");
}

#[test]
fn t5() {
    hf("t5");
    hf_masked("t5");
}

#[test]
fn bart() {
    hf("bart");
}

#[test]
fn mamba() {
    hf("mamba");
}

#[test]
fn rwkv() {
    hf("rwkv");
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
    assert!(names.len() >= 9, "option fixtures: {names:?}");
    for name in names {
        option(&name);
    }
}

/// Prompts longer than the attention's blocks of 64 queries and 256 keys (the blocked
/// path of the forward attention): several query and key blocks per head, key blocks on
/// their grid, threads splitting a block (three heads: the two threads' halves of the
/// rows meet inside a head), with a causal mask and padding, a sliding window wider than
/// a key block (rows whose keys straddle the grid), and a padded bidirectional encoder.
#[test]
fn long_prompts_cross_attention_blocks() {
    let decoder = |mask: &str| {
        format!(
            "model long {{
    vocab = 61
    d_model = 24
    context = 600
    norm = rmsnorm(eps = 1e-5)
    placement = pre
    position = rope(theta = 500.0)
    decoder {{
        layers = 2
        attention {{ heads = 3  kv_heads = 1  mask = {mask} }}
        mlp {{ hidden = 32  act = swiglu }}
    }}
}}"
        )
    };
    let spec = |source: String| {
        let prog = Program::from_source("long.arch", source, None);
        let (spec, diags) = prog.elaborate("long");
        spec.unwrap_or_else(|| panic!("{diags:?}"))
    };
    compare(&spec(decoder("causal")), &[(2, 300), (1, 129)], true);
    compare(
        &spec(decoder("sliding(window = 300)")),
        &[(1, 530), (2, 97)],
        false,
    );
    let encoder = "model long {
    vocab = 61
    d_model = 24
    context = 600
    norm = layernorm(eps = 1e-12)
    placement = post
    position = learned
    encoder {
        layers = 1
        attention { heads = 3  bias = true }
        mlp { hidden = 32  act = gelu  bias = true }
    }
}";
    compare(&spec(encoder.to_string()), &[(2, 270)], true);
}

#[test]
fn s4() {
    inline(TINY_S4, "tiny", SHAPES);
    inline(TINY_S4, "tiny_zoh", &[(3, 7)]);
}

#[test]
fn ttt() {
    let shapes = &[(1, 3), (3, 9), (2, 48)];
    inline(TINY_TTT, "tiny_linear", shapes);
    inline(TINY_TTT, "tiny_mlp", shapes);
}

#[test]
fn hybrid() {
    inline(TINY_HYBRID, "tiny_hybrid", SHAPES);
}

/// Code for the other vector sets this machine can run (detect, don't assume): the same
/// model built for plain x86-64 (SSE2, 4 lanes, 4×8 matmul tile) and for generic AVX2
/// matches the evaluator too. (AVX-512 code is generated the same way but needs a CPU
/// that has it.)
#[test]
fn other_vector_sets() {
    use archc::backend::cpu::{CpuTarget, VectorIsa};
    use archc::eval::run_package;
    use archc::package::{build, BuildOptions};
    for (name, isa) in [
        ("gpt2", VectorIsa::Sse2),
        ("llama", VectorIsa::Sse2),
        ("llama", VectorIsa::Avx2),
        ("mamba", VectorIsa::Sse2),
    ] {
        let dir = fixture("hf").join(name);
        let spec = spec_of(&dir);
        let weights = dir.join("model.safetensors");
        let inputs = archc::tensor_io::read_values(&dir.join("inputs.safetensors")).unwrap();
        let want = evaluate(&spec, &weights, inputs.clone(), &["logits"]).unwrap();
        if !isa.runs_here() {
            eprintln!("skipping {isa}: this CPU cannot run it");
            continue;
        }
        let tmp = tempfile::tempdir().unwrap();
        let mut opts = BuildOptions::host().unwrap();
        opts.target = CpuTarget::generic(isa);
        opts.outputs = vec!["logits".into()];
        opts.attention_mask = inputs.contains_key("attention_mask");
        opts.cache = false;
        build(&spec, &opts, Some(tmp.path())).unwrap();
        let got = run_package(tmp.path(), Some(&weights), inputs.clone(), 2).unwrap();
        let err = got[0].1.rel_max_diff(&want[0].1);
        eprintln!("{name} fixture, {isa}: {err:e}");
        assert!(err <= TOLERANCE, "{name} {isa}: relative error {err:e}");
    }
}

/// Decode-sized matmuls (1 to 8 rows: the matrix–vector path, one loop nest per row
/// count) and 9 rows (the packed matmul) against the evaluator, with a k and n that are
/// multiples of no vector width, on every vector set this machine runs.
#[test]
fn matrix_vector_rows_match_the_evaluator() {
    use archc::backend::cpu::{CpuTarget, VectorIsa};
    use archc::eval::{run_package_with, WeightSource};
    use archc::graph::{DType, Dim, Graph};
    use archc::interp::run;
    let (k, n) = (37u64, 29u64);
    let mut g = Graph::new("linear");
    let x = g.input(
        "x",
        vec![Dim::sym("batch"), Dim::sym("seq"), Dim::c(k)],
        DType::F32,
    );
    let w = g.param("w", vec![Dim::c(n), Dim::c(k)]);
    let y = g.linear(x, w);
    g.output("y", y);
    let g = g.finish().unwrap();
    let mut rng = Rng::new(3);
    let weight = Tensor {
        shape: vec![n as usize, k as usize],
        data: (0..n * k).map(|_| rng.uniform()).collect(),
    };
    let params = HashMap::from([("w".to_string(), weight)]);
    let mut checked = 0;
    for isa in [VectorIsa::Sse2, VectorIsa::Avx2, VectorIsa::Avx512] {
        if !isa.runs_here() {
            eprintln!("skipping {isa}: this CPU cannot run it");
            continue;
        }
        let dir = tempfile::tempdir().unwrap();
        let mut opts = archc::package::BuildOptions::host().unwrap();
        opts.target = CpuTarget::generic(isa);
        archc::package::build_graph(&g, "linear", &opts, dir.path()).unwrap();
        for (b, t) in [
            (1, 1),
            (2, 1),
            (1, 3),
            (4, 1),
            (5, 1),
            (3, 2),
            (7, 1),
            (8, 1),
            (9, 1),
        ] {
            let data = (0..b * t * k as usize).map(|_| rng.uniform()).collect();
            let input = Value::F(Tensor {
                shape: vec![b, t, k as usize],
                data,
            });
            let inputs = HashMap::from([("x".to_string(), input)]);
            let want = run(&g, &inputs, &params).unwrap()[0]
                .1
                .as_f32()
                .unwrap()
                .clone();
            let got = run_package_with(dir.path(), &WeightSource::Tensors(&params), inputs, 2)
                .unwrap()
                .remove(0)
                .1;
            let err = got.rel_max_diff(&want);
            assert!(err <= TOLERANCE, "{isa} {b}×{t} rows: {err:e}");
            checked += 1;
        }
    }
    assert!(checked >= 9, "at least one vector set ran");
}

/// Weight-gradient-shaped matmuls, `aᵀ · b` with a stored [k, m] (read in place by the
/// transposed-A drivers, no copy), with b stored [k, n] and [n, k], at odd sizes and more
/// than one packing block, on every vector set this machine runs.
#[test]
fn transposed_a_matmuls_match_the_evaluator() {
    use archc::backend::cpu::{CpuTarget, VectorIsa};
    use archc::eval::{run_package_with, WeightSource};
    use archc::graph::{DType, Dim, Graph};
    use archc::interp::run;
    let mut checked = 0;
    for (m, n, transpose_b) in [(37u64, 29u64, false), (150, 401, false), (23, 300, true)] {
        let mut g = Graph::new("at");
        let a = g.input("a", vec![Dim::sym("seq"), Dim::c(m)], DType::F32);
        let b_shape = if transpose_b {
            vec![Dim::c(n), Dim::sym("seq")]
        } else {
            vec![Dim::sym("seq"), Dim::c(n)]
        };
        let b = g.input("b", b_shape, DType::F32);
        let at = g.permute(a, &[1, 0]);
        let y = g.matmul(at, b, transpose_b);
        g.output("y", y);
        let g = g.finish().unwrap();
        let mut rng = Rng::new(11);
        for isa in [VectorIsa::Sse2, VectorIsa::Avx2, VectorIsa::Avx512] {
            if !isa.runs_here() {
                continue;
            }
            let dir = tempfile::tempdir().unwrap();
            let mut opts = archc::package::BuildOptions::host().unwrap();
            opts.target = CpuTarget::generic(isa);
            archc::package::build_graph(&g, "at", &opts, dir.path()).unwrap();
            let kernels = std::fs::read_to_string(dir.path().join("kernels.txt")).unwrap();
            assert!(
                kernels.contains("transpose_a"),
                "A is read in place:\n{kernels}"
            );
            assert!(!kernels.contains(" map "), "no transposed copy:\n{kernels}");
            for k in [1usize, 7, 300] {
                let mut t = |shape: Vec<usize>| {
                    let len = shape.iter().product();
                    Value::F(Tensor {
                        shape,
                        data: (0..len).map(|_| rng.uniform()).collect(),
                    })
                };
                let bt = if transpose_b {
                    t(vec![n as usize, k])
                } else {
                    t(vec![k, n as usize])
                };
                let inputs = HashMap::from([
                    ("a".to_string(), t(vec![k, m as usize])),
                    ("b".to_string(), bt),
                ]);
                let want = run(&g, &inputs, &HashMap::new()).unwrap()[0]
                    .1
                    .as_f32()
                    .unwrap()
                    .clone();
                let got = run_package_with(
                    dir.path(),
                    &WeightSource::Tensors(&HashMap::new()),
                    inputs,
                    2,
                )
                .unwrap()
                .remove(0)
                .1;
                let err = got.rel_max_diff(&want);
                assert!(
                    err <= TOLERANCE,
                    "{isa} {m}×{n}×{k} tb={transpose_b}: {err:e}"
                );
                checked += 1;
            }
        }
    }
    assert!(checked >= 9);
}

/// Every forward scan of the recurrent specs runs its rows apart (`Scan::rows`: threads
/// share the rows on the CPU, blocks on a GPU); the reverse scans of their training
/// graphs, which sum parameter gradients over the rows, stay whole.
#[test]
fn recurrent_scans_run_their_rows_apart() {
    use archc::kernel::Body;
    use archc::package::package_program;
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../specs");
    for name in ["mamba", "rwkv4", "s4", "ttt"] {
        let prog = Program::load(&root.join(format!("{name}.arch"))).unwrap();
        let spec = prog.check().0.remove(0);
        let forward =
            archc::package::package_graph(&spec, &archc::package::BuildOptions::host().unwrap())
                .unwrap();
        let train = archc::train::train_graph(
            &spec,
            &archc::train::TrainOptions {
                optimizer: archc::train::Optimizer::default(),
                accumulate: false,
                attention_mask: false,
                frozen: Vec::new(),
            },
        )
        .unwrap()
        .0;
        for (what, graph) in [("forward", forward), ("train", train)] {
            let p = package_program(&graph).unwrap();
            let scans: Vec<_> = p
                .kernels
                .iter()
                .filter_map(|k| match &k.body {
                    Body::Scan(s) => Some(s),
                    _ => None,
                })
                .collect();
            assert!(!scans.is_empty(), "{name} {what}: no scans");
            for s in scans {
                assert_eq!(s.rows.is_some(), !s.reverse, "{name} {what}: {s:?}");
                if let Some(r) = &s.rows {
                    assert_eq!(
                        p.syms[r.sym as usize], "batch",
                        "{name}: rows are the batch"
                    );
                    assert!(!r.bufs.is_empty());
                }
            }
        }
    }
}

//! The CUDA backend's thread programs, run by the host simulator (one OS thread per GPU
//! thread, real barriers and warp shuffles), against the reference evaluator on the tiny
//! model of every family with random weights: the same odd shapes and padding masks as
//! the CPU backend's tests, ≤ 1e-4 relative.

mod common;

use arch_dsl::spec::{ArchSpec, Family};
use archc::autodiff::check::Rng;
use archc::eval::{evaluate, evaluate_cuda_sim};
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

const SHAPES: &[(usize, usize)] = &[(1, 1), (3, 7), (2, 70)];

fn hf(name: &str) {
    compare(&spec_of(&fixture("hf").join(name)), SHAPES, false);
}

#[test]
fn gpt2() {
    hf("gpt2");
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
    hf("bert");
    hf_masked("bert");
    hf("roberta");
    hf("albert");
    hf_masked("electra");
}

#[test]
fn encoder_decoders() {
    // T5: relative position bias, no scaling.
    hf("t5");
    hf_masked("t5");
    hf("bart");
}

#[test]
fn recurrent() {
    hf("mamba");
    hf("rwkv");
    inline(common::TINY_S4, "tiny", &[(1, 1), (3, 7)]);
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

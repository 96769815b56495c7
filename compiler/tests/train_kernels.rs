//! The compiled backward pass against the reference evaluator: each model's next-token loss
//! differentiated with respect to every parameter, built into a package by the CPU backend
//! and run by the runtime, must give the evaluator's gradients (max|Δ| / max|ref| ≤ 1e-4;
//! a gradient that is zero in exact arithmetic — the key bias, which softmax ignores — is
//! measured against the model's largest). Covers every scan cell's reverse scan (Mamba,
//! RWKV-4, S4D, TTT) and attention's backward (GPT-2, LLaMA with GQA).

mod common;

use arch_dsl::spec::ArchSpec;
use archc::autodiff::check::Rng;
use archc::autodiff::{add_lm_loss, grad, Wrt};
use archc::eval::{run_package_with, WeightSource};
use archc::expand::{forward, ExpandOptions, BATCH, SEQ};
use archc::graph::{DType, Dim};
use archc::interp::{self, Value};
use archc::tensor::Tensor;
use common::{fixture, random_params, spec_of, TINY_S4, TINY_TTT};
use std::collections::HashMap;

const TOLERANCE: f64 = 1e-4;

fn spec_from(src: &str, model: &str) -> ArchSpec {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("model.arch");
    std::fs::write(&path, src).unwrap();
    let prog = arch_dsl::elab::Program::load(&path).unwrap();
    prog.elaborate(model).0.expect("the spec elaborates")
}

fn check(spec: &ArchSpec, params: &interp::Params, ids: Value, what: &str) {
    let mut g = forward(
        spec,
        &ExpandOptions {
            attention_mask: false,
            recurrent_ssm: true,
        },
    )
    .unwrap();
    let logits = g.outputs.iter().find(|(n, _)| n == "logits").unwrap().1;
    let labels = g.input("labels", vec![Dim::sym(BATCH), Dim::sym(SEQ)], DType::I64);
    add_lm_loss(&mut g, logits, labels);
    let g = grad(&g.finish().unwrap(), "loss", Wrt::Params).unwrap();
    let g = archc::passes::simplify(&g);
    let inputs: HashMap<String, Value> = [
        ("input_ids".to_string(), ids.clone()),
        ("labels".to_string(), ids),
    ]
    .into();
    let want: HashMap<String, Value> = interp::run(&g, &inputs, params)
        .unwrap()
        .into_iter()
        .collect();
    let dir = tempfile::tempdir().unwrap();
    let opts = archc::package::BuildOptions::host().unwrap();
    archc::package::build_graph(&g, "grad", &opts, dir.path()).unwrap();
    let got = run_package_with(dir.path(), &WeightSource::Tensors(params), inputs, 2).unwrap();
    let largest = got
        .iter()
        .filter(|(n, _)| n.starts_with("grad:"))
        .map(|(n, _)| archc::tensor::max_abs(&want[n].as_f32().unwrap().data))
        .fold(0.0f64, f64::max);
    assert!(largest > 0.0, "{what}: the gradients are not all zero");
    let mut checked = 0;
    for (name, t) in &got {
        let w = want[name].as_f32().unwrap();
        let max_ref = archc::tensor::max_abs(&w.data);
        let err = if name.starts_with("grad:") && max_ref < 1e-6 * largest {
            archc::tensor::max_abs_diff(&t.data, &w.data) / largest
        } else {
            t.rel_max_diff(w)
        };
        assert!(err <= TOLERANCE, "{what} {name}: {err:e}");
        checked += 1;
    }
    eprintln!("{what}: {checked} outputs match");
    assert!(checked > 5);
}

fn hf(name: &str) {
    let dir = fixture(&format!("hf/{name}"));
    let spec = spec_of(&dir);
    let params: interp::Params = archc::weights::load(&spec, &dir.join("model.safetensors"))
        .unwrap()
        .into_tensors()
        .into_iter()
        .collect();
    let ids = archc::tensor_io::read_values(&dir.join("inputs.safetensors")).unwrap()["input_ids"]
        .clone();
    check(&spec, &params, ids, name);
}

fn tiny(src: &str, model: &str, seq: usize) {
    let spec = spec_from(src, model);
    let mut rng = Rng::new(5);
    let params = random_params(&mut rng, &spec, (1e-2, 0.5));
    let ids = Value::I(Tensor {
        shape: vec![2, seq],
        data: (0..2 * seq)
            .map(|_| (rng.next_u64() % spec.vocab) as i64)
            .collect(),
    });
    check(&spec, &params, ids, model);
}

#[test]
fn gpt2() {
    hf("gpt2");
}

#[test]
fn llama() {
    hf("llama");
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
fn s4d() {
    tiny(TINY_S4, "tiny", 7);
    tiny(TINY_S4, "tiny_zoh", 7);
}

#[test]
fn ttt() {
    tiny(TINY_TTT, "tiny_linear", 6);
    tiny(TINY_TTT, "tiny_mlp", 6);
}

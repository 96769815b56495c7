//! Whole-model gradients against PyTorch: each tiny fixture under `tests/fixtures/hf/` with a
//! `grads.safetensors` (made by `tools/make_fixtures.py`: `model(input_ids=x, labels=x)`
//! in float64, no attention mask) is expanded, given Hugging Face's causal-LM loss,
//! differentiated with respect to every parameter and run on the reference evaluator. The
//! loss and every parameter's gradient must match to max|Δ| / max|ref| ≤ 1e-4; the
//! reference gradients are read through the weight loader, which maps their Hugging Face
//! names (and GPT-2's fused, transposed layout) onto canonical parameters.

use arch_dsl::elab::Program;
use archc::autodiff::{add_lm_loss, grad, Wrt};
use archc::expand::{forward, ExpandOptions, BATCH, SEQ};
use archc::graph::{DType, Dim};
use archc::interp::{self, Value};
use archc::tensor_io::read_values;
use archc::weights;
use std::collections::HashMap;
use std::path::Path;

const TOLERANCE: f64 = 1e-4;
/// A reference gradient this small next to the model's largest is zero up to rounding.
const ZERO: f64 = 1e-12;

/// Runs one fixture; returns (what, relative error) for the loss and every gradient.
fn gradient_errors(name: &str) -> Vec<(String, f64)> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/hf")
        .join(name);
    let prog = Program::load(&dir.join("model.arch")).expect("model.arch");
    let (spec, diags) = prog.elaborate("tiny");
    let spec = spec.unwrap_or_else(|| panic!("{name}: {diags:?}"));

    let mut g = forward(
        &spec,
        &ExpandOptions {
            attention_mask: false,
            ..ExpandOptions::default()
        },
    )
    .unwrap_or_else(|e| panic!("{name}: {e}"));
    let logits = g
        .outputs
        .iter()
        .find(|(n, _)| n == "logits")
        .expect("a logits output")
        .1;
    let labels = g.input("labels", vec![Dim::sym(BATCH), Dim::sym(SEQ)], DType::I64);
    add_lm_loss(&mut g, logits, labels);
    let g = g.finish().unwrap();
    let gg = grad(&g, "loss", Wrt::Params).unwrap_or_else(|e| panic!("{name}: {e}"));

    let params: interp::Params = weights::load(&spec, &dir.join("model.safetensors"))
        .unwrap()
        .into_tensors()
        .into_iter()
        .collect();
    let file = read_values(&dir.join("inputs.safetensors")).unwrap();
    let ids = file["input_ids"].clone();
    let inputs: HashMap<String, Value> = [
        ("input_ids".to_string(), ids.clone()),
        ("labels".to_string(), ids),
    ]
    .into();
    let results: HashMap<String, Value> = interp::run(&gg, &inputs, &params)
        .unwrap_or_else(|e| panic!("{name}: {e}"))
        .into_iter()
        .collect();

    let expected = read_values(&dir.join("outputs.safetensors")).unwrap();
    let loss = results["loss"].as_f32().unwrap();
    let mut errors = vec![(
        format!("{name}: loss"),
        loss.rel_max_diff(expected["loss"].as_f32().unwrap()),
    )];
    let reference = weights::load(&spec, &dir.join("grads.safetensors"))
        .unwrap_or_else(|e| panic!("{name}: grads: {e}"));
    assert_eq!(
        reference.len(),
        params.len(),
        "{name}: every parameter has a reference gradient"
    );
    let largest = reference
        .tensors()
        .values()
        .map(|t| archc::tensor::max_abs(&t.data))
        .fold(0.0f64, f64::max);
    for (param, want) in reference.tensors() {
        let got = results
            .get(&format!("grad:{param}"))
            .unwrap_or_else(|| panic!("{name}: no gradient for `{param}`"))
            .as_f32()
            .unwrap();
        assert_eq!(got.shape, want.shape, "{name}: `{param}`");
        let max_ref = archc::tensor::max_abs(&want.data);
        let err = if max_ref < ZERO * largest {
            // Zero in exact arithmetic (the key bias: softmax ignores a per-query shift):
            // float64 rounding in the reference, float32 rounding here. Measured against
            // the model's largest gradient instead.
            let max_diff = archc::tensor::max_abs_diff(&got.data, &want.data);
            max_diff / largest
        } else {
            got.rel_max_diff(want)
        };
        errors.push((format!("{name}: {param}"), err));
    }
    errors
}

fn check(name: &str) {
    let errors = gradient_errors(name);
    for (what, err) in &errors {
        eprintln!("{what}: {err:.2e}");
    }
    let bad: Vec<String> = errors
        .iter()
        .filter(|(_, e)| e.is_nan() || *e > TOLERANCE)
        .map(|(w, e)| format!("{w}: {e:.2e}"))
        .collect();
    assert!(
        bad.is_empty(),
        "relative error above {TOLERANCE:e}:\n{}",
        bad.join("\n")
    );
}

#[test]
fn gpt2_lm_gradients() {
    check("gpt2");
}

#[test]
fn llama_lm_gradients() {
    check("llama");
}

#[test]
fn mamba_lm_gradients() {
    check("mamba");
}

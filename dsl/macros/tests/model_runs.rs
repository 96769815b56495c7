//! `model!` models that run: the tiny GPT-2 of the conformance fixtures, declared from its
//! spec file, loads the Hugging Face weights with `Model::load`, and its forward pass and
//! greedy generation equal what transformers computed
//! (`compiler/tests/fixtures/hf/gpt2/generate.safetensors`).

use archc::interp::Value;
use archc::tensor_io::read_values;
use std::path::PathBuf;

arch_macros::model!(
    file = "../../compiler/tests/fixtures/hf/gpt2/model.arch",
    model = "tiny"
);

fn fixture(file: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../compiler/tests/fixtures/hf/gpt2")
        .join(file)
}

fn ints(v: &Value) -> Vec<i64> {
    match v {
        Value::I(t) => t.data.clone(),
        _ => panic!("expected integers"),
    }
}

#[test]
fn a_declared_model_loads_hf_weights_runs_and_generates_like_transformers() {
    let want = read_values(&fixture("generate.safetensors")).unwrap();
    let ids = ints(&want["input_ids"]);
    let tokens = ints(&want["tokens"]);
    let logits = want["logits"].as_f32().unwrap();
    let (batch, vocab) = (2, tiny::VOCAB as usize);
    let seq = ids.len() / batch;

    let m = tiny::Model::load(fixture("model.safetensors")).unwrap();
    let out = m.forward(&ids, batch).unwrap();
    assert_eq!(out.shape(), &[batch, seq, vocab]);
    // The last position's logits are the ones that chose the first new token.
    let scale = logits.data.iter().fold(0f32, |a, x| a.max(x.abs()));
    for r in 0..batch {
        let ours = &out.data()[((r * seq) + seq - 1) * vocab..(r * seq + seq) * vocab];
        let theirs = &logits.data[r * 8 * vocab..(r * 8 + 1) * vocab];
        let diff = archc::tensor::max_abs_diff(ours, theirs);
        assert!(diff <= 1e-4 * scale as f64, "row {r}: {diff:e}");
    }
    let n = tokens.len() / batch - seq;
    assert_eq!(m.generate(&ids, batch, n).unwrap(), tokens);
}

#[test]
fn weights_that_do_not_fit_are_an_error_naming_the_tensor() {
    let llama = fixture("../llama/model.safetensors");
    let e = tiny::Model::load(llama).unwrap_err().to_string();
    assert!(
        e.contains("embed.tokens.weight") || e.contains("wte"),
        "{e}"
    );
    let e = tiny::Model::load(fixture("no-such.safetensors")).unwrap_err();
    assert!(e.to_string().contains("no-such"), "{e}");
}

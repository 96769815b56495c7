//! `archc generate`'s path (the step program built from the spec, run by the runtime's
//! `Generator`) against Hugging Face `generate` on the committed tiny models: greedy
//! tokens identical and the logits that chose them within 1e-4 relative
//! (`tests/fixtures/hf/*/generate*.safetensors`, made by `tools/make_generate_fixtures.py`).

mod common;

use arch_runtime::generate::{Decoding, GenerateOptions, Generator};
use archc::interp::Value;
use archc::package::{build, BuildOptions};
use archc::tensor::Tensor;
use archc::tensor_io::read_values;
use common::{fixture, spec_of, TOLERANCE};

fn ints(v: &Value) -> (Vec<usize>, Vec<i64>) {
    match v {
        Value::I(t) => (t.shape.clone(), t.data.clone()),
        _ => panic!("expected an integer tensor"),
    }
}

/// Generates with the fixture's prompts and compares with what transformers generated.
fn check(name: &str, file: &str) {
    let dir = fixture(&format!("hf/{name}"));
    let spec = spec_of(&dir);
    let want = read_values(&dir.join(file)).unwrap();
    let (shape, ids) = ints(&want["input_ids"]);
    let mask = want.get("attention_mask").map(|m| ints(m).1);
    let (tok_shape, tokens) = ints(&want["tokens"]);
    let logits = want["logits"].as_f32().unwrap().clone();
    let n = tok_shape[1] - shape[1];
    assert!(n > 0, "{name}: no new tokens in the fixture");

    let out_dir = tempfile::tempdir().unwrap();
    let opts = BuildOptions {
        step: true,
        cache: false,
        ..BuildOptions::host().unwrap()
    };
    let pkg = out_dir.path().join("step");
    build(&spec, &opts, Some(&pkg)).unwrap();
    let mut generator = Generator::load(&pkg, &dir.join("model.safetensors"), 2).unwrap();
    let mut streamed = 0;
    let got = generator
        .generate(
            &ids,
            mask.as_deref(),
            shape[0],
            &GenerateOptions {
                max_new_tokens: n,
                decoding: Decoding::Greedy,
                eos: vec![],
                pad: 0,
                save_logits: true,
            },
            |step| {
                assert_eq!(step.len(), shape[0]);
                streamed += 1;
            },
        )
        .unwrap_or_else(|e| panic!("{name}: {e}"));
    assert_eq!(streamed, n, "{name}: one callback per new token");
    assert_eq!(got.tokens, tokens, "{name} ({file}): greedy tokens");
    let ours = Tensor {
        shape: logits.shape.clone(),
        data: got.logits.unwrap(),
    };
    let err = ours.rel_max_diff(&logits);
    eprintln!("{name} ({file}): {n} tokens equal, logits within {err:e}");
    assert!(
        err <= TOLERANCE,
        "{name} ({file}): logits differ by {err:e}"
    );
}

#[test]
fn gpt2_generates_like_transformers() {
    check("gpt2", "generate.safetensors");
}

#[test]
fn gpt2_left_padded_batch_generates_like_transformers() {
    check("gpt2", "generate_padded.safetensors");
}

#[test]
fn gpt1_generates_like_transformers() {
    check("openai_gpt", "generate.safetensors");
}

#[test]
fn llama_gqa_left_padded_batch_generates_like_transformers() {
    check("llama", "generate.safetensors");
}

#[test]
fn mamba_generates_like_transformers() {
    check("mamba", "generate.safetensors");
}

#[test]
fn rwkv_generates_like_transformers() {
    check("rwkv", "generate.safetensors");
}

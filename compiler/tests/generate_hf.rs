//! `archc generate`'s path (a package built with its step program — and an
//! encoder-decoder's encode program — run by the runtime's `Generator`) against Hugging
//! Face `generate` on the committed tiny models: greedy tokens identical and the logits
//! that chose them within 1e-4 relative (`tests/fixtures/hf/*/generate*.safetensors`, made
//! by `tools/make_generate_fixtures.py`). Decoder-only: GPT-2 (also a left-padded batch),
//! GPT-1, LLaMA (GQA, left-padded), Mamba, RWKV-4; encoder-decoders: T5 (relative bias in
//! the cached decoder), BART.

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
    // Encoder-decoders start the decoder from this token; decoder-only models continue
    // the prompt.
    let start = want.get("decoder_start_token_id").map(|v| ints(v).1[0]);
    let prompt_len = if start.is_some() { 1 } else { shape[1] };
    let n = tok_shape[1] - prompt_len;
    assert!(n > 0, "{name}: no new tokens in the fixture");

    // A package built with `archc build -o`: forward, plus the step (and encode)
    // programs the generator loads from its subdirectories.
    let out_dir = tempfile::tempdir().unwrap();
    let opts = BuildOptions {
        cache: false,
        ..BuildOptions::host().unwrap()
    };
    build(&spec, &opts, Some(out_dir.path())).unwrap();
    let mut generator = Generator::load(out_dir.path(), &dir.join("model.safetensors"), 2).unwrap();
    assert_eq!(generator.is_seq2seq(), start.is_some(), "{name}");
    let gen_opts = GenerateOptions {
        max_new_tokens: n,
        decoding: Decoding::Greedy,
        eos: vec![],
        pad: 0,
        save_logits: true,
    };
    let mut streamed = 0;
    let b = shape[0];
    let on_step = |step: &[i64]| {
        assert_eq!(step.len(), b);
        streamed += 1;
    };
    let got = match start {
        Some(s) => {
            generator.generate_seq2seq(&ids, mask.as_deref(), b, &vec![s; b], &gen_opts, on_step)
        }
        None => generator.generate(&ids, mask.as_deref(), b, &gen_opts, on_step),
    }
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

/// Llama 3.1's scaled RoPE in the step kernels, positions counted over real tokens.
#[test]
fn llama3_scaled_rope_generates_like_transformers() {
    check("llama3_rope", "generate.safetensors");
}

#[test]
fn mamba_generates_like_transformers() {
    check("mamba", "generate.safetensors");
}

#[test]
fn rwkv_generates_like_transformers() {
    check("rwkv", "generate.safetensors");
}

#[test]
fn t5_generates_like_transformers() {
    check("t5", "generate.safetensors");
}

#[test]
fn bart_generates_like_transformers() {
    check("bart", "generate.safetensors");
}

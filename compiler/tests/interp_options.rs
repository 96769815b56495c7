//! The reference evaluator against an independent float64 PyTorch implementation of the spec
//! options that no Hugging Face fixture covers (sinusoidal and ALiBi positions, interleaved and
//! partial RoPE, GEGLU/ReGLU/SiLU/ReLU MLPs, sliding-window masks, `bias = qkv`, bias-free
//! LayerNorm, embedding scale, scaled and biased LM heads, heterogeneous stacks, multi-query
//! attention, `head_dim ≠ d_model / heads`, post-norm with a final norm). Each tiny model under
//! `tests/fixtures/options/` (made by `tools/make_option_fixtures.py`, semantics in its README)
//! is expanded from its `model.arch`, loaded from canonical-name weights, run on its inputs,
//! and must match the recorded `hidden` and `logits` to max|out − ref| / max|ref| ≤ 1e-4, at
//! real tokens only where the inputs carry an `attention_mask`.
//!
//! `ARCHC_OPTION_FIXTURES=<dir>` reads the fixtures from another directory (the generator's
//! `--perturb` mode writes deliberately wrong references there, to show each test can fail).

mod common;

use arch_dsl::elab::Program;
use archc::eval::evaluate;
use archc::interp::Value;
use archc::tensor_io::read_values;
use std::path::{Path, PathBuf};

const TOLERANCE: f64 = 1e-4;

/// The fixtures this file tests, in the order of the generator; `every_fixture_is_tested`
/// keeps the list and the directory in step.
const FIXTURES: &[&str] = &[
    "sinusoidal_geglu",
    "alibi_mqa_reglu",
    "rope_interleaved_partial",
    "rope_half_partial_sliding",
    "hetero_stack",
    "encoder_post_sinusoidal",
    "encoder_alibi",
    "hetero_alibi_heads",
    "hetero_rope_head_dim",
];

fn root() -> PathBuf {
    match std::env::var_os("ARCHC_OPTION_FIXTURES") {
        Some(dir) => PathBuf::from(dir),
        None => Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/options"),
    }
}

/// Runs one fixture; returns the relative error of `hidden` and `logits`.
fn run_fixture(dir: &Path) -> Vec<(String, f64)> {
    let prog = Program::load(&dir.join("model.arch")).expect("model.arch");
    let (spec, diags) = prog.elaborate("tiny");
    let spec = spec.unwrap_or_else(|| panic!("{}: {diags:?}", dir.display()));
    let inputs = read_values(&dir.join("inputs.safetensors")).unwrap();
    let mask = match inputs.get("attention_mask") {
        Some(Value::I(m)) => Some(m.clone()),
        _ => None,
    };
    let expected = read_values(&dir.join("outputs.safetensors")).unwrap();
    let names = ["hidden", "logits"];
    let outputs = evaluate(&spec, &dir.join("model.safetensors"), inputs, &names)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
    names
        .iter()
        .map(|name| {
            let got = outputs
                .iter()
                .find(|(n, _)| n == name)
                .unwrap_or_else(|| panic!("no output `{name}`"))
                .1
                .clone();
            let want = match &expected[*name] {
                Value::F(t) => t.clone(),
                _ => panic!("`{name}` is not f32"),
            };
            assert_eq!(got.shape, want.shape, "{}: `{name}` shape", dir.display());
            let (got, want) = match &mask {
                Some(m) => (common::unpadded(&got, m), common::unpadded(&want, m)),
                None => (got, want),
            };
            (name.to_string(), got.rel_max_diff(&want))
        })
        .collect()
}

/// The rows of a [B, T, X] tensor at real tokens (padding rows are unspecified).
fn check(name: &str) {
    let dir = root().join(name);
    let errors = run_fixture(&dir);
    eprintln!("{name}: {errors:?}");
    for (what, err) in errors {
        assert!(
            err <= TOLERANCE,
            "{name}:{what}: relative error {err:e} > {TOLERANCE:e}"
        );
    }
}

#[test]
fn every_fixture_is_tested() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/options");
    let mut found: Vec<String> = std::fs::read_dir(&dir)
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.path().is_dir())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    found.sort();
    let mut listed: Vec<String> = FIXTURES.iter().map(|s| s.to_string()).collect();
    listed.sort();
    assert_eq!(found, listed);
}

/// Sinusoidal positions, GEGLU, `bias = qkv`, `layernorm(bias = false)`, `embed.scale = 2.0`,
/// tied `lm(scale = 0.5, bias = true)`.
#[test]
fn sinusoidal_geglu() {
    check("sinusoidal_geglu");
}

/// ALiBi (4 heads) over one key/value head, ReGLU, RMSNorm, untied head, left padding (so
/// the padding keys precede real queries and must be masked).
#[test]
fn alibi_mqa_reglu() {
    check("alibi_mqa_reglu");
}

/// Interleaved (GPT-J) RoPE on half of each head, GQA with head_dim 12 ≠ 20 / 4, plain SiLU
/// MLP, all attention biases, right padding.
#[test]
fn rope_interleaved_partial() {
    check("rope_interleaved_partial");
}

/// Half-style (NeoX) RoPE on half of each head, `sliding(window = 3)`, multi-query
/// attention, plain ReLU MLP.
#[test]
fn rope_half_partial_sliding() {
    check("rope_half_partial_sliding");
}

/// `stack = [dense, local] * 2`: blocks differing in heads, kv_heads, mask, biases and MLP.
#[test]
fn hetero_stack() {
    check("hetero_stack");
}

/// Encoder, `placement = post` with `final_norm = true`, sinusoidal positions, GEGLU with
/// biases, `bias = qkv`, `embed.scale = 2.0`, `lm(scale = 0.5, bias = true)`, padding.
#[test]
fn encoder_post_sinusoidal() {
    check("encoder_post_sinusoidal");
}

/// Encoder with bidirectional ALiBi (8 heads over 2 key/value heads) and padding.
#[test]
fn encoder_alibi() {
    check("encoder_alibi");
}

/// ALiBi in a stack whose blocks have different head counts: each attention's slopes follow
/// its own head count.
#[test]
fn hetero_alibi_heads() {
    check("hetero_alibi_heads");
}

/// RoPE in a stack whose blocks have different head_dim: each attention rotates its own head
/// width.
#[test]
fn hetero_rope_head_dim() {
    check("hetero_rope_head_dim");
}

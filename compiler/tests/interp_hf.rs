//! The reference evaluator against Hugging Face `transformers`: each tiny fixture model under
//! `tests/fixtures/hf/` (made by `tools/make_fixtures.py`) is expanded from its `model.arch`,
//! loaded from its checkpoint, run on its inputs, and must match the recorded outputs to
//! max|out − ref| / max|ref| ≤ 1e-4.

use arch_dsl::elab::Program;
use archc::eval::evaluate;
use archc::interp::Value;
use archc::tensor_io::read_values;
use std::path::Path;

const TOLERANCE: f64 = 1e-4;

/// Runs one fixture; returns the relative error of each compared output.
fn run_fixture(dir: &Path, compare: &[(&str, &str)]) -> Vec<(String, f64)> {
    let prog = Program::load(&dir.join("model.arch")).expect("model.arch");
    let (spec, diags) = prog.elaborate("tiny");
    let spec = spec.unwrap_or_else(|| panic!("{}: {diags:?}", dir.display()));
    let inputs = read_values(&dir.join("inputs.safetensors")).unwrap();
    let mask = match inputs.get("attention_mask") {
        Some(Value::I(m)) => Some(m.clone()),
        _ => None,
    };
    let expected = read_values(&dir.join("outputs.safetensors")).unwrap();
    let wanted: Vec<&str> = compare.iter().map(|(ours, _)| *ours).collect();
    let outputs = evaluate(&spec, &dir.join("model.safetensors"), inputs, &wanted)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
    compare
        .iter()
        .map(|(ours, theirs)| {
            let got = outputs
                .iter()
                .find(|(n, _)| n == ours)
                .unwrap_or_else(|| panic!("no output `{ours}`"))
                .1
                .clone();
            let want = match &expected[*theirs] {
                Value::F(t) => t.clone(),
                _ => panic!("`{theirs}` is not f32"),
            };
            assert_eq!(got.shape, want.shape, "{}: `{ours}` shape", dir.display());
            let (got, want) = match &mask {
                Some(m) if got.shape.len() == 3 && got.shape[..2] == m.shape[..] => {
                    (unpadded(&got, m), unpadded(&want, m))
                }
                _ => (got, want),
            };
            (
                format!("{}:{ours}", dir.file_name().unwrap().to_string_lossy()),
                got.rel_max_diff(&want),
            )
        })
        .collect()
}

/// The rows of a [B, T, X] tensor at real tokens: what a model computes at padding
/// positions is unspecified (RoBERTa, for one, gives them another position id).
fn unpadded(
    t: &archc::tensor::F32Tensor,
    mask: &archc::tensor::I64Tensor,
) -> archc::tensor::F32Tensor {
    let width = t.shape[2];
    let data: Vec<f32> = mask
        .data
        .iter()
        .enumerate()
        .filter(|(_, &m)| m != 0)
        .flat_map(|(i, _)| t.data[i * width..(i + 1) * width].iter().copied())
        .collect();
    archc::tensor::Tensor {
        shape: vec![data.len() / width, width],
        data,
    }
}

fn check(name: &str, compare: &[(&str, &str)]) {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/hf")
        .join(name);
    for (what, err) in run_fixture(&dir, compare) {
        assert!(
            err <= TOLERANCE,
            "{what}: relative error {err:e} > {TOLERANCE:e}"
        );
    }
}

#[test]
fn gpt2() {
    check("gpt2", &[("hidden", "hidden"), ("logits", "logits")]);
}

#[test]
fn openai_gpt() {
    check("openai_gpt", &[("hidden", "hidden"), ("logits", "logits")]);
}

#[test]
fn llama() {
    check("llama", &[("hidden", "hidden"), ("logits", "logits")]);
}

#[test]
fn bert_pretraining() {
    check(
        "bert",
        &[
            ("hidden", "hidden"),
            ("logits", "logits"),
            ("classifier_logits", "seq_relationship_logits"),
        ],
    );
}

#[test]
fn bert_model() {
    check("bert_model", &[("hidden", "hidden")]);
}

#[test]
fn roberta() {
    check("roberta", &[("hidden", "hidden"), ("logits", "logits")]);
}

#[test]
fn albert() {
    check("albert", &[("hidden", "hidden"), ("logits", "logits")]);
}

#[test]
fn electra() {
    check("electra", &[("hidden", "hidden"), ("logits", "logits")]);
}

#[test]
fn t5() {
    check(
        "t5",
        &[
            ("encoder_hidden", "encoder_hidden"),
            ("hidden", "hidden"),
            ("logits", "logits"),
        ],
    );
}

#[test]
fn bart() {
    check(
        "bart",
        &[
            ("encoder_hidden", "encoder_hidden"),
            ("hidden", "hidden"),
            ("logits", "logits"),
        ],
    );
}

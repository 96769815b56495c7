//! `archc eval` and `archc graph` as a user runs them: outputs that match the reference
//! fixtures, and clear errors for bad inputs.

use archc::interp::Value;
use archc::tensor::Tensor;
use archc::tensor_io::{read_values, write_values};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn archc(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_archc"))
        .args(args)
        .output()
        .expect("archc runs")
}

fn fixture(path: &str) -> String {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/hf")
        .join(path)
        .display()
        .to_string()
}

fn temp(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("archc-eval-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir.join(name)
}

fn ids_file(name: &str, ids: Vec<i64>, shape: Vec<usize>) -> String {
    let path = temp(name);
    write_values(
        &path,
        &[("input_ids".into(), Value::I(Tensor { shape, data: ids }))],
    )
    .unwrap();
    path.display().to_string()
}

#[test]
fn eval_writes_logits_that_match_transformers() {
    let out = temp("gpt2_logits.safetensors");
    let run = archc(&[
        "eval",
        &fixture("gpt2/model.arch"),
        "--weights",
        &fixture("gpt2/model.safetensors"),
        "--inputs",
        &fixture("gpt2/inputs.safetensors"),
        "--out",
        out.to_str().unwrap(),
    ]);
    assert!(
        run.status.success(),
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );
    let ours = read_values(&out).unwrap();
    let theirs = read_values(Path::new(&fixture("gpt2/outputs.safetensors"))).unwrap();
    let (Value::F(a), Value::F(b)) = (&ours["logits"], &theirs["logits"]) else {
        panic!()
    };
    assert!(a.rel_max_diff(b) <= 1e-4);
}

fn eval_error(model: &str, inputs: &str) -> String {
    let out = temp("unused.safetensors");
    let run = archc(&[
        "eval",
        &fixture(model),
        "--weights",
        &fixture(&model.replace("model.arch", "model.safetensors")),
        "--inputs",
        inputs,
        "--out",
        out.to_str().unwrap(),
    ]);
    assert_eq!(run.status.code(), Some(1), "must fail");
    String::from_utf8_lossy(&run.stderr).into_owned()
}

#[test]
fn eval_rejects_bad_inputs_with_clear_errors() {
    let big = ids_file("big.safetensors", vec![1, 2, 500], vec![1, 3]);
    assert!(
        eval_error("gpt2/model.arch", &big).contains("token id 500, outside the vocabulary of 101")
    );
    let long = ids_file("long.safetensors", vec![1; 40], vec![1, 40]);
    assert!(eval_error("gpt2/model.arch", &long).contains("more than the model's context of 16"));
    let flat = ids_file("flat.safetensors", vec![1, 2, 3], vec![3]);
    assert!(eval_error("gpt2/model.arch", &flat).contains("must have shape [batch, seq]"));
    let t5 = ids_file("t5.safetensors", vec![1, 2, 3], vec![1, 3]);
    assert!(eval_error("t5/model.arch", &t5).contains("needs `decoder_input_ids`"));
    let missing = eval_error("gpt2/model.arch", "/no/such/inputs.safetensors");
    assert!(
        missing.contains("cannot read /no/such/inputs.safetensors"),
        "{missing}"
    );
}

#[test]
fn eval_reports_a_weights_file_that_does_not_fit() {
    let out = temp("x.safetensors");
    let run = archc(&[
        "eval",
        &fixture("llama/model.arch"),
        "--weights",
        &fixture("gpt2/model.safetensors"),
        "--inputs",
        &fixture("llama/inputs.safetensors"),
        "--out",
        out.to_str().unwrap(),
    ]);
    assert_eq!(run.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&run.stderr).contains("error:"));
}

#[test]
fn graph_prints_ir_that_reads_back_and_diagrams() {
    let specs = Path::new(env!("CARGO_MANIFEST_DIR")).join("../specs");
    let text = archc(&[
        "graph",
        &format!("{}:llama3_8b", specs.join("llama3.arch").display()),
    ]);
    assert!(text.status.success());
    let text = String::from_utf8(text.stdout).unwrap();
    assert!(text.starts_with("// decoder layers 0..32: identical, shown once"));
    let ir: String = text
        .lines()
        .filter(|l| !l.starts_with("//"))
        .map(|l| format!("{l}\n"))
        .collect();
    let graph = archc::graph::read(&ir).unwrap();
    archc::graph::verify(&graph).unwrap();
    assert_eq!(
        archc::graph::print(&graph),
        ir,
        "print ∘ read is the identity"
    );
    let dot = String::from_utf8(
        archc(&[
            "graph",
            &specs.join("t5.arch").display().to_string(),
            "--format",
            "dot",
        ])
        .stdout,
    )
    .unwrap();
    assert!(dot.starts_with("digraph model {") && dot.contains("cross-attention"));
    let svg = String::from_utf8(
        archc(&[
            "graph",
            &specs.join("mamba.arch").display().to_string(),
            "--format",
            "svg",
        ])
        .stdout,
    )
    .unwrap();
    assert!(svg.starts_with("<svg") && svg.contains("layer × 24"));
    let train = archc(&[
        "graph",
        &fixture("gpt2/model.arch"),
        "--mode",
        "train",
        "--all-layers",
    ]);
    assert!(
        train.status.success(),
        "{}",
        String::from_utf8_lossy(&train.stderr)
    );
    let train = String::from_utf8(train.stdout).unwrap();
    let grads = train.lines().filter(|l| l.contains("output grad:")).count();
    // tokens, positions, final norm (2), and per layer 16: two norms, q/k/v/o and up/down with biases
    assert_eq!(
        grads,
        4 + 2 * 16,
        "every parameter of the 2-layer GPT-2 has a gradient"
    );
    assert!(train.contains("output loss = %"));
    let bert = archc(&[
        "graph",
        &specs.join("bert.arch").display().to_string(),
        "--mode",
        "train",
    ]);
    assert_eq!(
        bert.status.code(),
        Some(1),
        "MLM's loss is not built yet: a clear error"
    );
}

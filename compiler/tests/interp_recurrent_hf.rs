//! The reference evaluator on the recurrent cells against Hugging Face `transformers`: the
//! tiny Mamba-1 and RWKV-4 fixtures under `tests/fixtures/hf/` (made by
//! `tools/make_fixtures.py`) are expanded from their `model.arch`, loaded from their
//! checkpoints, run on their inputs, and must match the recorded outputs to
//! max|out − ref| / max|ref| ≤ 1e-4. Their graphs (scans with nested bodies) must also print,
//! read back equal, and verify.

use arch_dsl::elab::Program;
use arch_dsl::spec::ArchSpec;
use archc::eval::evaluate;
use archc::expand::{forward, ExpandOptions};
use archc::graph::{print, read, verify, Op};
use archc::interp::Value;
use archc::tensor_io::read_values;
use std::path::{Path, PathBuf};

const TOLERANCE: f64 = 1e-4;

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/hf")
        .join(name)
}

fn spec_of(dir: &Path) -> ArchSpec {
    let prog = Program::load(&dir.join("model.arch")).expect("model.arch");
    let (spec, diags) = prog.elaborate("tiny");
    spec.unwrap_or_else(|| panic!("{}: {diags:?}", dir.display()))
}

/// Runs one fixture; returns the relative error of each compared output.
fn run_fixture(dir: &Path, compare: &[&str]) -> Vec<(String, f64)> {
    let spec = spec_of(dir);
    let inputs = read_values(&dir.join("inputs.safetensors")).unwrap();
    let expected = read_values(&dir.join("outputs.safetensors")).unwrap();
    let outputs = evaluate(&spec, &dir.join("model.safetensors"), inputs, compare)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
    compare
        .iter()
        .map(|name| {
            let got = &outputs
                .iter()
                .find(|(n, _)| n == name)
                .unwrap_or_else(|| panic!("no output `{name}`"))
                .1;
            let want = match &expected[*name] {
                Value::F(t) => t,
                _ => panic!("`{name}` is not f32"),
            };
            assert_eq!(got.shape, want.shape, "{}: `{name}` shape", dir.display());
            (
                format!("{}:{name}", dir.file_name().unwrap().to_string_lossy()),
                got.rel_max_diff(want),
            )
        })
        .collect()
}

fn check(name: &str) {
    for (what, err) in run_fixture(&fixture(name), &["hidden", "logits"]) {
        eprintln!("{what}: relative error {err:e}");
        assert!(
            err <= TOLERANCE,
            "{what}: relative error {err:e} > {TOLERANCE:e}"
        );
    }
}

#[test]
fn mamba() {
    check("mamba");
}

#[test]
fn rwkv() {
    check("rwkv");
}

/// The forward graph prints, reads back equal, verifies, and holds one scan per recurrent
/// sublayer (two layers in each fixture).
fn check_round_trip(name: &str, scans: usize) {
    let spec = spec_of(&fixture(name));
    let g = forward(&spec, &ExpandOptions::default()).unwrap_or_else(|e| panic!("{name}: {e}"));
    verify(&g).unwrap_or_else(|e| panic!("{name}: {e}"));
    let text = print(&g);
    let back = read(&text).unwrap_or_else(|e| panic!("{name}: reading the printed graph: {e}"));
    assert_eq!(back, g, "{name}: printed graph reads back different");
    assert_eq!(print(&back), text);
    verify(&back).unwrap_or_else(|e| panic!("{name}: read-back graph: {e}"));
    let found = g
        .nodes
        .iter()
        .filter(|n| matches!(n.op, Op::Scan { .. }))
        .count();
    assert_eq!(found, scans, "{name}: scans in the forward graph");
}

#[test]
fn mamba_graph_round_trips() {
    check_round_trip("mamba", 2);
}

#[test]
fn rwkv_graph_round_trips() {
    check_round_trip("rwkv", 2);
}

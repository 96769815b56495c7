//! The reference evaluator against ttt-lm-pytorch's `ttt.py`: the tiny TTT-Linear and TTT-MLP
//! fixtures under `tests/fixtures/ttt_{linear,mlp}/` (made by `tools/make_fixtures_ttt_s4.py`)
//! are expanded from their `model.arch`, given ttt.py's weights renamed to canonical names,
//! run on their inputs, and must match the recorded `hidden` and `logits` to
//! max|out − ref| / max|ref| ≤ 1e-4.

mod common;
use arch_dsl::spec::ArchSpec;
use archc::eval::prepare_inputs;
use archc::expand::{forward, ExpandOptions};
use archc::graph::Op;
use archc::interp::{self, Value};
use archc::params::param_table;
use archc::passes::keep_outputs;
use archc::tensor::{F32Tensor, Tensor};
use archc::tensor_io::read_values;
use archc::weights::Weights;
use common::{canonical, fixture, spec_of};
use std::collections::{BTreeMap, HashMap};
use std::path::Path;

const TOLERANCE: f64 = 1e-4;

/// The fixture's weights under canonical names, reshaped where ttt.py keeps singleton axes.
fn weights(spec: &ArchSpec, dir: &Path) -> interp::Params {
    let shapes: HashMap<String, Vec<usize>> = param_table(spec)
        .into_iter()
        .map(|p| (p.name, p.shape))
        .collect();
    let mut tensors = BTreeMap::new();
    for (name, value) in read_values(&dir.join("model.safetensors")).unwrap() {
        let Value::F(t) = value else {
            panic!("`{name}` is not f32")
        };
        let ours = canonical(&name);
        let shape = shapes
            .get(&ours)
            .unwrap_or_else(|| panic!("`{name}` → `{ours}`, which the spec lacks"))
            .clone();
        assert_eq!(
            shape.iter().product::<usize>(),
            t.data.len(),
            "`{name}`: element count"
        );
        tensors.insert(
            ours,
            Tensor {
                shape,
                data: t.data,
            },
        );
    }
    let loaded =
        Weights::from_tensors(spec, tensors).unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
    assert!(
        loaded.unused().is_empty(),
        "unused tensors: {:?}",
        loaded.unused()
    );
    loaded.into_tensors().into_iter().collect()
}

/// Runs the forward graph for `outputs`.
fn evaluate(
    spec: &ArchSpec,
    params: &interp::Params,
    mut inputs: HashMap<String, Value>,
    outputs: &[&str],
) -> Result<HashMap<String, F32Tensor>, String> {
    prepare_inputs(spec, &mut inputs)?;
    let graph = keep_outputs(&forward(spec, &ExpandOptions::default())?, outputs)?;
    let results = interp::run(&graph, &inputs, params)?;
    results
        .into_iter()
        .map(|(n, v)| v.as_f32().map(|t| (n, t.clone())))
        .collect()
}

fn check(name: &str) {
    let dir = fixture(name);
    let spec = spec_of(&dir);
    let params = weights(&spec, &dir);
    let inputs = read_values(&dir.join("inputs.safetensors")).unwrap();
    let expected = read_values(&dir.join("outputs.safetensors")).unwrap();
    let got = evaluate(&spec, &params, inputs, &["hidden", "logits"])
        .unwrap_or_else(|e| panic!("{name}: {e}"));
    for output in ["hidden", "logits"] {
        let Value::F(want) = &expected[output] else {
            panic!("`{output}` is not f32")
        };
        let ours = &got[output];
        assert_eq!(ours.shape, want.shape, "{name}: `{output}` shape");
        let err = ours.rel_max_diff(want);
        eprintln!("{name}:{output}: relative error {err:.2e}");
        assert!(
            err <= TOLERANCE,
            "{name}:{output}: relative error {err:e} > {TOLERANCE:e}"
        );
    }
}

/// The CPU backend on the same fixture: compiled, run by the runtime on the weights
/// written under canonical names.
fn check_cpu(name: &str) {
    let dir = fixture(name);
    let spec = spec_of(&dir);
    let params = weights(&spec, &dir);
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("canonical.safetensors");
    let list: Vec<(String, F32Tensor)> = params.into_iter().collect();
    archc::tensor_io::write_f32(&path, &list).unwrap();
    let inputs = read_values(&dir.join("inputs.safetensors")).unwrap();
    let expected = read_values(&dir.join("outputs.safetensors")).unwrap();
    let got = archc::eval::evaluate_cpu(&spec, &path, inputs, &["hidden", "logits"], 2)
        .unwrap_or_else(|e| panic!("{name}: {e}"));
    for (output, ours) in &got {
        let Value::F(want) = &expected[output.as_str()] else {
            panic!("`{output}` is not f32")
        };
        let err = ours.rel_max_diff(want);
        eprintln!("{name}:{output} on cpu: relative error {err:.2e}");
        assert!(err <= TOLERANCE, "{name}:{output}: {err:e} > {TOLERANCE:e}");
    }
}

#[test]
fn cpu_backend_ttt_linear_matches_ttt_py() {
    check_cpu("ttt_linear");
}

#[test]
fn cpu_backend_ttt_mlp_matches_ttt_py() {
    check_cpu("ttt_mlp");
}

#[test]
fn ttt_linear_matches_ttt_py() {
    check("ttt_linear");
}

#[test]
fn ttt_mlp_matches_ttt_py() {
    check("ttt_mlp");
}

/// The mini-batch loop is one scan per TTT sublayer, carrying the inner weights.
#[test]
fn one_scan_per_ttt_sublayer() {
    for (name, states) in [("ttt_linear", 2), ("ttt_mlp", 4)] {
        let spec = spec_of(&fixture(name));
        let graph = forward(&spec, &ExpandOptions::default()).unwrap();
        let scans: Vec<usize> = graph
            .nodes
            .iter()
            .filter_map(|n| match &n.op {
                Op::Scan { states, .. } => Some(*states),
                _ => None,
            })
            .collect();
        assert_eq!(scans, vec![states; 2], "{name}");
    }
}

/// A length that is not a whole number of mini-batches is an error, not a wrong answer.
#[test]
fn partial_mini_batch_is_an_error() {
    let dir = fixture("ttt_linear");
    let spec = spec_of(&dir);
    let params = weights(&spec, &dir);
    let mut inputs = read_values(&dir.join("inputs.safetensors")).unwrap();
    let Some(Value::I(ids)) = inputs.get("input_ids") else {
        panic!("input_ids")
    };
    let (batch, len) = (ids.shape[0], ids.shape[1]);
    let short: Vec<i64> = ids
        .data
        .chunks(len)
        .flat_map(|row| row[..10].to_vec())
        .collect();
    inputs.insert(
        "input_ids".into(),
        Value::I(Tensor {
            shape: vec![batch, 10],
            data: short,
        }),
    );
    let err =
        evaluate(&spec, &params, inputs, &["hidden"]).expect_err("10 tokens in mini-batches of 4");
    assert!(
        err.contains("has 10 tokens") && err.contains("mini_batch = 4"),
        "{err}"
    );
}

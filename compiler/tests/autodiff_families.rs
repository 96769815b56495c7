//! Whole-model gradients of every family against central finite differences: each tiny
//! fixture (its real weights and inputs, padding mask included) is expanded, given the loss
//! `Σ_outputs Σ out ⊙ cotangent` over all its f32 outputs (heads included), differentiated
//! with respect to every parameter, and the directional derivative along a random
//! direction compared with `(L(θ + εu) − L(θ − εu)) / 2ε`. This covers every op and cell
//! the expansion emits (T5's bucketed bias, BART's cross-attention, ALBERT's shared layer,
//! RWKV's and Mamba's scans) without needing PyTorch gradients for each. ReLUs are swapped
//! for GELUs first: finite differences across ReLU kinks (T5's MLP, ReGLU) are off by
//! about 1%, which would hide real errors; ReLU's own rule is checked in `autodiff.rs`.

use arch_dsl::elab::Program;
use archc::autodiff::check::{directional, Rng};
use archc::autodiff::Wrt;
use archc::eval::prepare_inputs;
use archc::expand::{forward, ExpandOptions};
use archc::graph::{DType, Graph, NodeId, Op, ReduceOp, UnaryOp};
use archc::interp::{self, Value};
use archc::passes::keep_outputs;
use archc::tensor_io::read_values;
use archc::weights;
use std::collections::HashMap;
use std::path::Path;

/// Weights are ~0.02–1; steps this small keep the curvature error down while the f32
/// loss (≈ 1e-7 relative) still resolves the difference.
const STEP: f64 = 1e-3;
const TOLERANCE: f64 = 1e-2;

/// Appends `loss = Σ_o Σ out_o ⊙ cot_o` over the f32 outputs, with `cot:{name}` inputs.
fn all_outputs_loss(g: &mut Graph) -> Vec<(String, NodeId)> {
    let outputs: Vec<(String, NodeId)> = g
        .outputs
        .iter()
        .filter(|(_, id)| g.node(*id).dtype == DType::F32)
        .cloned()
        .collect();
    let mut total: Option<NodeId> = None;
    for (name, id) in &outputs {
        let shape = g.shape(*id).clone();
        let w = g.input(&format!("cot:{name}"), shape.clone(), DType::F32);
        let mut x = g.mul(*id, w);
        for axis in (0..shape.len()).rev() {
            x = g.reduce(ReduceOp::Sum, x, axis);
        }
        total = Some(match total {
            Some(t) => g.add(t, x),
            None => x,
        });
    }
    if let Some(t) = total {
        let loss = g.reshape(t, Vec::new());
        g.output("loss", loss);
    }
    outputs
}

fn check(dir: &Path, seed: u64) {
    let name = dir.file_name().unwrap().to_string_lossy().to_string();
    let prog = Program::load(&dir.join("model.arch")).expect("model.arch");
    let (spec, diags) = prog.elaborate("tiny");
    let spec = spec.unwrap_or_else(|| panic!("{name}: {diags:?}"));
    let mut inputs = read_values(&dir.join("inputs.safetensors")).unwrap();
    prepare_inputs(&spec, &mut inputs).unwrap();
    let opts = ExpandOptions {
        attention_mask: inputs.contains_key("attention_mask"),
        ..ExpandOptions::default()
    };
    let mut g = forward(&spec, &opts).unwrap_or_else(|e| panic!("{name}: {e}"));
    for node in &mut g.nodes {
        if node.op == Op::Unary(UnaryOp::Relu) {
            node.op = Op::Unary(UnaryOp::Gelu);
        }
    }
    let loaded = weights::load_with(
        &spec,
        &dir.join("model.safetensors"),
        &weights::LoadOptions {
            require_heads: false,
        },
    );
    let params: interp::Params = loaded
        .unwrap_or_else(|e| panic!("{name}: {e}"))
        .into_tensors()
        .into_iter()
        .collect();
    // Outputs whose head the checkpoint lacks (a bare `BertModel`) are dropped.
    let complete: Vec<String> = g
        .outputs
        .iter()
        .map(|(n, _)| n.clone())
        .filter(|n| {
            let one = keep_outputs(&g, &[n]).unwrap();
            one.nodes.iter().all(|node| match &node.op {
                Op::Param { name } => params.contains_key(name),
                _ => true,
            })
        })
        .collect();
    let kept: Vec<&str> = complete.iter().map(String::as_str).collect();
    let mut g = keep_outputs(&g, &kept).unwrap();
    let fed: HashMap<String, Value> = g
        .inputs
        .iter()
        .filter_map(|&id| match &g.node(id).op {
            Op::Input { name } => inputs.get(name).map(|v| (name.clone(), v.clone())),
            _ => None,
        })
        .collect();

    // Random cotangents shaped like the outputs.
    let shapes: HashMap<String, Vec<usize>> = interp::run(&g, &fed, &params)
        .unwrap()
        .into_iter()
        .map(|(n, v)| (n, v.shape().to_vec()))
        .collect();
    let outputs = all_outputs_loss(&mut g);
    let mut rng = Rng::new(seed);
    let mut fed = fed;
    for (out, _) in &outputs {
        fed.insert(format!("cot:{out}"), Value::F(rng.tensor(&shapes[out])));
    }
    let g = g.finish().unwrap();
    let step = std::env::var("FD_STEP")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(STEP);
    let d = directional(&g, "loss", &Wrt::Params, &fed, &params, step, seed)
        .unwrap_or_else(|e| panic!("{name}: {e}"));
    let err = d.rel_err(1e-3);
    eprintln!("{name}: {err:.2e} ({} vs {})", d.analytic, d.numeric);
    assert!(
        err <= TOLERANCE,
        "{name}: analytic {} vs numeric {} (relative error {err:.2e})",
        d.analytic,
        d.numeric
    );
}

fn fixture(name: &str) -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/hf")
        .join(name)
}

#[test]
fn encoders() {
    for (i, name) in ["bert", "bert_model", "roberta", "albert", "electra"]
        .iter()
        .enumerate()
    {
        check(&fixture(name), 200 + i as u64);
    }
}

#[test]
fn decoders() {
    for (i, name) in ["gpt2", "openai_gpt", "llama"].iter().enumerate() {
        check(&fixture(name), 300 + i as u64);
    }
}

#[test]
fn encoder_decoders() {
    for (i, name) in ["t5", "bart"].iter().enumerate() {
        check(&fixture(name), 400 + i as u64);
    }
}

#[test]
fn recurrent() {
    for (i, name) in ["rwkv", "mamba"].iter().enumerate() {
        check(&fixture(name), 500 + i as u64);
    }
}

#[test]
fn option_fixtures() {
    // The option fixtures the evaluator matches (see `interp_options.rs`).
    let names = [
        "sinusoidal_geglu",
        "alibi_mqa_reglu",
        "rope_interleaved_partial",
        "rope_half_partial_sliding",
        "hetero_stack",
        "encoder_post_sinusoidal",
        "encoder_alibi",
    ];
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/options");
    for (i, name) in names.iter().enumerate() {
        check(&root.join(name), 600 + i as u64);
    }
}

//! The compiled backward pass against the reference evaluator: each model's next-token loss
//! differentiated with respect to every parameter, built into a package by the CPU backend
//! and run by the runtime, must give the evaluator's gradients (max|Δ| / max|ref| ≤ 1e-4;
//! a gradient that is zero in exact arithmetic — the key bias, which softmax ignores — is
//! measured against the model's largest). Covers every scan cell's reverse scan (Mamba,
//! RWKV-4, S4D, TTT) and attention's backward (GPT-2, LLaMA with GQA). The same graphs
//! also run as cuda packages on the host simulator (the thread programs of every kernel
//! kind, the flash-style attention backward's four parts included).

mod common;

use arch_dsl::spec::ArchSpec;
use archc::autodiff::check::Rng;
use archc::autodiff::{add_lm_loss, grad, Wrt};
use archc::eval::{run_package_with, WeightSource};
use archc::expand::{forward, ExpandOptions, BATCH, SEQ};
use archc::graph::{DType, Dim};
use archc::interp::{self, Value};
use archc::tensor::Tensor;
use common::{fixture, random_params, spec_of, TINY_S4, TINY_TTT};
use std::collections::HashMap;

const TOLERANCE: f64 = 1e-4;

/// Builds `g` into a package — for the CPU, or as a cuda package run on the host
/// simulator — and runs it on `inputs`.
fn run_graph(
    g: &archc::graph::Graph,
    params: &interp::Params,
    inputs: HashMap<String, Value>,
    cuda: bool,
) -> Vec<(String, Tensor<f32>)> {
    let dir = tempfile::tempdir().unwrap();
    let mut opts = archc::package::BuildOptions::host().unwrap();
    if cuda {
        opts.cuda = Some(80);
        opts.sim = true;
    }
    archc::package::build_graph(g, "grad", &opts, dir.path()).unwrap();
    let weights = WeightSource::Tensors(params);
    if cuda {
        archc::eval::run_cuda_package(dir.path(), &weights, inputs, archc::eval::CudaRun::Sim)
            .unwrap()
    } else {
        run_package_with(dir.path(), &weights, inputs, 2).unwrap()
    }
}

fn spec_from(src: &str, model: &str) -> ArchSpec {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("model.arch");
    std::fs::write(&path, src).unwrap();
    let prog = arch_dsl::elab::Program::load(&path).unwrap();
    prog.elaborate(model).0.expect("the spec elaborates")
}

/// `cuda`: also as a cuda package on the host simulator.
fn check(spec: &ArchSpec, params: &interp::Params, ids: Value, what: &str, cuda: bool) {
    let mut g = forward(
        spec,
        &ExpandOptions {
            attention_mask: false,
            recurrent_ssm: true,
        },
    )
    .unwrap();
    let logits = g.outputs.iter().find(|(n, _)| n == "logits").unwrap().1;
    let labels = g.input("labels", vec![Dim::sym(BATCH), Dim::sym(SEQ)], DType::I64);
    add_lm_loss(&mut g, logits, labels);
    let g = grad(&g.finish().unwrap(), "loss", Wrt::Params).unwrap();
    let g = archc::passes::simplify(&g);
    let inputs: HashMap<String, Value> = [
        ("input_ids".to_string(), ids.clone()),
        ("labels".to_string(), ids),
    ]
    .into();
    let want: HashMap<String, Value> = interp::run(&g, &inputs, params)
        .unwrap()
        .into_iter()
        .collect();
    for cuda in [false, true].into_iter().filter(|&c| !c || cuda) {
        let what = format!("{what}{}", if cuda { " (cuda sim)" } else { "" });
        let got = run_graph(&g, params, inputs.clone(), cuda);
        let largest = got
            .iter()
            .filter(|(n, _)| n.starts_with("grad:"))
            .map(|(n, _)| archc::tensor::max_abs(&want[n].as_f32().unwrap().data))
            .fold(0.0f64, f64::max);
        assert!(largest > 0.0, "{what}: the gradients are not all zero");
        let mut checked = 0;
        for (name, t) in &got {
            let w = want[name].as_f32().unwrap();
            let max_ref = archc::tensor::max_abs(&w.data);
            let err = if name.starts_with("grad:") && max_ref < 1e-6 * largest {
                archc::tensor::max_abs_diff(&t.data, &w.data) / largest
            } else {
                t.rel_max_diff(w)
            };
            assert!(err <= TOLERANCE, "{what} {name}: {err:e}");
            checked += 1;
        }
        eprintln!("{what}: {checked} outputs match");
        assert!(checked > 5);
    }
}

fn hf(name: &str) {
    let dir = fixture(&format!("hf/{name}"));
    let spec = spec_of(&dir);
    let params: interp::Params = archc::weights::load(&spec, &dir.join("model.safetensors"))
        .unwrap()
        .into_tensors()
        .into_iter()
        .collect();
    let ids = archc::tensor_io::read_values(&dir.join("inputs.safetensors")).unwrap()["input_ids"]
        .clone();
    check(&spec, &params, ids, name, true);
}

fn tiny(src: &str, model: &str, seq: usize, cuda: bool) {
    let spec = spec_from(src, model);
    let mut rng = Rng::new(5);
    let params = random_params(&mut rng, &spec, (1e-2, 0.5));
    let ids = Value::I(Tensor {
        shape: vec![2, seq],
        data: (0..2 * seq)
            .map(|_| (rng.next_u64() % spec.vocab) as i64)
            .collect(),
    });
    check(&spec, &params, ids, model, cuda);
}

#[test]
fn gpt2() {
    hf("gpt2");
}

#[test]
fn llama() {
    hf("llama");
}

#[test]
fn mamba() {
    hf("mamba");
}

#[test]
fn rwkv() {
    hf("rwkv");
}

#[test]
fn s4d() {
    tiny(TINY_S4, "tiny", 7, true);
    tiny(TINY_S4, "tiny_zoh", 7, false);
}

#[test]
fn ttt() {
    // The simulator (one OS thread per GPU thread) runs the linear inner model: the MLP
    // one adds no kernel kind.
    tiny(TINY_TTT, "tiny_linear", 6, true);
    tiny(TINY_TTT, "tiny_mlp", 6, false);
}

/// One attention's backward in the flash style, compiled, against the evaluator: q, k, v
/// as parameters, a bias and a key mask as inputs (no gradient, so the flash parts serve),
/// loss Σ y ⊙ w. Covers causal with fewer queries than keys (queries sit at the end),
/// grouped-query heads, a query that sees no key, the sliding window over MQA, and
/// bidirectional attention; and checks that no queries × keys tensor is left in the graph.
fn attention_backward(
    seed: u64,
    (b, h, hkv, t, s, d, dv): (usize, usize, usize, usize, usize, usize, usize),
    mask: archc::graph::MaskKind,
    bias: bool,
    key_mask: Option<Vec<f32>>,
    transposed_q: bool,
) {
    use archc::graph::{AttnPart, Graph, Op, ReduceOp};
    let c = |n: usize| Dim::c(n as u64);
    let mut g = Graph::new("attn");
    // A q stored [b, h, d, t] and read transposed: no unit stride along d, so the kernels
    // take their row-at-a-time path instead of the blocked sgemm one.
    let q = if transposed_q {
        let stored = g.param("q", vec![c(b), c(h), c(d), c(t)]);
        g.permute(stored, &[0, 1, 3, 2])
    } else {
        g.param("q", vec![c(b), c(h), c(t), c(d)])
    };
    let k = g.param("k", vec![c(b), c(hkv), c(s), c(d)]);
    let v = g.param("v", vec![c(b), c(hkv), c(s), c(dv)]);
    let mut ins = vec![q, k, v];
    let mut inputs: HashMap<String, Value> = HashMap::new();
    let mut rng = Rng::new(seed);
    let mut tensor = |shape: Vec<usize>| rng.tensor(&shape);
    if bias {
        ins.push(g.input("bias", vec![c(1), c(h), c(t), c(s)], DType::F32));
        inputs.insert("bias".into(), Value::F(tensor(vec![1, h, t, s])));
    }
    if let Some(m) = &key_mask {
        ins.push(g.input("key_mask", vec![c(b), c(s)], DType::F32));
        inputs.insert(
            "key_mask".into(),
            Value::F(Tensor::new(vec![b, s], m.clone()).unwrap()),
        );
    }
    let op = Op::Attention {
        mask,
        scale: 0.37,
        has_bias: bias,
        has_key_mask: key_mask.is_some(),
        ring: None,
    };
    let y = g.push(op, ins, None, DType::F32);
    let w = g.input("w", vec![c(b), c(h), c(t), c(dv)], DType::F32);
    inputs.insert("w".into(), Value::F(tensor(vec![b, h, t, dv])));
    let mut l = g.mul(y, w);
    for axis in (0..4).rev() {
        l = g.reduce(ReduceOp::Sum, l, axis);
    }
    let l = g.reshape(l, vec![]);
    g.output("loss", l);
    let g = grad(&g.finish().unwrap(), "loss", Wrt::Params).unwrap();
    let g = archc::passes::simplify(&g);
    let parts: Vec<AttnPart> = g
        .nodes
        .iter()
        .filter_map(|n| match n.op {
            Op::AttentionGrad { part, .. } => Some(part),
            _ => None,
        })
        .collect();
    assert_eq!(parts.len(), 4, "lse, dQ, dK, dV: {parts:?}");
    for n in &g.nodes {
        let sh = &n.shape;
        let is_bias = matches!(&n.op, Op::Input { name } if name == "bias");
        assert!(
            is_bias || sh.len() < 2 || sh[sh.len() - 2..] != [c(t), c(s)],
            "a {t}×{s} tensor in the backward graph: {:?}",
            n.op
        );
    }
    let q_shape = if transposed_q {
        vec![b, h, d, t]
    } else {
        vec![b, h, t, d]
    };
    let params: interp::Params = [
        ("q".to_string(), tensor(q_shape)),
        ("k".to_string(), tensor(vec![b, hkv, s, d])),
        ("v".to_string(), tensor(vec![b, hkv, s, dv])),
    ]
    .into();
    let want: HashMap<String, Value> = interp::run(&g, &inputs, &params)
        .unwrap()
        .into_iter()
        .collect();
    // The transposed q and the runs past 64 queries exercise the CPU's paths (row at a
    // time instead of the packed sgemm; several GRAD_BLOCKs); the GPU's thread programs
    // read any stride and any length the same way.
    for cuda in [false, true]
        .into_iter()
        .filter(|&c| !c || (!transposed_q && t <= 64))
    {
        let got = run_graph(&g, &params, inputs.clone(), cuda);
        for (name, t) in &got {
            let w = want[name].as_f32().unwrap();
            let err = t.rel_max_diff(w);
            eprintln!("{mask:?} {name} (cuda sim: {cuda}): {err:.1e}");
            assert!(
                err <= TOLERANCE,
                "{mask:?} {name} (cuda sim: {cuda}): {err:e}"
            );
            assert!(
                archc::tensor::max_abs(&w.data) > 0.0,
                "{name} is not all zero"
            );
        }
        assert_eq!(got.len(), 4, "loss and three gradients");
    }
}

#[test]
fn attention_backward_flash_style() {
    use archc::graph::MaskKind;
    // Batch 0 hides keys 0–2: its first query (position 2) sees nothing.
    for transposed in [false, true] {
        let mut km = vec![1.0; 14];
        km[..3].iter_mut().for_each(|m| *m = 0.0);
        km[7 + 4] = 0.0;
        let shape = (2, 4, 2, 5, 7, 8, 6);
        attention_backward(1, shape, MaskKind::Causal, true, Some(km), transposed);
        let shape = (2, 3, 1, 9, 9, 5, 5);
        attention_backward(2, shape, MaskKind::Sliding(3), false, None, transposed);
        let km = vec![1., 1., 0., 1., 1., 1., 1., 1., 1., 1., 1., 1., 1., 0.];
        let shape = (2, 2, 2, 4, 7, 16, 16);
        attention_backward(
            3,
            shape,
            MaskKind::Bidirectional,
            false,
            Some(km),
            transposed,
        );
    }
    // Several blocks of queries and keys (GRAD_BLOCK = 64): 150 queries over 170 keys.
    attention_backward(
        4,
        (1, 2, 1, 150, 170, 8, 4),
        MaskKind::Causal,
        false,
        None,
        false,
    );
    attention_backward(
        5,
        (1, 2, 2, 130, 130, 4, 4),
        MaskKind::Sliding(40),
        false,
        None,
        false,
    );
}

//! The structured ops' derivatives against central finite differences: attention (causal,
//! sliding and bidirectional masks, grouped-query heads, additive bias, key mask with a
//! fully masked row, symbolic sequence lengths) and scan (a linear recurrence forwards and
//! backwards (the flash-style backward where the bias takes no gradient), parameters read inside the body and tied with uses outside, a nested scan);
//! plus the causal-LM loss and tied parameters.

use archc::autodiff::check::Case;
use archc::autodiff::{add_lm_loss, grad, vjp, Wrt};
use archc::graph::{DType, Dim, Graph, MaskKind, NodeId, Op, UnaryOp};
use archc::interp::{self, Value};
use archc::tensor::Tensor;

const STEP: f64 = 1e-2;
const TOLERANCE: f64 = 1e-2;

fn c(n: u64) -> Dim {
    Dim::c(n)
}

fn check(case: Case, out: NodeId, wrt_params: bool, what: &str) {
    let checks = case
        .check(out, wrt_params, STEP)
        .unwrap_or_else(|e| panic!("{what}: {e}"));
    for (var, d) in checks {
        let err = d.rel_err(1e-2);
        eprintln!(
            "{what}, d/d{var}: {err:.2e} ({} vs {})",
            d.analytic, d.numeric
        );
        assert!(
            err <= TOLERANCE,
            "{what}, d/d{var}: analytic {} vs numeric {} (relative error {err:.2e})",
            d.analytic,
            d.numeric
        );
    }
}

struct Attn {
    q: (Vec<Dim>, [usize; 4]),
    kv: (Vec<Dim>, [usize; 4]),
    dv: usize,
    mask: MaskKind,
    bias: Option<Vec<usize>>,
    key_mask: Option<Vec<f32>>,
}

fn attention_case(seed: u64, a: Attn, what: &str) {
    let mut case = Case::new(seed);
    let q = case.input_sym("q", a.q.0.clone(), &a.q.1);
    let k = case.input_sym("k", a.kv.0.clone(), &a.kv.1);
    let mut vs = a.kv.0.clone();
    vs[3] = c(a.dv as u64);
    let v = case.input_sym("v", vs, &[a.kv.1[0], a.kv.1[1], a.kv.1[2], a.dv]);
    let mut inputs = vec![q, k, v];
    if let Some(shape) = &a.bias {
        inputs.push(case.input("bias", shape));
    }
    if let Some(m) = &a.key_mask {
        let (b, s) = (a.kv.1[0], a.kv.1[2]);
        let t = Tensor {
            shape: vec![b, s],
            data: m.clone(),
        };
        inputs.push(case.fixed_sym("key_mask", vec![a.kv.0[0].clone(), a.kv.0[2].clone()], t));
    }
    let op = Op::Attention {
        mask: a.mask,
        scale: 0.7,
        has_bias: a.bias.is_some(),
        has_key_mask: a.key_mask.is_some(),
        ring: None,
    };
    let y = case.g.push(op, inputs, None, DType::F32);
    check(case, y, false, what);
}

#[test]
fn attention_causal_gqa_bias_and_key_mask() {
    // Batch 0 hides keys 0–2, so query 0 (at position 2) sees nothing: its output is 0.
    let mut km = vec![1.0; 14];
    km[..3].iter_mut().for_each(|m| *m = 0.0);
    km[7 + 4] = 0.0;
    let a = Attn {
        q: (vec![c(2), c(4), c(5), c(3)], [2, 4, 5, 3]),
        kv: (vec![c(2), c(2), c(7), c(3)], [2, 2, 7, 3]),
        dv: 5,
        mask: MaskKind::Causal,
        bias: Some(vec![1, 4, 5, 7]),
        key_mask: Some(km),
    };
    attention_case(1, a, "causal GQA with bias and key mask");
}

/// The flash-style backward (a bias that takes no gradient, as ALiBi's or a fixed mask's):
/// causal GQA with fewer queries than keys and a query that sees no key.
#[test]
fn attention_flash_backward_with_fixed_bias() {
    let mut case = Case::new(6);
    let q = case.input("q", &[2, 4, 5, 3]);
    let k = case.input("k", &[2, 2, 7, 3]);
    let v = case.input("v", &[2, 2, 7, 4]);
    let mut bias = archc::autodiff::check::Rng::new(9).tensor(&[1, 4, 5, 7]);
    bias.data.iter_mut().for_each(|x| *x *= 2.0);
    let bias = case.fixed("bias", bias);
    let mut km = vec![1.0f32; 14];
    km[..3].iter_mut().for_each(|m| *m = 0.0);
    km[7 + 4] = 0.0;
    let km = case.fixed(
        "key_mask",
        Tensor {
            shape: vec![2, 7],
            data: km,
        },
    );
    let op = Op::Attention {
        mask: MaskKind::Causal,
        scale: 0.7,
        has_bias: true,
        has_key_mask: true,
        ring: None,
    };
    let y = case.g.push(op, vec![q, k, v, bias, km], None, DType::F32);
    check(case, y, false, "flash backward, fixed bias");
}

#[test]
fn attention_sliding_window() {
    let a = Attn {
        q: (vec![c(1), c(3), c(7), c(3)], [1, 3, 7, 3]),
        kv: (vec![c(1), c(3), c(7), c(3)], [1, 3, 7, 3]),
        dv: 3,
        mask: MaskKind::Sliding(3),
        bias: None,
        key_mask: None,
    };
    attention_case(2, a, "sliding window 3");
}

#[test]
fn attention_bidirectional_mqa_with_broadcast_bias() {
    let a = Attn {
        q: (vec![c(3), c(3), c(5), c(3)], [3, 3, 5, 3]),
        kv: (vec![c(3), c(1), c(7), c(3)], [3, 1, 7, 3]),
        dv: 2,
        mask: MaskKind::Bidirectional,
        bias: Some(vec![5, 7]),
        key_mask: Some(vec![
            1., 1., 0., 1., 1., 1., 1., 1., 1., 1., 1., 1., 1., 0., 1., 0., 1., 1., 1., 1., 1.,
        ]),
    };
    attention_case(3, a, "bidirectional MQA, broadcast bias");
}

#[test]
fn attention_with_symbolic_lengths() {
    let (b, t, s) = (Dim::sym("batch"), Dim::sym("seq"), Dim::sym("kv_seq"));
    let a = Attn {
        q: (vec![b.clone(), c(4), t.clone(), c(3)], [2, 4, 5, 3]),
        kv: (vec![b.clone(), c(2), t.clone(), c(3)], [2, 2, 5, 3]),
        dv: 3,
        mask: MaskKind::Causal,
        bias: None,
        key_mask: None,
    };
    attention_case(4, a, "causal over a symbolic seq");
    let a = Attn {
        q: (vec![b.clone(), c(2), t, c(3)], [2, 2, 3, 3]),
        kv: (vec![b, c(1), s, c(3)], [2, 1, 7, 3]),
        dv: 3,
        mask: MaskKind::Sliding(4),
        bias: None,
        key_mask: None,
    };
    attention_case(5, a, "sliding with symbolic q and kv lengths");
}

/// h' = a ⊙ h + x_t, y_t = h'²; the loss reads every y_t and the final h.
fn linear_recurrence(seed: u64, reverse: bool) {
    let mut case = Case::new(seed);
    let h0 = case.input("h0", &[2, 3]);
    let xs = case.input("x", &[2, 5, 3]);
    let a = case.input("a", &[3]);
    let mut body = Graph::new("step");
    let h = body.input("h", vec![c(2), c(3)], DType::F32);
    let x = body.input("x", vec![c(2), c(3)], DType::F32);
    let ab = body.input("a", vec![c(3)], DType::F32);
    let ah = body.mul(ab, h);
    let h2 = body.add(ah, x);
    let y = body.unary(UnaryOp::Square, h2);
    body.output("h", h2);
    body.output("y", y);
    let outs = case.g.scan(body, vec![h0], vec![xs], vec![a], reverse);
    let last = case.g.reshape(outs[0], vec![c(2), c(1), c(3)]);
    let out = case.g.add(outs[1], last);
    check(
        case,
        out,
        false,
        &format!("linear recurrence (reverse = {reverse})"),
    );
}

#[test]
fn scan_linear_recurrence() {
    linear_recurrence(10, false);
    linear_recurrence(11, true);
}

/// h' = tanh(h·W + x_t), y_t = h' ⊙ v, with W also used after the scan.
#[test]
fn scan_reads_parameters() {
    let mut case = Case::new(12);
    let h0 = case.input("h0", &[2, 3]);
    let xs = case.input("x", &[2, 5, 3]);
    case.param("w", &[3, 3], 0.8);
    case.param("v", &[3], 1.0);
    let mut body = Graph::new("step");
    let h = body.input("h", vec![c(2), c(3)], DType::F32);
    let x = body.input("x", vec![c(2), c(3)], DType::F32);
    let w = body.param("w", vec![c(3), c(3)]);
    let v = body.param("v", vec![c(3)]);
    let hw = body.matmul(h, w, false);
    let pre = body.add(hw, x);
    let h2 = body.unary(UnaryOp::Tanh, pre);
    let y = body.mul(h2, v);
    body.output("h", h2);
    body.output("y", y);
    let outs = case.g.scan(body, vec![h0], vec![xs], vec![], false);
    let w_out = case.g.param("w", vec![c(3), c(3)]);
    let last = case.g.matmul(outs[0], w_out, false);
    let last = case.g.reshape(last, vec![c(2), c(1), c(3)]);
    let out = case.g.add(outs[1], last);
    check(case, out, true, "scan reading parameters, tied outside");
}

/// An outer recurrence whose step runs an inner scan over a second sequence.
#[test]
fn nested_scan() {
    let mut case = Case::new(13);
    let h0 = case.input("h0", &[2, 3]);
    let xs = case.input("x", &[2, 3, 3]);
    let zs = case.input("z", &[2, 4, 3]);
    let mut inner = Graph::new("inner");
    let s = inner.input("s", vec![c(2), c(3)], DType::F32);
    let z = inner.input("z", vec![c(2), c(3)], DType::F32);
    let hc = inner.input("h", vec![c(2), c(3)], DType::F32);
    let sh = inner.mul(s, hc);
    let pre = inner.add(sh, z);
    let s2 = inner.unary(UnaryOp::Tanh, pre);
    inner.output("s", s2);
    let mut outer = Graph::new("outer");
    let h = outer.input("h", vec![c(2), c(3)], DType::F32);
    let x = outer.input("x", vec![c(2), c(3)], DType::F32);
    let zc = outer.input("z", vec![c(2), c(4), c(3)], DType::F32);
    let ran = outer.scan(inner, vec![h], vec![zc], vec![h], false);
    let h2 = outer.add(ran[0], x);
    let y = outer.unary(UnaryOp::Sin, h2);
    outer.output("h", h2);
    outer.output("y", y);
    let outs = case.g.scan(outer, vec![h0], vec![xs], vec![zs], false);
    check(case, outs[1], false, "nested scan");
}

#[test]
fn tied_parameters_sum() {
    let mut case = Case::new(14);
    let x = case.input("x", &[3, 5]);
    let w = case.param("w", &[5, 5], 1.0);
    let w2 = case.g.param("w", vec![c(5), c(5)]);
    let h = case.g.matmul(x, w, false);
    let h = case.g.unary(UnaryOp::Tanh, h);
    let y = case.g.matmul(h, w2, true);
    check(case, y, true, "one parameter used twice, under two nodes");
}

#[test]
fn lm_loss_value_and_gradient() {
    let (b, t, v) = (2, 5, 7);
    let mut case = Case::new(15);
    let mut logits = case.rng.tensor(&[b, t, v]);
    logits.data.iter_mut().for_each(|x| *x *= 3.0);
    let li = case.input_value("logits", logits.clone());
    let labels = case.ids("labels", &[b, t], v);
    if let Some(Value::I(l)) = case.inputs.get_mut("labels") {
        l.data[3] = -100;
    }
    let ids = match &case.inputs["labels"] {
        Value::I(l) => l.data.clone(),
        _ => unreachable!(),
    };
    let loss = add_lm_loss(&mut case.g, li, labels);
    // The value, against a direct computation.
    let g = case.g.clone().finish().unwrap();
    let got = interp::run(&g, &case.inputs, &case.params).unwrap();
    let got = got
        .iter()
        .find(|(n, _)| n == "loss")
        .unwrap()
        .1
        .as_f32()
        .unwrap()
        .data[0] as f64;
    let (mut total, mut count) = (0.0, 0.0);
    for bi in 0..b {
        for ti in 0..t - 1 {
            let label = ids[bi * t + ti + 1];
            if label == -100 {
                continue;
            }
            let row: Vec<f64> = (0..v)
                .map(|k| logits.data[(bi * t + ti) * v + k] as f64)
                .collect();
            let lse = row.iter().map(|x| x.exp()).sum::<f64>().ln();
            total += lse - row[label as usize];
            count += 1.0;
        }
    }
    assert!(
        (got - total / count).abs() < 1e-5,
        "loss {got} vs {}",
        total / count
    );
    // The gradient, by finite differences.
    case.g.outputs.retain(|(n, _)| n != "loss");
    check(case, loss, false, "causal LM loss");
}

#[test]
fn grad_rejects_what_it_cannot_do() {
    let mut g = Graph::new("g");
    let x = g.input("x", vec![c(3)], DType::F32);
    let ids = g.input("ids", vec![c(3)], DType::I64);
    let y = g.unary(UnaryOp::Exp, x);
    g.output("y", y);
    let err = grad(&g, "y", Wrt::Params).unwrap_err();
    assert!(err.contains("must be an f32 scalar"), "{err}");
    let err = grad(&g, "nope", Wrt::Params).unwrap_err();
    assert!(err.contains("no output `nope`"), "{err}");
    let s = g.reduce(archc::graph::ReduceOp::Sum, y, 0);
    g.output("s", s);
    let err = grad(&g, "s", Wrt::Inputs(vec!["ids".into()])).unwrap_err();
    assert!(err.contains("not f32"), "{err}");
    let _ = ids;
}

/// A TTT-style step: the state W takes one gradient step on 0.5‖x W − y‖², the gradient
/// built into the body by `vjp`; the outer loss is differentiated through that gradient
/// (second order).
#[test]
fn gradient_step_inside_a_scan() {
    let mut case = Case::new(16);
    let w0 = case.input("w0", &[3, 3]);
    let xs = case.input("x", &[2, 5, 3]);
    let ys = case.input("y", &[2, 5, 3]);
    let mut body = Graph::new("inner_step");
    let w = body.input("w", vec![c(3), c(3)], DType::F32);
    let x = body.input("x", vec![c(2), c(3)], DType::F32);
    let y = body.input("y", vec![c(2), c(3)], DType::F32);
    let pred = body.matmul(x, w, false);
    let err = body.sub(pred, y);
    let sq = body.unary(UnaryOp::Square, err);
    let l = body.reduce(archc::graph::ReduceOp::Sum, sq, 1);
    let l = body.reduce(archc::graph::ReduceOp::Sum, l, 0);
    let l = body.reshape(l, vec![]);
    let half = body.constant(0.5);
    let dw = vjp(&mut body, &[(l, half)], &[w]).unwrap()[0];
    let step = body.scale(dw, 0.1);
    let w2 = body.sub(w, step);
    let z = body.matmul(x, w2, false);
    let z = body.unary(UnaryOp::Tanh, z);
    body.output("w", w2);
    body.output("z", z);
    let outs = case.g.scan(body, vec![w0], vec![xs, ys], vec![], false);
    let last = case.g.reshape(outs[0], vec![c(1), c(3), c(3)]);
    let last = case.g.broadcast(last, vec![c(2), c(3), c(3)]);
    let zs = case.g.concat(vec![outs[1], last], 1);
    check(case, zs, false, "gradient step inside a scan");
}

#[test]
fn gradient_graphs_print_and_read_back() {
    let mut g = Graph::new("g");
    let x = g.input("x", vec![Dim::sym("batch"), c(5)], DType::F32);
    let w = g.param("w", vec![c(5), c(5)]);
    let mut body = Graph::new("step");
    let h = body.input("h", vec![Dim::sym("batch"), c(5)], DType::F32);
    let xt = body.input("x", vec![Dim::sym("batch"), c(5)], DType::F32);
    let wb = body.param("w", vec![c(5), c(5)]);
    let hw = body.matmul(h, wb, false);
    let pre = body.add(hw, xt);
    let h2 = body.unary(UnaryOp::Tanh, pre);
    body.output("h", h2);
    body.output("y", h2);
    let xs = g.reshape(x, vec![Dim::sym("batch"), c(1), c(5)]);
    let outs = g.scan(body, vec![x], vec![xs], vec![], false);
    let y = g.matmul(outs[0], w, true);
    let s = g.reduce(archc::graph::ReduceOp::Sum, y, 1);
    let s = g.reduce(archc::graph::ReduceOp::Sum, s, 0);
    let s = g.reshape(s, vec![]);
    g.output("loss", s);
    let gg = grad(&g, "loss", Wrt::Params).unwrap();
    let text = archc::graph::print(&gg);
    assert_eq!(archc::graph::read(&text).unwrap(), gg);
}

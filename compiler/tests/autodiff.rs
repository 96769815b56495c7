//! Every primitive op's derivative rule against central finite differences: a tiny graph
//! around the op (odd shapes 3, 5, 7, broadcasting, symbolic dimensions), the loss
//! `Σ out ⊙ cotangent` for a random cotangent, and the directional derivative of the
//! gradient graph along a random direction against `(L(x + εu) − L(x − εu)) / 2ε`.
//! Non-smooth ops get inputs kept away from their kinks.

use archc::autodiff::check::Case;
use archc::graph::op::{BINARY_OPS, UNARY_OPS};
use archc::graph::{BinaryOp, DType, Dim, NodeId, ReduceOp, UnaryOp};

const STEP: f64 = 1e-2;
const TOLERANCE: f64 = 1e-2;

fn c(n: u64) -> Dim {
    Dim::c(n)
}

/// Checks the gradient with respect to the case's inputs; panics with the numbers.
fn check(case: Case, out: NodeId, what: &str) {
    let checks = case
        .check(out, false, STEP)
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

#[test]
fn unary_ops() {
    for (i, &(op, name)) in UNARY_OPS.iter().enumerate() {
        if op == UnaryOp::StopGradient {
            continue; // its gradient is zero by definition: `stop_gradient_is_detach`
        }
        let mut case = Case::new(100 + i as u64);
        let mut x = case.rng.tensor(&[3, 5]);
        for v in &mut x.data {
            *v = match op {
                // Positive domains.
                UnaryOp::Log | UnaryOp::Sqrt | UnaryOp::Rsqrt | UnaryOp::Recip => 0.5 + v.abs(),
                // Away from the kink at 0.
                UnaryOp::Relu | UnaryOp::Abs => v.signum() * (0.1 + v.abs()),
                // Away from the integers (the gradient is 0).
                UnaryOp::Floor => (*v * 3.0).round() + 0.5 + 0.3 * *v,
                _ => 2.0 * *v,
            };
        }
        let xi = case.input_value("x", x);
        let y = case.g.unary(op, xi);
        check(case, y, &format!("unary {name}"));
    }
}

/// `stop_gradient` passes values through and no gradient: d/dx of x·sg(x) is sg(x) = x.
#[test]
fn stop_gradient_is_detach() {
    use archc::autodiff::{grad, Wrt};
    use archc::graph::{DType, Graph};
    use archc::interp::{run, Value};
    let mut g = Graph::new("sg");
    let x = g.input("x", vec![c(4)], DType::F32);
    let s = g.unary(UnaryOp::StopGradient, x);
    let y = g.mul(x, s);
    let sum = g.reduce(archc::graph::ReduceOp::Sum, y, 0);
    let loss = g.reshape(sum, vec![]);
    g.output("loss", loss);
    let g = grad(&g.finish().unwrap(), "loss", Wrt::Inputs(vec!["x".into()])).unwrap();
    let xs = vec![1.0f32, -2.0, 3.5, 0.25];
    let inputs = std::collections::HashMap::from([(
        "x".to_string(),
        Value::F(archc::tensor::Tensor {
            shape: vec![4],
            data: xs.clone(),
        }),
    )]);
    let out: std::collections::HashMap<String, Value> = run(&g, &inputs, &Default::default())
        .unwrap()
        .into_iter()
        .collect();
    let loss = out["loss"].as_f32().unwrap().data[0];
    assert_eq!(loss, xs.iter().map(|v| v * v).sum::<f32>());
    // Without the stop, the gradient would be 2x.
    assert_eq!(out["grad:x"].as_f32().unwrap().data, xs);
}

#[test]
fn softplus_above_threshold() {
    let mut case = Case::new(7);
    let mut x = case.rng.tensor(&[5]);
    x.data.iter_mut().for_each(|v| *v += 21.0);
    let xi = case.input_value("x", x);
    let y = case.g.unary(UnaryOp::Softplus, xi);
    check(case, y, "softplus above 20");
}

/// Values that differ pairwise by at least 0.1: even tenths for `a`, odd for `b`.
fn spaced(case: &mut Case, shape: &[usize], odd: bool) -> archc::tensor::F32Tensor {
    let mut t = case.rng.tensor(shape);
    t.data
        .iter_mut()
        .for_each(|v| *v = 0.2 * (*v * 5.0).round() + if odd { 0.1 } else { 0.0 });
    t
}

#[test]
fn binary_ops_with_broadcasting() {
    let shapes: &[(&[usize], &[usize])] = &[
        (&[3, 5], &[3, 5]),
        (&[3, 5], &[5]),
        (&[3, 1], &[1, 5]),
        (&[7, 3, 5], &[3, 1]),
        (&[5], &[3, 5]),
    ];
    for (i, &(op, name)) in BINARY_OPS.iter().enumerate() {
        for (j, &(sa, sb)) in shapes.iter().enumerate() {
            let mut case = Case::new(1000 + 10 * i as u64 + j as u64);
            let (mut a, mut b) = (case.rng.tensor(sa), case.rng.tensor(sb));
            match op {
                BinaryOp::Pow => a.data.iter_mut().for_each(|v| *v = 0.5 + v.abs()),
                BinaryOp::Div => b
                    .data
                    .iter_mut()
                    .for_each(|v| *v = v.signum() * (0.5 + v.abs())),
                BinaryOp::Max | BinaryOp::Min | BinaryOp::Lt | BinaryOp::Le | BinaryOp::Eq => {
                    a = spaced(&mut case, sa, false);
                    b = spaced(&mut case, sb, true);
                }
                _ => {}
            }
            let ai = case.input_value("a", a);
            let bi = case.input_value("b", b);
            let y = case.g.binary(op, ai, bi);
            check(case, y, &format!("binary {name} {sa:?} {sb:?}"));
        }
    }
}

#[test]
fn max_and_min_split_ties() {
    for op in [BinaryOp::Max, BinaryOp::Min] {
        let mut case = Case::new(13);
        let x = case.input("x", &[3, 5]);
        let y = case.g.binary(op, x, x);
        check(case, y, &format!("{op:?} of a tie"));
    }
}

#[test]
fn select_passes_each_branch() {
    let mut case = Case::new(12);
    let mut cond = case.rng.tensor(&[3, 5]);
    cond.data
        .iter_mut()
        .for_each(|v| *v = if *v > 0.0 { 1.0 } else { 0.0 });
    let ci = case.fixed("cond", cond);
    let a = case.input("a", &[3, 5]);
    let b = case.input("b", &[5]);
    let y = case.g.select(ci, a, b);
    check(case, y, "select");
}

#[test]
fn reductions() {
    for op in [ReduceOp::Sum, ReduceOp::Mean, ReduceOp::Max] {
        for axis in 0..3 {
            let mut case = Case::new(20 + axis as u64);
            // Distinct values spaced by 0.02 so the maximum is unique and stays so.
            let mut x = case.rng.tensor(&[3, 5, 7]);
            let mut order: Vec<usize> = (0..x.data.len()).collect();
            order.sort_by(|&i, &j| x.data[i].total_cmp(&x.data[j]));
            for (rank, &i) in order.iter().enumerate() {
                x.data[i] = rank as f32 * 0.02 - 1.0;
            }
            let xi = case.input_value("x", x);
            let y = case.g.reduce(op, xi, axis);
            check(case, y, &format!("reduce {op:?} axis {axis}"));
        }
    }
}

#[test]
fn reduce_max_shares_ties() {
    let mut case = Case::new(23);
    let x = case.input("x", &[3, 5]);
    let twice = case.g.concat(vec![x, x], 0);
    let y = case.g.reduce(ReduceOp::Max, twice, 0);
    check(case, y, "reduce max of tied rows");
}

#[test]
fn mean_over_a_symbolic_axis() {
    let mut case = Case::new(24);
    let x = case.input_sym("x", vec![Dim::c(3), Dim::sym("seq")], &[3, 7]);
    let y = case.g.reduce(ReduceOp::Mean, x, 1);
    check(case, y, "mean over seq");
}

#[test]
fn matmuls() {
    let cases: &[(&[usize], &[usize], bool)] = &[
        (&[3, 5], &[5, 7], false),
        (&[3, 5], &[7, 5], true),
        (&[2, 3, 5], &[5, 7], false),
        (&[2, 3, 5], &[7, 5], true),
        (&[3, 5], &[2, 5, 7], false),
        (&[2, 1, 3, 5], &[3, 5, 7], false),
        (&[2, 3, 5], &[2, 7, 5], true),
    ];
    for (i, &(sa, sb, tb)) in cases.iter().enumerate() {
        let mut case = Case::new(30 + i as u64);
        let a = case.input("a", sa);
        let b = case.input("b", sb);
        let y = case.g.matmul(a, b, tb);
        check(case, y, &format!("matmul {sa:?} {sb:?} transpose_b={tb}"));
    }
}

#[test]
fn layout_ops() {
    let mut case = Case::new(40);
    let x = case.input("x", &[3, 5, 7]);
    let y = case.g.reshape(x, vec![c(15), c(7)]);
    check(case, y, "reshape");

    let mut case = Case::new(41);
    let x = case.input("x", &[3, 5, 7]);
    let y = case.g.permute(x, &[2, 0, 1]);
    check(case, y, "permute");

    let mut case = Case::new(42);
    let x = case.input("x", &[3, 1, 7]);
    let y = case.g.broadcast(x, vec![c(2), c(3), c(5), c(7)]);
    check(case, y, "broadcast");

    for by in [-2, 3] {
        let mut case = Case::new(43);
        let x = case.input("x", &[3, 5, 7]);
        let y = case.g.shift(x, 1, by);
        check(case, y, &format!("shift by {by}"));
    }
}

#[test]
fn slices() {
    for (start, len) in [(0, 3), (2, 3), (4, 1), (1, 5)] {
        let mut case = Case::new(50 + start);
        let x = case.input("x", &[3, 7, 5]);
        let y = case.g.slice(x, 1, start, len);
        check(case, y, &format!("slice {start}+{len}"));
    }
    for (start, len) in [(0, 1), (2, 1), (1, 3)] {
        let mut case = Case::new(60 + start);
        let x = case.input_sym("x", vec![Dim::c(3), Dim::sym("seq"), Dim::c(5)], &[3, 7, 5]);
        let y = case.g.slice(x, 1, start, len);
        check(case, y, &format!("slice {start}+{len} of a symbolic axis"));
    }
}

#[test]
fn concat_splits_the_gradient() {
    let mut case = Case::new(70);
    let a = case.input("a", &[3, 2, 5]);
    let b = case.input("b", &[3, 1, 5]);
    let d = case.input("d", &[3, 4, 5]);
    let y = case.g.concat(vec![a, b, d, a], 1);
    check(case, y, "concat");
}

#[test]
fn gather_accumulates_rows() {
    let mut case = Case::new(80);
    let table = case.input("table", &[7, 5]);
    let ids = case.ids("ids", &[3, 5], 7);
    let y = case.g.gather(table, ids);
    check(case, y, "gather");

    let mut case = Case::new(81);
    let table = case.input("table", &[7]);
    let ids = case.ids("ids", &[3, 5], 7);
    let y = case.g.gather(table, ids);
    check(case, y, "gather from a vector");
}

#[test]
fn leaves_and_casts() {
    let mut case = Case::new(90);
    let mut x = case.rng.tensor(&[3, 5]);
    // Away from the integers, where the cast to i64 jumps.
    x.data
        .iter_mut()
        .for_each(|v| *v = (*v * 3.0).round() + 0.5 + 0.3 * *v);
    let xi = case.input_value("x", x);
    let iota = case.g.iota(vec![c(3), c(5)], 1);
    let k = case.g.constant(0.5);
    let as_int = case.g.cast(xi, DType::I64);
    let back = case.g.cast(as_int, DType::F32);
    let same = case.g.cast(xi, DType::F32);
    let t = case.g.mul(same, iota);
    let t = case.g.add(t, k);
    let y = case.g.mul(t, back);
    check(case, y, "iota, const, casts");
}

#[test]
fn composite_norm_and_softmax() {
    let mut case = Case::new(95);
    let x = case.input("x", &[3, 5, 7]);
    let w = case.input("w", &[7]);
    let mean = case.g.reduce(ReduceOp::Mean, x, 2);
    let centred = case.g.sub(x, mean);
    let sq = case.g.unary(UnaryOp::Square, centred);
    let var = case.g.reduce(ReduceOp::Mean, sq, 2);
    let var = case.g.scale_add(var, 1.0, 1e-5);
    let inv = case.g.unary(UnaryOp::Rsqrt, var);
    let normed = case.g.mul(centred, inv);
    let y = case.g.mul(normed, w);
    let m = case.g.reduce(ReduceOp::Max, y, 2);
    let e = case.g.sub(y, m);
    let e = case.g.unary(UnaryOp::Exp, e);
    let z = case.g.reduce(ReduceOp::Sum, e, 2);
    let p = case.g.div(e, z);
    check(case, p, "layer norm then softmax");
}

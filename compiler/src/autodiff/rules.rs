//! Node + its output's adjoint → its inputs' adjoints: one derivative rule per op of the op
//! table, as graph construction. The `match` in [`input_grads`] has no wildcard arm, so a
//! new op does not build until it has a rule. Each rule returns, per input, a gradient of
//! exactly that input's shape (broadcasts are summed back), or None where no gradient
//! flows (integer and index inputs, piecewise-constant ops, inputs nobody wants).

use super::attention;
use crate::graph::{BinaryOp, DType, Dim, Graph, NodeId, Op, ReduceOp, Shape, UnaryOp};

/// The gradients of node `id`'s inputs given `dy`, the adjoint of its output. `want[i]`
/// says whether input i needs one.
pub(super) fn input_grads(
    g: &mut Graph,
    id: NodeId,
    dy: NodeId,
    want: &[bool],
) -> Result<Vec<Option<NodeId>>, String> {
    let node = g.node(id).clone();
    let x = |i: usize| node.inputs[i];
    Ok(match &node.op {
        // Leaves: nothing to propagate.
        Op::Input { .. } | Op::Param { .. } | Op::Const { .. } | Op::Iota { .. } => Vec::new(),
        Op::Unary(op) => vec![unary(g, *op, x(0), id, dy)],
        Op::Binary(op) => binary(g, *op, x(0), x(1), id, dy, want),
        Op::Select => {
            let zero = g.constant(0.0);
            let da = want[1].then(|| {
                let d = g.select(x(0), dy, zero);
                unbroadcast(g, d, &node_shape(g, x(1)))
            });
            let db = want[2].then(|| {
                let d = g.select(x(0), zero, dy);
                unbroadcast(g, d, &node_shape(g, x(2)))
            });
            vec![None, da, db]
        }
        // Only an f32 → f32 cast passes a gradient; integers have none.
        Op::Cast => {
            vec![(g.node(x(0)).dtype == DType::F32 && node.dtype == DType::F32).then_some(dy)]
        }
        Op::Reduce { op, axis } => vec![Some(reduce(g, *op, *axis, x(0), id, dy))],
        Op::MatMul { transpose_b } => matmul(g, x(0), x(1), *transpose_b, dy, want),
        Op::Reshape => {
            let shape = node_shape(g, x(0));
            vec![Some(g.reshape(dy, shape))]
        }
        Op::Permute { perm } => {
            let mut inverse = vec![0; perm.len()];
            for (i, &p) in perm.iter().enumerate() {
                inverse[p] = i;
            }
            vec![Some(g.permute(dy, &inverse))]
        }
        Op::Broadcast => {
            let shape = node_shape(g, x(0));
            vec![Some(unbroadcast(g, dy, &shape))]
        }
        // out[t] = x[t − by], so x[s] went to out[s + by].
        Op::Shift { axis, by } => vec![Some(g.shift(dy, *axis, -by))],
        Op::Slice { axis, start, len } => vec![Some(slice_grad(g, x(0), *axis, *start, *len, dy))],
        Op::Concat { axis } => concat_grads(g, &node.inputs, *axis, dy, want)?,
        Op::Gather => vec![want[0].then(|| gather_grad(g, x(0), x(1), dy)), None],
        // d updates[n] = dy[ids[n]].
        Op::ScatterAdd { .. } => vec![None, want[1].then(|| g.gather(dy, x(0)))],
        Op::Attention { .. } => attention::attention_grads(g, id, &node, dy, want)?,
        Op::AttentionGrad { .. } => {
            return Err(format!(
                "autodiff: %{} (attention_grad) is already a gradient; second derivatives of attention are not built",
                id.0
            ))
        }
        // Session state (a KV cache append) exists only in inference step graphs.
        Op::UpdateTail | Op::UpdateRing => {
            return Err(format!(
                "autodiff: %{} (update_tail) writes session state and has no gradient",
                id.0
            ))
        }
        Op::Scan { .. } | Op::TupleGet { .. } => {
            return Err(format!(
                "autodiff: %{} ({}) is differentiated by the sweep itself",
                id.0,
                node.op.name()
            ))
        }
    })
}

fn node_shape(g: &Graph, id: NodeId) -> Shape {
    g.shape(id).clone()
}

/// d/dx of a unary op, times dy. `y` is the op's output.
fn unary(g: &mut Graph, op: UnaryOp, x: NodeId, y: NodeId, dy: NodeId) -> Option<NodeId> {
    use UnaryOp as U;
    let derivative = match op {
        U::Neg => return Some(g.unary(U::Neg, dy)),
        U::Exp => y,
        U::Log => return Some(g.div(dy, x)),
        U::Sqrt => {
            let twice = g.scale(y, 2.0);
            return Some(g.div(dy, twice));
        }
        // d x^(-1/2) = −½ · y³
        U::Rsqrt => {
            let y2 = g.unary(U::Square, y);
            let y3 = g.mul(y2, y);
            g.scale(y3, -0.5)
        }
        U::Tanh => {
            let y2 = g.unary(U::Square, y);
            g.scale_add(y2, -1.0, 1.0)
        }
        U::Erf => gaussian(g, x, 2.0 / std::f64::consts::PI.sqrt(), 1.0),
        U::Sigmoid => {
            let one_minus = g.scale_add(y, -1.0, 1.0);
            g.mul(y, one_minus)
        }
        // 0 at x = 0, as PyTorch.
        U::Relu => positive(g, x),
        // σ(x) · (1 + x · (1 − σ(x)))
        U::Silu => {
            let s = g.unary(U::Sigmoid, x);
            let one_minus = g.scale_add(s, -1.0, 1.0);
            let t = g.mul(x, one_minus);
            let t = g.scale_add(t, 1.0, 1.0);
            g.mul(s, t)
        }
        // Φ(x) + x · φ(x)
        U::Gelu => {
            let scaled = g.scale(x, std::f64::consts::FRAC_1_SQRT_2);
            let erf = g.unary(U::Erf, scaled);
            let cdf = g.scale_add(erf, 0.5, 0.5);
            let pdf = gaussian(g, x, 1.0 / (2.0 * std::f64::consts::PI).sqrt(), 0.5);
            let t = g.mul(x, pdf);
            g.add(cdf, t)
        }
        // ½(1 + tanh u) + ½ x (1 − tanh² u) · c (1 + 3 · 0.044715 x²),  u = c (x + 0.044715 x³)
        U::GeluTanh => {
            let c = (2.0 / std::f64::consts::PI).sqrt();
            let x2 = g.unary(U::Square, x);
            let x3 = g.mul(x2, x);
            let inner = g.scale(x3, 0.044715);
            let inner = g.add(x, inner);
            let u = g.scale(inner, c);
            let t = g.unary(U::Tanh, u);
            let left = g.scale_add(t, 0.5, 0.5);
            let t2 = g.unary(U::Square, t);
            let sech2 = g.scale_add(t2, -1.0, 1.0);
            let du = g.scale_add(x2, 3.0 * 0.044715 * c, c);
            let right = g.mul(sech2, du);
            let right = g.mul(right, x);
            let right = g.scale(right, 0.5);
            g.add(left, right)
        }
        U::Softplus => g.unary(U::Sigmoid, x),
        // sign(x), 0 at 0 as PyTorch.
        U::Abs => {
            let pos = positive(g, x);
            let zero = g.constant(0.0);
            let neg = g.binary(BinaryOp::Lt, x, zero);
            g.sub(pos, neg)
        }
        U::Square => g.scale(x, 2.0),
        U::Recip => {
            let y2 = g.unary(U::Square, y);
            g.unary(U::Neg, y2)
        }
        U::Sin => g.unary(U::Cos, x),
        U::Cos => {
            let s = g.unary(U::Sin, x);
            g.unary(U::Neg, s)
        }
        // Piecewise constant.
        U::Floor => return None,
        U::StopGradient => return None,
    };
    Some(g.mul(dy, derivative))
}

/// `c · exp(−k · x²)`
fn gaussian(g: &mut Graph, x: NodeId, c: f64, k: f64) -> NodeId {
    let x2 = g.unary(UnaryOp::Square, x);
    let e = g.scale(x2, -k);
    let e = g.unary(UnaryOp::Exp, e);
    g.scale(e, c)
}

/// 1 where x > 0, else 0.
fn positive(g: &mut Graph, x: NodeId) -> NodeId {
    let zero = g.constant(0.0);
    g.binary(BinaryOp::Lt, zero, x)
}

fn binary(
    g: &mut Graph,
    op: BinaryOp,
    a: NodeId,
    b: NodeId,
    y: NodeId,
    dy: NodeId,
    want: &[bool],
) -> Vec<Option<NodeId>> {
    use BinaryOp as B;
    let (da, db) = match op {
        B::Add => (Some(dy), Some(dy)),
        B::Sub => (Some(dy), want[1].then(|| g.unary(UnaryOp::Neg, dy))),
        B::Mul => (want[0].then(|| g.mul(dy, b)), want[1].then(|| g.mul(dy, a))),
        // d(a/b)/db = −y / b
        B::Div => (
            want[0].then(|| g.div(dy, b)),
            want[1].then(|| {
                let t = g.div(y, b);
                let t = g.mul(dy, t);
                g.unary(UnaryOp::Neg, t)
            }),
        ),
        // The larger (smaller) input takes the gradient; ties split it evenly, as
        // `torch.maximum` does.
        B::Max | B::Min => {
            let (lo_wins_a, hi_wins_a) = if op == B::Max { (b, a) } else { (a, b) };
            let tie = g.binary(B::Eq, a, b);
            let half = g.scale(tie, 0.5);
            let share = |g: &mut Graph, lo: NodeId, hi: NodeId| {
                let wins = g.binary(B::Lt, lo, hi);
                let w = g.add(wins, half);
                g.mul(dy, w)
            };
            let da = want[0].then(|| share(g, lo_wins_a, hi_wins_a));
            let db = want[1].then(|| share(g, hi_wins_a, lo_wins_a));
            (da, db)
        }
        // d a^b = b a^(b−1) da + a^b ln a db; the ln a term is 0 where a ≤ 0.
        B::Pow => (
            want[0].then(|| {
                let b1 = g.scale_add(b, 1.0, -1.0);
                let p = g.binary(B::Pow, a, b1);
                let t = g.mul(b, p);
                g.mul(dy, t)
            }),
            want[1].then(|| {
                let ln = g.unary(UnaryOp::Log, a);
                let t = g.mul(y, ln);
                let pos = positive(g, a);
                let zero = g.constant(0.0);
                let t = g.select(pos, t, zero);
                g.mul(dy, t)
            }),
        ),
        // Comparisons are piecewise constant.
        B::Lt | B::Le | B::Eq => (None, None),
    };
    let (sa, sb) = (node_shape(g, a), node_shape(g, b));
    let da = da.filter(|_| want[0]).map(|d| unbroadcast(g, d, &sa));
    let db = db.filter(|_| want[1]).map(|d| unbroadcast(g, d, &sb));
    vec![da, db]
}

fn reduce(g: &mut Graph, op: ReduceOp, axis: usize, x: NodeId, y: NodeId, dy: NodeId) -> NodeId {
    let shape = node_shape(g, x);
    match op {
        ReduceOp::Sum => g.broadcast(dy, shape),
        ReduceOp::Mean => {
            let n = dim_size(g, &shape[axis]);
            let share = g.div(dy, n);
            g.broadcast(share, shape)
        }
        // The gradient goes to the maximum; tied maxima share it evenly (as `torch.amax`).
        ReduceOp::Max => {
            let hit = g.binary(BinaryOp::Eq, x, y);
            let count = g.reduce(ReduceOp::Sum, hit, axis);
            let share = g.div(dy, count);
            g.mul(hit, share)
        }
    }
}

fn matmul(
    g: &mut Graph,
    a: NodeId,
    b: NodeId,
    transpose_b: bool,
    dy: NodeId,
    want: &[bool],
) -> Vec<Option<NodeId>> {
    let (sa, sb) = (node_shape(g, a), node_shape(g, b));
    // y = a·b:  da = dy·bᵀ, db = aᵀ·dy.   y = a·bᵀ:  da = dy·b, db = dyᵀ·a.
    let da = want[0].then(|| {
        let d = g.matmul(dy, b, !transpose_b);
        unbroadcast(g, d, &sa)
    });
    let db = want[1].then(|| {
        // A weight shared by every batch entry: fold the batch into the contraction.
        let (lhs, rhs) = if sb.len() == 2 && sa.len() > 2 {
            let rows = Dim::product(&sa[..sa.len() - 1]);
            let a2 = g.reshape(a, vec![rows.clone(), sa[sa.len() - 1].clone()]);
            let n = g.shape(dy).last().cloned().unwrap_or(Dim::c(1));
            let dy2 = g.reshape(dy, vec![rows, n]);
            (a2, dy2)
        } else {
            (a, dy)
        };
        let d = if transpose_b {
            let t = transpose(g, rhs);
            g.matmul(t, lhs, false)
        } else {
            let t = transpose(g, lhs);
            g.matmul(t, rhs, false)
        };
        unbroadcast(g, d, &sb)
    });
    vec![da, db]
}

/// Swaps the last two axes.
pub(super) fn transpose(g: &mut Graph, x: NodeId) -> NodeId {
    let r = g.shape(x).len();
    let mut perm: Vec<usize> = (0..r).collect();
    perm.swap(r - 2, r - 1);
    g.permute(x, &perm)
}

/// The gradient of `x[.., start..start+len, ..]`: `dy` placed back among zeros.
fn slice_grad(g: &mut Graph, x: NodeId, axis: usize, start: u64, len: u64, dy: NodeId) -> NodeId {
    let shape = node_shape(g, x);
    if let Some(n) = shape[axis].as_const() {
        let mut pieces = Vec::new();
        let zeros_of = |g: &mut Graph, size: u64| {
            let mut s = shape.clone();
            s[axis] = Dim::c(size);
            zeros(g, &s)
        };
        if start > 0 {
            pieces.push(zeros_of(g, start));
        }
        pieces.push(dy);
        if start + len < n {
            pieces.push(zeros_of(g, n - start - len));
        }
        return if pieces.len() == 1 {
            dy
        } else {
            g.concat(pieces, axis)
        };
    }
    let pos = g.iota(shape.clone(), axis);
    if len == 1 {
        // One index of a symbolic axis: broadcast and keep that index.
        let at = g.constant(start as f64);
        let hit = g.binary(BinaryOp::Eq, pos, at);
        let spread = g.broadcast(dy, shape);
        return g.mul(spread, hit);
    }
    // A symbolic axis: dx = dy · P along the axis, P[j, i] = (i = j + start) — no scatter.
    let rank = shape.len();
    let mut perm: Vec<usize> = (0..rank).filter(|&a| a != axis).collect();
    perm.push(axis);
    let moved = g.permute(dy, &perm);
    let moved_shape = g.shape(moved).clone();
    let rows = Dim::product(&moved_shape[..rank - 1]);
    let flat = g.reshape(moved, vec![rows.clone(), Dim::c(len)]);
    let placement = vec![Dim::c(len), shape[axis].clone()];
    let j = g.iota(placement.clone(), 0);
    let i = g.iota(placement, 1);
    let j = g.scale_add(j, 1.0, start as f64);
    let p = g.binary(BinaryOp::Eq, i, j);
    let placed = g.matmul(flat, p, false);
    let mut back_shape = moved_shape;
    back_shape[rank - 1] = shape[axis].clone();
    let placed = g.reshape(placed, back_shape);
    let mut inverse = vec![0; rank];
    for (k, &p) in perm.iter().enumerate() {
        inverse[p] = k;
    }
    g.permute(placed, &inverse)
}

fn concat_grads(
    g: &mut Graph,
    inputs: &[NodeId],
    axis: usize,
    dy: NodeId,
    want: &[bool],
) -> Result<Vec<Option<NodeId>>, String> {
    if inputs.len() == 1 {
        return Ok(vec![Some(dy)]);
    }
    let mut offset = 0;
    let mut out = Vec::new();
    for (i, &x) in inputs.iter().enumerate() {
        let len = g.shape(x)[axis]
            .as_const()
            .ok_or("autodiff: concat along a symbolic axis")?;
        out.push(want[i].then(|| g.slice(dy, axis, offset, len)));
        offset += len;
    }
    Ok(out)
}

/// The gradient of an embedding lookup: each row of the table accumulates the adjoints of
/// the positions that read it, as `one_hot(ids)ᵀ · dy` (the op set has no scatter-add).
/// A table's gradient: the rows of `dy` added into the rows `ids` picked (scatter-add).
/// A table with a symbolic row count (never a parameter) takes the one-hot matmul.
fn gather_grad(g: &mut Graph, table: NodeId, ids: NodeId, dy: NodeId) -> NodeId {
    let ts = node_shape(g, table);
    let n = Dim::product(g.shape(ids));
    let row = Dim::product(&ts[1..]);
    let flat_dy = g.reshape(dy, vec![n.clone(), row]);
    if let Some(rows) = ts[0].as_const() {
        let flat_ids = g.reshape(ids, vec![n]);
        let d = g.scatter_add(flat_ids, flat_dy, rows);
        return g.reshape(d, ts);
    }
    let flat_ids = g.reshape(ids, vec![Dim::c(1), n.clone()]);
    let flat_ids = g.cast(flat_ids, DType::F32);
    let rows = g.iota(vec![ts[0].clone(), n], 0);
    let one_hot = g.binary(BinaryOp::Eq, rows, flat_ids);
    let d = g.matmul(one_hot, flat_dy, false);
    g.reshape(d, ts)
}

/// Sums `dy` over the axes that broadcasting added or stretched, to the shape `to`.
pub(super) fn unbroadcast(g: &mut Graph, dy: NodeId, to: &Shape) -> NodeId {
    let from = node_shape(g, dy);
    if &from == to {
        return dy;
    }
    let Some(lead) = from.len().checked_sub(to.len()) else {
        return dy;
    };
    let one = Dim::c(1);
    let mut cur = dy;
    for (ax, d) in from.iter().enumerate() {
        if ax < lead || (to[ax - lead] == one && *d != one) {
            cur = g.reduce(ReduceOp::Sum, cur, ax);
        }
    }
    if g.shape(cur) != to {
        cur = g.reshape(cur, to.clone());
    }
    cur
}

pub(super) fn zeros(g: &mut Graph, shape: &Shape) -> NodeId {
    let z = g.constant(0.0);
    if shape.is_empty() {
        z
    } else {
        g.broadcast(z, shape.clone())
    }
}

/// The size of a dimension as an f32 value of shape [1] (computed when symbolic).
pub(super) fn dim_size(g: &mut Graph, d: &Dim) -> NodeId {
    match d.as_const() {
        Some(n) => {
            let c = g.constant(n as f64);
            g.broadcast(c, vec![Dim::c(1)])
        }
        None => {
            let one = g.constant(1.0);
            let ones = g.broadcast(one, vec![d.clone()]);
            g.reduce(ReduceOp::Sum, ones, 0)
        }
    }
}

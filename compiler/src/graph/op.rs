//! The op table: every op's name, arity, attributes and shape rule, in one place. Reference
//! semantics live in `interp`, one `match` arm per op; a new op breaks the build at every
//! place that must learn it.

use super::dim::{Dim, Shape};
use super::Graph;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum DType {
    F32,
    I64,
}

impl DType {
    pub fn name(self) -> &'static str {
        match self {
            DType::F32 => "f32",
            DType::I64 => "i64",
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum UnaryOp {
    Neg,
    Exp,
    Log,
    Sqrt,
    Rsqrt,
    Tanh,
    Erf,
    Sigmoid,
    Relu,
    Silu,
    /// Exact, erf-based GELU.
    Gelu,
    /// GELU with the tanh approximation.
    GeluTanh,
    Softplus,
    Abs,
    Square,
    Recip,
    Sin,
    Cos,
    Floor,
    /// The identity, with a zero gradient (`torch.Tensor.detach`): a softmax's
    /// stabilising max, which changes the value of nothing.
    StopGradient,
}

pub const UNARY_OPS: &[(UnaryOp, &str)] = &[
    (UnaryOp::Neg, "neg"),
    (UnaryOp::Exp, "exp"),
    (UnaryOp::Log, "log"),
    (UnaryOp::Sqrt, "sqrt"),
    (UnaryOp::Rsqrt, "rsqrt"),
    (UnaryOp::Tanh, "tanh"),
    (UnaryOp::Erf, "erf"),
    (UnaryOp::Sigmoid, "sigmoid"),
    (UnaryOp::Relu, "relu"),
    (UnaryOp::Silu, "silu"),
    (UnaryOp::Gelu, "gelu"),
    (UnaryOp::GeluTanh, "gelu_tanh"),
    (UnaryOp::Softplus, "softplus"),
    (UnaryOp::Abs, "abs"),
    (UnaryOp::Square, "square"),
    (UnaryOp::Recip, "recip"),
    (UnaryOp::Sin, "sin"),
    (UnaryOp::Cos, "cos"),
    (UnaryOp::Floor, "floor"),
    (UnaryOp::StopGradient, "stop_gradient"),
];

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum BinaryOp {
    Add,
    Sub,
    Mul,
    Div,
    Max,
    Min,
    Pow,
    /// 1.0 where a < b, else 0.0.
    Lt,
    Le,
    Eq,
}

pub const BINARY_OPS: &[(BinaryOp, &str)] = &[
    (BinaryOp::Add, "add"),
    (BinaryOp::Sub, "sub"),
    (BinaryOp::Mul, "mul"),
    (BinaryOp::Div, "div"),
    (BinaryOp::Max, "max"),
    (BinaryOp::Min, "min"),
    (BinaryOp::Pow, "pow"),
    (BinaryOp::Lt, "lt"),
    (BinaryOp::Le, "le"),
    (BinaryOp::Eq, "eq"),
];

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ReduceOp {
    Sum,
    Max,
    Mean,
}

/// Which part of the attention backward an `attention_grad` node computes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum AttnPart {
    Lse,
    Q,
    K,
    V,
}

impl AttnPart {
    pub fn name(self) -> &'static str {
        match self {
            AttnPart::Lse => "lse",
            AttnPart::Q => "q",
            AttnPart::K => "k",
            AttnPart::V => "v",
        }
    }

    /// Inputs before the optional bias and key mask.
    pub fn leading(self) -> usize {
        match self {
            AttnPart::Lse => 2,
            _ => 6,
        }
    }
}

/// Which keys a query may see in `attention`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum MaskKind {
    Bidirectional,
    /// Query i (at absolute position `kv_len - q_len + i`) sees keys up to its position.
    Causal,
    /// Causal, and at most `window` keys, itself included.
    Sliding(u64),
}

#[derive(Clone, Debug, PartialEq)]
pub enum Op {
    /// A value supplied by the caller (the node's shape and dtype say what).
    Input {
        name: String,
    },
    /// A learned tensor under its canonical name.
    Param {
        name: String,
    },
    /// A scalar constant.
    Const {
        value: f64,
    },
    /// The index along `axis` of each element of the node's shape, as f32.
    Iota {
        axis: usize,
    },
    Unary(UnaryOp),
    Binary(BinaryOp),
    /// `cond != 0 ? a : b`, broadcasting.
    Select,
    Cast,
    /// Reduces one axis, keeping it with size 1.
    Reduce {
        op: ReduceOp,
        axis: usize,
    },
    /// `a @ b` (or `a @ bᵀ`) over the last two axes; leading axes broadcast.
    MatMul {
        transpose_b: bool,
    },
    /// Same elements, the node's shape.
    Reshape,
    Permute {
        perm: Vec<usize>,
    },
    /// Numpy-style broadcast to the node's shape.
    Broadcast,
    /// `out[.., t, ..] = x[.., t - by, ..]`, zero where `t - by` is out of range.
    Shift {
        axis: usize,
        by: i64,
    },
    Slice {
        axis: usize,
        start: u64,
        len: u64,
    },
    Concat {
        axis: usize,
    },
    /// Rows of a table: `table[ids]`, table [V, rest..] and ids [idx..] → [idx.., rest..].
    Gather,
    /// Gather's adjoint: `out[v] = Σ_{n: ids[n] = v} updates[n]`, ids [N] (i64) and
    /// updates [N, W] → [rows, W]. An embedding's gradient without a one-hot matmul.
    ScatterAdd {
        rows: u64,
    },
    /// Scaled dot-product attention. Inputs: q [B, H, T, D], k [B, Hkv, S, D],
    /// v [B, Hkv, S, Dv], then optionally an additive bias broadcastable to [B, H, T, S]
    /// and a key mask [B, S] (1 keeps a key, 0 drops it). H must be a multiple of Hkv.
    /// With `ring` = R, k and v are rings [B, Hkv, R, ·]: key p (of S, the key mask's
    /// length, which must be given) lives in row p mod R, and keys before S − R are gone.
    Attention {
        mask: MaskKind,
        scale: f64,
        has_bias: bool,
        has_key_mask: bool,
        ring: Option<Dim>,
    },
    /// One part of `attention`'s backward pass in the flash style (no [T, S] buffer: each
    /// kernel recomputes the scores it needs), for the attention of the same `mask`,
    /// `scale`, bias and key mask. Inputs: q, k, then for `Q`, `K` and `V` also v, the
    /// output adjoint dO, the `Lse` part and δ = rowsum(dO ⊙ O) ([B, H, T]); then the
    /// bias and key mask as `attention` takes them. `Lse` gives each query's log Σ exp of
    /// its visible scores [B, H, T] (+∞ when it sees none, so its probabilities are 0);
    /// `Q`, `K`, `V` give dQ [B, H, T, d], dK [B, Hkv, S, d], dV [B, Hkv, S, dv].
    AttentionGrad {
        mask: MaskKind,
        scale: f64,
        has_bias: bool,
        has_key_mask: bool,
        part: AttnPart,
    },
    /// A recurrence over axis 1 of the sequence inputs. Inputs: initial states, then
    /// sequences [B, T, ..], then constants. The body maps (states, step slices, constants)
    /// to (new states, step outputs); the scan yields final states then stacked outputs.
    Scan {
        body: Box<Graph>,
        states: usize,
        seqs: usize,
        reverse: bool,
    },
    /// Output `index` of a multi-output node (a scan).
    TupleGet {
        index: usize,
    },
    /// `x` [S, ..] with its last T rows along axis 0 replaced by `new` [T, ..] (T ≤ S):
    /// `out[s] = s < S − T ? x[s] : new[s − (S − T)]`. A session's KV cache append:
    /// packages run it in place on the state buffer, writing only the T new rows.
    UpdateTail,
    /// `x` [R, ..] as a ring: the T rows of `new` [T, ..] go to rows `(L − T + t) mod R`
    /// (T ≤ R), L being axis 1 of the third input (a [B, L] mask: how many tokens the ring
    /// has seen, these included). A sliding-window cache append, in place like
    /// `update_tail`.
    UpdateRing,
}

impl Op {
    /// The op's name in printed IR.
    pub fn name(&self) -> String {
        match self {
            Op::Input { .. } => "input".into(),
            Op::Param { .. } => "param".into(),
            Op::Const { .. } => "const".into(),
            Op::Iota { .. } => "iota".into(),
            Op::Unary(u) => UNARY_OPS
                .iter()
                .find(|(o, _)| o == u)
                .map_or("?", |(_, n)| n)
                .into(),
            Op::Binary(b) => BINARY_OPS
                .iter()
                .find(|(o, _)| o == b)
                .map_or("?", |(_, n)| n)
                .into(),
            Op::Select => "select".into(),
            Op::Cast => "cast".into(),
            Op::Reduce { op, .. } => format!("reduce_{}", format!("{op:?}").to_lowercase()),
            Op::MatMul { .. } => "matmul".into(),
            Op::Reshape => "reshape".into(),
            Op::Permute { .. } => "permute".into(),
            Op::Broadcast => "broadcast".into(),
            Op::Shift { .. } => "shift".into(),
            Op::Slice { .. } => "slice".into(),
            Op::Concat { .. } => "concat".into(),
            Op::Gather => "gather".into(),
            Op::ScatterAdd { .. } => "scatter_add".into(),
            Op::Attention { .. } => "attention".into(),
            Op::AttentionGrad { .. } => "attention_grad".into(),
            Op::Scan { .. } => "scan".into(),
            Op::TupleGet { .. } => "get".into(),
            Op::UpdateTail => "update_tail".into(),
            Op::UpdateRing => "update_ring".into(),
        }
    }

    /// Number of inputs, when fixed.
    pub fn arity(&self) -> Option<usize> {
        Some(match self {
            Op::Input { .. } | Op::Param { .. } | Op::Const { .. } | Op::Iota { .. } => 0,
            Op::Unary(_) | Op::Cast | Op::Reduce { .. } | Op::Reshape | Op::Permute { .. } => 1,
            Op::Broadcast | Op::Shift { .. } | Op::Slice { .. } | Op::TupleGet { .. } => 1,
            Op::Binary(_)
            | Op::MatMul { .. }
            | Op::Gather
            | Op::ScatterAdd { .. }
            | Op::UpdateTail => 2,
            Op::Select | Op::UpdateRing => 3,
            Op::Attention {
                has_bias,
                has_key_mask,
                ..
            } => 3 + usize::from(*has_bias) + usize::from(*has_key_mask),
            Op::AttentionGrad {
                has_bias,
                has_key_mask,
                part,
                ..
            } => part.leading() + usize::from(*has_bias) + usize::from(*has_key_mask),
            Op::Concat { .. } | Op::Scan { .. } => return None,
        })
    }
}

/// Numpy broadcasting of two shapes.
pub fn broadcast_shapes(a: &[Dim], b: &[Dim]) -> Result<Shape, String> {
    let n = a.len().max(b.len());
    let one = Dim::c(1);
    let mut out = Vec::with_capacity(n);
    for i in 0..n {
        let da = if i + a.len() >= n {
            &a[i + a.len() - n]
        } else {
            &one
        };
        let db = if i + b.len() >= n {
            &b[i + b.len() - n]
        } else {
            &one
        };
        out.push(if da == db || *db == one {
            da.clone()
        } else if *da == one {
            db.clone()
        } else {
            return Err(format!("cannot broadcast {da} with {db}"));
        });
    }
    Ok(out)
}

/// The shape rule: the output shape of `op` given its inputs' shapes. Ops whose shape is
/// an attribute of the node (`input`, `param`, `iota`, `reshape`, `broadcast`) take it as
/// `given`.
pub fn infer_shape(op: &Op, inputs: &[Shape], given: Option<&Shape>) -> Result<Shape, String> {
    if let Some(n) = op.arity() {
        if inputs.len() != n {
            return Err(format!(
                "`{}` takes {n} inputs, got {}",
                op.name(),
                inputs.len()
            ));
        }
    }
    let need_given = || {
        given
            .cloned()
            .ok_or_else(|| format!("`{}` needs its shape", op.name()))
    };
    match op {
        Op::Input { .. } | Op::Param { .. } | Op::Iota { .. } | Op::TupleGet { .. } => need_given(),
        Op::Const { .. } => Ok(Vec::new()),
        Op::Unary(_) | Op::Cast => Ok(inputs[0].clone()),
        Op::Binary(_) => broadcast_shapes(&inputs[0], &inputs[1]),
        Op::Select => broadcast_shapes(&broadcast_shapes(&inputs[0], &inputs[1])?, &inputs[2]),
        Op::Reduce { axis, .. } => {
            let mut s = inputs[0].clone();
            let d = s
                .get_mut(*axis)
                .ok_or_else(|| format!("reduce axis {axis} out of range"))?;
            *d = Dim::c(1);
            Ok(s)
        }
        Op::MatMul { transpose_b } => matmul_shape(&inputs[0], &inputs[1], *transpose_b),
        Op::Reshape => {
            let to = need_given()?;
            if Dim::product(&to) != Dim::product(&inputs[0]) {
                return Err(format!("cannot reshape {:?} to {:?}", inputs[0], to));
            }
            Ok(to)
        }
        Op::Permute { perm } => {
            let mut sorted = perm.clone();
            sorted.sort();
            if sorted != (0..inputs[0].len()).collect::<Vec<_>>() {
                return Err(format!(
                    "bad permutation {perm:?} of rank {}",
                    inputs[0].len()
                ));
            }
            Ok(perm.iter().map(|&p| inputs[0][p].clone()).collect())
        }
        Op::Broadcast => {
            let to = need_given()?;
            if broadcast_shapes(&inputs[0], &to)? != to {
                return Err(format!("cannot broadcast {:?} to {:?}", inputs[0], to));
            }
            Ok(to)
        }
        Op::Shift { axis, .. } => {
            if *axis >= inputs[0].len() {
                return Err(format!("shift axis {axis} out of range"));
            }
            Ok(inputs[0].clone())
        }
        Op::Slice { axis, start, len } => {
            let mut s = inputs[0].clone();
            let d = s
                .get_mut(*axis)
                .ok_or_else(|| format!("slice axis {axis} out of range"))?;
            if let Some(size) = d.as_const() {
                if start + len > size {
                    return Err(format!(
                        "slice {start}..{} of a dimension of {size}",
                        start + len
                    ));
                }
            }
            *d = Dim::c(*len);
            Ok(s)
        }
        Op::Concat { axis } => concat_shape(inputs, *axis),
        Op::Gather => {
            let mut s = inputs[1].clone();
            s.extend(inputs[0].iter().skip(1).cloned());
            Ok(s)
        }
        Op::ScatterAdd { rows } => {
            let (ids, upd) = (&inputs[0], &inputs[1]);
            if ids.len() != 1 || upd.len() != 2 || ids[0] != upd[0] {
                return Err(format!(
                    "scatter_add takes ids [N] and updates [N, W], got {ids:?} and {upd:?}"
                ));
            }
            Ok(vec![Dim::c(*rows), upd[1].clone()])
        }
        Op::Attention {
            ring, has_key_mask, ..
        } => {
            let (q, v) = (&inputs[0], &inputs[2]);
            if q.len() != 4 || inputs[1].len() != 4 || v.len() != 4 {
                return Err("attention takes rank-4 q, k, v".into());
            }
            if let Some(r) = ring {
                if !has_key_mask || inputs[1][2] != *r || v[2] != *r {
                    return Err(format!(
                        "ring attention needs a key mask and k, v of {r} rows"
                    ));
                }
            }
            Ok(vec![q[0].clone(), q[1].clone(), q[2].clone(), v[3].clone()])
        }
        Op::AttentionGrad { part, .. } => {
            let (q, k) = (&inputs[0], &inputs[1]);
            if q.len() != 4 || k.len() != 4 || q[3] != k[3] || q[0] != k[0] {
                return Err(format!(
                    "attention_grad takes q [B, H, T, d] and k [B, Hkv, S, d], got {q:?} and {k:?}"
                ));
            }
            if *part != AttnPart::Lse {
                let (v, d_o) = (&inputs[2], &inputs[3]);
                let rows = vec![q[0].clone(), q[1].clone(), q[2].clone()];
                if v.len() != 4 || d_o.len() != 4 || d_o[..3] != rows[..] || d_o[3] != v[3] {
                    return Err(format!(
                        "attention_grad: v {v:?} and dO {d_o:?} do not fit q {q:?}"
                    ));
                }
                if inputs[4] != rows || inputs[5] != rows {
                    return Err(format!("attention_grad: lse and δ must be {rows:?}"));
                }
            }
            Ok(match part {
                AttnPart::Lse => vec![q[0].clone(), q[1].clone(), q[2].clone()],
                AttnPart::Q => q.clone(),
                AttnPart::K => k.clone(),
                AttnPart::V => inputs[2].clone(),
            })
        }
        Op::Scan { .. } => Ok(Vec::new()),
        Op::UpdateRing => {
            let (x, new) = (&inputs[0], &inputs[1]);
            if x.is_empty() || x.len() != new.len() || x[1..] != new[1..] || inputs[2].len() != 2 {
                return Err(format!(
                    "update_ring of {x:?} by {new:?} seen through {:?}",
                    inputs[2]
                ));
            }
            Ok(x.clone())
        }
        Op::UpdateTail => {
            let (x, new) = (&inputs[0], &inputs[1]);
            if x.is_empty() || x.len() != new.len() || x[1..] != new[1..] {
                return Err(format!(
                    "update_tail of {x:?} by {new:?}: only axis 0 may differ"
                ));
            }
            if let (Some(s), Some(t)) = (x[0].as_const(), new[0].as_const()) {
                if t > s {
                    return Err(format!("update_tail of {t} rows into {s}"));
                }
            }
            Ok(x.clone())
        }
    }
}

fn matmul_shape(a: &[Dim], b: &[Dim], transpose_b: bool) -> Result<Shape, String> {
    if a.len() < 2 || b.len() < 2 {
        return Err("matmul needs rank ≥ 2".into());
    }
    let (m, k) = (&a[a.len() - 2], &a[a.len() - 1]);
    let (kb, n) = if transpose_b {
        (&b[b.len() - 1], &b[b.len() - 2])
    } else {
        (&b[b.len() - 2], &b[b.len() - 1])
    };
    if k != kb {
        return Err(format!("matmul inner dimensions differ: {k} vs {kb}"));
    }
    let mut out = broadcast_shapes(&a[..a.len() - 2], &b[..b.len() - 2])?;
    out.push(m.clone());
    out.push(n.clone());
    Ok(out)
}

fn concat_shape(inputs: &[Shape], axis: usize) -> Result<Shape, String> {
    let first = inputs.first().ok_or("concat of nothing")?;
    if axis >= first.len() {
        return Err(format!("concat axis {axis} out of range"));
    }
    let mut total = Dim::c(0);
    for s in inputs {
        if s.len() != first.len()
            || s.iter()
                .enumerate()
                .any(|(i, d)| i != axis && *d != first[i])
        {
            return Err(format!("concat of mismatched shapes {first:?} and {s:?}"));
        }
        total = match (total.as_const(), s[axis].as_const()) {
            (Some(a), Some(b)) => Dim::c(a + b),
            _ if total == Dim::c(0) => s[axis].clone(),
            _ => return Err("concat of symbolic dimensions".into()),
        };
    }
    let mut out = first.clone();
    out[axis] = total;
    Ok(out)
}

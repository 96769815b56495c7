//! `attention` node + output adjoint → adjoints of q, k, v and the bias: the backward pass
//! of softmax attention written with primitive ops. It recomputes the probabilities
//! exactly as `interp::attention` defines them (scores · scale + bias, positional mask and
//! key mask, rows with no visible key give zeros) and applies
//! `dV = Pᵀ·dO`, `dP = dO·Vᵀ`, `dS = P ⊙ (dP − rowsum(dP ⊙ P))`, `dQ = scale·dS·K`,
//! `dK = scale·dSᵀ·Q`, `dBias = dS` (summed over broadcast axes).
//!
//! Unless the bias needs a gradient (T5's relative bias, whose gradient is a
//! [heads, T, S] tensor anyway), the backward runs in the flash style instead
//! (`attention_grad` nodes): each query's log-sum-exp, δ = rowsum(dO ⊙ O), then dQ, dK
//! and dV, each recomputing the scores it needs — no [T, S] tensor.
//!
//! Grouped-query attention needs no repeated keys: query head `h` reads key head
//! `h / group`, so reshaping q (and every [B, H, T, ·] tensor) to [B, Hkv, group·T, ·] lines
//! each group's queries up against its single key/value head. The key mask gets no
//! gradient.

use super::rules::{dim_size, transpose, unbroadcast};
use crate::graph::{
    AttnPart, BinaryOp, DType, Dim, Graph, MaskKind, Node, NodeId, Op, ReduceOp, UnaryOp,
};

/// Stands in for −∞ on masked scores, so that no `inf − inf` arises.
const MASKED: f64 = -1e30;

pub(super) fn attention_grads(
    g: &mut Graph,
    id: NodeId,
    node: &Node,
    dy: NodeId,
    want: &[bool],
) -> Result<Vec<Option<NodeId>>, String> {
    let Op::Attention {
        mask,
        scale,
        has_bias,
        has_key_mask,
        ref ring,
    } = node.op
    else {
        return Err("autodiff: not an attention node".into());
    };
    if ring.is_some() {
        return Err("autodiff: attention over a ring cache (a step graph) has no gradient".into());
    }
    let (q, k, v) = (node.inputs[0], node.inputs[1], node.inputs[2]);
    let bias = has_bias.then(|| node.inputs[3]);
    let key_mask = has_key_mask.then(|| node.inputs[3 + usize::from(has_bias)]);
    let bias_grad = has_bias && want.get(3).copied().unwrap_or(false);
    let sq = g.shape(q).clone();
    if !bias_grad {
        let extras: Vec<NodeId> = bias.iter().chain(&key_mask).copied().collect();
        let grad = |g: &mut Graph, part: AttnPart, mut inputs: Vec<NodeId>| {
            inputs.extend(&extras);
            g.push(
                Op::AttentionGrad {
                    mask,
                    scale,
                    has_bias,
                    has_key_mask,
                    part,
                },
                inputs,
                None,
                DType::F32,
            )
        };
        let lse = grad(g, AttnPart::Lse, vec![q, k]);
        let od = g.mul(dy, id);
        let delta = g.reduce(ReduceOp::Sum, od, 3);
        let delta = g.reshape(delta, sq[..3].to_vec());
        let mut out = vec![
            want[0].then(|| grad(g, AttnPart::Q, vec![q, k, v, dy, lse, delta])),
            want[1].then(|| grad(g, AttnPart::K, vec![q, k, v, dy, lse, delta])),
            want[2].then(|| grad(g, AttnPart::V, vec![q, k, v, dy, lse, delta])),
        ];
        if has_bias {
            out.push(None);
        }
        if has_key_mask {
            out.push(None);
        }
        return Ok(out);
    }
    let sk = g.shape(k).clone();
    let (heads, kv_heads) = (sq[1].as_const(), sk[1].as_const());
    let group = match (heads, kv_heads) {
        (Some(h), Some(hk)) if hk > 0 && h % hk == 0 => h / hk,
        _ => {
            return Err(format!(
                "autodiff: attention heads {} over {} key/value heads",
                sq[1], sk[1]
            ))
        }
    };
    let grouped = |g: &mut Graph, x: NodeId| {
        let s = g.shape(x).clone();
        g.reshape(
            x,
            vec![
                s[0].clone(),
                sk[1].clone(),
                s[2].mul(&Dim::c(group)),
                s[3].clone(),
            ],
        )
    };
    let ungrouped = |g: &mut Graph, x: NodeId, last: &Dim| {
        let shape = vec![sq[0].clone(), sq[1].clone(), sq[2].clone(), last.clone()];
        g.reshape(x, shape)
    };
    let (t, s) = (&sq[2], &sk[2]);

    // Forward probabilities P [B, H, T, S].
    let qg = grouped(g, q);
    let scores = g.matmul(qg, k, true);
    let scores = ungrouped(g, scores, s);
    let mut logits = g.scale(scores, scale);
    if let Some(b) = bias {
        logits = g.add(logits, b);
    }
    let allowed = allowed(g, mask, key_mask, &sq[0], t, s);
    let p = masked_softmax(g, logits, allowed);

    // Backward.
    let dog = grouped(g, dy);
    let pg = grouped(g, p);
    let dv = want[2].then(|| {
        let pt = transpose(g, pg);
        g.matmul(pt, dog, false)
    });
    let dp = g.matmul(dog, v, true);
    let dp = ungrouped(g, dp, s);
    let weighted = g.mul(dp, p);
    let row = g.reduce(ReduceOp::Sum, weighted, 3);
    let centred = g.sub(dp, row);
    let ds = g.mul(p, centred);
    let dbias = bias
        .filter(|_| want.get(3).copied().unwrap_or(false))
        .map(|b| {
            let shape = g.shape(b).clone();
            unbroadcast(g, ds, &shape)
        });
    let dscores = g.scale(ds, scale);
    let dsg = grouped(g, dscores);
    let dq = want[0].then(|| {
        let d = g.matmul(dsg, k, false);
        ungrouped(g, d, &sq[3])
    });
    let dk = want[1].then(|| {
        let dst = transpose(g, dsg);
        g.matmul(dst, qg, false)
    });
    let mut out = vec![dq, dk, dv];
    if has_bias {
        out.push(dbias);
    }
    if has_key_mask {
        out.push(None);
    }
    Ok(out)
}

/// 1 where query i may see key j, broadcastable to [B, H, T, S]; None when all may.
/// Query i sits at absolute position `S − T + i`.
fn allowed(
    g: &mut Graph,
    mask: MaskKind,
    key_mask: Option<NodeId>,
    batch: &Dim,
    t: &Dim,
    s: &Dim,
) -> Option<NodeId> {
    let positional = match mask {
        MaskKind::Bidirectional => None,
        MaskKind::Causal | MaskKind::Sliding(_) => {
            let grid = vec![t.clone(), s.clone()];
            let i = g.iota(grid.clone(), 0);
            let j = g.iota(grid, 1);
            let pos = if t == s {
                i
            } else if let (Some(tc), Some(sc)) = (t.as_const(), s.as_const()) {
                g.scale_add(i, 1.0, sc as f64 - tc as f64)
            } else {
                let (sn, tn) = (dim_size(g, s), dim_size(g, t));
                let offset = g.sub(sn, tn);
                g.add(i, offset)
            };
            let seen = g.binary(BinaryOp::Le, j, pos);
            Some(match mask {
                MaskKind::Sliding(w) => {
                    let oldest = g.scale_add(pos, 1.0, -(w as f64));
                    let recent = g.binary(BinaryOp::Lt, oldest, j);
                    g.mul(seen, recent)
                }
                _ => seen,
            })
        }
    };
    let keys = key_mask.map(|m| {
        let m = g.reshape(m, vec![batch.clone(), Dim::c(1), Dim::c(1), s.clone()]);
        let zero = g.constant(0.0);
        let dropped = g.binary(BinaryOp::Eq, m, zero);
        g.scale_add(dropped, -1.0, 1.0)
    });
    match (positional, keys) {
        (Some(a), Some(b)) => Some(g.mul(a, b)),
        (a, b) => a.or(b),
    }
}

/// Softmax over the last axis of the allowed logits; masked entries and rows with nothing
/// visible (or only −∞ logits) give 0.
fn masked_softmax(g: &mut Graph, logits: NodeId, allowed: Option<NodeId>) -> NodeId {
    let masked = g.constant(MASKED);
    let x = match allowed {
        Some(a) => g.select(a, logits, masked),
        None => logits,
    };
    let m = g.reduce(ReduceOp::Max, x, 3);
    let empty = g.constant(MASKED / 10.0);
    let empty = g.binary(BinaryOp::Lt, m, empty);
    let zero = g.constant(0.0);
    let m = g.select(empty, zero, m);
    let centred = g.sub(x, m);
    let e = g.unary(UnaryOp::Exp, centred);
    let z = g.reduce(ReduceOp::Sum, e, 3);
    let has_mass = g.binary(BinaryOp::Lt, zero, z);
    let one = g.constant(1.0);
    let z = g.select(has_mass, z, one);
    g.div(e, z)
}

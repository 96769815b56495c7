//! Logits + labels → training losses built into the graph: the one cross-entropy the
//! objectives share ([`cross_entropy`], Hugging Face's: `ignore_index` −100, mean over the
//! scored positions, optionally shifted for causal LMs), DPO's per-row log-likelihood
//! ([`sequence_logp`]) and [`add_lm_loss`], the causal-LM loss as the output `loss`.
//!
//! The log-softmax is stabilised by the row's max with its gradient stopped (as PyTorch's
//! fused log-softmax: the max shifts nothing), so the backward pass over the logits is one
//! elementwise map.

use crate::graph::{BinaryOp, DType, Dim, Graph, NodeId, ReduceOp, UnaryOp};

/// Hugging Face's `ignore_index`.
pub const IGNORE: i64 = -100;

/// Per position of `logits` [.., V]: log softmax(logits)[target] ([..]), and whether the
/// position is scored (1.0, else 0.0: its target is −100, or with `shift` it is the last
/// along axis 1). With `shift`, position t's target is `labels[t + 1]`.
fn target_logp(g: &mut Graph, logits: NodeId, labels: NodeId, shift: bool) -> (NodeId, NodeId) {
    let shape = g.shape(logits).clone();
    let rank = shape.len();
    let lead: Vec<Dim> = shape[..rank - 1].to_vec();
    let labels = if g.node(labels).dtype == DType::F32 {
        labels
    } else {
        g.cast(labels, DType::F32)
    };
    let (target, scored) = if shift {
        let next = g.shift(labels, 1, -1);
        let one = g.constant(1.0);
        let ones = g.broadcast(one, lead.clone());
        (next, Some(g.shift(ones, 1, -1)))
    } else {
        (labels, None)
    };
    let ignore = g.constant(IGNORE as f64);
    let ignored = g.binary(BinaryOp::Eq, target, ignore);
    let mut keep = g.scale_add(ignored, -1.0, 1.0);
    if let Some(s) = scored {
        keep = g.mul(s, keep);
    }
    let axis = rank - 1;
    let max = g.reduce(ReduceOp::Max, logits, axis);
    let max = g.unary(UnaryOp::StopGradient, max);
    let centred = g.sub(logits, max);
    let exp = g.unary(UnaryOp::Exp, centred);
    let total = g.reduce(ReduceOp::Sum, exp, axis);
    let lse = g.unary(UnaryOp::Log, total);
    let classes = g.iota(shape, axis);
    let mut tshape = lead.clone();
    tshape.push(Dim::c(1));
    let t = g.reshape(target, tshape);
    let one_hot = g.binary(BinaryOp::Eq, classes, t);
    let picked = g.mul(one_hot, centred);
    let picked = g.reduce(ReduceOp::Sum, picked, axis);
    let logp = g.sub(picked, lse);
    (g.reshape(logp, lead), keep)
}

/// Sums every axis of `x` to a scalar.
fn sum_all(g: &mut Graph, mut x: NodeId) -> NodeId {
    for a in (0..g.shape(x).len()).rev() {
        x = g.reduce(ReduceOp::Sum, x, a);
    }
    g.reshape(x, Vec::new())
}

/// The mean cross-entropy of `logits` [.., V] against integer `labels` [..] (−100
/// ignored), as `torch.nn.functional.cross_entropy` computes it; with `shift`, position
/// t of axis 1 is scored against label t + 1 and the last position is not scored
/// (Hugging Face's causal-LM loss). Returns the scalar.
pub fn cross_entropy(g: &mut Graph, logits: NodeId, labels: NodeId, shift: bool) -> NodeId {
    let shape = g.shape(logits).clone();
    let lshape = g.shape(labels).clone();
    let rank = shape.len();
    if rank < 2 || lshape.len() != rank - 1 || (shift && rank != 3) {
        let msg = format!(
            "cross-entropy takes logits [.., V] and labels [..]{}, got {shape:?} and {lshape:?}",
            if shift { " with a sequence axis" } else { "" }
        );
        g.error.get_or_insert(msg);
        return g.constant(0.0);
    }
    let (logp, keep) = target_logp(g, logits, labels, shift);
    let nll = g.mul(logp, keep);
    let total = sum_all(g, nll);
    let total = g.scale(total, -1.0);
    let count = sum_all(g, keep);
    g.div(total, count)
}

/// Each row's log-probability of its labelled tokens:
/// Σ_t log softmax(logits[t − 1])[labels[t]] over the positions whose label is not −100
/// (a response's log-likelihood, as DPO scores it). `logits` [B, T, V], `labels` [B, T]
/// → [B].
pub fn sequence_logp(g: &mut Graph, logits: NodeId, labels: NodeId) -> NodeId {
    let b = g.shape(logits).first().cloned().unwrap_or(Dim::c(1));
    let (logp, keep) = target_logp(g, logits, labels, true);
    let logp = g.mul(logp, keep);
    let s = g.reduce(ReduceOp::Sum, logp, 1);
    g.reshape(s, vec![b])
}

/// Appends Hugging Face's causal-LM loss (`ForCausalLMLoss` in
/// `transformers/loss/loss_utils.py`: position t predicts label t + 1, −100 ignored) of
/// `logits` [B, T, V] against `labels` [B, T] (i64 or f32 token ids), names it `loss` and
/// returns the scalar node.
pub fn add_lm_loss(g: &mut Graph, logits: NodeId, labels: NodeId) -> NodeId {
    if g.shape(logits).len() != 3 || g.shape(labels).len() != 2 {
        let msg = format!(
            "the LM loss takes logits [B, T, V] and labels [B, T], got {:?} and {:?}",
            g.shape(logits),
            g.shape(labels)
        );
        g.error.get_or_insert(msg);
    }
    let loss = cross_entropy(g, logits, labels, true);
    g.output("loss", loss);
    loss
}

/// The mean binary cross-entropy of `logits` against `targets` (0 or 1, any dtype) over
/// the positions where `weights` is 1 (all positions when `None`), as
/// `torch.nn.BCEWithLogitsLoss` over the active positions computes it:
/// softplus(x) − y·x, which is −y·log σ(x) − (1 − y)·log(1 − σ(x)). Returns the scalar.
pub fn binary_cross_entropy(
    g: &mut Graph,
    logits: NodeId,
    targets: NodeId,
    weights: Option<NodeId>,
) -> NodeId {
    let as_f32 = |g: &mut Graph, x: NodeId| {
        if g.node(x).dtype == DType::F32 {
            x
        } else {
            g.cast(x, DType::F32)
        }
    };
    if g.shape(logits) != g.shape(targets) {
        let msg = format!(
            "binary cross-entropy takes logits and targets of one shape, got {:?} and {:?}",
            g.shape(logits),
            g.shape(targets)
        );
        g.error.get_or_insert(msg);
        return g.constant(0.0);
    }
    let y = as_f32(g, targets);
    let sp = g.unary(UnaryOp::Softplus, logits);
    let yx = g.mul(y, logits);
    let l = g.sub(sp, yx);
    match weights {
        Some(w) => {
            let w = as_f32(g, w);
            let lw = g.mul(l, w);
            let total = sum_all(g, lw);
            let count = sum_all(g, w);
            g.div(total, count)
        }
        None => {
            let n: Option<u64> = g.shape(l).iter().map(|d| d.as_const()).product();
            let total = sum_all(g, l);
            match n {
                Some(n) => g.scale(total, 1.0 / n as f64),
                None => {
                    let one = g.constant(1.0);
                    let shape = g.shape(l).clone();
                    let ones = g.broadcast(one, shape);
                    let count = sum_all(g, ones);
                    g.div(total, count)
                }
            }
        }
    }
}

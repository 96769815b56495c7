//! Logits + labels → the training loss, built into the graph as a scalar output `loss`.
//!
//! [`add_lm_loss`] is Hugging Face's causal-LM loss (`ForCausalLMLoss` in
//! `transformers/loss/loss_utils.py`): position t predicts label t + 1, i.e. the mean
//! cross-entropy of `logits[:, :-1]` against `labels[:, 1:]`, positions whose label is
//! −100 ignored. The shift is a `shift` of the labels by −1 with the last position masked,
//! so the sequence length may stay symbolic.

use crate::graph::{BinaryOp, DType, Dim, Graph, NodeId, ReduceOp, UnaryOp};

/// Hugging Face's `ignore_index`.
const IGNORE: f64 = -100.0;

/// Appends the mean next-token cross-entropy of `logits` [B, T, V] against `labels` [B, T]
/// (i64 or f32 token ids) and names it `loss`; returns the scalar node.
pub fn add_lm_loss(g: &mut Graph, logits: NodeId, labels: NodeId) -> NodeId {
    let shape = g.shape(logits).clone();
    if shape.len() != 3 || g.shape(labels).len() != 2 {
        let msg = format!(
            "the LM loss takes logits [B, T, V] and labels [B, T], got {:?} and {:?}",
            shape,
            g.shape(labels)
        );
        g.error.get_or_insert(msg);
    }
    let (b, t) = (
        shape.first().cloned().unwrap_or(Dim::c(1)),
        shape.get(1).cloned().unwrap_or(Dim::c(1)),
    );
    let labels = if g.node(labels).dtype == DType::F32 {
        labels
    } else {
        g.cast(labels, DType::F32)
    };

    // Position t is scored against label t + 1; the last position has none.
    let next = g.shift(labels, 1, -1);
    let one = g.constant(1.0);
    let ones = g.broadcast(one, vec![b.clone(), t.clone()]);
    let has_next = g.shift(ones, 1, -1);
    let ignore = g.constant(IGNORE);
    let ignored = g.binary(BinaryOp::Eq, next, ignore);
    let counted = g.scale_add(ignored, -1.0, 1.0);
    let keep = g.mul(has_next, counted);

    // −log softmax(logits)[label] = logsumexp(logits) − logits[label], stabilised by the max.
    let max = g.reduce(ReduceOp::Max, logits, 2);
    let centred = g.sub(logits, max);
    let exp = g.unary(UnaryOp::Exp, centred);
    let total = g.reduce(ReduceOp::Sum, exp, 2);
    let lse = g.unary(UnaryOp::Log, total);
    let classes = g.iota(shape, 2);
    let target = g.reshape(next, vec![b.clone(), t.clone(), Dim::c(1)]);
    let one_hot = g.binary(BinaryOp::Eq, classes, target);
    let picked = g.mul(one_hot, centred);
    let picked = g.reduce(ReduceOp::Sum, picked, 2);
    let nll = g.sub(lse, picked);
    let nll = g.reshape(nll, vec![b, t]);
    let nll = g.mul(nll, keep);

    let sum = |g: &mut Graph, x: NodeId| {
        let s = g.reduce(ReduceOp::Sum, x, 1);
        g.reduce(ReduceOp::Sum, s, 0)
    };
    let total = sum(g, nll);
    let count = sum(g, keep);
    let mean = g.div(total, count);
    let loss = g.reshape(mean, Vec::new());
    g.output("loss", loss);
    loss
}

//! Test-time-training layers, x [B, T, d] → [B, T, d]: Sun et al., "Learning to (Learn at
//! Test Time): RNNs with Expressive Hidden States" (2024), as `TTTLinear` / `TTTMLP` of
//! ttt-lm-pytorch's `ttt.py` (commit cd831db) compute the sequence-modelling block.
//!
//! The hidden state is the weights of an inner model f (linear: `W1`, `b1`; mlp: `W1`, `b1`,
//! GELU-tanh, `W2`, `b2`), one per batch row and head. In the paper's order:
//! - views (§2.3): training input θ_K x, label θ_V x, test input θ_Q x (q, k, v projections
//!   split into heads; q and k rotated by the model's RoPE at the position inside the
//!   mini-batch, t mod b — ttt.py's `permute_qk`, half rotation, `undo_permute_qk` is
//!   `style = interleaved`);
//! - self-supervised loss ℓ(W; x) = ‖LN(f(θ_K x; W)) + θ_K x − θ_V x‖² with the per-head
//!   `ttt_norm` and the residual of f (§2.7; ttt.py's `ln_fused_l2_bwd` gives ∂ℓ/∂Z in
//!   closed form);
//! - learnable inner learning rate (§2.7): η_ij = token_idx_i · lr · σ(θ_lr,h x_j + b_h) / hd,
//!   token_idx_i = max(1/(i+1) + `token_idx`_i, 0);
//! - mini-batch gradient descent (§2.4) in the dual form (§2.5): within a mini-batch every
//!   gradient is taken at the mini-batch's initial W, token i sees tokens j ≤ i, and W moves by
//!   the last token's step at its end; the loop over mini-batches is one `scan` whose states
//!   are the inner weights;
//! - output z_t = θ_Q x + LN(f(θ_Q x; W_t)), then `post_norm` (a layernorm, eps 1e-6), the
//!   optional gate GELU-tanh(g x) ⊙ ·, and the output projection `o`.
//!
//! The sequence must be a whole number of mini-batches: a length that is not fails at run
//! time (`dimension seq/b is not a whole number`). ttt.py runs a trailing partial mini-batch
//! of r tokens with token_idx[..r] from the last state; since everything inside a mini-batch
//! is causal, that equals padding the sequence to a multiple of b, which needs a pad op that
//! the IR does not have for symbolic lengths yet.

use super::position::{apply_rope, rope_tables, StackPositions};
use super::Cx;
use crate::graph::{BinaryOp, DType, Dim, Graph, NodeId, ReduceOp, Shape, UnaryOp};
use arch_dsl::spec::{Rope, Ttt, TttInner};

/// ttt.py's epsilon for `ttt_norm` (`ln_fwd`, `ln_fused_l2_bwd`) and `post_norm`.
const EPS: f64 = 1e-6;

pub fn ttt(
    cx: &mut Cx,
    x: NodeId,
    prefix: &str,
    t: &Ttt,
    pos: &StackPositions,
) -> Result<NodeId, String> {
    let d = cx.spec.d_model;
    if t.heads == 0 || !d.is_multiple_of(t.heads) || t.mini_batch == 0 {
        return Err(format!(
            "{prefix}: ttt needs heads dividing d_model ({d}) and a mini_batch ≥ 1"
        ));
    }
    let (h, hd, b) = (t.heads, d / t.heads, t.mini_batch);
    if cx.step.is_some() {
        return ttt_step(cx, x, prefix, t, pos);
    }
    let shape = cx.g.shape(x).clone();
    let (batch, seq) = (shape[0].clone(), shape[1].clone());

    // Views: θ_Q x, θ_K x, θ_V x as [B, T/b, h, b, hd]; RoPE on q and k.
    let tables = pos.rope.map(|rope| rope_tables(cx, Dim::c(b), hd, rope));
    let mut views = Vec::new();
    for name in ["q", "k", "v"] {
        let y = cx.linear(x, &format!("{prefix}.{name}"));
        let mut y = mini_batches(cx, y, h, hd, b);
        if let (Some(tables), "q" | "k") = (&tables, name) {
            y = rope_in_mini_batch(cx, y, tables, h);
        }
        views.push(y);
    }

    let eta = inner_learning_rates(cx, x, prefix, t, hd);

    // The inner model's weights, per batch row, are the scan's states.
    let states = initial_weights(cx, prefix, t, &batch, hd);
    let norm = ttt_norm(cx, prefix, h, hd);
    let seqs = vec![views[0], views[1], views[2], eta];
    let body = mini_batch_step(&cx.g, &states, &seqs, &norm, t.inner)?;
    let outs = cx.g.scan(body, states, seqs, norm, false);
    let z = *outs.last().ok_or("ttt: the scan has no outputs")?;

    // [B, T/b, h, b, hd] → [B, T, d]
    let z = cx.g.permute(z, &[0, 1, 3, 2, 4]);
    let z = cx.g.reshape(z, vec![batch, seq, Dim::c(d)]);
    Ok(output(cx, x, z, prefix, t))
}

/// `post_norm`, the optional gate and the output projection of z [B, T, d].
fn output(cx: &mut Cx, x: NodeId, z: NodeId, prefix: &str, t: &Ttt) -> NodeId {
    let w = cx.param(&format!("{prefix}.post_norm.weight"));
    let bias = cx.param(&format!("{prefix}.post_norm.bias"));
    let (z_hat, _) = normalize(&mut cx.g, z);
    let z = cx.g.mul(z_hat, w);
    let mut z = cx.g.add(z, bias);
    if t.gate {
        let g = cx.linear(x, &format!("{prefix}.g"));
        let g = cx.g.unary(UnaryOp::GeluTanh, g);
        z = cx.g.mul(g, z);
    }
    cx.linear(z, &format!("{prefix}.o"))
}

/// One token per call (a step graph), as ttt.py decodes: token i of its mini-batch
/// (i = position mod b) takes its gradient at the mini-batch's initial weights W₀ and sees
/// W_i = W₀ − token_idx_i · G_i, where G_i = Σ_{j≤i} lr_j ∇_j accumulates the mini-batch's
/// learning-rate-weighted gradients — the dual form, one row at a time. After the last
/// token of a mini-batch W₀ moves to W_i and G restarts from zero. The session keeps, per
/// inner weight, G and D = W_param − W₀ (both start at zero, so no state starts from a
/// parameter).
fn ttt_step(
    cx: &mut Cx,
    x: NodeId,
    prefix: &str,
    t: &Ttt,
    pos: &StackPositions,
) -> Result<NodeId, String> {
    let d = cx.spec.d_model;
    let (h, hd, b) = (t.heads, d / t.heads, t.mini_batch);
    let shape = cx.g.shape(x).clone();
    if shape[1] != Dim::c(1) {
        return Err(format!("{prefix}: a ttt step takes one token per call"));
    }
    let batch = shape[0].clone();
    let positions = cx
        .step
        .as_ref()
        .map(|s| s.positions)
        .ok_or("ttt_step outside a step graph")?;
    // i = position mod b, f32 [B, 1].
    let over = cx.g.scale(positions, 1.0 / b as f64);
    let whole = cx.g.unary(UnaryOp::Floor, over);
    let whole = cx.g.scale(whole, -(b as f64));
    let i = cx.g.add(positions, whole);

    // Views [B, h, 1, hd]; q and k rotated at position i of the mini-batch.
    let tables = pos
        .rope
        .map(|rope| super::position::rope_tables_at(cx, i, hd, rope));
    let mut views = Vec::new();
    for name in ["q", "k", "v"] {
        let y = cx.linear(x, &format!("{prefix}.{name}"));
        let mut y =
            cx.g.reshape(y, vec![batch.clone(), Dim::c(1), Dim::c(h), Dim::c(hd)]);
        if let (Some(tables), "q" | "k") = (&tables, name) {
            y = super::position::apply_rope_seq_major(cx, y, tables);
        }
        views.push(cx.g.permute(y, &[0, 2, 1, 3]));
    }
    let (q, k, v) = (views[0], views[1], views[2]);

    // lr_j [B, h, 1, 1] and token_idx_i [B, 1, 1, 1].
    let w = cx.param(&format!("{prefix}.lr_weight"));
    let bias = cx.param(&format!("{prefix}.lr_bias"));
    let gate = cx.g.linear(x, w);
    let gate = cx.g.add(gate, bias);
    let gate = cx.g.unary(UnaryOp::Sigmoid, gate);
    let lr = cx.g.scale(gate, t.lr / hd as f64);
    let lr =
        cx.g.reshape(lr, vec![batch.clone(), Dim::c(h), Dim::c(1), Dim::c(1)]);
    let learned = cx.param(&format!("{prefix}.token_idx"));
    let at = cx.g.cast(i, DType::I64);
    let learned_i = cx.g.gather(learned, at);
    let one_more = cx.g.scale_add(i, 1.0, 1.0);
    let base = cx.g.unary(UnaryOp::Recip, one_more);
    let token_idx = cx.g.add(base, learned_i);
    let zero = cx.g.constant(0.0);
    let token_idx = cx.g.binary(BinaryOp::Max, token_idx, zero);
    let unit = vec![batch.clone(), Dim::c(1), Dim::c(1), Dim::c(1)];
    let token_idx = cx.g.reshape(token_idx, unit.clone());
    // 1 at the last token of a mini-batch.
    let last = cx.g.constant((b - 1) as f64);
    let end = cx.g.binary(BinaryOp::Eq, i, last);
    let end = cx.g.reshape(end, unit);

    let norm = ttt_norm(cx, prefix, h, hd);
    let (gamma, beta) = (norm[0], norm[1]);

    // W₀ = W_param − D per inner weight, with its state names.
    let params = initial_weights(cx, prefix, t, &batch, hd);
    let names = match t.inner {
        TttInner::Linear => vec!["W1", "b1"],
        TttInner::Mlp => vec!["W1", "b1", "W2", "b2"],
    };
    let mut w0 = Vec::new();
    let mut acc = Vec::new();
    for (&p, name) in params.iter().zip(&names) {
        let s = cx.g.shape(p).clone();
        let (delta, dn) = cx.state_input(&format!("{prefix}.{name}_delta"), s.clone(), 0.0);
        let (grads, gn) = cx.state_input(&format!("{prefix}.{name}_grad"), s, 0.0);
        w0.push((cx.g.sub(p, delta), delta, dn));
        acc.push((grads, gn));
    }

    // Gradients at W₀ of this token (ttt.py's closed forms), layer by layer: (input, ∂z).
    let target = cx.g.sub(v, k);
    let g = &mut cx.g;
    let z1 = affine(g, k, w0[0].0, w0[1].0);
    let layer_grads = match t.inner {
        TttInner::Linear => vec![(k, ln_l2_grad(g, z1, target, gamma, beta))],
        TttInner::Mlp => {
            let x2 = g.unary(UnaryOp::GeluTanh, z1);
            let z2 = affine(g, x2, w0[2].0, w0[3].0);
            let grad2 = ln_l2_grad(g, z2, target, gamma, beta);
            let back = g.matmul(grad2, w0[2].0, true);
            let slope = gelu_tanh_slope(g, z1);
            let grad1 = g.mul(back, slope);
            vec![(k, grad1), (x2, grad2)]
        }
    };
    // G += lr · ∇ for W (xᵀ ∂z) and b (∂z); W_i = W₀ − token_idx · G.
    let mut current = Vec::new();
    for (l, (input, grad)) in layer_grads.into_iter().enumerate() {
        let xt = g.permute(input, &[0, 1, 3, 2]);
        let dw = g.matmul(xt, grad, false);
        for (j, step) in [dw, grad].into_iter().enumerate() {
            let s = 2 * l + j;
            let step = g.mul(lr, step);
            let total = g.add(acc[s].0, step);
            let moved = g.mul(token_idx, total);
            current.push(g.sub(w0[s].0, moved));
            acc[s].0 = total;
        }
    }
    // The test view through W_i.
    let z = match t.inner {
        TttInner::Linear => affine(g, q, current[0], current[1]),
        TttInner::Mlp => {
            let h1 = affine(g, q, current[0], current[1]);
            let h1 = g.unary(UnaryOp::GeluTanh, h1);
            affine(g, h1, current[2], current[3])
        }
    };
    let (z_hat, _) = normalize(g, z);
    let z = g.mul(z_hat, gamma);
    let z = g.add(z, beta);
    let out = g.add(q, z);

    // End of a mini-batch: W₀ ← W_i (D grows by token_idx · G), G ← 0.
    let keep = g.scale_add(end, -1.0, 1.0);
    let mut updates = Vec::new();
    for s in 0..names.len() {
        let (_, delta, dn) = &w0[s];
        let (total, gn) = &acc[s];
        let moved = g.mul(token_idx, *total);
        let moved = g.mul(end, moved);
        updates.push((dn.clone(), g.add(*delta, moved)));
        updates.push((gn.clone(), g.mul(keep, *total)));
    }
    for (name, value) in updates {
        cx.state_output(&name, value);
    }

    // [B, h, 1, hd] → [B, 1, d]
    let z = cx.g.permute(out, &[0, 2, 1, 3]);
    let z = cx.g.reshape(z, vec![batch, Dim::c(1), Dim::c(d)]);
    Ok(output(cx, x, z, prefix, t))
}

/// The per-head `ttt_norm` weight and bias, [h, 1, hd] each.
fn ttt_norm(cx: &mut Cx, prefix: &str, h: u64, hd: u64) -> Vec<NodeId> {
    ["ttt_norm_weight", "ttt_norm_bias"]
        .iter()
        .map(|name| {
            let p = cx.param(&format!("{prefix}.{name}"));
            cx.g.reshape(p, vec![Dim::c(h), Dim::c(1), Dim::c(hd)])
        })
        .collect()
}

/// W1, b1 (and W2, b2) broadcast over the batch: [B, h, in, out] and [B, h, 1, out].
fn initial_weights(cx: &mut Cx, prefix: &str, t: &Ttt, batch: &Dim, hd: u64) -> Vec<NodeId> {
    let h = t.heads;
    let f = match t.inner {
        TttInner::Linear => hd,
        TttInner::Mlp => 4 * hd,
    };
    let mut layers = vec![("W1", "b1", hd, f)];
    if t.inner == TttInner::Mlp {
        layers.push(("W2", "b2", f, hd));
    }
    let mut states = Vec::new();
    for (w, bias, rows, cols) in layers {
        let w = cx.param(&format!("{prefix}.{w}"));
        let shape = vec![batch.clone(), Dim::c(h), Dim::c(rows), Dim::c(cols)];
        states.push(cx.g.broadcast(w, shape));
        let bias = cx.param(&format!("{prefix}.{bias}"));
        let bias = cx.g.reshape(bias, vec![Dim::c(h), Dim::c(1), Dim::c(cols)]);
        let shape = vec![batch.clone(), Dim::c(h), Dim::c(1), Dim::c(cols)];
        states.push(cx.g.broadcast(bias, shape));
    }
    states
}

/// [B, T, h·hd] → [B, T/b, h, b, hd]
fn mini_batches(cx: &mut Cx, y: NodeId, h: u64, hd: u64, b: u64) -> NodeId {
    let s = cx.g.shape(y).clone();
    let split = cx.g.reshape(
        y,
        vec![
            s[0].clone(),
            s[1].div_by(b),
            Dim::c(b),
            Dim::c(h),
            Dim::c(hd),
        ],
    );
    cx.g.permute(split, &[0, 1, 3, 2, 4])
}

/// RoPE on y [B, T/b, h, b, hd], viewed as [B, T/b·h, b, hd] so that the rotation's position
/// axis is the position inside the mini-batch.
fn rope_in_mini_batch(cx: &mut Cx, y: NodeId, tables: &(NodeId, NodeId, Rope), h: u64) -> NodeId {
    let s = cx.g.shape(y).clone();
    let rows = s[1].mul(&Dim::c(h));
    let flat =
        cx.g.reshape(y, vec![s[0].clone(), rows, s[3].clone(), s[4].clone()]);
    let rotated = apply_rope(cx, flat, tables);
    cx.g.reshape(rotated, s)
}

/// η [B, T/b, h, b, b]: η_ij = token_idx_i · lr · σ(θ_lr,h x_j + b_h) / hd for j ≤ i, else 0
/// (ttt.py's `get_eta`, with the `tril` the dual form applies folded in).
fn inner_learning_rates(cx: &mut Cx, x: NodeId, prefix: &str, t: &Ttt, hd: u64) -> NodeId {
    let (h, b) = (t.heads, t.mini_batch);
    let s = cx.g.shape(x).clone();
    let w = cx.param(&format!("{prefix}.lr_weight"));
    let bias = cx.param(&format!("{prefix}.lr_bias"));
    let gate = cx.g.linear(x, w);
    let gate = cx.g.add(gate, bias);
    let gate = cx.g.unary(UnaryOp::Sigmoid, gate);
    let lr = cx.g.scale(gate, t.lr / hd as f64);
    let lr =
        cx.g.reshape(lr, vec![s[0].clone(), s[1].div_by(b), Dim::c(b), Dim::c(h)]);
    let lr = cx.g.permute(lr, &[0, 1, 3, 2]);
    let mut row = cx.g.shape(lr).clone();
    row.insert(3, Dim::c(1));
    let lr = cx.g.reshape(lr, row);

    let i = cx.g.iota(vec![Dim::c(b)], 0);
    let i = cx.g.scale_add(i, 1.0, 1.0);
    let base = cx.g.unary(UnaryOp::Recip, i);
    let learned = cx.param(&format!("{prefix}.token_idx"));
    let token_idx = cx.g.add(base, learned);
    let zero = cx.g.constant(0.0);
    let token_idx = cx.g.binary(BinaryOp::Max, token_idx, zero);
    let token_idx = cx.g.reshape(token_idx, vec![Dim::c(b), Dim::c(1)]);

    let eta = cx.g.mul(token_idx, lr);
    let causal = lower_triangle(&mut cx.g, b);
    cx.g.mul(eta, causal)
}

/// [b, b] with 1 where column ≤ row.
fn lower_triangle(g: &mut Graph, b: u64) -> NodeId {
    let shape = vec![Dim::c(b), Dim::c(b)];
    let row = g.iota(shape.clone(), 0);
    let col = g.iota(shape, 1);
    g.binary(BinaryOp::Le, col, row)
}

/// The scan body: one mini-batch of every batch row and head. Inputs: the inner weights
/// (W1, b1[, W2, b2]), the step's q, k, v [B, h, b, hd] and η [B, h, b, b], then the
/// `ttt_norm` weight and bias [h, 1, hd]; outputs: the updated weights, then z [B, h, b, hd].
fn mini_batch_step(
    outer: &Graph,
    states: &[NodeId],
    seqs: &[NodeId],
    consts: &[NodeId],
    inner: TttInner,
) -> Result<Graph, String> {
    let mut g = Graph::new("ttt_mini_batch");
    let mut input = |id: NodeId, drop_axis: bool, name: &str| {
        let mut s: Shape = outer.shape(id).clone();
        if drop_axis {
            s.remove(1);
        }
        g.input(name, s, DType::F32)
    };
    let w: Vec<NodeId> = states
        .iter()
        .enumerate()
        .map(|(i, &s)| input(s, false, &format!("state{i}")))
        .collect();
    let (q, k, v, eta) = (
        input(seqs[0], true, "q"),
        input(seqs[1], true, "k"),
        input(seqs[2], true, "v"),
        input(seqs[3], true, "eta"),
    );
    let (gamma, beta) = (
        input(consts[0], false, "ttt_norm_weight"),
        input(consts[1], false, "ttt_norm_bias"),
    );

    // The reconstruction target of f's non-residual part: θ_V x − θ_K x.
    let target = g.sub(v, k);
    // η of the mini-batch's last token, as a column [B, h, b, 1]: the end-of-batch step.
    let b = g.shape(eta)[2].as_const().unwrap_or(1);
    let last = g.slice(eta, 2, b - 1, 1);
    let last = g.permute(last, &[0, 1, 3, 2]);

    let (z, updated) = match inner {
        TttInner::Linear => {
            let z1 = affine(&mut g, k, w[0], w[1]);
            let grad1 = ln_l2_grad(&mut g, z1, target, gamma, beta);
            let (z1_bar, w1, b1) = dual_form(&mut g, k, q, w[0], w[1], grad1, eta, last);
            (z1_bar, vec![w1, b1])
        }
        TttInner::Mlp => {
            let z1 = affine(&mut g, k, w[0], w[1]);
            let x2 = g.unary(UnaryOp::GeluTanh, z1);
            let z2 = affine(&mut g, x2, w[2], w[3]);
            let grad2 = ln_l2_grad(&mut g, z2, target, gamma, beta);
            let back = g.matmul(grad2, w[2], true);
            let slope = gelu_tanh_slope(&mut g, z1);
            let grad1 = g.mul(back, slope);
            let (z1_bar, w1, b1) = dual_form(&mut g, k, q, w[0], w[1], grad1, eta, last);
            let x2_bar = g.unary(UnaryOp::GeluTanh, z1_bar);
            let (z2_bar, w2, b2) = dual_form(&mut g, x2, x2_bar, w[2], w[3], grad2, eta, last);
            (z2_bar, vec![w1, b1, w2, b2])
        }
    };
    // z = θ_Q x + LN(f(θ_Q x; W)).
    let (z_hat, _) = normalize(&mut g, z);
    let z = g.mul(z_hat, gamma);
    let z = g.add(z, beta);
    let out = g.add(q, z);
    for (i, s) in updated.into_iter().enumerate() {
        g.output(&format!("state{i}"), s);
    }
    g.output("z", out);
    g.finish()
}

/// x @ W + b
fn affine(g: &mut Graph, x: NodeId, w: NodeId, b: NodeId) -> NodeId {
    let y = g.matmul(x, w, false);
    g.add(y, b)
}

/// One layer of the inner model over a mini-batch in the dual form: with every gradient
/// ∇_j = x_jᵀ grad_j taken at the initial W, token i's layer output under
/// W_i = W − Σ_{j≤i} η_ij ∇_j (and b_i = b − Σ_{j≤i} η_ij grad_j) is
/// x̄_i W − Σ_j η_ij (x̄_i · x_j) grad_j + b_i, without forming any W_i; the weights carried
/// to the next mini-batch are the last token's. Returns (outputs, W', b').
#[allow(clippy::too_many_arguments)]
fn dual_form(
    g: &mut Graph,
    x: NodeId,
    x_bar: NodeId,
    w: NodeId,
    b: NodeId,
    grad: NodeId,
    eta: NodeId,
    last: NodeId,
) -> (NodeId, NodeId, NodeId) {
    let scores = g.matmul(x_bar, x, true);
    let attn = g.mul(eta, scores);
    let step_b = g.matmul(eta, grad, false);
    let b_bar = g.sub(b, step_b);
    let xw = g.matmul(x_bar, w, false);
    let step = g.matmul(attn, grad, false);
    let z = g.sub(xw, step);
    let z = g.add(z, b_bar);

    let scaled_x = g.mul(last, x);
    let scaled_xt = g.permute(scaled_x, &[0, 1, 3, 2]);
    let step_w = g.matmul(scaled_xt, grad, false);
    let w_next = g.sub(w, step_w);
    let scaled_grad = g.mul(last, grad);
    let step_b = g.reduce(ReduceOp::Sum, scaled_grad, 2);
    let b_next = g.sub(b, step_b);
    (z, w_next, b_next)
}

/// (x − mean) / std over the last axis, and std = sqrt(var + ε).
fn normalize(g: &mut Graph, x: NodeId) -> (NodeId, NodeId) {
    let last = g.shape(x).len() - 1;
    let mean = g.reduce(ReduceOp::Mean, x, last);
    let centred = g.sub(x, mean);
    let sq = g.unary(UnaryOp::Square, centred);
    let var = g.reduce(ReduceOp::Mean, sq, last);
    let var = g.scale_add(var, 1.0, EPS);
    let std = g.unary(UnaryOp::Sqrt, var);
    (g.div(centred, std), std)
}

/// ∂/∂z of ½‖γ·LN(z) + β − target‖² summed per token (ttt.py's `ln_fused_l2_bwd`):
/// with x̂ = LN(z) and g = (γ x̂ + β − target)·γ, (g − mean(g) − x̂·mean(g x̂)) / std.
fn ln_l2_grad(g: &mut Graph, z: NodeId, target: NodeId, gamma: NodeId, beta: NodeId) -> NodeId {
    let last = g.shape(z).len() - 1;
    let (z_hat, std) = normalize(g, z);
    let y = g.mul(z_hat, gamma);
    let y = g.add(y, beta);
    let err = g.sub(y, target);
    let grad_hat = g.mul(err, gamma);
    let mean_grad = g.reduce(ReduceOp::Mean, grad_hat, last);
    let along = g.mul(grad_hat, z_hat);
    let mean_along = g.reduce(ReduceOp::Mean, along, last);
    let proj = g.mul(z_hat, mean_along);
    let centred = g.sub(grad_hat, mean_grad);
    let centred = g.sub(centred, proj);
    g.div(centred, std)
}

/// d/dz GELU-tanh(z), with ttt.py's constants (`gelu_bwd`).
fn gelu_tanh_slope(g: &mut Graph, z: NodeId) -> NodeId {
    let z2 = g.unary(UnaryOp::Square, z);
    let inner = g.scale_add(z2, 0.044715, 1.0);
    let inner = g.mul(z, inner);
    let inner = g.scale(inner, 0.79788456);
    let th = g.unary(UnaryOp::Tanh, inner);
    let th2 = g.unary(UnaryOp::Square, th);
    let sech2 = g.scale_add(th2, -1.0, 1.0);
    let poly = g.scale_add(z2, 0.1070322243, 0.79788456);
    let a = g.mul(sech2, poly);
    let a = g.mul(z, a);
    let a = g.scale(a, 0.5);
    let b = g.scale_add(th, 0.5, 0.5);
    g.add(a, b)
}

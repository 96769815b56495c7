//! RWKV-4 block → graph: time mixing and channel mixing (Peng et al. 2023, "RWKV: Reinventing
//! RNNs for the Transformer Era", §3.1–3.2), matching Hugging Face `RwkvSelfAttention` and
//! `RwkvFeedForward` in eval mode, with the WKV recurrence of `rwkv_linear_attention_cpu`
//! (`modeling_rwkv.py`).
//!
//! Token shift x' = x_{t−1} (zero at t = 0) and, for each mixed input,
//! `x_m = μ_m ⊙ x + (1 − μ_m) ⊙ x'`. Time mixing (w = −exp(decay), u = first):
//!
//! ```text
//! r_t = W_r x_r,  k_t = W_k x_k,  v_t = W_v x_v
//! wkv_t = (Σ_{i<t} e^{(t−1−i)w + k_i} v_i + e^{u + k_t} v_t)
//!       / (Σ_{i<t} e^{(t−1−i)w + k_i}     + e^{u + k_t})
//! o_t = W_o (σ(r_t) ⊙ wkv_t)
//! ```
//!
//! The WKV sums are one `scan` over states (num, den, max) kept scaled by e^{−max} for
//! stability, exactly as the reference's loop (max starts at −1e38). Channel mixing:
//! `σ(W_r x_r) ⊙ W_v (max(W_k x_k, 0))²`.
//!
//! Hugging Face's `rescale_every` (halving the `output` and `value` weights every n layers at
//! inference, doubling the residual back) is not modelled: the spec language has no such
//! option, and the fixtures set `rescale_every = 0`. With a nonzero value, HF's hidden states
//! differ by those powers of two.

use super::Cx;
use crate::graph::{BinaryOp, DType, Dim, Graph, NodeId, UnaryOp};

/// The reference's initial running maximum: effectively −∞, but finite so `max − max` stays 0.
const MAX_INIT: f64 = -1e38;

pub fn time_mix(cx: &mut Cx, x: NodeId, prefix: &str) -> Result<NodeId, String> {
    let p = |s: &str| format!("{prefix}.{s}");
    let shifted = cx.token_shift(x, &p("shift"))?;
    let xk = token_mix(cx, x, shifted, &p("mix_k"));
    let xv = token_mix(cx, x, shifted, &p("mix_v"));
    let xr = token_mix(cx, x, shifted, &p("mix_r"));

    let k = cx.linear(xk, &p("key"));
    let v = cx.linear(xv, &p("value"));
    let r = cx.linear(xr, &p("receptance"));
    let r = cx.g.unary(UnaryOp::Sigmoid, r);

    // w = −exp(decay), u = first.
    let decay = cx.param(&p("decay"));
    let decay = cx.g.unary(UnaryOp::Exp, decay);
    let w = cx.g.unary(UnaryOp::Neg, decay);
    let u = cx.param(&p("first"));

    let state = super::step_shape(cx.g.shape(k));
    let (num0, num) = cx.initial_state(&p("num"), state.clone(), 0.0);
    let (den0, den) = cx.initial_state(&p("den"), state.clone(), 0.0);
    let (max0, max) = cx.initial_state(&p("max"), state, MAX_INIT as f32);
    let body = wkv_body(cx, k, w)?;
    let outs =
        cx.g.scan(body, vec![num0, den0, max0], vec![k, v], vec![w, u], false);
    cx.final_state(num, outs[0]);
    cx.final_state(den, outs[1]);
    cx.final_state(max, outs[2]);
    let wkv = outs[3];

    let gated = cx.g.mul(r, wkv);
    Ok(cx.linear(gated, &p("output")))
}

pub fn channel_mix(cx: &mut Cx, x: NodeId, prefix: &str) -> Result<NodeId, String> {
    let p = |s: &str| format!("{prefix}.{s}");
    let shifted = cx.token_shift(x, &p("shift"))?;
    let xk = token_mix(cx, x, shifted, &p("mix_k"));
    let xr = token_mix(cx, x, shifted, &p("mix_r"));

    let k = cx.linear(xk, &p("key"));
    let k = cx.g.unary(UnaryOp::Relu, k);
    let k = cx.g.unary(UnaryOp::Square, k);
    let v = cx.linear(k, &p("value"));
    let r = cx.linear(xr, &p("receptance"));
    let r = cx.g.unary(UnaryOp::Sigmoid, r);
    Ok(cx.g.mul(r, v))
}

/// `x·μ + x'·(1 − μ)` for the mix vector `μ` named `name`.
fn token_mix(cx: &mut Cx, x: NodeId, shifted: NodeId, name: &str) -> NodeId {
    let mix = cx.param(name);
    let keep = cx.g.mul(x, mix);
    let rest = cx.g.scale_add(mix, -1.0, 1.0);
    let carried = cx.g.mul(shifted, rest);
    cx.g.add(keep, carried)
}

/// Body: (num, den, max [B, d]; k, v [B, d]; w, u [d]) → (num', den', max', wkv [B, d]).
fn wkv_body(cx: &Cx, k: NodeId, w: NodeId) -> Result<Graph, String> {
    let step = super::step_shape(cx.g.shape(k));
    let width: Vec<Dim> = cx.g.shape(w).clone();
    let mut g = Graph::new("wkv");
    let num = g.input("num", step.clone(), DType::F32);
    let den = g.input("den", step.clone(), DType::F32);
    let max = g.input("max", step.clone(), DType::F32);
    let k = g.input("k", step.clone(), DType::F32);
    let v = g.input("v", step, DType::F32);
    let w = g.input("w", width.clone(), DType::F32);
    let u = g.input("u", width, DType::F32);

    // Output at t: the past (num, den) and the current token with bonus u.
    let uk = g.add(k, u);
    let (e1, e2, _) = rescale(&mut g, max, uk);
    let wkv_num = weighted(&mut g, e1, num, e2, Some(v));
    let wkv_den = weighted(&mut g, e1, den, e2, None);
    let wkv = g.div(wkv_num, wkv_den);

    // State update: decay the past by w, add the current token without the bonus.
    let decayed = g.add(max, w);
    let (e1, e2, max_next) = rescale(&mut g, decayed, k);
    let num_next = weighted(&mut g, e1, num, e2, Some(v));
    let den_next = weighted(&mut g, e1, den, e2, None);

    g.output("num", num_next);
    g.output("den", den_next);
    g.output("max", max_next);
    g.output("wkv", wkv);
    g.finish()
}

/// For exponents a, b: m = max(a, b), e^{a − m}, e^{b − m}.
fn rescale(g: &mut Graph, a: NodeId, b: NodeId) -> (NodeId, NodeId, NodeId) {
    let m = g.binary(BinaryOp::Max, a, b);
    let da = g.sub(a, m);
    let db = g.sub(b, m);
    (g.unary(UnaryOp::Exp, da), g.unary(UnaryOp::Exp, db), m)
}

/// `e1·acc + e2·v` (or `e1·acc + e2` without v).
fn weighted(g: &mut Graph, e1: NodeId, acc: NodeId, e2: NodeId, v: Option<NodeId>) -> NodeId {
    let past = g.mul(e1, acc);
    let new = match v {
        Some(v) => g.mul(e2, v),
        None => e2,
    };
    g.add(past, new)
}

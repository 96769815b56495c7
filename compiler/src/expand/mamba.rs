//! Mamba block → graph: the Mamba-1 selective-scan mixer (Gu & Dao 2023, "Mamba: Linear-Time
//! Sequence Modeling with Selective State Spaces", Algorithm 2), matching Hugging Face
//! `MambaMixer` on its torch path (`causal_conv1d_fn` and the recurrent loop of
//! `mamba_selective_scan` in `modeling_mamba.py`; the older releases' `slow_forward`).
//!
//! With di = expand·d, N = d_state, r = dt_rank, for x [B, T, d] (already normed):
//!
//! ```text
//! (u, z)  = in_proj(x)                          [B, T, di] each
//! u       = SiLU(conv1d_causal(u) + conv_bias)  depthwise, kernel d_conv
//! (δ, B, C) = x_proj(u)                         [B, T, r], [B, T, N], [B, T, N]
//! Δ       = softplus(dt_proj(δ) + dt_bias)      [B, T, di]
//! A       = −exp(A_log)                         [di, N]
//! h_t     = exp(Δ_t·A) ⊙ h_{t−1} + (Δ_t·B_t)·u_t,   h_0 = 0     [B, di, N]
//! y_t     = Σ_N h_t ⊙ C_t                       [B, di]
//! out     = out_proj((y + u·D) ⊙ SiLU(z))
//! ```
//!
//! The recurrence is one `scan` op; the causal convolution is a sum of `shift`s along the
//! sequence axis, each scaled by its per-channel tap.

use super::Cx;
use crate::graph::{DType, Dim, Graph, NodeId, ReduceOp, Shape, UnaryOp};
use arch_dsl::spec::Mamba;

pub fn mamba(cx: &mut Cx, x: NodeId, prefix: &str, m: &Mamba) -> Result<NodeId, String> {
    let di = m.expand * cx.spec.d_model;
    let (n, r) = (m.d_state, m.dt_rank);
    let p = |s: &str| format!("{prefix}.{s}");

    // Input projection, split into the SSM branch u and the gate z.
    let xz = cx.linear(x, &p("in_proj"));
    let u = cx.g.slice(xz, 2, 0, di);
    let z = cx.g.slice(xz, 2, di, di);

    // Causal depthwise convolution, then SiLU.
    let conv = causal_conv(cx, u, &p("conv"), di, m.d_conv);
    let u = cx.g.unary(UnaryOp::Silu, conv);

    // Input-dependent Δ, B, C.
    let dbc = cx.linear(u, &p("x_proj"));
    let dt = cx.g.slice(dbc, 2, 0, r);
    let b = cx.g.slice(dbc, 2, r, n);
    let c = cx.g.slice(dbc, 2, r + n, n);
    let dt = cx.linear(dt, &p("dt_proj"));
    let delta = cx.g.unary(UnaryOp::Softplus, dt);

    // A = −exp(A_log).
    let a_log = cx.param(&p("A_log"));
    let a_exp = cx.g.unary(UnaryOp::Exp, a_log);
    let a = cx.g.unary(UnaryOp::Neg, a_exp);

    // The selective scan: h_t = exp(Δ_t A) h_{t−1} + Δ_t B_t u_t, y_t = h_t · C_t.
    let batch = cx.g.shape(x)[0].clone();
    let (h0, h) = cx.initial_state(&p("ssm"), vec![batch, Dim::c(di), Dim::c(n)], 0.0);
    let body = selective_scan_body(cx, &[delta, b, c, u], a)?;
    let outs =
        cx.g.scan(body, vec![h0], vec![delta, b, c, u], vec![a], false);
    cx.final_state(h, outs[0]);
    let y = outs[1];

    // Skip connection D, gate, output projection.
    let d = cx.param(&p("D"));
    let skip = cx.g.mul(u, d);
    let y = cx.g.add(y, skip);
    let gate = cx.g.unary(UnaryOp::Silu, z);
    let y = cx.g.mul(y, gate);
    Ok(cx.linear(y, &p("out_proj")))
}

/// `conv1d(u, weight [di, 1, K], padding K − 1)[.., :T] + bias`, channels last:
/// out[t] = Σ_k w[k]·u[t − (K−1) + k], i.e. tap k reads u shifted by K − 1 − k.
///
/// In a step graph (one token per call) the K − 1 previous inputs are the session state
/// `{prefix}.state` [B, K − 1, di]: the window is that state followed by the new input,
/// and its last K − 1 rows are the next state.
fn causal_conv(cx: &mut Cx, u: NodeId, prefix: &str, di: u64, k: u64) -> NodeId {
    let w = cx.param(&format!("{prefix}.weight"));
    let window = match (&cx.step, k > 1) {
        (Some(_), true) => {
            let s = cx.g.shape(u).clone();
            let shape = vec![s[0].clone(), Dim::c(k - 1), Dim::c(di)];
            let (past, name) = cx.state_input(&format!("{prefix}.state"), shape, 0.0);
            let window = cx.g.concat(vec![past, u], 1);
            let next = cx.g.slice(window, 1, 1, k - 1);
            cx.state_output(&name, next);
            Some(window)
        }
        _ => None,
    };
    let mut acc: Option<NodeId> = None;
    for tap in 0..k {
        let wk = cx.g.slice(w, 2, tap, 1);
        let wk = cx.g.reshape(wk, vec![Dim::c(di)]);
        let lag = (k - 1 - tap) as i64;
        let shifted = match window {
            // Tap k reads u[t − (K − 1) + k]: row k of the window.
            Some(win) => cx.g.slice(win, 1, tap, 1),
            None if lag == 0 => u,
            None => cx.g.shift(u, 1, lag),
        };
        let term = cx.g.mul(shifted, wk);
        acc = Some(match acc {
            Some(sum) => cx.g.add(sum, term),
            None => term,
        });
    }
    let out = acc.unwrap_or(u);
    let bias = format!("{prefix}.bias");
    if cx.has_param(&bias) {
        let b = cx.param(&bias);
        cx.g.add(out, b)
    } else {
        out
    }
}

/// Body: (h [B, di, N]; Δ [B, di], B [B, N], C [B, N], u [B, di]; A [di, N]) → (h', y [B, di]).
fn selective_scan_body(cx: &Cx, seqs: &[NodeId], a: NodeId) -> Result<Graph, String> {
    let shapes: Vec<Shape> = seqs
        .iter()
        .map(|&s| super::step_shape(cx.g.shape(s)))
        .collect();
    let a_shape = cx.g.shape(a).clone();
    let (batch, di, n) = (shapes[0][0].clone(), a_shape[0].clone(), a_shape[1].clone());
    let mut g = Graph::new("selective_scan");
    let h = g.input("h", vec![batch.clone(), di.clone(), n.clone()], DType::F32);
    let delta = g.input("delta", shapes[0].clone(), DType::F32);
    let b = g.input("B", shapes[1].clone(), DType::F32);
    let c = g.input("C", shapes[2].clone(), DType::F32);
    let u = g.input("u", shapes[3].clone(), DType::F32);
    let a = g.input("A", a_shape, DType::F32);

    let delta = g.reshape(delta, vec![batch.clone(), di.clone(), Dim::c(1)]);
    let b = g.reshape(b, vec![batch.clone(), Dim::c(1), n.clone()]);
    let c = g.reshape(c, vec![batch.clone(), Dim::c(1), n]);
    let u = g.reshape(u, vec![batch.clone(), di.clone(), Dim::c(1)]);
    // Discretisation: Ā = exp(Δ·A), B̄u = (Δ·B)·u.
    let delta_a = g.mul(delta, a);
    let a_bar = g.unary(UnaryOp::Exp, delta_a);
    let b_bar = g.mul(delta, b);
    let b_bar_u = g.mul(b_bar, u);
    // h' = Ā·h + B̄u; y = Σ_N h'·C.
    let decayed = g.mul(a_bar, h);
    let h_next = g.add(decayed, b_bar_u);
    let hc = g.mul(h_next, c);
    let y = g.reduce(ReduceOp::Sum, hc, 2);
    let y = g.reshape(y, vec![batch, di]);
    g.output("h", h_next);
    g.output("y", y);
    g.finish()
}

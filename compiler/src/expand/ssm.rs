//! `ssm` sublayer → graph: the diagonal state space layer S4D of Gu, Gupta, Goel, Ré, "On the
//! Parameterization and Initialization of Diagonal State Space Models" (2022), matching
//! state-spaces/s4 `models/s4/s4d.py` (`S4D`, dropout off) on x [batch, seq, d] (already
//! normed) → [batch, seq, d].
//!
//! Per channel h and mode n (N/2 modes, each standing for a conjugate pair, hence the `2·Re`):
//! `A = −exp(log_A_real) + i·A_imag`, `dt = exp(log_dt)`, discretised to `(dA, dB)`:
//! ZOH `dA = exp(dt·A)`, `dB = (exp(dt·A) − 1) / A` (s4d.py); bilinear `dA = (1 + dt·A/2) /
//! (1 − dt·A/2)`, `dB = dt / (1 − dt·A/2)`. Then `y = K ∗ u + D·u` with the causal kernel
//! `K[h, l] = 2·Re Σₙ C·dB·dAˡ`, `GELU` (`act`), the kernel-size-1 output conv as a linear to
//! 2d, and a GLU over channels. Two forms of the same map:
//! - `ssm` (whole sequences): the [d, T, T] Toeplitz matrix of K, evaluated in closed form
//!   `exp(l·log dA)` on the grid `l = t − s` masked to `t ≥ s`, times u as a batched matmul
//!   (s4d.py uses an FFT; O(T²) is fine for the evaluator and keeps the graph elementwise).
//!   Like s4d.py's `exp(dtA·arange(L))` in f32, it rounds the phase `l·arg dA`, so its error
//!   grows with `l` where the recurrence's does not.
//! - `ssm_recurrent` (step by step): a `scan` over the sequence with the complex state
//!   [batch, d, N/2] as two real states, `x_t = dA·x_{t−1} + dB·u_t`, `y_t = 2·Re Σₙ C·x_t`.
//!
//! Complex numbers are (re, im) pairs of real nodes. `init` (s4d_lin, s4d_inv, legs) only
//! chooses initial values of A; the weights are loaded, so it does not enter the graph.

use super::{Cx, BATCH, SEQ};
use crate::graph::UnaryOp::{Cos, Exp, Log, Neg, Sin, Sqrt, Square};
use crate::graph::{BinaryOp, DType, Dim, Graph, NodeId, ReduceOp, Shape, UnaryOp};
use crate::params::sublayer_name;
use arch_dsl::spec::{
    self, ArchSpec, Discretization, Embed, Family, Layer, Norm, Placement, Position, Share, Ssm,
    Stack, Sublayer,
};

/// The conv form of the layer.
pub fn ssm(cx: &mut Cx, x: NodeId, prefix: &str, s: &Ssm) -> Result<NodeId, String> {
    let (pre, _) = convolution(cx, x, prefix, s)?;
    output(cx, pre, prefix, s)
}

/// The recurrent form of the layer: the same map as `ssm`, as a scan over the sequence
/// (what compiled packages use: linear in the sequence length).
pub fn ssm_recurrent(cx: &mut Cx, x: NodeId, prefix: &str, s: &Ssm) -> Result<NodeId, String> {
    let pre = recurrence(cx, x, prefix, s)?;
    output(cx, pre, prefix, s)
}

/// One `ssm` sublayer alone, for tests: input `x` [batch, seq, d_model], outputs `y` (the
/// layer), `pre_act` (`K ∗ u + D·u`, before the activation) and, in the conv form, `kernel`
/// [d, seq]. Parameters are named as in a one-layer decoder, `decoder.layers.0.ssm.*`.
pub fn ssm_layer_graph(d_model: u64, s: &Ssm, recurrent: bool) -> Result<Graph, String> {
    let sublayers = vec![Sublayer::Ssm(*s)];
    let prefix = format!("decoder.layers.0.{}", sublayer_name(&sublayers, 0));
    let spec = ArchSpec {
        name: "ssm_layer".into(),
        family: Family::DecoderOnly,
        vocab: 1,
        d_model,
        context: 1,
        dtype: spec::DType::F32,
        norm: Norm::LayerNorm {
            eps: 1e-5,
            bias: true,
        },
        placement: Placement::Pre,
        final_norm: false,
        position: Position::None,
        embed: Embed {
            tied: false,
            factorized: None,
            segments: 0,
            norm: false,
            scale: 1.0,
        },
        encoder: None,
        decoder: Some(Stack {
            share: Share::None,
            layers: vec![Layer {
                block: None,
                sublayers,
            }],
        }),
        heads: Vec::new(),
        objectives: Vec::new(),
    };
    let mut cx = Cx::new(&spec, if recurrent { "ssm_recurrent" } else { "ssm" });
    let x = cx.g.input(
        "x",
        vec![Dim::sym(BATCH), Dim::sym(SEQ), Dim::c(d_model)],
        DType::F32,
    );
    let pre = if recurrent {
        recurrence(&mut cx, x, &prefix, s)?
    } else {
        let (pre, toeplitz) = convolution(&mut cx, x, &prefix, s)?;
        // Column s = 0 of the Toeplitz matrix is K[h, t].
        let first = cx.g.slice(toeplitz, 2, 0, 1);
        let kernel = cx.g.reshape(first, vec![Dim::c(d_model), Dim::sym(SEQ)]);
        cx.g.output("kernel", kernel);
        pre
    };
    cx.g.output("pre_act", pre);
    let y = output(&mut cx, pre, &prefix, s)?;
    cx.g.output("y", y);
    cx.finish()
}

/// A complex tensor as two real nodes of the same shape.
#[derive(Clone, Copy)]
struct Complex {
    re: NodeId,
    im: NodeId,
}

fn complex(re: NodeId, im: NodeId) -> Complex {
    Complex { re, im }
}

impl Complex {
    /// The same real map on both parts (a reshape, a scale).
    fn map(self, g: &mut Graph, f: impl Fn(&mut Graph, NodeId) -> NodeId) -> Complex {
        complex(f(g, self.re), f(g, self.im))
    }
}

fn add(g: &mut Graph, a: Complex, b: Complex) -> Complex {
    complex(g.add(a.re, b.re), g.add(a.im, b.im))
}

fn mul(g: &mut Graph, a: Complex, b: Complex) -> Complex {
    let (rr, ii) = (g.mul(a.re, b.re), g.mul(a.im, b.im));
    let (ri, ir) = (g.mul(a.re, b.im), g.mul(a.im, b.re));
    complex(g.sub(rr, ii), g.add(ri, ir))
}

fn abs2(g: &mut Graph, z: Complex) -> NodeId {
    let (rr, ii) = (g.unary(Square, z.re), g.unary(Square, z.im));
    g.add(rr, ii)
}

/// `a / b = a·conj(b) / |b|²`
fn div(g: &mut Graph, a: Complex, b: Complex) -> Complex {
    let conj = complex(b.re, g.unary(Neg, b.im));
    let num = mul(g, a, conj);
    let den = abs2(g, b);
    complex(g.div(num.re, den), g.div(num.im, den))
}

fn exp(g: &mut Graph, z: Complex) -> Complex {
    let mag = g.unary(Exp, z.re);
    let (cos, sin) = (g.unary(Cos, z.im), g.unary(Sin, z.im));
    complex(g.mul(mag, cos), g.mul(mag, sin))
}

/// The principal logarithm `(ln|z|, arg z)`. There is no `atan` op: `tan(arg/2)` is
/// `im / (|z| + re)`, or `(|z| − re) / im` left of the imaginary axis where the first loses
/// precision; three halvings `tan(φ/2) = t / (1 + √(1 + t²))` bring |t| under 0.2, where the
/// arctangent series to t¹¹ is exact to 1e-10.
fn log(g: &mut Graph, z: Complex) -> Complex {
    let norm2 = abs2(g, z);
    let abs = g.unary(Sqrt, norm2);
    let zero = g.constant(0.0);
    let one = g.constant(1.0);
    let on_right = g.binary(BinaryOp::Le, zero, z.re);
    // Both branches are computed and one is selected, so the unused one must not divide by
    // zero either: its gradient is 0 · (1/0) = NaN otherwise. Each divides by 1 where unused.
    let right_den = g.add(abs, z.re);
    let right_den = g.select(on_right, right_den, one);
    let right = g.div(z.im, right_den);
    let left_num = g.sub(abs, z.re);
    // On the negative real axis (im = 0) a tiny divisor sends `left` to the clamp below
    // (arg = π) with finite values, so its gradient stays finite too.
    let im_zero = g.binary(BinaryOp::Eq, z.im, zero);
    let tiny = g.constant(1e-30);
    let safe_im = g.select(im_zero, tiny, z.im);
    let left_den = g.select(on_right, one, safe_im);
    let left = g.div(left_num, left_den);
    // On the negative real axis `left` is ±∞ (arg ±π): keep it finite for the halvings.
    let (big, small) = (g.constant(1e18), g.constant(-1e18));
    let left = g.binary(BinaryOp::Min, left, big);
    let left = g.binary(BinaryOp::Max, left, small);
    let mut t = g.select(on_right, right, left);
    for _ in 0..3 {
        let sq = g.unary(Square, t);
        let root = g.scale_add(sq, 1.0, 1.0);
        let root = g.unary(Sqrt, root);
        let den = g.scale_add(root, 1.0, 1.0);
        t = g.div(t, den);
    }
    // atan t = t·(1 − s/3 + s²/5 − … − s⁵/11), s = t², by Horner's rule.
    let s = g.unary(Square, t);
    let mut poly = g.scale_add(s, -1.0 / 11.0, 1.0 / 9.0);
    for (k, sign) in [(7.0, -1.0), (5.0, 1.0), (3.0, -1.0), (1.0, 1.0)] {
        let p = g.mul(poly, s);
        poly = g.scale_add(p, 1.0, sign / k);
    }
    let atan = g.mul(poly, t);
    let ln_norm2 = g.unary(Log, norm2);
    complex(g.scale(ln_norm2, 0.5), g.scale(atan, 16.0))
}

/// The discretised modes, each [d, N/2].
struct Modes {
    /// `dA`, for the recurrence.
    da: Complex,
    /// `log dA`, so that `dAˡ = exp(l·log dA)` in closed form.
    log_da: Complex,
    db: Complex,
    c: Complex,
}

fn modes(cx: &mut Cx, prefix: &str, s: &Ssm, d: u64) -> Modes {
    let mode = vec![Dim::c(d), Dim::c(s.d_state / 2)];
    let mut param = |n: &str| cx.param(&format!("{prefix}.{n}"));
    let (log_dt, log_a_real, a_imag, c) = (
        param("log_dt"),
        param("log_A_real"),
        param("A_imag"),
        param("C"),
    );
    let g = &mut cx.g;
    let dt = g.unary(Exp, log_dt);
    let dt = g.reshape(dt, vec![Dim::c(d), Dim::c(1)]);
    let a_real = g.unary(Exp, log_a_real);
    let a = complex(g.unary(Neg, a_real), a_imag);
    let part = |g: &mut Graph, i| {
        let sl = g.slice(c, 2, i, 1);
        g.reshape(sl, mode.clone())
    };
    let c = complex(part(g, 0), part(g, 1));
    let dta = a.map(g, |g, n| g.mul(n, dt));
    match s.discretization {
        Discretization::Zoh => {
            let da = exp(g, dta);
            let da_minus_one = complex(g.scale_add(da.re, 1.0, -1.0), da.im);
            let db = div(g, da_minus_one, a);
            Modes {
                da,
                log_da: dta,
                db,
                c,
            }
        }
        Discretization::Bilinear => {
            let half = dta.map(g, |g, n| g.scale(n, 0.5));
            let plus = complex(g.scale_add(half.re, 1.0, 1.0), half.im);
            let minus = complex(g.scale_add(half.re, -1.0, 1.0), g.unary(Neg, half.im));
            let da = div(g, plus, minus);
            let zero = g.constant(0.0);
            let db = div(g, complex(dt, zero), minus);
            let log_da = log(g, da);
            Modes { da, log_da, db, c }
        }
    }
}

/// `K ∗ u + D·u` [B, T, d] by the [d, T, T] Toeplitz matrix of K, which it also returns.
fn convolution(cx: &mut Cx, x: NodeId, prefix: &str, s: &Ssm) -> Result<(NodeId, NodeId), String> {
    let (_, t, d) = dims(cx, x, prefix)?;
    let md = modes(cx, prefix, s, d);
    let g = &mut cx.g;
    // l = t − s on the [T, T] grid, clamped at 0 so that dAˡ stays finite where masked.
    let rows = g.iota(vec![t.clone(), t.clone()], 0);
    let cols = g.iota(vec![t.clone(), t.clone()], 1);
    let causal = g.binary(BinaryOp::Le, cols, rows);
    let lag = g.sub(rows, cols);
    let zero = g.constant(0.0);
    let lag = g.binary(BinaryOp::Max, lag, zero);
    // Modes [d, N/2, 1, 1] against lags [T, T].
    let grid = vec![Dim::c(d), Dim::c(s.d_state / 2), Dim::c(1), Dim::c(1)];
    let exponent = md.log_da.map(g, |g, n| {
        let n = g.reshape(n, grid.clone());
        g.mul(lag, n)
    });
    let power = exp(g, exponent);
    let cb = mul(g, md.c, md.db).map(g, |g, n| g.reshape(n, grid.clone()));
    let terms = mul(g, cb, power);
    let sum = g.reduce(ReduceOp::Sum, terms.re, 1);
    let sum = g.reshape(sum, vec![Dim::c(d), t.clone(), t]);
    let k = g.scale(sum, 2.0);
    let toeplitz = g.select(causal, k, zero);
    // [d, T, T] @ [d, T, B] → [d, T, B]
    let u = g.permute(x, &[2, 1, 0]);
    let y = g.matmul(toeplitz, u, false);
    let y = g.permute(y, &[2, 1, 0]);
    Ok((skip(cx, y, x, prefix), toeplitz))
}

/// `K ∗ u + D·u` [B, T, d] by a scan: `x_t = dA·x_{t−1} + dB·u_t`, `y_t = 2·Re Σₙ C·x_t`.
fn recurrence(cx: &mut Cx, x: NodeId, prefix: &str, s: &Ssm) -> Result<NodeId, String> {
    let (b, _, d) = dims(cx, x, prefix)?;
    let md = modes(cx, prefix, s, d);
    let (d, m) = (Dim::c(d), Dim::c(s.d_state / 2));
    let state = vec![b.clone(), d.clone(), m.clone()];
    let mode = vec![d.clone(), m];
    // Body inputs: the states, the step of u [B, d], then the modes as scan constants.
    let mut body = Graph::new("ssm_step");
    let mut input = |name: &str, shape: &Shape| body.input(name, shape.clone(), DType::F32);
    let prev = complex(input("x_re", &state), input("x_im", &state));
    let u = input("u", &vec![b.clone(), d.clone()]);
    let da = complex(input("dA_re", &mode), input("dA_im", &mode));
    let db = complex(input("dB_re", &mode), input("dB_im", &mode));
    let c = complex(input("C_re", &mode), input("C_im", &mode));
    let g = &mut body;
    let u = g.reshape(u, vec![b.clone(), d.clone(), Dim::c(1)]);
    let decayed = mul(g, da, prev);
    let driven = db.map(g, |g, n| g.mul(n, u));
    let next = add(g, decayed, driven);
    let out = mul(g, c, next);
    let y = g.reduce(ReduceOp::Sum, out.re, 2);
    let y = g.reshape(y, vec![b, d]);
    let y = g.scale(y, 2.0);
    body.output("x_re", next.re);
    body.output("x_im", next.im);
    body.output("y", y);
    let body = body.finish()?;

    let (re0, re) = cx.initial_state(&format!("{prefix}.state_re"), state.clone(), 0.0);
    let (im0, im) = cx.initial_state(&format!("{prefix}.state_im"), state, 0.0);
    let consts = vec![md.da.re, md.da.im, md.db.re, md.db.im, md.c.re, md.c.im];
    let outs = cx.g.scan(body, vec![re0, im0], vec![x], consts, false);
    cx.final_state(re, outs[0]);
    cx.final_state(im, outs[1]);
    Ok(skip(cx, outs[2], x, prefix))
}

/// Batch, sequence and (constant) width of a [B, T, d] input.
fn dims(cx: &Cx, x: NodeId, prefix: &str) -> Result<(Dim, Dim, u64), String> {
    match cx.g.shape(x).as_slice() {
        [b, t, d] => Ok((
            b.clone(),
            t.clone(),
            d.as_const()
                .ok_or_else(|| format!("{prefix}: the ssm width {d} is not a constant"))?,
        )),
        other => Err(format!(
            "{prefix}: the ssm takes [batch, seq, d], got {other:?}"
        )),
    }
}

/// `y + D·u`
fn skip(cx: &mut Cx, y: NodeId, u: NodeId, prefix: &str) -> NodeId {
    let dd = cx.param(&format!("{prefix}.D"));
    let du = cx.g.mul(u, dd);
    cx.g.add(y, du)
}

/// `act`, the kernel-size-1 output conv as a linear to 2d, and the GLU over channels.
fn output(cx: &mut Cx, pre: NodeId, prefix: &str, s: &Ssm) -> Result<NodeId, String> {
    let (_, _, d) = dims(cx, pre, prefix)?;
    let h = cx.act(s.act, pre);
    let wide = cx.linear(h, &format!("{prefix}.out"));
    let value = cx.g.slice(wide, 2, 0, d);
    let gate = cx.g.slice(wide, 2, d, d);
    let gate = cx.g.unary(UnaryOp::Sigmoid, gate);
    Ok(cx.g.mul(value, gate))
}

//! Forward FLOPs per token at sequence length T.
//!
//! A matrix multiply costs 2 FLOPs per weight per token (multiply + add); norms, biases,
//! activations, residual adds and table lookups are left out, as in Kaplan et al.'s `2N`.
//! Every layer is counted, shared ones (`share = all`) included: sharing saves weights, not
//! compute. Tied output matrices are counted: the multiply happens either way.
//!
//! - attention: `4·T_eff·heads·head_dim` for QKᵀ and AV, where T_eff is the mean number of keys
//!   a query sees: causal (T+1)/2, bidirectional T, sliding the mean of min(i, window).
//! - cross_attention: T encoder keys. An encoder-decoder "token" is one source token plus one
//!   target token, so the k/v projections of the encoder output are counted once per token.
//! - mamba: conv `2·d_inner·d_conv`, selective scan `9·d_inner·d_state` (the Mamba paper's
//!   count: discretize, update the state, read it out).
//! - time_mix: WKV recurrence `10·d` (a few exps, multiplies and adds per channel).
//! - ssm: recurrent view, `8·d·d_state` (d_state/2 complex modes, a complex multiply-add of
//!   the state and a complex output product each), whatever the convolution path costs.
//! - ttt: the inner model is read three times per token (forward on K, gradient, forward on
//!   Q): `6 × inner weights`, plus the mini-batch dual form's attention-like
//!   `4·((b+1)/2)·d`, plus the per-head learning-rate gate `2·heads·d`.
//! - pooler and classifier run on one token per sequence: their cost is divided by T.
//!
//! Everything is computed in `f64` from the start (no `u64` products), so an absurd spec gives
//! a large finite count rather than an overflow; the counts are exact integers below 2^53.

use crate::spec::{ArchSpec, Head, Layer, Mask, Sublayer, Ttt, TttInner};

use super::params;

pub(crate) fn per_token(spec: &ArchSpec, t: u64) -> f64 {
    let layers: f64 = spec
        .stacks()
        .flat_map(|(_, s)| &s.layers)
        .map(|l| layer(spec.d_model, l, t))
        .sum();
    embedding(spec) + layers + spec.heads.iter().map(|h| head(spec, h, t)).sum::<f64>()
}

fn embedding(spec: &ArchSpec) -> f64 {
    match spec.embed.factorized {
        Some(e) if e != spec.d_model => mm(e as f64 * spec.d_model as f64),
        _ => 0.0,
    }
}

fn layer(d: u64, l: &Layer, t: u64) -> f64 {
    l.sublayers.iter().map(|s| sublayer(d, s, t)).sum()
}

/// 2 FLOPs per weight.
fn mm(weights: f64) -> f64 {
    2.0 * weights
}

fn sublayer(d: u64, s: &Sublayer, t: u64) -> f64 {
    let df = d as f64;
    match s {
        Sublayer::Attention(a) => {
            let width = a.heads as f64 * a.head_dim as f64;
            let kv = a.kv_heads as f64 * a.head_dim as f64;
            mm(2.0 * df * width + 2.0 * df * kv) + 4.0 * keys_seen(a.mask, t) * width
        }
        Sublayer::CrossAttention(a) => {
            let width = a.heads as f64 * a.head_dim as f64;
            let kv = a.kv_heads as f64 * a.head_dim as f64;
            mm(2.0 * df * width + 2.0 * df * kv) + 4.0 * t as f64 * width
        }
        Sublayer::Mlp(m) => {
            let mats = if m.act.is_gated() { 3.0 } else { 2.0 };
            mm(mats * df * m.hidden as f64)
        }
        Sublayer::Mamba(m) => {
            let di = m.expand as f64 * df;
            let (rank, n) = (m.dt_rank as f64, m.d_state as f64);
            // in_proj, x_proj, dt_proj, out_proj (`params::mamba_matmul`).
            let matmul = df * 2.0 * di + di * (rank + 2.0 * n) + rank * di + di * df;
            let scan = 9.0 * di * n;
            mm(matmul) + 2.0 * di * m.d_conv as f64 + scan
        }
        Sublayer::TimeMix(_) => mm(4.0 * df * df) + 10.0 * df,
        Sublayer::ChannelMix(c) => mm(2.0 * df * c.hidden as f64 + df * df),
        Sublayer::Ssm(s) => mm(2.0 * df * df) + 8.0 * df * s.d_state as f64,
        Sublayer::Ttt(tt) => {
            let projections = if tt.gate { 5.0 } else { 4.0 } * df * df;
            let inner = 3.0 * mm(ttt_inner(df, tt, params::ttt_head_dim(d, tt)));
            let dual = 4.0 * (tt.mini_batch as f64 + 1.0) / 2.0 * df;
            mm(projections) + inner + dual + mm(tt.heads as f64 * df)
        }
    }
}

/// `params::ttt_inner` in floating point.
fn ttt_inner(d: f64, t: &Ttt, head_dim: u64) -> f64 {
    let hd = head_dim as f64;
    match t.inner {
        TttInner::Linear => d * hd + d,
        TttInner::Mlp => 8.0 * d * hd + 5.0 * d,
    }
}

/// The mean number of keys a query attends to in a sequence of `t` tokens (0 when `t = 0`).
fn keys_seen(mask: Mask, t: u64) -> f64 {
    let tf = t as f64;
    match mask {
        _ if t == 0 => 0.0,
        Mask::Bidirectional => tf,
        Mask::Causal => (tf + 1.0) / 2.0,
        Mask::Sliding { window } if window >= t => (tf + 1.0) / 2.0,
        Mask::Sliding { window } => {
            // Queries 1..=w see i keys, the remaining t-w see w.
            let w = window as f64;
            (w * (w + 1.0) / 2.0 + (tf - w) * w) / tf
        }
    }
}

fn head(spec: &ArchSpec, h: &Head, t: u64) -> f64 {
    let (v, d, e) = (
        spec.vocab as f64,
        spec.d_model as f64,
        spec.embed_width() as f64,
    );
    match *h {
        Head::Lm { .. } => mm(v * d),
        Head::MaskedLm => mm(d * e + v * e),
        // Once per sequence: the first token through the pooler, then the logits.
        Head::Classifier { labels, pooler } => {
            let pool = if pooler { d * d } else { 0.0 };
            mm(pool + labels as f64 * d) / t.max(1) as f64
        }
        Head::Discriminator => mm(d * d + d),
    }
}

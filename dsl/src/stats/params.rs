//! Parameter counts, tensor for tensor as the Hugging Face / reference modules build them.
//!
//! Notation: d = `d_model`, E = embedding width, V = `vocab`.
//!
//! - attention (BertSelfAttention, GPT2Attention, LlamaAttention, T5Attention, BartAttention):
//!   q d×(h·hd), k, v d×(kv·hd), o (h·hd)×d; biases on q, k, v (and o for `bias = true`).
//! - mlp: 2 matrices, or 3 when gated (gate, up, down); biases on each when `bias`.
//! - mamba (MambaMixer), d_inner = expand·d, r = dt_rank, N = d_state: in_proj d×2·d_inner,
//!   conv1d d_inner×d_conv (+d_inner), x_proj d_inner×(r+2N), dt_proj r×d_inner + d_inner,
//!   A_log d_inner×N, D d_inner, out_proj d_inner×d (in/out bias when `bias`).
//! - time_mix (RwkvSelfAttention): time_decay, time_first, time_mix_{k,v,r} (5d) and
//!   key, value, receptance, output d×d, no biases.
//! - channel_mix (RwkvFeedForward): time_mix_{k,r} (2d), key d×hidden, receptance d×d,
//!   value hidden×d.
//! - ssm (s4d.py `S4D(d, N)`): D d, log_dt d, C d×(N/2)×2 (complex as real pairs),
//!   log_A_real and A_imag d×(N/2) each, output_linear Conv1d(d, 2d, k=1) 2d×d + 2d (then GLU).
//! - ttt (ttt.py `TTTLinear`/`TTTMLP`, hd = d/heads, b = mini_batch): q, k, v, o d×d,
//!   learnable_token_idx b, learnable_ttt_lr_weight heads×d, learnable_ttt_lr_bias heads,
//!   ttt_norm weight/bias heads×hd each, W1 heads×hd×hd + b1 heads×hd (MLP: W1 hd×4hd,
//!   b1 4hd, W2 4hd×hd, b2 hd per head), post_norm LayerNorm(d) with bias, g_proj d×d when
//!   `gate` (ttt.py `use_gate`). No conv: the reference's `pre_conv` and `share_qk` are off.
//! - every sublayer has one norm of the model's kind; LayerNorm has weight (+ bias), RMSNorm
//!   a weight only.
//!
//! Every count is computed with `Sat`, so an absurd spec saturates at `u64::MAX`.

use std::collections::BTreeMap;

use crate::spec::{
    ArchSpec, AttnBias, Head, Mamba, Mlp, Norm, Position, Share, Stack, Sublayer, Ttt, TttInner,
};

use super::sat::{self, Sat};

/// Parameters split into the four parts of `Stats`.
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct Breakdown {
    pub embedding: u64,
    pub layers: u64,
    pub pooler: u64,
    pub head: u64,
    pub by_kind: BTreeMap<&'static str, u64>,
}

impl Breakdown {
    /// The sum of the four parts, saturating at `u64::MAX`.
    pub fn total(&self) -> u64 {
        sat::sum([self.embedding, self.layers, self.pooler, self.head])
    }
}

/// Counts every parameter tensor of `spec`.
pub(crate) fn count(spec: &ArchSpec) -> Breakdown {
    let mut by_kind: BTreeMap<&'static str, Sat> = BTreeMap::new();
    for (_, stack) in spec.stacks() {
        stack_params(spec, stack, &mut by_kind);
    }
    Breakdown {
        embedding: embedding(spec).get(),
        layers: by_kind.values().copied().sum::<Sat>().get(),
        pooler: pooler(spec).get(),
        head: spec.heads.iter().map(|h| head(spec, h)).sum::<Sat>().get(),
        by_kind: by_kind.into_iter().map(|(k, v)| (k, v.get())).collect(),
    }
}

/// One norm over `width` features.
fn norm(norm: Norm, width: u64) -> Sat {
    match norm {
        Norm::LayerNorm { bias: true, .. } => 2 * Sat(width),
        Norm::LayerNorm { bias: false, .. } | Norm::RmsNorm { .. } => Sat(width),
    }
}

/// Token, segment and position tables, the factorized projection and the embedding norm.
/// Position tables and embedding norms are per stack (BART has one of each per stack).
fn embedding(spec: &ArchSpec) -> Sat {
    let e = Sat(spec.embed_width());
    let d = Sat(spec.d_model);
    let stacks = spec.stacks().count() as u64;
    // HF ELECTRA adds `embeddings_project` only when the widths differ.
    let project = match spec.embed.factorized {
        Some(f) if f != spec.d_model => e * d + d,
        _ => Sat(0),
    };
    let position = match spec.position {
        Position::Learned { offset } => (Sat(spec.context) + offset) * e,
        _ => Sat(0),
    };
    let embed_norm = if spec.embed.norm {
        norm(spec.norm, e.get())
    } else {
        Sat(0)
    };
    spec.vocab * e + project + spec.embed.segments * e + stacks * (position + embed_norm)
}

/// Adds one stack's layers to `by_kind`: sublayers with their norms, the final norm and the
/// T5 relative-bias table (owned by the stack's first attention, as in HF T5).
fn stack_params(spec: &ArchSpec, stack: &Stack, by_kind: &mut BTreeMap<&'static str, Sat>) {
    let d = spec.d_model;
    // With `share = all` every layer runs the first layer's weights.
    let distinct = match stack.share {
        Share::All => 1,
        Share::None => stack.layers.len(),
    };
    for layer in stack.layers.iter().take(distinct) {
        for s in &layer.sublayers {
            *by_kind.entry(s.kind()).or_default() += sublayer(s, d);
            *by_kind.entry("norm").or_default() += norm(spec.norm, d);
        }
    }
    if spec.final_norm {
        *by_kind.entry("norm").or_default() += norm(spec.norm, d);
    }
    if let Position::RelativeBias { buckets, .. } = spec.position {
        if let Some(heads) = first_attention_heads(stack) {
            *by_kind.entry("attention").or_default() += Sat(buckets) * heads;
        }
    }
}

fn first_attention_heads(stack: &Stack) -> Option<u64> {
    stack
        .layers
        .iter()
        .flat_map(|l| &l.sublayers)
        .find_map(|s| match s {
            Sublayer::Attention(a) => Some(a.heads),
            _ => None,
        })
}

/// The parameters of one sublayer, its norm excluded.
fn sublayer(s: &Sublayer, d: u64) -> Sat {
    let d = Sat(d);
    match s {
        Sublayer::Attention(a) => attention(d, a.heads, a.kv_heads, a.head_dim, a.bias),
        Sublayer::CrossAttention(a) => attention(d, a.heads, a.kv_heads, a.head_dim, a.bias),
        Sublayer::Mlp(m) => mlp(d, m),
        Sublayer::Mamba(m) => mamba(d, m),
        Sublayer::TimeMix(_) => 5 * d + 4 * d * d,
        Sublayer::ChannelMix(c) => 2 * d + d * c.hidden + d * d + c.hidden * d,
        Sublayer::Ssm(s) => ssm(d, s.d_state),
        Sublayer::Ttt(t) => ttt(d, t),
    }
}

fn attention(d: Sat, heads: u64, kv_heads: u64, head_dim: u64, bias: AttnBias) -> Sat {
    let (q, kv) = (Sat(heads) * head_dim, Sat(kv_heads) * head_dim);
    let weights = d * q + 2 * d * kv + q * d;
    let biases = match bias {
        AttnBias::None => Sat(0),
        AttnBias::Qkv => q + 2 * kv,
        AttnBias::All => q + 2 * kv + d,
    };
    weights + biases
}

fn mlp(d: Sat, m: &Mlp) -> Sat {
    // Gated: gate and up project to `hidden`, down projects back.
    let into_hidden: u64 = if m.act.is_gated() { 2 } else { 1 };
    let weights = (into_hidden + 1) * d * m.hidden;
    let biases = if m.bias {
        into_hidden * Sat(m.hidden) + d
    } else {
        Sat(0)
    };
    weights + biases
}

/// The matrices of a Mamba mixer (in_proj, x_proj, dt_proj, out_proj), no biases.
fn mamba_matmul(d: Sat, m: &Mamba) -> Sat {
    let di = m.expand * d;
    d * 2 * di + di * (m.dt_rank + 2 * Sat(m.d_state)) + m.dt_rank * di + di * d
}

fn mamba(d: Sat, m: &Mamba) -> Sat {
    let di = m.expand * d;
    let conv = di * m.d_conv + if m.conv_bias { di } else { Sat(0) };
    let proj_bias = if m.bias { 2 * di + d } else { Sat(0) };
    // dt_proj always has a bias; A_log is di×N, D is di.
    mamba_matmul(d, m) + conv + proj_bias + di + di * m.d_state + di
}

/// S4D with `d_state` N real numbers per channel held as N/2 complex modes.
fn ssm(d: Sat, d_state: u64) -> Sat {
    let modes = d_state / 2;
    let kernel = d + 2 * d * modes + 2 * d * modes; // log_dt, C (re, im), log_A_real + A_imag
    let output_linear = 2 * d * d + 2 * d;
    d + kernel + output_linear
}

/// Parameters of the TTT inner model of one layer (all heads): its weights are the state.
pub(crate) fn ttt_inner(d: u64, t: &Ttt) -> u64 {
    let hd = ttt_head_dim(d, t);
    let d = Sat(d);
    let n = match t.inner {
        TttInner::Linear => d * hd + d,
        TttInner::Mlp => 8 * d * hd + 5 * d,
    };
    n.get()
}

pub(crate) fn ttt_head_dim(d: u64, t: &Ttt) -> u64 {
    d.checked_div(t.heads).unwrap_or(0)
}

fn ttt(d: Sat, t: &Ttt) -> Sat {
    let projections = if t.gate { 5 } else { 4 } * d * d;
    let lr_gate = t.heads * d + t.heads;
    let ttt_norm = 2 * d;
    let post_norm = 2 * d;
    projections + t.mini_batch + lr_gate + ttt_norm + ttt_inner(d.get(), t) + post_norm
}

/// The pooler dense layer, once, if any classifier asks for it.
fn pooler(spec: &ArchSpec) -> Sat {
    let wants = spec
        .heads
        .iter()
        .any(|h| matches!(h, Head::Classifier { pooler: true, .. }));
    if wants {
        let d = Sat(spec.d_model);
        d * d + d
    } else {
        Sat(0)
    }
}

fn head(spec: &ArchSpec, h: &Head) -> Sat {
    let (v, d, e) = (Sat(spec.vocab), Sat(spec.d_model), Sat(spec.embed_width()));
    // A tied output matrix is the token embedding, already counted.
    let untied = |n: Sat| if spec.embed.tied { Sat(0) } else { n };
    match *h {
        Head::Lm { bias, .. } => untied(v * d) + if bias { v } else { Sat(0) },
        Head::MaskedLm => d * e + e + norm(spec.norm, e.get()) + untied(v * e) + v,
        Head::Classifier { labels, .. } => labels * d + labels,
        Head::Discriminator => d * d + d + d + 1,
    }
}

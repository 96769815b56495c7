//! Inference state, in elements (the caller multiplies by the dtype's bytes).
//!
//! Which stack keeps state: the decoder (decoder-only and encoder-decoder), or the encoder of
//! an encoder-only model (the K/V a full pass materializes). An encoder-decoder's encoder
//! output is kept through the decoder's cross-attention caches instead.
//!
//! - attention: `2·kv_heads·head_dim` per token; a sliding layer holds at most `window` tokens.
//! - cross_attention: `2·kv_heads·head_dim` per encoder token.
//! - mamba: `d_inner·(d_state + d_conv − 1)`: the SSM state and the conv's last inputs.
//! - time_mix: `4·d` (HF RWKV state: shifted x, WKV numerator, denominator, running max).
//! - channel_mix: `d` (its shifted x).
//! - ssm: `d·d_state` (d_state/2 complex modes per channel).
//! - ttt: the inner model's weights and biases, all heads, twice: the mini-batch's starting
//!   weights and its accumulated gradients (ttt.py's `TTTCache` keeps `*_states` and
//!   `*_grad`), what decoding one token at a time needs.

use crate::spec::{ArchSpec, Family, Mask, Stack, Sublayer};

use super::params;
use super::sat::Sat;

#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub(crate) struct State {
    /// Self- and cross-attention cache per token.
    pub per_token: u64,
    /// Cross-attention cache per encoder token (part of `per_token`).
    pub cross_per_token: u64,
    /// Recurrent state per sequence.
    pub fixed: u64,
    /// All of it for one sequence of `seq` tokens (as many encoder tokens).
    pub at_seq: u64,
}

pub(crate) fn state(spec: &ArchSpec, seq: u64) -> State {
    let mut total = State::default();
    for s in cached_stack(spec)
        .iter()
        .flat_map(|s| &s.layers)
        .flat_map(|l| &l.sublayers)
    {
        // Saturating: an absurd spec reports `u64::MAX` rather than overflowing.
        let one = sublayer(spec.d_model, s, seq);
        total.per_token = total.per_token.saturating_add(one.per_token);
        total.cross_per_token = total.cross_per_token.saturating_add(one.cross_per_token);
        total.fixed = total.fixed.saturating_add(one.fixed);
        total.at_seq = total.at_seq.saturating_add(one.at_seq);
    }
    total
}

fn cached_stack(spec: &ArchSpec) -> Option<&Stack> {
    match spec.family {
        Family::EncoderOnly => spec.encoder.as_ref(),
        Family::DecoderOnly | Family::EncoderDecoder => spec.decoder.as_ref(),
    }
}

fn sublayer(d: u64, s: &Sublayer, seq: u64) -> State {
    match s {
        Sublayer::Attention(a) => {
            let per_token = 2 * Sat(a.kv_heads) * a.head_dim;
            let held = match a.mask {
                Mask::Sliding { window } => seq.min(window),
                Mask::Causal | Mask::Bidirectional => seq,
            };
            State {
                per_token: per_token.get(),
                at_seq: (per_token * held).get(),
                ..State::default()
            }
        }
        Sublayer::CrossAttention(a) => {
            let per_token = 2 * Sat(a.kv_heads) * a.head_dim;
            State {
                per_token: per_token.get(),
                cross_per_token: per_token.get(),
                at_seq: (per_token * seq).get(),
                fixed: 0,
            }
        }
        Sublayer::Mlp(_) => State::default(),
        Sublayer::Mamba(m) => {
            fixed(m.expand * Sat(d) * (Sat(m.d_state) + m.d_conv.saturating_sub(1)))
        }
        Sublayer::TimeMix(_) => fixed(4 * Sat(d)),
        Sublayer::ChannelMix(_) => fixed(Sat(d)),
        Sublayer::Ssm(s) => fixed(Sat(d) * s.d_state),
        Sublayer::Ttt(t) => fixed(2 * Sat(params::ttt_inner(d, t))),
    }
}

fn fixed(n: Sat) -> State {
    let n = n.get();
    State {
        fixed: n,
        at_seq: n,
        ..State::default()
    }
}

//! ArchSpec → Stats: parameter counts, FLOPs, memory and scaling-law estimates of one model.
//!
//! Parameter counts reproduce the Hugging Face `transformers` modules tensor for tensor
//! (BertModel, GPT2LMHeadModel, LlamaForCausalLM, MambaForCausalLM, RwkvForCausalLM,
//! T5ForConditionalGeneration, BartForConditionalGeneration, Albert/Electra) and, for the
//! layers that have no `transformers` class, the reference code: `S4D` from state-spaces/s4
//! `models/s4/s4d.py` and `TTTLinear`/`TTTMLP` from ttt-lm-pytorch `ttt.py`. See `params.rs`
//! for the tensor list of each sublayer, `flops.rs` for the FLOP model and `memory.rs` for
//! cache and state sizes.
//!
//! Scaling laws:
//! - Chinchilla (Hoffmann et al. 2022, approach 3): `L(N, D) = E + A/N^α + B/D^β` with
//!   E = 1.69, A = 406.4, B = 410.7, α = 0.34, β = 0.28; compute-optimal `D = 20·N`.
//! - Kaplan et al. 2020: `L(N) = (N_c/N)^0.076`, N_c = 8.8e13, on non-embedding parameters.
//! - Training compute `6·N·D` (forward 2·N, backward 4·N per token).
//!
//! Spec sizes are user input, any `u64`: integer counts saturate at `u64::MAX` (see `sat.rs`)
//! and every float is finite and non-negative (+∞ becomes `f64::MAX`), so that `stats` never
//! panics and its JSON never holds `null`.

mod flops;
mod memory;
mod params;
mod sat;
mod table;
#[cfg(test)]
mod tests;

use std::collections::BTreeMap;

use serde::Serialize;

use crate::spec::{ArchSpec, DType, Objective};

use sat::{finite, Sat};

pub use table::render_table;

/// What the caller can vary: the sequence length and the training-set size.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct StatsOptions {
    /// Sequence length for FLOPs and cache sizes; `context` when absent.
    pub seq: Option<u64>,
    /// Training tokens D; the Chinchilla-optimal `20·N` when absent.
    pub tokens: Option<f64>,
}

/// Everything `archc stats` reports about one model.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Stats {
    pub name: String,
    /// All parameters: embedding + layers + pooler + head (a tied matrix counts once).
    pub params: u64,
    pub params_embedding: u64,
    pub params_layers: u64,
    pub params_pooler: u64,
    pub params_head: u64,
    /// `params - params_embedding`, the N of Kaplan's law.
    pub params_non_embedding: u64,
    /// Layer parameters per sublayer kind, plus `norm`; sums to `params_layers`.
    pub params_by_kind: BTreeMap<&'static str, u64>,
    /// The RTD generator's own parameters (ELECTRA); not part of `params`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub generator_params: Option<u64>,
    /// The sequence length T used below.
    pub seq: u64,
    /// Forward FLOPs per token at length `seq`.
    pub flops_per_token: f64,
    /// The training tokens D used below.
    pub tokens: f64,
    /// `6·N·D`.
    pub train_flops: f64,
    /// `3 × flops_per_token × D`: forward + backward from the detailed forward count.
    pub train_flops_detailed: f64,
    pub chinchilla_tokens: f64,
    /// Chinchilla loss at D = `tokens`.
    pub chinchilla_loss: f64,
    pub kaplan_loss: f64,
    /// Weight bytes in the model's `dtype`.
    pub weights_bytes: u64,
    pub weights_bytes_f32: u64,
    pub weights_bytes_bf16: u64,
    pub weights_bytes_f16: u64,
    /// KV-cache bytes added per generated token (self-attention, plus cross-attention
    /// caches counted as one encoder token per token), in the model's dtype.
    pub state_bytes_per_token: u64,
    /// Cross-attention cache bytes per encoder token (already inside `state_bytes_per_token`).
    pub cross_state_bytes_per_encoder_token: u64,
    /// Recurrent state bytes per sequence (Mamba, RWKV, S4D, TTT), independent of length.
    pub state_bytes_fixed: u64,
    /// Whole cache of one sequence of length `seq`: sliding windows capped, plus fixed state.
    pub state_bytes_at_seq: u64,
}

const CHINCHILLA_TOKENS_PER_PARAM: f64 = 20.0;
const CHINCHILLA_E: f64 = 1.69;
const CHINCHILLA_A: f64 = 406.4;
const CHINCHILLA_B: f64 = 410.7;
const CHINCHILLA_ALPHA: f64 = 0.34;
const CHINCHILLA_BETA: f64 = 0.28;
const KAPLAN_NC: f64 = 8.8e13;
const KAPLAN_ALPHA: f64 = 0.076;

/// Computes every statistic of `spec`.
pub fn stats(spec: &ArchSpec, opts: &StatsOptions) -> Stats {
    let parts = params::count(spec);
    let params = parts.total();
    let n = params as f64;
    let non_embedding = params.saturating_sub(parts.embedding);
    // A zero-length sequence has no per-token cost; T = 1 keeps the averages finite.
    let seq = opts.seq.unwrap_or(spec.context).max(1);
    let chinchilla_tokens = finite(CHINCHILLA_TOKENS_PER_PARAM * n);
    // NaN or negative D counts as no data, +∞ as `f64::MAX`.
    let tokens = finite(opts.tokens.unwrap_or(chinchilla_tokens));
    let flops_per_token = finite(flops::per_token(spec, seq));
    let state = memory::state(spec, seq);
    let bytes = spec.dtype.bytes();
    let times = |n: u64, b: u64| (Sat(n) * b).get();
    Stats {
        name: spec.name.clone(),
        params,
        params_embedding: parts.embedding,
        params_layers: parts.layers,
        params_pooler: parts.pooler,
        params_head: parts.head,
        params_non_embedding: non_embedding,
        params_by_kind: parts.by_kind,
        generator_params: generator(spec).map(|g| params::count(g).total()),
        seq,
        flops_per_token,
        tokens,
        train_flops: finite(6.0 * n * tokens),
        train_flops_detailed: finite(3.0 * flops_per_token * tokens),
        chinchilla_tokens,
        chinchilla_loss: chinchilla_loss(n, tokens),
        kaplan_loss: kaplan_loss(non_embedding as f64),
        weights_bytes: times(params, bytes),
        weights_bytes_f32: times(params, DType::F32.bytes()),
        weights_bytes_bf16: times(params, DType::Bf16.bytes()),
        weights_bytes_f16: times(params, DType::F16.bytes()),
        state_bytes_per_token: times(state.per_token, bytes),
        cross_state_bytes_per_encoder_token: times(state.cross_per_token, bytes),
        state_bytes_fixed: times(state.fixed, bytes),
        state_bytes_at_seq: times(state.at_seq, bytes),
    }
}

impl Stats {
    /// The parameters of a named part: `backbone` (embedding + layers), `embedding`,
    /// `layers`, `pooler`, `head` or `all` (saturating at `u64::MAX`).
    pub fn part(&self, name: &str) -> Option<u64> {
        match name {
            "backbone" => Some(self.params_embedding.saturating_add(self.params_layers)),
            "embedding" => Some(self.params_embedding),
            "layers" => Some(self.params_layers),
            "pooler" => Some(self.params_pooler),
            "head" => Some(self.params_head),
            "all" => Some(self.params),
            _ => None,
        }
    }
}

/// The generator of an `rtd` objective, if any.
fn generator(spec: &ArchSpec) -> Option<&ArchSpec> {
    spec.objectives.iter().find_map(|o| match o {
        Objective::Rtd { generator, .. } => Some(generator.as_ref()),
        _ => None,
    })
}

/// Chinchilla's parametric loss fit; `f64::MAX` (for +∞) for an empty model or no data.
fn chinchilla_loss(n: f64, d: f64) -> f64 {
    finite(
        CHINCHILLA_E
            + CHINCHILLA_A / n.powf(CHINCHILLA_ALPHA)
            + CHINCHILLA_B / d.powf(CHINCHILLA_BETA),
    )
}

/// Kaplan's parameter-limited loss on non-embedding parameters; `f64::MAX` (for +∞) for none.
fn kaplan_loss(n_non_embedding: f64) -> f64 {
    finite((KAPLAN_NC / n_non_embedding).powf(KAPLAN_ALPHA))
}

//! The parameter table: every parameter tensor of a model under its canonical name.
//!
//! Canonical names are the one naming every part of archc agrees on (graph expansion, the
//! package manifest, the weight loader, checkpoints). Hugging Face checkpoints are mapped onto
//! them by [`crate::weights`]. The numbers in the table agree exactly with
//! `arch_dsl::stats` (which is verified against Hugging Face's own parameter counts): the sum
//! of the element counts of [`param_table`] is `stats(spec).params`.
//!
//! # The scheme
//!
//! Notation: V = `vocab`, d = `d_model`, E = the embedding width (`embed.factorized`, or d),
//! S ∈ {`encoder`, `decoder`} a stack present in the model (encoder first), i a layer index.
//! Matrices use PyTorch's `nn.Linear` layout `[out, in]`: `y = x · Wᵀ`.
//! Values are stored exactly as the reference implementation stores them (RWKV's
//! `decay` is Hugging Face's raw `time_decay`, Mamba's `A_log` is the log, …); only layouts
//! change (see `weights` for the per-family transforms).
//!
//! Embeddings (shared by all stacks):
//! - `embed.tokens.weight` [V, E]
//! - `embed.segments.weight` [segments, E] when `embed.segments > 0`
//! - `embed.project.weight` [d, E], `embed.project.bias` [d] when factorized and E ≠ d
//!
//! Per stack S, in this order:
//! - `S.positions.weight` [context + offset, E] for `position = learned(offset)`; row
//!   `t + offset` embeds position t (BART's and RoBERTa's tables are taken whole, offset rows
//!   included)
//! - `S.embed_norm.weight` [E] (+ `S.embed_norm.bias` [E] for a layernorm with bias) when
//!   `embed.norm`
//! - `S.relative_bias.weight` [buckets, heads] for `position = relative_bias`, heads of the
//!   stack's first self-attention (T5 keeps it in block 0 and shares it with every block)
//! - the layers, `S.layers.{i}.…`, i in `0..layers`; with `share = all` only layer 0
//!   exists and every layer runs its weights
//! - `S.final_norm.weight` [d] (+ `.bias`) when `final_norm`
//!
//! Every sublayer of a layer is named `S.layers.{i}.{kind}` with kind its section name
//! (`attention`, `cross_attention`, `mlp`, `mamba`, `time_mix`, `channel_mix`, `ssm`, `ttt`);
//! should a kind occur again in the same layer, its k-th repeat (k ≥ 1) is `{kind}_{k}`.
//! Each sublayer owns its norm, `….{kind}.norm.weight` [d] (+ `.bias` [d] for a layernorm with
//! bias), which is the pre-norm for `placement = pre` and the norm after the residual add for
//! `placement = post`. Then, with hd = `head_dim`, h = `heads`, kv = `kv_heads`:
//!
//! - `attention`, `cross_attention`: `q.weight` [h·hd, d], `k.weight` [kv·hd, d], `v.weight`
//!   [kv·hd, d], `o.weight` [d, h·hd]; `q.bias` [h·hd], `k.bias`, `v.bias` [kv·hd] for
//!   `bias = qkv` or `all`, and `o.bias` [d] for `all`.
//! - `mlp`: `up.weight` [hidden, d], `down.weight` [d, hidden]; gated activations add
//!   `gate.weight` [hidden, d] (the activated branch: `down(act(gate x) * up x)`); with
//!   `bias`, `up.bias`, `gate.bias` [hidden] and `down.bias` [d]. Order: gate, up, down.
//! - `mamba` (HF `MambaMixer`, di = expand·d, N = d_state, r = dt_rank): `in_proj.weight`
//!   [2·di, d] (+ `in_proj.bias` [2·di] with `bias`), `conv.weight` [di, 1, d_conv],
//!   `conv.bias` [di] with `conv_bias`, `x_proj.weight` [r + 2N, di], `dt_proj.weight` [di, r],
//!   `dt_proj.bias` [di], `A_log` [di, N], `D` [di], `out_proj.weight` [d, di]
//!   (+ `out_proj.bias` [d] with `bias`).
//! - `time_mix` (HF `RwkvSelfAttention`): `decay` [d] (`time_decay`), `first` [d]
//!   (`time_first`), `mix_k`, `mix_v`, `mix_r` [d] (`time_mix_key/value/receptance`, [1, 1, d]
//!   in HF, flattened), `key.weight`, `value.weight`, `receptance.weight`, `output.weight`
//!   [d, d].
//! - `channel_mix` (HF `RwkvFeedForward`): `mix_k`, `mix_r` [d], `key.weight` [hidden, d],
//!   `receptance.weight` [d, d], `value.weight` [d, hidden].
//! - `ssm` (s4d.py `S4D`, N = d_state): `D` [d], `log_dt` [d], `C` [d, N/2, 2] (complex as
//!   (re, im) pairs), `log_A_real` [d, N/2], `A_imag` [d, N/2], `out.weight` [2d, d] and
//!   `out.bias` [2d] (the kernel-size-1 `output_linear` conv, its last axis dropped; a GLU
//!   follows).
//! - `ttt` (ttt-lm-pytorch `TTTLinear` / `TTTMLP`, h = heads, hd = d / h, b = mini_batch):
//!   `q.weight`, `k.weight`, `v.weight`, `o.weight` [d, d], `token_idx` [b]
//!   (`learnable_token_idx`), `lr_weight` [h, d] and `lr_bias` [h]
//!   (`learnable_ttt_lr_weight/bias`, ttt.py's singleton axes dropped), `ttt_norm_weight`,
//!   `ttt_norm_bias` [h, hd]; the inner model, linear: `W1` [h, hd, hd], `b1` [h, hd]; mlp:
//!   `W1` [h, hd, 4hd], `b1` [h, 4hd], `W2` [h, 4hd, hd], `b2` [h, hd] (ttt.py's singleton
//!   axis of `b1`/`b2` dropped); `post_norm.weight`, `post_norm.bias` [d] (always a layernorm
//!   with bias); `g.weight` [d, d] with `gate`.
//!
//! Heads, in the order of `spec.heads`:
//! - `lm`: `head.lm.weight` [V, d] unless `embed.tied` (then the head reads
//!   `embed.tokens.weight`), `head.lm.bias` [V] with `bias`.
//! - `masked_lm`: `head.mlm.dense.weight` [E, d], `head.mlm.dense.bias` [E],
//!   `head.mlm.norm.weight` [E] (+ `.bias`), `head.mlm.bias` [V], and
//!   `head.mlm.decoder.weight` [V, E] unless `embed.tied`.
//! - `classifier`: with `pooler`, `head.pooler.weight` [d, d] and `head.pooler.bias` [d]
//!   (once for the model); `head.classifier.weight` [labels, d], `head.classifier.bias`
//!   [labels].
//! - `discriminator`: `head.discriminator.dense.weight` [d, d], `.dense.bias` [d],
//!   `head.discriminator.out.weight` [1, d], `.out.bias` [1].

use arch_dsl::spec::{ArchSpec, AttnBias, Head, Norm, Position, Share, Stack, Sublayer, TttInner};

/// One parameter tensor: its canonical name and its shape.
#[derive(Debug, Clone, PartialEq, Eq, Hash, serde::Serialize)]
pub struct ParamInfo {
    pub name: String,
    pub shape: Vec<usize>,
}

impl ParamInfo {
    /// Number of elements (1 for a scalar).
    pub fn numel(&self) -> usize {
        self.shape.iter().product()
    }
}

/// Every parameter tensor of `spec`, in a deterministic order (embeddings, then each stack
/// in execution order, then the heads); see the module documentation for the scheme.
pub fn param_table(spec: &ArchSpec) -> Vec<ParamInfo> {
    let mut t = Table {
        out: Vec::new(),
        norm: spec.norm,
    };
    let d = spec.d_model as usize;
    let e = spec.embed_width() as usize;
    let v = spec.vocab as usize;

    t.push("embed.tokens.weight", [v, e]);
    if spec.embed.segments > 0 {
        t.push("embed.segments.weight", [spec.embed.segments as usize, e]);
    }
    if e != d {
        t.push("embed.project.weight", [d, e]);
        t.push("embed.project.bias", [d]);
    }

    for (name, stack) in spec.stacks() {
        stack_params(&mut t, spec, name, stack);
    }

    for h in &spec.heads {
        head_params(&mut t, spec, h);
    }
    t.out
}

/// The canonical name of sublayer `index` of `layer` (its kind, suffixed by the repeat count
/// when the kind already occurred earlier in the layer).
pub fn sublayer_name(sublayers: &[Sublayer], index: usize) -> String {
    let kind = sublayers[index].kind();
    let repeat = sublayers[..index]
        .iter()
        .filter(|s| s.kind() == kind)
        .count();
    if repeat == 0 {
        kind.to_string()
    } else {
        format!("{kind}_{repeat}")
    }
}

/// The layers of `stack` that own weights (one with `share = all`).
pub fn distinct_layers(stack: &Stack) -> usize {
    match stack.share {
        Share::All => stack.layers.len().min(1),
        Share::None => stack.layers.len(),
    }
}

struct Table {
    out: Vec<ParamInfo>,
    norm: Norm,
}

impl Table {
    fn push<const N: usize>(&mut self, name: impl Into<String>, shape: [usize; N]) {
        self.out.push(ParamInfo {
            name: name.into(),
            shape: shape.to_vec(),
        });
    }

    /// A norm of the model's kind over `width` features.
    fn norm(&mut self, prefix: &str, width: usize) {
        self.push(format!("{prefix}.weight"), [width]);
        if let Norm::LayerNorm { bias: true, .. } = self.norm {
            self.push(format!("{prefix}.bias"), [width]);
        }
    }
}

fn stack_params(t: &mut Table, spec: &ArchSpec, s: &str, stack: &Stack) {
    let d = spec.d_model as usize;
    let e = spec.embed_width() as usize;
    if let Position::Learned { offset } = spec.position {
        t.push(
            format!("{s}.positions.weight"),
            [(spec.context + offset) as usize, e],
        );
    }
    if spec.embed.norm {
        t.norm(&format!("{s}.embed_norm"), e);
    }
    if let Position::RelativeBias { buckets, .. } = spec.position {
        let first = stack
            .layers
            .iter()
            .flat_map(|l| &l.sublayers)
            .find_map(|x| match x {
                Sublayer::Attention(a) => Some(a.heads),
                _ => None,
            });
        if let Some(heads) = first {
            t.push(
                format!("{s}.relative_bias.weight"),
                [buckets as usize, heads as usize],
            );
        }
    }
    for (i, layer) in stack.layers.iter().take(distinct_layers(stack)).enumerate() {
        for (j, sub) in layer.sublayers.iter().enumerate() {
            let p = format!("{s}.layers.{i}.{}", sublayer_name(&layer.sublayers, j));
            t.norm(&format!("{p}.norm"), d);
            sublayer_params(t, &p, d, sub);
        }
    }
    if spec.final_norm {
        t.norm(&format!("{s}.final_norm"), d);
    }
}

fn attention_params(
    t: &mut Table,
    p: &str,
    d: usize,
    heads: u64,
    kv: u64,
    hd: u64,
    bias: AttnBias,
) {
    let (q, kv) = ((heads * hd) as usize, (kv * hd) as usize);
    t.push(format!("{p}.q.weight"), [q, d]);
    t.push(format!("{p}.k.weight"), [kv, d]);
    t.push(format!("{p}.v.weight"), [kv, d]);
    t.push(format!("{p}.o.weight"), [d, q]);
    if bias != AttnBias::None {
        t.push(format!("{p}.q.bias"), [q]);
        t.push(format!("{p}.k.bias"), [kv]);
        t.push(format!("{p}.v.bias"), [kv]);
    }
    if bias == AttnBias::All {
        t.push(format!("{p}.o.bias"), [d]);
    }
}

fn sublayer_params(t: &mut Table, p: &str, d: usize, sub: &Sublayer) {
    match sub {
        Sublayer::Attention(a) => {
            attention_params(t, p, d, a.heads, a.kv_heads, a.head_dim, a.bias)
        }
        Sublayer::CrossAttention(a) => {
            attention_params(t, p, d, a.heads, a.kv_heads, a.head_dim, a.bias)
        }
        Sublayer::Mlp(m) => {
            let h = m.hidden as usize;
            if m.act.is_gated() {
                t.push(format!("{p}.gate.weight"), [h, d]);
                if m.bias {
                    t.push(format!("{p}.gate.bias"), [h]);
                }
            }
            t.push(format!("{p}.up.weight"), [h, d]);
            if m.bias {
                t.push(format!("{p}.up.bias"), [h]);
            }
            t.push(format!("{p}.down.weight"), [d, h]);
            if m.bias {
                t.push(format!("{p}.down.bias"), [d]);
            }
        }
        Sublayer::Mamba(m) => {
            let di = (m.expand as usize) * d;
            let (n, r) = (m.d_state as usize, m.dt_rank as usize);
            t.push(format!("{p}.in_proj.weight"), [2 * di, d]);
            if m.bias {
                t.push(format!("{p}.in_proj.bias"), [2 * di]);
            }
            t.push(format!("{p}.conv.weight"), [di, 1, m.d_conv as usize]);
            if m.conv_bias {
                t.push(format!("{p}.conv.bias"), [di]);
            }
            t.push(format!("{p}.x_proj.weight"), [r + 2 * n, di]);
            t.push(format!("{p}.dt_proj.weight"), [di, r]);
            t.push(format!("{p}.dt_proj.bias"), [di]);
            t.push(format!("{p}.A_log"), [di, n]);
            t.push(format!("{p}.D"), [di]);
            t.push(format!("{p}.out_proj.weight"), [d, di]);
            if m.bias {
                t.push(format!("{p}.out_proj.bias"), [d]);
            }
        }
        Sublayer::TimeMix(_) => {
            for v in ["decay", "first", "mix_k", "mix_v", "mix_r"] {
                t.push(format!("{p}.{v}"), [d]);
            }
            for m in ["key", "value", "receptance", "output"] {
                t.push(format!("{p}.{m}.weight"), [d, d]);
            }
        }
        Sublayer::ChannelMix(c) => {
            let h = c.hidden as usize;
            t.push(format!("{p}.mix_k"), [d]);
            t.push(format!("{p}.mix_r"), [d]);
            t.push(format!("{p}.key.weight"), [h, d]);
            t.push(format!("{p}.receptance.weight"), [d, d]);
            t.push(format!("{p}.value.weight"), [d, h]);
        }
        Sublayer::Ssm(s) => {
            let modes = (s.d_state / 2) as usize;
            t.push(format!("{p}.D"), [d]);
            t.push(format!("{p}.log_dt"), [d]);
            t.push(format!("{p}.C"), [d, modes, 2]);
            t.push(format!("{p}.log_A_real"), [d, modes]);
            t.push(format!("{p}.A_imag"), [d, modes]);
            t.push(format!("{p}.out.weight"), [2 * d, d]);
            t.push(format!("{p}.out.bias"), [2 * d]);
        }
        Sublayer::Ttt(x) => {
            let h = x.heads as usize;
            let hd = d.checked_div(h).unwrap_or(0);
            for m in ["q", "k", "v", "o"] {
                t.push(format!("{p}.{m}.weight"), [d, d]);
            }
            t.push(format!("{p}.token_idx"), [x.mini_batch as usize]);
            t.push(format!("{p}.lr_weight"), [h, d]);
            t.push(format!("{p}.lr_bias"), [h]);
            t.push(format!("{p}.ttt_norm_weight"), [h, hd]);
            t.push(format!("{p}.ttt_norm_bias"), [h, hd]);
            match x.inner {
                TttInner::Linear => {
                    t.push(format!("{p}.W1"), [h, hd, hd]);
                    t.push(format!("{p}.b1"), [h, hd]);
                }
                TttInner::Mlp => {
                    t.push(format!("{p}.W1"), [h, hd, 4 * hd]);
                    t.push(format!("{p}.b1"), [h, 4 * hd]);
                    t.push(format!("{p}.W2"), [h, 4 * hd, hd]);
                    t.push(format!("{p}.b2"), [h, hd]);
                }
            }
            t.push(format!("{p}.post_norm.weight"), [d]);
            t.push(format!("{p}.post_norm.bias"), [d]);
            if x.gate {
                t.push(format!("{p}.g.weight"), [d, d]);
            }
        }
    }
}

fn head_params(t: &mut Table, spec: &ArchSpec, h: &Head) {
    let d = spec.d_model as usize;
    let e = spec.embed_width() as usize;
    let v = spec.vocab as usize;
    let tied = spec.embed.tied;
    match *h {
        Head::Lm { bias, .. } => {
            if !tied {
                t.push("head.lm.weight", [v, d]);
            }
            if bias {
                t.push("head.lm.bias", [v]);
            }
        }
        Head::MaskedLm => {
            t.push("head.mlm.dense.weight", [e, d]);
            t.push("head.mlm.dense.bias", [e]);
            t.norm("head.mlm.norm", e);
            t.push("head.mlm.bias", [v]);
            if !tied {
                t.push("head.mlm.decoder.weight", [v, e]);
            }
        }
        Head::Classifier { labels, pooler } => {
            if pooler && !t.out.iter().any(|p| p.name == "head.pooler.weight") {
                t.push("head.pooler.weight", [d, d]);
                t.push("head.pooler.bias", [d]);
            }
            t.push("head.classifier.weight", [labels as usize, d]);
            t.push("head.classifier.bias", [labels as usize]);
        }
        Head::Discriminator => {
            t.push("head.discriminator.dense.weight", [d, d]);
            t.push("head.discriminator.dense.bias", [d]);
            t.push("head.discriminator.out.weight", [1, d]);
            t.push("head.discriminator.out.bias", [1]);
        }
    }
}

/// Fresh parameters for training from scratch (`archc train --seed`), deterministic in
/// `seed`: matrices and embeddings normal(0, 0.02) as the Hugging Face models'
/// `_init_weights`, biases 0, norm scales 1, and each recurrent cell's own initialisation
/// (Mamba's `A_log = log(1..N)`, `D = 1` and Δ bias from Δ log-uniform in [0.001, 0.1];
/// RWKV-4's decay ramp, bonus log 0.3 and mixes ½; S4D-Lin's `A = −½ + iπn`, Δ
/// log-uniform, C normal; TTT's learned token offset 0).
pub fn init(spec: &ArchSpec, seed: u64) -> std::collections::BTreeMap<String, Vec<f32>> {
    use arch_runtime::generate::Rng;
    let mut out = std::collections::BTreeMap::new();
    for (k, p) in param_table(spec).into_iter().enumerate() {
        let mut rng = Rng::new(seed ^ (k as u64 + 1).wrapping_mul(0x9e37_79b9_7f4a_7c15));
        let mut normal = |std: f64| {
            // Box–Muller.
            let u1 = rng.next_f64().max(1e-300);
            let u2 = rng.next_f64();
            ((-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos() * std) as f32
        };
        let n = p.numel();
        let mut parts = p.name.rsplit('.');
        let leaf = parts.next().unwrap_or("");
        let parent = parts.next().unwrap_or("");
        let last = *p.shape.last().unwrap_or(&1);
        let log_uniform_dt = |r: f64| (0.001f64.ln() + r * (0.1f64.ln() - 0.001f64.ln())).exp();
        let data: Vec<f32> = match leaf {
            "weight" if parent.contains("norm") => vec![1.0; n],
            "ttt_norm_weight" => vec![1.0; n],
            "bias" if parent == "dt_proj" => {
                // softplus⁻¹(Δ) = Δ + log(1 − e^{−Δ}).
                (0..n)
                    .map(|i| {
                        let dt = log_uniform_dt((i as f64 + 0.5) / n as f64).max(1e-4);
                        (dt + (-(-dt).exp_m1()).ln()) as f32
                    })
                    .collect()
            }
            "bias" | "b1" | "b2" | "lr_bias" | "ttt_norm_bias" | "token_idx" => vec![0.0; n],
            "A_log" => (0..n).map(|i| ((i % last) as f32 + 1.0).ln()).collect(),
            "D" if parent == "mamba" => vec![1.0; n],
            "D" => (0..n).map(|_| normal(1.0)).collect(),
            "decay" => (0..n)
                .map(|i| (-5.0 + 8.0 * (i as f64 / (n.max(2) - 1) as f64).powf(0.7)) as f32)
                .collect(),
            "first" => vec![0.3f32.ln(); n],
            "mix_k" | "mix_v" | "mix_r" => vec![0.5; n],
            "log_dt" => (0..n)
                .map(|i| log_uniform_dt((i as f64 + 0.5) / n as f64).ln() as f32)
                .collect(),
            "log_A_real" => vec![0.5f32.ln(); n],
            "A_imag" => (0..n)
                .map(|i| (std::f64::consts::PI * (i % last) as f64) as f32)
                .collect(),
            "C" => (0..n).map(|_| normal(0.5f64.sqrt())).collect(),
            _ => (0..n).map(|_| normal(0.02)).collect(),
        };
        out.insert(p.name, data);
    }
    out
}

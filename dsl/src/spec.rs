//! Elaborated model → `ArchSpec`: the typed, fully defaulted description of one model.
//!
//! Everything downstream (statistics, graph expansion, the `model!` macro) reads this and
//! never the AST. Every default of ARCH_LANGUAGE.md §5–§8 is already applied here and
//! block stacks are flattened into one sublayer list per layer.

use serde::Serialize;

/// One fully elaborated model.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ArchSpec {
    pub name: String,
    pub family: Family,
    pub vocab: u64,
    pub d_model: u64,
    pub context: u64,
    pub dtype: DType,
    pub norm: Norm,
    pub placement: Placement,
    pub final_norm: bool,
    pub position: Position,
    pub embed: Embed,
    pub encoder: Option<Stack>,
    pub decoder: Option<Stack>,
    /// The output heads: those written in `head` plus those the objectives imply.
    pub heads: Vec<Head>,
    /// The pretraining losses, summed; empty for `objective = none`.
    pub objectives: Vec<Objective>,
}

/// Which stacks a model has.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum Family {
    EncoderOnly,
    DecoderOnly,
    EncoderDecoder,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum DType {
    F32,
    Bf16,
    F16,
}

impl DType {
    pub fn bytes(self) -> u64 {
        match self {
            DType::F32 => 4,
            DType::Bf16 | DType::F16 => 2,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub enum Norm {
    LayerNorm { eps: f64, bias: bool },
    RmsNorm { eps: f64 },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum Placement {
    /// `x + f(norm(x))`
    Pre,
    /// `norm(x + f(x))`
    Post,
}

#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub enum Position {
    /// A learned table of `context + offset` rows; position `i` reads row `i + offset`.
    Learned {
        offset: u64,
    },
    Sinusoidal,
    Rope(Rope),
    /// T5's bucketed relative attention bias, one table per stack.
    RelativeBias {
        buckets: u64,
        max_distance: u64,
    },
    Alibi,
    None,
}

#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Rope {
    pub theta: f64,
    /// The rotated part of each head, as a fraction of `head_dim`.
    pub fraction: f64,
    pub style: RopeStyle,
    /// How the rotation frequencies are stretched for long contexts.
    pub scaling: RopeScaling,
}

/// RoPE frequency scaling (`rope(scaling = …)`), as Hugging Face's `rope_scaling`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub enum RopeScaling {
    None,
    /// Position interpolation: every frequency divided by `factor`.
    Linear {
        factor: f64,
    },
    /// Llama 3.1's scaling: frequencies whose wavelength exceeds `original_context /
    /// low_freq_factor` divided by `factor`, those shorter than `original_context /
    /// high_freq_factor` kept, the band between interpolated smoothly.
    Llama3 {
        factor: f64,
        low_freq_factor: f64,
        high_freq_factor: f64,
        original_context: u64,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum RopeStyle {
    /// Rotate the two halves of each head (Hugging Face).
    Half,
    /// Rotate adjacent pairs (GPT-J, Meta's original code).
    Interleaved,
}

#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Embed {
    /// The output head shares the token embedding.
    pub tied: bool,
    /// Embed at this width, then project to `d_model`.
    pub factorized: Option<u64>,
    /// Number of token-type (segment) embeddings; 0 for none.
    pub segments: u64,
    /// A norm on the summed embeddings.
    pub norm: bool,
    /// Token embeddings are multiplied by this.
    pub scale: f64,
}

/// An encoder or decoder stack.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Stack {
    pub share: Share,
    /// One entry per layer, in order; `layers.len()` is the depth.
    pub layers: Vec<Layer>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum Share {
    None,
    /// One set of layer weights used by every layer (ALBERT).
    All,
}

/// One layer: residual sublayers in the order written.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Layer {
    /// The block this layer was instantiated from, if any.
    pub block: Option<String>,
    pub sublayers: Vec<Sublayer>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub enum Sublayer {
    Attention(Attention),
    CrossAttention(CrossAttention),
    Mlp(Mlp),
    Mamba(Mamba),
    TimeMix(TimeMix),
    ChannelMix(ChannelMix),
    Ssm(Ssm),
    Ttt(Ttt),
}

impl Sublayer {
    /// The section name this sublayer is written with.
    pub fn kind(&self) -> &'static str {
        match self {
            Sublayer::Attention(_) => "attention",
            Sublayer::CrossAttention(_) => "cross_attention",
            Sublayer::Mlp(_) => "mlp",
            Sublayer::Mamba(_) => "mamba",
            Sublayer::TimeMix(_) => "time_mix",
            Sublayer::ChannelMix(_) => "channel_mix",
            Sublayer::Ssm(_) => "ssm",
            Sublayer::Ttt(_) => "ttt",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Attention {
    pub heads: u64,
    /// Fewer than `heads`: grouped-query; 1: multi-query.
    pub kv_heads: u64,
    pub head_dim: u64,
    pub mask: Mask,
    pub bias: AttnBias,
    pub scale: f64,
}

#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct CrossAttention {
    pub heads: u64,
    pub kv_heads: u64,
    pub head_dim: u64,
    pub bias: AttnBias,
    pub scale: f64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum Mask {
    Causal,
    Bidirectional,
    /// Causal, and each query sees at most `window` keys (itself included).
    Sliding {
        window: u64,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum AttnBias {
    None,
    /// Biases on q, k, v and the output projection.
    All,
    /// Biases on q, k and v only.
    Qkv,
}

#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Mlp {
    pub hidden: u64,
    pub act: Activation,
    pub bias: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum Activation {
    /// Exact, erf-based.
    Gelu,
    GeluTanh,
    Relu,
    Silu,
    Swiglu,
    Geglu,
    Reglu,
}

impl Activation {
    /// Gated activations use three matrices (gate, up, down).
    pub fn is_gated(self) -> bool {
        matches!(
            self,
            Activation::Swiglu | Activation::Geglu | Activation::Reglu
        )
    }
}

/// Mamba-1 selective-scan mixer.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Mamba {
    pub d_state: u64,
    pub d_conv: u64,
    pub expand: u64,
    pub dt_rank: u64,
    pub conv_bias: bool,
    pub bias: bool,
}

/// RWKV-4 time mixing. It has no options: widths follow `d_model`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct TimeMix {}

/// RWKV-4 channel mixing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct ChannelMix {
    pub hidden: u64,
}

/// S4D-style diagonal linear time-invariant state space layer.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Ssm {
    pub d_state: u64,
    pub discretization: Discretization,
    pub init: SsmInit,
    pub act: Activation,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum Discretization {
    Zoh,
    Bilinear,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum SsmInit {
    S4dLin,
    S4dInv,
    Legs,
}

/// Test-time-training layer.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Ttt {
    pub heads: u64,
    pub inner: TttInner,
    pub mini_batch: u64,
    pub lr: f64,
    pub gate: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum TttInner {
    Linear,
    Mlp,
}

/// An output head.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub enum Head {
    /// Projection to the vocabulary (tied to the token embedding when `embed.tied`).
    Lm { scale: f64, bias: bool },
    /// BERT-style MLM head: dense + activation + norm to the embedding width, then the
    /// vocabulary projection (tied when `embed.tied`) with an output bias.
    MaskedLm,
    /// Dense + tanh on the first token (when `pooler`), then `labels` logits.
    Classifier { labels: u64, pooler: bool },
    /// ELECTRA's discriminator: dense + activation, then one logit per token.
    Discriminator,
}

/// One pretraining loss.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub enum Objective {
    NextToken,
    Mlm {
        rate: f64,
        mask: f64,
        random: f64,
        dynamic: bool,
    },
    Nsp,
    Sop,
    Rtd {
        generator: Box<ArchSpec>,
        weight: f64,
    },
    SpanCorruption {
        rate: f64,
        mean_span: f64,
    },
    Denoise {
        token_mask: f64,
        token_delete: f64,
        text_infill: f64,
        lambda: f64,
        sentence_permute: bool,
        document_rotate: bool,
    },
    Dpo {
        beta: f64,
    },
}

impl ArchSpec {
    /// The stacks in execution order: the encoder first.
    pub fn stacks(&self) -> impl Iterator<Item = (&'static str, &Stack)> {
        self.encoder
            .iter()
            .map(|s| ("encoder", s))
            .chain(self.decoder.iter().map(|s| ("decoder", s)))
    }

    /// Total number of layers over all stacks.
    pub fn num_layers(&self) -> usize {
        self.stacks().map(|(_, s)| s.layers.len()).sum()
    }

    /// The width of the token embedding table (`embed.factorized` or `d_model`).
    pub fn embed_width(&self) -> u64 {
        self.embed.factorized.unwrap_or(self.d_model)
    }
}

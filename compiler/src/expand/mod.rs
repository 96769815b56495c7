//! ArchSpec → Graph: the `forward` entry point of each family, built from the cells in this
//! directory. Parameters are named by `crate::params`; every `param` node's shape comes from
//! that table, so expansion and weight loading cannot disagree.

mod attention;
mod embed;
mod heads;
mod mamba;
mod mlp;
pub(crate) mod position;
mod rwkv;
mod ssm;
mod ttt;

pub use ssm::ssm_layer_graph;

use crate::graph::{DType, Dim, Graph, NodeId, ReduceOp, Shape, UnaryOp};
use crate::params::{param_table, sublayer_name};
use arch_dsl::spec::*;
use std::collections::HashMap;

/// What the caller will feed the graph.
#[derive(Clone, Copy, Debug, Default)]
pub struct ExpandOptions {
    /// Take an `attention_mask` input ([batch, seq], 1 = token, 0 = padding).
    pub attention_mask: bool,
    /// Expand `ssm` sublayers in their recurrent form (a scan, linear in seq) rather than
    /// the convolution form (a [d, seq, seq] Toeplitz product). The two agree to ~1e-6;
    /// the evaluator uses the convolution, compiled packages the recurrence.
    pub recurrent_ssm: bool,
}

/// The shape of one scan step of a [B, T, …] sequence: axis 1 dropped.
pub fn step_shape(s: &Shape) -> Shape {
    s.iter()
        .enumerate()
        .filter(|(i, _)| *i != 1)
        .map(|(_, d)| d.clone())
        .collect()
}

/// Names of the symbolic dimensions.
pub const BATCH: &str = "batch";
pub const SEQ: &str = "seq";
pub const TARGET_SEQ: &str = "tgt_seq";
/// Step graphs: the tokens the caches hold after the call (past + seq).
pub const KV_SEQ: &str = "kv_seq";
/// Step graphs of encoder-decoders: the encoder's length (cross-attention keys).
pub const SRC_SEQ: &str = "src_seq";
/// Step graphs: `kv_win_{w}` rows of a sliding window w's ring cache (min(w, capacity)).
pub const KV_WINDOW: &str = "kv_win_";

/// A step graph (the `prefill` and `decode` entry points) and the initial value of each
/// of its states.
pub struct StepGraph {
    pub graph: Graph,
    /// State name (without the `state:` prefix) → the value every element starts at.
    pub inits: Vec<(String, f32)>,
}

/// Why a model has no step graph yet, if it has none: the cells generation supports.
pub fn step_unsupported(spec: &ArchSpec) -> Option<String> {
    let dec = match (&spec.encoder, &spec.decoder) {
        (_, Some(d)) => d,
        (Some(_), None) => {
            return Some(format!(
                "`{}` is encoder-only: it has no decoder to generate with (use `archc embed`)",
                spec.name
            ))
        }
        (None, None) => return Some("a model needs a stack".into()),
    };
    for sub in dec.layers.iter().flat_map(|l| &l.sublayers) {
        let kind = match sub {
            Sublayer::Attention(_)
            | Sublayer::Mlp(_)
            | Sublayer::Mamba(_)
            | Sublayer::TimeMix(_)
            | Sublayer::ChannelMix(_)
            | Sublayer::Ssm(_)
            | Sublayer::Ttt(_) => continue,
            Sublayer::CrossAttention(_) if spec.encoder.is_some() => continue,
            Sublayer::CrossAttention(_) => "cross_attention",
        };
        return Some(format!(
            "`{}`: generation with `{kind}` sublayers is not built yet",
            spec.name
        ));
    }
    if !spec.heads.iter().any(|h| matches!(h, Head::Lm { .. })) {
        return Some(format!("`{}` has no LM head to generate with", spec.name));
    }
    match spec.position {
        Position::Sinusoidal => Some(format!(
            "`{}`: generation with sinusoidal positions is not built yet",
            spec.name
        )),
        _ => None,
    }
}

/// Whether a step program may take left-padded rows: not when a recurrent cell (Mamba,
/// RWKV-4, S4, TTT) would carry the padding tokens in its state.
pub fn step_takes_padding(spec: &ArchSpec) -> bool {
    !spec
        .decoder
        .iter()
        .flat_map(|d| d.layers.iter().flat_map(|l| &l.sublayers))
        .any(is_recurrent)
}

/// A cell whose state carries every token it has seen (Mamba, RWKV-4, S4, TTT).
fn is_recurrent(s: &Sublayer) -> bool {
    matches!(
        s,
        Sublayer::Mamba(_)
            | Sublayer::TimeMix(_)
            | Sublayer::ChannelMix(_)
            | Sublayer::Ssm(_)
            | Sublayer::Ttt(_)
    )
}

/// Whether a stack's step graph takes one token per call: recurrent sublayers, and
/// sliding windows (their ring caches hold `window` rows, one token's keys at a time).
fn recurrent(stack: &Stack) -> bool {
    stack.layers.iter().flat_map(|l| &l.sublayers).any(|s| {
        is_recurrent(s)
            || matches!(
                s,
                Sublayer::Attention(Attention {
                    mask: Mask::Sliding { .. },
                    ..
                })
            )
    })
}

/// The step graph of a decoder: one call runs `seq` new tokens of every row against the
/// caches, which hold `kv_seq − seq` earlier tokens, appends their keys and values, and
/// returns the logits of the last position. Recurrent sublayers (Mamba, RWKV-4, S4, TTT)
/// keep their states — Mamba's convolution window and SSM state, RWKV's token shifts and
/// WKV numerator, denominator and running maximum, S4's complex state, TTT's mini-batch
/// weights and gradient sums — and a model with any takes one token per call (`seq` = 1:
/// the prompt is fed token by token).
///
/// Inputs: `input_ids` [batch, seq], `position_ids` [batch, seq] (each token's position
/// among its row's real tokens, as Hugging Face counts them under left padding) and
/// `attention_mask` [batch, kv_seq] (0 for left padding, past included). States, per
/// attention sublayer `P`: `state:P.k` and `state:P.v`, laid out [kv_seq, batch,
/// kv_heads, head_dim] so that a cache of any capacity holds each call's keys as a
/// prefix. Outputs: `logits` [batch, 1, vocab] and the new states.
pub fn step(spec: &ArchSpec) -> Result<StepGraph, String> {
    if let Some(why) = step_unsupported(spec) {
        return Err(why);
    }
    let Some(dec) = &spec.decoder else {
        return Err("no decoder".into());
    };
    let mut cx = Cx::new(spec, "step");
    cx.recurrent_ssm = true;
    let seq = if recurrent(dec) {
        Dim::c(1)
    } else {
        Dim::sym(SEQ)
    };
    let ids =
        cx.g.input("input_ids", vec![Dim::sym(BATCH), seq.clone()], DType::I64);
    let pos = cx.g.input(
        "position_ids",
        vec![Dim::sym(BATCH), seq.clone()],
        DType::I64,
    );
    let attends = dec
        .layers
        .iter()
        .flat_map(|l| &l.sublayers)
        .any(|s| matches!(s, Sublayer::Attention(_)));
    let mask = attends.then(|| {
        let m = cx.g.input(
            "attention_mask",
            vec![Dim::sym(BATCH), Dim::sym(KV_SEQ)],
            DType::I64,
        );
        cx.g.cast(m, DType::F32)
    });
    let pos = cx.g.cast(pos, DType::F32);
    cx.step = Some(Step {
        positions: pos,
        queries: seq.clone(),
        inits: Vec::new(),
    });
    // An encoder-decoder's cross-attention reads the session's keys, values and encoder
    // mask, which the `encode` program computed once.
    let memory = spec.encoder.is_some().then(|| {
        let m = cx.g.input(
            &format!("{}encoder_mask", crate::kernel::build::STATE),
            vec![Dim::sym(BATCH), Dim::sym(SRC_SEQ)],
            DType::F32,
        );
        (m, Some(m))
    });
    let hidden = cx.stack("decoder", dec, ids, None, mask, memory, SEQ)?;
    heads::heads(&mut cx, hidden)?;
    let inits = cx.step.take().map(|s| s.inits).unwrap_or_default();
    Ok(StepGraph {
        graph: cx.finish()?,
        inits,
    })
}

/// The `encode` program of an encoder-decoder: the encoder over `input_ids` with its
/// `attention_mask` (both [batch, seq]), then every decoder cross-attention's keys and
/// values of its output, `{prefix}.cross_k` / `.cross_v` [batch, kv_heads, seq, head_dim],
/// and `encoder_mask` (the mask as f32): what the step program's session holds.
pub fn encode(spec: &ArchSpec) -> Result<Graph, String> {
    let (Some(enc), Some(dec)) = (&spec.encoder, &spec.decoder) else {
        return Err(format!("`{}` is not an encoder-decoder", spec.name));
    };
    let mut cx = Cx::new(spec, "encode");
    cx.recurrent_ssm = true;
    let ids = cx.g.input(
        "input_ids",
        vec![Dim::sym(BATCH), Dim::sym(SEQ)],
        DType::I64,
    );
    let mask = cx.g.input(
        "attention_mask",
        vec![Dim::sym(BATCH), Dim::sym(SEQ)],
        DType::I64,
    );
    let mask = cx.g.cast(mask, DType::F32);
    let types = (spec.embed.segments > 0).then(|| {
        cx.g.input(
            "token_type_ids",
            vec![Dim::sym(BATCH), Dim::sym(SEQ)],
            DType::I64,
        )
    });
    let memory = cx.stack("encoder", enc, ids, types, Some(mask), None, SEQ)?;
    for (i, layer) in dec.layers.iter().enumerate() {
        let li = if dec.share == Share::All { 0 } else { i };
        for (j, sub) in layer.sublayers.iter().enumerate() {
            if let Sublayer::CrossAttention(a) = sub {
                let prefix = format!("decoder.layers.{li}.{}", sublayer_name(&layer.sublayers, j));
                let (k, v) = attention::cross_keys(&mut cx, memory, &prefix, a);
                cx.g.output(&format!("{prefix}.cross_k"), k);
                cx.g.output(&format!("{prefix}.cross_v"), v);
            }
        }
        if dec.share == Share::All {
            break;
        }
    }
    cx.g.output("encoder_mask", mask);
    cx.finish()
}

/// What expansion of a step graph needs beyond the forward graph's.
pub struct Step {
    /// Each token's position, f32 [batch, seq].
    pub positions: NodeId,
    /// Tokens per call: `seq`, or 1 for models whose step graphs take one at a time.
    pub queries: Dim,
    /// The states declared so far and their initial values.
    pub inits: Vec<(String, f32)>,
}

impl Cx<'_> {
    /// `x` [B, T, …] → its last position [B, 1, …] (the row-wise gather of index T − 1).
    fn last_position(&mut self, x: NodeId) -> NodeId {
        let shape = self.g.shape(x).clone();
        let t = self.g.iota(vec![shape[1].clone()], 0);
        let last = self.g.reduce(ReduceOp::Max, t, 0);
        let last = self.g.cast(last, DType::I64);
        let mut perm: Vec<usize> = (0..shape.len()).collect();
        perm.swap(0, 1);
        let seq_major = self.g.permute(x, &perm);
        let picked = self.g.gather(seq_major, last);
        self.g.permute(picked, &perm)
    }

    /// A session state input `state:{name}` of `shape` starting at `init`, and its name
    /// (made unique: layers that share parameters have one prefix but a state each); the
    /// caller outputs the new value under that name with [`Cx::state_output`].
    pub fn state_input(&mut self, name: &str, shape: Shape, init: f32) -> (NodeId, String) {
        let mut unique = name.to_string();
        if let Some(s) = &mut self.step {
            let mut k = 1;
            while s.inits.iter().any(|(n, _)| *n == unique) {
                k += 1;
                unique = format!("{name}#{k}");
            }
            s.inits.push((unique.clone(), init));
        }
        let id = self.g.input(
            &format!("{}{unique}", crate::kernel::build::STATE),
            shape,
            DType::F32,
        );
        (id, unique)
    }

    pub fn state_output(&mut self, name: &str, value: NodeId) {
        self.g
            .output(&format!("{}{name}", crate::kernel::build::STATE), value);
    }

    /// The initial value of a recurrent state: in a step graph the session's state
    /// (with its name, for [`Cx::final_state`]), else `init` everywhere.
    pub fn initial_state(
        &mut self,
        name: &str,
        shape: Shape,
        init: f32,
    ) -> (NodeId, Option<String>) {
        if self.step.is_some() {
            let (id, unique) = self.state_input(name, shape, init);
            (id, Some(unique))
        } else {
            let c = self.g.constant(init as f64);
            (self.g.broadcast(c, shape), None)
        }
    }

    /// Keeps a recurrent state's final value for the next call (step graphs only).
    pub fn final_state(&mut self, name: Option<String>, value: NodeId) {
        if let Some(n) = name {
            self.state_output(&n, value);
        }
    }

    /// The sequence shifted one step later along axis 1 (`x'_t = x_{t−1}`): zero at t = 0,
    /// or in a step graph (one token per call) the previous call's token, kept as the
    /// state `name`.
    pub fn token_shift(&mut self, x: NodeId, name: &str) -> Result<NodeId, String> {
        if self.step.is_none() {
            return Ok(self.g.shift(x, 1, 1));
        }
        let shape = self.g.shape(x).clone();
        if shape.get(1) != Some(&Dim::c(1)) {
            return Err("a token shift in a step graph needs one token per call".into());
        }
        let (prev, unique) = self.state_input(name, shape, 0.0);
        self.state_output(&unique, x);
        Ok(prev)
    }
}

/// The forward graph: inputs `input_ids` (+ `attention_mask`, `token_type_ids`,
/// `decoder_input_ids` as the model needs), outputs `hidden`, `logits` and the heads'.
pub fn forward(spec: &ArchSpec, opts: &ExpandOptions) -> Result<Graph, String> {
    let mut cx = Cx::new(spec, "forward");
    cx.recurrent_ssm = opts.recurrent_ssm;
    let ids = cx.g.input(
        "input_ids",
        vec![Dim::sym(BATCH), Dim::sym(SEQ)],
        DType::I64,
    );
    let mask = opts.attention_mask.then(|| {
        let m = cx.g.input(
            "attention_mask",
            vec![Dim::sym(BATCH), Dim::sym(SEQ)],
            DType::I64,
        );
        cx.g.cast(m, DType::F32)
    });
    let types = (spec.embed.segments > 0).then(|| {
        cx.g.input(
            "token_type_ids",
            vec![Dim::sym(BATCH), Dim::sym(SEQ)],
            DType::I64,
        )
    });
    let hidden = match (&spec.encoder, &spec.decoder) {
        (Some(enc), Some(dec)) => {
            let memory = cx.stack("encoder", enc, ids, types, mask, None, SEQ)?;
            cx.g.output("encoder_hidden", memory);
            let dec_ids = cx.g.input(
                "decoder_input_ids",
                vec![Dim::sym(BATCH), Dim::sym(TARGET_SEQ)],
                DType::I64,
            );
            cx.stack(
                "decoder",
                dec,
                dec_ids,
                None,
                None,
                Some((memory, mask)),
                TARGET_SEQ,
            )?
        }
        (Some(enc), None) => cx.stack("encoder", enc, ids, types, mask, None, SEQ)?,
        (None, Some(dec)) => cx.stack("decoder", dec, ids, types, mask, None, SEQ)?,
        (None, None) => return Err("a model needs a stack".into()),
    };
    cx.g.output("hidden", hidden);
    heads::heads(&mut cx, hidden)?;
    cx.finish()
}

/// Expansion state: the graph being built and the parameter table.
pub struct Cx<'s> {
    pub g: Graph,
    pub spec: &'s ArchSpec,
    /// `ssm` sublayers as scans (see [`ExpandOptions::recurrent_ssm`]).
    recurrent_ssm: bool,
    /// Building a step graph (caches as session state, positions given).
    pub step: Option<Step>,
    shapes: HashMap<String, Vec<usize>>,
    error: Option<String>,
}

impl<'s> Cx<'s> {
    fn new(spec: &'s ArchSpec, name: &str) -> Cx<'s> {
        let shapes = param_table(spec)
            .into_iter()
            .map(|p| (p.name, p.shape))
            .collect();
        Cx {
            g: Graph::new(name),
            spec,
            recurrent_ssm: false,
            step: None,
            shapes,
            error: None,
        }
    }

    fn finish(self) -> Result<Graph, String> {
        if let Some(e) = self.error {
            return Err(e);
        }
        let g = self.g.finish()?;
        crate::graph::verify(&g)?;
        Ok(g)
    }

    /// A parameter by canonical name, shaped as the parameter table says.
    pub fn param(&mut self, name: &str) -> NodeId {
        let shape: Shape = match self.shapes.get(name) {
            Some(s) => s.iter().map(|&d| Dim::c(d as u64)).collect(),
            None => {
                self.error.get_or_insert_with(|| {
                    format!("expansion uses `{name}`, which the parameter table lacks")
                });
                vec![Dim::c(1)]
            }
        };
        self.g.param(name, shape)
    }

    pub fn has_param(&self, name: &str) -> bool {
        self.shapes.contains_key(name)
    }

    /// `x @ Wᵀ (+ b)` for `{prefix}.weight` and, when it exists, `{prefix}.bias`.
    pub fn linear(&mut self, x: NodeId, prefix: &str) -> NodeId {
        let w = self.param(&format!("{prefix}.weight"));
        let y = self.g.linear(x, w);
        let bias = format!("{prefix}.bias");
        if self.has_param(&bias) {
            let b = self.param(&bias);
            self.g.add(y, b)
        } else {
            y
        }
    }

    /// The model's norm over the last axis, with `{prefix}.weight` (and `.bias`).
    pub fn norm(&mut self, x: NodeId, prefix: &str) -> NodeId {
        let last = self.g.shape(x).len() - 1;
        let (centred, eps) = match self.spec.norm {
            Norm::LayerNorm { eps, .. } => {
                let mean = self.g.reduce(ReduceOp::Mean, x, last);
                (self.g.sub(x, mean), eps)
            }
            Norm::RmsNorm { eps } => (x, eps),
        };
        let sq = self.g.unary(UnaryOp::Square, centred);
        let var = self.g.reduce(ReduceOp::Mean, sq, last);
        let eps = self.g.constant(eps);
        let var = self.g.add(var, eps);
        let inv = self.g.unary(UnaryOp::Rsqrt, var);
        let normed = self.g.mul(centred, inv);
        let w = self.param(&format!("{prefix}.weight"));
        let y = self.g.mul(normed, w);
        let bias = format!("{prefix}.bias");
        if self.has_param(&bias) {
            let b = self.param(&bias);
            self.g.add(y, b)
        } else {
            y
        }
    }

    /// Zeros of a shape (for scan states).
    pub fn zeros(&mut self, shape: Shape) -> NodeId {
        let z = self.g.constant(0.0);
        self.g.broadcast(z, shape)
    }

    /// A stack: embeddings, positions shared by its layers, the layers, the final norm.
    #[allow(clippy::too_many_arguments)]
    fn stack(
        &mut self,
        name: &str,
        stack: &Stack,
        ids: NodeId,
        types: Option<NodeId>,
        mask: Option<NodeId>,
        memory: Option<(NodeId, Option<NodeId>)>,
        seq: &str,
    ) -> Result<NodeId, String> {
        let mut x = embed::embed(self, name, ids, types, seq)?;
        let pos = position::StackPositions::new(self, name, stack, seq)?;
        for (i, layer) in stack.layers.iter().enumerate() {
            let li = if stack.share == Share::All { 0 } else { i };
            for (j, sub) in layer.sublayers.iter().enumerate() {
                let prefix = format!("{name}.layers.{li}.{}", sublayer_name(&layer.sublayers, j));
                x = self.residual(x, &prefix, |cx, h| match sub {
                    Sublayer::Attention(a) => {
                        attention::self_attention(cx, h, &prefix, a, &pos, mask)
                    }
                    Sublayer::CrossAttention(a) => match memory {
                        Some((mem, mem_mask)) => {
                            attention::cross_attention(cx, h, mem, mem_mask, &prefix, a)
                        }
                        None => Err("cross-attention without an encoder".into()),
                    },
                    Sublayer::Mlp(m) => mlp::mlp(cx, h, &prefix, m),
                    Sublayer::Mamba(m) => mamba::mamba(cx, h, &prefix, m),
                    Sublayer::TimeMix(_) => rwkv::time_mix(cx, h, &prefix),
                    Sublayer::ChannelMix(_) => rwkv::channel_mix(cx, h, &prefix),
                    Sublayer::Ssm(s) if cx.recurrent_ssm => ssm::ssm_recurrent(cx, h, &prefix, s),
                    Sublayer::Ssm(s) => ssm::ssm(cx, h, &prefix, s),
                    Sublayer::Ttt(t) => ttt::ttt(cx, h, &prefix, t, &pos),
                })?;
            }
        }
        if self.step.is_some() {
            // Only the last position's logits choose the next token.
            x = self.last_position(x);
        }
        if self.spec.final_norm {
            x = self.norm(x, &format!("{name}.final_norm"));
        }
        Ok(x)
    }

    /// One residual branch with its norm where `placement` puts it.
    fn residual(
        &mut self,
        x: NodeId,
        prefix: &str,
        f: impl FnOnce(&mut Cx<'s>, NodeId) -> Result<NodeId, String>,
    ) -> Result<NodeId, String> {
        let norm = format!("{prefix}.norm");
        Ok(match self.spec.placement {
            Placement::Pre => {
                let h = self.norm(x, &norm);
                let y = f(self, h)?;
                self.g.add(x, y)
            }
            Placement::Post => {
                let y = f(self, x)?;
                let sum = self.g.add(x, y);
                self.norm(sum, &norm)
            }
        })
    }

    /// The activation function of a (non-gated) activation, as a unary op.
    pub fn act(&mut self, act: Activation, x: NodeId) -> NodeId {
        let op = match act {
            Activation::Gelu | Activation::Geglu => UnaryOp::Gelu,
            Activation::GeluTanh => UnaryOp::GeluTanh,
            Activation::Relu | Activation::Reglu => UnaryOp::Relu,
            Activation::Silu | Activation::Swiglu => UnaryOp::Silu,
        };
        self.g.unary(op, x)
    }
}

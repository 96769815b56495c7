//! ArchSpec → Graph: the `forward` entry point of each family, built from the cells in this
//! directory. Parameters are named by `crate::params`; every `param` node's shape comes from
//! that table, so expansion and weight loading cannot disagree.

mod attention;
mod embed;
mod heads;
mod mamba;
mod mlp;
mod position;
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

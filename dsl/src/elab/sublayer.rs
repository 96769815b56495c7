//! Sublayer sections → typed sublayers: attention and cross-attention, MLP, Mamba, S4D `ssm`
//! and TTT, each with the defaults of ARCH_LANGUAGE.md §7 and its own checks.

use super::ctor::{ArgTy, CtorDef};
use super::stack::{StackCx, StackKind};
use super::typed::{Elaborator, Sec};
use crate::ast::ExprKind;
use crate::diag::Diagnostic;
use crate::source::Span;
use crate::spec::*;

const MASKS: &[CtorDef] = &[
    CtorDef {
        name: "causal",
        args: &[],
    },
    CtorDef {
        name: "bidirectional",
        args: &[],
    },
    CtorDef {
        name: "sliding",
        args: &[("window", ArgTy::Count)],
    },
];

const ACTIVATIONS: &[&str] = &[
    "gelu",
    "gelu_tanh",
    "relu",
    "silu",
    "swiglu",
    "geglu",
    "reglu",
];

impl Elaborator<'_> {
    pub(super) fn attention(
        &mut self,
        sec: &mut Sec,
        cx: &StackCx,
        kind: StackKind,
    ) -> Option<Attention> {
        let (heads, kv_heads, head_dim, bias, scale) = self.attention_common(sec, cx)?;
        let default_mask = if kind == StackKind::Encoder {
            Mask::Bidirectional
        } else {
            Mask::Causal
        };
        let scope = sec.scope.clone();
        let mask = match self.binding(sec, "mask") {
            None => default_mask,
            Some(b) => match self.ctor(b.expr, MASKS, "mask", &scope)? {
                c if c.name == "causal" => Mask::Causal,
                c if c.name == "bidirectional" => Mask::Bidirectional,
                c => {
                    let window = c.int("window", 0);
                    if !c.has("window") {
                        let d = Diagnostic::error(c.span, "`sliding` needs a window")
                            .with_label("no window")
                            .with_help("write `sliding(window = 256)`");
                        self.diags.push(d);
                        return None;
                    }
                    if window > cx.context {
                        let d = Diagnostic::error(c.arg_span("window"), format!("sliding window {window} is larger than `context` ({})", cx.context))
                            .with_label("window larger than the context")
                            .with_help("a window at least as long as the context is plain causal attention: write `mask = causal`");
                        self.diags.push(d);
                        return None;
                    }
                    Mask::Sliding { window }
                }
            },
        };
        self.check_rope(sec.span, head_dim, cx);
        Some(Attention {
            heads,
            kv_heads,
            head_dim,
            mask,
            bias,
            scale,
        })
    }

    pub(super) fn cross_attention(
        &mut self,
        sec: &mut Sec,
        cx: &StackCx,
        kind: StackKind,
    ) -> Option<CrossAttention> {
        let common = self.attention_common(sec, cx);
        if kind != StackKind::CrossDecoder {
            let d = Diagnostic::error(sec.span, "`cross_attention` outside the decoder of an encoder-decoder model")
                .with_label("nothing to attend to here")
                .with_help("cross-attention reads the encoder's output: it belongs in `decoder` of a model that also has an `encoder`");
            self.diags.push(d);
            return None;
        }
        let (heads, kv_heads, head_dim, bias, scale) = common?;
        Some(CrossAttention {
            heads,
            kv_heads,
            head_dim,
            bias,
            scale,
        })
    }

    /// heads, kv_heads, head_dim, bias, scale — shared by self- and cross-attention.
    fn attention_common(
        &mut self,
        sec: &mut Sec,
        cx: &StackCx,
    ) -> Option<(u64, u64, u64, AttnBias, f64)> {
        let heads = self.int_req(sec, "heads", 1);
        let kv = self.int_opt(sec, "kv_heads", 1);
        let head_dim = match self.int_opt(sec, "head_dim", 1) {
            Ok(Some(h)) => h,
            Ok(None) if cx.d_model.is_multiple_of(heads) || !cx.d_model_ok => {
                (cx.d_model / heads).max(1)
            }
            Ok(None) => {
                let d = Diagnostic::error(
                    sec.span,
                    format!(
                        "`d_model` ({}) is not divisible by `heads` ({heads})",
                        cx.d_model
                    ),
                )
                .with_label("the default `head_dim = d_model / heads` does not divide")
                .with_help("set `head_dim` explicitly, or change `heads`");
                self.diags.push(d);
                1
            }
            Err(()) => 1,
        };
        let kv_heads = match kv {
            Ok(Some(k)) => {
                if k > heads || !heads.is_multiple_of(k) {
                    let span = self.recs.all[sec.id]
                        .field("kv_heads")
                        .map_or(sec.span, |b| b.expr.span);
                    let d = Diagnostic::error(
                        span,
                        format!("`heads` ({heads}) is not a multiple of `kv_heads` ({k})"),
                    )
                    .with_label("each key/value head must serve the same number of query heads")
                    .with_help("grouped-query attention needs `heads` divisible by `kv_heads`");
                    self.diags.push(d);
                }
                k
            }
            _ => heads,
        };
        let bias = match self.binding(sec, "bias") {
            None => AttnBias::None,
            Some(b) => match &b.expr.kind {
                ExprKind::Name(n) if n == "qkv" => AttnBias::Qkv,
                _ => match self.eval_binding(sec.id, "bias", b, &sec.scope.clone()) {
                    Some(crate::elab::eval::Value::Bool(true)) => AttnBias::All,
                    Some(crate::elab::eval::Value::Bool(false)) => AttnBias::None,
                    Some(v) => {
                        let d = Diagnostic::error(
                            b.expr.span,
                            format!(
                                "`bias` must be `true`, `false` or `qkv`, found {}",
                                v.type_name()
                            ),
                        )
                        .with_label("expected `true`, `false` or `qkv`");
                        self.diags.push(d);
                        AttnBias::None
                    }
                    None => AttnBias::None,
                },
            },
        };
        let scale = self
            .float_opt(sec, "scale")
            .unwrap_or(1.0 / (head_dim as f64).sqrt());
        Some((heads, kv_heads, head_dim, bias, scale))
    }

    /// RoPE rotates pairs: the rotated part of each head must have an even width.
    fn check_rope(&mut self, span: Span, head_dim: u64, cx: &StackCx) {
        let Position::Rope(rope) = cx.position else {
            return;
        };
        let rotated = head_dim as f64 * rope.fraction;
        if rotated.fract() != 0.0 || !(rotated as u64).is_multiple_of(2) || rotated == 0.0 {
            let mut d = Diagnostic::error(span, format!("RoPE would rotate an odd or fractional width: {head_dim} × {} = {rotated}", rope.fraction))
                .with_label(format!("head_dim = {head_dim}"))
                .with_help("RoPE rotates pairs of dimensions: `head_dim × fraction` must be a positive even integer");
            if let Some(p) = cx.position_span {
                d = d.with_related(p, "position set here");
            }
            self.diags.push(d);
        }
    }

    pub(super) fn mlp(&mut self, sec: &mut Sec) -> Mlp {
        let hidden = self.int_req(sec, "hidden", 1);
        let act = self
            .activation(sec, ACTIVATIONS)
            .unwrap_or(Activation::Gelu);
        let bias = self.bool_opt(sec, "bias").unwrap_or(false);
        Mlp { hidden, act, bias }
    }

    fn activation(
        &mut self,
        sec: &mut Sec,
        options: &'static [&'static str],
    ) -> Option<Activation> {
        Some(match self.word_field(sec, "act", options)?.0 {
            "gelu_tanh" => Activation::GeluTanh,
            "relu" => Activation::Relu,
            "silu" => Activation::Silu,
            "swiglu" => Activation::Swiglu,
            "geglu" => Activation::Geglu,
            "reglu" => Activation::Reglu,
            _ => Activation::Gelu,
        })
    }

    pub(super) fn mamba(&mut self, sec: &mut Sec, cx: &StackCx) -> Mamba {
        Mamba {
            d_state: self.int_opt(sec, "d_state", 1).ok().flatten().unwrap_or(16),
            d_conv: self.int_opt(sec, "d_conv", 1).ok().flatten().unwrap_or(4),
            expand: self.int_opt(sec, "expand", 1).ok().flatten().unwrap_or(2),
            dt_rank: self
                .int_opt(sec, "dt_rank", 1)
                .ok()
                .flatten()
                .unwrap_or(cx.d_model.div_ceil(16)),
            conv_bias: self.bool_opt(sec, "conv_bias").unwrap_or(true),
            bias: self.bool_opt(sec, "bias").unwrap_or(false),
        }
    }

    pub(super) fn ssm(&mut self, sec: &mut Sec) -> Option<Ssm> {
        let d_state = self.int_opt(sec, "d_state", 2).ok().flatten().unwrap_or(64);
        if !d_state.is_multiple_of(2) {
            let span = self.recs.all[sec.id]
                .field("d_state")
                .map_or(sec.span, |b| b.expr.span);
            let d = Diagnostic::error(
                span,
                format!("`d_state` must be even for a diagonal S4D layer, found {d_state}"),
            )
            .with_label("odd state size")
            .with_help("S4D keeps d_state / 2 complex-conjugate pairs");
            self.diags.push(d);
        }
        let discretization = match self.word_field(sec, "discretization", &["zoh", "bilinear"]) {
            Some(("bilinear", _)) => Discretization::Bilinear,
            _ => Discretization::Zoh,
        };
        let init = match self.word_field(sec, "init", &["s4d_lin", "s4d_inv", "legs"]) {
            Some(("s4d_inv", _)) => SsmInit::S4dInv,
            Some(("legs", _)) => SsmInit::Legs,
            _ => SsmInit::S4dLin,
        };
        let act = self
            .activation(sec, &["gelu", "gelu_tanh", "relu", "silu"])
            .unwrap_or(Activation::Gelu);
        Some(Ssm {
            d_state,
            discretization,
            init,
            act,
        })
    }

    pub(super) fn ttt(&mut self, sec: &mut Sec, cx: &StackCx) -> Option<Ttt> {
        let heads = self.int_req(sec, "heads", 1);
        let inner = match self.word_field(sec, "inner", &["linear", "mlp"]) {
            Some(("mlp", _)) => TttInner::Mlp,
            _ => TttInner::Linear,
        };
        let mini_batch = self
            .int_opt(sec, "mini_batch", 1)
            .ok()
            .flatten()
            .unwrap_or(16);
        let lr = self.float_opt(sec, "lr").unwrap_or(1.0);
        if lr <= 0.0 {
            let span = self.recs.all[sec.id]
                .field("lr")
                .map_or(sec.span, |b| b.expr.span);
            self.diags.push(
                Diagnostic::error(span, format!("`lr` must be > 0, found {lr}"))
                    .with_label("inner learning rate"),
            );
        }
        let gate = self.bool_opt(sec, "gate").unwrap_or(true);
        if !cx.d_model.is_multiple_of(heads) && cx.d_model_ok {
            let d = Diagnostic::error(
                sec.span,
                format!(
                    "`d_model` ({}) is not divisible by `heads` ({heads})",
                    cx.d_model
                ),
            )
            .with_label("each TTT head gets d_model / heads channels");
            self.diags.push(d);
            return None;
        }
        self.check_rope(sec.span, cx.d_model / heads, cx);
        Some(Ttt {
            heads,
            inner,
            mini_batch,
            lr,
            gate,
        })
    }
}

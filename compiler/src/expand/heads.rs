//! Output heads on the last hidden state: the LM projection (tied or not, scaled, biased),
//! BERT's MLM transform head, the pooler and classifier (NSP, SOP, classification), and
//! ELECTRA's discriminator.

use super::Cx;
use crate::graph::{NodeId, UnaryOp};
use arch_dsl::spec::{Activation, Head, Sublayer};

/// The activation the heads use: that of the model's first MLP (Hugging Face's
/// `hidden_act`), GELU when there is none.
fn head_act(cx: &Cx) -> Activation {
    cx.spec
        .stacks()
        .flat_map(|(_, s)| s.layers.iter().flat_map(|l| &l.sublayers))
        .find_map(|s| match s {
            Sublayer::Mlp(m) => Some(m.act),
            _ => None,
        })
        .unwrap_or(Activation::Gelu)
}

pub fn heads(cx: &mut Cx, hidden: NodeId) -> Result<(), String> {
    let spec = cx.spec;
    let has_logits_head = spec
        .heads
        .iter()
        .any(|h| matches!(h, Head::Lm { .. } | Head::MaskedLm));
    for head in &spec.heads {
        if cx.step.is_some() && !matches!(head, Head::Lm { .. }) {
            continue; // a step graph computes the next token's logits only
        }
        match *head {
            Head::Lm { scale, bias } => {
                let x = if scale != 1.0 {
                    cx.g.scale(hidden, scale)
                } else {
                    hidden
                };
                let w = if spec.embed.tied {
                    if spec.embed_width() != spec.d_model {
                        return Err(
                            "a tied LM head needs the embedding width to equal d_model".into()
                        );
                    }
                    cx.param("embed.tokens.weight")
                } else {
                    cx.param("head.lm.weight")
                };
                let mut logits = cx.g.linear(x, w);
                if bias {
                    let b = cx.param("head.lm.bias");
                    logits = cx.g.add(logits, b);
                }
                cx.g.output("logits", logits);
            }
            Head::MaskedLm => {
                let act = head_act(cx);
                let h = cx.linear(hidden, "head.mlm.dense");
                let h = cx.act(act, h);
                let h = cx.norm(h, "head.mlm.norm");
                let w = if spec.embed.tied {
                    cx.param("embed.tokens.weight")
                } else {
                    cx.param("head.mlm.decoder.weight")
                };
                let logits = cx.g.linear(h, w);
                let b = cx.param("head.mlm.bias");
                let logits = cx.g.add(logits, b);
                cx.g.output("logits", logits);
            }
            Head::Classifier { pooler, .. } => {
                let first = first_token(cx, hidden);
                let pooled = if pooler {
                    let p = cx.linear(first, "head.pooler");
                    let p = cx.g.unary(UnaryOp::Tanh, p);
                    cx.g.output("pooler", p);
                    p
                } else {
                    first
                };
                let logits = cx.linear(pooled, "head.classifier");
                cx.g.output("classifier_logits", logits);
            }
            Head::Discriminator => {
                let act = head_act(cx);
                let h = cx.linear(hidden, "head.discriminator.dense");
                let h = cx.act(act, h);
                let logits = cx.linear(h, "head.discriminator.out");
                let s = cx.g.shape(logits).clone();
                let logits = cx.g.reshape(logits, vec![s[0].clone(), s[1].clone()]);
                cx.g.output(
                    if has_logits_head {
                        "discriminator_logits"
                    } else {
                        "logits"
                    },
                    logits,
                );
            }
        }
    }
    Ok(())
}

/// hidden[:, 0] as [B, d].
fn first_token(cx: &mut Cx, hidden: NodeId) -> NodeId {
    let s = cx.g.shape(hidden).clone();
    let first = cx.g.slice(hidden, 1, 0, 1);
    cx.g.reshape(first, vec![s[0].clone(), s[2].clone()])
}

//! Where each canonical parameter lives in a checkpoint of each naming scheme, and how to
//! turn that tensor into the canonical one.
//!
//! A [`Scheme`] is a naming (canonical, or one Hugging Face family with one prefix) and
//! [`plan`] answers, for one canonical parameter, with a [`Src`]: which tensor to read and
//! which layout change to apply. The loader tries every scheme and keeps the one that finds
//! the most parameters, so one missing tensor still yields a clear "missing" error rather
//! than "unknown naming".

use arch_dsl::spec::{ArchSpec, Sublayer};

use crate::params::{sublayer_name, ParamInfo};

/// A checkpoint naming scheme.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Family {
    Canonical,
    Gpt2,
    OpenAiGpt,
    Bert,
    Albert,
    T5,
    Bart,
    Llama,
    Mamba,
    Rwkv,
    /// llama.cpp's GGUF tensor names (`token_embd`, `blk.N.attn_q`, …).
    Gguf,
}

/// A family with the prefix its backbone tensors carry (`bert.`, `model.`, … or none).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Scheme {
    pub family: Family,
    pub prefix: &'static str,
    pub label: &'static str,
}

/// Every scheme the loader tries, in order of preference on a tie.
pub(crate) const SCHEMES: &[Scheme] = &[
    Scheme {
        family: Family::Canonical,
        prefix: "",
        label: "canonical",
    },
    Scheme {
        family: Family::Gpt2,
        prefix: "transformer.",
        label: "GPT2LMHeadModel",
    },
    Scheme {
        family: Family::Gpt2,
        prefix: "",
        label: "GPT2Model",
    },
    Scheme {
        family: Family::OpenAiGpt,
        prefix: "transformer.",
        label: "OpenAIGPTLMHeadModel",
    },
    Scheme {
        family: Family::OpenAiGpt,
        prefix: "",
        label: "OpenAIGPTModel",
    },
    Scheme {
        family: Family::Bert,
        prefix: "bert.",
        label: "BertForPreTraining/BertForMaskedLM",
    },
    Scheme {
        family: Family::Bert,
        prefix: "roberta.",
        label: "RobertaForMaskedLM",
    },
    Scheme {
        family: Family::Bert,
        prefix: "electra.",
        label: "ElectraForPreTraining/ElectraForMaskedLM",
    },
    Scheme {
        family: Family::Bert,
        prefix: "",
        label: "BertModel/RobertaModel/ElectraModel",
    },
    Scheme {
        family: Family::Albert,
        prefix: "albert.",
        label: "AlbertForMaskedLM/AlbertForPreTraining",
    },
    Scheme {
        family: Family::Albert,
        prefix: "",
        label: "AlbertModel",
    },
    Scheme {
        family: Family::T5,
        prefix: "",
        label: "T5ForConditionalGeneration",
    },
    Scheme {
        family: Family::Bart,
        prefix: "model.",
        label: "BartForConditionalGeneration",
    },
    Scheme {
        family: Family::Bart,
        prefix: "",
        label: "BartModel",
    },
    Scheme {
        family: Family::Llama,
        prefix: "model.",
        label: "LlamaForCausalLM",
    },
    Scheme {
        family: Family::Llama,
        prefix: "",
        label: "LlamaModel",
    },
    Scheme {
        family: Family::Mamba,
        prefix: "backbone.",
        label: "MambaForCausalLM",
    },
    Scheme {
        family: Family::Mamba,
        prefix: "",
        label: "MambaModel",
    },
    Scheme {
        family: Family::Rwkv,
        prefix: "rwkv.",
        label: "RwkvForCausalLM",
    },
    Scheme {
        family: Family::Rwkv,
        prefix: "",
        label: "RwkvModel",
    },
    Scheme {
        family: Family::Gguf,
        prefix: "",
        label: "GGUF",
    },
];

/// How to obtain one canonical tensor from a checkpoint.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Src {
    /// Tensor `name`, expected `shape`: the canonical data in the same order. Any shape equal
    /// to `shape` up to axes of size 1 is accepted (`[1, 1, d]` for `[d]`).
    Plain { name: String, shape: Vec<usize> },
    /// 2-D tensor `name` of `shape` [a, b] (a `Conv1D` weight, `[in, out]`), transposed.
    Transpose { name: String, shape: Vec<usize> },
    /// Rows `start..start + len` along axis 0 of tensor `name` of `shape` — after transposing
    /// it when `transpose` — for fused projections (GPT-2's `c_attn`).
    Rows {
        name: String,
        shape: Vec<usize>,
        transpose: bool,
        start: usize,
        len: usize,
    },
    /// A tensor holding −exp(canonical) (llama.cpp's Mamba `ssm_a`).
    NegLog { name: String, shape: Vec<usize> },
    /// A q/k projection in llama.cpp's interleaved-RoPE row order, `heads` heads.
    RopeRows {
        name: String,
        shape: Vec<usize>,
        heads: usize,
    },
    /// The first alternative whose tensor the checkpoint holds.
    Any(Vec<Src>),
    /// This naming has no tensor for the parameter.
    Nothing,
}

fn plain(name: impl Into<String>, shape: &[usize]) -> Src {
    Src::Plain {
        name: name.into(),
        shape: shape.to_vec(),
    }
}

/// A `Conv1D` weight: stored [in, out], canonical [out, in].
fn conv1d(name: impl Into<String>, shape: &[usize]) -> Src {
    Src::Transpose {
        name: name.into(),
        shape: vec![shape[1], shape[0]],
    }
}

/// Where canonical parameter `p` lives in `scheme`, for `spec`.
pub(crate) fn plan(scheme: &Scheme, spec: &ArchSpec, p: &ParamInfo) -> Src {
    let parts: Vec<&str> = p.name.split('.').collect();
    let cx = Cx {
        spec,
        pre: scheme.prefix,
        shape: &p.shape,
    };
    match scheme.family {
        Family::Canonical => Some(plain(p.name.clone(), &p.shape)),
        Family::Gpt2 | Family::OpenAiGpt => cx.gpt(scheme.family, &parts),
        Family::Bert => cx.bert(&parts),
        Family::Albert => cx.albert(&parts),
        Family::T5 => cx.t5(&parts),
        Family::Bart => cx.bart(&parts),
        Family::Llama => cx.llama(&parts),
        Family::Mamba => cx.mamba(&parts),
        Family::Rwkv => cx.rwkv(&parts),
        Family::Gguf => cx.gguf(&parts),
    }
    .unwrap_or(Src::Nothing)
}

struct Cx<'a> {
    spec: &'a ArchSpec,
    pre: &'a str,
    shape: &'a [usize],
}

/// A canonical layer parameter, split: stack, layer, sublayer, the rest of the name.
struct LayerParam<'s, 'a> {
    stack: &'s str,
    layer: usize,
    /// Position of the sublayer in its layer.
    index: usize,
    sub: &'a Sublayer,
    rest: &'s [&'s str],
}

impl<'a> Cx<'a> {
    /// `name` under the backbone prefix, read as is.
    fn p(&self, name: impl AsRef<str>) -> Src {
        plain(format!("{}{}", self.pre, name.as_ref()), self.shape)
    }

    /// [`Self::p`] stored with leading axes of size 1 (`[1, 1, d]` for `[d]`): read as
    /// the canonical shape, written back (checkpoint export) in the stored one.
    fn p_lead(&self, name: impl AsRef<str>, ones: usize) -> Src {
        let mut shape = vec![1; ones];
        shape.extend_from_slice(self.shape);
        plain(format!("{}{}", self.pre, name.as_ref()), &shape)
    }

    /// `name` without the prefix (heads), read as is.
    fn top(&self, name: impl AsRef<str>) -> Src {
        plain(name.as_ref(), self.shape)
    }

    /// Resolves `S.layers.i.kind.…` against the spec.
    fn layer<'s>(&self, parts: &'s [&'s str]) -> Option<LayerParam<'s, 'a>> {
        let [stack, "layers", i, sub, rest @ ..] = parts else {
            return None;
        };
        let st = match *stack {
            "encoder" => self.spec.encoder.as_ref()?,
            "decoder" => self.spec.decoder.as_ref()?,
            _ => return None,
        };
        let layer: usize = i.parse().ok()?;
        let subs = &st.layers.get(layer)?.sublayers;
        let index = (0..subs.len()).find(|&j| sublayer_name(subs, j) == *sub)?;
        Some(LayerParam {
            stack,
            layer,
            index,
            sub: &subs[index],
            rest,
        })
    }

    /// `weight` or `bias` of a norm or linear map: the last part of a canonical name.
    fn wb<'s>(rest: &'s [&'s str]) -> Option<(&'s str, &'s str)> {
        match rest {
            [m, wb @ ("weight" | "bias")] => Some((m, wb)),
            _ => None,
        }
    }

    // ---- GPT-2 and GPT-1: Conv1D layout, fused c_attn ------------------------------------

    fn gpt(&self, fam: Family, parts: &[&str]) -> Option<Src> {
        let gpt2 = fam == Family::Gpt2;
        match parts {
            ["embed", "tokens", "weight"] => {
                return Some(self.p(if gpt2 {
                    "wte.weight"
                } else {
                    "tokens_embed.weight"
                }))
            }
            ["decoder", "positions", "weight"] => {
                return Some(self.p(if gpt2 {
                    "wpe.weight"
                } else {
                    "positions_embed.weight"
                }))
            }
            ["decoder", "final_norm", wb] if gpt2 => return Some(self.p(format!("ln_f.{wb}"))),
            ["head", "lm", "weight"] => return Some(self.top("lm_head.weight")),
            _ => {}
        }
        let l = self.layer(parts)?;
        if l.stack != "decoder" {
            return None;
        }
        let h = format!("{}h.{}.", self.pre, l.layer);
        let (m, wb) = Self::wb(l.rest)?;
        match (l.sub, m) {
            (Sublayer::Attention(_), "norm") => Some(self.p(format!("h.{}.ln_1.{wb}", l.layer))),
            (Sublayer::Mlp(_), "norm") => Some(self.p(format!("h.{}.ln_2.{wb}", l.layer))),
            (Sublayer::Attention(a), "q" | "k" | "v") => {
                let (q, kv) = (
                    (a.heads * a.head_dim) as usize,
                    (a.kv_heads * a.head_dim) as usize,
                );
                let (start, len) = match m {
                    "q" => (0, q),
                    "k" => (q, kv),
                    _ => (q + kv, kv),
                };
                let name = format!("{h}attn.c_attn.{wb}");
                let d = self.spec.d_model as usize;
                Some(if wb == "weight" {
                    Src::Rows {
                        name,
                        shape: vec![d, q + 2 * kv],
                        transpose: true,
                        start,
                        len,
                    }
                } else {
                    Src::Rows {
                        name,
                        shape: vec![q + 2 * kv],
                        transpose: false,
                        start,
                        len,
                    }
                })
            }
            (Sublayer::Attention(_), "o") => {
                Some(self.conv1d_or_bias(format!("{h}attn.c_proj.{wb}"), wb))
            }
            (Sublayer::Mlp(m), "up") if !m.act.is_gated() => {
                Some(self.conv1d_or_bias(format!("{h}mlp.c_fc.{wb}"), wb))
            }
            (Sublayer::Mlp(m), "down") if !m.act.is_gated() => {
                Some(self.conv1d_or_bias(format!("{h}mlp.c_proj.{wb}"), wb))
            }
            _ => None,
        }
    }

    fn conv1d_or_bias(&self, name: String, wb: &str) -> Src {
        if wb == "weight" {
            conv1d(name, self.shape)
        } else {
            plain(name, self.shape)
        }
    }

    // ---- BERT, RoBERTa, ELECTRA ------------------------------------------------------------

    /// Embeddings shared by the BERT and ALBERT namings.
    fn bert_embeddings(&self, parts: &[&str]) -> Option<Src> {
        Some(match parts {
            ["embed", "tokens", "weight"] => self.p("embeddings.word_embeddings.weight"),
            ["embed", "segments", "weight"] => self.p("embeddings.token_type_embeddings.weight"),
            ["encoder", "positions", "weight"] => self.p("embeddings.position_embeddings.weight"),
            ["encoder", "embed_norm", wb] => self.p(format!("embeddings.LayerNorm.{wb}")),
            _ => return None,
        })
    }

    /// The MLM head under each family's names: BERT `cls.predictions`, RoBERTa `lm_head`,
    /// ELECTRA's generator `generator_predictions` + `generator_lm_head`, ALBERT `predictions`.
    fn mlm_head(&self, parts: &[&str]) -> Option<Src> {
        let any = |names: &[String]| Src::Any(names.iter().map(|n| self.top(n)).collect());
        Some(match parts {
            ["head", "mlm", "dense", wb] => any(&[
                format!("cls.predictions.transform.dense.{wb}"),
                format!("lm_head.dense.{wb}"),
                format!("generator_predictions.dense.{wb}"),
                format!("predictions.dense.{wb}"),
            ]),
            ["head", "mlm", "norm", wb] => any(&[
                format!("cls.predictions.transform.LayerNorm.{wb}"),
                format!("lm_head.layer_norm.{wb}"),
                format!("generator_predictions.LayerNorm.{wb}"),
                format!("predictions.LayerNorm.{wb}"),
            ]),
            ["head", "mlm", "bias"] => any(&[
                "cls.predictions.bias".into(),
                "lm_head.bias".into(),
                "generator_lm_head.bias".into(),
                "predictions.bias".into(),
                "cls.predictions.decoder.bias".into(),
                "lm_head.decoder.bias".into(),
                "predictions.decoder.bias".into(),
            ]),
            ["head", "mlm", "decoder", "weight"] => any(&[
                "cls.predictions.decoder.weight".into(),
                "lm_head.decoder.weight".into(),
                "generator_lm_head.weight".into(),
                "predictions.decoder.weight".into(),
            ]),
            _ => return None,
        })
    }

    fn bert(&self, parts: &[&str]) -> Option<Src> {
        if let Some(s) = self.bert_embeddings(parts).or_else(|| self.mlm_head(parts)) {
            return Some(s);
        }
        match parts {
            ["embed", "project", wb] => return Some(self.p(format!("embeddings_project.{wb}"))),
            ["head", "pooler", wb] => return Some(self.p(format!("pooler.dense.{wb}"))),
            ["head", "classifier", wb] => {
                return Some(Src::Any(vec![
                    self.top(format!("cls.seq_relationship.{wb}")),
                    self.top(format!("classifier.{wb}")),
                ]))
            }
            ["head", "discriminator", "dense", wb] => {
                return Some(self.top(format!("discriminator_predictions.dense.{wb}")))
            }
            ["head", "discriminator", "out", wb] => {
                return Some(self.top(format!("discriminator_predictions.dense_prediction.{wb}")))
            }
            _ => {}
        }
        let l = self.layer(parts)?;
        if l.stack != "encoder" {
            return None;
        }
        let (m, wb) = Self::wb(l.rest)?;
        let name = match (l.sub, m) {
            (Sublayer::Attention(_), "q") => "attention.self.query",
            (Sublayer::Attention(_), "k") => "attention.self.key",
            (Sublayer::Attention(_), "v") => "attention.self.value",
            (Sublayer::Attention(_), "o") => "attention.output.dense",
            (Sublayer::Attention(_), "norm") => "attention.output.LayerNorm",
            (Sublayer::Mlp(_), "up") => "intermediate.dense",
            (Sublayer::Mlp(_), "down") => "output.dense",
            (Sublayer::Mlp(_), "norm") => "output.LayerNorm",
            _ => return None,
        };
        Some(self.p(format!("encoder.layer.{}.{name}.{wb}", l.layer)))
    }

    // ---- ALBERT: one shared layer group -------------------------------------------------

    fn albert(&self, parts: &[&str]) -> Option<Src> {
        if let Some(s) = self.bert_embeddings(parts).or_else(|| self.mlm_head(parts)) {
            return Some(s);
        }
        match parts {
            ["embed", "project", wb] => {
                return Some(self.p(format!("encoder.embedding_hidden_mapping_in.{wb}")))
            }
            ["head", "pooler", wb] => return Some(self.p(format!("pooler.{wb}"))),
            ["head", "classifier", wb] => {
                return Some(Src::Any(vec![
                    self.top(format!("sop_classifier.classifier.{wb}")),
                    self.top(format!("classifier.{wb}")),
                ]))
            }
            _ => {}
        }
        let l = self.layer(parts)?;
        if l.stack != "encoder" {
            return None;
        }
        let (m, wb) = Self::wb(l.rest)?;
        let name = match (l.sub, m) {
            (Sublayer::Attention(_), "q") => "attention.query",
            (Sublayer::Attention(_), "k") => "attention.key",
            (Sublayer::Attention(_), "v") => "attention.value",
            (Sublayer::Attention(_), "o") => "attention.dense",
            (Sublayer::Attention(_), "norm") => "attention.LayerNorm",
            (Sublayer::Mlp(_), "up") => "ffn",
            (Sublayer::Mlp(_), "down") => "ffn_output",
            (Sublayer::Mlp(_), "norm") => "full_layer_layer_norm",
            _ => return None,
        };
        // `share = all` keeps layer 0 only: HF's single group; unshared layers are one group
        // each (num_hidden_groups = layers).
        Some(self.p(format!(
            "encoder.albert_layer_groups.{}.albert_layers.0.{name}.{wb}",
            l.layer
        )))
    }

    // ---- T5 ---------------------------------------------------------------------------------

    fn t5(&self, parts: &[&str]) -> Option<Src> {
        match parts {
            ["embed", "tokens", "weight"] => {
                return Some(Src::Any(vec![
                    self.p("shared.weight"),
                    self.p("encoder.embed_tokens.weight"),
                    self.p("decoder.embed_tokens.weight"),
                ]))
            }
            [s @ ("encoder" | "decoder"), "relative_bias", "weight"] => {
                return Some(self.p(format!(
                    "{s}.block.0.layer.0.SelfAttention.relative_attention_bias.weight"
                )))
            }
            [s @ ("encoder" | "decoder"), "final_norm", "weight"] => {
                return Some(self.p(format!("{s}.final_layer_norm.weight")))
            }
            ["head", "lm", "weight"] => return Some(self.top("lm_head.weight")),
            _ => {}
        }
        let l = self.layer(parts)?;
        let base = format!("{}.block.{}.layer.{}", l.stack, l.layer, l.index);
        let (m, wb) = Self::wb(l.rest)?;
        if wb != "weight" {
            return None;
        }
        let name = match (l.sub, m) {
            (_, "norm") => "layer_norm".to_string(),
            (Sublayer::Attention(_), "q" | "k" | "v" | "o") => format!("SelfAttention.{m}"),
            (Sublayer::CrossAttention(_), "q" | "k" | "v" | "o") => format!("EncDecAttention.{m}"),
            (Sublayer::Mlp(x), "up") if x.act.is_gated() => "DenseReluDense.wi_1".into(),
            (Sublayer::Mlp(_), "gate") => "DenseReluDense.wi_0".into(),
            (Sublayer::Mlp(_), "up") => "DenseReluDense.wi".into(),
            (Sublayer::Mlp(_), "down") => "DenseReluDense.wo".into(),
            _ => return None,
        };
        Some(self.p(format!("{base}.{name}.weight")))
    }

    // ---- BART ------------------------------------------------------------------------------

    fn bart(&self, parts: &[&str]) -> Option<Src> {
        match parts {
            ["embed", "tokens", "weight"] => {
                return Some(Src::Any(vec![
                    self.p("shared.weight"),
                    self.p("encoder.embed_tokens.weight"),
                    self.p("decoder.embed_tokens.weight"),
                ]))
            }
            [s @ ("encoder" | "decoder"), "positions", "weight"] => {
                return Some(self.p(format!("{s}.embed_positions.weight")))
            }
            [s @ ("encoder" | "decoder"), "embed_norm", wb] => {
                return Some(self.p(format!("{s}.layernorm_embedding.{wb}")))
            }
            // mBART's final norms.
            [s @ ("encoder" | "decoder"), "final_norm", wb] => {
                return Some(self.p(format!("{s}.layer_norm.{wb}")))
            }
            ["head", "lm", "weight"] => return Some(self.top("lm_head.weight")),
            // The `final_logits_bias` buffer, [1, V].
            ["head", "lm", "bias"] => return Some(plain("final_logits_bias", &[1, self.shape[0]])),
            _ => {}
        }
        let l = self.layer(parts)?;
        let (m, wb) = Self::wb(l.rest)?;
        let attn = |a: &str| match m {
            "q" | "k" | "v" => Some(format!("{a}.{m}_proj")),
            "o" => Some(format!("{a}.out_proj")),
            "norm" => Some(format!("{a}_layer_norm")),
            _ => None,
        };
        let name = match (l.sub, m) {
            (Sublayer::Attention(_), _) => attn("self_attn")?,
            (Sublayer::CrossAttention(_), _) => attn("encoder_attn")?,
            (Sublayer::Mlp(_), "up") => "fc1".into(),
            (Sublayer::Mlp(_), "down") => "fc2".into(),
            (Sublayer::Mlp(_), "norm") => "final_layer_norm".into(),
            _ => return None,
        };
        Some(self.p(format!("{}.layers.{}.{name}.{wb}", l.stack, l.layer)))
    }

    // ---- LLaMA --------------------------------------------------------------------------------

    fn llama(&self, parts: &[&str]) -> Option<Src> {
        match parts {
            ["embed", "tokens", "weight"] => return Some(self.p("embed_tokens.weight")),
            ["decoder", "final_norm", wb] => return Some(self.p(format!("norm.{wb}"))),
            ["head", "lm", "weight"] => return Some(self.top("lm_head.weight")),
            _ => {}
        }
        let l = self.layer(parts)?;
        if l.stack != "decoder" {
            return None;
        }
        let (m, wb) = Self::wb(l.rest)?;
        let name = match (l.sub, m) {
            (Sublayer::Attention(_), "norm") => "input_layernorm".to_string(),
            (Sublayer::Attention(_), "q" | "k" | "v" | "o") => format!("self_attn.{m}_proj"),
            (Sublayer::Mlp(_), "norm") => "post_attention_layernorm".into(),
            (Sublayer::Mlp(_), "gate" | "up" | "down") => format!("mlp.{m}_proj"),
            _ => return None,
        };
        Some(self.p(format!("layers.{}.{name}.{wb}", l.layer)))
    }

    // ---- GGUF (llama.cpp) -------------------------------------------------------------------

    /// llama.cpp's names (gguf-py's `TENSOR_NAMES`): LLaMA's separate projections, whose q
    /// and k rows its converter permuted for interleaved RoPE (undone here for a spec that
    /// rotates halves), or GPT-2's fused `attn_qkv` (stored [out, in], Conv1D undone).
    fn gguf(&self, parts: &[&str]) -> Option<Src> {
        match parts {
            ["embed", "tokens", "weight"] => return Some(self.p("token_embd.weight")),
            ["decoder", "positions", "weight"] => return Some(self.p("position_embd.weight")),
            ["decoder", "final_norm", wb] => return Some(self.p(format!("output_norm.{wb}"))),
            ["head", "lm", "weight"] => return Some(self.p("output.weight")),
            _ => {}
        }
        let l = self.layer(parts)?;
        if l.stack != "decoder" {
            return None;
        }
        let b = format!("blk.{}", l.layer);
        if let Sublayer::Mamba(_) = l.sub {
            // convert_hf_to_gguf.py's MambaModel: A stored as −exp(A_log), the conv weight
            // squeezed to [d_inner, d_conv].
            return Some(match l.rest {
                ["norm", wb] => self.p(format!("{b}.attn_norm.{wb}")),
                ["conv", wb] => self.p(format!("{b}.ssm_conv1d.{wb}")),
                ["in_proj", wb] => self.p(format!("{b}.ssm_in.{wb}")),
                ["x_proj", wb] => self.p(format!("{b}.ssm_x.{wb}")),
                ["dt_proj", wb] => self.p(format!("{b}.ssm_dt.{wb}")),
                ["out_proj", wb] => self.p(format!("{b}.ssm_out.{wb}")),
                ["A_log"] => Src::NegLog {
                    name: format!("{b}.ssm_a"),
                    shape: self.shape.to_vec(),
                },
                ["D"] => self.p(format!("{b}.ssm_d")),
                _ => return None,
            });
        }
        let (m, wb) = Self::wb(l.rest)?;
        match (l.sub, m) {
            (Sublayer::Attention(_), "norm") => Some(self.p(format!("{b}.attn_norm.{wb}"))),
            (Sublayer::Mlp(_), "norm") => Some(self.p(format!("{b}.ffn_norm.{wb}"))),
            (Sublayer::Attention(a), "q" | "k" | "v") => {
                let (q, kv) = (
                    (a.heads * a.head_dim) as usize,
                    (a.kv_heads * a.head_dim) as usize,
                );
                let halves = matches!(
                    self.spec.position,
                    arch_dsl::spec::Position::Rope(r)
                        if r.style == arch_dsl::spec::RopeStyle::Half && r.fraction == 1.0
                );
                let name = format!("{b}.attn_{m}.{wb}");
                let separate = if halves && m != "v" && wb == "weight" {
                    Src::RopeRows {
                        name,
                        shape: self.shape.to_vec(),
                        heads: if m == "q" { a.heads } else { a.kv_heads } as usize,
                    }
                } else {
                    self.p(name)
                };
                let (start, len) = match m {
                    "q" => (0, q),
                    "k" => (q, kv),
                    _ => (q + kv, kv),
                };
                let mut shape = vec![q + 2 * kv];
                if wb == "weight" {
                    shape.push(self.spec.d_model as usize);
                }
                let fused = Src::Rows {
                    name: format!("{b}.attn_qkv.{wb}"),
                    shape,
                    transpose: false,
                    start,
                    len,
                };
                Some(Src::Any(vec![separate, fused]))
            }
            (Sublayer::Attention(_), "o") => Some(self.p(format!("{b}.attn_output.{wb}"))),
            (Sublayer::Mlp(_), "gate" | "up" | "down") => Some(self.p(format!("{b}.ffn_{m}.{wb}"))),
            _ => None,
        }
    }

    // ---- Mamba ----------------------------------------------------------------------------------

    fn mamba(&self, parts: &[&str]) -> Option<Src> {
        match parts {
            ["embed", "tokens", "weight"] => {
                // `embedding` in the original state-spaces checkpoints.
                return Some(Src::Any(vec![
                    self.p("embeddings.weight"),
                    self.p("embedding.weight"),
                ]));
            }
            ["decoder", "final_norm", wb] => return Some(self.p(format!("norm_f.{wb}"))),
            ["head", "lm", "weight"] => return Some(self.top("lm_head.weight")),
            _ => {}
        }
        let l = self.layer(parts)?;
        if l.stack != "decoder" || !matches!(l.sub, Sublayer::Mamba(_)) {
            return None;
        }
        let mixer = format!("layers.{}.mixer", l.layer);
        Some(match l.rest {
            ["norm", wb] => self.p(format!("layers.{}.norm.{wb}", l.layer)),
            ["conv", wb] => self.p(format!("{mixer}.conv1d.{wb}")),
            [m @ ("in_proj" | "x_proj" | "dt_proj" | "out_proj"), wb] => {
                self.p(format!("{mixer}.{m}.{wb}"))
            }
            [m @ ("A_log" | "D")] => self.p(format!("{mixer}.{m}")),
            _ => return None,
        })
    }

    // ---- RWKV-4 -----------------------------------------------------------------------------------

    fn rwkv(&self, parts: &[&str]) -> Option<Src> {
        match parts {
            ["embed", "tokens", "weight"] => return Some(self.p("embeddings.weight")),
            ["decoder", "embed_norm", wb] => return Some(self.p(format!("blocks.0.pre_ln.{wb}"))),
            ["decoder", "final_norm", wb] => return Some(self.p(format!("ln_out.{wb}"))),
            ["head", "lm", "weight"] => return Some(self.top("head.weight")),
            _ => {}
        }
        let l = self.layer(parts)?;
        if l.stack != "decoder" {
            return None;
        }
        let b = format!("blocks.{}", l.layer);
        let (module, norm) = match l.sub {
            Sublayer::TimeMix(_) => ("attention", "ln1"),
            Sublayer::ChannelMix(_) => ("feed_forward", "ln2"),
            _ => return None,
        };
        Some(match l.rest {
            ["norm", wb] => self.p(format!("{b}.{norm}.{wb}")),
            ["decay"] => self.p(format!("{b}.{module}.time_decay")),
            ["first"] => self.p(format!("{b}.{module}.time_first")),
            // [1, 1, d] in HF.
            ["mix_k"] => self.p_lead(format!("{b}.{module}.time_mix_key"), 2),
            ["mix_v"] => self.p_lead(format!("{b}.{module}.time_mix_value"), 2),
            ["mix_r"] => self.p_lead(format!("{b}.{module}.time_mix_receptance"), 2),
            [m @ ("key" | "value" | "receptance" | "output"), "weight"] => {
                self.p(format!("{b}.{module}.{m}.weight"))
            }
            _ => return None,
        })
    }
}

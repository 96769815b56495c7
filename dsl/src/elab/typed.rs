//! Merged records → typed `ArchSpec`: reads each field with its type, applies the defaults
//! of ARCH_LANGUAGE.md §5–§8, reports unknown fields, and checks the model as a whole.

use super::ctor::{ArgTy, CtorDef, CtorVal};
use super::eval::Memo;
use super::objective::ModelCx;
use super::record::{Binding, RecordId, Records, Written};
use super::stack::{StackCx, StackKind};
use super::Program;
use crate::diag::Diagnostic;
use crate::source::Span;
use crate::spec::*;
use std::collections::HashMap;

/// Elaborates models of one program; owns the records and the evaluation memo.
pub struct Elaborator<'a> {
    pub prog: &'a Program,
    pub recs: Records<'a>,
    pub memo: HashMap<(RecordId, String), Memo>,
    pub diags: Vec<Diagnostic>,
    /// Models being elaborated, innermost last (inheritance and generators).
    pub(super) in_progress: Vec<String>,
    /// Sublayers of each block, read once per model.
    pub(super) block_cache: HashMap<String, Option<Vec<Sublayer>>>,
}

/// A section being read: which record, in which scope, and which names are valid in it.
pub struct Sec {
    pub id: RecordId,
    /// Outermost record first; the last is `id`.
    pub scope: Vec<RecordId>,
    /// The section's name as written (`decoder.attention`), for messages.
    pub what: String,
    /// Where to point when something is missing.
    pub span: Span,
    pub known: Vec<&'static str>,
    pub known_sections: Vec<&'static str>,
}

/// Where a field that is misplaced belongs, for the hint.
pub(super) const FIELD_HOME: &[(&str, &str)] = &[
    ("heads", "attention"),
    ("kv_heads", "attention"),
    ("head_dim", "attention"),
    ("mask", "attention"),
    ("hidden", "mlp"),
    ("act", "mlp"),
    ("layers", "encoder` or `decoder"),
    ("share", "encoder` or `decoder"),
    ("stack", "encoder` or `decoder"),
    ("d_state", "mamba` or `ssm"),
    ("tied", "embed"),
    ("segments", "embed"),
    ("factorized", "embed"),
    ("vocab", "the model"),
    ("d_model", "the model"),
    ("context", "the model"),
];

pub const NORMS: &[CtorDef] = &[
    CtorDef {
        name: "layernorm",
        args: &[("eps", ArgTy::Positive), ("bias", ArgTy::Bool)],
    },
    CtorDef {
        name: "rmsnorm",
        args: &[("eps", ArgTy::Positive)],
    },
];

pub const POSITIONS: &[CtorDef] = &[
    CtorDef {
        name: "learned",
        args: &[("offset", ArgTy::Index)],
    },
    CtorDef {
        name: "sinusoidal",
        args: &[],
    },
    CtorDef {
        name: "rope",
        args: &[
            ("theta", ArgTy::Positive),
            ("fraction", ArgTy::Rate),
            ("style", ArgTy::Words(&["half", "interleaved"])),
            ("scaling", ArgTy::Words(&["none", "linear", "llama3"])),
            ("factor", ArgTy::Positive),
            ("low_freq_factor", ArgTy::Positive),
            ("high_freq_factor", ArgTy::Positive),
            ("original_context", ArgTy::Count),
        ],
    },
    CtorDef {
        name: "relative_bias",
        args: &[("buckets", ArgTy::Count), ("max_distance", ArgTy::Count)],
    },
    CtorDef {
        name: "alibi",
        args: &[],
    },
    CtorDef {
        name: "none",
        args: &[],
    },
];

pub const HEADS: &[CtorDef] = &[
    CtorDef {
        name: "lm",
        args: &[("scale", ArgTy::Float), ("bias", ArgTy::Bool)],
    },
    CtorDef {
        name: "classifier",
        args: &[("labels", ArgTy::Count), ("pooler", ArgTy::Bool)],
    },
    CtorDef {
        name: "none",
        args: &[],
    },
];

pub const OBJECTIVES: &[CtorDef] = &[
    CtorDef {
        name: "next_token",
        args: &[],
    },
    CtorDef {
        name: "mlm",
        args: &[
            ("rate", ArgTy::Rate),
            ("mask", ArgTy::Rate),
            ("random", ArgTy::Rate),
            ("dynamic", ArgTy::Bool),
        ],
    },
    CtorDef {
        name: "nsp",
        args: &[],
    },
    CtorDef {
        name: "sop",
        args: &[],
    },
    CtorDef {
        name: "rtd",
        args: &[("generator", ArgTy::Model), ("weight", ArgTy::Positive)],
    },
    CtorDef {
        name: "span_corruption",
        args: &[("rate", ArgTy::Rate), ("mean_span", ArgTy::Positive)],
    },
    CtorDef {
        name: "denoise",
        args: &[
            ("token_mask", ArgTy::Rate),
            ("token_delete", ArgTy::Rate),
            ("text_infill", ArgTy::Rate),
            ("lambda", ArgTy::Positive),
            ("sentence_permute", ArgTy::Bool),
            ("document_rotate", ArgTy::Bool),
        ],
    },
    CtorDef {
        name: "dpo",
        args: &[("beta", ArgTy::Positive)],
    },
    CtorDef {
        name: "none",
        args: &[],
    },
];

impl<'a> Elaborator<'a> {
    pub fn new(prog: &'a Program) -> Elaborator<'a> {
        Elaborator {
            prog,
            recs: Records::default(),
            memo: HashMap::new(),
            diags: Vec::new(),
            in_progress: Vec::new(),
            block_cache: HashMap::new(),
        }
    }

    pub fn finish(self) -> Vec<Diagnostic> {
        self.diags
    }

    /// Evaluates every file-level constant, so that errors in unused ones are reported.
    pub fn check_file_lets(&mut self) {
        let mut names: Vec<&String> = self.prog.defs.lets.keys().collect();
        names.sort();
        for name in names {
            if let Some(l) = self.prog.file_let(name) {
                let b = Binding {
                    expr: &l.value,
                    span: l.name.span,
                };
                self.eval_binding(usize::MAX, name, b, &[]);
            }
        }
    }

    /// Builds the merged record of a model: its base's record, then its own members.
    fn model_record(
        &mut self,
        name: &str,
        chain: &mut Vec<String>,
        use_span: Option<Span>,
    ) -> Option<RecordId> {
        let Some(item) = self.prog.model_item(name) else {
            if let Some(span) = use_span {
                let d = Diagnostic::error(span, format!("no model named `{name}`"))
                    .with_label("not defined")
                    .with_help_opt(self.prog.suggest_model(name));
                self.diags.push(d);
            }
            return None;
        };
        if let Some(pos) = chain.iter().position(|c| c == name) {
            let members = &chain[pos..];
            if chain[0] != *name || members.iter().any(|m| m.as_str() < name) {
                return None; // reported when elaborating the cycle's first member
            }
            let span = use_span.unwrap_or(item.name.span);
            let cycle = chain
                .iter()
                .chain([&name.to_string()])
                .cloned()
                .collect::<Vec<_>>()
                .join(" → ");
            self.diags.push(
                Diagnostic::error(span, format!("inheritance cycle: {cycle}"))
                    .with_label("base leads back here")
                    .with_help(
                        "a model cannot inherit from itself, directly or through other models",
                    ),
            );
            return None;
        }
        chain.push(name.to_string());
        let id = match &item.base {
            Some(base) => {
                let base_id = self.model_record(&base.name, chain, Some(base.span))?;
                self.recs.deep_copy(base_id)
            }
            None => self.recs.new_record(),
        };
        chain.pop();
        let mut written = Written::default();
        self.recs
            .apply(id, &item.members, &[], &mut written, &mut self.diags);
        Some(id)
    }

    /// Elaborates one model (depth counts generator nesting, to stop `rtd` loops).
    pub fn model(&mut self, name: &str, depth: usize) -> Option<ArchSpec> {
        let item = self.prog.model_item(name)?;
        if self.in_progress.iter().any(|m| m == name) || depth > 4 {
            return None;
        }
        let root = self.model_record(name, &mut Vec::new(), None)?;
        self.in_progress.push(name.to_string());
        let saved_cache = std::mem::take(&mut self.block_cache);
        let spec = self.read_model(name, root, item.name.span, depth);
        self.block_cache = saved_cache;
        self.in_progress.pop();
        spec
    }

    fn read_model(
        &mut self,
        name: &str,
        root: RecordId,
        span: Span,
        depth: usize,
    ) -> Option<ArchSpec> {
        let mut sec = Sec {
            id: root,
            scope: vec![root],
            what: format!("model `{name}`"),
            span,
            known: Vec::new(),
            known_sections: vec!["embed", "encoder", "decoder"],
        };
        let vocab = self.int_req(&mut sec, "vocab", 1);
        let errors_before = self.diags.len();
        let d_model = self.int_req(&mut sec, "d_model", 1);
        let d_model_ok = self.diags.len() == errors_before;
        let context = self.int_req(&mut sec, "context", 1);
        let dtype = match self.word_field(&mut sec, "dtype", &["f32", "bf16", "f16"]) {
            Some(("bf16", _)) => DType::Bf16,
            Some(("f16", _)) => DType::F16,
            _ => DType::F32,
        };
        let norm = match self.ctor_field(&mut sec, "norm", NORMS, "norm") {
            Some(c) if c.name == "rmsnorm" => Norm::RmsNorm {
                eps: c.float("eps", 1e-6),
            },
            Some(c) => Norm::LayerNorm {
                eps: c.float("eps", 1e-5),
                bias: c.bool("bias", true),
            },
            None => Norm::LayerNorm {
                eps: 1e-5,
                bias: true,
            },
        };
        let placement = match self.word_field(&mut sec, "placement", &["pre", "post"]) {
            Some(("post", _)) => Placement::Post,
            _ => Placement::Pre,
        };
        let final_norm = self
            .bool_opt(&mut sec, "final_norm")
            .unwrap_or(placement == Placement::Pre);
        let position_ctor = self.ctor_field(&mut sec, "position", POSITIONS, "position");
        let position = position_from(position_ctor.as_ref());
        if let Some(c) = &position_ctor {
            self.check_rope_scaling(c);
        }
        let embed = self.read_embed(&sec);
        let head_ctors = self.ctor_sum_field(&mut sec, "head", HEADS, "head");
        let objective_ctors = self.ctor_sum_field(&mut sec, "objective", OBJECTIVES, "objective");
        let ctx = StackCx {
            d_model,
            d_model_ok,
            context,
            position,
            position_span: position_ctor.as_ref().map(|c| c.span),
        };
        let has = |n: &str| self.recs.all[root].section(n).is_some();
        let (has_encoder, has_decoder) = (has("encoder"), has("decoder"));
        let encoder = self.read_stack(&sec, "encoder", &ctx, StackKind::Encoder);
        let decoder_kind = if has_encoder {
            StackKind::CrossDecoder
        } else {
            StackKind::Decoder
        };
        let decoder = self.read_stack(&sec, "decoder", &ctx, decoder_kind);
        self.finish_section(&sec);
        let family = match (has_encoder, has_decoder) {
            (true, true) => Family::EncoderDecoder,
            (true, false) => Family::EncoderOnly,
            (false, true) => Family::DecoderOnly,
            (false, false) => {
                let d = Diagnostic::error(
                    span,
                    format!("model `{name}` has no `encoder` or `decoder`"),
                )
                .with_label("needs at least one stack")
                .with_help("add `decoder { layers = … }` (or `encoder { … }`)");
                self.diags.push(d);
                return None;
            }
        };
        let m = ModelCx {
            name,
            family,
            vocab,
            embed_width: embed.factorized.unwrap_or(d_model),
            depth,
        };
        let objectives = self.objectives(objective_ctors, &m).unwrap_or_default();
        let heads = self.heads(head_ctors, &objectives);
        Some(ArchSpec {
            name: name.to_string(),
            family,
            vocab,
            d_model,
            context,
            dtype,
            norm,
            placement,
            final_norm,
            position,
            embed,
            encoder,
            decoder,
            heads,
            objectives,
        })
    }

    fn read_embed(&mut self, parent: &Sec) -> Embed {
        let mut embed = Embed {
            tied: true,
            factorized: None,
            segments: 0,
            norm: false,
            scale: 1.0,
        };
        let Some(mut sec) = self.subsection(parent, "embed") else {
            return embed;
        };
        embed.tied = self.bool_opt(&mut sec, "tied").unwrap_or(true);
        embed.factorized = self.int_opt(&mut sec, "factorized", 1).ok().flatten();
        embed.segments = self
            .int_opt(&mut sec, "segments", 0)
            .ok()
            .flatten()
            .unwrap_or(0);
        embed.norm = self.bool_opt(&mut sec, "norm").unwrap_or(false);
        embed.scale = self.float_opt(&mut sec, "scale").unwrap_or(1.0);
        self.finish_section(&sec);
        embed
    }
}

impl Elaborator<'_> {
    /// `rope(scaling = …)`'s arguments: each belongs to a scaling kind, and Llama 3's
    /// band needs `high_freq_factor > low_freq_factor`.
    fn check_rope_scaling(&mut self, c: &CtorVal) {
        if c.name != "rope" {
            return;
        }
        let kind = c.word("scaling", "none");
        let allowed: &[&str] = match kind {
            "linear" => &["factor"],
            "llama3" => &[
                "factor",
                "low_freq_factor",
                "high_freq_factor",
                "original_context",
            ],
            _ => &[],
        };
        for arg in [
            "factor",
            "low_freq_factor",
            "high_freq_factor",
            "original_context",
        ] {
            if c.has(arg) && !allowed.contains(&arg) {
                let takes = if arg == "factor" {
                    "`scaling = linear` or `scaling = llama3`"
                } else {
                    "`scaling = llama3`"
                };
                let d = Diagnostic::error(
                    c.arg_span(arg),
                    format!("`{arg}` has no effect with `scaling = {kind}`"),
                )
                .with_label("only read by a scaled RoPE")
                .with_help(format!("`{arg}` goes with {takes}"));
                self.diags.push(d);
            }
        }
        if kind == "linear" && !c.has("factor") {
            let d = Diagnostic::error(c.arg_span("scaling"), "`scaling = linear` needs a `factor`")
                .with_label("divides every frequency by what?")
                .with_help("e.g. `rope(theta = 10000, scaling = linear, factor = 4)`");
            self.diags.push(d);
        }
        if kind == "llama3" {
            let (low, high) = (
                c.float("low_freq_factor", 1.0),
                c.float("high_freq_factor", 4.0),
            );
            if high <= low {
                let at = if c.has("high_freq_factor") {
                    c.arg_span("high_freq_factor")
                } else {
                    c.arg_span("low_freq_factor")
                };
                let d = Diagnostic::error(
                    at,
                    format!("`high_freq_factor` ({high}) must exceed `low_freq_factor` ({low})"),
                )
                .with_label("the band between them is interpolated")
                .with_help("Llama 3.1 uses `low_freq_factor = 1, high_freq_factor = 4`");
                self.diags.push(d);
            }
        }
    }
}

fn position_from(c: Option<&CtorVal>) -> Position {
    let Some(c) = c else {
        return Position::Learned { offset: 0 };
    };
    match c.name {
        "learned" => Position::Learned {
            offset: c.int("offset", 0),
        },
        "sinusoidal" => Position::Sinusoidal,
        "rope" => Position::Rope(Rope {
            theta: c.float("theta", 10000.0),
            fraction: c.float("fraction", 1.0),
            style: if c.word("style", "half") == "interleaved" {
                RopeStyle::Interleaved
            } else {
                RopeStyle::Half
            },
            scaling: match c.word("scaling", "none") {
                "linear" => RopeScaling::Linear {
                    factor: c.float("factor", 1.0),
                },
                // Meta's Llama 3.1 values.
                "llama3" => RopeScaling::Llama3 {
                    factor: c.float("factor", 8.0),
                    low_freq_factor: c.float("low_freq_factor", 1.0),
                    high_freq_factor: c.float("high_freq_factor", 4.0),
                    original_context: c.int("original_context", 8192),
                },
                _ => RopeScaling::None,
            },
        }),
        "relative_bias" => Position::RelativeBias {
            buckets: c.int("buckets", 32),
            max_distance: c.int("max_distance", 128),
        },
        "alibi" => Position::Alibi,
        _ => Position::None,
    }
}

//! Objectives and heads → typed values: defaults by family, the fit of each objective to
//! the family, ELECTRA's generator, and the heads each objective implies.

use super::ctor::CtorVal;
use super::typed::Elaborator;
use crate::diag::Diagnostic;
use crate::spec::*;

fn family_name(f: Family) -> &'static str {
    match f {
        Family::EncoderOnly => "an encoder-only model",
        Family::DecoderOnly => "a decoder-only model",
        Family::EncoderDecoder => "an encoder-decoder model",
    }
}

/// The families an objective fits.
fn fits(objective: &str, family: Family) -> bool {
    use Family::*;
    match objective {
        "next_token" | "dpo" => matches!(family, DecoderOnly | EncoderDecoder),
        "mlm" | "nsp" | "sop" | "rtd" => family == EncoderOnly,
        "span_corruption" | "denoise" => family == EncoderDecoder,
        _ => true,
    }
}

pub struct ModelCx<'s> {
    pub name: &'s str,
    pub family: Family,
    pub vocab: u64,
    pub embed_width: u64,
    pub depth: usize,
}

impl Elaborator<'_> {
    pub fn objectives(
        &mut self,
        ctors: Option<Vec<CtorVal>>,
        m: &ModelCx,
    ) -> Option<Vec<Objective>> {
        let Some(ctors) = ctors else {
            return Some(vec![match m.family {
                Family::DecoderOnly => Objective::NextToken,
                Family::EncoderOnly => Objective::Mlm {
                    rate: 0.15,
                    mask: 0.8,
                    random: 0.1,
                    dynamic: false,
                },
                Family::EncoderDecoder => Objective::SpanCorruption {
                    rate: 0.15,
                    mean_span: 3.0,
                },
            }]);
        };
        let mut out = Vec::new();
        let mut ok = true;
        for c in ctors {
            if !fits(c.name, m.family) {
                let d = Diagnostic::error(
                    c.span,
                    format!(
                        "objective `{}` does not fit {}",
                        c.name,
                        family_name(m.family)
                    ),
                )
                .with_label("wrong family")
                .with_help(match c.name {
                    "next_token" | "dpo" => "it needs a `decoder`",
                    "span_corruption" | "denoise" => "it needs both an `encoder` and a `decoder`",
                    _ => "it needs an encoder-only model",
                });
                self.diags.push(d);
                ok = false;
                continue;
            }
            let objective = match c.name {
                "next_token" => Objective::NextToken,
                "mlm" => {
                    let (mask, random) = (c.float("mask", 0.8), c.float("random", 0.1));
                    if mask + random > 1.0 + 1e-12 {
                        let d = Diagnostic::error(
                            c.span,
                            format!("`mask` + `random` is {}, more than 1", mask + random),
                        )
                        .with_label("masked tokens are split among [MASK], random and unchanged")
                        .with_help("e.g. BERT: `mask = 0.8, random = 0.1`");
                        self.diags.push(d);
                        ok = false;
                    }
                    Objective::Mlm {
                        rate: c.float("rate", 0.15),
                        mask,
                        random,
                        dynamic: c.bool("dynamic", false),
                    }
                }
                "nsp" => Objective::Nsp,
                "sop" => Objective::Sop,
                "rtd" => match self.generator(&c, m) {
                    Some(g) => Objective::Rtd {
                        generator: Box::new(g),
                        weight: c.float("weight", 50.0),
                    },
                    None => {
                        ok = false;
                        continue;
                    }
                },
                "span_corruption" => Objective::SpanCorruption {
                    rate: c.float("rate", 0.15),
                    mean_span: c.float("mean_span", 3.0),
                },
                "denoise" => Objective::Denoise {
                    token_mask: c.float("token_mask", 0.0),
                    token_delete: c.float("token_delete", 0.0),
                    text_infill: c.float("text_infill", 0.0),
                    lambda: c.float("lambda", 3.0),
                    sentence_permute: c.bool("sentence_permute", false),
                    document_rotate: c.bool("document_rotate", false),
                },
                "dpo" => Objective::Dpo {
                    beta: c.float("beta", 0.1),
                },
                _ => continue,
            };
            out.push(objective);
        }
        ok.then_some(out)
    }

    /// ELECTRA's generator: another encoder-only MLM model of the program, sharing the
    /// token embeddings (so vocabulary and embedding width must agree).
    fn generator(&mut self, c: &CtorVal, m: &ModelCx) -> Option<ArchSpec> {
        let span = c.arg_span("generator");
        let Some(name) = c.model("generator") else {
            let d = Diagnostic::error(c.span, "`rtd` needs a generator")
                .with_label("no generator")
                .with_help("write `rtd(generator = some_small_mlm_model)`");
            self.diags.push(d);
            return None;
        };
        let name = name.to_string();
        if !self.prog.has_model(&name) {
            let d = Diagnostic::error(span, format!("no model named `{name}`"))
                .with_label("not a model")
                .with_help_opt(self.prog.suggest_model(&name));
            self.diags.push(d);
            return None;
        }
        if name == m.name || self.in_progress.contains(&name) {
            let d = Diagnostic::error(span, format!("`{name}` cannot be its own generator"))
                .with_label("generator cycle")
                .with_help("the generator is a separate, usually smaller, MLM model");
            self.diags.push(d);
            return None;
        }
        let errors_before = self.diags.iter().filter(|d| d.is_error()).count();
        let generator = self.model(&name, m.depth + 1);
        let Some(g) = generator else {
            if self.diags.iter().filter(|d| d.is_error()).count() == errors_before {
                self.diags.push(
                    Diagnostic::error(span, format!("generator `{name}` could not be elaborated"))
                        .with_label("invalid generator"),
                );
            }
            return None;
        };
        let mut problems = Vec::new();
        if g.family != Family::EncoderOnly {
            problems.push(format!(
                "it is {}, not an encoder-only model",
                family_name(g.family)
            ));
        }
        if !g
            .objectives
            .iter()
            .any(|o| matches!(o, Objective::Mlm { .. }))
        {
            problems.push("its objective has no `mlm`".to_string());
        }
        if g.vocab != m.vocab {
            problems.push(format!(
                "its vocabulary ({}) differs from this model's ({})",
                g.vocab, m.vocab
            ));
        }
        if g.embed_width() != m.embed_width {
            problems.push(format!(
                "its embedding width ({}) differs from this model's ({})",
                g.embed_width(),
                m.embed_width
            ));
        }
        if problems.is_empty() {
            return Some(g);
        }
        let d = Diagnostic::error(
            span,
            format!("`{name}` cannot be the generator: {}", problems.join("; ")),
        )
        .with_label("unsuitable generator")
        .with_help(
            "the generator is an encoder-only MLM model sharing this model's token embeddings",
        );
        self.diags.push(d);
        None
    }

    /// The written heads, then those the objectives imply (one of each kind).
    pub fn heads(&mut self, written: Option<Vec<CtorVal>>, objectives: &[Objective]) -> Vec<Head> {
        let mut heads: Vec<Head> = Vec::new();
        let same_kind = |a: &Head, b: &Head| std::mem::discriminant(a) == std::mem::discriminant(b);
        let add = |h: Head, heads: &mut Vec<Head>| {
            if !heads.iter().any(|x| same_kind(x, &h)) {
                heads.push(h);
            }
        };
        for c in written.into_iter().flatten() {
            match c.name {
                "lm" => add(
                    Head::Lm {
                        scale: c.float("scale", 1.0),
                        bias: c.bool("bias", false),
                    },
                    &mut heads,
                ),
                "classifier" => {
                    if !c.has("labels") {
                        let d = Diagnostic::error(c.span, "`classifier` needs `labels`")
                            .with_label("how many classes?")
                            .with_help("write `classifier(labels = 2)`");
                        self.diags.push(d);
                    }
                    add(
                        Head::Classifier {
                            labels: c.int("labels", 1),
                            pooler: c.bool("pooler", true),
                        },
                        &mut heads,
                    )
                }
                _ => {}
            }
        }
        for o in objectives {
            let implied = match o {
                Objective::NextToken
                | Objective::SpanCorruption { .. }
                | Objective::Denoise { .. }
                | Objective::Dpo { .. } => Head::Lm {
                    scale: 1.0,
                    bias: false,
                },
                Objective::Mlm { .. } => Head::MaskedLm,
                Objective::Nsp | Objective::Sop => Head::Classifier {
                    labels: 2,
                    pooler: true,
                },
                Objective::Rtd { .. } => Head::Discriminator,
            };
            add(implied, &mut heads);
        }
        heads
    }
}

//! Hugging Face `config.json` → `.arch` text (`archc import-hf`).
//!
//! Supported `model_type`s: gpt2, openai-gpt, bert, roberta, albert, electra, t5, bart,
//! llama, mamba, rwkv. `architectures[0]` picks the objective and heads (a missing
//! `architectures` means the family's pretraining class, with a warning). The result is in
//! canonical `archc fmt` form and checks without errors, or it is not returned at all.
//!
//! Rules (`encoder.rs`, `decoder.rs` and `seq2seq.rs` list each family's architectures):
//! - Keys that carry a size (widths, depths, heads, vocabulary, context) are required; a
//!   missing one is an error naming it. Other keys take the Hugging Face config class's
//!   default when absent or `null`.
//! - What `.arch` cannot express and would change the computed function is an error (RoPE
//!   scaling, ALBERT layer groups, relative position embeddings in BERT, …). Where the spec
//!   must add or assume something the config does not say (the classifier that carries
//!   BertModel's pooler, Mamba's context, ELECTRA's generator), it says so in a `// Warning:`
//!   comment and on stderr; `Imported::assumed` names the assumed fields.
//! - BartForConditionalGeneration's final_logits_bias (a buffer in Hugging Face) is the LM
//!   head's bias: `lm(bias = true)`. T5 with a tied head rescales by d_model^-0.5.
//! - Activations: `gelu`/`gelu_python` → `gelu` (erf); `gelu_new`/`gelu_pytorch_tanh`/
//!   `gelu_fast` → `gelu_tanh`; `relu`; `silu`/`swish` → `silu`. In a gated MLP (LLaMA, T5
//!   v1.1) these become `geglu`, `reglu`, `swiglu`. Anything else is an error.

mod config;
mod decoder;
mod emit;
mod encoder;
mod seq2seq;

use std::fmt;
use std::path::Path;

use arch_dsl::diag::render;
use arch_dsl::elab::Program;
use arch_dsl::ArchSpec;
use serde_json::Value;

use config::{short_json, Config};
use emit::Model;

/// What `import` needs besides the config text.
#[derive(Debug, Clone, Default)]
pub struct Options {
    /// Where the config came from, as the user named it: the header comment names it and,
    /// without `name`, the model is named after it.
    pub source: String,
    /// The model's name; by default derived from `source`.
    pub name: Option<String>,
    /// ELECTRA only: the generator's `config.json` (its source name and text).
    pub generator: Option<(String, String)>,
}

/// A successful import.
#[derive(Debug, Clone)]
pub struct Imported {
    /// The `.arch` file, canonical and checked.
    pub text: String,
    /// The main model's name (the first model of `text`).
    pub name: String,
    /// The elaborated main model.
    pub spec: ArchSpec,
    /// Things the spec could not carry or had to assume; also written as comments in `text`.
    pub warnings: Vec<String>,
    /// Fields of the main model whose value the config does not carry, so the importer chose
    /// it: `"context"` (Mamba; T5 without `n_positions`), `"generator"` (ELECTRA without
    /// `--generator`).
    pub assumed: Vec<&'static str>,
}

#[derive(Debug, Clone, PartialEq)]
pub enum ImportError {
    /// The input is not JSON.
    Json(String),
    /// The config is valid JSON but cannot be imported (unsupported, missing or bad key).
    Config(String),
    /// The generated spec did not format or check: a bug in the importer.
    Internal(String),
}

impl fmt::Display for ImportError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ImportError::Json(m) | ImportError::Config(m) => f.write_str(m),
            ImportError::Internal(m) => write!(
                f,
                "internal error: {m}\n(this is a bug in archc's importer; please report it)"
            ),
        }
    }
}

impl std::error::Error for ImportError {}

type Result<T> = std::result::Result<T, ImportError>;

/// The supported `model_type`s with their architectures; the first is the default.
const FAMILIES: &[(&str, &[&str])] = &[
    ("gpt2", &["GPT2LMHeadModel", "GPT2Model"]),
    ("openai-gpt", &["OpenAIGPTLMHeadModel", "OpenAIGPTModel"]),
    (
        "bert",
        &[
            "BertForPreTraining",
            "BertForMaskedLM",
            "BertModel",
            "BertForSequenceClassification",
        ],
    ),
    (
        "roberta",
        &[
            "RobertaForMaskedLM",
            "RobertaModel",
            "RobertaForSequenceClassification",
        ],
    ),
    (
        "albert",
        &[
            "AlbertForPreTraining",
            "AlbertForMaskedLM",
            "AlbertModel",
            "AlbertForSequenceClassification",
        ],
    ),
    (
        "electra",
        &[
            "ElectraForPreTraining",
            "ElectraForMaskedLM",
            "ElectraModel",
        ],
    ),
    (
        "t5",
        &["T5ForConditionalGeneration", "T5WithLMHeadModel", "T5Model"],
    ),
    ("bart", &["BartForConditionalGeneration", "BartModel"]),
    ("llama", &["LlamaForCausalLM", "LlamaModel"]),
    ("mamba", &["MambaForCausalLM", "MambaModel"]),
    ("rwkv", &["RwkvForCausalLM", "RwkvModel"]),
];

/// Comment lines and warnings gathered while importing.
#[derive(Default)]
pub struct Notes {
    /// Header comment paragraphs of the main model.
    comments: Vec<String>,
    warnings: Vec<String>,
    assumed: Vec<&'static str>,
}

impl Notes {
    /// A remark in the header comment.
    pub fn note(&mut self, text: impl Into<String>) {
        self.comments.push(text.into());
    }

    /// Something lost or assumed: a header comment and a warning on stderr.
    pub fn warn(&mut self, text: impl Into<String>) {
        let text = text.into();
        self.comments.push(format!("Warning: {text}"));
        self.warnings.push(text);
    }

    /// Records that the value of `field` is the importer's choice, not the config's.
    pub fn assume(&mut self, field: &'static str) {
        self.assumed.push(field);
    }
}

/// What a family builder gets.
pub struct Cx<'a> {
    pub cfg: Config<'a>,
    pub arch: &'a str,
    pub name: &'a str,
    pub opts: &'a Options,
    pub notes: Notes,
}

/// Imports one `config.json`.
pub fn import(text: &str, opts: &Options) -> Result<Imported> {
    let root = parse_json(text, &opts.source)?;
    let Value::Object(map) = &root else {
        return Err(ImportError::Config(format!(
            "{} is not a JSON object (found {})",
            opts.source,
            short_json(&root)
        )));
    };
    let model_type = match map.get("model_type") {
        Some(Value::String(s)) => s.as_str(),
        Some(v) => {
            return Err(ImportError::Config(format!(
                "`model_type` must be a string, found {}",
                short_json(v)
            )))
        }
        None => {
            return Err(ImportError::Config(format!(
                "{} has no `model_type`; is it a Hugging Face config.json?",
                opts.source
            )))
        }
    };
    let Some(&(_, archs)) = FAMILIES.iter().find(|(t, _)| *t == model_type) else {
        let known: Vec<&str> = FAMILIES.iter().map(|(t, _)| *t).collect();
        return Err(ImportError::Config(format!(
            "unsupported model_type `{model_type}`; supported: {}",
            known.join(", ")
        )));
    };
    let mut notes = Notes::default();
    let arch = architecture(map, model_type, archs, &mut notes)?;
    if opts.generator.is_some() && arch != "ElectraForPreTraining" {
        return Err(ImportError::Config(format!(
            "--generator applies only to ElectraForPreTraining, not {arch}"
        )));
    }
    let name = match &opts.name {
        Some(n) => valid_name(n)?,
        None => derive_name(&opts.source, model_type),
    };
    let mut cx = Cx {
        cfg: Config::new(map, model_type, "config.json"),
        arch,
        name: &name,
        opts,
        notes,
    };
    let mut models = match model_type {
        "gpt2" => decoder::gpt2(&mut cx)?,
        "openai-gpt" => decoder::openai_gpt(&mut cx)?,
        "llama" => decoder::llama(&mut cx)?,
        "mamba" => decoder::mamba(&mut cx)?,
        "rwkv" => decoder::rwkv(&mut cx)?,
        "bert" | "roberta" | "albert" | "electra" => encoder::import(&mut cx)?,
        "t5" => seq2seq::t5(&mut cx)?,
        "bart" => seq2seq::bart(&mut cx)?,
        _ => unreachable!("FAMILIES lists only the model types handled here"),
    };
    let Cx { notes, .. } = cx;
    let mut header = vec![
        format!("Imported by `archc import-hf` from {}", opts.source),
        format!("(model_type \"{model_type}\", architectures[0] = {arch})."),
    ];
    for c in &notes.comments {
        header.extend(emit::wrap(c, 88));
    }
    if let Some(first) = models.first_mut() {
        header.append(&mut first.header);
        first.header = header;
    }
    finish(&models, &name, notes.warnings, notes.assumed)
}

/// Formats, checks and elaborates the generated models.
fn finish(
    models: &[Model],
    name: &str,
    warnings: Vec<String>,
    assumed: Vec<&'static str>,
) -> Result<Imported> {
    let raw = emit::render(models);
    let text = arch_dsl::fmt::format(&raw).map_err(|d| {
        let prog = Program::from_source("<import-hf>", raw.clone(), None);
        ImportError::Internal(format!(
            "the generated spec does not parse ({} errors):\n{}\n{raw}",
            d.len(),
            render(&prog.sources, &prog.diagnostics, false)
        ))
    })?;
    let prog = Program::from_source("<import-hf>", text.clone(), None);
    let (_, diags) = prog.check();
    if diags.iter().any(|d| d.is_error()) {
        return Err(ImportError::Internal(format!(
            "the generated spec does not check:\n{}\n{text}",
            render(&prog.sources, &diags, false)
        )));
    }
    let (spec, _) = prog.elaborate(name);
    let spec = spec.ok_or_else(|| {
        ImportError::Internal(format!("model `{name}` did not elaborate:\n{text}"))
    })?;
    Ok(Imported {
        text,
        name: name.to_string(),
        spec,
        warnings,
        assumed,
    })
}

fn parse_json(text: &str, source: &str) -> Result<Value> {
    serde_json::from_str(text).map_err(|e| {
        ImportError::Json(format!(
            "{source} is not valid JSON: {e} (line {}, column {})",
            e.line(),
            e.column()
        ))
    })
}

/// `architectures[0]`, checked against what this family supports.
fn architecture(
    map: &serde_json::Map<String, Value>,
    model_type: &str,
    archs: &[&'static str],
    notes: &mut Notes,
) -> Result<&'static str> {
    let first = match map.get("architectures") {
        None | Some(Value::Null) => None,
        Some(Value::Array(a)) if a.is_empty() => None,
        Some(Value::Array(a)) => match &a[0] {
            Value::String(s) => Some(s.as_str()),
            v => {
                return Err(ImportError::Config(format!(
                    "`architectures[0]` must be a class name, found {}",
                    short_json(v)
                )))
            }
        },
        Some(v) => {
            return Err(ImportError::Config(format!(
                "`architectures` must be a list of class names, found {}",
                short_json(v)
            )))
        }
    };
    match first {
        None => {
            notes.warn(format!(
                "the config names no `architectures`; assumed {}, the pretraining class of \
                 `{model_type}`",
                archs[0]
            ));
            Ok(archs[0])
        }
        Some(a) => archs.iter().copied().find(|x| *x == a).ok_or_else(|| {
            ImportError::Config(format!(
                "unsupported architecture `{a}` for model_type `{model_type}`; supported: {}",
                archs.join(", ")
            ))
        }),
    }
}

const RESERVED: &[&str] = &["use", "let", "block", "model", "true", "false"];

fn is_ident(s: &str) -> bool {
    let mut chars = s.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
        && !RESERVED.contains(&s)
}

fn valid_name(name: &str) -> Result<String> {
    if is_ident(name) {
        Ok(name.to_string())
    } else {
        Err(ImportError::Config(format!(
            "--name `{name}` is not a model name: use letters, digits and `_`, not starting \
             with a digit, and not one of {}",
            RESERVED.join(", ")
        )))
    }
}

/// `bert-base-uncased.json` → `bert_base_uncased`; `…/tiny-llama/config.json` →
/// `tiny_llama`; the model type when nothing usable is left.
pub fn derive_name(source: &str, model_type: &str) -> String {
    let path = Path::new(source);
    let stem = path
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default();
    let base = if stem.eq_ignore_ascii_case("config") {
        path.parent()
            .and_then(Path::file_name)
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_default()
    } else {
        stem
    };
    sanitize(&base)
        .or_else(|| sanitize(model_type))
        .unwrap_or_else(|| "imported".to_string())
}

fn sanitize(s: &str) -> Option<String> {
    let mut out = String::new();
    for c in s.chars() {
        if c.is_ascii_alphanumeric() {
            out.push(c.to_ascii_lowercase());
        } else if !out.ends_with('_') {
            out.push('_');
        }
    }
    let out = out.trim_matches('_').to_string();
    if out.is_empty() {
        return None;
    }
    let out = if out.starts_with(|c: char| c.is_ascii_digit()) {
        format!("m_{out}")
    } else {
        out
    };
    Some(if RESERVED.contains(&out.as_str()) {
        format!("{out}_model")
    } else {
        out
    })
}

/// A Hugging Face activation name, as the plain and gated `.arch` activation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Act {
    Gelu,
    GeluTanh,
    Relu,
    Silu,
}

impl Act {
    pub fn parse(cfg: &Config, key: &str, name: &str) -> Result<Act> {
        Ok(match name {
            "gelu" | "gelu_python" => Act::Gelu,
            "gelu_new" | "gelu_pytorch_tanh" | "gelu_fast" => Act::GeluTanh,
            "relu" => Act::Relu,
            "silu" | "swish" => Act::Silu,
            other => {
                return Err(ImportError::Config(format!(
                    "unsupported activation `{other}` in `{key}` of {}; supported: gelu, \
                     gelu_python, gelu_new, gelu_pytorch_tanh, gelu_fast, relu, silu, swish",
                    cfg.what
                )))
            }
        })
    }

    /// Reads `key` (default `default`).
    pub fn read(cfg: &Config, key: &str, default: &str) -> Result<Act> {
        let name = cfg.str_or(key, default)?;
        Act::parse(cfg, key, name)
    }

    pub fn plain(self) -> &'static str {
        match self {
            Act::Gelu => "gelu",
            Act::GeluTanh => "gelu_tanh",
            Act::Relu => "relu",
            Act::Silu => "silu",
        }
    }

    /// The gated form (three matrices). ARCH_LANGUAGE.md §7 does not say which GELU `geglu`
    /// gates with; the caller notes the source's variant.
    pub fn gated(self) -> &'static str {
        match self {
            Act::Gelu | Act::GeluTanh => "geglu",
            Act::Relu => "reglu",
            Act::Silu => "swiglu",
        }
    }

    /// A note for `geglu`, naming the GELU variant of the source.
    pub fn gated_note(self, key: &str, name: &str) -> Option<String> {
        let variant = match self {
            Act::Gelu => "exact (erf) GELU",
            Act::GeluTanh => "tanh-approximated GELU",
            _ => return None,
        };
        Some(format!(
            "`{key}` = \"{name}\" gates with the {variant}; `geglu` stands for it (ARCH_LANGUAGE.md \
             does not pin the GELU variant of `geglu`)."
        ))
    }
}

/// `dtype` (transformers ≥ 4.56) or `torch_dtype`, as a `.arch` dtype; `None` for f32 or absent.
pub fn dtype(cfg: &Config) -> Result<Option<&'static str>> {
    let key = if cfg.has("dtype") {
        "dtype"
    } else {
        "torch_dtype"
    };
    Ok(match cfg.opt_str(key)? {
        None | Some("float32") | Some("auto") => None,
        Some("bfloat16") => Some("bf16"),
        Some("float16") => Some("f16"),
        Some(other) => {
            return Err(ImportError::Config(format!(
                "unsupported `{key}` \"{other}\"; supported: float32, bfloat16, float16"
            )))
        }
    })
}

/// Writes `dtype = …` when the checkpoint is not f32.
pub fn push_dtype(m: &mut Model, cfg: &Config) -> Result<()> {
    if let Some(d) = dtype(cfg)? {
        m.field("dtype", d);
    }
    Ok(())
}

/// Fails unless `n` divides into `heads`.
pub fn divisible(what: &str, n: u64, by_what: &str, by: u64) -> Result<()> {
    if by == 0 || !n.is_multiple_of(by) {
        return Err(ImportError::Config(format!(
            "{what} ({n}) is not a multiple of {by_what} ({by})"
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_derived_from_the_file() {
        assert_eq!(
            derive_name("x/bert-base-uncased.json", "bert"),
            "bert_base_uncased"
        );
        assert_eq!(
            derive_name("hf/tiny-llama/config.json", "llama"),
            "tiny_llama"
        );
        assert_eq!(derive_name("config.json", "openai-gpt"), "openai_gpt");
        assert_eq!(
            derive_name("Meta-Llama-3-8B.json", "llama"),
            "meta_llama_3_8b"
        );
        assert_eq!(derive_name("7b.json", "llama"), "m_7b");
        assert_eq!(derive_name("model.json", "llama"), "model_model");
        assert_eq!(derive_name("---.json", "gpt2"), "gpt2");
    }

    #[test]
    fn names_given_must_be_identifiers() {
        assert!(valid_name("my_bert").is_ok());
        assert!(valid_name("my-bert").is_err());
        assert!(valid_name("1bert").is_err());
        assert!(valid_name("model").is_err());
        assert!(valid_name("").is_err());
    }
}

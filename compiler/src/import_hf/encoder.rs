//! BERT, RoBERTa, ALBERT and ELECTRA: post-norm bidirectional encoders with learned
//! positions, segment embeddings and a normed embedding sum.
//!
//! | architecture | objective / head |
//! |---|---|
//! | BertForPreTraining | `mlm(rate = 0.15) + nsp` |
//! | BertForMaskedLM, AlbertForMaskedLM | `mlm(rate = 0.15)` |
//! | RobertaForMaskedLM | `mlm(rate = 0.15, dynamic = true)` |
//! | AlbertForPreTraining | `mlm(rate = 0.15) + sop` |
//! | ElectraForPreTraining | `rtd(generator = NAME_generator, weight = 50.0)`, plus that generator |
//! | ElectraForMaskedLM | ELECTRA's generator MLM: `mlm(rate = 0.15, mask = 0.85, random = 0.0, dynamic = true)` |
//! | *ForSequenceClassification | `none`, `head = classifier(labels = num_labels)` |
//! | BertModel, RobertaModel, AlbertModel, ElectraModel | `none` (the pooler of the first three is dropped, with a warning) |

use super::config::Config;
use super::emit::{boolean, field, float, int, section, Member, Model};
use super::{divisible, push_dtype, Act, Cx, ImportError, Notes, Result};

#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    Bert,
    Roberta,
    Albert,
    Electra,
}

/// What one encoder config says about the network (everything but the objective).
struct Encoder {
    vocab: u64,
    d_model: u64,
    /// Width of the token embedding.
    embed_width: u64,
    context: u64,
    offset: u64,
    layers: u64,
    heads: u64,
    hidden: u64,
    act: Act,
    eps: f64,
    segments: u64,
    tied: bool,
}

/// ELECTRA's generator objective (google-research/electra: 15% of tokens, 85% of them
/// replaced by [MASK], the rest kept, masks drawn afresh for every batch).
const ELECTRA_MLM: &str = "mlm(rate = 0.15, mask = 0.85, random = 0.0, dynamic = true)";

pub fn import(cx: &mut Cx) -> Result<Vec<Model>> {
    let kind = match cx.cfg.model_type.as_str() {
        "bert" => Kind::Bert,
        "roberta" => Kind::Roberta,
        "albert" => Kind::Albert,
        _ => Kind::Electra,
    };
    let enc = read(&cx.cfg, kind, &mut cx.notes)?;
    let mut model = body(cx.name, &enc, kind, &cx.cfg)?;
    let mut extra = Vec::new();
    let (head, objective) = match cx.arch {
        "BertForPreTraining" => (None, "mlm(rate = 0.15) + nsp".to_string()),
        "BertForMaskedLM" | "AlbertForMaskedLM" => (None, "mlm(rate = 0.15)".to_string()),
        "RobertaForMaskedLM" => (None, "mlm(rate = 0.15, dynamic = true)".to_string()),
        "AlbertForPreTraining" => (None, "mlm(rate = 0.15) + sop".to_string()),
        "ElectraForMaskedLM" => (None, ELECTRA_MLM.to_string()),
        "ElectraForPreTraining" => {
            let stem = cx.name.strip_suffix("_discriminator").unwrap_or(cx.name);
            let gen_name = format!("{stem}_generator");
            extra.push(generator(cx, &enc, &gen_name)?);
            (None, format!("rtd(generator = {gen_name}, weight = 50.0)"))
        }
        "BertForSequenceClassification"
        | "RobertaForSequenceClassification"
        | "AlbertForSequenceClassification" => {
            let labels = cx.cfg.num_labels()?;
            if cx.arch.starts_with("Roberta") {
                cx.notes.note(
                    "RobertaClassificationHead (dense + tanh on <s>, then the labels) is \
                     written as `classifier(pooler = true)`: the same tensors and function.",
                );
            }
            (
                Some(format!("classifier(labels = {labels}, pooler = true)")),
                "none".to_string(),
            )
        }
        "ElectraModel" => (None, "none".to_string()),
        base => {
            // BertModel, RobertaModel, AlbertModel: `.arch` has a pooler only with a head.
            let labels = cx.cfg.num_labels()?;
            let d = enc.d_model;
            cx.notes.warn(format!(
                "{base} holds a pooler (dense + tanh on the first token) but no head. \
                 `.arch` attaches the pooler only to `classifier(pooler = true)` and to the \
                 heads of `nsp` and `sop` (ARCH_LANGUAGE.md §5), so this spec keeps it with a \
                 {labels}-label classifier that {base} lacks: `archc stats` counts {} \
                 parameters more than Hugging Face. Set `labels` for fine-tuning.",
                labels.saturating_mul(d).saturating_add(labels)
            ));
            (
                Some(format!("classifier(labels = {labels}, pooler = true)")),
                "none".to_string(),
            )
        }
    };
    if let Some(h) = head {
        model.field("head", h);
    }
    model.field("objective", objective);
    let mut models = vec![model];
    models.extend(extra);
    Ok(models)
}

fn read(cfg: &Config, kind: Kind, notes: &mut Notes) -> Result<Encoder> {
    let vocab = cfg.size("vocab_size", "the vocabulary size")?;
    let d_model = cfg.size("hidden_size", "the model width")?;
    let layers = cfg.layers("num_hidden_layers", "the number of layers")?;
    let heads = cfg.size("num_attention_heads", "the number of attention heads")?;
    let hidden = cfg.size("intermediate_size", "the MLP width")?;
    let positions = cfg.size("max_position_embeddings", "the position table's length")?;
    divisible("`hidden_size`", d_model, "`num_attention_heads`", heads)?;
    let act = Act::read(cfg, "hidden_act", "gelu")?;
    let eps = cfg.pos_f64_or("layer_norm_eps", 1e-12)?;
    let segments = cfg.u64_or("type_vocab_size", 2)?;
    let tied = cfg.bool_or("tie_word_embeddings", true)?;
    let pet = cfg.str_or("position_embedding_type", "absolute")?;
    if pet != "absolute" {
        return Err(ImportError::Config(format!(
            "`position_embedding_type` \"{pet}\" is not supported: `.arch` has no relative \
             key/query position embeddings; only \"absolute\" imports"
        )));
    }
    cfg.refuse_bool(
        "is_decoder",
        false,
        "a causal BERT-style decoder is not supported",
    )?;
    cfg.refuse_bool(
        "add_cross_attention",
        false,
        "cross-attention needs an encoder-decoder model",
    )?;
    let embed_width = match kind {
        Kind::Albert | Kind::Electra => cfg.size("embedding_size", "the token embedding width")?,
        _ => d_model,
    };
    // RoBERTa numbers positions from pad_token_id + 1; the rows before are never read.
    let offset = match kind {
        Kind::Roberta => cfg.u64_or("pad_token_id", 1)? + 1,
        _ => 0,
    };
    if positions <= offset {
        return Err(ImportError::Config(format!(
            "`max_position_embeddings` ({positions}) leaves no position after the {offset} \
             reserved rows (`pad_token_id` + 1)"
        )));
    }
    if kind == Kind::Roberta {
        notes.note(format!(
            "RoBERTa's position ids start at pad_token_id + 1 = {offset}: `learned(offset = \
             {offset})` with context = max_position_embeddings - {offset}."
        ));
    }
    if kind == Kind::Albert {
        for key in ["num_hidden_groups", "inner_group_num"] {
            let n = cfg.size_or(key, 1)?;
            if n != 1 {
                return Err(ImportError::Config(format!(
                    "`{key}` = {n} is not supported: `.arch` shares one layer's weights over \
                     the stack (`share = all`), which is ALBERT with 1 group of 1 layer"
                )));
            }
        }
        if embed_width == d_model {
            notes.warn(format!(
                "ALBERT projects its embeddings even when `embedding_size` = `hidden_size`; \
                 `archc stats` counts the projection only when they differ, {} parameters \
                 fewer than Hugging Face.",
                d_model.saturating_mul(d_model).saturating_add(d_model)
            ));
        }
    }
    Ok(Encoder {
        vocab,
        d_model,
        embed_width,
        context: positions - offset,
        offset,
        layers,
        heads,
        hidden,
        act,
        eps,
        segments,
        tied,
    })
}

/// The model without objective and head.
fn body(name: &str, e: &Encoder, kind: Kind, cfg: &Config) -> Result<Model> {
    let mut m = Model::new(name);
    m.field("vocab", int(e.vocab));
    m.field("d_model", int(e.d_model));
    m.field("context", int(e.context));
    push_dtype(&mut m, cfg)?;
    m.field("norm", format!("layernorm(eps = {})", float(e.eps)));
    m.field("placement", "post");
    m.field(
        "position",
        if e.offset == 0 {
            "learned".to_string()
        } else {
            format!("learned(offset = {})", e.offset)
        },
    );
    let mut embed: Vec<Member> = Vec::new();
    if !e.tied {
        embed.push(field("tied", boolean(false)));
    }
    if e.segments > 0 {
        embed.push(field("segments", int(e.segments)));
    }
    embed.push(field("norm", boolean(true)));
    // ALBERT always projects; ELECTRA only when the widths differ (as `factorized` counts).
    if kind == Kind::Albert || e.embed_width != e.d_model {
        embed.push(field("factorized", int(e.embed_width)));
    }
    m.push(section("embed", embed));
    let mut encoder = vec![field("layers", int(e.layers))];
    if kind == Kind::Albert {
        encoder.push(field("share", "all"));
    }
    encoder.push(section(
        "attention",
        vec![field("heads", int(e.heads)), field("bias", boolean(true))],
    ));
    encoder.push(section(
        "mlp",
        vec![
            field("hidden", int(e.hidden)),
            field("act", e.act.plain()),
            field("bias", boolean(true)),
        ],
    ));
    m.push(section("encoder", encoder));
    Ok(m)
}

/// ELECTRA's generator: from `--generator`, or else the discriminator's own widths.
fn generator(cx: &mut Cx, disc: &Encoder, name: &str) -> Result<Model> {
    let Some((source, text)) = &cx.opts.generator else {
        cx.notes.warn(format!(
            "config.json describes only the discriminator. The generator `{name}` below \
             copies its widths, as google/electra-small-generator does; the paper's generators \
             are smaller (1/4 to 1/3 of the width). Pass `--generator GENERATOR_CONFIG.json` \
             to import the real one."
        ));
        cx.notes.assume("generator");
        let mut g = body(name, disc, Kind::Electra, &cx.cfg)?;
        g.header = vec![format!(
            "ELECTRA generator assumed by `archc import-hf`: the discriminator's widths."
        )];
        g.field("objective", ELECTRA_MLM);
        return Ok(g);
    };
    let root: serde_json::Value = serde_json::from_str(text).map_err(|e| {
        ImportError::Json(format!(
            "{source} is not valid JSON: {e} (line {}, column {})",
            e.line(),
            e.column()
        ))
    })?;
    let serde_json::Value::Object(map) = &root else {
        return Err(ImportError::Config(format!(
            "{source} is not a JSON object"
        )));
    };
    let what = format!("the generator config {source}");
    match map.get("model_type").and_then(|v| v.as_str()) {
        Some("electra") => {}
        other => {
            return Err(ImportError::Config(format!(
                "{what} must have model_type \"electra\", found {}",
                other.map_or("none".to_string(), |t| format!("\"{t}\""))
            )))
        }
    }
    let cfg = Config::new(map, "electra", &what);
    let mut ignored = Notes::default();
    let gen = read(&cfg, Kind::Electra, &mut ignored)?;
    if gen.vocab != disc.vocab || gen.embed_width != disc.embed_width {
        return Err(ImportError::Config(format!(
            "the generator ({source}) must share the discriminator's token embeddings: \
             vocabulary {} vs {}, embedding width {} vs {}",
            gen.vocab, disc.vocab, gen.embed_width, disc.embed_width
        )));
    }
    let mut g = body(name, &gen, Kind::Electra, &cfg)?;
    g.header = vec![format!("ELECTRA generator, imported from {source}.")];
    g.field("objective", ELECTRA_MLM);
    cx.notes
        .note(format!("The generator `{name}` is imported from {source}."));
    Ok(g)
}

//! Encoder-decoder families: T5 and BART.
//!
//! T5ForConditionalGeneration → `span_corruption(rate = 0.15, mean_span = 3)`, with
//! `head = lm(scale = d_model ^ -0.5)` when the head is tied (T5 v1.0 rescales the decoder
//! output before the tied projection; v1.1, untied, does not). BartForConditionalGeneration →
//! `denoise(text_infill = 0.3, lambda = 3.0, sentence_permute = true)`, BART's published
//! pretraining recipe. `T5Model` and `BartModel` → `none`.

use super::emit::{boolean, field, float, int, section, Member, Model};
use super::{divisible, push_dtype, Act, Cx, ImportError, Result};

/// T5's context when the config has no `n_positions`: the length T5 was pretrained at.
const T5_CONTEXT: u64 = 512;

pub fn t5(cx: &mut Cx) -> Result<Vec<Model>> {
    let cfg = &cx.cfg;
    let vocab = cfg.size("vocab_size", "the vocabulary size")?;
    let d = cfg.size("d_model", "the model width")?;
    let head_dim = cfg.size("d_kv", "the width of each attention head")?;
    let d_ff = cfg.size("d_ff", "the MLP width")?;
    let layers = cfg.layers("num_layers", "the number of encoder layers")?;
    let dec_layers = cfg.layers_or("num_decoder_layers", layers)?;
    let heads = cfg.size("num_heads", "the number of attention heads")?;
    let buckets = cfg.size_or("relative_attention_num_buckets", 32)?;
    let max_distance = cfg.size_or("relative_attention_max_distance", 128)?;
    let eps = cfg.pos_f64_or("layer_norm_epsilon", 1e-6)?;
    let tied = cfg.bool_or("tie_word_embeddings", true)?;
    // transformers ≥ 5 always ties and says whether to rescale in `scale_decoder_outputs`;
    // before, a tied head (T5 v1.0) was rescaled and an untied one (v1.1) was not.
    let scaled = tied && cfg.bool_or("scale_decoder_outputs", tied)?;
    if tied && !scaled {
        cx.notes.note(
            "scale_decoder_outputs = false (T5 v1.1 saved by transformers >= 5, which always \
             ties): if the checkpoint holds its own lm_head.weight, set `embed.tied = false`.",
        );
    }
    let cfg = &cx.cfg;
    // "relu", "gated-gelu" (T5 v1.1: gelu_new, kept for backward compatibility),
    // "gated-silu", …: configuration_t5.py.
    let proj = cfg.str_or("feed_forward_proj", "relu")?;
    let parts: Vec<&str> = proj.split('-').collect();
    let (gated, act_name) = match parts.as_slice() {
        [a] => (false, *a),
        ["gated", a] => (true, if proj == "gated-gelu" { "gelu_new" } else { *a }),
        _ => {
            return Err(ImportError::Config(format!(
                "`feed_forward_proj` \"{proj}\" is neither `ACT` nor `gated-ACT`"
            )))
        }
    };
    let act = Act::parse(cfg, "feed_forward_proj", act_name)?;
    let act = if gated {
        if let Some(n) = act.gated_note("feed_forward_proj", proj) {
            cx.notes.note(n);
        }
        act.gated()
    } else {
        act.plain()
    };
    let cfg = &cx.cfg;
    let context = match cfg.opt_u64("n_positions")? {
        Some(n) if n > 0 => n,
        _ => {
            cx.notes.note(format!(
                "T5 has no position table; context = {T5_CONTEXT}, the length it was \
                 pretrained at."
            ));
            cx.notes.assume("context");
            T5_CONTEXT
        }
    };
    if scaled && cx.arch != "T5Model" {
        cx.notes.note(
            "Tied head: Hugging Face scales the decoder output by d_model^-0.5 before it \
             (T5 v1.0); `head = lm(scale = d_model ^ -0.5)`.",
        );
    }
    let cfg = &cx.cfg;
    let attn = || {
        section(
            "attention",
            vec![
                field("heads", int(heads)),
                field("head_dim", int(head_dim)),
                field("scale", "1.0"),
            ],
        )
    };
    let mlp = || section("mlp", vec![field("hidden", int(d_ff)), field("act", act)]);
    let mut m = Model::new(cx.name);
    m.field("vocab", int(vocab));
    m.field("d_model", int(d));
    m.field("context", int(context));
    push_dtype(&mut m, cfg)?;
    m.field("norm", format!("rmsnorm(eps = {})", float(eps)));
    m.field("placement", "pre");
    m.field(
        "position",
        format!("relative_bias(buckets = {buckets}, max_distance = {max_distance})"),
    );
    if !tied {
        m.push(section("embed", vec![field("tied", boolean(false))]));
    }
    m.push(section(
        "encoder",
        vec![field("layers", int(layers)), attn(), mlp()],
    ));
    m.push(section(
        "decoder",
        vec![
            field("layers", int(dec_layers)),
            attn(),
            section(
                "cross_attention",
                vec![
                    field("heads", int(heads)),
                    field("head_dim", int(head_dim)),
                    field("scale", "1.0"),
                ],
            ),
            mlp(),
        ],
    ));
    if cx.arch == "T5Model" {
        m.field("objective", "none");
    } else {
        if scaled {
            m.field("head", "lm(scale = d_model ^ -0.5)");
        }
        m.field("objective", "span_corruption(rate = 0.15, mean_span = 3)");
    }
    Ok(vec![m])
}

/// BART: post-norm encoder-decoder, learned positions offset by 2, a norm on each stack's
/// embeddings, no final norm, biases everywhere, tied head.
pub fn bart(cx: &mut Cx) -> Result<Vec<Model>> {
    let cfg = &cx.cfg;
    let vocab = cfg.size("vocab_size", "the vocabulary size")?;
    let d = cfg.size("d_model", "the model width")?;
    let context = cfg.size("max_position_embeddings", "the context length")?;
    let enc_layers = cfg.layers("encoder_layers", "the number of encoder layers")?;
    let dec_layers = cfg.layers("decoder_layers", "the number of decoder layers")?;
    let enc_heads = cfg.size("encoder_attention_heads", "the encoder's attention heads")?;
    let dec_heads = cfg.size("decoder_attention_heads", "the decoder's attention heads")?;
    let enc_ffn = cfg.size("encoder_ffn_dim", "the encoder's MLP width")?;
    let dec_ffn = cfg.size("decoder_ffn_dim", "the decoder's MLP width")?;
    divisible("`d_model`", d, "`encoder_attention_heads`", enc_heads)?;
    divisible("`d_model`", d, "`decoder_attention_heads`", dec_heads)?;
    let act = Act::read(cfg, "activation_function", "gelu")?;
    let scale_embedding = cfg.bool_or("scale_embedding", false)?;
    let tied = cfg.bool_or("tie_word_embeddings", true)?;
    cx.notes.note(
        "BartLearnedPositionalEmbedding holds max_position_embeddings + 2 rows and reads row \
         i+2: `learned(offset = 2)`. LayerNorm eps is PyTorch's default, 1e-5 \
         (modeling_bart.py passes none).",
    );
    let mut m = Model::new(cx.name);
    m.field("vocab", int(vocab));
    m.field("d_model", int(d));
    m.field("context", int(context));
    push_dtype(&mut m, cfg)?;
    m.field("norm", format!("layernorm(eps = {})", float(1e-5)));
    m.field("placement", "post");
    m.field("position", "learned(offset = 2)");
    let mut embed: Vec<Member> = Vec::new();
    if !tied {
        embed.push(field("tied", boolean(false)));
    }
    embed.push(field("norm", boolean(true)));
    if scale_embedding {
        embed.push(field("scale", "sqrt(d_model)"));
    }
    m.push(section("embed", embed));
    let attn = |name: &str, heads: u64| {
        section(
            name,
            vec![field("heads", int(heads)), field("bias", boolean(true))],
        )
    };
    let mlp = |hidden: u64| {
        section(
            "mlp",
            vec![
                field("hidden", int(hidden)),
                field("act", act.plain()),
                field("bias", boolean(true)),
            ],
        )
    };
    m.push(section(
        "encoder",
        vec![
            field("layers", int(enc_layers)),
            attn("attention", enc_heads),
            mlp(enc_ffn),
        ],
    ));
    m.push(section(
        "decoder",
        vec![
            field("layers", int(dec_layers)),
            attn("attention", dec_heads),
            attn("cross_attention", dec_heads),
            mlp(dec_ffn),
        ],
    ));
    if cx.arch == "BartModel" {
        m.field("objective", "none");
    } else {
        cx.notes.note(
            "The head adds final_logits_bias to the logits: `lm(bias = true)`. Hugging Face \
             keeps it as a buffer (zeros in released checkpoints), so `archc stats` counts \
             `vocab` parameters more than BartForConditionalGeneration.parameters().",
        );
        m.field("head", "lm(bias = true)");
        m.field(
            "objective",
            "denoise(text_infill = 0.3, lambda = 3.0, sentence_permute = true)",
        );
    }
    Ok(vec![m])
}

//! Decoder-only families: GPT-2, GPT (openai-gpt), LLaMA, Mamba and RWKV-4.
//!
//! `*ForCausalLM` / `*LMHeadModel` → `objective = next_token`; the bare `*Model` → `none`.

use serde_json::Value;

use super::config::short_json;
use super::emit::{boolean, field, float, int, section, Member, Model};
use super::{divisible, push_dtype, Act, Cx, ImportError, Result};

fn objective(arch: &str) -> &'static str {
    if arch.ends_with("Model") && !arch.ends_with("HeadModel") {
        "none"
    } else {
        "next_token"
    }
}

/// GPT-2: pre-norm, learned positions, biases everywhere, tied head.
pub fn gpt2(cx: &mut Cx) -> Result<Vec<Model>> {
    let cfg = &cx.cfg;
    let vocab = cfg.size("vocab_size", "the vocabulary size")?;
    let d = cfg.size("n_embd", "the model width")?;
    let layers = cfg.layers("n_layer", "the number of layers")?;
    let heads = cfg.size("n_head", "the number of attention heads")?;
    let context = cfg.size("n_positions", "the position table's length")?;
    divisible("`n_embd`", d, "`n_head`", heads)?;
    let hidden = match cfg.opt_u64("n_inner")? {
        Some(0) | None => d
            .checked_mul(4)
            .ok_or_else(|| cfg.bad("n_embd", "smaller"))?,
        Some(h) => h,
    };
    let act = Act::read(cfg, "activation_function", "gelu_new")?;
    let eps = cfg.pos_f64_or("layer_norm_epsilon", 1e-5)?;
    let tied = cfg.bool_or("tie_word_embeddings", true)?;
    cfg.refuse_bool(
        "scale_attn_by_inverse_layer_idx",
        false,
        "`.arch` attention has one fixed `scale` per stack",
    )?;
    cfg.refuse_bool(
        "add_cross_attention",
        false,
        "cross-attention needs an encoder-decoder model",
    )?;
    let scaled = cfg.bool_or("scale_attn_weights", true)?;
    let mut m = Model::new(cx.name);
    m.field("vocab", int(vocab));
    m.field("d_model", int(d));
    m.field("context", int(context));
    push_dtype(&mut m, cfg)?;
    m.field("norm", format!("layernorm(eps = {})", float(eps)));
    m.field("placement", "pre");
    m.field("position", "learned");
    if !tied {
        m.push(section("embed", vec![field("tied", boolean(false))]));
    }
    let mut attn = vec![field("heads", int(heads)), field("bias", boolean(true))];
    if !scaled {
        attn.push(field("scale", "1.0"));
    }
    m.push(section(
        "decoder",
        vec![
            field("layers", int(layers)),
            section("attention", attn),
            section(
                "mlp",
                vec![
                    field("hidden", int(hidden)),
                    field("act", act.plain()),
                    field("bias", boolean(true)),
                ],
            ),
        ],
    ));
    m.field("objective", objective(cx.arch));
    Ok(vec![m])
}

/// GPT (2018): post-norm, no embedding norm and no final norm, learned positions.
pub fn openai_gpt(cx: &mut Cx) -> Result<Vec<Model>> {
    let cfg = &cx.cfg;
    let vocab = cfg.size("vocab_size", "the vocabulary size")?;
    let d = cfg.size("n_embd", "the model width")?;
    let layers = cfg.layers("n_layer", "the number of layers")?;
    let heads = cfg.size("n_head", "the number of attention heads")?;
    let context = cfg.size("n_positions", "the position table's length")?;
    divisible("`n_embd`", d, "`n_head`", heads)?;
    let hidden = d
        .checked_mul(4)
        .ok_or_else(|| cfg.bad("n_embd", "smaller"))?;
    // modeling_openai.py's ACT_FNS maps "gelu" to gelu_new, the tanh approximation.
    let afn = cfg.str_or("afn", "gelu")?;
    let act = match afn {
        "gelu" => {
            cx.notes.note(
                "openai-gpt's `afn` = \"gelu\" is the tanh approximation in Hugging Face \
                 (ACT_FNS maps it to gelu_new): `gelu_tanh`.",
            );
            Act::GeluTanh
        }
        "relu" => Act::Relu,
        "silu" | "swish" => Act::Silu,
        other => {
            return Err(ImportError::Config(format!(
                "unsupported activation `{other}` in `afn`; supported: gelu, relu, silu, swish"
            )))
        }
    };
    let eps = cfg.pos_f64_or("layer_norm_epsilon", 1e-5)?;
    let tied = cfg.bool_or("tie_word_embeddings", true)?;
    let mut m = Model::new(cx.name);
    m.field("vocab", int(vocab));
    m.field("d_model", int(d));
    m.field("context", int(context));
    push_dtype(&mut m, cfg)?;
    m.field("norm", format!("layernorm(eps = {})", float(eps)));
    m.field("placement", "post");
    m.field("position", "learned");
    if !tied {
        m.push(section("embed", vec![field("tied", boolean(false))]));
    }
    m.push(section(
        "decoder",
        vec![
            field("layers", int(layers)),
            section(
                "attention",
                vec![field("heads", int(heads)), field("bias", boolean(true))],
            ),
            section(
                "mlp",
                vec![
                    field("hidden", int(hidden)),
                    field("act", act.plain()),
                    field("bias", boolean(true)),
                ],
            ),
        ],
    ));
    m.field("objective", objective(cx.arch));
    Ok(vec![m])
}

/// The RoPE base (`rope_theta`, or `rope_parameters.rope_theta` in transformers ≥ 5) and
/// its scaling (`rope_scaling` / `rope_parameters`: "default", "linear" and "llama3" are
/// expressible; any other kind changes the rotations in ways a spec cannot say) as the
/// spec's `position` value.
fn rope(cx: &Cx) -> Result<String> {
    let cfg = &cx.cfg;
    let mut theta = cfg.pos_f64_or("rope_theta", 10000.0)?;
    let mut scaling = String::new();
    for key in ["rope_scaling", "rope_parameters"] {
        let Some(v) = cfg.get(key) else { continue };
        if v.is_null() {
            continue;
        }
        let Value::Object(p) = v else {
            return Err(cfg.bad(key, "an object"));
        };
        let kind = p
            .get("rope_type")
            .or_else(|| p.get("type"))
            .and_then(Value::as_str)
            .unwrap_or("default");
        let positive = |name: &str| -> Result<f64> {
            match p.get(name).and_then(Value::as_f64) {
                Some(x) if x > 0.0 && x.is_finite() => Ok(x),
                _ => Err(cfg.bad(
                    key,
                    &format!("an object whose `{name}` is a positive number"),
                )),
            }
        };
        match kind {
            "default" => {}
            "linear" => {
                scaling = format!(
                    ", scaling = linear, factor = {}",
                    float(positive("factor")?)
                );
            }
            "llama3" => {
                let (factor, low, high) = (
                    positive("factor")?,
                    positive("low_freq_factor")?,
                    positive("high_freq_factor")?,
                );
                let original = positive("original_max_position_embeddings")?;
                if original.fract() != 0.0 || high <= low {
                    return Err(cfg.bad(
                        key,
                        "an integer `original_max_position_embeddings` and `high_freq_factor` > `low_freq_factor`",
                    ));
                }
                scaling = format!(
                    ", scaling = llama3, factor = {}, low_freq_factor = {}, high_freq_factor = {}, original_context = {}",
                    float(factor),
                    float(low),
                    float(high),
                    original as u64
                );
            }
            _ => {
                return Err(ImportError::Config(format!(
                    "`{key}` with rope_type \"{kind}\" ({}) is not expressible: `.arch` RoPE \
                     scales frequencies only as `linear` or `llama3` (ARCHITECTURE.md, \"RoPE \
                     scaling\"), and this kind computes different rotations",
                    short_json(v)
                )));
            }
        }
        if let Some(t) = p.get("rope_theta") {
            match t.as_f64() {
                Some(t) if t > 0.0 && t.is_finite() => theta = t,
                _ => return Err(cfg.bad(key, "an object whose `rope_theta` is positive")),
            }
        }
    }
    Ok(format!("rope(theta = {}{scaling})", float(theta)))
}

/// LLaMA: RMSNorm pre-norm, RoPE, grouped-query attention, gated MLP, untied head.
pub fn llama(cx: &mut Cx) -> Result<Vec<Model>> {
    let cfg = &cx.cfg;
    let vocab = cfg.size("vocab_size", "the vocabulary size")?;
    let d = cfg.size("hidden_size", "the model width")?;
    let hidden = cfg.size("intermediate_size", "the MLP width")?;
    let layers = cfg.layers("num_hidden_layers", "the number of layers")?;
    let heads = cfg.size("num_attention_heads", "the number of attention heads")?;
    let context = cfg.size("max_position_embeddings", "the context length")?;
    let kv_heads = cfg.size_or("num_key_value_heads", heads)?;
    divisible(
        "`num_attention_heads`",
        heads,
        "`num_key_value_heads`",
        kv_heads,
    )?;
    let head_dim = match cfg.opt_u64("head_dim")? {
        Some(h) => cfg.size_or("head_dim", h)?,
        None => {
            divisible("`hidden_size`", d, "`num_attention_heads`", heads)?;
            d / heads
        }
    };
    if head_dim % 2 != 0 {
        return Err(ImportError::Config(format!(
            "the head width ({head_dim}) is odd; RoPE rotates pairs of channels"
        )));
    }
    let act_name = cfg.str_or("hidden_act", "silu")?;
    let act = Act::parse(cfg, "hidden_act", act_name)?;
    if let Some(n) = act.gated_note("hidden_act", act_name) {
        cx.notes.note(n);
    }
    let eps = cfg.pos_f64_or("rms_norm_eps", 1e-6)?;
    let position = rope(cx)?;
    let cfg = &cx.cfg;
    let attention_bias = cfg.bool_or("attention_bias", false)?;
    let mlp_bias = cfg.bool_or("mlp_bias", false)?;
    let tied = cfg.bool_or("tie_word_embeddings", false)?;

    let mut m = Model::new(cx.name);
    m.field("vocab", int(vocab));
    m.field("d_model", int(d));
    m.field("context", int(context));
    push_dtype(&mut m, cfg)?;
    m.field("norm", format!("rmsnorm(eps = {})", float(eps)));
    m.field("placement", "pre");
    m.field("position", position);
    if !tied {
        m.push(section("embed", vec![field("tied", boolean(false))]));
    }
    let mut attn: Vec<Member> = vec![field("heads", int(heads))];
    if kv_heads != heads {
        attn.push(field("kv_heads", int(kv_heads)));
    }
    if head_dim.checked_mul(heads) != Some(d) {
        attn.push(field("head_dim", int(head_dim)));
    }
    if attention_bias {
        attn.push(field("bias", boolean(true)));
    }
    let mut mlp = vec![field("hidden", int(hidden)), field("act", act.gated())];
    if mlp_bias {
        mlp.push(field("bias", boolean(true)));
    }
    m.push(section(
        "decoder",
        vec![
            field("layers", int(layers)),
            section("attention", attn),
            section("mlp", mlp),
        ],
    ));
    m.field("objective", objective(cx.arch));
    Ok(vec![m])
}

/// The length Mamba-1 checkpoints were trained at (Gu & Dao 2023, §4.2: the Pile at 2048).
const MAMBA_CONTEXT: u64 = 2048;

/// Mamba-1: one selective-scan mixer per layer, RMSNorm, no positions, tied head.
pub fn mamba(cx: &mut Cx) -> Result<Vec<Model>> {
    let cfg = &cx.cfg;
    let vocab = cfg.size("vocab_size", "the vocabulary size")?;
    let d = cfg.size("hidden_size", "the model width")?;
    let layers = cfg.layers("num_hidden_layers", "the number of layers")?;
    let d_state = cfg.size_or("state_size", 16)?;
    let d_conv = cfg.size_or("conv_kernel", 4)?;
    let expand = match cfg.get("expand") {
        None => 2,
        Some(v) => match v.as_f64() {
            Some(x) if x >= 1.0 && x.fract() == 0.0 && x <= 1e15 => x as u64,
            _ => return Err(cfg.bad("expand", "a positive integer (`.arch` `expand` is one)")),
        },
    };
    let dt_rank = match cfg.get("time_step_rank") {
        None => None,
        Some(Value::String(s)) if s == "auto" => None,
        Some(_) => Some(cfg.size("time_step_rank", "the rank of Δ")?),
    };
    let act = cfg.str_or("hidden_act", "silu")?;
    if !matches!(act, "silu" | "swish") {
        return Err(ImportError::Config(format!(
            "`hidden_act` \"{act}\" is not supported: the `.arch` mamba mixer gates with SiLU"
        )));
    }
    let conv_bias = cfg.bool_or("use_conv_bias", true)?;
    let bias = cfg.bool_or("use_bias", false)?;
    let eps = cfg.pos_f64_or("layer_norm_epsilon", 1e-5)?;
    let tied = cfg.bool_or("tie_word_embeddings", true)?;
    let context = match cfg.opt_u64("max_position_embeddings")? {
        Some(c) if c > 0 => c,
        _ => {
            cx.notes.warn(format!(
                "a Mamba config has no context length; context = {MAMBA_CONTEXT}, the length \
                 Mamba-1 was trained at (it reads any length). Edit it if yours differs."
            ));
            cx.notes.assume("context");
            MAMBA_CONTEXT
        }
    };
    let cfg = &cx.cfg;
    let mut m = Model::new(cx.name);
    m.field("vocab", int(vocab));
    m.field("d_model", int(d));
    m.field("context", int(context));
    push_dtype(&mut m, cfg)?;
    m.field("norm", format!("rmsnorm(eps = {})", float(eps)));
    m.field("placement", "pre");
    m.field("position", "none");
    if !tied {
        m.push(section("embed", vec![field("tied", boolean(false))]));
    }
    let mut mixer = vec![
        field("d_state", int(d_state)),
        field("d_conv", int(d_conv)),
        field("expand", int(expand)),
    ];
    if let Some(r) = dt_rank {
        mixer.push(field("dt_rank", int(r)));
    }
    if !conv_bias {
        mixer.push(field("conv_bias", boolean(false)));
    }
    if bias {
        mixer.push(field("bias", boolean(true)));
    }
    m.push(section(
        "decoder",
        vec![field("layers", int(layers)), section("mamba", mixer)],
    ));
    m.field("objective", objective(cx.arch));
    Ok(vec![m])
}

/// RWKV-4: time mixing and channel mixing, LayerNorm pre-norm, `ln0` on the embeddings.
pub fn rwkv(cx: &mut Cx) -> Result<Vec<Model>> {
    let cfg = &cx.cfg;
    let vocab = cfg.size("vocab_size", "the vocabulary size")?;
    let d = cfg.size("hidden_size", "the model width")?;
    let layers = cfg.layers("num_hidden_layers", "the number of layers")?;
    let context = cfg.size("context_length", "the context length")?;
    let attn = cfg.size_or("attention_hidden_size", d)?;
    if attn != d {
        return Err(ImportError::Config(format!(
            "`attention_hidden_size` ({attn}) differs from `hidden_size` ({d}); `.arch` \
             `time_mix` works at d_model"
        )));
    }
    let hidden = match cfg.opt_u64("intermediate_size")? {
        Some(h) => cfg.size_or("intermediate_size", h)?,
        None => d
            .checked_mul(4)
            .ok_or_else(|| cfg.bad("hidden_size", "smaller"))?,
    };
    let eps = cfg.pos_f64_or("layer_norm_epsilon", 1e-5)?;
    let tied = cfg.bool_or("tie_word_embeddings", false)?;
    let mut m = Model::new(cx.name);
    m.field("vocab", int(vocab));
    m.field("d_model", int(d));
    m.field("context", int(context));
    push_dtype(&mut m, cfg)?;
    m.field("norm", format!("layernorm(eps = {})", float(eps)));
    m.field("placement", "pre");
    m.field("position", "none");
    let mut embed = Vec::new();
    if !tied {
        embed.push(field("tied", boolean(false)));
    }
    embed.push(field("norm", boolean(true)));
    m.push(section("embed", embed));
    m.push(section(
        "decoder",
        vec![
            field("layers", int(layers)),
            section("time_mix", vec![]),
            section("channel_mix", vec![field("hidden", int(hidden))]),
        ],
    ));
    m.field("objective", objective(cx.arch));
    Ok(vec![m])
}

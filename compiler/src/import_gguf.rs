//! A GGUF file's metadata → a `.arch` spec, for llama.cpp's architectures `llama` (LLaMA
//! 1/2/3 and the small models built on it), `gpt2` and `mamba`.
//!
//! The metadata (`{arch}.block_count`, `.embedding_length`, `.attention.head_count`, …) is
//! translated into the Hugging Face config it came from and handed to the config importer
//! ([`crate::import_hf`]), so a GGUF model gets the same spec as its Hugging Face original:
//! RoPE rotating halves (the weight loader undoes llama.cpp's row permutation of q and k),
//! untied output when the file has `output.weight` (LLaMA). Any other architecture is an
//! error that names it.

use crate::import_hf::{import, Imported, Options};
use arch_runtime::gguf::{Gguf, Value};
use serde_json::{json, Map};
use std::path::Path;

/// The architectures [`config`] translates.
pub const ARCHITECTURES: &[&str] = &["llama", "gpt2", "mamba"];

/// Reads `path` (memory-mapped) and imports its model; `name` overrides the model name.
pub fn import_file(path: &Path, name: Option<String>) -> Result<Imported, String> {
    let map = arch_runtime::safetensors_file::map(path).map_err(|e| e.to_string())?;
    let g = Gguf::parse(&map).map_err(|e| format!("{}: {e}", path.display()))?;
    let cfg = config(&g)?;
    let stem = path
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_else(|| "model".into());
    let name = name.or_else(|| {
        g.get("general.name")
            .and_then(Value::as_str)
            .map(str::to_string)
    });
    let opts = Options {
        source: path.display().to_string(),
        name: Some(identifier(name.as_deref().unwrap_or(&stem))),
        generator: None,
    };
    let mut imported = import(&cfg.to_string(), &opts).map_err(|e| e.to_string())?;
    // The importer's header names the config; say where it came from.
    let arch = cfg["model_type"].as_str().unwrap_or("?");
    let mut lines: Vec<String> = imported.text.lines().map(str::to_string).collect();
    if lines.len() > 1 && lines[0].starts_with("// Imported by") {
        lines[0] = format!("// Imported by `archc import-gguf` from {}", path.display());
        lines[1] =
            format!("// (general.architecture \"{arch}\", read as its Hugging Face config).");
    }
    imported.text = lines.join("\n") + "\n";
    Ok(imported)
}

/// A model name the spec language accepts: letters, digits and `_`, not starting with a digit.
fn identifier(s: &str) -> String {
    let mut out: String = s
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_lowercase()
            } else {
                '_'
            }
        })
        .collect();
    if out.is_empty() || out.starts_with(|c: char| c.is_ascii_digit()) {
        out.insert_str(0, "m_");
    }
    out
}

/// The Hugging Face config.json a GGUF file's metadata describes.
pub fn config(g: &Gguf) -> Result<serde_json::Value, String> {
    let arch = g
        .get("general.architecture")
        .and_then(Value::as_str)
        .ok_or("the file has no `general.architecture`")?;
    if !ARCHITECTURES.contains(&arch) {
        return Err(format!(
            "GGUF architecture `{arch}` is not supported (archc imports {})",
            ARCHITECTURES.join(", ")
        ));
    }
    let key = |k: &str| format!("{arch}.{k}");
    let int = |k: &str| -> Result<u64, String> {
        g.get(&key(k))
            .and_then(Value::as_u64)
            .ok_or_else(|| format!("the file has no integer `{}`", key(k)))
    };
    // An f32 value as the shortest decimal that rounds to it (1e-5, not 9.99999974e-6).
    let float = |k: &str| match g.get(&key(k)) {
        Some(Value::F32(x)) => x.to_string().parse::<f64>().ok(),
        Some(v) => v.as_f64(),
        None => None,
    };
    let vocab = match g.get(&key("vocab_size")).and_then(Value::as_u64) {
        Some(v) => v,
        None => match g.get("tokenizer.ggml.tokens").and_then(Value::as_array) {
            Some(t) => t.len() as u64,
            None => g
                .tensor("token_embd.weight")
                .map(|t| t.shape()[0] as u64)
                .ok_or(
                    "the file gives no vocabulary size (no `vocab_size`, tokens or token_embd)",
                )?,
        },
    };
    let mut c = Map::new();
    c.insert("model_type".into(), json!(arch));
    c.insert("vocab_size".into(), json!(vocab));
    match arch {
        "llama" => {
            if g.tensor("rope_freqs.weight").is_some() {
                return Err(
                    "the file scales RoPE frequencies per dimension (`rope_freqs.weight`, Llama 3.1's rope scaling), which archc's specs cannot express yet".into(),
                );
            }
            let d = int("embedding_length")?;
            let heads = int("attention.head_count")?;
            c.insert("architectures".into(), json!(["LlamaForCausalLM"]));
            c.insert("hidden_size".into(), json!(d));
            c.insert(
                "intermediate_size".into(),
                json!(int("feed_forward_length")?),
            );
            c.insert("num_hidden_layers".into(), json!(int("block_count")?));
            c.insert("num_attention_heads".into(), json!(heads));
            let kv = g
                .get(&key("attention.head_count_kv"))
                .and_then(Value::as_u64)
                .unwrap_or(heads);
            c.insert("num_key_value_heads".into(), json!(kv));
            c.insert(
                "max_position_embeddings".into(),
                json!(int("context_length")?),
            );
            let eps = float("attention.layer_norm_rms_epsilon").unwrap_or(1e-5);
            c.insert("rms_norm_eps".into(), json!(eps));
            c.insert(
                "rope_theta".into(),
                json!(float("rope.freq_base").unwrap_or(10000.0)),
            );
            if let Some(hd) = g.get(&key("rope.dimension_count")).and_then(Value::as_u64) {
                if heads > 0 && hd != d / heads {
                    c.insert("head_dim".into(), json!(hd));
                }
            }
            c.insert(
                "tie_word_embeddings".into(),
                json!(g.tensor("output.weight").is_none()),
            );
            c.insert("hidden_act".into(), json!("silu"));
        }
        "gpt2" => {
            let d = int("embedding_length")?;
            c.insert("architectures".into(), json!(["GPT2LMHeadModel"]));
            c.insert("n_embd".into(), json!(d));
            c.insert("n_layer".into(), json!(int("block_count")?));
            c.insert("n_head".into(), json!(int("attention.head_count")?));
            let ctx = match g.tensor("position_embd.weight") {
                Some(t) => t.shape()[0] as u64,
                None => int("context_length")?,
            };
            c.insert("n_positions".into(), json!(ctx));
            c.insert("n_ctx".into(), json!(ctx));
            if let Ok(ff) = int("feed_forward_length") {
                c.insert("n_inner".into(), json!(ff));
            }
            let eps = float("attention.layer_norm_epsilon").unwrap_or(1e-5);
            c.insert("layer_norm_epsilon".into(), json!(eps));
            c.insert("activation_function".into(), json!("gelu_new"));
        }
        _ => {
            // mamba
            let d = int("embedding_length")?;
            c.insert("architectures".into(), json!(["MambaForCausalLM"]));
            c.insert("hidden_size".into(), json!(d));
            c.insert("num_hidden_layers".into(), json!(int("block_count")?));
            c.insert("state_size".into(), json!(int("ssm.state_size")?));
            c.insert("intermediate_size".into(), json!(int("ssm.inner_size")?));
            c.insert("conv_kernel".into(), json!(int("ssm.conv_kernel")?));
            c.insert("time_step_rank".into(), json!(int("ssm.time_step_rank")?));
            let eps = float("attention.layer_norm_rms_epsilon").unwrap_or(1e-5);
            c.insert("layer_norm_epsilon".into(), json!(eps));
            c.insert("use_bias".into(), json!(false));
            c.insert("use_conv_bias".into(), json!(true));
            c.insert(
                "tie_word_embeddings".into(),
                json!(g.tensor("output.weight").is_none()),
            );
        }
    }
    Ok(serde_json::Value::Object(c))
}

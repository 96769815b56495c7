//! A GGUF file's metadata → a `.arch` spec, for llama.cpp's architectures `llama` (LLaMA
//! 1/2/3 and the small models built on it), `gpt2` and `mamba`.
//!
//! The metadata (`{arch}.block_count`, `.embedding_length`, `.attention.head_count`, …) is
//! translated into the Hugging Face config it came from and handed to the config importer
//! ([`crate::import_hf`]), so a GGUF model gets the same spec as its Hugging Face original:
//! RoPE rotating halves (the weight loader undoes llama.cpp's row permutation of q and k),
//! untied output when the file has `output.weight` (LLaMA). Any other architecture is an
//! error that names it.

use crate::expand::position::rope_divisors;
use crate::import_hf::{import, Imported, Options};
use arch_dsl::spec::{ArchSpec, Position, RopeScaling};
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
            let d = int("embedding_length")?;
            let heads = int("attention.head_count")?;
            let theta = float("rope.freq_base").unwrap_or(10000.0);
            let rot = match g.get(&key("rope.dimension_count")).and_then(Value::as_u64) {
                Some(r) => r,
                None if heads > 0 => d / heads,
                None => 0,
            };
            if let Some(scaling) = rope_scaling(g, theta, rot)? {
                c.insert("rope_scaling".into(), scaling.hf_config());
            }
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
            c.insert("rope_theta".into(), json!(theta));
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

/// Meta's Llama 3.1 values, tried first when recovering a file's scaling.
const LLAMA3_DEFAULTS: (f64, f64, f64) = (1.0, 4.0, 8192.0);

/// How closely the divisors a recovered scaling computes must equal the file's (they were
/// computed in f32 by llama.cpp's converter).
const DIVISOR_TOLERANCE: f64 = 1e-4;

fn divisors_match(want: &[f64], got: &[f64]) -> bool {
    want.len() == got.len()
        && want
            .iter()
            .zip(got)
            .all(|(w, g)| (w - g).abs() <= DIVISOR_TOLERANCE * w.abs().max(1.0))
}

/// The file's RoPE scaling: `{arch}.rope.scaling.type` "linear" with its factor, or Llama
/// 3.1's per-pair divisors in `rope_freqs.weight` (what llama.cpp's converter writes for
/// `rope_type` "llama3"). The divisors do not name their parameters; they are recovered —
/// factor = the largest divisor; low/high/original context Meta's 1/4/8192 if those
/// reproduce every divisor, else fitted from the interpolated pairs (s is linear in the
/// frequency) with original context 8192 — and accepted only if they reproduce every
/// stored divisor.
pub fn rope_scaling(g: &Gguf, theta: f64, rot: u64) -> Result<Option<RopeScaling>, String> {
    let arch = g
        .get("general.architecture")
        .and_then(Value::as_str)
        .unwrap_or("llama");
    let kind = g
        .get(&format!("{arch}.rope.scaling.type"))
        .and_then(Value::as_str)
        .unwrap_or("none");
    let factor_key = format!("{arch}.rope.scaling.factor");
    let linear = match kind {
        "none" => None,
        "linear" => {
            let factor = g
                .get(&factor_key)
                .and_then(Value::as_f64)
                .filter(|f| *f > 0.0 && f.is_finite())
                .ok_or_else(|| format!("`{arch}.rope.scaling.type` is linear but `{factor_key}` is not a positive number"))?;
            Some(RopeScaling::Linear { factor })
        }
        other => {
            return Err(format!(
                "the file scales RoPE as `{other}` (`{arch}.rope.scaling.type`); archc's specs express `linear` and Llama 3.1's scaling (`rope_freqs.weight`) only"
            ))
        }
    };
    let Some(t) = g.tensor("rope_freqs.weight") else {
        return Ok(linear);
    };
    if linear.is_some() {
        return Err("the file has both a linear RoPE scaling and `rope_freqs.weight`".into());
    }
    if t.numel() as u64 != rot / 2 {
        return Err(format!(
            "`rope_freqs.weight` has {} values; the model rotates {rot} channels, so {} were expected",
            t.numel(),
            rot / 2
        ));
    }
    let stored: Vec<f64> = g.to_f32(t).into_iter().map(f64::from).collect();
    if stored.iter().any(|d| !d.is_finite() || *d <= 0.0) {
        return Err("`rope_freqs.weight` holds a divisor that is not a positive number".into());
    }
    if stored.iter().all(|d| (d - 1.0).abs() <= DIVISOR_TOLERANCE) {
        return Ok(None);
    }
    recover_llama3(&stored, theta, rot).map(Some).ok_or_else(|| {
        format!(
            "`rope_freqs.weight` ({}) is not Llama 3.1's RoPE scaling for any parameters archc could recover; archc's specs express `linear` and `llama3` scalings only",
            stored
                .iter()
                .map(|d| format!("{d:.4}"))
                .collect::<Vec<_>>()
                .join(", ")
        )
    })
}

/// Llama 3's parameters that reproduce the frequency divisors `stored` (see
/// [`rope_scaling`]), or `None`.
fn recover_llama3(stored: &[f64], theta: f64, rot: u64) -> Option<RopeScaling> {
    let factor = stored.iter().cloned().fold(f64::NAN, f64::max);
    let llama3 = |low: f64, high: f64, original: f64| RopeScaling::Llama3 {
        factor,
        low_freq_factor: low,
        high_freq_factor: high,
        original_context: original as u64,
    };
    let (low, high, original) = LLAMA3_DEFAULTS;
    let mut candidates = vec![llama3(low, high, original)];
    // Interpolated pairs: s = (1/d − 1/factor) / (1 − 1/factor) = a·f + b.
    let smooth: Vec<(f64, f64)> = stored
        .iter()
        .enumerate()
        .filter(|(_, d)| **d > 1.0 + 1e-3 && **d < factor * (1.0 - 1e-3))
        .map(|(i, d)| {
            let f = theta.powf(-2.0 * i as f64 / rot as f64);
            (f, (1.0 / d - 1.0 / factor) / (1.0 - 1.0 / factor))
        })
        .collect();
    // Meta's low/high with the original context that puts an interpolated pair where it
    // is: s = (original·f / 2π − low) / (high − low).
    if let Some(&(f, s)) = smooth.first() {
        let original = 2.0 * std::f64::consts::PI * (s * (high - low) + low) / f;
        if original.is_finite() && original >= 1.0 {
            candidates.push(llama3(low, high, original.round()));
        }
    }
    // No interpolated pair: any original context between 4× the longest kept wavelength
    // and the shortest divided one says the same; the power of two nearest 8192.
    if smooth.is_empty() {
        let wavelength =
            |i: usize| 2.0 * std::f64::consts::PI * theta.powf(2.0 * i as f64 / rot as f64);
        let kept = (0..stored.len())
            .filter(|&i| stored[i] < 1.5)
            .map(wavelength)
            .fold(0.0, f64::max);
        let divided = (0..stored.len())
            .filter(|&i| stored[i] >= 1.5)
            .map(wavelength)
            .fold(f64::INFINITY, f64::min);
        let mut p2: Vec<f64> = (0..40)
            .map(|e| 2f64.powi(e))
            .filter(|p| p * low / high > kept && p / low < divided)
            .collect();
        p2.sort_by(|a, b| (a.log2() - 13.0).abs().total_cmp(&(b.log2() - 13.0).abs()));
        if let Some(&p) = p2.first() {
            candidates.push(llama3(low, high, p));
        }
    }
    if let (Some(first), Some(last)) = (smooth.first(), smooth.last()) {
        if smooth.len() >= 2 && first.0 != last.0 {
            let a = (last.1 - first.1) / (last.0 - first.0);
            let b = first.1 - a * first.0;
            let width = original / (2.0 * std::f64::consts::PI * a);
            let low = -b * width;
            if width > 0.0 && low > 0.0 {
                // Rounded to what a config would say, then checked like the defaults.
                let round = |x: f64| (x * 1e4).round() / 1e4;
                candidates.push(llama3(round(low), round(low + width), original));
            }
        }
    }
    candidates
        .into_iter()
        .find(|c| divisors_match(&rope_divisors(c, theta, rot), stored))
}

/// Hugging Face's `rope_scaling` object for a scaling.
trait HfConfig {
    fn hf_config(&self) -> serde_json::Value;
}

impl HfConfig for RopeScaling {
    fn hf_config(&self) -> serde_json::Value {
        match *self {
            RopeScaling::None => json!({"rope_type": "default"}),
            RopeScaling::Linear { factor } => json!({"rope_type": "linear", "factor": factor}),
            RopeScaling::Llama3 {
                factor,
                low_freq_factor,
                high_freq_factor,
                original_context,
            } => json!({
                "rope_type": "llama3",
                "factor": factor,
                "low_freq_factor": low_freq_factor,
                "high_freq_factor": high_freq_factor,
                "original_max_position_embeddings": original_context,
            }),
        }
    }
}

/// Checks that the RoPE scaling of the GGUF file at `path` (if it is one) is the one
/// `spec` computes: a file whose `rope_freqs.weight` the spec ignores, or the reverse,
/// would rotate queries and keys differently from the model that was converted.
pub fn check_rope(spec: &ArchSpec, path: &Path) -> Result<(), String> {
    let Ok(map) = arch_runtime::safetensors_file::map(path) else {
        return Ok(());
    };
    if !map.starts_with(b"GGUF") {
        return Ok(());
    }
    let Ok(g) = Gguf::parse(&map) else {
        return Ok(()); // the loader reports a broken file
    };
    let Position::Rope(rope) = spec.position else {
        return Ok(());
    };
    let rot = rope_width(spec, rope);
    let file = rope_scaling(&g, rope.theta, rot)?.unwrap_or(RopeScaling::None);
    let (want, got) = (
        rope_divisors(&rope.scaling, rope.theta, rot),
        rope_divisors(&file, rope.theta, rot),
    );
    if divisors_match(&want, &got) {
        return Ok(());
    }
    Err(format!(
        "{}: the file's RoPE scaling ({}) is not the spec's ({}); import the file's spec with `archc import-gguf` or fix `position`",
        path.display(),
        describe(&file),
        describe(&rope.scaling)
    ))
}

/// The rotated width of the spec's first attention's heads (LLaMA-family GGUF files have
/// one head width).
pub(crate) fn rope_width(spec: &ArchSpec, rope: arch_dsl::spec::Rope) -> u64 {
    let head_dim = spec
        .decoder
        .iter()
        .chain(spec.encoder.iter())
        .flat_map(|s| s.layers.iter())
        .flat_map(|l| l.sublayers.iter())
        .find_map(|s| match s {
            arch_dsl::spec::Sublayer::Attention(a) => Some(a.head_dim),
            _ => None,
        })
        .unwrap_or(spec.d_model);
    crate::expand::position::rotated(head_dim, rope)
}

fn describe(s: &RopeScaling) -> String {
    match *s {
        RopeScaling::None => "none".into(),
        RopeScaling::Linear { factor } => format!("linear, factor {factor}"),
        RopeScaling::Llama3 {
            factor,
            low_freq_factor,
            high_freq_factor,
            original_context,
        } => format!(
            "llama3, factor {factor}, low_freq_factor {low_freq_factor}, high_freq_factor {high_freq_factor}, original context {original_context}"
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn llama3(factor: f64, low: f64, high: f64, original: u64) -> RopeScaling {
        RopeScaling::Llama3 {
            factor,
            low_freq_factor: low,
            high_freq_factor: high,
            original_context: original,
        }
    }

    /// Divisors as llama.cpp's converter stores them (f32), recovered as parameters that
    /// compute the same divisors.
    #[test]
    fn llama3_parameters_are_recovered_from_divisors() {
        for (theta, rot, scaling) in [
            (500000.0, 128, llama3(8.0, 1.0, 4.0, 8192)), // Llama 3.1 8B
            (500000.0, 64, llama3(32.0, 1.0, 4.0, 8192)), // Llama 3.2 1B
            (10000.0, 16, llama3(8.0, 1.0, 4.0, 64)),     // two interpolated pairs
            (10000.0, 16, llama3(8.0, 1.0, 4.0, 32)),     // one
            (10000.0, 16, llama3(4.0, 2.0, 8.0, 8192)),   // other low/high
        ] {
            let stored: Vec<f64> = rope_divisors(&scaling, theta, rot)
                .into_iter()
                .map(|d| d as f32 as f64)
                .collect();
            let got = recover_llama3(&stored, theta, rot)
                .unwrap_or_else(|| panic!("{scaling:?} not recovered from {stored:?}"));
            assert!(
                divisors_match(&rope_divisors(&got, theta, rot), &stored),
                "{scaling:?} → {got:?}"
            );
        }
        // Meta's values come back as they are.
        let meta = llama3(8.0, 1.0, 4.0, 8192);
        let stored = rope_divisors(&meta, 500000.0, 128);
        assert_eq!(recover_llama3(&stored, 500000.0, 128), Some(meta));
        // Divisors no llama3 scaling makes: factor 8 on a pair that should be kept.
        let mut bad = stored.clone();
        bad[0] = 8.0;
        assert_eq!(recover_llama3(&bad, 500000.0, 128), None);
    }
}

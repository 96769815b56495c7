//! `archc quantize IN.safetensors|DIR|IN.gguf --type T -o OUT.gguf [--spec FILE[:MODEL]]`:
//! a GGUF file of a LLaMA-, GPT-2- or Mamba-shaped model with its weight matrices in type
//! T, written as llama.cpp's converter and `llama-quantize` write them.
//!
//! - From GGUF: the metadata is kept (`general.file_type` updated), every weight matrix is
//!   dequantized and quantized again; other tensors are copied as they are.
//! - From safetensors (a file or a Hugging Face model directory): the spec comes from
//!   `--spec` or the `config.json` beside the weights; the weights are read under any naming
//!   archc knows and written under llama.cpp's (q/k rows permuted for its RoPE, GPT-2's
//!   fused `attn_qkv`, Mamba's `A = −exp(A_log)`); the metadata comes from the spec, the
//!   tokenizer from a byte-level BPE `tokenizer.json` (`--tokenizer`, else the one beside
//!   the weights when there is one).
//!
//! Quantized: 2-D `.weight` tensors but norms, position tables and Mamba's convolution (as
//! llama.cpp keeps them in F32); a matrix whose rows are not whole blocks of T falls back to
//! Q8_0, else F16.

use super::load_model;
use arch_dsl::spec::{ArchSpec, Norm, Position, RopeScaling, Sublayer};
use arch_runtime::gguf::{self, GgmlType, Gguf, Value, WriteTensor};
use std::path::Path;
use std::process::ExitCode;

pub fn run(
    input: &Path,
    ty: &str,
    out: &Path,
    spec: Option<&str>,
    tokenizer: Option<&Path>,
) -> ExitCode {
    match quantize(input, ty, out, spec, tokenizer) {
        Ok(n) => {
            eprintln!("archc: wrote {} ({n} tensors)", out.display());
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

/// The tensor type and llama.cpp's `general.file_type` of a `--type`.
fn parse_type(s: &str) -> Result<(GgmlType, u32), String> {
    Ok(match s.to_ascii_lowercase().as_str() {
        "f32" => (GgmlType::F32, 0),
        "f16" => (GgmlType::F16, 1),
        "bf16" => (GgmlType::BF16, 32),
        "q8_0" => (GgmlType::Q8_0, 7),
        "q4_0" => (GgmlType::Q4_0, 2),
        "q4_1" => (GgmlType::Q4_1, 3),
        "q5_0" => (GgmlType::Q5_0, 8),
        "q5_1" => (GgmlType::Q5_1, 9),
        "q4_k" => (GgmlType::Q4_K, 14),
        "q5_k" => (GgmlType::Q5_K, 16),
        "q6_k" => (GgmlType::Q6_K, 18),
        other => {
            return Err(format!(
            "unknown --type `{other}` (f32, f16, bf16, q8_0, q4_0, q4_1, q5_0, q5_1, q4_k, q5_k, q6_k)"
        ))
        }
    })
}

/// Whether llama.cpp quantizes a tensor of this name and rank.
fn quantizable(name: &str, dims: usize) -> bool {
    dims == 2
        && name.ends_with(".weight")
        && !name.ends_with("_norm.weight")
        && !name.starts_with("position_embd")
        && !name.contains("ssm_conv1d")
        && !name.contains("token_types")
}

/// `values` of tensor `name` (`ne` fastest first) in `ty`, or the fallback when its rows
/// are not whole blocks.
fn encode(name: &str, ne: Vec<u64>, ty: GgmlType, values: &[f32]) -> Result<WriteTensor, String> {
    let ty = if !quantizable(name, ne.len()) {
        GgmlType::F32
    } else if ne[0].is_multiple_of(ty.block().0 as u64) {
        ty
    } else if ne[0].is_multiple_of(32) {
        GgmlType::Q8_0
    } else {
        GgmlType::F16
    };
    let data = gguf::quantize(ty, values)
        .ok_or_else(|| format!("cannot write `{name}` as {}", ty.name()))?;
    Ok(WriteTensor {
        name: name.to_string(),
        ne,
        ty,
        data,
    })
}

fn set(meta: &mut Vec<(String, Value)>, key: &str, v: Value) {
    match meta.iter_mut().find(|(k, _)| k == key) {
        Some(slot) => slot.1 = v,
        None => meta.push((key.to_string(), v)),
    }
}

fn quantize(
    input: &Path,
    ty: &str,
    out: &Path,
    spec: Option<&str>,
    tokenizer: Option<&Path>,
) -> Result<usize, String> {
    let (ty, file_type) = parse_type(ty)?;
    let map = arch_runtime::safetensors_file::map(input).ok();
    let (meta, tensors) = match &map {
        Some(m) if gguf::is_gguf(m) => {
            let g = Gguf::parse(m).map_err(|e| format!("{}: {e}", input.display()))?;
            from_gguf(&g, ty)?
        }
        _ => from_safetensors(input, ty, spec, tokenizer)?,
    };
    let mut meta = meta;
    set(&mut meta, "general.file_type", Value::U32(file_type));
    let bytes = gguf::write(&meta, &tensors);
    // Written beside the target and renamed: a failed run leaves no half file.
    let tmp = out.with_extension("gguf.tmp");
    std::fs::write(&tmp, &bytes)
        .and_then(|_| std::fs::rename(&tmp, out))
        .map_err(|e| format!("cannot write {}: {e}", out.display()))?;
    Ok(tensors.len())
}

/// A GGUF file's contents: metadata and tensors.
type Contents = (Vec<(String, Value)>, Vec<WriteTensor>);

fn from_gguf(g: &Gguf, ty: GgmlType) -> Result<Contents, String> {
    let mut tensors = Vec::with_capacity(g.tensors.len());
    for t in &g.tensors {
        if quantizable(&t.name, t.ne.len()) {
            tensors.push(encode(&t.name, t.ne.clone(), ty, &g.to_f32(t))?);
        } else {
            tensors.push(WriteTensor {
                name: t.name.clone(),
                ne: t.ne.clone(),
                ty: t.ty,
                data: g.bytes(t).to_vec(),
            });
        }
    }
    Ok((g.metadata.clone(), tensors))
}

/// llama.cpp's architecture for a spec: `llama`, `gpt2` or `mamba`.
pub(super) fn architecture(spec: &ArchSpec) -> Result<&'static str, String> {
    let dec = spec
        .decoder
        .as_ref()
        .filter(|_| spec.encoder.is_none())
        .ok_or("quantize writes decoder-only models (llama.cpp's llama, gpt2 and mamba)")?;
    let subs: Vec<&Sublayer> = dec.layers.iter().flat_map(|l| &l.sublayers).collect();
    if subs.iter().all(|s| matches!(s, Sublayer::Mamba(_))) {
        return Ok("mamba");
    }
    let attn_mlp = subs
        .iter()
        .all(|s| matches!(s, Sublayer::Attention(_) | Sublayer::Mlp(_)));
    match (&spec.position, spec.norm, attn_mlp) {
        (Position::Rope(_), Norm::RmsNorm { .. }, true) => Ok("llama"),
        (Position::Learned { offset: 0 }, Norm::LayerNorm { .. }, true) => Ok("gpt2"),
        _ => Err(format!(
            "model `{}` is not shaped like llama.cpp's llama, gpt2 or mamba architectures",
            spec.name
        )),
    }
}

/// The GGUF metadata of a spec (as convert_hf_to_gguf.py writes it).
fn metadata(spec: &ArchSpec, arch: &str) -> Vec<(String, Value)> {
    let mut m: Vec<(String, Value)> = Vec::new();
    let mut kv = |k: &str, v: Value| {
        let key = if k.starts_with("general.") {
            k.to_string()
        } else {
            format!("{arch}.{k}")
        };
        m.push((key, v));
    };
    kv("general.architecture", Value::Str(arch.into()));
    kv("general.name", Value::Str(spec.name.clone()));
    let dec = spec
        .decoder
        .as_ref()
        .expect("architecture() checked the decoder");
    let layers = dec.layers.len() as u64;
    kv("context_length", Value::U32(spec.context as u32));
    kv("embedding_length", Value::U32(spec.d_model as u32));
    kv("block_count", Value::U32(layers as u32));
    kv("vocab_size", Value::U32(spec.vocab as u32));
    let eps = match spec.norm {
        Norm::LayerNorm { eps, .. } | Norm::RmsNorm { eps } => eps as f32,
    };
    for s in dec
        .layers
        .first()
        .map(|l| l.sublayers.as_slice())
        .unwrap_or(&[])
    {
        match s {
            Sublayer::Attention(a) => {
                kv("attention.head_count", Value::U32(a.heads as u32));
                if arch == "llama" {
                    kv("attention.head_count_kv", Value::U32(a.kv_heads as u32));
                    if let Position::Rope(r) = spec.position {
                        kv("rope.freq_base", Value::F32(r.theta as f32));
                        let rot = (a.head_dim as f64 * r.fraction) as u32;
                        kv("rope.dimension_count", Value::U32(rot));
                        if let RopeScaling::Linear { factor } = r.scaling {
                            kv("rope.scaling.type", Value::Str("linear".into()));
                            kv("rope.scaling.factor", Value::F32(factor as f32));
                        }
                    }
                }
            }
            Sublayer::Mlp(p) => kv("feed_forward_length", Value::U32(p.hidden as u32)),
            Sublayer::Mamba(x) => {
                kv("ssm.conv_kernel", Value::U32(x.d_conv as u32));
                kv(
                    "ssm.inner_size",
                    Value::U32((x.expand * spec.d_model) as u32),
                );
                kv("ssm.state_size", Value::U32(x.d_state as u32));
                kv("ssm.time_step_rank", Value::U32(x.dt_rank as u32));
                kv("feed_forward_length", Value::U32(0));
                kv("attention.head_count", Value::U32(0));
            }
            _ => {}
        }
    }
    if arch == "gpt2" {
        kv("attention.layer_norm_epsilon", Value::F32(eps));
    } else {
        kv("attention.layer_norm_rms_epsilon", Value::F32(eps));
    }
    m
}

/// llama.cpp's `gpt2` tokenizer metadata from a byte-level BPE `tokenizer.json`, its
/// token list padded with `[PAD{id}]` to the model's `vocab` (llama.cpp wants one token per
/// embedding row).
fn tokenizer_metadata(path: &Path, vocab_size: usize) -> Result<Vec<(String, Value)>, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let j: serde_json::Value =
        serde_json::from_str(&text).map_err(|e| format!("{}: {e}", path.display()))?;
    let model = &j["model"];
    let byte_level = j["pre_tokenizer"]["type"] == "ByteLevel"
        || j["pre_tokenizer"]["pretokenizers"]
            .as_array()
            .is_some_and(|p| p.iter().any(|x| x["type"] == "ByteLevel"));
    if model["type"] != "BPE" || !byte_level {
        return Err(format!(
            "{} is not a byte-level BPE tokenizer (the only kind quantize converts)",
            path.display()
        ));
    }
    let vocab = model["vocab"]
        .as_object()
        .ok_or("the tokenizer has no vocab")?;
    let mut tokens: Vec<Option<String>> = Vec::new();
    let mut special = std::collections::HashSet::new();
    let put = |id: usize, t: &str, tokens: &mut Vec<Option<String>>| {
        if tokens.len() <= id {
            tokens.resize(id + 1, None);
        }
        tokens[id] = Some(t.to_string());
    };
    for (t, id) in vocab {
        put(
            id.as_u64().ok_or("a vocab id is not a number")? as usize,
            t,
            &mut tokens,
        );
    }
    for a in j["added_tokens"].as_array().into_iter().flatten() {
        if let (Some(id), Some(t)) = (a["id"].as_u64(), a["content"].as_str()) {
            put(id as usize, t, &mut tokens);
            if a["special"] == true {
                special.insert(id as usize);
            }
        }
    }
    if tokens.len() < vocab_size {
        tokens.resize(vocab_size, None);
    }
    let merges: Vec<Value> = model["merges"]
        .as_array()
        .ok_or("the tokenizer has no merges")?
        .iter()
        .map(|m| match m {
            serde_json::Value::String(s) => Value::Str(s.clone()),
            serde_json::Value::Array(p) => Value::Str(
                p.iter()
                    .filter_map(|x| x.as_str())
                    .collect::<Vec<_>>()
                    .join(" "),
            ),
            _ => Value::Str(String::new()),
        })
        .collect();
    // Control for special tokens, unused for the padding, normal for the rest.
    let types: Vec<Value> = tokens
        .iter()
        .enumerate()
        .map(|(i, t)| {
            Value::I32(match t {
                None => 5,
                Some(_) if special.contains(&i) => 3,
                Some(_) => 1,
            })
        })
        .collect();
    let mut m = vec![
        ("tokenizer.ggml.model".into(), Value::Str("gpt2".into())),
        ("tokenizer.ggml.pre".into(), Value::Str("gpt-2".into())),
        (
            "tokenizer.ggml.tokens".into(),
            Value::Array(
                tokens
                    .into_iter()
                    .enumerate()
                    .map(|(i, t)| Value::Str(t.unwrap_or_else(|| format!("[PAD{i}]"))))
                    .collect(),
            ),
        ),
        ("tokenizer.ggml.token_type".into(), Value::Array(types)),
        ("tokenizer.ggml.merges".into(), Value::Array(merges)),
    ];
    if let Some(&eos) = special.iter().min() {
        m.push(("tokenizer.ggml.eos_token_id".into(), Value::U32(eos as u32)));
        m.push(("tokenizer.ggml.bos_token_id".into(), Value::U32(eos as u32)));
    }
    m.push(("tokenizer.ggml.add_bos_token".into(), Value::Bool(false)));
    Ok(m)
}

fn from_safetensors(
    input: &Path,
    ty: GgmlType,
    spec_arg: Option<&str>,
    tokenizer: Option<&Path>,
) -> Result<Contents, String> {
    let dir = if input.is_dir() {
        input.to_path_buf()
    } else {
        input.parent().map(Path::to_path_buf).unwrap_or_default()
    };
    let spec = match spec_arg {
        Some(s) => load_model(s).ok_or("the spec has errors")?,
        None => {
            let cfg = dir.join("config.json");
            let text = std::fs::read_to_string(&cfg).map_err(|_| {
                format!(
                    "{} is not a GGUF file, and no config.json lies beside it: give --spec FILE.arch",
                    input.display()
                )
            })?;
            let opts = crate::import_hf::Options {
                source: cfg.display().to_string(),
                name: None,
                generator: None,
            };
            crate::import_hf::import(&text, &opts)
                .map_err(|e| e.to_string())?
                .spec
        }
    };
    let arch = architecture(&spec)?;
    let weights = crate::weights::load(&spec, input).map_err(|e| e.to_string())?;
    let naming = crate::weights::manifest_namings(&spec)
        .into_iter()
        .find(|n| n.label == "GGUF")
        .ok_or("the model has no GGUF naming")?;
    let params: Vec<(&str, &[f32])> = weights
        .tensors()
        .iter()
        .map(|(n, t)| (n.as_str(), t.data.as_slice()))
        .collect();
    // GPT-2 keeps q, k and v fused; LLaMA writes them apart.
    let fused = arch == "gpt2";
    let known = |n: &str| n.contains("attn_qkv") == fused;
    let mut exported = arch_runtime::train::export_params(&naming, &params, &known);
    if arch == "gpt2" && !exported.iter().any(|(n, _, _)| n == "output.weight") {
        // convert_hf_to_gguf.py writes GPT-2's tied output as a copy.
        if let Some(e) = exported
            .iter()
            .find(|(n, _, _)| n == "token_embd.weight")
            .cloned()
        {
            exported.push(("output.weight".into(), e.1, e.2));
        }
    }
    let mut tensors = Vec::with_capacity(exported.len());
    for (name, shape, data) in exported {
        let ne: Vec<u64> = shape.iter().rev().map(|&d| d as u64).collect();
        tensors.push(encode(&name, ne, ty, &data)?);
    }
    if let (Position::Rope(r), "llama") = (spec.position, arch) {
        if let RopeScaling::Llama3 { .. } = r.scaling {
            // convert_hf_to_gguf.py's `rope_freqs`: each pair's frequency divisor.
            let rot = crate::import_gguf::rope_width(&spec, r);
            let divisors: Vec<f32> =
                crate::expand::position::rope_divisors(&r.scaling, r.theta, rot)
                    .into_iter()
                    .map(|d| d as f32)
                    .collect();
            tensors.push(encode(
                "rope_freqs.weight",
                vec![divisors.len() as u64],
                ty,
                &divisors,
            )?);
        }
    }
    let mut meta = metadata(&spec, arch);
    let tok = tokenizer.map_or_else(|| dir.join("tokenizer.json"), Path::to_path_buf);
    if tokenizer.is_some() && !tok.is_file() {
        return Err(format!("cannot read the tokenizer {}", tok.display()));
    }
    if tok.is_file() {
        match tokenizer_metadata(&tok, spec.vocab as usize) {
            Ok(t) => meta.extend(t),
            Err(e) => eprintln!("archc: warning: {e}; the GGUF file has no tokenizer"),
        }
    } else {
        eprintln!(
            "archc: warning: no tokenizer.json beside the weights: the GGUF file has no tokenizer (llama.cpp needs one to load it)"
        );
    }
    Ok((meta, tensors))
}

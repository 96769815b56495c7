//! Model weights: safetensors checkpoints, memory-mapped and read into f32 host tensors under
//! the canonical parameter names of [`crate::params`].
//!
//! [`load`] reads a `.safetensors` file (or a directory holding `model.safetensors`, or a
//! sharded checkpoint's `model.safetensors.index.json`) and works out how its tensors are
//! named: canonically, or as one of the Hugging Face `transformers` families below. Every
//! scheme is tried against the spec's parameter table and the one that finds the most
//! parameters wins, so a checkpoint with one tensor missing still reports that tensor. f32,
//! f16, bf16 and f64 are converted to f32; tensors the spec does not need (another head,
//! `position_ids` buffers, a tied copy of the embedding) are ignored and listed by
//! [`Weights::unused`]. A broken file is an error naming the tensor, never a panic.
//!
//! This module says where each parameter lives under each naming (`hf.rs`, turned into
//! the manifest's namings by `namings.rs`); reading, converting and checking the tensors
//! is the runtime's loader ([`arch_runtime::Weights`]), the one loader of the project.
//!
//! # Hugging Face namings
//!
//! `P` is the backbone prefix, optional (the bare `…Model` classes have none); L = layer
//! index. Matrices are `nn.Linear` [out, in] and copied as they are unless said otherwise;
//! values are never rescaled.
//!
//! - **GPT-2** (`GPT2LMHeadModel`, P = `transformer.`): `wte` → `embed.tokens`, `wpe` →
//!   `decoder.positions`, `h.L.ln_1` → `attention.norm`, `h.L.ln_2` → `mlp.norm`, `ln_f` →
//!   `decoder.final_norm`, `lm_head` → `head.lm` (untied only). Weights are `Conv1D`
//!   [in, out] and are transposed; the fused `h.L.attn.c_attn` [d, 3d] is transposed and
//!   split by rows into `q`, `k`, `v` (its bias [3d] likewise); `attn.c_proj` → `o`,
//!   `mlp.c_fc` → `up`, `mlp.c_proj` → `down`.
//! - **GPT-1** (`OpenAIGPTLMHeadModel`, P = `transformer.`): as GPT-2 with `tokens_embed`,
//!   `positions_embed`, and no final norm (post-norm: `ln_1` follows the attention, `ln_2`
//!   the MLP).
//! - **BERT / RoBERTa / ELECTRA** (P = `bert.`, `roberta.` or `electra.`): `embeddings.
//!   word_embeddings` → `embed.tokens`, `token_type_embeddings` → `embed.segments`,
//!   `position_embeddings` → `encoder.positions` (RoBERTa's table, offset rows included,
//!   whole), `embeddings.LayerNorm` → `encoder.embed_norm`, ELECTRA's `embeddings_project` →
//!   `embed.project`; `encoder.layer.L.attention.self.{query,key,value}` → `q`, `k`, `v`,
//!   `attention.output.dense` → `o`, `attention.output.LayerNorm` → `attention.norm`,
//!   `intermediate.dense` → `mlp.up`, `output.dense` → `mlp.down`, `output.LayerNorm` →
//!   `mlp.norm`; `pooler.dense` → `head.pooler`; `cls.seq_relationship` (or `classifier`) →
//!   `head.classifier`; MLM head from BERT's `cls.predictions.{transform.dense,
//!   transform.LayerNorm, bias, decoder}`, RoBERTa's `lm_head.{dense, layer_norm, bias,
//!   decoder}` or ELECTRA generator's `generator_predictions.{dense, LayerNorm}` +
//!   `generator_lm_head` → `head.mlm.{dense, norm, bias, decoder}`; ELECTRA's
//!   `discriminator_predictions.{dense, dense_prediction}` → `head.discriminator.{dense, out}`.
//! - **ALBERT** (P = `albert.`): embeddings as BERT; `encoder.embedding_hidden_mapping_in` →
//!   `embed.project`; the shared layer `encoder.albert_layer_groups.0.albert_layers.0.
//!   {attention.query, attention.key, attention.value, attention.dense, attention.LayerNorm,
//!   ffn, ffn_output, full_layer_layer_norm}` → `encoder.layers.0.{attention.q, k, v, o,
//!   norm, mlp.up, mlp.down, mlp.norm}` (unshared layers: group L); `pooler` → `head.pooler`;
//!   `sop_classifier.classifier` → `head.classifier`; `predictions.{dense, LayerNorm, bias,
//!   decoder}` → `head.mlm.…`.
//! - **T5** (`T5ForConditionalGeneration`): `shared` (or `encoder.embed_tokens`) →
//!   `embed.tokens`; `S.block.L.layer.J` is sublayer J of layer L: `SelfAttention.{q,k,v,o}`,
//!   `EncDecAttention.{q,k,v,o}`, `DenseReluDense.{wi,wo}` → `mlp.{up,down}` (gated v1.1:
//!   `wi_0` → `gate`, `wi_1` → `up`), `layer_norm` → that sublayer's norm;
//!   `S.block.0.layer.0.SelfAttention.relative_attention_bias` → `S.relative_bias`;
//!   `S.final_layer_norm` → `S.final_norm`; `lm_head` → `head.lm` (untied only).
//! - **BART** (`BartForConditionalGeneration`, P = `model.`): `shared` → `embed.tokens`;
//!   `S.embed_positions` → `S.positions`, taken whole (its first 2 rows are the offset);
//!   `S.layernorm_embedding` → `S.embed_norm`; `S.layers.L.self_attn.{q,k,v,out}_proj` →
//!   `attention.{q,k,v,o}`, `self_attn_layer_norm` → `attention.norm`, `encoder_attn.*` and
//!   `encoder_attn_layer_norm` → `cross_attention.*`, `fc1`/`fc2` → `mlp.up`/`mlp.down`,
//!   `final_layer_norm` (per layer!) → `mlp.norm`; mBART's `S.layer_norm` → `S.final_norm`;
//!   `lm_head` → `head.lm.weight` (untied only). The `final_logits_bias` buffer [1, V] is
//!   read as `head.lm.bias` when the spec's head has `bias = true`; otherwise it is ignored
//!   (it is all zeros in the published checkpoints).
//! - **LLaMA** (`LlamaForCausalLM`, P = `model.`): `embed_tokens` → `embed.tokens`;
//!   `layers.L.self_attn.{q,k,v,o}_proj` → `attention.{q,k,v,o}`, `input_layernorm` →
//!   `attention.norm`, `post_attention_layernorm` → `mlp.norm`, `mlp.{gate,up,down}_proj` →
//!   `mlp.{gate,up,down}`; `norm` → `decoder.final_norm`; `lm_head` → `head.lm`. HF's q/k
//!   rows are already in the half-rotation order of `rope(style = half)`.
//! - **Mamba** (`MambaForCausalLM`, P = `backbone.`): `embeddings` (or `embedding`) →
//!   `embed.tokens`; `layers.L.norm` → `mamba.norm`; `layers.L.mixer.{in_proj, conv1d,
//!   x_proj, dt_proj, A_log, D, out_proj}` → `mamba.{in_proj, conv, x_proj, dt_proj, A_log,
//!   D, out_proj}`; `norm_f` → `decoder.final_norm`; `lm_head` → `head.lm` (untied only).
//! - **RWKV-4** (`RwkvForCausalLM`, P = `rwkv.`): `embeddings` → `embed.tokens`;
//!   `blocks.0.pre_ln` → `decoder.embed_norm`; `blocks.L.ln1` → `time_mix.norm`, `ln2` →
//!   `channel_mix.norm`; `blocks.L.attention.{time_decay, time_first, time_mix_key,
//!   time_mix_value, time_mix_receptance, key, value, receptance, output}` → `time_mix.{decay,
//!   first, mix_k, mix_v, mix_r, key, value, receptance, output}` (the [1, 1, d] mixes
//!   flattened); `blocks.L.feed_forward.{time_mix_key, time_mix_receptance, key, receptance,
//!   value}` → `channel_mix.{mix_k, mix_r, key, receptance, value}`; `ln_out` →
//!   `decoder.final_norm`; `head` → `head.lm`.
//!
//! Size-1 axes are ignored when comparing a plainly copied tensor's shape (RWKV's [1, 1, d]
//! mixes, BART's [1, V] bias); transposed and split tensors must match exactly.

mod hf;
mod namings;

pub use namings::manifest_namings;

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

use arch_dsl::spec::ArchSpec;
use arch_runtime::safetensors_file::FileError;
use safetensors::tensor::TensorView;
use safetensors::Dtype;

use crate::params::{param_table, ParamInfo};
use crate::tensor::F32Tensor;

/// A model's parameters by canonical name, as f32 host tensors.
#[derive(Debug, Clone, PartialEq)]
pub struct Weights {
    tensors: BTreeMap<String, F32Tensor>,
    naming: String,
    unused: Vec<String>,
    missing: Vec<String>,
}

/// What [`load_with`] tolerates.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LoadOptions {
    /// When false, absent `head.*` tensors are no error; they are listed by
    /// [`Weights::missing`] (a backbone-only checkpoint for a spec with pretraining heads).
    pub require_heads: bool,
}

impl Default for LoadOptions {
    fn default() -> Self {
        LoadOptions {
            require_heads: true,
        }
    }
}

/// Why weights could not be loaded. Every variant that concerns one tensor names it.
#[derive(Debug)]
pub enum WeightsError {
    /// The file cannot be opened, read or mapped.
    Io { path: PathBuf, error: String },
    /// Not a safetensors file: bad header, bad JSON, inconsistent offsets.
    Corrupt { path: PathBuf, reason: String },
    /// The file ends before the data its header declares; `tensor` is the first tensor cut
    /// off (none when the header itself is cut).
    Truncated {
        path: PathBuf,
        tensor: Option<String>,
        needed: u64,
        len: u64,
    },
    /// No parameter of the spec was found under any naming scheme.
    UnknownNaming {
        path: PathBuf,
        model: String,
        tried: Vec<String>,
        sample: Vec<String>,
    },
    /// A parameter the spec needs is absent. `looked_for` are the names tried in `naming`.
    Missing {
        tensor: String,
        naming: String,
        looked_for: Vec<String>,
    },
    /// A tensor has the wrong shape. `source` is the name in the file, `tensor` the
    /// canonical parameter it provides; shapes are the file's tensor's.
    Shape {
        tensor: String,
        source: String,
        expected: Vec<usize>,
        found: Vec<usize>,
    },
    /// A tensor's dtype is not f32, f16, bf16 or f64.
    Dtype {
        tensor: String,
        source: String,
        dtype: String,
    },
}

impl From<arch_runtime::RuntimeError> for WeightsError {
    fn from(e: arch_runtime::RuntimeError) -> Self {
        use arch_runtime::RuntimeError as R;
        match e {
            R::File(f) => f.into(),
            R::UnknownNaming {
                path,
                model,
                tried,
                sample,
            } => WeightsError::UnknownNaming {
                path,
                model,
                tried,
                sample,
            },
            R::Missing {
                tensor,
                naming,
                looked_for,
            } => WeightsError::Missing {
                tensor,
                naming,
                looked_for,
            },
            R::Shape {
                tensor,
                source,
                expected,
                found,
            } => WeightsError::Shape {
                tensor,
                source,
                expected,
                found,
            },
            R::Dtype {
                tensor,
                source,
                dtype,
            } => WeightsError::Dtype {
                tensor,
                source,
                dtype,
            },
            R::Io { path, error } => WeightsError::Io { path, error },
            other => WeightsError::Corrupt {
                path: PathBuf::new(),
                reason: other.to_string(),
            },
        }
    }
}

impl From<FileError> for WeightsError {
    fn from(e: FileError) -> Self {
        match e {
            FileError::Io { path, error } => WeightsError::Io { path, error },
            FileError::Corrupt { path, reason } => WeightsError::Corrupt { path, reason },
            FileError::Truncated {
                path,
                tensor,
                needed,
                len,
            } => WeightsError::Truncated {
                path,
                tensor,
                needed,
                len,
            },
        }
    }
}

impl WeightsError {
    /// The canonical tensor this error concerns, if it concerns one.
    pub fn tensor(&self) -> Option<&str> {
        match self {
            WeightsError::Truncated { tensor, .. } => tensor.as_deref(),
            WeightsError::Missing { tensor, .. }
            | WeightsError::Shape { tensor, .. }
            | WeightsError::Dtype { tensor, .. } => Some(tensor),
            _ => None,
        }
    }
}

fn named(source: &str, tensor: &str) -> String {
    if source == tensor {
        format!("tensor `{tensor}`")
    } else {
        format!("tensor `{source}` (parameter `{tensor}`)")
    }
}

impl fmt::Display for WeightsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            WeightsError::Io { path, error } => write!(f, "cannot read `{}`: {error}", path.display()),
            WeightsError::Corrupt { path, reason } => {
                write!(f, "`{}` is not a valid safetensors file: {reason}", path.display())
            }
            WeightsError::Truncated { path, tensor: Some(t), needed, len } => write!(
                f,
                "`{}` is truncated: tensor `{t}` ends at byte {needed} but the file has {len} bytes",
                path.display()
            ),
            WeightsError::Truncated { path, tensor: None, needed, len } => write!(
                f,
                "`{}` is truncated: its header needs {needed} bytes but the file has {len}",
                path.display()
            ),
            WeightsError::UnknownNaming { path, model, tried, sample } => {
                write!(
                    f,
                    "`{}`: none of the parameters of `{model}` was found under the {} names",
                    path.display(),
                    tried.join(", ")
                )?;
                if sample.is_empty() {
                    write!(f, " (the file holds no tensors)")
                } else {
                    write!(f, " (the file holds `{}`, …)", sample.join("`, `"))
                }
            }
            WeightsError::Missing { tensor, naming, looked_for } => {
                write!(f, "missing tensor `{tensor}`")?;
                match looked_for.as_slice() {
                    [] => write!(f, " (the {naming} naming has no equivalent)"),
                    [one] if one == tensor => Ok(()),
                    names => write!(f, " (looked for `{}`, {naming} naming)", names.join("` or `")),
                }
            }
            WeightsError::Shape { tensor, source, expected, found } => write!(
                f,
                "{} has shape {found:?}, expected {expected:?}",
                named(source, tensor)
            ),
            WeightsError::Dtype { tensor, source, dtype } => write!(
                f,
                "{} has unsupported dtype {dtype} (expected F32, F16, BF16 or F64)",
                named(source, tensor)
            ),
        }
    }
}

impl std::error::Error for WeightsError {}

/// Loads the weights of `spec` from `path`, every parameter of [`param_table`] required.
pub fn load(spec: &ArchSpec, path: &Path) -> Result<Weights, WeightsError> {
    load_with(spec, path, &LoadOptions::default())
}

/// [`load`] with options. The file is read by the runtime's loader
/// ([`arch_runtime::Weights`]) under the spec's namings ([`manifest_namings`]) — one
/// loader for the compiler and the runtime — and copied into host tensors.
pub fn load_with(
    spec: &ArchSpec,
    path: &Path,
    opts: &LoadOptions,
) -> Result<Weights, WeightsError> {
    let table = param_table(spec);
    let manifest = params_manifest(spec, &table, manifest_namings(spec));
    let optional = |name: &str| !opts.require_heads && name.starts_with("head.");
    let w = arch_runtime::Weights::open_with(&manifest, path, &optional)?;
    let mut tensors = BTreeMap::new();
    for (i, p) in table.iter().enumerate() {
        if w.missing().contains(&p.name) {
            continue;
        }
        let data = w.data(i).unwrap_or(&[]).to_vec();
        let t = F32Tensor::new(p.shape.clone(), data).map_err(|_| WeightsError::Shape {
            tensor: p.name.clone(),
            source: p.name.clone(),
            expected: p.shape.clone(),
            found: vec![],
        })?;
        tensors.insert(p.name.clone(), t);
    }
    Ok(Weights {
        tensors,
        naming: w.naming().to_string(),
        unused: w.unused().to_vec(),
        missing: w.missing().to_vec(),
    })
}

/// A manifest holding only `spec`'s parameters and namings: what the runtime's loader
/// reads.
pub(crate) fn params_manifest(
    spec: &ArchSpec,
    table: &[ParamInfo],
    namings: Vec<arch_runtime::manifest::Naming>,
) -> arch_runtime::Manifest {
    use arch_runtime::manifest::{BufferKind, BufferSpec, Dtype, Limits, ParamSpec, Target};
    arch_runtime::Manifest {
        format: arch_runtime::manifest::FORMAT.into(),
        compiler_version: env!("CARGO_PKG_VERSION").into(),
        model: spec.name.clone(),
        target: Target {
            kind: "host".into(),
            isa: String::new(),
            cpu: String::new(),
            features: String::new(),
            int_dots: false,
        },
        syms: vec![],
        limits: Limits {
            vocab: spec.vocab,
            context: spec.context,
            segments: spec.embed.segments,
            seq_multiple_of: 1,
            left_padding: true,
        },
        inputs: vec![],
        outputs: vec![],
        params: table
            .iter()
            .enumerate()
            .map(|(i, p)| ParamSpec {
                name: p.name.clone(),
                shape: p.shape.clone(),
                buffer: i,
                storage: None,
            })
            .collect(),
        states: vec![],
        namings,
        buffers: table
            .iter()
            .enumerate()
            .map(|(i, p)| BufferSpec {
                id: i,
                kind: BufferKind::Param,
                dtype: Dtype::F32,
                elems: arch_runtime::SizeExpr::constant(p.numel() as u64),
                slot: None,
            })
            .collect(),
        slots: 0,
        scratch_floats: 0,
        entries: Default::default(),
        kernels: vec![],
    }
}

impl Weights {
    /// Weights from canonical tensors, checked against `spec`: every parameter present with
    /// its shape. Names `spec` does not have are kept out and listed by [`Weights::unused`].
    pub fn from_tensors(
        spec: &ArchSpec,
        mut tensors: BTreeMap<String, F32Tensor>,
    ) -> Result<Weights, WeightsError> {
        let mut out = BTreeMap::new();
        for p in param_table(spec) {
            let t = tensors
                .remove(&p.name)
                .ok_or_else(|| WeightsError::Missing {
                    tensor: p.name.clone(),
                    naming: "canonical".into(),
                    looked_for: vec![p.name.clone()],
                })?;
            if t.shape != p.shape || t.data.len() != p.numel() {
                return Err(WeightsError::Shape {
                    source: p.name.clone(),
                    tensor: p.name,
                    expected: p.shape,
                    found: t.shape,
                });
            }
            out.insert(p.name, t);
        }
        Ok(Weights {
            tensors: out,
            naming: "canonical".into(),
            unused: tensors.into_keys().collect(),
            missing: vec![],
        })
    }

    /// The tensor of canonical parameter `name`.
    pub fn get(&self, name: &str) -> Option<&F32Tensor> {
        self.tensors.get(name)
    }

    /// All tensors by canonical name.
    pub fn tensors(&self) -> &BTreeMap<String, F32Tensor> {
        &self.tensors
    }

    pub fn into_tensors(self) -> BTreeMap<String, F32Tensor> {
        self.tensors
    }

    pub fn len(&self) -> usize {
        self.tensors.len()
    }

    pub fn is_empty(&self) -> bool {
        self.tensors.is_empty()
    }

    /// The naming the file used: `canonical` or the Hugging Face class (`GPT2LMHeadModel`, …).
    pub fn naming(&self) -> &str {
        &self.naming
    }

    /// Tensors of the file that no parameter was read from, sorted.
    pub fn unused(&self) -> &[String] {
        &self.unused
    }

    /// Head parameters that were absent, with `require_heads = false`.
    pub fn missing(&self) -> &[String] {
        &self.missing
    }

    /// Writes the tensors as an f32 safetensors file under their canonical names.
    pub fn save(&self, path: &Path) -> Result<(), WeightsError> {
        let bytes: Vec<(&String, &Vec<usize>, Vec<u8>)> = self
            .tensors
            .iter()
            .map(|(n, t)| {
                (
                    n,
                    &t.shape,
                    t.data.iter().flat_map(|x| x.to_le_bytes()).collect(),
                )
            })
            .collect();
        let views = bytes
            .iter()
            .map(|(n, shape, b)| {
                TensorView::new(Dtype::F32, shape.to_vec(), b)
                    .map(|v| (n.as_str(), v))
                    .map_err(|e| WeightsError::Corrupt {
                        path: path.to_path_buf(),
                        reason: e.to_string(),
                    })
            })
            .collect::<Result<Vec<_>, _>>()?;
        safetensors::serialize_to_file(views, None, path).map_err(|e| WeightsError::Io {
            path: path.to_path_buf(),
            error: e.to_string(),
        })
    }
}

/// The stored type of each parameter of `spec` in the weights at `path` that generated
/// kernels can read as stored ([`arch_runtime::weights::stored_types`]): what a package
/// built for those weights should keep in that type (`BuildOptions::quant`). Empty for
/// f32 weights, and for weights that cannot be read (the loader reports those).
pub fn block_storage(
    spec: &ArchSpec,
    path: &Path,
) -> BTreeMap<String, arch_runtime::gguf::GgmlType> {
    let params = param_table(spec);
    let names: Vec<&str> = params.iter().map(|p| p.name.as_str()).collect();
    arch_runtime::weights::stored_types(&manifest_namings(spec), &names, path).unwrap_or_default()
}

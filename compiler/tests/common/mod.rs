//! Helpers shared by the integration tests: fixture paths, the `tiny` spec of a fixture, and
//! ttt.py's parameter names mapped to canonical ones (the weight loader knows HF names, not
//! ttt.py's).
#![allow(dead_code)] // each test binary uses its own subset

use arch_dsl::elab::Program;
use arch_dsl::spec::ArchSpec;
use archc::autodiff::check::Rng;
use archc::eval::{evaluate, evaluate_cpu, Backend};
use archc::interp::Params;
use archc::interp::Value;
use archc::params::param_table;
use archc::tensor::{F32Tensor, I64Tensor, Tensor};
use archc::tensor_io::read_values;
use std::path::{Path, PathBuf};

/// Relative error bound of every backend against its reference.
pub const TOLERANCE: f64 = 1e-4;

/// Runs one Hugging Face fixture (`tests/fixtures/hf/NAME`) on `backend`; returns the
/// relative error of each compared (ours, theirs) output.
pub fn run_hf_fixture(
    dir: &Path,
    compare: &[(&str, &str)],
    backend: Backend,
) -> Vec<(String, f64)> {
    let spec = spec_of(dir);
    let inputs = read_values(&dir.join("inputs.safetensors")).unwrap();
    let mask = match inputs.get("attention_mask") {
        Some(Value::I(m)) => Some(m.clone()),
        _ => None,
    };
    let expected = read_values(&dir.join("outputs.safetensors")).unwrap();
    let wanted: Vec<&str> = compare.iter().map(|(ours, _)| *ours).collect();
    let weights = dir.join("model.safetensors");
    let outputs = match backend {
        Backend::Interp => evaluate(&spec, &weights, inputs, &wanted),
        Backend::Cpu => evaluate_cpu(&spec, &weights, inputs, &wanted, 0),
        Backend::CudaSim => archc::eval::evaluate_cuda(
            &spec,
            &weights,
            inputs,
            &wanted,
            archc::eval::CudaRun::Sim,
            "f32",
        ),
    }
    .unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
    compare
        .iter()
        .map(|(ours, theirs)| {
            let got = outputs
                .iter()
                .find(|(n, _)| n == ours)
                .unwrap_or_else(|| panic!("no output `{ours}`"))
                .1
                .clone();
            let want = match &expected[*theirs] {
                Value::F(t) => t.clone(),
                _ => panic!("`{theirs}` is not f32"),
            };
            assert_eq!(got.shape, want.shape, "{}: `{ours}` shape", dir.display());
            let (got, want) = match &mask {
                Some(m) if got.shape.len() == 3 && got.shape[..2] == m.shape[..] => {
                    (unpadded(&got, m), unpadded(&want, m))
                }
                _ => (got, want),
            };
            (
                format!("{}:{ours}", dir.file_name().unwrap().to_string_lossy()),
                got.rel_max_diff(&want),
            )
        })
        .collect()
}

/// [`run_hf_fixture`] on `tests/fixtures/hf/NAME`, asserting every error is within
/// [`TOLERANCE`].
pub fn check_hf(name: &str, compare: &[(&str, &str)], backend: Backend) {
    let dir = fixture("hf").join(name);
    for (what, err) in run_hf_fixture(&dir, compare, backend) {
        eprintln!("{what}: {err:e}");
        assert!(
            err <= TOLERANCE,
            "{what}: relative error {err:e} > {TOLERANCE:e}"
        );
    }
}

/// The rows of a [B, T, X] tensor at real tokens: what a model computes at padding
/// positions is unspecified (RoBERTa, for one, gives them another position id).
pub fn unpadded(t: &F32Tensor, mask: &I64Tensor) -> F32Tensor {
    assert_eq!(t.shape[..2], mask.shape[..], "mask and output shapes");
    let width = t.shape[2];
    let data: Vec<f32> = mask
        .data
        .iter()
        .enumerate()
        .filter(|(_, &m)| m != 0)
        .flat_map(|(i, _)| t.data[i * width..(i + 1) * width].iter().copied())
        .collect();
    Tensor {
        shape: vec![data.len() / width, width],
        data,
    }
}

pub fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
}

pub fn spec_of(dir: &Path) -> ArchSpec {
    let prog = Program::load(&dir.join("model.arch")).expect("model.arch");
    let (spec, diags) = prog.elaborate("tiny");
    spec.unwrap_or_else(|| panic!("{}: {diags:?}", dir.display()))
}

/// ttt.py's name of a tensor → the canonical one (the weight loader does not know ttt.py's).
pub fn canonical(name: &str) -> String {
    let name = name.strip_prefix("model.").unwrap_or(name);
    if name == "embed_tokens.weight" {
        return "embed.tokens.weight".into();
    }
    if name == "norm.weight" {
        return "decoder.final_norm.weight".into();
    }
    let (layer, rest) = name
        .strip_prefix("layers.")
        .and_then(|r| r.split_once('.'))
        .unwrap_or_else(|| panic!("unexpected tensor `{name}`"));
    let rest = match rest {
        "seq_norm.weight" => "ttt.norm.weight".to_string(),
        "ffn_norm.weight" => "mlp.norm.weight".to_string(),
        r if r.starts_with("mlp.") => r.replace("_proj", ""),
        r => {
            let r = r
                .strip_prefix("seq_modeling_block.")
                .unwrap_or_else(|| panic!("unexpected tensor `{name}`"));
            let r = match r {
                "learnable_token_idx" => "token_idx".to_string(),
                "learnable_ttt_lr_weight" => "lr_weight".to_string(),
                "learnable_ttt_lr_bias" => "lr_bias".to_string(),
                r => r.replace("_proj", ""),
            };
            format!("ttt.{r}")
        }
    };
    format!("decoder.layers.{layer}.{rest}")
}

// --- Random parameters ---------------------------------------------------------------

/// Uniform in [lo, hi).
pub fn uniform(rng: &mut Rng, lo: f64, hi: f64) -> f64 {
    lo + (rng.uniform() as f64 + 1.0) / 2.0 * (hi - lo)
}

pub fn tensor(
    rng: &mut Rng,
    shape: &[usize],
    mut f: impl FnMut(&mut Rng, usize) -> f64,
) -> F32Tensor {
    let n = shape.iter().product();
    Tensor {
        shape: shape.to_vec(),
        data: (0..n).map(|i| f(rng, i) as f32).collect(),
    }
}

/// A random value for parameter `name` of `shape`, in the range its role calls for:
/// S4D's S4D-Lin initialisation perturbed (A_imag = π·n + noise, so no mode is exactly
/// real — see `ssm_bilinear_conv_gradient_with_a_real_mode`; A_real ≈ −½; dt log-uniform in
/// `dt_range`), norm weights near 1, TTT's `token_idx` small (so that
/// `max(1/(i+1) + token_idx, 0)` stays away from its kink), matrices uniform with std 0.15
/// (about the fixtures' scale; much larger ones make TTT's inner gradient step so stiff
/// that central differences need steps below f32's resolution), the embedding ±0.5.
pub fn random_param(rng: &mut Rng, name: &str, shape: &[usize], dt_range: (f64, f64)) -> F32Tensor {
    let leaf = name.rsplit('.').next().unwrap();
    let parent = name.rsplit('.').nth(1).unwrap_or("");
    let u = |r: &mut Rng| r.uniform() as f64;
    match leaf {
        "log_dt" => tensor(rng, shape, |r, _| {
            uniform(r, dt_range.0.ln(), dt_range.1.ln())
        }),
        "log_A_real" => tensor(rng, shape, |r, _| 0.5f64.ln() + 0.3 * u(r)),
        "A_imag" => {
            let modes = shape[1];
            tensor(rng, shape, |r, i| {
                std::f64::consts::PI * (i % modes) as f64 + 0.2 * u(r)
            })
        }
        "C" => tensor(rng, shape, |r, _| 0.7 * u(r)),
        "D" => tensor(rng, shape, |r, _| u(r)),
        "token_idx" | "lr_bias" => tensor(rng, shape, |r, _| 0.1 * u(r)),
        "ttt_norm_weight" => tensor(rng, shape, |r, _| 1.0 + 0.2 * u(r)),
        "weight" if parent.contains("norm") => tensor(rng, shape, |r, _| 1.0 + 0.2 * u(r)),
        "ttt_norm_bias" | "bias" | "b1" | "b2" => tensor(rng, shape, |r, _| 0.2 * u(r)),
        _ => {
            let scale = if name == "embed.tokens.weight" {
                0.5
            } else {
                0.15 * 3f64.sqrt()
            };
            tensor(rng, shape, |r, _| scale * u(r))
        }
    }
}

pub fn random_params(rng: &mut Rng, spec: &ArchSpec, dt_range: (f64, f64)) -> Params {
    param_table(spec)
        .into_iter()
        .map(|p| {
            let t = random_param(rng, &p.name, &p.shape, dt_range);
            (p.name, t)
        })
        .collect()
}

// --- Tiny models of the cells without Hugging Face fixtures ----------------------------

/// A tiny S4D language model (bilinear; `tiny_zoh` with ZOH).
pub const TINY_S4: &str = "
model tiny {
    vocab = 23
    d_model = 5
    context = 64
    norm = layernorm(eps = 1e-5)
    placement = pre
    position = none
    decoder {
        layers = 2
        ssm { d_state = 6  discretization = bilinear }
        mlp { hidden = 7  act = gelu }
    }
}

model tiny_zoh : tiny {
    decoder.ssm.discretization = zoh
}
";

/// 3 heads of 6 (RoPE needs an even head size), mini-batches of 3, ttt.py's base lr 1.0.
pub const TINY_TTT: &str = "
model tiny_linear {
    vocab = 23
    d_model = 18
    context = 64
    norm = rmsnorm(eps = 1e-6)
    placement = pre
    position = rope(theta = 10000.0, style = interleaved)
    decoder {
        layers = 2
        ttt { heads = 3  inner = linear  mini_batch = 3  lr = 1.0  gate = false }
        mlp { hidden = 10  act = swiglu }
    }
}

model tiny_mlp : tiny_linear {
    decoder.ttt.inner = mlp
    decoder.ttt.gate = true
}
";

/// Attention with sliding windows: `window` (RoPE, GQA, a window of 3) and `banded`
/// (GPT-3's alternation of dense and banded layers, with ALiBi), beside `alibi` (dense).
pub const TINY_WINDOWS: &str = "
model alibi {
    vocab = 31  d_model = 12  context = 32
    norm = layernorm(eps = 1e-5)  placement = pre  position = alibi
    decoder { layers = 2  attention { heads = 3 }  mlp { hidden = 20  act = gelu } }
}
model window : alibi {
    d_model = 16
    position = rope(theta = 10000.0)
    decoder.attention.heads = 4
    decoder.attention.kv_heads = 2
    decoder.attention.mask = sliding(window = 3)
}
model banded {
    vocab = 31  d_model = 12  context = 32
    norm = layernorm(eps = 1e-5)  placement = pre  position = alibi
    decoder { stack = [dense, band] * 2 }
}
block dense { attention { heads = 3 }  mlp { hidden = 20  act = gelu } }
block band { attention { heads = 3  mask = sliding(window = 2) }  mlp { hidden = 20  act = gelu } }";

/// A word-level tokenizer.json: `w0` ... `w{n-1}` are ids 0 ... n-1, split on whitespace, no
/// special tokens.
pub fn word_tokenizer(dir: &Path, n: usize) -> PathBuf {
    let vocab: Vec<String> = (0..n).map(|i| format!("\"w{i}\": {i}")).collect();
    let json = format!(
        r#"{{"version": "1.0", "truncation": null, "padding": null, "added_tokens": [],
  "normalizer": null, "pre_tokenizer": {{"type": "WhitespaceSplit"}},
  "post_processor": null, "decoder": null,
  "model": {{"type": "WordLevel", "unk_token": "w0", "vocab": {{{}}}}}}}"#,
        vocab.join(", ")
    );
    let path = dir.join("words.json");
    std::fs::write(&path, json).unwrap();
    path
}

/// A hybrid decoder: Mamba and grouped-query attention blocks alternating.
pub const TINY_HYBRID: &str = "
block mamba_mlp {
    mamba { d_state = 4 }
    mlp { hidden = 2 * d_model  act = swiglu }
}

block attn_mlp {
    attention { heads = 4  kv_heads = 2 }
    mlp { hidden = 2 * d_model  act = swiglu }
}

model tiny_hybrid {
    vocab = 31
    d_model = 16
    context = 64
    norm = rmsnorm(eps = 1e-5)
    placement = pre
    position = rope(theta = 10000.0)
    decoder { stack = [mamba_mlp, attn_mlp] * 2 }
}
";

/// The deployment binary `arch-run` beside the test's `archc` (built on demand when the
/// test runs without the rest of the workspace).
pub fn arch_run() -> PathBuf {
    let archc = PathBuf::from(env!("CARGO_BIN_EXE_archc"));
    let bin = archc.with_file_name("arch-run");
    if !bin.exists() {
        let status = std::process::Command::new(env!("CARGO"))
            .args(["build", "-p", "arch-runtime", "--bin", "arch-run"])
            .status()
            .unwrap();
        assert!(status.success(), "cannot build arch-run");
    }
    bin
}

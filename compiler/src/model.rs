//! A spec bound to generated kernels, for Rust programs: what `model!`'s `Model` types
//! wrap. The kernels are compiled from the spec at first use — `Model::load` builds the
//! forward package through the package cache (a second run is a copy), generation builds
//! the step (and encode) programs the first time it is asked for — and run by the runtime
//! with the weights memory-mapped once.

use crate::package::{build, generation_packages, BuildOptions};
use crate::tensor::F32Tensor;
use arch_dsl::spec::{ArchSpec, Family, Head};
use arch_runtime::generate::{GenerateOptions, Generated, Generator};
use arch_runtime::{HostData, HostTensor, Package, Session, Weights};
use std::collections::HashMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

/// Why a model could not be built, loaded or run (weights that do not fit name the
/// tensor).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModelError(pub String);

impl fmt::Display for ModelError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for ModelError {}

fn err(e: impl fmt::Display) -> ModelError {
    ModelError(e.to_string())
}

/// A model output: row-major f32 values of `shape`.
#[derive(Debug, Clone, PartialEq)]
pub struct Output {
    name: String,
    shape: Vec<usize>,
    data: Vec<f32>,
}

impl Output {
    /// `logits` ([batch, seq, vocab]) for a model with an LM head, else `hidden`.
    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn shape(&self) -> &[usize] {
        &self.shape
    }

    pub fn data(&self) -> &[f32] {
        &self.data
    }

    pub fn into_data(self) -> Vec<f32> {
        self.data
    }
}

/// How sentence embeddings pool an encoder's last hidden state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pooling {
    /// The mean over real tokens (sentence-transformers' `Pooling(mean)`).
    Mean,
    /// The first token (`[CLS]`).
    Cls,
}

/// [b, t, d] hidden states → [b, d]: the mean over positions whose mask is 1 (summed in
/// f64), or position 0.
pub fn pool(hidden: &F32Tensor, mask: &[i64], pooling: Pooling) -> Vec<f32> {
    let (b, t, d) = (hidden.shape[0], hidden.shape[1], hidden.shape[2]);
    let mut out = Vec::with_capacity(b * d);
    for i in 0..b {
        let row = &hidden.data[i * t * d..(i + 1) * t * d];
        match pooling {
            Pooling::Cls => out.extend_from_slice(&row[..d]),
            Pooling::Mean => {
                let mut sum = vec![0f64; d];
                let mut n = 0usize;
                for (p, h) in row.chunks_exact(d).enumerate() {
                    if mask[i * t + p] != 0 {
                        n += 1;
                        for (s, &x) in sum.iter_mut().zip(h) {
                            *s += f64::from(x);
                        }
                    }
                }
                let n = n.max(1) as f64;
                out.extend(sum.iter().map(|s| (s / n) as f32));
            }
        }
    }
    out
}

/// Divides by the L2 norm (at least 1e-12, as `torch.nn.functional.normalize`).
pub fn l2_normalize(v: &mut [f32]) {
    let norm = v.iter().map(|&x| f64::from(x).powi(2)).sum::<f64>().sqrt();
    let norm = norm.max(1e-12);
    for x in v {
        *x = (f64::from(*x) / norm) as f32;
    }
}

/// A spec with its weights, ready to run on this machine's CPU.
pub struct Model {
    spec: ArchSpec,
    weights: PathBuf,
    threads: usize,
    /// The output `forward` returns.
    output: &'static str,
    forward: Mutex<Session>,
    /// Built at the first generation.
    generator: Mutex<Option<Generator>>,
}

impl fmt::Debug for Model {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Model")
            .field("model", &self.spec.name)
            .field("weights", &self.weights)
            .finish()
    }
}

impl Model {
    /// Builds (or takes from the cache) the spec's forward package and loads `weights`
    /// (safetensors in canonical or Hugging Face names), on one thread per core.
    pub fn load(spec: ArchSpec, weights: impl AsRef<Path>) -> Result<Model, ModelError> {
        Model::load_with_threads(spec, weights, 0)
    }

    /// [`Model::load`] on `threads` threads (0: one per core).
    pub fn load_with_threads(
        spec: ArchSpec,
        weights: impl AsRef<Path>,
        threads: usize,
    ) -> Result<Model, ModelError> {
        let weights = weights.as_ref().to_path_buf();
        let lm = spec
            .heads
            .iter()
            .any(|h| matches!(h, Head::Lm { .. } | Head::MaskedLm));
        let output = if lm { "logits" } else { "hidden" };
        let opts = BuildOptions {
            outputs: vec![output.to_string()],
            attention_mask: true,
            ..BuildOptions::host().map_err(err)?
        };
        let built = build(&spec, &opts, None).map_err(err)?;
        let package = Package::load(&built.dir).map_err(err)?;
        let w = Weights::open(package.manifest(), &weights).map_err(err)?;
        let forward = Session::new(package, w, threads).map_err(err)?;
        Ok(Model {
            spec,
            weights,
            threads,
            output,
            forward: Mutex::new(forward),
            generator: Mutex::new(None),
        })
    }

    pub fn spec(&self) -> &ArchSpec {
        &self.spec
    }

    /// The forward pass over `ids` ([batch, seq] row-major): `logits` [batch, seq, vocab]
    /// for a model with an LM head, else `hidden` [batch, seq, d_model]. An
    /// encoder-decoder also needs the decoder's tokens: [`Model::forward_with`].
    pub fn forward(&self, ids: &[i64], batch: usize) -> Result<Output, ModelError> {
        if self.spec.family == Family::EncoderDecoder {
            return Err(ModelError(format!(
                "`{}` is an encoder-decoder: give the decoder's tokens with `forward_with`",
                self.spec.name
            )));
        }
        self.forward_with(ids, None, None, batch)
    }

    /// The forward pass with a padding mask (1 = token) and, for an encoder-decoder, the
    /// decoder's tokens ([batch, target_seq]).
    pub fn forward_with(
        &self,
        ids: &[i64],
        mask: Option<&[i64]>,
        decoder_ids: Option<&[i64]>,
        batch: usize,
    ) -> Result<Output, ModelError> {
        let seq = rows(ids, batch, "ids")?;
        let mut inputs = HashMap::from([(
            "input_ids".to_string(),
            HostTensor::i64(vec![batch, seq], ids.to_vec()),
        )]);
        let mask = mask.map_or_else(|| vec![1; ids.len()], <[i64]>::to_vec);
        if mask.len() != ids.len() {
            return Err(ModelError(format!(
                "the mask has {} values for {} ids",
                mask.len(),
                ids.len()
            )));
        }
        inputs.insert(
            "attention_mask".to_string(),
            HostTensor::i64(vec![batch, seq], mask),
        );
        if let Some(d) = decoder_ids {
            let t = rows(d, batch, "decoder ids")?;
            inputs.insert(
                "decoder_input_ids".to_string(),
                HostTensor::i64(vec![batch, t], d.to_vec()),
            );
        }
        let mut session = self
            .forward
            .lock()
            .map_err(|_| err("the model's lock is poisoned"))?;
        // A model whose graph reads no mask (no attention) takes none.
        let takes: Vec<String> = session
            .package()
            .manifest()
            .inputs
            .iter()
            .map(|i| i.name.clone())
            .collect();
        inputs.retain(|k, _| k != "attention_mask" || takes.contains(k));
        let outputs = session.run("forward", &inputs).map_err(err)?;
        let (name, t) = outputs
            .into_iter()
            .find(|(n, _)| n == self.output)
            .ok_or_else(|| ModelError(format!("the package has no `{}`", self.output)))?;
        match t.data {
            HostData::F32(data) => Ok(Output {
                name,
                shape: t.shape,
                data,
            }),
            _ => Err(ModelError(format!("`{name}` is not f32"))),
        }
    }

    /// Greedy generation of `n_new` tokens after the prompts `ids` ([batch, seq]):
    /// row-major [batch, seq + n_new], prompt first (an encoder-decoder: the decoder's
    /// tokens from its start token 0).
    pub fn generate(
        &self,
        ids: &[i64],
        batch: usize,
        n_new: usize,
    ) -> Result<Vec<i64>, ModelError> {
        Ok(self
            .generate_with(ids, None, batch, &GenerateOptions::greedy(n_new))?
            .tokens)
    }

    /// Generation with any options (sampling, eos, logits) and a left-padding mask.
    pub fn generate_with(
        &self,
        ids: &[i64],
        mask: Option<&[i64]>,
        batch: usize,
        opts: &GenerateOptions,
    ) -> Result<Generated, ModelError> {
        let mut slot = self
            .generator
            .lock()
            .map_err(|_| err("the model's lock is poisoned"))?;
        if slot.is_none() {
            *slot = Some(self.generator()?);
        }
        let Some(g) = slot.as_mut() else {
            return Err(err("no generator"));
        };
        g.generate_any(ids, mask, batch, None, 0, opts, |_| {})
            .map_err(err)
    }

    /// Mean of the last hidden state over real tokens (`mask` 1), per row: sentence
    /// embeddings of an encoder ([batch, d_model]; L2-normalized when `normalize`).
    pub fn embed(
        &self,
        ids: &[i64],
        mask: Option<&[i64]>,
        batch: usize,
        normalize: bool,
    ) -> Result<Output, ModelError> {
        if self.output != "hidden" {
            return Err(ModelError(format!(
                "`{}` has an LM head: load it without one (a bare encoder) to embed",
                self.spec.name
            )));
        }
        let hidden = self.forward_with(ids, mask, None, batch)?;
        let d = hidden.shape[2];
        let mask = mask.map_or_else(|| vec![1; ids.len()], <[i64]>::to_vec);
        let hidden = crate::tensor::Tensor {
            shape: hidden.shape,
            data: hidden.data,
        };
        let mut data = pool(&hidden, &mask, Pooling::Mean);
        if normalize {
            data.chunks_mut(d).for_each(l2_normalize);
        }
        Ok(Output {
            name: "embeddings".into(),
            shape: vec![batch, d],
            data,
        })
    }

    fn generator(&self) -> Result<Generator, ModelError> {
        let base = BuildOptions::host().map_err(err)?;
        let (step, encode) = generation_packages(&self.spec, &base).map_err(ModelError)?;
        let encode = encode.map(|e| e.dir);
        Generator::load_programs(&step.dir, encode.as_deref(), &self.weights, self.threads)
            .map_err(err)
    }
}

/// The row length of a [batch, n] row-major tensor.
fn rows(v: &[i64], batch: usize, what: &str) -> Result<usize, ModelError> {
    if batch == 0 || v.is_empty() || !v.len().is_multiple_of(batch) {
        return Err(ModelError(format!(
            "{} {what} do not make {batch} non-empty rows",
            v.len()
        )));
    }
    Ok(v.len() / batch)
}

pub use crate::train::Optimizer;
pub use arch_runtime::train::{Schedule, StepStats};

/// Where a [`Trainer`] starts.
#[derive(Debug, Clone, PartialEq)]
pub enum Init {
    /// Weights in canonical or Hugging Face names.
    Weights(PathBuf),
    /// Fresh weights from this seed (`archc train --seed`'s).
    Seed(u64),
}

/// A training run's settings (`archc train`'s flags and defaults).
#[derive(Debug, Clone, PartialEq)]
pub struct TrainConfig {
    pub optimizer: crate::train::Optimizer,
    pub lr: f64,
    /// AdamW's β₁, β₂ (SGD: β₁ is the momentum).
    pub betas: (f64, f64),
    pub eps: f64,
    pub weight_decay: f64,
    /// Clip the global gradient norm (0: no clipping).
    pub clip: f64,
    pub schedule: arch_runtime::train::Schedule,
    pub warmup: u64,
    /// The schedule's horizon.
    pub steps: u64,
    pub threads: usize,
}

impl Default for TrainConfig {
    fn default() -> TrainConfig {
        TrainConfig {
            optimizer: crate::train::Optimizer::AdamW,
            lr: 3e-4,
            betas: (0.9, 0.999),
            eps: 1e-8,
            weight_decay: 0.01,
            clip: 1.0,
            schedule: arch_runtime::train::Schedule::Constant,
            warmup: 0,
            steps: 1000,
            threads: 0,
        }
    }
}

/// A spec's train package with its parameters and optimizer state, for Rust programs:
/// `step` trains on a batch, `save` / `resume` checkpoint (the same files as `archc
/// train`), `save_weights` writes weights [`Model::load`] reads.
pub struct Trainer {
    spec: ArchSpec,
    inner: arch_runtime::train::Trainer,
    /// ELECTRA: the generator's sampler and the seed of its draws.
    rtd: Option<(crate::train::RtdSampler, u64)>,
}

impl fmt::Debug for Trainer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Trainer")
            .field("model", &self.spec.name)
            .field("step", &self.inner.state.step)
            .finish()
    }
}

impl Trainer {
    /// Builds (or takes from the cache) the spec's train package and sets its parameters.
    pub fn new(spec: ArchSpec, init: Init, cfg: &TrainConfig) -> Result<Trainer, ModelError> {
        crate::train::losses(&spec).map_err(err)?;
        let opts = crate::train::TrainOptions {
            optimizer: cfg.optimizer,
            attention_mask: true,
            ..Default::default()
        };
        let (session, _) =
            crate::train::train_session(&spec, opts, cfg.threads, false).map_err(err)?;
        let seed = match &init {
            Init::Seed(s) => *s,
            Init::Weights(_) => 0,
        };
        let params = match init {
            Init::Weights(p) => crate::train::load_init(&spec, &p).map_err(err)?.0,
            Init::Seed(s) => crate::train::init_params(&spec, s),
        };
        let sgd = cfg.optimizer == crate::train::Optimizer::Sgd;
        let hyper = arch_runtime::train::Hyper {
            lr: cfg.lr,
            beta1: cfg.betas.0,
            beta2: if sgd { 0.0 } else { cfg.betas.1 },
            eps: cfg.eps,
            weight_decay: cfg.weight_decay,
            clip: cfg.clip,
            schedule: cfg.schedule,
            warmup: cfg.warmup,
            steps: cfg.steps,
            accum: 1,
        };
        let mut inner = arch_runtime::train::Trainer::new(session, &params, hyper).map_err(err)?;
        let rtd = match crate::train::rtd_generator(&spec).map_err(err)? {
            Some(_) => Some((
                crate::train::RtdSampler::new(&spec, &mut inner, true, cfg.threads).map_err(err)?,
                seed,
            )),
            None => None,
        };
        Ok(Trainer { spec, inner, rtd })
    }

    /// One optimizer step of next-token training on `ids` ([batch, seq] row-major; labels
    /// are the inputs, as Hugging Face's causal-LM loss takes them). Returns the loss
    /// before the update, the learning rate and the gradient norm.
    pub fn step(
        &mut self,
        ids: &[i64],
        batch: usize,
    ) -> Result<arch_runtime::train::StepStats, ModelError> {
        if self.spec.family != Family::DecoderOnly {
            return Err(ModelError(
                "Trainer::step trains decoder-only models on their own tokens; give the labels with `step_with`"
                    .into(),
            ));
        }
        if batch == 0 || ids.is_empty() || !ids.len().is_multiple_of(batch) {
            return Err(ModelError(format!(
                "{} ids do not make {batch} rows",
                ids.len()
            )));
        }
        let t = ids.len() / batch;
        let mut inputs: HashMap<String, HostTensor> = [
            (
                "input_ids".to_string(),
                HostTensor::i64(vec![batch, t], ids.to_vec()),
            ),
            (
                "labels".to_string(),
                HostTensor::i64(vec![batch, t], ids.to_vec()),
            ),
        ]
        .into();
        // Models with attention take the mask their train package was built with.
        let takes_mask = self
            .inner
            .session()
            .package()
            .manifest()
            .inputs
            .iter()
            .any(|i| i.name == "attention_mask");
        if takes_mask {
            inputs.insert(
                "attention_mask".to_string(),
                HostTensor::i64(vec![batch, t], vec![1; ids.len()]),
            );
        }
        self.step_with(inputs)
    }

    /// One optimizer step on the train program's own inputs: the forward inputs
    /// (`attention_mask` required), `labels`, and the objective's other labels.
    ///
    /// ELECTRA (an `rtd` objective): `inputs` are the generator's — masked `input_ids`,
    /// their MLM `labels` (−100 where not masked) and `attention_mask` —, and the
    /// generator's replacements are drawn here (row r of step s from its own generator,
    /// seeded by the `Init::Seed`, so a resumed run draws the same).
    pub fn step_with(
        &mut self,
        mut inputs: HashMap<String, HostTensor>,
    ) -> Result<arch_runtime::train::StepStats, ModelError> {
        if let Some((sampler, seed)) = &mut self.rtd {
            let rows = inputs.get("input_ids").map_or(0, |t| t.shape[0]);
            let first = self.inner.state.step * rows as u64;
            let salt = *seed ^ crate::train::RTD_SEED_SALT;
            let mut rngs: Vec<_> = (first..first + rows as u64)
                .map(|p| crate::collate::row_rng(salt, p, None))
                .collect();
            sampler
                .corrupt(&mut self.inner, &mut inputs, &mut rngs)
                .map_err(err)?;
        }
        self.inner.step(&[inputs]).map_err(err)
    }

    /// Optimizer steps taken.
    pub fn steps_done(&self) -> u64 {
        self.inner.state.step
    }

    /// Writes `dir/checkpoint.safetensors` (parameters, optimizer state, step) and
    /// `dir/weights.safetensors` (canonical names: [`Model::load`] reads it), each
    /// atomically.
    pub fn save(&mut self, dir: impl AsRef<Path>) -> Result<PathBuf, ModelError> {
        let dir = dir.as_ref();
        let path = self.inner.save(dir).map_err(err)?;
        self.save_weights(dir.join("weights.safetensors"))?;
        Ok(path)
    }

    /// Continues from a checkpoint [`Trainer::save`] (or `archc train`) wrote: parameters,
    /// optimizer state and step, so the next steps are those of an uninterrupted run.
    pub fn resume(&mut self, dir: impl AsRef<Path>) -> Result<(), ModelError> {
        self.inner.restore(dir.as_ref()).map_err(err)
    }

    /// The parameters as canonical safetensors.
    pub fn save_weights(&mut self, path: impl AsRef<Path>) -> Result<(), ModelError> {
        crate::train::save_weights(&mut self.inner, &self.spec, path.as_ref()).map_err(err)
    }
}

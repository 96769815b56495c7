//! Training on top of a session ([`Trainer`]): a train package's `train_step` entry
//! computes forward, loss, backward and the optimizer update in place over the session's
//! state (parameters, moments, the gradient accumulator); this module feeds it batches,
//! the learning-rate schedule and the per-step scalars, and saves and restores
//! checkpoints.
//!
//! States named `opt.…` are the optimizer's (`opt.m.{p}`, `opt.v.{p}`, `opt.acc.{p}`);
//! every other state is a parameter under its canonical name.
//!
//! A checkpoint is one safetensors file (`checkpoint.safetensors`): every parameter and
//! optimizer state under its state name, and in the metadata (`archc.trainer`) the JSON of
//! [`TrainerState`] plus whatever the caller keeps (data position, RNG). It is written to
//! a temporary name, synced and renamed, so a kill at any moment leaves the previous
//! checkpoint whole.

use std::borrow::Cow;
use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::error::RuntimeError;
use crate::generate::StepSession;
use crate::inputs::HostTensor;
use crate::manifest::{Naming, Source};
use crate::session::Session;

/// The train package's entry point.
pub const ENTRY: &str = "train_step";
/// Its per-step scalars input (layout in the compiler's `train.rs`).
pub const HYPER: &str = "hyper";
const HYPER_LEN: usize = 10;
/// The checkpoint file in a checkpoint directory.
pub const CHECKPOINT: &str = "checkpoint.safetensors";
const META_KEY: &str = "archc.trainer";

/// Learning-rate schedules (Hugging Face's `get_*_schedule_with_warmup`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Schedule {
    Constant,
    Linear,
    Cosine,
}

impl Schedule {
    pub fn parse(s: &str) -> Result<Schedule, String> {
        match s {
            "constant" => Ok(Schedule::Constant),
            "linear" => Ok(Schedule::Linear),
            "cosine" => Ok(Schedule::Cosine),
            _ => Err(format!(
                "unknown schedule `{s}` (constant, linear or cosine)"
            )),
        }
    }
}

/// The optimizer settings (the package decides which optimizer: AdamW when it keeps
/// `opt.v.` states, else SGD with momentum `beta1`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Hyper {
    pub lr: f64,
    pub beta1: f64,
    pub beta2: f64,
    pub eps: f64,
    pub weight_decay: f64,
    /// Clip the global gradient norm to this (0: no clipping).
    pub clip: f64,
    pub schedule: Schedule,
    pub warmup: u64,
    /// Total optimizer steps (the schedule's horizon).
    pub steps: u64,
    /// Micro-batches per optimizer step.
    pub accum: u64,
}

impl Hyper {
    /// AdamW at `lr` with torch's defaults (β 0.9/0.999, ε 1e-8, weight decay 0.01),
    /// clipping at 1.0, a constant schedule over `steps` steps of one micro-batch.
    pub fn adamw(lr: f64, steps: u64) -> Hyper {
        Hyper {
            lr,
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
            weight_decay: 0.01,
            clip: 1.0,
            schedule: Schedule::Constant,
            warmup: 0,
            steps,
            accum: 1,
        }
    }

    /// The learning rate of optimizer step `step` (counted from 1): the schedule's
    /// multiplier at `step − 1`, as a Hugging Face scheduler stepped after each update.
    pub fn lr_at(&self, step: u64) -> f64 {
        let s = step.saturating_sub(1) as f64;
        let (w, total) = (self.warmup as f64, self.steps as f64);
        if s < w {
            return self.lr * s / w.max(1.0);
        }
        let f = match self.schedule {
            Schedule::Constant => 1.0,
            Schedule::Linear => ((total - s) / (total - w).max(1.0)).max(0.0),
            Schedule::Cosine => {
                let progress = (s - w) / (total - w).max(1.0);
                (0.5 * (1.0 + (std::f64::consts::PI * progress).cos())).max(0.0)
            }
        };
        self.lr * f
    }
}

/// A named tensor: name, shape, values.
pub type NamedTensor<D> = (String, Vec<usize>, D);

/// What the trainer keeps beside the tensors of a checkpoint.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrainerState {
    /// The model the package was built for.
    pub model: String,
    /// Optimizer steps done.
    pub step: u64,
    pub hyper: Hyper,
    /// The loss of every step so far (for the curve).
    pub losses: Vec<f64>,
    /// The caller's own state (data position, collator RNG), as JSON.
    pub extra: serde_json::Value,
}

/// One optimizer step's figures.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct StepStats {
    pub step: u64,
    /// Mean of the micro-batches' losses, before this step's update.
    pub loss: f64,
    pub lr: f64,
    /// The global gradient norm before clipping.
    pub grad_norm: f64,
}

/// What training needs of a session, on any target: the CPU's [`Session`] (parameters
/// read in place) or a GPU's [`crate::device::DeviceSession`] (copied from the device).
pub trait TrainSession: StepSession {
    /// The current values of the states `names`, in that order.
    fn states(&mut self, names: &[&str]) -> Result<Vec<Cow<'_, [f32]>>, RuntimeError>;
}

impl TrainSession for Session {
    fn states(&mut self, names: &[&str]) -> Result<Vec<Cow<'_, [f32]>>, RuntimeError> {
        let this: &Session = self;
        names
            .iter()
            .map(|n| this.state_data(n).map(Cow::Borrowed))
            .collect()
    }
}

impl TrainSession for crate::device::DeviceSession {
    fn states(&mut self, names: &[&str]) -> Result<Vec<Cow<'_, [f32]>>, RuntimeError> {
        names
            .iter()
            .map(|n| self.state_data(n).map(Cow::Owned))
            .collect()
    }
}

/// A session of a train package with its schedule and step count.
pub struct Trainer<S: TrainSession = Session> {
    session: S,
    pub state: TrainerState,
    adamw: bool,
    accumulates: bool,
}

impl<S: TrainSession> std::fmt::Debug for Trainer<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Trainer")
            .field("model", &self.state.model)
            .field("step", &self.state.step)
            .finish()
    }
}

fn err(msg: impl Into<String>) -> RuntimeError {
    RuntimeError::State(msg.into())
}

impl Trainer<Session> {
    /// Kernel timing ([`Session::set_profiling`]).
    pub fn set_profiling(&mut self, on: bool) {
        self.session.set_profiling(on)
    }

    pub fn set_threads(&mut self, threads: usize) -> Result<(), RuntimeError> {
        self.session.set_threads(threads)
    }
}

impl<S: TrainSession> Trainer<S> {
    /// A trainer over `session` (a train package's), its states allocated and every
    /// parameter set from `params` (canonical name → values; all must be given, with
    /// their element counts). Moments start at zero.
    pub fn new(
        mut session: S,
        params: &BTreeMap<String, Vec<f32>>,
        hyper: Hyper,
    ) -> Result<Trainer<S>, RuntimeError> {
        let m = session.step_manifest().clone();
        if !m.entries.contains_key(ENTRY) {
            return Err(err(format!(
                "package `{}` is not a train package (it has no `{ENTRY}` entry)",
                m.model
            )));
        }
        let adamw = m.states.iter().any(|s| s.name.starts_with("opt.v."));
        let accumulates = m.states.iter().any(|s| s.name.starts_with("opt.acc."));
        if hyper.accum > 1 && !accumulates {
            return Err(err(
                "this train package keeps no gradient accumulator: build it for accumulation",
            ));
        }
        if hyper.accum == 0 {
            return Err(err("--accum must be at least 1"));
        }
        session.reset_state_at(&[])?;
        let sizes = state_sizes(&m)?;
        for s in &m.states {
            if s.name.starts_with("opt.") {
                continue;
            }
            let data = params
                .get(&s.name)
                .ok_or_else(|| err(format!("no initial value for parameter `{}`", s.name)))?;
            let want = sizes[&s.name];
            if data.len() != want {
                return Err(err(format!(
                    "parameter `{}` has {} values, the model needs {want}",
                    s.name,
                    data.len()
                )));
            }
            session.set_state(&s.name, data)?;
        }
        Ok(Trainer {
            state: TrainerState {
                model: m.model.clone(),
                step: 0,
                hyper,
                losses: Vec::new(),
                extra: serde_json::Value::Null,
            },
            session,
            adamw,
            accumulates,
        })
    }

    pub fn session(&self) -> &S {
        &self.session
    }

    pub fn session_mut(&mut self) -> &mut S {
        &mut self.session
    }

    /// The parameters' names (canonical), in manifest order.
    pub fn param_names(&self) -> Vec<String> {
        self.session
            .step_manifest()
            .states
            .iter()
            .filter(|s| !s.name.starts_with("opt."))
            .map(|s| s.name.clone())
            .collect()
    }

    /// The current value of parameter (or optimizer state) `name` (borrowed on the CPU,
    /// copied from a device).
    pub fn tensor(&mut self, name: &str) -> Result<Cow<'_, [f32]>, RuntimeError> {
        Ok(self.session.states(&[name])?.remove(0))
    }

    /// The current values of `names` (as [`Trainer::tensor`]).
    pub fn tensors(&mut self, names: &[&str]) -> Result<Vec<Cow<'_, [f32]>>, RuntimeError> {
        self.session.states(names)
    }

    /// One optimizer step over `micro` (one batch per micro-batch, `hyper.accum` of
    /// them): each runs forward and backward; the last applies the update.
    pub fn step(
        &mut self,
        micro: &[HashMap<String, HostTensor>],
    ) -> Result<StepStats, RuntimeError> {
        let h = &self.state.hyper;
        if micro.len() as u64 != h.accum {
            return Err(err(format!(
                "a step takes {} micro-batches, given {}",
                h.accum,
                micro.len()
            )));
        }
        let step = self.state.step + 1;
        let lr = h.lr_at(step);
        let t = step as f64;
        let (bc1, bc2) = if self.adamw {
            (1.0 - h.beta1.powf(t), 1.0 - h.beta2.powf(t))
        } else {
            (1.0, 1.0)
        };
        let scale = 1.0 / h.accum as f64;
        let mut loss = 0.0;
        let mut grad_norm = 0.0;
        for (j, batch) in micro.iter().enumerate() {
            let apply = j + 1 == micro.len();
            let hyper: Vec<f32> = [
                lr,
                h.beta1,
                h.beta2,
                h.eps,
                h.weight_decay,
                bc1,
                bc2,
                h.clip,
                f64::from(u8::from(apply || !self.accumulates)),
                scale,
            ]
            .iter()
            .map(|&x| x as f32)
            .collect();
            debug_assert_eq!(hyper.len(), HYPER_LEN);
            let mut inputs = batch.clone();
            inputs.insert(HYPER.into(), HostTensor::f32(vec![HYPER_LEN], hyper));
            let out = self.session.run(ENTRY, &inputs)?;
            let get = |name: &str| {
                out.iter()
                    .find(|(n, _)| n == name)
                    .and_then(|(_, t)| t.as_f32())
                    .and_then(|v| v.first().copied())
                    .ok_or_else(|| err(format!("the train package has no `{name}` output")))
            };
            loss += get("loss")? as f64;
            grad_norm = get("grad_norm")? as f64;
        }
        let loss = loss / micro.len() as f64;
        if !loss.is_finite() {
            return Err(err(format!(
                "step {step}: the loss is {loss} (diverged, or no label in the batch was scored)"
            )));
        }
        self.state.step = step;
        self.state.losses.push(loss);
        Ok(StepStats {
            step,
            loss,
            lr,
            grad_norm,
        })
    }

    /// Writes `dir/checkpoint.safetensors` (parameters, optimizer state, trainer state)
    /// atomically.
    pub fn save(&mut self, dir: &Path) -> Result<PathBuf, RuntimeError> {
        let meta = serde_json::to_string(&self.state).map_err(|e| err(e.to_string()))?;
        let m = self.session.step_manifest();
        let mut shapes = Vec::with_capacity(m.states.len());
        for s in &m.states {
            let shape = s
                .shape
                .iter()
                .map(|d| {
                    d.as_constant()
                        .map(|v| v as usize)
                        .ok_or_else(|| err(format!("state `{}` has a symbolic shape", s.name)))
                })
                .collect::<Result<Vec<_>, _>>()?;
            shapes.push((s.name.clone(), shape));
        }
        let names: Vec<&str> = shapes.iter().map(|(n, _)| n.as_str()).collect();
        let values = self.session.states(&names)?;
        let tensors: Vec<(String, Vec<usize>, &[f32])> = shapes
            .iter()
            .zip(&values)
            .map(|((n, s), v)| (n.clone(), s.clone(), &v[..]))
            .collect();
        let path = dir.join(CHECKPOINT);
        write_safetensors_atomic(&path, &tensors, Some((META_KEY, &meta)))?;
        Ok(path)
    }

    /// Restores parameters, optimizer state and trainer state from a checkpoint directory
    /// (or file). The checkpoint must be of this model, with the same tensors.
    pub fn restore(&mut self, from: &Path) -> Result<(), RuntimeError> {
        let path = if from.is_dir() {
            from.join(CHECKPOINT)
        } else {
            from.to_path_buf()
        };
        let bytes = std::fs::read(&path)
            .map_err(|e| err(format!("cannot read checkpoint {}: {e}", path.display())))?;
        let bad = |why: String| {
            err(format!(
                "{} is not a usable checkpoint: {why}",
                path.display()
            ))
        };
        let (_, meta) =
            safetensors::SafeTensors::read_metadata(&bytes).map_err(|e| bad(format!("{e}")))?;
        let text = meta
            .metadata()
            .as_ref()
            .and_then(|m| m.get(META_KEY))
            .ok_or_else(|| bad("it has no trainer state (not written by archc train)".into()))?;
        let state: TrainerState =
            serde_json::from_str(text).map_err(|e| bad(format!("trainer state: {e}")))?;
        if state.model != self.state.model {
            return Err(bad(format!(
                "it is a checkpoint of model `{}`, this is `{}`",
                state.model, self.state.model
            )));
        }
        let st = safetensors::SafeTensors::deserialize(&bytes).map_err(|e| bad(format!("{e}")))?;
        let names: Vec<String> = self
            .session
            .step_manifest()
            .states
            .iter()
            .map(|s| s.name.clone())
            .collect();
        let sizes = state_sizes(self.session.step_manifest())?;
        // Another model (or another optimizer, or accumulation) has other state tensors.
        let theirs: std::collections::BTreeSet<&str> = st.names().into_iter().collect();
        let missing: Vec<&String> = names
            .iter()
            .filter(|n| !theirs.contains(n.as_str()))
            .collect();
        if let Some(first) = missing.first() {
            return Err(bad(format!(
                "it was written for another model or optimizer: {} of this run's {} tensors are missing (`{first}` …)",
                missing.len(),
                names.len()
            )));
        }
        // Check every tensor before setting any.
        let mut values = Vec::with_capacity(names.len());
        for name in &names {
            let view = st
                .tensor(name)
                .map_err(|_| bad(format!("it has no tensor `{name}`")))?;
            let data = crate::safetensors_file::to_f32(&view)
                .ok_or_else(|| bad(format!("tensor `{name}` is not f32")))?;
            let want = sizes[name];
            if data.len() != want {
                return Err(bad(format!(
                    "tensor `{name}` has {} values, the model needs {want}: it was written for another model",
                    data.len()
                )));
            }
            values.push(data);
        }
        for (name, data) in names.iter().zip(&values) {
            self.session.set_state(name, data)?;
        }
        let hyper = self.state.hyper.clone();
        self.state = state;
        // The run's own settings win (a resumed run may extend `--steps`).
        self.state.hyper = hyper;
        Ok(())
    }

    /// The parameters under `naming` (a manifest naming such as Hugging Face's): every
    /// tensor of the naming assembled from the canonical parameters (transposed back,
    /// fused rows put together). Tensors the naming does not have are left out; where a
    /// parameter has alternative names, the first that `known` accepts (the names of the
    /// file the weights came from), else the first.
    pub fn export(
        &mut self,
        naming: &Naming,
        known: &dyn Fn(&str) -> bool,
    ) -> Result<Vec<NamedTensor<Vec<f32>>>, RuntimeError> {
        let names = self.param_names();
        let refs: Vec<&str> = names.iter().map(String::as_str).collect();
        let values = self.session.states(&refs)?;
        let params: Vec<(&str, &[f32])> = refs
            .iter()
            .copied()
            .zip(values.iter().map(|v| &v[..]))
            .collect();
        Ok(export_params(naming, &params, known))
    }
}

/// A train package's starting parameters from a weights file: every parameter (its
/// non-optimizer states) under canonical names or any naming the package's manifest knows
/// (Hugging Face's, GGUF's), as [`crate::Weights::open`] reads a forward package's.
pub fn load_params(
    m: &crate::manifest::Manifest,
    path: &Path,
) -> Result<BTreeMap<String, Vec<f32>>, RuntimeError> {
    use crate::manifest::{BufferKind, BufferSpec, Dtype, ParamSpec};
    let mut pm = m.clone();
    pm.params.clear();
    pm.buffers.clear();
    pm.states.clear();
    pm.entries.clear();
    pm.kernels.clear();
    for s in m.states.iter().filter(|s| !s.name.starts_with("opt.")) {
        let shape = s
            .shape
            .iter()
            .map(|d| d.as_constant().map(|v| v as usize))
            .collect::<Option<Vec<usize>>>()
            .ok_or_else(|| err(format!("state `{}` has a symbolic shape", s.name)))?;
        let id = pm.buffers.len();
        pm.buffers.push(BufferSpec {
            id,
            kind: BufferKind::Param,
            dtype: Dtype::F32,
            elems: crate::SizeExpr::constant(shape.iter().product::<usize>() as u64),
            slot: None,
        });
        pm.params.push(ParamSpec {
            name: s.name.clone(),
            shape,
            buffer: id,
            storage: None,
        });
    }
    let w = crate::Weights::open(&pm, path)?;
    Ok(pm
        .params
        .iter()
        .enumerate()
        .map(|(i, p)| (p.name.clone(), w.data(i).unwrap_or(&[]).to_vec()))
        .collect())
}

/// Every state's element count (train packages' states have constant shapes).
fn state_sizes(m: &crate::manifest::Manifest) -> Result<HashMap<String, usize>, RuntimeError> {
    m.states
        .iter()
        .map(|s| {
            s.shape
                .iter()
                .map(|d| d.as_constant().map(|v| v as usize))
                .product::<Option<usize>>()
                .map(|n| (s.name.clone(), n))
                .ok_or_else(|| err(format!("state `{}` has a symbolic shape", s.name)))
        })
        .collect()
}

/// Canonical parameters (name, values) written under `naming`: every tensor of the naming
/// assembled from them (transposed back, fused rows put together, llama.cpp's RoPE rows
/// and Mamba's `A` restored). Where a parameter has alternative names, the first that
/// `known` accepts, else the first.
pub fn export_params(
    naming: &Naming,
    params: &[(&str, &[f32])],
    known: &dyn Fn(&str) -> bool,
) -> Vec<NamedTensor<Vec<f32>>> {
    let mut parts: BTreeMap<String, Assembly> = BTreeMap::new();
    for (p, data) in params {
        if let Some(src) = naming.sources.get(*p) {
            place(src, data, known, &mut parts);
        }
    }
    parts
        .into_iter()
        .map(|(n, a)| {
            let (shape, data) = a.finish();
            (n, shape, data)
        })
        .collect()
}

/// A file tensor being put together from canonical parameters: `rows` rows of `row`
/// values (`shape` when whole), transposed at the end when the file stores it so.
#[derive(Default)]
struct Assembly {
    shape: Vec<usize>,
    row: usize,
    data: Vec<f32>,
    transpose: bool,
}

impl Assembly {
    fn finish(self) -> (Vec<usize>, Vec<f32>) {
        if !self.transpose {
            return (self.shape, self.data);
        }
        let (a, b) = (self.data.len() / self.row.max(1), self.row);
        let mut t = vec![0f32; self.data.len()];
        for i in 0..a {
            for j in 0..b {
                t[j * a + i] = self.data[i * b + j];
            }
        }
        (vec![b, a], t)
    }
}

/// Writes canonical values `data` into the file tensors `src` describes.
fn place(
    src: &Source,
    data: &[f32],
    known: &dyn Fn(&str) -> bool,
    out: &mut BTreeMap<String, Assembly>,
) {
    match src {
        Source::Plain { name, shape } => {
            out.insert(
                name.clone(),
                Assembly {
                    shape: shape.clone(),
                    row: 1,
                    data: data.to_vec(),
                    transpose: false,
                },
            );
        }
        Source::Transpose { name, shape } => {
            let row = shape.get(1).copied().unwrap_or(1);
            out.insert(
                name.clone(),
                Assembly {
                    shape: shape.clone(),
                    row,
                    data: data.to_vec(),
                    transpose: true,
                },
            );
        }
        Source::Rows {
            name,
            shape,
            transpose,
            start,
            len,
        } => {
            // Canonical [len, rest..] = rows start..start+len of the (transposed) tensor.
            let row = shape.iter().skip(1).product::<usize>().max(1);
            let a = out.entry(name.clone()).or_default();
            let need = (start + len) * row;
            if a.data.len() < need {
                a.data.resize(need, 0.0);
            }
            a.data[start * row..need].copy_from_slice(&data[..(len * row).min(data.len())]);
            a.row = row;
            a.transpose = *transpose;
            let mut s = vec![a.data.len() / row];
            s.extend_from_slice(shape.get(1..).unwrap_or(&[]));
            a.shape = s;
        }
        Source::NegLog { name, shape } => {
            out.insert(
                name.clone(),
                Assembly {
                    shape: shape.clone(),
                    row: 1,
                    data: data.iter().map(|&x| -x.exp()).collect(),
                    transpose: false,
                },
            );
        }
        Source::RopeRows { name, shape, heads } => {
            let rows = shape.first().copied().unwrap_or(1);
            let data = crate::manifest::rope_rows(data, rows, *heads, true)
                .unwrap_or_else(|| data.to_vec());
            out.insert(
                name.clone(),
                Assembly {
                    shape: shape.clone(),
                    row: 1,
                    data,
                    transpose: false,
                },
            );
        }
        Source::Any(alts) => {
            let pick = alts
                .iter()
                .find(|a| a.names().iter().any(|n| known(n)))
                .or(alts.first());
            if let Some(a) = pick {
                place(a, data, known, out);
            }
        }
        Source::Nothing => {}
    }
}

/// Writes `tensors` as an f32 safetensors file at `path`: to a temporary name beside it,
/// synced, then renamed over `path`.
pub fn write_safetensors_atomic(
    path: &Path,
    tensors: &[(String, Vec<usize>, &[f32])],
    meta: Option<(&str, &str)>,
) -> Result<(), RuntimeError> {
    use std::io::Write;
    let io = |e: std::io::Error| err(format!("cannot write {}: {e}", path.display()));
    let mut header = serde_json::Map::new();
    if let Some((k, v)) = meta {
        let mut m = serde_json::Map::new();
        m.insert(k.into(), serde_json::Value::String(v.into()));
        header.insert("__metadata__".into(), serde_json::Value::Object(m));
    }
    let mut offset = 0usize;
    for (name, shape, data) in tensors {
        let n = data.len() * 4;
        header.insert(
            name.clone(),
            serde_json::json!({"dtype": "F32", "shape": shape, "data_offsets": [offset, offset + n]}),
        );
        offset += n;
    }
    let mut text = serde_json::to_string(&header).map_err(|e| err(e.to_string()))?;
    while (8 + text.len()) % 8 != 0 {
        text.push(' ');
    }
    let dir = path.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir).map_err(io)?;
    let tmp = dir.join(format!(
        ".{}.tmp{}",
        path.file_name()
            .and_then(|n| n.to_str())
            .unwrap_or("checkpoint"),
        std::process::id()
    ));
    let result = (|| {
        let mut f = std::io::BufWriter::new(std::fs::File::create(&tmp)?);
        f.write_all(&(text.len() as u64).to_le_bytes())?;
        f.write_all(text.as_bytes())?;
        for (_, _, data) in tensors {
            for chunk in data.chunks(1 << 16) {
                let bytes: Vec<u8> = chunk.iter().flat_map(|x| x.to_le_bytes()).collect();
                f.write_all(&bytes)?;
            }
        }
        let f = f.into_inner().map_err(|e| e.into_error())?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)
    })();
    if let Err(e) = result {
        let _ = std::fs::remove_file(&tmp);
        return Err(io(e));
    }
    Ok(())
}

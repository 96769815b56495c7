//! Token-by-token generation on a package's step program (`prefill`, then `decode` per
//! new token), with the session's caches holding every earlier token's keys and values.
//!
//! Left padding follows Hugging Face `generate`: a row's positions count its real tokens
//! only (`cumsum(mask) − 1`, padding at position 0), and padded keys are masked in every
//! later step. Greedy decoding takes the first largest logit (`argmax`); sampling applies
//! temperature, then top-k, then top-p, as Hugging Face's logits warpers do, and draws
//! from a generator seeded per call, so a seed repeats its tokens exactly.

use std::collections::HashMap;
use std::path::Path;
use std::time::Instant;

use crate::error::RuntimeError;
use crate::inputs::{HostData, HostTensor};
use crate::manifest::Manifest;
use crate::manifest::Manifest as StepManifest;
use crate::package::Package;
use crate::session::Session;
use crate::weights::Weights;

/// How the next token is chosen from its logits.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Decoding {
    /// The largest logit (the first one on ties).
    Greedy,
    Sample(Sampling),
}

/// Sampling settings: `top_k` 0 and `top_p` 1 keep every token.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Sampling {
    pub temperature: f32,
    pub top_k: usize,
    pub top_p: f32,
    pub seed: u64,
}

#[derive(Debug, Clone, PartialEq)]
pub struct GenerateOptions {
    pub max_new_tokens: usize,
    pub decoding: Decoding,
    /// A row stops at its first token among these; later positions get `pad`.
    pub eos: Vec<i64>,
    pub pad: i64,
    /// Keep the logits that chose each new token (steps after every row has ended hold
    /// zeros: the model is not run for them).
    pub save_logits: bool,
}

impl GenerateOptions {
    /// `n` new tokens per row, greedy, no end-of-sequence, no logits kept.
    pub fn greedy(n: usize) -> GenerateOptions {
        GenerateOptions {
            max_new_tokens: n,
            decoding: Decoding::Greedy,
            eos: Vec::new(),
            pad: 0,
            save_logits: false,
        }
    }
}

impl Decoding {
    /// Greedy unless a sampling option is given (then temperature 1, every token kept
    /// and seed 0 unless given).
    pub fn from_options(
        temperature: Option<f32>,
        top_k: Option<usize>,
        top_p: Option<f32>,
        seed: Option<u64>,
    ) -> Decoding {
        if temperature.is_none() && top_k.is_none() && top_p.is_none() && seed.is_none() {
            return Decoding::Greedy;
        }
        Decoding::Sample(Sampling {
            temperature: temperature.unwrap_or(1.0),
            top_k: top_k.unwrap_or(0),
            top_p: top_p.unwrap_or(1.0),
            seed: seed.unwrap_or(0),
        })
    }
}

/// What [`Generator::generate`] returns.
#[derive(Debug, Clone, PartialEq)]
pub struct Generated {
    pub batch: usize,
    /// Prompt length plus new tokens: `tokens` is [batch, len] row-major.
    pub len: usize,
    pub tokens: Vec<i64>,
    /// [batch, new tokens, vocab] when asked for.
    pub logits: Option<Vec<f32>>,
    pub vocab: usize,
    pub prefill_seconds: f64,
    /// Seconds spent in `decode` calls, and how many there were.
    pub decode_seconds: f64,
    pub decode_steps: usize,
    /// Rows computed over all decode calls (rows that ended at an eos are dropped from
    /// the session unless logits are saved, so this is below `batch × decode_steps` then).
    pub decode_rows: usize,
    /// Bytes of session state (caches) allocated.
    pub state_bytes: u64,
}

/// What generation needs of a session, on any target: the CPU's [`Session`] or a GPU's
/// [`crate::device::DeviceSession`].
pub trait StepSession {
    fn step_manifest(&self) -> &StepManifest;
    fn reset_state(&mut self, batch: u64, capacity: u64) -> Result<u64, RuntimeError>;
    fn reset_state_at(&mut self, bindings: &[(&str, u64)]) -> Result<u64, RuntimeError>;
    fn set_state(&mut self, name: &str, data: &[f32]) -> Result<(), RuntimeError>;
    /// Drops finished rows from the state; false when the session cannot (it then keeps
    /// computing them, which changes no result).
    fn keep_rows(&mut self, keep: &[usize]) -> Result<bool, RuntimeError>;
    fn run(
        &mut self,
        entry: &str,
        inputs: &HashMap<String, HostTensor>,
    ) -> Result<Vec<(String, HostTensor)>, RuntimeError>;
}

impl StepSession for Session {
    fn step_manifest(&self) -> &StepManifest {
        self.package().manifest()
    }
    fn reset_state(&mut self, batch: u64, capacity: u64) -> Result<u64, RuntimeError> {
        Session::reset_state(self, batch, capacity)
    }
    fn reset_state_at(&mut self, bindings: &[(&str, u64)]) -> Result<u64, RuntimeError> {
        Session::reset_state_at(self, bindings)
    }
    fn set_state(&mut self, name: &str, data: &[f32]) -> Result<(), RuntimeError> {
        Session::set_state(self, name, data)
    }
    fn keep_rows(&mut self, keep: &[usize]) -> Result<bool, RuntimeError> {
        Session::keep_rows(self, keep)
    }
    fn run(
        &mut self,
        entry: &str,
        inputs: &HashMap<String, HostTensor>,
    ) -> Result<Vec<(String, HostTensor)>, RuntimeError> {
        Session::run(self, entry, inputs)
    }
}

impl StepSession for crate::device::DeviceSession {
    fn step_manifest(&self) -> &StepManifest {
        self.manifest()
    }
    fn reset_state(&mut self, batch: u64, capacity: u64) -> Result<u64, RuntimeError> {
        crate::device::DeviceSession::reset_state(self, batch, capacity)
    }
    fn reset_state_at(&mut self, bindings: &[(&str, u64)]) -> Result<u64, RuntimeError> {
        crate::device::DeviceSession::reset_state_at(self, bindings)
    }
    fn set_state(&mut self, name: &str, data: &[f32]) -> Result<(), RuntimeError> {
        crate::device::DeviceSession::set_state(self, name, data)
    }
    fn keep_rows(&mut self, _keep: &[usize]) -> Result<bool, RuntimeError> {
        Ok(false)
    }
    fn run(
        &mut self,
        entry: &str,
        inputs: &HashMap<String, HostTensor>,
    ) -> Result<Vec<(String, HostTensor)>, RuntimeError> {
        crate::device::DeviceSession::run(self, entry, inputs)
    }
}

/// A step package with its weights, ready to generate.
#[derive(Debug)]
pub struct Generator<S: StepSession = Session> {
    session: S,
    vocab: usize,
    context: u64,
    /// The program takes `position_ids` / `attention_mask` (models with attention).
    takes_positions: bool,
    takes_mask: bool,
    /// The program takes one token per call (recurrent cells): prompts go in token by
    /// token.
    one_token: bool,
    /// Rows may be left-padded (no recurrent state would carry the padding).
    left_padding: bool,
    /// An encoder-decoder: the `encode` program whose outputs fill the session's
    /// cross-attention states.
    encoder: Option<S>,
    needs_encoder: bool,
}

/// The directory of the step program of the package in `dir`: `dir` itself when it has a
/// `decode` entry of its own, else the subpackage its `decode` entry names.
pub fn step_package_dir(dir: &Path) -> Result<std::path::PathBuf, RuntimeError> {
    entry_dir(dir, "decode")?.ok_or_else(|| {
        RuntimeError::State(format!(
            "the package at {} cannot generate: it has no `decode` entry; only models with a decoder have a step program",
            dir.display()
        ))
    })
}

/// The directory of the package that runs `entry` of the package in `dir`, if any.
pub fn entry_dir(dir: &Path, entry: &str) -> Result<Option<std::path::PathBuf>, RuntimeError> {
    let m = Manifest::read(dir)?;
    Ok(m.entries.get(entry).map(|e| match &e.package {
        Some(sub) => dir.join(sub),
        None => dir.to_path_buf(),
    }))
}

impl Generator<Session> {
    /// Loads the step program of the package in `dir` with the weights at `weights`.
    /// An encoder-decoder's package also has an `encode` entry, loaded with the same
    /// weights.
    pub fn load(dir: &Path, weights: &Path, threads: usize) -> Result<Generator, RuntimeError> {
        let step = step_package_dir(dir)?;
        let encode = match entry_dir(dir, "encode")? {
            Some(e) => Some(e),
            None => entry_dir(&step, "encode")?,
        };
        Generator::load_programs(&step, encode.as_deref(), weights, threads)
    }

    /// The step program in `step` and, for an encoder-decoder, the encoder program in
    /// `encode`, both with the weights at `weights`.
    pub fn load_programs(
        step: &Path,
        encode: Option<&Path>,
        weights: &Path,
        threads: usize,
    ) -> Result<Generator, RuntimeError> {
        let session = |dir: &Path| -> Result<Session, RuntimeError> {
            let package = Package::load(dir)?;
            let w = Weights::open(package.manifest(), weights)?;
            Session::new(package, w, threads)
        };
        let encoder = encode.map(session).transpose()?;
        Generator::with_encoder(session(step)?, encoder)
    }
}

impl Generator<crate::device::DeviceSession> {
    /// [`Generator::load`] for a cuda package: its step (and encode) programs on GPU
    /// `gpu`, or with `sim` on the host simulator (packages built with `--sim`).
    pub fn load_cuda(
        dir: &Path,
        weights: &Path,
        sim: bool,
        gpu: usize,
    ) -> Result<Generator<crate::device::DeviceSession>, RuntimeError> {
        let step = step_package_dir(dir)?;
        let encode = match entry_dir(dir, "encode")? {
            Some(e) => Some(e),
            None => entry_dir(&step, "encode")?,
        };
        Generator::load_cuda_programs(&step, encode.as_deref(), weights, sim, gpu)
    }

    /// [`Generator::load_programs`] for cuda packages.
    pub fn load_cuda_programs(
        step: &Path,
        encode: Option<&Path>,
        weights: &Path,
        sim: bool,
        gpu: usize,
    ) -> Result<Generator<crate::device::DeviceSession>, RuntimeError> {
        use crate::device::{open_device, read_cuda_manifest, DeviceSession};
        let session = |dir: &Path| -> Result<DeviceSession, RuntimeError> {
            let m = read_cuda_manifest(dir)?;
            let device = open_device(dir, &m, sim, gpu)?;
            let w = Weights::open(&m, weights)?;
            DeviceSession::new(m, &w, device)
        };
        let encoder = encode.map(session).transpose()?;
        Generator::with_encoder(session(step)?, encoder)
    }
}

impl<S: StepSession> Generator<S> {
    /// A generator over a session of a step program and, for an encoder-decoder, one of
    /// its `encode` program.
    pub fn with_encoder(step: S, encoder: Option<S>) -> Result<Generator<S>, RuntimeError> {
        let mut g = Generator::new(step)?;
        g.encoder = encoder;
        if g.needs_encoder && g.encoder.is_none() {
            return Err(RuntimeError::State(
                "this step program reads an encoder's keys and values, but no `encode` program was given".into(),
            ));
        }
        Ok(g)
    }

    /// A generator over a session of a step package.
    pub fn new(session: S) -> Result<Generator<S>, RuntimeError> {
        let m = session.step_manifest();
        if !m.entries.contains_key("prefill") || !m.entries.contains_key("decode") {
            return Err(RuntimeError::State(format!(
                "package `{}` is not a step program (no `prefill` and `decode` entries)",
                m.model
            )));
        }
        let ids = m
            .inputs
            .iter()
            .find(|i| i.name == "input_ids")
            .ok_or_else(|| {
                RuntimeError::State(format!("step program `{}` takes no `input_ids`", m.model))
            })?;
        let one_token = ids.shape.get(1).and_then(|e| e.as_constant()) == Some(1);
        let takes = |name: &str| m.inputs.iter().any(|i| i.name == name);
        let (takes_positions, takes_mask) = (takes("position_ids"), takes("attention_mask"));
        let logits = m
            .outputs
            .iter()
            .find(|o| o.name == "logits")
            .ok_or_else(|| {
                RuntimeError::State(format!("step program `{}` has no logits", m.model))
            })?;
        let vocab = logits
            .shape
            .last()
            .and_then(|e| e.as_constant())
            .ok_or_else(|| {
                RuntimeError::State("the logits have no constant vocabulary axis".into())
            })? as usize;
        let context = m.limits.context;
        let needs_encoder = m.states.iter().any(|s| s.name == "encoder_mask");
        let left_padding = m.limits.left_padding && takes_mask;
        Ok(Generator {
            session,
            vocab,
            context,
            takes_positions,
            takes_mask,
            one_token,
            left_padding,
            encoder: None,
            needs_encoder,
        })
    }

    pub fn session(&self) -> &S {
        &self.session
    }

    pub fn session_mut(&mut self) -> &mut S {
        &mut self.session
    }

    pub fn vocab(&self) -> usize {
        self.vocab
    }

    /// An encoder-decoder (generate with [`Generator::generate_seq2seq`]).
    pub fn is_seq2seq(&self) -> bool {
        self.needs_encoder
    }

    /// Generates `opts.max_new_tokens` tokens after the prompts `ids` ([batch, T]
    /// row-major, left-padded where `mask` has zeros). `on_step` sees each step's new
    /// token of every row as soon as it is chosen.
    pub fn generate(
        &mut self,
        ids: &[i64],
        mask: Option<&[i64]>,
        batch: usize,
        opts: &GenerateOptions,
        on_step: impl FnMut(&[i64]),
    ) -> Result<Generated, RuntimeError> {
        if self.needs_encoder {
            return Err(RuntimeError::State(
                "this is an encoder-decoder: generate with `generate_seq2seq` (encoder input and decoder start)".into(),
            ));
        }
        self.run(ids, mask, batch, opts, None, on_step)
    }

    /// Either model: [`Generator::generate`] for a decoder (`decoder_ids` must be `None`);
    /// for an encoder-decoder [`Generator::generate_seq2seq`] with `ids` the encoder's input
    /// and the decoder starting from `decoder_ids`, or from `decoder_start` in every row.
    #[allow(clippy::too_many_arguments)]
    pub fn generate_any(
        &mut self,
        ids: &[i64],
        mask: Option<&[i64]>,
        batch: usize,
        decoder_ids: Option<&[i64]>,
        decoder_start: i64,
        opts: &GenerateOptions,
        on_step: impl FnMut(&[i64]),
    ) -> Result<Generated, RuntimeError> {
        if !self.needs_encoder {
            if decoder_ids.is_some() {
                return Err(RuntimeError::Input {
                    name: "decoder_input_ids".into(),
                    reason: "are for encoder-decoders; this model is decoder-only".into(),
                });
            }
            return self.generate(ids, mask, batch, opts, on_step);
        }
        let start = decoder_ids.map_or_else(|| vec![decoder_start; batch], <[i64]>::to_vec);
        self.generate_seq2seq(ids, mask, batch, &start, opts, on_step)
    }

    /// An encoder-decoder: runs the encoder once over `enc_ids` ([batch, S], padded
    /// anywhere `enc_mask` has zeros), keeps its keys and values in the session, then
    /// generates after the decoder tokens `dec_ids` ([batch, T']: the decoder start token,
    /// or more).
    pub fn generate_seq2seq(
        &mut self,
        enc_ids: &[i64],
        enc_mask: Option<&[i64]>,
        batch: usize,
        dec_ids: &[i64],
        opts: &GenerateOptions,
        on_step: impl FnMut(&[i64]),
    ) -> Result<Generated, RuntimeError> {
        let Some(encoder) = self.encoder.as_mut() else {
            return Err(RuntimeError::State(
                "this model has no encoder: generate with `generate`".into(),
            ));
        };
        if batch == 0 || enc_ids.is_empty() || !enc_ids.len().is_multiple_of(batch) {
            return Err(RuntimeError::Input {
                name: "input_ids".into(),
                reason: format!(
                    "has {} ids, not a [batch = {batch}, seq] input",
                    enc_ids.len()
                ),
            });
        }
        let s = enc_ids.len() / batch;
        let mask = enc_mask.map_or_else(|| vec![1; enc_ids.len()], <[i64]>::to_vec);
        let mut inputs = HashMap::from([
            (
                "input_ids".to_string(),
                HostTensor::i64(vec![batch, s], enc_ids.to_vec()),
            ),
            (
                "attention_mask".to_string(),
                HostTensor::i64(vec![batch, s], mask),
            ),
        ]);
        inputs.retain(|k, _| encoder.step_manifest().inputs.iter().any(|i| &i.name == k));
        let started = Instant::now();
        let encoded = encoder.run("encode", &inputs)?;
        let seconds = started.elapsed().as_secs_f64();
        let mut out = self.run(dec_ids, None, batch, opts, Some((s, encoded)), on_step)?;
        out.prefill_seconds += seconds;
        Ok(out)
    }

    fn run(
        &mut self,
        ids: &[i64],
        mask: Option<&[i64]>,
        batch: usize,
        opts: &GenerateOptions,
        encoded: Option<(usize, Vec<(String, HostTensor)>)>,
        mut on_step: impl FnMut(&[i64]),
    ) -> Result<Generated, RuntimeError> {
        let input = |reason: String| RuntimeError::Input {
            name: "input_ids".into(),
            reason,
        };
        if batch == 0 || ids.is_empty() || !ids.len().is_multiple_of(batch) {
            return Err(input(format!(
                "has {} ids, not a non-empty [batch = {batch}, seq] prompt",
                ids.len()
            )));
        }
        let t = ids.len() / batch;
        let n = opts.max_new_tokens;
        if self.context > 0 && (t + n) as u64 > self.context {
            return Err(input(format!(
                "has {t} tokens; with {n} new ones that is {} positions, past the model's context of {}",
                t + n,
                self.context
            )));
        }
        let mask: Vec<i64> = match mask {
            Some(m) => {
                check_left_padding(m, batch, t)?;
                if !self.left_padding && m.contains(&0) {
                    return Err(RuntimeError::Input {
                        name: "attention_mask".into(),
                        reason: "has padding, but this model's recurrent layers would carry the padding in their state: give rows of equal length".into(),
                    });
                }
                m.to_vec()
            }
            None => vec![1; ids.len()],
        };
        if let Decoding::Sample(s) = opts.decoding {
            if !(s.temperature > 0.0 && s.temperature.is_finite()) {
                return Err(RuntimeError::Usage(format!(
                    "temperature must be positive, got {}",
                    s.temperature
                )));
            }
            if !(s.top_p > 0.0 && s.top_p <= 1.0) {
                return Err(RuntimeError::Usage(format!(
                    "top-p must lie in (0, 1], got {}",
                    s.top_p
                )));
            }
        }
        let vocab = self.vocab;
        let mut tokens: Vec<Vec<i64>> = ids.chunks(t).map(<[i64]>::to_vec).collect();
        let mut rows_mask: Vec<Vec<i64>> = mask.chunks(t).map(<[i64]>::to_vec).collect();
        // Real tokens so far per row: the next real token's position.
        let mut count: Vec<i64> = rows_mask.iter().map(|r| r.iter().sum()).collect();
        let positions: Vec<i64> = rows_mask
            .iter()
            .flat_map(|r| {
                let mut c = 0;
                r.iter()
                    .map(move |&m| {
                        c += m;
                        if m == 1 {
                            c - 1
                        } else {
                            0
                        }
                    })
                    .collect::<Vec<_>>()
            })
            .collect();
        let mut out = Generated {
            batch,
            len: t + n,
            tokens: Vec::new(),
            logits: opts
                .save_logits
                .then(|| Vec::with_capacity(batch * n * vocab)),
            vocab,
            prefill_seconds: 0.0,
            decode_seconds: 0.0,
            decode_steps: 0,
            decode_rows: 0,
            state_bytes: 0,
        };
        if n == 0 {
            out.tokens = tokens.concat();
            return Ok(out);
        }
        // The last new token is never fed back: the caches hold t + n − 1 tokens at most.
        let capacity = (t + n - 1) as u64;
        out.state_bytes = match &encoded {
            None => self.session.reset_state(batch as u64, capacity)?,
            Some((s, outputs)) => {
                let bytes = self.session.reset_state_at(&[
                    ("batch", batch as u64),
                    (crate::manifest::KV_SEQ, capacity),
                    ("src_seq", *s as u64),
                ])?;
                for (name, t) in outputs {
                    match &t.data {
                        HostData::F32(v) => self.session.set_state(name, v)?,
                        _ => {
                            return Err(RuntimeError::State(format!(
                                "the encoder's `{name}` is not f32"
                            )))
                        }
                    }
                }
                bytes
            }
        };
        let started = Instant::now();
        let mut logits = if self.one_token {
            // One token per call: the states advance through the prompt.
            let column = |v: &[i64], j: usize| -> Vec<i64> { v.chunks(t).map(|r| r[j]).collect() };
            let mut last = Vec::new();
            for j in 0..t {
                let kv_mask: Vec<i64> = mask.chunks(t).flat_map(|r| r[..=j].to_vec()).collect();
                last = self.step(
                    "prefill",
                    batch,
                    column(ids, j),
                    column(&positions, j),
                    kv_mask,
                    1,
                    j + 1,
                )?;
            }
            last
        } else {
            self.step(
                "prefill",
                batch,
                ids.to_vec(),
                positions,
                mask.clone(),
                t,
                t,
            )?
        };
        out.prefill_seconds = started.elapsed().as_secs_f64();

        let mut rng = Rng::new(match opts.decoding {
            Decoding::Sample(s) => s.seed,
            Decoding::Greedy => 0,
        });
        let mut done = vec![false; batch];
        // The rows the session still computes (all, until finished ones are dropped).
        let mut active: Vec<usize> = (0..batch).collect();
        // Saved logits per row ([n, vocab] each), laid out [batch, n, vocab] at the end.
        let mut per_row: Vec<Vec<f32>> = vec![Vec::new(); batch];
        let mut chosen = vec![opts.pad; batch];
        let mut scratch = Vec::with_capacity(vocab);
        for step in 0..n {
            for (i, &r) in active.iter().enumerate() {
                let row = &logits[i * vocab..(i + 1) * vocab];
                if opts.save_logits {
                    per_row[r].extend_from_slice(row);
                }
                chosen[r] = if done[r] {
                    opts.pad
                } else {
                    let tok = match opts.decoding {
                        Decoding::Greedy => argmax(row),
                        Decoding::Sample(s) => sample(row, &s, &mut rng, &mut scratch),
                    } as i64;
                    if opts.eos.contains(&tok) {
                        done[r] = true;
                    }
                    tok
                };
            }
            for (r, row) in tokens.iter_mut().enumerate() {
                if !active.contains(&r) {
                    chosen[r] = opts.pad;
                }
                row.push(chosen[r]);
            }
            on_step(&chosen);
            if step + 1 == n {
                break;
            }
            if done.iter().all(|&d| d) {
                // Every row has ended: the rest is padding (and zero logits), no more
                // model calls.
                for row in &mut tokens {
                    row.resize(t + n, opts.pad);
                }
                if opts.save_logits {
                    for row in &mut per_row {
                        row.resize(n * vocab, 0.0);
                    }
                }
                break;
            }
            // Rows that ended stop costing work: their state rows are dropped (unless
            // their logits are being saved, which needs them computed).
            if !opts.save_logits {
                let still: Vec<usize> = (0..active.len()).filter(|&i| !done[active[i]]).collect();
                if still.len() < active.len() && self.session.keep_rows(&still)? {
                    active = still.iter().map(|&i| active[i]).collect();
                }
            }
            let kv = t + step + 1;
            let mut pos = Vec::with_capacity(active.len());
            let mut full_mask = Vec::with_capacity(active.len() * kv);
            for &r in &active {
                pos.push(count[r]);
                count[r] += 1;
                rows_mask[r].push(1);
                full_mask.extend_from_slice(&rows_mask[r]);
            }
            let ids: Vec<i64> = active.iter().map(|&r| chosen[r]).collect();
            let started = Instant::now();
            logits = self.step("decode", active.len(), ids, pos, full_mask, 1, kv)?;
            out.decode_seconds += started.elapsed().as_secs_f64();
            out.decode_steps += 1;
            out.decode_rows += active.len();
        }
        if let Some(l) = &mut out.logits {
            for row in per_row {
                l.extend_from_slice(&row);
            }
        }
        out.tokens = tokens.concat();
        Ok(out)
    }

    /// One call of the step program: `seq` tokens per row, `kv` tokens in the caches
    /// after it. Returns the last position's logits, [batch, vocab].
    #[allow(clippy::too_many_arguments)]
    fn step(
        &mut self,
        entry: &str,
        batch: usize,
        ids: Vec<i64>,
        positions: Vec<i64>,
        mask: Vec<i64>,
        seq: usize,
        kv: usize,
    ) -> Result<Vec<f32>, RuntimeError> {
        let mut inputs = HashMap::from([(
            "input_ids".to_string(),
            HostTensor::i64(vec![batch, seq], ids),
        )]);
        if self.takes_positions {
            inputs.insert(
                "position_ids".to_string(),
                HostTensor::i64(vec![batch, seq], positions),
            );
        }
        if self.takes_mask {
            inputs.insert(
                "attention_mask".to_string(),
                HostTensor::i64(vec![batch, kv], mask),
            );
        }
        let outputs = self.session.run(entry, &inputs)?;
        let logits = outputs
            .into_iter()
            .find(|(n, _)| n == "logits")
            .ok_or_else(|| RuntimeError::State("the step program returned no logits".into()))?
            .1;
        match logits.data {
            HostData::F32(v) if v.len() == batch * self.vocab => Ok(v),
            _ => Err(RuntimeError::State(format!(
                "the step program's logits have shape {:?}, expected [{batch}, 1, {}]",
                logits.shape, self.vocab
            ))),
        }
    }
}

/// Every row is zeros then ones (left padding) with at least one real token.
fn check_left_padding(mask: &[i64], batch: usize, t: usize) -> Result<(), RuntimeError> {
    let bad = |reason: String| RuntimeError::Input {
        name: "attention_mask".into(),
        reason,
    };
    if mask.len() != batch * t {
        return Err(bad(format!(
            "has {} values, expected [{batch}, {t}] like input_ids",
            mask.len()
        )));
    }
    for (r, row) in mask.chunks(t).enumerate() {
        if let Some(&v) = row.iter().find(|&&v| v != 0 && v != 1) {
            return Err(bad(format!("row {r} holds {v}; a mask holds 0 and 1")));
        }
        if row.iter().all(|&v| v == 0) {
            return Err(bad(format!("row {r} has no real token")));
        }
        if let Some(p) = row.windows(2).position(|w| w[0] == 1 && w[1] == 0) {
            return Err(bad(format!(
                "row {r} has padding at position {} after a real token: generation needs left padding (pads first)",
                p + 1
            )));
        }
    }
    Ok(())
}

/// The index of the first largest value (NaN never wins).
pub fn argmax(row: &[f32]) -> usize {
    let mut best = 0;
    for (i, &v) in row.iter().enumerate() {
        if v > row[best] || row[best].is_nan() && !v.is_nan() {
            best = i;
        }
    }
    best
}

/// Draws a token: logits / temperature, keep the top k (ties with the k-th kept), keep
/// the smallest set of most likely tokens whose probability reaches `top_p` (Hugging
/// Face's rule: drop tokens whose cumulative mass, counted from the least likely, is at
/// most 1 − p; the most likely token always stays), then sample the softmax of the rest.
pub fn sample(row: &[f32], s: &Sampling, rng: &mut Rng, sorted: &mut Vec<(f32, usize)>) -> usize {
    sorted.clear();
    sorted.extend(
        row.iter()
            .enumerate()
            .filter(|(_, v)| !v.is_nan())
            .map(|(i, &v)| (v / s.temperature, i)),
    );
    if sorted.is_empty() {
        return 0;
    }
    // Largest first; equal logits in index order, so the draw is reproducible.
    sorted.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)));
    if s.top_k > 0 && s.top_k < sorted.len() {
        let kth = sorted[s.top_k - 1].0;
        let keep = sorted.iter().take_while(|(v, _)| *v >= kth).count();
        sorted.truncate(keep);
    }
    let max = sorted[0].0 as f64;
    let weights: Vec<f64> = sorted
        .iter()
        .map(|(v, _)| (*v as f64 - max).exp())
        .collect();
    let total: f64 = weights.iter().sum();
    let mut keep = sorted.len();
    if s.top_p < 1.0 {
        // Cumulative mass from the least likely upwards; drop while ≤ 1 − p.
        let mut acc = 0.0;
        let limit = (1.0 - s.top_p as f64) * total;
        keep = sorted.len();
        for i in (1..sorted.len()).rev() {
            acc += weights[i];
            if acc <= limit {
                keep = i;
            } else {
                break;
            }
        }
    }
    let total: f64 = weights[..keep].iter().sum();
    let mut u = rng.next_f64() * total;
    for i in 0..keep {
        u -= weights[i];
        if u < 0.0 {
            return sorted[i].1;
        }
    }
    sorted[keep - 1].1
}

/// A small seeded generator (xoshiro256**, seeded by splitmix64): the same seed gives the
/// same draws on every machine.
#[derive(Debug, Clone)]
pub struct Rng([u64; 4]);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        let mut x = seed;
        let mut next = || {
            x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
            let mut z = x;
            z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
            z ^ (z >> 31)
        };
        Rng([next(), next(), next(), next()])
    }

    /// The generator's state (a checkpoint keeps it to continue the same draws).
    pub fn state(&self) -> [u64; 4] {
        self.0
    }

    /// A generator continuing from [`Rng::state`].
    pub fn from_state(s: [u64; 4]) -> Rng {
        Rng(s)
    }

    /// Uniform in `0..n` (n > 0).
    pub fn below(&mut self, n: u64) -> u64 {
        ((self.next_u64() as u128 * n as u128) >> 64) as u64
    }

    pub fn next_u64(&mut self) -> u64 {
        let s = &mut self.0;
        let out = s[1].wrapping_mul(5).rotate_left(7).wrapping_mul(9);
        let t = s[1] << 17;
        s[2] ^= s[0];
        s[3] ^= s[1];
        s[1] ^= s[2];
        s[0] ^= s[3];
        s[2] ^= t;
        s[3] = s[3].rotate_left(45);
        out
    }

    /// Uniform in [0, 1).
    pub fn next_f64(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(temperature: f32, top_k: usize, top_p: f32) -> Sampling {
        Sampling {
            temperature,
            top_k,
            top_p,
            seed: 7,
        }
    }

    #[test]
    fn argmax_takes_the_first_largest() {
        assert_eq!(argmax(&[1.0, 3.0, 3.0, -1.0]), 1);
        assert_eq!(argmax(&[f32::NAN, 0.5, 0.2]), 1);
    }

    #[test]
    fn top_k_and_top_p_never_emit_excluded_tokens() {
        let row = [2.0f32, 1.0, 0.5, 3.0, -1.0, 2.5];
        let mut rng = Rng::new(1);
        let mut scratch = Vec::new();
        for _ in 0..2000 {
            // top-2: tokens 3 (3.0) and 5 (2.5) only.
            let t = sample(&row, &s(1.0, 2, 1.0), &mut rng, &mut scratch);
            assert!(t == 3 || t == 5, "top-k emitted {t}");
        }
        // softmax mass: p(3) ≈ 0.43, p(5) ≈ 0.26, p(0) ≈ 0.16: top-p 0.6 keeps {3, 5}.
        for _ in 0..2000 {
            let t = sample(&row, &s(1.0, 0, 0.6), &mut rng, &mut scratch);
            assert!(t == 3 || t == 5, "top-p emitted {t}");
        }
        // A tiny top-p keeps the most likely token alone.
        for _ in 0..100 {
            assert_eq!(sample(&row, &s(1.0, 0, 1e-6), &mut rng, &mut scratch), 3);
        }
    }

    #[test]
    fn seeded_sampling_repeats() {
        let row: Vec<f32> = (0..50).map(|i| ((i * 37) % 11) as f32 * 0.3).collect();
        let draw = |seed| {
            let mut rng = Rng::new(seed);
            let mut scratch = Vec::new();
            (0..64)
                .map(|_| sample(&row, &s(0.8, 0, 1.0), &mut rng, &mut scratch))
                .collect::<Vec<_>>()
        };
        assert_eq!(draw(42), draw(42));
        assert_ne!(draw(42), draw(43));
    }

    /// Frequencies of temperature sampling against the softmax: a chi-square test with a
    /// fixed seed (8 categories, 7 degrees of freedom; 24.3 is the 0.999 quantile).
    #[test]
    fn temperature_frequencies_match_the_softmax() {
        let row = [0.3f32, -0.2, 1.1, 0.0, 0.7, -1.5, 0.9, 0.2];
        for temperature in [0.5f32, 1.0, 2.0] {
            let mut rng = Rng::new(2024);
            let mut scratch = Vec::new();
            let draws = 40_000;
            let mut counts = [0usize; 8];
            for _ in 0..draws {
                counts[sample(&row, &s(temperature, 0, 1.0), &mut rng, &mut scratch)] += 1;
            }
            let e: Vec<f64> = row
                .iter()
                .map(|&v| (v as f64 / temperature as f64).exp())
                .collect();
            let z: f64 = e.iter().sum();
            let chi2: f64 = counts
                .iter()
                .zip(&e)
                .map(|(&c, &w)| {
                    let want = draws as f64 * w / z;
                    (c as f64 - want).powi(2) / want
                })
                .sum();
            assert!(
                chi2 < 24.3,
                "T = {temperature}: chi² = {chi2:.1}, counts {counts:?}"
            );
        }
    }

    #[test]
    fn left_padding_is_checked() {
        assert!(check_left_padding(&[0, 1, 1, 1, 1, 1], 2, 3).is_ok());
        let err = check_left_padding(&[1, 0, 1], 1, 3)
            .unwrap_err()
            .to_string();
        assert!(err.contains("left padding"), "{err}");
        assert!(check_left_padding(&[0, 0, 0], 1, 3).is_err());
        assert!(check_left_padding(&[0, 2, 1], 1, 3).is_err());
    }
}

//! `archc bench FILE[:MODEL] --batch B --seq T --mode prefill [--json]`: builds the model
//! (or takes it from the cache), loads random weights, runs warm-up passes, then times
//! forward passes and reports the median and spread, tokens per second and the peak
//! resident memory of the process. `--mode decode` times generation, `--mode train` an
//! AdamW step; `--backend cuda` each of them on an NVIDIA GPU.

use super::{device_of, load_model};
use crate::package::{build, BuildOptions};
use arch_dsl::spec::Family;
use arch_runtime::device::DeviceSession;
use arch_runtime::generate::{Generator, StepSession};
use arch_runtime::train::{TrainSession, Trainer};
use arch_runtime::{HostTensor, Package, Session, Weights};
use std::collections::HashMap;
use std::process::ExitCode;
use std::time::Instant;

pub struct BenchArgs<'a> {
    pub target: &'a str,
    pub batch: usize,
    pub seq: usize,
    pub mode: &'a str,
    pub json: bool,
    pub threads: usize,
    pub warmup: usize,
    pub reps: usize,
    /// cpu, cuda or cuda-sim.
    pub backend: &'a str,
    /// Print the time of each kind of kernel (and the slowest kernels) after the runs.
    pub profile: bool,
    /// Decode mode: prompt length and new tokens per row.
    pub prompt: usize,
    pub new: usize,
    /// Real weights instead of random ones.
    pub weights: Option<&'a std::path::Path>,
    /// Matmul weights kept as blocks of this type (`--quant`).
    pub quant: Option<&'a str>,
    /// Integer dot products over K-quant weights (`--int-dots`).
    pub int_dots: bool,
    /// The matmuls' operand type on a cuda backend (`--dtype`).
    pub dtype: &'a str,
}

/// The build options of a benchmark: the host's, with the weights' blocks (a GGUF file)
/// or `--quant`'s kept quantized (on either backend); a cuda package (for sm_80, which
/// sm_90 runs too) on a cuda backend.
fn bench_options(
    spec: &arch_dsl::spec::ArchSpec,
    args: &BenchArgs,
) -> Result<BuildOptions, String> {
    let mut opts = match args.weights {
        Some(w) => BuildOptions::for_weights(spec, w)?,
        None => BuildOptions::host()?,
    };
    if let Some(q) = args.quant {
        if !opts.quant.is_empty() {
            return Err(
                "--quant quantizes f32 weights; a GGUF file's blocks are used as stored".into(),
            );
        }
        opts.quantize_all(spec, q)?;
    }
    if let Some(sim) = device_of(args.backend)? {
        opts.cuda = Some(80);
        opts.sim = sim;
    }
    if args.int_dots {
        opts.set_int_dots()?;
    }
    opts.set_dtype(spec, args.dtype)?;
    Ok(opts)
}

/// A session of the cuda package in `dir` on GPU 0 (or the simulator) with the
/// benchmark's weights.
fn device_session(
    dir: &std::path::Path,
    weights: Option<&std::path::Path>,
    sim: bool,
) -> Result<DeviceSession, String> {
    use arch_runtime::device::{open_device, read_cuda_manifest};
    let m = read_cuda_manifest(dir).map_err(|e| e.to_string())?;
    let device = open_device(dir, &m, sim, 0).map_err(|e| e.to_string())?;
    let w = match weights {
        Some(p) => Weights::open(&m, p),
        None => Weights::random(&m, 1),
    }
    .map_err(|e| e.to_string())?;
    DeviceSession::new(m, &w, device).map_err(|e| e.to_string())
}

/// What a forward benchmark runs: a CPU session or a device session.
enum Forward {
    Cpu(Box<Session>),
    Device(Box<DeviceSession>),
}

impl Forward {
    /// One forward pass; a device's outputs stay on it (as a framework's on the GPU).
    fn run(&mut self, inputs: &HashMap<String, HostTensor>) -> Result<(), String> {
        match self {
            Forward::Cpu(s) => s.run("forward", inputs).map(|_| ()),
            Forward::Device(s) => s.run_on_device("forward", inputs),
        }
        .map_err(|e| e.to_string())
    }

    /// Threads (the CPU's; 0 on a device) and what runs it.
    fn describe(&self) -> (usize, String) {
        match self {
            Forward::Cpu(s) => (s.threads(), format!("{} threads", s.threads())),
            Forward::Device(s) => (0, s.describe()),
        }
    }
}

pub fn run(args: &BenchArgs) -> ExitCode {
    match bench(args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Deterministic token ids in `0..vocab` (a 64-bit LCG).
fn ids(n: usize, vocab: u64, seed: u64) -> Vec<i64> {
    let mut s = seed
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    (0..n)
        .map(|_| {
            s = s
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            ((s >> 33) % vocab) as i64
        })
        .collect()
}

/// Timed runs (milliseconds each) of `tokens` tokens, and the process's peak memory.
struct Timing {
    median: f64,
    min: f64,
    max: f64,
    runs: usize,
    tokens_per_s: f64,
    rss: f64,
}

impl Timing {
    fn of(times: &mut [f64], tokens: usize) -> Timing {
        times.sort_by(f64::total_cmp);
        let n = times.len();
        let median = if n % 2 == 1 {
            times[n / 2]
        } else {
            (times[n / 2 - 1] + times[n / 2]) / 2.0
        };
        Timing {
            median,
            min: times[0],
            max: times[n - 1],
            runs: n,
            tokens_per_s: tokens as f64 / (median / 1e3),
            rss: peak_rss_mib().unwrap_or(0.0),
        }
    }

    /// One JSON object on stdout: the run's description, the timing, `extra` fields.
    #[allow(clippy::too_many_arguments)]
    fn print_json(
        &self,
        model: &str,
        batch: usize,
        seq: usize,
        mode: &str,
        threads: usize,
        params: usize,
        built: &crate::package::Built,
        extra: &[(&str, f64)],
    ) {
        let mut v = serde_json::json!({
            "model": model, "batch": batch, "seq": seq, "mode": mode, "threads": threads,
            "params": params, "median_ms": self.median, "min_ms": self.min,
            "max_ms": self.max, "tokens_per_s": self.tokens_per_s, "reps": self.runs,
            "build_s": built.seconds, "cached": built.cached, "peak_rss_mib": self.rss,
        });
        for (k, x) in extra {
            v[*k] = serde_json::json!(x);
        }
        println!("{v}");
    }
}

/// The process's peak resident set, from /proc (Linux), in MiB.
pub fn peak_rss_mib() -> Option<f64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb / 1024.0)
}

fn bench(args: &BenchArgs) -> Result<(), String> {
    if args.mode == "decode" {
        return bench_decode(args);
    }
    if args.mode == "train" {
        return bench_train(args);
    }
    if args.mode != "prefill" {
        return Err(format!(
            "unknown `--mode {}`: prefill (a forward pass over the prompt), decode (generation) or train (an optimizer step)",
            args.mode
        ));
    }
    if args.batch == 0 || args.seq == 0 || args.reps == 0 {
        return Err("--batch, --seq and --reps must be at least 1".into());
    }
    let device = device_of(args.backend)?;
    if device.is_some() && args.profile {
        return Err("--profile times the cpu backend's kernels".into());
    }
    let Some(spec) = load_model(args.target) else {
        return Err("the spec has errors".into());
    };
    let mut opts = bench_options(&spec, args)?;
    // Time up to the logits, as a language model is used; models without an LM head
    // (a bare encoder) up to every output they have.
    let outputs = crate::expand::forward(&spec, &crate::expand::ExpandOptions::default())?
        .outputs
        .iter()
        .map(|(n, _)| n.clone())
        .collect::<Vec<_>>();
    if outputs.iter().any(|n| n == "logits") {
        opts.outputs = vec!["logits".into()];
    }
    opts.verbose = !args.json;
    let built = build(&spec, &opts, None)?;
    let mut session = match device {
        None => {
            let package = Package::load(&built.dir).map_err(|e| e.to_string())?;
            let weights = load_weights(&package, args.weights)?;
            let s = Session::new(package, weights, args.threads).map_err(|e| e.to_string())?;
            Forward::Cpu(Box::new(s))
        }
        Some(sim) => Forward::Device(Box::new(device_session(&built.dir, args.weights, sim)?)),
    };
    let params: usize = match &session {
        Forward::Cpu(s) => &s.package().manifest().params,
        Forward::Device(s) => &s.manifest().params,
    }
    .iter()
    .map(|p| p.shape.iter().product::<usize>())
    .sum();
    let (b, t) = (args.batch, args.seq);
    let mut inputs = HashMap::new();
    inputs.insert(
        "input_ids".to_string(),
        HostTensor::i64(vec![b, t], ids(b * t, spec.vocab, 7)),
    );
    if spec.family == Family::EncoderDecoder {
        inputs.insert(
            "decoder_input_ids".to_string(),
            HostTensor::i64(vec![b, t], ids(b * t, spec.vocab, 11)),
        );
    }
    for _ in 0..args.warmup {
        session.run(&inputs)?;
    }
    if let Forward::Cpu(s) = &mut session {
        s.set_profiling(args.profile);
    }
    let mut times = Vec::with_capacity(args.reps);
    for _ in 0..args.reps {
        let start = Instant::now();
        session.run(&inputs)?;
        times.push(start.elapsed().as_secs_f64() * 1e3);
    }
    if let (Forward::Cpu(s), true) = (&session, args.profile) {
        print_profile(&s.profile(), args.reps);
    }
    let r = Timing::of(&mut times, b * t);
    let (threads, on) = session.describe();
    if args.json {
        r.print_json(&spec.name, b, t, "prefill", threads, params, &built, &[]);
    } else {
        println!(
            "{} batch {b} × seq {t}, {on}: median {:.2} ms (min {:.2}, max {:.2}, {} runs), {:.0} tokens/s, peak RSS {:.0} MiB",
            spec.name,
            r.median,
            r.min,
            r.max,
            r.runs,
            r.tokens_per_s,
            r.rss
        );
    }
    Ok(())
}

/// `--mode train`: AdamW steps (forward, loss, backward, update) on `batch` rows of `seq`
/// random tokens, next-token labels, from fresh weights (`archc train --seed 0`'s);
/// reports the median step, tokens per second and the peak resident memory.
fn bench_train(args: &BenchArgs) -> Result<(), String> {
    use arch_runtime::train::Hyper;
    let spec = load_model(args.target).ok_or("the spec has errors")?;
    let device = device_of(args.backend)?;
    if device.is_some() && args.profile {
        return Err("--profile times the cpu backend's kernels".into());
    }
    if args.quant.is_some() {
        return Err("training keeps its parameters in f32: `--quant` times inference".into());
    }
    if args.dtype != "f32" {
        return Err("training keeps its parameters and products in f32 (no --dtype)".into());
    }
    if args.batch == 0 || args.seq == 0 || args.reps == 0 {
        return Err("--batch, --seq and --reps must be at least 1".into());
    }
    if args.seq as u64 > spec.context {
        return Err(format!(
            "--seq {} is longer than the model's context ({})",
            args.seq, spec.context
        ));
    }
    let labels = crate::train::label_inputs(&spec)?;
    if labels.iter().any(|(n, _)| *n != "labels") || spec.family != Family::DecoderOnly {
        return Err("`--mode train` times decoder-only next-token training".into());
    }
    let params = crate::params::init(&spec, 0);
    let n_params: usize = params.values().map(Vec::len).sum();
    let hyper = Hyper::adamw(1e-4, (args.warmup + args.reps) as u64);
    let opts = crate::train::TrainOptions::default();
    match device {
        None => {
            let (session, built) =
                crate::train::train_session(&spec, opts, args.threads, !args.json)?;
            let trainer = Trainer::new(session, &params, hyper).map_err(|e| e.to_string())?;
            drop(params);
            train_runs(args, &spec, trainer, &built, n_params)
        }
        Some(sim) => {
            let (session, built) =
                crate::train::train_device_session(&spec, opts, sim, !args.json)?;
            let trainer = Trainer::new(session, &params, hyper).map_err(|e| e.to_string())?;
            drop(params);
            train_runs(args, &spec, trainer, &built, n_params)
        }
    }
}

/// What a benchmark asks of a session beyond running it: kernel profiles (the CPU's) and
/// a description of what runs it.
trait Timed {
    fn set_profiling(&mut self, on: bool);
    fn profile_rows(&self) -> Vec<(String, String, f64, u64)>;
    /// Threads (0 on a device) and, in words, what runs the session.
    fn runs_on(&self) -> (usize, String);
}

impl Timed for Session {
    fn set_profiling(&mut self, on: bool) {
        Session::set_profiling(self, on)
    }
    fn profile_rows(&self) -> Vec<(String, String, f64, u64)> {
        self.profile()
    }
    fn runs_on(&self) -> (usize, String) {
        (self.threads(), format!("{} threads", self.threads()))
    }
}

impl Timed for DeviceSession {
    fn set_profiling(&mut self, _on: bool) {}
    fn profile_rows(&self) -> Vec<(String, String, f64, u64)> {
        Vec::new()
    }
    fn runs_on(&self) -> (usize, String) {
        (0, self.describe())
    }
}

/// The timed steps of `--mode train`.
fn train_runs<S: TrainSession + Timed>(
    args: &BenchArgs,
    spec: &arch_dsl::spec::ArchSpec,
    mut trainer: Trainer<S>,
    built: &crate::package::Built,
    n_params: usize,
) -> Result<(), String> {
    let (b, t) = (args.batch, args.seq);
    let x = ids(b * t, spec.vocab, 7);
    let batch: HashMap<String, HostTensor> = [
        (
            "input_ids".to_string(),
            HostTensor::i64(vec![b, t], x.clone()),
        ),
        ("labels".to_string(), HostTensor::i64(vec![b, t], x)),
    ]
    .into();
    let micro = [batch];
    for _ in 0..args.warmup {
        trainer.step(&micro).map_err(|e| e.to_string())?;
    }
    trainer.session_mut().set_profiling(args.profile);
    let mut times = Vec::with_capacity(args.reps);
    let mut loss = 0.0;
    for _ in 0..args.reps {
        let start = Instant::now();
        loss = trainer.step(&micro).map_err(|e| e.to_string())?.loss;
        times.push(start.elapsed().as_secs_f64() * 1e3);
    }
    if args.profile {
        print_profile(&trainer.session().profile_rows(), args.reps);
    }
    let r = Timing::of(&mut times, b * t);
    let (threads, on) = trainer.session().runs_on();
    if args.json {
        r.print_json(
            &spec.name,
            b,
            t,
            "train",
            threads,
            n_params,
            built,
            &[("loss", loss)],
        );
    } else {
        println!(
            "{} train step, batch {b} × seq {t}, {on}: median {:.1} ms (min {:.1}, max {:.1}, {} steps), {:.0} tokens/s, loss {loss:.3}, peak RSS {:.0} MiB",
            spec.name,
            r.median,
            r.min,
            r.max,
            r.runs,
            r.tokens_per_s,
            r.rss
        );
    }
    Ok(())
}

/// The weights a benchmark runs: the file given, or deterministic random ones.
fn load_weights(package: &Package, path: Option<&std::path::Path>) -> Result<Weights, String> {
    match path {
        Some(p) => Weights::open(package.manifest(), p),
        None => Weights::random(package.manifest(), 1),
    }
    .map_err(|e| e.to_string())
}

/// `--mode decode`: generation of `new` tokens after a `prompt`-token prompt per row,
/// greedy, no early stop. Reports new tokens per second over the whole batch with the
/// prefill excluded (`tokens_per_s`), the time per decode step (`ms_per_token`) and the
/// prefill; medians over the runs.
fn bench_decode(args: &BenchArgs) -> Result<(), String> {
    if args.batch == 0 || args.prompt == 0 || args.new < 2 || args.reps == 0 {
        return Err("--batch, --prompt and --reps must be at least 1, --new at least 2".into());
    }
    let Some(spec) = load_model(args.target) else {
        return Err("the spec has errors".into());
    };
    if let Some(why) = crate::expand::step_unsupported(&spec) {
        return Err(why);
    }
    let device = device_of(args.backend)?;
    if device.is_some() && args.profile {
        return Err("--profile times the cpu backend's kernels".into());
    }
    let mut built_s = 0.0;
    let mut package = |kind| -> Result<std::path::PathBuf, String> {
        let opts = BuildOptions {
            kind,
            verbose: !args.json,
            ..bench_options(&spec, args)?
        };
        let built = build(&spec, &opts, None)?;
        built_s += built.seconds;
        Ok(built.dir)
    };
    let step = package(crate::package::PackageKind::Step)?;
    let encoder = match spec.encoder {
        Some(_) => Some(package(crate::package::PackageKind::Encode)?),
        None => None,
    };
    match device {
        None => {
            let session = |dir: &std::path::Path| -> Result<Session, String> {
                let package = Package::load(dir).map_err(|e| e.to_string())?;
                let weights = load_weights(&package, args.weights)?;
                Session::new(package, weights, args.threads).map_err(|e| e.to_string())
            };
            let encoder = encoder.as_deref().map(session).transpose()?;
            let g = Generator::with_encoder(session(&step)?, encoder).map_err(|e| e.to_string())?;
            decode_runs(args, &spec, g, built_s)
        }
        Some(sim) => {
            let session = |dir: &std::path::Path| device_session(dir, args.weights, sim);
            let encoder = encoder.as_deref().map(session).transpose()?;
            let g = Generator::with_encoder(session(&step)?, encoder).map_err(|e| e.to_string())?;
            decode_runs(args, &spec, g, built_s)
        }
    }
}

/// The timed generations of `--mode decode`.
fn decode_runs<S: StepSession + Timed>(
    args: &BenchArgs,
    spec: &arch_dsl::spec::ArchSpec,
    mut generator: Generator<S>,
    built_s: f64,
) -> Result<(), String> {
    use arch_runtime::generate::GenerateOptions;
    let (threads, on) = generator.session().runs_on();
    let weight_bytes: u64 = generator
        .session()
        .step_manifest()
        .params
        .iter()
        .map(|p| p.bytes().unwrap_or(0) as u64)
        .sum();
    let (b, p, n) = (args.batch, args.prompt, args.new);
    let prompt = ids(b * p, spec.vocab, 7);
    let opts = GenerateOptions::greedy(n);
    let run = |g: &mut Generator<S>| {
        g.generate_any(&prompt, None, b, None, 0, &opts, |_| {})
            .map_err(|e| e.to_string())
    };
    for _ in 0..args.warmup.min(1) {
        run(&mut generator)?;
    }
    let (mut per_token, mut prefill, mut state) = (Vec::new(), Vec::new(), 0);
    for rep in 0..args.reps {
        if rep + 1 == args.reps && args.profile {
            generator.session_mut().set_profiling(true);
        }
        let out = run(&mut generator)?;
        per_token.push(out.decode_seconds * 1e3 / out.decode_steps.max(1) as f64);
        prefill.push(out.prefill_seconds * 1e3);
        state = out.state_bytes;
    }
    let median = |v: &mut Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    if args.profile {
        eprintln!("(per call of the step program: prefill calls and decode steps alike)");
        // Every call of the step program runs each top-level kernel once.
        let rows = generator.session().profile_rows();
        let calls = rows.first().map_or(1, |r| r.3.max(1) as usize);
        print_profile(&rows, calls);
    }
    let ms_per_token = median(&mut per_token);
    let prefill_ms = median(&mut prefill);
    let tokens_per_s = b as f64 / (ms_per_token / 1e3);
    let rss = peak_rss_mib().unwrap_or(0.0);
    if args.json {
        println!(
            "{{\"model\": \"{}\", \"batch\": {b}, \"prompt\": {p}, \"new\": {n}, \"mode\": \"decode\", \"threads\": {threads}, \"weights\": \"{}\", \"weight_bytes\": {weight_bytes}, \"tokens_per_s\": {tokens_per_s:.1}, \"ms_per_token\": {ms_per_token:.4}, \"prefill_ms\": {prefill_ms:.3}, \"state_bytes\": {state}, \"reps\": {}, \"build_s\": {built_s:.3}, \"peak_rss_mib\": {rss:.1}}}",
            spec.name,
            if args.weights.is_some() { "file" } else { "random" },
            args.reps,
        );
    } else {
        println!(
            "{} decode, batch {b}, prompt {p}, {n} new, {on}: {tokens_per_s:.1} tokens/s ({ms_per_token:.3} ms per step), prefill {prefill_ms:.2} ms, cache {:.1} MiB, peak RSS {rss:.0} MiB",
            spec.name,
            state as f64 / (1 << 20) as f64
        );
    }
    Ok(())
}

/// Time per kernel kind and the ten slowest kernel functions, per forward pass.
fn print_profile(rows: &[(String, String, f64, u64)], reps: usize) {
    let total: f64 = rows.iter().map(|r| r.2).sum();
    let per = |s: f64| s * 1e3 / reps as f64;
    let mut kinds: Vec<(String, f64, u64)> = Vec::new();
    for (_, kind, s, n) in rows {
        match kinds.iter_mut().find(|k| &k.0 == kind) {
            Some(k) => {
                k.1 += s;
                k.2 += n;
            }
            None => kinds.push((kind.clone(), *s, *n)),
        }
    }
    kinds.sort_by(|a, b| b.1.total_cmp(&a.1));
    eprintln!("profile: {:.2} ms of kernels per forward", per(total));
    for (kind, s, n) in &kinds {
        eprintln!(
            "  {kind:<10} {:>9.2} ms {:>5.1}%  {} calls",
            per(*s),
            100.0 * s / total.max(1e-12),
            n / reps as u64
        );
    }
    let mut syms: Vec<(String, f64)> = Vec::new();
    for (sym, _, s, _) in rows {
        match syms.iter_mut().find(|k| &k.0 == sym) {
            Some(k) => k.1 += s,
            None => syms.push((sym.clone(), *s)),
        }
    }
    syms.sort_by(|a, b| b.1.total_cmp(&a.1));
    for (sym, s) in syms.iter().take(12) {
        eprintln!("  {:>9.2} ms  {sym}", per(*s));
    }
}

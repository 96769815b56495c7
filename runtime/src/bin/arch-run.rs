//! `arch-run`: package + weights + inputs (safetensors) → outputs (safetensors), with the
//! runtime only: the deployment binary, no compiler, no LLVM.
//!
//! ```text
//! arch-run PKG (--weights W | --random-weights SEED) --inputs I.safetensors --out O.safetensors
//!          [--threads N] [--entry forward] [--sim] [--gpu N] [--repeat N]
//! arch-run PKG (--weights W | --random-weights SEED) --inputs I.safetensors --out O.safetensors
//!          --max-new-tokens N [--save-logits] [--temperature T] [--top-k K] [--top-p P]
//!          [--seed S] [--eos ID]... [--pad ID] [--decoder-start ID] [--threads N]
//! ```
//!
//! With `--max-new-tokens` it generates as `archc generate` does, with the package's step
//! (and, for an encoder-decoder, encode) program: `input_ids`, optional `attention_mask`
//! and `decoder_input_ids` in; `tokens` (and `logits`) out.
//!
//! With `--train-steps N` it runs N AdamW steps of a train package (`archc build --mode
//! train`) on one batch (`--inputs`: the `train_step` entry's inputs but `hyper`), from
//! the parameters `--weights` holds (canonical or Hugging Face names), with `--lr`
//! (default 1e-3), β 0.9/0.999, ε 1e-8, weight decay 0.01 and clipping at 1.0; out: `loss`
//! and `grad_norm` [N] and every parameter after the last step (canonical names).
//!
//! A cuda package (`archc build --target cuda`) runs on GPU `--gpu N` (default 0), or with
//! `--sim` on the host simulator (a package built with `--sim`). `--repeat N` runs the
//! entry N times and prints the median time (on a device, with the outputs left in device
//! memory; one more run copies them out).

use std::borrow::Cow;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use arch_runtime::safetensors_file as file;
use arch_runtime::{HostData, HostTensor, Package, RuntimeError, Session, Weights};
use safetensors::tensor::TensorView;
use safetensors::Dtype;

const USAGE: &str = "usage: arch-run PKG (--weights W | --random-weights SEED) \
--inputs I.safetensors --out O.safetensors [--threads N] [--entry NAME] [--sim] [--gpu N] [--repeat N]
       arch-run PKG (--weights W | --random-weights SEED) --inputs I.safetensors \
--out O.safetensors --max-new-tokens N [--save-logits] [--temperature T] [--top-k K] \
[--top-p P] [--seed S] [--eos ID]... [--pad ID] [--decoder-start ID] [--threads N]
       arch-run TRAIN_PKG --weights W --inputs BATCH.safetensors --out O.safetensors \
--train-steps N [--lr LR] [--threads N] [--sim] [--gpu N]";

struct Args {
    package: PathBuf,
    weights: WeightsArg,
    inputs: PathBuf,
    out: PathBuf,
    threads: usize,
    entry: String,
    generate: Option<Generate>,
    /// A cuda package: the host simulator instead of a GPU.
    sim: bool,
    gpu: usize,
    repeat: usize,
    /// `--train-steps N` (and `--lr`).
    train: Option<(u64, f64)>,
}

/// `--max-new-tokens` and the decoding options.
#[derive(Default)]
struct Generate {
    max_new_tokens: usize,
    save_logits: bool,
    temperature: Option<f32>,
    top_k: Option<usize>,
    top_p: Option<f32>,
    seed: Option<u64>,
    eos: Vec<i64>,
    pad: Option<i64>,
    decoder_start: i64,
}

enum WeightsArg {
    File(PathBuf),
    Random(u64),
}

fn main() -> ExitCode {
    let argv: Vec<String> = std::env::args().skip(1).collect();
    if argv.iter().any(|a| a == "-h" || a == "--help") {
        println!("{USAGE}");
        return ExitCode::SUCCESS;
    }
    match parse_args(&argv).and_then(|a| run(&a)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

fn parse_args(argv: &[String]) -> Result<Args, RuntimeError> {
    let usage = |m: String| RuntimeError::Usage(format!("{m}\n{USAGE}"));
    let mut package = None;
    let (mut weights, mut random, mut inputs, mut out) = (None, None, None, None);
    let mut threads = 0usize;
    let mut entry = "forward".to_string();
    let mut gen = Generate::default();
    let mut generating = false;
    let (mut sim, mut gpu, mut repeat) = (false, 0usize, 1usize);
    let (mut train_steps, mut lr) = (None, 1e-3f64);
    let mut it = argv.iter();
    while let Some(a) = it.next() {
        let mut value = || {
            it.next()
                .cloned()
                .ok_or_else(|| usage(format!("`{a}` needs a value")))
        };
        match a.as_str() {
            "--weights" => weights = Some(PathBuf::from(value()?)),
            "--random-weights" => {
                let v = value()?;
                random = Some(v.parse::<u64>().map_err(|_| {
                    usage(format!(
                        "`--random-weights` takes a seed (an integer), not `{v}`"
                    ))
                })?);
            }
            "--inputs" => inputs = Some(PathBuf::from(value()?)),
            "--out" => out = Some(PathBuf::from(value()?)),
            "--threads" => {
                let v = value()?;
                threads = v
                    .parse()
                    .map_err(|_| usage(format!("`--threads` takes a number, not `{v}`")))?;
            }
            "--entry" => entry = value()?,
            "--sim" => sim = true,
            "--gpu" => gpu = number(a, &value()?)?,
            "--repeat" => repeat = number::<usize>(a, &value()?)?.max(1),
            "--max-new-tokens" => {
                gen.max_new_tokens = number(a, &value()?)?;
                generating = true;
            }
            "--save-logits" => gen.save_logits = true,
            "--temperature" => gen.temperature = Some(number(a, &value()?)?),
            "--top-k" => gen.top_k = Some(number(a, &value()?)?),
            "--top-p" => gen.top_p = Some(number(a, &value()?)?),
            "--seed" => gen.seed = Some(number(a, &value()?)?),
            "--eos" => gen.eos.push(number(a, &value()?)?),
            "--pad" => gen.pad = Some(number(a, &value()?)?),
            "--decoder-start" => gen.decoder_start = number(a, &value()?)?,
            "--train-steps" => train_steps = Some(number::<u64>(a, &value()?)?.max(1)),
            "--lr" => lr = number(a, &value()?)?,
            s if s.starts_with('-') => return Err(usage(format!("unknown option `{s}`"))),
            s if package.is_none() => package = Some(PathBuf::from(s)),
            s => return Err(usage(format!("unexpected argument `{s}`"))),
        }
    }
    let weights = match (weights, random) {
        (Some(w), None) => WeightsArg::File(w),
        (None, Some(seed)) => WeightsArg::Random(seed),
        (Some(_), Some(_)) => {
            return Err(usage(
                "give `--weights` or `--random-weights`, not both".into(),
            ))
        }
        (None, None) => {
            return Err(usage(
                "`--weights` (or `--random-weights`) is required".into(),
            ))
        }
    };
    Ok(Args {
        package: package.ok_or_else(|| usage("no package directory given".into()))?,
        weights,
        inputs: inputs.ok_or_else(|| usage("`--inputs` is required".into()))?,
        out: out.ok_or_else(|| usage("`--out` is required".into()))?,
        threads,
        entry,
        generate: generating.then_some(gen),
        sim,
        gpu,
        repeat,
        train: train_steps.map(|n| (n, lr)),
    })
}

/// A number-valued option.
fn number<T: std::str::FromStr>(option: &str, v: &str) -> Result<T, RuntimeError> {
    v.parse()
        .map_err(|_| RuntimeError::Usage(format!("`{option}` takes a number, not `{v}`\n{USAGE}")))
}

fn run(args: &Args) -> Result<(), RuntimeError> {
    if let Some(g) = &args.generate {
        return generate(args, g);
    }
    if let Some((steps, lr)) = args.train {
        return train(args, steps, lr);
    }
    let manifest = arch_runtime::Manifest::read(&args.package)?;
    if manifest.target.kind == "cuda" || args.sim {
        return run_cuda(args, manifest);
    }
    let package = Package::load(&args.package)?;
    let weights = open_weights(args, package.manifest())?;
    let inputs = read_inputs(&args.inputs)?;
    let mut session = Session::new(package, weights, args.threads)?;
    let outputs = timed(args.repeat, || session.run(&args.entry, &inputs))?;
    write_outputs(&args.out, &outputs)
}

/// `--train-steps`: AdamW steps of a train package on one batch, on the CPU or a device.
fn train(args: &Args, steps: u64, lr: f64) -> Result<(), RuntimeError> {
    use arch_runtime::device::{open_device, read_cuda_manifest, DeviceSession};
    use arch_runtime::train::{load_params, Hyper, Trainer};
    let WeightsArg::File(path) = &args.weights else {
        return Err(RuntimeError::Usage(
            "`--train-steps` starts from `--weights W` (canonical or Hugging Face names)".into(),
        ));
    };
    let hyper = Hyper::adamw(lr, steps);
    let batch = read_inputs(&args.inputs)?;
    let manifest = arch_runtime::Manifest::read(&args.package)?;
    if manifest.target.kind == "cuda" || args.sim {
        let m = read_cuda_manifest(&args.package)?;
        let params = load_params(&m, path)?;
        let device = open_device(&args.package, &m, args.sim, args.gpu)?;
        let weights = Weights::from_tensors(&m, Default::default())?;
        let session = DeviceSession::new(m, &weights, device)?;
        eprintln!("training on {}", session.describe());
        return train_steps(args, Trainer::new(session, &params, hyper)?, &batch);
    }
    let params = load_params(&manifest, path)?;
    let package = Package::load(&args.package)?;
    let weights = Weights::from_tensors(package.manifest(), Default::default())?;
    let session = Session::new(package, weights, args.threads)?;
    train_steps(args, Trainer::new(session, &params, hyper)?, &batch)
}

/// Runs the trainer's steps on `batch` and writes the losses, gradient norms and
/// parameters.
fn train_steps<S: arch_runtime::train::TrainSession>(
    args: &Args,
    mut trainer: arch_runtime::train::Trainer<S>,
    batch: &HashMap<String, HostTensor>,
) -> Result<(), RuntimeError> {
    let steps = trainer.state.hyper.steps;
    let (mut losses, mut norms) = (Vec::new(), Vec::new());
    for _ in 0..steps {
        let t = std::time::Instant::now();
        let s = trainer.step(std::slice::from_ref(batch))?;
        eprintln!(
            "step {}: loss {:.6} grad_norm {:.6} ({:.1} ms)",
            s.step,
            s.loss,
            s.grad_norm,
            t.elapsed().as_secs_f64() * 1e3
        );
        losses.push(s.loss as f32);
        norms.push(s.grad_norm as f32);
    }
    let n = losses.len();
    let mut outputs = vec![
        ("loss".to_string(), HostTensor::f32(vec![n], losses)),
        ("grad_norm".to_string(), HostTensor::f32(vec![n], norms)),
    ];
    let names = trainer.param_names();
    let shapes: Vec<Vec<usize>> = trainer
        .session()
        .step_manifest()
        .states
        .iter()
        .filter(|s| !s.name.starts_with("opt."))
        .map(|s| {
            s.shape
                .iter()
                .map(|d| d.as_constant().unwrap_or(0) as usize)
                .collect()
        })
        .collect();
    let refs: Vec<&str> = names.iter().map(String::as_str).collect();
    let values = trainer.tensors(&refs)?;
    for ((name, shape), v) in names.iter().zip(shapes).zip(values) {
        outputs.push((name.clone(), HostTensor::f32(shape, v.into_owned())));
    }
    write_outputs(&args.out, &outputs)
}

/// Runs `f` `repeat` times; with more than one, prints the median time to stderr.
fn timed<T>(
    repeat: usize,
    mut f: impl FnMut() -> Result<T, RuntimeError>,
) -> Result<T, RuntimeError> {
    let mut times = Vec::with_capacity(repeat);
    let mut last = None;
    for _ in 0..repeat {
        let t = std::time::Instant::now();
        last = Some(f()?);
        times.push(t.elapsed().as_secs_f64());
    }
    if repeat > 1 {
        times.sort_by(f64::total_cmp);
        eprintln!(
            "median {:.3} ms over {repeat} runs (min {:.3} ms)",
            times[repeat / 2] * 1e3,
            times[0] * 1e3
        );
    }
    last.ok_or_else(|| RuntimeError::Usage("nothing ran".into()))
}

/// A cuda package on a GPU, or with `--sim` on the host simulator.
fn run_cuda(args: &Args, manifest: arch_runtime::Manifest) -> Result<(), RuntimeError> {
    use arch_runtime::device::{open_device, read_cuda_manifest, DeviceSession};
    drop(manifest);
    let m = read_cuda_manifest(&args.package)?;
    let device = open_device(&args.package, &m, args.sim, args.gpu)?;
    let weights = open_weights(args, &m)?;
    let inputs = read_inputs(&args.inputs)?;
    let mut session = DeviceSession::new(m, &weights, device)?;
    eprintln!("running on {}", session.describe());
    if args.repeat > 1 {
        // Timed with the outputs left on the device (as a framework's stay on the GPU).
        timed(args.repeat, || session.run_on_device(&args.entry, &inputs))?;
    }
    let outputs = session.run(&args.entry, &inputs)?;
    write_outputs(&args.out, &outputs)
}

/// Every tensor of a safetensors file: i64, i32 or f32.
fn read_inputs(path: &Path) -> Result<HashMap<String, HostTensor>, RuntimeError> {
    let map = file::map(path)?;
    let st = file::parse(path, &map)?;
    let mut out = HashMap::new();
    for (name, view) in st.tensors() {
        let b = view.data();
        let data = match view.dtype() {
            Dtype::I64 => HostData::I64(
                b.chunks_exact(8)
                    .map(|c| i64::from_le_bytes([c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]]))
                    .collect(),
            ),
            Dtype::I32 => HostData::I32(
                b.chunks_exact(4)
                    .map(|c| i32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                    .collect(),
            ),
            Dtype::F32 => HostData::F32(
                b.chunks_exact(4)
                    .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                    .collect(),
            ),
            d => {
                return Err(RuntimeError::Input {
                    name,
                    reason: format!(
                        "in `{}` has dtype {}; inputs are i64, i32 or f32",
                        path.display(),
                        file::dtype_name(d)
                    ),
                })
            }
        };
        out.insert(
            name,
            HostTensor {
                shape: view.shape().to_vec(),
                data,
            },
        );
    }
    Ok(out)
}

/// The little-endian bytes of `v`: borrowed in place on little-endian machines (outputs
/// can be hundreds of MiB; copying them would double the peak memory), else converted.
fn le_bytes<T: Copy, const N: usize>(v: &[T], conv: impl Fn(T) -> [u8; N]) -> Cow<'_, [u8]> {
    if cfg!(target_endian = "little") && std::mem::size_of::<T>() == N {
        // SAFETY: T is a plain number type (f32, i64, i32) of N bytes without padding; the
        // slice is valid for len · N bytes and outlives the borrow.
        Cow::Borrowed(unsafe { std::slice::from_raw_parts(v.as_ptr().cast::<u8>(), v.len() * N) })
    } else {
        Cow::Owned(v.iter().flat_map(|&x| conv(x)).collect())
    }
}

/// An output's name, dtype, shape and bytes.
type NamedBytes<'a> = (&'a str, Dtype, &'a [usize], Cow<'a, [u8]>);

/// f32 outputs as F32, integer outputs as I64.
fn write_outputs(path: &Path, outputs: &[(String, HostTensor)]) -> Result<(), RuntimeError> {
    let bytes: Vec<NamedBytes> = outputs
        .iter()
        .map(|(name, t)| {
            let (dtype, b) = match &t.data {
                HostData::F32(v) => (Dtype::F32, le_bytes(v, |x| x.to_le_bytes())),
                HostData::I64(v) => (Dtype::I64, le_bytes(v, |x| x.to_le_bytes())),
                HostData::I32(v) => (Dtype::I32, le_bytes(v, |x| x.to_le_bytes())),
            };
            (name.as_str(), dtype, t.shape.as_slice(), b)
        })
        .collect();
    let io = |error: String| RuntimeError::Io {
        path: path.to_path_buf(),
        error,
    };
    let views = bytes
        .iter()
        .map(|(name, dtype, shape, b)| {
            TensorView::new(*dtype, shape.to_vec(), b)
                .map(|v| (*name, v))
                .map_err(|e| io(e.to_string()))
        })
        .collect::<Result<Vec<_>, _>>()?;
    safetensors::serialize_to_file(views, None, path).map_err(|e| io(e.to_string()))
}

/// Generation with the package's step program (and encode program).
fn generate(args: &Args, g: &Generate) -> Result<(), RuntimeError> {
    use arch_runtime::device::{open_device, read_cuda_manifest, DeviceSession};
    use arch_runtime::generate::{entry_dir, Generator};
    let step = arch_runtime::generate::step_package_dir(&args.package)?;
    let encode = entry_dir(&args.package, "encode")?;
    if args.sim || arch_runtime::Manifest::read(&step)?.target.kind == "cuda" {
        // Caches and recurrent states on the device (or the simulator's host memory).
        let session = |dir: &Path| -> Result<DeviceSession, RuntimeError> {
            let m = read_cuda_manifest(dir)?;
            let device = open_device(dir, &m, args.sim, args.gpu)?;
            let weights = open_weights(args, &m)?;
            DeviceSession::new(m, &weights, device)
        };
        let encoder = encode.as_deref().map(session).transpose()?;
        let generator = Generator::with_encoder(session(&step)?, encoder)?;
        eprintln!("running on {}", generator.session().describe());
        return run_generation(args, g, generator);
    }
    let session = |dir: &Path| -> Result<Session, RuntimeError> {
        let package = Package::load(dir)?;
        let weights = open_weights(args, package.manifest())?;
        Session::new(package, weights, args.threads)
    };
    let encoder = encode.as_deref().map(session).transpose()?;
    run_generation(args, g, Generator::with_encoder(session(&step)?, encoder)?)
}

/// The weights `--weights` or `--random-weights` give, for manifest `m`.
fn open_weights(args: &Args, m: &arch_runtime::Manifest) -> Result<Weights, RuntimeError> {
    match &args.weights {
        WeightsArg::File(p) => Weights::open(m, p),
        WeightsArg::Random(seed) => Weights::random(m, *seed),
    }
}

/// Generates with `generator` on any session (CPU or device) and writes the tokens.
fn run_generation<S: arch_runtime::generate::StepSession>(
    args: &Args,
    g: &Generate,
    mut generator: arch_runtime::generate::Generator<S>,
) -> Result<(), RuntimeError> {
    use arch_runtime::generate::{Decoding, GenerateOptions};
    let mut inputs = read_inputs(&args.inputs)?;
    let ints = |t: HostTensor, name: &str| -> Result<(Vec<usize>, Vec<i64>), RuntimeError> {
        match t.data {
            HostData::I64(v) => Ok((t.shape, v)),
            HostData::I32(v) => Ok((t.shape, v.into_iter().map(i64::from).collect())),
            HostData::F32(_) => Err(RuntimeError::Input {
                name: name.to_string(),
                reason: "must hold integers".into(),
            }),
        }
    };
    let (shape, ids) = ints(
        inputs
            .remove("input_ids")
            .ok_or_else(|| RuntimeError::MissingInput {
                name: "input_ids".into(),
                given: inputs.keys().cloned().collect(),
            })?,
        "input_ids",
    )?;
    if shape.len() != 2 {
        return Err(RuntimeError::Input {
            name: "input_ids".into(),
            reason: format!("has shape {shape:?}, expected [batch, seq]"),
        });
    }
    let batch = shape[0];
    let mask = match inputs.remove("attention_mask") {
        Some(t) => Some(ints(t, "attention_mask")?.1),
        None => None,
    };
    let decoder = match inputs.remove("decoder_input_ids") {
        Some(t) => Some(ints(t, "decoder_input_ids")?.1),
        None => None,
    };
    let opts = GenerateOptions {
        max_new_tokens: g.max_new_tokens,
        decoding: Decoding::from_options(g.temperature, g.top_k, g.top_p, g.seed),
        eos: g.eos.clone(),
        pad: g.pad.or(g.eos.first().copied()).unwrap_or(0),
        save_logits: g.save_logits,
    };
    let out = generator.generate_any(
        &ids,
        mask.as_deref(),
        batch,
        decoder.as_deref(),
        g.decoder_start,
        &opts,
        |_| {},
    )?;
    let mut outputs = vec![(
        "tokens".to_string(),
        HostTensor::i64(vec![out.batch, out.len], out.tokens.clone()),
    )];
    if let Some(l) = &out.logits {
        let n = l.len() / (out.batch * out.vocab).max(1);
        outputs.push((
            "logits".to_string(),
            HostTensor::f32(vec![out.batch, n, out.vocab], l.clone()),
        ));
    }
    let steps = out.decode_steps.max(1) as f64;
    eprintln!(
        "generated {} × {} tokens: prefill {:.1} ms, decode {:.1} tokens/s",
        out.batch,
        out.len,
        out.prefill_seconds * 1e3,
        out.batch as f64 * steps / out.decode_seconds.max(1e-12)
    );
    write_outputs(&args.out, &outputs)
}

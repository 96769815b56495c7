//! `arch-run`: package + weights + inputs (safetensors) → outputs (safetensors), with the
//! runtime only: the deployment binary, no compiler, no LLVM.
//!
//! ```text
//! arch-run PKG (--weights W | --random-weights SEED) --inputs I.safetensors --out O.safetensors
//!          [--threads N] [--entry forward]
//! ```

use std::borrow::Cow;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use arch_runtime::safetensors_file as file;
use arch_runtime::{HostData, HostTensor, Package, RuntimeError, Session, Weights};
use safetensors::tensor::TensorView;
use safetensors::Dtype;

const USAGE: &str = "usage: arch-run PKG (--weights W | --random-weights SEED) \
--inputs I.safetensors --out O.safetensors [--threads N] [--entry NAME]";

struct Args {
    package: PathBuf,
    weights: WeightsArg,
    inputs: PathBuf,
    out: PathBuf,
    threads: usize,
    entry: String,
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
    })
}

fn run(args: &Args) -> Result<(), RuntimeError> {
    let package = Package::load(&args.package)?;
    let weights = match &args.weights {
        WeightsArg::File(p) => Weights::open(package.manifest(), p)?,
        WeightsArg::Random(seed) => Weights::random(package.manifest(), *seed)?,
    };
    let inputs = read_inputs(&args.inputs)?;
    let mut session = Session::new(package, weights, args.threads)?;
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

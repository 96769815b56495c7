//! [`RuntimeError`]: every failure a user of the runtime can cause — a broken package, a
//! weights file that does not fit, bad inputs — as a value with a message, never a panic.

use std::fmt;
use std::path::PathBuf;

use crate::safetensors_file::FileError;

/// Why the runtime could not load a package or weights, or run an entry point.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RuntimeError {
    /// A file of the package cannot be read.
    Io { path: PathBuf, error: String },
    /// `manifest.json` is not valid JSON of the package format, or is inconsistent.
    Manifest { path: PathBuf, reason: String },
    /// The manifest declares another package format.
    Format { found: String },
    /// The package was built by another compiler version.
    Version { package: String, runtime: String },
    /// The package targets a device or instruction set this machine cannot run.
    Target(String),
    /// `kernels.so` cannot be loaded.
    Library { path: PathBuf, reason: String },
    /// `kernels.so` lacks a function the manifest names.
    Symbol {
        path: PathBuf,
        symbol: String,
        kernel: usize,
    },
    /// A safetensors file cannot be opened or is broken (weights or inputs).
    File(FileError),
    /// No parameter of the package was found under any of its namings.
    UnknownNaming {
        path: PathBuf,
        model: String,
        tried: Vec<String>,
        sample: Vec<String>,
    },
    /// A parameter is absent from the weights; `looked_for` are the names tried in `naming`.
    Missing {
        tensor: String,
        naming: String,
        looked_for: Vec<String>,
    },
    /// A weight tensor has the wrong shape. `source` is its name in the file, `tensor` the
    /// parameter it provides; `found` is the file's shape, `expected` what fits.
    Shape {
        tensor: String,
        source: String,
        expected: Vec<usize>,
        found: Vec<usize>,
    },
    /// A weight tensor's dtype is not f32, f16, bf16 or f64.
    Dtype {
        tensor: String,
        source: String,
        dtype: String,
    },
    /// Weights that were not made for this package.
    WeightsMismatch(String),
    /// A symbolic size cannot be evaluated (unknown symbol, overflow, inexact division).
    Size(String),
    /// An input the entry point needs was not given.
    MissingInput { name: String, given: Vec<String> },
    /// An input has the wrong dtype or shape, or values outside the model's limits.
    Input { name: String, reason: String },
    /// The package has no entry point of that name.
    UnknownEntry {
        entry: String,
        available: Vec<String>,
    },
    /// Memory for buffers could not be allocated.
    Alloc { bytes: u64 },
    /// A kernel reported an impossible iteration count, or a task of the pool panicked.
    Kernel(String),
    /// Bad command-line usage (`arch-run`).
    Usage(String),
    /// Session state is missing or too small for a call (no `reset_state`, a batch that
    /// differs from the one it was allocated for, past its capacity), or generation was
    /// asked of a package that cannot generate.
    State(String),
    /// The GPU path: no driver or no device, a package for another SM generation, PTX the
    /// driver refused, a failed allocation or launch.
    Device(String),
}

impl RuntimeError {
    /// The tensor this error concerns, if it concerns one: the canonical parameter for
    /// weights errors, the cut-off tensor of a truncated file.
    pub fn tensor(&self) -> Option<&str> {
        match self {
            RuntimeError::File(FileError::Truncated { tensor, .. }) => tensor.as_deref(),
            RuntimeError::Missing { tensor, .. }
            | RuntimeError::Shape { tensor, .. }
            | RuntimeError::Dtype { tensor, .. } => Some(tensor),
            _ => None,
        }
    }

    pub(crate) fn io(path: &std::path::Path, e: &std::io::Error) -> RuntimeError {
        RuntimeError::Io {
            path: path.to_path_buf(),
            error: e.to_string(),
        }
    }

    pub(crate) fn input(name: &str, reason: impl Into<String>) -> RuntimeError {
        RuntimeError::Input {
            name: name.to_string(),
            reason: reason.into(),
        }
    }
}

impl From<FileError> for RuntimeError {
    fn from(e: FileError) -> Self {
        RuntimeError::File(e)
    }
}

/// `tensor `x`` or `tensor `file name` (parameter `x`)`.
fn named(source: &str, tensor: &str) -> String {
    if source == tensor {
        format!("tensor `{tensor}`")
    } else {
        format!("tensor `{source}` (parameter `{tensor}`)")
    }
}

fn list(names: &[String]) -> String {
    names
        .iter()
        .map(|n| format!("`{n}`"))
        .collect::<Vec<_>>()
        .join(", ")
}

impl fmt::Display for RuntimeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RuntimeError::Io { path, error } => {
                write!(f, "cannot read `{}`: {error}", path.display())
            }
            RuntimeError::Manifest { path, reason } => {
                write!(
                    f,
                    "`{}` is not a valid package manifest: {reason}",
                    path.display()
                )
            }
            RuntimeError::Format { found } => write!(
                f,
                "the package has format `{found}`, this runtime reads `{}`",
                crate::manifest::FORMAT
            ),
            RuntimeError::Version { package, runtime } => write!(
                f,
                "package built by archc {package}, this runtime is {runtime}; rebuild it"
            ),
            RuntimeError::Target(m) => write!(f, "cannot run this package here: {m}"),
            RuntimeError::Library { path, reason } => {
                write!(f, "cannot load `{}`: {reason}", path.display())
            }
            RuntimeError::Symbol {
                path,
                symbol,
                kernel,
            } => write!(
                f,
                "`{}` has no function `{symbol}` (kernel {kernel} of the manifest); the package is \
                 damaged, rebuild it",
                path.display()
            ),
            RuntimeError::File(e) => e.fmt(f),
            RuntimeError::UnknownNaming {
                path,
                model,
                tried,
                sample,
            } => {
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
            RuntimeError::Missing {
                tensor,
                naming,
                looked_for,
            } => {
                write!(f, "missing tensor `{tensor}`")?;
                match looked_for.as_slice() {
                    [] => write!(f, " (the {naming} naming has no equivalent)"),
                    [one] if one == tensor => Ok(()),
                    names => write!(
                        f,
                        " (looked for `{}`, {naming} naming)",
                        names.join("` or `")
                    ),
                }
            }
            RuntimeError::Shape {
                tensor,
                source,
                expected,
                found,
            } => write!(
                f,
                "{} has shape {found:?}, expected {expected:?}",
                named(source, tensor)
            ),
            RuntimeError::Dtype {
                tensor,
                source,
                dtype,
            } => write!(
                f,
                "{} has unsupported dtype {dtype} (expected F32, F16, BF16 or F64)",
                named(source, tensor)
            ),
            RuntimeError::WeightsMismatch(m) => {
                write!(f, "the weights do not belong to this package: {m}")
            }
            RuntimeError::Size(m) => write!(f, "cannot size the buffers: {m}"),
            RuntimeError::MissingInput { name, given } => {
                write!(f, "the inputs have no `{name}`")?;
                if given.is_empty() {
                    write!(f, " (none were given)")
                } else {
                    write!(f, " (given: {})", list(given))
                }
            }
            RuntimeError::Input { name, reason } => write!(f, "`{name}` {reason}"),
            RuntimeError::UnknownEntry { entry, available } => write!(
                f,
                "the package has no entry point `{entry}` (it has {})",
                list(available)
            ),
            RuntimeError::Alloc { bytes } => write!(f, "cannot allocate {bytes} bytes"),
            RuntimeError::Kernel(m) => write!(f, "kernel failure: {m}"),
            RuntimeError::Usage(m) => write!(f, "{m}"),
            RuntimeError::State(m) => write!(f, "{m}"),
            RuntimeError::Device(m) => write!(f, "cuda: {m}"),
        }
    }
}

impl std::error::Error for RuntimeError {}

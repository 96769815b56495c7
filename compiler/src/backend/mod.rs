//! Backends: kernels → machine code. `llvm` holds what both targets share (IR building
//! blocks, the index and value expressions of the Kernel IR, math without libm, the
//! optimisation pipeline); `cpu` lowers to x86-64 through LLVM 19 (inkwell), links a
//! shared library with a C ABI and loads it; `cuda` lowers to PTX through LLVM's NVPTX
//! target, or to a host library that runs the same thread program for testing.
//!
//! This is the only module that may import inkwell: everything above it speaks in
//! kernels, tiles and slices, never in LLVM values.

pub mod cpu;
pub mod cuda;
pub(crate) mod llvm;

use std::fmt;

/// Why a backend could not build or run a kernel. Every failure a user can cause (bad
/// shapes, a missing linker) comes back as one of these, never as a panic.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BackendError {
    /// LLVM refused the module or could not emit it (`stage` names the step).
    Llvm {
        stage: &'static str,
        message: String,
    },
    /// Linking the object file into a shared library failed.
    Link(String),
    /// Loading the shared library or one of its symbols failed.
    Load(String),
    /// The requested instruction set is not available on this machine.
    Unsupported(String),
    /// The caller's buffers do not match the shapes it gave.
    Shape(String),
}

impl fmt::Display for BackendError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BackendError::Llvm { stage, message } => {
                write!(f, "LLVM failed while {stage}: {message}")
            }
            BackendError::Link(m) => write!(f, "linking the generated code failed: {m}"),
            BackendError::Load(m) => write!(f, "loading the generated code failed: {m}"),
            BackendError::Unsupported(m) => write!(f, "unsupported target: {m}"),
            BackendError::Shape(m) => write!(f, "shape mismatch: {m}"),
        }
    }
}

impl std::error::Error for BackendError {}

/// Wraps an LLVM error message with the step that produced it.
pub(crate) fn llvm_err(stage: &'static str) -> impl FnOnce(String) -> BackendError {
    move |message| BackendError::Llvm { stage, message }
}

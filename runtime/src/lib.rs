//! arch-runtime: runs the packages `archc build` writes (docs/PACKAGE.md), without LLVM.
//!
//! - [`manifest`]: `manifest.json` as serde types ([`Manifest`]), shared with the compiler
//!   that writes it, and the checks that make a malformed manifest an error.
//! - [`size`]: symbolic sizes ([`size::SizeExpr`]) evaluated at the bound symbols.
//! - [`safetensors_file`]: memory-mapped safetensors files (single, directory, sharded),
//!   broken files diagnosed; also used by the compiler's weight loader.
//! - [`gguf`]: GGUF files (llama.cpp's), hostile input checked, every supported tensor
//!   type dequantized to f32 as ggml does.
//! - [`weights`]: a weights file read under the best of the manifest's namings (canonical
//!   or Hugging Face), one f32 pointer per parameter, in place from the map when possible;
//!   or deterministic random weights for benchmarks.
//! - [`pool`]: a persistent thread pool splitting a kernel's iteration range.
//! - [`package`]: [`Package::load`] reads the manifest, opens `kernels.so` and resolves
//!   the kernels (the C ABI).
//! - [`inputs`]: [`HostTensor`]s checked against the inputs of the graph and the model's
//!   limits; the symbols bound from their shapes.
//! - [`session`]: [`Session::run`] sizes and allocates the buffers (64-byte aligned,
//!   reused across runs) and runs an entry point's kernels on the pool.
//! - [`generate`]: [`generate::Generator`] runs a package's step program token by token
//!   (prefill, then decode against the session's caches), greedy or sampled.
//! - [`device`]: cuda packages — a [`device::Device`] (the CUDA driver through cudarc,
//!   loaded at run time, or the host simulator of `kernels.sim.so`) and a
//!   [`device::DeviceSession`] holding weights and session state on it; [`generate`]'s
//!   `Generator` runs on either kind of session.
//! - `arch-run`: the deployment binary (package + weights + inputs → outputs).
//!
//! Every failure a user can cause is a [`RuntimeError`], never a panic.
//!
//! **Invariant:** the runtime knows the package format and the kernel ABI, never the
//! Graph IR; it does not link LLVM.

pub mod alloc;
pub mod device;
pub mod error;
pub mod generate;
pub mod gguf;
pub mod inputs;
pub mod manifest;
pub mod package;
pub mod pool;
pub mod safetensors_file;
pub mod session;
pub mod size;
pub mod train;
pub mod weights;

pub use error::RuntimeError;
pub use inputs::{HostData, HostTensor};
pub use manifest::Manifest;
pub use package::Package;
pub use pool::Pool;
pub use session::Session;
pub use size::SizeExpr;
pub use weights::Weights;

//! The x86-64 CPU backend: host detection → generated LLVM IR → optimised object code →
//! a shared library loaded into the process.
//!
//! - `target` — which vector set (AVX-512, AVX2+FMA, SSE2) and LLVM CPU to generate for.
//! - `sgemm_ir` — the register-tiled f32 matmul as LLVM IR: tiles, microkernel, block loops.
//! - `pack` — the packing routines it calls, also generated.
//! - `gemv_ir` — the matrix–vector product of decoding.
//! - `quant_ir` — both over a B of ggml blocks (Q8_0, Q4_K), dequantized in registers.
//! - `qdot_ir` — K-quant decoding with integer dot products (a build's `int_dots`).
//! - `qgemm_ir` — the same numerics for prompts: a packed integer matmul (`vpdpbusd`).
//! - `codegen` — target machine, O3, object emission, `cc -shared`, `dlopen`.
//! - `sgemm` — the safe entry points: shape checks, threads, workspaces.
//! - `peak` — a generated FMA-throughput probe for the machine's floor.

mod codegen;
mod gemv_ir;
pub mod lower;
mod pack;
mod peak;
pub(crate) mod qdot_ir;
mod qgemm_ir;
pub(crate) mod quant_ir;
mod sgemm;
mod sgemm_ir;
mod target;

// The target-independent LLVM building blocks, under the names the CPU generators use.
use crate::backend::llvm::{ir, math};

pub(crate) use codegen::target_machine;
pub use codegen::SharedLibrary;
pub use peak::FmaProbe;
pub use sgemm::{sgemm, sgemm_assembly, sgemm_llvm_ir, SgemmConfig, SgemmKernel};
pub use sgemm_ir::SgemmTiles;
pub use target::{describe_host, host_isa, CpuTarget, VectorIsa};

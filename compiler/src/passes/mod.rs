//! Passes: pure functions Graph → Graph. They never touch LLVM, CUDA or files.

mod dce;

pub use dce::{keep_outputs, prune};

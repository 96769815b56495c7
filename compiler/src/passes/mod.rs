//! Passes: pure functions Graph → Graph. They never touch LLVM, CUDA or files.

mod dce;
mod simplify;

pub use dce::{keep_outputs, prune};
pub use simplify::simplify;

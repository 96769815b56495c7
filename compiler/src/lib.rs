//! archc: `.arch` specs → graph IR → fused kernels. This crate holds the command line
//! today; the graph IR, passes and backends join it as they land (see ARCHITECTURE.md).

pub mod cli;
pub mod expand;
pub mod graph;
pub mod interp;
pub mod tensor;
pub mod params;
pub mod weights;
pub mod tensor_io;
pub mod passes;
pub mod eval;

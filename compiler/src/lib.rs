//! archc: `.arch` specs → graph IR → fused kernels. This crate holds the command line
//! today; the graph IR, passes and backends join it as they land (see ARCHITECTURE.md).

pub mod autodiff;
pub mod backend;
pub mod cli;
pub mod collate;
pub mod diagram;
pub mod eval;
pub mod expand;
pub mod gguf_tokenizer;
pub mod graph;
pub mod import_gguf;
pub mod import_hf;
pub mod interp;
pub mod kernel;
pub mod model;
pub mod package;
pub mod params;
pub mod passes;
pub mod tensor;
pub mod tensor_io;
pub mod tokenize;
pub mod train;
pub mod weights;

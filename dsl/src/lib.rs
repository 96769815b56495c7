//! The `.arch` language: text → AST → `ArchSpec`, with diagnostics, formatting and statistics.
//!
//! This crate knows nothing about graphs, kernels or devices.

pub mod ast;
pub mod diag;
pub mod elab;
pub mod fmt;
mod lex;
pub mod parse;
pub mod source;
pub mod spec;
pub mod stats;

pub use diag::{Diagnostic, Severity};
pub use source::{FileId, SourceMap, Span};
pub use spec::*;

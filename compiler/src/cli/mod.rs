//! Command-line arguments → subcommands (`check`, `fmt`, `stats`), exit codes and output.

mod check;
mod fmt;
mod stats;

use clap::{Parser, Subcommand};
use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Parser)]
#[command(
    name = "archc",
    version,
    about = "Compile neural-network architecture specs (.arch) to fused kernels"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Parse, elaborate and validate spec files; report every error.
    Check {
        #[arg(required = true)]
        files: Vec<PathBuf>,
    },
    /// Rewrite spec files in canonical form (or, with --check, report those that are not).
    Fmt {
        /// Do not write; exit 1 if a file is not formatted.
        #[arg(long)]
        check: bool,
        #[arg(required = true)]
        files: Vec<PathBuf>,
    },
    /// Parameters, FLOPs, memory and scaling-law estimates of one model.
    Stats {
        /// FILE or FILE:MODEL (default: the first model of the file).
        target: String,
        /// Print one JSON object instead of a table.
        #[arg(long)]
        json: bool,
        /// Sequence length for FLOPs and cache sizes (default: the model's context).
        #[arg(long)]
        seq: Option<u64>,
        /// Training tokens D for 6·N·D and the Chinchilla loss (default: 20·N).
        #[arg(long)]
        tokens: Option<f64>,
    },
}

/// Deep specs are parsed with recursion; give the work a stack that bounded input fits in.
const STACK_BYTES: usize = 256 << 20;

pub fn main() -> ExitCode {
    let cli = Cli::parse();
    let worker = std::thread::Builder::new()
        .stack_size(STACK_BYTES)
        .spawn(move || run(cli));
    match worker.map(|h| h.join()) {
        Ok(Ok(code)) => code,
        _ => {
            eprintln!("error: internal failure (this is a bug in archc; please report it)");
            ExitCode::from(2)
        }
    }
}

fn run(cli: Cli) -> ExitCode {
    match cli.command {
        Command::Check { files } => check::run(&files),
        Command::Fmt { check, files } => fmt::run(&files, check),
        Command::Stats {
            target,
            json,
            seq,
            tokens,
        } => stats::run(&target, json, seq, tokens),
    }
}

/// Whether diagnostics on stderr get colours.
fn color() -> bool {
    std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none()
}

/// Splits `FILE[:MODEL]`.
fn split_target(target: &str) -> (PathBuf, Option<String>) {
    if let Some((file, model)) = target.rsplit_once(':') {
        let is_ident = !model.is_empty()
            && model.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
            && !model.starts_with(|c: char| c.is_ascii_digit());
        if is_ident && !file.is_empty() {
            return (PathBuf::from(file), Some(model.to_string()));
        }
    }
    (PathBuf::from(target), None)
}

//! `archc stats FILE[:MODEL]` → parameter counts, FLOPs, memory and scaling-law estimates.

use arch_dsl::diag::render;
use arch_dsl::elab::Program;
use arch_dsl::stats::{render_table, stats, StatsOptions};
use std::process::ExitCode;

pub fn run(target: &str, json: bool, seq: Option<u64>, tokens: Option<f64>) -> ExitCode {
    let (path, model) = super::split_target(target);
    let prog = match Program::load(&path) {
        Ok(p) => p,
        Err(e) => {
            eprintln!("error: cannot read {}: {e}", path.display());
            return ExitCode::FAILURE;
        }
    };
    if prog.has_errors() {
        eprint!(
            "{}",
            render(&prog.sources, &prog.diagnostics, super::color())
        );
        return ExitCode::FAILURE;
    }
    let names = prog.model_names();
    let name = match model {
        Some(m) if prog.has_model(&m) => m,
        Some(m) => {
            let hint = prog
                .suggest_model(&m)
                .map(|h| format!(" ({h})"))
                .unwrap_or_default();
            eprintln!(
                "error: no model `{m}` in {}{hint}; models: {}",
                path.display(),
                names.join(", ")
            );
            return ExitCode::FAILURE;
        }
        None => match names.first() {
            Some(n) => n.clone(),
            None => {
                eprintln!("error: {} defines no model", path.display());
                return ExitCode::FAILURE;
            }
        },
    };
    let (spec, diags) = prog.elaborate(&name);
    eprint!("{}", render(&prog.sources, &diags, super::color()));
    let Some(spec) = spec else {
        return ExitCode::FAILURE;
    };
    if seq == Some(0) || tokens.is_some_and(|t| !(t > 0.0 && t.is_finite())) {
        eprintln!("error: --seq and --tokens must be positive");
        return ExitCode::FAILURE;
    }
    let s = stats(&spec, &StatsOptions { seq, tokens });
    if json {
        match serde_json::to_string_pretty(&s) {
            Ok(text) => println!("{text}"),
            Err(e) => {
                eprintln!("error: cannot encode statistics: {e}");
                return ExitCode::FAILURE;
            }
        }
    } else {
        print!("{}", render_table(&s, &spec));
    }
    ExitCode::SUCCESS
}

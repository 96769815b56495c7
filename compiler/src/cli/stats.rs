//! `archc stats FILE[:MODEL]` → parameter counts, FLOPs, memory and scaling-law estimates.

use arch_dsl::stats::{render_table, stats, StatsOptions};
use std::process::ExitCode;

pub fn run(target: &str, json: bool, seq: Option<u64>, tokens: Option<f64>) -> ExitCode {
    let Some(spec) = super::load_model(target) else {
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

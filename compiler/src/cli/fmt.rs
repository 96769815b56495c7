//! `archc fmt [--check] FILE...` → files rewritten in canonical form.

use arch_dsl::diag::render;
use arch_dsl::elab::Program;
use std::path::PathBuf;
use std::process::ExitCode;

pub fn run(files: &[PathBuf], check_only: bool) -> ExitCode {
    let mut failed = false;
    for path in files {
        let text = match std::fs::read_to_string(path) {
            Ok(t) => t,
            Err(e) => {
                eprintln!("error: cannot read {}: {e}", path.display());
                failed = true;
                continue;
            }
        };
        match arch_dsl::fmt::format(&text) {
            Ok(formatted) if formatted == text => {}
            Ok(_) if check_only => {
                println!("not formatted: {}", path.display());
                failed = true;
            }
            Ok(formatted) => {
                if let Err(e) = std::fs::write(path, formatted) {
                    eprintln!("error: cannot write {}: {e}", path.display());
                    failed = true;
                } else {
                    println!("formatted: {}", path.display());
                }
            }
            Err(_) => {
                let prog =
                    Program::from_source(path.display().to_string(), text, Some(path.clone()));
                eprint!(
                    "{}",
                    render(&prog.sources, &prog.diagnostics, super::color())
                );
                eprintln!("{}: not formatted (it does not parse)", path.display());
                failed = true;
            }
        }
    }
    if failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}

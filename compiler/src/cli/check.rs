//! `archc check FILE...` → every diagnostic of every file; exit 1 on any error.

use arch_dsl::diag::render;
use arch_dsl::elab::Program;
use std::path::PathBuf;
use std::process::ExitCode;

pub fn run(files: &[PathBuf]) -> ExitCode {
    let mut failed = false;
    for path in files {
        let prog = match Program::load(path) {
            Ok(p) => p,
            Err(e) => {
                eprintln!("error: cannot read {}: {e}", path.display());
                failed = true;
                continue;
            }
        };
        let (specs, diags) = prog.check();
        eprint!("{}", render(&prog.sources, &diags, super::color()));
        let errors = diags.iter().filter(|d| d.is_error()).count();
        if errors > 0 {
            failed = true;
            eprintln!("{}: {errors} error(s)", path.display());
        } else {
            println!(
                "ok: {} ({} model{})",
                path.display(),
                specs.len(),
                if specs.len() == 1 { "" } else { "s" }
            );
        }
    }
    if failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}

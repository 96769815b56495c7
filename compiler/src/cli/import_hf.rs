//! `archc import-hf CONFIG.json [-o FILE] [--name NAME] [--generator GEN.json]` → a checked,
//! canonical `.arch` spec on stdout or in FILE. Exit 1 for a config that cannot be
//! imported, 2 for an importer bug (a generated spec that does not check).

use crate::import_hf::{import, ImportError, Options};
use std::path::Path;
use std::process::ExitCode;

pub fn run(
    config: &Path,
    output: Option<&Path>,
    name: Option<String>,
    generator: Option<&Path>,
) -> ExitCode {
    let Some(text) = read(config) else {
        return ExitCode::FAILURE;
    };
    let generator = match generator {
        Some(g) => match read(g) {
            Some(t) => Some((g.display().to_string(), t)),
            None => return ExitCode::FAILURE,
        },
        None => None,
    };
    let opts = Options {
        source: config.display().to_string(),
        name,
        generator,
    };
    let imported = match import(&text, &opts) {
        Ok(i) => i,
        Err(e) => {
            eprintln!("error: {e}");
            return match e {
                ImportError::Internal(_) => ExitCode::from(2),
                _ => ExitCode::FAILURE,
            };
        }
    };
    write(&imported, output)
}

/// `archc import-gguf FILE.gguf [-o FILE] [--name NAME]`: the spec of a GGUF file's model.
pub fn run_gguf(file: &Path, output: Option<&Path>, name: Option<String>) -> ExitCode {
    let imported = match crate::import_gguf::import_file(file, name) {
        Ok(i) => i,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::FAILURE;
        }
    };
    write(&imported, output)
}

/// An imported spec's warnings to stderr and its text to `output` (stdout without one).
fn write(imported: &crate::import_hf::Imported, output: Option<&Path>) -> ExitCode {
    for w in &imported.warnings {
        eprintln!("warning: {w}");
    }
    match output {
        None => print!("{}", imported.text),
        Some(path) => {
            if let Err(e) = std::fs::write(path, &imported.text) {
                eprintln!("error: cannot write {}: {e}", path.display());
                return ExitCode::FAILURE;
            }
            eprintln!("wrote {} (model `{}`)", path.display(), imported.name);
        }
    }
    ExitCode::SUCCESS
}

/// A config.json: a regular file of at most 16 MiB.
fn read(path: &Path) -> Option<String> {
    const MAX_BYTES: u64 = 16 << 20;
    let result = std::fs::metadata(path).and_then(|meta| {
        if !meta.is_file() {
            Err(std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                "not a regular file",
            ))
        } else if meta.len() > MAX_BYTES {
            Err(std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                "larger than 16 MiB",
            ))
        } else {
            std::fs::read_to_string(path)
        }
    });
    match result {
        Ok(t) => Some(t),
        Err(e) => {
            eprintln!("error: cannot read {}: {e}", path.display());
            None
        }
    }
}

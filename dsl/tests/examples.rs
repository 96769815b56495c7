//! §9 examples of ARCH_LANGUAGE.md and every file in `specs/` → they check without errors.

use arch_dsl::diag::render;
use arch_dsl::elab::Program;
use std::path::{Path, PathBuf};

fn arch_files(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .map(|rd| {
            rd.filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| p.extension().is_some_and(|x| x == "arch"))
                .collect()
        })
        .unwrap_or_default();
    files.sort();
    files
}

fn check_clean(path: &Path) -> usize {
    let prog =
        Program::load(path).unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
    let (specs, diags) = prog.check();
    assert!(
        diags.is_empty(),
        "{}:\n{}",
        path.display(),
        render(&prog.sources, &diags, false)
    );
    assert_eq!(specs.len(), prog.model_names().len());
    specs.len()
}

#[test]
fn language_examples_check() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/examples");
    let files = arch_files(&dir);
    assert_eq!(files.len(), 7, "the seven example blocks of §9");
    let models: usize = files.iter().map(|f| check_clean(f)).sum();
    assert_eq!(models, 18);
}

/// The committed examples are the ones in the language reference (docs/LANGUAGE.md, the
/// project's copy of the contract), and that copy is the contract when it is beside us.
#[test]
fn examples_match_the_language_reference() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let text = std::fs::read_to_string(root.join("../docs/LANGUAGE.md")).unwrap();
    if let Ok(contract) = std::fs::read_to_string(root.join("../../shared/ARCH_LANGUAGE.md")) {
        assert!(
            text.ends_with(&contract),
            "docs/LANGUAGE.md differs from shared/ARCH_LANGUAGE.md: copy it again"
        );
    }
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/examples");
    let committed: Vec<String> = arch_files(&dir)
        .iter()
        .map(|p| std::fs::read_to_string(p).unwrap())
        .collect();
    let section = &text[text.find("## 9.").unwrap()..text.find("## 10.").unwrap()];
    let mut examples = 0;
    for block in section.split("```").skip(1).step_by(2) {
        let block = block.strip_prefix('\n').unwrap_or(block);
        assert!(
            committed.iter().any(|c| c == block),
            "§9 example not committed under dsl/tests/examples:\n{block}"
        );
        examples += 1;
    }
    assert_eq!(examples, 7, "the §9 examples compared");
}

#[test]
fn spec_library_checks() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../specs");
    for file in arch_files(&dir) {
        check_clean(&file);
    }
}

/// `fmt` then `check` gives the same `ArchSpec` for every example and library spec.
#[test]
fn formatting_preserves_the_elaborated_specs() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut files = arch_files(&root.join("tests/examples"));
    files.extend(arch_files(&root.join("../specs")));
    for path in files {
        let text = std::fs::read_to_string(&path).unwrap();
        let messy: String = text
            .lines()
            .map(|l| format!("{} ", l.trim_start().replace("  ", ", ")))
            .collect::<Vec<_>>()
            .join("\n");
        let formatted =
            arch_dsl::fmt::format(&messy).unwrap_or_else(|d| panic!("{}: {d:?}", path.display()));
        let before = Program::from_source("a.arch", text, Some(path.clone())).check();
        let after = Program::from_source("b.arch", formatted, Some(path.clone())).check();
        assert!(
            before.1.is_empty() && after.1.is_empty(),
            "{}",
            path.display()
        );
        assert_eq!(before.0, after.0, "{}", path.display());
    }
}

/// The tutorial's spec (docs/TUTORIAL.md) checks and is formatted.
#[test]
fn tutorial_spec_checks_and_is_formatted() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/tutorial/mini.arch");
    check_clean(&path);
    let text = std::fs::read_to_string(&path).unwrap();
    assert_eq!(
        arch_dsl::fmt::format(&text).unwrap(),
        text,
        "run archc fmt on it"
    );
    let prog = Program::load(&path).unwrap();
    assert_eq!(prog.model_names().len(), 3);
}

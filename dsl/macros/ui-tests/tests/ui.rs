//! Invalid specs in `tests/ui/*.rs` → compile errors, compared with the `.stderr` beside each.
//!
//! Bless with `TRYBUILD=overwrite cargo test -p arch-macros-ui --test ui`, then review the diff.
//!
//! trybuild compiles each case in its own crate at `<target>/tests/trybuild/arch-macros-ui/`,
//! and that crate's `CARGO_MANIFEST_DIR` is where `model!(file = …)` looks. So the spec
//! files of `tests/ui/specs/` are copied there first, and the cases name them
//! `specs/….arch` as a user's crate would.

use std::path::{Path, PathBuf};

#[test]
fn ui() {
    copy_spec_fixtures();
    let cases = trybuild::TestCases::new();
    cases.compile_fail("tests/ui/*.rs");
}

fn copy_spec_fixtures() {
    let manifest_dir = Path::new(env!("CARGO_MANIFEST_DIR"));
    let project = target_dir()
        .join("tests")
        .join("trybuild")
        .join(env!("CARGO_PKG_NAME"))
        .join("specs");
    if let Err(e) = std::fs::create_dir_all(&project) {
        panic!("cannot create {}: {e}", project.display());
    }
    let fixtures = manifest_dir.join("tests").join("ui").join("specs");
    let Ok(entries) = std::fs::read_dir(&fixtures) else {
        panic!("cannot list {}", fixtures.display())
    };
    for entry in entries.flatten() {
        let from = entry.path();
        if let Some(name) = from.file_name() {
            if let Err(e) = std::fs::copy(&from, project.join(name)) {
                panic!("cannot copy {}: {e}", from.display());
            }
        }
    }
}

/// Cargo's target directory (where trybuild puts its crate): the ancestor of this test
/// binary that cargo marked with `CACHEDIR.TAG`, wherever `CARGO_TARGET_DIR` or `--target`
/// put it; cargo writes no tag into a directory that existed before it, so failing that,
/// the directory above `<profile>/deps/`.
fn target_dir() -> PathBuf {
    let exe = std::env::current_exe().unwrap_or_default();
    let tagged = exe
        .ancestors()
        .find(|dir| dir.join("CACHEDIR.TAG").is_file());
    match tagged.or_else(|| exe.ancestors().nth(3)) {
        Some(dir) => dir.to_path_buf(),
        None => panic!("no cargo target directory above {}", exe.display()),
    }
}

//! Invalid specs under `tests/invalid/` → each reports its error; the rendered report is
//! snapshotted (`INSTA_UPDATE=always` or `cargo insta review` to bless after review).

use arch_dsl::diag::render;
use arch_dsl::elab::Program;
use std::path::Path;

#[test]
fn invalid_specs_report_errors() {
    insta::glob!("invalid/*.arch", |path| {
        let text = std::fs::read_to_string(path).expect("fixture is readable");
        let name = format!("invalid/{}", path.file_name().unwrap().to_string_lossy());
        let prog = Program::from_source(name, text, Some(path.to_path_buf()));
        let (_, diags) = prog.check();
        assert!(
            diags.iter().any(|d| d.is_error()),
            "{} must not check",
            path.display()
        );
        insta::assert_snapshot!(render(&prog.sources, &diags, false));
    });
}

#[test]
fn there_are_many_distinct_fixtures() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/invalid");
    let n = std::fs::read_dir(dir)
        .unwrap()
        .filter(|e| {
            e.as_ref()
                .unwrap()
                .path()
                .extension()
                .is_some_and(|x| x == "arch")
        })
        .count();
    assert!(n >= 25, "at least 25 invalid fixtures, found {n}");
}

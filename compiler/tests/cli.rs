//! The `archc` binary → exit codes, output formats and messages a user sees.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn archc(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_archc"))
        .args(args)
        .output()
        .expect("archc runs")
}

fn repo(path: &str) -> String {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .join(path)
        .display()
        .to_string()
}

fn temp_file(name: &str, text: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("archc-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path
}

#[test]
fn check_accepts_the_library_and_rejects_errors() {
    let ok = archc(&["check", &repo("specs/gpt2.arch"), &repo("specs/t5.arch")]);
    assert!(
        ok.status.success(),
        "{}",
        String::from_utf8_lossy(&ok.stderr)
    );
    assert!(String::from_utf8_lossy(&ok.stdout).contains("(4 models)"));

    let bad = archc(&["check", &repo("dsl/tests/invalid/01_unknown_field.arch")]);
    assert_eq!(bad.status.code(), Some(1));
    let err = String::from_utf8_lossy(&bad.stderr);
    assert!(
        err.contains("unknown field `kv_head`") && err.contains("did you mean `kv_heads`?"),
        "{err}"
    );
    assert!(
        err.contains("01_unknown_field.arch:7:32"),
        "file:line:col in the report: {err}"
    );
}

#[test]
fn check_reports_unreadable_files() {
    let out = archc(&["check", "no/such/file.arch"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("cannot read no/such/file.arch"));
}

#[test]
fn stats_json_has_the_documented_keys() {
    let out = archc(&[
        "stats",
        &format!("{}:gpt2_xl", repo("specs/gpt2.arch")),
        "--json",
        "--seq",
        "512",
    ]);
    assert!(out.status.success());
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    for key in [
        "params",
        "params_embedding",
        "flops_per_token",
        "train_flops",
        "chinchilla_tokens",
        "chinchilla_loss",
        "kaplan_loss",
        "weights_bytes",
        "state_bytes_per_token",
    ] {
        assert!(v.get(key).is_some(), "missing {key}");
    }
    assert_eq!(v["params"], 1_557_611_200u64, "GPT2LMHeadModel gpt2-xl");
    assert_eq!(v["seq"], 512);
    let n = v["params"].as_f64().unwrap();
    assert_eq!(v["chinchilla_tokens"].as_f64().unwrap(), 20.0 * n);
    assert_eq!(v["train_flops"].as_f64().unwrap(), 6.0 * n * 20.0 * n);
}

#[test]
fn stats_table_and_model_selection() {
    let out = archc(&["stats", &repo("specs/llama3.arch"), "--tokens", "15e12"]);
    let table = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && table.starts_with("llama3_8b"),
        "first model by default: {table}"
    );
    assert!(table.contains("8,030,261,248"));

    let missing = archc(&["stats", &format!("{}:llama3_8", repo("specs/llama3.arch"))]);
    assert_eq!(missing.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&missing.stderr).contains("did you mean `llama3_8b`?"));
}

#[test]
fn fmt_rewrites_and_check_mode_reports() {
    let messy = "model m { vocab = 10, d_model = 8 context = 4\n decoder { layers = 1\n mlp { hidden = 4 } } }\n";
    let path = temp_file("messy.arch", messy);
    let p = path.to_str().unwrap();
    let check = archc(&["fmt", "--check", p]);
    assert_eq!(check.status.code(), Some(1));
    assert_eq!(
        std::fs::read_to_string(&path).unwrap(),
        messy,
        "--check writes nothing"
    );

    assert!(archc(&["fmt", p]).status.success());
    let formatted = std::fs::read_to_string(&path).unwrap();
    assert_eq!(
        formatted,
        "model m {\n    vocab = 10\n    d_model = 8\n    context = 4\n    decoder {\n        layers = 1\n        mlp { hidden = 4 }\n    }\n}\n"
    );
    assert!(archc(&["fmt", "--check", p]).status.success());
    assert!(archc(&["fmt", "--check", &repo("specs/llama3.arch")])
        .status
        .success());

    let broken = temp_file("broken.arch", "model m { vocab = }\n");
    let out = archc(&["fmt", broken.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("does not parse"));
}

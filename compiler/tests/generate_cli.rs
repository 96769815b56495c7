//! `archc generate` from the command line: the safetensors interface (tokens and logits
//! as transformers gives them), sampling options, end-of-sequence handling, text prompts
//! through a tokenizer, and every bad input as a clear error without a panic.

mod common;

use archc::interp::Value;
use archc::tensor::Tensor;
use archc::tensor_io::{read_values, write_values};
use common::{arch_run, word_tokenizer};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/hf")
        .join(name)
}

fn archc(args: &[&str], cache: &Path) -> Output {
    Command::new(env!("CARGO_BIN_EXE_archc"))
        .args(args)
        .env("ARCHC_CACHE", cache)
        .output()
        .unwrap()
}

/// `archc generate` on the GPT-2 fixture's spec and weights, with `args` after them.
fn gpt2_generate(cache: &Path, args: &[&str]) -> Output {
    let dir = fixture("gpt2");
    let (arch, weights) = (dir.join("model.arch"), dir.join("model.safetensors"));
    let mut all = vec![
        "generate",
        arch.to_str().unwrap(),
        "--weights",
        weights.to_str().unwrap(),
    ];
    all.extend_from_slice(args);
    archc(&all, cache)
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

fn ints(v: &Value) -> Vec<i64> {
    match v {
        Value::I(t) => t.data.clone(),
        _ => panic!("expected integers"),
    }
}

fn write_ids(path: &Path, name_data: &[(&str, Vec<usize>, Vec<i64>)]) {
    let tensors: Vec<(String, Value)> = name_data
        .iter()
        .map(|(n, shape, data)| {
            (
                n.to_string(),
                Value::I(Tensor {
                    shape: shape.clone(),
                    data: data.clone(),
                }),
            )
        })
        .collect();
    write_values(path, &tensors).unwrap();
}

/// GPT-2's fixture prompts, through the binary: tokens as transformers generated them.
#[test]
fn generate_writes_tokens_and_logits() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = fixture("gpt2");
    let want = read_values(&dir.join("generate.safetensors")).unwrap();
    let inputs = tmp.path().join("in.safetensors");
    let Value::I(ids) = &want["input_ids"] else {
        panic!()
    };
    write_ids(
        &inputs,
        &[("input_ids", ids.shape.clone(), ids.data.clone())],
    );
    let out = tmp.path().join("out.safetensors");
    let o = gpt2_generate(
        tmp.path(),
        &[
            "--inputs",
            inputs.to_str().unwrap(),
            "--max-new-tokens",
            "8",
            "--out",
            out.to_str().unwrap(),
            "--save-logits",
        ],
    );
    assert!(o.status.success(), "{}", text(&o));
    assert!(text(&o).contains("tokens/s"), "{}", text(&o));
    let got = read_values(&out).unwrap();
    assert_eq!(ints(&got["tokens"]), ints(&want["tokens"]));
    let logits = got["logits"].as_f32().unwrap();
    assert_eq!(logits.shape, vec![2, 8, 101]);
    let err = logits.rel_max_diff(want["logits"].as_f32().unwrap());
    assert!(err <= 1e-4, "logits differ by {err:e}");
}

/// Runs generation on the GPT-2 fixture with extra flags; returns the tokens.
fn run(tmp: &Path, extra: &[&str]) -> Vec<i64> {
    let inputs = tmp.join("prompt.safetensors");
    write_ids(
        &inputs,
        &[("input_ids", vec![2, 3], vec![5, 17, 42, 8, 99, 3])],
    );
    let out = tmp.join(format!(
        "out{}.safetensors",
        extra.join("_").replace(['-', '.'], "")
    ));
    let mut args = vec![
        "--inputs",
        inputs.to_str().unwrap(),
        "--max-new-tokens",
        "10",
        "--out",
        out.to_str().unwrap(),
    ];
    args.extend_from_slice(extra);
    let o = gpt2_generate(tmp, &args);
    assert!(o.status.success(), "{extra:?}: {}", text(&o));
    ints(&read_values(&out).unwrap()["tokens"])
}

#[test]
fn sampling_repeats_for_a_seed_and_eos_pads() {
    let tmp = tempfile::tempdir().unwrap();
    let a = run(tmp.path(), &["--temperature", "1.5", "--seed", "3"]);
    let b = run(tmp.path(), &["--temperature", "1.5", "--seed", "3"]);
    let c = run(tmp.path(), &["--temperature", "1.5", "--seed", "4"]);
    assert_eq!(a, b, "the same seed gives the same tokens");
    assert_ne!(a, c, "another seed gives other tokens");
    assert_eq!(a.len(), 2 * 13);

    // Greedy, then stop each row at the first token it generates: the rest is padding.
    let greedy = run(tmp.path(), &[]);
    let first = greedy[3];
    let stopped = run(tmp.path(), &["--eos", &first.to_string(), "--pad", "100"]);
    assert_eq!(stopped[3], first);
    assert!(stopped[4..13].iter().all(|&t| t == 100), "{stopped:?}");
    // The other row continues until its own first eos, if any.
    let row1 = &stopped[13..];
    let end = row1[3..].iter().position(|&t| t == first).map(|p| p + 3);
    if let Some(e) = end {
        assert!(row1[e + 1..].iter().all(|&t| t == 100));
        assert_eq!(&row1[..=e], &greedy[13..13 + e + 1]);
    } else {
        assert_eq!(row1, &greedy[13..]);
    }
}

#[test]
fn text_prompts_stream_their_continuation() {
    let tmp = tempfile::tempdir().unwrap();
    let tok = word_tokenizer(tmp.path(), 101);
    let out = tmp.path().join("text.safetensors");
    let o = gpt2_generate(
        tmp.path(),
        &[
            "--tokenizer",
            tok.to_str().unwrap(),
            "--prompt",
            "w5 w17 w42",
            "--max-new-tokens",
            "6",
            "--out",
            out.to_str().unwrap(),
        ],
    );
    assert!(o.status.success(), "{}", text(&o));
    // The prompt's ids, then the new tokens, whose words stdout shows.
    let tokens = ints(&read_values(&out).unwrap()["tokens"]);
    assert_eq!(&tokens[..3], &[5, 17, 42]);
    let words: Vec<String> = tokens[3..].iter().map(|t| format!("w{t}")).collect();
    let stdout = String::from_utf8_lossy(&o.stdout);
    assert_eq!(
        stdout.split_whitespace().collect::<Vec<_>>().join(" "),
        words.join(" ")
    );
    assert!(String::from_utf8_lossy(&o.stderr).contains("tokens/s"));
}

#[test]
fn bad_inputs_are_clear_errors() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = fixture("gpt2");
    let (arch, weights) = (
        dir.join("model.arch").to_str().unwrap().to_string(),
        dir.join("model.safetensors").to_str().unwrap().to_string(),
    );
    let file = |name: &str, data: &[(&str, Vec<usize>, Vec<i64>)]| {
        let p = tmp.path().join(name);
        write_ids(&p, data);
        p.to_str().unwrap().to_string()
    };
    let big = file(
        "big.safetensors",
        &[("input_ids", vec![1, 2], vec![3, 101])],
    );
    let ok = file("ok.safetensors", &[("input_ids", vec![1, 2], vec![3, 4])]);
    let right_pad = file(
        "rpad.safetensors",
        &[
            ("input_ids", vec![1, 3], vec![3, 4, 0]),
            ("attention_mask", vec![1, 3], vec![1, 1, 0]),
        ],
    );
    let garbage = tmp.path().join("tokenizer.json");
    std::fs::write(&garbage, "{ not a tokenizer").unwrap();
    let out = tmp.path().join("o.safetensors");
    let out = out.to_str().unwrap();
    let bert = fixture("bert");
    let (bert_arch, bert_weights) = (
        bert.join("model.arch").to_str().unwrap().to_string(),
        bert.join("model.safetensors").to_str().unwrap().to_string(),
    );
    let gpt2 = [arch.as_str(), "--weights", &weights];
    let bert = [bert_arch.as_str(), "--weights", &bert_weights];
    // (model, arguments after it, what the error says)
    let cases: Vec<(&[&str], Vec<&str>, &str)> = vec![
        (
            &gpt2,
            vec!["--inputs", &big, "--max-new-tokens", "2", "--out", out],
            "vocab",
        ),
        (
            &gpt2,
            vec!["--inputs", &ok, "--max-new-tokens", "20", "--out", out],
            "context",
        ),
        (
            &gpt2,
            vec![
                "--inputs",
                &right_pad,
                "--max-new-tokens",
                "2",
                "--out",
                out,
            ],
            "left padding",
        ),
        (
            &gpt2,
            vec![
                "--tokenizer",
                garbage.to_str().unwrap(),
                "--prompt",
                "w1",
                "--max-new-tokens",
                "2",
            ],
            "tokenizer.json",
        ),
        (
            &gpt2,
            vec!["--inputs", &ok, "--max-new-tokens", "2"],
            "--out",
        ),
        (
            &bert,
            vec!["--inputs", &ok, "--max-new-tokens", "2", "--out", out],
            "encoder-only",
        ),
        (
            &gpt2,
            vec![
                "--inputs",
                &ok,
                "--max-new-tokens",
                "2",
                "--out",
                out,
                "--top-p",
                "1.5",
            ],
            "top-p",
        ),
    ];
    for (model, rest, want) in cases {
        let mut args = vec!["generate"];
        args.extend_from_slice(model);
        args.extend(rest);
        let o = archc(&args, tmp.path());
        let t = text(&o);
        assert!(!o.status.success(), "{args:?} succeeded");
        assert!(t.contains(want), "{args:?}: expected `{want}` in: {t}");
        assert!(!t.contains("panicked"), "{args:?}: {t}");
    }
}

/// `archc build -o` writes the step (and encode) programs beside forward; `arch-run`
/// generates with them, no compiler involved, exactly as `archc generate` does.
#[test]
fn arch_run_generates_from_a_built_package() {
    let tmp = tempfile::tempdir().unwrap();
    for (name, extra) in [("gpt2", vec![]), ("bart", vec!["--decoder-start", "2"])] {
        let dir = fixture(name);
        let pkg = tmp.path().join(format!("{name}_pkg"));
        let o = archc(
            &[
                "build",
                dir.join("model.arch").to_str().unwrap(),
                "-o",
                pkg.to_str().unwrap(),
            ],
            tmp.path(),
        );
        assert!(o.status.success(), "{}", text(&o));
        let manifest = std::fs::read_to_string(pkg.join("manifest.json")).unwrap();
        assert!(manifest.contains("\"decode\""), "{name}: no decode entry");
        let want = read_values(&dir.join("generate.safetensors")).unwrap();
        let inputs = tmp.path().join(format!("{name}_in.safetensors"));
        let mut given = vec![("input_ids", &want["input_ids"])];
        if let Some(m) = want.get("attention_mask") {
            given.push(("attention_mask", m));
        }
        let list: Vec<(String, Value)> = given
            .into_iter()
            .map(|(n, v)| (n.to_string(), v.clone()))
            .collect();
        write_values(&inputs, &list).unwrap();
        let out = tmp.path().join(format!("{name}_out.safetensors"));
        let mut args = vec![
            pkg.to_str().unwrap().to_string(),
            "--weights".into(),
            dir.join("model.safetensors").to_str().unwrap().to_string(),
            "--inputs".into(),
            inputs.to_str().unwrap().to_string(),
            "--out".into(),
            out.to_str().unwrap().to_string(),
            "--max-new-tokens".into(),
            "8".into(),
            "--save-logits".into(),
        ];
        args.extend(extra.iter().map(|s| s.to_string()));
        let o = Command::new(arch_run()).args(&args).output().unwrap();
        assert!(o.status.success(), "{name}: {}", text(&o));
        let got = read_values(&out).unwrap();
        assert_eq!(ints(&got["tokens"]), ints(&want["tokens"]), "{name}");
        let err = got["logits"]
            .as_f32()
            .unwrap()
            .rel_max_diff(want["logits"].as_f32().unwrap());
        assert!(err <= 1e-4, "{name}: logits differ by {err:e}");
    }
}

/// An encoder-decoder row that ends at its eos is dropped from the session (its decoder
/// caches and cross-attention keys), and the other row goes on exactly as when every row
/// is computed (`--save-logits` keeps them all).
#[test]
fn encoder_decoder_rows_that_end_are_dropped() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = fixture("t5");
    let run = |extra: &[&str]| {
        let out = tmp.path().join("o.safetensors");
        let path = |f: &str| dir.join(f).to_str().unwrap().to_string();
        let mut args: Vec<String> = vec![
            "generate".into(),
            path("model.arch"),
            "--weights".into(),
            path("model.safetensors"),
            "--inputs".into(),
            path("prompt.safetensors"),
            "--max-new-tokens".into(),
            "10".into(),
            "--eos".into(),
            "0".into(),
            "--pad".into(),
            "7".into(),
            "--out".into(),
            out.to_str().unwrap().to_string(),
        ];
        args.extend(extra.iter().map(|s| s.to_string()));
        let refs: Vec<&str> = args.iter().map(String::as_str).collect();
        let o = archc(&refs, &tmp.path().join("cache"));
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        match read_values(&out).unwrap().remove("tokens") {
            Some(Value::I(t)) => t.data,
            other => panic!("tokens: {other:?}"),
        }
    };
    let dropped = run(&[]);
    let kept = run(&["--save-logits"]);
    assert_eq!(dropped, kept);
    // The fixture's first row ends at once; the second runs the whole way.
    let (row0, row1) = dropped.split_at(11);
    assert!(row0[2..].iter().all(|&x| x == 7), "{row0:?}");
    assert!(row1[1..].iter().all(|&x| x != 0 && x != 7), "{row1:?}");
}

/// `--backend cuda-sim`: the cuda step package on the host simulator generates the same
/// tokens and logits as transformers; `--backend cuda` on a machine without a driver is a
/// clear error (and on one with a GPU, the same tokens).
#[test]
fn generate_on_cuda_packages() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = fixture("gpt2");
    let want = read_values(&dir.join("generate.safetensors")).unwrap();
    let inputs = tmp.path().join("in.safetensors");
    let Value::I(ids) = &want["input_ids"] else {
        panic!()
    };
    write_ids(
        &inputs,
        &[("input_ids", ids.shape.clone(), ids.data.clone())],
    );
    for backend in ["cuda-sim", "cuda"] {
        let out = tmp.path().join(format!("{backend}.safetensors"));
        let o = gpt2_generate(
            tmp.path(),
            &[
                "--inputs",
                inputs.to_str().unwrap(),
                "--max-new-tokens",
                "8",
                "--out",
                out.to_str().unwrap(),
                "--save-logits",
                "--backend",
                backend,
            ],
        );
        if backend == "cuda" && !o.status.success() {
            assert!(text(&o).contains("no CUDA driver"), "{}", text(&o));
            assert!(!text(&o).contains("panicked"), "{}", text(&o));
            continue;
        }
        assert!(o.status.success(), "{backend}: {}", text(&o));
        let got = read_values(&out).unwrap();
        assert_eq!(ints(&got["tokens"]), ints(&want["tokens"]), "{backend}");
        let err = got["logits"]
            .as_f32()
            .unwrap()
            .rel_max_diff(want["logits"].as_f32().unwrap());
        assert!(err <= 1e-4, "{backend}: logits differ by {err:e}");
    }
    // The deployment binary on a built cuda package (its step program in `step/`).
    let pkg = tmp.path().join("pkg");
    let arch = dir.join("model.arch");
    let o = archc(
        &[
            "build",
            arch.to_str().unwrap(),
            "--target",
            "cuda",
            "--sim",
            "-o",
            pkg.to_str().unwrap(),
        ],
        tmp.path(),
    );
    assert!(o.status.success(), "{}", text(&o));
    let out = tmp.path().join("arch_run.safetensors");
    let o = Command::new(arch_run())
        .args([
            pkg.to_str().unwrap(),
            "--weights",
            dir.join("model.safetensors").to_str().unwrap(),
            "--inputs",
            inputs.to_str().unwrap(),
            "--out",
            out.to_str().unwrap(),
            "--max-new-tokens",
            "8",
            "--sim",
        ])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", text(&o));
    assert!(text(&o).contains("host simulator"), "{}", text(&o));
    assert_eq!(
        ints(&read_values(&out).unwrap()["tokens"]),
        ints(&want["tokens"])
    );
}

/// `--dtype bf16` (half-precision matrices, products and activations) on the simulator:
/// greedy generation of the GPT-2, LLaMA (GQA, RoPE, a left-padded batch) and T5
/// (encoder-decoder, relative bias) fixtures gives transformers' tokens (their smallest
/// top-two logit gaps, 0.025 and up, exceed bf16's error here), logits within bf16's
/// rounding of transformers' f32 ones.
#[test]
fn half_precision_generation_on_the_simulator() {
    let tmp = tempfile::tempdir().unwrap();
    for name in ["gpt2", "llama", "t5"] {
        let dir = fixture(name);
        let want = read_values(&dir.join("generate.safetensors")).unwrap();
        let out = tmp.path().join(format!("{name}.safetensors"));
        let o = archc(
            &[
                "generate",
                dir.join("model.arch").to_str().unwrap(),
                "--weights",
                dir.join("model.safetensors").to_str().unwrap(),
                "--inputs",
                dir.join("prompt.safetensors").to_str().unwrap(),
                "--max-new-tokens",
                "8",
                "--save-logits",
                "--backend",
                "cuda-sim",
                "--dtype",
                "bf16",
                "--out",
                out.to_str().unwrap(),
            ],
            tmp.path(),
        );
        assert!(o.status.success(), "{name}: {}", text(&o));
        let got = read_values(&out).unwrap();
        assert_eq!(
            ints(&got["tokens"]),
            ints(&want["tokens"]),
            "{name}: bf16 tokens"
        );
        let err = got["logits"]
            .as_f32()
            .unwrap()
            .rel_max_diff(want["logits"].as_f32().unwrap());
        eprintln!("{name}: bf16 logits within {err:e} of transformers' f32");
        assert!(
            err > 1e-4 && err < 5e-2,
            "{name}: bf16 logits differ by {err:e}"
        );
    }
}

//! `archc train` as a user meets it: resume after an interruption gives exactly the losses
//! and weights of an uninterrupted run, `kill -9` at any moment leaves a loadable
//! checkpoint, and bad input (short data, labels out of range, mismatched shapes, a
//! checkpoint of another model, a corrupt checkpoint) is a clear error that leaves an
//! existing checkpoint as it was.

mod common;

use common::fixture;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

fn archc() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_archc"));
    c.env("ARCHC_CACHE", std::env::temp_dir().join("archc-test-cache"));
    c
}

/// Steps of the interrupted run: long enough that kills land mid-run.
const STEPS: u64 = 60;

fn gpt2_spec() -> PathBuf {
    fixture("hf/gpt2/model.arch")
}

fn gpt2_data() -> PathBuf {
    fixture("train/gpt2/data.safetensors")
}

/// The common arguments of a GPT-2 run on the fixture data (10 rows of 2 per step).
fn run_args(out: &Path, steps: u64) -> Vec<String> {
    [
        "train",
        gpt2_spec().to_str().unwrap(),
        "--data",
        gpt2_data().to_str().unwrap(),
        "--init",
        fixture("hf/gpt2/model.safetensors").to_str().unwrap(),
        "--batch",
        "2",
        "--steps",
        &steps.to_string(),
        "--lr",
        "1e-3",
        "--schedule",
        "cosine",
        "--warmup",
        "2",
        "--shuffle",
        "--threads",
        "2",
        "--out",
        out.to_str().unwrap(),
        "--log",
        out.join("log.jsonl").to_str().unwrap(),
    ]
    .iter()
    .map(|s| s.to_string())
    .collect()
}

fn run(args: &[String]) -> Output {
    archc().args(args).output().expect("archc runs")
}

fn ok(o: &Output) {
    assert!(
        o.status.success(),
        "archc failed:\n{}",
        String::from_utf8_lossy(&o.stderr)
    );
}

fn err(o: &Output) -> String {
    assert!(!o.status.success(), "archc should have failed");
    let e = String::from_utf8_lossy(&o.stderr).into_owned();
    assert!(!e.contains("panicked"), "a panic: {e}");
    e
}

/// step → loss from a log (a resumed run's lines replace the interrupted run's).
fn losses(log: &Path) -> Vec<(u64, f64)> {
    let mut by_step = std::collections::BTreeMap::new();
    for l in std::fs::read_to_string(log).unwrap().lines() {
        let v: serde_json::Value = serde_json::from_str(l).unwrap();
        by_step.insert(v["step"].as_u64().unwrap(), v["loss"].as_f64().unwrap());
    }
    by_step.into_iter().collect()
}

#[test]
fn resume_after_kill_is_bit_exact_and_checkpoints_survive_kill_9() {
    let tmp = tempfile::tempdir().unwrap();
    // The uninterrupted run.
    let whole = tmp.path().join("whole");
    ok(&run(&run_args(&whole, STEPS)));
    let want = losses(&whole.join("log.jsonl"));
    assert_eq!(want.len(), STEPS as usize);

    // Runs killed at increasing moments, each resumed from what the kill left.
    let part = tmp.path().join("part");
    let mut args = run_args(&part, STEPS);
    args.extend(["--save-every".to_string(), "1".to_string()]);
    let mut resumed = 0;
    for delay_ms in [150u64, 250, 400, 600, 900] {
        let mut a = args.clone();
        if part.join("checkpoint.safetensors").exists() {
            a.extend(["--resume".to_string(), part.to_str().unwrap().to_string()]);
        }
        let mut child = archc()
            .args(&a)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(Duration::from_millis(delay_ms));
        let _ = child.kill(); // SIGKILL
        let _ = child.wait();
        if part.join("checkpoint.safetensors").exists() {
            // Whatever the moment, the checkpoint left is whole: resuming from it works.
            resumed += 1;
            let check = run(&[
                "train".to_string(),
                gpt2_spec().to_str().unwrap().to_string(),
                "--data".to_string(),
                gpt2_data().to_str().unwrap().to_string(),
                "--batch".to_string(),
                "2".to_string(),
                "--steps".to_string(),
                "1".to_string(),
                "--shuffle".to_string(),
                "--resume".to_string(),
                part.to_str().unwrap().to_string(),
                "--out".to_string(),
                tmp.path().join("probe").to_str().unwrap().to_string(),
            ]);
            // The checkpoint is at step ≥ 1, so `--steps 1` has nothing to do — but only
            // after the checkpoint was read successfully.
            let e = err(&check);
            assert!(
                e.contains("leaves nothing to do"),
                "unreadable checkpoint: {e}"
            );
        }
    }
    // Finish the interrupted run (unless a run finished before its kill).
    let mut a = args.clone();
    if part.join("checkpoint.safetensors").exists() {
        a.extend(["--resume".to_string(), part.to_str().unwrap().to_string()]);
    }
    let last = run(&a);
    if !last.status.success() {
        assert!(err(&last).contains("leaves nothing to do"));
    }
    let got = losses(&part.join("log.jsonl"));
    assert_eq!(
        got, want,
        "the resumed run's losses equal the uninterrupted run's"
    );
    let w1 = std::fs::read(whole.join("weights.safetensors")).unwrap();
    let w2 = std::fs::read(part.join("weights.safetensors")).unwrap();
    assert!(w1 == w2, "final weights are bit-identical");
    eprintln!("{resumed} kills left a checkpoint to resume from");
}

#[test]
fn checkpoint_files() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("run");
    ok(&run(&run_args(&out, 3)));
    for f in [
        "checkpoint.safetensors",
        "weights.safetensors",
        "model.safetensors",
        "loss.svg",
    ] {
        assert!(out.join(f).is_file(), "{f} written");
    }
    let svg = std::fs::read_to_string(out.join("loss.svg")).unwrap();
    assert!(svg.starts_with("<svg") && svg.contains("<polyline") && svg.contains("loss"));
    // No temporary file is left behind.
    let stray: Vec<_> = std::fs::read_dir(&out)
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().starts_with('.'))
        .collect();
    assert!(stray.is_empty(), "temporary files left: {stray:?}");
    // The canonical weights load as --weights (generation from the trained model).
    let o = archc()
        .args([
            "eval",
            gpt2_spec().to_str().unwrap(),
            "--weights",
            out.join("weights.safetensors").to_str().unwrap(),
            "--inputs",
            fixture("hf/gpt2/inputs.safetensors").to_str().unwrap(),
            "--out",
            tmp.path().join("o.safetensors").to_str().unwrap(),
        ])
        .output()
        .unwrap();
    ok(&o);
    // One thread gives the same bits as two (kernels split work, never sums).
    let one = tmp.path().join("one");
    let mut a = run_args(&one, 3);
    let i = a.iter().position(|x| x == "--threads").unwrap();
    a[i + 1] = "1".into();
    ok(&run(&a));
    assert!(
        std::fs::read(one.join("weights.safetensors")).unwrap()
            == std::fs::read(out.join("weights.safetensors")).unwrap(),
        "1 and 2 threads train to identical weights"
    );
    // An existing checkpoint is not overwritten by a new run without --resume.
    let before = std::fs::read(out.join("checkpoint.safetensors")).unwrap();
    let e = err(&run(&run_args(&out, 3)));
    assert!(e.contains("already holds a checkpoint"), "{e}");
    assert!(before == std::fs::read(out.join("checkpoint.safetensors")).unwrap());
}

fn write_data(path: &Path, tensors: &[(&str, Vec<usize>, Vec<i64>)]) {
    let values: Vec<(String, archc::interp::Value)> = tensors
        .iter()
        .map(|(n, s, d)| {
            (
                n.to_string(),
                archc::interp::Value::I(archc::tensor::Tensor {
                    shape: s.clone(),
                    data: d.clone(),
                }),
            )
        })
        .collect();
    archc::tensor_io::write_values(path, &values).unwrap();
}

#[test]
fn bad_input_is_an_error_and_keeps_the_checkpoint() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("run");
    ok(&run(&run_args(&out, 2)));
    let before = std::fs::read(out.join("checkpoint.safetensors")).unwrap();
    let with_data = |data: &Path, steps: u64| {
        let mut a = run_args(&out, steps);
        let i = a.iter().position(|x| x == "--data").unwrap();
        a[i + 1] = data.to_str().unwrap().to_string();
        a.extend(["--resume".to_string(), out.to_str().unwrap().to_string()]);
        a
    };
    type Tensors = Vec<(&'static str, Vec<usize>, Vec<i64>)>;
    let cases: Vec<(&str, Tensors, &str)> = vec![
        (
            "short",
            vec![("input_ids", vec![1, 8], vec![3; 8])],
            "shorter than one batch",
        ),
        (
            "labels",
            vec![
                ("input_ids", vec![4, 8], vec![3; 32]),
                (
                    "labels",
                    vec![4, 8],
                    (0..32).map(|i| if i == 5 { 500 } else { 3 }).collect(),
                ),
            ],
            "outside 0..101",
        ),
        (
            "ids",
            vec![(
                "input_ids",
                vec![4, 8],
                (0..32).map(|i| if i == 9 { 101 } else { 3 }).collect(),
            )],
            "101",
        ),
        (
            "shapes",
            vec![
                ("input_ids", vec![4, 8], vec![3; 32]),
                ("attention_mask", vec![4, 7], vec![1; 28]),
            ],
            "differ in shape",
        ),
        (
            "rows",
            vec![
                ("input_ids", vec![4, 8], vec![3; 32]),
                ("labels", vec![3, 8], vec![3; 24]),
            ],
            "expected 4 rows",
        ),
        (
            "long",
            vec![("input_ids", vec![4, 20], vec![3; 80])],
            "exceed the context",
        ),
    ];
    for (name, tensors, want) in cases {
        let data = tmp.path().join(format!("{name}.safetensors"));
        write_data(&data, &tensors);
        let e = err(&run(&with_data(&data, 4)));
        assert!(e.contains(want), "{name}: `{want}` not in: {e}");
        assert!(
            before == std::fs::read(out.join("checkpoint.safetensors")).unwrap(),
            "{name}: a failing run left the checkpoint as it was"
        );
    }
    // Resuming with another batch size would silently move through the data.
    let mut a = run_args(&out, 4);
    let i = a.iter().position(|x| x == "--batch").unwrap();
    a[i + 1] = "1".into();
    a.extend(["--resume".to_string(), out.to_str().unwrap().to_string()]);
    let e = err(&run(&a));
    assert!(e.contains("trained with batch 2"), "{e}");
    assert!(before == std::fs::read(out.join("checkpoint.safetensors")).unwrap());
    // A checkpoint of another model.
    let mut a = run_args(&tmp.path().join("other"), 4);
    a[1] = fixture("hf/llama/model.arch").to_str().unwrap().to_string();
    let i = a.iter().position(|x| x == "--init").unwrap();
    a.drain(i..i + 2);
    a.extend(["--resume".to_string(), out.to_str().unwrap().to_string()]);
    let e = err(&run(&a));
    assert!(
        e.contains("not a usable checkpoint") && e.contains("another model"),
        "{e}"
    );
    // A corrupt checkpoint.
    let bad = tmp.path().join("bad");
    std::fs::create_dir_all(&bad).unwrap();
    std::fs::write(
        bad.join("checkpoint.safetensors"),
        &before[..before.len() / 2],
    )
    .unwrap();
    let mut a = run_args(&bad, 4);
    a.extend(["--resume".to_string(), bad.to_str().unwrap().to_string()]);
    let e = err(&run(&a));
    assert!(e.contains("not a usable checkpoint"), "{e}");
    // Settings that cannot work.
    for (flag, value, want) in [
        ("--batch", "0", "at least 1"),
        ("--lr", "nan", "--lr"),
        ("--betas", "0.9", "--betas"),
        ("--schedule", "exp", "exp"),
    ] {
        let mut a = run_args(&tmp.path().join("x"), 2);
        let i = a.iter().position(|x| x == flag).unwrap_or(a.len());
        if i < a.len() {
            a[i + 1] = value.to_string();
        } else {
            a.extend([flag.to_string(), value.to_string()]);
        }
        let e = err(&run(&a));
        assert!(e.contains(want), "{flag} {value}: {e}");
    }
}

/// ELECTRA's replacements are drawn from per-row generators seeded by the data position,
/// so a resumed RTD run (shuffled) repeats an uninterrupted one bit for bit.
#[test]
fn rtd_resume_is_bit_exact() {
    let tmp = tempfile::tempdir().unwrap();
    let args = |out: &Path, steps: u64, resume: bool| -> Vec<String> {
        let mut a: Vec<String> = [
            "train",
            fixture("hf/electra/model.arch").to_str().unwrap(),
            "--data",
            fixture("train/electra/data.safetensors").to_str().unwrap(),
            "--init",
            fixture("train/electra/init.safetensors").to_str().unwrap(),
            "--batch",
            "2",
            "--steps",
            &steps.to_string(),
            "--lr",
            "1e-3",
            "--shuffle",
            "--threads",
            "2",
            "--out",
            out.to_str().unwrap(),
            "--log",
            out.join("log.jsonl").to_str().unwrap(),
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        if resume {
            a.push("--resume".into());
            a.push(out.to_str().unwrap().into());
        }
        a
    };
    let whole = tmp.path().join("whole");
    ok(&run(&args(&whole, 14, false)));
    let parts = tmp.path().join("parts");
    ok(&run(&args(&parts, 6, false)));
    ok(&run(&args(&parts, 14, true)));
    let (a, b) = (
        losses(&whole.join("log.jsonl")),
        losses(&parts.join("log.jsonl")),
    );
    assert_eq!(a.len(), 14);
    assert_eq!(a, b, "a resumed RTD run repeats the uninterrupted one");
}

/// Attention's key bias: its gradient is zero in exact arithmetic (softmax ignores a
/// score added to every key), so what the kernels compute is rounding noise, which AdamW
/// normalises into steps of ±lr whose sign no two summation orders need agree on.
fn noise_gradient(name: &str) -> bool {
    name.ends_with("attention.k.bias")
}

/// max |a − b| / max |b| over every f32 tensor of `b` (all must be in `a`) but those of
/// [`noise_gradient`], which may differ by at most `noise` absolute.
fn max_rel_diff(a: &Path, b: &Path, noise: f64) -> f64 {
    let (a, b) = (
        archc::tensor_io::read_values(a).unwrap(),
        archc::tensor_io::read_values(b).unwrap(),
    );
    let mut worst = 0f64;
    for (name, vb) in &b {
        let archc::interp::Value::F(tb) = vb else {
            continue;
        };
        let Some(archc::interp::Value::F(ta)) = a.get(name) else {
            panic!("`{name}` missing");
        };
        assert_eq!(ta.shape, tb.shape, "`{name}`");
        if noise_gradient(name) {
            let d = archc::tensor::max_abs_diff(&ta.data, &tb.data);
            assert!(d <= noise, "`{name}` differs by {d}, more than {noise}");
            continue;
        }
        worst = worst.max(ta.rel_max_diff(tb));
    }
    worst
}

/// The same training on the cuda backend (its train package's thread programs on the host
/// simulator): every step's loss and gradient norm equal the CPU's within 1e-4, the final
/// weights within 1e-3 — the bound the issue sets against PyTorch: AdamW divides each
/// gradient by its own running magnitude, so a gradient that is small by cancellation
/// turns the last bits of two summation orders (the GPU's matmuls run as 3×TF32 on the
/// tensor cores) into a visible difference of its update. `arch-run --train-steps` (what
/// the GPU check runs) gives the same on both packages.
#[test]
fn cuda_sim_training_equals_cpu() {
    const WEIGHTS: f64 = 1e-3;
    let tmp = tempfile::tempdir().unwrap();
    // Two rows of 8 tokens: every step sees the same batch (what arch-run feeds).
    let ids: Vec<i64> = (0..16).map(|i| (i * 37 + 5) % 101).collect();
    let data = tmp.path().join("data.safetensors");
    write_data(&data, &[("input_ids", vec![2, 8], ids.clone())]);
    let train = |backend: &str| {
        let out = tmp.path().join(backend);
        let mut a = run_args(&out, 2);
        a[3] = data.to_str().unwrap().into();
        // In order, at a constant learning rate.
        for (x, values) in [("--shuffle", 0), ("--schedule", 1), ("--warmup", 1)] {
            let i = a.iter().position(|y| y == x).unwrap();
            a.drain(i..=i + values);
        }
        a.extend(["--backend".into(), backend.into()]);
        ok(&run(&a));
        out
    };
    let (cpu, sim) = (train("cpu"), train("cuda-sim"));
    let log = |d: &Path| -> Vec<(f64, f64)> {
        std::fs::read_to_string(d.join("log.jsonl"))
            .unwrap()
            .lines()
            .map(|l| {
                let v: serde_json::Value = serde_json::from_str(l).unwrap();
                (
                    v["loss"].as_f64().unwrap(),
                    v["grad_norm"].as_f64().unwrap(),
                )
            })
            .collect()
    };
    let (lc, ls) = (log(&cpu), log(&sim));
    assert_eq!(lc.len(), 2);
    for ((a, b), (c, d)) in lc.iter().zip(&ls) {
        assert!(
            (a - c).abs() <= 1e-4 * a.abs(),
            "loss: cpu {a}, cuda-sim {c}"
        );
        assert!(
            (b - d).abs() <= 1e-4 * b.abs(),
            "grad norm: cpu {b}, cuda-sim {d}"
        );
    }
    // Two AdamW steps of lr 1e-3 move a weight by at most 2e-3 (each way).
    let noise = 4e-3;
    let w = max_rel_diff(
        &sim.join("weights.safetensors"),
        &cpu.join("weights.safetensors"),
        noise,
    );
    assert!(w <= WEIGHTS, "final weights differ by {w:e}");
    // The weights moved: the same batch twice, the second loss is lower.
    assert!(lc[1].0 < lc[0].0 - 1e-3, "training changed nothing: {lc:?}");

    // arch-run on the CPU train package and on the cuda one (simulated), one batch.
    let batch = tmp.path().join("batch.safetensors");
    write_data(
        &batch,
        &[
            ("input_ids", vec![2, 8], ids.clone()),
            ("labels", vec![2, 8], ids),
        ],
    );
    for (name, extra) in [
        ("pkg_cpu", vec![]),
        ("pkg_cuda", vec!["--target", "cuda", "--sim"]),
    ] {
        let pkg = tmp.path().join(name);
        let spec = gpt2_spec();
        let mut args = vec![
            "build",
            spec.to_str().unwrap(),
            "--mode",
            "train",
            "-o",
            pkg.to_str().unwrap(),
        ];
        args.extend(extra.iter().copied());
        ok(&archc().args(&args).output().unwrap());
        let out = tmp.path().join(format!("{name}.safetensors"));
        let mut run_args = vec![
            pkg.to_str().unwrap().to_string(),
            "--weights".into(),
            fixture("hf/gpt2/model.safetensors")
                .to_str()
                .unwrap()
                .into(),
            "--inputs".into(),
            batch.to_str().unwrap().into(),
            "--out".into(),
            out.to_str().unwrap().into(),
            "--train-steps".into(),
            "2".into(),
            "--lr".into(),
            "1e-3".into(),
        ];
        if name == "pkg_cuda" {
            run_args.push("--sim".into());
        }
        let o = Command::new(common::arch_run())
            .args(&run_args)
            .output()
            .unwrap();
        ok(&o);
        let got = archc::tensor_io::read_values(&out).unwrap();
        let Some(archc::interp::Value::F(loss)) = got.get("loss") else {
            panic!("no loss output");
        };
        for (x, (want, _)) in loss.data.iter().zip(&lc) {
            let x = f64::from(*x);
            assert!(
                (x - want).abs() <= 1e-4 * want.abs(),
                "{name}: loss {x}, archc train {want}"
            );
        }
        let w = max_rel_diff(&out, &cpu.join("weights.safetensors"), noise);
        assert!(w <= WEIGHTS, "{name}: weights differ by {w:e}");
    }
}

//! `archc build`, `archc bench` and `archc eval` on a package, as a user runs them: the
//! package files, the cache, the runtime-only path, and clear errors.

use archc::interp::Value;
use archc::tensor::Tensor;
use archc::tensor_io::{read_values, write_values};
use std::path::Path;
use std::process::{Command, Output};

fn archc(args: &[&str], cache: &Path) -> Output {
    Command::new(env!("CARGO_BIN_EXE_archc"))
        .args(args)
        .env("ARCHC_CACHE", cache)
        .output()
        .expect("archc runs")
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// `archc eval TARGET` on the GPT-2 fixture's weights and inputs, logits to `out`.
fn eval_gpt2_fixture(target: &str, backend: &str, out: &Path, cache: &Path) -> Output {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/hf/gpt2");
    archc(
        &[
            "eval",
            target,
            "--weights",
            dir.join("model.safetensors").to_str().unwrap(),
            "--inputs",
            dir.join("inputs.safetensors").to_str().unwrap(),
            "--out",
            out.to_str().unwrap(),
            "--backend",
            backend,
        ],
        cache,
    )
}

/// The relative error of row 0's logits in `result` (the fixture's row without padding,
/// compared whole) against `want`'s.
fn first_row_error(
    result: &Path,
    want: &std::collections::HashMap<String, archc::interp::Value>,
) -> f64 {
    let got = read_values(result).unwrap();
    let (g, w) = (
        got["logits"].as_f32().unwrap(),
        want["logits"].as_f32().unwrap(),
    );
    let row = g.data.len() / g.shape[0];
    let first = |t: &Tensor<f32>| Tensor {
        shape: vec![row],
        data: t.data[..row].to_vec(),
    };
    first(g).rel_max_diff(&first(w))
}

fn fixture(path: &str) -> String {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/hf")
        .join(path)
        .display()
        .to_string()
}

#[test]
fn build_writes_a_package_and_the_second_build_is_cached() {
    let tmp = tempfile::tempdir().unwrap();
    let cache = tmp.path().join("cache");
    let out = tmp.path().join("pkg");
    let spec = fixture("gpt2/model.arch");
    let o = archc(&["build", &spec, "-o", out.to_str().unwrap()], &cache);
    assert!(o.status.success(), "{}", text(&o));
    for f in [
        "manifest.json",
        "kernels.so",
        "graph.txt",
        "kernels.txt",
        "kernels.ll",
    ] {
        assert!(out.join(f).is_file(), "{f} missing: {}", text(&o));
    }
    assert!(text(&o).contains("wrote"), "{}", text(&o));
    let manifest = std::fs::read_to_string(out.join("manifest.json")).unwrap();
    assert!(
        manifest.contains("\"format\": \"archc-package/1\""),
        "{manifest}"
    );
    let again = tmp.path().join("pkg2");
    let o = archc(&["build", &spec, "-o", again.to_str().unwrap()], &cache);
    assert!(o.status.success(), "{}", text(&o));
    assert!(text(&o).contains("cached"), "{}", text(&o));
    assert_eq!(
        std::fs::read(out.join("kernels.so")).unwrap(),
        std::fs::read(again.join("kernels.so")).unwrap()
    );
}

#[test]
fn eval_runs_a_built_package_without_the_spec() {
    let tmp = tempfile::tempdir().unwrap();
    let cache = tmp.path().join("cache");
    let pkg = tmp.path().join("pkg");
    let spec = fixture("gpt2/model.arch");
    let o = archc(
        &[
            "build",
            &spec,
            "-o",
            pkg.to_str().unwrap(),
            "--output",
            "hidden",
        ],
        &cache,
    );
    assert!(o.status.success(), "{}", text(&o));
    let inputs = tmp.path().join("in.safetensors");
    write_values(
        &inputs,
        &[(
            "input_ids".into(),
            Value::I(Tensor {
                shape: vec![1, 5],
                data: vec![1, 2, 3, 4, 5],
            }),
        )],
    )
    .unwrap();
    let weights = fixture("gpt2/model.safetensors");
    let run = |target: &str, backend: &str, out: &Path| {
        let o = archc(
            &[
                "eval",
                target,
                "--weights",
                &weights,
                "--inputs",
                inputs.to_str().unwrap(),
                "--out",
                out.to_str().unwrap(),
                "--output",
                "hidden",
                "--backend",
                backend,
            ],
            &cache,
        );
        assert!(o.status.success(), "{}", text(&o));
        match &read_values(out).unwrap()["hidden"] {
            Value::F(t) => t.clone(),
            _ => panic!("hidden is not f32"),
        }
    };
    let from_pkg = run(
        pkg.to_str().unwrap(),
        "cpu",
        &tmp.path().join("a.safetensors"),
    );
    let interp = run(&spec, "interp", &tmp.path().join("b.safetensors"));
    assert_eq!(from_pkg.shape, vec![1, 5, 32]);
    assert!(from_pkg.rel_max_diff(&interp) <= 1e-4);
}

#[test]
fn bench_reports_json() {
    let tmp = tempfile::tempdir().unwrap();
    let o = archc(
        &[
            "bench",
            &fixture("llama/model.arch"),
            "--batch",
            "2",
            "--seq",
            "9",
            "--reps",
            "3",
            "--warmup",
            "1",
            "--json",
        ],
        tmp.path(),
    );
    assert!(o.status.success(), "{}", text(&o));
    let json: serde_json::Value =
        serde_json::from_slice(&o.stdout).unwrap_or_else(|e| panic!("{e}: {}", text(&o)));
    assert!(json["median_ms"].as_f64().unwrap() > 0.0);
    assert!(json["tokens_per_s"].as_f64().unwrap() > 0.0);
    assert_eq!(json["batch"], 2);
    assert_eq!(json["seq"], 9);
}

#[test]
fn train_packages_build_and_bench() {
    let tmp = tempfile::tempdir().unwrap();
    let spec = fixture("gpt2/model.arch");
    let dir = tmp.path().join("pkg");
    let o = archc(
        &[
            "build",
            &spec,
            "--mode",
            "train",
            "-o",
            dir.to_str().unwrap(),
        ],
        tmp.path(),
    );
    assert!(o.status.success(), "{}", text(&o));
    let m: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("manifest.json")).unwrap()).unwrap();
    assert!(m["entries"]["train_step"].is_object(), "{m}");
    let states = m["states"].as_array().unwrap();
    assert!(states.iter().any(|s| s["name"] == "embed.tokens.weight"));
    assert!(states
        .iter()
        .any(|s| s["name"] == "opt.v.embed.tokens.weight"));
    let o = archc(
        &[
            "bench", &spec, "--mode", "train", "--batch", "2", "--seq", "9", "--reps", "2",
            "--warmup", "1", "--json",
        ],
        tmp.path(),
    );
    assert!(o.status.success(), "{}", text(&o));
    let json: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(json["mode"], "train");
    assert!(json["tokens_per_s"].as_f64().unwrap() > 0.0);
    assert!(json["loss"].as_f64().unwrap() > 0.0);
}

/// `--target cuda`: PTX and launch shapes; with `--sim` the simulator's library, which
/// `eval --backend cuda-sim` runs; `--backend cuda` without a driver is a clear error.
#[test]
fn cuda_packages_build_and_run_on_the_simulator() {
    let tmp = tempfile::tempdir().unwrap();
    let cache = tmp.path().join("cache");
    let out = tmp.path().join("pkg");
    let spec = fixture("gpt2/model.arch");
    let o = archc(
        &[
            "build",
            &spec,
            "--target",
            "cuda",
            "--sm",
            "90",
            "--sim",
            "--attention-mask",
            "-o",
            out.to_str().unwrap(),
        ],
        &cache,
    );
    assert!(o.status.success(), "{}", text(&o));
    for f in [
        "manifest.json",
        "kernels.ptx",
        "kernels.sim.so",
        "kernels.txt",
        "kernels.ll",
    ] {
        assert!(out.join(f).is_file(), "{f} missing: {}", text(&o));
    }
    assert!(!out.join("kernels.so").exists());
    let ptx = std::fs::read_to_string(out.join("kernels.ptx")).unwrap();
    assert!(
        ptx.contains(".target sm_90") && ptx.contains(".entry"),
        "{}",
        &ptx[..400.min(ptx.len())]
    );
    let m: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("manifest.json")).unwrap()).unwrap();
    assert_eq!(m["target"]["kind"], "cuda");
    assert_eq!(m["target"]["isa"], "sm_90");
    for k in m["kernels"].as_array().unwrap() {
        assert_eq!(k["launch"]["block"], 256, "{k}");
    }
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/hf/gpt2");
    let want = read_values(&dir.join("outputs.safetensors")).unwrap();
    for (backend, target) in [
        ("cuda-sim", out.to_str().unwrap().to_string()),
        ("cuda", spec.clone()),
    ] {
        let result = tmp.path().join(format!("{backend}.safetensors"));
        let o = eval_gpt2_fixture(&target, backend, &result, &cache);
        if backend == "cuda" && !o.status.success() {
            assert!(text(&o).contains("no CUDA driver"), "{}", text(&o));
            assert!(!text(&o).contains("panicked"), "{}", text(&o));
            continue;
        }
        assert!(o.status.success(), "{backend}: {}", text(&o));
        let err = first_row_error(&result, &want);
        assert!(err <= 1e-4, "{backend}: relative error {err:e}");
    }
}

#[test]
fn clear_errors() {
    let tmp = tempfile::tempdir().unwrap();
    let spec = fixture("gpt2/model.arch");
    let cases: &[(&[&str], &str)] = &[
        (
            &["build", &spec, "--target", "cuda", "--sm", "75"],
            "sm_80 (Ampere) and sm_90",
        ),
        (
            &["build", &spec, "--target", "cuda", "--quant", "q3_k"],
            "unknown --quant `q3_k`",
        ),
        (&["build", &spec, "--sim"], "--sim goes with --target cuda"),
        (
            &["bench", &spec, "--mode", "train", "--seq", "100"],
            "longer than the model's context",
        ),
        (
            &["build", &spec, "--mode", "train", "--output", "logits"],
            "train package outputs",
        ),
        (
            &["bench", &spec, "--mode", "decode", "--prompt", "16"],
            "past the model's context",
        ),
        (
            &["bench", &spec, "--mode", "decode", "--new", "1"],
            "at least 2",
        ),
        (&["bench", &spec, "--seq", "0"], "at least 1"),
        (&["bench", &spec, "--seq", "100000"], "context"),
        (&["build", "no/such/file.arch"], "cannot read"),
    ];
    for (args, want) in cases {
        let o = archc(args, tmp.path());
        assert!(!o.status.success(), "{args:?} succeeded");
        assert!(text(&o).contains(want), "{args:?}: {}", text(&o));
        assert!(!text(&o).contains("panicked"), "{args:?}: {}", text(&o));
    }
}

/// `bench --backend cuda-sim` times every mode on the cuda packages (the simulator: it
/// checks that they run, not speed); the train step's loss after one update from the
/// same weights and batch is the CPU's. `--backend cuda` without a driver is a clear error.
#[test]
fn bench_on_cuda_packages() {
    let tmp = tempfile::tempdir().unwrap();
    let spec = fixture("gpt2/model.arch");
    let json = |args: &[&str]| -> serde_json::Value {
        let mut all = vec!["bench", &spec, "--json"];
        all.extend_from_slice(args);
        let o = archc(&all, tmp.path());
        assert!(o.status.success(), "{}", text(&o));
        serde_json::from_slice(&o.stdout).unwrap_or_else(|e| panic!("{e}: {}", text(&o)))
    };
    let sim = ["--backend", "cuda-sim"];
    let prefill = json(
        &[
            &sim[..],
            &["--batch", "2", "--seq", "8", "--reps", "1", "--warmup", "0"],
        ]
        .concat(),
    );
    assert!(prefill["median_ms"].as_f64().unwrap() > 0.0);
    assert_eq!(prefill["threads"], 0);
    let decode = json(
        &[
            &sim[..],
            &[
                "--mode", "decode", "--batch", "2", "--prompt", "4", "--new", "3", "--reps", "1",
            ],
        ]
        .concat(),
    );
    assert!(decode["tokens_per_s"].as_f64().unwrap() > 0.0);
    let train = [
        "--mode", "train", "--batch", "2", "--seq", "8", "--reps", "1", "--warmup", "1",
    ];
    let on_sim = json(&[&sim[..], &train[..]].concat());
    let on_cpu = json(&train);
    let (a, b) = (
        on_sim["loss"].as_f64().unwrap(),
        on_cpu["loss"].as_f64().unwrap(),
    );
    assert!(
        (a - b).abs() <= 1e-4 * b.abs(),
        "cuda-sim loss {a}, cpu {b}"
    );
    if arch_runtime::device::cuda::driver_present().is_err() {
        let o = archc(&["bench", &spec, "--backend", "cuda"], tmp.path());
        assert!(!o.status.success());
        let e = text(&o);
        assert!(
            e.contains("no CUDA driver") && !e.contains("panicked"),
            "{e}"
        );
    }
}

/// `archc build --target cuda --dtype bf16|f16`: the matrices are stored in the half type
/// (the manifest says so) and the package runs on the simulator (`eval --backend
/// cuda-sim`) within the half type's rounding of transformers' f32 logits, f16 closer;
/// a CPU build refuses `--dtype bf16` with what to use instead, training refuses any
/// half type, and an unknown type is refused.
/// A package whose simulator library speaks another interface than the runtime's (built
/// by another archc) is refused with what to do, not run.
#[test]
fn stale_simulator_libraries_are_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let cache = tmp.path().join("cache");
    let spec = fixture("gpt2/model.arch");
    let (sim, cpu) = (tmp.path().join("sim"), tmp.path().join("cpu"));
    for (dir, target) in [(&sim, &["--target", "cuda", "--sim"][..]), (&cpu, &[][..])] {
        let mut args = vec!["build", spec.as_str(), "--attention-mask"];
        args.extend(target);
        args.extend(["-o", dir.to_str().unwrap()]);
        let o = archc(&args, &cache);
        assert!(o.status.success(), "{}", text(&o));
    }
    let result = tmp.path().join("out.safetensors");
    let o = eval_gpt2_fixture(sim.to_str().unwrap(), "cuda-sim", &result, &cache);
    assert!(o.status.success(), "as built: {}", text(&o));
    // A shared library without the interface version (the CPU package's kernels).
    std::fs::copy(cpu.join("kernels.so"), sim.join("kernels.sim.so")).unwrap();
    let o = eval_gpt2_fixture(sim.to_str().unwrap(), "cuda-sim", &result, &cache);
    assert!(!o.status.success(), "a foreign library ran");
    assert!(text(&o).contains("simulator interface"), "{}", text(&o));
}

#[test]
fn dtype_builds_run_on_the_simulator() {
    let tmp = tempfile::tempdir().unwrap();
    let cache = tmp.path().join("cache");
    let spec = fixture("gpt2/model.arch");
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/hf/gpt2");
    let want = read_values(&dir.join("outputs.safetensors")).unwrap();
    let mut errs = Vec::new();
    let mut logits = Vec::new();
    // `archc build --target cuda --sm SM --dtype DTYPE [EXTRA]` with `ARCHC_MMA=MMA` and
    // `ARCHC_STAGES=STAGES` (empty: the tiling's own).
    let build_staged =
        |dtype: &str, sm: &str, mma: &str, stages: &str, out: &Path, extra: &[&str]| {
            let mut c = Command::new(env!("CARGO_BIN_EXE_archc"));
            c.args([
                "build", &spec, "--target", "cuda", "--sm", sm, "--dtype", dtype,
            ])
            .args(extra)
            .args(["-o", out.to_str().unwrap()])
            .env("ARCHC_CACHE", &cache)
            .env("ARCHC_MMA", mma);
            if !stages.is_empty() {
                c.env("ARCHC_STAGES", stages);
            }
            c.output().expect("archc runs")
        };
    let build = |dtype: &str, sm: &str, mma: &str, out: &Path, extra: &[&str]| {
        build_staged(dtype, sm, mma, "", out, extra)
    };
    // `ARCHC_MMA=wgmma` (Hopper's warpgroup products) on an sm_90 bf16 build: sm_90a PTX
    // with its matmul tiles on `wgmma`, and a simulator library (in the GPU's 256-thread
    // blocks) that computes what the `mma.sync` tiles compute — the same products summed
    // in the same order, so the same bits. Four stages (`ARCHC_STAGES`): 80 KiB per block,
    // dynamic shared memory in the PTX and the manifest, the same bits again.
    for (dtype, sm, mma, stages) in [
        ("bf16", "80", "mma", ""),
        ("f16", "80", "mma", ""),
        ("bf16", "90", "wgmma", ""),
        ("bf16", "80", "mma", "4"),
    ] {
        let out = tmp.path().join(format!("{dtype}_{mma}{stages}"));
        let o = build_staged(dtype, sm, mma, stages, &out, &["--sim", "--attention-mask"]);
        assert!(o.status.success(), "{dtype} {mma}: {}", text(&o));
        let ptx = std::fs::read_to_string(out.join("kernels.ptx")).unwrap();
        assert_eq!(
            ptx.contains(".extern .shared"),
            !stages.is_empty(),
            "{mma} {stages}"
        );
        assert_eq!(ptx.contains(".target sm_90a"), mma == "wgmma", "{mma}");
        assert_eq!(ptx.contains("wgmma.mma_async"), mma == "wgmma", "{mma}");
        let m: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(out.join("manifest.json")).unwrap())
                .unwrap();
        let stored = m["params"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|p| p["storage"] == dtype)
            .count();
        assert!(stored >= 8, "{dtype}: {stored} matrices stored in it");
        // Activations between elementwise kernels and matmuls are kept in it too.
        let half_temps = m["buffers"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|b| b["kind"] == "temp" && b["dtype"] == dtype)
            .count();
        assert!(half_temps >= 4, "{dtype}: {half_temps} temporaries in it");
        let cpu = if mma == "wgmma" { "sm_90a" } else { "sm_80" };
        assert_eq!(m["target"]["cpu"], cpu, "{mma}");
        let dynamic = m["kernels"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|k| k["launch"]["dynamic_shared"] == true)
            .map(|k| k["launch"]["shared_bytes"].as_u64().unwrap())
            .max();
        assert_eq!(
            dynamic,
            (!stages.is_empty()).then_some(80 << 10),
            "{stages}"
        );
        let result = tmp
            .path()
            .join(format!("{dtype}_{mma}{stages}.safetensors"));
        let o = eval_gpt2_fixture(out.to_str().unwrap(), "cuda-sim", &result, &cache);
        assert!(o.status.success(), "{dtype}: {}", text(&o));
        errs.push(first_row_error(&result, &want));
        logits.push(
            read_values(&result).unwrap()["logits"]
                .as_f32()
                .unwrap()
                .clone(),
        );
    }
    assert_eq!(logits[0].data, logits[2].data, "wgmma and mma.sync differ");
    assert_eq!(logits[0].data, logits[3].data, "four stages and two differ");
    // sm_80 has no wgmma: the request leaves its build as it was; an unknown value is a
    // clear error, checked before the cache.
    let out = tmp.path().join("sm80_wgmma");
    let o = build("bf16", "80", "wgmma", &out, &[]);
    assert!(o.status.success(), "{}", text(&o));
    assert!(!std::fs::read_to_string(out.join("kernels.ptx"))
        .unwrap()
        .contains("wgmma"));
    let o = build("bf16", "90", "tensor", &tmp.path().join("bad"), &[]);
    assert!(!o.status.success() && !text(&o).contains("panicked"));
    assert!(text(&o).contains("ARCHC_MMA=tensor"), "{}", text(&o));
    let o = build_staged("bf16", "80", "mma", "9", &tmp.path().join("bad"), &[]);
    assert!(!o.status.success() && !text(&o).contains("panicked"));
    assert!(text(&o).contains("ARCHC_STAGES=9"), "{}", text(&o));
    let o = Command::new(env!("CARGO_BIN_EXE_archc"))
        .args(["build", &spec, "--target", "cuda", "-o"])
        .arg(tmp.path().join("bad"))
        .env("ARCHC_CACHE", &cache)
        .env("ARCHC_LDMATRIX", "yes")
        .output()
        .expect("archc runs");
    assert!(!o.status.success() && !text(&o).contains("panicked"));
    assert!(text(&o).contains("ARCHC_LDMATRIX=yes"), "{}", text(&o));
    let (bf16, f16) = (errs[0], errs[1]);
    assert!(bf16 < 3e-2 && bf16 > 1e-4, "bf16: relative error {bf16:e}");
    assert!(
        f16 < 4e-3 && f16 < bf16,
        "f16: relative error {f16:e} (bf16 {bf16:e})"
    );
    let o = archc(&["build", &spec, "--dtype", "bf16"], &cache);
    assert!(!o.status.success());
    assert!(text(&o).contains("--quant bf16"), "{}", text(&o));
    let o = archc(
        &["build", &spec, "--target", "cuda", "--dtype", "f8"],
        &cache,
    );
    assert!(
        !o.status.success() && !text(&o).contains("panicked"),
        "{}",
        text(&o)
    );
    // Training keeps f32 products.
    for args in [
        &[
            "bench",
            &spec,
            "--mode",
            "train",
            "--backend",
            "cuda-sim",
            "--dtype",
            "bf16",
        ][..],
        &[
            "build", &spec, "--target", "cuda", "--mode", "train", "--dtype", "f16",
        ][..],
    ] {
        let o = archc(args, &cache);
        assert!(!o.status.success(), "{args:?}");
        assert!(text(&o).contains("no --dtype"), "{args:?}: {}", text(&o));
    }
}

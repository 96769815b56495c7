//! GGUF files (`tools/make_gguf_fixtures.py`): every tensor type dequantized bit for bit as
//! gguf-py does; tiny LLaMA, GPT-2 and Mamba models written as llama.cpp's converter writes them,
//! in F32, F16, BF16, Q8_0, Q4_0, Q4_1, Q5_0 and Q5_1, imported with `archc import-gguf` and
//! run with `--weights FILE.gguf`: logits within 1e-4 of transformers' (which dequantizes the
//! same file and undoes the same q/k permutation) and the same greedy tokens; hostile files —
//! truncated, offsets past the end, overflowing shapes, unknown types, huge counts, strings
//! that are not UTF-8 — are errors, never a panic.

mod common;

use arch_runtime::gguf::{GgmlType, Gguf};
use archc::interp::Value;
use archc::tensor_io::read_values;
use common::fixture;
use std::path::Path;
use std::process::{Command, Output};

const TYPES: &[&str] = &["f32", "f16", "bf16", "q8_0", "q4_0", "q4_1", "q5_0", "q5_1"];

fn archc(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_archc"))
        .args(args)
        .env("ARCHC_CACHE", std::env::temp_dir().join("archc-test-cache"))
        .output()
        .expect("archc runs")
}

fn ok(o: &Output, what: &str) {
    assert!(
        o.status.success(),
        "{what}: {}",
        String::from_utf8_lossy(&o.stderr)
    );
}

/// An error exit with a message and no panic.
fn fails_cleanly(o: &Output, what: &str) -> String {
    let err = String::from_utf8_lossy(&o.stderr).into_owned();
    assert!(!o.status.success(), "{what}: should fail");
    assert!(!err.contains("panicked"), "{what}: panicked:\n{err}");
    assert!(err.contains("error"), "{what}: no error message:\n{err}");
    err
}

fn f32s(path: &Path, name: &str) -> archc::tensor::F32Tensor {
    match read_values(path).unwrap().remove(name) {
        Some(Value::F(t)) => t,
        other => panic!("{}: `{name}` is {other:?}", path.display()),
    }
}

fn ints(path: &Path, name: &str) -> Vec<i64> {
    match read_values(path).unwrap().remove(name) {
        Some(Value::I(t)) => t.data,
        other => panic!("{}: `{name}` is {other:?}", path.display()),
    }
}

#[test]
fn dequantization_equals_gguf_py_bit_for_bit() {
    let dir = fixture("gguf");
    let bytes = std::fs::read(dir.join("dequant.gguf")).unwrap();
    let g = Gguf::parse(&bytes).unwrap();
    let expected = read_values(&dir.join("dequant.safetensors")).unwrap();
    let mut types = Vec::new();
    for t in &g.tensors {
        let got = g.to_f32(t);
        let Some(Value::F(want)) = expected.get(&t.name) else {
            panic!("no expected values for `{}`", t.name)
        };
        assert_eq!(got.len(), want.data.len(), "{}", t.name);
        for (i, (a, b)) in got.iter().zip(&want.data).enumerate() {
            assert_eq!(
                a.to_bits(),
                b.to_bits(),
                "{} [{i}]: {a} vs gguf-py {b}",
                t.name
            );
        }
        types.push(t.ty);
    }
    for ty in [
        GgmlType::F32,
        GgmlType::F16,
        GgmlType::BF16,
        GgmlType::Q8_0,
        GgmlType::Q4_0,
        GgmlType::Q4_1,
        GgmlType::Q5_0,
        GgmlType::Q5_1,
        GgmlType::Q4_K,
        GgmlType::Q5_K,
        GgmlType::Q6_K,
    ] {
        assert!(types.contains(&ty), "{ty:?} is checked");
    }
}

/// `archc eval` then `archc generate` (6 new tokens) of spec `s` with weights `m` on
/// inputs `i` (extra arguments `more`, e.g. a backend): the logits within 1e-4 of
/// `expected`'s and, when `tokens`, the same greedy tokens.
fn eval_and_generate(
    s: &str,
    m: &str,
    i: &str,
    expected: &Path,
    more: &[&str],
    tokens: bool,
    what: &str,
) {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("out.safetensors");
    let o = out.to_str().unwrap();
    let mut eval = vec!["eval", s, "--weights", m, "--inputs", i, "--out", o];
    eval.extend_from_slice(more);
    ok(&archc(&eval), &format!("{what}: eval"));
    let err = f32s(&out, "logits").rel_max_diff(&f32s(expected, "logits"));
    eprintln!("{what}: logits {err:.1e}");
    assert!(err <= 1e-4, "{what}: logits differ by {err:e}");
    if !tokens {
        return;
    }
    let mut gen = vec![
        "generate",
        s,
        "--weights",
        m,
        "--inputs",
        i,
        "--max-new-tokens",
        "6",
        "--out",
        o,
    ];
    gen.extend_from_slice(more);
    ok(&archc(&gen), &format!("{what}: generate"));
    assert_eq!(
        ints(&out, "tokens"),
        ints(expected, "tokens"),
        "{what}: greedy tokens"
    );
}

fn model_matches_transformers(arch: &str) {
    let dir = fixture(&format!("gguf/{arch}"));
    let inputs = fixture("gguf/inputs.safetensors");
    let tmp = tempfile::tempdir().unwrap();
    let spec = tmp.path().join("model.arch");
    for ty in TYPES {
        let model = dir.join(format!("model-{ty}.gguf"));
        let expected = dir.join(format!("expected-{ty}.safetensors"));
        let (m, s) = (model.to_str().unwrap(), spec.to_str().unwrap());
        ok(
            &archc(&["import-gguf", m, "-o", s, "--name", "tiny"]),
            "import-gguf",
        );
        let i = inputs.to_str().unwrap();
        eval_and_generate(s, m, i, &expected, &[], true, &format!("{arch} {ty}"));
    }
}

#[test]
fn llama_gguf_matches_transformers() {
    model_matches_transformers("llama");
}

#[test]
fn gpt2_gguf_matches_transformers() {
    model_matches_transformers("gpt2");
}

#[test]
fn mamba_gguf_matches_transformers() {
    model_matches_transformers("mamba");
}

/// Llama 3.1's RoPE scaling as llama.cpp's converter stores it (`rope_freqs.weight`, the
/// per-pair divisors): `import-gguf` recovers the parameters, and the model computes what the
/// Hugging Face model with that `rope_scaling` computes (transformers' own GGUF loader ignores
/// `rope_freqs`). A spec whose RoPE is not the file's is refused.
#[test]
fn llama3_scaled_rope_gguf_matches_the_hugging_face_model() {
    let dir = fixture("gguf/llama3_rope");
    let model = dir.join("model-f32.gguf");
    let expected = dir.join("expected-f32.safetensors");
    let inputs = dir.join("inputs.safetensors");
    let tmp = tempfile::tempdir().unwrap();
    let spec = tmp.path().join("model.arch");
    let (m, s, i) = (
        model.to_str().unwrap(),
        spec.to_str().unwrap(),
        inputs.to_str().unwrap(),
    );
    ok(
        &archc(&["import-gguf", m, "-o", s, "--name", "tiny"]),
        "import",
    );
    let text = std::fs::read_to_string(&spec).unwrap();
    assert!(
        text.contains("scaling = llama3, factor = 8.0, low_freq_factor = 1.0, high_freq_factor = 4.0, original_context = 64"),
        "{text}"
    );
    eval_and_generate(s, m, i, &expected, &[], true, "llama3_rope");
    let out = tmp.path().join("out.safetensors");
    let o = out.to_str().unwrap();
    // The same file under a spec without the scaling.
    let plain = tmp.path().join("plain.arch");
    let unscaled = text
        .lines()
        .map(|l| {
            if l.trim_start().starts_with("position =") {
                "    position = rope(theta = 10000.0)".to_string()
            } else {
                l.to_string()
            }
        })
        .collect::<Vec<_>>()
        .join("\n");
    std::fs::write(&plain, unscaled).unwrap();
    let p = plain.to_str().unwrap();
    let e = fails_cleanly(
        &archc(&["eval", p, "--weights", m, "--inputs", i, "--out", o]),
        "unscaled spec",
    );
    assert!(
        e.contains("RoPE scaling (llama3, factor 8") && e.contains("is not the spec's (none)"),
        "{e}"
    );
}

/// The cuda backend keeps a GGUF file's matrices in their type too (uploaded as stored,
/// decoded by the kernels): through the host simulator of the device session, the same
/// logits as transformers for half, legacy and K-quant types, and the same greedy tokens.
#[test]
fn gguf_weights_run_on_cuda_sim() {
    let tmp = tempfile::tempdir().unwrap();
    let spec = tmp.path().join("m.arch");
    let s = spec.to_str().unwrap();
    let i = fixture("gguf/inputs.safetensors");
    let i = i.to_str().unwrap();
    let q4k = tmp.path().join("q4_k.gguf");
    ok(
        &archc(&[
            "quantize",
            fixture("gguf/llama256/model-q8_0.gguf").to_str().unwrap(),
            "--type",
            "q4_k",
            "-o",
            q4k.to_str().unwrap(),
        ]),
        "quantize",
    );
    let cases = [
        (
            fixture("gguf/llama/model-bf16.gguf"),
            fixture("gguf/llama/expected-bf16.safetensors"),
        ),
        (
            fixture("gguf/llama/model-f16.gguf"),
            fixture("gguf/llama/expected-f16.safetensors"),
        ),
        (
            fixture("gguf/llama/model-q5_1.gguf"),
            fixture("gguf/llama/expected-q5_1.safetensors"),
        ),
        (q4k, fixture("gguf/llama256/expected-q4_k.safetensors")),
    ];
    // Every type's logits; the last (Q4_K) generates too.
    for (n, (model, expected)) in cases.iter().enumerate() {
        let m = model.to_str().unwrap();
        ok(
            &archc(&["import-gguf", m, "-o", s, "--name", "tiny"]),
            "import",
        );
        let tokens = n + 1 == cases.len();
        let what = format!("{m} on cuda-sim");
        eval_and_generate(s, m, i, expected, &["--backend", "cuda-sim"], tokens, &what);
    }
    let m = cases[3].0.to_str().unwrap();
    // The package the device ran keeps the matrices as blocks.
    let pkg = tmp.path().join("pkg");
    ok(
        &archc(&[
            "build",
            s,
            "--target",
            "cuda",
            "--weights",
            m,
            "-o",
            pkg.to_str().unwrap(),
        ]),
        "build",
    );
    let manifest = std::fs::read_to_string(pkg.join("manifest.json")).unwrap();
    assert!(manifest.contains("\"storage\": \"q4_k\""), "{manifest}");
}

#[test]
fn import_gguf_writes_the_hugging_face_spec() {
    let o = archc(&[
        "import-gguf",
        fixture("gguf/llama/model-q8_0.gguf").to_str().unwrap(),
    ]);
    ok(&o, "import-gguf");
    let text = String::from_utf8_lossy(&o.stdout);
    for want in [
        "vocab = 48",
        "d_model = 32",
        "context = 32",
        "norm = rmsnorm(eps = 1e-5)",
        "position = rope(theta = 10000.0)",
        "attention { heads = 4  kv_heads = 2 }",
        "mlp { hidden = 64  act = swiglu }",
        "embed { tied = false }",
    ] {
        assert!(text.contains(want), "`{want}` in\n{text}");
    }
}

// ---- hostile files -------------------------------------------------------------------------

/// A GGUF file from parts: metadata as (key, type, value bytes), tensors as (name, ne, type,
/// offset), then `data`.
fn build(
    kv: &[(&str, u32, Vec<u8>)],
    tensors: &[(&str, Vec<u64>, u32, u64)],
    data: &[u8],
) -> Vec<u8> {
    let mut b = Vec::new();
    b.extend_from_slice(b"GGUF");
    b.extend_from_slice(&3u32.to_le_bytes());
    b.extend_from_slice(&(tensors.len() as u64).to_le_bytes());
    b.extend_from_slice(&(kv.len() as u64).to_le_bytes());
    let string = |b: &mut Vec<u8>, s: &[u8]| {
        b.extend_from_slice(&(s.len() as u64).to_le_bytes());
        b.extend_from_slice(s);
    };
    for (k, t, v) in kv {
        string(&mut b, k.as_bytes());
        b.extend_from_slice(&t.to_le_bytes());
        b.extend_from_slice(v);
    }
    for (name, ne, ty, off) in tensors {
        string(&mut b, name.as_bytes());
        b.extend_from_slice(&(ne.len() as u32).to_le_bytes());
        for d in ne {
            b.extend_from_slice(&d.to_le_bytes());
        }
        b.extend_from_slice(&ty.to_le_bytes());
        b.extend_from_slice(&off.to_le_bytes());
    }
    while b.len() % 32 != 0 {
        b.push(0);
    }
    b.extend_from_slice(data);
    b
}

fn str_value(s: &[u8]) -> Vec<u8> {
    let mut v = (s.len() as u64).to_le_bytes().to_vec();
    v.extend_from_slice(s);
    v
}

fn parse_err(bytes: &[u8]) -> String {
    match Gguf::parse(bytes) {
        Ok(_) => panic!("accepted a hostile file"),
        Err(e) => e.to_string(),
    }
}

#[test]
fn hostile_files_are_errors() {
    let arch = ("general.architecture", 8, str_value(b"llama"));
    let data = vec![0u8; 64];
    let good = build(
        std::slice::from_ref(&arch),
        &[("w", vec![4, 2], 0, 0)],
        &data,
    );
    assert!(Gguf::parse(&good).is_ok());
    // Offsets past the end.
    let e = parse_err(&build(
        std::slice::from_ref(&arch),
        &[("w", vec![4, 2], 0, 64)],
        &data,
    ));
    assert!(e.contains("past the end"), "{e}");
    // A shape whose element count overflows.
    let e = parse_err(&build(
        std::slice::from_ref(&arch),
        &[("w", vec![1 << 32, 1 << 32, 1 << 32], 0, 0)],
        &data,
    ));
    assert!(e.contains("shape"), "{e}");
    // An unknown tensor type, and one archc does not read.
    let e = parse_err(&build(
        std::slice::from_ref(&arch),
        &[("w", vec![4, 2], 99, 0)],
        &data,
    ));
    assert!(e.contains("type 99"), "{e}");
    let e = parse_err(&build(
        std::slice::from_ref(&arch),
        &[("w", vec![256], 10, 0)],
        &data,
    ));
    assert!(e.contains("Q2_K"), "{e}");
    // Rows that are not whole blocks.
    let e = parse_err(&build(
        std::slice::from_ref(&arch),
        &[("w", vec![20], 8, 0)],
        &data,
    ));
    assert!(e.contains("blocks"), "{e}");
    // Huge counts: an array of 2⁶² strings, a 2⁶⁰-byte string, 2⁶³ tensors.
    let mut huge = 8u32.to_le_bytes().to_vec();
    huge.extend_from_slice(&(1u64 << 62).to_le_bytes());
    let e = parse_err(&build(&[("tokenizer.ggml.tokens", 9, huge)], &[], &data));
    assert!(e.contains("does not fit"), "{e}");
    let e = parse_err(&build(
        &[("k", 8, (1u64 << 60).to_le_bytes().to_vec())],
        &[],
        &data,
    ));
    assert!(e.contains("claims"), "{e}");
    let mut many = good.clone();
    many[8..16].copy_from_slice(&(1u64 << 63).to_le_bytes());
    assert!(parse_err(&many).contains("cannot fit"));
    // A string that is not UTF-8.
    let e = parse_err(&build(
        &[("general.name", 8, str_value(b"\xff\xfe"))],
        &[],
        &data,
    ));
    assert!(e.contains("UTF-8"), "{e}");
    // Too many dimensions; an unknown value type; a wrong version.
    let e = parse_err(&build(
        std::slice::from_ref(&arch),
        &[("w", vec![1; 7], 0, 0)],
        &data,
    ));
    assert!(e.contains("dimensions"), "{e}");
    let e = parse_err(&build(&[("k", 77, vec![0; 8])], &[], &data));
    assert!(e.contains("value type"), "{e}");
    let mut v9 = good.clone();
    v9[4] = 9;
    assert!(parse_err(&v9).contains("version"));

    // Every cut of a real file, and seeded byte flips: an error or a readable file.
    let real = std::fs::read(fixture("gguf/llama/model-q4_0.gguf")).unwrap();
    let header_end = Gguf::parse(&real).unwrap().tensors.len() * 40;
    for n in (0..real.len())
        .step_by(61)
        .chain(0..header_end.min(real.len()))
    {
        if let Ok(g) = Gguf::parse(&real[..n]) {
            panic!(
                "a file cut at {n} bytes parsed ({} tensors)",
                g.tensors.len()
            );
        }
    }
    let mut state = 0x1234_5678_9abc_def0u64;
    for _ in 0..3000 {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        let mut c = real.clone();
        let at = (state % c.len() as u64) as usize;
        c[at] ^= (state >> 32) as u8 | 1;
        if let Ok(g) = Gguf::parse(&c) {
            for t in &g.tensors {
                assert_eq!(g.to_f32(t).len(), t.numel());
            }
        }
    }
}

#[test]
fn hostile_files_through_the_commands() {
    let tmp = tempfile::tempdir().unwrap();
    let real = std::fs::read(fixture("gguf/llama/model-q4_0.gguf")).unwrap();
    let cut = tmp.path().join("cut.gguf");
    std::fs::write(&cut, &real[..real.len() * 2 / 3]).unwrap();
    let spec = tmp.path().join("m.arch");
    let m = fixture("gguf/llama/model-q4_0.gguf");
    ok(
        &archc(&[
            "import-gguf",
            m.to_str().unwrap(),
            "-o",
            spec.to_str().unwrap(),
            "--name",
            "tiny",
        ]),
        "import",
    );
    let out = tmp.path().join("o.safetensors");
    let i = fixture("gguf/inputs.safetensors");
    let e = fails_cleanly(
        &archc(&[
            "eval",
            spec.to_str().unwrap(),
            "--weights",
            cut.to_str().unwrap(),
            "--inputs",
            i.to_str().unwrap(),
            "--out",
            out.to_str().unwrap(),
        ]),
        "eval of a truncated file",
    );
    assert!(e.contains("past the end"), "{e}");
    assert!(!out.exists(), "no output from a failed run");
    let e = fails_cleanly(
        &archc(&["import-gguf", cut.to_str().unwrap()]),
        "import of a cut file",
    );
    assert!(e.contains("past the end"), "{e}");
    // Another architecture is named.
    let data = vec![0u8; 32];
    let falcon = build(
        &[("general.architecture", 8, str_value(b"falcon"))],
        &[("w", vec![4, 2], 0, 0)],
        &data,
    );
    let f = tmp.path().join("falcon.gguf");
    std::fs::write(&f, falcon).unwrap();
    let e = fails_cleanly(&archc(&["import-gguf", f.to_str().unwrap()]), "falcon");
    assert!(e.contains("`falcon`"), "{e}");
    // Safetensors is not GGUF.
    let e = fails_cleanly(&archc(&["import-gguf", i.to_str().unwrap()]), "not gguf");
    assert!(e.contains("not a GGUF file"), "{e}");
    // RoPE frequency divisors (`rope_freqs.weight`) that are not Llama 3's: too few, not
    // positive, or no parameters reproduce them; and a scaling kind specs cannot say.
    let u32v = |x: u32| x.to_le_bytes().to_vec();
    let llama = |extra: &[(&str, u32, Vec<u8>)], freqs: &[f32]| {
        let mut kv = vec![
            ("general.architecture", 8, str_value(b"llama")),
            ("llama.embedding_length", 4, u32v(32)),
            ("llama.attention.head_count", 4, u32v(4)),
            ("llama.feed_forward_length", 4, u32v(64)),
            ("llama.block_count", 4, u32v(1)),
            ("llama.context_length", 4, u32v(64)),
            ("llama.vocab_size", 4, u32v(48)),
        ];
        kv.extend(extra.iter().cloned());
        let data: Vec<u8> = freqs.iter().flat_map(|f| f.to_le_bytes()).collect();
        build(
            &kv,
            &[("rope_freqs.weight", vec![freqs.len() as u64], 0, 0)],
            &data,
        )
    };
    let yarn = [("llama.rope.scaling.type", 8, str_value(b"yarn"))];
    for (name, bytes, want) in [
        ("short", llama(&[], &[1.0, 8.0, 8.0]), "has 3 values"),
        (
            "nan",
            llama(&[], &[1.0, f32::NAN, 8.0, 8.0]),
            "not a positive number",
        ),
        (
            "odd",
            llama(&[], &[8.0, 1.0, 8.0, 1.0]),
            "not Llama 3.1's RoPE scaling",
        ),
        ("yarn", llama(&yarn, &[1.0; 4]), "scales RoPE as `yarn`"),
    ] {
        let f = tmp.path().join(format!("{name}.gguf"));
        std::fs::write(&f, bytes).unwrap();
        let e = fails_cleanly(&archc(&["import-gguf", f.to_str().unwrap()]), name);
        assert!(e.contains(want), "{name}: {e}");
    }
}

/// `--tokenizer FILE.gguf`: llama.cpp's two tokenizer kinds rebuilt as Hugging Face
/// tokenizers give the ids of the originals — the byte-level BPE tokenizer the repository
/// ships (`gpt2` kind) and a SentencePiece BPE model with byte fallback (`llama` kind, BOS
/// added) — and decode back to the text.
#[test]
fn tokenizers_from_gguf_encode_as_the_originals() {
    let dir = fixture("gguf");
    let expected: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(dir.join("tokenizer-expected.json")).unwrap(),
    )
    .unwrap();
    let texts: Vec<String> = expected["texts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t.as_str().unwrap().to_string())
        .collect();
    for kind in ["gpt2", "llama"] {
        let tok = archc::tokenize::Tokenizer::load(&dir.join(format!("tokenizer-{kind}.gguf")))
            .unwrap_or_else(|e| panic!("{kind}: {e}"));
        for (text, want) in texts.iter().zip(expected[kind].as_array().unwrap()) {
            let want: Vec<i64> = want
                .as_array()
                .unwrap()
                .iter()
                .map(|v| v.as_i64().unwrap())
                .collect();
            let got = tok
                .encode_batch(std::slice::from_ref(text), true, 1024)
                .unwrap();
            let ids: Vec<i64> = got.ids[..got.lengths()[0]].to_vec();
            assert_eq!(ids, want, "{kind}: {text:?}");
            let back = tok.decode(&ids, true).unwrap();
            assert_eq!(&back, text, "{kind}: decode");
        }
    }
}

/// `--chat`: the GGUF file's chat template renders a prompt as transformers'
/// `apply_chat_template` does (Jinja with trim_blocks / lstrip_blocks; LLaMA-2's template
/// calls `str.strip`, `raise_exception` and `loop.index0`; ChatML's the generation prompt).
#[test]
fn chat_templates_render_as_transformers() {
    let dir = fixture("gguf");
    let expected: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(dir.join("tokenizer-expected.json")).unwrap(),
    )
    .unwrap();
    let prompt = expected["chat_prompt"].as_str().unwrap();
    for kind in ["gpt2", "llama"] {
        let path = dir.join(format!("tokenizer-{kind}.gguf"));
        let bytes = std::fs::read(&path).unwrap();
        let g = Gguf::parse(&bytes).unwrap();
        let got = archc::gguf_tokenizer::chat_prompt(&g, prompt).unwrap();
        assert_eq!(got, expected["chat"][kind].as_str().unwrap(), "{kind}");
    }
    // A tokenizer.json has no template for --chat.
    let tmp = tempfile::tempdir().unwrap();
    let spec = tmp.path().join("m.arch");
    let m = fixture("gguf/llama/model-f32.gguf");
    ok(
        &archc(&[
            "import-gguf",
            m.to_str().unwrap(),
            "-o",
            spec.to_str().unwrap(),
        ]),
        "import",
    );
    let e = fails_cleanly(
        &archc(&[
            "generate",
            spec.to_str().unwrap(),
            "--weights",
            fixture("gguf/llama/model-f32.gguf").to_str().unwrap(),
            "--tokenizer",
            concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/../data/tinytales-tokenizer.json"
            ),
            "--prompt",
            "hi",
            "--chat",
            "--max-new-tokens",
            "2",
            "--out",
            tmp.path().join("o.safetensors").to_str().unwrap(),
        ]),
        "--chat with a tokenizer.json",
    );
    assert!(e.contains("not a GGUF file"), "{e}");
}

/// The legacy quantizers (and BF16) write gguf-py's bytes, which are ggml's reference
/// quantizers' bit for bit.
#[test]
fn quantizers_equal_gguf_py_bit_for_bit() {
    let bytes = std::fs::read(fixture("gguf/quant.safetensors")).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let input: Vec<f32> = st
        .tensor("input")
        .unwrap()
        .data()
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .collect();
    for (name, ty) in [
        ("bf16", GgmlType::BF16),
        ("q8_0", GgmlType::Q8_0),
        ("q4_0", GgmlType::Q4_0),
        ("q4_1", GgmlType::Q4_1),
        ("q5_0", GgmlType::Q5_0),
        ("q5_1", GgmlType::Q5_1),
    ] {
        let want = st.tensor(name).unwrap().data().to_vec();
        let got = arch_runtime::gguf::quantize(ty, &input).unwrap();
        assert_eq!(got, want, "{name}");
    }
}

// ---- archc quantize --------------------------------------------------------------------------

/// GGUF → GGUF: the legacy types come out as gguf-py writes them, tensor for tensor.
#[test]
fn quantize_gguf_writes_gguf_py_blocks() {
    let tmp = tempfile::tempdir().unwrap();
    let src = fixture("gguf/llama/model-f32.gguf");
    for ty in ["q8_0", "q4_0", "q4_1", "q5_0", "q5_1", "f16", "bf16"] {
        let out = tmp.path().join(format!("{ty}.gguf"));
        ok(
            &archc(&[
                "quantize",
                src.to_str().unwrap(),
                "--type",
                ty,
                "-o",
                out.to_str().unwrap(),
            ]),
            ty,
        );
        let ours = std::fs::read(&out).unwrap();
        let theirs = std::fs::read(fixture(&format!("gguf/llama/model-{ty}.gguf"))).unwrap();
        let (a, b) = (Gguf::parse(&ours).unwrap(), Gguf::parse(&theirs).unwrap());
        assert_eq!(a.tensors.len(), b.tensors.len(), "{ty}");
        for t in &b.tensors {
            let mine = a.tensor(&t.name).unwrap();
            assert_eq!((mine.ty, &mine.ne), (t.ty, &t.ne), "{ty} {}", t.name);
            assert!(a.bytes(mine) == b.bytes(t), "{ty} {}: other bytes", t.name);
        }
    }
}

/// K-quants from `archc quantize` give the logits and tokens transformers computes from
/// the same files (tools/make_gguf_fixtures.py kquants).
#[test]
fn quantize_k_quants_match_transformers() {
    let tmp = tempfile::tempdir().unwrap();
    let src = fixture("gguf/llama256/model-q8_0.gguf");
    let i = fixture("gguf/inputs.safetensors");
    let spec = tmp.path().join("m.arch");
    let s = spec.to_str().unwrap();
    for ty in ["q4_k", "q5_k", "q6_k"] {
        let q = tmp.path().join(format!("{ty}.gguf"));
        let m = q.to_str().unwrap();
        ok(
            &archc(&["quantize", src.to_str().unwrap(), "--type", ty, "-o", m]),
            ty,
        );
        let bytes = std::fs::read(&q).unwrap();
        let g = Gguf::parse(&bytes).unwrap();
        let want = match ty {
            "q4_k" => GgmlType::Q4_K,
            "q5_k" => GgmlType::Q5_K,
            _ => GgmlType::Q6_K,
        };
        assert_eq!(g.tensor("blk.0.ffn_down.weight").unwrap().ty, want, "{ty}");
        ok(
            &archc(&["import-gguf", m, "-o", s, "--name", "wide"]),
            "import",
        );
        let expected = fixture(&format!("gguf/llama256/expected-{ty}.safetensors"));
        eval_and_generate(s, m, i.to_str().unwrap(), &expected, &[], true, ty);
    }
}

/// Safetensors with a config.json → GGUF: the Hugging Face fixtures of LLaMA, GPT-2 and
/// Mamba written under llama.cpp's names (q/k rows permuted, qkv fused, A = −exp(A_log))
/// read back to the Hugging Face logits.
#[test]
fn quantize_safetensors_to_gguf() {
    let tmp = tempfile::tempdir().unwrap();
    // llama3_rope: the scaled RoPE goes out as `rope_freqs.weight` and comes back.
    for arch in ["llama", "gpt2", "mamba", "llama3_rope"] {
        let hf = fixture(&format!("hf/{arch}"));
        let q = tmp.path().join(format!("{arch}.gguf"));
        let m = q.to_str().unwrap();
        ok(
            &archc(&["quantize", hf.to_str().unwrap(), "--type", "f32", "-o", m]),
            arch,
        );
        let spec = tmp.path().join(format!("{arch}.arch"));
        let s = spec.to_str().unwrap();
        ok(&archc(&["import-gguf", m, "-o", s]), "import");
        let out = tmp.path().join("o.safetensors");
        let o = out.to_str().unwrap();
        let i = hf.join("inputs.safetensors");
        ok(
            &archc(&[
                "eval",
                s,
                "--weights",
                m,
                "--inputs",
                i.to_str().unwrap(),
                "--out",
                o,
            ]),
            arch,
        );
        let err =
            f32s(&out, "logits").rel_max_diff(&f32s(&hf.join("outputs.safetensors"), "logits"));
        eprintln!("{arch}: logits {err:.1e}");
        assert!(err <= 1e-4, "{arch}: {err:e}");
    }
    // Bad requests are errors.
    let out = tmp.path().join("x.gguf");
    let o = out.to_str().unwrap();
    let llama = fixture("gguf/llama/model-f32.gguf");
    let e = fails_cleanly(
        &archc(&[
            "quantize",
            llama.to_str().unwrap(),
            "--type",
            "q3_k",
            "-o",
            o,
        ]),
        "type",
    );
    assert!(e.contains("unknown --type"), "{e}");
    let bert = fixture("hf/bert");
    let e = fails_cleanly(
        &archc(&[
            "quantize",
            bert.to_str().unwrap(),
            "--type",
            "q8_0",
            "-o",
            o,
        ]),
        "bert",
    );
    assert!(e.contains("decoder-only") || e.contains("shaped"), "{e}");
    assert!(!out.exists(), "no file from a failed run");
}

/// `archc train --init FILE.gguf`: training starts from the GGUF weights (the first loss is
/// the loss of the dequantized model) and exports Hugging Face names, not llama.cpp's.
#[test]
fn train_starts_from_gguf_weights() {
    let tmp = tempfile::tempdir().unwrap();
    let m = fixture("gguf/llama/model-q4_0.gguf");
    let spec = tmp.path().join("m.arch");
    let s = spec.to_str().unwrap();
    ok(
        &archc(&[
            "import-gguf",
            m.to_str().unwrap(),
            "-o",
            s,
            "--name",
            "tiny",
        ]),
        "import",
    );
    let out = tmp.path().join("run");
    let log = tmp.path().join("log.jsonl");
    let i = fixture("gguf/inputs.safetensors");
    ok(
        &archc(&[
            "train",
            s,
            "--data",
            i.to_str().unwrap(),
            "--init",
            m.to_str().unwrap(),
            "--batch",
            "2",
            "--steps",
            "2",
            "--lr",
            "1e-3",
            "--out",
            out.to_str().unwrap(),
            "--log",
            log.to_str().unwrap(),
        ]),
        "train",
    );
    // The first step's loss is the next-token loss of transformers' logits for the file.
    let logits = f32s(&fixture("gguf/llama/expected-q4_0.safetensors"), "logits");
    let ids = ints(&i, "input_ids");
    let (b, t, v) = (logits.shape[0], logits.shape[1], logits.shape[2]);
    let mut total = 0.0f64;
    for r in 0..b {
        for p in 0..t - 1 {
            let row = &logits.data[(r * t + p) * v..(r * t + p + 1) * v];
            let max = row.iter().copied().fold(f32::NEG_INFINITY, f32::max) as f64;
            let lse = max
                + row
                    .iter()
                    .map(|&x| (x as f64 - max).exp())
                    .sum::<f64>()
                    .ln();
            total += lse - row[ids[r * t + p + 1] as usize] as f64;
        }
    }
    let want = total / (b * (t - 1)) as f64;
    let first: serde_json::Value = serde_json::from_str(
        std::fs::read_to_string(&log)
            .unwrap()
            .lines()
            .next()
            .unwrap(),
    )
    .unwrap();
    let got = first["loss"].as_f64().unwrap();
    assert!(
        (got - want).abs() / want < 1e-4,
        "first loss {got} vs {want}"
    );
    let names = read_values(&out.join("model.safetensors")).unwrap();
    assert!(
        names.contains_key("model.layers.0.self_attn.q_proj.weight"),
        "Hugging Face names: {:?}",
        names.keys().take(4).collect::<Vec<_>>()
    );
}

/// A safetensors checkpoint in bf16 (as Hugging Face ships LLaMA): its matrices stay bf16 in
/// memory and the kernels read them as stored, computing what the same values in f32 give
/// (BERT's fixture: rows of 32 and 64 values, whole 32-value units).
#[test]
fn bf16_safetensors_stay_bf16() {
    use safetensors::tensor::{Dtype, TensorView};
    let dir = fixture("hf/bert");
    let tmp = tempfile::tempdir().unwrap();
    let values = read_values(&dir.join("model.safetensors")).unwrap();
    let mut truncated = Vec::new();
    let mut halves: Vec<(String, Vec<usize>, Vec<u8>)> = Vec::new();
    for (name, v) in values {
        let Value::F(t) = v else { continue };
        let top: Vec<u16> = t.data.iter().map(|x| (x.to_bits() >> 16) as u16).collect();
        let back = top
            .iter()
            .map(|&h| f32::from_bits((h as u32) << 16))
            .collect();
        halves.push((
            name.clone(),
            t.shape.clone(),
            top.iter().flat_map(|h| h.to_le_bytes()).collect(),
        ));
        truncated.push((
            name,
            archc::tensor::F32Tensor {
                shape: t.shape,
                data: back,
            },
        ));
    }
    let f32_path = tmp.path().join("f32.safetensors");
    archc::tensor_io::write_f32(&f32_path, &truncated).unwrap();
    let views: Vec<(String, TensorView)> = halves
        .iter()
        .map(|(n, s, b)| {
            (
                n.clone(),
                TensorView::new(Dtype::BF16, s.clone(), b).unwrap(),
            )
        })
        .collect();
    let bf16_path = tmp.path().join("bf16.safetensors");
    std::fs::write(&bf16_path, safetensors::serialize(views, None).unwrap()).unwrap();
    let spec = dir.join("model.arch");
    let (s, i) = (spec.to_str().unwrap(), dir.join("inputs.safetensors"));
    let mut logits = Vec::new();
    for w in [&f32_path, &bf16_path] {
        let out = tmp.path().join("out.safetensors");
        let args = [
            "eval",
            s,
            "--weights",
            w.to_str().unwrap(),
            "--inputs",
            i.to_str().unwrap(),
            "--out",
            out.to_str().unwrap(),
        ];
        ok(&archc(&args), "eval");
        logits.push(f32s(&out, "logits"));
    }
    let err = logits[1].rel_max_diff(&logits[0]);
    assert!(
        err <= 1e-5,
        "bf16 storage vs the same values in f32: {err:e}"
    );
    let pkg = tmp.path().join("pkg");
    let args = [
        "build",
        s,
        "--weights",
        bf16_path.to_str().unwrap(),
        "-o",
        pkg.to_str().unwrap(),
    ];
    ok(&archc(&args), "build --weights");
    let m = arch_runtime::Manifest::read(&pkg).unwrap();
    let stored = m
        .params
        .iter()
        .filter(|p| p.storage.as_deref() == Some("bf16"));
    assert!(stored.count() >= 7, "{:?}", m.params);
}

/// `--int-dots`: K-quant files decoded with integer dot products (the activations
/// quantized per 256 values to 8 bits, as llama.cpp does) give first logits near the f32
/// path's but not equal to them (later steps may follow other tokens: this random model's
/// logits are close together), on `generate` and `bench`; asking for them where they
/// cannot apply is an error.
#[test]
fn int_dots_decode_k_quants_near_the_f32_logits() {
    let tmp = tempfile::tempdir().unwrap();
    let src = fixture("gguf/llama256/model-q8_0.gguf");
    let i = fixture("gguf/inputs.safetensors");
    let i = i.to_str().unwrap();
    let spec = tmp.path().join("m.arch");
    let s = spec.to_str().unwrap();
    for ty in ["q4_k", "q6_k"] {
        let q = tmp.path().join(format!("{ty}.gguf"));
        let m = q.to_str().unwrap();
        ok(
            &archc(&["quantize", src.to_str().unwrap(), "--type", ty, "-o", m]),
            ty,
        );
        ok(
            &archc(&["import-gguf", m, "-o", s, "--name", "wide"]),
            "import",
        );
        let logits = |more: &[&str]| {
            let out = tmp.path().join(format!("{ty}{}.safetensors", more.len()));
            let o = out.to_str().unwrap();
            let mut args = vec![
                "generate",
                s,
                "--weights",
                m,
                "--inputs",
                i,
                "--max-new-tokens",
                "4",
                "--save-logits",
                "--out",
                o,
            ];
            args.extend_from_slice(more);
            ok(&archc(&args), &format!("{ty} generate {more:?}"));
            f32s(&out, "logits")
        };
        // The logits that chose the first new token, [B, vocab].
        let first = |t: archc::tensor::F32Tensor| {
            let (b, n, v) = (t.shape[0], t.shape[1], t.shape[2]);
            let data = (0..b)
                .flat_map(|r| t.data[r * n * v..r * n * v + v].to_vec())
                .collect();
            archc::tensor::F32Tensor::new(vec![b, v], data).unwrap()
        };
        let (f32_logits, int_logits) = (first(logits(&[])), first(logits(&["--int-dots"])));
        let err = int_logits.rel_max_diff(&f32_logits);
        eprintln!("{ty}: --int-dots logits {err:.1e} from f32");
        assert!(
            err > 1e-6 && err < 5e-2,
            "{ty}: --int-dots logits {err:e} from f32"
        );
        let bench = archc(&[
            "bench",
            s,
            "--mode",
            "decode",
            "--batch",
            "1",
            "--prompt",
            "4",
            "--new",
            "4",
            "--weights",
            m,
            "--reps",
            "1",
            "--warmup",
            "0",
            "--json",
            "--int-dots",
        ]);
        ok(&bench, &format!("{ty} bench --int-dots"));
    }
    // Where integer dots cannot apply.
    let m = tmp.path().join("q4_k.gguf");
    let m = m.to_str().unwrap();
    let q8 = src.to_str().unwrap();
    let out = tmp.path().join("x.safetensors");
    let o = out.to_str().unwrap();
    let gen = |w: &str, more: &[&str]| {
        let mut args = vec![
            "generate",
            s,
            "--weights",
            w,
            "--inputs",
            i,
            "--max-new-tokens",
            "2",
            "--out",
            o,
        ];
        args.extend_from_slice(more);
        archc(&args)
    };
    let err = fails_cleanly(&gen(q8, &["--int-dots"]), "int dots over Q8_0");
    assert!(
        err.contains("Q4_K, Q5_K or Q6_K") && err.contains("Q8_0"),
        "{err}"
    );
    let err = fails_cleanly(
        &gen(m, &["--int-dots", "--backend", "cuda-sim"]),
        "int dots on cuda",
    );
    assert!(err.contains("CPU decode path"), "{err}");
    let pkg = tmp.path().join("pkg");
    ok(
        &archc(&[
            "build",
            s,
            "--weights",
            m,
            "--int-dots",
            "-o",
            pkg.to_str().unwrap(),
        ]),
        "build --int-dots",
    );
    let manifest = arch_runtime::Manifest::read(&pkg).unwrap();
    assert!(manifest.target.int_dots, "the manifest records --int-dots");
    let err = fails_cleanly(
        &archc(&[
            "generate",
            pkg.to_str().unwrap(),
            "--weights",
            m,
            "--inputs",
            i,
            "--max-new-tokens",
            "2",
            "--out",
            o,
            "--int-dots",
        ]),
        "int dots on a built package",
    );
    assert!(err.contains("archc build"), "{err}");
}

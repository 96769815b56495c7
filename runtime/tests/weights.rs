//! Weights under Hugging Face-style namings: `rows`/`transpose`/`any` sources give the
//! canonical layout, half precision is converted, the best naming wins, shards are read,
//! and broken files are errors naming the tensor.

mod common;

use std::collections::BTreeMap;

use arch_runtime::manifest::{Manifest, Naming, ParamSpec, Source};
use arch_runtime::{RuntimeError, Weights};
use common::*;

/// A manifest with GPT-2-like parameters (d = 2): q, k from a fused [d, 2d] Conv1D weight,
/// their biases from a fused [2d] bias, an up projection [3, d] stored transposed, a norm
/// weight stored [1, d], and an embedding under either of two names.
fn hf_manifest() -> Manifest {
    let mut m = manifest();
    let params: Vec<(&str, Vec<usize>)> = vec![
        ("q.weight", vec![2, 2]),
        ("k.weight", vec![2, 2]),
        ("q.bias", vec![2]),
        ("k.bias", vec![2]),
        ("up.weight", vec![3, 2]),
        ("norm.weight", vec![2]),
        ("embed.weight", vec![2, 2]),
    ];
    m.params = params
        .iter()
        .map(|(n, s)| ParamSpec {
            name: n.to_string(),
            shape: s.clone(),
            buffer: 0,
            storage: None,
        })
        .collect();
    let plain = |n: &str, s: &[usize]| Source::Plain {
        name: n.into(),
        shape: s.to_vec(),
    };
    let rows = |n: &str, shape: Vec<usize>, t: bool, start: usize| Source::Rows {
        name: n.into(),
        shape,
        transpose: t,
        start,
        len: 2,
    };
    let hf: BTreeMap<String, Source> = [
        ("q.weight", rows("attn.c_attn.weight", vec![2, 2], true, 0)),
        ("k.weight", rows("attn.c_attn.weight", vec![2, 2], true, 2)),
        ("q.bias", rows("attn.c_attn.bias", vec![2], false, 0)),
        ("k.bias", rows("attn.c_attn.bias", vec![2], false, 2)),
        (
            "up.weight",
            Source::Transpose {
                name: "mlp.c_fc.weight".into(),
                shape: vec![3, 2],
            },
        ),
        ("norm.weight", plain("ln.weight", &[2])),
        (
            "embed.weight",
            Source::Any(vec![
                plain("shared.weight", &[2, 2]),
                plain("wte.weight", &[2, 2]),
            ]),
        ),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect();
    let canonical: BTreeMap<String, Source> = params
        .iter()
        .map(|(n, s)| (n.to_string(), plain(n, s)))
        .collect();
    m.namings = vec![
        Naming {
            label: "canonical".into(),
            sources: canonical,
        },
        Naming {
            label: "Unrelated".into(),
            sources: [("q.weight".to_string(), Source::Nothing)].into(),
        },
        Naming {
            label: "HfModel".into(),
            sources: hf,
        },
    ];
    m
}

/// The Hugging Face-style file; `c_attn` [d, 2d] = [[0, 1, 2, 3], [4, 5, 6, 7]].
fn hf_tensors() -> Vec<Raw> {
    vec![
        f32_raw(
            "attn.c_attn.weight",
            &[2, 4],
            &[0., 1., 2., 3., 4., 5., 6., 7.],
        ),
        f32_raw("attn.c_attn.bias", &[4], &[10., 11., 12., 13.]),
        f32_raw("mlp.c_fc.weight", &[2, 3], &[1., 2., 3., 4., 5., 6.]),
        f32_raw("ln.weight", &[1, 2], &[0.5, 1.5]),
        f32_raw("wte.weight", &[2, 2], &[7., 8., 9., 10.]),
        f32_raw("unrelated.weight", &[3], &[0., 0., 0.]),
    ]
}

fn data(w: &Weights, m: &Manifest, name: &str) -> Vec<f32> {
    w.data(m.param_index(name).unwrap()).unwrap().to_vec()
}

#[test]
fn hf_sources_give_the_canonical_layout() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("model.safetensors");
    write_safetensors(&path, &hf_tensors());
    let m = hf_manifest();
    let w = Weights::open(&m, dir.path()).unwrap(); // a directory with model.safetensors
    assert_eq!(w.naming(), "HfModel");
    // c_attn transposed: [[0, 4], [1, 5], [2, 6], [3, 7]]; q = rows 0..2, k = rows 2..4.
    assert_eq!(data(&w, &m, "q.weight"), [0., 4., 1., 5.]);
    assert_eq!(data(&w, &m, "k.weight"), [2., 6., 3., 7.]);
    assert_eq!(data(&w, &m, "q.bias"), [10., 11.]);
    assert_eq!(data(&w, &m, "k.bias"), [12., 13.]);
    // c_fc stored [2, 3] → canonical [3, 2].
    assert_eq!(data(&w, &m, "up.weight"), [1., 4., 2., 5., 3., 6.]);
    assert_eq!(data(&w, &m, "norm.weight"), [0.5, 1.5]);
    assert_eq!(data(&w, &m, "embed.weight"), [7., 8., 9., 10.]);
}

#[test]
fn half_precision_is_converted() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("w.safetensors");
    let mut tensors = hf_tensors();
    for t in &mut tensors {
        if t.0 == "attn.c_attn.weight" {
            // bf16: the top halves of the f32s.
            let f: Vec<f32> =
                t.3.chunks(4)
                    .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
                    .collect();
            t.1 = safetensors::Dtype::BF16;
            t.3 = f
                .iter()
                .flat_map(|x| ((x.to_bits() >> 16) as u16).to_le_bytes())
                .collect();
        }
        if t.0 == "ln.weight" {
            t.1 = safetensors::Dtype::F16;
            t.3 = [0x3800u16, 0x3e00]
                .iter()
                .flat_map(|h| h.to_le_bytes())
                .collect(); // 0.5, 1.5
        }
    }
    write_safetensors(&path, &tensors);
    let m = hf_manifest();
    let w = Weights::open(&m, &path).unwrap();
    assert_eq!(data(&w, &m, "q.weight"), [0., 4., 1., 5.]);
    assert_eq!(data(&w, &m, "norm.weight"), [0.5, 1.5]);
    assert!(!w.is_mapped(m.param_index("norm.weight").unwrap()));

    // An integer tensor is refused, naming it.
    for t in &mut tensors {
        if t.0 == "mlp.c_fc.weight" {
            t.1 = safetensors::Dtype::I32;
        }
    }
    write_safetensors(&path, &tensors);
    let err = Weights::open(&m, &path).unwrap_err();
    assert_eq!(err.tensor(), Some("up.weight"));
    assert!(
        err.to_string().contains("mlp.c_fc.weight") && err.to_string().contains("I32"),
        "{err}"
    );
}

#[test]
fn wrong_shapes_and_missing_tensors_are_named() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("w.safetensors");
    let m = hf_manifest();
    let with = |name: &str, shape: &[usize]| {
        let mut t = hf_tensors();
        for x in &mut t {
            if x.0 == name {
                let n: usize = shape.iter().product();
                x.2 = shape.to_vec();
                x.3.resize(n * 4, 0);
            }
        }
        t
    };
    // The fused bias too short for k: rows 2..4 of 3.
    write_safetensors(&path, &with("attn.c_attn.bias", &[3]));
    let err = Weights::open(&m, &path).unwrap_err();
    assert!(matches!(err, RuntimeError::Shape { .. }), "{err:?}");
    assert_eq!(err.tensor(), Some("k.bias"));
    assert!(err.to_string().contains("attn.c_attn.bias"), "{err}");
    // A transposed weight stored the canonical way round.
    write_safetensors(&path, &with("mlp.c_fc.weight", &[3, 2]));
    let err = Weights::open(&m, &path).unwrap_err();
    assert_eq!(err.tensor(), Some("up.weight"), "{err}");
    assert!(err.to_string().contains("[3, 2], expected [2, 3]"), "{err}");
    // Size-1 axes are ignored for plain sources only.
    write_safetensors(&path, &with("ln.weight", &[2, 1, 1]));
    assert!(Weights::open(&m, &path).is_ok());
    write_safetensors(&path, &with("ln.weight", &[3]));
    assert_eq!(
        Weights::open(&m, &path).unwrap_err().tensor(),
        Some("norm.weight")
    );

    // `any` with no alternative present lists every name it looked for.
    let tensors: Vec<Raw> = hf_tensors()
        .into_iter()
        .filter(|t| t.0 != "wte.weight")
        .collect();
    write_safetensors(&path, &tensors);
    let err = Weights::open(&m, &path).unwrap_err();
    assert_eq!(err.tensor(), Some("embed.weight"));
    let msg = err.to_string();
    assert!(
        msg.contains("shared.weight") && msg.contains("wte.weight") && msg.contains("HfModel"),
        "{msg}"
    );

    // Nothing known: every naming is listed, with a sample of the file's names.
    write_safetensors(&path, &[f32_raw("mystery.x", &[1], &[0.0])]);
    let err = Weights::open(&m, &path).unwrap_err();
    assert!(matches!(err, RuntimeError::UnknownNaming { .. }), "{err:?}");
    let msg = err.to_string();
    assert!(
        msg.contains("canonical, Unrelated, HfModel") && msg.contains("mystery.x"),
        "{msg}"
    );
}

#[test]
fn the_naming_with_most_parameters_wins_and_ties_keep_the_first() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("w.safetensors");
    let m = hf_manifest();
    // Canonical names for everything but one parameter: canonical wins, and names it.
    let tensors: Vec<Raw> = [
        ("q.weight", vec![2, 2]),
        ("k.weight", vec![2, 2]),
        ("q.bias", vec![2]),
        ("k.bias", vec![2]),
        ("up.weight", vec![3, 2]),
        ("norm.weight", vec![2]),
    ]
    .iter()
    .map(|(n, s)| f32_raw(n, s, &vec![1.0; s.iter().product()]))
    .collect();
    write_safetensors(&path, &tensors);
    let err = Weights::open(&m, &path).unwrap_err();
    assert_eq!(err.tensor(), Some("embed.weight"));
    assert!(
        err.to_string().contains("missing tensor `embed.weight`"),
        "{err}"
    );

    // A tie between two namings keeps the earlier one.
    let mut m2 = m.clone();
    let mut copy = m2.namings[2].clone();
    copy.label = "Later".into();
    m2.namings.push(copy);
    write_safetensors(&path, &hf_tensors());
    assert_eq!(Weights::open(&m2, &path).unwrap().naming(), "HfModel");
}

#[test]
fn sharded_checkpoints_and_broken_files() {
    let dir = tempfile::tempdir().unwrap();
    let m = manifest();
    let (a, b) = (
        "model-00001-of-00002.safetensors",
        "model-00002-of-00002.safetensors",
    );
    write_safetensors(
        &dir.path().join(a),
        &[f32_raw("embed.tokens.weight", &[VOCAB, D], &embed())],
    );
    write_safetensors(&dir.path().join(b), &[f32_raw("out.bias", &[D], &bias())]);
    let index = format!(
        r#"{{"metadata": {{}}, "weight_map": {{"embed.tokens.weight": "{a}", "out.bias": "{b}"}}}}"#
    );
    std::fs::write(dir.path().join("model.safetensors.index.json"), index).unwrap();
    let w = Weights::open(&m, dir.path()).unwrap();
    assert_eq!(w.naming(), "canonical");
    assert_eq!(w.data(0).unwrap(), embed());
    assert_eq!(w.data(1).unwrap(), bias());

    // Truncated: names the first tensor cut off.
    let path = dir.path().join("w.safetensors");
    write_weights(&path);
    let bytes = std::fs::read(&path).unwrap();
    std::fs::write(&path, &bytes[..bytes.len() - 8]).unwrap();
    let err = Weights::open(&m, &path).unwrap_err();
    assert!(err.to_string().contains("truncated"), "{err}");
    assert!(err.tensor().is_some(), "{err}");
    for junk in [
        &b""[..],
        &b"abc"[..],
        &b"\x05\x00\x00\x00\x00\x00\x00\x00{oops"[..],
    ] {
        std::fs::write(&path, junk).unwrap();
        let err = Weights::open(&m, &path).unwrap_err();
        assert!(err.to_string().contains("w.safetensors"), "{err}");
    }
    let err = Weights::open(&m, &dir.path().join("absent.safetensors")).unwrap_err();
    assert!(matches!(err, RuntimeError::File(_)), "{err:?}");
    let empty = tempfile::tempdir().unwrap();
    assert!(Weights::open(&m, empty.path()).is_err());
}

#[test]
fn random_weights_set_norms_to_identity() {
    let mut m = hf_manifest();
    m.params.push(ParamSpec {
        name: "decoder.final_norm.bias".into(),
        shape: vec![5],
        buffer: 0,
        storage: None,
    });
    let w = Weights::random(&m, 3).unwrap();
    assert_eq!(data(&w, &m, "norm.weight"), [1.0, 1.0]);
    assert_eq!(data(&w, &m, "decoder.final_norm.bias"), [0.0; 5]);
    let q = data(&w, &m, "q.weight");
    assert!(q.iter().all(|x| x.abs() <= 0.05 && *x != 0.0), "{q:?}");
    assert_eq!(Weights::random(&m, 3).unwrap().data(0), w.data(0));

    let tensors: BTreeMap<String, Vec<f32>> = [
        ("embed.tokens.weight".to_string(), embed()),
        ("out.bias".to_string(), bias()),
    ]
    .into();
    let w = Weights::from_tensors(&manifest(), tensors).unwrap();
    assert_eq!(w.data(1).unwrap(), bias());
    let err = Weights::from_tensors(&manifest(), BTreeMap::new()).unwrap_err();
    assert_eq!(err.tensor(), Some("embed.tokens.weight"));
}

/// A parameter stored as blocks: f32 values are quantized when loaded (the blocks
/// gguf-py would write), its f32 view is absent, and a storage the runtime does not read
/// or rows that are not whole blocks are errors, not panics.
#[test]
fn block_storage_is_quantized_on_load() {
    use arch_runtime::gguf::{quantize, GgmlType};
    let mut m = hf_manifest();
    let values: Vec<f32> = (0..2 * 64).map(|i| (i as f32 * 0.37).sin()).collect();
    m.params = vec![ParamSpec {
        name: "w".into(),
        shape: vec![2, 64],
        buffer: 0,
        storage: Some("q8_0".into()),
    }];
    let tensors = std::collections::BTreeMap::from([("w".to_string(), values.clone())]);
    let w = Weights::from_tensors(&m, tensors.clone()).unwrap();
    assert_eq!(
        w.blocks(0).unwrap(),
        quantize(GgmlType::Q8_0, &values).unwrap()
    );
    assert!(w.data(0).is_none());
    assert_eq!(w.bytes(), 2 * 2 * 34);
    assert_eq!(m.params[0].bytes(), Some(2 * 2 * 34));
    m.params[0].storage = Some("q9_9".into());
    let err = Weights::from_tensors(&m, tensors.clone())
        .unwrap_err()
        .to_string();
    assert!(err.contains("unknown storage `q9_9`"), "{err}");
    m.params[0].storage = Some("q4_k".into());
    let err = Weights::from_tensors(&m, tensors).unwrap_err().to_string();
    assert!(err.contains("not whole blocks"), "{err}");
}

//! Load + run a hand-written package: numbers, thread-count independence, buffer reuse,
//! and clear errors for a damaged package and for inputs outside the model's limits.

mod common;

use std::collections::HashMap;

use arch_runtime::{HostData, HostTensor, Package, RuntimeError, Session, Weights};
use common::*;

fn ids(shape: &[usize], data: &[i64]) -> HashMap<String, HostTensor> {
    [(
        "input_ids".to_string(),
        HostTensor::i64(shape.to_vec(), data.to_vec()),
    )]
    .into()
}

fn session(dir: &std::path::Path, threads: usize) -> Session {
    let package = Package::load(dir).unwrap();
    let weights = Weights::open(package.manifest(), &dir.join("w.safetensors")).unwrap();
    Session::new(package, weights, threads).unwrap()
}

fn setup() -> Option<tempfile::TempDir> {
    if !have_cc() {
        return None;
    }
    let dir = tempfile::tempdir().unwrap();
    write_package(dir.path(), &manifest());
    write_weights(&dir.path().join("w.safetensors"));
    Some(dir)
}

#[test]
fn runs_and_gives_the_same_bits_on_any_thread_count() {
    let Some(dir) = setup() else { return };
    let input = [1i64, 2, 3, 9, 0, 5];
    let mut results = Vec::new();
    for threads in [1, 2, 3] {
        let mut s = session(dir.path(), threads);
        assert_eq!(s.threads(), threads);
        assert!(s.weights().is_mapped(0), "aligned f32 is used in place");
        let out = s.run("forward", &ids(&[2, 3], &input)).unwrap();
        assert_eq!(out.len(), 1);
        let (name, t) = &out[0];
        assert_eq!(name, "hidden");
        assert_eq!(t.shape, [2, 3, D]);
        assert_eq!(t.as_f32().unwrap(), expected(&input));
        results.push(t.clone());

        // Other sizes reuse or grow the buffers; i32 ids are widened.
        let long = [4i64, 4, 1, 0, 7, 8, 9, 2];
        let out = s.run("forward", &ids(&[1, 8], &long)).unwrap();
        assert_eq!(out[0].1.shape, [1, 8, D]);
        assert_eq!(out[0].1.as_f32().unwrap(), expected(&long));
        let small: HashMap<String, HostTensor> = [(
            "input_ids".to_string(),
            HostTensor {
                shape: vec![1, 1],
                data: HostData::I32(vec![6]),
            },
        )]
        .into();
        let out = s.run("forward", &small).unwrap();
        assert_eq!(out[0].1.as_f32().unwrap(), expected(&[6]));
    }
    assert!(results.windows(2).all(|w| w[0] == w[1]));

    // set_threads keeps the session usable.
    let mut s = session(dir.path(), 1);
    s.set_threads(4).unwrap();
    let out = s.run("forward", &ids(&[2, 3], &input)).unwrap();
    assert_eq!(out[0].1, results[0]);
}

#[test]
fn random_weights_run_and_are_deterministic() {
    let Some(dir) = setup() else { return };
    let package = Package::load(dir.path()).unwrap();
    let a = Weights::random(package.manifest(), 42).unwrap();
    let b = Weights::random(package.manifest(), 42).unwrap();
    let c = Weights::random(package.manifest(), 43).unwrap();
    assert_eq!(a.data(0), b.data(0));
    assert_ne!(a.data(0), c.data(0));
    assert!(a
        .data(0)
        .unwrap()
        .iter()
        .all(|x| (-0.05..=0.05).contains(x)));
    let mut s = Session::new(package, a, 2).unwrap();
    let out = s.run("forward", &ids(&[1, 2], &[3, 4])).unwrap();
    assert!(out[0].1.as_f32().unwrap().iter().all(|x| x.is_finite()));
}

#[test]
fn version_mismatch_is_a_clear_error() {
    let Some(dir) = setup() else { return };
    let mut m = manifest();
    m.compiler_version = "0.0.7".into();
    m.write(dir.path()).unwrap();
    let err = Package::load(dir.path()).unwrap_err();
    assert!(matches!(err, RuntimeError::Version { .. }), "{err:?}");
    let msg = err.to_string();
    assert!(
        msg.contains("package built by archc 0.0.7")
            && msg.contains(env!("CARGO_PKG_VERSION"))
            && msg.contains("rebuild"),
        "{msg}"
    );

    let mut m = manifest();
    m.format = "archc-package/0".into();
    m.write(dir.path()).unwrap();
    let err = Package::load(dir.path()).unwrap_err();
    assert!(err.to_string().contains("archc-package/0"), "{err}");
}

#[test]
fn missing_symbol_and_missing_library_are_clear_errors() {
    let Some(dir) = setup() else { return };
    let mut m = manifest();
    m.kernels[1].symbol = "k1_gone".into();
    m.write(dir.path()).unwrap();
    let err = Package::load(dir.path()).unwrap_err();
    assert!(
        matches!(err, RuntimeError::Symbol { kernel: 1, .. }),
        "{err:?}"
    );
    assert!(err.to_string().contains("k1_gone"), "{err}");

    std::fs::remove_file(dir.path().join("kernels.so")).unwrap();
    let err = Package::load(dir.path()).unwrap_err();
    assert!(matches!(err, RuntimeError::Library { .. }), "{err:?}");
    std::fs::write(dir.path().join("kernels.so"), b"not an ELF file").unwrap();
    let err = Package::load(dir.path()).unwrap_err();
    assert!(err.to_string().contains("kernels.so"), "{err}");

    let err = Package::load(&dir.path().join("nowhere")).unwrap_err();
    assert!(matches!(err, RuntimeError::Io { .. }), "{err:?}");
}

#[test]
fn another_target_is_refused() {
    let Some(dir) = setup() else { return };
    let mut m = manifest();
    m.target.kind = "cuda".into();
    m.write(dir.path()).unwrap();
    let err = Package::load(dir.path()).unwrap_err();
    assert!(matches!(err, RuntimeError::Target(_)), "{err:?}");
}

#[test]
fn inputs_outside_the_limits_are_errors() {
    let Some(dir) = setup() else { return };
    let mut s = session(dir.path(), 2);
    let msg = |r: Result<_, RuntimeError>| r.unwrap_err().to_string();

    let m = msg(s.run("forward", &ids(&[1, 2], &[3, 10])));
    assert_eq!(
        m,
        "`input_ids` holds token id 10, outside the vocabulary of 10"
    );
    let m = msg(s.run("forward", &ids(&[1, 2], &[-1, 0])));
    assert!(m.contains("token id -1"), "{m}");
    let m = msg(s.run("forward", &ids(&[1, 9], &[0; 9])));
    assert!(
        m.contains("9 tokens, more than the model's context of 8"),
        "{m}"
    );
    let m = msg(s.run("forward", &ids(&[1, 0], &[])));
    assert!(m.contains("`input_ids` is empty"), "{m}");
    let m = msg(s.run("forward", &ids(&[1, 2, 1], &[0, 0])));
    assert!(m.contains("expected [batch, seq]"), "{m}");
    let m = msg(s.run("forward", &ids(&[2, 2], &[0, 0])));
    assert!(m.contains("3 values") || m.contains("2 values"), "{m}");
    let floats: HashMap<String, HostTensor> = [(
        "input_ids".to_string(),
        HostTensor::f32(vec![1, 1], vec![0.0]),
    )]
    .into();
    let m = msg(s.run("forward", &floats));
    assert!(m.contains("integer tensor"), "{m}");
    let err = s.run("forward", &HashMap::new()).unwrap_err();
    assert!(matches!(err, RuntimeError::MissingInput { .. }), "{err:?}");
    let err = s.run("decode", &ids(&[1, 1], &[0])).unwrap_err();
    assert!(err.to_string().contains("forward"), "{err}");

    // Still usable after errors.
    let out = s.run("forward", &ids(&[1, 1], &[2])).unwrap();
    assert_eq!(out[0].1.as_f32().unwrap(), expected(&[2]));
}

#[test]
fn weights_of_the_wrong_shape_name_the_tensor() {
    let Some(dir) = setup() else { return };
    let path = dir.path().join("bad.safetensors");
    write_safetensors(
        &path,
        &[
            f32_raw("embed.tokens.weight", &[VOCAB, 5], &[0.0; VOCAB * 5]),
            f32_raw("out.bias", &[D], &bias()),
        ],
    );
    let package = Package::load(dir.path()).unwrap();
    let err = Weights::open(package.manifest(), &path).unwrap_err();
    assert_eq!(err.tensor(), Some("embed.tokens.weight"), "{err}");
    let m = err.to_string();
    assert!(m.contains("[10, 5]") && m.contains("[10, 4]"), "{m}");

    write_safetensors(
        &path,
        &[f32_raw("embed.tokens.weight", &[VOCAB, D], &embed())],
    );
    let err = Weights::open(package.manifest(), &path).unwrap_err();
    assert_eq!(err.tensor(), Some("out.bias"), "{err}");
    assert!(err.to_string().contains("missing"), "{err}");

    // Weights made for another package.
    let mut other = manifest();
    other.params.truncate(1);
    let w = Weights::random(&other, 1).unwrap();
    let err = Session::new(package, w, 1).unwrap_err();
    assert!(matches!(err, RuntimeError::WeightsMismatch(_)), "{err:?}");
}

#[test]
fn token_type_ids_default_to_zeros_and_masks_are_checked() {
    if !have_cc() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    write_package(dir.path(), &manifest_with_segments());
    write_weights(&dir.path().join("w.safetensors"));
    let mut s = session(dir.path(), 2);
    let tensor = |data: &[i64]| HostTensor::i64(vec![1, data.len()], data.to_vec());
    let inputs = |tt: Option<&[i64]>, mask: &[i64]| {
        let mut m = ids(&[1, 2], &[1, 2]);
        m.insert("attention_mask".into(), tensor(mask));
        if let Some(tt) = tt {
            m.insert("token_type_ids".into(), tensor(tt));
        }
        m
    };
    let plus = |v: Vec<f32>, row: usize, x: f32| -> Vec<f32> {
        v.iter()
            .enumerate()
            .map(|(i, &y)| if i / D == row { y + x } else { y })
            .collect()
    };

    let out = s.run("forward", &inputs(None, &[1, 1])).unwrap();
    assert_eq!(out[0].1.as_f32().unwrap(), expected(&[1, 2]));
    let out = s.run("forward", &inputs(Some(&[0, 1]), &[1, 0])).unwrap();
    let want = plus(plus(expected(&[1, 2]), 1, 100.0), 1, 1000.0);
    assert_eq!(out[0].1.as_f32().unwrap(), want);

    let err = s
        .run("forward", &inputs(Some(&[0, 2]), &[1, 1]))
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        "`token_type_ids` holds 2, but the model has 2 segments"
    );
    let err = s.run("forward", &inputs(None, &[1, 3])).unwrap_err();
    assert_eq!(
        err.to_string(),
        "`attention_mask` must hold only 0 and 1, found 3"
    );
    let err = s.run("forward", &inputs(None, &[1, 1, 1])).unwrap_err();
    let m = err.to_string();
    assert!(
        m.contains("`attention_mask` has seq = 3 (axis 1), but `input_ids` has seq = 2"),
        "{m}"
    );
    let mut no_mask = inputs(None, &[1, 1]);
    no_mask.remove("attention_mask");
    let err = s.run("forward", &no_mask).unwrap_err();
    assert_eq!(
        err.to_string(),
        "the inputs have no `attention_mask` (given: `input_ids`)"
    );
}

#[test]
fn kernels_sharing_a_symbol_get_their_own_buffers() {
    if !have_cc() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    write_package(dir.path(), &manifest_bias_twice());
    write_weights(&dir.path().join("w.safetensors"));
    let input = [7i64, 0, 3];
    let want: Vec<f32> = expected(&input)
        .iter()
        .enumerate()
        .map(|(i, x)| x + bias()[i % D])
        .collect();
    for threads in [1, 2] {
        let mut s = session(dir.path(), threads);
        let out = s.run("forward", &ids(&[1, 3], &input)).unwrap();
        assert_eq!(out[0].1.as_f32().unwrap(), want);
    }
}

//! `arch-run`: package + weights + inputs → outputs file; errors are `error: …`, exit 1.

mod common;

use std::process::Command;

use common::*;
use safetensors::SafeTensors;

fn arch_run(args: &[&std::ffi::OsStr]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_arch-run"))
        .args(args)
        .output()
        .unwrap()
}

#[test]
fn runs_a_package_end_to_end() {
    if !have_cc() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let pkg = dir.path().join("pkg");
    std::fs::create_dir(&pkg).unwrap();
    write_package(&pkg, &manifest());
    let weights = dir.path().join("w.safetensors");
    write_weights(&weights);
    let inputs = dir.path().join("in.safetensors");
    let ids = [3i64, 1, 4, 1, 5, 9];
    write_safetensors(&inputs, &[i64_raw("input_ids", &[2, 3], &ids)]);
    let out = dir.path().join("out.safetensors");

    let o = arch_run(&[
        pkg.as_os_str(),
        "--weights".as_ref(),
        weights.as_os_str(),
        "--inputs".as_ref(),
        inputs.as_os_str(),
        "--out".as_ref(),
        out.as_os_str(),
        "--threads".as_ref(),
        "2".as_ref(),
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let bytes = std::fs::read(&out).unwrap();
    let st = SafeTensors::deserialize(&bytes).unwrap();
    let hidden = st.tensor("hidden").unwrap();
    assert_eq!(hidden.shape(), [2, 3, D]);
    let got: Vec<f32> = hidden
        .data()
        .chunks(4)
        .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
        .collect();
    assert_eq!(got, expected(&ids));

    // Random weights.
    let o = arch_run(&[
        pkg.as_os_str(),
        "--random-weights".as_ref(),
        "7".as_ref(),
        "--inputs".as_ref(),
        inputs.as_os_str(),
        "--out".as_ref(),
        out.as_os_str(),
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));

    // An id outside the vocabulary: a one-line error, exit code 1.
    write_safetensors(&inputs, &[i64_raw("input_ids", &[1, 2], &[0, 12])]);
    let o = arch_run(&[
        pkg.as_os_str(),
        "--weights".as_ref(),
        weights.as_os_str(),
        "--inputs".as_ref(),
        inputs.as_os_str(),
        "--out".as_ref(),
        out.as_os_str(),
    ]);
    assert_eq!(o.status.code(), Some(1));
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(
        err.trim(),
        "error: `input_ids` holds token id 12, outside the vocabulary of 10"
    );
}

#[test]
fn bad_usage_is_an_error_not_a_panic() {
    for args in [
        &[][..],
        &["pkg"][..],
        &["pkg", "--weights"][..],
        &[
            "pkg",
            "--weights",
            "w",
            "--random-weights",
            "1",
            "--inputs",
            "i",
            "--out",
            "o",
        ][..],
        &["pkg", "--random-weights", "x"][..],
        &["pkg", "--bogus"][..],
        &["nowhere", "--weights", "w", "--inputs", "i", "--out", "o"][..],
    ] {
        let args: Vec<&std::ffi::OsStr> = args.iter().map(|a| a.as_ref()).collect();
        let o = arch_run(&args);
        assert_eq!(o.status.code(), Some(1), "{args:?}");
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(err.starts_with("error: "), "{args:?}: {err}");
        assert!(!err.contains("panicked"), "{err}");
    }
}

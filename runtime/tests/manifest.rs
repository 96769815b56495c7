//! `manifest.json` round trip, the JSON spelling of docs/PACKAGE.md, and malformed or
//! hostile manifests: always an error, never a panic.

mod common;

use arch_runtime::manifest::{BufferKind, Manifest, Source};
use arch_runtime::RuntimeError;
use common::manifest;

fn parse_err(m: &Manifest) -> String {
    Manifest::parse(&m.to_json()).unwrap_err().to_string()
}

#[test]
fn round_trips_and_matches_the_documented_spelling() {
    let m = manifest();
    assert_eq!(Manifest::parse(&m.to_json()).unwrap(), m);
    let json: serde_json::Value = serde_json::from_str(&m.to_json()).unwrap();
    assert_eq!(json["buffers"][3]["kind"], "temp");
    assert_eq!(json["buffers"][3]["slot"], 0);
    assert!(json["buffers"][0].get("slot").is_none());
    assert_eq!(json["buffers"][0]["dtype"], "i64");
    assert_eq!(
        json["buffers"][3]["elems"],
        serde_json::json!([{"coef": 4, "div": 1, "syms": ["batch", "seq"]}])
    );
    assert_eq!(
        json["entries"]["forward"]["kernels"],
        serde_json::json!([0, 1])
    );

    let sources: Vec<Source> = serde_json::from_str(
        r#"[
        {"plain": {"name": "transformer.wte.weight", "shape": [50257, 768]}},
        {"transpose": {"name": "transformer.h.0.mlp.c_fc.weight", "shape": [3072, 768]}},
        {"rows": {"name": "transformer.h.0.attn.c_attn.weight", "shape": [768, 768],
                  "transpose": true, "start": 0, "len": 768}},
        {"any": [{"plain": {"name": "a", "shape": [1]}}, "nothing"]},
        "nothing"
    ]"#,
    )
    .unwrap();
    assert!(matches!(
        &sources[2],
        Source::Rows {
            transpose: true,
            len: 768,
            ..
        }
    ));
    assert!(matches!(&sources[3], Source::Any(a) if a[1] == Source::Nothing));
    assert_eq!(sources[4], Source::Nothing);
    assert_eq!(
        serde_json::to_string(&Source::Nothing).unwrap(),
        r#""nothing""#
    );
}

#[test]
fn inconsistent_manifests_are_errors() {
    let mut m = manifest();
    m.buffers[2].id = 7;
    assert!(parse_err(&m).contains("id 7"));

    let mut m = manifest();
    m.buffers[3].slot = Some(1);
    assert!(parse_err(&m).contains("slot 1"));

    let mut m = manifest();
    m.buffers[3].slot = None;
    assert!(parse_err(&m).contains("no slot"));

    let mut m = manifest();
    m.kernels[0].args.push(99);
    assert!(parse_err(&m).contains("buffer 99"));

    let mut m = manifest();
    m.entries.get_mut("forward").unwrap().kernels.push(2);
    assert!(parse_err(&m).contains("kernel 2"));

    let mut m = manifest();
    m.inputs[0].buffer = 40;
    assert!(parse_err(&m).contains("buffer 40"));

    let mut m = manifest();
    m.outputs[0].buffer = 3; // a temp buffer
    assert!(parse_err(&m).contains("buffer 3"));

    let mut m = manifest();
    m.params[1].shape = vec![5];
    assert!(parse_err(&m).contains("out.bias"));

    let mut m = manifest();
    m.buffers[4].kind = BufferKind::Temp;
    m.buffers[4].slot = Some(0);
    assert!(!parse_err(&m).is_empty());

    let mut m = manifest();
    m.buffers[3].elems.0[0].syms.push("tgt".into());
    assert!(parse_err(&m).contains("tgt"));

    let mut m = manifest();
    m.buffers[3].elems.0[0].div = 0;
    assert!(parse_err(&m).contains("zero"));

    let mut m = manifest();
    m.syms.push("target_seq".into());
    assert!(parse_err(&m).contains("target_seq"));

    let mut m = manifest();
    m.slots = 1 << 60;
    assert!(!parse_err(&m).is_empty());

    for bad in ["", "{", "[]", r#"{"format": "archc-package/1"}"#, "null"] {
        let err = Manifest::parse(bad).unwrap_err();
        assert!(
            matches!(err, RuntimeError::Manifest { .. }),
            "{bad}: {err:?}"
        );
    }
}

/// Every number of a valid manifest replaced by hostile values, one at a time: an error or
/// a valid manifest, never a panic.
#[test]
fn hostile_numbers_never_panic() {
    let text = manifest().to_json();
    let mut starts = Vec::new();
    let bytes = text.as_bytes();
    for i in 0..bytes.len() {
        if bytes[i].is_ascii_digit() && (i == 0 || !bytes[i - 1].is_ascii_alphanumeric()) {
            starts.push(i);
        }
    }
    assert!(starts.len() > 30);
    for &i in &starts {
        let end = (i..bytes.len())
            .find(|&j| !bytes[j].is_ascii_digit())
            .unwrap();
        for v in ["0", "1", "2", "18446744073709551615", "-1", "1e300", "3.5"] {
            let mutated = format!("{}{v}{}", &text[..i], &text[end..]);
            if let Ok(m) = Manifest::parse(&mutated) {
                assert!(m.validate().is_ok());
            }
        }
    }
}

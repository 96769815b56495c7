//! Token streams → `expand` without a compiler: valid specs expand cleanly, no input panics.

use crate::expand;
use proc_macro2::{TokenStream, TokenTree};
use std::path::Path;
use std::str::FromStr;

fn tokens(text: &str) -> TokenStream {
    match TokenStream::from_str(text) {
        Ok(tokens) => tokens,
        Err(e) => panic!("not Rust tokens: {e}\n{text}"),
    }
}

fn has_error(out: &TokenStream) -> bool {
    out.to_string().contains("compile_error")
}

fn examples() -> Vec<(String, String)> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/examples");
    let Ok(entries) = std::fs::read_dir(&dir) else {
        panic!("cannot list {}", dir.display())
    };
    let mut files: Vec<_> = entries
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "arch"))
        .map(|p| {
            (
                p.display().to_string(),
                std::fs::read_to_string(&p).unwrap_or_default(),
            )
        })
        .collect();
    files.sort();
    assert!(!files.is_empty());
    files
}

#[test]
fn every_example_expands_inline_without_errors() {
    for (name, text) in examples() {
        let out = expand(tokens(&text));
        assert!(!has_error(&out), "{name}:\n{out}");
        assert!(out.to_string().contains("pub mod"), "{name}");
    }
}

#[test]
fn every_example_expands_from_its_file() {
    for (name, _) in examples() {
        let Some(file) = Path::new(&name).file_name().and_then(|f| f.to_str()) else {
            continue;
        };
        let out = expand(tokens(&format!("file = \"../tests/examples/{file}\"")));
        assert!(!has_error(&out), "{name}:\n{out}");
    }
}

/// Every example with one word left out, and cut short after each item: errors or
/// modules, never a panic.
#[test]
fn damaged_specs_never_panic() {
    for (_, text) in examples() {
        // Printed back from tokens: no comments, which would swallow the joined line.
        let printed = tokens(&text).to_string();
        let words: Vec<&str> = printed.split_whitespace().collect();
        for skip in 0..words.len() {
            let damaged: Vec<&str> = words
                .iter()
                .enumerate()
                .filter(|&(i, _)| i != skip)
                .map(|(_, w)| *w)
                .collect();
            // Leaving out a bracket leaves no Rust token stream; the compiler rejects those.
            if let Ok(ts) = TokenStream::from_str(&damaged.join(" ")) {
                let _ = expand(ts);
            }
        }
        let trees: Vec<TokenTree> = tokens(&text).into_iter().collect();
        for cut in 0..=trees.len() {
            let _ = expand(trees[..cut].iter().cloned().collect());
        }
    }
}

#[test]
fn odd_inputs_are_errors_not_panics() {
    let cases = [
        "",
        "model",
        "file",
        "file =",
        "file = 3",
        "model = \"x\"",
        "file = \"../tests/examples/llama3.arch\", file = \"x\"",
        "file = \"../tests/examples/llama3.arch\", model = \"nope\"",
        "file = \"../tests/examples\"",
        "file = \"\"",
        "#[doc = \"x\"]",
        "#![doc = \"x\"] model m { }",
        "# [derive(Debug)] model m { }",
        "model m { vocab = 99999999999999999999999 d_model = 1e999 }",
        "model m { vocab = 0x10 d_model = 1u8 context = 'a' }",
        "model self { vocab = 10 d_model = 8 context = 8 decoder { layers = 1 mlp { hidden = 8 } } }",
        "use \"no_such.arch\" model m { }",
        "model m { x = r\"raw\" y = b\"bytes\" z = c\"c\" w = 'lifetime }",
        "model m { a = 2 ^ 2 ^ 2 ^ 2 ^ 2 ^ 2 ^ 2 ^ 2 ^ 2 ^ 2 }",
        "model m { vocab = \"\u{e9}\" d_model = \u{e9} }",
    ];
    for case in cases {
        let out = expand(tokens(case));
        assert!(has_error(&out), "{case}:\n{out}");
    }
    let nested = format!(
        "model m {{ decoder {{ stack = {}a{} * 1000000000000 }} }}",
        "[".repeat(40),
        "]".repeat(40)
    );
    assert!(has_error(&expand(tokens(&nested))));
    let deep = format!(
        "model m {{ d_model = {}1{} }}",
        "(".repeat(5000),
        ")".repeat(5000)
    );
    assert!(has_error(&expand(tokens(&deep))));
}

#[test]
fn keyword_model_names_become_raw_identifiers() {
    let out =
        expand(tokens("model type { vocab = 10 d_model = 8 context = 8 decoder { layers = 1 mlp { hidden = 8 } } }"));
    assert!(!has_error(&out), "{out}");
    assert!(out.to_string().contains("pub mod r#type"), "{out}");
}

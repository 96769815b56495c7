//! `model!` on real specs (inline GPT-2 of ARCH_LANGUAGE.md §9, LLaMA-3 from a file) → generated modules, checked against the front end.

use arch_dsl::elab::Program;
use arch_dsl::spec::{Family, Sublayer};
use arch_dsl::stats::{stats, StatsOptions};

arch_macros::model! {
    // GPT-2 (OpenAI, 2019-02): pre-norm decoder, learned positions, tied head.
    model gpt2 {
        vocab = 50257
        d_model = 768
        context = 1024
        norm = layernorm(eps = 1e-5)
        placement = pre
        position = learned
        decoder {
            layers = 12
            attention { heads = 12  bias = true }
            mlp { hidden = 4 * d_model  act = gelu_tanh  bias = true }
        }
    }

    model gpt2_xl : gpt2 {
        d_model = 1600
        decoder.layers = 48
        decoder.attention.heads = 25
    }
}

arch_macros::model!(file = "../tests/examples/llama3.arch", model = "llama3_8b");

/// Without `model`: every model of the file, in a module of its own.
mod all {
    arch_macros::model!(file = "../tests/examples/llama3.arch");
}

/// A heterogeneous stack and a model name that is a Rust keyword.
mod hybrid {
    arch_macros::model! {
        block gpt3_dense {
            attention { heads = n_heads  head_dim = 128  bias = true }
            mlp { hidden = 4 * d_model  act = gelu_tanh  bias = true }
        }
        block gpt3_banded {
            attention { heads = n_heads  head_dim = 128  bias = true  mask = sliding(window = 256) }
            mlp { hidden = 4 * d_model  act = gelu_tanh  bias = true }
        }
        model type {
            let n_heads = 24
            vocab = 50257
            d_model = 2048
            context = 2048
            norm = layernorm(eps = 1e-5)
            placement = pre
            decoder { stack = [gpt3_dense, gpt3_banded] * 12 }
        }
    }
}

/// The front end's own reading of a spec text, to compare the macro's constants with.
fn reference(name: &str, text: &str) -> arch_dsl::spec::ArchSpec {
    let prog = Program::from_source("reference", text.to_string(), None);
    let (spec, diags) = prog.elaborate(name);
    assert!(
        diags.iter().all(|d| !d.is_error()),
        "{}",
        arch_dsl::diag::render(&prog.sources, &diags, false)
    );
    match spec {
        Some(spec) => spec,
        None => panic!("`{name}` did not elaborate"),
    }
}

#[test]
fn inline_gpt2() {
    assert_eq!(gpt2::NAME, "gpt2");
    assert_eq!(gpt2::FAMILY, "decoder-only");
    assert_eq!(
        (gpt2::VOCAB, gpt2::D_MODEL, gpt2::CONTEXT),
        (50257, 768, 1024)
    );
    assert_eq!(gpt2::LAYERS, 12);
    assert_eq!(gpt2::LAYER_KINDS.len(), 12);
    assert!(gpt2::LAYER_KINDS
        .iter()
        .all(|&(stack, kinds)| stack == "decoder" && kinds == ["attention", "mlp"]));
    // GPT-2 small: 124M parameters with the tied head.
    assert!(
        (124_000_000..125_000_000).contains(&gpt2::PARAMS),
        "{}",
        gpt2::PARAMS
    );
    let spec = gpt2::spec();
    assert_eq!(spec.d_model, 768);
    assert_eq!(spec.family, Family::DecoderOnly);
    // The generated literal is exactly the front end's spec.
    assert_eq!(spec, reference("gpt2", gpt2::SOURCE));
    assert_eq!(
        gpt2::PARAMS,
        stats(
            &spec,
            &StatsOptions {
                seq: None,
                tokens: None
            }
        )
        .params
    );
}

#[test]
fn inline_source_keeps_the_layout_without_comments() {
    assert!(
        gpt2::SOURCE.starts_with("model gpt2 {\n    vocab = 50257\n"),
        "{:?}",
        gpt2::SOURCE
    );
    assert!(
        gpt2::SOURCE.ends_with("    decoder.attention.heads = 25\n}\n"),
        "{:?}",
        gpt2::SOURCE
    );
    assert!(gpt2::SOURCE
        .contains("        mlp { hidden = 4 * d_model  act = gelu_tanh  bias = true }\n"));
    assert!(!gpt2::SOURCE.contains("OpenAI"));
    assert_eq!(gpt2::SOURCE, gpt2_xl::SOURCE);
}

#[test]
fn inline_derived_model() {
    assert_eq!(gpt2_xl::D_MODEL, 1600);
    assert_eq!(gpt2_xl::LAYERS, 48);
    // GPT-2 XL: 1.5B parameters.
    assert!(
        (1_500_000_000..1_600_000_000).contains(&gpt2_xl::PARAMS),
        "{}",
        gpt2_xl::PARAMS
    );
    let Some(Sublayer::Attention(attention)) = gpt2_xl::spec()
        .decoder
        .and_then(|d| d.layers[0].sublayers.first().cloned())
    else {
        panic!("the first sublayer of gpt2_xl is attention");
    };
    assert_eq!(attention.heads, 25);
    assert_eq!(gpt2_xl::spec(), reference("gpt2_xl", gpt2_xl::SOURCE));
}

#[test]
fn file_llama3_8b() {
    assert_eq!(llama3_8b::NAME, "llama3_8b");
    assert_eq!(llama3_8b::FAMILY, "decoder-only");
    assert_eq!(
        (llama3_8b::VOCAB, llama3_8b::D_MODEL, llama3_8b::CONTEXT),
        (128256, 4096, 8192)
    );
    assert_eq!(llama3_8b::LAYERS, 32);
    // LLaMA-3 8B: 8.03B parameters.
    assert!(
        (8_000_000_000..8_100_000_000).contains(&llama3_8b::PARAMS),
        "{}",
        llama3_8b::PARAMS
    );
    assert_eq!(
        llama3_8b::SOURCE,
        include_str!("../../tests/examples/llama3.arch")
    );
    let spec = llama3_8b::spec();
    assert_eq!(spec.d_model, 4096);
    assert_eq!(spec, reference("llama3_8b", llama3_8b::SOURCE));
}

#[test]
fn file_without_model_exposes_every_model() {
    assert_eq!(all::llama3_8b::PARAMS, llama3_8b::PARAMS);
    assert_eq!(all::llama3_70b::LAYERS, 80);
    assert_eq!(all::llama3_70b::D_MODEL, 8192);
    const { assert!(all::llama3_70b::PARAMS > 70_000_000_000) };
    assert_eq!(
        all::llama3_70b::spec(),
        reference("llama3_70b", all::llama3_70b::SOURCE)
    );
}

#[test]
fn block_stack_under_a_keyword_name() {
    use hybrid::r#type as gpt3_xl;
    assert_eq!(gpt3_xl::NAME, "type");
    assert_eq!(gpt3_xl::LAYERS, 24);
    let spec = gpt3_xl::spec();
    let blocks: Vec<_> = spec
        .decoder
        .iter()
        .flat_map(|d| &d.layers)
        .map(|l| l.block.as_deref())
        .collect();
    assert_eq!(blocks[..2], [Some("gpt3_dense"), Some("gpt3_banded")]);
    assert_eq!(spec, reference("type", gpt3_xl::SOURCE));
}

/// An inline spec that `use`s a file: paths resolve from `CARGO_MANIFEST_DIR`, and only the
/// models written inline get modules.
mod derived {
    arch_macros::model! {
        use "../tests/examples/llama3.arch"

        model llama3_tiny : llama3_8b {
            d_model = 256
            decoder.layers = 2
            decoder.attention.heads = 8
            decoder.mlp.hidden = 512
        }
    }
}

#[test]
fn inline_spec_using_a_file() {
    use derived::llama3_tiny;
    assert_eq!(llama3_tiny::LAYERS, 2);
    assert_eq!(
        llama3_tiny::LAYER_KINDS,
        &[("decoder", &["attention", "mlp"][..]); 2][..]
    );
    let spec = llama3_tiny::spec();
    assert_eq!((spec.vocab, spec.d_model), (128256, 256));
    const { assert!(llama3_tiny::PARAMS > 2 * 128256 * 256) };
}

//! A GPT-2-like model declared inline, its weights loaded, tokens generated.
//!
//! ```text
//! cargo run -p archc-examples --bin generate -- [WEIGHTS] [N_NEW]
//! ```
//!
//! The default weights are the tiny GPT-2 of `compiler/tests/fixtures/hf/gpt2` (Hugging Face
//! names); the prompts are that fixture's, whose continuation transformers generated too.

use std::path::PathBuf;

arch_macros::model! {
    // GPT-2's architecture at a tiny size: pre-norm, learned positions, GELU (tanh),
    // biases, tied head.
    model tiny_gpt2 {
        vocab = 101
        d_model = 32
        context = 16
        norm = layernorm(eps = 1e-5)
        placement = pre
        position = learned
        decoder {
            layers = 2
            attention { heads = 4  bias = true }
            mlp { hidden = 4 * d_model  act = gelu_tanh  bias = true }
        }
    }
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let weights = args.next().map(PathBuf::from).unwrap_or_else(|| {
        PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("../compiler/tests/fixtures/hf/gpt2/model.safetensors")
    });
    let n_new: usize = args.next().map_or(Ok(8), |n| n.parse())?;
    println!(
        "{}: {} layers, {} parameters",
        tiny_gpt2::NAME,
        tiny_gpt2::LAYERS,
        tiny_gpt2::PARAMS
    );
    let model = tiny_gpt2::Model::load(&weights)?;
    // Two prompts of five tokens, row-major [2, 5].
    let prompts = [61, 44, 45, 21, 26, 10, 27, 78, 61, 13];
    let tokens = model.generate(&prompts, 2, n_new)?;
    for (row, t) in tokens.chunks(5 + n_new).enumerate() {
        let new: Vec<String> = t[5..].iter().map(i64::to_string).collect();
        println!("row {row}: {}", new.join(" "));
    }
    Ok(())
}

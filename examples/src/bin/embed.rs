//! all-MiniLM-L6-v2 declared from its spec file, sentences embedded (mean over real
//! tokens, L2-normalized: sentence-transformers' embeddings) and compared by cosine.
//!
//! ```text
//! MODEL_DIR=$(tools/fetch_minilm.sh | tail -n 1)
//! cargo run -p archc-examples --bin embed -- "$MODEL_DIR" "A man plays guitar." "Someone plays an instrument."
//! ```
//!
//! `MODEL_DIR` holds `model.safetensors` and `tokenizer.json`.

use archc::tokenize::Tokenizer;
use std::path::PathBuf;

arch_macros::model!(
    file = "../compiler/tests/fixtures/minilm/model.arch",
    model = "all_minilm_l6_v2"
);

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let dir = PathBuf::from(args.next().ok_or("usage: embed MODEL_DIR TEXT...")?);
    let texts: Vec<String> = args.collect();
    if texts.is_empty() {
        return Err("give at least one text to embed".into());
    }
    let tokenizer = Tokenizer::load(&dir.join("tokenizer.json"))?;
    // sentence-transformers cuts MiniLM's inputs at 256 tokens.
    let batch = tokenizer.encode_batch(&texts, true, 256)?;
    let model = all_minilm_l6_v2::Model::load(dir.join("model.safetensors"))?;
    let emb = model
        .inner()
        .embed(&batch.ids, Some(&batch.mask), batch.batch, true)?;
    let d = emb.shape()[1];
    let row = |i: usize| &emb.data()[i * d..(i + 1) * d];
    for i in 0..texts.len() {
        for j in 0..texts.len() {
            let cos: f32 = row(i).iter().zip(row(j)).map(|(a, b)| a * b).sum();
            println!("cosine {i} {j} {cos:.6}");
        }
    }
    Ok(())
}

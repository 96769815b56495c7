//! A small GPT declared from its spec file, trained from scratch with `Trainer` on the
//! repository's corpus (`data/tinytales.txt`, tokenized by its BPE tokenizer), saved,
//! loaded back as a `Model` and sampled.
//!
//! ```text
//! cargo run --release -p archc-examples --bin train -- [STEPS] [OUT_DIR]
//! ```

use archc::model::{Init, TrainConfig};
use archc::tokenize::Tokenizer;
use std::path::{Path, PathBuf};

arch_macros::model!(file = "../docs/tutorial/tinygpt.arch", model = "tinygpt");

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let steps: u64 = args.next().map_or(Ok(200), |s| s.parse())?;
    let out = PathBuf::from(args.next().unwrap_or_else(|| "runs/tinygpt-example".into()));
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let tok = Tokenizer::load(&root.join("data/tinytales-tokenizer.json"))?;
    let eot = tok.token_to_id("<|endoftext|>").ok_or("no <|endoftext|>")? as i64;

    // The stories as one token stream, cut into rows of 64 tokens.
    let text = std::fs::read_to_string(root.join("data/tinytales.txt"))?;
    let lines: Vec<String> = text.lines().map(str::to_string).collect();
    let mut stream = Vec::new();
    for chunk in lines.chunks(256) {
        let b = tok.encode_batch(chunk, false, usize::MAX >> 1)?;
        for (r, len) in b.lengths().into_iter().enumerate() {
            stream.extend_from_slice(&b.ids[r * b.seq..r * b.seq + len]);
            stream.push(eot);
        }
    }
    let (batch, seq) = (8usize, 64usize);
    let per_step = batch * seq;

    let config = TrainConfig {
        lr: 2e-3,
        warmup: 20,
        schedule: archc::model::Schedule::Cosine,
        steps,
        ..TrainConfig::default()
    };
    let mut trainer = tinygpt::Model::trainer(Init::Seed(1), &config)?;
    for step in 0..steps as usize {
        let start = (step * per_step) % (stream.len() - per_step);
        let s = trainer.step(&stream[start..start + per_step], batch)?;
        if s.step == 1 || s.step % 20 == 0 || s.step == steps {
            println!("step {:4}  loss {:.4}  lr {:.2e}", s.step, s.loss, s.lr);
        }
    }
    trainer.save(&out)?;
    println!("saved {}", out.display());

    // The trained weights, loaded as any other model, continue a story.
    let model = tinygpt::Model::load(out.join("weights.safetensors"))?;
    let prompt = tok.encode_batch(&["Once upon a time".to_string()], false, 64)?;
    let tokens = model.generate(&prompt.ids, 1, 40)?;
    println!("{}", tok.decode(&tokens, true)?);
    Ok(())
}

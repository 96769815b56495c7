//! `archc generate FILE[:MODEL]|PKG --weights W --inputs I --max-new-tokens N --out O`:
//! token-by-token generation with the model's step program (built and cached from the
//! spec, or the `step` program of a built package), greedy or sampled.

use super::load_model;
use crate::interp::Value;
use crate::package::{generation_packages, BuildOptions};
use crate::tensor::Tensor;
use crate::tensor_io::{read_values, write_values};
use arch_runtime::generate::{Decoding, GenerateOptions, Generated, Generator};
use std::io::Write;
use std::path::Path;
use std::process::ExitCode;

pub struct GenerateArgs<'a> {
    pub target: &'a str,
    pub weights: &'a Path,
    pub inputs: Option<&'a Path>,
    /// Text prompts (one row each, left-padded) with this tokenizer, instead of `inputs`.
    pub tokenizer: Option<&'a Path>,
    pub prompts: &'a [String],
    /// Wrap each prompt in the tokenizer's chat template (a GGUF tokenizer's).
    pub chat: bool,
    pub max_new_tokens: usize,
    pub out: Option<&'a Path>,
    pub save_logits: bool,
    pub temperature: Option<f32>,
    pub top_k: Option<usize>,
    pub top_p: Option<f32>,
    pub seed: Option<u64>,
    pub eos: &'a [i64],
    pub pad: Option<i64>,
    pub decoder_start: i64,
    pub threads: usize,
    /// cpu, cuda or cuda-sim.
    pub backend: &'a str,
    /// Integer dot products over K-quant weights (`--int-dots`, CPU only).
    pub int_dots: bool,
    /// The matmuls' operand type on a cuda backend (`--dtype`).
    pub dtype: &'a str,
}

impl GenerateArgs<'_> {
    /// The generator these arguments ask for ([`any_generator`]).
    fn generator(&self) -> Result<AnyGenerator, String> {
        any_generator(
            self.target,
            self.weights,
            self.threads,
            self.backend,
            self.int_dots,
            self.dtype,
        )
    }
}

pub fn run(args: &GenerateArgs) -> ExitCode {
    match generate(args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

/// A generator on the CPU or on a cuda device (a GPU, or the host simulator).
pub enum AnyGenerator {
    Cpu(Box<Generator>),
    Cuda(Box<Generator<arch_runtime::device::DeviceSession>>),
}

impl AnyGenerator {
    fn is_seq2seq(&self) -> bool {
        match self {
            AnyGenerator::Cpu(g) => g.is_seq2seq(),
            AnyGenerator::Cuda(g) => g.is_seq2seq(),
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn generate_any(
        &mut self,
        ids: &[i64],
        mask: Option<&[i64]>,
        batch: usize,
        decoder_ids: Option<&[i64]>,
        decoder_start: i64,
        opts: &GenerateOptions,
        on_step: impl FnMut(&[i64]),
    ) -> Result<Generated, String> {
        match self {
            AnyGenerator::Cpu(g) => {
                g.generate_any(ids, mask, batch, decoder_ids, decoder_start, opts, on_step)
            }
            AnyGenerator::Cuda(g) => {
                g.generate_any(ids, mask, batch, decoder_ids, decoder_start, opts, on_step)
            }
        }
        .map_err(|e| e.to_string())
    }
}

/// A generator for `backend` (cpu, cuda or cuda-sim): [`generator`], or cuda packages
/// (built for sm_80, which sm_90 GPUs run too) on GPU 0 or the host simulator.
pub fn any_generator(
    target: &str,
    weights: &Path,
    threads: usize,
    backend: &str,
    int_dots: bool,
    dtype: &str,
) -> Result<AnyGenerator, String> {
    let Some(sim) = super::device_of(backend)? else {
        if dtype != "f32" {
            return Err(format!(
                "--dtype {dtype} is for --backend cuda or cuda-sim (the tensor cores' products)"
            ));
        }
        return generator(target, weights, threads, int_dots)
            .map(|g| AnyGenerator::Cpu(Box::new(g)));
    };
    if int_dots {
        return Err("--int-dots is a CPU decode path; the cuda backend computes in f32".into());
    }
    let dir = Path::new(target);
    if dir.join("manifest.json").is_file() {
        if dtype != "f32" {
            return Err(format!(
                "{target} is a built package: its products are its build's (`archc build --dtype`)"
            ));
        }
        return Generator::load_cuda(dir, weights, sim, 0)
            .map(|g| AnyGenerator::Cuda(Box::new(g)))
            .map_err(|e| e.to_string());
    }
    let Some(spec) = load_model(target) else {
        return Err("the spec has errors".into());
    };
    // A GGUF file's or half-precision checkpoint's matrices stay in their type on the
    // device too.
    let mut opts = BuildOptions::for_weights(&spec, weights)?;
    opts.cuda = Some(80);
    opts.sim = sim;
    opts.set_dtype(&spec, dtype)?;
    let (step, encode) = generation_packages(&spec, &opts)?;
    let encode = encode.map(|e| e.dir);
    Generator::load_cuda_programs(&step.dir, encode.as_deref(), weights, sim, 0)
        .map(|g| AnyGenerator::Cuda(Box::new(g)))
        .map_err(|e| e.to_string())
}

/// A generator for a target: a built package directory, or the spec's step program (and
/// an encoder-decoder's encoder program) built into (or served from) the package cache.
/// With `int_dots`, integer dot products over K-quant weights (a spec only: a built
/// package's numerics are its build's).
pub fn generator(
    target: &str,
    weights: &Path,
    threads: usize,
    int_dots: bool,
) -> Result<Generator, String> {
    let dir = Path::new(target);
    if dir.join("manifest.json").is_file() {
        if int_dots {
            return Err(format!(
                "{target} is a built package: give --int-dots to `archc build`, not here"
            ));
        }
        return Generator::load(dir, weights, threads).map_err(|e| e.to_string());
    }
    let Some(spec) = load_model(target) else {
        return Err("the spec has errors".into());
    };
    let mut opts = BuildOptions::for_weights(&spec, weights)?;
    if int_dots {
        opts.set_int_dots()?;
    }
    let (step, encode) = generation_packages(&spec, &opts)?;
    let encode = encode.map(|e| e.dir);
    Generator::load_programs(&step.dir, encode.as_deref(), weights, threads)
        .map_err(|e| e.to_string())
}

/// Each prompt through the chat template of the GGUF tokenizer at `path`.
pub fn chat_prompts(path: &Path, prompts: &[String]) -> Result<Vec<String>, String> {
    let map = arch_runtime::safetensors_file::map(path).map_err(|e| e.to_string())?;
    if !arch_runtime::gguf::is_gguf(&map) {
        return Err(format!(
            "--chat applies a GGUF file's chat template, and {} is not a GGUF file",
            path.display()
        ));
    }
    let g =
        arch_runtime::gguf::Gguf::parse(&map).map_err(|e| format!("{}: {e}", path.display()))?;
    prompts
        .iter()
        .map(|p| crate::gguf_tokenizer::chat_prompt(&g, p))
        .collect()
}

/// Prompts given as text: tokenized (left-padded for a decoder, right-padded for an
/// encoder), generated with the new text streamed to stdout as it comes (one prompt) or
/// printed per row at the end (several), tokens/s on stderr.
fn generate_text(args: &GenerateArgs, tokenizer_path: &Path) -> Result<(), String> {
    if args.prompts.is_empty() {
        return Err("--tokenizer needs at least one --prompt".into());
    }
    let tok = crate::tokenize::Tokenizer::load(tokenizer_path)?;
    // With --chat the template writes the special tokens itself.
    let prompts = if args.chat {
        chat_prompts(tokenizer_path, args.prompts)?
    } else {
        args.prompts.to_vec()
    };
    let mut generator = args.generator()?;
    let seq2seq = generator.is_seq2seq();
    let padding = if seq2seq {
        crate::tokenize::Padding::Right
    } else {
        crate::tokenize::Padding::Left
    };
    let batch = tok.encode_batch_padded(&prompts, !args.chat, padding, usize::MAX >> 1)?;
    let b = batch.batch;
    let opts = options(args);
    let stream = b == 1;
    let mut new: Vec<i64> = Vec::new();
    let mut shown = 0usize;
    let mut ended = false;
    let mut on_step = |step: &[i64]| {
        if !stream || ended {
            return;
        }
        if opts.eos.contains(&step[0]) {
            ended = true;
            return;
        }
        new.push(step[0]);
        // Decode everything new so far and print what was not printed: a token may
        // complete a character only together with the next one.
        if let Ok(text) = tok.decode(&new, true) {
            if text.len() > shown && text.is_char_boundary(shown) && !text.ends_with('\u{fffd}') {
                print!("{}", &text[shown..]);
                let _ = std::io::stdout().flush();
                shown = text.len();
            }
        }
    };
    let out = generator.generate_any(
        &batch.ids,
        Some(&batch.mask),
        b,
        None,
        args.decoder_start,
        &opts,
        &mut on_step,
    )?;
    let prompt_len = if seq2seq { 1 } else { batch.seq };
    if stream {
        println!();
    } else {
        for (r, row) in out.tokens.chunks(out.len).enumerate() {
            let mut gen: Vec<i64> = row[prompt_len..].to_vec();
            if let Some(end) = gen.iter().position(|t| opts.eos.contains(t)) {
                gen.truncate(end);
            }
            println!("[{r}] {}{}", args.prompts[r], tok.decode(&gen, true)?);
        }
    }
    if let Some(path) = args.out {
        write_generated(path, &out)?;
    }
    report(&out);
    Ok(())
}

/// Decoding options from the command line.
fn options(args: &GenerateArgs) -> GenerateOptions {
    GenerateOptions {
        max_new_tokens: args.max_new_tokens,
        decoding: Decoding::from_options(args.temperature, args.top_k, args.top_p, args.seed),
        eos: args.eos.to_vec(),
        pad: args.pad.or(args.eos.first().copied()).unwrap_or(0),
        save_logits: args.save_logits,
    }
}

fn generate(args: &GenerateArgs) -> Result<(), String> {
    let inputs_path = match (args.inputs, args.tokenizer) {
        (Some(_), Some(_)) => {
            return Err("give either --inputs or --tokenizer with --prompt, not both".into())
        }
        (None, Some(t)) => return generate_text(args, t),
        (None, None) => return Err(
            "give the prompts: --inputs I.safetensors, or --tokenizer tokenizer.json --prompt TEXT"
                .into(),
        ),
        (Some(i), None) => i,
    };
    let Some(out_path) = args.out else {
        return Err("--inputs needs --out O.safetensors for the tokens".into());
    };
    if !args.prompts.is_empty() || args.chat {
        return Err("--prompt and --chat need --tokenizer".into());
    }
    let mut inputs = read_values(inputs_path)?;
    let (ids, batch) = match inputs.remove("input_ids") {
        Some(Value::I(t)) if t.shape.len() == 2 => (t.data, t.shape[0]),
        Some(v) => {
            return Err(format!(
                "{}: `input_ids` must be an integer tensor [batch, seq], not {:?}",
                inputs_path.display(),
                v.shape()
            ))
        }
        None => return Err(format!("{} has no `input_ids`", inputs_path.display())),
    };
    let mask = match inputs.remove("attention_mask") {
        Some(Value::I(t)) => Some(t.data),
        Some(_) => return Err("`attention_mask` must be an integer tensor".into()),
        None => None,
    };
    let decoder_ids = match inputs.remove("decoder_input_ids") {
        Some(Value::I(t)) if t.shape.len() == 2 && t.shape[0] == batch => Some(t.data),
        Some(v) => {
            return Err(format!(
                "`decoder_input_ids` must be an integer tensor [{batch}, seq], not {:?}",
                v.shape()
            ))
        }
        None => None,
    };
    if let Some(other) = inputs.keys().next() {
        return Err(format!(
            "{}: generation takes `input_ids`, `attention_mask` and `decoder_input_ids`, not `{other}`",
            inputs_path.display()
        ));
    }
    let mut generator = args.generator()?;
    let opts = options(args);
    let out = generator.generate_any(
        &ids,
        mask.as_deref(),
        batch,
        decoder_ids.as_deref(),
        args.decoder_start,
        &opts,
        |_| {},
    )?;
    write_generated(out_path, &out)?;
    // The new token ids of each row, for a look without opening the file.
    let prompt_len = out.len - args.max_new_tokens;
    for (r, row) in out.tokens.chunks(out.len.max(1)).enumerate().take(16) {
        let new: Vec<String> = row[prompt_len..].iter().map(i64::to_string).collect();
        println!("[{r}] {}", new.join(" "));
    }
    report(&out);
    Ok(())
}

/// Writes `tokens` [batch, len] i64 and, when kept, `logits` [batch, new, vocab] f32.
pub fn write_generated(path: &Path, out: &Generated) -> Result<(), String> {
    let mut tensors = vec![(
        "tokens".to_string(),
        Value::I(Tensor {
            shape: vec![out.batch, out.len],
            data: out.tokens.clone(),
        }),
    )];
    if let Some(l) = &out.logits {
        tensors.push((
            "logits".to_string(),
            Value::F(Tensor {
                shape: vec![
                    out.batch,
                    l.len() / (out.batch * out.vocab).max(1),
                    out.vocab,
                ],
                data: l.clone(),
            }),
        ));
    }
    write_values(path, &tensors)
}

/// Timing on stderr: prefill, then new tokens per second over the whole batch.
pub fn report(out: &Generated) {
    let new = out.decode_steps * out.batch;
    let per_s = if out.decode_seconds > 0.0 {
        new as f64 / out.decode_seconds
    } else {
        0.0
    };
    let _ = writeln!(
        std::io::stderr(),
        "generated {} × {} tokens: prefill {:.1} ms, decode {:.1} tokens/s ({:.2} ms per step), {:.1} KiB of cache",
        out.batch,
        out.len,
        out.prefill_seconds * 1e3,
        per_s,
        if out.decode_steps > 0 {
            out.decode_seconds * 1e3 / out.decode_steps as f64
        } else {
            0.0
        },
        out.state_bytes as f64 / 1024.0
    );
}

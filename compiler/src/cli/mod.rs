//! Command-line arguments → subcommands (`check`, `fmt`, `stats`, `graph`, `build`, `eval`,
//! `bench`, `import-hf`), exit codes and output.

mod bench;
mod build;
mod check;
mod embed;
mod eval;
mod fmt;
mod generate;
mod graph;
mod import_hf;
mod quantize;
mod stats;
pub mod train;

use arch_dsl::diag::render;
use arch_dsl::elab::Program;
use clap::{Parser, Subcommand};
use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Parser)]
#[command(
    name = "archc",
    version,
    about = "Compile neural-network architecture specs (.arch) to fused kernels"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Parse, elaborate and validate spec files; report every error.
    Check {
        #[arg(required = true)]
        files: Vec<PathBuf>,
    },
    /// Rewrite spec files in canonical form (or, with --check, report those that are not).
    Fmt {
        /// Do not write; exit 1 if a file is not formatted.
        #[arg(long)]
        check: bool,
        #[arg(required = true)]
        files: Vec<PathBuf>,
    },
    /// Parameters, FLOPs, memory and scaling-law estimates of one model.
    Stats {
        /// FILE or FILE:MODEL (default: the first model of the file).
        target: String,
        /// Print one JSON object instead of a table.
        #[arg(long)]
        json: bool,
        /// Sequence length for FLOPs and cache sizes (default: the model's context).
        #[arg(long)]
        seq: Option<u64>,
        /// Training tokens D for 6·N·D and the Chinchilla loss (default: 20·N).
        #[arg(long)]
        tokens: Option<f64>,
    },
    /// Print the expanded model: IR text, or a block diagram as DOT or SVG.
    Graph {
        /// FILE or FILE:MODEL.
        target: String,
        /// text (the graph IR), dot (Graphviz) or svg.
        #[arg(long, default_value = "text")]
        format: String,
        /// infer (the forward graph) or train (next-token loss and parameter gradients).
        #[arg(long, default_value = "infer", value_parser = ["infer", "train"])]
        mode: String,
        /// Show the IR after this pass: expand (default), dce, simplify, or fuse (the
        /// Kernel IR the CPU backend lowers).
        #[arg(long)]
        after: Option<String>,
        /// Print every layer instead of one of each run of identical layers.
        #[arg(long)]
        all_layers: bool,
        /// Write to this file instead of stdout.
        #[arg(short, long)]
        out: Option<PathBuf>,
    },
    /// Compile a model to a package: manifest.json, kernels.so and the IR dumps.
    Build {
        /// FILE or FILE:MODEL.
        target: String,
        /// cpu (this machine's x86-64 vector set) or cuda (PTX for an NVIDIA GPU, `--sm`).
        #[arg(long = "target", default_value = "cpu", value_parser = ["cpu", "cuda"])]
        device: String,
        /// cuda: the SM generation the PTX is for (80: Ampere, 90: Hopper).
        #[arg(long, default_value_t = 80)]
        sm: u32,
        /// cuda: also compile the thread programs for this CPU (`kernels.sim.so`), so the
        /// package runs on the host simulator (`--backend cuda-sim`, `arch-run --sim`).
        #[arg(long)]
        sim: bool,
        /// infer (the forward pass) or train (the `train_step` program `archc train` runs).
        #[arg(long, default_value = "infer", value_parser = ["infer", "train"])]
        mode: String,
        /// The package directory (default: the package cache; its path is printed).
        #[arg(short, long)]
        out: Option<PathBuf>,
        /// Keep only these outputs (repeatable; default: every output of the forward graph).
        #[arg(long = "output")]
        outputs: Vec<String>,
        /// The package takes an `attention_mask` input.
        #[arg(long)]
        attention_mask: bool,
        /// Build even when the cache holds this package.
        #[arg(long)]
        no_cache: bool,
        /// Keep the matmul weights quantized (f16, bf16, q8_0, q4_0, q4_1, q5_0, q5_1, q4_k, q5_k, q6_k): the kernels read the blocks,
        /// and weights given in f32 are quantized when loaded.
        #[arg(long)]
        quant: Option<String>,
        /// Keep each matmul weight as this GGUF file stores it (F16, BF16 or any block type).
        #[arg(long)]
        weights: Option<PathBuf>,
        /// Q4_K, Q5_K and Q6_K weights: decode products in integers, the activations
        /// quantized per 256 values to 8 bits as llama.cpp computes them (faster; the logits
        /// move by that rounding, ~1e-2 relative, from the f32 product over the dequantized
        /// weights, the default).
        #[arg(long)]
        int_dots: bool,
        /// cuda: the matmuls' operand type on the tensor cores — f32 (3×TF32 products, f32
        /// accuracy), bf16 or f16 (every matrix stored in it, activations rounded to it
        /// where a matmul reads them, f32 accumulation; norms, softmax and scans in f32).
        #[arg(long, default_value = "f32", value_parser = ["f32", "bf16", "f16"])]
        dtype: String,
    },
    /// Time the forward pass on random weights and token ids.
    Bench {
        /// FILE or FILE:MODEL.
        target: String,
        #[arg(long, default_value_t = 1)]
        batch: usize,
        #[arg(long, default_value_t = 128)]
        seq: usize,
        /// prefill (a forward pass over the prompt), decode (generation: new tokens per
        /// second, prefill excluded) or train (an AdamW step).
        #[arg(long, default_value = "prefill", value_parser = ["prefill", "decode", "train"])]
        mode: String,
        /// Decode: prompt tokens per row.
        #[arg(long, default_value_t = 16)]
        prompt: usize,
        /// Decode: new tokens per row.
        #[arg(long, default_value_t = 128)]
        new: usize,
        /// Time these weights (safetensors in canonical or Hugging Face names, or GGUF) instead of
        /// random ones. A GGUF file's Q8_0 and Q4_K matmul weights stay quantized.
        #[arg(long)]
        weights: Option<PathBuf>,
        /// Keep the matmul weights quantized (f16, bf16, q8_0, q4_0, q4_1, q5_0, q5_1, q4_k, q5_k, q6_k), converting f32 weights (or the
        /// random ones) when loaded.
        #[arg(long)]
        quant: Option<String>,
        /// Q4_K, Q5_K and Q6_K weights: decode products in integers, the activations
        /// quantized per 256 values to 8 bits as llama.cpp computes them (faster; the logits
        /// move by that rounding, ~1e-2 relative, from the f32 product over the dequantized
        /// weights, the default).
        #[arg(long)]
        int_dots: bool,
        /// cuda: the matmuls' operand type on the tensor cores — f32 (3×TF32 products, f32
        /// accuracy), bf16 or f16 (every matrix stored in it, activations rounded to it
        /// where a matmul reads them, f32 accumulation; norms, softmax and scans in f32).
        #[arg(long, default_value = "f32", value_parser = ["f32", "bf16", "f16"])]
        dtype: String,
        /// Print one JSON object (keys include `median_ms` and `tokens_per_s`).
        #[arg(long)]
        json: bool,
        /// Threads (default: one per core).
        #[arg(long, default_value_t = 0)]
        threads: usize,
        #[arg(long, default_value_t = 2)]
        warmup: usize,
        #[arg(long, default_value_t = 10)]
        reps: usize,
        /// Also report where the time goes, per kind of kernel.
        #[arg(long)]
        profile: bool,
        /// cpu, cuda (an NVIDIA GPU; outputs left on the device while timed) or cuda-sim
        /// (the cuda package's thread programs on this CPU: checks that it runs, not speed).
        #[arg(long, default_value = "cpu", value_parser = ["cpu", "cuda", "cuda-sim"])]
        backend: String,
    },
    /// Run a model on inputs from a safetensors file; write its outputs to another.
    Eval {
        /// FILE or FILE:MODEL, or a package directory built by `archc build`.
        target: String,
        /// Weights: safetensors in canonical or Hugging Face names (file or directory), or a GGUF file.
        #[arg(long)]
        weights: PathBuf,
        /// Inputs: `input_ids` [batch, seq] (i64 or i32), and where used `attention_mask`,
        /// `token_type_ids`, `decoder_input_ids`.
        #[arg(long)]
        inputs: PathBuf,
        /// Where to write the outputs.
        #[arg(long)]
        out: PathBuf,
        /// logits ([batch, seq, vocab]) or hidden ([batch, seq, d_model]).
        #[arg(long, default_value = "logits", value_parser = ["logits", "hidden"])]
        output: String,
        /// cpu (generated code, through a cached package), interp (the reference
        /// evaluator), cuda (PTX on an NVIDIA GPU), or cuda-sim (the cuda package's thread
        /// programs on this CPU, one OS thread per GPU thread: slow, for checking without a GPU).
        #[arg(long, default_value = "cpu", value_parser = ["cpu", "interp", "cuda", "cuda-sim"])]
        backend: String,
        /// Threads for the cpu backend (default: one per core).
        #[arg(long, default_value_t = 0)]
        threads: usize,
        /// cuda: the matmuls' operand type on the tensor cores — f32 (3×TF32 products, f32
        /// accuracy), bf16 or f16 (every matrix stored in it, activations rounded to it
        /// where a matmul reads them, f32 accumulation; norms, softmax and scans in f32).
        #[arg(long, default_value = "f32", value_parser = ["f32", "bf16", "f16"])]
        dtype: String,
    },
    /// Generate tokens after prompts with the model's step program (KV caches kept
    /// between steps): greedy unless a sampling option is given.
    Generate {
        /// FILE or FILE:MODEL, or a package directory built by `archc build`.
        target: String,
        /// Weights: safetensors in canonical or Hugging Face names (file or directory), or a GGUF file.
        #[arg(long)]
        weights: PathBuf,
        /// Prompts: `input_ids` [batch, seq] (i64 or i32) and optional `attention_mask`
        /// [batch, seq] (0 marks left padding); encoder-decoders also `decoder_input_ids`.
        #[arg(long)]
        inputs: Option<PathBuf>,
        /// Text prompts instead of --inputs: a Hugging Face tokenizer.json ...
        #[arg(long)]
        tokenizer: Option<PathBuf>,
        /// ... and the prompt (repeatable: a batch, left-padded). One prompt streams its
        /// continuation to stdout as it is generated.
        #[arg(long = "prompt")]
        prompts: Vec<String>,
        /// Wrap each prompt as a user message in the tokenizer's chat template (a GGUF
        /// file's `tokenizer.chat_template`), as transformers' `apply_chat_template` does.
        #[arg(long)]
        chat: bool,
        /// New tokens per row.
        #[arg(long)]
        max_new_tokens: usize,
        /// Where to write `tokens` [batch, seq + N] (and `logits` [batch, N, vocab]);
        /// required with --inputs.
        #[arg(long)]
        out: Option<PathBuf>,
        /// Also write the raw logits that chose each new token.
        #[arg(long)]
        save_logits: bool,
        /// Sampling temperature (sampling: default 1.0).
        #[arg(long)]
        temperature: Option<f32>,
        /// Sample from the k most likely tokens only.
        #[arg(long)]
        top_k: Option<usize>,
        /// Sample from the most likely tokens whose probability reaches p.
        #[arg(long)]
        top_p: Option<f32>,
        /// Seed of the sampler (sampling is reproducible for a given seed).
        #[arg(long)]
        seed: Option<u64>,
        /// End-of-sequence id (repeatable): a row stops at its first one.
        #[arg(long)]
        eos: Vec<i64>,
        /// The id that fills a row after its end (default: the first --eos, else 0).
        #[arg(long)]
        pad: Option<i64>,
        /// Encoder-decoders without `decoder_input_ids`: the decoder's first token (T5: 0,
        /// its pad id; BART: 2, its eos id).
        #[arg(long, default_value_t = 0)]
        decoder_start: i64,
        /// Threads (default: one per core).
        #[arg(long, default_value_t = 0)]
        threads: usize,
        /// cpu, cuda (an NVIDIA GPU: caches and states on the device) or cuda-sim (the
        /// cuda packages' thread programs on this CPU: slow, for checking without a GPU).
        #[arg(long, default_value = "cpu", value_parser = ["cpu", "cuda", "cuda-sim"])]
        backend: String,
        /// Q4_K, Q5_K and Q6_K weights: decode products in integers, the activations
        /// quantized per 256 values to 8 bits as llama.cpp computes them (faster; the logits
        /// move by that rounding, ~1e-2 relative, from the f32 product over the dequantized
        /// weights, the default).
        #[arg(long)]
        int_dots: bool,
        /// cuda: the matmuls' operand type on the tensor cores — f32 (3×TF32 products, f32
        /// accuracy), bf16 or f16 (every matrix stored in it, activations rounded to it
        /// where a matmul reads them, f32 accumulation; norms, softmax and scans in f32).
        #[arg(long, default_value = "f32", value_parser = ["f32", "bf16", "f16"])]
        dtype: String,
    },
    /// Train a model: forward, loss, backward and the optimizer in one compiled program;
    /// logs, checkpoints (resumable bit for bit), the loss curve.
    Train {
        /// FILE or FILE:MODEL.
        target: String,
        /// Pre-tokenized safetensors (`input_ids` [N, T] and optional `attention_mask`,
        /// `token_type_ids`, `labels`, `decoder_input_ids`, `next_sentence_label`,
        /// `sentence_order_label`; DPO: `chosen_ids`, `rejected_ids`, `prompt_lengths` and
        /// optional `chosen_attention_mask`, `rejected_attention_mask`), or text (.txt: one
        /// document per line; .jsonl: a `text` field) with --tokenizer.
        #[arg(long)]
        data: PathBuf,
        /// Initial weights (canonical or Hugging Face names, or a GGUF file).
        #[arg(long, conflicts_with = "seed")]
        init: Option<PathBuf>,
        /// Fresh weights from this seed (also the --shuffle seed).
        #[arg(long)]
        seed: Option<u64>,
        /// Rows per micro-batch.
        #[arg(long)]
        batch: usize,
        /// Optimizer steps in total (a resumed run continues to this many).
        #[arg(long)]
        steps: u64,
        /// Peak learning rate.
        #[arg(long, default_value_t = 3e-4)]
        lr: f64,
        #[arg(long, default_value = "adamw", value_parser = ["adamw", "sgd"])]
        optimizer: String,
        /// AdamW's β₁,β₂.
        #[arg(long, default_value = "0.9,0.999")]
        betas: String,
        #[arg(long, default_value_t = 1e-8)]
        eps: f64,
        /// Decoupled weight decay (AdamW) or L2 (SGD), on parameters of ≥ 2 dimensions.
        #[arg(long, default_value_t = 0.01)]
        weight_decay: f64,
        /// SGD's momentum.
        #[arg(long, default_value_t = 0.9)]
        momentum: f64,
        #[arg(long, default_value = "constant", value_parser = ["constant", "linear", "cosine"])]
        schedule: String,
        /// Warmup steps (the learning rate rises linearly from 0).
        #[arg(long, default_value_t = 0)]
        warmup: u64,
        /// Clip the global gradient norm (0: no clipping).
        #[arg(long, default_value_t = 1.0)]
        clip: f64,
        /// Micro-batches per optimizer step (gradient accumulation).
        #[arg(long, default_value_t = 1)]
        accum: u64,
        /// Visit the rows in a new seeded order each epoch (else in file order).
        #[arg(long)]
        shuffle: bool,
        /// Checkpoint directory.
        #[arg(long)]
        out: PathBuf,
        /// Continue from the checkpoint in this directory.
        #[arg(long)]
        resume: Option<PathBuf>,
        /// Also checkpoint every N steps.
        #[arg(long)]
        save_every: Option<u64>,
        /// One JSON line per step: step, loss, lr, grad_norm, tokens_per_s.
        #[arg(long)]
        log: Option<PathBuf>,
        /// Threads (default: one per core).
        #[arg(long, default_value_t = 0)]
        threads: usize,
        /// Text data: the Hugging Face tokenizer.json.
        #[arg(long)]
        tokenizer: Option<PathBuf>,
        /// Text data: tokens per row (default 128, at most the context).
        #[arg(long)]
        seq_len: Option<usize>,
        /// Encoder-decoders without `decoder_input_ids`: the decoder's start token (T5: 0,
        /// BART: 2) ...
        #[arg(long, default_value_t = 0)]
        decoder_start: i64,
        /// ... and the pad id that replaces −100 in them (T5: 0, BART: 1).
        #[arg(long, default_value_t = 0)]
        pad_id: i64,
        /// Keep a parameter fixed (canonical name, or `prefix.` for every parameter under
        /// it; repeatable).
        #[arg(long)]
        freeze: Vec<String>,
        /// MLM and BART noising without labels in the data: the mask token's id (default:
        /// the tokenizer's [MASK] or <mask>).
        #[arg(long)]
        mask_id: Option<i64>,
        /// cpu, cuda (an NVIDIA GPU: parameters and optimizer moments stay on the device)
        /// or cuda-sim (the cuda train package's thread programs on this CPU: slow, for
        /// checking without a GPU).
        #[arg(long, default_value = "cpu", value_parser = ["cpu", "cuda", "cuda-sim"])]
        backend: String,
    },
    /// Sentence embeddings: texts tokenized with a tokenizer.json, run through an encoder,
    /// pooled per text (sentence-transformers' recipe with mean pooling and --normalize).
    Embed {
        /// FILE or FILE:MODEL: an encoder-only model (a decoder-only one takes mean pooling).
        target: String,
        /// Weights: safetensors in canonical or Hugging Face names (file or directory), or a GGUF file.
        #[arg(long)]
        weights: PathBuf,
        /// The Hugging Face tokenizer.json of the model.
        #[arg(long)]
        tokenizer: PathBuf,
        /// A text to embed (repeatable; these come first, in order).
        #[arg(long = "text")]
        texts: Vec<String>,
        /// A file of texts, one per line (blank lines skipped), after the --text ones.
        #[arg(long)]
        file: Option<PathBuf>,
        /// mean (over the real tokens) or cls (the first token's hidden state).
        #[arg(long, default_value = "mean", value_parser = ["mean", "cls"])]
        pooling: String,
        /// L2-normalize each embedding.
        #[arg(long)]
        normalize: bool,
        /// Where to write `embeddings` [texts, d_model] (f32 safetensors).
        #[arg(long)]
        out: PathBuf,
        /// Also print the cosine similarity of every pair of texts as a table.
        #[arg(long)]
        similarity: bool,
        /// Cut texts to this many tokens (default: the model's context, or the
        /// max_seq_length of a sentence_bert_config.json beside the tokenizer).
        #[arg(long)]
        max_length: Option<usize>,
        /// Threads (default: one per core).
        #[arg(long, default_value_t = 0)]
        threads: usize,
    },
    /// Convert a Hugging Face config.json into a .arch spec.
    ImportHf {
        /// The config.json to read.
        config: PathBuf,
        /// Write the spec here instead of to stdout.
        #[arg(short, long)]
        output: Option<PathBuf>,
        /// The model's name (default: from the file name).
        #[arg(long)]
        name: Option<String>,
        /// ELECTRA: the generator's config.json (default: the discriminator's widths).
        #[arg(long)]
        generator: Option<PathBuf>,
    },
    /// Write a GGUF file with the weight matrices in one type (from GGUF, or from
    /// safetensors with a config.json or --spec): llama.cpp's llama, gpt2 and mamba.
    Quantize {
        /// The weights: a .gguf file, a .safetensors file or a Hugging Face model directory.
        input: PathBuf,
        /// f32, f16, bf16, q8_0, q4_0, q4_1, q5_0, q5_1, q4_k or q6_k.
        #[arg(long = "type")]
        ty: String,
        /// The GGUF file to write.
        #[arg(short, long)]
        output: PathBuf,
        /// The model (FILE[:MODEL]) when safetensors come without a config.json.
        #[arg(long)]
        spec: Option<String>,
        /// A byte-level BPE tokenizer.json to write into the file (default: the one beside
        /// the weights, if any).
        #[arg(long)]
        tokenizer: Option<PathBuf>,
    },
    /// Write the .arch spec of a GGUF file (llama.cpp's architectures llama, gpt2, mamba).
    ImportGguf {
        /// The .gguf file to read.
        file: PathBuf,
        /// Write the spec here instead of to stdout.
        #[arg(short, long)]
        output: Option<PathBuf>,
        /// The model's name (default: the file's `general.name`, else its file name).
        #[arg(long)]
        name: Option<String>,
    },
}

/// Deep specs are parsed with recursion; give the work a stack that bounded input fits in.
const STACK_BYTES: usize = 256 << 20;

pub fn main() -> ExitCode {
    let cli = Cli::parse();
    let worker = std::thread::Builder::new()
        .stack_size(STACK_BYTES)
        .spawn(move || run(cli));
    match worker.map(|h| h.join()) {
        Ok(Ok(code)) => code,
        _ => {
            eprintln!("error: internal failure (this is a bug in archc; please report it)");
            ExitCode::from(2)
        }
    }
}

fn run(cli: Cli) -> ExitCode {
    match cli.command {
        Command::Check { files } => check::run(&files),
        Command::Fmt { check, files } => fmt::run(&files, check),
        Command::Stats {
            target,
            json,
            seq,
            tokens,
        } => stats::run(&target, json, seq, tokens),
        Command::Graph {
            target,
            format,
            mode,
            after,
            all_layers,
            out,
        } => graph::run(&graph::GraphArgs {
            target: &target,
            format: &format,
            mode: &mode,
            after: after.as_deref(),
            all_layers,
            out: out.as_deref(),
        }),
        Command::Build {
            target,
            device,
            sm,
            sim,
            mode,
            out,
            outputs,
            attention_mask,
            no_cache,
            quant,
            weights,
            int_dots,
            dtype,
        } => build::run(&build::BuildArgs {
            target: &target,
            device: &device,
            sm,
            sim,
            mode: &mode,
            out: out.as_deref(),
            outputs: &outputs,
            attention_mask,
            no_cache,
            quant: quant.as_deref(),
            weights: weights.as_deref(),
            int_dots,
            dtype: &dtype,
        }),
        Command::Bench {
            target,
            batch,
            seq,
            mode,
            json,
            threads,
            warmup,
            reps,
            profile,
            prompt,
            new,
            weights,
            quant,
            backend,
            int_dots,
            dtype,
        } => bench::run(&bench::BenchArgs {
            target: &target,
            batch,
            seq,
            mode: &mode,
            json,
            threads,
            warmup,
            reps,
            backend: &backend,
            profile,
            prompt,
            new,
            weights: weights.as_deref(),
            quant: quant.as_deref(),
            int_dots,
            dtype: &dtype,
        }),
        Command::Eval {
            target,
            weights,
            inputs,
            out,
            output,
            backend,
            threads,
            dtype,
        } => eval::run(&eval::EvalArgs {
            target: &target,
            weights: &weights,
            inputs: &inputs,
            out: &out,
            output: &output,
            backend: &backend,
            threads,
            dtype: &dtype,
        }),
        Command::Generate {
            target,
            weights,
            inputs,
            tokenizer,
            prompts,
            chat,
            max_new_tokens,
            out,
            save_logits,
            temperature,
            top_k,
            top_p,
            seed,
            eos,
            pad,
            decoder_start,
            threads,
            backend,
            int_dots,
            dtype,
        } => generate::run(&generate::GenerateArgs {
            target: &target,
            weights: &weights,
            inputs: inputs.as_deref(),
            tokenizer: tokenizer.as_deref(),
            prompts: &prompts,
            chat,
            max_new_tokens,
            out: out.as_deref(),
            save_logits,
            temperature,
            top_k,
            top_p,
            seed,
            eos: &eos,
            pad,
            decoder_start,
            threads,
            backend: &backend,
            int_dots,
            dtype: &dtype,
        }),
        Command::Embed {
            target,
            weights,
            tokenizer,
            texts,
            file,
            pooling,
            normalize,
            out,
            similarity,
            max_length,
            threads,
        } => embed::run(&embed::EmbedArgs {
            target: &target,
            weights: &weights,
            tokenizer: &tokenizer,
            texts: &texts,
            file: file.as_deref(),
            pooling: &pooling,
            normalize,
            out: &out,
            similarity,
            max_length,
            threads,
        }),
        Command::Train {
            target,
            data,
            init,
            seed,
            batch,
            steps,
            lr,
            optimizer,
            betas,
            eps,
            weight_decay,
            momentum,
            schedule,
            warmup,
            clip,
            accum,
            shuffle,
            out,
            resume,
            save_every,
            log,
            threads,
            tokenizer,
            seq_len,
            decoder_start,
            pad_id,
            freeze,
            mask_id,
            backend,
        } => {
            let parsed: Vec<Result<f64, _>> = betas.split(',').map(|b| b.trim().parse()).collect();
            let betas = match parsed.as_slice() {
                [Ok(a), Ok(b)] => (*a, *b),
                _ => {
                    eprintln!("error: --betas takes two numbers, B1,B2 (got `{betas}`)");
                    return ExitCode::FAILURE;
                }
            };
            train::run(&train::TrainArgs {
                target: &target,
                data: &data,
                init: init.as_deref(),
                seed,
                batch,
                steps,
                lr,
                optimizer: &optimizer,
                betas,
                eps,
                weight_decay,
                momentum,
                schedule: &schedule,
                warmup,
                clip,
                accum,
                shuffle,
                out: &out,
                resume: resume.as_deref(),
                save_every,
                log: log.as_deref(),
                threads,
                tokenizer: tokenizer.as_deref(),
                seq_len,
                decoder_start,
                pad_id,
                freeze: &freeze,
                mask_id,
                backend: &backend,
            })
        }
        Command::ImportHf {
            config,
            output,
            name,
            generator,
        } => import_hf::run(&config, output.as_deref(), name, generator.as_deref()),
        Command::Quantize {
            input,
            ty,
            output,
            spec,
            tokenizer,
        } => quantize::run(&input, &ty, &output, spec.as_deref(), tokenizer.as_deref()),
        Command::ImportGguf { file, output, name } => {
            import_hf::run_gguf(&file, output.as_deref(), name)
        }
    }
}

/// Whether diagnostics on stderr get colours.
fn color() -> bool {
    std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none()
}

/// Splits `FILE[:MODEL]`.
fn split_target(target: &str) -> (PathBuf, Option<String>) {
    if let Some((file, model)) = target.rsplit_once(':') {
        let is_ident = !model.is_empty()
            && model.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
            && !model.starts_with(|c: char| c.is_ascii_digit());
        if is_ident && !file.is_empty() {
            return (PathBuf::from(file), Some(model.to_string()));
        }
    }
    (PathBuf::from(target), None)
}

/// Loads `FILE[:MODEL]` (the first model when none is named) and elaborates it, printing
/// every diagnostic; `None` when it cannot be had.
pub(crate) fn load_model(target: &str) -> Option<arch_dsl::ArchSpec> {
    let (path, model) = split_target(target);
    let prog = match Program::load(&path) {
        Ok(p) => p,
        Err(e) => {
            eprintln!("error: cannot read {}: {e}", path.display());
            return None;
        }
    };
    if prog.has_errors() {
        eprint!("{}", render(&prog.sources, &prog.diagnostics, color()));
        return None;
    }
    let names = prog.model_names();
    let name = match model {
        Some(m) if prog.has_model(&m) => m,
        Some(m) => {
            let hint = prog
                .suggest_model(&m)
                .map(|h| format!(" ({h})"))
                .unwrap_or_default();
            eprintln!(
                "error: no model `{m}` in {}{hint}; models: {}",
                path.display(),
                names.join(", ")
            );
            return None;
        }
        None => match names.first() {
            Some(n) => n.clone(),
            None => {
                eprintln!("error: {} defines no model", path.display());
                return None;
            }
        },
    };
    let (spec, diags) = prog.elaborate(&name);
    eprint!("{}", render(&prog.sources, &diags, color()));
    spec
}

/// The `--backend` of a command that runs on the CPU or a cuda device: None for `cpu`,
/// Some(sim) for `cuda` (a GPU; its driver must be present) or `cuda-sim` (the host
/// simulator).
pub(crate) fn device_of(backend: &str) -> Result<Option<bool>, String> {
    match backend {
        "cpu" => Ok(None),
        "cuda" => {
            arch_runtime::device::cuda::driver_present().map_err(|e| e.to_string())?;
            Ok(Some(false))
        }
        "cuda-sim" => Ok(Some(true)),
        other => Err(format!("unknown backend `{other}` (cpu, cuda or cuda-sim)")),
    }
}

//! `archc build FILE[:MODEL] [--target cpu|cuda [--sm 80|90]] [-o DIR]` → a package
//! directory (manifest, kernels.so or kernels.ptx, IR dumps); served from the package
//! cache when nothing changed.

use super::load_model;
use crate::package::{build, BuildOptions};
use std::path::Path;
use std::process::ExitCode;

pub struct BuildArgs<'a> {
    pub target: &'a str,
    pub device: &'a str,
    pub sm: u32,
    pub sim: bool,
    pub mode: &'a str,
    pub out: Option<&'a Path>,
    pub outputs: &'a [String],
    pub attention_mask: bool,
    pub no_cache: bool,
    pub quant: Option<&'a str>,
    /// Integer dot products over K-quant weights (`--int-dots`).
    pub int_dots: bool,
    pub weights: Option<&'a Path>,
    /// The matmuls' operand type on the tensor cores (`--dtype`).
    pub dtype: &'a str,
}

pub fn run(args: &BuildArgs) -> ExitCode {
    match run_build(args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run_build(args: &BuildArgs) -> Result<(), String> {
    let Some(spec) = load_model(args.target) else {
        return Err("the spec has errors".into());
    };
    let mut opts = match args.weights {
        Some(w) => BuildOptions::for_weights(&spec, w)?,
        None => BuildOptions::host()?,
    };
    if let Some(q) = args.quant {
        if args.weights.is_some() {
            return Err("give --quant or --weights, not both".into());
        }
        opts.quantize_all(&spec, q)?;
    }
    if args.int_dots {
        opts.set_int_dots()?;
    }
    match args.mode {
        "infer" => {}
        "train" => {
            // The train package `archc train` runs (AdamW, no accumulation): one
            // `train_step` entry, parameters and moments as session state.
            crate::train::losses(&spec)?;
            if !args.outputs.is_empty() {
                return Err("--output selects forward outputs; a train package outputs `loss` and `grad_norm`".into());
            }
            if !opts.quant.is_empty() {
                return Err(
                    "a train package keeps its parameters in f32 (no --quant or --weights)".into(),
                );
            }
            opts.kind = crate::package::PackageKind::Train(crate::train::TrainOptions::default());
        }
        other => return Err(format!("unknown mode `{other}` (infer or train)")),
    }
    opts.outputs = args.outputs.to_vec();
    opts.attention_mask = args.attention_mask;
    opts.cache = !args.no_cache;
    opts.verbose = true;
    if args.sim && args.device != "cuda" {
        return Err("--sim goes with --target cuda".into());
    }
    match args.device {
        "cpu" => {}
        "cuda" => {
            opts.cuda = Some(args.sm);
            opts.sim = args.sim;
        }
        other => return Err(format!("unknown target `{other}` (cpu or cuda)")),
    }
    opts.set_dtype(&spec, args.dtype)?;
    match opts.cuda {
        None => eprintln!(
            "archc: building {} for {} ({})",
            spec.name, opts.target.cpu, opts.target.isa
        ),
        Some(sm) => eprintln!(
            "archc: building {} for cuda sm_{sm}{}",
            spec.name,
            opts.half_matmul
                .map_or(String::new(), |t| format!(", {} products", t.name()))
        ),
    }
    let built = build(&spec, &opts, args.out)?;
    eprintln!(
        "archc: {} {} in {:.2} s",
        if built.cached {
            "cached package copied to"
        } else {
            "wrote"
        },
        built.dir.display(),
        built.seconds
    );
    println!("{}", built.dir.display());
    Ok(())
}

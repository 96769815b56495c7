//! `archc eval FILE[:MODEL]|PKG --weights W --inputs I --out O` → the model's outputs on
//! the chosen backend (generated code by default, or the reference evaluator), written as
//! safetensors.

use super::load_model;
use crate::eval::{evaluate, evaluate_cpu, run_package};
use crate::tensor_io::{read_values, write_f32};
use std::path::Path;
use std::process::ExitCode;

pub struct EvalArgs<'a> {
    pub target: &'a str,
    pub weights: &'a Path,
    pub inputs: &'a Path,
    pub out: &'a Path,
    pub output: &'a str,
    pub backend: &'a str,
    pub threads: usize,
    /// The matmuls' operand type on a cuda backend (`--dtype`).
    pub dtype: &'a str,
}

pub fn run(args: &EvalArgs) -> ExitCode {
    match eval(args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

fn eval(args: &EvalArgs) -> Result<(), String> {
    let inputs = read_values(args.inputs)?;
    let started = std::time::Instant::now();
    let package = Path::new(args.target);
    let on_cuda = matches!(args.backend, "cuda" | "cuda-sim");
    if args.dtype != "f32" && !on_cuda {
        return Err(format!(
            "--dtype {} is for --backend cuda or cuda-sim (the tensor cores' products)",
            args.dtype
        ));
    }
    let outputs = if package.join("manifest.json").is_file() {
        if args.dtype != "f32" {
            return Err(format!(
                "{} is a built package: its products are its build's (`archc build --dtype`)",
                args.target
            ));
        }
        // A built package: the runtime alone, no spec needed.
        let all = if args.backend == "cuda-sim" {
            crate::eval::run_cuda_package(
                package,
                &crate::eval::WeightSource::File(args.weights),
                inputs,
                crate::eval::CudaRun::Sim,
            )?
        } else {
            run_package(package, Some(args.weights), inputs, args.threads)?
        };
        let picked: Vec<_> = all.into_iter().filter(|(n, _)| n == args.output).collect();
        if picked.is_empty() {
            return Err(format!(
                "the package at {} has no output `{}`",
                package.display(),
                args.output
            ));
        }
        picked
    } else {
        let Some(spec) = load_model(args.target) else {
            return Err("the spec has errors".into());
        };
        if args.backend == "interp" {
            evaluate(&spec, args.weights, inputs, &[args.output])?
        } else if let Some(run) = match args.backend {
            "cuda" => Some(crate::eval::CudaRun::Gpu),
            "cuda-sim" => Some(crate::eval::CudaRun::Sim),
            _ => None,
        } {
            crate::eval::evaluate_cuda(
                &spec,
                args.weights,
                inputs,
                &[args.output],
                run,
                args.dtype,
            )?
        } else {
            evaluate_cpu(&spec, args.weights, inputs, &[args.output], args.threads)?
        }
    };
    write_f32(args.out, &outputs)?;
    let shapes: Vec<String> = outputs
        .iter()
        .map(|(n, t)| format!("{n} {:?}", t.shape))
        .collect();
    eprintln!(
        "wrote {} to {} in {:.2} s",
        shapes.join(", "),
        args.out.display(),
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

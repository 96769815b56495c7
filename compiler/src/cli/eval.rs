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
    if args.backend == "cuda" {
        return Err(
            "the `cuda` backend is not built yet; use `--backend cpu` or `--backend interp`".into(),
        );
    }
    let inputs = read_values(args.inputs)?;
    let started = std::time::Instant::now();
    let package = Path::new(args.target);
    let outputs = if package.join("manifest.json").is_file() {
        // A built package: the runtime alone, no spec needed.
        let all = run_package(package, Some(args.weights), inputs, args.threads)?;
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

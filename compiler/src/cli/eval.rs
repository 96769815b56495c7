//! `archc eval FILE[:MODEL] --weights W --inputs I --out O` → the model's outputs on the
//! chosen backend, written as safetensors.

use super::load_model;
use crate::eval::evaluate;
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
    if args.backend != "interp" {
        return Err(format!(
            "the `{}` backend is not built yet; use `--backend interp` (the reference evaluator)",
            args.backend
        ));
    }
    let Some(spec) = load_model(args.target) else {
        return Err("the spec has errors".into());
    };
    let inputs = read_values(args.inputs)?;
    let started = std::time::Instant::now();
    let outputs = evaluate(&spec, args.weights, inputs, &[args.output])?;
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

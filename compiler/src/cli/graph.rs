//! `archc graph FILE[:MODEL]` → the expanded model: IR text (repeated layers shown once),
//! or a block diagram as Graphviz DOT or SVG.

use super::load_model;
use crate::diagram::{collapse, to_dot, to_svg};
use crate::expand::{forward, ExpandOptions};
use crate::graph::print;
use crate::passes::prune;
use std::path::Path;
use std::process::ExitCode;

pub struct GraphArgs<'a> {
    pub target: &'a str,
    pub format: &'a str,
    pub mode: &'a str,
    pub after: Option<&'a str>,
    pub all_layers: bool,
    pub out: Option<&'a Path>,
}

pub fn run(args: &GraphArgs) -> ExitCode {
    match render(args) {
        Ok(text) => match args.out {
            Some(path) => match std::fs::write(path, text) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("error: cannot write {}: {e}", path.display());
                    ExitCode::FAILURE
                }
            },
            None => {
                print!("{text}");
                ExitCode::SUCCESS
            }
        },
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

fn render(args: &GraphArgs) -> Result<String, String> {
    let spec = load_model(args.target).ok_or("the spec has errors")?;
    match args.format {
        "dot" => return Ok(to_dot(&spec)),
        "svg" => return Ok(to_svg(&spec)),
        "text" => {}
        other => return Err(format!("unknown format `{other}` (text, dot or svg)")),
    }
    let (shown, runs) = if args.all_layers {
        (spec.clone(), Vec::new())
    } else {
        collapse(&spec)
    };
    let mut graph = forward(
        &shown,
        &ExpandOptions {
            attention_mask: true,
            ..ExpandOptions::default()
        },
    )?;
    match args.mode {
        "infer" => {}
        "train" => graph = train_graph(&shown, graph)?,
        other => return Err(format!("unknown mode `{other}` (infer or train)")),
    }
    let mut fused = None;
    match args.after {
        None | Some("expand") | Some("autodiff") => {}
        Some("dce") => graph = prune(&graph),
        Some("simplify") => graph = crate::passes::simplify(&graph),
        Some("fuse") => {
            graph = crate::passes::simplify(&graph);
            fused = Some(crate::package::package_program(&graph)?);
        }
        Some(other) => {
            return Err(format!(
                "unknown pass `{other}` (expand, autodiff, dce, simplify, fuse)"
            ))
        }
    }
    let mut text = String::new();
    for (stack, first, count) in runs.iter().filter(|r| r.2 > 1) {
        text.push_str(&format!(
            "// {stack} layers {first}..{}: identical, shown once\n",
            first + count
        ));
    }
    match fused {
        // The Kernel IR: every kernel, buffers and their arena slots.
        Some(p) => text.push_str(&crate::kernel::print(&p)),
        None => text.push_str(&print(&graph)),
    }
    Ok(text)
}

/// The training graph: the next-token loss on the logits (labels are the input ids) and the
/// gradient of every parameter. Other objectives' losses are not built yet.
fn train_graph(
    spec: &arch_dsl::ArchSpec,
    mut graph: crate::graph::Graph,
) -> Result<crate::graph::Graph, String> {
    use arch_dsl::spec::Objective;
    if !spec
        .objectives
        .iter()
        .any(|o| matches!(o, Objective::NextToken))
    {
        return Err(
            "`--mode train` builds the next-token loss; this model's objective has no `next_token`"
                .into(),
        );
    }
    let logits = graph
        .outputs
        .iter()
        .find(|(n, _)| n == "logits")
        .map(|(_, id)| *id)
        .ok_or("the model has no logits")?;
    let ids = *graph.inputs.first().ok_or("the graph has no inputs")?;
    crate::autodiff::add_lm_loss(&mut graph, logits, ids);
    crate::autodiff::grad(&graph, "loss", crate::autodiff::Wrt::Params)
}

//! Graph + scalar loss → graph that also computes gradients: reverse-mode automatic
//! differentiation as a pure graph-to-graph pass.
//!
//! [`grad`] copies the forward graph and appends, for every node on a path from a wanted
//! leaf to the loss, the adjoint computation given by that op's derivative rule
//! (`rules.rs`: one arm per op, exhaustive, so a new op breaks the build here). Adjoints of
//! a node used several times are summed; so are the gradients of parameter nodes that share
//! a name (tied embeddings). Structured ops have their own files: `attention.rs` (an
//! explicit softmax-attention backward equal to the decomposition into primitive ops) and
//! `scan.rs` (a scan's derivative is a reverse scan whose body is this pass applied to the
//! forward body). `loss.rs` builds Hugging Face's causal-LM loss; `check.rs` compares
//! gradients with central finite differences.
//!
//! Every gradient has exactly the shape of its node (checked as it is built), so the
//! result verifies like any other graph. Two things the result contains beyond adjoints:
//! each differentiated forward scan gains extra stacked outputs (the state entering each
//! step, which its reverse scan recomputes from), and an embedding's gradient is a one-hot
//! matmul (`one_hot(ids)ᵀ · dy`) because the op set has no scatter-add — exact, and cheap
//! at the evaluator's sizes; a `ScatterAdd` op would replace it for real vocabularies.
//! [`vjp`] builds gradients into a graph in place (an inner loop's update, as in TTT).

mod attention;
pub mod check;
pub mod loss;
mod rules;
mod scan;

pub use loss::add_lm_loss;

use crate::graph::{DType, Dim, Graph, NodeId, Op, Shape};
use std::collections::HashMap;

/// What to differentiate with respect to.
#[derive(Clone, Debug, PartialEq)]
pub enum Wrt {
    /// Every parameter, by name: outputs `grad:{name}`.
    Params,
    /// The named f32 inputs: outputs `grad:{input name}`.
    Inputs(Vec<String>),
}

/// The graph `g` plus, for each parameter (or each named input), an output
/// `grad:{name}` holding d(`loss`)/d(it). `loss` must name an f32 output with one element.
/// Parameters the loss does not depend on get zero gradients.
pub fn grad(g: &Graph, loss: &str, wrt: Wrt) -> Result<Graph, String> {
    if let Some(e) = &g.error {
        return Err(format!("graph `{}`: {e}", g.name));
    }
    let loss_id = g
        .outputs
        .iter()
        .find(|(n, _)| n == loss)
        .map(|(_, id)| *id)
        .ok_or_else(|| format!("graph `{}` has no output `{loss}`", g.name))?;
    let loss_node = g.node(loss_id);
    if loss_node.dtype != DType::F32 || loss_node.shape.iter().any(|d| *d != Dim::c(1)) {
        return Err(format!(
            "the loss `{loss}` must be an f32 scalar, it is {}{:?}",
            loss_node.dtype.name(),
            loss_node.shape
        ));
    }
    let mut out = g.clone();
    let targets: Vec<NodeId> = match &wrt {
        Wrt::Params => Vec::new(),
        Wrt::Inputs(names) => names
            .iter()
            .map(|n| find_input(g, n))
            .collect::<Result<_, _>>()?,
    };
    let one = out.constant(1.0);
    let seed = if loss_node.shape.is_empty() {
        one
    } else {
        out.broadcast(one, loss_node.shape.clone())
    };
    let grads = backprop(
        &mut out,
        &[(loss_id, seed)],
        &targets,
        matches!(wrt, Wrt::Params),
    )?;
    match &wrt {
        Wrt::Params => {
            for (name, shape) in param_shapes(g) {
                let parts: Vec<NodeId> = grads
                    .params
                    .iter()
                    .filter(|(n, _)| *n == name)
                    .map(|(_, id)| *id)
                    .collect();
                let total = sum_or_zeros(&mut out, &parts, &shape);
                out.output(&format!("grad:{name}"), total);
            }
        }
        Wrt::Inputs(names) => {
            for (name, (target, adjoint)) in names.iter().zip(targets.iter().zip(&grads.targets)) {
                let total = match adjoint {
                    Some(a) => *a,
                    None => rules::zeros(&mut out, &g.shape(*target).clone()),
                };
                out.output(&format!("grad:{name}"), total);
            }
        }
    }
    let out = crate::passes::prune(&out).finish()?;
    crate::graph::verify(&out)?;
    Ok(out)
}

/// Vector–Jacobian product in place: appends to `g` the adjoints of the nodes `wrt` given
/// `seeds`, each a node and its adjoint (same shape). For building a gradient into a
/// forward computation — TTT's inner-loop update inside a scan body — rather than beside
/// it. A node the seeds do not depend on gets zeros. Parameters are treated as constants.
pub fn vjp(
    g: &mut Graph,
    seeds: &[(NodeId, NodeId)],
    wrt: &[NodeId],
) -> Result<Vec<NodeId>, String> {
    for &(node, adjoint) in seeds {
        if g.shape(node) != g.shape(adjoint) {
            return Err(format!(
                "vjp: the adjoint of %{} has shape {:?}, the node {:?}",
                node.0,
                g.shape(adjoint),
                g.shape(node)
            ));
        }
    }
    let grads = backprop(g, seeds, wrt, false)?;
    Ok(wrt
        .iter()
        .zip(grads.targets)
        .map(|(&w, d)| {
            d.unwrap_or_else(|| {
                let shape = g.shape(w).clone();
                rules::zeros(g, &shape)
            })
        })
        .collect())
}

fn find_input(g: &Graph, name: &str) -> Result<NodeId, String> {
    let id = g
        .inputs
        .iter()
        .copied()
        .find(|&id| matches!(&g.node(id).op, Op::Input { name: n } if n == name))
        .ok_or_else(|| format!("graph `{}` has no input `{name}`", g.name))?;
    if g.node(id).dtype != DType::F32 {
        return Err(format!("input `{name}` is not f32 and has no gradient"));
    }
    Ok(id)
}

/// Every parameter name used by `g` or its scan bodies, in order of first use, with its shape.
pub(crate) fn param_shapes(g: &Graph) -> Vec<(String, Shape)> {
    fn walk(g: &Graph, out: &mut Vec<(String, Shape)>) {
        for node in &g.nodes {
            match &node.op {
                Op::Param { name } if !out.iter().any(|(n, _)| n == name) => {
                    out.push((name.clone(), node.shape.clone()))
                }
                Op::Scan { body, .. } => walk(body, out),
                _ => {}
            }
        }
    }
    let mut out = Vec::new();
    walk(g, &mut out);
    out
}

fn sum_or_zeros(g: &mut Graph, parts: &[NodeId], shape: &Shape) -> NodeId {
    match parts.split_first() {
        None => rules::zeros(g, shape),
        Some((&first, rest)) => rest.iter().fold(first, |acc, &p| g.add(acc, p)),
    }
}

/// What [`backprop`] found: the adjoint of each target (None when the seeds do not depend
/// on it) and, when parameters are wanted, one contribution per parameter use.
pub(crate) struct Grads {
    pub targets: Vec<Option<NodeId>>,
    pub params: Vec<(String, NodeId)>,
}

/// The reverse sweep over the nodes of `g` that exist now: seeds each `(node, adjoint)`,
/// propagates adjoints to the `targets` (and to parameters when `want_params`), appending
/// the derivative computations to `g`.
pub(crate) fn backprop(
    g: &mut Graph,
    seeds: &[(NodeId, NodeId)],
    targets: &[NodeId],
    want_params: bool,
) -> Result<Grads, String> {
    let n = g.nodes.len();
    let needed = needed_nodes(g, seeds, targets, want_params);
    let mut sweep = Sweep {
        adjoints: vec![None; n],
        scan_adjoints: HashMap::new(),
        params: Vec::new(),
    };
    for &(node, adjoint) in seeds {
        if needed[node.0 as usize] {
            sweep.accumulate(g, node, adjoint)?;
        }
    }
    for i in (0..n).rev() {
        if !needed[i] {
            continue;
        }
        let id = NodeId(i as u32);
        let want: Vec<bool> = g.nodes[i]
            .inputs
            .iter()
            .map(|a| needed[a.0 as usize])
            .collect();
        match &g.nodes[i].op {
            Op::TupleGet { index } => {
                let (index, scan) = (*index, g.nodes[i].inputs[0]);
                if let Some(dy) = sweep.adjoints[i] {
                    let slot = sweep.scan_adjoints.entry(scan.0 as usize).or_default();
                    if slot.len() <= index {
                        slot.resize(index + 1, None);
                    }
                    slot[index] = Some(match slot[index] {
                        Some(prev) => g.add(prev, dy),
                        None => dy,
                    });
                }
            }
            Op::Scan { .. } => {
                if let Some(outs) = sweep.scan_adjoints.remove(&i) {
                    let (grads, params) = scan::scan_grads(g, id, &outs, &want, want_params)?;
                    sweep.params.extend(params);
                    sweep.propagate(g, id, grads)?;
                }
            }
            Op::Param { name } => {
                if let (true, Some(dy)) = (want_params, sweep.adjoints[i]) {
                    sweep.params.push((name.clone(), dy));
                }
            }
            _ => {
                if let Some(dy) = sweep.adjoints[i] {
                    let grads = rules::input_grads(g, id, dy, &want)?;
                    sweep.propagate(g, id, grads)?;
                }
            }
        }
    }
    Ok(Grads {
        targets: targets
            .iter()
            .map(|t| sweep.adjoints[t.0 as usize])
            .collect(),
        params: sweep.params,
    })
}

struct Sweep {
    adjoints: Vec<Option<NodeId>>,
    /// Per scan node, the adjoint of each of its outputs (from its `get`s).
    scan_adjoints: HashMap<usize, Vec<Option<NodeId>>>,
    params: Vec<(String, NodeId)>,
}

impl Sweep {
    fn accumulate(&mut self, g: &mut Graph, node: NodeId, adjoint: NodeId) -> Result<(), String> {
        if g.shape(adjoint) != g.shape(node) {
            return Err(format!(
                "autodiff: the gradient of %{} ({}) has shape {:?}, expected {:?}",
                node.0,
                g.node(node).op.name(),
                g.shape(adjoint),
                g.shape(node)
            ));
        }
        let slot = &mut self.adjoints[node.0 as usize];
        *slot = Some(match *slot {
            Some(prev) => g.add(prev, adjoint),
            None => adjoint,
        });
        Ok(())
    }

    /// Adds a rule's per-input gradients into the inputs' adjoints.
    fn propagate(
        &mut self,
        g: &mut Graph,
        id: NodeId,
        grads: Vec<Option<NodeId>>,
    ) -> Result<(), String> {
        let inputs = g.node(id).inputs.clone();
        for (input, grad) in inputs.into_iter().zip(grads) {
            if let Some(grad) = grad {
                if g.node(input).dtype == DType::F32 {
                    self.accumulate(g, input, grad).map_err(|e| {
                        format!("{e}, from the rule of %{} ({})", id.0, g.node(id).op.name())
                    })?;
                }
            }
        }
        Ok(())
    }
}

/// Nodes that need an adjoint: f32 nodes that depend on a target (or a parameter) and that
/// some seed depends on.
fn needed_nodes(
    g: &Graph,
    seeds: &[(NodeId, NodeId)],
    targets: &[NodeId],
    want_params: bool,
) -> Vec<bool> {
    let n = g.nodes.len();
    let mut depends = vec![false; n];
    for t in targets {
        depends[t.0 as usize] = true;
    }
    for (i, node) in g.nodes.iter().enumerate() {
        let from_inputs = node.inputs.iter().any(|a| depends[a.0 as usize]);
        let own = match &node.op {
            Op::Param { .. } => want_params,
            Op::Scan { body, .. } => want_params && !param_shapes(body).is_empty(),
            _ => false,
        };
        depends[i] = (depends[i] || from_inputs || own) && node.dtype == DType::F32;
    }
    let mut reaches = vec![false; n];
    for (s, _) in seeds {
        reaches[s.0 as usize] = true;
    }
    for i in (0..n).rev() {
        if reaches[i] && depends[i] {
            for a in &g.nodes[i].inputs {
                reaches[a.0 as usize] = true;
            }
        }
    }
    (0..n).map(|i| depends[i] && reaches[i]).collect()
}

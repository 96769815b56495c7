//! `scan` node + adjoints of its outputs → adjoints of its inputs (and of the parameters its
//! body reads): the derivative of a scan is a scan running the other way.
//!
//! For a forward step `(h', y) = f(h, x, c)` the backward step is
//!
//! ```text
//! (dh, acc_p, acc_c) , (h, x, dy) , c  ↦  (vjp_h, acc_p + vjp_p, acc_c + vjp_c) , vjp_x
//! ```
//!
//! where `vjp_*` are the adjoints of the forward body at `(h, x, c)` seeded with `dh` on
//! its new states and `dy` on its step outputs — the forward body differentiated by
//! [`super::backprop`] itself, so nested scans and every op's rule come for free. The body
//! recomputes the forward step from the state it started from: the forward scan is given
//! extra stacked outputs, the state entering each step (`saved_state{i}`), appended after
//! its existing outputs so that every `get` keeps its meaning. Gradients of constants and
//! of parameters read inside the body are accumulated in extra states.

use super::{backprop, param_shapes, rules::zeros};
use crate::graph::{DType, Dim, Graph, Node, NodeId, Op, Shape};

/// Per-input gradients (None: no gradient) and per-use parameter gradients.
pub(super) type ScanGrads = (Vec<Option<NodeId>>, Vec<(String, NodeId)>);

/// Per-input gradients of scan node `id` and the contributions to parameters read in its
/// body. `out_adjoints[i]` is the adjoint of output i (None: unused).
pub(super) fn scan_grads(
    g: &mut Graph,
    id: NodeId,
    out_adjoints: &[Option<NodeId>],
    want: &[bool],
    want_params: bool,
) -> Result<ScanGrads, String> {
    let node = g.node(id).clone();
    let Op::Scan {
        body,
        states: ns,
        seqs: nq,
        reverse,
    } = &node.op
    else {
        return Err("autodiff: not a scan".into());
    };
    let (ns, nq) = (*ns, *nq);
    let nc = node.inputs.len() - ns - nq;
    let ny = body.outputs.len() - ns;
    if nq == 0 {
        return Err("autodiff: a scan without sequences cannot be differentiated".into());
    }
    for i in 0..ns {
        let s = body.node(body.inputs[i]);
        if s.dtype != DType::F32 || s.shape.is_empty() {
            return Err("autodiff: scan states must be f32 tensors of rank ≥ 1".into());
        }
    }
    if body.outputs[ns..]
        .iter()
        .any(|(_, o)| body.node(*o).dtype != DType::F32)
    {
        return Err("autodiff: scan step outputs must be f32".into());
    }
    let seq_dim = g
        .shape(node.inputs[ns])
        .get(1)
        .cloned()
        .ok_or("autodiff: scan sequence without a time axis")?;
    let saved = save_states(g, id, body, ns, &seq_dim);

    let is_f32 = |g: &Graph, i: usize| g.node(node.inputs[i]).dtype == DType::F32;
    let wanted_seqs: Vec<usize> = (0..nq)
        .filter(|&j| want[ns + j] && is_f32(g, ns + j))
        .collect();
    let wanted_consts: Vec<usize> = (0..nc)
        .filter(|&c| want[ns + nq + c] && is_f32(g, ns + nq + c))
        .collect();
    let params = if want_params {
        param_shapes(body)
    } else {
        Vec::new()
    };
    let layout = Layout {
        ns,
        nq,
        nc,
        ny,
        seqs: wanted_seqs,
        consts: wanted_consts,
        params,
    };
    let backward = backward_body(body, &layout, want_params)?;

    // Initial states: adjoints of the final states, zero accumulators.
    let mut states = Vec::new();
    for i in 0..ns {
        states.push(adjoint_or_zeros(
            g,
            out_adjoints.get(i).copied().flatten(),
            node.inputs[i],
        ));
    }
    for (_, shape) in &layout.params {
        states.push(zeros(g, shape));
    }
    for &c in &layout.consts {
        let shape = g.shape(node.inputs[ns + nq + c]).clone();
        states.push(zeros(g, &shape));
    }
    let mut seqs = saved;
    seqs.extend(node.inputs[ns..ns + nq].iter().copied());
    for k in 0..ny {
        let shape = stacked(body.shape(body.outputs[ns + k].1), &seq_dim);
        let dy = match out_adjoints.get(ns + k).copied().flatten() {
            Some(d) => d,
            None => zeros(g, &shape),
        };
        seqs.push(dy);
    }
    let consts = node.inputs[ns + nq..].to_vec();
    let outs = g.scan(backward, states, seqs, consts, !reverse);

    let mut grads = vec![None; node.inputs.len()];
    for (i, grad) in grads.iter_mut().enumerate().take(ns) {
        *grad = Some(outs[i]);
    }
    let np = layout.params.len();
    let param_grads = layout
        .params
        .iter()
        .enumerate()
        .map(|(p, (name, _))| (name.clone(), outs[ns + p]))
        .collect();
    for (k, &c) in layout.consts.iter().enumerate() {
        grads[ns + nq + c] = Some(outs[ns + np + k]);
    }
    let n_states = ns + np + layout.consts.len();
    for (k, &j) in layout.seqs.iter().enumerate() {
        grads[ns + j] = Some(outs[n_states + k]);
    }
    Ok((grads, param_grads))
}

/// Which inputs the backward body has and returns.
struct Layout {
    ns: usize,
    nq: usize,
    nc: usize,
    ny: usize,
    /// Sequence inputs that get gradients (indices among the sequences).
    seqs: Vec<usize>,
    /// Constants that get gradients (indices among the constants).
    consts: Vec<usize>,
    params: Vec<(String, Shape)>,
}

fn adjoint_or_zeros(g: &mut Graph, adjoint: Option<NodeId>, like: NodeId) -> NodeId {
    match adjoint {
        Some(a) => a,
        None => {
            let shape = g.shape(like).clone();
            zeros(g, &shape)
        }
    }
}

/// A step value's shape stacked over time, as `Graph::scan` stacks it.
fn stacked(step: &Shape, seq_dim: &Dim) -> Shape {
    let mut s = step.clone();
    s.insert(1.min(s.len()), seq_dim.clone());
    s
}

/// Makes scan `id` also output the state entering each step; returns those stacked outputs.
fn save_states(g: &mut Graph, id: NodeId, body: &Graph, ns: usize, seq_dim: &Dim) -> Vec<NodeId> {
    let mut body2 = body.clone();
    for i in 0..ns {
        body2
            .outputs
            .push((format!("saved_state{i}"), body.inputs[i]));
    }
    let n_out = body.outputs.len();
    if let Op::Scan { body: b, .. } = &mut g.nodes[id.0 as usize].op {
        **b = body2;
    }
    (0..ns)
        .map(|i| {
            let shape = stacked(body.shape(body.inputs[i]), seq_dim);
            g.push(
                Op::TupleGet { index: n_out + i },
                vec![id],
                Some(shape),
                DType::F32,
            )
        })
        .collect()
}

/// The body of the backward scan: inputs (dh, param accumulators, const accumulators),
/// (saved states, step inputs, output adjoints), constants; outputs (dh of the previous
/// step, updated accumulators), gradients of the wanted step inputs.
fn backward_body(body: &Graph, l: &Layout, want_params: bool) -> Result<Graph, String> {
    let mut bb = Graph::new(&format!("{}_grad", body.name));
    let in_shape = |i: usize| body.shape(body.inputs[i]).clone();
    let in_dtype = |i: usize| body.node(body.inputs[i]).dtype;
    let dh: Vec<NodeId> = (0..l.ns)
        .map(|i| bb.input(&format!("d_state{i}"), in_shape(i), DType::F32))
        .collect();
    let acc_p: Vec<NodeId> = l
        .params
        .iter()
        .map(|(n, s)| bb.input(&format!("acc:{n}"), s.clone(), DType::F32))
        .collect();
    let acc_c: Vec<NodeId> = l
        .consts
        .iter()
        .map(|&c| {
            bb.input(
                &format!("acc_const{c}"),
                in_shape(l.ns + l.nq + c),
                DType::F32,
            )
        })
        .collect();
    let mut forward_inputs: Vec<NodeId> = (0..l.ns)
        .map(|i| bb.input(&format!("state{i}"), in_shape(i), DType::F32))
        .collect();
    for j in 0..l.nq {
        forward_inputs.push(bb.input(&format!("step{j}"), in_shape(l.ns + j), in_dtype(l.ns + j)));
    }
    let dys: Vec<NodeId> = (0..l.ny)
        .map(|k| {
            bb.input(
                &format!("d_out{k}"),
                body.shape(body.outputs[l.ns + k].1).clone(),
                DType::F32,
            )
        })
        .collect();
    for c in 0..l.nc {
        let i = l.ns + l.nq + c;
        forward_inputs.push(bb.input(&format!("const{c}"), in_shape(i), in_dtype(i)));
    }
    let map = copy_body(&mut bb, body, &forward_inputs)?;

    let mut seeds: Vec<(NodeId, NodeId)> = (0..l.ns)
        .map(|i| (map[body.outputs[i].1 .0 as usize], dh[i]))
        .collect();
    seeds.extend((0..l.ny).map(|k| (map[body.outputs[l.ns + k].1 .0 as usize], dys[k])));
    let mut targets: Vec<NodeId> = forward_inputs[..l.ns].to_vec();
    targets.extend(l.seqs.iter().map(|&j| forward_inputs[l.ns + j]));
    targets.extend(l.consts.iter().map(|&c| forward_inputs[l.ns + l.nq + c]));
    let grads = backprop(&mut bb, &seeds, &targets, want_params)?;

    let or_zeros = |bb: &mut Graph, grad: Option<NodeId>, like: NodeId| match grad {
        Some(d) => d,
        None => {
            let shape = bb.shape(like).clone();
            zeros(bb, &shape)
        }
    };
    for (i, (&grad, &state)) in grads
        .targets
        .iter()
        .zip(&forward_inputs)
        .take(l.ns)
        .enumerate()
    {
        let d = or_zeros(&mut bb, grad, state);
        bb.output(&format!("d_state{i}"), d);
    }
    for (p, (name, _)) in l.params.iter().enumerate() {
        let total = grads
            .params
            .iter()
            .filter(|(n, _)| n == name)
            .fold(acc_p[p], |acc, &(_, d)| bb.add(acc, d));
        bb.output(&format!("acc:{name}"), total);
    }
    let n_seq = l.seqs.len();
    for (k, &c) in l.consts.iter().enumerate() {
        let total = match grads.targets[l.ns + n_seq + k] {
            Some(d) => bb.add(acc_c[k], d),
            None => acc_c[k],
        };
        bb.output(&format!("acc_const{c}"), total);
    }
    for (k, &j) in l.seqs.iter().enumerate() {
        let d = or_zeros(&mut bb, grads.targets[l.ns + k], forward_inputs[l.ns + j]);
        bb.output(&format!("d_step{j}"), d);
    }
    bb.finish()
}

/// Copies `body`'s nodes into `bb`, its inputs replaced by `inputs`; returns the id map.
fn copy_body(bb: &mut Graph, body: &Graph, inputs: &[NodeId]) -> Result<Vec<NodeId>, String> {
    let mut map = vec![None; body.nodes.len()];
    for (k, &id) in body.inputs.iter().enumerate() {
        map[id.0 as usize] = Some(inputs[k]);
    }
    for (i, node) in body.nodes.iter().enumerate() {
        if map[i].is_some() {
            continue;
        }
        if matches!(node.op, Op::Input { .. }) {
            return Err(format!(
                "autodiff: scan body `{}` has an input node that is not among its inputs",
                body.name
            ));
        }
        let args = node
            .inputs
            .iter()
            .map(|a| map[a.0 as usize].ok_or("autodiff: scan body out of order"))
            .collect::<Result<_, _>>()?;
        bb.nodes.push(Node {
            op: node.op.clone(),
            inputs: args,
            shape: node.shape.clone(),
            dtype: node.dtype,
        });
        map[i] = Some(NodeId(bb.nodes.len() as u32 - 1));
    }
    Ok(map.into_iter().map(|m| m.unwrap_or(NodeId(0))).collect())
}

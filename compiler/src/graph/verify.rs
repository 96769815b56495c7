//! Graph → Ok or the first broken invariant: inputs defined before use, arities, shapes
//! that agree with the op table's shape rules, dtypes, outputs that exist. Run after every
//! pass in tests.

use super::{op, DType, Graph, Op};

pub fn verify(g: &Graph) -> Result<(), String> {
    for (i, node) in g.nodes.iter().enumerate() {
        let at = |msg: String| format!("graph `{}`, %{i} ({}): {msg}", g.name, node.op.name());
        if let Some(bad) = node.inputs.iter().find(|a| a.0 as usize >= i) {
            return Err(at(format!("uses %{} before it is defined", bad.0)));
        }
        let shapes: Vec<_> = node
            .inputs
            .iter()
            .map(|a| g.nodes[a.0 as usize].shape.clone())
            .collect();
        let dtypes: Vec<DType> = node
            .inputs
            .iter()
            .map(|a| g.nodes[a.0 as usize].dtype)
            .collect();
        match &node.op {
            Op::TupleGet { index } => {
                let Some(src) = node.inputs.first().map(|a| &g.nodes[a.0 as usize]) else {
                    return Err(at("`get` needs a scan".into()));
                };
                let Op::Scan { body, .. } = &src.op else {
                    return Err(at("`get` of a node that is not a scan".into()));
                };
                if *index >= body.outputs.len() {
                    return Err(at(format!("scan has {} outputs", body.outputs.len())));
                }
            }
            Op::Scan {
                body, states, seqs, ..
            } => {
                verify(body)?;
                if body.inputs.len() != node.inputs.len() {
                    return Err(at(format!(
                        "body takes {} inputs, scan gives {}",
                        body.inputs.len(),
                        node.inputs.len()
                    )));
                }
                if body.outputs.len() < *states || node.inputs.len() < states + seqs {
                    return Err(at("states and sequences do not fit the body".into()));
                }
            }
            _ => {
                let shape = op::infer_shape(&node.op, &shapes, Some(&node.shape)).map_err(at)?;
                if shape != node.shape {
                    return Err(at(format!(
                        "shape {:?} does not follow from inputs (expected {:?})",
                        node.shape, shape
                    )));
                }
            }
        }
        match &node.op {
            Op::Gather if dtypes.get(1) != Some(&DType::I64) => {
                return Err(at("gather ids must be i64".into()))
            }
            Op::ScatterAdd { .. }
                if dtypes.first() != Some(&DType::I64) || dtypes.get(1) != Some(&DType::F32) =>
            {
                return Err(at("scatter_add takes i64 ids and f32 updates".into()))
            }
            Op::Gather
            | Op::ScatterAdd { .. }
            | Op::Cast
            | Op::Input { .. }
            | Op::Reshape
            | Op::Permute { .. }
            | Op::Broadcast
            | Op::Slice { .. } => {}
            Op::TupleGet { .. } | Op::Scan { .. } => {}
            // The third input only says how many tokens the ring has seen.
            Op::UpdateRing if dtypes[..2].iter().all(|d| *d == DType::F32) => {}
            _ if dtypes.iter().any(|d| *d != DType::F32) => {
                return Err(at("takes f32 inputs".into()))
            }
            _ => {}
        }
    }
    if let Some((name, id)) = g
        .outputs
        .iter()
        .find(|(_, id)| id.0 as usize >= g.nodes.len())
    {
        return Err(format!(
            "graph `{}`: output `{name}` is %{}, which does not exist",
            g.name, id.0
        ));
    }
    Ok(())
}

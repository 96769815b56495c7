//! Dead-code elimination: Graph → the nodes the outputs need, renumbered in order.

use crate::graph::{Graph, Node, NodeId};

/// Drops every node no output depends on. Inputs stay (callers pass them by position).
pub fn prune(g: &Graph) -> Graph {
    let mut live = vec![false; g.nodes.len()];
    for (_, id) in &g.outputs {
        live[id.0 as usize] = true;
    }
    for &id in &g.inputs {
        live[id.0 as usize] = true;
    }
    for i in (0..g.nodes.len()).rev() {
        if live[i] {
            for a in &g.nodes[i].inputs {
                live[a.0 as usize] = true;
            }
        }
    }
    let mut remap = vec![NodeId(u32::MAX); g.nodes.len()];
    let mut nodes = Vec::new();
    for (i, node) in g.nodes.iter().enumerate() {
        if live[i] {
            remap[i] = NodeId(nodes.len() as u32);
            let inputs = node.inputs.iter().map(|a| remap[a.0 as usize]).collect();
            nodes.push(Node {
                inputs,
                ..node.clone()
            });
        }
    }
    Graph {
        name: g.name.clone(),
        nodes,
        inputs: g.inputs.iter().map(|a| remap[a.0 as usize]).collect(),
        outputs: g
            .outputs
            .iter()
            .map(|(n, a)| (n.clone(), remap[a.0 as usize]))
            .collect(),
        error: g.error.clone(),
    }
}

/// Keeps only the named outputs (in the given order), then prunes.
pub fn keep_outputs(g: &Graph, names: &[&str]) -> Result<Graph, String> {
    let mut kept = g.clone();
    kept.outputs = names
        .iter()
        .map(|n| {
            g.outputs
                .iter()
                .find(|(o, _)| o == n)
                .cloned()
                .ok_or_else(|| {
                    let have: Vec<&str> = g.outputs.iter().map(|(o, _)| o.as_str()).collect();
                    format!("the model has no output `{n}` (it has {})", have.join(", "))
                })
        })
        .collect::<Result<_, _>>()?;
    Ok(prune(&kept))
}

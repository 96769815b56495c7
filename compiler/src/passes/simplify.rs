//! Simplification and common-subexpression elimination: Graph → an equivalent graph with
//! algebraic identities folded and identical nodes merged, then pruned.
//!
//! Rules (each exact in f32, and applied only where shapes and dtypes already agree, so no
//! broadcast or conversion is lost): `x · 1`, `1 · x`, `x + 0`, `0 + x`, `x − 0`, `x / 1`
//! → `x`; `−(−x)` → `x`; reshape, broadcast or cast to the input's own shape and dtype →
//! the input; reshape of a reshape → one reshape; permute of a permute → one permute, and
//! the identity permutation → the input. Then two nodes with the same op, attributes,
//! inputs, shape and dtype are one node (never two `input`s). Scan bodies are simplified
//! the same way.

use crate::graph::{BinaryOp, Graph, Node, NodeId, Op, UnaryOp};
use std::collections::HashMap;

use super::prune;

/// Simplifies `g`, merges common subexpressions and prunes what no output needs.
pub fn simplify(g: &Graph) -> Graph {
    let mut out = Graph {
        name: g.name.clone(),
        nodes: Vec::with_capacity(g.nodes.len()),
        inputs: Vec::new(),
        outputs: Vec::new(),
        error: g.error.clone(),
    };
    let mut remap: Vec<NodeId> = Vec::with_capacity(g.nodes.len());
    let mut seen: HashMap<String, NodeId> = HashMap::new();
    for node in &g.nodes {
        let inputs: Vec<NodeId> = node.inputs.iter().map(|a| remap[a.0 as usize]).collect();
        let op = match &node.op {
            Op::Scan {
                body,
                states,
                seqs,
                reverse,
            } => Op::Scan {
                body: Box::new(simplify(body)),
                states: *states,
                seqs: *seqs,
                reverse: *reverse,
            },
            other => other.clone(),
        };
        let candidate = Node {
            op,
            inputs,
            shape: node.shape.clone(),
            dtype: node.dtype,
        };
        if let Some(same) = identity(&out, &candidate) {
            remap.push(same);
            continue;
        }
        let candidate = fold_chain(&out, candidate);
        if let Some(same) = identity(&out, &candidate) {
            remap.push(same);
            continue;
        }
        let id = if matches!(candidate.op, Op::Input { .. }) {
            push(&mut out, candidate)
        } else {
            let key = format!(
                "{:?}|{:?}|{:?}|{:?}",
                candidate.op, candidate.inputs, candidate.shape, candidate.dtype
            );
            match seen.get(&key) {
                Some(&id) => id,
                None => {
                    let id = push(&mut out, candidate);
                    seen.insert(key, id);
                    id
                }
            }
        };
        remap.push(id);
    }
    out.inputs = g.inputs.iter().map(|a| remap[a.0 as usize]).collect();
    out.outputs = g
        .outputs
        .iter()
        .map(|(n, a)| (n.clone(), remap[a.0 as usize]))
        .collect();
    prune(&out)
}

fn push(g: &mut Graph, node: Node) -> NodeId {
    g.nodes.push(node);
    NodeId(g.nodes.len() as u32 - 1)
}

fn constant(g: &Graph, id: NodeId) -> Option<f64> {
    match g.node(id).op {
        Op::Const { value } => Some(value),
        _ => None,
    }
}

/// The existing node `n` equals, when an identity applies.
fn identity(g: &Graph, n: &Node) -> Option<NodeId> {
    let same = |id: NodeId| {
        let x = g.node(id);
        (x.shape == n.shape && x.dtype == n.dtype).then_some(id)
    };
    match &n.op {
        Op::Binary(op) => {
            let (a, b) = (n.inputs[0], n.inputs[1]);
            let (ca, cb) = (constant(g, a), constant(g, b));
            match op {
                BinaryOp::Mul if cb == Some(1.0) => same(a),
                BinaryOp::Mul if ca == Some(1.0) => same(b),
                BinaryOp::Add if cb == Some(0.0) => same(a),
                BinaryOp::Add if ca == Some(0.0) => same(b),
                BinaryOp::Sub if cb == Some(0.0) => same(a),
                BinaryOp::Div if cb == Some(1.0) => same(a),
                _ => None,
            }
        }
        Op::Unary(UnaryOp::Neg) => match &g.node(n.inputs[0]).op {
            Op::Unary(UnaryOp::Neg) => same(g.node(n.inputs[0]).inputs[0]),
            _ => None,
        },
        Op::Reshape | Op::Broadcast | Op::Cast => same(n.inputs[0]),
        Op::Permute { perm } if perm.iter().enumerate().all(|(i, &p)| i == p) => same(n.inputs[0]),
        _ => None,
    }
}

/// Reshape of a reshape reads the original; permute of a permute is one permute.
fn fold_chain(g: &Graph, mut n: Node) -> Node {
    let Some(&first_input) = n.inputs.first() else {
        return n;
    };
    let inner = g.node(first_input);
    match (&n.op, &inner.op) {
        (Op::Reshape, Op::Reshape) => {
            n.inputs[0] = inner.inputs[0];
        }
        (Op::Permute { perm: outer }, Op::Permute { perm: first }) => {
            let composed: Vec<usize> = outer.iter().map(|&p| first[p]).collect();
            n.op = Op::Permute { perm: composed };
            n.inputs[0] = inner.inputs[0];
        }
        _ => {}
    }
    n
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::graph::{verify, DType, Dim};

    fn g2() -> (Graph, NodeId) {
        let mut g = Graph::new("t");
        let x = g.input("x", vec![Dim::sym("batch"), Dim::c(4)], DType::F32);
        (g, x)
    }

    #[test]
    fn identities_fold_and_duplicates_merge() {
        let (mut g, x) = g2();
        let one = g.constant(1.0);
        let zero = g.constant(0.0);
        let a = g.push(Op::Binary(BinaryOp::Mul), vec![x, one], None, DType::F32);
        let b = g.push(Op::Binary(BinaryOp::Add), vec![a, zero], None, DType::F32);
        let e1 = g.push(Op::Unary(UnaryOp::Exp), vec![b], None, DType::F32);
        let e2 = g.push(Op::Unary(UnaryOp::Exp), vec![x], None, DType::F32);
        let s = g.push(Op::Binary(BinaryOp::Add), vec![e1, e2], None, DType::F32);
        g.output("y", s);
        let out = simplify(&g);
        verify(&out).unwrap();
        // x, exp(x), exp + exp
        assert_eq!(out.nodes.len(), 3, "{}", crate::graph::print(&out));
        let add = out.node(out.outputs[0].1);
        assert_eq!(add.inputs[0], add.inputs[1]);
    }

    #[test]
    fn broadcasting_identities_are_kept() {
        let mut g = Graph::new("t");
        let x = g.input("x", vec![Dim::c(4)], DType::F32);
        let ones = g.push(
            Op::Broadcast,
            vec![x],
            Some(vec![Dim::c(3), Dim::c(4)]),
            DType::F32,
        );
        let one = g.constant(1.0);
        let y = g.push(Op::Binary(BinaryOp::Mul), vec![one, ones], None, DType::F32);
        // 1 · x with x of shape [4] makes [4]; but 1 · broadcast(x) is already [3, 4].
        let z = g.push(Op::Binary(BinaryOp::Mul), vec![x, one], None, DType::F32);
        g.output("y", y);
        g.output("z", z);
        let out = simplify(&g);
        verify(&out).unwrap();
        assert_eq!(out.node(out.outputs[0].1).shape, vec![Dim::c(3), Dim::c(4)]);
        assert_eq!(out.outputs[1].1, out.inputs[0]);
    }

    #[test]
    fn reshapes_and_permutes_collapse() {
        let mut g = Graph::new("t");
        let x = g.input("x", vec![Dim::c(2), Dim::c(3), Dim::c(4)], DType::F32);
        let r1 = g.reshape(x, vec![Dim::c(6), Dim::c(4)]);
        let r2 = g.reshape(r1, vec![Dim::c(24)]);
        let p1 = g.push(
            Op::Permute {
                perm: vec![1, 2, 0],
            },
            vec![x],
            None,
            DType::F32,
        );
        let p2 = g.push(
            Op::Permute {
                perm: vec![2, 0, 1],
            },
            vec![p1],
            None,
            DType::F32,
        );
        g.output("flat", r2);
        g.output("same", p2);
        let out = simplify(&g);
        verify(&out).unwrap();
        let flat = out.node(out.outputs[0].1);
        assert_eq!(flat.inputs[0], out.inputs[0]);
        assert_eq!(
            out.outputs[1].1,
            out.inputs[0],
            "{}",
            crate::graph::print(&out)
        );
    }
}

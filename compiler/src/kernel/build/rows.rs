//! Which scans compute each row (each sequence of the batch) from that row alone, so that
//! the backends may run their rows apart — on several threads, in several GPU blocks —
//! each as a scan of one row. A scan qualifies when its rows are a plain symbol `R`
//! (the sequences' axis 0) and every value of its body is either *free* (computed from
//! constants that do not mention `R`: the same for every row) or *row-major* (axis 0 is
//! `R`, no other axis mentions `R`, and row r depends only on row r of row-major values
//! and on free ones). States, step slices and outputs must be row-major; constants may be
//! either. An op qualifies only by a rule below (everything else, attention and nested
//! scans among them, keeps the scan whole).
//!
//! Running a row alone then means: `R` bound to the row count of the part, and every
//! buffer whose element count mentions `R` advanced by the rows before the part (a
//! row-major buffer holds its rows one after another). A free value computed inside the
//! body would be written by every part at once, so a body with one keeps the scan whole.

use crate::graph::{Dim, Graph, NodeId, Op};

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Class {
    /// The same for every row (computed from constants that do not mention the rows).
    Free,
    /// Axis 0 is the rows; row r depends only on rows r.
    Rows,
}

/// The rows' symbol of scan `scan` of `g` when its rows can run apart (module docs).
pub(crate) fn independent_rows(g: &Graph, scan: NodeId) -> Option<String> {
    let node = g.nodes.get(scan.0 as usize)?;
    let Op::Scan {
        body, states, seqs, ..
    } = &node.op
    else {
        return None;
    };
    let (states, seqs) = (*states, *seqs);
    let first_seq = g.nodes.get(node.inputs.get(states)?.0 as usize)?;
    let rows = first_seq.shape.first()?;
    let sym = match (rows.coef, rows.div, rows.syms.as_slice()) {
        (1, 1, [s]) => s.clone(),
        _ => return None,
    };
    let mentions = |d: &Dim| d.syms.contains(&sym);
    // A shape row-major in `R`: axis 0 is `R` and no other axis mentions it.
    let row_major = |shape: &[Dim]| shape.first() == Some(rows) && !shape[1..].iter().any(mentions);
    let free_shape = |shape: &[Dim]| !shape.iter().any(mentions);
    let mut class: Vec<Option<Class>> = vec![None; body.nodes.len()];
    for (k, &input) in body.inputs.iter().enumerate() {
        let shape = &body.node(input).shape;
        class[input.0 as usize] = if k < states + seqs {
            // States and step slices are the scan's own: one row each per sequence.
            row_major(shape).then_some(Class::Rows)
        } else if row_major(shape) {
            Some(Class::Rows)
        } else if free_shape(shape) {
            Some(Class::Free)
        } else {
            None
        };
        class[input.0 as usize]?;
    }
    for (i, n) in body.nodes.iter().enumerate() {
        if class[i].is_some() || matches!(n.op, Op::Input { .. }) {
            continue;
        }
        let ins: Vec<Class> = n
            .inputs
            .iter()
            .map(|x| class[x.0 as usize])
            .collect::<Option<_>>()?;
        let rank = n.shape.len();
        let c = if ins.iter().all(|&c| c == Class::Free) {
            if !free_shape(&n.shape) {
                // Iota along the rows differs per row; a broadcast of constants to [R, ..]
                // is the same for all of them.
                match &n.op {
                    Op::Iota { axis: 0 } => return None,
                    _ if row_major(&n.shape) => Class::Rows,
                    _ => return None,
                }
            } else if n.inputs.is_empty() || matches!(n.op, Op::Param { .. }) {
                Class::Free
            } else {
                // A free value computed in the body: every part would write it.
                return None;
            }
        } else {
            if !row_major(&n.shape) {
                return None;
            }
            // Row-major inputs of the output's rank, so that their axis 0 is its axis 0.
            let aligned = |j: usize| ins[j] == Class::Free || g_rank(body, n.inputs[j]) == rank;
            let ok = match &n.op {
                Op::Unary(_) | Op::Cast | Op::Binary(_) | Op::Select | Op::Broadcast => {
                    (0..ins.len()).all(aligned)
                }
                Op::Reduce { axis, .. }
                | Op::Shift { axis, .. }
                | Op::Slice { axis, .. }
                | Op::Concat { axis } => *axis != 0 && (0..ins.len()).all(aligned),
                Op::Permute { perm } => perm.first() == Some(&0),
                // Both shapes row-major: each row's elements stay together.
                Op::Reshape => true,
                // Rows of A are rows of the product; a row-major B must be batched (its
                // axis 0 not one of the two multiplied).
                Op::MatMul { .. } => {
                    aligned(0) && (ins[1] == Class::Free || (rank >= 3 && aligned(1)))
                }
                // Rows of a free table picked by row-major ids (their axis 0 is the
                // output's).
                Op::Gather => ins[0] == Class::Free && ins[1] == Class::Rows,
                _ => false,
            };
            if !ok {
                return None;
            }
            Class::Rows
        };
        class[i] = Some(c);
    }
    body.outputs
        .iter()
        .all(|(_, o)| class[o.0 as usize] == Some(Class::Rows))
        .then_some(sym)
}

fn g_rank(g: &Graph, x: NodeId) -> usize {
    g.node(x).shape.len()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::graph::{DType, ReduceOp};

    /// A scan of `x` [b, t, 4] with state h [b, 4] whose body is `step(body, h, x, w)`
    /// (w [4, 4], a constant), returning (h', y) = what `step` gives twice.
    fn scan_of(step: impl Fn(&mut Graph, NodeId, NodeId, NodeId) -> NodeId) -> (Graph, NodeId) {
        let (b, t, d) = (Dim::sym("b"), Dim::sym("t"), Dim::c(4));
        let mut body = Graph::new("body");
        let h = body.input("h", vec![b.clone(), d.clone()], DType::F32);
        let x = body.input("x", vec![b.clone(), d.clone()], DType::F32);
        let w = body.input("w", vec![d.clone(), d.clone()], DType::F32);
        let y = step(&mut body, h, x, w);
        body.output("h", y);
        body.output("y", y);
        let mut g = Graph::new("g");
        let h0 = g.input("h0", vec![b.clone(), d.clone()], DType::F32);
        let xs = g.input("xs", vec![b, t, d.clone()], DType::F32);
        let w = g.param("w", vec![d.clone(), d]);
        let outs = g.scan(body, vec![h0], vec![xs], vec![w], false);
        assert!(g.error.is_none(), "{:?}", g.error);
        let scan = g.node(outs[0]).inputs[0];
        (g, scan)
    }

    #[test]
    fn rows_computed_from_their_own_row_run_apart() {
        // h' = h · w + x: each row from its own h and x and the shared w.
        let (g, s) = scan_of(|g, h, x, w| {
            let p = g.matmul(h, w, false);
            g.add(p, x)
        });
        assert_eq!(independent_rows(&g, s).as_deref(), Some("b"));
        // A sum over the rows mixes them.
        let (g, s) = scan_of(|g, h, x, _| {
            let total = g.reduce(ReduceOp::Sum, h, 0);
            g.add(total, x)
        });
        assert_eq!(independent_rows(&g, s), None);
        // A product whose B is the state: row r of the result reads every row of h.
        let (g, s) = scan_of(|g, h, x, _| {
            let p = g.matmul(x, h, true);
            g.add(p, x)
        });
        assert_eq!(independent_rows(&g, s), None);
        // A value computed from constants alone would be written by every part.
        let (g, s) = scan_of(|g, h, x, w| {
            let e = g.unary(crate::graph::UnaryOp::Exp, w);
            let p = g.matmul(h, e, false);
            g.add(p, x)
        });
        assert_eq!(independent_rows(&g, s), None);
    }
}

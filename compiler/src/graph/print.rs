//! Graph → text. One node per line, `%n = op inputs attrs : dtype[dims]`; scan bodies nest.
//! `read` parses exactly this form back.

use super::dim::shape_to_string;
use super::op::MaskKind;
use super::{Graph, Op};
use std::fmt::Write;

pub fn print(graph: &Graph) -> String {
    let mut out = String::new();
    print_graph(graph, 0, &mut out);
    out
}

fn print_graph(g: &Graph, depth: usize, out: &mut String) {
    let pad = "  ".repeat(depth);
    let _ = writeln!(out, "{pad}graph {} {{", g.name);
    let inputs: Vec<String> = g.inputs.iter().map(|i| format!("%{}", i.0)).collect();
    let _ = writeln!(out, "{pad}  inputs {}", inputs.join(", "));
    for (i, node) in g.nodes.iter().enumerate() {
        let args: Vec<String> = node.inputs.iter().map(|a| format!("%{}", a.0)).collect();
        let mut line = format!("{pad}  %{i} = {}", node.op.name());
        if !args.is_empty() {
            let _ = write!(line, " {}", args.join(", "));
        }
        let attrs = attributes(&node.op);
        if !attrs.is_empty() {
            let _ = write!(line, " {attrs}");
        }
        let _ = write!(
            line,
            " : {}{}",
            node.dtype.name(),
            shape_to_string(&node.shape)
        );
        if let Op::Scan { body, .. } = &node.op {
            let _ = writeln!(out, "{line} {{");
            print_graph(body, depth + 2, out);
            let _ = writeln!(out, "{pad}  }}");
        } else {
            let _ = writeln!(out, "{line}");
        }
    }
    for (name, id) in &g.outputs {
        let _ = writeln!(out, "{pad}  output {name} = %{}", id.0);
    }
    let _ = writeln!(out, "{pad}}}");
}

fn attributes(op: &Op) -> String {
    match op {
        Op::Input { name } | Op::Param { name } => format!("{name:?}"),
        Op::Const { value } => format!("value={value:?}"),
        Op::Iota { axis } | Op::Reduce { axis, .. } | Op::Concat { axis } => format!("axis={axis}"),
        Op::MatMul { transpose_b } => format!("transpose_b={transpose_b}"),
        Op::Permute { perm } => {
            let p: Vec<String> = perm.iter().map(|x| x.to_string()).collect();
            format!("perm=[{}]", p.join(","))
        }
        Op::Shift { axis, by } => format!("axis={axis} by={by}"),
        Op::Slice { axis, start, len } => format!("axis={axis} start={start} len={len}"),
        Op::Attention {
            mask,
            scale,
            has_bias,
            has_key_mask,
            ring,
        } => {
            let mask = match mask {
                MaskKind::Bidirectional => "bidirectional".to_string(),
                MaskKind::Causal => "causal".to_string(),
                MaskKind::Sliding(w) => format!("sliding({w})"),
            };
            let ring = ring
                .as_ref()
                .map(|r| format!(" ring={r}"))
                .unwrap_or_default();
            format!("mask={mask} scale={scale:?} bias={has_bias} key_mask={has_key_mask}{ring}")
        }
        Op::AttentionGrad {
            mask,
            scale,
            has_bias,
            has_key_mask,
            part,
        } => {
            let mask = match mask {
                MaskKind::Bidirectional => "bidirectional".to_string(),
                MaskKind::Causal => "causal".to_string(),
                MaskKind::Sliding(w) => format!("sliding({w})"),
            };
            format!(
                "part={} mask={mask} scale={scale:?} bias={has_bias} key_mask={has_key_mask}",
                part.name()
            )
        }
        Op::Scan {
            states,
            seqs,
            reverse,
            ..
        } => format!("states={states} seqs={seqs} reverse={reverse}"),
        Op::TupleGet { index } => format!("index={index}"),
        Op::ScatterAdd { rows } => format!("rows={rows}"),
        Op::Unary(_)
        | Op::Binary(_)
        | Op::Select
        | Op::Cast
        | Op::Reshape
        | Op::Broadcast
        | Op::Gather
        | Op::UpdateTail
        | Op::UpdateRing => String::new(),
    }
}

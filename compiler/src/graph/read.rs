//! Text → graph: reads what `print` writes (filetests feed IR in this form).

use super::dim::{parse_dim, Shape};
use super::op::{BINARY_OPS, UNARY_OPS};
use super::{AttnPart, DType, Graph, MaskKind, Node, NodeId, Op, ReduceOp};
use std::collections::HashMap;

/// Parses one printed graph.
pub fn read(text: &str) -> Result<Graph, String> {
    let lines: Vec<&str> = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect();
    let mut pos = 0;
    let g = read_graph(&lines, &mut pos)?;
    if pos != lines.len() {
        return Err(format!("line {}: text after the graph", pos + 1));
    }
    Ok(g)
}

fn read_graph(lines: &[&str], pos: &mut usize) -> Result<Graph, String> {
    let header = lines.get(*pos).ok_or("empty input")?;
    let name = header
        .strip_prefix("graph ")
        .and_then(|r| r.strip_suffix(" {"))
        .ok_or_else(|| format!("line {}: expected `graph NAME {{`", *pos + 1))?;
    let mut g = Graph::new(name);
    *pos += 1;
    while let Some(line) = lines.get(*pos) {
        let at = *pos + 1;
        *pos += 1;
        if *line == "}" {
            return Ok(g);
        }
        if let Some(rest) = line.strip_prefix("inputs") {
            g.inputs = rest
                .split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(node_ref)
                .collect::<Result<_, _>>()?;
        } else if let Some(rest) = line.strip_prefix("output ") {
            let (name, id) = rest
                .split_once(" = ")
                .ok_or_else(|| format!("line {at}: expected `output NAME = %n`"))?;
            g.outputs.push((name.to_string(), node_ref(id)?));
        } else {
            let node = read_node(line, lines, pos).map_err(|e| format!("line {at}: {e}"))?;
            g.nodes.push(node);
        }
    }
    Err("unterminated graph".into())
}

fn node_ref(s: &str) -> Result<NodeId, String> {
    s.trim()
        .strip_prefix('%')
        .and_then(|n| n.parse().ok())
        .map(NodeId)
        .ok_or_else(|| format!("expected `%n`, found `{s}`"))
}

fn read_node(line: &str, lines: &[&str], pos: &mut usize) -> Result<Node, String> {
    let (_, rest) = line.split_once(" = ").ok_or("expected `%n = op …`")?;
    let (head, ty) = rest
        .rsplit_once(" : ")
        .ok_or("expected ` : dtype[shape]`")?;
    let (ty, opens_body) = match ty.strip_suffix(" {") {
        Some(t) => (t, true),
        None => (ty, false),
    };
    let (dtype, shape) = read_type(ty)?;
    let (op_name, args) = head.split_once(' ').unwrap_or((head, ""));
    let mut inputs = Vec::new();
    let mut attrs: HashMap<&str, &str> = HashMap::new();
    let mut quoted = None;
    for tok in split_args(args) {
        if tok.starts_with('%') {
            inputs.push(node_ref(tok.trim_end_matches(','))?);
        } else if tok.starts_with('"') {
            quoted = Some(unquote(tok)?);
        } else if let Some((k, v)) = tok.split_once('=') {
            attrs.insert(k, v);
        } else {
            return Err(format!("unexpected `{tok}`"));
        }
    }
    let attr = |k: &str| {
        attrs
            .get(k)
            .copied()
            .ok_or_else(|| format!("`{op_name}` needs `{k}=`"))
    };
    let num =
        |k: &str| -> Result<u64, String> { attr(k)?.parse().map_err(|_| format!("bad `{k}`")) };
    let flag =
        |k: &str| -> Result<bool, String> { attr(k)?.parse().map_err(|_| format!("bad `{k}`")) };
    let op = match op_name {
        "input" => Op::Input {
            name: quoted.ok_or("input needs a name")?,
        },
        "param" => Op::Param {
            name: quoted.ok_or("param needs a name")?,
        },
        "const" => Op::Const {
            value: attr("value")?.parse().map_err(|_| "bad value")?,
        },
        "iota" => Op::Iota {
            axis: num("axis")? as usize,
        },
        "select" => Op::Select,
        "cast" => Op::Cast,
        "reduce_sum" | "reduce_max" | "reduce_mean" => {
            let op = match op_name {
                "reduce_sum" => ReduceOp::Sum,
                "reduce_max" => ReduceOp::Max,
                _ => ReduceOp::Mean,
            };
            Op::Reduce {
                op,
                axis: num("axis")? as usize,
            }
        }
        "matmul" => Op::MatMul {
            transpose_b: flag("transpose_b")?,
        },
        "reshape" => Op::Reshape,
        "permute" => {
            let list = attr("perm")?.trim_start_matches('[').trim_end_matches(']');
            let perm = list
                .split(',')
                .filter(|s| !s.is_empty())
                .map(|p| p.parse().map_err(|_| "bad perm"))
                .collect::<Result<_, _>>()?;
            Op::Permute { perm }
        }
        "broadcast" => Op::Broadcast,
        "shift" => Op::Shift {
            axis: num("axis")? as usize,
            by: attr("by")?.parse().map_err(|_| "bad by")?,
        },
        "slice" => Op::Slice {
            axis: num("axis")? as usize,
            start: num("start")?,
            len: num("len")?,
        },
        "concat" => Op::Concat {
            axis: num("axis")? as usize,
        },
        "gather" => Op::Gather,
        "scatter_add" => Op::ScatterAdd { rows: num("rows")? },
        "update_tail" => Op::UpdateTail,
        "update_ring" => Op::UpdateRing,
        "attention" => Op::Attention {
            mask: read_mask(attr("mask")?)?,
            scale: attr("scale")?.parse().map_err(|_| "bad scale")?,
            has_bias: flag("bias")?,
            has_key_mask: flag("key_mask")?,
            ring: attrs.get("ring").map(|r| parse_dim(r)).transpose()?,
        },
        "attention_grad" => Op::AttentionGrad {
            mask: read_mask(attr("mask")?)?,
            scale: attr("scale")?.parse().map_err(|_| "bad scale")?,
            has_bias: flag("bias")?,
            has_key_mask: flag("key_mask")?,
            part: match attr("part")? {
                "lse" => AttnPart::Lse,
                "q" => AttnPart::Q,
                "k" => AttnPart::K,
                "v" => AttnPart::V,
                p => return Err(format!("unknown attention_grad part `{p}`")),
            },
        },
        "scan" => {
            if !opens_body {
                return Err("scan needs a body".into());
            }
            let body = read_graph(lines, pos)?;
            if lines.get(*pos) != Some(&"}") {
                return Err("scan body must be closed by `}`".into());
            }
            *pos += 1;
            Op::Scan {
                body: Box::new(body),
                states: num("states")? as usize,
                seqs: num("seqs")? as usize,
                reverse: flag("reverse")?,
            }
        }
        "get" => Op::TupleGet {
            index: num("index")? as usize,
        },
        other => {
            if let Some((u, _)) = UNARY_OPS.iter().find(|(_, n)| *n == other) {
                Op::Unary(*u)
            } else if let Some((b, _)) = BINARY_OPS.iter().find(|(_, n)| *n == other) {
                Op::Binary(*b)
            } else {
                return Err(format!("unknown op `{other}`"));
            }
        }
    };
    Ok(Node {
        op,
        inputs,
        shape,
        dtype,
    })
}

fn split_args(args: &str) -> Vec<&str> {
    let mut out = Vec::new();
    let mut start = None;
    let mut in_str = false;
    for (i, c) in args.char_indices() {
        match c {
            '"' => {
                in_str = !in_str;
                start.get_or_insert(i);
            }
            ' ' if !in_str => {
                if let Some(s) = start.take() {
                    out.push(args[s..i].trim_end_matches(','));
                }
            }
            _ => {
                start.get_or_insert(i);
            }
        }
    }
    if let Some(s) = start {
        out.push(args[s..].trim_end_matches(','));
    }
    out
}

fn unquote(tok: &str) -> Result<String, String> {
    let inner = tok
        .strip_prefix('"')
        .and_then(|t| t.strip_suffix('"'))
        .ok_or("bad string")?;
    Ok(inner.replace("\\\"", "\"").replace("\\\\", "\\"))
}

fn read_mask(s: &str) -> Result<MaskKind, String> {
    match s {
        "bidirectional" => Ok(MaskKind::Bidirectional),
        "causal" => Ok(MaskKind::Causal),
        _ => s
            .strip_prefix("sliding(")
            .and_then(|r| r.strip_suffix(')'))
            .and_then(|w| w.parse().ok())
            .map(MaskKind::Sliding)
            .ok_or_else(|| format!("bad mask `{s}`")),
    }
}

fn read_type(ty: &str) -> Result<(DType, Shape), String> {
    let (dt, dims) = ty.split_once('[').ok_or("expected dtype[dims]")?;
    let dtype = match dt {
        "f32" => DType::F32,
        "i64" => DType::I64,
        _ => return Err(format!("unknown dtype `{dt}`")),
    };
    let dims = dims.strip_suffix(']').ok_or("expected `]`")?;
    let shape = dims
        .split(',')
        .map(str::trim)
        .filter(|d| !d.is_empty())
        .map(parse_dim)
        .collect::<Result<_, _>>()?;
    Ok((dtype, shape))
}

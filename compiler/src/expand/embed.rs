//! Token ids → the input of a stack: token (and segment) embeddings, learned or sinusoidal
//! positions, the embedding norm and the factorized projection, in Hugging Face's order
//! (BERT: sum → norm → [ALBERT/ELECTRA: project]; BART: scaled tokens + positions → norm).

use super::Cx;
use crate::graph::{BinaryOp, DType, Dim, NodeId, UnaryOp};
use arch_dsl::spec::Position;

pub fn embed(
    cx: &mut Cx,
    stack: &str,
    ids: NodeId,
    types: Option<NodeId>,
    seq: &str,
) -> Result<NodeId, String> {
    let spec = cx.spec;
    let table = cx.param("embed.tokens.weight");
    let mut x = cx.g.gather(table, ids);
    if spec.embed.scale != 1.0 {
        x = cx.g.scale(x, spec.embed.scale);
    }
    if let Some(types) = types {
        let seg = cx.param("embed.segments.weight");
        let s = cx.g.gather(seg, types);
        x = cx.g.add(x, s);
    }
    let width = spec.embed_width();
    match spec.position {
        Position::Learned { offset } => {
            let t = match &cx.step {
                Some(s) => s.positions,
                None => cx.g.iota(vec![Dim::sym(seq)], 0),
            };
            let t = cx.g.scale_add(t, 1.0, offset as f64);
            let ids = cx.g.cast(t, DType::I64);
            let table = cx.param(&format!("{stack}.positions.weight"));
            let p = cx.g.gather(table, ids);
            x = cx.g.add(x, p);
        }
        Position::Sinusoidal if cx.step.is_some() => {
            return Err("sinusoidal positions in a step graph are not built yet".into())
        }
        Position::Sinusoidal => {
            let p = sinusoidal(cx, seq, width);
            x = cx.g.add(x, p);
        }
        Position::Rope(_) | Position::RelativeBias { .. } | Position::Alibi | Position::None => {}
    }
    if spec.embed.norm {
        x = cx.norm(x, &format!("{stack}.embed_norm"));
    }
    if cx.has_param("embed.project.weight") {
        x = cx.linear(x, "embed.project");
    }
    Ok(x)
}

/// Vaswani et al.'s table: even features sin(t / 10000^(2i/E)), odd features the cosine.
fn sinusoidal(cx: &mut Cx, seq: &str, width: u64) -> NodeId {
    let shape = vec![Dim::sym(seq), Dim::c(width)];
    let t = cx.g.iota(shape.clone(), 0);
    let f = cx.g.iota(shape, 1);
    let half = cx.g.scale(f, 0.5);
    let pair = cx.g.unary(UnaryOp::Floor, half);
    let exponent = cx.g.scale(pair, -2.0 / width as f64);
    let base = cx.g.constant(10000.0);
    let inv = cx.g.binary(BinaryOp::Pow, base, exponent);
    let angle = cx.g.mul(t, inv);
    let sin = cx.g.unary(UnaryOp::Sin, angle);
    let cos = cx.g.unary(UnaryOp::Cos, angle);
    let twice = cx.g.scale(pair, 2.0);
    let parity = cx.g.sub(f, twice);
    cx.g.select(parity, cos, sin)
}

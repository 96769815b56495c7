//! Position information shared by a stack's layers: RoPE tables (half or interleaved,
//! partial), T5's bucketed relative bias (bidirectional in the encoder, causal buckets in
//! the decoder), and ALiBi slopes.

use super::Cx;
use crate::graph::{BinaryOp, DType, Dim, NodeId, ReduceOp, UnaryOp};
use arch_dsl::spec::{Position, Rope, RopeScaling, RopeStyle, Stack, Sublayer};

/// Computed once per stack, used by every attention (and TTT) sublayer of it. A
/// heterogeneous stack gets one RoPE table per distinct head width and one ALiBi bias per
/// distinct head count.
pub struct StackPositions {
    /// The model's RoPE settings, when it uses RoPE.
    pub rope: Option<Rope>,
    /// (head_dim, (cos, sin, rope)): cos and sin of t·θ_i, shape [seq, rotated / 2].
    rope_tables: Vec<(u64, (NodeId, NodeId, Rope))>,
    /// (heads, additive attention bias [1, heads, seq, seq]).
    biases: Vec<(u64, NodeId)>,
}

impl StackPositions {
    pub fn new(
        cx: &mut Cx,
        stack_name: &str,
        stack: &Stack,
        seq: &str,
    ) -> Result<StackPositions, String> {
        let mut shapes: Vec<(u64, u64)> = Vec::new();
        for sub in stack.layers.iter().flat_map(|l| &l.sublayers) {
            let shape = match sub {
                Sublayer::Attention(a) => (a.heads, a.head_dim),
                _ => continue,
            };
            if !shapes.contains(&shape) {
                shapes.push(shape);
            }
        }
        let mut out = StackPositions {
            rope: None,
            rope_tables: Vec::new(),
            biases: Vec::new(),
        };
        match cx.spec.position {
            Position::Rope(rope) => {
                out.rope = Some(rope);
                for &(_, hd) in &shapes {
                    if !out.rope_tables.iter().any(|(d, _)| *d == hd) {
                        let tables = match cx.step.as_ref().map(|s| s.positions) {
                            Some(pos) => rope_tables_at(cx, pos, hd, rope),
                            None => rope_tables(cx, Dim::sym(seq), hd, rope),
                        };
                        out.rope_tables.push((hd, tables));
                    }
                }
            }
            Position::RelativeBias {
                buckets,
                max_distance,
            } => {
                // One table per stack (T5): its width is the heads of the first attention.
                if let Some(&(heads, _)) = shapes.first() {
                    if shapes.iter().any(|(h, _)| *h != heads) {
                        return Err(format!("{stack_name}: relative_bias needs every attention of a stack to have the same number of heads"));
                    }
                    let bidirectional = stack_name == "encoder";
                    let keys = if cx.step.is_some() {
                        super::KV_SEQ
                    } else {
                        seq
                    };
                    let bias = relative_bias(
                        cx,
                        stack_name,
                        (seq, keys),
                        heads,
                        buckets,
                        max_distance,
                        bidirectional,
                    );
                    out.biases.push((heads, bias));
                }
            }
            Position::Alibi => {
                for &(heads, _) in &shapes {
                    if !out.biases.iter().any(|(h, _)| *h == heads) {
                        let keys = if cx.step.is_some() {
                            super::KV_SEQ
                        } else {
                            seq
                        };
                        let bias = alibi(cx, seq, keys, heads);
                        out.biases.push((heads, bias));
                    }
                }
            }
            _ => {}
        }
        Ok(out)
    }

    /// The RoPE tables for heads of this width.
    pub fn rope_for(&self, head_dim: u64) -> Option<&(NodeId, NodeId, Rope)> {
        self.rope_tables
            .iter()
            .find(|(d, _)| *d == head_dim)
            .map(|(_, t)| t)
    }

    /// The additive bias for an attention of this many heads.
    pub fn bias_for(&self, heads: u64) -> Option<NodeId> {
        self.biases
            .iter()
            .find(|(h, _)| *h == heads)
            .map(|(_, b)| *b)
    }
}

/// The rotated width of a head.
pub fn rotated(head_dim: u64, rope: Rope) -> u64 {
    (head_dim as f64 * rope.fraction).round() as u64
}

/// The rotation frequencies θ^(−2i/rot) for the pair indices `i` (any shape), scaled as
/// `rope.scaling` says (Hugging Face's `_compute_linear_scaling_rope_parameters` and
/// `_compute_llama3_parameters`).
///
/// Llama 3's rule in one expression: with s = (original_context / wavelength − low) /
/// (high − low) (wavelength = 2π / f), a frequency becomes f · ((1 − c) / factor + c) where
/// c = clamp(s, 0, 1): s ≤ 0 (wavelength ≥ original_context / low) gives f / factor,
/// s ≥ 1 (wavelength ≤ original_context / high) keeps f, and between them is Hugging Face's
/// smooth interpolation `(1 − s) · f / factor + s · f`.
fn inv_freq(cx: &mut Cx, i: NodeId, rot: u64, rope: Rope) -> NodeId {
    let exponent = cx.g.scale(i, -2.0 / rot as f64);
    let theta = cx.g.constant(rope.theta);
    let f = cx.g.binary(BinaryOp::Pow, theta, exponent);
    match rope.scaling {
        RopeScaling::None => f,
        RopeScaling::Linear { factor } => cx.g.scale(f, 1.0 / factor),
        RopeScaling::Llama3 {
            factor,
            low_freq_factor: low,
            high_freq_factor: high,
            original_context,
        } => {
            // original_context / wavelength = original_context · f / 2π.
            let per_f = original_context as f64 / (2.0 * std::f64::consts::PI) / (high - low);
            let s = cx.g.scale(f, per_f);
            let offset = cx.g.constant(-low / (high - low));
            let s = cx.g.add(s, offset);
            let (zero, one) = (cx.g.constant(0.0), cx.g.constant(1.0));
            let c = cx.g.binary(BinaryOp::Max, s, zero);
            let c = cx.g.binary(BinaryOp::Min, c, one);
            // (1 − c) / factor + c = 1 / factor + c · (1 − 1 / factor).
            let c = cx.g.scale(c, 1.0 - 1.0 / factor);
            let base = cx.g.constant(1.0 / factor);
            let mult = cx.g.add(c, base);
            cx.g.mul(f, mult)
        }
    }
}

/// [`inv_freq`]'s scaling as numbers: per rotated pair i the divisor d_i of its frequency
/// θ^(−2i/rot) (what llama.cpp stores as `rope_freqs.weight`), the inverse of the factor
/// the graph multiplies by.
pub fn rope_divisors(scaling: &RopeScaling, theta: f64, rot: u64) -> Vec<f64> {
    (0..rot / 2)
        .map(|i| {
            let f = theta.powf(-2.0 * i as f64 / rot as f64);
            match *scaling {
                RopeScaling::None => 1.0,
                RopeScaling::Linear { factor } => factor,
                RopeScaling::Llama3 {
                    factor,
                    low_freq_factor: low,
                    high_freq_factor: high,
                    original_context,
                } => {
                    let s = (original_context as f64 * f / (2.0 * std::f64::consts::PI) - low)
                        / (high - low);
                    let c = s.clamp(0.0, 1.0);
                    1.0 / ((1.0 - c) / factor + c)
                }
            }
        })
        .collect()
}

/// cos and sin of t·θ_i for positions t in `0..positions`, shape [positions, rotated / 2].
pub fn rope_tables(
    cx: &mut Cx,
    positions: Dim,
    head_dim: u64,
    rope: Rope,
) -> (NodeId, NodeId, Rope) {
    let rot = rotated(head_dim, rope);
    let shape = vec![positions, Dim::c(rot / 2)];
    let t = cx.g.iota(shape.clone(), 0);
    let i = cx.g.iota(shape, 1);
    let inv_freq = inv_freq(cx, i, rot, rope);
    let angle = cx.g.mul(t, inv_freq);
    (
        cx.g.unary(UnaryOp::Cos, angle),
        cx.g.unary(UnaryOp::Sin, angle),
        rope,
    )
}

/// cos and sin of p·θ_i for given positions `pos` (f32 [B, T]): [B, T, rotated / 2].
/// Step graphs use these: each row counts its positions over its real tokens.
pub fn rope_tables_at(
    cx: &mut Cx,
    pos: NodeId,
    head_dim: u64,
    rope: Rope,
) -> (NodeId, NodeId, Rope) {
    let rot = rotated(head_dim, rope);
    let s = cx.g.shape(pos).clone();
    let shape = vec![s[0].clone(), s[1].clone(), Dim::c(rot / 2)];
    let t =
        cx.g.reshape(pos, vec![s[0].clone(), s[1].clone(), Dim::c(1)]);
    let i = cx.g.iota(vec![Dim::c(rot / 2)], 0);
    let inv_freq = inv_freq(cx, i, rot, rope);
    let angle = cx.g.mul(t, inv_freq);
    debug_assert_eq!(cx.g.shape(angle), &shape);
    (
        cx.g.unary(UnaryOp::Cos, angle),
        cx.g.unary(UnaryOp::Sin, angle),
        rope,
    )
}

/// Applies RoPE to x [B, T, H, hd] (positions before heads, as projections come out):
/// the tables ([T, r] or, with given positions, [B, T, r]) get a unit heads axis before
/// their last to broadcast over the heads. Fusion then folds the rotation into the q/k
/// projection's epilogue.
pub fn apply_rope_seq_major(cx: &mut Cx, x: NodeId, tables: &(NodeId, NodeId, Rope)) -> NodeId {
    let (cos, sin, rope) = *tables;
    let per_head = |cx: &mut Cx, t: NodeId| {
        let mut s = cx.g.shape(t).clone();
        let last = s.len() - 1;
        s.insert(last, Dim::c(1));
        cx.g.reshape(t, s)
    };
    let (cos, sin) = (per_head(cx, cos), per_head(cx, sin));
    apply_rope(cx, x, &(cos, sin, rope))
}

/// Applies RoPE to x [B, H, T, hd] (or any rank-4 x whose tables broadcast to it, with the
/// head dimension last).
pub fn apply_rope(cx: &mut Cx, x: NodeId, tables: &(NodeId, NodeId, Rope)) -> NodeId {
    let (cos, sin, rope) = *tables;
    let shape = cx.g.shape(x).clone();
    let hd = shape[3].as_const().unwrap_or(0);
    let rot = rotated(hd, rope);
    let half = rot / 2;
    let xr = if rot == hd {
        x
    } else {
        cx.g.slice(x, 3, 0, rot)
    };
    let rotated = match rope.style {
        RopeStyle::Half => {
            let x1 = cx.g.slice(xr, 3, 0, half);
            let x2 = cx.g.slice(xr, 3, half, half);
            let (a, b) = rotate(cx, x1, x2, cos, sin);
            cx.g.concat(vec![a, b], 3)
        }
        RopeStyle::Interleaved => {
            let mut pairs = shape.clone();
            pairs[3] = Dim::c(half);
            pairs.push(Dim::c(2));
            let p = cx.g.reshape(xr, pairs.clone());
            let x1 = cx.g.slice(p, 4, 0, 1);
            let x2 = cx.g.slice(p, 4, 1, 1);
            let mut pair_shape = shape.clone();
            pair_shape[3] = Dim::c(half);
            let x1 = cx.g.reshape(x1, pair_shape.clone());
            let x2 = cx.g.reshape(x2, pair_shape.clone());
            let (a, b) = rotate(cx, x1, x2, cos, sin);
            pair_shape.push(Dim::c(1));
            let a = cx.g.reshape(a, pair_shape.clone());
            let b = cx.g.reshape(b, pair_shape);
            let joined = cx.g.concat(vec![a, b], 4);
            let mut back = shape.clone();
            back[3] = Dim::c(rot);
            cx.g.reshape(joined, back)
        }
    };
    if rot == hd {
        rotated
    } else {
        let pass = cx.g.slice(x, 3, rot, hd.saturating_sub(rot));
        cx.g.concat(vec![rotated, pass], 3)
    }
}

/// (x1 cos − x2 sin, x2 cos + x1 sin)
fn rotate(cx: &mut Cx, x1: NodeId, x2: NodeId, cos: NodeId, sin: NodeId) -> (NodeId, NodeId) {
    let a1 = cx.g.mul(x1, cos);
    let a2 = cx.g.mul(x2, sin);
    let b1 = cx.g.mul(x2, cos);
    let b2 = cx.g.mul(x1, sin);
    (cx.g.sub(a1, a2), cx.g.add(b1, b2))
}

/// The queries' absolute positions as f32 [T, S] (axis 0), when the T queries are the
/// last of the S keys (a step graph's keys include the cached ones): i + (S − T).
/// The number of queries: `seq`, or a step graph's (1 where it takes one token per call).
fn queries(cx: &Cx, seq: &str) -> Dim {
    cx.step
        .as_ref()
        .map_or_else(|| Dim::sym(seq), |s| s.queries.clone())
}

fn query_positions(cx: &mut Cx, seq: &str, keys: &str, shape: Vec<Dim>, axis: usize) -> NodeId {
    let q = cx.g.iota(shape, axis);
    if keys == seq {
        return q;
    }
    // S − T as (max key index) − (max query index).
    let kt = cx.g.iota(vec![Dim::sym(keys)], 0);
    let kmax = cx.g.reduce(ReduceOp::Max, kt, 0);
    let qt = cx.g.iota(vec![queries(cx, seq)], 0);
    let qmax = cx.g.reduce(ReduceOp::Max, qt, 0);
    let past = cx.g.sub(kmax, qmax);
    cx.g.add(q, past)
}

/// T5's `_relative_position_bucket` and bias lookup → [1, heads, T, S] for T queries that
/// are the last of S keys (S = T outside step graphs).
fn relative_bias(
    cx: &mut Cx,
    stack: &str,
    (seq, keys): (&str, &str),
    heads: u64,
    buckets: u64,
    max_distance: u64,
    bidirectional: bool,
) -> NodeId {
    let shape = vec![queries(cx, seq), Dim::sym(keys)];
    let query = query_positions(cx, seq, keys, shape.clone(), 0);
    let key = cx.g.iota(shape, 1);
    let rel = cx.g.sub(key, query);
    let zero = cx.g.constant(0.0);
    let (nb, base, n) = if bidirectional {
        let nb = buckets / 2;
        let positive = cx.g.binary(BinaryOp::Lt, zero, rel);
        let base = cx.g.scale(positive, nb as f64);
        (nb, Some(base), cx.g.unary(UnaryOp::Abs, rel))
    } else {
        let neg = cx.g.unary(UnaryOp::Neg, rel);
        (buckets, None, cx.g.binary(BinaryOp::Max, neg, zero))
    };
    let max_exact = (nb / 2) as f64;
    let exact = cx.g.constant(max_exact);
    let small = cx.g.binary(BinaryOp::Lt, n, exact);
    let ratio = cx.g.div(n, exact);
    let log = cx.g.unary(UnaryOp::Log, ratio);
    let scaled =
        cx.g.scale(log, 1.0 / (max_distance as f64 / max_exact).ln());
    let scaled = cx.g.scale(scaled, nb as f64 - max_exact);
    let floor = cx.g.unary(UnaryOp::Floor, scaled);
    let large = cx.g.scale_add(floor, 1.0, max_exact);
    let cap = cx.g.constant(nb as f64 - 1.0);
    let large = cx.g.binary(BinaryOp::Min, large, cap);
    let mut bucket = cx.g.select(small, n, large);
    if let Some(base) = base {
        bucket = cx.g.add(bucket, base);
    }
    let ids = cx.g.cast(bucket, DType::I64);
    let table = cx.param(&format!("{stack}.relative_bias.weight"));
    let values = cx.g.gather(table, ids);
    let by_head = cx.g.permute(values, &[2, 0, 1]);
    cx.g.reshape(
        by_head,
        vec![Dim::c(1), Dim::c(heads), queries(cx, seq), Dim::sym(keys)],
    )
}

/// ALiBi (Press et al. 2022; BLOOM's `build_alibi_tensor`): head h adds slope_h · (key −
/// query). With P the largest power of two ≤ H, heads h < P get 2^(−8(h+1)/P) and the
/// remaining heads take every other slope of 2P heads: 2^(−4(2(h − P) + 1)/P).
///
/// Queries are the last `seq` of the `keys` positions (a step graph's keys include the
/// cached ones), so query i sits at `keys − seq + i`.
fn alibi(cx: &mut Cx, seq: &str, keys: &str, heads: u64) -> NodeId {
    let shape = vec![Dim::c(1), Dim::c(heads), queries(cx, seq), Dim::sym(keys)];
    let p = 1u64 << (63 - heads.max(1).leading_zeros());
    let h = cx.g.iota(shape.clone(), 1);
    let two = cx.g.constant(2.0);
    let base_exp = cx.g.scale_add(h, -8.0 / p as f64, -8.0 / p as f64);
    let mut slope = cx.g.binary(BinaryOp::Pow, two, base_exp);
    if p < heads {
        // −4(2(h − P) + 1)/P = −8h/P + (8P − 4)/P
        let extra_exp =
            cx.g.scale_add(h, -8.0 / p as f64, (8.0 * p as f64 - 4.0) / p as f64);
        let extra = cx.g.binary(BinaryOp::Pow, two, extra_exp);
        let limit = cx.g.constant(p as f64);
        let first = cx.g.binary(BinaryOp::Lt, h, limit);
        slope = cx.g.select(first, slope, extra);
    }
    let q = query_positions(cx, seq, keys, shape.clone(), 2);
    let k = cx.g.iota(shape, 3);
    let rel = cx.g.sub(k, q);
    cx.g.mul(slope, rel)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::interp::{run, Value};
    use crate::tensor::Tensor;
    use std::collections::HashMap;

    /// BLOOM's `get_slopes` for 6 and 12 heads (computed with its Python code).
    #[test]
    fn alibi_slopes_follow_bloom_for_any_head_count() {
        let expected: [(u64, &[f64]); 2] = [
            (6, &[0.25, 0.0625, 0.015625, 0.00390625, 0.5, 0.125]),
            (
                12,
                &[
                    0.5,
                    0.25,
                    0.125,
                    0.0625,
                    0.03125,
                    0.015625,
                    0.0078125,
                    0.00390625,
                    std::f64::consts::FRAC_1_SQRT_2,
                    0.35355339,
                    0.1767767,
                    0.08838835,
                ],
            ),
        ];
        for (heads, slopes) in expected {
            let src = format!("model m {{ vocab = 8  d_model = {}  context = 4  position = alibi  decoder {{ layers = 1  attention {{ heads = {heads} }} }} }}", heads * 2);
            let prog = arch_dsl::elab::Program::from_source("t.arch", src, None);
            let spec = prog.elaborate("m").0.expect("valid spec");
            let mut cx = Cx::new(&spec, "alibi");
            let x = cx.g.input("x", vec![Dim::sym("seq")], DType::F32);
            let bias = alibi(&mut cx, "seq", "seq", heads);
            cx.g.output("bias", bias);
            cx.g.output("x", x);
            let g = cx.finish().unwrap();
            let inputs = HashMap::from([(
                "x".to_string(),
                Value::F(Tensor {
                    shape: vec![2],
                    data: vec![0.0; 2],
                }),
            )]);
            let out = run(&g, &inputs, &HashMap::new()).unwrap();
            let b = out[0].1.as_f32().unwrap();
            // bias[0, h, 0, 1] = slope_h · (1 − 0)
            for (h, want) in slopes.iter().enumerate() {
                let got = b.data[h * 4 + 1] as f64;
                assert!(
                    (got - want).abs() < 1e-6,
                    "{heads} heads, head {h}: {got} vs {want}"
                );
            }
        }
    }
}

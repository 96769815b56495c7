//! Reference semantics of the primitive ops on host tensors (one function per op).

use super::Value;
use crate::graph::{BinaryOp, DType, ReduceOp, UnaryOp};
use crate::tensor::{numel, strides, F32Tensor, I64Tensor, Tensor};

pub fn iota(shape: &[usize], axis: usize) -> F32Tensor {
    let st = strides(shape);
    let size = shape.get(axis).copied().unwrap_or(1);
    let stride = st.get(axis).copied().unwrap_or(1);
    let data = (0..numel(shape))
        .map(|i| ((i / stride) % size.max(1)) as f32)
        .collect();
    Tensor {
        shape: shape.to_vec(),
        data,
    }
}

fn erf(x: f64) -> f64 {
    libm::erf(x)
}

pub fn unary_scalar(op: UnaryOp, x: f64) -> f64 {
    match op {
        UnaryOp::Neg => -x,
        UnaryOp::Exp => x.exp(),
        UnaryOp::Log => x.ln(),
        UnaryOp::Sqrt => x.sqrt(),
        UnaryOp::Rsqrt => 1.0 / x.sqrt(),
        UnaryOp::Tanh => x.tanh(),
        UnaryOp::Erf => erf(x),
        UnaryOp::Sigmoid => 1.0 / (1.0 + (-x).exp()),
        UnaryOp::Relu => x.max(0.0),
        UnaryOp::Silu => x / (1.0 + (-x).exp()),
        UnaryOp::Gelu => 0.5 * x * (1.0 + erf(x / std::f64::consts::SQRT_2)),
        UnaryOp::GeluTanh => {
            let c = (2.0 / std::f64::consts::PI).sqrt();
            0.5 * x * (1.0 + (c * (x + 0.044715 * x * x * x)).tanh())
        }
        // log(1 + e^x), computed without overflow; PyTorch switches to x above 20.
        UnaryOp::Softplus => {
            if x > 20.0 {
                x
            } else {
                x.exp().ln_1p()
            }
        }
        UnaryOp::Abs => x.abs(),
        UnaryOp::Square => x * x,
        UnaryOp::Recip => 1.0 / x,
        UnaryOp::Sin => x.sin(),
        UnaryOp::Cos => x.cos(),
        UnaryOp::Floor => x.floor(),
        UnaryOp::StopGradient => x,
    }
}

pub fn unary(op: UnaryOp, x: &F32Tensor) -> F32Tensor {
    Tensor {
        shape: x.shape.clone(),
        data: x
            .data
            .iter()
            .map(|&v| unary_scalar(op, v as f64) as f32)
            .collect(),
    }
}

pub fn binary_scalar(op: BinaryOp, a: f64, b: f64) -> f64 {
    let flag = |c: bool| if c { 1.0 } else { 0.0 };
    match op {
        BinaryOp::Add => a + b,
        BinaryOp::Sub => a - b,
        BinaryOp::Mul => a * b,
        BinaryOp::Div => a / b,
        BinaryOp::Max => a.max(b),
        BinaryOp::Min => a.min(b),
        BinaryOp::Pow => a.powf(b),
        BinaryOp::Lt => flag(a < b),
        BinaryOp::Le => flag(a <= b),
        BinaryOp::Eq => flag(a == b),
    }
}

/// The broadcast shape of several shapes (numpy rules).
pub fn broadcast_shape(shapes: &[&[usize]]) -> Result<Vec<usize>, String> {
    let rank = shapes.iter().map(|s| s.len()).max().unwrap_or(0);
    let mut out = vec![1; rank];
    for s in shapes {
        for (i, &d) in s.iter().enumerate() {
            let o = &mut out[rank - s.len() + i];
            if *o == 1 {
                *o = d;
            } else if d != 1 && d != *o {
                return Err(format!("cannot broadcast shapes {shapes:?}"));
            }
        }
    }
    Ok(out)
}

/// For each output element, the index into each input (broadcast dims repeat).
fn broadcast_indices(out: &[usize], input: &[usize]) -> Vec<usize> {
    let rank = out.len();
    let in_strides = strides(input);
    let mut eff = vec![0; rank];
    for i in 0..input.len() {
        let o = rank - input.len() + i;
        eff[o] = if input[i] == 1 { 0 } else { in_strides[i] };
    }
    let n = numel(out);
    let mut idx = vec![0usize; rank];
    let mut result = Vec::with_capacity(n);
    let mut offset = 0usize;
    for _ in 0..n {
        result.push(offset);
        for ax in (0..rank).rev() {
            idx[ax] += 1;
            offset += eff[ax];
            if idx[ax] < out[ax] {
                break;
            }
            offset -= eff[ax] * idx[ax];
            idx[ax] = 0;
        }
    }
    result
}

pub fn binary(op: BinaryOp, a: &F32Tensor, b: &F32Tensor) -> Result<F32Tensor, String> {
    let shape = broadcast_shape(&[&a.shape, &b.shape])?;
    let (ia, ib) = (
        broadcast_indices(&shape, &a.shape),
        broadcast_indices(&shape, &b.shape),
    );
    let data = ia
        .iter()
        .zip(&ib)
        .map(|(&i, &j)| binary_scalar(op, a.data[i] as f64, b.data[j] as f64) as f32)
        .collect();
    Ok(Tensor { shape, data })
}

pub fn select(c: &F32Tensor, a: &F32Tensor, b: &F32Tensor) -> Result<F32Tensor, String> {
    let shape = broadcast_shape(&[&c.shape, &a.shape, &b.shape])?;
    let (ic, ia, ib) = (
        broadcast_indices(&shape, &c.shape),
        broadcast_indices(&shape, &a.shape),
        broadcast_indices(&shape, &b.shape),
    );
    let data = (0..ic.len())
        .map(|k| {
            if c.data[ic[k]] != 0.0 {
                a.data[ia[k]]
            } else {
                b.data[ib[k]]
            }
        })
        .collect();
    Ok(Tensor { shape, data })
}

pub fn broadcast_to(x: &F32Tensor, shape: &[usize]) -> Result<F32Tensor, String> {
    if broadcast_shape(&[&x.shape, shape])? != shape {
        return Err(format!("cannot broadcast {:?} to {shape:?}", x.shape));
    }
    let idx = broadcast_indices(shape, &x.shape);
    Ok(Tensor {
        shape: shape.to_vec(),
        data: idx.iter().map(|&i| x.data[i]).collect(),
    })
}

pub fn cast(x: &Value, to: DType) -> Value {
    match (x, to) {
        (Value::F(t), DType::I64) => Value::I(Tensor {
            shape: t.shape.clone(),
            data: t.data.iter().map(|&v| v as i64).collect(),
        }),
        (Value::I(t), DType::F32) => Value::F(Tensor {
            shape: t.shape.clone(),
            data: t.data.iter().map(|&v| v as f32).collect(),
        }),
        (v, _) => v.clone(),
    }
}

/// Splits a shape around an axis: (outer, size, inner).
fn around(shape: &[usize], axis: usize) -> (usize, usize, usize) {
    (
        numel(&shape[..axis]),
        shape[axis],
        numel(&shape[axis + 1..]),
    )
}

pub fn reduce(op: ReduceOp, x: &F32Tensor, axis: usize) -> Result<F32Tensor, String> {
    if axis >= x.rank() {
        return Err(format!("reduce axis {axis} of rank {}", x.rank()));
    }
    let (outer, n, inner) = around(&x.shape, axis);
    let mut data = Vec::with_capacity(outer * inner);
    for o in 0..outer {
        for i in 0..inner {
            let vals = (0..n).map(|k| x.data[(o * n + k) * inner + i] as f64);
            let v = match op {
                ReduceOp::Sum => vals.sum::<f64>(),
                ReduceOp::Mean => vals.sum::<f64>() / n as f64,
                ReduceOp::Max => vals.fold(f64::NEG_INFINITY, f64::max),
            };
            data.push(v as f32);
        }
    }
    let mut shape = x.shape.clone();
    shape[axis] = 1;
    Ok(Tensor { shape, data })
}

pub fn matmul(a: &F32Tensor, b: &F32Tensor, transpose_b: bool) -> Result<F32Tensor, String> {
    if a.rank() < 2 || b.rank() < 2 {
        return Err("matmul needs rank ≥ 2".into());
    }
    let (m, k) = (a.shape[a.rank() - 2], a.shape[a.rank() - 1]);
    let (kb, n) = if transpose_b {
        (b.shape[b.rank() - 1], b.shape[b.rank() - 2])
    } else {
        (b.shape[b.rank() - 2], b.shape[b.rank() - 1])
    };
    if k != kb {
        return Err(format!(
            "matmul {:?} × {:?}: inner sizes differ",
            a.shape, b.shape
        ));
    }
    let batch = broadcast_shape(&[&a.shape[..a.rank() - 2], &b.shape[..b.rank() - 2]])?;
    let (ia, ib) = (
        broadcast_indices(&batch, &a.shape[..a.rank() - 2]),
        broadcast_indices(&batch, &b.shape[..b.rank() - 2]),
    );
    let mut data = vec![0f32; ia.len() * m * n];
    for (bi, (&pa, &pb)) in ia.iter().zip(&ib).enumerate() {
        let (ao, bo, oo) = (pa * m * k, pb * k * n, bi * m * n);
        for r in 0..m {
            for c in 0..n {
                let mut acc = 0f64;
                for x in 0..k {
                    let bv = if transpose_b {
                        b.data[bo + c * k + x]
                    } else {
                        b.data[bo + x * n + c]
                    };
                    acc += a.data[ao + r * k + x] as f64 * bv as f64;
                }
                data[oo + r * n + c] = acc as f32;
            }
        }
    }
    let mut shape = batch;
    shape.extend([m, n]);
    Ok(Tensor { shape, data })
}

pub fn reshape(x: &Value, shape: Vec<usize>) -> Result<Value, String> {
    if numel(&shape) != numel(x.shape()) {
        return Err(format!("cannot reshape {:?} to {shape:?}", x.shape()));
    }
    Ok(match x {
        Value::F(t) => Value::F(Tensor {
            shape,
            data: t.data.clone(),
        }),
        Value::I(t) => Value::I(Tensor {
            shape,
            data: t.data.clone(),
        }),
        Value::Tuple(_) => return Err("cannot reshape a tuple".into()),
    })
}

fn permute_data<T: Copy>(t: &Tensor<T>, perm: &[usize]) -> Result<Tensor<T>, String> {
    if perm.len() != t.rank() {
        return Err(format!("permutation {perm:?} of rank {}", t.rank()));
    }
    let shape: Vec<usize> = perm.iter().map(|&p| t.shape[p]).collect();
    let src = strides(&t.shape);
    let moved: Vec<usize> = perm.iter().map(|&p| src[p]).collect();
    let idx = broadcast_like(&shape, &moved);
    Ok(Tensor {
        shape,
        data: idx.iter().map(|&i| t.data[i]).collect(),
    })
}

/// Source offsets for iterating `shape` with the given per-axis strides.
fn broadcast_like(shape: &[usize], st: &[usize]) -> Vec<usize> {
    let mut out = Vec::with_capacity(numel(shape));
    let mut idx = vec![0usize; shape.len()];
    let mut offset = 0usize;
    for _ in 0..numel(shape) {
        out.push(offset);
        for ax in (0..shape.len()).rev() {
            idx[ax] += 1;
            offset += st[ax];
            if idx[ax] < shape[ax] {
                break;
            }
            offset -= st[ax] * idx[ax];
            idx[ax] = 0;
        }
    }
    out
}

pub fn permute(x: &Value, perm: &[usize]) -> Result<Value, String> {
    Ok(match x {
        Value::F(t) => Value::F(permute_data(t, perm)?),
        Value::I(t) => Value::I(permute_data(t, perm)?),
        Value::Tuple(_) => return Err("cannot permute a tuple".into()),
    })
}

pub fn shift(x: &F32Tensor, axis: usize, by: i64) -> F32Tensor {
    let (outer, n, inner) = around(&x.shape, axis);
    let mut data = vec![0f32; x.data.len()];
    for o in 0..outer {
        for t in 0..n {
            let src = t as i64 - by;
            if src < 0 || src >= n as i64 {
                continue;
            }
            let (d, s) = ((o * n + t) * inner, (o * n + src as usize) * inner);
            data[d..d + inner].copy_from_slice(&x.data[s..s + inner]);
        }
    }
    Tensor {
        shape: x.shape.clone(),
        data,
    }
}

fn slice_data<T: Copy>(
    t: &Tensor<T>,
    axis: usize,
    start: usize,
    len: usize,
) -> Result<Tensor<T>, String> {
    if axis >= t.rank() || start + len > t.shape[axis] {
        return Err(format!(
            "slice {start}..{} of axis {axis} of {:?}",
            start + len,
            t.shape
        ));
    }
    let (outer, n, inner) = around(&t.shape, axis);
    let mut data = Vec::with_capacity(outer * len * inner);
    for o in 0..outer {
        let base = (o * n + start) * inner;
        data.extend_from_slice(&t.data[base..base + len * inner]);
    }
    let mut shape = t.shape.clone();
    shape[axis] = len;
    Ok(Tensor { shape, data })
}

pub fn slice(x: &Value, axis: usize, start: usize, len: usize) -> Result<Value, String> {
    Ok(match x {
        Value::F(t) => Value::F(slice_data(t, axis, start, len)?),
        Value::I(t) => Value::I(slice_data(t, axis, start, len)?),
        Value::Tuple(_) => return Err("cannot slice a tuple".into()),
    })
}

/// The sub-tensor at index `i` of `axis`, with that axis removed.
pub fn take(x: &F32Tensor, axis: usize, i: usize) -> Result<F32Tensor, String> {
    let mut t = slice_data(x, axis, i, 1)?;
    t.shape.remove(axis);
    Ok(t)
}

pub fn concat(xs: &[&F32Tensor], axis: usize) -> Result<F32Tensor, String> {
    let first = xs.first().ok_or("concat of nothing")?;
    if axis >= first.rank() {
        return Err("concat axis out of range".into());
    }
    let outer = numel(&first.shape[..axis]);
    let inner = numel(&first.shape[axis + 1..]);
    let mut shape = first.shape.clone();
    shape[axis] = xs
        .iter()
        .map(|x| x.shape.get(axis).copied().unwrap_or(0))
        .sum();
    let mut data = Vec::with_capacity(numel(&shape));
    for o in 0..outer {
        for x in xs {
            if x.rank() != first.rank() || numel(&x.shape[axis + 1..]) != inner {
                return Err(format!("concat of {:?} and {:?}", first.shape, x.shape));
            }
            let n = x.shape[axis] * inner;
            data.extend_from_slice(&x.data[o * n..(o + 1) * n]);
        }
    }
    Ok(Tensor { shape, data })
}

/// Stacks equal-shaped tensors along a new axis.
pub fn stack(xs: &[F32Tensor], axis: usize) -> Result<F32Tensor, String> {
    let expanded: Vec<F32Tensor> = xs
        .iter()
        .map(|x| {
            let mut s = x.shape.clone();
            s.insert(axis.min(s.len()), 1);
            Tensor {
                shape: s,
                data: x.data.clone(),
            }
        })
        .collect();
    let refs: Vec<&F32Tensor> = expanded.iter().collect();
    concat(&refs, axis)
}

pub fn gather(table: &F32Tensor, ids: &I64Tensor) -> Result<F32Tensor, String> {
    let rows = *table.shape.first().ok_or("gather from a scalar")?;
    let row = numel(&table.shape[1..]);
    let mut data = Vec::with_capacity(ids.data.len() * row);
    for &id in &ids.data {
        if id < 0 || id as usize >= rows {
            return Err(format!(
                "index {id} out of range for a table of {rows} rows"
            ));
        }
        data.extend_from_slice(&table.data[id as usize * row..(id as usize + 1) * row]);
    }
    let mut shape = ids.shape.clone();
    shape.extend_from_slice(&table.shape[1..]);
    Ok(Tensor { shape, data })
}

/// `out[v] = Σ_{n: ids[n] = v} updates[n]` (ids [N], updates [N, W] → [rows, W]),
/// accumulated in f64 in the order of `n`.
pub fn scatter_add(ids: &I64Tensor, updates: &F32Tensor, rows: usize) -> Result<F32Tensor, String> {
    let n = ids.data.len();
    if updates.shape.len() != 2 || updates.shape[0] != n {
        return Err(format!(
            "scatter_add of {:?} updates by {:?} ids",
            updates.shape, ids.shape
        ));
    }
    let w = updates.shape[1];
    let mut acc = vec![0f64; rows * w];
    for (t, &id) in ids.data.iter().enumerate() {
        if id < 0 || id as usize >= rows {
            return Err(format!("index {id} out of range for {rows} rows"));
        }
        let r = id as usize * w;
        for (a, &u) in acc[r..r + w]
            .iter_mut()
            .zip(&updates.data[t * w..(t + 1) * w])
        {
            *a += u as f64;
        }
    }
    Ok(Tensor {
        shape: vec![rows, w],
        data: acc.into_iter().map(|x| x as f32).collect(),
    })
}

/// `x` [S, ..] with its last T rows replaced by `new` [T, ..].
pub fn update_tail(x: &F32Tensor, new: &F32Tensor) -> Result<F32Tensor, String> {
    let (Some(&s), Some(&t)) = (x.shape.first(), new.shape.first()) else {
        return Err("update_tail of a scalar".into());
    };
    if t > s || x.shape[1..] != new.shape[1..] {
        return Err(format!("update_tail of {:?} by {:?}", x.shape, new.shape));
    }
    let row: usize = x.shape[1..].iter().product();
    let mut out = x.clone();
    out.data[(s - t) * row..].copy_from_slice(&new.data);
    Ok(out)
}

/// `x` [R, ..] as a ring that has seen `seen` rows, the last T of them `new` [T, ..]: row
/// `(seen − T + t) mod R` becomes `new[t]`.
pub fn update_ring(x: &F32Tensor, new: &F32Tensor, seen: usize) -> Result<F32Tensor, String> {
    let (Some(&r), Some(&t)) = (x.shape.first(), new.shape.first()) else {
        return Err("update_ring of a scalar".into());
    };
    if t > r || t > seen || r == 0 || x.shape[1..] != new.shape[1..] {
        return Err(format!(
            "update_ring of {:?} by {:?} after {seen} rows",
            x.shape, new.shape
        ));
    }
    let row: usize = x.shape[1..].iter().product();
    let mut out = x.clone();
    for i in 0..t {
        let at = (seen - t + i) % r;
        out.data[at * row..(at + 1) * row].copy_from_slice(&new.data[i * row..(i + 1) * row]);
    }
    Ok(out)
}

/// Ring caches k, v [B, H, R, D] and a key mask [B, S] → k, v [B, H, S, D] with key p at
/// row p (read from ring row p mod R) and the mask zero for the keys the ring has dropped
/// (p < S − R).
pub fn unroll_ring(
    k: &F32Tensor,
    v: &F32Tensor,
    mask: &F32Tensor,
) -> Result<(F32Tensor, F32Tensor, F32Tensor), String> {
    let [b, s] = mask.shape[..] else {
        return Err("ring attention: the key mask is not [B, S]".into());
    };
    let unroll = |x: &F32Tensor| -> Result<F32Tensor, String> {
        let [xb, h, r, d] = x.shape[..] else {
            return Err("ring attention: k and v must be rank 4".into());
        };
        if xb != b || r == 0 {
            return Err(format!(
                "ring attention: {:?} against a mask of {b} rows",
                x.shape
            ));
        }
        let mut data = vec![0f32; b * h * s * d];
        for bi in 0..b {
            for hi in 0..h {
                for p in 0..s {
                    let from = ((bi * h + hi) * r + p % r) * d;
                    let to = ((bi * h + hi) * s + p) * d;
                    data[to..to + d].copy_from_slice(&x.data[from..from + d]);
                }
            }
        }
        Ok(Tensor {
            shape: vec![b, h, s, d],
            data,
        })
    };
    let r = k.shape.get(2).copied().unwrap_or(0);
    let mut m = mask.clone();
    for bi in 0..b {
        for p in 0..s.saturating_sub(r) {
            m.data[bi * s + p] = 0.0;
        }
    }
    Ok((unroll(k)?, unroll(v)?, m))
}

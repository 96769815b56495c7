//! Scaled dot-product attention, written out: for every query, the allowed keys (mask kind,
//! key mask), scores plus bias, softmax in f64, weighted values. Grouped-query heads share
//! key/value heads.

use crate::graph::{AttnPart, MaskKind};
use crate::tensor::{F32Tensor, Tensor};

pub fn attention(
    q: &F32Tensor,
    k: &F32Tensor,
    v: &F32Tensor,
    bias: Option<&F32Tensor>,
    key_mask: Option<&F32Tensor>,
    mask: MaskKind,
    scale: f64,
) -> Result<F32Tensor, String> {
    let [b, h, t, d] = dims4(q)?;
    let [bk, hk, s, dk] = dims4(k)?;
    let [bv, hv, sv, dv] = dims4(v)?;
    if bk != b || bv != b || hv != hk || sv != s || dk != d || hk == 0 || h % hk != 0 {
        return Err(format!(
            "attention shapes q {:?}, k {:?}, v {:?}",
            q.shape, k.shape, v.shape
        ));
    }
    let bias = match bias {
        Some(x) => Some(super::kernels::broadcast_to(x, &[b, h, t, s])?),
        None => None,
    };
    if let Some(m) = key_mask {
        if m.shape != [b, s] {
            return Err(format!("key mask {:?}, expected [{b}, {s}]", m.shape));
        }
    }
    let group = h / hk;
    let mut out = vec![0f32; b * h * t * dv];
    let mut scores = vec![0f64; s];
    for bi in 0..b {
        for hi in 0..h {
            let kh = hi / group;
            for ti in 0..t {
                let pos = (s + ti).saturating_sub(t) as i64;
                let mut best = f64::NEG_INFINITY;
                for (si, score) in scores.iter_mut().enumerate() {
                    let allowed = match mask {
                        MaskKind::Bidirectional => true,
                        MaskKind::Causal => (si as i64) <= pos,
                        MaskKind::Sliding(w) => (si as i64) <= pos && (si as i64) > pos - w as i64,
                    } && key_mask.is_none_or(|m| m.data[bi * s + si] != 0.0);
                    if !allowed {
                        *score = f64::NEG_INFINITY;
                        continue;
                    }
                    let (qo, ko) = (((bi * h + hi) * t + ti) * d, ((bi * hk + kh) * s + si) * d);
                    let dot: f64 = (0..d)
                        .map(|x| q.data[qo + x] as f64 * k.data[ko + x] as f64)
                        .sum();
                    *score = dot * scale
                        + bias
                            .as_ref()
                            .map_or(0.0, |bb| bb.data[((bi * h + hi) * t + ti) * s + si] as f64);
                    best = best.max(*score);
                }
                if best == f64::NEG_INFINITY {
                    continue; // no key may be seen: the output stays zero
                }
                let total: f64 = scores.iter().map(|&x| (x - best).exp()).sum();
                let oo = ((bi * h + hi) * t + ti) * dv;
                for (si, &score) in scores.iter().enumerate() {
                    let p = (score - best).exp() / total;
                    if p == 0.0 {
                        continue;
                    }
                    let vo = ((bi * hk + kh) * s + si) * dv;
                    for x in 0..dv {
                        out[oo + x] += (p * v.data[vo + x] as f64) as f32;
                    }
                }
            }
        }
    }
    Ok(Tensor {
        shape: vec![b, h, t, dv],
        data: out,
    })
}

fn dims4(x: &F32Tensor) -> Result<[usize; 4], String> {
    match x.shape[..] {
        [a, b, c, d] => Ok([a, b, c, d]),
        _ => Err(format!("attention takes rank-4 tensors, got {:?}", x.shape)),
    }
}

/// `attention_grad`: one part of attention's backward pass (see `Op::AttentionGrad`),
/// computed the flash way — scores recomputed from q and k, probabilities from the saved
/// log-sum-exp — in f64. `lse` and `delta` ([B, H, T]) are unused by `AttnPart::Lse`.
#[allow(clippy::too_many_arguments)]
pub fn attention_grad(
    part: AttnPart,
    q: &F32Tensor,
    k: &F32Tensor,
    v: Option<&F32Tensor>,
    d_out: Option<&F32Tensor>,
    lse: Option<&F32Tensor>,
    delta: Option<&F32Tensor>,
    bias: Option<&F32Tensor>,
    key_mask: Option<&F32Tensor>,
    mask: MaskKind,
    scale: f64,
) -> Result<F32Tensor, String> {
    let [b, h, t, d] = dims4(q)?;
    let [bk, hk, s, dk] = dims4(k)?;
    if bk != b || dk != d || hk == 0 || h % hk != 0 {
        return Err(format!(
            "attention_grad shapes q {:?}, k {:?}",
            q.shape, k.shape
        ));
    }
    let bias = match bias {
        Some(x) => Some(super::kernels::broadcast_to(x, &[b, h, t, s])?),
        None => None,
    };
    let group = h / hk;
    // Every visible score of query (bi, hi, ti), scaled and biased.
    let score = |bi: usize, hi: usize, ti: usize, si: usize| -> Option<f64> {
        let pos = (s + ti).saturating_sub(t) as i64;
        let allowed = match mask {
            MaskKind::Bidirectional => true,
            MaskKind::Causal => (si as i64) <= pos,
            MaskKind::Sliding(w) => (si as i64) <= pos && (si as i64) > pos - w as i64,
        } && key_mask.is_none_or(|m| m.data[bi * s + si] != 0.0);
        if !allowed {
            return None;
        }
        let kh = hi / group;
        let (qo, ko) = (((bi * h + hi) * t + ti) * d, ((bi * hk + kh) * s + si) * d);
        let dot: f64 = (0..d)
            .map(|x| q.data[qo + x] as f64 * k.data[ko + x] as f64)
            .sum();
        Some(
            dot * scale
                + bias
                    .as_ref()
                    .map_or(0.0, |bb| bb.data[((bi * h + hi) * t + ti) * s + si] as f64),
        )
    };
    if part == AttnPart::Lse {
        let mut out = vec![0f32; b * h * t];
        for bi in 0..b {
            for hi in 0..h {
                for ti in 0..t {
                    let sc: Vec<f64> = (0..s).filter_map(|si| score(bi, hi, ti, si)).collect();
                    let m = sc.iter().copied().fold(f64::NEG_INFINITY, f64::max);
                    out[(bi * h + hi) * t + ti] = if m == f64::NEG_INFINITY {
                        f32::INFINITY
                    } else {
                        (m + sc.iter().map(|&x| (x - m).exp()).sum::<f64>().ln()) as f32
                    };
                }
            }
        }
        return Ok(Tensor {
            shape: vec![b, h, t],
            data: out,
        });
    }
    let (Some(v), Some(d_out), Some(lse), Some(delta)) = (v, d_out, lse, delta) else {
        return Err("attention_grad needs v, dO, lse and δ".into());
    };
    let [_, _, _, dv] = dims4(v)?;
    let (out_shape, width) = match part {
        AttnPart::Q => (vec![b, h, t, d], d),
        AttnPart::K => (vec![b, hk, s, d], d),
        _ => (vec![b, hk, s, dv], dv),
    };
    let mut out = vec![0f64; out_shape.iter().product()];
    for bi in 0..b {
        for hi in 0..h {
            let kh = hi / group;
            for ti in 0..t {
                let row = (bi * h + hi) * t + ti;
                let l = lse.data[row] as f64;
                for si in 0..s {
                    let Some(sc) = score(bi, hi, ti, si) else {
                        continue;
                    };
                    let p = (sc - l).exp();
                    let (oo, ko, vo) = (
                        row * dv,
                        ((bi * hk + kh) * s + si) * d,
                        ((bi * hk + kh) * s + si) * dv,
                    );
                    let dp: f64 = (0..dv)
                        .map(|x| d_out.data[oo + x] as f64 * v.data[vo + x] as f64)
                        .sum();
                    let ds = p * (dp - delta.data[row] as f64) * scale;
                    match part {
                        AttnPart::Q => {
                            for x in 0..width {
                                out[row * d + x] += ds * k.data[ko + x] as f64;
                            }
                        }
                        AttnPart::K => {
                            for x in 0..width {
                                out[ko + x] += ds * q.data[row * d + x] as f64;
                            }
                        }
                        _ => {
                            for x in 0..width {
                                out[vo + x] += p * d_out.data[oo + x] as f64;
                            }
                        }
                    }
                }
            }
        }
    }
    Ok(Tensor {
        shape: out_shape,
        data: out.into_iter().map(|x| x as f32).collect(),
    })
}

//! Scaled dot-product attention, written out: for every query, the allowed keys (mask kind,
//! key mask), scores plus bias, softmax in f64, weighted values. Grouped-query heads share
//! key/value heads.

use crate::graph::MaskKind;
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

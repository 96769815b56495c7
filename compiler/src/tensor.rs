//! Host tensors: dense, row-major, owned. The currency of the reference evaluator, the
//! weight loader and the test fixtures.

use std::fmt;

/// A dense row-major tensor of `T` (`f32` values, `i64` token ids).
#[derive(Clone, PartialEq)]
pub struct Tensor<T> {
    pub shape: Vec<usize>,
    pub data: Vec<T>,
}

pub type F32Tensor = Tensor<f32>;
pub type I64Tensor = Tensor<i64>;

/// A shape and a data length that disagree.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShapeMismatch {
    pub shape: Vec<usize>,
    pub len: usize,
}

impl fmt::Display for ShapeMismatch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "shape {:?} holds {} elements, data has {}",
            self.shape,
            numel(&self.shape),
            self.len
        )
    }
}

impl std::error::Error for ShapeMismatch {}

/// Number of elements of a shape (1 for a scalar).
pub fn numel(shape: &[usize]) -> usize {
    shape.iter().product()
}

/// Row-major strides of a shape.
pub fn strides(shape: &[usize]) -> Vec<usize> {
    let mut s = vec![1; shape.len()];
    for i in (0..shape.len().saturating_sub(1)).rev() {
        s[i] = s[i + 1] * shape[i + 1];
    }
    s
}

impl<T: Clone + Default> Tensor<T> {
    pub fn new(shape: Vec<usize>, data: Vec<T>) -> Result<Tensor<T>, ShapeMismatch> {
        if numel(&shape) != data.len() {
            return Err(ShapeMismatch {
                len: data.len(),
                shape,
            });
        }
        Ok(Tensor { shape, data })
    }

    pub fn zeros(shape: Vec<usize>) -> Tensor<T> {
        let n = numel(&shape);
        Tensor {
            shape,
            data: vec![T::default(); n],
        }
    }
}

impl<T> Tensor<T> {
    pub fn numel(&self) -> usize {
        self.data.len()
    }

    pub fn rank(&self) -> usize {
        self.shape.len()
    }
}

impl Tensor<f32> {
    pub fn scalar(v: f32) -> F32Tensor {
        Tensor {
            shape: vec![],
            data: vec![v],
        }
    }

    /// max |a − b| / max |b|, the conformance measure (0 when both are zero). Tensors of
    /// different shapes, and any NaN or infinity on either side, give `f64::INFINITY`, so
    /// that every `≤ tolerance` check fails on them.
    pub fn rel_max_diff(&self, reference: &F32Tensor) -> f64 {
        if self.shape != reference.shape {
            return f64::INFINITY;
        }
        let max_ref = max_abs(&reference.data);
        let max_diff = max_abs_diff(&self.data, &reference.data);
        if max_ref == 0.0 || !max_diff.is_finite() {
            max_diff
        } else {
            max_diff / max_ref
        }
    }
}

/// max |x| over `data` (0 when empty); `f64::INFINITY` when any value is NaN or infinite.
pub fn max_abs(data: &[f32]) -> f64 {
    data.iter().fold(0.0f64, |m, &x| {
        if x.is_finite() {
            m.max((x as f64).abs())
        } else {
            f64::INFINITY
        }
    })
}

/// max |a − b| over pairs; `f64::INFINITY` when the lengths differ or any value on either
/// side is NaN or infinite (a NaN never compares as "close").
pub fn max_abs_diff(a: &[f32], b: &[f32]) -> f64 {
    if a.len() != b.len() {
        return f64::INFINITY;
    }
    a.iter().zip(b).fold(0.0f64, |m, (&x, &y)| {
        if x.is_finite() && y.is_finite() {
            m.max((x as f64 - y as f64).abs())
        } else {
            f64::INFINITY
        }
    })
}

impl<T: fmt::Debug> fmt::Debug for Tensor<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let shown: Vec<&T> = self.data.iter().take(8).collect();
        write!(
            f,
            "Tensor{:?} {:?}{}",
            self.shape,
            shown,
            if self.data.len() > 8 { " …" } else { "" }
        )
    }
}

#[cfg(test)]
mod nan_tests {
    use super::*;

    fn t(data: Vec<f32>) -> F32Tensor {
        Tensor {
            shape: vec![data.len()],
            data,
        }
    }

    #[test]
    fn comparisons_fail_on_nan_infinity_and_shape() {
        let good = t(vec![1.0, -2.0, 3.0]);
        assert_eq!(good.rel_max_diff(&good), 0.0);
        assert!(t(vec![1.0, -2.0, 3.0001]).rel_max_diff(&good) < 1e-4);
        for bad in [f32::NAN, f32::INFINITY, f32::NEG_INFINITY] {
            let all = t(vec![bad; 3]);
            let fails = |d: f64| d.partial_cmp(&1e-4) != Some(std::cmp::Ordering::Less);
            assert!(fails(all.rel_max_diff(&good)), "{bad} passes as output");
            assert!(fails(good.rel_max_diff(&all)), "{bad} passes as reference");
            let one = t(vec![1.0, bad, 3.0]);
            assert!(fails(one.rel_max_diff(&good)), "one {bad} passes");
            assert_eq!(max_abs(&[0.5, bad]), f64::INFINITY);
            assert_eq!(max_abs_diff(&[0.5, bad], &[0.5, 0.5]), f64::INFINITY);
        }
        let other_shape = Tensor {
            shape: vec![3, 1],
            data: good.data.clone(),
        };
        assert_eq!(other_shape.rel_max_diff(&good), f64::INFINITY);
        assert_eq!(max_abs_diff(&[1.0], &[1.0, 2.0]), f64::INFINITY);
    }
}

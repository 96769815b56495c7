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

    /// max |a − b| / max |b|, the conformance measure (0 when both are zero).
    pub fn rel_max_diff(&self, reference: &F32Tensor) -> f64 {
        let max_ref = reference
            .data
            .iter()
            .fold(0.0f64, |m, &x| m.max((x as f64).abs()));
        let max_diff = self
            .data
            .iter()
            .zip(&reference.data)
            .fold(0.0f64, |m, (&a, &b)| m.max((a as f64 - b as f64).abs()));
        if max_ref == 0.0 {
            max_diff
        } else {
            max_diff / max_ref
        }
    }
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

//! Host tensors ([`HostTensor`]) → checked inputs of a run: each input of the graph found
//! (an absent `token_type_ids` is zeros), the symbols bound from the input shapes, every
//! axis and the model's limits checked, and the data copied into its buffer.

use std::collections::HashMap;
use std::ffi::c_void;

use crate::error::RuntimeError;
use crate::manifest::{Dtype, InputSpec, Manifest};
use crate::size::SizeExpr;

/// Element data of a host tensor. `I32` is accepted for integer inputs and widened.
#[derive(Debug, Clone, PartialEq)]
pub enum HostData {
    F32(Vec<f32>),
    I64(Vec<i64>),
    I32(Vec<i32>),
}

/// A row-major tensor in host memory.
#[derive(Debug, Clone, PartialEq)]
pub struct HostTensor {
    pub shape: Vec<usize>,
    pub data: HostData,
}

impl HostTensor {
    pub fn f32(shape: Vec<usize>, data: Vec<f32>) -> HostTensor {
        HostTensor {
            shape,
            data: HostData::F32(data),
        }
    }

    pub fn i64(shape: Vec<usize>, data: Vec<i64>) -> HostTensor {
        HostTensor {
            shape,
            data: HostData::I64(data),
        }
    }

    /// Number of values held.
    pub fn len(&self) -> usize {
        match &self.data {
            HostData::F32(v) => v.len(),
            HostData::I64(v) => v.len(),
            HostData::I32(v) => v.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The f32 data, if that is the dtype.
    pub fn as_f32(&self) -> Option<&[f32]> {
        match &self.data {
            HostData::F32(v) => Some(v),
            _ => None,
        }
    }

    fn dtype_name(&self) -> &'static str {
        match self.data {
            HostData::F32(_) => "f32",
            HostData::I64(_) => "i64",
            HostData::I32(_) => "i32",
        }
    }

    /// Integer data widened to i64; `None` for f32.
    fn ints(&self) -> Option<Box<dyn Iterator<Item = i64> + '_>> {
        match &self.data {
            HostData::I64(v) => Some(Box::new(v.iter().copied())),
            HostData::I32(v) => Some(Box::new(v.iter().map(|&x| i64::from(x)))),
            HostData::F32(_) => None,
        }
    }
}

/// One input of a run: the caller's tensor, or the zeros of an absent `token_type_ids`.
pub(crate) enum Given<'a> {
    Tensor(&'a HostTensor),
    Zeros,
}

/// Each input of the graph from the caller's map; only `token_type_ids` may be absent.
pub(crate) fn gather_inputs<'a>(
    m: &Manifest,
    inputs: &'a HashMap<String, HostTensor>,
) -> Result<Vec<Given<'a>>, RuntimeError> {
    m.inputs
        .iter()
        .map(|spec| match inputs.get(&spec.name) {
            Some(t) => {
                let numel = t.shape.iter().try_fold(1usize, |a, &d| a.checked_mul(d));
                if numel != Some(t.len()) {
                    return Err(RuntimeError::input(
                        &spec.name,
                        format!("has {} values for shape {:?}", t.len(), t.shape),
                    ));
                }
                if t.shape.len() != spec.shape.len() {
                    return Err(RuntimeError::input(
                        &spec.name,
                        format!("has shape {:?}, expected [{}]", t.shape, join(&spec.shape)),
                    ));
                }
                let fits = match spec.dtype {
                    Dtype::F32 => matches!(t.data, HostData::F32(_)),
                    Dtype::I64 => !matches!(t.data, HostData::F32(_)),
                    // No package takes one (half precision is for temporaries).
                    Dtype::Bf16 | Dtype::F16 => false,
                };
                if !fits {
                    let want = match spec.dtype {
                        Dtype::F32 => "an f32 tensor",
                        Dtype::I64 => "an integer tensor (i64 or i32)",
                        Dtype::Bf16 | Dtype::F16 => "a tensor of a type no input has",
                    };
                    return Err(RuntimeError::input(
                        &spec.name,
                        format!("must be {want}, found {}", t.dtype_name()),
                    ));
                }
                Ok(Given::Tensor(t))
            }
            None if spec.name == "token_type_ids" && spec.dtype == Dtype::I64 => Ok(Given::Zeros),
            None => {
                let mut given: Vec<String> = inputs.keys().cloned().collect();
                given.sort();
                Err(RuntimeError::MissingInput {
                    name: spec.name.clone(),
                    given,
                })
            }
        })
        .collect()
}

fn join(shape: &[SizeExpr]) -> String {
    shape
        .iter()
        .map(|e| e.to_string())
        .collect::<Vec<_>>()
        .join(", ")
}

/// The symbols' values from the axes that are a single symbol; two inputs disagreeing on a
/// symbol is an error naming both.
/// Symbols the inputs do not bind come from `session` (a step program's `src_seq`, fixed
/// when its state was allocated).
pub(crate) fn bind(
    m: &Manifest,
    given: &[Given<'_>],
    session: &[(String, u64)],
) -> Result<Vec<i64>, RuntimeError> {
    let mut bound: Vec<Option<(i64, &str, usize)>> = vec![None; m.syms.len()];
    for (spec, g) in m.inputs.iter().zip(given) {
        let Given::Tensor(t) = g else { continue };
        for (axis, (e, &len)) in spec.shape.iter().zip(&t.shape).enumerate() {
            let Some(sym) = e.as_sym() else { continue };
            let Some(i) = m.syms.iter().position(|s| s == sym) else {
                continue;
            };
            let v = i64::try_from(len)
                .map_err(|_| RuntimeError::input(&spec.name, format!("axis {axis} is too long")))?;
            match bound[i] {
                None => bound[i] = Some((v, &spec.name, axis)),
                Some((w, other, other_axis)) if w != v => {
                    return Err(RuntimeError::input(
                        &spec.name,
                        format!(
                            "has {sym} = {v} (axis {axis}), but `{other}` has {sym} = {w} (axis {other_axis})"
                        ),
                    ))
                }
                Some(_) => {}
            }
        }
    }
    m.syms
        .iter()
        .zip(bound)
        .map(|(s, b)| {
            b.map(|b| b.0)
                .or_else(|| session.iter().find(|(n, _)| n == s).map(|(_, v)| *v as i64))
                .ok_or_else(|| RuntimeError::Size(format!("no input given binds the size `{s}`")))
        })
        .collect()
}

/// Axes that are not a single symbol must equal their size at the bound symbols.
pub(crate) fn check_axes(
    m: &Manifest,
    spec: &InputSpec,
    t: &HostTensor,
    dims: &[i64],
) -> Result<(), RuntimeError> {
    for (axis, (e, &len)) in spec.shape.iter().zip(&t.shape).enumerate() {
        if e.as_sym().is_some() {
            continue;
        }
        let want = e.eval(&m.syms, dims)?;
        if want != len as u64 {
            return Err(RuntimeError::input(
                &spec.name,
                format!(
                    "has shape {:?}: axis {axis} is {len}, expected {e} = {want}",
                    t.shape
                ),
            ));
        }
    }
    Ok(())
}

/// The model's limits: token ids within the vocabulary, lengths within the context and a
/// multiple of `seq_multiple_of`, segment ids within the segments, a 0/1 mask.
pub(crate) fn check_limits(
    m: &Manifest,
    spec: &InputSpec,
    t: &HostTensor,
) -> Result<(), RuntimeError> {
    let name = spec.name.as_str();
    if t.shape.contains(&0) {
        return Err(RuntimeError::input(
            name,
            format!("is empty (shape {:?})", t.shape),
        ));
    }
    let l = &m.limits;
    match name {
        "input_ids" | "decoder_input_ids" => {
            let seq = t.shape.last().copied().unwrap_or(1) as u64;
            if l.context > 0 && seq > l.context {
                return Err(RuntimeError::input(
                    name,
                    format!(
                        "has {seq} tokens, more than the model's context of {}",
                        l.context
                    ),
                ));
            }
            if l.seq_multiple_of > 1 && !seq.is_multiple_of(l.seq_multiple_of) {
                return Err(RuntimeError::input(
                    name,
                    format!(
                        "has {seq} tokens; the model needs a multiple of {} (pad the input)",
                        l.seq_multiple_of
                    ),
                ));
            }
            if l.vocab > 0 {
                if let Some(bad) = t
                    .ints()
                    .and_then(|mut v| v.find(|&x| x < 0 || x as u64 >= l.vocab))
                {
                    return Err(RuntimeError::input(
                        name,
                        format!(
                            "holds token id {bad}, outside the vocabulary of {}",
                            l.vocab
                        ),
                    ));
                }
            }
        }
        "token_type_ids" if l.segments > 0 => {
            if let Some(bad) = t
                .ints()
                .and_then(|mut v| v.find(|&x| x < 0 || x as u64 >= l.segments))
            {
                return Err(RuntimeError::input(
                    name,
                    format!("holds {bad}, but the model has {} segments", l.segments),
                ));
            }
        }
        "attention_mask" => {
            if let Some(bad) = t.ints().and_then(|mut v| v.find(|&x| x != 0 && x != 1)) {
                return Err(RuntimeError::input(
                    name,
                    format!("must hold only 0 and 1, found {bad}"),
                ));
            }
        }
        _ => {}
    }
    Ok(())
}

/// Copies an input into its buffer (`bytes` long at the bound sizes), widening i32.
pub(crate) fn copy_in(
    spec: &InputSpec,
    g: &Given<'_>,
    dst: *mut c_void,
    bytes: usize,
) -> Result<(), RuntimeError> {
    let elems = bytes / spec.dtype.bytes() as usize;
    let have = match g {
        Given::Tensor(t) => t.len(),
        Given::Zeros => elems,
    };
    if have != elems {
        return Err(RuntimeError::input(
            &spec.name,
            format!("has {have} values, but the package's buffer holds {elems}"),
        ));
    }
    // SAFETY: `dst` is an allocation of at least `bytes` bytes, 64-byte aligned.
    unsafe {
        match (g, spec.dtype) {
            (Given::Zeros, _) => std::ptr::write_bytes(dst.cast::<u8>(), 0, bytes),
            (Given::Tensor(t), Dtype::F32) => {
                if let HostData::F32(v) = &t.data {
                    std::ptr::copy_nonoverlapping(v.as_ptr(), dst.cast(), elems);
                }
            }
            (Given::Tensor(t), Dtype::I64) => {
                let out = std::slice::from_raw_parts_mut(dst.cast::<i64>(), elems);
                if let Some(v) = t.ints() {
                    for (o, x) in out.iter_mut().zip(v) {
                        *o = x;
                    }
                }
            }
            // Refused when the inputs were checked.
            (Given::Tensor(_), Dtype::Bf16 | Dtype::F16) => {}
        }
    }
    Ok(())
}

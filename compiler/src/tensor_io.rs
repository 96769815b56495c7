//! safetensors files ↔ evaluator values: model inputs (`input_ids` as i64 or i32, masks,
//! f32 tensors) in, f32 outputs out. Every failure names the file and the tensor.

use crate::interp::Value;
use crate::tensor::{F32Tensor, Tensor};
use safetensors::{Dtype, SafeTensors};
use std::collections::HashMap;
use std::path::Path;

/// Reads every tensor of a file: integer tensors as i64, float tensors as f32.
pub fn read_values(path: &Path) -> Result<HashMap<String, Value>, String> {
    let bytes = std::fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let file = SafeTensors::deserialize(&bytes)
        .map_err(|e| format!("{} is not a valid safetensors file: {e}", path.display()))?;
    let mut out = HashMap::new();
    for (name, view) in file.tensors() {
        let shape = view.shape().to_vec();
        let data = view.data();
        let value = match view.dtype() {
            Dtype::I64 => Value::I(Tensor {
                shape,
                data: data
                    .chunks_exact(8)
                    .map(|c| i64::from_le_bytes(c.try_into().unwrap_or([0; 8])))
                    .collect(),
            }),
            Dtype::I32 => Value::I(Tensor {
                shape,
                data: data
                    .chunks_exact(4)
                    .map(|c| i32::from_le_bytes(c.try_into().unwrap_or([0; 4])) as i64)
                    .collect(),
            }),
            Dtype::F32 => Value::F(Tensor {
                shape,
                data: data
                    .chunks_exact(4)
                    .map(|c| f32::from_le_bytes(c.try_into().unwrap_or([0; 4])))
                    .collect(),
            }),
            other => {
                return Err(format!(
                    "{}: tensor `{name}` has dtype {other:?}; expected i64, i32 or f32",
                    path.display()
                ))
            }
        };
        out.insert(name, value);
    }
    Ok(out)
}

/// Writes f32 tensors.
pub fn write_f32(path: &Path, tensors: &[(String, F32Tensor)]) -> Result<(), String> {
    let values: Vec<(String, Value)> = tensors
        .iter()
        .map(|(n, t)| (n.clone(), Value::F(t.clone())))
        .collect();
    write_values(path, &values)
}

/// Writes f32 and i64 tensors.
pub fn write_values(path: &Path, tensors: &[(String, Value)]) -> Result<(), String> {
    let mut bytes: Vec<(String, Dtype, Vec<u8>, Vec<usize>)> = Vec::new();
    for (n, v) in tensors {
        match v {
            Value::F(t) => bytes.push((
                n.clone(),
                Dtype::F32,
                t.data.iter().flat_map(|v| v.to_le_bytes()).collect(),
                t.shape.clone(),
            )),
            Value::I(t) => bytes.push((
                n.clone(),
                Dtype::I64,
                t.data.iter().flat_map(|v| v.to_le_bytes()).collect(),
                t.shape.clone(),
            )),
            Value::Tuple(_) => return Err(format!("`{n}` is not a tensor")),
        }
    }
    let views: Vec<(String, safetensors::tensor::TensorView)> = bytes
        .iter()
        .map(|(n, d, b, s)| {
            safetensors::tensor::TensorView::new(*d, s.clone(), b).map(|v| (n.clone(), v))
        })
        .collect::<Result<_, _>>()
        .map_err(|e| format!("cannot encode outputs: {e}"))?;
    safetensors::serialize_to_file(views, None, path)
        .map_err(|e| format!("cannot write {}: {e}", path.display()))
}

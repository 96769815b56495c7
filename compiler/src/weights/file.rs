//! Memory-mapped safetensors files: opening (one file, or the shards of a Hugging Face
//! `model.safetensors.index.json`), diagnosing broken files, and dtype conversion to f32.

use std::collections::{BTreeMap, HashMap};
use std::fs::File;
use std::path::{Path, PathBuf};

use memmap2::Mmap;
use safetensors::tensor::TensorView;
use safetensors::{Dtype, SafeTensorError, SafeTensors};

use super::WeightsError;

/// The files to read for `path`: the file itself; for a directory, its `model.safetensors`
/// or the shards its `model.safetensors.index.json` lists; for an `*.index.json`, its shards.
pub(crate) fn resolve(path: &Path) -> Result<Vec<PathBuf>, WeightsError> {
    if path.is_dir() {
        let single = path.join("model.safetensors");
        if single.is_file() {
            return Ok(vec![single]);
        }
        let index = path.join("model.safetensors.index.json");
        if index.is_file() {
            return shards(&index);
        }
        return Err(WeightsError::Io {
            path: path.to_path_buf(),
            error: "directory holds neither `model.safetensors` nor `model.safetensors.index.json`"
                .into(),
        });
    }
    if path.to_string_lossy().ends_with(".index.json") {
        return shards(path);
    }
    Ok(vec![path.to_path_buf()])
}

/// The shard files of a Hugging Face index (`{"weight_map": {name: file}}`), each once, sorted.
fn shards(index: &Path) -> Result<Vec<PathBuf>, WeightsError> {
    let text = std::fs::read_to_string(index).map_err(|e| WeightsError::io(index, &e))?;
    let corrupt = |reason: String| WeightsError::Corrupt {
        path: index.to_path_buf(),
        reason,
    };
    let json: serde_json::Value =
        serde_json::from_str(&text).map_err(|e| corrupt(format!("invalid JSON: {e}")))?;
    let map = json
        .get("weight_map")
        .and_then(|m| m.as_object())
        .ok_or_else(|| corrupt("no `weight_map` object".into()))?;
    let dir = index.parent().unwrap_or(Path::new("."));
    let mut files: Vec<PathBuf> = Vec::new();
    for (name, file) in map {
        let file = file
            .as_str()
            .ok_or_else(|| corrupt(format!("`weight_map` entry `{name}` is not a file name")))?;
        let p = dir.join(file);
        if !files.contains(&p) {
            files.push(p);
        }
    }
    files.sort();
    Ok(files)
}

/// Memory-maps `path`. The map stays valid only while nobody truncates the file.
pub(crate) fn map(path: &Path) -> Result<Mmap, WeightsError> {
    let file = File::open(path).map_err(|e| WeightsError::io(path, &e))?;
    let len = file
        .metadata()
        .map_err(|e| WeightsError::io(path, &e))?
        .len();
    if len < 8 {
        return Err(WeightsError::Corrupt {
            path: path.to_path_buf(),
            reason: format!("{len} bytes is too short for a safetensors header"),
        });
    }
    // SAFETY: the map is read-only and lives no longer than the load; as with every
    // memory-mapped reader, a file truncated by another process while we read it is UB —
    // the same contract the safetensors and Hugging Face loaders have.
    unsafe { Mmap::map(&file) }.map_err(|e| WeightsError::io(path, &e))
}

/// Parses one mapped file, turning a safetensors error into one that names the tensor
/// where it can (a truncated file names the first tensor whose data is cut off).
pub(crate) fn parse<'a>(path: &Path, bytes: &'a [u8]) -> Result<SafeTensors<'a>, WeightsError> {
    SafeTensors::deserialize(bytes).map_err(|e| diagnose(path, bytes, e))
}

fn diagnose(path: &Path, bytes: &[u8], err: SafeTensorError) -> WeightsError {
    let path = path.to_path_buf();
    let len = bytes.len() as u64;
    let declared = u64::from_le_bytes(bytes[..8].try_into().expect("len ≥ 8 checked by map"));
    match err {
        SafeTensorError::InvalidHeaderLength if declared.saturating_add(8) > len => {
            return WeightsError::Truncated {
                path,
                tensor: None,
                needed: declared.saturating_add(8),
                len,
            }
        }
        SafeTensorError::MetadataIncompleteBuffer => {
            // The header parsed; find the tensors it places past the end of the file.
            let start = 8 + declared as usize;
            let header: Option<BTreeMap<String, serde_json::Value>> =
                std::str::from_utf8(&bytes[8..start])
                    .ok()
                    .and_then(|s| serde_json::from_str(s).ok());
            let mut ends: Vec<(u64, String)> = header
                .into_iter()
                .flatten()
                .filter(|(k, _)| k != "__metadata__")
                .filter_map(|(k, v)| {
                    let end = v.get("data_offsets")?.get(1)?.as_u64()?;
                    Some((end.saturating_add(start as u64), k))
                })
                .collect();
            ends.sort();
            let needed = ends.last().map(|e| e.0).unwrap_or(len);
            if needed > len {
                let first = ends.into_iter().find(|(end, _)| *end > len).map(|e| e.1);
                return WeightsError::Truncated {
                    path,
                    tensor: first,
                    needed,
                    len,
                };
            }
            return WeightsError::Corrupt {
                path,
                reason: format!(
                    "the tensors end at byte {needed} but the file has {len} bytes (trailing data)"
                ),
            };
        }
        _ => {}
    }
    WeightsError::Corrupt {
        path,
        reason: err.to_string(),
    }
}

/// All tensors of a set of files by name; a name in two shards keeps the first.
pub(crate) struct Files<'a> {
    by_name: HashMap<String, TensorView<'a>>,
}

impl<'a> Files<'a> {
    pub fn new(parsed: &[SafeTensors<'a>]) -> Files<'a> {
        let mut by_name = HashMap::new();
        for st in parsed {
            for (name, view) in st.tensors() {
                by_name.entry(name).or_insert(view);
            }
        }
        Files { by_name }
    }

    pub fn get(&self, name: &str) -> Option<&TensorView<'a>> {
        self.by_name.get(name)
    }

    pub fn contains(&self, name: &str) -> bool {
        self.by_name.contains_key(name)
    }

    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.by_name.keys().map(String::as_str)
    }
}

/// A safetensors dtype as its header spells it.
pub(crate) fn dtype_name(d: Dtype) -> String {
    format!("{d:?}")
}

/// Converts a tensor's data to f32: f32, f16, bf16 and f64 are accepted, anything else is
/// `None`.
pub(crate) fn to_f32(view: &TensorView<'_>) -> Option<Vec<f32>> {
    let data = view.data();
    let out = match view.dtype() {
        Dtype::F32 => data
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect(),
        Dtype::F16 => data
            .chunks_exact(2)
            .map(|b| f16_to_f32(u16::from_le_bytes([b[0], b[1]])))
            .collect(),
        Dtype::BF16 => data
            .chunks_exact(2)
            .map(|b| f32::from_bits((u16::from_le_bytes([b[0], b[1]]) as u32) << 16))
            .collect(),
        Dtype::F64 => data
            .chunks_exact(8)
            .map(|b| f64::from_le_bytes(b.try_into().expect("chunk of 8")) as f32)
            .collect(),
        _ => return None,
    };
    Some(out)
}

/// IEEE half → single, exact (subnormals, infinities and NaN payloads included).
pub(crate) fn f16_to_f32(h: u16) -> f32 {
    let sign = ((h >> 15) as u32) << 31;
    let exp = ((h >> 10) & 0x1f) as u32;
    let man = (h & 0x3ff) as u32;
    let bits = match exp {
        0 if man == 0 => sign,
        0 => {
            // Subnormal: man · 2⁻²⁴, exact in f32.
            let v = man as f32 * f32::from_bits(0x3380_0000);
            return if sign != 0 { -v } else { v };
        }
        31 => sign | 0x7f80_0000 | (man << 13),
        _ => sign | ((exp + 112) << 23) | (man << 13),
    };
    f32::from_bits(bits)
}

#[cfg(test)]
mod tests {
    use super::f16_to_f32;

    #[test]
    fn half_conversion() {
        assert_eq!(f16_to_f32(0x3c00), 1.0);
        assert_eq!(f16_to_f32(0xc000), -2.0);
        assert_eq!(f16_to_f32(0x7bff), 65504.0);
        assert_eq!(f16_to_f32(0x0001), 2f32.powi(-24));
        assert_eq!(f16_to_f32(0x8000).to_bits(), (-0.0f32).to_bits());
        assert_eq!(f16_to_f32(0x7c00), f32::INFINITY);
        assert!(f16_to_f32(0x7e00).is_nan());
        assert_eq!(f16_to_f32(0x3555), 0.333_251_95);
    }
}

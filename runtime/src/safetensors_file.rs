//! Memory-mapped safetensors files: a path → the files to read (one file, a directory, or
//! the shards of a Hugging Face `model.safetensors.index.json`) → parsed tensors by name,
//! with broken files diagnosed (the cut-off tensor of a truncated file named) and f16, bf16
//! and f64 data converted to f32. Shared by the runtime's weights and the compiler's loader.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::fs::File;
use std::path::{Path, PathBuf};

use memmap2::Mmap;
use safetensors::tensor::TensorView;
use safetensors::{Dtype, SafeTensorError, SafeTensors};

/// Why a safetensors file could not be read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FileError {
    /// The file cannot be opened, read or mapped.
    Io { path: PathBuf, error: String },
    /// Not a safetensors file: bad header, bad JSON, inconsistent offsets.
    Corrupt { path: PathBuf, reason: String },
    /// The file ends before the data its header declares; `tensor` is the first tensor cut
    /// off (none when the header itself is cut).
    Truncated {
        path: PathBuf,
        tensor: Option<String>,
        needed: u64,
        len: u64,
    },
}

impl FileError {
    fn io(path: &Path, e: &std::io::Error) -> FileError {
        FileError::Io {
            path: path.to_path_buf(),
            error: e.to_string(),
        }
    }
}

impl fmt::Display for FileError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FileError::Io { path, error } => write!(f, "cannot read `{}`: {error}", path.display()),
            FileError::Corrupt { path, reason } => {
                write!(f, "`{}` is not a valid safetensors file: {reason}", path.display())
            }
            FileError::Truncated {
                path,
                tensor: Some(t),
                needed,
                len,
            } => write!(
                f,
                "`{}` is truncated: tensor `{t}` ends at byte {needed} but the file has {len} bytes",
                path.display()
            ),
            FileError::Truncated {
                path,
                tensor: None,
                needed,
                len,
            } => write!(
                f,
                "`{}` is truncated: its header needs {needed} bytes but the file has {len}",
                path.display()
            ),
        }
    }
}

impl std::error::Error for FileError {}

/// The files to read for `path`: the file itself; for a directory, its `model.safetensors`
/// or the shards its `model.safetensors.index.json` lists; for an `*.index.json`, its shards.
pub fn resolve(path: &Path) -> Result<Vec<PathBuf>, FileError> {
    if path.is_dir() {
        let single = path.join("model.safetensors");
        if single.is_file() {
            return Ok(vec![single]);
        }
        let index = path.join("model.safetensors.index.json");
        if index.is_file() {
            return shards(&index);
        }
        return Err(FileError::Io {
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
fn shards(index: &Path) -> Result<Vec<PathBuf>, FileError> {
    let text = std::fs::read_to_string(index).map_err(|e| FileError::io(index, &e))?;
    let corrupt = |reason: String| FileError::Corrupt {
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
pub fn map(path: &Path) -> Result<Mmap, FileError> {
    let file = File::open(path).map_err(|e| FileError::io(path, &e))?;
    let len = file.metadata().map_err(|e| FileError::io(path, &e))?.len();
    if len < 8 {
        return Err(FileError::Corrupt {
            path: path.to_path_buf(),
            reason: format!("{len} bytes is too short for a safetensors header"),
        });
    }
    // SAFETY: the map is read-only and lives no longer than the load; as with every
    // memory-mapped reader, a file truncated by another process while we read it is UB —
    // the same contract the safetensors and Hugging Face loaders have.
    unsafe { Mmap::map(&file) }.map_err(|e| FileError::io(path, &e))
}

/// Parses one mapped file, turning a safetensors error into one that names the tensor
/// where it can (a truncated file names the first tensor whose data is cut off).
pub fn parse<'a>(path: &Path, bytes: &'a [u8]) -> Result<SafeTensors<'a>, FileError> {
    SafeTensors::deserialize(bytes).map_err(|e| diagnose(path, bytes, e))
}

fn diagnose(path: &Path, bytes: &[u8], err: SafeTensorError) -> FileError {
    let path = path.to_path_buf();
    let len = bytes.len() as u64;
    let Some(head) = bytes.get(..8) else {
        return FileError::Corrupt {
            path,
            reason: format!("{len} bytes is too short for a safetensors header"),
        };
    };
    let mut le = [0u8; 8];
    le.copy_from_slice(head);
    let declared = u64::from_le_bytes(le);
    match err {
        SafeTensorError::InvalidHeaderLength if declared.saturating_add(8) > len => {
            return FileError::Truncated {
                path,
                tensor: None,
                needed: declared.saturating_add(8),
                len,
            }
        }
        SafeTensorError::MetadataIncompleteBuffer => {
            // The header parsed; find the tensors it places past the end of the file.
            let start = usize::try_from(declared)
                .unwrap_or(usize::MAX)
                .saturating_add(8)
                .min(bytes.len());
            let header: Option<BTreeMap<String, serde_json::Value>> = bytes
                .get(8..start)
                .and_then(|h| std::str::from_utf8(h).ok())
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
                return FileError::Truncated {
                    path,
                    tensor: first,
                    needed,
                    len,
                };
            }
            return FileError::Corrupt {
                path,
                reason: format!(
                    "the tensors end at byte {needed} but the file has {len} bytes (trailing data)"
                ),
            };
        }
        _ => {}
    }
    FileError::Corrupt {
        path,
        reason: err.to_string(),
    }
}

/// One tensor of a weights file: a safetensors view, or a GGUF tensor (its type and
/// bytes).
pub enum Tensor<'a> {
    St(TensorView<'a>),
    Gguf {
        info: crate::gguf::TensorInfo,
        bytes: &'a [u8],
    },
}

impl<'a> Tensor<'a> {
    /// The row-major shape (a GGUF tensor's `ne` reversed).
    pub fn shape(&self) -> Vec<usize> {
        match self {
            Tensor::St(v) => v.shape().to_vec(),
            Tensor::Gguf { info, .. } => info.shape(),
        }
    }

    /// The stored bytes when they are f32 (usable in place).
    pub fn f32_bytes(&self) -> Option<&'a [u8]> {
        match self {
            Tensor::St(v) if v.dtype() == Dtype::F32 => Some(v.data()),
            Tensor::Gguf { info, bytes } if info.ty == crate::gguf::GgmlType::F32 => Some(bytes),
            _ => None,
        }
    }

    /// The values as f32 (f16, bf16, f64 converted; GGUF blocks dequantized); `None` for a
    /// dtype archc does not read.
    pub fn to_f32(&self) -> Option<Vec<f32>> {
        match self {
            Tensor::St(v) => to_f32(v),
            Tensor::Gguf { info, bytes } => {
                Some(crate::gguf::dequantize(info.ty, bytes, info.numel()))
            }
        }
    }

    /// The ggml type the stored bytes are in, when generated kernels can read them as
    /// stored (`GgmlType::kernel_storage`): a GGUF tensor's type, or a safetensors F16 or
    /// BF16 tensor.
    pub fn stored_type(&self) -> Option<crate::gguf::GgmlType> {
        use crate::gguf::GgmlType;
        let ty = match self {
            Tensor::St(v) => match v.dtype() {
                Dtype::F16 => GgmlType::F16,
                Dtype::BF16 => GgmlType::BF16,
                _ => return None,
            },
            Tensor::Gguf { info, .. } => info.ty,
        };
        ty.kernel_storage().then_some(ty)
    }

    /// The stored bytes, whatever their type.
    pub fn raw_bytes(&self) -> &'a [u8] {
        match self {
            Tensor::St(v) => v.data(),
            Tensor::Gguf { bytes, .. } => bytes,
        }
    }

    pub fn dtype_name(&self) -> String {
        match self {
            Tensor::St(v) => dtype_name(v.dtype()),
            Tensor::Gguf { info, .. } => info.ty.name().to_string(),
        }
    }
}

/// All tensors of a set of files by name; a name in two shards keeps the first.
pub struct Files<'a> {
    by_name: HashMap<String, Tensor<'a>>,
}

impl<'a> Files<'a> {
    pub fn new(parsed: &[SafeTensors<'a>]) -> Files<'a> {
        let mut by_name = HashMap::new();
        for st in parsed {
            for (name, view) in st.tensors() {
                by_name.entry(name).or_insert(Tensor::St(view));
            }
        }
        Files { by_name }
    }

    /// The tensors of a GGUF file.
    pub fn from_gguf(g: &crate::gguf::Gguf<'a>) -> Files<'a> {
        let by_name = g
            .tensors
            .iter()
            .map(|t| {
                (
                    t.name.clone(),
                    Tensor::Gguf {
                        info: t.clone(),
                        bytes: g.bytes(t),
                    },
                )
            })
            .collect();
        Files { by_name }
    }

    pub fn get(&self, name: &str) -> Option<&Tensor<'a>> {
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
pub fn dtype_name(d: Dtype) -> String {
    format!("{d:?}")
}

/// Converts a tensor's data to f32: f32, f16, bf16 and f64 are accepted, anything else is
/// `None`.
pub fn to_f32(view: &TensorView<'_>) -> Option<Vec<f32>> {
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
            .map(|b| f64::from_le_bytes([b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7]]) as f32)
            .collect(),
        _ => return None,
    };
    Some(out)
}

/// IEEE half → single, exact (subnormals, infinities and NaN payloads included).
pub fn f16_to_f32(h: u16) -> f32 {
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

//! Weights file + the manifest's parameters and namings → one f32 pointer per parameter.
//!
//! The file (`.safetensors`, a directory holding `model.safetensors`, or a sharded
//! `model.safetensors.index.json`) is memory-mapped. Each naming of the manifest is tried
//! and the one under which the most parameters are found wins (a tie keeps the earlier
//! one), so a checkpoint with one tensor missing reports that tensor. f32 tensors stored in
//! canonical layout and 4-byte aligned are used in place from the map; f16, bf16, f64,
//! transposed and split tensors are converted into owned f32 memory. Every parameter the
//! manifest lists is required; a broken file is an error naming the tensor.

use std::collections::BTreeMap;
use std::path::Path;

use memmap2::Mmap;

use crate::error::RuntimeError;
use crate::gguf::GgmlType;
use crate::manifest::{Manifest, Naming, ParamSpec, Source};
use crate::safetensors_file as file;

/// The data of one parameter.
enum Data {
    /// `len` f32s inside one of `Weights::maps`.
    Mapped {
        ptr: *const f32,
        len: usize,
    },
    Owned(Vec<f32>),
    /// ggml blocks of the parameter's `storage` type, `len` bytes inside one of
    /// `Weights::maps` (a GGUF tensor used as stored).
    MappedBlocks {
        ptr: *const u8,
        len: usize,
    },
    /// ggml blocks of the parameter's `storage` type (quantized when loaded, or rows
    /// reordered).
    Blocks(Vec<u8>),
}

/// Every parameter of a manifest, in the order of `manifest.params`, as row-major f32.
pub struct Weights {
    /// Keeps `Data::Mapped` pointers valid.
    _maps: Vec<Mmap>,
    params: Vec<Data>,
    naming: String,
    /// Parameters the file lacks that the caller allowed to be absent (their data empty).
    missing: Vec<String>,
    /// Tensors of the file that no parameter read, sorted.
    unused: Vec<String>,
}

// SAFETY: the data is never written after construction; mapped pointers point into maps
// the struct owns, which are themselves `Send + Sync`.
unsafe impl Send for Weights {}
unsafe impl Sync for Weights {}

impl std::fmt::Debug for Weights {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mapped = self
            .params
            .iter()
            .filter(|d| matches!(d, Data::Mapped { .. }))
            .count();
        f.debug_struct("Weights")
            .field("naming", &self.naming)
            .field("params", &self.params.len())
            .field("mapped", &mapped)
            .finish()
    }
}

impl Weights {
    /// Reads the parameters of `manifest` from the weights at `path`.
    pub fn open(manifest: &Manifest, path: &Path) -> Result<Weights, RuntimeError> {
        Weights::open_with(manifest, path, &|_| false)
    }

    /// [`Weights::open`], except that a parameter for which `optional` holds may be absent
    /// from the file: its data is empty and [`Weights::missing`] lists it (a backbone-only
    /// checkpoint read for a spec with pretraining heads).
    pub fn open_with(
        manifest: &Manifest,
        path: &Path,
        optional: &dyn Fn(&str) -> bool,
    ) -> Result<Weights, RuntimeError> {
        let ((params, naming, missing, unused), maps) = open_files(path, |files| {
            let names: Vec<&str> = manifest.params.iter().map(|p| p.name.as_str()).collect();
            let (naming, sources) =
                detect(&manifest.namings, &names, &manifest.model, files, path)?;
            let mut used: std::collections::HashSet<String> = Default::default();
            let mut missing = Vec::new();
            let mut params = Vec::with_capacity(manifest.params.len());
            for (p, src) in manifest.params.iter().zip(sources) {
                match read(files, &naming, p, src) {
                    Ok(data) => {
                        if let Some(leaf) = pick(src, files) {
                            used.extend(leaf.names().iter().map(|n| n.to_string()));
                        }
                        params.push(data);
                    }
                    Err(RuntimeError::Missing { .. }) if optional(&p.name) => {
                        missing.push(p.name.clone());
                        params.push(Data::Owned(Vec::new()));
                    }
                    Err(e) => return Err(e),
                }
            }
            let mut unused: Vec<String> = files
                .names()
                .filter(|n| !used.contains(*n))
                .map(str::to_string)
                .collect();
            unused.sort();
            Ok((params, naming, missing, unused))
        })?;
        Ok(Weights {
            _maps: maps,
            params,
            naming,
            missing,
            unused,
        })
    }

    /// The optional parameters the file lacked ([`Weights::open_with`]).
    pub fn missing(&self) -> &[String] {
        &self.missing
    }

    /// The file's tensors no parameter read, sorted.
    pub fn unused(&self) -> &[String] {
        &self.unused
    }

    /// Deterministic random parameters for benchmarks: uniform in [-0.05, 0.05], except
    /// norm weights (names ending in `norm.weight`) at 1 and norm biases at 0.
    pub fn random(manifest: &Manifest, seed: u64) -> Result<Weights, RuntimeError> {
        let params = manifest
            .params
            .iter()
            .enumerate()
            .map(|(i, p)| {
                let n = numel(p)?;
                let data = if p.name.ends_with("norm.weight") {
                    vec![1.0; n]
                } else if p.name.ends_with("norm.bias") {
                    vec![0.0; n]
                } else {
                    let mut rng = SplitMix(seed ^ (i as u64).wrapping_mul(0xa076_1d64_78bd_642f));
                    (0..n).map(|_| rng.uniform() * 0.1 - 0.05).collect()
                };
                stored(p, data)
            })
            .collect::<Result<Vec<_>, RuntimeError>>()?;
        Ok(Weights {
            _maps: vec![],
            params,
            naming: format!("random(seed = {seed})"),
            missing: vec![],
            unused: vec![],
        })
    }

    /// Weights from canonical tensors (row-major f32 by parameter name); every parameter of
    /// `manifest` must be present with its element count. Other names are ignored.
    pub fn from_tensors(
        manifest: &Manifest,
        mut tensors: BTreeMap<String, Vec<f32>>,
    ) -> Result<Weights, RuntimeError> {
        let params = manifest
            .params
            .iter()
            .map(|p| {
                let data = tensors
                    .remove(&p.name)
                    .ok_or_else(|| RuntimeError::Missing {
                        tensor: p.name.clone(),
                        naming: "canonical".into(),
                        looked_for: vec![p.name.clone()],
                    })?;
                if data.len() != numel(p)? {
                    return Err(RuntimeError::Shape {
                        tensor: p.name.clone(),
                        source: p.name.clone(),
                        expected: p.shape.clone(),
                        found: vec![data.len()],
                    });
                }
                stored(p, data)
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Weights {
            _maps: vec![],
            params,
            naming: "canonical".into(),
            missing: vec![],
            unused: vec![],
        })
    }

    /// The base address of parameter `i` (of `manifest.params`): its f32s, or its blocks
    /// for a parameter stored quantized; null when out of range.
    pub fn ptr(&self, i: usize) -> *const f32 {
        match self.params.get(i) {
            Some(Data::Mapped { ptr, .. }) => *ptr,
            Some(Data::Owned(v)) => v.as_ptr(),
            Some(Data::MappedBlocks { ptr, .. }) => ptr.cast(),
            Some(Data::Blocks(b)) => b.as_ptr().cast(),
            None => std::ptr::null(),
        }
    }

    /// The data of parameter `i`; `None` for a parameter stored quantized
    /// ([`Weights::blocks`]).
    pub fn data(&self, i: usize) -> Option<&[f32]> {
        Some(match self.params.get(i)? {
            // SAFETY: `ptr` is 4-byte aligned and points at `len` f32s of a map `self` owns.
            Data::Mapped { ptr, len } => unsafe { std::slice::from_raw_parts(*ptr, *len) },
            Data::Owned(v) => v,
            Data::MappedBlocks { .. } | Data::Blocks(_) => return None,
        })
    }

    /// The blocks of parameter `i` when it is stored quantized.
    pub fn blocks(&self, i: usize) -> Option<&[u8]> {
        Some(match self.params.get(i)? {
            // SAFETY: `ptr` points at `len` bytes of a map `self` owns.
            Data::MappedBlocks { ptr, len } => unsafe { std::slice::from_raw_parts(*ptr, *len) },
            Data::Blocks(b) => b,
            Data::Mapped { .. } | Data::Owned(_) => return None,
        })
    }

    /// Each parameter of `m`'s data as the kernels read it — its f32s' bytes, or its
    /// blocks for a parameter with a `storage` type — checked against the manifest: one
    /// entry per parameter, each of the size its shape and storage say. What a CPU session
    /// checks and a device session uploads.
    pub fn kernel_bytes(&self, m: &Manifest) -> Result<Vec<&[u8]>, RuntimeError> {
        if self.len() != m.params.len() {
            return Err(RuntimeError::WeightsMismatch(format!(
                "{} parameters for a package of {}",
                self.len(),
                m.params.len()
            )));
        }
        m.params
            .iter()
            .enumerate()
            .map(|(i, p)| {
                if p.storage.is_some() {
                    let blocks = self.blocks(i).unwrap_or(&[]);
                    if Some(blocks.len()) != p.bytes() {
                        return Err(RuntimeError::WeightsMismatch(format!(
                            "parameter `{}` holds {} bytes, expected {:?} blocks of shape {:?}",
                            p.name,
                            blocks.len(),
                            p.storage,
                            p.shape
                        )));
                    }
                    return Ok(blocks);
                }
                let data = self.data(i).unwrap_or(&[]);
                if Some(data.len()) != p.numel() {
                    return Err(RuntimeError::WeightsMismatch(format!(
                        "parameter `{}` has {} values, expected shape {:?}",
                        p.name,
                        data.len(),
                        p.shape
                    )));
                }
                // SAFETY: f32s viewed as their bytes.
                Ok(unsafe {
                    std::slice::from_raw_parts(data.as_ptr().cast(), std::mem::size_of_val(data))
                })
            })
            .collect()
    }

    /// Bytes the parameters occupy as the kernels read them (mapped or owned).
    pub fn bytes(&self) -> usize {
        (0..self.params.len())
            .map(|i| {
                self.blocks(i)
                    .map_or_else(|| self.data(i).map_or(0, |d| d.len() * 4), <[u8]>::len)
            })
            .sum()
    }

    /// Overwrites parameter `i` with `data` (its element count); a mapped parameter
    /// becomes an owned copy.
    pub fn set(&mut self, i: usize, data: &[f32]) -> Result<(), RuntimeError> {
        let have = self.data(i).map(<[f32]>::len);
        match (have, self.params.get_mut(i)) {
            (Some(n), Some(slot)) if n == data.len() => {
                match slot {
                    Data::Owned(v) => v.copy_from_slice(data),
                    _ => *slot = Data::Owned(data.to_vec()),
                }
                Ok(())
            }
            (Some(n), _) => Err(RuntimeError::State(format!(
                "parameter {i} holds {n} values, given {}",
                data.len()
            ))),
            (None, Some(Data::MappedBlocks { .. } | Data::Blocks(_))) => Err(RuntimeError::State(format!(
                "parameter {i} is stored as quantized blocks and cannot be overwritten with f32 values"
            ))),
            _ => Err(RuntimeError::State(format!("no parameter {i}"))),
        }
    }

    /// Whether parameter `i` is used in place from the memory map.
    pub fn is_mapped(&self, i: usize) -> bool {
        matches!(self.params.get(i), Some(Data::Mapped { .. }))
    }

    /// Number of parameters.
    pub fn len(&self) -> usize {
        self.params.len()
    }

    pub fn is_empty(&self) -> bool {
        self.params.is_empty()
    }

    /// The naming the file was read under: a `label` of the manifest's namings.
    pub fn naming(&self) -> &str {
        &self.naming
    }
}

fn numel(p: &ParamSpec) -> Result<usize, RuntimeError> {
    p.numel().ok_or_else(|| RuntimeError::Shape {
        tensor: p.name.clone(),
        source: p.name.clone(),
        expected: p.shape.clone(),
        found: vec![],
    })
}

/// Maps the weights at `path` (safetensors, a directory or sharded index, or a GGUF file)
/// and runs `f` over their tensors; returns what `f` made and the maps, which pointers into
/// the tensors need alive.
fn open_files<T>(
    path: &Path,
    f: impl FnOnce(&file::Files<'_>) -> Result<T, RuntimeError>,
) -> Result<(T, Vec<Mmap>), RuntimeError> {
    let paths = file::resolve(path)?;
    let maps = paths
        .iter()
        .map(|p| file::map(p))
        .collect::<Result<Vec<_>, _>>()?;
    let made = {
        // A GGUF file (llama.cpp's), or safetensors.
        let gguf = match (paths.as_slice(), maps.first()) {
            ([p], Some(m)) if crate::gguf::is_gguf(m) => {
                Some(crate::gguf::Gguf::parse(m).map_err(|e| RuntimeError::Io {
                    path: p.clone(),
                    error: format!("not a readable GGUF file: {e}"),
                })?)
            }
            _ => None,
        };
        let parsed = match gguf {
            Some(_) => Vec::new(),
            None => paths
                .iter()
                .zip(&maps)
                .map(|(p, m)| file::parse(p, m))
                .collect::<Result<Vec<_>, _>>()?,
        };
        let files = match &gguf {
            Some(g) => file::Files::from_gguf(g),
            None => file::Files::new(&parsed),
        };
        f(&files)?
    };
    Ok((made, maps))
}

/// The type each of `params` is stored in at `path` under the naming the loader would
/// pick, for tensors generated kernels can read as stored (`Tensor::stored_type`: a GGUF
/// file's F16, BF16 and block types, a safetensors file's F16 and BF16) whose source
/// reaches the canonical layout by whole rows (as stored, a row range, RoPE row order —
/// what `read_blocks` maps without converting). What a package built for these weights
/// should keep in that type.
pub fn stored_types(
    namings: &[Naming],
    params: &[&str],
    path: &Path,
) -> Result<BTreeMap<String, GgmlType>, RuntimeError> {
    let (types, _maps) = open_files(path, |files| {
        let (_, sources) = detect(namings, params, "", files, path)?;
        let mut out = BTreeMap::new();
        for (param, src) in params.iter().zip(sources) {
            let name = match pick(src, files) {
                Some(
                    Source::Plain { name, .. }
                    | Source::RopeRows { name, .. }
                    | Source::Rows {
                        name,
                        transpose: false,
                        ..
                    },
                ) => name,
                _ => continue,
            };
            if let Some(ty) = files.get(name).and_then(|t| t.stored_type()) {
                out.insert(param.to_string(), ty);
            }
        }
        Ok(out)
    })?;
    Ok(types)
}

/// Canonical f32 values of `p` as the parameter stores them (quantized for a
/// `storage` type).
fn stored(p: &ParamSpec, data: Vec<f32>) -> Result<Data, RuntimeError> {
    match storage(p)? {
        None => Ok(Data::Owned(data)),
        Some(ty) => quantized(p, ty, &data),
    }
}

static NOTHING: Source = Source::Nothing;

/// The naming under which the most parameters are present (a tie keeps the earlier one),
/// with each parameter's source under it.
fn detect<'m>(
    namings: &'m [Naming],
    params: &[&str],
    model: &str,
    files: &file::Files<'_>,
    path: &Path,
) -> Result<(String, Vec<&'m Source>), RuntimeError> {
    let mut best: Option<(usize, &str, Vec<&Source>)> = None;
    for naming in namings {
        let sources: Vec<&Source> = params
            .iter()
            .map(|p| naming.sources.get(*p).unwrap_or(&NOTHING))
            .collect();
        let found = sources
            .iter()
            .filter(|s| s.names().iter().any(|n| files.contains(n)))
            .count();
        let better = match &best {
            None => true,
            Some(b) => found > b.0,
        };
        if better {
            best = Some((found, &naming.label, sources));
        }
    }
    match best {
        Some((found, label, sources)) if found > 0 || params.is_empty() => {
            Ok((label.to_string(), sources))
        }
        _ if params.is_empty() => Ok(("canonical".into(), vec![])),
        _ => {
            let mut sample: Vec<String> = files.names().map(str::to_string).collect();
            sample.sort();
            sample.truncate(4);
            Err(RuntimeError::UnknownNaming {
                path: path.to_path_buf(),
                model: model.to_string(),
                tried: namings.iter().map(|n| n.label.clone()).collect(),
                sample,
            })
        }
    }
}

/// The source to read: `Any` resolved to its first alternative present in the files.
fn pick<'s>(src: &'s Source, files: &file::Files<'_>) -> Option<&'s Source> {
    match src {
        Source::Nothing => None,
        Source::Any(alts) => alts.iter().find_map(|a| pick(a, files)),
        leaf => leaf
            .names()
            .iter()
            .all(|n| files.contains(n))
            .then_some(leaf),
    }
}

/// Reads parameter `p` through `src`: as f32, or as blocks of its storage type — the
/// file's blocks when it holds that type (in place when stored as the parameter is,
/// rows reordered or cut otherwise), else its values quantized.
fn read(
    files: &file::Files<'_>,
    naming: &str,
    p: &ParamSpec,
    src: &Source,
) -> Result<Data, RuntimeError> {
    let Some(ty) = storage(p)? else {
        return read_f32(files, naming, p, src);
    };
    if let Some(data) = read_blocks(files, p, src, ty)? {
        return Ok(data);
    }
    let values = match read_f32(files, naming, p, src)? {
        Data::Owned(v) => v,
        mapped => {
            let n = numel(p)?;
            match mapped {
                // SAFETY: as `Weights::data`: `len` f32s of a live map.
                Data::Mapped { ptr, len } if len == n => {
                    unsafe { std::slice::from_raw_parts(ptr, len) }.to_vec()
                }
                _ => return Err(storage_error(p, "values of another size")),
            }
        }
    };
    quantized(p, ty, &values)
}

/// The block type parameter `p` is stored in (`None`: f32).
fn storage(p: &ParamSpec) -> Result<Option<GgmlType>, RuntimeError> {
    p.storage_type().map_err(RuntimeError::State)
}

fn storage_error(p: &ParamSpec, what: &str) -> RuntimeError {
    RuntimeError::State(format!(
        "parameter `{}` (shape {:?}, stored as {}): {what}",
        p.name,
        p.shape,
        p.storage.as_deref().unwrap_or("f32")
    ))
}

/// `values` (the canonical f32 data of `p`) as blocks of `ty`.
fn quantized(p: &ParamSpec, ty: GgmlType, values: &[f32]) -> Result<Data, RuntimeError> {
    let row = p.shape.last().copied().unwrap_or(1);
    if !row.is_multiple_of(ty.block().0) {
        return Err(storage_error(p, "rows are not whole blocks"));
    }
    crate::gguf::quantize(ty, values)
        .map(Data::Blocks)
        .ok_or_else(|| storage_error(p, "cannot be quantized"))
}

/// The file's own blocks (or F16/BF16 values) for `p` when its tensor is of type `ty` and reaches the canonical
/// layout by whole rows (as stored, a row range, llama.cpp's RoPE row order); `None` when
/// the values must be converted.
fn read_blocks(
    files: &file::Files<'_>,
    p: &ParamSpec,
    src: &Source,
    ty: GgmlType,
) -> Result<Option<Data>, RuntimeError> {
    let Some(leaf) = pick(src, files) else {
        return Ok(None);
    };
    let name = match leaf {
        Source::Plain { name, .. }
        | Source::Rows {
            name,
            transpose: false,
            ..
        }
        | Source::RopeRows { name, .. } => name,
        _ => return Ok(None),
    };
    let Some(tensor) = files.get(name) else {
        return Ok(None);
    };
    let bytes = tensor.raw_bytes();
    let (Some(&rows), Some(want)) = (p.shape.first(), p.bytes()) else {
        return Ok(None);
    };
    if tensor.stored_type() != Some(ty) || p.shape.len() != 2 {
        return Ok(None);
    }
    let found = tensor.shape();
    let row_bytes = want / rows.max(1);
    let data = match leaf {
        Source::Plain { .. } if squeeze(&found) == squeeze(&p.shape) && bytes.len() == want => {
            Data::MappedBlocks {
                ptr: bytes.as_ptr(),
                len: want,
            }
        }
        Source::Rows { start, len, .. }
            if found.len() == 2 && found[1] == p.shape[1] && *len == rows =>
        {
            let end = start.checked_add(*len).filter(|&e| e <= found[0]);
            match end {
                Some(end) if bytes.len() == found[0] * row_bytes => {
                    Data::Blocks(bytes[start * row_bytes..end * row_bytes].to_vec())
                }
                _ => return Ok(None),
            }
        }
        Source::RopeRows { heads, .. } if found == p.shape && bytes.len() == want => {
            match crate::manifest::rope_rows_bytes(bytes, rows, *heads, false) {
                Some(b) => Data::Blocks(b),
                None => return Ok(None),
            }
        }
        _ => return Ok(None),
    };
    Ok(Some(data))
}

/// Reads parameter `p` through `src` as f32.
fn read_f32(
    files: &file::Files<'_>,
    naming: &str,
    p: &ParamSpec,
    src: &Source,
) -> Result<Data, RuntimeError> {
    let missing = || RuntimeError::Missing {
        tensor: p.name.clone(),
        naming: naming.to_string(),
        looked_for: src.names().iter().map(|s| s.to_string()).collect(),
    };
    let leaf = pick(src, files).ok_or_else(missing)?;
    let (name, canon) = match leaf {
        Source::Plain { name, shape }
        | Source::Transpose { name, shape }
        | Source::Rows { name, shape, .. }
        | Source::RopeRows { name, shape, .. }
        | Source::NegLog { name, shape } => (name.as_str(), shape.as_slice()),
        Source::Any(_) | Source::Nothing => return Err(missing()),
    };
    let view = files.get(name).ok_or_else(missing)?;
    let found = view.shape();
    let shape_err = |expected: Vec<usize>| RuntimeError::Shape {
        tensor: p.name.clone(),
        source: name.to_string(),
        expected,
        found: found.clone(),
    };
    let want = numel(p)?;
    let data = match leaf {
        Source::Plain { .. } => {
            if squeeze(&found) != squeeze(canon) {
                return Err(shape_err(canon.to_vec()));
            }
            if let Some(bytes) = view
                .f32_bytes()
                .filter(|b| (b.as_ptr() as usize).is_multiple_of(4))
            {
                if bytes.len() != want * 4 {
                    return Err(shape_err(p.shape.clone()));
                }
                return Ok(Data::Mapped {
                    ptr: bytes.as_ptr().cast(),
                    len: want,
                });
            }
            convert(view, p, name)?
        }
        Source::NegLog { .. } => {
            if squeeze(&found) != squeeze(canon) {
                return Err(shape_err(canon.to_vec()));
            }
            convert(view, p, name)?.iter().map(|&x| (-x).ln()).collect()
        }
        Source::RopeRows { heads, .. } => {
            if squeeze(&found) != squeeze(canon) || canon.is_empty() {
                return Err(shape_err(canon.to_vec()));
            }
            let data = convert(view, p, name)?;
            crate::manifest::rope_rows(&data, canon[0], *heads, false)
                .ok_or_else(|| shape_err(canon.to_vec()))?
        }
        Source::Transpose { .. } => {
            let [a, b] = *canon else {
                return Err(shape_err(canon.to_vec()));
            };
            if found != [b, a] {
                return Err(shape_err(vec![b, a]));
            }
            transpose(&convert(view, p, name)?, b, a)
        }
        Source::Rows {
            transpose: t,
            start,
            len,
            ..
        } => {
            // The stored tensor, as rows × rest after the optional transpose.
            let (rows, rest) = match (t, found.as_slice()) {
                (true, &[r, c]) => (c, vec![r]),
                (true, _) => return Err(shape_err(canon.iter().rev().copied().collect())),
                (false, [r, rest @ ..]) => (*r, rest.to_vec()),
                (false, []) => return Err(shape_err(canon.to_vec())),
            };
            let end = start.checked_add(*len).unwrap_or(usize::MAX);
            let tail = canon.get(1..).unwrap_or(&[]);
            let fits = canon.first() == Some(len) && tail == rest && end <= rows;
            if !fits {
                let mut expected = tail.to_vec();
                if *t {
                    expected.push(end);
                } else {
                    expected.insert(0, end);
                }
                return Err(shape_err(expected));
            }
            let mut data = convert(view, p, name)?;
            if *t {
                data = transpose(&data, found[0], found[1]);
            }
            let row: usize = rest.iter().product();
            data[start * row..end * row].to_vec()
        }
        Source::Any(_) | Source::Nothing => return Err(missing()),
    };
    if data.len() != want {
        return Err(shape_err(p.shape.clone()));
    }
    Ok(Data::Owned(data))
}

fn convert(view: &file::Tensor<'_>, p: &ParamSpec, source: &str) -> Result<Vec<f32>, RuntimeError> {
    view.to_f32().ok_or_else(|| RuntimeError::Dtype {
        tensor: p.name.clone(),
        source: source.to_string(),
        dtype: view.dtype_name(),
    })
}

fn squeeze(shape: &[usize]) -> Vec<usize> {
    shape.iter().copied().filter(|&d| d != 1).collect()
}

/// [a, b] row-major → [b, a] row-major, in cache-sized tiles.
fn transpose(data: &[f32], a: usize, b: usize) -> Vec<f32> {
    const TILE: usize = 32;
    let mut out = vec![0.0; data.len()];
    for i0 in (0..a).step_by(TILE) {
        for j0 in (0..b).step_by(TILE) {
            for i in i0..(i0 + TILE).min(a) {
                for j in j0..(j0 + TILE).min(b) {
                    out[j * a + i] = data[i * b + j];
                }
            }
        }
    }
    out
}

/// SplitMix64: small, fast, and the same numbers on every machine.
struct SplitMix(u64);

impl SplitMix {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in [0, 1), 24 bits.
    fn uniform(&mut self) -> f32 {
        (self.next() >> 40) as f32 * (1.0 / (1u64 << 24) as f32)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transpose_tiles_agree_with_the_definition() {
        let (a, b) = (37, 70);
        let data: Vec<f32> = (0..a * b).map(|x| x as f32).collect();
        let t = transpose(&data, a, b);
        for i in 0..a {
            for j in 0..b {
                assert_eq!(t[j * a + i], data[i * b + j]);
            }
        }
    }

    #[test]
    fn random_numbers_stay_in_range() {
        let mut r = SplitMix(7);
        for _ in 0..10_000 {
            let x = r.uniform() * 0.1 - 0.05;
            assert!((-0.05..=0.05).contains(&x));
        }
    }
}

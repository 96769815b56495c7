//! GGUF files (llama.cpp's format, versions 2 and 3): the header, the metadata key/values,
//! the tensor directory, and every tensor type archc reads dequantized to f32 — F32, F16,
//! BF16, Q8_0, Q4_0, Q4_1, Q5_0, Q5_1, Q4_K, Q5_K, Q6_K — with the arithmetic of ggml's
//! `dequantize_row_*` (and gguf-py's `dequantize`) in the same order, so the results agree
//! bit for bit.
//!
//! The reader trusts nothing in the file: every count and length is checked against the
//! bytes that remain before anything is allocated, shapes are checked for overflow, offsets
//! against the data section, strings for UTF-8. A hostile file is a [`GgufError`], never a
//! panic or an allocation larger than the file.
//!
//! Layout (little-endian): magic `GGUF`, version u32, tensor count u64, metadata count u64;
//! metadata as (string key, u32 type, value); tensor infos as (string name, u32 n_dims,
//! u64 ne[n_dims] — fastest-varying first —, u32 type, u64 offset); then, aligned to
//! `general.alignment` (default 32), the data section the offsets count from.

use std::fmt;

/// Why a GGUF file cannot be read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GgufError(pub String);

impl fmt::Display for GgufError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for GgufError {}

fn err<T>(msg: impl Into<String>) -> Result<T, GgufError> {
    Err(GgufError(msg.into()))
}

/// The four bytes every GGUF file starts with.
pub const MAGIC: &[u8; 4] = b"GGUF";

/// Whether `bytes` start like a GGUF file.
pub fn is_gguf(bytes: &[u8]) -> bool {
    bytes.starts_with(MAGIC)
}

/// A metadata value.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    U8(u8),
    I8(i8),
    U16(u16),
    I16(i16),
    U32(u32),
    I32(i32),
    U64(u64),
    I64(i64),
    F32(f32),
    F64(f64),
    Bool(bool),
    Str(String),
    Array(Vec<Value>),
}

impl Value {
    /// An integer value of any width, if it is one (and fits).
    pub fn as_u64(&self) -> Option<u64> {
        match *self {
            Value::U8(x) => Some(x.into()),
            Value::U16(x) => Some(x.into()),
            Value::U32(x) => Some(x.into()),
            Value::U64(x) => Some(x),
            Value::I8(x) => u64::try_from(x).ok(),
            Value::I16(x) => u64::try_from(x).ok(),
            Value::I32(x) => u64::try_from(x).ok(),
            Value::I64(x) => u64::try_from(x).ok(),
            _ => None,
        }
    }

    pub fn as_f64(&self) -> Option<f64> {
        match *self {
            Value::F32(x) => Some(x.into()),
            Value::F64(x) => Some(x),
            _ => self.as_u64().map(|x| x as f64),
        }
    }

    pub fn as_str(&self) -> Option<&str> {
        match self {
            Value::Str(s) => Some(s),
            _ => None,
        }
    }

    pub fn as_array(&self) -> Option<&[Value]> {
        match self {
            Value::Array(a) => Some(a),
            _ => None,
        }
    }
}

/// The tensor types archc reads (ggml's type ids; ggml's names).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[allow(non_camel_case_types)]
pub enum GgmlType {
    F32,
    F16,
    Q4_0,
    Q4_1,
    Q5_0,
    Q5_1,
    Q8_0,
    Q4_K,
    Q5_K,
    Q6_K,
    BF16,
}

/// Every type archc reads.
pub const ALL: [GgmlType; 11] = [
    GgmlType::F32,
    GgmlType::F16,
    GgmlType::Q4_0,
    GgmlType::Q4_1,
    GgmlType::Q5_0,
    GgmlType::Q5_1,
    GgmlType::Q8_0,
    GgmlType::Q4_K,
    GgmlType::Q5_K,
    GgmlType::Q6_K,
    GgmlType::BF16,
];

/// Super-block size of the K-quants.
pub const QK_K: usize = 256;

impl GgmlType {
    pub fn from_id(id: u32) -> Option<GgmlType> {
        Some(match id {
            0 => GgmlType::F32,
            1 => GgmlType::F16,
            2 => GgmlType::Q4_0,
            3 => GgmlType::Q4_1,
            6 => GgmlType::Q5_0,
            7 => GgmlType::Q5_1,
            8 => GgmlType::Q8_0,
            12 => GgmlType::Q4_K,
            13 => GgmlType::Q5_K,
            14 => GgmlType::Q6_K,
            30 => GgmlType::BF16,
            _ => return None,
        })
    }

    pub fn id(self) -> u32 {
        match self {
            GgmlType::F32 => 0,
            GgmlType::F16 => 1,
            GgmlType::Q4_0 => 2,
            GgmlType::Q4_1 => 3,
            GgmlType::Q5_0 => 6,
            GgmlType::Q5_1 => 7,
            GgmlType::Q8_0 => 8,
            GgmlType::Q4_K => 12,
            GgmlType::Q5_K => 13,
            GgmlType::Q6_K => 14,
            GgmlType::BF16 => 30,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            GgmlType::F32 => "F32",
            GgmlType::F16 => "F16",
            GgmlType::Q4_0 => "Q4_0",
            GgmlType::Q4_1 => "Q4_1",
            GgmlType::Q5_0 => "Q5_0",
            GgmlType::Q5_1 => "Q5_1",
            GgmlType::Q8_0 => "Q8_0",
            GgmlType::Q4_K => "Q4_K",
            GgmlType::Q5_K => "Q5_K",
            GgmlType::Q6_K => "Q6_K",
            GgmlType::BF16 => "BF16",
        }
    }

    /// The type named `name` (ggml's name, any case).
    pub fn from_name(name: &str) -> Option<GgmlType> {
        ALL.iter()
            .copied()
            .find(|t| t.name().eq_ignore_ascii_case(name))
    }

    /// Whether generated kernels read weights of this type as they are stored
    /// (`ParamSpec::storage`); other types are converted to f32 when loaded.
    pub fn kernel_storage(self) -> bool {
        self != GgmlType::F32
    }

    /// (values, bytes) of the unit generated kernels step over: the block, or 32 values
    /// of a type without blocks (F16, BF16: 64 bytes), so rows of kernel storage are
    /// whole vectors.
    pub fn kernel_block(self) -> (usize, usize) {
        match self.block() {
            (1, bytes) => (32, 32 * bytes),
            b => b,
        }
    }

    /// (values per block, bytes per block).
    pub fn block(self) -> (usize, usize) {
        match self {
            GgmlType::F32 => (1, 4),
            GgmlType::F16 | GgmlType::BF16 => (1, 2),
            GgmlType::Q4_0 => (32, 18),
            GgmlType::Q4_1 => (32, 20),
            GgmlType::Q5_0 => (32, 22),
            GgmlType::Q5_1 => (32, 24),
            GgmlType::Q8_0 => (32, 34),
            GgmlType::Q4_K => (QK_K, 144),
            GgmlType::Q5_K => (QK_K, 176),
            GgmlType::Q6_K => (QK_K, 210),
        }
    }
}

/// The name ggml gives a type id, for errors about types archc does not read.
fn type_name(id: u32) -> String {
    let known = [
        (9, "Q8_1"),
        (10, "Q2_K"),
        (11, "Q3_K"),
        (15, "Q8_K"),
        (16, "IQ2_XXS"),
        (17, "IQ2_XS"),
        (18, "IQ3_XXS"),
        (19, "IQ1_S"),
        (20, "IQ4_NL"),
        (21, "IQ3_S"),
        (22, "IQ2_S"),
        (23, "IQ4_XS"),
        (24, "I8"),
        (25, "I16"),
        (26, "I32"),
        (27, "I64"),
        (28, "F64"),
        (29, "IQ1_M"),
        (34, "TQ1_0"),
        (35, "TQ2_0"),
        (39, "MXFP4"),
    ];
    match known.iter().find(|(i, _)| *i == id) {
        Some((_, n)) => format!("{n} (type {id})"),
        None => format!("type {id}"),
    }
}

/// One tensor of the directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TensorInfo {
    pub name: String,
    /// ggml's `ne`: the fastest-varying dimension first.
    pub ne: Vec<u64>,
    pub ty: GgmlType,
    /// Byte offset of the data within the data section.
    pub offset: u64,
    /// Bytes of data.
    pub bytes: u64,
}

impl TensorInfo {
    /// The row-major shape (`ne` reversed): a torch weight [out, in] is stored `ne = [in, out]`.
    pub fn shape(&self) -> Vec<usize> {
        self.ne.iter().rev().map(|&d| d as usize).collect()
    }

    pub fn numel(&self) -> usize {
        self.ne.iter().product::<u64>() as usize
    }
}

/// A parsed GGUF file over its bytes.
#[derive(Debug)]
pub struct Gguf<'a> {
    pub version: u32,
    pub metadata: Vec<(String, Value)>,
    pub tensors: Vec<TensorInfo>,
    pub alignment: u64,
    /// The data section.
    data: &'a [u8],
}

/// Most dimensions a ggml tensor has.
const MAX_DIMS: u32 = 4;
/// Longest key or string accepted (1 GiB; the file must hold it anyway).
const MAX_STRING: u64 = 1 << 30;
/// Deepest nesting of arrays.
const MAX_DEPTH: u32 = 4;

struct Reader<'a> {
    bytes: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: u64, what: &str) -> Result<&'a [u8], GgufError> {
        let left = (self.bytes.len() - self.pos) as u64;
        if n > left {
            return err(format!(
                "the file ends inside {what} (at byte {}: {n} bytes needed, {left} left)",
                self.pos
            ));
        }
        let s = &self.bytes[self.pos..self.pos + n as usize];
        self.pos += n as usize;
        Ok(s)
    }

    fn array<const N: usize>(&mut self, what: &str) -> Result<[u8; N], GgufError> {
        let s = self.take(N as u64, what)?;
        let mut a = [0u8; N];
        a.copy_from_slice(s);
        Ok(a)
    }

    fn u32(&mut self, what: &str) -> Result<u32, GgufError> {
        Ok(u32::from_le_bytes(self.array(what)?))
    }

    fn u64(&mut self, what: &str) -> Result<u64, GgufError> {
        Ok(u64::from_le_bytes(self.array(what)?))
    }

    fn left(&self) -> u64 {
        (self.bytes.len() - self.pos) as u64
    }

    fn string(&mut self, what: &str) -> Result<String, GgufError> {
        let n = self.u64(what)?;
        if n > MAX_STRING {
            return err(format!("{what} claims {n} bytes"));
        }
        let s = self.take(n, what)?;
        match std::str::from_utf8(s) {
            Ok(s) => Ok(s.to_string()),
            Err(_) => err(format!(
                "{what} at byte {} is not UTF-8",
                self.pos - s.len()
            )),
        }
    }

    fn value(&mut self, ty: u32, what: &str, depth: u32) -> Result<Value, GgufError> {
        Ok(match ty {
            0 => Value::U8(self.array::<1>(what)?[0]),
            1 => Value::I8(self.array::<1>(what)?[0] as i8),
            2 => Value::U16(u16::from_le_bytes(self.array(what)?)),
            3 => Value::I16(i16::from_le_bytes(self.array(what)?)),
            4 => Value::U32(self.u32(what)?),
            5 => Value::I32(i32::from_le_bytes(self.array(what)?)),
            6 => Value::F32(f32::from_le_bytes(self.array(what)?)),
            7 => match self.array::<1>(what)?[0] {
                0 => Value::Bool(false),
                1 => Value::Bool(true),
                b => return err(format!("{what}: a bool holds {b}")),
            },
            8 => Value::Str(self.string(what)?),
            9 => {
                if depth >= MAX_DEPTH {
                    return err(format!("{what}: arrays nested deeper than {MAX_DEPTH}"));
                }
                let ety = self.u32(what)?;
                let n = self.u64(what)?;
                // Every element takes at least one byte (a string eight): a count the
                // rest of the file cannot hold is an error before anything is allocated.
                let least = match ety {
                    0 | 1 | 7 => 1,
                    2 | 3 => 2,
                    4..=6 => 4,
                    8 | 10..=12 => 8,
                    9 => 12,
                    t => return err(format!("{what}: unknown array element type {t}")),
                };
                if n.checked_mul(least).is_none_or(|b| b > self.left()) {
                    return err(format!(
                        "{what}: an array of {n} elements does not fit in the {} bytes left",
                        self.left()
                    ));
                }
                let mut v = Vec::with_capacity(n as usize);
                for _ in 0..n {
                    v.push(self.value(ety, what, depth + 1)?);
                }
                Value::Array(v)
            }
            10 => Value::U64(self.u64(what)?),
            11 => Value::I64(i64::from_le_bytes(self.array(what)?)),
            12 => Value::F64(f64::from_le_bytes(self.array(what)?)),
            t => return err(format!("{what}: unknown value type {t}")),
        })
    }
}

impl<'a> Gguf<'a> {
    /// Parses the header, metadata and tensor directory of `bytes` and checks every
    /// tensor's extent against the data section.
    pub fn parse(bytes: &'a [u8]) -> Result<Gguf<'a>, GgufError> {
        let mut r = Reader { bytes, pos: 0 };
        if r.take(4, "the magic")? != MAGIC {
            return err("not a GGUF file (it does not start with `GGUF`)");
        }
        let version = r.u32("the version")?;
        if !(2..=3).contains(&version) {
            return err(format!(
                "GGUF version {version} (archc reads versions 2 and 3)"
            ));
        }
        let n_tensors = r.u64("the tensor count")?;
        let n_kv = r.u64("the metadata count")?;
        // A key/value takes at least 8 + 4 + 1 bytes, a tensor info 8 + 4 + 4 + 8.
        if n_kv.checked_mul(13).is_none_or(|b| b > r.left()) {
            return err(format!("{n_kv} metadata entries cannot fit in the file"));
        }
        if n_tensors.checked_mul(24).is_none_or(|b| b > r.left()) {
            return err(format!("{n_tensors} tensors cannot fit in the file"));
        }
        let mut metadata = Vec::with_capacity(n_kv as usize);
        for i in 0..n_kv {
            let key = r.string(&format!("metadata key {i}"))?;
            let ty = r.u32(&format!("the type of `{key}`"))?;
            let v = r.value(ty, &format!("metadata `{key}`"), 0)?;
            metadata.push((key, v));
        }
        let alignment = match metadata.iter().find(|(k, _)| k == "general.alignment") {
            Some((_, v)) => match v.as_u64() {
                Some(a) if a > 0 && a.is_power_of_two() && a <= 1 << 16 => a,
                _ => return err(format!("general.alignment is {v:?}, not a power of two")),
            },
            None => 32,
        };
        let mut infos = Vec::with_capacity(n_tensors as usize);
        for i in 0..n_tensors {
            let name = r.string(&format!("the name of tensor {i}"))?;
            let what = format!("tensor `{name}`");
            let n_dims = r.u32(&what)?;
            if n_dims == 0 || n_dims > MAX_DIMS {
                return err(format!("{what} has {n_dims} dimensions (1 to {MAX_DIMS})"));
            }
            let mut ne = Vec::with_capacity(n_dims as usize);
            for _ in 0..n_dims {
                ne.push(r.u64(&what)?);
            }
            let id = r.u32(&what)?;
            let offset = r.u64(&what)?;
            let ty = GgmlType::from_id(id).ok_or_else(|| {
                GgufError(format!(
                    "{what} has tensor type {}, which archc does not read (F32, F16, BF16, Q8_0, Q4_0, Q4_1, Q5_0, Q5_1, Q4_K, Q5_K, Q6_K)",
                    type_name(id)
                ))
            })?;
            let numel = ne
                .iter()
                .try_fold(1u64, |a, &d| a.checked_mul(d))
                .filter(|&n| n > 0 && n <= 1 << 40)
                .ok_or_else(|| GgufError(format!("{what} has shape {ne:?}")))?;
            let (per, size) = ty.block();
            if ne[0] % per as u64 != 0 {
                return err(format!(
                    "{what}: rows of {} values are not whole {} blocks of {per}",
                    ne[0],
                    ty.name()
                ));
            }
            let bytes = numel / per as u64 * size as u64;
            if offset % alignment != 0 {
                return err(format!(
                    "{what}: offset {offset} is not aligned to {alignment}"
                ));
            }
            infos.push(TensorInfo {
                name,
                ne,
                ty,
                offset,
                bytes,
            });
        }
        let start = (r.pos as u64).div_ceil(alignment) * alignment;
        let data = if start as usize <= bytes.len() {
            &bytes[start as usize..]
        } else if infos.is_empty() {
            &bytes[bytes.len()..]
        } else {
            return err("the file ends before its data section");
        };
        for t in &infos {
            let end = t.offset.checked_add(t.bytes);
            if end.is_none_or(|e| e > data.len() as u64) {
                return err(format!(
                    "tensor `{}` ({} bytes at offset {}) runs past the end of the file (the data section has {} bytes)",
                    t.name,
                    t.bytes,
                    t.offset,
                    data.len()
                ));
            }
        }
        let mut names: Vec<&str> = infos.iter().map(|t| t.name.as_str()).collect();
        names.sort_unstable();
        if let Some(w) = names.windows(2).find(|w| w[0] == w[1]) {
            return err(format!("tensor `{}` appears twice", w[0]));
        }
        Ok(Gguf {
            version,
            metadata,
            tensors: infos,
            alignment,
            data,
        })
    }

    pub fn get(&self, key: &str) -> Option<&Value> {
        self.metadata.iter().find(|(k, _)| k == key).map(|(_, v)| v)
    }

    pub fn tensor(&self, name: &str) -> Option<&TensorInfo> {
        self.tensors.iter().find(|t| t.name == name)
    }

    /// The raw bytes of `t` (checked at parse time to lie within the file).
    pub fn bytes(&self, t: &TensorInfo) -> &'a [u8] {
        &self.data[t.offset as usize..(t.offset + t.bytes) as usize]
    }

    /// The values of `t`, dequantized to f32.
    pub fn to_f32(&self, t: &TensorInfo) -> Vec<f32> {
        dequantize(t.ty, self.bytes(t), t.numel())
    }
}

fn f16(b: &[u8]) -> f32 {
    crate::safetensors_file::f16_to_f32(u16::from_le_bytes([b[0], b[1]]))
}

/// `n` values of type `ty` from `data` (whole blocks), as ggml's `dequantize_row_*` gives
/// them.
pub fn dequantize(ty: GgmlType, data: &[u8], n: usize) -> Vec<f32> {
    let (per, size) = ty.block();
    let blocks = data.chunks_exact(size).take(n / per);
    let mut out = Vec::with_capacity(n);
    match ty {
        GgmlType::F32 => out.extend(
            data.chunks_exact(4)
                .take(n)
                .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])),
        ),
        GgmlType::F16 => out.extend(data.chunks_exact(2).take(n).map(f16)),
        GgmlType::BF16 => out.extend(
            data.chunks_exact(2)
                .take(n)
                .map(|b| f32::from_bits((u16::from_le_bytes([b[0], b[1]]) as u32) << 16)),
        ),
        GgmlType::Q8_0 => {
            for b in blocks {
                let d = f16(b);
                out.extend(b[2..34].iter().map(|&q| q as i8 as f32 * d));
            }
        }
        GgmlType::Q4_0 | GgmlType::Q4_1 => {
            for b in blocks {
                let d = f16(b);
                let (m, qs) = if ty == GgmlType::Q4_1 {
                    (f16(&b[2..]), &b[4..20])
                } else {
                    (0.0, &b[2..18])
                };
                for half in 0..2 {
                    for &q in qs {
                        let v = (q >> (4 * half)) & 0x0f;
                        out.push(if ty == GgmlType::Q4_1 {
                            d * v as f32 + m
                        } else {
                            d * (v as i8 - 8) as f32
                        });
                    }
                }
            }
        }
        GgmlType::Q5_0 | GgmlType::Q5_1 => {
            for b in blocks {
                let d = f16(b);
                let (m, rest) = if ty == GgmlType::Q5_1 {
                    (f16(&b[2..]), &b[4..])
                } else {
                    (0.0, &b[2..])
                };
                let qh = u32::from_le_bytes([rest[0], rest[1], rest[2], rest[3]]);
                let qs = &rest[4..20];
                for j in 0..32 {
                    let low = (qs[j % 16] >> (4 * (j / 16))) & 0x0f;
                    let v = low | ((((qh >> j) & 1) as u8) << 4);
                    out.push(if ty == GgmlType::Q5_1 {
                        d * v as f32 + m
                    } else {
                        d * (v as i8 - 16) as f32
                    });
                }
            }
        }
        GgmlType::Q4_K | GgmlType::Q5_K => {
            for b in blocks {
                let d = f16(b);
                let dmin = f16(&b[2..]);
                let (sc, mn) = k_scales(&b[4..16]);
                let (qh, qs) = if ty == GgmlType::Q5_K {
                    (&b[16..48], &b[48..176])
                } else {
                    (&b[16..16], &b[16..144])
                };
                for sub in 0..8 {
                    let d1 = d * sc[sub] as f32;
                    let m1 = dmin * mn[sub] as f32;
                    let chunk = &qs[32 * (sub / 2)..32 * (sub / 2) + 32];
                    for l in 0..32 {
                        let mut q = (chunk[l] >> (4 * (sub % 2))) & 0x0f;
                        if ty == GgmlType::Q5_K {
                            q |= ((qh[l] >> sub) & 1) << 4;
                        }
                        out.push(d1 * q as f32 - m1);
                    }
                }
            }
        }
        GgmlType::Q6_K => {
            for b in blocks {
                let (ql, qh, scales) = (&b[..128], &b[128..192], &b[192..208]);
                let d = f16(&b[208..]);
                for i in 0..QK_K {
                    let (h, r) = (i / 128, i % 128);
                    let lo = (ql[h * 64 + r % 64] >> (4 * (r / 64))) & 0x0f;
                    let hi = (qh[h * 32 + r % 32] >> (2 * (r / 32))) & 0x03;
                    let q = (lo | (hi << 4)) as i8 - 32;
                    out.push(d * scales[i / 16] as i8 as f32 * q as f32);
                }
            }
        }
    }
    out
}

/// The eight 6-bit scales and mins of a Q4_K / Q5_K super-block (ggml's
/// `get_scale_min_k4`).
fn k_scales(s: &[u8]) -> ([u8; 8], [u8; 8]) {
    let mut sc = [0u8; 8];
    let mut mn = [0u8; 8];
    for j in 0..8 {
        if j < 4 {
            sc[j] = s[j] & 63;
            mn[j] = s[j + 4] & 63;
        } else {
            sc[j] = (s[j + 4] & 0x0f) | ((s[j - 4] >> 6) << 4);
            mn[j] = (s[j + 4] >> 4) | ((s[j] >> 6) << 4);
        }
    }
    (sc, mn)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A minimal file: one metadata string, one F32 tensor [2, 3].
    fn tiny() -> Vec<u8> {
        let mut b = Vec::new();
        b.extend_from_slice(MAGIC);
        b.extend_from_slice(&3u32.to_le_bytes());
        b.extend_from_slice(&1u64.to_le_bytes());
        b.extend_from_slice(&1u64.to_le_bytes());
        let key = b"general.architecture";
        b.extend_from_slice(&(key.len() as u64).to_le_bytes());
        b.extend_from_slice(key);
        b.extend_from_slice(&8u32.to_le_bytes());
        b.extend_from_slice(&5u64.to_le_bytes());
        b.extend_from_slice(b"llama");
        let name = b"w";
        b.extend_from_slice(&(name.len() as u64).to_le_bytes());
        b.extend_from_slice(name);
        b.extend_from_slice(&2u32.to_le_bytes());
        b.extend_from_slice(&3u64.to_le_bytes());
        b.extend_from_slice(&2u64.to_le_bytes());
        b.extend_from_slice(&0u32.to_le_bytes());
        b.extend_from_slice(&0u64.to_le_bytes());
        while b.len() % 32 != 0 {
            b.push(0);
        }
        for i in 0..6 {
            b.extend_from_slice(&(i as f32).to_le_bytes());
        }
        b
    }

    #[test]
    fn reads_a_minimal_file() {
        let b = tiny();
        let g = Gguf::parse(&b).unwrap();
        assert_eq!(
            g.get("general.architecture").and_then(Value::as_str),
            Some("llama")
        );
        let t = g.tensor("w").unwrap();
        assert_eq!(t.shape(), vec![2, 3]);
        assert_eq!(g.to_f32(t), vec![0.0, 1.0, 2.0, 3.0, 4.0, 5.0]);
    }

    #[test]
    fn every_truncation_and_byte_flip_is_an_error_or_a_valid_file() {
        let b = tiny();
        for n in 0..b.len() - 24 {
            assert!(Gguf::parse(&b[..n]).is_err(), "cut at {n}");
        }
        for i in 0..b.len() {
            for x in [0x00u8, 0xff, 0x80, 0x7f] {
                let mut c = b.clone();
                c[i] = x;
                if let Ok(g) = Gguf::parse(&c) {
                    for t in &g.tensors {
                        assert_eq!(g.to_f32(t).len(), t.numel());
                    }
                }
            }
        }
    }

    #[test]
    fn huge_counts_allocate_nothing() {
        let mut b = tiny();
        // Metadata count 2⁶³.
        b[16..24].copy_from_slice(&(1u64 << 63).to_le_bytes());
        assert!(Gguf::parse(&b).unwrap_err().0.contains("cannot fit"));
        // A string claiming 2⁶⁰ bytes.
        let mut b = tiny();
        b[24..32].copy_from_slice(&(1u64 << 60).to_le_bytes());
        assert!(Gguf::parse(&b).is_err());
    }

    #[test]
    fn k_scales_unpack_as_ggml() {
        let s: [u8; 12] = [
            0xc1, 0x42, 0x83, 0x04, 0x45, 0x86, 0xc7, 0x08, 0x9a, 0xbc, 0xde, 0xf1,
        ];
        let (sc, mn) = k_scales(&s);
        assert_eq!(sc[..4], [0x01, 0x02, 0x03, 0x04]);
        assert_eq!(mn[..4], [0x05, 0x06, 0x07, 0x08]);
        // j = 4: scale = (s[8] & 15) | (s[0] >> 6) << 4; min = (s[8] >> 4) | (s[4] >> 6) << 4.
        assert_eq!(sc[4], 0x0a | (3 << 4));
        assert_eq!(mn[4], 0x09 | (1 << 4));
    }
}

/// IEEE single → half, rounding to nearest even (numpy's `astype(np.float16)`, ggml's
/// `GGML_FP32_TO_FP16`); overflow gives ±∞, NaN stays NaN.
pub fn f32_to_f16(x: f32) -> u16 {
    let b = x.to_bits();
    let sign = ((b >> 16) & 0x8000) as u16;
    let exp = ((b >> 23) & 0xff) as i32;
    let man = b & 0x7f_ffff;
    if exp == 0xff {
        return sign
            | 0x7c00
            | if man != 0 {
                0x200 | (man >> 13) as u16
            } else {
                0
            };
    }
    let e = exp - 127 + 15;
    if e >= 31 {
        return sign | 0x7c00;
    }
    if e <= 0 {
        if e < -10 {
            return sign;
        }
        let m = man | 0x80_0000;
        let shift = (14 - e) as u32;
        let half = 1u32 << (shift - 1);
        let rest = m & ((1u32 << shift) - 1);
        let mut r = (m >> shift) as u16;
        if rest > half || (rest == half && r & 1 == 1) {
            r += 1;
        }
        return sign | r;
    }
    let mut r = u32::from(sign) | ((e as u32) << 10) | (man >> 13);
    let rest = man & 0x1fff;
    if rest > 0x1000 || (rest == 0x1000 && r & 1 == 1) {
        r += 1;
    }
    r as u16
}

fn h(x: f32) -> f32 {
    crate::safetensors_file::f16_to_f32(f32_to_f16(x))
}

/// C's `roundf`: halves away from zero.
fn roundf(x: f32) -> f32 {
    x.round()
}

/// `data` (whole blocks of `ty`) quantized to `ty`'s blocks. Q8_0, Q4_0, Q4_1, Q5_0 and
/// Q5_1 follow ggml's reference quantizers (`quantize_row_*_ref`; gguf-py's are bit-exact
/// with them); Q4_K, Q5_K and Q6_K take each sub-block's range (Q4_K/Q5_K: min and max, the
/// min capped at 0; Q6_K: the largest magnitude) and quantize the sub-block scales to 6 and 8 bits
/// against the super-block's — valid blocks, without ggml's iterative scale search. `None`
/// for a length that is not whole blocks.
pub fn quantize(ty: GgmlType, data: &[f32]) -> Option<Vec<u8>> {
    let (per, size) = ty.block();
    if !data.len().is_multiple_of(per) {
        return None;
    }
    let mut out = Vec::with_capacity(data.len() / per * size);
    let put_h = |out: &mut Vec<u8>, x: f32| out.extend_from_slice(&f32_to_f16(x).to_le_bytes());
    match ty {
        GgmlType::F32 => data
            .iter()
            .for_each(|x| out.extend_from_slice(&x.to_le_bytes())),
        GgmlType::F16 => data.iter().for_each(|&x| put_h(&mut out, x)),
        GgmlType::BF16 => data.iter().for_each(|&x| {
            let n = x.to_bits();
            let n = if n & 0x7fff_ffff > 0x7f80_0000 {
                (n & 0xffff_0000) | (64 << 16)
            } else {
                n
            };
            let r = ((u64::from(n) + (0x7fff + u64::from((n >> 16) & 1))) >> 16) as u16;
            out.extend_from_slice(&r.to_le_bytes());
        }),
        GgmlType::Q8_0 => {
            for b in data.chunks_exact(32) {
                let amax = b.iter().fold(0f32, |m, x| m.max(x.abs()));
                let d = amax / 127.0;
                let id = if d != 0.0 { 1.0 / d } else { 0.0 };
                put_h(&mut out, d);
                out.extend(b.iter().map(|&x| roundf(x * id) as i8 as u8));
            }
        }
        GgmlType::Q4_0 | GgmlType::Q5_0 => {
            let (levels, bias) = if ty == GgmlType::Q4_0 {
                (-8.0, 8.5)
            } else {
                (-16.0, 16.5)
            };
            let top = if ty == GgmlType::Q4_0 { 15 } else { 31 };
            for b in data.chunks_exact(32) {
                // The value of largest magnitude, with its sign.
                let max = b
                    .iter()
                    .fold(0f32, |m, &x| if x.abs() > m.abs() { x } else { m });
                let d = max / levels;
                let id = if d != 0.0 { 1.0 / d } else { 0.0 };
                put_h(&mut out, d);
                let q: Vec<u8> = b
                    .iter()
                    .map(|&x| ((x * id + bias) as i8).clamp(0, top) as u8)
                    .collect();
                push_quants(&mut out, &q, ty == GgmlType::Q5_0);
            }
        }
        GgmlType::Q4_1 | GgmlType::Q5_1 => {
            let top = if ty == GgmlType::Q4_1 { 15 } else { 31 };
            for b in data.chunks_exact(32) {
                let min = b.iter().copied().fold(f32::INFINITY, f32::min);
                let max = b.iter().copied().fold(f32::NEG_INFINITY, f32::max);
                let d = (max - min) / top as f32;
                let id = if d != 0.0 { 1.0 / d } else { 0.0 };
                put_h(&mut out, d);
                put_h(&mut out, min);
                let q: Vec<u8> = b
                    .iter()
                    .map(|&x| (((x - min) * id + 0.5) as i8).clamp(0, top) as u8)
                    .collect();
                push_quants(&mut out, &q, ty == GgmlType::Q5_1);
            }
        }
        GgmlType::Q4_K | GgmlType::Q5_K => {
            // Q5_K: 31 steps per sub-block, bit 4 of each value in qh.
            let top = if ty == GgmlType::Q5_K { 31.0 } else { 15.0 };
            for b in data.chunks_exact(QK_K) {
                let mut scale = [0f32; 8];
                let mut minus = [0f32; 8];
                for (s, sub) in b.chunks_exact(32).enumerate() {
                    let lo = sub.iter().copied().fold(f32::INFINITY, f32::min).min(0.0);
                    let hi = sub.iter().copied().fold(f32::NEG_INFINITY, f32::max);
                    scale[s] = (hi - lo) / top;
                    minus[s] = -lo;
                }
                let max_scale = scale.iter().copied().fold(0f32, f32::max);
                let max_min = minus.iter().copied().fold(0f32, f32::max);
                let d = h(max_scale / 63.0);
                let dmin = h(max_min / 63.0);
                let q6 = |v: f32, unit: f32| {
                    if unit > 0.0 {
                        roundf(v / unit).clamp(0.0, 63.0) as u8
                    } else {
                        0
                    }
                };
                let ls: Vec<u8> = scale.iter().map(|&s| q6(s, d)).collect();
                let lm: Vec<u8> = minus.iter().map(|&m| q6(m, dmin)).collect();
                put_h(&mut out, d);
                put_h(&mut out, dmin);
                let mut sc = [0u8; 12];
                for j in 0..4 {
                    sc[j] = (ls[j] & 63) | ((ls[j + 4] >> 4) << 6);
                    sc[j + 4] = (lm[j] & 63) | ((lm[j + 4] >> 4) << 6);
                    sc[j + 8] = (ls[j + 4] & 15) | ((lm[j + 4] & 15) << 4);
                }
                out.extend_from_slice(&sc);
                let mut q = [0u8; QK_K];
                for s in 0..8 {
                    let d1 = d * f32::from(ls[s]);
                    let m1 = dmin * f32::from(lm[s]);
                    for l in 0..32 {
                        let x = b[32 * s + l];
                        q[32 * s + l] = if d1 > 0.0 {
                            roundf((x + m1) / d1).clamp(0.0, top) as u8
                        } else {
                            0
                        };
                    }
                }
                if ty == GgmlType::Q5_K {
                    // qh byte l: bit s is bit 4 of value 32·s + l.
                    out.extend(
                        (0..32).map(|l| {
                            (0..8).fold(0u8, |h, s| h | (((q[32 * s + l] >> 4) & 1) << s))
                        }),
                    );
                }
                for c in 0..4 {
                    let nib = |v: u8| v & 15;
                    out.extend(
                        (0..32).map(|l| nib(q[64 * c + l]) | (nib(q[64 * c + 32 + l]) << 4)),
                    );
                }
            }
        }
        GgmlType::Q6_K => {
            for b in data.chunks_exact(QK_K) {
                // Each 16-value group's scale: its largest magnitude over 32 steps.
                let scales: Vec<f32> = b
                    .chunks_exact(16)
                    .map(|g| g.iter().fold(0f32, |m, x| m.max(x.abs())) / 31.0)
                    .collect();
                let max_scale = scales.iter().copied().fold(0f32, f32::max);
                let d = h(max_scale / 127.0);
                let ls: Vec<i8> = scales
                    .iter()
                    .map(|&s| {
                        if d > 0.0 {
                            roundf(s / d).clamp(-128.0, 127.0) as i8
                        } else {
                            0
                        }
                    })
                    .collect();
                let mut q = [0u8; QK_K];
                for (i, &x) in b.iter().enumerate() {
                    let unit = d * f32::from(ls[i / 16]);
                    let v = if unit != 0.0 {
                        roundf(x / unit).clamp(-32.0, 31.0)
                    } else {
                        0.0
                    };
                    q[i] = (v as i8 + 32) as u8;
                }
                let mut ql = [0u8; 128];
                let mut qh = [0u8; 64];
                for (i, &v) in q.iter().enumerate() {
                    let (hh, r) = (i / 128, i % 128);
                    ql[hh * 64 + r % 64] |= (v & 0x0f) << (4 * (r / 64));
                    qh[hh * 32 + r % 32] |= ((v >> 4) & 0x03) << (2 * (r / 32));
                }
                out.extend_from_slice(&ql);
                out.extend_from_slice(&qh);
                out.extend(ls.iter().map(|&s| s as u8));
                put_h(&mut out, d);
            }
        }
    }
    Some(out)
}

/// A 32-value block's 4-bit quants (values 0..15 in the low nibbles, 16..31 in the high),
/// after the fifth bits as one little-endian u32 when `fifth`.
fn push_quants(out: &mut Vec<u8>, q: &[u8], fifth: bool) {
    if fifth {
        let qh = (0..32).fold(0u32, |a, j| a | (u32::from(q[j] >> 4) << j));
        out.extend_from_slice(&qh.to_le_bytes());
    }
    out.extend((0..16).map(|j| (q[j] & 0x0f) | ((q[j + 16] & 0x0f) << 4)));
}

/// The GGUF type id of a metadata value.
fn value_type(v: &Value) -> u32 {
    match v {
        Value::U8(_) => 0,
        Value::I8(_) => 1,
        Value::U16(_) => 2,
        Value::I16(_) => 3,
        Value::U32(_) => 4,
        Value::I32(_) => 5,
        Value::F32(_) => 6,
        Value::Bool(_) => 7,
        Value::Str(_) => 8,
        Value::Array(_) => 9,
        Value::U64(_) => 10,
        Value::I64(_) => 11,
        Value::F64(_) => 12,
    }
}

/// A metadata value's bytes (without its type id).
fn value_bytes(v: &Value, out: &mut Vec<u8>) {
    match v {
        Value::U8(x) => out.push(*x),
        Value::I8(x) => out.push(*x as u8),
        Value::U16(x) => out.extend_from_slice(&x.to_le_bytes()),
        Value::I16(x) => out.extend_from_slice(&x.to_le_bytes()),
        Value::U32(x) => out.extend_from_slice(&x.to_le_bytes()),
        Value::I32(x) => out.extend_from_slice(&x.to_le_bytes()),
        Value::U64(x) => out.extend_from_slice(&x.to_le_bytes()),
        Value::I64(x) => out.extend_from_slice(&x.to_le_bytes()),
        Value::F32(x) => out.extend_from_slice(&x.to_le_bytes()),
        Value::F64(x) => out.extend_from_slice(&x.to_le_bytes()),
        Value::Bool(x) => out.push(u8::from(*x)),
        Value::Str(s) => {
            out.extend_from_slice(&(s.len() as u64).to_le_bytes());
            out.extend_from_slice(s.as_bytes());
        }
        Value::Array(a) => {
            let et = a.first().map_or(4, value_type);
            out.extend_from_slice(&et.to_le_bytes());
            out.extend_from_slice(&(a.len() as u64).to_le_bytes());
            for x in a {
                value_bytes(x, out);
            }
        }
    }
}

/// One tensor to write: its name, `ne` (fastest dimension first), type and blocks.
pub struct WriteTensor {
    pub name: String,
    pub ne: Vec<u64>,
    pub ty: GgmlType,
    pub data: Vec<u8>,
}

/// A GGUF version 3 file: `metadata` then `tensors`, the data aligned to 32 bytes
/// (`general.alignment` is not written; 32 is the default).
pub fn write(metadata: &[(String, Value)], tensors: &[WriteTensor]) -> Vec<u8> {
    let mut out = Vec::new();
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&3u32.to_le_bytes());
    out.extend_from_slice(&(tensors.len() as u64).to_le_bytes());
    let meta: Vec<&(String, Value)> = metadata
        .iter()
        .filter(|(k, _)| k != "general.alignment")
        .collect();
    out.extend_from_slice(&(meta.len() as u64).to_le_bytes());
    for (k, v) in meta {
        out.extend_from_slice(&(k.len() as u64).to_le_bytes());
        out.extend_from_slice(k.as_bytes());
        out.extend_from_slice(&value_type(v).to_le_bytes());
        value_bytes(v, &mut out);
    }
    let mut offset = 0u64;
    for t in tensors {
        out.extend_from_slice(&(t.name.len() as u64).to_le_bytes());
        out.extend_from_slice(t.name.as_bytes());
        out.extend_from_slice(&(t.ne.len() as u32).to_le_bytes());
        for d in &t.ne {
            out.extend_from_slice(&d.to_le_bytes());
        }
        out.extend_from_slice(&t.ty.id().to_le_bytes());
        out.extend_from_slice(&offset.to_le_bytes());
        offset += (t.data.len() as u64).div_ceil(32) * 32;
    }
    while out.len() % 32 != 0 {
        out.push(0);
    }
    for t in tensors {
        out.extend_from_slice(&t.data);
        while out.len() % 32 != 0 {
            out.push(0);
        }
    }
    out
}

#[cfg(test)]
mod quant_tests {
    use super::*;

    #[test]
    fn half_rounding_round_trips_every_half() {
        for bits in 0..=u16::MAX {
            let f = crate::safetensors_file::f16_to_f32(bits);
            if f.is_nan() {
                assert!(crate::safetensors_file::f16_to_f32(f32_to_f16(f)).is_nan());
            } else {
                assert_eq!(f32_to_f16(f), bits, "{bits:#06x} ({f})");
            }
        }
        // Ties to even; overflow to infinity.
        assert_eq!(f32_to_f16(1.0 + 2f32.powi(-11)), 0x3c00);
        assert_eq!(f32_to_f16(1.0 + 3.0 * 2f32.powi(-11)), 0x3c02);
        assert_eq!(f32_to_f16(70000.0), 0x7c00);
    }

    #[test]
    fn quantized_blocks_come_back_close() {
        let data: Vec<f32> = (0..512)
            .map(|i| ((i * 7919 % 1000) as f32 / 500.0 - 1.0) * 3.0)
            .collect();
        let amax = data.iter().fold(0f32, |m, x| m.max(x.abs()));
        for (ty, bound) in [
            (GgmlType::Q8_0, 0.01),
            (GgmlType::Q4_0, 0.2),
            (GgmlType::Q4_1, 0.2),
            (GgmlType::Q5_0, 0.1),
            (GgmlType::Q5_1, 0.1),
            (GgmlType::Q4_K, 0.25),
            (GgmlType::Q6_K, 0.05),
            (GgmlType::F16, 0.001),
            (GgmlType::BF16, 0.01),
        ] {
            let q = quantize(ty, &data).unwrap();
            assert_eq!(q.len(), data.len() / ty.block().0 * ty.block().1, "{ty:?}");
            let back = dequantize(ty, &q, data.len());
            let err = back
                .iter()
                .zip(&data)
                .fold(0f32, |m, (a, b)| m.max((a - b).abs()));
            assert!(err <= bound * amax, "{ty:?}: max error {err} of {amax}");
        }
    }
}

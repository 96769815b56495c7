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

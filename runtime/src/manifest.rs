//! `manifest.json` (format `archc-package/1`, docs/PACKAGE.md) ↔ [`Manifest`]: the serde
//! types the compiler writes and the runtime reads, and the consistency checks that make a
//! malformed or hostile manifest an error rather than a crash.

use std::collections::{BTreeMap, HashSet};
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::error::RuntimeError;
use crate::size::SizeExpr;

/// The package format this runtime reads and the compiler writes.
pub const FORMAT: &str = "archc-package/1";

/// The file name of the manifest inside a package directory.
pub const MANIFEST_FILE: &str = "manifest.json";

/// The symbol a session binds to the tokens its caches hold after a call (past + new).
pub const KV_SEQ: &str = "kv_seq";

/// `kv_win_{w}`: the rows of a sliding window w's ring cache, min(w, capacity).
pub const KV_WINDOW: &str = "kv_win_";

/// The compiler version a package must have been built by: this crate's version (the
/// workspace versions the compiler and the runtime together).
pub const COMPILER_VERSION: &str = env!("CARGO_PKG_VERSION");

/// Everything the runtime needs to run a package.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Manifest {
    pub format: String,
    pub compiler_version: String,
    pub model: String,
    pub target: Target,
    /// The order in which kernels receive the symbols' values.
    pub syms: Vec<String>,
    pub limits: Limits,
    pub inputs: Vec<InputSpec>,
    pub outputs: Vec<OutputSpec>,
    pub params: Vec<ParamSpec>,
    /// Session state the kernels read and write in place across calls (KV caches,
    /// recurrent states); empty for a stateless program.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub states: Vec<StateSpec>,
    pub namings: Vec<Naming>,
    pub buffers: Vec<BufferSpec>,
    /// Number of arena slots temp buffers live in.
    pub slots: usize,
    /// Floats of per-thread scratch each kernel call may use.
    pub scratch_floats: u64,
    pub entries: BTreeMap<String, Entry>,
    pub kernels: Vec<KernelSpec>,
}

/// What the kernels were compiled for.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Target {
    /// `cpu` (kernels.so) or `cuda`.
    pub kind: String,
    /// `avx2`, `avx512`, …
    pub isa: String,
    /// LLVM's CPU name (`znver3`).
    pub cpu: String,
    /// LLVM's feature string (`+avx2,+fma`).
    pub features: String,
    /// The products over K-quant blocks (decode steps and prompts) take integer dot
    /// products over activations quantized to 8 bits (`archc build --int-dots`); absent
    /// means f32 products.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub int_dots: bool,
}

/// Input limits of the model; 0 means "no limit" for `vocab` and `context`, and 0 or 1
/// "any length" for `seq_multiple_of`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Limits {
    pub vocab: u64,
    pub context: u64,
    /// Number of token types (`token_type_ids` in `[0, segments)`); 0 when none.
    pub segments: u64,
    pub seq_multiple_of: u64,
    /// Whether rows may be left-padded (`attention_mask` zeros): not when a recurrent cell
    /// would carry the padding tokens in its state.
    #[serde(default = "yes")]
    pub left_padding: bool,
}

fn yes() -> bool {
    true
}

/// Element type of a buffer or tensor.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Dtype {
    F32,
    I64,
    /// Values kept in half precision by cuda `--dtype bf16|f16` packages: activations
    /// between kernels and KV caches (temporaries and states, never an input or output).
    Bf16,
    F16,
}

impl Dtype {
    pub fn bytes(self) -> u64 {
        match self {
            Dtype::F32 => 4,
            Dtype::I64 => 8,
            Dtype::Bf16 | Dtype::F16 => 2,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Dtype::F32 => "f32",
            Dtype::I64 => "i64",
            Dtype::Bf16 => "bf16",
            Dtype::F16 => "f16",
        }
    }
}

/// An input of the graph: its shape says which symbol each axis binds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InputSpec {
    pub name: String,
    pub dtype: Dtype,
    pub shape: Vec<SizeExpr>,
    pub buffer: usize,
}

/// An output of the graph.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OutputSpec {
    pub name: String,
    pub dtype: Dtype,
    pub shape: Vec<SizeExpr>,
    pub buffer: usize,
}

/// A state buffer of the session. Sizes may use the session's symbols: `kv_seq` (the
/// tokens a KV cache holds after this call, past included) is bound to the session's
/// capacity when the state is allocated, so a cache is laid out `[kv_seq, …]` and every
/// call sees a prefix of it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StateSpec {
    pub name: String,
    pub dtype: Dtype,
    pub shape: Vec<SizeExpr>,
    pub buffer: usize,
    /// Every element's value when the session starts (RWKV's running maximum starts at
    /// −1e38; caches and most states at 0).
    #[serde(default)]
    pub init: f32,
}

/// A canonical parameter (row-major f32 of `shape`, or ggml blocks of `storage`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ParamSpec {
    pub name: String,
    pub shape: Vec<usize>,
    pub buffer: usize,
    /// The kernels read this parameter as blocks of a ggml type (`q8_0`, `q4_k`): each
    /// row of `shape` is whole blocks, stored as a GGUF file stores them. Absent: f32.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub storage: Option<String>,
}

impl ParamSpec {
    /// Element count, `None` on overflow.
    pub fn numel(&self) -> Option<usize> {
        self.shape.iter().try_fold(1usize, |a, &d| a.checked_mul(d))
    }

    /// The block type the kernels read (`None`: f32); an error for a name this runtime
    /// does not know.
    pub fn storage_type(&self) -> Result<Option<crate::gguf::GgmlType>, String> {
        match &self.storage {
            None => Ok(None),
            Some(s) => crate::gguf::GgmlType::from_name(s)
                .filter(|t| t.kernel_storage())
                .map(Some)
                .ok_or_else(|| format!("parameter `{}`: unknown storage `{s}`", self.name)),
        }
    }

    /// Bytes of the parameter's data as the kernels read it; `None` on overflow or for a
    /// shape that is not whole blocks.
    pub fn bytes(&self) -> Option<usize> {
        let n = self.numel()?;
        match self.storage_type().ok()? {
            None => n.checked_mul(4),
            Some(t) => {
                let (per, size) = t.block();
                n.is_multiple_of(per).then(|| n / per * size)
            }
        }
    }
}

/// One way a weights file may name the parameters: canonical or a Hugging Face class.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Naming {
    pub label: String,
    /// Canonical parameter name → where it lives under this naming.
    pub sources: BTreeMap<String, Source>,
}

/// Where a canonical parameter lives in a weights file; every `shape` is the canonical one.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Source {
    /// The tensor as stored (size-1 axes ignored when comparing shapes).
    Plain { name: String, shape: Vec<usize> },
    /// A 2-D tensor stored [b, a]; canonical `shape` [a, b].
    Transpose { name: String, shape: Vec<usize> },
    /// Rows `start..start + len` of a tensor (1-D: elements), after transposing it when
    /// `transpose`.
    Rows {
        name: String,
        shape: Vec<usize>,
        transpose: bool,
        start: usize,
        len: usize,
    },
    /// A q or k projection whose rows llama.cpp's converter permuted for its interleaved
    /// RoPE (per head of `heads`: row `2i + s` holds the canonical row `s·half + i`);
    /// `shape` canonical. Read back into the canonical (rotate-halves) order.
    RopeRows {
        name: String,
        shape: Vec<usize>,
        heads: usize,
    },
    /// A tensor holding −exp(canonical) (llama.cpp stores Mamba's `A = −exp(A_log)`):
    /// read as ln(−x).
    NegLog { name: String, shape: Vec<usize> },
    /// The first alternative whose tensor exists.
    Any(Vec<Source>),
    /// No tensor under this naming.
    Nothing,
}

/// llama.cpp's row order of a q/k projection (rows grouped in `heads` heads): stored row
/// `h·hd + 2i + s` holds canonical row `h·hd + s·hd/2 + i`. `forward` goes canonical →
/// stored; otherwise stored → canonical. `None` when the rows do not split into heads of
/// even size.
pub fn rope_rows(data: &[f32], rows: usize, heads: usize, forward: bool) -> Option<Vec<f32>> {
    rope_rows_of(data, rows, heads, forward)
}

/// [`rope_rows`] over rows of bytes (ggml blocks of a quantized projection).
pub fn rope_rows_bytes(data: &[u8], rows: usize, heads: usize, forward: bool) -> Option<Vec<u8>> {
    rope_rows_of(data, rows, heads, forward)
}

fn rope_rows_of<T: Copy + Default>(
    data: &[T],
    rows: usize,
    heads: usize,
    forward: bool,
) -> Option<Vec<T>> {
    if heads == 0
        || rows == 0
        || !rows.is_multiple_of(heads)
        || !(rows / heads).is_multiple_of(2)
        || !data.len().is_multiple_of(rows)
    {
        return None;
    }
    let (hd, width) = (rows / heads, data.len() / rows);
    let half = hd / 2;
    let mut out = vec![T::default(); data.len()];
    for h in 0..heads {
        for s in 0..2 {
            for i in 0..half {
                let canon = h * hd + s * half + i;
                let stored = h * hd + 2 * i + s;
                let (from, to) = if forward {
                    (canon, stored)
                } else {
                    (stored, canon)
                };
                out[to * width..(to + 1) * width]
                    .copy_from_slice(&data[from * width..(from + 1) * width]);
            }
        }
    }
    Some(out)
}

impl Source {
    /// Every tensor name this source may read, alternatives included.
    pub fn names(&self) -> Vec<&str> {
        match self {
            Source::Plain { name, .. }
            | Source::Transpose { name, .. }
            | Source::Rows { name, .. }
            | Source::RopeRows { name, .. }
            | Source::NegLog { name, .. } => vec![name.as_str()],
            Source::Any(alts) => alts.iter().flat_map(|a| a.names()).collect(),
            Source::Nothing => vec![],
        }
    }
}

/// What a buffer holds and who provides its memory.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BufferKind {
    /// Copied in from the caller's tensor.
    Input,
    /// Points at a parameter's data.
    Param,
    /// Its own allocation, read back after the entry point runs.
    Output,
    /// Lives in arena slot `slot`.
    Temp,
    /// Owned by the session across calls (`states`).
    State,
}

/// A tensor the kernels touch.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BufferSpec {
    pub id: usize,
    pub kind: BufferKind,
    pub dtype: Dtype,
    pub elems: SizeExpr,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub slot: Option<usize>,
}

/// An entry point: kernel indices, run in order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    pub kernels: Vec<usize>,
    /// The entry runs in the package of this subdirectory (its own manifest and
    /// kernels): `prefill` and `decode` run the `step` program.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub package: Option<String>,
}

/// One kernel of `kernels.so`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KernelSpec {
    /// `void SYMBOL(void *const *args, const int64_t *dims, int64_t begin, int64_t end, float *scratch)`;
    /// kernels that differ only in their buffers share one symbol.
    pub symbol: String,
    /// `int64_t RANGE(const int64_t *dims)`: the parallel iteration count.
    pub range: String,
    /// The buffers it reads or writes, in the order the kernel expects their addresses.
    pub args: Vec<usize>,
    /// What it computes (informative): `gather`, `matmul`, …
    pub kind: String,
    /// A cuda package: how to launch it (`range` is then empty).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub launch: Option<CudaLaunch>,
}

/// The launch shape of a cuda kernel. Kernels loop over their work, so the shape does not
/// depend on run-time sizes: `block` threads per block, `blocks_per_sm` blocks per
/// streaming multiprocessor of the device (`None`: exactly one block, for a scan whose
/// steps run in order), `shared_bytes` of shared memory: static (declared by the PTX,
/// informative here) or, with `dynamic_shared` (past the 48 KiB a block may declare),
/// the launch's dynamic shared memory, which the runtime allows the kernel and passes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CudaLaunch {
    pub block: u32,
    pub blocks_per_sm: Option<u32>,
    pub shared_bytes: u32,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub dynamic_shared: bool,
}

impl Manifest {
    /// Reads `dir/manifest.json`, checks the format and compiler version, and
    /// [validates](Manifest::validate) it.
    pub fn read(dir: &Path) -> Result<Manifest, RuntimeError> {
        let path = dir.join(MANIFEST_FILE);
        let text = std::fs::read_to_string(&path).map_err(|e| RuntimeError::io(&path, &e))?;
        Manifest::parse(&text).map_err(|e| match e {
            RuntimeError::Manifest { reason, .. } => RuntimeError::Manifest { path, reason },
            e => e,
        })
    }

    /// [`Manifest::read`] from the JSON text (errors carry an empty path).
    pub fn parse(text: &str) -> Result<Manifest, RuntimeError> {
        let bad = |reason: String| RuntimeError::Manifest {
            path: Default::default(),
            reason,
        };
        // Format and version first, so an old package says so rather than failing on a
        // field that has changed since.
        let json: serde_json::Value =
            serde_json::from_str(text).map_err(|e| bad(format!("invalid JSON: {e}")))?;
        match json.get("format").and_then(|f| f.as_str()) {
            Some(FORMAT) => {}
            Some(other) => {
                return Err(RuntimeError::Format {
                    found: other.to_string(),
                })
            }
            None => return Err(bad("no `format` string".into())),
        }
        match json.get("compiler_version").and_then(|f| f.as_str()) {
            Some(COMPILER_VERSION) => {}
            Some(other) => {
                return Err(RuntimeError::Version {
                    package: other.to_string(),
                    runtime: COMPILER_VERSION.to_string(),
                })
            }
            None => return Err(bad("no `compiler_version` string".into())),
        }
        let m: Manifest = serde_json::from_value(json).map_err(|e| bad(e.to_string()))?;
        m.validate().map_err(bad)?;
        Ok(m)
    }

    /// The manifest as pretty JSON.
    pub fn to_json(&self) -> String {
        // Plain structs and string-keyed maps: serialization cannot fail.
        serde_json::to_string_pretty(self).unwrap_or_default()
    }

    /// Writes `dir/manifest.json`.
    pub fn write(&self, dir: &Path) -> Result<(), RuntimeError> {
        let path = dir.join(MANIFEST_FILE);
        std::fs::write(&path, self.to_json() + "\n").map_err(|e| RuntimeError::io(&path, &e))
    }

    /// Internal consistency: dense buffer ids; every input, output, param and kernel
    /// argument a valid buffer of the right kind; every input, param and output buffer
    /// provided exactly once; temp slots in range; entries naming existing kernels; every
    /// size mentioning only declared symbols, each bound by some input axis.
    pub fn validate(&self) -> Result<(), String> {
        let n = self.buffers.len();
        for (i, b) in self.buffers.iter().enumerate() {
            if b.id != i {
                return Err(format!("buffer {i} has id {} (ids must be 0..{n})", b.id));
            }
            match (b.kind, b.slot) {
                (BufferKind::Temp, None) => return Err(format!("temp buffer {i} has no slot")),
                (BufferKind::Temp, Some(s)) if s >= self.slots => {
                    return Err(format!(
                        "buffer {i} is in slot {s}, but there are {} slots",
                        self.slots
                    ))
                }
                _ => {}
            }
        }
        if self.slots > n {
            return Err(format!("{} slots for {n} buffers", self.slots));
        }
        let mut syms = HashSet::new();
        for s in &self.syms {
            if !syms.insert(s.as_str()) {
                return Err(format!("symbol `{s}` is listed twice"));
            }
        }
        let check_size = |what: &str, e: &SizeExpr| -> Result<(), String> {
            for t in &e.0 {
                if t.div == 0 {
                    return Err(format!("{what}: `{e}` divides by zero"));
                }
                if let Some(s) = t.syms.iter().find(|s| !syms.contains(s.as_str())) {
                    return Err(format!("{what}: `{e}` uses undeclared symbol `{s}`"));
                }
            }
            Ok(())
        };
        for b in &self.buffers {
            check_size(&format!("buffer {}", b.id), &b.elems)?;
        }

        // Who provides each input, param and output buffer.
        let mut provided = vec![0usize; n];
        let mut use_buffer = |what: String, id: usize, kind: BufferKind, dtype: Dtype| {
            let b = self
                .buffers
                .get(id)
                .ok_or_else(|| format!("{what} names buffer {id}, but there are {n}"))?;
            if b.kind != kind || b.dtype != dtype {
                return Err(format!(
                    "{what} names buffer {id}, a {} {:?} buffer (expected {} {kind:?})",
                    b.dtype.name(),
                    b.kind,
                    dtype.name()
                ));
            }
            provided[id] += 1;
            Ok(())
        };
        let mut names = HashSet::new();
        for i in &self.inputs {
            if !names.insert(i.name.as_str()) {
                return Err(format!("input `{}` is listed twice", i.name));
            }
            use_buffer(
                format!("input `{}`", i.name),
                i.buffer,
                BufferKind::Input,
                i.dtype,
            )?;
            for e in &i.shape {
                check_size(&format!("input `{}`", i.name), e)?;
            }
        }
        let mut names = HashSet::new();
        for o in &self.outputs {
            if !names.insert(o.name.as_str()) {
                return Err(format!("output `{}` is listed twice", o.name));
            }
            use_buffer(
                format!("output `{}`", o.name),
                o.buffer,
                BufferKind::Output,
                o.dtype,
            )?;
            for e in &o.shape {
                check_size(&format!("output `{}`", o.name), e)?;
            }
        }
        let mut names = HashSet::new();
        for p in &self.params {
            if !names.insert(p.name.as_str()) {
                return Err(format!("parameter `{}` is listed twice", p.name));
            }
            use_buffer(
                format!("parameter `{}`", p.name),
                p.buffer,
                BufferKind::Param,
                Dtype::F32,
            )?;
            let numel = p
                .numel()
                .ok_or_else(|| format!("parameter `{}`: shape {:?} overflows", p.name, p.shape))?;
            let elems = self.buffers[p.buffer].elems.as_constant();
            if elems != Some(numel as u64) {
                return Err(format!(
                    "parameter `{}` of shape {:?} has buffer {} of `{}` elements",
                    p.name, p.shape, p.buffer, self.buffers[p.buffer].elems
                ));
            }
        }
        let mut names = HashSet::new();
        for s in &self.states {
            if !names.insert(s.name.as_str()) {
                return Err(format!("state `{}` is listed twice", s.name));
            }
            use_buffer(
                format!("state `{}`", s.name),
                s.buffer,
                BufferKind::State,
                s.dtype,
            )?;
            for e in &s.shape {
                check_size(&format!("state `{}`", s.name), e)?;
            }
        }
        for (b, count) in self.buffers.iter().zip(&provided) {
            let needed = usize::from(b.kind != BufferKind::Temp);
            if *count != needed {
                return Err(format!(
                    "{:?} buffer {} is provided by {count} inputs, outputs or parameters",
                    b.kind, b.id
                ));
            }
        }

        for s in &self.syms {
            let bound = self
                .inputs
                .iter()
                .any(|i| i.shape.iter().any(|e| e.as_sym() == Some(s.as_str())))
                || self
                    .states
                    .iter()
                    .any(|st| st.shape.iter().any(|e| e.symbols().contains(&s.as_str())));
            if !bound {
                return Err(format!("no input axis binds symbol `{s}`"));
            }
        }
        for (k, spec) in self.kernels.iter().enumerate() {
            if let Some(a) = spec.args.iter().find(|&&a| a >= n) {
                return Err(format!(
                    "kernel {k} (`{}`) uses buffer {a}, but there are {n}",
                    spec.symbol
                ));
            }
            // A cpu kernel has a range function; a cuda kernel a launch shape instead.
            if spec.symbol.is_empty() || (spec.range.is_empty() && spec.launch.is_none()) {
                return Err(format!("kernel {k} has an empty symbol name"));
            }
            if let Some(l) = &spec.launch {
                if l.block == 0 || l.block % 32 != 0 || l.block > 1024 || l.blocks_per_sm == Some(0)
                {
                    return Err(format!(
                        "kernel {k} (`{}`) has an invalid launch shape {l:?}",
                        spec.symbol
                    ));
                }
            }
        }
        for (name, e) in &self.entries {
            if let Some(p) = &e.package {
                let plain = !p.is_empty()
                    && p.chars()
                        .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
                if !plain {
                    return Err(format!(
                        "entry `{name}` names package `{p}`, not a plain directory name"
                    ));
                }
                continue;
            }
            if let Some(k) = e.kernels.iter().find(|&&k| k >= self.kernels.len()) {
                return Err(format!(
                    "entry `{name}` runs kernel {k}, but there are {}",
                    self.kernels.len()
                ));
            }
        }
        Ok(())
    }

    /// The index of parameter `name`.
    pub fn param_index(&self, name: &str) -> Option<usize> {
        self.params.iter().position(|p| p.name == name)
    }
}

//! Package directory → loaded kernels ([`Package`]); package + weights + host inputs →
//! host outputs ([`Session::run`]): bind the symbols from the input shapes, check the
//! model's limits, size and allocate the buffers, and run the entry point's kernels on the
//! thread pool through the C ABI of docs/PACKAGE.md.

use std::collections::HashMap;
use std::ffi::{c_void, CString};
use std::path::{Path, PathBuf};

use crate::alloc::AlignedBuf;
use crate::error::RuntimeError;
use crate::manifest::{BufferKind, Dtype, InputSpec, Manifest, Target};
use crate::pool::Pool;
use crate::size::SizeExpr;
use crate::weights::Weights;

/// The file name of the kernel library inside a package directory.
pub const KERNELS_FILE: &str = "kernels.so";

/// `void SYMBOL(void *const *bufs, const int64_t *dims, int64_t begin, int64_t end, float *scratch)`.
pub type KernelFn = unsafe extern "C" fn(
    bufs: *const *mut c_void,
    dims: *const i64,
    begin: i64,
    end: i64,
    scratch: *mut f32,
);
/// `int64_t RANGE(const int64_t *dims)`.
pub type RangeFn = unsafe extern "C" fn(dims: *const i64) -> i64;

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

/// `kernels.so`, open for the lifetime of the package.
struct Library {
    handle: *mut c_void,
    path: PathBuf,
}

// SAFETY: a dlopen handle may be used from any thread; the library's code is immutable.
unsafe impl Send for Library {}
unsafe impl Sync for Library {}

impl Library {
    fn open(path: &Path) -> Result<Library, RuntimeError> {
        let fail = |reason: String| RuntimeError::Library {
            path: path.to_path_buf(),
            reason,
        };
        if !path.is_file() {
            return Err(fail("no such file".into()));
        }
        let c = CString::new(path.as_os_str().as_encoded_bytes())
            .map_err(|_| fail("the path holds a NUL byte".into()))?;
        // SAFETY: `c` is a valid C string; loading runs the library's initializers, which
        // generated kernels do not have.
        let handle = unsafe { libc::dlopen(c.as_ptr(), libc::RTLD_NOW | libc::RTLD_LOCAL) };
        if handle.is_null() {
            return Err(fail(dlerror()));
        }
        Ok(Library {
            handle,
            path: path.to_path_buf(),
        })
    }

    fn symbol(&self, name: &str) -> Option<*mut c_void> {
        let c = CString::new(name).ok()?;
        // SAFETY: a valid handle and C string.
        let p = unsafe { libc::dlsym(self.handle, c.as_ptr()) };
        (!p.is_null()).then_some(p)
    }
}

fn dlerror() -> String {
    // SAFETY: dlerror returns null or a C string valid until the next dl* call here.
    let e = unsafe { libc::dlerror() };
    if e.is_null() {
        "unknown dlopen error".into()
    } else {
        unsafe { std::ffi::CStr::from_ptr(e) }
            .to_string_lossy()
            .into_owned()
    }
}

impl Drop for Library {
    fn drop(&mut self) {
        // SAFETY: the handle came from dlopen and no function pointer outlives the package.
        unsafe { libc::dlclose(self.handle) };
    }
}

#[derive(Clone, Copy)]
struct Kernel {
    run: KernelFn,
    range: RangeFn,
}

/// A loaded package: its manifest and its kernels, resolved.
pub struct Package {
    manifest: Manifest,
    dir: PathBuf,
    kernels: Vec<Kernel>,
    /// For each buffer, its parameter's index when it is a parameter buffer.
    param_of_buffer: Vec<Option<usize>>,
    // Last: the kernels point into it.
    _lib: Library,
}

impl std::fmt::Debug for Package {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Package")
            .field("dir", &self.dir)
            .field("model", &self.manifest.model)
            .field("kernels", &self.kernels.len())
            .finish()
    }
}

impl Package {
    /// Reads `dir/manifest.json`, checks that this machine can run its target, opens
    /// `dir/kernels.so` and resolves every kernel's `symbol` and `range`.
    pub fn load(dir: &Path) -> Result<Package, RuntimeError> {
        let manifest = Manifest::read(dir)?;
        check_target(&manifest.target)?;
        let lib = Library::open(&dir.join(KERNELS_FILE))?;
        let mut kernels = Vec::with_capacity(manifest.kernels.len());
        for (i, k) in manifest.kernels.iter().enumerate() {
            let find = |symbol: &str| {
                lib.symbol(symbol).ok_or_else(|| RuntimeError::Symbol {
                    path: lib.path.clone(),
                    symbol: symbol.to_string(),
                    kernel: i,
                })
            };
            let (run, range) = (find(&k.symbol)?, find(&k.range)?);
            // SAFETY: the package format promises these signatures (docs/PACKAGE.md).
            kernels.push(unsafe {
                Kernel {
                    run: std::mem::transmute::<*mut c_void, KernelFn>(run),
                    range: std::mem::transmute::<*mut c_void, RangeFn>(range),
                }
            });
        }
        let mut param_of_buffer = vec![None; manifest.buffers.len()];
        for (i, p) in manifest.params.iter().enumerate() {
            param_of_buffer[p.buffer] = Some(i);
        }
        Ok(Package {
            manifest,
            dir: dir.to_path_buf(),
            kernels,
            param_of_buffer,
            _lib: lib,
        })
    }

    pub fn manifest(&self) -> &Manifest {
        &self.manifest
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }
}

/// A cpu package must be runnable by this CPU: every `+feature` of the target that this
/// runtime knows how to detect must be present, so a mismatch is an error, not `SIGILL`.
fn check_target(t: &Target) -> Result<(), RuntimeError> {
    if t.kind != "cpu" {
        return Err(RuntimeError::Target(format!(
            "the package targets `{}`; this runtime runs `cpu` packages",
            t.kind
        )));
    }
    for f in t.features.split(',').map(str::trim) {
        if let Some(name) = f.strip_prefix('+') {
            if cpu_has(name) == Some(false) {
                return Err(RuntimeError::Target(format!(
                    "the kernels use {name}, which this CPU lacks (built for `{}`); rebuild the \
                     package on this machine",
                    t.cpu
                )));
            }
        }
    }
    Ok(())
}

/// Whether the CPU has `feature` (LLVM's spelling); `None` when we cannot tell.
#[cfg(target_arch = "x86_64")]
fn cpu_has(feature: &str) -> Option<bool> {
    Some(match feature {
        "sse4.1" => std::is_x86_feature_detected!("sse4.1"),
        "sse4.2" => std::is_x86_feature_detected!("sse4.2"),
        "popcnt" => std::is_x86_feature_detected!("popcnt"),
        "avx" => std::is_x86_feature_detected!("avx"),
        "avx2" => std::is_x86_feature_detected!("avx2"),
        "fma" => std::is_x86_feature_detected!("fma"),
        "f16c" => std::is_x86_feature_detected!("f16c"),
        "bmi" => std::is_x86_feature_detected!("bmi1"),
        "bmi2" => std::is_x86_feature_detected!("bmi2"),
        "lzcnt" => std::is_x86_feature_detected!("lzcnt"),
        "avx512f" => std::is_x86_feature_detected!("avx512f"),
        "avx512bw" => std::is_x86_feature_detected!("avx512bw"),
        "avx512cd" => std::is_x86_feature_detected!("avx512cd"),
        "avx512dq" => std::is_x86_feature_detected!("avx512dq"),
        "avx512vl" => std::is_x86_feature_detected!("avx512vl"),
        _ => return None,
    })
}

#[cfg(not(target_arch = "x86_64"))]
fn cpu_has(_feature: &str) -> Option<bool> {
    None
}

/// A package with its weights, ready to run: the thread pool, per-thread scratch, and the
/// buffers of the last run, reused while they are large enough.
pub struct Session {
    package: Package,
    weights: Weights,
    pool: Pool,
    scratch: Vec<AlignedBuf>,
    /// Input and output buffers by buffer id.
    owned: Vec<Option<AlignedBuf>>,
    arena: Option<AlignedBuf>,
}

impl std::fmt::Debug for Session {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Session")
            .field("package", &self.package)
            .field("weights", &self.weights)
            .field("threads", &self.pool.threads())
            .finish()
    }
}

/// One input of a run: the caller's tensor, or the zeros of an absent `token_type_ids`.
enum Given<'a> {
    Tensor(&'a HostTensor),
    Zeros,
}

/// The kernel call a pool worker makes.
struct Launch {
    f: KernelFn,
    bufs: *const *mut c_void,
    dims: *const i64,
    scratch: *const *mut f32,
}

// SAFETY: the pointers are read-only tables that outlive the pool run; the kernel ABI
// allows concurrent calls on disjoint iteration ranges, each with its own scratch.
unsafe impl Sync for Launch {}

impl Launch {
    fn call(&self, begin: i64, end: i64, worker: usize) {
        // SAFETY: see `Sync`; `worker` < the number of scratch buffers (pool size).
        unsafe { (self.f)(self.bufs, self.dims, begin, end, *self.scratch.add(worker)) }
    }
}

impl Session {
    /// A session running `package` with `weights` (read for this package's manifest) on
    /// `threads` threads (0: one per available core).
    pub fn new(
        package: Package,
        weights: Weights,
        threads: usize,
    ) -> Result<Session, RuntimeError> {
        let m = &package.manifest;
        if weights.len() != m.params.len() {
            return Err(RuntimeError::WeightsMismatch(format!(
                "{} parameters for a package of {}",
                weights.len(),
                m.params.len()
            )));
        }
        for (i, p) in m.params.iter().enumerate() {
            let len = weights.data(i).map_or(0, <[f32]>::len);
            if Some(len) != p.numel() {
                return Err(RuntimeError::WeightsMismatch(format!(
                    "parameter `{}` has {len} values, expected shape {:?}",
                    p.name, p.shape
                )));
            }
        }
        let owned = (0..m.buffers.len()).map(|_| None).collect();
        let mut s = Session {
            package,
            weights,
            pool: Pool::new(1),
            scratch: vec![],
            owned,
            arena: None,
        };
        s.set_threads(threads)?;
        Ok(s)
    }

    /// Replaces the thread pool (0: one thread per available core).
    pub fn set_threads(&mut self, threads: usize) -> Result<(), RuntimeError> {
        let threads = if threads == 0 {
            std::thread::available_parallelism().map_or(1, |n| n.get())
        } else {
            threads
        };
        // Drop the old workers before starting new ones.
        self.pool = Pool::new(1);
        self.pool = Pool::new(threads);
        let bytes = self.package.manifest.scratch_floats.saturating_mul(4);
        self.scratch = (0..self.pool.threads())
            .map(|_| AlignedBuf::zeroed(bytes))
            .collect::<Result<_, _>>()?;
        Ok(())
    }

    pub fn threads(&self) -> usize {
        self.pool.threads()
    }

    pub fn package(&self) -> &Package {
        &self.package
    }

    pub fn weights(&self) -> &Weights {
        &self.weights
    }

    /// Runs entry point `entry` (`forward`) on `inputs` by name and returns every output of
    /// the manifest with its shape at the bound sizes, in manifest order. Inputs the graph
    /// does not take are ignored; an absent `token_type_ids` is zeros.
    pub fn run(
        &mut self,
        entry: &str,
        inputs: &HashMap<String, HostTensor>,
    ) -> Result<Vec<(String, HostTensor)>, RuntimeError> {
        let m = &self.package.manifest;
        let kernels = &m
            .entries
            .get(entry)
            .ok_or_else(|| RuntimeError::UnknownEntry {
                entry: entry.to_string(),
                available: m.entries.keys().cloned().collect(),
            })?
            .kernels;
        let given = gather_inputs(m, inputs)?;
        let dims = bind(m, &given)?;
        for (spec, g) in m.inputs.iter().zip(&given) {
            if let Given::Tensor(t) = g {
                check_axes(m, spec, t, &dims)?;
                check_limits(m, spec, t)?;
            }
        }

        // Sizes at these dims, in bytes.
        let mut bytes = Vec::with_capacity(m.buffers.len());
        for b in &m.buffers {
            let elems = b.elems.eval(&m.syms, &dims)?;
            let n = elems
                .checked_mul(b.dtype.bytes())
                .and_then(|n| usize::try_from(n).ok())
                .ok_or_else(|| {
                    RuntimeError::Size(format!("buffer {} ({}) overflows", b.id, b.elems))
                })?;
            bytes.push(n);
        }
        // The arena: one 64-byte-aligned region per slot, as large as its largest buffer.
        let mut slot_bytes = vec![0usize; m.slots];
        for (b, &n) in m.buffers.iter().zip(&bytes) {
            if let (BufferKind::Temp, Some(s)) = (b.kind, b.slot) {
                slot_bytes[s] = slot_bytes[s].max(round64(n)?);
            }
        }
        let mut slot_offset = Vec::with_capacity(m.slots);
        let mut total = 0usize;
        for n in &slot_bytes {
            slot_offset.push(total);
            total = total
                .checked_add(*n)
                .ok_or(RuntimeError::Alloc { bytes: u64::MAX })?;
        }
        let arena = ensure(&mut self.arena, total)?;

        let mut bufs: Vec<*mut c_void> = Vec::with_capacity(m.buffers.len());
        for (b, &n) in m.buffers.iter().zip(&bytes) {
            let p = match b.kind {
                BufferKind::Input | BufferKind::Output => ensure(&mut self.owned[b.id], n)?,
                // SAFETY: the offset lies within the arena (sum of the slot sizes).
                BufferKind::Temp => unsafe { arena.add(slot_offset[b.slot.unwrap_or(0)]) },
                BufferKind::Param => {
                    let i = self.package.param_of_buffer[b.id].unwrap_or(usize::MAX);
                    self.weights.ptr(i).cast_mut().cast()
                }
            };
            bufs.push(p.cast());
        }
        for (spec, g) in m.inputs.iter().zip(&given) {
            copy_in(spec, g, bufs[spec.buffer], bytes[spec.buffer])?;
        }

        let scratch: Vec<*mut f32> = self.scratch.iter().map(|s| s.ptr().cast()).collect();
        for &k in kernels {
            let kernel = self.package.kernels[k];
            // SAFETY: `dims` holds one value per symbol, as the ABI requires.
            let n = unsafe { (kernel.range)(dims.as_ptr()) };
            if n < 0 {
                return Err(RuntimeError::Kernel(format!(
                    "kernel {k} (`{}`) reported {n} iterations",
                    m.kernels[k].symbol
                )));
            }
            let launch = Launch {
                f: kernel.run,
                bufs: bufs.as_ptr(),
                dims: dims.as_ptr(),
                scratch: scratch.as_ptr(),
            };
            self.pool.run(n, &|b, e, w| launch.call(b, e, w))?;
        }

        let mut out = Vec::with_capacity(m.outputs.len());
        for o in &m.outputs {
            let shape = o
                .shape
                .iter()
                .map(|e| e.eval(&m.syms, &dims).and_then(|v| to_usize(v, &o.name)))
                .collect::<Result<Vec<usize>, _>>()?;
            let elems = bytes[o.buffer] / o.dtype.bytes() as usize;
            if shape.iter().try_fold(1usize, |a, &d| a.checked_mul(d)) != Some(elems) {
                return Err(RuntimeError::Size(format!(
                    "output `{}` has shape {shape:?} but its buffer holds {elems} values",
                    o.name
                )));
            }
            let p = bufs[o.buffer];
            // SAFETY: the buffer holds `elems` values of the output's dtype, written by the
            // kernels (or zero/earlier values: it was allocated zeroed).
            let data = unsafe {
                match o.dtype {
                    Dtype::F32 => {
                        HostData::F32(std::slice::from_raw_parts(p.cast::<f32>(), elems).to_vec())
                    }
                    Dtype::I64 => {
                        HostData::I64(std::slice::from_raw_parts(p.cast::<i64>(), elems).to_vec())
                    }
                }
            };
            out.push((o.name.clone(), HostTensor { shape, data }));
        }
        Ok(out)
    }
}

fn to_usize(v: u64, what: &str) -> Result<usize, RuntimeError> {
    usize::try_from(v).map_err(|_| RuntimeError::Size(format!("`{what}` is too large ({v})")))
}

fn round64(n: usize) -> Result<usize, RuntimeError> {
    n.checked_next_multiple_of(64)
        .ok_or(RuntimeError::Alloc { bytes: n as u64 })
}

/// The buffer in `slot`, reallocated (zeroed) when smaller than `bytes`.
fn ensure(slot: &mut Option<AlignedBuf>, bytes: usize) -> Result<*mut u8, RuntimeError> {
    match slot {
        Some(b) if b.capacity() >= bytes => Ok(b.ptr()),
        _ => {
            *slot = None;
            let b = AlignedBuf::zeroed(bytes as u64)?;
            let p = b.ptr();
            *slot = Some(b);
            Ok(p)
        }
    }
}

/// Each input of the graph from the caller's map; only `token_type_ids` may be absent.
fn gather_inputs<'a>(
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
                };
                if !fits {
                    let want = match spec.dtype {
                        Dtype::F32 => "an f32 tensor",
                        Dtype::I64 => "an integer tensor (i64 or i32)",
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
fn bind(m: &Manifest, given: &[Given<'_>]) -> Result<Vec<i64>, RuntimeError> {
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
                .ok_or_else(|| RuntimeError::Size(format!("no input given binds the size `{s}`")))
        })
        .collect()
}

/// Axes that are not a single symbol must equal their size at the bound symbols.
fn check_axes(
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
fn check_limits(m: &Manifest, spec: &InputSpec, t: &HostTensor) -> Result<(), RuntimeError> {
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
fn copy_in(
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
        }
    }
    Ok(())
}

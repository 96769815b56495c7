//! Package + weights + host inputs → host outputs ([`Session::run`]): bind the symbols,
//! check the inputs, size and allocate the buffers (64-byte aligned, reused across runs),
//! and run the entry point's kernels on the thread pool.

use std::collections::HashMap;
use std::ffi::c_void;

use crate::alloc::AlignedBuf;
use crate::error::RuntimeError;
use crate::inputs::{
    bind, check_axes, check_limits, copy_in, gather_inputs, Given, HostData, HostTensor,
};
use crate::manifest::{BufferKind, Dtype, Manifest};
use crate::package::{KernelFn, Package};
use crate::pool::Pool;
use crate::size::SizeExpr;
use crate::weights::Weights;

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
    /// State buffers by buffer id, allocated by [`Session::reset_state`].
    state: Vec<Option<AlignedBuf>>,
    /// Bytes of each allocated state buffer (its capacity is rounded up).
    state_bytes: Vec<u64>,
    /// The symbols the state was allocated at (`batch`, `kv_seq` = capacity, `src_seq`).
    state_dims: Option<Vec<(String, u64)>>,
    /// Seconds and calls per kernel, when profiling.
    profile: Option<Vec<(f64, u64)>>,
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

/// The kernel call a pool worker makes.
struct Launch {
    f: KernelFn,
    /// The addresses of the kernel's `args`, in order.
    args: *const *mut c_void,
    dims: *const i64,
    scratch: *const *mut f32,
}

// SAFETY: the pointers are read-only tables that outlive the pool run; the kernel ABI
// allows concurrent calls on disjoint iteration ranges, each with its own scratch.
unsafe impl Sync for Launch {}

impl Launch {
    fn call(&self, begin: i64, end: i64, worker: usize) {
        // SAFETY: see `Sync`; `worker` < the number of scratch buffers (pool size).
        unsafe { (self.f)(self.args, self.dims, begin, end, *self.scratch.add(worker)) }
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
        weights.kernel_bytes(m)?;
        let owned = (0..m.buffers.len()).map(|_| None).collect();
        let state = (0..m.buffers.len()).map(|_| None).collect();
        let state_bytes = vec![0; m.buffers.len()];
        let mut s = Session {
            package,
            weights,
            pool: Pool::new(1),
            scratch: vec![],
            owned,
            arena: None,
            state,
            state_bytes,
            state_dims: None,
            profile: None,
        };
        s.set_threads(threads)?;
        Ok(s)
    }

    /// Starts (or stops) timing every kernel call; [`Session::profile`] reads the totals.
    pub fn set_profiling(&mut self, on: bool) {
        self.profile = on.then(|| vec![(0.0, 0); self.package.manifest.kernels.len()]);
    }

    /// Per kernel of the manifest: symbol, kind, total seconds and calls since profiling
    /// started; empty when not profiling.
    pub fn profile(&self) -> Vec<(String, String, f64, u64)> {
        let Some(p) = &self.profile else {
            return Vec::new();
        };
        self.package
            .manifest
            .kernels
            .iter()
            .zip(p)
            .map(|(k, &(s, n))| (k.symbol.clone(), k.kind.clone(), s, n))
            .collect()
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

    /// (Re)allocates every state buffer of the package for `batch` rows and caches of
    /// `capacity` tokens (`kv_seq` bound to it), each element set to its `init` value, and
    /// returns the bytes allocated. Every call of an entry point afterwards must have this
    /// batch and at most `capacity` tokens in its caches.
    /// A sliding window w's ring cache holds `kv_win_{w}` = min(w, capacity) rows.
    pub fn reset_state(&mut self, batch: u64, capacity: u64) -> Result<u64, RuntimeError> {
        self.reset_state_at(&[("batch", batch), (crate::manifest::KV_SEQ, capacity)])
    }

    /// [`Session::reset_state`] at any bindings of the symbols state sizes use (an
    /// encoder-decoder's cross-attention keys also need `src_seq`).
    pub fn reset_state_at(&mut self, bindings: &[(&str, u64)]) -> Result<u64, RuntimeError> {
        let (plan, all) = state_plan(&self.package.manifest, bindings)?;
        let mut total = 0u64;
        for a in plan {
            self.state[a.buffer] = None;
            let buf = AlignedBuf::zeroed(a.bytes)?;
            if a.init != 0.0 && a.dtype == Dtype::F32 {
                // SAFETY: the buffer holds `bytes` bytes, 64-byte aligned.
                let v = unsafe {
                    std::slice::from_raw_parts_mut(buf.ptr().cast::<f32>(), (a.bytes / 4) as usize)
                };
                v.fill(a.init);
            }
            self.state[a.buffer] = Some(buf);
            self.state_bytes[a.buffer] = a.bytes;
            total += a.bytes;
        }
        self.state_dims = Some(all);
        Ok(total)
    }

    /// Keeps only rows `keep` (increasing, of the rows the state holds) of every state
    /// that has a `batch` axis, in that order, and binds `batch` to their number: rows that
    /// finished generating stop costing work. A state [outer.., batch, inner..] (a KV cache
    /// is [kv_seq, batch, heads, dim]) is laid out again for the smaller batch, in place.
    /// Returns false (changing nothing) when a state depends on `batch` otherwise.
    pub fn keep_rows(&mut self, keep: &[usize]) -> Result<bool, RuntimeError> {
        let Some(dims_at) = self.state_dims.clone() else {
            return Err(RuntimeError::State("no state is allocated".into()));
        };
        let held = dims_at
            .iter()
            .find(|(n, _)| n == "batch")
            .map(|(_, v)| *v as usize)
            .ok_or_else(|| RuntimeError::State("the session's state has no batch".into()))?;
        if keep.is_empty()
            || keep.windows(2).any(|w| w[0] >= w[1])
            || keep.last().is_some_and(|&k| k >= held)
        {
            return Err(RuntimeError::State(format!(
                "rows to keep {keep:?} are not increasing rows below {held}"
            )));
        }
        let m = &self.package.manifest;
        let dims: Vec<i64> = m
            .syms
            .iter()
            .map(|s| {
                dims_at
                    .iter()
                    .find(|(n, _)| n == s)
                    .map_or(-1, |(_, v)| *v as i64)
            })
            .collect();
        let product = |ds: &[SizeExpr]| -> Result<usize, RuntimeError> {
            ds.iter().try_fold(1usize, |acc, d| {
                acc.checked_mul(d.eval(&m.syms, &dims)? as usize)
                    .ok_or(RuntimeError::Alloc { bytes: u64::MAX })
            })
        };
        // (buffer, elements before the batch axis, bytes of one row after it)
        let mut moves = Vec::new();
        for st in &m.states {
            let on_batch: Vec<usize> = (0..st.shape.len())
                .filter(|&i| st.shape[i].symbols().contains(&"batch"))
                .collect();
            let axis = match on_batch.as_slice() {
                [] => continue,
                [a] if st.shape[*a].as_sym() == Some("batch") => *a,
                _ => return Ok(false),
            };
            let outer = product(&st.shape[..axis])?;
            let inner =
                product(&st.shape[axis + 1..])? * m.buffers[st.buffer].dtype.bytes() as usize;
            moves.push((st.buffer, outer, inner));
        }
        let new = keep.len();
        for (buffer, outer, row) in moves {
            let Some(buf) = &self.state[buffer] else {
                continue;
            };
            let len = outer * held * row;
            if len as u64 > self.state_bytes[buffer] {
                return Err(RuntimeError::State(
                    "a state is smaller than its shape".into(),
                ));
            }
            // SAFETY: the buffer holds `outer × held` rows of `row` bytes (allocated at
            // these bindings).
            let bytes = unsafe { std::slice::from_raw_parts_mut(buf.ptr(), len) };
            // Destinations never pass their sources (new ≤ held, i ≤ keep[i]), and both
            // increase: copying in order reads every source before it is overwritten.
            for o in 0..outer {
                for (i, &k) in keep.iter().enumerate() {
                    let (from, to) = ((o * held + k) * row, (o * new + i) * row);
                    if from != to {
                        bytes.copy_within(from..from + row, to);
                    }
                }
            }
        }
        if let Some(d) = &mut self.state_dims {
            for (n, v) in d.iter_mut() {
                if n == "batch" {
                    *v = new as u64;
                }
            }
        }
        Ok(true)
    }

    /// Overwrites the start of state `name` with `data` (an encoder's cross-attention keys
    /// and values, computed once per session by another program).
    pub fn set_state(&mut self, name: &str, data: &[f32]) -> Result<(), RuntimeError> {
        let (buf, _) = self.state_buffer(name)?;
        if data.len() * 4 > buf.capacity() {
            return Err(RuntimeError::State(format!(
                "state `{name}` holds {} values, given {}",
                buf.capacity() / 4,
                data.len()
            )));
        }
        // SAFETY: the buffer holds at least `data.len()` f32 values; no kernel runs now.
        unsafe {
            std::ptr::copy_nonoverlapping(data.as_ptr(), buf.ptr().cast::<f32>(), data.len())
        };
        Ok(())
    }

    /// State `name`'s buffer and its allocated bytes.
    fn state_buffer(&self, name: &str) -> Result<(&AlignedBuf, u64), RuntimeError> {
        let s = self
            .package
            .manifest
            .states
            .iter()
            .find(|s| s.name == name)
            .ok_or_else(|| RuntimeError::State(format!("the package has no state `{name}`")))?;
        let buf = self.state[s.buffer].as_ref().ok_or_else(|| {
            RuntimeError::State(format!(
                "state `{name}` is not allocated: start a session first"
            ))
        })?;
        Ok((buf, self.state_bytes[s.buffer]))
    }

    /// The current values of state `name` (a parameter or optimizer moment of a train
    /// package, a cache): every element the session allocated.
    pub fn state_data(&self, name: &str) -> Result<&[f32], RuntimeError> {
        let (buf, bytes) = self.state_buffer(name)?;
        // SAFETY: the buffer holds `bytes` bytes of f32 values, 64-byte aligned; no kernel
        // runs while `self` is borrowed.
        Ok(unsafe { std::slice::from_raw_parts(buf.ptr().cast::<f32>(), (bytes / 4) as usize) })
    }

    pub fn package(&self) -> &Package {
        &self.package
    }

    /// Overwrites parameter `name` (canonical) of the session's weights: a model whose
    /// parameters another session trains (ELECTRA's generator, sampled between steps).
    pub fn set_param(&mut self, name: &str, data: &[f32]) -> Result<(), RuntimeError> {
        let i = self
            .package
            .manifest
            .params
            .iter()
            .position(|p| p.name == name)
            .ok_or_else(|| RuntimeError::State(format!("the package has no parameter `{name}`")))?;
        self.weights.set(i, data)
    }

    pub fn weights(&self) -> &Weights {
        &self.weights
    }

    /// Runs entry point `entry` (`forward`) on `inputs` by name and returns every output of
    /// the manifest with its shape at the bound sizes, in manifest order. An absent
    /// `token_type_ids` is zeros; an input the package does not take is an error (an
    /// `attention_mask` silently ignored would change the results).
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
        let (given, dims) = prepare(m, inputs, self.state_dims.as_deref().unwrap_or(&[]))?;

        let bytes = buffer_bytes(m, &dims)?;
        let (slot_offset, total) = arena_layout(m, &bytes)?;
        let shapes = output_shapes(m, &dims, &bytes)?;
        let arena = ensure(&mut self.arena, total)?;

        let mut fresh: Vec<(usize, HostData)> = Vec::new();
        let mut bufs: Vec<*mut c_void> = Vec::with_capacity(m.buffers.len());
        for (b, &n) in m.buffers.iter().zip(&bytes) {
            let p = match b.kind {
                BufferKind::Input => ensure(&mut self.owned[b.id], n)?,
                // Outputs are written straight into the vectors handed to the caller:
                // no copy afterwards. (Kernels need only element alignment.)
                BufferKind::Output => {
                    let data = match b.dtype {
                        Dtype::F32 => HostData::F32(vec![0f32; n / 4]),
                        Dtype::I64 => HostData::I64(vec![0i64; n / 8]),
                        Dtype::Bf16 | Dtype::F16 => {
                            return Err(RuntimeError::Target(format!(
                                "output buffer {} is {}: packages give f32 and i64 outputs only",
                                b.id,
                                b.dtype.name()
                            )))
                        }
                    };
                    fresh.push((b.id, data));
                    match &mut fresh.last_mut().map(|f| &mut f.1) {
                        Some(HostData::F32(v)) => v.as_mut_ptr().cast(),
                        Some(HostData::I64(v)) => v.as_mut_ptr().cast(),
                        _ => std::ptr::null_mut(),
                    }
                }
                // SAFETY: the offset lies within the arena (sum of the slot sizes).
                BufferKind::Temp => unsafe { arena.add(slot_offset[b.slot.unwrap_or(0)]) },
                BufferKind::Param => {
                    let i = self.package.param_of_buffer[b.id].unwrap_or(usize::MAX);
                    self.weights.ptr(i).cast_mut().cast()
                }
                BufferKind::State => {
                    let held = self.state[b.id].as_ref().map(AlignedBuf::capacity);
                    check_state(m, b.id, &dims, self.state_dims.as_deref(), n, held)?;
                    let Some(buf) = &self.state[b.id] else {
                        return Err(RuntimeError::State("state is not allocated".into()));
                    };
                    buf.ptr()
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
            let args: Vec<*mut c_void> = m.kernels[k].args.iter().map(|&a| bufs[a]).collect();
            let launch = Launch {
                f: kernel.run,
                args: args.as_ptr(),
                dims: dims.as_ptr(),
                scratch: scratch.as_ptr(),
            };
            let started = self.profile.is_some().then(std::time::Instant::now);
            self.pool.run(n, &|b, e, w| launch.call(b, e, w))?;
            if let (Some(p), Some(t)) = (&mut self.profile, started) {
                p[k].0 += t.elapsed().as_secs_f64();
                p[k].1 += 1;
            }
        }

        let mut out = Vec::with_capacity(m.outputs.len());
        for (o, shape) in m.outputs.iter().zip(shapes) {
            let data = match fresh.iter().position(|(id, _)| *id == o.buffer) {
                Some(i) => fresh.swap_remove(i).1,
                None => {
                    return Err(RuntimeError::Kernel(format!(
                        "output `{}` has no buffer of its own",
                        o.name
                    )))
                }
            };
            out.push((o.name.clone(), HostTensor { shape, data }));
        }
        Ok(out)
    }
}

/// Whether state buffer `buffer` (allocated at `state_dims`, `held` bytes; `None`: not
/// allocated) serves a call at `dims` that needs `bytes` of it: the same batch, within its
/// capacity.
pub(crate) fn check_state(
    m: &Manifest,
    buffer: usize,
    dims: &[i64],
    state_dims: Option<&[(String, u64)]>,
    bytes: usize,
    held: Option<usize>,
) -> Result<(), RuntimeError> {
    let name = || {
        m.states
            .iter()
            .find(|s| s.buffer == buffer)
            .map_or("?", |s| s.name.as_str())
    };
    let (Some(at), Some(held)) = (state_dims, held) else {
        return Err(RuntimeError::State(format!(
            "state `{}` is not allocated: start a session first",
            name()
        )));
    };
    let sym = |s: &str| m.syms.iter().position(|x| x == s).map(|i| dims[i]);
    let value = |s: &str| at.iter().find(|(n, _)| n == s).map(|(_, v)| *v);
    let capacity = value(crate::manifest::KV_SEQ).unwrap_or(0);
    // States allocated per row (caches) fix the batch; a train package's parameters and
    // moments do not depend on it.
    if let (Some(batch), Some(v)) = (
        value("batch"),
        sym("batch").filter(|&v| Some(v as u64) != value("batch")),
    ) {
        return Err(RuntimeError::State(format!(
            "the session holds {batch} rows, the call has {v}"
        )));
    }
    if bytes > held {
        return Err(RuntimeError::State(format!(
            "state `{}` holds {capacity} tokens, the call needs {}",
            name(),
            sym(crate::manifest::KV_SEQ).unwrap_or(0)
        )));
    }
    Ok(())
}

/// The state buffers a session allocates, and the bindings they were sized at.
pub(crate) type StatePlan = (Vec<StateAlloc>, Vec<(String, u64)>);

/// One state buffer as a session allocates it.
pub(crate) struct StateAlloc {
    pub buffer: usize,
    pub bytes: u64,
    pub init: f32,
    pub dtype: Dtype,
}

/// The state buffers of `m` at `bindings` (plus the ring sizes `kv_win_{w}` =
/// min(w, capacity) of each sliding window), and the full bindings they were sized at.
pub(crate) fn state_plan(
    m: &Manifest,
    bindings: &[(&str, u64)],
) -> Result<StatePlan, RuntimeError> {
    let capacity = bindings
        .iter()
        .find(|(n, _)| *n == crate::manifest::KV_SEQ)
        .map(|(_, v)| *v);
    let mut all: Vec<(String, u64)> = bindings.iter().map(|(n, v)| (n.to_string(), *v)).collect();
    if let Some(c) = capacity {
        all.extend(m.syms.iter().filter_map(|s| {
            let w: u64 = s.strip_prefix(crate::manifest::KV_WINDOW)?.parse().ok()?;
            Some((s.clone(), w.min(c)))
        }));
    }
    let dims: Vec<i64> = m
        .syms
        .iter()
        .map(|s| {
            all.iter()
                .find(|(n, _)| n == s)
                .map_or(-1, |(_, v)| *v as i64)
        })
        .collect();
    let mut plan = Vec::with_capacity(m.states.len());
    for s in &m.states {
        let b = &m.buffers[s.buffer];
        if let Some(bad) = b
            .elems
            .symbols()
            .into_iter()
            .find(|x| !all.iter().any(|(n, _)| n == x))
        {
            return Err(RuntimeError::State(format!(
                "state `{}` depends on `{bad}`, which a session does not fix",
                s.name
            )));
        }
        let bytes = b
            .elems
            .eval(&m.syms, &dims)?
            .checked_mul(b.dtype.bytes())
            .ok_or(RuntimeError::Alloc { bytes: u64::MAX })?;
        plan.push(StateAlloc {
            buffer: s.buffer,
            bytes,
            init: s.init,
            dtype: b.dtype,
        });
    }
    Ok((plan, all))
}

/// What every backend's run starts with: the inputs checked by name, shape and limits, and
/// the symbols bound from their shapes (and from the session state's sizes).
pub(crate) fn prepare<'a>(
    m: &Manifest,
    inputs: &'a HashMap<String, HostTensor>,
    state_dims: &[(String, u64)],
) -> Result<(Vec<Given<'a>>, Vec<i64>), RuntimeError> {
    let mut names: Vec<&String> = inputs.keys().collect();
    names.sort();
    for name in names {
        if !m.inputs.iter().any(|i| &i.name == name) {
            let takes: Vec<&str> = m.inputs.iter().map(|i| i.name.as_str()).collect();
            let reason = if name == "attention_mask" {
                "this package was built without an attention mask (`archc build --attention-mask`)"
                    .to_string()
            } else {
                format!("the package takes only {}", takes.join(", "))
            };
            return Err(RuntimeError::Input {
                name: name.clone(),
                reason,
            });
        }
    }
    let given = gather_inputs(m, inputs)?;
    let dims = bind(m, &given, state_dims)?;
    for (spec, g) in m.inputs.iter().zip(&given) {
        if let Given::Tensor(t) = g {
            check_axes(m, spec, t, &dims)?;
            check_limits(m, spec, t)?;
        }
    }

    Ok((given, dims))
}

/// Every buffer's size in bytes at `dims`.
pub(crate) fn buffer_bytes(m: &Manifest, dims: &[i64]) -> Result<Vec<usize>, RuntimeError> {
    m.buffers
        .iter()
        .map(|b| {
            let elems = b.elems.eval(&m.syms, dims)?;
            elems
                .checked_mul(b.dtype.bytes())
                .and_then(|n| usize::try_from(n).ok())
                .ok_or_else(|| {
                    RuntimeError::Size(format!("buffer {} ({}) overflows", b.id, b.elems))
                })
        })
        .collect()
}

/// The arena: one 64-byte-aligned region per slot, as large as the largest of its buffers.
/// Returns each slot's offset and the total size.
pub(crate) fn arena_layout(
    m: &Manifest,
    bytes: &[usize],
) -> Result<(Vec<usize>, usize), RuntimeError> {
    let mut slot_bytes = vec![0usize; m.slots];
    for (b, &n) in m.buffers.iter().zip(bytes) {
        if let (BufferKind::Temp, Some(s)) = (b.kind, b.slot) {
            slot_bytes[s] = slot_bytes[s].max(round64(n)?);
        }
    }
    let mut offsets = Vec::with_capacity(m.slots);
    let mut total = 0usize;
    for n in slot_bytes {
        offsets.push(total);
        total = total
            .checked_add(n)
            .ok_or(RuntimeError::Alloc { bytes: u64::MAX })?;
    }
    Ok((offsets, total))
}

/// Each output's shape at `dims`, checked against its buffer's size.
pub(crate) fn output_shapes(
    m: &Manifest,
    dims: &[i64],
    bytes: &[usize],
) -> Result<Vec<Vec<usize>>, RuntimeError> {
    m.outputs
        .iter()
        .map(|o| {
            let shape = o
                .shape
                .iter()
                .map(|e| e.eval(&m.syms, dims).and_then(|v| to_usize(v, &o.name)))
                .collect::<Result<Vec<usize>, _>>()?;
            let elems = bytes[o.buffer] / o.dtype.bytes() as usize;
            if shape.iter().try_fold(1usize, |a, &d| a.checked_mul(d)) != Some(elems) {
                return Err(RuntimeError::Size(format!(
                    "output `{}` has shape {shape:?} but its buffer holds {elems} values",
                    o.name
                )));
            }
            Ok(shape)
        })
        .collect()
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

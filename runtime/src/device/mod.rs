//! Running cuda packages: a [`Device`] (allocate, copy, launch) and a [`DeviceSession`]
//! that runs a package's entry points on it — the GPU half of the session design
//! (DESIGN.md §10). Weights are uploaded once and stay on the device; each run uploads
//! the inputs, the symbol values and the kernels' buffer tables, launches the entry's
//! kernels in order on one stream, and downloads the outputs.
//!
//! - [`cuda::CudaDevice`]: the CUDA driver through cudarc, loaded at run time (a machine
//!   without a driver gets a clear error, never a panic).
//! - [`sim::SimDevice`]: host memory and the package's thread programs compiled for the
//!   host (`kernels.sim.so`), run by [`sim::run`] — the same session code, checked on
//!   any machine.

pub mod cuda;
pub mod sim;

use std::collections::HashMap;
use std::path::Path;

use crate::error::RuntimeError;
use crate::inputs::{copy_in, HostData, HostTensor};
use crate::manifest::{BufferKind, Dtype, Manifest};
use crate::session::{arena_layout, buffer_bytes, check_state, output_shapes, prepare, state_plan};
use crate::weights::Weights;

/// A device address.
pub type DevPtr = u64;

/// What a session needs of a device. Addresses are plain integers: the kernels receive
/// them in tables, and arithmetic on them (arena offsets) is the session's.
pub trait Device {
    /// The device in words (`NVIDIA H100 80GB HBM3, sm_90`).
    fn describe(&self) -> String;
    /// Streaming multiprocessors: kernels launch `blocks_per_sm` blocks on each.
    fn sm_count(&self) -> u32;
    /// `bytes` of zeroed device memory.
    fn alloc(&mut self, bytes: usize) -> Result<DevPtr, RuntimeError>;
    fn free(&mut self, p: DevPtr) -> Result<(), RuntimeError>;
    fn upload(&mut self, dst: DevPtr, data: &[u8]) -> Result<(), RuntimeError>;
    fn download(&mut self, src: DevPtr, out: &mut [u8]) -> Result<(), RuntimeError>;
    /// Launches kernel `k` of the package (manifest order) on `grid` blocks of `block`
    /// threads with its buffer table and the symbol values.
    fn launch(
        &mut self,
        k: usize,
        grid: u32,
        block: u32,
        table: DevPtr,
        dims: DevPtr,
    ) -> Result<(), RuntimeError>;
    /// Waits for every launch and copy so far.
    fn synchronize(&mut self) -> Result<(), RuntimeError>;
}

/// A device allocation that grows when a run needs more.
#[derive(Clone, Copy, Default, Debug)]
struct Region {
    ptr: DevPtr,
    bytes: usize,
}

/// A cuda package with its weights on a device, ready to run its entry points.
pub struct DeviceSession {
    manifest: Manifest,
    device: Box<dyn Device>,
    /// Each parameter's device copy.
    params: Vec<DevPtr>,
    param_of_buffer: Vec<Option<usize>>,
    arena: Region,
    /// Input and output buffers by buffer id.
    owned: Vec<Region>,
    tables: Region,
    /// What `tables` holds.
    uploaded_table: Vec<u64>,
    dims: Region,
    /// State buffers by buffer id (caches), allocated by `reset_state_at`.
    state: Vec<Option<Region>>,
    /// Bytes of each state buffer as planned (its region may be rounded up).
    state_bytes: Vec<u64>,
    state_dims: Option<Vec<(String, u64)>>,
}

impl std::fmt::Debug for DeviceSession {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DeviceSession")
            .field("model", &self.manifest.model)
            .field("device", &self.device.describe())
            .finish()
    }
}

/// The manifest of the cuda package in `dir`, checked to be one.
pub fn read_cuda_manifest(dir: &Path) -> Result<Manifest, RuntimeError> {
    let m = Manifest::read(dir)?;
    if m.target.kind != "cuda" {
        return Err(RuntimeError::Target(format!(
            "the package targets `{}`; --backend cuda runs packages built with `archc build --target cuda`",
            m.target.kind
        )));
    }
    if let Some(k) = m.kernels.iter().find(|k| k.launch.is_none()) {
        return Err(RuntimeError::Target(format!(
            "kernel `{}` of the cuda package has no launch shape",
            k.symbol
        )));
    }
    Ok(m)
}

/// The SM generation a cuda package was built for (`sm_80` → 80).
pub fn package_sm(m: &Manifest) -> Result<u32, RuntimeError> {
    m.target
        .isa
        .strip_prefix("sm_")
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| RuntimeError::Target(format!("unknown cuda target `{}`", m.target.isa)))
}

/// The device that runs the cuda package in `dir` (manifest `m`): GPU `gpu`, or with
/// `sim` the host simulator (a package built with `--sim`).
pub fn open_device(
    dir: &Path,
    m: &Manifest,
    sim: bool,
    gpu: usize,
) -> Result<Box<dyn Device>, RuntimeError> {
    Ok(if sim {
        Box::new(sim::SimDevice::open(dir, m)?)
    } else {
        Box::new(cuda::CudaDevice::open(dir, m, gpu)?)
    })
}

impl DeviceSession {
    /// Uploads `weights` (read for `manifest`) to `device`.
    pub fn new(
        manifest: Manifest,
        weights: &Weights,
        mut device: Box<dyn Device>,
    ) -> Result<DeviceSession, RuntimeError> {
        // f32s, or blocks (f16, bf16, quantized) as the file stores them: the kernels
        // decode them.
        let mut params = Vec::with_capacity(manifest.params.len());
        for bytes in weights.kernel_bytes(&manifest)? {
            let ptr = device.alloc(bytes.len().max(4))?;
            device.upload(ptr, bytes)?;
            params.push(ptr);
        }
        let mut param_of_buffer = vec![None; manifest.buffers.len()];
        for (i, p) in manifest.params.iter().enumerate() {
            param_of_buffer[p.buffer] = Some(i);
        }
        let owned = vec![Region::default(); manifest.buffers.len()];
        let state = vec![None; manifest.buffers.len()];
        let state_bytes = vec![0; manifest.buffers.len()];
        Ok(DeviceSession {
            state,
            state_bytes,
            state_dims: None,
            manifest,
            device,
            params,
            param_of_buffer,
            arena: Region::default(),
            owned,
            tables: Region::default(),
            uploaded_table: Vec::new(),
            dims: Region::default(),
        })
    }

    pub fn manifest(&self) -> &Manifest {
        &self.manifest
    }

    pub fn describe(&self) -> String {
        self.device.describe()
    }

    /// Runs entry point `entry` on `inputs`, as [`crate::Session::run`] does on the CPU.
    pub fn run(
        &mut self,
        entry: &str,
        inputs: &HashMap<String, HostTensor>,
    ) -> Result<Vec<(String, HostTensor)>, RuntimeError> {
        let outputs = self.launch_entry(entry, inputs)?;
        let dev = self.device.as_mut();
        let mut out = Vec::with_capacity(outputs.len());
        for (o, (ptr, shape, n)) in self.manifest.outputs.iter().zip(outputs) {
            let data = match o.dtype {
                Dtype::F32 => {
                    let mut v = vec![0f32; n / 4];
                    dev.download(ptr, as_bytes_mut(&mut v))?;
                    HostData::F32(v)
                }
                Dtype::I64 => {
                    let mut v = vec![0i64; n / 8];
                    dev.download(ptr, as_bytes_mut(&mut v))?;
                    HostData::I64(v)
                }
                Dtype::Bf16 | Dtype::F16 => {
                    return Err(RuntimeError::Target(format!(
                        "output `{}` is {}: packages give f32 and i64 outputs only",
                        o.name,
                        o.dtype.name()
                    )))
                }
            };
            out.push((o.name.clone(), HostTensor { shape, data }));
        }
        Ok(out)
    }

    /// [`DeviceSession::run`] without copying the outputs to the host: they stay in
    /// device memory until the next run. What a benchmark times against a framework whose
    /// results stay on the GPU.
    pub fn run_on_device(
        &mut self,
        entry: &str,
        inputs: &HashMap<String, HostTensor>,
    ) -> Result<(), RuntimeError> {
        self.launch_entry(entry, inputs).map(|_| ())
    }

    /// Uploads the inputs, launches the entry's kernels and waits for them; returns each
    /// output's device address, shape and bytes.
    fn launch_entry(
        &mut self,
        entry: &str,
        inputs: &HashMap<String, HostTensor>,
    ) -> Result<Vec<(DevPtr, Vec<usize>, usize)>, RuntimeError> {
        let m = &self.manifest;
        let kernels = m
            .entries
            .get(entry)
            .ok_or_else(|| RuntimeError::UnknownEntry {
                entry: entry.to_string(),
                available: m.entries.keys().cloned().collect(),
            })?
            .kernels
            .clone();
        let (given, dims) = prepare(m, inputs, self.state_dims.as_deref().unwrap_or(&[]))?;
        let bytes = buffer_bytes(m, &dims)?;
        let (slot_offset, total) = arena_layout(m, &bytes)?;
        let shapes = output_shapes(m, &dims, &bytes)?;
        let dev = self.device.as_mut();
        ensure(dev, &mut self.arena, total)?;
        let mut addr: Vec<DevPtr> = Vec::with_capacity(m.buffers.len());
        for (b, &n) in m.buffers.iter().zip(&bytes) {
            addr.push(match b.kind {
                BufferKind::Input | BufferKind::Output => {
                    ensure(dev, &mut self.owned[b.id], n)?;
                    self.owned[b.id].ptr
                }
                BufferKind::Temp => self.arena.ptr + slot_offset[b.slot.unwrap_or(0)] as u64,
                BufferKind::Param => {
                    let i = self.param_of_buffer[b.id].ok_or_else(|| {
                        RuntimeError::Kernel(format!("buffer {} is no parameter's", b.id))
                    })?;
                    self.params[i]
                }
                BufferKind::State => {
                    let region = self.state[b.id];
                    let held = region.map(|_| self.state_bytes[b.id] as usize);
                    check_state(m, b.id, &dims, self.state_dims.as_deref(), n, held)?;
                    region.map_or(0, |r| r.ptr)
                }
            });
        }
        for (spec, g) in m.inputs.iter().zip(&given) {
            let n = bytes[spec.buffer];
            let mut staging = vec![0u64; n.div_ceil(8)];
            copy_in(spec, g, staging.as_mut_ptr().cast(), n)?;
            dev.upload(addr[spec.buffer], &as_bytes(&staging)[..n])?;
        }
        // Every kernel's table, then the symbol values.
        let mut table: Vec<u64> = Vec::new();
        let mut starts = Vec::with_capacity(kernels.len());
        for &k in &kernels {
            let spec = m.kernels.get(k).ok_or_else(|| {
                RuntimeError::Kernel(format!(
                    "entry `{entry}` lists kernel {k}, which does not exist"
                ))
            })?;
            starts.push(table.len());
            table.extend(spec.args.iter().map(|&a| addr[a]));
        }
        // A decode step's tables are the previous step's (the same buffers): upload them
        // only when they change.
        let fresh = ensure(dev, &mut self.tables, table.len().max(1) * 8)?;
        if fresh || self.uploaded_table != table {
            dev.upload(self.tables.ptr, as_bytes(&table))?;
            self.uploaded_table = table;
        }
        ensure(dev, &mut self.dims, dims.len().max(1) * 8)?;
        dev.upload(self.dims.ptr, as_bytes(&dims))?;
        let sms = dev.sm_count();
        for (&k, start) in kernels.iter().zip(starts) {
            let launch = m.kernels[k]
                .launch
                .as_ref()
                .ok_or_else(|| RuntimeError::Kernel(format!("kernel {k} has no launch shape")))?;
            let grid = launch
                .blocks_per_sm
                .map_or(1, |n| n.saturating_mul(sms).max(1));
            dev.launch(
                k,
                grid,
                launch.block,
                self.tables.ptr + 8 * start as u64,
                self.dims.ptr,
            )?;
        }
        dev.synchronize()?;
        Ok(m.outputs
            .iter()
            .zip(shapes)
            .map(|(o, shape)| (addr[o.buffer], shape, bytes[o.buffer]))
            .collect())
    }
}

impl DeviceSession {
    /// Allocates every state buffer on the device at `bindings` (as
    /// [`crate::Session::reset_state_at`]), each element at its `init`; returns the bytes.
    pub fn reset_state_at(&mut self, bindings: &[(&str, u64)]) -> Result<u64, RuntimeError> {
        let (plan, all) = state_plan(&self.manifest, bindings)?;
        let dev = self.device.as_mut();
        let mut total = 0;
        for a in plan {
            if let Some(r) = self.state[a.buffer].take() {
                dev.free(r.ptr)?;
            }
            let mut r = Region::default();
            ensure(dev, &mut r, a.bytes as usize)?;
            if a.init != 0.0 {
                let fill = vec![a.init; (a.bytes / a.dtype.bytes()) as usize];
                match (half_type(a.dtype), a.dtype) {
                    (Some(ty), _) => {
                        let stored = crate::gguf::quantize(ty, &fill).unwrap_or_default();
                        dev.upload(r.ptr, &stored)?
                    }
                    (None, Dtype::F32) => dev.upload(r.ptr, as_bytes(&fill))?,
                    (None, _) => {}
                }
            }
            self.state[a.buffer] = Some(r);
            self.state_bytes[a.buffer] = a.bytes;
            total += a.bytes;
        }
        self.state_dims = Some(all);
        Ok(total)
    }

    /// [`DeviceSession::reset_state_at`] for `batch` rows and caches of `capacity` tokens.
    pub fn reset_state(&mut self, batch: u64, capacity: u64) -> Result<u64, RuntimeError> {
        self.reset_state_at(&[("batch", batch), (crate::manifest::KV_SEQ, capacity)])
    }

    /// State `name`'s region, its bytes and the type its values are stored in.
    fn state_region(&self, name: &str) -> Result<(Region, u64, Dtype), RuntimeError> {
        let s = self
            .manifest
            .states
            .iter()
            .find(|s| s.name == name)
            .ok_or_else(|| RuntimeError::State(format!("the package has no state `{name}`")))?;
        let r = self.state[s.buffer].ok_or_else(|| {
            RuntimeError::State(format!(
                "state `{name}` is not allocated: start a session first"
            ))
        })?;
        Ok((r, self.state_bytes[s.buffer], s.dtype))
    }

    /// Overwrites the start of state `name` with `data` (rounded to nearest even where the
    /// state is stored in half precision).
    pub fn set_state(&mut self, name: &str, data: &[f32]) -> Result<(), RuntimeError> {
        let (r, bytes, dtype) = self.state_region(name)?;
        let size = dtype.bytes();
        if data.len() as u64 * size > bytes {
            return Err(RuntimeError::State(format!(
                "state `{name}` holds {} values, given {}",
                bytes / size,
                data.len()
            )));
        }
        match half_type(dtype) {
            Some(ty) => {
                let stored = crate::gguf::quantize(ty, data)
                    .ok_or_else(|| RuntimeError::State(format!("state `{name}`: {dtype:?}")))?;
                self.device.upload(r.ptr, &stored)
            }
            None => self.device.upload(r.ptr, as_bytes(data)),
        }
    }

    /// The current values of state `name`, copied from the device (decoded to f32 where
    /// the state is stored in half precision).
    pub fn state_data(&mut self, name: &str) -> Result<Vec<f32>, RuntimeError> {
        let (r, bytes, dtype) = self.state_region(name)?;
        match half_type(dtype) {
            Some(ty) => {
                let mut raw = vec![0u8; bytes as usize];
                self.device.download(r.ptr, &mut raw)?;
                Ok(crate::gguf::dequantize(ty, &raw, (bytes / 2) as usize))
            }
            None => {
                let mut v = vec![0f32; (bytes / 4) as usize];
                self.device.download(r.ptr, as_bytes_mut(&mut v))?;
                Ok(v)
            }
        }
    }
}

/// The ggml type of a half-precision state (`None`: f32).
fn half_type(dtype: Dtype) -> Option<crate::gguf::GgmlType> {
    match dtype {
        Dtype::Bf16 => Some(crate::gguf::GgmlType::BF16),
        Dtype::F16 => Some(crate::gguf::GgmlType::F16),
        Dtype::F32 | Dtype::I64 => None,
    }
}

impl Drop for DeviceSession {
    fn drop(&mut self) {
        let regions = [self.arena, self.tables, self.dims];
        let owned = std::mem::take(&mut self.owned);
        let state: Vec<Region> = self.state.iter().flatten().copied().collect();
        for r in regions.iter().chain(&owned).chain(&state) {
            if r.bytes > 0 {
                let _ = self.device.free(r.ptr);
            }
        }
        for &p in &self.params {
            let _ = self.device.free(p);
        }
    }
}

/// `r` reallocated (zeroed) when smaller than `bytes`; whether it was.
fn ensure(dev: &mut dyn Device, r: &mut Region, bytes: usize) -> Result<bool, RuntimeError> {
    if r.bytes >= bytes && r.bytes > 0 {
        return Ok(false);
    }
    if r.bytes > 0 {
        dev.free(r.ptr)?;
        *r = Region::default();
    }
    let bytes = bytes.max(64).next_multiple_of(256);
    r.ptr = dev.alloc(bytes)?;
    r.bytes = bytes;
    Ok(true)
}

fn as_bytes<T: Copy>(v: &[T]) -> &[u8] {
    // SAFETY: plain numeric data (f32, i64, u64), viewed as its bytes.
    unsafe { std::slice::from_raw_parts(v.as_ptr().cast(), std::mem::size_of_val(v)) }
}

fn as_bytes_mut<T: Copy>(v: &mut [T]) -> &mut [u8] {
    // SAFETY: plain numeric data whose every bit pattern is valid.
    unsafe { std::slice::from_raw_parts_mut(v.as_mut_ptr().cast(), std::mem::size_of_val(v)) }
}

//! The CUDA driver as a [`Device`]: cudarc's driver bindings, loaded at run time, so the
//! runtime builds and runs on machines without CUDA; there `open` is an error that says
//! what is missing. The package's PTX is JIT-compiled by the driver when loaded.

use std::ffi::{c_void, CString};
use std::path::Path;
use std::sync::Arc;

use cudarc::driver::{result, sys, CudaContext, CudaStream};

use super::{package_sm, DevPtr, Device};
use crate::error::RuntimeError;
use crate::manifest::Manifest;
use crate::package::PTX_FILE;

fn err(what: &str) -> impl Fn(result::DriverError) -> RuntimeError + '_ {
    move |e| RuntimeError::Device(format!("{what}: {e}"))
}

/// A GPU with a package's kernels loaded.
pub struct CudaDevice {
    ctx: Arc<CudaContext>,
    stream: Arc<CudaStream>,
    module: sys::CUmodule,
    functions: Vec<sys::CUfunction>,
    /// Dynamic shared memory of each kernel's launch (0: its PTX declares what it uses).
    shared: Vec<u32>,
    sms: u32,
    name: String,
}

/// Whether this machine has the CUDA driver library; the error `open` would give if not.
pub fn driver_present() -> Result<(), RuntimeError> {
    // SAFETY: only probes whether the driver library can be loaded.
    if unsafe { sys::is_culib_present() } {
        Ok(())
    } else {
        Err(RuntimeError::Device(
            "no CUDA driver on this machine (libcuda.so could not be loaded): --backend cuda needs an NVIDIA GPU and its driver".into(),
        ))
    }
}

impl CudaDevice {
    /// Opens GPU `ordinal` and loads the PTX of the cuda package in `dir` (`m` its
    /// manifest). No driver, no such GPU, an older GPU than the package's SM generation,
    /// PTX the driver refuses: each a [`RuntimeError::Device`] that says so.
    pub fn open(dir: &Path, m: &Manifest, ordinal: usize) -> Result<CudaDevice, RuntimeError> {
        driver_present()?;
        let count = CudaContext::device_count().map_err(err("counting GPUs"))?;
        if ordinal as i64 >= count as i64 {
            return Err(RuntimeError::Device(format!(
                "GPU {ordinal} does not exist ({count} found)"
            )));
        }
        let ctx = CudaContext::new(ordinal).map_err(err("opening the GPU"))?;
        let attr = |a| {
            ctx.attribute(a)
                .map_err(err("reading the GPU's attributes"))
        };
        let major = attr(sys::CUdevice_attribute::CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR)?;
        let minor = attr(sys::CUdevice_attribute::CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MINOR)?;
        let sms = attr(sys::CUdevice_attribute::CU_DEVICE_ATTRIBUTE_MULTIPROCESSOR_COUNT)?;
        let have = (major * 10 + minor) as u32;
        let want = package_sm(m)?;
        let name = ctx.name().unwrap_or_else(|_| "GPU".into());
        if have < want {
            return Err(RuntimeError::Device(format!(
                "the package was built for sm_{want}, and {name} is sm_{have}: rebuild it with `archc build --target cuda --sm {}`",
                if have >= 90 { 90 } else { 80 }
            )));
        }
        // Arch-specific PTX (Hopper's warpgroup instructions) runs on that generation only.
        if m.target.cpu.ends_with('a') && m.target.cpu != format!("sm_{have}a") {
            return Err(RuntimeError::Device(format!(
                "the package was built for {} (ARCHC_MMA=wgmma), which runs on sm_{want} GPUs only, and {name} is sm_{have}: rebuild it without ARCHC_MMA=wgmma",
                m.target.cpu
            )));
        }
        let path = dir.join(PTX_FILE);
        let ptx = std::fs::read_to_string(&path).map_err(|e| RuntimeError::io(&path, &e))?;
        let src = CString::new(ptx)
            .map_err(|_| RuntimeError::Device(format!("{} holds a NUL byte", path.display())))?;
        ctx.bind_to_thread().map_err(err("binding the context"))?;
        // SAFETY: a NUL-terminated PTX text; the module lives until `drop`.
        let module = unsafe { result::module::load_data(src.as_ptr().cast()) }.map_err(|e| {
            RuntimeError::Device(format!(
                "the driver refused {} (built for {}): {e}",
                path.display(),
                m.target.isa
            ))
        })?;
        let mut functions = Vec::with_capacity(m.kernels.len());
        for k in &m.kernels {
            let name = CString::new(k.symbol.as_str())
                .map_err(|_| RuntimeError::Device(format!("kernel name {:?}", k.symbol)))?;
            // SAFETY: a loaded module and a C string.
            let f = unsafe { result::module::get_function(module, name) }
                .map_err(err(&format!("finding kernel `{}`", k.symbol)))?;
            functions.push(f);
        }
        // Dynamic shared memory past the 48 KiB a block may declare: allowed per kernel, up
        // to the device's opt-in limit.
        let optin =
            attr(sys::CUdevice_attribute::CU_DEVICE_ATTRIBUTE_MAX_SHARED_MEMORY_PER_BLOCK_OPTIN)?;
        let mut shared = Vec::with_capacity(m.kernels.len());
        for (k, &f) in m.kernels.iter().zip(&functions) {
            let dynamic = match &k.launch {
                Some(l) if l.dynamic_shared => l.shared_bytes,
                _ => 0,
            };
            if dynamic as i64 > optin as i64 {
                return Err(RuntimeError::Device(format!(
                    "kernel `{}` needs {dynamic} bytes of shared memory per block and {name} allows {optin}: rebuild with fewer matmul stages (ARCHC_STAGES)",
                    k.symbol
                )));
            }
            if dynamic > 0 {
                // SAFETY: a function of the loaded module.
                unsafe {
                    result::function::set_function_attribute(
                        f,
                        sys::CUfunction_attribute::CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES,
                        dynamic as i32,
                    )
                }
                .map_err(err(&format!(
                    "allowing kernel `{}` {dynamic} bytes of shared memory",
                    k.symbol
                )))?;
            }
            shared.push(dynamic);
        }
        Ok(CudaDevice {
            stream: ctx.default_stream(),
            ctx,
            module,
            functions,
            shared,
            sms: sms.max(1) as u32,
            name: format!("{name}, sm_{have}"),
        })
    }
}

impl Device for CudaDevice {
    fn describe(&self) -> String {
        self.name.clone()
    }

    fn sm_count(&self) -> u32 {
        self.sms
    }

    fn alloc(&mut self, bytes: usize) -> Result<DevPtr, RuntimeError> {
        self.ctx
            .bind_to_thread()
            .map_err(err("binding the context"))?;
        // SAFETY: a fresh allocation, zeroed on the stream before any use.
        unsafe {
            let p = result::malloc_sync(bytes).map_err(|e| {
                RuntimeError::Device(format!("allocating {bytes} bytes of GPU memory: {e}"))
            })?;
            result::memset_d8_async(p, 0, bytes, self.stream.cu_stream())
                .map_err(err("zeroing GPU memory"))?;
            Ok(p)
        }
    }

    fn free(&mut self, p: DevPtr) -> Result<(), RuntimeError> {
        self.synchronize()?;
        // SAFETY: `p` came from `alloc` and is freed once (the session's bookkeeping).
        unsafe { result::free_sync(p) }.map_err(err("freeing GPU memory"))
    }

    fn upload(&mut self, dst: DevPtr, data: &[u8]) -> Result<(), RuntimeError> {
        // SAFETY: `dst` lies in an allocation of at least `data.len()` bytes; the copy
        // completes before `data` can go away (synchronised below).
        unsafe { result::memcpy_htod_async(dst, data, self.stream.cu_stream()) }
            .map_err(err("copying to the GPU"))?;
        self.synchronize()
    }

    fn download(&mut self, src: DevPtr, out: &mut [u8]) -> Result<(), RuntimeError> {
        // SAFETY: as in `upload`.
        unsafe { result::memcpy_dtoh_async(out, src, self.stream.cu_stream()) }
            .map_err(err("copying from the GPU"))?;
        self.synchronize()
    }

    fn launch(
        &mut self,
        k: usize,
        grid: u32,
        block: u32,
        table: DevPtr,
        dims: DevPtr,
    ) -> Result<(), RuntimeError> {
        let f = *self
            .functions
            .get(k)
            .ok_or_else(|| RuntimeError::Kernel(format!("no kernel {k}")))?;
        let (mut a, mut b) = (table, dims);
        let mut params: [*mut c_void; 2] =
            [(&mut a as *mut u64).cast(), (&mut b as *mut u64).cast()];
        // SAFETY: the kernel takes (ptr, ptr); both point to live device memory.
        unsafe {
            result::launch_kernel(
                f,
                (grid, 1, 1),
                (block, 1, 1),
                // Static shared memory is declared by the PTX; past 48 KiB it is dynamic.
                self.shared.get(k).copied().unwrap_or(0),
                self.stream.cu_stream(),
                &mut params,
            )
        }
        .map_err(|e| {
            RuntimeError::Device(format!(
                "launching kernel {k} ({grid} blocks of {block}, {} bytes shared): {e}",
                self.shared.get(k).copied().unwrap_or(0)
            ))
        })
    }

    fn synchronize(&mut self) -> Result<(), RuntimeError> {
        self.stream.synchronize().map_err(err("running on the GPU"))
    }
}

impl Drop for CudaDevice {
    fn drop(&mut self) {
        let _ = self.stream.synchronize();
        // SAFETY: the module was loaded by `open` and is unloaded once.
        unsafe {
            let _ = result::module::unload(self.module);
        }
    }
}

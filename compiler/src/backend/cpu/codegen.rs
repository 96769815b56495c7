//! LLVM module → optimised object code for a [`CpuTarget`] → a shared library with a C
//! ABI, linked by the system C compiler (`$CC`, else `cc`) and loaded with `dlopen`.

use super::target::CpuTarget;
pub(crate) use crate::backend::llvm::{emit, optimize};
use crate::backend::{llvm_err, BackendError};
use inkwell::targets::{CodeModel, InitializationConfig, RelocMode, Target, TargetMachine};
use inkwell::OptimizationLevel;
use std::ffi::{c_void, CStr, CString};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicU64, Ordering};

/// A target machine for `target`: the host triple, position-independent code (it goes
/// into a shared library), LLVM's most aggressive code generation.
pub(crate) fn target_machine(target: &CpuTarget) -> Result<TargetMachine, BackendError> {
    Target::initialize_x86(&InitializationConfig::default());
    let triple = TargetMachine::get_default_triple();
    let llvm_target =
        Target::from_triple(&triple).map_err(|e| llvm_err("finding the target")(e.to_string()))?;
    llvm_target
        .create_target_machine(
            &triple,
            &target.cpu,
            &target.features,
            OptimizationLevel::Aggressive,
            RelocMode::PIC,
            CodeModel::Default,
        )
        .ok_or_else(|| {
            BackendError::Unsupported(format!(
                "LLVM cannot target CPU `{}` with `{}`",
                target.cpu, target.features
            ))
        })
}

/// A loaded shared library; closed when dropped, so function pointers taken from it
/// must not outlive it (the kernel types that own one guarantee that).
#[derive(Debug)]
pub struct SharedLibrary {
    handle: *mut c_void,
}

// SAFETY: a dlopen handle may be used from any thread (dlsym/dlclose are thread-safe),
// and the library's code holds no thread-affine state.
unsafe impl Send for SharedLibrary {}
unsafe impl Sync for SharedLibrary {}

impl SharedLibrary {
    /// Links `object` into a shared library in a fresh temporary directory, loads it and
    /// removes the files (the mapping stays valid), unless `ARCHC_KEEP_KERNELS` is set.
    pub fn link_and_load(object: &[u8]) -> Result<SharedLibrary, BackendError> {
        let dir = fresh_temp_dir()?;
        let result = link_in(&dir, object).and_then(|lib| SharedLibrary::load(&lib));
        if std::env::var_os("ARCHC_KEEP_KERNELS").is_some() {
            // For profilers and disassemblers, which need the file behind the mapping.
            eprintln!("archc: kept generated kernel library in {}", dir.display());
        } else {
            let _ = std::fs::remove_dir_all(&dir);
        }
        result
    }

    fn load(path: &Path) -> Result<SharedLibrary, BackendError> {
        let c_path = CString::new(path.as_os_str().as_encoded_bytes()).map_err(|_| {
            BackendError::Load(format!("path {} contains a NUL byte", path.display()))
        })?;
        // SAFETY: c_path is a valid C string; the library is our own generated code, whose
        // only initialisers are the C runtime's.
        let handle = unsafe { libc::dlopen(c_path.as_ptr(), libc::RTLD_NOW | libc::RTLD_LOCAL) };
        if handle.is_null() {
            return Err(BackendError::Load(format!(
                "dlopen {}: {}",
                path.display(),
                last_dl_error()
            )));
        }
        Ok(SharedLibrary { handle })
    }

    /// The address of an exported symbol.
    pub fn symbol(&self, name: &str) -> Result<*const c_void, BackendError> {
        let c_name = CString::new(name)
            .map_err(|_| BackendError::Load(format!("symbol name {name:?} contains NUL")))?;
        // SAFETY: handle is a live dlopen handle (closed only in Drop); c_name is valid.
        let p = unsafe { libc::dlsym(self.handle, c_name.as_ptr()) };
        if p.is_null() {
            return Err(BackendError::Load(format!(
                "symbol `{name}` not found: {}",
                last_dl_error()
            )));
        }
        Ok(p as *const c_void)
    }
}

impl Drop for SharedLibrary {
    fn drop(&mut self) {
        // SAFETY: handle came from dlopen and is closed exactly once.
        unsafe { libc::dlclose(self.handle) };
    }
}

fn last_dl_error() -> String {
    // SAFETY: dlerror returns null or a valid C string owned by the C library.
    let msg = unsafe { libc::dlerror() };
    if msg.is_null() {
        "unknown error".to_string()
    } else {
        // SAFETY: non-null, NUL-terminated, valid until the next dl* call on this thread.
        unsafe { CStr::from_ptr(msg) }
            .to_string_lossy()
            .into_owned()
    }
}

fn fresh_temp_dir() -> Result<PathBuf, BackendError> {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let base = std::env::temp_dir();
    for _ in 0..16 {
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0);
        let dir = base.join(format!("archc-{}-{n}-{nanos}", std::process::id()));
        match std::fs::create_dir(&dir) {
            Ok(()) => return Ok(dir),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
            Err(e) => {
                return Err(BackendError::Link(format!(
                    "cannot create a directory in {}: {e}",
                    base.display()
                )))
            }
        }
    }
    Err(BackendError::Link(format!(
        "cannot find a fresh directory name in {}",
        base.display()
    )))
}

fn link_in(dir: &Path, object: &[u8]) -> Result<PathBuf, BackendError> {
    let obj = dir.join("kernel.o");
    let lib = dir.join("kernel.so");
    std::fs::write(&obj, object)
        .map_err(|e| BackendError::Link(format!("cannot write {}: {e}", obj.display())))?;
    let cc = std::env::var("CC").unwrap_or_else(|_| "cc".to_string());
    let out = Command::new(&cc)
        .arg("-shared")
        .arg("-o")
        .arg(&lib)
        .arg(&obj)
        .output()
        .map_err(|e| {
            BackendError::Link(format!(
                "cannot run the C compiler `{cc}` (install build-essential or set CC): {e}"
            ))
        })?;
    if !out.status.success() {
        return Err(BackendError::Link(format!(
            "`{cc} -shared` failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    Ok(lib)
}

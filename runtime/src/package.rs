//! Package directory → [`Package`]: the manifest read and checked, `kernels.so` opened
//! (dlopen, closed on drop) and every kernel's `symbol` and `range` resolved to a function
//! of the C ABI of docs/PACKAGE.md; a target this CPU cannot run is refused up front.

use std::ffi::{c_void, CString};
use std::path::{Path, PathBuf};

use crate::error::RuntimeError;
use crate::manifest::{Manifest, Target};

/// The file name of the kernel library inside a package directory.
pub const KERNELS_FILE: &str = "kernels.so";
/// The PTX module of a cuda package.
pub const PTX_FILE: &str = "kernels.ptx";

/// `void SYMBOL(void *const *args, const int64_t *dims, int64_t begin, int64_t end, float *scratch)`:
/// `args[i]` is the address of buffer `kernels[k].args[i]`.
pub type KernelFn = unsafe extern "C" fn(
    args: *const *mut c_void,
    dims: *const i64,
    begin: i64,
    end: i64,
    scratch: *mut f32,
);
/// `int64_t RANGE(const int64_t *dims)`.
pub type RangeFn = unsafe extern "C" fn(dims: *const i64) -> i64;

/// A shared library (`kernels.so`, the simulator's `kernels.sim.so`), open while held.
pub(crate) struct Library {
    handle: *mut c_void,
    path: PathBuf,
}

// SAFETY: a dlopen handle may be used from any thread; the library's code is immutable.
unsafe impl Send for Library {}
unsafe impl Sync for Library {}

impl Library {
    pub(crate) fn open(path: &Path) -> Result<Library, RuntimeError> {
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

    pub(crate) fn symbol(&self, name: &str) -> Option<*mut c_void> {
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
pub(crate) struct Kernel {
    pub(crate) run: KernelFn,
    pub(crate) range: RangeFn,
}

/// A loaded package: its manifest and its kernels, resolved.
pub struct Package {
    pub(crate) manifest: Manifest,
    dir: PathBuf,
    pub(crate) kernels: Vec<Kernel>,
    /// For each buffer, its parameter's index when it is a parameter buffer.
    pub(crate) param_of_buffer: Vec<Option<usize>>,
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

//! Slices and shapes → the generated f32 matmul. [`SgemmKernel::compile`] generates,
//! optimises, links and loads `archc_sgemm` for one target; [`SgemmKernel::run`] checks
//! the buffers against the shapes, splits C into column (or row) blocks, one per thread,
//! and calls the generated code on each with its own packing workspace.

use super::codegen::{self, SharedLibrary};
use super::ir::Ir;
use super::sgemm_ir::{emit_sgemm, SgemmTiles, SGEMM_SYMBOL};
use super::target::CpuTarget;
use crate::backend::BackendError;
use inkwell::context::Context;
use inkwell::targets::FileType;
use std::sync::{Mutex, OnceLock};

/// What to build: the target and how many threads a call uses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SgemmConfig {
    pub target: CpuTarget,
    pub threads: usize,
}

impl SgemmConfig {
    /// The host CPU with one thread per available core.
    pub fn host() -> Result<SgemmConfig, BackendError> {
        let threads = std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1);
        Ok(SgemmConfig {
            target: CpuTarget::host()?,
            threads,
        })
    }
}

/// Below this many multiply-adds one thread is faster than starting more.
const MIN_MACS_PER_THREAD: usize = 32 * 32 * 32;

type SgemmFn =
    unsafe extern "C" fn(i64, i64, i64, *const f32, i64, *const f32, i64, *mut f32, i64, *mut f32);

/// A compiled, loaded matmul for one target. `Send + Sync`: one kernel may serve calls
/// from many threads (each call takes its own workspaces).
pub struct SgemmKernel {
    func: SgemmFn,
    tiles: SgemmTiles,
    config: SgemmConfig,
    /// Packing buffers kept between calls, so a call does not fault in fresh pages.
    workspaces: Mutex<Vec<Workspace>>,
    /// Owns the code `func` points into; declared last so it is dropped last.
    _library: SharedLibrary,
}

impl std::fmt::Debug for SgemmKernel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SgemmKernel")
            .field("tiles", &self.tiles)
            .field("config", &self.config)
            .finish()
    }
}

impl SgemmKernel {
    /// Generates, optimises, links and loads the matmul for `config.target`.
    pub fn compile(config: &SgemmConfig) -> Result<SgemmKernel, BackendError> {
        let isa = config.target.isa;
        if !isa.runs_here() {
            return Err(BackendError::Unsupported(format!(
                "this CPU cannot run {isa} code"
            )));
        }
        let tiles = SgemmTiles::for_isa(isa);
        let object = sgemm_code(&config.target, &tiles, FileType::Object)?;
        let library = SharedLibrary::link_and_load(&object)?;
        let symbol = library.symbol(SGEMM_SYMBOL)?;
        // SAFETY: the symbol is the function emit_sgemm defined with exactly this C
        // signature; `library` keeps it mapped for as long as `func` is reachable.
        let func: SgemmFn =
            unsafe { std::mem::transmute::<*const std::ffi::c_void, SgemmFn>(symbol) };
        Ok(SgemmKernel {
            func,
            tiles,
            config: SgemmConfig {
                target: config.target.clone(),
                threads: config.threads.max(1),
            },
            workspaces: Mutex::new(Vec::new()),
            _library: library,
        })
    }

    pub fn tiles(&self) -> SgemmTiles {
        self.tiles
    }

    pub fn config(&self) -> &SgemmConfig {
        &self.config
    }

    /// `c = a · b` for row-major `a` (m×k), `b` (k×n) and `c` (m×n). Every length is
    /// checked against the shape; a mismatch is an error and leaves `c` untouched.
    pub fn run(
        &self,
        a: &[f32],
        b: &[f32],
        c: &mut [f32],
        m: usize,
        n: usize,
        k: usize,
    ) -> Result<(), BackendError> {
        check_len("a", a.len(), m, k)?;
        check_len("b", b.len(), k, n)?;
        check_len("c", c.len(), m, n)?;
        if m == 0 || n == 0 {
            return Ok(());
        }
        if k == 0 {
            c.fill(0.0);
            return Ok(());
        }
        let blocks = split(m, n, k, self.config.threads, &self.tiles);
        let mut spaces = self.take_workspaces(blocks.len());
        let (a, b, c_ptr) = (
            SendPtr(a.as_ptr() as *mut f32),
            SendPtr(b.as_ptr() as *mut f32),
            SendPtr(c.as_mut_ptr()),
        );
        let call = |blk: Block, ws: &mut Workspace| {
            // SAFETY: lengths were checked above, and `blk` lies inside m×n, so every
            // element the generated code reads (a rows blk.row.., b columns blk.col..)
            // and writes (the blk rows × columns of c) is in bounds; blocks are disjoint,
            // so threads never write the same element; the workspace holds
            // tiles.workspace_floats() aligned floats and belongs to this call alone.
            unsafe {
                (self.func)(
                    blk.rows as i64,
                    blk.cols as i64,
                    k as i64,
                    a.get().add(blk.row * k),
                    k as i64,
                    b.get().add(blk.col),
                    n as i64,
                    c_ptr.get().add(blk.row * n + blk.col),
                    n as i64,
                    ws.as_mut_ptr(),
                )
            }
        };
        match blocks.as_slice() {
            [only] => call(*only, &mut spaces[0]),
            _ => std::thread::scope(|s| {
                for (blk, ws) in blocks.iter().zip(spaces.iter_mut()) {
                    let call = &call;
                    s.spawn(move || call(*blk, ws));
                }
            }),
        }
        self.workspaces
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .extend(spaces);
        Ok(())
    }

    fn take_workspaces(&self, count: usize) -> Vec<Workspace> {
        let mut pool = self.workspaces.lock().unwrap_or_else(|e| e.into_inner());
        let keep = pool.len().saturating_sub(count);
        let mut taken: Vec<Workspace> = pool.drain(keep..).collect();
        drop(pool);
        while taken.len() < count {
            taken.push(Workspace::new(self.tiles.workspace_floats()));
        }
        taken
    }
}

/// `c = a · b` (row-major, `a` m×k, `b` k×n) with the host's kernel, generated on the
/// first call and kept for the life of the process.
pub fn sgemm(
    a: &[f32],
    b: &[f32],
    c: &mut [f32],
    m: usize,
    n: usize,
    k: usize,
) -> Result<(), BackendError> {
    static HOST: OnceLock<Result<SgemmKernel, BackendError>> = OnceLock::new();
    let kernel =
        HOST.get_or_init(|| SgemmConfig::host().and_then(|cfg| SgemmKernel::compile(&cfg)));
    match kernel {
        Ok(kernel) => kernel.run(a, b, c, m, n, k),
        Err(e) => Err(e.clone()),
    }
}

/// The generated module as LLVM IR text, before or after the O3 pipeline.
pub fn sgemm_llvm_ir(target: &CpuTarget, optimized: bool) -> Result<String, BackendError> {
    let ctx = Context::create();
    let ir = Ir::new(&ctx, "archc_sgemm");
    emit_sgemm(&ir, &SgemmTiles::for_isa(target.isa))?;
    if optimized {
        codegen::optimize(&ir.module, &codegen::target_machine(target)?)?;
    }
    Ok(ir.module.print_to_string().to_string())
}

/// The generated matmul as assembly for `target` (whether or not this CPU can run it).
pub fn sgemm_assembly(target: &CpuTarget) -> Result<String, BackendError> {
    let text = sgemm_code(target, &SgemmTiles::for_isa(target.isa), FileType::Assembly)?;
    Ok(String::from_utf8_lossy(&text).into_owned())
}

fn sgemm_code(
    target: &CpuTarget,
    tiles: &SgemmTiles,
    kind: FileType,
) -> Result<Vec<u8>, BackendError> {
    let ctx = Context::create();
    let ir = Ir::new(&ctx, "archc_sgemm");
    emit_sgemm(&ir, tiles)?;
    let tm = codegen::target_machine(target)?;
    codegen::optimize(&ir.module, &tm)?;
    codegen::emit(&ir.module, &tm, kind)
}

fn check_len(name: &str, len: usize, rows: usize, cols: usize) -> Result<(), BackendError> {
    let want = rows
        .checked_mul(cols)
        .filter(|&w| w <= i64::MAX as usize)
        .ok_or_else(|| BackendError::Shape(format!("{name}: {rows}×{cols} elements overflow")))?;
    if len != want {
        return Err(BackendError::Shape(format!(
            "{name} has {len} elements; {rows}×{cols} needs {want}"
        )));
    }
    Ok(())
}

/// One thread's share of C: rows `row..row+rows`, columns `col..col+cols`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Block {
    row: usize,
    rows: usize,
    col: usize,
    cols: usize,
}

/// Splits C among up to `threads` threads along its longer side, in whole register
/// tiles, so each thread packs only its own part of B (column split) or A (row split).
fn split(m: usize, n: usize, k: usize, threads: usize, t: &SgemmTiles) -> Vec<Block> {
    let macs = m.saturating_mul(n).saturating_mul(k);
    let threads = threads.min(macs / MIN_MACS_PER_THREAD).max(1);
    let (len, unit) = if n >= m {
        (n, t.nr as usize)
    } else {
        (m, t.mr as usize)
    };
    let chunk = len.div_ceil(threads).div_ceil(unit) * unit;
    (0..len)
        .step_by(chunk.max(1))
        .map(|start| {
            let size = chunk.min(len - start);
            if n >= m {
                Block {
                    row: 0,
                    rows: m,
                    col: start,
                    cols: size,
                }
            } else {
                Block {
                    row: start,
                    rows: size,
                    col: 0,
                    cols: n,
                }
            }
        })
        .collect()
}

/// A pointer that may cross into the scoped threads of one call (see the SAFETY note
/// in `run`). Read through `get` so closures capture the wrapper, not the raw pointer.
#[derive(Clone, Copy)]
struct SendPtr(*mut f32);
// SAFETY: only used within one `run`, whose checks make the threads' accesses disjoint.
unsafe impl Send for SendPtr {}
unsafe impl Sync for SendPtr {}
impl SendPtr {
    fn get(&self) -> *mut f32 {
        self.0
    }
}

/// A packing buffer aligned to a 64-byte cache line.
struct Workspace {
    buf: Vec<f32>,
    offset: usize,
}

impl Workspace {
    fn new(floats: usize) -> Workspace {
        let buf = vec![0.0f32; floats + 16];
        let offset = buf.as_ptr().align_offset(64).min(16);
        Workspace { buf, offset }
    }

    fn as_mut_ptr(&mut self) -> *mut f32 {
        self.buf[self.offset..].as_mut_ptr()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::cpu::VectorIsa;

    #[test]
    fn split_covers_c_in_whole_tiles() {
        let t = SgemmTiles::for_isa(VectorIsa::Avx2);
        let blocks = split(256, 768, 768, 2, &t);
        assert_eq!(
            blocks,
            vec![
                Block {
                    row: 0,
                    rows: 256,
                    col: 0,
                    cols: 384
                },
                Block {
                    row: 0,
                    rows: 256,
                    col: 384,
                    cols: 384
                }
            ]
        );
        let blocks = split(783, 50, 100, 2, &t);
        assert_eq!(
            blocks,
            vec![
                Block {
                    row: 0,
                    rows: 396,
                    col: 0,
                    cols: 50
                },
                Block {
                    row: 396,
                    rows: 387,
                    col: 0,
                    cols: 50
                }
            ]
        );
        assert_eq!(split(3, 3, 3, 2, &t).len(), 1);
    }
}

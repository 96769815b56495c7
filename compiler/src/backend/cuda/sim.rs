//! The host simulator: runs the CUDA backend's thread programs, compiled for this CPU
//! ([`Mode::Host`](super::Mode)), with one OS thread per GPU thread. Blocks run one after
//! another; the threads of a block run concurrently and meet at real barriers, and the
//! lanes of a warp exchange values through a per-warp slot array for each shuffle. What
//! it checks: the index arithmetic, tiling, bounds, barrier placement and shuffle
//! reductions of every kernel kind, against the evaluator. What it cannot: PTX itself
//! (`ptxas` checks that), timing, and memory-model effects across blocks.

use super::{lower_sim, Grid, KernelLaunch};
use crate::backend::cpu::SharedLibrary;
use crate::kernel::{BufId, Program};
use std::ffi::c_void;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Barrier;

/// The context a simulated thread's kernel reads (the slots of `simt::CTX_*`).
#[repr(C)]
struct Ctx {
    tid: i64,
    ntid: i64,
    ctaid: i64,
    nctaid: i64,
    shared: *mut f32,
    barrier: extern "C" fn(*const Ctx),
    shfl: extern "C" fn(*const Ctx, f32, i32) -> f32,
    block: *const BlockSync,
}

struct WarpSync {
    barrier: Barrier,
    slots: Vec<AtomicU32>,
}

struct BlockSync {
    barrier: Barrier,
    warps: Vec<WarpSync>,
}

impl BlockSync {
    fn new(threads: usize) -> BlockSync {
        BlockSync {
            barrier: Barrier::new(threads),
            warps: (0..threads.div_ceil(32))
                .map(|_| WarpSync {
                    barrier: Barrier::new(32),
                    slots: (0..32).map(|_| AtomicU32::new(0)).collect(),
                })
                .collect(),
        }
    }
}

extern "C" fn sim_barrier(ctx: *const Ctx) {
    // SAFETY: the kernel passes back the context its thread was started with, whose block
    // outlives every thread of the block.
    unsafe { (*(*ctx).block).barrier.wait() };
}

extern "C" fn sim_shfl(ctx: *const Ctx, v: f32, mask: i32) -> f32 {
    // SAFETY: as in `sim_barrier`.
    let (ctx, block) = unsafe { (&*ctx, &*(*ctx).block) };
    let warp = &block.warps[(ctx.tid / 32) as usize];
    let lane = (ctx.tid % 32) as usize;
    warp.slots[lane].store(v.to_bits(), Ordering::SeqCst);
    warp.barrier.wait();
    let r = f32::from_bits(warp.slots[lane ^ (mask as usize & 31)].load(Ordering::SeqCst));
    warp.barrier.wait();
    r
}

type SimKernel = unsafe extern "C" fn(*const *mut c_void, *const i64, *const Ctx);

/// A buffer of the simulated device.
#[derive(Clone, Debug, PartialEq)]
pub enum SimData {
    F32(Vec<f32>),
    I64(Vec<i64>),
}

impl SimData {
    fn ptr(&mut self) -> *mut c_void {
        match self {
            SimData::F32(v) => v.as_mut_ptr().cast(),
            SimData::I64(v) => v.as_mut_ptr().cast(),
        }
    }
}

/// Raw pointers handed to the simulated threads (each thread reads them only).
#[derive(Clone, Copy)]
struct Shared<T>(T);
// SAFETY: the simulated kernels write disjoint elements or synchronise through barriers,
// as the same kernels must on a GPU.
unsafe impl<T> Send for Shared<T> {}
unsafe impl<T> Sync for Shared<T> {}

/// A program's thread programs, loaded for simulation.
pub struct Simulator {
    fns: Vec<SimKernel>,
    launches: Vec<KernelLaunch>,
    args: Vec<Vec<BufId>>,
    threads: u64,
    _lib: SharedLibrary,
}

impl Simulator {
    /// Lowers `prog` for the host simulator and loads it.
    pub fn new(prog: &Program) -> Result<Simulator, String> {
        let lowered = lower_sim(prog).map_err(|e| e.to_string())?;
        let lib = SharedLibrary::link_and_load(&lowered.object).map_err(|e| e.to_string())?;
        let mut fns = Vec::new();
        for l in &lowered.kernels {
            let p = lib.symbol(&l.symbol).map_err(|e| e.to_string())?;
            // SAFETY: `Mode::Host` kernels have exactly this signature.
            fns.push(unsafe { std::mem::transmute::<*const c_void, SimKernel>(p) });
        }
        Ok(Simulator {
            fns,
            launches: lowered.kernels,
            args: prog.kernels.iter().map(|k| k.buffers()).collect(),
            threads: lowered.threads,
            _lib: lib,
        })
    }

    /// Runs every kernel in order over `bufs` (one per buffer of the program, sized by
    /// the caller for `dims`), each with the grid a one-SM GPU would get. One set of
    /// threads runs every block of every kernel, meeting at a barrier between blocks.
    pub fn run(&self, dims: &[i64], bufs: &mut [SimData]) -> Result<(), String> {
        let ptrs: Vec<*mut c_void> = bufs.iter_mut().map(SimData::ptr).collect();
        let threads = self.threads as usize;
        let tables: Vec<Vec<*mut c_void>> = self
            .args
            .iter()
            .map(|args| args.iter().map(|&b| ptrs[b]).collect())
            .collect();
        let floats = self
            .launches
            .iter()
            .map(|l| l.shared_bytes / 4)
            .max()
            .unwrap_or(0);
        let mut shared = vec![0f32; floats as usize + 1];
        let sync = BlockSync::new(threads);
        let between = Barrier::new(threads);
        let work: Vec<(SimKernel, i64, *const *mut c_void)> = self
            .fns
            .iter()
            .zip(&self.launches)
            .zip(&tables)
            .map(|((f, l), table)| {
                let grid = match l.grid {
                    Grid::PerSm(n) => n as i64,
                    Grid::One => 1,
                };
                (*f, grid, table.as_ptr())
            })
            .collect();
        let sh = Shared((
            shared.as_mut_ptr(),
            &sync as *const BlockSync,
            dims.as_ptr(),
            &work,
            &between,
        ));
        std::thread::scope(|s| {
            for t in 0..threads {
                s.spawn(move || {
                    let sh = sh;
                    let (smem, sync, dims, work, between) = sh.0;
                    for &(f, grid, table) in work {
                        for block in 0..grid {
                            let ctx = Ctx {
                                tid: t as i64,
                                ntid: threads as i64,
                                ctaid: block,
                                nctaid: grid,
                                shared: smem,
                                barrier: sim_barrier,
                                shfl: sim_shfl,
                                block: sync,
                            };
                            // SAFETY: the table holds one live buffer per kernel argument,
                            // sized for `dims` by the caller.
                            unsafe { f(table, dims, &ctx) };
                            between.wait();
                        }
                    }
                });
            }
        });
        Ok(())
    }
}

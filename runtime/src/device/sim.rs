//! The host simulator of cuda kernels: a package's thread programs compiled for this CPU
//! (`kernels.sim.so`, which `archc build --target cuda --sim` adds), each GPU thread of a
//! block a fiber (a stackful coroutine) on the calling OS thread. Blocks run one after
//! another; the threads of a block take turns, each running until it waits at a barrier
//! or a warp exchange, and the lanes of a warp exchange values through per-warp slot
//! arrays for each warp reduction and `mma`. It checks what can go wrong in a thread
//! program short of the hardware — index arithmetic, tiling, bounds, barrier placement,
//! shuffle reductions, the session's buffer tables and launch shapes — on any machine;
//! not PTX itself (`ptxas` checks that) and not timing. Threads that wait at barriers
//! not all of them reach are reported, not left to hang.
//!
//! Fibers, not OS threads: with dozens of threads per block on a few cores, waiting
//! threads handing the cores back and forth cost more than the kernels, and more the
//! busier the machine (a test of the simulator beside another test ran three times
//! slower); a fiber switch is a few instructions, and one OS thread per simulation
//! leaves the other cores to whatever else runs.

use corosensei::stack::DefaultStack;
use corosensei::{Coroutine, CoroutineResult, Yielder};
use std::cell::Cell;
use std::ffi::c_void;

/// A reusable barrier for `n` simulated threads: the last to arrive starts a new
/// generation and goes on; the others yield their turn until it has. The simulated
/// threads of a run share one OS thread, so the simulator's shared state is plain cells.
struct Barrier {
    n: usize,
    count: Cell<usize>,
    generation: Cell<usize>,
}

impl Barrier {
    fn new(n: usize) -> Barrier {
        Barrier {
            n,
            count: Cell::new(0),
            generation: Cell::new(0),
        }
    }

    fn wait(&self) {
        ARRIVALS.with(|a| a.set(a.get() + 1));
        let g = self.generation.get();
        self.count.set(self.count.get() + 1);
        if self.count.get() == self.n {
            self.count.set(0);
            self.generation.set(g + 1);
            return;
        }
        while self.generation.get() == g {
            yield_turn();
        }
    }
}

/// What a simulated thread keeps of its own: its fiber's way back to the scheduler, and
/// the exchange area its next warp exchange uses. Every lane of a warp makes the same
/// exchanges in the same order (a reduction or `mma` that some lanes skip would leave
/// the warp waiting), and threads start with the same area, so the lanes of a warp agree
/// on it.
struct Fiber {
    yielder: *const Yielder<(), ()>,
    area: Cell<usize>,
    /// This thread's `cp.async` copies not landed yet.
    copies: std::cell::RefCell<AsyncCopies>,
}

/// One thread's asynchronous copies to shared memory (`cp.async`), landed as late as
/// PTX allows — at the `cp.async.wait_group` that leaves their group behind — while
/// their destinations hold NaN from the copy's issue on: a thread reading a stage before
/// its wait, or a copy issued into a stage others still read, sees NaN in its results
/// instead of the right values by luck of timing.
#[derive(Default)]
struct AsyncCopies {
    /// Copies issued since the last commit.
    open: Vec<AsyncCopy>,
    /// Committed groups, oldest first.
    groups: std::collections::VecDeque<Vec<AsyncCopy>>,
}

/// 16 bytes to write at `dst`, read from the source when the copy was issued.
struct AsyncCopy {
    dst: *mut u8,
    data: [u8; 16],
}

std::thread_local! {
    /// The simulated thread running on this OS thread, if any.
    static CURRENT: Cell<*const Fiber> = const { Cell::new(std::ptr::null()) };
    /// Barrier arrivals so far on this OS thread: the scheduler's evidence of progress.
    static ARRIVALS: Cell<u64> = const { Cell::new(0) };
}

/// Hands the turn to the next simulated thread; back when the scheduler comes round.
fn yield_turn() {
    let me = CURRENT.with(Cell::get);
    assert!(
        !me.is_null(),
        "a simulator barrier outside a simulated thread"
    );
    // SAFETY: `me` is the running fiber's state, on its own stack, alive while it runs;
    // its yielder belongs to the coroutine that is running it.
    unsafe { (*(*me).yielder).suspend(()) };
    // Other fibers ran meanwhile on this OS thread and set theirs.
    CURRENT.with(|c| c.set(me));
}

/// This thread's exchange area, and the next one's.
fn next_area() -> usize {
    let me = CURRENT.with(Cell::get);
    assert!(!me.is_null(), "a warp exchange outside a simulated thread");
    // SAFETY: as in `yield_turn`.
    let area = unsafe { &(*me).area };
    let i = area.get();
    area.set(i ^ 1);
    i
}

/// The context a simulated thread's kernel reads: 8-byte slots in this order (the
/// compiler's `backend::cuda::simt` reads them by position).
#[repr(C)]
pub struct SimCtx {
    tid: i64,
    ntid: i64,
    ctaid: i64,
    nctaid: i64,
    shared: *mut f32,
    barrier: extern "C" fn(*const SimCtx),
    block: *const BlockSync,
    mma: MmaFn,
    reduce: extern "C" fn(*const SimCtx, f32, i32, i32) -> f32,
    mma16: MmaFn,
    wgmma: WgmmaFn,
    /// Bytes of the block's shared memory.
    shared_bytes: i64,
    cp_async: extern "C" fn(*const SimCtx, *mut u8, *const u8, i64),
    cp_commit: extern "C" fn(*const SimCtx),
    cp_wait: extern "C" fn(*const SimCtx, i64),
}

/// A warpgroup's `wgmma` (see [`sim_wgmma`]).
type WgmmaFn = extern "C" fn(*const SimCtx, i32, i32, i64, i64, *mut f32);

/// A warp's batch of "3×TF32" `mma.sync.m16n8k8` tiles: `n` tiles, this lane's registers
/// at the pointer (see [`sim_mma`]).
type MmaFn = extern "C" fn(*const SimCtx, i32, *mut u32);

/// `void k(void *const *bufs, const int64_t *dims, const SimCtx *ctx)`.
pub type SimKernel = unsafe extern "C" fn(*const *mut c_void, *const i64, *const SimCtx);

/// A warp's exchange areas, two of each: consecutive exchanges alternate between them, so
/// one barrier per exchange suffices — a lane can write the other area while the rest
/// still read this one, and cannot come back to this one before every lane has arrived
/// at the next exchange's barrier, that is, finished reading.
struct WarpSync {
    barrier: Barrier,
    /// One value per lane, per area.
    slots: [Vec<Cell<u32>>; 2],
    /// Every lane's registers of an `mma` batch ([`MMA_REGS`] per lane), per area.
    mma: [Vec<Cell<u32>>; 2],
}

/// The most n tiles of one `mma` batch (the compiler's `simt::MMA_MAX_N`).
const MMA_MAX_N: usize = 4;
/// A head and tail (4 each), then per n tile B head and tail (2 each) and C (4).
const MMA_REGS: usize = 8 + 8 * MMA_MAX_N;

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
                    slots: [0, 1].map(|_| (0..32).map(|_| Cell::new(0)).collect()),
                    mma: [0, 1].map(|_| (0..32 * MMA_REGS).map(|_| Cell::new(0)).collect()),
                })
                .collect(),
        }
    }
}

extern "C" fn sim_barrier(ctx: *const SimCtx) {
    // SAFETY: the kernel passes back the context its thread was started with, whose block
    // outlives every thread of the block.
    unsafe { (*(*ctx).block).barrier.wait() };
}

/// The warp of the thread `ctx` describes, and its lane.
fn lane_of<'a>(ctx: *const SimCtx) -> (&'a WarpSync, usize) {
    // SAFETY: as in `sim_barrier`.
    let (ctx, block) = unsafe { (&*ctx, &*(*ctx).block) };
    (
        &block.warps[(ctx.tid / 32) as usize],
        (ctx.tid % 32) as usize,
    )
}

/// A warp's butterfly reduction — `shfl.bfly` steps with masks `first`, first / 2, …, 1
/// (16 for all 32 lanes, 2 for each quad of four), each lane combining its value with
/// its partner's by sum (`max` 0) or `maxnum` (1) — in one exchange: every lane replays
/// the butterfly over all 32 values, which gives the bits the shuffles give (each step
/// combines the same two values in every pair).
extern "C" fn sim_reduce(ctx: *const SimCtx, v: f32, max: i32, first: i32) -> f32 {
    let (warp, lane) = lane_of(ctx);
    let slots = &warp.slots[next_area()];
    slots[lane].set(v.to_bits());
    warp.barrier.wait();
    let mut vals = [0f32; 32];
    for (l, x) in vals.iter_mut().enumerate() {
        *x = f32::from_bits(slots[l].get());
    }
    let mut mask = first.clamp(0, 16) as usize;
    while mask > 0 {
        let prev = vals;
        for (l, x) in vals.iter_mut().enumerate() {
            let o = prev[l ^ mask];
            *x = if max != 0 {
                prev[l].max(o)
            } else {
                prev[l] + o
            };
        }
        mask /= 2;
    }
    vals[lane]
}

/// A batch of `n` "3×TF32" tiles, each three
/// `mma.sync.aligned.m16n8k8.row.col.f32.tf32.tf32.f32` (A tail·B head, A head·B tail,
/// A head·B head, in that order) as the PTX ISA lays out the fragments (g = lane / 4,
/// t = lane % 4): lane L holds A(g, t), A(g + 8, t), A(g, t + 4), A(g + 8, t + 4);
/// B(t, g), B(t + 4, g); C and D at (g, 2t), (g, 2t + 1), (g + 8, 2t), (g + 8, 2t + 1).
/// `regs`: A head (4), A tail (4), then per tile B head (2), B tail (2), C (4), where D is
/// written. A and B are read as tf32 (the 13 low mantissa bits dropped); each product
/// sum runs in f32, k in order.
extern "C" fn sim_mma(ctx: *const SimCtx, n: i32, regs: *mut u32) {
    let tf32 = |bits: u32| f32::from_bits(bits & 0xFFFF_E000);
    mma_batch(ctx, n.max(0) as usize, regs, |reg, j, row, col, c| {
        // A(row, k) of part p (0 head, 1 tail): lane (row % 8)·4 + k % 4, register
        // 4p + (row ≥ 8) + 2·(k ≥ 4).
        let a = |p: usize, k: usize| {
            tf32(reg(
                (row % 8) * 4 + k % 4,
                4 * p + usize::from(row >= 8) + 2 * usize::from(k >= 4),
            ))
        };
        // B(k, col) of tile j, part p: lane col·4 + k % 4, register 8 + 8j + 2p + (k ≥ 4).
        let b = |p: usize, k: usize| {
            tf32(reg(
                col * 4 + k % 4,
                8 + 8 * j + 2 * p + usize::from(k >= 4),
            ))
        };
        let mut acc = c;
        for (pa, pb) in [(1, 0), (0, 1), (0, 0)] {
            let mut sum = acc;
            for k in 0..8 {
                sum += a(pa, k) * b(pb, k);
            }
            acc = sum;
        }
        acc
    });
}

/// A warp's `mma` batch of `n` tiles (at most [`MMA_MAX_N`]): this lane's registers at
/// `regs` (8 of A, then per tile 4 of B and 4 of C) are shared with the warp, and each of
/// its four outputs per tile — (g, 2t), (g, 2t + 1), (g + 8, 2t), (g + 8, 2t + 1), g =
/// lane / 4, t = lane % 4 — becomes `d(reg, j, row, col, c)`, written over its C; `reg(lane,
/// r)` reads any lane's register r.
fn mma_batch(
    ctx: *const SimCtx,
    n: usize,
    regs: *mut u32,
    d: impl Fn(&dyn Fn(usize, usize) -> u32, usize, usize, usize, f32) -> f32,
) {
    let (warp, lane) = lane_of(ctx);
    let n = n.min(MMA_MAX_N);
    let used = 8 + 8 * n;
    // SAFETY: the kernel passes its stack array of 8 + 8 · MMA_MAX_N registers.
    let mine = unsafe { std::slice::from_raw_parts_mut(regs, used) };
    let area = &warp.mma[next_area()];
    for (i, v) in mine.iter().enumerate() {
        area[lane * MMA_REGS + i].set(*v);
    }
    warp.barrier.wait();
    let reg = |l: usize, r: usize| area[l * MMA_REGS + r].get();
    let (g, t) = (lane / 4, lane % 4);
    let mut out = [[0f32; 4]; MMA_MAX_N];
    for (j, tile) in out.iter_mut().enumerate().take(n) {
        for (i, o) in tile.iter_mut().enumerate() {
            let (row, col) = (g + 8 * (i / 2), 2 * t + i % 2);
            *o = d(&reg, j, row, col, f32::from_bits(mine[8 + 8 * j + 4 + i]));
        }
    }
    for (j, tile) in out.iter().enumerate().take(n) {
        for (i, o) in tile.iter().enumerate() {
            mine[8 + 8 * j + 4 + i] = o.to_bits();
        }
    }
}

/// Set in `n` of [`sim_mma16`] when the operands are f16 (the compiler's
/// `simt::MMA16_F16`).
const MMA16_F16: i32 = 0x100;

/// A batch of half-precision `mma.sync.aligned.m16n8k16.row.col.f32.{bf16|f16}` tiles
/// (f16 when `n` has [`MMA16_F16`], else bf16; the tile count in its low byte) as the PTX
/// ISA lays out the fragments (g = lane / 4, t = lane % 4): registers pack two 16-bit
/// values, the lower k in the low half; lane L holds A(g, 2t..2t+1), A(g + 8, 2t..),
/// A(g, 2t + 8..), A(g + 8, 2t + 8..) and of each tile B(2t..2t+1, g), B(2t + 8.., g);
/// C and D as [`sim_mma`]'s. `regs`: A (4), four unused, then per tile B (2), two unused,
/// C (4), where D is written. Each product is exact in f32; the sum runs in f32, k in
/// order.
extern "C" fn sim_mma16(ctx: *const SimCtx, n: i32, regs: *mut u32) {
    let f16 = n & MMA16_F16 != 0;
    let half = |r: u32, upper: bool| {
        let h = if upper { r >> 16 } else { r & 0xFFFF };
        if f16 {
            crate::safetensors_file::f16_to_f32(h as u16)
        } else {
            f32::from_bits(h << 16)
        }
    };
    mma_batch(ctx, (n & 0xFF) as usize, regs, |reg, j, row, col, c| {
        // A(row, k): lane (row % 8)·4 + (k % 8) / 2, register (row ≥ 8) + 2·(k ≥ 8), half
        // k % 2; B(k, col) of tile j: lane col·4 + (k % 8) / 2, register 8 + 8j + (k ≥ 8).
        let a = |k: usize| {
            let r = reg(
                (row % 8) * 4 + (k % 8) / 2,
                usize::from(row >= 8) + 2 * usize::from(k >= 8),
            );
            half(r, k % 2 == 1)
        };
        let b = |k: usize| {
            half(
                reg(col * 4 + (k % 8) / 2, 8 + 8 * j + usize::from(k >= 8)),
                k % 2 == 1,
            )
        };
        let mut acc = c;
        for k in 0..16 {
            acc += a(k) * b(k);
        }
        acc
    });
}

/// One `wgmma.mma_async.sync.aligned.m64n{n}k16.f32.{bf16|f16}` (f16 when `f16` is not
/// 0) for the thread `ctx` describes: A (64 × 16) and B (n × 16) read from shared memory
/// through their descriptors — bits 0–13 the start address, 16–29 the leading (k)
/// byte offset, 32–45 the stride (m or n) byte offset, each in 16-byte units; no swizzle
/// (bits 62–63) and no base offset (49–51), which is all the compiler emits: the
/// k-major "interleaved" layout, element (x, k) at start + (x / 8)·SBO + (k / 8)·LBO +
/// (x % 8)·16 + (k % 8)·2 — and this thread's n / 2 accumulators at `acc` updated:
/// with w its warp within the warpgroup, g = lane / 4, t = lane % 4, accumulator
/// 4j + e is D(16w + g + 8·(e / 2), 8j + 2t + e % 2). Each product is exact in f32;
/// the sum runs in f32, k in order. A descriptor this cannot read (a swizzle, an
/// address past the shared memory) panics, which fails the test that ran it.
extern "C" fn sim_wgmma(ctx: *const SimCtx, n: i32, f16: i32, da: i64, db: i64, acc: *mut f32) {
    // SAFETY: as in `sim_barrier`.
    let ctx = unsafe { &*ctx };
    let n = n.clamp(8, 256) as usize;
    let (w, lane) = (((ctx.tid % 128) / 32) as usize, (ctx.tid % 32) as usize);
    let (g, t) = (lane / 4, lane % 4);
    let field = |d: i64, at: u32| (((d as u64) >> at) & 0x3FFF) as usize * 16;
    let check = |d: i64| {
        assert!(
            (d as u64) >> 46 == 0,
            "wgmma descriptor {d:#x}: swizzle or base offset bits set"
        );
    };
    check(da);
    check(db);
    let bytes = ctx.shared_bytes.max(0) as usize;
    // SAFETY: the block's shared memory is `shared_bytes` long; every read is checked.
    let smem = unsafe { std::slice::from_raw_parts(ctx.shared.cast::<u8>(), bytes) };
    let elem = |d: i64, x: usize, k: usize| {
        let at = field(d, 0)
            + (x / 8) * field(d, 32)
            + (k / 8) * field(d, 16)
            + (x % 8) * 16
            + (k % 8) * 2;
        assert!(
            at + 2 <= bytes,
            "wgmma reads byte {at} of {bytes} of shared memory"
        );
        let h = u16::from_le_bytes([smem[at], smem[at + 1]]);
        if f16 != 0 {
            crate::safetensors_file::f16_to_f32(h)
        } else {
            f32::from_bits(u32::from(h) << 16)
        }
    };
    // SAFETY: the kernel passes its array of at least n / 2 accumulators.
    let mine = unsafe { std::slice::from_raw_parts_mut(acc, n / 2) };
    for (v, o) in mine.iter_mut().enumerate() {
        let (j, e) = (v / 4, v % 4);
        let (row, col) = (16 * w + g + 8 * (e / 2), 8 * j + 2 * t + e % 2);
        let mut sum = *o;
        for k in 0..16 {
            sum += elem(da, row, k) * elem(db, col, k);
        }
        *o = sum;
    }
}

/// The running simulated thread's asynchronous copies.
fn with_copies<R>(f: impl FnOnce(&mut AsyncCopies) -> R) -> R {
    let me = CURRENT.with(Cell::get);
    assert!(!me.is_null(), "cp.async outside a simulated thread");
    // SAFETY: as in `yield_turn`; nothing else borrows a fiber's copies while it runs.
    f(&mut unsafe { &*me }.copies.borrow_mut())
}

/// `cp.async.cg.shared.global` of 16 bytes, `src_bytes` of them read from `src` (the rest
/// zero): the source is read now, `dst`'s 16 bytes become NaN (all ones) and get the
/// data when a [`sim_cp_wait`] completes the copy's group.
extern "C" fn sim_cp_async(ctx: *const SimCtx, dst: *mut u8, src: *const u8, src_bytes: i64) {
    // SAFETY: as in `sim_barrier`.
    let ctx = unsafe { &*ctx };
    let base = ctx.shared.cast::<u8>() as usize;
    let at = (dst as usize).wrapping_sub(base);
    assert!(
        at + 16 <= ctx.shared_bytes.max(0) as usize
            && at.is_multiple_of(16)
            && (src as usize).is_multiple_of(16),
        "cp.async to shared byte {at} of {} from {src:p}: outside the shared memory or not 16-byte aligned",
        ctx.shared_bytes
    );
    assert!(
        (0..=16).contains(&src_bytes),
        "cp.async reads {src_bytes} bytes"
    );
    let mut data = [0u8; 16];
    // SAFETY: the kernel's source holds `src_bytes` readable bytes (its contract with the
    // instruction); the destination was just checked to lie in shared memory.
    unsafe {
        std::ptr::copy_nonoverlapping(src, data.as_mut_ptr(), src_bytes as usize);
        std::ptr::write_bytes(dst, 0xFF, 16);
    }
    with_copies(|c| c.open.push(AsyncCopy { dst, data }));
}

/// `cp.async.commit_group`.
extern "C" fn sim_cp_commit(_ctx: *const SimCtx) {
    with_copies(|c| {
        let group = std::mem::take(&mut c.open);
        c.groups.push_back(group);
    });
}

/// `cp.async.wait_group pending`: lands every committed group but the `pending` latest.
extern "C" fn sim_cp_wait(_ctx: *const SimCtx, pending: i64) {
    with_copies(|c| {
        while c.groups.len() > pending.max(0) as usize {
            for copy in c.groups.pop_front().into_iter().flatten() {
                // SAFETY: checked to lie in shared memory when issued.
                unsafe { std::ptr::copy_nonoverlapping(copy.data.as_ptr(), copy.dst, 16) };
            }
        }
    });
}

/// One kernel launch: the function, its grid, and its argument table and symbol values
/// (host addresses: the simulated device's memory is host memory).
#[derive(Clone, Copy)]
pub struct SimLaunch {
    pub f: SimKernel,
    pub grid: i64,
    pub table: *const *mut c_void,
    pub dims: *const i64,
}

/// The stack of each simulated thread: the thread programs keep their registers in a
/// few kilobytes; the simulator's own functions, unoptimised in a debug build, in a few
/// more. Pages are committed when touched.
const FIBER_STACK: usize = 256 * 1024;

/// Runs `launches` in order with `threads` threads per block and `shared_floats` of
/// shared memory per block, on the calling OS thread. One set of simulated threads runs
/// every block of every launch, meeting at a barrier between blocks.
///
/// # Panics
/// When the simulated threads of a block wait at barriers not all of them reach (a
/// `bar.sync` or a warp exchange on a path some threads skip), which on a GPU hangs or
/// is undefined; and when a stack cannot be allocated.
///
/// # Safety
/// Each launch's table must hold live buffers of the sizes its kernel reads at `dims`,
/// and each kernel must be a thread program for `threads` threads per block.
pub unsafe fn run(threads: usize, shared_floats: usize, launches: &[SimLaunch]) {
    let mut shared = vec![0f32; shared_floats + 1];
    let sync = BlockSync::new(threads);
    let between = Barrier::new(threads);
    let (smem, sync_at, launches_at, between_at) = (
        shared.as_mut_ptr(),
        &sync as *const BlockSync,
        launches as *const [SimLaunch],
        &between as *const Barrier,
    );
    let mut fibers: Vec<Option<Coroutine<(), (), ()>>> = (0..threads)
        .map(|t| {
            let stack = DefaultStack::new(FIBER_STACK)
                .unwrap_or_else(|e| panic!("simulator: cannot allocate a thread's stack: {e}"));
            let body = move |yielder: &Yielder<(), ()>, ()| {
                let me = Fiber {
                    yielder,
                    area: Cell::new(0),
                    copies: Default::default(),
                };
                CURRENT.with(|c| c.set(&me));
                // SAFETY: `run` outlives its fibers (it drives them to completion or
                // leaks them), and with them what these point to.
                let launches = unsafe { &*launches_at };
                for l in launches {
                    for block in 0..l.grid {
                        let ctx = SimCtx {
                            tid: t as i64,
                            ntid: threads as i64,
                            ctaid: block,
                            nctaid: l.grid,
                            shared: smem,
                            barrier: sim_barrier,
                            block: sync_at,
                            mma: sim_mma,
                            reduce: sim_reduce,
                            mma16: sim_mma16,
                            wgmma: sim_wgmma,
                            shared_bytes: 4 * (shared_floats as i64 + 1),
                            cp_async: sim_cp_async,
                            cp_commit: sim_cp_commit,
                            cp_wait: sim_cp_wait,
                        };
                        // SAFETY: the caller's contract.
                        unsafe { (l.f)(l.table, l.dims, &ctx) };
                        // Copies never waited for land nowhere (the next block's shared
                        // memory is its own).
                        *me.copies.borrow_mut() = AsyncCopies::default();
                        // SAFETY: as above.
                        unsafe { (*between_at).wait() };
                    }
                }
                CURRENT.with(|c| c.set(std::ptr::null()));
            };
            Some(Coroutine::with_stack(stack, body))
        })
        .collect();
    let mut live = threads;
    while live > 0 {
        let before = ARRIVALS.with(Cell::get);
        let mut finished = false;
        for slot in fibers.iter_mut() {
            let Some(fiber) = slot else { continue };
            if let CoroutineResult::Return(()) = fiber.resume(()) {
                *slot = None;
                live -= 1;
                finished = true;
            }
        }
        // A round in which every waiting thread found its barrier still closed and none
        // arrived anywhere or finished: they wait for each other.
        if live > 0 && !finished && ARRIVALS.with(Cell::get) == before {
            // Suspended fibers are leaked, not unwound: their stacks hold the kernels'
            // frames, which cannot unwind. They never run again.
            for fiber in fibers.into_iter().flatten() {
                std::mem::forget(fiber);
            }
            CURRENT.with(|c| c.set(std::ptr::null()));
            panic!(
                "simulator: {live} of {threads} threads of a block wait at barriers or warp exchanges that the others do not reach"
            );
        }
    }
}

/// The simulator's file in a cuda package (`archc build --target cuda --sim`).
pub const SIM_FILE: &str = "kernels.sim.so";

/// The interface between a simulator library's kernels and this runtime (the context's
/// layout and its functions' signatures), which `kernels.sim.so` exports as
/// `archc_sim_abi`; a library built for another one is refused, not run (version 2: the
/// warp reduction takes the butterfly's first mask; 3: the context ends with `wgmma` and
/// the shared memory's size; 4: `cp.async`, its commit and wait through the context).
pub const SIM_ABI: i64 = 4;

/// The host simulator as a [`super::Device`]: device memory is host memory; launches run
/// the package's host-compiled thread programs on [`run`], queued until something reads
/// or changes memory, then together on one set of simulated threads. One SM.
pub struct SimDevice {
    fns: Vec<SimKernel>,
    shared: Vec<usize>,
    threads: usize,
    /// Allocations by address, 16-byte aligned as the kernels' `cp.async` copies need
    /// (a GPU's are 256-byte aligned).
    allocs: std::collections::BTreeMap<u64, Vec<u128>>,
    /// Launches not run yet: they run together, on one set of simulated threads, when anything
    /// reads or changes memory (a stream's order, as on a GPU).
    pending: Vec<(SimLaunch, usize)>,
    _lib: crate::package::Library,
}

impl SimDevice {
    /// Loads `kernels.sim.so` of the cuda package in `dir` (`m` its manifest).
    pub fn open(
        dir: &std::path::Path,
        m: &crate::Manifest,
    ) -> Result<SimDevice, crate::RuntimeError> {
        let path = dir.join(SIM_FILE);
        if !path.is_file() {
            return Err(crate::RuntimeError::Device(format!(
                "{} is missing: build the package with `archc build --target cuda --sim` to run it without a GPU",
                path.display()
            )));
        }
        let lib = crate::package::Library::open(&path)?;
        let symbol = |name: &str| {
            lib.symbol(name).ok_or_else(|| crate::RuntimeError::Symbol {
                path: path.clone(),
                symbol: name.to_string(),
                kernel: 0,
            })
        };
        // SAFETY: a simulator library exports its interface version as an i64.
        let abi = lib
            .symbol("archc_sim_abi")
            .map(|p| unsafe { *p.cast::<i64>() });
        if abi != Some(SIM_ABI) {
            return Err(crate::RuntimeError::Device(format!(
                "{} was built for simulator interface {}, and this runtime speaks {SIM_ABI}: rebuild the package with this archc",
                path.display(),
                abi.map_or("1 (unversioned)".to_string(), |v| v.to_string())
            )));
        }
        // SAFETY: the simulator library exports its block size as an i64.
        let threads = unsafe { *symbol("archc_sim_threads")?.cast::<i64>() } as usize;
        let mut fns = Vec::with_capacity(m.kernels.len());
        for k in &m.kernels {
            // SAFETY: the simulator's kernels have this signature (the compiler's Mode::Host).
            fns.push(unsafe { std::mem::transmute::<*mut c_void, SimKernel>(symbol(&k.symbol)?) });
        }
        Ok(SimDevice {
            fns,
            shared: m
                .kernels
                .iter()
                .map(|k| k.launch.as_ref().map_or(0, |l| l.shared_bytes as usize / 4))
                .collect(),
            threads,
            allocs: Default::default(),
            pending: Vec::new(),
            _lib: lib,
        })
    }

    /// Runs the pending launches in order.
    fn flush(&mut self) {
        if self.pending.is_empty() {
            return;
        }
        let shared = self.pending.iter().map(|&(_, s)| s).max().unwrap_or(0);
        let launches: Vec<SimLaunch> = self.pending.drain(..).map(|(l, _)| l).collect();
        // SAFETY: the session built each table from live allocations sized for the dims,
        // and nothing was freed or overwritten since (every such call flushes first).
        unsafe { run(self.threads, shared, &launches) };
    }

    /// The allocation holding `[p, p + len)`.
    fn region(&mut self, p: u64, len: usize) -> Result<*mut u8, crate::RuntimeError> {
        let (&base, v) = self.allocs.range_mut(..=p).next_back().ok_or_else(|| {
            crate::RuntimeError::Device(format!("address {p:#x} is not allocated"))
        })?;
        if p + len as u64 > base + 16 * v.len() as u64 {
            return Err(crate::RuntimeError::Device(format!(
                "{len} bytes at {p:#x} run past their allocation"
            )));
        }
        // SAFETY: within the allocation, just checked.
        Ok(unsafe { v.as_mut_ptr().cast::<u8>().add((p - base) as usize) })
    }
}

impl super::Device for SimDevice {
    fn describe(&self) -> String {
        format!("the host simulator ({} threads per block)", self.threads)
    }

    fn sm_count(&self) -> u32 {
        1
    }

    fn alloc(&mut self, bytes: usize) -> Result<super::DevPtr, crate::RuntimeError> {
        let v = vec![0u128; bytes.div_ceil(16).max(1)];
        let p = v.as_ptr() as u64;
        self.allocs.insert(p, v);
        Ok(p)
    }

    fn free(&mut self, p: super::DevPtr) -> Result<(), crate::RuntimeError> {
        self.flush();
        self.allocs.remove(&p).map(|_| ()).ok_or_else(|| {
            crate::RuntimeError::Device(format!("freeing {p:#x}, which is not allocated"))
        })
    }

    fn upload(&mut self, dst: super::DevPtr, data: &[u8]) -> Result<(), crate::RuntimeError> {
        self.flush();
        let d = self.region(dst, data.len())?;
        // SAFETY: `d` holds `data.len()` bytes (checked by `region`).
        unsafe { std::ptr::copy_nonoverlapping(data.as_ptr(), d, data.len()) };
        Ok(())
    }

    fn download(&mut self, src: super::DevPtr, out: &mut [u8]) -> Result<(), crate::RuntimeError> {
        self.flush();
        let s = self.region(src, out.len())?;
        // SAFETY: as in `upload`.
        unsafe { std::ptr::copy_nonoverlapping(s, out.as_mut_ptr(), out.len()) };
        Ok(())
    }

    fn launch(
        &mut self,
        k: usize,
        grid: u32,
        _block: u32,
        table: super::DevPtr,
        dims: super::DevPtr,
    ) -> Result<(), crate::RuntimeError> {
        let f = *self
            .fns
            .get(k)
            .ok_or_else(|| crate::RuntimeError::Kernel(format!("no kernel {k}")))?;
        let launch = SimLaunch {
            f,
            grid: grid as i64,
            table: table as *const *mut c_void,
            dims: dims as *const i64,
        };
        self.pending.push((launch, self.shared[k]));
        Ok(())
    }

    fn synchronize(&mut self) -> Result<(), crate::RuntimeError> {
        self.flush();
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Each thread stores its index in shared memory, waits at the block's barrier, and
    /// writes what its neighbour stored, then the warp's sum through the butterfly.
    unsafe extern "C" fn neighbours(
        bufs: *const *mut c_void,
        _dims: *const i64,
        ctx: *const SimCtx,
    ) {
        let c = &*ctx;
        let out = (*bufs).cast::<f32>();
        let (t, n) = (c.tid as usize, c.ntid as usize);
        let base = c.ctaid as usize * 2 * n;
        *c.shared.add(t) = (c.ctaid * 1000 + c.tid) as f32;
        (c.barrier)(ctx);
        *out.add(base + t) = *c.shared.add((t + 1) % n);
        *out.add(base + n + t) = (c.reduce)(ctx, c.tid as f32, 0, 16);
        // Before the next block overwrites shared memory: the simulator's barrier between
        // blocks.
    }

    #[test]
    fn barriers_and_warp_exchanges_across_fibers() {
        let (threads, grid) = (64usize, 3i64);
        let mut out = vec![0f32; 2 * threads * grid as usize];
        let table = [out.as_mut_ptr().cast::<c_void>()];
        let launch = SimLaunch {
            f: neighbours,
            grid,
            table: table.as_ptr(),
            dims: std::ptr::null(),
        };
        // SAFETY: the kernel writes 2 · threads floats per block of `out`.
        unsafe { run(threads, threads, &[launch]) };
        for b in 0..grid as usize {
            for t in 0..threads {
                let got = out[b * 2 * threads + t];
                assert_eq!(
                    got,
                    (b * 1000 + (t + 1) % threads) as f32,
                    "block {b} thread {t}"
                );
                let warp = t / 32 * 32;
                let sum: usize = (warp..warp + 32).sum();
                assert_eq!(
                    out[b * 2 * threads + threads + t],
                    sum as f32,
                    "block {b} lane {t}"
                );
            }
        }
    }

    /// Each thread copies 16 bytes of `src` (its own four floats, 12 bytes of them read)
    /// into shared memory by `cp.async` in two groups, and records what its slot holds
    /// after the issue, after waiting with one group pending, and after waiting for all.
    unsafe extern "C" fn copies(bufs: *const *mut c_void, _dims: *const i64, ctx: *const SimCtx) {
        let c = &*ctx;
        let (src, out) = ((*bufs).cast::<f32>(), (*bufs.add(1)).cast::<f32>());
        let t = c.tid as usize;
        let (a, b) = (c.shared.add(8 * t), c.shared.add(8 * t + 4));
        (c.cp_async)(ctx, a.cast(), src.add(4 * t).cast(), 12);
        (c.cp_commit)(ctx);
        (c.cp_async)(ctx, b.cast(), src.add(4 * t).cast(), 16);
        (c.cp_commit)(ctx);
        let o = out.add(12 * t);
        *o = *a;
        (c.cp_wait)(ctx, 1);
        for i in 0..4 {
            *o.add(1 + i) = *a.add(i);
        }
        *o.add(5) = *b;
        (c.cp_wait)(ctx, 0);
        for i in 0..4 {
            *o.add(6 + i) = *b.add(i);
        }
    }

    #[test]
    fn async_copies_land_at_their_wait() {
        let threads = 32usize;
        let mut src: Vec<f32> = (0..4 * threads).map(|i| i as f32 + 0.5).collect();
        let mut out = vec![0f32; 12 * threads];
        let table = [src.as_mut_ptr().cast::<c_void>(), out.as_mut_ptr().cast()];
        let launch = SimLaunch {
            f: copies,
            grid: 1,
            table: table.as_ptr(),
            dims: std::ptr::null(),
        };
        // SAFETY: the kernel reads 4 floats and writes 12 per thread, 8 of shared memory.
        unsafe { run(threads, 8 * threads, &[launch]) };
        for t in 0..threads {
            let (o, s) = (&out[12 * t..], &src[4 * t..4 * t + 4]);
            assert!(o[0].is_nan(), "thread {t}: a copy not waited for reads NaN");
            assert_eq!(
                &o[1..5],
                &[s[0], s[1], s[2], 0.0],
                "thread {t}: first group"
            );
            assert!(
                o[5].is_nan(),
                "thread {t}: the pending group is not there yet"
            );
            assert_eq!(&o[6..10], s, "thread {t}: second group");
        }
    }

    /// Threads below 10 wait at the block's barrier; the others have returned.
    unsafe extern "C" fn diverges(
        _bufs: *const *mut c_void,
        _dims: *const i64,
        ctx: *const SimCtx,
    ) {
        if (*ctx).tid < 10 {
            ((*ctx).barrier)(ctx);
        }
    }

    #[test]
    fn threads_waiting_for_each_other_are_reported() {
        let launch = SimLaunch {
            f: diverges,
            grid: 1,
            table: std::ptr::null(),
            dims: std::ptr::null(),
        };
        // SAFETY: the kernel touches no memory.
        let e = std::panic::catch_unwind(|| unsafe { run(64, 1, &[launch]) }).unwrap_err();
        let msg = e.downcast_ref::<String>().cloned().unwrap_or_default();
        assert!(
            msg.contains("64 of 64 threads") && msg.contains("do not reach"),
            "{msg}"
        );
        // The simulator still runs afterwards on this OS thread.
        barriers_and_warp_exchanges_across_fibers();
    }
}

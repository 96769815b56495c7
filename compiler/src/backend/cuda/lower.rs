//! Kernel IR → the thread program of each kernel (see `mod.rs` for the launch model).
//!
//! - **Map**: one element per thread, a grid-stride loop over all of them.
//! - **Reduce**: one output per warp; lanes stride over the reduced axis, a butterfly of
//!   shuffles combines them (the same order on every run: results do not depend on the
//!   grid).
//! - **MatMul**: [`Tiling`] output tiles per block (128 × 128 on a GPU, 64 × 32 per warp),
//!   k in steps of 16 f32 (32 half-precision values) through two shared-memory stages
//!   (three for `wgmma` tiles) —
//!   the next step's operands copied into one (`cp.async`, 16 bytes at a time, where the
//!   operand is k-contiguous in the staged type and 16-byte aligned; element by element
//!   otherwise) while the warps multiply the other; each warp's part on the tensor cores
//!   (`mma.sync` m16n8k8 tf32) in "3×TF32": each f32 operand split into a tf32 head and
//!   a tf32 tail, three products (tail·head, head·tail, head·head) per tile, which keeps
//!   f32 accuracy; the epilogue applied where each output is stored. With `--dtype
//!   bf16|f16` ([`Program::half_matmul`]) the operands are staged as their 16 bits in
//!   the half type (f32 ones rounded to nearest even) and each k step is one `mma.sync`
//!   m16n8k16 per tile with f32 accumulation — or, on request for sm_90
//!   ([`Tiling::wgmma`]), per warpgroup one `wgmma` m64n128k16 per 16 k, both operands
//!   read from shared memory. Row-local epilogues (RoPE) take a band of rows per block:
//!   products first, then each row's epilogue staged in shared memory.
//!   A few rows of A against B stored [n, k] (decoding; m ≤ 8 at run time): one warp per
//!   output column, lanes striding k, the rows' sums in registers, one butterfly each
//!   (with `--dtype`, over operands rounded as the tiles round them).
//! - **Attention**: with 16 queries or more, by tiles on the tensor cores (16 queries per
//!   warp, keys and values staged in two shared-memory stages — the next keys copied
//!   into one, by `cp.async` where the view allows, while the warps work on the other —
//!   scores and P·V by `mma` in 3×TF32, or in the
//!   half type with `--dtype`; online softmax per row); with fewer (decoding), one query
//!   row per warp with online softmax,
//!   q and the output accumulator spread over the lanes (head_dim / 32 registers each),
//!   one shuffle reduction per key.
//! - **Scatter**: one column per thread, the steps in order.
//! - **Stores and loads** of buffers holding half-precision activations (`--dtype`)
//!   round to nearest even and decode ([`Gen::store_elem`], [`Gen::elem_at`]).
//! - **Scan**: one block runs the steps in order; its body kernels are the same thread
//!   programs over that block, with a barrier after each. Where the rows are independent
//!   ([`Scan::rows`]) every block runs the scans of rows of its own, one row at a time.

use super::simt::{Mode, Simt, MMA_MAX_N, WARPGROUP};
use crate::backend::llvm::expr::{AttnMask, Exprs, Values};
use crate::backend::llvm::ir::{Ir, IrError, IrResult, WholeSteps};
use crate::backend::llvm::math::Math;
use crate::graph::{AttnPart, ReduceOp};
use crate::kernel::{Attention, Body, BufId, Expr, Ix, Kernel, MatMul, Program, Scan, Strided};
use arch_runtime::gguf::GgmlType;
use inkwell::values::{BasicValueEnum, FloatValue, FunctionValue, IntValue, PointerValue};
use inkwell::{FloatPredicate, IntPredicate};
use std::collections::HashMap;

/// A matmul's block tile: `bm` × `bn` outputs per block, `wm` × `wn` per warp (`wm` a
/// multiple of 16, `wn` = 32: four m16n8 tiles across), k in steps of `kw` words.
/// With `wgmma` (Hopper, half-precision products only): `wm` × `wn` per warpgroup of
/// four warps, `wm` = 64 and `wn` = `bn`, one `wgmma` m64n{bn}k16 per 16 k.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Tiling {
    pub bm: u64,
    pub bn: u64,
    pub wm: u64,
    pub wn: u64,
    pub wgmma: bool,
    /// Shared-memory stages of the k loop: `stages - 1` k steps are being copied while
    /// the warps multiply one.
    pub stages: u64,
    /// `mma.sync` fragments loaded by `ldmatrix` (four 8 × 8 matrices a warp instruction)
    /// rather than one 32-bit shared load per fragment word.
    pub ldmatrix: bool,
    /// 4-byte words of k per staged row and stage: [`KW`] (16 f32, or 32 half-precision
    /// values), or 32 (`ARCHC_KWORDS`): twice the products per stage, so half the
    /// waits, barriers and (with `wgmma`) synchronous groups per flop, for twice the
    /// shared memory.
    pub kw: u64,
}

impl Tiling {
    /// The tiling for `mode`. One for both SM generations until a GPU times
    /// alternatives: 128 × 128 per block of eight warps, 64 × 32 per warp — 16 `mma`
    /// tiles, 64 accumulators a lane, each fragment loaded once per k step and used four
    /// times — and two stages of 20 KiB, under the 48 KiB of static shared memory a
    /// block may have on sm_80 and sm_90 alike. The simulator's blocks have a quarter of
    /// the threads, and its code is compiled for the host each time a test runs: it
    /// takes 64 × 64 (32 × 32 per warp), which still gives each warp two warp tiles of
    /// two row groups, so every index of the generator varies; a test runs the GPU's
    /// tiling on the simulator too ([`super::lower_sim_tiled`]).
    pub fn for_mode(mode: Mode) -> Tiling {
        match mode {
            Mode::Ptx { .. } => Tiling {
                bm: 128,
                bn: 128,
                wm: 64,
                wn: 32,
                wgmma: false,
                stages: 2,
                ldmatrix: true,
                kw: KW,
            },
            Mode::Host => Tiling {
                bm: 64,
                bn: 64,
                wm: 32,
                wn: 32,
                wgmma: false,
                stages: 2,
                ldmatrix: true,
                kw: KW,
            },
        }
    }

    /// Hopper's warpgroup products (`wgmma`, sm_90a): 128 × 128 per block of two
    /// warpgroups, each 64 × 128 — one `wgmma` m64n128k16 per 16 k, 64 accumulators a
    /// thread, A and B read by the tensor cores straight from shared memory (no fragment
    /// loads). Only for half-precision products (`--dtype`); the stages are laid out as
    /// `wgmma` reads them (`Gen::staged_word`), unpadded, so three of 16 KiB fit the 48 KiB
    /// of static shared memory: two k steps in flight while one is multiplied, to cover
    /// the memory's latency.
    pub fn wgmma() -> Tiling {
        Tiling {
            bm: 128,
            bn: 128,
            wm: 64,
            wn: 128,
            wgmma: true,
            stages: 3,
            ldmatrix: false,
            kw: KW,
        }
    }

    /// 4-byte words from one staged row to the next in the row-major stage layout: 4
    /// more than [`Tiling::kw`], so rows start 16-byte aligned (`cp.async` 16 bytes at a
    /// time) and the 32 loads of an mma fragment — rows g, words t — hit 32 different
    /// banks (20g + t, or 36g + t, mod 32); `wgmma`'s layout is unpadded.
    fn row_words(&self) -> u64 {
        if self.wgmma {
            self.kw
        } else {
            self.kw + 4
        }
    }

    /// Bytes between groups of 8 rows in a `wgmma` stage (the descriptors' stride byte
    /// offset): the `kw / 4` core matrices of one staged row group.
    fn wg_sbo(&self) -> u64 {
        self.kw / 4 * WG_LBO
    }

    /// 4-byte words of one shared-memory stage: A's rows, then B's columns.
    fn stage_words(&self) -> u64 {
        (self.bm + self.bn) * self.row_words()
    }
}

/// Bytes between core matrices adjacent along k in a `wgmma` stage (the descriptors'
/// leading byte offset).
const WG_LBO: u64 = 128;

/// Words (4 bytes) of one staged operand row per k step by default ([`Tiling::kw`]): 16
/// f32 or 32 half-precision values.
pub const KW: u64 = 16;
const WARP: u64 = 32;
/// The most rows of A a matmul takes as matrix–vector products (decoding's batch).
const MV_ROWS: u64 = 8;

/// How many blocks a kernel is launched with.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Grid {
    /// This many per streaming multiprocessor (the kernel loops over its work).
    PerSm(u32),
    /// One block (a scan: its steps run in order).
    One,
}

/// One kernel of the lowered program: its symbol and how to launch it.
#[derive(Clone, Debug, PartialEq)]
pub struct KernelLaunch {
    pub symbol: String,
    pub grid: Grid,
    /// Bytes of shared memory it uses (static in PTX up to `simt::STATIC_SHARED_BYTES`,
    /// dynamic past it; the simulator allocates them).
    pub shared_bytes: u64,
}

/// Each kernel's work split and shared memory: the parallel iterations of its body.
struct Par<'ctx> {
    tid: IntValue<'ctx>,
    block: IntValue<'ctx>,
    nblocks: IntValue<'ctx>,
}

/// One operand of a matmul tile as the stages read it: element (x, k) — row x of A or
/// column x of B — at `off + x·ld + k` of `buf` when `contiguous`, else `off + k·ld + x`;
/// the tile's `rows` from `x0`, `bound` in all.
struct Side<'ctx> {
    buf: BufId,
    base: PointerValue<'ctx>,
    off: IntValue<'ctx>,
    ld: IntValue<'ctx>,
    contiguous: bool,
    x0: IntValue<'ctx>,
    bound: IntValue<'ctx>,
    rows: u64,
}

/// The generator of one kernel function.
struct Gen<'a, 'ctx> {
    ir: &'a Ir<'ctx>,
    simt: Simt<'a, 'ctx>,
    ex: Exprs<'a, 'ctx>,
    f: FunctionValue<'ctx>,
    vals: Values<'ctx>,
    threads: u64,
    max_head_dim: u64,
    smem: Option<PointerValue<'ctx>>,
    /// The matmul tiles' operand type on the tensor cores ([`Program::half_matmul`]).
    half: Option<GgmlType>,
    tiling: Tiling,
}

/// Floats of shared memory kernel `k` needs with matmul tiles `tl` (`half`: the
/// products' operands in a half-precision type).
fn shared_floats(k: &Kernel, tl: Tiling, max_head_dim: u64, half: bool) -> u64 {
    let stages = tl.stages * tl.stage_words();
    match &k.body {
        Body::MatMul(m) if m.whole_rows => stages.max(m.n.as_const().map_or(0, |n| n as u64)),
        Body::MatMul(_) => stages,
        Body::Attention(a) => attention_floats(a, max_head_dim, half),
        Body::Scan(s) => s
            .body
            .iter()
            .map(|b| shared_floats(b, tl, max_head_dim, half))
            .max()
            .unwrap_or(0),
        _ => 0,
    }
}

/// Fewest query rows for which attention runs by tiles ([`Gen::attention_tiles`]).
const ATTENTION_TILE_MIN_ROWS: u64 = 16;

/// 8-wide tiles of the head dims of `a`'s q/k and of its values (`max_head_dim` where a
/// size is not known).
fn head_tiles(a: &Attention, max_head_dim: u64) -> (u64, u64) {
    let width = |x: &Ix| x.as_const().map_or(max_head_dim, |v| v as u64).max(1);
    (
        width(&a.sizes[4]).div_ceil(8),
        width(&a.sizes[5]).div_ceil(8),
    )
}

/// Keys per step of the tiled attention — as many as keep one stage's tiles (keys ×
/// head dims, and their values, f32) under 36 KiB — or `None` where it does not apply:
/// the backward parts, ring caches, head dims past 256.
fn attention_keys_per_tile(a: &Attention, max_head_dim: u64) -> Option<u64> {
    if a.part.is_some() || a.ring.is_some() {
        return None;
    }
    let (dk8, dv8) = head_tiles(a, max_head_dim);
    match 8 * dk8.max(dv8) {
        0..=64 => Some(64),
        65..=128 => Some(32),
        129..=256 => Some(16),
        _ => None,
    }
}

/// The tiled attention's staging ([`Gen::attention_tiles`]): keys per step, and the row
/// strides in words of its staged K and V tiles — f32 words, or with `half` pairs of
/// half-precision values, rows holding the head dims rounded up to 8 (16 in half
/// precision) and 4 words more (fragment loads then hit 32 banks). Two stages of both.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct AttnStaging {
    bc: u64,
    kw: u64,
    vw: u64,
}

impl AttnStaging {
    fn of(a: &Attention, max_head_dim: u64, half: bool) -> Option<AttnStaging> {
        let bc = attention_keys_per_tile(a, max_head_dim)?;
        let (dk8, dv8) = head_tiles(a, max_head_dim);
        let (kw, vw) = if half {
            (8 * dk8.div_ceil(2) + 4, 8 * dv8.div_ceil(2) + 4)
        } else {
            (8 * dk8 + 4, 8 * dv8 + 4)
        };
        Some(AttnStaging { bc, kw, vw })
    }

    /// Words of one stage: K's rows, then V's.
    fn stage_words(&self) -> u64 {
        self.bc * (self.kw + self.vw)
    }
}

/// Floats of shared memory the tiled attention needs (0 where it does not apply).
fn attention_floats(a: &Attention, max_head_dim: u64, half: bool) -> u64 {
    AttnStaging::of(a, max_head_dim, half).map_or(0, |st| 2 * st.stage_words())
}

/// Why kernel `k` cannot run on the GPU yet, if it cannot.
fn unsupported(k: &Kernel) -> Option<String> {
    match &k.body {
        Body::Attention(a) if a.part.is_some() && a.ring.is_some() => Some(format!(
            "kernel `{}`: the attention backward over a ring cache",
            k.name
        )),
        Body::MatMul(m) if m.whole_rows && m.n.as_const().is_none_or(|n| n as u64 > 12 * 1024) => {
            Some(format!(
                "kernel `{}`: a row-local epilogue over {:?} columns does not fit shared memory",
                k.name, m.n
            ))
        }
        Body::Scan(s) => s.body.iter().find_map(|b| match b.body {
            Body::Scan(_) => Some(format!("kernel `{}`: a scan inside a scan", k.name)),
            _ => unsupported(b),
        }),
        _ => None,
    }
}

/// Emits every kernel of `prog` into `ir` as a thread program for `mode`, `threads` per
/// block; kernels equal up to their buffers share one function.
pub(crate) fn emit_kernels<'ctx>(
    ir: &Ir<'ctx>,
    prog: &Program,
    mode: Mode,
    threads: u64,
    max_head_dim: u64,
    tiling: Tiling,
) -> IrResult<Vec<KernelLaunch>> {
    let buf_quant: Vec<_> = prog.buffers.iter().map(|b| b.quant).collect();
    let mut seen: HashMap<String, KernelLaunch> = HashMap::new();
    let mut out = Vec::new();
    for (i, k) in prog.kernels.iter().enumerate() {
        if let Some(why) = unsupported(k) {
            return Err(IrError(why));
        }
        // Kernels that read stored-type parameters or write half-precision activations
        // differ by those types too.
        let key = k.lowering_key(&prog.buffers);
        if let Some(l) = seen.get(&key) {
            out.push(l.clone());
            continue;
        }
        let name = format!("k{i}_{}", sanitize(&k.name));
        let floats = shared_floats(k, tiling, max_head_dim, prog.half_matmul.is_some());
        let (simt, f) = Simt::kernel(ir, mode, &name, threads)?;
        let bufs_arg = ir.param_ptr(f, 0)?;
        let dims_arg = ir.param_ptr(f, 1)?;
        let syms = (0..prog.syms.len() as u64)
            .map(|i| {
                let p = unsafe {
                    ir.b.build_in_bounds_gep(ir.i64, dims_arg, &[ir.int(i)], "")?
                };
                Ok(ir
                    .b
                    .build_load(ir.i64, p, &format!("s{i}"))?
                    .into_int_value())
            })
            .collect::<IrResult<Vec<_>>>()?;
        let mut bufs = HashMap::new();
        for (pos, b) in k.buffers().into_iter().enumerate() {
            let slot = unsafe {
                ir.b.build_in_bounds_gep(ir.ptr, bufs_arg, &[ir.int(pos as u64)], "")?
            };
            bufs.insert(
                b,
                ir.b.build_load(ir.ptr, slot, &format!("b{b}"))?
                    .into_pointer_value(),
            );
        }
        let smem = if floats > 0 {
            Some(simt.shared(&format!("{name}_smem"), floats)?)
        } else {
            None
        };
        let g = Gen {
            ir,
            ex: Exprs {
                ir,
                buf_quant: &buf_quant,
                f16c: false,
                own_libm: true,
            },
            simt,
            f,
            vals: Values { syms, bufs },
            threads,
            max_head_dim,
            smem,
            half: prog.half_matmul,
            tiling,
        };
        let par = Par {
            tid: g.simt.tid()?,
            block: g.simt.ctaid()?,
            nblocks: g.simt.nctaid()?,
        };
        g.body(&par, k)?;
        ir.b.build_return(None)?;
        let launch = KernelLaunch {
            symbol: name,
            grid: match &k.body {
                Body::Scan(s) if s.rows.is_none() => Grid::One,
                _ => Grid::PerSm(4),
            },
            shared_bytes: 4 * floats,
        };
        seen.insert(key, launch.clone());
        out.push(launch);
    }
    Ok(out)
}

fn sanitize(s: &str) -> String {
    s.chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
        .collect()
}

impl<'a, 'ctx> Gen<'a, 'ctx> {
    fn body(&self, p: &Par<'ctx>, k: &Kernel) -> IrResult<()> {
        match &k.body {
            Body::Map {
                out,
                offset,
                extents,
                expr,
            } => self.map(p, *out, offset, extents, expr),
            Body::Reduce {
                out,
                extents,
                axis,
                op,
                expr,
            } => self.reduce(p, *out, extents, *axis, *op, expr),
            Body::MatMul(m) => self.matmul(p, m),
            Body::Attention(a) => self.attention(p, a),
            Body::Scatter(s) => self.scatter(p, s),
            Body::Scan(s) => self.scan(p, s),
        }
    }

    fn c(&self, x: &Ix) -> IrResult<IntValue<'ctx>> {
        self.ex.ix(&self.vals, x, &[])
    }

    fn buf(&self, b: BufId) -> IrResult<PointerValue<'ctx>> {
        self.vals.buf(b)
    }

    fn k(&self, v: u64) -> IntValue<'ctx> {
        self.ir.int(v)
    }

    fn udiv(&self, a: IntValue<'ctx>, b: IntValue<'ctx>) -> IrResult<IntValue<'ctx>> {
        Ok(self.ir.b.build_int_unsigned_div(a, b, "")?)
    }

    fn urem(&self, a: IntValue<'ctx>, b: IntValue<'ctx>) -> IrResult<IntValue<'ctx>> {
        Ok(self.ir.b.build_int_unsigned_rem(a, b, "")?)
    }

    fn lt(&self, a: IntValue<'ctx>, b: IntValue<'ctx>) -> IrResult<IntValue<'ctx>> {
        Ok(self.ir.b.build_int_compare(IntPredicate::SLT, a, b, "")?)
    }

    fn ceil_div(&self, x: IntValue<'ctx>, d: u64) -> IrResult<IntValue<'ctx>> {
        self.udiv(self.ir.add(x, self.k(d - 1))?, self.k(d))
    }

    fn prod(&self, xs: &[IntValue<'ctx>]) -> IrResult<IntValue<'ctx>> {
        xs.iter().try_fold(self.k(1), |acc, &x| self.ir.mul(acc, x))
    }

    /// `for i = start; i < end; i += stride` with a run-time stride.
    fn strided(
        &self,
        name: &str,
        start: IntValue<'ctx>,
        end: IntValue<'ctx>,
        stride: IntValue<'ctx>,
        body: impl FnOnce(IntValue<'ctx>) -> IrResult<()>,
    ) -> IrResult<()> {
        self.ir.step_loop(self.f, name, start, end, |i| {
            body(i)?;
            self.ir.add(i, stride)
        })
    }

    /// Thread `p`'s global index and the grid's thread count.
    fn global(&self, p: &Par<'ctx>) -> IrResult<(IntValue<'ctx>, IntValue<'ctx>)> {
        let ir = self.ir;
        Ok((
            ir.mad(p.block, self.k(self.threads), p.tid)?,
            ir.mul(p.nblocks, self.k(self.threads))?,
        ))
    }

    /// A guarded load: `load(idx)` where `ok`, else 0 (the address is never formed
    /// out of range: the index is 0 there).
    fn guarded(
        &self,
        ok: IntValue<'ctx>,
        idx: IntValue<'ctx>,
        load: impl FnOnce(IntValue<'ctx>) -> IrResult<FloatValue<'ctx>>,
    ) -> IrResult<FloatValue<'ctx>> {
        let m = Math { ir: self.ir };
        let safe = self
            .ir
            .b
            .build_select(ok, idx, self.k(0), "")?
            .into_int_value();
        m.select(ok, load(safe)?, m.c(0.0))
    }

    /// `base[idx]` where `ok`, else 0.
    fn load_if(
        &self,
        ok: IntValue<'ctx>,
        base: PointerValue<'ctx>,
        idx: IntValue<'ctx>,
    ) -> IrResult<FloatValue<'ctx>> {
        let ir = self.ir;
        self.guarded(ok, idx, |i| {
            Ok(ir.load_f32(ir.at(base, i)?)?.into_float_value())
        })
    }

    /// [`Gen::load_if`] from buffer `buf`, decoded as [`Exprs::load`] does when the buffer
    /// is stored in another type (a ggml-typed parameter, half-precision activations).
    fn load_elem_if(
        &self,
        ok: IntValue<'ctx>,
        buf: BufId,
        base: PointerValue<'ctx>,
        idx: IntValue<'ctx>,
    ) -> IrResult<FloatValue<'ctx>> {
        self.guarded(ok, idx, |i| self.ex.load(buf, base, i))
    }

    /// The ggml type parameter buffer `buf` is stored in (`None`: f32).
    fn stored(&self, buf: BufId) -> Option<GgmlType> {
        self.ex.buf_quant.get(buf).copied().flatten()
    }

    /// `ptr + idx` in elements of buffer `buf` as stored: 2 bytes for half-precision
    /// activations, 4 for f32 (not for parameters stored in ggml blocks).
    fn elem_at(
        &self,
        buf: BufId,
        ptr: PointerValue<'ctx>,
        idx: IntValue<'ctx>,
    ) -> IrResult<PointerValue<'ctx>> {
        let ir = self.ir;
        match self.stored(buf) {
            None => ir.at(ptr, idx),
            Some(GgmlType::BF16 | GgmlType::F16) => Ok(unsafe {
                ir.b.build_in_bounds_gep(ir.ctx.i16_type(), ptr, &[idx], "")?
            }),
            Some(ty) => Err(IrError(format!(
                "a strided view of buffer {buf}, stored as {}",
                ty.name()
            ))),
        }
    }

    /// `buf[idx] = v`, rounded to nearest even where the buffer holds half-precision
    /// activations (`kernel::quant::store_activations`).
    fn store_elem(
        &self,
        buf: BufId,
        base: PointerValue<'ctx>,
        idx: IntValue<'ctx>,
        v: FloatValue<'ctx>,
    ) -> IrResult<()> {
        let ir = self.ir;
        let pt = self.elem_at(buf, base, idx)?;
        match self.stored(buf) {
            Some(ty) => {
                let bits = self.half_bits(ty, v)?;
                ir.b.build_store(pt, ir.b.build_int_truncate(bits, ir.ctx.i16_type(), "")?)?;
                Ok(())
            }
            None => ir.store(pt, v),
        }
    }

    fn fma(
        &self,
        a: FloatValue<'ctx>,
        b: FloatValue<'ctx>,
        c: FloatValue<'ctx>,
    ) -> IrResult<FloatValue<'ctx>> {
        let ir = self.ir;
        Ok(ir
            .intrinsic(
                "llvm.fmuladd",
                &[ir.f32.into()],
                &[a.into(), b.into(), c.into()],
            )?
            .into_float_value())
    }

    /// Combines a value across the 32 lanes of a warp (every lane gets the result, the
    /// same bits in every lane).
    fn warp_reduce(&self, v: FloatValue<'ctx>, op: ReduceOp) -> IrResult<FloatValue<'ctx>> {
        self.simt.warp_reduce(v, op == ReduceOp::Max)
    }

    fn map(
        &self,
        p: &Par<'ctx>,
        out: BufId,
        offset: &Ix,
        extents: &[Ix],
        expr: &Expr,
    ) -> IrResult<()> {
        let ir = self.ir;
        let ext: Vec<_> = extents.iter().map(|x| self.c(x)).collect::<IrResult<_>>()?;
        let total = self.prod(&ext)?;
        let outp = self.buf(out)?;
        let (first, stride) = self.global(p)?;
        self.strided("el", first, total, stride, |i| {
            let vars = self.ex.delinear(i, &ext)?;
            let v = self.ex.expr(&self.vals, expr, &vars)?;
            let at = if offset.as_const() == Some(0) {
                i
            } else {
                ir.add(i, self.ex.ix(&self.vals, offset, &vars)?)?
            };
            self.store_elem(out, outp, at, v)
        })
    }

    #[allow(clippy::too_many_arguments)]
    fn reduce(
        &self,
        p: &Par<'ctx>,
        out: BufId,
        extents: &[Ix],
        axis: usize,
        op: ReduceOp,
        expr: &Expr,
    ) -> IrResult<()> {
        let ir = self.ir;
        let m = Math { ir };
        let ext: Vec<_> = extents.iter().map(|x| self.c(x)).collect::<IrResult<_>>()?;
        let n = ext[axis];
        let inner = self.prod(&ext[axis + 1..])?;
        let outputs = ir.mul(self.prod(&ext[..axis])?, inner)?;
        let outp = self.buf(out)?;
        let (gt, gs) = self.global(p)?;
        let lane = self.urem(p.tid, self.k(WARP))?;
        let warp = self.udiv(gt, self.k(WARP))?;
        let warps = self.udiv(gs, self.k(WARP))?;
        self.strided("o", warp, outputs, warps, |o| {
            let outer_vars = self.ex.delinear(self.udiv(o, inner)?, &ext[..axis])?;
            let inner_vars = self.ex.delinear(self.urem(o, inner)?, &ext[axis + 1..])?;
            let init = match op {
                ReduceOp::Max => m.c(f64::NEG_INFINITY),
                ReduceOp::Sum | ReduceOp::Mean => m.c(0.0),
            };
            let steps = WholeSteps {
                start: lane,
                limit: ir.add(n, self.k(WARP - 1))?,
                step: WARP,
            };
            let (_, acc) = ir.carried_loop(self.f, "r", steps, &[init.into()], |r, acc| {
                let mut vars = outer_vars.clone();
                vars.push(r);
                vars.extend_from_slice(&inner_vars);
                let x = self.ex.expr(&self.vals, expr, &vars)?;
                let a = acc[0].into_float_value();
                let next = match op {
                    ReduceOp::Max => m.binary_intrinsic("llvm.maxnum", a, x)?,
                    ReduceOp::Sum | ReduceOp::Mean => ir.b.build_float_add(a, x, "")?,
                };
                Ok(vec![next.into()])
            })?;
            let mut v = self.warp_reduce(acc[0].into_float_value(), op)?;
            if op == ReduceOp::Mean {
                let nf = ir.b.build_signed_int_to_float(n, ir.f32, "")?;
                v = ir.b.build_float_div(v, nf, "")?;
            }
            let first = ir.eq(lane, self.k(0))?;
            ir.if_else(
                self.f,
                "st",
                first,
                || self.store_elem(out, outp, o, v),
                || Ok(()),
            )
        })
    }

    fn scatter(&self, p: &Par<'ctx>, s: &crate::kernel::Scatter) -> IrResult<()> {
        let ir = self.ir;
        let m = Math { ir };
        let (rows, w, n) = (self.c(&s.rows)?, self.c(&s.width)?, self.c(&s.n)?);
        let outp = self.buf(s.out)?;
        let (first, stride) = self.global(p)?;
        self.strided("col", first, w, stride, |j| {
            ir.for_range(self.f, "zr", self.k(0), rows, 1, |r| {
                ir.store(ir.at(outp, ir.mad(r, w, j)?)?, m.c(0.0))
            })?;
            ir.for_range(self.f, "t", self.k(0), n, 1, |t| {
                let row = self.ex.ix(&self.vals, &s.index, &[t])?;
                let pt = ir.at(outp, ir.mad(row, w, j)?)?;
                let old = ir.load_f32(pt)?.into_float_value();
                let v = self.ex.expr(&self.vals, &s.expr, &[t, j])?;
                ir.store(pt, ir.b.build_float_add(old, v, "")?)
            })
        })
    }

    /// A block-wide copy of `elems` floats.
    fn block_copy(
        &self,
        p: &Par<'ctx>,
        dst: PointerValue<'ctx>,
        src: PointerValue<'ctx>,
        elems: IntValue<'ctx>,
    ) -> IrResult<()> {
        let ir = self.ir;
        ir.for_range(self.f, "cp", p.tid, elems, self.threads, |e| {
            let v = ir.load_f32(ir.at(src, e)?)?;
            ir.store(ir.at(dst, e)?, v)
        })
    }

    /// A scan: one block runs its steps in order; a scan whose rows run apart
    /// ([`Scan::rows`]) gives each block rows of its own (block b rows b, b + blocks, …),
    /// each the scan of one row.
    fn scan(&self, p: &Par<'ctx>, s: &Scan) -> IrResult<()> {
        let Some(rows) = &s.rows else {
            return self.scan_steps(p, s);
        };
        let ir = self.ir;
        let sym = rows.sym as usize;
        let count = *self
            .vals
            .syms
            .get(sym)
            .ok_or_else(|| IrError(format!("scan rows: no symbol {sym}")))?;
        self.strided("row", p.block, count, p.nblocks, |row| {
            let mut vals = self.vals.clone();
            vals.syms[sym] = self.k(1);
            for (b, row_bytes) in &rows.bufs {
                if self.stored(*b).is_some() {
                    return Err(IrError(format!("scan rows: buffer {b} is not f32 or i64")));
                }
                let bytes = self.ex.ix(&vals, row_bytes, &[])?;
                let at = unsafe {
                    ir.b.build_in_bounds_gep(
                        ir.ctx.i8_type(),
                        self.buf(*b)?,
                        &[ir.mul(row, bytes)?],
                        "",
                    )?
                };
                vals.bufs.insert(*b, at);
            }
            Gen { vals, ..*self }.scan_steps(p, s)
        })
    }

    fn scan_steps(&self, p: &Par<'ctx>, s: &Scan) -> IrResult<()> {
        let ir = self.ir;
        let inner = Par {
            tid: p.tid,
            block: self.k(0),
            nblocks: self.k(1),
        };
        let copies = |list: &[(BufId, BufId, Ix)]| -> IrResult<()> {
            for (from, to, n) in list {
                self.block_copy(&inner, self.buf(*to)?, self.buf(*from)?, self.c(n)?)?;
            }
            self.simt.barrier()
        };
        copies(&s.init)?;
        let steps = self.c(&s.steps)?;
        ir.for_range(self.f, "t", self.k(0), steps, 1, |t| {
            let tt = if s.reverse {
                ir.sub(ir.sub(steps, self.k(1))?, t)?
            } else {
                t
            };
            let step_copies = |list: &[crate::kernel::StepCopy], into_step: bool| -> IrResult<()> {
                for sc in list {
                    let (rows, len) = (self.c(&sc.rows)?, self.c(&sc.len)?);
                    let (seq, step) = (self.buf(sc.seq)?, self.buf(sc.step)?);
                    ir.for_range(self.f, "sc", p.tid, ir.mul(rows, len)?, self.threads, |e| {
                        let (r, x) = (self.udiv(e, len)?, self.urem(e, len)?);
                        let in_seq = ir.at(seq, ir.mad(ir.mad(r, steps, tt)?, len, x)?)?;
                        let in_step = ir.at(step, e)?;
                        let (dst, src) = if into_step {
                            (in_step, in_seq)
                        } else {
                            (in_seq, in_step)
                        };
                        ir.store(dst, ir.load_f32(src)?)
                    })?;
                }
                self.simt.barrier()
            };
            step_copies(&s.seq_in, true)?;
            step_copies(&s.seq_save, false)?;
            for bk in &s.body {
                self.body(&inner, bk)?;
                self.simt.barrier()?;
            }
            copies(&s.update)?;
            step_copies(&s.seq_out, false)
        })?;
        copies(&s.finish)
    }

    /// A(i, k) and B(k, j) of a matmul of batch `bt`.
    fn operand(
        &self,
        mm: &MatMul,
        bt: IntValue<'ctx>,
        a_side: bool,
    ) -> IrResult<(PointerValue<'ctx>, IntValue<'ctx>, IntValue<'ctx>)> {
        let panel = if a_side { &mm.a } else { &mm.b };
        let base = self.buf(panel.buf)?;
        let off = self.ex.ix(&self.vals, &panel.offset, &[bt])?;
        let ld = self.ex.ix(&self.vals, &panel.ld, &[bt])?;
        Ok((base, off, ld))
    }

    /// The products of output tile (bt, i0.., j0..) — `bm` × `bn` of [`Tiling`] — stored
    /// to `out`, with the epilogue applied unless `raw`. The k loop runs over
    /// [`Tiling::stages`] shared-memory stages: while the warps multiply one, the next k
    /// steps' operands are copied into the others ([`Gen::stage_operands`]: asynchronous
    /// copies where the operand's layout and type allow).
    #[allow(clippy::too_many_arguments)]
    fn matmul_tile(
        &self,
        p: &Par<'ctx>,
        mm: &MatMul,
        dims: (IntValue<'ctx>, IntValue<'ctx>, IntValue<'ctx>),
        bt: IntValue<'ctx>,
        i0: IntValue<'ctx>,
        j0: IntValue<'ctx>,
        raw: bool,
    ) -> IrResult<()> {
        let ir = self.ir;
        let m_ = Math { ir };
        let tl = self.tiling;
        let (m, n, k) = dims;
        let smem = self
            .smem
            .ok_or_else(|| IrError("matmul without shared memory".into()))?;
        let sides = [
            self.side(mm, bt, true, i0, m)?,
            self.side(mm, bt, false, j0, n)?,
        ];
        let (origin, groups, ntiles) = self.warp_tiles(p)?;
        let lane = self.urem(p.tid, self.k(WARP))?;
        let (g, t) = (self.udiv(lane, self.k(4))?, self.urem(lane, self.k(4))?);
        let per_tile = (groups * ntiles * 4) as usize;
        let init: Vec<BasicValueEnum<'ctx>> = vec![m_.c(0.0).into(); origin.len() * per_tile];
        let kstep = self.kstep();
        let nk = self.ceil_div(k, kstep)?;
        let b_exact = matches!(self.stored(mm.b.buf), Some(GgmlType::BF16 | GgmlType::F16));
        let stage = |s: IntValue<'ctx>| ir.at(smem, ir.mul(s, self.k(tl.stage_words()))?);
        // The first `stages - 1` k steps, one `cp.async` group each (the first whatever
        // k is: a zero fill past k costs nothing worth a test).
        for st in 0..tl.stages - 1 {
            let fill = || {
                let k0 = self.k(st * kstep);
                self.stage_operands(p, &sides, stage(self.k(st))?, k0, k)
            };
            if st == 0 {
                fill()?;
            } else {
                ir.if_else(self.f, "pro", self.lt(self.k(st), nk)?, fill, || Ok(()))?;
            }
            self.simt.cp_async_commit()?;
        }
        let steps = WholeSteps {
            start: self.k(0),
            limit: nk,
            step: 1,
        };
        let (_, acc) = ir.carried_loop(self.f, "kt", steps, &init, |kt, cur| {
            let s = self.urem(kt, self.k(tl.stages))?;
            let here = stage(s)?;
            let next = ir.add(kt, self.k(tl.stages - 1))?;
            // Every group but the `stages - 2` latest (the steps after this one) is
            // complete: this thread's copies into `here` have landed; the barrier makes
            // everyone's seen, and everyone done with the stage the step before read,
            // which takes step `next` while the warps multiply this one.
            self.simt.cp_async_wait(tl.stages - 2)?;
            if tl.wgmma {
                // ... and visible to the tensor cores' reads of shared memory.
                self.simt.fence_proxy_async()?;
            }
            self.simt.barrier()?;
            ir.if_else(
                self.f,
                "fill",
                self.lt(next, nk)?,
                || {
                    // `1 - s` is `next % 2`: two stages keep the form the reviewed PTX
                    // snapshot (`cuda_ptx.rs::gpt2_layer_ptx`) was taken with.
                    let there = if tl.stages == 2 {
                        stage(ir.sub(self.k(1), s)?)?
                    } else {
                        stage(self.urem(next, self.k(tl.stages))?)?
                    };
                    self.stage_operands(p, &sides, there, ir.mul(next, self.k(kstep))?, k)
                },
                || Ok(()),
            )?;
            self.simt.cp_async_commit()?;
            let mut acc: Vec<FloatValue<'ctx>> = cur.iter().map(|v| v.into_float_value()).collect();
            if tl.wgmma {
                self.wgmma_products(here, i0, m, &origin, &mut acc)?;
            } else {
                self.tile_products(here, (i0, j0), (m, n), (g, t), &origin, b_exact, &mut acc)?;
            }
            Ok(acc.into_iter().map(Into::into).collect())
        })?;
        // Nobody refills a stage (the next tile's first steps, a row epilogue's staging)
        // before everyone has multiplied the last.
        self.simt.cp_async_wait(0)?;
        self.simt.barrier()?;
        let outp = self.buf(mm.out)?;
        let plane = ir.mul(bt, ir.mul(m, n)?)?;
        let epi = mm.epilogue.as_ref().filter(|_| !raw);
        for (q, &(r0, c0)) in origin.iter().enumerate() {
            for rg in 0..groups {
                for j in 0..ntiles {
                    for e in 0..4u64 {
                        let r = ir.add(r0, ir.add(g, self.k(16 * rg + 8 * (e / 2)))?)?;
                        let c = ir.add(c0, ir.mad(t, self.k(2), self.k(8 * j + e % 2))?)?;
                        let (i, jj) = (ir.add(i0, r)?, ir.add(j0, c)?);
                        let ok = ir.b.build_and(self.lt(i, m)?, self.lt(jj, n)?, "")?;
                        let at = q * per_tile + (((rg * ntiles + j) * 4 + e) as usize);
                        let v = acc[at].into_float_value();
                        self.store_product(ok, (mm.out, outp, plane, n), (bt, i, jj), v, epi)?;
                    }
                }
            }
        }
        Ok(())
    }

    /// This thread's tiles of the block's output tile: each one's first row and column
    /// in it, its 16-row groups and 8-column n tiles — the accumulators of tile q, group
    /// r, n tile j at ((q · groups + r) · n tiles + j) · 4, in the `mma` m16n8 layout
    /// (rows g and g + 8 of the group, columns 2t and 2t + 1 of the n tile). Warp tiles
    /// (`wm` × `wn`) are dealt to the warps in turn; with `wgmma`, warpgroup tiles (64 ×
    /// `bn`) to the warpgroups, a warp's part of one being its 16 rows by `bn`.
    #[allow(clippy::type_complexity)]
    fn warp_tiles(
        &self,
        p: &Par<'ctx>,
    ) -> IrResult<(Vec<(IntValue<'ctx>, IntValue<'ctx>)>, u64, u64)> {
        let ir = self.ir;
        let tl = self.tiling;
        let warp = self.udiv(p.tid, self.k(WARP))?;
        if tl.wgmma {
            let groups = (self.threads / WARPGROUP).max(1);
            let wtiles = tl.bm / tl.wm;
            if self.threads < WARPGROUP || !wtiles.is_multiple_of(groups) || tl.wn != tl.bn {
                return Err(IrError(format!(
                    "{} threads per block cannot share the wgmma tiles of {tl:?}",
                    self.threads
                )));
            }
            let wg = self.udiv(p.tid, self.k(WARPGROUP))?;
            let in_group = ir.mul(self.urem(warp, self.k(4))?, self.k(16))?;
            let origin = (0..wtiles / groups)
                .map(|q| {
                    let tile = ir.add(wg, self.k(q * groups))?;
                    Ok((ir.mad(tile, self.k(tl.wm), in_group)?, self.k(0)))
                })
                .collect::<IrResult<_>>()?;
            return Ok((origin, 1, tl.bn / 8));
        }
        // Warp tiles: (bm / wm) × (bn / wn) of them, dealt to the warps in turn.
        let warps = (self.threads / WARP).max(1);
        let per_row = tl.bn / tl.wn;
        let wtiles = (tl.bm / tl.wm) * per_row;
        if !wtiles.is_multiple_of(warps) {
            return Err(IrError(format!(
                "{} threads per block do not divide the matmul's warp tiles",
                self.threads
            )));
        }
        let origin = (0..wtiles / warps)
            .map(|q| {
                let w = ir.add(warp, self.k(q * warps))?;
                Ok((
                    ir.mul(self.udiv(w, self.k(per_row))?, self.k(tl.wm))?,
                    ir.mul(self.urem(w, self.k(per_row))?, self.k(tl.wn))?,
                ))
            })
            .collect::<IrResult<_>>()?;
        Ok((origin, tl.wm / 16, tl.wn / 8))
    }

    /// One stage's products by `wgmma` (after the stage's copies were made visible to
    /// the tensor cores' shared-memory reads by `fence.proxy.async`, then a barrier):
    /// for each warpgroup tile of this thread (`origin`, as [`Gen::warp_tiles`] gives
    /// them) whose rows reach into the product (a warpgroup-uniform test), one `wgmma`
    /// m64n{bn}k16 per 16 k of the stage, A and B described where [`Gen::staged_word`]
    /// put them.
    fn wgmma_products(
        &self,
        stage: PointerValue<'ctx>,
        i0: IntValue<'ctx>,
        m: IntValue<'ctx>,
        origin: &[(IntValue<'ctx>, IntValue<'ctx>)],
        acc: &mut [FloatValue<'ctx>],
    ) -> IrResult<()> {
        let ir = self.ir;
        let tl = self.tiling;
        let ty = self
            .half
            .ok_or_else(|| IrError("wgmma tiles without a half-precision type".into()))?;
        let per_tile = (tl.bn / 8 * 4) as usize;
        let a_s = self.simt.shared_address(stage)?;
        let b_s = ir.add(a_s, self.k(4 * tl.bm * tl.kw))?;
        let desc = |at: IntValue<'ctx>| -> IrResult<IntValue<'ctx>> {
            let start = ir.b.build_and(
                ir.b.build_right_shift(at, self.k(4), false, "")?,
                self.k(0x3FFF),
                "",
            )?;
            ir.b.build_or(
                start,
                self.k(((WG_LBO >> 4) << 16) | ((tl.wg_sbo() >> 4) << 32)),
                "",
            )
            .map_err(Into::into)
        };
        for (q, &(r0, _)) in origin.iter().enumerate() {
            // The warpgroup tile's first row (r0 is this warp's, 16 · (warp % 4) past it).
            let first = ir.sub(r0, self.urem(r0, self.k(tl.wm))?)?;
            let live = self.lt(ir.add(i0, first)?, m)?;
            let tile = &mut acc[q * per_tile..(q + 1) * per_tile];
            let old: Vec<BasicValueEnum<'ctx>> = tile.iter().map(|&v| v.into()).collect();
            let new = ir.if_values(
                self.f,
                "wgmma",
                live,
                || {
                    let a_rows = ir.add(
                        a_s,
                        ir.mul(self.udiv(first, self.k(8))?, self.k(tl.wg_sbo()))?,
                    )?;
                    let descs = (0..tl.kw / 8)
                        .map(|s| {
                            let kb = self.k(2 * s * WG_LBO);
                            Ok((desc(ir.add(a_rows, kb)?)?, desc(ir.add(b_s, kb)?)?))
                        })
                        .collect::<IrResult<Vec<_>>>()?;
                    let d = self.simt.wgmma_half(ty, &descs, tile)?;
                    Ok(d.into_iter().map(Into::into).collect())
                },
                &old,
            )?;
            for (slot, v) in tile.iter_mut().zip(new) {
                *slot = v.into_float_value();
            }
        }
        Ok(())
    }

    /// k per shared-memory stage: [`Tiling::kw`] words of f32, or twice as many
    /// half-precision values with `--dtype`.
    fn kstep(&self) -> u64 {
        if self.half.is_some() {
            2 * self.tiling.kw
        } else {
            self.tiling.kw
        }
    }

    /// Operand A (`a_side`, its rows from `x0`, `bound` of them) or B (its columns) of a
    /// matmul of batch `bt`.
    fn side(
        &self,
        mm: &MatMul,
        bt: IntValue<'ctx>,
        a_side: bool,
        x0: IntValue<'ctx>,
        bound: IntValue<'ctx>,
    ) -> IrResult<Side<'ctx>> {
        let panel = if a_side { &mm.a } else { &mm.b };
        Ok(Side {
            buf: panel.buf,
            base: self.buf(panel.buf)?,
            off: self.ex.ix(&self.vals, &panel.offset, &[bt])?,
            ld: self.ex.ix(&self.vals, &panel.ld, &[bt])?,
            contiguous: if a_side {
                !mm.transpose_a
            } else {
                mm.transpose_b
            },
            x0,
            bound,
            rows: if a_side {
                self.tiling.bm
            } else {
                self.tiling.bn
            },
        })
    }

    /// Where word `w` (of [`Tiling::kw`]) of staged row `x` lies in its operand's part of
    /// a stage, in words: row-major rows [`Tiling::row_words`] apart; for `wgmma`, the k-major
    /// "interleaved" layout of its shared-memory descriptors — 8 × 16-byte core matrices
    /// (8 rows of 4 words, contiguous), the `kw / 4` of a group of 8 rows [`WG_LBO`] bytes
    /// apart along k, groups of 8 rows [`Tiling::wg_sbo`] apart.
    fn staged_word(&self, x: IntValue<'ctx>, w: IntValue<'ctx>) -> IrResult<IntValue<'ctx>> {
        let ir = self.ir;
        if !self.tiling.wgmma {
            return ir.mad(x, self.k(self.tiling.row_words()), w);
        }
        let group = ir.mul(self.udiv(x, self.k(8))?, self.k(self.tiling.wg_sbo() / 4))?;
        let core = ir.mul(self.udiv(w, self.k(4))?, self.k(WG_LBO / 4))?;
        let row = ir.mul(self.urem(x, self.k(8))?, self.k(4))?;
        ir.add(ir.add(group, core)?, ir.add(row, self.urem(w, self.k(4))?)?)
    }

    /// Fills the stage at `dst` — A's `bm` rows, then B's `bn` columns, k contiguous
    /// ([`Gen::staged_word`]) — with k step `k0..` of both operands (zero outside them).
    fn stage_operands(
        &self,
        p: &Par<'ctx>,
        sides: &[Side<'ctx>; 2],
        dst: PointerValue<'ctx>,
        k0: IntValue<'ctx>,
        k: IntValue<'ctx>,
    ) -> IrResult<()> {
        let ir = self.ir;
        let mut at = dst;
        for side in sides {
            self.stage_side(p, side, at, k0, k)?;
            at = ir.at(at, self.k(side.rows * self.tiling.row_words()))?;
        }
        Ok(())
    }

    /// One operand's part of a stage. Where the operand is stored k-contiguous in the
    /// staged type (f32, or the `--dtype` type for weights stored in it) and its rows
    /// start 16-byte aligned (checked at run time), by `cp.async` 16 bytes at a time,
    /// which zero-fills past the operand; otherwise element by element — decoded,
    /// rounded to the half type with `--dtype` — by plain loads and stores, consecutive
    /// threads reading consecutive addresses of whichever layout the operand has.
    fn stage_side(
        &self,
        p: &Par<'ctx>,
        side: &Side<'ctx>,
        dst: PointerValue<'ctx>,
        k0: IntValue<'ctx>,
        k: IntValue<'ctx>,
    ) -> IrResult<()> {
        let ir = self.ir;
        let stored = self.stored(side.buf);
        let direct = side.contiguous
            && match self.half {
                None => stored.is_none(),
                Some(ty) => stored == Some(ty),
            };
        if !direct {
            return self.stage_elements(p, side, dst, k0, k);
        }
        let es = self.k(4 * self.tiling.kw / self.kstep());
        let addr = ir.b.build_ptr_to_int(side.base, ir.i64, "")?;
        let first = ir.add(addr, ir.mul(side.off, es)?)?;
        let misaligned = ir.b.build_or(first, ir.mul(side.ld, es)?, "")?;
        let misaligned = ir.b.build_and(misaligned, self.k(15), "")?;
        let aligned = ir.eq(misaligned, self.k(0))?;
        ir.if_else(
            self.f,
            "cpa",
            aligned,
            || self.stage_async(p, side, dst, k0, k),
            || self.stage_elements(p, side, dst, k0, k),
        )
    }

    /// `for c in (tid..count).step_by(threads)`, unrolled when `threads` divides `count`
    /// at most eight times (more would mostly cost compile time: the simulator's blocks
    /// are four times narrower than the GPU's).
    fn per_thread(
        &self,
        p: &Par<'ctx>,
        name: &str,
        count: u64,
        mut body: impl FnMut(IntValue<'ctx>) -> IrResult<()>,
    ) -> IrResult<()> {
        if count.is_multiple_of(self.threads) && count / self.threads <= 8 {
            for c in 0..count / self.threads {
                body(self.ir.add(p.tid, self.k(c * self.threads))?)?;
            }
            return Ok(());
        }
        self.ir
            .for_range(self.f, name, p.tid, self.k(count), self.threads, body)
    }

    /// A cooperative copy into shared memory: for each `c` of this thread (as
    /// [`Gen::per_thread`]), `item(c)` loads a value and says where it goes. On a GPU,
    /// when `threads` divides `count` at most 16 times, every load of the thread is
    /// issued before its first store: the compiler may not move a global load above a
    /// store through a generic pointer, so one load, one store per element would wait out
    /// the memory's latency once per element instead of once.
    fn copy_per_thread(
        &self,
        p: &Par<'ctx>,
        name: &str,
        count: u64,
        mut item: impl FnMut(IntValue<'ctx>) -> IrResult<(PointerValue<'ctx>, BasicValueEnum<'ctx>)>,
    ) -> IrResult<()> {
        let per = count / self.threads;
        let batched = matches!(self.simt.mode, Mode::Ptx { .. })
            && count.is_multiple_of(self.threads)
            && per <= 16;
        if batched {
            let items = (0..per)
                .map(|c| item(self.ir.add(p.tid, self.k(c * self.threads))?))
                .collect::<IrResult<Vec<_>>>()?;
            for (at, v) in items {
                self.ir.b.build_store(at, v)?;
            }
            return Ok(());
        }
        self.per_thread(p, name, count, |c| {
            let (at, v) = item(c)?;
            self.ir.b.build_store(at, v)?;
            Ok(())
        })
    }

    /// [`Gen::stage_side`] by `cp.async`: `kw / 4` 16-byte chunks per staged row.
    fn stage_async(
        &self,
        p: &Par<'ctx>,
        side: &Side<'ctx>,
        dst: PointerValue<'ctx>,
        k0: IntValue<'ctx>,
        k: IntValue<'ctx>,
    ) -> IrResult<()> {
        let ir = self.ir;
        let es = 4 * self.tiling.kw / self.kstep();
        let per_chunk = 16 / es;
        let chunks = self.tiling.kw / 4;
        self.per_thread(p, "cpa", side.rows * chunks, |c| {
            let (x, q) = (self.udiv(c, self.k(chunks))?, self.urem(c, self.k(chunks))?);
            let xg = ir.add(side.x0, x)?;
            let kg = ir.add(k0, ir.mul(q, self.k(per_chunk))?)?;
            let idx = ir.add(side.off, ir.mad(xg, side.ld, kg)?)?;
            let to = ir.at(dst, self.staged_word(x, ir.mul(q, self.k(4))?)?)?;
            let row_ok = self.lt(xg, side.bound)?;
            self.copy_chunk(to, (side.base, idx), row_ok, ir.sub(k, kg)?, es)
        })
    }

    /// One `cp.async` of 16 bytes to `to` from element `idx` of `base` (elements of `es`
    /// bytes), of which `left` remain in the source row from there: at most 16 / `es`
    /// are read, none where `row_ok` is false, and the rest of the 16 bytes zero-filled.
    /// Where nothing is read the source is element 0, never an address past the operand.
    fn copy_chunk(
        &self,
        to: PointerValue<'ctx>,
        (base, idx): (PointerValue<'ctx>, IntValue<'ctx>),
        row_ok: IntValue<'ctx>,
        left: IntValue<'ctx>,
        es: u64,
    ) -> IrResult<()> {
        let ir = self.ir;
        let left = self.ex.max(left, self.k(0))?;
        let valid = ir.min(left, self.k(16 / es))?;
        let valid =
            ir.b.build_select(row_ok, valid, self.k(0), "")?
                .into_int_value();
        let some = self.lt(self.k(0), valid)?;
        let idx =
            ir.b.build_select(some, idx, self.k(0), "")?
                .into_int_value();
        let i8t = ir.ctx.i8_type();
        let src = unsafe {
            ir.b.build_in_bounds_gep(i8t, base, &[ir.mul(idx, self.k(es))?], "")?
        };
        self.simt.cp_async16(to, src, ir.mul(valid, self.k(es))?)
    }

    /// [`Gen::stage_side`] element by element.
    fn stage_elements(
        &self,
        p: &Par<'ctx>,
        side: &Side<'ctx>,
        dst: PointerValue<'ctx>,
        k0: IntValue<'ctx>,
        k: IntValue<'ctx>,
    ) -> IrResult<()> {
        let ir = self.ir;
        let kstep = self.kstep();
        self.copy_per_thread(p, "stg", side.rows * kstep, |e| {
            let (x, kk) = if side.contiguous {
                (self.udiv(e, self.k(kstep))?, self.urem(e, self.k(kstep))?)
            } else {
                (
                    self.urem(e, self.k(side.rows))?,
                    self.udiv(e, self.k(side.rows))?,
                )
            };
            let (xg, kg) = (ir.add(side.x0, x)?, ir.add(k0, kk)?);
            let ok =
                ir.b.build_and(self.lt(xg, side.bound)?, self.lt(kg, k)?, "")?;
            let idx = if side.contiguous {
                ir.add(side.off, ir.mad(xg, side.ld, kg)?)?
            } else {
                ir.add(side.off, ir.mad(kg, side.ld, xg)?)?
            };
            let v = self.load_elem_if(ok, side.buf, side.base, idx)?;
            match self.half {
                Some(ty) => {
                    let i16t = ir.ctx.i16_type();
                    let bits = ir.b.build_int_truncate(self.half_bits(ty, v)?, i16t, "")?;
                    let word = self.staged_word(x, self.udiv(kk, self.k(2))?)?;
                    let at = ir.mad(word, self.k(2), self.urem(kk, self.k(2))?)?;
                    let pt = unsafe { ir.b.build_in_bounds_gep(i16t, dst, &[at], "")? };
                    Ok((pt, bits.into()))
                }
                None => Ok((ir.at(dst, self.staged_word(x, kk)?)?, v.into())),
            }
        })
    }

    /// One stage's products: for each of this warp's tiles `origin[q]` (first row and
    /// column in the block's output tile at (i0, j0)), each of its 16-row groups that
    /// lies inside the product (a warp-uniform test) and each of its 8-column n tiles,
    /// the stage's k on the tensor cores into `acc` (at index ((q · groups + group) ·
    /// n tiles + j) · 4). Fragments are 32-bit words of the staged rows (row x, word w
    /// at x · row_words + w), with `g = lane / 4`, `t = lane % 4`: A rows g and g + 8 of the
    /// group and B column g of the n tile, words t and t + 4 of each 8-word half of the
    /// stage's [`Tiling::kw`]. In f32 the words are tf32 k columns t and t + 4 of an m16n8k8 step
    /// (3×TF32); in half precision pairs of k, (2t, 2t + 1) and (2t + 8, 2t + 9) of an
    /// m16n8k16 step.
    #[allow(clippy::too_many_arguments)]
    fn tile_products(
        &self,
        stage: PointerValue<'ctx>,
        (i0, j0): (IntValue<'ctx>, IntValue<'ctx>),
        (m, n): (IntValue<'ctx>, IntValue<'ctx>),
        (g, t): (IntValue<'ctx>, IntValue<'ctx>),
        origin: &[(IntValue<'ctx>, IntValue<'ctx>)],
        b_exact: bool,
        acc: &mut [FloatValue<'ctx>],
    ) -> IrResult<()> {
        let ir = self.ir;
        let tl = self.tiling;
        let sw = tl.row_words();
        let (a_s, b_s) = (stage, ir.at(stage, self.k(tl.bm * sw))?);
        let word = |tile, x, w| self.smem_word(tile, sw, x, w);
        let split = |bits| self.tf32_split(bits);
        // Half-precision weights are exact in tf32 (f16's 10 mantissa bits, bf16's 7, and
        // f16 subnormals normal in tf32's 8-bit exponent): B's tail is zero, so its
        // head·tail product is left out.
        let b_exact = self.half.is_none() && b_exact;
        let (groups, ntiles) = (tl.wm / 16, tl.wn / 8);
        let per_tile = (groups * ntiles * 4) as usize;
        // With `ldmatrix` the lanes give rows of 8 × 8 matrices (`Gen::ldmatrix_row`).
        let lane = ir.mad(g, self.k(4), t)?;
        let ldm = tl.ldmatrix && ntiles % 2 == 0;
        for half_step in 0..tl.kw / 8 {
            let w0 = ir.add(t, self.k(8 * half_step))?;
            let w4 = ir.add(w0, self.k(4))?;
            let frag_row = |tile, first, rows_first, l| {
                self.ldmatrix_row(tile, sw, first, 8 * half_step, rows_first, l)
            };
            for (q, &(r0, c0)) in origin.iter().enumerate() {
                let cols_in = self.lt(ir.add(j0, c0)?, n)?;
                let bw = if ldm {
                    // Two n tiles an instruction: matrices (tile j, words 0–3 and 4–7 of the
                    // half step), then tile j + 1's.
                    let mut bw = Vec::with_capacity(ntiles as usize);
                    for j in (0..ntiles).step_by(2) {
                        let first = ir.add(c0, self.k(8 * j))?;
                        let r = self
                            .simt
                            .ldmatrix_x4(lane, false, &|l| frag_row(b_s, first, false, l))?;
                        bw.push([r[0], r[1]]);
                        bw.push([r[2], r[3]]);
                    }
                    bw
                } else {
                    (0..ntiles)
                        .map(|j| {
                            let col = ir.add(c0, ir.add(g, self.k(8 * j))?)?;
                            Ok([word(b_s, col, w0)?, word(b_s, col, w4)?])
                        })
                        .collect::<IrResult<Vec<_>>>()?
                };
                let b_split = match self.half {
                    Some(_) => Vec::new(),
                    None => bw
                        .iter()
                        .map(|&[b0, b1]| {
                            let (h0, l0) = split(b0)?;
                            let (h1, l1) = split(b1)?;
                            Ok(([h0, h1], [l0, l1]))
                        })
                        .collect::<IrResult<Vec<_>>>()?,
                };
                for rg in 0..groups {
                    let first = ir.add(i0, ir.add(r0, self.k(16 * rg))?)?;
                    let live = ir.b.build_and(cols_in, self.lt(first, m)?, "")?;
                    let start = q * per_tile + (rg * ntiles * 4) as usize;
                    let tile = &mut acc[start..start + (ntiles * 4) as usize];
                    let cs: Vec<[FloatValue<'ctx>; 4]> = tile
                        .chunks_exact(4)
                        .map(|c| [c[0], c[1], c[2], c[3]])
                        .collect();
                    let old: Vec<BasicValueEnum<'ctx>> = tile.iter().map(|&v| v.into()).collect();
                    let new = ir.if_values(
                        self.f,
                        "mma",
                        live,
                        || {
                            let a = if ldm {
                                // Matrices (rows 0–7, words 0–3), (8–15, 0–3), (0–7, 4–7),
                                // (8–15, 4–7) of the group and half step: a0 … a3.
                                let first = ir.add(r0, self.k(16 * rg))?;
                                self.simt
                                    .ldmatrix_x4(lane, false, &|l| frag_row(a_s, first, true, l))?
                            } else {
                                let row = ir.add(r0, ir.add(g, self.k(16 * rg))?)?;
                                let row8 = ir.add(row, self.k(8))?;
                                [
                                    word(a_s, row, w0)?,
                                    word(a_s, row8, w0)?,
                                    word(a_s, row, w4)?,
                                    word(a_s, row8, w4)?,
                                ]
                            };
                            let d = match self.half {
                                Some(ty) => self.simt.mma_half(ty, a, &bw, &cs)?,
                                None => {
                                    let parts = a
                                        .iter()
                                        .map(|&x| split(x))
                                        .collect::<IrResult<Vec<_>>>()?;
                                    let hi = [parts[0].0, parts[1].0, parts[2].0, parts[3].0];
                                    let lo = [parts[0].1, parts[1].1, parts[2].1, parts[3].1];
                                    self.simt.mma_3xtf32((hi, lo), &b_split, &cs, b_exact)?
                                }
                            };
                            Ok(d.iter().flatten().map(|&v| v.into()).collect())
                        },
                        &old,
                    )?;
                    for (slot, v) in tile.iter_mut().zip(new) {
                        *slot = v.into_float_value();
                    }
                }
            }
        }
        Ok(())
    }

    /// `x` rounded to nearest even in `ty` (`BF16` or `F16`), as its 16 bits in an i32:
    /// integer operations only, the same on the GPU and in the simulator (the host may
    /// have no bf16 or f16 conversion). NaN stays NaN (quiet); past f16's range, ±inf.
    fn half_bits(&self, ty: GgmlType, x: FloatValue<'ctx>) -> IrResult<IntValue<'ctx>> {
        let ir = self.ir;
        let i32t = ir.ctx.i32_type();
        let c = |v: u64| i32t.const_int(v, false);
        let b = &ir.b;
        let bits = b.build_bit_cast(x, i32t, "")?.into_int_value();
        let abs = b.build_and(bits, c(0x7FFF_FFFF), "")?;
        let nan = b.build_int_compare(IntPredicate::UGT, abs, c(0x7F80_0000), "")?;
        // Round to nearest even at bit `shift`: add half an ulp less one, plus the kept
        // part's lowest bit, then drop the bits below.
        let round = |v: IntValue<'ctx>, shift: u64| -> IrResult<IntValue<'ctx>> {
            let lsb = b.build_and(b.build_right_shift(v, c(shift), false, "")?, c(1), "")?;
            let up =
                b.build_int_add(v, b.build_int_add(c((1 << (shift - 1)) - 1), lsb, "")?, "")?;
            Ok(b.build_right_shift(up, c(shift), false, "")?)
        };
        match ty {
            GgmlType::BF16 => {
                let r = round(bits, 16)?;
                let quiet =
                    b.build_or(b.build_right_shift(bits, c(16), false, "")?, c(0x40), "")?;
                Ok(b.build_select(nan, quiet, r, "")?.into_int_value())
            }
            GgmlType::F16 => {
                let sign =
                    b.build_and(b.build_right_shift(bits, c(16), false, "")?, c(0x8000), "")?;
                // Normal: the exponent rebased from 127 to 15 (a carry out of the
                // mantissa moves it up, as it should).
                let normal = b.build_int_sub(round(abs, 13)?, c(112 << 10), "")?;
                // Subnormal (|x| < 2⁻¹⁴): |x| · 2²⁴ to the nearest even integer (adding
                // and taking away 2²³ rounds it so in f32; the scaling is exact).
                let af = b.build_bit_cast(abs, ir.f32, "")?.into_float_value();
                let m = Math { ir };
                let scaled = b.build_float_mul(af, m.c(16_777_216.0), "")?;
                let magic = m.c(8_388_608.0);
                let rounded =
                    b.build_float_sub(b.build_float_add(scaled, magic, "")?, magic, "")?;
                let sub = b.build_float_to_unsigned_int(rounded, i32t, "")?;
                let tiny = b.build_int_compare(IntPredicate::ULT, abs, c(0x3880_0000), "")?;
                // 65520 and up round to infinity.
                let big = b.build_int_compare(IntPredicate::UGE, abs, c(0x477F_F000), "")?;
                let v = b.build_select(tiny, sub, normal, "")?.into_int_value();
                let v = b.build_select(big, c(0x7C00), v, "")?.into_int_value();
                let v = b.build_select(nan, c(0x7E00), v, "")?.into_int_value();
                Ok(b.build_or(sign, v, "")?)
            }
            other => Err(IrError(format!("no {} tensor-core products", other.name()))),
        }
    }

    /// `x` rounded to the half type of `--dtype` products, as f32 (`x` itself without
    /// one): what the matrix–vector products of decoding multiply, so that they compute
    /// what the tiles' tensor-core products do.
    fn half_round(&self, x: FloatValue<'ctx>) -> IrResult<FloatValue<'ctx>> {
        let Some(ty) = self.half else {
            return Ok(x);
        };
        let ir = self.ir;
        let b = &ir.b;
        let i32t = ir.ctx.i32_type();
        let c = |v: u64| i32t.const_int(v, false);
        let h = self.half_bits(ty, x)?;
        if ty == GgmlType::BF16 {
            let bits = b.build_left_shift(h, c(16), "")?;
            return Ok(b.build_bit_cast(bits, ir.f32, "")?.into_float_value());
        }
        let v = crate::backend::cpu::quant_ir::half_value(ir, h)?;
        // Past f16's range ±inf, NaN as it was (the decoder reads finite halves only).
        let bits = b.build_bit_cast(x, i32t, "")?.into_int_value();
        let abs = b.build_and(bits, c(0x7FFF_FFFF), "")?;
        let big = b.build_int_compare(IntPredicate::UGE, abs, c(0x477F_F000), "")?;
        let nan = b.build_int_compare(IntPredicate::UGT, abs, c(0x7F80_0000), "")?;
        let inf = b.build_or(b.build_and(bits, c(0x8000_0000), "")?, c(0x7F80_0000), "")?;
        let inf = b.build_select(nan, bits, inf, "")?.into_int_value();
        let inf = b.build_bit_cast(inf, ir.f32, "")?.into_float_value();
        Ok(b.build_select(big, inf, v, "")?.into_float_value())
    }

    fn matmul(&self, p: &Par<'ctx>, mm: &MatMul) -> IrResult<()> {
        let ir = self.ir;
        let (batch, m, n, k) = (
            self.c(&mm.batch)?,
            self.c(&mm.m)?,
            self.c(&mm.n)?,
            self.c(&mm.k)?,
        );
        let tl = self.tiling;
        let (tm, tn) = (self.ceil_div(m, tl.bm)?, self.ceil_div(n, tl.bn)?);
        if !mm.whole_rows {
            let tiles = || {
                let per_batch = ir.mul(tm, tn)?;
                let tiles = ir.mul(batch, per_batch)?;
                self.strided("tile", p.block, tiles, p.nblocks, |t| {
                    let bt = self.udiv(t, per_batch)?;
                    let r = self.urem(t, per_batch)?;
                    let i0 = ir.mul(self.udiv(r, tn)?, self.k(tl.bm))?;
                    let j0 = ir.mul(self.urem(r, tn)?, self.k(tl.bn))?;
                    self.matmul_tile(p, mm, (m, n, k), bt, i0, j0, false)
                })
            };
            if !mm.transpose_b || mm.transpose_a {
                return tiles();
            }
            // Decoding: a few rows of A against weights stored [n, k] — one pass over B
            // at memory speed instead of 64-row tiles, with 1, 2, 4 or 8 rows in
            // registers (chosen at run time by m).
            return self.matvec_arms(p, mm, (batch, m, n, k), &[1, 2, 4, MV_ROWS], &tiles);
        }
        // Row-local epilogue: a band of rows per block, all its products first.
        let smem = self
            .smem
            .ok_or_else(|| IrError("matmul without shared memory".into()))?;
        let epi = mm.epilogue.as_ref();
        let outp = self.buf(mm.out)?;
        let bands = ir.mul(batch, tm)?;
        self.strided("band", p.block, bands, p.nblocks, |band| {
            let bt = self.udiv(band, tm)?;
            let i0 = ir.mul(self.urem(band, tm)?, self.k(tl.bm))?;
            ir.for_range(self.f, "tj", self.k(0), tn, 1, |tj| {
                self.matmul_tile(p, mm, (m, n, k), bt, i0, ir.mul(tj, self.k(tl.bn))?, true)
            })?;
            self.simt.barrier()?;
            let Some(epi) = epi else { return Ok(()) };
            let rows = ir.min(self.k(tl.bm), ir.sub(m, i0)?)?;
            ir.for_range(self.f, "er", self.k(0), rows, 1, |r| {
                let i = ir.add(i0, r)?;
                let row = ir.mul(ir.mad(bt, m, i)?, n)?;
                ir.for_range(self.f, "ej", p.tid, n, self.threads, |j| {
                    let v = self.ex.expr(&self.vals, epi, &[bt, i, j])?;
                    ir.store(ir.at(smem, j)?, v)
                })?;
                self.simt.barrier()?;
                ir.for_range(self.f, "ew", p.tid, n, self.threads, |j| {
                    let v = ir.load_f32(ir.at(smem, j)?)?.into_float_value();
                    self.store_elem(mm.out, outp, ir.add(row, j)?, v)
                })?;
                self.simt.barrier()
            })
        })
    }

    /// Where `ok`: output (bt, i, j) of a matmul — element `plane + i·n + j` of buffer
    /// `buf` at `out` — set to product `v`, then to the epilogue's value of it when there
    /// is one ([`Gen::store_elem`] each time).
    fn store_product(
        &self,
        ok: IntValue<'ctx>,
        (buf, out, plane, n): (BufId, PointerValue<'ctx>, IntValue<'ctx>, IntValue<'ctx>),
        (bt, i, j): (IntValue<'ctx>, IntValue<'ctx>, IntValue<'ctx>),
        v: FloatValue<'ctx>,
        epilogue: Option<&Expr>,
    ) -> IrResult<()> {
        let ir = self.ir;
        ir.if_else(
            self.f,
            "st",
            ok,
            || {
                let at = ir.add(plane, ir.mad(i, n, j)?)?;
                self.store_elem(buf, out, at, v)?;
                if let Some(epi) = epilogue {
                    let e = self.ex.expr(&self.vals, epi, &[bt, i, j])?;
                    self.store_elem(buf, out, at, e)?;
                }
                Ok(())
            },
            || Ok(()),
        )
    }

    /// `if m ≤ arms[0] { matvec(arms[0]) } else if … else { tiles() }`.
    fn matvec_arms(
        &self,
        p: &Par<'ctx>,
        mm: &MatMul,
        dims: (
            IntValue<'ctx>,
            IntValue<'ctx>,
            IntValue<'ctx>,
            IntValue<'ctx>,
        ),
        arms: &[u64],
        tiles: &dyn Fn() -> IrResult<()>,
    ) -> IrResult<()> {
        let ir = self.ir;
        let Some((&rows, rest)) = arms.split_first() else {
            return tiles();
        };
        let few =
            ir.b.build_int_compare(IntPredicate::ULE, dims.1, self.k(rows), "")?;
        ir.if_else(
            self.f,
            "mv",
            few,
            || self.matvec(p, mm, dims, rows),
            || self.matvec_arms(p, mm, dims, rest, tiles),
        )
    }

    /// Matrix–vector products (at most `rows` rows of A, B stored [n, k]): one warp per
    /// output column, lanes striding k — A's rows and B's row read contiguously —, each
    /// lane keeping `rows` sums, then a butterfly per row; the epilogue where each output
    /// is stored.
    fn matvec(
        &self,
        p: &Par<'ctx>,
        mm: &MatMul,
        dims: (
            IntValue<'ctx>,
            IntValue<'ctx>,
            IntValue<'ctx>,
            IntValue<'ctx>,
        ),
        rows: u64,
    ) -> IrResult<()> {
        let ir = self.ir;
        let m_ = Math { ir };
        let (batch, m, n, k) = dims;
        let (gt, gs) = self.global(p)?;
        let lane = self.urem(p.tid, self.k(WARP))?;
        let warp = self.udiv(gt, self.k(WARP))?;
        let warps = self.udiv(gs, self.k(WARP))?;
        let outp = self.buf(mm.out)?;
        let cols = ir.mul(batch, n)?;
        self.strided("mv", warp, cols, warps, |c| {
            let bt = self.udiv(c, n)?;
            let j = self.urem(c, n)?;
            let (abase, aoff, lda) = self.operand(mm, bt, true)?;
            let (bbase, boff, ldb) = self.operand(mm, bt, false)?;
            let brow = ir.add(boff, ir.mul(j, ldb)?)?;
            let init: Vec<BasicValueEnum<'ctx>> = vec![m_.c(0.0).into(); rows as usize];
            let steps = WholeSteps {
                start: lane,
                limit: ir.add(k, self.k(WARP - 1))?,
                step: WARP,
            };
            let (_, acc) = ir.carried_loop(self.f, "mk", steps, &init, |kk, cur| {
                let b = self.half_round(self.ex.load(mm.b.buf, bbase, ir.add(brow, kk)?)?)?;
                (0..rows)
                    .map(|i| {
                        let ok = self.lt(self.k(i), m)?;
                        let idx = ir.add(aoff, ir.mad(self.k(i), lda, kk)?)?;
                        let a = self.half_round(self.load_elem_if(ok, mm.a.buf, abase, idx)?)?;
                        Ok(self.fma(a, b, cur[i as usize].into_float_value())?.into())
                    })
                    .collect()
            })?;
            let plane = ir.mul(bt, ir.mul(m, n)?)?;
            for (i, sum) in acc.iter().enumerate() {
                let v = self.warp_reduce(sum.into_float_value(), ReduceOp::Sum)?;
                let ii = self.k(i as u64);
                let ok =
                    ir.b.build_and(ir.eq(lane, self.k(0))?, self.lt(ii, m)?, "")?;
                let epi = mm.epilogue.as_ref();
                self.store_product(ok, (mm.out, outp, plane, n), (bt, ii, j), v, epi)?;
            }
            Ok(())
        })
    }

    fn attention(&self, p: &Par<'ctx>, a: &Attention) -> IrResult<()> {
        if let Some(part) = a.part {
            return self.attention_grad(p, a, part);
        }
        let Some(bc) = attention_keys_per_tile(a, self.max_head_dim) else {
            return self.attention_rows(p, a);
        };
        // Prompts and whole sequences by tiles; decoding's few rows, one per warp.
        let many = self.ir.b.build_int_compare(
            IntPredicate::UGE,
            self.c(&a.sizes[2])?,
            self.k(ATTENTION_TILE_MIN_ROWS),
            "",
        )?;
        self.ir.if_else(
            self.f,
            "attn",
            many,
            || self.attention_tiles(p, a, bc),
            || self.attention_rows(p, a),
        )
    }

    /// [batch, heads, queries, keys, head_dim, value_dim, kv_heads] of `a`.
    fn attention_sizes(&self, a: &Attention) -> IrResult<[IntValue<'ctx>; 7]> {
        let s = a
            .sizes
            .iter()
            .map(|x| self.c(x))
            .collect::<IrResult<Vec<_>>>()?;
        s.try_into()
            .map_err(|_| IrError("attention sizes are not seven".into()))
    }

    /// A strided view's first element and its strides.
    fn strided_view(
        &self,
        st: &crate::kernel::Strided,
    ) -> IrResult<(PointerValue<'ctx>, Vec<IntValue<'ctx>>)> {
        let base = self.elem_at(st.buf, self.buf(st.buf)?, self.c(&st.offset)?)?;
        let strides = st
            .strides
            .iter()
            .map(|x| self.c(x))
            .collect::<IrResult<Vec<_>>>()?;
        Ok((base, strides))
    }

    /// Attention one query row per warp with online softmax: q and the accumulator spread
    /// over the lanes, one shuffle reduction per key.
    fn attention_rows(&self, p: &Par<'ctx>, a: &Attention) -> IrResult<()> {
        let ir = self.ir;
        let m = Math { ir };
        let [b_, h, t, nk, d, dv, hkv] = self.attention_sizes(a)?;
        let group = self.udiv(h, hkv)?;
        let [q, k, v, o] = [&a.q, &a.k, &a.v, &a.out].map(|st| self.strided_view(st));
        let ((qb, qs), (kb, ks), (vb, vs), (ob, os)) = (q?, k?, v?, o?);
        let ring = a.ring.as_ref().map(|x| self.c(x)).transpose()?;
        let row_of = |p: IntValue<'ctx>| -> IrResult<IntValue<'ctx>> {
            match ring {
                Some(r) => self.urem(p, r),
                None => Ok(p),
            }
        };
        let width = |x: &Ix| x.as_const().map_or(self.max_head_dim, |v| v as u64).max(1);
        let (uq, uv) = (
            width(&a.sizes[4]).div_ceil(WARP),
            width(&a.sizes[5]).div_ceil(WARP),
        );
        let neg_inf = m.c(f64::NEG_INFINITY);
        let scale = m.c(a.scale);
        let (gt, gs) = self.global(p)?;
        let lane = self.urem(p.tid, self.k(WARP))?;
        let warp = self.udiv(gt, self.k(WARP))?;
        let warps = self.udiv(gs, self.k(WARP))?;
        let rows = ir.mul(ir.mul(b_, h)?, t)?;
        let ht = ir.mul(h, t)?;
        let am = AttnMask {
            ex: &self.ex,
            mask: a.mask,
            nk,
            t,
        };
        // Lane elements: x = lane + 32·u.
        let elem = |u: u64| ir.add(lane, self.k(u * WARP));
        self.strided("row", warp, rows, warps, |it| {
            let b = self.udiv(it, ht)?;
            let hh = self.urem(self.udiv(it, t)?, h)?;
            let tt = self.urem(it, t)?;
            let kh = self.udiv(hh, group)?;
            let q = self.elem_at(
                a.q.buf,
                qb,
                ir.add(
                    ir.mul(b, qs[0])?,
                    ir.add(ir.mul(hh, qs[1])?, ir.mul(tt, qs[2])?)?,
                )?,
            )?;
            let krow0 =
                self.elem_at(a.k.buf, kb, ir.add(ir.mul(b, ks[0])?, ir.mul(kh, ks[1])?)?)?;
            let vrow0 =
                self.elem_at(a.v.buf, vb, ir.add(ir.mul(b, vs[0])?, ir.mul(kh, vs[1])?)?)?;
            let o = self.elem_at(
                a.out.buf,
                ob,
                ir.add(
                    ir.mul(b, os[0])?,
                    ir.add(ir.mul(hh, os[1])?, ir.mul(tt, os[2])?)?,
                )?,
            )?;
            let (lo, hi) = am.keys_of(tt)?;
            let qv: Vec<FloatValue<'ctx>> = (0..uq)
                .map(|u| {
                    let x = elem(u)?;
                    let ok = self.lt(x, d)?;
                    self.half_round(self.load_elem_if(ok, a.q.buf, q, ir.mul(x, qs[3])?)?)
                })
                .collect::<IrResult<_>>()?;
            let mut init: Vec<BasicValueEnum<'ctx>> = vec![neg_inf.into(), m.c(0.0).into()];
            init.extend((0..uv).map(|_| BasicValueEnum::from(m.c(0.0))));
            let steps = WholeSteps {
                start: lo,
                limit: hi,
                step: 1,
            };
            let (_, fin) = ir.carried_loop(self.f, "key", steps, &init, |key, cur| {
                let kp = self.elem_at(a.k.buf, krow0, ir.mul(row_of(key)?, ks[2])?)?;
                let mut part = m.c(0.0);
                for (u, &qx) in qv.iter().enumerate() {
                    let x = elem(u as u64)?;
                    let kx = self.half_round(self.load_elem_if(
                        self.lt(x, d)?,
                        a.k.buf,
                        kp,
                        ir.mul(x, ks[3])?,
                    )?)?;
                    part = self.fma(qx, kx, part)?;
                }
                let dot = self.warp_reduce(part, ReduceOp::Sum)?;
                let vars = [b, hh, tt, key];
                let mut score = ir.b.build_float_mul(dot, scale, "")?;
                if let Some(bias) = &a.bias {
                    score =
                        ir.b.build_float_add(score, self.ex.expr(&self.vals, bias, &vars)?, "")?;
                }
                if let Some(km) = &a.key_mask {
                    let keep = self.ex.expr(&self.vals, km, &vars)?;
                    let off =
                        ir.b.build_float_compare(FloatPredicate::OEQ, keep, m.c(0.0), "")?;
                    score = m.select(off, neg_inf, score)?;
                }
                let (mx, l) = (cur[0].into_float_value(), cur[1].into_float_value());
                let new_max = m.binary_intrinsic("llvm.maxnum", mx, score)?;
                let none =
                    ir.b.build_float_compare(FloatPredicate::OEQ, new_max, neg_inf, "")?;
                let corr = m.select(
                    none,
                    m.c(1.0),
                    self.exp_fast(ir.b.build_float_sub(mx, new_max, "")?)?,
                )?;
                let pr = m.select(
                    none,
                    m.c(0.0),
                    self.exp_fast(ir.b.build_float_sub(score, new_max, "")?)?,
                )?;
                let l2 = self.fma(l, corr, pr)?;
                let vp = self.elem_at(a.v.buf, vrow0, ir.mul(row_of(key)?, vs[2])?)?;
                let mut next: Vec<BasicValueEnum<'ctx>> = vec![new_max.into(), l2.into()];
                // With `--dtype`, P·V multiplies P and V rounded to the half type, as the
                // tiles' products do (the sum of P stays f32).
                let pv = self.half_round(pr)?;
                for u in 0..uv {
                    let x = elem(u)?;
                    let vx = self.half_round(self.load_elem_if(
                        self.lt(x, dv)?,
                        a.v.buf,
                        vp,
                        ir.mul(x, vs[3])?,
                    )?)?;
                    let acc = cur[2 + u as usize].into_float_value();
                    next.push(
                        self.fma(pv, vx, ir.b.build_float_mul(acc, corr, "")?)?
                            .into(),
                    );
                }
                Ok(next)
            })?;
            let l = fin[1].into_float_value();
            let empty =
                ir.b.build_float_compare(FloatPredicate::OLE, l, m.c(0.0), "")?;
            let inv = m.select(empty, m.c(0.0), ir.b.build_float_div(m.c(1.0), l, "")?)?;
            for u in 0..uv {
                let x = elem(u)?;
                let v =
                    ir.b.build_float_mul(fin[2 + u as usize].into_float_value(), inv, "")?;
                ir.if_else(
                    self.f,
                    "o",
                    self.lt(x, dv)?,
                    || self.store_elem(a.out.buf, o, ir.mul(x, os[3])?, v),
                    || Ok(()),
                )?;
            }
            Ok(())
        })
    }

    /// Attention of a block of query rows at a time on the tensor cores (FlashAttention-2's
    /// order of work): a block takes `16 · warps` consecutive queries of one (batch, head),
    /// each warp 16 of them; the block stages `bc` keys and their values at a time in
    /// shared memory (zero past the keys and the head dims), and each warp whose rows see
    /// any of them computes its 16 × `bc` scores with `mma` (3×TF32 as the matmuls, or in
    /// the `--dtype` type), masks them, updates its rows' running max and sum (the four
    /// lanes holding a row meet by `shfl`), rescales its output accumulators and adds P·V
    /// with `mma`. P never leaves the registers: in f32 the accumulator layout of the
    /// scores is the A fragment layout of P·V when the k index t of an m16n8k8 step
    /// stands for key 2t and t + 4 for key 2t + 1 (V's rows read in that order); in half
    /// precision two n tiles of scores are one m16n8k16 A fragment, keys in order, and
    /// V's fragments (two consecutive keys a register) come by `ldmatrix.trans`. The
    /// keys go through two stages ([`AttnStaging`], [`Gen::stage_keys`]): after a step's
    /// wait and barrier the next keys are issued into the other stage, so they land
    /// while the warps work.
    fn attention_tiles(&self, p: &Par<'ctx>, a: &Attention, bc: u64) -> IrResult<()> {
        let ir = self.ir;
        let m = Math { ir };
        let [b_, h, t, nk, d, dv, hkv] = self.attention_sizes(a)?;
        let group = self.udiv(h, hkv)?;
        let [q, k, v, o] = [&a.q, &a.k, &a.v, &a.out].map(|st| self.strided_view(st));
        let ((qb, qs), (kb, ks), (vb, vs), (ob, os)) = (q?, k?, v?, o?);
        let (dk8, dv8) = head_tiles(a, self.max_head_dim);
        let half = self.half;
        // Half precision: k steps of 16 head dims.
        let dk16 = dk8.div_ceil(2);
        let staging = AttnStaging::of(a, self.max_head_dim, half.is_some())
            .ok_or_else(|| IrError("attention tiles that do not apply".into()))?;
        let AttnStaging { kw, vw, .. } = staging;
        let smem = self
            .smem
            .ok_or_else(|| IrError("attention tiles without shared memory".into()))?;
        // Stage `s` (0 or 1): K's `bc` rows, then V's.
        let stage = |s: IntValue<'ctx>| -> IrResult<(PointerValue<'ctx>, PointerValue<'ctx>)> {
            let k_s = ir.at(smem, ir.mul(s, self.k(staging.stage_words()))?)?;
            Ok((k_s, ir.at(k_s, self.k(bc * kw))?))
        };
        let warps = (self.threads / WARP).max(1);
        let qr = 16 * warps;
        let warp = self.udiv(p.tid, self.k(WARP))?;
        let lane = self.urem(p.tid, self.k(WARP))?;
        let (g, tq) = (self.udiv(lane, self.k(4))?, self.urem(lane, self.k(4))?);
        let qtiles = self.ceil_div(t, qr)?;
        let per_batch = ir.mul(h, qtiles)?;
        let items = ir.mul(b_, per_batch)?;
        let am = AttnMask {
            ex: &self.ex,
            mask: a.mask,
            nk,
            t,
        };
        let neg_inf = m.c(f64::NEG_INFINITY);
        // Scores in the log₂ domain (scaled by log₂e): their exps are `ex2`s.
        let scale = m.c(a.scale * std::f64::consts::LOG2_E);
        let last_t = ir.sub(t, self.k(1))?;
        let i32t = ir.ctx.i32_type();
        // An A fragment of f32 registers as tf32 heads and tails.
        let split4 =
            |xs: [FloatValue<'ctx>; 4]| -> IrResult<([IntValue<'ctx>; 4], [IntValue<'ctx>; 4])> {
                let p = xs
                    .iter()
                    .map(|&x| self.tf32_split(ir.b.build_bit_cast(x, i32t, "")?.into_int_value()))
                    .collect::<IrResult<Vec<_>>>()?;
                Ok((
                    [p[0].0, p[1].0, p[2].0, p[3].0],
                    [p[0].1, p[1].1, p[2].1, p[3].1],
                ))
            };
        // Word `col` of staged row `row`: an f32, or two half-precision values.
        let word = |tile, w, row, col| self.smem_word(tile, w, row, col);
        // K's B fragments for the n tiles `js` (8 keys each): words `w + t` and `w + 4 + t`
        // of key `8j + g` — two consecutive tiles by one `ldmatrix` (matrices: tile j's
        // two word quads, then tile j + 1's), else word by word.
        let key_words = |k_s, js: &[u64], w: u64| -> IrResult<Vec<[IntValue<'ctx>; 2]>> {
            let mut out = Vec::with_capacity(js.len());
            let mut i = 0;
            while i < js.len() {
                let j = js[i];
                if self.tiling.ldmatrix && js.get(i + 1) == Some(&(j + 1)) {
                    let first = self.k(8 * j);
                    let r = self.simt.ldmatrix_x4(lane, false, &|l| {
                        self.ldmatrix_row(k_s, kw, first, w, false, l)
                    })?;
                    out.push([r[0], r[1]]);
                    out.push([r[2], r[3]]);
                    i += 2;
                } else {
                    let key = ir.add(g, self.k(8 * j))?;
                    let (c0, c4) = (ir.add(tq, self.k(w))?, ir.add(tq, self.k(w + 4))?);
                    out.push([word(k_s, kw, key, c0)?, word(k_s, kw, key, c4)?]);
                    i += 1;
                }
            }
            Ok(out)
        };
        // Two values rounded to the half type in one register, `lo` in the low half.
        let pack = |lo: FloatValue<'ctx>, hi: FloatValue<'ctx>| -> IrResult<IntValue<'ctx>> {
            let ty = half.ok_or_else(|| IrError("packing halves without --dtype".into()))?;
            let hi = self.half_bits(ty, hi)?;
            let hi = ir.b.build_left_shift(hi, i32t.const_int(16, false), "")?;
            Ok(ir.b.build_or(self.half_bits(ty, lo)?, hi, "")?)
        };
        self.strided("qt", p.block, items, p.nblocks, |it| {
            let bb = self.udiv(it, per_batch)?;
            let rest = self.urem(it, per_batch)?;
            let hh = self.udiv(rest, qtiles)?;
            let q0 = ir.mul(self.urem(rest, qtiles)?, self.k(qr))?;
            let kh = self.udiv(hh, group)?;
            let qw = ir.mad(warp, self.k(16), q0)?;
            // The keys the block's rows see, and this warp's rows (the masks' ranges grow
            // with the query).
            let (lo_blk, _) = am.keys_of(q0)?;
            let (_, hi_blk) = am.keys_of(ir.min(ir.add(q0, self.k(qr - 1))?, last_t)?)?;
            let warp_live = self.lt(qw, t)?;
            // Every row of the warp a query (the tiles' unmasked steps need all 16).
            let warp_full = self.lt(ir.add(qw, self.k(15))?, t)?;
            let (lo_w, hi_first) = am.keys_of(ir.min(qw, last_t)?)?;
            let (lo_last, hi_w) = am.keys_of(ir.min(ir.add(qw, self.k(15))?, last_t)?)?;
            // This lane's rows: g and g + 8 of the warp's 16.
            let rows = [ir.add(qw, g)?, ir.add(qw, ir.add(g, self.k(8))?)?];
            let row_ok = [self.lt(rows[0], t)?, self.lt(rows[1], t)?];
            let clamped = [ir.min(rows[0], last_t)?, ir.min(rows[1], last_t)?];
            let ranges = [am.keys_of(clamped[0])?, am.keys_of(clamped[1])?];
            let qbase =
                self.elem_at(a.q.buf, qb, ir.add(ir.mul(bb, qs[0])?, ir.mul(hh, qs[1])?)?)?;
            let q_at = |r: usize, col: IntValue<'ctx>| {
                let ok = ir.b.build_and(row_ok[r], self.lt(col, d)?, "")?;
                self.load_elem_if(
                    ok,
                    a.q.buf,
                    qbase,
                    ir.add(ir.mul(rows[r], qs[2])?, ir.mul(col, qs[3])?)?,
                )
            };
            // Q's A fragments, one per 8 head dims: (g, t), (g + 8, t), (g, t + 4), (g + 8, t + 4);
            // in half precision one per 16, pairs from (g, 2t), (g + 8, 2t), (g, 2t + 8),
            // (g + 8, 2t + 8).
            let qf = match half {
                Some(_) => Vec::new(),
                None => (0..dk8)
                    .map(|k8| {
                        let (c, c4) =
                            (ir.add(tq, self.k(8 * k8))?, ir.add(tq, self.k(8 * k8 + 4))?);
                        Ok([q_at(0, c)?, q_at(1, c)?, q_at(0, c4)?, q_at(1, c4)?])
                    })
                    .collect::<IrResult<Vec<_>>>()?,
            };
            let qh = match half {
                None => Vec::new(),
                Some(_) => (0..dk16)
                    .map(|k16| {
                        let c = ir.mad(tq, self.k(2), self.k(16 * k16))?;
                        let pair = |r: usize, c: IntValue<'ctx>| {
                            pack(q_at(r, c)?, q_at(r, ir.add(c, self.k(1))?)?)
                        };
                        let c8 = ir.add(c, self.k(8))?;
                        Ok([pair(0, c)?, pair(1, c)?, pair(0, c8)?, pair(1, c8)?])
                    })
                    .collect::<IrResult<Vec<_>>>()?,
            };
            let krow0 =
                self.elem_at(a.k.buf, kb, ir.add(ir.mul(bb, ks[0])?, ir.mul(kh, ks[1])?)?)?;
            let vrow0 =
                self.elem_at(a.v.buf, vb, ir.add(ir.mul(bb, vs[0])?, ir.mul(kh, vs[1])?)?)?;
            let first = ir.mul(self.udiv(lo_blk, self.k(bc))?, self.k(bc))?;
            let span = self.ex.max(ir.sub(hi_blk, first)?, self.k(0))?;
            let limit = self.ceil_div(span, bc)?;
            let steps = WholeSteps {
                start: self.k(0),
                limit,
                step: 1,
            };
            // Keys `c0..c0 + bc` and their values into stage `s`.
            let fill = |s: IntValue<'ctx>, c0: IntValue<'ctx>| -> IrResult<()> {
                let (k_s, v_s) = stage(s)?;
                let k_side = (&a.k, krow0, ks.as_slice(), d);
                self.stage_keys(p, k_s, kw, k_side, c0, (bc, nk))?;
                self.stage_keys(p, v_s, vw, (&a.v, vrow0, vs.as_slice(), dv), c0, (bc, nk))
            };
            // Everyone is done with the previous item's stages; the first keys go to
            // stage 0.
            self.simt.barrier()?;
            ir.if_else(
                self.f,
                "kv0",
                self.lt(self.k(0), limit)?,
                || fill(self.k(0), first),
                || Ok(()),
            )?;
            self.simt.cp_async_commit()?;
            let mut init: Vec<BasicValueEnum<'ctx>> = vec![
                neg_inf.into(),
                neg_inf.into(),
                m.c(0.0).into(),
                m.c(0.0).into(),
            ];
            init.extend((0..dv8 * 4).map(|_| BasicValueEnum::from(m.c(0.0))));
            let (_, fin) = ir.carried_loop(self.f, "kt", steps, &init, |kt, cur| {
                let c0 = ir.mad(kt, self.k(bc), first)?;
                let s = self.urem(kt, self.k(2))?;
                let (k_s, v_s) = stage(s)?;
                // This thread's copies of these keys have landed, and the barrier makes
                // everyone's seen — and everyone done with the other stage, which takes
                // the next keys while the warps work on these.
                self.simt.cp_async_wait(0)?;
                self.simt.barrier()?;
                let next = ir.add(kt, self.k(1))?;
                ir.if_else(
                    self.f,
                    "kv",
                    self.lt(next, limit)?,
                    || fill(ir.sub(self.k(1), s)?, ir.add(c0, self.k(bc))?),
                    || Ok(()),
                )?;
                self.simt.cp_async_commit()?;
                let sees = ir.b.build_and(
                    self.lt(c0, hi_w)?,
                    self.lt(lo_w, ir.add(c0, self.k(bc))?)?,
                    "",
                )?;
                let live = ir.b.build_and(warp_live, sees, "")?;
                ir.if_values(
                    self.f,
                    "att",
                    live,
                    || {
                        // S = Q·Kᵀ, 8 keys per n tile.
                        let mut sc: Vec<[FloatValue<'ctx>; 4]> =
                            vec![[m.c(0.0); 4]; (bc / 8) as usize];
                        for (k8, qx) in qf.iter().enumerate() {
                            let a_parts = split4(*qx)?;
                            self.mma_batches(&mut sc, |js, cs| {
                                let bs = key_words(k_s, js, 8 * k8 as u64)?
                                    .into_iter()
                                    .map(|[b0, b1]| {
                                        let (h0, l0) = self.tf32_split(b0)?;
                                        let (h1, l1) = self.tf32_split(b1)?;
                                        Ok(([h0, h1], [l0, l1]))
                                    })
                                    .collect::<IrResult<Vec<_>>>()?;
                                self.simt.mma_3xtf32(a_parts, &bs, cs, false)
                            })?;
                        }
                        // Half precision: one m16n8k16 per n tile and 16 head dims.
                        for (k16, qx) in qh.iter().enumerate() {
                            let ty =
                                half.ok_or_else(|| IrError("half Q without --dtype".into()))?;
                            self.mma_batches(&mut sc, |js, cs| {
                                let bs = key_words(k_s, js, 8 * k16 as u64)?;
                                self.simt.mma_half(ty, *qx, &bs, cs)
                            })?;
                        }
                        // Scale, bias, masks; each row's new running max (the scores, then
                        // the two maxima). Where every row of the warp sees every key of
                        // the step and there is no bias or key mask, the scale alone
                        // (FlashAttention masks only the steps the mask cuts through).
                        let score = |masked: bool| -> IrResult<Vec<BasicValueEnum<'ctx>>> {
                            let mut out: Vec<BasicValueEnum<'ctx>> =
                                Vec::with_capacity(sc.len() * 4 + 2);
                            let mut maxes = [neg_inf; 2];
                            for (j, tile) in sc.iter().enumerate() {
                                for (e, &x) in tile.iter().enumerate() {
                                    let r = e / 2;
                                    let mut v = ir.b.build_float_mul(x, scale, "")?;
                                    if masked {
                                        let key = ir.add(
                                            c0,
                                            ir.add(
                                                ir.mul(tq, self.k(2))?,
                                                self.k(8 * j as u64 + (e % 2) as u64),
                                            )?,
                                        )?;
                                        let key_c = ir.min(key, ir.sub(nk, self.k(1))?)?;
                                        let vars = [bb, hh, clamped[r], key_c];
                                        if let Some(bias) = &a.bias {
                                            let bv = self.ex.expr(&self.vals, bias, &vars)?;
                                            let log2e = m.c(std::f64::consts::LOG2_E);
                                            let bv = ir.b.build_float_mul(bv, log2e, "")?;
                                            v = ir.b.build_float_add(v, bv, "")?;
                                        }
                                        let (lo, hi) = ranges[r];
                                        let mut ok =
                                            ir.b.build_and(row_ok[r], self.lt(key, hi)?, "")?;
                                        ok = ir.b.build_and(
                                            ok,
                                            ir.b.build_int_compare(IntPredicate::SLE, lo, key, "")?,
                                            "",
                                        )?;
                                        if let Some(km) = &a.key_mask {
                                            let keep = self.ex.expr(&self.vals, km, &vars)?;
                                            let on = ir.b.build_float_compare(
                                                FloatPredicate::ONE,
                                                keep,
                                                m.c(0.0),
                                                "",
                                            )?;
                                            ok = ir.b.build_and(ok, on, "")?;
                                        }
                                        v = m.select(ok, v, neg_inf)?;
                                    }
                                    maxes[r] = m.binary_intrinsic("llvm.maxnum", maxes[r], v)?;
                                    out.push(v.into());
                                }
                            }
                            out.extend(maxes.map(BasicValueEnum::from));
                            Ok(out)
                        };
                        let scored = if a.bias.is_none() && a.key_mask.is_none() {
                            let end = ir.add(c0, self.k(bc))?;
                            let sle = |x, y| ir.b.build_int_compare(IntPredicate::SLE, x, y, "");
                            let full =
                                ir.b.build_and(sle(end, hi_first)?, sle(lo_last, c0)?, "")?;
                            let full = ir.b.build_and(full, warp_full, "")?;
                            ir.if_else_values(
                                self.f,
                                "full",
                                full,
                                || score(false),
                                || score(true),
                            )?
                        } else {
                            score(true)?
                        };
                        for (i, tile) in sc.iter_mut().enumerate() {
                            for (e, x) in tile.iter_mut().enumerate() {
                                *x = scored[4 * i + e].into_float_value();
                            }
                        }
                        let maxes = [
                            scored[4 * sc.len()].into_float_value(),
                            scored[4 * sc.len() + 1].into_float_value(),
                        ];
                        let mut next: Vec<BasicValueEnum<'ctx>> = Vec::with_capacity(cur.len());
                        let mut news = [neg_inf; 2];
                        let mut corr = [m.c(1.0); 2];
                        for r in 0..2 {
                            let old = cur[r].into_float_value();
                            let mx = self.simt.quad_reduce(maxes[r], true)?;
                            news[r] = m.binary_intrinsic("llvm.maxnum", old, mx)?;
                            let none = ir.b.build_float_compare(
                                FloatPredicate::OEQ,
                                news[r],
                                neg_inf,
                                "",
                            )?;
                            corr[r] = m.select(
                                none,
                                m.c(1.0),
                                self.simt.ex2(ir.b.build_float_sub(old, news[r], "")?)?,
                            )?;
                        }
                        // P, each row's part of its sum in this lane.
                        let mut sums = [m.c(0.0); 2];
                        for tile in sc.iter_mut() {
                            for (e, x) in tile.iter_mut().enumerate() {
                                let r = e / 2;
                                let off =
                                    ir.b.build_float_compare(FloatPredicate::OEQ, *x, neg_inf, "")?;
                                let pr = self.simt.ex2(ir.b.build_float_sub(*x, news[r], "")?)?;
                                *x = m.select(off, m.c(0.0), pr)?;
                                sums[r] = ir.b.build_float_add(sums[r], *x, "")?;
                            }
                        }
                        next.extend(news.iter().map(|&x| BasicValueEnum::from(x)));
                        for r in 0..2 {
                            let l = cur[2 + r].into_float_value();
                            next.push(self.fma(l, corr[r], sums[r])?.into());
                        }
                        let mut o: Vec<[FloatValue<'ctx>; 4]> = cur[4..]
                            .chunks_exact(4)
                            .map(|c| {
                                let f = |i: usize| {
                                    ir.b.build_float_mul(c[i].into_float_value(), corr[i / 2], "")
                                };
                                Ok([f(0)?, f(1)?, f(2)?, f(3)?])
                            })
                            .collect::<IrResult<Vec<_>>>()?;
                        // Half precision: O += P·V, 16 keys per k step in their order (two n
                        // tiles of scores are one A fragment); V's B fragments hold two
                        // consecutive keys a register, read across V's rows.
                        if let Some(ty) = half {
                            for kc in 0..(bc / 16) as usize {
                                let (p0, p1) = (sc[2 * kc], sc[2 * kc + 1]);
                                let a = [
                                    pack(p0[0], p0[1])?,
                                    pack(p0[2], p0[3])?,
                                    pack(p1[0], p1[1])?,
                                    pack(p1[2], p1[3])?,
                                ];
                                self.mma_batches(&mut o, |js, cs| {
                                    let bs = self.value_words(lane, v_s, vw, 16 * kc as u64, js)?;
                                    self.simt.mma_half(ty, a, &bs, cs)
                                })?;
                            }
                        }
                        // O += P·V, 8 keys per k step: k index t is key 2t, t + 4 key 2t + 1.
                        for (kc, pt) in sc.iter().enumerate().filter(|_| half.is_none()) {
                            let a_parts = split4([pt[0], pt[2], pt[1], pt[3]])?;
                            let key = ir.add(ir.mul(tq, self.k(2))?, self.k(8 * kc as u64))?;
                            let key1 = ir.add(key, self.k(1))?;
                            self.mma_batches(&mut o, |js, cs| {
                                let bs = js
                                    .iter()
                                    .map(|&j| {
                                        let col = ir.add(g, self.k(8 * j))?;
                                        let (h0, l0) = self.tf32_split(word(v_s, vw, key, col)?)?;
                                        let (h1, l1) =
                                            self.tf32_split(word(v_s, vw, key1, col)?)?;
                                        Ok(([h0, h1], [l0, l1]))
                                    })
                                    .collect::<IrResult<Vec<_>>>()?;
                                self.simt.mma_3xtf32(a_parts, &bs, cs, false)
                            })?;
                        }
                        next.extend(o.iter().flatten().map(|&v| BasicValueEnum::from(v)));
                        Ok(next)
                    },
                    cur,
                )
            })?;
            let obase = self.elem_at(
                a.out.buf,
                ob,
                ir.add(ir.mul(bb, os[0])?, ir.mul(hh, os[1])?)?,
            )?;
            for r in 0..2 {
                let l = self
                    .simt
                    .quad_reduce(fin[2 + r].into_float_value(), false)?;
                let empty =
                    ir.b.build_float_compare(FloatPredicate::OLE, l, m.c(0.0), "")?;
                let inv = m.select(empty, m.c(0.0), ir.b.build_float_div(m.c(1.0), l, "")?)?;
                for j in 0..dv8 {
                    for e in 0..2u64 {
                        let col = ir.add(ir.mul(tq, self.k(2))?, self.k(8 * j + e))?;
                        let v = fin[4 + (4 * j + 2 * r as u64 + e) as usize].into_float_value();
                        let v = ir.b.build_float_mul(v, inv, "")?;
                        let ok = ir.b.build_and(row_ok[r], self.lt(col, dv)?, "")?;
                        let at = ir.add(ir.mul(rows[r], os[2])?, ir.mul(col, os[3])?)?;
                        ir.if_else(
                            self.f,
                            "o",
                            ok,
                            || self.store_elem(a.out.buf, obase, at, v),
                            || Ok(()),
                        )?;
                    }
                }
            }
            Ok(())
        })
    }

    /// Keys `c0..c0 + bc` (of `nk`) of attention's K or V view `(view, its first row of
    /// this batch and head, its strides, values per row)` into a staged tile whose rows
    /// are `w` words apart ([`AttnStaging`]): row r holds key c0 + r's values in the
    /// staged type (f32, or the `--dtype` type), zero past the view's values and past
    /// `nk`. By `cp.async`, 16 bytes at a time, where the view holds its rows contiguous
    /// in the staged type and 16 bytes apart (offset and strides multiples of 16 bytes
    /// by their form; buffers start 16-byte aligned): the copies land while the warps
    /// work on the other stage. Otherwise element by element, decoded and rounded to the
    /// staged type. Decided here, not at run time: ptxas gives the kernel the registers
    /// of its hungriest path, and the element copies' are more than the tiles can spare.
    fn stage_keys(
        &self,
        p: &Par<'ctx>,
        tile: PointerValue<'ctx>,
        w: u64,
        view: (
            &Strided,
            PointerValue<'ctx>,
            &[IntValue<'ctx>],
            IntValue<'ctx>,
        ),
        c0: IntValue<'ctx>,
        (bc, nk): (u64, IntValue<'ctx>),
    ) -> IrResult<()> {
        let ir = self.ir;
        let (view, row0, st, lim) = view;
        let buf = view.buf;
        let per_word = if self.half.is_some() { 2 } else { 1 };
        let (width, es) = ((w - 4) * per_word, 4 / per_word);
        let elements = || {
            self.copy_per_thread(p, "kv", bc * width, |e| {
                let (r, col) = (self.udiv(e, self.k(width))?, self.urem(e, self.k(width))?);
                let key = ir.add(c0, r)?;
                let ok = ir.b.build_and(self.lt(key, nk)?, self.lt(col, lim)?, "")?;
                let idx = ir.add(ir.mul(key, st[2])?, ir.mul(col, st[3])?)?;
                let v = self.load_elem_if(ok, buf, row0, idx)?;
                let Some(ty) = self.half else {
                    return Ok((ir.at(tile, ir.mad(r, self.k(w), col)?)?, v.into()));
                };
                let i16t = ir.ctx.i16_type();
                let bits = ir.b.build_int_truncate(self.half_bits(ty, v)?, i16t, "")?;
                let at = ir.mad(r, self.k(2 * w), col)?;
                let pt = unsafe { ir.b.build_in_bounds_gep(i16t, tile, &[at], "")? };
                Ok((pt, bits.into()))
            })
        };
        let per_chunk = 16 / es;
        let direct = self.stored(buf) == self.half
            && view.strides[3] == Ix::c(1)
            && view.offset.multiple_of(per_chunk as i64)
            && view.strides[..3]
                .iter()
                .all(|x| x.multiple_of(per_chunk as i64));
        if !direct {
            return elements();
        }
        let chunks = width / per_chunk;
        // Chunk c of row r is copy r · chunks + c; where the block's threads are whole
        // rows of chunks, a thread's chunk is the same in every row it copies, so its
        // column, zero fill and source offset are worked out once.
        let (col_of, rows) = if self.threads.is_multiple_of(chunks) {
            let q = self.urem(p.tid, self.k(chunks))?;
            (Some(q), self.threads / chunks)
        } else {
            (None, 0)
        };
        let chunk = |r: IntValue<'ctx>, q: IntValue<'ctx>| -> IrResult<()> {
            let key = ir.add(c0, r)?;
            let col = ir.mul(q, self.k(per_chunk))?;
            let idx = ir.add(ir.mul(key, st[2])?, col)?;
            let to = ir.at(tile, ir.mad(r, self.k(w), ir.mul(q, self.k(4))?)?)?;
            self.copy_chunk(to, (row0, idx), self.lt(key, nk)?, ir.sub(lim, col)?, es)
        };
        match col_of {
            Some(q) => {
                let r0 = self.udiv(p.tid, self.k(chunks))?;
                ir.for_range(self.f, "kva", r0, self.k(bc), rows, |r| chunk(r, q))
            }
            None => self.per_thread(p, "kva", bc * chunks, |c| {
                chunk(self.udiv(c, self.k(chunks))?, self.urem(c, self.k(chunks))?)
            }),
        }
    }

    /// The half-precision B fragments of P·V for keys `k0..k0 + 16` and the n tiles `js`
    /// (consecutive, 8 value dims each) from V staged with keys across rows `vw` words
    /// apart: of tile j, lane (g, t) holds keys k0 + 2t, k0 + 2t + 1 of dim 8j + g in its
    /// first register and the keys 8 on in its second. Two tiles by one `ldmatrix.trans`
    /// (a last tile alone by one too: staged rows are padded to 16 values), else value by
    /// value.
    fn value_words(
        &self,
        lane: IntValue<'ctx>,
        v_s: PointerValue<'ctx>,
        vw: u64,
        k0: u64,
        js: &[u64],
    ) -> IrResult<Vec<[IntValue<'ctx>; 2]>> {
        let ir = self.ir;
        let mut out = Vec::with_capacity(js.len());
        if self.tiling.ldmatrix {
            for pair in js.chunks(2) {
                let j = pair[0];
                let r = self.simt.ldmatrix_x4(lane, true, &|l| {
                    self.ldmatrix_row(v_s, vw, self.k(k0), 4 * j, true, l)
                })?;
                out.push([r[0], r[1]]);
                if pair.len() == 2 {
                    out.push([r[2], r[3]]);
                }
            }
            return Ok(out);
        }
        let (g, tq) = (self.udiv(lane, self.k(4))?, self.urem(lane, self.k(4))?);
        let (i16t, i32t) = (ir.ctx.i16_type(), ir.ctx.i32_type());
        let half_at = |key: IntValue<'ctx>, col: IntValue<'ctx>| -> IrResult<IntValue<'ctx>> {
            let at = ir.mad(key, self.k(2 * vw), col)?;
            let pt = unsafe { ir.b.build_in_bounds_gep(i16t, v_s, &[at], "")? };
            let v = ir.b.build_load(i16t, pt, "")?.into_int_value();
            Ok(ir.b.build_int_z_extend(v, i32t, "")?)
        };
        for &j in js {
            let col = ir.add(g, self.k(8 * j))?;
            let mut regs = [i32t.const_zero(); 2];
            for (i, reg) in regs.iter_mut().enumerate() {
                let key = ir.mad(tq, self.k(2), self.k(k0 + 8 * i as u64))?;
                let lo = half_at(key, col)?;
                let hi = half_at(ir.add(key, self.k(1))?, col)?;
                let hi = ir.b.build_left_shift(hi, i32t.const_int(16, false), "")?;
                *reg = ir.b.build_or(lo, hi, "")?;
            }
            out.push(regs);
        }
        Ok(out)
    }

    /// e^x for attention's softmax: [`Simt::ex2`] of x · log₂e — one special-function
    /// instruction on a GPU instead of the ~20 of [`Math::exp`]'s polynomial, which would
    /// otherwise outweigh a tile step's `mma`s (FlashAttention computes its exps so too;
    /// the tiles keep their scores scaled by log₂e and call `ex2` directly). Its error
    /// (2 ulp, plus the rounding of the scaled argument: ~1e-6 relative for the scores
    /// that matter) is far inside the 1e-4 an f32 model is held to.
    fn exp_fast(&self, x: FloatValue<'ctx>) -> IrResult<FloatValue<'ctx>> {
        let log2e = Math { ir: self.ir }.c(std::f64::consts::LOG2_E);
        self.simt.ex2(self.ir.b.build_float_mul(x, log2e, "")?)
    }

    /// Word `col` of row `row` of a shared-memory tile whose rows are `stride` words apart.
    /// The staged row lane `l` gives to `ldmatrix` (`Simt::ldmatrix_x4`): row
    /// `first + 8·r + l % 8` of `tile` (rows `stride` words apart) from word `w0 + 4·w`,
    /// where matrix m = l / 8 is (r, w) = (m % 2, m / 2) when `rows_first` (an A fragment:
    /// rows 0–7, 8–15, then the next four words), else (m / 2, m % 2) (the B fragments of
    /// two n tiles: one tile's two word quads, then the next tile's).
    fn ldmatrix_row(
        &self,
        tile: PointerValue<'ctx>,
        stride: u64,
        first: IntValue<'ctx>,
        w0: u64,
        rows_first: bool,
        l: IntValue<'ctx>,
    ) -> IrResult<PointerValue<'ctx>> {
        let ir = self.ir;
        let (mat, row) = (self.udiv(l, self.k(8))?, self.urem(l, self.k(8))?);
        let (hi, lo) = (self.udiv(mat, self.k(2))?, self.urem(mat, self.k(2))?);
        let (r, w) = if rows_first { (lo, hi) } else { (hi, lo) };
        let x = ir.add(first, ir.mad(r, self.k(8), row)?)?;
        let w = ir.mad(w, self.k(4), self.k(w0))?;
        ir.at(tile, ir.mad(x, self.k(stride), w)?)
    }

    fn smem_word(
        &self,
        tile: PointerValue<'ctx>,
        stride: u64,
        row: IntValue<'ctx>,
        col: IntValue<'ctx>,
    ) -> IrResult<IntValue<'ctx>> {
        let ir = self.ir;
        let pt = ir.at(tile, ir.mad(row, self.k(stride), col)?)?;
        Ok(ir.b.build_load(ir.ctx.i32_type(), pt, "")?.into_int_value())
    }

    /// An f32 (its bits) as a tf32 head (rounded to nearest, ties away) and the tail
    /// x − head, both as bits (the hardware reads the tail's leading 19 bits too).
    fn tf32_split(&self, bits: IntValue<'ctx>) -> IrResult<(IntValue<'ctx>, IntValue<'ctx>)> {
        let ir = self.ir;
        let i32t = ir.ctx.i32_type();
        let x = ir.b.build_bit_cast(bits, ir.f32, "")?.into_float_value();
        let up =
            ir.b.build_int_add(bits, i32t.const_int(0x1000, false), "")?;
        let head = ir.b.build_and(up, i32t.const_int(0xFFFF_E000, false), "")?;
        let hf = ir.b.build_bit_cast(head, ir.f32, "")?.into_float_value();
        let tail = ir.b.build_float_sub(x, hf, "")?;
        Ok((head, ir.b.build_bit_cast(tail, i32t, "")?.into_int_value()))
    }

    /// Tensor-core products into the n tiles `acc`, in batches of at most
    /// [`MMA_MAX_N`]: `mma` takes a batch's tile indices and accumulators and returns
    /// the new accumulators, which replace them.
    fn mma_batches(
        &self,
        acc: &mut [[FloatValue<'ctx>; 4]],
        mut mma: impl FnMut(&[u64], &[[FloatValue<'ctx>; 4]]) -> IrResult<Vec<[FloatValue<'ctx>; 4]>>,
    ) -> IrResult<()> {
        let n = acc.len() as u64;
        for j0 in (0..n).step_by(MMA_MAX_N as usize) {
            let js: Vec<u64> = (j0..(j0 + MMA_MAX_N).min(n)).collect();
            let cs: Vec<[FloatValue<'ctx>; 4]> = js.iter().map(|&j| acc[j as usize]).collect();
            for (&j, d) in js.iter().zip(mma(&js, &cs)?) {
                acc[j as usize] = d;
            }
        }
        Ok(())
    }

    /// A part of the flash-style attention backward (see [`Attention::part`]), scores
    /// recomputed from q and k: `Lse` and dQ one query row per warp, dK and dV one key row
    /// (of a key/value head) per warp over the queries of every head of its group that see
    /// it. Vectors are spread over the lanes as in the forward kernel.
    fn attention_grad(&self, p: &Par<'ctx>, a: &Attention, part: AttnPart) -> IrResult<()> {
        let ir = self.ir;
        let m = Math { ir };
        let [b_, h, t, nk, d, dv, hkv] = self.attention_sizes(a)?;
        let group = self.udiv(h, hkv)?;
        type Rows<'c> = (PointerValue<'c>, Vec<IntValue<'c>>);
        let qr = self.strided_view(&a.q)?;
        let kr = self.strided_view(&a.k)?;
        let vr = self.strided_view(&a.v)?;
        let or = self.strided_view(&a.out)?;
        let dr = match &a.dout {
            Some(x) => self.strided_view(x)?,
            None => qr.clone(),
        };
        let row = |(base, st): &Rows<'ctx>, b, head, i| -> IrResult<PointerValue<'ctx>> {
            ir.at(
                *base,
                ir.add(
                    ir.mul(b, st[0])?,
                    ir.add(ir.mul(head, st[1])?, ir.mul(i, st[2])?)?,
                )?,
            )
        };
        let width = |x: &Ix| x.as_const().map_or(self.max_head_dim, |v| v as u64).max(1);
        let (uq, uv) = (
            width(&a.sizes[4]).div_ceil(WARP),
            width(&a.sizes[5]).div_ceil(WARP),
        );
        let neg_inf = m.c(f64::NEG_INFINITY);
        let scale = m.c(a.scale);
        let (gt, gs) = self.global(p)?;
        let lane = self.urem(p.tid, self.k(WARP))?;
        let warp = self.udiv(gt, self.k(WARP))?;
        let warps = self.udiv(gs, self.k(WARP))?;
        let elem = |u: u64| ir.add(lane, self.k(u * WARP));
        // A strided row's lane elements (u < n of them), 0 past `len`.
        let lanes =
            |ptr: PointerValue<'ctx>, stride: IntValue<'ctx>, len: IntValue<'ctx>, n: u64| {
                (0..n)
                    .map(|u| {
                        let x = elem(u)?;
                        self.load_if(self.lt(x, len)?, ptr, ir.mul(x, stride)?)
                    })
                    .collect::<IrResult<Vec<FloatValue<'ctx>>>>()
            };
        // Σ over the warp of a · b lane-wise.
        let dot =
            |xs: &[FloatValue<'ctx>], ys: &[FloatValue<'ctx>]| -> IrResult<FloatValue<'ctx>> {
                let mut part = m.c(0.0);
                for (&x, &y) in xs.iter().zip(ys) {
                    part = self.fma(x, y, part)?;
                }
                self.warp_reduce(part, ReduceOp::Sum)
            };
        let stat = |e: &Option<Expr>, vars: &[IntValue<'ctx>]| -> IrResult<FloatValue<'ctx>> {
            match e {
                Some(e) => self.ex.expr(&self.vals, e, vars),
                None => Err(IrError("attention backward without lse / δ".into())),
            }
        };
        let am = AttnMask {
            ex: &self.ex,
            mask: a.mask,
            nk,
            t,
        };
        // The scaled, biased score of (b, head, query, key); −∞ where a mask hides the key.
        let masked =
            |dotv: FloatValue<'ctx>, vars: [IntValue<'ctx>; 4]| -> IrResult<FloatValue<'ctx>> {
                let [_, _, tt, key] = vars;
                let mut sc = ir.b.build_float_mul(dotv, scale, "")?;
                if let Some(bias) = &a.bias {
                    sc =
                        ir.b.build_float_add(sc, self.ex.expr(&self.vals, bias, &vars)?, "")?;
                }
                let allowed = am.allows(tt, key)?;
                if let Some(ok) = allowed {
                    sc = m.select(ok, sc, neg_inf)?;
                }
                if let Some(km) = &a.key_mask {
                    let keep = self.ex.expr(&self.vals, km, &vars)?;
                    let off =
                        ir.b.build_float_compare(FloatPredicate::OEQ, keep, m.c(0.0), "")?;
                    sc = m.select(off, neg_inf, sc)?;
                }
                Ok(sc)
            };
        let keys_of = |tt: IntValue<'ctx>| am.keys_of(tt);
        let queries_of = |j: IntValue<'ctx>| am.queries_of(j);
        let store_lanes =
            |ptr: PointerValue<'ctx>, vals: &[BasicValueEnum<'ctx>], len: IntValue<'ctx>| {
                for (u, v) in vals.iter().enumerate() {
                    let x = elem(u as u64)?;
                    let v = v.into_float_value();
                    ir.if_else(
                        self.f,
                        "o",
                        self.lt(x, len)?,
                        || ir.store(ir.at(ptr, ir.mul(x, or.1[3])?)?, v),
                        || Ok(()),
                    )?;
                }
                Ok::<(), IrError>(())
            };
        let zeros =
            |n: u64| -> Vec<BasicValueEnum<'ctx>> { (0..n).map(|_| m.c(0.0).into()).collect() };
        match part {
            AttnPart::Lse | AttnPart::Q => {
                let rows = ir.mul(ir.mul(b_, h)?, t)?;
                let ht = ir.mul(h, t)?;
                self.strided("qrow", warp, rows, warps, |it| {
                    let b = self.udiv(it, ht)?;
                    let hh = self.urem(self.udiv(it, t)?, h)?;
                    let tt = self.urem(it, t)?;
                    let kh = self.udiv(hh, group)?;
                    let qv = lanes(row(&qr, b, hh, tt)?, qr.1[3], d, uq)?;
                    let (lo, hi) = keys_of(tt)?;
                    let steps = WholeSteps {
                        start: lo,
                        limit: hi,
                        step: 1,
                    };
                    let out = row(&or, b, hh, tt)?;
                    if part == AttnPart::Lse {
                        let init = [neg_inf.into(), m.c(0.0).into()];
                        let (_, fin) =
                            ir.carried_loop(self.f, "key", steps, &init, |key, cur| {
                                let kv = lanes(row(&kr, b, kh, key)?, kr.1[3], d, uq)?;
                                let sc = masked(dot(&qv, &kv)?, [b, hh, tt, key])?;
                                let (mx, l) =
                                    (cur[0].into_float_value(), cur[1].into_float_value());
                                let new_max = m.binary_intrinsic("llvm.maxnum", mx, sc)?;
                                let none = ir.b.build_float_compare(
                                    FloatPredicate::OEQ,
                                    new_max,
                                    neg_inf,
                                    "",
                                )?;
                                let corr = m.select(
                                    none,
                                    m.c(1.0),
                                    self.exp_fast(ir.b.build_float_sub(mx, new_max, "")?)?,
                                )?;
                                let pr = m.select(
                                    none,
                                    m.c(0.0),
                                    self.exp_fast(ir.b.build_float_sub(sc, new_max, "")?)?,
                                )?;
                                Ok(vec![new_max.into(), self.fma(l, corr, pr)?.into()])
                            })?;
                        let (mx, l) = (fin[0].into_float_value(), fin[1].into_float_value());
                        let none =
                            ir.b.build_float_compare(FloatPredicate::OEQ, mx, neg_inf, "")?;
                        let lse = m.select(
                            none,
                            m.c(f64::INFINITY),
                            ir.b.build_float_add(mx, m.log(l)?, "")?,
                        )?;
                        let first = ir.eq(lane, self.k(0))?;
                        return ir.if_else(self.f, "st", first, || ir.store(out, lse), || Ok(()));
                    }
                    let dov = lanes(row(&dr, b, hh, tt)?, dr.1[3], dv, uv)?;
                    let lse = stat(&a.lse, &[b, hh, tt])?;
                    let delta = stat(&a.delta, &[b, hh, tt])?;
                    let (_, acc) =
                        ir.carried_loop(self.f, "key", steps, &zeros(uq), |key, cur| {
                            let kp = row(&kr, b, kh, key)?;
                            let kv = lanes(kp, kr.1[3], d, uq)?;
                            let sc = masked(dot(&qv, &kv)?, [b, hh, tt, key])?;
                            let pr = self.exp_fast(ir.b.build_float_sub(sc, lse, "")?)?;
                            let vv = lanes(row(&vr, b, kh, key)?, vr.1[3], dv, uv)?;
                            let dp = dot(&dov, &vv)?;
                            let ds = ir.b.build_float_mul(
                                ir.b.build_float_mul(pr, ir.b.build_float_sub(dp, delta, "")?, "")?,
                                scale,
                                "",
                            )?;
                            cur.iter()
                                .zip(&kv)
                                .map(|(a, &k)| Ok(self.fma(ds, k, a.into_float_value())?.into()))
                                .collect()
                        })?;
                    store_lanes(out, &acc, d)
                })
            }
            AttnPart::K | AttnPart::V => {
                let rows = ir.mul(ir.mul(b_, hkv)?, nk)?;
                let hn = ir.mul(hkv, nk)?;
                let width = if part == AttnPart::K {
                    (d, uq)
                } else {
                    (dv, uv)
                };
                self.strided("krow", warp, rows, warps, |it| {
                    let b = self.udiv(it, hn)?;
                    let kh = self.urem(self.udiv(it, nk)?, hkv)?;
                    let j = self.urem(it, nk)?;
                    let kv = lanes(row(&kr, b, kh, j)?, kr.1[3], d, uq)?;
                    let vv = if part == AttnPart::K {
                        lanes(row(&vr, b, kh, j)?, vr.1[3], dv, uv)?
                    } else {
                        Vec::new()
                    };
                    let (qlo, qhi) = queries_of(j)?;
                    let heads = WholeSteps {
                        start: self.k(0),
                        limit: group,
                        step: 1,
                    };
                    let (_, acc) =
                        ir.carried_loop(self.f, "head", heads, &zeros(width.1), |g, cur| {
                            let hh = ir.mad(kh, group, g)?;
                            let steps = WholeSteps {
                                start: qlo,
                                limit: qhi,
                                step: 1,
                            };
                            let (_, next) =
                                ir.carried_loop(self.f, "query", steps, cur, |tt, cur| {
                                    let qv = lanes(row(&qr, b, hh, tt)?, qr.1[3], d, uq)?;
                                    let sc = masked(dot(&qv, &kv)?, [b, hh, tt, j])?;
                                    let pr = self.exp_fast(ir.b.build_float_sub(
                                        sc,
                                        stat(&a.lse, &[b, hh, tt])?,
                                        "",
                                    )?)?;
                                    let dov = lanes(row(&dr, b, hh, tt)?, dr.1[3], dv, uv)?;
                                    let (f, xs) = if part == AttnPart::V {
                                        (pr, dov)
                                    } else {
                                        let dp = dot(&dov, &vv)?;
                                        let centred = ir.b.build_float_sub(
                                            dp,
                                            stat(&a.delta, &[b, hh, tt])?,
                                            "",
                                        )?;
                                        (
                                            ir.b.build_float_mul(
                                                ir.b.build_float_mul(pr, centred, "")?,
                                                scale,
                                                "",
                                            )?,
                                            qv,
                                        )
                                    };
                                    cur.iter()
                                        .zip(&xs)
                                        .map(|(a, &x)| {
                                            Ok(self.fma(f, x, a.into_float_value())?.into())
                                        })
                                        .collect()
                                })?;
                            Ok(next)
                        })?;
                    store_lanes(row(&or, b, kh, j)?, &acc, width.0)
                })
            }
        }
    }
}

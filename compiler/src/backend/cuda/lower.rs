//! Kernel IR → the thread program of each kernel (see `mod.rs` for the launch model).
//!
//! - **Map**: one element per thread, a grid-stride loop over all of them.
//! - **Reduce**: one output per warp; lanes stride over the reduced axis, a butterfly of
//!   shuffles combines them (the same order on every run: results do not depend on the
//!   grid).
//! - **MatMul**: 64×64 output tiles per block, k in steps of 16 through shared memory;
//!   each warp computes 16×32 of the tile on the tensor cores (`mma.sync` m16n8k8 tf32)
//!   in "3×TF32": each f32 operand split into a tf32 head and a tf32 tail, three products
//!   (tail·head, head·tail, head·head) per tile, which keeps f32 accuracy; the epilogue
//!   applied where each output is stored. With `--dtype bf16|f16`
//!   ([`Program::half_matmul`]) the operands are rounded to the half type as they are
//!   staged (their 16 bits in shared memory) and each k step is one `mma.sync` m16n8k16
//!   per tile with f32 accumulation. Row-local epilogues (RoPE) take a band of 64
//!   rows per block: products first, then each row's epilogue staged in shared memory.
//!   A few rows of A against B stored [n, k] (decoding; m ≤ 8 at run time): one warp per
//!   output column, lanes striding k, the rows' sums in registers, one butterfly each
//!   (with `--dtype`, over operands rounded as the tiles round them).
//! - **Attention**: one query row per warp with online softmax; q and the output
//!   accumulator spread over the lanes (head_dim / 32 registers each), one shuffle
//!   reduction per key.
//! - **Scatter**: one column per thread, the steps in order.
//! - **Scan**: one block runs the steps in order; its body kernels are the same thread
//!   programs over that block, with a barrier after each.

use super::simt::{Mode, Simt};
use crate::backend::llvm::expr::{AttnMask, Exprs, Values};
use crate::backend::llvm::ir::{Ir, IrError, IrResult, WholeSteps};
use crate::backend::llvm::math::Math;
use crate::graph::{AttnPart, ReduceOp};
use crate::kernel::{Attention, Body, BufId, Expr, Ix, Kernel, MatMul, Program, Scan};
use arch_runtime::gguf::GgmlType;
use inkwell::values::{BasicValueEnum, FloatValue, FunctionValue, IntValue, PointerValue};
use inkwell::{FloatPredicate, IntPredicate};
use std::collections::HashMap;

/// Output tile edge of the matmul and its k step.
pub const TILE: u64 = 64;
pub const TILE_K: u64 = 16;
/// Floats from one k row of a staged operand tile to the next: 8 more than the tile, so
/// the lanes of an mma fragment load (rows t·stride + g) hit 32 different banks.
const STRIDE: u64 = TILE + 8;
/// A warp's part of the output tile: 16 rows × 32 columns, four m16n8 mma tiles.
const WARP_ROWS: u64 = 16;
const WARP_COLS: u64 = 32;
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
    /// Bytes of shared memory it uses (static in PTX; the simulator allocates them).
    pub shared_bytes: u64,
}

/// Each kernel's work split and shared memory: the parallel iterations of its body.
struct Par<'ctx> {
    tid: IntValue<'ctx>,
    block: IntValue<'ctx>,
    nblocks: IntValue<'ctx>,
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
}

/// Floats of shared memory kernel `k` needs.
fn shared_floats(k: &Kernel) -> u64 {
    match &k.body {
        Body::MatMul(m) if m.whole_rows => {
            (2 * STRIDE * TILE_K).max(m.n.as_const().map_or(0, |n| n as u64))
        }
        Body::MatMul(_) => 2 * STRIDE * TILE_K,
        Body::Scan(s) => s.body.iter().map(shared_floats).max().unwrap_or(0),
        _ => 0,
    }
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
) -> IrResult<Vec<KernelLaunch>> {
    let buf_quant: Vec<_> = prog.buffers.iter().map(|b| b.quant).collect();
    let mut seen: HashMap<String, KernelLaunch> = HashMap::new();
    let mut out = Vec::new();
    for (i, k) in prog.kernels.iter().enumerate() {
        if let Some(why) = unsupported(k) {
            return Err(IrError(why));
        }
        let key = k.shape_key();
        if let Some(l) = seen.get(&key) {
            out.push(l.clone());
            continue;
        }
        let name = format!("k{i}_{}", sanitize(&k.name));
        let floats = shared_floats(k);
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
            grid: if matches!(k.body, Body::Scan(_)) {
                Grid::One
            } else {
                Grid::PerSm(4)
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
    /// is a parameter stored in a ggml type.
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
            ir.store(ir.at(outp, at)?, v)
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
                || ir.store(ir.at(outp, o)?, v),
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

    fn scan(&self, p: &Par<'ctx>, s: &Scan) -> IrResult<()> {
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

    /// The products of output tile (bt, i0.., j0..) stored to `out`, with the epilogue
    /// applied unless `raw`.
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
        let (m, n, k) = dims;
        let smem = self
            .smem
            .ok_or_else(|| IrError("matmul without shared memory".into()))?;
        let a_s = smem;
        let b_s = ir.at(smem, self.k(STRIDE * TILE_K))?;
        let (abase, aoff, lda) = self.operand(mm, bt, true)?;
        let (bbase, boff, ldb) = self.operand(mm, bt, false)?;
        // Warp tiles: (TILE / 16) × (TILE / 32) of them, dealt to the warps in turn.
        let warps = (self.threads / WARP).max(1);
        let wtiles = (TILE / WARP_ROWS) * (TILE / WARP_COLS);
        if !wtiles.is_multiple_of(warps) {
            return Err(IrError(format!(
                "{} threads per block do not divide the matmul's warp tiles",
                self.threads
            )));
        }
        let per_warp = wtiles / warps;
        let warp = self.udiv(p.tid, self.k(WARP))?;
        let lane = self.urem(p.tid, self.k(WARP))?;
        let (g, t) = (self.udiv(lane, self.k(4))?, self.urem(lane, self.k(4))?);
        // Each of this warp's tiles' first row and column in the output tile.
        let origin: Vec<(IntValue<'ctx>, IntValue<'ctx>)> = (0..per_warp)
            .map(|q| {
                let w = ir.add(warp, self.k(q * warps))?;
                let per_row = TILE / WARP_COLS;
                Ok((
                    ir.mul(self.udiv(w, self.k(per_row))?, self.k(WARP_ROWS))?,
                    ir.mul(self.urem(w, self.k(per_row))?, self.k(WARP_COLS))?,
                ))
            })
            .collect::<IrResult<_>>()?;
        let ntiles = WARP_COLS / 8;
        let accs = (per_warp * ntiles * 4) as usize;
        let init: Vec<BasicValueEnum<'ctx>> = vec![m_.c(0.0).into(); accs];
        let steps = WholeSteps {
            start: self.k(0),
            limit: ir.add(k, self.k(TILE_K - 1))?,
            step: TILE_K,
        };
        let i32t = ir.ctx.i32_type();
        // Half-precision weights are exact in tf32 (f16's 10 mantissa bits, bf16's 7, and
        // f16 subnormals normal in tf32's 8-bit exponent): B's tail is zero, so its
        // head·tail product is left out.
        let b_exact = matches!(self.stored(mm.b.buf), Some(GgmlType::BF16 | GgmlType::F16));
        // An f32 as a tf32 head (rounded to nearest, ties away) and the tail x − head,
        // both as bits (the hardware reads the tail's leading 19 bits too).
        let split = |x: FloatValue<'ctx>| -> IrResult<(IntValue<'ctx>, IntValue<'ctx>)> {
            let bits = ir.b.build_bit_cast(x, i32t, "")?.into_int_value();
            let up =
                ir.b.build_int_add(bits, i32t.const_int(0x1000, false), "")?;
            let head = ir.b.build_and(up, i32t.const_int(0xFFFF_E000, false), "")?;
            let hf = ir.b.build_bit_cast(head, ir.f32, "")?.into_float_value();
            let tail = ir.b.build_float_sub(x, hf, "")?;
            Ok((head, ir.b.build_bit_cast(tail, i32t, "")?.into_int_value()))
        };
        let (_, acc) = ir.carried_loop(self.f, "kt", steps, &init, |k0, cur| {
            // Cooperative loads, zero outside the matrices. Consecutive threads read
            // consecutive addresses of whichever layout the operand has.
            let elems = self.k(TILE * TILE_K);
            ir.for_range(self.f, "la", p.tid, elems, self.threads, |e| {
                let (r, kk) = if mm.transpose_a {
                    (self.urem(e, self.k(TILE))?, self.udiv(e, self.k(TILE))?)
                } else {
                    (self.udiv(e, self.k(TILE_K))?, self.urem(e, self.k(TILE_K))?)
                };
                let (i, kg) = (ir.add(i0, r)?, ir.add(k0, kk)?);
                let ok = ir.b.build_and(self.lt(i, m)?, self.lt(kg, k)?, "")?;
                let idx = if mm.transpose_a {
                    ir.add(aoff, ir.mad(kg, lda, i)?)?
                } else {
                    ir.add(aoff, ir.mad(i, lda, kg)?)?
                };
                let v = self.load_if(ok, abase, idx)?;
                self.stage(ir.at(a_s, ir.mad(kk, self.k(STRIDE), r)?)?, v)
            })?;
            ir.for_range(self.f, "lb", p.tid, elems, self.threads, |e| {
                let (c, kk) = if mm.transpose_b {
                    (self.udiv(e, self.k(TILE_K))?, self.urem(e, self.k(TILE_K))?)
                } else {
                    (self.urem(e, self.k(TILE))?, self.udiv(e, self.k(TILE))?)
                };
                let (j, kg) = (ir.add(j0, c)?, ir.add(k0, kk)?);
                let ok = ir.b.build_and(self.lt(j, n)?, self.lt(kg, k)?, "")?;
                let idx = if mm.transpose_b {
                    ir.add(boff, ir.mad(j, ldb, kg)?)?
                } else {
                    ir.add(boff, ir.mad(kg, ldb, j)?)?
                };
                let v = self.load_elem_if(ok, mm.b.buf, bbase, idx)?;
                self.stage(ir.at(b_s, ir.mad(kk, self.k(STRIDE), c)?)?, v)
            })?;
            self.simt.barrier()?;
            let mut next: Vec<FloatValue<'ctx>> =
                cur.iter().map(|v| v.into_float_value()).collect();
            match self.half {
                Some(ty) => self.half_products(ty, (a_s, b_s), (t, g), &origin, &mut next)?,
                None => {
                    // Staged element (k row kk, column x) of an operand tile.
                    let staged = |tile, kk, x| {
                        let v = ir.load_f32(ir.at(tile, ir.mad(kk, self.k(STRIDE), x)?)?)?;
                        split(v.into_float_value())
                    };
                    for k8 in (0..TILE_K).step_by(8) {
                        let (kt, kt4) = (ir.add(t, self.k(k8))?, ir.add(t, self.k(k8 + 4))?);
                        self.warp_tiles(&origin, g, &mut next, |row, row8, cols, cs| {
                            let af = [
                                staged(a_s, kt, row)?,
                                staged(a_s, kt, row8)?,
                                staged(a_s, kt4, row)?,
                                staged(a_s, kt4, row8)?,
                            ];
                            let a_hi = [af[0].0, af[1].0, af[2].0, af[3].0];
                            let a_lo = [af[0].1, af[1].1, af[2].1, af[3].1];
                            let bs = cols
                                .iter()
                                .map(|&col| {
                                    let (b0, b1) = (staged(b_s, kt, col)?, staged(b_s, kt4, col)?);
                                    Ok(([b0.0, b1.0], [b0.1, b1.1]))
                                })
                                .collect::<IrResult<Vec<_>>>()?;
                            self.simt.mma_3xtf32((a_hi, a_lo), &bs, cs, b_exact)
                        })?;
                    }
                }
            }
            self.simt.barrier()?;
            Ok(next.into_iter().map(Into::into).collect())
        })?;
        let outp = self.buf(mm.out)?;
        let plane = ir.mul(bt, ir.mul(m, n)?)?;
        for (q, &(r0, c0)) in origin.iter().enumerate() {
            for j in 0..ntiles {
                for e in 0..4u64 {
                    let r = ir.add(r0, ir.add(g, self.k(8 * (e / 2)))?)?;
                    let c = ir.add(c0, ir.add(ir.mul(t, self.k(2))?, self.k(8 * j + e % 2))?)?;
                    let (i, jj) = (ir.add(i0, r)?, ir.add(j0, c)?);
                    let ok = ir.b.build_and(self.lt(i, m)?, self.lt(jj, n)?, "")?;
                    let v = acc[((q as u64 * ntiles + j) * 4 + e) as usize].into_float_value();
                    let epi = mm.epilogue.as_ref().filter(|_| !raw);
                    self.store_product(ok, (outp, plane, n), (bt, i, jj), v, epi)?;
                }
            }
        }
        Ok(())
    }

    /// Stores staged operand value `v` into a shared tile: as f32, or with half-precision
    /// products as its 16 bits in the half type (rounded to nearest even).
    fn stage(&self, at: PointerValue<'ctx>, v: FloatValue<'ctx>) -> IrResult<()> {
        match self.half {
            Some(ty) => self.ir.store(at, self.half_bits(ty, v)?),
            None => self.ir.store(at, v),
        }
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

    /// One k step (`TILE_K` = 16) of this warp's output tiles on the tensor cores in half
    /// precision: per warp tile `origin[q]` and n tile j one
    /// `mma.sync.aligned.m16n8k16.row.col.f32.{bf16|f16}` into `acc`. The staged tiles
    /// hold each operand's 16 bits (k row kk, column x at kk · STRIDE + x); a register
    /// packs two consecutive k, the lower in the low half (`g = lane / 4`, `t = lane % 4`):
    /// A rows g and g + 8 at k 2t, 2t + 1 and 2t + 8, 2t + 9; B column g at the same k.
    fn half_products(
        &self,
        ty: GgmlType,
        (a_s, b_s): (PointerValue<'ctx>, PointerValue<'ctx>),
        (t, g): (IntValue<'ctx>, IntValue<'ctx>),
        origin: &[(IntValue<'ctx>, IntValue<'ctx>)],
        acc: &mut [FloatValue<'ctx>],
    ) -> IrResult<()> {
        let ir = self.ir;
        let i32t = ir.ctx.i32_type();
        let bits = |tile: PointerValue<'ctx>, kk: IntValue<'ctx>, x: IntValue<'ctx>| {
            let p = ir.at(tile, ir.mad(kk, self.k(STRIDE), x)?)?;
            Ok::<_, IrError>(ir.b.build_load(i32t, p, "")?.into_int_value())
        };
        // Elements (k, x) and (k + 1, x) in one register.
        let pair = |tile: PointerValue<'ctx>, k: IntValue<'ctx>, x: IntValue<'ctx>| {
            let lo = bits(tile, k, x)?;
            let hi = bits(tile, ir.add(k, self.k(1))?, x)?;
            let hi = ir.b.build_left_shift(hi, i32t.const_int(16, false), "")?;
            Ok::<_, IrError>(ir.b.build_or(lo, hi, "")?)
        };
        let k0 = ir.mul(t, self.k(2))?;
        let k8 = ir.add(k0, self.k(8))?;
        self.warp_tiles(origin, g, acc, |row, row8, cols, cs| {
            let a = [
                pair(a_s, k0, row)?,
                pair(a_s, k0, row8)?,
                pair(a_s, k8, row)?,
                pair(a_s, k8, row8)?,
            ];
            let bs = cols
                .iter()
                .map(|&col| Ok([pair(b_s, k0, col)?, pair(b_s, k8, col)?]))
                .collect::<IrResult<Vec<_>>>()?;
            self.simt.mma_half(ty, a, &bs, cs)
        })
    }

    /// For each of this warp's output tiles `origin[q]` (first row, first column): `mma`
    /// given the tile's rows g and g + 8, the column g of each of its n tiles, and their
    /// accumulators (four per n tile, in `acc` at (q · n tiles + j) · 4) returns the new
    /// accumulators, which replace them.
    fn warp_tiles(
        &self,
        origin: &[(IntValue<'ctx>, IntValue<'ctx>)],
        g: IntValue<'ctx>,
        acc: &mut [FloatValue<'ctx>],
        mut mma: impl FnMut(
            IntValue<'ctx>,
            IntValue<'ctx>,
            &[IntValue<'ctx>],
            &[[FloatValue<'ctx>; 4]],
        ) -> IrResult<Vec<[FloatValue<'ctx>; 4]>>,
    ) -> IrResult<()> {
        let ir = self.ir;
        let ntiles = (WARP_COLS / 8) as usize;
        for (q, &(r0, c0)) in origin.iter().enumerate() {
            let (row, row8) = (ir.add(r0, g)?, ir.add(r0, ir.add(g, self.k(8))?)?);
            let cols = (0..ntiles)
                .map(|j| ir.add(c0, ir.add(g, self.k(8 * j as u64))?))
                .collect::<IrResult<Vec<_>>>()?;
            let tile = &mut acc[q * ntiles * 4..(q + 1) * ntiles * 4];
            let cs: Vec<[FloatValue<'ctx>; 4]> = tile
                .chunks_exact(4)
                .map(|c| [c[0], c[1], c[2], c[3]])
                .collect();
            for (d, out) in mma(row, row8, &cols, &cs)?
                .iter()
                .zip(tile.chunks_exact_mut(4))
            {
                out.copy_from_slice(d);
            }
        }
        Ok(())
    }

    fn matmul(&self, p: &Par<'ctx>, mm: &MatMul) -> IrResult<()> {
        let ir = self.ir;
        let (batch, m, n, k) = (
            self.c(&mm.batch)?,
            self.c(&mm.m)?,
            self.c(&mm.n)?,
            self.c(&mm.k)?,
        );
        let (tm, tn) = (self.ceil_div(m, TILE)?, self.ceil_div(n, TILE)?);
        if !mm.whole_rows {
            let tiles = || {
                let per_batch = ir.mul(tm, tn)?;
                let tiles = ir.mul(batch, per_batch)?;
                self.strided("tile", p.block, tiles, p.nblocks, |t| {
                    let bt = self.udiv(t, per_batch)?;
                    let r = self.urem(t, per_batch)?;
                    let i0 = ir.mul(self.udiv(r, tn)?, self.k(TILE))?;
                    let j0 = ir.mul(self.urem(r, tn)?, self.k(TILE))?;
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
            let i0 = ir.mul(self.urem(band, tm)?, self.k(TILE))?;
            ir.for_range(self.f, "tj", self.k(0), tn, 1, |tj| {
                self.matmul_tile(p, mm, (m, n, k), bt, i0, ir.mul(tj, self.k(TILE))?, true)
            })?;
            self.simt.barrier()?;
            let Some(epi) = epi else { return Ok(()) };
            let rows = ir.min(self.k(TILE), ir.sub(m, i0)?)?;
            ir.for_range(self.f, "er", self.k(0), rows, 1, |r| {
                let i = ir.add(i0, r)?;
                let row = ir.at(outp, ir.mul(ir.mad(bt, m, i)?, n)?)?;
                ir.for_range(self.f, "ej", p.tid, n, self.threads, |j| {
                    let v = self.ex.expr(&self.vals, epi, &[bt, i, j])?;
                    ir.store(ir.at(smem, j)?, v)
                })?;
                self.simt.barrier()?;
                ir.for_range(self.f, "ew", p.tid, n, self.threads, |j| {
                    ir.store(ir.at(row, j)?, ir.load_f32(ir.at(smem, j)?)?)
                })?;
                self.simt.barrier()
            })
        })
    }

    /// Where `ok`: output (bt, i, j) of a matmul — in `out` at `plane + i·n + j` — set to
    /// product `v`, then to the epilogue's value of it when there is one.
    fn store_product(
        &self,
        ok: IntValue<'ctx>,
        (out, plane, n): (PointerValue<'ctx>, IntValue<'ctx>, IntValue<'ctx>),
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
                let pt = ir.at(out, ir.add(plane, ir.mad(i, n, j)?)?)?;
                ir.store(pt, v)?;
                if let Some(epi) = epilogue {
                    let e = self.ex.expr(&self.vals, epi, &[bt, i, j])?;
                    ir.store(pt, e)?;
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
                        let a = self.half_round(self.load_if(ok, abase, idx)?)?;
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
                self.store_product(ok, (outp, plane, n), (bt, ii, j), v, epi)?;
            }
            Ok(())
        })
    }

    fn attention(&self, p: &Par<'ctx>, a: &Attention) -> IrResult<()> {
        if let Some(part) = a.part {
            return self.attention_grad(p, a, part);
        }
        let ir = self.ir;
        let m = Math { ir };
        let s: Vec<IntValue<'ctx>> = a.sizes.iter().map(|x| self.c(x)).collect::<IrResult<_>>()?;
        let (b_, h, t, nk, d, dv, hkv) = (s[0], s[1], s[2], s[3], s[4], s[5], s[6]);
        let group = self.udiv(h, hkv)?;
        let strided =
            |st: &crate::kernel::Strided| -> IrResult<(PointerValue<'ctx>, Vec<IntValue<'ctx>>)> {
                let base = ir.at(self.buf(st.buf)?, self.c(&st.offset)?)?;
                let v = st
                    .strides
                    .iter()
                    .map(|x| self.c(x))
                    .collect::<IrResult<Vec<_>>>()?;
                Ok((base, v))
            };
        let (qb, qs) = strided(&a.q)?;
        let (kb, ks) = strided(&a.k)?;
        let (vb, vs) = strided(&a.v)?;
        let (ob, os) = strided(&a.out)?;
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
            let q = ir.at(
                qb,
                ir.add(
                    ir.mul(b, qs[0])?,
                    ir.add(ir.mul(hh, qs[1])?, ir.mul(tt, qs[2])?)?,
                )?,
            )?;
            let krow0 = ir.at(kb, ir.add(ir.mul(b, ks[0])?, ir.mul(kh, ks[1])?)?)?;
            let vrow0 = ir.at(vb, ir.add(ir.mul(b, vs[0])?, ir.mul(kh, vs[1])?)?)?;
            let o = ir.at(
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
                    self.load_if(self.lt(x, d)?, q, ir.mul(x, qs[3])?)
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
                let kp = ir.at(krow0, ir.mul(row_of(key)?, ks[2])?)?;
                let mut part = m.c(0.0);
                for (u, &qx) in qv.iter().enumerate() {
                    let x = elem(u as u64)?;
                    let kx = self.load_if(self.lt(x, d)?, kp, ir.mul(x, ks[3])?)?;
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
                    m.exp(ir.b.build_float_sub(mx, new_max, "")?)?,
                )?;
                let pr = m.select(
                    none,
                    m.c(0.0),
                    m.exp(ir.b.build_float_sub(score, new_max, "")?)?,
                )?;
                let l2 = self.fma(l, corr, pr)?;
                let vp = ir.at(vrow0, ir.mul(row_of(key)?, vs[2])?)?;
                let mut next: Vec<BasicValueEnum<'ctx>> = vec![new_max.into(), l2.into()];
                for u in 0..uv {
                    let x = elem(u)?;
                    let vx = self.load_if(self.lt(x, dv)?, vp, ir.mul(x, vs[3])?)?;
                    let acc = cur[2 + u as usize].into_float_value();
                    next.push(
                        self.fma(pr, vx, ir.b.build_float_mul(acc, corr, "")?)?
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
                    || ir.store(ir.at(o, ir.mul(x, os[3])?)?, v),
                    || Ok(()),
                )?;
            }
            Ok(())
        })
    }

    /// A part of the flash-style attention backward (see [`Attention::part`]), scores
    /// recomputed from q and k: `Lse` and dQ one query row per warp, dK and dV one key row
    /// (of a key/value head) per warp over the queries of every head of its group that see
    /// it. Vectors are spread over the lanes as in the forward kernel.
    fn attention_grad(&self, p: &Par<'ctx>, a: &Attention, part: AttnPart) -> IrResult<()> {
        let ir = self.ir;
        let m = Math { ir };
        let s: Vec<IntValue<'ctx>> = a.sizes.iter().map(|x| self.c(x)).collect::<IrResult<_>>()?;
        let (b_, h, t, nk, d, dv, hkv) = (s[0], s[1], s[2], s[3], s[4], s[5], s[6]);
        let group = self.udiv(h, hkv)?;
        type Rows<'c> = (PointerValue<'c>, Vec<IntValue<'c>>);
        let strided = |st: &crate::kernel::Strided| -> IrResult<Rows<'ctx>> {
            let base = ir.at(self.buf(st.buf)?, self.c(&st.offset)?)?;
            let v = st
                .strides
                .iter()
                .map(|x| self.c(x))
                .collect::<IrResult<Vec<_>>>()?;
            Ok((base, v))
        };
        let qr = strided(&a.q)?;
        let kr = strided(&a.k)?;
        let vr = strided(&a.v)?;
        let or = strided(&a.out)?;
        let dr = match &a.dout {
            Some(x) => strided(x)?,
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
                                    m.exp(ir.b.build_float_sub(mx, new_max, "")?)?,
                                )?;
                                let pr = m.select(
                                    none,
                                    m.c(0.0),
                                    m.exp(ir.b.build_float_sub(sc, new_max, "")?)?,
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
                            let pr = m.exp(ir.b.build_float_sub(sc, lse, "")?)?;
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
                                    let pr = m.exp(ir.b.build_float_sub(
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

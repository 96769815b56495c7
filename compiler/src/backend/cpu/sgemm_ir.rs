//! Tile sizes → LLVM IR for `C = A·B` in f32 (row-major, strided), the Goto/BLIS way:
//! B is packed into KC×NR column panels and A into MC×KC row panels of MR rows, and an
//! MR×NR register-tiled microkernel multiplies one A panel by one B panel while keeping
//! all MR×NR accumulators in vector registers. Blocking, edges and the microkernel are
//! generated here, the packing routines in `pack`; nothing is called from a library.
//!
//! The exported symbol is
//! `void archc_sgemm(i64 m, i64 n, i64 k, const float *a, i64 lda, const float *b,
//! i64 ldb, float *c, i64 ldc, float *work)` with `work` at least
//! [`SgemmTiles::workspace_floats`] floats. The code assumes only 4-byte alignment
//! anywhere; a cache-line-aligned `work` keeps packed rows from straddling lines.

use super::ir::{Ir, IrResult, WholeSteps};
use super::pack;
use super::target::VectorIsa;
use inkwell::module::Linkage;
use inkwell::values::{BasicValueEnum, FunctionValue, IntValue, PointerValue, VectorValue};
use inkwell::IntPredicate;

pub(crate) const SGEMM_SYMBOL: &str = "archc_sgemm";

/// Register tile (MR×NR) and cache blocks (KC, MC, NC) of the generated matmul.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct SgemmTiles {
    /// f32 lanes per vector register.
    pub lanes: u32,
    /// Rows of C per microkernel (one broadcast of A each).
    pub mr: u32,
    /// Columns of C per microkernel, a multiple of `lanes`.
    pub nr: u32,
    /// Depth of one packed panel: a KC×NR panel of B stays in L1.
    pub kc: u32,
    /// Rows of A packed at once (multiple of MR): an MC×KC block stays in L2.
    pub mc: u32,
    /// Columns of B packed at once (multiple of NR): a KC×NC block stays in L3.
    pub nc: u32,
}

impl SgemmTiles {
    /// Tiles for a vector set. The register tile leaves room for the B vectors and one
    /// broadcast: AVX2 6×16 holds 12 ymm accumulators of 16 registers, AVX-512 6×32 holds
    /// 12 of 32 zmm, SSE2 4×8 holds 8 of 16 xmm (it needs a temporary for mul + add).
    /// KC = 256 keeps a B panel (16 KiB at NR = 16) in a 32 KiB L1; MC = 144 keeps an A
    /// block (144 KiB) in a 512 KiB L2; NC = 4096 makes a 4 MiB B block for L3. Measured
    /// on Zen 3 (AVX2); KC 384/512 and MC 96/240 were within noise. AVX-512 is untuned
    /// (no such machine to measure on): its B panel fills a 32 KiB L1.
    pub fn for_isa(isa: VectorIsa) -> SgemmTiles {
        let lanes = isa.f32_lanes();
        let mr = match isa {
            VectorIsa::Sse2 => 4,
            VectorIsa::Avx2 | VectorIsa::Avx512 => 6,
        };
        SgemmTiles {
            lanes,
            mr,
            nr: 2 * lanes,
            kc: 256,
            mc: 144,
            nc: 4096,
        }
    }

    /// Floats of the packed A block (MC rows rounded up to whole MR panels, KC deep).
    pub fn packed_a_floats(&self) -> usize {
        let mc = (self.mc as usize).div_ceil(self.mr as usize) * self.mr as usize;
        mc * self.kc as usize
    }

    /// Floats of scratch one call needs: the packed A block, then the packed B block.
    pub fn workspace_floats(&self) -> usize {
        let nc = (self.nc as usize).div_ceil(self.nr as usize) * self.nr as usize;
        self.packed_a_floats() + nc * self.kc as usize
    }
}

/// Emits `archc_sgemm` and its internal helpers into `ir.module`.
pub(crate) fn emit_sgemm<'ctx>(ir: &Ir<'ctx>, t: &SgemmTiles) -> IrResult<FunctionValue<'ctx>> {
    let pack_a = pack::emit_pack_a(ir, t)?;
    let pack_b = pack::emit_pack_b(ir, t)?;
    let kernel = emit_microkernel(ir, t)?;
    emit_driver(
        ir,
        t,
        pack_a,
        pack_b,
        kernel,
        SGEMM_SYMBOL,
        false,
        false,
        None,
    )
}

/// The four matmul drivers over one microkernel: `archc_sgemm`, `archc_sgemm_bt`, and
/// `archc_sgemm_at` / `archc_sgemm_at_bt` for an A stored [k, m] (`lda` the stride between
/// its stored rows): a weight gradient's activations, read without a transposed copy.
pub(crate) fn emit_sgemm_all<'ctx>(
    ir: &Ir<'ctx>,
    t: &SgemmTiles,
) -> IrResult<[FunctionValue<'ctx>; 4]> {
    let pack_a = pack::emit_pack_a(ir, t)?;
    let pack_at = pack::emit_pack_at(ir, t)?;
    let pack_b = pack::emit_pack_b(ir, t)?;
    let pack_bt = pack::emit_pack_bt(ir, t)?;
    let kernel = emit_microkernel(ir, t)?;
    Ok([
        emit_driver(
            ir,
            t,
            pack_a,
            pack_b,
            kernel,
            SGEMM_SYMBOL,
            false,
            false,
            None,
        )?,
        emit_driver(
            ir,
            t,
            pack_a,
            pack_bt,
            kernel,
            "archc_sgemm_bt",
            false,
            true,
            None,
        )?,
        emit_driver(
            ir,
            t,
            pack_at,
            pack_b,
            kernel,
            "archc_sgemm_at",
            true,
            false,
            None,
        )?,
        emit_driver(
            ir,
            t,
            pack_at,
            pack_bt,
            kernel,
            "archc_sgemm_at_bt",
            true,
            true,
            None,
        )?,
    ])
}

/// `kernel(kc, ap, bp, c, ldc, accumulate, mr, nr)`: C[0..mr, 0..nr] (+)= Ap·Bp over one
/// MR-row panel of A and one NR-column panel of B. The MR×NR/lanes accumulators live in
/// registers for the whole k loop (unrolled by 4); a full tile updates C with vector
/// loads and stores, an edge tile goes through a stack tile and writes only mr×nr.
fn emit_microkernel<'ctx>(ir: &Ir<'ctx>, t: &SgemmTiles) -> IrResult<FunctionValue<'ctx>> {
    const UNROLL: u32 = 4;
    let (i64t, ptr) = (ir.i64, ir.ptr);
    let i1 = ir.ctx.bool_type();
    let params = [
        i64t.into(),
        ptr.into(),
        ptr.into(),
        ptr.into(),
        i64t.into(),
        i1.into(),
        i64t.into(),
        i64t.into(),
    ];
    let f = ir.module.add_function(
        "archc_sgemm_kernel",
        ir.ctx.void_type().fn_type(&params, false),
        Some(Linkage::Internal),
    );
    // Kept out of line so the register allocator sees only the tile, not the block loops.
    ir.add_fn_attrs(f, &["noinline"]);
    ir.mark_noalias(f, &[1, 2, 3]);
    ir.b.position_at_end(ir.ctx.append_basic_block(f, "entry"));
    let (kc, ap, bp, c, ldc) = (
        ir.param_int(f, 0)?,
        ir.param_ptr(f, 1)?,
        ir.param_ptr(f, 2)?,
        ir.param_ptr(f, 3)?,
        ir.param_int(f, 4)?,
    );
    let accumulate = ir.param_int(f, 5)?;
    let (mr, nr) = (ir.param_int(f, 6)?, ir.param_int(f, 7)?);
    let vt = ir.f32.vec_type(t.lanes);
    let vectors = (t.nr / t.lanes) as usize;
    let rows = t.mr as usize;
    let tile =
        ir.b.build_array_alloca(ir.f32, ir.int((t.mr * t.nr) as u64), "tile")?;
    // C's rows are far apart (ldc) and cold; fetch them now so the update after the k
    // loop does not wait on memory. Each row's first and last element covers its lines.
    for r in 0..t.mr as u64 {
        let row = ir.mul(ir.int(r), ldc)?;
        for col in [0, t.nr as u64 - 1] {
            ir.prefetch(c, ir.add(row, ir.int(col))?, true)?;
        }
    }

    // One step of k: NR/lanes vectors of B, MR broadcasts of A, MR·NR/lanes FMAs.
    let step =
        |k: IntValue<'ctx>, acc: &[BasicValueEnum<'ctx>]| -> IrResult<Vec<BasicValueEnum<'ctx>>> {
            let brow = ir.at(bp, ir.mul(k, ir.int(t.nr as u64))?)?;
            let bv = (0..vectors)
                .map(|v| ir.load_vec(vt, ir.at(brow, ir.int((v as u32 * t.lanes) as u64))?))
                .collect::<IrResult<Vec<_>>>()?;
            let acol = ir.at(ap, ir.mul(k, ir.int(t.mr as u64))?)?;
            let mut next = Vec::with_capacity(acc.len());
            for r in 0..rows {
                let a = ir.splat(vt, ir.load_f32(ir.at(acol, ir.int(r as u64))?)?)?;
                for (v, b) in bv.iter().enumerate() {
                    let sum = acc[r * vectors + v].into_vector_value();
                    next.push(ir.fmuladd(a, *b, sum)?.into());
                }
            }
            Ok(next)
        };
    let zeros: Vec<BasicValueEnum<'ctx>> = vec![vt.const_zero().into(); rows * vectors];
    let (k_done, acc) = ir.carried_loop(
        f,
        "k4",
        WholeSteps {
            start: ir.int(0),
            limit: kc,
            step: UNROLL as u64,
        },
        &zeros,
        |k, acc| {
            let mut acc = acc.to_vec();
            for u in 0..UNROLL {
                acc = step(ir.add(k, ir.int(u as u64))?, &acc)?;
            }
            Ok(acc)
        },
    )?;
    let (_, acc) = ir.carried_loop(
        f,
        "k1",
        WholeSteps {
            start: k_done,
            limit: kc,
            step: 1,
        },
        &acc,
        |k, acc| step(k, acc),
    )?;

    let acc: Vec<VectorValue<'ctx>> = acc.iter().map(|v| v.into_vector_value()).collect();
    let tile_shape = (t.lanes, t.mr, t.nr);
    store_tile(ir, f, tile_shape, &acc, tile, c, ldc, accumulate, (mr, nr))?;
    ir.b.build_return(None)?;
    Ok(f)
}

/// Writes an MR×NR tile of results (`acc[r · NR/lanes + v]`: row r, columns v·lanes..)
/// into C at `c` — stored, or added to C where `accumulate` — as `shape` (lanes, MR, NR)
/// says: a full tile with vector loads and stores, an edge tile (`used` = mr × nr)
/// through the stack tile `tile` (MR·NR floats), writing only its mr×nr.
#[allow(clippy::too_many_arguments)]
pub(crate) fn store_tile<'ctx>(
    ir: &Ir<'ctx>,
    f: FunctionValue<'ctx>,
    shape: (u32, u32, u32),
    acc: &[VectorValue<'ctx>],
    tile: PointerValue<'ctx>,
    c: PointerValue<'ctx>,
    ldc: IntValue<'ctx>,
    accumulate: IntValue<'ctx>,
    used: (IntValue<'ctx>, IntValue<'ctx>),
) -> IrResult<()> {
    let (lanes, tmr, tnr) = shape;
    let (mr, nr) = used;
    let rows = tmr as usize;
    let vectors = (tnr / lanes) as usize;
    let vt = ir.f32.vec_type(lanes);
    let full = ir.b.build_and(
        ir.eq(mr, ir.int(tmr as u64))?,
        ir.eq(nr, ir.int(tnr as u64))?,
        "full",
    )?;
    let acc_at = |r: usize, v: usize| acc[r * vectors + v];
    ir.if_else(
        f,
        "tile",
        full,
        || {
            let write = |add: bool| -> IrResult<()> {
                for r in 0..rows {
                    let crow = ir.at(c, ir.mul(ir.int(r as u64), ldc)?)?;
                    for v in 0..vectors {
                        let p = ir.at(crow, ir.int((v as u32 * lanes) as u64))?;
                        let mut x = acc_at(r, v);
                        if add {
                            x = ir.b.build_float_add(ir.load_vec(vt, p)?, x, "")?;
                        }
                        ir.store(p, x)?;
                    }
                }
                Ok(())
            };
            ir.if_else(f, "acc", accumulate, || write(true), || write(false))
        },
        || {
            for r in 0..rows {
                for v in 0..vectors {
                    let idx = (r as u32 * tnr + v as u32 * lanes) as u64;
                    ir.store(ir.at(tile, ir.int(idx))?, acc_at(r, v))?;
                }
            }
            ir.for_range(f, "r", ir.int(0), mr, 1, |r| {
                let crow = ir.at(c, ir.mul(r, ldc)?)?;
                let trow = ir.at(tile, ir.mul(r, ir.int(tnr as u64))?)?;
                ir.for_range(f, "j", ir.int(0), nr, 1, |j| {
                    let p = ir.at(crow, j)?;
                    let x = ir.load_f32(ir.at(trow, j)?)?.into_float_value();
                    let old = ir.load_f32(p)?.into_float_value();
                    let sum = ir.b.build_float_add(old, x, "")?;
                    let y = ir.b.build_select(accumulate, sum, x, "")?;
                    ir.store(p, y)
                })
            })
        },
    )
}

/// A matmul routine's function and parameters: `name(m, n, k, a, lda, b, ldb, c, ldc,
/// work)`, the signature every driver shares.
pub(crate) struct MatmulFn<'ctx> {
    pub f: FunctionValue<'ctx>,
    pub m: IntValue<'ctx>,
    pub n: IntValue<'ctx>,
    pub k: IntValue<'ctx>,
    pub a: PointerValue<'ctx>,
    pub lda: IntValue<'ctx>,
    pub b: PointerValue<'ctx>,
    pub ldb: IntValue<'ctx>,
    pub c: PointerValue<'ctx>,
    pub ldc: IntValue<'ctx>,
    pub work: PointerValue<'ctx>,
}

/// Declares matmul routine `name` (with `linkage`) and positions the builder in its entry
/// block.
pub(crate) fn matmul_function<'ctx>(
    ir: &Ir<'ctx>,
    name: &str,
    linkage: Option<Linkage>,
) -> IrResult<MatmulFn<'ctx>> {
    let (i64t, ptr) = (ir.i64, ir.ptr);
    let params = [
        i64t.into(),
        i64t.into(),
        i64t.into(),
        ptr.into(),
        i64t.into(),
        ptr.into(),
        i64t.into(),
        ptr.into(),
        i64t.into(),
        ptr.into(),
    ];
    let f = ir
        .module
        .add_function(name, ir.ctx.void_type().fn_type(&params, false), linkage);
    ir.add_fn_attrs(f, &[]);
    ir.mark_noalias(f, &[3, 5, 7, 9]);
    ir.b.position_at_end(ir.ctx.append_basic_block(f, "entry"));
    Ok(MatmulFn {
        f,
        m: ir.param_int(f, 0)?,
        n: ir.param_int(f, 1)?,
        k: ir.param_int(f, 2)?,
        a: ir.param_ptr(f, 3)?,
        lda: ir.param_int(f, 4)?,
        b: ir.param_ptr(f, 5)?,
        ldb: ir.param_int(f, 6)?,
        c: ir.param_ptr(f, 7)?,
        ldc: ir.param_int(f, 8)?,
        work: ir.param_ptr(f, 9)?,
    })
}

/// `archc_sgemm`: the five block loops (jc over NC, pc over KC with B packed, ic over MC
/// with A packed, jr over NR, ir over MR) around the microkernel. The first KC block
/// stores into C, later ones accumulate, so C needs no zeroing (k = 0 is the caller's).
#[allow(clippy::too_many_arguments)]
pub(crate) fn emit_driver<'ctx>(
    ir: &Ir<'ctx>,
    t: &SgemmTiles,
    pack_a: FunctionValue<'ctx>,
    pack_b: FunctionValue<'ctx>,
    kernel: FunctionValue<'ctx>,
    symbol: &str,
    transposed_a: bool,
    transposed_b: bool,
    quant: Option<arch_runtime::gguf::GgmlType>,
) -> IrResult<FunctionValue<'ctx>> {
    let MatmulFn {
        f,
        m,
        n,
        k,
        a,
        lda,
        b,
        ldb,
        c,
        ldc,
        work,
    } = matmul_function(ir, symbol, None)?;
    let ap = work;
    let bp = ir.at(work, ir.int(t.packed_a_floats() as u64))?;
    let int = |v: u32| ir.int(v as u64);
    ir.for_range(f, "jc", ir.int(0), n, t.nc as u64, |jc| {
        let nc = ir.min(int(t.nc), ir.sub(n, jc)?)?;
        ir.for_range(f, "pc", ir.int(0), k, t.kc as u64, |pc| {
            let kc = ir.min(int(t.kc), ir.sub(k, pc)?)?;
            let accumulate =
                ir.b.build_int_compare(IntPredicate::NE, pc, ir.int(0), "acc")?;
            let bsrc = if let Some(ty) = quant {
                // Rows of blocks: the block holding value pc of row jc.
                super::quant_ir::block_at(ir, ty, b, ir.mad(jc, ldb, pc)?)?
            } else if transposed_b {
                ir.at(b, ir.mad(jc, ldb, pc)?)?
            } else {
                ir.at(b, ir.mad(pc, ldb, jc)?)?
            };
            ir.b.build_call(
                pack_b,
                &[kc.into(), nc.into(), bsrc.into(), ldb.into(), bp.into()],
                "",
            )?;
            ir.for_range(f, "ic", ir.int(0), m, t.mc as u64, |ic| {
                let mc = ir.min(int(t.mc), ir.sub(m, ic)?)?;
                let asrc = if transposed_a {
                    ir.at(a, ir.mad(pc, lda, ic)?)?
                } else {
                    ir.at(a, ir.mad(ic, lda, pc)?)?
                };
                ir.b.build_call(
                    pack_a,
                    &[mc.into(), kc.into(), asrc.into(), lda.into(), ap.into()],
                    "",
                )?;
                ir.for_range(f, "jr", ir.int(0), nc, t.nr as u64, |jr| {
                    let nr = ir.min(int(t.nr), ir.sub(nc, jr)?)?;
                    let bpanel = ir.at(bp, ir.mul(jr, kc)?)?;
                    ir.for_range(f, "ir", ir.int(0), mc, t.mr as u64, |i| {
                        let mr = ir.min(int(t.mr), ir.sub(mc, i)?)?;
                        let apanel = ir.at(ap, ir.mul(i, kc)?)?;
                        let crow = ir.mad(ir.add(ic, i)?, ldc, ir.add(jc, jr)?)?;
                        let ctile = ir.at(c, crow)?;
                        let args = [
                            kc.into(),
                            apanel.into(),
                            bpanel.into(),
                            ctile.into(),
                            ldc.into(),
                            accumulate.into(),
                            mr.into(),
                            nr.into(),
                        ];
                        ir.b.build_call(kernel, &args, "")?;
                        Ok(())
                    })
                })
            })
        })
    })?;
    ir.b.build_return(None)?;
    Ok(f)
}

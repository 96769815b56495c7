//! Matrices → packed panels, as LLVM IR for the generated matmul (`sgemm_ir`): A into
//! MR-row panels, B into NR-column panels, both zero-padded to whole panels so the
//! microkernel never sees a ragged edge in k-loop data.

use super::ir::{Ir, IrResult, WholeSteps};
use super::sgemm_ir::SgemmTiles;
use inkwell::module::Linkage;
use inkwell::types::VectorType;
use inkwell::values::{BasicValueEnum, FunctionValue, IntValue, PointerValue};
use inkwell::IntPredicate;

/// An internal `void name(i64 rows, i64 cols, const float *src, i64 ld, float *dst)` with
/// its entry block current, and its parameters: the signature every packer shares.
pub(crate) fn packer<'ctx>(ir: &Ir<'ctx>, name: &str) -> IrResult<Packer<'ctx>> {
    let (i64t, ptr) = (ir.i64, ir.ptr);
    let ty = ir.ctx.void_type().fn_type(
        &[
            i64t.into(),
            i64t.into(),
            ptr.into(),
            i64t.into(),
            ptr.into(),
        ],
        false,
    );
    let f = ir.module.add_function(name, ty, Some(Linkage::Internal));
    ir.add_fn_attrs(f, &[]);
    ir.mark_noalias(f, &[2, 4]);
    ir.b.position_at_end(ir.ctx.append_basic_block(f, "entry"));
    Ok(Packer {
        f,
        rows: ir.param_int(f, 0)?,
        cols: ir.param_int(f, 1)?,
        src: ir.param_ptr(f, 2)?,
        ld: ir.param_int(f, 3)?,
        dst: ir.param_ptr(f, 4)?,
    })
}

pub(crate) struct Packer<'ctx> {
    pub f: FunctionValue<'ctx>,
    pub rows: IntValue<'ctx>,
    pub cols: IntValue<'ctx>,
    pub src: PointerValue<'ctx>,
    pub ld: IntValue<'ctx>,
    pub dst: PointerValue<'ctx>,
}

/// Rows of B that `pack_b` copies per sweep across the panels.
const PACK_B_ROWS: u64 = 8;

/// `pack_a(mc, kc, a, lda, ap)`: A[0..mc, 0..kc] → ⌈mc/MR⌉ panels, each KC×MR with the MR
/// values of one k adjacent (`ap[panel·MR·kc + k·MR + r]`); rows past `mc` are zero.
pub(crate) fn emit_pack_a<'ctx>(ir: &Ir<'ctx>, t: &SgemmTiles) -> IrResult<FunctionValue<'ctx>> {
    let Packer {
        f,
        rows: mc,
        cols: kc,
        src: a,
        ld: lda,
        dst: ap,
    } = packer(ir, "archc_sgemm_pack_a")?;
    let mr_c = ir.int(t.mr as u64);
    ir.for_range(f, "ir", ir.int(0), mc, t.mr as u64, |i0| {
        let rows = ir.min(mr_c, ir.sub(mc, i0)?)?;
        let panel = ir.at(ap, ir.mul(i0, kc)?)?;
        let row_ptr = |r: IntValue<'ctx>| -> IrResult<PointerValue<'ctx>> {
            ir.at(a, ir.mul(ir.add(i0, r)?, lda)?)
        };
        ir.if_else(
            f,
            "full",
            ir.eq(rows, mr_c)?,
            || {
                // Whole panel: MR row pointers, one pass over k copying a column of MR.
                let srcs = (0..t.mr)
                    .map(|r| row_ptr(ir.int(r as u64)))
                    .collect::<IrResult<Vec<_>>>()?;
                ir.for_range(f, "k", ir.int(0), kc, 1, |k| {
                    for (r, src) in srcs.iter().enumerate() {
                        let v = ir.load_f32(ir.at(*src, k)?)?;
                        ir.store(ir.at(panel, ir.mad(k, mr_c, ir.int(r as u64))?)?, v)?;
                    }
                    Ok(())
                })
            },
            || {
                // Last panel: zero it, then copy the rows that exist.
                let bytes = ir.mul(ir.mul(kc, mr_c)?, ir.int(4))?;
                ir.b.build_memset(panel, 4, ir.ctx.i8_type().const_zero(), bytes)?;
                ir.for_range(f, "r", ir.int(0), rows, 1, |r| {
                    let src = row_ptr(r)?;
                    ir.for_range(f, "k", ir.int(0), kc, 1, |k| {
                        let v = ir.load_f32(ir.at(src, k)?)?;
                        ir.store(ir.at(panel, ir.mad(k, mr_c, r)?)?, v)
                    })
                })
            },
        )
    })?;
    ir.b.build_return(None)?;
    Ok(f)
}

/// `pack_at(mc, kc, a, lda, ap)`: the same panels as `pack_a` from an A stored [k, m]
/// (element (i, k) at `a[k·lda + i]`): each k's MR values are adjacent in the source too.
pub(crate) fn emit_pack_at<'ctx>(ir: &Ir<'ctx>, t: &SgemmTiles) -> IrResult<FunctionValue<'ctx>> {
    let Packer {
        f,
        rows: mc,
        cols: kc,
        src: a,
        ld: lda,
        dst: ap,
    } = packer(ir, "archc_sgemm_pack_at")?;
    let mr_c = ir.int(t.mr as u64);
    ir.for_range(f, "ir", ir.int(0), mc, t.mr as u64, |i0| {
        let rows = ir.min(mr_c, ir.sub(mc, i0)?)?;
        let panel = ir.at(ap, ir.mul(i0, kc)?)?;
        ir.if_else(
            f,
            "full",
            ir.eq(rows, mr_c)?,
            || {
                ir.for_range(f, "k", ir.int(0), kc, 1, |k| {
                    let src = ir.at(a, ir.mad(k, lda, i0)?)?;
                    for r in 0..t.mr {
                        let v = ir.load_f32(ir.at(src, ir.int(r as u64))?)?;
                        ir.store(ir.at(panel, ir.mad(k, mr_c, ir.int(r as u64))?)?, v)?;
                    }
                    Ok(())
                })
            },
            || {
                let bytes = ir.mul(ir.mul(kc, mr_c)?, ir.int(4))?;
                ir.b.build_memset(panel, 4, ir.ctx.i8_type().const_zero(), bytes)?;
                ir.for_range(f, "k", ir.int(0), kc, 1, |k| {
                    let src = ir.at(a, ir.mad(k, lda, i0)?)?;
                    ir.for_range(f, "r", ir.int(0), rows, 1, |r| {
                        let v = ir.load_f32(ir.at(src, r)?)?;
                        ir.store(ir.at(panel, ir.mad(k, mr_c, r)?)?, v)
                    })
                })
            },
        )
    })?;
    ir.b.build_return(None)?;
    Ok(f)
}

/// `pack_b(kc, nc, b, ldb, bp)`: B[0..kc, 0..nc] → ⌈nc/NR⌉ panels, each KC×NR with one
/// row of NR values per k (`bp[panel·NR·kc + k·NR + j]`); columns past `nc` are zero.
///
/// Rows of B are ldb apart, too far for the hardware prefetcher to follow down a panel,
/// so whole panels are filled PACK_B_ROWS rows at a time, sweeping across B: that reads
/// PACK_B_ROWS sequential streams and writes PACK_B_ROWS adjacent rows of each panel.
pub(crate) fn emit_pack_b<'ctx>(ir: &Ir<'ctx>, t: &SgemmTiles) -> IrResult<FunctionValue<'ctx>> {
    let Packer {
        f,
        rows: kc,
        cols: nc,
        src: b,
        ld: ldb,
        dst: bp,
    } = packer(ir, "archc_sgemm_pack_b")?;
    let vt = ir.f32.vec_type(t.lanes);
    let nr_c = ir.int(t.nr as u64);
    let vectors = t.nr / t.lanes;
    // Row k of the panel starting at column j0, loaded whole or (edge) under a lane mask.
    let copy_row = |k: IntValue<'ctx>, j0: IntValue<'ctx>, valid: Option<IntValue<'ctx>>| {
        let src = ir.at(b, ir.mad(k, ldb, j0)?)?;
        let dst = ir.at(bp, ir.mad(j0, kc, ir.mul(k, nr_c)?)?)?;
        for v in 0..vectors {
            let off = ir.int((v * t.lanes) as u64);
            let x = match valid {
                Some(cols) => masked_load(ir, vt, ir.at(src, off)?, v * t.lanes, cols)?,
                None => ir.load_vec(vt, ir.at(src, off)?)?.into(),
            };
            ir.store(ir.at(dst, off)?, x)?;
        }
        IrResult::Ok(())
    };
    let whole = ir.mul(ir.b.build_int_signed_div(nc, nr_c, "")?, nr_c)?;
    let rows = WholeSteps {
        start: ir.int(0),
        limit: kc,
        step: PACK_B_ROWS,
    };
    let (k_rest, _) = ir.carried_loop(f, "kg", rows, &[], |k0, _| {
        ir.for_range(f, "jr", ir.int(0), whole, t.nr as u64, |j0| {
            (0..PACK_B_ROWS).try_for_each(|g| copy_row(ir.add(k0, ir.int(g))?, j0, None))
        })?;
        Ok(vec![])
    })?;
    ir.for_range(f, "kr", k_rest, kc, 1, |k| {
        ir.for_range(f, "jr", ir.int(0), whole, t.nr as u64, |j0| {
            copy_row(k, j0, None)
        })
    })?;
    let edge =
        ir.b.build_int_compare(IntPredicate::SLT, whole, nc, "edge")?;
    ir.if_else(
        f,
        "edge",
        edge,
        || {
            let cols = ir.sub(nc, whole)?;
            ir.for_range(f, "k", ir.int(0), kc, 1, |k| copy_row(k, whole, Some(cols)))
        },
        || Ok(()),
    )?;
    ir.b.build_return(None)?;
    Ok(f)
}

/// `pack_bt(kc, nc, b, ldb, bp)`: the same panels as `pack_b` from a B stored transposed,
/// [n, k] with rows `ldb` apart (an `nn.Linear` weight): element (k, j) is `b[j·ldb + k]`.
/// Each stored row is read sequentially and scattered down one panel column.
pub(crate) fn emit_pack_bt<'ctx>(ir: &Ir<'ctx>, t: &SgemmTiles) -> IrResult<FunctionValue<'ctx>> {
    let Packer {
        f,
        rows: kc,
        cols: nc,
        src: b,
        ld: ldb,
        dst: bp,
    } = packer(ir, "archc_sgemm_pack_bt")?;
    let nr_c = ir.int(t.nr as u64);
    let lanes = t.lanes as u64;
    let vt = ir.f32.vec_type(t.lanes);
    ir.for_range(f, "jp", ir.int(0), nc, t.nr as u64, |j0| {
        let cols = ir.min(nr_c, ir.sub(nc, j0)?)?;
        let panel = ir.at(bp, ir.mul(j0, kc)?)?;
        let full = ir.eq(cols, nr_c)?;
        ir.if_else(
            f,
            "full",
            full,
            || {
                // LANES×LANES blocks: LANES rows of B (columns of the panel) loaded as
                // vectors, transposed in registers, stored as panel rows.
                let steps = WholeSteps {
                    start: ir.int(0),
                    limit: kc,
                    step: lanes,
                };
                let (k_rest, _) = ir.carried_loop(f, "kb", steps, &[], |k0, _| {
                    for h in 0..(t.nr / t.lanes) as u64 {
                        let rows = (0..lanes)
                            .map(|r| {
                                let row = ir.add(j0, ir.int(h * lanes + r))?;
                                let p = ir.at(b, ir.mad(row, ldb, k0)?)?;
                                ir.load_vec(vt, p)
                            })
                            .collect::<IrResult<Vec<_>>>()?;
                        let cols = transpose(ir, rows)?;
                        for (kk, v) in cols.into_iter().enumerate() {
                            let k = ir.add(k0, ir.int(kk as u64))?;
                            let dst = ir.at(panel, ir.mad(k, nr_c, ir.int(h * lanes))?)?;
                            ir.store(dst, v)?;
                        }
                    }
                    Ok(vec![])
                })?;
                ir.for_range(f, "kr", k_rest, kc, 1, |k| {
                    for jj in 0..t.nr as u64 {
                        let src = ir.at(b, ir.mad(ir.add(j0, ir.int(jj))?, ldb, k)?)?;
                        let v = ir.load_f32(src)?;
                        ir.store(ir.at(panel, ir.mad(k, nr_c, ir.int(jj))?)?, v)?;
                    }
                    Ok(())
                })
            },
            || {
                // The last, partial panel: zero it, then copy the columns that exist.
                let bytes = ir.mul(ir.mul(kc, nr_c)?, ir.int(4))?;
                ir.b.build_memset(panel, 4, ir.ctx.i8_type().const_zero(), bytes)?;
                ir.for_range(f, "jj", ir.int(0), cols, 1, |jj| {
                    let src = ir.at(b, ir.mul(ir.add(j0, jj)?, ldb)?)?;
                    ir.for_range(f, "k", ir.int(0), kc, 1, |k| {
                        let v = ir.load_f32(ir.at(src, k)?)?;
                        ir.store(ir.at(panel, ir.mad(k, nr_c, jj)?)?, v)
                    })
                })
            },
        )
    })?;
    ir.b.build_return(None)?;
    Ok(f)
}

/// Transposes a square block held as one vector per row (as many rows as lanes): log2(L)
/// rounds of interleaving rows i and i + L/2 (the perfect shuffle), which LLVM lowers to
/// unpack and permute instructions.
pub(crate) fn transpose<'ctx>(
    ir: &Ir<'ctx>,
    mut rows: Vec<inkwell::values::VectorValue<'ctx>>,
) -> IrResult<Vec<inkwell::values::VectorValue<'ctx>>> {
    let l = rows.len();
    let i32t = ir.ctx.i32_type();
    let mask = |hi: bool| {
        let base = if hi { l / 2 } else { 0 };
        let idx: Vec<IntValue<'ctx>> = (0..l)
            .map(|x| {
                let src = base + x / 2 + if x % 2 == 1 { l } else { 0 };
                i32t.const_int(src as u64, false)
            })
            .collect();
        VectorType::const_vector(&idx)
    };
    let (lo, hi) = (mask(false), mask(true));
    let mut round = 1;
    while round < l {
        let mut next = Vec::with_capacity(l);
        for i in 0..l / 2 {
            let (a, b) = (rows[i], rows[i + l / 2]);
            next.push(ir.b.build_shuffle_vector(a, b, lo, "")?);
            next.push(ir.b.build_shuffle_vector(a, b, hi, "")?);
        }
        rows = next;
        round *= 2;
    }
    Ok(rows)
}

/// Loads the lanes `first + l < valid` of a vector at `p`, zero elsewhere, without
/// touching memory past the valid ones.
fn masked_load<'ctx>(
    ir: &Ir<'ctx>,
    vt: VectorType<'ctx>,
    p: PointerValue<'ctx>,
    first: u32,
    valid: IntValue<'ctx>,
) -> IrResult<BasicValueEnum<'ctx>> {
    let lanes: Vec<IntValue<'ctx>> = (0..vt.get_size())
        .map(|l| ir.int((first + l) as u64))
        .collect();
    let index = VectorType::const_vector(&lanes);
    let limit = ir.splat(ir.i64.vec_type(vt.get_size()), valid.into())?;
    let mask =
        ir.b.build_int_compare(IntPredicate::ULT, index, limit, "mask")?;
    let align = ir.ctx.i32_type().const_int(4, false);
    ir.intrinsic(
        "llvm.masked.load",
        &[vt.into(), ir.ptr.into()],
        &[p.into(), align.into(), mask.into(), vt.const_zero().into()],
    )
}

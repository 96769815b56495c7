//! The matrix–vector product of decoding: `C[i, j] = Σ_k A[i, k] · B[j, k]` for a few rows
//! of A (one token per sequence of the batch) against B stored row-major [n, k], as
//! `nn.Linear` weights are. Packing B (what the blocked matmul does) would read and write
//! every weight once more per call; here each row of B streams from memory once, straight
//! into dot products with every row of A (which stays in L1), so a decode step costs one
//! pass over the weights.

use super::ir::{Ir, IrResult, WholeSteps};
use super::sgemm_ir::SgemmTiles;
use inkwell::module::Linkage;
use inkwell::values::{BasicValueEnum, FunctionValue};

/// Rows of A up to which the matmul kernels take this path.
pub const GEMV_MAX_ROWS: u64 = 8;

/// Independent vector accumulators per dot product (hides the FMA latency).
const ACCUMULATORS: u32 = 4;

/// `archc_gemv_bt(rows, cols, k, a, lda, b, ldb, c, ldc)`.
pub(crate) fn emit_gemv_bt<'ctx>(ir: &Ir<'ctx>, t: &SgemmTiles) -> IrResult<FunctionValue<'ctx>> {
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
    ];
    let f = ir.module.add_function(
        "archc_gemv_bt",
        ir.ctx.void_type().fn_type(&params, false),
        Some(Linkage::Internal),
    );
    ir.add_fn_attrs(f, &["noinline"]);
    ir.mark_noalias(f, &[3, 5, 7]);
    ir.b.position_at_end(ir.ctx.append_basic_block(f, "entry"));
    let (rows, cols, k) = (
        ir.param_int(f, 0)?,
        ir.param_int(f, 1)?,
        ir.param_int(f, 2)?,
    );
    let (a, lda) = (ir.param_ptr(f, 3)?, ir.param_int(f, 4)?);
    let (b, ldb) = (ir.param_ptr(f, 5)?, ir.param_int(f, 6)?);
    let (c, ldc) = (ir.param_ptr(f, 7)?, ir.param_int(f, 8)?);
    let lanes = t.lanes as u64;
    let vt = ir.f32.vec_type(t.lanes);
    let zero_v: BasicValueEnum = vt.const_zero().into();
    let zero_s: BasicValueEnum = ir.f32.const_zero().into();
    ir.for_range(f, "j", ir.int(0), cols, 1, |j| {
        let brow = ir.at(b, ir.mul(j, ldb)?)?;
        ir.for_range(f, "i", ir.int(0), rows, 1, |i| {
            let arow = ir.at(a, ir.mul(i, lda)?)?;
            let wide = lanes * ACCUMULATORS as u64;
            let (kk, accs) = ir.carried_loop(
                f,
                "kv",
                WholeSteps {
                    start: ir.int(0),
                    limit: k,
                    step: wide,
                },
                &vec![zero_v; ACCUMULATORS as usize],
                |kk, cur| {
                    let mut next = Vec::with_capacity(cur.len());
                    for (u, acc) in cur.iter().enumerate() {
                        let at = ir.add(kk, ir.int(u as u64 * lanes))?;
                        let x = ir.load_vec(vt, ir.at(arow, at)?)?;
                        let w = ir.load_vec(vt, ir.at(brow, at)?)?;
                        next.push(ir.fmuladd(x, w, acc.into_vector_value())?.into());
                    }
                    Ok(next)
                },
            )?;
            let mut sum = accs[0].into_vector_value();
            for acc in &accs[1..] {
                sum = ir.b.build_float_add(sum, acc.into_vector_value(), "")?;
            }
            let (kk, acc) = ir.carried_loop(
                f,
                "k1",
                WholeSteps {
                    start: kk,
                    limit: k,
                    step: lanes,
                },
                &[sum.into()],
                |kk, cur| {
                    let x = ir.load_vec(vt, ir.at(arow, kk)?)?;
                    let w = ir.load_vec(vt, ir.at(brow, kk)?)?;
                    Ok(vec![ir.fmuladd(x, w, cur[0].into_vector_value())?.into()])
                },
            )?;
            let (_, tail) = ir.carried_loop(
                f,
                "ks",
                WholeSteps {
                    start: kk,
                    limit: k,
                    step: 1,
                },
                &[zero_s],
                |kk, cur| {
                    let x = ir.load_f32(ir.at(arow, kk)?)?.into_float_value();
                    let w = ir.load_f32(ir.at(brow, kk)?)?.into_float_value();
                    let p = ir.b.build_float_mul(x, w, "")?;
                    Ok(vec![ir
                        .b
                        .build_float_add(cur[0].into_float_value(), p, "")?
                        .into()])
                },
            )?;
            let total = ir.intrinsic(
                "llvm.vector.reduce.fadd",
                &[vt.into()],
                &[tail[0].into(), acc[0].into()],
            )?;
            ir.store(ir.at(c, ir.mad(i, ldc, j)?)?, total)
        })
    })?;
    ir.b.build_return(None)?;
    Ok(f)
}

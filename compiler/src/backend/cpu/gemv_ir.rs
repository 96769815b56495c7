//! The matrix–vector product of decoding: `C[i, j] = Σ_k A[i, k] · B[j, k]` for a few rows
//! of A (one token per sequence of the batch) against B stored row-major [n, k], as
//! `nn.Linear` weights are. Packing B (what the blocked matmul does) would read and write
//! every weight once more per call; here each row of B streams from memory once, straight
//! into dot products with every row of A (which stays in L1), so a decode step costs one
//! pass over the weights.

use super::ir::{Ir, IrResult, WholeSteps};
use super::sgemm_ir::SgemmTiles;
use inkwell::module::Linkage;
use inkwell::values::{BasicValue, BasicValueEnum, FastMathFlags, FunctionValue};

/// Rows of A up to which the matmul kernels take this path.
pub const GEMV_MAX_ROWS: u64 = 8;

/// Columns computed together: independent accumulators (hiding the FMA latency) that
/// share each load of A.
const COLUMNS: usize = 4;

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
    // Columns `j .. j + width` of row i: `width` rows of B against one row of A, one
    // accumulator each, so every load of A feeds `width` FMAs.
    let block = |j, width: usize| -> IrResult<()> {
        let brows = (0..width)
            .map(|w| ir.at(b, ir.mul(ir.add(j, ir.int(w as u64))?, ldb)?))
            .collect::<IrResult<Vec<_>>>()?;
        ir.for_range(f, "i", ir.int(0), rows, 1, |i| {
            let arow = ir.at(a, ir.mul(i, lda)?)?;
            let (kk, accs) = ir.carried_loop(
                f,
                "kv",
                WholeSteps {
                    start: ir.int(0),
                    limit: k,
                    step: lanes,
                },
                &vec![zero_v; width],
                |kk, cur| {
                    let x = ir.load_vec(vt, ir.at(arow, kk)?)?;
                    let mut next = Vec::with_capacity(width);
                    for (w, acc) in cur.iter().enumerate() {
                        let v = ir.load_vec(vt, ir.at(brows[w], kk)?)?;
                        next.push(ir.fmuladd(x, v, acc.into_vector_value())?.into());
                    }
                    Ok(next)
                },
            )?;
            let (_, tails) = ir.carried_loop(
                f,
                "ks",
                WholeSteps {
                    start: kk,
                    limit: k,
                    step: 1,
                },
                &vec![zero_s; width],
                |kk, cur| {
                    let x = ir.load_f32(ir.at(arow, kk)?)?.into_float_value();
                    let mut next = Vec::with_capacity(width);
                    for (w, acc) in cur.iter().enumerate() {
                        let v = ir.load_f32(ir.at(brows[w], kk)?)?.into_float_value();
                        let p = ir.b.build_float_mul(x, v, "")?;
                        next.push(ir.b.build_float_add(acc.into_float_value(), p, "")?.into());
                    }
                    Ok(next)
                },
            )?;
            for w in 0..width {
                // A tree sum of the lanes (reassociation allowed), not a chain of adds.
                let total = ir.intrinsic(
                    "llvm.vector.reduce.fadd",
                    &[vt.into()],
                    &[tails[w].into(), accs[w].into()],
                )?;
                if let Some(inst) = total.as_instruction_value() {
                    let _ = inst.set_fast_math_flags(FastMathFlags::AllowReassoc);
                }
                let col = ir.add(j, ir.int(w as u64))?;
                ir.store(ir.at(c, ir.mad(i, ldc, col)?)?, total)?;
            }
            Ok(())
        })
    };
    let (j, _) = ir.carried_loop(
        f,
        "j4",
        WholeSteps {
            start: ir.int(0),
            limit: cols,
            step: COLUMNS as u64,
        },
        &[],
        |j, _| {
            block(j, COLUMNS)?;
            Ok(vec![])
        },
    )?;
    ir.for_range(f, "j1", j, cols, 1, |j| block(j, 1))?;
    ir.b.build_return(None)?;
    Ok(f)
}

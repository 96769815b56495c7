//! The matrix–vector product of decoding: `C[i, j] = Σ_k A[i, k] · B[j, k]` for a few rows
//! of A (one token per sequence of the batch) against B stored row-major [n, k], as
//! `nn.Linear` weights are. Packing B (what the blocked matmul does) would read and write
//! every weight once more per call; here each row of B streams from memory once, straight
//! into dot products with every row of A (which stays in L1), so a decode step costs one
//! pass over the weights.

use super::ir::{Ir, IrResult, WholeSteps};
use super::sgemm_ir::SgemmTiles;
use inkwell::module::Linkage;
use inkwell::values::{
    BasicValue, BasicValueEnum, FastMathFlags, FunctionValue, IntValue, PointerValue, VectorValue,
};

/// Rows of A up to which the matmul kernels take this path.
pub const GEMV_MAX_ROWS: u64 = 8;

/// How far ahead of its reads the routine asks for each row of B, into the last-level
/// cache (`prefetcht2`), by rows of A: the demand stream and the hardware prefetchers
/// alone leave too few misses in flight to reach the memory bandwidth, and the more FMAs
/// each load of B feeds the slower the stream goes, so the shorter the distance that
/// covers the same time. GPT-2 small decode steps (`archc bench specs/gpt2.arch --mode
/// decode --threads 2`), on the Intel Xeon of docs/PERF.md: batch 8 35.9 → 28.6 ms with
/// 8 KiB, batch 4 24.8 → 22.2, batch 1 unchanged (4 KiB). On the AMD EPYC (Zen 4) of a
/// later session, medians of five or six alternating runs: batch 1 none 20.2 ms, 16 KiB
/// 17.0, 32 KiB 17.0, 128 KiB 14.3; batch 8 8 KiB 27.8, 32 KiB 21.6, 128 KiB 25.2.
fn prefetch_bytes(rows: usize) -> u64 {
    if rows == 1 {
        128 << 10
    } else {
        32 << 10
    }
}

/// The most columns computed together (independent accumulators hiding the FMA latency
/// that share each load of A).
const COLUMNS: usize = 4;

/// A matrix–vector routine's function and parameters: `name(rows, cols, k, a, lda, b,
/// ldb, c, ldc)` — the sgemm's arguments but the scratch.
pub(crate) struct Gemv<'ctx> {
    pub f: FunctionValue<'ctx>,
    pub rows: IntValue<'ctx>,
    pub cols: IntValue<'ctx>,
    pub k: IntValue<'ctx>,
    pub a: PointerValue<'ctx>,
    pub lda: IntValue<'ctx>,
    pub b: PointerValue<'ctx>,
    pub ldb: IntValue<'ctx>,
    pub c: PointerValue<'ctx>,
    pub ldc: IntValue<'ctx>,
}

/// Declares matrix–vector routine `name` and positions the builder in its entry block.
pub(crate) fn gemv_function<'ctx>(ir: &Ir<'ctx>, name: &str) -> IrResult<Gemv<'ctx>> {
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
        name,
        ir.ctx.void_type().fn_type(&params, false),
        Some(Linkage::Internal),
    );
    ir.add_fn_attrs(f, &["noinline"]);
    ir.mark_noalias(f, &[3, 5, 7]);
    ir.b.position_at_end(ir.ctx.append_basic_block(f, "entry"));
    Ok(Gemv {
        f,
        rows: ir.param_int(f, 0)?,
        cols: ir.param_int(f, 1)?,
        k: ir.param_int(f, 2)?,
        a: ir.param_ptr(f, 3)?,
        lda: ir.param_int(f, 4)?,
        b: ir.param_ptr(f, 5)?,
        ldb: ir.param_int(f, 6)?,
        c: ir.param_ptr(f, 7)?,
        ldc: ir.param_int(f, 8)?,
    })
}

/// `archc_gemv_bt(rows, cols, k, a, lda, b, ldb, c, ldc)`.
pub(crate) fn emit_gemv_bt<'ctx>(ir: &Ir<'ctx>, t: &SgemmTiles) -> IrResult<FunctionValue<'ctx>> {
    let g = gemv_function(ir, "archc_gemv_bt")?;
    let Gemv {
        f,
        k,
        a,
        lda,
        b,
        ldb,
        c,
        ldc,
        ..
    } = g;
    let lanes = t.lanes as u64;
    let vt = ir.f32.vec_type(t.lanes);
    let zero_v: BasicValueEnum = vt.const_zero().into();
    let zero_s: BasicValueEnum = ir.f32.const_zero().into();
    // Columns `j .. j + width` of all `r` rows: `width` rows of B against the r rows of A,
    // one accumulator per (row, column), so each load of B feeds r FMAs and each load of A
    // feeds `width`.
    let block = |j, width: usize, r: usize| -> IrResult<()> {
        let brows = (0..width)
            .map(|w| ir.at(b, ir.mul(ir.add(j, ir.int(w as u64))?, ldb)?))
            .collect::<IrResult<Vec<_>>>()?;
        let arows = (0..r)
            .map(|i| ir.at(a, ir.mul(ir.int(i as u64), lda)?))
            .collect::<IrResult<Vec<_>>>()?;
        let (kk, accs) = ir.carried_loop(
            f,
            "kv",
            WholeSteps {
                start: ir.int(0),
                limit: k,
                step: lanes,
            },
            &vec![zero_v; r * width],
            |kk, cur| {
                let ws = brows
                    .iter()
                    .map(|&p| ir.load_vec(vt, ir.at(p, kk)?))
                    .collect::<IrResult<Vec<_>>>()?;
                for &p in &brows {
                    ir.prefetch_to(p, ir.add(kk, ir.int(prefetch_bytes(r) / 4))?, false, 1)?;
                }
                let mut next = Vec::with_capacity(cur.len());
                for &arow in &arows {
                    let x = ir.load_vec(vt, ir.at(arow, kk)?)?;
                    for &w in &ws {
                        let acc = cur[next.len()].into_vector_value();
                        next.push(ir.fmuladd(x, w, acc)?.into());
                    }
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
            &vec![zero_s; r * width],
            |kk, cur| {
                let ws = brows
                    .iter()
                    .map(|&p| Ok(ir.load_f32(ir.at(p, kk)?)?.into_float_value()))
                    .collect::<IrResult<Vec<_>>>()?;
                let mut next = Vec::with_capacity(cur.len());
                for &arow in &arows {
                    let x = ir.load_f32(ir.at(arow, kk)?)?.into_float_value();
                    for &w in &ws {
                        let p = ir.b.build_float_mul(x, w, "")?;
                        let acc = cur[next.len()].into_float_value();
                        next.push(ir.b.build_float_add(acc, p, "")?.into());
                    }
                }
                Ok(next)
            },
        )?;
        for i in 0..r {
            for w in 0..width {
                let n = i * width + w;
                let at = ir.mad(ir.int(i as u64), ldc, ir.add(j, ir.int(w as u64))?)?;
                store_sum(ir, tails[n], accs[n].into_vector_value(), ir.at(c, at)?)?;
            }
        }
        Ok(())
    };
    // One loop nest per row count, its accumulators in registers: as many columns at once
    // as the vector registers hold (32 with AVX-512, 16 otherwise) beside the loads.
    let registers = if t.lanes >= 16 { 24 } else { 12 };
    let mut nests = Vec::new();
    for r in 1..=GEMV_MAX_ROWS as usize {
        nests.push((r, (registers / r).clamp(1, COLUMNS)));
    }
    emit_column_nests(ir, &g, &nests, &block)?;
    ir.b.build_return(None)?;
    Ok(f)
}

/// `c = init + Σ lanes of acc` stored at `c`: a tree sum of the lanes (reassociation
/// allowed), not a chain of adds.
pub(crate) fn store_sum<'ctx>(
    ir: &Ir<'ctx>,
    init: BasicValueEnum<'ctx>,
    acc: VectorValue<'ctx>,
    c: PointerValue<'ctx>,
) -> IrResult<()> {
    let total = ir.intrinsic(
        "llvm.vector.reduce.fadd",
        &[acc.get_type().into()],
        &[init.into(), acc.into()],
    )?;
    if let Some(inst) = total.as_instruction_value() {
        let _ = inst.set_fast_math_flags(FastMathFlags::AllowReassoc);
    }
    ir.store(c, total)
}

/// The routine's body: per row count of `nests` (rows, columns at once), `block(j, width,
/// rows)` over the columns `width` at a time, then the remaining columns one by one.
pub(crate) fn emit_column_nests<'ctx>(
    ir: &Ir<'ctx>,
    g: &Gemv<'ctx>,
    nests: &[(usize, usize)],
    block: &dyn Fn(IntValue<'ctx>, usize, usize) -> IrResult<()>,
) -> IrResult<()> {
    let (f, cols) = (g.f, g.cols);
    emit_row_cases(ir, f, g.rows, nests, &|r, width| {
        let (j, _) = ir.carried_loop(
            f,
            "jw",
            WholeSteps {
                start: ir.int(0),
                limit: cols,
                step: width as u64,
            },
            &[],
            |j, _| {
                block(j, width, r)?;
                Ok(vec![])
            },
        )?;
        if width > 1 {
            ir.for_range(f, "j1", j, cols, 1, |j| block(j, 1, r))?;
        }
        Ok(())
    })
}

/// `if rows == r₀ { nest(r₀) } else if rows == r₁ { … }` over `nests` (row count, columns).
fn emit_row_cases<'ctx>(
    ir: &Ir<'ctx>,
    f: FunctionValue<'ctx>,
    rows: inkwell::values::IntValue<'ctx>,
    nests: &[(usize, usize)],
    nest: &dyn Fn(usize, usize) -> IrResult<()>,
) -> IrResult<()> {
    let Some((&(r, width), rest)) = nests.split_first() else {
        return Ok(());
    };
    let is = ir.eq(rows, ir.int(r as u64))?;
    ir.if_else(
        f,
        &format!("rows{r}"),
        is,
        || nest(r, width),
        || emit_row_cases(ir, f, rows, rest, nest),
    )
}

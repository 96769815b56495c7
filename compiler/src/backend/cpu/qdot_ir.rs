//! Integer dot products for decoding over Q4_K blocks, as llama.cpp computes them — the
//! `int_dots` numerics of a build (`archc … --int-dots`), never the default.
//!
//! `archc_gemv_bt_q4_k_q8` first quantizes each row of A per 256 values to 8 bits
//! (ggml's Q8_K: `d = max|x| / 127`, `q = round(x / d)` to nearest even, and the sums of
//! the q's per 32 values), then takes each block of B as it is stored: the nibbles
//! stay unsigned bytes and meet the activations' bytes in `vpmaddubsw` (u8 × i8 pairs
//! summed to i16), whose pairs `vpmaddwd` sums to i32 times the 6-bit sub-block scales
//! (one `vpdpwssd` with AVX-512 VNNI: LLVM fuses the add). Per block and output, in f32:
//!
//! `y += d_w · d_a · Σ_j sc_j Σ_{i∈j} q4_i · q8_i − dmin_w · Σ_j m_j · (d_a · Σ_{i∈j} q8_i)`
//!
//! Four to five vector instructions per 64 values where the f32 path (`quant_ir`) needs
//! a lookup, a widening and an FMA per 16. The result differs from the f32 product over
//! the dequantized weights by the activations' rounding (relative ~1e-3 on a model's
//! logits), which is why it is a choice of the build and not the default: the contract
//! with transformers (which dequantizes and computes in f32) is 1e-4.
//!
//! The activations' bytes are stored in the order the nibbles come out of a vector of
//! `qs`: a vector of W bytes covers W / 32 chunks of 32 bytes, each chunk holding
//! sub-block 2c in its low nibbles and 2c + 1 in its high ones, so the W bytes of
//! activations against the low nibbles are sub-blocks 2c, 2c + 2, … and those against
//! the high nibbles the odd ones (identity order for W = 32).

use super::gemv_ir::{emit_column_nests, gemv_function, Gemv, GEMV_MAX_ROWS};
use super::ir::{Ir, IrError, IrResult, WholeSteps};
use super::quant_ir::{block_at, byte_at, half, prefetch, q4k_scales_mins, PREFETCH_BYTES};
use arch_runtime::gguf::GgmlType;
use inkwell::types::VectorType;
use inkwell::values::{
    BasicValue, BasicValueEnum, FastMathFlags, FunctionValue, IntValue, PointerValue, VectorValue,
};

/// Values per block of the activations' quantization (ggml's `QK_K`).
const QK: u64 = 256;
/// Values per sub-block (one scale and min of Q4_K, one sum of the activations).
const SUB: u64 = 32;
/// Bytes of A's quantized rows that the routine keeps on its stack at most (rows · k);
/// larger products go to the f32 routine.
const MAX_STACK_BYTES: u64 = 1 << 18;

/// `archc_gemv_bt_q4_k_q8(rows, cols, k, a, lda, b, ldb, c, ldc)`: the integer-dot
/// matrix–vector product over Q4_K blocks, with vectors of `width` bytes (64 with
/// AVX-512BW, 32 with AVX2). Products whose quantized A would not fit
/// [`MAX_STACK_BYTES`] call `fallback` (the f32 routine) instead.
pub(crate) fn emit_gemv_q4k_q8<'ctx>(
    ir: &Ir<'ctx>,
    width: u32,
    fallback: FunctionValue<'ctx>,
) -> IrResult<FunctionValue<'ctx>> {
    if width != 32 && width != 64 {
        return Err(IrError(format!("integer dots in {width}-byte vectors")));
    }
    let g = gemv_function(ir, "archc_gemv_bt_q4_k_q8")?;
    let Gemv {
        f,
        rows,
        cols,
        k,
        a,
        lda,
        b,
        ldb,
        c,
        ldc,
    } = g;
    let fits = ir.b.build_int_compare(
        inkwell::IntPredicate::ULE,
        ir.mul(rows, k)?,
        ir.int(MAX_STACK_BYTES),
        "",
    )?;
    ir.if_else(
        f,
        "fits",
        fits,
        || {
            let q = quantize_rows(ir, &g, width)?;
            emit_dots(ir, &g, width, &q)
        },
        || {
            let args: Vec<inkwell::values::BasicMetadataValueEnum> = [
                rows.into(),
                cols.into(),
                k.into(),
                a.into(),
                lda.into(),
                b.into(),
                ldb.into(),
                c.into(),
                ldc.into(),
            ]
            .to_vec();
            ir.b.build_call(fallback, &args, "")?;
            Ok(())
        },
    )?;
    ir.b.build_return(None)?;
    Ok(f)
}

/// A's rows quantized: `q8` (rows · k bytes, in the order above), `da` (each block's
/// scale, rows · k / 256 f32s) and `bs` (d_a times the sum of each 32 q's, in natural
/// order, rows · k / 32 f32s).
struct Quantized<'ctx> {
    q8: PointerValue<'ctx>,
    da: PointerValue<'ctx>,
    bs: PointerValue<'ctx>,
}

/// Where value `e` (0..256) of a block goes among its quantized bytes.
fn slot(e: u64, width: u64) -> u64 {
    let group = 2 * width;
    let (g, within) = (e / group, e % group);
    let (sub, l) = (within / SUB, within % SUB);
    let (chunk, half) = (sub / 2, sub % 2);
    g * group + (half * (width / SUB) + chunk) * SUB + l
}

/// Quantizes every row of A per 256 values into stack buffers.
fn quantize_rows<'ctx>(ir: &Ir<'ctx>, g: &Gemv<'ctx>, width: u32) -> IrResult<Quantized<'ctx>> {
    let (f, rows, k, a, lda) = (g.f, g.rows, g.k, g.a, g.lda);
    let (i8t, i32t) = (ir.ctx.i8_type(), ir.ctx.i32_type());
    let alloca = |ty: inkwell::types::BasicTypeEnum<'ctx>, n: IntValue<'ctx>| {
        let p = ir.b.build_array_alloca(ty, n, "")?;
        if let Some(inst) = p.as_instruction_value() {
            inst.set_alignment(64).map_err(|e| IrError(e.to_string()))?;
        }
        Ok::<_, IrError>(p)
    };
    let blocks = ir.b.build_int_unsigned_div(k, ir.int(QK), "")?;
    let q8 = alloca(i8t.into(), ir.mul(rows, k)?)?;
    let da = alloca(ir.f32.into(), ir.mul(rows, blocks)?)?;
    let bs = alloca(
        ir.f32.into(),
        ir.mul(ir.mul(rows, blocks)?, ir.int(QK / SUB))?,
    )?;
    // 16 f32 lanes where the vector set has them; the shape of the quantization does
    // not depend on it.
    let lanes = u64::from(width / 4);
    let (vt, it) = (ir.f32.vec_type(lanes as u32), i32t.vec_type(lanes as u32));
    ir.for_range(f, "qi", ir.int(0), rows, 1, |i| {
        let arow = ir.at(a, ir.mul(i, lda)?)?;
        ir.for_range(f, "qb", ir.int(0), k, QK, |k0| {
            let xs = (0..QK / lanes)
                .map(|s| ir.load_vec(vt, ir.at(arow, ir.add(k0, ir.int(s * lanes))?)?))
                .collect::<IrResult<Vec<_>>>()?;
            let mut amax: Option<VectorValue<'ctx>> = None;
            for &x in &xs {
                let ax = ir
                    .intrinsic("llvm.fabs", &[vt.into()], &[x.into()])?
                    .into_vector_value();
                amax = Some(match amax {
                    None => ax,
                    Some(m) => ir
                        .intrinsic("llvm.maxnum", &[vt.into()], &[m.into(), ax.into()])?
                        .into_vector_value(),
                });
            }
            let amax = amax.ok_or_else(|| IrError("an empty block".into()))?;
            let amax = ir
                .intrinsic("llvm.vector.reduce.fmax", &[vt.into()], &[amax.into()])?
                .into_float_value();
            let c127 = ir.f32.const_float(127.0);
            let d = ir.b.build_float_div(amax, c127, "")?;
            let positive = ir.b.build_float_compare(
                inkwell::FloatPredicate::OGT,
                amax,
                ir.f32.const_zero(),
                "",
            )?;
            let id = ir.b.build_select(
                positive,
                ir.b.build_float_div(c127, amax, "")?,
                ir.f32.const_zero(),
                "",
            )?;
            let idv = ir.splat(vt, id)?;
            let blk = ir.add(
                ir.mul(i, blocks)?,
                ir.b.build_int_unsigned_div(k0, ir.int(QK), "")?,
            )?;
            ir.store(ir.at(da, blk)?, d)?;
            let qrow = byte_at(ir, q8, ir.add(ir.mul(i, k)?, k0)?)?;
            let mut sub_sum: Option<VectorValue<'ctx>> = None;
            for (s, &x) in xs.iter().enumerate() {
                let e = s as u64 * lanes;
                let y = ir.b.build_float_mul(x, idv, "")?;
                let y = ir
                    .intrinsic("llvm.rint", &[vt.into()], &[y.into()])?
                    .into_vector_value();
                let qv = ir.b.build_float_to_signed_int(y, it, "")?;
                let bytes =
                    ir.b.build_int_truncate(qv, i8t.vec_type(lanes as u32), "")?;
                let st =
                    ir.b.build_store(byte_at(ir, qrow, ir.int(slot(e, u64::from(width))))?, bytes)?;
                st.set_alignment(1).map_err(|e| IrError(e.to_string()))?;
                sub_sum = Some(match sub_sum {
                    None => qv,
                    Some(acc) => ir.b.build_int_add(acc, qv, "")?,
                });
                if (e + lanes).is_multiple_of(SUB) {
                    let total = ir.intrinsic(
                        "llvm.vector.reduce.add",
                        &[it.into()],
                        &[sub_sum
                            .take()
                            .ok_or_else(|| IrError("no sum".into()))?
                            .into()],
                    )?;
                    let total =
                        ir.b.build_signed_int_to_float(total.into_int_value(), ir.f32, "")?;
                    let at = ir.add(ir.mul(blk, ir.int(QK / SUB))?, ir.int(e / SUB))?;
                    ir.store(ir.at(bs, at)?, ir.b.build_float_mul(total, d, "")?)?;
                }
            }
            Ok(())
        })
    })?;
    Ok(Quantized { q8, da, bs })
}

/// The dot products over the columns, with A quantized in `q`.
fn emit_dots<'ctx>(ir: &Ir<'ctx>, g: &Gemv<'ctx>, width: u32, q: &Quantized<'ctx>) -> IrResult<()> {
    let ty = GgmlType::Q4_K;
    let (f, k, b, ldb, c, ldc) = (g.f, g.k, g.b, g.ldb, g.c, g.ldc);
    let (i8t, i16t, i32t) = (ir.ctx.i8_type(), ir.ctx.i16_type(), ir.ctx.i32_type());
    let w = u64::from(width);
    let lanes = width / 4;
    let (bv, dv, fv) = (
        i8t.vec_type(width),
        i32t.vec_type(lanes),
        ir.f32.vec_type(lanes),
    );
    let f8 = ir.f32.vec_type(8);
    let (per, bytes) = ty.kernel_block();
    let row_bytes = ir.mul(
        ir.b.build_int_unsigned_div(ldb, ir.int(per as u64), "")?,
        ir.int(bytes as u64),
    )?;
    let blocks_per_row = ir.b.build_int_unsigned_div(k, ir.int(QK), "")?;
    let (madd_ub, madd_wd) = if width == 64 {
        (
            "llvm.x86.avx512.pmaddubs.w.512",
            "llvm.x86.avx512.pmaddw.d.512",
        )
    } else {
        ("llvm.x86.avx2.pmadd.ub.sw", "llvm.x86.avx2.pmadd.wd")
    };
    let splat_bytes =
        |v: u64| VectorType::const_vector(&vec![i8t.const_int(v, false); width as usize]);
    let load_bytes = |p: PointerValue<'ctx>| -> IrResult<VectorValue<'ctx>> {
        let v = ir.b.build_load(bv, p, "")?;
        if let Some(inst) = v.as_instruction_value() {
            inst.set_alignment(1).map_err(|e| IrError(e.to_string()))?;
        }
        Ok(v.into_vector_value())
    };
    let chunks = w / SUB;
    let block = |j: IntValue<'ctx>, ncols: usize, r: usize| -> IrResult<()> {
        let brows = (0..ncols)
            .map(|col| byte_at(ir, b, ir.mul(ir.add(j, ir.int(col as u64))?, row_bytes)?))
            .collect::<IrResult<Vec<_>>>()?;
        let qrows = (0..r)
            .map(|i| byte_at(ir, q.q8, ir.mul(ir.int(i as u64), k)?))
            .collect::<IrResult<Vec<_>>>()?;
        // Per (row, column): the d-scaled sums (lanes wide) and the min terms (8 wide).
        let mut init: Vec<BasicValueEnum<'ctx>> = Vec::new();
        for _ in 0..r * ncols {
            init.push(fv.const_zero().into());
            init.push(f8.const_zero().into());
        }
        let (_, accs) = ir.carried_loop(
            f,
            "kb",
            WholeSteps {
                start: ir.int(0),
                limit: k,
                step: QK,
            },
            &init,
            |k0, cur| {
                let mut acc: Vec<VectorValue<'ctx>> =
                    cur.iter().map(|v| v.into_vector_value()).collect();
                let blk = ir.b.build_int_unsigned_div(k0, ir.int(QK), "")?;
                // Per row: d_a and the eight d_a-scaled sums of its q's.
                let mut das = Vec::new();
                let mut sums = Vec::new();
                for i in 0..r {
                    let at = ir.add(ir.mul(ir.int(i as u64), blocks_per_row)?, blk)?;
                    das.push(ir.load_f32(ir.at(q.da, at)?)?.into_float_value());
                    sums.push(ir.load_vec(f8, ir.at(q.bs, ir.mul(at, ir.int(QK / SUB))?)?)?);
                }
                for (col, &brow) in brows.iter().enumerate() {
                    let p = block_at(ir, ty, brow, k0)?;
                    for line in 0..(bytes as u64).div_ceil(64) {
                        prefetch(ir, p, PREFETCH_BYTES + 64 * line)?;
                    }
                    let d = half(ir, p, 0, true)?;
                    let dmin = half(ir, p, 2, true)?;
                    let (sc, m) = q4k_scales_mins(ir, p)?;
                    let sc16 = ir.b.build_int_truncate(sc, i16t.vec_type(8), "")?;
                    let mins = ir.b.build_float_mul(
                        ir.b.build_signed_int_to_float(m, f8, "")?,
                        ir.splat(f8, dmin.into())?,
                        "",
                    )?;
                    let mut sumi = vec![dv.const_zero(); r];
                    for v in 0..128 / w {
                        let raw = load_bytes(byte_at(ir, p, ir.int(16 + v * w))?)?;
                        let lo = ir.b.build_and(raw, splat_bytes(15), "")?;
                        let hi = ir.b.build_right_shift(raw, splat_bytes(4), false, "")?;
                        // Each chunk's sub-block scale over its 16 i16 pairs.
                        let scales = |odd: u64| -> IrResult<VectorValue<'ctx>> {
                            let mask: Vec<IntValue<'ctx>> = (0..chunks)
                                .flat_map(|ch| {
                                    let sub = 2 * (v * chunks + ch) + odd;
                                    std::iter::repeat_n(i32t.const_int(sub, false), 16)
                                })
                                .collect();
                            Ok(ir.b.build_shuffle_vector(
                                sc16,
                                sc16.get_type().get_undef(),
                                VectorType::const_vector(&mask),
                                "",
                            )?)
                        };
                        let (sc_lo, sc_hi) = (scales(0)?, scales(1)?);
                        for (i, &qrow) in qrows.iter().enumerate() {
                            let base = ir.add(k0, ir.int(v * 2 * w))?;
                            let a_lo = load_bytes(byte_at(ir, qrow, base)?)?;
                            let a_hi = load_bytes(byte_at(ir, qrow, ir.add(base, ir.int(w))?)?)?;
                            for (nib, a8, scv) in [(lo, a_lo, sc_lo), (hi, a_hi, sc_hi)] {
                                let p16 = ir.intrinsic(madd_ub, &[], &[nib.into(), a8.into()])?;
                                let p32 = ir.intrinsic(madd_wd, &[], &[p16.into(), scv.into()])?;
                                sumi[i] =
                                    ir.b.build_int_add(sumi[i], p32.into_vector_value(), "")?;
                            }
                        }
                    }
                    for i in 0..r {
                        let n = 2 * (i * ncols + col);
                        let dd = ir.b.build_float_mul(d, das[i], "")?;
                        let s = ir.b.build_signed_int_to_float(sumi[i], fv, "")?;
                        acc[n] = ir.fmuladd(s, ir.splat(fv, dd.into())?, acc[n])?;
                        acc[n + 1] = ir.fmuladd(mins, sums[i], acc[n + 1])?;
                    }
                }
                Ok(acc.into_iter().map(Into::into).collect())
            },
        )?;
        for i in 0..r {
            for col in 0..ncols {
                let n = 2 * (i * ncols + col);
                let total = reduce(ir, accs[n].into_vector_value())?;
                let min_total = reduce(ir, accs[n + 1].into_vector_value())?;
                let y = ir.b.build_float_sub(total, min_total, "")?;
                let at = ir.mad(ir.int(i as u64), ldc, ir.add(j, ir.int(col as u64))?)?;
                ir.store(ir.at(c, at)?, y)?;
            }
        }
        Ok(())
    };
    // Per (row, column) two accumulators and the block's integer sum, beside the
    // block's nibbles, scales and the activations.
    let registers = if width == 64 { 24 } else { 12 };
    let nests: Vec<(usize, usize)> = (1..=GEMV_MAX_ROWS as usize)
        .map(|r| (r, (registers / (3 * r)).clamp(1, 4)))
        .collect();
    emit_column_nests(ir, g, &nests, &block)
}

/// The sum of `v`'s lanes, reassociated as a tree.
fn reduce<'ctx>(
    ir: &Ir<'ctx>,
    v: VectorValue<'ctx>,
) -> IrResult<inkwell::values::FloatValue<'ctx>> {
    let total = ir.intrinsic(
        "llvm.vector.reduce.fadd",
        &[v.get_type().into()],
        &[ir.f32.const_zero().into(), v.into()],
    )?;
    if let Some(inst) = total.as_instruction_value() {
        let _ = inst.set_fast_math_flags(FastMathFlags::AllowReassoc);
    }
    Ok(total.into_float_value())
}

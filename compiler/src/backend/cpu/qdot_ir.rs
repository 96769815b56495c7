//! Integer dot products for decoding over K-quant blocks (Q4_K, Q5_K, Q6_K), as llama.cpp
//! computes them — the `int_dots` numerics of a build (`archc … --int-dots`), never the
//! default. Prompts (more than eight rows) take `qgemm_ir`'s packed integer matmul, which
//! computes the same products.
//!
//! `archc_gemv_bt_{type}_q8` first quantizes each row of A per 256 values to 8 bits
//! (ggml's Q8_K: `d_a = max|x| / 127`, `q = x · (127 / max|x|)` rounded to nearest even,
//! with the sums of the q's per 16 and per 32 values), then takes each block of B as it is
//! stored: its values, assembled as unsigned bytes (Q4_K's nibble, Q5_K's nibble and high
//! bit, Q6_K's 4 + 2 bits without the offset of 32), meet the activations' bytes in
//! `vpmaddubsw` (u8 × i8 pairs summed to i16), whose pairs `vpmaddwd` sums to i32 times
//! the sub-block scales (one `vpdpwssd` with AVX-512 VNNI: LLVM fuses the add). Per block
//! and output, in f32:
//!
//! - Q4_K, Q5_K: `y += d_w · d_a · Σ_j sc_j Σ_{i∈j} q_i · q8_i − Σ_j dmin_w · m_j · (d_a · Σ_{i∈j} q8_i)`
//!   over the eight sub-blocks j of 32 values;
//! - Q6_K: `y += d_w · d_a · Σ_s sc_s Σ_{i∈s} q_i · q8_i − Σ_s 32 · d_w · sc_s · (d_a · Σ_{i∈s} q8_i)`
//!   over the sixteen groups s of 16 values.
//!
//! Four to six vector instructions per 64 values where the f32 path (`quant_ir`) needs a
//! lookup or a widening and an FMA per 16. The result differs from the f32 product over
//! the dequantized weights by the activations' rounding (about 0.5% of a product's
//! magnitude; 3% of the largest logit of the 245M-parameter random LLaMA of
//! `tools/bench_gguf.py`, whose greedy tokens stayed the same), which is why it is a choice
//! of the build and not the default: the contract with transformers (which dequantizes
//! and computes in f32) is 1e-4.
//!
//! A vector of W bytes of values is W / 32 segments of 32 values, each one natural
//! 32-value segment of the block (a Q4_K sub-block); the activations' bytes are stored in
//! the order the segments come out of the weights' vectors, so that each vector of values
//! meets one plain load of activations (`Kind::segment`).

use super::gemv_ir::{emit_column_nests, gemv_function, Gemv, GEMV_MAX_ROWS};
use super::ir::{Ir, IrError, IrResult, WholeSteps};
use super::quant_ir::{
    block_at, byte_at, bytes_at, half, prefetch, q4k_scales_mins, PREFETCH_BYTES,
};
use arch_runtime::gguf::GgmlType;
use inkwell::types::VectorType;
use inkwell::values::{
    BasicValue, BasicValueEnum, FastMathFlags, FloatValue, FunctionValue, IntValue, PointerValue,
    VectorValue,
};

/// Values per block of the activations' quantization (ggml's `QK_K`).
pub(super) const QK: u64 = 256;
/// Values per segment (a Q4_K sub-block).
pub(super) const SEG: u64 = 32;
/// Bytes of A's quantized rows that the routine keeps on its stack at most (rows · k);
/// larger products go to the f32 routine.
const MAX_STACK_BYTES: u64 = 1 << 18;

/// The block types with an integer-dot routine.
pub(crate) fn has_int_dots(ty: GgmlType) -> bool {
    matches!(ty, GgmlType::Q4_K | GgmlType::Q5_K | GgmlType::Q6_K)
}

/// How a block type's values come out of its vectors.
#[derive(Clone, Copy)]
pub(super) struct Kind {
    pub ty: GgmlType,
    /// Vector width in bytes (32 or 64).
    pub width: u64,
}

impl Kind {
    /// Segments per vector.
    pub fn per_vector(self) -> u64 {
        self.width / SEG
    }

    /// The natural segment (0..8) that segment `c` of value vector `v` holds. Q4_K and
    /// Q5_K: a vector of the value bytes covers W / 32 chunks of 32 bytes, chunk c holding
    /// sub-block 2c in its low nibbles and 2c + 1 in its high ones; vector v takes the
    /// low nibbles (v even) or the high ones (v odd) of bytes (v / 2) · W onwards. Q6_K:
    /// natural order (each 64 bytes of `ql` hold values 0..64 of a half in their low
    /// nibbles and 64..128 in their high ones).
    pub fn segment(self, v: u64, c: u64) -> u64 {
        match self.ty {
            GgmlType::Q6_K => v * self.per_vector() + c,
            _ => 2 * ((v / 2) * self.per_vector() + c) + v % 2,
        }
    }

    /// Where natural segment `seg` lies among the quantized activations of a block.
    fn slot(self, seg: u64) -> u64 {
        let pv = self.per_vector();
        (0..QK / self.width)
            .flat_map(|v| (0..pv).map(move |c| (v, c)))
            .position(|(v, c)| self.segment(v, c) == seg)
            .map_or(seg, |p| p as u64)
    }
}

/// `archc_gemv_bt_{type}_q8(rows, cols, k, a, lda, b, ldb, c, ldc)`: the integer-dot
/// matrix–vector product over blocks of `ty` (Q4_K, Q5_K or Q6_K), with vectors of
/// `width` bytes (64 with AVX-512BW, 32 with AVX2). Products whose quantized A would not
/// fit [`MAX_STACK_BYTES`] call `fallback` (the f32 routine) instead.
pub(crate) fn emit_gemv_q8<'ctx>(
    ir: &Ir<'ctx>,
    ty: GgmlType,
    width: u32,
    fallback: FunctionValue<'ctx>,
) -> IrResult<FunctionValue<'ctx>> {
    if width != 32 && width != 64 {
        return Err(IrError(format!("integer dots in {width}-byte vectors")));
    }
    if !has_int_dots(ty) {
        return Err(IrError(format!("no integer dots for {} blocks", ty.name())));
    }
    let kind = Kind {
        ty,
        width: u64::from(width),
    };
    let name = format!("archc_gemv_bt_{}_q8", ty.name().to_ascii_lowercase());
    let g = gemv_function(ir, &name)?;
    let fits = ir.b.build_int_compare(
        inkwell::IntPredicate::ULE,
        ir.mul(g.rows, g.k)?,
        ir.int(MAX_STACK_BYTES),
        "",
    )?;
    ir.if_else(
        g.f,
        "fits",
        fits,
        || {
            let q = quantize_rows(ir, &g, kind)?;
            emit_dots(ir, &g, kind, &q)
        },
        || {
            let args: Vec<inkwell::values::BasicMetadataValueEnum> = vec![
                g.rows.into(),
                g.cols.into(),
                g.k.into(),
                g.a.into(),
                g.lda.into(),
                g.b.into(),
                g.ldb.into(),
                g.c.into(),
                g.ldc.into(),
            ];
            ir.b.build_call(fallback, &args, "")?;
            Ok(())
        },
    )?;
    ir.b.build_return(None)?;
    Ok(g.f)
}

/// A's rows quantized: `q8` (rows · k bytes, segments in [`Kind::slot`] order), `da`
/// (each block's scale, rows · k / 256 f32s), `bs16` and `bs32` (d_a times the sum of
/// each 16 or 32 q's, in natural order: rows · k / 16 and rows · k / 32 f32s).
struct Quantized<'ctx> {
    q8: PointerValue<'ctx>,
    da: PointerValue<'ctx>,
    bs16: PointerValue<'ctx>,
    bs32: PointerValue<'ctx>,
}

/// Quantizes every row of A per 256 values into stack buffers.
fn quantize_rows<'ctx>(ir: &Ir<'ctx>, g: &Gemv<'ctx>, kind: Kind) -> IrResult<Quantized<'ctx>> {
    let (f, rows, k, a, lda) = (g.f, g.rows, g.k, g.a, g.lda);
    let i8t = ir.ctx.i8_type();
    let alloca = |ty: inkwell::types::BasicTypeEnum<'ctx>, n: IntValue<'ctx>| {
        let p = ir.b.build_array_alloca(ty, n, "")?;
        if let Some(inst) = p.as_instruction_value() {
            inst.set_alignment(64).map_err(|e| IrError(e.to_string()))?;
        }
        Ok::<_, IrError>(p)
    };
    let blocks = ir.b.build_int_unsigned_div(k, ir.int(QK), "")?;
    let all_blocks = ir.mul(rows, blocks)?;
    let q8 = alloca(i8t.into(), ir.mul(rows, k)?)?;
    let da = alloca(ir.f32.into(), all_blocks)?;
    let bs16 = alloca(ir.f32.into(), ir.mul(all_blocks, ir.int(QK / 16))?)?;
    let bs32 = alloca(ir.f32.into(), ir.mul(all_blocks, ir.int(QK / SEG))?)?;
    let lanes = kind.width / 4;
    ir.for_range(f, "qi", ir.int(0), rows, 1, |i| {
        let arow = ir.at(a, ir.mul(i, lda)?)?;
        ir.for_range(f, "qb", ir.int(0), k, QK, |k0| {
            let qb = quantize_block(ir, ir.at(arow, k0)?, lanes as u32)?;
            let d = qb.d;
            let blk = ir.add(
                ir.mul(i, blocks)?,
                ir.b.build_int_unsigned_div(k0, ir.int(QK), "")?,
            )?;
            ir.store(ir.at(da, blk)?, d)?;
            let qrow = byte_at(ir, q8, ir.add(ir.mul(i, k)?, k0)?)?;
            for (s, &bytes) in qb.bytes.iter().enumerate() {
                let e = s as u64 * lanes;
                let at = kind.slot(e / SEG) * SEG + e % SEG;
                let st = ir.b.build_store(byte_at(ir, qrow, ir.int(at))?, bytes)?;
                st.set_alignment(1).map_err(|e| IrError(e.to_string()))?;
            }
            let sums16 = &qb.sums16;
            for (s, &sum) in sums16.iter().enumerate() {
                let x = ir.b.build_signed_int_to_float(sum, ir.f32, "")?;
                let at = ir.add(ir.mul(blk, ir.int(QK / 16))?, ir.int(s as u64))?;
                ir.store(ir.at(bs16, at)?, ir.b.build_float_mul(x, d, "")?)?;
            }
            for (j, pair) in sums16.chunks(2).enumerate() {
                let sum = ir.b.build_int_add(pair[0], pair[1], "")?;
                let x = ir.b.build_signed_int_to_float(sum, ir.f32, "")?;
                let at = ir.add(ir.mul(blk, ir.int(QK / SEG))?, ir.int(j as u64))?;
                ir.store(ir.at(bs32, at)?, ir.b.build_float_mul(x, d, "")?)?;
            }
            Ok(())
        })
    })?;
    Ok(Quantized { q8, da, bs16, bs32 })
}

/// One block of 256 values quantized to 8 bits as ggml's Q8_K: the bytes in natural order
/// (vectors of `lanes` i8), `d` (max|x| / 127; NaN if a value is NaN) and the integer sums
/// of the q's per 16 values.
pub(super) struct Q8Block<'ctx> {
    pub bytes: Vec<VectorValue<'ctx>>,
    pub d: FloatValue<'ctx>,
    pub sums16: Vec<IntValue<'ctx>>,
}

/// Quantizes the 256 f32s at `x` (`lanes` per vector: 8 or 16).
pub(super) fn quantize_block<'ctx>(
    ir: &Ir<'ctx>,
    x: PointerValue<'ctx>,
    lanes: u32,
) -> IrResult<Q8Block<'ctx>> {
    let (i8t, i32t) = (ir.ctx.i8_type(), ir.ctx.i32_type());
    let (vt, it) = (ir.f32.vec_type(lanes), i32t.vec_type(lanes));
    let lanes = u64::from(lanes);
    let xs = (0..QK / lanes)
        .map(|s| ir.load_vec(vt, ir.at(x, ir.int(s * lanes))?))
        .collect::<IrResult<Vec<_>>>()?;
    // `maximum`, not `maxnum`: a NaN among the values makes d_a NaN, so the products
    // it enters are NaN as in f32, not finite numbers from garbage bytes.
    let mut amax: Option<VectorValue<'ctx>> = None;
    for &x in &xs {
        let ax = ir
            .intrinsic("llvm.fabs", &[vt.into()], &[x.into()])?
            .into_vector_value();
        amax = Some(match amax {
            None => ax,
            Some(m) => ir
                .intrinsic("llvm.maximum", &[vt.into()], &[m.into(), ax.into()])?
                .into_vector_value(),
        });
    }
    let amax = amax.ok_or_else(|| IrError("an empty block".into()))?;
    let amax = ir
        .intrinsic("llvm.vector.reduce.fmaximum", &[vt.into()], &[amax.into()])?
        .into_float_value();
    let c127 = ir.f32.const_float(127.0);
    let d = ir.b.build_float_div(amax, c127, "")?;
    let positive =
        ir.b.build_float_compare(inkwell::FloatPredicate::OGT, amax, ir.f32.const_zero(), "")?;
    let id = ir.b.build_select(
        positive,
        ir.b.build_float_div(c127, amax, "")?,
        ir.f32.const_zero(),
        "",
    )?;
    let idv = ir.splat(vt, id)?;
    let mut bytes = Vec::new();
    // Integer sums of the q's per 16 values.
    let mut sums16 = Vec::new();
    let mut pending: Option<VectorValue<'ctx>> = None;
    for (s, &x) in xs.iter().enumerate() {
        let e = s as u64 * lanes;
        let y = ir.b.build_float_mul(x, idv, "")?;
        let y = ir
            .intrinsic("llvm.rint", &[vt.into()], &[y.into()])?
            .into_vector_value();
        let qv = ir.b.build_float_to_signed_int(y, it, "")?;
        bytes.push(ir.b.build_int_truncate(qv, i8t.vec_type(lanes as u32), "")?);
        // A vector of 8 lanes is half a group of 16; one of 16 a whole group.
        let acc = match pending.take() {
            None => qv,
            Some(p) => ir.b.build_int_add(p, qv, "")?,
        };
        if (e + lanes).is_multiple_of(16) {
            let total = ir.intrinsic("llvm.vector.reduce.add", &[it.into()], &[acc.into()])?;
            sums16.push(total.into_int_value());
        } else {
            pending = Some(acc);
        }
    }
    Ok(Q8Block { bytes, d, sums16 })
}

/// One block of B, read for the dot products: its scale, the coefficients of its offset
/// term (against the activations' sums per 32 values, or per 16 for Q6_K) and what its
/// value vectors are decoded from.
pub(super) struct KBlock<'ctx> {
    p: PointerValue<'ctx>,
    pub d: FloatValue<'ctx>,
    /// Q4_K/Q5_K: dmin · m_j (8 lanes); Q6_K: 32 · d · sc_s (16 lanes).
    offsets: VectorValue<'ctx>,
    /// Integer scales as i16: 8 (one per 32 values) or 16 (one per 16).
    scales: VectorValue<'ctx>,
    /// Q5_K: the 32 bytes of high bits; Q6_K: the 64 bytes of top-two bits.
    high: Option<VectorValue<'ctx>>,
}

impl<'ctx> KBlock<'ctx> {
    pub fn read(ir: &Ir<'ctx>, kind: Kind, p: PointerValue<'ctx>) -> IrResult<KBlock<'ctx>> {
        let i16t = ir.ctx.i16_type();
        let load = |off: u64, n: u32| bytes_at(ir, p, ir.int(off), n);
        match kind.ty {
            GgmlType::Q6_K => {
                let d = half(ir, p, 208, true)?;
                let f16v = ir.f32.vec_type(16);
                let sc =
                    ir.b.build_int_s_extend(load(192, 16)?, i16t.vec_type(16), "")?;
                let scf = ir.b.build_signed_int_to_float(sc, f16v, "")?;
                let d32 = ir.b.build_float_mul(d, ir.f32.const_float(32.0), "")?;
                let offsets = ir.b.build_float_mul(scf, ir.splat(f16v, d32.into())?, "")?;
                Ok(KBlock {
                    p,
                    d,
                    offsets,
                    scales: sc,
                    high: Some(load(128, 64)?),
                })
            }
            _ => {
                let d = half(ir, p, 0, true)?;
                let dmin = half(ir, p, 2, true)?;
                let (sc, m) = q4k_scales_mins(ir, p)?;
                let f8 = ir.f32.vec_type(8);
                let offsets = ir.b.build_float_mul(
                    ir.b.build_signed_int_to_float(m, f8, "")?,
                    ir.splat(f8, dmin.into())?,
                    "",
                )?;
                let high = if kind.ty == GgmlType::Q5_K {
                    Some(load(16, 32)?)
                } else {
                    None
                };
                Ok(KBlock {
                    p,
                    d,
                    offsets,
                    scales: ir.b.build_int_truncate(sc, i16t.vec_type(8), "")?,
                    high,
                })
            }
        }
    }

    /// Value vector `v` of the block as unsigned bytes, and the i16 scales of its
    /// `vpmaddubsw` pairs.
    pub fn vector(
        &self,
        ir: &Ir<'ctx>,
        kind: Kind,
        v: u64,
    ) -> IrResult<(VectorValue<'ctx>, VectorValue<'ctx>)> {
        let (i8t, i32t) = (ir.ctx.i8_type(), ir.ctx.i32_type());
        let w = kind.width;
        let bytes =
            |n: u64, x: u64| VectorType::const_vector(&vec![i8t.const_int(x, false); n as usize]);
        let load = |off: u64| bytes_at(ir, self.p, ir.int(off), w as u32);
        // 32-byte pieces of `x` (a vector of 32 or 64 bytes) picked by `pick(c)` for each
        // segment c of the result.
        let pieces =
            |src: VectorValue<'ctx>, pick: &dyn Fn(u64) -> u64| -> IrResult<VectorValue<'ctx>> {
                let mask: Vec<IntValue<'ctx>> = (0..kind.per_vector())
                    .flat_map(|c| (0..SEG).map(move |l| (c, l)))
                    .map(|(c, l)| i32t.const_int(pick(c) * SEG + l, false))
                    .collect();
                Ok(ir.b.build_shuffle_vector(
                    src,
                    src.get_type().get_undef(),
                    VectorType::const_vector(&mask),
                    "",
                )?)
            };
        // Segment c of the result: 32-byte piece `pick(c).0` of `src` shifted right by
        // `pick(c).1` bits per byte — each piece shifted on its own, then the pieces
        // joined (x86 has no per-byte variable shifts).
        let shifted_pieces = |src: VectorValue<'ctx>,
                              pick: &dyn Fn(u64) -> (u64, u64)|
         -> IrResult<VectorValue<'ctx>> {
            let segs = (0..kind.per_vector())
                .map(|c| {
                    let (piece, shift) = pick(c);
                    let mask: Vec<IntValue<'ctx>> = (0..SEG)
                        .map(|l| i32t.const_int(piece * SEG + l, false))
                        .collect();
                    let seg = ir.b.build_shuffle_vector(
                        src,
                        src.get_type().get_undef(),
                        VectorType::const_vector(&mask),
                        "",
                    )?;
                    Ok(ir.b.build_right_shift(seg, bytes(SEG, shift), false, "")?)
                })
                .collect::<IrResult<Vec<_>>>()?;
            match segs.as_slice() {
                [one] => Ok(*one),
                [a, b] => {
                    let mask: Vec<IntValue<'ctx>> =
                        (0..2 * SEG).map(|l| i32t.const_int(l, false)).collect();
                    Ok(ir
                        .b
                        .build_shuffle_vector(*a, *b, VectorType::const_vector(&mask), "")?)
                }
                _ => Err(IrError(format!("{} segments per vector", segs.len()))),
            }
        };
        let values = match kind.ty {
            GgmlType::Q4_K | GgmlType::Q5_K => {
                let qs_at = if kind.ty == GgmlType::Q5_K { 48 } else { 16 };
                let raw = load(qs_at + (v / 2) * w)?;
                let nib = if v % 2 == 1 {
                    ir.b.build_right_shift(raw, bytes(w, 4), false, "")?
                } else {
                    ir.b.build_and(raw, bytes(w, 15), "")?
                };
                match self.high {
                    // Bit `sub` of qh byte l is bit 4 of value l of sub-block `sub`: a
                    // test against each segment's bit (`vptestmb`) selects 16 or 0, not a
                    // shift per segment (x86 has no per-byte shifts).
                    Some(qh) => {
                        let qh = pieces(qh, &|_| 0)?;
                        let bits: Vec<IntValue<'ctx>> = (0..kind.per_vector())
                            .flat_map(|c| {
                                std::iter::repeat_n(1u64 << kind.segment(v, c), SEG as usize)
                            })
                            .map(|b| i8t.const_int(b, false))
                            .collect();
                        let set = ir.b.build_int_compare(
                            inkwell::IntPredicate::NE,
                            ir.b.build_and(qh, VectorType::const_vector(&bits), "")?,
                            bytes(w, 0),
                            "",
                        )?;
                        let bit = ir.b.build_select(set, bytes(w, 16), bytes(w, 0), "")?;
                        ir.b.build_or(nib, bit.into_vector_value(), "")?
                    }
                    None => nib,
                }
            }
            _ => {
                // Segment s = h·4 + t of half h: low 4 bits in byte 32·(t % 2) + l of
                // the half's 64 ql bytes (the high nibble when t ≥ 2), top two bits at
                // 2t in byte l of its 32 qh bytes.
                let first = v * kind.per_vector();
                let (h, t0) = (first / 4, first % 4);
                let ql = load(h * 64 + (t0 % 2) * 32)?;
                let lo = if t0 >= 2 {
                    ir.b.build_right_shift(ql, bytes(w, 4), false, "")?
                } else {
                    ir.b.build_and(ql, bytes(w, 15), "")?
                };
                let qh = self.high.ok_or_else(|| IrError("Q6_K without qh".into()))?;
                let hi = shifted_pieces(qh, &|c| (h, 2 * (t0 + c)))?;
                let hi = ir.b.build_and(hi, bytes(w, 3), "")?;
                let hi = ir.b.build_left_shift(hi, bytes(w, 4), "")?;
                ir.b.build_or(lo, hi, "")?
            }
        };
        // The scale of each i16 pair: per segment one scale over its 16 pairs, or (Q6_K)
        // one per 8 pairs.
        let mask: Vec<IntValue<'ctx>> = (0..kind.per_vector())
            .flat_map(|c| {
                let seg = kind.segment(v, c);
                (0..16u64).map(move |l| match kind.ty {
                    GgmlType::Q6_K => 2 * seg + l / 8,
                    _ => seg,
                })
            })
            .map(|i| i32t.const_int(i, false))
            .collect();
        let scales = ir.b.build_shuffle_vector(
            self.scales,
            self.scales.get_type().get_undef(),
            VectorType::const_vector(&mask),
            "",
        )?;
        Ok((values, scales))
    }
}

/// The dot products over the columns, with A quantized in `q`.
fn emit_dots<'ctx>(ir: &Ir<'ctx>, g: &Gemv<'ctx>, kind: Kind, q: &Quantized<'ctx>) -> IrResult<()> {
    let ty = kind.ty;
    let (f, k, b, ldb, c, ldc) = (g.f, g.k, g.b, g.ldb, g.c, g.ldc);
    let w = kind.width;
    let lanes = (w / 4) as u32;
    let (dv, fv) = (ir.ctx.i32_type().vec_type(lanes), ir.f32.vec_type(lanes));
    // The offset terms: per 32 values (8) or per 16 (Q6_K: 16).
    let (groups, sums) = if ty == GgmlType::Q6_K {
        (16u64, q.bs16)
    } else {
        (8, q.bs32)
    };
    let ov = ir.f32.vec_type(groups as u32);
    let (per, bytes) = ty.kernel_block();
    let row_bytes = ir.mul(
        ir.b.build_int_unsigned_div(ldb, ir.int(per as u64), "")?,
        ir.int(bytes as u64),
    )?;
    let blocks_per_row = ir.b.build_int_unsigned_div(k, ir.int(QK), "")?;
    let (madd_ub, madd_wd) = if w == 64 {
        (
            "llvm.x86.avx512.pmaddubs.w.512",
            "llvm.x86.avx512.pmaddw.d.512",
        )
    } else {
        ("llvm.x86.avx2.pmadd.ub.sw", "llvm.x86.avx2.pmadd.wd")
    };
    let block = |j: IntValue<'ctx>, ncols: usize, r: usize| -> IrResult<()> {
        let brows = (0..ncols)
            .map(|col| byte_at(ir, b, ir.mul(ir.add(j, ir.int(col as u64))?, row_bytes)?))
            .collect::<IrResult<Vec<_>>>()?;
        let qrows = (0..r)
            .map(|i| byte_at(ir, q.q8, ir.mul(ir.int(i as u64), k)?))
            .collect::<IrResult<Vec<_>>>()?;
        // Per (row, column): the d-scaled sums and the offset terms.
        let mut init: Vec<BasicValueEnum<'ctx>> = Vec::new();
        for _ in 0..r * ncols {
            init.push(fv.const_zero().into());
            init.push(ov.const_zero().into());
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
                // Per row: d_a and its d_a-scaled sums.
                let mut das = Vec::new();
                let mut row_sums = Vec::new();
                for i in 0..r {
                    let at = ir.add(ir.mul(ir.int(i as u64), blocks_per_row)?, blk)?;
                    das.push(ir.load_f32(ir.at(q.da, at)?)?.into_float_value());
                    row_sums.push(ir.load_vec(ov, ir.at(sums, ir.mul(at, ir.int(groups))?)?)?);
                }
                for (col, &brow) in brows.iter().enumerate() {
                    let p = block_at(ir, ty, brow, k0)?;
                    for line in 0..(bytes as u64).div_ceil(64) {
                        prefetch(ir, p, PREFETCH_BYTES + 64 * line)?;
                    }
                    let blk_b = KBlock::read(ir, kind, p)?;
                    let mut sumi = vec![dv.const_zero(); r];
                    for v in 0..QK / w {
                        let (vals, scv) = blk_b.vector(ir, kind, v)?;
                        for (i, &qrow) in qrows.iter().enumerate() {
                            let at = ir.add(k0, ir.int(v * w))?;
                            let a8 = bytes_at(ir, qrow, at, w as u32)?;
                            let p16 = ir.intrinsic(madd_ub, &[], &[vals.into(), a8.into()])?;
                            let p32 = ir.intrinsic(madd_wd, &[], &[p16.into(), scv.into()])?;
                            sumi[i] = ir.b.build_int_add(sumi[i], p32.into_vector_value(), "")?;
                        }
                    }
                    for i in 0..r {
                        let n = 2 * (i * ncols + col);
                        let dd = ir.b.build_float_mul(blk_b.d, das[i], "")?;
                        let s = ir.b.build_signed_int_to_float(sumi[i], fv, "")?;
                        acc[n] = ir.fmuladd(s, ir.splat(fv, dd.into())?, acc[n])?;
                        acc[n + 1] = ir.fmuladd(blk_b.offsets, row_sums[i], acc[n + 1])?;
                    }
                }
                Ok(acc.into_iter().map(Into::into).collect())
            },
        )?;
        for i in 0..r {
            for col in 0..ncols {
                let n = 2 * (i * ncols + col);
                let total = reduce(ir, accs[n].into_vector_value())?;
                let offset = reduce(ir, accs[n + 1].into_vector_value())?;
                let y = ir.b.build_float_sub(total, offset, "")?;
                let at = ir.mad(ir.int(i as u64), ldc, ir.add(j, ir.int(col as u64))?)?;
                ir.store(ir.at(c, at)?, y)?;
            }
        }
        Ok(())
    };
    // Per (row, column) two accumulators and the block's integer sum, beside the
    // block's values, scales and the activations.
    let registers = if w == 64 { 24 } else { 12 };
    let nests: Vec<(usize, usize)> = (1..=GEMV_MAX_ROWS as usize)
        .map(|r| (r, (registers / (3 * r)).clamp(1, 4)))
        .collect();
    emit_column_nests(ir, g, &nests, &block)
}

/// The sum of `v`'s lanes, reassociated as a tree.
fn reduce<'ctx>(ir: &Ir<'ctx>, v: VectorValue<'ctx>) -> IrResult<FloatValue<'ctx>> {
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

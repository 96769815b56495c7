//! Matmuls whose B is a parameter stored as ggml blocks (`kernel::quant`): every ggml
//! block type — Q8_0 (32 int8 values and an f16 scale per 34 bytes), Q4_0/Q4_1/Q5_0/Q5_1
//! (32 4- or 5-bit values with a scale, and a min for the `_1`s), Q4_K/Q5_K (256 values:
//! f16 super-block scale and min, eight 6-bit sub-block scales and mins), Q6_K (256
//! values: 4 + 2 bits each, sixteen int8 scales) — and F16/BF16 (read as 32-value units).
//! Blocks are dequantized in registers, one vector of values at a time, straight into the
//! FMAs: `archc_gemv_bt_{type}` for decoding (each block streams from memory once per
//! step) and `archc_sgemm_bt_{type}`, the packed sgemm whose B packer dequantizes
//! (prompt processing: compute-bound, the blocks unpacked once per panel).
//!
//! B is addressed in elements as for f32 — element `e` of a row lies in block `e / per`
//! at byte `(e / per) · bytes` — so the matmul lowering and the drivers keep their index
//! arithmetic; `kernel::quant` guarantees every offset and stride is whole blocks.

use super::gemv_ir::{emit_column_nests, gemv_function, store_sum, Gemv, GEMV_MAX_ROWS};
use super::ir::{Ir, IrError, IrResult, WholeSteps};
use super::pack::{packer, transpose, Packer};
use super::sgemm_ir::{emit_driver, SgemmTiles};
use arch_runtime::gguf::GgmlType;
use inkwell::types::VectorType;
use inkwell::values::{
    BasicValue, BasicValueEnum, FloatValue, FunctionValue, IntValue, PointerValue, VectorValue,
};

/// Accumulators per (row, column) in the matrix–vector routine.
const CHAINS: usize = 2;

/// How far ahead of its reads the matrix–vector routine asks for each row of blocks.
/// Dequantizing takes several instructions per byte, so the demand stream alone leaves
/// too few cache misses in flight to reach the memory bandwidth. Measured on 256 Q8_0
/// matrices 1024 × 1024 streamed from memory, one thread: no prefetch 164 µs each,
/// 1 KiB ahead into L1 160, 4 KiB into L2 101, 4 KiB into L3 94, 8–16 KiB 98–101. In a
/// whole decode step on two threads (the 246M-parameter LLaMA shape of
/// `tools/bench_gguf.py`, `archc bench --mode decode`, five alternating runs each) 8 KiB
/// did better: Q4_K 112.4 → 117.1 tokens/s on average (2 KiB 108, 16 KiB 113), Q8_0
/// 71.5 → 74.7 (one run each).
pub(crate) const PREFETCH_BYTES: u64 = 8192;

/// A hint to bring the line `ahead` bytes past `p` into the last-level cache
/// (`prefetcht2`: the line is needed a few rows later). A plain GEP: the address may lie
/// past the buffer, and prefetches never fault.
pub(crate) fn prefetch<'ctx>(ir: &Ir<'ctx>, p: PointerValue<'ctx>, ahead: u64) -> IrResult<()> {
    // SAFETY (of the IR): address arithmetic only; nothing loads it.
    let at = unsafe { ir.b.build_gep(ir.ctx.i8_type(), p, &[ir.int(ahead)], "")? };
    ir.prefetch_to(at, ir.int(0), false, 1)
}

/// The two routines of one block type.
#[derive(Clone, Copy)]
pub(crate) struct QuantFns<'ctx> {
    pub gemv_bt: FunctionValue<'ctx>,
    pub sgemm_bt: FunctionValue<'ctx>,
}

/// Emits the routines for `ty` (any kernel storage type) over the module's sgemm
/// microkernel and A packer (`emit_sgemm_all` first).
pub(crate) fn emit_quant<'ctx>(
    ir: &Ir<'ctx>,
    t: &SgemmTiles,
    ty: GgmlType,
) -> IrResult<QuantFns<'ctx>> {
    let get = |name: &str| {
        ir.module
            .get_function(name)
            .ok_or_else(|| IrError(format!("{name} is not emitted yet")))
    };
    let (pack_a, kernel) = (get("archc_sgemm_pack_a")?, get("archc_sgemm_kernel")?);
    let (per, _) = ty.kernel_block();
    if !(t.kc as usize).is_multiple_of(per) || !per.is_multiple_of(t.lanes as usize) {
        return Err(IrError(format!(
            "{} blocks of {per} do not tile KC = {} in vectors of {}",
            ty.name(),
            t.kc,
            t.lanes
        )));
    }
    let tag = ty.name().to_ascii_lowercase();
    let pack_b = emit_pack_bt(ir, t, ty, &tag)?;
    let sgemm_bt = emit_driver(
        ir,
        t,
        pack_a,
        pack_b,
        kernel,
        &format!("archc_sgemm_bt_{tag}"),
        false,
        true,
        Some(ty),
    )?;
    let gemv_bt = emit_gemv(ir, t, ty, &tag)?;
    Ok(QuantFns { gemv_bt, sgemm_bt })
}

/// The address of byte `idx` of `base`.
pub(crate) fn byte_at<'ctx>(
    ir: &Ir<'ctx>,
    base: PointerValue<'ctx>,
    idx: IntValue<'ctx>,
) -> IrResult<PointerValue<'ctx>> {
    // SAFETY (of the IR): offsets stay inside the parameter's blocks.
    Ok(unsafe {
        ir.b.build_in_bounds_gep(ir.ctx.i8_type(), base, &[idx], "")?
    })
}

/// `n` bytes at `p + off` as an `<n x i8>` (no alignment assumed).
pub(crate) fn bytes_at<'ctx>(
    ir: &Ir<'ctx>,
    p: PointerValue<'ctx>,
    off: IntValue<'ctx>,
    n: u32,
) -> IrResult<VectorValue<'ctx>> {
    let v =
        ir.b.build_load(ir.ctx.i8_type().vec_type(n), byte_at(ir, p, off)?, "")?;
    if let Some(inst) = v.as_instruction_value() {
        inst.set_alignment(1).map_err(|e| IrError(e.to_string()))?;
    }
    Ok(v.into_vector_value())
}

/// The block holding element `elem` (a multiple of the block size) of blocks at `base`.
pub(crate) fn block_at<'ctx>(
    ir: &Ir<'ctx>,
    ty: GgmlType,
    base: PointerValue<'ctx>,
    elem: IntValue<'ctx>,
) -> IrResult<PointerValue<'ctx>> {
    let (per, bytes) = ty.kernel_block();
    let block = ir.b.build_int_unsigned_div(elem, ir.int(per as u64), "")?;
    byte_at(ir, base, ir.mul(block, ir.int(bytes as u64))?)
}

/// The f16 at `p + off` as f32. With F16C (every AVX2 and AVX-512 machine) LLVM's
/// `fpext` (one `vcvtph2ps`); otherwise exactly, in integer and f32 arithmetic with no
/// libcall: the magnitude's bits shifted into an f32 and scaled by 2^112 (normal and
/// subnormal halves alike), then the sign.
pub(crate) fn half<'ctx>(
    ir: &Ir<'ctx>,
    p: PointerValue<'ctx>,
    off: u64,
    f16c: bool,
) -> IrResult<FloatValue<'ctx>> {
    half_at(ir, byte_at(ir, p, ir.int(off))?, f16c)
}

/// [`half`] at `at`.
fn half_at<'ctx>(ir: &Ir<'ctx>, at: PointerValue<'ctx>, f16c: bool) -> IrResult<FloatValue<'ctx>> {
    let (i16t, i32t) = (ir.ctx.i16_type(), ir.ctx.i32_type());
    let h = ir.b.build_load(i16t, at, "")?;
    // Every half of every block type lies at an even offset of an even-sized block (the
    // NVPTX backend splits a 1-aligned load into bytes).
    if let Some(inst) = h.as_instruction_value() {
        inst.set_alignment(2).map_err(|e| IrError(e.to_string()))?;
    }
    if f16c {
        let h =
            ir.b.build_bit_cast(h, ir.ctx.f16_type(), "")?
                .into_float_value();
        return Ok(ir.b.build_float_ext(h, ir.f32, "")?);
    }
    let h = ir.b.build_int_z_extend(h.into_int_value(), i32t, "")?;
    half_value(ir, h)
}

/// The f32 value of f16 bits `h` (an i32 holding 16 bits), in integer and f32 operations:
/// normal and subnormal values exactly (infinities and NaNs are not decoded).
pub(crate) fn half_value<'ctx>(ir: &Ir<'ctx>, h: IntValue<'ctx>) -> IrResult<FloatValue<'ctx>> {
    let i32t = ir.ctx.i32_type();
    let c = |v: u64| i32t.const_int(v, false);
    let mag = ir.b.build_and(h, c(0x7fff), "")?;
    let mag = ir.b.build_left_shift(mag, c(13), "")?;
    let mag = ir.b.build_bit_cast(mag, ir.f32, "")?.into_float_value();
    let scaled =
        ir.b.build_float_mul(mag, ir.f32.const_float(2f64.powi(112)), "")?;
    let bits = ir.b.build_bit_cast(scaled, i32t, "")?.into_int_value();
    let sign =
        ir.b.build_left_shift(ir.b.build_and(h, c(0x8000), "")?, c(16), "")?;
    Ok(ir
        .b
        .build_bit_cast(ir.b.build_or(bits, sign, "")?, ir.f32, "")?
        .into_float_value())
}

/// Q4_K's eight sub-block scales and mins (6 bits each in the 12 bytes at `p + 4`) as
/// two <8 x i32>, all lanes at once: ggml's `get_scale_min_k4` for j < 4 reads bytes j and
/// j + 4; for j ≥ 4 the low nibble (scale) or high nibble (min) of byte j + 4 with the top
/// two bits of byte j − 4 (scale) or j (min).
pub(crate) fn q4k_scales_mins<'ctx>(
    ir: &Ir<'ctx>,
    p: PointerValue<'ctx>,
) -> IrResult<(VectorValue<'ctx>, VectorValue<'ctx>)> {
    let (i8t, i32t) = (ir.ctx.i8_type(), ir.ctx.i32_type());
    let raw = bytes_at(ir, p, ir.int(4), 16)?;
    let v8 = i32t.vec_type(8);
    let pick = |idx: [u64; 8]| -> IrResult<VectorValue<'ctx>> {
        let mask: Vec<IntValue<'ctx>> = idx.iter().map(|&i| i32t.const_int(i, false)).collect();
        let bytes = ir.b.build_shuffle_vector(
            raw,
            i8t.vec_type(16).get_undef(),
            VectorType::const_vector(&mask),
            "",
        )?;
        Ok(ir.b.build_int_z_extend(bytes, v8, "")?)
    };
    let a = pick([0, 1, 2, 3, 8, 9, 10, 11])?;
    let b = pick([4, 5, 6, 7, 0, 1, 2, 3])?;
    let c = pick([4, 5, 6, 7, 4, 5, 6, 7])?;
    let k = |v: u64| VectorType::const_vector(&[i32t.const_int(v, false); 8]);
    let top = |v: VectorValue<'ctx>| -> IrResult<VectorValue<'ctx>> {
        let t = ir.b.build_right_shift(v, k(6), false, "")?;
        Ok(ir.b.build_left_shift(t, k(4), "")?)
    };
    let first: Vec<_> = (0..8)
        .map(|j| ir.ctx.bool_type().const_int(u64::from(j < 4), false))
        .collect();
    let first = VectorType::const_vector(&first);
    let sc = ir.b.build_select(
        first,
        ir.b.build_and(a, k(63), "")?,
        ir.b.build_or(ir.b.build_and(a, k(15), "")?, top(b)?, "")?,
        "",
    )?;
    let m = ir.b.build_select(
        first,
        ir.b.build_and(b, k(63), "")?,
        ir.b.build_or(ir.b.build_right_shift(a, k(4), false, "")?, top(c)?, "")?,
        "",
    )?;
    Ok((sc.into_vector_value(), m.into_vector_value()))
}

/// Each lane of `v` broadcast across a vector of `lanes` (a block's per-sub-block scales).
/// The lanes go through a stack slot with volatile accesses, so that each broadcast is a
/// load (`vbroadcastss zmm, m32`, or folded into an FMA as `{1to16}`) on the load ports
/// instead of a register shuffle on the one port that also runs the value lookups
/// (`vpermps`, `vpmovzxbd`): on AVX-512 Q4_K's decode was bound by that port.
fn lanes_broadcast<'ctx>(
    ir: &Ir<'ctx>,
    v: VectorValue<'ctx>,
    lanes: u32,
) -> IrResult<Vec<VectorValue<'ctx>>> {
    let n = v.get_type().get_size();
    let vt = ir.f32.vec_type(lanes);
    if lanes < 16 {
        // SSE2/AVX2: shuffles from a register, as before.
        return (0..n as u64)
            .map(|j| {
                let idx = ir.ctx.i32_type().const_int(j, false);
                let mask = VectorType::const_vector(&vec![idx; lanes as usize]);
                Ok(ir
                    .b
                    .build_shuffle_vector(v, v.get_type().get_undef(), mask, "")?)
            })
            .collect();
    }
    let slot = entry_slot(ir, n)?;
    let st = ir.b.build_store(slot, v)?;
    st.set_volatile(true).map_err(|e| IrError(e.to_string()))?;
    st.set_alignment(4).map_err(|e| IrError(e.to_string()))?;
    (0..n as u64)
        .map(|j| {
            let at = unsafe { ir.b.build_in_bounds_gep(ir.f32, slot, &[ir.int(j)], "")? };
            let x = ir.b.build_load(ir.f32, at, "")?;
            if let Some(inst) = x.as_instruction_value() {
                inst.set_volatile(true)
                    .map_err(|e| IrError(e.to_string()))?;
            }
            ir.splat(vt, x)
        })
        .collect()
}

/// A stack slot of `n` f32s, allocated in the entry block of the function being emitted.
fn entry_slot<'ctx>(ir: &Ir<'ctx>, n: u32) -> IrResult<PointerValue<'ctx>> {
    let f =
        ir.b.get_insert_block()
            .and_then(|b| b.get_parent())
            .ok_or_else(|| IrError("no function to hold a stack slot".into()))?;
    let entry = f
        .get_first_basic_block()
        .ok_or_else(|| IrError("a function without blocks".into()))?;
    let b = ir.ctx.create_builder();
    match entry.get_first_instruction() {
        Some(i) => b.position_before(&i),
        None => b.position_at_end(entry),
    }
    Ok(b.build_alloca(ir.f32.array_type(n), "scales")?)
}

/// One block's scales, read once, from which its vectors of values are decoded.
pub(crate) struct Block<'ctx> {
    ty: GgmlType,
    p: PointerValue<'ctx>,
    lanes: u32,
    /// Q8_0: [d]; Q4_K: per sub-block (d·sc, −dmin·m), each splat across the lanes.
    scales: Vec<(VectorValue<'ctx>, Option<VectorValue<'ctx>>)>,
    /// Q4_K with 16 lanes: per sub-block the 16 values a nibble can stand for
    /// (d·sc·q − dmin·m for q = 0..15), looked up with one `vpermps` per vector.
    tables: Vec<VectorValue<'ctx>>,
}

impl<'ctx> Block<'ctx> {
    /// The block at `p`: its scales converted and broadcast.
    pub(crate) fn read(
        ir: &Ir<'ctx>,
        ty: GgmlType,
        p: PointerValue<'ctx>,
        lanes: u32,
    ) -> IrResult<Block<'ctx>> {
        let vt = ir.f32.vec_type(lanes);
        let f16c = lanes >= 8;
        let scales = match ty {
            GgmlType::Q8_0 => vec![(ir.splat(vt, half(ir, p, 0, f16c)?.into())?, None)],
            GgmlType::F16 | GgmlType::BF16 => Vec::new(),
            // y = d·q + off: off = −8d / −16d (the values' offset), or the block's min.
            GgmlType::Q4_0 | GgmlType::Q5_0 => {
                let d = half(ir, p, 0, f16c)?;
                let bias = if ty == GgmlType::Q4_0 { -8.0 } else { -16.0 };
                let off = ir.b.build_float_mul(d, ir.f32.const_float(bias), "")?;
                vec![(ir.splat(vt, d.into())?, Some(ir.splat(vt, off.into())?))]
            }
            GgmlType::Q4_1 | GgmlType::Q5_1 => {
                let (d, m) = (half(ir, p, 0, f16c)?, half(ir, p, 2, f16c)?);
                vec![(ir.splat(vt, d.into())?, Some(ir.splat(vt, m.into())?))]
            }
            GgmlType::Q4_K | GgmlType::Q5_K => {
                let (d, dmin) = (half(ir, p, 0, f16c)?, half(ir, p, 2, f16c)?);
                let (sc, m) = q4k_scales_mins(ir, p)?;
                let v8 = ir.f32.vec_type(8);
                let d1 = ir.b.build_float_mul(
                    ir.b.build_unsigned_int_to_float(sc, v8, "")?,
                    ir.splat(v8, d.into())?,
                    "",
                )?;
                let m1 = ir.b.build_float_mul(
                    ir.b.build_unsigned_int_to_float(m, v8, "")?,
                    ir.splat(v8, dmin.into())?,
                    "",
                )?;
                let m1 = ir.b.build_float_neg(m1, "")?;
                // Lane j of each, broadcast across the value vectors.
                let (ds, ms) = (
                    lanes_broadcast(ir, d1, lanes)?,
                    lanes_broadcast(ir, m1, lanes)?,
                );
                ds.into_iter().zip(ms).map(|(d, m)| (d, Some(m))).collect()
            }
            GgmlType::Q6_K => {
                // Sixteen signed 8-bit scales, one per 16 values, times d; with the
                // 6-bit values' offset of 32 folded in: y = d·sc·q − 32·d·sc.
                let d = half(ir, p, 208, f16c)?;
                let i8v = ir.ctx.i8_type().vec_type(16);
                let raw = ir.b.build_load(i8v, byte_at(ir, p, ir.int(192))?, "")?;
                if let Some(inst) = raw.as_instruction_value() {
                    inst.set_alignment(1).map_err(|e| IrError(e.to_string()))?;
                }
                let v16 = ir.f32.vec_type(16);
                let sc = ir.b.build_int_s_extend(
                    raw.into_vector_value(),
                    ir.ctx.i32_type().vec_type(16),
                    "",
                )?;
                let sc = ir.b.build_signed_int_to_float(sc, v16, "")?;
                let d1 = ir.b.build_float_mul(sc, ir.splat(v16, d.into())?, "")?;
                let off =
                    ir.b.build_float_mul(d1, ir.splat(v16, ir.f32.const_float(-32.0).into())?, "")?;
                let (ds, offs) = (
                    lanes_broadcast(ir, d1, lanes)?,
                    lanes_broadcast(ir, off, lanes)?,
                );
                ds.into_iter()
                    .zip(offs)
                    .map(|(d, o)| (d, Some(o)))
                    .collect()
            }
            other => return Err(IrError(format!("no kernels for {} blocks", other.name()))),
        };
        // AVX-512's `vpermps` picks among 16 floats by the low 4 bits of each index:
        // exactly a nibble's range.
        let tables = if ty == GgmlType::Q4_K && lanes == 16 {
            let iota: Vec<_> = (0..16).map(|q| ir.f32.const_float(q as f64)).collect();
            let iota = VectorType::const_vector(&iota);
            scales
                .iter()
                .map(|(d, m)| match m {
                    Some(m) => ir.fmuladd(iota, *d, *m),
                    None => Err(IrError("Q4_K block without mins".into())),
                })
                .collect::<IrResult<Vec<_>>>()?
        } else {
            Vec::new()
        };
        Ok(Block {
            ty,
            p,
            lanes,
            scales,
            tables,
        })
    }

    /// Values `s·L .. (s + 1)·L` (L = lanes) of the block, as f32.
    pub(crate) fn values(&self, ir: &Ir<'ctx>, s: u64) -> IrResult<VectorValue<'ctx>> {
        let (lanes, p) = (self.lanes, self.p);
        let l = lanes as u64;
        let (i32v, vt) = (ir.ctx.i32_type().vec_type(lanes), ir.f32.vec_type(lanes));
        let load = |off: u64| bytes_at(ir, p, ir.int(off), lanes);
        let bytes = |v: u64| {
            let c = ir.ctx.i8_type().const_int(v, false);
            VectorType::const_vector(&vec![c; lanes as usize])
        };
        match self.ty {
            GgmlType::F16 | GgmlType::BF16 => {
                let i16v = ir.ctx.i16_type().vec_type(lanes);
                let h =
                    ir.b.build_load(i16v, byte_at(ir, p, ir.int(2 * s * l))?, "")?;
                if let Some(inst) = h.as_instruction_value() {
                    inst.set_alignment(1).map_err(|e| IrError(e.to_string()))?;
                }
                let h = h.into_vector_value();
                if self.ty == GgmlType::F16 && lanes >= 8 {
                    // F16C: vcvtph2ps.
                    let hv = ir.ctx.f16_type().vec_type(lanes);
                    let h = ir.b.build_bit_cast(h, hv, "")?.into_vector_value();
                    return Ok(ir.b.build_float_ext(h, vt, "")?);
                }
                let i32t = ir.ctx.i32_type();
                let k =
                    |v: u64| VectorType::const_vector(&vec![i32t.const_int(v, false); l as usize]);
                let h = ir.b.build_int_z_extend(h, i32v, "")?;
                if self.ty == GgmlType::BF16 {
                    // The top half of an f32.
                    let bits = ir.b.build_left_shift(h, k(16), "")?;
                    return Ok(ir.b.build_bit_cast(bits, vt, "")?.into_vector_value());
                }
                // f16 without F16C: the magnitude's bits shifted into an f32, scaled by
                // 2^112, then the sign (as `half`).
                let mag =
                    ir.b.build_left_shift(ir.b.build_and(h, k(0x7fff), "")?, k(13), "")?;
                let mag = ir.b.build_bit_cast(mag, vt, "")?.into_vector_value();
                let scale = ir.splat(vt, ir.f32.const_float(2f64.powi(112)).into())?;
                let scaled = ir.b.build_float_mul(mag, scale, "")?;
                let bits = ir.b.build_bit_cast(scaled, i32v, "")?.into_vector_value();
                let sign =
                    ir.b.build_left_shift(ir.b.build_and(h, k(0x8000), "")?, k(16), "")?;
                let y = ir.b.build_or(bits, sign, "")?;
                Ok(ir.b.build_bit_cast(y, vt, "")?.into_vector_value())
            }
            GgmlType::Q8_0 => {
                // y = d · q.
                let q = ir.b.build_int_s_extend(load(2 + s * l)?, i32v, "")?;
                let q = ir.b.build_signed_int_to_float(q, vt, "")?;
                Ok(ir.b.build_float_mul(q, self.scales[0].0, "")?)
            }
            GgmlType::Q4_K => {
                // 64 values per 32 bytes: the low nibbles are the first 32 (sub-block
                // 2c), the high nibbles the next 32 (sub-block 2c + 1);
                // y = d·sc·q − dmin·m.
                let e0 = s * l;
                let (chunk, within) = (e0 / 64, e0 % 64);
                let raw = load(16 + chunk * 32 + within % 32)?;
                if let Some(table) = self.tables.get((e0 / 32) as usize) {
                    // The byte as the index (vpermps reads its low nibble), or the byte
                    // shifted right by 4 for the high nibble.
                    let idx = ir.b.build_int_z_extend(raw, i32v, "")?;
                    let idx = if within >= 32 {
                        let four = ir.ctx.i32_type().const_int(4, false);
                        let four = VectorType::const_vector(&vec![four; lanes as usize]);
                        ir.b.build_right_shift(idx, four, false, "")?
                    } else {
                        idx
                    };
                    let v = ir.intrinsic(
                        "llvm.x86.avx512.permvar.sf.512",
                        &[],
                        &[(*table).into(), idx.into()],
                    )?;
                    return Ok(v.into_vector_value());
                }
                let nib = if within >= 32 {
                    ir.b.build_right_shift(raw, bytes(4), false, "")?
                } else {
                    ir.b.build_and(raw, bytes(15), "")?
                };
                let q = ir.b.build_int_z_extend(nib, i32v, "")?;
                let q = ir.b.build_unsigned_int_to_float(q, vt, "")?;
                let (d, m) = &self.scales[(e0 / 32) as usize];
                let m = m.ok_or_else(|| IrError("Q4_K block without mins".into()))?;
                ir.fmuladd(q, *d, m)
            }
            GgmlType::Q4_0 | GgmlType::Q4_1 | GgmlType::Q5_0 | GgmlType::Q5_1 => {
                // 32 values: the low nibbles of the 16 value bytes are values 0..16, the
                // high nibbles 16..32; Q5 adds bit e of the 32-bit qh as bit 4 of value e.
                let (qh_at, qs_at) = match self.ty {
                    GgmlType::Q4_0 => (None, 2),
                    GgmlType::Q4_1 => (None, 4),
                    GgmlType::Q5_0 => (Some(2), 6),
                    _ => (Some(4), 8),
                };
                let e0 = s * l;
                let raw = load(qs_at + e0 % 16)?;
                let nib = if e0 >= 16 {
                    ir.b.build_right_shift(raw, bytes(4), false, "")?
                } else {
                    ir.b.build_and(raw, bytes(15), "")?
                };
                let mut q = ir.b.build_int_z_extend(nib, i32v, "")?;
                if let Some(at) = qh_at {
                    let i32t = ir.ctx.i32_type();
                    let word = ir.b.build_load(i32t, byte_at(ir, p, ir.int(at))?, "")?;
                    if let Some(inst) = word.as_instruction_value() {
                        inst.set_alignment(1).map_err(|e| IrError(e.to_string()))?;
                    }
                    let word = ir.splat(i32v, word)?;
                    let shifts: Vec<_> = (0..l).map(|i| i32t.const_int(e0 + i, false)).collect();
                    let bits =
                        ir.b.build_right_shift(word, VectorType::const_vector(&shifts), false, "")?;
                    let one = VectorType::const_vector(&vec![i32t.const_int(1, false); l as usize]);
                    let four =
                        VectorType::const_vector(&vec![i32t.const_int(4, false); l as usize]);
                    let bit =
                        ir.b.build_left_shift(ir.b.build_and(bits, one, "")?, four, "")?;
                    q = ir.b.build_or(q, bit, "")?;
                }
                let q = ir.b.build_unsigned_int_to_float(q, vt, "")?;
                let (d, off) = &self.scales[0];
                let off = off.ok_or_else(|| IrError("block without an offset".into()))?;
                ir.fmuladd(q, *d, off)
            }
            GgmlType::Q5_K => {
                // As Q4_K, with bit `sub` of qh byte (e % 32) as bit 4 of value e.
                let e0 = s * l;
                let (chunk, within, sub) = (e0 / 64, e0 % 64, e0 / 32);
                let raw = load(48 + chunk * 32 + within % 32)?;
                let nib = if within >= 32 {
                    ir.b.build_right_shift(raw, bytes(4), false, "")?
                } else {
                    ir.b.build_and(raw, bytes(15), "")?
                };
                let hi = load(16 + within % 32)?;
                let hi = ir.b.build_right_shift(hi, bytes(sub), false, "")?;
                let hi =
                    ir.b.build_left_shift(ir.b.build_and(hi, bytes(1), "")?, bytes(4), "")?;
                let q = ir.b.build_or(nib, hi, "")?;
                let q = ir.b.build_int_z_extend(q, i32v, "")?;
                let q = ir.b.build_unsigned_int_to_float(q, vt, "")?;
                let (d, m) = &self.scales[sub as usize];
                let m = m.ok_or_else(|| IrError("Q5_K block without mins".into()))?;
                ir.fmuladd(q, *d, m)
            }
            GgmlType::Q6_K => {
                // Value e of half h = e / 128 (r = e % 128): its low 4 bits in byte
                // h·64 + r % 64 of ql (the high nibble when r ≥ 64), its top 2 bits at
                // 2·(r / 32) in byte h·32 + r % 32 of qh (at 128); scale h·8 + r / 16.
                let e0 = s * l;
                let (h, r) = (e0 / 128, e0 % 128);
                let lo = load(h * 64 + r % 64)?;
                let lo = if r >= 64 {
                    ir.b.build_right_shift(lo, bytes(4), false, "")?
                } else {
                    ir.b.build_and(lo, bytes(15), "")?
                };
                let hi = load(128 + h * 32 + r % 32)?;
                let hi = ir.b.build_right_shift(hi, bytes(2 * (r / 32)), false, "")?;
                let hi = ir.b.build_and(hi, bytes(3), "")?;
                let hi = ir.b.build_left_shift(hi, bytes(4), "")?;
                let q = ir.b.build_or(lo, hi, "")?;
                let q = ir.b.build_int_z_extend(q, i32v, "")?;
                let q = ir.b.build_unsigned_int_to_float(q, vt, "")?;
                let (d, off) = &self.scales[(h * 8 + r / 16) as usize];
                let off = off.ok_or_else(|| IrError("Q6_K block without offsets".into()))?;
                ir.fmuladd(q, *d, off)
            }
            other => Err(IrError(format!("no kernels for {} blocks", other.name()))),
        }
    }
}

/// Element `idx` of the blocks at `base`, as f32 (an embedding row gathered from a
/// quantized table): scalar code, bit-exact with the vector decoder.
pub(crate) fn element<'ctx>(
    ir: &Ir<'ctx>,
    ty: GgmlType,
    base: PointerValue<'ctx>,
    idx: IntValue<'ctx>,
    f16c: bool,
) -> IrResult<FloatValue<'ctx>> {
    let (per, bytes) = ty.kernel_block();
    let (i8t, i32t) = (ir.ctx.i8_type(), ir.ctx.i32_type());
    let block = ir.b.build_int_unsigned_div(idx, ir.int(per as u64), "")?;
    let e = ir.b.build_int_unsigned_rem(idx, ir.int(per as u64), "")?;
    let p = byte_at(ir, base, ir.mul(block, ir.int(bytes as u64))?)?;
    let byte_at_dyn = |off: IntValue<'ctx>| -> IrResult<IntValue<'ctx>> {
        let v =
            ir.b.build_load(i8t, byte_at(ir, p, off)?, "")?
                .into_int_value();
        Ok(v)
    };
    match ty {
        GgmlType::F16 => half_at(ir, byte_at(ir, p, ir.mul(e, ir.int(2))?)?, f16c),
        GgmlType::BF16 => {
            let h = ir.b.build_load(
                ir.ctx.i16_type(),
                byte_at(ir, p, ir.mul(e, ir.int(2))?)?,
                "",
            )?;
            if let Some(inst) = h.as_instruction_value() {
                inst.set_alignment(2).map_err(|e| IrError(e.to_string()))?;
            }
            let h = ir.b.build_int_z_extend(h.into_int_value(), i32t, "")?;
            let bits = ir.b.build_left_shift(h, i32t.const_int(16, false), "")?;
            Ok(ir.b.build_bit_cast(bits, ir.f32, "")?.into_float_value())
        }
        GgmlType::Q8_0 => {
            let q = byte_at_dyn(ir.add(e, ir.int(2))?)?;
            let q = ir.b.build_signed_int_to_float(q, ir.f32, "")?;
            Ok(ir.b.build_float_mul(q, half(ir, p, 0, f16c)?, "")?)
        }
        GgmlType::Q4_0 | GgmlType::Q4_1 | GgmlType::Q5_0 | GgmlType::Q5_1 => {
            // Value e: the low (e < 16) or high nibble of value byte e % 16; Q5 adds bit
            // e of the 32-bit qh as bit 4. y = d·(q − 8 | 16), or d·q + m.
            let c = |v: u64| i32t.const_int(v, false);
            let (qh_at, qs_at, min) = match ty {
                GgmlType::Q4_0 => (None, 2, false),
                GgmlType::Q4_1 => (None, 4, true),
                GgmlType::Q5_0 => (Some(2), 6, false),
                _ => (Some(4), 8, true),
            };
            let lo = ir.b.build_int_unsigned_rem(e, ir.int(16), "")?;
            let raw = byte_at_dyn(ir.add(lo, ir.int(qs_at))?)?;
            let raw = ir.b.build_int_z_extend(raw, i32t, "")?;
            let shift = ir.b.build_int_truncate(
                ir.mul(ir.b.build_int_unsigned_div(e, ir.int(16), "")?, ir.int(4))?,
                i32t,
                "",
            )?;
            let mut q =
                ir.b.build_and(ir.b.build_right_shift(raw, shift, false, "")?, c(15), "")?;
            if let Some(at) = qh_at {
                let word = ir.b.build_load(i32t, byte_at(ir, p, ir.int(at))?, "")?;
                if let Some(inst) = word.as_instruction_value() {
                    inst.set_alignment(1).map_err(|e| IrError(e.to_string()))?;
                }
                let e32 = ir.b.build_int_truncate(e, i32t, "")?;
                let bit =
                    ir.b.build_right_shift(word.into_int_value(), e32, false, "")?;
                let bit =
                    ir.b.build_left_shift(ir.b.build_and(bit, c(1), "")?, c(4), "")?;
                q = ir.b.build_or(q, bit, "")?;
            }
            let d = half(ir, p, 0, f16c)?;
            if min {
                let q = ir.b.build_unsigned_int_to_float(q, ir.f32, "")?;
                let y = ir.b.build_float_mul(d, q, "")?;
                return Ok(ir.b.build_float_add(y, half(ir, p, 2, f16c)?, "")?);
            }
            let bias = if ty == GgmlType::Q4_0 { 8 } else { 16 };
            let q = ir.b.build_int_sub(q, c(bias), "")?;
            let q = ir.b.build_signed_int_to_float(q, ir.f32, "")?;
            Ok(ir.b.build_float_mul(d, q, "")?)
        }
        GgmlType::Q4_K | GgmlType::Q5_K => {
            // Value e: byte 32·(e / 64) + e % 32 of the values (at 16; Q5_K: 48), its high
            // nibble when e % 64 ≥ 32; Q5_K adds bit j of qh byte e % 32 (at 16) as bit 4.
            // Sub-block j = e / 32. get_scale_min_k4 with jj = j mod 4: j < 4 reads scale
            // bytes jj and jj + 4, j ≥ 4 reads jj + 8 with the top bits of jj and jj + 4.
            let c = |v: u64| i32t.const_int(v, false);
            let qs_at = if ty == GgmlType::Q5_K { 48 } else { 16 };
            let chunk = ir.b.build_int_unsigned_div(e, ir.int(64), "")?;
            let lo = ir.b.build_int_unsigned_rem(e, ir.int(32), "")?;
            let off = ir.add(ir.add(ir.mul(chunk, ir.int(32))?, lo)?, ir.int(qs_at))?;
            let raw = ir.b.build_int_z_extend(byte_at_dyn(off)?, i32t, "")?;
            let j = ir.b.build_int_unsigned_div(e, ir.int(32), "")?;
            let high = ir.eq(ir.b.build_and(j, ir.int(1), "")?, ir.int(1))?;
            let nib = ir.b.build_select(
                high,
                ir.b.build_right_shift(raw, c(4), false, "")?,
                ir.b.build_and(raw, c(15), "")?,
                "",
            )?;
            let mut nib = nib.into_int_value();
            if ty == GgmlType::Q5_K {
                let qh =
                    ir.b.build_int_z_extend(byte_at_dyn(ir.add(lo, ir.int(16))?)?, i32t, "")?;
                let j32 = ir.b.build_int_truncate(j, i32t, "")?;
                let bit = ir.b.build_right_shift(qh, j32, false, "")?;
                let bit =
                    ir.b.build_left_shift(ir.b.build_and(bit, c(1), "")?, c(4), "")?;
                nib = ir.b.build_or(nib, bit, "")?;
            }
            let q = ir.b.build_unsigned_int_to_float(nib, ir.f32, "")?;
            let jj = ir.b.build_and(j, ir.int(3), "")?;
            let s = |add: u64| -> IrResult<IntValue<'ctx>> {
                let v = byte_at_dyn(ir.add(jj, ir.int(4 + add))?)?;
                Ok(ir.b.build_int_z_extend(v, i32t, "")?)
            };
            let (s0, s4, s8) = (s(0)?, s(4)?, s(8)?);
            let top = |v: IntValue<'ctx>| -> IrResult<IntValue<'ctx>> {
                let t = ir.b.build_right_shift(v, c(6), false, "")?;
                Ok(ir.b.build_left_shift(t, c(4), "")?)
            };
            let sc_lo = ir.b.build_and(s0, c(63), "")?;
            let m_lo = ir.b.build_and(s4, c(63), "")?;
            let sc_hi =
                ir.b.build_or(ir.b.build_and(s8, c(15), "")?, top(s0)?, "")?;
            let m_hi =
                ir.b.build_or(ir.b.build_right_shift(s8, c(4), false, "")?, top(s4)?, "")?;
            let first =
                ir.b.build_int_compare(inkwell::IntPredicate::ULT, j, ir.int(4), "")?;
            let sc = ir.b.build_select(first, sc_lo, sc_hi, "")?.into_int_value();
            let m = ir.b.build_select(first, m_lo, m_hi, "")?.into_int_value();
            let to_f = |v: IntValue<'ctx>| ir.b.build_unsigned_int_to_float(v, ir.f32, "");
            let d1 = ir.b.build_float_mul(half(ir, p, 0, f16c)?, to_f(sc)?, "")?;
            let m1 = ir.b.build_float_mul(half(ir, p, 2, f16c)?, to_f(m)?, "")?;
            let y = ir.b.build_float_mul(d1, q, "")?;
            Ok(ir.b.build_float_sub(y, m1, "")?)
        }
        GgmlType::Q6_K => {
            let c = |v: u64| i32t.const_int(v, false);
            let h = ir.b.build_int_unsigned_div(e, ir.int(128), "")?;
            let r = ir.b.build_int_unsigned_rem(e, ir.int(128), "")?;
            let r64 = ir.b.build_int_unsigned_rem(r, ir.int(64), "")?;
            let r32 = ir.b.build_int_unsigned_rem(r, ir.int(32), "")?;
            let lo = byte_at_dyn(ir.add(ir.mul(h, ir.int(64))?, r64)?)?;
            let lo = ir.b.build_int_z_extend(lo, i32t, "")?;
            let lo_shift = ir.b.build_int_truncate(
                ir.mul(ir.b.build_int_unsigned_div(r, ir.int(64), "")?, ir.int(4))?,
                i32t,
                "",
            )?;
            let lo =
                ir.b.build_and(ir.b.build_right_shift(lo, lo_shift, false, "")?, c(15), "")?;
            let hi = byte_at_dyn(ir.add(ir.add(ir.mul(h, ir.int(32))?, r32)?, ir.int(128))?)?;
            let hi = ir.b.build_int_z_extend(hi, i32t, "")?;
            let hi_shift = ir.b.build_int_truncate(
                ir.mul(ir.b.build_int_unsigned_div(r, ir.int(32), "")?, ir.int(2))?,
                i32t,
                "",
            )?;
            let hi =
                ir.b.build_and(ir.b.build_right_shift(hi, hi_shift, false, "")?, c(3), "")?;
            let q =
                ir.b.build_or(lo, ir.b.build_left_shift(hi, c(4), "")?, "")?;
            let q = ir.b.build_int_sub(q, c(32), "")?;
            let q = ir.b.build_signed_int_to_float(q, ir.f32, "")?;
            let g = ir.b.build_int_unsigned_div(e, ir.int(16), "")?;
            let sc = byte_at_dyn(ir.add(g, ir.int(192))?)?;
            let sc = ir.b.build_signed_int_to_float(sc, ir.f32, "")?;
            let d1 = ir.b.build_float_mul(half(ir, p, 208, f16c)?, sc, "")?;
            Ok(ir.b.build_float_mul(d1, q, "")?)
        }
        other => Err(IrError(format!("no kernels for {} blocks", other.name()))),
    }
}

/// `archc_sgemm_pack_bt_{type}(kc, nc, b, ldb, bp)`: as `archc_sgemm_pack_bt`, from rows
/// of blocks (`b` the block holding the panel's first value, `ldb` in values).
fn emit_pack_bt<'ctx>(
    ir: &Ir<'ctx>,
    t: &SgemmTiles,
    ty: GgmlType,
    tag: &str,
) -> IrResult<FunctionValue<'ctx>> {
    let Packer {
        f,
        rows: kc,
        cols: nc,
        src: b,
        ld: ldb,
        dst: bp,
    } = packer(ir, &format!("archc_sgemm_pack_bt_{tag}"))?;
    let (per, bytes) = ty.kernel_block();
    let (per, lanes) = (per as u64, t.lanes as u64);
    let nr_c = ir.int(t.nr as u64);
    // Bytes between consecutive rows of B.
    let row_bytes = ir.mul(
        ir.b.build_int_unsigned_div(ldb, ir.int(per), "")?,
        ir.int(bytes as u64),
    )?;
    let row = |j: IntValue<'ctx>| byte_at(ir, b, ir.mul(j, row_bytes)?);
    ir.for_range(f, "jp", ir.int(0), nc, t.nr as u64, |j0| {
        let cols = ir.min(nr_c, ir.sub(nc, j0)?)?;
        let panel = ir.at(bp, ir.mul(j0, kc)?)?;
        ir.if_else(
            f,
            "full",
            ir.eq(cols, nr_c)?,
            || {
                // Per block and half panel: L columns' values decoded L at a time,
                // transposed in registers, stored as panel rows.
                ir.for_range(f, "kb", ir.int(0), kc, per, |k0| {
                    for h in 0..(t.nr / t.lanes) as u64 {
                        let blocks = (0..lanes)
                            .map(|r| {
                                let p = row(ir.add(j0, ir.int(h * lanes + r))?)?;
                                Block::read(ir, ty, block_at(ir, ty, p, k0)?, t.lanes)
                            })
                            .collect::<IrResult<Vec<_>>>()?;
                        for s in 0..per / lanes {
                            let vals = blocks
                                .iter()
                                .map(|b| b.values(ir, s))
                                .collect::<IrResult<Vec<_>>>()?;
                            for (kk, v) in transpose(ir, vals)?.into_iter().enumerate() {
                                let k = ir.add(k0, ir.int(s * lanes + kk as u64))?;
                                let dst = ir.at(panel, ir.mad(k, nr_c, ir.int(h * lanes))?)?;
                                ir.store(dst, v)?;
                            }
                        }
                    }
                    Ok(())
                })
            },
            || {
                // The last, partial panel: zero it, then the columns that exist.
                let zeros = ir.mul(ir.mul(kc, nr_c)?, ir.int(4))?;
                ir.b.build_memset(panel, 4, ir.ctx.i8_type().const_zero(), zeros)?;
                ir.for_range(f, "jj", ir.int(0), cols, 1, |jj| {
                    let src = row(ir.add(j0, jj)?)?;
                    ir.for_range(f, "kb", ir.int(0), kc, per, |k0| {
                        let blk = Block::read(ir, ty, block_at(ir, ty, src, k0)?, t.lanes)?;
                        for s in 0..per / lanes {
                            let v = blk.values(ir, s)?;
                            for l in 0..lanes {
                                let x = ir.b.build_extract_element(v, ir.int(l), "")?;
                                let k = ir.add(k0, ir.int(s * lanes + l))?;
                                ir.store(ir.at(panel, ir.mad(k, nr_c, jj)?)?, x)?;
                            }
                        }
                        Ok(())
                    })
                })
            },
        )
    })?;
    ir.b.build_return(None)?;
    Ok(f)
}

/// `archc_gemv_bt_{type}(rows, cols, k, a, lda, b, ldb, c, ldc)`: `archc_gemv_bt` over a
/// B of blocks. Each block of each column is decoded once, a vector at a time, into FMAs
/// with every row of A.
fn emit_gemv<'ctx>(
    ir: &Ir<'ctx>,
    t: &SgemmTiles,
    ty: GgmlType,
    tag: &str,
) -> IrResult<FunctionValue<'ctx>> {
    let g = gemv_function(ir, &format!("archc_gemv_bt_{tag}"))?;
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
    let (per, bytes) = ty.kernel_block();
    let (per, lanes) = (per as u64, t.lanes as u64);
    let vt = ir.f32.vec_type(t.lanes);
    let zero_v: BasicValueEnum = vt.const_zero().into();
    let row_bytes = ir.mul(
        ir.b.build_int_unsigned_div(ldb, ir.int(per), "")?,
        ir.int(bytes as u64),
    )?;
    let block = |j: IntValue<'ctx>, width: usize, r: usize| -> IrResult<()> {
        let brows = (0..width)
            .map(|w| byte_at(ir, b, ir.mul(ir.add(j, ir.int(w as u64))?, row_bytes)?))
            .collect::<IrResult<Vec<_>>>()?;
        let arows = (0..r)
            .map(|i| ir.at(a, ir.mul(ir.int(i as u64), lda)?))
            .collect::<IrResult<Vec<_>>>()?;
        // `CHAINS` accumulators per (row, column), alternating over the block's vectors:
        // independent FMA chains hide the FMA latency when few columns run at once.
        let (_, accs) = ir.carried_loop(
            f,
            "kb",
            WholeSteps {
                start: ir.int(0),
                limit: k,
                step: per,
            },
            &vec![zero_v; r * width * CHAINS],
            |k0, cur| {
                let blocks = brows
                    .iter()
                    .map(|&p| block_at(ir, ty, p, k0))
                    .collect::<IrResult<Vec<_>>>()?;
                // One hint per cache line a block spans (Q4_K's 144 bytes: three).
                for &p in &blocks {
                    for line in 0..(bytes as u64).div_ceil(64) {
                        prefetch(ir, p, PREFETCH_BYTES + 64 * line)?;
                    }
                }
                let blocks = blocks
                    .into_iter()
                    .map(|p| Block::read(ir, ty, p, t.lanes))
                    .collect::<IrResult<Vec<_>>>()?;
                let mut acc: Vec<VectorValue<'ctx>> =
                    cur.iter().map(|v| v.into_vector_value()).collect();
                for s in 0..per / lanes {
                    let ws = blocks
                        .iter()
                        .map(|b| b.values(ir, s))
                        .collect::<IrResult<Vec<_>>>()?;
                    let kk = ir.add(k0, ir.int(s * lanes))?;
                    let chain = s as usize % CHAINS;
                    for (i, &arow) in arows.iter().enumerate() {
                        let x = ir.load_vec(vt, ir.at(arow, kk)?)?;
                        for (w, &wv) in ws.iter().enumerate() {
                            let n = (i * width + w) * CHAINS + chain;
                            acc[n] = ir.fmuladd(x, wv, acc[n])?;
                        }
                    }
                }
                Ok(acc.into_iter().map(Into::into).collect())
            },
        )?;
        for i in 0..r {
            for w in 0..width {
                let n = (i * width + w) * CHAINS;
                let mut sum = accs[n].into_vector_value();
                for c in 1..CHAINS {
                    sum =
                        ir.b.build_float_add(sum, accs[n + c].into_vector_value(), "")?;
                }
                let at = ir.mad(ir.int(i as u64), ldc, ir.add(j, ir.int(w as u64))?)?;
                store_sum(ir, ir.f32.const_zero().into(), sum, ir.at(c, at)?)?;
            }
        }
        Ok(())
    };
    // Accumulators within the vector registers, beside the decoded values and scales.
    let registers = if t.lanes >= 16 { 16 } else { 8 };
    let nests: Vec<(usize, usize)> = (1..=GEMV_MAX_ROWS as usize)
        .map(|r| (r, (registers / (r * CHAINS)).clamp(1, 4)))
        .collect();
    emit_column_nests(ir, &g, &nests, &block)?;
    ir.b.build_return(None)?;
    Ok(f)
}

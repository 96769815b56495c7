//! Integer matrix products for prompts over K-quant blocks (Q4_K, Q5_K, Q6_K): the
//! `int_dots` numerics of a build (`archc … --int-dots`) for products of more rows than
//! the matrix–vector routine of `qdot_ir` takes, computing what it computes.
//!
//! `archc_sgemm_bt_{type}_q8(m, n, k, a, lda, b, ldb, c, ldc, work)` takes the f32 packed
//! sgemm's arguments and workspace and runs blocked loops — MC rows (a whole parallel row
//! block, up to 576), one block of 256 values of k, NC columns, then NR-column and MR-row
//! panels — so that A is quantized once per call and B packed once per call and NC
//! columns, with two packers of its own:
//!
//! - B: each block of NC columns decoded to unsigned bytes (Q4_K's nibble, Q5_K's nibble
//!   and high bit, Q6_K's six bits without the offset of 32) and laid out for vectors
//!   whose lanes are columns: for each group of four consecutive values, one 4-byte lane
//!   per column of the NR-column panel; then per panel the sub-block scales (i32 per
//!   column), the offset coefficients in pairs of i16 (Q4_K/Q5_K: the mins m_j; Q6_K:
//!   32 · sc_s), and d and dmin (Q6_K: d) as f32.
//! - A: each row's 256 values quantized as ggml's Q8_K (`qdot_ir::quantize_block`): the
//!   bytes in natural order, d_a, and the sums of the q's per sub-block in pairs of i16.
//!
//! The microkernel keeps MR × NR/lanes integer accumulators per sub-block: each group of
//! four values is one `vpdpbusd` per (row, vector) — the column lanes' bytes times the
//! row's four bytes broadcast (`{1to16}`), summed in i32 — where AVX-512 VNNI exists, a
//! `vpmaddubsw` + `vpmaddwd` by ones elsewhere. Per sub-block the sums are multiplied by
//! its scales (`vpmulld`) into the block's sums; per block the offset term
//! `Σ_j m_j · Σ_{i∈j} q8_i` is `vpmaddwd` over the pairs, and in f32
//! `C (+)= d_a · (d_w · Σ_j sc_j Σ_{i∈j} q_i · q8_i − dmin_w · Σ_j m_j Σ_{i∈j} q8_i)`.
//! Every integer is exact (the largest, Q6_K's block sum, stays below 2^29); the f32 steps
//! differ from the matrix–vector routine's only in their order.
//!
//! Four values × 16 columns per instruction, where the f32 sgemm does one value × 16
//! columns per FMA: packing B costs a decode and a scattered store per four values and
//! column, repaid over the rows of the block.

use super::ir::{Ir, IrError, IrResult, WholeSteps};
use super::pack::{packer, Packer};
use super::qdot_ir::{has_int_dots, quantize_block, KBlock, Kind, QK};
use super::quant_ir::{block_at, byte_at, bytes_at, half, q4k_scales_mins};
use super::sgemm_ir::{matmul_function, store_tile, MatmulFn, SgemmTiles};
use arch_runtime::gguf::GgmlType;
use inkwell::module::Linkage;
use inkwell::types::VectorType;
use inkwell::values::{
    BasicMetadataValueEnum, BasicValue, BasicValueEnum, FunctionValue, IntValue, PointerValue,
    VectorValue,
};
use inkwell::IntPredicate;

/// The register tile and packed layouts of one block type's integer product.
#[derive(Clone, Copy, Debug)]
struct Tiles {
    /// Vector width in bytes: 64 (AVX-512BW) or 32 (AVX2).
    width: u64,
    /// Rows of C per microkernel.
    mr: u64,
    /// Columns of C per microkernel, a multiple of the i32 lanes.
    nr: u64,
    /// Sub-blocks per block, each with its own scale: 8 of 32 values, or Q6_K's 16 of 16.
    subs: u64,
    /// `vpdpbusd` (AVX-512 VNNI).
    vnni: bool,
}

impl Tiles {
    fn new(ty: GgmlType, width: u64, vnni: bool) -> Tiles {
        // AVX-512: 6 rows × 2 vectors hold 12 sub-block and 12 block accumulators, two
        // vectors of B and temporaries in 32 registers; AVX2 6 × 1 in 16.
        let nr = if width == 64 { 32 } else { 8 };
        Tiles {
            width,
            mr: 6,
            nr,
            subs: if ty == GgmlType::Q6_K { 16 } else { 8 },
            vnni: vnni && width == 64,
        }
    }

    /// i32 (and f32) lanes per vector.
    fn lanes(&self) -> u64 {
        self.width / 4
    }

    /// Groups of four values per sub-block.
    fn groups_per_sub(&self) -> u64 {
        QK / 4 / self.subs
    }

    // A packed B panel (bytes): the values, the scales, the offset pairs, d, dmin.
    fn b_scales(&self) -> u64 {
        QK * self.nr
    }
    fn b_pairs(&self) -> u64 {
        self.b_scales() + 4 * self.subs * self.nr
    }
    fn b_d(&self) -> u64 {
        self.b_pairs() + 2 * self.subs * self.nr
    }
    fn b_dmin(&self) -> u64 {
        self.b_d() + 4 * self.nr
    }
    fn b_panel(&self) -> u64 {
        (self.b_dmin() + 4 * self.nr).next_multiple_of(64)
    }

    // A packed A panel (bytes): MR rows of 256 bytes, their d_a, their sum pairs.
    fn a_d(&self) -> u64 {
        QK * self.mr
    }
    fn a_pairs(&self) -> u64 {
        self.a_d() + 4 * self.mr
    }
    fn a_panel(&self) -> u64 {
        (self.a_pairs() + 2 * self.subs * self.mr).next_multiple_of(64)
    }
}

/// `archc_sgemm_bt_{type}_q8`: the integer product over blocks of `ty` with vectors of
/// `width` bytes (64 with AVX-512BW, 32 with AVX2), `vpdpbusd` where `vnni`, inside the
/// packing workspace of `t` (the f32 sgemm's: its NC and MC).
pub(crate) fn emit_sgemm_q8<'ctx>(
    ir: &Ir<'ctx>,
    t: &SgemmTiles,
    ty: GgmlType,
    width: u32,
    vnni: bool,
) -> IrResult<FunctionValue<'ctx>> {
    if width != 32 && width != 64 {
        return Err(IrError(format!("integer products in {width}-byte vectors")));
    }
    if !has_int_dots(ty) {
        return Err(IrError(format!(
            "no integer products for {} blocks",
            ty.name()
        )));
    }
    if t.kc as u64 != QK {
        return Err(IrError(format!(
            "integer products step k by {QK}, not {}",
            t.kc
        )));
    }
    let q = Tiles::new(ty, u64::from(width), vnni);
    // B: one block of NC columns; A: as many rows as the rest of the workspace holds (up
    // to 576, a parallel row block), so that each row's block is quantized once per call
    // and each column's once per call and MC rows.
    let nc = u64::from(t.nc);
    let b_bytes = nc.div_ceil(q.nr) * q.b_panel();
    let room = (4 * t.workspace_floats() as u64).saturating_sub(b_bytes);
    let mc = ((room / q.a_panel()) * q.mr).min(576);
    if mc == 0 {
        return Err(IrError(format!(
            "integer products need more than {} bytes of workspace",
            4 * t.workspace_floats()
        )));
    }
    let a_bytes = (mc / q.mr * q.a_panel()).next_multiple_of(64);
    if a_bytes + b_bytes > 4 * t.workspace_floats() as u64 {
        return Err(IrError(format!(
            "integer products need {} bytes of workspace, the sgemm's is {}",
            a_bytes + b_bytes,
            4 * t.workspace_floats()
        )));
    }
    let kind = Kind { ty, width: q.width };
    let tag = ty.name().to_ascii_lowercase();
    let pack_b = emit_pack_b(ir, kind, &q, &tag)?;
    let pack_a = emit_pack_a(ir, &q, &tag)?;
    let kernel = emit_kernel(ir, &q, &tag)?;

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
    } = matmul_function(
        ir,
        &format!("archc_sgemm_bt_{tag}_q8"),
        Some(Linkage::Internal),
    )?;
    let ap = work;
    let bp = byte_at(ir, work, ir.int(a_bytes))?;
    let (per, bytes) = ty.kernel_block();
    let row_bytes = ir.mul(
        ir.b.build_int_unsigned_div(ldb, ir.int(per as u64), "")?,
        ir.int(bytes as u64),
    )?;
    // Rows, then k, then columns: A's block is quantized once per MC rows, B's once per
    // MC rows and NC columns; C takes each block's products in turn.
    ir.for_range(f, "ic", ir.int(0), m, mc, |ic| {
        let rows = ir.min(ir.int(mc), ir.sub(m, ic)?)?;
        ir.for_range(f, "pc", ir.int(0), k, QK, |pc| {
            let accumulate =
                ir.b.build_int_compare(IntPredicate::NE, pc, ir.int(0), "")?;
            let asrc = ir.at(a, ir.mad(ic, lda, pc)?)?;
            ir.b.build_call(
                pack_a,
                &[
                    rows.into(),
                    ir.int(QK).into(),
                    asrc.into(),
                    lda.into(),
                    ap.into(),
                ],
                "",
            )?;
            ir.for_range(f, "jc", ir.int(0), n, nc, |jc| {
                let ncols = ir.min(ir.int(nc), ir.sub(n, jc)?)?;
                let bsrc = block_at(ir, ty, b, ir.mad(jc, ldb, pc)?)?;
                ir.b.build_call(
                    pack_b,
                    &[
                        ncols.into(),
                        ir.int(QK).into(),
                        bsrc.into(),
                        row_bytes.into(),
                        bp.into(),
                    ],
                    "",
                )?;
                ir.for_range(f, "jr", ir.int(0), ncols, q.nr, |jr| {
                    let nr = ir.min(ir.int(q.nr), ir.sub(ncols, jr)?)?;
                    let panel = ir.b.build_int_unsigned_div(jr, ir.int(q.nr), "")?;
                    let bpanel = byte_at(ir, bp, ir.mul(panel, ir.int(q.b_panel()))?)?;
                    ir.for_range(f, "ir", ir.int(0), rows, q.mr, |i| {
                        let mr = ir.min(ir.int(q.mr), ir.sub(rows, i)?)?;
                        let panel = ir.b.build_int_unsigned_div(i, ir.int(q.mr), "")?;
                        let apanel = byte_at(ir, ap, ir.mul(panel, ir.int(q.a_panel()))?)?;
                        let crow = ir.mad(ir.add(ic, i)?, ldc, ir.add(jc, jr)?)?;
                        let args: [BasicMetadataValueEnum; 7] = [
                            apanel.into(),
                            bpanel.into(),
                            ir.at(c, crow)?.into(),
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

/// `(lo & 0xffff) | hi << 16`: two i16 in one i32 lane, as `vpmaddwd` pairs them.
fn pair<'ctx>(ir: &Ir<'ctx>, lo: IntValue<'ctx>, hi: IntValue<'ctx>) -> IrResult<IntValue<'ctx>> {
    let i32t = ir.ctx.i32_type();
    let lo = ir.b.build_and(lo, i32t.const_int(0xffff, false), "")?;
    let hi = ir.b.build_left_shift(hi, i32t.const_int(16, false), "")?;
    Ok(ir.b.build_or(lo, hi, "")?)
}

/// `archc_qpack_b_{type}(ncols, 256, src, row_bytes, dst)`: `ncols` rows of B (one block each,
/// `row_bytes` apart) into NR-column panels, the last one padded with columns whose
/// scales and d are zero.
fn emit_pack_b<'ctx>(
    ir: &Ir<'ctx>,
    kind: Kind,
    q: &Tiles,
    tag: &str,
) -> IrResult<FunctionValue<'ctx>> {
    let i32t = ir.ctx.i32_type();
    // (ncols, 256, src, row_bytes, dst)
    let Packer {
        f,
        rows: ncols,
        src,
        ld: row_bytes,
        dst,
        ..
    } = packer(ir, &format!("archc_qpack_b_{tag}"))?;
    let padded = ir.mul(
        ir.b.build_int_unsigned_div(ir.add(ncols, ir.int(q.nr - 1))?, ir.int(q.nr), "")?,
        ir.int(q.nr),
    )?;
    let last = ir.sub(ncols, ir.int(1))?;
    let n = (q.width / 4) as u32;
    let words = i32t.vec_type(n);
    let mask = |idx: Vec<u32>| {
        let m: Vec<IntValue<'ctx>> = idx
            .into_iter()
            .map(|i| i32t.const_int(u64::from(i), false))
            .collect();
        VectorType::const_vector(&m)
    };
    // Within each 128-bit lane: dwords (0, 1) of a and b interleaved, or (2, 3); qwords
    // 0 of a and b, or 1 (`vpunpck{l,h}dq`, `vpunpck{l,h}qdq`).
    let unpack = |a: VectorValue<'ctx>, b: VectorValue<'ctx>, wide: bool, hi: bool| {
        let idx: Vec<u32> = (0..n / 4)
            .flat_map(|l| {
                let at = 4 * l + if hi { 2 } else { 0 };
                if wide {
                    [at, at + 1, n + at, n + at + 1]
                } else {
                    [at, n + at, at + 1, n + at + 1]
                }
            })
            .collect();
        ir.b.build_shuffle_vector(a, b, mask(idx), "")
    };
    // Four columns at a time: their value vectors transposed so that each group of four
    // values of the four columns is 16 contiguous bytes of the panel.
    ir.for_range(f, "col", ir.int(0), padded, 4, |col4| {
        let panel = ir.b.build_int_unsigned_div(col4, ir.int(q.nr), "")?;
        let lane = ir.b.build_int_unsigned_rem(col4, ir.int(q.nr), "")?;
        let pp = byte_at(ir, dst, ir.mul(panel, ir.int(q.b_panel()))?)?;
        let mut blocks = Vec::with_capacity(4);
        for c in 0..4u64 {
            let col = ir.add(col4, ir.int(c))?;
            // A padding column reads the last real one; its scales and d are stored as 0.
            let valid = ir.b.build_int_compare(IntPredicate::ULT, col, ncols, "")?;
            let p = byte_at(ir, src, ir.mul(ir.min(col, last)?, row_bytes)?)?;
            blocks.push((p, valid, KBlock::read(ir, kind, p)?));
        }
        for v in 0..QK / q.width {
            let w = blocks
                .iter()
                .map(|(_, _, blk)| {
                    let (vals, _) = blk.vector(ir, kind, v)?;
                    Ok(ir.b.build_bit_cast(vals, words, "")?.into_vector_value())
                })
                .collect::<IrResult<Vec<_>>>()?;
            let (t0, t1) = (
                unpack(w[0], w[1], false, false)?,
                unpack(w[0], w[1], false, true)?,
            );
            let (t2, t3) = (
                unpack(w[2], w[3], false, false)?,
                unpack(w[2], w[3], false, true)?,
            );
            let u = [
                unpack(t0, t2, true, false)?,
                unpack(t0, t2, true, true)?,
                unpack(t1, t3, true, false)?,
                unpack(t1, t3, true, true)?,
            ];
            // Dword e of every column's vector: lane e / 4 of u[e % 4]; it holds values
            // 4·(e % 8).. of segment `kind.segment(v, e / 8)`.
            for e in 0..u64::from(n) {
                let l = (e / 4) as u32;
                let four = ir.b.build_shuffle_vector(
                    u[(e % 4) as usize],
                    words.get_undef(),
                    mask((4 * l..4 * l + 4).collect()),
                    "",
                )?;
                let g = kind.segment(v, e / 8) * 8 + e % 8;
                let at = ir.mad(lane, ir.int(4), ir.int(g * 4 * q.nr))?;
                ir.store(byte_at(ir, pp, at)?, four)?;
            }
        }
        for (c, (p, valid, blk)) in blocks.iter().enumerate() {
            let (p, valid) = (*p, *valid);
            let lane4 = ir.mul(ir.add(lane, ir.int(c as u64))?, ir.int(4))?;
            // Byte offset of this column's lane in a row of NR i32s starting at `base`.
            let slot = |base: u64| ir.add(ir.int(base), lane4);
            let (sc, m, d, dmin) = match kind.ty {
                GgmlType::Q6_K => {
                    let v16 = i32t.vec_type(16);
                    let sc =
                        ir.b.build_int_s_extend(bytes_at(ir, p, ir.int(192), 16)?, v16, "")?;
                    let m = ir.b.build_left_shift(
                        sc,
                        VectorType::const_vector(&[i32t.const_int(5, false); 16]),
                        "",
                    )?;
                    (sc, m, blk.d, blk.d)
                }
                _ => {
                    let (sc, m) = q4k_scales_mins(ir, p)?;
                    (sc, m, blk.d, half(ir, p, 2, true)?)
                }
            };
            let lane_of = |v: VectorValue<'ctx>, j: u64| -> IrResult<IntValue<'ctx>> {
                let x =
                    ir.b.build_extract_element(v, i32t.const_int(j, false), "")?;
                Ok(ir
                    .b
                    .build_select(valid, x.into_int_value(), i32t.const_zero(), "")?
                    .into_int_value())
            };
            for j in 0..q.subs {
                ir.store(
                    byte_at(ir, pp, slot(q.b_scales() + j * 4 * q.nr)?)?,
                    lane_of(sc, j)?,
                )?;
            }
            for j in 0..q.subs / 2 {
                let x = pair(ir, lane_of(m, 2 * j)?, lane_of(m, 2 * j + 1)?)?;
                ir.store(byte_at(ir, pp, slot(q.b_pairs() + j * 4 * q.nr)?)?, x)?;
            }
            let f0 = ir.f32.const_zero();
            for (off, x) in [(q.b_d(), d), (q.b_dmin(), dmin)] {
                let x = ir.b.build_select(valid, x, f0, "")?;
                ir.store(byte_at(ir, pp, slot(off)?)?, x)?;
            }
        }
        Ok(())
    })?;
    ir.b.build_return(None)?;
    Ok(f)
}

/// `archc_qpack_a_{type}(rows, 256, a, lda, dst)`: 256 values of each of `rows` rows of A
/// (f32, `lda` apart) quantized into MR-row panels, the last one padded with zero rows.
fn emit_pack_a<'ctx>(ir: &Ir<'ctx>, q: &Tiles, tag: &str) -> IrResult<FunctionValue<'ctx>> {
    let (i8t, i32t) = (ir.ctx.i8_type(), ir.ctx.i32_type());
    // (rows, 256, a, lda, dst)
    let Packer {
        f,
        rows,
        src: a,
        ld: lda,
        dst,
        ..
    } = packer(ir, &format!("archc_qpack_a_{tag}"))?;
    let padded = ir.mul(
        ir.b.build_int_unsigned_div(ir.add(rows, ir.int(q.mr - 1))?, ir.int(q.mr), "")?,
        ir.int(q.mr),
    )?;
    let lanes = q.lanes();
    let half_pairs = q.subs / 2;
    ir.for_range(f, "row", ir.int(0), padded, 1, |r| {
        let panel = ir.b.build_int_unsigned_div(r, ir.int(q.mr), "")?;
        let rr = ir.b.build_int_unsigned_rem(r, ir.int(q.mr), "")?;
        let pp = byte_at(ir, dst, ir.mul(panel, ir.int(q.a_panel()))?)?;
        let qrow = byte_at(ir, pp, ir.mul(rr, ir.int(QK))?)?;
        let d_at = byte_at(ir, pp, ir.mad(rr, ir.int(4), ir.int(q.a_d()))?)?;
        let pairs = ir.mad(rr, ir.int(4 * half_pairs), ir.int(q.a_pairs()))?;
        let pair_at = |j: u64| ir.add(pairs, ir.int(4 * j));
        let store_bytes = |s: u64, v: VectorValue<'ctx>| -> IrResult<()> {
            let st = ir.b.build_store(byte_at(ir, qrow, ir.int(s * lanes))?, v)?;
            st.set_alignment(1).map_err(|e| IrError(e.to_string()))?;
            Ok(())
        };
        let valid = ir.b.build_int_compare(IntPredicate::ULT, r, rows, "")?;
        ir.if_else(
            f,
            "valid",
            valid,
            || {
                let qb = quantize_block(ir, ir.at(a, ir.mul(r, lda)?)?, lanes as u32)?;
                for (s, &v) in qb.bytes.iter().enumerate() {
                    store_bytes(s as u64, v)?;
                }
                ir.store(d_at, qb.d)?;
                // Per sub-block: 32 values (two sums of 16) or 16 (Q6_K).
                let per = qb.sums16.len() / q.subs as usize;
                let sums: Vec<IntValue<'ctx>> = qb
                    .sums16
                    .chunks(per)
                    .map(|c| {
                        c.iter()
                            .skip(1)
                            .try_fold(c[0], |s, &x| ir.b.build_int_add(s, x, ""))
                    })
                    .collect::<Result<_, _>>()?;
                for j in 0..half_pairs {
                    let x = pair(ir, sums[2 * j as usize], sums[2 * j as usize + 1])?;
                    ir.store(byte_at(ir, pp, pair_at(j)?)?, x)?;
                }
                Ok(())
            },
            || {
                let zeros = i8t.vec_type(lanes as u32).const_zero();
                for s in 0..QK / lanes {
                    store_bytes(s, zeros)?;
                }
                ir.store(d_at, ir.f32.const_zero())?;
                for j in 0..half_pairs {
                    ir.store(byte_at(ir, pp, pair_at(j)?)?, i32t.const_zero())?;
                }
                Ok(())
            },
        )
    })?;
    ir.b.build_return(None)?;
    Ok(f)
}

/// `archc_qgemm_kernel_{type}(ap, bp, c, ldc, accumulate, mr, nr)`: C[0..mr, 0..nr] (+)=
/// one block of the packed A panel times one of the packed B panel.
fn emit_kernel<'ctx>(ir: &Ir<'ctx>, q: &Tiles, tag: &str) -> IrResult<FunctionValue<'ctx>> {
    let (i64t, ptr) = (ir.i64, ir.ptr);
    let (i8t, i16t, i32t) = (ir.ctx.i8_type(), ir.ctx.i16_type(), ir.ctx.i32_type());
    let params = [
        ptr.into(),
        ptr.into(),
        ptr.into(),
        i64t.into(),
        ir.ctx.bool_type().into(),
        i64t.into(),
        i64t.into(),
    ];
    let f = ir.module.add_function(
        &format!("archc_qgemm_kernel_{tag}"),
        ir.ctx.void_type().fn_type(&params, false),
        Some(Linkage::Internal),
    );
    ir.add_fn_attrs(f, &["noinline"]);
    ir.mark_noalias(f, &[0, 1, 2]);
    ir.b.position_at_end(ir.ctx.append_basic_block(f, "entry"));
    let (ap, bp, c) = (
        ir.param_ptr(f, 0)?,
        ir.param_ptr(f, 1)?,
        ir.param_ptr(f, 2)?,
    );
    let ldc = ir.param_int(f, 3)?;
    let accumulate = ir.param_int(f, 4)?;
    let (mr, nr) = (ir.param_int(f, 5)?, ir.param_int(f, 6)?);
    let lanes = q.lanes();
    let (rows, vectors) = (q.mr as usize, (q.nr / lanes) as usize);
    let vi = i32t.vec_type(lanes as u32);
    let vf = ir.f32.vec_type(lanes as u32);
    let vb = i8t.vec_type(q.width as u32);
    let vw = i16t.vec_type((q.width / 2) as u32);
    let tile =
        ir.b.build_array_alloca(ir.f32, ir.int(q.mr * q.nr), "tile")?;
    for r in 0..q.mr {
        let row = ir.mul(ir.int(r), ldc)?;
        for col in [0, q.nr - 1] {
            ir.prefetch(c, ir.add(row, ir.int(col))?, true)?;
        }
    }
    let load = |ty: VectorType<'ctx>, p: PointerValue<'ctx>, off: u64| {
        ir.load_vec(ty, byte_at(ir, p, ir.int(off))?)
    };
    let broadcast = |p: PointerValue<'ctx>, off: u64| -> IrResult<VectorValue<'ctx>> {
        let x = ir.b.build_load(i32t, byte_at(ir, p, ir.int(off))?, "")?;
        if let Some(inst) = x.as_instruction_value() {
            inst.set_alignment(4).map_err(|e| IrError(e.to_string()))?;
        }
        ir.splat(vi, x)
    };
    let cast = |v: VectorValue<'ctx>, ty: VectorType<'ctx>| -> IrResult<VectorValue<'ctx>> {
        Ok(ir.b.build_bit_cast(v, ty, "")?.into_vector_value())
    };
    let (madd_ub, madd_wd) = if q.width == 64 {
        (
            "llvm.x86.avx512.pmaddubs.w.512",
            "llvm.x86.avx512.pmaddw.d.512",
        )
    } else {
        ("llvm.x86.avx2.pmadd.ub.sw", "llvm.x86.avx2.pmadd.wd")
    };
    // acc + Σ of four unsigned bytes of `w` times four signed bytes of `a`, per i32 lane.
    let dot4 = |acc: VectorValue<'ctx>,
                w: VectorValue<'ctx>,
                a: VectorValue<'ctx>|
     -> IrResult<VectorValue<'ctx>> {
        if q.vnni {
            return Ok(ir
                .intrinsic(
                    "llvm.x86.avx512.vpdpbusd.512",
                    &[],
                    &[acc.into(), w.into(), a.into()],
                )?
                .into_vector_value());
        }
        // Pairs of u8 × i8 summed to i16 (no saturation: 2 · 63 · 127 < 2^15), then the
        // pairs to i32.
        let p16 = ir.intrinsic(madd_ub, &[], &[cast(w, vb)?.into(), cast(a, vb)?.into()])?;
        let ones =
            VectorType::const_vector(&vec![i16t.const_int(1, false); (q.width / 2) as usize]);
        let p32 = ir.intrinsic(madd_wd, &[], &[p16.into(), ones.into()])?;
        Ok(ir.b.build_int_add(acc, p32.into_vector_value(), "")?)
    };
    // One sub-block per iteration (a loop, not unrolled: unrolled, LLVM's scheduler
    // interleaves sub-blocks and spills their sums).
    let zeros: Vec<BasicValueEnum<'ctx>> = vec![vi.const_zero().into(); rows * vectors];
    let (_, blk) = ir.carried_loop(
        f,
        "sub",
        WholeSteps {
            start: ir.int(0),
            limit: ir.int(q.subs),
            step: 1,
        },
        &zeros,
        |j, cur| {
            let gps = q.groups_per_sub();
            let bj = byte_at(ir, bp, ir.mul(j, ir.int(gps * 4 * q.nr))?)?;
            let aj = byte_at(ir, ap, ir.mul(j, ir.int(gps * 4))?)?;
            let mut sub = vec![vi.const_zero(); rows * vectors];
            for g in 0..gps {
                let w = (0..vectors)
                    .map(|v| load(vi, bj, g * 4 * q.nr + v as u64 * q.width))
                    .collect::<IrResult<Vec<_>>>()?;
                for r in 0..rows {
                    let a = broadcast(aj, r as u64 * QK + 4 * g)?;
                    for (v, &wv) in w.iter().enumerate() {
                        let n = r * vectors + v;
                        sub[n] = dot4(sub[n], wv, a)?;
                    }
                }
            }
            let scales = byte_at(ir, bp, ir.mad(j, ir.int(4 * q.nr), ir.int(q.b_scales()))?)?;
            let mut next = Vec::with_capacity(rows * vectors);
            for r in 0..rows {
                for v in 0..vectors {
                    let n = r * vectors + v;
                    let sc = load(vi, scales, v as u64 * q.width)?;
                    let scaled = ir.b.build_int_mul(sub[n], sc, "")?;
                    let acc = cur[n].into_vector_value();
                    next.push(ir.b.build_int_add(acc, scaled, "")?.into());
                }
            }
            Ok(next)
        },
    )?;
    let blk: Vec<VectorValue<'ctx>> = blk.iter().map(|v| v.into_vector_value()).collect();
    let mut offs = vec![vi.const_zero(); rows * vectors];
    for j in 0..q.subs / 2 {
        let mp = (0..vectors)
            .map(|v| load(vi, bp, q.b_pairs() + (j * q.nr + v as u64 * lanes) * 4))
            .collect::<IrResult<Vec<_>>>()?;
        for r in 0..rows {
            let pa = broadcast(ap, q.a_pairs() + (r as u64 * (q.subs / 2) + j) * 4)?;
            for (v, &m) in mp.iter().enumerate() {
                let n = r * vectors + v;
                let p = ir.intrinsic(madd_wd, &[], &[cast(m, vw)?.into(), cast(pa, vw)?.into()])?;
                offs[n] = ir.b.build_int_add(offs[n], p.into_vector_value(), "")?;
            }
        }
    }
    // The columns' d and dmin, once for every row.
    let scales = (0..vectors as u64)
        .map(|v| {
            let dw = load(vf, bp, q.b_d() + v * q.width)?;
            Ok((dw, load(vf, bp, q.b_dmin() + v * q.width)?))
        })
        .collect::<IrResult<Vec<_>>>()?;
    let mut out = Vec::with_capacity(rows * vectors);
    for r in 0..rows {
        let da = ir.load_f32(byte_at(ir, ap, ir.int(q.a_d() + 4 * r as u64))?)?;
        let da = ir.splat(vf, da)?;
        for (v, &(dw, dm)) in scales.iter().enumerate() {
            let n = r * vectors + v;
            let s = ir.b.build_signed_int_to_float(blk[n], vf, "")?;
            let o = ir.b.build_signed_int_to_float(offs[n], vf, "")?;
            let x = ir.b.build_float_mul(s, dw, "")?;
            let x =
                ir.b.build_float_sub(x, ir.b.build_float_mul(o, dm, "")?, "")?;
            out.push(ir.b.build_float_mul(x, da, "")?);
        }
    }
    let shape = (lanes as u32, q.mr as u32, q.nr as u32);
    store_tile(ir, f, shape, &out, tile, c, ldc, accumulate, (mr, nr))?;
    ir.b.build_return(None)?;
    Ok(f)
}

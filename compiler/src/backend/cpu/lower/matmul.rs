//! Matmul kernels: blocks of rows and columns, each a call of the packed sgemm or, for a
//! few rows (decoding), of the matrix–vector routine, then the epilogue.

use super::*;

impl<'a, 'ctx> Lowerer<'a, 'ctx> {
    pub(super) fn matmul(
        &self,
        fx: &Fx<'ctx>,
        begin: IntValue<'ctx>,
        end: IntValue<'ctx>,
        mm: &MatMul,
    ) -> IrResult<()> {
        let ir = self.ir;
        let c = |x: &Ix| self.ix(fx, x, &[]);
        let (m, n, k) = (c(&mm.m)?, c(&mm.n)?, c(&mm.k)?);
        let Blocks {
            col_block,
            col_blocks: nblocks,
            row_block,
            row_blocks: mblocks,
        } = self.blocks(m, n, mm)?;
        let per_batch = ir.mul(mblocks, nblocks)?;
        let (lda, ldb) = (c(&mm.a.ld)?, c(&mm.b.ld)?);
        let (abuf, bbuf, cbuf) = (
            self.buf(fx, mm.a.buf)?,
            self.buf(fx, mm.b.buf)?,
            self.buf(fx, mm.out)?,
        );
        let mn = ir.mul(m, n)?;
        // Consecutive iterations of one row block (a thread's share of the columns) run
        // as one call of the matmul, which walks their column blocks itself.
        ir.step_loop(fx.f, "it", begin, end, |it| {
            let bidx = ir.b.build_int_unsigned_div(it, per_batch, "")?;
            let rem = ir.b.build_int_unsigned_rem(it, per_batch, "")?;
            let ib = ir.b.build_int_unsigned_div(rem, nblocks, "")?;
            let jb = ir.b.build_int_unsigned_rem(rem, nblocks, "")?;
            let run = ir.min(ir.sub(nblocks, jb)?, ir.sub(end, it)?)?;
            let i0 = ir.mul(ib, row_block)?;
            let j0 = ir.mul(jb, col_block)?;
            let rows = ir.min(row_block, ir.sub(m, i0)?)?;
            let cols = ir.min(ir.mul(run, col_block)?, ir.sub(n, j0)?)?;
            let bv = [bidx];
            let a_base = self.ix(fx, &mm.a.offset, &bv)?;
            let a_off = if mm.transpose_a {
                ir.add(a_base, i0)?
            } else {
                ir.mad(i0, lda, a_base)?
            };
            let b_base = self.ix(fx, &mm.b.offset, &bv)?;
            let b_off = if mm.transpose_b {
                ir.mad(j0, ldb, b_base)?
            } else {
                ir.add(b_base, j0)?
            };
            let c_off = ir.add(ir.mul(bidx, mn)?, ir.mad(i0, n, j0)?)?;
            let ap = ir.at(abuf, a_off)?;
            let bquant = self.buf_quant.get(mm.b.buf).copied().flatten();
            let bp = match bquant {
                // Rows of ggml blocks (`kernel::quant`: whole blocks, B stored [n, k]).
                Some(ty) => crate::backend::cpu::quant_ir::block_at(ir, ty, bbuf, b_off)?,
                None => ir.at(bbuf, b_off)?,
            };
            let cp = ir.at(cbuf, c_off)?;
            let has_k =
                ir.b.build_int_compare(IntPredicate::SGT, k, ir.int(0), "")?;
            ir.if_else(
                fx.f,
                "k",
                has_k,
                || {
                    // (rows, cols, k, a, lda, b, ldb, c, ldc[, scratch]): the gemv takes
                    // the sgemm's arguments but the scratch.
                    let args: [inkwell::values::BasicMetadataValueEnum; 10] = [
                        rows.into(),
                        cols.into(),
                        k.into(),
                        ap.into(),
                        lda.into(),
                        bp.into(),
                        ldb.into(),
                        cp.into(),
                        n.into(),
                        fx.scratch.into(),
                    ];
                    let call = |callee, args: &[_]| -> IrResult<()> {
                        ir.b.build_call(callee, args, "")?;
                        Ok(())
                    };
                    let (gemv_bt, sgemm_bt) = match bquant {
                        Some(ty) => {
                            let q = self.quant.get(&ty).ok_or_else(|| {
                                IrError(format!("no {} routines emitted", ty.name()))
                            })?;
                            if mm.transpose_a || !mm.transpose_b {
                                return Err(IrError(format!(
                                    "a {} B must be stored [n, k] with A [m, k]",
                                    ty.name()
                                )));
                            }
                            (q.gemv_bt, q.sgemm_bt)
                        }
                        None => (self.gemv_bt, self.sgemm_bt),
                    };
                    if mm.transpose_a {
                        let f = if mm.transpose_b {
                            self.sgemm_at_bt
                        } else {
                            self.sgemm_at
                        };
                        return call(f, &args);
                    }
                    if !mm.transpose_b {
                        return call(self.sgemm, &args);
                    }
                    // A few rows (a decode step): one pass over B, no packing.
                    let few = ir.b.build_int_compare(
                        IntPredicate::SLE,
                        rows,
                        ir.int(crate::backend::cpu::gemv_ir::GEMV_MAX_ROWS),
                        "",
                    )?;
                    ir.if_else(
                        fx.f,
                        "gemv",
                        few,
                        || call(gemv_bt, &args[..9]),
                        || call(sgemm_bt, &args),
                    )
                },
                || {
                    ir.for_range(fx.f, "zi", ir.int(0), rows, 1, |i| {
                        ir.for_range(fx.f, "zj", ir.int(0), cols, 1, |j| {
                            ir.store(ir.at(cp, ir.mad(i, n, j)?)?, ir.f32.const_zero())
                        })
                    })
                },
            )?;
            match &mm.epilogue {
                Some(ep) if mm.whole_rows => {
                    // Reads across the row: the row's results go to scratch (free once the
                    // product is done) and are stored after the whole row is computed.
                    let tmp = fx.scratch;
                    ir.for_range(fx.f, "ei", i0, ir.add(i0, rows)?, 1, |i| {
                        let row = ir.add(ir.mul(bidx, mn)?, ir.mul(i, n)?)?;
                        ir.for_range(fx.f, "ej", ir.int(0), n, 1, |j| {
                            let v = self.expr(fx, ep, &[bidx, i, j])?;
                            ir.store(ir.at(tmp, j)?, v)
                        })?;
                        ir.for_range(fx.f, "es", ir.int(0), n, 1, |j| {
                            let v = ir.load_f32(ir.at(tmp, j)?)?;
                            ir.store(ir.at(cbuf, ir.add(row, j)?)?, v)
                        })
                    })?;
                }
                Some(ep) => {
                    ir.for_range(fx.f, "ei", i0, ir.add(i0, rows)?, 1, |i| {
                        let row = ir.add(ir.mul(bidx, mn)?, ir.mul(i, n)?)?;
                        ir.for_range(fx.f, "ej", j0, ir.add(j0, cols)?, 1, |j| {
                            let v = self.expr(fx, ep, &[bidx, i, j])?;
                            ir.store(ir.at(cbuf, ir.add(row, j)?)?, v)
                        })
                    })?;
                }
                None => {}
            }
            ir.add(it, run)
        })
    }
}

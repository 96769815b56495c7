//! Scan kernels: the initial copies, a sequential loop calling the body's kernels with
//! the step slices copied in and out, the final copies — for all rows at once, or, where
//! the rows are independent ([`Scan::rows`]), for the rows of the call's iterations.

use super::*;
use crate::kernel::StepCopy;

impl<'a, 'ctx> Lowerer<'a, 'ctx> {
    pub(super) fn copy(
        &self,
        dst: PointerValue<'ctx>,
        src: PointerValue<'ctx>,
        elems: IntValue<'ctx>,
    ) -> IrResult<()> {
        let ir = self.ir;
        ir.b.build_memcpy(dst, 4, src, 4, ir.mul(elems, ir.int(4))?)?;
        Ok(())
    }

    /// A scan over its iterations `begin..end`: the rows `begin..end` when they run apart
    /// ([`Scan::rows`], one iteration a row, so the threads share them), else the whole
    /// scan (one iteration). A part is the scan with the rows' symbol bound to its row
    /// count in a copy of the dims, and the row-major buffers advanced to its first row
    /// in a copy of the argument table (`args`, the top-level kernel's buffers), which its
    /// body kernels read.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn scan(
        &self,
        fx: &Fx<'ctx>,
        s: &Scan,
        nested: &[(FunctionValue<'ctx>, FunctionValue<'ctx>)],
        args: &[BufId],
        begin: IntValue<'ctx>,
        end: IntValue<'ctx>,
    ) -> IrResult<()> {
        let Some(rows) = &s.rows else {
            return self.scan_steps(fx, s, nested);
        };
        let ir = self.ir;
        let sym = rows.sym as usize;
        let n = self.n_syms as u64;
        let dims =
            ir.b.build_array_alloca(ir.i64, ir.int(n.max(1)), "part_dims")?;
        for i in 0..n {
            let from = unsafe {
                ir.b.build_in_bounds_gep(ir.i64, fx.dims_arg, &[ir.int(i)], "")?
            };
            let to = unsafe { ir.b.build_in_bounds_gep(ir.i64, dims, &[ir.int(i)], "")? };
            ir.b.build_store(to, ir.b.build_load(ir.i64, from, "")?)?;
        }
        let count = ir.sub(end, begin)?;
        let at_sym = unsafe {
            ir.b.build_in_bounds_gep(ir.i64, dims, &[ir.int(sym as u64)], "")?
        };
        ir.b.build_store(at_sym, count)?;
        let slot = |table: PointerValue<'ctx>, pos: usize| unsafe {
            ir.b.build_in_bounds_gep(ir.ptr, table, &[ir.int(pos as u64)], "")
        };
        let table =
            ir.b.build_array_alloca(ir.ptr, ir.int(args.len().max(1) as u64), "part_args")?;
        for pos in 0..args.len() {
            ir.b.build_store(
                slot(table, pos)?,
                ir.b.build_load(ir.ptr, slot(fx.bufs_arg, pos)?, "")?,
            )?;
        }
        let mut vals = fx.vals.clone();
        *vals
            .syms
            .get_mut(sym)
            .ok_or_else(|| IrError(format!("scan rows: no symbol {sym}")))? = count;
        for (b, row_bytes) in &rows.bufs {
            let bytes = self.ex().ix(&vals, row_bytes, &[])?;
            let at = unsafe {
                ir.b.build_in_bounds_gep(
                    ir.ctx.i8_type(),
                    fx.vals.buf(*b)?,
                    &[ir.mul(begin, bytes)?],
                    "",
                )?
            };
            let pos = args
                .binary_search(b)
                .map_err(|_| IrError(format!("scan rows: buffer b{b} is not an argument")))?;
            ir.b.build_store(slot(table, pos)?, at)?;
            vals.bufs.insert(*b, at);
        }
        let part = Fx {
            f: fx.f,
            bufs_arg: table,
            dims_arg: dims,
            scratch: fx.scratch,
            vals,
        };
        self.scan_steps(&part, s, nested)
    }

    fn scan_steps(
        &self,
        fx: &Fx<'ctx>,
        s: &Scan,
        nested: &[(FunctionValue<'ctx>, FunctionValue<'ctx>)],
    ) -> IrResult<()> {
        let ir = self.ir;
        let c = |x: &Ix| self.ix(fx, x, &[]);
        for (from, to, n) in &s.init {
            self.copy(self.buf(fx, *to)?, self.buf(fx, *from)?, c(n)?)?;
        }
        let steps = c(&s.steps)?;
        ir.for_range(fx.f, "t", ir.int(0), steps, 1, |t| {
            let tt = if s.reverse {
                ir.sub(ir.sub(steps, ir.int(1))?, t)?
            } else {
                t
            };
            // Step slices in, then the states entering the step out (before the body
            // updates them in place).
            let step_copies = |copies: &[StepCopy], into_step: bool, label: &str| -> IrResult<()> {
                for sc in copies {
                    let (rows, len) = (c(&sc.rows)?, c(&sc.len)?);
                    let (seq, step) = (self.buf(fx, sc.seq)?, self.buf(fx, sc.step)?);
                    ir.for_range(fx.f, label, ir.int(0), rows, 1, |r| {
                        let in_seq = ir.at(seq, ir.mul(ir.mad(r, steps, tt)?, len)?)?;
                        let in_step = ir.at(step, ir.mul(r, len)?)?;
                        if into_step {
                            self.copy(in_step, in_seq, len)
                        } else {
                            self.copy(in_seq, in_step, len)
                        }
                    })?;
                }
                Ok(())
            };
            step_copies(&s.seq_in, true, "ci")?;
            step_copies(&s.seq_save, false, "cs")?;
            for (kf, rf) in nested {
                let n = match ir
                    .b
                    .build_call(*rf, &[fx.dims_arg.into()], "")?
                    .try_as_basic_value()
                {
                    inkwell::values::ValueKind::Basic(v) => v,
                    _ => return Err(IrError("range returns nothing".into())),
                };
                ir.b.build_call(
                    *kf,
                    &[
                        fx.bufs_arg.into(),
                        fx.dims_arg.into(),
                        ir.int(0).into(),
                        n.into(),
                        fx.scratch.into(),
                    ],
                    "",
                )?;
            }
            for (from, to, n) in &s.update {
                self.copy(self.buf(fx, *to)?, self.buf(fx, *from)?, c(n)?)?;
            }
            step_copies(&s.seq_out, false, "co")?;
            Ok(())
        })?;
        for (from, to, n) in &s.finish {
            self.copy(self.buf(fx, *to)?, self.buf(fx, *from)?, c(n)?)?;
        }
        Ok(())
    }
}

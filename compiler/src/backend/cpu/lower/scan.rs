//! Scan kernels: the initial copies, a sequential loop calling the body's kernels with
//! the step slices copied in and out, the final copies.

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

    pub(super) fn scan(
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

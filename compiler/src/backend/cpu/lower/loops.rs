//! Element-wise maps (a store at an offset for cache appends) and reductions: scalar
//! loops over contiguous inner axes that LLVM vectorises.

use super::*;

impl<'a, 'ctx> Lowerer<'a, 'ctx> {
    #[allow(clippy::too_many_arguments)]
    pub(super) fn map(
        &self,
        fx: &Fx<'ctx>,
        begin: IntValue<'ctx>,
        end: IntValue<'ctx>,
        out: BufId,
        offset: &Ix,
        extents: &[Ix],
        expr: &Expr,
    ) -> IrResult<()> {
        let ir = self.ir;
        let ext: Vec<IntValue<'ctx>> = extents
            .iter()
            .map(|x| self.ix(fx, x, &[]))
            .collect::<IrResult<_>>()?;
        let outp = self.buf(fx, out)?;
        let shifted = offset.as_const() != Some(0);
        if ext.is_empty() {
            let v = self.expr(fx, expr, &[])?;
            let at = if shifted {
                ir.at(outp, self.ix(fx, offset, &[])?)?
            } else {
                outp
            };
            return ir.store(at, v);
        }
        let r = ext.len();
        let inner = ext[r - 1];
        ir.for_range(fx.f, "row", begin, end, 1, |row| {
            let mut vars = self.delinear(row, &ext[..r - 1])?;
            let mut base = ir.mul(row, inner)?;
            if shifted {
                base = ir.add(base, self.ix(fx, offset, &vars)?)?;
            }
            ir.for_range(fx.f, "j", ir.int(0), inner, 1, |j| {
                vars.push(j);
                let v = self.expr(fx, expr, &vars)?;
                vars.pop();
                ir.store(ir.at(outp, ir.add(base, j)?)?, v)
            })
        })
    }

    #[allow(clippy::too_many_arguments)]
    pub(super) fn reduce(
        &self,
        fx: &Fx<'ctx>,
        begin: IntValue<'ctx>,
        end: IntValue<'ctx>,
        out: BufId,
        extents: &[Ix],
        axis: usize,
        op: ReduceOp,
        expr: &Expr,
    ) -> IrResult<()> {
        let ir = self.ir;
        let m = Math { ir };
        let ext: Vec<IntValue<'ctx>> = extents
            .iter()
            .map(|x| self.ix(fx, x, &[]))
            .collect::<IrResult<_>>()?;
        let outp = self.buf(fx, out)?;
        let n = ext[axis];
        let mut inner = ir.int(1);
        for e in &ext[axis + 1..] {
            inner = ir.mul(inner, *e)?;
        }
        ir.for_range(fx.f, "o", begin, end, 1, |o| {
            let outer_vars = self.delinear(o, &ext[..axis])?;
            ir.for_range(fx.f, "ii", ir.int(0), inner, 1, |ii| {
                let inner_vars = self.delinear(ii, &ext[axis + 1..])?;
                let init = match op {
                    ReduceOp::Max => m.c(f64::NEG_INFINITY),
                    ReduceOp::Sum | ReduceOp::Mean => m.c(0.0),
                };
                let steps = WholeSteps {
                    start: ir.int(0),
                    limit: n,
                    step: 1,
                };
                let (_, acc) = ir.carried_loop(fx.f, "r", steps, &[init.into()], |r, acc| {
                    let mut vars = outer_vars.clone();
                    vars.push(r);
                    vars.extend_from_slice(&inner_vars);
                    let x = self.expr(fx, expr, &vars)?;
                    let a = acc[0].into_float_value();
                    let next = match op {
                        ReduceOp::Max => m.binary_intrinsic("llvm.maxnum", a, x)?,
                        ReduceOp::Sum | ReduceOp::Mean => {
                            let s = ir.b.build_float_add(a, x, "")?;
                            set_reassoc(s);
                            s
                        }
                    };
                    Ok(vec![next.into()])
                })?;
                let mut v = acc[0].into_float_value();
                if op == ReduceOp::Mean {
                    let nf = ir.b.build_signed_int_to_float(n, ir.f32, "")?;
                    v = ir.b.build_float_div(v, nf, "")?;
                }
                ir.store(ir.at(outp, ir.mad(o, inner, ii)?)?, v)
            })
        })
    }

    /// A scatter-add over column blocks `begin..end`: zero the block in every row, then
    /// add each step's values into the row its index picks, steps in order.
    pub(super) fn scatter(
        &self,
        fx: &Fx<'ctx>,
        begin: IntValue<'ctx>,
        end: IntValue<'ctx>,
        s: &crate::kernel::Scatter,
    ) -> IrResult<()> {
        let ir = self.ir;
        let m = Math { ir };
        let rows = self.ix(fx, &s.rows, &[])?;
        let w = self.ix(fx, &s.width, &[])?;
        let n = self.ix(fx, &s.n, &[])?;
        let outp = self.buf(fx, s.out)?;
        let cols = ir.int(crate::kernel::SCATTER_COLUMNS);
        ir.for_range(fx.f, "cb", begin, end, 1, |cb| {
            let c0 = ir.mul(cb, cols)?;
            let c1 = ir.min(ir.add(c0, cols)?, w)?;
            ir.for_range(fx.f, "zr", ir.int(0), rows, 1, |r| {
                let base = ir.mul(r, w)?;
                ir.for_range(fx.f, "zj", c0, c1, 1, |j| {
                    ir.store(ir.at(outp, ir.add(base, j)?)?, m.c(0.0))
                })
            })?;
            ir.for_range(fx.f, "t", ir.int(0), n, 1, |t| {
                let row = self.ix(fx, &s.index, &[t])?;
                let base = ir.mul(row, w)?;
                ir.for_range(fx.f, "j", c0, c1, 1, |j| {
                    let p = ir.at(outp, ir.add(base, j)?)?;
                    let old = ir.load_f32(p)?.into_float_value();
                    let v = self.expr(fx, &s.expr, &[t, j])?;
                    ir.store(p, ir.b.build_float_add(old, v, "")?)
                })
            })
        })
    }
}

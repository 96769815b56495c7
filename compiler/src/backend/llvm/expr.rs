//! The Kernel IR's expressions as LLVM values: [`Ix`] index arithmetic (i64) and [`Expr`]
//! element values (f32), given the symbol values and buffer addresses a function holds.
//! Both backends lower every kernel kind through these, so an expression means the same
//! on every target.

use super::ir::{Ir, IrError, IrResult};
use super::math::Math;
use crate::graph::{BinaryOp, UnaryOp};
use crate::kernel::{BufId, Expr, Ix};
use arch_runtime::gguf::GgmlType;
use inkwell::values::{FloatValue, IntValue, PointerValue};
use inkwell::{FloatPredicate, IntPredicate};
use std::collections::HashMap;

/// What a function body has loaded: each symbol's value and each buffer's address.
#[derive(Clone)]
pub(crate) struct Values<'ctx> {
    pub syms: Vec<IntValue<'ctx>>,
    pub bufs: HashMap<BufId, PointerValue<'ctx>>,
}

impl<'ctx> Values<'ctx> {
    pub fn buf(&self, b: BufId) -> IrResult<PointerValue<'ctx>> {
        self.bufs
            .get(&b)
            .copied()
            .ok_or_else(|| IrError(format!("buffer b{b} not loaded")))
    }
}

/// Lowers expressions for one module.
#[derive(Clone, Copy)]
pub(crate) struct Exprs<'a, 'ctx> {
    pub ir: &'a Ir<'ctx>,
    /// Each buffer's block type (a parameter stored quantized), read by `Expr::Load`.
    pub buf_quant: &'a [Option<GgmlType>],
    /// The target converts f16 in hardware.
    pub f16c: bool,
    /// The target has no libm (NVPTX): sin, cos and pow come from [`Math`]'s own
    /// approximations rather than LLVM's intrinsics.
    pub own_libm: bool,
}

impl<'ctx> Exprs<'_, 'ctx> {
    /// Element `idx` of buffer `buf` (at `base`) as f32: a plain load, or the element
    /// decoded from its block when the buffer is a parameter stored in a ggml type (an
    /// embedding table gathered from, a matmul's B read element by element).
    pub fn load(
        &self,
        buf: BufId,
        base: PointerValue<'ctx>,
        idx: IntValue<'ctx>,
    ) -> IrResult<FloatValue<'ctx>> {
        let ir = self.ir;
        match self.buf_quant.get(buf).copied().flatten() {
            Some(ty) => crate::backend::cpu::quant_ir::element(ir, ty, base, idx, self.f16c),
            None => Ok(ir.load_f32(ir.at(base, idx)?)?.into_float_value()),
        }
    }

    pub fn max(&self, a: IntValue<'ctx>, b: IntValue<'ctx>) -> IrResult<IntValue<'ctx>> {
        let gt = self.ir.b.build_int_compare(IntPredicate::SGT, a, b, "")?;
        Ok(self.ir.b.build_select(gt, a, b, "max")?.into_int_value())
    }

    /// An index expression with no variables or loads (sizes).
    pub fn ix_pure(&self, x: &Ix, syms: &[IntValue<'ctx>]) -> IrResult<IntValue<'ctx>> {
        let r = |x: &Ix| self.ix_pure(x, syms);
        let ir = self.ir;
        Ok(match x {
            Ix::Const(v) => ir.i64.const_int(*v as u64, true),
            Ix::Sym(s) => syms[*s as usize],
            Ix::Add(a, b) => ir.add(r(a)?, r(b)?)?,
            Ix::Mul(a, b) => ir.mul(r(a)?, r(b)?)?,
            Ix::Div(a, b) => ir.b.build_int_unsigned_div(r(a)?, r(b)?, "")?,
            Ix::Rem(a, b) => ir.b.build_int_unsigned_rem(r(a)?, r(b)?, "")?,
            Ix::Min(a, b) => ir.min(r(a)?, r(b)?)?,
            Ix::Max(a, b) => self.max(r(a)?, r(b)?)?,
            Ix::Var(_) | Ix::Load(..) | Ix::FromF32(_) => {
                return Err(IrError(format!("size expression depends on data: {x:?}")))
            }
        })
    }

    pub fn ix(
        &self,
        v: &Values<'ctx>,
        x: &Ix,
        vars: &[IntValue<'ctx>],
    ) -> IrResult<IntValue<'ctx>> {
        let ir = self.ir;
        let r = |x: &Ix| self.ix(v, x, vars);
        Ok(match x {
            Ix::Const(c) => ir.i64.const_int(*c as u64, true),
            Ix::Var(k) => *vars
                .get(*k as usize)
                .ok_or_else(|| IrError(format!("variable v{k} out of range")))?,
            Ix::Sym(s) => v.syms[*s as usize],
            Ix::Add(a, b) => ir.add(r(a)?, r(b)?)?,
            Ix::Mul(a, b) => ir.mul(r(a)?, r(b)?)?,
            Ix::Div(a, b) => ir.b.build_int_unsigned_div(r(a)?, r(b)?, "")?,
            Ix::Rem(a, b) => ir.b.build_int_unsigned_rem(r(a)?, r(b)?, "")?,
            Ix::Min(a, b) => ir.min(r(a)?, r(b)?)?,
            Ix::Max(a, b) => self.max(r(a)?, r(b)?)?,
            Ix::Load(b, i) => {
                let base = v.buf(*b)?;
                let p = unsafe { ir.b.build_in_bounds_gep(ir.i64, base, &[r(i)?], "")? };
                ir.b.build_load(ir.i64, p, "")?.into_int_value()
            }
            Ix::FromF32(e) => {
                let x = self.expr(v, e, vars)?;
                ir.b.build_float_to_signed_int(x, ir.i64, "")?
            }
        })
    }

    pub fn expr(
        &self,
        v: &Values<'ctx>,
        e: &Expr,
        vars: &[IntValue<'ctx>],
    ) -> IrResult<FloatValue<'ctx>> {
        let ir = self.ir;
        let m = Math { ir };
        let r = |e: &Expr| self.expr(v, e, vars);
        Ok(match e {
            Expr::Const(c) => m.c(*c),
            Expr::Load(b, i) => self.load(*b, v.buf(*b)?, self.ix(v, i, vars)?)?,
            Expr::FromIx(i) => {
                ir.b.build_signed_int_to_float(self.ix(v, i, vars)?, ir.f32, "")?
            }
            Expr::Unary(u, a) => {
                let x = r(a)?;
                match u {
                    UnaryOp::Neg => ir.b.build_float_neg(x, "")?,
                    UnaryOp::Exp => m.exp(x)?,
                    UnaryOp::Log => m.log(x)?,
                    UnaryOp::Sqrt => m.unary("llvm.sqrt", x)?,
                    UnaryOp::Rsqrt => {
                        ir.b.build_float_div(m.c(1.0), m.unary("llvm.sqrt", x)?, "")?
                    }
                    UnaryOp::Tanh => m.tanh(x)?,
                    UnaryOp::Erf => m.erf(x)?,
                    UnaryOp::Sigmoid => m.sigmoid(x)?,
                    UnaryOp::Relu => m.select(m.lt(m.c(0.0), x)?, x, m.c(0.0))?,
                    UnaryOp::Silu => ir.b.build_float_mul(x, m.sigmoid(x)?, "")?,
                    UnaryOp::Gelu => m.gelu(x)?,
                    UnaryOp::GeluTanh => m.gelu_tanh(x)?,
                    UnaryOp::Softplus => m.softplus(x)?,
                    UnaryOp::Abs => m.unary("llvm.fabs", x)?,
                    UnaryOp::Square => ir.b.build_float_mul(x, x, "")?,
                    UnaryOp::Recip => ir.b.build_float_div(m.c(1.0), x, "")?,
                    UnaryOp::Sin if self.own_libm => m.sin_cos(x)?.0,
                    UnaryOp::Cos if self.own_libm => m.sin_cos(x)?.1,
                    UnaryOp::Sin => m.unary("llvm.sin", x)?,
                    UnaryOp::Cos => m.unary("llvm.cos", x)?,
                    UnaryOp::Floor => m.unary("llvm.floor", x)?,
                    UnaryOp::StopGradient => x,
                }
            }
            Expr::Binary(op, a, b) => {
                let (x, y) = (r(a)?, r(b)?);
                let flag = |p: FloatPredicate| -> IrResult<FloatValue<'ctx>> {
                    let c = ir.b.build_float_compare(p, x, y, "")?;
                    m.select(c, m.c(1.0), m.c(0.0))
                };
                match op {
                    BinaryOp::Add => ir.b.build_float_add(x, y, "")?,
                    BinaryOp::Sub => ir.b.build_float_sub(x, y, "")?,
                    BinaryOp::Mul => ir.b.build_float_mul(x, y, "")?,
                    BinaryOp::Div => ir.b.build_float_div(x, y, "")?,
                    BinaryOp::Max => m.binary_intrinsic("llvm.maxnum", x, y)?,
                    BinaryOp::Min => m.binary_intrinsic("llvm.minnum", x, y)?,
                    BinaryOp::Pow if self.own_libm => m.pow(x, y)?,
                    BinaryOp::Pow => m.binary_intrinsic("llvm.pow", x, y)?,
                    BinaryOp::Lt => flag(FloatPredicate::OLT)?,
                    BinaryOp::Le => flag(FloatPredicate::OLE)?,
                    BinaryOp::Eq => flag(FloatPredicate::OEQ)?,
                }
            }
            Expr::Select(c, a, b) => {
                let cv = r(c)?;
                let nz =
                    ir.b.build_float_compare(FloatPredicate::UNE, cv, m.c(0.0), "")?;
                m.select(nz, r(a)?, r(b)?)?
            }
            Expr::IfLt(x, y, a, b) => {
                let c = ir.b.build_int_compare(
                    IntPredicate::SLT,
                    self.ix(v, x, vars)?,
                    self.ix(v, y, vars)?,
                    "",
                )?;
                m.select(c, r(a)?, r(b)?)?
            }
        })
    }

    /// Splits a linear index into the multi-index of `extents` (IR values).
    pub fn delinear(
        &self,
        lin: IntValue<'ctx>,
        extents: &[IntValue<'ctx>],
    ) -> IrResult<Vec<IntValue<'ctx>>> {
        let ir = self.ir;
        let mut out = vec![ir.int(0); extents.len()];
        let mut rest = lin;
        for k in (0..extents.len()).rev() {
            if k == 0 {
                out[0] = rest;
            } else {
                out[k] = ir.b.build_int_unsigned_rem(rest, extents[k], "")?;
                rest = ir.b.build_int_unsigned_div(rest, extents[k], "")?;
            }
        }
        Ok(out)
    }
}

/// Which keys a query sees under an attention mask, as IR values: query `tt` of `t` sits
/// at position `nk − t + tt` of `nk` keys (the queries are the last positions). Both
/// backends' attention kernels, forward and backward, ask these.
pub(crate) struct AttnMask<'a, 'ctx> {
    pub ex: &'a Exprs<'a, 'ctx>,
    pub mask: crate::graph::MaskKind,
    pub nk: IntValue<'ctx>,
    pub t: IntValue<'ctx>,
}

impl<'ctx> AttnMask<'_, 'ctx> {
    fn pos(&self, tt: IntValue<'ctx>) -> IrResult<IntValue<'ctx>> {
        let ir = self.ex.ir;
        ir.add(ir.sub(self.nk, self.t)?, tt)
    }

    /// The keys query `tt` sees: `[lo, hi)`.
    pub fn keys_of(&self, tt: IntValue<'ctx>) -> IrResult<(IntValue<'ctx>, IntValue<'ctx>)> {
        use crate::graph::MaskKind;
        let ir = self.ex.ir;
        let pos = self.pos(tt)?;
        Ok(match self.mask {
            MaskKind::Bidirectional => (ir.int(0), self.nk),
            MaskKind::Causal => (ir.int(0), ir.min(self.nk, ir.add(pos, ir.int(1))?)?),
            MaskKind::Sliding(w) => (
                self.ex
                    .max(ir.int(0), ir.sub(ir.add(pos, ir.int(1))?, ir.int(w))?)?,
                ir.min(self.nk, ir.add(pos, ir.int(1))?)?,
            ),
        })
    }

    /// The queries that see key `j`: `[lo, hi)`.
    pub fn queries_of(&self, j: IntValue<'ctx>) -> IrResult<(IntValue<'ctx>, IntValue<'ctx>)> {
        use crate::graph::MaskKind;
        let ir = self.ex.ir;
        let first = ir.sub(ir.add(j, self.t)?, self.nk)?;
        Ok(match self.mask {
            MaskKind::Bidirectional => (ir.int(0), self.t),
            MaskKind::Causal => (self.ex.max(ir.int(0), first)?, self.t),
            MaskKind::Sliding(w) => (
                self.ex.max(ir.int(0), first)?,
                ir.min(self.t, ir.add(first, ir.int(w))?)?,
            ),
        })
    }

    /// Whether query `tt` may see `key` (`None`: every key).
    pub fn allows(
        &self,
        tt: IntValue<'ctx>,
        key: IntValue<'ctx>,
    ) -> IrResult<Option<IntValue<'ctx>>> {
        use crate::graph::MaskKind;
        let ir = self.ex.ir;
        let pos = self.pos(tt)?;
        let seen = |lim: IntValue<'ctx>| ir.b.build_int_compare(IntPredicate::SLE, key, lim, "");
        Ok(match self.mask {
            MaskKind::Bidirectional => None,
            MaskKind::Causal => Some(seen(pos)?),
            MaskKind::Sliding(w) => {
                let recent =
                    ir.b.build_int_compare(IntPredicate::SGT, key, ir.sub(pos, ir.int(w))?, "")?;
                Some(ir.b.build_and(seen(pos)?, recent, "")?)
            }
        })
    }
}

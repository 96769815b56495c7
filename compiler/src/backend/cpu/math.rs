//! Scalar f32 math as straight-line LLVM IR (no libm calls, no branches), so loops that
//! use it vectorise: `exp` by Cody–Waite reduction and a degree-7 polynomial (Cephes
//! `expf`), `log` by exponent split and the atanh series, and `tanh`, `erf`
//! (Abramowitz–Stegun 7.1.26, |error| ≤ 1.5e-7), sigmoid, SiLU, GELU and softplus on top.
//! Errors stay far inside the backend's 1e-4 tolerance against the f64 evaluator.

use super::ir::{Ir, IrResult};
use inkwell::values::FloatValue;
use inkwell::FloatPredicate;

pub(crate) struct Math<'a, 'ctx> {
    pub ir: &'a Ir<'ctx>,
}

impl<'ctx> Math<'_, 'ctx> {
    pub fn c(&self, v: f64) -> FloatValue<'ctx> {
        self.ir.f32.const_float(v)
    }

    fn add(&self, a: FloatValue<'ctx>, b: FloatValue<'ctx>) -> IrResult<FloatValue<'ctx>> {
        Ok(self.ir.b.build_float_add(a, b, "")?)
    }

    fn sub(&self, a: FloatValue<'ctx>, b: FloatValue<'ctx>) -> IrResult<FloatValue<'ctx>> {
        Ok(self.ir.b.build_float_sub(a, b, "")?)
    }

    fn mul(&self, a: FloatValue<'ctx>, b: FloatValue<'ctx>) -> IrResult<FloatValue<'ctx>> {
        Ok(self.ir.b.build_float_mul(a, b, "")?)
    }

    fn div(&self, a: FloatValue<'ctx>, b: FloatValue<'ctx>) -> IrResult<FloatValue<'ctx>> {
        Ok(self.ir.b.build_float_div(a, b, "")?)
    }

    pub fn select(
        &self,
        cond: inkwell::values::IntValue<'ctx>,
        a: FloatValue<'ctx>,
        b: FloatValue<'ctx>,
    ) -> IrResult<FloatValue<'ctx>> {
        Ok(self.ir.b.build_select(cond, a, b, "")?.into_float_value())
    }

    pub fn lt(
        &self,
        a: FloatValue<'ctx>,
        b: FloatValue<'ctx>,
    ) -> IrResult<inkwell::values::IntValue<'ctx>> {
        Ok(self
            .ir
            .b
            .build_float_compare(FloatPredicate::OLT, a, b, "")?)
    }

    pub fn unary(&self, name: &str, x: FloatValue<'ctx>) -> IrResult<FloatValue<'ctx>> {
        Ok(self
            .ir
            .intrinsic(name, &[self.ir.f32.into()], &[x.into()])?
            .into_float_value())
    }

    pub fn binary_intrinsic(
        &self,
        name: &str,
        a: FloatValue<'ctx>,
        b: FloatValue<'ctx>,
    ) -> IrResult<FloatValue<'ctx>> {
        Ok(self
            .ir
            .intrinsic(name, &[self.ir.f32.into()], &[a.into(), b.into()])?
            .into_float_value())
    }

    fn horner(&self, x: FloatValue<'ctx>, coefs: &[f64]) -> IrResult<FloatValue<'ctx>> {
        let mut acc = self.c(coefs[0]);
        for &c in &coefs[1..] {
            acc = self.add(self.mul(acc, x)?, self.c(c))?;
        }
        Ok(acc)
    }

    pub fn exp(&self, x: FloatValue<'ctx>) -> IrResult<FloatValue<'ctx>> {
        let ir = self.ir;
        let xc = self.binary_intrinsic("llvm.minnum", x, self.c(88.0))?;
        let xc = self.binary_intrinsic("llvm.maxnum", xc, self.c(-88.0))?;
        let n = self.unary(
            "llvm.floor",
            self.add(self.mul(xc, self.c(std::f64::consts::LOG2_E))?, self.c(0.5))?,
        )?;
        let r = self.sub(xc, self.mul(n, self.c(0.693_359_375))?)?;
        let r = self.sub(r, self.mul(n, self.c(-2.121_944_4e-4))?)?;
        let p = self.horner(
            r,
            &[
                1.987_569_15e-4,
                1.398_199_950_7e-3,
                8.333_451_907_3e-3,
                4.166_579_589_4e-2,
                1.666_666_545_9e-1,
                5.000_000_120_1e-1,
            ],
        )?;
        let r2 = self.mul(r, r)?;
        let p = self.add(self.add(self.mul(p, r2)?, r)?, self.c(1.0))?;
        let i32t = ir.ctx.i32_type();
        let ni = ir.b.build_float_to_signed_int(n, i32t, "")?;
        let biased = ir.b.build_int_add(ni, i32t.const_int(127, false), "")?;
        let bits =
            ir.b.build_left_shift(biased, i32t.const_int(23, false), "")?;
        let scale = ir.b.build_bit_cast(bits, ir.f32, "")?.into_float_value();
        let y = self.mul(p, scale)?;
        // Below e^-87 the result is (nearly) denormal: flush to zero, exp(-inf) included.
        self.select(self.lt(x, self.c(-87.0))?, self.c(0.0), y)
    }

    /// Natural log of a positive normal number (0 → -inf, negative → NaN).
    pub fn log(&self, x: FloatValue<'ctx>) -> IrResult<FloatValue<'ctx>> {
        let ir = self.ir;
        let i32t = ir.ctx.i32_type();
        let bits = ir.b.build_bit_cast(x, i32t, "")?.into_int_value();
        let e =
            ir.b.build_right_shift(bits, i32t.const_int(23, false), false, "")?;
        let e = ir.b.build_and(e, i32t.const_int(0xff, false), "")?;
        let e = ir.b.build_int_sub(e, i32t.const_int(127, false), "")?;
        let mbits = ir.b.build_and(bits, i32t.const_int(0x7f_ffff, false), "")?;
        let mbits =
            ir.b.build_or(mbits, i32t.const_int(0x3f80_0000, false), "")?;
        let m = ir.b.build_bit_cast(mbits, ir.f32, "")?.into_float_value();
        let big = self.lt(self.c(std::f64::consts::SQRT_2), m)?;
        let m = self.select(big, self.mul(m, self.c(0.5))?, m)?;
        let ef = ir.b.build_signed_int_to_float(e, ir.f32, "")?;
        let ef = self.select(big, self.add(ef, self.c(1.0))?, ef)?;
        let s = self.div(self.sub(m, self.c(1.0))?, self.add(m, self.c(1.0))?)?;
        let s2 = self.mul(s, s)?;
        let series = self.horner(s2, &[1.0 / 9.0, 1.0 / 7.0, 1.0 / 5.0, 1.0 / 3.0, 1.0])?;
        let lm = self.mul(self.mul(s, self.c(2.0))?, series)?;
        let y = self.add(self.mul(ef, self.c(std::f64::consts::LN_2))?, lm)?;
        let zero =
            ir.b.build_float_compare(FloatPredicate::OEQ, x, self.c(0.0), "")?;
        let y = self.select(zero, self.c(f64::NEG_INFINITY), y)?;
        let neg = self.lt(x, self.c(0.0))?;
        self.select(neg, self.c(f64::NAN), y)
    }

    pub fn tanh(&self, x: FloatValue<'ctx>) -> IrResult<FloatValue<'ctx>> {
        let e = self.exp(self.mul(x, self.c(2.0))?)?;
        let t = self.sub(
            self.c(1.0),
            self.div(self.c(2.0), self.add(e, self.c(1.0))?)?,
        )?;
        // Large x: exp saturates at e^88, which already gives exactly 1.
        Ok(t)
    }

    pub fn sigmoid(&self, x: FloatValue<'ctx>) -> IrResult<FloatValue<'ctx>> {
        let e = self.exp(self.ir.b.build_float_neg(x, "")?)?;
        self.div(self.c(1.0), self.add(self.c(1.0), e)?)
    }

    pub fn erf(&self, x: FloatValue<'ctx>) -> IrResult<FloatValue<'ctx>> {
        let a = self.unary("llvm.fabs", x)?;
        let t = self.div(
            self.c(1.0),
            self.add(self.c(1.0), self.mul(self.c(0.327_591_1), a)?)?,
        )?;
        let poly = self.horner(
            t,
            &[
                1.061_405_429,
                -1.453_152_027,
                1.421_413_741,
                -0.284_496_736,
                0.254_829_592,
            ],
        )?;
        let poly = self.mul(poly, t)?;
        let e = self.exp(self.ir.b.build_float_neg(self.mul(a, a)?, "")?)?;
        let y = self.sub(self.c(1.0), self.mul(poly, e)?)?;
        let neg = self.lt(x, self.c(0.0))?;
        self.select(neg, self.ir.b.build_float_neg(y, "")?, y)
    }

    pub fn gelu(&self, x: FloatValue<'ctx>) -> IrResult<FloatValue<'ctx>> {
        let e = self.erf(self.mul(x, self.c(std::f64::consts::FRAC_1_SQRT_2))?)?;
        self.mul(self.mul(x, self.c(0.5))?, self.add(self.c(1.0), e)?)
    }

    pub fn gelu_tanh(&self, x: FloatValue<'ctx>) -> IrResult<FloatValue<'ctx>> {
        let c = (2.0 / std::f64::consts::PI).sqrt();
        let x3 = self.mul(self.mul(x, x)?, x)?;
        let inner = self.mul(self.c(c), self.add(x, self.mul(self.c(0.044715), x3)?)?)?;
        let t = self.tanh(inner)?;
        self.mul(self.mul(x, self.c(0.5))?, self.add(self.c(1.0), t)?)
    }

    /// log(1 + e^x), and x itself above 20 as PyTorch does.
    pub fn softplus(&self, x: FloatValue<'ctx>) -> IrResult<FloatValue<'ctx>> {
        let y = self.log(self.add(self.c(1.0), self.exp(x)?)?)?;
        let big = self.lt(self.c(20.0), x)?;
        self.select(big, x, y)
    }
}

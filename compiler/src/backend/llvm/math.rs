//! Scalar f32 math as straight-line LLVM IR (no libm calls, no branches), so loops that
//! use it vectorise: `exp` by Cody–Waite reduction and a degree-7 polynomial (Cephes
//! `expf`), `log` by exponent split and the atanh series, and `tanh`, `erf`
//! (Abramowitz–Stegun 7.1.26, |error| ≤ 1.5e-7), sigmoid, SiLU, GELU and softplus on top.
//! Errors stay far inside the backend's 1e-4 tolerance against the f64 evaluator. For
//! targets without libm (NVPTX) also `sin`/`cos` (Cephes `sinf` and `cosf`: reduction
//! by π/4 in three parts, one polynomial each) and `pow` (computed in f64 from an f64
//! `log` and `exp`, so that RoPE's θ^(−2i/d) keeps f32 accuracy).

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

    /// sin x and cos x together (one range reduction), for |x| up to ~10⁴ at f32
    /// accuracy: x = z + q·π/2 with |z| ≤ π/4, then ±sin z or ±cos z by the quadrant q.
    pub fn sin_cos(&self, x: FloatValue<'ctx>) -> IrResult<(FloatValue<'ctx>, FloatValue<'ctx>)> {
        let ir = self.ir;
        let i32t = ir.ctx.i32_type();
        let ax = self.unary("llvm.fabs", x)?;
        let j = ir.b.build_float_to_signed_int(
            self.mul(ax, self.c(4.0 / std::f64::consts::PI))?,
            i32t,
            "",
        )?;
        // Odd octants round up: j/2 is then the nearest multiple of π/2.
        let j = ir.b.build_int_add(j, i32t.const_int(1, false), "")?;
        let j = ir.b.build_and(j, i32t.const_int(!1u32 as u64, false), "")?;
        let y = ir.b.build_signed_int_to_float(j, ir.f32, "")?;
        let z = self.sub(ax, self.mul(y, self.c(0.785_156_25))?)?;
        let z = self.sub(z, self.mul(y, self.c(2.418_756_484_985_351_6e-4))?)?;
        let z = self.sub(z, self.mul(y, self.c(3.774_894_977_445_941e-8))?)?;
        let zz = self.mul(z, z)?;
        let sp = self.horner(
            zz,
            &[-1.951_529_589_1e-4, 8.332_160_873_6e-3, -1.666_665_461_1e-1],
        )?;
        let sz = self.add(self.mul(self.mul(sp, zz)?, z)?, z)?;
        let cp = self.horner(
            zz,
            &[
                2.443_315_711_809_948e-5,
                -1.388_731_625_493_765e-3,
                4.166_664_568_298_827e-2,
            ],
        )?;
        let cz = self.add(
            self.sub(self.mul(self.mul(cp, zz)?, zz)?, self.mul(zz, self.c(0.5))?)?,
            self.c(1.0),
        )?;
        let q = ir.b.build_and(
            ir.b.build_right_shift(j, i32t.const_int(1, false), false, "")?,
            i32t.const_int(3, false),
            "",
        )?;
        let is = |v: u64| {
            ir.b.build_int_compare(inkwell::IntPredicate::EQ, q, i32t.const_int(v, false), "")
        };
        let neg = |v: FloatValue<'ctx>| ir.b.build_float_neg(v, "");
        let pick = |a: FloatValue<'ctx>,
                    b: FloatValue<'ctx>,
                    c: FloatValue<'ctx>,
                    d: FloatValue<'ctx>|
         -> IrResult<FloatValue<'ctx>> {
            let lo = self.select(is(0)?, a, b)?;
            let hi = self.select(is(2)?, c, d)?;
            self.select(
                ir.b.build_int_compare(
                    inkwell::IntPredicate::ULT,
                    q,
                    i32t.const_int(2, false),
                    "",
                )?,
                lo,
                hi,
            )
        };
        let s_abs = pick(sz, cz, neg(sz)?, neg(cz)?)?;
        let c = pick(cz, neg(sz)?, neg(cz)?, sz)?;
        let s = self.select(self.lt(x, self.c(0.0))?, neg(s_abs)?, s_abs)?;
        Ok((s, c))
    }

    /// x^y as `powf` gives it: exp(y·log|x|) in f64, with powf's signs and special
    /// cases for x ≤ 0 (0^y is 0, 1 or ∞; a negative base needs an integral exponent).
    pub fn pow(&self, x: FloatValue<'ctx>, y: FloatValue<'ctx>) -> IrResult<FloatValue<'ctx>> {
        let ir = self.ir;
        let f64t = ir.ctx.f64_type();
        let x64 = ir.b.build_float_ext(x, f64t, "")?;
        let y64 = ir.b.build_float_ext(y, f64t, "")?;
        let ax = self.unary64("llvm.fabs", x64)?;
        let l = self.log64(ax)?;
        let r = self.exp64(ir.b.build_float_mul(y64, l, "")?)?;
        let r = ir.b.build_float_trunc(r, ir.f32, "")?;
        let fy = self.unary("llvm.floor", y)?;
        let integral = ir.b.build_float_compare(FloatPredicate::OEQ, fy, y, "")?;
        let half = self.mul(y, self.c(0.5))?;
        let odd = ir.b.build_float_compare(
            FloatPredicate::ONE,
            self.unary("llvm.floor", half)?,
            half,
            "",
        )?;
        let odd = ir.b.build_and(integral, odd, "")?;
        let signed = self.select(odd, ir.b.build_float_neg(r, "")?, r)?;
        let negative = self.select(integral, signed, self.c(f64::NAN))?;
        let zero = self.select(
            self.lt(self.c(0.0), y)?,
            self.c(0.0),
            self.select(self.lt(y, self.c(0.0))?, self.c(f64::INFINITY), self.c(1.0))?,
        )?;
        let out = self.select(self.lt(x, self.c(0.0))?, negative, r)?;
        let is_zero =
            ir.b.build_float_compare(FloatPredicate::OEQ, x, self.c(0.0), "")?;
        let out = self.select(is_zero, zero, out)?;
        let y_zero =
            ir.b.build_float_compare(FloatPredicate::OEQ, y, self.c(0.0), "")?;
        self.select(y_zero, self.c(1.0), out)
    }

    fn unary64(&self, name: &str, x: FloatValue<'ctx>) -> IrResult<FloatValue<'ctx>> {
        let t = self.ir.ctx.f64_type();
        Ok(self
            .ir
            .intrinsic(name, &[t.into()], &[x.into()])?
            .into_float_value())
    }

    fn horner64(&self, x: FloatValue<'ctx>, coefs: &[f64]) -> IrResult<FloatValue<'ctx>> {
        let b = &self.ir.b;
        let t = self.ir.ctx.f64_type();
        let mut acc = t.const_float(coefs[0]);
        for &c in &coefs[1..] {
            acc = b.build_float_add(b.build_float_mul(acc, x, "")?, t.const_float(c), "")?;
        }
        Ok(acc)
    }

    /// Natural log of a positive f64 (≈1e-15 relative): the exponent split off, the
    /// mantissa m in [√½, √2), 2·atanh((m−1)/(m+1)) by its series to s¹⁹.
    fn log64(&self, x: FloatValue<'ctx>) -> IrResult<FloatValue<'ctx>> {
        let ir = self.ir;
        let (b, i64t, f64t) = (&ir.b, ir.i64, ir.ctx.f64_type());
        let bits = b.build_bit_cast(x, i64t, "")?.into_int_value();
        let e = b.build_right_shift(bits, i64t.const_int(52, false), false, "")?;
        let e = b.build_and(e, i64t.const_int(0x7ff, false), "")?;
        let e = b.build_int_sub(e, i64t.const_int(1023, false), "")?;
        let mb = b.build_and(bits, i64t.const_int(0x000f_ffff_ffff_ffff, false), "")?;
        let mb = b.build_or(mb, i64t.const_int(0x3ff0_0000_0000_0000, false), "")?;
        let m = b.build_bit_cast(mb, f64t, "")?.into_float_value();
        let big = b.build_float_compare(
            FloatPredicate::OLT,
            f64t.const_float(std::f64::consts::SQRT_2),
            m,
            "",
        )?;
        let m = b
            .build_select(big, b.build_float_mul(m, f64t.const_float(0.5), "")?, m, "")?
            .into_float_value();
        let ef = b.build_signed_int_to_float(e, f64t, "")?;
        let ef = b
            .build_select(
                big,
                b.build_float_add(ef, f64t.const_float(1.0), "")?,
                ef,
                "",
            )?
            .into_float_value();
        let one = f64t.const_float(1.0);
        let s = b.build_float_div(
            b.build_float_sub(m, one, "")?,
            b.build_float_add(m, one, "")?,
            "",
        )?;
        let s2 = b.build_float_mul(s, s, "")?;
        let coefs: Vec<f64> = (0..10).rev().map(|k| 1.0 / (2 * k + 1) as f64).collect();
        let series = self.horner64(s2, &coefs)?;
        let lm = b.build_float_mul(b.build_float_mul(s, f64t.const_float(2.0), "")?, series, "")?;
        Ok(b.build_float_add(
            b.build_float_mul(ef, f64t.const_float(std::f64::consts::LN_2), "")?,
            lm,
            "",
        )?)
    }

    /// e^t in f64 for t clamped to [−110, 90] (beyond f32's range either way): t = n·ln 2
    /// + r, |r| ≤ ln2/2, e^r by its Taylor series to r¹³, 2ⁿ from the exponent bits.
    fn exp64(&self, t: FloatValue<'ctx>) -> IrResult<FloatValue<'ctx>> {
        let ir = self.ir;
        let (b, i64t, f64t) = (&ir.b, ir.i64, ir.ctx.f64_type());
        let t = self.binary64("llvm.minnum", t, f64t.const_float(90.0))?;
        let t = self.binary64("llvm.maxnum", t, f64t.const_float(-110.0))?;
        let n = self.unary64(
            "llvm.floor",
            b.build_float_add(
                b.build_float_mul(t, f64t.const_float(std::f64::consts::LOG2_E), "")?,
                f64t.const_float(0.5),
                "",
            )?,
        )?;
        let r = b.build_float_sub(
            t,
            b.build_float_mul(n, f64t.const_float(6.931_471_803_691_238e-1), "")?,
            "",
        )?;
        let r = b.build_float_sub(
            r,
            b.build_float_mul(n, f64t.const_float(1.908_214_929_270_587_7e-10), "")?,
            "",
        )?;
        let mut fact = 1.0f64;
        let mut coefs = vec![1.0];
        for k in 1..=13 {
            fact *= k as f64;
            coefs.push(1.0 / fact);
        }
        coefs.reverse();
        let p = self.horner64(r, &coefs)?;
        let ni = b.build_float_to_signed_int(n, i64t, "")?;
        let bits = b.build_left_shift(
            b.build_int_add(ni, i64t.const_int(1023, false), "")?,
            i64t.const_int(52, false),
            "",
        )?;
        let scale = b.build_bit_cast(bits, f64t, "")?.into_float_value();
        Ok(b.build_float_mul(p, scale, "")?)
    }

    fn binary64(
        &self,
        name: &str,
        a: FloatValue<'ctx>,
        c: FloatValue<'ctx>,
    ) -> IrResult<FloatValue<'ctx>> {
        let t = self.ir.ctx.f64_type();
        Ok(self
            .ir
            .intrinsic(name, &[t.into()], &[a.into(), c.into()])?
            .into_float_value())
    }
}

//! Attention kernels: one query row per iteration, keys in blocks with online softmax;
//! ring caches read key p from row p mod R. The flash-style backward parts recompute each
//! score from q and k: `Lse` and dQ per query row, dK and dV per key row over the queries
//! that see it — nothing of size queries × keys is stored.

use super::*;
use crate::graph::AttnPart;

impl<'a, 'ctx> Lowerer<'a, 'ctx> {
    pub(super) fn attention(
        &self,
        fx: &Fx<'ctx>,
        begin: IntValue<'ctx>,
        end: IntValue<'ctx>,
        a: &Attention,
    ) -> IrResult<()> {
        if let Some(part) = a.part {
            return self.attention_grad(fx, begin, end, a, part);
        }
        let ir = self.ir;
        let m = Math { ir };
        let c = |x: &Ix| self.ix(fx, x, &[]);
        let s: Vec<IntValue<'ctx>> = a.sizes.iter().map(c).collect::<IrResult<_>>()?;
        let (h, t, nk, d, dv, hkv) = (s[1], s[2], s[3], s[4], s[5], s[6]);
        let group = ir.b.build_int_unsigned_div(h, hkv, "")?;
        let ht = ir.mul(h, t)?;
        let strides =
            |st: &crate::kernel::Strided| -> IrResult<(PointerValue<'ctx>, Vec<IntValue<'ctx>>)> {
                let base = ir.at(self.buf(fx, st.buf)?, c(&st.offset)?)?;
                let v = st.strides.iter().map(c).collect::<IrResult<Vec<_>>>()?;
                Ok((base, v))
            };
        let (qb, qs) = strides(&a.q)?;
        let (kb, ks) = strides(&a.k)?;
        let (vb, vs) = strides(&a.v)?;
        let (ob, os) = strides(&a.out)?;
        let acc = fx.scratch;
        let neg_inf = m.c(f64::NEG_INFINITY);
        let scale = m.c(a.scale);
        // The row of key p: p itself, or p mod R in a ring (whose dropped keys the
        // sliding window never reaches).
        let ring = a.ring.as_ref().map(c).transpose()?;
        let row_of = |p: IntValue<'ctx>| -> IrResult<IntValue<'ctx>> {
            match ring {
                Some(r) => Ok(ir.b.build_int_unsigned_rem(p, r, "")?),
                None => Ok(p),
            }
        };
        ir.for_range(fx.f, "row", begin, end, 1, |it| {
            let b = ir.b.build_int_unsigned_div(it, ht, "")?;
            let hh =
                ir.b.build_int_unsigned_rem(ir.b.build_int_unsigned_div(it, t, "")?, h, "")?;
            let tt = ir.b.build_int_unsigned_rem(it, t, "")?;
            let kh = ir.b.build_int_unsigned_div(hh, group, "")?;
            let q = ir.at(
                qb,
                ir.add(
                    ir.mul(b, qs[0])?,
                    ir.add(ir.mul(hh, qs[1])?, ir.mul(tt, qs[2])?)?,
                )?,
            )?;
            let krow0 = ir.at(kb, ir.add(ir.mul(b, ks[0])?, ir.mul(kh, ks[1])?)?)?;
            let vrow0 = ir.at(vb, ir.add(ir.mul(b, vs[0])?, ir.mul(kh, vs[1])?)?)?;
            let o = ir.at(
                ob,
                ir.add(
                    ir.mul(b, os[0])?,
                    ir.add(ir.mul(hh, os[1])?, ir.mul(tt, os[2])?)?,
                )?,
            )?;
            // Keys this query may see.
            let pos = ir.add(ir.sub(nk, t)?, tt)?;
            let (lo, hi) = match a.mask {
                MaskKind::Bidirectional => (ir.int(0), nk),
                MaskKind::Causal => (ir.int(0), ir.min(nk, ir.add(pos, ir.int(1))?)?),
                MaskKind::Sliding(w) => (
                    self.max(ir.int(0), ir.sub(ir.add(pos, ir.int(1))?, ir.int(w))?)?,
                    ir.min(nk, ir.add(pos, ir.int(1))?)?,
                ),
            };
            ir.for_range(fx.f, "z", ir.int(0), dv, 1, |x| {
                ir.store(ir.at(acc, x)?, m.c(0.0))
            })?;
            // Keys in blocks of KEY_BLOCK: scores into scratch, one max and one rescale
            // per block, exponentials over the block (vectorised), then Σ p·v.
            let scores = ir.at(acc, dv)?;
            let (_, ml) = ir.carried_loop(
                fx.f,
                "kblk",
                WholeSteps {
                    start: lo,
                    limit: ir.add(hi, ir.int(KEY_BLOCK - 1))?,
                    step: KEY_BLOCK,
                },
                &[neg_inf.into(), m.c(0.0).into()],
                |k0, cur| {
                    let (mx, l) = (cur[0].into_float_value(), cur[1].into_float_value());
                    let kn = ir.min(ir.int(KEY_BLOCK), ir.sub(hi, k0)?)?;
                    let (_, bmax) = ir.carried_loop(
                        fx.f,
                        "score",
                        WholeSteps {
                            start: ir.int(0),
                            limit: kn,
                            step: 1,
                        },
                        &[neg_inf.into()],
                        |j, bm| {
                            let key = ir.add(k0, j)?;
                            let kp = ir.at(krow0, ir.mul(row_of(key)?, ks[2])?)?;
                            let dsteps = WholeSteps {
                                start: ir.int(0),
                                limit: d,
                                step: 1,
                            };
                            let (_, dot) = ir.carried_loop(
                                fx.f,
                                "dot",
                                dsteps,
                                &[m.c(0.0).into()],
                                |x, acc| {
                                    let qv = ir
                                        .load_f32(ir.at(q, ir.mul(x, qs[3])?)?)?
                                        .into_float_value();
                                    let kv = ir
                                        .load_f32(ir.at(kp, ir.mul(x, ks[3])?)?)?
                                        .into_float_value();
                                    let p = ir.b.build_float_mul(qv, kv, "")?;
                                    set_reassoc(p);
                                    let sum =
                                        ir.b.build_float_add(acc[0].into_float_value(), p, "")?;
                                    set_reassoc(sum);
                                    Ok(vec![sum.into()])
                                },
                            )?;
                            let vars = [b, hh, tt, key];
                            let mut score =
                                ir.b.build_float_mul(dot[0].into_float_value(), scale, "")?;
                            if let Some(bias) = &a.bias {
                                score =
                                    ir.b.build_float_add(score, self.expr(fx, bias, &vars)?, "")?;
                            }
                            if let Some(km) = &a.key_mask {
                                let keep = self.expr(fx, km, &vars)?;
                                let off = ir.b.build_float_compare(
                                    FloatPredicate::OEQ,
                                    keep,
                                    m.c(0.0),
                                    "",
                                )?;
                                score = m.select(off, neg_inf, score)?;
                            }
                            ir.store(ir.at(scores, j)?, score)?;
                            let bmx =
                                m.binary_intrinsic("llvm.maxnum", bm[0].into_float_value(), score)?;
                            Ok(vec![bmx.into()])
                        },
                    )?;
                    let new_max =
                        m.binary_intrinsic("llvm.maxnum", mx, bmax[0].into_float_value())?;
                    let none =
                        ir.b.build_float_compare(FloatPredicate::OEQ, new_max, neg_inf, "")?;
                    let corr = m.select(
                        none,
                        m.c(1.0),
                        m.exp(ir.b.build_float_sub(mx, new_max, "")?)?,
                    )?;
                    // p = exp(score − max) over the block, summed.
                    let (_, psum) = ir.carried_loop(
                        fx.f,
                        "exp",
                        WholeSteps {
                            start: ir.int(0),
                            limit: kn,
                            step: 1,
                        },
                        &[m.c(0.0).into()],
                        |j, acc| {
                            let ps = ir.at(scores, j)?;
                            let sc = ir.load_f32(ps)?.into_float_value();
                            let p = m.select(
                                none,
                                m.c(0.0),
                                m.exp(ir.b.build_float_sub(sc, new_max, "")?)?,
                            )?;
                            ir.store(ps, p)?;
                            let sum = ir.b.build_float_add(acc[0].into_float_value(), p, "")?;
                            set_reassoc(sum);
                            Ok(vec![sum.into()])
                        },
                    )?;
                    let l2 = ir.b.build_float_add(
                        ir.b.build_float_mul(l, corr, "")?,
                        psum[0].into_float_value(),
                        "",
                    )?;
                    let rescale =
                        ir.b.build_float_compare(FloatPredicate::UNE, corr, m.c(1.0), "")?;
                    ir.if_else(
                        fx.f,
                        "rescale",
                        rescale,
                        || {
                            ir.for_range(fx.f, "rs", ir.int(0), dv, 1, |x| {
                                let pa = ir.at(acc, x)?;
                                let v = ir.load_f32(pa)?.into_float_value();
                                ir.store(pa, ir.b.build_float_mul(v, corr, "")?)
                            })
                        },
                        || Ok(()),
                    )?;
                    ir.for_range(fx.f, "pv", ir.int(0), kn, 1, |j| {
                        let p = ir.load_f32(ir.at(scores, j)?)?.into_float_value();
                        let vp = ir.at(vrow0, ir.mul(row_of(ir.add(k0, j)?)?, vs[2])?)?;
                        ir.for_range(fx.f, "pvd", ir.int(0), dv, 1, |x| {
                            let pa = ir.at(acc, x)?;
                            let av = ir.load_f32(pa)?.into_float_value();
                            let vv = ir
                                .load_f32(ir.at(vp, ir.mul(x, vs[3])?)?)?
                                .into_float_value();
                            let sum =
                                ir.b.build_float_add(av, ir.b.build_float_mul(p, vv, "")?, "")?;
                            ir.store(pa, sum)
                        })
                    })?;
                    Ok(vec![new_max.into(), l2.into()])
                },
            )?;
            let l = ml[1].into_float_value();
            let empty =
                ir.b.build_float_compare(FloatPredicate::OLE, l, m.c(0.0), "")?;
            let inv = m.select(empty, m.c(0.0), ir.b.build_float_div(m.c(1.0), l, "")?)?;
            ir.for_range(fx.f, "out", ir.int(0), dv, 1, |x| {
                let v = ir.load_f32(ir.at(acc, x)?)?.into_float_value();
                ir.store(
                    ir.at(o, ir.mul(x, os[3])?)?,
                    ir.b.build_float_mul(v, inv, "")?,
                )
            })
        })
    }
}

impl<'a, 'ctx> Lowerer<'a, 'ctx> {
    /// One part of the flash-style backward (see [`Attention::part`]).
    fn attention_grad(
        &self,
        fx: &Fx<'ctx>,
        begin: IntValue<'ctx>,
        end: IntValue<'ctx>,
        a: &Attention,
        part: AttnPart,
    ) -> IrResult<()> {
        let ir = self.ir;
        let m = Math { ir };
        let c = |x: &Ix| self.ix(fx, x, &[]);
        let s: Vec<IntValue<'ctx>> = a.sizes.iter().map(c).collect::<IrResult<_>>()?;
        let (h, t, nk, d, dv, hkv) = (s[1], s[2], s[3], s[4], s[5], s[6]);
        let group = ir.b.build_int_unsigned_div(h, hkv, "")?;
        type Rows<'c> = (PointerValue<'c>, Vec<IntValue<'c>>);
        let strides = |st: &crate::kernel::Strided| -> IrResult<Rows<'ctx>> {
            let base = ir.at(self.buf(fx, st.buf)?, c(&st.offset)?)?;
            let v = st.strides.iter().map(c).collect::<IrResult<Vec<_>>>()?;
            Ok((base, v))
        };
        let (qb, qs) = strides(&a.q)?;
        let (kb, ks) = strides(&a.k)?;
        let (vb, vs) = strides(&a.v)?;
        let (ob, os) = strides(&a.out)?;
        let dout = a.dout.as_ref().map(strides).transpose()?;
        let acc = fx.scratch;
        let neg_inf = m.c(f64::NEG_INFINITY);
        let scale = m.c(a.scale);
        let zero = ir.int(0);
        // Row `i` of a strided operand at (b, head, i).
        let row = |(base, st): &Rows<'ctx>, b, head, i| -> IrResult<PointerValue<'ctx>> {
            ir.at(
                *base,
                ir.add(
                    ir.mul(b, st[0])?,
                    ir.add(ir.mul(head, st[1])?, ir.mul(i, st[2])?)?,
                )?,
            )
        };
        let dot = |x: PointerValue<'ctx>,
                   xs: IntValue<'ctx>,
                   y: PointerValue<'ctx>,
                   ys: IntValue<'ctx>,
                   n: IntValue<'ctx>|
         -> IrResult<FloatValue<'ctx>> {
            let steps = WholeSteps {
                start: ir.int(0),
                limit: n,
                step: 1,
            };
            let (_, sum) = ir.carried_loop(fx.f, "dot", steps, &[m.c(0.0).into()], |i, cur| {
                let xv = ir.load_f32(ir.at(x, ir.mul(i, xs)?)?)?.into_float_value();
                let yv = ir.load_f32(ir.at(y, ir.mul(i, ys)?)?)?.into_float_value();
                let p = ir.b.build_float_mul(xv, yv, "")?;
                set_reassoc(p);
                let sum = ir.b.build_float_add(cur[0].into_float_value(), p, "")?;
                set_reassoc(sum);
                Ok(vec![sum.into()])
            })?;
            Ok(sum[0].into_float_value())
        };
        // acc[0..n] += f · x[0..n] (x strided).
        let axpy = |f: FloatValue<'ctx>,
                    x: PointerValue<'ctx>,
                    xs: IntValue<'ctx>,
                    n: IntValue<'ctx>|
         -> IrResult<()> {
            ir.for_range(fx.f, "axpy", ir.int(0), n, 1, |i| {
                let pa = ir.at(acc, i)?;
                let av = ir.load_f32(pa)?.into_float_value();
                let xv = ir.load_f32(ir.at(x, ir.mul(i, xs)?)?)?.into_float_value();
                ir.store(pa, ir.b.build_float_add(av, ir.b.build_float_mul(f, xv, "")?, "")?)
            })
        };
        let clear = |n: IntValue<'ctx>| {
            ir.for_range(fx.f, "clear", ir.int(0), n, 1, |i| {
                ir.store(ir.at(acc, i)?, m.c(0.0))
            })
        };
        let store_row = |dst: PointerValue<'ctx>, n: IntValue<'ctx>| {
            ir.for_range(fx.f, "store", ir.int(0), n, 1, |i| {
                let v = ir.load_f32(ir.at(acc, i)?)?;
                ir.store(ir.at(dst, ir.mul(i, os[3])?)?, v)
            })
        };
        // The scaled, biased score of (b, head, query, key); −∞ where the key mask drops
        // the key.
        let score = |qp: PointerValue<'ctx>,
                     kp: PointerValue<'ctx>,
                     vars: [IntValue<'ctx>; 4]|
         -> IrResult<FloatValue<'ctx>> {
            let mut sc = ir.b.build_float_mul(dot(qp, qs[3], kp, ks[3], d)?, scale, "")?;
            if let Some(bias) = &a.bias {
                sc = ir.b.build_float_add(sc, self.expr(fx, bias, &vars)?, "")?;
            }
            if let Some(km) = &a.key_mask {
                let keep = self.expr(fx, km, &vars)?;
                let off = ir.b.build_float_compare(FloatPredicate::OEQ, keep, m.c(0.0), "")?;
                sc = m.select(off, neg_inf, sc)?;
            }
            Ok(sc)
        };
        let stat = |e: &Option<Expr>, vars: &[IntValue<'ctx>]| -> IrResult<FloatValue<'ctx>> {
            match e {
                Some(e) => self.expr(fx, e, vars),
                None => Err(IrError("attention backward without lse / δ".into())),
            }
        };

        match part {
            AttnPart::Lse | AttnPart::Q => ir.for_range(fx.f, "row", begin, end, 1, |it| {
                let ht = ir.mul(h, t)?;
                let b = ir.b.build_int_unsigned_div(it, ht, "")?;
                let hh = ir.b.build_int_unsigned_rem(
                    ir.b.build_int_unsigned_div(it, t, "")?,
                    h,
                    "",
                )?;
                let tt = ir.b.build_int_unsigned_rem(it, t, "")?;
                let kh = ir.b.build_int_unsigned_div(hh, group, "")?;
                let qp = row(&(qb, qs.clone()), b, hh, tt)?;
                let pos = ir.add(ir.sub(nk, t)?, tt)?;
                let (lo, hi) = match a.mask {
                    MaskKind::Bidirectional => (zero, nk),
                    MaskKind::Causal => (zero, ir.min(nk, ir.add(pos, ir.int(1))?)?),
                    MaskKind::Sliding(w) => (
                        self.max(zero, ir.sub(ir.add(pos, ir.int(1))?, ir.int(w))?)?,
                        ir.min(nk, ir.add(pos, ir.int(1))?)?,
                    ),
                };
                let keys = WholeSteps {
                    start: lo,
                    limit: hi,
                    step: 1,
                };
                let op = row(&(ob, os.clone()), b, hh, tt)?;
                if part == AttnPart::Lse {
                    // Online log-sum-exp over the visible keys.
                    let (_, ml) = ir.carried_loop(
                        fx.f,
                        "lse",
                        keys,
                        &[neg_inf.into(), m.c(0.0).into()],
                        |key, cur| {
                            let (mx, l) = (cur[0].into_float_value(), cur[1].into_float_value());
                            let kp = row(&(kb, ks.clone()), b, kh, key)?;
                            let sc = score(qp, kp, [b, hh, tt, key])?;
                            let new_max = m.binary_intrinsic("llvm.maxnum", mx, sc)?;
                            let none = ir.b.build_float_compare(
                                FloatPredicate::OEQ,
                                new_max,
                                neg_inf,
                                "",
                            )?;
                            let corr = m.exp(ir.b.build_float_sub(mx, new_max, "")?)?;
                            let e = m.exp(ir.b.build_float_sub(sc, new_max, "")?)?;
                            let l2 = ir.b.build_float_add(ir.b.build_float_mul(l, corr, "")?, e, "")?;
                            let l2 = m.select(none, m.c(0.0), l2)?;
                            Ok(vec![new_max.into(), l2.into()])
                        },
                    )?;
                    let (mx, l) = (ml[0].into_float_value(), ml[1].into_float_value());
                    let none = ir.b.build_float_compare(FloatPredicate::OEQ, mx, neg_inf, "")?;
                    let lse = ir.b.build_float_add(mx, m.log(l)?, "")?;
                    return ir.store(op, m.select(none, m.c(f64::INFINITY), lse)?);
                }
                // dQ = scale · Σ_j p_ij (dO_i · v_j − δ_i) k_j.
                let (db, dsv) = dout.clone().ok_or_else(|| IrError("dQ without dO".into()))?;
                let dp_row = row(&(db, dsv.clone()), b, hh, tt)?;
                let lse = stat(&a.lse, &[b, hh, tt])?;
                let delta = stat(&a.delta, &[b, hh, tt])?;
                clear(d)?;
                ir.for_range(fx.f, "key", lo, hi, 1, |key| {
                    let kp = row(&(kb, ks.clone()), b, kh, key)?;
                    let vp = row(&(vb, vs.clone()), b, kh, key)?;
                    let sc = score(qp, kp, [b, hh, tt, key])?;
                    let p = m.exp(ir.b.build_float_sub(sc, lse, "")?)?;
                    let dp = dot(dp_row, dsv[3], vp, vs[3], dv)?;
                    let ds = ir.b.build_float_mul(
                        ir.b.build_float_mul(p, ir.b.build_float_sub(dp, delta, "")?, "")?,
                        scale,
                        "",
                    )?;
                    axpy(ds, kp, ks[3], d)
                })?;
                store_row(op, d)
            }),
            AttnPart::K | AttnPart::V => ir.for_range(fx.f, "krow", begin, end, 1, |it| {
                let hn = ir.mul(hkv, nk)?;
                let b = ir.b.build_int_unsigned_div(it, hn, "")?;
                let kh = ir.b.build_int_unsigned_rem(
                    ir.b.build_int_unsigned_div(it, nk, "")?,
                    hkv,
                    "",
                )?;
                let key = ir.b.build_int_unsigned_rem(it, nk, "")?;
                let kp = row(&(kb, ks.clone()), b, kh, key)?;
                let vp = row(&(vb, vs.clone()), b, kh, key)?;
                let (db, dsv) = dout.clone().ok_or_else(|| IrError("dK/dV without dO".into()))?;
                // The queries that see this key: query tt sits at position nk − t + tt.
                let first = ir.sub(ir.add(key, t)?, nk)?;
                let (tlo, thi) = match a.mask {
                    MaskKind::Bidirectional => (zero, t),
                    MaskKind::Causal => (self.max(zero, first)?, t),
                    MaskKind::Sliding(w) => (
                        self.max(zero, first)?,
                        ir.min(t, ir.add(first, ir.int(w))?)?,
                    ),
                };
                let width = if part == AttnPart::K { d } else { dv };
                clear(width)?;
                let h0 = ir.mul(kh, group)?;
                ir.for_range(fx.f, "head", h0, ir.add(h0, group)?, 1, |hh| {
                    ir.for_range(fx.f, "query", tlo, thi, 1, |tt| {
                        let qp = row(&(qb, qs.clone()), b, hh, tt)?;
                        let dp_row = row(&(db, dsv.clone()), b, hh, tt)?;
                        let sc = score(qp, kp, [b, hh, tt, key])?;
                        let lse = stat(&a.lse, &[b, hh, tt])?;
                        let p = m.exp(ir.b.build_float_sub(sc, lse, "")?)?;
                        if part == AttnPart::V {
                            // dV_j = Σ_i p_ij dO_i.
                            return axpy(p, dp_row, dsv[3], dv);
                        }
                        // dK_j = scale · Σ_i p_ij (dO_i · v_j − δ_i) q_i.
                        let delta = stat(&a.delta, &[b, hh, tt])?;
                        let dp = dot(dp_row, dsv[3], vp, vs[3], dv)?;
                        let ds = ir.b.build_float_mul(
                            ir.b.build_float_mul(p, ir.b.build_float_sub(dp, delta, "")?, "")?,
                            scale,
                            "",
                        )?;
                        axpy(ds, qp, qs[3], d)
                    })
                })?;
                store_row(row(&(ob, os.clone()), b, kh, key)?, width)
            }),
        }
    }
}

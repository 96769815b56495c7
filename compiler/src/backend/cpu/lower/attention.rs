//! Attention kernels: one query row per iteration, keys in blocks with online softmax;
//! ring caches read key p from row p mod R. A prompt's rows (contiguous q, k, v) go in
//! blocks of 64 queries × 256 keys through the packed sgemm (`attention_block`). The
//! flash-style backward parts recompute each score from q and k, FlashAttention-2's way:
//! `Lse` and dQ per block of queries, dK and dV per block of keys (over the queries that
//! see them), each block pair multiplied by the packed sgemm (S = Q·Kᵀ, dP = dO·Vᵀ,
//! dQ += dS·K, dV += Pᵀ·dO, dK += dSᵀ·Q) in GRAD_BLOCK² scratch tiles — nothing of size
//! queries × keys is stored. Operands whose rows are not contiguous take a row-at-a-time
//! path.

use super::*;
use crate::backend::llvm::expr::AttnMask;
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
        let ex = self.ex();
        let am = AttnMask {
            ex: &ex,
            mask: a.mask,
            nk,
            t,
        };
        let row_path = |it: IntValue<'ctx>| -> IrResult<()> {
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
            let (lo, hi) = am.keys_of(tt)?;
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
                    let (new_max, l2) = self.softmax_block(
                        fx,
                        (scores, ir.int(0), kn),
                        bmax[0].into_float_value(),
                        (mx, l),
                        (acc, dv),
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
            self.finish_row(fx, (acc, dv), ml[1].into_float_value(), (o, os[3]))
        };
        if ring.is_some() {
            // A ring's keys wrap around its rows: one query row at a time.
            return ir.for_range(fx.f, "row", begin, end, 1, row_path);
        }
        // A prompt's queries (t > 1) whose q, k and v rows are contiguous: consecutive
        // rows of one (batch, head) in blocks of up to GRAD_BLOCK through the packed
        // sgemm; a decode step (t = 1) and strided operands one row at a time. Which path
        // a row takes and what it computes do not depend on how the rows are split among
        // threads (a block's rows are independent: see `attention_block`).
        let unit = |x: IntValue<'ctx>| ir.b.build_int_compare(IntPredicate::EQ, x, ir.int(1), "");
        let contiguous = ir.b.build_and(unit(qs[3])?, unit(ks[3])?, "")?;
        let contiguous = ir.b.build_and(contiguous, unit(vs[3])?, "")?;
        let prompt =
            ir.b.build_int_compare(IntPredicate::UGE, t, ir.int(2), "")?;
        let blocked = ir.b.build_and(contiguous, prompt, "")?;
        ir.if_else(
            fx.f,
            "qblocks",
            blocked,
            || {
                ir.step_loop(fx.f, "qblk", begin, end, |it| {
                    let tt = ir.b.build_int_unsigned_rem(it, t, "")?;
                    let rows = ir.min(
                        ir.int(GRAD_BLOCK),
                        ir.min(ir.sub(t, tt)?, ir.sub(end, it)?)?,
                    )?;
                    self.attention_block(fx, a, it, rows)?;
                    ir.add(it, rows)
                })
            },
            || ir.for_range(fx.f, "row", begin, end, 1, row_path),
        )
    }

    /// Rows `it..it + rows` of the forward attention (queries tt..tt + rows of one batch
    /// row and head, q, k and v rows contiguous): per block of PROMPT_KEYS keys S = Q·Kᵀ
    /// and then P·V by the packed sgemm, the online softmax between them per query row,
    /// the same running (max, Σ exp) and rescaling as the one-row path. Key blocks lie
    /// on a fixed grid (multiples of PROMPT_KEYS), each row's loops run over its own keys
    /// of the block, and a block a row sees none of leaves its max, sum and accumulator
    /// bit for bit as they were (p = 0, correction exactly 1; P·V adds exact zeros), so a
    /// row's result does not depend on the other rows of its block.
    fn attention_block(
        &self,
        fx: &Fx<'ctx>,
        a: &Attention,
        it: IntValue<'ctx>,
        rows: IntValue<'ctx>,
    ) -> IrResult<()> {
        let ir = self.ir;
        let m = Math { ir };
        let [h, t, nk, d, dv, _, group] = self.attn_sizes(fx, a)?;
        let (qr, kr, vr, or) = (
            self.attn_rows(fx, &a.q)?,
            self.attn_rows(fx, &a.k)?,
            self.attn_rows(fx, &a.v)?,
            self.attn_rows(fx, &a.out)?,
        );
        let row = |r: &Rows<'ctx>, b, head, i| row_at(ir, r, b, head, i);
        let neg_inf = m.c(f64::NEG_INFINITY);
        let kb = ir.int(PROMPT_KEYS);
        // Scratch (`prompt_scratch_floats`): the sgemm's workspace, the S tile (GRAD_BLOCK
        // × PROMPT_KEYS), the running max and sum per row, the accumulator rows, a product
        // tile.
        let work = fx.scratch;
        let [sbuf, mbuf, lbuf, acc, tbuf] = self.attn_tiles(fx, GRAD_BLOCK * PROMPT_KEYS, d, dv)?;
        let gemm = |f, args| gemm_call(ir, f, args, work);
        use IntOrPtr::{I, P};
        let fill = |p, n, v| fill_floats(ir, fx.f, p, n, v);
        let ex = self.ex();
        let am = AttnMask {
            ex: &ex,
            mask: a.mask,
            nk,
            t,
        };
        let b = ir.b.build_int_unsigned_div(it, ir.mul(h, t)?, "")?;
        let hh =
            ir.b.build_int_unsigned_rem(ir.b.build_int_unsigned_div(it, t, "")?, h, "")?;
        let tt0 = ir.b.build_int_unsigned_rem(it, t, "")?;
        let kh = ir.b.build_int_unsigned_div(hh, group, "")?;
        // The keys any of the rows sees (the masks' ranges only move forward with tt).
        let (lo, _) = am.keys_of(tt0)?;
        let (_, hi) = am.keys_of(ir.sub(ir.add(tt0, rows)?, ir.int(1))?)?;
        fill(acc, ir.mul(rows, dv)?, m.c(0.0))?;
        fill(mbuf, rows, neg_inf)?;
        fill(lbuf, rows, m.c(0.0))?;
        let first = ir.mul(ir.b.build_int_unsigned_div(lo, kb, "")?, kb)?;
        ir.step_loop(fx.f, "kblk", first, hi, |j0| {
            let cols = ir.min(kb, ir.sub(hi, j0)?)?;
            let qp = row(&qr, b, hh, tt0)?;
            let kp = row(&kr, b, kh, j0)?;
            gemm(
                self.sgemm_bt,
                [
                    I(rows),
                    I(cols),
                    I(d),
                    P(qp),
                    I(qr.1[2]),
                    P(kp),
                    I(kr.1[2]),
                    P(sbuf),
                    I(kb),
                ],
            )?;
            ir.for_range(fx.f, "srow", ir.int(0), rows, 1, |r| {
                let tt = ir.add(tt0, r)?;
                let srow = ir.at(sbuf, ir.mul(r, kb)?)?;
                // This row's own keys in the block, [c0, c1): its loops (and their
                // vectorised sums) run over them alone, whatever rows share the block;
                // the rest of its row of S becomes p = 0.
                let (klo, khi) = am.keys_of(tt)?;
                let c0 = ir.min(self.max(ir.sub(klo, j0)?, ir.int(0))?, cols)?;
                let c1 = self.max(ir.min(ir.sub(khi, j0)?, cols)?, c0)?;
                for (from, to) in [(ir.int(0), c0), (c1, cols)] {
                    ir.for_range(fx.f, "pz", from, to, 1, |cc| {
                        ir.store(ir.at(srow, cc)?, m.c(0.0))
                    })?;
                }
                let steps = WholeSteps {
                    start: c0,
                    limit: c1,
                    step: 1,
                };
                let (_, bm) =
                    ir.carried_loop(fx.f, "bmax", steps, &[neg_inf.into()], |cc, cur| {
                        let ps = ir.at(srow, cc)?;
                        let x = ir.load_f32(ps)?.into_float_value();
                        let x = self.masked_score(fx, a, &am, x, [b, hh, tt, ir.add(j0, cc)?])?;
                        ir.store(ps, x)?;
                        let mx = m.binary_intrinsic("llvm.maxnum", cur[0].into_float_value(), x)?;
                        Ok(vec![mx.into()])
                    })?;
                let (pm, pl) = (ir.at(mbuf, r)?, ir.at(lbuf, r)?);
                let old = ir.load_f32(pm)?.into_float_value();
                let l = ir.load_f32(pl)?.into_float_value();
                let arow = ir.at(acc, ir.mul(r, dv)?)?;
                let (new_max, l2) = self.softmax_block(
                    fx,
                    (srow, c0, c1),
                    bm[0].into_float_value(),
                    (old, l),
                    (arow, dv),
                )?;
                ir.store(pl, l2)?;
                ir.store(pm, new_max)
            })?;
            // T = P·V (B = V's rows, [cols, dv]), then acc += T.
            let vp = row(&vr, b, kh, j0)?;
            gemm(
                self.sgemm,
                [
                    I(rows),
                    I(dv),
                    I(cols),
                    P(sbuf),
                    I(kb),
                    P(vp),
                    I(vr.1[2]),
                    P(tbuf),
                    I(dv),
                ],
            )?;
            ir.for_range(fx.f, "accum", ir.int(0), ir.mul(rows, dv)?, 1, |i| {
                let pd = ir.at(acc, i)?;
                let x = ir.load_f32(pd)?.into_float_value();
                let y = ir.load_f32(ir.at(tbuf, i)?)?.into_float_value();
                ir.store(pd, ir.b.build_float_add(x, y, "")?)
            })?;
            ir.add(j0, cols)
        })?;
        ir.for_range(fx.f, "orow", ir.int(0), rows, 1, |r| {
            let l = ir.load_f32(ir.at(lbuf, r)?)?.into_float_value();
            let o = row(&or, b, hh, ir.add(tt0, r)?)?;
            self.finish_row(fx, (ir.at(acc, ir.mul(r, dv)?)?, dv), l, (o, or.1[3]))
        })
    }

    /// A query row's output: its accumulator `acc` = (row, width) over its Σ exp `l`,
    /// stored to `out` = (row, stride); +0 for a row that sees no key (l = 0), whatever
    /// sign its zero sums took.
    fn finish_row(
        &self,
        fx: &Fx<'ctx>,
        acc: (PointerValue<'ctx>, IntValue<'ctx>),
        l: FloatValue<'ctx>,
        out: (PointerValue<'ctx>, IntValue<'ctx>),
    ) -> IrResult<()> {
        let ir = self.ir;
        let m = Math { ir };
        let ((arow, width), (o, stride)) = (acc, out);
        let empty =
            ir.b.build_float_compare(FloatPredicate::OLE, l, m.c(0.0), "")?;
        let inv = m.select(empty, m.c(0.0), ir.b.build_float_div(m.c(1.0), l, "")?)?;
        ir.for_range(fx.f, "out", ir.int(0), width, 1, |x| {
            let v = ir.load_f32(ir.at(arow, x)?)?.into_float_value();
            let y = m.select(empty, m.c(0.0), ir.b.build_float_mul(v, inv, "")?)?;
            ir.store(ir.at(o, ir.mul(x, stride)?)?, y)
        })
    }

    /// One key block of a query row's online softmax, shared by the row and the blocked
    /// paths: `scores` = (row, from, to) holds the block's masked scores, whose max is
    /// `bmax`; `run` = (max, Σ exp) so far. The scores become p = exp(score − new max) in
    /// place and the accumulator row `acc` = (row, width) is rescaled where the max moved;
    /// returns the new (max, Σ exp). The correction is exactly 1 where the max stays, so
    /// a block whose keys the row does not see changes nothing, bit for bit.
    fn softmax_block(
        &self,
        fx: &Fx<'ctx>,
        scores: (PointerValue<'ctx>, IntValue<'ctx>, IntValue<'ctx>),
        bmax: FloatValue<'ctx>,
        run: (FloatValue<'ctx>, FloatValue<'ctx>),
        acc: (PointerValue<'ctx>, IntValue<'ctx>),
    ) -> IrResult<(FloatValue<'ctx>, FloatValue<'ctx>)> {
        let ir = self.ir;
        let m = Math { ir };
        let ((srow, from, to), (old, l), (arow, width)) = (scores, run, acc);
        let neg_inf = m.c(f64::NEG_INFINITY);
        let new_max = m.binary_intrinsic("llvm.maxnum", old, bmax)?;
        let none =
            ir.b.build_float_compare(FloatPredicate::OEQ, new_max, neg_inf, "")?;
        let same =
            ir.b.build_float_compare(FloatPredicate::OEQ, new_max, old, "")?;
        let keep = ir.b.build_or(none, same, "")?;
        let corr = m.select(
            keep,
            m.c(1.0),
            m.exp(ir.b.build_float_sub(old, new_max, "")?)?,
        )?;
        let steps = WholeSteps {
            start: from,
            limit: to,
            step: 1,
        };
        let (_, sum) = ir.carried_loop(fx.f, "exp", steps, &[m.c(0.0).into()], |cc, cur| {
            let ps = ir.at(srow, cc)?;
            let x = ir.load_f32(ps)?.into_float_value();
            let p = m.select(
                none,
                m.c(0.0),
                m.exp(ir.b.build_float_sub(x, new_max, "")?)?,
            )?;
            ir.store(ps, p)?;
            let s2 = ir.b.build_float_add(cur[0].into_float_value(), p, "")?;
            set_reassoc(s2);
            Ok(vec![s2.into()])
        })?;
        let l2 = ir.b.build_float_add(
            ir.b.build_float_mul(l, corr, "")?,
            sum[0].into_float_value(),
            "",
        )?;
        ir.if_else(
            fx.f,
            "rescale",
            ir.b.build_not(keep, "")?,
            || {
                ir.for_range(fx.f, "rs", ir.int(0), width, 1, |x| {
                    let pa = ir.at(arow, x)?;
                    let v = ir.load_f32(pa)?.into_float_value();
                    ir.store(pa, ir.b.build_float_mul(v, corr, "")?)
                })
            },
            || Ok(()),
        )?;
        Ok((new_max, l2))
    }

    /// The scaled, biased score of (b, head, query, key) from its dot product; −∞ where
    /// the mask or the key mask hides the key.
    fn masked_score(
        &self,
        fx: &Fx<'ctx>,
        a: &Attention,
        am: &AttnMask<'_, 'ctx>,
        dotv: FloatValue<'ctx>,
        vars: [IntValue<'ctx>; 4],
    ) -> IrResult<FloatValue<'ctx>> {
        let ir = self.ir;
        let m = Math { ir };
        let neg_inf = m.c(f64::NEG_INFINITY);
        let [_, _, tt, key] = vars;
        let mut sc = ir.b.build_float_mul(dotv, m.c(a.scale), "")?;
        if let Some(bias) = &a.bias {
            sc = ir.b.build_float_add(sc, self.expr(fx, bias, &vars)?, "")?;
        }
        if let Some(ok) = am.allows(tt, key)? {
            sc = m.select(ok, sc, neg_inf)?;
        }
        if let Some(km) = &a.key_mask {
            let keep = self.expr(fx, km, &vars)?;
            let off =
                ir.b.build_float_compare(FloatPredicate::OEQ, keep, m.c(0.0), "")?;
            sc = m.select(off, neg_inf, sc)?;
        }
        Ok(sc)
    }
}

/// A strided attention operand: its base and its strides (batch, head, row, column).
type Rows<'c> = (PointerValue<'c>, Vec<IntValue<'c>>);

/// Row `i` of a strided operand at (b, head, i).
fn row_at<'ctx>(
    ir: &Ir<'ctx>,
    (base, st): &Rows<'ctx>,
    b: IntValue<'ctx>,
    head: IntValue<'ctx>,
    i: IntValue<'ctx>,
) -> IrResult<PointerValue<'ctx>> {
    ir.at(
        *base,
        ir.add(
            ir.mul(b, st[0])?,
            ir.add(ir.mul(head, st[1])?, ir.mul(i, st[2])?)?,
        )?,
    )
}

/// A call of a matmul routine with its nine arguments and the workspace.
fn gemm_call<'ctx>(
    ir: &Ir<'ctx>,
    f: FunctionValue<'ctx>,
    args: [IntOrPtr<'ctx>; 9],
    work: PointerValue<'ctx>,
) -> IrResult<()> {
    let mut v: Vec<inkwell::values::BasicMetadataValueEnum> =
        args.iter().map(|a| a.meta()).collect();
    v.push(work.into());
    ir.b.build_call(f, &v, "")?;
    Ok(())
}

/// `p[0..n] = v`.
fn fill_floats<'ctx>(
    ir: &Ir<'ctx>,
    f: FunctionValue<'ctx>,
    p: PointerValue<'ctx>,
    n: IntValue<'ctx>,
    v: FloatValue<'ctx>,
) -> IrResult<()> {
    ir.for_range(f, "fill", ir.int(0), n, 1, |i| ir.store(ir.at(p, i)?, v))
}

impl<'a, 'ctx> Lowerer<'a, 'ctx> {
    /// An attention kernel's (heads, queries, keys, head width, value width, key/value
    /// heads, heads per key/value head).
    fn attn_sizes(&self, fx: &Fx<'ctx>, a: &Attention) -> IrResult<[IntValue<'ctx>; 7]> {
        let ir = self.ir;
        let s = a
            .sizes
            .iter()
            .map(|x| self.ix(fx, x, &[]))
            .collect::<IrResult<Vec<_>>>()?;
        let (h, hkv) = (s[1], s[6]);
        let group = ir.b.build_int_unsigned_div(h, hkv, "")?;
        Ok([h, s[2], s[3], s[4], s[5], hkv, group])
    }

    /// An attention operand's base and strides.
    fn attn_rows(&self, fx: &Fx<'ctx>, st: &crate::kernel::Strided) -> IrResult<Rows<'ctx>> {
        let c = |x: &Ix| self.ix(fx, x, &[]);
        let base = self.ir.at(self.buf(fx, st.buf)?, c(&st.offset)?)?;
        let v = st.strides.iter().map(c).collect::<IrResult<Vec<_>>>()?;
        Ok((base, v))
    }

    /// The blocked attention's scratch past the sgemm's workspace: a score region of
    /// `scores` floats, the running max and sum per row (GRAD_BLOCK each), the
    /// accumulator rows and a product tile (GRAD_BLOCK × max(d, dv) each).
    fn attn_tiles(
        &self,
        fx: &Fx<'ctx>,
        scores: u64,
        d: IntValue<'ctx>,
        dv: IntValue<'ctx>,
    ) -> IrResult<[PointerValue<'ctx>; 5]> {
        let ir = self.ir;
        let blk = ir.int(GRAD_BLOCK);
        let sbuf = ir.at(fx.scratch, ir.int(self.work_floats))?;
        let mbuf = ir.at(sbuf, ir.int(scores))?;
        let lbuf = ir.at(mbuf, blk)?;
        let acc = ir.at(lbuf, blk)?;
        let tbuf = ir.at(acc, ir.mul(blk, self.max(d, dv)?)?)?;
        Ok([sbuf, mbuf, lbuf, acc, tbuf])
    }
}

/// Queries (or keys) per parallel iteration of the backward parts, and the keys (or
/// queries) of one block pair.
pub const GRAD_BLOCK: u64 = 64;

/// Keys per block of a prompt's blocked forward attention: one packing of a query block
/// per 256 keys (64: the packing of Q and K took as long as their product).
pub const PROMPT_KEYS: u64 = 256;

/// Scratch floats the blocked forward attention uses past the sgemm's workspace, for head
/// widths up to `max_head_dim`.
pub fn prompt_scratch_floats(max_head_dim: u64) -> u64 {
    GRAD_BLOCK * PROMPT_KEYS + 2 * GRAD_BLOCK + 2 * GRAD_BLOCK * max_head_dim.max(1) + 16
}

/// Scratch floats the backward parts use past the sgemm's workspace, for head widths up
/// to `max_head_dim`.
pub fn grad_scratch_floats(max_head_dim: u64) -> u64 {
    2 * GRAD_BLOCK * GRAD_BLOCK + 2 * GRAD_BLOCK + 2 * GRAD_BLOCK * max_head_dim.max(1) + 16
}

impl<'a, 'ctx> Lowerer<'a, 'ctx> {
    /// One part of the flash-style backward (see [`Attention::part`]): one block of
    /// GRAD_BLOCK queries (`Lse`, `Q`) or keys (`K`, `V`) per iteration.
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
        let [h, t, nk, d, dv, hkv, group] = self.attn_sizes(fx, a)?;
        let qr = self.attn_rows(fx, &a.q)?;
        let kr = self.attn_rows(fx, &a.k)?;
        let vr = self.attn_rows(fx, &a.v)?;
        let or = self.attn_rows(fx, &a.out)?;
        let dr = match &a.dout {
            Some(x) => self.attn_rows(fx, x)?,
            // `Lse` reads no dO: q stands in (never read).
            None => qr.clone(),
        };
        let (qs, ks, vs, os, dsv) = (&qr.1, &kr.1, &vr.1, &or.1, &dr.1);
        let neg_inf = m.c(f64::NEG_INFINITY);
        let scale = m.c(a.scale);
        let blk = ir.int(GRAD_BLOCK);
        // Scratch: the sgemm's workspace, then S and dP tiles, the running max and sum of
        // `Lse`, the accumulator rows and a product tile.
        let work = fx.scratch;
        let [sbuf, mbuf, lbuf, acc, tbuf] =
            self.attn_tiles(fx, 2 * GRAD_BLOCK * GRAD_BLOCK, d, dv)?;
        let dpbuf = ir.at(sbuf, ir.int(GRAD_BLOCK * GRAD_BLOCK))?;
        // Row `i` of a strided operand at (b, head, i).
        let row = |r: &Rows<'ctx>, b, head, i| row_at(ir, r, b, head, i);
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
        // dst[0..n] += f · x[0..n] (x strided).
        let axpy = |dst: PointerValue<'ctx>,
                    f: FloatValue<'ctx>,
                    x: PointerValue<'ctx>,
                    xs: IntValue<'ctx>,
                    n: IntValue<'ctx>|
         -> IrResult<()> {
            ir.for_range(fx.f, "axpy", ir.int(0), n, 1, |i| {
                let pa = ir.at(dst, i)?;
                let av = ir.load_f32(pa)?.into_float_value();
                let xv = ir.load_f32(ir.at(x, ir.mul(i, xs)?)?)?.into_float_value();
                ir.store(
                    pa,
                    ir.b.build_float_add(av, ir.b.build_float_mul(f, xv, "")?, "")?,
                )
            })
        };
        let fill = |p, n, v| fill_floats(ir, fx.f, p, n, v);
        // dst[0..n] += src[0..n].
        let add_into = |dst: PointerValue<'ctx>, src: PointerValue<'ctx>, n: IntValue<'ctx>| {
            ir.for_range(fx.f, "accum", ir.int(0), n, 1, |i| {
                let pd = ir.at(dst, i)?;
                let x = ir.load_f32(pd)?.into_float_value();
                let y = ir.load_f32(ir.at(src, i)?)?.into_float_value();
                ir.store(pd, ir.b.build_float_add(x, y, "")?)
            })
        };
        // Accumulator row r (width `w`) → output row.
        let store_rows = |dst: &dyn Fn(IntValue<'ctx>) -> IrResult<PointerValue<'ctx>>,
                          n: IntValue<'ctx>,
                          w: IntValue<'ctx>| {
            ir.for_range(fx.f, "out", ir.int(0), n, 1, |r| {
                let to = dst(r)?;
                let from = ir.at(acc, ir.mul(r, w)?)?;
                ir.for_range(fx.f, "outx", ir.int(0), w, 1, |x| {
                    let v = ir.load_f32(ir.at(from, x)?)?;
                    ir.store(ir.at(to, ir.mul(x, os[3])?)?, v)
                })
            })
        };
        let ex = self.ex();
        let am = AttnMask {
            ex: &ex,
            mask: a.mask,
            nk,
            t,
        };
        let masked = |dotv: FloatValue<'ctx>, vars: [IntValue<'ctx>; 4]| {
            self.masked_score(fx, a, &am, dotv, vars)
        };
        let stat = |e: &Option<Expr>, vars: &[IntValue<'ctx>]| -> IrResult<FloatValue<'ctx>> {
            match e {
                Some(e) => self.expr(fx, e, vars),
                None => Err(IrError("attention backward without lse / δ".into())),
            }
        };
        let gemm = |f, args| gemm_call(ir, f, args, work);
        use IntOrPtr::{I, P};
        let keys_of = |tt: IntValue<'ctx>| am.keys_of(tt);
        let queries_of = |j: IntValue<'ctx>| am.queries_of(j);
        let unit = |x: IntValue<'ctx>| ir.b.build_int_compare(IntPredicate::EQ, x, ir.int(1), "");
        let mut contiguous = ir.b.build_and(unit(qs[3])?, unit(ks[3])?, "")?;
        if part != AttnPart::Lse {
            contiguous = ir.b.build_and(contiguous, unit(vs[3])?, "")?;
            contiguous = ir.b.build_and(contiguous, unit(dsv[3])?, "")?;
        }
        let ceil = |n: IntValue<'ctx>| -> IrResult<IntValue<'ctx>> {
            Ok(ir
                .b
                .build_int_unsigned_div(ir.add(n, ir.int(GRAD_BLOCK - 1))?, blk, "")?)
        };
        // Every (r, c) of a rows × cols tile.
        let tile =
            |rows: IntValue<'ctx>,
             cols: IntValue<'ctx>,
             body: &dyn Fn(IntValue<'ctx>, IntValue<'ctx>) -> IrResult<()>| {
                ir.for_range(fx.f, "tr", ir.int(0), rows, 1, |r| {
                    ir.for_range(fx.f, "tc", ir.int(0), cols, 1, |cc| body(r, cc))
                })
            };

        // S = Q·Kᵀ and dP = dO·Vᵀ of a block pair, into their tiles.
        let scores = |rows, cols, qp, kp| {
            gemm(
                self.sgemm_bt,
                [
                    I(rows),
                    I(cols),
                    I(d),
                    P(qp),
                    I(qs[2]),
                    P(kp),
                    I(ks[2]),
                    P(sbuf),
                    I(blk),
                ],
            )
        };
        let value_dots = |rows, cols, dp, vp| {
            gemm(
                self.sgemm_bt,
                [
                    I(rows),
                    I(cols),
                    I(dv),
                    P(dp),
                    I(dsv[2]),
                    P(vp),
                    I(vs[2]),
                    P(dpbuf),
                    I(blk),
                ],
            )
        };
        // p = exp(score − lse) of a raw dot product; dS = scale · p · (dP − δ).
        let prob = |dotv: FloatValue<'ctx>, vars: [IntValue<'ctx>; 4]| {
            let x = masked(dotv, vars)?;
            m.exp(ir.b.build_float_sub(x, stat(&a.lse, &vars[..3])?, "")?)
        };
        let dscore = |p: FloatValue<'ctx>, dp: FloatValue<'ctx>, query: &[IntValue<'ctx>]| {
            let centred = ir.b.build_float_sub(dp, stat(&a.delta, query)?, "")?;
            Ok::<_, IrError>(ir.b.build_float_mul(
                ir.b.build_float_mul(p, centred, "")?,
                scale,
                "",
            )?)
        };
        // A running (max, Σ exp) → log-sum-exp; +∞ for a query that sees no key.
        let finish_lse = |mx: FloatValue<'ctx>, l: FloatValue<'ctx>| {
            let none =
                ir.b.build_float_compare(FloatPredicate::OEQ, mx, neg_inf, "")?;
            let lse = ir.b.build_float_add(mx, m.log(l)?, "")?;
            m.select(none, m.c(f64::INFINITY), lse)
        };

        match part {
            AttnPart::Lse | AttnPart::Q => ir.for_range(fx.f, "qblk", begin, end, 1, |it| {
                let nqb = ceil(t)?;
                let b = ir.b.build_int_unsigned_div(it, ir.mul(h, nqb)?, "")?;
                let hh =
                    ir.b.build_int_unsigned_rem(ir.b.build_int_unsigned_div(it, nqb, "")?, h, "")?;
                let i0 = ir.mul(ir.b.build_int_unsigned_rem(it, nqb, "")?, blk)?;
                let rows = ir.min(blk, ir.sub(t, i0)?)?;
                let kh = ir.b.build_int_unsigned_div(hh, group, "")?;
                let (lo, _) = keys_of(i0)?;
                let (_, hi) = keys_of(ir.sub(ir.add(i0, rows)?, ir.int(1))?)?;
                let out_row = |r: IntValue<'ctx>| row(&or, b, hh, ir.add(i0, r)?);
                let blocked = || -> IrResult<()> {
                    let width = if part == AttnPart::Lse { ir.int(1) } else { d };
                    fill(acc, ir.mul(rows, width)?, m.c(0.0))?;
                    fill(mbuf, rows, neg_inf)?;
                    fill(lbuf, rows, m.c(0.0))?;
                    ir.step_loop(fx.f, "kblk", lo, hi, |j0| {
                        let cols = ir.min(blk, ir.sub(hi, j0)?)?;
                        let qp = row(&qr, b, hh, i0)?;
                        let kp = row(&kr, b, kh, j0)?;
                        scores(rows, cols, qp, kp)?;
                        if part == AttnPart::Lse {
                            ir.for_range(fx.f, "lrow", ir.int(0), rows, 1, |r| {
                                let tt = ir.add(i0, r)?;
                                let srow = ir.at(sbuf, ir.mul(r, blk)?)?;
                                let steps = WholeSteps {
                                    start: ir.int(0),
                                    limit: cols,
                                    step: 1,
                                };
                                let (_, bm) = ir.carried_loop(
                                    fx.f,
                                    "bmax",
                                    steps,
                                    &[neg_inf.into()],
                                    |cc, cur| {
                                        let ps = ir.at(srow, cc)?;
                                        let x = ir.load_f32(ps)?.into_float_value();
                                        let x = masked(x, [b, hh, tt, ir.add(j0, cc)?])?;
                                        ir.store(ps, x)?;
                                        let mx = m.binary_intrinsic(
                                            "llvm.maxnum",
                                            cur[0].into_float_value(),
                                            x,
                                        )?;
                                        Ok(vec![mx.into()])
                                    },
                                )?;
                                let pm = ir.at(mbuf, r)?;
                                let pl = ir.at(lbuf, r)?;
                                let old = ir.load_f32(pm)?.into_float_value();
                                let new_max = m.binary_intrinsic(
                                    "llvm.maxnum",
                                    old,
                                    bm[0].into_float_value(),
                                )?;
                                let none = ir.b.build_float_compare(
                                    FloatPredicate::OEQ,
                                    new_max,
                                    neg_inf,
                                    "",
                                )?;
                                let steps = WholeSteps {
                                    start: ir.int(0),
                                    limit: cols,
                                    step: 1,
                                };
                                let (_, sum) = ir.carried_loop(
                                    fx.f,
                                    "bsum",
                                    steps,
                                    &[m.c(0.0).into()],
                                    |cc, cur| {
                                        let x = ir.load_f32(ir.at(srow, cc)?)?.into_float_value();
                                        let e = m.exp(ir.b.build_float_sub(x, new_max, "")?)?;
                                        let s2 =
                                            ir.b.build_float_add(cur[0].into_float_value(), e, "")?;
                                        set_reassoc(s2);
                                        Ok(vec![s2.into()])
                                    },
                                )?;
                                let corr = m.exp(ir.b.build_float_sub(old, new_max, "")?)?;
                                let l = ir.load_f32(pl)?.into_float_value();
                                let l2 = ir.b.build_float_add(
                                    ir.b.build_float_mul(l, corr, "")?,
                                    sum[0].into_float_value(),
                                    "",
                                )?;
                                ir.store(pl, m.select(none, m.c(0.0), l2)?)?;
                                ir.store(pm, new_max)
                            })?;
                        } else {
                            let dp = row(&dr, b, hh, i0)?;
                            let vp = row(&vr, b, kh, j0)?;
                            value_dots(rows, cols, dp, vp)?;
                            tile(rows, cols, &|r, cc| {
                                let tt = ir.add(i0, r)?;
                                let vars = [b, hh, tt, ir.add(j0, cc)?];
                                let at = ir.mad(r, blk, cc)?;
                                let p =
                                    prob(ir.load_f32(ir.at(sbuf, at)?)?.into_float_value(), vars)?;
                                let pd = ir.at(dpbuf, at)?;
                                let dpv = ir.load_f32(pd)?.into_float_value();
                                let ds = dscore(p, dpv, &vars[..3])?;
                                ir.store(pd, ds)
                            })?;
                            gemm(
                                self.sgemm,
                                [
                                    I(rows),
                                    I(d),
                                    I(cols),
                                    P(dpbuf),
                                    I(blk),
                                    P(kp),
                                    I(ks[2]),
                                    P(tbuf),
                                    I(d),
                                ],
                            )?;
                            add_into(acc, tbuf, ir.mul(rows, d)?)?;
                        }
                        ir.add(j0, blk)
                    })?;
                    if part == AttnPart::Lse {
                        return ir.for_range(fx.f, "lse", ir.int(0), rows, 1, |r| {
                            let mx = ir.load_f32(ir.at(mbuf, r)?)?.into_float_value();
                            let l = ir.load_f32(ir.at(lbuf, r)?)?.into_float_value();
                            ir.store(out_row(r)?, finish_lse(mx, l)?)
                        });
                    }
                    store_rows(&out_row, rows, d)
                };
                // Row by row: scores from dot products.
                let by_rows = || -> IrResult<()> {
                    ir.for_range(fx.f, "qrow", ir.int(0), rows, 1, |r| {
                        let tt = ir.add(i0, r)?;
                        let (lo, hi) = keys_of(tt)?;
                        let qp = row(&qr, b, hh, tt)?;
                        let op = out_row(r)?;
                        if part == AttnPart::Lse {
                            let keys = WholeSteps {
                                start: lo,
                                limit: hi,
                                step: 1,
                            };
                            let (_, ml) = ir.carried_loop(
                                fx.f,
                                "lse",
                                keys,
                                &[neg_inf.into(), m.c(0.0).into()],
                                |key, cur| {
                                    let (mx, l) =
                                        (cur[0].into_float_value(), cur[1].into_float_value());
                                    let kp = row(&kr, b, kh, key)?;
                                    let sc =
                                        masked(dot(qp, qs[3], kp, ks[3], d)?, [b, hh, tt, key])?;
                                    let new_max = m.binary_intrinsic("llvm.maxnum", mx, sc)?;
                                    let none = ir.b.build_float_compare(
                                        FloatPredicate::OEQ,
                                        new_max,
                                        neg_inf,
                                        "",
                                    )?;
                                    let corr = m.exp(ir.b.build_float_sub(mx, new_max, "")?)?;
                                    let e = m.exp(ir.b.build_float_sub(sc, new_max, "")?)?;
                                    let l2 = ir.b.build_float_add(
                                        ir.b.build_float_mul(l, corr, "")?,
                                        e,
                                        "",
                                    )?;
                                    Ok(vec![new_max.into(), m.select(none, m.c(0.0), l2)?.into()])
                                },
                            )?;
                            let (mx, l) = (ml[0].into_float_value(), ml[1].into_float_value());
                            return ir.store(op, finish_lse(mx, l)?);
                        }
                        // dQ = scale · Σ_j p_ij (dO_i · v_j − δ_i) k_j.
                        let dp_row = row(&dr, b, hh, tt)?;
                        fill(acc, d, m.c(0.0))?;
                        ir.for_range(fx.f, "key", lo, hi, 1, |key| {
                            let kp = row(&kr, b, kh, key)?;
                            let vp = row(&vr, b, kh, key)?;
                            let p = prob(dot(qp, qs[3], kp, ks[3], d)?, [b, hh, tt, key])?;
                            let dp = dot(dp_row, dsv[3], vp, vs[3], dv)?;
                            let ds = dscore(p, dp, &[b, hh, tt])?;
                            axpy(acc, ds, kp, ks[3], d)
                        })?;
                        ir.for_range(fx.f, "qout", ir.int(0), d, 1, |x| {
                            let v = ir.load_f32(ir.at(acc, x)?)?;
                            ir.store(ir.at(op, ir.mul(x, os[3])?)?, v)
                        })
                    })
                };
                ir.if_else(fx.f, "contig", contiguous, blocked, by_rows)
            }),
            AttnPart::K | AttnPart::V => ir.for_range(fx.f, "kblk", begin, end, 1, |it| {
                let nkb = ceil(nk)?;
                let b = ir.b.build_int_unsigned_div(it, ir.mul(hkv, nkb)?, "")?;
                let kh = ir.b.build_int_unsigned_rem(
                    ir.b.build_int_unsigned_div(it, nkb, "")?,
                    hkv,
                    "",
                )?;
                let j0 = ir.mul(ir.b.build_int_unsigned_rem(it, nkb, "")?, blk)?;
                let cols = ir.min(blk, ir.sub(nk, j0)?)?;
                let width = if part == AttnPart::K { d } else { dv };
                let (tlo, _) = queries_of(j0)?;
                let (_, thi) = queries_of(ir.sub(ir.add(j0, cols)?, ir.int(1))?)?;
                let h0 = ir.mul(kh, group)?;
                let h1 = ir.add(h0, group)?;
                let out_row = |r: IntValue<'ctx>| row(&or, b, kh, ir.add(j0, r)?);
                let blocked = || -> IrResult<()> {
                    fill(acc, ir.mul(cols, width)?, m.c(0.0))?;
                    let kp = row(&kr, b, kh, j0)?;
                    let vp = row(&vr, b, kh, j0)?;
                    ir.for_range(fx.f, "head", h0, h1, 1, |hh| {
                        ir.step_loop(fx.f, "qblk", tlo, thi, |i0| {
                            let rows = ir.min(blk, ir.sub(thi, i0)?)?;
                            let qp = row(&qr, b, hh, i0)?;
                            let dp = row(&dr, b, hh, i0)?;
                            scores(rows, cols, qp, kp)?;
                            if part == AttnPart::K {
                                value_dots(rows, cols, dp, vp)?;
                            }
                            tile(rows, cols, &|r, cc| {
                                let vars = [b, hh, ir.add(i0, r)?, ir.add(j0, cc)?];
                                let at = ir.mad(r, blk, cc)?;
                                let p =
                                    prob(ir.load_f32(ir.at(sbuf, at)?)?.into_float_value(), vars)?;
                                if part == AttnPart::V {
                                    return ir.store(ir.at(sbuf, at)?, p);
                                }
                                let pd = ir.at(dpbuf, at)?;
                                let dpv = ir.load_f32(pd)?.into_float_value();
                                let ds = dscore(p, dpv, &vars[..3])?;
                                ir.store(pd, ds)
                            })?;
                            if part == AttnPart::V {
                                // dV_j += Σ_i p_ij dO_i: Pᵀ · dO.
                                gemm(
                                    self.sgemm_at,
                                    [
                                        I(cols),
                                        I(dv),
                                        I(rows),
                                        P(sbuf),
                                        I(blk),
                                        P(dp),
                                        I(dsv[2]),
                                        P(tbuf),
                                        I(dv),
                                    ],
                                )?;
                            } else {
                                // dK_j += Σ_i dS_ij q_i: dSᵀ · Q.
                                gemm(
                                    self.sgemm_at,
                                    [
                                        I(cols),
                                        I(d),
                                        I(rows),
                                        P(dpbuf),
                                        I(blk),
                                        P(qp),
                                        I(qs[2]),
                                        P(tbuf),
                                        I(d),
                                    ],
                                )?;
                            }
                            add_into(acc, tbuf, ir.mul(cols, width)?)?;
                            ir.add(i0, blk)
                        })
                    })?;
                    store_rows(&out_row, cols, width)
                };
                let by_rows = || -> IrResult<()> {
                    ir.for_range(fx.f, "krow", ir.int(0), cols, 1, |r| {
                        let key = ir.add(j0, r)?;
                        let kp = row(&kr, b, kh, key)?;
                        let vp = row(&vr, b, kh, key)?;
                        let (tlo, thi) = queries_of(key)?;
                        fill(acc, width, m.c(0.0))?;
                        ir.for_range(fx.f, "head", h0, h1, 1, |hh| {
                            ir.for_range(fx.f, "query", tlo, thi, 1, |tt| {
                                let qp = row(&qr, b, hh, tt)?;
                                let dp_row = row(&dr, b, hh, tt)?;
                                let vars = [b, hh, tt, key];
                                let p = prob(dot(qp, qs[3], kp, ks[3], d)?, vars)?;
                                if part == AttnPart::V {
                                    return axpy(acc, p, dp_row, dsv[3], dv);
                                }
                                let dp = dot(dp_row, dsv[3], vp, vs[3], dv)?;
                                let ds = dscore(p, dp, &vars[..3])?;
                                axpy(acc, ds, qp, qs[3], d)
                            })
                        })?;
                        let op = out_row(r)?;
                        ir.for_range(fx.f, "kout", ir.int(0), width, 1, |x| {
                            let v = ir.load_f32(ir.at(acc, x)?)?;
                            ir.store(ir.at(op, ir.mul(x, os[3])?)?, v)
                        })
                    })
                };
                ir.if_else(fx.f, "contig", contiguous, blocked, by_rows)
            }),
        }
    }
}

/// An sgemm argument: an index or a pointer.
#[derive(Clone, Copy)]
enum IntOrPtr<'ctx> {
    I(IntValue<'ctx>),
    P(PointerValue<'ctx>),
}

impl<'ctx> IntOrPtr<'ctx> {
    fn meta(self) -> inkwell::values::BasicMetadataValueEnum<'ctx> {
        match self {
            IntOrPtr::I(i) => i.into(),
            IntOrPtr::P(p) => p.into(),
        }
    }
}

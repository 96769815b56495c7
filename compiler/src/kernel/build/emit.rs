//! Kernel emission: one [`Kernel`] per stored node in graph order — maps, reductions,
//! matmuls with their epilogues, attention, scans with their bodies, the cache appends —
//! then the copies of outputs and new session states.

use super::*;
use crate::graph::AttnPart;

impl<'g, 'p> Cx<'g, 'p> {
    pub(super) fn vars(n: usize) -> Vec<Ix> {
        (0..n as u32).map(Ix::Var).collect()
    }

    pub(super) fn name(&self, id: NodeId) -> String {
        format!("{}_{}", self.node(id).op.name(), id.0)
    }

    pub(super) fn emit(&mut self) -> Result<(), String> {
        // Permute → the attention that writes it.
        let writer: HashMap<NodeId, NodeId> =
            self.attn_into.iter().map(|(&a, &p)| (p, a)).collect();
        for i in 0..self.g.nodes.len() {
            let id = NodeId(i as u32);
            let node = self.node(id);
            if !self.root[i] {
                continue;
            }
            if self.fused_into.contains_key(&id) || self.attn_into.contains_key(&id) {
                continue; // computed by its epilogue host / written by attention
            }
            if let Some(&a) = writer.get(&id) {
                let k = self.attention(a, Some(id))?;
                self.kernels.push(k);
                continue;
            }
            let body = match &node.op {
                Op::Input { .. } | Op::Param { .. } | Op::TupleGet { .. } => continue,
                Op::MatMul { .. } => Body::MatMul(Box::new(self.matmul(id, None)?)),
                Op::Attention { .. } => self.attention(id, None)?.body,
                Op::AttentionGrad { .. } => self.attention_grad(id)?.body,
                Op::Reduce { op, axis } => {
                    let x = node.inputs[0];
                    let extents = self.extents(&self.node(x).shape)?;
                    Body::Reduce {
                        out: self.out_buf(id)?,
                        expr: self.value(x, &Self::vars(extents.len()))?,
                        extents,
                        axis: *axis,
                        op: *op,
                    }
                }
                Op::Scan { .. } => Body::Scan(Box::new(self.scan(id)?)),
                Op::ScatterAdd { .. } => {
                    let (ids, upd) = (node.inputs[0], node.inputs[1]);
                    let t = Ix::Var(0);
                    let shape = &node.shape;
                    let n = self.dim(&self.node(ids).shape[0])?;
                    let rows = self.dim(&shape[0])?;
                    Body::Scatter(Box::new(crate::kernel::Scatter {
                        out: self.out_buf(id)?,
                        index: self.index(ids, &[t])?.clamp(rows.clone().sub(Ix::c(1))),
                        rows,
                        width: self.dim(&shape[1])?,
                        n,
                        expr: self.value(upd, &Self::vars(2))?,
                    }))
                }
                Op::UpdateRing => {
                    // Row t of the new rows goes to ring row (L − T + t) mod R: a per-row
                    // offset over the new rows' own linear position.
                    let (x, new, seen) = (node.inputs[0], node.inputs[1], node.inputs[2]);
                    let ring = self.dim(&self.node(x).shape[0])?;
                    let seen = self.dim(&self.node(seen).shape[1])?;
                    let (extents, row) = self.rows_of(new)?;
                    let t = Ix::Var(0);
                    let at = seen.sub(extents[0].clone()).add(t.clone()).rem(ring);
                    Body::Map {
                        out: self.out_buf(id)?,
                        offset: at.sub(t).mul(row),
                        expr: self.value(new, &Self::vars(extents.len()))?,
                        extents,
                    }
                }
                Op::UpdateTail => {
                    let (x, new) = (node.inputs[0], node.inputs[1]);
                    let rows = self.dim(&self.node(x).shape[0])?;
                    let (extents, row) = self.rows_of(new)?;
                    Body::Map {
                        out: self.out_buf(id)?,
                        offset: rows.sub(extents[0].clone()).mul(row),
                        expr: self.value(new, &Self::vars(extents.len()))?,
                        extents,
                    }
                }
                _ if self.host_of.contains_key(&id) => {
                    let m = self.host_of[&id];
                    Body::MatMul(Box::new(self.matmul(m, Some(id))?))
                }
                _ => {
                    if node.dtype == DType::I64 {
                        return Err(format!(
                            "%{i} ({}): the CPU backend does not store computed i64 values",
                            node.op.name()
                        ));
                    }
                    let extents = self.extents(&node.shape)?;
                    Body::Map {
                        out: self.out_buf(id)?,
                        offset: Ix::c(0),
                        expr: self.define(id, &Self::vars(extents.len()))?,
                        extents,
                    }
                }
            };
            self.kernels.push(Kernel {
                name: self.name(id),
                body,
            });
        }
        Ok(())
    }

    /// The extents of the rows a cache update writes ([T, ..]) and the elements per row.
    fn rows_of(&self, new: NodeId) -> Result<(Vec<Ix>, Ix), String> {
        let shape = &self.node(new).shape;
        let extents = self.extents(shape)?;
        let row = extents[1..].iter().cloned().fold(Ix::c(1), Ix::mul);
        Ok((extents, row))
    }

    pub(super) fn out_buf(&self, id: NodeId) -> Result<BufId, String> {
        self.buf[id.0 as usize].ok_or_else(|| format!("internal: %{} has no buffer", id.0))
    }

    pub(super) fn matmul(&self, m: NodeId, host: Option<NodeId>) -> Result<MatMul, String> {
        let node = self.node(m);
        let Op::MatMul { transpose_b } = node.op else {
            return Err("internal: not a matmul".into());
        };
        let (a, b) = (node.inputs[0], node.inputs[1]);
        let va = self
            .view_of(a)
            .ok_or("internal: matmul operand A is not a view")?;
        let vb = self
            .view_of(b)
            .ok_or("internal: matmul operand B is not a view")?;
        let (lda, ta) = self.panel_a(&va).ok_or("internal: A panel")?;
        let (ldb, tb) = self.panel_b(&vb, transpose_b).ok_or("internal: B panel")?;
        let out_shape = &node.shape;
        let r = out_shape.len();
        let ext = self.extents(out_shape)?;
        let (mi, ni) = (ext[r - 2].clone(), ext[r - 1].clone());
        let a_shape = &self.node(a).shape;
        let b_shape = &self.node(b).shape;
        let k = self.dim(&a_shape[a_shape.len() - 1])?;
        let batch_ext = &ext[..r - 2];
        // Fold A's batch axes into its rows when B has none and A's rows are evenly spaced.
        let ra = a_shape.len();
        let fold = b_shape.len() == 2 && {
            let a_ext = self.extents(a_shape)?;
            (0..ra - 2)
                .all(|j| va.strides[j] == va.strides[j + 1].clone().mul(a_ext[j + 1].clone()))
        };
        let out_index = |vars: &[Ix]| -> Vec<Ix> {
            if fold {
                let mut v = Ix::delinear(vars[1].clone(), &ext[..r - 1]);
                v.push(vars[2].clone());
                v
            } else {
                let mut v = Ix::delinear(vars[0].clone(), batch_ext);
                v.push(vars[1].clone());
                v.push(vars[2].clone());
                v
            }
        };
        let (batch, rows) = if fold {
            (
                Ix::c(1),
                batch_ext
                    .iter()
                    .fold(mi.clone(), |acc, e| acc.mul(e.clone())),
            )
        } else {
            (
                batch_ext.iter().fold(Ix::c(1), |acc, e| acc.mul(e.clone())),
                mi,
            )
        };
        let batch_offset = |v: &View, shape: &[Dim]| -> Result<Ix, String> {
            if fold {
                return Ok(v.offset.clone());
            }
            let bidx = Ix::delinear(Ix::Var(0), batch_ext);
            let lead = (r - 2) - (shape.len() - 2);
            let mut off = v.offset.clone();
            for j in 0..shape.len() - 2 {
                if shape[j] != Dim::c(1) {
                    off = off.add(bidx[j + lead].clone().mul(v.strides[j].clone()));
                }
            }
            Ok(off)
        };
        let whole_rows = self.whole_rows.contains(&m);
        let epilogue = match host {
            Some(h) if whole_rows => {
                // The host keeps the product's row axes; the rest of its index is the
                // column split by the host's trailing extents.
                let mut at = out_index(&Self::vars(3));
                at.pop();
                let tail = self.extents(&self.node(h).shape[r - 1..])?;
                at.extend(Ix::delinear(Ix::Var(2), &tail));
                Some(self.define(h, &at)?)
            }
            Some(h) => {
                // out[b, i, j] at b·m·n + i·n + j, as the kernel stores it.
                let at = Ix::Var(0)
                    .mul(rows.clone().mul(ni.clone()))
                    .add(Ix::Var(1).mul(ni.clone()))
                    .add(Ix::Var(2));
                *self.acc_at.borrow_mut() = Some((m, at));
                let e = self.define(h, &out_index(&Self::vars(3)));
                *self.acc_at.borrow_mut() = None;
                Some(e?)
            }
            None => None,
        };
        Ok(MatMul {
            out: self.out_buf(host.unwrap_or(m))?,
            batch,
            m: rows,
            n: ni,
            k,
            a: Panel {
                buf: va.buf,
                offset: batch_offset(&va, a_shape)?,
                ld: lda,
            },
            b: Panel {
                buf: vb.buf,
                offset: batch_offset(&vb, b_shape)?,
                ld: ldb,
            },
            transpose_a: ta,
            transpose_b: tb,
            epilogue,
            whole_rows,
        })
    }

    pub(super) fn strided(&self, id: NodeId) -> Result<Strided, String> {
        let v = self
            .view_of(id)
            .ok_or_else(|| format!("internal: attention operand %{} is not a view", id.0))?;
        let s = v.strides;
        if s.len() != 4 {
            return Err("attention operands must have rank 4".into());
        }
        Ok(Strided {
            buf: v.buf,
            offset: v.offset,
            strides: [s[0].clone(), s[1].clone(), s[2].clone(), s[3].clone()],
        })
    }

    /// An attention node's additive bias (broadcast to [b, h, t, s]) and key mask ([b, s])
    /// as expressions of (batch, head, query, key), read from `ins[at..]`.
    fn bias_and_key_mask(
        &self,
        ins: &[NodeId],
        at: usize,
        has_bias: bool,
        has_key_mask: bool,
        full: &[Dim],
    ) -> Result<(Option<Expr>, Option<Expr>), String> {
        let vars = Self::vars(4);
        let bias = if has_bias {
            let x = ins[at];
            Some(self.value(x, &broadcast_index(&vars, full, &self.node(x).shape))?)
        } else {
            None
        };
        let key_mask = if has_key_mask {
            let x = ins[at + usize::from(has_bias)];
            Some(self.value(x, &[vars[0].clone(), vars[3].clone()])?)
        } else {
            None
        };
        Ok((bias, key_mask))
    }

    pub(super) fn attention(&self, id: NodeId, into: Option<NodeId>) -> Result<Kernel, String> {
        let node = self.node(id);
        let Op::Attention {
            mask,
            scale,
            has_bias,
            has_key_mask,
            ref ring,
        } = node.op
        else {
            return Err("internal: not attention".into());
        };
        let ins = &node.inputs;
        let qs = self.extents(&self.node(ins[0]).shape)?;
        let ks = self.extents(&self.node(ins[1]).shape)?;
        let vs = self.extents(&self.node(ins[2]).shape)?;
        // The keys: k's rows, or for a ring the key mask's length (rows hold them mod R).
        let keys: Dim = match ring {
            Some(_) => self.node(ins[3 + usize::from(has_bias)]).shape[1].clone(),
            None => self.node(ins[1]).shape[2].clone(),
        };
        let sizes = [
            qs[0].clone(),
            qs[1].clone(),
            qs[2].clone(),
            self.dim(&keys)?,
            qs[3].clone(),
            vs[3].clone(),
            ks[1].clone(),
        ];
        let full: Vec<Dim> = vec![
            node.shape[0].clone(),
            node.shape[1].clone(),
            node.shape[2].clone(),
            keys,
        ];
        let (bias, key_mask) = self.bias_and_key_mask(ins, 3, has_bias, has_key_mask, &full)?;
        let out = match into {
            Some(p) => {
                // The permute's buffer is [b, t, h, d]: write (b, h, t, d) there.
                let s = self.contiguous(&self.node(p).shape)?;
                Strided {
                    buf: self.out_buf(p)?,
                    offset: Ix::c(0),
                    strides: [s[0].clone(), s[2].clone(), s[1].clone(), s[3].clone()],
                }
            }
            None => {
                let s = self.contiguous(&node.shape)?;
                Strided {
                    buf: self.out_buf(id)?,
                    offset: Ix::c(0),
                    strides: [s[0].clone(), s[1].clone(), s[2].clone(), s[3].clone()],
                }
            }
        };
        Ok(Kernel {
            name: self.name(id),
            body: Body::Attention(Box::new(Attention {
                out,
                q: self.strided(ins[0])?,
                k: self.strided(ins[1])?,
                v: self.strided(ins[2])?,
                sizes,
                mask,
                scale,
                bias,
                key_mask,
                ring: ring.as_ref().map(|r| self.dim(r)).transpose()?,
                part: None,
                dout: None,
                lse: None,
                delta: None,
            })),
        })
    }

    /// A part of attention's flash-style backward (`attention_grad`).
    pub(super) fn attention_grad(&self, id: NodeId) -> Result<Kernel, String> {
        let node = self.node(id);
        let Op::AttentionGrad {
            mask,
            scale,
            has_bias,
            has_key_mask,
            part,
        } = node.op
        else {
            return Err("internal: not attention_grad".into());
        };
        let ins = &node.inputs;
        let lead = part.leading();
        let full_part = part != AttnPart::Lse;
        let qs = self.extents(&self.node(ins[0]).shape)?;
        let ks = self.extents(&self.node(ins[1]).shape)?;
        let dv = if full_part {
            self.extents(&self.node(ins[2]).shape)?[3].clone()
        } else {
            qs[3].clone()
        };
        let keys = self.node(ins[1]).shape[2].clone();
        let sizes = [
            qs[0].clone(),
            qs[1].clone(),
            qs[2].clone(),
            self.dim(&keys)?,
            qs[3].clone(),
            dv,
            ks[1].clone(),
        ];
        let q_shape = &self.node(ins[0]).shape;
        let full: Vec<Dim> = vec![
            q_shape[0].clone(),
            q_shape[1].clone(),
            q_shape[2].clone(),
            keys,
        ];
        let (bias, key_mask) = self.bias_and_key_mask(ins, lead, has_bias, has_key_mask, &full)?;
        let vars = Self::vars(3);
        let row = |x: NodeId| self.value(x, &vars);
        let s = self.contiguous(&node.shape)?;
        let strides = if part == AttnPart::Lse {
            [s[0].clone(), s[1].clone(), s[2].clone(), Ix::c(0)]
        } else {
            [s[0].clone(), s[1].clone(), s[2].clone(), s[3].clone()]
        };
        let out = Strided {
            buf: self.out_buf(id)?,
            offset: Ix::c(0),
            strides,
        };
        Ok(Kernel {
            name: self.name(id),
            body: Body::Attention(Box::new(Attention {
                out,
                q: self.strided(ins[0])?,
                k: self.strided(ins[1])?,
                // `Lse` reads no values: k stands in.
                v: self.strided(ins[if full_part { 2 } else { 1 }])?,
                sizes,
                mask,
                scale,
                bias,
                key_mask,
                ring: None,
                part: Some(part),
                dout: full_part.then(|| self.strided(ins[3])).transpose()?,
                lse: full_part.then(|| row(ins[4])).transpose()?,
                delta: full_part.then(|| row(ins[5])).transpose()?,
            })),
        })
    }

    pub(super) fn plain_buf(&self, id: NodeId) -> Result<BufId, String> {
        let v = self
            .view_of(id)
            .ok_or_else(|| format!("internal: scan operand %{} is not stored", id.0))?;
        if !self.is_plain(&v, id) {
            return Err(format!(
                "internal: scan operand %{} is not contiguous",
                id.0
            ));
        }
        Ok(v.buf)
    }

    pub(super) fn scan(&mut self, id: NodeId) -> Result<Scan, String> {
        let node = self.node(id);
        let Op::Scan {
            body,
            states,
            seqs,
            reverse,
        } = &node.op
        else {
            return Err("internal: not a scan".into());
        };
        let (states, seqs) = (*states, *seqs);
        let ins = node.inputs.clone();
        if seqs == 0 {
            return Err("a scan without sequence inputs has no length".into());
        }
        let outer: Vec<BufId> = ins
            .iter()
            .map(|&x| self.plain_buf(x))
            .collect::<Result<_, _>>()?;
        // Buffers of the body's inputs: states and steps are the scan's own, constants
        // are the outer buffers themselves.
        let mut body_in = Vec::new();
        for (k, &bid) in body.inputs.iter().enumerate() {
            let bnode = body.node(bid);
            let b = if k < states + seqs {
                self.p.buffer(BufKind::Temp, false, dim_elems(&bnode.shape))
            } else {
                outer[k]
            };
            body_in.push(b);
        }
        let (body_kernels, body_out) = {
            let alias = in_place_states(body, states, &body_in);
            let mut sub = Cx::new(body, self.p, Some(&body_in), &alias)?;
            sub.emit()?;
            let outs: Vec<BufId> = body
                .outputs
                .iter()
                .map(|(_, o)| sub.out_buf(*o))
                .collect::<Result<_, _>>()?;
            (std::mem::take(&mut sub.kernels), outs)
        };
        // The scan's results: one buffer per output, those of its `get`s.
        let n_out = body.outputs.len();
        let mut results: Vec<Option<BufId>> = vec![None; n_out];
        for (i, n) in self.g.nodes.iter().enumerate() {
            if let Op::TupleGet { index } = n.op {
                if n.inputs[0] == id && index < n_out {
                    results[index] = self.buf[i];
                }
            }
        }
        let mut result_bufs = Vec::new();
        for (j, r) in results.into_iter().enumerate() {
            let b = match r {
                Some(b) => b,
                None => {
                    let shape = if j < states {
                        self.node(ins[j]).shape.clone()
                    } else {
                        let step = &body.node(body.outputs[j].1).shape;
                        let seq = &self.node(ins[states]).shape;
                        let mut s = vec![step[0].clone(), seq[1].clone()];
                        s.extend_from_slice(&step[1..]);
                        s
                    };
                    self.p.buffer(BufKind::Temp, false, dim_elems(&shape))
                }
            };
            result_bufs.push(b);
        }
        let elems = |cx: &Self, shape: &[Dim]| -> Result<Ix, String> { cx.dim(&dim_elems(shape)) };
        let step_copy = |cx: &Self, seq: BufId, step: BufId, step_shape: &[Dim]| {
            Ok::<StepCopy, String>(StepCopy {
                seq,
                step,
                rows: cx.dim(&step_shape[0])?,
                len: cx.dim(&dim_elems(&step_shape[1..]))?,
            })
        };
        let mut scan = Scan {
            steps: self.dim(&self.node(ins[states]).shape[1])?,
            reverse: *reverse,
            init: Vec::new(),
            seq_in: Vec::new(),
            seq_save: Vec::new(),
            body: body_kernels,
            update: Vec::new(),
            seq_out: Vec::new(),
            finish: Vec::new(),
            rows: None,
        };
        for j in 0..states {
            let e = elems(self, &self.node(ins[j]).shape)?;
            scan.init.push((outer[j], body_in[j], e.clone()));
            if body_out[j] != body_in[j] {
                scan.update.push((body_out[j], body_in[j], e.clone()));
            }
            scan.finish.push((body_in[j], result_bufs[j], e));
        }
        for j in states..states + seqs {
            let step_shape = &body.node(body.inputs[j]).shape;
            scan.seq_in
                .push(step_copy(self, outer[j], body_in[j], step_shape)?);
        }
        for j in states..n_out {
            let step_shape = &body.node(body.outputs[j].1).shape;
            if step_shape.is_empty() {
                return Err("a scan's step output must have a batch axis".into());
            }
            let copy = step_copy(self, result_bufs[j], body_out[j], step_shape)?;
            // A state as it enters the step (its buffer is overwritten by the step's
            // in-place updates and by the copies after it): saved before the body runs.
            let entering = body.inputs[..states].contains(&body.outputs[j].1);
            if entering {
                scan.seq_save.push(copy);
            } else {
                scan.seq_out.push(copy);
            }
        }
        scan.rows =
            super::rows::independent_rows(self.g, id).and_then(|sym| self.scan_rows(&scan, &sym));
        Ok(scan)
    }

    /// The buffers a scan whose rows (symbol `sym`) run apart advances per part: every
    /// buffer it touches whose element count mentions `sym` (once: `None` otherwise).
    fn scan_rows(&self, scan: &Scan, sym: &str) -> Option<super::super::ScanRows> {
        let Ok(Ix::Sym(index)) = self.dim(&Dim::sym(sym)) else {
            return None;
        };
        let mut touched: Vec<BufId> = Vec::new();
        for (a, b, _) in scan.init.iter().chain(&scan.update).chain(&scan.finish) {
            touched.extend([*a, *b]);
        }
        for c in scan
            .seq_in
            .iter()
            .chain(&scan.seq_save)
            .chain(&scan.seq_out)
        {
            touched.extend([c.seq, c.step]);
        }
        for k in &scan.body {
            touched.extend(k.buffers());
        }
        touched.sort_unstable();
        touched.dedup();
        let mut bufs = Vec::new();
        for b in touched {
            let buf = &self.p.prog.buffers[b];
            let e = &buf.elems;
            match e.syms.iter().filter(|s| *s == sym).count() {
                0 => continue,
                1 => {}
                _ => return None,
            }
            let mut syms = e.syms.clone();
            let at = syms.iter().position(|s| s == sym)?;
            syms.remove(at);
            let row_bytes = Dim {
                coef: e.coef * if buf.i64 { 8 } else { 4 },
                div: e.div,
                syms,
            };
            bufs.push((b, self.dim(&row_bytes).ok()?));
        }
        Some(super::super::ScanRows { sym: index, bufs })
    }

    /// Outputs that are not already written into their own output buffer get a copy.
    pub(super) fn finish_outputs(&mut self) -> Result<(), String> {
        for (name, id) in self.g.outputs.clone() {
            let node = self.node(id);
            let b = self.out_buf(id)?;
            if let Some(state) = name.strip_prefix(STATE) {
                // A new state: written over the session's buffer of the same name, after
                // every kernel that reads the old one.
                let Some(&(_, sb, _)) = self.p.prog.states.iter().find(|(n, _, _)| n == state)
                else {
                    return Err(format!("output `{name}` has no `{name}` input"));
                };
                if sb != b {
                    let extents = self.extents(&node.shape)?;
                    let mut expr = self.value(id, &Self::vars(extents.len()))?;
                    let here = Ix::here(&extents);
                    if !reads_only_at(&expr, sb, &here) {
                        // The new value reads the old one elsewhere (a convolution window
                        // moving by one): computed into a temp first, then copied over.
                        let tmp = self.p.buffer(BufKind::Temp, false, dim_elems(&node.shape));
                        self.kernels.push(Kernel {
                            name: format!("next_{state}"),
                            body: Body::Map {
                                out: tmp,
                                offset: Ix::c(0),
                                extents: extents.clone(),
                                expr,
                            },
                        });
                        expr = Expr::Load(tmp, Box::new(here));
                    }
                    self.kernels.push(Kernel {
                        name: format!("state_{state}"),
                        body: Body::Map {
                            out: sb,
                            offset: Ix::c(0),
                            extents,
                            expr,
                        },
                    });
                }
                continue;
            }
            let own = matches!(&self.p.prog.buffers[b].kind, BufKind::Output(n) if *n == name);
            let out = if own {
                b
            } else {
                let out =
                    self.p
                        .buffer(BufKind::Output(name.clone()), false, dim_elems(&node.shape));
                let extents = self.extents(&node.shape)?;
                let expr = self.value(id, &Self::vars(extents.len()))?;
                self.kernels.push(Kernel {
                    name: format!("output_{name}"),
                    body: Body::Map {
                        out,
                        offset: Ix::c(0),
                        extents,
                        expr,
                    },
                });
                out
            };
            self.p.prog.outputs.push((name, out, node.shape.clone()));
        }
        Ok(())
    }
}

/// Whether every read of `buf` in `e` is at index `at` (the element being written): then a
/// kernel may store the new value over `buf` in place (an optimizer's update of a
/// parameter and its moments). Reads through index loads count as elsewhere.
pub(super) fn reads_only_at(e: &Expr, buf: BufId, at: &Ix) -> bool {
    let ix_free = |i: &Ix| {
        let mut hit = false;
        i.visit_bufs(&mut |b| hit |= b == buf);
        !hit
    };
    match e {
        Expr::Const(_) => true,
        Expr::Load(b, i) => ix_free(i) && (*b != buf || **i == *at),
        Expr::FromIx(i) => ix_free(i),
        Expr::Unary(_, a) => reads_only_at(a, buf, at),
        Expr::Binary(_, a, b) => reads_only_at(a, buf, at) && reads_only_at(b, buf, at),
        Expr::Select(c, a, b) => {
            reads_only_at(c, buf, at) && reads_only_at(a, buf, at) && reads_only_at(b, buf, at)
        }
        Expr::IfLt(x, y, a, b) => {
            ix_free(x) && ix_free(y) && reads_only_at(a, buf, at) && reads_only_at(b, buf, at)
        }
    }
}

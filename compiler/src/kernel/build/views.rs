//! Views and expressions: the value of a node as a strided view of a stored buffer, or as
//! an [`Expr`] / [`Ix`] tree computed where it is read (movement ops become index
//! arithmetic, elementwise chains one expression).

use super::*;

impl<'g, 'p> Cx<'g, 'p> {
    pub(super) fn contiguous(&self, shape: &[Dim]) -> Result<Vec<Ix>, String> {
        Ok(Ix::strides(&self.extents(shape)?))
    }

    /// The value of `id` as a strided view of a stored buffer, when it is one.
    pub(super) fn view_of(&self, id: NodeId) -> Option<View> {
        let node = self.node(id);
        if self.root[id.0 as usize] {
            // Before buffers are assigned any placeholder answers questions of shape.
            let buf = self.buf[id.0 as usize].unwrap_or(usize::MAX);
            return Some(View {
                buf,
                offset: Ix::c(0),
                strides: self.contiguous(&node.shape).ok()?,
            });
        }
        let input = |k: usize| node.inputs[k];
        match &node.op {
            Op::Reshape => {
                let v = self.view_of(input(0))?;
                let in_shape = &self.node(input(0)).shape;
                if v.strides != self.contiguous(in_shape).ok()? {
                    return None;
                }
                Some(View {
                    buf: v.buf,
                    offset: v.offset,
                    strides: self.contiguous(&node.shape).ok()?,
                })
            }
            Op::Permute { perm } => {
                let v = self.view_of(input(0))?;
                Some(View {
                    strides: perm.iter().map(|&p| v.strides[p].clone()).collect(),
                    ..v
                })
            }
            Op::Slice { axis, start, .. } => {
                let v = self.view_of(input(0))?;
                let offset = v
                    .offset
                    .clone()
                    .add(Ix::c(*start as i64).mul(v.strides[*axis].clone()));
                Some(View { offset, ..v })
            }
            Op::Broadcast => {
                let v = self.view_of(input(0))?;
                let in_shape = &self.node(input(0)).shape;
                let r = node.shape.len();
                let lead = r - in_shape.len();
                let strides = (0..r)
                    .map(|k| {
                        if k < lead
                            || (in_shape[k - lead] == Dim::c(1) && node.shape[k] != Dim::c(1))
                        {
                            Ix::c(0)
                        } else {
                            v.strides[k - lead].clone()
                        }
                    })
                    .collect();
                Some(View { strides, ..v })
            }
            Op::Cast if self.node(input(0)).dtype == node.dtype => self.view_of(input(0)),
            _ => None,
        }
    }

    pub(super) fn is_plain(&self, v: &View, id: NodeId) -> bool {
        v.offset == Ix::c(0)
            && self
                .contiguous(&self.node(id).shape)
                .is_ok_and(|s| s == v.strides)
    }

    /// A's panel: unit column stride. Returns the row stride.
    /// A's panel: (ld, transposed) for an [m, k] operand stored row-major, or — rank 2
    /// only — stored as [k, m] (a weight gradient's activations, read across tokens).
    pub(super) fn panel_a(&self, v: &View) -> Option<(Ix, bool)> {
        let r = v.strides.len();
        if r >= 2 && v.strides[r - 1] == Ix::c(1) {
            Some((v.strides[r - 2].clone(), false))
        } else if r == 2 && v.strides[0] == Ix::c(1) {
            Some((v.strides[1].clone(), true))
        } else {
            None
        }
    }

    /// B's panel: (ld, transposed) for a [k, n] operand (or [n, k] when `transpose_b`).
    pub(super) fn panel_b(&self, v: &View, transpose_b: bool) -> Option<(Ix, bool)> {
        let r = v.strides.len();
        if r < 2 {
            return None;
        }
        let (s_row, s_col) = (&v.strides[r - 2], &v.strides[r - 1]);
        // Stored row-major as [rows, cols] when s_col == 1.
        if *s_col == Ix::c(1) {
            Some((s_row.clone(), transpose_b))
        } else if *s_row == Ix::c(1) {
            Some((s_col.clone(), !transpose_b))
        } else {
            None
        }
    }

    /// The buffer and element index of `idx` in a view.
    pub(super) fn load_view(&self, v: &View, idx: &[Ix]) -> Result<(BufId, Ix), String> {
        if v.buf == usize::MAX {
            return Err("internal: view before buffer assignment".into());
        }
        let mut at = v.offset.clone();
        for (i, s) in idx.iter().zip(&v.strides) {
            at = at.add(i.clone().mul(s.clone()));
        }
        Ok((v.buf, at))
    }

    /// The f32 value of node `id` at multi-index `idx`.
    pub(super) fn value(&self, id: NodeId, idx: &[Ix]) -> Result<Expr, String> {
        let node = self.node(id);
        if node.dtype == DType::I64 {
            return Ok(Expr::FromIx(Box::new(self.index(id, idx)?)));
        }
        if let Some((acc, at)) = &*self.acc_at.borrow() {
            if *acc == id {
                return Ok(Expr::Load(self.out_buf(id)?, Box::new(at.clone())));
            }
        }
        if let Some(v) = self.view_of(id) {
            let (buf, at) = self.load_view(&v, idx)?;
            return Ok(Expr::Load(buf, Box::new(at)));
        }
        self.define(id, idx)
    }

    /// The i64 value of node `id` at `idx`.
    pub(super) fn index(&self, id: NodeId, idx: &[Ix]) -> Result<Ix, String> {
        let node = self.node(id);
        if node.dtype != DType::I64 {
            return Ok(Ix::FromF32(Box::new(self.value(id, idx)?)));
        }
        if let Some(v) = self.view_of(id) {
            let (buf, at) = self.load_view(&v, idx)?;
            return Ok(Ix::Load(buf, Box::new(at)));
        }
        let x = node.inputs.first().copied();
        match &node.op {
            Op::Cast => Ok(Ix::FromF32(Box::new(
                self.value(x.ok_or("cast without input")?, idx)?,
            ))),
            Op::Reshape | Op::Permute { .. } | Op::Broadcast | Op::Slice { .. } => {
                let x = x.ok_or("movement op without input")?;
                self.index(x, &self.input_index(id, 0, idx)?)
            }
            other => Err(format!(
                "the CPU backend cannot compute `{}` on i64 values",
                other.name()
            )),
        }
    }

    /// The index into input `k` of node `id` that element `idx` of `id` reads, for ops
    /// that read one element of that input.
    pub(super) fn input_index(&self, id: NodeId, k: usize, idx: &[Ix]) -> Result<Vec<Ix>, String> {
        let node = self.node(id);
        let x = node.inputs[k];
        let in_shape = &self.node(x).shape;
        Ok(match &node.op {
            Op::Reshape => self.reshape_index(idx, &node.shape, in_shape)?,
            Op::Permute { perm } => {
                let mut out = vec![Ix::c(0); perm.len()];
                for (i, &p) in perm.iter().enumerate() {
                    out[p] = idx[i].clone();
                }
                out
            }
            Op::Slice { axis, start, .. } => {
                let mut out = idx.to_vec();
                out[*axis] = out[*axis].clone().add(Ix::c(*start as i64));
                out
            }
            _ => broadcast_index(idx, &node.shape, in_shape),
        })
    }

    pub(super) fn reshape_index(
        &self,
        idx: &[Ix],
        out: &[Dim],
        inp: &[Dim],
    ) -> Result<Vec<Ix>, String> {
        let mut pre = 0;
        while pre < out.len() && pre < inp.len() && out[pre] == inp[pre] {
            pre += 1;
        }
        let mut suf = 0;
        while suf < out.len() - pre
            && suf < inp.len() - pre
            && out[out.len() - 1 - suf] == inp[inp.len() - 1 - suf]
        {
            suf += 1;
        }
        let mid_out = &out[pre..out.len() - suf];
        let mid_in = &inp[pre..inp.len() - suf];
        let lin = Ix::linear(&idx[pre..out.len() - suf], &self.extents(mid_out)?);
        let mid = Ix::delinear(lin, &self.extents(mid_in)?);
        let mut res = idx[..pre].to_vec();
        res.extend(mid);
        res.extend_from_slice(&idx[out.len() - suf..]);
        Ok(res)
    }

    /// The expression that computes node `id` (not a stored root) at `idx`.
    pub(super) fn define(&self, id: NodeId, idx: &[Ix]) -> Result<Expr, String> {
        let node = self.node(id);
        let ins = &node.inputs;
        let shape = &node.shape;
        let arg = |k: usize| -> Result<Expr, String> {
            self.value(
                ins[k],
                &broadcast_index(idx, shape, &self.node(ins[k]).shape),
            )
        };
        Ok(match &node.op {
            Op::Const { value } => Expr::Const(*value),
            Op::Iota { axis } => Expr::FromIx(Box::new(idx[*axis].clone())),
            Op::Unary(u) => Expr::Unary(*u, Box::new(arg(0)?)),
            Op::Binary(b) => Expr::Binary(*b, Box::new(arg(0)?), Box::new(arg(1)?)),
            Op::Select => Expr::Select(Box::new(arg(0)?), Box::new(arg(1)?), Box::new(arg(2)?)),
            Op::Cast => self.value(ins[0], idx)?,
            Op::Reshape | Op::Permute { .. } | Op::Broadcast | Op::Slice { .. } => {
                self.value(ins[0], &self.input_index(id, 0, idx)?)?
            }
            Op::Shift { axis, by } => {
                let n = self.dim(&shape[*axis])?;
                let j = idx[*axis].clone().sub(Ix::c(*by));
                let mut at = idx.to_vec();
                at[*axis] = j.clone().clamp(n.clone().sub(Ix::c(1)));
                let v = self.value(ins[0], &at)?;
                Expr::IfLt(
                    Box::new(j.clone()),
                    Box::new(Ix::c(0)),
                    Box::new(Expr::Const(0.0)),
                    Box::new(Expr::IfLt(
                        Box::new(j),
                        Box::new(n),
                        Box::new(v),
                        Box::new(Expr::Const(0.0)),
                    )),
                )
            }
            Op::Concat { axis } => {
                let mut starts = Vec::new();
                let mut off = Ix::c(0);
                for &x in ins {
                    let len = self.dim(&self.node(x).shape[*axis])?;
                    starts.push((off.clone(), len.clone()));
                    off = off.add(len);
                }
                let mut e: Option<Expr> = None;
                for (k, &x) in ins.iter().enumerate().rev() {
                    let (start, len) = &starts[k];
                    let mut at = idx.to_vec();
                    at[*axis] = idx[*axis]
                        .clone()
                        .sub(start.clone())
                        .clamp(len.clone().sub(Ix::c(1)));
                    let v = self.value(x, &at)?;
                    e = Some(match e {
                        None => v,
                        Some(rest) => Expr::IfLt(
                            Box::new(idx[*axis].clone()),
                            Box::new(start.clone().add(len.clone())),
                            Box::new(v),
                            Box::new(rest),
                        ),
                    });
                }
                e.ok_or("concat of nothing")?
            }
            Op::Gather => {
                let (table, ids) = (ins[0], ins[1]);
                let r = self.node(ids).shape.len();
                let rows = self.dim(&self.node(table).shape[0])?;
                let row = self.index(ids, &idx[..r])?.clamp(rows.sub(Ix::c(1)));
                let mut at = vec![row];
                at.extend_from_slice(&idx[r..]);
                self.value(table, &at)?
            }
            other => {
                return Err(format!(
                    "internal: `{}` (%{}) is computed by its own kernel",
                    other.name(),
                    id.0
                ))
            }
        })
    }
}

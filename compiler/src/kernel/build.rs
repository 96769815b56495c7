//! Graph IR → Kernel IR: fusion decisions and kernel construction.
//!
//! Fusion works by choosing **roots**, the nodes whose values are stored in a buffer:
//! graph inputs, parameters and outputs; every matmul, attention, scan and reduction; the
//! operands of those when they are not a strided view of another root; and elementwise
//! values that several consumers read and that are costly to recompute. Every other node
//! is recomputed, as an [`Expr`], inside each kernel that reads it — elementwise chains
//! become one loop, movement ops become index arithmetic, a norm's normalisation becomes
//! the epilogue of its reductions. Two fusions keep structured kernels whole: the chain of
//! single-use elementwise ops after a matmul (bias, activation, residual add) becomes the
//! matmul's epilogue, and attention writes its output directly in the
//! `[batch, seq, heads, dim]` layout its consumer reads when the next op is that permute.

use super::{
    Attention, Body, BufId, BufKind, Buffer, Expr, Ix, Kernel, MatMul, Panel, Program, Scan,
    StepCopy, Strided,
};
use crate::graph::{DType, Dim, Graph, Node, NodeId, Op};
use std::collections::HashMap;

/// Graph inputs and outputs named `state:{name}` are session state (`BufKind::State`).
pub const STATE: &str = "state:";

/// Elementwise values read by more than one consumer are stored once their expression
/// has more than this many operations.
const SHARED_COST: usize = 4;
/// Any expression larger than this is stored.
const MAX_COST: usize = 40;

/// Builds the Kernel IR of a graph.
pub fn build(g: &Graph) -> Result<Program, String> {
    let mut syms: Vec<String> = Vec::new();
    for &id in &g.inputs {
        for d in &g.node(id).shape {
            for s in &d.syms {
                if !syms.contains(s) {
                    syms.push(s.clone());
                }
            }
        }
    }
    let order = |s: &String| match s.as_str() {
        "batch" => 0,
        "seq" => 1,
        "target_seq" => 2,
        _ => 3,
    };
    syms.sort_by(|a, b| order(a).cmp(&order(b)).then(a.cmp(b)));
    let mut p = Builder {
        prog: Program {
            syms,
            ..Program::default()
        },
        params: HashMap::new(),
    };
    let kernels = {
        let mut cx = Cx::new(g, &mut p, None, &HashMap::new())?;
        cx.emit()?;
        cx.finish_outputs()?;
        std::mem::take(&mut cx.kernels)
    };
    p.prog.kernels = kernels;
    Ok(p.prog)
}

/// Program-wide state: buffers and parameters (shared by scan bodies).
struct Builder {
    prog: Program,
    params: HashMap<String, BufId>,
}

impl Builder {
    fn buffer(&mut self, kind: BufKind, i64: bool, elems: Dim) -> BufId {
        let id = self.prog.buffers.len();
        self.prog.buffers.push(Buffer {
            id,
            kind,
            i64,
            elems,
        });
        id
    }
}

/// A strided view of a buffer: element `idx` at `offset + Σ idx·strides`.
#[derive(Clone, Debug, PartialEq)]
struct View {
    buf: BufId,
    offset: Ix,
    strides: Vec<Ix>,
}

/// One graph being compiled (the model, or a scan body).
struct Cx<'g, 'p> {
    g: &'g Graph,
    p: &'p mut Builder,
    consumers: Vec<usize>,
    /// The distinct nodes that read each node.
    users: Vec<Vec<NodeId>>,
    root: Vec<bool>,
    buf: Vec<Option<BufId>>,
    /// Matmul → the elementwise node whose kernel computes it (as its epilogue).
    fused_into: HashMap<NodeId, NodeId>,
    /// Epilogue host → its matmul.
    host_of: HashMap<NodeId, NodeId>,
    /// Attention → the permute its kernel writes.
    attn_into: HashMap<NodeId, NodeId>,
    /// Matmuls whose epilogue reads elsewhere in the row (computed whole rows at a time).
    whole_rows: std::collections::HashSet<NodeId>,
    kernels: Vec<Kernel>,
    is_body: bool,
    /// While building a matmul epilogue: the matmul and the index of its result in the
    /// output buffer, spelled exactly as the kernel's store is, so LLVM sees that the
    /// epilogue reads and writes the same element.
    acc_at: std::cell::RefCell<Option<(NodeId, Ix)>>,
}

fn dim_elems(shape: &[Dim]) -> Dim {
    Dim::product(shape)
}

impl<'g, 'p> Cx<'g, 'p> {
    /// Decides roots and buffers. `inputs` gives a body's input buffers.
    /// `alias` gives nodes that must live in a given buffer (a scan state updated in
    /// place).
    fn new(
        g: &'g Graph,
        p: &'p mut Builder,
        inputs: Option<&[BufId]>,
        alias: &HashMap<NodeId, BufId>,
    ) -> Result<Self, String> {
        let n = g.nodes.len();
        let mut consumers = vec![0usize; n];
        for node in &g.nodes {
            for i in &node.inputs {
                consumers[i.0 as usize] += 1;
            }
        }
        for (_, o) in &g.outputs {
            consumers[o.0 as usize] += 1;
        }
        let mut cx = Cx {
            g,
            p,
            consumers,
            users: users(g),
            root: vec![false; n],
            buf: vec![None; n],
            fused_into: HashMap::new(),
            host_of: HashMap::new(),
            attn_into: HashMap::new(),
            whole_rows: Default::default(),
            kernels: Vec::new(),
            is_body: inputs.is_some(),
            acc_at: std::cell::RefCell::new(None),
        };
        cx.decide_roots()?;
        cx.decide_fusions();
        for (&id, &b) in alias {
            cx.buf[id.0 as usize] = Some(b);
        }
        cx.assign_buffers(inputs)?;
        Ok(cx)
    }

    fn node(&self, id: NodeId) -> &'g Node {
        self.g.node(id)
    }

    fn is_output(&self, id: NodeId) -> bool {
        self.g.outputs.iter().any(|(_, o)| *o == id)
    }

    fn dim(&self, d: &Dim) -> Result<Ix, String> {
        Ix::of_dim(d, &self.p.prog.syms)
    }

    fn extents(&self, shape: &[Dim]) -> Result<Vec<Ix>, String> {
        shape.iter().map(|d| self.dim(d)).collect()
    }

    fn decide_roots(&mut self) -> Result<(), String> {
        let mut cost = vec![0usize; self.g.nodes.len()];
        for (i, node) in self.g.nodes.iter().enumerate() {
            let id = NodeId(i as u32);
            let input_cost: usize = node.inputs.iter().map(|x| cost[x.0 as usize]).sum();
            let (always, c) = match &node.op {
                Op::Input { .. } | Op::Param { .. } => (true, 1),
                Op::MatMul { .. }
                | Op::Attention { .. }
                | Op::Scan { .. }
                | Op::Reduce { .. }
                | Op::TupleGet { .. }
                | Op::UpdateTail
                | Op::UpdateRing => (true, 1),
                Op::Const { .. } | Op::Iota { .. } => (false, 0),
                Op::Reshape | Op::Permute { .. } | Op::Broadcast | Op::Slice { .. } => {
                    (false, input_cost)
                }
                Op::Cast => (false, input_cost),
                op => (false, op_cost(op) + input_cost),
            };
            let shared = self.consumers[i] > 1 && c > SHARED_COST;
            let attention_layout = matches!(&node.op, Op::Permute { perm } if perm == &[0, 2, 1, 3])
                && self.attention_output(node.inputs[0]);
            let store = always
                || attention_layout
                || self.is_output(id)
                || (node.dtype == DType::F32 && (shared || c > MAX_COST));
            if store {
                self.root[i] = true;
                cost[i] = 1;
            } else {
                cost[i] = c;
            }
            // Structured ops read their operands as strided buffers.
            match &node.op {
                Op::MatMul { transpose_b } => {
                    let (a, b) = (node.inputs[0], node.inputs[1]);
                    self.force_view(a, &|v: &View, cx: &Cx| cx.panel_a(v).is_some());
                    let tb = *transpose_b;
                    self.force_view(b, &move |v: &View, cx: &Cx| cx.panel_b(v, tb).is_some());
                }
                Op::Attention { .. } => {
                    for &x in &node.inputs[..3] {
                        self.force_view(x, &|_, _| true);
                    }
                }
                Op::Scan { .. } => {
                    for &x in &node.inputs {
                        self.force_view(x, &|v: &View, cx: &Cx| cx.is_plain(v, x));
                    }
                }
                _ => {}
            }
            if node.dtype == DType::I64 && self.root[i] && !matches!(node.op, Op::Input { .. }) {
                return Err(format!(
                    "%{i} ({}): an i64 value computed inside the model must be stored, which the CPU backend does not support",
                    node.op.name()
                ));
            }
            for &x in &node.inputs {
                if self.root[x.0 as usize] {
                    cost[x.0 as usize] = 1;
                }
            }
        }
        Ok(())
    }

    /// Makes `id` readable as a view that satisfies `ok`: first by storing the value under
    /// its movement ops, then by storing `id` itself.
    fn force_view(&mut self, id: NodeId, ok: &dyn Fn(&View, &Cx) -> bool) {
        if self.view_of(id).is_some_and(|v| ok(&v, self)) {
            return;
        }
        let mut n = id;
        while !self.root[n.0 as usize] && is_movement(&self.node(n).op) {
            n = self.node(n).inputs[0];
        }
        self.root[n.0 as usize] = true;
        if self.view_of(id).is_some_and(|v| ok(&v, self)) {
            return;
        }
        self.root[id.0 as usize] = true;
    }

    /// Matmul epilogues and attention output layouts.
    fn decide_fusions(&mut self) {
        for (i, node) in self.g.nodes.iter().enumerate() {
            let id = NodeId(i as u32);
            match &node.op {
                Op::MatMul { .. } => {
                    let mut cur = id;
                    let mut host = None;
                    loop {
                        if self.is_output(cur) || self.consumers[cur.0 as usize] != 1 {
                            break;
                        }
                        if cur != id && self.root[cur.0 as usize] {
                            break;
                        }
                        let Some(c) = self.sole_consumer(cur) else {
                            break;
                        };
                        let cn = self.node(c);
                        let elementwise =
                            matches!(cn.op, Op::Unary(_) | Op::Binary(_) | Op::Select)
                                || (matches!(cn.op, Op::Cast) && cn.dtype == DType::F32);
                        if !elementwise || cn.shape != node.shape || cn.dtype != DType::F32 {
                            break;
                        }
                        cur = c;
                        host = Some(c);
                    }
                    // One epilogue per host: SwiGLU's `silu(gate) * up` hosts only one.
                    if let Some(h) = host.filter(|h| !self.host_of.contains_key(h)) {
                        self.root[h.0 as usize] = true;
                        self.fused_into.insert(id, h);
                        self.host_of.insert(h, id);
                    } else if host.is_none() {
                        if let Some(h) = self.row_local_host(id) {
                            self.fused_into.insert(id, h);
                            self.host_of.insert(h, id);
                            self.whole_rows.insert(id);
                        }
                    }
                }
                Op::Attention { .. } => {
                    if !self.attention_output(id) {
                        continue;
                    }
                    if let Some(c) = self.sole_consumer(id) {
                        if matches!(&self.node(c).op, Op::Permute { perm } if perm == &[0, 2, 1, 3])
                        {
                            self.root[c.0 as usize] = true;
                            self.attn_into.insert(id, c);
                        }
                    }
                }
                _ => {}
            }
        }
    }

    /// A matmul's row-local epilogue host: the one stored node that everything computed
    /// from the product leads to, through ops that keep the product's row axes (all but
    /// the last) in place and move values only within a row — RoPE on a q/k projection
    /// (reshape to heads, slices, negation, concatenation, products with the tables). The
    /// kernel then computes whole rows and applies the epilogue row by row through a
    /// scratch row, in place.
    fn row_local_host(&self, m: NodeId) -> Option<NodeId> {
        const MAX_ROW: u64 = 1 << 16;
        let shape = &self.node(m).shape;
        let r = shape.len();
        if self.is_output(m) || r < 2 || shape[r - 1].as_const().is_none_or(|n| n > MAX_ROW) {
            return None;
        }
        let rows = &shape[..r - 1];
        let keeps_rows = |s: &[Dim]| s.len() >= r - 1 && &s[..r - 1] == rows;
        let mut region = vec![m];
        let mut host: Option<NodeId> = None;
        let mut k = 0;
        while k < region.len() {
            let cur = region[k];
            k += 1;
            for &c in &self.users[cur.0 as usize] {
                let (i, node) = (c.0 as usize, self.node(c));
                if region.contains(&c) || Some(c) == host {
                    continue;
                }
                let row_op = match &node.op {
                    Op::Unary(_) | Op::Binary(_) | Op::Select => true,
                    Op::Cast => node.dtype == DType::F32,
                    Op::Reshape => keeps_rows(&self.node(node.inputs[0]).shape),
                    Op::Slice { axis, .. } | Op::Concat { axis } | Op::Shift { axis, .. } => {
                        *axis >= r - 1
                    }
                    Op::Permute { perm } => {
                        perm.iter().take(r - 1).enumerate().all(|(a, &p)| a == p)
                    }
                    _ => false,
                };
                if !row_op || !keeps_rows(&node.shape) || node.dtype != DType::F32 {
                    return None;
                }
                if self.root[i] || self.is_output(c) {
                    if host.is_some_and(|h| h != c) {
                        return None;
                    }
                    host = Some(c);
                } else {
                    region.push(c);
                }
            }
        }
        let h = host?;
        let same_size = Dim::product(&self.node(h).shape) == Dim::product(shape);
        // Nothing outside reads the product or what is computed from it but the host.
        let closed = region.iter().all(|&x| {
            self.users[x.0 as usize]
                .iter()
                .all(|u| region.contains(u) || *u == h)
        });
        (same_size && closed && !self.host_of.contains_key(&h) && region.len() > 1).then_some(h)
    }

    /// An attention whose only reader is the permute back to [batch, seq, heads, dim].
    fn attention_output(&self, id: NodeId) -> bool {
        matches!(self.node(id).op, Op::Attention { .. })
            && !self.is_output(id)
            && self.consumers[id.0 as usize] == 1
    }

    fn sole_consumer(&self, id: NodeId) -> Option<NodeId> {
        match self.users[id.0 as usize][..] {
            [only] => Some(only),
            _ => None,
        }
    }

    fn assign_buffers(&mut self, inputs: Option<&[BufId]>) -> Result<(), String> {
        if let Some(bufs) = inputs {
            for (&id, &b) in self.g.inputs.iter().zip(bufs) {
                self.buf[id.0 as usize] = Some(b);
            }
        }
        let mut scan_outputs: HashMap<NodeId, Vec<NodeId>> = HashMap::new();
        for (i, node) in self.g.nodes.iter().enumerate() {
            let id = NodeId(i as u32);
            if !self.root[i] || self.buf[i].is_some() {
                continue;
            }
            let elems = dim_elems(&node.shape);
            let b = match &node.op {
                Op::Input { name } if name.starts_with(STATE) => {
                    if self.is_body {
                        return Err(format!("scan body input `{name}` has no buffer"));
                    }
                    let state = name[STATE.len()..].to_string();
                    let b = self.p.buffer(
                        BufKind::State(state.clone()),
                        node.dtype == DType::I64,
                        elems,
                    );
                    self.p.prog.states.push((state, b, node.shape.clone()));
                    b
                }
                // In place: the new rows go straight into the state buffer.
                Op::UpdateTail | Op::UpdateRing => {
                    let x = node.inputs[0];
                    let in_state =
                        matches!(&self.node(x).op, Op::Input { name } if name.starts_with(STATE));
                    if !in_state || self.users[x.0 as usize].len() != 1 || self.is_body {
                        return Err(format!(
                            "%{i} ({}): must be the only reader of a `{STATE}` input",
                            node.op.name()
                        ));
                    }
                    self.buf[x.0 as usize]
                        .ok_or_else(|| format!("internal: %{} has no buffer", x.0))?
                }
                Op::Input { name } => {
                    if self.is_body {
                        return Err(format!("scan body input `{name}` has no buffer"));
                    }
                    let b = self.p.buffer(
                        BufKind::Input(name.clone()),
                        node.dtype == DType::I64,
                        elems,
                    );
                    self.p
                        .prog
                        .inputs
                        .push((name.clone(), b, node.shape.clone()));
                    b
                }
                Op::Param { name } => match self.p.params.get(name) {
                    Some(&b) => b,
                    None => {
                        let b = self.p.buffer(BufKind::Param(name.clone()), false, elems);
                        self.p.params.insert(name.clone(), b);
                        self.p
                            .prog
                            .params
                            .push((name.clone(), b, node.shape.clone()));
                        b
                    }
                },
                Op::Scan { .. } => continue,
                Op::MatMul { .. } if self.fused_into.contains_key(&id) => continue,
                Op::Attention { .. } if self.attn_into.contains_key(&id) => continue,
                _ => {
                    if let Op::TupleGet { .. } = node.op {
                        scan_outputs.entry(node.inputs[0]).or_default().push(id);
                    }
                    let kind = match self.g.outputs.iter().find(|(_, o)| *o == id) {
                        Some((name, _)) if !self.is_body && !name.starts_with(STATE) => {
                            BufKind::Output(name.clone())
                        }
                        _ => BufKind::Temp,
                    };
                    self.p.buffer(kind, node.dtype == DType::I64, elems)
                }
            };
            self.buf[i] = Some(b);
        }
        for (&m, &h) in &self.fused_into {
            self.buf[m.0 as usize] = self.buf[h.0 as usize];
        }
        Ok(())
    }

    // ---- views and expressions ------------------------------------------------------

    fn contiguous(&self, shape: &[Dim]) -> Result<Vec<Ix>, String> {
        let ext = self.extents(shape)?;
        let mut strides = vec![Ix::c(1); ext.len()];
        for k in (0..ext.len().saturating_sub(1)).rev() {
            strides[k] = strides[k + 1].clone().mul(ext[k + 1].clone());
        }
        Ok(strides)
    }

    /// The value of `id` as a strided view of a stored buffer, when it is one.
    fn view_of(&self, id: NodeId) -> Option<View> {
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

    fn is_plain(&self, v: &View, id: NodeId) -> bool {
        v.offset == Ix::c(0)
            && self
                .contiguous(&self.node(id).shape)
                .is_ok_and(|s| s == v.strides)
    }

    /// A's panel: unit column stride. Returns the row stride.
    fn panel_a(&self, v: &View) -> Option<Ix> {
        let r = v.strides.len();
        (r >= 2 && v.strides[r - 1] == Ix::c(1)).then(|| v.strides[r - 2].clone())
    }

    /// B's panel: (ld, transposed) for a [k, n] operand (or [n, k] when `transpose_b`).
    fn panel_b(&self, v: &View, transpose_b: bool) -> Option<(Ix, bool)> {
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
    fn load_view(&self, v: &View, idx: &[Ix]) -> Result<(BufId, Ix), String> {
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
    fn value(&self, id: NodeId, idx: &[Ix]) -> Result<Expr, String> {
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
    fn index(&self, id: NodeId, idx: &[Ix]) -> Result<Ix, String> {
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
    fn input_index(&self, id: NodeId, k: usize, idx: &[Ix]) -> Result<Vec<Ix>, String> {
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

    fn reshape_index(&self, idx: &[Ix], out: &[Dim], inp: &[Dim]) -> Result<Vec<Ix>, String> {
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
    fn define(&self, id: NodeId, idx: &[Ix]) -> Result<Expr, String> {
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

    // ---- kernels ------------------------------------------------------------------

    fn vars(n: usize) -> Vec<Ix> {
        (0..n as u32).map(Ix::Var).collect()
    }

    fn name(&self, id: NodeId) -> String {
        format!("{}_{}", self.node(id).op.name(), id.0)
    }

    fn emit(&mut self) -> Result<(), String> {
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
                Op::UpdateRing => {
                    // Row t of the new rows goes to ring row (L − T + t) mod R: a per-row
                    // offset over the new rows' own linear position.
                    let (x, new, seen) = (node.inputs[0], node.inputs[1], node.inputs[2]);
                    let ring = self.dim(&self.node(x).shape[0])?;
                    let seen = self.dim(&self.node(seen).shape[1])?;
                    let new_shape = &self.node(new).shape;
                    let extents = self.extents(new_shape)?;
                    let row = self
                        .extents(&new_shape[1..])?
                        .into_iter()
                        .fold(Ix::c(1), Ix::mul);
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
                    let new_shape = &self.node(new).shape;
                    let extents = self.extents(new_shape)?;
                    let row = self
                        .extents(&new_shape[1..])?
                        .into_iter()
                        .fold(Ix::c(1), Ix::mul);
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

    fn out_buf(&self, id: NodeId) -> Result<BufId, String> {
        self.buf[id.0 as usize].ok_or_else(|| format!("internal: %{} has no buffer", id.0))
    }

    fn matmul(&self, m: NodeId, host: Option<NodeId>) -> Result<MatMul, String> {
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
        let lda = self.panel_a(&va).ok_or("internal: A panel")?;
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
            transpose_b: tb,
            epilogue,
            whole_rows,
        })
    }

    fn strided(&self, id: NodeId) -> Result<Strided, String> {
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

    fn attention(&self, id: NodeId, into: Option<NodeId>) -> Result<Kernel, String> {
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
        let vars = Self::vars(4);
        let bias = if has_bias {
            let x = ins[3];
            Some(self.value(x, &broadcast_index(&vars, &full, &self.node(x).shape))?)
        } else {
            None
        };
        let key_mask = if has_key_mask {
            let x = ins[3 + usize::from(has_bias)];
            Some(self.value(x, &[vars[0].clone(), vars[3].clone()])?)
        } else {
            None
        };
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
            })),
        })
    }

    fn plain_buf(&self, id: NodeId) -> Result<BufId, String> {
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

    fn scan(&mut self, id: NodeId) -> Result<Scan, String> {
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
            body: body_kernels,
            update: Vec::new(),
            seq_out: Vec::new(),
            finish: Vec::new(),
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
            scan.seq_out
                .push(step_copy(self, result_bufs[j], body_out[j], step_shape)?);
        }
        Ok(scan)
    }

    /// Outputs that are not already written into their own output buffer get a copy.
    fn finish_outputs(&mut self) -> Result<(), String> {
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
                    let mut reads = Vec::new();
                    expr.visit_bufs(&mut |x| reads.push(x));
                    if reads.contains(&sb) {
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
                        let strides = self.contiguous(&node.shape)?;
                        let at = Self::vars(extents.len())
                            .into_iter()
                            .zip(strides)
                            .fold(Ix::c(0), |acc, (v, s)| acc.add(v.mul(s)));
                        expr = Expr::Load(tmp, Box::new(at));
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

/// Scan states that the body may update in place: the new state is an elementwise
/// function of the old one at the same element, and nothing else reads the old state or
/// anything computed from it on the way (Mamba's `h = dA·h + dB·x`). Its kernel then
/// writes the state buffer itself and the copy after each step disappears. (An update
/// that mixes states — S4's complex product, RWKV's running maximum read by the output —
/// keeps its copy.)
fn in_place_states(body: &Graph, states: usize, body_in: &[BufId]) -> HashMap<NodeId, BufId> {
    let users = users(body);
    let outputs: Vec<NodeId> = body.outputs.iter().map(|(_, o)| *o).collect();
    let mut alias = HashMap::new();
    for j in 0..states.min(body.inputs.len()).min(outputs.len()) {
        let (old, new) = (body.inputs[j], outputs[j]);
        let elementwise = |x: NodeId| {
            let nd = body.node(x);
            matches!(nd.op, Op::Unary(_) | Op::Binary(_) | Op::Select)
                && nd.shape == body.node(old).shape
                && nd.dtype == DType::F32
        };
        if !elementwise(new) || outputs.iter().filter(|&&o| o == new).count() != 1 {
            continue;
        }
        // Walk forward from the old state: every reader must be elementwise on the same
        // shape and lead only to the new state.
        let mut cone = vec![old];
        let mut ok = true;
        let mut k = 0;
        while ok && k < cone.len() {
            let x = cone[k];
            k += 1;
            for &c in &users[x.0 as usize] {
                if c == new || cone.contains(&c) {
                    continue;
                }
                if !elementwise(c) || outputs.contains(&c) {
                    ok = false;
                    break;
                }
                cone.push(c);
            }
        }
        // Every node of the cone must reach the new state (no dead ends read elsewhere).
        if ok && cone[1..].iter().all(|&x| reaches(body, x, new)) {
            alias.insert(new, body_in[j]);
        }
    }
    alias
}

/// The distinct nodes that read each node of `g`.
fn users(g: &Graph) -> Vec<Vec<NodeId>> {
    let mut users = vec![Vec::new(); g.nodes.len()];
    for (i, node) in g.nodes.iter().enumerate() {
        for x in &node.inputs {
            let u = &mut users[x.0 as usize];
            if u.last() != Some(&NodeId(i as u32)) {
                u.push(NodeId(i as u32));
            }
        }
    }
    users
}

/// Whether `to` depends on `from`.
fn reaches(g: &Graph, from: NodeId, to: NodeId) -> bool {
    let mut seen = vec![false; g.nodes.len()];
    let mut stack = vec![to];
    while let Some(x) = stack.pop() {
        if x == from {
            return true;
        }
        if !std::mem::replace(&mut seen[x.0 as usize], true) {
            stack.extend(g.node(x).inputs.iter().copied());
        }
    }
    false
}

/// What recomputing one element of `op` costs, in simple arithmetic operations: libm-class
/// functions are worth about eight (a RoPE table of `cos`/`sin`/`pow` is stored once rather
/// than recomputed by every layer).
fn op_cost(op: &Op) -> usize {
    use crate::graph::{BinaryOp, UnaryOp};
    match op {
        Op::Unary(
            UnaryOp::Exp
            | UnaryOp::Log
            | UnaryOp::Tanh
            | UnaryOp::Erf
            | UnaryOp::Sigmoid
            | UnaryOp::Silu
            | UnaryOp::Gelu
            | UnaryOp::GeluTanh
            | UnaryOp::Softplus
            | UnaryOp::Sin
            | UnaryOp::Cos,
        ) => 8,
        Op::Binary(BinaryOp::Pow) => 8,
        Op::Binary(BinaryOp::Div) | Op::Unary(UnaryOp::Sqrt | UnaryOp::Rsqrt | UnaryOp::Recip) => 2,
        _ => 1,
    }
}

fn is_movement(op: &Op) -> bool {
    matches!(
        op,
        Op::Reshape | Op::Permute { .. } | Op::Broadcast | Op::Slice { .. }
    )
}

/// Numpy broadcasting: the index into an input of shape `inp` read by element `idx` of
/// an output of shape `out`.
fn broadcast_index(idx: &[Ix], out: &[Dim], inp: &[Dim]) -> Vec<Ix> {
    let lead = out.len().saturating_sub(inp.len());
    (0..inp.len())
        .map(|k| {
            if inp[k] == Dim::c(1) && out.get(k + lead) != Some(&Dim::c(1)) {
                Ix::c(0)
            } else {
                idx[k + lead].clone()
            }
        })
        .collect()
}

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
//!
//! This file holds the decisions (which nodes are stored, which fuse, which buffers they
//! get); `views.rs` turns nodes into strided views and expressions; `emit.rs` writes the
//! kernels.

use super::{
    Attention, Body, BufId, BufKind, Buffer, Expr, Ix, Kernel, MatMul, Panel, Program, Scan,
    StepCopy, Strided,
};
use crate::graph::{DType, Dim, Graph, Node, NodeId, Op};
use std::collections::HashMap;

mod emit;
mod rows;
mod views;

/// Graph inputs and outputs named `state:{name}` are session state (`BufKind::State`).
pub const STATE: &str = "state:";

/// Elementwise values read by more than one consumer are stored once their expression
/// has more than this many operations.
const SHARED_COST: usize = 4;
/// Any expression larger than this is stored.
const MAX_COST: usize = 40;
/// A value read by two elementwise or reduction kernels is recomputed up to this cost.
const RECOMPUTE_COST: usize = 12;

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
    elide_state_copies(&mut p.prog);
    reuse_dying_inputs(&mut p.prog);
    Ok(p.prog)
}

/// An elementwise map whose temp input dies in it writes over that input: when the map
/// reads a temp of its own size only at the element it writes, and nothing after it reads
/// that temp, the output takes the input's buffer (renamed in every later kernel). The
/// backward pass is full of such maps — a loss's gradient over the logits it was computed
/// from, an activation's gradient over the incoming gradient — and each would otherwise
/// hold a second buffer of the same size at that moment.
fn reuse_dying_inputs(prog: &mut Program) {
    let mut last_use = vec![None; prog.buffers.len()];
    let mut first_write = vec![None; prog.buffers.len()];
    for (k, kernel) in prog.kernels.iter().enumerate() {
        for b in kernel.buffers() {
            last_use[b] = Some(k);
        }
        for b in kernel.writes() {
            first_write[b].get_or_insert(k);
        }
    }
    for k in 0..prog.kernels.len() {
        let Body::Map {
            out,
            offset,
            extents,
            expr,
        } = &prog.kernels[k].body
        else {
            continue;
        };
        let out = *out;
        if *offset != Ix::c(0) || prog.buffers[out].kind != BufKind::Temp || extents.is_empty() {
            continue;
        }
        let here = Ix::here(extents);
        let mut reads = Vec::new();
        expr.visit_bufs(&mut |b| reads.push(b));
        reads.sort_unstable();
        reads.dedup();
        let victim = reads.into_iter().find(|&i| {
            i != out
                && prog.buffers[i].kind == BufKind::Temp
                && !prog.buffers[i].i64
                && prog.buffers[i].elems == prog.buffers[out].elems
                && last_use[i] == Some(k)
                && emit::reads_only_at(expr, i, &here)
                && first_write[out] == Some(k)
        });
        let Some(i) = victim else {
            continue;
        };
        merge_buffer(prog, k, out, i);
        // `i` now lives as long as `out` did.
        let new_last = last_use[out];
        last_use[i] = new_last;
        last_use[out] = None;
    }
}

/// A new state computed into a temp by a map kernel and copied over the state buffer at
/// the end is computed over the state buffer directly when that is safe: the map reads the
/// old state only at the element it writes, and no later kernel reads the old state. An
/// optimizer step then updates every parameter and moment in place, with no temp of a
/// parameter's size (the temp stays in the buffer list with zero elements).
fn elide_state_copies(prog: &mut Program) {
    let mut k = 0;
    while k < prog.kernels.len() {
        let Body::Map {
            out: sb,
            offset,
            extents,
            expr: Expr::Load(t, at),
        } = &prog.kernels[k].body
        else {
            k += 1;
            continue;
        };
        let (sb, t, at, extents) = (*sb, *t, (**at).clone(), extents.clone());
        let is_state = matches!(prog.buffers[sb].kind, BufKind::State(_));
        let is_temp = prog.buffers[t].kind == BufKind::Temp;
        if !is_state || !is_temp || *offset != Ix::c(0) {
            k += 1;
            continue;
        }
        let writers: Vec<usize> = (0..prog.kernels.len())
            .filter(|&j| prog.kernels[j].writes().contains(&t))
            .collect();
        let Some(&w) = writers.first() else {
            k += 1;
            continue;
        };
        let fits = writers.len() == 1
            && w < k
            && matches!(&prog.kernels[w].body, Body::Map { out, offset, extents: e, expr }
                if *out == t && *offset == Ix::c(0) && *e == extents
                    && emit::reads_only_at(expr, sb, &at))
            && (w + 1..prog.kernels.len())
                .filter(|&j| j != k)
                .all(|j| !prog.kernels[j].buffers().contains(&sb));
        if !fits {
            k += 1;
            continue;
        }
        prog.kernels.remove(k);
        merge_buffer(prog, w, t, sb);
    }
}

/// Buffer `old` is `new` from kernel `from` on (`old` was first written there): every
/// reference is renamed and `old` keeps zero elements, so the planner gives it no room.
/// What the two in-place passes above share.
fn merge_buffer(prog: &mut Program, from: usize, old: BufId, new: BufId) {
    for kernel in &mut prog.kernels[from..] {
        kernel.rename_bufs(&mut |b| {
            if *b == old {
                *b = new
            }
        });
    }
    prog.buffers[old].elems = Dim::c(0);
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
            quant: None,
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
                | Op::AttentionGrad { .. }
                | Op::Scan { .. }
                | Op::Reduce { .. }
                | Op::TupleGet { .. }
                | Op::UpdateTail
                | Op::UpdateRing
                | Op::ScatterAdd { .. } => (true, 1),
                Op::Const { .. } | Op::Iota { .. } => (false, 0),
                Op::Reshape | Op::Permute { .. } | Op::Broadcast | Op::Slice { .. } => {
                    (false, input_cost)
                }
                Op::Cast => (false, input_cost),
                op => (false, op_cost(op) + input_cost),
            };
            // A value read by exactly two elementwise or reduction kernels and cheap to
            // redo (a softmax's exp over the logits, read by its sum and by the loss's
            // gradient) is recomputed in both rather than stored: storing it costs a
            // buffer of its size and a write and a read of every element.
            let recompute = self.consumers[i] == 2
                && c <= RECOMPUTE_COST
                && self.users[i].iter().all(|u| {
                    matches!(
                        self.node(*u).op,
                        Op::Unary(_)
                            | Op::Binary(_)
                            | Op::Select
                            | Op::Reduce { .. }
                            | Op::Reshape
                            | Op::Broadcast
                            | Op::Cast
                    )
                });
            let shared = self.consumers[i] > 1 && c > SHARED_COST && !recompute;
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
                Op::AttentionGrad { part, .. } => {
                    // q, k (and v, dO): strided operands.
                    let n = if *part == crate::graph::AttnPart::Lse {
                        2
                    } else {
                        4
                    };
                    for &x in &node.inputs[..n] {
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

//! The Kernel IR: a model as a list of kernels over a table of buffers, independent of the
//! target. Built from the graph IR by [`build`] (fusion decides what is materialised and
//! what is recomputed inside a consumer), planned by [`plan`] (buffer liveness and arena
//! slots), printed by [`print`], lowered by a backend (`backend::cpu::lower`).
//!
//! A kernel is a loop nest over an index space. Its **parallel** axis is a count the
//! kernel's `range` function returns at run time; iterations write disjoint outputs, so a
//! runtime may split them across threads in any way. Inside an iteration the loops are
//! serial; the innermost runs over contiguous memory and is the **vector** axis, and
//! reductions (`Reduce`, the `k` of a matmul, the keys of attention) are **reduction**
//! axes. Values are described by two small expression trees: [`Ix`] for i64 index
//! arithmetic over loop variables and run-time symbols (`batch`, `seq`), and [`Expr`] for
//! f32 values, so every movement op of the graph (reshape, permute, broadcast, slice,
//! shift, concat, gather) becomes index arithmetic inside its consumer rather than a copy.
//!
//! Structured kernels keep their shape for the backends: a matmul names its operands as
//! strided panels and carries an elementwise epilogue; attention is one online-softmax
//! kernel whose bias and key mask are expressions (a T5 or ALiBi bias is computed where it
//! is used, never stored as seq×seq); a scan is a sequential loop around a sub-program.

pub mod build;
pub mod plan;
mod print;
pub mod quant;

pub use build::build;
pub use print::print;

use crate::graph::{AttnPart, BinaryOp, Dim, MaskKind, ReduceOp, UnaryOp};

pub type BufId = usize;

/// An i64 index expression. `Var(k)` is loop variable `k` of the enclosing kernel (what
/// each variable means is fixed per kernel kind, below); `Sym(i)` is `dims[i]`.
#[derive(Clone, Debug, PartialEq)]
pub enum Ix {
    Const(i64),
    Var(u32),
    Sym(u32),
    Add(Box<Ix>, Box<Ix>),
    Mul(Box<Ix>, Box<Ix>),
    /// Division of non-negative values.
    Div(Box<Ix>, Box<Ix>),
    Rem(Box<Ix>, Box<Ix>),
    Min(Box<Ix>, Box<Ix>),
    Max(Box<Ix>, Box<Ix>),
    /// Element of an i64 buffer.
    Load(BufId, Box<Ix>),
    /// f32 → i64, truncating toward zero.
    FromF32(Box<Expr>),
}

/// An f32 value expression.
#[derive(Clone, Debug, PartialEq)]
pub enum Expr {
    Const(f64),
    /// Element of an f32 buffer.
    Load(BufId, Box<Ix>),
    /// i64 → f32.
    FromIx(Box<Ix>),
    Unary(UnaryOp, Box<Expr>),
    Binary(BinaryOp, Box<Expr>, Box<Expr>),
    /// `c != 0 ? a : b`.
    Select(Box<Expr>, Box<Expr>, Box<Expr>),
    /// `a < b ? x : y` on indices: the guards of `shift` and `concat`. Both arms must be
    /// safe to evaluate (their indices are clamped in range).
    IfLt(Box<Ix>, Box<Ix>, Box<Expr>, Box<Expr>),
}

/// A buffer of the program.
#[derive(Clone, Debug, PartialEq)]
pub struct Buffer {
    pub id: BufId,
    pub kind: BufKind,
    pub i64: bool,
    /// Element count.
    pub elems: Dim,
    /// A parameter the kernels read as ggml blocks of this type ([`quant`]).
    pub quant: Option<arch_runtime::gguf::GgmlType>,
}

#[derive(Clone, Debug, PartialEq)]
pub enum BufKind {
    Input(String),
    Param(String),
    Output(String),
    /// Session state (a KV cache, a recurrent state) that lives across calls: owned by the
    /// runtime's session, read and written in place by the kernels.
    State(String),
    Temp,
}

/// A matrix operand: element (i, j) of batch `b` at `offset(b) + i·ld + j` (or `j·ld + i`
/// for a transposed operand). `offset` uses `Var(0)`, the batch index.
#[derive(Clone, Debug, PartialEq)]
pub struct Panel {
    pub buf: BufId,
    pub offset: Ix,
    pub ld: Ix,
}

/// `out[b, i, j] = epilogue(Σ_k a[b, i, k] · b[b, k, j])`. Variables: `Var(0)` batch,
/// `Var(1)` row, `Var(2)` column. `out` is contiguous [batch, m, n]; the epilogue reads
/// the product back from `out` at the same element and may read other buffers.
#[derive(Clone, Debug, PartialEq)]
pub struct MatMul {
    pub out: BufId,
    pub batch: Ix,
    pub m: Ix,
    pub n: Ix,
    pub k: Ix,
    pub a: Panel,
    pub b: Panel,
    /// A is stored [k, m]: element (i, k) at `offset + k·ld + i` (rank-2 A only).
    pub transpose_a: bool,
    pub transpose_b: bool,
    pub epilogue: Option<Expr>,
    /// The epilogue reads other columns of the same row (RoPE): iterations cover whole
    /// rows, and each row's epilogue is computed into scratch before it is stored.
    pub whole_rows: bool,
}

/// A rank-4 strided operand: element (i0..i3) at `offset + Σ i·stride`.
#[derive(Clone, Debug, PartialEq)]
pub struct Strided {
    pub buf: BufId,
    pub offset: Ix,
    pub strides: [Ix; 4],
}

/// Scaled dot-product attention with online softmax: one query row per parallel
/// iteration, keys visited once, no scores stored. Variables of `bias` and `key_mask`:
/// `Var(0)` batch, `Var(1)` head, `Var(2)` query, `Var(3)` key.
#[derive(Clone, Debug, PartialEq)]
pub struct Attention {
    pub out: Strided,
    pub q: Strided,
    pub k: Strided,
    pub v: Strided,
    /// [batch, heads, queries, keys, head_dim, value_dim, kv_heads]
    pub sizes: [Ix; 7],
    pub mask: MaskKind,
    pub scale: f64,
    pub bias: Option<Expr>,
    pub key_mask: Option<Expr>,
    /// k and v are rings of this many rows: key p is row p mod R (a sliding-window cache).
    pub ring: Option<Ix>,
    /// `None`: the forward output. A part of the flash-style backward: `Lse` and `Q` run
    /// one query row per iteration, `K` and `V` one key row (of a key/value head) per
    /// iteration, visiting the queries that see it. `out` is then [b, h, t] (`Lse`, last
    /// stride 0), dQ [b, h, t, d], or dK / dV [b, hkv, s, ·]; `v` is unused by `Lse`.
    pub part: Option<AttnPart>,
    /// Backward: the output adjoint dO [b, h, t, dv].
    pub dout: Option<Strided>,
    /// Backward: each query's log-sum-exp and δ = rowsum(dO ⊙ O), variables (b, h, t).
    pub lse: Option<Expr>,
    pub delta: Option<Expr>,
}

/// A copy of `rows` rows of `len` elements between a sequence [rows, steps, len] and a
/// step buffer [rows, len].
#[derive(Clone, Debug, PartialEq)]
pub struct StepCopy {
    pub seq: BufId,
    pub step: BufId,
    pub rows: Ix,
    pub len: Ix,
}

/// A recurrence: `body` runs once per step, sequentially.
#[derive(Clone, Debug, PartialEq)]
pub struct Scan {
    pub steps: Ix,
    pub reverse: bool,
    /// (from, to, elems): copies before the first step (initial states).
    pub init: Vec<(BufId, BufId, Ix)>,
    /// Step slices copied in before each step.
    pub seq_in: Vec<StepCopy>,
    /// Step outputs stacked before the body runs: a state as it enters the step (what a
    /// differentiated scan saves), whose buffer the step then overwrites.
    pub seq_save: Vec<StepCopy>,
    pub body: Vec<Kernel>,
    /// (from, to, elems): new states copied over the old after each step.
    pub update: Vec<(BufId, BufId, Ix)>,
    /// Step outputs stacked after each step.
    pub seq_out: Vec<StepCopy>,
    /// (from, to, elems): final states copied out after the last step.
    pub finish: Vec<(BufId, BufId, Ix)>,
    /// Set when every row (the sequences' axis 0) is computed from that row alone
    /// (`build::rows`): the rows may then run apart.
    pub rows: Option<ScanRows>,
}

/// How a scan's rows run apart: a part of rows `lo..hi` is the scan with symbol `sym`
/// bound to `hi - lo` and each buffer of `bufs` advanced by `lo` rows.
#[derive(Clone, Debug, PartialEq)]
pub struct ScanRows {
    pub sym: u32,
    /// Every buffer the scan touches whose element count mentions `sym` (row-major in it),
    /// with its bytes per row.
    pub bufs: Vec<(BufId, Ix)>,
}

#[derive(Clone, Debug, PartialEq)]
pub enum Body {
    /// `out[offset + linear(v0, …, v(r-1))] = expr` over `extents`, `out` contiguous from
    /// `offset` (0 but for a KV-cache append, which writes the new rows of a state
    /// buffer; `offset` may use the outer loop variables, for a ring's wrap-around).
    /// Parallel over all axes but the last, which is the vector axis.
    Map {
        out: BufId,
        offset: Ix,
        extents: Vec<Ix>,
        expr: Expr,
    },
    /// `out[…, 0, …] = reduce over Var(axis) of expr` over `extents`; `out` contiguous
    /// with the reduced axis dropped. Parallel over the axes before `axis`.
    Reduce {
        out: BufId,
        extents: Vec<Ix>,
        axis: usize,
        op: ReduceOp,
        expr: Expr,
    },
    MatMul(Box<MatMul>),
    Attention(Box<Attention>),
    Scan(Box<Scan>),
    /// `out[index(t), j] += expr(t, j)` for t in 0..n, after `out` [rows, width] is
    /// zeroed: a scatter-add (an embedding's gradient). `index` uses `Var(0)` = t, `expr`
    /// t and j. Parallel over blocks of [`SCATTER_COLUMNS`] columns, each adding every t
    /// in order: disjoint writes, and the same sums whatever the thread count.
    Scatter(Box<Scatter>),
}

/// Columns per parallel iteration of a scatter kernel.
pub const SCATTER_COLUMNS: u64 = 16;

#[derive(Clone, Debug, PartialEq)]
pub struct Scatter {
    pub out: BufId,
    pub rows: Ix,
    pub width: Ix,
    pub n: Ix,
    pub index: Ix,
    pub expr: Expr,
}

#[derive(Clone, Debug, PartialEq)]
pub struct Kernel {
    pub name: String,
    pub body: Body,
}

/// A whole program: what a package holds.
#[derive(Clone, Debug, PartialEq, Default)]
pub struct Program {
    /// Run-time symbols in `dims` order.
    pub syms: Vec<String>,
    pub buffers: Vec<Buffer>,
    pub kernels: Vec<Kernel>,
    /// Graph inputs: name, buffer, shape.
    pub inputs: Vec<(String, BufId, Vec<Dim>)>,
    /// Graph outputs: name, buffer, shape.
    pub outputs: Vec<(String, BufId, Vec<Dim>)>,
    /// Parameters: canonical name, buffer, shape.
    pub params: Vec<(String, BufId, Vec<Dim>)>,
    /// Session state: name, buffer, shape (the graph's `state:{name}` input and output).
    pub states: Vec<(String, BufId, Vec<Dim>)>,
    /// Arena slot of each temp buffer (after [`plan::assign_slots`]).
    pub slots: Vec<Option<usize>>,
    pub slot_count: usize,
    /// Matmuls of a few rows over a K-quant parameter may quantize A per 256 values to 8 bits
    /// and take integer dot products, as llama.cpp does (`backend/cpu/qdot_ir`); the
    /// result moves by the activations' rounding.
    pub int_dots: bool,
    /// CUDA: matmul tiles multiply operands rounded to this half type (`BF16` or `F16`,
    /// round to nearest even) on the tensor cores (`mma.sync` m16n8k16), accumulating in
    /// f32, instead of "3×TF32" f32 products (`--dtype`).
    pub half_matmul: Option<arch_runtime::gguf::GgmlType>,
}

impl Ix {
    pub fn c(v: i64) -> Ix {
        Ix::Const(v)
    }

    pub fn as_const(&self) -> Option<i64> {
        match self {
            Ix::Const(v) => Some(*v),
            _ => None,
        }
    }

    /// Whether the value is a multiple of `n` (> 0) whatever the symbols and variables
    /// are: a proof by the expression's form, `false` where it cannot tell.
    pub fn multiple_of(&self, n: i64) -> bool {
        if n == 1 {
            return true;
        }
        let gcd = |mut a: i64, mut b: i64| {
            while b != 0 {
                (a, b) = (b, a % b);
            }
            a.abs()
        };
        match self {
            Ix::Const(v) => n > 0 && v % n == 0,
            Ix::Add(a, b) | Ix::Min(a, b) | Ix::Max(a, b) => a.multiple_of(n) && b.multiple_of(n),
            // c · x is a multiple of n where x is one of n / gcd(c, n).
            Ix::Mul(a, b) => [(a, b), (b, a)].iter().any(|(c, x)| {
                c.multiple_of(n) || c.as_const().is_some_and(|c| x.multiple_of(n / gcd(c, n)))
            }),
            _ => false,
        }
    }

    #[allow(clippy::should_implement_trait)]
    pub fn add(self, o: Ix) -> Ix {
        match (self.as_const(), o.as_const()) {
            (Some(a), Some(b)) => Ix::Const(a + b),
            (Some(0), _) => o,
            (_, Some(0)) => self,
            _ => Ix::Add(Box::new(self), Box::new(o)),
        }
    }

    #[allow(clippy::should_implement_trait)]
    pub fn sub(self, o: Ix) -> Ix {
        match o.as_const() {
            Some(b) => self.add(Ix::Const(-b)),
            None => self.add(Ix::Mul(Box::new(o), Box::new(Ix::Const(-1)))),
        }
    }

    #[allow(clippy::should_implement_trait)]
    pub fn mul(self, o: Ix) -> Ix {
        match (self.as_const(), o.as_const()) {
            (Some(a), Some(b)) => Ix::Const(a * b),
            (Some(0), _) | (_, Some(0)) => Ix::Const(0),
            (Some(1), _) => o,
            (_, Some(1)) => self,
            _ => Ix::Mul(Box::new(self), Box::new(o)),
        }
    }

    #[allow(clippy::should_implement_trait)]
    pub fn div(self, o: Ix) -> Ix {
        match (self.as_const(), o.as_const()) {
            (Some(a), Some(b)) if b != 0 => Ix::Const(a / b),
            (Some(0), _) => Ix::Const(0),
            (_, Some(1)) => self,
            _ => {
                // (x · c) / c = x
                if let Ix::Mul(a, b) = &self {
                    if **b == o {
                        return (**a).clone();
                    }
                    if **a == o {
                        return (**b).clone();
                    }
                }
                Ix::Div(Box::new(self), Box::new(o))
            }
        }
    }

    #[allow(clippy::should_implement_trait)]
    pub fn rem(self, o: Ix) -> Ix {
        match (self.as_const(), o.as_const()) {
            (Some(a), Some(b)) if b != 0 => Ix::Const(a % b),
            (_, Some(1)) | (Some(0), _) => Ix::Const(0),
            _ => Ix::Rem(Box::new(self), Box::new(o)),
        }
    }

    pub fn min(self, o: Ix) -> Ix {
        match (self.as_const(), o.as_const()) {
            (Some(a), Some(b)) => Ix::Const(a.min(b)),
            _ => Ix::Min(Box::new(self), Box::new(o)),
        }
    }

    pub fn max(self, o: Ix) -> Ix {
        match (self.as_const(), o.as_const()) {
            (Some(a), Some(b)) => Ix::Const(a.max(b)),
            _ => Ix::Max(Box::new(self), Box::new(o)),
        }
    }

    /// `x` clamped into `0..=hi`.
    pub fn clamp(self, hi: Ix) -> Ix {
        self.max(Ix::Const(0)).min(hi)
    }

    /// The value of a symbolic dimension: `coef · Π syms / div`.
    pub fn of_dim(d: &Dim, syms: &[String]) -> Result<Ix, String> {
        let mut x = Ix::Const(d.coef as i64);
        for s in &d.syms {
            let i = syms
                .iter()
                .position(|n| n == s)
                .ok_or_else(|| format!("dimension `{s}` is not bound by any input"))?;
            x = x.mul(Ix::Sym(i as u32));
        }
        Ok(x.div(Ix::Const(d.div as i64)))
    }

    /// Row-major linear index of `idx` in `extents`.
    pub fn linear(idx: &[Ix], extents: &[Ix]) -> Ix {
        let mut lin = Ix::Const(0);
        for (i, e) in idx.iter().zip(extents) {
            lin = lin.mul(e.clone()).add(i.clone());
        }
        lin
    }

    /// Row-major strides of `extents` (the last axis contiguous).
    pub fn strides(extents: &[Ix]) -> Vec<Ix> {
        let mut strides = vec![Ix::c(1); extents.len()];
        for k in (0..extents.len().saturating_sub(1)).rev() {
            strides[k] = strides[k + 1].clone().mul(extents[k + 1].clone());
        }
        strides
    }

    /// The element a map over `extents` writes at its loop variables, `Σ Var(j)·stride_j`,
    /// spelled as the loads of a contiguous buffer of that shape are, so that a load of the
    /// same element compares equal.
    pub fn here(extents: &[Ix]) -> Ix {
        Ix::strides(extents)
            .into_iter()
            .enumerate()
            .fold(Ix::c(0), |acc, (j, s)| acc.add(Ix::Var(j as u32).mul(s)))
    }

    /// The multi-index of a row-major linear index.
    pub fn delinear(lin: Ix, extents: &[Ix]) -> Vec<Ix> {
        let mut out = vec![Ix::Const(0); extents.len()];
        let mut rest = lin;
        for (k, e) in extents.iter().enumerate().rev() {
            if k == 0 {
                out[0] = rest.clone();
            } else {
                out[k] = rest.clone().rem(e.clone());
                rest = rest.div(e.clone());
            }
        }
        out
    }

    /// Calls `f` on every buffer this expression reads.
    pub fn visit_bufs(&self, f: &mut dyn FnMut(BufId)) {
        match self {
            Ix::Const(_) | Ix::Var(_) | Ix::Sym(_) => {}
            Ix::Add(a, b)
            | Ix::Mul(a, b)
            | Ix::Div(a, b)
            | Ix::Rem(a, b)
            | Ix::Min(a, b)
            | Ix::Max(a, b) => {
                a.visit_bufs(f);
                b.visit_bufs(f);
            }
            Ix::Load(buf, i) => {
                f(*buf);
                i.visit_bufs(f);
            }
            Ix::FromF32(e) => e.visit_bufs(f),
        }
    }
}

impl Ix {
    /// Calls `f` on every buffer reference, mutably (renaming).
    pub fn rename_bufs(&mut self, f: &mut dyn FnMut(&mut BufId)) {
        match self {
            Ix::Const(_) | Ix::Var(_) | Ix::Sym(_) => {}
            Ix::Add(a, b)
            | Ix::Mul(a, b)
            | Ix::Div(a, b)
            | Ix::Rem(a, b)
            | Ix::Min(a, b)
            | Ix::Max(a, b) => {
                a.rename_bufs(f);
                b.rename_bufs(f);
            }
            Ix::Load(buf, i) => {
                f(buf);
                i.rename_bufs(f);
            }
            Ix::FromF32(e) => e.rename_bufs(f),
        }
    }
}

impl Expr {
    /// Calls `f` on every buffer reference, mutably (renaming).
    pub fn rename_bufs(&mut self, f: &mut dyn FnMut(&mut BufId)) {
        match self {
            Expr::Const(_) => {}
            Expr::Load(buf, i) => {
                f(buf);
                i.rename_bufs(f);
            }
            Expr::FromIx(i) => i.rename_bufs(f),
            Expr::Unary(_, a) => a.rename_bufs(f),
            Expr::Binary(_, a, b) => {
                a.rename_bufs(f);
                b.rename_bufs(f);
            }
            Expr::Select(c, a, b) => {
                c.rename_bufs(f);
                a.rename_bufs(f);
                b.rename_bufs(f);
            }
            Expr::IfLt(x, y, a, b) => {
                x.rename_bufs(f);
                y.rename_bufs(f);
                a.rename_bufs(f);
                b.rename_bufs(f);
            }
        }
    }

    pub fn visit_bufs(&self, f: &mut dyn FnMut(BufId)) {
        match self {
            Expr::Const(_) => {}
            Expr::Load(buf, i) => {
                f(*buf);
                i.visit_bufs(f);
            }
            Expr::FromIx(i) => i.visit_bufs(f),
            Expr::Unary(_, a) => a.visit_bufs(f),
            Expr::Binary(_, a, b) => {
                a.visit_bufs(f);
                b.visit_bufs(f);
            }
            Expr::Select(c, a, b) => {
                c.visit_bufs(f);
                a.visit_bufs(f);
                b.visit_bufs(f);
            }
            Expr::IfLt(x, y, a, b) => {
                x.visit_bufs(f);
                y.visit_bufs(f);
                a.visit_bufs(f);
                b.visit_bufs(f);
            }
        }
    }
}

impl Kernel {
    /// Every buffer the kernel reads or writes, nested scan bodies included.
    pub fn buffers(&self) -> Vec<BufId> {
        let mut out = Vec::new();
        self.visit_bufs(&mut |b| out.push(b));
        out.sort_unstable();
        out.dedup();
        out
    }

    /// The buffers the kernel may write (a scan: every buffer it touches).
    pub fn writes(&self) -> Vec<BufId> {
        match &self.body {
            Body::Map { out, .. } | Body::Reduce { out, .. } => vec![*out],
            Body::MatMul(m) => vec![m.out],
            Body::Attention(a) => vec![a.out.buf],
            Body::Scatter(s) => vec![s.out],
            Body::Scan(_) => self.buffers(),
        }
    }

    pub(crate) fn visit_bufs(&self, f: &mut dyn FnMut(BufId)) {
        match &self.body {
            Body::Map {
                out,
                offset,
                extents,
                expr,
            } => {
                f(*out);
                offset.visit_bufs(f);
                extents.iter().for_each(|e| e.visit_bufs(f));
                expr.visit_bufs(f);
            }
            Body::Reduce {
                out, extents, expr, ..
            } => {
                f(*out);
                extents.iter().for_each(|e| e.visit_bufs(f));
                expr.visit_bufs(f);
            }
            Body::MatMul(m) => {
                f(m.out);
                f(m.a.buf);
                f(m.b.buf);
                if let Some(e) = &m.epilogue {
                    e.visit_bufs(f);
                }
            }
            Body::Attention(a) => {
                for s in [&a.out, &a.q, &a.k, &a.v].into_iter().chain(&a.dout) {
                    f(s.buf);
                }
                for e in a
                    .bias
                    .iter()
                    .chain(&a.key_mask)
                    .chain(&a.lse)
                    .chain(&a.delta)
                {
                    e.visit_bufs(f);
                }
            }
            Body::Scatter(s) => {
                f(s.out);
                for x in [&s.rows, &s.width, &s.n, &s.index] {
                    x.visit_bufs(f);
                }
                s.expr.visit_bufs(f);
            }
            Body::Scan(s) => {
                for (a, b, _) in s.init.iter().chain(&s.update).chain(&s.finish) {
                    f(*a);
                    f(*b);
                }
                for c in s.seq_in.iter().chain(&s.seq_save).chain(&s.seq_out) {
                    f(c.seq);
                    f(c.step);
                }
                for k in &s.body {
                    k.visit_bufs(f);
                }
            }
        }
    }

    /// Calls `f` on every buffer reference, mutably (renaming), nested bodies included.
    pub fn rename_bufs(&mut self, f: &mut dyn FnMut(&mut BufId)) {
        match &mut self.body {
            Body::Map {
                out,
                offset,
                extents,
                expr,
            } => {
                f(out);
                offset.rename_bufs(f);
                extents.iter_mut().for_each(|e| e.rename_bufs(f));
                expr.rename_bufs(f);
            }
            Body::Reduce {
                out, extents, expr, ..
            } => {
                f(out);
                extents.iter_mut().for_each(|e| e.rename_bufs(f));
                expr.rename_bufs(f);
            }
            Body::MatMul(m) => {
                f(&mut m.out);
                f(&mut m.a.buf);
                f(&mut m.b.buf);
                m.a.offset.rename_bufs(f);
                m.b.offset.rename_bufs(f);
                if let Some(e) = &mut m.epilogue {
                    e.rename_bufs(f);
                }
            }
            Body::Attention(a) => {
                for s in [&mut a.out, &mut a.q, &mut a.k, &mut a.v]
                    .into_iter()
                    .chain(a.dout.iter_mut())
                {
                    f(&mut s.buf);
                }
                for e in a
                    .bias
                    .iter_mut()
                    .chain(a.key_mask.iter_mut())
                    .chain(a.lse.iter_mut())
                    .chain(a.delta.iter_mut())
                {
                    e.rename_bufs(f);
                }
            }
            Body::Scatter(s) => {
                f(&mut s.out);
                for x in [&mut s.rows, &mut s.width, &mut s.n, &mut s.index] {
                    x.rename_bufs(f);
                }
                s.expr.rename_bufs(f);
            }
            Body::Scan(s) => {
                for (a, b, _) in s.init.iter_mut().chain(&mut s.update).chain(&mut s.finish) {
                    f(a);
                    f(b);
                }
                for c in s
                    .seq_in
                    .iter_mut()
                    .chain(&mut s.seq_save)
                    .chain(&mut s.seq_out)
                {
                    f(&mut c.seq);
                    f(&mut c.step);
                }
                for k in &mut s.body {
                    k.rename_bufs(f);
                }
            }
        }
    }

    /// The kernel with its buffers renamed to their positions in [`Kernel::buffers`] and
    /// its name dropped: kernels with equal shapes are equal (one function serves both).
    pub fn shape_key(&self) -> String {
        let args = self.buffers();
        let mut k = self.clone();
        k.name.clear();
        k.rename_bufs(&mut |b| *b = args.binary_search(b).unwrap_or(usize::MAX));
        format!("{:?}", k.body)
    }

    /// [`Kernel::shape_key`] with the stored type of each argument that has one
    /// ([`Buffer::quant`]): kernels that read or write a buffer in another type differ.
    /// The key under which backends share one generated function among kernels.
    pub fn lowering_key(&self, buffers: &[Buffer]) -> String {
        let mut key = self.shape_key();
        for (arg, b) in self.buffers().into_iter().enumerate() {
            if let Some(q) = buffers[b].quant {
                key.push_str(&format!(" arg{arg}:{}", q.name()));
            }
        }
        key
    }

    pub fn kind(&self) -> &'static str {
        match &self.body {
            Body::Map { .. } => "map",
            Body::Reduce { .. } => "reduce",
            Body::MatMul(_) => "matmul",
            Body::Attention(_) => "attention",
            Body::Scatter(_) => "scatter",
            Body::Scan(_) => "scan",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::Ix;

    #[test]
    fn multiples_are_proved_by_form() {
        let s = || Ix::Sym(0);
        // seq · 768, + 2304 · seq · batch, 2 · (seq · 2): multiples of 4.
        assert!(s().mul(Ix::c(768)).multiple_of(4));
        assert!(Ix::c(2304)
            .mul(s())
            .mul(Ix::Sym(1))
            .add(Ix::c(8))
            .multiple_of(4));
        assert!(Ix::Mul(Box::new(Ix::c(2)), Box::new(s().mul(Ix::c(2)))).multiple_of(4));
        assert!(s().multiple_of(1));
        // Not provable: a bare symbol, 6 · seq for 4, a sum with one odd term, a quotient.
        assert!(!s().multiple_of(4));
        assert!(!s().mul(Ix::c(6)).multiple_of(4));
        assert!(!s().mul(Ix::c(8)).add(Ix::c(2)).multiple_of(4));
        assert!(!s().mul(Ix::c(8)).div(Ix::c(2)).multiple_of(8));
    }
}

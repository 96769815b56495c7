//! The Kernel IR as text: one block per kernel with its loop structure, index and value
//! expressions. Used for `kernels.txt` in packages, `archc graph --after fuse` and
//! snapshot tests.

use super::{Body, BufKind, Expr, Ix, Kernel, Program};
use crate::graph::op::{BINARY_OPS, UNARY_OPS};
use std::fmt::Write;

pub fn print(p: &Program) -> String {
    let mut s = String::new();
    let _ = writeln!(s, "syms {}", p.syms.join(", "));
    for b in &p.buffers {
        let kind = match &b.kind {
            BufKind::Input(n) => format!("input {n}"),
            BufKind::Param(n) => format!("param {n}"),
            BufKind::Output(n) => format!("output {n}"),
            BufKind::State(n) => format!("state {n}"),
            BufKind::Temp => match p.slots.get(b.id).copied().flatten() {
                Some(slot) => format!("temp slot {slot}"),
                None => "temp".into(),
            },
        };
        let _ = writeln!(
            s,
            "buffer b{} {}[{}] {kind}",
            b.id,
            match (b.i64, b.quant) {
                (true, _) => "i64".to_string(),
                (false, None) => "f32".to_string(),
                (false, Some(q)) => q.name().to_ascii_lowercase(),
            },
            b.elems
        );
    }
    for (i, k) in p.kernels.iter().enumerate() {
        kernel(&mut s, i, k, 0);
    }
    s
}

fn kernel(s: &mut String, i: usize, k: &Kernel, depth: usize) {
    let pad = "  ".repeat(depth);
    let _ = write!(s, "{pad}kernel k{i} {} ", k.name);
    match &k.body {
        Body::Map {
            out,
            offset,
            extents,
            expr,
        } => {
            let _ = writeln!(
                s,
                "map [{}] parallel {} vector 1",
                list(extents),
                extents.len().saturating_sub(1)
            );
            let at = match offset.as_const() {
                Some(0) => String::new(),
                _ => format!("{} + ", ix(offset)),
            };
            let _ = writeln!(s, "{pad}  b{out}[{at}linear] = {}", e(expr));
        }
        Body::Reduce {
            out,
            extents,
            axis,
            op,
            expr,
        } => {
            let _ = writeln!(
                s,
                "reduce_{} [{}] axis {axis} parallel {axis}",
                format!("{op:?}").to_lowercase(),
                list(extents)
            );
            let _ = writeln!(s, "{pad}  b{out}[linear] = {}", e(expr));
        }
        Body::MatMul(m) => {
            let _ = writeln!(
                s,
                "matmul batch {} m {} n {} k {}{}",
                ix(&m.batch),
                ix(&m.m),
                ix(&m.n),
                ix(&m.k),
                match (m.transpose_a, m.transpose_b) {
                    (false, false) => "",
                    (false, true) => " transpose_b",
                    (true, false) => " transpose_a",
                    (true, true) => " transpose_a transpose_b",
                }
            );
            if m.whole_rows {
                let _ = writeln!(s, "{pad}  whole rows (the epilogue reads across each row)");
            }
            let _ = writeln!(
                s,
                "{pad}  a b{} + {} ld {}\n{pad}  b b{} + {} ld {}\n{pad}  out b{}",
                m.a.buf,
                ix(&m.a.offset),
                ix(&m.a.ld),
                m.b.buf,
                ix(&m.b.offset),
                ix(&m.b.ld),
                m.out
            );
            if let Some(ep) = &m.epilogue {
                let _ = writeln!(s, "{pad}  epilogue {}", e(ep));
            }
        }
        Body::Attention(a) => {
            let _ = writeln!(
                s,
                "attention{} sizes [{}] mask {:?} scale {}",
                a.part
                    .map(|p| format!(" grad {}", p.name()))
                    .unwrap_or_default(),
                list(&a.sizes),
                a.mask,
                a.scale
            );
            let dout = a.dout.iter().map(|d| ("dout", d));
            for (name, st) in [("q", &a.q), ("k", &a.k), ("v", &a.v), ("out", &a.out)]
                .into_iter()
                .chain(dout)
            {
                let _ = writeln!(
                    s,
                    "{pad}  {name} b{} + {} strides [{}]",
                    st.buf,
                    ix(&st.offset),
                    list(&st.strides)
                );
            }
            if let Some(b) = &a.bias {
                let _ = writeln!(s, "{pad}  bias {}", e(b));
            }
            if let Some(m) = &a.key_mask {
                let _ = writeln!(s, "{pad}  key_mask {}", e(m));
            }
            for (name, x) in [("lse", &a.lse), ("delta", &a.delta)] {
                if let Some(x) = x {
                    let _ = writeln!(s, "{pad}  {name} {}", e(x));
                }
            }
            if let Some(r) = &a.ring {
                let _ = writeln!(s, "{pad}  ring {} (key p at row p mod it)", ix(r));
            }
        }
        Body::Scatter(sc) => {
            let _ = writeln!(
                s,
                "scatter_add rows {} width {} n {} parallel columns",
                ix(&sc.rows),
                ix(&sc.width),
                ix(&sc.n)
            );
            let _ = writeln!(
                s,
                "{pad}  b{}[{}, v1] += {}",
                sc.out,
                ix(&sc.index),
                e(&sc.expr)
            );
        }
        Body::Scan(sc) => {
            let _ = writeln!(
                s,
                "scan steps {}{}{}",
                ix(&sc.steps),
                if sc.reverse { " reverse" } else { "" },
                sc.rows
                    .as_ref()
                    .map_or(String::new(), |r| format!(" rows {}", ix(&Ix::Sym(r.sym))))
            );
            for (a, b, n) in &sc.init {
                let _ = writeln!(s, "{pad}  init b{b} = b{a} ({})", ix(n));
            }
            for c in &sc.seq_in {
                let _ = writeln!(
                    s,
                    "{pad}  step b{} = b{}[:, t] ({} × {})",
                    c.step,
                    c.seq,
                    ix(&c.rows),
                    ix(&c.len)
                );
            }
            for c in &sc.seq_save {
                let _ = writeln!(s, "{pad}  save b{}[:, t] = b{}", c.seq, c.step);
            }
            for (j, bk) in sc.body.iter().enumerate() {
                kernel(s, j, bk, depth + 1);
            }
            for (a, b, n) in &sc.update {
                let _ = writeln!(s, "{pad}  update b{b} = b{a} ({})", ix(n));
            }
            for c in &sc.seq_out {
                let _ = writeln!(s, "{pad}  stack b{}[:, t] = b{}", c.seq, c.step);
            }
            for (a, b, n) in &sc.finish {
                let _ = writeln!(s, "{pad}  final b{b} = b{a} ({})", ix(n));
            }
        }
    }
}

fn list(v: &[Ix]) -> String {
    v.iter().map(ix).collect::<Vec<_>>().join(", ")
}

fn ix(x: &Ix) -> String {
    match x {
        Ix::Const(v) => v.to_string(),
        Ix::Var(k) => format!("v{k}"),
        Ix::Sym(k) => format!("s{k}"),
        Ix::Add(a, b) => format!("({} + {})", ix(a), ix(b)),
        Ix::Mul(a, b) => format!("{}*{}", ix(a), ix(b)),
        Ix::Div(a, b) => format!("({} / {})", ix(a), ix(b)),
        Ix::Rem(a, b) => format!("({} % {})", ix(a), ix(b)),
        Ix::Min(a, b) => format!("min({}, {})", ix(a), ix(b)),
        Ix::Max(a, b) => format!("max({}, {})", ix(a), ix(b)),
        Ix::Load(b, i) => format!("b{b}[{}]", ix(i)),
        Ix::FromF32(x) => format!("i64({})", e(x)),
    }
}

fn e(x: &Expr) -> String {
    match x {
        Expr::Const(v) => format!("{v:?}"),
        Expr::Load(b, i) => format!("b{b}[{}]", ix(i)),
        Expr::FromIx(i) => format!("f32({})", ix(i)),
        Expr::Unary(u, a) => {
            let name = UNARY_OPS
                .iter()
                .find(|(o, _)| o == u)
                .map_or("?", |(_, n)| n);
            format!("{name}({})", e(a))
        }
        Expr::Binary(b, x, y) => {
            let name = BINARY_OPS
                .iter()
                .find(|(o, _)| o == b)
                .map_or("?", |(_, n)| n);
            format!("{name}({}, {})", e(x), e(y))
        }
        Expr::Select(c, a, b) => format!("select({}, {}, {})", e(c), e(a), e(b)),
        Expr::IfLt(x, y, a, b) => format!("if({} < {}, {}, {})", ix(x), ix(y), e(a), e(b)),
    }
}

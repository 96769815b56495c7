//! Option-typed expressions → constructor values: `rope(theta = 500000)`, bare `learned`,
//! enum words such as `causal`, and sums of objectives or heads. A bare word here is looked
//! up only among the field's options, never as a name.

use super::eval::Value;
use super::record::RecordId;
use super::typed::Elaborator;
use crate::ast::{BinOp, Expr, ExprKind};
use crate::diag::{did_you_mean, Diagnostic};
use crate::source::Span;

/// The type of a constructor argument, with its range check.
#[derive(Clone, Copy)]
pub enum ArgTy {
    /// An integer ≥ 1.
    Count,
    /// An integer ≥ 0.
    Index,
    /// A float > 0.
    Positive,
    /// A float in [0, 1].
    Rate,
    /// Any finite float.
    Float,
    Bool,
    Words(&'static [&'static str]),
    /// The name of another model.
    Model,
}

pub struct CtorDef {
    pub name: &'static str,
    pub args: &'static [(&'static str, ArgTy)],
}

#[derive(Clone, Debug)]
pub enum ArgVal {
    Int(u64),
    Float(f64),
    Bool(bool),
    Word(&'static str),
    Model(String),
}

/// A constructor as written, arguments checked.
#[derive(Clone, Debug)]
pub struct CtorVal {
    pub name: &'static str,
    pub span: Span,
    pub args: Vec<(&'static str, ArgVal, Span)>,
}

impl CtorVal {
    fn arg(&self, name: &str) -> Option<&ArgVal> {
        self.args
            .iter()
            .find(|(n, _, _)| *n == name)
            .map(|(_, v, _)| v)
    }

    pub fn arg_span(&self, name: &str) -> Span {
        self.args
            .iter()
            .find(|(n, _, _)| *n == name)
            .map_or(self.span, |(_, _, s)| *s)
    }

    pub fn has(&self, name: &str) -> bool {
        self.arg(name).is_some()
    }

    pub fn int(&self, name: &str, default: u64) -> u64 {
        match self.arg(name) {
            Some(ArgVal::Int(i)) => *i,
            _ => default,
        }
    }

    pub fn float(&self, name: &str, default: f64) -> f64 {
        match self.arg(name) {
            Some(ArgVal::Float(f)) => *f,
            Some(ArgVal::Int(i)) => *i as f64,
            _ => default,
        }
    }

    pub fn bool(&self, name: &str, default: bool) -> bool {
        match self.arg(name) {
            Some(ArgVal::Bool(b)) => *b,
            _ => default,
        }
    }

    pub fn word(&self, name: &str, default: &'static str) -> &'static str {
        match self.arg(name) {
            Some(ArgVal::Word(w)) => w,
            _ => default,
        }
    }

    pub fn model(&self, name: &str) -> Option<&str> {
        match self.arg(name) {
            Some(ArgVal::Model(m)) => Some(m),
            _ => None,
        }
    }
}

fn names(defs: &[CtorDef]) -> String {
    let list: Vec<String> = defs.iter().map(|d| format!("`{}`", d.name)).collect();
    list.join(", ")
}

impl<'a> Elaborator<'a> {
    /// Evaluates `a + b + …` into its terms (objectives and heads combine this way).
    pub fn ctor_sum(
        &mut self,
        expr: &'a Expr,
        defs: &'static [CtorDef],
        what: &str,
        scope: &[RecordId],
    ) -> Option<Vec<CtorVal>> {
        match &expr.kind {
            ExprKind::Binary {
                op: BinOp::Add,
                lhs,
                rhs,
            } => {
                let l = self.ctor_sum(lhs, defs, what, scope);
                let r = self.ctor_sum(rhs, defs, what, scope);
                let mut l = l?;
                l.extend(r?);
                Some(l)
            }
            _ => self.ctor(expr, defs, what, scope).map(|c| vec![c]),
        }
    }

    /// Evaluates one constructor: a bare word or a call with named arguments.
    pub fn ctor(
        &mut self,
        expr: &'a Expr,
        defs: &'static [CtorDef],
        what: &str,
        scope: &[RecordId],
    ) -> Option<CtorVal> {
        let (callee, callee_span, args) = match &expr.kind {
            ExprKind::Paren(inner) => return self.ctor(inner, defs, what, scope),
            ExprKind::Name(n) => (n.as_str(), expr.span, &[][..]),
            ExprKind::Call { callee, args } => (callee.name.as_str(), callee.span, &args[..]),
            _ => {
                let d = Diagnostic::error(expr.span, format!("expected {what}"))
                    .with_label(format!("expected one of {}", names(defs)));
                self.diags.push(d);
                return None;
            }
        };
        let Some(def) = defs.iter().find(|d| d.name == callee) else {
            let d = Diagnostic::error(callee_span, format!("unknown {what} `{callee}`"))
                .with_label(format!("expected one of {}", names(defs)))
                .with_help_opt(did_you_mean(callee, defs.iter().map(|d| d.name)));
            self.diags.push(d);
            return None;
        };
        let mut out = CtorVal {
            name: def.name,
            span: expr.span,
            args: Vec::new(),
        };
        let mut ok = true;
        for arg in args {
            let Some(name) = &arg.name else {
                let first = def.args.first().map_or("name", |a| a.0);
                let d =
                    Diagnostic::error(arg.span, format!("arguments of `{}` are named", def.name))
                        .with_label("positional argument")
                        .with_help(format!("write `{first} = …`"));
                self.diags.push(d);
                ok = false;
                continue;
            };
            let Some(&(arg_name, ty)) = def.args.iter().find(|(n, _)| *n == name.name) else {
                let valid: Vec<String> = def.args.iter().map(|(n, _)| format!("`{n}`")).collect();
                let hint =
                    did_you_mean(&name.name, def.args.iter().map(|a| a.0)).unwrap_or_else(|| {
                        if valid.is_empty() {
                            format!("`{}` takes no arguments", def.name)
                        } else {
                            format!("`{}` takes {}", def.name, valid.join(", "))
                        }
                    });
                let d = Diagnostic::error(
                    name.span,
                    format!("`{}` has no argument `{}`", def.name, name.name),
                )
                .with_label("unknown argument")
                .with_help(hint);
                self.diags.push(d);
                ok = false;
                continue;
            };
            if let Some(prev) = out.args.iter().find(|a| a.0 == arg_name) {
                let d =
                    Diagnostic::error(name.span, format!("argument `{arg_name}` is given twice"))
                        .with_label("given again")
                        .with_related(prev.2, "first given here");
                self.diags.push(d);
                ok = false;
                continue;
            }
            match self.ctor_arg(&arg.value, ty, arg_name, scope) {
                Some(v) => out.args.push((arg_name, v, arg.value.span)),
                None => ok = false,
            }
        }
        ok.then_some(out)
    }

    fn ctor_arg(
        &mut self,
        expr: &'a Expr,
        ty: ArgTy,
        name: &str,
        scope: &[RecordId],
    ) -> Option<ArgVal> {
        match ty {
            ArgTy::Words(options) => {
                return self.word(expr, options, name).map(|(w, _)| ArgVal::Word(w))
            }
            ArgTy::Model => {
                return match &expr.kind {
                    ExprKind::Name(n) => Some(ArgVal::Model(n.clone())),
                    _ => {
                        self.diags.push(
                            Diagnostic::error(expr.span, "expected the name of a model")
                                .with_label("not a model name"),
                        );
                        None
                    }
                }
            }
            _ => {}
        }
        let value = self.eval(expr, scope)?;
        let checked = match (ty, &value) {
            (ArgTy::Bool, Value::Bool(b)) => Ok(ArgVal::Bool(*b)),
            (ArgTy::Bool, _) => Err("`true` or `false`".to_string()),
            (ArgTy::Count | ArgTy::Index, v) => {
                let min = if matches!(ty, ArgTy::Count) { 1 } else { 0 };
                match self.integral(v) {
                    Some(i) if i >= min => Ok(ArgVal::Int(i as u64)),
                    _ => Err(format!("an integer ≥ {min}")),
                }
            }
            (ArgTy::Positive, v) => match v.as_f64() {
                Some(f) if f > 0.0 => Ok(ArgVal::Float(f)),
                _ => Err("a number > 0".to_string()),
            },
            (ArgTy::Rate, v) => match v.as_f64() {
                Some(f) if (0.0..=1.0).contains(&f) => Ok(ArgVal::Float(f)),
                _ => Err("a number between 0 and 1".to_string()),
            },
            (ArgTy::Float, v) => v
                .as_f64()
                .map(ArgVal::Float)
                .ok_or_else(|| "a number".to_string()),
            (ArgTy::Words(_) | ArgTy::Model, _) => Err("an option".to_string()),
        };
        match checked {
            Ok(v) => Some(v),
            Err(expected) => {
                let d = Diagnostic::error(
                    expr.span,
                    format!("`{name}` must be {expected}, found {value}"),
                )
                .with_label(format!("expected {expected}"));
                self.diags.push(d);
                None
            }
        }
    }

    /// An integer value; floats are accepted when integral.
    pub fn integral(&self, v: &Value) -> Option<i64> {
        match v {
            Value::Int(i) => Some(*i),
            Value::Float(f) if f.fract() == 0.0 && f.abs() < 9.0e18 => Some(*f as i64),
            _ => None,
        }
    }

    /// A bare option word, looked up only among `options`.
    pub fn word(
        &mut self,
        expr: &'a Expr,
        options: &'static [&'static str],
        what: &str,
    ) -> Option<(&'static str, Span)> {
        let found = match &expr.kind {
            ExprKind::Name(n) => options.iter().find(|o| **o == n).map(|o| (*o, expr.span)),
            ExprKind::Paren(inner) => return self.word(inner, options, what),
            _ => None,
        };
        if found.is_none() {
            let list: Vec<String> = options.iter().map(|o| format!("`{o}`")).collect();
            let written = match &expr.kind {
                ExprKind::Name(n) => n.clone(),
                ExprKind::Call { callee, .. } => callee.name.clone(),
                _ => String::new(),
            };
            let d = Diagnostic::error(
                expr.span,
                format!("`{what}` must be one of {}", list.join(", ")),
            )
            .with_label("not an option here")
            .with_help_opt(did_you_mean(&written, options.iter().copied()));
            self.diags.push(d);
        }
        found
    }
}

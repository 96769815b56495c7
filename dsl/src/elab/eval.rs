//! Expressions → values: late-bound name lookup through the enclosing sections, the model
//! and file-level constants; exact integer arithmetic that widens to floats; the built-in
//! functions. Every failure is a diagnostic at the expression that caused it.

use super::record::{Binding, RecordId};
use super::typed::Elaborator;
use crate::ast::{BinOp, Expr, ExprKind};
use crate::diag::{did_you_mean, Diagnostic};
use crate::source::Span;

/// A scalar value.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    Int(i64),
    Float(f64),
    Bool(bool),
    Str(String),
}

impl Value {
    pub fn type_name(&self) -> &'static str {
        match self {
            Value::Int(_) => "an integer",
            Value::Float(_) => "a float",
            Value::Bool(_) => "a boolean",
            Value::Str(_) => "a string",
        }
    }

    pub fn as_f64(&self) -> Option<f64> {
        match self {
            Value::Int(i) => Some(*i as f64),
            Value::Float(f) => Some(*f),
            _ => None,
        }
    }
}

impl std::fmt::Display for Value {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Value::Int(i) => write!(f, "{i}"),
            Value::Float(x) => write!(f, "{x}"),
            Value::Bool(b) => write!(f, "{b}"),
            Value::Str(s) => write!(f, "{s:?}"),
        }
    }
}

/// The state of a binding's evaluation, so each is evaluated (and reported) once.
#[derive(Clone)]
pub enum Memo {
    InProgress,
    Done(Value),
    Failed,
}

/// Fields whose values are options or sections, never numbers: naming one inside
/// arithmetic is an error at the use, not at the field.
const NON_NUMERIC_FIELDS: &[&str] = &[
    "norm",
    "placement",
    "position",
    "dtype",
    "mask",
    "act",
    "share",
    "stack",
    "head",
    "objective",
    "discretization",
    "init",
    "inner",
    "generator",
];

const FUNCTIONS: &str = "`sqrt`, `ceil`, `floor`, `min`, `max` and `round_up`";

/// Every option word of every enum field, to explain a word used as a number.
const OPTION_WORDS: &[&str] = &[
    "causal",
    "bidirectional",
    "sliding",
    "gelu",
    "gelu_tanh",
    "relu",
    "silu",
    "swiglu",
    "geglu",
    "reglu",
    "layernorm",
    "rmsnorm",
    "pre",
    "post",
    "learned",
    "sinusoidal",
    "rope",
    "llama3",
    "relative_bias",
    "alibi",
    "none",
    "all",
    "f32",
    "bf16",
    "f16",
    "zoh",
    "bilinear",
    "s4d_lin",
    "s4d_inv",
    "legs",
    "linear",
    "mlp",
    "lm",
    "classifier",
    "next_token",
    "mlm",
    "nsp",
    "sop",
    "rtd",
    "span_corruption",
    "denoise",
    "dpo",
    "qkv",
    "half",
    "interleaved",
];

impl<'a> Elaborator<'a> {
    /// Evaluates an expression in a scope (outermost record first).
    pub fn eval(&mut self, expr: &'a Expr, scope: &[RecordId]) -> Option<Value> {
        let span = expr.span;
        let value = match &expr.kind {
            ExprKind::Int(i, _) => Value::Int(*i),
            ExprKind::Float(f, _) => Value::Float(*f),
            ExprKind::Str(s, _) => Value::Str(s.clone()),
            ExprKind::Bool(b) => Value::Bool(*b),
            ExprKind::Paren(inner) => return self.eval(inner, scope),
            ExprKind::Name(name) => return self.lookup(name, span, scope),
            ExprKind::Neg(inner) => match self.eval(inner, scope)? {
                Value::Int(i) => match i.checked_neg() {
                    Some(v) => Value::Int(v),
                    None => return self.fail(span, "arithmetic overflow"),
                },
                Value::Float(f) => Value::Float(-f),
                v => return self.fail(span, &format!("cannot negate {}", v.type_name())),
            },
            ExprKind::Binary { op, lhs, rhs } => {
                let l = self.eval(lhs, scope);
                let r = self.eval(rhs, scope);
                return self.binary(*op, l?, r?, span);
            }
            ExprKind::Call { callee, args } => {
                let mut values = Vec::new();
                for arg in args {
                    if let Some(name) = &arg.name {
                        let d = Diagnostic::error(
                            name.span,
                            format!("`{}` takes positional arguments", callee.name),
                        )
                        .with_label("named argument")
                        .with_help(format!("write `{}(…)` with values only", callee.name));
                        self.diags.push(d);
                        return None;
                    }
                    values.push(self.eval(&arg.value, scope));
                }
                let values: Option<Vec<Value>> = values.into_iter().collect();
                return self.call(&callee.name, callee.span, values?, span);
            }
            ExprKind::List(_) => {
                return self.fail_with(
                    span,
                    "a list is not a value here",
                    "lists are written only in `stack = [...]`",
                )
            }
        };
        Some(value)
    }

    fn fail(&mut self, span: Span, reason: &str) -> Option<Value> {
        self.diags.push(Diagnostic::error(span, reason));
        None
    }

    fn fail_with(&mut self, span: Span, reason: &str, help: &str) -> Option<Value> {
        self.diags
            .push(Diagnostic::error(span, reason).with_help(help));
        None
    }

    /// Resolves a name, innermost section first, then the model, then file constants.
    fn lookup(&mut self, name: &str, span: Span, scope: &[RecordId]) -> Option<Value> {
        for i in (0..scope.len()).rev() {
            let rec = &self.recs.all[scope[i]];
            if let Some(b) = rec.let_(name) {
                return self.eval_binding(scope[i], name, b, &scope[..=i]);
            }
            if let Some(b) = rec.field(name) {
                if NON_NUMERIC_FIELDS.contains(&name) {
                    let d = Diagnostic::error(span, format!("`{name}` is not a number"))
                        .with_label("used in arithmetic")
                        .with_related(b.span, "an option field, set here");
                    self.diags.push(d);
                    return None;
                }
                return self.eval_binding(scope[i], name, b, &scope[..=i]);
            }
        }
        if let Some(l) = self.prog.file_let(name) {
            let binding = Binding {
                expr: &l.value,
                span: l.name.span,
            };
            return self.eval_binding(usize::MAX, name, binding, &[]);
        }
        let mut visible: Vec<String> = Vec::new();
        for &id in scope {
            let rec = &self.recs.all[id];
            visible.extend(
                rec.lets
                    .iter()
                    .chain(rec.fields.iter())
                    .map(|(n, _)| n.clone()),
            );
        }
        visible.extend(self.prog.defs.lets.keys().cloned());
        let mut d = Diagnostic::error(span, format!("unknown name `{name}`"))
            .with_label("not defined here");
        if OPTION_WORDS.contains(&name) {
            d = d.with_help(format!("`{name}` is an option of a field, not a value: it can only be written as a field's value"));
        } else if self.prog.defs.blocks.contains_key(name)
            || self.prog.defs.models.contains_key(name)
        {
            d = d.with_help(format!("`{name}` is a block or model: it can only be named in `stack`, `generator` or as a base"));
        } else {
            d = d.with_help_opt(did_you_mean(name, visible.iter().map(String::as_str)));
        }
        self.diags.push(d);
        None
    }

    /// Evaluates a binding once; a binding that reaches itself is a cycle.
    pub fn eval_binding(
        &mut self,
        rec: RecordId,
        name: &str,
        b: Binding<'a>,
        scope: &[RecordId],
    ) -> Option<Value> {
        let key = (rec, name.to_string());
        match self.memo.get(&key) {
            Some(Memo::Done(v)) => return Some(v.clone()),
            Some(Memo::Failed) => return None,
            Some(Memo::InProgress) => {
                let d = Diagnostic::error(b.span, format!("`{name}` depends on itself"))
                    .with_label("defined in terms of itself")
                    .with_help("break the cycle by giving one of the values a number");
                self.diags.push(d);
                self.memo.insert(key, Memo::Failed);
                return None;
            }
            None => {}
        }
        self.memo.insert(key.clone(), Memo::InProgress);
        let result = self.eval(b.expr, scope);
        if matches!(self.memo.get(&key), Some(Memo::Failed)) {
            return None;
        }
        self.memo
            .insert(key, result.clone().map_or(Memo::Failed, Memo::Done));
        result
    }

    fn binary(&mut self, op: BinOp, l: Value, r: Value, span: Span) -> Option<Value> {
        use Value::{Float, Int};
        let result = match (op, &l, &r) {
            (BinOp::Add, Int(a), Int(b)) => a.checked_add(*b).map(Int),
            (BinOp::Sub, Int(a), Int(b)) => a.checked_sub(*b).map(Int),
            (BinOp::Mul, Int(a), Int(b)) => a.checked_mul(*b).map(Int),
            (BinOp::Div, _, Int(0)) => {
                return self.fail_with(span, "division by zero", "the divisor evaluates to 0")
            }
            (BinOp::Div, Int(a), Int(b)) if a % b == 0 => Some(Int(a / b)),
            (BinOp::Pow, Int(a), Int(b)) if *b >= 0 => u32::try_from(*b)
                .ok()
                .and_then(|e| a.checked_pow(e))
                .map(Int),
            _ => {
                let (Some(a), Some(b)) = (l.as_f64(), r.as_f64()) else {
                    let bad = if l.as_f64().is_none() { &l } else { &r };
                    return self.fail(
                        span,
                        &format!("`{}` needs numbers, found {}", op.symbol(), bad.type_name()),
                    );
                };
                if op == BinOp::Div && b == 0.0 {
                    return self.fail_with(span, "division by zero", "the divisor evaluates to 0");
                }
                let v = match op {
                    BinOp::Add => a + b,
                    BinOp::Sub => a - b,
                    BinOp::Mul => a * b,
                    BinOp::Div => a / b,
                    BinOp::Pow => a.powf(b),
                };
                Some(Float(v))
            }
        };
        match result {
            Some(Float(f)) if !f.is_finite() => {
                self.fail(span, "the result is not a finite number")
            }
            Some(v) => Some(v),
            None => self.fail(
                span,
                "arithmetic overflow: the result does not fit in 64 bits",
            ),
        }
    }

    fn call(&mut self, name: &str, name_span: Span, args: Vec<Value>, span: Span) -> Option<Value> {
        let arity = match name {
            "sqrt" | "ceil" | "floor" => 1..=1,
            "round_up" => 2..=2,
            "min" | "max" => 2..=usize::MAX,
            _ => {
                let mut d = Diagnostic::error(name_span, format!("unknown function `{name}`"))
                    .with_label("not a function");
                d = if OPTION_WORDS.contains(&name) {
                    d.with_help(format!(
                        "`{name}(…)` is an option of a field; it cannot be used in arithmetic"
                    ))
                } else {
                    d.with_help(format!("the functions are {FUNCTIONS}"))
                };
                self.diags.push(d);
                return None;
            }
        };
        if !arity.contains(&args.len()) {
            return self.fail(
                span,
                &format!(
                    "`{name}` takes {} argument(s), found {}",
                    arity.start(),
                    args.len()
                ),
            );
        }
        let mut nums = Vec::new();
        for a in &args {
            match a.as_f64() {
                Some(x) => nums.push(x),
                None => {
                    return self.fail(
                        span,
                        &format!("`{name}` needs numbers, found {}", a.type_name()),
                    )
                }
            }
        }
        let all_int = args.iter().all(|a| matches!(a, Value::Int(_)));
        let v = match name {
            "sqrt" if nums[0] < 0.0 => return self.fail(span, "square root of a negative number"),
            "sqrt" => Value::Float(nums[0].sqrt()),
            "ceil" => return self.int_value(nums[0].ceil(), span),
            "floor" => return self.int_value(nums[0].floor(), span),
            "min" | "max" if all_int => {
                let ints = args.iter().filter_map(|a| {
                    if let Value::Int(i) = a {
                        Some(*i)
                    } else {
                        None
                    }
                });
                Value::Int(
                    if name == "min" {
                        ints.min()
                    } else {
                        ints.max()
                    }
                    .unwrap_or(0),
                )
            }
            "min" => Value::Float(nums.iter().copied().fold(f64::INFINITY, f64::min)),
            "max" => Value::Float(nums.iter().copied().fold(f64::NEG_INFINITY, f64::max)),
            _ => {
                let multiple = nums[1];
                if multiple <= 0.0 || multiple.fract() != 0.0 {
                    return self.fail(span, "`round_up` needs a positive integer multiple");
                }
                return self.int_value((nums[0] / multiple).ceil() * multiple, span);
            }
        };
        Some(v)
    }

    fn int_value(&mut self, x: f64, span: Span) -> Option<Value> {
        if x.is_finite() && x.abs() < 9.0e18 {
            Some(Value::Int(x as i64))
        } else {
            self.fail(span, "the result does not fit in a 64-bit integer")
        }
    }
}

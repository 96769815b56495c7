//! Source text → AST and diagnostics. The pest grammar parses one item at a time so that a
//! bad item is reported and the next one is still read.

use crate::ast::*;
use crate::diag::Diagnostic;
use crate::lex;
use crate::source::{FileId, Span};
use pest::error::{ErrorVariant, InputLocation};
use pest::iterators::Pair;
use pest::Parser;
use std::collections::BTreeSet;

#[derive(pest_derive::Parser)]
#[grammar = "grammar.pest"]
struct ArchParser;

/// The parser recurses once per nesting level; the lexer bounds nesting, and this stack
/// holds the deepest input it lets through whatever stack the caller runs on.
const PARSER_STACK_BYTES: usize = 16 << 20;

/// Parses a whole file. Always returns a tree (of the items that parsed) and every
/// diagnostic found; never stops at the first error.
pub fn parse(file: FileId, text: &str) -> (File, Vec<Diagnostic>) {
    std::thread::scope(|scope| {
        let worker = std::thread::Builder::new()
            .stack_size(PARSER_STACK_BYTES)
            .spawn_scoped(scope, || parse_here(file, text));
        match worker {
            Ok(w) => w
                .join()
                .unwrap_or_else(|panic| std::panic::resume_unwind(panic)),
            // No thread to be had: parse on the caller's stack.
            Err(_) => parse_here(file, text),
        }
    })
}

fn parse_here(file: FileId, text: &str) -> (File, Vec<Diagnostic>) {
    let scan = lex::scan(file, text);
    let mut diags = scan.diagnostics;
    let mut out = File {
        items: Vec::new(),
        comments: scan.comments,
    };
    let starts = &scan.item_starts;
    if let Some(first) = scan.first_token {
        if starts.first().is_none_or(|&s| first < s) {
            let end = token_end(text, first);
            diags.push(
                Diagnostic::error(
                    Span::new(file, first..end),
                    format!("expected an item, found {}", describe_token(text, first)),
                )
                .with_label("expected `use`, `let`, `block` or `model`"),
            );
        }
    }
    for (i, &start) in starts.iter().enumerate() {
        let end = starts.get(i + 1).copied().unwrap_or(text.len());
        let lexical_error_at = diags
            .iter()
            .filter(|d| (start..end).contains(&(d.span.start as usize)))
            .map(|d| d.span.start as usize)
            .min();
        if scan.oversized.contains(&start) {
            continue;
        }
        let chunk = &text[start..end];
        let cx = Cx {
            file,
            offset: start,
        };
        // Tracking parse attempts is slow; only a failed item is parsed again with it.
        pest::set_error_detail(false);
        let parsed = ArchParser::parse(Rule::item_chunk, chunk).or_else(|_| {
            pest::set_error_detail(true);
            ArchParser::parse(Rule::item_chunk, chunk)
        });
        match parsed {
            Ok(pairs) => {
                for pair in pairs {
                    if let Some(item) = cx.item(pair) {
                        out.items.push(item);
                    }
                }
            }
            Err(err) => {
                let diag = cx.syntax_error(text, &err);
                if lexical_error_at.is_none_or(|at| (diag.span.start as usize) < at) {
                    diags.push(diag);
                }
            }
        }
    }
    (out, diags)
}

struct Cx {
    file: FileId,
    offset: usize,
}

impl Cx {
    /// The pair's span without the whitespace pest lets trail a non-atomic rule.
    fn span(&self, pair: &Pair<Rule>) -> Span {
        let s = pair.as_span();
        let end = s.start() + s.as_str().trim_end().len();
        Span::new(self.file, self.offset + s.start()..self.offset + end)
    }

    fn item(&self, pair: Pair<Rule>) -> Option<Item> {
        let span = self.span(&pair);
        match pair.as_rule() {
            Rule::use_item => {
                let lit = pair.into_inner().nth(1)?;
                let raw = lit.as_str().to_string();
                Some(Item::Use(UseItem {
                    path: unescape(&raw),
                    raw,
                    path_span: self.span(&lit),
                    span,
                }))
            }
            Rule::let_item => Some(Item::Let(self.let_item(pair))),
            Rule::block_item => {
                let mut inner = pair.into_inner().skip(1);
                let name = self.ident(inner.next()?);
                let members = self.body(inner.next()?);
                Some(Item::Block(BlockItem {
                    name,
                    members,
                    span,
                }))
            }
            Rule::model_item => {
                let mut inner = pair.into_inner().skip(1).peekable();
                let name = self.ident(inner.next()?);
                let base = if inner.peek().map(|p| p.as_rule()) == Some(Rule::ident) {
                    inner.next().map(|p| self.ident(p))
                } else {
                    None
                };
                let members = self.body(inner.next()?);
                Some(Item::Model(ModelItem {
                    name,
                    base,
                    members,
                    span,
                }))
            }
            _ => None,
        }
    }

    fn ident(&self, pair: Pair<Rule>) -> Ident {
        Ident {
            name: pair.as_str().to_string(),
            span: self.span(&pair),
        }
    }

    fn let_item(&self, pair: Pair<Rule>) -> LetItem {
        let span = self.span(&pair);
        let mut inner = pair.into_inner().skip(1);
        let name = inner.next().map(|p| self.ident(p));
        let value = inner.next().map(|p| self.expr(p));
        LetItem {
            name: name.unwrap_or_else(|| Ident {
                name: String::new(),
                span,
            }),
            value: value.unwrap_or(Expr {
                kind: ExprKind::Bool(false),
                span,
            }),
            span,
        }
    }

    fn body(&self, pair: Pair<Rule>) -> Vec<Member> {
        pair.into_inner().filter_map(|m| self.member(m)).collect()
    }

    fn member(&self, pair: Pair<Rule>) -> Option<Member> {
        let span = self.span(&pair);
        match pair.as_rule() {
            Rule::let_item => Some(Member::Let(self.let_item(pair))),
            Rule::section => {
                let mut inner = pair.into_inner();
                let name = self.ident(inner.next()?);
                let members = self.body(inner.next()?);
                Some(Member::Section(Section {
                    name,
                    members,
                    span,
                }))
            }
            Rule::field => {
                let mut inner = pair.into_inner();
                let path = inner.next()?.into_inner().map(|p| self.ident(p)).collect();
                let value = self.expr(inner.next()?);
                Some(Member::Field(Field { path, value, span }))
            }
            _ => None,
        }
    }

    fn expr(&self, pair: Pair<Rule>) -> Expr {
        let span = self.span(&pair);
        let kind = match pair.as_rule() {
            Rule::expr => return self.only_child(pair, span),
            Rule::sum | Rule::product => return self.left_assoc(pair),
            Rule::unary | Rule::pow_rhs => {
                let mut negs = 0;
                let mut result = None;
                for p in pair.into_inner() {
                    match p.as_rule() {
                        Rule::neg => negs += 1,
                        _ => result = Some(self.expr(p)),
                    }
                }
                let mut e = result.unwrap_or(Expr {
                    kind: ExprKind::Bool(false),
                    span,
                });
                for _ in 0..negs {
                    e = Expr {
                        kind: ExprKind::Neg(Box::new(e)),
                        span,
                    };
                }
                return e;
            }
            Rule::power => {
                let mut inner = pair.into_inner();
                let base = match inner.next() {
                    Some(p) => self.expr(p),
                    None => {
                        return Expr {
                            kind: ExprKind::Bool(false),
                            span,
                        }
                    }
                };
                match inner.nth(1) {
                    Some(rhs) => ExprKind::Binary {
                        op: BinOp::Pow,
                        lhs: Box::new(base),
                        rhs: Box::new(self.expr(rhs)),
                    },
                    None => return base,
                }
            }
            Rule::int => {
                let raw = pair.as_str().to_string();
                ExprKind::Int(raw.replace('_', "").parse().unwrap_or(i64::MAX), raw)
            }
            Rule::float => {
                let raw = pair.as_str().to_string();
                ExprKind::Float(raw.replace('_', "").parse().unwrap_or(f64::MAX), raw)
            }
            Rule::string => {
                let raw = pair.as_str().to_string();
                ExprKind::Str(unescape(&raw), raw)
            }
            Rule::boolean => ExprKind::Bool(pair.as_str() == "true"),
            Rule::ident => ExprKind::Name(pair.as_str().to_string()),
            Rule::paren => {
                let inner = pair.into_inner().next().map(|p| self.expr(p));
                ExprKind::Paren(Box::new(inner.unwrap_or(Expr {
                    kind: ExprKind::Bool(false),
                    span,
                })))
            }
            Rule::list => ExprKind::List(pair.into_inner().map(|p| self.expr(p)).collect()),
            Rule::call => {
                let mut inner = pair.into_inner();
                let callee = match inner.next() {
                    Some(p) => self.ident(p),
                    None => {
                        return Expr {
                            kind: ExprKind::Bool(false),
                            span,
                        }
                    }
                };
                let args = inner.map(|a| self.arg(a)).collect();
                ExprKind::Call { callee, args }
            }
            _ => ExprKind::Bool(false),
        };
        Expr { kind, span }
    }

    fn only_child(&self, pair: Pair<Rule>, span: Span) -> Expr {
        match pair.into_inner().next() {
            Some(p) => self.expr(p),
            None => Expr {
                kind: ExprKind::Bool(false),
                span,
            },
        }
    }

    fn left_assoc(&self, pair: Pair<Rule>) -> Expr {
        let span = self.span(&pair);
        let mut inner = pair.into_inner();
        let mut lhs = match inner.next() {
            Some(p) => self.expr(p),
            None => {
                return Expr {
                    kind: ExprKind::Bool(false),
                    span,
                }
            }
        };
        while let (Some(op), Some(rhs)) = (inner.next(), inner.next()) {
            let op = match op.as_str() {
                "+" => BinOp::Add,
                "-" => BinOp::Sub,
                "*" => BinOp::Mul,
                _ => BinOp::Div,
            };
            let rhs = self.expr(rhs);
            let span = lhs.span.to(rhs.span);
            lhs = Expr {
                kind: ExprKind::Binary {
                    op,
                    lhs: Box::new(lhs),
                    rhs: Box::new(rhs),
                },
                span,
            };
        }
        lhs
    }

    fn arg(&self, pair: Pair<Rule>) -> Arg {
        let span = self.span(&pair);
        let parts: Vec<_> = pair.into_inner().collect();
        match parts.len() {
            2 => {
                let mut it = parts.into_iter();
                let name = it.next().map(|p| self.ident(p));
                let value = it.next().map(|p| self.expr(p));
                Arg {
                    name,
                    value: value.unwrap_or(Expr {
                        kind: ExprKind::Bool(false),
                        span,
                    }),
                    span,
                }
            }
            _ => {
                let value = parts.into_iter().next().map(|p| self.expr(p));
                Arg {
                    name: None,
                    value: value.unwrap_or(Expr {
                        kind: ExprKind::Bool(false),
                        span,
                    }),
                    span,
                }
            }
        }
    }

    /// Rewrites a pest error into "unexpected X, expected Y".
    fn syntax_error(&self, text: &str, err: &pest::error::Error<Rule>) -> Diagnostic {
        let pos = match err.location {
            InputLocation::Pos(p) => p,
            InputLocation::Span((s, _)) => s,
        } + self.offset;
        let mut expected = BTreeSet::new();
        if let ErrorVariant::ParsingError { positives, .. } = &err.variant {
            for rule in positives {
                if let Some(d) = describe_rule(*rule) {
                    expected.insert(d.to_string());
                }
            }
        }
        if let Some(attempts) = err.parse_attempts() {
            for tok in attempts.expected_tokens() {
                if let Some(d) = describe_literal(&tok.to_string()) {
                    expected.insert(d);
                }
            }
        }
        if expected.contains("`}`") {
            expected.remove("`,`");
            expected.remove("an item");
        }
        if expected.contains("a value") {
            expected.remove("`(`");
            expected.remove("`[`");
        }
        let expected: Vec<_> = expected.into_iter().collect();
        let expected_text = match expected.len() {
            0 => "something else".to_string(),
            1 => expected[0].clone(),
            n => format!("{} or {}", expected[..n - 1].join(", "), expected[n - 1]),
        };
        let end = token_end(text, pos);
        let found = describe_token(text, pos);
        let mut d = Diagnostic::error(
            Span::new(self.file, pos..end),
            format!("unexpected {found}, expected {expected_text}"),
        )
        .with_label(format!("expected {expected_text}"));
        if found.contains("`;`") {
            d = d.with_help("fields need no terminator");
        }
        let at_line_start = text[..pos]
            .rsplit('\n')
            .next()
            .is_some_and(|l| l.trim().is_empty());
        let item_word = matches!(found.as_str(), "`model`" | "`block`" | "`use`");
        if item_word && at_line_start && expected_text.contains("`}`") {
            d = d.with_help("an earlier `{` is missing its `}`");
        }
        d
    }
}

fn describe_rule(rule: Rule) -> Option<&'static str> {
    Some(match rule {
        Rule::ident | Rule::path => "a name",
        Rule::expr | Rule::sum | Rule::product | Rule::unary | Rule::power | Rule::pow_rhs => {
            "a value"
        }
        Rule::float
        | Rule::int
        | Rule::string
        | Rule::boolean
        | Rule::list
        | Rule::call
        | Rule::paren => "a value",
        Rule::arg => "an argument",
        Rule::body => "`{`",
        Rule::kw_let => "`let`",
        Rule::kw_use | Rule::kw_block | Rule::kw_model => "an item",
        Rule::let_item | Rule::section | Rule::field => "a field",
        Rule::add_op | Rule::mul_op | Rule::pow_op => "an operator",
        Rule::EOI => "the end of the item",
        _ => return None,
    })
}

fn describe_literal(token: &str) -> Option<String> {
    matches!(
        token,
        "{" | "}" | "(" | ")" | "[" | "]" | "=" | "," | ":" | "."
    )
    .then(|| format!("`{token}`"))
}

fn token_end(text: &str, pos: usize) -> usize {
    let bytes = text.as_bytes();
    match bytes.get(pos) {
        None => pos,
        Some(b) if b.is_ascii_alphanumeric() || *b == b'_' => {
            pos + bytes[pos..]
                .iter()
                .take_while(|b| b.is_ascii_alphanumeric() || **b == b'_' || **b == b'.')
                .count()
        }
        Some(_) => pos + text[pos..].chars().next().map_or(1, char::len_utf8),
    }
}

fn describe_token(text: &str, pos: usize) -> String {
    if pos >= text.len() {
        return "end of file".into();
    }
    let tok = &text[pos..token_end(text, pos)];
    match tok.as_bytes()[0] {
        b'0'..=b'9' => format!("number `{tok}`"),
        b if b.is_ascii_alphabetic() || b == b'_' => format!("`{tok}`"),
        _ => format!("`{}`", tok.escape_default()),
    }
}

/// Rust's string escapes → the string value (the lexer has already checked them).
fn unescape(raw: &str) -> String {
    let inner = raw
        .strip_prefix('"')
        .and_then(|s| s.strip_suffix('"'))
        .unwrap_or(raw);
    let mut out = String::new();
    let mut chars = inner.chars();
    while let Some(c) = chars.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('n') => out.push('\n'),
            Some('r') => out.push('\r'),
            Some('t') => out.push('\t'),
            Some('0') => out.push('\0'),
            Some('x') => {
                let hex: String = chars.by_ref().take(2).collect();
                out.push(u8::from_str_radix(&hex, 16).map_or('\u{fffd}', char::from));
            }
            Some('u') => {
                let hex: String = chars.by_ref().skip(1).take_while(|&c| c != '}').collect();
                out.push(
                    u32::from_str_radix(&hex, 16)
                        .ok()
                        .and_then(char::from_u32)
                        .unwrap_or('\u{fffd}'),
                );
            }
            Some(c) => out.push(c),
            None => {}
        }
    }
    out
}

//! Parsed text → AST: items, members and expressions, each with its source span.
//!
//! The AST keeps what the formatter needs to reprint a file faithfully: numbers keep their
//! spelling, parentheses are kept, and comments are collected beside the tree.

use crate::source::Span;

/// One parsed file.
#[derive(Debug, Clone, Default)]
pub struct File {
    pub items: Vec<Item>,
    /// Every comment of the file, in order (the formatter re-attaches them).
    pub comments: Vec<Comment>,
}

#[derive(Debug, Clone)]
pub struct Comment {
    pub span: Span,
    pub text: String,
}

#[derive(Debug, Clone)]
pub enum Item {
    Use(UseItem),
    Let(LetItem),
    Block(BlockItem),
    Model(ModelItem),
}

impl Item {
    pub fn span(&self) -> Span {
        match self {
            Item::Use(u) => u.span,
            Item::Let(l) => l.span,
            Item::Block(b) => b.span,
            Item::Model(m) => m.span,
        }
    }
}

#[derive(Debug, Clone)]
pub struct Ident {
    pub name: String,
    pub span: Span,
}

/// `use "path"`
#[derive(Debug, Clone)]
pub struct UseItem {
    pub path: String,
    /// The literal as written, quotes included.
    pub raw: String,
    pub path_span: Span,
    pub span: Span,
}

/// `let NAME = EXPR`
#[derive(Debug, Clone)]
pub struct LetItem {
    pub name: Ident,
    pub value: Expr,
    pub span: Span,
}

/// `block NAME { MEMBER ... }`
#[derive(Debug, Clone)]
pub struct BlockItem {
    pub name: Ident,
    pub members: Vec<Member>,
    pub span: Span,
}

/// `model NAME [: BASE] { MEMBER ... }`
#[derive(Debug, Clone)]
pub struct ModelItem {
    pub name: Ident,
    pub base: Option<Ident>,
    pub members: Vec<Member>,
    pub span: Span,
}

#[derive(Debug, Clone)]
pub enum Member {
    Let(LetItem),
    Field(Field),
    Section(Section),
}

impl Member {
    pub fn span(&self) -> Span {
        match self {
            Member::Let(l) => l.span,
            Member::Field(f) => f.span,
            Member::Section(s) => s.span,
        }
    }
}

/// `a.b.c = EXPR`
#[derive(Debug, Clone)]
pub struct Field {
    pub path: Vec<Ident>,
    pub value: Expr,
    pub span: Span,
}

impl Field {
    pub fn path_span(&self) -> Span {
        self.path[0].span.to(self.path[self.path.len() - 1].span)
    }

    pub fn dotted(&self) -> String {
        self.path
            .iter()
            .map(|i| i.name.as_str())
            .collect::<Vec<_>>()
            .join(".")
    }
}

/// `name { MEMBER ... }`
#[derive(Debug, Clone)]
pub struct Section {
    pub name: Ident,
    pub members: Vec<Member>,
    pub span: Span,
}

#[derive(Debug, Clone)]
pub struct Expr {
    pub kind: ExprKind,
    pub span: Span,
}

#[derive(Debug, Clone)]
pub enum ExprKind {
    /// The value and the spelling as written (`128_256`).
    Int(i64, String),
    Float(f64, String),
    /// The unescaped value and the literal as written.
    Str(String, String),
    Bool(bool),
    Name(String),
    /// `f(a, b)` or `ctor(name = value, ...)`.
    Call {
        callee: Ident,
        args: Vec<Arg>,
    },
    List(Vec<Expr>),
    Neg(Box<Expr>),
    Binary {
        op: BinOp,
        lhs: Box<Expr>,
        rhs: Box<Expr>,
    },
    Paren(Box<Expr>),
}

#[derive(Debug, Clone)]
pub struct Arg {
    pub name: Option<Ident>,
    pub value: Expr,
    pub span: Span,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BinOp {
    Add,
    Sub,
    Mul,
    Div,
    Pow,
}

impl BinOp {
    pub fn symbol(self) -> &'static str {
        match self {
            BinOp::Add => "+",
            BinOp::Sub => "-",
            BinOp::Mul => "*",
            BinOp::Div => "/",
            BinOp::Pow => "^",
        }
    }
}

//! Source text → comments, lexical diagnostics and item boundaries.
//!
//! A hand-written scan over Rust's token rules runs before the pest grammar. It owns the
//! lexical errors (so they get precise messages), collects comments for the formatter, and
//! finds where each top-level item starts so the parser can recover after a bad item.

use crate::ast::Comment;
use crate::diag::Diagnostic;
use crate::source::{FileId, Span};

pub struct Scan {
    pub comments: Vec<Comment>,
    pub diagnostics: Vec<Diagnostic>,
    /// Byte offsets where items start (a `use`, `let`, `block` or `model` keyword at depth 0,
    /// or `use`, `block`, `model` at the start of a line).
    pub item_starts: Vec<usize>,
    /// The first non-comment token, if any.
    pub first_token: Option<usize>,
    /// Items too large or too deeply nested to parse safely, by start offset.
    pub oversized: Vec<usize>,
}

/// Limits that keep every later stage's recursion bounded, whatever the input.
const MAX_ITEM_TOKENS: usize = 20_000;
const MAX_NESTING: i64 = 64;
const MAX_OPERATORS: usize = 512;
/// `^` is right-associative, so each one nests the parse one level deeper.
const MAX_POWERS: usize = 64;

pub fn scan(file: FileId, text: &str) -> Scan {
    let mut s = Scanner {
        file,
        bytes: text.as_bytes(),
        text,
        pos: 0,
        out: Scan {
            comments: vec![],
            diagnostics: vec![],
            item_starts: vec![],
            first_token: None,
            oversized: vec![],
        },
        tokens: 0,
        operators: 0,
        powers: 0,
        max_depth: 0,
    };
    s.run();
    s.end_item();
    s.out
}

struct Scanner<'a> {
    file: FileId,
    bytes: &'a [u8],
    text: &'a str,
    pos: usize,
    out: Scan,
    /// Counters for the item being scanned.
    tokens: usize,
    operators: usize,
    powers: usize,
    max_depth: i64,
}

fn is_ident_start(b: u8) -> bool {
    b.is_ascii_alphabetic() || b == b'_'
}

fn is_ident_char(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'_'
}

impl Scanner<'_> {
    fn span(&self, start: usize, end: usize) -> Span {
        Span::new(self.file, start..end)
    }

    fn peek(&self, ahead: usize) -> u8 {
        self.bytes.get(self.pos + ahead).copied().unwrap_or(0)
    }

    fn error(&self, start: usize, end: usize, reason: &str) -> Diagnostic {
        Diagnostic::error(self.span(start, end), reason)
    }

    fn push(&mut self, d: Diagnostic) {
        self.out.diagnostics.push(d);
    }

    fn run(&mut self) {
        let mut depth: i64 = 0;
        while self.pos < self.bytes.len() {
            let b = self.bytes[self.pos];
            let start = self.pos;
            match b {
                b' ' | b'\t' | b'\r' | b'\n' => self.pos += 1,
                b'/' if self.peek(1) == b'/' => self.line_comment(),
                b'/' if self.peek(1) == b'*' => self.block_comment(),
                _ => {
                    self.out.first_token.get_or_insert(start);
                    self.tokens += 1;
                    match b {
                        b'"' => self.string(),
                        b'0'..=b'9' => self.number(),
                        b if is_ident_start(b) => {
                            if self.ident(depth) {
                                depth = 0;
                            }
                        }
                        b'{' | b'(' | b'[' => {
                            depth += 1;
                            self.max_depth = self.max_depth.max(depth);
                            self.pos += 1;
                        }
                        b'+' | b'-' | b'*' | b'/' | b'^' => {
                            self.operators += 1;
                            self.powers += usize::from(b == b'^');
                            self.pos += 1;
                        }
                        b'}' | b')' | b']' => {
                            depth = (depth - 1).max(0);
                            self.pos += 1;
                        }
                        b'=' | b',' | b'.' | b':' => self.pos += 1,
                        _ => self.bad_char(),
                    }
                }
            }
        }
    }

    /// Closes the item being scanned: records it as oversized if it passes a limit.
    fn end_item(&mut self) {
        if let Some(&start) = self.out.item_starts.last() {
            let too_big = self.tokens > MAX_ITEM_TOKENS
                || self.max_depth > MAX_NESTING
                || self.operators > MAX_OPERATORS
                || self.powers > MAX_POWERS;
            if too_big {
                let end = start
                    + self.text[start..]
                        .find(|c: char| c.is_whitespace())
                        .unwrap_or(0);
                let d = self.error(start, end, "item too large or too deeply nested to read").with_label("this item").with_help(format!(
                    "an item may hold at most {MAX_ITEM_TOKENS} tokens, {MAX_NESTING} levels of brackets, {MAX_OPERATORS} operators and {MAX_POWERS} `^`"
                ));
                self.push(d);
                self.out.oversized.push(start);
            }
        }
        self.tokens = 0;
        self.operators = 0;
        self.powers = 0;
        self.max_depth = 0;
    }

    /// Scans a word; returns whether it starts a new item.
    fn ident(&mut self, depth: i64) -> bool {
        let start = self.pos;
        while self.pos < self.bytes.len() && is_ident_char(self.bytes[self.pos]) {
            self.pos += 1;
        }
        let word = &self.text[start..self.pos];
        let at_line_start = self.text[..start]
            .rsplit('\n')
            .next()
            .is_some_and(|l| l.is_empty());
        let item_kw = matches!(word, "use" | "let" | "block" | "model");
        let starts = item_kw && (depth == 0 || (at_line_start && word != "let"));
        if starts {
            self.end_item();
            self.out.item_starts.push(start);
            self.tokens = 1;
        }
        starts
    }

    fn line_comment(&mut self) {
        let start = self.pos;
        let end = self.text[start..]
            .find('\n')
            .map_or(self.bytes.len(), |i| start + i);
        let text = &self.text[start..end];
        let is_doc =
            (text.starts_with("///") && !text.starts_with("////")) || text.starts_with("//!");
        if is_doc {
            let d = self
                .error(start, start + 3, "doc comments are not allowed")
                .with_label("a doc comment")
                .with_help(
                    "write `//` (inside `model! { }` a doc comment would become an attribute)",
                );
            self.push(d);
        }
        self.push_comment(start, end);
        self.pos = end;
    }

    fn block_comment(&mut self) {
        let start = self.pos;
        let rest = &self.text[start..];
        let is_doc =
            (rest.starts_with("/**") && !rest.starts_with("/***") && !rest.starts_with("/**/"))
                || rest.starts_with("/*!");
        if is_doc {
            let d = self
                .error(start, start + 3, "doc comments are not allowed")
                .with_label("a doc comment")
                .with_help(
                    "write `/*` (inside `model! { }` a doc comment would become an attribute)",
                );
            self.push(d);
        }
        let mut nesting = 0usize;
        while self.pos < self.bytes.len() {
            if self.peek(0) == b'/' && self.peek(1) == b'*' {
                nesting += 1;
                self.pos += 2;
            } else if self.peek(0) == b'*' && self.peek(1) == b'/' {
                nesting -= 1;
                self.pos += 2;
                if nesting == 0 {
                    self.push_comment(start, self.pos);
                    return;
                }
            } else {
                self.pos += 1;
            }
        }
        let d = self
            .error(start, start + 2, "unterminated block comment")
            .with_label("this comment is never closed")
            .with_help("close it with `*/` (block comments nest)");
        self.push(d);
        self.pos = self.bytes.len();
    }

    fn push_comment(&mut self, start: usize, end: usize) {
        // Slicing at `end` is safe: comments end at ASCII bytes or at the end of text.
        let text = self.text[start..end].trim_end().to_string();
        self.out.comments.push(Comment {
            span: self.span(start, end),
            text,
        });
    }

    fn string(&mut self) {
        let start = self.pos;
        self.pos += 1;
        while self.pos < self.bytes.len() {
            match self.bytes[self.pos] {
                b'"' => {
                    self.pos += 1;
                    return;
                }
                b'\\' => self.escape(),
                b if b >= 0x80 => self.bad_char(),
                _ => self.pos += 1,
            }
        }
        let d = self
            .error(start, start + 1, "unterminated string")
            .with_label("this string is never closed");
        self.push(d);
    }

    fn escape(&mut self) {
        let start = self.pos;
        let next = self.peek(1);
        let len = match next {
            b'n' | b'r' | b't' | b'\\' | b'0' | b'"' | b'\'' => 2,
            b'x' if self.peek(2).is_ascii_hexdigit() && self.peek(3).is_ascii_hexdigit() => 4,
            b'u' if self.peek(2) == b'{' => match self.text[self.pos..].find('}') {
                Some(close) => close + 1,
                None => 0,
            },
            _ => 0,
        };
        if len == 0 {
            let end = (start + 2).min(self.bytes.len());
            let end = if self.text.is_char_boundary(end) {
                end
            } else {
                start + 1
            };
            let d = self.error(start, end, "unknown escape in string").with_label("not a valid escape").with_help("escapes are `\\n`, `\\r`, `\\t`, `\\\\`, `\\0`, `\\\"`, `\\'`, `\\x7F` and `\\u{…}`");
            self.push(d);
            self.pos += 1;
        } else {
            self.pos += len;
        }
    }

    fn number(&mut self) {
        let start = self.pos;
        self.digits();
        let mut is_float = false;
        if self.peek(0) == b'.' && self.peek(1).is_ascii_digit() {
            is_float = true;
            self.pos += 1;
            self.digits();
        }
        if matches!(self.peek(0), b'e' | b'E') {
            let sign = usize::from(matches!(self.peek(1), b'+' | b'-'));
            if self.peek(1 + sign).is_ascii_digit() {
                is_float = true;
                self.pos += 1 + sign;
                self.digits();
            }
        }
        if is_ident_start(self.peek(0)) {
            let mut end = self.pos;
            while end < self.bytes.len() && is_ident_char(self.bytes[end]) {
                end += 1;
            }
            let d = self
                .error(start, end, "a number may not touch a letter")
                .with_label("number and name run together")
                .with_help("put a space or an operator between them, e.g. `1000 * d_model`");
            self.push(d);
            self.pos = end;
            return;
        }
        let literal: String = self.text[start..self.pos]
            .chars()
            .filter(|&c| c != '_')
            .collect();
        if is_float {
            if literal.parse::<f64>().map_or(true, |v| !v.is_finite()) {
                let d = self
                    .error(start, self.pos, "float literal out of range")
                    .with_label("not a finite 64-bit float");
                self.push(d);
            }
        } else if literal.parse::<i64>().is_err() {
            let d = self
                .error(start, self.pos, "integer literal too large")
                .with_label("does not fit in 64 bits")
                .with_help(format!("integers are 64-bit: at most {}", i64::MAX));
            self.push(d);
        }
    }

    fn digits(&mut self) {
        while self.pos < self.bytes.len()
            && (self.bytes[self.pos].is_ascii_digit() || self.bytes[self.pos] == b'_')
        {
            self.pos += 1;
        }
    }

    fn bad_char(&mut self) {
        let start = self.pos;
        if self.bytes[start] == b'\'' {
            // Report 'text' once, not once per quote.
            let line_end = self.text[start + 1..]
                .find('\n')
                .map_or(self.bytes.len(), |i| start + 1 + i);
            if let Some(close) = self.text[start + 1..line_end].find('\'') {
                let end = start + close + 2;
                let d = self.error(start, end, "single quotes are not part of the language")
                    .with_label("single-quoted")
                    .with_help("strings are written with double quotes; option words need no quotes at all");
                self.push(d);
                self.pos = end;
                return;
            }
        }
        let ch = self.text[start..].chars().next().unwrap_or('\u{fffd}');
        let end = start + ch.len_utf8();
        let (reason, help) = match ch {
            '#' => (
                "`#` is not part of the language",
                "comments are written `// …`",
            ),
            '\'' => (
                "single quotes are not part of the language",
                "strings are written with double quotes: `\"…\"`",
            ),
            ';' => (
                "unexpected `;`",
                "fields need no terminator; separate them by spaces or newlines",
            ),
            c if !c.is_ascii() => (
                "non-ASCII character outside a comment",
                "only comments may hold non-ASCII text",
            ),
            _ => (
                "unexpected character",
                "this character is not part of the language",
            ),
        };
        let d = self
            .error(start, end, reason)
            .with_label(format!("`{}`", ch.escape_default()))
            .with_help(help);
        self.push(d);
        self.pos = end;
    }
}

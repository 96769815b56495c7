//! Source text → canonical source text (`archc fmt`, ARCH_LANGUAGE.md §4a).
//!
//! The file is parsed and reprinted from the AST; comments, which live beside the tree in
//! `File.comments`, are woven back in by position. A file that does not parse is never
//! formatted: its error diagnostics are returned instead.
//!
//! Where a comment goes:
//! - on its own line(s) before a member or item: stays there, at that member's indentation;
//! - after a member on the same line, or inside its expression: at the end of its line;
//! - after `{` on the same line, or between a section's name and `{`: on the `{` line;
//! - before a `}`: stays at the end of the body.
//!
//! A `//` comment ends its line, so a comment that would follow one on the same output line
//! is written on the next line instead (where it reads as the next member's leading comment).

use crate::ast::{Comment, Expr, ExprKind, Field, Item, LetItem, Member, Section};
use crate::diag::{Diagnostic, Severity};
use crate::parse::parse;
use crate::source::FileId;

const INDENT: &str = "    ";

/// Formats a whole file, or returns its errors if it does not parse.
pub fn format(text: &str) -> Result<String, Vec<Diagnostic>> {
    let (file, diags) = parse(FileId(0), text);
    let errors: Vec<Diagnostic> = diags
        .into_iter()
        .filter(|d| d.severity == Severity::Error)
        .collect();
    if !errors.is_empty() {
        return Err(errors);
    }
    let mut p = Printer {
        text,
        comments: &file.comments,
        next: 0,
        last_end: 0,
        fresh: true,
        out: String::new(),
    };
    p.file(&file.items);
    Ok(p.out)
}

struct Printer<'a> {
    text: &'a str,
    comments: &'a [Comment],
    /// Index of the first comment not yet written.
    next: usize,
    /// End of the last piece of source written (member, item or comment), for blank lines.
    last_end: usize,
    /// Nothing written yet in this file or body: no blank line may come next.
    fresh: bool,
    out: String,
}

impl<'a> Printer<'a> {
    fn file(&mut self, items: &[Item]) {
        let mut after_item = false;
        for item in items {
            let start = item.span().start as usize;
            after_item = self.file_comments(start, after_item);
            if after_item {
                self.blank_line();
            } else {
                self.blank_if_gap(start);
            }
            self.item(item);
            after_item = true;
        }
        self.file_comments(self.text.len(), after_item);
    }

    /// Writes the comments that end before `before` at the top level; returns whether the
    /// last thing written is still an item. The first comment after an item is separated
    /// from it by a blank line, as the item it introduces would be.
    fn file_comments(&mut self, before: usize, mut after_item: bool) -> bool {
        while let Some(c) = self.pending_ending_by(before) {
            if after_item {
                self.blank_line();
            } else {
                self.blank_if_gap(c.span.start as usize);
            }
            after_item = false;
            self.take();
            self.line(0, &comment_text(c));
            self.last_end = c.span.end as usize;
        }
        after_item
    }

    fn item(&mut self, item: &Item) {
        match item {
            Item::Use(u) => self.code_line(0, format!("use {}", u.raw), u.span.end as usize),
            Item::Let(l) => self.code_line(0, let_text(l), l.span.end as usize),
            Item::Block(b) => {
                let header = format!("block {}", b.name.name);
                self.braced(
                    0,
                    header,
                    b.name.span.end as usize,
                    &b.members,
                    b.span.end as usize,
                );
            }
            Item::Model(m) => {
                let mut header = format!("model {}", m.name.name);
                let mut after = m.name.span.end as usize;
                if let Some(base) = &m.base {
                    header = format!("{header} : {}", base.name);
                    after = base.span.end as usize;
                }
                self.braced(0, header, after, &m.members, m.span.end as usize);
            }
        }
    }

    /// Writes `header {`, the members one per line at `depth + 1`, and `}`. `after` is where
    /// to look for the `{`; `end` is just past the `}`.
    fn braced(
        &mut self,
        depth: usize,
        header: String,
        after: usize,
        members: &[Member],
        end: usize,
    ) {
        if members.is_empty() && !self.pending_before(end) {
            return self.code_line(depth, format!("{header} {{ }}"), end);
        }
        let brace = self.brace_after(after);
        let mut inline = self.take_starting_before(brace);
        inline.extend(self.take_trailing(brace + 1));
        self.last_end = inline
            .last()
            .map_or(brace + 1, |c| (c.span.end as usize).max(brace + 1));
        self.finish_line(depth, format!("{header} {{"), inline, depth + 1);
        self.fresh = true;
        for m in members {
            let start = m.span().start as usize;
            self.own_line_comments(start, depth + 1);
            self.blank_if_gap(start);
            self.member(m, depth + 1);
        }
        self.own_line_comments(end.saturating_sub(1), depth + 1);
        self.code_line(depth, "}".to_string(), end);
    }

    fn member(&mut self, m: &Member, depth: usize) {
        match m {
            Member::Let(l) => self.code_line(depth, let_text(l), l.span.end as usize),
            Member::Field(f) => self.code_line(depth, field_text(f), f.span.end as usize),
            Member::Section(s) if self.fits_one_line(s) => {
                self.code_line(depth, one_line_section(s), s.span.end as usize)
            }
            Member::Section(s) => {
                let (after, end) = (s.name.span.end as usize, s.span.end as usize);
                self.braced(depth, s.name.name.clone(), after, &s.members, end);
            }
        }
    }

    /// A section holding no section and no comment is written on one line.
    fn fits_one_line(&self, s: &Section) -> bool {
        let holds_section = s.members.iter().any(|m| matches!(m, Member::Section(_)));
        !holds_section && !self.pending_before(s.span.end as usize)
    }

    /// Writes one line of code ending in source at `end`, followed by the comments inside it
    /// and those after it on the same source line.
    fn code_line(&mut self, depth: usize, code: String, end: usize) {
        let end = self.code_end(end);
        let mut inline = self.take_starting_before(end);
        inline.extend(self.take_trailing(end));
        self.last_end = inline
            .last()
            .map_or(end, |c| (c.span.end as usize).max(end));
        self.finish_line(depth, code, inline, depth);
    }

    /// Writes `code` with `comments` after it, two spaces apart; comments that would follow a
    /// `//` comment go on their own lines at `rest_depth`.
    fn finish_line(
        &mut self,
        depth: usize,
        code: String,
        comments: Vec<&Comment>,
        rest_depth: usize,
    ) {
        let mut line = code;
        let mut rest = Vec::new();
        let mut closed = false;
        for c in comments {
            if closed {
                rest.push(c);
                continue;
            }
            line.push_str("  ");
            line.push_str(&comment_text(c));
            closed = c.text.starts_with("//");
        }
        self.line(depth, &line);
        for c in rest {
            self.line(rest_depth, &comment_text(c));
        }
    }

    /// Writes, each on its own line, the comments that end before `before`.
    fn own_line_comments(&mut self, before: usize, depth: usize) {
        while let Some(c) = self.pending_ending_by(before) {
            self.blank_if_gap(c.span.start as usize);
            self.take();
            self.line(depth, &comment_text(c));
            self.last_end = c.span.end as usize;
        }
    }

    fn pending(&self) -> Option<&'a Comment> {
        self.comments.get(self.next)
    }

    fn pending_ending_by(&self, before: usize) -> Option<&'a Comment> {
        self.pending().filter(|c| c.span.end as usize <= before)
    }

    fn pending_before(&self, end: usize) -> bool {
        self.pending()
            .is_some_and(|c| (c.span.start as usize) < end)
    }

    fn take(&mut self) {
        self.next += 1;
    }

    /// Takes the comments that start before `end` (those inside a member or a header).
    fn take_starting_before(&mut self, end: usize) -> Vec<&'a Comment> {
        let mut taken = Vec::new();
        while let Some(c) = self.pending().filter(|c| (c.span.start as usize) < end) {
            self.take();
            taken.push(c);
        }
        taken
    }

    /// Takes the comments that follow `from` on the same line with only spaces or commas
    /// before them.
    fn take_trailing(&mut self, from: usize) -> Vec<&'a Comment> {
        let mut taken = Vec::new();
        let mut pos = from;
        while let Some(c) = self.pending() {
            let gap = self.text.get(pos..c.span.start as usize).unwrap_or("\n");
            if !gap.chars().all(|ch| matches!(ch, ' ' | '\t' | ',')) {
                break;
            }
            self.take();
            pos = c.span.end as usize;
            taken.push(c);
        }
        taken
    }

    /// `end` moved back over whitespace and comments: the parser's spans of expressions
    /// (hence of fields and `let`s) take in the whitespace and comments that follow them.
    fn code_end(&self, end: usize) -> usize {
        let mut pos = end;
        loop {
            pos = self.text.get(..pos).map_or(pos, |t| t.trim_end().len());
            match self
                .comments
                .binary_search_by_key(&pos, |c| c.span.end as usize)
            {
                Ok(i) => pos = self.comments[i].span.start as usize,
                Err(_) => return pos,
            }
        }
    }

    /// The position of the first `{` at or after `from` outside comments.
    fn brace_after(&self, from: usize) -> usize {
        let bytes = self.text.as_bytes();
        let mut pos = from;
        while pos < bytes.len() {
            if let Some(c) = self.comments[self.next..]
                .iter()
                .find(|c| c.span.start as usize == pos)
            {
                pos = c.span.end as usize;
            } else if bytes[pos] == b'{' {
                return pos;
            } else {
                pos += 1;
            }
        }
        from
    }

    /// Keeps one blank line where the source has at least one between the last piece
    /// written and `start`.
    fn blank_if_gap(&mut self, start: usize) {
        let gap = self.text.get(self.last_end..start).unwrap_or("");
        if gap.matches('\n').count() >= 2 {
            self.blank_line();
        }
    }

    fn blank_line(&mut self) {
        if !self.fresh {
            self.out.push('\n');
            self.fresh = true;
        }
    }

    fn line(&mut self, depth: usize, content: &str) {
        for _ in 0..depth {
            self.out.push_str(INDENT);
        }
        self.out.push_str(content);
        self.out.push('\n');
        self.fresh = false;
    }
}

/// A comment as written, without trailing whitespace on any of its lines.
fn comment_text(c: &Comment) -> String {
    c.text
        .split('\n')
        .map(str::trim_end)
        .collect::<Vec<_>>()
        .join("\n")
}

fn let_text(l: &LetItem) -> String {
    format!("let {} = {}", l.name.name, expr_text(&l.value))
}

fn field_text(f: &Field) -> String {
    format!("{} = {}", f.dotted(), expr_text(&f.value))
}

fn member_text(m: &Member) -> String {
    match m {
        Member::Let(l) => let_text(l),
        Member::Field(f) => field_text(f),
        Member::Section(s) => one_line_section(s),
    }
}

/// `name { a = 1  b = 2 }`, or `name { }`.
fn one_line_section(s: &Section) -> String {
    if s.members.is_empty() {
        return format!("{} {{ }}", s.name.name);
    }
    let members: Vec<String> = s.members.iter().map(member_text).collect();
    format!("{} {{ {} }}", s.name.name, members.join("  "))
}

pub(crate) fn expr_text(e: &Expr) -> String {
    let mut out = String::new();
    write_expr(&mut out, e);
    out
}

fn write_expr(out: &mut String, e: &Expr) {
    match &e.kind {
        ExprKind::Int(_, raw) | ExprKind::Float(_, raw) | ExprKind::Str(_, raw) => {
            out.push_str(raw)
        }
        ExprKind::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
        ExprKind::Name(n) => out.push_str(n),
        ExprKind::Call { callee, args } => {
            out.push_str(&callee.name);
            out.push('(');
            for (i, arg) in args.iter().enumerate() {
                if i > 0 {
                    out.push_str(", ");
                }
                if let Some(name) = &arg.name {
                    out.push_str(&name.name);
                    out.push_str(" = ");
                }
                write_expr(out, &arg.value);
            }
            out.push(')');
        }
        ExprKind::List(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push_str(", ");
                }
                write_expr(out, item);
            }
            out.push(']');
        }
        ExprKind::Neg(inner) => {
            out.push('-');
            write_expr(out, inner);
        }
        ExprKind::Binary { op, lhs, rhs } => {
            write_expr(out, lhs);
            out.push(' ');
            out.push_str(op.symbol());
            out.push(' ');
            write_expr(out, rhs);
        }
        ExprKind::Paren(inner) => {
            out.push('(');
            write_expr(out, inner);
            out.push(')');
        }
    }
}

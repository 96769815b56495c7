//! Rust tokens of `model! { … }` → `.arch` source text, with a map from byte ranges back to token spans.
//!
//! The `.arch` lexer follows Rust's token rules, so printing each token as written gives text
//! the front end reads exactly as it would read a file. Where the compiler reports token
//! positions (Rust 1.88+), the text keeps the lines and columns of the macro body (minus its
//! common indentation), so `SOURCE` reads like the spec as written; elsewhere tokens are
//! separated by one space. Comments never reach a macro, so they are simply absent; doc
//! comments arrive as `#[doc = "…"]` attributes and are reported here, not passed on.

use proc_macro2::{Delimiter, LineColumn, Spacing, Span, TokenStream, TokenTree};
use std::ops::Range;

/// The text of a macro body and where each of its tokens came from.
pub struct SourceText {
    pub text: String,
    /// One entry per printed token, in text order: its byte range in `text` and its span.
    tokens: Vec<(Range<usize>, Span)>,
    /// Doc comments found in the body (they are left out of `text`).
    pub doc_comments: Vec<Span>,
}

/// One printed piece: a token, or one delimiter of a group.
struct Piece {
    text: String,
    span: Span,
    start: LineColumn,
    end: LineColumn,
    /// A punctuation mark glued to the next token (`=` in `==`).
    joint: bool,
}

/// Longest run of blank lines or spaces the layout reproduces; spans that come from another
/// place (tokens passed through `macro_rules!`) must not make the text huge.
const MAX_GAP: usize = 200;

impl SourceText {
    pub fn from_tokens(input: TokenStream) -> SourceText {
        let mut pieces = Vec::new();
        let mut doc_comments = Vec::new();
        flatten(input, &mut pieces, &mut doc_comments);
        let (text, tokens) = layout(&pieces);
        SourceText {
            text,
            tokens,
            doc_comments,
        }
    }

    /// Whether the body holds no token at all.
    pub fn is_empty(&self) -> bool {
        self.tokens.is_empty()
    }

    /// The spans that best cover `range` of the text: the token holding its start and the
    /// token holding its last byte. A range in a gap or past the end is moved to the token
    /// before it (an error "at the end of input" points at the last token).
    pub fn span_range(&self, range: Range<usize>) -> Option<(Span, Span)> {
        let start = self.token_at(range.start)?;
        let end = self.token_at(range.end.saturating_sub(1).max(range.start))?;
        let (start_range, start_span) = &self.tokens[start];
        let (_, end_span) = &self.tokens[end];
        // A range spanning lines would underline whole paragraphs of the body; point at its
        // first token instead.
        let one_line = !self.text[start_range.start..self.tokens[end].0.end].contains('\n');
        Some(if one_line {
            (*start_span, *end_span)
        } else {
            (*start_span, *start_span)
        })
    }

    /// The span of the token whose range starts exactly at `offset`, if any.
    pub fn span_starting_at(&self, offset: usize) -> Option<Span> {
        let i = self
            .tokens
            .binary_search_by_key(&offset, |(r, _)| r.start)
            .ok()?;
        Some(self.tokens[i].1)
    }

    /// Index of the last token starting at or before `offset` (the first token if none does).
    fn token_at(&self, offset: usize) -> Option<usize> {
        if self.tokens.is_empty() {
            return None;
        }
        let after = self.tokens.partition_point(|(r, _)| r.start <= offset);
        Some(after.saturating_sub(1))
    }
}

/// Walks the token trees in order, printing delimiters around groups and setting doc
/// comments aside. Iterative, with its own stack: a body nested thousands of brackets deep
/// must become an error from the front end, not a stack overflow here.
fn flatten(input: TokenStream, pieces: &mut Vec<Piece>, doc_comments: &mut Vec<Span>) {
    struct Level {
        trees: Vec<TokenTree>,
        next: usize,
        close: Option<(&'static str, Span)>,
    }
    let mut stack = vec![Level {
        trees: input.into_iter().collect(),
        next: 0,
        close: None,
    }];
    while let Some(level) = stack.last_mut() {
        let rest = &level.trees[level.next..];
        let Some(tree) = rest.first().cloned() else {
            if let Some((text, span)) = level.close {
                pieces.push(piece(text.to_string(), span, false));
            }
            stack.pop();
            continue;
        };
        if let Some(len) = doc_attribute_len(rest) {
            doc_comments.push(tree.span());
            level.next += len;
            continue;
        }
        level.next += 1;
        match tree {
            TokenTree::Group(g) => {
                let (open, close) = match g.delimiter() {
                    Delimiter::Parenthesis => ("(", ")"),
                    Delimiter::Brace => ("{", "}"),
                    Delimiter::Bracket => ("[", "]"),
                    // An invisible group: tokens substituted by `macro_rules!`.
                    Delimiter::None => ("", ""),
                };
                if !open.is_empty() {
                    pieces.push(piece(open.to_string(), g.span_open(), false));
                }
                let close = (!close.is_empty()).then(|| (close, g.span_close()));
                stack.push(Level {
                    trees: g.stream().into_iter().collect(),
                    next: 0,
                    close,
                });
            }
            TokenTree::Ident(t) => pieces.push(piece(t.to_string(), t.span(), false)),
            TokenTree::Literal(t) => pieces.push(piece(t.to_string(), t.span(), false)),
            TokenTree::Punct(t) => pieces.push(piece(
                t.as_char().to_string(),
                t.span(),
                t.spacing() == Spacing::Joint,
            )),
        }
    }
}

fn piece(text: String, span: Span, joint: bool) -> Piece {
    Piece {
        text,
        span,
        start: span.start(),
        end: span.end(),
        joint,
    }
}

/// If the trees start with a doc comment (`#[doc …]` or `#![doc …]`), how many trees it takes.
fn doc_attribute_len(trees: &[TokenTree]) -> Option<usize> {
    let TokenTree::Punct(hash) = trees.first()? else {
        return None;
    };
    if hash.as_char() != '#' {
        return None;
    }
    let bang = matches!(trees.get(1), Some(TokenTree::Punct(p)) if p.as_char() == '!');
    let group_at = 1 + usize::from(bang);
    let TokenTree::Group(g) = trees.get(group_at)? else {
        return None;
    };
    if g.delimiter() != Delimiter::Bracket {
        return None;
    }
    match g.stream().into_iter().next() {
        Some(TokenTree::Ident(name)) if name == "doc" => Some(group_at + 1),
        _ => None,
    }
}

/// Prints the pieces, keeping their original layout when every piece has a known position
/// and they come in source order; otherwise one space apart.
fn layout(pieces: &[Piece]) -> (String, Vec<(Range<usize>, Span)>) {
    let positioned = pieces.iter().all(|p| p.start.line > 0)
        && pieces
            .windows(2)
            .all(|w| (w[0].end.line, w[0].end.column) <= (w[1].start.line, w[1].start.column));
    // Common indentation: the smallest column at which a line of the body starts.
    let indent = pieces
        .iter()
        .enumerate()
        .filter(|(i, p)| *i == 0 || pieces[i - 1].end.line < p.start.line)
        .map(|(_, p)| p.start.column)
        .min()
        .unwrap_or(0);
    let mut text = String::new();
    let mut tokens = Vec::with_capacity(pieces.len());
    for (i, p) in pieces.iter().enumerate() {
        let prev = i.checked_sub(1).map(|j| &pieces[j]);
        match prev {
            None if positioned => {
                text.push_str(&" ".repeat((p.start.column - indent).min(MAX_GAP)))
            }
            None => {}
            Some(prev) if positioned => {
                if p.start.line > prev.end.line {
                    text.push_str(&"\n".repeat((p.start.line - prev.end.line).min(MAX_GAP)));
                    text.push_str(&" ".repeat(p.start.column.saturating_sub(indent).min(MAX_GAP)));
                } else {
                    text.push_str(&" ".repeat((p.start.column - prev.end.column).min(MAX_GAP)));
                }
            }
            Some(prev) if prev.joint => {}
            Some(_) => text.push(' '),
        }
        let start = text.len();
        text.push_str(&p.text);
        tokens.push((start..text.len(), p.span));
    }
    if !text.is_empty() {
        text.push('\n');
    }
    (text, tokens)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::str::FromStr;

    fn source(rust: &str) -> SourceText {
        let Ok(tokens) = TokenStream::from_str(rust) else {
            panic!("test input must lex: {rust}")
        };
        SourceText::from_tokens(tokens)
    }

    #[test]
    fn keeps_lines_and_columns_minus_indentation() {
        let s =
            source("    model m {\n        d_model = 4*64  // gone\n\n        eps = 1e-5\n    }");
        assert_eq!(
            s.text,
            "model m {\n    d_model = 4*64\n\n    eps = 1e-5\n}\n"
        );
    }

    #[test]
    fn doc_comments_are_set_aside() {
        let s = source("/// hello\nmodel m { }");
        assert_eq!(s.doc_comments.len(), 1);
        assert_eq!(s.text.trim(), "model m { }");
    }

    #[test]
    fn other_attributes_stay_for_the_lexer_to_reject() {
        let s = source("#[derive(X)] model m { }");
        assert!(s.doc_comments.is_empty());
        assert!(s.text.starts_with("#[derive(X)]"));
    }

    #[test]
    fn ranges_map_back_to_tokens() {
        let s = source("model m { heads = 12 }");
        let offset = s.text.find("12").unwrap_or(0);
        let (start, end) = s
            .span_range(offset..offset + 2)
            .unwrap_or((Span::call_site(), Span::call_site()));
        assert_eq!(start.start().column, 18);
        assert_eq!(end.end().column, 20);
        // Past the end: the last token.
        let (last, _) = s
            .span_range(s.text.len()..s.text.len())
            .unwrap_or((Span::call_site(), Span::call_site()));
        assert_eq!(last.start().column, 21);
        assert!(source("").span_range(0..0).is_none());
    }
}

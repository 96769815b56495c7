//! Front-end diagnostics → `compile_error!`s at the right Rust spans.
//!
//! Inline specs: one error per diagnostic, underlining the tokens the diagnostic covers, so
//! rustc and the IDE point into the macro body. File specs: rustc cannot point into a
//! `.arch` file, so each error sits on the `file = "…"` argument and its message opens with
//! `file:line:col`, followed by the front end's rendered report (source line underlined).
//! Warnings are dropped: a proc-macro cannot emit warnings on stable Rust.

use crate::source_text::SourceText;
use arch_dsl::diag::{render, Diagnostic};
use arch_dsl::elab::Program;
use proc_macro2::{Ident, Span, TokenStream};
use quote::quote;

/// Collects errors and turns them into one token stream of `compile_error!`s.
#[derive(Default)]
pub struct Errors {
    all: Option<syn::Error>,
}

impl Errors {
    pub fn push(&mut self, error: syn::Error) {
        match &mut self.all {
            Some(all) => all.combine(error),
            None => self.all = Some(error),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.all.is_none()
    }

    pub fn into_compile_errors(self) -> TokenStream {
        self.all
            .map(syn::Error::into_compile_error)
            .unwrap_or_default()
    }
}

impl From<syn::Error> for Errors {
    fn from(error: syn::Error) -> Errors {
        Errors { all: Some(error) }
    }
}

/// The headline of one diagnostic as a rustc message: the reason, then the hint.
pub fn message(d: &Diagnostic) -> String {
    match &d.help {
        Some(help) => format!("{}; help: {help}", d.reason),
        None => d.reason.clone(),
    }
}

/// An error diagnostic of an inline spec, at the tokens it covers. Diagnostics in a
/// `use`d file cannot point into the macro body and are reported as for the file form,
/// at `fallback`. A compile error has one span, so related places (the first definition
/// of a duplicate) are named in the message.
pub fn inline_error(
    prog: &Program,
    body: &SourceText,
    d: &Diagnostic,
    fallback: Span,
) -> syn::Error {
    if d.span.file != prog.root {
        return file_error(prog, d, fallback);
    }
    let mut text = message(d);
    for (span, note) in &d.related {
        let place = match body.span_range(span.range()) {
            Some((token, _)) if span.file == prog.root && token.start().line > 0 => {
                format!(
                    "line {}, column {}",
                    token.start().line,
                    token.start().column + 1
                )
            }
            _ => Diagnostic::error(*span, "").location(&prog.sources),
        };
        text.push_str(&format!("; note: {note} ({place})"));
    }
    match body.span_range(d.span.range()) {
        Some((start, end)) => spanned(start, end, text),
        None => syn::Error::new(fallback, text),
    }
}

/// An error diagnostic of a spec file, at `at`: `file:line:col: reason`, then the report.
pub fn file_error(prog: &Program, d: &Diagnostic, at: Span) -> syn::Error {
    let rendered = render(&prog.sources, std::slice::from_ref(d), false);
    let text = format!(
        "{}: {}\n{}",
        d.location(&prog.sources),
        message(d),
        rendered.trim_end()
    );
    syn::Error::new(at, text)
}

/// An error that underlines everything from `start` to `end` (syn's trick for a span range
/// on stable Rust: the first token of the `compile_error!` carries `start`, the last `end`).
fn spanned(start: Span, end: Span, message: String) -> syn::Error {
    let first = Ident::new("start", start);
    let last = Ident::new("end", end);
    syn::Error::new_spanned(quote!(#first #last), message)
}

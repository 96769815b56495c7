//! Diagnostics → rendered reports: the one place that knows how errors look.
//!
//! Every stage pushes `Diagnostic { span, reason, label, help }` values; nothing stops at
//! the first error. Rendering uses ariadne, rustc-like, with the source line underlined.

use crate::source::{SourceMap, Span};
use ariadne::{Config, IndexType, Label, Report, ReportKind};
use std::fmt::Write as _;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Severity {
    Error,
    Warning,
}

/// One problem found in a spec.
#[derive(Debug, Clone, PartialEq)]
pub struct Diagnostic {
    pub severity: Severity,
    pub span: Span,
    /// The headline: what is wrong.
    pub reason: String,
    /// Text under the underline: what was expected there.
    pub label: Option<String>,
    /// A suggestion, e.g. "did you mean `kv_heads`?".
    pub help: Option<String>,
    /// Further places that explain the error (e.g. the first definition of a duplicate).
    pub related: Vec<(Span, String)>,
}

impl Diagnostic {
    pub fn error(span: Span, reason: impl Into<String>) -> Diagnostic {
        Diagnostic {
            severity: Severity::Error,
            span,
            reason: reason.into(),
            label: None,
            help: None,
            related: Vec::new(),
        }
    }

    pub fn warning(span: Span, reason: impl Into<String>) -> Diagnostic {
        Diagnostic {
            severity: Severity::Warning,
            ..Diagnostic::error(span, reason)
        }
    }

    pub fn with_label(mut self, label: impl Into<String>) -> Diagnostic {
        self.label = Some(label.into());
        self
    }

    pub fn with_help(mut self, help: impl Into<String>) -> Diagnostic {
        self.help = Some(help.into());
        self
    }

    pub fn with_help_opt(mut self, help: Option<String>) -> Diagnostic {
        self.help = help;
        self
    }

    pub fn with_related(mut self, span: Span, note: impl Into<String>) -> Diagnostic {
        self.related.push((span, note.into()));
        self
    }

    pub fn is_error(&self) -> bool {
        self.severity == Severity::Error
    }

    /// `file:line:col`, 1-based.
    pub fn location(&self, sources: &SourceMap) -> String {
        let (line, col) = sources.line_col(self.span.file, self.span.start as usize);
        format!("{}:{}:{}", sources.get(self.span.file).name, line, col)
    }
}

/// Renders diagnostics as text; `color` adds ANSI colours for terminals.
pub fn render(sources: &SourceMap, diags: &[Diagnostic], color: bool) -> String {
    let mut out = String::new();
    for d in diags {
        out.push_str(&render_one(sources, d, color));
    }
    out
}

fn render_one(sources: &SourceMap, d: &Diagnostic, color: bool) -> String {
    let name = |s: Span| sources.get(s.file).name.clone();
    let kind = match d.severity {
        Severity::Error => ReportKind::Error,
        Severity::Warning => ReportKind::Warning,
    };
    let main = (name(d.span), d.span.range());
    let mut report = Report::build(kind, main.clone())
        .with_config(
            Config::default()
                .with_color(color)
                .with_index_type(IndexType::Byte),
        )
        .with_message(&d.reason);
    let mut label = Label::new(main);
    if let Some(text) = &d.label {
        label = label.with_message(text);
    }
    report = report.with_label(label);
    for (span, note) in &d.related {
        report = report.with_label(Label::new((name(*span), span.range())).with_message(note));
    }
    if let Some(help) = &d.help {
        report = report.with_help(help);
    }
    let cache = ariadne::sources(
        sources
            .files()
            .map(|(_, f)| (f.name.clone(), f.text.clone())),
    );
    let mut buf = Vec::new();
    if report.finish().write(cache, &mut buf).is_err() {
        // Rendering can only fail on I/O into a Vec, which does not happen; fall back anyway.
        let mut s = String::new();
        let _ = writeln!(s, "error: {} ({})", d.reason, d.location(sources));
        return s;
    }
    String::from_utf8_lossy(&buf).into_owned()
}

/// The closest candidate to a misspelt name, if one is close enough to be a useful hint.
pub fn did_you_mean<'a>(
    word: &str,
    candidates: impl IntoIterator<Item = &'a str>,
) -> Option<String> {
    let mut best: Option<(f64, &str)> = None;
    for c in candidates {
        let score = strsim::jaro_winkler(word, c);
        if score > 0.8 && best.is_none_or(|(s, _)| score > s) {
            best = Some((score, c));
        }
    }
    best.map(|(_, c)| format!("did you mean `{c}`?"))
}

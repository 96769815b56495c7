//! Model and block members → merged records: inheritance copies the base model's record,
//! then the child's members are applied (sections merge field by field, dotted paths reach
//! into sections, a `let` replaces the base's). Expressions are kept unevaluated: binding is
//! late, so inherited expressions see the derived model's values.

use crate::ast::{Expr, Member};
use crate::diag::Diagnostic;
use crate::source::Span;
use std::collections::HashMap;

pub type RecordId = usize;

/// An unevaluated value: the expression and where it was written.
#[derive(Clone, Copy)]
pub struct Binding<'a> {
    pub expr: &'a Expr,
    /// The field's name (or path) as written, for diagnostics.
    pub span: Span,
}

/// A section (or a model's root) after inheritance: its lets, fields and subsections,
/// each in the order first written.
#[derive(Clone)]
pub struct Record<'a> {
    pub lets: Vec<(String, Binding<'a>)>,
    pub fields: Vec<(String, Binding<'a>)>,
    pub sections: Vec<(String, RecordId, Span)>,
}

impl<'a> Record<'a> {
    fn new() -> Record<'a> {
        Record {
            lets: Vec::new(),
            fields: Vec::new(),
            sections: Vec::new(),
        }
    }

    pub fn field(&self, name: &str) -> Option<Binding<'a>> {
        self.fields.iter().find(|(n, _)| n == name).map(|(_, b)| *b)
    }

    pub fn let_(&self, name: &str) -> Option<Binding<'a>> {
        self.lets.iter().find(|(n, _)| n == name).map(|(_, b)| *b)
    }

    pub fn section(&self, name: &str) -> Option<(RecordId, Span)> {
        self.sections
            .iter()
            .find(|(n, _, _)| n == name)
            .map(|(_, id, s)| (*id, *s))
    }
}

/// All records of one elaboration.
#[derive(Default)]
pub struct Records<'a> {
    pub all: Vec<Record<'a>>,
}

/// Tracks what one model (or block) writes, so that a field set twice is caught.
#[derive(Default)]
pub struct Written {
    fields: HashMap<Vec<String>, Span>,
    sections: HashMap<Vec<String>, Span>,
    lets: HashMap<Vec<String>, Span>,
}

impl<'a> Records<'a> {
    pub fn new_record(&mut self) -> RecordId {
        self.all.push(Record::new());
        self.all.len() - 1
    }

    /// A deep copy of a record and its subsections (a derived model starts from this).
    pub fn deep_copy(&mut self, id: RecordId) -> RecordId {
        let mut rec = self.all[id].clone();
        for entry in &mut rec.sections {
            entry.1 = self.deep_copy(entry.1);
        }
        self.all.push(rec);
        self.all.len() - 1
    }

    /// Applies written members to a record.
    pub fn apply(
        &mut self,
        id: RecordId,
        members: &'a [Member],
        prefix: &[String],
        written: &mut Written,
        diags: &mut Vec<Diagnostic>,
    ) {
        for member in members {
            match member {
                Member::Let(l) => {
                    let key = path_key(prefix, &l.name.name);
                    if let Some(first) = written.lets.insert(key, l.name.span) {
                        diags.push(duplicate(
                            l.name.span,
                            &format!("let `{}`", l.name.name),
                            first,
                        ));
                        continue;
                    }
                    let binding = Binding {
                        expr: &l.value,
                        span: l.name.span,
                    };
                    set_entry(&mut self.all[id].lets, &l.name.name, binding);
                }
                Member::Field(f) => {
                    let key: Vec<String> = prefix
                        .iter()
                        .cloned()
                        .chain(f.path.iter().map(|i| i.name.clone()))
                        .collect();
                    if let Some(first) = written.fields.insert(key, f.path_span()) {
                        diags.push(duplicate(
                            f.path_span(),
                            &format!("field `{}`", f.dotted()),
                            first,
                        ));
                        continue;
                    }
                    let mut target = Some(id);
                    for seg in &f.path[..f.path.len() - 1] {
                        target = target
                            .and_then(|t| self.section_for_path(t, &seg.name, seg.span, diags));
                    }
                    let Some(target) = target else { continue };
                    let last = &f.path[f.path.len() - 1];
                    if let Some((_, first)) = self.all[target].section(&last.name) {
                        diags.push(
                            Diagnostic::error(
                                last.span,
                                format!("`{}` is a section, not a value", last.name),
                            )
                            .with_label("cannot be assigned")
                            .with_related(first, "the section")
                            .with_help(format!(
                                "write `{} {{ … }}` or set one of its fields, e.g. `{}.…= …`",
                                last.name,
                                f.dotted()
                            )),
                        );
                        continue;
                    }
                    set_entry(
                        &mut self.all[target].fields,
                        &last.name,
                        Binding {
                            expr: &f.value,
                            span: f.path_span(),
                        },
                    );
                }
                Member::Section(s) => {
                    let key = path_key(prefix, &s.name.name);
                    if let Some(first) = written.sections.insert(key.clone(), s.name.span) {
                        diags.push(
                            duplicate(s.name.span, &format!("section `{}`", s.name.name), first)
                                .with_help("each sublayer kind appears at most once in a stack or block; merge the two"),
                        );
                        continue;
                    }
                    if let Some(target) =
                        self.section_for_path(id, &s.name.name, s.name.span, diags)
                    {
                        self.apply(target, &s.members, &key, written, diags);
                    }
                }
            }
        }
    }

    /// The subsection `name` of `id`, created if missing; an error if `name` is a value.
    fn section_for_path(
        &mut self,
        id: RecordId,
        name: &str,
        span: Span,
        diags: &mut Vec<Diagnostic>,
    ) -> Option<RecordId> {
        if let Some((sid, _)) = self.all[id].section(name) {
            return Some(sid);
        }
        if let Some(b) = self.all[id].field(name) {
            diags.push(
                Diagnostic::error(span, format!("`{name}` is a value, not a section"))
                    .with_label("used as a section here")
                    .with_related(b.span, "set as a value here"),
            );
            return None;
        }
        let sid = self.new_record();
        self.all[id].sections.push((name.to_string(), sid, span));
        Some(sid)
    }
}

fn set_entry<'a>(entries: &mut Vec<(String, Binding<'a>)>, name: &str, binding: Binding<'a>) {
    match entries.iter_mut().find(|(n, _)| n == name) {
        Some(entry) => entry.1 = binding,
        None => entries.push((name.to_string(), binding)),
    }
}

fn path_key(prefix: &[String], name: &str) -> Vec<String> {
    prefix.iter().cloned().chain([name.to_string()]).collect()
}

fn duplicate(span: Span, what: &str, first: Span) -> Diagnostic {
    Diagnostic::error(span, format!("{what} is set twice"))
        .with_label("set again here")
        .with_related(first, "first set here")
        .with_help("within one model or section a field may be set only once")
}

//! Section records → typed field values: integer, float, boolean, option-word and
//! constructor readers that record the valid names of a section, so that whatever was
//! written but never read is reported as unknown, with a hint.

use super::ctor::{CtorDef, CtorVal};
use super::eval::Value;
use super::record::Binding;
use super::typed::{Elaborator, Sec, FIELD_HOME};
use crate::diag::{did_you_mean, Diagnostic};
use crate::source::Span;

impl<'a> Elaborator<'a> {
    /// The section `name` of `parent`, if written.
    pub fn subsection(&mut self, parent: &Sec, name: &str) -> Option<Sec> {
        let (id, span) = self.recs.all[parent.id].section(name)?;
        let mut scope = parent.scope.clone();
        scope.push(id);
        let what = if parent.what.starts_with("model") {
            name.to_string()
        } else {
            format!("{}.{name}", parent.what)
        };
        Some(Sec {
            id,
            scope,
            what,
            span,
            known: Vec::new(),
            known_sections: Vec::new(),
        })
    }

    /// Reports fields and sections that were written but are not valid here.
    pub fn finish_section(&mut self, sec: &Sec) {
        let rec = &self.recs.all[sec.id];
        let mut diags = Vec::new();
        for (name, b) in &rec.fields {
            if sec.known.contains(&name.as_str()) {
                continue;
            }
            let home = FIELD_HOME
                .iter()
                .find(|(f, _)| f == name)
                .map(|(_, home)| format!("`{name}` belongs in `{home}`"));
            let mut help = home.or_else(|| did_you_mean(name, sec.known.iter().copied()));
            if help.is_none() {
                if sec.known_sections.contains(&name.as_str()) {
                    help = Some(format!("`{name}` is a section: write `{name} {{ … }}`"));
                } else if !sec.known.is_empty() {
                    help = Some(format!("valid fields here: {}", sec.known.join(", ")));
                }
            }
            let d = Diagnostic::error(b.span, format!("unknown field `{name}` in {}", sec.what))
                .with_label("unknown field")
                .with_help_opt(help);
            diags.push(d);
        }
        for (name, _, span) in &rec.sections {
            if sec.known_sections.contains(&name.as_str()) {
                continue;
            }
            let help = did_you_mean(name, sec.known_sections.iter().copied()).or_else(|| {
                if sec.known.contains(&name.as_str()) {
                    Some(format!("`{name}` is a field: write `{name} = …`"))
                } else if sec.known_sections.is_empty() {
                    Some(format!("{} holds no sections", sec.what))
                } else {
                    Some(format!("sections here: {}", sec.known_sections.join(", ")))
                }
            });
            let d = Diagnostic::error(*span, format!("unknown section `{name}` in {}", sec.what))
                .with_label("unknown section")
                .with_help_opt(help);
            diags.push(d);
        }
        self.diags.extend(diags);
    }

    /// The written binding of a field, marking the name as valid here.
    pub fn binding(&mut self, sec: &mut Sec, name: &'static str) -> Option<Binding<'a>> {
        sec.known.push(name);
        self.recs.all[sec.id].field(name)
    }

    pub fn eval_field(&mut self, sec: &mut Sec, name: &'static str) -> Option<(Value, Span)> {
        let b = self.binding(sec, name)?;
        let v = self.eval_binding(sec.id, name, b, &sec.scope)?;
        Some((v, b.expr.span))
    }

    /// An integer field ≥ `min`: `Ok(None)` when not written, `Err` when wrong.
    pub fn int_opt(
        &mut self,
        sec: &mut Sec,
        name: &'static str,
        min: i64,
    ) -> Result<Option<u64>, ()> {
        let Some(b) = self.binding(sec, name) else {
            return Ok(None);
        };
        let Some(v) = self.eval_binding(sec.id, name, b, &sec.scope) else {
            return Err(());
        };
        match self.integral(&v) {
            Some(i) if i >= min => Ok(Some(i as u64)),
            Some(i) => {
                let d = Diagnostic::error(
                    b.expr.span,
                    format!("`{name}` must be at least {min}, found {i}"),
                )
                .with_label(format!("evaluates to {i}"));
                self.diags.push(d);
                Err(())
            }
            None => {
                let found = match &v {
                    Value::Float(f) => format!("{f} (not a whole number)"),
                    other => other.type_name().to_string(),
                };
                let d = Diagnostic::error(
                    b.expr.span,
                    format!("`{name}` must be an integer, found {found}"),
                )
                .with_label("expected an integer")
                .with_help_opt(matches!(v, Value::Float(_)).then(|| {
                    "integer fields must come out integral: check that divisions divide".to_string()
                }));
                self.diags.push(d);
                Err(())
            }
        }
    }

    /// A required integer field; reports it missing at the section.
    pub fn int_req(&mut self, sec: &mut Sec, name: &'static str, min: i64) -> u64 {
        match self.int_opt(sec, name, min) {
            Ok(Some(v)) => v,
            Ok(None) => {
                let d = Diagnostic::error(
                    sec.span,
                    format!("missing required field `{name}` in {}", sec.what),
                )
                .with_label(format!("`{name}` is required"))
                .with_help(format!("add `{name} = …`"));
                self.diags.push(d);
                1
            }
            Err(()) => 1,
        }
    }

    pub fn float_opt(&mut self, sec: &mut Sec, name: &'static str) -> Option<f64> {
        let (v, span) = self.eval_field(sec, name)?;
        match v.as_f64() {
            Some(f) => Some(f),
            None => {
                let d = Diagnostic::error(
                    span,
                    format!("`{name}` must be a number, found {}", v.type_name()),
                )
                .with_label("expected a number");
                self.diags.push(d);
                None
            }
        }
    }

    pub fn bool_opt(&mut self, sec: &mut Sec, name: &'static str) -> Option<bool> {
        let (v, span) = self.eval_field(sec, name)?;
        match v {
            Value::Bool(b) => Some(b),
            other => {
                let d = Diagnostic::error(
                    span,
                    format!(
                        "`{name}` must be `true` or `false`, found {}",
                        other.type_name()
                    ),
                )
                .with_label("expected a boolean");
                self.diags.push(d);
                None
            }
        }
    }

    pub fn word_field(
        &mut self,
        sec: &mut Sec,
        name: &'static str,
        options: &'static [&'static str],
    ) -> Option<(&'static str, Span)> {
        let b = self.binding(sec, name)?;
        self.word(b.expr, options, name)
    }

    pub fn ctor_field(
        &mut self,
        sec: &mut Sec,
        name: &'static str,
        defs: &'static [CtorDef],
        what: &str,
    ) -> Option<CtorVal> {
        let b = self.binding(sec, name)?;
        let scope = sec.scope.clone();
        self.ctor(b.expr, defs, what, &scope)
    }

    pub fn ctor_sum_field(
        &mut self,
        sec: &mut Sec,
        name: &'static str,
        defs: &'static [CtorDef],
        what: &str,
    ) -> Option<Vec<CtorVal>> {
        let b = self.binding(sec, name)?;
        let scope = sec.scope.clone();
        let terms = self.ctor_sum(b.expr, defs, what, &scope)?;
        let mut seen: Vec<&CtorVal> = Vec::new();
        for t in &terms {
            if let Some(first) = seen.iter().find(|s| s.name == t.name) {
                let d = Diagnostic::error(t.span, format!("{what} `{}` appears twice", t.name))
                    .with_label("repeated")
                    .with_related(first.span, "first here");
                self.diags.push(d);
                return None;
            }
            if t.name == "none" && terms.len() > 1 {
                let d = Diagnostic::error(
                    t.span,
                    format!("`none` cannot be combined with another {what}"),
                )
                .with_label("`none` here");
                self.diags.push(d);
                return None;
            }
            seen.push(t);
        }
        Some(terms)
    }
}

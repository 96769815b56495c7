//! AST → `ArchSpec`: loading `use`d files, inheritance, late-bound evaluation, defaults and
//! validation. Every problem becomes a diagnostic; elaboration of one model never stops
//! another from being checked.

mod ctor;
mod eval;
mod fields;
mod objective;
mod record;
mod stack;
mod sublayer;
mod typed;

use crate::ast::{self, Item};
use crate::diag::{did_you_mean, Diagnostic};
use crate::parse;
use crate::source::{FileId, SourceMap, Span};
use crate::spec::ArchSpec;
use std::collections::HashMap;
use std::path::{Path, PathBuf};

/// A set of parsed files: the root file and everything it `use`s.
pub struct Program {
    pub sources: SourceMap,
    pub files: Vec<(FileId, ast::File)>,
    pub root: FileId,
    /// Diagnostics from reading, parsing and name resolution.
    pub diagnostics: Vec<Diagnostic>,
    defs: Defs,
}

/// Where each top-level name is defined.
#[derive(Default)]
struct Defs {
    lets: HashMap<String, (usize, usize)>,
    blocks: HashMap<String, (usize, usize)>,
    models: HashMap<String, (usize, usize)>,
}

impl Program {
    /// Reads and parses a file and everything it `use`s.
    pub fn load(path: &Path) -> std::io::Result<Program> {
        let text = read_spec_file(path)?;
        let name = path.display().to_string();
        Ok(Program::from_source(name, text, Some(path.to_path_buf())))
    }

    /// Parses source text. `path` (real or virtual) is where `use` paths are resolved from;
    /// without one they resolve against the current directory.
    pub fn from_source(name: impl Into<String>, text: String, path: Option<PathBuf>) -> Program {
        let mut prog = Program {
            sources: SourceMap::default(),
            files: Vec::new(),
            root: FileId(0),
            diagnostics: Vec::new(),
            defs: Defs::default(),
        };
        let canonical = path
            .as_ref()
            .map(|p| p.canonicalize().unwrap_or_else(|_| p.clone()));
        prog.root = prog.sources.add(name, canonical, text);
        prog.parse_file(prog.root);
        prog.collect_defs();
        prog
    }

    fn parse_file(&mut self, id: FileId) {
        let (file, diags) = parse::parse(id, &self.sources.get(id).text);
        self.diagnostics.extend(diags);
        let uses: Vec<_> = file
            .items
            .iter()
            .filter_map(|i| match i {
                Item::Use(u) => Some(u.clone()),
                _ => None,
            })
            .collect();
        self.files.push((id, file));
        for u in uses {
            self.load_use(id, &u);
        }
    }

    fn load_use(&mut self, from: FileId, u: &ast::UseItem) {
        let base = self
            .sources
            .get(from)
            .path
            .as_ref()
            .and_then(|p| p.parent().map(Path::to_path_buf));
        let target = base.unwrap_or_default().join(&u.path);
        let canonical = target.canonicalize().unwrap_or_else(|_| target.clone());
        if self.sources.find_path(&canonical).is_some() {
            return;
        }
        match read_spec_file(&canonical) {
            Ok(text) => {
                let id = self.sources.add(u.path.clone(), Some(canonical), text);
                self.parse_file(id);
            }
            Err(e) => self.diagnostics.push(
                Diagnostic::error(u.path_span, format!("cannot read `{}`: {e}", u.path))
                    .with_label("paths are relative to the file that uses them"),
            ),
        }
    }

    fn collect_defs(&mut self) {
        let mut diags = Vec::new();
        for (fi, (_, file)) in self.files.iter().enumerate() {
            for (ii, item) in file.items.iter().enumerate() {
                let (table, name, what) = match item {
                    Item::Use(_) => continue,
                    Item::Let(l) => (&mut self.defs.lets, &l.name, "constant"),
                    Item::Block(b) => (&mut self.defs.blocks, &b.name, "block"),
                    Item::Model(m) => (&mut self.defs.models, &m.name, "model"),
                };
                if let Some(&(pf, pi)) = table.get(&name.name) {
                    let first = item_name_span(&self.files[pf].1.items[pi]);
                    diags.push(
                        Diagnostic::error(
                            name.span,
                            format!("{what} `{}` is defined twice", name.name),
                        )
                        .with_label("second definition")
                        .with_related(first, "first defined here"),
                    );
                } else {
                    table.insert(name.name.clone(), (fi, ii));
                }
            }
        }
        self.diagnostics.extend(diags);
    }

    /// The models of the root file, in the order written.
    pub fn model_names(&self) -> Vec<String> {
        self.files
            .iter()
            .find(|(id, _)| *id == self.root)
            .map(|(_, f)| {
                f.items
                    .iter()
                    .filter_map(|i| match i {
                        Item::Model(m) => Some(m.name.name.clone()),
                        _ => None,
                    })
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Whether a model of this name is visible (in the root file or a `use`d one).
    pub fn has_model(&self, name: &str) -> bool {
        self.defs.models.contains_key(name)
    }

    /// A hint for a model name that does not exist.
    pub fn suggest_model(&self, name: &str) -> Option<String> {
        did_you_mean(name, self.defs.models.keys().map(String::as_str))
    }

    /// Elaborates one model. Returns the spec when it has no errors, and the diagnostics
    /// (errors and warnings) found while elaborating it.
    pub fn elaborate(&self, model: &str) -> (Option<ArchSpec>, Vec<Diagnostic>) {
        let mut el = typed::Elaborator::new(self);
        let spec = el.model(model, 0);
        let diags = el.finish();
        let ok = !diags.iter().any(Diagnostic::is_error);
        (spec.filter(|_| ok), diags)
    }

    /// Checks everything: parse errors, every model of the root file, every block and
    /// file-level constant. Returns the specs that elaborated and all diagnostics, sorted by
    /// position and without repeats.
    pub fn check(&self) -> (Vec<ArchSpec>, Vec<Diagnostic>) {
        let mut diags = self.diagnostics.clone();
        let mut specs = Vec::new();
        for name in self.model_names() {
            let (spec, d) = self.elaborate(&name);
            specs.extend(spec);
            diags.extend(d);
        }
        let mut el = typed::Elaborator::new(self);
        el.check_file_lets();
        diags.extend(el.finish());
        sort_dedup(&mut diags);
        (specs, diags)
    }

    pub fn has_errors(&self) -> bool {
        self.diagnostics.iter().any(Diagnostic::is_error)
    }

    fn model_item(&self, name: &str) -> Option<&ast::ModelItem> {
        let &(f, i) = self.defs.models.get(name)?;
        match &self.files[f].1.items[i] {
            Item::Model(m) => Some(m),
            _ => None,
        }
    }

    fn block_item(&self, name: &str) -> Option<&ast::BlockItem> {
        let &(f, i) = self.defs.blocks.get(name)?;
        match &self.files[f].1.items[i] {
            Item::Block(b) => Some(b),
            _ => None,
        }
    }

    fn file_let(&self, name: &str) -> Option<&ast::LetItem> {
        let &(f, i) = self.defs.lets.get(name)?;
        match &self.files[f].1.items[i] {
            Item::Let(l) => Some(l),
            _ => None,
        }
    }
}

/// Spec files are small text files; refuse devices, directories and anything huge rather
/// than reading forever.
fn read_spec_file(path: &Path) -> std::io::Result<String> {
    const MAX_BYTES: u64 = 64 << 20;
    let meta = std::fs::metadata(path)?;
    if !meta.is_file() {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            "not a regular file",
        ));
    }
    if meta.len() > MAX_BYTES {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            "larger than 64 MiB",
        ));
    }
    std::fs::read_to_string(path)
}

fn item_name_span(item: &Item) -> Span {
    match item {
        Item::Use(u) => u.span,
        Item::Let(l) => l.name.span,
        Item::Block(b) => b.name.span,
        Item::Model(m) => m.name.span,
    }
}

/// Orders diagnostics by file and position and drops exact repeats (a block used by two
/// models reports its errors once).
pub fn sort_dedup(diags: &mut Vec<Diagnostic>) {
    diags.sort_by_key(|d| (d.span.file, d.span.start, d.span.end));
    diags.dedup_by(|a, b| a.span == b.span && a.reason == b.reason);
}

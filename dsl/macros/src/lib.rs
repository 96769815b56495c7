//! `.arch` spec (inline tokens or a file) → checked at Rust compile time → one Rust module per model.
//!
//! # Forms
//!
//! ```
//! // Inline: the spec is written as Rust tokens (`//` comments are fine, `///` are not).
//! arch_macros::model! {
//!     model gpt2 {
//!         vocab = 50257  d_model = 768  context = 1024
//!         decoder {
//!             layers = 12
//!             attention { heads = 12  bias = true }
//!             mlp { hidden = 4 * d_model  act = gelu_tanh  bias = true }
//!         }
//!     }
//! }
//! assert_eq!(gpt2::LAYERS, 12);
//! assert_eq!(gpt2::spec().d_model, 768);
//! ```
//!
//! ```text
//! // File: the path is relative to the invoking crate's `CARGO_MANIFEST_DIR`.
//! arch_macros::model!(file = "specs/llama3.arch", model = "llama3_8b");
//! // Without `model`, every model of the file (not of the files it `use`s) gets a module.
//! arch_macros::model!(file = "specs/llama3.arch");
//! ```
//!
//! An inline spec may `use "x.arch"`; the path resolves against `CARGO_MANIFEST_DIR`.
//!
//! # What it expands to
//!
//! For each model, a module named after it (a raw identifier if the name is a Rust keyword):
//!
//! ```text
//! pub mod llama3_8b {
//!     pub const NAME: &str = "llama3_8b";
//!     pub const FAMILY: &str = "decoder-only"; // or "encoder-only", "encoder-decoder"
//!     pub const VOCAB: u64 = 128256;
//!     pub const D_MODEL: u64 = 4096;
//!     pub const CONTEXT: u64 = 8192;
//!     pub const LAYERS: usize = 32;             // over all stacks
//!     pub const LAYER_KINDS: &[(&str, &[&str])] = &[("decoder", &["attention", "mlp"]), /* … */];
//!     pub const PARAMS: u64 = 8030261248;       // as `archc stats` counts
//!     pub const SOURCE: &str = include_str!("/abs/path/specs/llama3.arch");
//!     pub fn spec() -> ::arch_dsl::spec::ArchSpec { /* the checked spec, as a literal */ }
//! }
//! ```
//!
//! `spec()` builds the `ArchSpec` the macro checked from constants — it neither re-parses
//! `SOURCE` nor reads files at run time, so it cannot fail, works wherever the binary is
//! moved, and `use`d files need not exist at run time. The generated code names
//! `::arch_dsl`, so a crate that calls `model!` must depend on `arch-dsl` (under that name)
//! as well as on `arch-macros`. File specs and the files they `use` are embedded with
//! `include_str!`, so cargo rebuilds the crate when one of them changes.
//!
//! # Errors
//!
//! Every error of the spec becomes a `compile_error!`, all at once, not only the first.
//! Inline: each points at the tokens it is about, with the front end's message and hint
//! (`unknown field `kv_head` in decoder.attention; help: did you mean `kv_heads`?`).
//! File: each points at the `file = "…"` argument and starts with `file:line:col`, followed
//! by the rendered report. With `model = "…"`, the syntax of the whole file and that one
//! model are checked; without it, every model of the file. Warnings are not shown (a
//! proc-macro cannot emit warnings on stable Rust); `archc check` shows them. The macro never
//! panics on its input: a panic inside the front end is caught and reported as an error.

mod args;
mod expand;
mod report;
mod source_text;
mod spec_expr;

use arch_dsl::ast;
use arch_dsl::elab::{sort_dedup, Program};
use arch_dsl::spec::ArchSpec;
use args::{is_file_form, FileArgs};
use expand::{model_module, module_ident, SourceConst};
use proc_macro2::{Span, TokenStream};
use quote::quote;
use report::{file_error, inline_error, Errors};
use source_text::SourceText;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::PathBuf;

/// Checks an `.arch` spec at compile time and exposes each model as a module; see the crate
/// documentation.
#[proc_macro]
pub fn model(input: proc_macro::TokenStream) -> proc_macro::TokenStream {
    let input = TokenStream::from(input);
    let expanded = catch_unwind(AssertUnwindSafe(|| expand(input))).unwrap_or_else(|payload| {
        let what = payload
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| payload.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "unknown panic".to_string());
        let message = format!(
            "internal error in arch-macros: {what}; please report it with the spec that caused it"
        );
        syn::Error::new(Span::call_site(), message).into_compile_error()
    });
    expanded.into()
}

fn expand(input: TokenStream) -> TokenStream {
    let result = if is_file_form(&input) {
        expand_file(input)
    } else {
        expand_inline(input)
    };
    result.unwrap_or_else(Errors::into_compile_errors)
}

fn manifest_dir() -> Option<PathBuf> {
    std::env::var_os("CARGO_MANIFEST_DIR").map(PathBuf::from)
}

/// `model! { model … }`: the body is the spec.
fn expand_inline(input: TokenStream) -> Result<TokenStream, Errors> {
    let body = SourceText::from_tokens(input);
    let mut errors = Errors::default();
    for &span in &body.doc_comments {
        errors.push(syn::Error::new(
            span,
            "doc comments are not allowed; help: write `//` (inside `model! { }` a doc comment becomes an attribute)",
        ));
    }
    if body.is_empty() && errors.is_empty() {
        errors.push(syn::Error::new(
            Span::call_site(),
            "empty spec: write `model! { model NAME { … } }` or `model!(file = \"….arch\")`",
        ));
    }
    // A virtual file in the crate's directory, so that `use "x.arch"` resolves from there.
    let virtual_path = manifest_dir().map(|dir| dir.join("model!"));
    let prog = Program::from_source("model! { }", body.text.clone(), virtual_path);
    let (specs, diags) = prog.check();
    for d in diags.iter().filter(|d| d.is_error()) {
        errors.push(inline_error(&prog, &body, d, Span::call_site()));
    }
    if !errors.is_empty() {
        return Err(errors);
    }
    if specs.is_empty() {
        errors.push(syn::Error::new(
            Span::call_site(),
            "the spec defines no model; write `model NAME { … }`",
        ));
        return Err(errors);
    }
    let name_span = |name: &str| {
        root_model_name_offset(&prog, name)
            .and_then(|offset| body.span_starting_at(offset))
            .unwrap_or_else(Span::call_site)
    };
    let source = SourceConst::Inline(body.text.clone());
    modules(&prog, &specs, &source, name_span)
}

/// `model!(file = "…", model = "…")`: the spec is a file of the invoking crate.
fn expand_file(input: TokenStream) -> Result<TokenStream, Errors> {
    let args: FileArgs = syn::parse2(input).map_err(Errors::from)?;
    let at = args.file.span();
    let relative = args.file.value();
    let fail = |message: String| Errors::from(syn::Error::new(at, message));
    let Some(dir) = manifest_dir() else {
        return Err(fail(
            "CARGO_MANIFEST_DIR is not set, so the spec file cannot be found (build with cargo)"
                .into(),
        ));
    };
    let path = dir.join(&relative);
    let text = std::fs::read_to_string(&path).map_err(|e| {
        fail(format!(
            "cannot read `{relative}`: {e}; help: the path is relative to the crate's directory (where its Cargo.toml is)"
        ))
    })?;
    let prog = Program::from_source(relative.clone(), text.clone(), Some(path.clone()));
    let (specs, diags) = match &args.model {
        Some(model) => {
            let name = model.value();
            if !prog.has_model(&name) {
                let mut message = format!("no model named `{name}` in `{relative}`");
                match prog.suggest_model(&name) {
                    Some(hint) => message.push_str(&format!("; help: {hint}")),
                    None => message
                        .push_str(&format!("; it defines: {}", prog.model_names().join(", "))),
                }
                return Err(syn::Error::new(model.span(), message).into());
            }
            let (spec, mut diags) = prog.elaborate(&name);
            diags.extend(prog.diagnostics.iter().cloned());
            sort_dedup(&mut diags);
            (spec.into_iter().collect::<Vec<_>>(), diags)
        }
        None => prog.check(),
    };
    let mut errors = Errors::default();
    for d in diags.iter().filter(|d| d.is_error()) {
        errors.push(file_error(&prog, d, at));
    }
    if !errors.is_empty() {
        return Err(errors);
    }
    if specs.is_empty() {
        return Err(fail(format!("`{relative}` defines no model")));
    }
    let path = path.canonicalize().unwrap_or(path);
    let source = match path.to_str() {
        Some(path) => SourceConst::File {
            path: path.to_string(),
        },
        // `include_str!` needs a UTF-8 path; embed the text without rebuild tracking.
        None => SourceConst::Inline(text),
    };
    modules(&prog, &specs, &source, |_| at)
}

/// One module per spec, plus `include_str!`s of every `use`d file so that cargo rebuilds
/// the crate when one changes.
fn modules(
    prog: &Program,
    specs: &[ArchSpec],
    source: &SourceConst,
    name_span: impl Fn(&str) -> Span,
) -> Result<TokenStream, Errors> {
    let mut errors = Errors::default();
    let mut out = TokenStream::new();
    for spec in specs {
        match module_ident(&spec.name, name_span(&spec.name)) {
            Ok(module) => out.extend(model_module(spec, &module, source)),
            Err(e) => errors.push(e),
        }
    }
    if !errors.is_empty() {
        return Err(errors);
    }
    for (id, file) in prog.sources.files() {
        if let (true, Some(path)) = (
            id != prog.root,
            file.path.as_deref().and_then(|p| p.to_str()),
        ) {
            out.extend(quote!(
                const _: &str = ::core::include_str!(#path);
            ));
        }
    }
    Ok(out)
}

/// Byte offset of a model's name in the root file, to give its module the name's span.
fn root_model_name_offset(prog: &Program, name: &str) -> Option<usize> {
    let (_, file) = prog.files.iter().find(|(id, _)| *id == prog.root)?;
    file.items.iter().find_map(|item| match item {
        ast::Item::Model(m) if m.name.name == name => Some(m.name.span.start as usize),
        _ => None,
    })
}

#[cfg(test)]
mod tests;

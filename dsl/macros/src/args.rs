//! Macro input → which form it is: inline `.arch` text, or `file = "…", model = "…"` arguments.

use proc_macro2::{Span, TokenStream, TokenTree};
use syn::parse::{Parse, ParseStream};
use syn::punctuated::Punctuated;
use syn::{Ident, LitStr, Token};

/// The arguments of the file form: `model!(file = "specs/x.arch", model = "name")`.
pub struct FileArgs {
    /// Path of the spec, relative to the invoking crate's `CARGO_MANIFEST_DIR`.
    pub file: LitStr,
    /// The one model to expose; every model of the file when absent.
    pub model: Option<LitStr>,
}

/// Whether the input is the file form. `.arch` text cannot start with `file =` or
/// `model =` (an item starts with a keyword and a name), so two tokens decide.
pub fn is_file_form(input: &TokenStream) -> bool {
    let mut trees = input.clone().into_iter();
    let first = trees.next();
    let second = trees.next();
    match (first, second) {
        (Some(TokenTree::Ident(key)), Some(TokenTree::Punct(eq))) => {
            (key == "file" || key == "model") && eq.as_char() == '='
        }
        _ => false,
    }
}

struct Arg {
    key: Ident,
    value: LitStr,
}

impl Parse for Arg {
    fn parse(input: ParseStream) -> syn::Result<Arg> {
        let key: Ident = input.parse()?;
        input.parse::<Token![=]>()?;
        let value: LitStr = input.parse()?;
        Ok(Arg { key, value })
    }
}

impl Parse for FileArgs {
    fn parse(input: ParseStream) -> syn::Result<FileArgs> {
        let args = Punctuated::<Arg, Token![,]>::parse_terminated(input)?;
        let mut file: Option<LitStr> = None;
        let mut model: Option<LitStr> = None;
        for arg in args {
            let slot = if arg.key == "file" {
                &mut file
            } else if arg.key == "model" {
                &mut model
            } else {
                return Err(syn::Error::new(
                    arg.key.span(),
                    format!("unknown argument `{}`; expected `file = \"…\"` and optionally `model = \"…\"`", arg.key),
                ));
            };
            if slot.is_some() {
                return Err(syn::Error::new(
                    arg.key.span(),
                    format!("`{}` is given twice", arg.key),
                ));
            }
            *slot = Some(arg.value);
        }
        let Some(file) = file else {
            return Err(syn::Error::new(
                Span::call_site(),
                "missing `file = \"…\"`: the file form is `model!(file = \"specs/x.arch\", model = \"name\")`",
            ));
        };
        Ok(FileArgs { file, model })
    }
}

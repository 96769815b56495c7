//! Checked `ArchSpec` → `pub mod <model> { NAME, FAMILY, …, PARAMS, SOURCE, fn spec() }`.

use crate::spec_expr::arch_spec;
use arch_dsl::spec::{ArchSpec, Family};
use arch_dsl::stats::{stats, StatsOptions};
use proc_macro2::{Ident, Span, TokenStream};
use quote::quote;

/// Where the generated `SOURCE` constant gets its text.
pub enum SourceConst {
    /// The macro body, printed back as text.
    Inline(String),
    /// A spec file, embedded with `include_str!` so that editing it rebuilds the crate.
    File { path: String },
}

/// The module of one model, named `module`.
pub fn model_module(spec: &ArchSpec, module: &Ident, source: &SourceConst) -> TokenStream {
    let name = &spec.name;
    let family = family_name(spec.family);
    let (vocab, d_model, context) = (spec.vocab, spec.d_model, spec.context);
    let layers = spec.num_layers();
    let layer_kinds = spec.stacks().flat_map(|(stack, s)| {
        s.layers.iter().map(move |layer| {
            let kinds = layer.sublayers.iter().map(|sub| sub.kind());
            quote!((#stack, &[#(#kinds),*]))
        })
    });
    let params = stats(
        spec,
        &StatsOptions {
            seq: None,
            tokens: None,
        },
    )
    .params;
    let source = match source {
        SourceConst::Inline(text) => quote!(#text),
        SourceConst::File { path } => quote!(::core::include_str!(#path)),
    };
    let build = arch_spec(spec);
    let doc = format!(" The `{name}` model: {family}, {layers} layers, {params} parameters (checked by `model!`).");
    quote! {
        #[doc = #doc]
        #[allow(dead_code)]
        pub mod #module {
            /// The model's name in the spec.
            pub const NAME: &str = #name;
            /// `"encoder-only"`, `"decoder-only"` or `"encoder-decoder"`.
            pub const FAMILY: &str = #family;
            pub const VOCAB: u64 = #vocab;
            pub const D_MODEL: u64 = #d_model;
            /// The longest sequence the model is built for.
            pub const CONTEXT: u64 = #context;
            /// Layers over all stacks.
            pub const LAYERS: usize = #layers;
            /// One entry per layer, encoder first: the stack and its sublayer kinds in order.
            pub const LAYER_KINDS: &[(&str, &[&str])] = &[#(#layer_kinds),*];
            /// All parameters, as `archc stats` counts them (a tied matrix counts once).
            pub const PARAMS: u64 = #params;
            /// The whole spec text the model was read from (every model in it, not only this one).
            pub const SOURCE: &str = #source;
            /// The elaborated spec, exactly as checked at compile time. It is built from
            /// constants: nothing is parsed or read at run time, and it cannot fail.
            pub fn spec() -> ::arch_dsl::spec::ArchSpec {
                #build
            }

            /// The model bound to generated kernels: the spec is compiled by `archc` at
            /// first use (through its package cache, so later runs reuse the package) and
            /// run by its runtime on this machine's CPU.
            #[derive(Debug)]
            pub struct Model(::archc::model::Model);

            impl Model {
                /// Compiles the spec (or takes it from the cache) and loads the weights:
                /// safetensors in canonical or Hugging Face names. Weights that do not fit
                /// the spec are an error naming the tensor.
                pub fn load(
                    weights: impl ::core::convert::AsRef<::std::path::Path>,
                ) -> ::core::result::Result<Model, ::archc::model::ModelError> {
                    ::archc::model::Model::load(spec(), weights).map(Model)
                }

                /// The forward pass over `ids` ([batch, seq] row-major): `logits`
                /// [batch, seq, vocab] with an LM head, else `hidden` [batch, seq, d_model].
                pub fn forward(
                    &self,
                    ids: &[i64],
                    batch: usize,
                ) -> ::core::result::Result<::archc::model::Output, ::archc::model::ModelError> {
                    self.0.forward(ids, batch)
                }

                /// Greedy generation: [batch, seq + n_new] row-major, the prompt first.
                pub fn generate(
                    &self,
                    ids: &[i64],
                    batch: usize,
                    n_new: usize,
                ) -> ::core::result::Result<::std::vec::Vec<i64>, ::archc::model::ModelError> {
                    self.0.generate(ids, batch, n_new)
                }

                /// The untyped model: sampling and eos (`generate_with`), masks and
                /// decoder inputs (`forward_with`), sentence embeddings (`embed`).
                pub fn inner(&self) -> &::archc::model::Model {
                    &self.0
                }

                /// A trainer of this model (its train package compiled at first use):
                /// `step`, `save`, `resume`, `save_weights` (which `Model::load` reads).
                pub fn trainer(
                    init: ::archc::model::Init,
                    config: &::archc::model::TrainConfig,
                ) -> ::core::result::Result<::archc::model::Trainer, ::archc::model::ModelError> {
                    ::archc::model::Trainer::new(spec(), init, config)
                }
            }
        }
    }
}

fn family_name(family: Family) -> &'static str {
    match family {
        Family::EncoderOnly => "encoder-only",
        Family::DecoderOnly => "decoder-only",
        Family::EncoderDecoder => "encoder-decoder",
    }
}

/// The Rust name of a model's module: the model name itself, as a raw identifier if it is a
/// Rust keyword. Names no Rust module can have (`self`, `crate`, …) are an error.
pub fn module_ident(name: &str, span: Span) -> syn::Result<Ident> {
    let is_word = name
        .chars()
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
    if is_word && syn::parse_str::<Ident>(name).is_ok() {
        return Ok(Ident::new(name, span));
    }
    if is_word && !matches!(name, "_" | "self" | "Self" | "super" | "crate") {
        return Ok(Ident::new_raw(name, span));
    }
    Err(syn::Error::new(
        span,
        format!("model `{name}` cannot be the name of a Rust module; rename the model"),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn module_names() {
        let span = Span::call_site();
        assert_eq!(
            module_ident("gpt2", span).map(|i| i.to_string()).ok(),
            Some("gpt2".to_string())
        );
        assert_eq!(
            module_ident("type", span).map(|i| i.to_string()).ok(),
            Some("r#type".to_string())
        );
        assert!(module_ident("self", span).is_err());
        assert!(module_ident("_", span).is_err());
        assert!(module_ident("a-b", span).is_err());
    }
}

//! `ArchSpec` value → a Rust expression that builds the same value at run time.
//!
//! `spec()` of a generated module returns this expression, so the running program gets
//! exactly the spec that was checked at compile time, with no parsing, no file access and
//! no failure path. Every struct is destructured and every enum matched exhaustively: a
//! field or variant added to `arch_dsl::spec` breaks the build here, where work is needed.

use arch_dsl::spec::*;
use proc_macro2::{Literal, TokenStream};
use quote::quote;

pub fn arch_spec(spec: &ArchSpec) -> TokenStream {
    let ArchSpec {
        name,
        family,
        vocab,
        d_model,
        context,
        dtype,
        norm,
        placement,
        final_norm,
        position,
        embed,
        encoder,
        decoder,
        heads,
        objectives,
    } = spec;
    let name = string(name);
    let family = match family {
        Family::EncoderOnly => quote!(EncoderOnly),
        Family::DecoderOnly => quote!(DecoderOnly),
        Family::EncoderDecoder => quote!(EncoderDecoder),
    };
    let (vocab, d_model, context) = (u64_lit(*vocab), u64_lit(*d_model), u64_lit(*context));
    let dtype = match dtype {
        DType::F32 => quote!(F32),
        DType::Bf16 => quote!(Bf16),
        DType::F16 => quote!(F16),
    };
    let norm = norm_expr(norm);
    let placement = match placement {
        Placement::Pre => quote!(Pre),
        Placement::Post => quote!(Post),
    };
    let position = position_expr(position);
    let embed = embed_expr(embed);
    let encoder = option(encoder.as_ref().map(stack_expr));
    let decoder = option(decoder.as_ref().map(stack_expr));
    let heads = vec_of(heads.iter().map(head_expr));
    let objectives = vec_of(objectives.iter().map(objective_expr));
    quote! {
        ::arch_dsl::spec::ArchSpec {
            name: #name,
            family: ::arch_dsl::spec::Family::#family,
            vocab: #vocab,
            d_model: #d_model,
            context: #context,
            dtype: ::arch_dsl::spec::DType::#dtype,
            norm: #norm,
            placement: ::arch_dsl::spec::Placement::#placement,
            final_norm: #final_norm,
            position: #position,
            embed: #embed,
            encoder: #encoder,
            decoder: #decoder,
            heads: #heads,
            objectives: #objectives,
        }
    }
}

fn norm_expr(norm: &Norm) -> TokenStream {
    match norm {
        Norm::LayerNorm { eps, bias } => {
            let eps = f64_lit(*eps);
            quote!(::arch_dsl::spec::Norm::LayerNorm { eps: #eps, bias: #bias })
        }
        Norm::RmsNorm { eps } => {
            let eps = f64_lit(*eps);
            quote!(::arch_dsl::spec::Norm::RmsNorm { eps: #eps })
        }
    }
}

fn position_expr(position: &Position) -> TokenStream {
    match position {
        Position::Learned { offset } => {
            let offset = u64_lit(*offset);
            quote!(::arch_dsl::spec::Position::Learned { offset: #offset })
        }
        Position::Sinusoidal => quote!(::arch_dsl::spec::Position::Sinusoidal),
        Position::Rope(Rope {
            theta,
            fraction,
            style,
            scaling,
        }) => {
            let (theta, fraction) = (f64_lit(*theta), f64_lit(*fraction));
            let style = match style {
                RopeStyle::Half => quote!(Half),
                RopeStyle::Interleaved => quote!(Interleaved),
            };
            let scaling = match *scaling {
                RopeScaling::None => quote!(::arch_dsl::spec::RopeScaling::None),
                RopeScaling::Linear { factor } => {
                    let factor = f64_lit(factor);
                    quote!(::arch_dsl::spec::RopeScaling::Linear { factor: #factor })
                }
                RopeScaling::Llama3 {
                    factor,
                    low_freq_factor,
                    high_freq_factor,
                    original_context,
                } => {
                    let (factor, low, high) = (
                        f64_lit(factor),
                        f64_lit(low_freq_factor),
                        f64_lit(high_freq_factor),
                    );
                    let original = u64_lit(original_context);
                    quote!(::arch_dsl::spec::RopeScaling::Llama3 {
                        factor: #factor,
                        low_freq_factor: #low,
                        high_freq_factor: #high,
                        original_context: #original,
                    })
                }
            };
            quote! {
                ::arch_dsl::spec::Position::Rope(::arch_dsl::spec::Rope {
                    theta: #theta,
                    fraction: #fraction,
                    style: ::arch_dsl::spec::RopeStyle::#style,
                    scaling: #scaling,
                })
            }
        }
        Position::RelativeBias {
            buckets,
            max_distance,
        } => {
            let (buckets, max_distance) = (u64_lit(*buckets), u64_lit(*max_distance));
            quote!(::arch_dsl::spec::Position::RelativeBias { buckets: #buckets, max_distance: #max_distance })
        }
        Position::Alibi => quote!(::arch_dsl::spec::Position::Alibi),
        Position::None => quote!(::arch_dsl::spec::Position::None),
    }
}

fn embed_expr(embed: &Embed) -> TokenStream {
    let Embed {
        tied,
        factorized,
        segments,
        norm,
        scale,
    } = embed;
    let factorized = option(factorized.map(u64_lit));
    let (segments, scale) = (u64_lit(*segments), f64_lit(*scale));
    quote! {
        ::arch_dsl::spec::Embed {
            tied: #tied,
            factorized: #factorized,
            segments: #segments,
            norm: #norm,
            scale: #scale,
        }
    }
}

/// A stack; runs of identical layers become one `repeat`, so an 80-layer model is not
/// 80 copies of the same literal.
fn stack_expr(stack: &Stack) -> TokenStream {
    let Stack { share, layers } = stack;
    let share = match share {
        Share::None => quote!(None),
        Share::All => quote!(All),
    };
    let mut runs: Vec<(&Layer, usize)> = Vec::new();
    for layer in layers {
        match runs.last_mut() {
            Some((last, n)) if *last == layer => *n += 1,
            _ => runs.push((layer, 1)),
        }
    }
    let total = layers.len();
    let pushes = runs.iter().map(|(layer, n)| {
        let layer = layer_expr(layer);
        quote!(layers.extend(::core::iter::repeat(#layer).take(#n));)
    });
    quote! {
        ::arch_dsl::spec::Stack {
            share: ::arch_dsl::spec::Share::#share,
            layers: {
                let mut layers = ::std::vec::Vec::with_capacity(#total);
                #(#pushes)*
                layers
            },
        }
    }
}

fn layer_expr(layer: &Layer) -> TokenStream {
    let Layer { block, sublayers } = layer;
    let block = option(block.as_deref().map(string));
    let sublayers = vec_of(sublayers.iter().map(sublayer_expr));
    quote!(::arch_dsl::spec::Layer { block: #block, sublayers: #sublayers })
}

fn sublayer_expr(sublayer: &Sublayer) -> TokenStream {
    match sublayer {
        Sublayer::Attention(Attention {
            heads,
            kv_heads,
            head_dim,
            mask,
            bias,
            scale,
        }) => {
            let (heads, kv_heads, head_dim) =
                (u64_lit(*heads), u64_lit(*kv_heads), u64_lit(*head_dim));
            let mask = match mask {
                Mask::Causal => quote!(::arch_dsl::spec::Mask::Causal),
                Mask::Bidirectional => quote!(::arch_dsl::spec::Mask::Bidirectional),
                Mask::Sliding { window } => {
                    let window = u64_lit(*window);
                    quote!(::arch_dsl::spec::Mask::Sliding { window: #window })
                }
            };
            let (bias, scale) = (attn_bias(*bias), f64_lit(*scale));
            quote! {
                ::arch_dsl::spec::Sublayer::Attention(::arch_dsl::spec::Attention {
                    heads: #heads, kv_heads: #kv_heads, head_dim: #head_dim,
                    mask: #mask, bias: #bias, scale: #scale,
                })
            }
        }
        Sublayer::CrossAttention(CrossAttention {
            heads,
            kv_heads,
            head_dim,
            bias,
            scale,
        }) => {
            let (heads, kv_heads, head_dim) =
                (u64_lit(*heads), u64_lit(*kv_heads), u64_lit(*head_dim));
            let (bias, scale) = (attn_bias(*bias), f64_lit(*scale));
            quote! {
                ::arch_dsl::spec::Sublayer::CrossAttention(::arch_dsl::spec::CrossAttention {
                    heads: #heads, kv_heads: #kv_heads, head_dim: #head_dim, bias: #bias, scale: #scale,
                })
            }
        }
        Sublayer::Mlp(Mlp { hidden, act, bias }) => {
            let (hidden, act) = (u64_lit(*hidden), activation(*act));
            quote!(::arch_dsl::spec::Sublayer::Mlp(::arch_dsl::spec::Mlp { hidden: #hidden, act: #act, bias: #bias }))
        }
        Sublayer::Mamba(Mamba {
            d_state,
            d_conv,
            expand,
            dt_rank,
            conv_bias,
            bias,
        }) => {
            let (d_state, d_conv) = (u64_lit(*d_state), u64_lit(*d_conv));
            let (expand, dt_rank) = (u64_lit(*expand), u64_lit(*dt_rank));
            quote! {
                ::arch_dsl::spec::Sublayer::Mamba(::arch_dsl::spec::Mamba {
                    d_state: #d_state, d_conv: #d_conv, expand: #expand, dt_rank: #dt_rank,
                    conv_bias: #conv_bias, bias: #bias,
                })
            }
        }
        Sublayer::TimeMix(TimeMix {}) => quote!(::arch_dsl::spec::Sublayer::TimeMix(
            ::arch_dsl::spec::TimeMix {}
        )),
        Sublayer::ChannelMix(ChannelMix { hidden }) => {
            let hidden = u64_lit(*hidden);
            quote!(::arch_dsl::spec::Sublayer::ChannelMix(::arch_dsl::spec::ChannelMix { hidden: #hidden }))
        }
        Sublayer::Ssm(Ssm {
            d_state,
            discretization,
            init,
            act,
        }) => {
            let (d_state, act) = (u64_lit(*d_state), activation(*act));
            let discretization = match discretization {
                Discretization::Zoh => quote!(Zoh),
                Discretization::Bilinear => quote!(Bilinear),
            };
            let init = match init {
                SsmInit::S4dLin => quote!(S4dLin),
                SsmInit::S4dInv => quote!(S4dInv),
                SsmInit::Legs => quote!(Legs),
            };
            quote! {
                ::arch_dsl::spec::Sublayer::Ssm(::arch_dsl::spec::Ssm {
                    d_state: #d_state,
                    discretization: ::arch_dsl::spec::Discretization::#discretization,
                    init: ::arch_dsl::spec::SsmInit::#init,
                    act: #act,
                })
            }
        }
        Sublayer::Ttt(Ttt {
            heads,
            inner,
            mini_batch,
            lr,
            gate,
        }) => {
            let (heads, mini_batch, lr) = (u64_lit(*heads), u64_lit(*mini_batch), f64_lit(*lr));
            let inner = match inner {
                TttInner::Linear => quote!(Linear),
                TttInner::Mlp => quote!(Mlp),
            };
            quote! {
                ::arch_dsl::spec::Sublayer::Ttt(::arch_dsl::spec::Ttt {
                    heads: #heads, inner: ::arch_dsl::spec::TttInner::#inner,
                    mini_batch: #mini_batch, lr: #lr, gate: #gate,
                })
            }
        }
    }
}

fn attn_bias(bias: AttnBias) -> TokenStream {
    match bias {
        AttnBias::None => quote!(::arch_dsl::spec::AttnBias::None),
        AttnBias::All => quote!(::arch_dsl::spec::AttnBias::All),
        AttnBias::Qkv => quote!(::arch_dsl::spec::AttnBias::Qkv),
    }
}

fn activation(act: Activation) -> TokenStream {
    let variant = match act {
        Activation::Gelu => quote!(Gelu),
        Activation::GeluTanh => quote!(GeluTanh),
        Activation::Relu => quote!(Relu),
        Activation::Silu => quote!(Silu),
        Activation::Swiglu => quote!(Swiglu),
        Activation::Geglu => quote!(Geglu),
        Activation::Reglu => quote!(Reglu),
    };
    quote!(::arch_dsl::spec::Activation::#variant)
}

fn head_expr(head: &Head) -> TokenStream {
    match head {
        Head::Lm { scale, bias } => {
            let scale = f64_lit(*scale);
            quote!(::arch_dsl::spec::Head::Lm { scale: #scale, bias: #bias })
        }
        Head::MaskedLm => quote!(::arch_dsl::spec::Head::MaskedLm),
        Head::Classifier { labels, pooler } => {
            let labels = u64_lit(*labels);
            quote!(::arch_dsl::spec::Head::Classifier { labels: #labels, pooler: #pooler })
        }
        Head::Discriminator => quote!(::arch_dsl::spec::Head::Discriminator),
    }
}

fn objective_expr(objective: &Objective) -> TokenStream {
    match objective {
        Objective::NextToken => quote!(::arch_dsl::spec::Objective::NextToken),
        Objective::Mlm {
            rate,
            mask,
            random,
            dynamic,
        } => {
            let (rate, mask, random) = (f64_lit(*rate), f64_lit(*mask), f64_lit(*random));
            quote!(::arch_dsl::spec::Objective::Mlm { rate: #rate, mask: #mask, random: #random, dynamic: #dynamic })
        }
        Objective::Nsp => quote!(::arch_dsl::spec::Objective::Nsp),
        Objective::Sop => quote!(::arch_dsl::spec::Objective::Sop),
        Objective::Rtd { generator, weight } => {
            let (generator, weight) = (arch_spec(generator), f64_lit(*weight));
            quote! {
                ::arch_dsl::spec::Objective::Rtd {
                    generator: ::std::boxed::Box::new(#generator),
                    weight: #weight,
                }
            }
        }
        Objective::SpanCorruption { rate, mean_span } => {
            let (rate, mean_span) = (f64_lit(*rate), f64_lit(*mean_span));
            quote!(::arch_dsl::spec::Objective::SpanCorruption { rate: #rate, mean_span: #mean_span })
        }
        Objective::Denoise {
            token_mask,
            token_delete,
            text_infill,
            lambda,
            sentence_permute,
            document_rotate,
        } => {
            let (token_mask, token_delete) = (f64_lit(*token_mask), f64_lit(*token_delete));
            let (text_infill, lambda) = (f64_lit(*text_infill), f64_lit(*lambda));
            quote! {
                ::arch_dsl::spec::Objective::Denoise {
                    token_mask: #token_mask, token_delete: #token_delete, text_infill: #text_infill,
                    lambda: #lambda, sentence_permute: #sentence_permute, document_rotate: #document_rotate,
                }
            }
        }
        Objective::Dpo { beta } => {
            let beta = f64_lit(*beta);
            quote!(::arch_dsl::spec::Objective::Dpo { beta: #beta })
        }
    }
}

fn string(s: &str) -> TokenStream {
    quote!(::std::string::String::from(#s))
}

fn u64_lit(v: u64) -> Literal {
    Literal::u64_suffixed(v)
}

/// A float literal that reads back bit for bit (Rust prints the shortest such decimal). A
/// value no literal can spell (infinity, NaN) is written by its bits; checked specs hold
/// none, but the generator must not panic on one.
fn f64_lit(v: f64) -> TokenStream {
    if v.is_finite() {
        let lit = Literal::f64_suffixed(v);
        quote!(#lit)
    } else {
        let bits = Literal::u64_suffixed(v.to_bits());
        quote!(::core::primitive::f64::from_bits(#bits))
    }
}

fn option(value: Option<impl quote::ToTokens>) -> TokenStream {
    match value {
        Some(v) => quote!(::core::option::Option::Some(#v)),
        None => quote!(::core::option::Option::None),
    }
}

fn vec_of(items: impl Iterator<Item = TokenStream>) -> TokenStream {
    quote!(::std::vec![#(#items),*])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn floats_round_trip_and_never_panic() {
        for v in [1e-5, 0.5, 500000.0, -0.5, 1e300, 5e-324] {
            let text = f64_lit(v).to_string().replace(' ', "");
            let digits = text.trim_end_matches("f64");
            assert_eq!(digits.parse::<f64>().ok(), Some(v), "{text}");
        }
        assert!(f64_lit(f64::NAN).to_string().contains("from_bits"));
        assert!(f64_lit(f64::INFINITY).to_string().contains("from_bits"));
    }
}

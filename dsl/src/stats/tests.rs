//! Parameter counts checked against Hugging Face models instantiated on the meta device
//! (transformers 5.x, `sum(p.numel() for p in model.parameters())`), and against
//! ttt-lm-pytorch's `TTTForCausalLM` for TTT.

use super::*;
use crate::spec::*;

fn model(
    name: &str,
    vocab: u64,
    d_model: u64,
    context: u64,
    norm: Norm,
    placement: Placement,
) -> ArchSpec {
    ArchSpec {
        name: name.to_string(),
        family: Family::DecoderOnly,
        vocab,
        d_model,
        context,
        dtype: DType::F32,
        norm,
        placement,
        final_norm: placement == Placement::Pre,
        position: Position::Learned { offset: 0 },
        embed: Embed {
            tied: true,
            factorized: None,
            segments: 0,
            norm: false,
            scale: 1.0,
        },
        encoder: None,
        decoder: None,
        heads: vec![],
        objectives: vec![],
    }
}

fn ln(eps: f64) -> Norm {
    Norm::LayerNorm { eps, bias: true }
}

fn stack(layers: usize, sublayers: Vec<Sublayer>) -> Stack {
    let layer = Layer {
        block: None,
        sublayers,
    };
    Stack {
        share: Share::None,
        layers: vec![layer; layers],
    }
}

fn attn(heads: u64, head_dim: u64, mask: Mask, bias: AttnBias) -> Sublayer {
    Sublayer::Attention(Attention {
        heads,
        kv_heads: heads,
        head_dim,
        mask,
        bias,
        scale: 1.0,
    })
}

fn gqa(heads: u64, kv_heads: u64, head_dim: u64) -> Sublayer {
    Sublayer::Attention(Attention {
        heads,
        kv_heads,
        head_dim,
        mask: Mask::Causal,
        bias: AttnBias::None,
        scale: 1.0,
    })
}

fn cross(heads: u64, head_dim: u64, bias: AttnBias) -> Sublayer {
    Sublayer::CrossAttention(CrossAttention {
        heads,
        kv_heads: heads,
        head_dim,
        bias,
        scale: 1.0,
    })
}

fn mlp(hidden: u64, act: Activation, bias: bool) -> Sublayer {
    Sublayer::Mlp(Mlp { hidden, act, bias })
}

fn lm() -> Head {
    Head::Lm {
        scale: 1.0,
        bias: false,
    }
}

fn count(spec: &ArchSpec) -> Stats {
    stats(spec, &StatsOptions::default())
}

fn bert(name: &str, vocab: u64, d: u64, layers: usize, heads: u64) -> ArchSpec {
    let mut s = model(name, vocab, d, 512, ln(1e-12), Placement::Post);
    s.family = Family::EncoderOnly;
    s.embed.segments = 2;
    s.embed.norm = true;
    let sub = vec![
        attn(heads, d / heads, Mask::Bidirectional, AttnBias::All),
        mlp(4 * d, Activation::Gelu, true),
    ];
    s.encoder = Some(stack(layers, sub));
    s.heads = vec![
        Head::MaskedLm,
        Head::Classifier {
            labels: 2,
            pooler: true,
        },
    ];
    s
}

#[test]
fn bert_base_matches_hf() {
    let s = count(&bert("bert_base", 30522, 768, 12, 12));
    // BertModel (backbone + pooler) and BertForPreTraining (+ MLM head + NSP classifier).
    assert_eq!(
        s.part("backbone").unwrap_or(0) + s.params_pooler,
        109_482_240
    );
    assert_eq!(s.params, 110_106_428);
    let large = count(&bert("bert_large", 30522, 1024, 24, 16));
    assert_eq!(
        large.part("backbone").unwrap_or(0) + large.params_pooler,
        335_141_888
    );
}

#[test]
fn roberta_base_matches_hf() {
    let mut spec = bert("roberta_base", 50265, 768, 12, 12);
    spec.norm = ln(1e-5);
    spec.position = Position::Learned { offset: 2 };
    spec.embed.segments = 1;
    spec.heads = vec![Head::MaskedLm];
    assert_eq!(count(&spec).params, 124_697_433); // RobertaForMaskedLM
}

#[test]
fn albert_base_matches_hf() {
    let mut spec = bert("albert_base", 30000, 768, 12, 12);
    spec.embed.factorized = Some(128);
    if let Some(enc) = spec.encoder.as_mut() {
        enc.share = Share::All;
    }
    let s = count(&spec);
    assert_eq!(
        s.part("backbone").unwrap_or(0) + s.params_pooler,
        11_683_584
    ); // AlbertModel
    assert_eq!(s.params, 11_813_810); // AlbertForPreTraining (MLM + SOP)
}

fn electra_generator() -> ArchSpec {
    let mut s = bert("electra_small_generator", 30522, 256, 12, 4);
    s.embed.factorized = Some(128);
    s.encoder = Some(stack(
        12,
        vec![
            attn(4, 64, Mask::Bidirectional, AttnBias::All),
            mlp(1024, Activation::Gelu, true),
        ],
    ));
    s.heads = vec![Head::MaskedLm];
    s
}

#[test]
fn electra_small_matches_hf() {
    let generator = electra_generator();
    assert_eq!(count(&generator).params, 13_546_682); // ElectraForMaskedLM, same widths
    let mut disc = generator.clone();
    disc.name = "electra_small".into();
    disc.heads = vec![Head::Discriminator];
    disc.objectives = vec![Objective::Rtd {
        generator: Box::new(generator),
        weight: 50.0,
    }];
    let s = count(&disc);
    assert_eq!(s.params, 13_549_057); // ElectraForPreTraining
    assert_eq!(s.generator_params, Some(13_546_682));
}

fn gpt2(d: u64, layers: usize, heads: u64) -> ArchSpec {
    let mut s = model("gpt2", 50257, d, 1024, ln(1e-5), Placement::Pre);
    let sub = vec![
        attn(heads, d / heads, Mask::Causal, AttnBias::All),
        mlp(4 * d, Activation::GeluTanh, true),
    ];
    s.decoder = Some(stack(layers, sub));
    s.heads = vec![lm()];
    s
}

#[test]
fn gpt2_matches_hf() {
    assert_eq!(count(&gpt2(768, 12, 12)).params, 124_439_808); // GPT2LMHeadModel
    assert_eq!(count(&gpt2(1600, 48, 25)).params, 1_557_611_200);
}

fn llama(vocab: u64, hidden: u64, kv_heads: u64) -> ArchSpec {
    let mut s = model(
        "llama",
        vocab,
        4096,
        4096,
        Norm::RmsNorm { eps: 1e-5 },
        Placement::Pre,
    );
    s.position = Position::Rope(Rope {
        theta: 1e4,
        fraction: 1.0,
        style: RopeStyle::Half,
        scaling: RopeScaling::None,
    });
    s.embed.tied = false;
    s.decoder = Some(stack(
        32,
        vec![
            gqa(32, kv_heads, 128),
            mlp(hidden, Activation::Swiglu, false),
        ],
    ));
    s.heads = vec![lm()];
    s
}

#[test]
fn llama_matches_hf() {
    assert_eq!(count(&llama(32000, 11008, 32)).params, 6_738_415_616); // LLaMA-2 7B
    assert_eq!(count(&llama(128256, 14336, 8)).params, 8_030_261_248); // LLaMA-3 8B
}

fn mamba_130m() -> ArchSpec {
    let mut s = model(
        "mamba_130m",
        50280,
        768,
        2048,
        Norm::RmsNorm { eps: 1e-5 },
        Placement::Pre,
    );
    s.position = Position::None;
    let m = Mamba {
        d_state: 16,
        d_conv: 4,
        expand: 2,
        dt_rank: 48,
        conv_bias: true,
        bias: false,
    };
    s.decoder = Some(stack(24, vec![Sublayer::Mamba(m)]));
    s.heads = vec![lm()];
    s
}

#[test]
fn mamba_130m_matches_hf() {
    let s = count(&mamba_130m());
    assert_eq!(s.params, 129_135_360); // MambaForCausalLM, tied
    assert_eq!(s.state_bytes_per_token, 0);
    assert_eq!(s.state_bytes_fixed, 24 * 1536 * (16 + 3) * 4);
}

fn t5_small() -> ArchSpec {
    let mut s = model(
        "t5_small",
        32128,
        512,
        512,
        Norm::RmsNorm { eps: 1e-6 },
        Placement::Pre,
    );
    s.family = Family::EncoderDecoder;
    s.position = Position::RelativeBias {
        buckets: 32,
        max_distance: 128,
    };
    let relu = mlp(2048, Activation::Relu, false);
    s.encoder = Some(stack(
        6,
        vec![
            attn(8, 64, Mask::Bidirectional, AttnBias::None),
            relu.clone(),
        ],
    ));
    let dec = vec![
        attn(8, 64, Mask::Causal, AttnBias::None),
        cross(8, 64, AttnBias::None),
        relu,
    ];
    s.decoder = Some(stack(6, dec));
    s.heads = vec![Head::Lm {
        scale: 512f64.powf(-0.5),
        bias: false,
    }];
    s
}

#[test]
fn t5_small_matches_hf() {
    let s = count(&t5_small());
    assert_eq!(s.params, 60_506_624); // T5ForConditionalGeneration, tied
    assert_eq!(s.cross_state_bytes_per_encoder_token, 6 * 2 * 512 * 4);
}

#[test]
fn bart_base_matches_hf() {
    let mut s = model("bart_base", 50265, 768, 1024, ln(1e-5), Placement::Post);
    s.family = Family::EncoderDecoder;
    s.position = Position::Learned { offset: 2 };
    s.embed.norm = true;
    let fc = mlp(3072, Activation::Gelu, true);
    s.encoder = Some(stack(
        6,
        vec![attn(12, 64, Mask::Bidirectional, AttnBias::All), fc.clone()],
    ));
    s.decoder = Some(stack(
        6,
        vec![
            attn(12, 64, Mask::Causal, AttnBias::All),
            cross(12, 64, AttnBias::All),
            fc,
        ],
    ));
    s.heads = vec![lm()];
    // BartForConditionalGeneration; final_logits_bias is a buffer, not a parameter.
    assert_eq!(count(&s).params, 139_420_416);
}

fn rwkv4_169m() -> ArchSpec {
    let mut s = model("rwkv4_169m", 50277, 768, 1024, ln(1e-5), Placement::Pre);
    s.position = Position::None;
    s.embed.tied = false;
    s.embed.norm = true;
    let sub = vec![
        Sublayer::TimeMix(TimeMix {}),
        Sublayer::ChannelMix(ChannelMix { hidden: 3072 }),
    ];
    s.decoder = Some(stack(12, sub));
    s.heads = vec![lm()];
    s
}

#[test]
fn rwkv4_169m_matches_hf() {
    let s = count(&rwkv4_169m());
    assert_eq!(s.params, 169_342_464); // RwkvForCausalLM
    assert_eq!(s.state_bytes_fixed, 12 * 5 * 768 * 4);
}

fn ttt_125m(gate: bool, inner: TttInner) -> ArchSpec {
    let mut s = model(
        "ttt_125m",
        32000,
        768,
        2048,
        Norm::RmsNorm { eps: 1e-6 },
        Placement::Pre,
    );
    s.position = Position::Rope(Rope {
        theta: 1e4,
        fraction: 1.0,
        style: RopeStyle::Half,
        scaling: RopeScaling::None,
    });
    let t = Ttt {
        heads: 12,
        inner,
        mini_batch: 16,
        lr: 1.0,
        gate,
    };
    s.decoder = Some(stack(
        12,
        vec![Sublayer::Ttt(t), mlp(2048, Activation::Swiglu, false)],
    ));
    s.heads = vec![lm()];
    s
}

#[test]
fn ttt_125m_matches_reference() {
    // TTTForCausalLM(TTTConfig(**TTT_STANDARD_CONFIGS["125m"], use_gate=…, ttt_layer_type=…)).
    assert_eq!(
        count(&ttt_125m(false, TttInner::Linear)).params,
        110_276_688
    );
    assert_eq!(count(&ttt_125m(false, TttInner::Mlp)).params, 114_442_320);
    assert_eq!(count(&ttt_125m(true, TttInner::Linear)).params, 117_354_576);
    assert_eq!(count(&ttt_125m(true, TttInner::Mlp)).params, 121_520_208);
}

#[test]
fn s4d_counts_every_kernel_tensor() {
    let mut s = model("s4_bytes", 256, 512, 4096, ln(1e-5), Placement::Pre);
    s.position = Position::None;
    let ssm = Ssm {
        d_state: 64,
        discretization: Discretization::Bilinear,
        init: SsmInit::S4dLin,
        act: Activation::Gelu,
    };
    s.decoder = Some(stack(
        8,
        vec![Sublayer::Ssm(ssm), mlp(1024, Activation::Gelu, false)],
    ));
    let st = count(&s);
    // D + log_dt + C (32 complex) + log_A_real + A_imag + Conv1d(512, 1024, 1) with bias.
    let per_layer = 512 + 512 + 512 * 32 * 2 + 2 * 512 * 32 + 1024 * 512 + 1024;
    assert_eq!(st.params_by_kind.get("ssm"), Some(&(8 * per_layer)));
    assert_eq!(st.state_bytes_fixed, 8 * 512 * 64 * 4);
}

#[test]
fn kinds_sum_to_layers_and_parts_to_total() {
    for spec in [
        t5_small(),
        rwkv4_169m(),
        mamba_130m(),
        bert("b", 30522, 768, 12, 12),
    ] {
        let s = count(&spec);
        assert_eq!(s.params_by_kind.values().sum::<u64>(), s.params_layers);
        assert_eq!(s.part("all"), Some(s.params));
        assert_eq!(s.params_non_embedding, s.params - s.params_embedding);
        assert_eq!(s.part("nonsense"), None);
    }
}

#[test]
fn gpt2_flops_are_two_n_plus_attention() {
    let spec = gpt2(768, 12, 12);
    let s = stats(
        &spec,
        &StatsOptions {
            seq: Some(1024),
            tokens: Some(1e9),
        },
    );
    let matmuls = 12.0 * (4.0 * 768.0 * 768.0 + 2.0 * 768.0 * 3072.0) + 50257.0 * 768.0;
    let attention = 12.0 * 4.0 * 512.5 * 768.0;
    assert!((s.flops_per_token - (2.0 * matmuls + attention)).abs() < 1.0);
    assert!((s.train_flops - 6.0 * 124_439_808.0 * 1e9).abs() < 1e6);
    assert_eq!(s.state_bytes_per_token, 12 * 2 * 768 * 4);
}

#[test]
fn sliding_window_caps_keys_and_cache() {
    let mut spec = gpt2(768, 1, 12);
    if let Some(Sublayer::Attention(a)) = spec
        .decoder
        .as_mut()
        .and_then(|d| d.layers[0].sublayers.first_mut())
    {
        a.mask = Mask::Sliding { window: 4 };
    }
    let s = stats(
        &spec,
        &StatsOptions {
            seq: Some(8),
            tokens: None,
        },
    );
    // Queries see 1, 2, 3, 4, 4, 4, 4, 4 keys: mean 3.25.
    let matmuls = 4.0 * 768.0 * 768.0 + 2.0 * 768.0 * 3072.0 + 50257.0 * 768.0;
    assert!((s.flops_per_token - (2.0 * matmuls + 4.0 * 3.25 * 768.0)).abs() < 1e-6);
    assert_eq!(s.state_bytes_at_seq, 4 * 2 * 768 * 4);
}

#[test]
fn scaling_laws_use_the_published_constants() {
    let s = count(&llama(32000, 11008, 32));
    let n = s.params as f64;
    assert_eq!(s.chinchilla_tokens, 20.0 * n);
    let expected = 1.69 + 406.4 / n.powf(0.34) + 410.7 / (20.0 * n).powf(0.28);
    assert!((s.chinchilla_loss - expected).abs() < 1e-12);
    let kaplan = (8.8e13 / s.params_non_embedding as f64).powf(0.076);
    assert!((s.kaplan_loss - kaplan).abs() < 1e-12);
    assert_eq!(s.weights_bytes_bf16, 2 * s.params);
}

#[test]
fn json_has_the_documented_fields() {
    let json = serde_json::to_value(count(&gpt2(768, 12, 12))).unwrap_or_default();
    for field in [
        "params",
        "params_embedding",
        "params_layers",
        "params_pooler",
        "params_head",
        "params_by_kind",
        "params_non_embedding",
        "flops_per_token",
        "train_flops",
        "chinchilla_tokens",
        "chinchilla_loss",
        "kaplan_loss",
        "weights_bytes",
        "state_bytes_per_token",
        "state_bytes_fixed",
    ] {
        assert!(json.get(field).is_some(), "missing {field}");
    }
    assert_eq!(
        json["params_by_kind"]["attention"],
        12 * (4 * 768 * 768 + 4 * 768)
    );
}

#[test]
fn table_shows_exact_and_short_counts() {
    let spec = gpt2(768, 12, 12);
    let table = render_table(&count(&spec), &spec);
    assert!(table.contains("124,439,808"), "{table}");
    assert!(table.contains("124.44M"), "{table}");
    assert!(table
        .lines()
        .any(|l| l.trim_start().starts_with("attention")));
}

#[test]
fn number_formats() {
    assert_eq!(table::thousands(0), "0");
    assert_eq!(table::thousands(1_000), "1,000");
    assert_eq!(table::thousands(124_439_808), "124,439,808");
    assert_eq!(table::si(6.738e9), "6.74B");
    assert_eq!(table::bytes(1536), "1.50 KiB");
}

/// One of every sublayer kind, every size `n` (attention as n heads × 1 and 1 head × n).
fn every_sublayer(n: u64) -> Vec<Sublayer> {
    let attention = |heads, head_dim, mask| {
        Sublayer::Attention(Attention {
            heads,
            kv_heads: heads,
            head_dim,
            mask,
            bias: AttnBias::All,
            scale: 1.0,
        })
    };
    vec![
        attention(n, 1, Mask::Causal),
        attention(1, n, Mask::Bidirectional),
        attention(n, 1, Mask::Sliding { window: n }),
        attention(1, n, Mask::Sliding { window: 1 }),
        cross(n, 1, AttnBias::Qkv),
        cross(1, n, AttnBias::All),
        mlp(n, Activation::Swiglu, true),
        mlp(n, Activation::Gelu, true),
        Sublayer::Mamba(Mamba {
            d_state: n,
            d_conv: n,
            expand: n,
            dt_rank: n,
            conv_bias: true,
            bias: true,
        }),
        Sublayer::TimeMix(TimeMix {}),
        Sublayer::ChannelMix(ChannelMix { hidden: n }),
        Sublayer::Ssm(Ssm {
            d_state: n,
            discretization: Discretization::Zoh,
            init: SsmInit::S4dLin,
            act: Activation::Gelu,
        }),
        Sublayer::Ttt(Ttt {
            heads: 1,
            inner: TttInner::Mlp,
            mini_batch: n,
            lr: 1.0,
            gate: true,
        }),
        Sublayer::Ttt(Ttt {
            heads: n,
            inner: TttInner::Linear,
            mini_batch: n,
            lr: 1.0,
            gate: false,
        }),
    ]
}

/// An encoder-decoder with every size `n`, `layers` layers of every sublayer kind per stack,
/// every head kind, a factorized embedding, segments and a learned position table at offset `n`.
fn every_feature(n: u64, layers: usize) -> ArchSpec {
    let mut s = model("every_feature", n, n, n, ln(1e-5), Placement::Pre);
    s.family = Family::EncoderDecoder;
    s.position = Position::Learned { offset: n };
    s.embed = Embed {
        tied: false,
        factorized: Some(n.saturating_sub(1).max(1)),
        segments: n,
        norm: true,
        scale: 1.0,
    };
    s.encoder = Some(stack(layers, every_sublayer(n)));
    s.decoder = Some(stack(layers, every_sublayer(n)));
    s.heads = vec![
        Head::Lm {
            scale: 1.0,
            bias: true,
        },
        Head::MaskedLm,
        Head::Classifier {
            labels: n,
            pooler: true,
        },
        Head::Discriminator,
    ];
    s
}

/// `stats` and `render_table` return, every float is finite and non-negative, and the JSON has
/// no `null`.
fn check_total(spec: &ArchSpec, opts: &StatsOptions) -> Stats {
    let s = stats(spec, opts);
    for (name, x) in [
        ("flops_per_token", s.flops_per_token),
        ("tokens", s.tokens),
        ("train_flops", s.train_flops),
        ("train_flops_detailed", s.train_flops_detailed),
        ("chinchilla_tokens", s.chinchilla_tokens),
        ("chinchilla_loss", s.chinchilla_loss),
        ("kaplan_loss", s.kaplan_loss),
    ] {
        assert!(x.is_finite() && x >= 0.0, "{name} = {x}");
    }
    assert!(s.params_non_embedding <= s.params);
    let json = serde_json::to_string(&s);
    assert!(json.is_ok(), "{json:?}");
    let json = json.unwrap_or_default();
    assert!(!json.contains("null"), "{json}");
    let table = render_table(&s, spec);
    assert!(table.contains("parameters"), "{table}");
    assert!(!table.contains("NaN") && !table.contains("inf"), "{table}");
    s
}

#[test]
fn absurd_sizes_saturate_instead_of_overflowing() {
    let huge = i64::MAX as u64;
    let mut spec = every_feature(huge, 100_000);
    spec.objectives = vec![Objective::Rtd {
        generator: Box::new(every_feature(huge, 3)),
        weight: 50.0,
    }];
    for tied in [false, true] {
        spec.embed.tied = tied;
        let s = check_total(&spec, &StatsOptions::default());
        assert_eq!(s.params, u64::MAX);
        assert_eq!(s.generator_params, Some(u64::MAX));
        assert_eq!(s.weights_bytes, u64::MAX);
        assert_eq!(s.state_bytes_at_seq, u64::MAX);
        assert_eq!(s.seq, huge);
        assert!(s.flops_per_token > 1e40, "{}", s.flops_per_token);
        let table = render_table(&s, &spec);
        assert!(table.contains("18,446,744,073,709,551,615"), "{table}");
    }
    // Shared layers, relative bias, a caller's huge T and D, f16 (fewer layers: it is slow).
    spec.encoder = Some(stack(1_000, every_sublayer(huge)));
    spec.decoder = Some(stack(1_000, every_sublayer(huge)));
    spec.dtype = DType::F16;
    spec.position = Position::RelativeBias {
        buckets: huge,
        max_distance: huge,
    };
    if let Some(enc) = spec.encoder.as_mut() {
        enc.share = Share::All;
    }
    for tokens in [
        Some(f64::MAX),
        Some(f64::INFINITY),
        Some(f64::NAN),
        Some(-1.0),
        None,
    ] {
        let opts = StatsOptions {
            seq: Some(u64::MAX),
            tokens,
        };
        let s = check_total(&spec, &opts);
        assert_eq!(s.params, u64::MAX);
    }
    // u64::MAX everywhere, not only i64::MAX.
    check_total(&every_feature(u64::MAX, 2), &StatsOptions::default());
}

#[test]
fn unit_and_empty_sizes_stay_finite() {
    let ones = every_feature(1, 1);
    let opts = StatsOptions {
        seq: Some(1),
        tokens: None,
    };
    let s = check_total(&ones, &opts);
    assert_eq!(s.seq, 1);
    assert!(s.params > 0 && s.params < 1_000);
    assert_eq!(s.chinchilla_tokens, 20.0 * s.params as f64);
    assert_eq!(s.params_by_kind.values().sum::<u64>(), s.params_layers);
    // Nothing at all: zero-width, no layers, no data, T = 0. No NaN, no infinity.
    let mut empty = every_feature(0, 0);
    empty.heads.clear();
    empty.position = Position::None;
    empty.embed.norm = false;
    empty.final_norm = false;
    for tokens in [Some(0.0), None] {
        let s = check_total(
            &empty,
            &StatsOptions {
                seq: Some(0),
                tokens,
            },
        );
        assert_eq!(s.params, 0);
        assert_eq!(s.flops_per_token, 0.0);
        assert_eq!(s.chinchilla_loss, f64::MAX);
        assert_eq!(s.kaplan_loss, f64::MAX);
    }
    // Zero-sized layers and heads, including a TTT layer with no heads.
    check_total(&every_feature(0, 2), &StatsOptions::default());
}

#[test]
fn saturating_counts_are_min_of_true_value_and_max() {
    use super::sat::{finite, sum, Sat};
    assert_eq!((Sat(u64::MAX) * 2 * std::hint::black_box(0)).get(), 0);
    assert_eq!((3 * Sat(u64::MAX / 2)).get(), u64::MAX);
    assert_eq!((Sat(u64::MAX) + 1).get(), u64::MAX);
    assert_eq!((2 * Sat(3) + 4).get(), 10);
    assert_eq!(sum([u64::MAX, 1, 2]), u64::MAX);
    assert_eq!(finite(f64::NAN), 0.0);
    assert_eq!(finite(f64::INFINITY), f64::MAX);
    assert_eq!(finite(-1.0), 0.0);
    assert_eq!(finite(2.5), 2.5);
}

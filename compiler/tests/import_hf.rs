//! `archc import-hf`: Hugging Face config.json → `.arch`.
//!
//! - Real, full-size configs (tests/data/hf_configs/, written from the published Hub files)
//!   import, check, are canonical, and `arch_dsl::stats` counts exactly the parameters of the
//!   Hugging Face class named by `architectures[0]`.
//! - The tiny fixtures of tests/fixtures/hf/<name>/ (config.json saved by transformers and a
//!   hand-written model.arch): importing config.json gives the ArchSpec that model.arch
//!   elaborates to, modulo the model name and what config.json cannot say.
//! - Errors: unknown model_type, missing keys, malformed JSON, … exit 1 with a message that
//!   names the problem, never a panic.
//!
//! Parameter counts were measured with tests/data/hf_configs/count_params.py (transformers
//! 5.24.0, torch 2.15.0, HF_HUB_OFFLINE=1): `AutoConfig.for_model(**config)`, then
//! `getattr(transformers, architecture)(config)` under `torch.device("meta")`, summing
//! `p.numel()` over `model.parameters()` (each shared tensor once).

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use arch_dsl::elab::Program;
use arch_dsl::stats::{stats, StatsOptions};
use arch_dsl::{ArchSpec, Head, Objective};
use archc::import_hf::{import, ImportError, Imported, Options};
use serde_json::Value;

fn data(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data/hf_configs")
        .join(name)
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn opts(source: &str) -> Options {
    Options {
        source: source.to_string(),
        ..Options::default()
    }
}

fn import_file(name: &str) -> Imported {
    import(&read(&data(name)), &opts(name)).unwrap_or_else(|e| panic!("{name}: {e}"))
}

/// A config from tests/data with `edit` applied to its JSON object.
fn import_edited(
    name: &str,
    edit: impl FnOnce(&mut serde_json::Map<String, Value>),
) -> Result<Imported, ImportError> {
    let mut v: Value = serde_json::from_str(&read(&data(name))).unwrap();
    edit(v.as_object_mut().unwrap());
    import(&v.to_string(), &opts(name))
}

fn with_arch(arch: &str) -> impl FnOnce(&mut serde_json::Map<String, Value>) + '_ {
    move |m| {
        m.insert("architectures".into(), serde_json::json!([arch]));
    }
}

fn params(spec: &ArchSpec) -> u64 {
    stats(spec, &StatsOptions::default()).params
}

/// The text is canonical, checks without errors, and its first model is `spec`.
fn assert_sound(i: &Imported) {
    assert_eq!(
        arch_dsl::fmt::format(&i.text).as_deref(),
        Ok(i.text.as_str()),
        "not in `archc fmt` form:\n{}",
        i.text
    );
    let prog = Program::from_source("imported.arch", i.text.clone(), None);
    let (specs, diags) = prog.check();
    assert!(
        diags.iter().all(|d| !d.is_error()),
        "{:?}\n{}",
        diags,
        i.text
    );
    assert_eq!(specs.first(), Some(&i.spec));
    assert_eq!(prog.model_names().first(), Some(&i.name));
    assert!(i.text.starts_with("// Imported by `archc import-hf` from "));
}

fn archc(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_archc"))
        .args(args)
        .output()
        .expect("archc runs")
}

fn temp_dir() -> PathBuf {
    let dir = std::env::temp_dir().join(format!("archc-import-hf-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn temp_file(name: &str, text: &str) -> PathBuf {
    let path = temp_dir().join(name);
    std::fs::write(&path, text).unwrap();
    path
}

/// (config, Hugging Face class = its `architectures[0]`, exact parameter count).
const FULL_SIZE: &[(&str, &str, u64)] = &[
    ("bert-base-uncased.json", "BertForMaskedLM", 109_514_298),
    ("roberta-base.json", "RobertaForMaskedLM", 124_697_433),
    ("albert-base-v2.json", "AlbertForMaskedLM", 11_221_680),
    // The discriminator with its head; the generator is counted apart (generator_params).
    (
        "electra-small-discriminator.json",
        "ElectraForPreTraining",
        13_549_057,
    ),
    (
        "electra-small-generator.json",
        "ElectraForMaskedLM",
        13_546_682,
    ),
    ("t5-small.json", "T5ForConditionalGeneration", 60_506_624),
    ("bart-base.json", "BartModel", 139_420_416),
    ("gpt2.json", "GPT2LMHeadModel", 124_439_808),
    ("openai-gpt.json", "OpenAIGPTLMHeadModel", 116_534_784),
    ("Llama-2-7b-hf.json", "LlamaForCausalLM", 6_738_415_616),
    ("Meta-Llama-3-8B.json", "LlamaForCausalLM", 8_030_261_248),
    ("mamba-130m-hf.json", "MambaForCausalLM", 129_135_360),
    ("rwkv-4-169m-pile.json", "RwkvForCausalLM", 169_342_464),
];

#[test]
fn full_size_configs_match_hugging_face_parameter_counts() {
    let mut failures = Vec::new();
    for &(file, class, expected) in FULL_SIZE {
        let i = import_file(file);
        assert_sound(&i);
        assert!(
            i.text.contains(&format!("architectures[0] = {class})")),
            "{file}: header names {class}"
        );
        let got = params(&i.spec);
        if got != expected {
            failures.push(format!(
                "{file} ({class}): stats {got}, Hugging Face {expected}"
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// The same configs with another `architectures[0]`.
#[test]
fn other_architectures_pick_objectives_and_heads() {
    let pooler_classifier = |d: u64| 2 * d + 2; // the 2-label classifier a bare model gets
    let cases: &[(&str, &str, u64)] = &[
        ("bert-base-uncased.json", "BertForPreTraining", 110_106_428),
        (
            "bert-base-uncased.json",
            "BertForSequenceClassification",
            109_483_778,
        ),
        // BertModel: 109,482,240 with its pooler; `.arch` keeps the pooler with a classifier.
        (
            "bert-base-uncased.json",
            "BertModel",
            109_482_240 + pooler_classifier(768),
        ),
        (
            "roberta-base.json",
            "RobertaForSequenceClassification",
            124_647_170,
        ),
        (
            "roberta-base.json",
            "RobertaModel",
            124_645_632 + pooler_classifier(768),
        ),
        ("albert-base-v2.json", "AlbertForPreTraining", 11_813_810),
        (
            "albert-base-v2.json",
            "AlbertForSequenceClassification",
            11_685_122,
        ),
        (
            "albert-base-v2.json",
            "AlbertModel",
            11_683_584 + pooler_classifier(768),
        ),
        (
            "electra-small-discriminator.json",
            "ElectraModel",
            13_483_008,
        ),
        ("t5-small.json", "T5Model", 60_506_624),
        // final_logits_bias is a buffer in Hugging Face (139,420,416 parameters); the spec
        // carries it as the head's bias: + vocab.
        (
            "bart-base.json",
            "BartForConditionalGeneration",
            139_420_416 + 50_265,
        ),
        ("gpt2.json", "GPT2Model", 124_439_808),
        ("openai-gpt.json", "OpenAIGPTModel", 116_534_784),
        ("Meta-Llama-3-8B.json", "LlamaModel", 7_504_924_672),
        ("mamba-130m-hf.json", "MambaModel", 129_135_360),
        ("rwkv-4-169m-pile.json", "RwkvModel", 130_729_728),
    ];
    let mut failures = Vec::new();
    for &(file, arch, expected) in cases {
        let i = import_edited(file, with_arch(arch)).unwrap_or_else(|e| panic!("{arch}: {e}"));
        assert_sound(&i);
        let got = params(&i.spec);
        if got != expected {
            failures.push(format!(
                "{file} as {arch}: stats {got}, expected {expected}"
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));

    let objectives = |file: &str, arch: &str| {
        import_edited(file, with_arch(arch))
            .unwrap()
            .spec
            .objectives
    };
    assert!(matches!(
        objectives("bert-base-uncased.json", "BertForPreTraining").as_slice(),
        [Objective::Mlm { dynamic: false, .. }, Objective::Nsp]
    ));
    assert!(matches!(
        objectives("roberta-base.json", "RobertaForMaskedLM").as_slice(),
        [Objective::Mlm { dynamic: true, .. }]
    ));
    assert!(matches!(
        objectives("albert-base-v2.json", "AlbertForPreTraining").as_slice(),
        [Objective::Mlm { .. }, Objective::Sop]
    ));
    assert!(matches!(
        objectives("bart-base.json", "BartForConditionalGeneration").as_slice(),
        [Objective::Denoise {
            sentence_permute: true,
            ..
        }]
    ));
    assert!(matches!(
        objectives("t5-small.json", "T5ForConditionalGeneration").as_slice(),
        [Objective::SpanCorruption { .. }]
    ));
    assert!(objectives("gpt2.json", "GPT2Model").is_empty());
    let bert_model = import_edited("bert-base-uncased.json", with_arch("BertModel")).unwrap();
    assert_eq!(
        bert_model.spec.heads,
        vec![Head::Classifier {
            labels: 2,
            pooler: true
        }]
    );
    assert!(bert_model.warnings.iter().any(|w| w.contains("pooler")));
}

#[test]
fn full_size_specs_say_what_the_configs_say() {
    use arch_dsl::*;
    let llama3 = import_file("Meta-Llama-3-8B.json").spec;
    assert_eq!(llama3.name, "meta_llama_3_8b");
    assert_eq!(llama3.dtype, DType::Bf16);
    assert_eq!(llama3.norm, Norm::RmsNorm { eps: 1e-5 });
    assert!(!llama3.embed.tied);
    assert_eq!(
        llama3.position,
        Position::Rope(Rope {
            theta: 500000.0,
            fraction: 1.0,
            style: RopeStyle::Half,
            scaling: RopeScaling::None,
        })
    );
    let layer = &llama3.decoder.as_ref().unwrap().layers[0];
    assert!(matches!(
        layer.sublayers.as_slice(),
        [
            Sublayer::Attention(Attention {
                heads: 32,
                kv_heads: 8,
                head_dim: 128,
                bias: AttnBias::None,
                ..
            }),
            Sublayer::Mlp(Mlp {
                hidden: 14336,
                act: Activation::Swiglu,
                bias: false
            }),
        ]
    ));

    let roberta = import_file("roberta-base.json").spec;
    assert_eq!(roberta.position, Position::Learned { offset: 2 });
    assert_eq!(roberta.context, 512);
    assert_eq!(roberta.embed.segments, 1);

    let t5 = import_file("t5-small.json").spec;
    assert_eq!(
        t5.heads,
        vec![Head::Lm {
            scale: 512f64.powf(-0.5),
            bias: false
        }]
    );
    assert_eq!(
        t5.position,
        Position::RelativeBias {
            buckets: 32,
            max_distance: 128
        }
    );

    let mamba = import_file("mamba-130m-hf.json");
    assert_eq!(mamba.assumed, vec!["context"]);
    assert!(matches!(
        mamba.spec.decoder.as_ref().unwrap().layers[0]
            .sublayers
            .as_slice(),
        [Sublayer::Mamba(Mamba {
            d_state: 16,
            d_conv: 4,
            expand: 2,
            dt_rank: 48,
            conv_bias: true,
            bias: false
        })]
    ));

    let albert = import_file("albert-base-v2.json").spec;
    assert_eq!(albert.encoder.as_ref().unwrap().share, Share::All);
    assert_eq!(albert.embed.factorized, Some(128));
}

/// T5 v1.1: gated-gelu (gelu_new) MLP, untied head without rescaling.
#[test]
fn t5_v1_1_is_gated_and_untied() {
    let i = import_file("t5-v1_1-small.json");
    assert_sound(&i);
    let spec = &i.spec;
    assert!(!spec.embed.tied);
    assert_eq!(
        spec.heads,
        vec![Head::Lm {
            scale: 1.0,
            bias: false
        }]
    );
    let enc = &spec.encoder.as_ref().unwrap().layers;
    assert_eq!(enc.len(), 8);
    assert!(matches!(
        enc[0].sublayers[1],
        arch_dsl::Sublayer::Mlp(arch_dsl::Mlp {
            hidden: 1024,
            act: arch_dsl::Activation::Geglu,
            bias: false
        })
    ));
    assert!(i.text.contains("tanh-approximated GELU"), "{}", i.text);
    // google/t5-v1_1-small holds its own lm_head: transformers 4.x counts 76,961,152.
    // transformers 5.24 ties every T5 head when built from a config (60,511,616 on the meta
    // device = 76,961,152 - 32128 x 512); the released checkpoint is untied.
    assert_eq!(params(spec), 76_961_152);

    // The same model as transformers >= 5 saves it: tied, with `scale_decoder_outputs`.
    let v5 = import_edited("t5-v1_1-small.json", |m| {
        m.insert("tie_word_embeddings".into(), Value::Bool(true));
        m.insert("scale_decoder_outputs".into(), Value::Bool(false));
    })
    .unwrap();
    assert!(v5.spec.embed.tied);
    assert_eq!(
        v5.spec.heads,
        vec![Head::Lm {
            scale: 1.0,
            bias: false
        }]
    );
    assert_eq!(params(&v5.spec), 60_511_616);
}

#[test]
fn electra_generator_comes_from_its_own_config() {
    let disc = read(&data("electra-small-discriminator.json"));
    let o = Options {
        source: "electra-small-discriminator.json".into(),
        name: None,
        generator: Some((
            "electra-small-generator.json".into(),
            read(&data("electra-small-generator.json")),
        )),
    };
    let i = import(&disc, &o).unwrap();
    assert_sound(&i);
    assert!(i.assumed.is_empty());
    assert_eq!(i.name, "electra_small_discriminator");
    let s = stats(&i.spec, &StatsOptions::default());
    assert_eq!(s.params, 13_549_057); // ElectraForPreTraining
    assert_eq!(s.generator_params, Some(13_546_682)); // ElectraForMaskedLM
    match &i.spec.objectives[..] {
        [Objective::Rtd { generator, weight }] => {
            assert_eq!(generator.name, "electra_small_generator");
            assert_eq!(*weight, 50.0);
        }
        other => panic!("{other:?}"),
    }

    // Without --generator the generator copies the discriminator, with a warning.
    let alone = import_file("electra-small-discriminator.json");
    assert_eq!(alone.assumed, vec!["generator"]);
    assert!(alone.warnings.iter().any(|w| w.contains("--generator")));

    // A generator that does not share the embeddings is refused.
    let mut bad: Value =
        serde_json::from_str(&read(&data("electra-small-generator.json"))).unwrap();
    bad["embedding_size"] = 64.into();
    let o = Options {
        generator: Some(("gen.json".into(), bad.to_string())),
        ..o
    };
    let e = import(&disc, &o).unwrap_err();
    assert!(
        matches!(&e, ImportError::Config(m) if m.contains("embedding width")),
        "{e}"
    );
}

#[test]
fn scaled_rope_is_imported() {
    // Llama 3.1's config: Llama 3's with `rope_scaling` and a 128k context.
    let i = import_edited("Meta-Llama-3-8B.json", |m| {
        m.insert("max_position_embeddings".into(), 131072.into());
        m.insert(
            "rope_scaling".into(),
            serde_json::json!({"factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                "original_max_position_embeddings": 8192, "rope_type": "llama3"}),
        );
    })
    .unwrap();
    assert_sound(&i);
    assert!(
        i.text.contains("scaling = llama3, factor = 8.0, low_freq_factor = 1.0, high_freq_factor = 4.0, original_context = 8192"),
        "{}",
        i.text
    );
    assert_eq!(
        i.spec.position,
        arch_dsl::Position::Rope(arch_dsl::Rope {
            theta: 500000.0,
            fraction: 1.0,
            style: arch_dsl::RopeStyle::Half,
            scaling: arch_dsl::RopeScaling::Llama3 {
                factor: 8.0,
                low_freq_factor: 1.0,
                high_freq_factor: 4.0,
                original_context: 8192
            }
        })
    );
    // Position interpolation, spelled the old way (`type`).
    let i = import_edited("Llama-2-7b-hf.json", |m| {
        m.insert(
            "rope_scaling".into(),
            serde_json::json!({"type": "linear", "factor": 4.0}),
        );
    })
    .unwrap();
    assert_sound(&i);
    assert!(matches!(
        i.spec.position,
        arch_dsl::Position::Rope(arch_dsl::Rope {
            scaling: arch_dsl::RopeScaling::Linear { factor: 4.0 },
            ..
        })
    ));
}

#[test]
fn variants_of_the_common_families() {
    // LLaMA with biases, an explicit head_dim and a v5 `rope_parameters`.
    let i = import_edited("Meta-Llama-3-8B.json", |m| {
        m.insert("attention_bias".into(), Value::Bool(true));
        m.insert("mlp_bias".into(), Value::Bool(true));
        m.insert("head_dim".into(), 64.into());
        m.remove("rope_theta");
        m.insert(
            "rope_parameters".into(),
            serde_json::json!({"rope_type": "default", "rope_theta": 1000000.0}),
        );
        m.insert("tie_word_embeddings".into(), Value::Bool(true));
    })
    .unwrap();
    assert_sound(&i);
    assert!(i.spec.embed.tied);
    assert!(matches!(i.spec.position, arch_dsl::Position::Rope(r) if r.theta == 1e6));
    assert!(matches!(
        i.spec.decoder.as_ref().unwrap().layers[0].sublayers[0],
        arch_dsl::Sublayer::Attention(arch_dsl::Attention {
            head_dim: 64,
            bias: arch_dsl::AttnBias::All,
            ..
        })
    ));

    // BART with scaled embeddings.
    let i = import_edited("bart-base.json", |m| {
        m.insert("scale_embedding".into(), Value::Bool(true));
    })
    .unwrap();
    assert_eq!(i.spec.embed.scale, 768f64.sqrt());

    // GPT-2 without a declared architecture: the pretraining class, with a warning.
    let i = import_edited("gpt2.json", |m| {
        m.remove("architectures");
    })
    .unwrap();
    assert!(i.text.contains("GPT2LMHeadModel"));
    assert!(i.warnings.iter().any(|w| w.contains("architectures")));

    // --name.
    let o = Options {
        source: "gpt2.json".into(),
        name: Some("my_gpt".into()),
        generator: None,
    };
    let i = import(&read(&data("gpt2.json")), &o).unwrap();
    assert_eq!(i.spec.name, "my_gpt");
    assert!(i.text.contains("model my_gpt {"));
}

#[test]
fn errors_name_the_problem() {
    let err = |name: &str, edit: &dyn Fn(&mut serde_json::Map<String, Value>)| {
        import_edited(name, |m| edit(m)).expect_err("should fail")
    };
    let cases: Vec<(ImportError, &str)> = vec![
        (
            err("gpt2.json", &|m| {
                m.insert("model_type".into(), "gptj".into());
            }),
            "unsupported model_type `gptj`",
        ),
        (
            err("gpt2.json", &|m| {
                m.remove("model_type");
            }),
            "no `model_type`",
        ),
        (
            err("bert-base-uncased.json", &|m| {
                m.remove("hidden_size");
            }),
            "`hidden_size`",
        ),
        (
            err("t5-small.json", &|m| {
                m.remove("d_kv");
            }),
            "`d_kv`",
        ),
        (
            err("gpt2.json", &|m| {
                m.remove("n_positions");
            }),
            "`n_positions`",
        ),
        (
            err("rwkv-4-169m-pile.json", &|m| {
                m.remove("context_length");
            }),
            "`context_length`",
        ),
        (
            err("bert-base-uncased.json", &|m| {
                m.insert("hidden_size".into(), "768".into());
            }),
            "`hidden_size` in config.json must be a non-negative integer, found \"768\"",
        ),
        (
            err("bert-base-uncased.json", &|m| {
                m.insert("num_attention_heads".into(), 0.into());
            }),
            "`num_attention_heads` in config.json is 0",
        ),
        (
            err("bert-base-uncased.json", &|m| {
                m.insert("num_attention_heads".into(), 7.into());
            }),
            "not a multiple of `num_attention_heads` (7)",
        ),
        (
            err("bert-base-uncased.json", &|m| {
                m.insert("hidden_act".into(), "quick_gelu".into());
            }),
            "unsupported activation `quick_gelu` in `hidden_act`",
        ),
        (
            err("bert-base-uncased.json", &|m| {
                m.insert(
                    "architectures".into(),
                    serde_json::json!(["BertForTokenClassification"]),
                );
            }),
            "unsupported architecture `BertForTokenClassification`",
        ),
        (
            err("bert-base-uncased.json", &|m| {
                m.insert("position_embedding_type".into(), "relative_key".into());
            }),
            "position_embedding_type",
        ),
        (
            // YaRN also scales the attention logits: not expressible.
            err("Meta-Llama-3-8B.json", &|m| {
                m.insert(
                    "rope_scaling".into(),
                    serde_json::json!({"factor": 4.0, "original_max_position_embeddings": 8192,
                        "rope_type": "yarn"}),
                );
            }),
            "rope_type \"yarn\"",
        ),
        (
            err("Meta-Llama-3-8B.json", &|m| {
                m.insert(
                    "rope_scaling".into(),
                    serde_json::json!({"factor": 8.0, "low_freq_factor": 4.0, "high_freq_factor": 1.0,
                        "original_max_position_embeddings": 8192, "rope_type": "llama3"}),
                );
            }),
            "`high_freq_factor` > `low_freq_factor`",
        ),
        (
            err("Meta-Llama-3-8B.json", &|m| {
                m.insert("num_key_value_heads".into(), 5.into());
            }),
            "`num_key_value_heads` (5)",
        ),
        (
            err("albert-base-v2.json", &|m| {
                m.insert("num_hidden_groups".into(), 2.into());
            }),
            "`num_hidden_groups` = 2",
        ),
        (
            err("mamba-130m-hf.json", &|m| {
                m.insert("expand".into(), 1.5.into());
            }),
            "`expand`",
        ),
        (
            err("t5-small.json", &|m| {
                m.insert("feed_forward_proj".into(), "gated-gelu-x".into());
            }),
            "`feed_forward_proj`",
        ),
        (
            err("Llama-2-7b-hf.json", &|m| {
                m.insert("torch_dtype".into(), "float64".into());
            }),
            "float64",
        ),
        (
            err("rwkv-4-169m-pile.json", &|m| {
                m.insert("attention_hidden_size".into(), 512.into());
            }),
            "`attention_hidden_size`",
        ),
        (
            err("gpt2.json", &|m| {
                m.insert("vocab_size".into(), serde_json::json!(1e30));
            }),
            "`vocab_size`",
        ),
    ];
    for (e, needle) in cases {
        assert!(matches!(e, ImportError::Config(_)), "{e:?}");
        assert!(e.to_string().contains(needle), "`{needle}` not in: {e}");
    }

    let e = import("{\"model_type\": \"gpt2\",", &opts("broken.json")).unwrap_err();
    assert!(
        matches!(&e, ImportError::Json(m) if m.contains("broken.json is not valid JSON")),
        "{e}"
    );
    let e = import("[1, 2]", &opts("list.json")).unwrap_err();
    assert!(e.to_string().contains("not a JSON object"), "{e}");
    let o = Options {
        name: Some("not-a-name".into()),
        ..opts("gpt2.json")
    };
    let e = import(&read(&data("gpt2.json")), &o).unwrap_err();
    assert!(e.to_string().contains("--name `not-a-name`"), "{e}");
    let o = Options {
        generator: Some(("g.json".into(), "{}".into())),
        ..opts("gpt2.json")
    };
    let e = import(&read(&data("gpt2.json")), &o).unwrap_err();
    assert!(
        e.to_string()
            .contains("--generator applies only to ElectraForPreTraining"),
        "{e}"
    );
}

#[test]
fn cli_writes_stdout_or_a_file_and_exits_1_on_errors() {
    let config = data("gpt2.json").display().to_string();
    let out = archc(&["import-hf", &config]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8(out.stdout).unwrap();
    let lib = import(&read(&data("gpt2.json")), &opts(&config)).unwrap();
    assert_eq!(stdout, lib.text);

    let path = temp_dir().join("my_gpt.arch");
    let path_s = path.display().to_string();
    let out = archc(&["import-hf", &config, "-o", &path_s, "--name", "my_gpt"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.stdout.is_empty());
    let written = read(&path);
    assert!(written.contains("model my_gpt {"));
    let check = archc(&["check", &path_s]);
    assert!(
        check.status.success(),
        "{}",
        String::from_utf8_lossy(&check.stderr)
    );
    let fmt = archc(&["fmt", "--check", &path_s]);
    assert!(
        fmt.status.success(),
        "{}",
        String::from_utf8_lossy(&fmt.stdout)
    );
    let stats = archc(&["stats", &path_s, "--json"]);
    let v: Value = serde_json::from_slice(&stats.stdout).unwrap();
    assert_eq!(v["params"], 124_439_808u64);

    // ELECTRA with its generator; warnings go to stderr.
    let disc = data("electra-small-discriminator.json")
        .display()
        .to_string();
    let gen = data("electra-small-generator.json").display().to_string();
    let out = archc(&["import-hf", &disc, "--generator", &gen]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("model electra_small_generator {"));
    let out = archc(&["import-hf", &disc]);
    assert!(String::from_utf8_lossy(&out.stderr)
        .contains("warning: config.json describes only the discriminator"));

    let bad_json = temp_file("bad.json", "{ \"model_type\": ");
    let unknown = temp_file("unknown.json", r#"{"model_type": "gptj", "n_embd": 4096}"#);
    let missing = temp_file(
        "missing.json",
        r#"{"model_type": "llama", "vocab_size": 32000}"#,
    );
    for (args, needle) in [
        (
            vec!["import-hf", bad_json.to_str().unwrap()],
            "is not valid JSON",
        ),
        (
            vec!["import-hf", unknown.to_str().unwrap()],
            "unsupported model_type `gptj`",
        ),
        (
            vec!["import-hf", missing.to_str().unwrap()],
            "has no `hidden_size`",
        ),
        (
            vec!["import-hf", "no/such/config.json"],
            "cannot read no/such/config.json",
        ),
        (vec!["import-hf", &config, "--name", "1x"], "--name `1x`"),
    ] {
        let out = archc(&args);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{args:?}: {err}");
        assert!(
            err.starts_with("error: ") && err.contains(needle),
            "{args:?}: {err}"
        );
        assert!(out.stdout.is_empty());
    }
}

/// tests/fixtures/hf/<name>/: importing config.json gives the ArchSpec of model.arch, modulo
/// the model name and what the importer had to assume because config.json does not say it
/// (`Imported::assumed`: Mamba's and transformers-5 T5's context, ELECTRA's generator).
#[test]
fn fixtures_import_to_their_hand_written_specs() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/hf");
    let entries = std::fs::read_dir(&root)
        .unwrap_or_else(|e| panic!("the committed fixtures at {}: {e}", root.display()));
    let mut dirs: Vec<PathBuf> = entries.map(|e| e.unwrap().path()).collect();
    dirs.sort();
    let mut compared = 0;
    let mut mismatches = Vec::new();
    for dir in dirs {
        let (config, arch) = (dir.join("config.json"), dir.join("model.arch"));
        if !config.is_file() || !arch.is_file() {
            continue;
        }
        let fixture = dir.file_name().unwrap().to_string_lossy().into_owned();
        let prog = Program::load(&arch).unwrap();
        let (specs, diags) = prog.check();
        assert!(
            diags.iter().all(|d| !d.is_error()),
            "{fixture}/model.arch does not check: {diags:?}"
        );
        let Some(mut want) = specs.into_iter().next() else {
            panic!("{fixture}/model.arch has no model");
        };
        let imported = import(&read(&config), &opts(&config.display().to_string()))
            .unwrap_or_else(|e| panic!("{fixture}/config.json: {e}"));
        assert_sound(&imported);
        let mut got = imported.spec.clone();
        got.name = want.name.clone();
        for field in &imported.assumed {
            match *field {
                "context" => got.context = want.context,
                "generator" => {
                    if let (
                        [Objective::Rtd { generator: g, .. }],
                        [Objective::Rtd { generator: w, .. }],
                    ) = (
                        got.objectives.as_mut_slice(),
                        want.objectives.as_mut_slice(),
                    ) {
                        *g = w.clone();
                    }
                }
                other => panic!("unknown assumed field {other}"),
            }
        }
        // The generator's name follows the main model's.
        if let ([Objective::Rtd { generator: g, .. }], [Objective::Rtd { generator: w, .. }]) = (
            got.objectives.as_mut_slice(),
            want.objectives.as_mut_slice(),
        ) {
            g.name = w.name.clone();
        }
        compared += 1;
        if got != want {
            mismatches.push(format!(
                "{fixture}: import-hf differs from model.arch\n--- imported\n{}\n--- model.arch\n{}",
                imported.text,
                read(&arch)
            ));
        }
    }
    eprintln!("compared {compared} fixtures");
    assert!(compared >= 11, "compared only {compared} fixtures");
    assert!(mismatches.is_empty(), "{}", mismatches.join("\n\n"));
}

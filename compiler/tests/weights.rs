//! Loading Hugging Face checkpoints (`tests/fixtures/hf/*/model.safetensors`, written by
//! `tools/make_fixtures.py`) under canonical names, and clear errors for broken files.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use arch_dsl::elab::Program;
use arch_dsl::ArchSpec;
use archc::params::param_table;
use archc::weights::{load, load_with, LoadOptions, Weights, WeightsError};
use safetensors::tensor::TensorView;
use safetensors::{Dtype, SafeTensors};

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/hf")
}

fn fixture_spec(name: &str) -> ArchSpec {
    let prog = Program::load(&fixtures().join(name).join("model.arch")).unwrap();
    let (spec, diags) = prog.elaborate("tiny");
    spec.unwrap_or_else(|| panic!("{name}/model.arch: {diags:?}"))
}

fn fixture_names() -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(fixtures())
        .unwrap()
        .map(|e| e.unwrap())
        .filter(|e| {
            e.path().join("model.safetensors").is_file() && e.path().join("model.arch").is_file()
        })
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

fn architecture(name: &str) -> String {
    let text = std::fs::read_to_string(fixtures().join(name).join("config.json")).unwrap();
    let json: serde_json::Value = serde_json::from_str(&text).unwrap();
    json["architectures"][0].as_str().unwrap().to_string()
}

/// Every param_table entry is present with its shape; returns the weights.
fn check_complete(name: &str, spec: &ArchSpec, w: &Weights) {
    for p in param_table(spec) {
        if w.missing().contains(&p.name) {
            continue;
        }
        let t = w
            .get(&p.name)
            .unwrap_or_else(|| panic!("{name}: no `{}`", p.name));
        assert_eq!(t.shape, p.shape, "{name}: `{}`", p.name);
        assert_eq!(t.data.len(), p.numel(), "{name}: `{}`", p.name);
        assert!(
            t.data.iter().all(|x| x.is_finite()),
            "{name}: `{}` not finite",
            p.name
        );
    }
}

#[test]
fn every_fixture_loads_with_every_parameter() {
    let names = fixture_names();
    assert!(names.len() >= 11, "fixtures: {names:?}");
    for name in &names {
        let spec = fixture_spec(name);
        let path = fixtures().join(name).join("model.safetensors");
        let arch = architecture(name);
        let w = if name == "bert_model" {
            // A bare BertModel: the spec's classifier is not in the checkpoint.
            let err = load(&spec, &path).unwrap_err();
            assert_eq!(err.tensor(), Some("head.classifier.weight"), "{err}");
            let w = load_with(
                &spec,
                &path,
                &LoadOptions {
                    require_heads: false,
                },
            )
            .unwrap();
            assert_eq!(
                w.missing(),
                ["head.classifier.weight", "head.classifier.bias"]
            );
            w
        } else {
            let w = load(&spec, &path).unwrap_or_else(|e| panic!("{name}: {e}"));
            assert!(w.missing().is_empty());
            w
        };
        check_complete(name, &spec, &w);
        assert_eq!(w.len() + w.missing().len(), param_table(&spec).len());
        // The naming names the checkpoint's class (the prefix-free schemes list several).
        let short = arch.trim_end_matches("ForConditionalGeneration");
        assert!(
            w.naming().contains(short) || w.naming().contains(&arch),
            "{name}: {arch} read as {}",
            w.naming()
        );
        // Nothing of the spec's was left behind except the tensors it does not model.
        for u in w.unused() {
            assert!(
                u.contains("position_ids")
                    || u.contains("decoder.bias")
                    || u.starts_with("cls.predictions.decoder"),
                "{name}: unused tensor `{u}`"
            );
        }
    }
}

/// A checkpoint's tensor as f32 (the fixtures are f32).
fn raw(name: &str, tensor: &str) -> (Vec<usize>, Vec<f32>) {
    let bytes = std::fs::read(fixtures().join(name).join("model.safetensors")).unwrap();
    let st = SafeTensors::deserialize(&bytes).unwrap();
    let v = st.tensor(tensor).unwrap();
    assert_eq!(v.dtype(), Dtype::F32);
    let data = v
        .data()
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes(b.try_into().unwrap()))
        .collect();
    (v.shape().to_vec(), data)
}

#[test]
fn gpt2_conv1d_is_transposed_and_c_attn_split() {
    let spec = fixture_spec("gpt2");
    let w = load(&spec, &fixtures().join("gpt2/model.safetensors")).unwrap();
    let d = 32;
    let (shape, c_attn) = raw("gpt2", "transformer.h.1.attn.c_attn.weight");
    assert_eq!(shape, [d, 3 * d]);
    let (_, c_attn_b) = raw("gpt2", "transformer.h.1.attn.c_attn.bias");
    for (i, m) in ["q", "k", "v"].iter().enumerate() {
        let wt = w
            .get(&format!("decoder.layers.1.attention.{m}.weight"))
            .unwrap();
        let b = w
            .get(&format!("decoder.layers.1.attention.{m}.bias"))
            .unwrap();
        for r in 0..d {
            for c in 0..d {
                assert_eq!(wt.data[r * d + c], c_attn[c * 3 * d + i * d + r]);
            }
            assert_eq!(b.data[r], c_attn_b[i * d + r]);
        }
    }
    let (shape, c_fc) = raw("gpt2", "transformer.h.0.mlp.c_fc.weight");
    assert_eq!(shape, [d, 4 * d]);
    let up = w.get("decoder.layers.0.mlp.up.weight").unwrap();
    assert_eq!(up.shape, [4 * d, d]);
    for r in 0..4 * d {
        for c in 0..d {
            assert_eq!(up.data[r * d + c], c_fc[c * 4 * d + r]);
        }
    }
}

#[test]
fn family_specific_tensors_land_where_expected() {
    // RWKV: [1, 1, d] mixes flattened; pre_ln is the embedding norm.
    let w = load(
        &fixture_spec("rwkv"),
        &fixtures().join("rwkv/model.safetensors"),
    )
    .unwrap();
    assert_eq!(w.naming(), "RwkvForCausalLM");
    let (shape, mix) = raw("rwkv", "rwkv.blocks.1.feed_forward.time_mix_key");
    assert_eq!(shape, [1, 1, 32]);
    assert_eq!(
        w.get("decoder.layers.1.channel_mix.mix_k").unwrap().data,
        mix
    );
    assert_eq!(
        w.get("decoder.embed_norm.weight").unwrap().data,
        raw("rwkv", "rwkv.blocks.0.pre_ln.weight").1
    );
    assert_eq!(
        w.get("head.lm.weight").unwrap().data,
        raw("rwkv", "head.weight").1
    );

    // BART: final_logits_bias [1, V] is the LM head's bias; positions keep their offset rows.
    let w = load(
        &fixture_spec("bart"),
        &fixtures().join("bart/model.safetensors"),
    )
    .unwrap();
    assert_eq!(
        w.get("head.lm.bias").unwrap().data,
        raw("bart", "final_logits_bias").1
    );
    assert_eq!(w.get("decoder.positions.weight").unwrap().shape, [18, 32]);
    assert_eq!(
        w.get("embed.tokens.weight").unwrap().data,
        raw("bart", "model.shared.weight").1
    );
    assert_eq!(
        w.get("decoder.layers.1.mlp.norm.bias").unwrap().data,
        raw("bart", "model.decoder.layers.1.final_layer_norm.bias").1
    );

    // T5: block 0 holds each stack's relative bias; layer.J is sublayer J.
    let w = load(
        &fixture_spec("t5"),
        &fixtures().join("t5/model.safetensors"),
    )
    .unwrap();
    assert_eq!(
        w.get("decoder.relative_bias.weight").unwrap().data,
        raw(
            "t5",
            "decoder.block.0.layer.0.SelfAttention.relative_attention_bias.weight"
        )
        .1
    );
    assert_eq!(
        w.get("decoder.layers.1.cross_attention.norm.weight")
            .unwrap()
            .data,
        raw("t5", "decoder.block.1.layer.1.layer_norm.weight").1
    );
    assert_eq!(
        w.get("decoder.layers.0.attention.q.weight").unwrap().shape,
        [24, 32]
    );

    // ALBERT: the shared group is layer 0.
    let w = load(
        &fixture_spec("albert"),
        &fixtures().join("albert/model.safetensors"),
    )
    .unwrap();
    assert_eq!(
        w.get("encoder.layers.0.mlp.norm.weight").unwrap().data,
        raw(
            "albert",
            "albert.encoder.albert_layer_groups.0.albert_layers.0.full_layer_layer_norm.weight"
        )
        .1
    );
    assert_eq!(w.get("embed.project.weight").unwrap().shape, [32, 16]);

    // LLaMA: GQA shapes, norms before attention and MLP.
    let w = load(
        &fixture_spec("llama"),
        &fixtures().join("llama/model.safetensors"),
    )
    .unwrap();
    assert_eq!(
        w.get("decoder.layers.1.attention.k.weight").unwrap().shape,
        [12, 48]
    );
    assert_eq!(
        w.get("decoder.layers.1.mlp.norm.weight").unwrap().data,
        raw("llama", "model.layers.1.post_attention_layernorm.weight").1
    );
}

// ---- rewriting checkpoints -------------------------------------------------------------

type Entry = (String, Dtype, Vec<usize>, Vec<u8>);

/// Copies fixture `name`'s checkpoint through `f` (which may drop, rename or replace
/// tensors) into `dst`.
fn rewrite(name: &str, dst: &Path, f: impl Fn(Entry) -> Option<Entry>) {
    let bytes = std::fs::read(fixtures().join(name).join("model.safetensors")).unwrap();
    let st = SafeTensors::deserialize(&bytes).unwrap();
    let mut entries: Vec<Entry> = st
        .tensors()
        .into_iter()
        .filter_map(|(n, v)| f((n, v.dtype(), v.shape().to_vec(), v.data().to_vec())))
        .collect();
    entries.sort_by(|a, b| a.0.cmp(&b.0));
    let views: Vec<(String, TensorView<'_>)> = entries
        .iter()
        .map(|(n, d, s, b)| (n.clone(), TensorView::new(*d, s.clone(), b).unwrap()))
        .collect();
    safetensors::serialize_to_file(views, None, dst).unwrap();
}

fn f32s(b: &[u8]) -> Vec<f32> {
    b.chunks_exact(4)
        .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
        .collect()
}

#[test]
fn truncated_file_names_the_cut_tensor() {
    let dir = tempfile::tempdir().unwrap();
    let spec = fixture_spec("gpt2");
    let bytes = std::fs::read(fixtures().join("gpt2/model.safetensors")).unwrap();
    let path = dir.path().join("model.safetensors");
    std::fs::write(&path, &bytes[..bytes.len() / 2]).unwrap();
    let err = load(&spec, &path).unwrap_err();
    let WeightsError::Truncated {
        tensor: Some(t), ..
    } = &err
    else {
        panic!("{err:?}")
    };
    assert!(err.to_string().contains(t.as_str()), "{err}");
    assert!(err.to_string().contains("truncated"), "{err}");

    // Cut inside the header.
    std::fs::write(&path, &bytes[..20]).unwrap();
    let err = load(&spec, &path).unwrap_err();
    assert!(
        matches!(err, WeightsError::Truncated { tensor: None, .. }),
        "{err:?}"
    );

    // Too short for a header, garbage, an empty file, a missing file.
    for junk in [
        &b"abc"[..],
        &b"\x05\x00\x00\x00\x00\x00\x00\x00{oops"[..],
        &[][..],
    ] {
        std::fs::write(&path, junk).unwrap();
        let err = load(&spec, &path).unwrap_err();
        assert!(matches!(err, WeightsError::Corrupt { .. }), "{err:?}");
        assert!(err.to_string().contains("model.safetensors"), "{err}");
    }
    let err = load(&spec, &dir.path().join("nope.safetensors")).unwrap_err();
    assert!(matches!(err, WeightsError::Io { .. }), "{err:?}");
}

#[test]
fn removed_tensor_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("model.safetensors");
    rewrite("gpt2", &path, |e| {
        (e.0 != "transformer.h.1.mlp.c_fc.weight").then_some(e)
    });
    let err = load(&fixture_spec("gpt2"), &path).unwrap_err();
    let msg = err.to_string();
    assert_eq!(
        err.tensor(),
        Some("decoder.layers.1.mlp.up.weight"),
        "{msg}"
    );
    assert!(msg.contains("transformer.h.1.mlp.c_fc.weight"), "{msg}");
    assert!(msg.contains("missing"), "{msg}");

    // T5 without `shared` falls back on the encoder's copy of the embedding.
    rewrite("t5", &path, |e| {
        if e.0 == "shared.weight" {
            Some(("encoder.embed_tokens.weight".into(), e.1, e.2, e.3))
        } else {
            Some(e)
        }
    });
    let w = load(&fixture_spec("t5"), &path).unwrap();
    assert_eq!(
        w.get("embed.tokens.weight").unwrap().data,
        raw("t5", "shared.weight").1
    );
}

#[test]
fn wrong_shape_is_named_with_both_shapes() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("model.safetensors");
    rewrite("llama", &path, |mut e| {
        if e.0 == "model.layers.0.self_attn.k_proj.weight" {
            e.2 = vec![6, 96]; // same bytes, wrong shape
        }
        Some(e)
    });
    let err = load(&fixture_spec("llama"), &path).unwrap_err();
    let msg = err.to_string();
    assert_eq!(
        err.tensor(),
        Some("decoder.layers.0.attention.k.weight"),
        "{msg}"
    );
    assert!(
        msg.contains("model.layers.0.self_attn.k_proj.weight"),
        "{msg}"
    );
    assert!(msg.contains("[6, 96]") && msg.contains("[12, 48]"), "{msg}");

    // A fused GPT-2 projection of the wrong width.
    rewrite("gpt2", &path, |mut e| {
        if e.0 == "transformer.h.0.attn.c_attn.bias" {
            e.2 = vec![48];
            e.3.truncate(48 * 4);
        }
        Some(e)
    });
    let err = load(&fixture_spec("gpt2"), &path).unwrap_err();
    assert!(
        err.to_string().contains("transformer.h.0.attn.c_attn.bias"),
        "{err}"
    );
    assert!(matches!(err, WeightsError::Shape { .. }), "{err:?}");
}

#[test]
fn half_precision_is_converted_and_other_dtypes_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("model.safetensors");
    let spec = fixture_spec("mamba");
    let reference = load(&spec, &fixtures().join("mamba/model.safetensors")).unwrap();

    // bf16: the top half of each f32 (truncation), read back exactly as that.
    rewrite("mamba", &path, |(n, _, s, b)| {
        let half: Vec<u8> = f32s(&b)
            .iter()
            .flat_map(|x| ((x.to_bits() >> 16) as u16).to_le_bytes())
            .collect();
        Some((n, Dtype::BF16, s, half))
    });
    let w = load(&spec, &path).unwrap();
    for (name, t) in reference.tensors() {
        let got = &w.get(name).unwrap().data;
        for (a, b) in got.iter().zip(&t.data) {
            assert_eq!(a.to_bits(), b.to_bits() & 0xffff_0000, "{name}");
        }
    }

    // f16 values that are exact in half precision.
    rewrite("mamba", &path, |(n, _, s, b)| {
        let count = b.len() / 4;
        let half: Vec<u8> = (0..count)
            .flat_map(|i| [0x00u8, 0x3c + (i % 3) as u8])
            .collect(); // 1.0, 1.0+2^-2·…
        Some((n, Dtype::F16, s, half))
    });
    let w = load(&spec, &path).unwrap();
    let d = &w.get("decoder.layers.0.mamba.D").unwrap().data;
    assert_eq!(&d[..3], [1.0, 1.25, 1.5]);

    // i32 is refused, naming the tensor.
    rewrite("mamba", &path, |(n, d, s, b)| {
        if n == "backbone.layers.1.mixer.A_log" {
            Some((n, Dtype::I32, s, b))
        } else {
            Some((n, d, s, b))
        }
    });
    let err = load(&spec, &path).unwrap_err();
    assert_eq!(err.tensor(), Some("decoder.layers.1.mamba.A_log"), "{err}");
    assert!(
        err.to_string().contains("backbone.layers.1.mixer.A_log")
            && err.to_string().contains("I32"),
        "{err}"
    );
}

#[test]
fn unknown_naming_lists_the_families_tried() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("model.safetensors");
    rewrite("gpt2", &path, |(n, d, s, b)| {
        Some((format!("mystery.{n}"), d, s, b))
    });
    let err = load(&fixture_spec("gpt2"), &path).unwrap_err();
    let msg = err.to_string();
    assert!(matches!(err, WeightsError::UnknownNaming { .. }), "{err:?}");
    for family in [
        "canonical",
        "GPT2LMHeadModel",
        "LlamaForCausalLM",
        "RwkvForCausalLM",
        "T5ForConditionalGeneration",
    ] {
        assert!(msg.contains(family), "{msg}");
    }
    assert!(msg.contains("mystery."), "{msg}");
}

#[test]
fn canonical_round_trip_and_sharded_checkpoints() {
    let dir = tempfile::tempdir().unwrap();
    for name in fixture_names() {
        if name == "bert_model" {
            continue;
        }
        let spec = fixture_spec(&name);
        let w = load(&spec, &fixtures().join(&name).join("model.safetensors")).unwrap();
        let path = dir.path().join(format!("{name}.safetensors"));
        w.save(&path).unwrap();
        let back = load(&spec, &path).unwrap();
        assert_eq!(back.naming(), "canonical", "{name}");
        assert_eq!(back.tensors(), w.tensors(), "{name}");
        assert!(back.unused().is_empty());
        let again = Weights::from_tensors(&spec, w.clone().into_tensors()).unwrap();
        assert_eq!(again.tensors(), w.tensors());
    }

    // A sharded LLaMA: two files and an index, read through the directory.
    let shard_dir = dir.path().join("llama_sharded");
    std::fs::create_dir(&shard_dir).unwrap();
    let mut map = BTreeMap::new();
    for (i, file) in [
        "model-00001-of-00002.safetensors",
        "model-00002-of-00002.safetensors",
    ]
    .iter()
    .enumerate()
    {
        rewrite("llama", &shard_dir.join(file), |e| {
            let first = e.0.starts_with("model.layers.0.") || e.0 == "lm_head.weight";
            (first == (i == 0)).then_some(e)
        });
        let bytes = std::fs::read(shard_dir.join(file)).unwrap();
        for n in SafeTensors::deserialize(&bytes).unwrap().names() {
            map.insert(n.to_string(), serde_json::Value::from(*file));
        }
    }
    let index = serde_json::json!({ "metadata": {}, "weight_map": map });
    std::fs::write(
        shard_dir.join("model.safetensors.index.json"),
        index.to_string(),
    )
    .unwrap();
    let spec = fixture_spec("llama");
    let sharded = load(&spec, &shard_dir).unwrap();
    let single = load(&spec, &fixtures().join("llama")).unwrap();
    assert_eq!(sharded.tensors(), single.tensors());
    assert_eq!(sharded.naming(), "LlamaForCausalLM");
}

#[test]
fn a_spec_that_does_not_fit_the_checkpoint_is_a_shape_error() {
    // The GPT-2 checkpoint read with the GPT-1 spec's vocabulary.
    let spec = fixture_spec("openai_gpt");
    let err = load(&spec, &fixtures().join("gpt2/model.safetensors")).unwrap_err();
    assert!(
        matches!(
            err,
            WeightsError::Missing { .. } | WeightsError::Shape { .. }
        ),
        "{err:?}"
    );
    assert!(err.tensor().is_some(), "{err}");
}

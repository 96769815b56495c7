//! The canonical parameter table of every model in `specs/` agrees with `archc stats`
//! (Hugging Face-verified counts) tensor for tensor in total, and its names are unique.

use std::collections::HashSet;
use std::path::Path;

use arch_dsl::elab::Program;
use arch_dsl::stats::{stats, StatsOptions};
use archc::params::param_table;

fn specs() -> Vec<arch_dsl::ArchSpec> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../specs");
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "arch"))
        .collect();
    files.sort();
    let mut out = Vec::new();
    for f in files {
        let prog = Program::load(&f).unwrap();
        let (models, diags) = prog.check();
        assert!(!prog.has_errors(), "{}: {diags:?}", f.display());
        out.extend(models);
    }
    out
}

#[test]
fn param_table_matches_stats_for_every_spec() {
    let specs = specs();
    assert!(specs.len() > 30, "only {} models found", specs.len());
    let mut bad = Vec::new();
    for spec in &specs {
        let table = param_table(spec);
        let total: u128 = table
            .iter()
            .map(|p| p.shape.iter().map(|&d| d as u128).product::<u128>())
            .sum();
        let want = stats(
            spec,
            &StatsOptions {
                seq: None,
                tokens: None,
            },
        )
        .params;
        if total != want as u128 {
            bad.push(format!("{}: table {total}, stats {want}", spec.name));
        }
        let mut seen = HashSet::new();
        for p in &table {
            assert!(
                seen.insert(&p.name),
                "{}: duplicate parameter `{}`",
                spec.name,
                p.name
            );
            assert!(
                !p.shape.is_empty() && p.shape.iter().all(|&d| d > 0),
                "{}: `{}` has shape {:?}",
                spec.name,
                p.name,
                p.shape
            );
        }
    }
    assert!(
        bad.is_empty(),
        "parameter table disagrees with stats:\n{}",
        bad.join("\n")
    );
}

#[test]
fn param_table_is_deterministic_and_named_canonically() {
    let specs = specs();
    let gpt2 = specs.iter().find(|s| s.name == "gpt2").unwrap();
    let t = param_table(gpt2);
    assert_eq!(t, param_table(gpt2));
    let names: Vec<&str> = t.iter().take(6).map(|p| p.name.as_str()).collect();
    assert_eq!(
        names,
        [
            "embed.tokens.weight",
            "decoder.positions.weight",
            "decoder.layers.0.attention.norm.weight",
            "decoder.layers.0.attention.norm.bias",
            "decoder.layers.0.attention.q.weight",
            "decoder.layers.0.attention.k.weight",
        ]
    );
    let q = t
        .iter()
        .find(|p| p.name == "decoder.layers.3.attention.q.weight")
        .unwrap();
    assert_eq!(q.shape, [768, 768]);
    assert_eq!(t.last().unwrap().name, "decoder.final_norm.bias");

    // ALBERT: one shared layer, a factorized embedding with its projection, MLM + SOP heads.
    let albert = specs.iter().find(|s| s.name == "albert_base").unwrap();
    let t = param_table(albert);
    assert!(t.iter().all(|p| !p.name.starts_with("encoder.layers.1.")));
    let find = |n: &str| {
        t.iter()
            .find(|p| p.name == n)
            .unwrap_or_else(|| panic!("no {n}"))
            .shape
            .clone()
    };
    assert_eq!(find("embed.project.weight"), [768, 128]);
    assert_eq!(find("head.mlm.dense.weight"), [128, 768]);
    assert_eq!(find("head.pooler.weight"), [768, 768]);
    assert_eq!(find("head.classifier.weight"), [2, 768]);

    // T5: a relative-bias table per stack; tied head, so no `head.lm.weight`.
    let t5 = specs.iter().find(|s| s.name == "t5_small").unwrap();
    let t = param_table(t5);
    let find = |n: &str| t.iter().find(|p| p.name == n).map(|p| p.shape.clone());
    assert_eq!(find("encoder.relative_bias.weight"), Some(vec![32, 8]));
    assert_eq!(find("decoder.relative_bias.weight"), Some(vec![32, 8]));
    assert_eq!(
        find("decoder.layers.5.cross_attention.q.weight"),
        Some(vec![512, 512])
    );
    assert_eq!(find("head.lm.weight"), None);

    // Mamba and RWKV layouts.
    let mamba = specs.iter().find(|s| s.name == "mamba_130m").unwrap();
    let t = param_table(mamba);
    let find = |n: &str| t.iter().find(|p| p.name == n).map(|p| p.shape.clone());
    assert_eq!(
        find("decoder.layers.0.mamba.conv.weight"),
        Some(vec![1536, 1, 4])
    );
    assert_eq!(
        find("decoder.layers.0.mamba.x_proj.weight"),
        Some(vec![48 + 32, 1536])
    );
    let rwkv = specs.iter().find(|s| s.name == "rwkv4_169m").unwrap();
    let t = param_table(rwkv);
    let find = |n: &str| t.iter().find(|p| p.name == n).map(|p| p.shape.clone());
    assert_eq!(find("decoder.embed_norm.bias"), Some(vec![768]));
    assert_eq!(
        find("decoder.layers.11.channel_mix.key.weight"),
        Some(vec![3072, 768])
    );
    assert_eq!(find("head.lm.weight"), Some(vec![50277, 768]));
}

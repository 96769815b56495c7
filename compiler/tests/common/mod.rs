//! Helpers shared by the integration tests: fixture paths, the `tiny` spec of a fixture, and
//! ttt.py's parameter names mapped to canonical ones (the weight loader knows HF names, not
//! ttt.py's).
#![allow(dead_code)] // each test binary uses its own subset

use arch_dsl::elab::Program;
use arch_dsl::spec::ArchSpec;
use std::path::{Path, PathBuf};

pub fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
}

pub fn spec_of(dir: &Path) -> ArchSpec {
    let prog = Program::load(&dir.join("model.arch")).expect("model.arch");
    let (spec, diags) = prog.elaborate("tiny");
    spec.unwrap_or_else(|| panic!("{}: {diags:?}", dir.display()))
}

/// ttt.py's name of a tensor → the canonical one (the weight loader does not know ttt.py's).
pub fn canonical(name: &str) -> String {
    let name = name.strip_prefix("model.").unwrap_or(name);
    if name == "embed_tokens.weight" {
        return "embed.tokens.weight".into();
    }
    if name == "norm.weight" {
        return "decoder.final_norm.weight".into();
    }
    let (layer, rest) = name
        .strip_prefix("layers.")
        .and_then(|r| r.split_once('.'))
        .unwrap_or_else(|| panic!("unexpected tensor `{name}`"));
    let rest = match rest {
        "seq_norm.weight" => "ttt.norm.weight".to_string(),
        "ffn_norm.weight" => "mlp.norm.weight".to_string(),
        r if r.starts_with("mlp.") => r.replace("_proj", ""),
        r => {
            let r = r
                .strip_prefix("seq_modeling_block.")
                .unwrap_or_else(|| panic!("unexpected tensor `{name}`"));
            let r = match r {
                "learnable_token_idx" => "token_idx".to_string(),
                "learnable_ttt_lr_weight" => "lr_weight".to_string(),
                "learnable_ttt_lr_bias" => "lr_bias".to_string(),
                r => r.replace("_proj", ""),
            };
            format!("ttt.{r}")
        }
    };
    format!("decoder.layers.{layer}.{rest}")
}

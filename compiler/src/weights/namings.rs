//! ArchSpec → the `namings` of a package manifest: for every naming scheme of [`super::hf`],
//! where each canonical parameter lives, as the runtime's [`Source`]s.
//!
//! The compiler's [`Src`] gives the *stored* shape of transposed and split tensors (what the
//! file holds); the manifest's [`Source`] gives the canonical shape (docs/PACKAGE.md).

use arch_dsl::spec::ArchSpec;
use arch_runtime::manifest::{Naming, Source};

use super::hf::{plan, Src, SCHEMES};
use crate::params::param_table;

/// Every naming under which at least one parameter of `spec` has a tensor, in the
/// loader's order of preference (canonical first).
pub fn manifest_namings(spec: &ArchSpec) -> Vec<Naming> {
    let table = param_table(spec);
    SCHEMES
        .iter()
        .filter_map(|scheme| {
            let sources: Vec<(String, Source)> = table
                .iter()
                .map(|p| (p.name.clone(), source(&plan(scheme, spec, p), &p.shape)))
                .collect();
            if sources.iter().all(|(_, s)| *s == Source::Nothing) {
                return None;
            }
            Some(Naming {
                label: scheme.label.to_string(),
                sources: sources.into_iter().collect(),
            })
        })
        .collect()
}

/// `src` with canonical shapes (`canonical` is the parameter's shape).
fn source(src: &Src, canonical: &[usize]) -> Source {
    match src {
        Src::Plain { name, shape } => Source::Plain {
            name: name.clone(),
            shape: shape.clone(),
        },
        Src::Transpose { name, .. } => Source::Transpose {
            name: name.clone(),
            shape: canonical.to_vec(),
        },
        Src::Rows {
            name,
            transpose,
            start,
            len,
            ..
        } => Source::Rows {
            name: name.clone(),
            shape: canonical.to_vec(),
            transpose: *transpose,
            start: *start,
            len: *len,
        },
        Src::NegLog { name, .. } => Source::NegLog {
            name: name.clone(),
            shape: canonical.to_vec(),
        },
        Src::RopeRows { name, heads, .. } => Source::RopeRows {
            name: name.clone(),
            shape: canonical.to_vec(),
            heads: *heads,
        },
        Src::Any(alts) => Source::Any(alts.iter().map(|a| source(a, canonical)).collect()),
        Src::Nothing => Source::Nothing,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use arch_dsl::elab::Program;
    use std::path::Path;

    fn fixture_spec(name: &str) -> ArchSpec {
        let path = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures/hf")
            .join(name)
            .join("model.arch");
        let prog = Program::load(&path).expect("fixture");
        let (spec, diags) = prog.elaborate("tiny");
        spec.unwrap_or_else(|| panic!("{name}: {diags:?}"))
    }

    #[test]
    fn gpt2_namings_split_and_transpose_c_attn() {
        let spec = fixture_spec("gpt2");
        let namings = manifest_namings(&spec);
        let labels: Vec<&str> = namings.iter().map(|n| n.label.as_str()).collect();
        assert_eq!(labels[0], "canonical");
        assert!(labels.contains(&"GPT2LMHeadModel"), "{labels:?}");
        let d = spec.d_model as usize;
        let hf = namings
            .iter()
            .find(|n| n.label == "GPT2LMHeadModel")
            .unwrap();
        assert_eq!(
            hf.sources["decoder.layers.0.attention.q.weight"],
            Source::Rows {
                name: "transformer.h.0.attn.c_attn.weight".into(),
                shape: vec![d, d],
                transpose: true,
                start: 0,
                len: d,
            }
        );
        assert_eq!(
            hf.sources["decoder.layers.0.attention.v.bias"],
            Source::Rows {
                name: "transformer.h.0.attn.c_attn.bias".into(),
                shape: vec![d],
                transpose: false,
                start: 2 * d,
                len: d,
            }
        );
        // Conv1D weights: canonical [out, in] shape, stored transposed.
        assert_eq!(
            hf.sources["decoder.layers.0.mlp.up.weight"],
            Source::Transpose {
                name: "transformer.h.0.mlp.c_fc.weight".into(),
                shape: vec![4 * d, d],
            }
        );
        let canonical = &namings[0];
        assert_eq!(canonical.sources.len(), param_table(&spec).len());
        assert!(canonical
            .sources
            .values()
            .all(|s| matches!(s, Source::Plain { .. })));
    }

    /// The runtime, reading each Hugging Face fixture through these namings, gets the same
    /// tensors as the compiler's loader.
    #[test]
    fn the_runtime_reads_every_fixture_like_the_compiler() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/hf");
        let mut names: Vec<_> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.join("model.safetensors").is_file() && p.join("model.arch").is_file())
            .collect();
        names.sort();
        assert!(names.len() >= 11);
        for path in names {
            let name = path.file_name().unwrap().to_string_lossy().into_owned();
            if name == "bert_model" {
                continue; // a bare BertModel: the spec's classifier is absent
            }
            let spec = fixture_spec(&name);
            let table = param_table(&spec);
            let manifest = super::super::params_manifest(&spec, &table, manifest_namings(&spec));
            let file = path.join("model.safetensors");
            let runtime = arch_runtime::Weights::open(&manifest, &file)
                .unwrap_or_else(|e| panic!("{name}: {e}"));
            let compiler = super::super::load(&spec, &file).unwrap();
            assert_eq!(runtime.naming(), compiler.naming(), "{name}");
            for (i, p) in table.iter().enumerate() {
                let want = &compiler.get(&p.name).unwrap().data;
                assert_eq!(runtime.data(i).unwrap(), &want[..], "{name}: `{}`", p.name);
            }
        }
    }
}

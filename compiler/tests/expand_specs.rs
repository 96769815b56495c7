//! Every model of the spec library and of the language examples expands to a forward graph
//! that verifies, at its real size (no weights needed), and the IR text round-trips.

use arch_dsl::elab::Program;
use archc::expand::{forward, ExpandOptions};
use archc::graph::{print, read, verify, Op};
use std::path::Path;

fn arch_files(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut files: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "arch"))
        .collect();
    files.sort();
    files
}

#[test]
fn every_library_model_expands_and_verifies() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let mut files = arch_files(&root.join("specs"));
    files.extend(arch_files(&root.join("dsl/tests/examples")));
    let mut count = 0;
    for file in files {
        let prog = Program::load(&file).unwrap();
        let (specs, diags) = prog.check();
        assert!(diags.is_empty(), "{}", file.display());
        for spec in specs {
            let g = forward(
                &spec,
                &ExpandOptions {
                    attention_mask: true,
                    ..ExpandOptions::default()
                },
            )
            .unwrap_or_else(|e| panic!("{}: {e}", spec.name));
            verify(&g).unwrap_or_else(|e| panic!("{}: {e}", spec.name));
            let params: usize = g
                .nodes
                .iter()
                .filter(|n| matches!(n.op, Op::Param { .. }))
                .count();
            assert!(params > 0, "{}", spec.name);
            assert!(
                g.outputs.iter().any(|(n, _)| n == "hidden"),
                "{}",
                spec.name
            );
            count += 1;
        }
    }
    assert!(count >= 70, "{count} models");
}

#[test]
fn ir_text_round_trips_for_each_family() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../specs");
    for (file, model) in [
        ("bert.arch", "bert_base"),
        ("t5.arch", "t5_small"),
        ("mamba.arch", "mamba_130m"),
        ("rwkv4.arch", "rwkv4_169m"),
        ("ttt.arch", "ttt_mlp_125m"),
        ("hybrid.arch", "hybrid_1b"),
        ("gpt3.arch", "gpt3_small"),
    ] {
        let prog = Program::load(&root.join(file)).unwrap();
        let spec = prog.elaborate(model).0.unwrap();
        let g = forward(
            &spec,
            &ExpandOptions {
                attention_mask: true,
                ..ExpandOptions::default()
            },
        )
        .unwrap();
        let text = print(&g);
        let back = read(&text).unwrap_or_else(|e| panic!("{model}: {e}"));
        assert_eq!(back, g, "{model}");
        assert_eq!(print(&back), text);
    }
}

/// Every library model with a decoder has step (and, with an encoder, encode) programs
/// that verify at their real sizes and build to Kernel IR; encoder-only models say why
/// they cannot generate.
#[test]
fn every_library_decoder_has_a_step_program() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let mut files = arch_files(&root.join("specs"));
    files.extend(arch_files(&root.join("dsl/tests/examples")));
    let (mut steps, mut refused) = (0, 0);
    for file in files {
        let prog = Program::load(&file).unwrap();
        let (specs, _) = prog.check();
        for spec in specs {
            if let Some(why) = archc::expand::step_unsupported(&spec) {
                assert!(spec.decoder.is_none(), "{}: {why}", spec.name);
                assert!(why.contains("encoder-only"), "{}: {why}", spec.name);
                refused += 1;
                continue;
            }
            let g = archc::expand::step(&spec)
                .unwrap_or_else(|e| panic!("{}: {e}", spec.name))
                .graph;
            verify(&g).unwrap_or_else(|e| panic!("{}: {e}", spec.name));
            let g = archc::passes::simplify(&g);
            archc::kernel::build(&g).unwrap_or_else(|e| panic!("{}: {e}", spec.name));
            if spec.encoder.is_some() {
                let e = archc::expand::encode(&spec).unwrap();
                verify(&e).unwrap_or_else(|err| panic!("{} encode: {err}", spec.name));
            }
            steps += 1;
        }
    }
    eprintln!("{steps} step programs, {refused} encoder-only models");
    assert!(
        steps >= 40 && refused >= 10,
        "{steps} step programs, {refused} refused"
    );
}

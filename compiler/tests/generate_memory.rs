//! Session memory: what the runtime allocates for caches and recurrent states equals what
//! `archc stats` reports, a decoder's cache grows only to the capacity asked for, and
//! recurrent models (Mamba, RWKV-4, S4, TTT) hold the same state after 16 and 4,096
//! tokens.

mod common;

use arch_dsl::elab::Program;
use arch_dsl::spec::ArchSpec;
use arch_dsl::stats::{stats, StatsOptions};
use arch_runtime::generate::{GenerateOptions, Generator};
use arch_runtime::{Package, Session, Weights};
use archc::package::{build, BuildOptions, PackageKind};
use common::{fixture, spec_of, TINY_S4, TINY_TTT, TINY_WINDOWS};

fn step_session(spec: &ArchSpec, dir: &std::path::Path) -> Session {
    let opts = BuildOptions {
        kind: PackageKind::Step,
        cache: false,
        ..BuildOptions::host().unwrap()
    };
    let pkg = dir.join(&spec.name);
    build(spec, &opts, Some(&pkg)).unwrap();
    let package = Package::load(&pkg).unwrap();
    let weights = Weights::random(package.manifest(), 3).unwrap();
    Session::new(package, weights, 1).unwrap()
}

/// `archc stats`' state of one sequence of `seq` tokens, in f32 bytes.
fn stats_state(spec: &ArchSpec, seq: u64) -> u64 {
    let opts = StatsOptions {
        seq: Some(seq),
        ..Default::default()
    };
    let s = stats(spec, &opts);
    assert_eq!(
        s.weights_bytes, s.weights_bytes_f32,
        "{}: the runtime keeps f32 state",
        spec.name
    );
    s.state_bytes_at_seq
}

#[test]
fn allocated_state_equals_archc_stats() {
    let tmp = tempfile::tempdir().unwrap();
    let mut specs: Vec<ArchSpec> = ["gpt2", "llama", "openai_gpt", "mamba", "rwkv"]
        .iter()
        .map(|n| spec_of(&fixture(&format!("hf/{n}"))))
        .collect();
    let s4 = Program::from_source("s4.arch", TINY_S4.to_string(), None);
    specs.push(s4.elaborate("tiny").0.unwrap());
    let ttt = Program::from_source("ttt.arch", TINY_TTT.to_string(), None);
    specs.push(ttt.elaborate("tiny_linear").0.unwrap());
    specs.push(ttt.elaborate("tiny_mlp").0.unwrap());
    // Sliding windows keep rings of min(window, capacity) rows, as stats counts them.
    let windows = Program::from_source("w.arch", TINY_WINDOWS.to_string(), None);
    specs.push(windows.elaborate("window").0.unwrap());
    specs.push(windows.elaborate("banded").0.unwrap());
    let mut checked = 0;
    for spec in &specs {
        let mut session = step_session(spec, tmp.path());
        for capacity in [1u64, 7, spec.context] {
            let got = session.reset_state(1, capacity).unwrap();
            let want = stats_state(spec, capacity);
            assert_eq!(got, want, "{} at capacity {capacity}", spec.name);
            // A batch holds one sequence's state per row.
            let rows = session.reset_state(3, capacity).unwrap();
            assert_eq!(rows, 3 * want, "{} × 3 rows", spec.name);
            checked += 1;
        }
    }
    assert_eq!(checked, 3 * specs.len());
}

fn tiny(src: &str) -> ArchSpec {
    let prog = Program::from_source("t.arch", src.to_string(), None);
    prog.elaborate("m").0.unwrap()
}

#[test]
fn recurrent_state_is_constant_in_length() {
    let tmp = tempfile::tempdir().unwrap();
    let specs = [
        tiny("model m { vocab = 37  d_model = 8  context = 8192  norm = rmsnorm(eps = 1e-5)  placement = pre  position = none  decoder { layers = 2  mamba { d_state = 4  d_conv = 4  expand = 2 } } }"),
        tiny("model m { vocab = 37  d_model = 8  context = 8192  norm = layernorm(eps = 1e-5)  placement = pre  position = none  decoder { layers = 2  time_mix { }  channel_mix { hidden = 16 } } }"),
        tiny("model m { vocab = 37  d_model = 6  context = 8192  norm = layernorm(eps = 1e-5)  placement = pre  position = none  decoder { layers = 2  ssm { d_state = 4 }  mlp { hidden = 8  act = gelu } } }"),
        tiny("model m { vocab = 37  d_model = 8  context = 8192  norm = rmsnorm(eps = 1e-6)  placement = pre  position = rope(theta = 10000.0, style = interleaved)  decoder { layers = 2  ttt { heads = 2  inner = mlp  mini_batch = 4  lr = 1.0  gate = true }  mlp { hidden = 8  act = swiglu } } }"),
    ];
    for spec in &specs {
        let session = step_session(spec, tmp.path());
        let mut g = Generator::new(session).unwrap();
        let mut held = Vec::new();
        for n in [16, 4096] {
            let opts = GenerateOptions::greedy(n);
            let out = g.generate(&[1, 2, 3, 4], None, 1, &opts, |_| {}).unwrap();
            assert_eq!(out.tokens.len(), 4 + n);
            assert!(out.tokens.iter().all(|&t| (0..37).contains(&t)));
            held.push(out.state_bytes);
        }
        assert_eq!(
            held[0], held[1],
            "{:?}: state grows with length",
            spec.decoder
        );
        assert_eq!(held[0], stats_state(spec, 4100), "stats' fixed state");
        assert!(held[0] > 0);
    }
}

/// A decoder's cache holds the prompt and the new tokens (the last one is never fed
/// back): exactly `archc stats` at that length.
#[test]
fn a_decoder_cache_grows_only_to_its_capacity() {
    let tmp = tempfile::tempdir().unwrap();
    let spec = spec_of(&fixture("hf/gpt2"));
    let mut g = Generator::new(step_session(&spec, tmp.path())).unwrap();
    for (prompt, n) in [(2usize, 3usize), (5, 9)] {
        let ids: Vec<i64> = (0..prompt as i64).collect();
        let opts = GenerateOptions::greedy(n);
        let out = g.generate(&ids, None, 1, &opts, |_| {}).unwrap();
        assert_eq!(
            out.state_bytes,
            stats_state(&spec, (prompt + n - 1) as u64),
            "prompt {prompt} + {n} new"
        );
    }
}

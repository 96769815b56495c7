//! Hostile input → an error or a spec, never a panic, stack overflow or hang.
//!
//! Seeds are every example, library spec and invalid fixture; mutations delete, duplicate,
//! swap and insert tokens, plant huge numbers and deep nesting, and truncate. Each run is on
//! a thread with a 2 MiB stack, the smallest a caller is likely to give us.

use arch_dsl::elab::Program;
use std::path::Path;
use std::time::{Duration, Instant};

/// xorshift64*: a seeded generator, so failures reproduce.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

/// Runs parse + check + stats + fmt on a small stack; returns how long it took.
fn exercise(text: String) -> Duration {
    let start = Instant::now();
    let worker = std::thread::Builder::new()
        .stack_size(2 << 20)
        .spawn(move || {
            let prog = Program::from_source("fuzz.arch", text.clone(), None);
            let (specs, _) = prog.check();
            for spec in &specs {
                let s = arch_dsl::stats::stats(
                    spec,
                    &arch_dsl::stats::StatsOptions {
                        seq: None,
                        tokens: None,
                    },
                );
                let _ = arch_dsl::stats::render_table(&s, spec);
            }
            let _ = arch_dsl::fmt::format(&text);
        });
    let result = worker.expect("spawn").join();
    assert!(result.is_ok(), "panicked");
    start.elapsed()
}

fn seeds() -> Vec<String> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut out = Vec::new();
    for dir in ["tests/examples", "tests/invalid", "../specs"] {
        let rd = std::fs::read_dir(root.join(dir))
            .unwrap_or_else(|e| panic!("seed directory {dir}: {e}"));
        let mut paths: Vec<_> = rd.filter_map(|e| e.ok().map(|e| e.path())).collect();
        paths.sort();
        out.extend(paths.iter().filter_map(|p| std::fs::read_to_string(p).ok()));
    }
    out
}

/// Splits text into rough tokens (words, numbers, single punctuation, whitespace runs).
fn tokens(text: &str) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    let mut prev_kind = 0u8;
    for c in text.chars() {
        let kind = if c.is_ascii_alphanumeric() || c == '_' || c == '.' {
            1
        } else if c.is_whitespace() {
            2
        } else {
            3
        };
        match out.last_mut() {
            Some(last) if kind == prev_kind && kind != 3 => last.push(c),
            _ => out.push(c.to_string()),
        }
        prev_kind = kind;
    }
    out
}

const PLANTS: &[&str] = &[
    "99999999999999999999999",
    "9223372036854775807",
    "1e308",
    "1e999",
    "0",
    "-1",
    "0.0",
    "(",
    ")",
    "[",
    "]",
    "{",
    "}",
    "=",
    ",",
    ":",
    ".",
    "+",
    "-",
    "*",
    "/",
    "^",
    "\"",
    "'",
    "#",
    "//",
    "/*",
    "*/",
    "///",
    "é",
    "model",
    "block",
    "let",
    "use",
    "true",
    "layers",
    "stack",
    "heads",
    "kv_heads",
    "d_model",
    "attention { heads = 0 }",
    "decoder",
    "encoder",
    "cross_attention { heads = 3 }",
    "objective = rtd(generator = m)",
    "mask = sliding(window = 0)",
    "share = all",
];

fn mutate(rng: &mut Rng, toks: &mut Vec<String>) {
    let n = toks.len().max(1);
    match rng.below(8) {
        0 if !toks.is_empty() => {
            toks.remove(rng.below(n));
        }
        1 if !toks.is_empty() => {
            let i = rng.below(n);
            let t = toks[i].clone();
            toks.insert(i, t);
        }
        2 if toks.len() > 1 => {
            let i = rng.below(n - 1);
            toks.swap(i, i + 1);
        }
        3 => {
            let t = PLANTS[rng.below(PLANTS.len())].to_string();
            toks.insert(rng.below(n), format!(" {t} "));
        }
        4 => {
            let depth = 1 + rng.below(300);
            let (open, close) = [("(", ")"), ("[", "]"), ("{", "}"), ("x { ", " }")][rng.below(4)];
            toks.insert(
                rng.below(n),
                format!("{}1{}", open.repeat(depth), close.repeat(depth)),
            );
        }
        5 => {
            let op = ["-", "2 ^ ", "1 + ", "-(", "[a] * "][rng.below(5)];
            toks.insert(rng.below(n), op.repeat(1 + rng.below(2000)));
        }
        6 if !toks.is_empty() => toks.truncate(rng.below(n)),
        _ => {
            let i = rng.below(n);
            if toks
                .get(i)
                .is_some_and(|t| t.chars().all(|c| c.is_ascii_digit()))
            {
                toks[i] = [
                    "0",
                    "1",
                    "3",
                    "4096",
                    "100000",
                    "123456789012",
                    "9223372036854775807",
                ][rng.below(7)]
                .into();
            }
        }
    }
}

#[test]
fn mutated_specs_never_panic_or_hang() {
    let seeds = seeds();
    assert!(seeds.len() >= 40);
    let mut rng = Rng(0x5eed_1234_abcd_0001);
    let iterations = 2000;
    let mut slowest = Duration::ZERO;
    for _ in 0..iterations {
        let mut toks = tokens(&seeds[rng.below(seeds.len())]);
        for _ in 0..1 + rng.below(4) {
            mutate(&mut rng, &mut toks);
        }
        let text = toks.concat();
        // To reproduce a crash, ARCH_FUZZ_LAST=FILE keeps the input being run.
        if let Some(path) = std::env::var_os("ARCH_FUZZ_LAST") {
            std::fs::write(path, &text).unwrap();
        }
        slowest = slowest.max(exercise(text));
    }
    assert!(
        slowest < Duration::from_secs(5),
        "slowest input took {slowest:?}"
    );
}

#[test]
fn deep_nesting_is_an_error_not_a_crash() {
    let cases = [
        format!("let x = {}1{}", "(".repeat(100_000), ")".repeat(100_000)),
        format!("let x = {}1", "-".repeat(100_000)),
        format!("let x = {}2", "2 ^ ".repeat(50_000)),
        format!("let x = 1{}", " + 1".repeat(50_000)),
        format!("model m {}{}", "a { ".repeat(50_000), "}".repeat(50_000)),
        format!("let x = {}a{}", "[".repeat(100_000), "]".repeat(100_000)),
        "/*".repeat(100_000),
    ];
    for text in cases {
        let prog = Program::from_source("deep.arch", text.clone(), None);
        assert!(
            prog.has_errors() || !prog.check().1.is_empty(),
            "deep input must be rejected"
        );
        exercise(text);
    }
}

#[test]
fn nesting_within_limits_works_on_a_small_stack() {
    let text = format!(
        "let x = {}1{}  let y = {}2  let z = 1{}",
        "(".repeat(60),
        ")".repeat(60),
        "-2 ^ ".repeat(60),
        " + 1".repeat(400)
    );
    let prog = Program::from_source("ok.arch", text.clone(), None);
    assert!(
        !prog.has_errors(),
        "{}",
        arch_dsl::diag::render(&prog.sources, &prog.diagnostics, false)
    );
    exercise(text);
}

#[test]
fn absurd_sizes_are_errors_or_saturate() {
    let text = "model m {
        vocab = 9223372036854775807  d_model = 9223372036854775807  context = 9223372036854775807
        decoder { layers = 100000  attention { heads = 1 }  mlp { hidden = 9223372036854775807 } }
    }"
    .to_string();
    exercise(text);
}

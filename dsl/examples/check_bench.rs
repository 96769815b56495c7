//! Generated files of N models → time to parse, elaborate and validate them (the
//! `archc check` work), to show it is fast and grows linearly with the input.
//!
//! `cargo run --release -p arch-dsl --example check_bench`

use arch_dsl::elab::Program;
use std::time::Instant;

/// N models: half written out in full, half derived with overrides.
fn generate(n: usize) -> String {
    let mut out = String::new();
    for i in 0..n {
        if i % 2 == 0 {
            out.push_str(&format!(
                "model m{i} {{\n    vocab = {}\n    d_model = 512\n    context = 1024\n    norm = rmsnorm(eps = 1e-5)\n    \
                 position = rope(theta = 10000.0)\n    decoder {{\n        layers = {}\n        \
                 attention {{ heads = 8  kv_heads = 2 }}\n        mlp {{ hidden = 4 * d_model  act = swiglu }}\n    }}\n}}\n\n",
                1000 + i,
                1 + i % 48
            ));
        } else {
            out.push_str(&format!(
                "model m{i} : m{} {{\n    d_model = 1024\n    decoder.layers = 12\n}}\n\n",
                i - 1
            ));
        }
    }
    out
}

fn main() {
    println!(
        "{:>8} {:>10} {:>12} {:>14}",
        "models", "bytes", "median ms", "µs per model"
    );
    for n in [1_000, 5_000, 10_000, 20_000] {
        let text = generate(n);
        let mut times = Vec::new();
        for _ in 0..5 {
            let start = Instant::now();
            let prog = Program::from_source("gen.arch", text.clone(), None);
            let (specs, diags) = prog.check();
            assert!(diags.is_empty() && specs.len() == n);
            times.push(start.elapsed().as_secs_f64() * 1e3);
        }
        times.sort_by(f64::total_cmp);
        let median = times[times.len() / 2];
        println!(
            "{n:>8} {:>10} {median:>12.1} {:>14.1}",
            text.len(),
            median * 1e3 / n as f64
        );
    }
}

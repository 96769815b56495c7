//! Arbitrary bytes → parse, elaborate, stats and fmt: none of them may panic, overflow the
//! stack or hang. Run with `cargo fuzz run parse_elaborate` from `fuzz/`.
#![no_main]

use arch_dsl::elab::Program;
use arch_dsl::stats::{render_table, stats, StatsOptions};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let prog = Program::from_source("fuzz.arch", text.to_string(), None);
    let (specs, _) = prog.check();
    for spec in &specs {
        let s = stats(spec, &StatsOptions { seq: None, tokens: None });
        let _ = render_table(&s, spec);
    }
    if let Ok(formatted) = arch_dsl::fmt::format(text) {
        assert_eq!(arch_dsl::fmt::format(&formatted).ok().as_deref(), Some(formatted.as_str()), "fmt is idempotent");
    }
});

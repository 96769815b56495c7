//! Nothing: this crate holds `model!`'s compile-fail tests (`tests/ui.rs`), apart from
//! `arch-macros` so that trybuild's crates depend on the macro alone.

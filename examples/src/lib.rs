//! Example programs (`src/bin/`): `generate` declares a GPT-2-like model inline with
//! `model!`, loads its weights and generates; `embed` declares all-MiniLM-L6-v2 from its spec
//! file and embeds sentences. `tests/examples.rs` builds and runs both.

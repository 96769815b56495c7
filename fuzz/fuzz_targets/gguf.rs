//! The GGUF reader on arbitrary bytes: parsing never panics and never allocates more than
//! the input can hold; a file it accepts dequantizes every tensor to exactly its element
//! count.
//! Run with `cargo fuzz run gguf` from `fuzz/`.
#![no_main]

use arch_runtime::gguf::Gguf;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(g) = Gguf::parse(data) {
        for t in &g.tensors {
            assert_eq!(g.to_f32(t).len(), t.numel());
        }
    }
});

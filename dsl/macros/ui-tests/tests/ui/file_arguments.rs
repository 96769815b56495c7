arch_macros::model!(file = "specs/llama3.arch", models = "llama3_8b");

fn main() {}

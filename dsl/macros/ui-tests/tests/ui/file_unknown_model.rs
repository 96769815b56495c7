arch_macros::model!(file = "specs/llama3.arch", model = "llama3_8");

fn main() {}

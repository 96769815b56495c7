arch_macros::model!(file = "specs/no_such_file.arch", model = "llama3_8b");

fn main() {}

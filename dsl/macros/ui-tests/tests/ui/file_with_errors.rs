arch_macros::model!(file = "specs/broken.arch");

fn main() {}

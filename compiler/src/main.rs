//! The `archc` command: command-line arguments → the compiler's entry points.

fn main() -> std::process::ExitCode {
    archc::cli::main()
}

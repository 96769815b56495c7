fn main() {
    let args: Vec<String> = std::env::args().collect();
    let prog = arch_dsl::elab::Program::load(std::path::Path::new(&args[1])).unwrap();
    if args.len() < 3 {
        let (_, diags) = prog.check();
        eprint!("{}", arch_dsl::diag::render(&prog.sources, &diags, false));
        return;
    }
    let (spec, diags) = prog.elaborate(&args[2]);
    eprint!("{}", arch_dsl::diag::render(&prog.sources, &diags, false));
    println!("{:#?}", spec);
}

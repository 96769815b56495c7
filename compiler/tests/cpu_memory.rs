//! Memory of compiled models, from the buffer plan: GPT-2 small at 1 × 1024 tokens needs
//! no more than twice its largest layer activation (the logits) besides its weights, and
//! no attention stores a seq × seq matrix (the kernel keeps one block of scores per thread
//! in scratch). Only T5 holds a seq² buffer, by construction of its cell: the relative
//! position bias [1, heads, seq, seq], computed once and shared by every layer as Hugging
//! Face does. (S4 is compiled in its recurrent form, a scan, linear in seq; its
//! convolution form, the evaluator's, is a [d, seq, seq] Toeplitz product.)

use arch_dsl::elab::Program;
use arch_dsl::spec::Position;
use archc::graph::Dim;
use archc::kernel::BufKind;
use archc::package::{package_graph, package_program, BuildOptions};
use std::collections::HashMap;
use std::path::Path;

fn bytes(d: &Dim, bind: &HashMap<String, usize>) -> u64 {
    d.eval(bind).unwrap() as u64 * 4
}

#[test]
fn gpt2_small_at_1024_tokens_fits_twice_the_largest_activation() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../specs/gpt2.arch");
    let prog = Program::load(&path).unwrap();
    let (spec, _) = prog.elaborate("gpt2");
    let spec = spec.unwrap();
    let mut opts = BuildOptions::host().unwrap();
    opts.outputs = vec!["logits".into()];
    let graph = package_graph(&spec, &opts).unwrap();
    let p = package_program(&graph).unwrap();
    let bind: HashMap<String, usize> = [("batch".to_string(), 1), ("seq".to_string(), 1024)].into();
    let mut slot_bytes = vec![0u64; p.slot_count];
    let (mut weights, mut outputs, mut largest) = (0u64, 0u64, 0u64);
    for b in &p.buffers {
        let n = bytes(&b.elems, &bind);
        match &b.kind {
            BufKind::Param(_) => weights += n,
            BufKind::Output(_) => outputs += n,
            BufKind::Temp => {
                let s = p.slots[b.id].unwrap();
                slot_bytes[s] = slot_bytes[s].max(n);
            }
            BufKind::Input(_) | BufKind::State(_) => {}
        }
        if !matches!(b.kind, BufKind::Param(_)) {
            largest = largest.max(n);
        }
    }
    let arena: u64 = slot_bytes.iter().sum();
    let mib = |x: u64| x as f64 / (1 << 20) as f64;
    eprintln!(
        "gpt2 1×1024: weights {:.0} MiB, arena {:.1} MiB in {} slots, outputs {:.0} MiB, largest activation {:.0} MiB",
        mib(weights),
        mib(arena),
        p.slot_count,
        mib(outputs),
        mib(largest)
    );
    assert!(
        arena + outputs <= 2 * largest,
        "activations {} > 2 × {}",
        arena + outputs,
        largest
    );
}

#[test]
fn no_buffer_grows_with_seq_squared() {
    let specs = Path::new(env!("CARGO_MANIFEST_DIR")).join("../specs");
    let mut files: Vec<_> = std::fs::read_dir(&specs)
        .unwrap()
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "arch"))
        .collect();
    files.sort();
    let opts = BuildOptions::host().unwrap();
    for file in files {
        let prog = Program::load(&file).unwrap();
        for model in prog.model_names() {
            let (spec, _) = prog.elaborate(&model);
            let spec = spec.unwrap();
            let graph = package_graph(&spec, &opts).unwrap();
            let p = package_program(&graph).unwrap();
            let relative = matches!(spec.position, Position::RelativeBias { .. });
            for b in &p.buffers {
                let seqs = b.elems.syms.iter().filter(|s| s.contains("seq")).count();
                assert!(
                    seqs <= 1 || relative,
                    "{model}: buffer b{} of {} elements grows with seq²",
                    b.id,
                    b.elems
                );
            }
        }
    }
}

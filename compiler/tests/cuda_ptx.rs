//! The CUDA backend's PTX: every model of `specs/` (forward program, and the step program
//! of generation where the model has one) lowers to PTX for sm_80 and sm_90, and NVIDIA's
//! assembler accepts every file; a snapshot of one GPT-2 layer's PTX. `ptxas` comes from
//! `tools/fetch_ptxas.sh` (`tools/test.sh` sets `ARCHC_PTXAS`); without it the assembly
//! check is skipped, except under CI, where it is an error.

use arch_dsl::elab::Program;
use archc::backend::cuda::{find_ptxas, lower_ptx, lower_ptx_for, ptxas_check, SMS};
use archc::package::{package_graph, package_program, BuildOptions, PackageKind};
use std::path::Path;

fn ptxas() -> Option<std::path::PathBuf> {
    let found = find_ptxas().or_else(|| {
        let p = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../target/ptxas/nvidia/cuda_nvcc/bin/ptxas");
        p.is_file().then_some(p)
    });
    if found.is_none() {
        assert!(
            std::env::var_os("CI").is_none(),
            "ptxas is missing under CI: run tools/fetch_ptxas.sh (tools/test.sh does)"
        );
        eprintln!(
            "ptxas not found: the PTX is generated but not assembled (run tools/fetch_ptxas.sh)"
        );
    }
    found
}

#[test]
fn every_spec_lowers_to_ptx_that_assembles() {
    let ptxas = ptxas();
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../specs");
    let mut files: Vec<_> = std::fs::read_dir(&root)
        .unwrap()
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "arch"))
        .collect();
    files.sort();
    let mut count = 0;
    for file in files {
        let prog = Program::load(&file).unwrap();
        let (specs, diags) = prog.check();
        assert!(diags.is_empty(), "{}", file.display());
        for spec in specs {
            let mut kinds = vec![PackageKind::Forward];
            if archc::expand::step_unsupported(&spec).is_none() {
                kinds.push(PackageKind::Step);
            }
            for kind in kinds {
                let opts = BuildOptions {
                    kind: kind.clone(),
                    ..BuildOptions::host().unwrap()
                };
                let graph = package_graph(&spec, &opts).unwrap();
                let program = package_program(&graph).unwrap();
                let all = lower_ptx_for(&program, &SMS)
                    .unwrap_or_else(|e| panic!("{} {kind:?}: {e}", spec.name));
                for (sm, lowered) in SMS.into_iter().zip(all) {
                    let what = format!("{} {kind:?} sm_{sm}", spec.name);
                    assert!(lowered.ptx.contains(&format!(".target sm_{sm}")), "{what}");
                    assert_eq!(lowered.kernels.len(), program.kernels.len(), "{what}");
                    if let Some(p) = &ptxas {
                        ptxas_check(p, &lowered.ptx, sm)
                            .unwrap_or_else(|e| panic!("{what}: ptxas: {e}"));
                    }
                }
                count += 1;
            }
        }
    }
    eprintln!("{count} programs");
    assert!(count >= 40, "{count} programs");
}

/// One GPT-2 layer at the real width, as PTX for sm_80: a change to the thread programs
/// or the shared expression lowering shows here.
#[test]
fn gpt2_layer_ptx() {
    let src = "
model gpt2_layer {
    vocab = 50257
    d_model = 768
    context = 1024
    norm = layernorm(eps = 1e-5)
    placement = pre
    position = learned
    decoder {
        layers = 1
        attention { heads = 12  bias = true }
        mlp { hidden = 4 * d_model  act = gelu_tanh  bias = true }
    }
}
";
    let prog = Program::from_source("layer.arch", src.to_string(), None);
    let (spec, diags) = prog.elaborate("gpt2_layer");
    let spec = spec.unwrap_or_else(|| panic!("{diags:?}"));
    let mut opts = BuildOptions::host().unwrap();
    opts.outputs = vec!["logits".into()];
    let program = package_program(&package_graph(&spec, &opts).unwrap()).unwrap();
    let lowered = lower_ptx(&program, 80).unwrap();
    insta::assert_snapshot!("gpt2_layer_ptx", lowered.ptx);
}

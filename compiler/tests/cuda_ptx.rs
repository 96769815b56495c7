//! The CUDA backend's PTX: every model of `specs/` (forward program, and the step program
//! of generation of each file's first model) lowers to PTX for sm_80 and sm_90, and
//! NVIDIA's assembler accepts every file (machine code generated for at least one SM per
//! program, see [`assemble`]); a snapshot of one GPT-2 layer's PTX. `ptxas` comes from
//! `tools/fetch_ptxas.sh` (`tools/test.sh` sets `ARCHC_PTXAS`); without it the assembly
//! check is skipped, except under CI, where it is an error.

use arch_dsl::elab::Program;
use archc::backend::cuda::{
    find_ptxas, lower_ptx, lower_ptx_for, lower_ptx_tiled, ptxas_check, ptxas_parse_check,
    CudaLowered, Tiling, SMS,
};
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

/// Each of `lowered` (one per SM of `sms`, from one program) through ptxas. Where they
/// declare the same kernels with the same launch bounds and shared memory — one LLVM
/// module for every SM, only instruction selection run per SM, so the same instructions
/// but for operand order and register numbering — machine code is generated for one
/// SM, chosen by `turn` (so a file's programs take turns), and the others' text is
/// checked by ptxas for their virtual architecture: every instruction, type and operand
/// against that target, without register allocation, whose other resource checks
/// concern what was compared. Half the cost of generating code for every SM. Texts
/// that declare other resources are each assembled in full.
fn assemble(ptxas: &Path, what: &str, sms: &[u32], lowered: &[CudaLowered], turn: usize) {
    fn resources(l: &CudaLowered) -> Vec<&str> {
        l.ptx
            .lines()
            .map(str::trim)
            .filter(|line| {
                [
                    ".visible .entry",
                    ".shared",
                    ".extern",
                    ".maxntid",
                    ".reqntid",
                    ".maxnreg",
                ]
                .iter()
                .any(|d| line.starts_with(d))
            })
            .collect()
    }
    let same = lowered
        .iter()
        .all(|l| resources(l) == resources(&lowered[0]));
    let full = turn % sms.len();
    for (i, (&sm, l)) in sms.iter().zip(lowered).enumerate() {
        let checked = if same && i != full {
            ptxas_parse_check(ptxas, &l.ptx, sm)
        } else {
            ptxas_check(ptxas, &l.ptx, sm)
        };
        checked.unwrap_or_else(|e| panic!("{what} sm_{sm}: ptxas: {e}"));
    }
}

/// Every model of `specs/FILE`: its forward program for sm_80 and sm_90 (one optimised
/// module, instruction selection per SM), and the step program of generation of the
/// file's first model (later models of a file differ only in sizes); each PTX file
/// assembled by ptxas.
fn spec_file(file: &str) {
    let ptxas = ptxas();
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../specs")
        .join(file);
    let prog = Program::load(&path).unwrap();
    let (specs, diags) = prog.check();
    assert!(diags.is_empty(), "{file}");
    assert!(!specs.is_empty(), "{file}");
    let mut turn = 0;
    for (i, spec) in specs.iter().enumerate() {
        let mut kinds = vec![PackageKind::Forward];
        if i == 0 && archc::expand::step_unsupported(spec).is_none() {
            kinds.push(PackageKind::Step);
        }
        for kind in kinds {
            turn += 1;
            let opts = BuildOptions {
                kind: kind.clone(),
                ..BuildOptions::host().unwrap()
            };
            let graph = package_graph(spec, &opts).unwrap();
            let program = package_program(&graph).unwrap();
            let all = lower_ptx_for(&program, &SMS)
                .unwrap_or_else(|e| panic!("{} {kind:?}: {e}", spec.name));
            for (sm, lowered) in SMS.into_iter().zip(&all) {
                let what = format!("{} {kind:?} sm_{sm}", spec.name);
                assert!(lowered.ptx.contains(&format!(".target sm_{sm}")), "{what}");
                assert_eq!(lowered.kernels.len(), program.kernels.len(), "{what}");
            }
            if let Some(p) = &ptxas {
                assemble(p, &format!("{} {kind:?}", spec.name), &SMS, &all, turn);
            }
        }
    }
}

/// One test per file of `specs/`, so the harness spreads them over the cores.
macro_rules! spec_files {
    ($($name:ident => $file:literal),+ $(,)?) => {
        const FILES: &[&str] = &[$($file),+];
        $(
            #[test]
            fn $name() {
                spec_file($file);
            }
        )+
    };
}

spec_files! {
    albert => "albert.arch",
    bart => "bart.arch",
    bench => "bench.arch",
    bert => "bert.arch",
    electra => "electra.arch",
    gpt1 => "gpt1.arch",
    gpt2 => "gpt2.arch",
    gpt3 => "gpt3.arch",
    hybrid => "hybrid.arch",
    llama1 => "llama1.arch",
    llama2 => "llama2.arch",
    llama3 => "llama3.arch",
    mamba => "mamba.arch",
    roberta => "roberta.arch",
    rwkv4 => "rwkv4.arch",
    s4 => "s4.arch",
    t5 => "t5.arch",
    ttt => "ttt.arch",
}

/// The list above is every file of `specs/`.
#[test]
fn every_spec_file_is_checked() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../specs");
    let mut files: Vec<String> = std::fs::read_dir(&root)
        .unwrap()
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".arch"))
        .collect();
    files.sort();
    assert_eq!(files, FILES, "add the new spec files to `spec_files!`");
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

/// Weights stored in every ggml type the kernels read (`--quant`, GGUF files): LLaMA 2's
/// forward program with all its matrices in that type (matmuls decode B as they stage it,
/// matrix–vector products per element, the token table per gathered row) assembles for
/// sm_80; the step program for sm_80 and sm_90 with bf16 and q4_k.
#[test]
fn stored_type_weights_assemble() {
    use arch_runtime::gguf::GgmlType;
    let ptxas = ptxas();
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../specs/llama2.arch");
    let prog = Program::load(&path).unwrap();
    let (specs, _) = prog.check();
    let spec = &specs[0];
    let types = arch_runtime::gguf::ALL
        .into_iter()
        .filter(|t| t.kernel_storage());
    assert_eq!(types.clone().count(), 10, "every stored type is checked");
    for ty in types {
        let name = ty.name();
        let step = matches!(ty, GgmlType::BF16 | GgmlType::Q4_K);
        let kinds: &[PackageKind] = if step {
            &[PackageKind::Forward, PackageKind::Step]
        } else {
            &[PackageKind::Forward]
        };
        for kind in kinds {
            let opts = BuildOptions {
                kind: kind.clone(),
                ..BuildOptions::host().unwrap()
            };
            let graph = package_graph(spec, &opts).unwrap();
            let mut program = package_program(&graph).unwrap();
            let want = archc::params::param_table(spec)
                .into_iter()
                .filter(|p| p.shape.len() == 2)
                .map(|p| (p.name, ty))
                .collect();
            let refused = archc::kernel::quant::store_quantized(&mut program, &want);
            let stored = program
                .buffers
                .iter()
                .filter(|b| b.quant == Some(ty))
                .count();
            // Every projection of the 32 layers, the token table and the head.
            assert_eq!(stored, 32 * 7 + 2, "{name} {kind:?}: refused {refused:?}");
            let sms: &[u32] = if step { &SMS } else { &[80] };
            let all =
                lower_ptx_for(&program, sms).unwrap_or_else(|e| panic!("{name} {kind:?}: {e}"));
            if let Some(p) = &ptxas {
                let turn = if ty == GgmlType::BF16 { 0 } else { 1 };
                assemble(p, &format!("{name} {kind:?}"), sms, &all, turn);
            }
        }
    }
}

/// `--dtype bf16|f16`: GPT-2's forward program with its matrices and the activations
/// between its kernels stored in the half type and the matmul tiles on `mma.sync`
/// m16n8k16 assembles for sm_80 and sm_90, with no 3×TF32 products left in it.
#[test]
fn half_precision_products_assemble() {
    use arch_runtime::gguf::GgmlType;
    let ptxas = ptxas();
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../specs/gpt2.arch");
    let prog = Program::load(&path).unwrap();
    let (specs, _) = prog.check();
    let spec = &specs[0];
    for (ty, mma) in [
        (
            GgmlType::BF16,
            "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32",
        ),
        (
            GgmlType::F16,
            "mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32",
        ),
    ] {
        let mut opts = BuildOptions {
            cuda: Some(80),
            ..BuildOptions::host().unwrap()
        };
        opts.set_dtype(spec, ty.name()).unwrap();
        assert_eq!(opts.half_matmul, Some(ty));
        let graph = package_graph(spec, &opts).unwrap();
        let mut program = package_program(&graph).unwrap();
        program.half_matmul = opts.half_matmul;
        archc::kernel::quant::store_quantized(&mut program, &opts.quant);
        assert!(program.buffers.iter().any(|b| b.quant == Some(ty)));
        // Activations between kernels in the half type, as a --dtype build keeps them.
        assert!(archc::kernel::quant::store_activations(&mut program, ty, &[]) > 0);
        let all = lower_ptx_for(&program, &SMS).unwrap();
        for (&sm, lowered) in SMS.iter().zip(&all) {
            assert!(lowered.ptx.contains(mma), "{ty:?} sm_{sm}: no {mma}");
            // The matmuls' and the attention tiles' products alike.
            assert!(
                !lowered.ptx.contains(".tf32"),
                "{ty:?} sm_{sm}: tf32 products left"
            );
        }
        if let Some(p) = &ptxas {
            let turn = if ty == GgmlType::BF16 { 0 } else { 1 };
            assemble(p, &format!("{ty:?}"), &SMS, &all, turn);
        }
        // Hopper's warpgroup products (`ARCHC_MMA=wgmma`): sm_90a, the matmul tiles on
        // `wgmma`, the attention tiles still on `mma.sync`.
        let wg = lower_ptx_tiled(&program, &[90], Tiling::wgmma())
            .unwrap()
            .remove(0);
        let name = if ty == GgmlType::BF16 { "bf16" } else { "f16" };
        let op = format!("wgmma.mma_async.sync.aligned.m64n128k16.f32.{name}.{name}");
        assert!(wg.ptx.contains(&op), "{ty:?}: no {op}");
        assert!(wg.ptx.contains(".target sm_90a"), "{ty:?}: not sm_90a");
        assert!(
            wg.ptx.contains(mma),
            "{ty:?}: attention tiles not on mma.sync"
        );
        if let Some(p) = &ptxas {
            ptxas_check(p, &wg.ptx, 90).unwrap_or_else(|e| panic!("{ty:?} wgmma: ptxas: {e}"));
        }
        assert!(lower_ptx_tiled(&program, &[80], Tiling::wgmma()).is_err());
        // Four stages (`ARCHC_STAGES=4`), both instructions: past the 48 KiB a block may
        // declare, so the tiles' stages are dynamic shared memory.
        if ty == GgmlType::BF16 {
            let mma4 = Tiling {
                stages: 4,
                ..Tiling::for_mode(archc::backend::cuda::Mode::Ptx { sm: 80 })
            };
            for (sm, tiling) in [
                (80, mma4),
                (
                    90,
                    Tiling {
                        stages: 4,
                        ..Tiling::wgmma()
                    },
                ),
            ] {
                let l = lower_ptx_tiled(&program, &[sm], tiling).unwrap().remove(0);
                assert!(l.ptx.contains(".extern .shared .align 16 .b8"), "sm_{sm}");
                let big = l.kernels.iter().map(|k| k.shared_bytes).max().unwrap();
                assert!(big > archc::backend::cuda::STATIC_SHARED_BYTES, "{big}");
                if let Some(p) = &ptxas {
                    ptxas_check(p, &l.ptx, sm)
                        .unwrap_or_else(|e| panic!("sm_{sm}, four stages: ptxas: {e}"));
                }
            }
        } else {
            // 32 words of k per staged row (`ARCHC_KWORDS=32`), both instructions: 72 KiB
            // of `mma.sync` stages, 96 KiB of `wgmma` ones, dynamic shared memory; each
            // `wgmma` group four products.
            let k32 = |t: Tiling| Tiling { kw: 32, ..t };
            let mma = k32(Tiling::for_mode(archc::backend::cuda::Mode::Ptx { sm: 80 }));
            for (sm, tiling) in [(80, mma), (90, k32(Tiling::wgmma()))] {
                let l = lower_ptx_tiled(&program, &[sm], tiling).unwrap().remove(0);
                let big = l.kernels.iter().map(|k| k.shared_bytes).max().unwrap();
                let want = tiling.stages * 256 * if sm == 90 { 32 * 4 } else { 36 * 4 };
                assert_eq!(big, want, "sm_{sm}: one matmul's stages");
                if sm == 90 {
                    let group = "wgmma.mma_async.sync.aligned.m64n128k16.f32.f16.f16";
                    let per_group = l.ptx.split("wgmma.commit_group").next().unwrap();
                    assert_eq!(per_group.matches(group).count(), 4, "sm_90: one group");
                }
                if let Some(p) = &ptxas {
                    ptxas_check(p, &l.ptx, sm)
                        .unwrap_or_else(|e| panic!("sm_{sm}, 32 k words: ptxas: {e}"));
                }
            }
        }
    }
    // A CPU build refuses it, naming what to use instead.
    let err = BuildOptions::host()
        .unwrap()
        .set_dtype(spec, "bf16")
        .unwrap_err();
    assert!(
        err.contains("cuda") && err.contains("--quant bf16"),
        "{err}"
    );
}

/// The two depths of ptxas check refuse what they should: a malformed instruction both;
/// a block's shared memory past 48 KiB only the full assembly (which the spec checks
/// therefore run for every program on one SM).
#[test]
fn ptxas_checks_refuse_bad_ptx() {
    let Some(p) = ptxas() else { return };
    let ptx = |smem: u32, store: &str| {
        format!(
            ".version 7.8\n.target sm_80\n.address_size 64\n\
             .visible .entry k(.param .u64 p)\n{{\n\
             .reg .b64 %rd<3>;\n.reg .f32 %f<2>;\n\
             .shared .align 16 .b8 s[{smem}];\n\
             ld.param.u64 %rd1, [p];\nmov.u64 %rd2, s;\n\
             ld.shared.f32 %f1, [%rd2+{}];\n{store} [%rd1], %f1;\nret;\n}}\n",
            smem - 4
        )
    };
    let good = ptx(4096, "st.global.f32");
    ptxas_check(&p, &good, 80).unwrap();
    ptxas_parse_check(&p, &good, 80).unwrap();
    let malformed = ptx(4096, "st.global.f33");
    let e = ptxas_check(&p, &malformed, 80).unwrap_err();
    assert!(e.contains(".f33"), "{e}");
    let e = ptxas_parse_check(&p, &malformed, 80).unwrap_err();
    assert!(e.contains(".f33"), "{e}");
    let big = ptx(70000, "st.global.f32");
    let e = ptxas_check(&p, &big, 80).unwrap_err();
    assert!(e.contains("too much shared data"), "{e}");
    ptxas_parse_check(&p, &big, 80).unwrap();
}

//! Snapshots of what the CPU backend makes of one GPT-2 layer and one Mamba layer (the
//! real models' widths, one layer): the fused Kernel IR and the kernels' LLVM IR before
//! optimisation, for the generic x86-64-v3 (AVX2) target so that the host CPU does not
//! matter. A pure refactor changes neither; `cargo insta review` shows what a change did.

use arch_dsl::elab::Program;
use archc::backend::cpu::lower::kernels_llvm_ir;
use archc::backend::cpu::{CpuTarget, VectorIsa};
use archc::kernel;
use archc::package::{package_graph, package_program, BuildOptions};

const SPECS: &str = "
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

model mamba_layer {
    vocab = 50280
    d_model = 768
    context = 2048
    norm = rmsnorm(eps = 1e-5)
    placement = pre
    position = none
    decoder {
        layers = 1
        mamba { d_state = 16  d_conv = 4  expand = 2 }
    }
}
";

fn program(model: &str) -> kernel::Program {
    let prog = Program::from_source("layers.arch", SPECS.to_string(), None);
    let (spec, diags) = prog.elaborate(model);
    let spec = spec.unwrap_or_else(|| panic!("{model}: {diags:?}"));
    let mut opts = BuildOptions::host().unwrap();
    opts.outputs = vec!["logits".into()];
    let graph = package_graph(&spec, &opts).unwrap();
    package_program(&graph).unwrap()
}

fn snapshot(model: &str) {
    let prog = program(model);
    insta::assert_snapshot!(format!("{model}_kernels"), kernel::print(&prog));
    let ir = kernels_llvm_ir(&prog, &CpuTarget::generic(VectorIsa::Avx2)).unwrap();
    insta::assert_snapshot!(format!("{model}_llvm"), ir);
}

#[test]
fn gpt2_layer() {
    snapshot("gpt2_layer");
}

#[test]
fn mamba_layer() {
    snapshot("mamba_layer");
}

/// The fusion decisions the snapshots show, stated as checks: one GPT-2 layer is the
/// embedding gather (token + position in one loop), per LayerNorm two reductions (mean,
/// variance) and one normalisation, six matmuls (q, k, v with their bias epilogues, o with
/// bias + residual, MLP up with bias + GELU, down with bias + residual) and one attention
/// kernel writing [batch, seq, heads, dim] directly; then the LM head.
#[test]
fn gpt2_layer_fusion() {
    let prog = program("gpt2_layer");
    let count = |kind: &str| prog.kernels.iter().filter(|k| k.kind() == kind).count();
    assert_eq!(count("attention"), 1);
    // q, k, v, o, up, down and the LM head.
    assert_eq!(count("matmul"), 7);
    let epilogues = prog
        .kernels
        .iter()
        .filter(|k| matches!(&k.body, kernel::Body::MatMul(m) if m.epilogue.is_some()))
        .count();
    assert_eq!(
        epilogues, 6,
        "every projection but the head carries an epilogue"
    );
    assert_eq!(count("reduce"), 6, "{}", kernel::print(&prog));
    assert_eq!(count("map"), 4, "{}", kernel::print(&prog));
}

/// RoPE is folded into the q and k projections: their matmuls compute whole rows and
/// rotate them in the epilogue; no separate rotation kernel remains.
#[test]
fn rope_fuses_into_the_q_and_k_projections() {
    let src = "
model llama_layer {
    vocab = 32000
    d_model = 1024
    context = 2048
    norm = rmsnorm(eps = 1e-5)
    placement = pre
    position = rope(theta = 10000.0)
    embed { tied = false }
    decoder {
        layers = 1
        attention { heads = 16  kv_heads = 4 }
        mlp { hidden = 2816  act = swiglu }
    }
}
";
    let prog = Program::from_source("llama.arch", src.to_string(), None);
    let (spec, diags) = prog.elaborate("llama_layer");
    let spec = spec.unwrap_or_else(|| panic!("{diags:?}"));
    let mut opts = BuildOptions::host().unwrap();
    opts.outputs = vec!["logits".into()];
    let p = package_program(&package_graph(&spec, &opts).unwrap()).unwrap();
    let whole: Vec<&str> = p
        .kernels
        .iter()
        .filter(
            |k| matches!(&k.body, kernel::Body::MatMul(m) if m.whole_rows && m.epilogue.is_some()),
        )
        .map(|k| k.name.as_str())
        .collect();
    assert_eq!(whole.len(), 2, "{}", kernel::print(&p));
    let concat_maps = p
        .kernels
        .iter()
        .filter(|k| k.kind() == "map" && k.name.starts_with("concat"))
        .count();
    assert_eq!(concat_maps, 0, "{}", kernel::print(&p));
}

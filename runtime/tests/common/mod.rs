//! A hand-written two-kernel package (gather + add bias) in C, compiled with `cc`, and
//! helpers to write safetensors files.
#![allow(dead_code)] // each test binary uses its own subset

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;

use arch_runtime::manifest::{
    BufferKind, BufferSpec, Dtype, Entry, InputSpec, KernelSpec, Limits, Manifest, Naming,
    OutputSpec, ParamSpec, Source, Target, FORMAT,
};
use arch_runtime::SizeExpr;
use safetensors::tensor::TensorView;

pub const VOCAB: usize = 10;
pub const D: usize = 4;

/// `hidden[b, t, :] = embed[ids[b, t], :] + bias`, through a temp buffer and the scratch.
/// Each kernel finds its buffers in `args`, in the order of its manifest `args`.
/// Misaligned buffers or scratch poison the output with NaN, so the tests see them (64
/// bytes for temps, inputs and scratch; element size for outputs).
pub const KERNELS_C: &str = r#"
#include <stdint.h>
#define D 4
static int misaligned(const void *p) { return ((uintptr_t)p) % 64 != 0; }
void k0_gather(void *const *args, const int64_t *dims, int64_t begin, int64_t end, float *scratch) {
    const int64_t *ids = args[0];
    const float *emb = args[1];
    float *tmp = args[2];
    float poison = (misaligned(scratch) || misaligned(tmp) || misaligned(ids)) ? __builtin_nanf("") : 0.0f;
    for (int64_t i = begin; i < end; i++) {
        for (int j = 0; j < D; j++) scratch[j] = emb[ids[i] * D + j];
        for (int j = 0; j < D; j++) tmp[i * D + j] = scratch[j] + poison;
    }
}
int64_t k0_gather_range(const int64_t *dims) { return dims[0] * dims[1]; }
void k1_bias(void *const *args, const int64_t *dims, int64_t begin, int64_t end, float *scratch) {
    const float *tmp = args[0];
    const float *bias = args[1];
    float *out = args[2];
    /* Outputs are the caller's vectors: aligned to their elements only. */
    float poison = ((uintptr_t)out) % sizeof(float) ? __builtin_nanf("") : 0.0f;
    for (int64_t i = begin; i < end; i++) out[i] = tmp[i] + bias[i % D] + poison;
}
int64_t k1_bias_range(const int64_t *dims) { return dims[0] * dims[1] * D; }
/* hidden[b, t, :] += 100 * token_type[b, t] + 1000 * (1 - mask[b, t]) */
void k2_segments(void *const *args, const int64_t *dims, int64_t begin, int64_t end, float *scratch) {
    float *out = args[0];
    const int64_t *tt = args[1];
    const int64_t *mask = args[2];
    for (int64_t i = begin; i < end; i++) out[i] += 100.0f * tt[i / D] + 1000.0f * (1 - mask[i / D]);
}
int64_t k2_segments_range(const int64_t *dims) { return dims[0] * dims[1] * D; }
"#;

/// Whether a C compiler is available; prints why a test is skipped when not.
pub fn have_cc() -> bool {
    let ok = Command::new("cc")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    if !ok {
        // CI installs a C compiler (tools/prereqs.sh): a missing one there is a failure.
        assert!(
            std::env::var_os("CI").is_none(),
            "CI has no `cc` to compile the test kernels"
        );
        eprintln!("skipped: no `cc` to compile the test kernels");
    }
    ok
}

/// Compiles `source` into `dir/kernels.so`.
pub fn compile(dir: &Path, source: &str) {
    let c = dir.join("kernels.c");
    std::fs::write(&c, source).unwrap();
    let out = Command::new("cc")
        .args(["-O2", "-shared", "-fPIC", "-o"])
        .arg(dir.join("kernels.so"))
        .arg(&c)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn bs() -> SizeExpr {
    SizeExpr::term(1, &["batch", "seq"], 1)
}

fn buffer(
    id: usize,
    kind: BufferKind,
    dtype: Dtype,
    elems: SizeExpr,
    slot: Option<usize>,
) -> BufferSpec {
    BufferSpec {
        id,
        kind,
        dtype,
        elems,
        slot,
    }
}

/// The manifest of the gather + bias package.
pub fn manifest() -> Manifest {
    let params = vec![
        ParamSpec {
            name: "embed.tokens.weight".into(),
            shape: vec![VOCAB, D],
            buffer: 1,
            storage: None,
        },
        ParamSpec {
            name: "out.bias".into(),
            shape: vec![D],
            buffer: 2,
            storage: None,
        },
    ];
    let canonical = Naming {
        label: "canonical".into(),
        sources: params
            .iter()
            .map(|p| {
                (
                    p.name.clone(),
                    Source::Plain {
                        name: p.name.clone(),
                        shape: p.shape.clone(),
                    },
                )
            })
            .collect(),
    };
    Manifest {
        format: FORMAT.into(),
        compiler_version: env!("CARGO_PKG_VERSION").into(),
        model: "gather_bias".into(),
        target: Target {
            kind: "cpu".into(),
            isa: "x86-64".into(),
            cpu: "x86-64".into(),
            features: "".into(),
            int_dots: false,
        },
        syms: vec!["batch".into(), "seq".into()],
        limits: Limits {
            vocab: VOCAB as u64,
            context: 8,
            segments: 0,
            seq_multiple_of: 1,
            left_padding: true,
        },
        inputs: vec![InputSpec {
            name: "input_ids".into(),
            dtype: Dtype::I64,
            shape: vec![SizeExpr::sym("batch"), SizeExpr::sym("seq")],
            buffer: 0,
        }],
        outputs: vec![OutputSpec {
            name: "hidden".into(),
            dtype: Dtype::F32,
            shape: vec![
                SizeExpr::sym("batch"),
                SizeExpr::sym("seq"),
                SizeExpr::constant(D as u64),
            ],
            buffer: 4,
        }],
        params,
        states: vec![],
        namings: vec![canonical],
        buffers: vec![
            buffer(0, BufferKind::Input, Dtype::I64, bs(), None),
            buffer(
                1,
                BufferKind::Param,
                Dtype::F32,
                SizeExpr::constant((VOCAB * D) as u64),
                None,
            ),
            buffer(
                2,
                BufferKind::Param,
                Dtype::F32,
                SizeExpr::constant(D as u64),
                None,
            ),
            buffer(
                3,
                BufferKind::Temp,
                Dtype::F32,
                SizeExpr::term(D as u64, &["batch", "seq"], 1),
                Some(0),
            ),
            buffer(
                4,
                BufferKind::Output,
                Dtype::F32,
                SizeExpr::term(D as u64, &["batch", "seq"], 1),
                None,
            ),
        ],
        slots: 1,
        scratch_floats: 16,
        entries: [(
            "forward".to_string(),
            Entry {
                kernels: vec![0, 1],
                package: None,
            },
        )]
        .into(),
        kernels: vec![
            KernelSpec {
                symbol: "k0_gather".into(),
                range: "k0_gather_range".into(),
                args: vec![0, 1, 3],
                kind: "gather".into(),
                launch: None,
            },
            KernelSpec {
                symbol: "k1_bias".into(),
                range: "k1_bias_range".into(),
                args: vec![3, 2, 4],
                kind: "elementwise".into(),
                launch: None,
            },
        ],
    }
}

/// The package with two more inputs, `token_type_ids` (2 segments) and `attention_mask`,
/// added to the output by a third kernel.
pub fn manifest_with_segments() -> Manifest {
    let mut m = manifest();
    m.limits.segments = 2;
    for (name, id) in [("token_type_ids", 5), ("attention_mask", 6)] {
        m.inputs.push(InputSpec {
            name: name.into(),
            dtype: Dtype::I64,
            shape: vec![SizeExpr::sym("batch"), SizeExpr::sym("seq")],
            buffer: id,
        });
        m.buffers
            .push(buffer(id, BufferKind::Input, Dtype::I64, bs(), None));
    }
    m.kernels.push(KernelSpec {
        symbol: "k2_segments".into(),
        range: "k2_segments_range".into(),
        args: vec![4, 5, 6],
        kind: "elementwise".into(),
        launch: None,
    });
    m.entries.get_mut("forward").unwrap().kernels.push(2);
    m
}

/// The package with the bias kernel run twice (one symbol, other buffers): through a
/// second temp buffer in slot 1, so `hidden = embed[ids] + 2 * bias`.
pub fn manifest_bias_twice() -> Manifest {
    let mut m = manifest();
    m.buffers.push(buffer(
        5,
        BufferKind::Temp,
        Dtype::F32,
        SizeExpr::term(D as u64, &["batch", "seq"], 1),
        Some(1),
    ));
    m.slots = 2;
    m.kernels[1].args = vec![3, 2, 5];
    let mut again = m.kernels[1].clone();
    again.args = vec![5, 2, 4];
    m.kernels.push(again);
    m.entries.get_mut("forward").unwrap().kernels.push(2);
    m
}

/// Writes the package (manifest + compiled kernels) into `dir`.
pub fn write_package(dir: &Path, m: &Manifest) {
    m.write(dir).unwrap();
    compile(dir, KERNELS_C);
}

pub fn embed() -> Vec<f32> {
    (0..VOCAB * D).map(|i| i as f32 * 0.5 - 3.0).collect()
}

pub fn bias() -> Vec<f32> {
    vec![0.25, -1.0, 2.0, 0.0]
}

/// A tensor to write: name, dtype, shape, little-endian bytes.
pub type Raw = (String, safetensors::Dtype, Vec<usize>, Vec<u8>);

pub fn f32_raw(name: &str, shape: &[usize], data: &[f32]) -> Raw {
    (
        name.to_string(),
        safetensors::Dtype::F32,
        shape.to_vec(),
        data.iter().flat_map(|x| x.to_le_bytes()).collect(),
    )
}

pub fn i64_raw(name: &str, shape: &[usize], data: &[i64]) -> Raw {
    (
        name.to_string(),
        safetensors::Dtype::I64,
        shape.to_vec(),
        data.iter().flat_map(|x| x.to_le_bytes()).collect(),
    )
}

pub fn write_safetensors(path: &Path, tensors: &[Raw]) {
    let views: BTreeMap<&str, TensorView<'_>> = tensors
        .iter()
        .map(|(n, d, s, b)| (n.as_str(), TensorView::new(*d, s.clone(), b).unwrap()))
        .collect();
    safetensors::serialize_to_file(views, None, path).unwrap();
}

/// The canonical weights of the package.
pub fn write_weights(path: &Path) {
    write_safetensors(
        path,
        &[
            f32_raw("embed.tokens.weight", &[VOCAB, D], &embed()),
            f32_raw("out.bias", &[D], &bias()),
        ],
    );
}

/// What the package computes for `ids`.
pub fn expected(ids: &[i64]) -> Vec<f32> {
    let (e, b) = (embed(), bias());
    ids.iter()
        .flat_map(|&i| (0..D).map(move |j| (i as usize, j)))
        .map(|(i, j)| e[i * D + j] + b[j])
        .collect()
}

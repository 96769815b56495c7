//! Writes a package of one causal attention, `o = softmax(q·kᵀ / √D + causal) · v` with q,
//! k, v [B, H, T, D] all parameters (resident on the device, as a benchmark's tensors
//! are: no input to upload per run), for the device check's attention timing
//! (`tools/device_prep.sh`: against PyTorch's `scaled_dot_product_attention`):
//! `arch-run DIR --random-weights 0 --inputs none.safetensors --out o.safetensors
//! --repeat 13` (an empty safetensors file) prints its median.
//!
//! `cargo run --release -p archc --example attention_package -- DIR B H T D [cpu|cuda]
//! [f32|bf16|f16] [--sm 80|90] [--sim]` — cuda with bf16 or f16: the tiles' products in
//! that type (`--dtype`); f32: 3×TF32.

use archc::graph::{DType, Dim, Graph, MaskKind, Op};
use archc::package::build_graph;
use std::path::PathBuf;

mod common;

fn main() -> Result<(), String> {
    let usage =
        "usage: attention_package DIR B H T D [cpu|cuda] [f32|bf16|f16] [--sm 80|90] [--sim]";
    let (pos, sm, sim) = common::parse_args(usage)?;
    let [dir, b, h, t, d, rest @ ..] = pos.as_slice() else {
        return Err(usage.into());
    };
    let num = |s: &str| s.parse::<u64>().map_err(|e| format!("{s}: {e} ({usage})"));
    let (b, h, t, d) = (num(b)?, num(h)?, num(t)?, num(d)?);
    let target = rest.first().map_or("cuda", |s| s.as_str());
    let dtype = rest.get(1).map_or("f32", |s| s.as_str());
    let mut g = Graph::new("attention");
    let shape = || vec![Dim::c(b), Dim::c(h), Dim::c(t), Dim::c(d)];
    let q = g.param("q", shape());
    let k = g.param("k", shape());
    let v = g.param("v", shape());
    let op = Op::Attention {
        mask: MaskKind::Causal,
        scale: 1.0 / (d as f64).sqrt(),
        has_bias: false,
        has_key_mask: false,
        ring: None,
    };
    let o = g.push(op, vec![q, k, v], None, DType::F32);
    g.output("o", o);
    let g = g.finish()?;
    let (opts, _) = common::options(target, dtype, (sm, sim), usage)?;
    let dir = PathBuf::from(dir);
    build_graph(&g, "attention", &opts, &dir)?;
    eprintln!(
        "wrote {}: causal attention {b} × {h} heads × {t} × {d} for {target}{} in {dtype}",
        dir.display(),
        opts.cuda.map_or(String::new(), |sm| format!(" sm_{sm}"))
    );
    Ok(())
}

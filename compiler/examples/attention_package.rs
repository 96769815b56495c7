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

use arch_runtime::gguf::GgmlType;
use archc::graph::{DType, Dim, Graph, MaskKind, Op};
use archc::package::{build_graph, BuildOptions};
use std::path::PathBuf;

fn main() -> Result<(), String> {
    let usage =
        "usage: attention_package DIR B H T D [cpu|cuda] [f32|bf16|f16] [--sm 80|90] [--sim]";
    let (mut pos, mut sm, mut sim) = (Vec::new(), 80u32, false);
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--sm" => {
                let v = args.next().ok_or(usage)?;
                sm = v.parse().map_err(|e| format!("--sm {v}: {e}"))?;
            }
            "--sim" => sim = true,
            _ if a.starts_with("--") => return Err(format!("unknown flag {a} ({usage})")),
            _ => pos.push(a),
        }
    }
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
    let mut opts = BuildOptions::host()?;
    match target {
        "cpu" => {}
        "cuda" => {
            opts.cuda = Some(sm);
            opts.sim = sim;
        }
        other => return Err(format!("unknown target `{other}` ({usage})")),
    }
    opts.half_matmul = match dtype {
        "f32" => None,
        "bf16" => Some(GgmlType::BF16),
        "f16" => Some(GgmlType::F16),
        other => return Err(format!("unknown dtype `{other}` ({usage})")),
    };
    if opts.half_matmul.is_some() && opts.cuda.is_none() {
        return Err("bf16 and f16 products are for cuda".into());
    }
    let dir = PathBuf::from(dir);
    build_graph(&g, "attention", &opts, &dir)?;
    eprintln!(
        "wrote {}: causal attention {b} × {h} heads × {t} × {d} for {target}{} in {dtype}",
        dir.display(),
        opts.cuda.map_or(String::new(), |sm| format!(" sm_{sm}"))
    );
    Ok(())
}

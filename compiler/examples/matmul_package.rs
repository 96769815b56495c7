//! Writes a package of one matmul, `y = x · wᵀ` with x [1, M, K] and w [N, K] both
//! parameters (resident on the device, as torch.matmul's operands are: no input to upload
//! per run), for the device check's matmul timing (`tools/device_prep.sh`: 4096³ against
//! torch.matmul, i.e. cuBLAS): `arch-run DIR --random-weights 0 --inputs none.safetensors
//! --out y.safetensors --repeat 13` (an empty safetensors file) prints its median.
//!
//! `cargo run --release -p archc --example matmul_package -- DIR M N K [cpu|cuda]
//! [f32|bf16|f16] [--sm 80|90] [--sim]` — cuda with bf16 or f16: w stored in that type,
//! the tiles on half-precision tensor-core products (`--dtype`); f32: 3×TF32.

use arch_runtime::gguf::GgmlType;
use archc::graph::{Dim, Graph};
use archc::package::{build_graph, BuildOptions};
use std::path::PathBuf;

fn main() -> Result<(), String> {
    let usage = "usage: matmul_package DIR M N K [cpu|cuda] [f32|bf16|f16] [--sm 80|90] [--sim]";
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
    let [dir, m, n, k, rest @ ..] = pos.as_slice() else {
        return Err(usage.into());
    };
    let num = |s: &str| s.parse::<u64>().map_err(|e| format!("{s}: {e} ({usage})"));
    let (m, n, k) = (num(m)?, num(n)?, num(k)?);
    let target = rest.first().map_or("cuda", |s| s.as_str());
    let dtype = rest.get(1).map_or("f32", |s| s.as_str());
    let mut g = Graph::new("matmul");
    let x = g.param("x", vec![Dim::c(1), Dim::c(m), Dim::c(k)]);
    let w = g.param("w", vec![Dim::c(n), Dim::c(k)]);
    let y = g.linear(x, w);
    g.output("y", y);
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
    let half = match dtype {
        "f32" => None,
        "bf16" => Some(GgmlType::BF16),
        "f16" => Some(GgmlType::F16),
        other => return Err(format!("unknown dtype `{other}` ({usage})")),
    };
    if let Some(t) = half {
        if opts.cuda.is_none() {
            return Err("bf16 and f16 products are for cuda".into());
        }
        opts.quant = [("w".to_string(), t)].into();
        opts.half_matmul = Some(t);
    }
    let dir = PathBuf::from(dir);
    build_graph(&g, "matmul", &opts, &dir)?;
    eprintln!(
        "wrote {}: {m} × {n} × {k} matmul for {target}{} in {dtype}",
        dir.display(),
        opts.cuda.map_or(String::new(), |sm| format!(" sm_{sm}"))
    );
    Ok(())
}

//! Writes a package of one matmul, `y = x · wᵀ` with x [1, M, K] and w [N, K] both
//! parameters (resident on the device, as torch.matmul's operands are: no input to upload
//! per run), for the device check's matmul timing (`tools/device_prep.sh`: 4096³ against
//! torch.matmul, i.e. cuBLAS): `arch-run DIR --random-weights 0 --inputs none.safetensors
//! --out y.safetensors --repeat 13` (an empty safetensors file) prints its median.
//!
//! `cargo run --release -p archc --example matmul_package -- DIR M N K [cpu|cuda]
//! [f32|bf16|f16] [--sm 80|90] [--sim]` — cuda with bf16 or f16: w stored in that type,
//! the tiles on half-precision tensor-core products (`--dtype`); f32: 3×TF32.

use archc::graph::{Dim, Graph};
use archc::package::build_graph;
use std::path::PathBuf;

mod common;

fn main() -> Result<(), String> {
    let usage = "usage: matmul_package DIR M N K [cpu|cuda] [f32|bf16|f16] [--sm 80|90] [--sim]";
    let (pos, sm, sim) = common::parse_args(usage)?;
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
    let (mut opts, half) = common::options(target, dtype, (sm, sim), usage)?;
    if let Some(t) = half {
        opts.quant = [("w".to_string(), t)].into();
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

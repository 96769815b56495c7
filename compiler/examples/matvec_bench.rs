//! Matrix–vector products over f32, Q8_0, Q4_K, Q5_K and Q6_K weights, one matrix after another
//! (`L` matrices K × K, 1024 by default, in a chain of linears: with L = 256 the weights stream from
//! memory, with L = 2 they stay in cache), timed through the runtime on `T` threads.
//!
//! `L=256 T=1 cargo run --release -p archc --example matvec_bench` (`R=8`: rows of the
//! activations, a batch decoding; `K=768`: matrices K × K; `INT=1`: Q4_K with integer dot
//! products, `BuildOptions::int_dots`; `TYPES=q4_k,f32`: only those types; `KEEP=DIR`: the
//! packages in DIR/{type}, kept for a profiler to resolve the kernels' symbols)

use arch_runtime::gguf::GgmlType;
use arch_runtime::{HostTensor, Package, Session, Weights};
use archc::autodiff::check::Rng;
use archc::graph::{DType, Dim, Graph};
use std::collections::{BTreeMap, HashMap};

fn env(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(default)
}

fn main() -> Result<(), String> {
    let (layers, threads, rows) = (env("L", 256), env("T", 1), env("R", 1));
    let k = env("K", 1024) as u64;
    for q in [
        None,
        Some(GgmlType::Q8_0),
        Some(GgmlType::Q4_K),
        Some(GgmlType::Q5_K),
        Some(GgmlType::Q6_K),
    ] {
        let name = q.map_or("f32", |t| t.name());
        if let Ok(types) = std::env::var("TYPES") {
            if !types.split(',').any(|t| t.eq_ignore_ascii_case(name)) {
                continue;
            }
        }
        let mut g = Graph::new("chain");
        let x = g.input(
            "x",
            vec![Dim::sym("batch"), Dim::sym("seq"), Dim::c(k)],
            DType::F32,
        );
        let names: Vec<String> = (0..layers).map(|i| format!("w{i}")).collect();
        let mut y = x;
        for n in &names {
            let w = g.param(n, vec![Dim::c(k), Dim::c(k)]);
            y = g.linear(y, w);
        }
        g.output("y", y);
        let g = g.finish().map_err(|e| e.to_string())?;
        let tmp = tempfile::tempdir().map_err(|e| e.to_string())?;
        let dir = match std::env::var_os("KEEP") {
            Some(keep) => std::path::Path::new(&keep).join(name.to_ascii_lowercase()),
            None => tmp.path().to_path_buf(),
        };
        let mut opts = archc::package::BuildOptions::host()?;
        opts.int_dots = env("INT", 0) == 1;
        if let Some(q) = q {
            opts.quant = names.iter().map(|n| (n.clone(), q)).collect();
        }
        archc::package::build_graph(&g, "chain", &opts, &dir)?;
        let pkg = Package::load(&dir).map_err(|e| e.to_string())?;
        let mut rng = Rng::new(1);
        let ws: BTreeMap<String, Vec<f32>> = names
            .iter()
            .map(|n| {
                let w = (0..k * k).map(|_| rng.uniform() * 0.06 - 0.03).collect();
                (n.clone(), w)
            })
            .collect();
        let weights = Weights::from_tensors(pkg.manifest(), ws).map_err(|e| e.to_string())?;
        let mut s = Session::new(pkg, weights, threads).map_err(|e| e.to_string())?;
        let xs: Vec<f32> = (0..k * rows as u64).map(|_| rng.uniform()).collect();
        let inputs = HashMap::from([(
            "x".to_string(),
            HostTensor::f32(vec![rows, 1, k as usize], xs),
        )]);
        for _ in 0..5 {
            s.run("forward", &inputs).map_err(|e| e.to_string())?;
        }
        let reps = 20;
        let t = std::time::Instant::now();
        for _ in 0..reps {
            s.run("forward", &inputs).map_err(|e| e.to_string())?;
        }
        let us = t.elapsed().as_secs_f64() / (reps * layers) as f64 * 1e6;
        let bytes = match q {
            None => k * k * 4,
            Some(t) => k * k / t.block().0 as u64 * t.block().1 as u64,
        };
        println!(
            "{layers} × {k}² {name}, {rows} row(s), {threads} thread(s): {us:.1} µs per matrix, {:.2} GB/s",
            bytes as f64 / us / 1e3
        );
    }
    Ok(())
}

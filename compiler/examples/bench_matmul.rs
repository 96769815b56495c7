//! Benchmark: the generated f32 matmul vs torch.matmul at 1024³ and GPT-2's shapes, in
//! one run, same threads; plus the machine's measured FMA peak (the floor).
//!
//! cargo run --release -p archc --example bench_matmul -- [--threads N] [--min-time S]
//!     [--isa sse2|avx2|avx512] [--rounds R] [--shape M,N,K]... [--no-torch]
//!
//! Prints GFLOP/s medians, the ratio to torch and the fraction of the measured peak.

use archc::backend::cpu::{
    describe_host, CpuTarget, FmaProbe, SgemmConfig, SgemmKernel, VectorIsa,
};
use std::process::Command;
use std::time::Instant;

/// (M, N, K, label). GPT-2 small at 256 tokens (batch 1 × 256, or batch 4 × 256 for
/// the fused QKV projection): attention output, MLP up, MLP down, QKV.
const SHAPES: &[(usize, usize, usize, &str)] = &[
    (1024, 1024, 1024, "square 1024³"),
    (256, 768, 768, "GPT-2 attn out (256 tok)"),
    (256, 3072, 768, "GPT-2 MLP up (256 tok)"),
    (256, 768, 3072, "GPT-2 MLP down (256 tok)"),
    (1024, 2304, 768, "GPT-2 QKV (1024 tok)"),
];

struct Args {
    threads: usize,
    min_time: f64,
    isa: Option<VectorIsa>,
    torch: bool,
    rounds: usize,
    shapes: Vec<(usize, usize, usize, String)>,
}

fn parse_args() -> Result<Args, String> {
    let mut args = Args {
        threads: 2,
        min_time: 1.0,
        isa: None,
        torch: true,
        rounds: 3,
        shapes: vec![],
    };
    let mut it = std::env::args().skip(1);
    while let Some(a) = it.next() {
        let mut value = |name: &str| it.next().ok_or(format!("{name} needs a value"));
        match a.as_str() {
            "--threads" => {
                args.threads = value("--threads")?
                    .parse()
                    .map_err(|e| format!("--threads: {e}"))?
            }
            "--min-time" => {
                args.min_time = value("--min-time")?
                    .parse()
                    .map_err(|e| format!("--min-time: {e}"))?
            }
            "--isa" => {
                let v = value("--isa")?;
                args.isa = Some(
                    VectorIsa::ALL
                        .into_iter()
                        .find(|i| i.to_string() == v)
                        .ok_or(format!("unknown --isa {v}"))?,
                )
            }
            "--no-torch" => args.torch = false,
            "--shape" => {
                let v = value("--shape")?;
                let dims: Vec<usize> = v
                    .split(',')
                    .map(|d| d.trim().parse())
                    .collect::<Result<_, _>>()
                    .map_err(|e| format!("--shape {v}: {e}"))?;
                match dims[..] {
                    [m, n, k] => args.shapes.push((m, n, k, "--shape".to_string())),
                    _ => return Err(format!("--shape wants M,N,K, got {v}")),
                }
            }
            "--rounds" => {
                args.rounds = value("--rounds")?
                    .parse::<usize>()
                    .map_err(|e| format!("--rounds: {e}"))?
                    .max(1)
            }
            other => return Err(format!("unknown argument {other}")),
        }
    }
    if args.shapes.is_empty() {
        args.shapes = SHAPES
            .iter()
            .map(|&(m, n, k, l)| (m, n, k, l.to_string()))
            .collect();
    }
    Ok(args)
}

/// Median GFLOP/s of `kernel` at one shape, over at least 10 calls and `min_time` s.
fn median(xs: &[f64]) -> f64 {
    let mut v = xs.to_vec();
    v.sort_by(f64::total_cmp);
    v.get(v.len() / 2).copied().unwrap_or(f64::NAN)
}

fn bench_ours(
    kernel: &SgemmKernel,
    m: usize,
    n: usize,
    k: usize,
    min_time: f64,
) -> Result<f64, String> {
    let mut seed = 0x9e37_79b9_7f4a_7c15u64;
    let mut fill = |len: usize| -> Vec<f32> {
        (0..len)
            .map(|_| {
                seed = seed
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                ((seed >> 40) as f32 / (1u32 << 24) as f32) * 2.0 - 1.0
            })
            .collect()
    };
    let (a, b) = (fill(m * k), fill(k * n));
    let mut c = vec![0.0f32; m * n];
    for _ in 0..3 {
        kernel
            .run(&a, &b, &mut c, m, n, k)
            .map_err(|e| e.to_string())?;
    }
    let mut times = Vec::new();
    let start = Instant::now();
    while times.len() < 10 || (start.elapsed().as_secs_f64() < min_time && times.len() < 500) {
        let t0 = Instant::now();
        kernel
            .run(&a, &b, &mut c, m, n, k)
            .map_err(|e| e.to_string())?;
        times.push(t0.elapsed().as_secs_f64());
    }
    times.sort_by(f64::total_cmp);
    Ok(2.0 * (m * n * k) as f64 / times[times.len() / 2] / 1e9)
}

/// torch.matmul GFLOP/s per shape from tools/bench_matmul_torch.py, or why not.
fn bench_torch(args: &Args) -> Result<Vec<f64>, String> {
    let script = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../tools/bench_matmul_torch.py"
    );
    let out = Command::new("python3")
        .arg(script)
        .args([
            "--threads",
            &args.threads.to_string(),
            "--min-time",
            &args.min_time.to_string(),
        ])
        .args(
            args.shapes
                .iter()
                .map(|(m, n, k, _)| format!("{m},{n},{k}")),
        )
        .output()
        .map_err(|e| format!("cannot run python3: {e}"))?;
    if !out.status.success() {
        return Err(String::from_utf8_lossy(&out.stderr).trim().to_string());
    }
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|line| {
            let v: serde_json::Value =
                serde_json::from_str(line).map_err(|e| format!("{e}: {line}"))?;
            v["gflops"].as_f64().ok_or(format!("no gflops in {line}"))
        })
        .collect()
}

fn main() {
    let args = match parse_args() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("bench_matmul: {e}");
            std::process::exit(2);
        }
    };
    if let Err(e) = run(&args) {
        eprintln!("bench_matmul: {e}");
        std::process::exit(1);
    }
}

fn run(args: &Args) -> Result<(), String> {
    let mut target = CpuTarget::host().map_err(|e| e.to_string())?;
    if let Some(isa) = args.isa {
        target = CpuTarget {
            isa,
            ..CpuTarget::generic(isa)
        };
    }
    println!("host: {}", describe_host());
    let t0 = Instant::now();
    let kernel = SgemmKernel::compile(&SgemmConfig {
        target: target.clone(),
        threads: args.threads,
    })
    .map_err(|e| e.to_string())?;
    println!(
        "kernel: {} for CPU `{}`, tiles {:?}, {} thread(s), generated+compiled+linked in {:.0} ms",
        target.isa,
        target.cpu,
        kernel.tiles(),
        args.threads,
        t0.elapsed().as_secs_f64() * 1e3
    );

    let probe = FmaProbe::compile(&target).map_err(|e| e.to_string())?;
    // Rounds alternate FMA peak, ours and torch, so background load hits all three alike;
    // each number below is the median over rounds of per-round medians.
    let (mut peak1, mut peak, mut ours, mut torch) = (
        vec![],
        vec![],
        vec![vec![]; args.shapes.len()],
        vec![vec![]; args.shapes.len()],
    );
    for round in 1..=args.rounds {
        peak1.push(probe.measure_gflops(1, 20_000_000, 5));
        peak.push(probe.measure_gflops(args.threads, 20_000_000, 5));
        for (i, &(m, n, k, _)) in args.shapes.iter().enumerate() {
            ours[i].push(bench_ours(&kernel, m, n, k, args.min_time)?);
        }
        if args.torch {
            match bench_torch(args) {
                Ok(t) => t
                    .into_iter()
                    .zip(torch.iter_mut())
                    .for_each(|(g, v)| v.push(g)),
                Err(e) => println!("torch: {e}"),
            }
        }
        let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
        println!(
            "round {round}: peak {:.1}/{:.1} GFLOP/s (1/{} threads), ours {:?}, torch {:?}, loadavg {}",
            peak1[round - 1],
            peak[round - 1],
            args.threads,
            ours.iter().map(|v| v[round - 1].round()).collect::<Vec<_>>(),
            torch.iter().filter_map(|v| v.get(round - 1).map(|g| g.round())).collect::<Vec<_>>(),
            load.split_whitespace().next().unwrap_or("?")
        );
    }
    let (peak1, peak) = (median(&peak1), median(&peak));
    println!(
        "measured FMA peak: {peak1:.1} GFLOP/s on 1 thread, {peak:.1} GFLOP/s on {} threads",
        args.threads
    );
    println!();
    println!("| shape (M×N×K) | what | ours GFLOP/s | torch GFLOP/s | ours/torch | ours/peak | floor ms | ours ms |");
    println!("|---|---|---:|---:|---:|---:|---:|---:|");
    for (i, (m, n, k, label)) in args.shapes.iter().enumerate() {
        let (m, n, k) = (*m, *n, *k);
        let flops = 2.0 * (m * n * k) as f64;
        let g = median(&ours[i]);
        let (tg, ratio) = if torch[i].is_empty() {
            ("–".to_string(), "–".to_string())
        } else {
            let t = median(&torch[i]);
            (format!("{t:.1}"), format!("{:.2}×", g / t))
        };
        println!(
            "| {m}×{n}×{k} | {label} | {g:.1} | {tg} | {ratio} | {:.0}% | {:.2} | {:.2} |",
            100.0 * g / peak,
            flops / (peak * 1e9) * 1e3,
            flops / (g * 1e9) * 1e3
        );
    }
    Ok(())
}

//! What the one-operation package examples (`matmul_package`, `attention_package`) share:
//! their command line's flags, target and product type.

use arch_runtime::gguf::GgmlType;
use archc::package::BuildOptions;

/// The positional arguments, `--sm` (80 unless given) and `--sim`.
pub fn parse_args(usage: &str) -> Result<(Vec<String>, u32, bool), String> {
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
    Ok((pos, sm, sim))
}

/// Build options for `target` (`cpu` or `cuda`, for SM `sm`, with the simulator's
/// library when `sim`) and products in `dtype` (`f32`, or `bf16`/`f16` on cuda); the
/// half type when there is one.
pub fn options(
    target: &str,
    dtype: &str,
    (sm, sim): (u32, bool),
    usage: &str,
) -> Result<(BuildOptions, Option<GgmlType>), String> {
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
    if half.is_some() && opts.cuda.is_none() {
        return Err("bf16 and f16 products are for cuda".into());
    }
    opts.half_matmul = half;
    Ok((opts, half))
}

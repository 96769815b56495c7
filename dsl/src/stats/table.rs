//! The human-readable form of `Stats`: one aligned row per figure.

use crate::spec::{ArchSpec, DType, Family};

use super::Stats;

/// Renders `stats` of `spec` as an aligned three-column table: label, short value, exact value.
pub fn render_table(stats: &Stats, spec: &ArchSpec) -> String {
    let rows = rows(stats, spec);
    let label_w = rows.iter().map(|r| r.0.len()).max().unwrap_or(0);
    let short_w = rows.iter().map(|r| r.1.len()).max().unwrap_or(0);
    let mut out = format!(
        "{}  {}  {}  T = {}\n",
        stats.name,
        family(spec.family),
        dtype(spec.dtype),
        thousands(stats.seq)
    );
    for (label, short, exact) in rows {
        let line = format!("{label:<label_w$}  {short:>short_w$}  {exact}");
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

type Row = (String, String, String);

fn rows(s: &Stats, spec: &ArchSpec) -> Vec<Row> {
    let mut rows = vec![count("parameters", s.params)];
    rows.push(count("  embedding", s.params_embedding));
    rows.push(count("  layers", s.params_layers));
    for (kind, n) in &s.params_by_kind {
        rows.push(count(&format!("    {kind}"), *n));
    }
    rows.push(count("  pooler", s.params_pooler));
    rows.push(count("  head", s.params_head));
    rows.push(count("non-embedding", s.params_non_embedding));
    if let Some(g) = s.generator_params {
        rows.push(count("generator (not in total)", g));
    }
    rows.extend(compute_rows(s));
    rows.extend(memory_rows(s, spec));
    rows
}

fn compute_rows(s: &Stats) -> Vec<Row> {
    vec![
        text("forward FLOPs / token", sci(s.flops_per_token), ""),
        text("training tokens D", si(s.tokens), ""),
        text("training FLOPs 6ND", sci(s.train_flops), ""),
        text("training FLOPs 3·fwd·D", sci(s.train_flops_detailed), ""),
        text("Chinchilla-optimal tokens", si(s.chinchilla_tokens), "20·N"),
        text("Chinchilla loss at D", loss(s.chinchilla_loss), ""),
        text("Kaplan loss L(N)", loss(s.kaplan_loss), "non-embedding N"),
    ]
}

fn memory_rows(s: &Stats, spec: &ArchSpec) -> Vec<Row> {
    let all = format!(
        "in {}; f32 {} · bf16 {} · f16 {}",
        dtype(spec.dtype),
        bytes(s.weights_bytes_f32),
        bytes(s.weights_bytes_bf16),
        bytes(s.weights_bytes_f16)
    );
    let mut rows = vec![
        text("weights", bytes(s.weights_bytes), &all),
        text("KV cache / token", bytes(s.state_bytes_per_token), ""),
    ];
    if s.cross_state_bytes_per_encoder_token > 0 {
        let cross = bytes(s.cross_state_bytes_per_encoder_token);
        rows.push(text("  of which cross / enc token", cross, ""));
    }
    rows.push(text(
        "recurrent state / sequence",
        bytes(s.state_bytes_fixed),
        "",
    ));
    rows.push(text(
        "state at T / sequence",
        bytes(s.state_bytes_at_seq),
        "",
    ));
    rows
}

fn count(label: &str, n: u64) -> Row {
    (label.to_string(), si(n as f64), thousands(n))
}

fn text(label: &str, short: String, note: &str) -> Row {
    (label.to_string(), short, note.to_string())
}

fn family(f: Family) -> &'static str {
    match f {
        Family::EncoderOnly => "encoder-only",
        Family::DecoderOnly => "decoder-only",
        Family::EncoderDecoder => "encoder-decoder",
    }
}

fn dtype(d: DType) -> &'static str {
    match d {
        DType::F32 => "f32",
        DType::Bf16 => "bf16",
        DType::F16 => "f16",
    }
}

/// `124439808` → `124,439,808`.
pub(crate) fn thousands(n: u64) -> String {
    let digits: Vec<char> = n.to_string().chars().collect();
    // The leading group holds 1–3 digits; every later group exactly 3.
    let first = match digits.len() % 3 {
        0 => 3,
        r => r,
    };
    let (head, rest) = digits.split_at(first.min(digits.len()));
    let mut out: String = head.iter().collect();
    for group in rest.chunks(3) {
        out.push(',');
        out.extend(group);
    }
    out
}

/// `124439808.0` → `124.44M`; K, M, B, T suffixes, scientific beyond.
pub(crate) fn si(x: f64) -> String {
    const UNITS: [(f64, &str); 4] = [(1e12, "T"), (1e9, "B"), (1e6, "M"), (1e3, "K")];
    if x >= 1e15 {
        return sci(x);
    }
    match UNITS.iter().find(|(scale, _)| x >= *scale) {
        Some((scale, unit)) => format!("{:.2}{unit}", x / scale),
        None => format!("{x:.0}"),
    }
}

/// `2.4417`; scientific for the huge losses of empty models (`f64::MAX` stands for +∞).
fn loss(x: f64) -> String {
    if x < 1e6 {
        format!("{x:.4}")
    } else {
        sci(x)
    }
}

/// `2.49e+18`-style, for FLOPs.
fn sci(x: f64) -> String {
    if x == 0.0 || !x.is_finite() {
        return format!("{x}");
    }
    let exp = x.abs().log10().floor() as i32;
    format!("{:.2}e{exp}", x / 10f64.powi(exp))
}

/// Binary units: `1536` → `1.50 KiB`.
pub(crate) fn bytes(b: u64) -> String {
    const UNITS: [&str; 5] = ["KiB", "MiB", "GiB", "TiB", "PiB"];
    if b < 1024 {
        return format!("{b} B");
    }
    let mut x = b as f64 / 1024.0;
    let mut unit = 0;
    while x >= 1024.0 && unit + 1 < UNITS.len() {
        x /= 1024.0;
        unit += 1;
    }
    format!("{x:.2} {}", UNITS[unit])
}

//! `specs/*.arch` → `archc stats --json` is within 1% of each model's published parameter
//! count, counting what the publication counts (the `// params: N = terms (source)` line
//! above each model names the count and its terms: `backbone`, `pooler`, `head`).

use std::path::Path;
use std::process::Command;

struct Published {
    file: String,
    model: String,
    count: f64,
    terms: Vec<String>,
}

fn parse_count(text: &str) -> Option<f64> {
    let (num, unit) = text.split_at(text.len() - 1);
    let scale = match unit {
        "K" => 1e3,
        "M" => 1e6,
        "B" => 1e9,
        _ => return None,
    };
    Some(num.parse::<f64>().ok()? * scale)
}

/// Every model of every spec file with the `// params:` line of its header comment.
fn published() -> Vec<Published> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../specs");
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    let mut out = Vec::new();
    for path in files
        .iter()
        .filter(|p| p.extension().is_some_and(|x| x == "arch"))
    {
        let text = std::fs::read_to_string(path).unwrap();
        let mut header: Option<(f64, Vec<String>)> = None;
        for line in text.lines() {
            if let Some(rest) = line.strip_prefix("// params: ") {
                let (count, rest) = rest
                    .split_once(" = ")
                    .expect("`// params: N = terms (source)`");
                let terms = rest
                    .split(" (")
                    .next()
                    .unwrap()
                    .split(" + ")
                    .map(str::to_string)
                    .collect();
                header = Some((
                    parse_count(count).unwrap_or_else(|| panic!("bad count `{count}`")),
                    terms,
                ));
            } else if let Some(rest) = line.strip_prefix("model ") {
                let model = rest.split([' ', ':', '{']).next().unwrap().to_string();
                let (count, terms) = header.take().unwrap_or_else(|| {
                    panic!("{model} in {} has no `// params:` line", path.display())
                });
                out.push(Published {
                    file: path.display().to_string(),
                    model,
                    count,
                    terms,
                });
            } else if !line.starts_with("//") {
                header = None;
            }
        }
    }
    out
}

#[test]
fn spec_library_matches_published_parameter_counts() {
    let models = published();
    assert!(
        models.len() >= 55,
        "every published size of every family: found {}",
        models.len()
    );
    let mut failures = Vec::new();
    for p in &models {
        let out = Command::new(env!("CARGO_BIN_EXE_archc"))
            .args(["stats", &format!("{}:{}", p.file, p.model), "--json"])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}: {}",
            p.model,
            String::from_utf8_lossy(&out.stderr)
        );
        let stats: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        let part = |key: &str| {
            stats[key]
                .as_u64()
                .unwrap_or_else(|| panic!("{key} missing")) as f64
        };
        let ours: f64 = p
            .terms
            .iter()
            .map(|t| match t.as_str() {
                "backbone" => part("params_embedding") + part("params_layers"),
                "pooler" => part("params_pooler"),
                "head" => part("params_head"),
                other => panic!("{}: unknown term `{other}`", p.model),
            })
            .sum();
        let error = (ours - p.count).abs() / p.count;
        if error > 0.01 {
            failures.push(format!(
                "{}: ours {ours} vs published {} ({:.2}%)",
                p.model,
                p.count,
                error * 100.0
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

//! ArchSpec → a block diagram a person can read: embeddings, each stack's runs of identical
//! layers collapsed to one box "× n" holding its sublayers, final norms and heads. Rendered
//! as Graphviz DOT or as a self-contained SVG.

use arch_dsl::spec::*;
use std::fmt::Write;

/// One box of the diagram.
struct Item {
    title: String,
    detail: String,
}

/// A vertical section: a stack's runs, or the embedding and head parts.
struct Group {
    title: String,
    items: Vec<Item>,
}

fn sublayer_detail(s: &Sublayer) -> (String, String) {
    let (title, detail) = match s {
        Sublayer::Attention(a) => {
            let mask = match a.mask {
                Mask::Causal => "causal".to_string(),
                Mask::Bidirectional => "bidirectional".to_string(),
                Mask::Sliding { window } => format!("sliding {window}"),
            };
            let kv = if a.kv_heads == a.heads {
                String::new()
            } else {
                format!(", {} kv heads", a.kv_heads)
            };
            (
                "attention",
                format!("{} heads × {}{kv}, {mask}", a.heads, a.head_dim),
            )
        }
        Sublayer::CrossAttention(a) => (
            "cross-attention",
            format!("{} heads × {}", a.heads, a.head_dim),
        ),
        Sublayer::Mlp(m) => (
            "mlp",
            format!("{} hidden, {:?}", m.hidden, m.act).to_lowercase(),
        ),
        Sublayer::Mamba(m) => (
            "mamba",
            format!(
                "state {}, conv {}, expand {}",
                m.d_state, m.d_conv, m.expand
            ),
        ),
        Sublayer::TimeMix(_) => ("time mix", "WKV recurrence".to_string()),
        Sublayer::ChannelMix(c) => ("channel mix", format!("{} hidden, squared ReLU", c.hidden)),
        Sublayer::Ssm(s) => (
            "ssm (S4D)",
            format!("state {}, {:?}", s.d_state, s.discretization).to_lowercase(),
        ),
        Sublayer::Ttt(t) => (
            "ttt",
            format!(
                "{} heads, {:?} inner, mini-batch {}",
                t.heads, t.inner, t.mini_batch
            )
            .to_lowercase(),
        ),
    };
    (title.to_string(), detail)
}

fn norm_name(spec: &ArchSpec) -> &'static str {
    match spec.norm {
        Norm::LayerNorm { .. } => "layernorm",
        Norm::RmsNorm { .. } => "rmsnorm",
    }
}

/// Consecutive identical layers as (count, layer).
fn runs(stack: &Stack) -> Vec<(usize, &Layer)> {
    let mut out: Vec<(usize, &Layer)> = Vec::new();
    for layer in &stack.layers {
        match out.last_mut() {
            Some((n, last)) if last.sublayers == layer.sublayers => *n += 1,
            _ => out.push((1, layer)),
        }
    }
    out
}

fn groups(spec: &ArchSpec) -> Vec<Group> {
    let mut embed = vec![Item {
        title: "token embedding".into(),
        detail: format!("{} × {}", spec.vocab, spec.embed_width()),
    }];
    if spec.embed.segments > 0 {
        embed.push(Item {
            title: "segment embedding".into(),
            detail: format!("{} segments", spec.embed.segments),
        });
    }
    let position = match spec.position {
        Position::Learned { offset } => format!("learned, {} rows", spec.context + offset),
        Position::Sinusoidal => "sinusoidal".into(),
        Position::Rope(r) => format!("RoPE θ = {}", r.theta),
        Position::RelativeBias { buckets, .. } => format!("relative bias, {buckets} buckets"),
        Position::Alibi => "ALiBi".into(),
        Position::None => "none".into(),
    };
    embed.push(Item {
        title: "positions".into(),
        detail: position,
    });
    let mut out = vec![Group {
        title: format!(
            "{} · {:?} · d_model {}",
            spec.name, spec.family, spec.d_model
        ),
        items: embed,
    }];
    for (name, stack) in spec.stacks() {
        let mut items = Vec::new();
        for (n, layer) in runs(stack) {
            let parts: Vec<String> = layer
                .sublayers
                .iter()
                .map(|s| {
                    let (t, d) = sublayer_detail(s);
                    format!("{t}: {d}")
                })
                .collect();
            let shared = if stack.share == Share::All {
                ", shared weights"
            } else {
                ""
            };
            items.push(Item {
                title: format!(
                    "layer × {n}{shared} ({:?}-norm {})",
                    spec.placement,
                    norm_name(spec)
                )
                .to_lowercase(),
                detail: parts.join("\n"),
            });
        }
        if spec.final_norm {
            items.push(Item {
                title: "final norm".into(),
                detail: norm_name(spec).into(),
            });
        }
        out.push(Group {
            title: name.to_string(),
            items,
        });
    }
    let heads: Vec<Item> = spec
        .heads
        .iter()
        .map(|h| match h {
            Head::Lm { scale, .. } => Item {
                title: "LM head".into(),
                detail: format!(
                    "{}{}",
                    if spec.embed.tied { "tied" } else { "untied" },
                    if *scale != 1.0 {
                        format!(", scale {scale:.4}")
                    } else {
                        String::new()
                    }
                ),
            },
            Head::MaskedLm => Item {
                title: "MLM head".into(),
                detail: "dense, act, norm, vocabulary".into(),
            },
            Head::Classifier { labels, pooler } => Item {
                title: "classifier".into(),
                detail: format!("{labels} labels{}", if *pooler { ", pooler" } else { "" }),
            },
            Head::Discriminator => Item {
                title: "discriminator".into(),
                detail: "replaced-token logits".into(),
            },
        })
        .collect();
    if !heads.is_empty() {
        out.push(Group {
            title: "heads".into(),
            items: heads,
        });
    }
    out
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// Graphviz DOT: one cluster per group, boxes in order.
pub fn to_dot(spec: &ArchSpec) -> String {
    let mut out = String::from("digraph model {\n  rankdir=TB;\n  node [shape=box, style=rounded, fontname=\"Helvetica\"];\n");
    let mut prev: Option<String> = None;
    for (gi, group) in groups(spec).iter().enumerate() {
        let _ = writeln!(
            out,
            "  subgraph cluster_{gi} {{\n    label=\"{}\";",
            escape(&group.title)
        );
        for (ii, item) in group.items.iter().enumerate() {
            let id = format!("n{gi}_{ii}");
            let label = format!(
                "{}\\n{}",
                escape(&item.title),
                escape(&item.detail).replace('\n', "\\n")
            );
            let _ = writeln!(out, "    {id} [label=\"{label}\"];");
            if let Some(p) = &prev {
                let _ = writeln!(out, "    {p} -> {id};");
            }
            prev = Some(id);
        }
        out.push_str("  }\n");
    }
    out.push_str("}\n");
    out
}

/// A self-contained SVG of the same diagram (no Graphviz needed).
pub fn to_svg(spec: &ArchSpec) -> String {
    const WIDTH: usize = 560;
    const LINE: usize = 18;
    let mut body = String::new();
    let mut y = 20;
    for group in groups(spec) {
        let _ = writeln!(
            body,
            r#"<text x="20" y="{}" font-weight="bold" font-size="15">{}</text>"#,
            y + 14,
            escape(&group.title)
        );
        y += 26;
        for item in &group.items {
            let lines: Vec<&str> = item.detail.lines().collect();
            let height = LINE * (1 + lines.len()) + 12;
            let _ = writeln!(
                body,
                r##"<rect x="40" y="{y}" width="{}" height="{height}" rx="8" fill="#eef3fb" stroke="#4a6fa5"/>"##,
                WIDTH - 80
            );
            let _ = writeln!(
                body,
                r#"<text x="56" y="{}" font-weight="bold">{}</text>"#,
                y + LINE,
                escape(&item.title)
            );
            for (i, line) in lines.iter().enumerate() {
                let _ = writeln!(
                    body,
                    r#"<text x="56" y="{}">{}</text>"#,
                    y + LINE * (i + 2),
                    escape(line)
                );
            }
            y += height;
            let _ = writeln!(
                body,
                r##"<line x1="{0}" y1="{y}" x2="{0}" y2="{1}" stroke="#4a6fa5" marker-end="url(#arrow)"/>"##,
                WIDTH / 2,
                y + 14
            );
            y += 16;
        }
        y += 8;
    }
    // No arrow after the last box.
    if let Some(last) = body.rfind("<line ") {
        body.truncate(last);
        y -= 16;
    }
    format!(
        r##"<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{y}" font-family="Helvetica, Arial, sans-serif" font-size="13">
<defs><marker id="arrow" viewBox="0 0 10 10" refX="5" refY="5" markerWidth="6" markerHeight="6" orient="auto"><path d="M0,0 L10,5 L0,10 z" fill="#4a6fa5"/></marker></defs>
<rect width="100%" height="100%" fill="white"/>
{body}</svg>
"##
    )
}

/// The spec with each run of identical layers reduced to one layer, and the runs
/// (stack, first layer, count), for an IR dump that stays short.
pub fn collapse(spec: &ArchSpec) -> (ArchSpec, Vec<(String, usize, usize)>) {
    let mut out = spec.clone();
    let mut notes = Vec::new();
    for (name, stack) in [("encoder", &mut out.encoder), ("decoder", &mut out.decoder)] {
        let Some(stack) = stack else { continue };
        let mut kept = Vec::new();
        let mut first = 0;
        for (n, layer) in runs(stack) {
            notes.push((name.to_string(), first, n));
            kept.push(layer.clone());
            first += n;
        }
        stack.layers = kept;
    }
    (out, notes)
}

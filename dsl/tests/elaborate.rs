//! §9 examples → elaborated `ArchSpec`s, snapshotted (identical consecutive layers are
//! folded into `{ repeat, layer }` runs to keep the snapshots readable).

use arch_dsl::elab::Program;
use serde_json::{json, Value};
use std::path::Path;

/// Folds runs of identical layers.
fn fold_layers(v: &mut Value) {
    match v {
        Value::Object(map) => {
            for (key, child) in map.iter_mut() {
                if key == "layers" {
                    if let Value::Array(layers) = child {
                        let mut runs: Vec<Value> = Vec::new();
                        for layer in layers.drain(..) {
                            match runs.last_mut() {
                                Some(last) if last["layer"] == layer => {
                                    last["repeat"] = json!(last["repeat"].as_u64().unwrap() + 1);
                                }
                                _ => runs.push(json!({ "repeat": 1, "layer": layer })),
                            }
                        }
                        *child = Value::Array(runs);
                    }
                } else {
                    fold_layers(child);
                }
            }
        }
        Value::Array(items) => items.iter_mut().for_each(fold_layers),
        _ => {}
    }
}

#[test]
fn examples_elaborate_as_snapshotted() {
    insta::glob!("examples/*.arch", |path| {
        let prog = Program::load(path).unwrap();
        let mut all = serde_json::Map::new();
        for name in prog.model_names() {
            let (spec, diags) = prog.elaborate(&name);
            assert!(diags.is_empty(), "{name}: {diags:?}");
            let mut v = serde_json::to_value(spec.unwrap()).unwrap();
            fold_layers(&mut v);
            all.insert(name, v);
        }
        insta::assert_yaml_snapshot!(Value::Object(all));
    });
}

fn spec(src: &str, model: &str) -> arch_dsl::ArchSpec {
    let prog = Program::from_source("test.arch", src.to_string(), None);
    let (spec, diags) = prog.elaborate(model);
    assert!(
        diags.is_empty(),
        "{}",
        arch_dsl::diag::render(&prog.sources, &diags, false)
    );
    spec.unwrap()
}

fn examples(file: &str) -> Program {
    Program::load(
        &Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/examples")
            .join(file),
    )
    .unwrap()
}

#[test]
fn derived_models_rebind_inherited_expressions() {
    let prog = examples("gpt.arch");
    let xl = prog.elaborate("gpt2_xl").0.unwrap();
    let arch_dsl::Sublayer::Mlp(mlp) = &xl.decoder.as_ref().unwrap().layers[0].sublayers[1] else {
        panic!()
    };
    assert_eq!(
        mlp.hidden, 6400,
        "hidden = 4 * d_model with gpt2_xl's d_model"
    );
    assert_eq!(xl.decoder.as_ref().unwrap().layers.len(), 48);
}

#[test]
fn blocks_read_the_using_models_lets() {
    let prog = examples("gpt.arch");
    let gpt3 = prog.elaborate("gpt3_xl").0.unwrap();
    let layers = &gpt3.decoder.as_ref().unwrap().layers;
    assert_eq!(layers.len(), 24);
    let arch_dsl::Sublayer::Attention(a) = &layers[1].sublayers[0] else {
        panic!()
    };
    assert_eq!(
        (a.heads, a.head_dim, a.mask),
        (24, 128, arch_dsl::Mask::Sliding { window: 256 })
    );
    assert_eq!(layers[0].block.as_deref(), Some("gpt3_dense"));
}

const BASE: &str = "vocab = 10  d_model = 64  context = 32";

fn head_dim_of(expr: &str) -> f64 {
    let src = format!("model m {{ {BASE}  decoder {{ layers = 1  attention {{ heads = 1  head_dim = 64  scale = {expr} }} }} }}");
    let s = spec(&src, "m");
    let arch_dsl::Sublayer::Attention(a) = &s.decoder.unwrap().layers[0].sublayers[0] else {
        panic!()
    };
    a.scale
}

#[test]
fn arithmetic_follows_python_precedence() {
    assert_eq!(head_dim_of("-2^2"), -4.0);
    assert_eq!(head_dim_of("2^3^2"), 512.0);
    assert_eq!(head_dim_of("64 ^ -0.5"), 0.125);
    assert_eq!(head_dim_of("1 + 2 * 3 - 4 / 8"), 6.5);
    assert_eq!(head_dim_of("(1 + 2) * 3"), 9.0);
    assert_eq!(head_dim_of("round_up(8 * 100 / 3, 64)"), 320.0);
    assert_eq!(
        head_dim_of("min(3, 2.5) + max(1, 2) + ceil(0.2) + floor(1.8) + sqrt(16)"),
        10.5
    );
}

#[test]
fn stacks_repeat_and_flatten() {
    let src = format!(
        "block a {{ mlp {{ hidden = 8 }} }}  block b {{ attention {{ heads = 2 }} }}  block c {{ ssm {{ }} }}
         model m {{ {BASE}  decoder {{ stack = [[a * 2, b] * 2, c] * 3 }} }}"
    );
    let s = spec(&src, "m");
    let names: Vec<_> = s
        .decoder
        .unwrap()
        .layers
        .iter()
        .map(|l| l.block.clone().unwrap())
        .collect();
    assert_eq!(names.len(), 21);
    assert_eq!(names[..7].join(","), "a,a,b,a,a,b,c");
}

#[test]
fn defaults_follow_the_family() {
    let enc = spec(
        &format!("model m {{ {BASE}  encoder {{ layers = 1  attention {{ heads = 4 }} }} }}"),
        "m",
    );
    assert_eq!(enc.family, arch_dsl::Family::EncoderOnly);
    assert!(matches!(enc.objectives[0], arch_dsl::Objective::Mlm { .. }));
    assert!(enc.final_norm);
    let post = spec(&format!("model m {{ {BASE}  placement = post  decoder {{ layers = 1  mlp {{ hidden = 4 }} }} }}"), "m");
    assert!(!post.final_norm);
    assert_eq!(post.objectives, vec![arch_dsl::Objective::NextToken]);
    assert_eq!(
        post.heads,
        vec![arch_dsl::Head::Lm {
            scale: 1.0,
            bias: false
        }]
    );
}

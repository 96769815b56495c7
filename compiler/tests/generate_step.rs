//! Step graphs (the `prefill` / `decode` entry points) against the forward graph, in the
//! reference evaluator: feeding a prompt through the step graph in pieces — the caches and
//! recurrent states carried from call to call — must give, at every call, the logits the
//! forward graph gives at that position. Every decoder cell the step graph supports is
//! covered: attention (GPT-2's learned positions, LLaMA's RoPE and GQA, ALiBi, sliding
//! windows), Mamba, RWKV-4, S4 and a hybrid stack.

mod common;

use arch_dsl::elab::Program;
use arch_dsl::spec::ArchSpec;
use archc::autodiff::check::Rng;
use archc::expand::{forward, step, ExpandOptions};
use archc::graph::Op;
use archc::interp::{run, Params, Value};
use archc::tensor::{F32Tensor, Tensor};
use common::{fixture, random_params, spec_of, TINY_S4, TINY_TTT, TINY_WINDOWS, TOLERANCE};
use std::collections::HashMap;

fn spec(src: &str, model: &str) -> ArchSpec {
    let prog = Program::from_source("t.arch", src.to_string(), None);
    prog.elaborate(model).0.expect("valid spec")
}

fn ids(rng: &mut Rng, b: usize, t: usize, vocab: u64) -> Vec<i64> {
    (0..b * t)
        .map(|_| (((rng.uniform() as f64 + 1.0) / 2.0 * vocab as f64) as i64).min(vocab as i64 - 1))
        .collect()
}

fn int(shape: Vec<usize>, data: Vec<i64>) -> Value {
    Value::I(Tensor { shape, data })
}

/// The forward graph's logits [b, T, vocab] of the token ids `tokens` ([b, T]), in the
/// evaluator.
fn forward_logits(spec: &ArchSpec, params: &Params, tokens: &[i64], b: usize) -> F32Tensor {
    let fwd = forward(
        spec,
        &ExpandOptions {
            recurrent_ssm: true,
            ..Default::default()
        },
    )
    .unwrap();
    let t = tokens.len() / b;
    let inputs = HashMap::from([("input_ids".to_string(), int(vec![b, t], tokens.to_vec()))]);
    let out = run(&fwd, &inputs, params).unwrap();
    let (_, logits) = out.into_iter().find(|(n, _)| n == "logits").unwrap();
    logits.as_f32().unwrap().clone()
}

/// The step graph's logits at each position of a `t`-token prompt of `b` rows fed in
/// `chunks` (token counts summing to `t`; recurrent models take one token per call),
/// against the forward graph's. Returns the largest relative error over calls.
fn step_error(spec: &ArchSpec, b: usize, t: usize, chunks: &[usize]) -> f64 {
    assert_eq!(chunks.iter().sum::<usize>(), t);
    let mut rng = Rng::new(5);
    let params: Params = random_params(&mut rng, spec, (1e-2, 0.1));
    let prompt = ids(&mut rng, b, t, spec.vocab);
    let logits = forward_logits(spec, &params, &prompt, b);
    let vocab = spec.vocab as usize;

    let g = step(spec).unwrap().graph;
    let mut states: HashMap<String, F32Tensor> = HashMap::new();
    let mut done = 0;
    let mut worst = 0f64;
    for &c in chunks {
        let kv = done + c;
        let mut inputs = HashMap::new();
        let col = |v: &[i64]| -> Vec<i64> {
            v.chunks(t)
                .flat_map(|r| r[done..done + c].to_vec())
                .collect()
        };
        inputs.insert("input_ids".to_string(), int(vec![b, c], col(&prompt)));
        let pos: Vec<i64> = (0..b)
            .flat_map(|_| (done..done + c).map(|p| p as i64))
            .collect();
        inputs.insert("position_ids".to_string(), int(vec![b, c], pos));
        inputs.insert(
            "attention_mask".to_string(),
            int(vec![b, kv], vec![1; b * kv]),
        );
        let mut bind = HashMap::from([
            ("batch".to_string(), b),
            ("seq".to_string(), c),
            ("kv_seq".to_string(), kv),
        ]);
        // A sliding window's ring holds min(window, capacity) rows; the capacity is t.
        for &id in &g.inputs {
            for d in &g.node(id).shape {
                for s in &d.syms {
                    if let Some(w) = s.strip_prefix("kv_win_") {
                        bind.insert(s.clone(), w.parse::<usize>().unwrap().min(t));
                    }
                }
            }
        }
        for &id in &g.inputs {
            let node = g.node(id);
            let Op::Input { name } = &node.op else {
                continue;
            };
            let Some(state) = name.strip_prefix("state:") else {
                continue;
            };
            let shape: Vec<usize> = node.shape.iter().map(|d| d.eval(&bind).unwrap()).collect();
            let n: usize = shape.iter().product();
            // Caches grow along axis 0: the old rows first, zeros where the new ones go.
            let mut data = states
                .get(state)
                .map(|s| s.data.clone())
                .unwrap_or_default();
            if data.is_empty() {
                let init = if state.ends_with(".max") { -1e38 } else { 0.0 };
                data = vec![init; n];
            }
            data.resize(n, 0.0);
            inputs.insert(name.clone(), Value::F(Tensor { shape, data }));
        }
        inputs.retain(|k, _| {
            g.inputs
                .iter()
                .any(|&id| matches!(&g.node(id).op, Op::Input { name } if name == k))
        });
        let out = run(&g, &inputs, &params).unwrap_or_else(|e| panic!("{}: {e}", spec.name));
        for (name, v) in &out {
            if let Some(state) = name.strip_prefix("state:") {
                states.insert(state.to_string(), v.as_f32().unwrap().clone());
            }
        }
        let got = out
            .iter()
            .find(|(n, _)| n == "logits")
            .unwrap()
            .1
            .as_f32()
            .unwrap();
        assert_eq!(got.shape, vec![b, 1, vocab], "{}", spec.name);
        // The forward graph's logits at position kv − 1 of every row.
        let want = Tensor {
            shape: vec![b, 1, vocab],
            data: (0..b)
                .flat_map(|r| {
                    let at = (r * t + kv - 1) * vocab;
                    logits.data[at..at + vocab].to_vec()
                })
                .collect(),
        };
        let err = got.rel_max_diff(&want);
        eprintln!("{} {b}×{t}, call of {c} ending at {kv}: {err:e}", spec.name);
        worst = worst.max(err);
        done = kv;
    }
    worst
}

fn check(spec: &ArchSpec, b: usize, t: usize, chunks: &[usize]) {
    let err = step_error(spec, b, t, chunks);
    assert!(
        err <= TOLERANCE,
        "{}: step logits differ by {err:e}",
        spec.name
    );
}

#[test]
fn attention_decoders_step_like_the_forward_graph() {
    for name in ["gpt2", "llama", "openai_gpt"] {
        let s = spec_of(&fixture(&format!("hf/{name}")));
        // A prompt of 4, then single tokens: prefill then decode.
        check(&s, 2, 7, &[4, 1, 1, 1]);
    }
    // Llama 3.1's scaled RoPE: decode steps past the original context of 32 count their
    // positions as the forward does.
    let s = spec_of(&fixture("hf/llama3_rope"));
    check(&s, 1, 40, &[30, 1, 1, 8]);
}

#[test]
fn alibi_and_sliding_windows_step_like_the_forward_graph() {
    let src = TINY_WINDOWS;
    check(&spec(src, "alibi"), 2, 6, &[3, 1, 2]);
    // A ring of 3 rows that wraps around twice; and one larger than the capacity.
    check(&spec(src, "window"), 2, 8, &[1; 8]);
    check(&spec(src, "window"), 1, 2, &[1; 2]);
    // GPT-3's alternation of dense and banded layers, with ALiBi over the ring.
    check(&spec(src, "banded"), 2, 7, &[1; 7]);
}

#[test]
fn recurrent_decoders_step_like_the_forward_graph() {
    for name in ["mamba", "rwkv"] {
        let s = spec_of(&fixture(&format!("hf/{name}")));
        check(&s, 2, 6, &[1; 6]);
    }
    check(&spec(TINY_S4, "tiny"), 2, 6, &[1; 6]);
    check(&spec(TINY_S4, "tiny_zoh"), 1, 5, &[1; 5]);
}

/// TTT decodes token by token inside its mini-batches (3 tokens): two whole mini-batches,
/// so the forward graph can run the same sequence.
#[test]
fn ttt_steps_like_the_forward_graph() {
    for model in ["tiny_linear", "tiny_mlp"] {
        check(&spec(TINY_TTT, model), 2, 6, &[1; 6]);
    }
}

/// A Mamba layer, then attention with RoPE and a SwiGLU MLP.
const HYBRID: &str = "
block mamba_block { mamba { d_state = 4  d_conv = 3  expand = 2 } }
block attn_block { attention { heads = 2 }  mlp { hidden = 24  act = swiglu } }
model hybrid {
    vocab = 29  d_model = 16  context = 32
    norm = rmsnorm(eps = 1e-5)  placement = pre  position = rope(theta = 10000.0)
    decoder { stack = [mamba_block, attn_block] * 1 }
}";

#[test]
fn hybrid_stacks_step_like_the_forward_graph() {
    check(&spec(HYBRID, "hybrid"), 2, 5, &[1; 5]);
}

/// Generation with the compiled step program (`Generator`, CPU kernels) against the
/// forward graph in the evaluator: the logits that chose each new token must be the
/// forward graph's logits at that position of the generated sequence.
fn generated_error(spec: &ArchSpec, b: usize, t: usize, n: usize) -> f64 {
    use arch_runtime::generate::{Decoding, GenerateOptions, Generator};
    let mut rng = Rng::new(9);
    let params: Params = random_params(&mut rng, spec, (1e-2, 0.1));
    let prompt = ids(&mut rng, b, t, spec.vocab);
    let dir = tempfile::tempdir().unwrap();
    let weights = dir.path().join("w.safetensors");
    let list: Vec<_> = params.clone().into_iter().collect();
    archc::tensor_io::write_f32(&weights, &list).unwrap();
    let opts = archc::package::BuildOptions {
        kind: archc::package::PackageKind::Step,
        cache: false,
        ..archc::package::BuildOptions::host().unwrap()
    };
    let pkg = dir.path().join("step");
    archc::package::build(spec, &opts, Some(&pkg)).unwrap();
    let mut generator = Generator::load(&pkg, &weights, 2).unwrap();
    let out = generator
        .generate(
            &prompt,
            None,
            b,
            &GenerateOptions {
                max_new_tokens: n,
                decoding: Decoding::Greedy,
                eos: vec![],
                pad: 0,
                save_logits: true,
            },
            |_| {},
        )
        .unwrap();
    let got = out.logits.unwrap();
    let len = t + n;
    let logits = forward_logits(spec, &params, &out.tokens, b);
    let vocab = spec.vocab as usize;
    let want: Vec<f32> = (0..b)
        .flat_map(|r| {
            let at = (r * len + t - 1) * vocab;
            logits.data[at..at + n * vocab].to_vec()
        })
        .collect();
    let shape = vec![b, n, vocab];
    let err = Tensor {
        shape: shape.clone(),
        data: got,
    }
    .rel_max_diff(&Tensor { shape, data: want });
    eprintln!("{}: {b}×{t} + {n} generated: {err:e}", spec.name);
    err
}

#[test]
fn generated_logits_equal_the_forward_graph() {
    for name in ["gpt2", "llama", "mamba", "rwkv"] {
        let s = spec_of(&fixture(&format!("hf/{name}")));
        let err = generated_error(&s, 2, 4, 5);
        assert!(err <= TOLERANCE, "{name}: {err:e}");
    }
    let s = spec(TINY_S4, "tiny");
    let err = generated_error(&s, 2, 3, 5);
    assert!(err <= TOLERANCE, "s4: {err:e}");
    // Sliding windows: ring caches that wrap around, with RoPE and GQA, and with ALiBi.
    for model in ["window", "banded"] {
        let err = generated_error(&spec(TINY_WINDOWS, model), 2, 4, 6);
        assert!(err <= TOLERANCE, "{model}: {err:e}");
    }
    // Prompt and new tokens make whole mini-batches of 3, which the forward graph needs.
    for model in ["tiny_linear", "tiny_mlp"] {
        let err = generated_error(&spec(TINY_TTT, model), 2, 4, 5);
        assert!(err <= TOLERANCE, "ttt {model}: {err:e}");
    }
}

/// Step graphs print and read back unchanged (the cache ops and ring attention included).
#[test]
fn step_graphs_print_and_read_back() {
    let cases = [
        (spec(TINY_WINDOWS, "window"), "update_ring"),
        (spec(TINY_WINDOWS, "banded"), "ring=kv_win_2"),
        (spec_of(&fixture("hf/gpt2")), "update_tail"),
        (spec_of(&fixture("hf/t5")), "state:encoder_mask"),
        (
            spec_of(&fixture("hf/mamba")),
            "state:decoder.layers.0.mamba.ssm",
        ),
    ];
    for (s, op) in &cases {
        let g = step(s).unwrap().graph;
        let text = archc::graph::print(&g);
        assert!(text.contains(op), "{}: no `{op}`", s.name);
        let back = archc::graph::read(&text).unwrap_or_else(|e| panic!("{}: {e}", s.name));
        assert_eq!(back, g, "{}", s.name);
    }
}

/// Left padding is refused where a recurrent layer would carry the pads in its state (a
/// hybrid of Mamba and attention), and taken where only attention sees them.
#[test]
fn left_padding_needs_a_model_without_recurrent_state() {
    use arch_runtime::generate::{GenerateOptions, Generator};
    let dir = tempfile::tempdir().unwrap();
    for (s, padding_ok) in [
        (spec(HYBRID, "hybrid"), false),
        (spec(TINY_WINDOWS, "window"), true),
    ] {
        let opts = archc::package::BuildOptions {
            kind: archc::package::PackageKind::Step,
            cache: false,
            ..archc::package::BuildOptions::host().unwrap()
        };
        let pkg = dir.path().join(&s.name);
        archc::package::build(&s, &opts, Some(&pkg)).unwrap();
        let package = arch_runtime::Package::load(&pkg).unwrap();
        let weights = arch_runtime::Weights::random(package.manifest(), 1).unwrap();
        let session = arch_runtime::Session::new(package, weights, 1).unwrap();
        let mut g = Generator::new(session).unwrap();
        let ids = [0, 3, 4, 5, 6, 7];
        let mask = [0, 1, 1, 1, 1, 1];
        let got = g.generate(&ids, Some(&mask), 2, &GenerateOptions::greedy(3), |_| {});
        match (got, padding_ok) {
            (Ok(out), true) => assert_eq!(out.tokens.len(), 2 * 6),
            (Err(e), false) => assert!(e.to_string().contains("recurrent"), "{e}"),
            (got, _) => panic!("{}: {got:?}", s.name),
        }
    }
}

/// Rows that end at an eos stop costing work: the session drops their state rows and the
/// other rows go on with the same tokens as when every row is computed (attention caches
/// with GQA, and a recurrent Mamba state).
#[test]
fn finished_rows_stop_costing_work() {
    use arch_runtime::generate::{Decoding, GenerateOptions, Generator};
    let attention = spec(
        "model a { vocab = 61  d_model = 32  context = 64  norm = rmsnorm(eps = 1e-5)  placement = pre
           position = rope(theta = 10000.0)
           decoder { layers = 2  attention { heads = 4  kv_heads = 2 }  mlp { hidden = 48  act = swiglu } }
           objective = next_token }",
        "a",
    );
    let mamba = spec(
        "model m { vocab = 61  d_model = 16  context = 64  norm = rmsnorm(eps = 1e-5)  placement = pre
           position = none
           decoder { layers = 2  mamba { d_state = 4  d_conv = 4  expand = 2  dt_rank = 2 } }
           objective = next_token }",
        "m",
    );
    for s in [&attention, &mamba] {
        let (b, t, n) = (4, 5, 12);
        let mut rng = Rng::new(5);
        let params: Params = random_params(&mut rng, s, (1e-2, 0.1));
        let prompt = ids(&mut rng, b, t, s.vocab);
        let dir = tempfile::tempdir().unwrap();
        let weights = dir.path().join("w.safetensors");
        let list: Vec<_> = params.into_iter().collect();
        archc::tensor_io::write_f32(&weights, &list).unwrap();
        let opts = archc::package::BuildOptions {
            kind: archc::package::PackageKind::Step,
            cache: false,
            ..archc::package::BuildOptions::host().unwrap()
        };
        let pkg = dir.path().join("step");
        archc::package::build(s, &opts, Some(&pkg)).unwrap();
        let mut generator = Generator::load(&pkg, &weights, 2).unwrap();
        let mut run = |eos: Vec<i64>, save_logits: bool| {
            let o = GenerateOptions {
                max_new_tokens: n,
                decoding: Decoding::Greedy,
                eos,
                pad: 0,
                save_logits,
            };
            generator.generate(&prompt, None, b, &o, |_| {}).unwrap()
        };
        let free = run(vec![], false);
        // The eos: row 0's third new token (other rows may meet it too, or never).
        let eos = free.tokens[t + 2];
        let all = run(vec![eos], true);
        let dropped = run(vec![eos], false);
        assert_eq!(
            dropped.tokens, all.tokens,
            "{}: dropping rows changes tokens",
            s.name
        );
        for r in 0..b {
            let row = &dropped.tokens[r * (t + n)..(r + 1) * (t + n)];
            let base = &free.tokens[r * (t + n)..(r + 1) * (t + n)];
            let end = row[t..]
                .iter()
                .position(|&x| x == eos)
                .map_or(t + n, |p| t + p + 1);
            assert_eq!(&row[..end], &base[..end], "{} row {r}", s.name);
            assert!(
                row[end..].iter().all(|&x| x == 0),
                "{} row {r}: padding",
                s.name
            );
        }
        assert!(
            dropped.decode_rows < b * dropped.decode_steps,
            "{}: {} rows over {} steps",
            s.name,
            dropped.decode_rows,
            dropped.decode_steps
        );
        assert_eq!(
            all.decode_rows,
            b * all.decode_steps,
            "{}: saved logits keep rows",
            s.name
        );
    }
}

/// `--dtype bf16|f16` on cuda stores KV caches in the half type (what transformers' cache
/// of a model cast to it holds) and nothing else of the session state: recurrent states,
/// RWKV's running maximum (it starts at −1e38, past f16) and the cross-attention keys the
/// host writes stay f32.
#[test]
fn half_precision_programs_keep_only_kv_caches_in_half() {
    use arch_runtime::gguf::GgmlType;
    use archc::kernel::BufKind;
    let mut specs: Vec<ArchSpec> = ["gpt2", "llama", "t5", "bart", "mamba", "rwkv"]
        .iter()
        .map(|n| spec_of(&fixture(&format!("hf/{n}"))))
        .collect();
    specs.push(spec(TINY_S4, "tiny"));
    specs.push(spec(TINY_TTT, "tiny_linear"));
    specs.push(spec(TINY_WINDOWS, "window"));
    let (mut caches, mut recurrent) = (0, 0);
    for s in &specs {
        let st = step(s).unwrap();
        let g = archc::passes::simplify(&st.graph);
        let mut prog = archc::package::package_program(&g).unwrap();
        archc::kernel::quant::store_activations(&mut prog, GgmlType::BF16, &st.inits);
        for (name, b, _) in &prog.states {
            assert!(matches!(prog.buffers[*b].kind, BufKind::State(_)));
            let cache = [".attention.k", ".attention.v"]
                .iter()
                .any(|end| name.ends_with(end));
            let half = prog.buffers[*b].quant == Some(GgmlType::BF16);
            assert_eq!(half, cache, "{}: state `{name}`", s.name);
            caches += usize::from(cache);
            recurrent += usize::from(!cache);
        }
    }
    // Every kind is covered: caches (rings of sliding windows among them), cross-attention
    // keys and mask, Mamba, RWKV, S4 and TTT states.
    assert!(
        caches >= 20 && recurrent >= 30,
        "{caches} caches, {recurrent} others"
    );
}

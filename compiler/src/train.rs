//! Spec → the training graph of a `train` package: forward, the objectives' loss, the
//! backward pass and the optimizer update, one graph, so that fusion, Kernel IR and LLVM
//! treat training exactly as inference.
//!
//! Parameters, optimizer moments and the gradient accumulator are session state
//! (`state:{name}` inputs and outputs, DESIGN.md §10): the graph reads each parameter from
//! its state buffer and writes the updated value over it after every other kernel. What
//! changes from step to step (the scheduled learning rate, Adam's bias corrections,
//! whether this micro-batch applies the update) arrives in one small input, `hyper`, so one
//! package serves every hyper-parameter setting:
//!
//! | index | AdamW | SGD |
//! |---|---|---|
//! | 0 | lr | lr |
//! | 1 | β₁ | momentum |
//! | 2 | β₂ | — |
//! | 3 | ε | — |
//! | 4 | weight decay | weight decay |
//! | 5 | 1 − β₁ᵗ | — |
//! | 6 | 1 − β₂ᵗ | — |
//! | 7 | clip (0: none) | clip |
//! | 8 | apply (1: update, 0: accumulate only) | apply |
//! | 9 | gradient scale (1 / micro-batches) | gradient scale |
//!
//! AdamW follows `torch.optim.AdamW` (single-tensor path): `p ← p·(1 − lr·wd)`,
//! `m ← lerp(m, g, 1 − β₁)`, `v ← β₂·v + (1 − β₂)·g²`,
//! `p ← p − lr/(1 − β₁ᵗ) · m / (√v / √(1 − β₂ᵗ) + ε)`; SGD follows `torch.optim.SGD`
//! (`g ← g + wd·p`, `b ← μ·b + g`, `p ← p − lr·b`). Weight decay applies to parameters with
//! two or more dimensions only (not biases and norm scales). Clipping follows
//! `torch.nn.utils.clip_grad_norm_`: the global norm of all gradients, `coef =
//! min(1, clip / (norm + 1e-6))`. The output `grad_norm` is that norm before clipping.

use crate::autodiff::{self, Wrt};
use crate::expand::{forward, ExpandOptions, BATCH, SEQ, TARGET_SEQ};
use crate::graph::{BinaryOp, DType, Dim, Graph, NodeId, Op, ReduceOp, UnaryOp};
use crate::kernel::build::STATE;
use arch_dsl::spec::{ArchSpec, Family, Objective};

pub use crate::autodiff::loss::{binary_cross_entropy, cross_entropy, sequence_logp, IGNORE};

/// The input holding the per-step scalars (see the module docs for its layout).
pub const HYPER: &str = "hyper";
/// Number of values in [`HYPER`].
pub const HYPER_LEN: usize = 10;

/// The optimizer a train package applies.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Optimizer {
    #[default]
    AdamW,
    Sgd,
}

impl Optimizer {
    pub fn name(self) -> &'static str {
        match self {
            Optimizer::AdamW => "adamw",
            Optimizer::Sgd => "sgd",
        }
    }

    /// The per-parameter states it keeps, as name prefixes (`opt.m.{param}`).
    pub fn moments(self) -> &'static [&'static str] {
        match self {
            Optimizer::AdamW => &["opt.m.", "opt.v."],
            Optimizer::Sgd => &["opt.m."],
        }
    }
}

/// What a train package computes.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default)]
pub struct TrainOptions {
    pub optimizer: Optimizer,
    /// Keep a gradient accumulator (`opt.acc.{param}`) for several micro-batches per step.
    pub accumulate: bool,
    /// The graph takes an `attention_mask` input.
    pub attention_mask: bool,
    /// Parameters kept as they are (canonical names; a name ending in `.` freezes every
    /// parameter under that prefix): read by the forward pass, never updated, outside
    /// the gradient norm. (BART's `final_logits_bias` is a buffer in transformers.)
    pub frozen: Vec<String>,
}

impl TrainOptions {
    pub fn is_frozen(&self, param: &str) -> bool {
        self.frozen
            .iter()
            .any(|f| f == param || (f.ends_with('.') && param.starts_with(f.as_str())))
    }
}

/// The state prefix of the gradient accumulator.
pub const ACC: &str = "opt.acc.";

/// Which objective losses a spec's training graph sums, or why it cannot be trained yet.
pub fn losses(spec: &ArchSpec) -> Result<Vec<&'static str>, String> {
    let mut out = Vec::new();
    for o in &spec.objectives {
        match o {
            Objective::NextToken
            | Objective::Mlm { .. }
            | Objective::SpanCorruption { .. }
            | Objective::Denoise { .. } => {
                if !out.contains(&"lm") {
                    out.push("lm")
                }
            }
            Objective::Nsp => out.push("nsp"),
            Objective::Sop => out.push("sop"),
            Objective::Rtd { .. } => {
                rtd_generator(spec)?;
                out.push("rtd")
            }
            Objective::Dpo { .. } => {
                if spec.family != Family::DecoderOnly {
                    return Err("training `dpo` is built for decoder-only models".into());
                }
                out.push("dpo")
            }
        }
    }
    if out.is_empty() {
        return Err(format!(
            "model `{}` has no training objective (`objective = …`)",
            spec.name
        ));
    }
    Ok(out)
}

/// The label inputs a spec's training graph takes, with their shapes' symbols: `labels`
/// [batch, seq] (decoder targets of an encoder-decoder: [batch, tgt_seq]) and the
/// sentence-level labels [batch] of NSP / SOP: what the data (or a collator) provides. (RTD
/// also takes `rtd_input_ids` and `rtd_labels`, which [`RtdSampler`] makes.)
pub fn label_inputs(spec: &ArchSpec) -> Result<Vec<(&'static str, Vec<Dim>)>, String> {
    let mut out = Vec::new();
    for l in losses(spec)? {
        match l {
            "lm" => {
                let t = if spec.family == Family::EncoderDecoder {
                    TARGET_SEQ
                } else {
                    SEQ
                };
                out.push(("labels", vec![Dim::sym(BATCH), Dim::sym(t)]));
            }
            "nsp" => out.push(("next_sentence_label", vec![Dim::sym(BATCH)])),
            "dpo" => {
                out.push(("labels", vec![Dim::sym(BATCH), Dim::sym(SEQ)]));
                out.push((DPO_REFERENCE, vec![Dim::sym(BATCH)]));
            }
            "sop" => out.push(("sentence_order_label", vec![Dim::sym(BATCH)])),
            // The generator's MLM labels; [`RtdSampler`] adds the discriminator's inputs.
            "rtd" => out.push(("labels", vec![Dim::sym(BATCH), Dim::sym(SEQ)])),
            _ => {}
        }
    }
    Ok(out)
}

/// RTD: the discriminator's input, the masked rows with the generator's samples in the
/// masked positions (i64 [batch, seq]).
pub const RTD_INPUT: &str = "rtd_input_ids";
/// RTD: 1 where `rtd_input_ids` differs from the original token, else 0 (i64 [batch, seq]).
pub const RTD_LABELS: &str = "rtd_labels";
/// RTD: the generator's MLM logits, an output of the loss graph.
pub const GENERATOR_LOGITS: &str = "generator_logits";
/// RTD: the prefix of the generator's own parameters in a train package.
pub const GENERATOR: &str = "generator.";

/// The parameters ELECTRA's generator shares with its discriminator: the embeddings
/// (google-research/electra builds both under one `electra/embeddings` scope: token,
/// position and segment tables and their LayerNorm; `embeddings_project` is each model's).
pub fn rtd_shared(param: &str) -> bool {
    [
        "embed.tokens.",
        "embed.segments.",
        "encoder.positions.",
        "encoder.embed_norm.",
    ]
    .iter()
    .any(|p| param.starts_with(p))
}

/// A generator parameter's name in the train package: shared ones are the
/// discriminator's, the rest get [`GENERATOR`] in front.
pub fn generator_param(param: &str) -> String {
    if rtd_shared(param) {
        param.to_string()
    } else {
        format!("{GENERATOR}{param}")
    }
}

/// The generator of an `rtd` objective and the discriminator loss's weight, checked: an
/// encoder with an MLM head whose shared embeddings have the discriminator's shapes.
pub fn rtd_generator(spec: &ArchSpec) -> Result<Option<(&ArchSpec, f64)>, String> {
    let Some((g, w)) = spec.objectives.iter().find_map(|o| match o {
        Objective::Rtd { generator, weight } => Some((generator.as_ref(), *weight)),
        _ => None,
    }) else {
        return Ok(None);
    };
    if g.family != Family::EncoderOnly || spec.family != Family::EncoderOnly {
        return Err("`rtd` trains an encoder with an encoder generator".into());
    }
    if !g
        .objectives
        .iter()
        .any(|o| matches!(o, Objective::Mlm { .. }))
    {
        return Err(format!(
            "the RTD generator `{}` needs an `mlm` objective (its masked-LM head samples the replacements)",
            g.name
        ));
    }
    if g.vocab != spec.vocab {
        return Err(format!(
            "the RTD generator `{}` has vocab {}, the discriminator {}",
            g.name, g.vocab, spec.vocab
        ));
    }
    let disc = crate::params::param_table(spec);
    for p in crate::params::param_table(g) {
        if rtd_shared(&p.name) {
            match disc.iter().find(|d| d.name == p.name) {
                Some(d) if d.shape == p.shape => {}
                Some(d) => {
                    return Err(format!(
                        "ELECTRA shares the embeddings, but `{}` is {:?} in the generator `{}` and {:?} in `{}` (give both the same embedding width, context and segments)",
                        p.name, p.shape, g.name, d.shape, spec.name
                    ))
                }
                None => {
                    return Err(format!(
                        "ELECTRA shares the embeddings, but `{}` of the generator `{}` has no counterpart in `{}`",
                        p.name, g.name, spec.name
                    ))
                }
            }
        }
    }
    Ok(Some((g, w)))
}

/// Every parameter a train package of `spec` trains, before freezing: the model's and,
/// for RTD, the generator's own (prefixed [`GENERATOR`]).
pub fn train_params(spec: &ArchSpec) -> Vec<crate::params::ParamInfo> {
    let mut t = crate::params::param_table(spec);
    if let Ok(Some((g, _))) = rtd_generator(spec) {
        t.extend(
            crate::params::param_table(g)
                .into_iter()
                .filter(|p| !rtd_shared(&p.name))
                .map(|p| crate::params::ParamInfo {
                    name: generator_param(&p.name),
                    shape: p.shape,
                }),
        );
    }
    t
}

/// Fresh parameters of [`train_params`] ([`crate::params::init`]; the generator's from a
/// seed of its own).
pub fn init_params(spec: &ArchSpec, seed: u64) -> std::collections::BTreeMap<String, Vec<f32>> {
    let mut out = crate::params::init(spec, seed);
    if let Ok(Some((g, _))) = rtd_generator(spec) {
        for (n, v) in crate::params::init(g, seed ^ 0x6765_6e65_7261_746f) {
            if !rtd_shared(&n) {
                out.insert(generator_param(&n), v);
            }
        }
    }
    out
}

/// The weight-file namings of [`train_params`]: the model's and, for RTD, each joined
/// with the generator's naming of the same label, its tensors under `generator.` (so a
/// file holds `electra.…` for the discriminator and `generator.electra.…`,
/// `generator.generator_lm_head.…` for the generator; canonical: `generator.encoder.…`).
pub fn train_namings(spec: &ArchSpec) -> Vec<arch_runtime::manifest::Naming> {
    let mut namings = crate::weights::manifest_namings(spec);
    let Ok(Some((g, _))) = rtd_generator(spec) else {
        return namings;
    };
    let gen = crate::weights::manifest_namings(g);
    for n in &mut namings {
        let Some(gn) = gen.iter().find(|x| x.label == n.label) else {
            continue;
        };
        for (name, src) in &gn.sources {
            if !rtd_shared(name) {
                n.sources
                    .insert(generator_param(name), prefixed(src, GENERATOR));
            }
        }
    }
    namings
}

/// Starting parameters from a weights file: every parameter of [`train_params`], under
/// one of [`train_namings`] (canonical or Hugging Face names). Returns them and the
/// naming's label.
pub fn load_init(
    spec: &ArchSpec,
    path: &std::path::Path,
) -> Result<(std::collections::BTreeMap<String, Vec<f32>>, String), String> {
    let table = train_params(spec);
    let manifest = crate::weights::params_manifest(spec, &table, train_namings(spec));
    let w = arch_runtime::Weights::open_with(&manifest, path, &|_| false)
        .map_err(|e| format!("{}: {e}", path.display()))?;
    let params = table
        .iter()
        .enumerate()
        .map(|(i, p)| (p.name.clone(), w.data(i).unwrap_or(&[]).to_vec()))
        .collect();
    Ok((params, w.naming().to_string()))
}

/// `src` reading every tensor under `prefix` + its name.
fn prefixed(src: &arch_runtime::manifest::Source, prefix: &str) -> arch_runtime::manifest::Source {
    use arch_runtime::manifest::Source;
    match src {
        Source::Plain { name, shape } => Source::Plain {
            name: format!("{prefix}{name}"),
            shape: shape.clone(),
        },
        Source::Transpose { name, shape } => Source::Transpose {
            name: format!("{prefix}{name}"),
            shape: shape.clone(),
        },
        Source::Rows {
            name,
            shape,
            transpose,
            start,
            len,
        } => Source::Rows {
            name: format!("{prefix}{name}"),
            shape: shape.clone(),
            transpose: *transpose,
            start: *start,
            len: *len,
        },
        Source::NegLog { name, shape } => Source::NegLog {
            name: format!("{prefix}{name}"),
            shape: shape.clone(),
        },
        Source::RopeRows { name, shape, heads } => Source::RopeRows {
            name: format!("{prefix}{name}"),
            shape: shape.clone(),
            heads: *heads,
        },
        Source::Any(alts) => Source::Any(alts.iter().map(|a| prefixed(a, prefix)).collect()),
        Source::Nothing => Source::Nothing,
    }
}

/// The DPO input holding the frozen reference model's log-probability of each row's
/// response (f32 [batch]).
pub const DPO_REFERENCE: &str = "ref_logp";

fn output_of(g: &Graph, name: &str) -> Result<NodeId, String> {
    g.outputs
        .iter()
        .find(|(n, _)| n == name)
        .map(|(_, id)| *id)
        .ok_or_else(|| format!("the model has no `{name}` output to train"))
}

/// The forward graph plus the summed objective loss as output `loss` (labels as inputs).
pub fn loss_graph(spec: &ArchSpec, attention_mask: bool) -> Result<Graph, String> {
    let expand = ExpandOptions {
        attention_mask,
        recurrent_ssm: true,
    };
    let mut g = match rtd_generator(spec)? {
        None => forward(spec, &expand)?,
        Some((generator, _)) => {
            // ELECTRA: the generator reads the masked `input_ids`, the discriminator the
            // sampled `rtd_input_ids`; both the shared embeddings.
            let mut g = Graph::new(&spec.name);
            let gen = forward(generator, &expand)?;
            let outs = g.append(&gen, &|n| n.to_string(), &|p| generator_param(p));
            let logits = outs
                .iter()
                .find(|(n, _)| n == "logits")
                .map(|&(_, id)| id)
                .ok_or("the RTD generator has no MLM logits")?;
            let disc = forward(spec, &expand)?;
            let rename = |n: &str| {
                if n == "input_ids" {
                    RTD_INPUT.to_string()
                } else {
                    n.to_string()
                }
            };
            g.outputs = g.append(&disc, &rename, &|p| p.to_string());
            g.output(GENERATOR_LOGITS, logits);
            g
        }
    };
    let mut parts = Vec::new();
    for l in losses(spec)? {
        match l {
            "lm" => {
                let logits = output_of(&g, "logits")?;
                let shape = vec![
                    Dim::sym(BATCH),
                    Dim::sym(if spec.family == Family::EncoderDecoder {
                        TARGET_SEQ
                    } else {
                        SEQ
                    }),
                ];
                let labels = g.input("labels", shape, DType::I64);
                // Decoder-only models predict the next token (labels are the inputs);
                // MLM and encoder-decoders score each position against its own label.
                let shift = spec.family == Family::DecoderOnly;
                parts.push(cross_entropy(&mut g, logits, labels, shift));
            }
            name @ ("nsp" | "sop") => {
                let logits = output_of(&g, "classifier_logits")?;
                let input = if name == "nsp" {
                    "next_sentence_label"
                } else {
                    "sentence_order_label"
                };
                let labels = g.input(input, vec![Dim::sym(BATCH)], DType::I64);
                parts.push(cross_entropy(&mut g, logits, labels, false));
            }
            "dpo" => {
                // Rows are the chosen responses, then the rejected ones (batch = 2·pairs):
                // −log σ(β·((π(y_w) − π_ref(y_w)) − (π(y_l) − π_ref(y_l)))), the DPO
                // paper's loss, averaged over pairs.
                let beta = spec
                    .objectives
                    .iter()
                    .find_map(|o| match o {
                        Objective::Dpo { beta } => Some(*beta),
                        _ => None,
                    })
                    .unwrap_or(0.1);
                let logits = output_of(&g, "logits")?;
                let labels = g.input("labels", vec![Dim::sym(BATCH), Dim::sym(SEQ)], DType::I64);
                let reference = g.input(DPO_REFERENCE, vec![Dim::sym(BATCH)], DType::F32);
                let logp = sequence_logp(&mut g, logits, labels);
                let diff = g.sub(logp, reference);
                let pairs = Dim::sym(BATCH).div_by(2);
                let two = g.reshape(diff, vec![Dim::c(2), pairs.clone()]);
                let chosen = g.slice(two, 0, 0, 1);
                let rejected = g.slice(two, 0, 1, 1);
                let margin = g.sub(chosen, rejected);
                let margin = g.scale(margin, -beta);
                let l = g.unary(UnaryOp::Softplus, margin);
                let l = g.reduce(ReduceOp::Mean, l, 1);
                parts.push(g.reshape(l, Vec::new()));
            }
            "rtd" => {
                // ELECTRA (google-research/electra, run_pretraining.py): the generator's
                // MLM loss plus `weight` × the discriminator's binary cross-entropy
                // over the real tokens (is each token a replaced one?).
                let weight = rtd_generator(spec)?.map_or(50.0, |(_, w)| w);
                let gen_logits = output_of(&g, GENERATOR_LOGITS)?;
                let labels = g.input("labels", vec![Dim::sym(BATCH), Dim::sym(SEQ)], DType::I64);
                let mlm = cross_entropy(&mut g, gen_logits, labels, false);
                let disc_logits = output_of(&g, "logits")?;
                let replaced =
                    g.input(RTD_LABELS, vec![Dim::sym(BATCH), Dim::sym(SEQ)], DType::I64);
                let mask = g.inputs.iter().copied().find(
                    |&i| matches!(&g.node(i).op, Op::Input { name } if name == "attention_mask"),
                );
                let bce = binary_cross_entropy(&mut g, disc_logits, replaced, mask);
                let bce = g.scale(bce, weight);
                parts.push(g.add(mlm, bce));
            }
            _ => unreachable!("losses() names only lm, nsp, sop, rtd and dpo"),
        }
    }
    let loss = parts.iter().skip(1).fold(parts[0], |acc, &p| g.add(acc, p));
    g.output("loss", loss);
    Ok(g)
}

/// One scalar of the `hyper` input.
fn hyper(g: &mut Graph, h: NodeId, i: usize) -> NodeId {
    let s = g.slice(h, 0, i as u64, 1);
    g.reshape(s, Vec::new())
}

/// The training graph of `spec`: inputs as the forward graph's plus the labels and
/// `hyper`; outputs `loss`, `grad_norm` and the new value of every state (parameters
/// first, so that their updates read the old moments before those are overwritten).
/// Returns the graph and the names of the parameters, in state order.
pub fn train_graph(spec: &ArchSpec, opts: &TrainOptions) -> Result<(Graph, Vec<String>), String> {
    let g = loss_graph(spec, opts.attention_mask)?;
    let mut g = autodiff::grad(&g, "loss", Wrt::Params)?;
    let all = autodiff::param_shapes(&g);
    for f in &opts.frozen {
        if !all
            .iter()
            .any(|(n, _)| opts.is_frozen(n) && (n == f || f.ends_with('.')))
        {
            return Err(format!(
                "cannot freeze `{f}`: the model has no such parameter"
            ));
        }
    }
    let params: Vec<_> = all
        .into_iter()
        .filter(|(n, _)| !opts.is_frozen(n))
        .collect();
    let h = g.input(HYPER, vec![Dim::c(HYPER_LEN as u64)], DType::F32);
    let [lr, b1, b2, eps, wd, bc1, bc2, clip, apply, gscale] =
        std::array::from_fn(|i| hyper(&mut g, h, i));

    // Each parameter's gradient this step: this micro-batch's plus what was accumulated.
    let mut grads = Vec::with_capacity(params.len());
    let mut accs = Vec::new();
    for (name, shape) in &params {
        let d = output_of(&g, &format!("grad:{name}"))?;
        let total = if opts.accumulate {
            let acc = g.input(&format!("{STATE}{ACC}{name}"), shape.clone(), DType::F32);
            let sum = g.add(acc, d);
            accs.push(sum);
            sum
        } else {
            d
        };
        grads.push(g.mul(total, gscale));
    }
    // The global norm (before clipping) and the clipping coefficient.
    let mut norm2 = None;
    for &d in &grads {
        let sq = g.unary(UnaryOp::Square, d);
        let mut x = sq;
        for a in (0..g.shape(sq).len()).rev() {
            x = g.reduce(ReduceOp::Sum, x, a);
        }
        let x = g.reshape(x, Vec::new());
        norm2 = Some(match norm2 {
            Some(n) => g.add(n, x),
            None => x,
        });
    }
    let norm2 = norm2.ok_or("the model has no parameters to train (all are frozen)")?;
    let norm = g.unary(UnaryOp::Sqrt, norm2);
    let tiny = g.constant(1e-6);
    let denom = g.add(norm, tiny);
    let ratio = g.div(clip, denom);
    let one = g.constant(1.0);
    let capped = g.binary(BinaryOp::Min, ratio, one);
    let zero = g.constant(0.0);
    let clipping = g.binary(BinaryOp::Lt, zero, clip);
    let coef = g.select(clipping, capped, one);

    let mut new_params = Vec::new();
    let mut new_states = Vec::new();
    let keep = |g: &mut Graph, new: NodeId, old: NodeId| {
        if opts.accumulate {
            g.select(apply, new, old)
        } else {
            new
        }
    };
    for ((name, shape), &d) in params.iter().zip(&grads) {
        let p = g.param(name, shape.clone());
        let d = g.mul(d, coef);
        let decays = shape.len() >= 2;
        let m_name = format!("{STATE}opt.m.{name}");
        let m = g.input(&m_name, shape.clone(), DType::F32);
        let p_new = match opts.optimizer {
            Optimizer::AdamW => {
                let v_name = format!("{STATE}opt.v.{name}");
                let v = g.input(&v_name, shape.clone(), DType::F32);
                // p·(1 − lr·wd)
                let p = if decays {
                    let lw = g.mul(lr, wd);
                    let f = g.sub(one, lw);
                    g.mul(p, f)
                } else {
                    p
                };
                // m + (1 − β₁)(g − m)
                let w = g.sub(one, b1);
                let gm = g.sub(d, m);
                let step = g.mul(w, gm);
                let m_new = g.add(m, step);
                // β₂·v + (1 − β₂)·g²
                let bv = g.mul(b2, v);
                let w2 = g.sub(one, b2);
                let g2 = g.mul(d, d);
                let g2 = g.mul(g2, w2);
                let v_new = g.add(bv, g2);
                // p − lr/(1 − β₁ᵗ) · m / (√v / √(1 − β₂ᵗ) + ε)
                let step_size = g.div(lr, bc1);
                let sv = g.unary(UnaryOp::Sqrt, v_new);
                let sb = g.unary(UnaryOp::Sqrt, bc2);
                let den = g.div(sv, sb);
                let den = g.add(den, eps);
                let q = g.div(m_new, den);
                let q = g.mul(q, step_size);
                let p_new = g.sub(p, q);
                let m_keep = keep(&mut g, m_new, m);
                let v_keep = keep(&mut g, v_new, v);
                new_states.push((m_name, m_keep));
                new_states.push((v_name, v_keep));
                p_new
            }
            Optimizer::Sgd => {
                let d = if decays {
                    let wp = g.mul(wd, p);
                    g.add(d, wp)
                } else {
                    d
                };
                let bm = g.mul(b1, m);
                let m_new = g.add(bm, d);
                let q = g.mul(lr, m_new);
                let p_new = g.sub(p, q);
                let m_keep = keep(&mut g, m_new, m);
                new_states.push((m_name, m_keep));
                p_new
            }
        };
        let p_keep = keep(&mut g, p_new, p);
        new_params.push((format!("{STATE}{name}"), p_keep));
    }
    if opts.accumulate {
        for ((name, _), &sum) in params.iter().zip(&accs) {
            let z = g.scale(sum, 0.0);
            let cleared = g.select(apply, z, sum);
            new_states.push((format!("{STATE}{ACC}{name}"), cleared));
        }
    }
    let loss = output_of(&g, "loss")?;
    g.outputs = vec![("loss".into(), loss), ("grad_norm".into(), norm)];
    g.outputs.extend(new_params);
    g.outputs.extend(new_states);
    let g = crate::passes::simplify(&g.finish()?);
    let g = params_as_state(g)?;
    crate::graph::verify(&g)?;
    Ok((g, params.into_iter().map(|(n, _)| n).collect()))
}

/// Every `param` node becomes the session state input `state:{name}` (after
/// simplification merged the nodes of a shared parameter into one).
fn params_as_state(mut g: Graph) -> Result<Graph, String> {
    for i in 0..g.nodes.len() {
        match &g.nodes[i].op {
            Op::Param { name } => {
                let name = format!("{STATE}{name}");
                if g.inputs
                    .iter()
                    .any(|&id| matches!(&g.node(id).op, Op::Input { name: n } if *n == name))
                {
                    return Err(format!(
                        "parameter `{name}` appears twice in the training graph"
                    ));
                }
                g.nodes[i].op = Op::Input { name };
                g.inputs.push(NodeId(i as u32));
            }
            Op::Scan { body, .. }
                if body.nodes.iter().any(|n| matches!(n.op, Op::Param { .. })) =>
            {
                return Err("a scan body reads a parameter directly; training needs parameters as scan constants".into());
            }
            _ => {}
        }
    }
    Ok(g)
}

/// Writes a trainer's parameters as canonical safetensors (what `--weights` and
/// `Model::load` read), atomically.
pub fn save_weights<S: arch_runtime::train::TrainSession>(
    trainer: &mut arch_runtime::train::Trainer<S>,
    spec: &ArchSpec,
    path: &std::path::Path,
) -> Result<(), String> {
    let params = train_params(spec);
    let names: Vec<&str> = params.iter().map(|p| p.name.as_str()).collect();
    let values = trainer.tensors(&names).map_err(|e| e.to_string())?;
    let tensors: Vec<(String, Vec<usize>, &[f32])> = params
        .iter()
        .zip(&values)
        .map(|(p, v)| (p.name.clone(), p.shape.clone(), &v[..]))
        .collect();
    arch_runtime::train::write_safetensors_atomic(path, &tensors, None).map_err(|e| e.to_string())
}

/// A session on `spec`'s train package (built with `opts`, or taken from the cache): no
/// weights, since its parameters are state a trainer sets. Also says how it was built.
pub fn train_session(
    spec: &ArchSpec,
    opts: TrainOptions,
    threads: usize,
    verbose: bool,
) -> Result<(arch_runtime::Session, crate::package::Built), String> {
    use crate::package::{build, BuildOptions, PackageKind};
    let build_opts = BuildOptions {
        attention_mask: opts.attention_mask,
        kind: PackageKind::Train(opts),
        verbose,
        ..BuildOptions::host()?
    };
    let built = build(spec, &build_opts, None)?;
    let package = arch_runtime::Package::load(&built.dir).map_err(|e| e.to_string())?;
    let weights = arch_runtime::Weights::from_tensors(package.manifest(), Default::default())
        .map_err(|e| e.to_string())?;
    let session =
        arch_runtime::Session::new(package, weights, threads).map_err(|e| e.to_string())?;
    Ok((session, built))
}

/// [`train_session`] for a cuda device: the train package built for sm_80 (which sm_90
/// GPUs run too), its parameters and optimizer moments on GPU 0, or with `sim` on the host
/// simulator.
pub fn train_device_session(
    spec: &ArchSpec,
    opts: TrainOptions,
    sim: bool,
    verbose: bool,
) -> Result<(arch_runtime::device::DeviceSession, crate::package::Built), String> {
    use crate::package::{build, BuildOptions, PackageKind};
    use arch_runtime::device::{open_device, read_cuda_manifest, DeviceSession};
    let build_opts = BuildOptions {
        attention_mask: opts.attention_mask,
        kind: PackageKind::Train(opts),
        verbose,
        cuda: Some(80),
        sim,
        ..BuildOptions::host()?
    };
    let built = build(spec, &build_opts, None)?;
    let m = read_cuda_manifest(&built.dir).map_err(|e| e.to_string())?;
    let device = open_device(&built.dir, &m, sim, 0).map_err(|e| e.to_string())?;
    let weights =
        arch_runtime::Weights::from_tensors(&m, Default::default()).map_err(|e| e.to_string())?;
    let session = DeviceSession::new(m, &weights, device).map_err(|e| e.to_string())?;
    Ok((session, built))
}

/// ELECTRA's replacements: the generator's forward program, reading the trainer's current
/// generator parameters, samples a token for every masked position (labels ≠ −100) from
/// softmax(logits) — google-research/electra's `sample_from_softmax` at temperature 1 —
/// and makes the discriminator's input (`rtd_input_ids`) and targets (`rtd_labels`: 1
/// where the sample differs from the original token).
pub struct RtdSampler {
    session: arch_runtime::Session,
    /// The generator program's parameters: (its name, the trainer's state name).
    params: Vec<(String, String)>,
}

impl std::fmt::Debug for RtdSampler {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RtdSampler")
            .field("params", &self.params.len())
            .finish()
    }
}

/// The salt of the replacement sampler's per-row generators.
pub const RTD_SEED_SALT: u64 = 0x7274_645f_7361_6d70;

/// The index drawn from softmax(`logits`) by the uniform `u` ∈ [0, 1): the first whose
/// cumulative probability (f64, in index order) exceeds `u`.
pub fn sample_softmax(logits: &[f32], u: f64) -> usize {
    let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max) as f64;
    let total: f64 = logits.iter().map(|&l| (l as f64 - max).exp()).sum();
    let target = u * total;
    let mut acc = 0.0;
    for (v, &l) in logits.iter().enumerate() {
        acc += (l as f64 - max).exp();
        if acc > target {
            return v;
        }
    }
    // Rounding left the target at the very end: the last token with any probability.
    logits
        .iter()
        .rposition(|&l| (l as f64 - max).exp() > 0.0)
        .unwrap_or(0)
}

impl RtdSampler {
    /// The sampler of `spec`'s generator (built into the package cache), its weights taken
    /// from `trainer`.
    pub fn new<S: arch_runtime::train::TrainSession>(
        spec: &ArchSpec,
        trainer: &mut arch_runtime::train::Trainer<S>,
        attention_mask: bool,
        threads: usize,
    ) -> Result<RtdSampler, String> {
        use crate::package::{build, BuildOptions, PackageKind};
        let (generator, _) = rtd_generator(spec)?.ok_or("the model has no `rtd` objective")?;
        let opts = BuildOptions {
            attention_mask,
            outputs: vec!["logits".into()],
            kind: PackageKind::Forward,
            ..BuildOptions::host()?
        };
        let built = build(generator, &opts, None)?;
        let package = arch_runtime::Package::load(&built.dir).map_err(|e| e.to_string())?;
        let params: Vec<(String, String)> = package
            .manifest()
            .params
            .iter()
            .map(|p| (p.name.clone(), generator_param(&p.name)))
            .collect();
        let mut tensors = std::collections::BTreeMap::new();
        for (name, state) in &params {
            let data = trainer.tensor(state).map_err(|e| e.to_string())?;
            tensors.insert(name.clone(), data.to_vec());
        }
        let weights = arch_runtime::Weights::from_tensors(package.manifest(), tensors)
            .map_err(|e| e.to_string())?;
        let session =
            arch_runtime::Session::new(package, weights, threads).map_err(|e| e.to_string())?;
        Ok(RtdSampler { session, params })
    }

    /// Adds `rtd_input_ids` and `rtd_labels` to `batch` (which holds the masked
    /// `input_ids`, their `labels` and the optional `token_type_ids` / `attention_mask`),
    /// sampling with the generator's current weights in `trainer`; row r draws its
    /// uniforms from `rngs[r]`, one per masked position in order.
    pub fn corrupt<S: arch_runtime::train::TrainSession>(
        &mut self,
        trainer: &mut arch_runtime::train::Trainer<S>,
        batch: &mut std::collections::HashMap<String, arch_runtime::HostTensor>,
        rngs: &mut [arch_runtime::generate::Rng],
    ) -> Result<(), String> {
        use arch_runtime::inputs::HostData;
        use arch_runtime::HostTensor;
        for (name, state) in &self.params {
            let data = trainer.tensor(state).map_err(|e| e.to_string())?;
            self.session
                .set_param(name, &data)
                .map_err(|e| e.to_string())?;
        }
        let ints = |t: &HostTensor| -> Vec<i64> {
            match &t.data {
                HostData::I64(v) => v.clone(),
                HostData::I32(v) => v.iter().map(|&x| x as i64).collect(),
                HostData::F32(v) => v.iter().map(|&x| x as i64).collect(),
            }
        };
        let ids_t = batch
            .get("input_ids")
            .ok_or("the batch has no `input_ids`")?;
        let shape = ids_t.shape.clone();
        let ids = ints(ids_t);
        let labels = ints(batch.get("labels").ok_or("RTD needs MLM `labels`")?);
        if labels.len() != ids.len() || shape.len() != 2 {
            return Err("RTD: `labels` must have the shape of `input_ids` [batch, seq]".into());
        }
        if rngs.len() != shape[0] {
            return Err(format!(
                "RTD: {} row generators for {} rows",
                rngs.len(),
                shape[0]
            ));
        }
        let inputs: std::collections::HashMap<String, HostTensor> = batch
            .iter()
            .filter(|(k, _)| {
                matches!(
                    k.as_str(),
                    "input_ids" | "token_type_ids" | "attention_mask"
                )
            })
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        let out = self
            .session
            .run("forward", &inputs)
            .map_err(|e| e.to_string())?;
        let logits = out
            .iter()
            .find(|(n, _)| n == "logits")
            .and_then(|(_, t)| t.as_f32())
            .ok_or("the generator program has no `logits`")?;
        let v = logits.len() / ids.len().max(1);
        let mut replaced = ids.clone();
        let mut fake = vec![0i64; ids.len()];
        let seq = shape[1];
        for (i, &label) in labels.iter().enumerate() {
            if label == IGNORE {
                continue;
            }
            let u = rngs[i / seq].next_f64();
            let s = sample_softmax(&logits[i * v..(i + 1) * v], u) as i64;
            replaced[i] = s;
            fake[i] = i64::from(s != label);
        }
        batch.insert(RTD_INPUT.into(), HostTensor::i64(shape.clone(), replaced));
        batch.insert(RTD_LABELS.into(), HostTensor::i64(shape, fake));
        Ok(())
    }
}

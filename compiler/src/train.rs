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

pub use crate::autodiff::loss::{cross_entropy, sequence_logp, IGNORE};

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
                return Err(
                    "training the `rtd` objective (ELECTRA's generator and discriminator) is not built yet"
                        .into(),
                )
            }
            Objective::Dpo { .. } => {
                if spec.family != Family::DecoderOnly {
                    return Err(
                        "training `dpo` is built for decoder-only models".into()
                    );
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
/// sentence-level labels [batch] of NSP / SOP.
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
            _ => {}
        }
    }
    Ok(out)
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
    let mut g = forward(
        spec,
        &ExpandOptions {
            attention_mask,
            recurrent_ssm: true,
        },
    )?;
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
            _ => unreachable!("losses() names only lm, nsp, sop and dpo"),
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
pub fn save_weights(
    trainer: &arch_runtime::train::Trainer,
    spec: &ArchSpec,
    path: &std::path::Path,
) -> Result<(), String> {
    let tensors = crate::params::param_table(spec)
        .into_iter()
        .map(|p| {
            let data = trainer.tensor(&p.name).map_err(|e| e.to_string())?;
            Ok((p.name, p.shape, data))
        })
        .collect::<Result<Vec<_>, String>>()?;
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

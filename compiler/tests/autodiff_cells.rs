//! Gradients of the two cells the other autodiff tests leave out: the TTT sublayer (whose
//! forward takes an inner gradient step, so its gradient is a second derivative of the inner
//! loss) and the S4D `ssm` sublayer (complex arithmetic, a closed-form kernel, a scan).
//!
//! - TTT against PyTorch: the tiny TTT-Linear and TTT-MLP fixtures (`tests/fixtures/ttt_*`,
//!   ttt.py's `TTTForCausalLM(input_ids, labels=input_ids)` backpropagated in float64) are
//!   expanded, given Hugging Face's causal-LM loss and differentiated with respect to every
//!   parameter; the loss and every gradient must match `grads.safetensors` (ttt.py's names
//!   mapped onto canonical ones as in `interp_ttt.rs`) to max|Δ| / max|ref| ≤ 1e-4
//!   (measured: ≤ 2.1e-6 for every tensor, the loss exact in f32).
//! - S4D against central finite differences: `ssm_layer_graph` in both forms (Toeplitz
//!   convolution and scan), both discretisations (ZOH, bilinear), at odd sizes (batch 3,
//!   seq 7, d 5, d_state 6), a weighted-sum loss of its output, with respect to each
//!   parameter and the input separately.
//! - Whole tiny language models against central finite differences: an S4 model (`ssm` +
//!   `mlp`) and TTT-Linear / TTT-MLP models at odd sizes, random weights, the LM loss, along
//!   random directions in every parameter at once and in each parameter alone.
//!
//! Difference quotients of an f32 loss are noisy; see [`fd_checks`] for how the steps are
//! chosen. `ssm_bilinear_conv_gradient_with_a_real_mode` guards against NaN gradients of a
//! bilinear mode whose A_imag is exactly 0 (the complex log once divided by zero in its
//! unused branch).

mod common;
use arch_dsl::elab::Program;
use arch_dsl::spec::{Activation, ArchSpec, Discretization, Ssm, SsmInit};
use archc::autodiff::check::{directional, directional_each, weighted_sum_loss, Directional, Rng};
use archc::autodiff::{add_lm_loss, grad, Wrt};
use archc::eval::prepare_inputs;
use archc::expand::{forward, ssm_layer_graph, ExpandOptions, BATCH, SEQ};
use archc::graph::{DType, Dim, Graph};
use archc::interp::{self, Params, Value};
use archc::params::param_table;
use archc::tensor::{F32Tensor, Tensor};
use archc::tensor_io::read_values;
use archc::weights::Weights;
use common::{canonical, fixture, random_param, random_params, spec_of, TINY_S4, TINY_TTT};
use std::collections::{BTreeMap, HashMap};
use std::path::Path;

// ---------------------------------------------------------------------------------------
// TTT against PyTorch
// ---------------------------------------------------------------------------------------

const PYTORCH_TOLERANCE: f64 = 1e-4;
/// A reference gradient this small next to the model's largest is zero up to rounding.
const ZERO: f64 = 1e-12;

/// A ttt.py-named safetensors file under canonical names, reshaped where ttt.py keeps
/// singleton axes (the element order is unchanged).
fn renamed(spec: &ArchSpec, file: &Path) -> BTreeMap<String, F32Tensor> {
    let shapes: HashMap<String, Vec<usize>> = param_table(spec)
        .into_iter()
        .map(|p| (p.name, p.shape))
        .collect();
    let mut tensors = BTreeMap::new();
    for (name, value) in read_values(file).unwrap() {
        let Value::F(t) = value else {
            panic!("`{name}` is not f32")
        };
        let ours = canonical(&name);
        let shape = shapes
            .get(&ours)
            .unwrap_or_else(|| panic!("`{name}` → `{ours}`, which the spec lacks"))
            .clone();
        assert_eq!(
            shape.iter().product::<usize>(),
            t.data.len(),
            "`{name}`: element count"
        );
        let previous = tensors.insert(
            ours.clone(),
            Tensor {
                shape,
                data: t.data,
            },
        );
        assert!(previous.is_none(), "two tensors map to `{ours}`");
    }
    tensors
}

/// The LM-loss graph of a spec: forward, then `loss` against labels `labels`.
fn lm_loss_graph(spec: &ArchSpec) -> Graph {
    let mut g = forward(spec, &ExpandOptions::default()).unwrap();
    let logits = g
        .outputs
        .iter()
        .find(|(n, _)| n == "logits")
        .expect("a logits output")
        .1;
    let labels = g.input("labels", vec![Dim::sym(BATCH), Dim::sym(SEQ)], DType::I64);
    add_lm_loss(&mut g, logits, labels);
    g.finish().unwrap()
}

/// One fixture: (what, relative error) for the loss and every parameter's gradient, the
/// worst first.
fn ttt_gradient_errors(name: &str) -> Vec<(String, f64)> {
    let dir = fixture(name);
    let spec = spec_of(&dir);
    let loaded = Weights::from_tensors(&spec, renamed(&spec, &dir.join("model.safetensors")))
        .unwrap_or_else(|e| panic!("{name}: {e}"));
    assert!(loaded.unused().is_empty(), "unused: {:?}", loaded.unused());
    let params: Params = loaded.into_tensors().into_iter().collect();

    let g = lm_loss_graph(&spec);
    let gg = grad(&g, "loss", Wrt::Params).unwrap_or_else(|e| panic!("{name}: {e}"));
    let file = read_values(&dir.join("inputs.safetensors")).unwrap();
    let ids = file["input_ids"].clone();
    let mut inputs: HashMap<String, Value> = [
        ("input_ids".to_string(), ids.clone()),
        ("labels".to_string(), ids),
    ]
    .into();
    prepare_inputs(&spec, &mut inputs).unwrap();
    let results: HashMap<String, Value> = interp::run(&gg, &inputs, &params)
        .unwrap_or_else(|e| panic!("{name}: {e}"))
        .into_iter()
        .collect();

    let expected = read_values(&dir.join("outputs.safetensors")).unwrap();
    let loss = results["loss"].as_f32().unwrap();
    let mut errors = vec![(
        "loss".to_string(),
        loss.rel_max_diff(expected["loss"].as_f32().unwrap()),
    )];
    let reference = renamed(&spec, &dir.join("grads.safetensors"));
    let mut names: Vec<&String> = reference.keys().collect();
    names.sort();
    let mut ours: Vec<&String> = params.keys().collect();
    ours.sort();
    assert_eq!(
        names, ours,
        "{name}: every parameter has a reference gradient"
    );
    let largest = reference
        .values()
        .map(|t| archc::tensor::max_abs(&t.data))
        .fold(0.0f64, f64::max);
    for (param, want) in &reference {
        let got = results
            .get(&format!("grad:{param}"))
            .unwrap_or_else(|| panic!("{name}: no gradient for `{param}`"))
            .as_f32()
            .unwrap();
        assert_eq!(got.shape, want.shape, "{name}: `{param}`");
        let max_ref = archc::tensor::max_abs(&want.data);
        if max_ref < ZERO * largest {
            // Zero in exact arithmetic: measured against the model's largest gradient, as
            // in `autodiff_models.rs` (no TTT gradient is this small today).
            let max_diff = archc::tensor::max_abs_diff(&got.data, &want.data);
            errors.push((format!("{param} (against the largest)"), max_diff / largest));
        } else {
            errors.push((param.clone(), got.rel_max_diff(want)));
        }
    }
    errors.sort_by(|a, b| b.1.total_cmp(&a.1));
    errors
}

fn check_ttt_fixture(name: &str) {
    let errors = ttt_gradient_errors(name);
    for (what, err) in &errors {
        eprintln!("{name}: {what}: {err:.2e}");
    }
    let bad: Vec<String> = errors
        .iter()
        .filter(|(_, e)| e.is_nan() || *e > PYTORCH_TOLERANCE)
        .map(|(w, e)| format!("{w}: {e:.2e}"))
        .collect();
    assert!(
        bad.is_empty(),
        "{name}: relative error above {PYTORCH_TOLERANCE:e}:\n{}",
        bad.join("\n")
    );
}

#[test]
fn ttt_linear_lm_gradients_match_pytorch() {
    check_ttt_fixture("ttt_linear");
}

#[test]
fn ttt_mlp_lm_gradients_match_pytorch() {
    check_ttt_fixture("ttt_mlp");
}

// ---------------------------------------------------------------------------------------
// Finite differences
// ---------------------------------------------------------------------------------------

const FD_TOLERANCE: f64 = 1e-2;

/// The gradient of output `loss` against central differences along random directions drawn
/// from `seed`: one direction in every variable at once (`each` false, reported as `(all)`)
/// or one direction per variable. Differences at `h` and `h/2` are combined by Richardson
/// extrapolation, `(4·D(h/2) − D(h)) / 3`, which cancels the O(h²) term: the f32 loss then
/// needs steps large enough to resolve small directional derivatives (its rounding,
/// ~1e-6 absolute, is divided by h) without paying their curvature error. Both evaluations
/// draw the same directions (same seed), so their analytic sides are equal.
fn fd_checks(
    g: &Graph,
    wrt: &Wrt,
    inputs: &HashMap<String, Value>,
    params: &Params,
    each: bool,
    h: f64,
    seed: u64,
) -> Vec<(String, Directional)> {
    let at = |h: f64| {
        if each {
            directional_each(g, "loss", wrt, inputs, params, h, seed)
        } else {
            directional(g, "loss", wrt, inputs, params, h, seed)
                .map(|d| vec![("(all)".to_string(), d)])
        }
        .unwrap_or_else(|e| panic!("{}: {e}", g.name))
    };
    let (coarse, fine) = (at(h), at(h / 2.0));
    coarse
        .into_iter()
        .zip(fine)
        .map(|((name, c), (_, f))| {
            let numeric = (4.0 * f.numeric - c.numeric) / 3.0;
            (
                name,
                Directional {
                    analytic: f.analytic,
                    numeric,
                },
            )
        })
        .collect()
}

/// Prints every check; returns those above `FD_TOLERANCE` (or NaN). Directional
/// derivatives smaller than `floor` are judged by their absolute error (≤ tolerance ·
/// floor), where the difference quotient's rounding would dominate a relative one.
fn failures(what: &str, checks: &[(String, Directional)], floor: f64) -> Vec<String> {
    let mut bad = Vec::new();
    for (var, d) in checks {
        let err = d.rel_err(floor);
        eprintln!(
            "{what}, d/d{var}: {err:.2e} ({:.6e} vs {:.6e})",
            d.analytic, d.numeric
        );
        if err.is_nan() || err > FD_TOLERANCE {
            bad.push(format!(
                "{what}, d/d{var}: analytic {} vs numeric {} (relative error {err:.2e})",
                d.analytic, d.numeric
            ));
        }
    }
    bad
}

fn assert_none(bad: Vec<String>) {
    assert!(
        bad.is_empty(),
        "relative error above {FD_TOLERANCE:e}:\n{}",
        bad.join("\n")
    );
}

// --- S4D layer --------------------------------------------------------------------------

/// The weighted-sum loss is O(1–10), its inputs and weights O(1): at this step (with
/// Richardson) the difference quotients are good to ~1e-5 absolute.
const SSM_STEP: f64 = 1e-2;
const SSM_FLOOR: f64 = 1e-3;
const SSM_PREFIX: &str = "decoder.layers.0.ssm";

fn ssm(d_state: u64, discretization: Discretization) -> Ssm {
    Ssm {
        d_state,
        discretization,
        init: SsmInit::S4dLin,
        act: Activation::Gelu,
    }
}

/// The one-layer graph's parameters, random (see [`random_param`]).
fn ssm_layer_params(rng: &mut Rng, d: usize, modes: usize, dt_range: (f64, f64)) -> Params {
    let shapes: [(&str, Vec<usize>); 7] = [
        ("D", vec![d]),
        ("log_dt", vec![d]),
        ("C", vec![d, modes, 2]),
        ("log_A_real", vec![d, modes]),
        ("A_imag", vec![d, modes]),
        ("out.weight", vec![2 * d, d]),
        ("out.bias", vec![2 * d]),
    ];
    shapes
        .iter()
        .map(|(n, s)| {
            let name = format!("{SSM_PREFIX}.{n}");
            let t = random_param(rng, &name, s, dt_range);
            (name, t)
        })
        .collect()
}

/// The one-layer graph at batch 3, seq 7, d 5, d_state 6 (3 modes) with
/// `loss = Σ y ⊙ cotangent`, and random values for its parameters, `x` and the cotangent.
fn ssm_layer_case(
    disc: Discretization,
    recurrent: bool,
    dt_range: (f64, f64),
    seed: u64,
) -> (Graph, HashMap<String, Value>, Params) {
    let (batch, seq, d, d_state) = (3, 7, 5, 6);
    let mut g = ssm_layer_graph(d as u64, &ssm(d_state as u64, disc), recurrent).unwrap();
    let y = g.outputs.iter().find(|(n, _)| n == "y").unwrap().1;
    weighted_sum_loss(&mut g, y);
    let g = g.finish().unwrap();
    let mut rng = Rng::new(seed);
    let params = ssm_layer_params(&mut rng, d, d_state / 2, dt_range);
    let inputs: HashMap<String, Value> = [
        ("x".to_string(), Value::F(rng.tensor(&[batch, seq, d]))),
        (
            "cotangent".to_string(),
            Value::F(rng.tensor(&[batch, seq, d])),
        ),
    ]
    .into();
    (g, inputs, params)
}

/// Both forms, two ranges of dt: the gradient with respect to each parameter and to x,
/// one at a time.
fn check_ssm_layer(disc: Discretization, seed: u64) {
    let mut bad = Vec::new();
    // s4d.py's dt range, then steps up to 1 where dA turns by up to π/2 a step and the
    // bilinear dA's real part can be negative (the other branch of its logarithm).
    for (k, dt_range) in [(1e-2, 1e-1), (0.1, 1.0)].into_iter().enumerate() {
        for recurrent in [false, true] {
            let seed = seed + 10 * k as u64;
            let (g, inputs, params) = ssm_layer_case(disc, recurrent, dt_range, seed);
            let fd = |wrt: &Wrt, seed| fd_checks(&g, wrt, &inputs, &params, true, SSM_STEP, seed);
            let mut checks = fd(&Wrt::Params, seed);
            checks.extend(fd(&Wrt::Inputs(vec!["x".into()]), seed + 1));
            let form = if recurrent { "recurrent" } else { "conv" };
            let what = format!("ssm {disc:?} {form}, dt in {dt_range:?}");
            bad.extend(failures(&what, &checks, SSM_FLOOR));
        }
    }
    assert_none(bad);
}

#[test]
fn ssm_layer_zoh_gradients() {
    check_ssm_layer(Discretization::Zoh, 1000);
}

#[test]
fn ssm_layer_bilinear_gradients() {
    check_ssm_layer(Discretization::Bilinear, 2000);
}

/// A mode with A_imag exactly 0 — S4D-Lin's unperturbed initialisation `A_imag = π·n` has
/// one per channel — must get finite gradients in every form. `log` in `expand/ssm.rs`
/// computes both branches of `tan(arg/2)` and selects one; the unselected branch once
/// divided by `Im dA = 0`, and the select's zero adjoint times 1/0 made `log_dt`,
/// `log_A_real` and `A_imag` NaN in the bilinear convolution form.
#[test]
fn ssm_bilinear_conv_gradient_with_a_real_mode() {
    let mut bad = Vec::new();
    for disc in [Discretization::Zoh, Discretization::Bilinear] {
        for recurrent in [false, true] {
            let (g, inputs, mut params) = ssm_layer_case(disc, recurrent, (1e-2, 1e-1), 5);
            let a_imag = params.get_mut(&format!("{SSM_PREFIX}.A_imag")).unwrap();
            let modes = a_imag.shape[1];
            for (i, v) in a_imag.data.iter_mut().enumerate() {
                *v = std::f32::consts::PI * (i % modes) as f32;
            }
            let gg = grad(&g, "loss", Wrt::Params).unwrap();
            for (name, value) in interp::run(&gg, &inputs, &params).unwrap() {
                let t = value.as_f32().unwrap();
                let n = t.data.iter().filter(|v| !v.is_finite()).count();
                if n > 0 {
                    bad.push(format!(
                        "{disc:?} (recurrent: {recurrent}) `{name}`: {n} of {} not finite",
                        t.data.len()
                    ));
                }
            }
        }
    }
    assert!(bad.is_empty(), "{}", bad.join("\n"));
}

// --- Whole tiny language models -----------------------------------------------------------

/// Per parameter tensor; the step along all of them at once is a fifth of it (that
/// direction is ~√(number of parameters) longer). The TTT models' inner gradient step makes
/// them stiff: at 1e-2 the curvature error reaches a few percent even after extrapolation.
const LM_STEP: f64 = 3e-3;
/// The LM loss is ~3 and its f32 rounding ~1e-6, so these difference quotients are good to
/// ~1e-4 absolute: smaller directional derivatives are judged by absolute error ≤ 3e-4.
const LM_FLOOR: f64 = 3e-2;

fn spec_from(source: &str, model: &str) -> ArchSpec {
    let prog = Program::from_source("cells.arch", source.to_string(), None);
    let (spec, diags) = prog.elaborate(model);
    spec.unwrap_or_else(|| panic!("{model}: {diags:?}"))
}

/// The LM loss of `model` in `source` at random weights on random ids [batch, seq] (labels
/// = ids): checked along one random direction in all parameters, then in each alone.
fn check_lm(source: &str, model: &str, (batch, seq): (usize, usize), seed: u64) -> Vec<String> {
    let spec = spec_from(source, model);
    let g = lm_loss_graph(&spec);
    let mut rng = Rng::new(seed);
    let params = random_params(&mut rng, &spec, (1e-2, 0.5));
    let ids = Tensor {
        shape: vec![batch, seq],
        data: (0..batch * seq)
            .map(|_| (rng.next_u64() % spec.vocab) as i64)
            .collect(),
    };
    let mut inputs: HashMap<String, Value> = [
        ("input_ids".to_string(), Value::I(ids.clone())),
        ("labels".to_string(), Value::I(ids)),
    ]
    .into();
    prepare_inputs(&spec, &mut inputs).unwrap();

    let what = format!("{model} LM loss");
    let fd = |each, h, seed| fd_checks(&g, &Wrt::Params, &inputs, &params, each, h, seed);
    let all = fd(false, LM_STEP / 5.0, seed);
    let mut bad = failures(&what, &all, LM_FLOOR);
    let each = fd(true, LM_STEP, seed + 1);
    bad.extend(failures(&what, &each, LM_FLOOR));
    bad
}

#[test]
fn tiny_s4_lm_gradients() {
    let mut bad = check_lm(TINY_S4, "tiny", (3, 7), 3000);
    bad.extend(check_lm(TINY_S4, "tiny_zoh", (3, 7), 3100));
    assert_none(bad);
}

#[test]
fn tiny_ttt_lm_gradients() {
    // 9 tokens: three mini-batches of 3.
    let mut bad = check_lm(TINY_TTT, "tiny_linear", (3, 9), 4000);
    bad.extend(check_lm(TINY_TTT, "tiny_mlp", (3, 9), 4100));
    assert_none(bad);
}

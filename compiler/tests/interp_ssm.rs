//! The S4D `ssm` layer in the reference evaluator: the conv form against the fixture made by
//! state-spaces/s4 `models/s4/s4d.py` (`tests/fixtures/s4d/`, from
//! `tools/make_fixtures_ttt_s4.py`) to max|out − ref| / max|ref| ≤ 1e-4, and the conv and
//! recurrent (scan) forms against each other to 1e-5 for both discretizations.

use arch_dsl::spec::{Activation, Discretization, Ssm, SsmInit};
use archc::eval::{Backend, WeightSource};
use archc::expand::ssm_layer_graph;
use archc::interp::{run, Params, Value};
use archc::tensor::{F32Tensor, Tensor};
use archc::tensor_io::read_values;
use std::collections::HashMap;
use std::path::Path;

const PREFIX: &str = "decoder.layers.0.ssm";

fn ssm(d_state: u64, discretization: Discretization) -> Ssm {
    Ssm {
        d_state,
        discretization,
        init: SsmInit::S4dLin,
        act: Activation::Gelu,
    }
}

/// Runs the one-layer graph on x [B, T, d] on the reference evaluator; returns its
/// outputs by name.
fn run_layer(
    d: u64,
    s: &Ssm,
    recurrent: bool,
    x: &F32Tensor,
    params: &Params,
) -> HashMap<String, F32Tensor> {
    run_layer_on(Backend::Interp, d, s, recurrent, x, params)
}

/// [`run_layer`] on either backend: the CPU backend compiles the graph to a package and
/// runs it with the runtime.
fn run_layer_on(
    backend: Backend,
    d: u64,
    s: &Ssm,
    recurrent: bool,
    x: &F32Tensor,
    params: &Params,
) -> HashMap<String, F32Tensor> {
    let g = ssm_layer_graph(d, s, recurrent).unwrap();
    let inputs = HashMap::from([("x".to_string(), Value::F(x.clone()))]);
    match backend {
        Backend::Interp => run(&g, &inputs, params)
            .unwrap()
            .into_iter()
            .map(|(n, v)| (n, v.as_f32().unwrap().clone()))
            .collect(),
        Backend::Cpu => {
            let dir = tempfile::tempdir().unwrap();
            let opts = archc::package::BuildOptions::host().unwrap();
            archc::package::build_graph(&g, "s4d_layer", &opts, dir.path()).unwrap();
            archc::eval::run_package_with(dir.path(), &WeightSource::Tensors(params), inputs, 2)
                .unwrap()
                .into_iter()
                .collect()
        }
        Backend::CudaSim => {
            let dir = tempfile::tempdir().unwrap();
            let opts = archc::package::BuildOptions {
                cuda: Some(80),
                sim: true,
                ..archc::package::BuildOptions::host().unwrap()
            };
            archc::package::build_graph(&g, "s4d_layer", &opts, dir.path()).unwrap();
            archc::eval::run_cuda_package(
                dir.path(),
                &WeightSource::Tensors(params),
                inputs,
                archc::eval::CudaRun::Sim,
            )
            .unwrap()
            .into_iter()
            .collect()
        }
    }
}

/// [a, b, c] → [a, c, b]
fn swap_last(t: &F32Tensor) -> F32Tensor {
    let (a, b, c) = (t.shape[0], t.shape[1], t.shape[2]);
    let mut data = vec![0f32; t.data.len()];
    for i in 0..a {
        for j in 0..b {
            for k in 0..c {
                data[(i * c + k) * b + j] = t.data[(i * b + j) * c + k];
            }
        }
    }
    Tensor {
        shape: vec![a, c, b],
        data,
    }
}

fn f32_value(v: &Value) -> F32Tensor {
    v.as_f32().unwrap().clone()
}

/// s4d.py's parameter names → the canonical ones (the k = 1 conv weight loses its last axis).
fn fixture_params(dir: &Path) -> Params {
    let model = read_values(&dir.join("model.safetensors")).unwrap();
    let names = [
        ("D", "D"),
        ("kernel.log_dt", "log_dt"),
        ("kernel.C", "C"),
        ("kernel.log_A_real", "log_A_real"),
        ("kernel.A_imag", "A_imag"),
        ("output_linear.0.weight", "out.weight"),
        ("output_linear.0.bias", "out.bias"),
    ];
    assert_eq!(
        model.len(),
        names.len(),
        "fixture parameters: {:?}",
        model.keys().collect::<Vec<_>>()
    );
    names
        .iter()
        .map(|(theirs, ours)| {
            let mut t = f32_value(&model[*theirs]);
            if *ours == "out.weight" {
                t.shape.truncate(2);
            }
            (format!("{PREFIX}.{ours}"), t)
        })
        .collect()
}

/// The CPU backend and the cuda package's thread programs (on the host simulator) on the
/// same fixture: both forms, compiled, within 1e-4 of s4d.py.
#[test]
fn cpu_backend_matches_s4d_py() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/s4d");
    let params = fixture_params(&dir);
    let u = f32_value(&read_values(&dir.join("inputs.safetensors")).unwrap()["u"]);
    let expected = read_values(&dir.join("outputs.safetensors")).unwrap();
    let d = u.shape[1] as u64;
    let d_state = 2 * params[&format!("{PREFIX}.A_imag")].shape[1] as u64;
    let s = ssm(d_state, Discretization::Zoh);
    let x = swap_last(&u);
    for (backend, recurrent) in [
        (Backend::Cpu, false),
        (Backend::Cpu, true),
        (Backend::CudaSim, false),
        (Backend::CudaSim, true),
    ] {
        let out = run_layer_on(backend, d, &s, recurrent, &x, &params);
        for name in ["y", "pre_act"] {
            let got = swap_last(&out[name]);
            let want = f32_value(&expected[name]);
            assert_eq!(got.shape, want.shape, "{name}");
            let err = got.rel_max_diff(&want);
            eprintln!("s4d fixture on {backend:?}, recurrent {recurrent}, {name}: {err:.2e}");
            assert!(
                err <= 1e-4,
                "{name} (recurrent: {recurrent}): {err:e} > 1e-4"
            );
        }
    }
}

#[test]
fn conv_and_recurrent_forms_match_s4d_py() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/s4d");
    let params = fixture_params(&dir);
    let u = f32_value(&read_values(&dir.join("inputs.safetensors")).unwrap()["u"]); // [B, H, L]
    let expected = read_values(&dir.join("outputs.safetensors")).unwrap();
    let d = u.shape[1] as u64;
    let d_state = 2 * params[&format!("{PREFIX}.A_imag")].shape[1] as u64;
    let s = ssm(d_state, Discretization::Zoh);
    let x = swap_last(&u);
    for recurrent in [false, true] {
        let out = run_layer(d, &s, recurrent, &x, &params);
        let mut compared = vec![
            ("y", swap_last(&out["y"])),
            ("pre_act", swap_last(&out["pre_act"])),
        ];
        if !recurrent {
            compared.push(("kernel", out["kernel"].clone()));
        }
        for (name, got) in compared {
            let want = f32_value(&expected[name]);
            assert_eq!(got.shape, want.shape, "{name}");
            let err = got.rel_max_diff(&want);
            eprintln!(
                "s4d fixture, {} form, {name}: relative error {err:.2e}",
                if recurrent { "recurrent" } else { "conv" }
            );
            assert!(
                err <= 1e-4,
                "{name} (recurrent: {recurrent}): relative error {err:e} > 1e-4"
            );
        }
    }
}

/// xorshift64*, uniform in [0, 1).
struct Rng(u64);

impl Rng {
    fn uniform(&mut self) -> f64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        (self.0.wrapping_mul(0x2545_f491_4f6c_dd1d) >> 11) as f64 / (1u64 << 53) as f64
    }

    fn normal(&mut self) -> f64 {
        let (a, b) = (self.uniform().max(1e-300), self.uniform());
        (-2.0 * a.ln()).sqrt() * (std::f64::consts::TAU * b).cos()
    }

    fn tensor(&mut self, shape: &[usize], f: impl Fn(&mut Rng, usize) -> f64) -> F32Tensor {
        let n = shape.iter().product();
        Tensor {
            shape: shape.to_vec(),
            data: (0..n).map(|i| f(self, i) as f32).collect(),
        }
    }
}

/// s4d.py's initialisation (S4D-Lin, dt in [dt_min, dt_max]), perturbed so that every channel
/// and mode differs.
fn random_params(rng: &mut Rng, d: usize, modes: usize, (dt_min, dt_max): (f64, f64)) -> Params {
    let mut p = Params::new();
    let mut put = |name: &str, t: F32Tensor| p.insert(format!("{PREFIX}.{name}"), t);
    put("D", rng.tensor(&[d], |r, _| r.normal()));
    put(
        "log_dt",
        rng.tensor(&[d], |r, _| {
            dt_min.ln() + r.uniform() * (dt_max.ln() - dt_min.ln())
        }),
    );
    put(
        "C",
        rng.tensor(&[d, modes, 2], |r, _| {
            r.normal() * std::f64::consts::FRAC_1_SQRT_2
        }),
    );
    put(
        "log_A_real",
        rng.tensor(&[d, modes], |r, _| 0.5f64.ln() + 0.3 * r.normal()),
    );
    put(
        "A_imag",
        rng.tensor(&[d, modes], |r, i| {
            std::f64::consts::PI * (i % modes) as f64 + 0.1 * r.normal()
        }),
    );
    put(
        "out.weight",
        rng.tensor(&[2 * d, d], |r, _| r.normal() / (d as f64).sqrt()),
    );
    put("out.bias", rng.tensor(&[2 * d], |r, _| 0.1 * r.normal()));
    p
}

/// `K ∗ u + D·u` [B, T, d] in f64 on the host, straight from the recurrence, for the
/// bilinear discretisation that the s4d.py fixture does not cover.
fn pre_act_f64(params: &Params, x: &F32Tensor, disc: Discretization) -> F32Tensor {
    let p = |n: &str| &params[&format!("{PREFIX}.{n}")].data;
    let (c, log_a_real, a_imag, log_dt, skip) =
        (p("C"), p("log_A_real"), p("A_imag"), p("log_dt"), p("D"));
    let mul = |(a, b): (f64, f64), (c, d): (f64, f64)| (a * c - b * d, a * d + b * c);
    let div = |a: (f64, f64), (c, d): (f64, f64)| {
        let (re, im) = mul(a, (c, -d));
        (re / (c * c + d * d), im / (c * c + d * d))
    };
    let (batch, seq, d) = (x.shape[0], x.shape[1], x.shape[2]);
    let modes = a_imag.len() / d;
    let mut out = x.clone();
    for (h, log_dt) in log_dt.iter().enumerate() {
        let dt = (*log_dt as f64).exp();
        for n in 0..modes {
            let i = h * modes + n;
            let a = (-(log_a_real[i] as f64).exp(), a_imag[i] as f64);
            let dta = (a.0 * dt, a.1 * dt);
            let (da, db) = match disc {
                Discretization::Zoh => {
                    let e = (dta.0.exp() * dta.1.cos(), dta.0.exp() * dta.1.sin());
                    (e, div((e.0 - 1.0, e.1), a))
                }
                Discretization::Bilinear => {
                    let minus = (1.0 - dta.0 / 2.0, -dta.1 / 2.0);
                    (
                        div((1.0 + dta.0 / 2.0, dta.1 / 2.0), minus),
                        div((dt, 0.0), minus),
                    )
                }
            };
            let cn = (c[2 * i] as f64, c[2 * i + 1] as f64);
            for b in 0..batch {
                let mut state = (0.0, 0.0);
                for t in 0..seq {
                    let at = (b * seq + t) * d + h;
                    let u = x.data[at] as f64;
                    let decayed = mul(da, state);
                    state = (decayed.0 + db.0 * u, decayed.1 + db.1 * u);
                    out.data[at] += (2.0 * mul(cn, state).0) as f32;
                }
            }
        }
    }
    for (i, v) in out.data.iter_mut().enumerate() {
        *v = (*v - x.data[i]) + (skip[i % d] as f64 * x.data[i] as f64) as f32;
    }
    out
}

#[test]
fn conv_and_recurrent_forms_agree() {
    let (batch, seq, d, d_state) = (3, 50, 5, 14);
    // s4d.py's dt range, then steps up to 2 where dA turns by more than π/2 a step (and the
    // bilinear dA's real part can go negative), which the closed form's arg must get right.
    let cases = [
        (7, Discretization::Zoh, (1e-3, 1e-1)),
        (11, Discretization::Bilinear, (1e-3, 1e-1)),
        (13, Discretization::Zoh, (0.1, 2.0)),
        (17, Discretization::Bilinear, (0.1, 2.0)),
    ];
    for (seed, disc, dt_range) in cases {
        let mut rng = Rng(0x9e37_79b9_7f4a_7c15 ^ seed);
        let params = random_params(&mut rng, d, d_state / 2, dt_range);
        let x = rng.tensor(&[batch, seq, d], |r, _| r.normal());
        let s = ssm(d_state as u64, disc);
        let conv = run_layer(d as u64, &s, false, &x, &params);
        let rec = run_layer(d as u64, &s, true, &x, &params);
        let reference = pre_act_f64(&params, &x, disc);
        for (form, out) in [("conv", &conv), ("recurrent", &rec)] {
            let err = out["pre_act"].rel_max_diff(&reference);
            eprintln!(
                "{disc:?}, dt in {dt_range:?}: {form} pre_act vs f64, relative error {err:.2e}"
            );
            assert!(
                err <= 1e-5,
                "{disc:?} {form}: relative error {err:e} > 1e-5"
            );
        }
        for name in ["pre_act", "y"] {
            let err = rec[name].rel_max_diff(&conv[name]);
            eprintln!(
                "{disc:?}, dt in {dt_range:?}: {name} recurrent vs conv, relative error {err:.2e}"
            );
            assert!(
                err <= 1e-5,
                "{disc:?} {name}: relative error {err:e} > 1e-5"
            );
        }
    }
}

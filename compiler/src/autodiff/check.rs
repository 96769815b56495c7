//! Graph + values → how far [`grad`]'s gradient is from central finite differences.
//!
//! The evaluator stores f32, so element-wise differences are noisy; [`directional`]
//! compares one number instead: the directional derivative along a random direction `u`,
//! `Σ ∇L · u` from the gradient graph against `(L(x + εu) − L(x − εu)) / 2ε`.

use super::{grad, param_shapes, Wrt};
use crate::graph::{Dim, Graph, NodeId, ReduceOp};
use crate::interp::{self, Params, Value};
use crate::tensor::{numel, F32Tensor};
use std::collections::HashMap;

/// A small seeded generator (splitmix64) for test values.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in [−1, 1).
    pub fn uniform(&mut self) -> f32 {
        ((self.next_u64() >> 40) as f64 / (1u64 << 24) as f64 * 2.0 - 1.0) as f32
    }

    pub fn tensor(&mut self, shape: &[usize]) -> F32Tensor {
        F32Tensor {
            shape: shape.to_vec(),
            data: (0..numel(shape)).map(|_| self.uniform()).collect(),
        }
    }
}

/// Both sides of a directional-derivative check.
#[derive(Clone, Copy, Debug)]
pub struct Directional {
    /// `Σ ∇L · u` from the gradient graph.
    pub analytic: f64,
    /// The central difference.
    pub numeric: f64,
}

impl Directional {
    /// `|analytic − numeric| / max(|analytic|, |numeric|, floor)`; the floor keeps a zero
    /// gradient (floor, comparisons) from dividing noise by nothing.
    pub fn rel_err(&self, floor: f64) -> f64 {
        (self.analytic - self.numeric).abs()
            / self.analytic.abs().max(self.numeric.abs()).max(floor)
    }
}

/// Appends `loss = Σ out ⊙ cotangent` with a new f32 input `cotangent` shaped like `out`:
/// a scalar whose gradient with respect to `out` is an arbitrary (caller-chosen) tensor.
pub fn weighted_sum_loss(g: &mut Graph, out: NodeId) -> NodeId {
    let shape = g.shape(out).clone();
    let w = g.input("cotangent", shape.clone(), crate::graph::DType::F32);
    let mut x = g.mul(out, w);
    for axis in (0..shape.len()).rev() {
        x = g.reduce(ReduceOp::Sum, x, axis);
    }
    let loss = if shape.is_empty() {
        x
    } else {
        g.reshape(x, Vec::<Dim>::new())
    };
    g.output("loss", loss);
    loss
}

/// Checks the gradient of output `loss` of `g` with respect to `wrt` along one random
/// direction in all of them at once (drawn from `seed`), with central differences of step
/// `step`.
pub fn directional(
    g: &Graph,
    loss: &str,
    wrt: &Wrt,
    inputs: &HashMap<String, Value>,
    params: &Params,
    step: f64,
    seed: u64,
) -> Result<Directional, String> {
    let checker = Checker::new(g, loss, wrt, inputs, params)?;
    let all = checker.names.clone();
    checker.along(&all, step, &mut Rng::new(seed))
}

/// As [`directional`], one variable (input or parameter) at a time, so that a wrong
/// gradient of a small contributor is not hidden by the others.
pub fn directional_each(
    g: &Graph,
    loss: &str,
    wrt: &Wrt,
    inputs: &HashMap<String, Value>,
    params: &Params,
    step: f64,
    seed: u64,
) -> Result<Vec<(String, Directional)>, String> {
    let checker = Checker::new(g, loss, wrt, inputs, params)?;
    let mut rng = Rng::new(seed);
    let names = checker.names.clone();
    names
        .into_iter()
        .map(|n| Ok((n.clone(), checker.along(&[n], step, &mut rng)?)))
        .collect()
}

/// The gradients, computed once, and what is needed to re-evaluate the loss.
struct Checker<'a> {
    loss_only: Graph,
    gradients: HashMap<String, Value>,
    names: Vec<String>,
    wrt: &'a Wrt,
    inputs: &'a HashMap<String, Value>,
    params: &'a Params,
}

impl<'a> Checker<'a> {
    fn new(
        g: &Graph,
        loss: &str,
        wrt: &'a Wrt,
        inputs: &'a HashMap<String, Value>,
        params: &'a Params,
    ) -> Result<Checker<'a>, String> {
        let gg = grad(g, loss, wrt.clone())?;
        let gradients = interp::run(&gg, inputs, params)?.into_iter().collect();
        let names = match wrt {
            Wrt::Params => param_shapes(g).into_iter().map(|(n, _)| n).collect(),
            Wrt::Inputs(names) => names.clone(),
        };
        let loss_only = crate::passes::keep_outputs(g, &[loss])?;
        Ok(Checker {
            loss_only,
            gradients,
            names,
            wrt,
            inputs,
            params,
        })
    }

    /// The directional derivative along a random direction in the variables `names`.
    fn along(&self, names: &[String], step: f64, rng: &mut Rng) -> Result<Directional, String> {
        let mut analytic = 0.0;
        let mut directions = Vec::new();
        for name in names {
            let gradient = self
                .gradients
                .get(&format!("grad:{name}"))
                .ok_or_else(|| format!("no gradient output for `{name}`"))?
                .as_f32()?;
            let value = match self.wrt {
                Wrt::Params => self
                    .params
                    .get(name)
                    .ok_or_else(|| format!("no parameter `{name}`"))?,
                Wrt::Inputs(_) => self
                    .inputs
                    .get(name)
                    .ok_or_else(|| format!("no input `{name}`"))?
                    .as_f32()?,
            };
            if gradient.shape != value.shape {
                return Err(format!(
                    "gradient of `{name}` has shape {:?}, the value {:?}",
                    gradient.shape, value.shape
                ));
            }
            let u = rng.tensor(&value.shape);
            analytic += gradient
                .data
                .iter()
                .zip(&u.data)
                .map(|(&a, &b)| a as f64 * b as f64)
                .sum::<f64>();
            directions.push((name.clone(), u));
        }
        let numeric =
            (self.loss_at(&directions, step)? - self.loss_at(&directions, -step)?) / (2.0 * step);
        Ok(Directional { analytic, numeric })
    }

    /// The loss with each named variable moved by `step · u`.
    fn loss_at(&self, directions: &[(String, F32Tensor)], step: f64) -> Result<f64, String> {
        let (mut inputs, mut params) = (self.inputs.clone(), self.params.clone());
        for (name, u) in directions {
            let t = match self.wrt {
                Wrt::Params => params.get_mut(name),
                Wrt::Inputs(_) => match inputs.get_mut(name) {
                    Some(Value::F(t)) => Some(t),
                    _ => None,
                },
            }
            .ok_or_else(|| format!("cannot perturb `{name}`"))?;
            for (x, d) in t.data.iter_mut().zip(&u.data) {
                *x = (*x as f64 + step * *d as f64) as f32;
            }
        }
        let out = interp::run(&self.loss_only, &inputs, &params)?;
        Ok(out[0].1.as_f32()?.data[0] as f64)
    }
}

/// A small graph under test with its values: differentiated inputs get random values,
/// fixed inputs and parameters are given or random.
pub struct Case {
    pub g: Graph,
    pub rng: Rng,
    pub inputs: HashMap<String, Value>,
    pub params: Params,
    /// The inputs to differentiate with respect to.
    pub wrt: Vec<String>,
}

impl Case {
    pub fn new(seed: u64) -> Case {
        Case {
            g: Graph::new("case"),
            rng: Rng::new(seed),
            inputs: HashMap::new(),
            params: Params::new(),
            wrt: Vec::new(),
        }
    }

    /// A differentiated f32 input of a constant shape, random in [−1, 1).
    pub fn input(&mut self, name: &str, shape: &[usize]) -> NodeId {
        let t = self.rng.tensor(shape);
        self.input_value(name, t)
    }

    /// A differentiated f32 input with the given value.
    pub fn input_value(&mut self, name: &str, t: F32Tensor) -> NodeId {
        let shape = t.shape.iter().map(|&d| Dim::c(d as u64)).collect();
        self.input_sym_value(name, shape, t)
    }

    /// A differentiated f32 input with symbolic dimensions, random of the concrete shape.
    pub fn input_sym(&mut self, name: &str, shape: Vec<Dim>, concrete: &[usize]) -> NodeId {
        let t = self.rng.tensor(concrete);
        self.input_sym_value(name, shape, t)
    }

    pub fn input_sym_value(&mut self, name: &str, shape: Vec<Dim>, t: F32Tensor) -> NodeId {
        self.wrt.push(name.to_string());
        self.fixed_sym(name, shape, t)
    }

    /// An f32 input that is not differentiated.
    pub fn fixed(&mut self, name: &str, t: F32Tensor) -> NodeId {
        let shape = t.shape.iter().map(|&d| Dim::c(d as u64)).collect();
        self.fixed_sym(name, shape, t)
    }

    pub fn fixed_sym(&mut self, name: &str, shape: Vec<Dim>, t: F32Tensor) -> NodeId {
        self.inputs.insert(name.to_string(), Value::F(t));
        self.g.input(name, shape, crate::graph::DType::F32)
    }

    /// An i64 input of random ids below `below`.
    pub fn ids(&mut self, name: &str, shape: &[usize], below: usize) -> NodeId {
        let data = (0..numel(shape))
            .map(|_| (self.rng.next_u64() % below as u64) as i64)
            .collect();
        self.inputs.insert(
            name.to_string(),
            Value::I(crate::tensor::Tensor {
                shape: shape.to_vec(),
                data,
            }),
        );
        self.g.input(
            name,
            shape.iter().map(|&d| Dim::c(d as u64)).collect(),
            crate::graph::DType::I64,
        )
    }

    /// A parameter, random in [−1, 1) scaled by `scale`.
    pub fn param(&mut self, name: &str, shape: &[usize], scale: f32) -> NodeId {
        let mut t = self.rng.tensor(shape);
        t.data.iter_mut().for_each(|v| *v *= scale);
        self.params.insert(name.to_string(), t);
        self.g
            .param(name, shape.iter().map(|&d| Dim::c(d as u64)).collect())
    }

    /// Adds `loss = Σ out ⊙ cotangent` (random cotangent) and checks the gradient with
    /// respect to each differentiated input (`Wrt::Inputs`) or each parameter.
    pub fn check(
        mut self,
        out: NodeId,
        wrt_params: bool,
        step: f64,
    ) -> Result<Vec<(String, Directional)>, String> {
        let shape = self.g.shape(out).clone();
        let bindings = self.bindings()?;
        let concrete: Vec<usize> = shape
            .iter()
            .map(|d| d.eval(&bindings))
            .collect::<Result<_, _>>()?;
        let w = self.rng.tensor(&concrete);
        self.inputs.insert("cotangent".into(), Value::F(w));
        weighted_sum_loss(&mut self.g, out);
        let g = std::mem::take(&mut self.g).finish()?;
        crate::graph::verify(&g)?;
        let wrt = if wrt_params {
            Wrt::Params
        } else {
            Wrt::Inputs(self.wrt.clone())
        };
        let seed = self.rng.next_u64();
        directional_each(&g, "loss", &wrt, &self.inputs, &self.params, step, seed)
    }

    /// Symbol sizes, from the inputs' values.
    fn bindings(&self) -> Result<HashMap<String, usize>, String> {
        let mut out = HashMap::new();
        for &id in &self.g.inputs {
            let node = self.g.node(id);
            let crate::graph::Op::Input { name } = &node.op else {
                continue;
            };
            let value = self
                .inputs
                .get(name)
                .ok_or_else(|| format!("no value for input `{name}`"))?;
            for (d, &n) in node.shape.iter().zip(value.shape()) {
                if d.as_const().is_none() && d.syms.len() == 1 && d.coef == 1 && d.div == 1 {
                    out.insert(d.syms[0].clone(), n);
                }
            }
        }
        Ok(out)
    }
}

//! Graph + inputs + parameters → outputs: the reference evaluator, the oracle every backend
//! is checked against. f32 values, f64 accumulation in reductions, matmuls and attention.
//! Clear rather than fast.

mod attention;
mod kernels;

use crate::graph::{AttnPart, DType, Graph, Node, NodeId, Op};
use crate::tensor::{F32Tensor, I64Tensor};
use std::collections::HashMap;

/// A runtime value.
#[derive(Clone, Debug, PartialEq)]
pub enum Value {
    F(F32Tensor),
    I(I64Tensor),
    /// The outputs of a scan.
    Tuple(Vec<Value>),
}

impl Value {
    pub fn shape(&self) -> &[usize] {
        match self {
            Value::F(t) => &t.shape,
            Value::I(t) => &t.shape,
            Value::Tuple(_) => &[],
        }
    }

    pub fn as_f32(&self) -> Result<&F32Tensor, String> {
        match self {
            Value::F(t) => Ok(t),
            _ => Err("expected an f32 tensor".into()),
        }
    }
}

/// Named parameters.
pub type Params = HashMap<String, F32Tensor>;

/// Runs a graph. `inputs` are matched to the graph's `input` nodes by name.
pub fn run(
    g: &Graph,
    inputs: &HashMap<String, Value>,
    params: &Params,
) -> Result<Vec<(String, Value)>, String> {
    let ordered: Vec<Value> = g
        .inputs
        .iter()
        .map(|&id| match &g.node(id).op {
            Op::Input { name } => inputs
                .get(name)
                .cloned()
                .ok_or_else(|| format!("missing input `{name}`")),
            _ => Err("graph input is not an input node".into()),
        })
        .collect::<Result<_, _>>()?;
    run_ordered(g, ordered, params)
}

/// Runs a graph with inputs given in the order of `g.inputs`.
pub fn run_ordered(
    g: &Graph,
    inputs: Vec<Value>,
    params: &Params,
) -> Result<Vec<(String, Value)>, String> {
    if inputs.len() != g.inputs.len() {
        return Err(format!(
            "graph `{}` takes {} inputs, got {}",
            g.name,
            g.inputs.len(),
            inputs.len()
        ));
    }
    let mut bindings = HashMap::new();
    let mut values: Vec<Option<Value>> = vec![None; g.nodes.len()];
    for (&id, value) in g.inputs.iter().zip(inputs) {
        bind_dims(g.node(id), &value, &mut bindings)?;
        values[id.0 as usize] = Some(value);
    }
    for (i, node) in g.nodes.iter().enumerate() {
        if values[i].is_some() {
            continue;
        }
        let args: Vec<&Value> = node
            .inputs
            .iter()
            .map(|a| {
                values[a.0 as usize]
                    .as_ref()
                    .ok_or_else(|| format!("%{} used before it is computed", a.0))
            })
            .collect::<Result<_, _>>()?;
        let v = eval_node(node, &args, &bindings, params)
            .map_err(|e| format!("graph `{}`, %{i} ({}): {e}", g.name, node.op.name()))?;
        values[i] = Some(v);
    }
    g.outputs
        .iter()
        .map(|(name, NodeId(id))| {
            values[*id as usize]
                .clone()
                .map(|v| (name.clone(), v))
                .ok_or_else(|| format!("output `{name}` not computed"))
        })
        .collect()
}

/// Learns the sizes of symbolic dimensions from an input's actual shape.
fn bind_dims(
    node: &Node,
    value: &Value,
    bindings: &mut HashMap<String, usize>,
) -> Result<(), String> {
    let name = match &node.op {
        Op::Input { name } => name.as_str(),
        _ => "?",
    };
    let actual = value.shape();
    if actual.len() != node.shape.len() {
        return Err(format!(
            "input `{name}` has rank {}, expected {}",
            actual.len(),
            node.shape.len()
        ));
    }
    match (node.dtype, value) {
        (DType::F32, Value::F(_)) | (DType::I64, Value::I(_)) => {}
        _ => return Err(format!("input `{name}` should be {}", node.dtype.name())),
    }
    for (dim, &size) in node.shape.iter().zip(actual) {
        if let Some(c) = dim.as_const() {
            if c as usize != size {
                return Err(format!(
                    "input `{name}` has size {size} where {c} is expected"
                ));
            }
        } else if dim.coef == 1 && dim.div == 1 && dim.syms.len() == 1 {
            let sym = &dim.syms[0];
            if let Some(&bound) = bindings.get(sym) {
                if bound != size {
                    return Err(format!(
                        "input `{name}`: `{sym}` is {size} here but {bound} elsewhere"
                    ));
                }
            }
            bindings.insert(sym.clone(), size);
        }
    }
    Ok(())
}

fn concrete(node: &Node, bindings: &HashMap<String, usize>) -> Result<Vec<usize>, String> {
    node.shape.iter().map(|d| d.eval(bindings)).collect()
}

fn eval_node(
    node: &Node,
    args: &[&Value],
    bindings: &HashMap<String, usize>,
    params: &Params,
) -> Result<Value, String> {
    use kernels as k;
    let f = |i: usize| args[i].as_f32();
    Ok(match &node.op {
        Op::Input { name } => return Err(format!("input `{name}` was not given")),
        Op::Param { name } => {
            let t = params
                .get(name)
                .ok_or_else(|| format!("missing parameter `{name}`"))?;
            let want = concrete(node, bindings)?;
            if t.shape != want {
                return Err(format!(
                    "parameter `{name}` has shape {:?}, expected {want:?}",
                    t.shape
                ));
            }
            Value::F(t.clone())
        }
        Op::Const { value } => Value::F(F32Tensor::scalar(*value as f32)),
        Op::Iota { axis } => Value::F(k::iota(&concrete(node, bindings)?, *axis)),
        Op::Unary(u) => Value::F(k::unary(*u, f(0)?)),
        Op::Binary(b) => Value::F(k::binary(*b, f(0)?, f(1)?)?),
        Op::Select => Value::F(k::select(f(0)?, f(1)?, f(2)?)?),
        Op::Cast => k::cast(args[0], node.dtype),
        Op::Reduce { op, axis } => Value::F(k::reduce(*op, f(0)?, *axis)?),
        Op::MatMul { transpose_b } => Value::F(k::matmul(f(0)?, f(1)?, *transpose_b)?),
        Op::Reshape => k::reshape(args[0], concrete(node, bindings)?)?,
        Op::Permute { perm } => k::permute(args[0], perm)?,
        Op::Broadcast => Value::F(k::broadcast_to(f(0)?, &concrete(node, bindings)?)?),
        Op::Shift { axis, by } => Value::F(k::shift(f(0)?, *axis, *by)),
        Op::Slice { axis, start, len } => k::slice(args[0], *axis, *start as usize, *len as usize)?,
        Op::Concat { axis } => {
            let ts: Vec<&F32Tensor> = (0..args.len()).map(f).collect::<Result<_, _>>()?;
            Value::F(k::concat(&ts, *axis)?)
        }
        Op::ScatterAdd { rows } => match args[0] {
            Value::I(ids) => Value::F(k::scatter_add(ids, f(1)?, *rows as usize)?),
            _ => return Err("scatter_add ids must be i64".into()),
        },
        Op::Gather => match args[1] {
            Value::I(ids) => Value::F(k::gather(f(0)?, ids)?),
            _ => return Err("gather ids must be i64".into()),
        },
        Op::AttentionGrad {
            mask,
            scale,
            has_bias,
            has_key_mask,
            part,
        } => {
            let lead = part.leading();
            let opt = |i: usize, on: bool| if on { f(i).map(Some) } else { Ok(None) };
            let full = *part != AttnPart::Lse;
            Value::F(attention::attention_grad(
                *part,
                f(0)?,
                f(1)?,
                opt(2, full)?,
                opt(3, full)?,
                opt(4, full)?,
                opt(5, full)?,
                opt(lead, *has_bias)?,
                opt(lead + usize::from(*has_bias), *has_key_mask)?,
                *mask,
                *scale,
            )?)
        }
        Op::Attention {
            mask,
            scale,
            has_bias,
            has_key_mask,
            ring,
        } => {
            let bias = if *has_bias { Some(f(3)?) } else { None };
            let key_mask = if *has_key_mask {
                Some(f(3 + usize::from(*has_bias))?)
            } else {
                None
            };
            match (ring, key_mask) {
                (Some(_), Some(km)) => {
                    // The keys in order of position: row p of the ring is p mod R, and
                    // the keys the ring no longer holds are masked.
                    let (k, v, km) = k::unroll_ring(f(1)?, f(2)?, km)?;
                    Value::F(attention::attention(
                        f(0)?,
                        &k,
                        &v,
                        bias,
                        Some(&km),
                        *mask,
                        *scale,
                    )?)
                }
                (Some(_), None) => return Err("ring attention without a key mask".into()),
                (None, _) => Value::F(attention::attention(
                    f(0)?,
                    f(1)?,
                    f(2)?,
                    bias,
                    key_mask,
                    *mask,
                    *scale,
                )?),
            }
        }
        Op::Scan {
            body,
            states,
            seqs,
            reverse,
        } => scan(body, args, *states, *seqs, *reverse, params)?,
        Op::TupleGet { index } => match args[0] {
            Value::Tuple(items) => items
                .get(*index)
                .cloned()
                .ok_or("scan output out of range")?,
            _ => return Err("`get` of a value that is not a tuple".into()),
        },
        Op::UpdateTail => Value::F(k::update_tail(f(0)?, f(1)?)?),
        Op::UpdateRing => {
            let seen = *args[2]
                .shape()
                .get(1)
                .ok_or("update_ring: the mask is not [B, L]")?;
            Value::F(k::update_ring(f(0)?, f(1)?, seen)?)
        }
    })
}

/// Runs a scan body once per step along axis 1 of the sequence inputs.
fn scan(
    body: &Graph,
    args: &[&Value],
    n_states: usize,
    n_seqs: usize,
    reverse: bool,
    params: &Params,
) -> Result<Value, String> {
    let mut states: Vec<Value> = args[..n_states].iter().map(|v| (*v).clone()).collect();
    let seqs: Vec<&F32Tensor> = args[n_states..n_states + n_seqs]
        .iter()
        .map(|v| v.as_f32())
        .collect::<Result<_, _>>()?;
    let consts: Vec<Value> = args[n_states + n_seqs..]
        .iter()
        .map(|v| (*v).clone())
        .collect();
    let steps = seqs
        .first()
        .and_then(|s| s.shape.get(1))
        .copied()
        .unwrap_or(0);
    let mut outputs: Vec<Vec<F32Tensor>> = Vec::new();
    let order: Vec<usize> = if reverse {
        (0..steps).rev().collect()
    } else {
        (0..steps).collect()
    };
    for t in order {
        let mut inputs = states.clone();
        for s in &seqs {
            inputs.push(Value::F(kernels::take(s, 1, t)?));
        }
        inputs.extend(consts.iter().cloned());
        let result = run_ordered(body, inputs, params)?;
        let mut it = result.into_iter().map(|(_, v)| v);
        states = it.by_ref().take(n_states).collect();
        for (j, y) in it.enumerate() {
            if outputs.len() <= j {
                outputs.push(Vec::new());
            }
            outputs[j].push(y.as_f32()?.clone());
        }
    }
    if reverse {
        outputs.iter_mut().for_each(|o| o.reverse());
    }
    let mut items = states;
    for ys in outputs {
        items.push(Value::F(kernels::stack(&ys, 1)?));
    }
    Ok(Value::Tuple(items))
}

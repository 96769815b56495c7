//! Spec + weights file + inputs → outputs through the reference evaluator: input checks
//! (ids in range, lengths within `context`, dtypes and ranks), defaults Hugging Face
//! applies (zero `token_type_ids`), only the parameters the requested outputs need.

use crate::expand::{forward, ExpandOptions};
use crate::graph::Op;
use crate::interp::{self, Value};
use crate::passes::keep_outputs;
use crate::tensor::{F32Tensor, Tensor};
use crate::weights::{load_with, LoadOptions};
use arch_dsl::spec::{ArchSpec, Family, Sublayer};
use std::collections::HashMap;
use std::path::Path;

/// Checks inputs against the spec and adds the defaults.
pub fn prepare_inputs(spec: &ArchSpec, inputs: &mut HashMap<String, Value>) -> Result<(), String> {
    let ids_shape = check_ids(spec, inputs, "input_ids")?;
    if let Some(mask) = inputs.get("attention_mask") {
        match mask {
            Value::I(m) if m.shape == ids_shape => {
                if m.data.iter().any(|&v| v != 0 && v != 1) {
                    return Err("`attention_mask` must hold only 0 and 1".into());
                }
            }
            Value::I(m) => {
                return Err(format!(
                    "`attention_mask` has shape {:?}, `input_ids` {:?}",
                    m.shape, ids_shape
                ))
            }
            _ => return Err("`attention_mask` must be an integer tensor".into()),
        }
    }
    if spec.embed.segments > 0 {
        match inputs.get("token_type_ids") {
            None => {
                inputs.insert(
                    "token_type_ids".into(),
                    Value::I(Tensor::zeros(ids_shape.clone())),
                );
            }
            Some(Value::I(t)) if t.shape == ids_shape => {
                if let Some(bad) = t
                    .data
                    .iter()
                    .find(|&&v| v < 0 || v as u64 >= spec.embed.segments)
                {
                    return Err(format!(
                        "`token_type_ids` holds {bad}, but the model has {} segments",
                        spec.embed.segments
                    ));
                }
            }
            Some(_) => {
                return Err(format!(
                    "`token_type_ids` must be an integer tensor of shape {ids_shape:?}"
                ))
            }
        }
    }
    let seq = ids_shape[1] as u64;
    for (_, stack) in spec.stacks() {
        for sub in stack.layers.iter().flat_map(|l| &l.sublayers) {
            if let Sublayer::Ttt(t) = sub {
                if !seq.is_multiple_of(t.mini_batch) {
                    return Err(format!(
                        "the sequence has {seq} tokens; a `ttt` layer with mini_batch = {} needs a multiple of it (pad the input)",
                        t.mini_batch
                    ));
                }
            }
        }
    }
    if spec.family == Family::EncoderDecoder {
        if !inputs.contains_key("decoder_input_ids") {
            return Err("an encoder-decoder model needs `decoder_input_ids`".into());
        }
        let dec = check_ids(spec, inputs, "decoder_input_ids")?;
        if dec[0] != ids_shape[0] {
            return Err(format!(
                "`decoder_input_ids` has batch {}, `input_ids` {}",
                dec[0], ids_shape[0]
            ));
        }
    }
    Ok(())
}

fn check_ids(
    spec: &ArchSpec,
    inputs: &HashMap<String, Value>,
    name: &str,
) -> Result<Vec<usize>, String> {
    let ids = match inputs.get(name) {
        Some(Value::I(t)) => t,
        Some(_) => return Err(format!("`{name}` must be an integer tensor (i64 or i32)")),
        None => return Err(format!("the inputs have no `{name}`")),
    };
    if ids.rank() != 2 {
        return Err(format!(
            "`{name}` must have shape [batch, seq], found {:?}",
            ids.shape
        ));
    }
    if ids.shape[1] as u64 > spec.context {
        return Err(format!(
            "`{name}` has {} tokens, more than the model's context of {}",
            ids.shape[1], spec.context
        ));
    }
    if ids.shape.contains(&0) {
        return Err(format!("`{name}` is empty"));
    }
    if let Some(bad) = ids.data.iter().find(|&&v| v < 0 || v as u64 >= spec.vocab) {
        return Err(format!(
            "`{name}` holds token id {bad}, outside the vocabulary of {}",
            spec.vocab
        ));
    }
    Ok(ids.shape.clone())
}

/// Runs the model on the reference evaluator, computing the named outputs (every output of
/// the forward graph when `outputs` is empty).
pub fn evaluate(
    spec: &ArchSpec,
    weights: &Path,
    mut inputs: HashMap<String, Value>,
    outputs: &[&str],
) -> Result<Vec<(String, F32Tensor)>, String> {
    prepare_inputs(spec, &mut inputs)?;
    let opts = ExpandOptions {
        attention_mask: inputs.contains_key("attention_mask"),
        ..ExpandOptions::default()
    };
    let full = forward(spec, &opts)?;
    dump("expand", &full);
    let graph = if outputs.is_empty() {
        full
    } else {
        keep_outputs(&full, outputs)?
    };
    dump("dce", &graph);
    let loaded = load_with(
        spec,
        weights,
        &LoadOptions {
            require_heads: false,
        },
    )
    .map_err(|e| e.to_string())?;
    let params: interp::Params = loaded.into_tensors().into_iter().collect();
    for node in &graph.nodes {
        if let Op::Param { name } = &node.op {
            if !params.contains_key(name) {
                return Err(format!(
                    "{}: missing tensor `{name}`, needed for the requested output",
                    weights.display()
                ));
            }
        }
    }
    let graph_inputs: HashMap<String, Value> = graph
        .inputs
        .iter()
        .filter_map(|&id| match &graph.node(id).op {
            Op::Input { name } => inputs.get(name).map(|v| (name.clone(), v.clone())),
            _ => None,
        })
        .collect();
    let results = interp::run(&graph, &graph_inputs, &params)?;
    results
        .into_iter()
        .map(|(n, v)| v.as_f32().map(|t| (n, t.clone())))
        .collect()
}

/// `ARCHC_DUMP=<stage>` prints the IR after that stage (`expand`, `dce`) to stderr.
fn dump(stage: &str, graph: &crate::graph::Graph) {
    if std::env::var("ARCHC_DUMP").is_ok_and(|s| s == stage || s == "all") {
        eprintln!("// ARCHC_DUMP={stage}\n{}", crate::graph::print(graph));
    }
}

/// Which engine runs a model.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// Generated code: build (or fetch from the cache) a package and run it.
    Cpu,
    /// The reference evaluator.
    Interp,
    /// A cuda package on the runtime's host simulator (its thread programs on this CPU).
    CudaSim,
}

/// Runs the model with the CPU backend: the package for these outputs (cached), the
/// runtime, `threads` threads (0: one per core).
pub fn evaluate_cpu(
    spec: &ArchSpec,
    weights: &Path,
    mut inputs: HashMap<String, Value>,
    outputs: &[&str],
    threads: usize,
) -> Result<Vec<(String, F32Tensor)>, String> {
    prepare_inputs(spec, &mut inputs)?;
    let mut opts = crate::package::BuildOptions::for_weights(spec, weights)?;
    opts.attention_mask = inputs.contains_key("attention_mask");
    opts.outputs = outputs.iter().map(|s| s.to_string()).collect();
    let built = crate::package::build(spec, &opts, None)?;
    run_package(&built.dir, Some(weights), inputs, threads)
}

/// Where a package's weights come from.
pub enum WeightSource<'a> {
    /// A safetensors checkpoint (canonical or Hugging Face names).
    File(&'a Path),
    /// Tensors under canonical names.
    Tensors(&'a interp::Params),
    /// Deterministic random values (benchmarks).
    Random,
}

/// Runs a built package on `inputs` with the weights at `weights` (random ones when
/// `None`); the outputs in manifest order.
pub fn run_package(
    dir: &Path,
    weights: Option<&Path>,
    inputs: HashMap<String, Value>,
    threads: usize,
) -> Result<Vec<(String, F32Tensor)>, String> {
    let source = match weights {
        Some(p) => WeightSource::File(p),
        None => WeightSource::Random,
    };
    run_package_with(dir, &source, inputs, threads)
}

/// [`run_package`] with weights from any [`WeightSource`].
pub fn run_package_with(
    dir: &Path,
    weights: &WeightSource,
    inputs: HashMap<String, Value>,
    threads: usize,
) -> Result<Vec<(String, F32Tensor)>, String> {
    use arch_runtime::{Package, Session, Weights};
    if arch_runtime::Manifest::read(dir).is_ok_and(|m| m.target.kind == "cuda") {
        return run_cuda_package(dir, weights, inputs, CudaRun::Gpu);
    }
    let package = Package::load(dir).map_err(|e| e.to_string())?;
    let w = match weights {
        WeightSource::File(p) => Weights::open(package.manifest(), p),
        WeightSource::Random => Weights::random(package.manifest(), 0),
        WeightSource::Tensors(params) => Weights::from_tensors(
            package.manifest(),
            params
                .iter()
                .map(|(n, t)| (n.clone(), t.data.clone()))
                .collect(),
        ),
    }
    .map_err(|e| e.to_string())?;
    let mut session = Session::new(package, w, threads).map_err(|e| e.to_string())?;
    let out = session
        .run("forward", &to_host(inputs))
        .map_err(|e| e.to_string())?;
    from_host(out)
}

fn to_host(inputs: HashMap<String, Value>) -> HashMap<String, arch_runtime::HostTensor> {
    use arch_runtime::HostTensor;
    inputs
        .into_iter()
        .filter_map(|(n, v)| match v {
            Value::F(t) => Some((n, HostTensor::f32(t.shape, t.data))),
            Value::I(t) => Some((n, HostTensor::i64(t.shape, t.data))),
            Value::Tuple(_) => None,
        })
        .collect()
}

fn from_host(
    out: Vec<(String, arch_runtime::HostTensor)>,
) -> Result<Vec<(String, F32Tensor)>, String> {
    out.into_iter()
        .map(|(n, t)| match t.data {
            arch_runtime::HostData::F32(d) => Ok((
                n,
                Tensor {
                    shape: t.shape,
                    data: d,
                },
            )),
            _ => Err(format!("output `{n}` is not f32")),
        })
        .collect()
}

/// Where a cuda package runs: the GPU (through the CUDA driver), or the runtime's host
/// simulator (the package's `kernels.sim.so`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CudaRun {
    Gpu,
    Sim,
}

/// Runs the forward entry of the cuda package in `dir`.
pub fn run_cuda_package(
    dir: &Path,
    weights: &WeightSource,
    inputs: HashMap<String, Value>,
    run: CudaRun,
) -> Result<Vec<(String, F32Tensor)>, String> {
    use arch_runtime::device::{open_device, read_cuda_manifest, DeviceSession};
    use arch_runtime::Weights;
    let m = read_cuda_manifest(dir).map_err(|e| e.to_string())?;
    let device = open_device(dir, &m, run == CudaRun::Sim, 0).map_err(|e| e.to_string())?;
    let w = match weights {
        WeightSource::File(p) => Weights::open(&m, p),
        WeightSource::Random => Weights::random(&m, 0),
        WeightSource::Tensors(params) => Weights::from_tensors(
            &m,
            params
                .iter()
                .map(|(n, t)| (n.clone(), t.data.clone()))
                .collect(),
        ),
    }
    .map_err(|e| e.to_string())?;
    let mut session = DeviceSession::new(m, &w, device).map_err(|e| e.to_string())?;
    let out = session
        .run("forward", &to_host(inputs))
        .map_err(|e| e.to_string())?;
    from_host(out)
}

/// [`evaluate_cpu`] on a cuda package (PTX for sm_80, which sm_90 GPUs run too), on the
/// GPU or on the host simulator, its matmuls' operands in `dtype` (`f32`, `bf16`, `f16`:
/// [`crate::package::BuildOptions::set_dtype`]).
pub fn evaluate_cuda(
    spec: &ArchSpec,
    weights: &Path,
    mut inputs: HashMap<String, Value>,
    outputs: &[&str],
    run: CudaRun,
    dtype: &str,
) -> Result<Vec<(String, F32Tensor)>, String> {
    if run == CudaRun::Gpu {
        // Before building: no driver is the common case, and says so at once.
        arch_runtime::device::cuda::driver_present().map_err(|e| e.to_string())?;
    }
    prepare_inputs(spec, &mut inputs)?;
    let mut opts = crate::package::BuildOptions::for_weights(spec, weights)?;
    opts.attention_mask = inputs.contains_key("attention_mask");
    opts.outputs = outputs.iter().map(|s| s.to_string()).collect();
    opts.cuda = Some(80);
    opts.sim = run == CudaRun::Sim;
    opts.set_dtype(spec, dtype)?;
    let built = crate::package::build(spec, &opts, None)?;
    run_cuda_package(&built.dir, &WeightSource::File(weights), inputs, run)
}

/// [`evaluate_cpu`] through the CUDA backend's thread programs run by the host simulator
/// (`backend::cuda::sim`): what a GPU would compute, checked on any machine. `params`
/// holds every parameter under its canonical name.
pub fn evaluate_cuda_sim(
    spec: &ArchSpec,
    params: &interp::Params,
    inputs: HashMap<String, Value>,
) -> Result<Vec<(String, F32Tensor)>, String> {
    evaluate_cuda_sim_with(spec, params, inputs, None)
}

/// [`evaluate_cuda_sim`] with the matmul tiles' products in `half_matmul` (`BF16` or
/// `F16`: operands rounded to it, f32 accumulation; `--dtype`) when given. The
/// parameters stay f32 in memory (a `--dtype` build stores the matrices in the half type:
/// the same values once rounded).
pub fn evaluate_cuda_sim_with(
    spec: &ArchSpec,
    params: &interp::Params,
    mut inputs: HashMap<String, Value>,
    half_matmul: Option<arch_runtime::gguf::GgmlType>,
) -> Result<Vec<(String, F32Tensor)>, String> {
    use crate::backend::cuda::sim::{SimData, Simulator};
    prepare_inputs(spec, &mut inputs)?;
    let opts = crate::package::BuildOptions {
        attention_mask: inputs.contains_key("attention_mask"),
        ..crate::package::BuildOptions::host()?
    };
    let graph = crate::package::package_graph(spec, &opts)?;
    let mut prog = crate::package::package_program(&graph)?;
    prog.half_matmul = half_matmul;
    if let Some(ty) = half_matmul {
        crate::kernel::quant::store_activations(&mut prog, ty, &[]);
    }
    // Symbols from the input shapes.
    let mut bind: HashMap<String, usize> = HashMap::new();
    for (name, _, shape) in &prog.inputs {
        let given = match inputs.get(name) {
            Some(Value::I(t)) => &t.shape,
            Some(Value::F(t)) => &t.shape,
            _ => return Err(format!("the program needs input `{name}` as a tensor")),
        };
        for (d, &n) in shape.iter().zip(given) {
            if let ([s], 1, 1) = (d.syms.as_slice(), d.coef, d.div) {
                bind.insert(s.clone(), n);
            }
        }
    }
    let dims: Vec<i64> = prog
        .syms
        .iter()
        .map(|s| {
            bind.get(s)
                .map(|&v| v as i64)
                .ok_or_else(|| format!("symbol `{s}` is not bound by the inputs"))
        })
        .collect::<Result<_, _>>()?;
    let mut bufs: Vec<SimData> = prog
        .buffers
        .iter()
        .map(|b| {
            let n = b.elems.eval(&bind)?;
            Ok(if b.i64 {
                SimData::I64(vec![0; n])
            } else {
                SimData::F32(vec![0.0; n])
            })
        })
        .collect::<Result<_, String>>()?;
    for (name, id, _) in &prog.inputs {
        match (inputs.get(name), &mut bufs[*id]) {
            (Some(Value::I(t)), SimData::I64(v)) if v.len() == t.data.len() => {
                v.copy_from_slice(&t.data)
            }
            (Some(Value::F(t)), SimData::F32(v)) if v.len() == t.data.len() => {
                v.copy_from_slice(&t.data)
            }
            _ => return Err(format!("input `{name}` does not match its buffer")),
        }
    }
    for (name, id, _) in &prog.params {
        let t = params
            .get(name)
            .ok_or_else(|| format!("no parameter `{name}`"))?;
        match &mut bufs[*id] {
            SimData::F32(v) if v.len() == t.data.len() => v.copy_from_slice(&t.data),
            _ => return Err(format!("parameter `{name}` has {} values", t.data.len())),
        }
    }
    Simulator::new(&prog)?.run(&dims, &mut bufs)?;
    prog.outputs
        .iter()
        .map(|(name, id, shape)| {
            let shape = shape
                .iter()
                .map(|d| d.eval(&bind))
                .collect::<Result<Vec<_>, _>>()?;
            match &bufs[*id] {
                SimData::F32(v) => Ok((
                    name.clone(),
                    Tensor {
                        shape,
                        data: v.clone(),
                    },
                )),
                SimData::I64(_) => Err(format!("output `{name}` is not f32")),
            }
        })
        .collect()
}

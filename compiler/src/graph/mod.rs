//! The graph IR: a dataflow graph in an arena with typed ids, symbolic dimensions and
//! dtypes. Built by expansion, transformed by passes, evaluated by `interp`, printed and
//! read back as text.

pub mod dim;
pub mod op;
mod print;
mod read;
mod verify;

pub use dim::{Dim, Shape};
pub use op::{AttnPart, BinaryOp, DType, MaskKind, Op, ReduceOp, UnaryOp};
pub use print::print;
pub use read::read;
pub use verify::verify;

/// Index of a node in its graph.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct NodeId(pub u32);

#[derive(Clone, Debug, PartialEq)]
pub struct Node {
    pub op: Op,
    pub inputs: Vec<NodeId>,
    pub shape: Shape,
    pub dtype: DType,
}

/// A graph: nodes in topological order (inputs before uses), named outputs.
#[derive(Clone, Debug, PartialEq, Default)]
pub struct Graph {
    pub name: String,
    pub nodes: Vec<Node>,
    /// The `input` nodes, in the order callers pass them (a scan body's order matters).
    pub inputs: Vec<NodeId>,
    pub outputs: Vec<(String, NodeId)>,
    /// The first construction error; later nodes are placeholders.
    pub error: Option<String>,
}

impl Graph {
    pub fn new(name: &str) -> Graph {
        Graph {
            name: name.to_string(),
            ..Graph::default()
        }
    }

    pub fn node(&self, id: NodeId) -> &Node {
        &self.nodes[id.0 as usize]
    }

    pub fn shape(&self, id: NodeId) -> &Shape {
        &self.node(id).shape
    }

    /// Appends a node whose shape follows from the op's shape rule.
    pub fn push(
        &mut self,
        op: Op,
        inputs: Vec<NodeId>,
        given: Option<Shape>,
        dtype: DType,
    ) -> NodeId {
        let shapes: Vec<Shape> = inputs.iter().map(|&i| self.shape(i).clone()).collect();
        let shape = match op::infer_shape(&op, &shapes, given.as_ref()) {
            Ok(s) => s,
            Err(e) => {
                if self.error.is_none() {
                    self.error = Some(format!("{} (node %{}): {e}", op.name(), self.nodes.len()));
                }
                given.unwrap_or_default()
            }
        };
        self.nodes.push(Node {
            op,
            inputs,
            shape,
            dtype,
        });
        NodeId(self.nodes.len() as u32 - 1)
    }

    /// The graph, or the first error made while building it.
    pub fn finish(self) -> Result<Graph, String> {
        match &self.error {
            Some(e) => Err(format!("graph `{}`: {e}", self.name)),
            None => Ok(self),
        }
    }

    pub fn output(&mut self, name: &str, id: NodeId) {
        self.outputs.push((name.to_string(), id));
    }

    pub fn input(&mut self, name: &str, shape: Shape, dtype: DType) -> NodeId {
        let id = self.push(
            Op::Input {
                name: name.to_string(),
            },
            vec![],
            Some(shape),
            dtype,
        );
        self.inputs.push(id);
        id
    }

    /// Copies `other`'s nodes into this graph and returns `other`'s outputs as nodes here.
    /// Its inputs become inputs named by `input` (one node per name: an input already here
    /// of that name is used, and must have the same shape and dtype); its parameters are
    /// renamed by `param` (nodes of the same parameter are merged later by `simplify`).
    /// How two models become one graph (ELECTRA's generator and discriminator).
    pub fn append(
        &mut self,
        other: &Graph,
        input: &dyn Fn(&str) -> String,
        param: &dyn Fn(&str) -> String,
    ) -> Vec<(String, NodeId)> {
        if let Some(e) = &other.error {
            self.error.get_or_insert_with(|| e.clone());
        }
        let mut map: Vec<NodeId> = Vec::with_capacity(other.nodes.len());
        for n in &other.nodes {
            let id = match &n.op {
                Op::Input { name } => {
                    let name = input(name);
                    let here =
                        self.inputs.iter().copied().find(
                            |&i| matches!(&self.node(i).op, Op::Input { name: m } if *m == name),
                        );
                    match here {
                        Some(i) => {
                            let h = self.node(i);
                            if h.shape != n.shape || h.dtype != n.dtype {
                                let msg = format!(
                                    "input `{name}` is {:?} {:?} here and {:?} {:?} in graph `{}`",
                                    h.dtype, h.shape, n.dtype, n.shape, other.name
                                );
                                self.error.get_or_insert(msg);
                            }
                            i
                        }
                        None => self.input(&name, n.shape.clone(), n.dtype),
                    }
                }
                Op::Param { name } => self.push(
                    Op::Param { name: param(name) },
                    vec![],
                    Some(n.shape.clone()),
                    n.dtype,
                ),
                op => {
                    if let Op::Scan { body, .. } = op {
                        if body.nodes.iter().any(|b| matches!(b.op, Op::Param { .. })) {
                            self.error.get_or_insert_with(|| {
                                format!("graph `{}`: a scan body reads a parameter, which append cannot rename", other.name)
                            });
                        }
                    }
                    self.nodes.push(Node {
                        op: op.clone(),
                        inputs: n.inputs.iter().map(|i| map[i.0 as usize]).collect(),
                        shape: n.shape.clone(),
                        dtype: n.dtype,
                    });
                    NodeId(self.nodes.len() as u32 - 1)
                }
            };
            map.push(id);
        }
        other
            .outputs
            .iter()
            .map(|(n, id)| (n.clone(), map[id.0 as usize]))
            .collect()
    }

    pub fn param(&mut self, name: &str, shape: Shape) -> NodeId {
        self.push(
            Op::Param {
                name: name.to_string(),
            },
            vec![],
            Some(shape),
            DType::F32,
        )
    }

    pub fn constant(&mut self, value: f64) -> NodeId {
        self.push(Op::Const { value }, vec![], None, DType::F32)
    }

    pub fn iota(&mut self, shape: Shape, axis: usize) -> NodeId {
        self.push(Op::Iota { axis }, vec![], Some(shape), DType::F32)
    }

    pub fn unary(&mut self, op: UnaryOp, x: NodeId) -> NodeId {
        self.push(Op::Unary(op), vec![x], None, DType::F32)
    }

    pub fn binary(&mut self, op: BinaryOp, a: NodeId, b: NodeId) -> NodeId {
        self.push(Op::Binary(op), vec![a, b], None, DType::F32)
    }

    pub fn add(&mut self, a: NodeId, b: NodeId) -> NodeId {
        self.binary(BinaryOp::Add, a, b)
    }

    pub fn sub(&mut self, a: NodeId, b: NodeId) -> NodeId {
        self.binary(BinaryOp::Sub, a, b)
    }

    pub fn mul(&mut self, a: NodeId, b: NodeId) -> NodeId {
        self.binary(BinaryOp::Mul, a, b)
    }

    pub fn div(&mut self, a: NodeId, b: NodeId) -> NodeId {
        self.binary(BinaryOp::Div, a, b)
    }

    /// `x * c` for a constant `c`.
    pub fn scale(&mut self, x: NodeId, c: f64) -> NodeId {
        let c = self.constant(c);
        self.mul(x, c)
    }

    /// `x * a + b` for constants `a`, `b`.
    pub fn scale_add(&mut self, x: NodeId, a: f64, b: f64) -> NodeId {
        let y = if a == 1.0 { x } else { self.scale(x, a) };
        if b == 0.0 {
            y
        } else {
            let c = self.constant(b);
            self.add(y, c)
        }
    }

    pub fn select(&mut self, cond: NodeId, a: NodeId, b: NodeId) -> NodeId {
        self.push(Op::Select, vec![cond, a, b], None, DType::F32)
    }

    pub fn cast(&mut self, x: NodeId, to: DType) -> NodeId {
        self.push(Op::Cast, vec![x], None, to)
    }

    pub fn reduce(&mut self, op: ReduceOp, x: NodeId, axis: usize) -> NodeId {
        self.push(Op::Reduce { op, axis }, vec![x], None, DType::F32)
    }

    /// `x @ wᵀ` for a `[out, in]` weight.
    pub fn linear(&mut self, x: NodeId, w: NodeId) -> NodeId {
        self.push(
            Op::MatMul { transpose_b: true },
            vec![x, w],
            None,
            DType::F32,
        )
    }

    pub fn matmul(&mut self, a: NodeId, b: NodeId, transpose_b: bool) -> NodeId {
        self.push(Op::MatMul { transpose_b }, vec![a, b], None, DType::F32)
    }

    pub fn reshape(&mut self, x: NodeId, shape: Shape) -> NodeId {
        let dtype = self.node(x).dtype;
        self.push(Op::Reshape, vec![x], Some(shape), dtype)
    }

    pub fn permute(&mut self, x: NodeId, perm: &[usize]) -> NodeId {
        let dtype = self.node(x).dtype;
        self.push(
            Op::Permute {
                perm: perm.to_vec(),
            },
            vec![x],
            None,
            dtype,
        )
    }

    pub fn broadcast(&mut self, x: NodeId, shape: Shape) -> NodeId {
        let dtype = self.node(x).dtype;
        self.push(Op::Broadcast, vec![x], Some(shape), dtype)
    }

    pub fn shift(&mut self, x: NodeId, axis: usize, by: i64) -> NodeId {
        self.push(Op::Shift { axis, by }, vec![x], None, DType::F32)
    }

    pub fn slice(&mut self, x: NodeId, axis: usize, start: u64, len: u64) -> NodeId {
        let dtype = self.node(x).dtype;
        self.push(Op::Slice { axis, start, len }, vec![x], None, dtype)
    }

    pub fn concat(&mut self, xs: Vec<NodeId>, axis: usize) -> NodeId {
        self.push(Op::Concat { axis }, xs, None, DType::F32)
    }

    /// `out[v] = Σ_{n: ids[n] = v} updates[n]`: ids [N] i64, updates [N, W] → [rows, W].
    pub fn scatter_add(&mut self, ids: NodeId, updates: NodeId, rows: u64) -> NodeId {
        self.push(
            Op::ScatterAdd { rows },
            vec![ids, updates],
            None,
            DType::F32,
        )
    }

    pub fn gather(&mut self, table: NodeId, ids: NodeId) -> NodeId {
        self.push(Op::Gather, vec![table, ids], None, DType::F32)
    }

    /// A scan; returns one node per output (final states, then stacked step outputs).
    pub fn scan(
        &mut self,
        body: Graph,
        states: Vec<NodeId>,
        seqs: Vec<NodeId>,
        consts: Vec<NodeId>,
        reverse: bool,
    ) -> Vec<NodeId> {
        let seq_dim = seqs
            .first()
            .and_then(|&s| self.shape(s).get(1).cloned())
            .unwrap_or(Dim::c(1));
        let outputs: Vec<(Shape, DType)> = body
            .outputs
            .iter()
            .enumerate()
            .map(|(i, (_, id))| {
                let mut s = body.shape(*id).clone();
                if i >= states.len() {
                    s.insert(1.min(s.len()), seq_dim.clone());
                }
                (s, body.node(*id).dtype)
            })
            .collect();
        let n_states = states.len();
        let n_seqs = seqs.len();
        let inputs: Vec<NodeId> = states.into_iter().chain(seqs).chain(consts).collect();
        let scan = self.push(
            Op::Scan {
                body: Box::new(body),
                states: n_states,
                seqs: n_seqs,
                reverse,
            },
            inputs,
            None,
            DType::F32,
        );
        outputs
            .into_iter()
            .enumerate()
            .map(|(index, (shape, dtype))| {
                self.push(Op::TupleGet { index }, vec![scan], Some(shape), dtype)
            })
            .collect()
    }
}

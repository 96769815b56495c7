//! Stack and block sections → per-layer sublayer lists: `layers = n` with sublayers written
//! in the stack, or `stack = [a * 3, b] * 8` over blocks elaborated in the model's scope.

use super::record::{RecordId, Written};
use super::typed::{Elaborator, Sec};
use crate::ast::{BinOp, Expr, ExprKind};
use crate::diag::{did_you_mean, Diagnostic};
use crate::source::Span;
use crate::spec::*;

/// The sublayer kinds, as written.
pub const SUBLAYERS: &[&str] = &[
    "attention",
    "cross_attention",
    "mlp",
    "mamba",
    "time_mix",
    "channel_mix",
    "ssm",
    "ttt",
];

/// More layers than this is certainly a mistake, and would exhaust memory.
const MAX_LAYERS: u64 = 100_000;

/// Model-wide values a stack needs.
pub struct StackCx {
    pub d_model: u64,
    /// False when `d_model` is missing or wrong: checks derived from it are skipped.
    pub d_model_ok: bool,
    pub context: u64,
    pub position: Position,
    pub position_span: Option<Span>,
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum StackKind {
    Encoder,
    Decoder,
    /// The decoder of an encoder-decoder model: it may hold `cross_attention`.
    CrossDecoder,
}

impl<'a> Elaborator<'a> {
    pub fn read_stack(
        &mut self,
        parent: &Sec,
        name: &'static str,
        cx: &StackCx,
        kind: StackKind,
    ) -> Option<Stack> {
        let mut sec = self.subsection(parent, name)?;
        sec.known_sections = SUBLAYERS.to_vec();
        let share = match self.word_field(&mut sec, "share", &["none", "all"]) {
            Some(("all", _)) => Share::All,
            _ => Share::None,
        };
        let layers = match self.binding(&mut sec, "stack") {
            Some(b) => self.stack_of_blocks(&mut sec, b.expr, b.span, cx, kind),
            None => {
                let n = self.int_req(&mut sec, "layers", 1);
                let sublayers = self.read_sublayers(&sec, cx, kind);
                if n > MAX_LAYERS {
                    self.too_many_layers(sec.span, n);
                    None
                } else if sublayers.is_empty() && self.recs.all[sec.id].sections.is_empty() {
                    let d = Diagnostic::error(sec.span, format!("`{name}` has no sublayers"))
                        .with_label("a layer needs at least one sublayer")
                        .with_help("add e.g. `attention { heads = … }` and `mlp { hidden = … }`, or `stack = [...]`");
                    self.diags.push(d);
                    None
                } else {
                    Some(vec![
                        Layer {
                            block: None,
                            sublayers
                        };
                        n as usize
                    ])
                }
            }
        };
        self.finish_section(&sec);
        let layers = layers?;
        if share == Share::All && layers.windows(2).any(|w| w[0].sublayers != w[1].sublayers) {
            let d = Diagnostic::error(sec.span, "`share = all` needs identical layers")
                .with_label("this stack mixes different layers")
                .with_help("one set of weights can only serve layers of the same shape");
            self.diags.push(d);
        }
        Some(Stack { share, layers })
    }

    fn too_many_layers(&mut self, span: Span, n: u64) {
        let d = Diagnostic::error(span, format!("{n} layers is too many"))
            .with_label(format!("at most {MAX_LAYERS} layers"));
        self.diags.push(d);
    }

    fn stack_of_blocks(
        &mut self,
        sec: &mut Sec,
        expr: &'a Expr,
        span: Span,
        cx: &StackCx,
        kind: StackKind,
    ) -> Option<Vec<Layer>> {
        let mut clash = false;
        if let Some(b) = self.binding(sec, "layers") {
            let d = Diagnostic::error(b.span, "`layers` cannot be written beside `stack`")
                .with_label("the stack's length is the number of layers")
                .with_related(span, "the stack");
            self.diags.push(d);
            clash = true;
        }
        let written: Vec<(String, Span)> = self.recs.all[sec.id]
            .sections
            .iter()
            .map(|(n, _, s)| (n.clone(), *s))
            .collect();
        for (n, s) in written
            .iter()
            .filter(|(n, _)| SUBLAYERS.contains(&n.as_str()))
        {
            let d = Diagnostic::error(
                *s,
                format!("sublayer `{n}` cannot be written beside `stack`"),
            )
            .with_label("put it in a block")
            .with_related(span, "the stack");
            self.diags.push(d);
            clash = true;
        }
        let blocks = self.block_list(expr, &sec.scope.clone())?;
        if blocks.is_empty() {
            self.diags.push(
                Diagnostic::error(expr.span, "the stack is empty")
                    .with_label("needs at least one block"),
            );
            return None;
        }
        let root = sec.scope[0];
        let mut layers = Vec::with_capacity(blocks.len());
        for (name, use_span) in blocks {
            let sublayers = self.block_sublayers(&name, use_span, root, cx, kind)?;
            layers.push(Layer {
                block: Some(name),
                sublayers,
            });
        }
        (!clash).then_some(layers)
    }

    /// Evaluates `stack`: block names, lists (which flatten) and repetition `x * n`.
    fn block_list(&mut self, expr: &'a Expr, scope: &[RecordId]) -> Option<Vec<(String, Span)>> {
        match &expr.kind {
            ExprKind::Name(n) if self.prog.block_item(n).is_some() => {
                Some(vec![(n.clone(), expr.span)])
            }
            ExprKind::Name(n) => {
                let mut d = Diagnostic::error(expr.span, format!("no block named `{n}`"))
                    .with_label("not a block");
                d = d.with_help_opt(did_you_mean(
                    n,
                    self.prog.defs.blocks.keys().map(String::as_str),
                ));
                self.diags.push(d);
                None
            }
            ExprKind::Paren(inner) => self.block_list(inner, scope),
            ExprKind::List(items) => {
                let mut out = Vec::new();
                let mut ok = true;
                for item in items {
                    match self.block_list(item, scope) {
                        Some(part) => out.extend(part),
                        None => ok = false,
                    }
                    if out.len() as u64 > MAX_LAYERS {
                        self.too_many_layers(expr.span, out.len() as u64);
                        return None;
                    }
                }
                ok.then_some(out)
            }
            ExprKind::Binary {
                op: BinOp::Mul,
                lhs,
                rhs,
            } => {
                // `x * n` is the usual order; `n * x` is read when only the right side is blocks.
                let (blocks, count) = if self.is_blockish(rhs) && !self.is_blockish(lhs) {
                    (rhs, lhs)
                } else {
                    (lhs, rhs)
                };
                let part = self.block_list(blocks, scope)?;
                let value = self.eval(count, scope)?;
                let n = match self.integral(&value) {
                    Some(n) if n >= 0 => n as u64,
                    _ => {
                        let d = Diagnostic::error(
                            count.span,
                            format!("a repeat count must be an integer ≥ 0, found {value}"),
                        )
                        .with_label("repeat count");
                        self.diags.push(d);
                        return None;
                    }
                };
                let total = (part.len() as u64).saturating_mul(n);
                if total > MAX_LAYERS {
                    self.too_many_layers(expr.span, total);
                    return None;
                }
                Some(part.iter().cloned().cycle().take(total as usize).collect())
            }
            _ => {
                let d =
                    Diagnostic::error(expr.span, "expected a block, a list of blocks, or `x * n`")
                        .with_label("not a stack")
                        .with_help("e.g. `stack = [mamba_mlp * 3, attn_mlp] * 8`");
                self.diags.push(d);
                None
            }
        }
    }

    fn is_blockish(&self, expr: &Expr) -> bool {
        match &expr.kind {
            ExprKind::Name(n) => self.prog.block_item(n).is_some(),
            ExprKind::List(_) => true,
            ExprKind::Paren(inner) => self.is_blockish(inner),
            ExprKind::Binary {
                op: BinOp::Mul,
                lhs,
                rhs,
            } => self.is_blockish(lhs) || self.is_blockish(rhs),
            _ => false,
        }
    }

    /// The sublayers of a block, elaborated in the using model's scope (once per model).
    fn block_sublayers(
        &mut self,
        name: &str,
        use_span: Span,
        root: RecordId,
        cx: &StackCx,
        kind: StackKind,
    ) -> Option<Vec<Sublayer>> {
        let key = format!("{kind:?}/{name}");
        if let Some(cached) = self.block_cache.get(&key) {
            return cached.clone();
        }
        let item = self.prog.block_item(name)?;
        let id = self.recs.new_record();
        let mut written = Written::default();
        self.recs
            .apply(id, &item.members, &[], &mut written, &mut self.diags);
        let sec = Sec {
            id,
            scope: vec![root, id],
            what: format!("block `{name}`"),
            span: item.name.span,
            known: Vec::new(),
            known_sections: SUBLAYERS.to_vec(),
        };
        let errors_before = self.diags.len();
        let sublayers = self.read_sublayers(&sec, cx, kind);
        self.finish_section(&sec);
        if sublayers.is_empty() && self.recs.all[id].sections.is_empty() {
            let d = Diagnostic::error(item.name.span, format!("block `{name}` has no sublayers"))
                .with_label("empty block")
                .with_related(use_span, "used here");
            self.diags.push(d);
        }
        let ok = self.diags[errors_before..].iter().all(|d| !d.is_error());
        let result = ok.then_some(sublayers);
        self.block_cache.insert(key, result.clone());
        result
    }

    /// Reads the sublayer sections of a stack or block, in the order written.
    fn read_sublayers(&mut self, container: &Sec, cx: &StackCx, kind: StackKind) -> Vec<Sublayer> {
        let names: Vec<String> = self.recs.all[container.id]
            .sections
            .iter()
            .map(|(n, _, _)| n.clone())
            .collect();
        let mut out = Vec::new();
        for name in names {
            let Some(&kind_name) = SUBLAYERS.iter().find(|s| **s == name) else {
                continue;
            };
            let Some(mut sec) = self.subsection(container, kind_name) else {
                continue;
            };
            let sub = match kind_name {
                "attention" => self.attention(&mut sec, cx, kind).map(Sublayer::Attention),
                "cross_attention" => self
                    .cross_attention(&mut sec, cx, kind)
                    .map(Sublayer::CrossAttention),
                "mlp" => Some(Sublayer::Mlp(self.mlp(&mut sec))),
                "mamba" => Some(Sublayer::Mamba(self.mamba(&mut sec, cx))),
                "time_mix" => Some(Sublayer::TimeMix(TimeMix {})),
                "channel_mix" => Some(Sublayer::ChannelMix(ChannelMix {
                    hidden: self
                        .int_opt(&mut sec, "hidden", 1)
                        .ok()
                        .flatten()
                        .unwrap_or(4 * cx.d_model),
                })),
                "ssm" => self.ssm(&mut sec).map(Sublayer::Ssm),
                _ => self.ttt(&mut sec, cx).map(Sublayer::Ttt),
            };
            self.finish_section(&sec);
            out.extend(sub);
        }
        out
    }
}

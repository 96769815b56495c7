//! Attention sublayers (Vaswani et al. 2017; GQA, Ainslie et al. 2023): q, k, v projections,
//! heads split, RoPE on q and k, one `attention` op (mask kind, scale, relative bias or
//! ALiBi, padding mask), heads merged, output projection. Serves BERT, GPT-2/3, LLaMA
//! (GQA/MQA, RoPE), T5 (relative bias, no scaling) and BART; cross-attention reads the
//! encoder output.

use super::position::{apply_rope_seq_major, StackPositions};
use super::Cx;
use crate::graph::{Dim, MaskKind, NodeId, Op};
use arch_dsl::spec::{Attention, CrossAttention, Mask};

/// [B, T, heads·hd] → [B, T, heads, hd]
fn per_head(cx: &mut Cx, x: NodeId, heads: u64, hd: u64) -> NodeId {
    let s = cx.g.shape(x).clone();
    cx.g.reshape(
        x,
        vec![s[0].clone(), s[1].clone(), Dim::c(heads), Dim::c(hd)],
    )
}

/// [B, T, heads·hd] → [B, heads, T, hd]
fn split_heads(cx: &mut Cx, x: NodeId, heads: u64, hd: u64) -> NodeId {
    let split = per_head(cx, x, heads, hd);
    cx.g.permute(split, &[0, 2, 1, 3])
}

/// [B, heads, T, hd] → [B, T, heads·hd]
fn merge_heads(cx: &mut Cx, x: NodeId, heads: u64, hd: u64) -> NodeId {
    let s = cx.g.shape(x).clone();
    let t = cx.g.permute(x, &[0, 2, 1, 3]);
    cx.g.reshape(t, vec![s[0].clone(), s[2].clone(), Dim::c(heads * hd)])
}

pub fn self_attention(
    cx: &mut Cx,
    x: NodeId,
    prefix: &str,
    a: &Attention,
    pos: &StackPositions,
    key_mask: Option<NodeId>,
) -> Result<NodeId, String> {
    let q = cx.linear(x, &format!("{prefix}.q"));
    let k = cx.linear(x, &format!("{prefix}.k"));
    let v = cx.linear(x, &format!("{prefix}.v"));
    // RoPE rotates q and k while positions still come before heads ([B, T, H, hd]), so
    // each rotation reads only its own projection row.
    let mut q = per_head(cx, q, a.heads, a.head_dim);
    let mut k = per_head(cx, k, a.kv_heads, a.head_dim);
    if let Some(tables) = pos.rope_for(a.head_dim) {
        q = apply_rope_seq_major(cx, q, tables);
        k = apply_rope_seq_major(cx, k, tables);
    }
    let q = cx.g.permute(q, &[0, 2, 1, 3]);
    // A sliding window's step cache is a ring of `window` rows (fewer while the session's
    // capacity is smaller), seen through the key mask's length.
    let ring = match (&cx.step, a.mask, key_mask) {
        (Some(_), Mask::Sliding { window }, Some(m)) => Some((ring_rows(window), m)),
        _ => None,
    };
    let (k, v) = if cx.step.is_some() {
        // The new keys and values join the session's caches; attention reads them all.
        let v = per_head(cx, v, a.kv_heads, a.head_dim);
        (
            append_cache(cx, &format!("{prefix}.k"), k, ring.clone()),
            append_cache(cx, &format!("{prefix}.v"), v, ring.clone()),
        )
    } else {
        let k = cx.g.permute(k, &[0, 2, 1, 3]);
        (k, split_heads(cx, v, a.kv_heads, a.head_dim))
    };
    let mask = match a.mask {
        Mask::Causal => MaskKind::Causal,
        Mask::Bidirectional => MaskKind::Bidirectional,
        Mask::Sliding { window } => MaskKind::Sliding(window),
    };
    let out = attend(
        cx,
        q,
        [k, v],
        pos.bias_for(a.heads),
        key_mask,
        mask,
        a.scale,
        ring.map(|(r, _)| r),
    );
    let merged = merge_heads(cx, out, a.heads, a.head_dim);
    Ok(cx.linear(merged, &format!("{prefix}.o")))
}

/// The rows of a sliding window's ring cache: `kv_win_{window}`, which the session binds
/// to min(window, capacity).
pub fn ring_rows(window: u64) -> Dim {
    Dim::sym(&format!("{}{window}", super::KV_WINDOW))
}

/// Appends x [B, T, H, D] to the session cache `name` ([kv_seq, B, H, D], the new rows
/// last; or, with `ring` = (R, mask), a ring [R, B, H, D] whose row p mod R holds token p of
/// the mask's length) and returns the cache as attention reads it, [B, H, ·, D].
fn append_cache(cx: &mut Cx, name: &str, x: NodeId, ring: Option<(Dim, NodeId)>) -> NodeId {
    let s = cx.g.shape(x).clone();
    let rows_dim = match &ring {
        Some((r, _)) => r.clone(),
        None => Dim::sym(super::KV_SEQ),
    };
    let shape = vec![rows_dim, s[0].clone(), s[2].clone(), s[3].clone()];
    let (cache, name) = cx.state_input(name, shape, 0.0);
    let rows = cx.g.permute(x, &[1, 0, 2, 3]);
    let f32 = crate::graph::DType::F32;
    let updated = match ring {
        Some((_, mask)) => {
            cx.g.push(Op::UpdateRing, vec![cache, rows, mask], None, f32)
        }
        None => cx.g.push(Op::UpdateTail, vec![cache, rows], None, f32),
    };
    cx.state_output(&name, updated);
    cx.g.permute(updated, &[1, 2, 0, 3])
}

/// A cross-attention's keys and values of the encoder output, [B, kv_heads, S, hd] each.
pub fn cross_keys(
    cx: &mut Cx,
    memory: NodeId,
    prefix: &str,
    a: &CrossAttention,
) -> (NodeId, NodeId) {
    let k = cx.linear(memory, &format!("{prefix}.k"));
    let v = cx.linear(memory, &format!("{prefix}.v"));
    (
        split_heads(cx, k, a.kv_heads, a.head_dim),
        split_heads(cx, v, a.kv_heads, a.head_dim),
    )
}

/// In a step graph the keys and values come from the session (`state:{prefix}.cross_k`,
/// `.cross_v`, written once per session by the `encode` program) and `memory_mask` is
/// the session's `encoder_mask`; `memory` is not read.
pub fn cross_attention(
    cx: &mut Cx,
    x: NodeId,
    memory: NodeId,
    memory_mask: Option<NodeId>,
    prefix: &str,
    a: &CrossAttention,
) -> Result<NodeId, String> {
    let q = cx.linear(x, &format!("{prefix}.q"));
    let q = split_heads(cx, q, a.heads, a.head_dim);
    let (k, v) = if cx.step.is_some() {
        let b = cx.g.shape(x)[0].clone();
        let shape = vec![
            b,
            Dim::c(a.kv_heads),
            Dim::sym(super::SRC_SEQ),
            Dim::c(a.head_dim),
        ];
        let state = crate::kernel::build::STATE;
        let f32 = crate::graph::DType::F32;
        (
            cx.g.input(&format!("{state}{prefix}.cross_k"), shape.clone(), f32),
            cx.g.input(&format!("{state}{prefix}.cross_v"), shape, f32),
        )
    } else {
        cross_keys(cx, memory, prefix, a)
    };
    let out = attend(
        cx,
        q,
        [k, v],
        None,
        memory_mask,
        MaskKind::Bidirectional,
        a.scale,
        None,
    );
    let merged = merge_heads(cx, out, a.heads, a.head_dim);
    Ok(cx.linear(merged, &format!("{prefix}.o")))
}

#[allow(clippy::too_many_arguments)]
fn attend(
    cx: &mut Cx,
    q: NodeId,
    [k, v]: [NodeId; 2],
    bias: Option<NodeId>,
    key_mask: Option<NodeId>,
    mask: MaskKind,
    scale: f64,
    ring: Option<Dim>,
) -> NodeId {
    let mut inputs = vec![q, k, v];
    inputs.extend(bias);
    inputs.extend(key_mask);
    let op = Op::Attention {
        mask,
        scale,
        has_bias: bias.is_some(),
        has_key_mask: key_mask.is_some(),
        ring,
    };
    cx.g.push(op, inputs, None, crate::graph::DType::F32)
}

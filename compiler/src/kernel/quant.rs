//! Parameters the kernels read as stored in a GGUF file — ggml blocks (`q8_0`, `q4_k`, …)
//! or `f16`/`bf16` — instead of f32. A parameter qualifies when some matmul reads it as B
//! stored [n, k] (`nn.Linear`'s layout) in whole blocks — the matmul lowering then
//! dequantizes B's blocks in registers (`backend/cpu/quant_ir`) — and every other
//! reader is an elementwise kernel (a map or reduction: an embedding's gather, which
//! decodes the values it loads one by one). A matrix only gathered from (an untied
//! embedding table) qualifies too: a gather touches one row per token, and the stored
//! form takes half the memory or less. Attention, scans and matmuls that read it
//! another way keep the parameter in f32, as do parameters of another rank (norm
//! weights, convolution kernels: elementwise readers that read every value every call).

use super::{Body, Kernel, Program};
use arch_runtime::gguf::GgmlType;
use std::collections::BTreeMap;

/// Marks each parameter of `want` that qualifies as stored in its type; returns the
/// others with the reason they stay f32.
pub fn store_quantized(
    prog: &mut Program,
    want: &BTreeMap<String, GgmlType>,
) -> Vec<(String, String)> {
    let mut refused = Vec::new();
    for (name, buf, shape) in &prog.params {
        let Some(&ty) = want.get(name) else {
            continue;
        };
        if !ty.kernel_storage() {
            refused.push((
                name.clone(),
                format!("no kernels read {} blocks", ty.name()),
            ));
            continue;
        }
        let per = ty.kernel_block().0 as u64;
        let whole_rows = match shape.as_slice() {
            [_, cols] => cols.as_const().is_some_and(|c| c % per == 0),
            _ => false,
        };
        if !whole_rows {
            refused.push((
                name.clone(),
                format!("not a matrix whose rows are whole {per}-value blocks"),
            ));
            continue;
        }
        match readers_take_blocks(&prog.kernels, *buf, per as i64) {
            Ok(()) => prog.buffers[*buf].quant = Some(ty),
            Err(why) => refused.push((name.clone(), why)),
        }
    }
    refused
}

/// Ok when every kernel of `kernels` that touches `buf` is a matmul reading it as a
/// transposed B of whole `per`-value blocks, or a map or reduction (which loads values
/// one by one).
fn readers_take_blocks(kernels: &[Kernel], buf: usize, per: i64) -> Result<(), String> {
    let mut readers = 0;
    for k in kernels {
        let mut uses = 0;
        k.visit_bufs(&mut |b| uses += usize::from(b == buf));
        if uses == 0 {
            continue;
        }
        readers += 1;
        let m = match &k.body {
            Body::Map { out, .. } | Body::Reduce { out, .. } if *out != buf => continue,
            Body::MatMul(m) => m,
            _ => return Err(format!("read by a {} kernel", k.kind())),
        };
        // An epilogue loads values one by one (a residual add of the gathered rows);
        // A must be f32.
        if m.a.buf == buf || m.out == buf {
            return Err("read by a matmul as its activations".into());
        }
        if m.b.buf != buf {
            continue;
        }
        if !m.transpose_b || m.transpose_a {
            return Err("a matmul reads it in a layout other than [n, k]".into());
        }
        let whole = |x: Option<i64>| x.is_some_and(|v| v >= 0 && v % per == 0);
        if !whole(m.k.as_const()) || !whole(m.b.ld.as_const()) || !whole(m.b.offset.as_const()) {
            return Err(format!("its rows are not whole blocks of {per} values"));
        }
    }
    if readers == 0 {
        return Err("no kernel reads it".into());
    }
    Ok(())
}

/// `--dtype bf16|f16` on cuda: the activations that pass between kernels stored in `ty`
/// (2 bytes a value), as a model cast to that type keeps them. A temporary qualifies
/// when every kernel that touches it is a map, a reduction, a matmul or a forward
/// attention (their loads decode stored types, their stores round to nearest even) and
/// no reduction writes it — the statistics of norms and softmax stay f32, as PyTorch
/// keeps them in its half-precision kernels. Scans, scatters and attention's backward
/// read and write f32 (their operands and results stay so), as do inputs, outputs and
/// parameters stored f32. Session state qualifies when it is a KV cache: written by the
/// program's maps (`update_tail`), read by its attention, touched by nothing else and
/// starting at zero (`inits`: each state's initial value) — what Hugging Face's cache
/// of a model cast to the type holds. Recurrent states (scans, RWKV's running maximum),
/// and states the host writes (an encoder-decoder's cross-attention keys) stay f32.
/// Returns how many buffers were marked.
pub fn store_activations(prog: &mut Program, ty: GgmlType, inits: &[(String, f32)]) -> usize {
    let n = prog.buffers.len();
    let mut ok = vec![true; n];
    let mut written = vec![false; n];
    let mut attended = vec![false; n];
    for k in &prog.kernels {
        let elementwise = match &k.body {
            Body::Map { .. } | Body::Reduce { .. } | Body::MatMul(_) => true,
            Body::Attention(a) => a.part.is_none(),
            Body::Scan(_) | Body::Scatter(_) => false,
        };
        for b in k.buffers() {
            if !elementwise {
                ok[b] = false;
            }
        }
        if let Body::Reduce { out, .. } = &k.body {
            ok[*out] = false;
        }
        if let Body::Map { out, .. } = &k.body {
            written[*out] = true;
        }
        if let Body::Attention(a) = &k.body {
            for b in k.buffers() {
                attended[b] |= b != a.out.buf;
            }
        }
        // A KV cache: the maps that append to it and the attention that reads it, nothing
        // else.
        if matches!(k.body, Body::Reduce { .. } | Body::MatMul(_)) {
            for b in k.buffers() {
                if matches!(prog.buffers[b].kind, super::BufKind::State(_)) {
                    ok[b] = false;
                }
            }
        }
    }
    for (name, b, _) in &prog.states {
        let zero = inits.iter().all(|(n, v)| n != name || *v == 0.0);
        if !(written[*b] && attended[*b] && zero) {
            ok[*b] = false;
        }
    }
    let mut marked = 0;
    for (b, buf) in prog.buffers.iter_mut().enumerate() {
        let kind_ok = matches!(buf.kind, super::BufKind::Temp | super::BufKind::State(_));
        if ok[b] && kind_ok && !buf.i64 && buf.quant.is_none() {
            buf.quant = Some(ty);
            marked += 1;
        }
    }
    marked
}

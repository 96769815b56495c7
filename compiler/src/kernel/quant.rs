//! Parameters the kernels read as ggml blocks (`q8_0`, `q4_k`): a GGUF file's quantized
//! weights kept as they are stored. A parameter qualifies when every kernel that touches
//! it is a matmul reading it as B stored [n, k] (`nn.Linear`'s layout) in whole blocks;
//! the matmul lowering then dequantizes B's blocks in registers (`backend/cpu/quant_ir`).
//! Any other reader (a gather, a norm, a scan) keeps the parameter in f32.

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
    for (name, buf, _) in &prog.params {
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
        match readers_take_blocks(&prog.kernels, *buf, ty.block().0 as i64) {
            Ok(()) => prog.buffers[*buf].quant = Some(ty),
            Err(why) => refused.push((name.clone(), why)),
        }
    }
    refused
}

/// Ok when every kernel of `kernels` that touches `buf` is a matmul reading it as a
/// transposed B of whole `per`-value blocks.
fn readers_take_blocks(kernels: &[Kernel], buf: usize, per: i64) -> Result<(), String> {
    let mut readers = 0;
    for k in kernels {
        let mut uses = 0;
        k.visit_bufs(&mut |b| uses += usize::from(b == buf));
        if uses == 0 {
            continue;
        }
        readers += 1;
        let Body::MatMul(m) = &k.body else {
            return Err(format!("read by a {} kernel", k.kind()));
        };
        if uses != 1 || m.b.buf != buf {
            return Err("read by a matmul other than as its weight".into());
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

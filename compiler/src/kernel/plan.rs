//! Buffer liveness and arena slots: temp buffers whose lifetimes (first to last kernel
//! that touches them) do not overlap share a slot. Sizes are symbolic, so a slot's size is
//! the largest of its buffers' sizes, evaluated by the runtime once `batch` and `seq` are
//! known; buffers of equal size expressions are preferred partners so slots do not grow.

use super::{BufKind, Program};

/// Fills `prog.slots` and `prog.slot_count`.
pub fn assign_slots(prog: &mut Program) {
    let n = prog.buffers.len();
    let mut first = vec![usize::MAX; n];
    let mut last = vec![0usize; n];
    for (k, kernel) in prog.kernels.iter().enumerate() {
        for b in kernel.buffers() {
            first[b] = first[b].min(k);
            last[b] = last[b].max(k);
        }
    }
    let mut temps: Vec<usize> = (0..n)
        .filter(|&b| prog.buffers[b].kind == BufKind::Temp)
        .collect();
    for &b in &temps {
        if first[b] == usize::MAX {
            first[b] = 0;
            last[b] = 0;
        }
    }
    temps.sort_by_key(|&b| (first[b], b));
    // Per slot: the last kernel that uses it, and the sizes it holds.
    let mut slots: Vec<(usize, Vec<usize>)> = Vec::new();
    let mut assigned = vec![None; n];
    for &b in &temps {
        let free: Vec<usize> = (0..slots.len())
            .filter(|&s| slots[s].0 < first[b])
            .collect();
        let same = free.iter().copied().find(|&s| {
            slots[s]
                .1
                .iter()
                .any(|&o| prog.buffers[o].elems == prog.buffers[b].elems)
        });
        let s = match same.or_else(|| free.first().copied()) {
            Some(s) => s,
            None => {
                slots.push((0, Vec::new()));
                slots.len() - 1
            }
        };
        slots[s].0 = last[b];
        slots[s].1.push(b);
        assigned[b] = Some(s);
    }
    prog.slots = assigned;
    prog.slot_count = slots.len();
}

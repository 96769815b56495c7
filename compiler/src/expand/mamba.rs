//! Mamba-1 selective scan (Gu & Dao 2023; Hugging Face `MambaMixer.slow_forward`).

use super::Cx;
use crate::graph::NodeId;
use arch_dsl::spec::Mamba;

pub fn mamba(_cx: &mut Cx, _x: NodeId, prefix: &str, _m: &Mamba) -> Result<NodeId, String> {
    Err(format!("{prefix}: the mamba cell is not expanded yet"))
}

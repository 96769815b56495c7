//! RWKV-4 time mixing and channel mixing (Peng et al. 2023; Hugging Face `modeling_rwkv`).

use super::Cx;
use crate::graph::NodeId;

pub fn time_mix(_cx: &mut Cx, _x: NodeId, prefix: &str) -> Result<NodeId, String> {
    Err(format!("{prefix}: the time_mix cell is not expanded yet"))
}

pub fn channel_mix(_cx: &mut Cx, _x: NodeId, prefix: &str) -> Result<NodeId, String> {
    Err(format!("{prefix}: the channel_mix cell is not expanded yet"))
}

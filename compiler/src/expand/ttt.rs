//! Test-time-training layers (Sun et al. 2024; ttt-lm-pytorch `TTTLinear` / `TTTMLP`).

use super::position::StackPositions;
use super::Cx;
use crate::graph::NodeId;
use arch_dsl::spec::Ttt;

pub fn ttt(_cx: &mut Cx, _x: NodeId, prefix: &str, _t: &Ttt, _pos: &StackPositions) -> Result<NodeId, String> {
    Err(format!("{prefix}: the ttt cell is not expanded yet"))
}

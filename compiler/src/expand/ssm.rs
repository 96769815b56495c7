//! S4D diagonal state space layer (Gu et al. 2022; state-spaces/s4 `s4d.py`).

use super::Cx;
use crate::graph::NodeId;
use arch_dsl::spec::Ssm;

pub fn ssm(_cx: &mut Cx, _x: NodeId, prefix: &str, _s: &Ssm) -> Result<NodeId, String> {
    Err(format!("{prefix}: the ssm cell is not expanded yet"))
}

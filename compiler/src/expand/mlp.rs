//! Feed-forward sublayer: `down(act(up x))`, or for the gated units of Shazeer (2020)
//! `down(act(gate x) · up x)` (SwiGLU in LLaMA, GEGLU, ReGLU).

use super::Cx;
use crate::graph::NodeId;
use arch_dsl::spec::Mlp;

pub fn mlp(cx: &mut Cx, x: NodeId, prefix: &str, m: &Mlp) -> Result<NodeId, String> {
    let up = cx.linear(x, &format!("{prefix}.up"));
    let hidden = if m.act.is_gated() {
        let gate = cx.linear(x, &format!("{prefix}.gate"));
        let activated = cx.act(m.act, gate);
        cx.g.mul(activated, up)
    } else {
        cx.act(m.act, up)
    };
    Ok(cx.linear(hidden, &format!("{prefix}.down")))
}

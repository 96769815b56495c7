#!/usr/bin/env python3
"""Fixtures for the spec options that no Hugging Face fixture covers.

    python3 tools/make_option_fixtures.py                      # writes compiler/tests/fixtures/options/
    python3 tools/make_option_fixtures.py --out DIR --perturb alibi_sign,sin_cos
    python3 tools/make_option_fixtures.py --list-perturbations

Each fixture is a tiny model written as a `model.arch` (one model, `tiny`) together with a plain
description of the same model below (CONFIG), random weights under the canonical parameter names
of compiler/src/params.rs (float32), random inputs, and the outputs `hidden` and `logits` computed
by the small generic forward pass in this file, in float64 from the float32 weights and rounded
to float32. The forward pass is written from the documented semantics (docs in
compiler/tests/fixtures/options/README.md and /work/shared/ARCH_LANGUAGE.md §5-§7) and the
standard formulas of the reference codebases (PyTorch's sinusoidal table, BLOOM's ALiBi, Hugging
Face's rotate_half, GPT-J / Meta's complex-number RoPE), not from archc's Rust code.

`--perturb` computes the outputs with one or more semantics deliberately changed (the weights
and inputs stay byte-identical, they depend only on the seed); the Rust test
compiler/tests/interp_options.rs, pointed at such a directory with ARCHC_OPTION_FIXTURES, must
then fail for the fixtures the perturbation touches. That is how each test was shown to be able
to fail.

Needs torch and safetensors only.
"""

import argparse
import math
import os
import sys

import torch
import torch.nn.functional as F
from safetensors.torch import save_file

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OUT = os.path.join(ROOT, "compiler", "tests", "fixtures", "options")

# Deliberate semantic errors, for showing that the tests can fail (see --perturb).
PERTURBATIONS = {
    "sin_cos": "sinusoidal table with sin and cos swapped",
    "sin_halves": "sinusoidal table as [sin | cos] halves (fairseq/Marian layout) instead of interleaved",
    "alibi_sign": "ALiBi adds slope * (query - key)",
    "alibi_slopes": "ALiBi slopes 2^(-8h/H) (off by one head)",
    "rope_style": "interleaved RoPE computed as half style",
    "rope_full": "partial RoPE rotates the whole head",
    "rope_theta": "RoPE base theta doubled",
    "geglu_tanh": "GEGLU with the tanh GELU",
    "reglu_silu": "ReGLU with SiLU in place of ReLU",
    "gated_swap": "gated MLPs activate the up branch instead of the gate",
    "silu_gelu": "plain SiLU MLP computed with GELU",
    "relu_gelu": "plain ReLU MLP computed with GELU",
    "gelu_tanh_exact": "gelu_tanh computed with the exact GELU",
    "sliding_wider": "sliding window sees w + 1 keys",
    "no_qkv_bias": "attention biases ignored",
    "ln_rms": "bias-free LayerNorm computed as RMSNorm",
    "no_embed_scale": "embed.scale ignored",
    "no_lm_scale": "lm(scale) ignored",
    "no_lm_bias": "lm(bias) ignored",
    "kv_tile": "grouped heads share key/value heads by tiling (h % kv) instead of blocks (h // group)",
    "scale_d": "attention scale 1/sqrt(d_model/heads) instead of 1/sqrt(head_dim)",
    "pre_norm": "placement = post computed as pre",
    "no_final_norm": "final_norm ignored",
    "no_pad_mask": "attention_mask ignored",
    "block_masks": "heterogeneous stack with the masks of its two blocks swapped",
    "first_attention": "RoPE frequencies and ALiBi slopes of every attention from the stack's first one",
}
PERTURB = set()


# ----------------------------------------------------------------------------- the models

# A sublayer is ("attention", dict) or ("mlp", dict); a layer is a list of sublayers; CONFIG
# describes exactly what each `model.arch` says (defaults of ARCH_LANGUAGE.md filled in).


def attn(heads, kv_heads=None, head_dim=None, mask="causal", bias="none", d=None):
    return ("attention", dict(heads=heads, kv_heads=kv_heads or heads, head_dim=head_dim or d // heads,
                              mask=mask, bias=bias))


def mlp(hidden, act, bias=False):
    return ("mlp", dict(hidden=hidden, act=act, bias=bias))


def fixtures():
    fx = []

    # 1 -------------------------------------------------------------------------------
    d = 24
    fx.append(dict(
        name="sinusoidal_geglu",
        checks="sinusoidal positions (interleaved sin/cos, width d_model); `embed.scale = 2.0` on "
               "token embeddings only; `bias = qkv` (q, k, v biased, o not); "
               "`layernorm(bias = false)`; GEGLU `down(gelu(gate x) * up x)`; tied "
               "`lm(scale = 0.5, bias = true)` = (hidden * 0.5) E^T + b; causal mask.",
        arch="""\
// Decoder: sinusoidal positions, scaled embeddings, q/k/v biases only, bias-free LayerNorm,
// GEGLU, tied LM head with scale and bias.
model tiny {
    vocab = 61
    d_model = 24
    context = 16
    norm = layernorm(eps = 1e-5, bias = false)
    placement = pre
    position = sinusoidal
    embed { scale = 2.0 }
    decoder {
        layers = 2
        attention { heads = 4  bias = qkv }
        mlp { hidden = 40  act = geglu }
    }
    head = lm(scale = 0.5, bias = true)
}
""",
        cfg=dict(vocab=61, d=d, norm=("layernorm", 1e-5, False), placement="pre", final_norm=True,
                 position=dict(kind="sinusoidal"), embed_scale=2.0, tied=True, stack="decoder",
                 layers=[[attn(4, bias="qkv", d=d), mlp(40, "geglu")]] * 2,
                 head=dict(scale=0.5, bias=True)),
        lengths=None,
    ))

    # 2 -------------------------------------------------------------------------------
    d = 32
    fx.append(dict(
        name="alibi_mqa_reglu",
        checks="ALiBi: head h of H = 4 adds 2^(-8(h+1)/H) * (key - query) to its scores (slopes "
               "1/4, 1/16, 1/64, 1/256), not scaled by 1/sqrt(head_dim); multi-query attention "
               "(`kv_heads = 1`); ReGLU `down(relu(gate x) * up x)`; RMSNorm; untied head; "
               "left padding in a decoder (row 1 holds 3 padding tokens, then 4 real ones: the "
               "padding keys must be masked; positions stay the absolute indices 0..6, which "
               "ALiBi does not notice since it depends on key - query only).",
        arch="""\
// Decoder: ALiBi, multi-query attention (4 query heads, 1 key/value head), ReGLU, RMSNorm,
// untied head; inputs padded on the left.
model tiny {
    vocab = 53
    d_model = 32
    context = 16
    norm = rmsnorm(eps = 1e-6)
    placement = pre
    position = alibi
    embed { tied = false }
    decoder {
        layers = 2
        attention { heads = 4  kv_heads = 1 }
        mlp { hidden = 48  act = reglu }
    }
}
""",
        cfg=dict(vocab=53, d=d, norm=("rmsnorm", 1e-6), placement="pre", final_norm=True,
                 position=dict(kind="alibi"), embed_scale=1.0, tied=False, stack="decoder",
                 layers=[[attn(4, 1, d=d), mlp(48, "reglu")]] * 2,
                 head=dict(scale=1.0, bias=False)),
        lengths=[7, 4],
        pad_side="left",
    ))

    # 3 -------------------------------------------------------------------------------
    d = 20
    fx.append(dict(
        name="rope_interleaved_partial",
        checks="RoPE `style = interleaved` (GPT-J / Meta: adjacent pairs (x[2i], x[2i+1]) rotated "
               "by t * theta^(-2i/rot)) with `fraction = 0.5` (rot = 6 of head_dim 12; the last 6 "
               "features pass through), theta = 100; head_dim 12 with heads * head_dim = 48 != "
               "d_model = 20, scale 1/sqrt(12); grouped-query attention (4 heads over 2 kv "
               "heads, query head h reads kv head h // 2); `bias = true` (q, k, v and o); plain "
               "SiLU MLP with biases; LayerNorm with bias; right padding.",
        arch="""\
// Decoder: interleaved (GPT-J) RoPE on the first half of each head, head_dim 12 with
// heads x head_dim != d_model, grouped-query attention, all attention biases, SiLU MLP.
model tiny {
    vocab = 47
    d_model = 20
    context = 16
    norm = layernorm(eps = 1e-5)
    placement = pre
    position = rope(theta = 100.0, fraction = 0.5, style = interleaved)
    decoder {
        layers = 2
        attention { heads = 4  kv_heads = 2  head_dim = 12  bias = true }
        mlp { hidden = 36  act = silu  bias = true }
    }
}
""",
        cfg=dict(vocab=47, d=d, norm=("layernorm", 1e-5, True), placement="pre", final_norm=True,
                 position=dict(kind="rope", theta=100.0, fraction=0.5, style="interleaved"),
                 embed_scale=1.0, tied=True, stack="decoder",
                 layers=[[attn(4, 2, 12, bias="all"), mlp(36, "silu", True)]] * 2,
                 head=dict(scale=1.0, bias=False)),
        lengths=[7, 5],
    ))

    # 4 -------------------------------------------------------------------------------
    d = 24
    fx.append(dict(
        name="rope_half_partial_sliding",
        checks="RoPE `style = half` (Hugging Face rotate_half / GPT-NeoX partial rotary) with "
               "`fraction = 0.5` (rot = 4 of head_dim 8), theta = 500; `mask = sliding(window = "
               "3)`: query t sees keys t-2..t; multi-query attention (3 heads, 1 kv head); plain "
               "ReLU MLP; RMSNorm; untied head.",
        arch="""\
// Decoder: half-style (NeoX) RoPE on the first half of each head, a sliding window of 3,
// multi-query attention, ReLU MLP.
model tiny {
    vocab = 50
    d_model = 24
    context = 16
    norm = rmsnorm(eps = 1e-5)
    placement = pre
    position = rope(theta = 500.0, fraction = 0.5)
    embed { tied = false }
    decoder {
        layers = 2
        attention { heads = 3  kv_heads = 1  mask = sliding(window = 3) }
        mlp { hidden = 32  act = relu }
    }
}
""",
        cfg=dict(vocab=50, d=d, norm=("rmsnorm", 1e-5), placement="pre", final_norm=True,
                 position=dict(kind="rope", theta=500.0, fraction=0.5, style="half"),
                 embed_scale=1.0, tied=False, stack="decoder",
                 layers=[[attn(3, 1, mask=("sliding", 3), d=d), mlp(32, "relu")]] * 2,
                 head=dict(scale=1.0, bias=False)),
        lengths=None,
    ))

    # 5 -------------------------------------------------------------------------------
    d = 24
    dense = [attn(4, 2, 6), mlp(48, "swiglu")]
    local = [attn(2, 2, 6, mask=("sliding", 3), bias="all"), mlp(20, "gelu_tanh", True)]
    fx.append(dict(
        name="hetero_stack",
        checks="`stack = [dense, local] * 2` = 4 layers dense, local, dense, local, each with its "
               "own weights `decoder.layers.{0..3}`; dense: GQA 4 heads over 2 kv heads, SwiGLU; "
               "local: 2 heads of head_dim 6 (heads * head_dim = 12 != 24), `sliding(window = "
               "3)`, all attention biases, gelu_tanh MLP with biases; full half-style RoPE "
               "(theta 10000, same head_dim in both blocks) shared by the stack.",
        arch="""\
// Decoder with a heterogeneous stack: dense GQA + SwiGLU layers alternate with local
// (sliding-window, narrower, biased) attention + gelu_tanh layers.
block dense {
    attention { heads = 4  kv_heads = 2  head_dim = 6 }
    mlp { hidden = 48  act = swiglu }
}

block local {
    attention { heads = 2  head_dim = 6  mask = sliding(window = 3)  bias = true }
    mlp { hidden = 20  act = gelu_tanh  bias = true }
}

model tiny {
    vocab = 40
    d_model = 24
    context = 16
    norm = rmsnorm(eps = 1e-6)
    placement = pre
    position = rope(theta = 10000.0)
    decoder { stack = [dense, local] * 2 }
}
""",
        cfg=dict(vocab=40, d=d, norm=("rmsnorm", 1e-6), placement="pre", final_norm=True,
                 position=dict(kind="rope", theta=10000.0, fraction=1.0, style="half"),
                 embed_scale=1.0, tied=True, stack="decoder",
                 layers=[dense, local, dense, local],
                 head=dict(scale=1.0, bias=False)),
        lengths=None,
    ))

    # 6 -------------------------------------------------------------------------------
    d = 24
    fx.append(dict(
        name="encoder_post_sinusoidal",
        checks="encoder (bidirectional attention) with an attention_mask (right padding: padding "
               "keys masked); `placement = post`: x = norm(x + f(x)) per sublayer, then "
               "`final_norm = true` adds one more norm; sinusoidal positions; "
               "`embed.scale = 2.0`; `bias = qkv`; GEGLU with biases on gate, up and down; "
               "LayerNorm with bias (eps 1e-12); tied `lm(scale = 0.5, bias = true)`.",
        arch="""\
// Encoder: post-norm with a final norm, sinusoidal positions, scaled embeddings, q/k/v
// biases, GEGLU with biases, tied LM head with scale and bias; inputs padded on the right.
model tiny {
    vocab = 45
    d_model = 24
    context = 16
    norm = layernorm(eps = 1e-12)
    placement = post
    final_norm = true
    position = sinusoidal
    embed { scale = 2.0 }
    encoder {
        layers = 2
        attention { heads = 4  bias = qkv }
        mlp { hidden = 40  act = geglu  bias = true }
    }
    head = lm(scale = 0.5, bias = true)
    objective = none
}
""",
        cfg=dict(vocab=45, d=d, norm=("layernorm", 1e-12, True), placement="post", final_norm=True,
                 position=dict(kind="sinusoidal"), embed_scale=2.0, tied=True, stack="encoder",
                 layers=[[attn(4, bias="qkv", mask="bidirectional", d=d), mlp(40, "geglu", True)]] * 2,
                 head=dict(scale=0.5, bias=True)),
        lengths=[7, 3],
    ))

    # 7 -------------------------------------------------------------------------------
    d = 32
    fx.append(dict(
        name="encoder_alibi",
        checks="ALiBi in an encoder: bidirectional, head h of 8 adds 2^(-(h+1)) * (key - query) "
               "for every key (later keys get a positive bias, as documented); GQA 8 heads over "
               "2 kv heads of head_dim 4; `bias = true`; exact-GELU MLP with biases; untied "
               "`lm(bias = true)`; right padding.",
        arch="""\
// Encoder: ALiBi (8 heads over 2 key/value heads), all biases, GELU MLP, untied biased LM
// head; inputs padded on the right.
model tiny {
    vocab = 37
    d_model = 32
    context = 16
    norm = layernorm(eps = 1e-5)
    placement = pre
    position = alibi
    embed { tied = false }
    encoder {
        layers = 2
        attention { heads = 8  kv_heads = 2  bias = true }
        mlp { hidden = 64  act = gelu  bias = true }
    }
    head = lm(bias = true)
    objective = none
}
""",
        cfg=dict(vocab=37, d=d, norm=("layernorm", 1e-5, True), placement="pre", final_norm=True,
                 position=dict(kind="alibi"), embed_scale=1.0, tied=False, stack="encoder",
                 layers=[[attn(8, 2, bias="all", mask="bidirectional", d=d), mlp(64, "gelu", True)]] * 2,
                 head=dict(scale=1.0, bias=True)),
        lengths=[5, 7],
    ))

    # Per-attention position tables in heterogeneous stacks (archc used the stack's first
    # attention for all of them until these fixtures caught it).
    d = 24
    wide = [attn(4, 4, 6), mlp(32, "swiglu")]
    narrow = [attn(2, 2, 12), mlp(32, "swiglu")]
    fx.append(dict(
        name="hetero_alibi_heads",
        checks="ALiBi in `stack = [wide, narrow]`, where wide has 4 heads (head_dim 6) and narrow "
               "2 (head_dim 12): each attention uses the slopes of its own head count "
               "(2^(-8(h+1)/4) in wide, 2^(-8(h+1)/2) in narrow), as a BLOOM-style model of each "
               "block would. (archc once built one bias from the stack's first attention.)",
        arch="""\
// Decoder: ALiBi in a stack whose blocks have different head counts (4 and 2); each
// attention takes the slopes of its own head count.
block wide {
    attention { heads = 4 }
    mlp { hidden = 32  act = swiglu }
}

block narrow {
    attention { heads = 2 }
    mlp { hidden = 32  act = swiglu }
}

model tiny {
    vocab = 40
    d_model = 24
    context = 16
    norm = rmsnorm(eps = 1e-6)
    placement = pre
    position = alibi
    decoder { stack = [wide, narrow] }
}
""",
        cfg=dict(vocab=40, d=d, norm=("rmsnorm", 1e-6), placement="pre", final_norm=True,
                 position=dict(kind="alibi"), embed_scale=1.0, tied=True, stack="decoder",
                 layers=[wide, narrow], head=dict(scale=1.0, bias=False)),
        lengths=None,
    ))
    fx.append(dict(
        name="hetero_rope_head_dim",
        checks="RoPE in `stack = [wide, narrow]`, where wide has head_dim 6 and narrow head_dim "
               "12: each attention rotates its own head width (inv_freq = "
               "theta^(-2i/head_dim)). (archc once built one table from the stack's first "
               "attention, and expansion panicked in merge_heads.)",
        arch="""\
// Decoder: RoPE in a stack whose blocks have different head_dim (6 and 12); each
// attention rotates its own head width.
block wide {
    attention { heads = 4 }
    mlp { hidden = 32  act = swiglu }
}

block narrow {
    attention { heads = 2 }
    mlp { hidden = 32  act = swiglu }
}

model tiny {
    vocab = 40
    d_model = 24
    context = 16
    norm = rmsnorm(eps = 1e-6)
    placement = pre
    position = rope(theta = 10000.0)
    decoder { stack = [wide, narrow] }
}
""",
        cfg=dict(vocab=40, d=d, norm=("rmsnorm", 1e-6), placement="pre", final_norm=True,
                 position=dict(kind="rope", theta=10000.0, fraction=1.0, style="half"),
                 embed_scale=1.0, tied=True, stack="decoder",
                 layers=[wide, narrow], head=dict(scale=1.0, bias=False)),
        lengths=None,
    ))
    return fx


# ----------------------------------------------------------------------------- parameters


def sublayer_names(layer):
    """Canonical sublayer names: the kind, `{kind}_{k}` for its k-th repeat in the layer."""
    seen, out = {}, []
    for kind, _ in layer:
        k = seen.get(kind, 0)
        out.append(kind if k == 0 else f"{kind}_{k}")
        seen[kind] = k + 1
    return out


def param_shapes(cfg):
    """(name, shape, role) in the order of params.rs's documentation."""
    V, d = cfg["vocab"], cfg["d"]
    out = [("embed.tokens.weight", [V, d], "embed")]
    S = cfg["stack"]
    ln_bias = cfg["norm"][0] == "layernorm" and cfg["norm"][2]

    def norm(prefix):
        out.append((f"{prefix}.weight", [d], "norm_w"))
        if ln_bias:
            out.append((f"{prefix}.bias", [d], "bias"))

    for i, layer in enumerate(cfg["layers"]):
        for sname, (kind, a) in zip(sublayer_names(layer), layer):
            p = f"{S}.layers.{i}.{sname}"
            norm(f"{p}.norm")
            if kind == "attention":
                q, kv = a["heads"] * a["head_dim"], a["kv_heads"] * a["head_dim"]
                out += [(f"{p}.q.weight", [q, d], "qk"), (f"{p}.k.weight", [kv, d], "qk"),
                        (f"{p}.v.weight", [kv, d], "w"), (f"{p}.o.weight", [d, q], "w")]
                if a["bias"] in ("qkv", "all"):
                    out += [(f"{p}.q.bias", [q], "bias"), (f"{p}.k.bias", [kv], "bias"),
                            (f"{p}.v.bias", [kv], "bias")]
                if a["bias"] == "all":
                    out.append((f"{p}.o.bias", [d], "bias"))
            else:
                h = a["hidden"]
                gated = a["act"] in GATED
                if gated:
                    out.append((f"{p}.gate.weight", [h, d], "act"))
                    if a["bias"]:
                        out.append((f"{p}.gate.bias", [h], "bias"))
                out.append((f"{p}.up.weight", [h, d], "w" if gated else "act"))
                if a["bias"]:
                    out.append((f"{p}.up.bias", [h], "bias"))
                out.append((f"{p}.down.weight", [d, h], "w"))
                if a["bias"]:
                    out.append((f"{p}.down.bias", [d], "bias"))
    if cfg["final_norm"]:
        norm(f"{S}.final_norm")
    if not cfg["tied"]:
        out.append(("head.lm.weight", [V, d], "w"))
    if cfg["head"]["bias"]:
        out.append(("head.lm.bias", [V], "bias"))
    return out


def make_weights(cfg, gen):
    W = {}
    for name, shape, role in param_shapes(cfg):
        z = torch.randn(shape, generator=gen, dtype=torch.float64)
        if role == "embed":
            t = z
        elif role == "norm_w":
            t = 1.0 + 0.2 * z
        elif role == "bias":
            t = 0.2 * z
        elif role == "qk":  # larger, so that attention is far from uniform
            t = 2.0 * z / math.sqrt(shape[1])
        elif role == "act":  # what an activation reads: larger, so that pre-activations reach
            t = 2.5 * z / math.sqrt(shape[1])  # |x| ~ 2-3, where gelu and gelu_tanh differ most
        else:
            t = z / math.sqrt(shape[1])
        W[name] = t.to(torch.float32).contiguous()
    return W


# ----------------------------------------------------------------------------- the forward pass


def norm(cfg, x, W, prefix):
    kind = cfg["norm"][0]
    w = W[f"{prefix}.weight"]
    if kind == "layernorm" and not ("ln_rms" in PERTURB and not cfg["norm"][2]):
        b = W.get(f"{prefix}.bias")
        return F.layer_norm(x, (x.shape[-1],), w, b, cfg["norm"][1])
    eps = cfg["norm"][1]
    return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps) * w


def linear(x, W, prefix, use_bias=True):
    b = W.get(f"{prefix}.bias") if use_bias else None
    return F.linear(x, W[f"{prefix}.weight"], b)


def sinusoidal_table(T, E, dtype):
    """The PyTorch tutorial's PositionalEncoding: pe[t, 2i] = sin(t / 10000^(2i/E)),
    pe[t, 2i+1] = cos(same)."""
    position = torch.arange(T, dtype=dtype).unsqueeze(1)
    div_term = torch.exp(torch.arange(0, E, 2, dtype=dtype) * (-math.log(10000.0) / E))
    pe = torch.zeros(T, E, dtype=dtype)
    if "sin_halves" in PERTURB:
        pe[:, : E // 2] = torch.sin(position * div_term)
        pe[:, E // 2:] = torch.cos(position * div_term)
        return pe
    sin, cos = torch.sin(position * div_term), torch.cos(position * div_term)
    if "sin_cos" in PERTURB:
        sin, cos = cos, sin
    pe[:, 0::2] = sin
    pe[:, 1::2] = cos
    return pe


def alibi_bias(H, T, dtype, first_heads=None):
    """[H, T, T]: head h adds slope_h * (key - query); slopes of BLOOM / Press et al. for a
    power-of-two H: start = 2^(-8/H), slope_h = start^(h+1)."""
    start = 2.0 ** (-8.0 / (first_heads if "first_attention" in PERTURB else H))
    first = 0 if "alibi_slopes" in PERTURB else 1
    slopes = torch.tensor([start ** (first + h) for h in range(H)], dtype=dtype)
    pos = torch.arange(T, dtype=dtype)
    rel = pos[None, :] - pos[:, None]  # [query, key] = key - query
    if "alibi_sign" in PERTURB:
        rel = -rel
    return slopes[:, None, None] * rel[None]


def rotate_half(x):
    x1, x2 = x[..., : x.shape[-1] // 2], x[..., x.shape[-1] // 2:]
    return torch.cat((-x2, x1), dim=-1)


def apply_rope(x, pos, first_head_dim=None):
    """x [B, H, T, hd]. Hugging Face (half) or GPT-J / Meta (interleaved) RoPE on the first
    rot = hd * fraction features."""
    hd, T = x.shape[-1], x.shape[-2]
    fraction = 1.0 if "rope_full" in PERTURB else pos["fraction"]
    rot = int(hd * fraction)
    assert rot % 2 == 0 and rot > 0
    theta = pos["theta"] * (2.0 if "rope_theta" in PERTURB else 1.0)
    style = "half" if "rope_style" in PERTURB else pos["style"]
    denom = int(first_head_dim * fraction) if "first_attention" in PERTURB else rot
    inv_freq = 1.0 / (theta ** (torch.arange(0, rot, 2, dtype=torch.float64) / denom))
    freqs = torch.outer(torch.arange(T, dtype=torch.float64), inv_freq)  # [T, rot/2]
    x_rot, x_pass = x[..., :rot], x[..., rot:]
    if style == "half":
        emb = torch.cat((freqs, freqs), dim=-1)
        cos, sin = emb.cos().to(x.dtype), emb.sin().to(x.dtype)
        x_rot = x_rot * cos + rotate_half(x_rot) * sin
    else:
        cplx = torch.complex64 if x.dtype == torch.float32 else torch.complex128
        xc = torch.view_as_complex(x_rot.reshape(*x_rot.shape[:-1], rot // 2, 2).contiguous())
        freqs_cis = torch.polar(torch.ones_like(freqs), freqs).to(cplx)
        x_rot = torch.view_as_real(xc * freqs_cis).flatten(-2)
    return torch.cat((x_rot, x_pass), dim=-1)


def first_attention(cfg):
    return next(a for layer in cfg["layers"] for kind, a in layer if kind == "attention")


def attention(cfg, x, W, p, a, pad):
    B, T, d = x.shape
    H, KV, hd = a["heads"], a["kv_heads"], a["head_dim"]
    use_bias = "no_qkv_bias" not in PERTURB
    q = linear(x, W, f"{p}.q", use_bias).view(B, T, H, hd).transpose(1, 2)
    k = linear(x, W, f"{p}.k", use_bias).view(B, T, KV, hd).transpose(1, 2)
    v = linear(x, W, f"{p}.v", use_bias).view(B, T, KV, hd).transpose(1, 2)
    pos = cfg["position"]
    if pos["kind"] == "rope":
        first = first_attention(cfg)["head_dim"]
        q, k = apply_rope(q, pos, first), apply_rope(k, pos, first)
    if H != KV:
        if "kv_tile" in PERTURB:
            k, v = k.repeat(1, H // KV, 1, 1), v.repeat(1, H // KV, 1, 1)
        else:  # Hugging Face repeat_kv: query head h reads kv head h // (H / KV)
            k, v = k.repeat_interleave(H // KV, dim=1), v.repeat_interleave(H // KV, dim=1)
    scale = 1.0 / math.sqrt(d // H if "scale_d" in PERTURB else hd)
    scores = (q @ k.transpose(-1, -2)) * scale
    if pos["kind"] == "alibi":
        scores = scores + alibi_bias(H, T, x.dtype, first_attention(cfg)["heads"])[None]
    i = torch.arange(T)[:, None]  # query
    j = torch.arange(T)[None, :]  # key
    mask = a["mask"]
    if mask == "bidirectional":
        allowed = torch.ones(T, T, dtype=torch.bool)
    elif mask == "causal":
        allowed = j <= i
    else:
        w = mask[1] + (1 if "sliding_wider" in PERTURB else 0)
        allowed = (j <= i) & (j > i - w)
    allowed = allowed[None, None].expand(B, 1, T, T)
    if pad is not None and "no_pad_mask" not in PERTURB:
        allowed = allowed & pad.bool()[:, None, None, :]
    scores = scores.masked_fill(~allowed, float("-inf"))
    # A query that may see no key (left padding) gets zeros, not NaN; its rows are not compared.
    probs = torch.softmax(scores, dim=-1).nan_to_num(0.0)
    out = (probs @ v).transpose(1, 2).reshape(B, T, H * hd)
    return linear(out, W, f"{p}.o")


ACTS = {
    "gelu": lambda x: F.gelu(x),
    "gelu_tanh": lambda x: F.gelu(x, approximate="tanh"),
    "relu": F.relu,
    "silu": F.silu,
}
GATED = {"swiglu": "silu", "geglu": "gelu", "reglu": "relu"}


def act_fn(name):
    if name == "gelu_tanh" and "gelu_tanh_exact" in PERTURB:
        return ACTS["gelu"]
    if name == "silu" and "silu_gelu" in PERTURB:
        return ACTS["gelu"]
    if name == "relu" and "relu_gelu" in PERTURB:
        return ACTS["gelu"]
    return ACTS[name]


def mlp_fwd(x, W, p, m):
    act = m["act"]
    if act in GATED:
        inner = GATED[act]
        if act == "geglu" and "geglu_tanh" in PERTURB:
            inner = "gelu_tanh"
        if act == "reglu" and "reglu_silu" in PERTURB:
            inner = "silu"
        gate, up = linear(x, W, f"{p}.gate"), linear(x, W, f"{p}.up")
        if "gated_swap" in PERTURB:
            gate, up = up, gate
        h = ACTS[inner](gate) * up
    else:
        h = act_fn(act)(linear(x, W, f"{p}.up"))
    return linear(h, W, f"{p}.down")


def forward(cfg, W, ids, pad, dtype):
    W = {k: v.to(dtype) for k, v in W.items()}
    B, T = ids.shape
    E = W["embed.tokens.weight"]
    x = E[ids]
    if "no_embed_scale" not in PERTURB:
        x = x * cfg["embed_scale"]
    if cfg["position"]["kind"] == "sinusoidal":
        x = x + sinusoidal_table(T, cfg["d"], dtype)[None]
    S = cfg["stack"]
    layers = cfg["layers"]
    for i, layer in enumerate(layers):
        for sname, (kind, a) in zip(sublayer_names(layer), layer):
            p = f"{S}.layers.{i}.{sname}"
            if kind == "attention" and "block_masks" in PERTURB and layers[i ^ 1] is not layer:
                a = dict(a, mask=layers[i ^ 1][0][1]["mask"])

            def f(h):
                return attention(cfg, h, W, p, a, pad) if kind == "attention" else mlp_fwd(h, W, p, a)

            if cfg["placement"] == "pre" or "pre_norm" in PERTURB:
                x = x + f(norm(cfg, x, W, f"{p}.norm"))
            else:
                x = norm(cfg, x + f(x), W, f"{p}.norm")
    if cfg["final_norm"] and "no_final_norm" not in PERTURB:
        x = norm(cfg, x, W, f"{S}.final_norm")
    hidden = x
    head = cfg["head"]
    w = E if cfg["tied"] else W["head.lm.weight"]
    h = hidden if "no_lm_scale" in PERTURB else hidden * head["scale"]
    b = W["head.lm.bias"] if head["bias"] and "no_lm_bias" not in PERTURB else None
    logits = F.linear(h, w, b)
    return hidden, logits


# ----------------------------------------------------------------------------- driver

B, T = 2, 7


def rel(a, b, keep=None):
    if keep is not None:
        a, b = a[keep], b[keep]
    return ((a - b).abs().max() / b.abs().max()).item()


def build(fx, index, out_root):
    cfg = fx["cfg"]
    gen = torch.Generator().manual_seed(1000 + index)
    W = make_weights(cfg, gen)
    ids = torch.randint(0, cfg["vocab"], (B, T), generator=gen, dtype=torch.int64)
    inputs = {"input_ids": ids}
    pad = None
    if fx["lengths"] is not None:
        pad = torch.zeros(B, T, dtype=torch.int64)
        for r, n in enumerate(fx["lengths"]):
            if fx.get("pad_side", "right") == "left":
                pad[r, T - n:] = 1
            else:
                pad[r, :n] = 1
        ids.masked_fill_(pad == 0, 1)  # padding id (any id works; its rows are not compared)
        inputs["attention_mask"] = pad
    hidden, logits = forward(cfg, W, ids, pad, torch.float64)
    h32, l32 = forward(cfg, W, ids, pad, torch.float32)
    keep = pad.bool() if pad is not None else None
    f32_err = max(rel(h32.double(), hidden, keep), rel(l32.double(), logits, keep))
    assert torch.isfinite(hidden[keep] if keep is not None else hidden).all()

    d = os.path.join(out_root, fx["name"])
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, "model.arch"), "w") as f:
        f.write(fx["arch"])
    save_file(W, os.path.join(d, "model.safetensors"))
    save_file({k: v.contiguous() for k, v in inputs.items()}, os.path.join(d, "inputs.safetensors"))
    save_file({"hidden": hidden.float().contiguous(), "logits": logits.float().contiguous()},
              os.path.join(d, "outputs.safetensors"))
    n = sum(v.numel() for v in W.values())
    print(f"{fx['name']:<28} {len(W):3d} tensors {n:6d} params; float32 forward vs float64: {f32_err:.1e}")


def main(argv):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", default=OUT, help="root directory (default: %(default)s)")
    ap.add_argument("--perturb", default="", help="comma-separated deliberate semantic errors")
    ap.add_argument("--list-perturbations", action="store_true")
    ap.add_argument("names", nargs="*", help="fixtures to write (default: all)")
    args = ap.parse_args(argv[1:])
    if args.list_perturbations:
        for k, v in PERTURBATIONS.items():
            print(f"{k:<16} {v}")
        return
    for p in filter(None, args.perturb.split(",")):
        if p not in PERTURBATIONS:
            sys.exit(f"unknown perturbation `{p}` (see --list-perturbations)")
        PERTURB.add(p)
    if PERTURB and os.path.abspath(args.out) == os.path.abspath(OUT):
        sys.exit("--perturb writes wrong references: give --out another directory")
    for i, fx in enumerate(fixtures()):
        if not args.names or fx["name"] in args.names:
            build(fx, i, args.out)


if __name__ == "__main__":
    main(sys.argv)

#!/usr/bin/env python3
"""Conformance fixtures for the TTT and S4D cells, made with the authors' reference code.

Neither has a `transformers` class, so this script runs the reference modules themselves:

  * ttt.py of github.com/test-time-training/ttt-lm-pytorch (TTTForCausalLM, TTT-Linear and
    TTT-MLP), written to compiler/tests/fixtures/ttt_linear/ and .../ttt_mlp/
  * models/s4/s4d.py of github.com/state-spaces/s4 (the S4D layer), written to
    compiler/tests/fixtures/s4d/

Their code is NOT part of this repository (never copy it in). Get the two files first, e.g.

    git clone https://github.com/test-time-training/ttt-lm-pytorch /tmp/ttt-lm-pytorch
    git clone https://github.com/state-spaces/s4 /tmp/s4

(or, in a session with the `fetch` tool: fetch both repos and `git show HEAD:ttt.py` /
`git show HEAD:models/s4/s4d.py` out of the mirrors into /tmp). The fixtures committed were
made from ttt-lm-pytorch commit cd831db and s4 commit e757cef. Then

    pip install einops        # s4d.py imports it
    HF_HUB_OFFLINE=1 python3 tools/make_fixtures_ttt_s4.py \\
        --ttt /tmp/ttt-lm-pytorch/ttt.py --s4d /tmp/s4/models/s4/s4d.py
    # or: TTT_PY=... S4D_PY=... python3 tools/make_fixtures_ttt_s4.py [ttt_linear ttt_mlp s4d]
    # add --check to regenerate into a temp dir and compare with the committed files

Compatibility shims (applied here, the reference files are used unmodified):
  * ttt.py was written for transformers 4.x: its `_tied_weights_keys = ["lm_head.weight"]`
    list is replaced by the transformers-5 mapping {"lm_head.weight": "model.embed_tokens.weight"}
    (same tying), and the model is called with return_dict=False (transformers 5's ModelOutput
    renames `cache_params`, which ttt.py's output classes reject).
  * s4d.py imports `DropoutNd` from the s4 repository's `src.models.nn`; it is only used when
    dropout > 0, so a stub module is injected (dropout is 0 here).

As in tools/make_fixtures.py, weights are float32 and perturbed away from their init, the
reference outputs / loss / gradients are computed from them in float64 and stored as float32,
and the script is seeded and idempotent (byte-identical files on every run).
"""

import argparse
import copy
import filecmp
import importlib.util
import os
import shutil
import sys
import tempfile
import types
import zlib

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import torch  # noqa: E402
import transformers as tf  # noqa: E402
from safetensors.torch import save_file  # noqa: E402

tf.logging.set_verbosity_error()
tf.logging.disable_progress_bar()

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OUT_ROOT = os.path.join(ROOT, "compiler", "tests", "fixtures")


def seed_of(name):
    return zlib.crc32(name.encode()) & 0x7FFFFFFF


def f32(d):
    return {k: v.detach().to(torch.float32).contiguous() for k, v in d.items()}


def rel_diff(a, b):
    return ((a.double() - b.double()).abs().max() / b.double().abs().max().clamp_min(1e-30)).item()


def load_module(name, path):
    spec = importlib.util.spec_from_file_location(name, path)
    mod = importlib.util.module_from_spec(spec)
    sys.modules[name] = mod
    spec.loader.exec_module(mod)
    return mod


# ------------------------------------------------------------------------------------ TTT


def make_ttt(name, ttt_py, out_root):
    ttt = load_module("ttt_reference", ttt_py)
    ttt.TTTForCausalLM._tied_weights_keys = {"lm_head.weight": "model.embed_tokens.weight"}
    inner = {"ttt_linear": "linear", "ttt_mlp": "mlp"}[name]
    cfg = ttt.TTTConfig(
        vocab_size=97, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
        num_attention_heads=4, max_position_embeddings=16, rms_norm_eps=1e-6,
        rope_theta=10000.0, mini_batch_size=4, ttt_base_lr=1.0, ttt_layer_type=inner,
        # TTT-Linear keeps ttt.py's default (no gate); TTT-MLP exercises the output gate.
        use_gate=(inner == "mlp"), share_qk=False, pre_conv=False, use_cache=False,
        tie_word_embeddings=True, pad_token_id=None, bos_token_id=0, eos_token_id=0,
    )
    torch.manual_seed(seed_of(name))
    model = ttt.TTTForCausalLM(cfg)
    with torch.no_grad():
        for pname, p in model.named_parameters():
            p.add_(0.1 * torch.randn_like(p))
            if pname.endswith("learnable_ttt_lr_weight"):
                # init N(0, 0.02): lr gate sigmoid(x . w + b) ~ 0.5 everywhere; widen it.
                p.add_(0.2 * torch.randn_like(p))
    model.eval()
    assert model.lm_head.weight is model.model.embed_tokens.weight

    g = torch.Generator().manual_seed(20 + len(name))
    x = torch.randint(0, 97, (2, 12), generator=g, dtype=torch.int64)
    inputs = {"input_ids": x}

    out_dir = os.path.join(out_root, name)
    os.makedirs(out_dir, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        model.save_pretrained(tmp, safe_serialization=True)
        for f in ("config.json", "model.safetensors"):
            shutil.copyfile(os.path.join(tmp, f), os.path.join(out_dir, f))

    def run(m):
        logits = m(input_ids=x, return_dict=False, use_cache=False)[0]
        hidden = m.model(input_ids=x, return_dict=False, use_cache=False)[0]
        return {"logits": logits, "hidden": hidden}

    with torch.no_grad():
        ref32 = run(model)
    m64 = copy.deepcopy(model).double().eval()
    with torch.no_grad():
        ref64 = run(m64)
    worst = max(rel_diff(ref32[k], ref64[k]) for k in ref64)
    outputs = f32(ref64)

    m64.zero_grad(set_to_none=True)
    loss = m64(input_ids=x, labels=x, return_dict=False, use_cache=False)[0]
    loss.backward()
    outputs["loss"] = loss.detach().to(torch.float32).reshape(())
    from safetensors import safe_open

    with safe_open(os.path.join(out_dir, "model.safetensors"), "pt") as f:
        saved = list(f.keys())
    params = dict(m64.named_parameters(remove_duplicate=False))
    grads = {k: params[k].grad for k in saved}
    assert len(grads) == len({id(p) for p in params.values()}), name

    save_file(inputs, os.path.join(out_dir, "inputs.safetensors"))
    save_file(outputs, os.path.join(out_dir, "outputs.safetensors"))
    save_file(f32(grads), os.path.join(out_dir, "grads.safetensors"))
    n = sum(p.numel() for p in model.parameters())
    print(f"{name:<11} params {n:>7,}  f32-vs-f64 {worst:.1e}  loss {loss.item():.4f}  "
          + ", ".join(f"{k} {list(v.shape)}" for k, v in outputs.items()))


# ------------------------------------------------------------------------------------ S4D


def make_s4d(s4d_py, out_root):
    name = "s4d"
    # s4d.py: `from src.models.nn import DropoutNd` (only used for dropout > 0).
    for mod in ("src", "src.models", "src.models.nn"):
        sys.modules.setdefault(mod, types.ModuleType(mod))
    sys.modules["src.models.nn"].DropoutNd = None
    s4d = load_module("s4d_reference", s4d_py)

    H, N, L, B = 8, 16, 13, 2
    torch.manual_seed(seed_of(name))
    layer = s4d.S4D(d_model=H, d_state=N, dropout=0.0, transposed=True)
    with torch.no_grad():
        for pname, p in layer.named_parameters():
            # log_A_real starts at log(0.5) everywhere and A_imag at pi * n: make both
            # per-channel so a transposed or broadcast index shows.
            p.add_(0.1 * torch.randn_like(p))
    layer.eval()
    g = torch.Generator().manual_seed(30)
    u = torch.randn(B, H, L, generator=g, dtype=torch.float32)

    def run(m, u):
        k = m.kernel(L=L)
        # the same steps as S4D.forward, to expose the intermediate values
        k_f = torch.fft.rfft(k, n=2 * L)
        u_f = torch.fft.rfft(u, n=2 * L)
        y = torch.fft.irfft(u_f * k_f, n=2 * L)[..., :L]
        y = y + u * m.D.unsqueeze(-1)
        out, _ = m(u)
        assert torch.allclose(out, m.output_linear(m.activation(y)), rtol=0, atol=0)
        return {"y": out, "kernel": k, "pre_act": y}

    with torch.no_grad():
        ref32 = run(layer, u)
        l64 = copy.deepcopy(layer).double()
        ref64 = run(l64, u.double())
    worst = max(rel_diff(ref32[k], ref64[k]) for k in ref64)

    out_dir = os.path.join(out_root, name)
    os.makedirs(out_dir, exist_ok=True)
    save_file({k: v.detach().contiguous() for k, v in layer.state_dict().items()},
              os.path.join(out_dir, "model.safetensors"))
    save_file({"u": u}, os.path.join(out_dir, "inputs.safetensors"))
    save_file(f32(ref64), os.path.join(out_dir, "outputs.safetensors"))
    n = sum(p.numel() for p in layer.parameters())
    print(f"{name:<11} params {n:>7,}  f32-vs-f64 {worst:.1e}  "
          + ", ".join(f"{k} {list(v.shape)}" for k, v in ref64.items()))


# ------------------------------------------------------------------------------------ main


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("names", nargs="*", default=["ttt_linear", "ttt_mlp", "s4d"])
    ap.add_argument("--ttt", default=os.environ.get("TTT_PY"), help="path of ttt-lm-pytorch's ttt.py (or $TTT_PY)")
    ap.add_argument("--s4d", default=os.environ.get("S4D_PY"), help="path of s4's models/s4/s4d.py (or $S4D_PY)")
    ap.add_argument("--check", action="store_true", help="regenerate in a temp dir and compare")
    args = ap.parse_args()
    for n in args.names:
        if n not in ("ttt_linear", "ttt_mlp", "s4d"):
            ap.error(f"unknown fixture {n!r}")
    if any(n.startswith("ttt") for n in args.names) and not (args.ttt and os.path.exists(args.ttt)):
        ap.error("give the path of ttt.py with --ttt or $TTT_PY (see the docstring)")
    if "s4d" in args.names and not (args.s4d and os.path.exists(args.s4d)):
        ap.error("give the path of s4d.py with --s4d or $S4D_PY (see the docstring)")

    def make_all(root):
        for n in args.names:
            if n == "s4d":
                make_s4d(args.s4d, root)
            else:
                make_ttt(n, args.ttt, root)

    if not args.check:
        make_all(OUT_ROOT)
        return
    bad = 0
    with tempfile.TemporaryDirectory() as tmp:
        make_all(tmp)
        for n in args.names:
            for f in sorted(os.listdir(os.path.join(tmp, n))):
                a, b = os.path.join(tmp, n, f), os.path.join(OUT_ROOT, n, f)
                if not os.path.exists(b) or not filecmp.cmp(a, b, shallow=False):
                    print(f"DIFFERS: {n}/{f}")
                    bad += 1
    print("all fixtures reproduce byte for byte" if not bad else f"{bad} files differ")
    sys.exit(1 if bad else 0)


if __name__ == "__main__":
    main()

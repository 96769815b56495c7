#!/usr/bin/env python3
"""Compares a cuda run's outputs (arch-run --out) with a Hugging Face fixture's recorded
outputs: max|ours - theirs| / max|theirs| per output, over the real tokens of padded rows
(what a model computes at padding is unspecified). Prints one line per output and exits
non-zero when any error exceeds the tolerance.

  device_compare.py FIXTURE_DIR OURS.safetensors [--tol 1e-4]
  device_compare.py FIXTURE_DIR OURS.safetensors --generated generate.safetensors

With --generated: generation (arch-run --max-new-tokens --save-logits) against what
transformers' `generate` recorded: the tokens equal, the logits within the tolerance.
"""
import argparse
import sys

import numpy as np
from safetensors.numpy import load_file

# Output names that differ from the fixture's (ours -> theirs).
RENAMED = {"classifier_logits": "seq_relationship_logits"}


def main():
    p = argparse.ArgumentParser()
    p.add_argument("fixture")
    p.add_argument("ours")
    p.add_argument("--tol", type=float, default=1e-4)
    p.add_argument("--generated")
    a = p.parse_args()
    ours = load_file(a.ours)
    if a.generated:
        want = load_file(f"{a.fixture}/{a.generated}")
        same = ours["tokens"].shape == want["tokens"].shape and (ours["tokens"] == want["tokens"]).all()
        scale = float(np.abs(want["logits"]).max()) or 1.0
        err = float(np.abs(ours["logits"].astype(np.float64) - want["logits"]).max()) / scale
        print(f"  tokens {'equal' if same else 'DIFFER'}, logits {err:.3e}")
        sys.exit(0 if same and err <= a.tol else 1)
    theirs = load_file(f"{a.fixture}/outputs.safetensors")
    inputs = load_file(f"{a.fixture}/inputs.safetensors")
    mask = inputs.get("attention_mask")
    worst = 0.0
    compared = 0
    for name, got in sorted(ours.items()):
        want = theirs.get(RENAMED.get(name, name))
        if want is None or want.shape != got.shape:
            continue
        if mask is not None and got.ndim == 3 and got.shape[:2] == mask.shape:
            keep = mask.astype(bool)
            got, want = got[keep], want[keep]
        scale = float(np.abs(want).max()) or 1.0
        err = float(np.abs(got.astype(np.float64) - want).max()) / scale
        if not np.isfinite(err):
            err = float("inf")
        print(f"  {name}: {err:.3e}")
        worst = max(worst, err)
        compared += 1
    if compared == 0:
        print("  nothing to compare")
        sys.exit(1)
    sys.exit(0 if worst <= a.tol else 1)


if __name__ == "__main__":
    main()

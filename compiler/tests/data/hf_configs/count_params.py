"""Exact Hugging Face parameter counts of the configs in this folder.

Run: HF_HUB_OFFLINE=1 python3 count_params.py [CONFIG.json ...]
Builds `architectures[0]` of each config on the meta device (no weights, no download) and
counts unique parameters (a tied matrix once). compiler/tests/import_hf.rs holds the results.
"""
import json
import os
import sys

os.environ.setdefault("HF_HUB_OFFLINE", "1")
import torch  # noqa: E402
import transformers  # noqa: E402
from transformers import AutoConfig  # noqa: E402


def count(path, architecture=None):
    with open(path) as f:
        d = json.load(f)
    arch = architecture or d["architectures"][0]
    config = AutoConfig.for_model(**d)
    with torch.device("meta"):
        model = getattr(transformers, arch)(config)
    seen = set()
    n = 0
    for p in model.parameters():  # parameters() already yields a shared tensor once
        if id(p) not in seen:
            seen.add(id(p))
            n += p.numel()
    return arch, n


if __name__ == "__main__":
    here = os.path.dirname(os.path.abspath(__file__))
    paths = sys.argv[1:] or sorted(
        os.path.join(here, f) for f in os.listdir(here) if f.endswith(".json")
    )
    print(f"transformers {transformers.__version__}, torch {torch.__version__}")
    for p in paths:
        arch, n = count(p)
        print(f"{os.path.basename(p)}\t{arch}\t{n}")

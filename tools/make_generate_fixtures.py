#!/usr/bin/env python3
"""Greedy-generation fixtures, made with Hugging Face `transformers` `generate()`.

For each model below this reads the committed tiny model in `compiler/tests/fixtures/hf/<name>/`
(`config.json` + `model.safetensors`, written by tools/make_fixtures.py; they are loaded with
`from_pretrained(dir)` and never re-created or touched) and writes next to them:

    generate.safetensors          (gpt2, openai_gpt, llama, llama3_rope, mamba, rwkv, t5, bart)
    generate_padded.safetensors   (gpt2 only: a left-padded batch, like llama's)

with these tensors:

    input_ids       int64 [B, T]   the prompt (decoder-only) or the encoder input (t5, bart).
                                   Ids are drawn from a seeded generator in [0, vocab), never a
                                   special id the config defines (pad / bos / eos /
                                   decoder_start). Decoder-only: B = 2, T = 5, every row full
                                   length, except:
                                     llama, llama3_rope generate.safetensors and gpt2 generate_padded.safetensors:
                                     B = 3, T = 5, LEFT-padded: row 0 has 5 real tokens, row 1 has
                                     3 (2 pads on the left), row 2 has 4 (1 pad on the left); the
                                     padded slots hold id 0.
                                   Encoder-decoder: B = 2, T = 6, row 1 RIGHT-padded by 2 (pad id
                                   of the config: t5 0, bart 1).
    attention_mask  int64 [B, T]   only where a row is padded (llama, gpt2 padded, t5, bart):
                                   1 = real token, 0 = padding.
    decoder_start_token_id  int64 0-d   (t5, bart) the config's decoder_start_token_id
                                   (t5: 0, the pad id; bart: 2, the eos id). Generation starts
                                   from it; there are no decoder_input_ids.
    tokens          int64          what `model.generate(...)` returned:
                                     decoder-only     [B, T + 8]  the prompt (pads included) then
                                                                  the 8 new tokens;
                                     encoder-decoder  [B, 1 + 8]  decoder_start_token_id then the
                                                                  8 new tokens.
    logits          float32 [B, 8, vocab]  the raw logits (`output_logits=True`, before any
                                   logits processor; none is active here) from which step s
                                   chose new token s; tokens[:, -8 + s] == argmax(logits[:, s]).
    min_gap         float32 0-d    min over rows and steps of (largest - second-largest logit):
                                   how far the greedy choices are from a tie (> 1e-3 by
                                   construction: the prompt seed is retried until it is).

Seeds: each file has a base seed; seeds base, base + 1000, base + 2000, ... are tried in turn
and the first one is kept for which min_gap > 1e-3 and the rows' 8 new tokens are not all the
same sequence (these tiny random models tend to repeat one token, and T5's tends to emit 0 in
every row; distinct rows at least make a mixed-up batch visible). The seed used is printed.

Generation settings: greedy (`do_sample=False, num_beams=1`), `max_new_tokens = min_new_tokens
= 8`, `eos_token_id=None` (no early stop: every row gets exactly 8 new tokens, EOS may be
generated like any other token), `forced_eos_token_id=None` / `forced_bos_token_id=None` (BART's
config has forced_eos_token_id 2, which would otherwise force the last token), no repetition
penalty, `use_cache=True` (KV cache for the transformers, recurrent state for Mamba / RWKV,
whose configs say use_cache=False). The model's `generation_config` is replaced by exactly
these settings, because `generate()` fills every unset (None) field from it.

Positions under left padding (transformers 5.25, GenerationMixin.generate ->
`_prepare_position_ids_for_generation`): when an `attention_mask` is given and the model's
forward takes `position_ids` (GPT-2, LLaMA), generate passes

    position_ids = cumsum(attention_mask, -1) - 1, with the padded slots set to 0

(older transformers versions set them to 1; padded slots are masked as keys and their
outputs are never used, so the value does not matter), i.e. every row's first real token is
at position 0, and each new token gets the previous last position + 1. So a row with p left
pads has its new token s at position T - p + s, not T + s. For GPT-2 (learned absolute
positions) this matters, and the script checks that the padded batch differs from what
positions 0..T+s-1 would give; for LLaMA (RoPE, relative) it changes nothing beyond rounding.
The padded slots are masked out as keys (attention_mask, extended by 1s for the new tokens).
Where no attention_mask is stored, generate is still given an all-ones one (so it never infers
a mask from pad ids); that changes nothing.

Numerics: the weights are the committed float32 ones; the model is converted to float64
(`model.double()`) and `generate` runs in float64. `generate` itself rounds each step's
last-position logits to float32 (`outputs.logits[:, -1].to(dtype=torch.float32)` in
GenerationMixin._sample, transformers 5.25) before taking the argmax and before returning
them as `output_logits`, so the stored logits are the float64 logits rounded to float32, and
the greedy choice is the argmax of those.
The float64 logits are also captured with a forward hook (they round to exactly generate's
float32 `output_logits`, checked) for the comparisons below. Some HF code paths compute in
float32 even in a float64 model, so the references are "float32-or-better" there: LLaMA's RoPE
angles, Mamba's scan, RMSNorms and final logits (`.float()`), RWKV's WKV keys and, in the
stateful path generate uses, RWKV's WKV state (num / den / max are float32 tensors).

Checks the script prints per file: (1) the float32 model's greedy tokens equal the float64
ones, and the largest relative logits difference (max |l32 - l64| / max |l64|, ~3e-7);
(2) `generate` against a naive loop that re-runs the full forward (no cache / state) on the
whole sequence each step: tokens equal, logits within ~1e-15 for the transformers and ~5e-8
for mamba and rwkv (the float32 internals above) -- i.e. the KV cache, and for mamba and rwkv
the recurrent state that generate carries between single-token steps, are right; (3) the
forward calls generate made (input length, which cache / state argument, position_ids).

RWKV workaround: in transformers 5.25, RWKV's single-token step with a state broadcasts
`hidden` [B, 1, H] against the previous token `state[i][:, :, layer]` [B, H] to [B, B, H], so
for B > 1 rows are mixed and batched generate is wrong (the script prints that it differs).
rwkv is therefore generated one row at a time (B = 1 per call, see run_generate_rows) and the
rows are concatenated. OpenAI-GPT has no KV cache: its generate re-runs the whole sequence.

Usage (no network: the models are read from the fixture directories):

    HF_HUB_OFFLINE=1 python3 tools/make_generate_fixtures.py            # every model
    HF_HUB_OFFLINE=1 python3 tools/make_generate_fixtures.py gpt2 t5    # some of them
    HF_HUB_OFFLINE=1 python3 tools/make_generate_fixtures.py --check    # regenerate in a temp
                                                                        # dir and compare

Seeded and idempotent: running it twice writes byte-identical files. Tested with torch 2.15
(CPU) and transformers 5.25.
"""

import copy
import filecmp
import inspect
import os
import sys
import tempfile

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import torch  # noqa: E402
import transformers as tf  # noqa: E402
from safetensors.torch import save_file  # noqa: E402

tf.logging.set_verbosity_error()
tf.logging.disable_progress_bar()

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
HF_ROOT = os.path.join(ROOT, "compiler", "tests", "fixtures", "hf")

NEW = 8            # new tokens per row
MIN_GAP = 1e-3     # required top-1 / top-2 logit gap
MAX_TRIES = 100

# name -> (HF class, base seed)
MODELS = {
    "gpt2": ("GPT2LMHeadModel", 101),
    "openai_gpt": ("OpenAIGPTLMHeadModel", 102),
    "llama": ("LlamaForCausalLM", 103),
    "mamba": ("MambaForCausalLM", 104),
    "rwkv": ("RwkvForCausalLM", 105),
    "t5": ("T5ForConditionalGeneration", 106),
    "bart": ("BartForConditionalGeneration", 107),
    "llama3_rope": ("LlamaForCausalLM", 108),
}

# (file, variant) per model; the variant picks the batch layout.
FILES = {name: [("generate.safetensors", "plain")] for name in MODELS}
FILES["llama"] = [("generate.safetensors", "left_padded")]
FILES["llama3_rope"] = [("generate.safetensors", "left_padded")]
FILES["gpt2"] = [("generate.safetensors", "plain"), ("generate_padded.safetensors", "left_padded")]

# Models generated one row at a time (see run_generate_rows): RWKV's batched single-token
# state step is broken in transformers 5.25.
GENERATE_PER_ROW = {"rwkv"}

LEFT_PAD_LENGTHS = [5, 3, 4]   # B = 3, T = 5
ENC_LENGTHS = [6, 4]           # B = 2, T = 6, row 1 right-padded by 2
PLAIN_SHAPE = (2, 5)


# --------------------------------------------------------------------------- helpers


def ids(gen, shape, lo, hi, avoid=()):
    """Random token ids in [lo, hi) that avoid the given ids (same as tools/make_fixtures.py)."""
    x = torch.randint(lo, hi, shape, generator=gen, dtype=torch.int64)
    for a in avoid:
        while (x == a).any():
            x = torch.where(x == a, torch.randint(lo, hi, shape, generator=gen, dtype=torch.int64), x)
    return x


def rel_diff(a, b):
    return ((a.double() - b.double()).abs().max() / b.double().abs().max().clamp_min(1e-30)).item()


def special_ids(cfg):
    out = set()
    for k in ("pad_token_id", "bos_token_id", "eos_token_id", "decoder_start_token_id"):
        v = getattr(cfg, k, None)
        if v is None:
            continue
        out.update(v if isinstance(v, (list, tuple)) else [v])
    return tuple(sorted(out))


def accepts(model, arg):
    return arg in inspect.signature(model.forward).parameters


def make_inputs(cfg, variant, seed):
    """Returns the dict of int64 tensors that go to the file (and to generate)."""
    g = torch.Generator().manual_seed(seed)
    avoid = special_ids(cfg)
    V = cfg.vocab_size
    if cfg.is_encoder_decoder:
        B, T = len(ENC_LENGTHS), max(ENC_LENGTHS)
        x = ids(g, (B, T), 0, V, avoid)
        mask = torch.zeros(B, T, dtype=torch.int64)
        for b, n in enumerate(ENC_LENGTHS):
            mask[b, :n] = 1  # right padding
        x = torch.where(mask.bool(), x, torch.full_like(x, cfg.pad_token_id))
        return {"input_ids": x, "attention_mask": mask}
    if variant == "left_padded":
        B, T = len(LEFT_PAD_LENGTHS), max(LEFT_PAD_LENGTHS)
        x = ids(g, (B, T), 0, V, avoid)
        mask = torch.zeros(B, T, dtype=torch.int64)
        for b, n in enumerate(LEFT_PAD_LENGTHS):
            mask[b, T - n:] = 1  # left padding
        x = torch.where(mask.bool(), x, torch.zeros_like(x))  # pad id 0 in the padded slots
        return {"input_ids": x, "attention_mask": mask}
    return {"input_ids": ids(g, PLAIN_SHAPE, 0, V, avoid)}


def generation_config(cfg):
    pad = getattr(cfg, "pad_token_id", None)
    pad = 0 if pad is None else pad  # gpt2, openai_gpt, llama, rwkv define none
    kw = dict(do_sample=False, num_beams=1, max_new_tokens=NEW, min_new_tokens=NEW,
              eos_token_id=None, bos_token_id=None, pad_token_id=pad,
              forced_eos_token_id=None, forced_bos_token_id=None, repetition_penalty=1.0,
              no_repeat_ngram_size=0, use_cache=True, output_logits=True,
              return_dict_in_generate=True)
    if cfg.is_encoder_decoder:
        kw["decoder_start_token_id"] = cfg.decoder_start_token_id
    return tf.GenerationConfig(**kw)


def gen_kwargs(model, inputs):
    kw = dict(inputs)
    if not model.config.is_encoder_decoder and "attention_mask" not in kw and accepts(model, "attention_mask"):
        # All ones, so generate never tries to infer a mask from pad ids in the prompt.
        kw["attention_mask"] = torch.ones_like(kw["input_ids"])
    return kw


def run_generate(model, inputs):
    """One `model.generate` call on the whole batch.

    Returns (tokens, logits [B, NEW, V], calls): the logits are those of the model's own dtype
    (float64 for the reference), captured with a forward hook from every forward call generate
    makes (the last position of each); generate's `output_logits` are exactly these rounded to
    float32 (checked). `calls` describes each forward call (input shape, cache argument,
    position_ids).
    """
    gc = generation_config(model.config)
    model.generation_config = copy.deepcopy(gc)  # generate() fills unset fields from this
    calls, captured = [], []

    def pre_hook(mod, args, kwargs):
        x = kwargs.get("decoder_input_ids") if model.config.is_encoder_decoder else kwargs.get("input_ids")
        state = None
        for k in ("past_key_values", "cache", "cache_params", "state"):
            if kwargs.get(k) is not None:
                state = k
        pos = kwargs.get("position_ids")
        calls.append((tuple(x.shape) if x is not None else None, state,
                      None if pos is None else pos.tolist()))

    def hook(mod, args, kwargs, output):
        captured.append(output.logits[:, -1].detach().clone())

    h1 = model.register_forward_pre_hook(pre_hook, with_kwargs=True)
    h2 = model.register_forward_hook(hook, with_kwargs=True)
    try:
        with torch.no_grad():
            out = model.generate(**gen_kwargs(model, inputs), generation_config=gc)
    finally:
        h1.remove()
        h2.remove()
    returned = torch.stack(list(out.logits), dim=1)
    logits = torch.stack(captured, dim=1)
    assert returned.dtype == torch.float32, returned.dtype
    assert torch.equal(logits.to(torch.float32), returned), "captured logits != generate's output_logits"
    return out.sequences, logits, calls


def run_generate_rows(model, inputs):
    """`run_generate` one batch row at a time (B = 1 each), concatenated.

    Workaround for RWKV in transformers 5.25: with a recurrent state and a single new token,
    RwkvSelfAttention.extract_key_value / RwkvFeedForward.forward take `shifted =
    state[i][:, :, layer]` of shape [B, H] and mix it with `hidden` [B, 1, H], which broadcasts
    to [B, B, H] when B > 1: every step after the first mixes each row with every other row's
    previous token (the logits come out as [B, B, V]) and batched generate is wrong. With
    B = 1 the shapes agree and the step is right.
    """
    B = inputs["input_ids"].shape[0]
    parts = [run_generate(model, {k: v[b:b + 1] for k, v in inputs.items()}) for b in range(B)]
    tokens = torch.cat([p[0] for p in parts], dim=0)
    logits = torch.cat([p[1] for p in parts], dim=0)
    return tokens, logits, parts[0][2]


def new_tokens(model, tokens):
    return tokens[:, -NEW:]


def naive_loop(model, inputs, arange_positions=False):
    """Greedy decoding by re-running the full forward (no cache/state) on the whole sequence."""
    cfg = model.config
    outs = []
    with torch.no_grad():
        if cfg.is_encoder_decoder:
            B = inputs["input_ids"].shape[0]
            dec = torch.full((B, 1), cfg.decoder_start_token_id, dtype=torch.int64)
            for _ in range(NEW):
                lg = model(input_ids=inputs["input_ids"], attention_mask=inputs["attention_mask"],
                           decoder_input_ids=dec, use_cache=False).logits[:, -1]
                outs.append(lg)
                dec = torch.cat([dec, lg.argmax(-1, keepdim=True)], dim=1)
            return dec, torch.stack(outs, dim=1)
        seq = inputs["input_ids"]
        mask = inputs.get("attention_mask", torch.ones_like(seq))
        for _ in range(NEW):
            kw = dict(input_ids=seq, use_cache=False)
            if accepts(model, "attention_mask") and "attention_mask" in inputs:
                kw["attention_mask"] = mask
            if accepts(model, "position_ids"):
                if arange_positions:
                    pos = torch.arange(seq.shape[1]).unsqueeze(0).expand_as(seq)
                else:
                    pos = (mask.cumsum(-1) - 1).masked_fill(mask == 0, 0)
                kw["position_ids"] = pos
            lg = model(**kw).logits[:, -1]
            outs.append(lg)
            seq = torch.cat([seq, lg.argmax(-1, keepdim=True)], dim=1)
            mask = torch.cat([mask, torch.ones_like(mask[:, :1])], dim=1)
    return seq, torch.stack(outs, dim=1)


def top2_gap(logits):
    """min over rows and steps of top-1 minus top-2, on the float32 logits that are stored."""
    t = logits.to(torch.float32).double().topk(2, dim=-1).values
    return (t[..., 0] - t[..., 1]).min().item()


# --------------------------------------------------------------------------- driver


def make_one(name, fname, variant, model32, model64, out_dir):
    cfg = model64.config
    _, base = MODELS[name]
    base = base * 10 + (1 if variant == "left_padded" else 0)
    generate = run_generate_rows if name in GENERATE_PER_ROW else run_generate
    for attempt in range(MAX_TRIES):
        seed = base + 1000 * attempt
        inputs = make_inputs(cfg, variant, seed)
        tokens, logits, calls = generate(model64, inputs)
        gap = top2_gap(logits)
        nt = new_tokens(model64, tokens)
        rows_differ = any(not torch.equal(nt[0], r) for r in nt[1:])
        if gap > MIN_GAP and rows_differ:
            break
        why = f"min_gap {gap:.2e} <= {MIN_GAP}" if gap <= MIN_GAP else "every row generated the same tokens"
        print(f"  {name}/{fname}: seed {seed}: {why}, retrying")
    else:
        sys.exit(f"{name}: no seed with min_gap > {MIN_GAP} and distinct rows in {MAX_TRIES} tries")

    B = inputs["input_ids"].shape[0]
    # Shape checks: exactly NEW new tokens per row, prompt echoed (decoder-only).
    if cfg.is_encoder_decoder:
        assert tokens.shape == (B, 1 + NEW), tokens.shape
        assert (tokens[:, 0] == cfg.decoder_start_token_id).all()
    else:
        T = inputs["input_ids"].shape[1]
        assert tokens.shape == (B, T + NEW), tokens.shape
        assert torch.equal(tokens[:, :T], inputs["input_ids"])
    assert logits.shape == (B, NEW, cfg.vocab_size), logits.shape
    # No logits processor changed a choice: every new token is the argmax of its raw logits.
    assert torch.equal(new_tokens(model64, tokens), logits.argmax(-1)), f"{name}: tokens != argmax(logits)"

    # float32 model vs float64.
    tokens32, logits32, _ = generate(model32, inputs)
    same32 = torch.equal(tokens32, tokens)
    f32_rel = rel_diff(logits32, logits)

    # Naive loop (full forward each step, no cache / state).
    ntok, nlog = naive_loop(model64, inputs)
    same_naive = torch.equal(ntok, tokens)
    naive_rel = rel_diff(nlog, logits)

    print(f"{name:<11} {fname:<28} seed {seed:<5} B x T {list(inputs['input_ids'].shape)}  "
          f"tokens {list(tokens.shape)}  min_gap {gap:.4f}")
    print(f"    f32 vs f64: tokens {'equal' if same32 else 'DIFFER'}, max rel logits diff {f32_rel:.1e}")
    if not same32:
        print(f"    f64 new tokens:\n{new_tokens(model64, tokens)}\n    f32 new tokens:\n{new_tokens(model64, tokens32)}")
    print(f"    generate vs naive full-forward loop: tokens {'equal' if same_naive else 'DIFFER'}, "
          f"max rel logits diff {naive_rel:.1e}")
    if not same_naive:
        print(f"    generate:\n{tokens}\n    naive:\n{ntok}")
    kinds = [(c[0], c[1]) for c in calls]
    print(f"    generate's forward calls (input shape, cache kwarg){' (row 0)' if name in GENERATE_PER_ROW else ''}: {kinds}")
    if name in GENERATE_PER_ROW:
        btok, blog, _ = run_generate(model64, inputs)
        print(f"    batched generate (B = {B}, not used): tokens {'equal' if torch.equal(btok, tokens) else 'DIFFER'}, "
              f"max rel logits diff {rel_diff(blog, logits):.1e}")
    if calls and calls[0][2] is not None:
        print(f"    position_ids of the first call: {calls[0][2]}; of the last: {calls[-1][2]}")
    if variant == "left_padded" and accepts(model64, "position_ids"):
        atok, alog = naive_loop(model64, inputs, arange_positions=True)
        print(f"    (with positions 0..T+s-1 instead: tokens {'equal' if torch.equal(atok, tokens) else 'DIFFER'}, "
              f"max rel logits diff {rel_diff(alog, logits):.1e})")

    out = {k: v.contiguous() for k, v in inputs.items()}
    if cfg.is_encoder_decoder:
        out["decoder_start_token_id"] = torch.tensor(cfg.decoder_start_token_id, dtype=torch.int64)
    out["tokens"] = tokens.to(torch.int64).contiguous()
    out["logits"] = logits.to(torch.float32).contiguous()
    out["min_gap"] = torch.tensor(gap, dtype=torch.float32)
    path = os.path.join(out_dir, fname)
    save_file(out, path)
    os.chmod(path, 0o644)
    return gap, f32_rel, same32, same_naive


def make(name, out_root):
    cls_name, _ = MODELS[name]
    src = os.path.join(HF_ROOT, name)
    cls = getattr(tf, cls_name)
    model32 = cls.from_pretrained(src).eval()
    assert model32.dtype == torch.float32
    model64 = copy.deepcopy(model32).double().eval()
    out_dir = os.path.join(out_root, name)
    os.makedirs(out_dir, exist_ok=True)
    res = []
    for fname, variant in FILES[name]:
        res.append(make_one(name, fname, variant, model32, model64, out_dir))
    return res


def main(argv):
    check = "--check" in argv
    names = [a for a in argv[1:] if not a.startswith("--")] or list(MODELS)
    for n in names:
        if n not in MODELS:
            sys.exit(f"unknown model {n!r}; known: {', '.join(MODELS)}")
    torch.set_num_threads(1)  # deterministic reductions
    if not check:
        for n in names:
            make(n, HF_ROOT)
        return
    bad = 0
    with tempfile.TemporaryDirectory() as tmp:
        for n in names:
            make(n, tmp)
            for fname, _ in FILES[n]:
                a, b = os.path.join(tmp, n, fname), os.path.join(HF_ROOT, n, fname)
                if not os.path.exists(b) or not filecmp.cmp(a, b, shallow=False):
                    print(f"DIFFERS: {n}/{fname}")
                    bad += 1
    print("all generate fixtures reproduce byte for byte" if not bad else f"{bad} files differ")
    sys.exit(1 if bad else 0)


if __name__ == "__main__":
    main(sys.argv)

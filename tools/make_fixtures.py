#!/usr/bin/env python3
"""Conformance fixtures for the reference evaluator, made with Hugging Face `transformers`.

For every model below this writes `compiler/tests/fixtures/hf/<name>/`:

    config.json         \\  exactly as `save_pretrained(dir, safe_serialization=True)` writes them
    model.safetensors   /   (HF parameter names, tied weights stored once as HF does)
    inputs.safetensors  input_ids [B,T] i64, and where the model uses them attention_mask,
                        token_type_ids, decoder_input_ids (i64)
    outputs.safetensors logits, hidden (+ encoder_hidden, pooler, seq_relationship_logits,
                        loss) as f32
    grads.safetensors   (gpt2, llama, mamba) d loss / d parameter, keyed by the HF name, f32

`model.arch` (the hand-written spec of the same tiny model) lives in the same directory and
is never touched by this script.

Usage (no network: every model is built from an explicit config):

    HF_HUB_OFFLINE=1 python3 tools/make_fixtures.py            # every model
    HF_HUB_OFFLINE=1 python3 tools/make_fixtures.py gpt2 t5    # some of them
    HF_HUB_OFFLINE=1 python3 tools/make_fixtures.py --check    # regenerate in a temp dir
                                                               # and compare with the committed files

The script is idempotent and seeded (torch.manual_seed per model, a separate seeded generator
for the inputs): running it twice writes byte-identical files. Tested with torch 2.15 (CPU)
and transformers 5.24.

Numerics: the weights are float32 (that is what is saved); the reference outputs, the loss and
the gradients are computed from those float32 weights in float64 and rounded to float32 at the
end, so they carry no float32 accumulation error of their own. Some HF code paths (LLaMA's
RMSNorm, T5's layer norm variance, Mamba's B/C) cast intermediates to float32 internally, so
the references are "float32-or-better" there. The float32 forward is checked against them and
the largest relative difference is printed (it is ~1e-6).

What each model computes is written down in compiler/tests/fixtures/hf/README.md, and
tools/check_fixtures.py re-derives every output from the weights without transformers.
"""

import copy
import filecmp
import os
import shutil
import sys
import tempfile
import zlib

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import torch  # noqa: E402
import transformers as tf  # noqa: E402
from safetensors.torch import save_file  # noqa: E402

tf.logging.set_verbosity_error()
tf.logging.disable_progress_bar()

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OUT_ROOT = os.path.join(ROOT, "compiler", "tests", "fixtures", "hf")


# --------------------------------------------------------------------------- helpers


def seed_of(name):
    return zlib.crc32(name.encode()) & 0x7FFFFFFF


def perturb(model, extra=None):
    """Move every parameter well away from its (often trivial) initial value.

    Matrices and embeddings get N(0, 0.1^2) noise (HF inits them with std 0.02, so this is
    what makes activations and logits non-trivial); norms' weights and biases, biases that
    init to zero, and the special vectors (Mamba's D and A_log, RWKV's time_* vectors, TTT's
    learnable_token_idx, ...) get the same N(0, 0.1^2) noise. `extra(name, p)` may then set
    model-specific values.
    """
    with torch.no_grad():
        for name, p in model.named_parameters():
            p.add_(0.1 * torch.randn_like(p))
            if extra is not None:
                extra(name, p)


def ids(gen, shape, lo, hi, avoid=()):
    """Random token ids in [lo, hi) that avoid the given ids (pad, special tokens)."""
    x = torch.randint(lo, hi, shape, generator=gen, dtype=torch.int64)
    for a in avoid:
        while (x == a).any():
            x = torch.where(x == a, torch.randint(lo, hi, shape, generator=gen, dtype=torch.int64), x)
    return x


def right_pad(x, lengths, pad_id):
    """Pad row b after lengths[b] tokens; returns (ids, mask)."""
    B, T = x.shape
    mask = torch.zeros(B, T, dtype=torch.int64)
    for b, n in enumerate(lengths):
        mask[b, :n] = 1
    x = torch.where(mask.bool(), x, torch.full_like(x, pad_id))
    return x, mask


def f32(d):
    return {k: v.detach().to(torch.float32).contiguous() for k, v in d.items()}


def rel_diff(a, b):
    return ((a.double() - b.double()).abs().max() / b.double().abs().max().clamp_min(1e-30)).item()


# --------------------------------------------------------------------------- models
#
# Each builder returns (model, inputs, run, notes) where
#   inputs: dict of int64 tensors (exactly what goes to inputs.safetensors)
#   run(model, inputs) -> dict of output tensors (any float dtype)
#   grads: whether to write the LM loss + gradients (no padding: labels = input_ids)


def std_run(base_attr, extra_outputs=()):
    def run(model, inputs):
        out = model(**inputs)
        base = getattr(model, base_attr) if base_attr else model
        hidden = base(**inputs).last_hidden_state
        res = {"logits": out.logits, "hidden": hidden}
        for key, attr in extra_outputs:
            res[key] = getattr(out, attr)
        return res

    return run


def gpt2():
    cfg = tf.GPT2Config(vocab_size=101, n_positions=16, n_embd=32, n_layer=2, n_head=4,
                        activation_function="gelu_new", layer_norm_epsilon=1e-5,
                        bos_token_id=0, eos_token_id=0, tie_word_embeddings=True)
    model = tf.GPT2LMHeadModel(cfg)
    perturb(model)
    g = torch.Generator().manual_seed(1)
    x = ids(g, (3, 9), 0, 101)
    x, mask = right_pad(x, [9, 6, 9], pad_id=0)
    return model, {"input_ids": x, "attention_mask": mask}, std_run("transformer"), True


def openai_gpt():
    cfg = tf.OpenAIGPTConfig(vocab_size=103, n_positions=16, n_embd=32, n_layer=2, n_head=4,
                             afn="gelu", layer_norm_epsilon=1e-5)
    model = tf.OpenAIGPTLMHeadModel(cfg)
    perturb(model)
    g = torch.Generator().manual_seed(2)
    x = ids(g, (2, 9), 0, 103)
    x, mask = right_pad(x, [9, 5], pad_id=0)
    return model, {"input_ids": x, "attention_mask": mask}, std_run("transformer"), False


def bert_inputs(g, vocab, lengths, T, first_segment):
    x = ids(g, (len(lengths), T), 1, vocab)
    x, mask = right_pad(x, lengths, pad_id=0)
    tt = torch.zeros_like(x)
    for b, (n, a) in enumerate(zip(lengths, first_segment)):
        tt[b, a:n] = 1
    return {"input_ids": x, "attention_mask": mask, "token_type_ids": tt}


def bert():
    cfg = tf.BertConfig(vocab_size=107, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                        intermediate_size=64, hidden_act="gelu", max_position_embeddings=16,
                        type_vocab_size=2, layer_norm_eps=1e-12, pad_token_id=0)
    model = tf.BertForPreTraining(cfg)
    perturb(model)
    g = torch.Generator().manual_seed(3)
    inputs = bert_inputs(g, 107, [9, 6, 8], 9, [4, 3, 5])

    def run(model, inputs):
        out = model(**inputs)
        base = model.bert(**inputs)
        return {"logits": out.prediction_logits, "seq_relationship_logits": out.seq_relationship_logits,
                "hidden": base.last_hidden_state, "pooler": base.pooler_output}

    return model, inputs, run, False


def bert_model():
    cfg = tf.BertConfig(vocab_size=109, hidden_size=48, num_hidden_layers=2, num_attention_heads=6,
                        intermediate_size=96, hidden_act="gelu", max_position_embeddings=12,
                        type_vocab_size=2, layer_norm_eps=1e-12, pad_token_id=0)
    model = tf.BertModel(cfg)  # with its pooler (add_pooling_layer=True)
    perturb(model)
    g = torch.Generator().manual_seed(4)
    inputs = bert_inputs(g, 109, [7, 4], 7, [3, 2])

    def run(model, inputs):
        out = model(**inputs)
        return {"hidden": out.last_hidden_state, "pooler": out.pooler_output}

    return model, inputs, run, False


def roberta():
    cfg = tf.RobertaConfig(vocab_size=111, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                           intermediate_size=64, hidden_act="gelu", max_position_embeddings=16 + 2,
                           type_vocab_size=1, layer_norm_eps=1e-5, pad_token_id=1, bos_token_id=0,
                           eos_token_id=2)
    model = tf.RobertaForMaskedLM(cfg)
    perturb(model)
    g = torch.Generator().manual_seed(5)
    x = ids(g, (3, 9), 0, 111, avoid=(1,))  # 1 is the pad id: never inside a sentence
    x, mask = right_pad(x, [9, 5, 7], pad_id=1)
    return model, {"input_ids": x, "attention_mask": mask}, std_run("roberta"), False


def albert():
    cfg = tf.AlbertConfig(vocab_size=113, embedding_size=16, hidden_size=32, num_hidden_layers=2,
                          num_attention_heads=4, intermediate_size=64, hidden_act="gelu_new",
                          num_hidden_groups=1, inner_group_num=1, max_position_embeddings=16,
                          type_vocab_size=2, layer_norm_eps=1e-12, pad_token_id=0,
                          classifier_dropout_prob=0.1)
    model = tf.AlbertForMaskedLM(cfg)
    perturb(model)
    g = torch.Generator().manual_seed(6)
    inputs = bert_inputs(g, 113, [9, 7], 9, [5, 3])
    return model, inputs, std_run("albert"), False


def electra():
    cfg = tf.ElectraConfig(vocab_size=127, embedding_size=16, hidden_size=32, num_hidden_layers=2,
                           num_attention_heads=4, intermediate_size=64, hidden_act="gelu",
                           max_position_embeddings=16, type_vocab_size=2, layer_norm_eps=1e-12,
                           pad_token_id=0)
    model = tf.ElectraForPreTraining(cfg)
    perturb(model)
    g = torch.Generator().manual_seed(7)
    inputs = bert_inputs(g, 127, [7, 7, 4], 7, [3, 4, 2])
    return model, inputs, std_run("electra"), False


def t5():
    cfg = tf.T5Config(vocab_size=131, d_model=32, d_kv=6, d_ff=64, num_layers=2, num_decoder_layers=2,
                      num_heads=4, relative_attention_num_buckets=8, relative_attention_max_distance=20,
                      feed_forward_proj="relu", layer_norm_epsilon=1e-6, tie_word_embeddings=True,
                      pad_token_id=0, eos_token_id=1, decoder_start_token_id=0, dropout_rate=0.1)
    model = tf.T5ForConditionalGeneration(cfg)

    def extra(name, p):
        if "relative_attention_bias" in name:
            p.add_(0.5 * torch.randn_like(p))  # make the bias matter next to q.k

    perturb(model, extra)
    g = torch.Generator().manual_seed(8)
    x = ids(g, (2, 11), 2, 131)
    x, mask = right_pad(x, [11, 7], pad_id=0)
    dec = ids(g, (2, 15), 2, 131)
    dec[:, 0] = 0  # decoder_start_token_id
    inputs = {"input_ids": x, "attention_mask": mask, "decoder_input_ids": dec}

    def run(model, inputs):
        out = model(**inputs, output_hidden_states=True)
        return {"logits": out.logits, "hidden": out.decoder_hidden_states[-1],
                "encoder_hidden": out.encoder_last_hidden_state}

    return model, inputs, run, False


def bart():
    cfg = tf.BartConfig(vocab_size=137, d_model=32, encoder_layers=2, decoder_layers=2,
                        encoder_attention_heads=4, decoder_attention_heads=4, encoder_ffn_dim=64,
                        decoder_ffn_dim=64, activation_function="gelu", max_position_embeddings=16,
                        scale_embedding=False, pad_token_id=1, bos_token_id=0, eos_token_id=2,
                        decoder_start_token_id=2, forced_eos_token_id=2, tie_word_embeddings=True)
    model = tf.BartForConditionalGeneration(cfg)
    perturb(model)
    with torch.no_grad():
        # A buffer, not a parameter; zero at init. Randomised so the evaluator must add it.
        model.final_logits_bias.copy_(0.5 * torch.randn_like(model.final_logits_bias))
    g = torch.Generator().manual_seed(9)
    x = ids(g, (2, 9), 3, 137)
    x, mask = right_pad(x, [9, 6], pad_id=1)
    dec = ids(g, (2, 7), 3, 137)
    dec[:, 0] = 2  # decoder_start_token_id
    inputs = {"input_ids": x, "attention_mask": mask, "decoder_input_ids": dec}

    def run(model, inputs):
        out = model(**inputs)
        base = model.model(**inputs)
        return {"logits": out.logits, "hidden": base.last_hidden_state,
                "encoder_hidden": base.encoder_last_hidden_state}

    return model, inputs, run, False


def llama():
    cfg = tf.LlamaConfig(vocab_size=139, hidden_size=48, intermediate_size=80, num_hidden_layers=2,
                         num_attention_heads=8, num_key_value_heads=2, head_dim=6, hidden_act="silu",
                         max_position_embeddings=16, rms_norm_eps=1e-5, rope_theta=1000.0,
                         tie_word_embeddings=False, attention_bias=False, mlp_bias=False,
                         pad_token_id=None, bos_token_id=0, eos_token_id=0)
    model = tf.LlamaForCausalLM(cfg)
    perturb(model)
    g = torch.Generator().manual_seed(10)
    x = ids(g, (2, 9), 0, 139)
    x, mask = right_pad(x, [9, 6], pad_id=0)
    return model, {"input_ids": x, "attention_mask": mask}, std_run("model"), True


def llama3_rope():
    """LLaMA with Llama 3.1's RoPE scaling, its bands placed so that 24 positions span them:
    with head_dim 16 and theta 10000 the wavelengths are 6.3, 19.9, 62.8, ...; with an
    original context of 32 (low 1, high 4) the first is kept, the second interpolated and
    the rest divided by the factor."""
    cfg = tf.LlamaConfig(vocab_size=139, hidden_size=64, intermediate_size=96, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, head_dim=16, hidden_act="silu",
                         max_position_embeddings=64, rms_norm_eps=1e-5, rope_theta=10000.0,
                         rope_scaling={"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0,
                                       "high_freq_factor": 4.0, "original_max_position_embeddings": 32},
                         tie_word_embeddings=False, attention_bias=False, mlp_bias=False,
                         pad_token_id=None, bos_token_id=0, eos_token_id=0)
    model = tf.LlamaForCausalLM(cfg)
    perturb(model)
    g = torch.Generator().manual_seed(11)
    x = ids(g, (2, 24), 0, 139)
    x, mask = right_pad(x, [24, 17], pad_id=0)
    return model, {"input_ids": x, "attention_mask": mask}, std_run("model"), False


def mamba():
    cfg = tf.MambaConfig(vocab_size=149, hidden_size=32, state_size=8, num_hidden_layers=2, expand=2,
                         conv_kernel=4, time_step_rank="auto", use_bias=False, use_conv_bias=True,
                         layer_norm_epsilon=1e-5, tie_word_embeddings=True, use_cache=False,
                         pad_token_id=0, bos_token_id=0, eos_token_id=0)
    model = tf.MambaForCausalLM(cfg)

    def extra(name, p):
        if name.endswith("dt_proj.bias"):
            # init: softplus^-1 of dt in [1e-3, 1e-1]; with dt that small the state hardly
            # moves in 9 steps. Use dt = softplus(U(-2, 0)) in [0.13, 0.69] instead.
            p.copy_(torch.rand_like(p) * 2.0 - 2.0)

    perturb(model, extra)
    g = torch.Generator().manual_seed(11)
    x = ids(g, (2, 9), 0, 149)

    def run(model, inputs):
        out = model(**inputs, use_cache=False)
        hidden = model.backbone(**inputs, use_cache=False).last_hidden_state
        return {"logits": out.logits, "hidden": hidden}

    return model, {"input_ids": x}, run, True


def rwkv():
    cfg = tf.RwkvConfig(vocab_size=151, context_length=16, hidden_size=32, num_hidden_layers=2,
                        attention_hidden_size=32, intermediate_size=128, layer_norm_epsilon=1e-5,
                        rescale_every=0, tie_word_embeddings=False, use_cache=False,
                        bos_token_id=0, eos_token_id=0)
    model = tf.RwkvForCausalLM(cfg)
    perturb(model)
    g = torch.Generator().manual_seed(12)
    x = ids(g, (2, 9), 0, 151)

    def run(model, inputs):
        out = model(**inputs, use_cache=False)
        hidden = model.rwkv(**inputs, use_cache=False).last_hidden_state
        return {"logits": out.logits, "hidden": hidden}

    return model, {"input_ids": x}, run, False


BUILDERS = {
    "gpt2": gpt2,
    "openai_gpt": openai_gpt,
    "bert": bert,
    "bert_model": bert_model,
    "roberta": roberta,
    "albert": albert,
    "electra": electra,
    "t5": t5,
    "bart": bart,
    "llama": llama,
    "llama3_rope": llama3_rope,
    "mamba": mamba,
    "rwkv": rwkv,
}


# --------------------------------------------------------------------------- driver


def param_names_by_tensor(model):
    """HF name in the checkpoint -> parameter object (tied parameters have several names)."""
    out = {}
    for name, p in model.named_parameters(remove_duplicate=False):
        out[name] = p
    return out


def make(name, out_root):
    torch.manual_seed(seed_of(name))
    model, inputs, run, with_grads = BUILDERS[name]()
    model.eval()
    out_dir = os.path.join(out_root, name)
    os.makedirs(out_dir, exist_ok=True)

    with tempfile.TemporaryDirectory() as tmp:
        model.save_pretrained(tmp, safe_serialization=True)
        for f in ("config.json", "model.safetensors"):
            shutil.copyfile(os.path.join(tmp, f), os.path.join(out_dir, f))
        # Everything else save_pretrained writes (generation_config.json) is dropped.

        # The saved files must be enough: reload and check every tensor round-trips.
        reloaded = type(model).from_pretrained(tmp).eval()
    sd, sd2 = model.state_dict(), reloaded.state_dict()
    assert sd.keys() == sd2.keys(), (name, sd.keys() ^ sd2.keys())
    for k in sd:
        assert torch.equal(sd[k], sd2[k]), (name, k)

    # f32 forward (sanity) and the f64 reference.
    with torch.no_grad():
        ref32 = run(reloaded, inputs)
    model64 = copy.deepcopy(reloaded).double().eval()
    with torch.no_grad():
        ref64 = run(model64, inputs)
    worst = max(rel_diff(ref32[k], ref64[k]) for k in ref64)
    outputs = f32(ref64)

    if with_grads:
        model64.zero_grad(set_to_none=True)
        x = inputs["input_ids"]
        loss = model64(input_ids=x, labels=x).loss
        loss.backward()
        outputs["loss"] = loss.detach().to(torch.float32).reshape(())
        from safetensors import safe_open

        with safe_open(os.path.join(out_dir, "model.safetensors"), "pt") as f:
            saved = list(f.keys())
        params = param_names_by_tensor(model64)
        grads = {}
        for k in saved:
            if k in params:
                grads[k] = params[k].grad
            else:
                assert k in dict(model64.named_buffers()), (name, k)
        n_unique = len({id(p) for p in params.values()})
        assert len(grads) == n_unique, (name, len(grads), n_unique)
        save_file(f32(grads), os.path.join(out_dir, "grads.safetensors"))
    else:
        stale = os.path.join(out_dir, "grads.safetensors")
        if os.path.exists(stale):
            os.remove(stale)

    save_file({k: v.contiguous() for k, v in inputs.items()}, os.path.join(out_dir, "inputs.safetensors"))
    save_file(outputs, os.path.join(out_dir, "outputs.safetensors"))

    n_params = sum(p.numel() for p in model.parameters())
    shapes = ", ".join(f"{k} {list(v.shape)}" for k, v in outputs.items())
    print(f"{name:<12} params {n_params:>7,}  f32-vs-f64 {worst:.1e}  {shapes}")
    return n_params


def main(argv):
    check = "--check" in argv
    names = [a for a in argv[1:] if not a.startswith("--")] or list(BUILDERS)
    for n in names:
        if n not in BUILDERS:
            sys.exit(f"unknown model {n!r}; known: {', '.join(BUILDERS)}")
    if not check:
        for n in names:
            make(n, OUT_ROOT)
        return
    bad = 0
    with tempfile.TemporaryDirectory() as tmp:
        for n in names:
            make(n, tmp)
            for f in sorted(os.listdir(os.path.join(tmp, n))):
                a, b = os.path.join(tmp, n, f), os.path.join(OUT_ROOT, n, f)
                if not os.path.exists(b) or not filecmp.cmp(a, b, shallow=False):
                    print(f"DIFFERS: {n}/{f}")
                    bad += 1
    print("all fixtures reproduce byte for byte" if not bad else f"{bad} files differ")
    sys.exit(1 if bad else 0)


if __name__ == "__main__":
    main(sys.argv)

#!/usr/bin/env python3
"""Exact parameter counts behind the `// params:` lines of specs/*.arch.

Every Hugging Face model is built from an explicit config (written out below, no
hub access) on the meta device, so nothing is downloaded and no memory is
allocated:

    HF_HUB_OFFLINE=1 python3 tools/hf_param_counts.py            # everything
    HF_HUB_OFFLINE=1 python3 tools/hf_param_counts.py bert t5    # families by name

For each model it prints

    total     every unique parameter of the pretraining class (tied matrices once)
    backbone  embeddings + all layers + final norms (the base model without pooler)
    pooler    the BERT-style pooler dense, where the class has one
    head      total - backbone - pooler: an untied LM matrix, MLM transform and
              output bias, NSP/SOP/RTD classifiers

Families without a Hugging Face class (GPT-3, TTT, S4, the hybrid) are counted
from closed formulas, written out in `hand_counts()`; where a size can be built
from Hugging Face modules as well, the formula is cross-checked against them.
"""

import math
import os
import sys

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import torch  # noqa: E402
import transformers as tf  # noqa: E402


def n_params(module):
    # parameters() yields each tensor once, so tied weights are counted once.
    return sum(p.numel() for p in module.parameters())


def build(cls, config):
    with torch.device("meta"):
        model = cls(config)
    if hasattr(model, "tie_weights"):
        model.tie_weights()
    return model


def split(model, base_attr, pooler_attr="pooler"):
    """(total, backbone, pooler, head) for a pretraining model around a base model."""
    total = n_params(model)
    base = getattr(model, base_attr) if base_attr else model
    base_total = n_params(base)
    pool = getattr(base, pooler_attr, None)
    pooler = n_params(pool) if pool is not None else 0
    backbone = base_total - pooler
    return total, backbone, pooler, total - backbone - pooler


# --------------------------------------------------------------------------- configs


def bert(name, **kw):
    cfg = tf.BertConfig(vocab_size=30522, max_position_embeddings=512, type_vocab_size=2,
                        hidden_act="gelu", layer_norm_eps=1e-12, **kw)
    return name, "BertForPreTraining", split(build(tf.BertForPreTraining, cfg), "bert")


def roberta(name, **kw):
    cfg = tf.RobertaConfig(vocab_size=50265, max_position_embeddings=514, type_vocab_size=1,
                           layer_norm_eps=1e-5, pad_token_id=1, bos_token_id=0, eos_token_id=2,
                           **kw)
    # RobertaForMaskedLM builds RobertaModel without its pooler.
    return name, "RobertaForMaskedLM", split(build(tf.RobertaForMaskedLM, cfg), "roberta")


def albert(name, **kw):
    cfg = tf.AlbertConfig(vocab_size=30000, embedding_size=128, max_position_embeddings=512,
                          type_vocab_size=2, hidden_act="gelu_new", layer_norm_eps=1e-12,
                          num_hidden_groups=1, inner_group_num=1, **kw)
    return name, "AlbertForPreTraining", split(build(tf.AlbertForPreTraining, cfg), "albert")


def electra(name, generator, **kw):
    cfg = tf.ElectraConfig(vocab_size=30522, max_position_embeddings=512, type_vocab_size=2,
                           hidden_act="gelu", layer_norm_eps=1e-12, **kw)
    cls = tf.ElectraForMaskedLM if generator else tf.ElectraForPreTraining
    return name, cls.__name__, split(build(cls, cfg), "electra")


def t5(name, **kw):
    cfg = tf.T5Config(vocab_size=32128, feed_forward_proj="relu", relative_attention_num_buckets=32,
                      relative_attention_max_distance=128, layer_norm_epsilon=1e-6,
                      tie_word_embeddings=True, **kw)
    model = build(tf.T5ForConditionalGeneration, cfg)
    total = n_params(model)
    # The backbone is everything but lm_head, which is tied to `shared` here.
    return name, "T5ForConditionalGeneration", (total, total, 0, 0)


def bart(name, **kw):
    cfg = tf.BartConfig(vocab_size=50265, max_position_embeddings=1024, activation_function="gelu",
                        scale_embedding=False, **kw)
    return name, "BartForConditionalGeneration", split(build(tf.BartForConditionalGeneration, cfg), "model")


def gpt1(name):
    cfg = tf.OpenAIGPTConfig(vocab_size=40478, n_positions=512, n_embd=768, n_layer=12, n_head=12,
                             afn="gelu", layer_norm_epsilon=1e-5)
    return name, "OpenAIGPTLMHeadModel", split(build(tf.OpenAIGPTLMHeadModel, cfg), "transformer")


def gpt2(name, n_positions=1024, **kw):
    cfg = tf.GPT2Config(vocab_size=50257, n_positions=n_positions, activation_function="gelu_new",
                        layer_norm_epsilon=1e-5, **kw)
    return name, "GPT2LMHeadModel", split(build(tf.GPT2LMHeadModel, cfg), "transformer")


def llama(name, **kw):
    cfg = tf.LlamaConfig(hidden_act="silu", tie_word_embeddings=False, attention_bias=False,
                         mlp_bias=False, **kw)
    return name, "LlamaForCausalLM", split(build(tf.LlamaForCausalLM, cfg), "model")


def mamba(name, **kw):
    cfg = tf.MambaConfig(vocab_size=50280, state_size=16, expand=2, conv_kernel=4,
                         time_step_rank="auto", use_bias=False, use_conv_bias=True,
                         layer_norm_epsilon=1e-5, tie_word_embeddings=True, **kw)
    return name, "MambaForCausalLM", split(build(tf.MambaForCausalLM, cfg), "backbone")


def rwkv(name, **kw):
    cfg = tf.RwkvConfig(vocab_size=50277, context_length=1024, layer_norm_epsilon=1e-5,
                        tie_word_embeddings=False, **kw)
    return name, "RwkvForCausalLM", split(build(tf.RwkvForCausalLM, cfg), "rwkv")


FAMILIES = {
    "bert": lambda: [
        bert("bert_base", hidden_size=768, num_hidden_layers=12, num_attention_heads=12, intermediate_size=3072),
        bert("bert_large", hidden_size=1024, num_hidden_layers=24, num_attention_heads=16, intermediate_size=4096),
    ],
    "roberta": lambda: [
        roberta("roberta_base", hidden_size=768, num_hidden_layers=12, num_attention_heads=12, intermediate_size=3072),
        roberta("roberta_large", hidden_size=1024, num_hidden_layers=24, num_attention_heads=16, intermediate_size=4096),
    ],
    "albert": lambda: [
        albert("albert_base", hidden_size=768, num_hidden_layers=12, num_attention_heads=12, intermediate_size=3072),
        albert("albert_large", hidden_size=1024, num_hidden_layers=24, num_attention_heads=16, intermediate_size=4096),
        albert("albert_xlarge", hidden_size=2048, num_hidden_layers=24, num_attention_heads=16, intermediate_size=8192),
        albert("albert_xxlarge", hidden_size=4096, num_hidden_layers=12, num_attention_heads=64, intermediate_size=16384),
    ],
    "electra": lambda: [
        electra("electra_small_generator", True, embedding_size=128, hidden_size=256, num_hidden_layers=12,
                num_attention_heads=4, intermediate_size=1024),
        electra("electra_small", False, embedding_size=128, hidden_size=256, num_hidden_layers=12,
                num_attention_heads=4, intermediate_size=1024),
        electra("electra_base_generator", True, embedding_size=768, hidden_size=256, num_hidden_layers=12,
                num_attention_heads=4, intermediate_size=1024),
        electra("electra_base", False, embedding_size=768, hidden_size=768, num_hidden_layers=12,
                num_attention_heads=12, intermediate_size=3072),
        electra("electra_large_generator", True, embedding_size=1024, hidden_size=256, num_hidden_layers=24,
                num_attention_heads=4, intermediate_size=1024),
        electra("electra_large", False, embedding_size=1024, hidden_size=1024, num_hidden_layers=24,
                num_attention_heads=16, intermediate_size=4096),
    ],
    "t5": lambda: [
        t5("t5_small", d_model=512, d_kv=64, d_ff=2048, num_layers=6, num_heads=8),
        t5("t5_base", d_model=768, d_kv=64, d_ff=3072, num_layers=12, num_heads=12),
        t5("t5_large", d_model=1024, d_kv=64, d_ff=4096, num_layers=24, num_heads=16),
        t5("t5_3b", d_model=1024, d_kv=128, d_ff=16384, num_layers=24, num_heads=32),
        t5("t5_11b", d_model=1024, d_kv=128, d_ff=65536, num_layers=24, num_heads=128),
    ],
    "bart": lambda: [
        bart("bart_base", d_model=768, encoder_layers=6, decoder_layers=6, encoder_attention_heads=12,
             decoder_attention_heads=12, encoder_ffn_dim=3072, decoder_ffn_dim=3072),
        bart("bart_large", d_model=1024, encoder_layers=12, decoder_layers=12, encoder_attention_heads=16,
             decoder_attention_heads=16, encoder_ffn_dim=4096, decoder_ffn_dim=4096),
    ],
    "gpt1": lambda: [gpt1("gpt1")],
    "gpt2": lambda: [
        gpt2("gpt2", n_embd=768, n_layer=12, n_head=12),
        gpt2("gpt2_medium", n_embd=1024, n_layer=24, n_head=16),
        gpt2("gpt2_large", n_embd=1280, n_layer=36, n_head=20),
        gpt2("gpt2_xl", n_embd=1600, n_layer=48, n_head=25),
    ],
    "llama1": lambda: [
        llama("llama1_7b", vocab_size=32000, hidden_size=4096, intermediate_size=11008, num_hidden_layers=32,
              num_attention_heads=32, max_position_embeddings=2048, rms_norm_eps=1e-6),
        llama("llama1_13b", vocab_size=32000, hidden_size=5120, intermediate_size=13824, num_hidden_layers=40,
              num_attention_heads=40, max_position_embeddings=2048, rms_norm_eps=1e-6),
        llama("llama1_33b", vocab_size=32000, hidden_size=6656, intermediate_size=17920, num_hidden_layers=60,
              num_attention_heads=52, max_position_embeddings=2048, rms_norm_eps=1e-6),
        llama("llama1_65b", vocab_size=32000, hidden_size=8192, intermediate_size=22016, num_hidden_layers=80,
              num_attention_heads=64, max_position_embeddings=2048, rms_norm_eps=1e-6),
    ],
    "llama2": lambda: [
        llama("llama2_7b", vocab_size=32000, hidden_size=4096, intermediate_size=11008, num_hidden_layers=32,
              num_attention_heads=32, max_position_embeddings=4096, rms_norm_eps=1e-5),
        llama("llama2_13b", vocab_size=32000, hidden_size=5120, intermediate_size=13824, num_hidden_layers=40,
              num_attention_heads=40, max_position_embeddings=4096, rms_norm_eps=1e-5),
        llama("llama2_70b", vocab_size=32000, hidden_size=8192, intermediate_size=28672, num_hidden_layers=80,
              num_attention_heads=64, num_key_value_heads=8, max_position_embeddings=4096, rms_norm_eps=1e-5),
    ],
    "llama3": lambda: [
        llama("llama3_8b", vocab_size=128256, hidden_size=4096, intermediate_size=14336, num_hidden_layers=32,
              num_attention_heads=32, num_key_value_heads=8, max_position_embeddings=8192, rms_norm_eps=1e-5,
              rope_theta=500000.0),
        llama("llama3_70b", vocab_size=128256, hidden_size=8192, intermediate_size=28672, num_hidden_layers=80,
              num_attention_heads=64, num_key_value_heads=8, max_position_embeddings=8192, rms_norm_eps=1e-5,
              rope_theta=500000.0),
    ],
    "mamba": lambda: [
        mamba("mamba_130m", hidden_size=768, num_hidden_layers=24),
        mamba("mamba_370m", hidden_size=1024, num_hidden_layers=48),
        mamba("mamba_790m", hidden_size=1536, num_hidden_layers=48),
        mamba("mamba_1_4b", hidden_size=2048, num_hidden_layers=48),
        mamba("mamba_2_8b", hidden_size=2560, num_hidden_layers=64),
    ],
    "rwkv4": lambda: [
        rwkv("rwkv4_169m", hidden_size=768, num_hidden_layers=12),
        rwkv("rwkv4_430m", hidden_size=1024, num_hidden_layers=24),
        rwkv("rwkv4_1_5b", hidden_size=2048, num_hidden_layers=24),
        rwkv("rwkv4_3b", hidden_size=2560, num_hidden_layers=32),
        rwkv("rwkv4_7b", hidden_size=4096, num_hidden_layers=32),
        rwkv("rwkv4_14b", hidden_size=5120, num_hidden_layers=40),
    ],
}


# ----------------------------------------------------------------------- hand counts


def ln(d):
    return 2 * d  # LayerNorm weight + bias


def gpt3(name, layers, d, heads, head_dim, vocab=50257, ctx=2048):
    """GPT-2 architecture at context 2048 (biases everywhere, tied head, final LayerNorm).

    attention: qkv (d -> 3*h*dh, bias) + out (h*dh -> d, bias); mlp: d -> 4d -> d with biases.
    """
    inner = heads * head_dim
    attn = d * 3 * inner + 3 * inner + inner * d + d
    mlp = d * 4 * d + 4 * d + 4 * d * d + d
    layer = attn + mlp + 2 * ln(d)
    backbone = vocab * d + ctx * d + layers * layer + ln(d)
    return name, "formula", (backbone, backbone, 0, 0)


def ttt(name, inner, d=768, layers=12, heads=12, ffn=2048, vocab=32000, mini_batch=16):
    """ttt-lm-pytorch ttt.py, TTTForCausalLM with TTT_STANDARD_CONFIGS["125m"] and the defaults of
    TTTConfig (tie_word_embeddings=True, use_gate=False, share_qk=False, pre_conv=False).

    per layer: seq_norm + ffn_norm (RMSNorm, d each); SwiGLU mlp 3*d*ffn;
    TTT layer: q, k, v, o (d x d each, no bias); learnable_token_idx (mini_batch);
    learnable_ttt_lr_weight (heads x d) + bias (heads); ttt_norm weight + bias (2 d);
    post_norm LayerNorm (2 d); inner model W1 (heads x hd x hd) + b1 (d) for linear,
    W1 (heads x hd x 4hd) + b1 (4d) + W2 (heads x 4hd x hd) + b2 (d) for mlp.
    """
    hd = d // heads
    base = 4 * d * d + mini_batch + heads * d + heads + 2 * d + 2 * d
    if inner == "linear":
        state = heads * hd * hd + d
    else:
        state = heads * hd * 4 * hd + 4 * d + heads * 4 * hd * hd + d
    layer = 2 * d + 3 * d * ffn + base + state
    backbone = vocab * d + layers * layer + d
    return name, "formula (ttt.py)", (backbone, backbone, 0, 0)


def s4d(d, n):
    """One S4D sublayer as in state-spaces/s4 models/s4/s4d.py (S4D with S4DKernel, d_state N):
    log_dt (H), C (H x N/2 complex = H*N reals), log_A_real + A_imag (H x N/2 each = H*N),
    D (H), output Conv1d(H, 2H, 1) + bias followed by GLU (2H^2 + 2H)."""
    return d + d * n + d * n + d + 2 * d * d + 2 * d


def s4_bytes():
    d, layers, n, vocab, hidden = 512, 8, 64, 256, 1024
    layer = s4d(d, n) + 2 * d * hidden + 2 * ln(d)
    backbone = vocab * d + layers * layer + ln(d)
    return "s4_bytes", "formula (s4d.py)", (backbone, backbone, 0, 0)


def s4_wt103():
    """16 x (S4, S4, FF) at d_model 1024 with a full tied embedding of 267,735 words."""
    d, blocks, n, vocab = 1024, 16, 64, 267735
    mlp = d * 4 * d + 4 * d + 4 * d * d + d
    block = 2 * (s4d(d, n) + ln(d)) + mlp + ln(d)
    backbone = vocab * d + blocks * block + ln(d)
    return "s4_wt103", "formula (s4d.py)", (backbone, backbone, 0, 0)


def mamba_mixer(d, d_state=16, d_conv=4, expand=2):
    di = expand * d
    r = math.ceil(d / 16)
    return (d * 2 * di + di * d_conv + di + di * (r + 2 * d_state) + r * di + di + di * d_state + di
            + di * d)


def hybrid_1b():
    d, vocab = 2048, 32000
    mlp = 3 * d * 4 * d
    attn = d * d + 2 * d * (4 * (d // 16)) + d * d  # q, k, v (4 kv heads of 128), o
    mamba_layer = mamba_mixer(d) + mlp + 2 * d
    attn_layer = attn + mlp + 2 * d
    backbone = vocab * d + 18 * mamba_layer + 6 * attn_layer + d
    return "hybrid_1b", "formula", (backbone, backbone, 0, 0)


def hand_counts():
    return [
        gpt3("gpt3_small", 12, 768, 12, 64),
        gpt3("gpt3_medium", 24, 1024, 16, 64),
        gpt3("gpt3_large", 24, 1536, 16, 96),
        gpt3("gpt3_xl", 24, 2048, 24, 128),
        gpt3("gpt3_2_7b", 32, 2560, 32, 80),
        gpt3("gpt3_6_7b", 32, 4096, 32, 128),
        gpt3("gpt3_13b", 40, 5140, 40, 128),
        gpt3("gpt3_175b", 96, 12288, 96, 128),
        ttt("ttt_linear_125m", "linear"),
        ttt("ttt_mlp_125m", "mlp"),
        s4_bytes(),
        s4_wt103(),
        hybrid_1b(),
    ]


def cross_checks():
    """Formulas against Hugging Face modules where both can express the model."""
    out = []
    # GPT-3 sizes with heads * head_dim == d_model are GPT-2 at context 2048.
    for name, layers, d, heads in [("gpt3_small", 12, 768, 12), ("gpt3_medium", 24, 1024, 16),
                                   ("gpt3_large", 24, 1536, 16), ("gpt3_2_7b", 32, 2560, 32)]:
        hf = gpt2(name, n_positions=2048, n_embd=d, n_layer=layers, n_head=heads)[2][1]
        formula = gpt3(name, layers, d, heads, d // heads)[2][1]
        out.append((name, hf, formula))
    # The hybrid's Mamba mixer against Hugging Face's MambaMixer.
    with torch.device("meta"):
        mixer = tf.models.mamba.modeling_mamba.MambaMixer(
            tf.MambaConfig(hidden_size=2048, state_size=16, expand=2, conv_kernel=4,
                           time_step_rank="auto", use_bias=False, use_conv_bias=True), 0)
    out.append(("hybrid_1b mamba mixer", n_params(mixer), mamba_mixer(2048)))
    # The hybrid's attention + SwiGLU layer against Hugging Face's LlamaDecoderLayer.
    with torch.device("meta"):
        layer = tf.models.llama.modeling_llama.LlamaDecoderLayer(
            tf.LlamaConfig(hidden_size=2048, num_attention_heads=16, num_key_value_heads=4,
                           intermediate_size=8192, attention_bias=False, mlp_bias=False), 0)
    d = 2048
    out.append(("hybrid_1b attn_mlp layer", n_params(layer),
                d * d + 2 * d * 512 + d * d + 3 * d * 4 * d + 2 * d))
    return out


# ---------------------------------------------------------------------------- main


def main(argv):
    wanted = set(argv[1:])
    rows = []
    for fam, make in FAMILIES.items():
        if not wanted or fam in wanted:
            rows.extend(make())
    if not wanted or wanted & {"hand", "gpt3", "ttt", "s4", "hybrid"}:
        rows.extend(hand_counts())
    print(f"{'model':<26}{'class':<30}{'total':>16}{'backbone':>16}{'pooler':>12}{'head':>14}")
    for name, cls, (total, backbone, pooler, head) in rows:
        print(f"{name:<26}{cls:<30}{total:>16,}{backbone:>16,}{pooler:>12,}{head:>14,}")
    if not wanted or "check" in wanted:
        print()
        print("cross-checks (Hugging Face vs formula):")
        for name, hf, formula in cross_checks():
            mark = "ok" if hf == formula else "MISMATCH"
            print(f"  {name:<26}{hf:>16,}{formula:>16,}  {mark}")


if __name__ == "__main__":
    main(sys.argv)

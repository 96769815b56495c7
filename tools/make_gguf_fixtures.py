#!/usr/bin/env python3
"""GGUF fixtures: tiny Hugging Face models written as llama.cpp's converter writes them, and
what transformers computes from those files.

Writes `compiler/tests/fixtures/gguf/`:

    llama/model-{type}.gguf   a tiny LlamaForCausalLM (GQA, RMSNorm, SwiGLU, RoPE), its q/k
                              rows permuted for llama.cpp's interleaved RoPE as
                              convert_hf_to_gguf.py does; 2-D weights in {type}, norms F32
    llama/expected-{type}.safetensors
                              `logits` [2, 7, V] of transformers' LlamaForCausalLM loaded from
                              that file (`gguf_file=`: it dequantizes with gguf-py and undoes
                              the permutation), and `tokens` [2, 7 + 6]: its greedy
                              continuation (`generate`, 6 new tokens)
    gpt2/…                    the same for GPT2LMHeadModel (Conv1D weights transposed, the
                              fused attn_qkv, `output.weight` a copy of `token_embd.weight`)
    mamba/…                   the same for MambaForCausalLM (`ssm_a` = −exp(A_log), the
                              convolution squeezed to [d_inner, d_conv] and kept F32)
    inputs.safetensors        `input_ids` [2, 7]
    dequant.gguf              one tensor of random blocks for every type archc reads
    dequant.safetensors       gguf-py's `dequantize` of each (what archc must give bit for bit)
    quant.safetensors         `input` [4, 64] f32 and gguf-py's quantized bytes of it (u8) for
                              BF16, Q8_0, Q4_0, Q4_1, Q5_0, Q5_1
    tokenizer-gpt2.gguf       data/tinytales-tokenizer.json as llama.cpp's `gpt2` tokenizer kind
    tokenizer-llama.gguf      a SentencePiece BPE model trained on data/tinytales.txt, as the
                              `llama` kind (scores, byte tokens)
    tokenizer-expected.json   texts and the ids the original tokenizers give them
    llama256/                 a 256-wide LLaMA in Q8_0, and transformers' logits and tokens
                              from the Q4_K and Q6_K files `archc quantize` makes of it

Types: F32, F16, BF16, Q8_0, Q4_0, Q4_1, Q5_0, Q5_1 (what gguf-py can quantize); the
K-quants are covered by dequant.gguf (random blocks) — the models are too narrow for 256-wide
super-blocks.

Usage: HF_HUB_OFFLINE=1 python3 tools/make_gguf_fixtures.py [tokenizers|kquants|llama3_rope]
(needs torch, transformers, accelerate, gguf, sentencepiece; `tokenizers`: only those)
Seeded: the same files on every run with the same package versions.
"""

import math
import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np  # noqa: E402
import torch  # noqa: E402
import transformers as tf  # noqa: E402
import gguf  # noqa: E402
from gguf import GGMLQuantizationType as Q  # noqa: E402
from safetensors.torch import save_file  # noqa: E402

tf.logging.set_verbosity_error()

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OUT = os.path.join(ROOT, "compiler", "tests", "fixtures", "gguf")
VOCAB = 48
TYPES = {
    "f32": Q.F32,
    "f16": Q.F16,
    "bf16": Q.BF16,
    "q8_0": Q.Q8_0,
    "q4_0": Q.Q4_0,
    "q4_1": Q.Q4_1,
    "q5_0": Q.Q5_0,
    "q5_1": Q.Q5_1,
}


def permute(w, n_head):
    """convert_hf_to_gguf.py LlamaModel.permute: rotate-halves rows → interleaved pairs."""
    return w.reshape(n_head, 2, w.shape[0] // n_head // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def add(writer, name, data, qtype):
    """A tensor as convert_hf_to_gguf.py stores it: 1-D tensors, norms, non-`.weight`
    tensors (Mamba's ssm_a) and the Mamba convolution in F32; the rest in qtype, F16 where
    rows are not whole blocks."""
    data = np.ascontiguousarray(data.astype(np.float32))
    if (data.ndim <= 1 or name.endswith("_norm.weight") or not name.endswith(".weight")
            or "ssm_conv1d" in name or qtype == Q.F32):
        writer.add_tensor(name, data)
        return
    if qtype != Q.F16:
        try:
            q = gguf.quants.quantize(data, qtype)
            writer.add_tensor(name, q, raw_shape=q.shape, raw_dtype=qtype)
            return
        except gguf.QuantError:
            pass
    writer.add_tensor(name, data.astype(np.float16))


def tokens(writer):
    """A byte-level BPE vocabulary of VOCAB tokens (metadata only: enough for transformers)."""
    toks = [f"<t{i}>" for i in range(VOCAB)]
    writer.add_tokenizer_model("gpt2")
    writer.add_token_list(toks)
    writer.add_token_types([1] * VOCAB)
    writer.add_token_merges([])
    writer.add_bos_token_id(1)
    writer.add_eos_token_id(2)


def llama(qtype, path, width=32, layers=2):
    torch.manual_seed(0)
    cfg = tf.LlamaConfig(
        vocab_size=VOCAB,
        hidden_size=width,
        intermediate_size=2 * width,
        num_hidden_layers=layers,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=32,
        rms_norm_eps=1e-5,
        rope_theta=10000.0,
        tie_word_embeddings=False,
    )
    model = tf.LlamaForCausalLM(cfg).eval()
    w = gguf.GGUFWriter(path, "llama")
    w.add_block_count(layers)
    w.add_context_length(32)
    w.add_embedding_length(width)
    w.add_feed_forward_length(2 * width)
    w.add_head_count(4)
    w.add_head_count_kv(2)
    w.add_rope_freq_base(10000.0)
    w.add_layer_norm_rms_eps(1e-5)
    w.add_rope_dimension_count(width // 4)
    w.add_vocab_size(VOCAB)
    w.add_file_type(0)
    tokens(w)
    sd = {k: v.detach().numpy() for k, v in model.state_dict().items()}
    add(w, "token_embd.weight", sd["model.embed_tokens.weight"], qtype)
    add(w, "output_norm.weight", sd["model.norm.weight"], qtype)
    add(w, "output.weight", sd["lm_head.weight"], qtype)
    for i in range(layers):
        p = f"model.layers.{i}."
        b = f"blk.{i}."
        add(w, b + "attn_norm.weight", sd[p + "input_layernorm.weight"], qtype)
        add(w, b + "attn_q.weight", permute(sd[p + "self_attn.q_proj.weight"], 4), qtype)
        add(w, b + "attn_k.weight", permute(sd[p + "self_attn.k_proj.weight"], 2), qtype)
        add(w, b + "attn_v.weight", sd[p + "self_attn.v_proj.weight"], qtype)
        add(w, b + "attn_output.weight", sd[p + "self_attn.o_proj.weight"], qtype)
        add(w, b + "ffn_norm.weight", sd[p + "post_attention_layernorm.weight"], qtype)
        add(w, b + "ffn_gate.weight", sd[p + "mlp.gate_proj.weight"], qtype)
        add(w, b + "ffn_up.weight", sd[p + "mlp.up_proj.weight"], qtype)
        add(w, b + "ffn_down.weight", sd[p + "mlp.down_proj.weight"], qtype)
    finish(w)
    return tf.LlamaForCausalLM


def gpt2(qtype, path):
    torch.manual_seed(1)
    cfg = tf.GPT2Config(vocab_size=VOCAB, n_positions=32, n_embd=32, n_layer=2, n_head=4)
    model = tf.GPT2LMHeadModel(cfg).eval()
    w = gguf.GGUFWriter(path, "gpt2")
    w.add_block_count(2)
    w.add_context_length(32)
    w.add_embedding_length(32)
    w.add_feed_forward_length(128)
    w.add_head_count(4)
    w.add_layer_norm_eps(1e-5)
    w.add_vocab_size(VOCAB)
    w.add_file_type(0)
    tokens(w)
    sd = {k: v.detach().numpy() for k, v in model.state_dict().items()}
    add(w, "token_embd.weight", sd["transformer.wte.weight"], qtype)
    add(w, "position_embd.weight", sd["transformer.wpe.weight"], Q.F32)
    add(w, "output_norm.weight", sd["transformer.ln_f.weight"], qtype)
    add(w, "output_norm.bias", sd["transformer.ln_f.bias"], qtype)
    add(w, "output.weight", sd["transformer.wte.weight"], qtype)
    for i in range(2):
        p = f"transformer.h.{i}."
        b = f"blk.{i}."
        for gg, hf in [("attn_norm", "ln_1"), ("ffn_norm", "ln_2")]:
            add(w, f"{b}{gg}.weight", sd[f"{p}{hf}.weight"], qtype)
            add(w, f"{b}{gg}.bias", sd[f"{p}{hf}.bias"], qtype)
        for gg, hf in [("attn_qkv", "attn.c_attn"), ("attn_output", "attn.c_proj"),
                       ("ffn_up", "mlp.c_fc"), ("ffn_down", "mlp.c_proj")]:
            add(w, f"{b}{gg}.weight", sd[f"{p}{hf}.weight"].T, qtype)
            add(w, f"{b}{gg}.bias", sd[f"{p}{hf}.bias"], qtype)
    finish(w)
    return tf.GPT2LMHeadModel


def mamba(qtype, path):
    torch.manual_seed(2)
    cfg = tf.MambaConfig(vocab_size=VOCAB, hidden_size=32, state_size=8, num_hidden_layers=2,
                         expand=2, conv_kernel=4, time_step_rank=2, layer_norm_epsilon=1e-5,
                         tie_word_embeddings=True)
    model = tf.MambaForCausalLM(cfg).eval()
    w = gguf.GGUFWriter(path, "mamba")
    w.add_block_count(2)
    w.add_context_length(2**20)
    w.add_embedding_length(32)
    w.add_feed_forward_length(0)
    w.add_head_count(0)
    w.add_ssm_conv_kernel(4)
    w.add_ssm_inner_size(64)
    w.add_ssm_state_size(8)
    w.add_ssm_time_step_rank(2)
    w.add_layer_norm_rms_eps(1e-5)
    w.add_vocab_size(VOCAB)
    w.add_file_type(0)
    tokens(w)
    sd = {k: v.detach().numpy() for k, v in model.state_dict().items()}
    add(w, "token_embd.weight", sd["backbone.embeddings.weight"], qtype)
    add(w, "output_norm.weight", sd["backbone.norm_f.weight"], qtype)
    for i in range(2):
        p = f"backbone.layers.{i}."
        b = f"blk.{i}."
        add(w, b + "attn_norm.weight", sd[p + "norm.weight"], qtype)
        m = p + "mixer."
        add(w, b + "ssm_in.weight", sd[m + "in_proj.weight"], qtype)
        add(w, b + "ssm_conv1d.weight", sd[m + "conv1d.weight"].squeeze(), qtype)
        add(w, b + "ssm_conv1d.bias", sd[m + "conv1d.bias"], qtype)
        add(w, b + "ssm_x.weight", sd[m + "x_proj.weight"], qtype)
        add(w, b + "ssm_dt.weight", sd[m + "dt_proj.weight"], qtype)
        add(w, b + "ssm_dt.bias", sd[m + "dt_proj.bias"], qtype)
        add(w, b + "ssm_a", -np.exp(sd[m + "A_log"]), qtype)
        add(w, b + "ssm_d", sd[m + "D"], qtype)
        add(w, b + "ssm_out.weight", sd[m + "out_proj.weight"], qtype)
    finish(w)
    return tf.MambaForCausalLM


def llama3_rope_factors(theta, dim, factor, low, high, original):
    """convert_hf_to_gguf.py LlamaModel.generate_extra_tensors: per rotated pair, the divisor
    of its frequency (`rope_freqs`), computed in float32 as the converter does."""
    freqs = 1.0 / (theta ** (torch.arange(0, dim, 2, dtype=torch.float32) / dim))
    low_wl, high_wl = original / low, original / high
    out = []
    for f in freqs:
        wl = 2 * math.pi / f
        if wl < high_wl:
            out.append(1)
        elif wl > low_wl:
            out.append(factor)
        else:
            smooth = (original / wl - low) / (high - low)
            out.append(1 / ((1 - smooth) / factor + smooth))
    return np.array(out, dtype=np.float32)


def llama3_rope_fixture():
    """llama3_rope/model-f32.gguf: a LLaMA with Llama 3.1's RoPE scaling (head_dim 16, theta
    10000, factor 8, low 1, high 4, original context 64: one pair kept, two interpolated, five
    divided), `rope_freqs.weight` as the converter writes it. expected-f32.safetensors: the
    Hugging Face model's own logits and greedy tokens (transformers' GGUF loader ignores
    `rope_freqs`, so it is not the reference here)."""
    d = os.path.join(OUT, "llama3_rope")
    os.makedirs(d, exist_ok=True)
    width, layers, heads, kv, original = 64, 2, 4, 2, 64
    torch.manual_seed(1)
    scaling = {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0,
               "high_freq_factor": 4.0, "original_max_position_embeddings": original}
    cfg = tf.LlamaConfig(vocab_size=VOCAB, hidden_size=width, intermediate_size=2 * width,
                         num_hidden_layers=layers, num_attention_heads=heads, num_key_value_heads=kv,
                         max_position_embeddings=256, rms_norm_eps=1e-5, rope_theta=10000.0,
                         rope_scaling=scaling, tie_word_embeddings=False)
    model = tf.LlamaForCausalLM(cfg).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.05 * torch.randn_like(p))
    path = os.path.join(d, "model-f32.gguf")
    w = gguf.GGUFWriter(path, "llama")
    w.add_block_count(layers)
    w.add_context_length(256)
    w.add_embedding_length(width)
    w.add_feed_forward_length(2 * width)
    w.add_head_count(heads)
    w.add_head_count_kv(kv)
    w.add_rope_freq_base(10000.0)
    w.add_layer_norm_rms_eps(1e-5)
    w.add_rope_dimension_count(width // heads)
    w.add_vocab_size(VOCAB)
    w.add_file_type(0)
    tokens(w)
    sd = {k: v.detach().numpy() for k, v in model.state_dict().items()}
    w.add_tensor("rope_freqs.weight", llama3_rope_factors(10000.0, width // heads, 8.0, 1.0, 4.0, original))
    add(w, "token_embd.weight", sd["model.embed_tokens.weight"], Q.F32)
    add(w, "output_norm.weight", sd["model.norm.weight"], Q.F32)
    add(w, "output.weight", sd["lm_head.weight"], Q.F32)
    for i in range(layers):
        p = f"model.layers.{i}."
        b = f"blk.{i}."
        add(w, b + "attn_norm.weight", sd[p + "input_layernorm.weight"], Q.F32)
        add(w, b + "attn_q.weight", permute(sd[p + "self_attn.q_proj.weight"], heads), Q.F32)
        add(w, b + "attn_k.weight", permute(sd[p + "self_attn.k_proj.weight"], kv), Q.F32)
        add(w, b + "attn_v.weight", sd[p + "self_attn.v_proj.weight"], Q.F32)
        add(w, b + "attn_output.weight", sd[p + "self_attn.o_proj.weight"], Q.F32)
        add(w, b + "ffn_norm.weight", sd[p + "post_attention_layernorm.weight"], Q.F32)
        add(w, b + "ffn_gate.weight", sd[p + "mlp.gate_proj.weight"], Q.F32)
        add(w, b + "ffn_up.weight", sd[p + "mlp.up_proj.weight"], Q.F32)
        add(w, b + "ffn_down.weight", sd[p + "mlp.down_proj.weight"], Q.F32)
    finish(w)
    g = torch.Generator().manual_seed(4)
    ids = torch.randint(3, VOCAB, (2, 40), generator=g)
    with torch.no_grad():
        logits = model(input_ids=ids).logits
        out = model.generate(ids, max_new_tokens=6, do_sample=False, pad_token_id=0)
    save_file({"input_ids": ids}, os.path.join(d, "inputs.safetensors"))
    save_file({"logits": logits.contiguous(), "tokens": out.contiguous()},
              os.path.join(d, "expected-f32.safetensors"))
    print(f"llama3_rope f32: {os.path.getsize(path)} bytes")


def finish(w):
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


def dequant_fixture():
    rng = np.random.default_rng(7)
    path = os.path.join(OUT, "dequant.gguf")
    w = gguf.GGUFWriter(path, "llama")
    expected = {}
    for name, qtype in [("f32", Q.F32), ("f16", Q.F16), ("bf16", Q.BF16), ("q8_0", Q.Q8_0),
                        ("q4_0", Q.Q4_0), ("q4_1", Q.Q4_1), ("q5_0", Q.Q5_0), ("q5_1", Q.Q5_1),
                        ("q4_k", Q.Q4_K), ("q5_k", Q.Q5_K), ("q6_k", Q.Q6_K)]:
        per, size = gguf.GGML_QUANT_SIZES[qtype]
        rows, blocks = 3, 2
        raw = rng.integers(0, 256, size=(rows, blocks * size), dtype=np.uint8)
        # Scales as finite halves in [-2, 2] (random bytes could be NaN or inf).
        halves = lambda n: rng.uniform(-2, 2, size=(rows, blocks, n)).astype(np.float16).view(np.uint8)
        r = raw.reshape(rows, blocks, size)
        if qtype in (Q.F32, Q.F16, Q.BF16):
            vals = rng.normal(size=(rows, blocks * per)).astype(np.float32)
            raw = gguf.quants.quantize(vals, qtype).view(np.uint8).reshape(rows, -1)
        elif qtype == Q.Q6_K:
            r[:, :, 208:210] = halves(1).reshape(rows, blocks, 2)
        elif qtype in (Q.Q4_1, Q.Q5_1, Q.Q4_K, Q.Q5_K):
            r[:, :, 0:4] = halves(2).reshape(rows, blocks, 4)
        else:
            r[:, :, 0:2] = halves(1).reshape(rows, blocks, 2)
        raw = np.ascontiguousarray(raw)
        w.add_tensor(name, raw, raw_shape=raw.shape, raw_dtype=qtype)
        deq = gguf.quants.dequantize(raw, qtype)
        expected[name] = torch.from_numpy(np.ascontiguousarray(deq.astype(np.float32)))
    finish(w)
    save_file(expected, os.path.join(OUT, "dequant.safetensors"))
    # gguf-py's quantizers (bit-exact with ggml's reference ones) on normal values.
    x = rng.normal(size=(4, 64)).astype(np.float32)
    x[1] = 0.0  # an all-zero row (+0: gguf-py's argmax then agrees with ggml on the sign of d)
    quants = {"input": torch.from_numpy(x)}
    for name, qtype in [("bf16", Q.BF16), ("q8_0", Q.Q8_0), ("q4_0", Q.Q4_0), ("q4_1", Q.Q4_1),
                        ("q5_0", Q.Q5_0), ("q5_1", Q.Q5_1)]:
        quants[name] = torch.from_numpy(np.ascontiguousarray(gguf.quants.quantize(x, qtype)).view(np.uint8).reshape(-1).copy())
    save_file(quants, os.path.join(OUT, "quant.safetensors"))


TEXTS = [
    "Once upon a time, there was a little cat named Tom.",
    "Hello, world!  Two  spaces, and a tab\there.",
    "naïve café, 東京 and emoji 🙂",
    "numbers 12345 and symbols #@! (ok?)",
    "a new\nline",
    "",
]


# LLaMA-2's chat template (raise_exception, loop.index0, str.strip) and ChatML's.
LLAMA2_CHAT = (
    "{% if messages[0]['role'] == 'system' %}{% set loop_messages = messages[1:] %}"
    "{% set system_message = messages[0]['content'] %}{% else %}{% set loop_messages = messages %}"
    "{% set system_message = false %}{% endif %}{% for message in loop_messages %}"
    "{% if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}"
    "{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}"
    "{% endif %}{% if loop.index0 == 0 and system_message != false %}"
    "{% set content = '<<SYS>>\\n' + system_message + '\\n<</SYS>>\\n\\n' + message['content'] %}"
    "{% else %}{% set content = message['content'] %}{% endif %}{% if message['role'] == 'user' %}"
    "{{ bos_token + '[INST] ' + content.strip() + ' [/INST]' }}{% elif message['role'] == 'assistant' %}"
    "{{ ' '  + content.strip() + ' ' + eos_token }}{% endif %}{% endfor %}"
)
CHATML = (
    "{% for message in messages %}\n"
    "{{'<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n'}}\n"
    "{% endfor %}\n"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)
CHAT_PROMPT = "  Tell me a story about a cat.  "


def render_chat(template, bos, eos):
    """transformers' rendering (utils/chat_template_utils.py): a sandboxed Jinja environment
    with trim_blocks and lstrip_blocks, raise_exception defined."""
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    def raise_exception(msg):
        raise ValueError(msg)

    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True)
    env.globals["raise_exception"] = raise_exception
    return env.from_string(template).render(
        messages=[{"role": "user", "content": CHAT_PROMPT}], add_generation_prompt=True,
        bos_token=bos, eos_token=eos)


def kquant_fixtures(types=("q4_k", "q5_k", "q6_k")):
    """llama256/model-q8_0.gguf: a LLaMA 256 wide (K-quant super-blocks fit its rows);
    expected-{q4_k,q5_k,q6_k}.safetensors: transformers' logits and greedy tokens from the
    files `archc quantize` makes of it (the archc binary: $ARCHC, else
    target/release/archc). `kquants q5_k` remakes one type's expected file only (the source
    file stays as it is)."""
    import subprocess
    import tempfile

    d = os.path.join(OUT, "llama256")
    os.makedirs(d, exist_ok=True)
    src = os.path.join(d, "model-q8_0.gguf")
    if set(types) == {"q4_k", "q5_k", "q6_k"} or not os.path.exists(src):
        llama(Q.Q8_0, src, width=256, layers=1)
    archc = os.environ.get("ARCHC", os.path.join(ROOT, "target", "release", "archc"))
    from safetensors.torch import load_file
    ids = load_file(os.path.join(OUT, "inputs.safetensors"))["input_ids"]
    for t in types:
        with tempfile.TemporaryDirectory() as tmp:
            out = os.path.join(tmp, f"model-{t}.gguf")
            subprocess.run([archc, "quantize", src, "--type", t, "-o", out], check=True)
            model = tf.LlamaForCausalLM.from_pretrained(tmp, gguf_file=os.path.basename(out),
                                                        torch_dtype=torch.float32).eval()
            with torch.no_grad():
                logits = model(input_ids=ids).logits
                toks = model.generate(ids, max_new_tokens=6, do_sample=False, pad_token_id=0)
        save_file({"logits": logits.contiguous(), "tokens": toks.contiguous()},
                  os.path.join(d, f"expected-{t}.safetensors"))
        print(f"llama256 {t}: done")


def tokenizer_fixtures():
    """tokenizer-gpt2.gguf: the shipped byte-level BPE tokenizer (data/tinytales-tokenizer.json)
    as llama.cpp's `gpt2` kind; tokenizer-llama.gguf: a SentencePiece BPE model trained here
    on the corpus (byte fallback) as the `llama` kind. tokenizer-expected.json: the texts and
    the ids of the originals (tokenizers, sentencepiece with BOS)."""
    import json
    import sentencepiece as spm
    from tokenizers import Tokenizer

    src = os.path.join(ROOT, "data", "tinytales-tokenizer.json")
    tok = Tokenizer.from_file(src)
    j = json.load(open(src))
    vocab = j["model"]["vocab"]
    n = max(vocab.values()) + 1
    tokens = [""] * n
    for t, i in vocab.items():
        tokens[i] = t
    special = {a["id"] for a in j["added_tokens"] if a["special"]}
    w = gguf.GGUFWriter(os.path.join(OUT, "tokenizer-gpt2.gguf"), "gpt2")
    w.add_tokenizer_model("gpt2")
    w.add_tokenizer_pre("gpt-2")
    w.add_token_list(tokens)
    w.add_token_types([3 if i in special else 1 for i in range(n)])
    w.add_token_merges([" ".join(m) if isinstance(m, list) else m for m in j["model"]["merges"]])
    w.add_eos_token_id(0)
    w.add_add_bos_token(False)
    w.add_chat_template(CHATML)
    finish(w)
    expected = {"texts": TEXTS, "gpt2": [tok.encode(t).ids for t in TEXTS]}
    expected["chat_prompt"] = CHAT_PROMPT
    expected["chat"] = {"gpt2": render_chat(CHATML, "", tokens[0])}

    import tempfile
    with tempfile.TemporaryDirectory() as d:
        prefix = os.path.join(d, "sp")
        spm.SentencePieceTrainer.train(
            input=os.path.join(ROOT, "data", "tinytales.txt"), model_prefix=prefix, vocab_size=400,
            model_type="bpe", byte_fallback=True, character_coverage=1.0, seed_sentencepiece_size=1000,
            num_threads=1, minloglevel=2, bos_id=1, eos_id=2, unk_id=0, pad_id=-1,
            # As LLaMA's tokenizer.model (and llama.cpp's SentencePiece tokenizer): no
            # normalisation, whitespace kept as it is.
            normalization_rule_name="identity", remove_extra_whitespaces=False)
        sp = spm.SentencePieceProcessor(model_file=prefix + ".model")
    pieces, scores, types = [], [], []
    for i in range(sp.get_piece_size()):
        pieces.append(sp.id_to_piece(i))
        scores.append(sp.get_score(i))
        types.append(2 if sp.is_unknown(i) else 3 if sp.is_control(i) else 6 if sp.is_byte(i) else 1)
    w = gguf.GGUFWriter(os.path.join(OUT, "tokenizer-llama.gguf"), "llama")
    w.add_tokenizer_model("llama")
    w.add_tokenizer_pre("default")
    w.add_token_list(pieces)
    w.add_token_scores(scores)
    w.add_token_types(types)
    w.add_bos_token_id(1)
    w.add_eos_token_id(2)
    w.add_unk_token_id(0)
    w.add_add_bos_token(True)
    w.add_add_space_prefix(True)
    w.add_chat_template(LLAMA2_CHAT)
    finish(w)
    expected["chat"]["llama"] = render_chat(LLAMA2_CHAT, pieces[1], pieces[2])
    expected["llama"] = [[1] + sp.encode(t) for t in TEXTS]
    with open(os.path.join(OUT, "tokenizer-expected.json"), "w") as f:
        json.dump(expected, f, ensure_ascii=False, indent=1)
        f.write("\n")


def main():
    os.makedirs(OUT, exist_ok=True)
    g = torch.Generator().manual_seed(3)
    ids = torch.randint(3, VOCAB, (2, 7), generator=g)
    save_file({"input_ids": ids}, os.path.join(OUT, "inputs.safetensors"))
    for arch, make in [("llama", llama), ("gpt2", gpt2), ("mamba", mamba)]:
        d = os.path.join(OUT, arch)
        os.makedirs(d, exist_ok=True)
        for tname, qtype in TYPES.items():
            path = os.path.join(d, f"model-{tname}.gguf")
            cls = make(qtype, path)
            # transformers' GGUF config mapping for gpt2 has no vocabulary size and maps the
            # context to n_ctx, not the position table's n_positions: given here.
            extra = {"vocab_size": VOCAB, "n_positions": 32} if arch == "gpt2" else {}
            model = cls.from_pretrained(d, gguf_file=os.path.basename(path), torch_dtype=torch.float32, **extra).eval()
            with torch.no_grad():
                logits = model(input_ids=ids).logits
                out = model.generate(ids, max_new_tokens=6, do_sample=False, pad_token_id=0)
            save_file({"logits": logits.contiguous(), "tokens": out.contiguous()},
                      os.path.join(d, f"expected-{tname}.safetensors"))
            print(f"{arch} {tname}: {os.path.getsize(path)} bytes")
    dequant_fixture()
    tokenizer_fixtures()
    kquant_fixtures()
    llama3_rope_fixture()


if __name__ == "__main__":
    import sys

    os.makedirs(OUT, exist_ok=True)
    if sys.argv[1:] == ["tokenizers"]:
        tokenizer_fixtures()
    elif sys.argv[1:2] == ["kquants"]:
        kquant_fixtures(*([sys.argv[2:]] if sys.argv[2:] else []))
    elif sys.argv[1:] == ["llama3_rope"]:
        llama3_rope_fixture()
    else:
        main()

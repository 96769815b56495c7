//! A GGUF file's tokenizer (`tokenizer.ggml.*`) → the Hugging Face `tokenizer.json` that
//! encodes the same way, so `--tokenizer FILE.gguf` runs through the same `tokenizers`
//! pipeline as a `tokenizer.json`.
//!
//! Two kinds, as llama.cpp names them:
//! - `gpt2`: byte-level BPE (GPT-2, LLaMA 3, …): `tokens` in byte-level form, `merges`
//!   ("a b"); the pre-tokenizer split from `tokenizer.ggml.pre` (`gpt-2`/`default`: GPT-2's
//!   regex; `llama-bpe`/`llama3`: LLaMA 3's, merges ignored for whole-word tokens).
//! - `llama`: SentencePiece BPE (LLaMA 1/2, Mistral): `tokens` with `▁`, `scores`, byte
//!   tokens `<0xAB>` for fallback; merges are rebuilt from the scores as Hugging Face's
//!   `SentencePieceExtractor` does (every split of a piece into two pieces, the merged
//!   piece's score ordering them), a `▁` prepended when `add_space_prefix` (default true).
//!
//! Token types 3 (control) and 4 (user-defined) become added tokens (control ones special);
//! `add_bos_token` (default: true for `llama`, false for `gpt2`) adds `bos` in front.

use arch_runtime::gguf::{Gguf, Value};
use serde_json::{json, Map};

/// GPT-2's pre-tokenizer regex is the `ByteLevel` one; LLaMA 3's (`llama-bpe`):
const LLAMA3_SPLIT: &str = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";

/// The `tokenizer.json` text of `g`'s tokenizer.
pub fn tokenizer_json(g: &Gguf) -> Result<String, String> {
    let get = |k: &str| g.get(&format!("tokenizer.ggml.{k}"));
    let kind = get("model")
        .and_then(Value::as_str)
        .ok_or("the GGUF file has no tokenizer (`tokenizer.ggml.model`)")?;
    let tokens: Vec<String> = get("tokens")
        .and_then(Value::as_array)
        .ok_or("the GGUF file has no `tokenizer.ggml.tokens`")?
        .iter()
        .map(|v| {
            v.as_str()
                .map(str::to_string)
                .ok_or("a token is not a string")
        })
        .collect::<Result<_, _>>()?;
    let types: Vec<u64> = match get("token_type").and_then(Value::as_array) {
        Some(t) => t.iter().map(|v| v.as_u64().unwrap_or(1)).collect(),
        None => vec![1; tokens.len()],
    };
    if types.len() != tokens.len() {
        return Err(format!(
            "`tokenizer.ggml.token_type` has {} entries for {} tokens",
            types.len(),
            tokens.len()
        ));
    }
    let id = |k: &str| {
        get(k)
            .and_then(Value::as_u64)
            .filter(|&i| (i as usize) < tokens.len())
    };
    let bos = id("bos_token_id");
    let add_bos = get("add_bos_token")
        .and_then(|v| match v {
            Value::Bool(b) => Some(*b),
            _ => None,
        })
        .unwrap_or(kind == "llama");

    let mut vocab = Map::new();
    for (i, t) in tokens.iter().enumerate() {
        // A repeated token keeps its first id (the ids the model saw most).
        vocab.entry(t.clone()).or_insert(json!(i));
    }
    let added: Vec<serde_json::Value> = tokens
        .iter()
        .zip(&types)
        .enumerate()
        .filter(|(_, (_, &ty))| ty == 3 || ty == 4)
        .map(|(i, (t, &ty))| {
            json!({"id": i, "content": t, "single_word": false, "lstrip": false,
                   "rstrip": false, "normalized": false, "special": ty == 3})
        })
        .collect();
    let post = match (add_bos, bos) {
        (true, Some(b)) => {
            let t = &tokens[b as usize];
            json!({
                "type": "TemplateProcessing",
                "single": [{"SpecialToken": {"id": t, "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}}],
                "pair": [{"SpecialToken": {"id": t, "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}},
                         {"SpecialToken": {"id": t, "type_id": 1}}, {"Sequence": {"id": "B", "type_id": 1}}],
                "special_tokens": {t.as_str(): {"id": t, "ids": [b], "tokens": [t]}}
            })
        }
        (true, None) => {
            return Err("`add_bos_token` is set but the file has no `bos_token_id`".into())
        }
        (false, _) => serde_json::Value::Null,
    };

    let (normalizer, pre, decoder, model) = match kind {
        "gpt2" => {
            let merges: Vec<String> = get("merges")
                .and_then(Value::as_array)
                .ok_or("a `gpt2` tokenizer needs `tokenizer.ggml.merges`")?
                .iter()
                .map(|v| {
                    v.as_str()
                        .map(str::to_string)
                        .ok_or("a merge is not a string")
                })
                .collect::<Result<_, _>>()?;
            let pre_kind = get("pre").and_then(Value::as_str).unwrap_or("gpt-2");
            let byte_level = |regex: bool| json!({"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true, "use_regex": regex});
            let (pre, ignore_merges) = match pre_kind {
                "gpt-2" | "default" | "gpt2" => (byte_level(true), false),
                "llama-bpe" | "llama3" => (
                    json!({"type": "Sequence", "pretokenizers": [
                        {"type": "Split", "pattern": {"Regex": LLAMA3_SPLIT}, "behavior": "Isolated", "invert": false},
                        byte_level(false)
                    ]}),
                    true,
                ),
                other => {
                    return Err(format!(
                        "the GGUF tokenizer's pre-tokenizer `{other}` is not supported (gpt-2, default, llama-bpe)"
                    ))
                }
            };
            let model = json!({
                "type": "BPE", "dropout": null, "unk_token": null, "continuing_subword_prefix": null,
                "end_of_word_suffix": null, "fuse_unk": false, "byte_fallback": false,
                "ignore_merges": ignore_merges, "vocab": vocab, "merges": merges
            });
            let decoder = json!({"type": "ByteLevel", "add_prefix_space": true, "trim_offsets": true, "use_regex": true});
            (serde_json::Value::Null, pre, decoder, model)
        }
        "llama" => {
            let scores: Vec<f64> = match get("scores").and_then(Value::as_array) {
                Some(s) => s.iter().map(|v| v.as_f64().unwrap_or(0.0)).collect(),
                None => vec![0.0; tokens.len()],
            };
            if scores.len() != tokens.len() {
                return Err(format!(
                    "`tokenizer.ggml.scores` has {} entries for {} tokens",
                    scores.len(),
                    tokens.len()
                ));
            }
            let merges = spm_merges(&tokens, &scores);
            let unk = id("unknown_token_id").map(|u| tokens[u as usize].clone());
            let prefix = get("add_space_prefix")
                .and_then(|v| match v {
                    Value::Bool(b) => Some(*b),
                    _ => None,
                })
                .unwrap_or(true);
            let mut norms = Vec::new();
            if prefix {
                norms.push(json!({"type": "Prepend", "prepend": "▁"}));
            }
            norms.push(json!({"type": "Replace", "pattern": {"String": " "}, "content": "▁"}));
            let mut decoders = vec![
                json!({"type": "Replace", "pattern": {"String": "▁"}, "content": " "}),
                json!({"type": "ByteFallback"}),
                json!({"type": "Fuse"}),
            ];
            if prefix {
                decoders.push(json!({"type": "Strip", "content": " ", "start": 1, "stop": 0}));
            }
            let model = json!({
                "type": "BPE", "dropout": null, "unk_token": unk, "continuing_subword_prefix": null,
                "end_of_word_suffix": null, "fuse_unk": true, "byte_fallback": true,
                "ignore_merges": false, "vocab": vocab, "merges": merges
            });
            (
                json!({"type": "Sequence", "normalizers": norms}),
                serde_json::Value::Null,
                json!({"type": "Sequence", "decoders": decoders}),
                model,
            )
        }
        other => {
            return Err(format!(
                "the GGUF tokenizer kind `{other}` is not supported (gpt2, llama)"
            ))
        }
    };
    let tj = json!({
        "version": "1.0",
        "truncation": null,
        "padding": null,
        "added_tokens": added,
        "normalizer": normalizer,
        "pre_tokenizer": pre,
        "post_processor": post,
        "decoder": decoder,
        "model": model,
    });
    Ok(tj.to_string())
}

/// SentencePiece BPE merges from pieces and scores (Hugging Face's
/// `SentencePieceExtractor.extract`): every split of a piece into two pieces of the
/// vocabulary, ordered by the merged piece's score (highest first), ties by the pieces' ids.
fn spm_merges(tokens: &[String], scores: &[f64]) -> Vec<[String; 2]> {
    let mut ids: std::collections::HashMap<&str, usize> = std::collections::HashMap::new();
    for (i, t) in tokens.iter().enumerate() {
        ids.entry(t.as_str()).or_insert(i);
    }
    let mut merges: Vec<(f64, usize, usize, usize)> = Vec::new();
    for (i, piece) in tokens.iter().enumerate() {
        if ids.get(piece.as_str()) != Some(&i) {
            continue;
        }
        let mut local = Vec::new();
        for (at, _) in piece.char_indices().skip(1) {
            let (l, r) = piece.split_at(at);
            if let (Some(&a), Some(&b)) = (ids.get(l), ids.get(r)) {
                local.push((scores[i], a, b, i));
            }
        }
        local.sort_by_key(|&(_, a, b, _)| (a, b));
        merges.extend(local);
    }
    // A stable sort by score, highest first (Python's `sorted(..., reverse=True)` keeps
    // equal scores in order).
    merges.sort_by(|x, y| y.0.partial_cmp(&x.0).unwrap_or(std::cmp::Ordering::Equal));
    merges
        .into_iter()
        .map(|(_, a, b, _)| [tokens[a].clone(), tokens[b].clone()])
        .collect()
}

/// `prompt` as one user message through the file's chat template
/// (`tokenizer.chat_template`), rendered as transformers' `apply_chat_template(messages,
/// add_generation_prompt=True, tokenize=False)` does: Jinja with `trim_blocks` and
/// `lstrip_blocks`, `bos_token` / `eos_token` the file's, `raise_exception` and
/// `strftime_now` defined, Python's string methods available. Encode the result without
/// adding special tokens (the template writes them).
pub fn chat_prompt(g: &Gguf, prompt: &str) -> Result<String, String> {
    let template = g
        .get("tokenizer.chat_template")
        .and_then(Value::as_str)
        .ok_or(
            "--chat needs a chat template, and this GGUF file has no `tokenizer.chat_template`",
        )?;
    let tokens = g.get("tokenizer.ggml.tokens").and_then(Value::as_array);
    let token = |k: &str| -> String {
        g.get(&format!("tokenizer.ggml.{k}"))
            .and_then(Value::as_u64)
            .and_then(|i| tokens.and_then(|t| t.get(i as usize)))
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string()
    };
    let mut env = minijinja::Environment::new();
    env.set_trim_blocks(true);
    env.set_lstrip_blocks(true);
    env.set_unknown_method_callback(minijinja_contrib::pycompat::unknown_method_callback);
    env.add_function(
        "raise_exception",
        |msg: String| -> Result<String, minijinja::Error> {
            Err(minijinja::Error::new(
                minijinja::ErrorKind::InvalidOperation,
                format!("the chat template raised: {msg}"),
            ))
        },
    );
    env.add_function("strftime_now", |fmt: String| strftime_now(&fmt));
    env.add_template("chat", template)
        .map_err(|e| format!("the chat template does not parse: {e}"))?;
    let ctx = minijinja::context! {
        messages => vec![minijinja::context! { role => "user", content => prompt }],
        add_generation_prompt => true,
        bos_token => token("bos_token_id"),
        eos_token => token("eos_token_id"),
    };
    env.get_template("chat")
        .and_then(|t| t.render(ctx))
        .map_err(|e| format!("the chat template failed: {e}"))
}

/// Today's date in UTC through a `strftime` format (`%d`, `%m`, `%Y`, `%y`, `%b`, `%B`,
/// `%%`; others kept as written): what LLaMA 3.1's template asks of `strftime_now`.
fn strftime_now(fmt: &str) -> String {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    // Days → civil date (Howard Hinnant's algorithm).
    let z = (secs / 86_400) as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    const MONTHS: [&str; 12] = [
        "January",
        "February",
        "March",
        "April",
        "May",
        "June",
        "July",
        "August",
        "September",
        "October",
        "November",
        "December",
    ];
    let name = MONTHS[(month - 1) as usize];
    let mut out = String::new();
    let mut chars = fmt.chars();
    while let Some(c) = chars.next() {
        if c != '%' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('d') => out.push_str(&format!("{day:02}")),
            Some('m') => out.push_str(&format!("{month:02}")),
            Some('Y') => out.push_str(&year.to_string()),
            Some('y') => out.push_str(&format!("{:02}", year % 100)),
            Some('b') => out.push_str(&name[..3]),
            Some('B') => out.push_str(name),
            Some('%') => out.push('%'),
            Some(o) => {
                out.push('%');
                out.push(o);
            }
            None => out.push('%'),
        }
    }
    out
}

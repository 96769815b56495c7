//! Text ↔ token ids with a Hugging Face `tokenizer.json` (WordPiece, BPE, Unigram; the
//! `tokenizers` crate): batches padded to the longest text and truncated to a caller's
//! maximum, as `input_ids` / `attention_mask` rows ready for a model, and ids back to text.
//!
//! The padding and truncation written in the file (all-MiniLM-L6-v2's pads every text to a
//! fixed 128, for example) are replaced by the caller's: pad to the longest text of the
//! batch, on the right (encoders, `archc embed`) or on the left (prompts for generation),
//! and cut texts longer than `max_len` tokens, special tokens included.
//!
//! ```no_run
//! use archc::tokenize::{Padding, Tokenizer};
//! let tok = Tokenizer::load("tokenizer.json".as_ref()).unwrap();
//! let batch = tok.encode_batch(&["Hello world.".to_string()], true, 512).unwrap();
//! assert_eq!(batch.ids.len(), batch.batch * batch.seq);
//! let prompts = tok
//!     .encode_batch_padded(&["Once upon".to_string()], false, Padding::Left, 1024)
//!     .unwrap();
//! let text = tok.decode(&prompts.ids, true).unwrap();
//! ```

use std::path::{Path, PathBuf};
use std::str::FromStr;
use tokenizers::{
    PaddingDirection, PaddingParams, PaddingStrategy, PostProcessor, TruncationDirection,
    TruncationParams, TruncationStrategy,
};

/// A loaded `tokenizer.json`.
pub struct Tokenizer {
    inner: tokenizers::Tokenizer,
    path: PathBuf,
    pad_id: u32,
    pad_token: String,
}

/// Which side of a row the padding goes on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Padding {
    /// Real tokens first, then padding (encoders; what Hugging Face does by default).
    Right,
    /// Padding first, real tokens last (prompts for a decoder: the next token follows the
    /// last real one).
    Left,
}

/// A batch of encoded texts: row-major `[batch, seq]` tensors, `seq` the longest row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Batch {
    /// Token ids; padding positions hold [`Tokenizer::pad_id`].
    pub ids: Vec<i64>,
    /// 1 on real tokens (special tokens included), 0 on padding.
    pub mask: Vec<i64>,
    /// Segment ids from the tokenizer's template (all 0 for single texts).
    pub type_ids: Vec<i64>,
    pub batch: usize,
    pub seq: usize,
}

impl Batch {
    /// The number of real tokens in each row.
    pub fn lengths(&self) -> Vec<usize> {
        if self.seq == 0 {
            return vec![0; self.batch];
        }
        self.mask
            .chunks(self.seq.max(1))
            .map(|row| row.iter().filter(|&&m| m != 0).count())
            .collect()
    }
}

impl Tokenizer {
    /// Reads a `tokenizer.json`; the error names the file and says why it cannot be used.
    /// A GGUF file's tokenizer (`tokenizer.ggml.*`) is read too ([`crate::gguf_tokenizer`]).
    pub fn load(path: &Path) -> Result<Tokenizer, String> {
        // Mapped, not read: a GGUF model file holds gigabytes of weights after its tokenizer.
        let bytes = arch_runtime::safetensors_file::map(path)
            .map_err(|e| format!("cannot read tokenizer {}: {e}", path.display()))?;
        let text = if arch_runtime::gguf::is_gguf(&bytes) {
            let g = arch_runtime::gguf::Gguf::parse(&bytes)
                .map_err(|e| format!("{}: {e}", path.display()))?;
            crate::gguf_tokenizer::tokenizer_json(&g)
                .map_err(|e| format!("{}: {e}", path.display()))?
        } else {
            std::str::from_utf8(&bytes)
                .map_err(|_| {
                    format!(
                        "{} is neither a tokenizer.json (it is not UTF-8) nor a GGUF file",
                        path.display()
                    )
                })?
                .to_string()
        };
        let inner = tokenizers::Tokenizer::from_str(&text).map_err(|e| {
            format!(
                "{} is not a Hugging Face tokenizer.json: {e}",
                path.display()
            )
        })?;
        // The pad id: the file's padding settings, else a pad token of the vocabulary, else 0
        // (its value does not matter where the attention mask hides it).
        let (pad_id, pad_token) = match inner.get_padding() {
            Some(p) => (p.pad_id, p.pad_token.clone()),
            None => ["[PAD]", "<pad>", "<|pad|>", "<|endoftext|>"]
                .iter()
                .find_map(|t| inner.token_to_id(t).map(|id| (id, t.to_string())))
                .unwrap_or((0, String::new())),
        };
        Ok(Tokenizer {
            inner,
            path: path.to_path_buf(),
            pad_id,
            pad_token,
        })
    }

    /// The file it was loaded from.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The id written at padding positions.
    pub fn pad_id(&self) -> u32 {
        self.pad_id
    }

    /// The vocabulary size, added tokens included (the largest id + 1 at most).
    pub fn vocab_size(&self) -> usize {
        self.inner.get_vocab_size(true)
    }

    /// The id of a token (`[CLS]`, `<|endoftext|>`, ...), if the vocabulary has it.
    pub fn token_to_id(&self, token: &str) -> Option<u32> {
        self.inner.token_to_id(token)
    }

    /// How many special tokens the template adds to one text (`[CLS]` and `[SEP]`: 2).
    pub fn special_tokens_per_text(&self) -> usize {
        self.inner
            .get_post_processor()
            .map_or(0, |p| p.added_tokens(false))
    }

    /// Encodes `texts`, padded on the right to the longest and truncated to `max_len` tokens
    /// (special tokens included; pass the model's context).
    pub fn encode_batch(
        &self,
        texts: &[String],
        add_special_tokens: bool,
        max_len: usize,
    ) -> Result<Batch, String> {
        self.encode_batch_padded(texts, add_special_tokens, Padding::Right, max_len)
    }

    /// [`Tokenizer::encode_batch`] with the padding on either side.
    pub fn encode_batch_padded(
        &self,
        texts: &[String],
        add_special_tokens: bool,
        padding: Padding,
        max_len: usize,
    ) -> Result<Batch, String> {
        if texts.is_empty() {
            return Err("no texts to tokenize".into());
        }
        let special = if add_special_tokens {
            self.special_tokens_per_text()
        } else {
            0
        };
        // `tokenizers` subtracts the template's special tokens from the maximum whether or not
        // they are added; keep room for them and one real token.
        let floor = self.special_tokens_per_text().max(special) + 1;
        if max_len < floor {
            return Err(format!(
                "a maximum of {max_len} tokens leaves no room for text (the tokenizer adds {special} special tokens)"
            ));
        }
        let mut tok = self.inner.clone();
        tok.with_truncation(Some(TruncationParams {
            direction: TruncationDirection::Right,
            max_length: max_len,
            strategy: TruncationStrategy::LongestFirst,
            stride: 0,
        }))
        .map_err(|e| format!("{}: {e}", self.path.display()))?;
        tok.with_padding(Some(PaddingParams {
            strategy: PaddingStrategy::BatchLongest,
            direction: match padding {
                Padding::Right => PaddingDirection::Right,
                Padding::Left => PaddingDirection::Left,
            },
            pad_to_multiple_of: None,
            pad_id: self.pad_id,
            pad_type_id: 0,
            pad_token: self.pad_token.clone(),
        }));
        let inputs: Vec<&str> = texts.iter().map(String::as_str).collect();
        let encodings = tok
            .encode_batch(inputs, add_special_tokens)
            .map_err(|e| format!("cannot tokenize with {}: {e}", self.path.display()))?;
        let batch = encodings.len();
        let seq = encodings.first().map_or(0, |e| e.len());
        let mut out = Batch {
            ids: Vec::with_capacity(batch * seq),
            mask: Vec::with_capacity(batch * seq),
            type_ids: Vec::with_capacity(batch * seq),
            batch,
            seq,
        };
        for e in &encodings {
            if e.len() != seq {
                return Err(format!(
                    "{}: the padded rows differ in length ({} and {seq})",
                    self.path.display(),
                    e.len()
                ));
            }
            out.ids.extend(e.get_ids().iter().map(|&v| i64::from(v)));
            out.mask
                .extend(e.get_attention_mask().iter().map(|&v| i64::from(v)));
            out.type_ids
                .extend(e.get_type_ids().iter().map(|&v| i64::from(v)));
        }
        Ok(out)
    }

    /// Token ids back to text; special tokens (`[CLS]`, `<|endoftext|>`, ...) dropped when
    /// `skip_special_tokens`. Negative ids or ids past `u32` are errors.
    pub fn decode(&self, ids: &[i64], skip_special_tokens: bool) -> Result<String, String> {
        let ids: Vec<u32> = ids
            .iter()
            .map(|&v| u32::try_from(v).map_err(|_| format!("token id {v} is not a valid id")))
            .collect::<Result<_, _>>()?;
        self.inner
            .decode(&ids, skip_special_tokens)
            .map_err(|e| format!("cannot decode with {}: {e}", self.path.display()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A tiny WordPiece tokenizer.json in BERT's layout (lower-casing, [CLS] a [SEP]).
    fn tiny() -> (tempfile::TempDir, PathBuf) {
        let vocab: Vec<&str> = vec![
            "[PAD]", "[UNK]", "[CLS]", "[SEP]", "hello", "world", "a", "##b", ".",
        ];
        let vocab_json: String = vocab
            .iter()
            .enumerate()
            .map(|(i, t)| format!("\"{t}\": {i}"))
            .collect::<Vec<_>>()
            .join(", ");
        let specials: String = vocab[..4]
            .iter()
            .enumerate()
            .map(|(i, t)| {
                format!(
                    r#"{{"id": {i}, "content": "{t}", "single_word": false, "lstrip": false,
                         "rstrip": false, "normalized": false, "special": true}}"#
                )
            })
            .collect::<Vec<_>>()
            .join(", ");
        let json = format!(
            r###"{{
  "version": "1.0", "truncation": null, "padding": null, "added_tokens": [{specials}],
  "normalizer": {{"type": "BertNormalizer", "clean_text": true, "handle_chinese_chars": true,
                  "strip_accents": null, "lowercase": true}},
  "pre_tokenizer": {{"type": "BertPreTokenizer"}},
  "post_processor": {{"type": "TemplateProcessing",
    "single": [{{"SpecialToken": {{"id": "[CLS]", "type_id": 0}}}}, {{"Sequence": {{"id": "A", "type_id": 0}}}},
               {{"SpecialToken": {{"id": "[SEP]", "type_id": 0}}}}],
    "pair": [{{"Sequence": {{"id": "A", "type_id": 0}}}}, {{"Sequence": {{"id": "B", "type_id": 1}}}}],
    "special_tokens": {{"[CLS]": {{"id": "[CLS]", "ids": [2], "tokens": ["[CLS]"]}},
                        "[SEP]": {{"id": "[SEP]", "ids": [3], "tokens": ["[SEP]"]}}}}}},
  "decoder": {{"type": "WordPiece", "prefix": "##", "cleanup": true}},
  "model": {{"type": "WordPiece", "unk_token": "[UNK]", "continuing_subword_prefix": "##",
             "max_input_chars_per_word": 100, "vocab": {{{vocab_json}}}}}
}}"###
        );
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("tokenizer.json");
        std::fs::write(&path, json).unwrap();
        (dir, path)
    }

    fn texts(t: &[&str]) -> Vec<String> {
        t.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn pads_right_and_left_to_the_longest() {
        let (_dir, path) = tiny();
        let tok = Tokenizer::load(&path).unwrap();
        assert_eq!(tok.pad_id(), 0);
        assert_eq!(tok.special_tokens_per_text(), 2);
        let b = tok
            .encode_batch(&texts(&["Hello world.", "ab"]), true, 16)
            .unwrap();
        assert_eq!((b.batch, b.seq), (2, 5));
        assert_eq!(b.ids, vec![2, 4, 5, 8, 3, 2, 6, 7, 3, 0]);
        assert_eq!(b.mask, vec![1, 1, 1, 1, 1, 1, 1, 1, 1, 0]);
        assert_eq!(b.lengths(), vec![5, 4]);
        let l = tok
            .encode_batch_padded(&texts(&["Hello world.", "ab"]), false, Padding::Left, 16)
            .unwrap();
        assert_eq!((l.batch, l.seq), (2, 3));
        assert_eq!(l.ids, vec![4, 5, 8, 0, 6, 7]);
        assert_eq!(l.mask, vec![1, 1, 1, 0, 1, 1]);
    }

    #[test]
    fn truncates_keeping_the_special_tokens() {
        let (_dir, path) = tiny();
        let tok = Tokenizer::load(&path).unwrap();
        let b = tok
            .encode_batch(&texts(&["hello world hello world"]), true, 4)
            .unwrap();
        assert_eq!(b.ids, vec![2, 4, 5, 3]);
        assert!(tok.encode_batch(&texts(&["hello"]), true, 2).is_err());
        assert!(tok.encode_batch(&[], true, 8).is_err());
    }

    #[test]
    fn decodes_and_rejects_bad_ids() {
        let (_dir, path) = tiny();
        let tok = Tokenizer::load(&path).unwrap();
        assert_eq!(tok.decode(&[2, 4, 5, 8, 3], true).unwrap(), "hello world.");
        assert_eq!(tok.decode(&[6, 7], false).unwrap(), "ab");
        assert!(tok.decode(&[-1], true).is_err());
    }

    #[test]
    fn bad_files_are_errors_that_name_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let garbage = dir.path().join("garbage.json");
        std::fs::write(&garbage, "not json at all {").unwrap();
        let e = Tokenizer::load(&garbage).err().unwrap();
        assert!(e.contains("garbage.json"), "{e}");
        let missing = dir.path().join("missing.json");
        let e = Tokenizer::load(&missing).err().unwrap();
        assert!(
            e.contains("missing.json") && e.contains("cannot read"),
            "{e}"
        );
    }
}

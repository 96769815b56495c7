//! `archc train FILE[:MODEL] --data D (--init W | --seed S) --batch B --steps K --out DIR`:
//! builds the model's train package (forward, loss, backward and optimizer in one program,
//! cached), feeds it batches in order (or shuffled per epoch), logs each step, and writes
//! checkpoints that resume bit for bit.

use super::load_model;
use crate::collate;
use crate::interp::Value;
use crate::package::BuildOptions;
use crate::tensor::Tensor;
use crate::train::{label_inputs, Optimizer};
use arch_dsl::spec::{ArchSpec, Family, Objective};
use arch_runtime::generate::Rng;
use arch_runtime::train::{Hyper, Schedule, StepStats, TrainSession, Trainer, CHECKPOINT};
use arch_runtime::{HostTensor, Package, Session, Weights};
use std::collections::{BTreeMap, HashMap};
use std::io::{IsTerminal, Write};
use std::path::Path;
use std::process::ExitCode;
use std::time::Instant;

pub struct TrainArgs<'a> {
    pub target: &'a str,
    pub data: &'a Path,
    pub init: Option<&'a Path>,
    pub seed: Option<u64>,
    pub batch: usize,
    pub steps: u64,
    pub lr: f64,
    pub optimizer: &'a str,
    pub betas: (f64, f64),
    pub eps: f64,
    pub weight_decay: f64,
    pub momentum: f64,
    pub schedule: &'a str,
    pub warmup: u64,
    pub clip: f64,
    pub accum: u64,
    pub shuffle: bool,
    pub out: &'a Path,
    pub resume: Option<&'a Path>,
    pub save_every: Option<u64>,
    pub log: Option<&'a Path>,
    pub threads: usize,
    /// Text data: the tokenizer and the row length.
    pub tokenizer: Option<&'a Path>,
    pub seq_len: Option<usize>,
    /// Encoder-decoders: the decoder's start token and pad id for `decoder_input_ids`
    /// made from the labels.
    pub decoder_start: i64,
    pub pad_id: i64,
    /// Parameters not trained (canonical names; `prefix.` for all under it).
    pub freeze: &'a [String],
    /// The mask token of MLM and BART noising (default: the tokenizer's).
    pub mask_id: Option<i64>,
    /// cpu, cuda or cuda-sim.
    pub backend: &'a str,
}

pub fn run(args: &TrainArgs) -> ExitCode {
    match train(args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Training rows: every tensor [N, …] by name (integers).
#[derive(Debug, Clone)]
pub struct Data {
    pub rows: usize,
    pub tensors: BTreeMap<String, Tensor<i64>>,
}

/// The tensors pre-tokenized data may hold.
const DATA_TENSORS: &[&str] = &[
    "input_ids",
    "attention_mask",
    "token_type_ids",
    "labels",
    "decoder_input_ids",
    "next_sentence_label",
    "sentence_order_label",
    "chosen_ids",
    "rejected_ids",
    "prompt_lengths",
    "chosen_attention_mask",
    "rejected_attention_mask",
];

impl Data {
    /// Pre-tokenized safetensors: `input_ids` [N, T] and the optional tensors of
    /// [`DATA_TENSORS`], all with N rows.
    pub fn read(path: &Path) -> Result<Data, String> {
        let values = crate::tensor_io::read_values(path)?;
        let mut tensors = BTreeMap::new();
        for (name, v) in values {
            if !DATA_TENSORS.contains(&name.as_str()) {
                return Err(format!(
                    "{}: unexpected tensor `{name}` (training data holds {})",
                    path.display(),
                    DATA_TENSORS.join(", ")
                ));
            }
            let Value::I(t) = v else {
                return Err(format!(
                    "{}: `{name}` must hold integers (i64 or i32)",
                    path.display()
                ));
            };
            tensors.insert(name, t);
        }
        let key = Data::key_of(&tensors).ok_or_else(|| {
            format!(
                "{}: no `input_ids` tensor (or `chosen_ids` and `rejected_ids` for DPO)",
                path.display()
            )
        })?;
        let ids = &tensors[key];
        if ids.shape.len() != 2 || ids.shape[1] == 0 {
            return Err(format!(
                "{}: `{key}` must be [rows, tokens], it is {:?}",
                path.display(),
                ids.shape
            ));
        }
        let rows = ids.shape[0];
        if key == "chosen_ids" {
            for need in ["rejected_ids", "prompt_lengths"] {
                if !tensors.contains_key(need) {
                    return Err(format!("{}: DPO data needs `{need}`", path.display()));
                }
            }
        }
        for (name, t) in &tensors {
            let rank = if name.ends_with("_label") || name == "prompt_lengths" {
                1
            } else {
                2
            };
            if t.shape.len() != rank || t.shape[0] != rows || (rank == 2 && t.shape[1] == 0) {
                return Err(format!(
                    "{}: `{name}` has shape {:?}, expected {} rows{}",
                    path.display(),
                    t.shape,
                    rows,
                    if rank == 1 {
                        " of one label"
                    } else {
                        " of tokens"
                    }
                ));
            }
        }
        for pair in [
            ("chosen_ids", "rejected_ids"),
            ("chosen_ids", "chosen_attention_mask"),
            ("chosen_ids", "rejected_attention_mask"),
            ("input_ids", "attention_mask"),
            ("input_ids", "token_type_ids"),
            ("labels", "decoder_input_ids"),
        ] {
            if let (Some(a), Some(b)) = (tensors.get(pair.0), tensors.get(pair.1)) {
                if a.shape != b.shape {
                    return Err(format!(
                        "{}: `{}` {:?} and `{}` {:?} differ in shape",
                        path.display(),
                        pair.0,
                        a.shape,
                        pair.1,
                        b.shape
                    ));
                }
            }
        }
        Ok(Data { rows, tensors })
    }

    /// Plain text (one document per line) or .jsonl with a `text` field: each document
    /// tokenized and followed by the end-of-text token when the tokenizer has one, the
    /// stream cut into rows of `seq` tokens (the remainder dropped).
    /// The documents of a text file (one per line; .jsonl: the `text` field), tokenized
    /// without special tokens.
    pub fn documents(
        path: &Path,
        tokenizer: &Path,
    ) -> Result<(crate::tokenize::Tokenizer, Vec<Vec<i64>>), String> {
        let tok = crate::tokenize::Tokenizer::load(tokenizer)?;
        let raw = std::fs::read_to_string(path)
            .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
        let jsonl = path.extension().is_some_and(|e| e == "jsonl");
        let mut texts = Vec::new();
        for (i, line) in raw.lines().enumerate() {
            if line.trim().is_empty() {
                continue;
            }
            if jsonl {
                let v: serde_json::Value = serde_json::from_str(line)
                    .map_err(|e| format!("{}:{}: not a JSON object: {e}", path.display(), i + 1))?;
                let text = v.get("text").and_then(|t| t.as_str()).ok_or_else(|| {
                    format!("{}:{}: no string field `text`", path.display(), i + 1)
                })?;
                texts.push(text.to_string());
            } else {
                texts.push(line.to_string());
            }
        }
        let mut docs = Vec::with_capacity(texts.len());
        for chunk in texts.chunks(256) {
            let b = tok.encode_batch(chunk, false, usize::MAX >> 1)?;
            for (r, len) in b.lengths().into_iter().enumerate() {
                docs.push(b.ids[r * b.seq..r * b.seq + len].to_vec());
            }
        }
        Ok((tok, docs))
    }

    /// Sentence pairs from text for NSP or SOP (`label` names the label tensor), one row
    /// per document with at least two sentences: the document's sentences (ending at a
    /// full-stop token) cut at a random sentence boundary into A and B; NSP replaces B by
    /// another document's opening half the time (label 1), SOP swaps A and B half the time
    /// (label 1). Rows are `[CLS] A [SEP] B [SEP]` (the longer segment truncated to fit
    /// `seq`), padded, with segment ids and an attention mask. Seeded: the pairs are made
    /// once, as BERT's data creation does.
    pub fn sentence_pairs(
        path: &Path,
        tokenizer: &Path,
        seq: usize,
        label: &str,
        seed: u64,
    ) -> Result<Data, String> {
        let (tok, docs) = Data::documents(path, tokenizer)?;
        let id = |a: &str, b: &str| {
            tok.token_to_id(a)
                .or_else(|| tok.token_to_id(b))
                .map(|x| x as i64)
        };
        let (cls, sep) = id("[CLS]", "<s>").zip(id("[SEP]", "</s>")).ok_or(
            "sentence pairs need the tokenizer's [CLS] and [SEP] (or <s> and </s>) tokens",
        )?;
        let pad = id("[PAD]", "<pad>").unwrap_or(0);
        let stops: Vec<i64> = [".", "Ġ.", "▁.", "!", "?"]
            .iter()
            .filter_map(|t| tok.token_to_id(t).map(|x| x as i64))
            .collect();
        let sentences = |d: &[i64]| -> Vec<Vec<i64>> {
            let mut out = Vec::new();
            let mut cur = Vec::new();
            for &t in d {
                cur.push(t);
                if stops.contains(&t) {
                    out.push(std::mem::take(&mut cur));
                }
            }
            if !cur.is_empty() {
                out.push(cur);
            }
            out
        };
        let split: Vec<Vec<Vec<i64>>> = docs.iter().map(|d| sentences(d)).collect();
        let mut rng = Rng::new(seed ^ 0x5e47_7e4c_e9a1_7b2d);
        let budget = seq.saturating_sub(3).max(2);
        let (mut ids, mut types, mut mask, mut labels) =
            (Vec::new(), Vec::new(), Vec::new(), Vec::new());
        for (i, s) in split.iter().enumerate() {
            if s.len() < 2 {
                continue;
            }
            let k = 1 + rng.below(s.len() as u64 - 1) as usize;
            let mut a: Vec<i64> = s[..k].concat();
            let mut b: Vec<i64> = s[k..].concat();
            let l = if label == "next_sentence_label" {
                let other = if split.len() > 1 {
                    (i + 1 + rng.below(split.len() as u64 - 1) as usize) % split.len()
                } else {
                    i
                };
                let half = split[other].len().div_ceil(2).max(1);
                let random_b: Vec<i64> = split[other][..half.min(split[other].len())].concat();
                let (_, chosen, l) = collate::nsp_pair(&a, &b, &random_b, &mut rng);
                let chosen = chosen.to_vec();
                b = chosen;
                l
            } else {
                let (x, y, l) = collate::sop_pair(&a, &b, &mut rng);
                let (x, y) = (x.to_vec(), y.to_vec());
                a = x;
                b = y;
                l
            };
            // BERT's truncate_seq_pair: trim the longer segment from its end.
            while a.len() + b.len() > budget {
                if a.len() > b.len() {
                    a.pop();
                } else {
                    b.pop();
                }
            }
            let mut row = vec![cls];
            row.extend_from_slice(&a);
            row.push(sep);
            let first = row.len();
            row.extend_from_slice(&b);
            row.push(sep);
            let real = row.len();
            types.extend((0..seq).map(|p| i64::from(p >= first && p < real)));
            mask.extend((0..seq).map(|p| i64::from(p < real)));
            row.resize(seq, pad);
            ids.extend_from_slice(&row);
            labels.push(l);
        }
        let rows = labels.len();
        let t2 = |data: Vec<i64>| Tensor {
            shape: vec![rows, seq],
            data,
        };
        let mut tensors = BTreeMap::new();
        tensors.insert("input_ids".to_string(), t2(ids));
        tensors.insert("token_type_ids".to_string(), t2(types));
        tensors.insert("attention_mask".to_string(), t2(mask));
        tensors.insert(
            label.to_string(),
            Tensor {
                shape: vec![rows],
                data: labels,
            },
        );
        Ok(Data { rows, tensors })
    }

    pub fn text(
        path: &Path,
        tokenizer: &Path,
        seq: usize,
        wrap: Option<(u32, u32)>,
    ) -> Result<Data, String> {
        let (tok, docs) = Data::documents(path, tokenizer)?;
        let eot = ["<|endoftext|>", "</s>", "[SEP]"]
            .iter()
            .find_map(|t| tok.token_to_id(t));
        let mut stream: Vec<i64> = Vec::new();
        for d in docs {
            stream.extend_from_slice(&d);
            if let Some(e) = eot {
                stream.push(e as i64);
            }
        }
        if let Some((first, last)) = wrap {
            // Rows of seq − 2 tokens between the two special tokens.
            let inner = seq.saturating_sub(2).max(1);
            let rows = stream.len() / inner;
            let mut wrapped = Vec::with_capacity(rows * (inner + 2));
            for r in stream.chunks_exact(inner) {
                wrapped.push(first as i64);
                wrapped.extend_from_slice(r);
                wrapped.push(last as i64);
            }
            let mut tensors = BTreeMap::new();
            tensors.insert(
                "input_ids".to_string(),
                Tensor {
                    shape: vec![rows, inner + 2],
                    data: wrapped,
                },
            );
            return Ok(Data { rows, tensors });
        }
        let rows = stream.len() / seq.max(1);
        stream.truncate(rows * seq);
        let mut tensors = BTreeMap::new();
        tensors.insert(
            "input_ids".to_string(),
            Tensor {
                shape: vec![rows, seq],
                data: stream,
            },
        );
        Ok(Data { rows, tensors })
    }

    /// The tensor whose rows are the examples: `input_ids`, or DPO's `chosen_ids`.
    fn key_of(tensors: &BTreeMap<String, Tensor<i64>>) -> Option<&'static str> {
        ["input_ids", "chosen_ids"]
            .into_iter()
            .find(|k| tensors.contains_key(*k))
    }

    /// Tokens per row.
    pub fn width_of_rows(&self) -> usize {
        Data::key_of(&self.tensors)
            .and_then(|k| self.width(k))
            .unwrap_or(0)
    }

    fn row<'a>(&'a self, name: &str, r: usize) -> Option<&'a [i64]> {
        let t = self.tensors.get(name)?;
        let w: usize = t.shape[1..].iter().product();
        Some(&t.data[r * w..(r + 1) * w])
    }

    fn width(&self, name: &str) -> Option<usize> {
        self.tensors
            .get(name)
            .map(|t| t.shape[1..].iter().product())
    }
}

/// How batches are made from the data for a spec.
pub struct Batcher<'a> {
    pub spec: &'a ArchSpec,
    pub data: &'a Data,
    pub shuffle: Option<u64>,
    pub decoder_start: i64,
    pub pad_id: i64,
    /// Makes inputs and labels from rows that have no labels (MLM, span corruption,
    /// denoising).
    pub collator: Option<Collator>,
    /// DPO: the reference model's log-probability of every chosen response (rows 0..N)
    /// and rejected response (N..2N).
    pub dpo_reference: Option<Vec<f32>>,
    /// Epoch → its row order (shuffled), cached.
    order: Option<(usize, Vec<usize>)>,
}

/// An objective's collator with its token ids and seed.
#[derive(Debug, Clone)]
pub enum Collator {
    /// BERT's static or RoBERTa's dynamic masking.
    Mlm {
        cfg: collate::Mlm,
        dynamic: bool,
        seed: u64,
    },
    /// T5's span corruption; `eos` ends inputs and targets.
    Span {
        rate: f64,
        mean_span: f64,
        vocab: u64,
        eos: Option<i64>,
        seed: u64,
    },
    /// BART's noising; the target is the row.
    Denoise { cfg: collate::Denoise, seed: u64 },
}

impl Collator {
    /// The collator `spec`'s objectives need when the data has no labels, with the token
    /// ids from `tok` (or the flags); `None` for next-token models.
    pub fn for_spec(
        spec: &ArchSpec,
        tok: Option<&crate::tokenize::Tokenizer>,
        mask_id: Option<i64>,
        pad_id: i64,
        seed: u64,
    ) -> Result<Option<Collator>, String> {
        let id = |names: &[&str]| {
            tok.and_then(|t| names.iter().find_map(|n| t.token_to_id(n)))
                .map(|x| x as i64)
        };
        let mask = || {
            mask_id.or_else(|| id(&["[MASK]", "<mask>"])).ok_or_else(|| {
                "masking needs the mask token's id: --mask-id ID, or a --tokenizer that has [MASK] or <mask>".to_string()
            })
        };
        for o in &spec.objectives {
            match o {
                // ELECTRA: the generator's masking makes the batches.
                Objective::Rtd { generator, .. } => {
                    return Collator::for_spec(generator, tok, mask_id, pad_id, seed)
                }
                Objective::Mlm {
                    rate,
                    mask: m,
                    random,
                    dynamic,
                } if spec.family == Family::EncoderOnly => {
                    let mut special: Vec<i64> = ["[CLS]", "[SEP]", "[PAD]", "<s>", "</s>", "<pad>"]
                        .iter()
                        .filter_map(|n| id(&[n]))
                        .collect();
                    special.push(pad_id);
                    return Ok(Some(Collator::Mlm {
                        cfg: collate::Mlm {
                            rate: *rate,
                            mask: *m,
                            random: *random,
                            mask_id: mask()?,
                            vocab: spec.vocab,
                            special,
                        },
                        dynamic: *dynamic,
                        seed,
                    }));
                }
                Objective::SpanCorruption { rate, mean_span } => {
                    return Ok(Some(Collator::Span {
                        rate: *rate,
                        mean_span: *mean_span,
                        vocab: spec.vocab,
                        eos: id(&["</s>"]),
                        seed,
                    }))
                }
                Objective::Denoise {
                    token_mask,
                    token_delete,
                    text_infill,
                    lambda,
                    sentence_permute,
                    document_rotate,
                } => {
                    let full_stops: Vec<i64> =
                        [".", "Ġ.", "▁."].iter().filter_map(|n| id(&[n])).collect();
                    return Ok(Some(Collator::Denoise {
                        cfg: collate::Denoise {
                            token_mask: *token_mask,
                            token_delete: *token_delete,
                            text_infill: *text_infill,
                            lambda: *lambda,
                            sentence_permute: *sentence_permute,
                            document_rotate: *document_rotate,
                            mask_id: mask()?,
                            full_stops,
                        },
                        seed,
                    }));
                }
                _ => {}
            }
        }
        Ok(None)
    }

    /// (input, labels) of one row (`row` of the data, seen in `epoch`).
    fn apply(&self, ids: &[i64], row: u64, epoch: u64) -> (Vec<i64>, Vec<i64>) {
        match self {
            Collator::Mlm { cfg, dynamic, seed } => {
                let mut rng = collate::row_rng(*seed, row, dynamic.then_some(epoch));
                collate::mlm(ids, cfg, &mut rng)
            }
            Collator::Span {
                rate,
                mean_span,
                vocab,
                eos,
                seed,
            } => {
                let mut rng = collate::row_rng(*seed, row, Some(epoch));
                let (mut i, mut t) =
                    collate::span_corruption(ids, *rate, *mean_span, *vocab, &mut rng);
                if let Some(e) = eos {
                    i.push(*e);
                    t.push(*e);
                }
                (i, t)
            }
            Collator::Denoise { cfg, seed } => {
                let mut rng = collate::row_rng(*seed, row, Some(epoch));
                (collate::denoise(ids, cfg, &mut rng), ids.to_vec())
            }
        }
    }
}

impl<'a> Batcher<'a> {
    pub fn new(spec: &'a ArchSpec, data: &'a Data, shuffle: Option<u64>) -> Batcher<'a> {
        Batcher {
            spec,
            data,
            shuffle,
            decoder_start: 0,
            pad_id: 0,
            collator: None,
            dpo_reference: None,
            order: None,
        }
    }

    /// Data row of global position `pos` (positions run on across epochs).
    fn data_row(&mut self, pos: usize) -> usize {
        let n = self.data.rows;
        let (epoch, i) = (pos / n, pos % n);
        let Some(seed) = self.shuffle else {
            return i;
        };
        if self.order.as_ref().is_none_or(|(e, _)| *e != epoch) {
            let mut rng = Rng::new(seed ^ (epoch as u64 + 1).wrapping_mul(0xd1b5_4a32_d192_ed03));
            let mut perm: Vec<usize> = (0..n).collect();
            for k in (1..n).rev() {
                perm.swap(k, rng.below(k as u64 + 1) as usize);
            }
            self.order = Some((epoch, perm));
        }
        self.order.as_ref().map_or(i, |(_, p)| p[i])
    }

    /// The collator's tensors for `rows`: `input_ids`, `labels` and, where the rows come
    /// out of different lengths, an `attention_mask` (inputs padded with the pad id,
    /// labels with −100). Positions the data's own mask marks as padding are not scored.
    #[allow(clippy::type_complexity)]
    fn collate(
        &self,
        c: &Collator,
        rows: &[usize],
        epoch: usize,
    ) -> Vec<(&'static str, Vec<usize>, Vec<i64>)> {
        let d = self.data;
        let mut inputs = Vec::new();
        let mut labels = Vec::new();
        for &r in rows {
            let ids = d.row("input_ids", r).unwrap_or(&[]);
            let (mut i, mut l) = c.apply(ids, r as u64, epoch as u64);
            if let Some(m) = d.row("attention_mask", r) {
                if matches!(c, Collator::Mlm { .. }) {
                    for (k, &keep) in m.iter().enumerate() {
                        if keep == 0 {
                            i[k] = ids[k];
                            l[k] = crate::train::IGNORE;
                        }
                    }
                }
            }
            let limit = self.spec.context as usize;
            i.truncate(limit);
            l.truncate(limit);
            inputs.push(i);
            labels.push(l);
        }
        let pad = |rows: Vec<Vec<i64>>, with: i64| {
            let w = rows.iter().map(Vec::len).max().unwrap_or(0).max(1);
            let mut data = Vec::with_capacity(rows.len() * w);
            let mut mask = Vec::with_capacity(rows.len() * w);
            for r in &rows {
                data.extend_from_slice(r);
                data.extend(std::iter::repeat_n(with, w - r.len()));
                mask.extend(std::iter::repeat_n(1, r.len()));
                mask.extend(std::iter::repeat_n(0, w - r.len()));
            }
            (vec![rows.len(), w], data, mask)
        };
        let (is, iv, im) = pad(inputs, self.pad_id);
        let (ls, lv, _) = pad(labels, crate::train::IGNORE);
        let mut out = vec![("input_ids", is.clone(), iv), ("labels", ls, lv)];
        if !matches!(c, Collator::Mlm { .. }) {
            out.push(("attention_mask", is, im));
        }
        out
    }

    /// The inputs of the micro-batch of `batch` rows starting at global position `pos`.
    pub fn batch(
        &mut self,
        pos: usize,
        batch: usize,
    ) -> Result<HashMap<String, HostTensor>, String> {
        let rows: Vec<usize> = (pos..pos + batch).map(|p| self.data_row(p)).collect();
        let d = self.data;
        if let Some(reference) = &self.dpo_reference {
            return dpo_batch(d, &rows, reference);
        }
        let collated = match &self.collator {
            Some(c) if !d.tensors.contains_key("labels") => {
                Some(self.collate(c, &rows, pos / d.rows))
            }
            _ => None,
        };
        let gather = |name: &str| -> Option<(Vec<usize>, Vec<i64>)> {
            if let Some(c) = &collated {
                if let Some((_, s, v)) = c.iter().find(|(n, _, _)| *n == name) {
                    return Some((s.clone(), v.clone()));
                }
            }
            let w = d.width(name)?;
            let mut v = Vec::with_capacity(batch * w);
            for &r in &rows {
                v.extend_from_slice(d.row(name, r)?);
            }
            let shape = if d.tensors[name].shape.len() == 1 {
                vec![batch]
            } else {
                vec![batch, w]
            };
            Some((shape, v))
        };
        let spec = self.spec;
        let vocab = spec.vocab as i64;
        let mut out = HashMap::new();
        let (ids_shape, ids) = gather("input_ids").ok_or("the data has no `input_ids`")?;
        let mask = gather("attention_mask");
        if spec.embed.segments > 0 {
            if let Some((s, v)) = gather("token_type_ids") {
                out.insert("token_type_ids".into(), HostTensor::i64(s, v));
            }
        }
        for (name, _) in label_inputs(spec)? {
            let given = gather(name);
            let (shape, labels) = match (name, given) {
                (_, Some(g)) => g,
                ("labels", None) if spec.family == Family::DecoderOnly => {
                    // Hugging Face's causal-LM labels: the inputs, padding ignored.
                    let mut l = ids.clone();
                    if let Some((_, m)) = &mask {
                        for (x, &keep) in l.iter_mut().zip(m) {
                            if keep == 0 {
                                *x = crate::train::IGNORE;
                            }
                        }
                    }
                    (ids_shape.clone(), l)
                }
                ("labels", None) => {
                    return Err(format!(
                        "model `{}` has no collator for its objective: the data needs a `labels` tensor (−100 where not scored)",
                        spec.name
                    ))
                }
                (other, None) => {
                    return Err(format!(
                        "model `{}` has the {} objective: the data needs `{other}` [rows]",
                        spec.name,
                        if other == "next_sentence_label" { "nsp" } else { "sop" }
                    ))
                }
            };
            let classes = if name == "labels" { vocab } else { 2 };
            if let Some(bad) = labels
                .iter()
                .find(|&&l| l != crate::train::IGNORE && !(0..classes).contains(&l))
            {
                return Err(format!(
                    "`{name}` holds {bad}, outside 0..{classes} (−100 marks positions not scored)"
                ));
            }
            if name == "labels"
                && labels.iter().all(|&l| l == crate::train::IGNORE)
                && spec.family != Family::DecoderOnly
            {
                return Err(format!(
                    "the micro-batch at row {pos} has no scored label (every label is −100)"
                ));
            }
            if name == "labels" && spec.family == Family::EncoderDecoder {
                let dec = match gather("decoder_input_ids") {
                    Some((s, v)) => (s, v),
                    None => {
                        // Hugging Face's shift_tokens_right: the start token, then the
                        // labels but the last, −100 replaced by the pad id.
                        let t = shape[1];
                        let mut v = Vec::with_capacity(labels.len());
                        for row in labels.chunks(t) {
                            v.push(self.decoder_start);
                            v.extend(row[..t - 1].iter().map(|&x| {
                                if x == crate::train::IGNORE {
                                    self.pad_id
                                } else {
                                    x
                                }
                            }));
                        }
                        (shape.clone(), v)
                    }
                };
                out.insert("decoder_input_ids".into(), HostTensor::i64(dec.0, dec.1));
            }
            out.insert(name.into(), HostTensor::i64(shape, labels));
        }
        if let Some((s, v)) = mask {
            out.insert("attention_mask".into(), HostTensor::i64(s, v));
        }
        out.insert("input_ids".into(), HostTensor::i64(ids_shape, ids));
        Ok(out)
    }
}

/// DPO's rows: the pairs' chosen responses then their rejected ones ([2·pairs, T]), labels
/// on the response tokens only (−100 on the prompt and on padding), and the reference
/// model's log-probability of each.
pub fn dpo_batch(
    d: &Data,
    rows: &[usize],
    reference: &[f32],
) -> Result<HashMap<String, HostTensor>, String> {
    let t = d.width("chosen_ids").unwrap_or(0);
    let n = d.rows;
    let (mut ids, mut labels, mut mask, mut refs) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for (which, mask_name, offset) in [
        ("chosen_ids", "chosen_attention_mask", 0),
        ("rejected_ids", "rejected_attention_mask", n),
    ] {
        for &r in rows {
            let row = d.row(which, r).ok_or("DPO data without its responses")?;
            let prompt = d
                .row("prompt_lengths", r)
                .and_then(|p| p.first().copied())
                .unwrap_or(0);
            if prompt < 0 || prompt as usize >= t {
                return Err(format!(
                    "`prompt_lengths` of row {r} is {prompt}: it must leave a response in rows of {t} tokens"
                ));
            }
            let m = d.row(mask_name, r);
            for (k, &x) in row.iter().enumerate() {
                let real = m.is_none_or(|m| m[k] != 0);
                ids.push(x);
                labels.push(if (k as i64) < prompt || !real {
                    crate::train::IGNORE
                } else {
                    x
                });
                mask.push(i64::from(real));
            }
            refs.push(reference[offset + r]);
        }
    }
    let b = 2 * rows.len();
    let mut out = HashMap::new();
    out.insert("input_ids".to_string(), HostTensor::i64(vec![b, t], ids));
    out.insert("labels".to_string(), HostTensor::i64(vec![b, t], labels));
    out.insert(
        crate::train::DPO_REFERENCE.to_string(),
        HostTensor::f32(vec![b], refs),
    );
    if d.tensors.contains_key("chosen_attention_mask") {
        out.insert(
            "attention_mask".to_string(),
            HostTensor::i64(vec![b, t], mask),
        );
    }
    Ok(out)
}

/// The frozen reference model's log-probability of every DPO response (chosen rows, then
/// rejected rows) under `params`: the forward program's logits, summed on the host in f64
/// over each response's tokens.
fn dpo_reference(
    spec: &ArchSpec,
    data: &Data,
    params: &BTreeMap<String, Vec<f32>>,
    threads: usize,
    batch: usize,
) -> Result<Vec<f32>, String> {
    let masked = data.tensors.contains_key("chosen_attention_mask");
    let opts = BuildOptions {
        outputs: vec!["logits".into()],
        attention_mask: masked,
        ..BuildOptions::host()?
    };
    let built = crate::package::build(spec, &opts, None)?;
    let package = Package::load(&built.dir).map_err(|e| e.to_string())?;
    let weights =
        Weights::from_tensors(package.manifest(), params.clone()).map_err(|e| e.to_string())?;
    let mut session = Session::new(package, weights, threads).map_err(|e| e.to_string())?;
    let n = data.rows;
    let mut out = vec![0f32; 2 * n];
    let rows: Vec<usize> = (0..n).collect();
    let zeros = vec![0f32; 2 * n];
    for chunk in rows.chunks(batch.max(1)) {
        let mut inputs = dpo_batch(data, chunk, &zeros)?;
        inputs.remove(crate::train::DPO_REFERENCE);
        let labels = inputs.remove("labels").ok_or("no labels")?;
        let outputs = session.run("forward", &inputs).map_err(|e| e.to_string())?;
        let logits = outputs
            .iter()
            .find(|(n, _)| n == "logits")
            .and_then(|(_, t)| t.as_f32())
            .ok_or("the reference model has no logits")?;
        let t = labels.shape[1];
        let arch_runtime::HostData::I64(labels) = labels.data else {
            return Err("labels must be i64".into());
        };
        let v = spec.vocab as usize;
        for (row, lab) in labels.chunks(t).enumerate() {
            let mut s = 0f64;
            for k in 1..t {
                if lab[k] == crate::train::IGNORE {
                    continue;
                }
                let l = &logits[(row * t + k - 1) * v..(row * t + k) * v];
                let max = l.iter().copied().fold(f32::NEG_INFINITY, f32::max) as f64;
                let lse = l.iter().map(|&x| (x as f64 - max).exp()).sum::<f64>().ln() + max;
                s += l[lab[k] as usize] as f64 - lse;
            }
            // Row `row` of the chunk's 2·len rows: chosen first, then rejected.
            let (half, i) = (row / chunk.len(), row % chunk.len());
            out[half * n + chunk[i]] = s as f32;
        }
    }
    Ok(out)
}

fn train(args: &TrainArgs) -> Result<(), String> {
    let spec = load_model(args.target).ok_or("the spec has errors")?;
    crate::train::losses(&spec)?;
    if args.batch == 0 || args.accum == 0 || args.steps == 0 {
        return Err("--batch, --accum and --steps must be at least 1".into());
    }
    let optimizer = match args.optimizer {
        "adamw" => Optimizer::AdamW,
        "sgd" => Optimizer::Sgd,
        o => return Err(format!("unknown optimizer `{o}` (adamw or sgd)")),
    };
    let schedule = Schedule::parse(args.schedule)?;
    for (name, v) in [
        ("--lr", args.lr),
        ("--eps", args.eps),
        ("--weight-decay", args.weight_decay),
        ("--clip", args.clip),
    ] {
        if !v.is_finite() || v < 0.0 {
            return Err(format!("{name} must be a finite number ≥ 0, got {v}"));
        }
    }
    for b in [args.betas.0, args.betas.1] {
        if !(0.0..1.0).contains(&b) {
            return Err(format!("--betas must lie in [0, 1), got {b}"));
        }
    }
    let device = super::device_of(args.backend)?;
    let resuming = args.resume.is_some();
    if !resuming && args.out.join(CHECKPOINT).exists() {
        return Err(format!(
            "{} already holds a checkpoint: pass --resume {} to continue it, or choose another --out",
            args.out.display(),
            args.out.display()
        ));
    }
    if !resuming && args.init.is_none() && args.seed.is_none() {
        return Err(
            "give --init W.safetensors (weights to start from) or --seed S (fresh weights)".into(),
        );
    }

    // Data.
    let is_text = args.data.extension().is_none_or(|e| e != "safetensors");
    let data = if is_text {
        let tok = args.tokenizer.ok_or_else(|| {
            format!(
                "{} is text: give --tokenizer tokenizer.json (or pre-tokenized .safetensors data)",
                args.data.display()
            )
        })?;
        let pair_label = spec.objectives.iter().find_map(|o| match o {
            Objective::Nsp => Some("next_sentence_label"),
            Objective::Sop => Some("sentence_order_label"),
            _ => None,
        });
        let seq = args.seq_len.unwrap_or(128).min(spec.context as usize);
        if seq < 4 {
            return Err(format!("--seq-len must be at least 4 tokens, got {seq}"));
        }
        if let Some(label) = pair_label {
            Data::sentence_pairs(args.data, tok, seq, label, args.seed.unwrap_or(0))?
        } else {
            // An encoder's rows are wrapped in the tokenizer's [CLS] … [SEP] (or <s> … </s>).
            let wrap = if spec.family == Family::EncoderOnly {
                let t = crate::tokenize::Tokenizer::load(tok)?;
                let id = |a: &str, b: &str| t.token_to_id(a).or_else(|| t.token_to_id(b));
                id("[CLS]", "<s>").zip(id("[SEP]", "</s>"))
            } else {
                None
            };
            Data::text(args.data, tok, seq, wrap)?
        }
    } else {
        Data::read(args.data)?
    };
    let collator = if data.tensors.contains_key("labels") || spec.family == Family::DecoderOnly {
        None
    } else {
        let tok = args
            .tokenizer
            .map(crate::tokenize::Tokenizer::load)
            .transpose()?;
        Collator::for_spec(
            &spec,
            tok.as_ref(),
            args.mask_id,
            args.pad_id,
            args.seed.unwrap_or(0),
        )?
    };
    let pads = matches!(
        collator,
        Some(Collator::Span { .. } | Collator::Denoise { .. })
    );
    let per_step = args.batch * args.accum as usize;
    if data.rows < args.batch {
        return Err(format!(
            "{} holds {} rows, shorter than one batch of {}",
            args.data.display(),
            data.rows,
            args.batch
        ));
    }
    let t = data.width_of_rows();
    let dpo = spec
        .objectives
        .iter()
        .any(|o| matches!(o, Objective::Dpo { .. }));
    if dpo != data.tensors.contains_key("chosen_ids") {
        return Err(if dpo {
            format!("model `{}` trains with DPO: the data needs `chosen_ids`, `rejected_ids` and `prompt_lengths`", spec.name)
        } else {
            format!(
                "{} is DPO data (`chosen_ids`), but model `{}` has no `dpo` objective",
                args.data.display(),
                spec.name
            )
        });
    }
    if t as u64 > spec.context {
        return Err(format!(
            "rows of {t} tokens exceed the context of model `{}` ({})",
            spec.name, spec.context
        ));
    }

    // The package.
    let opts_mask = data.tensors.contains_key("attention_mask")
        || data.tensors.contains_key("chosen_attention_mask")
        || pads;
    let opts = crate::train::TrainOptions {
        optimizer,
        accumulate: args.accum > 1,
        attention_mask: opts_mask,
        frozen: args.freeze.to_vec(),
    };
    let (session, built) = match device {
        None => {
            let (s, b) = crate::train::train_session(&spec, opts, args.threads, true)?;
            (AnySession::Cpu(Box::new(s)), b)
        }
        Some(sim) => {
            let (s, b) = crate::train::train_device_session(&spec, opts, sim, true)?;
            eprintln!("archc: training on {}", s.describe());
            (AnySession::Device(Box::new(s)), b)
        }
    };
    if !built.cached {
        eprintln!("archc: built the train package in {:.1} s", built.seconds);
    }

    let mut naming = None;
    let mut file_names: Vec<String> = Vec::new();
    let params: BTreeMap<String, Vec<f32>> = match (args.init, args.seed) {
        (Some(w), _) => {
            let (params, label) = crate::train::load_init(&spec, w)?;
            naming = Some(label);
            file_names = tensor_names(w);
            params
        }
        (None, Some(s)) => crate::train::init_params(&spec, s),
        // Resuming: the checkpoint overwrites them.
        (None, None) => crate::train::init_params(&spec, 0),
    };
    let hyper = Hyper {
        lr: args.lr,
        beta1: if optimizer == Optimizer::Sgd {
            args.momentum
        } else {
            args.betas.0
        },
        beta2: args.betas.1,
        eps: args.eps,
        weight_decay: args.weight_decay,
        clip: args.clip,
        schedule,
        warmup: args.warmup,
        steps: args.steps,
        accum: args.accum,
    };
    let run = Run {
        args,
        spec: &spec,
        data: &data,
        params: &params,
        naming,
        file_names,
        resuming,
        per_step,
        opts_mask,
        collator,
        dpo,
    };
    match session {
        AnySession::Cpu(s) => drive(
            Trainer::new(*s, &params, hyper).map_err(|e| e.to_string())?,
            run,
        ),
        AnySession::Device(s) => drive(
            Trainer::new(*s, &params, hyper).map_err(|e| e.to_string())?,
            run,
        ),
    }
}

/// A train package's session on the CPU or on a cuda device.
enum AnySession {
    Cpu(Box<Session>),
    Device(Box<arch_runtime::device::DeviceSession>),
}

/// What a training run has settled before its trainer exists.
struct Run<'a> {
    args: &'a TrainArgs<'a>,
    spec: &'a ArchSpec,
    data: &'a Data,
    params: &'a BTreeMap<String, Vec<f32>>,
    naming: Option<String>,
    file_names: Vec<String>,
    resuming: bool,
    per_step: usize,
    opts_mask: bool,
    collator: Option<Collator>,
    dpo: bool,
}

/// Resumes (when asked), runs the steps, logs and checkpoints.
fn drive<S: TrainSession>(mut trainer: Trainer<S>, run: Run) -> Result<(), String> {
    let Run {
        args,
        spec,
        data,
        params,
        mut naming,
        mut file_names,
        resuming,
        per_step,
        opts_mask,
        collator,
        dpo,
    } = run;
    let shuffle = args.shuffle.then(|| args.seed.unwrap_or(0));
    if let Some(dir) = args.resume {
        trainer.restore(dir).map_err(|e| e.to_string())?;
        naming = trainer
            .state
            .extra
            .get("naming")
            .and_then(|n| n.as_str())
            .map(String::from);
        file_names = trainer
            .state
            .extra
            .get("file_names")
            .and_then(|v| serde_json::from_value(v.clone()).ok())
            .unwrap_or_default();
        let was = trainer.state.extra.get("shuffle").cloned();
        if let Some(w) = was {
            if w != serde_json::json!(shuffle) {
                return Err("resume with the --shuffle and --seed of the interrupted run".into());
            }
        }
        // The data position follows from the step, the batch and the accumulation: a
        // resumed run must keep them (and the data) to continue where it stopped.
        if let Some(then) = trainer.state.extra.get("rows").and_then(|v| v.as_u64()) {
            if then as usize != data.rows {
                eprintln!(
                    "archc: warning: the checkpoint was trained on {then} rows, this data has {}: the run will not repeat an uninterrupted one",
                    data.rows
                );
            }
        }
        for (key, now) in [("batch", args.batch), ("accum", args.accum as usize)] {
            if let Some(then) = trainer.state.extra.get(key).and_then(|v| v.as_u64()) {
                if then as usize != now {
                    return Err(format!(
                        "the checkpoint was trained with {key} {then}, this run has {now}: resume with the interrupted run's --batch, --accum and data"
                    ));
                }
            }
        }
        eprintln!(
            "archc: resumed {} at step {}",
            dir.display(),
            trainer.state.step
        );
    }
    let start = trainer.state.step;
    if start >= args.steps {
        return Err(format!(
            "the checkpoint is at step {start}; --steps {} leaves nothing to do",
            args.steps
        ));
    }
    std::fs::create_dir_all(args.out)
        .map_err(|e| format!("cannot create {}: {e}", args.out.display()))?;
    let mut log = match args.log {
        Some(p) => Some(
            std::fs::OpenOptions::new()
                .create(true)
                .write(true)
                .append(resuming)
                .truncate(!resuming)
                .open(p)
                .map_err(|e| format!("cannot write {}: {e}", p.display()))?,
        ),
        None => None,
    };
    let mut batcher = Batcher::new(spec, data, shuffle);
    batcher.decoder_start = args.decoder_start;
    batcher.pad_id = args.pad_id;
    batcher.collator = collator;
    // DPO's frozen reference: the starting weights, scored once over all the data (a
    // resumed run reads the scores from its checkpoint).
    let reference: Option<Vec<f32>> = if dpo {
        let kept = trainer
            .state
            .extra
            .get("dpo_reference")
            .and_then(|v| serde_json::from_value::<Vec<f32>>(v.clone()).ok());
        match kept {
            Some(r) if resuming => Some(r),
            _ if resuming => {
                return Err("the checkpoint has no DPO reference scores".into());
            }
            _ => {
                eprintln!(
                    "archc: scoring {} pairs with the reference model",
                    data.rows
                );
                Some(dpo_reference(spec, data, params, args.threads, args.batch)?)
            }
        }
    } else {
        None
    };
    batcher.dpo_reference = reference.clone();
    // ELECTRA: the generator samples the discriminator's input before each step.
    let mut sampler = if crate::train::rtd_generator(spec)?.is_some() {
        Some(crate::train::RtdSampler::new(
            spec,
            &mut trainer,
            opts_mask,
            args.threads,
        )?)
    } else {
        None
    };
    let rtd_seed = args.seed.unwrap_or(0) ^ crate::train::RTD_SEED_SALT;
    let tty = std::io::stderr().is_terminal();
    let every = (args.steps / 20).max(1);
    let began = Instant::now();
    let mut tokens_done = 0usize;
    for step in start + 1..=args.steps {
        let t0 = Instant::now();
        let first = (step - 1) as usize * per_step;
        let mut micro: Vec<HashMap<String, HostTensor>> = (0..args.accum as usize)
            .map(|j| batcher.batch(first + j * args.batch, args.batch))
            .collect::<Result<_, _>>()?;
        if let Some(s) = &mut sampler {
            for (j, m) in micro.iter_mut().enumerate() {
                // One generator per row, from its global data position (stateless, so a
                // resumed run draws the same replacements).
                let pos = first + j * args.batch;
                let mut rngs: Vec<Rng> = (pos..pos + args.batch)
                    .map(|p| collate::row_rng(rtd_seed, p as u64, None))
                    .collect();
                s.corrupt(&mut trainer, m, &mut rngs)?;
            }
        }
        let tokens: usize = micro.iter().map(|m| m["input_ids"].len()).sum();
        let stats: StepStats = trainer.step(&micro).map_err(|e| e.to_string())?;
        let secs = t0.elapsed().as_secs_f64();
        tokens_done += tokens;
        let tps = tokens as f64 / secs.max(1e-9);
        if let Some(f) = &mut log {
            let line = serde_json::json!({
                "step": stats.step, "loss": stats.loss, "lr": stats.lr,
                "grad_norm": stats.grad_norm, "tokens_per_s": tps,
            });
            writeln!(f, "{line}").map_err(|e| format!("cannot write the log: {e}"))?;
        }
        let done = (step - start) as f64;
        let eta = began.elapsed().as_secs_f64() / done * (args.steps - step) as f64;
        let line = format!(
            "step {step}/{} loss {:.4} lr {:.3e} {:.0} tok/s ETA {}",
            args.steps,
            stats.loss,
            stats.lr,
            tokens_done as f64 / began.elapsed().as_secs_f64().max(1e-9),
            clock(eta)
        );
        if tty {
            let width = 24;
            let filled = (width as f64 * step as f64 / args.steps as f64) as usize;
            eprint!(
                "\r[{}{}] {line}   ",
                "#".repeat(filled),
                "-".repeat(width - filled)
            );
        } else if step % every == 0 || step == args.steps {
            eprintln!("archc: {line}");
        }
        trainer.state.extra = serde_json::json!({
            "data_rows": step as usize * per_step,
            "batch": args.batch,
            "accum": args.accum,
            "rows": data.rows,
            "shuffle": shuffle,
            "naming": naming,
            "file_names": file_names,
            "dpo_reference": reference,
        });
        if args.save_every.is_some_and(|n| n > 0 && step % n == 0) && step != args.steps {
            save(&mut trainer, spec, args.out)?;
        }
    }
    if tty {
        eprintln!();
    }
    let path = save(&mut trainer, spec, args.out)?;
    eprintln!(
        "archc: {} steps, final loss {:.4}; checkpoint {}",
        args.steps - start,
        trainer.state.losses.last().copied().unwrap_or(f64::NAN),
        path.display()
    );
    Ok(())
}

/// The tensor names of a safetensors file or model directory (empty when unreadable).
fn tensor_names(path: &Path) -> Vec<String> {
    use arch_runtime::safetensors_file::{map, parse, resolve};
    let mut out = Vec::new();
    for f in resolve(path).unwrap_or_default() {
        if let Ok(m) = map(&f) {
            if let Ok(st) = parse(&f, &m) {
                out.extend(st.names().into_iter().map(String::from));
            }
        }
    }
    out.sort();
    out
}

fn clock(secs: f64) -> String {
    if !secs.is_finite() {
        return "?".into();
    }
    let s = secs.round() as u64;
    format!("{}:{:02}:{:02}", s / 3600, s / 60 % 60, s % 60)
}

/// Writes the checkpoint (parameters, optimizer, trainer state), the weights in canonical
/// names (`weights.safetensors`, for `--weights`) and in Hugging Face's names where the
/// model has a naming (`model.safetensors`), and the loss curve (`loss.svg`). Each file is
/// written to a temporary name and renamed.
fn save<S: TrainSession>(
    trainer: &mut Trainer<S>,
    spec: &ArchSpec,
    dir: &Path,
) -> Result<std::path::PathBuf, String> {
    let path = trainer.save(dir).map_err(|e| e.to_string())?;
    crate::train::save_weights(trainer, spec, &dir.join("weights.safetensors"))?;
    if let Some(hf) = hf_naming(
        spec,
        trainer.state.extra.get("naming").and_then(|n| n.as_str()),
    ) {
        let names: Vec<String> = trainer
            .state
            .extra
            .get("file_names")
            .and_then(|v| serde_json::from_value(v.clone()).ok())
            .unwrap_or_default();
        let known = |n: &str| names.iter().any(|x| x == n);
        let exported = trainer.export(&hf, &known).map_err(|e| e.to_string())?;
        let refs: Vec<(String, Vec<usize>, &[f32])> = exported
            .iter()
            .map(|(n, s, d)| (n.clone(), s.clone(), d.as_slice()))
            .collect();
        arch_runtime::train::write_safetensors_atomic(&dir.join("model.safetensors"), &refs, None)
            .map_err(|e| e.to_string())?;
    }
    let svg = loss_svg(&trainer.state.losses, &spec.name);
    let tmp = dir.join(".loss.svg.tmp");
    std::fs::write(&tmp, svg)
        .and_then(|_| std::fs::rename(&tmp, dir.join("loss.svg")))
        .map_err(|e| format!("cannot write {}: {e}", dir.join("loss.svg").display()))?;
    Ok(path)
}

/// The Hugging Face naming checkpoints are exported under: the one the initial weights
/// were read under, else the first that has a tensor for every parameter (never the GGUF
/// naming: a safetensors file in llama.cpp's names is of no use to transformers).
fn hf_naming(spec: &ArchSpec, preferred: Option<&str>) -> Option<arch_runtime::manifest::Naming> {
    use arch_runtime::manifest::Source;
    let namings = crate::train::train_namings(spec);
    if let Some(p) = preferred.filter(|p| *p != "canonical" && *p != "GGUF") {
        if let Some(n) = namings.iter().find(|n| n.label == p) {
            return Some(n.clone());
        }
    }
    let complete = |n: &arch_runtime::manifest::Naming| {
        n.label != "canonical"
            && n.label != "GGUF"
            && n.sources.values().all(|s| *s != Source::Nothing)
    };
    // The Hugging Face class of the model's shape first (a LLaMA-shaped decoder also fits
    // T5's decoder naming, which is not what anyone wants for it).
    let family = match super::quantize::architecture(spec) {
        Ok("llama") => Some("LlamaForCausalLM"),
        Ok("gpt2") => Some("GPT2LMHeadModel"),
        Ok("mamba") => Some("MambaForCausalLM"),
        _ => None,
    };
    if let Some(n) = namings
        .iter()
        .find(|n| Some(n.label.as_str()) == family && complete(n))
    {
        return Some(n.clone());
    }
    namings.into_iter().find(|n| complete(n))
}

/// The loss curve as an SVG line chart: steps on x, loss on y, axes with their ranges.
pub fn loss_svg(losses: &[f64], model: &str) -> String {
    let (w, h, l, r, t, b) = (640.0, 360.0, 70.0, 20.0, 40.0, 50.0);
    let finite: Vec<f64> = losses.iter().copied().filter(|x| x.is_finite()).collect();
    let lo = finite.iter().copied().fold(f64::INFINITY, f64::min);
    let hi = finite.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    let (lo, hi) = if lo.is_finite() && hi > lo {
        (lo, hi)
    } else if lo.is_finite() {
        (lo - 0.5, lo + 0.5)
    } else {
        (0.0, 1.0)
    };
    let n = losses.len().max(2) as f64 - 1.0;
    let x = |i: usize| l + (w - l - r) * i as f64 / n;
    let y = |v: f64| t + (h - t - b) * (hi - v) / (hi - lo);
    let mut points = String::new();
    for (i, &v) in losses.iter().enumerate() {
        if v.is_finite() {
            points.push_str(&format!("{:.1},{:.1} ", x(i), y(v)));
        }
    }
    let mut s = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{w}\" height=\"{h}\" font-family=\"sans-serif\" font-size=\"12\">\n\
         <rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n\
         <text x=\"{}\" y=\"22\" text-anchor=\"middle\" font-size=\"14\">{} — training loss</text>\n",
        w / 2.0,
        escape(model)
    );
    // Axes, ticks and labels.
    s.push_str(&format!(
        "<line x1=\"{l}\" y1=\"{t}\" x2=\"{l}\" y2=\"{}\" stroke=\"black\"/>\n<line x1=\"{l}\" y1=\"{}\" x2=\"{}\" y2=\"{}\" stroke=\"black\"/>\n",
        h - b,
        h - b,
        w - r,
        h - b
    ));
    for k in 0..=4 {
        let v = lo + (hi - lo) * k as f64 / 4.0;
        let yy = y(v);
        s.push_str(&format!(
            "<line x1=\"{}\" y1=\"{yy:.1}\" x2=\"{}\" y2=\"{yy:.1}\" stroke=\"#ddd\"/><text x=\"{}\" y=\"{:.1}\" text-anchor=\"end\">{v:.3}</text>\n",
            l,
            w - r,
            l - 6.0,
            yy + 4.0
        ));
    }
    let last = losses.len();
    for (i, label) in [(0usize, 1usize), (last.saturating_sub(1), last)] {
        s.push_str(&format!(
            "<text x=\"{:.1}\" y=\"{}\" text-anchor=\"middle\">{label}</text>\n",
            x(i),
            h - b + 18.0
        ));
    }
    s.push_str(&format!(
        "<text x=\"{}\" y=\"{}\" text-anchor=\"middle\">step</text>\n<text x=\"16\" y=\"{}\" text-anchor=\"middle\" transform=\"rotate(-90 16 {})\">loss</text>\n",
        (l + w - r) / 2.0,
        h - 8.0,
        (t + h - b) / 2.0,
        (t + h - b) / 2.0
    ));
    s.push_str(&format!(
        "<polyline fill=\"none\" stroke=\"#1f77b4\" stroke-width=\"1.5\" points=\"{}\"/>\n</svg>\n",
        points.trim_end()
    ));
    s
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

//! `archc embed FILE[:MODEL] --weights W --tokenizer T --text S... [--file F] --out O` →
//! sentence embeddings: the texts tokenized with a Hugging Face `tokenizer.json`, run
//! through the model's forward pass on the CPU backend (a cached package), the last hidden
//! state pooled per text (mean over its real tokens, or its first token) and optionally
//! L2-normalized; written as `embeddings` [n, d_model] f32.
//!
//! With mean pooling and `--normalize` this is sentence-transformers' recipe (Transformer →
//! Pooling(mean) → Normalize), so all-MiniLM-L6-v2 gives its embeddings. Texts are cut to
//! `--max-length` tokens: by default the model's context, or less where a
//! `sentence_bert_config.json` beside the tokenizer says so (its `max_seq_length`, as
//! sentence-transformers does).
//!
//! Models: an encoder (BERT and the like) is what embeddings are made with. A decoder-only
//! model is accepted with mean pooling, over its `hidden` output (each position sees only the
//! tokens before it); `cls` pooling is refused there, since a causal model's first token sees
//! nothing else. Encoder-decoder models are refused.

use super::load_model;
use crate::eval::prepare_inputs;
use crate::interp::Value;
use crate::model::{l2_normalize, pool, Pooling};
use crate::tensor::{F32Tensor, Tensor};
use crate::tensor_io::write_f32;
use crate::tokenize::{Batch, Tokenizer};
use arch_dsl::spec::{ArchSpec, Family};
use std::collections::HashMap;
use std::fmt::Write as _;
use std::path::Path;
use std::process::ExitCode;

/// At most this many texts go through the model at once...
const MAX_ROWS: usize = 32;
/// ...and at most about this many token positions (rows × padded length).
const MAX_TOKENS: usize = 8192;

pub struct EmbedArgs<'a> {
    pub target: &'a str,
    pub weights: &'a Path,
    pub tokenizer: &'a Path,
    pub texts: &'a [String],
    pub file: Option<&'a Path>,
    pub pooling: &'a str,
    pub normalize: bool,
    pub out: &'a Path,
    pub similarity: bool,
    pub max_length: Option<usize>,
    pub threads: usize,
}

pub fn run(args: &EmbedArgs) -> ExitCode {
    match embed(args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

fn embed(args: &EmbedArgs) -> Result<(), String> {
    let started = std::time::Instant::now();
    let pooling = match args.pooling {
        "mean" => Pooling::Mean,
        "cls" => Pooling::Cls,
        p => return Err(format!("unknown pooling `{p}`: use mean or cls")),
    };
    let texts = collect_texts(args.texts, args.file)?;
    let tokenizer = Tokenizer::load(args.tokenizer)?;
    let Some(spec) = load_model(args.target) else {
        return Err("the spec has errors".into());
    };
    check_family(&spec, pooling)?;
    let max_len = max_length(&spec, args.tokenizer, args.max_length)?;

    let batch = tokenizer.encode_batch(&texts, true, max_len)?;
    if let Some(&bad) = batch
        .ids
        .iter()
        .find(|&&id| id < 0 || id as u64 >= spec.vocab)
    {
        return Err(format!(
            "the tokenizer {} gives token id {bad}, outside the vocabulary of {} ({} tokens): is it this model's tokenizer?",
            tokenizer.path().display(),
            spec.name,
            spec.vocab
        ));
    }
    let lengths = batch.lengths();
    if let Some(i) = lengths.iter().position(|&n| n == 0) {
        return Err(format!(
            "text {} ({:?}) has no tokens to pool",
            i + 1,
            texts[i]
        ));
    }

    let mut session = open_session(&spec, args.weights, args.threads)?;
    let d = spec.d_model as usize;
    let mut embeddings = vec![0f32; texts.len() * d];
    for rows in chunks(&lengths) {
        let pooled = run_chunk(&mut session, &spec, &batch, &rows, &lengths, pooling)?;
        for (k, &r) in rows.iter().enumerate() {
            let mut v = pooled[k * d..(k + 1) * d].to_vec();
            if args.normalize {
                l2_normalize(&mut v);
            }
            embeddings[r * d..(r + 1) * d].copy_from_slice(&v);
        }
    }

    let out = Tensor {
        shape: vec![texts.len(), d],
        data: embeddings,
    };
    write_f32(args.out, &[("embeddings".to_string(), out.clone())])?;
    if args.similarity {
        print!("{}", similarity_table(&out, &texts));
    }
    let tokens: usize = lengths.iter().sum();
    eprintln!(
        "wrote embeddings [{}, {d}] ({} pooling{}, {tokens} tokens) to {} in {:.2} s",
        texts.len(),
        args.pooling,
        if args.normalize { ", normalized" } else { "" },
        args.out.display(),
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

/// Every `--text`, then every non-blank line of `--file`, in order.
fn collect_texts(texts: &[String], file: Option<&Path>) -> Result<Vec<String>, String> {
    let mut all = texts.to_vec();
    if let Some(f) = file {
        let content = std::fs::read_to_string(f)
            .map_err(|e| format!("cannot read texts from {}: {e}", f.display()))?;
        all.extend(
            content
                .lines()
                .filter(|l| !l.trim().is_empty())
                .map(str::to_string),
        );
    }
    if all.is_empty() {
        return Err(match file {
            Some(f) => format!(
                "no texts to embed: {} has no non-empty line and no --text was given",
                f.display()
            ),
            None => "no texts to embed: give --text TEXT (repeatable) or --file LINES.txt".into(),
        });
    }
    Ok(all)
}

fn check_family(spec: &ArchSpec, pooling: Pooling) -> Result<(), String> {
    match spec.family {
        Family::EncoderOnly => Ok(()),
        Family::EncoderDecoder => Err(format!(
            "`archc embed` needs an encoder-only model (BERT-like); `{}` is an encoder-decoder model",
            spec.name
        )),
        Family::DecoderOnly if pooling == Pooling::Cls => Err(format!(
            "`{}` is a decoder-only model: its first token sees only itself, so `--pooling cls` \
             is meaningless; use `--pooling mean` (or an encoder-only model)",
            spec.name
        )),
        Family::DecoderOnly => Ok(()),
    }
}

/// `--max-length`, else the model's context, lowered to sentence-transformers'
/// `max_seq_length` when a `sentence_bert_config.json` sits beside the tokenizer.
fn max_length(spec: &ArchSpec, tokenizer: &Path, given: Option<usize>) -> Result<usize, String> {
    let context = spec.context as usize;
    if let Some(n) = given {
        if n > context {
            return Err(format!(
                "--max-length {n} is more than the model's context of {context}"
            ));
        }
        return Ok(n);
    }
    let st = tokenizer
        .parent()
        .map(|d| d.join("sentence_bert_config.json"))
        .and_then(|p| std::fs::read_to_string(p).ok())
        .and_then(|s| serde_json::from_str::<serde_json::Value>(&s).ok())
        .and_then(|v| v.get("max_seq_length").and_then(|n| n.as_u64()));
    Ok(match st {
        Some(n) if n > 0 => context.min(n as usize),
        _ => context,
    })
}

/// The package for `hidden` with an attention mask (built or from the cache), its runtime
/// session and the weights.
fn open_session(
    spec: &ArchSpec,
    weights: &Path,
    threads: usize,
) -> Result<arch_runtime::Session, String> {
    use arch_runtime::{Package, Session, Weights};
    let mut opts = crate::package::BuildOptions::host()?;
    opts.attention_mask = true;
    opts.outputs = vec!["hidden".to_string()];
    let built = crate::package::build(spec, &opts, None)?;
    let package = Package::load(&built.dir).map_err(|e| e.to_string())?;
    let w = Weights::open(package.manifest(), weights).map_err(|e| {
        format!(
            "the weights {} do not fit `{}`: {e}",
            weights.display(),
            spec.name
        )
    })?;
    Session::new(package, w, threads).map_err(|e| {
        format!(
            "the weights {} do not fit `{}`: {e}",
            weights.display(),
            spec.name
        )
    })
}

/// Groups of rows to run together: the longest first, so that rows of similar length share
/// a padded length; each group within [`MAX_ROWS`] rows and about [`MAX_TOKENS`] positions.
fn chunks(lengths: &[usize]) -> Vec<Vec<usize>> {
    let mut order: Vec<usize> = (0..lengths.len()).collect();
    order.sort_by_key(|&i| std::cmp::Reverse(lengths[i]));
    let mut out: Vec<Vec<usize>> = Vec::new();
    for i in order {
        match out.last_mut() {
            // The first row of a group is its longest: it sets the padded length.
            Some(g) if g.len() < MAX_ROWS && (g.len() + 1) * lengths[g[0]] <= MAX_TOKENS => {
                g.push(i)
            }
            _ => out.push(vec![i]),
        }
    }
    out
}

/// Runs `rows` of `batch` (trimmed to their longest) and pools each one: [rows, d] values.
fn run_chunk(
    session: &mut arch_runtime::Session,
    spec: &ArchSpec,
    batch: &Batch,
    rows: &[usize],
    lengths: &[usize],
    pooling: Pooling,
) -> Result<Vec<f32>, String> {
    use arch_runtime::{HostData, HostTensor};
    let seq = rows.iter().map(|&r| lengths[r]).max().unwrap_or(1);
    let mut ids = Vec::with_capacity(rows.len() * seq);
    let mut mask = Vec::with_capacity(rows.len() * seq);
    for &r in rows {
        // Right padding: a row's real tokens come first.
        ids.extend_from_slice(&batch.ids[r * batch.seq..r * batch.seq + seq]);
        mask.extend_from_slice(&batch.mask[r * batch.seq..r * batch.seq + seq]);
    }
    let shape = vec![rows.len(), seq];
    let mut inputs: HashMap<String, Value> = HashMap::new();
    inputs.insert(
        "input_ids".into(),
        Value::I(Tensor {
            shape: shape.clone(),
            data: ids,
        }),
    );
    inputs.insert(
        "attention_mask".into(),
        Value::I(Tensor {
            shape,
            data: mask.clone(),
        }),
    );
    prepare_inputs(spec, &mut inputs)?;
    let host: HashMap<String, HostTensor> = inputs
        .into_iter()
        .filter_map(|(n, v)| match v {
            Value::I(t) => Some((n, HostTensor::i64(t.shape, t.data))),
            _ => None,
        })
        .collect();
    let outputs = session.run("forward", &host).map_err(|e| e.to_string())?;
    let hidden = outputs
        .into_iter()
        .find(|(n, _)| n == "hidden")
        .ok_or("the package has no `hidden` output")?
        .1;
    let d = spec.d_model as usize;
    let HostData::F32(h) = hidden.data else {
        return Err("the `hidden` output is not f32".into());
    };
    if hidden.shape != [rows.len(), seq, d] {
        return Err(format!(
            "the `hidden` output has shape {:?}, expected {:?}",
            hidden.shape,
            [rows.len(), seq, d]
        ));
    }
    let hidden = F32Tensor {
        shape: hidden.shape,
        data: h,
    };
    Ok(pool(&hidden, &mask, pooling))
}

/// The cosine similarity of every pair of rows, as a table: a header of column numbers,
/// then one line per text (its number, its similarities, the start of the text).
fn similarity_table(e: &F32Tensor, texts: &[String]) -> String {
    let (n, d) = (e.shape[0], e.shape[1]);
    let rows: Vec<&[f32]> = e.data.chunks_exact(d).collect();
    let norms: Vec<f64> = rows
        .iter()
        .map(|r| r.iter().map(|&x| f64::from(x).powi(2)).sum::<f64>().sqrt())
        .collect();
    let width = n.to_string().len().max(3);
    let mut s = format!("cosine similarity of {n} embeddings:\n");
    let _ = write!(s, "{:>width$}", "");
    for j in 0..n {
        let _ = write!(s, " {:>7}", j);
    }
    s.push('\n');
    for i in 0..n {
        let _ = write!(s, "{i:>width$}");
        for j in 0..n {
            let dot: f64 = rows[i]
                .iter()
                .zip(rows[j])
                .map(|(&a, &b)| f64::from(a) * f64::from(b))
                .sum();
            let denom = norms[i] * norms[j];
            let cos = if denom > 0.0 { dot / denom } else { 0.0 };
            let _ = write!(s, " {cos:>7.3}");
        }
        let _ = writeln!(s, "   {}", snippet(&texts[i], 48));
    }
    s
}

/// The text on one line, cut to `max` characters with an ellipsis.
fn snippet(text: &str, max: usize) -> String {
    let one_line: String = text.split_whitespace().collect::<Vec<_>>().join(" ");
    if one_line.chars().count() <= max {
        one_line
    } else {
        let cut: String = one_line.chars().take(max - 1).collect();
        format!("{cut}…")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunks_group_by_length_within_the_budget() {
        let lengths = vec![3, 500, 7, 500, 20];
        let groups = chunks(&lengths);
        // The longest first; 5 rows × 500 positions fit the budget.
        assert_eq!(groups, vec![vec![1, 3, 4, 2, 0]]);
        let long = vec![4096, 4096, 4096];
        assert_eq!(chunks(&long), vec![vec![0, 1], vec![2]]);
        let many = vec![1; 70];
        assert_eq!(
            chunks(&many).iter().map(Vec::len).collect::<Vec<_>>(),
            vec![32, 32, 6]
        );
    }

    #[test]
    fn mean_pooling_skips_padding_and_cls_takes_the_first() {
        // b = 2, t = 3, d = 2; the second row has one padded position.
        let h = F32Tensor {
            shape: vec![2, 3, 2],
            data: vec![1., 2., 3., 4., 5., 6., 10., 20., 30., 40., 99., 99.],
        };
        let mask = [1, 1, 1, 1, 1, 0];
        assert_eq!(pool(&h, &mask, Pooling::Mean), vec![3., 4., 20., 30.]);
        assert_eq!(pool(&h, &mask, Pooling::Cls), vec![1., 2., 10., 20.]);
        let mut v = vec![3., 4.];
        l2_normalize(&mut v);
        assert_eq!(v, vec![0.6, 0.8]);
    }

    #[test]
    fn table_has_unit_diagonal() {
        let e = F32Tensor {
            shape: vec![2, 2],
            data: vec![1., 0., 3., 4.],
        };
        let t = similarity_table(&e, &["a".into(), "b".into()]);
        let lines: Vec<&str> = t.lines().collect();
        assert_eq!(lines.len(), 4, "{t}");
        let row1: Vec<&str> = lines[3].split_whitespace().collect();
        assert_eq!(row1[..3], ["1", "0.600", "1.000"]);
    }
}

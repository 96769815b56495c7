//! Collators: the pretraining objectives' corruption of token rows, in Rust, seeded
//! ([`Rng`]: the same seed gives the same batches on every machine). Each follows its
//! reference:
//!
//! - [`mlm`] — BERT's masked LM (Devlin et al. 2018; `DataCollatorForLanguageModeling`):
//!   each ordinary token is chosen with probability `rate`; a chosen token becomes the mask
//!   token with probability `mask`, a random token with probability `random`, else stays;
//!   labels hold the chosen tokens' ids and −100 elsewhere. BERT masks each row once
//!   (static: the row's RNG depends on the row only); RoBERTa masks anew every time a row
//!   is seen (dynamic: the RNG depends on the epoch too) — [`row_rng`].
//! - [`nsp_pair`], [`sop_pair`] — BERT's next-sentence pairs (half the time a random second
//!   segment, label 1) and ALBERT's sentence order (half the time swapped, label 1).
//! - [`span_corruption`] — T5 (Raffel et al. 2019, `random_spans_noise_mask`): a noise
//!   fraction `rate` in spans of mean length `mean_span`, alternating with non-noise spans
//!   (non-noise first); each noise span becomes one sentinel in the input, and the target
//!   is each sentinel followed by its span. Sentinels count down from the top of the
//!   vocabulary (`vocab − 1`, `vocab − 2`, …), as T5's `<extra_id_k>`.
//! - [`denoise`] — BART (Lewis et al. 2019, fairseq's `DenoisingDataset`): sentence
//!   permutation (sentences end at a full-stop token), token deletion, token masking, text
//!   infilling (spans of Poisson(λ) length, each replaced by one mask token; a length-0
//!   span inserts one), document rotation. The target is the original row.

use arch_runtime::generate::Rng;

/// Hugging Face's ignored label.
pub const IGNORE: i64 = -100;

/// The RNG of data row `row`: static masking (the same every epoch) when `epoch` is
/// `None`, dynamic masking (new every epoch) otherwise.
pub fn row_rng(seed: u64, row: u64, epoch: Option<u64>) -> Rng {
    let mut s = seed ^ row.wrapping_add(1).wrapping_mul(0x9e37_79b9_7f4a_7c15);
    if let Some(e) = epoch {
        s ^= e.wrapping_add(1).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    }
    Rng::new(s)
}

/// Masked-LM settings.
#[derive(Debug, Clone, PartialEq)]
pub struct Mlm {
    pub rate: f64,
    /// Of the chosen tokens: the share replaced by the mask token ...
    pub mask: f64,
    /// ... and the share replaced by a random token (the rest stay).
    pub random: f64,
    pub mask_id: i64,
    pub vocab: u64,
    /// Tokens never chosen ([CLS], [SEP], padding).
    pub special: Vec<i64>,
}

/// BERT's masking of one row: (input ids, labels).
pub fn mlm(ids: &[i64], cfg: &Mlm, rng: &mut Rng) -> (Vec<i64>, Vec<i64>) {
    let mut input = ids.to_vec();
    let mut labels = vec![IGNORE; ids.len()];
    for (i, &t) in ids.iter().enumerate() {
        if cfg.special.contains(&t) || rng.next_f64() >= cfg.rate {
            continue;
        }
        labels[i] = t;
        let u = rng.next_f64();
        if u < cfg.mask {
            input[i] = cfg.mask_id;
        } else if u < cfg.mask + cfg.random {
            input[i] = rng.below(cfg.vocab) as i64;
        }
    }
    (input, labels)
}

/// BERT's next-sentence pair: `(a, b, label)` with b the true next segment (label 0) or,
/// half the time, `random_b` (label 1).
pub fn nsp_pair<'a>(
    a: &'a [i64],
    next: &'a [i64],
    random_b: &'a [i64],
    rng: &mut Rng,
) -> (&'a [i64], &'a [i64], i64) {
    if rng.next_f64() < 0.5 {
        (a, next, 0)
    } else {
        (a, random_b, 1)
    }
}

/// ALBERT's sentence-order pair: `(first, second, label)`, the two consecutive segments
/// in order (label 0) or, half the time, swapped (label 1).
pub fn sop_pair<'a>(a: &'a [i64], b: &'a [i64], rng: &mut Rng) -> (&'a [i64], &'a [i64], i64) {
    if rng.next_f64() < 0.5 {
        (a, b, 0)
    } else {
        (b, a, 1)
    }
}

/// `n` items cut into `segments` non-empty segments at random: their lengths
/// (T5's `_random_segmentation`).
fn random_segmentation(n: usize, segments: usize, rng: &mut Rng) -> Vec<usize> {
    // Choose segments − 1 of the n − 1 gaps between items as cuts.
    let mut gaps: Vec<bool> = (0..n.saturating_sub(1)).map(|i| i < segments - 1).collect();
    for k in (1..gaps.len()).rev() {
        gaps.swap(k, rng.below(k as u64 + 1) as usize);
    }
    let mut lengths = Vec::with_capacity(segments);
    let mut len = 1;
    for cut in gaps {
        if cut {
            lengths.push(len);
            len = 1;
        } else {
            len += 1;
        }
    }
    lengths.push(len);
    lengths
}

/// T5's noise mask of a row of `length`: `round(length · density)` noise tokens (at least
/// one, at most length − 1) in `round(noise / mean_span)` spans (at least one).
pub fn random_spans_noise_mask(
    length: usize,
    density: f64,
    mean_span: f64,
    rng: &mut Rng,
) -> Vec<bool> {
    if length < 2 {
        return vec![false; length];
    }
    let noise = ((length as f64 * density).round() as usize).clamp(1, length - 1);
    let clean = length - noise;
    let spans = ((noise.min(clean) as f64 / mean_span).round() as usize).max(1);
    let noise_lengths = random_segmentation(noise, spans, rng);
    let clean_lengths = random_segmentation(clean, spans, rng);
    let mut mask = Vec::with_capacity(length);
    for (c, n) in clean_lengths.iter().zip(&noise_lengths) {
        mask.extend(std::iter::repeat_n(false, *c));
        mask.extend(std::iter::repeat_n(true, *n));
    }
    mask
}

/// T5's span corruption of one row: (input, target). Sentinel k is `vocab − 1 − k`.
pub fn span_corruption(
    ids: &[i64],
    density: f64,
    mean_span: f64,
    vocab: u64,
    rng: &mut Rng,
) -> (Vec<i64>, Vec<i64>) {
    let mask = random_spans_noise_mask(ids.len(), density, mean_span, rng);
    let (mut input, mut target) = (Vec::new(), Vec::new());
    let mut k = 0i64;
    for (i, &t) in ids.iter().enumerate() {
        if mask[i] {
            if i == 0 || !mask[i - 1] {
                let sentinel = vocab as i64 - 1 - k;
                k += 1;
                input.push(sentinel);
                target.push(sentinel);
            }
            target.push(t);
        } else {
            input.push(t);
        }
    }
    (input, target)
}

/// BART's noising settings (rates as the spec's `denoise(…)`).
#[derive(Debug, Clone, PartialEq)]
pub struct Denoise {
    pub token_mask: f64,
    pub token_delete: f64,
    pub text_infill: f64,
    pub lambda: f64,
    pub sentence_permute: bool,
    pub document_rotate: bool,
    pub mask_id: i64,
    /// Tokens that end a sentence (for the permutation).
    pub full_stops: Vec<i64>,
}

/// A Poisson(λ) draw (Knuth's product of uniforms; λ is small).
pub fn poisson(lambda: f64, rng: &mut Rng) -> usize {
    let limit = (-lambda).exp();
    let mut k = 0;
    let mut p = rng.next_f64();
    while p > limit && k < 1000 {
        k += 1;
        p *= rng.next_f64();
    }
    k
}

/// BART's noising of one row (the target is the row itself).
pub fn denoise(ids: &[i64], cfg: &Denoise, rng: &mut Rng) -> Vec<i64> {
    let mut x = ids.to_vec();
    if cfg.sentence_permute {
        x = permute_sentences(&x, &cfg.full_stops, rng);
    }
    if cfg.token_delete > 0.0 {
        x.retain(|_| rng.next_f64() >= cfg.token_delete);
    }
    if cfg.token_mask > 0.0 {
        for t in x.iter_mut() {
            if rng.next_f64() < cfg.token_mask {
                *t = cfg.mask_id;
            }
        }
    }
    if cfg.text_infill > 0.0 {
        x = text_infill(&x, cfg.text_infill, cfg.lambda, cfg.mask_id, rng);
    }
    if cfg.document_rotate && x.len() > 1 {
        let k = 1 + rng.below(x.len() as u64 - 1) as usize;
        x.rotate_left(k);
    }
    x
}

/// The sentences of `x` (each ending at a full stop, the last at the end) in a random order.
pub fn permute_sentences(x: &[i64], full_stops: &[i64], rng: &mut Rng) -> Vec<i64> {
    let mut sentences: Vec<&[i64]> = Vec::new();
    let mut start = 0;
    for (i, t) in x.iter().enumerate() {
        if full_stops.contains(t) {
            sentences.push(&x[start..=i]);
            start = i + 1;
        }
    }
    if start < x.len() {
        sentences.push(&x[start..]);
    }
    for k in (1..sentences.len()).rev() {
        sentences.swap(k, rng.below(k as u64 + 1) as usize);
    }
    sentences.concat()
}

/// Text infilling: `ceil(rate · n)` tokens in spans of Poisson(λ) length, each span
/// replaced by one mask token; a span of length 0 inserts a mask token.
pub fn text_infill(x: &[i64], rate: f64, lambda: f64, mask_id: i64, rng: &mut Rng) -> Vec<i64> {
    let n = x.len();
    if n == 0 {
        return Vec::new();
    }
    let target = (rate * n as f64).ceil() as usize;
    let mut lengths = Vec::new();
    let mut total = 0;
    while total < target {
        let l = poisson(lambda, rng);
        lengths.push(l);
        total += l;
    }
    if let Some(last) = lengths.last_mut() {
        *last -= total - target; // the last span is cut to hit the count exactly
    }
    let mut masked = vec![false; n];
    let mut insert = vec![0usize; n + 1];
    for l in lengths {
        let start = rng.below(n as u64) as usize;
        if l == 0 {
            insert[start] += 1;
        } else {
            masked[start..(start + l).min(n)].fill(true);
        }
    }
    let mut out = Vec::with_capacity(n);
    for i in 0..n {
        out.extend(std::iter::repeat_n(mask_id, insert[i]));
        if masked[i] {
            if i == 0 || !masked[i - 1] {
                out.push(mask_id);
            }
        } else {
            out.push(x[i]);
        }
    }
    out.extend(std::iter::repeat_n(mask_id, insert[n]));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(rng: &mut Rng, n: usize) -> Vec<i64> {
        (0..n).map(|_| 10 + rng.below(990) as i64).collect()
    }

    #[test]
    fn mlm_rates_and_the_80_10_10_split() {
        let cfg = Mlm {
            rate: 0.15,
            mask: 0.8,
            random: 0.1,
            mask_id: 4,
            vocab: 1000,
            special: vec![1, 2],
        };
        let (mut chosen, mut masked, mut random, mut kept, mut total) = (0, 0, 0, 0, 0);
        for r in 0..2000u64 {
            let mut rng = row_rng(7, r, None);
            let mut ids = row(&mut rng, 100);
            ids[0] = 1; // [CLS]
            ids[99] = 2; // [SEP]
            let (input, labels) = mlm(&ids, &cfg, &mut rng);
            assert_eq!(labels[0], IGNORE, "special tokens are never chosen");
            assert_eq!(labels[99], IGNORE);
            total += 98;
            for i in 0..100 {
                if labels[i] == IGNORE {
                    assert_eq!(input[i], ids[i], "unchosen tokens stay");
                    continue;
                }
                assert_eq!(labels[i], ids[i], "the label is the original token");
                chosen += 1;
                if input[i] == 4 {
                    masked += 1;
                } else if input[i] == ids[i] {
                    kept += 1;
                } else {
                    random += 1;
                }
            }
        }
        let c = chosen as f64;
        let rate = c / total as f64;
        eprintln!(
            "rate {rate:.4}, mask {:.4}, random {:.4}, kept {:.4}",
            masked as f64 / c,
            random as f64 / c,
            kept as f64 / c
        );
        assert!((rate - 0.15).abs() < 0.003, "mask rate {rate}");
        assert!((masked as f64 / c - 0.8).abs() < 0.01);
        // A random draw equals the original 1 time in 1000: counted as kept.
        assert!((random as f64 / c - 0.1).abs() < 0.01);
        assert!((kept as f64 / c - 0.1).abs() < 0.01);
    }

    #[test]
    fn static_masking_repeats_and_dynamic_masking_changes() {
        let cfg = Mlm {
            rate: 0.15,
            mask: 0.8,
            random: 0.1,
            mask_id: 4,
            vocab: 1000,
            special: vec![],
        };
        let ids: Vec<i64> = (10..138).collect();
        let once = |epoch| mlm(&ids, &cfg, &mut row_rng(3, 5, epoch));
        assert_eq!(
            once(None),
            once(None),
            "static: the same masking every epoch"
        );
        assert_eq!(once(Some(0)), once(Some(0)), "the same seed repeats");
        assert_ne!(
            once(Some(0)),
            once(Some(1)),
            "dynamic: a new masking per epoch"
        );
    }

    #[test]
    fn span_corruption_density_span_length_and_sentinels() {
        let (mut noise, mut spans, mut total) = (0usize, 0usize, 0usize);
        for r in 0..2000u64 {
            let mut rng = row_rng(11, r, None);
            // Ids below the sentinels' range.
            let ids: Vec<i64> = row(&mut rng, 100).iter().map(|t| t % 900).collect();
            let mask = random_spans_noise_mask(100, 0.15, 3.0, &mut row_rng(11, r, None));
            assert_eq!(
                mask.iter().filter(|&&m| m).count(),
                15,
                "round(100 · 0.15) noise tokens"
            );
            assert!(!mask[0], "non-noise spans come first");
            let (input, target) = span_corruption(&ids, 0.15, 3.0, 1000, &mut rng);
            // Sentinels count down from the top of the vocabulary, in order, in both.
            let s_in: Vec<i64> = input.iter().copied().filter(|&t| t >= 990).collect();
            let s_out: Vec<i64> = target.iter().copied().filter(|&t| t >= 990).collect();
            let want: Vec<i64> = (0..s_in.len() as i64).map(|k| 999 - k).collect();
            assert_eq!(s_in, want);
            assert_eq!(s_out, want);
            // Putting the spans back gives the row.
            let mut rebuilt = Vec::new();
            let mut parts = target.split(|&t| t >= 990).skip(1);
            for &t in &input {
                if t >= 990 {
                    rebuilt.extend_from_slice(parts.next().unwrap());
                } else {
                    rebuilt.push(t);
                }
            }
            assert_eq!(rebuilt, ids);
            noise += target.len() - s_out.len();
            spans += s_in.len();
            total += 100;
        }
        let density = noise as f64 / total as f64;
        let mean = noise as f64 / spans as f64;
        eprintln!("density {density:.4}, mean span {mean:.3}");
        assert!((density - 0.15).abs() < 1e-9);
        // 15 noise tokens in round(15 / 3) = 5 spans: mean exactly 3.
        assert!((mean - 3.0).abs() < 1e-9);
        // Longer rows, another mean: spans of mean ≈ 5.
        let (mut n, mut s) = (0, 0);
        for r in 0..500u64 {
            let m = random_spans_noise_mask(512, 0.3, 5.0, &mut row_rng(2, r, None));
            n += m.iter().filter(|&&x| x).count();
            s += (0..512).filter(|&i| m[i] && (i == 0 || !m[i - 1])).count();
        }
        let mean = n as f64 / s as f64;
        assert!((mean - 5.0).abs() < 0.1, "mean span {mean}");
    }

    #[test]
    fn poisson_mean() {
        let mut rng = Rng::new(5);
        let n = 50_000;
        let mean = (0..n).map(|_| poisson(3.0, &mut rng)).sum::<usize>() as f64 / n as f64;
        assert!((mean - 3.0).abs() < 0.05, "Poisson(3) mean {mean}");
    }

    fn bart(
        token_mask: f64,
        token_delete: f64,
        text_infill: f64,
        sentence_permute: bool,
        document_rotate: bool,
    ) -> Denoise {
        Denoise {
            token_mask,
            token_delete,
            text_infill,
            lambda: 3.0,
            sentence_permute,
            document_rotate,
            mask_id: 4,
            full_stops: vec![5],
        }
    }

    #[test]
    fn bart_token_masking_and_deletion_rates() {
        let (mut masked, mut kept, mut total) = (0, 0, 0);
        for r in 0..1000u64 {
            let mut rng = row_rng(1, r, None);
            let ids = row(&mut rng, 100);
            let out = denoise(&ids, &bart(0.3, 0.0, 0.0, false, false), &mut rng);
            assert_eq!(out.len(), 100);
            masked += out.iter().filter(|&&t| t == 4).count();
            let out = denoise(&ids, &bart(0.0, 0.2, 0.0, false, false), &mut rng);
            kept += out.len();
            // Deletion keeps the order of what remains.
            let mut it = ids.iter();
            assert!(out.iter().all(|t| it.any(|x| x == t)));
            total += 100;
        }
        let m = masked as f64 / total as f64;
        let d = 1.0 - kept as f64 / total as f64;
        assert!((m - 0.3).abs() < 0.01, "masking rate {m}");
        assert!((d - 0.2).abs() < 0.01, "deletion rate {d}");
    }

    #[test]
    fn bart_text_infilling_spans() {
        let (mut gone, mut masks, mut total) = (0usize, 0usize, 0usize);
        for r in 0..2000u64 {
            let mut rng = row_rng(9, r, None);
            let ids = row(&mut rng, 200);
            let out = denoise(&ids, &bart(0.0, 0.0, 0.3, false, false), &mut rng);
            let m = out.iter().filter(|&&t| t == 4).count();
            masks += m;
            gone += 200 - (out.len() - m);
            total += 200;
            // What is not a mask is the row in order.
            let mut it = ids.iter();
            assert!(out.iter().filter(|&&t| t != 4).all(|t| it.any(|x| x == t)));
        }
        let rate = gone as f64 / total as f64;
        eprintln!(
            "infilled {rate:.4} of tokens, {:.3} tokens per mask",
            gone as f64 / masks as f64
        );
        // ceil(0.3 · 200) = 60 tokens chosen per row; overlapping spans cover fewer.
        assert!(rate > 0.2 && rate <= 0.3, "infilled share {rate}");
        // Spans of Poisson(3) length, merged where they overlap, zero-length ones inserting.
        let per_mask = gone as f64 / masks as f64;
        assert!(
            per_mask > 2.0 && per_mask < 4.5,
            "tokens per mask {per_mask}"
        );
    }

    #[test]
    fn bart_sentence_permutation_and_rotation() {
        let mut moved = 0;
        for r in 0..200u64 {
            let mut rng = row_rng(4, r, None);
            // Five sentences of four tokens each, every one ending at the full stop 5.
            let ids: Vec<i64> = (0..5)
                .flat_map(|s| [10 + s * 3, 11 + s * 3, 12 + s * 3, 5])
                .collect();
            let out = denoise(&ids, &bart(0.0, 0.0, 0.0, true, false), &mut rng);
            let mut a: Vec<&[i64]> = ids.chunks(4).collect();
            let mut b: Vec<&[i64]> = out.chunks(4).collect();
            if a != b {
                moved += 1;
            }
            a.sort();
            b.sort();
            assert_eq!(a, b, "the same sentences, whole");
            let rot = denoise(&ids, &bart(0.0, 0.0, 0.0, false, true), &mut rng);
            assert_ne!(rot, ids, "rotated by at least one token");
            let k = (0..ids.len())
                .find(|&k| {
                    let mut x = ids.clone();
                    x.rotate_left(k);
                    x == rot
                })
                .expect("a rotation of the row");
            assert!(k > 0);
        }
        assert!(moved > 190, "the order changes (5! orders): {moved} of 200");
    }

    #[test]
    fn nsp_and_sop_labels_are_balanced() {
        let (a, b, c) = ([1i64, 2], [3i64, 4], [5i64, 6]);
        let mut rng = Rng::new(8);
        let (mut nsp, mut sop) = (0, 0);
        for _ in 0..10_000 {
            let (x, y, l) = nsp_pair(&a, &b, &c, &mut rng);
            assert_eq!(x, a);
            assert_eq!(y, if l == 0 { &b[..] } else { &c[..] });
            nsp += l;
            let (x, y, l) = sop_pair(&a, &b, &mut rng);
            assert_eq!(
                (x, y),
                if l == 0 {
                    (&a[..], &b[..])
                } else {
                    (&b[..], &a[..])
                }
            );
            sop += l;
        }
        for n in [nsp, sop] {
            assert!((n as f64 / 10_000.0 - 0.5).abs() < 0.02);
        }
    }
}

//! The CPU backend against Hugging Face `transformers`: each tiny fixture model under
//! `tests/fixtures/hf/` is compiled to a package, run by the runtime on its checkpoint and
//! inputs, and must match the recorded outputs to max|out − ref| / max|ref| ≤ 1e-4.

mod common;

use archc::eval::Backend;

fn check(name: &str, compare: &[(&str, &str)]) {
    common::check_hf(name, compare, Backend::Cpu);
}

#[test]
fn gpt2() {
    check("gpt2", &[("hidden", "hidden"), ("logits", "logits")]);
}

#[test]
fn openai_gpt() {
    check("openai_gpt", &[("hidden", "hidden"), ("logits", "logits")]);
}

#[test]
fn llama() {
    check("llama", &[("hidden", "hidden"), ("logits", "logits")]);
}

#[test]
fn bert_pretraining() {
    check(
        "bert",
        &[
            ("hidden", "hidden"),
            ("logits", "logits"),
            ("classifier_logits", "seq_relationship_logits"),
        ],
    );
}

#[test]
fn bert_model() {
    check("bert_model", &[("hidden", "hidden")]);
}

#[test]
fn roberta() {
    check("roberta", &[("hidden", "hidden"), ("logits", "logits")]);
}

#[test]
fn albert() {
    check("albert", &[("hidden", "hidden"), ("logits", "logits")]);
}

#[test]
fn electra() {
    check("electra", &[("hidden", "hidden"), ("logits", "logits")]);
}

#[test]
fn t5() {
    check(
        "t5",
        &[
            ("encoder_hidden", "encoder_hidden"),
            ("hidden", "hidden"),
            ("logits", "logits"),
        ],
    );
}

#[test]
fn bart() {
    check(
        "bart",
        &[
            ("encoder_hidden", "encoder_hidden"),
            ("hidden", "hidden"),
            ("logits", "logits"),
        ],
    );
}

#[test]
fn mamba() {
    check("mamba", &[("hidden", "hidden"), ("logits", "logits")]);
}

#[test]
fn rwkv() {
    check("rwkv", &[("hidden", "hidden"), ("logits", "logits")]);
}

//! Both backends against Hugging Face `transformers`: each tiny fixture model under
//! `tests/fixtures/hf/` (made by `tools/make_fixtures.py`) is expanded from its
//! `model.arch`, loaded from its checkpoint and run on its inputs by the reference
//! evaluator (`interp`), by generated code (`cpu`: a package run by the runtime) and by the
//! cuda package's thread programs (`cuda_sim`: the runtime's device session on its host
//! simulator); each must match the recorded outputs to max|out − ref| / max|ref| ≤ 1e-4.

mod common;

use archc::eval::Backend;

/// One module per fixture with an `interp` and a `cpu` test comparing (ours, theirs).
macro_rules! fixture {
    ($name:ident, $dir:literal, [$(($ours:literal, $theirs:literal)),+ $(,)?]) => {
        mod $name {
            use super::*;
            const COMPARE: &[(&str, &str)] = &[$(($ours, $theirs)),+];

            #[test]
            fn interp() {
                common::check_hf($dir, COMPARE, Backend::Interp);
            }

            #[test]
            fn cpu() {
                common::check_hf($dir, COMPARE, Backend::Cpu);
            }

            /// The cuda package (PTX's thread programs, compiled for the host) run by the
            /// runtime's device session on the host simulator.
            #[test]
            fn cuda_sim() {
                common::check_hf($dir, COMPARE, Backend::CudaSim);
            }
        }
    };
}

fixture!(gpt2, "gpt2", [("hidden", "hidden"), ("logits", "logits")]);
fixture!(
    openai_gpt,
    "openai_gpt",
    [("hidden", "hidden"), ("logits", "logits")]
);
fixture!(llama, "llama", [("hidden", "hidden"), ("logits", "logits")]);
fixture!(
    llama3_rope,
    "llama3_rope",
    [("hidden", "hidden"), ("logits", "logits")]
);
fixture!(
    bert_pretraining,
    "bert",
    [
        ("hidden", "hidden"),
        ("logits", "logits"),
        ("classifier_logits", "seq_relationship_logits"),
    ]
);
fixture!(bert_model, "bert_model", [("hidden", "hidden")]);
fixture!(
    roberta,
    "roberta",
    [("hidden", "hidden"), ("logits", "logits")]
);
fixture!(
    albert,
    "albert",
    [("hidden", "hidden"), ("logits", "logits")]
);
fixture!(
    electra,
    "electra",
    [("hidden", "hidden"), ("logits", "logits")]
);
fixture!(
    t5,
    "t5",
    [
        ("encoder_hidden", "encoder_hidden"),
        ("hidden", "hidden"),
        ("logits", "logits"),
    ]
);
fixture!(
    bart,
    "bart",
    [
        ("encoder_hidden", "encoder_hidden"),
        ("hidden", "hidden"),
        ("logits", "logits"),
    ]
);
fixture!(mamba, "mamba", [("hidden", "hidden"), ("logits", "logits")]);
fixture!(rwkv, "rwkv", [("hidden", "hidden"), ("logits", "logits")]);

//! The distilled-set evaluation protocol of IMS3 (REFERENCE section 5, `protocol.rs`): train an
//! evaluation network (from `ims3-nets`) on the distilled images with the reference
//! augmentations and CutMix, test on real images, report final / best / validation-selected
//! top-1 over seeds (`eval.json`, `eval.md`).

pub mod protocol;

pub use protocol::{EvalConfig, EvalError, EvalNet, EvalReport, ImageSet, NetKind, SeedResult, accuracy, epochs_for_ipc, mean_std, train_and_eval};

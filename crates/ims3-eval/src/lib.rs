//! The distilled-set evaluation protocols of IMS3 (REFERENCE section 5): train an evaluation
//! network (from `ims3-nets`) on the distilled images, test on real images, report final /
//! best / validation-selected top-1 over seeds (`eval.json`, `eval.md`).
//!
//! - `config.rs`: every choice of a protocol as one value ([`EvalConfig`]); the reference's
//!   hard-label protocol ([`EvalConfig::reference`]) and the RDED-style soft-label protocol
//!   ([`EvalConfig::soft`]) are named constructors;
//! - `data.rs`: labelled image sets read from class folders;
//! - `net.rs`: the evaluation networks and their seeded initialisation;
//! - `train.rs`: one seed's training and testing (augmentations, CutMix, hard or soft labels);
//! - `report.rs`: the report over seeds;
//! - `ranking.rs`: DD-Ranking's scores of a distilled set against random real images and the
//!   full training set (IOR, HLR, LRS).

pub mod config;
pub mod data;
pub mod net;
pub mod ranking;
pub mod report;
pub mod stats;
pub mod train;

pub use config::{EvalConfig, Labels, TestAt, LrSchedule, NetKind, Optimizer, SoftLabels, epochs_for, epochs_for_ipc, reference_milestones, soft_batch_size};
pub use data::ImageSet;
pub use net::EvalNet;
pub use report::{EvalReport, mean_std};
pub use stats::PairedDifference;
pub use train::{EvalSets, SeedResult, Teacher, accuracy, train_and_eval};

use ims3_nets::NetError;

/// Why an evaluation could not run.
#[derive(Debug, thiserror::Error)]
pub enum EvalError {
    #[error(transparent)]
    Image(#[from] ims3_images::ImageError),
    #[error("{}: {}", root.display(), class_problems(missing, empty))]
    Classes { root: std::path::PathBuf, missing: Vec<String>, empty: Vec<String> },
    #[error("{}: class folders not in the test set's classes: {}", root.display(), extra.join(", "))]
    ExtraClasses { root: std::path::PathBuf, extra: Vec<String> },
    #[error("{}: cannot list folder", root.display())]
    ReadDir { root: std::path::PathBuf, source: std::io::Error },
    #[error("the training set is empty")]
    EmptyTrainingSet,
    #[error("training classes {train:?} differ from test classes {test:?}")]
    ClassMismatch { train: Vec<String>, test: Vec<String> },
    #[error(transparent)]
    Net(#[from] NetError),
    #[error("unknown network '{0}': expected resnet_ap10, resnet18 or convnet1..6")]
    UnknownNet(String),
    #[error("the soft-label teacher")]
    Teacher(#[from] ims3_nets::LoadError),
    #[error("the teacher has {outputs} outputs; class row {class} does not exist")]
    TeacherClass { class: usize, outputs: usize },
    #[error("the soft-label protocol needs its teacher (Teacher::load of the config's SoftLabels)")]
    NoTeacher,
}

fn class_problems(missing: &[String], empty: &[String]) -> String {
    let mut why = Vec::new();
    if !missing.is_empty() {
        why.push(format!("no folder for classes {}", missing.join(", ")));
    }
    if !empty.is_empty() {
        why.push(format!("no images for classes {}", empty.join(", ")));
    }
    why.join("; ")
}


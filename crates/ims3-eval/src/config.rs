//! Every choice of an evaluation protocol, as one value.
//!
//! The reference's hard-label protocol (IDC via Minimax, with IMS3's changes; REFERENCE
//! section 5), [`EvalConfig::reference`]:
//!
//! ```text
//! SGD(lr 0.1, momentum 0.9, dampening 0, wd 5e-4), batch 64
//! MultiStepLR: lr x 0.2 at epochs 2 * E // 3 and 5 * E // 6 (integers, as the reference)
//! E by IPC: 1 -> 3000, <= 10 -> 2000, <= 50 -> 1500, <= 200 -> 1000
//! train: Resize -> CenterCrop -> RandomResizedCrop(0.5..1) -> flip -> RandAugment(1, 6)
//!        -> ToTensor -> IDC ColorJitter(0.4, 0.4, 0.4) -> Lighting(0.1) -> Normalize
//! every batch: CutMix(Beta(1, 1)), loss = ratio CE(y) + (1 - ratio) CE(y[perm])
//! test: Resize(224) -> CenterCrop(224), every E/100 epochs and after the last
//! ```
//!
//! The soft-label protocol of RDED (`validation/main.py`, `argument.py` of LINs-lab/RDED),
//! [`EvalConfig::soft`]: the same networks trained on the distilled images with labels from a
//! frozen teacher on the same augmented view:
//!
//! ```text
//! AdamW(lr 0.001, betas 0.9/0.999, eps 1e-8, wd 0.01 on weights of 2+ dimensions only)
//! lr x 0.5 (1 + cos(pi e / E / 2)) per epoch (RDED's half cosine), E = 300
//! batch 10 / 50 / 100 for IPC 1 / <= 10 / more (x2 for 100+ classes, at most IPC x classes)
//! train: RandomResizedCrop(0.5..1) -> flip -> Normalize; CutMix(Beta(1, 1)) on every batch
//! loss: KL(softmax(teacher / T) || softmax(student / T)), batchmean, T = 20
//! test: Resize(256) -> CenterCrop(224)
//! ```
//!
//! Reported per seed: the final-epoch top-1 (the honest number), the best top-1 over the test
//! evaluations (what the papers report: selected on the test split), and, when a validation set
//! held out from the real training data is given, the test top-1 at the epoch best on validation.

use std::path::PathBuf;

use ims3_augment::{AugmentConfig, TestTransform};
use ims3_nets::Norm;
use serde::{Deserialize, Serialize};

use crate::EvalError;

/// Epochs of the reference for a given images-per-class (IDC `argument.py`, `ipc_epoch`):
/// 1 -> 3000, <= 10 -> 2000, <= 50 -> 1500, <= 200 -> 1000, <= 500 -> 500, more -> 300.
pub fn epochs_for_ipc(ipc: usize) -> usize {
    match ipc {
        0..=1 => 3000,
        2..=10 => 2000,
        11..=50 => 1500,
        51..=200 => 1000,
        201..=500 => 500,
        _ => 300,
    }
}

/// The reference's epochs for `ipc` images of each of `classes` classes: [`epochs_for_ipc`],
/// and for exactly 100 classes (ImageNet-100) two thirds of it rounded down to hundreds.
pub fn epochs_for(ipc: usize, classes: usize) -> usize {
    let e = epochs_for_ipc(ipc);
    if classes == 100 {
        let e = 2 * e / 3;
        e - e % 100
    } else {
        e
    }
}

/// Which network to train; written and read as its [`NetKind::id`] (`resnet_ap10`, ...).
#[derive(Clone, Debug, PartialEq)]
pub enum NetKind {
    ResnetAp10,
    Resnet18,
    ConvNet { depth: usize },
}

impl std::str::FromStr for NetKind {
    type Err = EvalError;
    /// `resnet_ap10`, `resnet18` or `convnetN` (N = 1..6); case, `-` and `_` are ignored.
    fn from_str(s: &str) -> Result<Self, EvalError> {
        let unknown = || EvalError::UnknownNet(s.to_string());
        match s.to_ascii_lowercase().replace(['-', '_'], "").as_str() {
            "resnetap10" => Ok(NetKind::ResnetAp10),
            "resnet18" => Ok(NetKind::Resnet18),
            d => {
                let depth: usize = d.strip_prefix("convnet").ok_or_else(unknown)?.parse().map_err(|_| unknown())?;
                if (1..=6).contains(&depth) { Ok(NetKind::ConvNet { depth }) } else { Err(unknown()) }
            }
        }
    }
}

impl Serialize for NetKind {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.id())
    }
}

impl<'de> Deserialize<'de> for NetKind {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d)?.parse().map_err(serde::de::Error::custom)
    }
}

impl NetKind {
    /// The name [`FromStr`](std::str::FromStr) reads back (`resnet_ap10`, `resnet18`, `convnet3`).
    pub fn id(&self) -> String {
        match self {
            NetKind::ResnetAp10 => "resnet_ap10".into(),
            NetKind::Resnet18 => "resnet18".into(),
            NetKind::ConvNet { depth } => format!("convnet{depth}"),
        }
    }
}

impl std::fmt::Display for NetKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            NetKind::ResnetAp10 => write!(f, "ResNet-AP-10"),
            NetKind::Resnet18 => write!(f, "ResNet-18"),
            NetKind::ConvNet { depth } => write!(f, "ConvNet-{depth}"),
        }
    }
}

/// Every choice of the protocol; [`EvalConfig::reference`] gives the reference's.
#[derive(Clone, Debug, PartialEq)]
pub struct EvalConfig {
    pub net: NetKind,
    pub norm: Norm,
    pub size: usize,
    /// 3, or 1 for grey datasets (channel 0 of the transform is kept).
    pub channels: usize,
    pub epochs: usize,
    pub batch_size: usize,
    pub lr: f64,
    pub optimizer: Optimizer,
    pub schedule: LrSchedule,
    /// What the student learns from.
    pub labels: Labels,
    /// CutMix Beta parameter; `None` switches CutMix off.
    pub cutmix_beta: Option<f64>,
    pub augment: AugmentConfig,
    /// Per-channel normalisation after the transform (ImageNet's for RGB).
    pub mean: Vec<f32>,
    pub std: Vec<f32>,
    /// Test every this many epochs (reference: epochs / 100).
    pub eval_every: usize,
    pub threads: usize,
    /// Width of the ConvNet (IDC: 128).
    pub convnet_width: usize,
    /// The geometric part of the test transform.
    pub test_transform: TestTransform,
    /// When the real test split is read.
    pub test_at: TestAt,
}

/// When an evaluation reads the real test split.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum TestAt {
    /// At every evaluation (every `eval_every` epochs and after the last): the reference's
    /// protocol, whose reported number is the best of them, selected on the test split.
    #[default]
    Every,
    /// After the last epoch only; the evaluations before it read the validation split alone,
    /// so nothing is chosen by looking at the test split.
    Final,
}

ims3_util::choice!(TestAt, "test-at", { TestAt::Every => "every", TestAt::Final => "final" });

/// The optimiser of the student.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Optimizer {
    /// SGD with momentum (no dampening, no Nesterov) and coupled weight decay on every
    /// parameter (PyTorch's `SGD`).
    Sgd { momentum: f64, weight_decay: f64 },
    /// PyTorch's `AdamW` (betas 0.9 / 0.999, eps 1e-8) with decoupled weight decay on the
    /// weights of two or more dimensions only (RDED's parameter groups).
    AdamW { weight_decay: f64 },
}

/// How the learning rate moves over the epochs.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LrSchedule {
    /// `MultiStepLR`: times `gamma` at each milestone epoch.
    MultiStep { milestones: Vec<usize>, gamma: f64 },
    /// RDED's `LambdaLR`: `0.5 (1 + cos(pi e / E / 2))` at epoch e, down to half the lr.
    HalfCosine,
}

/// What the student learns from.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Labels {
    /// The distilled image's class (with CutMix's area-weighted partner class).
    Hard,
    /// A frozen teacher's tempered distribution on the same augmented, mixed batch.
    Soft(SoftLabels),
}

/// The teacher of the soft-label protocol.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SoftLabels {
    /// torchvision `resnet18` weights (`IMAGENET1K_V1`: `resnet18-f37072fd.pth`).
    pub teacher: PathBuf,
    /// Rows of the teacher's classifier kept, in class order: the classes' ImageNet-1K
    /// indices (the teacher restricted to the dataset's classes).
    pub classes: Vec<usize>,
    /// Softmax temperature (RDED with CutMix: 20).
    pub temperature: f64,
}

/// RDED's student batch size: 10 / 50 / 100 for IPC 1 / <= 10 / more, doubled for 100 or more
/// classes, and at most the number of distilled images.
pub fn soft_batch_size(ipc: usize, classes: usize) -> usize {
    let base = match ipc {
        0..=1 => 10,
        2..=10 => 50,
        _ => 100,
    };
    let b = if classes >= 100 { 2 * base } else { base };
    b.min(ipc * classes).max(1)
}

/// The reference's MultiStepLR milestones: `[2 * E // 3, 5 * E // 6]` in integers
/// (E = 3000 -> 2000, 2500).
pub fn reference_milestones(epochs: usize) -> Vec<usize> {
    vec![2 * epochs / 3, 5 * epochs / 6]
}

impl EvalConfig {
    /// The reference protocol for `net` at `size` px and `ipc` images per class.
    pub fn reference(net: NetKind, size: usize, ipc: usize) -> Self {
        let epochs = epochs_for_ipc(ipc);
        let mut augment = AugmentConfig::reference(size);
        augment.normalize = false;
        Self {
            net,
            norm: Norm::Instance,
            size,
            channels: 3,
            epochs,
            batch_size: 64,
            lr: 0.1,
            optimizer: Optimizer::Sgd { momentum: 0.9, weight_decay: 5e-4 },
            schedule: LrSchedule::MultiStep { milestones: reference_milestones(epochs), gamma: 0.2 },
            labels: Labels::Hard,
            cutmix_beta: Some(1.0),
            augment,
            mean: ims3_images::IMAGENET_MEAN.to_vec(),
            std: ims3_images::IMAGENET_STD.to_vec(),
            eval_every: (epochs / 100).max(1),
            threads: std::thread::available_parallelism().map_or(1, |n| n.get()),
            convnet_width: 128,
            test_transform: TestTransform::ResizeCenterCrop,
            test_at: TestAt::Every,
        }
    }

    /// The same protocol for `epochs` epochs: the milestones and the test cadence follow
    /// (`eval_every = epochs / 100`, at least 1).
    pub fn with_epochs(mut self, epochs: usize) -> Self {
        self.epochs = epochs;
        if let LrSchedule::MultiStep { milestones, .. } = &mut self.schedule {
            *milestones = reference_milestones(epochs);
        }
        self.eval_every = (epochs / 100).max(1);
        self
    }

    /// RDED's soft-label protocol (see the module docs) for `net` at `size` px, `ipc` images
    /// per class of `classes` classes, labels from `soft`'s teacher. Students use batch norm,
    /// as RDED's and DD-Ranking's torchvision networks do.
    pub fn soft(net: NetKind, size: usize, ipc: usize, classes: usize, soft: SoftLabels) -> Self {
        let mut cfg = Self::reference(net, size, ipc);
        cfg.norm = Norm::Batch;
        cfg.epochs = 300;
        cfg.eval_every = 3;
        cfg.batch_size = soft_batch_size(ipc, classes);
        cfg.lr = 1e-3;
        cfg.optimizer = Optimizer::AdamW { weight_decay: 0.01 };
        cfg.schedule = LrSchedule::HalfCosine;
        cfg.labels = Labels::Soft(soft);
        cfg.augment.rand_augment = None;
        cfg.augment.color_jitter = None;
        cfg.augment.lighting = 0.0;
        cfg.test_transform = TestTransform::Resize8of7CenterCrop;
        cfg
    }

    /// The protocol on small grey images (Fashion-MNIST): one channel normalised with the
    /// real training set's `mean` and `std`; RandomResizedCrop (scale 0.5-1) and flip, but
    /// none of the colour augmentations (RandAugment, ColorJitter, Lighting); CutMix kept;
    /// test images used as they are (no resize and crop).
    pub fn grey(net: NetKind, size: usize, ipc: usize, mean: f32, std: f32) -> Self {
        let mut cfg = Self::reference(net, size, ipc);
        cfg.channels = 1;
        cfg.mean = vec![mean];
        cfg.std = vec![std];
        cfg.augment.rand_augment = None;
        cfg.augment.color_jitter = None;
        cfg.augment.lighting = 0.0;
        cfg.test_transform = TestTransform::AsIs;
        cfg
    }

    /// Every setting that defines the protocol, as recorded in `eval.json` (the network is the
    /// report's `net`, the epochs its `epochs`).
    pub fn settings_json(&self) -> serde_json::Value {
        serde_json::json!({
            "size": self.size, "channels": self.channels, "batch_size": self.batch_size, "lr": self.lr,
            "optimizer": self.optimizer, "schedule": self.schedule, "labels": self.labels,
            "cutmix_beta": self.cutmix_beta, "eval_every": self.eval_every,
            "norm": self.norm, "augment": format!("{:?}", self.augment),
            "convnet_width": self.convnet_width, "test_transform": self.test_transform, "mean": self.mean, "std": self.std,
            "test_at": self.test_at,
        })
    }

    /// The learning rate during `epoch` (0-based).
    pub fn lr_at(&self, epoch: usize) -> f64 {
        match &self.schedule {
            LrSchedule::MultiStep { milestones, gamma } => self.lr * gamma.powi(milestones.iter().filter(|&&m| epoch >= m).count() as i32),
            LrSchedule::HalfCosine => self.lr * 0.5 * (1.0 + (std::f64::consts::PI * epoch as f64 / self.epochs as f64 / 2.0).cos()),
        }
    }
}


//! The distilled-set training protocol (REFERENCE section 5): train an evaluation network on the
//! distilled images with the reference augmentations and CutMix, test on real images.
//!
//! ```text
//! SGD(lr 0.1, momentum 0.9, dampening 0, wd 5e-4), batch 64
//! MultiStepLR: lr x 0.2 at epochs 2 * E // 3 and 5 * E // 6 (integers, as the reference)
//! E by IPC: 1 -> 3000, <= 10 -> 2000, <= 50 -> 1500, <= 200 -> 1000
//! every batch: CutMix(Beta(1, 1)), loss = ratio CE(y) + (1 - ratio) CE(y[perm])
//! test every E/100 epochs and after the last
//! ```
//!
//! Reported per seed: the final-epoch top-1 (the honest number), the best top-1 over the test
//! evaluations (what the reference reports: selected on the test split), and, when a validation
//! set held out from the real training data is given, the test top-1 at the epoch that is best
//! on validation.

use burn::module::Module;
use burn::optim::{GradientsParams, SgdConfig, decay::WeightDecayConfig, momentum::MomentumConfig};
use burn::prelude::*;
use ims3_augment::{AugmentConfig, CutMix, TestTransform, to_tensor, train_transform};
use ims3_images::pil::Rgb8;
use rand::SeedableRng;
use rand::seq::SliceRandom;
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use ims3_nets::{ConvNet, ConvNetConfig, NetError, Norm, ResNet, ResNetAP, ResNetAPConfig, ResNetConfig};

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

/// Epochs of the reference for a given images-per-class.
pub fn epochs_for_ipc(ipc: usize) -> usize {
    match ipc {
        0..=1 => 3000,
        2..=10 => 2000,
        11..=50 => 1500,
        _ => 1000,
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
    pub momentum: f64,
    pub weight_decay: f64,
    /// Epochs at which the lr is multiplied by `gamma` ([`reference_milestones`]).
    pub milestones: Vec<usize>,
    pub gamma: f64,
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
            momentum: 0.9,
            weight_decay: 5e-4,
            milestones: reference_milestones(epochs),
            gamma: 0.2,
            cutmix_beta: Some(1.0),
            augment,
            mean: ims3_images::IMAGENET_MEAN.to_vec(),
            std: ims3_images::IMAGENET_STD.to_vec(),
            eval_every: (epochs / 100).max(1),
            threads: std::thread::available_parallelism().map_or(1, |n| n.get()),
            convnet_width: 128,
            test_transform: TestTransform::ResizeCenterCrop,
        }
    }

    /// The same protocol for `epochs` epochs: the milestones and the test cadence follow
    /// (`eval_every = epochs / 100`, at least 1).
    pub fn with_epochs(mut self, epochs: usize) -> Self {
        self.epochs = epochs;
        self.milestones = reference_milestones(epochs);
        self.eval_every = (epochs / 100).max(1);
        self
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

    /// The learning rate during `epoch` (MultiStepLR).
    pub fn lr_at(&self, epoch: usize) -> f64 {
        let passed = self.milestones.iter().filter(|&&m| epoch >= m).count();
        self.lr * self.gamma.powi(passed as i32)
    }
}

/// Images with labels `0..classes` (spec order).
#[derive(Clone, Debug, Default)]
pub struct ImageSet {
    pub images: Vec<Rgb8>,
    pub labels: Vec<usize>,
    pub classes: Vec<String>,
}

impl ImageSet {
    /// Reads `<root>/<class>/*` for each class name in order; a missing or empty class folder
    /// is an error naming it.
    pub fn read(root: &std::path::Path, classes: &[String]) -> Result<Self, EvalError> {
        let mut set = ImageSet { classes: classes.to_vec(), ..Default::default() };
        let mut missing = Vec::new();
        let mut empty = Vec::new();
        for (k, c) in classes.iter().enumerate() {
            let dir = root.join(c);
            if !dir.is_dir() {
                missing.push(c.clone());
                continue;
            }
            let files = ims3_images::list_images(&dir)?;
            if files.is_empty() {
                empty.push(c.clone());
            }
            for f in files {
                set.images.push(ims3_images::pil::read_rgb8(&f)?);
                set.labels.push(k);
            }
        }
        if !missing.is_empty() || !empty.is_empty() {
            return Err(EvalError::Classes { root: root.to_path_buf(), missing, empty });
        }
        let extra: Vec<String> = std::fs::read_dir(root)
            .map_err(|source| EvalError::ReadDir { root: root.to_path_buf(), source })?
            .flatten()
            .filter(|e| e.path().is_dir())
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| !classes.contains(n))
            .collect();
        if !extra.is_empty() {
            return Err(EvalError::ExtraClasses { root: root.to_path_buf(), extra });
        }
        Ok(set)
    }

    pub fn len(&self) -> usize {
        self.labels.len()
    }

    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }
}

/// One of the evaluation networks.
#[derive(Module, Debug)]
pub enum EvalNet {
    ResNetAP(ResNetAP),
    ResNet(ResNet),
    ConvNet(ConvNet),
}

impl EvalNet {
    pub fn new(cfg: &EvalConfig, classes: usize, device: &Device) -> Result<Self, NetError> {
        Ok(match cfg.net {
            NetKind::ResnetAp10 => EvalNet::ResNetAP(ResNetAPConfig { norm: cfg.norm, channels: cfg.channels, ..ResNetAPConfig::ap10(classes, cfg.size) }.init(device)?),
            NetKind::Resnet18 => EvalNet::ResNet(ResNetConfig { norm: cfg.norm, channels: cfg.channels, ..ResNetConfig::idc(18, classes, cfg.size) }.init(device)?),
            NetKind::ConvNet { depth } => EvalNet::ConvNet(ConvNetConfig { norm: cfg.norm, width: cfg.convnet_width, ..ConvNetConfig::new(classes, depth, cfg.channels, cfg.size) }.init(device)?),
        })
    }

    pub fn forward(&self, x: Tensor<4>) -> Tensor<2> {
        match self {
            EvalNet::ResNetAP(n) => n.forward(x),
            EvalNet::ResNet(n) => n.forward(x),
            EvalNet::ConvNet(n) => n.forward(x),
        }
    }
}

/// Redraws every weight from `ChaCha8(seed)` with the reference's initialisation, so a seed
/// gives the same network whatever else draws from the backend's global generator:
/// ResNet convolutions `N(0, sqrt(2 / (k k C_out)))`; ConvNet convolutions, Linear weights and
/// all biases PyTorch's default `U(-1/sqrt(fan_in), 1/sqrt(fan_in))`; norm parameters as built
/// (ones and zeros).
fn reinit_seeded(net: EvalNet, kind: &NetKind, seed: u64) -> EvalNet {
    use burn::module::{ModuleMapper, Param};
    use rand::Rng;
    use rand_distr::{Distribution, Normal};
    struct Reinit {
        rng: ChaCha8Rng,
        resnet: bool,
        /// (name, burn container type) of every module entered.
        path: Vec<(String, String)>,
        fan_in: std::collections::HashMap<String, usize>,
    }
    impl ModuleMapper for Reinit {
        fn enter_module(&mut self, name: &str, container_type: &str) {
            self.path.push((name.to_string(), container_type.to_string()));
        }
        fn exit_module(&mut self, _: &str, _: &str) {
            self.path.pop();
        }
        fn map_float<const D: usize>(&mut self, param: Param<Tensor<D>>) -> Param<Tensor<D>> {
            let names: Vec<&str> = self.path.iter().map(|(n, _)| n.as_str()).collect();
            let owner = names[..names.len().saturating_sub(1)].join(".");
            let leaf = names.last().map(|s| s.to_string()).unwrap_or_default();
            // The parameter's own entry carries the type of the module that holds it.
            if self.path.last().is_some_and(|(_, ty)| ims3_nets::is_norm_container(ty)) {
                return param; // GroupNorm / BatchNorm: ones and zeros
            }
            let dims = param.shape().dims::<D>().to_vec();
            let n: usize = dims.iter().product();
            let values: Vec<f32> = match (D, leaf.as_str()) {
                (4, _) => {
                    let (cout, cin, kh, kw) = (dims[0], dims[1], dims[2], dims[3]);
                    self.fan_in.insert(owner.clone(), cin * kh * kw);
                    if self.resnet {
                        let normal = Normal::new(0.0f32, (2.0 / (kh * kw * cout) as f32).sqrt()).expect("std > 0");
                        (0..n).map(|_| normal.sample(&mut self.rng)).collect()
                    } else {
                        let b = 1.0 / ((cin * kh * kw) as f32).sqrt();
                        (0..n).map(|_| self.rng.random_range(-b..b)).collect()
                    }
                }
                (2, _) => {
                    // burn's Linear weight is [in, out].
                    self.fan_in.insert(owner.clone(), dims[0]);
                    let b = 1.0 / (dims[0] as f32).sqrt();
                    (0..n).map(|_| self.rng.random_range(-b..b)).collect()
                }
                (1, "bias") => {
                    let fan_in = self.fan_in.get(&owner).copied().unwrap_or(n);
                    let b = 1.0 / (fan_in as f32).sqrt();
                    (0..n).map(|_| self.rng.random_range(-b..b)).collect()
                }
                _ => return param,
            };
            let (id, t, mapper) = param.consume();
            let grad = t.is_require_grad();
            let v: Tensor<D> = Tensor::<1>::from_floats(values.as_slice(), &t.device()).reshape(param_shape::<D>(&dims));
            Param::from_mapped_value(id, if grad { v.require_grad() } else { v }, mapper)
        }
    }
    fn param_shape<const D: usize>(dims: &[usize]) -> [usize; D] {
        let mut a = [0usize; D];
        a.copy_from_slice(dims);
        a
    }
    let resnet = !matches!(kind, NetKind::ConvNet { .. });
    net.map(&mut Reinit { rng: ChaCha8Rng::seed_from_u64(seed ^ 0x1417), resnet, path: vec![], fan_in: Default::default() })
}

/// Test images cropped once (the test transform's geometry): every evaluation then only
/// converts them.
fn eval_cropped(set: &ImageSet, cfg: &EvalConfig) -> ImageSet {
    ImageSet { images: set.images.iter().map(|i| cfg.test_transform.apply(i, cfg.size)).collect(), labels: set.labels.clone(), classes: set.classes.clone() }
}

/// Transforms `idx` of `set` on `threads` threads: the training transform, image `k` of the
/// batch drawing from `ChaCha8(seed, stream = stream_base + k)` so the result does not depend
/// on the threads; or, with `train = None`, `ToTensor` of images already `eval_cropped`.
fn batch_pixels(set: &ImageSet, idx: &[usize], cfg: &EvalConfig, train: Option<(u64, u64)>) -> Vec<f32> {
    let per = cfg.channels * cfg.size * cfg.size;
    let mut out = vec![0f32; idx.len() * per];
    let threads = cfg.threads.max(1).min(idx.len().max(1));
    let chunk = idx.len().div_ceil(threads);
    std::thread::scope(|s| {
        for (t, (ids, dst)) in idx.chunks(chunk.max(1)).zip(out.chunks_mut(chunk.max(1) * per)).enumerate() {
            s.spawn(move || {
                for (k, (&i, d)) in ids.iter().zip(dst.chunks_mut(per)).enumerate() {
                    let x = match train {
                        Some((seed, base)) => {
                            let mut rng = ChaCha8Rng::seed_from_u64(seed);
                            rng.set_stream(base + (t * chunk + k) as u64);
                            train_transform(&set.images[i], &cfg.augment, &mut rng)
                        }
                        None => to_tensor(&set.images[i], false),
                    };
                    let n = cfg.size * cfg.size;
                    for c in 0..cfg.channels {
                        for (o, v) in d[c * n..(c + 1) * n].iter_mut().zip(&x[c * n..(c + 1) * n]) {
                            *o = (v - cfg.mean[c]) / cfg.std[c];
                        }
                    }
                }
            });
        }
    });
    out
}

/// Top-1 accuracy (%) of `net` on `set` (test transform: resize, centre crop, normalise).
pub fn accuracy(net: &EvalNet, set: &ImageSet, cfg: &EvalConfig, device: &Device) -> f64 {
    accuracy_cropped(net, &eval_cropped(set, cfg), cfg, device)
}

fn accuracy_cropped(net: &EvalNet, set: &ImageSet, cfg: &EvalConfig, device: &Device) -> f64 {
    let net = net.valid();
    let plain = device.clone().inner();
    let mut correct = 0usize;
    let idx: Vec<usize> = (0..set.len()).collect();
    // Large test batches: no gradients are kept, and small images fit many at once.
    let chunk = if cfg.size <= 64 { 500 } else { cfg.batch_size.max(1) * 2 };
    for ids in idx.chunks(chunk) {
        let x = batch_pixels(set, ids, cfg, None);
        let x = Tensor::<1>::from_floats(x.as_slice(), &plain).reshape([ids.len(), cfg.channels, cfg.size, cfg.size]);
        let pred: Vec<i64> = net.forward(x).argmax(1).into_data().convert::<i64>().try_to_vec::<i64>().expect("ints");
        correct += ids.iter().zip(pred).filter(|(i, p)| set.labels[**i] as i64 == *p).count();
    }
    100.0 * correct as f64 / set.len().max(1) as f64
}

/// One seed's outcome.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct SeedResult {
    pub seed: u64,
    pub final_top1: f64,
    /// Best test top-1 over the evaluations: selected on the test split, as the reference reports.
    pub best_top1: f64,
    pub best_epoch: usize,
    /// Test top-1 at the epoch best on the held-out validation set, if one was given.
    pub val_selected_top1: Option<f64>,
    /// (epoch, test top-1, validation top-1) at every evaluation.
    pub curve: Vec<(usize, f64, Option<f64>)>,
    /// Mean training loss of the first and of the last epoch.
    pub first_epoch_loss: f64,
    pub last_epoch_loss: f64,
    pub seconds: f64,
}

/// Trains a fresh network on `train` and tests it on `test` (and `val`).
pub fn train_and_eval(
    train: &ImageSet,
    test: &ImageSet,
    val: Option<&ImageSet>,
    cfg: &EvalConfig,
    seed: u64,
    device: &Device,
    progress: Option<&indicatif::ProgressBar>,
) -> Result<SeedResult, EvalError> {
    if train.is_empty() {
        return Err(EvalError::EmptyTrainingSet);
    }
    if train.classes != test.classes {
        return Err(EvalError::ClassMismatch { train: train.classes.clone(), test: test.classes.clone() });
    }
    let started = std::time::Instant::now();
    let ad = device.clone().autodiff();
    let mut net = reinit_seeded(EvalNet::new(cfg, train.classes.len(), &ad)?, &cfg.net, seed);
    let mut opt = SgdConfig::new()
        .with_momentum(Some(MomentumConfig { momentum: cfg.momentum, dampening: 0.0, nesterov: false }))
        .with_weight_decay((cfg.weight_decay > 0.0).then(|| WeightDecayConfig::new(cfg.weight_decay as f32)))
        .init();
    let ce = burn::nn::loss::CrossEntropyLossConfig::new().init(&ad);
    let test_cropped = eval_cropped(test, cfg);
    let val_cropped = val.map(|v| eval_cropped(v, cfg));
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut order: Vec<usize> = (0..train.len()).collect();
    let (mut curve, mut first_loss, mut last_loss) = (Vec::new(), f64::NAN, f64::NAN);
    let mut step: u64 = 0;
    for epoch in 0..cfg.epochs {
        order.shuffle(&mut rng);
        let lr = cfg.lr_at(epoch);
        let (mut loss_sum, mut batches) = (0.0, 0usize);
        for ids in order.chunks(cfg.batch_size) {
            let mut x = batch_pixels(train, ids, cfg, Some((seed ^ 0xa11_ce, step * cfg.batch_size as u64)));
            let y: Vec<i64> = ids.iter().map(|&i| train.labels[i] as i64).collect();
            let n = ids.len();
            let yt = Tensor::<1, Int>::from_ints(y.as_slice(), &ad);
            let mix = cfg.cutmix_beta.map(|b| CutMix::draw(n, cfg.size, cfg.size, b, &mut rng));
            if let Some(m) = &mix {
                m.apply(&mut x, cfg.channels, cfg.size, cfg.size);
            }
            let xt = Tensor::<1>::from_floats(x.as_slice(), &ad).reshape([n, cfg.channels, cfg.size, cfg.size]);
            let logits = net.forward(xt);
            let loss = match &mix {
                Some(m) => {
                    let yb: Vec<i64> = m.perm.iter().map(|&j| y[j]).collect();
                    let yb = Tensor::<1, Int>::from_ints(yb.as_slice(), &ad);
                    ce.forward(logits.clone(), yt) * m.ratio + ce.forward(logits, yb) * (1.0 - m.ratio)
                }
                None => ce.forward(logits, yt),
            };
            let track = epoch == 0 || epoch + 1 == cfg.epochs;
            if track {
                loss_sum += loss.clone().into_scalar::<f64>();
            }
            batches += 1;
            let grads = GradientsParams::from_grads(loss.backward(), &net);
            net = opt.step(lr, net, grads);
            step += 1;
        }
        let mean_loss = loss_sum / batches.max(1) as f64; // NaN-free only for tracked epochs

        if epoch == 0 {
            first_loss = mean_loss;
        }
        if epoch + 1 == cfg.epochs {
            last_loss = mean_loss;
        }
        if (epoch + 1) % cfg.eval_every == 0 || epoch + 1 == cfg.epochs {
            let t = accuracy_cropped(&net, &test_cropped, cfg, &ad);
            let v = val_cropped.as_ref().map(|v| accuracy_cropped(&net, v, cfg, &ad));
            curve.push((epoch + 1, t, v));
            if let Some(pb) = progress {
                pb.set_message(format!("seed {seed} epoch {} loss {mean_loss:.3} test {t:.2}%", epoch + 1));
            }
        }
        if let Some(pb) = progress {
            pb.inc(1);
        }
    }
    let (best_epoch, best_top1) = curve.iter().map(|(e, t, _)| (*e, *t)).fold((0, f64::MIN), |a, b| if b.1 > a.1 { b } else { a });
    let val_selected_top1 = val.map(|_| {
        curve.iter().fold((f64::MIN, 0.0), |a, (_, t, v)| if v.unwrap_or(f64::MIN) > a.0 { (v.unwrap_or(f64::MIN), *t) } else { a }).1
    });
    Ok(SeedResult {
        seed,
        final_top1: curve.last().map_or(0.0, |c| c.1),
        best_top1,
        best_epoch,
        val_selected_top1,
        curve,
        first_epoch_loss: first_loss,
        last_epoch_loss: last_loss,
        seconds: started.elapsed().as_secs_f64(),
    })
}

/// Mean and sample standard deviation (n - 1; 0 for one value).
pub fn mean_std(v: &[f64]) -> (f64, f64) {
    let n = v.len() as f64;
    let m = v.iter().sum::<f64>() / n.max(1.0);
    let var = if v.len() > 1 { v.iter().map(|x| (x - m).powi(2)).sum::<f64>() / (n - 1.0) } else { 0.0 };
    (m, var.sqrt())
}

/// Everything a results table needs, written as `eval.json` and `eval.md`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct EvalReport {
    pub title: String,
    pub net: String,
    pub train_images: usize,
    pub test_images: usize,
    pub epochs: usize,
    pub settings: serde_json::Value,
    pub seeds: Vec<SeedResult>,
    /// (mean, sample std) over seeds.
    pub final_top1: (f64, f64),
    pub best_top1: (f64, f64),
    pub val_selected_top1: Option<(f64, f64)>,
    pub command: String,
}

impl EvalReport {
    pub fn new(title: &str, cfg: &EvalConfig, train: &ImageSet, test: &ImageSet, seeds: Vec<SeedResult>, command: &str) -> Self {
        let pick = |f: &dyn Fn(&SeedResult) -> f64| mean_std(&seeds.iter().map(f).collect::<Vec<_>>());
        let val = seeds.iter().all(|s| s.val_selected_top1.is_some()).then(|| pick(&|s| s.val_selected_top1.unwrap_or(0.0)));
        Self {
            title: title.into(),
            net: cfg.net.to_string(),
            train_images: train.len(),
            test_images: test.len(),
            epochs: cfg.epochs,
            settings: serde_json::json!({
                "size": cfg.size, "channels": cfg.channels, "batch_size": cfg.batch_size, "lr": cfg.lr,
                "momentum": cfg.momentum, "weight_decay": cfg.weight_decay, "milestones": cfg.milestones,
                "gamma": cfg.gamma, "cutmix_beta": cfg.cutmix_beta, "eval_every": cfg.eval_every,
                "norm": format!("{:?}", cfg.norm), "augment": format!("{:?}", cfg.augment),
                "convnet_width": cfg.convnet_width, "test_transform": cfg.test_transform, "mean": cfg.mean, "std": cfg.std,
            }),
            final_top1: pick(&|s| s.final_top1),
            best_top1: pick(&|s| s.best_top1),
            val_selected_top1: val,
            seeds,
            command: command.into(),
        }
    }

    pub fn markdown(&self) -> String {
        let pm = |(m, s): (f64, f64)| format!("{m:.2} +- {s:.2}");
        let mut md = format!("# {}

{} trained on {} images for {} epochs, tested on {} real images; {} seeds.

", self.title, self.net, self.train_images, self.epochs, self.test_images, self.seeds.len());
        md.push_str("| top-1 (%) | mean +- std |\n|---|---|\n");
        md.push_str(&format!("| final epoch | {} |\n", pm(self.final_top1)));
        md.push_str(&format!("| best epoch (selected on the test split, as the reference reports) | {} |\n", pm(self.best_top1)));
        if let Some(v) = self.val_selected_top1 {
            md.push_str(&format!("| at the epoch best on held-out validation | {} |\n", pm(v)));
        }
        md.push_str("\n| seed | final | best (epoch) | seconds |\n|---|---|---|---|\n");
        for s in &self.seeds {
            md.push_str(&format!("| {} | {:.2} | {:.2} ({}) | {:.0} |\n", s.seed, s.final_top1, s.best_top1, s.best_epoch, s.seconds));
        }
        md.push_str(&format!("\nProduced by: `{}`\n", self.command));
        md
    }

    /// Writes `eval.json` and `eval.md` into `dir`, atomically.
    pub fn write(&self, dir: &std::path::Path) -> std::io::Result<()> {
        let json = serde_json::to_string_pretty(self).map_err(std::io::Error::other)?;
        ims3_util::atomic_write(&dir.join("eval.json"), json.as_bytes())?;
        ims3_util::atomic_write(&dir.join("eval.md"), self.markdown().as_bytes())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Two classes a network can only tell apart by layout: a bright left half or a bright
    /// top half, with pixel noise.
    fn synthetic(n_per_class: usize, seed: u64) -> ImageSet {
        use rand::Rng;
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let mut set = ImageSet { classes: vec!["left".into(), "top".into()], ..Default::default() };
        for k in 0..2 {
            for _ in 0..n_per_class {
                let (w, h) = (40, 40);
                let mut data = Vec::with_capacity(w * h * 3);
                for y in 0..h {
                    for x in 0..w {
                        let on = if k == 0 { x < w / 2 } else { y < h / 2 };
                        let base: i32 = if on { 190 } else { 60 };
                        for _ in 0..3 {
                            data.push((base + rng.random_range(-40..40)).clamp(0, 255) as u8);
                        }
                    }
                }
                set.images.push(Rgb8 { width: w, height: h, data });
                set.labels.push(k);
            }
        }
        set
    }

    #[test]
    fn schedule_and_epochs_follow_the_reference() {
        assert_eq!((epochs_for_ipc(1), epochs_for_ipc(10), epochs_for_ipc(50), epochs_for_ipc(100)), (3000, 2000, 1500, 1000));
        let cfg = EvalConfig::reference(NetKind::ResnetAp10, 224, 10);
        assert_eq!(cfg.eval_every, 20);
        assert_eq!(cfg.milestones, vec![1333, 1666]);
        assert_eq!(cfg.lr_at(0), 0.1);
        assert_eq!(cfg.lr_at(1332), 0.1);
        assert!((cfg.lr_at(1333) - 0.02).abs() < 1e-12);
        assert!((cfg.lr_at(1666) - 0.004).abs() < 1e-12);
        // IPC 1: 3000 epochs. In floats 2/3 * 3000 is 1999.99..., which truncates to 1999;
        // the reference's integers give 2000.
        let one = EvalConfig::reference(NetKind::ResnetAp10, 224, 1);
        assert_eq!(one.milestones, vec![2000, 2500]);
        assert_eq!(one.lr_at(1999), 0.1);
        assert_eq!(EvalConfig::reference(NetKind::ResnetAp10, 224, 10).with_epochs(100).milestones, vec![66, 83]);
        assert_eq!("convnet4".parse::<NetKind>().unwrap(), NetKind::ConvNet { depth: 4 });
        assert_eq!("ConvNet-4".parse::<NetKind>().unwrap().id(), "convnet4");
        for bad in ["vgg", "convnet", "convnetx", "convnet7", "convnet0"] {
            assert!(bad.parse::<NetKind>().is_err(), "{bad}");
        }
        assert_eq!(mean_std(&[1.0, 2.0, 3.0]), (2.0, 1.0));
    }

    #[test]
    fn a_short_run_learns_the_synthetic_task() {
        let device = Device::flex();
        let train = synthetic(24, 1);
        let test = synthetic(20, 2);
        let mut cfg = EvalConfig::reference(NetKind::ConvNet { depth: 3 }, 32, 10).with_epochs(8);
        cfg.eval_every = 4;
        cfg.batch_size = 16;
        cfg.lr = 0.01;
        cfg.convnet_width = 16;
        let r = train_and_eval(&train, &test, Some(&test), &cfg, 0, &device, None).unwrap();
        assert!(r.last_epoch_loss < r.first_epoch_loss, "loss {} -> {}", r.first_epoch_loss, r.last_epoch_loss);
        assert!(r.final_top1 >= 80.0, "final top-1 {}", r.final_top1);
        assert_eq!(r.curve.iter().map(|c| c.0).collect::<Vec<_>>(), vec![4, 8]);
        assert!(r.best_top1 >= r.final_top1);
        assert!(r.val_selected_top1.is_some());
        // Same seed, same result.
        let again = train_and_eval(&train, &test, None, &cfg, 0, &device, None).unwrap();
        assert_eq!(again.final_top1, r.final_top1);
        assert_eq!(again.last_epoch_loss, r.last_epoch_loss);
    }

    #[test]
    fn folder_with_other_classes_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        for c in ["a", "b", "z"] {
            std::fs::create_dir_all(dir.path().join(c)).unwrap();
        }
        let img = image::RgbImage::new(4, 4);
        img.save(dir.path().join("a/0.png")).unwrap();
        let e = ImageSet::read(dir.path(), &["a".into(), "b".into()]).unwrap_err().to_string();
        assert!(e.contains("no images for classes b"), "{e}");
        img.save(dir.path().join("b/0.png")).unwrap();
        let e = ImageSet::read(dir.path(), &["a".into(), "b".into()]).unwrap_err().to_string();
        assert!(e.contains("not in the test set's classes: z"), "{e}");
        let e = ImageSet::read(dir.path(), &["a".into(), "q".into()]).unwrap_err().to_string();
        assert!(e.contains("no folder for classes q"), "{e}");
    }
}

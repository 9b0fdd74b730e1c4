//! The small-image encoder: a ConvNet trained as a classifier on a whole real training set,
//! the stand-in for the ImageNet ResNet-18 encoder of S3 on small grey datasets
//! (Fashion-MNIST), whose features ([`ConvNet::features`]) S3's centroids and the report's
//! embedding plots are taken from ([`ConvNetEncoder`]).
//!
//! ```text
//! x = (pixel / 255 - mean) / std            one channel, no augmentation
//! SGD(lr, momentum 0.9, wd 5e-4), batch B, lr x 0.1 after half the epochs
//! ```
//!
//! Saved as safetensors with the config, normalisation and training record in the header
//! (`ims3.kind = convnet`), so [`load_classifier`] needs nothing but the file.

use std::collections::BTreeMap;
use std::path::Path;

use burn::module::Module;
use burn::optim::{GradientsParams, SgdConfig, decay::WeightDecayConfig, momentum::MomentumConfig};
use burn::prelude::*;
use ims3_images::Rgb;
use ims3_nets::{ConvNet, ConvNetConfig, LoadError, NetError, Norm};
use ims3_weights::{Checkpoint, KeyMap, WeightsError};
use rand::SeedableRng;
use rand::seq::SliceRandom;
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use crate::{FeatureEncoder, normalised_rows};

pub const META_KIND: &str = "ims3.kind";
pub const META_CLASSIFIER: &str = "ims3.convnet";

/// PyTorch-style names: the norm enum's variant is not part of the key.
fn key_map(norm: Norm) -> KeyMap {
    let variant = match norm {
        Norm::Batch => "norm.$1.Batch.",
        Norm::Instance => "norm.$1.Instance.",
    };
    KeyMap::new(&[(r"^norm\.(\d+)\.", variant)], &[(r"\.(Instance|Batch)\.", ".")])
}

/// What a saved classifier is: the network's shape and the input normalisation.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ClassifierSpec {
    pub depth: usize,
    pub width: usize,
    pub channels: usize,
    pub im_size: usize,
    pub num_classes: usize,
    pub norm: Norm,
    pub mean: f32,
    pub std: f32,
}

impl ClassifierSpec {
    pub fn config(&self) -> ConvNetConfig {
        ConvNetConfig { num_classes: self.num_classes, depth: self.depth, width: self.width, channels: self.channels, im_size: self.im_size, norm: self.norm }
    }

    /// Feature dimension of [`ConvNet::features`].
    pub fn feature_dim(&self) -> usize {
        let side = self.config().feature_side();
        self.width * side * side
    }
}

/// Why a classifier could not be trained.
#[derive(Debug, thiserror::Error)]
pub enum FitError {
    #[error("the training set is empty")]
    Empty,
    #[error("the classifier takes {channels}-channel {size} px images; the data is 1-channel {data} px")]
    Shape { channels: usize, size: usize, data: usize },
    #[error("the loss became {loss} in epoch {epoch}: lower the learning rate")]
    Diverged { epoch: usize, loss: f64 },
    #[error(transparent)]
    Net(#[from] NetError),
}

/// Training settings.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct FitOptions {
    pub epochs: usize,
    pub batch_size: usize,
    pub lr: f64,
    pub momentum: f64,
    pub weight_decay: f64,
    pub seed: u64,
}

impl Default for FitOptions {
    fn default() -> Self {
        Self { epochs: 2, batch_size: 128, lr: 0.01, momentum: 0.9, weight_decay: 5e-4, seed: 0 }
    }
}

/// Grey images with labels: `pixels` row-major `[n, side, side]` bytes.
pub struct GreySet<'a> {
    pub pixels: &'a [u8],
    pub labels: &'a [u8],
    pub side: usize,
}

impl GreySet<'_> {
    fn len(&self) -> usize {
        self.labels.len()
    }

    /// Normalised batch tensor `[ids.len(), 1, side, side]`.
    fn batch(&self, ids: &[usize], spec: &ClassifierSpec, device: &Device) -> Tensor<4> {
        let n = self.side * self.side;
        let mut x = Vec::with_capacity(ids.len() * n);
        for &i in ids {
            x.extend(self.pixels[i * n..(i + 1) * n].iter().map(|&v| (v as f32 / 255.0 - spec.mean) / spec.std));
        }
        Tensor::<1>::from_floats(x.as_slice(), device).reshape([ids.len(), 1, self.side, self.side])
    }
}

/// Trains a fresh ConvNet (`spec`) on `train`; returns it with the mean loss of every epoch.
/// `on_batch` is called after every batch (progress).
pub fn fit_classifier(
    spec: &ClassifierSpec,
    train: &GreySet,
    opts: &FitOptions,
    device: &Device,
    mut on_batch: impl FnMut(usize, f64),
) -> Result<(ConvNet, Vec<f64>), FitError> {
    if train.len() == 0 {
        return Err(FitError::Empty);
    }
    if spec.channels != 1 || train.side != spec.im_size {
        return Err(FitError::Shape { channels: spec.channels, size: spec.im_size, data: train.side });
    }
    let ad = device.clone().autodiff();
    ad.seed(opts.seed);
    let mut net = spec.config().init(&ad)?;
    let mut opt = SgdConfig::new()
        .with_momentum(Some(MomentumConfig { momentum: opts.momentum, dampening: 0.0, nesterov: false }))
        .with_weight_decay((opts.weight_decay > 0.0).then(|| WeightDecayConfig::new(opts.weight_decay as f32)))
        .init();
    let ce = burn::nn::loss::CrossEntropyLossConfig::new().init(&ad);
    let mut rng = ChaCha8Rng::seed_from_u64(opts.seed);
    let mut order: Vec<usize> = (0..train.len()).collect();
    let mut losses = Vec::new();
    for epoch in 0..opts.epochs {
        order.shuffle(&mut rng);
        let lr = if epoch >= opts.epochs.div_ceil(2) && opts.epochs > 1 { opts.lr * 0.1 } else { opts.lr };
        let (mut sum, mut count) = (0.0, 0usize);
        for ids in order.chunks(opts.batch_size) {
            let _one_graph_at_a_time = ims3_util::autodiff_guard();
            let x = train.batch(ids, spec, &ad);
            let y: Vec<i64> = ids.iter().map(|&i| train.labels[i] as i64).collect();
            let loss = ce.forward(net.forward(x), Tensor::<1, Int>::from_ints(y.as_slice(), &ad));
            let l = loss.clone().into_scalar::<f64>();
            if !l.is_finite() {
                return Err(FitError::Diverged { epoch, loss: l });
            }
            sum += l * ids.len() as f64;
            count += ids.len();
            let grads = GradientsParams::from_grads(loss.backward(), &net);
            net = opt.step(lr, net, grads);
            on_batch(epoch, l);
        }
        losses.push(sum / count as f64);
    }
    Ok((net.valid(), losses))
}

/// Top-1 accuracy (%) of `net` on `set`.
pub fn classifier_accuracy(net: &ConvNet, spec: &ClassifierSpec, set: &GreySet, device: &Device) -> f64 {
    let idx: Vec<usize> = (0..set.len()).collect();
    let mut correct = 0usize;
    for ids in idx.chunks(500) {
        let pred: Vec<i64> = net.forward(set.batch(ids, spec, device)).argmax(1).into_data().convert::<i64>().try_to_vec::<i64>().expect("ints");
        correct += ids.iter().zip(pred).filter(|(i, p)| set.labels[**i] as i64 == *p).count();
    }
    100.0 * correct as f64 / set.len().max(1) as f64
}

/// Writes the classifier with its spec and `record` (how it was trained) in the header.
pub fn save_classifier(net: &ConvNet, spec: &ClassifierSpec, record: &serde_json::Value, path: &Path) -> Result<(), WeightsError> {
    let mut meta = BTreeMap::new();
    meta.insert(META_KIND.to_string(), "convnet".to_string());
    meta.insert(META_CLASSIFIER.to_string(), serde_json::to_string(spec).expect("spec serialises"));
    meta.insert("ims3.training".to_string(), record.to_string());
    ims3_weights::save_safetensors(net, path, &key_map(spec.norm), &meta)
}

/// True when `path` is a classifier written by [`save_classifier`].
pub fn is_classifier_file(path: &Path) -> bool {
    Checkpoint::open(path, None).is_ok_and(|c| c.metadata.get(META_KIND).is_some_and(|k| k == "convnet"))
}

/// Loads a classifier written by [`save_classifier`], every tensor checked.
pub fn load_classifier(path: &Path, device: &Device) -> Result<(ConvNet, ClassifierSpec), LoadError> {
    let ckpt = Checkpoint::open(path, None)?;
    let other = |why: String| WeightsError::Other { path: path.to_path_buf(), why };
    let json = ckpt.metadata.get(META_CLASSIFIER).ok_or_else(|| other(format!("not a ConvNet classifier of ims3 (no '{META_CLASSIFIER}' metadata)")))?;
    let spec: ClassifierSpec = serde_json::from_str(json).map_err(|e| other(format!("metadata '{META_CLASSIFIER}': {e}")))?;
    let cfg = spec.config();
    let target = format!("ConvNet-{} width {} ({} px)", spec.depth, spec.width, spec.im_size);
    let net = ims3_nets::load_state_dict(path, |d| cfg.init(d), &key_map(spec.norm), &target, device)?;
    Ok((net, spec))
}

/// The small-image encoder: a ConvNet classifier trained on the real training set
/// (`ims3 train-encoder`), features before its classifier layer. Preprocessing: mean of the
/// three planes (grey), `(x + 1) / 2`, bilinear resize to the network's size if needed,
/// `(x - mean) / std` with the training set's statistics.
pub struct ConvNetEncoder {
    pub model: ConvNet,
    pub spec: ClassifierSpec,
    pub device: Device,
    pub name: String,
}

impl ConvNetEncoder {
    /// Loads a file written by `ims3 train-encoder`.
    pub fn load(path: &Path, device: Device) -> Result<Self, LoadError> {
        let (model, spec) = load_classifier(path, &device)?;
        let name = format!("convnet{}-w{}-{}", spec.depth, spec.width, path.file_name().map(|f| f.to_string_lossy().into_owned()).unwrap_or_default());
        Ok(Self { model, spec, device, name })
    }

    /// One grey plane `[size, size]`, normalised.
    pub fn preprocess(&self, img: &Rgb) -> Vec<f32> {
        let s = self.spec.im_size;
        let img = if (img.height, img.width) == (s, s) { img.clone() } else { ims3_images::resize_bilinear(img, s, s) };
        let plane = s * s;
        (0..plane)
            .map(|i| {
                let g = (img.data[i] + img.data[plane + i] + img.data[2 * plane + i]) / 3.0;
                ((g + 1.0) * 0.5 - self.spec.mean) / self.spec.std
            })
            .collect()
    }
}

impl FeatureEncoder for ConvNetEncoder {
    fn dim(&self) -> usize {
        self.spec.feature_dim()
    }

    fn encode(&self, images: &[Rgb]) -> Vec<Vec<f64>> {
        let s = self.spec.im_size;
        let mut out = Vec::with_capacity(images.len());
        for chunk in images.chunks(256) {
            let data: Vec<f32> = chunk.iter().flat_map(|im| self.preprocess(im)).collect();
            let x = Tensor::<1>::from_floats(data.as_slice(), &self.device).reshape([chunk.len(), 1, s, s]);
            out.extend(normalised_rows(self.model.features(x)));
        }
        out
    }

    fn name(&self) -> String {
        self.name.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec() -> ClassifierSpec {
        ClassifierSpec { depth: 2, width: 8, channels: 1, im_size: 28, num_classes: 2, norm: Norm::Instance, mean: 0.5, std: 0.5 }
    }

    #[test]
    fn learns_a_separable_problem_and_round_trips() {
        let device = Device::flex();
        // Class 0: bright left half; class 1: bright right half.
        let (mut pixels, mut labels) = (Vec::new(), Vec::new());
        for i in 0..64u8 {
            let c = i % 2;
            for _y in 0..28 {
                for x in 0..28 {
                    let on = (x < 14) == (c == 0);
                    pixels.push(if on { 200 + i % 40 } else { i % 30 });
                }
            }
            labels.push(c);
        }
        let set = GreySet { pixels: &pixels, labels: &labels, side: 28 };
        let opts = FitOptions { epochs: 4, batch_size: 16, lr: 0.05, ..Default::default() };
        let (net, losses) = fit_classifier(&spec(), &set, &opts, &device, |_, _| {}).unwrap();
        assert!(losses[3] < losses[0] * 0.5, "{losses:?}");
        assert_eq!(classifier_accuracy(&net, &spec(), &set, &device), 100.0);

        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("enc.safetensors");
        save_classifier(&net, &spec(), &serde_json::json!({"epochs": 4}), &p).unwrap();
        assert!(is_classifier_file(&p));
        let (back, s) = load_classifier(&p, &device).unwrap();
        assert_eq!(s, spec());
        let x = set.batch(&[0, 1, 2], &s, &device);
        let d = (back.features(x.clone()) - net.features(x)).abs().max().into_scalar::<f32>();
        assert_eq!(d, 0.0);
        // A DiT file or garbage is refused by name.
        std::fs::write(dir.path().join("x.safetensors"), b"junk").unwrap();
        let e = load_classifier(&dir.path().join("x.safetensors"), &device).unwrap_err().to_string();
        assert!(e.contains("x.safetensors"), "{e}");
    }
}

//! What the trainer reads: a training set of items with DiT labels ([`TrainData`]), the
//! epoch's data order and each step's random draws.
//!
//! Reproducibility: epoch `e`'s order is a shuffle drawn from `ChaCha8(seed, stream = e)`, and
//! everything random in step `s` (posterior noise and flips of the data, timesteps, diffusion
//! noise, both label-dropout masks) from `ChaCha8(seed ^ STEP_SALT, stream = s)`. The RNG state
//! at any step is therefore `(seed, step)`, which the checkpoint records.

use burn::prelude::*;
use ims3_diffusion::GaussianDiffusion;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rand_distr::StandardNormal;

use crate::config::TrainConfig;
use crate::step::StepBatch;

const STEP_SALT: u64 = 0x1d5_3e3e_57e9;

/// A training set as the trainer sees it: items with a DiT label, each drawn as a latent
/// (for the SD-VAE cache: posterior sample, scaled, flipped at random).
pub trait TrainData {
    fn len(&self) -> usize;
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// [C, H, W] of one latent.
    fn shape(&self) -> [usize; 3];
    fn label(&self, i: usize) -> i64;
    /// Appends item `i`'s latent to `out`, drawing any randomness from `rng`.
    fn draw(&self, i: usize, flip: bool, rng: &mut ChaCha8Rng, out: &mut Vec<f32>);
}

/// Images (or any fixed tensors) held in memory, e.g. a pixel-space DiT's training set.
pub struct InMemoryData {
    /// [N, C, H, W], row-major.
    pub values: Vec<f32>,
    pub shape: [usize; 3],
    pub labels: Vec<i64>,
}

impl InMemoryData {
    /// An IDX split (Fashion-MNIST) as `[N, 1, H, W]` values in [-1, 1] with its labels.
    pub fn from_idx(split: &ims3_images::idx::IdxSplit) -> Self {
        Self { values: split.values_pm1(), shape: [1, split.height, split.width], labels: split.labels.iter().map(|&l| l as i64).collect() }
    }
}

impl TrainData for InMemoryData {
    fn len(&self) -> usize {
        self.labels.len()
    }
    fn shape(&self) -> [usize; 3] {
        self.shape
    }
    fn label(&self, i: usize) -> i64 {
        self.labels[i]
    }
    fn draw(&self, i: usize, flip: bool, rng: &mut ChaCha8Rng, out: &mut Vec<f32>) {
        let [c, h, w] = self.shape;
        let item = &self.values[i * c * h * w..(i + 1) * c * h * w];
        if flip && rng.random::<bool>() {
            for row in item.chunks(w) {
                out.extend(row.iter().rev());
            }
        } else {
            out.extend_from_slice(item);
        }
    }
}

/// The epoch's data order (drop_last: the tail that does not fill a batch is skipped).
pub fn epoch_order(seed: u64, epoch: u64, n: usize) -> Vec<usize> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    rng.set_stream(epoch);
    let mut idx: Vec<usize> = (0..n).collect();
    idx.shuffle(&mut rng);
    idx
}

/// Draws step `step`'s batch: items `items` of the data, timesteps, noise, dropout masks.
pub fn draw_batch(data: &dyn TrainData, items: &[usize], cfg: &TrainConfig, diffusion: &GaussianDiffusion, step: u64, device: &Device) -> StepBatch {
    let mut rng = ChaCha8Rng::seed_from_u64(cfg.seed ^ STEP_SALT);
    rng.set_stream(step);
    let b = items.len();
    let [c, h, w] = data.shape();
    let mut x0 = Vec::with_capacity(b * c * h * w);
    for &i in items {
        data.draw(i, cfg.flip, &mut rng, &mut x0);
    }
    let labels: Vec<i64> = items.iter().map(|&i| data.label(i)).collect();
    let t: Vec<usize> = (0..b).map(|_| rng.random_range(0..diffusion.num_timesteps())).collect();
    let noise: Vec<f32> = (0..b * c * h * w).map(|_| rng.sample(StandardNormal)).collect();
    let p = cfg.loss.label_dropout;
    let drop_main: Vec<bool> = (0..b).map(|_| rng.random::<f64>() < p).collect();
    let drop_reverse: Vec<bool> = (0..b).map(|_| rng.random::<f64>() < p).collect();
    let tensor = |v: Vec<f32>| Tensor::<1>::from_floats(v.as_slice(), device).reshape([b, c, h, w]);
    StepBatch { x0: tensor(x0), labels, t, noise: tensor(noise), drop_main, drop_reverse }
}

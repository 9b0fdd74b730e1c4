//! Training a small `AutoencoderKL` from scratch: the Fashion-MNIST stand-in for
//! `sd-vae-ft-ema`, so the CPU job runs the latent path (VAE, latent cache, latent DiT) that the
//! real recipe runs.
//!
//! The loss is the pixel and KL part of the LDM autoencoder objective (no LPIPS, no
//! discriminator, which need weights or a GAN schedule a CPU stand-in does not have):
//!
//! ```text
//! L = sum_pixels |x - D(z)| / N  +  kl_weight * sum_latent KL(q(z|x) || N(0, I)) / N,
//! z = mean + std * eps,   KL = 0.5 * (mean^2 + var - 1 - log var)
//! ```
//!
//! DiT sees latents times `scaling_factor`; as for the SD VAE, it is 1 / (the standard deviation
//! of posterior samples over the training images) ([`latent_scaling_factor`]).

use burn::module::Module;
use burn::optim::{AdamWConfig, GradientsParams};
use burn::prelude::*;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rand_distr::StandardNormal;
use serde::Serialize;

use crate::config::{ConfigError, VaeConfig};
use crate::model::AutoencoderKL;

/// Images held in memory: `[N, C, H, W]` values in [-1, 1], row-major.
#[derive(Clone, Copy, Debug)]
pub struct ImageSet<'a> {
    pub values: &'a [f32],
    /// [C, H, W] of one image.
    pub shape: [usize; 3],
}

impl ImageSet<'_> {
    pub fn len(&self) -> usize {
        self.values.len() / self.shape.iter().product::<usize>().max(1)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// `[ids.len(), C, H, W]`, each image flipped horizontally where `flip[k]`.
    fn batch(&self, ids: &[usize], flip: &[bool], device: &Device) -> Tensor<4> {
        let [c, h, w] = self.shape;
        let n = c * h * w;
        let mut x = Vec::with_capacity(ids.len() * n);
        for (k, &i) in ids.iter().enumerate() {
            let item = &self.values[i * n..(i + 1) * n];
            if flip.get(k).copied().unwrap_or(false) {
                for row in item.chunks(w) {
                    x.extend(row.iter().rev());
                }
            } else {
                x.extend_from_slice(item);
            }
        }
        Tensor::<1>::from_floats(x.as_slice(), device).reshape([ids.len(), c, h, w])
    }
}

/// How [`fit_vae`] trains.
#[derive(Clone, Debug, Serialize)]
pub struct VaeFitOptions {
    pub epochs: usize,
    pub batch_size: usize,
    /// AdamW learning rate (betas 0.9 / 0.999, eps 1e-8, no weight decay: PyTorch's Adam).
    pub lr: f64,
    /// Weight of the KL term against the summed L1 reconstruction (LDM's autoencoders: 1e-6).
    pub kl_weight: f64,
    /// Random horizontal flips of the training images.
    pub flip: bool,
    pub seed: u64,
}

impl Default for VaeFitOptions {
    fn default() -> Self {
        Self { epochs: 4, batch_size: 64, lr: 1e-3, kl_weight: 1e-6, flip: true, seed: 0 }
    }
}

/// The loss terms of one batch, per image.
#[derive(Clone, Copy, Debug, Default, Serialize)]
pub struct VaeLoss {
    /// Summed absolute pixel error per image.
    pub rec: f64,
    /// Summed KL per image.
    pub kl: f64,
    /// `rec + kl_weight * kl`.
    pub total: f64,
}

/// The mean loss terms of one epoch.
#[derive(Clone, Debug, Serialize)]
pub struct VaeEpoch {
    pub epoch: usize,
    pub rec: f64,
    pub kl: f64,
    pub total: f64,
}

/// Why a VAE could not be trained.
#[derive(Debug, thiserror::Error)]
pub enum VaeFitError {
    #[error("no training images")]
    Empty,
    #[error("the images are {data:?} but the VAE takes {channels} channels and a side divisible by {downscale}")]
    Shape { data: [usize; 3], channels: usize, downscale: usize },
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error("the loss is {loss} at epoch {epoch}: training diverged")]
    Diverged { epoch: usize, loss: f64 },
}

/// The loss of `vae` on images `x` with posterior noise `eps` (of the latent's shape):
/// returns the scalar to minimise and its terms.
pub fn vae_loss(vae: &AutoencoderKL, x: Tensor<4>, eps: Tensor<4>, kl_weight: f64) -> (Tensor<1>, Tensor<1>, Tensor<1>) {
    let n = x.dims()[0] as f64;
    let post = vae.encode(x.clone());
    let z = post.sample(eps);
    let rec = (vae.decode(z) - x).abs().sum() / n;
    let var = post.std.clone().powi_scalar(2);
    let kl = (post.mean.powi_scalar(2) + var.clone() - var.log() - 1.0).sum() * (0.5 / n);
    let total = rec.clone() + kl.clone() * kl_weight;
    (total, rec, kl)
}

/// Trains a fresh `AutoencoderKL` of `config` on `train`; returns it (off the autodiff graph)
/// with each epoch's mean loss terms. Every random draw (initialisation, order, flips, posterior
/// noise) is a function of `opts.seed`. `on_batch(epoch, loss)` is called after every batch.
pub fn fit_vae(
    config: &VaeConfig,
    train: &ImageSet,
    opts: &VaeFitOptions,
    device: &Device,
    mut on_batch: impl FnMut(usize, &VaeLoss),
) -> Result<(AutoencoderKL, Vec<VaeEpoch>), VaeFitError> {
    config.validate()?;
    if train.is_empty() {
        return Err(VaeFitError::Empty);
    }
    let [c, h, w] = train.shape;
    let f = config.downscale();
    if c != config.in_channels || h % f != 0 || w % f != 0 {
        return Err(VaeFitError::Shape { data: train.shape, channels: config.in_channels, downscale: f });
    }
    let ad = device.clone().autodiff();
    ad.seed(opts.seed);
    let mut vae = config.init(&ad);
    let mut opt = AdamWConfig::new().with_beta_1(0.9).with_beta_2(0.999).with_epsilon(1e-8).with_weight_decay(0.0).init();
    let mut rng = ChaCha8Rng::seed_from_u64(opts.seed);
    let mut order: Vec<usize> = (0..train.len()).collect();
    let latent = [config.latent_channels, h / f, w / f];
    let mut epochs = Vec::with_capacity(opts.epochs);
    for epoch in 0..opts.epochs {
        order.shuffle(&mut rng);
        let mut sum = VaeLoss::default();
        let mut count = 0usize;
        for ids in order.chunks(opts.batch_size.max(1)) {
            let _one_graph_at_a_time = ims3_util::autodiff_guard();
            let flip: Vec<bool> = ids.iter().map(|_| opts.flip && rng.random::<bool>()).collect();
            let eps: Vec<f32> = (0..ids.len() * latent.iter().product::<usize>()).map(|_| rng.sample(StandardNormal)).collect();
            let x = train.batch(ids, &flip, &ad);
            let eps = Tensor::<1>::from_floats(eps.as_slice(), &ad).reshape([ids.len(), latent[0], latent[1], latent[2]]);
            let (total, rec, kl) = vae_loss(&vae, x, eps, opts.kl_weight);
            let l = VaeLoss { rec: rec.into_scalar::<f64>(), kl: kl.into_scalar::<f64>(), total: total.clone().into_scalar::<f64>() };
            if !l.total.is_finite() {
                return Err(VaeFitError::Diverged { epoch, loss: l.total });
            }
            let b = ids.len() as f64;
            sum.rec += l.rec * b;
            sum.kl += l.kl * b;
            sum.total += l.total * b;
            count += ids.len();
            let grads = GradientsParams::from_grads(total.backward(), &vae);
            vae = opt.step(opts.lr, vae, grads);
            on_batch(epoch, &l);
        }
        let n = count as f64;
        epochs.push(VaeEpoch { epoch, rec: sum.rec / n, kl: sum.kl / n, total: sum.total / n });
        tracing::info!(epoch, rec = sum.rec / n, kl = sum.kl / n, "vae epoch");
    }
    Ok((vae.valid(), epochs))
}

/// `1 / std` of posterior samples of `set` (all its values pooled), the factor that gives DiT
/// unit-variance latents; the noise is drawn from `seed`.
pub fn latent_scaling_factor(vae: &AutoencoderKL, set: &ImageSet, batch: usize, seed: u64, device: &Device) -> f64 {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let (mut s1, mut s2, mut n) = (0.0f64, 0.0f64, 0usize);
    let ids: Vec<usize> = (0..set.len()).collect();
    for chunk in ids.chunks(batch.max(1)) {
        let post = vae.encode(set.batch(chunk, &[], device));
        let dims = post.mean.dims();
        let eps: Vec<f32> = (0..dims.iter().product::<usize>()).map(|_| rng.sample(StandardNormal)).collect();
        let eps = Tensor::<1>::from_floats(eps.as_slice(), device).reshape(dims);
        let z: Vec<f32> = post.sample(eps).into_data().convert::<f32>().try_to_vec::<f32>().expect("f32");
        for v in z {
            s1 += v as f64;
            s2 += (v as f64) * (v as f64);
        }
        n += dims.iter().product::<usize>();
    }
    let mean = s1 / n as f64;
    let var = (s2 / n as f64 - mean * mean).max(f64::MIN_POSITIVE);
    1.0 / var.sqrt()
}

/// Mean squared error per value of `set` reconstructed from the posterior means, in [-1, 1]
/// units (the held-out measure `train-vae` reports).
pub fn reconstruction_mse(vae: &AutoencoderKL, set: &ImageSet, batch: usize, device: &Device) -> f64 {
    let ids: Vec<usize> = (0..set.len()).collect();
    let (mut sum, mut n) = (0.0f64, 0usize);
    for chunk in ids.chunks(batch.max(1)) {
        let x = set.batch(chunk, &[], device);
        let y = vae.decode(vae.encode(x.clone()).mean);
        let d: Vec<f32> = (y - x).powi_scalar(2).into_data().convert::<f32>().try_to_vec::<f32>().expect("f32");
        sum += d.iter().map(|&v| v as f64).sum::<f64>();
        n += d.len();
    }
    sum / n.max(1) as f64
}

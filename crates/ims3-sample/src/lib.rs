//! Candidate generation, the input of S3 (REFERENCE section 4): for one class, `n` images from
//! a (fine-tuned) DiT with classifier-free guidance, decoded through the SD-VAE (or taken as
//! pixels for a pixel-space DiT).
//!
//! ```text
//! noise  = NoiseSource(seed * 1_000_003 + label)        one stream per class
//! repeat until n images, `batch` at a time:
//!   z    = noise.normal([b, C, H, W]);  x_T = cat(z, z)  CFG doubles the batch: labels, null
//!   x_0  = sample_loop(cfg_denoiser(label, scale), x_T)  DDPM (learned variance) or DDIM
//!   img  = vae.decode(x_0[:b, :C] / 0.18215)             pixels for a pixel-space DiT
//! ```
//!
//! The latent DiT guides only the first three eps channels and samples unclipped, as the
//! reference; a pixel-space DiT guides every channel and clips to [-1, 1].

use burn::prelude::*;
use ims3_diffusion::{GaussianDiffusion, NoiseSource, Sampler};
use ims3_dit::{CfgChannels, DiT, DiTConfig};
use ims3_images::Rgb;
use ims3_vae::AutoencoderKL;

/// How candidates are drawn (the reference's: CFG 4.0, batch 10, DDPM, seed 0).
#[derive(Clone, Debug, PartialEq)]
pub struct CandidateOptions {
    /// Classifier-free guidance scale.
    pub cfg_scale: f64,
    /// Images per forward batch (CFG runs 2x this through the DiT).
    pub batch: usize,
    pub sampler: Sampler,
    /// Seed of every class's noise stream.
    pub seed: u64,
    pub show_progress: bool,
}

impl Default for CandidateOptions {
    fn default() -> Self {
        Self { cfg_scale: 4.0, batch: 10, sampler: Sampler::Ddpm, seed: 0, show_progress: false }
    }
}

/// Why candidates cannot be drawn.
#[derive(Debug, thiserror::Error)]
pub enum SampleError {
    #[error("label {label} is out of range: the DiT has {classes} classes")]
    Label { label: i64, classes: usize },
    #[error("a {0}-channel DiT works in a latent space: it needs its VAE")]
    NeedsVae(usize),
}

/// The noise seed of one class: its images do not depend on the other classes.
pub fn class_seed(seed: u64, label: i64) -> u64 {
    seed.wrapping_mul(1_000_003).wrapping_add(label as u64)
}

/// `n` candidates of class `label`, as RGB images with values in [-1, 1] (decoded, unclamped).
pub fn generate_candidates(
    model: &DiT,
    config: &DiTConfig,
    vae: Option<&AutoencoderKL>,
    diffusion: &GaussianDiffusion,
    label: i64,
    n: usize,
    opts: &CandidateOptions,
) -> Result<Vec<Rgb>, SampleError> {
    if label < 0 || label as usize >= config.num_classes {
        return Err(SampleError::Label { label, classes: config.num_classes });
    }
    if vae.is_none() && ![1, 3].contains(&config.in_channels) {
        return Err(SampleError::NeedsVae(config.in_channels));
    }
    let (cfg_channels, clip) = if vae.is_some() { (CfgChannels::FirstThree, false) } else { (CfgChannels::AllEps, true) };
    let device = model.pos_embed.val().device();
    let mut noise = NoiseSource::new(class_seed(opts.seed, label));
    let mut images = Vec::with_capacity(n);
    while images.len() < n {
        let b = opts.batch.max(1).min(n - images.len());
        let z = noise.normal([b, config.in_channels, config.input_size, config.input_size], &device); // [b, C, H, W]
        let x = Tensor::cat(vec![z.clone(), z], 0); // [2b, C, H, W]
        let labels = Tensor::<1, Int>::from_ints(vec![label; b].as_slice(), &device);
        let net = model.cfg_denoiser(labels, opts.cfg_scale, cfg_channels);
        let x = diffusion.sample_loop(opts.sampler, &net, x, clip, &mut noise, opts.show_progress);
        let x = x.narrow(0, 0, b).narrow(1, 0, config.in_channels); // [b, C, H, W]
        match vae {
            Some(vae) => images.extend(vae.decode_to_images(x, b, false)),
            None => images.extend(pixels_to_images(x)),
        }
    }
    Ok(images)
}

/// Pixel-space samples `[N, C, H, W]` (C = 1 or 3) to RGB images, a grey plane repeated.
pub fn pixels_to_images(x: Tensor<4>) -> Vec<Rgb> {
    let [n, c, h, w] = x.dims();
    let v: Vec<f32> = x.into_data().convert::<f32>().try_to_vec::<f32>().expect("f32");
    let plane = h * w;
    (0..n)
        .map(|i| {
            let img = &v[i * c * plane..(i + 1) * c * plane];
            let data = if c == 1 { [img, img, img].concat() } else { img.to_vec() };
            Rgb::new(w, h, data)
        })
        .collect()
}

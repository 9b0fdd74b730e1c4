//! `ims3 drift`: the DDIM inversion round trip of a DiT (x0 -> x_T -> x0) and its error.

use std::path::PathBuf;

use anyhow::{Result, ensure};
use burn::prelude::*;
use ims3_backend::DeviceSpec;
use ims3_diffusion::{GaussianDiffusion, NoiseSource, Respacing};

#[derive(clap::Args, Debug)]
pub struct Args {
    pub weights: PathBuf,
    /// Head count, for a non-standard hidden size.
    #[arg(long)]
    pub heads: Option<usize>,
    /// Respacing of the 1000-step schedule (reference: 50; `full` keeps every step).
    #[arg(long, default_value = "50")]
    pub steps: Respacing,
    /// Number of latents.
    #[arg(long, default_value_t = 4)]
    pub batch: usize,
    /// Class label for all latents.
    #[arg(long, default_value_t = 0)]
    pub class: i64,
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
}

pub fn run(a: Args, device: &DeviceSpec) -> Result<()> {
    let device = device.open()?;
    let (model, report) = ims3_dit::open_dit(&a.weights, None, a.heads, &device)?;
    let cfg = &report.config;
    ensure!(a.class >= 0 && (a.class as usize) < cfg.num_classes, "class {} is out of range: the model has {} classes", a.class, cfg.num_classes);
    let diffusion = GaussianDiffusion::dit(&a.steps)?;
    let mut noise = NoiseSource::new(a.seed);
    // Latents in the data range of the SD-VAE's scaled latents (roughly unit variance).
    let x0 = noise.normal([a.batch, cfg.in_channels, cfg.input_size, cfg.input_size], &device);
    let y = Tensor::<1, Int>::from_ints(vec![a.class; a.batch].as_slice(), &device);
    let net = |x: Tensor<4>, t: Tensor<1>| model.forward(x, t, y.clone());
    let start = std::time::Instant::now();
    let (x_t, rec) = diffusion.ddim_round_trip(&net, x0.clone(), false);
    let rms = |t: Tensor<4>| -> f64 { (t.powi_scalar(2).mean().into_scalar::<f32>() as f64).sqrt() };
    let err = rms(rec - x0.clone());
    let scale = rms(x0);
    println!(
        "ddim round trip over {} steps, batch {}, class {}: rms(x0) {scale:.4}, rms(x_T) {:.4}, rms(reconstruction - x0) {err:.6} (relative {:.3e}); {:.1} s",
        diffusion.num_timesteps(),
        a.batch,
        a.class,
        rms(x_t),
        err / scale.max(1e-12),
        start.elapsed().as_secs_f64()
    );
    Ok(())
}

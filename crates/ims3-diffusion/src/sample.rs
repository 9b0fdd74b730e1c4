//! Full sampling loops and the multi-step DDIM inversion, with progress bars.

use burn::prelude::*;
use ims3_util::progress_bar;

use crate::gaussian::{Denoiser, GaussianDiffusion, NoiseSource};

/// Which sampling loop draws images.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Sampler {
    /// Ancestral `p_sample_loop` with the learned variance: the reference's.
    #[default]
    Ddpm,
    /// Deterministic DDIM (eta 0).
    Ddim,
}

ims3_util::choice!(Sampler, "sampler", { Sampler::Ddpm => "ddpm", Sampler::Ddim => "ddim" });

impl GaussianDiffusion {
    /// The loop `sampler` names: [`Self::p_sample_loop`] or [`Self::ddim_sample_loop`] with eta 0.
    pub fn sample_loop(&self, sampler: Sampler, model: &impl Denoiser, x_t: Tensor<4>, clip_denoised: bool, noise: &mut NoiseSource, show_progress: bool) -> Tensor<4> {
        match sampler {
            Sampler::Ddpm => self.p_sample_loop(model, x_t, clip_denoised, noise, show_progress),
            Sampler::Ddim => self.ddim_sample_loop(model, x_t, clip_denoised, 0.0, noise, show_progress),
        }
    }

    /// Runs `step(x, t)` from the last (respaced) step down to 0 with a progress bar.
    fn denoise_loop(
        &self,
        x_t: Tensor<4>,
        what: &str,
        show_progress: bool,
        mut step: impl FnMut(Tensor<4>, &[usize]) -> Tensor<4>,
    ) -> Tensor<4> {
        let n = x_t.dims()[0];
        let pb = progress_bar(self.num_timesteps() as u64, what, show_progress);
        let mut x = x_t;
        for i in (0..self.num_timesteps()).rev() {
            x = step(x, &vec![i; n]);
            pb.inc(1);
        }
        pb.finish_and_clear();
        x
    }

    /// Ancestral sampling over every (respaced) step from `x_T` (`p_sample_loop`); a fresh
    /// Gaussian draw from `noise` per step.
    pub fn p_sample_loop(
        &self,
        model: &impl Denoiser,
        x_t: Tensor<4>,
        clip_denoised: bool,
        noise: &mut NoiseSource,
        show_progress: bool,
    ) -> Tensor<4> {
        let (shape, device) = (x_t.dims(), x_t.device());
        self.denoise_loop(x_t, "ddpm", show_progress, |x, t| {
            let z = noise.normal(shape, &device);
            self.p_sample(model, x, t, clip_denoised, z).0
        })
    }

    /// DDIM sampling from `x_T` (eta = 0 is deterministic).
    pub fn ddim_sample_loop(
        &self,
        model: &impl Denoiser,
        x_t: Tensor<4>,
        clip_denoised: bool,
        eta: f64,
        noise: &mut NoiseSource,
        show_progress: bool,
    ) -> Tensor<4> {
        let (shape, device) = (x_t.dims(), x_t.device());
        self.denoise_loop(x_t, "ddim", show_progress, |x, t| {
            let z = if eta > 0.0 { noise.normal(shape, &device) } else { x.zeros_like() };
            self.ddim_sample(model, x, t, clip_denoised, eta, z).0
        })
    }

    /// Multi-step DDIM inversion x_0 -> x_T: `ddim_reverse_sample` at t = 0, 1, ..., T-1 of the
    /// (respaced) schedule.
    pub fn ddim_invert(&self, model: &impl Denoiser, x0: Tensor<4>, clip_denoised: bool, show_progress: bool) -> Tensor<4> {
        let n = x0.dims()[0];
        let pb = progress_bar(self.num_timesteps() as u64, "ddim-invert", show_progress);
        let mut x = x0;
        for i in 0..self.num_timesteps() {
            x = self.ddim_reverse_sample(model, x, &vec![i; n], clip_denoised).0;
            pb.inc(1);
        }
        pb.finish_and_clear();
        x
    }

    /// Inverts `x0` and decodes it back with deterministic DDIM; returns (x_T, reconstruction).
    /// The gap between `x0` and the reconstruction is the inversion drift.
    pub fn ddim_round_trip(&self, model: &impl Denoiser, x0: Tensor<4>, clip_denoised: bool) -> (Tensor<4>, Tensor<4>) {
        let x_t = self.ddim_invert(model, x0, clip_denoised, false);
        let mut unused = NoiseSource::new(0);
        let rec = self.ddim_sample_loop(model, x_t.clone(), clip_denoised, 0.0, &mut unused, false);
        (x_t, rec)
    }
}

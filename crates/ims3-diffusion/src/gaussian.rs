//! `GaussianDiffusion` of IDDPM/DiT (eps prediction, learned-range variance), on burn tensors.
//!
//! Timesteps are host-side indices into the (possibly respaced) schedule; the network is fed
//! the original timestep through `timestep_map`. Coefficients are taken from the float64 arrays
//! and applied per sample as [N, 1, 1, 1] float32 tensors, as `_extract_into_tensor` does.

use burn::prelude::*;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, StandardNormal};

use crate::schedule::{NoiseSchedule, Respacing, Schedule, ScheduleError};

/// The denoising network as the samplers see it: `(x_t [N,C,H,W], t [N] original timesteps)
/// -> [N, 2C, H, W]` (eps and variance values) or `[N, C, H, W]` without learned sigma.
pub trait Denoiser {
    fn predict(&self, x: Tensor<4>, t: Tensor<1>) -> Tensor<4>;
}

impl<F: Fn(Tensor<4>, Tensor<1>) -> Tensor<4>> Denoiser for F {
    fn predict(&self, x: Tensor<4>, t: Tensor<1>) -> Tensor<4> {
        self(x, t)
    }
}

/// `p(x_{t-1} | x_t)` from one network output.
#[derive(Clone, Debug)]
pub struct PMeanVariance {
    pub mean: Tensor<4>,
    pub variance: Tensor<4>,
    pub log_variance: Tensor<4>,
    pub pred_xstart: Tensor<4>,
}

/// The training loss terms, each [N].
#[derive(Clone, Debug)]
pub struct LossTerms {
    pub mse: Tensor<1>,
    pub vb: Tensor<1>,
    pub loss: Tensor<1>,
}

/// Gaussian diffusion with eps prediction; `learn_sigma` selects LEARNED_RANGE variance,
/// otherwise FIXED_LARGE (DiT's `sigma_small=False`).
#[derive(Clone, Debug)]
pub struct GaussianDiffusion {
    pub schedule: Schedule,
    pub learn_sigma: bool,
}

/// Seeded host-side Gaussian noise, so results reproduce for a seed on any backend.
pub struct NoiseSource {
    rng: ChaCha8Rng,
}

impl NoiseSource {
    pub fn new(seed: u64) -> Self {
        Self { rng: ChaCha8Rng::seed_from_u64(seed) }
    }

    pub fn normal<const D: usize>(&mut self, shape: [usize; D], device: &Device) -> Tensor<D> {
        let n: usize = shape.iter().product();
        let v: Vec<f32> = (0..n).map(|_| StandardNormal.sample(&mut self.rng)).collect();
        Tensor::<1>::from_floats(v.as_slice(), device).reshape(shape)
    }

    /// A uniform integer in `0..n` per sample (training timesteps).
    pub fn timesteps(&mut self, batch: usize, n: usize) -> Vec<usize> {
        use rand::Rng;
        (0..batch).map(|_| self.rng.random_range(0..n)).collect()
    }

    /// Bernoulli(p) per sample (label dropout).
    pub fn bernoulli(&mut self, batch: usize, p: f64) -> Vec<bool> {
        use rand::Rng;
        (0..batch).map(|_| self.rng.random::<f64>() < p).collect()
    }

    pub fn rng(&mut self) -> &mut ChaCha8Rng {
        &mut self.rng
    }
}

fn mean_flat(x: Tensor<4>) -> Tensor<1> {
    let n = x.dims()[0];
    x.reshape([n as i64, -1]).mean_dim(1).reshape([n])
}

/// KL(N(mean1, exp(logvar1)) || N(mean2, exp(logvar2))), elementwise.
pub fn normal_kl(mean1: Tensor<4>, logvar1: Tensor<4>, mean2: Tensor<4>, logvar2: Tensor<4>) -> Tensor<4> {
    ((logvar2.clone() - logvar1.clone()) + (logvar1 - logvar2.clone()).exp()
        + (mean1 - mean2).powi_scalar(2) * (logvar2.neg()).exp()
        - 1.0)
        * 0.5
}

/// The tanh approximation of the standard normal CDF.
fn approx_standard_normal_cdf(x: Tensor<4>) -> Tensor<4> {
    let c = (2.0 / std::f64::consts::PI).sqrt();
    ((x.clone() + x.powi_scalar(3) * 0.044715) * c).tanh().add_scalar(1.0) * 0.5
}

/// Log-likelihood of `x` (data in [-1, 1], 8-bit bins) under a discretised Gaussian.
pub fn discretized_gaussian_log_likelihood(x: Tensor<4>, means: Tensor<4>, log_scales: Tensor<4>) -> Tensor<4> {
    let centered = x.clone() - means;
    let inv_stdv = log_scales.neg().exp();
    let cdf_plus = approx_standard_normal_cdf(inv_stdv.clone() * (centered.clone() + 1.0 / 255.0));
    let cdf_min = approx_standard_normal_cdf(inv_stdv * (centered - 1.0 / 255.0));
    let log_cdf_plus = cdf_plus.clone().clamp_min(1e-12).log();
    let log_one_minus_cdf_min = (cdf_min.clone().neg() + 1.0).clamp_min(1e-12).log();
    let log_cdf_delta = (cdf_plus - cdf_min).clamp_min(1e-12).log();
    let upper = log_cdf_delta.mask_where(x.clone().greater_elem(0.999), log_one_minus_cdf_min);
    upper.mask_where(x.lower_elem(-0.999), log_cdf_plus)
}

impl GaussianDiffusion {
    /// DiT's `create_diffusion(timestep_respacing)`: linear schedule, T = 1000, learned sigma.
    pub fn dit(respacing: &Respacing) -> Result<Self, ScheduleError> {
        Self::new(NoiseSchedule::Linear, 1000, respacing, true)
    }

    pub fn new(schedule: NoiseSchedule, steps: usize, respacing: &Respacing, learn_sigma: bool) -> Result<Self, ScheduleError> {
        Ok(Self { schedule: Schedule::respaced(schedule, steps, respacing)?, learn_sigma })
    }

    pub fn num_timesteps(&self) -> usize {
        self.schedule.len()
    }

    /// `_extract_into_tensor`: `arr[t]` per sample as [N, 1, 1, 1].
    pub fn extract(&self, arr: &[f64], t: &[usize], device: &Device) -> Tensor<4> {
        let v: Vec<f32> = t.iter().map(|&i| arr[i] as f32).collect();
        Tensor::<1>::from_floats(v.as_slice(), device).reshape([t.len(), 1, 1, 1])
    }

    /// The original timesteps the network sees for respaced indices `t`.
    pub fn model_timesteps(&self, t: &[usize], device: &Device) -> Tensor<1> {
        let v: Vec<f32> = t.iter().map(|&i| self.schedule.timestep_map[i] as f32).collect();
        Tensor::<1>::from_floats(v.as_slice(), device)
    }

    /// `q(x_t | x_0)` sample: `sqrt(abar) x0 + sqrt(1 - abar) noise`.
    pub fn q_sample(&self, x0: Tensor<4>, t: &[usize], noise: Tensor<4>) -> Tensor<4> {
        let d = x0.device();
        self.extract(&self.schedule.sqrt_alphas_cumprod, t, &d) * x0
            + self.extract(&self.schedule.sqrt_one_minus_alphas_cumprod, t, &d) * noise
    }

    /// Mean, variance and clipped log-variance of `q(x_{t-1} | x_t, x_0)`.
    pub fn q_posterior_mean_variance(&self, x0: Tensor<4>, xt: Tensor<4>, t: &[usize]) -> (Tensor<4>, Tensor<4>, Tensor<4>) {
        let d = x0.device();
        let s = &self.schedule;
        let mean = self.extract(&s.posterior_mean_coef1, t, &d) * x0 + self.extract(&s.posterior_mean_coef2, t, &d) * xt;
        (mean, self.extract(&s.posterior_variance, t, &d), self.extract(&s.posterior_log_variance_clipped, t, &d))
    }

    /// `x0 = sqrt(1/abar) x_t - sqrt(1/abar - 1) eps`.
    pub fn predict_xstart_from_eps(&self, xt: Tensor<4>, t: &[usize], eps: Tensor<4>) -> Tensor<4> {
        let d = xt.device();
        self.extract(&self.schedule.sqrt_recip_alphas_cumprod, t, &d) * xt
            - self.extract(&self.schedule.sqrt_recipm1_alphas_cumprod, t, &d) * eps
    }

    /// `eps = (sqrt(1/abar) x_t - x0) / sqrt(1/abar - 1)`.
    pub fn predict_eps_from_xstart(&self, xt: Tensor<4>, t: &[usize], x0: Tensor<4>) -> Tensor<4> {
        let d = xt.device();
        (self.extract(&self.schedule.sqrt_recip_alphas_cumprod, t, &d) * xt - x0)
            / self.extract(&self.schedule.sqrt_recipm1_alphas_cumprod, t, &d)
    }

    /// `p_mean_variance` given the network's output for `x` at `t`.
    pub fn p_mean_variance_from_output(&self, output: Tensor<4>, x: Tensor<4>, t: &[usize], clip_denoised: bool) -> PMeanVariance {
        let d = x.device();
        let c = x.dims()[1];
        let s = &self.schedule;
        let (eps, log_variance) = if self.learn_sigma {
            let parts = output.split(c, 1);
            let [eps, v]: [Tensor<4>; 2] = parts.try_into().expect("learned sigma: output has 2C channels");
            let min_log = self.extract(&s.posterior_log_variance_clipped, t, &d);
            let max_log = self.extract(&s.log_betas, t, &d);
            let frac = (v + 1.0) / 2.0;
            (eps, frac.clone() * max_log + (frac.neg() + 1.0) * min_log)
        } else {
            // FIXED_LARGE: variance betas, with posterior_variance[1] at t = 0.
            let large: Vec<f64> = (0..s.len()).map(|i| if i == 0 { s.posterior_variance[1] } else { s.betas[i] }.ln()).collect();
            let lv = self.extract(&large, t, &d).expand(x.shape());
            (output, lv)
        };
        let mut pred_xstart = self.predict_xstart_from_eps(x.clone(), t, eps);
        if clip_denoised {
            pred_xstart = pred_xstart.clamp(-1.0, 1.0);
        }
        let (mean, _, _) = self.q_posterior_mean_variance(pred_xstart.clone(), x, t);
        PMeanVariance { mean, variance: log_variance.clone().exp(), log_variance, pred_xstart }
    }

    /// `p_mean_variance`: runs the network at `t`.
    pub fn p_mean_variance(&self, model: &impl Denoiser, x: Tensor<4>, t: &[usize], clip_denoised: bool) -> PMeanVariance {
        let out = model.predict(x.clone(), self.model_timesteps(t, &x.device()));
        self.p_mean_variance_from_output(out, x, t, clip_denoised)
    }

    /// The variational-bound term in bits per dim, [N]: the decoder NLL at t = 0, else the
    /// KL between the true posterior and `p`.
    pub fn vb_terms_bpd(&self, output: Tensor<4>, x0: Tensor<4>, xt: Tensor<4>, t: &[usize], clip_denoised: bool) -> Tensor<1> {
        let (true_mean, _, true_logvar) = self.q_posterior_mean_variance(x0.clone(), xt.clone(), t);
        let p = self.p_mean_variance_from_output(output, xt, t, clip_denoised);
        let ln2 = std::f64::consts::LN_2;
        let kl = mean_flat(normal_kl(true_mean, true_logvar, p.mean.clone(), p.log_variance.clone())) / ln2;
        let nll = mean_flat(discretized_gaussian_log_likelihood(x0, p.mean, p.log_variance * 0.5).neg()) / ln2;
        let d = kl.device();
        let first: Vec<bool> = t.iter().map(|&i| i == 0).collect();
        let mask = Tensor::<1, Bool>::from_bool(TensorData::from(first.as_slice()), &d);
        kl.mask_where(mask, nll)
    }

    /// `training_losses` (LossType.MSE) given the network output for `x_t = q_sample(x0, t,
    /// noise)`: MSE on eps plus the VB term computed with the eps half detached.
    pub fn training_losses_from_output(&self, output: Tensor<4>, x0: Tensor<4>, xt: Tensor<4>, t: &[usize], noise: Tensor<4>) -> LossTerms {
        let c = x0.dims()[1];
        let (eps, vb) = if self.learn_sigma {
            let [eps, v]: [Tensor<4>; 2] = output.split(c, 1).try_into().expect("2C channels");
            let frozen = Tensor::cat(vec![eps.clone().detach(), v], 1);
            (eps, self.vb_terms_bpd(frozen, x0, xt, t, false))
        } else {
            let n = x0.dims()[0];
            (output, Tensor::zeros([n], &x0.device()))
        };
        let mse = mean_flat((noise - eps).powi_scalar(2));
        // DiT's create_diffusion uses LossType.MSE: the VB term enters unscaled (RESCALED_MSE
        // would multiply it by T/1000, which is 1 for the 1000-step training schedule anyway).
        LossTerms { loss: mse.clone() + vb.clone(), mse, vb }
    }

    /// One ancestral step `x_{t-1} = mean + [t != 0] exp(logvar / 2) noise`.
    pub fn p_sample(&self, model: &impl Denoiser, x: Tensor<4>, t: &[usize], clip_denoised: bool, noise: Tensor<4>) -> (Tensor<4>, Tensor<4>) {
        let p = self.p_mean_variance(model, x, t, clip_denoised);
        let nonzero: Vec<f64> = t.iter().map(|&i| if i == 0 { 0.0 } else { 1.0 }).collect();
        let d = noise.device();
        let mask = self.extract(&nonzero, &(0..t.len()).collect::<Vec<_>>(), &d);
        (p.mean + mask * (p.log_variance * 0.5).exp() * noise, p.pred_xstart)
    }

    /// One DDIM step (Eq. 12) with `eta`; `noise` is only used when `eta > 0`.
    pub fn ddim_sample(&self, model: &impl Denoiser, x: Tensor<4>, t: &[usize], clip_denoised: bool, eta: f64, noise: Tensor<4>) -> (Tensor<4>, Tensor<4>) {
        let p = self.p_mean_variance(model, x.clone(), t, clip_denoised);
        self.ddim_step_from_xstart(x, t, p.pred_xstart, eta, noise)
    }

    /// DDIM step given the predicted x0 (eps re-derived from it, as the reference does).
    /// The alpha-bars are extracted to float32 first and combined in float32, as the reference
    /// does: `1 - abar` near t = 0 is a cancellation whose rounding the result inherits.
    pub fn ddim_step_from_xstart(&self, x: Tensor<4>, t: &[usize], pred_xstart: Tensor<4>, eta: f64, noise: Tensor<4>) -> (Tensor<4>, Tensor<4>) {
        let d = x.device();
        let s = &self.schedule;
        let eps = self.predict_eps_from_xstart(x, t, pred_xstart.clone());
        let ab = self.extract(&s.alphas_cumprod, t, &d);
        let abp = self.extract(&s.alphas_cumprod_prev, t, &d);
        let sigma = ((abp.clone().neg() + 1.0) / (ab.clone().neg() + 1.0)).sqrt() * (ab / abp.clone()).neg().add_scalar(1.0).sqrt() * eta;
        let mean = pred_xstart.clone() * abp.clone().sqrt() + (abp.neg() + 1.0 - sigma.clone().powi_scalar(2)).sqrt() * eps;
        let nonzero: Vec<f64> = t.iter().map(|&i| if i == 0 { 0.0 } else { 1.0 }).collect();
        let mask = self.extract(&nonzero, &(0..t.len()).collect::<Vec<_>>(), &d);
        (mean + mask * sigma * noise, pred_xstart)
    }

    /// `ddim_reverse_sample` (eta = 0): one step x_t -> x_{t+1} of the DDIM ODE,
    /// `x_next = x0_hat sqrt(abar_next) + sqrt(1 - abar_next) eps'` with
    /// `eps' = (sqrt(1/abar) x - x0_hat) / sqrt(1/abar - 1)` and `abar_next[T-1] = 0`.
    /// IMS3 feeds the clean latent x0 as `x` with `clip_denoised = true`: the IM target.
    pub fn ddim_reverse_sample(&self, model: &impl Denoiser, x: Tensor<4>, t: &[usize], clip_denoised: bool) -> (Tensor<4>, Tensor<4>) {
        let p = self.p_mean_variance(model, x.clone(), t, clip_denoised);
        (self.ddim_reverse_from_xstart(x, t, p.pred_xstart.clone()), p.pred_xstart)
    }

    /// The reverse step given the predicted x0 (float32 alpha-bar arithmetic, as above).
    pub fn ddim_reverse_from_xstart(&self, x: Tensor<4>, t: &[usize], pred_xstart: Tensor<4>) -> Tensor<4> {
        let d = x.device();
        let eps = self.predict_eps_from_xstart(x, t, pred_xstart.clone());
        let abn = self.extract(&self.schedule.alphas_cumprod_next, t, &d);
        pred_xstart * abn.clone().sqrt() + (abn.neg() + 1.0).sqrt() * eps
    }
}


//! One IMS3 training step's loss (REFERENCE section 3); `TrainState::step` applies it.
//!
//! ```text
//! x_t    = q_sample(x0, t, noise)                       t ~ U{0..T-1}, per sample
//! out    = DiT(x_t, t, drop(y))                         label dropout 0.1 (train mode)
//! mse,vb = training_losses(out, x0, x_t, t)
//! z1     = q_posterior_mean(x0_hat(out), x_t, t)        unclipped, with gradient
//! z2     = ddim_reverse_sample(DiT(., ., drop'(y)), x0, t, clip=True)   no gradient, clean x0 as x_t
//! total  = mse + vb + [im] (1 - lambda mean_ij cos(z1_i, z2_j)) + [minimax] (pos + neg)
//! ```
//!
//! The two forwards draw their label dropout independently, as the reference's model in train
//! mode does. The reverse step runs on a validation snapshot of the model (`Module::valid`), so
//! autodiff records nothing for it.

use burn::prelude::*;
use ims3_diffusion::GaussianDiffusion;
use ims3_dit::DiT;

use crate::config::LossConfig;
use crate::losses::{MinimaxMemory, im_loss};

/// Everything random about one step, drawn on the host so it is seeded.
#[derive(Clone, Debug)]
pub struct StepBatch {
    /// Clean latents [B, C, H, W].
    pub x0: Tensor<4>,
    /// DiT labels (true ImageNet indices unless the folder-index quirk is asked for).
    pub labels: Vec<i64>,
    /// Timesteps, one per sample.
    pub t: Vec<usize>,
    /// The noise of `q_sample`, [B, C, H, W].
    pub noise: Tensor<4>,
    /// Label dropout of the diffusion-loss forward and of the reverse-DDIM forward.
    pub drop_main: Vec<bool>,
    pub drop_reverse: Vec<bool>,
}

/// The step's loss terms, each a [1] tensor (batch means); `total` carries the gradient.
#[derive(Clone, Debug)]
pub struct StepLoss {
    pub total: Tensor<1>,
    pub mse: Tensor<1>,
    pub vb: Tensor<1>,
    pub im: Option<Tensor<1>>,
    pub pos: Option<Tensor<1>>,
    pub neg: Option<Tensor<1>>,
}

impl StepLoss {
    /// Host values: (name, value) for every term that is on.
    pub fn values(&self) -> Vec<(&'static str, f64)> {
        let v = |t: &Tensor<1>| t.clone().into_scalar::<f64>();
        let mut out = vec![("loss", v(&self.total)), ("mse", v(&self.mse)), ("vb", v(&self.vb))];
        for (name, t) in [("im", &self.im), ("pos", &self.pos), ("neg", &self.neg)] {
            if let Some(t) = t {
                out.push((name, v(t)));
            }
        }
        out
    }
}

fn bool_tensor(v: &[bool], device: &Device) -> Tensor<1, Bool> {
    Tensor::<1, Bool>::from_bool(TensorData::from(v), device)
}

fn int_tensor(v: &[i64], device: &Device) -> Tensor<1, Int> {
    Tensor::<1, Int>::from_ints(v, device)
}

/// `x_t = q_sample(x0, t, noise)` and the DiT's output on it with the batch's labels and main
/// label dropout: ([B, C, H, W], [B, 2C, H, W]) on `x0`'s device (`x0`, `noise` may be the
/// batch's tensors or their plain copies, with `model` matching).
pub(crate) fn noised_forward(model: &DiT, diffusion: &GaussianDiffusion, x0: Tensor<4>, noise: Tensor<4>, batch: &StepBatch) -> (Tensor<4>, Tensor<4>) {
    let device = x0.device();
    let xt = diffusion.q_sample(x0, &batch.t, noise);
    let y = int_tensor(&batch.labels, &device);
    let out = model.forward_with_label_drop(xt.clone(), diffusion.model_timesteps(&batch.t, &device), y, bool_tensor(&batch.drop_main, &device));
    (xt, out)
}

/// The loss of one step. `model` lives on an autodiff device; `memory` is required when
/// `cfg.minimax` is on and is updated after the terms are computed.
pub fn im_step_loss(
    model: &DiT,
    diffusion: &GaussianDiffusion,
    memory: Option<&mut MinimaxMemory>,
    batch: &StepBatch,
    cfg: &LossConfig,
) -> StepLoss {
    let device = batch.x0.device();
    let t = &batch.t;
    let (xt, out) = noised_forward(model, diffusion, batch.x0.clone(), batch.noise.clone(), batch);
    let terms = diffusion.training_losses_from_output(out.clone(), batch.x0.clone(), xt.clone(), t, batch.noise.clone());
    let mse = terms.mse.mean();
    let vb = terms.vb.mean();
    let mut total = terms.loss.mean();
    let need_pred = cfg.im || cfg.minimax;
    let pmv = need_pred.then(|| diffusion.p_mean_variance_from_output(out, xt.clone(), t, false));

    let im = if cfg.im {
        let z1 = pmv.as_ref().expect("computed").mean.clone(); // posterior mean, with gradient
        let z2 = reverse_ddim_step(model, diffusion, batch);
        let z2 = if device.is_autodiff() { Tensor::from_inner(z2) } else { z2 };
        let term = im_loss(z1, z2, cfg.im_lambda);
        total = total + term.clone();
        Some(term)
    } else {
        None
    };

    let (pos, neg) = if cfg.minimax {
        let memory = memory.expect("the Minimax terms need a memory");
        let x0_hat = pmv.as_ref().expect("computed").pred_xstart.clone();
        let (pos, neg) = memory.terms(batch.x0.clone(), x0_hat, &batch.labels, cfg.lambda_pos, cfg.lambda_neg);
        total = total + pos.clone() + neg.clone();
        (Some(pos), Some(neg))
    } else {
        (None, None)
    };
    StepLoss { total, mse, vb, im, pos, neg }
}

/// z2: one `ddim_reverse_sample` step with the clean latent fed as x_t, clipped, no gradient.
/// Returned on the plain (non-autodiff) device.
pub(crate) fn reverse_ddim_step(model: &DiT, diffusion: &GaussianDiffusion, batch: &StepBatch) -> Tensor<4> {
    let plain = model.valid();
    let x0 = batch.x0.clone().inner(); // idempotent on a plain device
    let pd = x0.device();
    let y = int_tensor(&batch.labels, &pd);
    let drop = bool_tensor(&batch.drop_reverse, &pd);
    let net = |x: Tensor<4>, tt: Tensor<1>| plain.forward_with_label_drop(x, tt, y.clone(), drop.clone());
    diffusion.ddim_reverse_sample(&net, x0, &batch.t, true).0
}

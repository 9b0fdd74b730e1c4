//! One IMS3 step split over shards of the batch, each with its own forward and backward, whose
//! gradients sum to the whole batch's: the core of data-parallel fine-tuning (one shard per
//! device, the gradients all-reduced) and of gradient accumulation (shards in turn on one device).
//!
//! The diffusion loss is a mean over samples, so a shard contributes its sum over B. IMS3's extra
//! terms couple the samples, and each is rewritten so that a shard needs only a few numbers from
//! the others, exchanged before its loss is built:
//!
//! ```text
//! IM:      1 - lambda/B^2 sum_ij cos(z1_i, z2_j) = 1 - lambda/B sum_i <u1_i, m2>
//!          u1_i = z1_i / |z1_i|, m2 = 1/B sum_j z2_j / |z2_j|      (z2 carries no gradient:
//!          m2 is one all-reduced vector of D values)
//! Minimax: pos_c = lambda_pos/K (1 - min_{i in c, m} cos(x0hat_i, real_m))
//!          neg_c = lambda_neg/K      max_{i in c, m} cos(x0hat_i, pred_m)
//!          the extreme over the class's samples is the extreme of the shards' extremes; the
//!          gradient reaches only the sample that attains it, so only the shard holding it adds
//!          the term (exchange: two numbers per class of the batch)
//! ```
//!
//! The memories are updated once, after every shard, with the whole batch in batch order, so
//! they stay what the unsharded step leaves. On one device the shards run in turn: a first pass
//! without gradients gathers the exchanged numbers (one extra no-grad forward per shard when the
//! Minimax terms are on), a second pass builds each shard's loss and runs its backward.
//! `sharded_step_matches_the_whole_batch` in `crates/ims3-im/tests/train.rs` checks the loss and the summed gradients against the
//! unsharded step.

use std::collections::{BTreeMap, BTreeSet};

use burn::optim::{GradientsAccumulator, GradientsParams};
use burn::prelude::*;
use ims3_diffusion::GaussianDiffusion;
use ims3_dit::DiT;

use crate::config::LossConfig;
use crate::losses::{MinimaxMemory, class_indices, normalize_rows, pairwise_cosine};
use crate::state::host;
use crate::step::{StepBatch, StepLoss, noised_forward, reverse_ddim_step};

/// Contiguous, near-equal shards of `0..b` (the first `b % n` one longer), empty ones dropped.
pub fn shard_ranges(b: usize, n: usize) -> Vec<std::ops::Range<usize>> {
    let n = n.clamp(1, b.max(1));
    let (q, r) = (b / n, b % n);
    let mut start = 0;
    (0..n)
        .map(|i| {
            let len = q + usize::from(i < r);
            let range = start..start + len;
            start += len;
            range
        })
        .filter(|r| !r.is_empty())
        .collect()
}

/// The samples `range` of a batch.
pub fn shard_batch(batch: &StepBatch, range: std::ops::Range<usize>) -> StepBatch {
    StepBatch {
        x0: batch.x0.clone().narrow(0, range.start, range.len()),
        labels: batch.labels[range.clone()].to_vec(),
        t: batch.t[range.clone()].to_vec(),
        noise: batch.noise.clone().narrow(0, range.start, range.len()),
        drop_main: batch.drop_main[range.clone()].to_vec(),
        drop_reverse: batch.drop_reverse[range].to_vec(),
    }
}

/// What every shard needs from the others before it builds its loss.
#[derive(Clone, Debug, Default)]
pub struct Exchange {
    /// B (the whole batch).
    pub batch: usize,
    /// sum over the batch of z2_j / |z2_j|, flattened [D] (divide by B for m2).
    pub z2_unit_sum: Option<Vec<f32>>,
    /// Per class of the batch: (min cos against the real memory, its shard), (max cos against the
    /// prediction memory, its shard); absent for a class whose memory is still empty.
    pub extremes: BTreeMap<i64, ((f32, usize), (f32, usize))>,
    /// K: the number of classes in the whole batch.
    pub classes: usize,
}

impl Exchange {
    /// Folds in one shard's contribution (`shard` is its index; ties keep the earlier shard).
    pub fn merge(&mut self, shard: usize, part: ShardSummary) {
        self.batch += part.samples;
        if let Some(v) = part.z2_unit_sum {
            match &mut self.z2_unit_sum {
                Some(acc) => acc.iter_mut().zip(&v).for_each(|(a, b)| *a += b),
                None => self.z2_unit_sum = Some(v),
            }
        }
        for (c, (lo, hi)) in part.extremes {
            let e = self.extremes.entry(c).or_insert(((lo, shard), (hi, shard)));
            if lo < e.0.0 {
                e.0 = (lo, shard);
            }
            if hi > e.1.0 {
                e.1 = (hi, shard);
            }
        }
    }
}

/// One shard's part of the exchange.
#[derive(Clone, Debug)]
pub struct ShardSummary {
    pub samples: usize,
    pub z2_unit_sum: Option<Vec<f32>>,
    pub extremes: BTreeMap<i64, (f32, f32)>,
}

/// The local extreme cosines of a shard's predictions against the memories, per class whose
/// prediction memory is not empty: [1] tensors (with gradient when `pred` has one).
fn local_extremes(memory: &MinimaxMemory, pred: Tensor<4>, labels: &[i64]) -> BTreeMap<i64, (Tensor<1>, Tensor<1>)> {
    let device = pred.device();
    let n = pred.dims()[0];
    let flat = pred.reshape([n as i64, -1]);
    let mut out = BTreeMap::new();
    for (c, idx) in class_indices(labels) {
        let Some((real, pseudo)) = memory.rows(c) else { continue };
        // The memories live on the training (autodiff) device; a no-grad pass reads plain copies.
        let (real, pseudo) = if device.is_autodiff() { (real, pseudo) } else { (real.inner(), pseudo.inner()) };
        let mine = flat.clone().select(0, Tensor::<1, Int>::from_ints(idx.as_slice(), &device));
        let lo = pairwise_cosine(mine.clone(), real).min().reshape([1]);
        let hi = pairwise_cosine(mine, pseudo).max().reshape([1]);
        out.insert(c, (lo, hi));
    }
    out
}

/// A shard's part of the exchange, without gradients (`model` may live on an autodiff device:
/// its validation snapshot is used).
pub fn summarize_shard(model: &DiT, diffusion: &GaussianDiffusion, memory: Option<&MinimaxMemory>, shard: &StepBatch, cfg: &LossConfig) -> ShardSummary {
    let z2_unit_sum = cfg.im.then(|| host(&normalize_rows(reverse_ddim_step(model, diffusion, shard)).sum_dim(0).reshape([-1])));
    let extremes = match memory.filter(|_| cfg.minimax) {
        Some(memory) => {
            let (x0, noise) = (shard.x0.clone().inner(), shard.noise.clone().inner());
            let (xt, out) = noised_forward(&model.valid(), diffusion, x0, noise, shard);
            let pred = diffusion.p_mean_variance_from_output(out, xt, &shard.t, false).pred_xstart;
            local_extremes(memory, pred, &shard.labels)
                .into_iter()
                .map(|(c, (lo, hi))| (c, (lo.into_scalar::<f32>(), hi.into_scalar::<f32>())))
                .collect()
        }
        None => BTreeMap::new(),
    };
    ShardSummary { samples: shard.labels.len(), z2_unit_sum, extremes }
}

/// One shard's loss, given the exchange: `total` (the [1] tensor to run backward on) and its
/// detached terms sum over the shards to the unsharded step's (the IM term's constant 1 is
/// counted by shard 0; a Minimax term by the shard holding the class's extreme), plus its
/// predictions (detached) for the memory update.
pub struct ShardLoss {
    pub total: Tensor<1>,
    pub terms: StepLoss,
    pub pred: Tensor<4>,
}

pub fn shard_loss(model: &DiT, diffusion: &GaussianDiffusion, memory: Option<&MinimaxMemory>, shard: &StepBatch, index: usize, ex: &Exchange, cfg: &LossConfig) -> ShardLoss {
    let device = shard.x0.device();
    let b = ex.batch as f64;
    let (xt, out) = noised_forward(model, diffusion, shard.x0.clone(), shard.noise.clone(), shard);
    let terms = diffusion.training_losses_from_output(out.clone(), shard.x0.clone(), xt.clone(), &shard.t, shard.noise.clone());
    let mut total = terms.loss.sum() / b;
    let zero = || Tensor::<1>::zeros([1], &device);
    let (mse, vb) = (terms.mse.sum().reshape([1]) / b, terms.vb.sum().reshape([1]) / b);
    let pmv = (cfg.im || cfg.minimax).then(|| diffusion.p_mean_variance_from_output(out, xt, &shard.t, false));
    let im = cfg.im.then(|| {
        let m2 = ex.z2_unit_sum.as_ref().expect("the IM term needs the exchanged z2 sum");
        let m2 = Tensor::<1>::from_floats(m2.as_slice(), &device).div_scalar(b).reshape([-1, 1]); // [D, 1]
        let u1 = normalize_rows(pmv.as_ref().expect("computed").mean.clone()); // [n, D]
        let term = u1.matmul(m2).sum().reshape([1]).mul_scalar(-cfg.im_lambda / b);
        total = total.clone() + term.clone();
        term.detach().add_scalar(if index == 0 { 1.0 } else { 0.0 })
    });
    let pred = pmv.map(|p| p.pred_xstart);
    let (mut pos, mut neg) = (zero(), zero());
    if let (true, Some(memory), Some(pred)) = (cfg.minimax, memory, &pred) {
        let k = ex.classes as f64;
        for (c, (lo, hi)) in local_extremes(memory, pred.clone(), &shard.labels) {
            let Some(&((_, lo_at), (_, hi_at))) = ex.extremes.get(&c) else { continue };
            if lo_at == index {
                let term = lo.neg().add_scalar(1.0).mul_scalar(cfg.lambda_pos / k);
                pos = pos + term.clone().detach();
                total = total + term;
            }
            if hi_at == index {
                let term = hi.mul_scalar(cfg.lambda_neg / k);
                neg = neg + term.clone().detach();
                total = total + term;
            }
        }
    }
    let (pos, neg) = (cfg.minimax.then_some(pos), cfg.minimax.then_some(neg));
    let (mse, vb) = (mse.detach(), vb.detach());
    let sum = [im.clone(), pos.clone(), neg.clone()].into_iter().flatten().fold(mse.clone() + vb.clone(), |t, x| t + x);
    let terms = StepLoss { total: sum, mse, vb, im, pos, neg };
    let pred = pred.map(|p| p.detach()).unwrap_or_else(|| shard.x0.clone().detach());
    ShardLoss { total, terms, pred }
}

/// The whole step on one device, `shards` shards in turn: the summed gradients and the step's
/// loss terms (as the unsharded step reports them; `total` carries no graph). Updates `memory`
/// with the whole batch afterwards.
pub fn accumulated_step_grads(model: &DiT, diffusion: &GaussianDiffusion, mut memory: Option<&mut MinimaxMemory>, batch: &StepBatch, cfg: &LossConfig, shards: usize) -> (GradientsParams, StepLoss) {
    let parts: Vec<StepBatch> = shard_ranges(batch.labels.len(), shards).into_iter().map(|r| shard_batch(batch, r)).collect();
    let mut ex = Exchange { classes: batch.labels.iter().collect::<BTreeSet<_>>().len(), ..Exchange::default() };
    for (i, p) in parts.iter().enumerate() {
        ex.merge(i, summarize_shard(model, diffusion, memory.as_deref(), p, cfg));
    }
    let mut acc = GradientsAccumulator::<DiT>::new();
    let mut sum: Option<StepLoss> = None;
    let mut preds = Vec::with_capacity(parts.len());
    for (i, p) in parts.iter().enumerate() {
        let loss = shard_loss(model, diffusion, memory.as_deref(), p, i, &ex, cfg);
        acc.accumulate(model, GradientsParams::from_grads(loss.total.backward(), model));
        let add = |a: Option<Tensor<1>>, b: Option<Tensor<1>>| a.zip(b).map(|(a, b)| a + b);
        sum = Some(match sum {
            None => loss.terms,
            Some(s) => StepLoss { total: s.total + loss.terms.total, mse: s.mse + loss.terms.mse, vb: s.vb + loss.terms.vb, im: add(s.im, loss.terms.im), pos: add(s.pos, loss.terms.pos), neg: add(s.neg, loss.terms.neg) },
        });
        preds.push(loss.pred);
    }
    let loss = sum.expect("at least one shard");
    if let (true, Some(memory)) = (cfg.minimax, memory.as_deref_mut()) {
        memory.push_batch(batch.x0.clone(), Tensor::cat(preds, 0), &batch.labels);
    }
    (acc.grads(), loss)
}

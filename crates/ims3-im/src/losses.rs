//! The terms IMS3's `train_dit.py` adds to the diffusion loss (`mse + vb`):
//!
//! ```text
//! total = mse + vb + pos + neg + im
//! im  = 1 - lambda_match * mean_{i,j} cos(z1_i, z2_j)                    (all B x B pairs)
//! pos = sum_c lambda_pos / |classes| * (1 - min cos(x0_hat[y == c], real_memory[c]))
//! neg = sum_c lambda_neg / |classes| * max cos(x0_hat[y == c], pseudo_memory[c])
//! ```
//!
//! - `z1`: the posterior mean `q_posterior_mean(x0_hat(x_t), x_t, t)` with the unclipped
//!   `x0_hat` (carries the gradient); `z2`: one `ddim_reverse_sample` step of the network fed
//!   the clean latent x0 as x_t, clipped, without gradient. Both flattened per sample and
//!   L2-normalised (`F.normalize`, eps 1e-12).
//! - `x0_hat`: the network's x0 prediction at x_t (`training_losses`' "output"), with gradient.
//! - Memories (Minimax): per class, FIFO of the last [`MEMORY_SIZE`] real latents and detached
//!   predictions; a class seen for the first time contributes no term; memories are updated
//!   after the terms are computed.

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use burn::prelude::*;

/// `--lambda_match` of IMS3's run.sh.
pub const IM_LAMBDA: f64 = 0.002;
/// Minimax representativeness weight.
pub const LAMBDA_POS: f64 = 0.002;
/// Minimax diversity weight.
pub const LAMBDA_NEG: f64 = 0.008;
/// Minimax memory size per class.
pub const MEMORY_SIZE: usize = 64;

/// `cosine_similarity(a, b)` of train_dit.py: `[N, D] x [M, D] -> [N, M]`, dot products over
/// the product of the norms (no epsilon).
pub fn pairwise_cosine(a: Tensor<2>, b: Tensor<2>) -> Tensor<2> {
    let na = a.clone().powi_scalar(2).sum_dim(1).sqrt(); // [N, 1]
    let nb = b.clone().powi_scalar(2).sum_dim(1).sqrt().transpose(); // [1, M]
    a.matmul(b.transpose()) / (na * nb)
}

/// `F.normalize(x.flatten(1), dim=1)`: rows scaled to unit norm, norms floored at 1e-12.
pub(crate) fn normalize_rows(x: Tensor<4>) -> Tensor<2> {
    let n = x.dims()[0];
    let x = x.reshape([n as i64, -1]);
    let norm = x.clone().powi_scalar(2).sum_dim(1).sqrt().clamp_min(1e-12);
    x / norm
}

/// The samples of each class of `classes`, in batch order (classes in label order).
pub(crate) fn class_indices(classes: &[i64]) -> BTreeMap<i64, Vec<i64>> {
    let mut m: BTreeMap<i64, Vec<i64>> = BTreeMap::new();
    for (i, &c) in classes.iter().enumerate() {
        m.entry(c).or_default().push(i as i64);
    }
    m
}

/// The IM term as the reference adds it: `1 - lambda * mean cos(z1_i, z2_j)` over all pairs.
/// `z2` is detached here whatever the caller passed; the constant 1 does not train.
pub fn im_loss(z1: Tensor<4>, z2: Tensor<4>, lambda: f64) -> Tensor<1> {
    let cos = pairwise_cosine(normalize_rows(z1), normalize_rows(z2.detach()));
    (cos.mean() * lambda).neg() + 1.0
}

/// Minimax's per-class memories of real latents and of past predictions.
#[derive(Clone, Debug)]
pub struct MinimaxMemory {
    pub size: usize,
    real: BTreeMap<i64, VecDeque<Tensor<1>>>,
    pseudo: BTreeMap<i64, VecDeque<Tensor<1>>>,
}

impl MinimaxMemory {
    pub fn new(size: usize) -> Self {
        Self { size, real: BTreeMap::new(), pseudo: BTreeMap::new() }
    }

    /// Entries held for `class`: (real, pseudo).
    pub fn len(&self, class: i64) -> (usize, usize) {
        (self.real.get(&class).map_or(0, VecDeque::len), self.pseudo.get(&class).map_or(0, VecDeque::len))
    }

    /// The memories as host rows, for checkpoints: class -> (real rows, pseudo rows), oldest
    /// first, each row a flattened latent.
    pub fn snapshot(&self) -> BTreeMap<i64, (Vec<Vec<f32>>, Vec<Vec<f32>>)> {
        let rows = |q: Option<&VecDeque<Tensor<1>>>| -> Vec<Vec<f32>> {
            q.map(|q| q.iter().map(|t| t.clone().into_data().convert::<f32>().try_to_vec::<f32>().expect("f32 rows")).collect()).unwrap_or_default()
        };
        let classes: BTreeSet<i64> = self.real.keys().chain(self.pseudo.keys()).copied().collect();
        classes.into_iter().map(|c| (c, (rows(self.real.get(&c)), rows(self.pseudo.get(&c))))).collect()
    }

    /// The inverse of [`snapshot`](Self::snapshot).
    pub fn restore(size: usize, snap: &BTreeMap<i64, (Vec<Vec<f32>>, Vec<Vec<f32>>)>, device: &Device) -> Self {
        let mut m = Self::new(size);
        for (&c, (real, pseudo)) in snap {
            let q = |rows: &Vec<Vec<f32>>| rows.iter().map(|r| Tensor::<1>::from_floats(r.as_slice(), device)).collect::<VecDeque<_>>();
            m.real.insert(c, q(real));
            m.pseudo.insert(c, q(pseudo));
        }
        m
    }

    /// The memories of `class` stacked, (real [m, D], predictions [m', D]), when it has
    /// predictions already (a class seen for the first time gets no Minimax terms).
    pub fn rows(&self, class: i64) -> Option<(Tensor<2>, Tensor<2>)> {
        let pseudo = self.pseudo.get(&class).filter(|m| !m.is_empty())?;
        let real = Tensor::stack::<2>(self.real[&class].iter().cloned().collect(), 0);
        Some((real, Tensor::stack::<2>(pseudo.iter().cloned().collect(), 0)))
    }

    /// The representativeness and diversity terms of one batch, then the memory update.
    /// `x0`: real latents [B, C, H, W]; `pred`: the x0 predictions [B, C, H, W] (with
    /// gradient); `classes`: the class of each sample (the reference groups by the folder
    /// label). Returns `(pos, neg)`, each [1], already weighted and divided by the number of
    /// classes in the batch.
    pub fn terms(&mut self, x0: Tensor<4>, pred: Tensor<4>, classes: &[i64], lambda_pos: f64, lambda_neg: f64) -> (Tensor<1>, Tensor<1>) {
        let device = pred.device();
        let b = pred.dims()[0];
        assert_eq!(classes.len(), b, "one class per sample");
        let flat_pred = pred.clone().reshape([b as i64, -1]); // [B, D]
        let per_class = class_indices(classes);
        let k = per_class.len() as f64;
        let mut pos = Tensor::<1>::zeros([1], &device);
        let mut neg = Tensor::<1>::zeros([1], &device);
        for (c, idx) in per_class {
            let mine = flat_pred.clone().select(0, Tensor::<1, Int>::from_ints(idx.as_slice(), &device)); // [n, D]
            if let Some((real_mem, pseudo_mem)) = self.rows(c) {
                let rep = pairwise_cosine(mine.clone(), real_mem).min().neg() + 1.0;
                let div = pairwise_cosine(mine, pseudo_mem).max();
                pos = pos + rep.reshape([1]) * (lambda_pos / k);
                neg = neg + div.reshape([1]) * (lambda_neg / k);
            }
        }
        self.push_batch(x0, pred, classes);
        (pos, neg)
    }

    /// The memory update after a batch: per class in label order, its real latents and its
    /// (detached) predictions in batch order, the oldest dropped past `size`.
    pub fn push_batch(&mut self, x0: Tensor<4>, pred: Tensor<4>, classes: &[i64]) {
        let device = pred.device();
        let b = pred.dims()[0];
        let flat_pred = pred.detach().reshape([b as i64, -1]);
        let flat_real = x0.detach().reshape([b as i64, -1]);
        for (c, idx) in class_indices(classes) {
            let rows = Tensor::<1, Int>::from_ints(idx.as_slice(), &device);
            for (memory, new) in [(&mut self.real, flat_real.clone().select(0, rows.clone())), (&mut self.pseudo, flat_pred.clone().select(0, rows))] {
                let q = memory.entry(c).or_default();
                for i in 0..idx.len() {
                    q.push_back(new.clone().narrow(0, i, 1).reshape([-1]));
                }
                while q.len() > self.size {
                    q.pop_front();
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t4(v: &[f32], shape: [usize; 4], device: &Device) -> Tensor<4> {
        Tensor::<1>::from_floats(v, device).reshape(shape)
    }

    fn scalar(t: Tensor<1>) -> f32 {
        t.into_scalar::<f32>()
    }

    #[test]
    fn im_uses_all_pairs_not_only_the_diagonal() {
        let device = Device::flex();
        // z1 = z2 = [e1, e2]: diagonal cosines 1, off-diagonal 0, mean 0.5.
        let z = t4(&[1.0, 0.0, 0.0, 2.0], [2, 2, 1, 1], &device);
        let v = scalar(im_loss(z.clone(), z, 1.0));
        assert!((v - 0.5).abs() < 1e-7, "{v}");
    }

    #[test]
    fn im_gradient_matches_finite_differences() {
        let _one_graph_at_a_time = ims3_util::autodiff_guard();
        let device = Device::flex().autodiff();
        let v1: Vec<f32> = (0..24).map(|i| ((i * 7 % 11) as f32 - 5.0) / 3.0).collect();
        let v2: Vec<f32> = (0..24).map(|i| ((i * 5 % 13) as f32 - 6.0) / 4.0).collect();
        let shape = [3, 2, 2, 2];
        let z1 = t4(&v1, shape, &device).require_grad();
        // z2 asks for a gradient but im_loss detaches it: the target is not trained.
        let z2 = t4(&v2, shape, &device).require_grad();
        let grads = im_loss(z1.clone(), z2.clone(), IM_LAMBDA).backward();
        let g: Vec<f32> = z1.grad(&grads).unwrap().into_data().convert::<f32>().try_to_vec::<f32>().unwrap();
        let y: Vec<f64> = v2.iter().map(|&v| v as f64).collect();
        let f = |x: &[f64]| -> f64 {
            let (b, d) = (3, 8);
            let norm = |r: &[f64]| r.iter().map(|v| v * v).sum::<f64>().sqrt();
            let mut s = 0.0;
            for i in 0..b {
                for j in 0..b {
                    let (xi, yj) = (&x[i * d..(i + 1) * d], &y[j * d..(j + 1) * d]);
                    s += xi.iter().zip(yj).map(|(p, q)| p * q).sum::<f64>() / (norm(xi) * norm(yj));
                }
            }
            1.0 - IM_LAMBDA * s / (b * b) as f64
        };
        let x: Vec<f64> = v1.iter().map(|&v| v as f64).collect();
        let h = 1e-4;
        for k in 0..24 {
            let (mut p, mut m) = (x.clone(), x.clone());
            p[k] += h;
            m[k] -= h;
            let fd = (f(&p) - f(&m)) / (2.0 * h);
            assert!((g[k] as f64 - fd).abs() < 1e-6 + 1e-3 * fd.abs(), "component {k}: autodiff {} vs finite difference {fd}", g[k]);
        }
        assert!(z2.grad(&grads).is_none(), "the reverse-DDIM target must not receive a gradient");
    }

    #[test]
    fn minimax_terms_follow_the_reference() {
        let device = Device::flex();
        let mut mem = MinimaxMemory::new(2);
        // Batch 1: classes [7, 7, 9]; nothing in memory yet -> both terms 0.
        let x0 = t4(&[1.0, 0.0, 0.0, 1.0, 1.0, 1.0], [3, 2, 1, 1], &device);
        let pred = t4(&[1.0, 1.0, -1.0, 1.0, 0.0, 1.0], [3, 2, 1, 1], &device);
        let (p, n) = mem.terms(x0, pred, &[7, 7, 9], LAMBDA_POS, LAMBDA_NEG);
        assert_eq!((scalar(p), scalar(n)), (0.0, 0.0));
        assert_eq!(mem.len(7), (2, 2));
        assert_eq!(mem.len(9), (1, 1));
        // Batch 2: one sample of class 7, prediction [1, 0].
        // real memory of 7: [1,0], [0,1] -> cos 1, 0 -> pos = 1 - min = 1.
        // pseudo memory of 7: [1,1], [-1,1] -> cos 1/sqrt2, -1/sqrt2 -> neg = max = 1/sqrt2.
        // One class in the batch, so no division beyond the weights.
        let x0 = t4(&[0.5, 0.5], [1, 2, 1, 1], &device);
        let pred = t4(&[1.0, 0.0], [1, 2, 1, 1], &device);
        let (p, n) = mem.terms(x0, pred, &[7], LAMBDA_POS, LAMBDA_NEG);
        assert!((scalar(p) as f64 - LAMBDA_POS).abs() < 1e-9);
        assert!((scalar(n) as f64 - LAMBDA_NEG / 2f64.sqrt()).abs() < 1e-9);
        // FIFO of size 2: the oldest entries of class 7 were dropped.
        assert_eq!(mem.len(7), (2, 2));
    }

    #[test]
    fn minimax_gradient_reaches_the_prediction_only() {
        let _one_graph_at_a_time = ims3_util::autodiff_guard();
        let device = Device::flex().autodiff();
        let mut mem = MinimaxMemory::new(MEMORY_SIZE);
        let x0 = t4(&[1.0, 0.0, 0.5, 0.5], [2, 2, 1, 1], &device);
        let first = t4(&[0.3, 0.7, 0.9, 0.1], [2, 2, 1, 1], &device);
        let _ = mem.terms(x0.clone(), first, &[1, 1], LAMBDA_POS, LAMBDA_NEG);
        let pred = t4(&[0.2, 0.8, 0.6, 0.4], [2, 2, 1, 1], &device).require_grad();
        let (p, n) = mem.terms(x0, pred.clone(), &[1, 1], LAMBDA_POS, LAMBDA_NEG);
        let grads = (p + n).backward();
        let g: Vec<f32> = pred.grad(&grads).unwrap().into_data().convert::<f32>().try_to_vec::<f32>().unwrap();
        assert!(g.iter().any(|v| *v != 0.0));
    }
}

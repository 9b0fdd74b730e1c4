//! The Inversion-Matching term of IMS3 (REFERENCE section 3), on its two inputs.
//!
//! - `z1`: the posterior mean `q_posterior_mean(x0_hat(x_t), x_t, t)` with the unclipped
//!   `x0_hat` of the network at `x_t`; carries the gradient ([`GaussianDiffusion::p_mean_variance_from_output`]
//!   with `clip_denoised = false` gives it as `mean`);
//! - `z2`: `ddim_reverse_sample` of the network fed the clean latent `x0` as if it were `x_t`,
//!   with `clip_denoised = true`, computed without gradient
//!   ([`GaussianDiffusion::ddim_reverse_sample`]).
//!
//! The term compares every prediction with every target: the mean cosine similarity over all
//! B x B pairs (not only the diagonal), each latent flattened to one vector.
//!
//! [`GaussianDiffusion::p_mean_variance_from_output`]: crate::GaussianDiffusion::p_mean_variance_from_output
//! [`GaussianDiffusion::ddim_reverse_sample`]: crate::GaussianDiffusion::ddim_reverse_sample

use burn::prelude::*;

/// IMS3's weight of the IM term.
pub const IM_LAMBDA: f64 = 0.002;

/// Mean cosine similarity over all pairs `(z1_i, z2_j)`, i, j in 0..B: a scalar [1].
/// Norms are floored at 1e-8 as `F.cosine_similarity` does.
pub fn mean_pairwise_cosine(z1: Tensor<4>, z2: Tensor<4>) -> Tensor<1> {
    let b = z1.dims()[0];
    let a = z1.reshape([b as i64, -1]); // [B, D]
    let c = z2.reshape([b as i64, -1]); // [B, D]
    let na = a.clone().powi_scalar(2).sum_dim(1).sqrt().clamp_min(1e-8); // [B, 1]
    let nc = c.clone().powi_scalar(2).sum_dim(1).sqrt().clamp_min(1e-8); // [B, 1]
    let cos = (a / na).matmul((c / nc).transpose()); // [B, B]
    cos.mean().reshape([1])
}

/// The IM loss as the reference adds it to the total: `1 - lambda * mean cos(z1_i, z2_j)`.
/// Its gradient is `-lambda` times that of the mean cosine (the constant does not train).
/// `z2` is detached here, whatever the caller passed.
pub fn im_loss(z1: Tensor<4>, z2: Tensor<4>, lambda: f64) -> Tensor<1> {
    (mean_pairwise_cosine(z1, z2.detach()) * lambda).neg() + 1.0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn data(v: &[f32], shape: [usize; 4], device: &Device) -> Tensor<4> {
        Tensor::<1>::from_floats(v, device).reshape(shape)
    }

    #[test]
    fn all_pairs_not_only_the_diagonal() {
        let device = Device::flex();
        // z1 = [e1, e2], z2 = [e1, e2]: diagonal cosines 1, off-diagonal 0 -> mean 0.5 (the
        // diagonal alone would give 1).
        let z1 = data(&[1.0, 0.0, 0.0, 1.0], [2, 2, 1, 1], &device);
        let m = mean_pairwise_cosine(z1.clone(), z1).into_scalar::<f32>();
        assert!((m - 0.5).abs() < 1e-7, "{m}");
    }

    #[test]
    fn gradient_matches_finite_differences() {
        let device = Device::flex().autodiff();
        let v1: Vec<f32> = (0..24).map(|i| ((i * 7 % 11) as f32 - 5.0) / 3.0).collect();
        let v2: Vec<f32> = (0..24).map(|i| ((i * 5 % 13) as f32 - 6.0) / 4.0).collect();
        let shape = [3, 2, 2, 2];
        let z1 = data(&v1, shape, &device).require_grad();
        // z2 asks for a gradient but im_loss detaches it: the target is not trained.
        let z2 = data(&v2, shape, &device).require_grad();
        let loss = im_loss(z1.clone(), z2.clone(), IM_LAMBDA);
        let grads = loss.backward();
        let g: Vec<f32> = z1.grad(&grads).unwrap().into_data().convert::<f32>().try_to_vec::<f32>().unwrap();
        // Central differences in f64 on the same formula.
        let f = |x: &[f64]| -> f64 {
            let (b, d) = (3, 8);
            let y: Vec<f64> = v2.iter().map(|&v| v as f64).collect();
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
}

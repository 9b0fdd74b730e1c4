//! adaLN-Zero's elementwise steps around each DiT sub-block (attention, MLP) and the final
//! layer, shapes [N, T, D] with per-image conditioning vectors [N, D]:
//!
//! ```text
//! modulate(LN(x), shift, scale) = (x - mean) / sqrt(var + 1e-6) * (1 + scale) + shift
//!                                 mean, var (biased) over D; LayerNorm without affine, eps 1e-6
//! gated residual                = x + gamma * (gate * h)
//!                                 h the sub-block's output, gamma [D] the block's Difffit scale
//!                                 (absent: x + gate * h)
//! ```
//!
//! As tensor ops these are about fifteen passes over [N, T, D] per sub-block, each of which the
//! CPU backend runs on one thread; between the matrix products of 50-step sampling they kept it
//! from gaining on a second thread (`benches/NOTES-cpu.md`). On Flex in f32 each step is one pass
//! over the rows instead, split over rayon's threads, on plain and autodiff devices:
//! - the gated residual's forward gives the composite's bits (the same f32 operations in the
//!   same order);
//! - the modulated LayerNorm sums each row's statistics in f64 (the composite sums in f32), so
//!   it differs from the composite by the composite's f32 rounding
//!   (`fused_adaln_matches_the_composite`: within 1e-4 of the larger of the value and 1, at rows
//!   offset by up to 20 with a spread of 3);
//! - under autodiff each has its own backward step (`fused_adaln_gradients_match_the_composite`):
//!
//! ```text
//! LN-modulate: g = dy (1 + scale), dx = (g - mean_D(g) - xhat mean_D(g xhat)) / std,
//!              dshift = sum_T dy, dscale = sum_T dy xhat          (xhat = (x - mean) / std)
//! gated:       dx = dy, dh = dy gate gamma, dgate = sum_T dy gamma h, dgamma = sum_(N,T) dy gate h
//! ```
//!
//! Any other backend or dtype (bf16 sampling on a GPU) runs the composite.

use burn::prelude::*;
use burn::tensor::FloatDType;

/// `modulate(layer_norm_no_affine(x), shift, scale)`: x [N, T, D], shift and scale [N, D]
/// broadcast over the tokens -> [N, T, D]. The statistics are computed in f32 whatever x's
/// dtype (as PyTorch's autocast does); the result is in x's dtype.
pub fn ln_modulate(x: Tensor<3>, shift: Tensor<2>, scale: Tensor<2>) -> Tensor<3> {
    #[cfg(feature = "flex")]
    if let Some(y) = flex::ln_modulate(&x, &shift, &scale) {
        return y;
    }
    modulate(layer_norm_no_affine(x), shift, scale)
}

/// `x + gamma * (gate * h)`: x, h [N, T, D], gate [N, D] broadcast over the tokens, gamma [D]
/// (in h's dtype) or absent -> [N, T, D].
pub fn gated_residual(x: Tensor<3>, h: Tensor<3>, gate: Tensor<2>, gamma: Option<Tensor<1>>) -> Tensor<3> {
    #[cfg(feature = "flex")]
    if let Some(y) = flex::gated_residual(&x, &h, &gate, gamma.as_ref()) {
        return y;
    }
    gated_residual_composite(x, h, gate, gamma)
}

/// [`gated_residual`] as tensor ops (any backend, dtype, autodiff): the reference of the fused
/// passes.
fn gated_residual_composite(x: Tensor<3>, h: Tensor<3>, gate: Tensor<2>, gamma: Option<Tensor<1>>) -> Tensor<3> {
    let gated = gate.unsqueeze_dim::<3>(1) * h;
    x + match gamma {
        Some(g) => gated * g.unsqueeze_dims::<3>(&[0, 1]),
        None => gated,
    }
}

/// `x * (1 + scale) + shift`, with `shift`, `scale`: [N, D] broadcast over tokens.
pub fn modulate(x: Tensor<3>, shift: Tensor<2>, scale: Tensor<2>) -> Tensor<3> {
    x * (scale.unsqueeze_dim::<3>(1) + 1.0) + shift.unsqueeze_dim::<3>(1)
}

/// LayerNorm over the last dim without affine parameters (eps 1e-6), as `nn.LayerNorm(D,
/// elementwise_affine=False, eps=1e-6)`.
/// Statistics and normalisation in f32 whatever the input's dtype; the result in the input's.
pub fn layer_norm_no_affine(x: Tensor<3>) -> Tensor<3> {
    let dtype = x.dtype();
    let x = x.cast(FloatDType::F32);
    let (var, mean) = x.clone().var_mean_bias(2);
    ((x - mean) / (var + 1e-6).sqrt()).cast(dtype)
}

#[cfg(feature = "flex")]
mod flex {
    use crate::flex_tensor::{f32_contiguous, slice, tensor};
    use burn::backend::autodiff::checkpoint::base::Checkpointer;
    use burn::backend::autodiff::checkpoint::strategy::{BalancedCheckpointing, CheckpointStrategy, NoCheckpointing};
    use burn::backend::autodiff::grads::Gradients;
    use burn::backend::autodiff::ops::{Backward, NodeGuard, Ops, OpsKind};
    use burn::backend::flex::FlexTensor;
    use burn::backend::tensor::FloatTensor;
    use burn::backend::{Autodiff, Flex, GradientCheckpointingStrategy};
    use burn::prelude::*;
    use rayon::prelude::*;
    use std::mem::MaybeUninit;

    /// Fewest values for which a pass is split over rayon's threads (as the fused GELU).
    const PARALLEL_MIN: usize = 1 << 15;
    /// Values per task when split.
    const TASK_VALUES: usize = 1 << 13;

    fn parallel(len: usize) -> bool {
        len >= PARALLEL_MIN && rayon::current_num_threads() > 1
    }

    /// A Flex f32 tensor (the primitive under an autodiff one included) as a contiguous primitive.
    fn primitive<const D: usize>(t: &Tensor<D>) -> Option<FlexTensor> {
        f32_contiguous(t.clone().try_into_primitive::<Flex>().ok()?)
    }

    /// `f(r, row r of out)` for every row of a new [rows * d] buffer, returning each row's
    /// `S` in row order; on rayon's threads for large inputs.
    fn by_rows<S: Send>(rows: usize, d: usize, f: impl Fn(usize, &mut [MaybeUninit<f32>]) -> S + Sync) -> (Vec<f32>, Vec<S>) {
        let len = rows * d;
        let mut out = Vec::with_capacity(len);
        let dst = &mut out.spare_capacity_mut()[..len];
        let per = if d == 0 { Vec::new() } else if !parallel(len) {
            dst.chunks_mut(d).enumerate().map(|(r, row)| f(r, row)).collect()
        } else {
            let per_task = (TASK_VALUES / d).max(1);
            let blocks: Vec<Vec<S>> = dst
                .par_chunks_mut(per_task * d)
                .enumerate()
                .map(|(k, block)| block.chunks_mut(d).enumerate().map(|(i, row)| f(k * per_task + i, row)).collect())
                .collect();
            blocks.into_iter().flatten().collect()
        };
        // SAFETY: the rows cover 0..len and every `f` call writes each value of its row.
        unsafe { out.set_len(len) };
        (out, per)
    }

    /// Sums in f64 over 8 lanes added in a fixed order: one running sum is one dependent add
    /// per value (latency-bound); lanes let the loop vectorise.
    #[inline(always)]
    fn sum(n: usize, f: impl Fn(usize) -> f64) -> f64 {
        let mut acc = [0f64; 8];
        let whole = n - n % 8;
        for j in (0..whole).step_by(8) {
            for (l, a) in acc.iter_mut().enumerate() {
                *a += f(j + l);
            }
        }
        acc.iter().sum::<f64>() + (whole..n).map(f).sum::<f64>()
    }

    /// A row's mean and sqrt(var + 1e-6) (biased variance, two passes in f64).
    fn stats(x: &[f32]) -> (f32, f32) {
        let n = x.len() as f64;
        let mean = sum(x.len(), |j| x[j] as f64) / n;
        let var = sum(x.len(), |j| (x[j] as f64 - mean) * (x[j] as f64 - mean)) / n;
        (mean as f32, (var as f32 + 1e-6).sqrt())
    }

    /// The normalised value: the forward's expression, shared with the backward so both see the
    /// same bits.
    #[inline(always)]
    fn normalised(v: f32, mean: f32, std: f32) -> f32 {
        (v - mean) / std
    }

    /// Sizes of one call: [N, T, D].
    #[derive(Clone, Copy, Debug)]
    struct Dims {
        n: usize,
        t: usize,
        d: usize,
    }

    /// y and each row's (mean, std).
    fn ln_modulate_forward(g: Dims, x: &[f32], shift: &[f32], scale: &[f32]) -> (Vec<f32>, Vec<(f32, f32)>) {
        let Dims { t, d, .. } = g;
        by_rows(g.n * t, d, |r, dst| {
            let row = &x[r * d..(r + 1) * d];
            let img = r / t;
            let (shift, scale) = (&shift[img * d..(img + 1) * d], &scale[img * d..(img + 1) * d]);
            let (mean, std) = stats(row);
            for (j, (o, &v)) in dst.iter_mut().zip(row).enumerate() {
                o.write(normalised(v, mean, std) * (scale[j] + 1.0) + shift[j]);
            }
            (mean, std)
        })
    }

    /// `f(image, rows of that image in a, in b, in out)` over the images, each image's result in
    /// image order; on rayon's threads for large inputs.
    fn by_images<R: Send>(g: Dims, a: &[f32], b: &[f32], out: &mut [f32], f: impl Fn(usize, &[f32], &[f32], &mut [f32]) -> R + Sync) -> Vec<R> {
        let m = g.t * g.d;
        if !parallel(a.len()) || g.n < 2 {
            a.chunks(m).zip(b.chunks(m)).zip(out.chunks_mut(m)).enumerate().map(|(i, ((a, b), o))| f(i, a, b, o)).collect()
        } else {
            a.par_chunks(m).zip(b.par_chunks(m)).zip(out.par_chunks_mut(m)).enumerate().map(|(i, ((a, b), o))| f(i, a, b, o)).collect()
        }
    }

    /// (dx, dshift, dscale) of the modulated LayerNorm, image by image:
    /// dshift = sum_t dy, dscale = sum_t dy xhat, and per row with g = dy (1 + scale),
    /// dx = (g - mean(g) - xhat mean(g xhat)) / std.
    fn ln_modulate_backward(g: Dims, x: &[f32], scale: &[f32], stats: &[(f32, f32)], dy: &[f32]) -> (Vec<f32>, Vec<f32>, Vec<f32>) {
        let Dims { t, d, .. } = g;
        let mut dx = vec![0f32; x.len()];
        let per_image = by_images(g, x, dy, &mut dx, |img, x, dy, dx| {
            let scale = &scale[img * d..(img + 1) * d];
            let (mut dshift, mut dscale) = (vec![0f64; d], vec![0f64; d]);
            let (mut xhat, mut gr) = (vec![0f32; d], vec![0f32; d]);
            for k in 0..t {
                let (mean, std) = stats[img * t + k];
                let (xr, dyr, dxr) = (&x[k * d..(k + 1) * d], &dy[k * d..(k + 1) * d], &mut dx[k * d..(k + 1) * d]);
                for j in 0..d {
                    xhat[j] = normalised(xr[j], mean, std);
                    gr[j] = dyr[j] * (scale[j] + 1.0);
                    dshift[j] += dyr[j] as f64;
                    dscale[j] += dyr[j] as f64 * xhat[j] as f64;
                }
                let m1 = (sum(d, |j| gr[j] as f64) / d as f64) as f32;
                let m2 = (sum(d, |j| gr[j] as f64 * xhat[j] as f64) / d as f64) as f32;
                for j in 0..d {
                    dxr[j] = (gr[j] - m1 - xhat[j] * m2) / std;
                }
            }
            (dshift, dscale)
        });
        let (mut dshift, mut dscale) = (Vec::with_capacity(g.n * d), Vec::with_capacity(g.n * d));
        for (s, c) in per_image {
            dshift.extend(s.iter().map(|&v| v as f32));
            dscale.extend(c.iter().map(|&v| v as f32));
        }
        (dx, dshift, dscale)
    }

    /// x + gamma * (gate * h), in the composite's order of operations.
    fn gated_forward(g: Dims, x: &[f32], h: &[f32], gate: &[f32], gamma: Option<&[f32]>) -> Vec<f32> {
        let Dims { t, d, .. } = g;
        by_rows(g.n * t, d, |r, dst| {
            let (row, hr) = (&x[r * d..(r + 1) * d], &h[r * d..(r + 1) * d]);
            let gate = &gate[(r / t) * d..(r / t + 1) * d];
            match gamma {
                Some(gm) => (0..d).for_each(|j| {
                    dst[j].write(row[j] + gate[j] * hr[j] * gm[j]);
                }),
                None => (0..d).for_each(|j| {
                    dst[j].write(row[j] + gate[j] * hr[j]);
                }),
            }
        })
        .0
    }

    /// (dh, dgate, dgamma) of the gated residual (dx is dy): dh = dy gate gamma,
    /// dgate = sum_t dy gamma h, dgamma = sum_(n, t) dy gate h (gamma = 1 when absent).
    fn gated_backward(g: Dims, h: &[f32], gate: &[f32], gamma: Option<&[f32]>, dy: &[f32]) -> (Vec<f32>, Vec<f32>, Vec<f32>) {
        let Dims { t, d, .. } = g;
        let one = vec![1f32; d];
        let gm = gamma.unwrap_or(&one);
        let mut dh = vec![0f32; h.len()];
        let per_image = by_images(g, h, dy, &mut dh, |img, h, dy, dh| {
            let gate = &gate[img * d..(img + 1) * d];
            let (mut dgate, mut dgamma) = (vec![0f64; d], vec![0f64; d]);
            for k in 0..t {
                let (hr, dyr, dhr) = (&h[k * d..(k + 1) * d], &dy[k * d..(k + 1) * d], &mut dh[k * d..(k + 1) * d]);
                for j in 0..d {
                    dhr[j] = dyr[j] * gate[j] * gm[j];
                    let p = dyr[j] as f64 * hr[j] as f64;
                    dgate[j] += p * gm[j] as f64;
                    dgamma[j] += p * gate[j] as f64;
                }
            }
            (dgate, dgamma)
        });
        let mut dgate = Vec::with_capacity(g.n * d);
        let mut dgamma = vec![0f64; d];
        for (dg, dm) in per_image {
            dgate.extend(dg.iter().map(|&v| v as f32));
            dgamma.iter_mut().zip(&dm).for_each(|(a, b)| *a += b);
        }
        (dh, dgate, dgamma.iter().map(|&v| v as f32).collect())
    }

    /// The modulated LayerNorm's output as a node of the graph: parents (x, shift, scale).
    #[derive(Debug)]
    struct LnModulateBackward {
        g: Dims,
    }

    impl Backward<Flex, 3> for LnModulateBackward {
        /// x, scale, each row's (mean, std).
        type State = (FlexTensor, FlexTensor, Vec<(f32, f32)>);

        fn backward(self, ops: Ops<Self::State, 3>, grads: &mut Gradients, _checkpointer: &mut Checkpointer) {
            let dy = f32_contiguous(grads.consume::<Flex>(&ops.node)).expect("f32 output gradient");
            let (x, scale, stats) = ops.state;
            let Dims { n, t, d } = self.g;
            let (dx, dshift, dscale) = ln_modulate_backward(self.g, slice(&x), slice(&scale), &stats, slice(&dy));
            let [px, pshift, pscale] = ops.parents;
            for (node, v, shape) in [(px, dx, vec![n, t, d]), (pshift, dshift, vec![n, d]), (pscale, dscale, vec![n, d])] {
                if let Some(node) = node {
                    grads.register::<Flex>(node.id, tensor(v, shape));
                }
            }
        }
    }

    /// The gated residual as a node of the graph: parents (x, h, gate) or (x, h, gate, gamma).
    #[derive(Debug)]
    struct GatedBackward {
        g: Dims,
    }

    impl<const N: usize> Backward<Flex, N> for GatedBackward {
        /// h, gate, gamma.
        type State = (FlexTensor, FlexTensor, Option<FlexTensor>);

        fn backward(self, ops: Ops<Self::State, N>, grads: &mut Gradients, _checkpointer: &mut Checkpointer) {
            let dy = f32_contiguous(grads.consume::<Flex>(&ops.node)).expect("f32 output gradient");
            let (h, gate, gamma) = ops.state;
            let Dims { n, t, d } = self.g;
            let mut parents = ops.parents.into_iter();
            let (px, ph, pgate, pgamma) = (parents.next().flatten(), parents.next().flatten(), parents.next().flatten(), parents.next().flatten());
            let (dh, dgate, dgamma) = gated_backward(self.g, slice(&h), slice(&gate), gamma.as_ref().map(slice), slice(&dy));
            if let Some(node) = px {
                grads.register::<Flex>(node.id, dy);
            }
            for (node, v, shape) in [(ph, dh, vec![n, t, d]), (pgate, dgate, vec![n, d]), (pgamma, dgamma, vec![d])] {
                if let Some(node) = node {
                    grads.register::<Flex>(node.id, tensor(v, shape));
                }
            }
        }
    }

    fn record<C: CheckpointStrategy, B: Backward<Flex, N> + std::fmt::Debug, const N: usize>(
        step: B,
        nodes: [NodeGuard; N],
        state: B::State,
        y: FlexTensor,
    ) -> FloatTensor<Autodiff<Flex, C>> {
        match Backward::<Flex, N>::prepare::<C>(step, nodes).compute_bound().stateful() {
            OpsKind::Tracked(prep) => prep.finish(state, y),
            OpsKind::UnTracked(prep) => prep.finish(y),
        }
    }

    /// The autodiff paths for one checkpointing strategy (macros: burn converts a tensor to each
    /// strategy's primitive through its own trait impl, not one generic over the strategy).
    macro_rules! tracked_ln {
        ($strategy:ty, $g:expr, $x:expr, $shift:expr, $scale:expr) => {{
            type AD = Autodiff<Flex, $strategy>;
            let (xa, sha, sca) = ($x.clone().try_into_primitive::<AD>().ok()?, $shift.clone().try_into_primitive::<AD>().ok()?, $scale.clone().try_into_primitive::<AD>().ok()?);
            let (xp, shp, scp) = (f32_contiguous(xa.primitive().clone())?, f32_contiguous(sha.primitive().clone())?, f32_contiguous(sca.primitive().clone())?);
            let (y, stats) = ln_modulate_forward($g, slice(&xp), slice(&shp), slice(&scp));
            let y = tensor(y, vec![$g.n, $g.t, $g.d]);
            let out = record::<$strategy, _, 3>(LnModulateBackward { g: $g }, [xa.node(), sha.node(), sca.node()], (xp, scp, stats), y);
            Some(Tensor::from_primitive::<AD>(out))
        }};
    }

    macro_rules! tracked_gated {
        ($strategy:ty, $g:expr, $x:expr, $h:expr, $gate:expr, $gamma:expr) => {{
            type AD = Autodiff<Flex, $strategy>;
            let (xa, ha, ga) = ($x.clone().try_into_primitive::<AD>().ok()?, $h.clone().try_into_primitive::<AD>().ok()?, $gate.clone().try_into_primitive::<AD>().ok()?);
            let gma = match $gamma {
                Some(g) => Some(g.clone().try_into_primitive::<AD>().ok()?),
                None => None,
            };
            let (xp, hp, gp) = (f32_contiguous(xa.primitive().clone())?, f32_contiguous(ha.primitive().clone())?, f32_contiguous(ga.primitive().clone())?);
            let gmp = match &gma {
                Some(g) => Some(f32_contiguous(g.primitive().clone())?),
                None => None,
            };
            let y = gated_forward($g, slice(&xp), slice(&hp), slice(&gp), gmp.as_ref().map(slice));
            let y = tensor(y, vec![$g.n, $g.t, $g.d]);
            let out = match gma {
                Some(gma) => record::<$strategy, _, 4>(GatedBackward { g: $g }, [xa.node(), ha.node(), ga.node(), gma.node()], (hp, gp, gmp), y),
                None => record::<$strategy, _, 3>(GatedBackward { g: $g }, [xa.node(), ha.node(), ga.node()], (hp, gp, None), y),
            };
            Some(Tensor::from_primitive::<AD>(out))
        }};
    }

    pub(super) fn ln_modulate(x: &Tensor<3>, shift: &Tensor<2>, scale: &Tensor<2>) -> Option<Tensor<3>> {
        let [n, t, d] = x.dims();
        if shift.dims() != [n, d] || scale.dims() != [n, d] {
            return None;
        }
        let g = Dims { n, t, d };
        match x.device().gradient_checkpointing_strategy() {
            None => {
                let (xp, sh, sc) = (primitive(x)?, primitive(shift)?, primitive(scale)?);
                let (y, _) = ln_modulate_forward(g, slice(&xp), slice(&sh), slice(&sc));
                Some(Tensor::from_primitive::<Flex>(tensor(y, vec![n, t, d])))
            }
            Some(GradientCheckpointingStrategy::Disabled) => tracked_ln!(NoCheckpointing, g, x, shift, scale),
            Some(GradientCheckpointingStrategy::Balanced) => tracked_ln!(BalancedCheckpointing, g, x, shift, scale),
        }
    }

    pub(super) fn gated_residual(x: &Tensor<3>, h: &Tensor<3>, gate: &Tensor<2>, gamma: Option<&Tensor<1>>) -> Option<Tensor<3>> {
        let [n, t, d] = x.dims();
        if h.dims() != [n, t, d] || gate.dims() != [n, d] || gamma.is_some_and(|g| g.dims() != [d]) {
            return None;
        }
        let g = Dims { n, t, d };
        match x.device().gradient_checkpointing_strategy() {
            None => {
                let (xp, hp, gp) = (primitive(x)?, primitive(h)?, primitive(gate)?);
                let gm = match gamma {
                    Some(g) => Some(primitive(g)?),
                    None => None,
                };
                let y = gated_forward(g, slice(&xp), slice(&hp), slice(&gp), gm.as_ref().map(slice));
                Some(Tensor::from_primitive::<Flex>(tensor(y, vec![n, t, d])))
            }
            Some(GradientCheckpointingStrategy::Disabled) => tracked_gated!(NoCheckpointing, g, x, h, gate, gamma),
            Some(GradientCheckpointingStrategy::Balanced) => tracked_gated!(BalancedCheckpointing, g, x, h, gate, gamma),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::tensor::Distribution;

    fn values<const D: usize>(t: Tensor<D>) -> Vec<f32> {
        t.into_data().try_to_vec::<f32>().unwrap()
    }

    /// The fused passes against the composite of tensor ops, at a size below the parallel
    /// threshold and one above it, with and without the Difffit scale.
    #[test]
    fn fused_adaln_matches_the_composite() {
        let device = Device::flex();
        device.seed(11);
        // Rows with an offset and a spread of their own, as a residual stream has, and rows with
        // a variance near LayerNorm's eps (1e-6), where eps matters.
        for ([n, t, d], spread, offset) in [([3, 17, 40], 3.0, 20.0), ([4, 64, 200], 3.0, 20.0), ([2, 9, 64], 1e-3, 0.0)] {
            let x = Tensor::<3>::random([n, t, d], Distribution::Normal(0.0, 1.0), &device) * spread
                + Tensor::<3>::random([n, t, 1], Distribution::Uniform(-offset, offset + 1e-9), &device);
            let shift = Tensor::<2>::random([n, d], Distribution::Normal(0.0, 1.0), &device);
            let scale = Tensor::<2>::random([n, d], Distribution::Normal(0.0, 0.5), &device);
            #[cfg(feature = "flex")]
            assert!(super::flex::ln_modulate(&x, &shift, &scale).is_some(), "the fused pass applies here");
            let fused = values(ln_modulate(x.clone(), shift.clone(), scale.clone()));
            let reference = values(modulate(layer_norm_no_affine(x.clone()), shift.clone(), scale.clone()));
            // The composite sums each row in f32: at offsets of 20 and a spread of 3 its mean is
            // off by ~1e-5 of the spread, times (1 + scale); a wrong eps is off by 5e-2.
            let worst = fused.iter().zip(&reference).map(|(a, b)| (a - b).abs() / b.abs().max(1.0)).fold(0f32, f32::max);
            assert!(worst <= 1e-4, "[{n}, {t}, {d}]: modulated LayerNorm off by {worst}");

            let h = Tensor::<3>::random([n, t, d], Distribution::Normal(0.0, 1.0), &device);
            let gamma = Tensor::<1>::random([d], Distribution::Uniform(0.5, 1.5), &device);
            let composite = |g: Option<Tensor<1>>| {
                let gated = shift.clone().unsqueeze_dim::<3>(1) * h.clone();
                values(x.clone() + g.map_or(gated.clone(), |g| gated * g.unsqueeze_dims::<3>(&[0, 1])))
            };
            #[cfg(feature = "flex")]
            assert!(super::flex::gated_residual(&x, &h, &shift, Some(&gamma)).is_some(), "the fused pass applies here");
            assert_eq!(values(gated_residual(x.clone(), h.clone(), shift.clone(), Some(gamma.clone()))), composite(Some(gamma)));
            assert_eq!(values(gated_residual(x.clone(), h.clone(), shift.clone(), None)), composite(None));
        }
    }

    /// Gradients of the fused steps against the composite's, on an autodiff device, with and
    /// without the Difffit scale: within 1e-5 of the largest gradient (and 1) of each input.
    #[test]
    fn fused_adaln_gradients_match_the_composite() {
        let device = Device::flex().autodiff();
        device.seed(12);
        let [n, t, d] = [3, 40, 300]; // above the parallel threshold
        let rand = |dims: Vec<usize>, s: f64| {
            let v = Tensor::<1>::random([dims.iter().product::<usize>()], Distribution::Normal(0.0, s), &device).into_data().try_to_vec::<f32>().unwrap();
            burn::tensor::TensorData::new(v, dims)
        };
        let (xd, sd, cd, hd, gd) = (rand(vec![n, t, d], 2.0), rand(vec![n, d], 1.0), rand(vec![n, d], 0.5), rand(vec![n, t, d], 1.0), rand(vec![n, d], 1.0));
        let (wd, md) = (rand(vec![n, t, d], 1.0), rand(vec![d], 1.0));
        for with_gamma in [true, false] {
            let run = |fused: bool| {
                let leaf3 = |v: &burn::tensor::TensorData| Tensor::<3>::from_data(v.clone(), &device).require_grad();
                let leaf2 = |v: &burn::tensor::TensorData| Tensor::<2>::from_data(v.clone(), &device).require_grad();
                let (x, shift, scale, h, gate) = (leaf3(&xd), leaf2(&sd), leaf2(&cd), leaf3(&hd), leaf2(&gd));
                let gamma = Tensor::<1>::from_data(md.clone(), &device).require_grad();
                let w = Tensor::<3>::from_data(wd.clone(), &device);
                let gm = with_gamma.then(|| gamma.clone());
                let (y, z) = if fused {
                    (ln_modulate(x.clone(), shift.clone(), scale.clone()), gated_residual(x.clone(), h.clone(), gate.clone(), gm))
                } else {
                    (modulate(layer_norm_no_affine(x.clone()), shift.clone(), scale.clone()), gated_residual_composite(x.clone(), h.clone(), gate.clone(), gm))
                };
                // y^2 makes dy correlated with xhat, so that dx's mean(g xhat) term is large.
                let grads = ((y.clone() * w.clone()).sum() + (y.clone() * y).sum() * 0.5 + (z * w).sum()).backward();
                let g3 = |p: &Tensor<3>| values(p.grad(&grads).unwrap());
                let g2 = |p: &Tensor<2>| values(p.grad(&grads).unwrap());
                let mut out = vec![("x", g3(&x)), ("shift", g2(&shift)), ("scale", g2(&scale)), ("h", g3(&h)), ("gate", g2(&gate))];
                if with_gamma {
                    out.push(("gamma", values(gamma.grad(&grads).unwrap())));
                }
                out
            };
            #[cfg(feature = "flex")]
            {
                let x = Tensor::<3>::from_data(xd.clone(), &device);
                let (sh, sc) = (Tensor::<2>::from_data(sd.clone(), &device), Tensor::<2>::from_data(cd.clone(), &device));
                assert!(super::flex::ln_modulate(&x, &sh, &sc).is_some(), "the fused pass applies under autodiff");
            }
            for ((name, a), (_, b)) in run(true).into_iter().zip(run(false)) {
                let top = b.iter().fold(1f32, |m, v| m.max(v.abs()));
                let worst = a.iter().zip(&b).map(|(p, q)| (p - q).abs()).fold(0f32, f32::max) / top;
                assert!(worst <= 1e-5, "gamma {with_gamma}: d{name} off by {worst} of its largest value {top}");
            }
        }
    }
}

//! IDC's "instance" norm, `GroupNorm(C, C)` with affine parameters, optionally followed by ReLU,
//! fused into one pass each way on the CPU.
//!
//! burn's `GroupNorm::forward` is a chain of about ten tensor ops (mean, subtract, square, mean,
//! add, sqrt, divide, multiply, add), each a pass over [N, C, H, W] and under autodiff a backward
//! step of its own; with the ReLU that follows it in every block they were a fifth of a ConvNet-3
//! training step on Flex. Here, for each (image, channel) plane of M = H*W values:
//!
//! ```text
//! mean = sum(x) / M                        (f64 sums)
//! rstd = 1 / sqrt(sum((x - mean)^2) / M + eps)
//! z    = (x - mean) * (gamma[c] * rstd) + beta[c]
//! y    = z, or max(z, 0) with the ReLU
//!
//! backward, dz = dy (where z > 0 with the ReLU, else 0), xhat = (x - mean) * rstd:
//! s1 = sum(dz), s2 = sum(dz * xhat)        dbeta[c] = sum over images of s1, dgamma[c] of s2
//! dx = gamma[c] * rstd * (dz - s1 / M - xhat * s2 / M)
//! ```
//!
//! The backward keeps x and the per-plane (mean, rstd) and recomputes z exactly as the forward did
//! for the ReLU's mask. Every plane is computed on one thread and the per-channel sums run over the
//! images in order, so the result does not depend on the number of threads. It runs on Flex in
//! f32, on plain and autodiff devices (both checkpointing strategies); any other backend or dtype,
//! a norm without affine parameters or with fewer groups than channels runs burn's `GroupNorm`
//! (and burn's ReLU). The statistics are summed in f64 where burn sums in f32, so results differ
//! from burn's by f32 rounding only (`matches_burns_group_norm`).

use burn::nn::GroupNorm;
use burn::prelude::*;
use burn::tensor::activation;

/// `GroupNorm(C, C)`, then ReLU where `relu`: fused on Flex, burn's ops elsewhere.
pub fn instance_norm(norm: &GroupNorm, x: Tensor<4>, relu: bool) -> Tensor<4> {
    #[cfg(feature = "flex")]
    if let Some(y) = flex::fused(norm, &x, relu) {
        return y;
    }
    let y = norm.forward(x);
    if relu { activation::relu(y) } else { y }
}

#[cfg(feature = "flex")]
pub(crate) mod flex {
    use burn::backend::autodiff::checkpoint::base::Checkpointer;
    use burn::backend::autodiff::checkpoint::strategy::{BalancedCheckpointing, NoCheckpointing};
    use burn::backend::autodiff::grads::Gradients;
    use burn::backend::autodiff::ops::{Backward, Ops, OpsKind};
    use burn::backend::flex::FlexTensor;
    use burn::backend::{Autodiff, Flex, GradientCheckpointingStrategy};
    use burn::nn::GroupNorm;
    use burn::prelude::*;
    use burn::tensor::TensorData;
    use crate::flex_tensor::{f32_contiguous, slice, tensor};
    use rayon::prelude::*;

    /// Sizes of one norm: input [n, c, m] (m = H*W), the norm's eps and whether a ReLU follows.
    #[derive(Clone, Copy, Debug, PartialEq)]
    pub(crate) struct Geom {
        pub dims: [usize; 4],
        pub eps: f64,
        pub relu: bool,
    }

    impl Geom {
        fn of(norm: &GroupNorm, dims: [usize; 4], relu: bool) -> Option<Self> {
            let c = dims[1];
            if !norm.affine || norm.num_groups != c || norm.num_channels != c || dims.iter().product::<usize>() == 0 {
                return None;
            }
            Some(Self { dims, eps: norm.epsilon, relu })
        }

        fn c(&self) -> usize {
            self.dims[1]
        }

        /// Values per plane.
        fn m(&self) -> usize {
            self.dims[2] * self.dims[3]
        }
    }

    /// What the backward step keeps: x, the affine parameters and each plane's (mean, rstd).
    #[derive(Clone, Debug)]
    pub(crate) struct State {
        x: FlexTensor,
        gamma: Vec<f32>,
        beta: Vec<f32>,
        stats: Vec<(f32, f32)>,
    }

    /// The autodiff path for one checkpointing strategy (a macro for the same reason as in
    /// conv3x3.rs: burn converts to each strategy's primitive through its own trait impl).
    macro_rules! tracked {
        ($strategy:ty, $norm:expr, $x:expr, $g:expr) => {{
            type AD = Autodiff<Flex, $strategy>;
            let xa = $x.clone().try_into_primitive::<AD>().ok()?;
            let ga = $norm.gamma.as_ref()?.val().try_into_primitive::<AD>().ok()?;
            let ba = $norm.beta.as_ref()?.val().try_into_primitive::<AD>().ok()?;
            let xp = f32_contiguous(xa.primitive().clone())?;
            let gamma = to_vec(ga.primitive().clone())?;
            let beta = to_vec(ba.primitive().clone())?;
            let (y, stats) = forward(&$g, slice(&xp), &gamma, &beta);
            let state = State { x: xp, gamma, beta, stats };
            let out = match Backward::<Flex, 3>::prepare::<$strategy>(InstanceNormBackward { g: $g }, [xa.node(), ga.node(), ba.node()])
                .compute_bound()
                .stateful()
            {
                OpsKind::Tracked(prep) => prep.finish(state, tensor(y, $g.dims)),
                OpsKind::UnTracked(prep) => prep.finish(tensor(y, $g.dims)),
            };
            Some(Tensor::from_primitive::<AD>(out))
        }};
    }

    /// The fused norm where it applies (GroupNorm(C, C) with affine parameters, Flex, f32), else None.
    pub(crate) fn fused(norm: &GroupNorm, x: &Tensor<4>, relu: bool) -> Option<Tensor<4>> {
        let g = Geom::of(norm, x.dims(), relu)?;
        match x.device().gradient_checkpointing_strategy() {
            None => {
                let xp = f32_contiguous(x.clone().try_into_primitive::<Flex>().ok()?)?;
                let gamma = to_vec(norm.gamma.as_ref()?.val().try_into_primitive::<Flex>().ok()?)?;
                let beta = to_vec(norm.beta.as_ref()?.val().try_into_primitive::<Flex>().ok()?)?;
                let (y, _) = forward(&g, slice(&xp), &gamma, &beta);
                Some(Tensor::from_primitive::<Flex>(tensor(y, g.dims)))
            }
            Some(GradientCheckpointingStrategy::Disabled) => tracked!(NoCheckpointing, norm, x, g),
            Some(GradientCheckpointingStrategy::Balanced) => tracked!(BalancedCheckpointing, norm, x, g),
        }
    }

    /// Backward step: parents (x, gamma, beta).
    #[derive(Debug)]
    struct InstanceNormBackward {
        g: Geom,
    }

    impl Backward<Flex, 3> for InstanceNormBackward {
        type State = State;

        fn backward(self, ops: Ops<Self::State, 3>, grads: &mut Gradients, _checkpointer: &mut Checkpointer) {
            let dy = f32_contiguous(grads.consume::<Flex>(&ops.node)).expect("f32 output gradient");
            let [px, pg, pb] = ops.parents;
            let g = self.g;
            let s = ops.state;
            let (dx, dgamma, dbeta) = backward(&g, slice(&s.x), &s.gamma, &s.beta, &s.stats, slice(&dy), px.is_some());
            if let (Some(node), Some(dx)) = (px, dx) {
                grads.register::<Flex>(node.id, tensor(dx, g.dims));
            }
            if let Some(node) = pg {
                grads.register::<Flex>(node.id, FlexTensor::from_data(TensorData::new(dgamma, vec![g.c()])));
            }
            if let Some(node) = pb {
                grads.register::<Flex>(node.id, FlexTensor::from_data(TensorData::new(dbeta, vec![g.c()])));
            }
        }
    }

    /// Values from which the planes are split over threads (below, and with one thread, the calling
    /// thread runs them: handing a few small planes to rayon costs more than it saves).
    const PARALLEL_FROM: usize = 1 << 15;

    /// `f(plane index, plane of a, plane of b, plane of out)` over the planes, its results in plane
    /// order.
    fn planes<R: Send>(a: &[f32], b: &[f32], out: &mut [f32], m: usize, f: impl Fn(usize, &[f32], &[f32], &mut [f32]) -> R + Sync) -> Vec<R> {
        if a.len() < PARALLEL_FROM || rayon::current_num_threads() == 1 {
            a.chunks(m).zip(b.chunks(m)).zip(out.chunks_mut(m)).enumerate().map(|(p, ((a, b), o))| f(p, a, b, o)).collect()
        } else {
            a.par_chunks(m).zip(b.par_chunks(m)).zip(out.par_chunks_mut(m)).enumerate().map(|(p, ((a, b), o))| f(p, a, b, o)).collect()
        }
    }

    /// Independent partial sums of the f64 reductions: a single running sum is one dependent add
    /// per value (latency-bound, several times slower than the rest of the pass); lanes let the
    /// loop vectorise. They are added in a fixed order, so the result is the same on every run.
    const LANES: usize = 16;

    /// The sum of f(x_i) in f64.
    #[inline(always)]
    fn sum(x: &[f32], f: impl Fn(f32) -> f64) -> f64 {
        let mut acc = [0f64; LANES];
        let chunks = x.chunks_exact(LANES);
        let rest = chunks.remainder();
        for c in chunks {
            for i in 0..LANES {
                acc[i] += f(c[i]);
            }
        }
        acc.iter().sum::<f64>() + rest.iter().map(|&v| f(v)).sum::<f64>()
    }

    /// (sum of f(a_i, b_i), sum of g(a_i, b_i)) in f64 over two planes of equal length.
    #[inline(always)]
    fn sums2(a: &[f32], b: &[f32], f: impl Fn(f32, f32) -> f64, g: impl Fn(f32, f32) -> f64) -> (f64, f64) {
        let (mut af, mut ag) = ([0f64; LANES], [0f64; LANES]);
        let (ca, cb) = (a.chunks_exact(LANES), b.chunks_exact(LANES));
        let (ra, rb) = (ca.remainder(), cb.remainder());
        for (a, b) in ca.zip(cb) {
            for i in 0..LANES {
                af[i] += f(a[i], b[i]);
                ag[i] += g(a[i], b[i]);
            }
        }
        let (mut sf, mut sg) = (af.iter().sum::<f64>(), ag.iter().sum::<f64>());
        for (&a, &b) in ra.iter().zip(rb) {
            sf += f(a, b);
            sg += g(a, b);
        }
        (sf, sg)
    }

    /// A plane's (mean, rstd): f64 sums, two passes.
    fn stats(x: &[f32], eps: f64) -> (f32, f32) {
        let m = x.len() as f64;
        let mean = sum(x, |v| v as f64) / m;
        let var = sum(x, |v| (v as f64 - mean) * (v as f64 - mean)) / m;
        (mean as f32, (1.0 / (var + eps).sqrt()) as f32)
    }

    /// z of one value: the forward's formula, shared with the backward's ReLU mask so both see the
    /// same bits.
    #[inline(always)]
    fn affine(x: f32, mean: f32, scale: f32, beta: f32) -> f32 {
        (x - mean) * scale + beta
    }

    /// (y, per-plane (mean, rstd)). Each plane (a few KiB) is read from memory once: its two
    /// statistics passes and the output pass run while it is in the cache.
    pub(crate) fn forward(g: &Geom, x: &[f32], gamma: &[f32], beta: &[f32]) -> (Vec<f32>, Vec<(f32, f32)>) {
        let (c, m) = (g.c(), g.m());
        let mut y = vec![0f32; x.len()];
        let stats = planes(x, x, &mut y, m, |p, plane, _, out| {
            let (mean, rstd) = stats(plane, g.eps);
            let (scale, b) = (gamma[p % c] * rstd, beta[p % c]);
            if g.relu {
                for (o, &v) in out.iter_mut().zip(plane) {
                    *o = affine(v, mean, scale, b).max(0.0);
                }
            } else {
                for (o, &v) in out.iter_mut().zip(plane) {
                    *o = affine(v, mean, scale, b);
                }
            }
            (mean, rstd)
        });
        (y, stats)
    }

    /// (dx where asked for, dgamma, dbeta). dx of a plane needs only that plane's (s1, s2), so each
    /// plane is done in one visit: dz, its sums, then dx over dz in place.
    pub(crate) fn backward(
        g: &Geom,
        x: &[f32],
        gamma: &[f32],
        beta: &[f32],
        stats: &[(f32, f32)],
        dy: &[f32],
        want_dx: bool,
    ) -> (Option<Vec<f32>>, Vec<f32>, Vec<f32>) {
        let (n, c, m) = (g.dims[0], g.c(), g.m());
        let inv_m = 1.0 / m as f64;
        let mut dx = vec![0f32; x.len()];
        let sums = planes(x, dy, &mut dx, m, |p, plane, dy, dz| {
            let (mean, rstd) = stats[p];
            let (scale, b) = (gamma[p % c] * rstd, beta[p % c]);
            if g.relu {
                for ((d, &v), &dy) in dz.iter_mut().zip(plane).zip(dy) {
                    *d = if affine(v, mean, scale, b) > 0.0 { dy } else { 0.0 };
                }
            } else {
                dz.copy_from_slice(dy);
            }
            let (s1, s2) = sums2(dz, plane, |d, _| d as f64, |d, v| (d * ((v - mean) * rstd)) as f64);
            if want_dx {
                let (k1, k2) = ((s1 * inv_m) as f32, (s2 * inv_m) as f32);
                for (d, &v) in dz.iter_mut().zip(plane) {
                    let xhat = (v - mean) * rstd;
                    *d = scale * (*d - k1 - xhat * k2);
                }
            }
            (s1, s2)
        });
        let mut dgamma = vec![0f32; c];
        let mut dbeta = vec![0f32; c];
        for ch in 0..c {
            let (s1, s2) = (0..n).fold((0f64, 0f64), |(a, b), i| (a + sums[i * c + ch].0, b + sums[i * c + ch].1));
            dbeta[ch] = s1 as f32;
            dgamma[ch] = s2 as f32;
        }
        (want_dx.then_some(dx), dgamma, dbeta)
    }

    /// A parameter's values (gamma, beta) as a vector, or None for another dtype.
    fn to_vec(t: FlexTensor) -> Option<Vec<f32>> {
        Some(slice(&f32_contiguous(t)?).to_vec())
    }
}

#[cfg(all(test, feature = "flex"))]
mod tests {
    use super::flex::fused;
    use super::*;
    use burn::module::Param;
    use burn::nn::GroupNormConfig;
    use burn::tensor::Distribution;

    /// max |a - b| over b's largest |value|.
    fn rel_diff<const D: usize>(a: Tensor<D>, b: Tensor<D>) -> f32 {
        let scale = b.clone().abs().max().into_scalar::<f32>().max(1e-12);
        (a - b).abs().max().into_scalar::<f32>() / scale
    }

    /// GroupNorm(C, C) with gamma and beta drawn (init gives 1 and 0, which would hide a swap).
    fn norm(c: usize, device: &Device) -> GroupNorm {
        let mut n = GroupNormConfig::new(c, c).with_epsilon(1e-5).init(device);
        n.gamma = Some(Param::from_tensor(Tensor::random([c], Distribution::Normal(1.0, 0.5), device)));
        n.beta = Some(Param::from_tensor(Tensor::random([c], Distribution::Normal(0.0, 0.5), device)));
        n
    }

    /// Output, dx, dgamma and dbeta of the fused pass against burn's GroupNorm (+ burn's ReLU) on
    /// plain, autodiff and checkpointed Flex devices, with and without the ReLU, on a small plane
    /// and on one big enough to be split over threads. Tolerance 1e-5 of the largest value: burn
    /// sums the statistics and dgamma (up to N*H*W = 4,096 terms here) in f32, one rounding of
    /// ~6e-8 per addition, where this pass sums in f64; no tie of the ReLU (z within ~1e-7 of 0)
    /// occurs with the seeded draws.
    #[test]
    fn matches_burns_group_norm() {
        let plain = Device::flex();
        for device in [plain.clone(), plain.clone().autodiff(), plain.clone().autodiff().gradient_checkpointing()] {
            device.seed(7);
            let tracked = device.gradient_checkpointing_strategy().is_some();
            for dims in [[3, 5, 6, 7], [4, 8, 32, 32]] {
                let n = norm(dims[1], &device);
                for relu in [false, true] {
                    // Offset inputs: a mean far from 0 is where a one-pass variance would lose digits.
                    let mut x = Tensor::<4>::random(dims, Distribution::Normal(3.0, 2.0), &device);
                    if tracked {
                        x = x.require_grad();
                    }
                    let reference = if relu { activation::relu(n.forward(x.clone())) } else { n.forward(x.clone()) };
                    let y = fused(&n, &x, relu).expect("GroupNorm(C, C) f32 on Flex takes the fused path");
                    let d = rel_diff(y.clone(), reference.clone());
                    assert!(d <= 1e-5, "{dims:?} relu {relu}: output off by {d}");
                    if !tracked {
                        continue;
                    }
                    let r = Tensor::<4>::random(dims, Distribution::Normal(0.0, 1.0), &device);
                    let ours = (y * r.clone()).sum().backward();
                    let theirs = (reference * r).sum().backward();
                    let (g, b) = (n.gamma.as_ref().unwrap(), n.beta.as_ref().unwrap());
                    for (what, d) in [
                        ("dx", rel_diff(x.grad(&ours).unwrap(), x.grad(&theirs).unwrap())),
                        ("dgamma", rel_diff(g.grad(&ours).unwrap(), g.grad(&theirs).unwrap())),
                        ("dbeta", rel_diff(b.grad(&ours).unwrap(), b.grad(&theirs).unwrap())),
                    ] {
                        assert!(d <= 1e-5, "{dims:?} relu {relu}: {what} off by {d}");
                    }
                }
            }
        }
        // The comparison can fail: one input value moved by 0.1% moves the output past it.
        let n = norm(2, &plain);
        let x = Tensor::<4>::random([1, 2, 5, 5], Distribution::Normal(0.0, 1.0), &plain);
        let one = [0..1, 0..1, 2..3, 2..3];
        let bumped = x.clone().slice_assign(one.clone(), x.clone().slice(one) * 1.001 + 0.01);
        assert!(rel_diff(fused(&n, &bumped, false).unwrap(), n.forward(x)) > 1e-5);
    }

    /// Each plane runs on one thread and the channel sums in image order: one thread and two give
    /// the same bits, forward and backward.
    #[test]
    fn threads_do_not_change_the_bits() {
        let device = Device::flex().autodiff();
        device.seed(3);
        let n = norm(8, &device);
        let x = Tensor::<4>::random([4, 8, 32, 32], Distribution::Normal(0.0, 1.0), &device).require_grad();
        let r = Tensor::<4>::random([4, 8, 32, 32], Distribution::Normal(0.0, 1.0), &device);
        let run = |threads: usize| {
            let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build().unwrap();
            pool.install(|| {
                let y = instance_norm(&n, x.clone(), true);
                let grads = (y.clone() * r.clone()).sum().backward();
                [y.into_data(), x.grad(&grads).unwrap().into_data(), n.gamma.as_ref().unwrap().grad(&grads).unwrap().into_data()]
            })
        };
        assert_eq!(run(1), run(2));
    }

    /// Norms the fused pass does not cover run burn's GroupNorm, unchanged.
    #[test]
    fn other_norms_run_burns() {
        let device = Device::flex();
        let x = Tensor::<4>::random([2, 4, 5, 5], Distribution::Normal(0.0, 1.0), &device);
        for n in [GroupNormConfig::new(2, 4).init(&device), GroupNormConfig::new(4, 4).with_affine(false).init(&device)] {
            assert!(fused(&n, &x, true).is_none());
            assert_eq!(instance_norm(&n, x.clone(), true).into_data(), activation::relu(n.forward(x.clone())).into_data());
        }
    }
}

//! `nn.AvgPool2d(k, k)`: the average pooling of ConvNet and ResNet-AP (k x k windows, stride k,
//! no padding).
//!
//! Where the window is a power of two and the image at most [`MATMUL_MAX_WIDTH`] wide, the pool
//! is one matrix product: the k rows of a window row side by side, times a fixed pooling matrix,
//!
//! ```text
//! x [N, C, H, W] -> [N*C*H/k, k*W] @ P [k*W, W/k] -> [N, C, H/k, W/k]
//! P[r*W + j, j / k] = 1 / k^2   (r < k, j < W), 0 elsewhere
//! ```
//!
//! so forward and backward run as gemm instead of burn-flex's scalar pooling loops (on the CPU
//! its 2x2 pool forward and backward took ~20% of a ConvNet-3 training step). The product sums the
//! same k^2 values scaled by 1/k^2 (exact in binary; the other products are exact zeros), so it
//! can differ from the pool only by the order of the additions: on Flex, whose gemm adds them in
//! the pool's order, `pool_matches_burns_avg_pool` measures no difference at all, forward or
//! backward; it allows 1e-6 of the largest value for a backend whose gemm orders them otherwise.
//! Elsewhere burn's `avg_pool2d` runs.

use burn::prelude::*;
use burn::tensor::module::avg_pool2d;
use burn::tensor::ops::AvgPoolOptions;

/// Widest image pooled by the matrix product: its cost is 2 k W multiply-adds per output, against
/// k^2 additions for the loop; at 64 px and k = 2 that is 256 flops, a few ns in gemm, where the
/// scalar loop's forward and backward took ~50 ns per output.
pub const MATMUL_MAX_WIDTH: usize = 64;

/// Average pooling over k x k windows with stride k (no padding).
#[derive(Module, Debug)]
pub struct AvgPool {
    pub kernel: usize,
}

impl AvgPool {
    pub fn new(kernel: usize) -> Self {
        Self { kernel }
    }

    /// [N, C, H, W] -> [N, C, H / k, W / k] (floor).
    pub fn forward(&self, x: Tensor<4>) -> Tensor<4> {
        let k = self.kernel;
        let [n, c, h, w] = x.dims();
        if k > 1 && k.is_power_of_two() && h % k == 0 && w % k == 0 && w <= MATMUL_MAX_WIDTH {
            let (wo, inv) = (w / k, 1.0 / (k * k) as f32);
            let p: Vec<f32> = (0..k * w)
                .flat_map(|row| {
                    (0..wo).map(move |col| if (row % w) / k == col { inv } else { 0.0 })
                })
                .collect();
            let p = Tensor::<1>::from_floats(p.as_slice(), &x.device())
                .reshape([k * w, wo])
                .cast(x.dtype());
            // [N*C*H/k, k*W] @ [k*W, W/k] -> [N*C*H/k, W/k]
            x.reshape([n * c * h / k, k * w])
                .matmul(p)
                .reshape([n, c, h / k, wo])
        } else {
            avg_pool2d(x, AvgPoolOptions::new([k, k]).with_stride([k, k]))
        }
    }
}

#[cfg(test)]
mod tests {
    use burn::tensor::Distribution;

    use super::*;

    /// Largest |a - b| relative to the largest |b|.
    fn rel(a: &Tensor<4>, b: &Tensor<4>) -> f32 {
        let d = (a.clone() - b.clone()).abs().max().into_scalar::<f32>();
        d / b.clone().abs().max().into_scalar::<f32>()
    }

    #[test]
    fn pool_matches_burns_avg_pool() {
        let device = Device::flex().autodiff();
        for (shape, k) in [
            ([3, 5, 32, 32], 2),
            ([2, 4, 16, 8], 2),
            ([2, 3, 64, 64], 4),
            ([1, 2, 8, 8], 2),
            ([2, 3, 6, 10], 2),
            ([1, 2, 9, 9], 3),
            ([1, 2, 128, 128], 2),
        ] {
            let x =
                Tensor::<4>::random(shape, Distribution::Normal(0.0, 1.0), &device).require_grad();
            let g = Tensor::<4>::random(
                [shape[0], shape[1], shape[2] / k, shape[3] / k],
                Distribution::Normal(0.0, 1.0),
                &device,
            );
            let ours = AvgPool::new(k).forward(x.clone());
            let theirs = avg_pool2d(x.clone(), AvgPoolOptions::new([k, k]).with_stride([k, k]));
            assert_eq!(ours.dims(), theirs.dims());
            // Forward: the same four (or k^2) values summed in another order: a few ulps.
            let fwd = rel(&ours, &theirs);
            assert!(fwd < 1e-6, "{shape:?} k {k}: forward {fwd:e}");
            // Backward: each input's gradient is one output's gradient / k^2 in both.
            let ga = (ours * g.clone()).sum().backward();
            let gb = (theirs * g).sum().backward();
            let (ga, gb) = (x.grad(&ga).unwrap(), x.grad(&gb).unwrap());
            let bwd = (ga.clone() - gb.clone()).abs().max().into_scalar::<f32>()
                / gb.abs().max().into_scalar::<f32>();
            assert!(bwd < 1e-6, "{shape:?} k {k}: backward {bwd:e}");
            eprintln!("avg pool {shape:?} k {k}: forward {fwd:.2e}, backward {bwd:.2e} (max abs difference / max abs)");
        }
    }
}

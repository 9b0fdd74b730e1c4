//! The 3x3, stride-1 convolution of the evaluation networks (ConvNet, ResNet-AP, ResNet blocks),
//! batched over the images on the CPU.
//!
//! burn-flex convolves image by image in 512-pixel tiles and derives the weight gradient as a
//! forward convolution whose kernel is the output gradient: thin matrix products that ran gemm's
//! narrow microkernels for a fifth of a ConvNet-3 training step. Here the whole batch (or a chunk
//! of it, [`CHUNK_FLOATS`]) is unfolded once and each direction is one product:
//!
//! ```text
//! cols [Cin*9, N*Ho*Wo]        cols[ci*9 + kh*3 + kw, n*Ho*Wo + oh*Wo + ow] = x[n, ci, oh+kh-pt, ow+kw-pl]
//!                                                                             (0 outside the image)
//! y    [N, Cout, Ho, Wo]       W [Cout, Cin*9] @ cols, + b                    (forward)
//! dW   [Cout, Cin*9]           dy' [Cout, N*Ho*Wo] @ cols^T                   (backward)
//! db   [Cout]                  the rows of dy' summed
//! dx   [N, Cin, H, W]          col2im(W^T @ dy')                              (backward)
//! ```
//!
//! The backward is our own (burn's `extension` feature: the autodiff primitive's node, a
//! `Backward` step) and keeps x and W, unfolding x again rather than keeping `cols`. It runs on
//! Flex in f32, on plain and autodiff devices (both checkpointing strategies); any other backend,
//! dtype or convolution (stride, dilation, groups, kernel size) runs burn's `Conv2d::forward`.
//! The products add in another order than burn's, so results differ from burn's convolution by
//! f32 rounding only (`matches_burns_convolution` allows 1e-5 of the largest value).
//!
//! The columns and the permuted products live in scratch buffers kept on the calling thread
//! between calls (at most three chunks' worth, ~200 MiB for a 224 px ResNet, ~110 MiB for
//! ConvNet-3 on 28 px at batch 32): allocating them afresh, above the allocator's mmap
//! threshold, cost page faults and a memset on every call.

use burn::nn::conv::Conv2d;
use burn::prelude::*;

/// `conv.forward(x)`, batched on Flex where the convolution is 3x3 with stride 1.
pub fn conv2d(conv: &Conv2d, x: Tensor<4>) -> Tensor<4> {
    #[cfg(feature = "flex")]
    if let Some(y) = flex::batched(conv, &x, CHUNK_FLOATS) {
        return y;
    }
    conv.forward(x)
}

/// Most f32 values of one unfolded chunk (`cols`, 64 MiB): a batch whose `cols` would be larger
/// is convolved a few images at a time (at least one), the weight gradient summed over chunks.
pub const CHUNK_FLOATS: usize = 16 << 20;

#[cfg(feature = "flex")]
pub(crate) mod flex {
    use burn::backend::autodiff::checkpoint::base::Checkpointer;
    use burn::backend::autodiff::checkpoint::strategy::{BalancedCheckpointing, CheckpointStrategy, NoCheckpointing};
    use burn::backend::autodiff::grads::Gradients;
    use burn::backend::autodiff::ops::{Backward, NodeGuard, Ops, OpsKind};
    use burn::backend::tensor::FloatTensor;
    use burn::backend::flex::FlexTensor;
    use burn::backend::{Autodiff, Flex, GradientCheckpointingStrategy};
    use burn::nn::PaddingConfig2d;
    use burn::nn::conv::Conv2d;
    use burn::prelude::*;
    use burn::tensor::TensorData;
    use crate::flex_tensor::{f32_contiguous, slice, tensor};
    use rayon::prelude::*;
    use std::cell::RefCell;
    use std::mem::MaybeUninit;

    /// Sizes of one convolution: input [n, cin, h, w], output [n, cout, ho, wo], top/left padding.
    #[derive(Clone, Copy, Debug, PartialEq, Eq)]
    pub(crate) struct Geom {
        pub n: usize,
        pub cin: usize,
        pub h: usize,
        pub w: usize,
        pub cout: usize,
        pub pt: usize,
        pub pl: usize,
        pub ho: usize,
        pub wo: usize,
        /// Images per unfolded chunk.
        pub chunk: usize,
    }

    impl Geom {
        /// The sizes of `conv` on `dims`, or None where this path does not apply.
        fn of(conv: &Conv2d, dims: [usize; 4], chunk_floats: usize) -> Option<Self> {
            if conv.kernel_size != [3, 3] || conv.stride != [1, 1] || conv.dilation != [1, 1] || conv.groups != 1 {
                return None;
            }
            let [n, cin, h, w] = dims;
            let [cout, wcin, _, _] = conv.weight.dims();
            if wcin != cin {
                return None;
            }
            let (pt, pl, pb, pr) = match conv.padding {
                PaddingConfig2d::Valid => (0, 0, 0, 0),
                PaddingConfig2d::Same => (1, 1, 1, 1),
                PaddingConfig2d::Explicit(t, l, b, r) => (t, l, b, r),
            };
            let (ho, wo) = ((h + pt + pb).checked_sub(2)?, (w + pl + pr).checked_sub(2)?);
            if n == 0 || ho == 0 || wo == 0 {
                return None;
            }
            let per_image = cin * 9 * ho * wo;
            let chunk = (chunk_floats / per_image).clamp(1, n);
            Some(Self { n, cin, h, w, cout, pt, pl, ho, wo, chunk })
        }

        fn k(&self) -> usize {
            self.cin * 9
        }

        fn hw_out(&self) -> usize {
            self.ho * self.wo
        }

        /// The chunks of the batch: (first image, images).
        fn chunks(&self) -> impl Iterator<Item = (usize, usize)> + use<> {
            let (n, c) = (self.n, self.chunk);
            (0..n).step_by(c).map(move |n0| (n0, c.min(n - n0)))
        }
    }

    /// The autodiff path for one checkpointing strategy (a macro: burn converts a tensor to each
    /// strategy's primitive through its own trait impl, not one generic over the strategy).
    macro_rules! tracked {
        ($strategy:ty, $conv:expr, $x:expr, $g:expr) => {{
            type AD = Autodiff<Flex, $strategy>;
            let xa = $x.clone().try_into_primitive::<AD>().ok()?;
            let wa = $conv.weight.val().try_into_primitive::<AD>().ok()?;
            let ba = match &$conv.bias {
                Some(b) => Some(b.val().try_into_primitive::<AD>().ok()?),
                None => None,
            };
            let xp = f32_contiguous(xa.primitive().clone())?;
            let wp = f32_contiguous(wa.primitive().clone())?;
            let bp = match &ba {
                Some(b) => Some(f32_contiguous(b.primitive().clone())?),
                None => None,
            };
            let y = forward(&$g, &xp, &wp, bp.as_ref());
            let out = match ba {
                Some(ba) => record::<$strategy, 3>($g, [xa.node(), wa.node(), ba.node()], (xp, wp), y),
                None => record::<$strategy, 2>($g, [xa.node(), wa.node()], (xp, wp), y),
            };
            Some(Tensor::from_primitive::<AD>(out))
        }};
    }

    /// The batched convolution where it applies (3x3, stride 1, Flex, f32), else None.
    pub(crate) fn batched(conv: &Conv2d, x: &Tensor<4>, chunk_floats: usize) -> Option<Tensor<4>> {
        let g = Geom::of(conv, x.dims(), chunk_floats)?;
        match x.device().gradient_checkpointing_strategy() {
            None => {
                let xp = f32_contiguous(x.clone().try_into_primitive::<Flex>().ok()?)?;
                let wp = f32_contiguous(conv.weight.val().try_into_primitive::<Flex>().ok()?)?;
                let bp = match &conv.bias {
                    Some(b) => Some(f32_contiguous(b.val().try_into_primitive::<Flex>().ok()?)?),
                    None => None,
                };
                Some(Tensor::from_primitive::<Flex>(forward(&g, &xp, &wp, bp.as_ref())))
            }
            Some(GradientCheckpointingStrategy::Disabled) => tracked!(NoCheckpointing, conv, x, g),
            Some(GradientCheckpointingStrategy::Balanced) => tracked!(BalancedCheckpointing, conv, x, g),
        }
    }

    /// The convolution's output `y` as a node of the autodiff graph: parents (x, W) or (x, W, b),
    /// state (x, W) for the backward step.
    fn record<C: CheckpointStrategy, const N: usize>(
        g: Geom,
        nodes: [NodeGuard; N],
        state: (FlexTensor, FlexTensor),
        y: FlexTensor,
    ) -> FloatTensor<Autodiff<Flex, C>> {
        match Backward::<Flex, N>::prepare::<C>(Conv3x3Backward { g }, nodes).compute_bound().stateful() {
            OpsKind::Tracked(prep) => prep.finish(state, y),
            OpsKind::UnTracked(prep) => prep.finish(y),
        }
    }

    /// Backward step: parents (x, W) or (x, W, b); state (x, W), both contiguous f32.
    #[derive(Debug)]
    struct Conv3x3Backward {
        g: Geom,
    }

    impl<const N: usize> Backward<Flex, N> for Conv3x3Backward {
        type State = (FlexTensor, FlexTensor);

        fn backward(self, ops: Ops<Self::State, N>, grads: &mut Gradients, _checkpointer: &mut Checkpointer) {
            let dy = f32_contiguous(grads.consume::<Flex>(&ops.node)).expect("f32 output gradient");
            let (x, w) = ops.state;
            let mut parents = ops.parents.into_iter();
            let (px, pw, pb) = (parents.next().flatten(), parents.next().flatten(), parents.next().flatten());
            let g = self.g;
            let (dx, dw, db) = backward(&g, &x, &w, &dy, px.is_some(), pw.is_some(), pb.is_some());
            if let (Some(node), Some(dx)) = (px, dx) {
                grads.register::<Flex>(node.id, tensor(dx, [g.n, g.cin, g.h, g.w]));
            }
            if let (Some(node), Some(dw)) = (pw, dw) {
                grads.register::<Flex>(node.id, tensor(dw, [g.cout, g.cin, 3, 3]));
            }
            if let (Some(node), Some(db)) = (pb, db) {
                grads.register::<Flex>(node.id, FlexTensor::from_data(TensorData::new(db, vec![g.cout])));
            }
        }
    }

    /// y = conv(x, W) + b, chunk by chunk.
    pub(crate) fn forward(g: &Geom, x: &FlexTensor, w: &FlexTensor, b: Option<&FlexTensor>) -> FlexTensor {
        let (x, w, b) = (slice(x), slice(w), b.map(slice));
        let (k, hw) = (g.k(), g.hw_out());
        let len = g.n * g.cout * hw;
        let mut y = Vec::with_capacity(len);
        with_scratch(|[cols, prod]| {
            for (n0, nb) in g.chunks() {
                let l = nb * hw;
                im2col(g, x, n0, nb, resized(cols, k * l));
                let prod = resized(prod, g.cout * l);
                // prod [Cout, L] = W [Cout, K] @ cols [K, L]
                matmul(g.cout, l, k, prod, Mat::rows(w, k), Mat::rows(cols, l), false);
                let prod: &[f32] = prod;
                // y[n, co, :] = prod[co, n*hw ..][..hw] + b[co]
                let out = &mut y.spare_capacity_mut()[n0 * g.cout * hw..(n0 + nb) * g.cout * hw];
                out.par_chunks_mut(hw).enumerate().for_each(|(plane, dst)| {
                    let (n, co) = (plane / g.cout, plane % g.cout);
                    let src = &prod[co * l + n * hw..][..hw];
                    let bias = b.map_or(0.0, |b| b[co]);
                    for (d, s) in dst.iter_mut().zip(src) {
                        d.write(s + bias);
                    }
                });
            }
        });
        // SAFETY: the chunks cover the batch and each wrote all of its planes' values.
        unsafe { y.set_len(len) };
        tensor(y, [g.n, g.cout, g.ho, g.wo])
    }

    /// (dx, dW, db), each only where asked for.
    #[allow(clippy::type_complexity)]
    pub(crate) fn backward(
        g: &Geom,
        x: &FlexTensor,
        w: &FlexTensor,
        dy: &FlexTensor,
        want_dx: bool,
        want_dw: bool,
        want_db: bool,
    ) -> (Option<Vec<f32>>, Option<Vec<f32>>, Option<Vec<f32>>) {
        let (x, w, dy) = (slice(x), slice(w), slice(dy));
        let (k, hw, image) = (g.k(), g.hw_out(), g.cin * g.h * g.w);
        let mut dx = want_dx.then(|| Vec::with_capacity(g.n * image));
        let mut dw = want_dw.then(|| vec![0f32; g.cout * k]);
        let mut db = want_db.then(|| vec![0f32; g.cout]);
        with_scratch(|[dyt, cols, dcols]| {
            for (i, (n0, nb)) in g.chunks().enumerate() {
                let l = nb * hw;
                // dy' [Cout, L]: dy'[co, n*hw ..][..hw] = dy[n0 + n, co, :]
                let dyt = resized(dyt, g.cout * l);
                dyt.par_chunks_mut(l).enumerate().for_each(|(co, row)| {
                    for (n, dst) in row.chunks_mut(hw).enumerate() {
                        dst.copy_from_slice(&dy[((n0 + n) * g.cout + co) * hw..][..hw]);
                    }
                });
                let dyt: &[f32] = dyt;
                if let Some(db) = db.as_mut() {
                    db.par_iter_mut().zip(dyt.par_chunks(l)).for_each(|(d, row)| *d += row.iter().sum::<f32>());
                }
                if let Some(dw) = dw.as_mut() {
                    im2col(g, x, n0, nb, resized(cols, k * l));
                    // dW [Cout, K] (+)= dy' [Cout, L] @ cols^T [L, K]
                    matmul(g.cout, k, l, dw, Mat::rows(dyt, l), Mat::cols(cols, l), i > 0);
                }
                if let Some(dx) = dx.as_mut() {
                    let dcols = resized(dcols, k * l);
                    // dcols [K, L] = W^T [K, Cout] @ dy' [Cout, L]
                    matmul(k, l, g.cout, dcols, Mat::cols(w, k), Mat::rows(dyt, l), false);
                    col2im(g, dcols, nb, &mut dx.spare_capacity_mut()[n0 * image..(n0 + nb) * image]);
                }
            }
        });
        if let Some(dx) = dx.as_mut() {
            // SAFETY: the chunks cover the batch and col2im wrote every value of its planes.
            unsafe { dx.set_len(g.n * image) };
        }
        (dx, dw, db)
    }

    thread_local! {
        /// Scratch of the products (unfolded columns, permuted outputs and gradients), kept
        /// between calls: fresh buffers of these sizes (tens of MB, above the allocator's mmap
        /// threshold) cost a page fault per 4 KiB and a memset on every call.
        static SCRATCH: RefCell<Vec<Vec<f32>>> = const { RefCell::new(Vec::new()) };
    }

    /// Runs `f` with `N` scratch buffers from this thread's pool, given back afterwards.
    fn with_scratch<const N: usize, R>(f: impl FnOnce(&mut [Vec<f32>; N]) -> R) -> R {
        let mut bufs: [Vec<f32>; N] = SCRATCH.with_borrow_mut(|pool| std::array::from_fn(|_| pool.pop().unwrap_or_default()));
        let r = f(&mut bufs);
        SCRATCH.with_borrow_mut(|pool| pool.extend(bufs));
        r
    }

    /// The buffer at `len` values (its contents are overwritten by the caller).
    fn resized(buf: &mut Vec<f32>, len: usize) -> &mut [f32] {
        if buf.len() < len {
            buf.resize(len, 0.0);
        }
        &mut buf[..len]
    }

    /// cols [K, nb*Ho*Wo] of images n0..n0+nb (formula in the module docs). One row per task.
    pub(crate) fn im2col(g: &Geom, x: &[f32], n0: usize, nb: usize, cols: &mut [f32]) {
        let (hw, l) = (g.hw_out(), nb * g.hw_out());
        cols.par_chunks_mut(l).enumerate().for_each(|(r, row)| {
            let (ci, kh, kw) = (r / 9, (r % 9) / 3, r % 3);
            // Output columns whose input column ow + kw - pl lies in 0..w.
            let ow_lo = g.pl.saturating_sub(kw).min(g.wo);
            let ow_hi = (g.w + g.pl).saturating_sub(kw).clamp(ow_lo, g.wo);
            for n in 0..nb {
                let plane = &x[((n0 + n) * g.cin + ci) * g.h * g.w..][..g.h * g.w];
                for oh in 0..g.ho {
                    let dst = &mut row[n * hw + oh * g.wo..][..g.wo];
                    let ih = (oh + kh).wrapping_sub(g.pt);
                    if ih >= g.h {
                        dst.fill(0.0);
                        continue;
                    }
                    dst[..ow_lo].fill(0.0);
                    let iw0 = ow_lo + kw - g.pl;
                    dst[ow_lo..ow_hi].copy_from_slice(&plane[ih * g.w + iw0..][..ow_hi - ow_lo]);
                    dst[ow_hi..].fill(0.0);
                }
            }
        });
    }

    /// dx [nb, Cin, H, W] = the columns folded back: each input pixel sums the entries of `dcols`
    /// it was unfolded into, in (kh, kw) order. One (image, channel) plane per task.
    pub(crate) fn col2im(g: &Geom, dcols: &[f32], nb: usize, dx: &mut [MaybeUninit<f32>]) {
        let (hw, l) = (g.hw_out(), nb * g.hw_out());
        dx.par_chunks_mut(g.h * g.w).enumerate().for_each(|(p, plane)| {
            let (n, ci) = (p / g.cin, p % g.cin);
            plane.fill(MaybeUninit::new(0.0));
            // SAFETY: every value was just written.
            let plane = unsafe { &mut *(plane as *mut [MaybeUninit<f32>] as *mut [f32]) };
            for kh in 0..3 {
                for kw in 0..3 {
                    let row = &dcols[(ci * 9 + kh * 3 + kw) * l + n * hw..][..hw];
                    let ow_lo = g.pl.saturating_sub(kw).min(g.wo);
                    let ow_hi = (g.w + g.pl).saturating_sub(kw).clamp(ow_lo, g.wo);
                    for oh in 0..g.ho {
                        let ih = (oh + kh).wrapping_sub(g.pt);
                        if ih >= g.h {
                            continue;
                        }
                        let iw0 = ow_lo + kw - g.pl;
                        let dst = &mut plane[ih * g.w + iw0..][..ow_hi - ow_lo];
                        for (d, s) in dst.iter_mut().zip(&row[oh * g.wo + ow_lo..ow_hi + oh * g.wo]) {
                            *d += s;
                        }
                    }
                }
            }
        });
    }

    /// A row-major matrix operand of gemm, read as stored (`rows`) or transposed (`cols`).
    struct Mat<'a> {
        data: &'a [f32],
        col_stride: isize,
        row_stride: isize,
    }

    impl<'a> Mat<'a> {
        /// A stored [rows, width] row-major.
        fn rows(data: &'a [f32], width: usize) -> Self {
            Self { data, col_stride: 1, row_stride: width as isize }
        }

        /// The transpose of a stored [rows, width] row-major.
        fn cols(data: &'a [f32], width: usize) -> Self {
            Self { data, col_stride: width as isize, row_stride: 1 }
        }
    }

    /// dst [m, n] (row-major) = lhs [m, k] @ rhs [k, n], or dst += where `accumulate`.
    fn matmul(m: usize, n: usize, k: usize, dst: &mut [f32], lhs: Mat, rhs: Mat, accumulate: bool) {
        assert!(dst.len() >= m * n);
        // Same rule as burn-flex's matmul: threads from ~7 M multiply-adds up.
        let parallelism = if m * n * k >= 192 * 192 * 192 { gemm::Parallelism::Rayon(0) } else { gemm::Parallelism::None };
        // SAFETY: dst holds m x n values at (row stride n, column stride 1); lhs and rhs hold
        // m x k and k x n values at their strides (each built from a slice of that shape).
        unsafe {
            gemm::gemm(
                m,
                n,
                k,
                dst.as_mut_ptr(),
                1,
                n as isize,
                accumulate,
                lhs.data.as_ptr(),
                lhs.col_stride,
                lhs.row_stride,
                rhs.data.as_ptr(),
                rhs.col_stride,
                rhs.row_stride,
                if accumulate { 1.0 } else { 0.0 },
                1.0,
                false,
                false,
                false,
                parallelism,
            );
        }
    }
}

#[cfg(all(test, feature = "flex"))]
mod tests {
    use super::flex::batched;
    use super::*;
    use burn::nn::PaddingConfig2d;
    use burn::nn::conv::Conv2dConfig;
    use burn::tensor::{Distribution, Tolerance};

    /// max |a - b| over b's largest |value|.
    fn rel_diff<const D: usize>(a: Tensor<D>, b: Tensor<D>) -> f32 {
        let scale = b.clone().abs().max().into_scalar::<f32>().max(1e-12);
        (a - b).abs().max().into_scalar::<f32>() / scale
    }

    fn cases() -> Vec<(Conv2dConfig, [usize; 4])> {
        vec![
            // ConvNet's first layer on a 28 px grey image (padding 3), and a later one.
            (Conv2dConfig::new([1, 6], [3, 3]).with_padding(PaddingConfig2d::Explicit(3, 3, 3, 3)), [3, 1, 28, 28]),
            (Conv2dConfig::new([5, 4], [3, 3]).with_padding(PaddingConfig2d::Explicit(1, 1, 1, 1)), [4, 5, 9, 7]),
            // Asymmetric padding, no bias (ResNet blocks), Same and Valid.
            (Conv2dConfig::new([3, 7], [3, 3]).with_padding(PaddingConfig2d::Explicit(2, 0, 1, 3)).with_bias(false), [2, 3, 6, 5]),
            (Conv2dConfig::new([4, 4], [3, 3]).with_padding(PaddingConfig2d::Same), [2, 4, 8, 8]),
            (Conv2dConfig::new([2, 3], [3, 3]), [2, 2, 5, 6]),
        ]
    }

    /// Output, dx, dW and db of the batched path against burn's convolution on plain, autodiff and
    /// checkpointed Flex devices, the batch in one chunk and one image per chunk. Tolerance 1e-5 of
    /// the largest value: the products add the same terms (at most Cin*9 = 45 for y and dx, N*Ho*Wo
    /// = 2,352 for dW) in another order, f32 rounding of ~1e-7 per addition.
    #[test]
    fn matches_burns_convolution() {
        let plain = Device::flex();
        for device in [plain.clone(), plain.clone().autodiff(), plain.clone().autodiff().gradient_checkpointing()] {
            let tracked = device.gradient_checkpointing_strategy().is_some();
            for (cfg, dims) in cases() {
                let conv = cfg.init(&device);
                for chunk_floats in [CHUNK_FLOATS, 1] {
                    let mut x = Tensor::<4>::random(dims, Distribution::Normal(0.0, 1.0), &device);
                    if tracked {
                        x = x.require_grad();
                    }
                    let reference = conv.forward(x.clone());
                    let y = batched(&conv, &x, chunk_floats).expect("3x3 stride-1 f32 on Flex takes the batched path");
                    assert_eq!(y.dims(), reference.dims());
                    let d = rel_diff(y.clone(), reference.clone());
                    assert!(d <= 1e-5, "{cfg:?} {dims:?}: output off by {d}");
                    if !tracked {
                        continue;
                    }
                    let r = Tensor::<4>::random(reference.dims(), Distribution::Normal(0.0, 1.0), &device);
                    let ours = (y * r.clone()).sum().backward();
                    let theirs = (reference * r).sum().backward();
                    let mut pairs = vec![
                        ("dx", rel_diff(x.grad(&ours).unwrap(), x.grad(&theirs).unwrap())),
                        ("dW", rel_diff(conv.weight.grad(&ours).unwrap(), conv.weight.grad(&theirs).unwrap())),
                    ];
                    if let Some(b) = &conv.bias {
                        pairs.push(("db", rel_diff(b.grad(&ours).unwrap(), b.grad(&theirs).unwrap())));
                    }
                    for (what, d) in pairs {
                        assert!(d <= 1e-5, "{cfg:?} {dims:?}: {what} off by {d}");
                    }
                }
            }
        }
        // The comparison can fail: one input value moved by 0.1% (+0.01) moves the output past it.
        let conv = Conv2dConfig::new([2, 3], [3, 3]).with_padding(PaddingConfig2d::Same).init(&plain);
        let x = Tensor::<4>::random([1, 2, 5, 5], Distribution::Normal(0.0, 1.0), &plain);
        let one = [0..1, 0..1, 2..3, 2..3];
        let bumped = x.clone().slice_assign(one.clone(), x.clone().slice(one) * 1.001 + 0.01);
        assert!(rel_diff(batched(&conv, &bumped, CHUNK_FLOATS).unwrap(), conv.forward(x)) > 1e-5);
    }

    /// Other convolutions run burn's own, unchanged.
    #[test]
    fn other_convolutions_run_burns() {
        let device = Device::flex();
        let x = Tensor::<4>::random([2, 3, 8, 8], Distribution::Normal(0.0, 1.0), &device);
        for cfg in [
            Conv2dConfig::new([3, 4], [3, 3]).with_stride([2, 2]),
            Conv2dConfig::new([3, 4], [1, 1]),
            Conv2dConfig::new([3, 4], [3, 3]).with_dilation([2, 2]),
            Conv2dConfig::new([3, 3], [3, 3]).with_groups(3),
        ] {
            let conv = cfg.init(&device);
            assert!(batched(&conv, &x, CHUNK_FLOATS).is_none(), "{cfg:?}");
            conv2d(&conv, x.clone()).into_data().assert_approx_eq::<f32>(&conv.forward(x.clone()).into_data(), Tolerance::absolute(0.0));
        }
    }
}

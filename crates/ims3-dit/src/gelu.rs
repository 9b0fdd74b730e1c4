//! The MLP's activation: GELU with the tanh approximation (`nn.GELU(approximate="tanh")`).
//!
//! ```text
//! u  = sqrt(2/pi) (x + 0.044715 x^3)
//! y  = 0.5 x (1 + tanh(u)) = x / (1 + e),  e = exp(min(-2u, 80))
//! dy/dx = s + x e s^2 2 sqrt(2/pi) (1 + 3 * 0.044715 x^2),  s = 1 / (1 + e)   (0 for the x term where -2u >= 80)
//! ```
//!
//! `(1 + tanh u) / 2 = sigmoid(2u)`, so the quotient is the same function as burn's
//! `gelu_approximate`, with `x^3` as two products (as PyTorch's kernel does) instead of `powf`
//! and one `exp` instead of `tanh`: on the CPU backend libm's `powf` and `tanhf` were a fifth of
//! a DiT forward's time (`benches/NOTES-cpu.md`). For u -> -inf the quotient is a signed zero, as
//! it should be.
//!
//! The exponent is capped at 80 (`exp(80)` ~ 5.5e34, finite in f32 and bf16): past it the value is
//! below 1e-33 either way, but an infinite `exp` made the backward `0 * inf = NaN` for every
//! pre-activation below about -9.6 (one such unit in a pixel DiT's pretraining turned all its
//! weights to NaN in one step). Capped, the gradient there is 0, as the exact derivative is to f32.
//!
//! On Flex in f32 the operations run fused, one pass over the values each way, instead of the ten
//! passes of the composite (each of which Flex runs on one thread):
//! - outside autodiff (sampling, no-grad forwards) the pass gives the composite's bits
//!   (`fused_gelu_tanh_is_bit_identical`);
//! - under autodiff (fine-tuning) the forward is that same pass, and the backward is the
//!   derivative above, computed from x in one pass. It rounds differently from the composite's
//!   chain of backward steps (`fused_gelu_tanh_gradient_matches_the_composite`: within 2e-6 of
//!   the larger of the two values and 1).
//!
//! Any other backend or dtype runs the composite of tensor ops.

use burn::prelude::*;

const SQRT_2_OVER_PI: f64 = 0.797_884_560_802_865_4;
const GELU_A: f64 = 0.044715;
const GELU_EXP_CAP: f64 = 80.0;

/// GELU (tanh approximation): fused on Flex in f32, the composite of tensor ops elsewhere.
pub fn gelu_tanh<const D: usize>(x: Tensor<D>) -> Tensor<D> {
    #[cfg(feature = "flex")]
    if let Some(y) = flex::fused(&x) {
        return y;
    }
    composite(x)
}

/// The formula as tensor ops (any backend, dtype, autodiff): the reference of the fused passes.
fn composite<const D: usize>(x: Tensor<D>) -> Tensor<D> {
    let x3 = x.clone() * x.clone() * x.clone();
    let u = (x.clone() + x3 * GELU_A) * SQRT_2_OVER_PI;
    x / ((u * -2.0).clamp_max(GELU_EXP_CAP).exp() + 1.0)
}

#[cfg(feature = "flex")]
mod flex {
    use super::{GELU_A, GELU_EXP_CAP, SQRT_2_OVER_PI};
    use burn::backend::autodiff::checkpoint::base::Checkpointer;
    use burn::backend::autodiff::checkpoint::strategy::{BalancedCheckpointing, NoCheckpointing};
    use burn::backend::autodiff::grads::Gradients;
    use burn::backend::autodiff::ops::{Backward, Ops, OpsKind};
    use burn::backend::flex::FlexTensor;
    use burn::backend::{Autodiff, Flex, GradientCheckpointingStrategy};
    use burn::prelude::*;
    use burn::tensor::{DType, TensorData};
    use rayon::prelude::*;
    use std::mem::MaybeUninit;

    /// Fewest values for which a pass is split over rayon's threads (below, and with one thread,
    /// the calling thread runs it: handing small tensors to the pool cost more than it saved,
    /// `results/bench/cpu-gelu-fused.json`).
    const PARALLEL_MIN: usize = 1 << 16;

    /// The composite's constants as Flex rounds its scalars: to f32.
    const A: f32 = GELU_A as f32;
    const C: f32 = SQRT_2_OVER_PI as f32;
    const CAP: f32 = GELU_EXP_CAP as f32;

    /// The capped exponent `min(-2u, 80)`, with the composite's operations in its order and
    /// precision (Flex's `clamp_max` lets NaN through). Shared by both directions.
    #[inline(always)]
    fn exponent(x: f32) -> f32 {
        let v = ((x + x * x * x * A) * C) * -2.0;
        if v.is_nan() || v < CAP { v } else { CAP }
    }

    /// y = x / (exp(v) + 1), as the composite (Flex's `exp` is `f32::exp`).
    #[inline(always)]
    fn value(x: f32) -> f32 {
        x / (exponent(x).exp() + 1.0)
    }

    /// dy/dx (module docs); `e * s` before the second `s` so that `e ~ 5.5e34` does not overflow.
    #[inline(always)]
    fn slope(x: f32) -> f32 {
        let v = exponent(x);
        let e = v.exp();
        let s = 1.0 / (e + 1.0);
        if v < CAP { s + x * (e * s) * s * (2.0 * C) * (1.0 + 3.0 * A * x * x) } else { s }
    }

    /// `f(a_i, b_i)` of two equally long inputs into a new vector, on rayon's threads from
    /// [`PARALLEL_MIN`] values up.
    fn zip_map(a: &[f32], b: &[f32], f: impl Fn(f32, f32) -> f32 + Sync) -> Vec<f32> {
        assert_eq!(a.len(), b.len());
        let pass = |dst: &mut [MaybeUninit<f32>], a: &[f32], b: &[f32]| {
            for ((d, &a), &b) in dst.iter_mut().zip(a).zip(b) {
                d.write(f(a, b));
            }
        };
        let mut out = Vec::with_capacity(a.len());
        let dst = &mut out.spare_capacity_mut()[..a.len()];
        if a.len() < PARALLEL_MIN || rayon::current_num_threads() == 1 {
            pass(dst, a, b);
        } else {
            dst.par_chunks_mut(1 << 14).zip(a.par_chunks(1 << 14)).zip(b.par_chunks(1 << 14)).for_each(|((d, a), b)| pass(d, a, b));
        }
        // SAFETY: the chunks cover 0..len and `pass` writes every value of its chunk.
        unsafe { out.set_len(a.len()) };
        out
    }

    fn forward(x: &[f32]) -> Vec<f32> {
        zip_map(x, x, |x, _| value(x))
    }

    fn f32_contiguous(t: FlexTensor) -> Option<FlexTensor> {
        if t.dtype() != DType::F32 {
            return None;
        }
        Some(if t.as_slice::<f32>().is_some() { t } else { t.to_contiguous() })
    }

    fn slice(t: &FlexTensor) -> &[f32] {
        t.as_slice::<f32>().expect("contiguous f32 (f32_contiguous)")
    }

    fn tensor(values: Vec<f32>, shape: Vec<usize>) -> FlexTensor {
        FlexTensor::from_data(TensorData::new(values, shape))
    }

    /// The autodiff path for one checkpointing strategy (a macro: burn converts to each strategy's
    /// primitive through its own trait impl).
    macro_rules! tracked {
        ($strategy:ty, $x:expr) => {{
            type AD = Autodiff<Flex, $strategy>;
            let xa = $x.clone().try_into_primitive::<AD>().ok()?;
            let xp = f32_contiguous(xa.primitive().clone())?;
            let shape = xp.layout().shape().to_vec();
            let y = tensor(forward(slice(&xp)), shape);
            let out = match Backward::<Flex, 1>::prepare::<$strategy>(GeluBackward, [xa.node()]).compute_bound().stateful() {
                OpsKind::Tracked(prep) => prep.finish(xp, y),
                OpsKind::UnTracked(prep) => prep.finish(y),
            };
            Some(Tensor::from_primitive::<AD>(out))
        }};
    }

    /// The fused GELU where it applies (Flex, f32), else None.
    pub(super) fn fused<const D: usize>(x: &Tensor<D>) -> Option<Tensor<D>> {
        match x.device().gradient_checkpointing_strategy() {
            None => {
                let p = f32_contiguous(x.clone().try_into_primitive::<Flex>().ok()?)?;
                let shape = p.layout().shape().to_vec();
                Some(Tensor::from_primitive::<Flex>(tensor(forward(slice(&p)), shape)))
            }
            Some(GradientCheckpointingStrategy::Disabled) => tracked!(NoCheckpointing, x),
            Some(GradientCheckpointingStrategy::Balanced) => tracked!(BalancedCheckpointing, x),
        }
    }

    /// Backward step: parent x; state x (contiguous f32).
    #[derive(Debug)]
    struct GeluBackward;

    impl Backward<Flex, 1> for GeluBackward {
        type State = FlexTensor;

        fn backward(self, ops: Ops<Self::State, 1>, grads: &mut Gradients, _checkpointer: &mut Checkpointer) {
            let dy = f32_contiguous(grads.consume::<Flex>(&ops.node)).expect("f32 output gradient");
            let [px] = ops.parents;
            let Some(node) = px else { return };
            let x = ops.state;
            let shape = x.layout().shape().to_vec();
            let dx = zip_map(slice(&x), slice(&dy), |x, g| g * slope(x));
            grads.register::<Flex>(node.id, tensor(dx, shape));
        }
    }
}
#[cfg(test)]
mod tests {
    use super::*;
    use burn::tensor::TensorData;

    /// The fused forward gives the composite's bits, on plain and autodiff devices.
    #[test]
    fn fused_gelu_tanh_is_bit_identical() {
        // Against the composite's tensor ops: values from the test below, random normals, a
        // non-contiguous view and NaN.
        let device = Device::flex();
        let mut xs: Vec<f32> = (-400..=400).map(|i| i as f32 * 0.025).chain([-1e4, -200.0, -88.0, -9.7, 88.0, 200.0, 1e4, f32::NAN]).collect();
        xs.extend(Tensor::<1>::random([4096], burn::tensor::Distribution::Normal(0.0, 3.0), &device).into_data().try_to_vec::<f32>().unwrap());
        let plain = Tensor::<2>::from_data(TensorData::new(xs.clone(), [xs.len() / 5, 5]), &device);
        let tracked = Tensor::<2>::from_data(TensorData::new(xs.clone(), [xs.len() / 5, 5]), &device.clone().autodiff()).require_grad();
        assert!(flex::fused(&plain).is_some(), "plain f32 Flex takes the fused pass");
        assert!(flex::fused(&tracked).is_some(), "autodiff f32 Flex takes the fused pass");
        for (fused, composite) in [
            (gelu_tanh(plain.clone()), composite(plain.clone())),
            (gelu_tanh(plain.clone().swap_dims(0, 1)), composite(plain.clone().swap_dims(0, 1))),
            (gelu_tanh(tracked.clone()).inner(), composite(plain.clone())),
        ] {
            let (f, c) = (fused.into_data().try_to_vec::<f32>().unwrap(), composite.into_data().try_to_vec::<f32>().unwrap());
            assert_eq!(f.len(), c.len());
            for (i, (a, b)) in f.iter().zip(&c).enumerate() {
                assert!(a.to_bits() == b.to_bits() || (a.is_nan() && b.is_nan()), "value {i}: fused {a}, composite {b}");
            }
        }
    }

    /// `gelu_tanh` is the tanh-approximated GELU: against burn's `gelu_approximate` and against the
    /// formula in f64, over the range a network sees plus both tails (where naive forms give NaN).
    #[test]
    fn gelu_tanh_is_the_tanh_approximation() {
        let device = Device::flex();
        let xs: Vec<f32> = (-400..=400).map(|i| i as f32 * 0.025).chain([-1e4, -200.0, -88.0, 88.0, 200.0, 1e4]).collect();
        let ours = gelu_tanh(Tensor::<1>::from_floats(xs.as_slice(), &device)).into_data().try_to_vec::<f32>().unwrap();
        let burns = burn::tensor::activation::gelu_approximate(Tensor::<1>::from_floats(xs.as_slice(), &device)).into_data().try_to_vec::<f32>().unwrap();
        for ((&x, &o), &b) in xs.iter().zip(&ours).zip(&burns) {
            let x64 = x as f64;
            let exact = 0.5 * x64 * (1.0 + ((2.0f64 / std::f64::consts::PI).sqrt() * (x64 + 0.044715 * x64.powi(3))).tanh());
            assert!(o.is_finite(), "gelu_tanh({x}) = {o}");
            assert!((o as f64 - exact).abs() <= 1e-6 * exact.abs().max(1.0), "gelu_tanh({x}) = {o}, exact {exact}");
            if b.is_finite() {
                assert!((o - b).abs() <= 1e-6 * b.abs().max(1.0), "gelu_tanh({x}) = {o}, burn {b}");
            }
        }
        assert!(ours[xs.len() - 6].abs() < 1e-30, "large negative inputs give (almost) zero");
        assert_eq!(*ours.last().unwrap(), 1e4, "large positive inputs give x");
    }

    /// The gradient of `gelu_tanh` is finite everywhere and equals the derivative of the formula
    /// (computed in f64) to 1e-5: in particular in the far negative tail, where an overflowing
    /// `exp` once gave NaN gradients although the value was a clean zero.
    #[test]
    fn gelu_tanh_gradient_is_finite_in_both_tails() {
        let device = Device::flex().autodiff();
        let xs: Vec<f32> = (-200..=200).map(|i| i as f32 * 0.1).chain([-1e4, -200.0, -50.0, -12.0, -9.7, -9.5, 50.0, 200.0, 1e4]).collect();
        let x = Tensor::<1>::from_floats(xs.as_slice(), &device).require_grad();
        let grads = gelu_tanh(x.clone()).sum().backward();
        let g = x.grad(&grads).expect("x requires grad").into_data().try_to_vec::<f32>().unwrap();
        let c = (2.0f64 / std::f64::consts::PI).sqrt();
        for (&x, &g) in xs.iter().zip(&g) {
            let x = x as f64;
            let u = c * (x + 0.044715 * x.powi(3));
            let t = u.tanh();
            let exact = 0.5 * (1.0 + t) + 0.5 * x * (1.0 - t * t) * c * (1.0 + 3.0 * 0.044715 * x * x);
            assert!(g.is_finite(), "d gelu_tanh / dx at {x} = {g}");
            assert!((g as f64 - exact).abs() <= 1e-5, "d gelu_tanh / dx at {x} = {g}, exact {exact}");
        }
    }

    /// The fused backward against the composite's chain of backward steps, on plain autodiff and
    /// checkpointed devices, over the range a network sees, the tails and random normals.
    /// Tolerance 2e-6 of max(|gradient|, 1): the two round differently (the slope is ~10 f32
    /// operations either way, a few ulps apart near its peak of ~1.13); a bump of 1e-5 in the
    /// slope fails it.
    #[test]
    fn fused_gelu_tanh_gradient_matches_the_composite() {
        for device in [Device::flex().autodiff(), Device::flex().autodiff().gradient_checkpointing()] {
            device.seed(5);
            let mut xs: Vec<f32> = (-400..=400).map(|i| i as f32 * 0.025).chain([-1e4, -200.0, -88.0, -9.7, 88.0, 200.0, 1e4]).collect();
            xs.extend(Tensor::<1>::random([4096], burn::tensor::Distribution::Normal(0.0, 3.0), &device).into_data().try_to_vec::<f32>().unwrap());
            let x = Tensor::<1>::from_floats(xs.as_slice(), &device).require_grad();
            let r = Tensor::<1>::random([xs.len()], burn::tensor::Distribution::Normal(0.0, 1.0), &device);
            let fused = x.grad(&(gelu_tanh(x.clone()) * r.clone()).sum().backward()).unwrap().into_data().try_to_vec::<f32>().unwrap();
            let reference = x.grad(&(composite(x.clone()) * r).sum().backward()).unwrap().into_data().try_to_vec::<f32>().unwrap();
            let worst = fused.iter().zip(&reference).map(|(a, b)| (a - b).abs() / b.abs().max(1.0)).fold(0f32, f32::max);
            assert!(worst <= 2e-6, "fused GELU gradient off the composite's by {worst}");
        }
    }
}

//! Samplers and the inverter on an analytic denoiser: for data that is a single point x*, the
//! exact eps prediction is `(x_t - sqrt(abar_t) x*) / sqrt(1 - abar_t)`, so DDIM must map x*
//! to noise and back without loss, and every sampler must land on x*.

use burn::prelude::*;
use ims3_diffusion::{GaussianDiffusion, NoiseSource};

fn vals(t: Tensor<4>) -> Vec<f32> {
    t.into_data().convert::<f32>().try_to_vec::<f32>().unwrap()
}

fn max_abs_diff(a: &[f32], b: &[f32]) -> f32 {
    a.iter().zip(b).map(|(x, y)| (x - y).abs()).fold(0.0, f32::max)
}

/// eps of the point mass at `target`, plus zero "variance values" (learned sigma halfway).
fn oracle<'a>(d: &'a GaussianDiffusion, target: Tensor<4>) -> impl Fn(Tensor<4>, Tensor<1>) -> Tensor<4> + 'a {
    move |x: Tensor<4>, t: Tensor<1>| {
        let device = x.device();
        let ts: Vec<usize> = t.into_data().convert::<f32>().try_to_vec::<f32>().unwrap().iter()
            .map(|&orig| d.schedule.timestep_map.iter().position(|&m| m as f32 == orig).unwrap())
            .collect();
        let s = &d.schedule;
        let eps = (x.clone() - d.extract(&s.sqrt_alphas_cumprod, &ts, &device) * target.clone())
            / d.extract(&s.sqrt_one_minus_alphas_cumprod, &ts, &device);
        Tensor::cat(vec![eps, x.zeros_like()], 1)
    }
}

#[test]
fn ddim_inversion_round_trip_is_exact_for_the_exact_denoiser() {
    let device = Device::flex();
    let d = GaussianDiffusion::dit(&"50".parse().unwrap()).unwrap();
    let mut noise = NoiseSource::new(1);
    let target = noise.normal([2, 4, 4, 4], &device).clamp(-0.9, 0.9);
    let model = oracle(&d, target.clone());
    let (x_t, rec) = d.ddim_round_trip(&model, target.clone(), true);
    assert!(max_abs_diff(&vals(rec), &vals(target.clone())) < 1e-3);
    // x_T is not the data: the inversion went somewhere.
    assert!(max_abs_diff(&vals(x_t), &vals(target)) > 0.1);
}

#[test]
fn ddpm_and_ddim_sampling_reach_the_point_mass_and_are_seeded() {
    let device = Device::flex();
    let d = GaussianDiffusion::dit(&"25".parse().unwrap()).unwrap();
    let target = Tensor::<4>::from_floats([[[[0.5, -0.25], [0.0, 0.75]]]], &device);
    let model = oracle(&d, target.clone());
    let run = |seed: u64| {
        let mut noise = NoiseSource::new(seed);
        let x_t = noise.normal([1, 1, 2, 2], &device);
        vals(d.p_sample_loop(&model, x_t, false, &mut noise, false))
    };
    let a = run(7);
    assert_eq!(a, run(7), "same seed, same samples");
    assert!(max_abs_diff(&a, &vals(target.clone())) < 1e-2, "{a:?}");
    let mut noise = NoiseSource::new(3);
    let x_t = noise.normal([1, 1, 2, 2], &device);
    let ddim = vals(d.ddim_sample_loop(&model, x_t, false, 0.0, &mut noise, false));
    assert!(max_abs_diff(&ddim, &vals(target)) < 1e-3, "{ddim:?}");
}

#[test]
fn loss_terms_are_per_sample_and_vb_ignores_the_eps_gradient() {
    let device = Device::flex().autodiff();
    let d = GaussianDiffusion::dit(&Default::default()).unwrap();
    let mut noise = NoiseSource::new(0);
    let x0 = noise.normal([3, 4, 4, 4], &device);
    let eps = noise.normal([3, 4, 4, 4], &device);
    let t = vec![0, 10, 999];
    let xt = d.q_sample(x0.clone(), &t, eps.clone());
    let out = noise.normal([3, 8, 4, 4], &device).require_grad();
    let terms = d.training_losses_from_output(out.clone(), x0, xt, &t, eps);
    assert_eq!(terms.loss.dims(), [3]);
    // Gradient of the VB term alone reaches only the variance half of the output.
    let grads = terms.vb.sum().backward();
    let g = out.grad(&grads).unwrap();
    let g: Vec<f32> = g.into_data().convert::<f32>().try_to_vec::<f32>().unwrap();
    let per_sample = 8 * 16;
    for n in 0..3 {
        let s = &g[n * per_sample..(n + 1) * per_sample];
        assert!(s[..64].iter().all(|v| *v == 0.0), "eps half receives no VB gradient");
        assert!(s[64..].iter().any(|v| *v != 0.0), "variance half does");
    }
}

//! Difffit on a tiny DiT on Flex with autodiff: after AdamW steps on the IMS3 loss, every frozen
//! parameter is bit-identical and every trained one has moved; the EMA blends as specified.

use burn::optim::{AdamWConfig, GradientsParams};
use burn::prelude::*;
use ims3_dit::{DiT, DiTConfig};
use ims3_im::{difffit_trainable_count, im_loss, mark_difffit_trainable, parameters_by_path, trainable_tensors, Ema, IM_LAMBDA};

fn tiny() -> DiTConfig {
    DiTConfig {
        input_size: 8,
        patch_size: 2,
        in_channels: 4,
        hidden_size: 32,
        depth: 3,
        num_heads: 4,
        mlp_ratio: 4.0,
        class_dropout_prob: 0.1,
        num_classes: 5,
        learn_sigma: true,
        gamma_blocks: 2,
    }
}

/// The reference init zeroes adaLN and the output layer, which would leave many gradients at
/// zero; give every parameter a small random offset first.
fn jittered(cfg: &DiTConfig, device: &Device) -> DiT {
    use burn::module::{ModuleMapper, Param};
    struct Jitter;
    impl ModuleMapper for Jitter {
        fn map_float<const D: usize>(&mut self, param: Param<Tensor<D>>) -> Param<Tensor<D>> {
            let (id, t, mapper) = param.consume();
            let noise = t.random_like(burn::tensor::Distribution::Normal(0.0, 0.05));
            Param::from_mapped_value(id, (t + noise).detach(), mapper)
        }
    }
    cfg.init(device).map(&mut Jitter)
}

#[test]
fn frozen_parameters_stay_bit_identical_and_trained_ones_move() {
    let _serial = serial();
    let device = Device::flex().autodiff();
    device.seed(0);
    let cfg = tiny();
    let mut model = mark_difffit_trainable(jittered(&cfg, &device));
    // The rule's count on the module equals the count on the checkpoint keys.
    let by_keys: usize = ims3_dit::expected_shapes(&cfg)
        .iter()
        .filter(|(k, _)| ims3_dit::is_difffit_trainable(k))
        .map(|(_, s)| s.iter().product::<usize>())
        .sum();
    assert_eq!(difffit_trainable_count(&model), by_keys);

    let before = parameters_by_path(&model);
    let diffusion = ims3_diffusion::GaussianDiffusion::dit(&Default::default()).unwrap();
    let mut noise = ims3_diffusion::NoiseSource::new(0);
    let mut opt = AdamWConfig::new().with_beta_1(0.9).with_beta_2(0.999).with_epsilon(1e-8).with_weight_decay(0.0).init();
    let y = Tensor::<1, Int>::from_ints([1, 3], &device);
    for _ in 0..2 {
        let x0 = noise.normal([2, 4, 8, 8], &device);
        let eps = noise.normal([2, 4, 8, 8], &device);
        let t = vec![10, 600];
        let xt = diffusion.q_sample(x0.clone(), &t, eps.clone());
        let out = model.forward(xt.clone(), diffusion.model_timesteps(&t, &device), y.clone());
        let terms = diffusion.training_losses_from_output(out.clone(), x0.clone(), xt.clone(), &t, eps);
        let z1 = diffusion.p_mean_variance_from_output(out, xt, &t, false).mean;
        let net = |x: Tensor<4>, tt: Tensor<1>| model.forward(x, tt, y.clone());
        let (z2, _) = diffusion.ddim_reverse_sample(&net, x0, &t, true);
        let loss = terms.loss.mean() + im_loss(z1, z2, IM_LAMBDA);
        let grads = GradientsParams::from_grads(loss.backward(), &model);
        model = opt.step(1e-3, model, grads);
    }
    let after = parameters_by_path(&model);
    assert_eq!(before.len(), after.len());
    let (mut frozen, mut trained) = (0, 0);
    for ((path, a), (path_b, b)) in before.iter().zip(&after) {
        assert_eq!(path, path_b);
        if ims3_dit::is_difffit_trainable(path) {
            trained += 1;
            assert!(a != b, "trainable {path} did not move");
        } else {
            frozen += 1;
            assert!(a.iter().zip(b).all(|(x, y)| x.to_bits() == y.to_bits()), "frozen {path} changed");
        }
    }
    assert!(frozen > 0 && trained > 0);
    assert!(before.iter().any(|(p, _)| p == "pos_embed") && !ims3_dit::is_difffit_trainable("pos_embed"));
}

#[test]
fn ema_blends_every_trained_parameter_and_only_those() {
    let _serial = serial();
    let device = Device::flex().autodiff();
    let cfg = tiny();
    let model = mark_difffit_trainable(jittered(&cfg, &device));
    let mut ema = Ema::new(&model, 0.75);
    assert_eq!(ema.values.len(), trainable_tensors(&model).len());
    assert!(ema.values.keys().all(|k| ims3_dit::is_difffit_trainable(k)) && !ema.values.contains_key("pos_embed"));
    // Move the model: add 1 to every parameter, then blend with decay 0.75.
    let moved = {
        use burn::module::{ModuleMapper, Param};
        struct AddOne;
        impl ModuleMapper for AddOne {
            fn map_float<const D: usize>(&mut self, param: Param<Tensor<D>>) -> Param<Tensor<D>> {
                param.map(|t| {
                    let trained = t.is_require_grad();
                    let t = (t + 1.0).detach();
                    if trained { t.require_grad() } else { t }
                })
            }
        }
        model.clone().map(&mut AddOne)
    };
    ema.update(&moved);
    let before: std::collections::BTreeMap<String, Vec<f32>> = parameters_by_path(&model).into_iter().collect();
    for (p, t) in &ema.values {
        let got: Vec<f32> = t.clone().into_data().convert::<f32>().try_to_vec::<f32>().unwrap();
        for (x, y) in before[p].iter().zip(&got) {
            assert!((y - (x + 0.25)).abs() < 1e-6, "{p}: {y} vs {}", x + 0.25);
        }
    }
}

/// The tests of this file run one at a time. burn 0.22.1's autodiff can drop a gradient when
/// one thread's backward reclaims graph nodes another thread is registering
/// (tracel-ai/burn#5573; see `ims3_util::autodiff_guard`): training steps hold that guard, but a
/// test's own setup and checks (a base model built from parameters that require gradients, a
/// forward outside a step) build graph nodes too, and one of them lost a gradient in a
/// concurrent run. Serialising the tests costs about a second.
fn serial() -> std::sync::MutexGuard<'static, ()> {
    static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

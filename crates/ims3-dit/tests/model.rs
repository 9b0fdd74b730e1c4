//! DiT behaviour that needs no fixture: init, save/load round trip, wrong configs, CFG, label drop.

use burn::prelude::*;
use ims3_dit::{CfgChannels, DiTConfig, load_dit, save_dit};

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

fn inputs(device: &Device) -> (Tensor<4>, Tensor<1>, Tensor<1, Int>) {
    let x = Tensor::<4>::random([2, 4, 8, 8], burn::tensor::Distribution::Normal(0.0, 1.0), device);
    let t = Tensor::<1>::from_floats([3.0, 750.0], device);
    let y = Tensor::<1, Int>::from_ints([1, 4], device);
    (x, t, y)
}

fn values(t: Tensor<4>) -> Vec<f32> {
    t.into_data().convert::<f32>().try_to_vec::<f32>().unwrap()
}

/// A model whose zero-initialised layers are given random values, so outputs depend on
/// every weight (the reference init zeroes adaLN and the output layer).
fn randomised(cfg: &DiTConfig, device: &Device) -> ims3_dit::DiT {
    use burn::module::{Module, ModuleMapper, Param};
    struct Jitter;
    impl ModuleMapper for Jitter {
        fn map_float<const D: usize>(&mut self, param: Param<Tensor<D>>) -> Param<Tensor<D>> {
            let (id, t, mapper) = param.consume();
            let noise = t.random_like(burn::tensor::Distribution::Normal(0.0, 0.05));
            Param::from_mapped_value(id, t + noise, mapper)
        }
    }
    cfg.init(device).map(&mut Jitter)
}

#[test]
fn init_is_the_reference_init() {
    let device = Device::flex();
    let cfg = tiny();
    let m = cfg.init(&device);
    // adaLN-Zero: every block is the identity at init, and the output is zero.
    let (x, t, y) = inputs(&device);
    let out = values(m.forward(x, t, y));
    assert_eq!(out.len(), 2 * 8 * 8 * 8);
    assert!(out.iter().all(|v| *v == 0.0), "zeroed final layer gives zero output");
    assert_eq!(m.y_embedder.embedding_table.weight.dims(), [6, 32]);
    // pos_embed of the first token is [sin 0, cos 0] for both halves: [0.., 1.., 0.., 1..].
    let pos = m.pos_embed.val().into_data().convert::<f32>().try_to_vec::<f32>().unwrap();
    assert_eq!(&pos[..8], &[0.0; 8]);
    assert_eq!(&pos[8..16], &[1.0; 8]);
    // Token 1 is (row 0, column 1): the first half encodes the column.
    assert!((pos[32] - 1f32.sin()).abs() < 1e-6 && (pos[32 + 16] - 0.0).abs() < 1e-6);
}

#[test]
fn save_load_round_trip_keeps_outputs() {
    let device = Device::flex();
    let cfg = tiny();
    let model = randomised(&cfg, &device);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("tiny.safetensors");
    save_dit(&model, &cfg, &path).unwrap();
    let (back, report) = load_dit(&path, None, None, &device).unwrap();
    assert_eq!(report.config, cfg, "config travels in the header");
    assert_eq!(report.defaulted_gammas, 0);
    let (x, t, y) = inputs(&device);
    let a = values(model.forward(x.clone(), t.clone(), y.clone()));
    let b = values(back.forward(x, t, y));
    assert!(a.iter().any(|v| v.abs() > 1e-3), "randomised model has non-trivial output");
    assert_eq!(a, b);
}

#[test]
fn wrong_config_names_the_file_and_the_mismatching_keys() {
    let device = Device::flex();
    let cfg = tiny();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("tiny.safetensors");
    save_dit(&cfg.init(&device), &cfg, &path).unwrap();

    let wider = DiTConfig { hidden_size: 48, num_heads: 4, ..tiny() };
    let e = load_dit(&path, Some(&wider), None, &device).expect_err("must fail").to_string();
    assert!(e.contains("tiny.safetensors"), "{e}");
    assert!(e.contains("shape mismatch 'blocks.0.adaLN_modulation.1.bias': checkpoint [192], expected [288]"), "{e}");

    let shallower = DiTConfig { depth: 2, ..tiny() };
    let e = load_dit(&path, Some(&shallower), None, &device).expect_err("must fail").to_string();
    assert!(e.contains("unused") && e.contains("blocks.2."), "{e}");

    let more_classes = DiTConfig { num_classes: 9, ..tiny() };
    let e = load_dit(&path, Some(&more_classes), None, &device).expect_err("must fail").to_string();
    assert!(e.contains("y_embedder.embedding_table.weight"), "{e}");
}

#[test]
fn cfg_guides_three_or_all_eps_channels() {
    let device = Device::flex();
    let cfg = tiny();
    let model = randomised(&cfg, &device);
    let (x, _, _) = inputs(&device);
    let x = Tensor::cat(vec![x.clone().narrow(0, 0, 1), x.narrow(0, 0, 1)], 0);
    let t = Tensor::<1>::from_floats([10.0, 10.0], &device);
    let y = Tensor::<1, Int>::from_ints([2, 5], &device); // [cond; null]
    let three = model.forward_with_cfg(x.clone(), t.clone(), y.clone(), 4.0, CfgChannels::FirstThree);
    let all = model.forward_with_cfg(x.clone(), t.clone(), y.clone(), 4.0, CfgChannels::AllEps);
    let plain = model.forward(x, t, y);
    let (three, all, plain) = (values(three), values(all), values(plain));
    let idx = |n: usize, c: usize, i: usize| ((n * 8 + c) * 8 * 8) + i;
    for i in 0..64 {
        // both halves carry the guided eps
        assert_eq!(three[idx(0, 0, i)], three[idx(1, 0, i)]);
        // channel 3: guided only with AllEps; FirstThree keeps the raw conditional output
        assert_eq!(three[idx(0, 3, i)], plain[idx(0, 3, i)]);
        let (c, u) = (plain[idx(0, 3, i)], plain[idx(1, 3, i)]);
        assert!((all[idx(0, 3, i)] - (u + 4.0 * (c - u))).abs() < 1e-4);
        // variance channels are passed through
        assert_eq!(three[idx(1, 6, i)], plain[idx(1, 6, i)]);
    }
}

#[test]
fn label_drop_uses_the_null_row() {
    let device = Device::flex();
    let cfg = tiny();
    let model = randomised(&cfg, &device);
    let (x, t, y) = inputs(&device);
    let drop = Tensor::<1, Bool>::from_bool(TensorData::from([true, false]), &device);
    let dropped = values(model.forward_with_label_drop(x.clone(), t.clone(), y, drop));
    let expect = values(model.forward(x, t, Tensor::<1, Int>::from_ints([5, 4], &device)));
    assert_eq!(dropped, expect);
}

#[test]
fn presets_build_expected_parameter_counts() {
    // DiT-XL/2 of the paper: 675 M parameters (+ 1.1 M for the Difffit gammas of 14 blocks).
    let xl = DiTConfig::preset("DiT-XL/2").unwrap();
    let n: usize = ims3_dit::expected_shapes(&xl).values().map(|s| s.iter().product::<usize>()).sum();
    let gammas = 14 * (1152 * 2 + 1152 * 4);
    assert_eq!(n - gammas, 675_129_632);
    // Difffit: biases + gammas (blocks 0..13) + label table, as the reference counts them.
    let trainable: usize = ims3_dit::expected_shapes(&xl)
        .iter()
        .filter(|(k, _)| ims3_dit::is_difffit_trainable(k))
        .map(|(_, s)| s.iter().product::<usize>())
        .sum();
    assert_eq!(trainable, 1_739_552);
}

#[test]
fn cfg_sampling_as_the_reference_runs_it() {
    // centroid.py: z = cat([z, z]); y = cat([y, null]); p_sample_loop(forward_with_cfg,
    // clip_denoised=False); keep the first half.
    use ims3_diffusion::{GaussianDiffusion, NoiseSource};
    let device = Device::flex();
    let cfg = tiny();
    let model = randomised(&cfg, &device);
    let diffusion = GaussianDiffusion::dit(&"10".parse().unwrap()).unwrap();
    let labels = Tensor::<1, Int>::from_ints([1, 3], &device);
    let net = model.cfg_denoiser(labels, 4.0, CfgChannels::FirstThree);
    let sample = |seed: u64| {
        let mut noise = NoiseSource::new(seed);
        let z = noise.normal([2, 4, 8, 8], &device);
        let z = Tensor::cat(vec![z.clone(), z], 0);
        diffusion.p_sample_loop(&net, z, false, &mut noise, false)
    };
    let a = values(sample(0));
    assert_eq!(a, values(sample(0)), "seeded");
    assert_ne!(a, values(sample(1)));
    assert!(a.iter().all(|v| v.is_finite()));
}

/// The padded launch (DiT-XL/2's head dim 72 -> 80, and a small 8 -> 16) gives the direct
/// attention's output. Tolerance 1e-5 absolute on outputs of magnitude ~1: the paths differ by
/// the pre-scaling of q (sqrt(80/72), then the kernel's 1/sqrt(80), against 1/sqrt(72): a few
/// f32 roundings on logits of magnitude < 10, ~2e-6) and the summation order over the longer
/// zero-padded rows (exact zeros add nothing); softmax and the weighted sum of values below 3
/// carry that error over unchanged in size.
#[test]
fn padded_head_dim_attention_equals_direct() {
    use ims3_dit::AttentionKernel;
    use ims3_dit::model::attention_with;
    let device = Device::flex();
    for d in [72usize, 8, 16] {
        let r = |s: u64| {
            device.seed(s);
            Tensor::<4>::random([2, 3, 17, d], burn::tensor::Distribution::Normal(0.0, 1.0), &device)
        };
        let (q, k, v) = (r(1), r(2), r(3));
        let direct = values(attention_with(q.clone(), k.clone(), v.clone(), AttentionKernel::Direct));
        let padded = attention_with(q.clone(), k.clone(), v.clone(), AttentionKernel::PadHeadDim);
        assert_eq!(padded.dims(), [2, 3, 17, d]);
        let padded = values(padded);
        let err = direct.iter().zip(&padded).map(|(a, b)| (a - b).abs()).fold(0f32, f32::max);
        assert!(err < 1e-5, "head dim {d}: max abs difference {err}");
        // And both equal the formula itself, softmax(q k^T / sqrt(d)) v.
        let formula = values(burn::tensor::activation::softmax(q.matmul(k.swap_dims(2, 3)) * (d as f64).powf(-0.5), 3).matmul(v));
        let err = direct.iter().zip(&formula).map(|(a, b)| (a - b).abs()).fold(0f32, f32::max);
        assert!(err < 1e-5, "head dim {d}: direct vs formula {err}");
    }
}

/// Largest |a - b| over the largest |b| (the parity harness's measure).
fn rel_to_max(a: &[f32], b: &[f32]) -> f32 {
    let scale = b.iter().fold(0f32, |m, v| m.max(v.abs()));
    a.iter().zip(b).map(|(x, y)| (x - y).abs()).fold(0f32, f32::max) / scale
}

/// bf16 weights (`DiT::to_dtype`) against the f32 model on the same inputs: the forward, and
/// a whole 50-step CFG sampling run from the same noise.
///
/// Tolerances, from bf16's 8 significant bits (unit roundoff u = 2^-8 ~ 0.004): each matmul
/// rounds its operands and its output (~3u relative on a single value, much less on sums
/// whose rounding errors are independent), the residual stream adds ~2 blocks' worth, so the
/// forward's largest error is a few percent of its largest value at worst: 0.03 is ~8u. The
/// sampler runs in f32 and sees the network through eps; 50 DDPM steps with the same noise
/// keep the trajectories together (each step shrinks earlier differences by sqrt(alpha) and
/// adds a new eps error), so the final sample stays within 0.02 of the f32 sample's largest
/// value (measured on Flex: 6.3e-3 for the forward, 3.0e-3 for sampling).
/// The same comparison against another noise seed must exceed both by far: the test can fail.
#[test]
fn bf16_weights_track_the_f32_model() {
    use burn::tensor::FloatDType;
    use ims3_diffusion::{GaussianDiffusion, NoiseSource};
    let device = Device::flex();
    let cfg = tiny();
    let f32_model = randomised(&cfg, &device);
    let bf16_model = f32_model.clone().to_dtype(FloatDType::BF16);
    assert_eq!(bf16_model.dtype(), FloatDType::BF16);
    assert_eq!(f32_model.dtype(), FloatDType::F32);
    let (x, t, y) = inputs(&device);
    let want = values(f32_model.forward(x.clone(), t.clone(), y.clone()));
    let out = bf16_model.forward(x.clone(), t.clone(), y.clone());
    assert_eq!(out.dtype(), burn::tensor::DType::F32, "outputs keep the caller's dtype");
    let err = rel_to_max(&values(out), &want);
    eprintln!("bf16 forward: max err / max |out| = {err:.2e}");
    assert!(err > 0.0 && err < 0.03, "bf16 forward: {err}");
    let f32_again = values(f32_model.clone().to_dtype(FloatDType::F32).forward(x, t, y));
    assert_eq!(f32_again, want, "to_dtype(F32) on an f32 model changes nothing");

    let diffusion = GaussianDiffusion::dit(&"50".parse().unwrap()).unwrap();
    let sample = |model: &ims3_dit::DiT, seed: u64| {
        let labels = Tensor::<1, Int>::from_ints([1, 3], &device);
        let net = model.cfg_denoiser(labels, 4.0, CfgChannels::FirstThree);
        let mut noise = NoiseSource::new(seed);
        let z = noise.normal([2, 4, 8, 8], &device);
        values(diffusion.p_sample_loop(&net, Tensor::cat(vec![z.clone(), z], 0), false, &mut noise, false))
    };
    let want = sample(&f32_model, 0);
    let err = rel_to_max(&sample(&bf16_model, 0), &want);
    let other_seed = rel_to_max(&sample(&f32_model, 1), &want);
    eprintln!("bf16 sampling: {err:.2e} (another seed: {other_seed:.2e})");
    assert!(err < 0.02, "bf16 sampling: {err}");
    assert!(other_seed > 10.0 * err, "another seed differs by only {other_seed}");
}

/// `ims3_dit::model::linear` multiplies [N, T, D] inputs as one [N*T, D] matrix. Against burn's
/// broadcast product at the shapes of DiT-S sampling, the IM step and the Fashion-MNIST DiT, at
/// one and two threads: the output has the same bits on a plain device, and under autodiff the
/// output and dx have the same bits while dW and db (one product over N*T rows instead of N
/// products summed) are within 1e-5 of their largest value (f32 rounding of sums of at most 512
/// terms here).
#[test]
fn flattened_linear_keeps_the_output_bits() {
    use burn::nn::LinearConfig;
    use burn::tensor::Distribution;
    let bits = |t: Tensor<3>| t.into_data().to_vec::<f32>().unwrap().iter().map(|v| v.to_bits()).collect::<Vec<_>>();
    for threads in [1, 2] {
        let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build().unwrap();
        pool.install(|| {
            for device in [Device::flex(), Device::flex().autodiff()] {
                device.seed(1);
                for (n, t, d, o) in [(4usize, 16usize, 384usize, 1152usize), (8, 64, 384, 1536), (4, 16, 1536, 384), (2, 49, 128, 512)] {
                    let l = LinearConfig::new(d, o).init(&device);
                    let tracked = device.gradient_checkpointing_strategy().is_some();
                    let mut x = Tensor::<3>::random([n, t, d], Distribution::Normal(0.0, 1.0), &device);
                    if tracked {
                        x = x.require_grad();
                    }
                    let ours = ims3_dit::model::linear(&l, x.clone());
                    let broadcast = burn::tensor::module::linear(x.clone(), l.weight.val(), l.bias.as_ref().map(|b| b.val()));
                    assert_eq!(bits(ours.clone()), bits(broadcast.clone()), "{n}x{t}x{d}->{o}: output bits");
                    if !tracked {
                        continue;
                    }
                    let r = Tensor::<3>::random([n, t, o], Distribution::Normal(0.0, 1.0), &device);
                    let (g1, g2) = ((ours * r.clone()).sum().backward(), (broadcast * r).sum().backward());
                    assert_eq!(bits(x.grad(&g1).unwrap()), bits(x.grad(&g2).unwrap()), "{n}x{t}x{d}->{o}: dx bits");
                    let (w1, w2) = (l.weight.grad(&g1).unwrap(), l.weight.grad(&g2).unwrap());
                    let scale = w2.clone().abs().max().into_scalar::<f32>();
                    let dw = (w1 - w2).abs().max().into_scalar::<f32>() / scale;
                    assert!(dw <= 1e-5, "{n}x{t}x{d}->{o}: dW off by {dw}");
                    let b = l.bias.as_ref().unwrap();
                    let (b1, b2) = (b.grad(&g1).unwrap(), b.grad(&g2).unwrap());
                    let scale = b2.clone().abs().max().into_scalar::<f32>();
                    let db = (b1 - b2).abs().max().into_scalar::<f32>() / scale;
                    assert!(db <= 1e-5, "{n}x{t}x{d}->{o}: db off by {db}");
                }
            }
        });
    }
}

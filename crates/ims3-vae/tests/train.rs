//! Training a small VAE from scratch (`train.rs`), writing it as a hub folder and encoding
//! images held in memory into a latent cache.

use burn::prelude::*;
use ims3_vae::{CacheOptions, ImageSet, LatentCache, VaeConfig, VaeFitOptions, fit_vae, load_vae_dir, reconstruction_mse, save_vae_dir};

fn tiny_config() -> VaeConfig {
    VaeConfig {
        in_channels: 1,
        out_channels: 1,
        block_out_channels: vec![8, 8],
        layers_per_block: 1,
        latent_channels: 2,
        norm_num_groups: 4,
        scaling_factor: 1.0,
        down_block_types: vec!["DownEncoderBlock2D".into(); 2],
        up_block_types: vec!["UpDecoderBlock2D".into(); 2],
        ..VaeConfig::sd()
    }
}

/// 24 grey 8x8 images in [-1, 1]: bars at a few positions, so there is structure to learn.
fn images() -> Vec<f32> {
    let mut v = Vec::new();
    for i in 0..24usize {
        for y in 0..8usize {
            for x in 0..8usize {
                v.push(if x == i % 8 || y == (i / 8) * 3 { 0.9 } else { -0.8 });
            }
        }
    }
    v
}

#[test]
fn training_lowers_the_reconstruction_error_and_is_seeded() {
    let device = Device::flex();
    let values = images();
    let set = ImageSet { values: &values, shape: [1, 8, 8] };
    let opts = VaeFitOptions { epochs: 30, batch_size: 8, lr: 3e-3, kl_weight: 1e-6, flip: true, seed: 3 };
    let untrained = {
        device.seed(3);
        tiny_config().init(&device)
    };
    let before = reconstruction_mse(&untrained, &set, 8, &device);
    let mut calls = 0;
    let (vae, epochs) = fit_vae(&tiny_config(), &set, &opts, &device, |_, _| calls += 1).unwrap();
    assert_eq!((epochs.len(), calls), (30, 90));
    let after = reconstruction_mse(&vae, &set, 8, &device);
    assert!(after < 0.7 * before, "reconstruction MSE {before} -> {after}");
    assert!(epochs[29].rec < 0.7 * epochs[0].rec, "L1 per image {} -> {}", epochs[0].rec, epochs[29].rec);
    // The same seed gives the same model.
    let (again, _) = fit_vae(&tiny_config(), &set, &VaeFitOptions { epochs: 2, ..opts.clone() }, &device, |_, _| {}).unwrap();
    let (twice, _) = fit_vae(&tiny_config(), &set, &VaeFitOptions { epochs: 2, ..opts }, &device, |_, _| {}).unwrap();
    let w = |m: &ims3_vae::AutoencoderKL| m.decoder.conv_out.weight.val().into_data().try_to_vec::<f32>().unwrap();
    assert_eq!(w(&again), w(&twice));
}

#[test]
fn bad_shapes_are_refused() {
    let device = Device::flex();
    let values = vec![0.0f32; 2 * 3 * 9 * 9];
    let err = fit_vae(&tiny_config(), &ImageSet { values: &values, shape: [3, 9, 9] }, &VaeFitOptions::default(), &device, |_, _| {}).unwrap_err();
    assert!(err.to_string().contains("takes 1 channels"), "{err}");
    let err = fit_vae(&tiny_config(), &ImageSet { values: &[], shape: [1, 8, 8] }, &VaeFitOptions::default(), &device, |_, _| {}).unwrap_err();
    assert!(err.to_string().contains("no training images"), "{err}");
}

#[test]
fn a_saved_vae_loads_back_and_encodes_images_held_in_memory() {
    let device = Device::flex();
    let values = images();
    let set = ImageSet { values: &values, shape: [1, 8, 8] };
    let opts = VaeFitOptions { epochs: 1, batch_size: 8, ..Default::default() };
    let (mut vae, _) = fit_vae(&tiny_config(), &set, &opts, &device, |_, _| {}).unwrap();
    vae.scaling_factor = ims3_vae::latent_scaling_factor(&vae, &set, 8, 0, &device);
    assert!(vae.scaling_factor.is_finite() && vae.scaling_factor > 0.0);
    let dir = tempfile::tempdir().unwrap();
    save_vae_dir(&vae, &tiny_config(), dir.path(), &serde_json::json!({"test": true})).unwrap();
    let (back, cfg) = load_vae_dir(dir.path(), &device).unwrap();
    assert_eq!(cfg.scaling_factor, vae.scaling_factor);
    assert_eq!(cfg.block_out_channels, vec![8, 8]);
    let x = Tensor::<1>::from_floats(&values[..4 * 64], &device).reshape([4, 1, 8, 8]);
    let bits = |t: Tensor<4>| t.into_data().try_to_vec::<f32>().unwrap();
    assert_eq!(bits(vae.decode(vae.encode(x.clone()).mean)), bits(back.decode(back.encode(x.clone()).mean)));

    // The cache holds each image's posterior as it is and flipped, in image order, and its
    // batching does not change them.
    let labels: Vec<i64> = (0..24).map(|i| i % 3).collect();
    let small = CacheOptions { batch: 5, show_progress: false, ..Default::default() };
    let cache = LatentCache::encode_images(&back, &set, labels.clone(), "bars", "in memory".into(), &small, &device);
    assert_eq!((cache.len(), cache.shape, cache.labels.clone()), (24, [2, 4, 4], labels.clone()));
    let one = LatentCache::encode_images(&back, &set, labels, "bars", "in memory".into(), &CacheOptions { batch: 24, ..small }, &device);
    let per = 2 * 4 * 4;
    let close = |a: &[f32], b: &[f32]| a.iter().zip(b).all(|(p, q)| (p - q).abs() <= 1e-5 * (1.0 + q.abs()));
    assert!(close(&cache.mean, &one.mean) && close(&cache.std, &one.std));
    let flipped: Vec<f32> = values[5 * 64..6 * 64].chunks(8).flat_map(|r| r.iter().rev().copied()).collect();
    let post = back.encode(Tensor::<1>::from_floats(flipped.as_slice(), &device).reshape([1, 1, 8, 8]));
    let m = post.mean.into_data().try_to_vec::<f32>().unwrap();
    assert!(close(&cache.mean[(2 * 5 + 1) * per..(2 * 5 + 2) * per], &m), "item 5's flipped posterior");
}

//! The latent cache on the fixture VAE and a generated image folder: built once, reused while
//! the inputs are unchanged, rebuilt when an image changes, corrupt files named or skipped.

use burn::prelude::*;
use ims3_vae::{CacheOptions, ClassFolder, LatentCache, load_vae_dir};
use std::path::{Path, PathBuf};

fn vae_fixture() -> PathBuf {
    ims3_fixtures::case_of_kind("vae").dir
}

fn write_image(path: &Path, seed: usize) {
    let (w, h) = (40, 30);
    let data = (0..3 * w * h).map(|i| (((i * (seed + 3)) % 97) as f32) / 96.0).collect();
    ims3_images::write_png(path, &ims3_images::Rgb::new(w, h, data)).unwrap();
}

#[test]
fn cache_is_reused_until_an_input_changes() {
    let device = Device::flex();
    let (vae, cfg) = load_vae_dir(vae_fixture(), &device).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let classes: Vec<ClassFolder> = (0..2)
        .map(|c| {
            let d = dir.path().join(format!("class{c}"));
            for k in 0..2 {
                write_image(&d.join(format!("{k}.png")), c * 10 + k);
            }
            ClassFolder { label: 100 + c as i64, dir: d }
        })
        .collect();
    let opts = CacheOptions { image_size: 16, batch: 3, show_progress: false, ..Default::default() };
    let path = dir.path().join("latents.safetensors");
    let (first, rebuilt) = LatentCache::load_or_build(&path, &vae, &cfg, &classes, &opts, &device).unwrap();
    assert!(rebuilt);
    assert_eq!(first.len(), 4);
    assert_eq!(first.labels, vec![100, 100, 101, 101]);
    assert_eq!(first.shape, [4, 4, 4]);
    let (again, rebuilt) = LatentCache::load_or_build(&path, &vae, &cfg, &classes, &opts, &device).unwrap();
    assert!(!rebuilt);
    assert_eq!(again.mean, first.mean);
    assert_eq!(again.std, first.std);

    // The cached posterior is the VAE's: encode the centre crop of one image directly.
    let img = ims3_images::pil::center_crop_arr(&ims3_images::pil::read_rgb8(&classes[0].dir.join("0.png")).unwrap(), 16);
    let x = Tensor::<1>::from_floats(img.to_signed_planar().data.as_slice(), &device).reshape([1, 3, 16, 16]);
    let direct: Vec<f32> = vae.encode(x).mean.into_data().convert::<f32>().try_to_vec::<f32>().unwrap();
    assert_eq!(&first.mean[..64], direct.as_slice());
    // sample() is (mean + std * noise) * scale.
    let noise = vec![0.5f32; 64];
    let s = first.sample(0, false, &noise, 0.18215);
    assert!((s[0] - ((first.mean[0] + first.std[0] * 0.5) as f64 * 0.18215) as f32).abs() < 1e-7);

    write_image(&classes[1].dir.join("1.png"), 99);
    let (_, rebuilt) = LatentCache::load_or_build(&path, &vae, &cfg, &classes, &opts, &device).unwrap();
    assert!(rebuilt, "a changed image invalidates the cache");
}

#[test]
fn corrupt_images_fail_with_their_path_or_are_skipped() {
    let device = Device::flex();
    let (vae, cfg) = load_vae_dir(vae_fixture(), &device).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().join("class0");
    write_image(&d.join("good.png"), 1);
    std::fs::write(d.join("bad.png"), b"not a png").unwrap();
    let classes = vec![ClassFolder { label: 0, dir: d }];
    let opts = CacheOptions { image_size: 16, show_progress: false, ..Default::default() };
    let path = dir.path().join("c.safetensors");
    let e = LatentCache::load_or_build(&path, &vae, &cfg, &classes, &opts, &device).unwrap_err().to_string();
    assert!(e.contains("bad.png"), "{e}");
    let opts = CacheOptions { skip_unreadable: true, ..opts };
    let (c, _) = LatentCache::load_or_build(&path, &vae, &cfg, &classes, &opts, &device).unwrap();
    assert_eq!((c.len(), c.skipped.len()), (1, 1));
}

#[test]
fn vae_config_mismatch_names_the_keys() {
    let device = Device::flex();
    let dir = vae_fixture();
    let mut cfg = ims3_vae::VaeConfig::from_file(&dir.join("config.json")).unwrap();
    cfg.block_out_channels = vec![16, 32, 64];
    let e = ims3_vae::load_vae(dir.join("diffusion_pytorch_model.safetensors"), &cfg, &device).unwrap_err().to_string();
    assert!(e.contains("diffusion_pytorch_model.safetensors") && e.contains("shape mismatch"), "{e}");
}

#[test]
fn batched_decode_equals_one_batch() {
    let device = Device::flex();
    let (vae, _) = load_vae_dir(vae_fixture(), &device).unwrap();
    let z = Tensor::<4>::random([3, 4, 4, 4], burn::tensor::Distribution::Normal(0.0, 1.0), &device);
    let a = vae.decode_to_images(z.clone(), 2, false);
    let b = vae.decode_to_images(z, 3, false);
    assert_eq!(a.len(), 3);
    for (x, y) in a.iter().zip(&b) {
        let d = x.data.iter().zip(&y.data).map(|(p, q)| (p - q).abs()).fold(0.0f32, f32::max);
        assert!(d < 1e-5, "{d}");
    }
}

#[test]
fn old_attention_key_names_load_the_same_model() {
    // Older hub files: query/key/value/proj_attn instead of to_q/to_k/to_v/to_out.0.
    let device = Device::flex();
    let dir = vae_fixture();
    let bytes = std::fs::read(dir.join("diffusion_pytorch_model.safetensors")).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let renamed: Vec<(String, safetensors::tensor::TensorView)> = st
        .tensors()
        .into_iter()
        .map(|(k, v)| {
            let k = k
                .replace(".to_q.", ".query.")
                .replace(".to_k.", ".key.")
                .replace(".to_v.", ".value.")
                .replace(".to_out.0.", ".proj_attn.");
            (k, v)
        })
        .collect();
    assert!(renamed.iter().any(|(k, _)| k.contains(".proj_attn.")));
    let tmp = tempfile::tempdir().unwrap();
    std::fs::copy(dir.join("config.json"), tmp.path().join("config.json")).unwrap();
    std::fs::write(tmp.path().join("diffusion_pytorch_model.safetensors"), safetensors::serialize(renamed, None).unwrap()).unwrap();
    let (old, _) = load_vae_dir(tmp.path(), &device).unwrap();
    let (new, _) = load_vae_dir(&dir, &device).unwrap();
    let x = Tensor::<4>::random([1, 3, 16, 16], burn::tensor::Distribution::Uniform(-1.0, 1.0), &device);
    let a: Vec<f32> = old.encode(x.clone()).mean.into_data().convert::<f32>().try_to_vec::<f32>().unwrap();
    let b: Vec<f32> = new.encode(x).mean.into_data().convert::<f32>().try_to_vec::<f32>().unwrap();
    assert_eq!(a, b);
}

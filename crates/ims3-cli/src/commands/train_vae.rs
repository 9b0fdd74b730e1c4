//! `ims3 train-vae`: a small `AutoencoderKL` trained from scratch on an IDX training set
//! (`ims3_vae::fit_vae`), the Fashion-MNIST stand-in for `sd-vae-ft-ema`. Writes a hub folder
//! (`config.json` with the fitted `scaling_factor`, `diffusion_pytorch_model.safetensors`) that
//! `finetune --vae`, `pretrain --vae` and `sample --vae` read like the real one.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, ensure};
use ims3_backend::DeviceSpec;
use ims3_vae::{ImageSet, VaeConfig, VaeFitOptions};

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Folder with train-images-idx3-ubyte[.gz] and train-labels-idx1-ubyte[.gz].
    #[arg(long)]
    pub idx: PathBuf,
    /// Output folder (config.json, diffusion_pytorch_model.safetensors, record.json).
    #[arg(long)]
    pub out: PathBuf,
    /// Held-out images (a folder of class folders of PNGs, e.g. the job's `data/validation`):
    /// the reconstruction error and, with --encoder, the encoder's top-1 on them and on their
    /// reconstructions are reported.
    #[arg(long)]
    pub validation: Option<PathBuf>,
    /// A `train-encoder` classifier used to measure what the reconstructions keep of the class.
    #[arg(long)]
    pub encoder: Option<PathBuf>,
    /// Channels of each resolution (len - 1 halvings: 32,64,64 maps 28 px to 7).
    #[arg(long, value_delimiter = ',', default_values_t = [32, 64, 64])]
    pub channels: Vec<usize>,
    #[arg(long, default_value_t = 1)]
    pub layers_per_block: usize,
    #[arg(long, default_value_t = 4)]
    pub latent_channels: usize,
    #[arg(long, default_value_t = 32)]
    pub groups: usize,
    #[arg(long, default_value_t = 4)]
    pub epochs: usize,
    #[arg(long, default_value_t = 64)]
    pub batch: usize,
    #[arg(long, default_value_t = 1e-3)]
    pub lr: f64,
    /// Weight of the KL term against the summed L1 error (LDM's autoencoders: 1e-6).
    #[arg(long, default_value_t = 1e-6)]
    pub kl_weight: f64,
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Train on the first N images only (quick runs, tests).
    #[arg(long)]
    pub limit: Option<usize>,
}

pub fn run(a: Args, device: &DeviceSpec) -> Result<()> {
    let started = std::time::Instant::now();
    ensure!(a.epochs > 0 && a.batch > 0, "--epochs and --batch must be at least 1");
    let train = ims3_images::idx::IdxSplit::read(&a.idx, "train")?;
    let n = a.limit.unwrap_or(train.len()).min(train.len());
    let shape = [1, train.height, train.width];
    let values = train.values_pm1();
    let set = ImageSet { values: &values[..n * train.height * train.width], shape };
    let config = VaeConfig {
        in_channels: 1,
        out_channels: 1,
        block_out_channels: a.channels.clone(),
        layers_per_block: a.layers_per_block,
        latent_channels: a.latent_channels,
        norm_num_groups: a.groups,
        scaling_factor: 1.0,
        down_block_types: vec!["DownEncoderBlock2D".into(); a.channels.len()],
        up_block_types: vec!["UpDecoderBlock2D".into(); a.channels.len()],
        ..VaeConfig::sd()
    };
    config.validate().context("--channels / --groups")?;
    let f = config.downscale();
    ensure!(train.height % f == 0 && train.width % f == 0, "{}: images are {}x{}, not divisible by the VAE's downscale {f}", a.idx.display(), train.height, train.width);
    let validation = a.validation.as_deref().map(read_grey_folders).transpose()?;
    let opts = VaeFitOptions { epochs: a.epochs, batch_size: a.batch, lr: a.lr, kl_weight: a.kl_weight, flip: true, seed: a.seed };
    let device = device.open()?;
    eprintln!("train-vae: AutoencoderKL {:?} latent {} ({}x{}) on {n} images, {} epochs", a.channels, a.latent_channels, train.height / f, train.width / f, a.epochs);
    let pb = ims3_util::progress_bar((n.div_ceil(a.batch) * a.epochs) as u64, "vae", true);
    let (mut vae, epochs) = ims3_vae::fit_vae(&config, &set, &opts, &device, |e, l| {
        pb.set_message(format!("epoch {} L1 {:.1} KL {:.0}", e + 1, l.rec, l.kl));
        pb.inc(1);
    })?;
    pb.finish_and_clear();
    vae.scaling_factor = ims3_vae::latent_scaling_factor(&vae, &set, 500, a.seed, &device);
    let mut record = serde_json::json!({
        "command": super::command_line(),
        "train_images": n,
        "options": opts,
        "epochs": epochs,
        "scaling_factor": vae.scaling_factor,
    });
    if let Some((grey, labels)) = &validation {
        let vals: Vec<f32> = grey.iter().map(|&v| v as f32 / 127.5 - 1.0).collect();
        let vset = ImageSet { values: &vals, shape };
        let mse = ims3_vae::reconstruction_mse(&vae, &vset, 500, &device);
        record["validation_images"] = labels.len().into();
        record["validation_mse"] = mse.into();
        eprintln!("validation: reconstruction MSE {mse:.5} (values in [-1, 1]) on {} images", labels.len());
        if let Some(enc) = &a.encoder {
            let (net, spec) = ims3_features::load_classifier(enc, &device)?;
            let recon = reconstruct_u8(&vae, &vset, &device);
            let side = train.height;
            let real = ims3_features::classifier_accuracy(&net, &spec, &ims3_features::GreySet { pixels: grey, labels, side }, &device);
            let rec = ims3_features::classifier_accuracy(&net, &spec, &ims3_features::GreySet { pixels: &recon, labels, side }, &device);
            record["validation_encoder_top1"] = serde_json::json!({ "real": real, "reconstructed": rec, "encoder": enc.display().to_string() });
            eprintln!("validation: encoder top-1 {real:.2}% on the images, {rec:.2}% on their reconstructions");
        }
    }
    record["seconds"] = started.elapsed().as_secs_f64().into();
    ims3_vae::save_vae_dir(&vae, &config, &a.out, &record)?;
    ims3_util::write_json(&a.out.join("record.json"), &record)?;
    let last = epochs.last().context("no epoch ran")?;
    println!("train-vae: last epoch L1 {:.2} KL {:.1} per image; scaling_factor {:.5}; wrote {}", last.rec, last.kl, vae.scaling_factor, a.out.display());
    Ok(())
}

/// Grey images of a folder of class folders (`<k>-<name>/*.png`, sorted) as u8 pixels with
/// the class index of each (the folder's position).
fn read_grey_folders(dir: &Path) -> Result<(Vec<u8>, Vec<u8>)> {
    let mut classes: Vec<PathBuf> = std::fs::read_dir(dir)
        .with_context(|| format!("{}: cannot list", dir.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.is_dir())
        .collect();
    classes.sort();
    ensure!(!classes.is_empty(), "{}: no class folders", dir.display());
    let (mut pixels, mut labels) = (Vec::new(), Vec::new());
    for (k, c) in classes.iter().enumerate() {
        for p in ims3_images::list_images(c)? {
            let img = ims3_images::read_rgb(&p)?;
            pixels.extend(img.data[..img.width * img.height].iter().map(|&v| (v * 255.0).round() as u8));
            labels.push(k as u8);
        }
    }
    Ok((pixels, labels))
}

/// The posterior-mean reconstructions of `set`, rounded to 8 bits as a PNG would keep them.
fn reconstruct_u8(vae: &ims3_vae::AutoencoderKL, set: &ImageSet, device: &burn::prelude::Device) -> Vec<u8> {
    use burn::prelude::*;
    let n: usize = set.shape.iter().product();
    let mut out = Vec::with_capacity(set.values.len());
    for chunk in set.values.chunks(500 * n) {
        let b = chunk.len() / n;
        let x = Tensor::<1>::from_floats(chunk, device).reshape([b, set.shape[0], set.shape[1], set.shape[2]]);
        let y: Vec<f32> = vae.decode(vae.encode(x).mean).into_data().convert::<f32>().try_to_vec::<f32>().expect("f32");
        out.extend(y.iter().map(|&v| ((v + 1.0) * 127.5).round().clamp(0.0, 255.0) as u8));
    }
    out
}

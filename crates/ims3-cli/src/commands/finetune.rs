//! `ims3 finetune`: IM fine-tuning (IMS3's stage 1) of a pretrained DiT with `ims3_im::train`.
//!
//! Latent DiTs (DiT-XL/2): the dataset folder is checked against its spec and recorded
//! (`data-manifest.json`), encoded once through the SD-VAE (`latents.safetensors`), and each
//! step draws posterior samples from that cache. DiTs of `ims3 pretrain`: an IDX training set
//! held in memory, as pixels or (with a `train-vae` VAE) as latents. Both record the run in
//! `run.json`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context, Result, bail, ensure};
use ims3_backend::DeviceSpec;
use ims3_im::{TrainConfig, TrainData};
use rand::Rng;
use rand_chacha::ChaCha8Rng;
use rand_distr::StandardNormal;
use serde::Serialize;

use crate::config_file::parse_toml;

#[derive(clap::Args, Debug, Clone, PartialEq, Serialize)]
pub struct Args {
    /// Pretrained DiT (DiT-XL-2-256x256.pt or any checkpoint `ims3 info` reads).
    #[arg(long)]
    pub dit: PathBuf,
    /// SD-VAE folder (diffusers layout: config.json + diffusion_pytorch_model.safetensors/.bin);
    /// with --idx, a `train-vae` folder.
    #[arg(long, required_unless_present = "idx")]
    pub vae: Option<PathBuf>,
    /// Dataset root holding `<split>/<wnid>/*` (fast.ai archive or a cut from ImageNet).
    #[arg(long, required_unless_present = "idx")]
    pub data: Option<PathBuf>,
    /// Instead of --data: an IDX training set (Fashion-MNIST's train-* files) for a DiT from
    /// `ims3 pretrain`, in pixels or, with --vae (a `train-vae` folder), in latents; the labels
    /// are the IDX labels.
    #[arg(long, conflicts_with = "data")]
    pub idx: Option<PathBuf>,
    /// Dataset spec: imagewoof, imagenette, imageidc, or a spec .toml.
    #[arg(long, default_value = "imagewoof")]
    pub dataset: String,
    #[arg(long, default_value = "train")]
    pub split: String,
    /// Run directory (created; resumed if it holds checkpoints).
    #[arg(long)]
    pub out: PathBuf,
    /// Training recipe file (TOML; keys of TrainConfig: batch_size, epochs, max_steps, ema_decay, flip,
    /// seed, checkpoint_every, keep_last, log_every, dtype, micro_batches, [optimizer] lr/beta1/beta2/eps/weight_decay,
    /// [loss] im/im_lambda/minimax/lambda_pos/lambda_neg/memory_size/label_dropout). Flags below
    /// override it; anything unset keeps the reference default.
    #[arg(long)]
    pub train_config: Option<PathBuf>,
    /// Seed of data order and every random draw (default 0).
    #[arg(long)]
    pub seed: Option<u64>,
    /// Batch size (reference 8).
    #[arg(long)]
    pub batch: Option<usize>,
    /// Epochs (reference 8).
    #[arg(long)]
    pub epochs: Option<usize>,
    /// Stop after this many steps in total (the reference samples the 8000-step checkpoint).
    #[arg(long)]
    pub steps: Option<u64>,
    /// AdamW learning rate (reference 1e-3).
    #[arg(long)]
    pub lr: Option<f64>,
    /// bf16: frozen weights in bf16, trained Difffit parameters, AdamW and EMA in f32 (mixed
    /// precision); default f32 (the reference's). Overrides the recipe's `dtype`.
    #[arg(long)]
    pub dtype: Option<ims3_dit::Precision>,
    /// Split each batch into N shards with their own forward and backward, gradients summed: the
    /// same global batch and loss (up to f32 rounding) in less memory. Overrides `micro_batches`.
    #[arg(long)]
    pub micro_batches: Option<usize>,
    /// Switch off the IM term (gives the Minimax ablation).
    #[arg(long)]
    pub no_im: bool,
    /// Switch off Minimax's memory terms (gives the IM-only ablation).
    #[arg(long)]
    pub no_minimax: bool,
    /// Condition the DiT on each class folder's index among the sorted folders, as the
    /// reference's run.sh does by accident (default: the true ImageNet index from the spec).
    #[arg(long)]
    pub folder_index_labels: bool,
    /// Head count, for a non-standard hidden size.
    #[arg(long)]
    pub heads: Option<usize>,
    /// Image size fed to the VAE (reference 256).
    #[arg(long, default_value_t = 256)]
    pub image_size: usize,
    /// Stop this invocation after N steps (checkpointing first); rerun to continue.
    #[arg(long)]
    pub stop_after: Option<u64>,
}

pub fn run(a: Args, device: &DeviceSpec) -> Result<()> {
    let started = Instant::now();
    let cfg = train_config(&a)?;
    match &a.idx {
        Some(idx) => finetune_idx(&a, idx, cfg, device, started),
        None => finetune_latents(&a, cfg, device, started),
    }
}

/// The training recipe: reference defaults, then the --train-config file, then the flags.
fn train_config(a: &Args) -> Result<TrainConfig> {
    let mut cfg = match &a.train_config {
        Some(p) => {
            let text = std::fs::read_to_string(p).with_context(|| format!("{}: cannot read", p.display()))?;
            parse_toml::<TrainConfig>(&text, &p.display().to_string())?
        }
        None => TrainConfig::default(),
    };
    if let Some(v) = a.seed {
        cfg.seed = v;
    }
    if let Some(v) = a.batch {
        cfg.batch_size = v;
    }
    if let Some(v) = a.epochs {
        cfg.epochs = v;
    }
    if a.steps.is_some() {
        cfg.max_steps = a.steps;
    }
    if let Some(v) = a.lr {
        cfg.optimizer.lr = v;
    }
    if let Some(d) = a.dtype {
        cfg.dtype = d;
    }
    if let Some(n) = a.micro_batches {
        cfg.micro_batches = n;
    }
    if a.no_im {
        cfg.loss.im = false;
    }
    if a.no_minimax {
        cfg.loss.minimax = false;
    }
    cfg.validate()?;
    Ok(cfg)
}

/// IM fine-tuning of a DiT from `ims3 pretrain` on an IDX training set held in memory: its
/// pixels, or with --vae (a `train-vae` folder) their latents.
fn finetune_idx(a: &Args, idx: &Path, cfg: TrainConfig, device_spec: &DeviceSpec, started: Instant) -> Result<()> {
    let pixels = ims3_im::InMemoryData::from_idx(&ims3_images::idx::IdxSplit::read(idx, "train")?);
    let latents = a.vae.as_deref().map(|dir| idx_latents(dir, &pixels, idx, device_spec)).transpose()?;
    let data: &dyn TrainData = match &latents {
        Some((cache, scaling_factor)) => &CachedLatents { cache, scaling_factor: *scaling_factor, relabel: None },
        None => &pixels,
    };
    std::fs::create_dir_all(&a.out).with_context(|| format!("{}: cannot create", a.out.display()))?;
    let device = device_spec.open()?.autodiff();
    let (model, report) = ims3_dit::open_dit(&a.dit, None, a.heads, &device)?;
    let mc = &report.config;
    let space = if latents.is_some() { "latents" } else { "images" };
    ensure!(
        [mc.in_channels, mc.input_size, mc.input_size] == data.shape(),
        "{}: the DiT takes {}x{}x{} inputs but {} holds {space} of {:?}",
        a.dit.display(),
        mc.in_channels,
        mc.input_size,
        mc.input_size,
        idx.display(),
        data.shape()
    );
    let top = pixels.labels.iter().copied().max().unwrap_or(0);
    ensure!((top as usize) < mc.num_classes, "{}: label {top} but the DiT has {} classes", idx.display(), mc.num_classes);
    let trainable = ims3_im::difffit_trainable_count(&model);
    eprintln!("finetune: DiT on {} {space} {:?}; Difffit trains {trainable} parameters", data.len(), data.shape());
    let inputs = serde_json::json!({ "idx": idx.display().to_string(), "vae": a.vae.as_ref().map(|v| v.display().to_string()) });
    train_and_record(model, data, &cfg, a, device_spec, mc, trainable, started, inputs)
}

/// The VAE latents (each image plain and flipped) of images held in memory, with the VAE's
/// scaling factor: what a DiT of `ims3 pretrain --vae` learns and is fine-tuned on.
pub(crate) fn idx_latents(dir: &Path, pixels: &ims3_im::InMemoryData, source: &Path, device: &DeviceSpec) -> Result<(ims3_vae::LatentCache, f64)> {
    let device = device.open()?;
    let (vae, cfg) = ims3_vae::load_vae_dir(dir, &device)?;
    ensure!(cfg.in_channels == pixels.shape[0], "{}: the VAE takes {} channels, the images of {} have {}", dir.display(), cfg.in_channels, source.display(), pixels.shape[0]);
    let images = ims3_vae::ImageSet { values: &pixels.values, shape: pixels.shape };
    let opts = ims3_vae::CacheOptions { batch: 500, ..Default::default() };
    // Encoded afresh by every invocation (deterministic), so never stale.
    let name = source.display().to_string();
    let cache = ims3_vae::LatentCache::encode_images(&vae, &images, pixels.labels.clone(), &name, format!("in memory: {name}"), &opts, &device);
    Ok((cache, cfg.scaling_factor))
}

/// IM fine-tuning of a latent DiT on a dataset folder, through the SD-VAE latent cache.
fn finetune_latents(a: &Args, cfg: TrainConfig, device_spec: &DeviceSpec, started: Instant) -> Result<()> {
    let (Some(data_root), Some(vae_dir)) = (&a.data, &a.vae) else { bail!("--data and --vae are needed (or --idx for a pixel-space DiT)") };
    let spec = ims3_datasets::DatasetSpec::get(&a.dataset)?;
    let scanned = ims3_datasets::scan(data_root, &a.split, &spec)?;
    eprintln!(
        "data: {} ({}), {} images in {} classes",
        data_root.join(&a.split).display(),
        scanned.layout,
        scanned.classes.iter().map(|c| c.files.len()).sum::<usize>(),
        scanned.classes.len()
    );
    std::fs::create_dir_all(&a.out).with_context(|| format!("{}: cannot create", a.out.display()))?;
    let manifest = ims3_datasets::Manifest::build(data_root, &spec, &[a.split.as_str()])?;
    ims3_util::write_json(&a.out.join("data-manifest.json"), &manifest)?;

    let device = device_spec.open()?;
    // Labels: true ImageNet indices, or the reference's folder-index quirk.
    let quirk = spec.folder_index_labels();
    let relabel: Option<BTreeMap<i64, i64>> = a.folder_index_labels.then(|| spec.classes.iter().zip(&quirk).map(|(c, &q)| (c.imagenet, q)).collect());
    let (vae, vae_cfg) = ims3_vae::load_vae_dir(vae_dir, &device)?;
    // Check the DiT against the VAE's latents before spending time on encoding.
    let dit_cfg = ims3_dit::infer_config(&ims3_weights::Checkpoint::open(&a.dit, None)?, a.heads)?;
    let side = a.image_size / vae_cfg.downscale();
    ensure!(
        [dit_cfg.in_channels, dit_cfg.input_size] == [vae_cfg.latent_channels, side],
        "the DiT expects latents {}x{}x{} but the VAE gives {}x{side}x{side} at --image-size {}",
        dit_cfg.in_channels,
        dit_cfg.input_size,
        dit_cfg.input_size,
        vae_cfg.latent_channels,
        a.image_size
    );
    let folders: Vec<ims3_vae::ClassFolder> = scanned.classes.iter().map(|c| ims3_vae::ClassFolder { label: c.imagenet, dir: c.dir.clone() }).collect();
    let opts = ims3_vae::CacheOptions { image_size: a.image_size, ..Default::default() };
    let (cache, rebuilt) = ims3_vae::LatentCache::load_or_build(&a.out.join("latents.safetensors"), &vae, &vae_cfg, &folders, &opts, &device)?;
    eprintln!("latents: {} items {:?} ({})", cache.len(), cache.shape, if rebuilt { "encoded now" } else { "from the cache" });
    drop(vae);

    let ad = device.clone().autodiff();
    let (model, report) = ims3_dit::open_dit(&a.dit, None, a.heads, &ad)?;
    let mc = &report.config;
    ensure!(
        [mc.in_channels, mc.input_size, mc.input_size] == cache.shape,
        "the DiT expects latents {}x{}x{} but the VAE gives {:?}",
        mc.in_channels,
        mc.input_size,
        mc.input_size,
        cache.shape
    );
    for c in &spec.classes {
        let l = relabel.as_ref().map_or(c.imagenet, |m| m[&c.imagenet]);
        ensure!((l as usize) < mc.num_classes, "class {} has label {l}, but the DiT has {} classes", c.wnid, mc.num_classes);
    }
    let trainable = ims3_im::difffit_trainable_count(&model);
    eprintln!("model: {} ({} classes); Difffit trains {trainable} parameters", mc.preset_name().unwrap_or_else(|| "custom DiT".into()), mc.num_classes);
    let data = CachedLatents { cache: &cache, scaling_factor: vae_cfg.scaling_factor, relabel };
    let inputs = serde_json::json!({
        "vae": vae_dir.display().to_string(),
        "dataset": spec.name,
        "layout": manifest.layout,
        "data_sha256": manifest.splits[0].sha256,
        "labels": if a.folder_index_labels { "folder-index (reference quirk)" } else { "imagenet" },
    });
    train_and_record(model, &data, &cfg, a, device_spec, mc, trainable, started, inputs)
}

/// The SD-VAE latent cache as IM training data: `(mean + std * noise) * scaling_factor`, from
/// the plain or the flipped encoding (the glue between `ims3-vae` and `ims3-im`, which know
/// nothing of each other).
pub(crate) struct CachedLatents<'a> {
    pub cache: &'a ims3_vae::LatentCache,
    pub scaling_factor: f64,
    /// DiT label per cache label (identity for true ImageNet indices; the folder-index quirk
    /// maps each true index to its folder's position).
    pub relabel: Option<BTreeMap<i64, i64>>,
}

impl TrainData for CachedLatents<'_> {
    fn len(&self) -> usize {
        self.cache.len()
    }
    fn shape(&self) -> [usize; 3] {
        self.cache.shape
    }
    fn label(&self, i: usize) -> i64 {
        let l = self.cache.labels[i];
        self.relabel.as_ref().map_or(l, |m| m[&l])
    }
    fn draw(&self, i: usize, flip: bool, rng: &mut ChaCha8Rng, out: &mut Vec<f32>) {
        let n: usize = self.cache.shape.iter().product();
        let flipped = flip && rng.random::<bool>();
        let noise: Vec<f32> = (0..n).map(|_| rng.sample(StandardNormal)).collect();
        out.extend(self.cache.sample(i, flipped, &noise, self.scaling_factor));
    }
}

/// Runs the fine-tuning loop and records it: `run.json` in --out (command, recipe, model, the
/// data `inputs`, steps done, seconds) and one summary line.
#[allow(clippy::too_many_arguments)]
fn train_and_record(
    model: ims3_dit::DiT,
    data: &dyn TrainData,
    cfg: &TrainConfig,
    a: &Args,
    device: &DeviceSpec,
    mc: &ims3_dit::DiTConfig,
    trainable: usize,
    started: Instant,
    inputs: serde_json::Value,
) -> Result<()> {
    let run_opts = ims3_im::RunOptions { show_progress: true, stop_after: a.stop_after };
    let (_, out) = ims3_im::train(model, data, cfg, &a.out, &run_opts)?;
    let mut run = serde_json::json!({
        "command": super::command_line(),
        "stage": "finetune",
        "ims3_version": env!("CARGO_PKG_VERSION"),
        "git_revision": option_env!("IMS3_GIT_REV"),
        "device": device.to_string(),
        "config": cfg,
        "dit": a.dit.display().to_string(),
        "dit_config": mc,
        "trainable_parameters": trainable,
        "steps_done": out.steps_done,
        "total_steps": out.total_steps,
        "resumed_from": out.resumed_from,
        "last_checkpoint": out.last_checkpoint.as_ref().map(|p| p.display().to_string()),
        "seconds": started.elapsed().as_secs_f64(),
    });
    if let (Some(run), serde_json::Value::Object(extra)) = (run.as_object_mut(), inputs) {
        run.extend(extra);
    }
    ims3_util::write_json(&a.out.join("run.json"), &run)?;
    crate::figures::write(&a.out.join("losses.svg"), &crate::figures::loss_figure("IM fine-tuning: loss terms vs step", &a.out.join("metrics.jsonl"))?)?;
    println!(
        "finetune: {} of {} steps{}; checkpoint {}",
        out.steps_done,
        out.total_steps,
        out.resumed_from.map(|s| format!(" (resumed at {s})")).unwrap_or_default(),
        out.last_checkpoint.map(|p| p.display().to_string()).unwrap_or_else(|| "none".into())
    );
    Ok(())
}

//! `ims3 pretrain`: a class-conditional DiT trained from scratch on an IDX dataset (the
//! Fashion-MNIST stand-in for DiT-XL/2), on its pixels or, with `--vae`, on the latents of a
//! `train-vae` VAE (as DiT-XL/2 on the SD VAE's): every parameter but `pos_embed` trains with
//! the plain DiT loss, through the same loop, checkpoints and resume as `finetune`.

use std::path::PathBuf;

use anyhow::{Context, Result, ensure};
use ims3_backend::DeviceSpec;
use ims3_im::TrainData;

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Folder with train-images-idx3-ubyte[.gz] and train-labels-idx1-ubyte[.gz]
    /// (Debian: /usr/share/datasets/fashion-mnist).
    #[arg(long)]
    pub idx: PathBuf,
    #[arg(long)]
    pub out: PathBuf,
    /// Width, depth, heads and patch of the DiT (input size, channels and classes come from the data).
    #[arg(long, default_value_t = 128)]
    pub hidden: usize,
    #[arg(long, default_value_t = 6)]
    pub depth: usize,
    #[arg(long, default_value_t = 4)]
    pub heads: usize,
    #[arg(long, default_value_t = 2)]
    pub patch: usize,
    #[arg(long, default_value_t = 20000)]
    pub steps: u64,
    #[arg(long, default_value_t = 64)]
    pub batch: usize,
    /// AdamW learning rate (DiT's own training: 1e-4).
    #[arg(long, default_value_t = 1e-4)]
    pub lr: f64,
    /// EMA decay of the weights written to model.safetensors (DiT: 0.9999, for 400k steps;
    /// a short run needs a shorter memory).
    #[arg(long, default_value_t = 0.999)]
    pub ema_decay: f64,
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    #[arg(long, default_value_t = 1000)]
    pub checkpoint_every: u64,
    /// Write the loss terms to metrics.jsonl (and check them for NaN) every N steps; not part of
    /// the resume key, so a run can be resumed with a finer log to find where it diverges.
    #[arg(long, default_value_t = 10)]
    pub log_every: u64,
    /// Stop this invocation after N steps (checkpointing first); rerun to continue.
    #[arg(long)]
    pub stop_after: Option<u64>,
    /// Start from these DiT weights (a `pretrain` model.safetensors of the same shape) instead of
    /// the seeded initialisation, with a fresh optimiser and the EMA starting at them: a second
    /// stage at another learning rate. Its SHA-256 is kept in <out>/init.json; a rerun in the same
    /// folder must name the same file.
    #[arg(long)]
    pub init: Option<PathBuf>,
    /// A VAE folder (`train-vae`): the DiT learns its latents of the images (posterior samples
    /// times the config's scaling_factor, from each image as it is or flipped, as `finetune
    /// --vae`) instead of the pixels. The SHA-256 of its weights is kept in <out>/vae.json; a
    /// rerun in the same folder must name the same VAE.
    #[arg(long)]
    pub vae: Option<PathBuf>,
}

pub fn run(a: Args, device: &DeviceSpec) -> Result<()> {
    let split = ims3_images::idx::IdxSplit::read(&a.idx, "train")?;
    let pixels = ims3_im::InMemoryData::from_idx(&split);
    let classes = pixels.labels.iter().copied().max().unwrap_or(0) as usize + 1;
    let vae_weights = a.vae.as_ref().map(|dir| dir.join("diffusion_pytorch_model.safetensors"));
    check_recorded(vae_weights.as_deref(), &a.out, "vae.json", "--vae")?;
    let latents = a.vae.as_deref().map(|dir| super::finetune::idx_latents(dir, &pixels, &a.idx, device)).transpose()?;
    let data: &dyn TrainData = match &latents {
        Some((cache, scaling_factor)) => &super::finetune::CachedLatents { cache, scaling_factor: *scaling_factor, relabel: None },
        None => &pixels,
    };
    let [c, h, w] = data.shape();
    ensure!(h == w && h % a.patch == 0, "images are {h}x{w}: square and divisible by --patch {} needed", a.patch);
    let cfg = ims3_dit::DiTConfig {
        input_size: h,
        patch_size: a.patch,
        in_channels: c,
        hidden_size: a.hidden,
        depth: a.depth,
        num_heads: a.heads,
        mlp_ratio: 4.0,
        class_dropout_prob: 0.1,
        num_classes: classes,
        learn_sigma: true,
        gamma_blocks: a.depth.min(ims3_dit::DIFFFIT_GAMMA_BLOCKS),
    };
    cfg.validate()?;
    let device = device.open()?.autodiff();
    // The initial model is a function of the seed, so a resumed run rebuilds the same one.
    device.seed(a.seed);
    check_recorded(a.init.as_deref(), &a.out, "init.json", "--init")?;
    let model = match &a.init {
        None => cfg.init(&device),
        Some(path) => ims3_dit::load_dit(path, Some(&cfg), None, &device).with_context(|| format!("{}: not a DiT of the requested shape", path.display()))?.0,
    };
    let mut train = ims3_im::TrainConfig {
        batch_size: a.batch,
        max_steps: Some(a.steps),
        seed: a.seed,
        checkpoint_every: a.checkpoint_every,
        log_every: a.log_every,
        trainable: ims3_im::Trainable::All,
        ema_decay: a.ema_decay,
        ..Default::default()
    };
    train.validate()?;
    train.optimizer.lr = a.lr;
    train.loss.im = false;
    train.loss.minimax = false;
    let space = if a.vae.is_some() { "latents" } else { "images" };
    eprintln!("pretrain: DiT hidden {} depth {} patch {} on {} {space} {c}x{h}x{w}, {classes} classes", a.hidden, a.depth, a.patch, data.len());
    let (_, out) = ims3_im::train(model.clone(), data, &train, &a.out, &ims3_im::RunOptions { show_progress: true, stop_after: a.stop_after })?;
    let ck = ims3_im::Checkpoint::read(out.last_checkpoint.as_ref().context("no checkpoint written")?)?;
    let ema = ck.apply_to(model, true)?;
    let path = a.out.join("model.safetensors");
    ims3_dit::save_dit(&ema, &cfg, &path)?;
    crate::figures::write(&a.out.join("losses.svg"), &crate::figures::loss_figure("DiT pretraining: loss terms vs step", &a.out.join("metrics.jsonl"))?)?;
    println!("pretrain: {} of {} steps; EMA weights in {}", out.steps_done, out.total_steps, path.display());
    Ok(())
}

/// Weights a run folder's training depends on (`--init`, the `--vae` whose latents it learns)
/// are fixed at its first invocation: the file's SHA-256 is recorded in `<out>/<record>` then
/// and checked on every rerun; `flag` names the option in the messages.
fn check_recorded(given: Option<&std::path::Path>, out: &std::path::Path, record: &str, flag: &str) -> Result<()> {
    let record = out.join(record);
    match (given, record.exists()) {
        (None, false) => {}
        (None, true) => anyhow::bail!("{}: this run was started with {flag}; pass the same {flag}", record.display()),
        (Some(path), true) => {
            let sha = ims3_fetch::sha256_file(path)?;
            let saved: serde_json::Value = serde_json::from_slice(&std::fs::read(&record)?).with_context(|| format!("{}: not JSON", record.display()))?;
            let saved_sha = saved["sha256"].as_str().unwrap_or_default();
            ensure!(saved_sha == sha, "{}: this run was started with {flag} weights of SHA-256 {saved_sha}, not {} ({sha})", record.display(), path.display());
        }
        (Some(path), false) => {
            let started = std::fs::read_dir(out.join("checkpoints")).map(|mut d| d.next().is_some()).unwrap_or(false);
            ensure!(!started, "{}: this run was started without {flag}", out.display());
            std::fs::create_dir_all(out)?;
            let sha = ims3_fetch::sha256_file(path)?;
            ims3_util::write_json(&record, &serde_json::json!({"path": path.display().to_string(), "sha256": sha}))?;
        }
    }
    Ok(())
}

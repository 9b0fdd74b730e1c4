//! The IM fine-tuning loop: data order, seeded per-step randomness, AdamW on the Difffit
//! parameters, the EMA, checkpoints with resume, a JSONL metrics log and a progress bar.
//!
//! Reproducibility: epoch `e`'s order is a shuffle drawn from `ChaCha8(seed, stream = e)`, and
//! everything random in step `s` (posterior noise and flips of the data, timesteps, diffusion
//! noise, both label-dropout masks) from `ChaCha8(seed ^ STEP_SALT, stream = s)`. The RNG state
//! at any step is therefore `(seed, step)`, which the checkpoint records; together with the
//! parameters, the EMA, AdamW's moments and the Minimax memories, a resumed run continues
//! exactly where the interrupted one stood (test `resume_matches_an_uninterrupted_run`).

use std::collections::BTreeMap;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::time::Instant;

use burn::optim::GradientsParams;
use burn::prelude::*;
use ims3_diffusion::GaussianDiffusion;
use ims3_dit::DiT;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rand_distr::StandardNormal;
use serde::{Deserialize, Serialize};

use crate::checkpoint::{Checkpoint, CheckpointError, list_checkpoints};
use crate::difffit::{mark_difffit_trainable, trainable_tensors};
use crate::losses::MinimaxMemory;
use crate::optim::{AdamWSettings, PathAdamW};
use crate::step::{LossConfig, StepBatch, im_step_loss};

const STEP_SALT: u64 = 0x1d5_3e3e_57e9;

/// Which parameters train.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Trainable {
    /// IMS3's Difffit rule (biases, norms, gammas, label table).
    #[default]
    Difffit,
    /// Everything but `pos_embed`: pretraining a DiT from scratch (e.g. the Fashion-MNIST
    /// stand-in for the ImageNet DiT).
    All,
}

/// The fine-tuning recipe. Defaults are the reference's (`run.sh` / `train_dit.py`): batch 8,
/// 8 epochs, AdamW lr 1e-3 without weight decay, EMA 0.9999, IM + Minimax on.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TrainConfig {
    pub batch_size: usize,
    pub epochs: usize,
    /// Stop after this many steps in total (the reference samples from the 8000-step
    /// checkpoint); `None` runs every epoch.
    pub max_steps: Option<u64>,
    pub optimizer: AdamWSettings,
    pub ema_decay: f64,
    pub loss: LossConfig,
    /// Horizontal flip with probability 0.5 (the reference's `RandomHorizontalFlip`).
    pub flip: bool,
    pub seed: u64,
    pub checkpoint_every: u64,
    pub keep_last: usize,
    pub log_every: u64,
    pub trainable: Trainable,
}

impl Default for TrainConfig {
    fn default() -> Self {
        Self {
            batch_size: 8,
            epochs: 8,
            max_steps: None,
            optimizer: AdamWSettings::default(),
            ema_decay: 0.9999,
            loss: LossConfig::default(),
            flip: true,
            seed: 0,
            checkpoint_every: 1000,
            keep_last: 3,
            log_every: 10,
            trainable: Trainable::Difffit,
        }
    }
}

impl TrainConfig {
    pub fn validate(&self) -> Result<(), String> {
        if self.batch_size == 0 {
            return Err("batch_size must be at least 1".into());
        }
        if !(0.0..1.0).contains(&self.ema_decay) {
            return Err(format!("ema_decay {} is outside [0, 1)", self.ema_decay));
        }
        if !(0.0..=1.0).contains(&self.loss.label_dropout) {
            return Err(format!("label_dropout {} is outside [0, 1]", self.loss.label_dropout));
        }
        if self.checkpoint_every == 0 || self.log_every == 0 || self.keep_last == 0 {
            return Err("checkpoint_every, log_every and keep_last must be at least 1".into());
        }
        Ok(())
    }

    /// The fields a resumed run must share with the run that wrote the checkpoint (everything
    /// but the step budget, the checkpoint cadence and the logging).
    fn resume_key(&self) -> TrainConfig {
        TrainConfig { max_steps: None, epochs: 0, checkpoint_every: 1, keep_last: 1, log_every: 1, ..self.clone() }
    }
}

/// A training set as the trainer sees it: items with a DiT label, each drawn as a latent
/// (for the SD-VAE cache: posterior sample, scaled, flipped at random).
pub trait TrainData {
    fn len(&self) -> usize;
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// [C, H, W] of one latent.
    fn shape(&self) -> [usize; 3];
    fn label(&self, i: usize) -> i64;
    /// Appends item `i`'s latent to `out`, drawing any randomness from `rng`.
    fn draw(&self, i: usize, flip: bool, rng: &mut ChaCha8Rng, out: &mut Vec<f32>);
}

/// The SD-VAE latent cache as training data: `(mean + std * noise) * scaling_factor`, from the
/// plain or the flipped encoding.
pub struct CachedLatents<'a> {
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

/// Images (or any fixed tensors) held in memory, e.g. a pixel-space DiT's training set.
pub struct InMemoryData {
    /// [N, C, H, W], row-major.
    pub values: Vec<f32>,
    pub shape: [usize; 3],
    pub labels: Vec<i64>,
}

impl TrainData for InMemoryData {
    fn len(&self) -> usize {
        self.labels.len()
    }
    fn shape(&self) -> [usize; 3] {
        self.shape
    }
    fn label(&self, i: usize) -> i64 {
        self.labels[i]
    }
    fn draw(&self, i: usize, flip: bool, rng: &mut ChaCha8Rng, out: &mut Vec<f32>) {
        let [c, h, w] = self.shape;
        let item = &self.values[i * c * h * w..(i + 1) * c * h * w];
        if flip && rng.random::<bool>() {
            for row in item.chunks(w) {
                out.extend(row.iter().rev());
            }
        } else {
            out.extend_from_slice(item);
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum TrainError {
    #[error("invalid training config: {0}")]
    Config(String),
    #[error("the training set has {items} items, fewer than one batch of {batch}")]
    TooSmall { items: usize, batch: usize },
    #[error(transparent)]
    Checkpoint(#[from] CheckpointError),
    #[error("{path}: {why}")]
    Io { path: PathBuf, why: String },
    #[error(
        "{path}: written by a run with a different recipe; resume needs the same one (or a new run directory)\n  checkpoint: {saved}\n  this run:   {now}"
    )]
    ResumeMismatch { path: PathBuf, saved: String, now: String },
}

/// What a finished (or stopped) run reports.
#[derive(Clone, Debug)]
pub struct TrainOutcome {
    pub steps_done: u64,
    pub total_steps: u64,
    pub resumed_from: Option<u64>,
    pub last_checkpoint: Option<PathBuf>,
    pub trainable_parameters: usize,
    pub seconds: f64,
}

/// Options that do not change the result.
#[derive(Clone, Debug, Default)]
pub struct RunOptions {
    pub show_progress: bool,
    /// Stop (with a checkpoint) after this many steps of this invocation; for tests and for
    /// splitting a long run across sessions.
    pub stop_after: Option<u64>,
}

fn io_err(path: &Path) -> impl Fn(std::io::Error) -> TrainError + '_ {
    move |e| TrainError::Io { path: path.to_path_buf(), why: e.to_string() }
}

/// The epoch's data order (drop_last: the tail that does not fill a batch is skipped).
fn epoch_order(seed: u64, epoch: u64, n: usize) -> Vec<usize> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    rng.set_stream(epoch);
    let mut idx: Vec<usize> = (0..n).collect();
    idx.shuffle(&mut rng);
    idx
}

/// Draws step `step`'s batch: items `items` of the data, timesteps, noise, dropout masks.
fn draw_batch(data: &dyn TrainData, items: &[usize], cfg: &TrainConfig, diffusion: &GaussianDiffusion, step: u64, device: &Device) -> StepBatch {
    let mut rng = ChaCha8Rng::seed_from_u64(cfg.seed ^ STEP_SALT);
    rng.set_stream(step);
    let b = items.len();
    let [c, h, w] = data.shape();
    let mut x0 = Vec::with_capacity(b * c * h * w);
    for &i in items {
        data.draw(i, cfg.flip, &mut rng, &mut x0);
    }
    let labels: Vec<i64> = items.iter().map(|&i| data.label(i)).collect();
    let t: Vec<usize> = (0..b).map(|_| rng.random_range(0..diffusion.num_timesteps())).collect();
    let noise: Vec<f32> = (0..b * c * h * w).map(|_| rng.sample(StandardNormal)).collect();
    let p = cfg.loss.label_dropout;
    let drop_main: Vec<bool> = (0..b).map(|_| rng.random::<f64>() < p).collect();
    let drop_reverse: Vec<bool> = (0..b).map(|_| rng.random::<f64>() < p).collect();
    let tensor = |v: Vec<f32>| Tensor::<1>::from_floats(v.as_slice(), device).reshape([b, c, h, w]);
    StepBatch { x0: tensor(x0), labels, t, noise: tensor(noise), drop_main, drop_reverse }
}

/// Fine-tunes `base` (on an autodiff device) with the Difffit rule, writing checkpoints and
/// `metrics.jsonl` under `run_dir`, resuming from the newest checkpoint there. Returns the
/// fine-tuned model (the raw weights; the EMA is in the checkpoints) and a report.
pub fn train(base: DiT, data: &dyn TrainData, cfg: &TrainConfig, run_dir: &Path, opts: &RunOptions) -> Result<(DiT, TrainOutcome), TrainError> {
    cfg.validate().map_err(TrainError::Config)?;
    let device = base.pos_embed.val().device();
    if !device.is_autodiff() {
        return Err(TrainError::Config("the model must live on an autodiff device (Device::autodiff())".into()));
    }
    if data.len() < cfg.batch_size {
        return Err(TrainError::TooSmall { items: data.len(), batch: cfg.batch_size });
    }
    std::fs::create_dir_all(run_dir).map_err(io_err(run_dir))?;
    let diffusion = GaussianDiffusion::dit("").expect("the 1000-step schedule");
    let steps_per_epoch = (data.len() / cfg.batch_size) as u64;
    let total = cfg.max_steps.unwrap_or(steps_per_epoch * cfg.epochs as u64);

    let mut model = match cfg.trainable {
        Trainable::Difffit => mark_difffit_trainable(base),
        Trainable::All => crate::difffit::mark_all_trainable(base),
    };
    let trainable = trainable_tensors(&model).values().map(|t| t.dims()[0]).sum::<usize>();
    let mut opt = PathAdamW::new(cfg.optimizer.clone());
    let mut ema = trainable_tensors(&model);
    let mut memory = MinimaxMemory::new(cfg.loss.memory_size);
    let mut step: u64 = 0;
    let mut resumed_from = None;

    let ckpt_dir = run_dir.join("checkpoints");
    if let Some((last_step, path)) = list_checkpoints(&ckpt_dir)?.pop() {
        let ck = Checkpoint::read(&path)?;
        let saved: TrainConfig = serde_json::from_value(ck.config.clone()).map_err(|e| CheckpointError::Corrupt { path: path.clone(), why: format!("config: {e}") })?;
        if saved.resume_key() != cfg.resume_key() {
            return Err(TrainError::ResumeMismatch {
                path,
                saved: serde_json::to_string(&saved.resume_key()).unwrap_or_default(),
                now: serde_json::to_string(&cfg.resume_key()).unwrap_or_default(),
            });
        }
        model = ck.apply_to(model, false)?;
        ema = ck.ema_tensors(&device.clone().inner());
        opt = ck.optimizer(cfg.optimizer.clone(), &device.clone().inner());
        memory = MinimaxMemory::restore(cfg.loss.memory_size, &ck.memory, &device);
        step = last_step;
        resumed_from = Some(last_step);
        tracing::info!("resuming from {} (step {last_step} of {total})", path.display());
    }

    let metrics_path = run_dir.join("metrics.jsonl");
    keep_metrics_up_to(&metrics_path, step)?;
    let mut metrics = std::fs::OpenOptions::new().create(true).append(true).open(&metrics_path).map_err(io_err(&metrics_path))?;

    let pb = ims3_diffusion::progress_bar(total, "im-finetune", opts.show_progress);
    pb.set_position(step);
    let started = Instant::now();
    let mut window = (Instant::now(), 0u64);
    let mut last_checkpoint = None;
    let mut order: Option<(u64, Vec<usize>)> = None;
    let mut done_here = 0u64;
    while step < total {
        let epoch = step / steps_per_epoch;
        if order.as_ref().is_none_or(|(e, _)| *e != epoch) {
            order = Some((epoch, epoch_order(cfg.seed, epoch, data.len())));
        }
        let k = (step % steps_per_epoch) as usize;
        let items = &order.as_ref().expect("set above").1[k * cfg.batch_size..(k + 1) * cfg.batch_size];
        let batch = draw_batch(data, items, cfg, &diffusion, step, &device);
        let loss = im_step_loss(&model, &diffusion, cfg.loss.minimax.then_some(&mut memory), &batch, &cfg.loss);
        let grads = GradientsParams::from_grads(loss.total.backward(), &model);
        model = opt.step(model, grads);
        let d = cfg.ema_decay;
        let now = trainable_tensors(&model);
        ema = ema.into_iter().map(|(k, e)| {
            let p = now[&k].clone();
            (k, e * d + p * (1.0 - d))
        }).collect();
        step += 1;
        done_here += 1;
        window.1 += 1;
        pb.set_position(step);

        if step % cfg.log_every == 0 || step == total {
            let secs = window.0.elapsed().as_secs_f64().max(1e-9);
            let img_s = (window.1 * cfg.batch_size as u64) as f64 / secs;
            window = (Instant::now(), 0);
            let values = loss.values();
            let mut line = serde_json::Map::new();
            line.insert("step".into(), step.into());
            line.insert("epoch".into(), (step as f64 / steps_per_epoch as f64).into());
            for (name, v) in &values {
                line.insert((*name).into(), (*v).into());
            }
            line.insert("img_per_s".into(), img_s.into());
            writeln!(metrics, "{}", serde_json::Value::Object(line)).map_err(io_err(&metrics_path))?;
            let shown: Vec<String> = values.iter().map(|(n, v)| format!("{n} {v:.4}")).collect();
            pb.set_message(format!("im-finetune {} | {img_s:.1} img/s", shown.join(" ")));
            tracing::debug!(step, "{}", shown.join(" "));
        }
        let stop_now = opts.stop_after.is_some_and(|n| done_here >= n);
        if step % cfg.checkpoint_every == 0 || step == total || stop_now {
            let path = Checkpoint::capture(step, cfg, &model, &ema, &opt, &memory)?.write(&ckpt_dir)?;
            prune(&ckpt_dir, cfg.keep_last)?;
            last_checkpoint = Some(path);
        }
        if stop_now {
            break;
        }
    }
    pb.finish_and_clear();
    if last_checkpoint.is_none() {
        last_checkpoint = list_checkpoints(&ckpt_dir)?.pop().map(|(_, p)| p);
    }
    Ok((model, TrainOutcome { steps_done: step, total_steps: total, resumed_from, last_checkpoint, trainable_parameters: trainable, seconds: started.elapsed().as_secs_f64() }))
}

/// Drops metric lines past `step` (left by a run interrupted after its last checkpoint).
fn keep_metrics_up_to(path: &Path, step: u64) -> Result<(), TrainError> {
    let Ok(text) = std::fs::read_to_string(path) else { return Ok(()) };
    let kept: Vec<&str> = text
        .lines()
        .filter(|l| serde_json::from_str::<serde_json::Value>(l).ok().and_then(|v| v["step"].as_u64()).is_some_and(|s| s <= step))
        .collect();
    let mut out = kept.join("\n");
    if !out.is_empty() {
        out.push('\n');
    }
    ims3_images::atomic_write(path, out.as_bytes()).map_err(io_err(path))
}

/// Keeps the newest `keep` checkpoints.
fn prune(dir: &Path, keep: usize) -> Result<(), TrainError> {
    let all = list_checkpoints(dir)?;
    let n = all.len();
    for (_, p) in all.into_iter().take(n.saturating_sub(keep)) {
        std::fs::remove_file(&p).map_err(io_err(&p))?;
    }
    Ok(())
}

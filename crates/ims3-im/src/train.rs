//! The IM fine-tuning loop: data order, the steps (`TrainState::step`), checkpoints with
//! resume, a JSONL metrics log and a progress bar.
//!
//! The RNG state at any step is `(seed, step)` (see `data.rs`); together with the parameters,
//! the EMA, AdamW's moments and the Minimax memories, which the checkpoint holds, a resumed run
//! continues exactly where the interrupted one stood (test `resume_matches_an_uninterrupted_run`).

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::time::Instant;

use ims3_dit::DiT;

use crate::checkpoint::{Checkpoint, CheckpointError, list_checkpoints};
use crate::config::{ConfigError, TrainConfig};
use crate::data::{TrainData, draw_batch, epoch_order};
use crate::state::TrainState;

#[derive(Debug, thiserror::Error)]
pub enum TrainError {
    #[error("invalid training config")]
    Config(#[from] ConfigError),
    #[error("the training set has {items} items, fewer than one batch of {batch}")]
    TooSmall { items: usize, batch: usize },
    #[error(transparent)]
    Checkpoint(#[from] CheckpointError),
    #[error("{path}: cannot write")]
    Io { path: PathBuf, source: std::io::Error },
    #[error("the model must live on an autodiff device (Device::autodiff())")]
    NotAutodiff,
    #[error(
        "{path}: written by a run with a different recipe; resume needs the same one (or a new run directory)\n  checkpoint: {saved}\n  this run:   {now}"
    )]
    ResumeMismatch { path: PathBuf, saved: String, now: String },
    #[error(
        "training diverged: at step {step} {what} is {value}; no checkpoint was written after step {last_good} (the newest finite one{}): rerun with a lower learning rate, or from a new run directory",
        match last_checkpoint { Some(p) => format!(", {}", p.display()), None => String::new() }
    )]
    Diverged { step: u64, what: String, value: f64, last_good: u64, last_checkpoint: Option<PathBuf> },
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
    move |source| TrainError::Io { path: path.to_path_buf(), source }
}

/// The error of a run that went non-finite at `step`, naming the newest (finite) checkpoint.
fn diverged(ckpt_dir: &Path, step: u64, what: String, value: f64) -> Result<TrainError, TrainError> {
    let last = list_checkpoints(ckpt_dir)?.pop();
    Ok(TrainError::Diverged { step, what, value, last_good: last.as_ref().map_or(0, |(s, _)| *s), last_checkpoint: last.map(|(_, p)| p) })
}

/// Fine-tunes `base` (on an autodiff device) with the Difffit rule, writing checkpoints and
/// `metrics.jsonl` under `run_dir`, resuming from the newest checkpoint there. Returns the
/// fine-tuned model (the raw weights; the EMA is in the checkpoints) and a report.
pub fn train(base: DiT, data: &dyn TrainData, cfg: &TrainConfig, run_dir: &Path, opts: &RunOptions) -> Result<(DiT, TrainOutcome), TrainError> {
    cfg.validate()?;
    let device = base.pos_embed.val().device();
    if !device.is_autodiff() {
        return Err(TrainError::NotAutodiff);
    }
    if data.len() < cfg.batch_size {
        return Err(TrainError::TooSmall { items: data.len(), batch: cfg.batch_size });
    }
    std::fs::create_dir_all(run_dir).map_err(io_err(run_dir))?;
    let steps_per_epoch = (data.len() / cfg.batch_size) as u64;
    let total = cfg.max_steps.unwrap_or(steps_per_epoch * cfg.epochs as u64);

    let ckpt_dir = run_dir.join("checkpoints");
    let (mut state, resumed_from) = match list_checkpoints(&ckpt_dir)?.pop() {
        Some((last_step, path)) => {
            let ck = Checkpoint::read(&path)?;
            if ck.config.resume_key() != cfg.resume_key() {
                return Err(TrainError::ResumeMismatch {
                    path,
                    saved: serde_json::to_string(&ck.config.resume_key()).unwrap_or_default(),
                    now: serde_json::to_string(&cfg.resume_key()).unwrap_or_default(),
                });
            }
            tracing::info!("resuming from {} (step {last_step} of {total})", path.display());
            (TrainState::resume(base, cfg, &ck)?, Some(last_step))
        }
        None => (TrainState::new(base, cfg), None),
    };
    let trainable = state.trainable_parameters();

    let metrics_path = run_dir.join("metrics.jsonl");
    keep_metrics_up_to(&metrics_path, state.step)?;
    let mut metrics = std::fs::OpenOptions::new().create(true).append(true).open(&metrics_path).map_err(io_err(&metrics_path))?;

    let pb = ims3_util::progress_bar(total, "im-finetune", opts.show_progress);
    pb.set_position(state.step);
    let started = Instant::now();
    let mut window = (Instant::now(), 0u64);
    let mut last_checkpoint = None;
    let mut order: Option<(u64, Vec<usize>)> = None;
    let mut done_here = 0u64;
    while state.step < total {
        let step = state.step;
        let epoch = step / steps_per_epoch;
        if order.as_ref().is_none_or(|(e, _)| *e != epoch) {
            order = Some((epoch, epoch_order(cfg.seed, epoch, data.len())));
        }
        let k = (step % steps_per_epoch) as usize;
        let items = &order.as_ref().expect("set above").1[k * cfg.batch_size..(k + 1) * cfg.batch_size];
        let batch = draw_batch(data, items, cfg, state.diffusion(), step, &device);
        let loss = state.step(&batch);
        let step = state.step;
        done_here += 1;
        window.1 += 1;
        pb.set_position(step);

        let stop_now = opts.stop_after.is_some_and(|n| done_here >= n);
        let checkpoint_now = step % cfg.checkpoint_every == 0 || step == total || stop_now;
        let log_now = step % cfg.log_every == 0 || step == total;
        if log_now || checkpoint_now {
            let values = loss.values();
            if log_now {
                let secs = window.0.elapsed().as_secs_f64().max(1e-9);
                let img_s = (window.1 * cfg.batch_size as u64) as f64 / secs;
                window = (Instant::now(), 0);
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
            // A non-finite loss means the weights are (or are about to be) non-finite: stop before
            // a checkpoint could hold them, rather than train on for hours (checked at every
            // logged step and before every checkpoint).
            if let Some((term, value)) = values.iter().find(|(_, v)| !v.is_finite()) {
                pb.finish_and_clear();
                return Err(diverged(&ckpt_dir, step, format!("the loss term `{term}`"), *value)?);
            }
        }
        if checkpoint_now {
            // A finite loss does not prove finite weights: a NaN gradient (0 * inf in a backward)
            // leaves this step's loss clean and the weights after its update NaN. The checkpoint is
            // on the host here, so its every value is checked before it is written.
            let ck = state.checkpoint();
            if let Some((name, value)) = ck.first_non_finite() {
                pb.finish_and_clear();
                return Err(diverged(&ckpt_dir, step, format!("the state tensor `{name}`"), value)?);
            }
            let path = ck.write(&ckpt_dir)?;
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
    let steps_done = state.step;
    Ok((state.into_model(), TrainOutcome { steps_done, total_steps: total, resumed_from, last_checkpoint, trainable_parameters: trainable, seconds: started.elapsed().as_secs_f64() }))
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
    ims3_util::atomic_write(path, out.as_bytes()).map_err(io_err(path))
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

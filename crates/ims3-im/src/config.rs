//! The fine-tuning recipe as one typed value: what trains, with which loss terms, optimiser,
//! EMA, batch, data order and checkpoint cadence. Defaults are the reference's (`run.sh` /
//! `train_dit.py`): batch 8, 8 epochs, AdamW lr 1e-3 without weight decay, EMA 0.9999, flips,
//! IM (lambda 0.002) + Minimax on. A recipe file (`--train-config`) holds these keys in TOML;
//! checkpoints carry the same value in their header.

use serde::{Deserialize, Serialize};

use crate::losses::{IM_LAMBDA, LAMBDA_NEG, LAMBDA_POS, MEMORY_SIZE};

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

/// Which loss terms are on, with their weights. The defaults are IMS3's (`run.sh`: IM on with
/// lambda 0.002, Minimax's `--condense` terms on). The paper's ablations are one switch apart:
/// DiT (both off), Minimax (`im = false`), IM only (`minimax = false`), IM + Minimax (default).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LossConfig {
    pub im: bool,
    pub im_lambda: f64,
    pub minimax: bool,
    pub lambda_pos: f64,
    pub lambda_neg: f64,
    pub memory_size: usize,
    /// Label dropout probability of both forwards (DiT's `class_dropout_prob`).
    pub label_dropout: f64,
}

impl Default for LossConfig {
    fn default() -> Self {
        Self { im: true, im_lambda: IM_LAMBDA, minimax: true, lambda_pos: LAMBDA_POS, lambda_neg: LAMBDA_NEG, memory_size: MEMORY_SIZE, label_dropout: 0.1 }
    }
}

/// AdamW hyper-parameters; every default is the reference's (`torch.optim.AdamW` with lr 1e-3
/// and weight decay 0; PyTorch's betas and eps, not burn's).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AdamWSettings {
    pub lr: f64,
    pub beta1: f64,
    pub beta2: f64,
    pub eps: f64,
    pub weight_decay: f64,
}

impl Default for AdamWSettings {
    fn default() -> Self {
        Self { lr: 1e-3, beta1: 0.9, beta2: 0.999, eps: 1e-8, weight_decay: 0.0 }
    }
}

/// The fine-tuning recipe.
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
    /// `bf16`: the frozen weights held and multiplied in bf16, the trained Difffit parameters,
    /// AdamW's moments and the EMA in f32 (mixed precision; Difffit runs only). `f32`: the
    /// reference's, and the parity path.
    pub dtype: ims3_dit::Precision,
    /// Forwards and backwards per step: the batch split into this many contiguous shards whose
    /// gradients are summed (`shard.rs`), the same global batch and loss up to f32 rounding with
    /// a smaller peak memory; 1 (the default) is the reference's single pass. With Minimax on,
    /// each shard costs one extra no-grad forward (the cross-shard extremes are found first).
    pub micro_batches: usize,
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
            dtype: ims3_dit::Precision::F32,
            micro_batches: 1,
        }
    }
}

/// A recipe that cannot run.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ConfigError {
    #[error("batch_size must be at least 1")]
    Batch,
    #[error("ema_decay {0} is outside [0, 1)")]
    EmaDecay(f64),
    #[error("label_dropout {0} is outside [0, 1]")]
    LabelDropout(f64),
    #[error("checkpoint_every, log_every and keep_last must be at least 1")]
    Cadence,
    #[error("dtype bf16 keeps the trained parameters in f32 beside bf16 frozen weights: it needs trainable = difffit")]
    MixedNeedsDifffit,
    #[error("micro_batches {micro_batches} must be between 1 and batch_size {batch_size}")]
    MicroBatches { micro_batches: usize, batch_size: usize },
}

impl TrainConfig {
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.batch_size == 0 {
            return Err(ConfigError::Batch);
        }
        if !(0.0..1.0).contains(&self.ema_decay) {
            return Err(ConfigError::EmaDecay(self.ema_decay));
        }
        if !(0.0..=1.0).contains(&self.loss.label_dropout) {
            return Err(ConfigError::LabelDropout(self.loss.label_dropout));
        }
        if self.checkpoint_every == 0 || self.log_every == 0 || self.keep_last == 0 {
            return Err(ConfigError::Cadence);
        }
        if self.dtype != ims3_dit::Precision::F32 && self.trainable != Trainable::Difffit {
            return Err(ConfigError::MixedNeedsDifffit);
        }
        if self.micro_batches == 0 || self.micro_batches > self.batch_size {
            return Err(ConfigError::MicroBatches { micro_batches: self.micro_batches, batch_size: self.batch_size });
        }
        Ok(())
    }

    /// The fields a resumed run must share with the run that wrote the checkpoint (everything
    /// but the step budget, the checkpoint cadence and the logging).
    pub fn resume_key(&self) -> TrainConfig {
        TrainConfig { max_steps: None, epochs: 0, checkpoint_every: 1, keep_last: 1, log_every: 1, ..self.clone() }
    }
}

//! Inversion-Matching (IM) fine-tuning of DiT, IMS3's first stage (REFERENCE section 3).
//!
//! - `config.rs`: the recipe (`TrainConfig`: loss terms, AdamW, EMA, batch, cadence).
//! - `losses.rs`: the IM term and Minimax's representativeness/diversity memory terms.
//! - `step.rs`: one step's loss (diffusion MSE + VB + the switchable extra terms).
//! - `shard.rs`: one step split over shards of the batch (data parallelism, gradient accumulation).
//! - `state.rs`: everything a run changes (model, EMA, AdamW, memories, step) and one step over it.
//! - `difffit.rs`: Difffit parameter selection, parameter access by module path.
//! - `flat.rs`: AdamW and the EMA over one flat buffer of all trained parameters (the default).
//! - `ema.rs`: the EMA of the trained weights, per tensor.
//! - `optim.rs`: PyTorch's AdamW with its state keyed by module path.
//! - `data.rs`: the training set as the trainer sees it, data order, each step's random draws.
//! - `checkpoint.rs`: checkpoints of only what changes (trained parameters, EMA, AdamW, memories).
//! - `train.rs`: the loop (resume, metrics, progress).

pub mod checkpoint;
pub mod config;
pub mod data;
pub mod difffit;
pub mod ema;
pub mod flat;
pub mod losses;
pub mod optim;
pub mod shard;
pub mod state;
pub mod step;
pub mod train;

pub use checkpoint::{Checkpoint, CheckpointError, list_checkpoints};
pub use config::{AdamWSettings, ConfigError, LossConfig, TrainConfig, Trainable};
pub use data::{InMemoryData, TrainData, draw_batch, epoch_order};
pub use difffit::{ParameterMismatch, difffit_trainable_count, mark_all_trainable, mark_difffit_trainable, overwrite_parameters, parameters_by_path, trainable_tensors};
pub use ema::Ema;
pub use losses::{IM_LAMBDA, LAMBDA_NEG, LAMBDA_POS, MEMORY_SIZE, MinimaxMemory, im_loss, pairwise_cosine};
pub use optim::PathAdamW;
pub use flat::{FlatLayout, FlatUpdate};
pub use shard::{Exchange, ShardLoss, ShardSummary, accumulated_step_grads, shard_batch, shard_loss, shard_ranges, summarize_shard};
pub use state::{TrainState, UpdateLayout};
pub use step::{StepBatch, StepLoss, im_step_loss};
pub use train::{RunOptions, TrainError, TrainOutcome, train};

//! Inversion-Matching (IM) fine-tuning of DiT, IMS3's first stage (REFERENCE section 3).
//!
//! - `losses.rs`: the IM term and Minimax's representativeness/diversity memory terms.
//! - `step.rs`: one step's loss (diffusion MSE + VB + the switchable extra terms).
//! - `difffit.rs`: Difffit parameter selection, the EMA, parameter access by module path.
//! - `optim.rs`: PyTorch's AdamW with its state keyed by module path.
//! - `checkpoint.rs`: checkpoints of only what changes (trained parameters, EMA, AdamW, memories).
//! - `train.rs`: the loop (data order, seeded randomness, resume, metrics, progress).

pub mod checkpoint;
pub mod difffit;
pub mod losses;
pub mod optim;
pub mod step;
pub mod train;

pub use checkpoint::{Checkpoint, CheckpointError, list_checkpoints};
pub use difffit::{difffit_trainable_count, ema_update, mark_all_trainable, mark_difffit_trainable, overwrite_parameters, parameters_by_path, trainable_tensors};
pub use losses::{IM_LAMBDA, LAMBDA_NEG, LAMBDA_POS, MEMORY_SIZE, MinimaxMemory, im_loss, pairwise_cosine};
pub use optim::{AdamWSettings, PathAdamW};
pub use step::{LossConfig, StepBatch, StepLoss, im_step_loss};
pub use train::{CachedLatents, InMemoryData, RunOptions, TrainConfig, Trainable, TrainData, TrainError, TrainOutcome, train};

//! Inversion-Matching (IM) fine-tuning of DiT, IMS3's first stage (REFERENCE section 3).
//!
//! So far: the loss terms that the reference adds to the diffusion loss (`losses.rs`: the IM
//! term and Minimax's representativeness/diversity memory terms), and Difffit parameter
//! selection with the EMA of the weights (`difffit.rs`). The training loop (data, AdamW
//! schedule, checkpoints, resume) is to come.

pub mod difffit;
pub mod losses;

pub use difffit::{difffit_trainable_count, ema_update, mark_difffit_trainable, parameters_by_path};
pub use losses::{IM_LAMBDA, LAMBDA_NEG, LAMBDA_POS, MEMORY_SIZE, MinimaxMemory, im_loss, pairwise_cosine};

//! Inversion-Matching (IM) fine-tuning of DiT, IMS3's first stage (REFERENCE section 3).
//!
//! So far the loss terms that the reference adds to the diffusion loss (`losses.rs`):
//! the IM term and Minimax's representativeness/diversity memory terms. The training loop
//! (Difffit freezing, AdamW, EMA, checkpoints) is to come.

pub mod losses;

pub use losses::{IM_LAMBDA, LAMBDA_NEG, LAMBDA_POS, MEMORY_SIZE, MinimaxMemory, im_loss, pairwise_cosine};

//! The IDDPM machinery that DiT, Minimax and IMS3 share, independent of any network:
//! schedules and respacing (`schedule.rs`, float64), the per-step formulas and losses
//! (`gaussian.rs`), and the sampling loops and DDIM inversion (`sample.rs`).
//!
//! Samplers take the network as a [`Denoiser`] (any `Fn(x, t) -> out` closure).

pub mod gaussian;
pub mod sample;
pub mod schedule;

pub use gaussian::{Denoiser, GaussianDiffusion, LossTerms, NoiseSource, PMeanVariance};
pub use sample::Sampler;
pub use schedule::{NoiseSchedule, Respacing, Schedule, ScheduleError, space_timesteps};

//! The Stable Diffusion VAE that DiT works behind (`stabilityai/sd-vae-ft-ema`, `-ft-mse`):
//! the diffusers `AutoencoderKL` layout (`model.rs`), its hub config (`config.rs`) and weights
//! with either attention naming (`load.rs`).
//!
//! DiT latents are posterior samples times [`VaeConfig::scaling_factor`] (0.18215); see
//! [`AutoencoderKL::to_dit_latent`] and [`AutoencoderKL::from_dit_latent`].

pub mod cache;
pub mod config;
pub mod load;
pub mod model;
pub mod train;

pub use cache::{CacheError, CacheOptions, ClassFolder, LatentCache};
pub use config::{ConfigError, ConfigFileError, VaeConfig};
pub use load::{VaeError, load_vae, load_vae_dir, save_vae_dir};
pub use model::{AutoencoderKL, Posterior};
pub use train::{ImageSet, VaeEpoch, VaeFitError, VaeFitOptions, VaeLoss, fit_vae, latent_scaling_factor, reconstruction_mse};

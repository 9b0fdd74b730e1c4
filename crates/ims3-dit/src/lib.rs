//! DiT for IMS3: the model (`model.rs`, one file, shapes in comments), its activation with its
//! fused CPU passes (`gelu.rs`), its configurations (`config.rs`) and checkpoint I/O (`load.rs`).
//!
//! ```no_run
//! use burn::prelude::*;
//! let device = Device::flex();
//! let (dit, report) = ims3_dit::load_dit("DiT-XL-2-256x256.pt", None, None, &device).unwrap();
//! println!("{:?}", report.config.preset_name());
//! ```

pub mod config;
pub mod gelu;
pub mod load;
pub mod model;

pub use config::{ConfigError, DIFFFIT_GAMMA_BLOCKS, DiTConfig};
pub use load::{LoadReport, expected_shapes, infer_config, is_difffit_trainable, load_dit, open_dit, save_dit};
pub use model::{AttentionKernel, CfgChannels, DiT, Precision};

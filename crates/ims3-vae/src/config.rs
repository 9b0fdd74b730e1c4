//! The hub's `config.json` of an `AutoencoderKL`, the fields this port uses.

use serde::{Deserialize, Serialize};
use std::path::Path;

#[derive(Clone, Debug, PartialEq, Deserialize, Serialize)]
pub struct VaeConfig {
    #[serde(default = "d_in")]
    pub in_channels: usize,
    #[serde(default = "d_in")]
    pub out_channels: usize,
    pub block_out_channels: Vec<usize>,
    #[serde(default = "d_layers")]
    pub layers_per_block: usize,
    #[serde(default = "d_latent")]
    pub latent_channels: usize,
    #[serde(default = "d_groups")]
    pub norm_num_groups: usize,
    #[serde(default = "d_scale")]
    pub scaling_factor: f64,
    #[serde(default = "d_true")]
    pub use_quant_conv: bool,
    #[serde(default = "d_true")]
    pub use_post_quant_conv: bool,
    #[serde(default = "d_true")]
    pub mid_block_add_attention: bool,
    #[serde(default)]
    pub act_fn: Option<String>,
    #[serde(default)]
    pub down_block_types: Vec<String>,
    #[serde(default)]
    pub up_block_types: Vec<String>,
}

fn d_in() -> usize { 3 }
fn d_layers() -> usize { 1 }
fn d_latent() -> usize { 4 }
fn d_groups() -> usize { 32 }
fn d_scale() -> f64 { 0.18215 }
fn d_true() -> bool { true }

impl VaeConfig {
    /// `stabilityai/sd-vae-ft-ema` / `-ft-mse` (the SD 1.x VAE).
    pub fn sd() -> Self {
        Self {
            in_channels: 3,
            out_channels: 3,
            block_out_channels: vec![128, 256, 512, 512],
            layers_per_block: 2,
            latent_channels: 4,
            norm_num_groups: 32,
            scaling_factor: 0.18215,
            use_quant_conv: true,
            use_post_quant_conv: true,
            mid_block_add_attention: true,
            act_fn: Some("silu".into()),
            down_block_types: vec!["DownEncoderBlock2D".into(); 4],
            up_block_types: vec!["UpDecoderBlock2D".into(); 4],
        }
    }

    /// Reads and checks a `config.json`.
    pub fn from_file(path: &Path) -> Result<Self, ConfigFileError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigFileError::Read { path: path.to_path_buf(), source })?;
        let cfg: Self = serde_json::from_str(&text).map_err(|source| ConfigFileError::Parse { path: path.to_path_buf(), source })?;
        cfg.validate().map_err(|source| ConfigFileError::Invalid { path: path.to_path_buf(), source })?;
        Ok(cfg)
    }

    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.block_out_channels.is_empty() {
            return Err(ConfigError::NoBlocks);
        }
        if let Some(a) = &self.act_fn
            && a != "silu"
        {
            return Err(ConfigError::Unsupported(format!("act_fn '{a}' (silu only)")));
        }
        for t in &self.down_block_types {
            if t != "DownEncoderBlock2D" {
                return Err(ConfigError::Unsupported(format!("down block type '{t}'")));
            }
        }
        for t in &self.up_block_types {
            if t != "UpDecoderBlock2D" {
                return Err(ConfigError::Unsupported(format!("up block type '{t}'")));
            }
        }
        if self.block_out_channels.iter().any(|c| c % self.norm_num_groups != 0) {
            return Err(ConfigError::Groups { channels: self.block_out_channels.clone(), groups: self.norm_num_groups });
        }
        Ok(())
    }

    /// Spatial downsampling factor (8 for the SD VAE).
    pub fn downscale(&self) -> usize {
        1 << (self.block_out_channels.len() - 1)
    }
}

/// A VAE configuration the model cannot be built from.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    #[error("block_out_channels is empty")]
    NoBlocks,
    #[error("{0} is not supported")]
    Unsupported(String),
    #[error("block_out_channels {channels:?} not divisible by norm_num_groups {groups}")]
    Groups { channels: Vec<usize>, groups: usize },
}

/// A `config.json` that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigFileError {
    #[error("{path}: cannot read")]
    Read { path: std::path::PathBuf, source: std::io::Error },
    #[error("{path}: not a valid AutoencoderKL config")]
    Parse { path: std::path::PathBuf, source: serde_json::Error },
    #[error("{path}")]
    Invalid { path: std::path::PathBuf, source: ConfigError },
}

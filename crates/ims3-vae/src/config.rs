//! The hub's `config.json` of an `AutoencoderKL`, the fields this port uses.

use serde::Deserialize;
use std::path::Path;

#[derive(Clone, Debug, PartialEq, Deserialize)]
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
    pub fn from_file(path: &Path) -> Result<Self, String> {
        let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
        let cfg: Self = serde_json::from_str(&text).map_err(|e| format!("{}: not a valid AutoencoderKL config: {e}", path.display()))?;
        cfg.validate().map_err(|e| format!("{}: {e}", path.display()))?;
        Ok(cfg)
    }

    pub fn validate(&self) -> Result<(), String> {
        if self.block_out_channels.is_empty() {
            return Err("block_out_channels is empty".into());
        }
        if let Some(a) = &self.act_fn
            && a != "silu" {
                return Err(format!("act_fn '{a}' is not supported (silu only)"));
            }
        for t in &self.down_block_types {
            if t != "DownEncoderBlock2D" {
                return Err(format!("down block type '{t}' is not supported"));
            }
        }
        for t in &self.up_block_types {
            if t != "UpDecoderBlock2D" {
                return Err(format!("up block type '{t}' is not supported"));
            }
        }
        if self.block_out_channels.iter().any(|c| c % self.norm_num_groups != 0) {
            return Err(format!("block_out_channels {:?} not divisible by norm_num_groups {}", self.block_out_channels, self.norm_num_groups));
        }
        Ok(())
    }

    /// Spatial downsampling factor (8 for the SD VAE).
    pub fn downscale(&self) -> usize {
        1 << (self.block_out_channels.len() - 1)
    }
}

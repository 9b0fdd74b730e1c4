//! DiT configurations: the S/B/L/XL x patch 2/4/8 table of the paper, plus any custom size.

use serde::{Deserialize, Serialize};

/// Everything needed to build a DiT. Field names follow the reference constructor's arguments.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct DiTConfig {
    /// Spatial size of the (latent) input; 32 for 256 px images through the SD-VAE.
    pub input_size: usize,
    pub patch_size: usize,
    pub in_channels: usize,
    pub hidden_size: usize,
    pub depth: usize,
    pub num_heads: usize,
    #[serde(default = "default_mlp_ratio")]
    pub mlp_ratio: f64,
    /// Label dropout probability for classifier-free guidance; > 0 adds the null-label row.
    #[serde(default = "default_dropout")]
    pub class_dropout_prob: f64,
    pub num_classes: usize,
    /// Output 2 x in_channels (eps + variance interpolation) when true.
    #[serde(default = "default_true")]
    pub learn_sigma: bool,
    /// Blocks `0..gamma_blocks` carry Difffit gammas (IMS3: the first 14).
    #[serde(default = "default_gamma_blocks")]
    pub gamma_blocks: usize,
}

fn default_mlp_ratio() -> f64 {
    4.0
}
fn default_dropout() -> f64 {
    0.1
}
fn default_true() -> bool {
    true
}
fn default_gamma_blocks() -> usize {
    DIFFFIT_GAMMA_BLOCKS
}

/// IMS3/Minimax `use_gamma = [True] * 14 + [False] * 14`.
pub const DIFFFIT_GAMMA_BLOCKS: usize = 14;

/// (name, hidden, depth, heads) of the paper's model sizes.
pub const SIZES: [(&str, usize, usize, usize); 4] = [
    ("S", 384, 12, 6),
    ("B", 768, 12, 12),
    ("L", 1024, 24, 16),
    ("XL", 1152, 28, 16),
];

impl DiTConfig {
    /// A named preset such as `DiT-XL/2` (256 px: latent 32, 1000 ImageNet classes).
    pub fn preset(name: &str) -> Option<Self> {
        let rest = name.trim().strip_prefix("DiT-").unwrap_or(name.trim());
        let (size, patch) = rest.split_once('/')?;
        let patch: usize = patch.parse().ok()?;
        if ![2, 4, 8].contains(&patch) {
            return None;
        }
        let (_, hidden, depth, heads) = SIZES.iter().find(|s| s.0.eq_ignore_ascii_case(size))?;
        Some(Self {
            input_size: 32,
            patch_size: patch,
            in_channels: 4,
            hidden_size: *hidden,
            depth: *depth,
            num_heads: *heads,
            mlp_ratio: 4.0,
            class_dropout_prob: 0.1,
            num_classes: 1000,
            learn_sigma: true,
            gamma_blocks: DIFFFIT_GAMMA_BLOCKS.min(*depth),
        })
    }

    /// All preset names, `DiT-S/2` .. `DiT-XL/8`.
    pub fn preset_names() -> Vec<String> {
        SIZES
            .iter()
            .flat_map(|(s, ..)| [2, 4, 8].map(|p| format!("DiT-{s}/{p}")))
            .collect()
    }

    /// The preset name if this config is one of the table's sizes.
    pub fn preset_name(&self) -> Option<String> {
        SIZES
            .iter()
            .find(|(_, h, d, n)| *h == self.hidden_size && *d == self.depth && *n == self.num_heads)
            .map(|(s, ..)| format!("DiT-{s}/{}", self.patch_size))
    }

    pub fn out_channels(&self) -> usize {
        if self.learn_sigma { 2 * self.in_channels } else { self.in_channels }
    }

    pub fn mlp_hidden(&self) -> usize {
        (self.hidden_size as f64 * self.mlp_ratio) as usize
    }

    /// Rows of the label table: one extra (null) row when label dropout is on.
    pub fn label_rows(&self) -> usize {
        self.num_classes + usize::from(self.class_dropout_prob > 0.0)
    }

    pub fn num_patches(&self) -> usize {
        (self.input_size / self.patch_size).pow(2)
    }

    /// Checks the invariants the model relies on.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.patch_size == 0 || !self.input_size.is_multiple_of(self.patch_size) {
            return Err(ConfigError::Patch { input_size: self.input_size, patch_size: self.patch_size });
        }
        if self.num_heads == 0 || !self.hidden_size.is_multiple_of(self.num_heads) {
            return Err(ConfigError::Heads { hidden_size: self.hidden_size, num_heads: self.num_heads });
        }
        if !self.hidden_size.is_multiple_of(4) {
            return Err(ConfigError::Width(self.hidden_size));
        }
        if self.gamma_blocks > self.depth {
            return Err(ConfigError::GammaBlocks { gamma_blocks: self.gamma_blocks, depth: self.depth });
        }
        Ok(())
    }

    /// Number of heads of the standard size with this hidden width, if any (the head count
    /// cannot be read off a checkpoint).
    pub fn standard_heads(hidden_size: usize) -> Option<usize> {
        SIZES.iter().find(|s| s.1 == hidden_size).map(|s| s.3)
    }
}

/// A DiT configuration the model cannot be built from.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    #[error("input_size {input_size} is not a multiple of patch_size {patch_size}")]
    Patch { input_size: usize, patch_size: usize },
    #[error("hidden_size {hidden_size} is not divisible by num_heads {num_heads}")]
    Heads { hidden_size: usize, num_heads: usize },
    #[error("hidden_size {0} must be a multiple of 4 (2-D sin-cos pos_embed)")]
    Width(usize),
    #[error("gamma_blocks {gamma_blocks} exceeds depth {depth}")]
    GammaBlocks { gamma_blocks: usize, depth: usize },
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn presets() {
        let xl = DiTConfig::preset("DiT-XL/2").unwrap();
        assert_eq!((xl.hidden_size, xl.depth, xl.num_heads, xl.num_patches()), (1152, 28, 16, 256));
        assert_eq!(xl.label_rows(), 1001);
        assert_eq!(DiTConfig::preset("S/8").unwrap().num_patches(), 16);
        assert!(DiTConfig::preset("DiT-XL/3").is_none());
        assert_eq!(DiTConfig::preset_names().len(), 12);
        assert_eq!(xl.preset_name().as_deref(), Some("DiT-XL/2"));
    }
}

//! Loading `diffusion_pytorch_model.safetensors` (or a `.bin`/`.pt` state dict) of an
//! `AutoencoderKL`, with either attention naming.

use std::path::Path;

use burn::prelude::*;
use ims3_weights::{Checkpoint, KeyMap, WeightsError, compare_shapes, expected_shapes_of};

use crate::config::{ConfigError, ConfigFileError, VaeConfig};
use crate::model::AutoencoderKL;

/// Older hub files name the mid-block attention `query/key/value/proj_attn`; newer ones
/// `to_q/to_k/to_v/to_out.0`. Both load into the same module.
pub fn key_map() -> KeyMap {
    KeyMap::new(
        &[
            (r"(attentions\.\d+)\.query\.", "$1.to_q."),
            (r"(attentions\.\d+)\.key\.", "$1.to_k."),
            (r"(attentions\.\d+)\.value\.", "$1.to_v."),
            (r"(attentions\.\d+)\.proj_attn\.", "$1.to_out.0."),
        ],
        &[],
    )
}

/// Renames the old attention keys of a checkpoint's table of contents to the new ones.
fn normalise_names(ckpt: &mut Checkpoint) {
    let km = key_map();
    let pairs: Vec<(regex::Regex, String)> =
        km.to_module.iter().map(|(a, b)| (regex::Regex::new(a).unwrap(), b.clone())).collect();
    ckpt.tensors = std::mem::take(&mut ckpt.tensors)
        .into_iter()
        .map(|(k, v)| {
            let mut k = k;
            for (re, to) in &pairs {
                k = re.replace_all(&k, to.as_str()).into_owned();
            }
            (k, v)
        })
        .collect();
}

/// Loads a VAE: `weights` must fit `config` exactly, else an error names the file and the
/// first mismatching keys.
pub fn load_vae(weights: impl AsRef<Path>, config: &VaeConfig, device: &Device) -> Result<AutoencoderKL, VaeError> {
    config.validate().map_err(|source| VaeError::Config { path: weights.as_ref().to_path_buf(), source })?;
    let mut ckpt = Checkpoint::open(weights.as_ref(), None)?;
    normalise_names(&mut ckpt);
    let mut model = config.init(device);
    let expected = expected_shapes_of(&model, &KeyMap::default());
    let target = format!("AutoencoderKL {:?}", config.block_out_channels);
    compare_shapes(&ckpt, &expected, |_| false).ensure_fits(&ckpt, &target)?;
    let left = ims3_weights::load_into(&mut model, &ckpt, &key_map())?;
    ims3_weights::ensure_all_loaded(&left, &ckpt, &target)?;
    Ok(model)
}

/// Loads a hub folder: `config.json` + `diffusion_pytorch_model.safetensors`.
pub fn load_vae_dir(dir: impl AsRef<Path>, device: &Device) -> Result<(AutoencoderKL, VaeConfig), VaeError> {
    let dir = dir.as_ref();
    let config = VaeConfig::from_file(&dir.join("config.json"))?;
    let weights = ["diffusion_pytorch_model.safetensors", "diffusion_pytorch_model.bin"]
        .iter()
        .map(|f| dir.join(f))
        .find(|p| p.is_file())
        .ok_or_else(|| VaeError::NoWeights(dir.to_path_buf()))?;
    Ok((load_vae(weights, &config, device)?, config))
}

/// Writes a hub folder that [`load_vae_dir`] reads back: `config.json` (with the
/// `scaling_factor` the model carries) and `diffusion_pytorch_model.safetensors` in diffusers
/// naming, with `record` (how the weights were made) in its header. Both writes are atomic.
pub fn save_vae_dir(vae: &AutoencoderKL, config: &VaeConfig, dir: &Path, record: &serde_json::Value) -> Result<(), VaeError> {
    let config = VaeConfig { scaling_factor: vae.scaling_factor, ..config.clone() };
    let weights = dir.join("diffusion_pytorch_model.safetensors");
    let meta = std::collections::BTreeMap::from([("ims3.training".to_string(), record.to_string())]);
    ims3_weights::save_safetensors(vae, &weights, &KeyMap::default(), &meta)?;
    let json = serde_json::to_string_pretty(&config).expect("config serialises");
    ims3_util::atomic_write(&dir.join("config.json"), json.as_bytes())
        .map_err(|e| WeightsError::Other { path: dir.join("config.json"), why: format!("cannot write: {e}") })?;
    Ok(())
}

/// Why a VAE could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum VaeError {
    #[error(transparent)]
    Weights(#[from] WeightsError),
    #[error(transparent)]
    ConfigFile(#[from] ConfigFileError),
    #[error("{path}: the VAE config does not fit")]
    Config { path: std::path::PathBuf, source: ConfigError },
    #[error("{0}: no diffusion_pytorch_model.safetensors (or .bin) in this folder")]
    NoWeights(std::path::PathBuf),
}

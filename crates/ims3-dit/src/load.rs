//! Loading and saving DiT weights.
//!
//! Accepted inputs: the official `DiT-XL-2-256x256.pt` (plain state dict, no gammas), the same
//! layout with Difffit gammas, training checkpoints that nest the weights under `ema` / `model`,
//! and the project's own safetensors (PyTorch names and layout, with the config in the header).

use std::collections::BTreeMap;
use std::path::Path;

use burn::prelude::*;
use ims3_weights::{Checkpoint, KeyMap, WeightsError, compare_shapes};

use crate::config::DiTConfig;
use crate::model::DiT;

/// Metadata key under which the project's safetensors store the config (JSON).
pub const META_CONFIG: &str = "ims3.dit.config";
/// Metadata key naming what a file holds.
pub const META_KIND: &str = "ims3.kind";

/// The renames between checkpoint keys and module paths.
pub fn key_map() -> KeyMap {
    KeyMap::new(
        &[
            (r"adaLN_modulation\.1\.", "ada_ln_modulation."),
            (r"^t_embedder\.mlp\.0\.", "t_embedder.mlp_0."),
            (r"^t_embedder\.mlp\.2\.", "t_embedder.mlp_2."),
        ],
        &[
            (r"ada_ln_modulation\.", "adaLN_modulation.1."),
            (r"^t_embedder\.mlp_0\.", "t_embedder.mlp.0."),
            (r"^t_embedder\.mlp_2\.", "t_embedder.mlp.2."),
        ],
    )
}

/// Every tensor a DiT of `cfg` holds, by checkpoint key, with its PyTorch shape.
pub fn expected_shapes(cfg: &DiTConfig) -> BTreeMap<String, Vec<usize>> {
    let d = cfg.hidden_size;
    let p = cfg.patch_size;
    let mut m = BTreeMap::new();
    let mut put = |k: String, s: Vec<usize>| {
        m.insert(k, s);
    };
    put("pos_embed".into(), vec![1, cfg.num_patches(), d]);
    put("x_embedder.proj.weight".into(), vec![d, cfg.in_channels, p, p]);
    put("x_embedder.proj.bias".into(), vec![d]);
    put("t_embedder.mlp.0.weight".into(), vec![d, 256]);
    put("t_embedder.mlp.0.bias".into(), vec![d]);
    put("t_embedder.mlp.2.weight".into(), vec![d, d]);
    put("t_embedder.mlp.2.bias".into(), vec![d]);
    put("y_embedder.embedding_table.weight".into(), vec![cfg.label_rows(), d]);
    for i in 0..cfg.depth {
        let b = format!("blocks.{i}");
        if i < cfg.gamma_blocks {
            put(format!("{b}.gamma1"), vec![d]);
            put(format!("{b}.gamma2"), vec![d]);
            put(format!("{b}.attn.gamma1"), vec![3 * d]);
            put(format!("{b}.attn.gamma2"), vec![d]);
        }
        put(format!("{b}.attn.qkv.weight"), vec![3 * d, d]);
        put(format!("{b}.attn.qkv.bias"), vec![3 * d]);
        put(format!("{b}.attn.proj.weight"), vec![d, d]);
        put(format!("{b}.attn.proj.bias"), vec![d]);
        put(format!("{b}.mlp.fc1.weight"), vec![cfg.mlp_hidden(), d]);
        put(format!("{b}.mlp.fc1.bias"), vec![cfg.mlp_hidden()]);
        put(format!("{b}.mlp.fc2.weight"), vec![d, cfg.mlp_hidden()]);
        put(format!("{b}.mlp.fc2.bias"), vec![d]);
        put(format!("{b}.adaLN_modulation.1.weight"), vec![6 * d, d]);
        put(format!("{b}.adaLN_modulation.1.bias"), vec![6 * d]);
    }
    put("final_layer.linear.weight".into(), vec![p * p * cfg.out_channels(), d]);
    put("final_layer.linear.bias".into(), vec![p * p * cfg.out_channels()]);
    put("final_layer.adaLN_modulation.1.weight".into(), vec![2 * d, d]);
    put("final_layer.adaLN_modulation.1.bias".into(), vec![2 * d]);
    m
}

/// The reference's Difffit rule (train_dit.py): a parameter is trained iff its name contains
/// `bias`, `norm`, `gamma` or `y_embed`. For DiT-XL/2 that is 1,739,552 parameters: every
/// bias, the gammas of blocks 0..13 and the whole label table; `pos_embed` stays frozen.
pub fn is_difffit_trainable(key: &str) -> bool {
    ["bias", "norm", "gamma", "y_embed"].iter().any(|s| key.contains(s))
}

/// Difffit gammas may be absent (the official checkpoint has none): they then stay at 1.
pub fn is_gamma(key: &str) -> bool {
    key.ends_with(".gamma1") || key.ends_with(".gamma2")
}

/// Reads the config off a checkpoint: from the project's metadata if present, else from the
/// tensor shapes. The head count cannot be seen in the weights; it is taken from the standard
/// size with that width unless `heads` is given.
pub fn infer_config(ckpt: &Checkpoint, heads: Option<usize>) -> Result<DiTConfig, WeightsError> {
    if let Some(json) = ckpt.metadata.get(META_CONFIG) {
        return serde_json::from_str(json).map_err(|e| WeightsError::Corrupt {
            path: ckpt.path.clone(),
            why: format!("metadata '{META_CONFIG}' is not a valid DiT config: {e}"),
        });
    }
    let err = |why: String| WeightsError::Mismatch {
        path: ckpt.path.clone(),
        target: "any DiT".into(),
        details: format!("  {why}"),
    };
    let shape = |k: &str| ckpt.shape(k).ok_or_else(|| err(format!("key '{k}' is missing")));
    let pos = shape("pos_embed")?;
    let proj = shape("x_embedder.proj.weight")?;
    let table = shape("y_embedder.embedding_table.weight")?;
    let fc1 = shape("blocks.0.mlp.fc1.weight")?;
    let final_linear = shape("final_layer.linear.weight")?;
    if pos.len() != 3 || proj.len() != 4 || table.len() != 2 || fc1.len() != 2 || final_linear.len() != 2 {
        return Err(err("unexpected tensor ranks for pos_embed / x_embedder / y_embedder / mlp / final_layer".into()));
    }
    let hidden = pos[2];
    let patch = proj[2];
    let in_channels = proj[1];
    let grid = (pos[1] as f64).sqrt().round() as usize;
    let depth = (0..)
        .take_while(|i| ckpt.tensors.contains_key(&format!("blocks.{i}.attn.qkv.weight")))
        .count();
    let gamma_blocks = (0..depth)
        .take_while(|i| ckpt.tensors.contains_key(&format!("blocks.{i}.gamma1")))
        .count();
    let out_channels = final_linear[0] / (patch * patch).max(1);
    let num_heads = match heads.or_else(|| DiTConfig::standard_heads(hidden)) {
        Some(h) => h,
        None => {
            return Err(err(format!(
                "hidden size {hidden} is not a standard DiT width; give the head count explicitly"
            )));
        }
    };
    // A table with one row more than a round class count: the null label of CFG. The reference
    // always trains with label dropout, so the extra row is assumed whenever the table is odd
    // against the standard 1000 classes or small fixtures alike.
    let rows = table[0];
    let cfg = DiTConfig {
        input_size: grid * patch,
        patch_size: patch,
        in_channels,
        hidden_size: hidden,
        depth,
        num_heads,
        mlp_ratio: fc1[0] as f64 / hidden as f64,
        class_dropout_prob: 0.1,
        num_classes: rows.saturating_sub(1),
        learn_sigma: out_channels == 2 * in_channels,
        // A checkpoint without gammas is loaded with IMS3's standard placement (gammas = 1).
        gamma_blocks: if gamma_blocks == 0 { crate::config::DIFFFIT_GAMMA_BLOCKS.min(depth) } else { gamma_blocks },
    };
    cfg.validate().map_err(|e| err(e.to_string()))?;
    Ok(cfg)
}

/// What loading a checkpoint found.
#[derive(Clone, Debug)]
pub struct LoadReport {
    pub config: DiTConfig,
    /// Gammas the file did not have (left at 1).
    pub defaulted_gammas: usize,
    /// Nested state dict that was used, if any.
    pub nested_key: Option<String>,
}

/// Loads a DiT from `path`. With `config` the checkpoint must fit it exactly (else an error
/// naming the first mismatching keys and shapes); without, the config is inferred.
pub fn load_dit(
    path: impl AsRef<Path>,
    config: Option<&DiTConfig>,
    nested: Option<&str>,
    device: &Device,
) -> Result<(DiT, LoadReport), WeightsError> {
    let ckpt = Checkpoint::open(path.as_ref(), nested)?;
    let config = match config {
        Some(c) => c.clone(),
        None => infer_config(&ckpt, None)?,
    };
    let target = config.preset_name().unwrap_or_else(|| "the DiT config".to_string());
    let described = format!("{target} ({} blocks, hidden {})", config.depth, config.hidden_size);
    let expected = expected_shapes(&config);
    compare_shapes(&ckpt, &expected, is_gamma).ensure_fits(&ckpt, &described)?;
    let defaulted_gammas = expected.keys().filter(|k| is_gamma(k) && !ckpt.tensors.contains_key(*k)).count();
    let mut model = config.init(device);
    let left = ims3_weights::load_into(&mut model, &ckpt, &key_map())?;
    let unexpected: Vec<String> = left.into_iter().filter(|k| !is_gamma(k)).collect();
    ims3_weights::ensure_all_loaded(&unexpected, &ckpt, &target)?;
    Ok((model, LoadReport { config, defaulted_gammas, nested_key: ckpt.nested_key.clone() }))
}

/// Saves in the project's format: safetensors with PyTorch names/layout and the config in the
/// header, written atomically.
/// Loads a DiT whose config is read off the file (`heads`: the head count of a non-standard
/// width, which the weights cannot tell).
pub fn open_dit(path: impl AsRef<Path>, nested: Option<&str>, heads: Option<usize>, device: &Device) -> Result<(DiT, LoadReport), WeightsError> {
    let config = infer_config(&Checkpoint::open(path.as_ref(), nested)?, heads)?;
    load_dit(path, Some(&config), nested, device)
}

pub fn save_dit(model: &DiT, config: &DiTConfig, path: impl AsRef<Path>) -> Result<(), WeightsError> {
    let mut meta = BTreeMap::new();
    meta.insert(META_KIND.to_string(), "dit".to_string());
    meta.insert(META_CONFIG.to_string(), serde_json::to_string(config).expect("config serialises"));
    ims3_weights::save_safetensors(model, path.as_ref(), &key_map(), &meta)
}

//! State-dict loading for every network of this crate: a model is built from its config, the
//! file's tensor shapes are checked against it (naming each mismatch), and every tensor is
//! loaded through burn-store with the key map of the network's checkpoint layout.

use std::path::Path;

use burn::module::Module;
use burn::prelude::*;
use ims3_weights::{Checkpoint, KeyMap, WeightsError, compare_shapes, expected_shapes_of};

use crate::NetError;
use crate::resnet::{ResNet, ResNetConfig};
use crate::resnet_ap::{ResNetAP, ResNetAPConfig};

/// Why a network could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error(transparent)]
    Weights(#[from] WeightsError),
    #[error("{path}: cannot build {target}")]
    Config { path: std::path::PathBuf, target: String, source: NetError },
}

/// IDC's `ResNetAP` keys: `downsample.0` is the conv, `.2` the norm (`.1` the pool).
fn resnet_ap_keys() -> KeyMap {
    KeyMap::new(
        &[(r"\.downsample\.0\.", ".downsample.conv."), (r"\.downsample\.2\.", ".downsample.norm.")],
        &[(r"\.downsample\.conv\.", ".downsample.0."), (r"\.downsample\.norm\.", ".downsample.2.")],
    )
}

/// IDC's `ResNet` keys (`layer0.conv1`, `downsample.0/1`).
fn idc_resnet_keys() -> KeyMap {
    KeyMap::new(
        &[(r"\.downsample\.0\.", ".downsample.conv."), (r"\.downsample\.1\.", ".downsample.norm.")],
        &[(r"\.downsample\.conv\.", ".downsample.0."), (r"\.downsample\.norm\.", ".downsample.1.")],
    )
}

/// torchvision's keys: the stem at the top level (`conv1`, `bn1`), `downsample.0/1`.
fn torchvision_resnet_keys() -> KeyMap {
    KeyMap::new(
        &[(r"^conv1\.", "layer0.conv1."), (r"^bn1\.", "layer0.bn1."), (r"\.downsample\.0\.", ".downsample.conv."), (r"\.downsample\.1\.", ".downsample.norm.")],
        &[(r"^layer0\.conv1\.", "conv1."), (r"^layer0\.bn1\.", "bn1."), (r"\.downsample\.conv\.", ".downsample.0."), (r"\.downsample\.norm\.", ".downsample.1.")],
    )
}

/// Builds a model with `init` and fills it from a PyTorch state dict (or safetensors): shapes
/// checked first (BatchNorm's `num_batches_tracked` may be left unused), every parameter loaded.
pub fn load_state_dict<M: Module>(
    path: &Path,
    init: impl FnOnce(&Device) -> Result<M, NetError>,
    keys: &KeyMap,
    target: &str,
    device: &Device,
) -> Result<M, LoadError> {
    let ckpt = Checkpoint::open(path, None)?;
    let mut model = init(device).map_err(|source| LoadError::Config { path: ckpt.path.clone(), target: target.to_string(), source })?;
    let mut report = compare_shapes(&ckpt, &expected_shapes_of(&model, keys), |_| false);
    report.unused.retain(|k| !k.ends_with("num_batches_tracked"));
    report.ensure_fits(&ckpt, target)?;
    let left = ims3_weights::load_into(&mut model, &ckpt, keys)?;
    ims3_weights::ensure_all_loaded(&left, &ckpt, target)?;
    Ok(model)
}

/// Loads torchvision's `resnet18` `.pth` (e.g. `resnet18-f37072fd.pth`, `IMAGENET1K_V1`); the
/// class count is read off `fc.weight`.
pub fn load_torchvision_resnet18(path: impl AsRef<Path>, device: &Device) -> Result<ResNet, LoadError> {
    let path = path.as_ref();
    let ckpt = Checkpoint::open(path, None)?;
    let num_classes = ckpt.shape("fc.weight").map_or(1000, |s| s[0]);
    let config = ResNetConfig::torchvision_resnet18(num_classes);
    load_state_dict(path, |d| config.init(d), &torchvision_resnet_keys(), "torchvision resnet18", device)
}

/// Loads an IDC `ResNet` state dict for `config`.
pub fn load_idc_resnet(path: impl AsRef<Path>, config: &ResNetConfig, device: &Device) -> Result<ResNet, LoadError> {
    let target = format!("IDC ResNet-{} ({} norm, {:?} stem)", config.depth, config.norm, config.stem);
    load_state_dict(path.as_ref(), |d| config.init(d), &idc_resnet_keys(), &target, device)
}

/// Loads an IDC `ResNetAP` state dict (`torch.save(model.state_dict())`) for `config`.
pub fn load_resnet_ap(path: impl AsRef<Path>, config: &ResNetAPConfig, device: &Device) -> Result<ResNetAP, LoadError> {
    let target = format!("ResNetAP-{} ({} norm, {} px)", config.depth, config.norm, config.input_size);
    load_state_dict(path.as_ref(), |d| config.init(d), &resnet_ap_keys(), &target, device)
}

//! IDC `ResNetAP` (ImageNet branch): stride-1 convolutions with average pooling for
//! downsampling. Field names mirror the state-dict keys; `downsample.0/2` become
//! `downsample.conv/norm` (index 1 is the AvgPool).

use std::path::Path;

use burn::nn::conv::{Conv2d, Conv2dConfig};
use burn::nn::pool::{AvgPool2d, AvgPool2dConfig};
use burn::nn::{BatchNorm, BatchNormConfig, GroupNorm, GroupNormConfig, Initializer, Linear, LinearConfig, PaddingConfig2d};
use burn::prelude::*;
use burn::tensor::activation::relu;
use ims3_weights::{Checkpoint, KeyMap, WeightsError, compare_shapes, expected_shapes_of};

/// The `norm_type` of IDC: "instance" is `GroupNorm(C, C)` with affine parameters.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Norm {
    Instance,
    Batch,
}

/// A normalisation layer of either kind (burn-store sees the inner module's type).
#[derive(Module, Debug)]
pub enum NormLayer {
    Instance(GroupNorm),
    Batch(BatchNorm),
}

impl NormLayer {
    pub fn new(norm: Norm, c: usize, device: &Device) -> Self {
        match norm {
            Norm::Instance => NormLayer::Instance(GroupNormConfig::new(c, c).with_epsilon(1e-5).init(device)),
            Norm::Batch => NormLayer::Batch(BatchNormConfig::new(c).with_epsilon(1e-5).with_momentum(0.1).init(device)),
        }
    }

    pub fn forward(&self, x: Tensor<4>) -> Tensor<4> {
        match self {
            NormLayer::Instance(n) => n.forward(x),
            NormLayer::Batch(n) => n.forward(x),
        }
    }
}

/// Convolution without bias, stride 1, padding k/2, initialised `N(0, sqrt(2 / (k k C_out)))`.
fn conv(cin: usize, cout: usize, k: usize, device: &Device) -> Conv2d {
    let std = (2.0 / (k * k * cout) as f64).sqrt();
    Conv2dConfig::new([cin, cout], [k, k])
        .with_padding(PaddingConfig2d::Explicit(k / 2, k / 2, k / 2, k / 2))
        .with_bias(false)
        .with_initializer(Initializer::Normal { mean: 0.0, std })
        .init(device)
}

fn avg_pool(k: usize) -> AvgPool2d {
    AvgPool2dConfig::new([k, k]).with_strides([k, k]).init()
}

/// `IntroBlock`: conv (7x7 for > 128 px, else 3x3), norm, ReLU, average pool (4 or 2; none
/// for <= 64 px).
#[derive(Module, Debug)]
pub struct IntroBlock {
    pub conv1: Conv2d,
    pub bn1: NormLayer,
    pub pool: Option<AvgPool2d>,
}

#[derive(Module, Debug)]
pub struct Downsample {
    pub conv: Conv2d,
    pub pool: AvgPool2d,
    pub norm: NormLayer,
}

#[derive(Module, Debug)]
pub struct BasicBlock {
    pub conv1: Conv2d,
    pub bn1: NormLayer,
    pub conv2: Conv2d,
    pub bn2: NormLayer,
    pub pool: Option<AvgPool2d>,
    pub downsample: Option<Downsample>,
}

impl BasicBlock {
    fn forward(&self, x: Tensor<4>) -> Tensor<4> {
        let mut out = relu(self.bn1.forward(self.conv1.forward(x.clone())));
        if let Some(p) = &self.pool {
            out = p.forward(out);
        }
        let out = self.bn2.forward(self.conv2.forward(out));
        let residual = match &self.downsample {
            Some(d) => d.norm.forward(d.pool.forward(d.conv.forward(x))),
            None => x,
        };
        relu(out + residual)
    }
}

/// ResNet-AP for ImageNet-like inputs.
#[derive(Module, Debug)]
pub struct ResNetAP {
    pub layer0: IntroBlock,
    pub layer1: Vec<BasicBlock>,
    pub layer2: Vec<BasicBlock>,
    pub layer3: Vec<BasicBlock>,
    pub layer4: Vec<BasicBlock>,
    pub fc: Linear,
}

/// Depth (10 or 18; BasicBlock layouts [1,1,1,1] and [2,2,2,2]), classes, input size, norm,
/// width multiplier and input channels.
#[derive(Clone, Debug, PartialEq)]
pub struct ResNetAPConfig {
    pub depth: usize,
    pub num_classes: usize,
    pub input_size: usize,
    pub norm: Norm,
    pub width: f64,
    pub channels: usize,
}

impl ResNetAPConfig {
    /// ResNetAP-10 with instance norm, as IMS3 evaluates.
    pub fn ap10(num_classes: usize, input_size: usize) -> Self {
        Self { depth: 10, num_classes, input_size, norm: Norm::Instance, width: 1.0, channels: 3 }
    }

    pub fn init(&self, device: &Device) -> Result<ResNetAP, String> {
        let per_stage = match self.depth {
            10 => 1,
            18 => 2,
            d => return Err(format!("ResNetAP depth {d} is not supported (10 or 18)")),
        };
        let nc = (64.0 * self.width) as usize;
        let (k, pool) = match self.input_size {
            0..=64 => (3, None),
            65..=128 => (3, Some(2)),
            _ => (7, Some(4)),
        };
        let layer0 = IntroBlock { conv1: conv(self.channels, nc, k, device), bn1: NormLayer::new(self.norm, nc, device), pool: pool.map(avg_pool) };
        let mut inplanes = nc;
        let mut stage = |planes: usize, stride: usize| -> Vec<BasicBlock> {
            (0..per_stage)
                .map(|b| {
                    let s = if b == 0 { stride } else { 1 };
                    let downsample = (b == 0 && (s != 1 || inplanes != planes)).then(|| Downsample {
                        conv: conv(inplanes, planes, 1, device),
                        pool: avg_pool(s),
                        norm: NormLayer::new(self.norm, planes, device),
                    });
                    let block = BasicBlock {
                        conv1: conv(inplanes, planes, 3, device),
                        bn1: NormLayer::new(self.norm, planes, device),
                        conv2: conv(planes, planes, 3, device),
                        bn2: NormLayer::new(self.norm, planes, device),
                        pool: (s != 1).then(|| avg_pool(s)),
                        downsample,
                    };
                    inplanes = planes;
                    block
                })
                .collect()
        };
        let (layer1, layer2, layer3, layer4) = (stage(nc, 1), stage(nc * 2, 2), stage(nc * 4, 2), stage(nc * 8, 2));
        Ok(ResNetAP { layer0, layer1, layer2, layer3, layer4, fc: LinearConfig::new(nc * 8, self.num_classes).init(device) })
    }
}

impl ResNetAP {
    /// Penultimate features: global average pool of layer 4, [N, 8 * width * 64].
    pub fn features(&self, x: Tensor<4>) -> Tensor<2> {
        let mut x = relu(self.layer0.bn1.forward(self.layer0.conv1.forward(x)));
        if let Some(p) = &self.layer0.pool {
            x = p.forward(x);
        }
        for block in self.layer1.iter().chain(&self.layer2).chain(&self.layer3).chain(&self.layer4) {
            x = block.forward(x);
        }
        let [n, c, _, _] = x.dims();
        x.mean_dims(&[2, 3]).reshape([n, c])
    }

    /// Logits [N, classes].
    pub fn forward(&self, x: Tensor<4>) -> Tensor<2> {
        self.fc.forward(self.features(x))
    }
}

fn key_map() -> KeyMap {
    KeyMap::new(
        &[(r"\.downsample\.0\.", ".downsample.conv."), (r"\.downsample\.2\.", ".downsample.norm.")],
        &[(r"\.downsample\.conv\.", ".downsample.0."), (r"\.downsample\.norm\.", ".downsample.2.")],
    )
}

/// Loads an IDC `ResNetAP` state dict (`torch.save(model.state_dict())`) for `config`.
pub fn load_resnet_ap(path: impl AsRef<Path>, config: &ResNetAPConfig, device: &Device) -> Result<ResNetAP, WeightsError> {
    let target = format!("ResNetAP-{} ({:?} norm, {} px)", config.depth, config.norm, config.input_size);
    load_state_dict(path.as_ref(), |d| config.init(d), &key_map(), &target, device)
}

/// Builds a model with `init` and fills it from a PyTorch state dict: shapes checked first
/// (BatchNorm's `num_batches_tracked` may be left unused), every parameter loaded.
pub(crate) fn load_state_dict<M: Module>(
    path: &Path,
    init: impl FnOnce(&Device) -> Result<M, String>,
    keys: &KeyMap,
    target: &str,
    device: &Device,
) -> Result<M, WeightsError> {
    let ckpt = Checkpoint::open(path, None)?;
    let mut model = init(device).map_err(|why| WeightsError::Other { path: ckpt.path.clone(), why })?;
    let mut report = compare_shapes(&ckpt, &expected_shapes_of(&model, keys), |_| false);
    report.unused.retain(|k| !k.ends_with("num_batches_tracked"));
    report.ensure_fits(&ckpt, target)?;
    let left = ims3_weights::load_into(&mut model, &ckpt, keys)?;
    ims3_weights::ensure_all_loaded(&left, &ckpt, target)?;
    Ok(model)
}

//! IDC's `ResNet` (models/resnet.py, ImageNet branch): the torchvision layout with IDC's norm
//! choice. Intro: 7x7 stride 2 + max-pool 3/2 for > 128 px ("large"), 3x3 stride 1 + max-pool
//! for 65..128 px ("mid"), 3x3 without pool for <= 64 px ("small"). BasicBlocks with stride-2
//! 3x3 convolutions, shortcut conv1x1 (stride) -> norm. Global average pool, fc. Init: conv
//! `N(0, sqrt(2 / (k k C_out)))`, norm weight 1, bias 0; fc keeps PyTorch's default.
//! Field names mirror the state dict; `downsample.0/1` become `downsample.conv/norm`.

use std::path::Path;

use burn::nn::conv::{Conv2d, Conv2dConfig};
use burn::nn::pool::{MaxPool2d, MaxPool2dConfig};
use burn::nn::{Initializer, Linear, LinearConfig, PaddingConfig2d};
use burn::prelude::*;
use burn::tensor::activation::relu;
use ims3_weights::{KeyMap, WeightsError};

use crate::resnet_ap::{Norm, NormLayer};

fn conv(cin: usize, cout: usize, k: usize, stride: usize, pad: usize, device: &Device) -> Conv2d {
    let std = (2.0 / (k * k * cout) as f64).sqrt();
    Conv2dConfig::new([cin, cout], [k, k])
        .with_stride([stride, stride])
        .with_padding(PaddingConfig2d::Explicit(pad, pad, pad, pad))
        .with_bias(false)
        .with_initializer(Initializer::Normal { mean: 0.0, std })
        .init(device)
}

#[derive(Module, Debug)]
pub struct IdcIntro {
    pub conv1: Conv2d,
    pub bn1: NormLayer,
    pub pool: Option<MaxPool2d>,
}

#[derive(Module, Debug)]
pub struct IdcDownsample {
    pub conv: Conv2d,
    pub norm: NormLayer,
}

#[derive(Module, Debug)]
pub struct IdcBasicBlock {
    pub conv1: Conv2d,
    pub bn1: NormLayer,
    pub conv2: Conv2d,
    pub bn2: NormLayer,
    pub downsample: Option<IdcDownsample>,
}

impl IdcBasicBlock {
    fn forward(&self, x: Tensor<4>) -> Tensor<4> {
        let out = relu(self.bn1.forward(self.conv1.forward(x.clone())));
        let out = self.bn2.forward(self.conv2.forward(out));
        let residual = match &self.downsample {
            Some(d) => d.norm.forward(d.conv.forward(x)),
            None => x,
        };
        relu(out + residual)
    }
}

#[derive(Module, Debug)]
pub struct ResNetIdc {
    pub layer0: IdcIntro,
    pub layer1: Vec<IdcBasicBlock>,
    pub layer2: Vec<IdcBasicBlock>,
    pub layer3: Vec<IdcBasicBlock>,
    pub layer4: Vec<IdcBasicBlock>,
    pub fc: Linear,
}

#[derive(Clone, Debug, PartialEq)]
pub struct ResNetIdcConfig {
    /// 10, 18 or 34 (BasicBlock layouts).
    pub depth: usize,
    pub num_classes: usize,
    pub input_size: usize,
    pub norm: Norm,
    pub channels: usize,
}

impl ResNetIdcConfig {
    /// ResNet-18 with instance norm, as IMS3 evaluates.
    pub fn r18(num_classes: usize, input_size: usize) -> Self {
        Self { depth: 18, num_classes, input_size, norm: Norm::Instance, channels: 3 }
    }

    pub fn init(&self, device: &Device) -> Result<ResNetIdc, String> {
        let layout = match self.depth {
            10 => [1, 1, 1, 1],
            18 => [2, 2, 2, 2],
            34 => [3, 4, 6, 3],
            d => return Err(format!("IDC ResNet depth {d} is not supported here (10, 18 or 34)")),
        };
        let maxpool = || MaxPool2dConfig::new([3, 3]).with_strides([2, 2]).with_padding(PaddingConfig2d::Explicit(1, 1, 1, 1)).init();
        let layer0 = match self.input_size {
            0..=64 => IdcIntro { conv1: conv(self.channels, 64, 3, 1, 1, device), bn1: NormLayer::new(self.norm, 64, device), pool: None },
            65..=128 => IdcIntro { conv1: conv(self.channels, 64, 3, 1, 1, device), bn1: NormLayer::new(self.norm, 64, device), pool: Some(maxpool()) },
            _ => IdcIntro { conv1: conv(self.channels, 64, 7, 2, 3, device), bn1: NormLayer::new(self.norm, 64, device), pool: Some(maxpool()) },
        };
        let mut inplanes = 64;
        let mut stage = |planes: usize, blocks: usize, stride: usize| -> Vec<IdcBasicBlock> {
            (0..blocks)
                .map(|b| {
                    let s = if b == 0 { stride } else { 1 };
                    let downsample = (b == 0 && (s != 1 || inplanes != planes))
                        .then(|| IdcDownsample { conv: conv(inplanes, planes, 1, s, 0, device), norm: NormLayer::new(self.norm, planes, device) });
                    let block = IdcBasicBlock {
                        conv1: conv(inplanes, planes, 3, s, 1, device),
                        bn1: NormLayer::new(self.norm, planes, device),
                        conv2: conv(planes, planes, 3, 1, 1, device),
                        bn2: NormLayer::new(self.norm, planes, device),
                        downsample,
                    };
                    inplanes = planes;
                    block
                })
                .collect()
        };
        let (layer1, layer2, layer3, layer4) = (stage(64, layout[0], 1), stage(128, layout[1], 2), stage(256, layout[2], 2), stage(512, layout[3], 2));
        Ok(ResNetIdc { layer0, layer1, layer2, layer3, layer4, fc: LinearConfig::new(512, self.num_classes).init(device) })
    }
}

impl ResNetIdc {
    /// `F.avg_pool2d(x, x.shape[-1])` of layer 4 (global for square inputs), [N, 512].
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

    pub fn forward(&self, x: Tensor<4>) -> Tensor<2> {
        self.fc.forward(self.features(x))
    }
}

fn key_map() -> KeyMap {
    KeyMap::new(
        &[(r"\.downsample\.0\.", ".downsample.conv."), (r"\.downsample\.1\.", ".downsample.norm.")],
        &[(r"\.downsample\.conv\.", ".downsample.0."), (r"\.downsample\.norm\.", ".downsample.1.")],
    )
}

/// Loads an IDC `ResNet` state dict for `config`.
pub fn load_resnet_idc(path: impl AsRef<Path>, config: &ResNetIdcConfig, device: &Device) -> Result<ResNetIdc, WeightsError> {
    let target = format!("IDC ResNet-{} ({:?} norm, {} px)", config.depth, config.norm, config.input_size);
    crate::resnet_ap::load_state_dict(path.as_ref(), |d| config.init(d), &key_map(), &target, device)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shapes_and_parameter_count() {
        let device = Device::flex();
        let net = ResNetIdcConfig::r18(10, 224).init(&device).unwrap();
        // torchvision ResNet-18 has 11,689,512 parameters with a 1000-way fc; with 10 classes
        // and GroupNorm(C, C) (same affine sizes as BatchNorm) that is 11,689,512 - 513 * 990.
        assert_eq!(net.num_params(), 11_689_512 - 513 * 990);
        let x = Tensor::<4>::random([1, 3, 224, 224], burn::tensor::Distribution::Normal(0.0, 1.0), &device);
        assert_eq!(net.forward(x).dims(), [1, 10]);
        let small = ResNetIdcConfig { input_size: 32, ..ResNetIdcConfig::r18(5, 32) }.init(&device).unwrap();
        assert_eq!(small.forward(Tensor::<4>::zeros([2, 3, 32, 32], &device)).dims(), [2, 5]);
    }
}

//! The torchvision-layout ResNet (BasicBlock x [1,1,1,1] / [2,2,2,2] / [3,4,6,3]) in one type,
//! with the stem and the norm as parameters:
//!
//! - torchvision `resnet18` (S3's frozen encoder): [`ResNetConfig::torchvision_resnet18`], the
//!   large stem and BatchNorm, loaded from `resnet18-f37072fd.pth`;
//! - IDC's `ResNet` (an evaluation network of IMS3): [`ResNetConfig::idc`], instance norm and
//!   the stem IDC picks by input size.
//!
//! ```text
//! layer0: conv1 -> bn1 -> relu -> [maxpool 3/2]     Large: 7x7/2 + pool (> 128 px, torchvision)
//!                                                   Mid:   3x3/1 + pool (65..128 px)
//!                                                   Small: 3x3/1, no pool (<= 64 px)
//! layer1..4: BasicBlocks, 64 -> 128 -> 256 -> 512 channels, stride 1, 2, 2, 2
//! features = mean over H, W of layer4           [N, 512]   (fc = Identity)
//! logits   = fc(features)                       [N, num_classes]
//! ```
//!
//! Initialisation (before any weights are loaded): convolutions `N(0, sqrt(2 / (k k C_out)))`
//! (torchvision's and IDC's Kaiming fan-out), norm weight 1 and bias 0, `fc` burn's default.
//! Field names mirror IDC's state-dict keys; torchvision's top-level `conv1`/`bn1` load into
//! `layer0` (see `load.rs`).

use burn::nn::conv::{Conv2d, Conv2dConfig};
use burn::nn::pool::{MaxPool2d, MaxPool2dConfig};
use burn::nn::{Initializer, Linear, LinearConfig, PaddingConfig2d};
use burn::prelude::*;

use crate::NetError;
use crate::norm::{Norm, NormLayer};
use crate::resnet_block::BasicBlock;
use crate::conv3x3::conv2d;

/// Convolution without bias, initialised `N(0, sqrt(2 / (k k C_out)))`.
pub(crate) fn conv_kaiming(cin: usize, cout: usize, k: usize, stride: usize, pad: usize, device: &Device) -> Conv2d {
    let std = (2.0 / (k * k * cout) as f64).sqrt();
    Conv2dConfig::new([cin, cout], [k, k])
        .with_stride([stride, stride])
        .with_padding(PaddingConfig2d::Explicit(pad, pad, pad, pad))
        .with_bias(false)
        .with_initializer(Initializer::Normal { mean: 0.0, std })
        .init(device)
}

/// The first layer of the network.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stem {
    /// 7x7 stride-2 convolution and a 3/2 max-pool: torchvision, and IDC above 128 px.
    Large,
    /// 3x3 stride-1 convolution and a 3/2 max-pool: IDC for 65..128 px.
    Mid,
    /// 3x3 stride-1 convolution, no pool: IDC up to 64 px.
    Small,
}

impl Stem {
    /// The stem IDC's `ResNet` builds for `input_size` px.
    pub fn idc(input_size: usize) -> Self {
        match input_size {
            0..=64 => Stem::Small,
            65..=128 => Stem::Mid,
            _ => Stem::Large,
        }
    }
}

#[derive(Clone, Debug, PartialEq)]
pub struct ResNetConfig {
    /// 10, 18 or 34 (BasicBlock layouts).
    pub depth: usize,
    pub num_classes: usize,
    pub stem: Stem,
    pub norm: Norm,
    /// Input channels.
    pub channels: usize,
}

/// `conv1`, `bn1` and the optional max-pool (IDC's `layer0`).
#[derive(Module, Debug)]
pub struct ResNetStem {
    pub conv1: Conv2d,
    pub bn1: NormLayer,
    pub pool: Option<MaxPool2d>,
}

#[derive(Module, Debug)]
pub struct ResNet {
    pub layer0: ResNetStem,
    pub layer1: Vec<BasicBlock>,
    pub layer2: Vec<BasicBlock>,
    pub layer3: Vec<BasicBlock>,
    pub layer4: Vec<BasicBlock>,
    pub fc: Linear,
}

impl ResNetConfig {
    /// torchvision `resnet18` (`IMAGENET1K_V1` has 1000 classes): large stem, BatchNorm.
    pub fn torchvision_resnet18(num_classes: usize) -> Self {
        Self { depth: 18, num_classes, stem: Stem::Large, norm: Norm::Batch, channels: 3 }
    }

    /// IDC's `ResNet-depth` at `input_size` px with instance norm, as IMS3 evaluates.
    pub fn idc(depth: usize, num_classes: usize, input_size: usize) -> Self {
        Self { depth, num_classes, stem: Stem::idc(input_size), norm: Norm::Instance, channels: 3 }
    }

    /// Blocks per stage.
    pub fn layout(&self) -> Result<[usize; 4], NetError> {
        match self.depth {
            10 => Ok([1, 1, 1, 1]),
            18 => Ok([2, 2, 2, 2]),
            34 => Ok([3, 4, 6, 3]),
            depth => Err(NetError::Depth { net: "ResNet", depth, supported: "10, 18 or 34" }),
        }
    }

    pub fn init(&self, device: &Device) -> Result<ResNet, NetError> {
        let layout = self.layout()?;
        let maxpool = || MaxPool2dConfig::new([3, 3]).with_strides([2, 2]).with_padding(PaddingConfig2d::Explicit(1, 1, 1, 1)).init();
        let (k, stride, pad, pool) = match self.stem {
            Stem::Large => (7, 2, 3, true),
            Stem::Mid => (3, 1, 1, true),
            Stem::Small => (3, 1, 1, false),
        };
        let layer0 = ResNetStem {
            conv1: conv_kaiming(self.channels, 64, k, stride, pad, device),
            bn1: NormLayer::new(self.norm, 64, device),
            pool: pool.then(maxpool),
        };
        let mut inplanes = 64;
        let mut stage = |planes: usize, blocks: usize, stride: usize| -> Vec<BasicBlock> {
            (0..blocks)
                .map(|b| {
                    let block = BasicBlock::new(inplanes, planes, if b == 0 { stride } else { 1 }, self.norm, device);
                    inplanes = planes;
                    block
                })
                .collect()
        };
        let (layer1, layer2, layer3, layer4) = (stage(64, layout[0], 1), stage(128, layout[1], 2), stage(256, layout[2], 2), stage(512, layout[3], 2));
        Ok(ResNet { layer0, layer1, layer2, layer3, layer4, fc: LinearConfig::new(512, self.num_classes).init(device) })
    }
}

impl ResNet {
    /// Penultimate features: [N, C, H, W] (normalised) -> [N, 512], the mean over H and W of
    /// layer 4 (torchvision's adaptive pool, IDC's `avg_pool2d(x, x.shape[-1])` for square inputs).
    pub fn features(&self, x: Tensor<4>) -> Tensor<2> {
        let mut x = self.layer0.bn1.forward_relu(conv2d(&self.layer0.conv1, x));
        if let Some(p) = &self.layer0.pool {
            x = p.forward(x);
        }
        for block in self.layer1.iter().chain(&self.layer2).chain(&self.layer3).chain(&self.layer4) {
            x = block.forward(x);
        }
        let [n, c, _, _] = x.dims();
        x.mean_dims(&[2, 3]).reshape([n, c])
    }

    /// Class logits [N, num_classes].
    pub fn forward(&self, x: Tensor<4>) -> Tensor<2> {
        self.fc.forward(self.features(x))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shapes_and_parameter_count() {
        let device = Device::flex();
        // torchvision ResNet-18 has 11,689,512 parameters with a 1000-way fc; burn also counts
        // BatchNorm's running mean and variance (2 x 4,800 channels).
        let tv = ResNetConfig::torchvision_resnet18(1000).init(&device).unwrap();
        assert_eq!(tv.num_params(), 11_689_512 + 2 * 4_800);
        // With 10 classes and GroupNorm(C, C) (same affine sizes as BatchNorm): 513 * 990 fewer.
        let net = ResNetConfig::idc(18, 10, 224).init(&device).unwrap();
        assert_eq!(net.num_params(), 11_689_512 - 513 * 990);
        let x = Tensor::<4>::random([1, 3, 224, 224], burn::tensor::Distribution::Normal(0.0, 1.0), &device);
        assert_eq!(net.forward(x).dims(), [1, 10]);
        let small = ResNetConfig::idc(18, 5, 32).init(&device).unwrap();
        assert_eq!(small.forward(Tensor::<4>::zeros([2, 3, 32, 32], &device)).dims(), [2, 5]);
        assert_eq!((Stem::idc(64), Stem::idc(65), Stem::idc(129)), (Stem::Small, Stem::Mid, Stem::Large));
        assert!(ResNetConfig::idc(50, 10, 224).init(&device).is_err());
    }
}

//! IDC `ResNetAP` (ImageNet branch): stride-1 convolutions with average pooling for
//! downsampling; its blocks are in `resnet_ap_block.rs`, its loader in `load.rs`.
//!
//! ```text
//! layer0: conv (7x7 > 128 px, else 3x3) -> norm -> relu -> avgpool 4 (> 128 px) | 2 (65..128) | none
//! layer1..4: BasicBlocks, 64w -> 128w -> 256w -> 512w channels; a stride-2 block pools by 2
//! features = mean over H, W of layer4        [N, 512 w]
//! logits   = fc(features)                    [N, num_classes]
//! ```

use burn::nn::conv::{Conv2d, Conv2dConfig};
use burn::nn::{Initializer, Linear, LinearConfig, PaddingConfig2d};
use burn::prelude::*;

use crate::NetError;
use crate::norm::{Norm, NormLayer};
use crate::pool::AvgPool;
use crate::conv3x3::conv2d;
pub use crate::resnet_ap_block::{BasicBlock, Downsample, IntroBlock};

/// Convolution without bias, stride 1, padding k/2, initialised `N(0, sqrt(2 / (k k C_out)))`.
fn conv(cin: usize, cout: usize, k: usize, device: &Device) -> Conv2d {
    let std = (2.0 / (k * k * cout) as f64).sqrt();
    Conv2dConfig::new([cin, cout], [k, k])
        .with_padding(PaddingConfig2d::Explicit(k / 2, k / 2, k / 2, k / 2))
        .with_bias(false)
        .with_initializer(Initializer::Normal { mean: 0.0, std })
        .init(device)
}

fn avg_pool(k: usize) -> AvgPool {
    AvgPool::new(k)
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

    pub fn init(&self, device: &Device) -> Result<ResNetAP, NetError> {
        let per_stage = match self.depth {
            10 => 1,
            18 => 2,
            depth => return Err(NetError::Depth { net: "ResNet-AP", depth, supported: "10 or 18" }),
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

    /// Logits [N, classes].
    pub fn forward(&self, x: Tensor<4>) -> Tensor<2> {
        self.fc.forward(self.features(x))
    }
}


//! The BasicBlock of the torchvision-layout [`crate::ResNet`] (torchvision `resnet.py`, IDC
//! `models/resnet.py`): two 3x3 convolutions, the first with the block's stride, and a shortcut
//! that is the identity or `conv1x1(stride) -> norm` when the shape changes.
//!
//! ```text
//! out = relu(bn1(conv1(x)))             conv1: 3x3, stride s, pad 1
//! out = bn2(conv2(out))                 conv2: 3x3, stride 1, pad 1
//! out = relu(out + shortcut(x))         shortcut: x, or norm(conv1x1_s(x))
//! ```

use burn::nn::conv::Conv2d;
use burn::prelude::*;
use burn::tensor::activation::relu;

use crate::norm::{Norm, NormLayer};
use crate::resnet::conv_kaiming;
use crate::conv3x3::conv2d;

/// `downsample = Sequential(conv1x1(stride), norm)`; checkpoint keys `downsample.0/1`.
#[derive(Module, Debug)]
pub struct Downsample {
    pub conv: Conv2d,
    pub norm: NormLayer,
}

#[derive(Module, Debug)]
pub struct BasicBlock {
    pub conv1: Conv2d,
    pub bn1: NormLayer,
    pub conv2: Conv2d,
    pub bn2: NormLayer,
    pub downsample: Option<Downsample>,
}

impl BasicBlock {
    /// A block from `inplanes` to `planes` channels with `stride`; the shortcut convolves when
    /// either changes the shape.
    pub fn new(inplanes: usize, planes: usize, stride: usize, norm: Norm, device: &Device) -> Self {
        let downsample = (stride != 1 || inplanes != planes)
            .then(|| Downsample { conv: conv_kaiming(inplanes, planes, 1, stride, 0, device), norm: NormLayer::new(norm, planes, device) });
        Self {
            conv1: conv_kaiming(inplanes, planes, 3, stride, 1, device),
            bn1: NormLayer::new(norm, planes, device),
            conv2: conv_kaiming(planes, planes, 3, 1, 1, device),
            bn2: NormLayer::new(norm, planes, device),
            downsample,
        }
    }

    /// [N, inplanes, H, W] -> [N, planes, H / stride, W / stride].
    pub fn forward(&self, x: Tensor<4>) -> Tensor<4> {
        let out = self.bn1.forward_relu(conv2d(&self.conv1, x.clone()));
        let out = self.bn2.forward(conv2d(&self.conv2, out));
        let residual = match &self.downsample {
            Some(d) => d.norm.forward(conv2d(&d.conv, x)),
            None => x,
        };
        relu(out + residual)
    }
}

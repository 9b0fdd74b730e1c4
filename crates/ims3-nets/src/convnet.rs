//! IDC's `ConvNet` (models/convnet.py), the network of the small-image experiments:
//! `depth` x [conv 3x3 (width channels) -> norm -> ReLU -> AvgPool 2], flatten, Linear.
//!
//! As the reference: 28 px inputs are treated as 32 px (the first conv pads by 3 when the input
//! has one channel), "instance" norm is `GroupNorm(C, C)` with affine parameters, and the
//! layers keep PyTorch's default initialisation (Kaiming-uniform with a = sqrt(5), which is
//! burn's default for Conv2d and Linear).

use burn::nn::conv::{Conv2d, Conv2dConfig};
use burn::nn::{Linear, LinearConfig, PaddingConfig2d};
use burn::prelude::*;

use crate::NetError;
use crate::conv3x3::conv2d;
use crate::norm::{Norm, NormLayer};
use crate::pool::AvgPool;

#[derive(Clone, Debug, PartialEq)]
pub struct ConvNetConfig {
    pub num_classes: usize,
    pub depth: usize,
    pub width: usize,
    pub channels: usize,
    pub im_size: usize,
    pub norm: Norm,
}

impl ConvNetConfig {
    /// ConvNet-`depth` with IDC's defaults (width 128, instance norm).
    pub fn new(num_classes: usize, depth: usize, channels: usize, im_size: usize) -> Self {
        Self { num_classes, depth, width: 128, channels, im_size, norm: Norm::Instance }
    }

    /// Spatial size after the convolutions and pools (28 px counts as 32 only where the first
    /// convolution pads it so: one input channel, as `init`).
    pub fn feature_side(&self) -> usize {
        let side = if self.channels == 1 && self.im_size == 28 { 32 } else { self.im_size };
        side >> self.depth
    }

    pub fn init(&self, device: &Device) -> Result<ConvNet, NetError> {
        if !(1..=6).contains(&self.depth) {
            return Err(NetError::Depth { net: "ConvNet", depth: self.depth, supported: "1..6" });
        }
        if self.feature_side() == 0 {
            return Err(NetError::TooSmall { net: format!("ConvNet-{}", self.depth), size: self.im_size });
        }
        let mut convs = Vec::new();
        let mut norms = Vec::new();
        let mut cin = self.channels;
        for d in 0..self.depth {
            // 28 px grey inputs are padded to act as 32 px (DC/IDC); any other size keeps 1.
            let pad = if self.channels == 1 && self.im_size == 28 && d == 0 { 3 } else { 1 };
            convs.push(Conv2dConfig::new([cin, self.width], [3, 3]).with_padding(PaddingConfig2d::Explicit(pad, pad, pad, pad)).init(device));
            norms.push(NormLayer::new(self.norm, self.width, device));
            cin = self.width;
        }
        let side = self.feature_side();
        Ok(ConvNet {
            conv: convs,
            norm: norms,
            pool: AvgPool::new(2),
            classifier: LinearConfig::new(self.width * side * side, self.num_classes).init(device),
        })
    }
}

#[derive(Module, Debug)]
pub struct ConvNet {
    pub conv: Vec<Conv2d>,
    pub norm: Vec<NormLayer>,
    pub pool: AvgPool,
    pub classifier: Linear,
}

impl ConvNet {
    /// Flattened features [N, width * side * side].
    pub fn features(&self, x: Tensor<4>) -> Tensor<2> {
        let mut x = x;
        for (c, n) in self.conv.iter().zip(&self.norm) {
            x = self.pool.forward(n.forward_relu(conv2d(c, x)));
        }
        let n = x.dims()[0];
        x.reshape([n as i64, -1])
    }

    pub fn forward(&self, x: Tensor<4>) -> Tensor<2> {
        self.classifier.forward(self.features(x))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shapes_follow_the_reference() {
        let device = Device::flex();
        // 28 px single-channel (Fashion-MNIST): padded as 32 px, 3 pools -> 4 x 4 x 128.
        let cfg = ConvNetConfig::new(10, 3, 1, 28);
        assert_eq!(cfg.feature_side(), 4);
        let net = cfg.init(&device).unwrap();
        let x = Tensor::<4>::random([2, 1, 28, 28], burn::tensor::Distribution::Normal(0.0, 1.0), &device);
        assert_eq!(net.features(x.clone()).dims(), [2, 128 * 16]);
        assert_eq!(net.forward(x).dims(), [2, 10]);
        // 28 px with three channels is not padded (the first convolution pads by 1): 28 -> 3.
        let rgb28 = ConvNetConfig::new(10, 3, 3, 28);
        assert_eq!(rgb28.feature_side(), 3);
        assert_eq!(rgb28.init(&device).unwrap().forward(Tensor::<4>::zeros([1, 3, 28, 28], &device)).dims(), [1, 10]);
        let rgb = ConvNetConfig::new(7, 4, 3, 64).init(&device).unwrap();
        assert_eq!(rgb.forward(Tensor::<4>::zeros([1, 3, 64, 64], &device)).dims(), [1, 7]);
        assert!(ConvNetConfig::new(10, 7, 3, 32).init(&device).is_err());
        assert!(ConvNetConfig::new(10, 6, 3, 32).init(&device).is_err()); // 32 >> 6 = 0
    }
}

//! The blocks of IDC's `ResNetAP`: the intro block and the BasicBlock whose stride is an
//! average pool after the first convolution (and in the shortcut).
//!
//! ```text
//! out = relu(bn1(conv1(x)))                 conv1: 3x3, stride 1
//! out = avgpool_s(out)                      only when the block downsamples
//! out = bn2(conv2(out))
//! out = relu(out + shortcut(x))             shortcut: x, or norm(avgpool_s(conv1x1(x)))
//! ```
//!
//! Field names mirror the state-dict keys; `downsample.0/2` become `downsample.conv/norm`
//! (index 1 is the AvgPool).

use burn::nn::conv::Conv2d;
use burn::prelude::*;
use burn::tensor::activation::relu;

use crate::norm::NormLayer;
use crate::pool::AvgPool;
use crate::conv3x3::conv2d;

/// `IntroBlock`: conv (7x7 for > 128 px, else 3x3), norm, ReLU, average pool (4 or 2; none
/// for <= 64 px).
#[derive(Module, Debug)]
pub struct IntroBlock {
    pub conv1: Conv2d,
    pub bn1: NormLayer,
    pub pool: Option<AvgPool>,
}

#[derive(Module, Debug)]
pub struct Downsample {
    pub conv: Conv2d,
    pub pool: AvgPool,
    pub norm: NormLayer,
}

#[derive(Module, Debug)]
pub struct BasicBlock {
    pub conv1: Conv2d,
    pub bn1: NormLayer,
    pub conv2: Conv2d,
    pub bn2: NormLayer,
    pub pool: Option<AvgPool>,
    pub downsample: Option<Downsample>,
}

impl BasicBlock {
    pub fn forward(&self, x: Tensor<4>) -> Tensor<4> {
        let mut out = self.bn1.forward_relu(conv2d(&self.conv1, x.clone()));
        if let Some(p) = &self.pool {
            out = p.forward(out);
        }
        let out = self.bn2.forward(conv2d(&self.conv2, out));
        let residual = match &self.downsample {
            Some(d) => d.norm.forward(d.pool.forward(conv2d(&d.conv, x))),
            None => x,
        };
        relu(out + residual)
    }
}


//! The normalisation layer of every network here: IDC's `norm_type`.
//!
//! - `instance`: `GroupNorm(C, C)` with affine parameters (IDC's "instance" norm), eps 1e-5,
//!   fused (with the ReLU that follows it) on the CPU in `instance_norm.rs`;
//! - `batch`: `BatchNorm2d(C)`, eps 1e-5, momentum 0.1 (torchvision's ResNet-18).

use burn::nn::{BatchNorm, BatchNormConfig, GroupNorm, GroupNormConfig};
use burn::prelude::*;
use burn::tensor::activation::relu;
use serde::{Deserialize, Serialize};

use crate::instance_norm::instance_norm;

/// Which normalisation a network uses.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Norm {
    /// `GroupNorm(C, C)`: what IDC and IMS3 evaluate with.
    #[default]
    Instance,
    /// `BatchNorm2d(C)`.
    Batch,
}

ims3_util::choice!(Norm, "norm", { Norm::Instance => "instance", Norm::Batch => "batch" });

/// A normalisation layer of either kind. burn-store's PyTorch reader skips the enum variant in
/// module paths, so `bn1.weight` of a state dict lands in `bn1.Instance.gamma` or
/// `bn1.Batch.gamma` alike.
#[derive(Module, Debug)]
pub enum NormLayer {
    Instance(GroupNorm),
    Batch(BatchNorm),
}

impl NormLayer {
    pub fn new(norm: Norm, channels: usize, device: &Device) -> Self {
        match norm {
            Norm::Instance => NormLayer::Instance(GroupNormConfig::new(channels, channels).with_epsilon(1e-5).init(device)),
            Norm::Batch => NormLayer::Batch(BatchNormConfig::new(channels).with_epsilon(1e-5).with_momentum(0.1).init(device)),
        }
    }

    /// [N, C, H, W] -> [N, C, H, W].
    pub fn forward(&self, x: Tensor<4>) -> Tensor<4> {
        match self {
            NormLayer::Instance(n) => instance_norm(n, x, false),
            NormLayer::Batch(n) => n.forward(x),
        }
    }

    /// `relu(self.forward(x))`, one fused pass for instance norm on the CPU.
    pub fn forward_relu(&self, x: Tensor<4>) -> Tensor<4> {
        match self {
            NormLayer::Instance(n) => instance_norm(n, x, true),
            NormLayer::Batch(n) => relu(n.forward(x)),
        }
    }
}

/// True when a parameter whose innermost module has burn's container type `container_type`
/// (`"Struct:GroupNorm"`, ...; see `ModuleVisitor::enter_module`) belongs to a norm layer.
pub fn is_norm_container(container_type: &str) -> bool {
    matches!(container_type, "Struct:GroupNorm" | "Struct:BatchNorm")
}

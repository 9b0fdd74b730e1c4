//! The classification networks of IMS3, each in its own file, loading apart (`load.rs`):
//!
//! - `resnet.rs` (+ `resnet_block.rs`): the torchvision-layout ResNet-10/18/34 with the stem and
//!   the norm as parameters: torchvision's `resnet18` (S3's frozen encoder) and IDC's `ResNet`
//!   (an evaluation network) are two named configs of one type;
//! - `resnet_ap.rs` (+ `resnet_ap_block.rs`): IDC's ResNet-AP-10/18 (IMS3's main evaluation network);
//! - `convnet.rs`: IDC's ConvNet-1..6 (small images; the Fashion-MNIST job's encoder and evaluator);
//! - `norm.rs`: instance (`GroupNorm(C, C)`) or batch norm, the one norm layer of them all;
//! - `pool.rs`: `AvgPool2d(k, k)`, as a matrix product where that is faster;
//! - `conv3x3.rs`: the 3x3 stride-1 convolution, batched over the images on the CPU (own backward);
//! - `instance_norm.rs`: instance norm (+ ReLU) in one pass each way on the CPU (own backward).

pub mod conv3x3;
pub mod convnet;
#[cfg(feature = "flex")]
mod flex_tensor;
pub mod instance_norm;
pub mod load;
pub mod norm;
pub mod pool;
pub mod resnet;
pub mod resnet_ap;
pub mod resnet_ap_block;
pub mod resnet_block;

pub use convnet::{ConvNet, ConvNetConfig};
pub use load::{LoadError, load_idc_resnet, load_resnet_ap, load_state_dict, load_torchvision_resnet18};
pub use norm::{Norm, NormLayer, is_norm_container};
pub use resnet::{ResNet, ResNetConfig, Stem};
pub use resnet_ap::{ResNetAP, ResNetAPConfig};

/// A configuration no network of this crate can be built from.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NetError {
    #[error("{net} depth {depth} is not supported ({supported})")]
    Depth { net: &'static str, depth: usize, supported: &'static str },
    #[error("{net} pools a {size} px input down to nothing")]
    TooSmall { net: String, size: usize },
}

//! Evaluation networks of the IDC protocol that IMS3 reports with (REFERENCE section 5).
//!
//! - `resnet_ap.rs`: ResNet-AP-10/18 (checked against the `resnet_ap` fixtures).
//! - `resnet_idc.rs`: IDC's ResNet (torchvision layout, instance or batch norm).
//! - `convnet.rs`: IDC's ConvNet-3..6 for small images.
//! - `classifier.rs`: a ConvNet trained on a whole real set, the encoder of the small-image job.
//! - `protocol.rs`: the distilled-set training protocol and its reporting.

pub mod classifier;
pub mod convnet;
pub mod protocol;
pub mod resnet_ap;
pub mod resnet_idc;

pub use convnet::{ConvNet, ConvNetConfig};
pub use resnet_ap::{Norm, NormLayer, ResNetAP, ResNetAPConfig, load_resnet_ap};
pub use resnet_idc::{ResNetIdc, ResNetIdcConfig, load_resnet_idc};
pub use protocol::{EvalConfig, EvalReport, EvalNet, ImageSet, NetKind, SeedResult, accuracy, epochs_for_ipc, mean_std, train_and_eval};

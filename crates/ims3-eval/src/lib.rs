//! Evaluation networks of the IDC protocol that IMS3 reports with (REFERENCE section 5).
//!
//! So far: ResNet-AP (`resnet_ap.rs`), checked against the `resnet_ap` fixtures. The IDC
//! ResNet-18, ConvNet and the training protocol are still to come.

pub mod resnet_ap;

pub use resnet_ap::{Norm, ResNetAP, ResNetAPConfig, load_resnet_ap};

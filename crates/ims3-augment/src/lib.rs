//! Training augmentations of the IDC/Minimax/IMS3 evaluation protocol (REFERENCE section 5),
//! with torchvision's semantics on PIL-like 8-bit RGB images:
//!
//! ```text
//! Resize(s) -> CenterCrop(s) -> RandomResizedCrop(s, scale 0.5..1) -> RandomHorizontalFlip
//!   -> RandAugment(N=1, M=6) -> ToTensor -> IDC ColorJitter(0.4, 0.4, 0.4) (floats, unclipped)
//!   -> Lighting(0.1) -> Normalize(ImageNet mean, std)     ... then CutMix on every batch
//! ```
//!
//! Each random draw comes from the caller's `ChaCha8Rng`, so an epoch's augmentations are a
//! function of its seed. PIL details kept: `ImageEnhance` blends truncate toward zero, the
//! grey level is `L = (19595 R + 38470 G + 7471 B + 0x8000) >> 16`, nearest-neighbour affine
//! maps sample at pixel centres and fill with black.

pub mod cutmix;
pub mod jitter;
pub mod ops;
pub mod pipeline;

pub use cutmix::{CutMix, cutmix_box};
pub use jitter::{ColorJitterKind, JitterOp, draw_idc_jitter, idc_color_jitter};
pub use ops::{Op, rand_augment};
pub use pipeline::{AugmentConfig, EVAL_RESIZE_RATIO, TestTransform, eval_transform, to_tensor, train_transform};

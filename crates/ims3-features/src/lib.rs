//! Frozen image encoders for S3's centroids and the report's feature measures.
//!
//! [`FeatureEncoder`] is what selection needs: images in [-1, 1] in, L2-normalised feature
//! vectors out. Two encoders implement it:
//!
//! - `resnet.rs`: [`ResNet18Encoder`], the reference's torchvision ResNet-18 (`IMAGENET1K_V1`,
//!   `fc = Identity`, 512-d) behind `(x + 1) / 2 -> Resize(224, BICUBIC, antialias) ->
//!   CenterCrop(224) -> Normalize(ImageNet mean/std)`;
//! - `convnet.rs`: [`ConvNetEncoder`], the small-image stand-in (a ConvNet classifier trained on
//!   the real training set by [`convnet::fit_classifier`]), its training, saving and loading.
//!
//! [`load_encoder`] tells the two file kinds apart.

pub mod convnet;
pub mod resnet;

use std::path::Path;

use burn::prelude::*;
use ims3_images::Rgb;

pub use convnet::{ClassifierSpec, ConvNetEncoder, FitError, FitOptions, GreySet, classifier_accuracy, fit_classifier, is_classifier_file, load_classifier, save_classifier};
pub use resnet::ResNet18Encoder;

/// A frozen encoder: images with values in [-1, 1] (any size) to L2-normalised features.
pub trait FeatureEncoder {
    /// Feature dimension.
    fn dim(&self) -> usize;
    /// One feature vector per image, each of unit norm.
    fn encode(&self, images: &[Rgb]) -> Vec<Vec<f64>>;
    /// A short name recorded in outputs (e.g. `torchvision-resnet18`).
    fn name(&self) -> String;
}

/// `F.normalize(x, dim=1)`: `x / max(|x|, 1e-12)`.
pub fn l2_normalize(v: &[f64]) -> Vec<f64> {
    let n = v.iter().map(|x| x * x).sum::<f64>().sqrt().max(1e-12);
    v.iter().map(|x| x / n).collect()
}

/// Rows of a `[n, d]` feature tensor as L2-normalised f64 vectors.
pub(crate) fn normalised_rows(f: Tensor<2>) -> Vec<Vec<f64>> {
    let [n, d] = f.dims();
    let v: Vec<f32> = f.into_data().convert::<f32>().try_to_vec::<f32>().expect("f32 features");
    (0..n).map(|i| l2_normalize(&v[i * d..(i + 1) * d].iter().map(|&x| x as f64).collect::<Vec<_>>())).collect()
}

/// Opens an encoder file: a ConvNet written by `ims3 train-encoder` (safetensors with the
/// `ims3.kind = convnet` header), or else torchvision's `resnet18` `.pth`.
pub fn load_encoder(path: &Path, device: Device) -> Result<Box<dyn FeatureEncoder>, ims3_nets::LoadError> {
    Ok(if is_classifier_file(path) {
        Box::new(ConvNetEncoder::load(path, device)?)
    } else {
        let model = ims3_nets::load_torchvision_resnet18(path, &device)?;
        Box::new(ResNet18Encoder::new(model, device, "torchvision-resnet18"))
    })
}

//! Frozen image encoders for S3's centroids.
//!
//! [`FeatureEncoder`] is what the selection stage needs: images in [-1, 1] in, L2-normalised
//! feature vectors out. [`ResNet18Encoder`] is the reference's: torchvision ResNet-18
//! (`IMAGENET1K_V1`, `fc = Identity`, 512-d) behind `(x + 1) / 2 -> Resize(224, BICUBIC,
//! antialias) -> CenterCrop(224) -> Normalize(ImageNet mean/std)`.

pub mod resnet18;

use burn::prelude::*;
use ims3_images::{Rgb, center_crop, resize_short_side_bicubic_aa};

pub use resnet18::{ResNet18, load_resnet18};

/// ImageNet normalisation of torchvision.
pub const IMAGENET_MEAN: [f32; 3] = [0.485, 0.456, 0.406];
pub const IMAGENET_STD: [f32; 3] = [0.229, 0.224, 0.225];

/// A frozen encoder: images with values in [-1, 1] (any size) to L2-normalised features.
pub trait FeatureEncoder {
    /// Feature dimension.
    fn dim(&self) -> usize;
    /// One feature vector per image, each of unit norm.
    fn encode(&self, images: &[Rgb]) -> Vec<Vec<f64>>;
    /// A short name recorded in outputs (e.g. `resnet18-imagenet1k-v1`).
    fn name(&self) -> String;
}

/// torchvision ResNet-18 features with the reference preprocessing.
pub struct ResNet18Encoder {
    pub model: ResNet18,
    pub device: Device,
    pub input_size: usize,
    pub name: String,
}

impl ResNet18Encoder {
    pub fn new(model: ResNet18, device: Device, name: impl Into<String>) -> Self {
        Self { model, device, input_size: 224, name: name.into() }
    }

    /// `(x + 1) / 2`, resize the short side to 224 (antialiased bicubic), centre crop,
    /// ImageNet normalisation. No clamping, as the reference (decoded candidates may leave
    /// [-1, 1]).
    pub fn preprocess(&self, img: &Rgb) -> Rgb {
        let x = img.clone().map(|v| (v + 1.0) * 0.5);
        let x = resize_short_side_bicubic_aa(&x, self.input_size);
        let mut x = center_crop(&x, self.input_size, self.input_size);
        let plane = self.input_size * self.input_size;
        for c in 0..3 {
            for v in &mut x.data[c * plane..(c + 1) * plane] {
                *v = (*v - IMAGENET_MEAN[c]) / IMAGENET_STD[c];
            }
        }
        x
    }
}

/// `F.normalize(x, dim=1)`: `x / max(|x|, 1e-12)`.
pub fn l2_normalize(v: &[f64]) -> Vec<f64> {
    let n = v.iter().map(|x| x * x).sum::<f64>().sqrt().max(1e-12);
    v.iter().map(|x| x / n).collect()
}

impl FeatureEncoder for ResNet18Encoder {
    fn dim(&self) -> usize {
        512
    }

    fn encode(&self, images: &[Rgb]) -> Vec<Vec<f64>> {
        if images.is_empty() {
            return vec![];
        }
        let s = self.input_size;
        let data: Vec<f32> = images.iter().flat_map(|im| self.preprocess(im).data).collect();
        let x = Tensor::<1>::from_floats(data.as_slice(), &self.device).reshape([images.len(), 3, s, s]);
        let f = self.model.features(x);
        let [n, d] = f.dims();
        let v: Vec<f32> = f.into_data().convert::<f32>().try_to_vec::<f32>().expect("f32 features");
        (0..n).map(|i| l2_normalize(&v[i * d..(i + 1) * d].iter().map(|&x| x as f64).collect::<Vec<_>>())).collect()
    }

    fn name(&self) -> String {
        self.name.clone()
    }
}

/// The small-image encoder: a ConvNet classifier trained on the real training set
/// (`ims3 train-encoder`; `ims3_eval::classifier`), features before its classifier layer.
/// Preprocessing: mean of the three planes (grey), `(x + 1) / 2`, bilinear resize to the
/// network's size if needed, `(x - mean) / std` with the training set's statistics.
pub struct ConvNetEncoder {
    pub model: ims3_eval::ConvNet,
    pub spec: ims3_eval::classifier::ClassifierSpec,
    pub device: Device,
    pub name: String,
}

impl ConvNetEncoder {
    /// Loads a file written by `ims3 train-encoder`.
    pub fn load(path: &std::path::Path, device: Device) -> Result<Self, ims3_weights::WeightsError> {
        let (model, spec) = ims3_eval::classifier::load_classifier(path, &device)?;
        let name = format!("convnet{}-w{}-{}", spec.depth, spec.width, path.file_name().map(|f| f.to_string_lossy().into_owned()).unwrap_or_default());
        Ok(Self { model, spec, device, name })
    }

    /// One grey plane `[size, size]`, normalised.
    pub fn preprocess(&self, img: &Rgb) -> Vec<f32> {
        let s = self.spec.im_size;
        let img = if (img.height, img.width) == (s, s) { img.clone() } else { ims3_images::resize_bilinear(img, s, s) };
        let plane = s * s;
        (0..plane)
            .map(|i| {
                let g = (img.data[i] + img.data[plane + i] + img.data[2 * plane + i]) / 3.0;
                ((g + 1.0) * 0.5 - self.spec.mean) / self.spec.std
            })
            .collect()
    }
}

impl FeatureEncoder for ConvNetEncoder {
    fn dim(&self) -> usize {
        self.spec.feature_dim().expect("a loaded spec is valid")
    }

    fn encode(&self, images: &[Rgb]) -> Vec<Vec<f64>> {
        let s = self.spec.im_size;
        let mut out = Vec::with_capacity(images.len());
        for chunk in images.chunks(256) {
            let data: Vec<f32> = chunk.iter().flat_map(|im| self.preprocess(im)).collect();
            let x = Tensor::<1>::from_floats(data.as_slice(), &self.device).reshape([chunk.len(), 1, s, s]);
            let f = self.model.features(x);
            let [n, d] = f.dims();
            let v: Vec<f32> = f.into_data().convert::<f32>().try_to_vec::<f32>().expect("f32 features");
            out.extend((0..n).map(|i| l2_normalize(&v[i * d..(i + 1) * d].iter().map(|&x| x as f64).collect::<Vec<_>>())));
        }
        out
    }

    fn name(&self) -> String {
        self.name.clone()
    }
}

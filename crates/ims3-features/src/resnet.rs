//! The reference's S3 encoder: torchvision ResNet-18 features (`fc = Identity`) behind the
//! reference preprocessing.

use burn::prelude::*;
use ims3_images::{IMAGENET_MEAN, IMAGENET_STD, Rgb, center_crop, resize_short_side_bicubic_aa};
use ims3_nets::ResNet;

use crate::{FeatureEncoder, normalised_rows};

/// torchvision ResNet-18 features with the reference preprocessing.
pub struct ResNet18Encoder {
    pub model: ResNet,
    pub device: Device,
    pub input_size: usize,
    pub name: String,
}

impl ResNet18Encoder {
    pub fn new(model: ResNet, device: Device, name: impl Into<String>) -> Self {
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
        normalised_rows(self.model.features(x))
    }

    fn name(&self) -> String {
        self.name.clone()
    }
}

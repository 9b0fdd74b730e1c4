//! The train and test transforms of the evaluation protocol, image -> normalised CHW floats.

use ims3_images::pil::{Filter, Rgb8, resize};
use ims3_images::{IMAGENET_MEAN, IMAGENET_STD};
use rand::Rng;
use rand::seq::SliceRandom;
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, Normal};

use crate::jitter::{ColorJitterKind, draw_idc_jitter, idc_color_jitter};
use crate::ops::{brightness, contrast, rand_augment, resized_crop, saturation};

/// ImageNet PCA of IDC's `Lighting` (eigenvalues, and eigenvectors as rows).
pub const PCA_EIGVAL: [f32; 3] = [0.2175, 0.0188, 0.0045];
pub const PCA_EIGVEC: [[f32; 3]; 3] = [[-0.5675, 0.7192, 0.4009], [-0.5808, -0.0045, -0.8140], [-0.5836, -0.6948, 0.4203]];
/// torchvision's usual ImageNet test resize, `size * 8 / 7` (256 for 224), of
/// [`TestTransform::Resize8of7CenterCrop`].
pub const EVAL_RESIZE_RATIO: f64 = 8.0 / 7.0;

/// The geometric part of the test transform.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum TestTransform {
    // Serialised names are the command line's: resize-center-crop, resize8of7-center-crop, as-is.
    /// `Resize(size) -> CenterCrop(size)`: what the reference evaluates with (IDC `data.py`,
    /// `size = 224 > 0`).
    #[default]
    ResizeCenterCrop,
    /// `Resize(size * 8 / 7) -> CenterCrop(size)`: torchvision's ImageNet recipe, a tighter crop
    /// (IDC's `size < 0` branch; not what the reference reports with).
    #[serde(rename = "resize8of7-center-crop")]
    Resize8of7CenterCrop,
    /// Images already `size` x `size` are used as they are (small grey datasets); others get
    /// `Resize(size) -> CenterCrop(size)`.
    AsIs,
}

ims3_util::choice!(TestTransform, "test transform", {
    TestTransform::ResizeCenterCrop => "resize-center-crop",
    TestTransform::Resize8of7CenterCrop => "resize8of7-center-crop",
    TestTransform::AsIs => "as-is",
});

impl TestTransform {
    /// The geometric part of the test transform of `img` at `size` px. Deterministic, so a test
    /// set can be cropped once and reused at every evaluation.
    pub fn apply(self, img: &Rgb8, size: usize) -> Rgb8 {
        match self {
            TestTransform::AsIs if (img.width, img.height) == (size, size) => img.clone(),
            TestTransform::ResizeCenterCrop | TestTransform::AsIs => center_crop(&resize_short(img, size), size),
            TestTransform::Resize8of7CenterCrop => center_crop(&resize_short(img, (size as f64 * EVAL_RESIZE_RATIO) as usize), size),
        }
    }
}

/// Every step of the training transform, the reference values as defaults.
#[derive(Clone, Debug, PartialEq)]
pub struct AugmentConfig {
    pub size: usize,
    pub rrc_scale: (f64, f64),
    pub rrc_ratio: (f64, f64),
    pub flip: bool,
    /// RandAugment (num_ops, magnitude); IMS3 adds (1, 6).
    pub rand_augment: Option<(usize, usize)>,
    /// ColorJitter (brightness, contrast, saturation).
    pub color_jitter: Option<(f64, f64, f64)>,
    /// IDC's tensor ColorJitter (the reference's) or torchvision's PIL one.
    pub color_jitter_kind: ColorJitterKind,
    /// Lighting alphastd (0.1); 0 switches it off.
    pub lighting: f64,
    /// Normalise with the ImageNet mean and std (the reference does; a 1-channel set may not).
    pub normalize: bool,
}

impl AugmentConfig {
    pub fn reference(size: usize) -> Self {
        Self {
            size,
            rrc_scale: (0.5, 1.0),
            rrc_ratio: (3.0 / 4.0, 4.0 / 3.0),
            flip: true,
            rand_augment: Some((1, 6)),
            color_jitter: Some((0.4, 0.4, 0.4)),
            color_jitter_kind: ColorJitterKind::Idc,
            lighting: 0.1,
            normalize: true,
        }
    }
}

/// torchvision `Resize(size)` on a PIL image: short side to `size`, long side truncated.
pub fn resize_short(img: &Rgb8, size: usize) -> Rgb8 {
    let (w, h) = (img.width, img.height);
    let (nw, nh) = if w <= h { (size, (size as f64 * h as f64 / w as f64) as usize) } else { ((size as f64 * w as f64 / h as f64) as usize, size) };
    if (nw, nh) == (w, h) { img.clone() } else { resize(img, nw, nh, Filter::Bilinear) }
}

/// torchvision `CenterCrop(size)` (rounded offsets).
pub fn center_crop(img: &Rgb8, size: usize) -> Rgb8 {
    let top = ((img.height.saturating_sub(size)) as f64 / 2.0).round() as usize;
    let left = ((img.width.saturating_sub(size)) as f64 / 2.0).round() as usize;
    let mut data = Vec::with_capacity(size * size * 3);
    for y in top..top + size {
        data.extend_from_slice(&img.data[(y * img.width + left) * 3..(y * img.width + left + size) * 3]);
    }
    Rgb8 { width: size, height: size, data }
}

/// `RandomResizedCrop.get_params`: (top, left, h, w).
pub fn rrc_params(width: usize, height: usize, scale: (f64, f64), ratio: (f64, f64), rng: &mut ChaCha8Rng) -> (usize, usize, usize, usize) {
    let area = (width * height) as f64;
    let (lr0, lr1) = (ratio.0.ln(), ratio.1.ln());
    for _ in 0..10 {
        let target = area * rng.random_range(scale.0..=scale.1);
        let aspect = rng.random_range(lr0..=lr1).exp();
        let w = (target * aspect).sqrt().round() as usize;
        let h = (target / aspect).sqrt().round() as usize;
        if w > 0 && w <= width && h > 0 && h <= height {
            let i = rng.random_range(0..=height - h);
            let j = rng.random_range(0..=width - w);
            return (i, j, h, w);
        }
    }
    let in_ratio = width as f64 / height as f64;
    let (w, h) = if in_ratio < ratio.0 {
        (width, (width as f64 / ratio.0).round() as usize)
    } else if in_ratio > ratio.1 {
        ((height as f64 * ratio.1).round() as usize, height)
    } else {
        (width, height)
    };
    ((height - h) / 2, (width - w) / 2, h, w)
}

/// `ToTensor` (+ optional `Normalize`): interleaved u8 -> planar f32.
pub fn to_tensor(img: &Rgb8, normalize: bool) -> Vec<f32> {
    let n = img.width * img.height;
    let mut out = vec![0f32; 3 * n];
    for i in 0..n {
        for c in 0..3 {
            out[c * n + i] = img.data[i * 3 + c] as f32 / 255.0;
        }
    }
    if normalize {
        normalize_in_place(&mut out, n);
    }
    out
}

fn normalize_in_place(x: &mut [f32], n: usize) {
    for c in 0..3 {
        for v in &mut x[c * n..(c + 1) * n] {
            *v = (*v - IMAGENET_MEAN[c]) / IMAGENET_STD[c];
        }
    }
}

/// The training transform of one image: `3 * size * size` floats, planar. IMS3's order
/// (`data.py` of IMS3): Resize -> CenterCrop -> RandomResizedCrop -> flip -> RandAugment on the
/// 8-bit image, then ToTensor -> ColorJitter (IDC's, on floats) -> Lighting -> Normalize.
pub fn train_transform(img: &Rgb8, cfg: &AugmentConfig, rng: &mut ChaCha8Rng) -> Vec<f32> {
    let s = cfg.size;
    let img = center_crop(&resize_short(img, s), s);
    let (i, j, h, w) = rrc_params(img.width, img.height, cfg.rrc_scale, cfg.rrc_ratio, rng);
    let mut img = resized_crop(&img, i, j, h, w, s);
    if cfg.flip && rng.random::<f64>() < 0.5 {
        img = img.flip_horizontal();
    }
    if let Some((n, m)) = cfg.rand_augment {
        img = rand_augment(&img, n, m, 31, rng).0;
    }
    if let (Some((b, c, sat)), ColorJitterKind::Pil) = (cfg.color_jitter, cfg.color_jitter_kind) {
        let mut order = [0usize, 1, 2, 3];
        order.shuffle(rng);
        let bf = rng.random_range((1.0 - b).max(0.0)..=1.0 + b);
        let cf = rng.random_range((1.0 - c).max(0.0)..=1.0 + c);
        let sf = rng.random_range((1.0 - sat).max(0.0)..=1.0 + sat);
        for k in order {
            img = match k {
                0 => brightness(&img, bf),
                1 => contrast(&img, cf),
                2 => saturation(&img, sf),
                _ => img, // hue 0: not applied
            };
        }
    }
    let n = s * s;
    let mut x = to_tensor(&img, false);
    if let (Some((b, c, sat)), ColorJitterKind::Idc) = (cfg.color_jitter, cfg.color_jitter_kind) {
        idc_color_jitter(&mut x, n, &draw_idc_jitter(b, c, sat, rng));
    }
    if cfg.lighting > 0.0 {
        let normal = Normal::new(0.0f32, cfg.lighting as f32).expect("std > 0");
        let alpha: [f32; 3] = [normal.sample(rng), normal.sample(rng), normal.sample(rng)];
        for c in 0..3 {
            let shift: f32 = (0..3).map(|k| PCA_EIGVEC[c][k] * alpha[k] * PCA_EIGVAL[k]).sum();
            for v in &mut x[c * n..(c + 1) * n] {
                *v += shift;
            }
        }
    }
    if cfg.normalize {
        normalize_in_place(&mut x, n);
    }
    x
}

/// The test transform: `transform` (geometry), `ToTensor`, `Normalize`.
pub fn eval_transform(img: &Rgb8, size: usize, transform: TestTransform, normalize: bool) -> Vec<f32> {
    to_tensor(&transform.apply(img, size), normalize)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    fn noise_image(w: usize, h: usize, seed: u64) -> Rgb8 {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        Rgb8 { width: w, height: h, data: (0..w * h * 3).map(|_| rng.random::<u8>()).collect() }
    }

    #[test]
    fn shapes_ranges_and_determinism() {
        let img = noise_image(300, 240, 0);
        let cfg = AugmentConfig::reference(64);
        let a = train_transform(&img, &cfg, &mut ChaCha8Rng::seed_from_u64(9));
        let b = train_transform(&img, &cfg, &mut ChaCha8Rng::seed_from_u64(9));
        let c = train_transform(&img, &cfg, &mut ChaCha8Rng::seed_from_u64(10));
        assert_eq!(a.len(), 3 * 64 * 64);
        assert_eq!(a, b);
        assert_ne!(a, c);
        // IDC's jitter does not clip: three blends with factors up to 0.4 widen [0, 1] to at most
        // [-0.9, 1.9]; lighting shifts by less than 0.2; then the normalisation.
        let lo = (-0.9 - 0.485 - 0.2) / 0.229;
        let hi = (1.9 - 0.406 + 0.2) / 0.225;
        assert!(a.iter().all(|v| v.is_finite() && *v >= lo as f32 && *v <= hi as f32));
        let pil = AugmentConfig { color_jitter_kind: ColorJitterKind::Pil, lighting: 0.0, normalize: false, ..cfg.clone() };
        let p = train_transform(&img, &pil, &mut ChaCha8Rng::seed_from_u64(1));
        assert!(p.iter().all(|v| (0.0..=1.0).contains(v)), "the PIL jitter clips and rounds to 8 bits");
        let plain = AugmentConfig { rand_augment: None, color_jitter: None, lighting: 0.0, normalize: false, ..cfg };
        let p = train_transform(&img, &plain, &mut ChaCha8Rng::seed_from_u64(1));
        assert!(p.iter().all(|v| (0.0..=1.0).contains(v)));
        let e = eval_transform(&img, 56, TestTransform::ResizeCenterCrop, true);
        assert_eq!(e.len(), 3 * 56 * 56);
    }

    #[test]
    fn rrc_respects_scale_and_ratio() {
        let mut rng = ChaCha8Rng::seed_from_u64(2);
        for _ in 0..500 {
            let (i, j, h, w) = rrc_params(224, 224, (0.5, 1.0), (0.75, 4.0 / 3.0), &mut rng);
            assert!(i + h <= 224 && j + w <= 224);
            let frac = (h * w) as f64 / (224.0 * 224.0);
            assert!(frac > 0.49 && frac <= 1.0, "{frac}");
        }
    }

    #[test]
    fn resize_and_crop_follow_torchvision() {
        let img = noise_image(300, 200, 4);
        let r = resize_short(&img, 100);
        assert_eq!((r.width, r.height), (150, 100));
        let c = center_crop(&r, 100);
        assert_eq!((c.width, c.height), (100, 100));
        assert_eq!(&c.data[0..3], &r.data[25 * 3..25 * 3 + 3]);
        // The reference test crop keeps the whole short side; the 8/7 one a centre 7/8 of it.
        let t = TestTransform::ResizeCenterCrop.apply(&img, 100);
        assert_eq!(t, c);
        let tight = TestTransform::Resize8of7CenterCrop.apply(&img, 100);
        assert_eq!(tight, center_crop(&resize_short(&img, 114), 100));
        let small = noise_image(100, 100, 5);
        assert_eq!(TestTransform::AsIs.apply(&small, 100), small);
    }
}

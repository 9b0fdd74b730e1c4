//! Images as planar float RGB (`[3, H, W]`, values in [0, 1] unless stated), read from and written
//! to files, and the resampling the reference pipelines apply, with the same arithmetic:
//!
//! - [`resize_bilinear`]: `F.interpolate(mode="bilinear", align_corners=False)` without
//!   antialiasing (IMS3's real-image path resizes to 256x256 this way);
//! - [`resize_bicubic_aa`]: PIL's / torchvision's antialiased bicubic (`a = -0.5`, support
//!   scaled by the downscale factor), what `transforms.Resize(..., BICUBIC)` does to tensors;
//! - [`center_crop`]: torchvision `CenterCrop` (offsets rounded half to even);
//! - [`pil::center_crop_arr`]: ADM's crop for DiT training, with PIL's 8-bit BOX/BICUBIC
//!   resampling reproduced bit for bit.

pub mod idx;
pub mod pil;

use std::path::{Path, PathBuf};

/// Planar RGB image: `data[c * h * w + y * w + x]`.
#[derive(Clone, Debug, PartialEq)]
pub struct Rgb {
    pub width: usize,
    pub height: usize,
    pub data: Vec<f32>,
}

#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    #[error("{path}: cannot open")]
    Open { path: PathBuf, source: std::io::Error },
    #[error("{path}: cannot decode image")]
    Decode { path: PathBuf, source: image::ImageError },
    #[error("{path}: cannot write image")]
    Write { path: PathBuf, source: std::io::Error },
    #[error("{path}: cannot list folder")]
    List { path: PathBuf, source: std::io::Error },
    #[error("{path}: not a valid IDX file")]
    Idx { path: PathBuf, source: idx::IdxError },
    #[error("{dir}: no {stem}[.gz]")]
    IdxMissing { dir: PathBuf, stem: String },
}

/// ImageNet's per-channel mean and standard deviation (torchvision's `Normalize`), the one copy
/// every ImageNet-side preprocessing uses.
pub const IMAGENET_MEAN: [f32; 3] = [0.485, 0.456, 0.406];
pub const IMAGENET_STD: [f32; 3] = [0.229, 0.224, 0.225];

/// File extensions taken as images (case-insensitive), as IMS3's `list_images`.
pub const IMAGE_EXTENSIONS: [&str; 7] = ["png", "jpg", "jpeg", "webp", "bmp", "tif", "tiff"];

impl Rgb {
    pub fn new(width: usize, height: usize, data: Vec<f32>) -> Self {
        assert_eq!(data.len(), 3 * width * height, "RGB data length");
        Self { width, height, data }
    }

    pub fn at(&self, c: usize, y: usize, x: usize) -> f32 {
        self.data[(c * self.height + y) * self.width + x]
    }

    /// Maps every value, e.g. `[0, 1] -> [-1, 1]` with `|v| v * 2.0 - 1.0`.
    pub fn map(mut self, f: impl Fn(f32) -> f32) -> Self {
        self.data.iter_mut().for_each(|v| *v = f(*v));
        self
    }
}

/// Reads any supported image as RGB in [0, 1] (`ToTensor()` of a PIL `convert("RGB")`).
pub fn read_rgb(path: &Path) -> Result<Rgb, ImageError> {
    let img = image::ImageReader::open(path)
        .and_then(|r| r.with_guessed_format())
        .map_err(|source| ImageError::Open { path: path.to_path_buf(), source })?
        .decode()
        .map_err(|source| ImageError::Decode { path: path.to_path_buf(), source })?
        .to_rgb8();
    let (w, h) = (img.width() as usize, img.height() as usize);
    let mut data = vec![0.0f32; 3 * w * h];
    for (i, px) in img.pixels().enumerate() {
        for c in 0..3 {
            data[c * w * h + i] = px.0[c] as f32 / 255.0;
        }
    }
    Ok(Rgb::new(w, h, data))
}

/// Writes an RGB image with values in [0, 1] as PNG (values clamped, rounded to 8 bits, as
/// `torchvision.utils.save_image`), atomically: a temporary file then a rename.
pub fn write_png(path: &Path, img: &Rgb) -> Result<(), ImageError> {
    let err = |source: std::io::Error| ImageError::Write { path: path.to_path_buf(), source };
    let (w, h) = (img.width, img.height);
    let mut buf = image::RgbImage::new(w as u32, h as u32);
    for y in 0..h {
        for x in 0..w {
            let px = std::array::from_fn(|c| (img.at(c, y, x) * 255.0 + 0.5).clamp(0.0, 255.0) as u8);
            buf.put_pixel(x as u32, y as u32, image::Rgb(px));
        }
    }
    let mut bytes = std::io::Cursor::new(Vec::new());
    buf.write_to(&mut bytes, image::ImageFormat::Png).map_err(|e| err(std::io::Error::other(e)))?;
    ims3_util::atomic_write(path, bytes.get_ref()).map_err(err)
}

/// Image files directly in `dir` or below it, sorted by path (the reference takes filesystem
/// order, which is not reproducible).
pub fn list_images(dir: &Path) -> Result<Vec<PathBuf>, ImageError> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let entries = std::fs::read_dir(&d).map_err(|source| ImageError::List { path: d.clone(), source })?;
        for e in entries {
            let p = e.map_err(|source| ImageError::List { path: d.clone(), source })?.path();
            if p.is_dir() {
                stack.push(p);
            } else if p
                .extension()
                .and_then(|x| x.to_str())
                .is_some_and(|x| IMAGE_EXTENSIONS.contains(&x.to_ascii_lowercase().as_str()))
            {
                out.push(p);
            }
        }
    }
    out.sort();
    Ok(out)
}

/// `F.interpolate(x, size=(h, w), mode="bilinear", align_corners=False)`, no antialiasing.
pub fn resize_bilinear(img: &Rgb, out_h: usize, out_w: usize) -> Rgb {
    let taps = |inn: usize, out: usize| -> Vec<(usize, usize, f32, f32)> {
        let scale = inn as f32 / out as f32;
        (0..out)
            .map(|o| {
                let src = (scale * (o as f32 + 0.5) - 0.5).max(0.0);
                let i0 = (src as usize).min(inn - 1);
                let i1 = if i0 < inn - 1 { i0 + 1 } else { i0 };
                let l1 = src - i0 as f32;
                (i0, i1, 1.0 - l1, l1)
            })
            .collect()
    };
    let ty = taps(img.height, out_h);
    let tx = taps(img.width, out_w);
    let mut data = Vec::with_capacity(3 * out_h * out_w);
    for c in 0..3 {
        for &(y0, y1, wy0, wy1) in &ty {
            for &(x0, x1, wx0, wx1) in &tx {
                let v = wy0 * (wx0 * img.at(c, y0, x0) + wx1 * img.at(c, y0, x1))
                    + wy1 * (wx0 * img.at(c, y1, x0) + wx1 * img.at(c, y1, x1));
                data.push(v);
            }
        }
    }
    Rgb::new(out_w, out_h, data)
}

/// Antialiased bicubic resize (PIL `Image.resize(BICUBIC)` on float images; torchvision
/// `Resize(..., BICUBIC, antialias=True)` on tensors): separable, horizontal pass first.
pub fn resize_bicubic_aa(img: &Rgb, out_h: usize, out_w: usize) -> Rgb {
    let cx = pil::float_coeffs(img.width, out_w, pil::Filter::Bicubic);
    let cy = pil::float_coeffs(img.height, out_h, pil::Filter::Bicubic);
    let h = img.height;
    let mut tmp = vec![0.0f32; 3 * h * out_w];
    for c in 0..3 {
        for y in 0..h {
            for (ox, (x0, ws)) in cx.iter().enumerate() {
                let s: f64 = ws.iter().enumerate().map(|(k, wk)| wk * img.at(c, y, x0 + k) as f64).sum();
                tmp[(c * h + y) * out_w + ox] = s as f32;
            }
        }
    }
    let mut data = vec![0.0f32; 3 * out_h * out_w];
    for c in 0..3 {
        for (oy, (y0, ws)) in cy.iter().enumerate() {
            for ox in 0..out_w {
                let s: f64 = ws.iter().enumerate().map(|(k, wk)| wk * tmp[(c * h + y0 + k) * out_w + ox] as f64).sum();
                data[(c * out_h + oy) * out_w + ox] = s as f32;
            }
        }
    }
    Rgb::new(out_w, out_h, data)
}

/// torchvision `Resize(size)` with an int: the shorter side becomes `size`, the longer one
/// `int(size * long / short)`.
pub fn resize_short_side_bicubic_aa(img: &Rgb, size: usize) -> Rgb {
    let (h, w) = (img.height, img.width);
    if h <= w {
        resize_bicubic_aa(img, size, (size as f64 * w as f64 / h as f64) as usize)
    } else {
        resize_bicubic_aa(img, (size as f64 * h as f64 / w as f64) as usize, size)
    }
}

/// torchvision `CenterCrop((h, w))` (image at least that large): offsets
/// `round((H - h) / 2)`, rounded half to even as Python does.
pub fn center_crop(img: &Rgb, out_h: usize, out_w: usize) -> Rgb {
    assert!(img.height >= out_h && img.width >= out_w, "center_crop needs an image at least {out_h}x{out_w}");
    let round_half_even = |v: f64| {
        let r = v.round();
        if (v - v.trunc()).abs() == 0.5 && (r as i64) % 2 != 0 { r - 1.0 } else { r }
    };
    let top = round_half_even((img.height - out_h) as f64 / 2.0) as usize;
    let left = round_half_even((img.width - out_w) as f64 / 2.0) as usize;
    let mut data = Vec::with_capacity(3 * out_h * out_w);
    for c in 0..3 {
        for y in 0..out_h {
            for x in 0..out_w {
                data.push(img.at(c, top + y, left + x));
            }
        }
    }
    Rgb::new(out_w, out_h, data)
}

//! PIL's 8-bit resampling (`Image.resize` on RGB images), bit-exact: coefficients in 22-bit
//! fixed point, horizontal pass then vertical, each rounded and clipped to 8 bits. Used by
//! ADM's `center_crop_arr`, the preprocessing of DiT/IMS3 fine-tuning.

/// An 8-bit RGB image, interleaved (`data[(y * w + x) * 3 + c]`), as PIL holds it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rgb8 {
    pub width: usize,
    pub height: usize,
    pub data: Vec<u8>,
}

/// PIL resampling filters used by the reference.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Filter {
    Box,
    Bilinear,
    Bicubic,
}

impl Filter {
    pub(crate) fn support(self) -> f64 {
        match self {
            Filter::Box => 0.5,
            Filter::Bilinear => 1.0,
            Filter::Bicubic => 2.0,
        }
    }

    pub(crate) fn eval(self, x: f64) -> f64 {
        match self {
            Filter::Box => {
                if x > -0.5 && x <= 0.5 { 1.0 } else { 0.0 }
            }
            Filter::Bilinear => {
                let x = x.abs();
                if x < 1.0 { 1.0 - x } else { 0.0 }
            }
            Filter::Bicubic => {
                let a = -0.5;
                let x = x.abs();
                if x < 1.0 {
                    ((a + 2.0) * x - (a + 3.0)) * x * x + 1.0
                } else if x < 2.0 {
                    (((x - 5.0) * x + 8.0) * x - 4.0) * a
                } else {
                    0.0
                }
            }
        }
    }
}

const PRECISION_BITS: u32 = 32 - 8 - 2;

/// PIL's `precompute_coeffs`: per output index, the first input index and the normalised
/// weights (float). The support widens with the downscale factor (antialiasing).
pub(crate) fn float_coeffs(inn: usize, out: usize, filter: Filter) -> Vec<(usize, Vec<f64>)> {
    let scale = inn as f64 / out as f64;
    let filterscale = scale.max(1.0);
    let support = filter.support() * filterscale;
    let ss = 1.0 / filterscale;
    (0..out)
        .map(|o| {
            let center = (o as f64 + 0.5) * scale;
            let xmin = ((center - support + 0.5) as i64).max(0) as usize;
            let xmax = ((center + support + 0.5) as i64).min(inn as i64) as usize;
            let mut w: Vec<f64> = (xmin..xmax).map(|x| filter.eval((x as f64 - center + 0.5) * ss)).collect();
            let total: f64 = w.iter().sum();
            if total != 0.0 {
                w.iter_mut().for_each(|v| *v /= total);
            }
            (xmin, w)
        })
        .collect()
}

/// `normalize_coeffs_8bpc`: the float weights in 22-bit fixed point, rounded away from zero.
fn coeffs(inn: usize, out: usize, filter: Filter) -> Vec<(usize, Vec<i32>)> {
    float_coeffs(inn, out, filter)
        .into_iter()
        .map(|(xmin, w)| {
            let k = w
                .iter()
                .map(|v| {
                    let f = v * (1u32 << PRECISION_BITS) as f64;
                    if *v < 0.0 { (f - 0.5) as i32 } else { (f + 0.5) as i32 }
                })
                .collect();
            (xmin, k)
        })
        .collect()
}

fn clip8(v: i64) -> u8 {
    (v >> PRECISION_BITS).clamp(0, 255) as u8
}

/// `Image.resize((out_w, out_h), resample=filter)` of an RGB image.
pub fn resize(img: &Rgb8, out_w: usize, out_h: usize, filter: Filter) -> Rgb8 {
    let (w, h) = (img.width, img.height);
    let mut cur = img.clone();
    if out_w != w {
        let cx = coeffs(w, out_w, filter);
        let mut data = vec![0u8; out_w * h * 3];
        for y in 0..h {
            for (ox, (x0, k)) in cx.iter().enumerate() {
                for c in 0..3 {
                    let mut ss: i64 = 1 << (PRECISION_BITS - 1);
                    for (i, kk) in k.iter().enumerate() {
                        ss += cur.data[(y * w + x0 + i) * 3 + c] as i64 * *kk as i64;
                    }
                    data[(y * out_w + ox) * 3 + c] = clip8(ss);
                }
            }
        }
        cur = Rgb8 { width: out_w, height: h, data };
    }
    if out_h != h {
        let cy = coeffs(h, out_h, filter);
        let ww = cur.width;
        let mut data = vec![0u8; ww * out_h * 3];
        for (oy, (y0, k)) in cy.iter().enumerate() {
            for x in 0..ww {
                for c in 0..3 {
                    let mut ss: i64 = 1 << (PRECISION_BITS - 1);
                    for (i, kk) in k.iter().enumerate() {
                        ss += cur.data[((y0 + i) * ww + x) * 3 + c] as i64 * *kk as i64;
                    }
                    data[(oy * ww + x) * 3 + c] = clip8(ss);
                }
            }
        }
        cur = Rgb8 { width: ww, height: out_h, data };
    }
    cur
}

/// Python's `round()` for the resize target (half to even).
fn round_half_even(v: f64) -> usize {
    let r = v.round();
    let r = if (v - v.trunc()).abs() == 0.5 && (r as i64) % 2 != 0 { r - 1.0 } else { r };
    r as usize
}

/// ADM's `center_crop_arr(pil_image, size)`: halve with BOX while the short side is at least
/// 2 x size, resize with BICUBIC so the short side is `size`, then crop the centre
/// (offsets floored).
pub fn center_crop_arr(img: &Rgb8, size: usize) -> Rgb8 {
    let mut cur = img.clone();
    while cur.width.min(cur.height) >= 2 * size {
        cur = resize(&cur, cur.width / 2, cur.height / 2, Filter::Box);
    }
    let scale = size as f64 / cur.width.min(cur.height) as f64;
    let (nw, nh) = (round_half_even(cur.width as f64 * scale), round_half_even(cur.height as f64 * scale));
    cur = resize(&cur, nw, nh, Filter::Bicubic);
    let top = (cur.height - size) / 2;
    let left = (cur.width - size) / 2;
    let mut data = Vec::with_capacity(size * size * 3);
    for y in top..top + size {
        data.extend_from_slice(&cur.data[(y * cur.width + left) * 3..(y * cur.width + left + size) * 3]);
    }
    Rgb8 { width: size, height: size, data }
}

impl Rgb8 {
    /// Planar float image in [-1, 1] (`ToTensor` then `Normalize(0.5, 0.5)`).
    pub fn to_signed_planar(&self) -> crate::Rgb {
        let (w, h) = (self.width, self.height);
        let mut data = vec![0f32; 3 * w * h];
        for i in 0..w * h {
            for c in 0..3 {
                data[c * w * h + i] = self.data[i * 3 + c] as f32 / 255.0 * 2.0 - 1.0;
            }
        }
        crate::Rgb::new(w, h, data)
    }

    /// Horizontal flip.
    /// A grey image (`convert("RGB")` of an `L` image): the value in all three channels.
    pub fn from_grey(width: usize, height: usize, grey: &[u8]) -> Self {
        assert_eq!(grey.len(), width * height, "grey data length");
        Self { width, height, data: grey.iter().flat_map(|&v| [v, v, v]).collect() }
    }

    pub fn flip_horizontal(&self) -> Self {
        let mut out = self.clone();
        for y in 0..self.height {
            for x in 0..self.width {
                let (a, b) = ((y * self.width + x) * 3, (y * self.width + self.width - 1 - x) * 3);
                out.data[a..a + 3].copy_from_slice(&self.data[b..b + 3]);
            }
        }
        out
    }
}

/// Reads an image file as 8-bit RGB (PIL `convert("RGB")`).
pub fn read_rgb8(path: &std::path::Path) -> Result<Rgb8, crate::ImageError> {
    let img = image::ImageReader::open(path)
        .and_then(|r| r.with_guessed_format())
        .map_err(|source| crate::ImageError::Open { path: path.to_path_buf(), source })?
        .decode()
        .map_err(|source| crate::ImageError::Decode { path: path.to_path_buf(), source })?
        .to_rgb8();
    Ok(Rgb8 { width: img.width() as usize, height: img.height() as usize, data: img.into_raw() })
}

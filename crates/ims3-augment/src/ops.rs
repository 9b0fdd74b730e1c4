//! PIL/torchvision image operations on [`Rgb8`], and torchvision's `RandAugment`.

use ims3_images::pil::{Filter, Rgb8, resize};
use rand::Rng;
use rand_chacha::ChaCha8Rng;

/// PIL's `convert("L")`.
pub fn luma(r: u8, g: u8, b: u8) -> u8 {
    ((r as u32 * 19595 + g as u32 * 38470 + b as u32 * 7471 + 0x8000) >> 16) as u8
}

/// `Image.blend(a, b, alpha)`: `a + alpha (b - a)`, truncated and clipped.
fn blend_px(a: u8, b: u8, alpha: f64) -> u8 {
    let t = a as f32 + alpha as f32 * (b as f32 - a as f32);
    if t <= 0.0 { 0 } else if t >= 255.0 { 255 } else { t as u8 }
}

fn blend(degenerate: &Rgb8, img: &Rgb8, factor: f64) -> Rgb8 {
    let data = degenerate.data.iter().zip(&img.data).map(|(&a, &b)| blend_px(a, b, factor)).collect();
    Rgb8 { width: img.width, height: img.height, data }
}

fn grey_rgb(img: &Rgb8) -> Rgb8 {
    let mut data = Vec::with_capacity(img.data.len());
    for p in img.data.chunks_exact(3) {
        let l = luma(p[0], p[1], p[2]);
        data.extend([l, l, l]);
    }
    Rgb8 { width: img.width, height: img.height, data }
}

/// `ImageEnhance.Brightness(img).enhance(f)`.
pub fn brightness(img: &Rgb8, f: f64) -> Rgb8 {
    let black = Rgb8 { width: img.width, height: img.height, data: vec![0; img.data.len()] };
    blend(&black, img, f)
}

/// `ImageEnhance.Color(img).enhance(f)` (saturation).
pub fn saturation(img: &Rgb8, f: f64) -> Rgb8 {
    blend(&grey_rgb(img), img, f)
}

/// `ImageEnhance.Contrast(img).enhance(f)`: blend with the rounded mean grey level.
pub fn contrast(img: &Rgb8, f: f64) -> Rgb8 {
    let n = (img.width * img.height) as f64;
    let sum: u64 = img.data.chunks_exact(3).map(|p| luma(p[0], p[1], p[2]) as u64).sum();
    let mean = (sum as f64 / n + 0.5) as u8;
    let flat = Rgb8 { width: img.width, height: img.height, data: vec![mean; img.data.len()] };
    blend(&flat, img, f)
}

/// `ImageEnhance.Sharpness(img).enhance(f)`: blend with `ImageFilter.SMOOTH` (3x3 kernel
/// [[1,1,1],[1,5,1],[1,1,1]] / 13, border pixels kept).
pub fn sharpness(img: &Rgb8, f: f64) -> Rgb8 {
    let (w, h) = (img.width, img.height);
    let mut smooth = img.clone();
    if w >= 3 && h >= 3 {
        for y in 1..h - 1 {
            for x in 1..w - 1 {
                for c in 0..3 {
                    let mut s = 0u32;
                    for dy in 0..3 {
                        for dx in 0..3 {
                            let v = img.data[((y + dy - 1) * w + x + dx - 1) * 3 + c] as u32;
                            s += if dx == 1 && dy == 1 { 5 * v } else { v };
                        }
                    }
                    // PIL's filter rounds: (sum / 13 + 0.5), clipped.
                    smooth.data[(y * w + x) * 3 + c] = ((s as f64 / 13.0) + 0.5).min(255.0) as u8;
                }
            }
        }
    }
    blend(&smooth, img, f)
}

/// `ImageOps.posterize(img, bits)`.
pub fn posterize(img: &Rgb8, bits: u32) -> Rgb8 {
    let mask: u8 = !((1u16 << (8 - bits.min(8))) - 1) as u8;
    Rgb8 { width: img.width, height: img.height, data: img.data.iter().map(|v| v & mask).collect() }
}

/// `ImageOps.solarize(img, threshold)`: values at or above the threshold are inverted.
pub fn solarize(img: &Rgb8, threshold: f64) -> Rgb8 {
    Rgb8 { width: img.width, height: img.height, data: img.data.iter().map(|&v| if (v as f64) < threshold { v } else { 255 - v }).collect() }
}

/// `ImageOps.autocontrast(img)` (cutoff 0), per channel.
pub fn autocontrast(img: &Rgb8) -> Rgb8 {
    let mut out = img.clone();
    for c in 0..3 {
        let vals = img.data.iter().skip(c).step_by(3);
        let (lo, hi) = vals.fold((255u8, 0u8), |(lo, hi), &v| (lo.min(v), hi.max(v)));
        if hi <= lo {
            continue;
        }
        let scale = 255.0 / (hi - lo) as f64;
        let offset = -(lo as f64) * scale;
        let lut: Vec<u8> = (0..256).map(|i| ((i as f64 * scale + offset) as i64).clamp(0, 255) as u8).collect();
        for v in out.data.iter_mut().skip(c).step_by(3) {
            *v = lut[*v as usize];
        }
    }
    out
}

/// `ImageOps.equalize(img)`, per channel.
pub fn equalize(img: &Rgb8) -> Rgb8 {
    let mut out = img.clone();
    for c in 0..3 {
        let mut h = [0u64; 256];
        for &v in img.data.iter().skip(c).step_by(3) {
            h[v as usize] += 1;
        }
        let nonzero: Vec<u64> = h.iter().copied().filter(|&x| x > 0).collect();
        if nonzero.len() <= 1 {
            continue;
        }
        let step = (nonzero.iter().sum::<u64>() - nonzero[nonzero.len() - 1]) / 255;
        if step == 0 {
            continue;
        }
        let mut lut = [0u8; 256];
        let mut n = step / 2;
        for i in 0..256 {
            lut[i] = (n / step).min(255) as u8;
            n += h[i];
        }
        for v in out.data.iter_mut().skip(c).step_by(3) {
            *v = lut[*v as usize];
        }
    }
    out
}

/// PIL `Image.transform(size, AFFINE, m, NEAREST)` with black fill: output pixel (x, y) takes
/// the input at `(m0 (x+.5) + m1 (y+.5) + m2, m3 (x+.5) + m4 (y+.5) + m5)`, truncated.
pub fn affine_nearest(img: &Rgb8, m: [f64; 6]) -> Rgb8 {
    let (w, h) = (img.width, img.height);
    let mut data = vec![0u8; w * h * 3];
    for y in 0..h {
        for x in 0..w {
            let (fx, fy) = (x as f64 + 0.5, y as f64 + 0.5);
            let xi = m[0] * fx + m[1] * fy + m[2];
            let yi = m[3] * fx + m[4] * fy + m[5];
            if xi < 0.0 || yi < 0.0 {
                continue;
            }
            let (xi, yi) = (xi as usize, yi as usize);
            if xi < w && yi < h {
                data[(y * w + x) * 3..(y * w + x) * 3 + 3].copy_from_slice(&img.data[(yi * w + xi) * 3..(yi * w + xi) * 3 + 3]);
            }
        }
    }
    Rgb8 { width: w, height: h, data }
}

/// torchvision's `_get_inverse_affine_matrix` (angles in degrees).
pub fn inverse_affine(center: [f64; 2], angle: f64, translate: [f64; 2], scale: f64, shear: [f64; 2]) -> [f64; 6] {
    let (rot, sx, sy) = (angle.to_radians(), shear[0].to_radians(), shear[1].to_radians());
    let (cx, cy) = (center[0], center[1]);
    let (tx, ty) = (translate[0], translate[1]);
    let a = (rot - sy).cos() / sy.cos();
    let b = -(rot - sy).cos() * sx.tan() / sy.cos() - rot.sin();
    let c = (rot - sy).sin() / sy.cos();
    let d = -(rot - sy).sin() * sx.tan() / sy.cos() + rot.cos();
    let mut m = [d / scale, -b / scale, 0.0, -c / scale, a / scale, 0.0];
    m[2] += m[0] * (-cx - tx) + m[1] * (-cy - ty);
    m[5] += m[3] * (-cx - tx) + m[4] * (-cy - ty);
    m[2] += cx;
    m[5] += cy;
    m
}

/// `PIL.Image.rotate(angle)` (counter-clockwise degrees, about the centre, same size).
pub fn rotate(img: &Rgb8, angle: f64) -> Rgb8 {
    let (cx, cy) = (img.width as f64 / 2.0, img.height as f64 / 2.0);
    let a = -(angle % 360.0).to_radians();
    let r15 = |v: f64| (v * 1e15).round() / 1e15;
    let mut m = [r15(a.cos()), r15(a.sin()), 0.0, r15(-a.sin()), r15(a.cos()), 0.0];
    let (tx, ty) = (m[0] * -cx + m[1] * -cy + m[2], m[3] * -cx + m[4] * -cy + m[5]);
    m[2] = tx + cx;
    m[5] = ty + cy;
    affine_nearest(img, m)
}

/// One of torchvision RandAugment's 14 operations with its signed magnitude.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Op {
    Identity,
    ShearX(f64),
    ShearY(f64),
    TranslateX(f64),
    TranslateY(f64),
    Rotate(f64),
    Brightness(f64),
    Color(f64),
    Contrast(f64),
    Sharpness(f64),
    Posterize(u32),
    Solarize(f64),
    AutoContrast,
    Equalize,
}

impl Op {
    /// torchvision's `_apply_op` on a PIL image (nearest interpolation, black fill).
    pub fn apply(self, img: &Rgb8) -> Rgb8 {
        let (w, h) = (img.width as f64, img.height as f64);
        match self {
            Op::Identity => img.clone(),
            Op::ShearX(m) => affine_nearest(img, inverse_affine([0.0, 0.0], 0.0, [0.0, 0.0], 1.0, [m.atan().to_degrees(), 0.0])),
            Op::ShearY(m) => affine_nearest(img, inverse_affine([0.0, 0.0], 0.0, [0.0, 0.0], 1.0, [0.0, m.atan().to_degrees()])),
            Op::TranslateX(m) => affine_nearest(img, inverse_affine([w * 0.5, h * 0.5], 0.0, [m.trunc(), 0.0], 1.0, [0.0, 0.0])),
            Op::TranslateY(m) => affine_nearest(img, inverse_affine([w * 0.5, h * 0.5], 0.0, [0.0, m.trunc()], 1.0, [0.0, 0.0])),
            Op::Rotate(m) => rotate(img, m),
            Op::Brightness(m) => brightness(img, 1.0 + m),
            Op::Color(m) => saturation(img, 1.0 + m),
            Op::Contrast(m) => contrast(img, 1.0 + m),
            Op::Sharpness(m) => sharpness(img, 1.0 + m),
            Op::Posterize(bits) => posterize(img, bits),
            Op::Solarize(t) => solarize(img, t),
            Op::AutoContrast => autocontrast(img),
            Op::Equalize => equalize(img),
        }
    }
}

/// torchvision `RandAugment(num_ops, magnitude, num_bins=31)`: `num_ops` times, a uniformly
/// chosen operation at bin `magnitude` of its range, negated with probability 1/2 where signed.
pub fn rand_augment(img: &Rgb8, num_ops: usize, magnitude: usize, num_bins: usize, rng: &mut ChaCha8Rng) -> (Rgb8, Vec<Op>) {
    let lin = |hi: f64| hi * magnitude as f64 / (num_bins - 1) as f64;
    let mut out = img.clone();
    let mut ops = Vec::with_capacity(num_ops);
    for _ in 0..num_ops {
        let k = rng.random_range(0..14);
        let signed = |v: f64, rng: &mut ChaCha8Rng| if rng.random::<bool>() { -v } else { v };
        let op = match k {
            0 => Op::Identity,
            1 => Op::ShearX(signed(lin(0.3), rng)),
            2 => Op::ShearY(signed(lin(0.3), rng)),
            3 => Op::TranslateX(signed(lin(150.0 / 331.0 * img.width as f64), rng)),
            4 => Op::TranslateY(signed(lin(150.0 / 331.0 * img.height as f64), rng)),
            5 => Op::Rotate(signed(lin(30.0), rng)),
            6 => Op::Brightness(signed(lin(0.9), rng)),
            7 => Op::Color(signed(lin(0.9), rng)),
            8 => Op::Contrast(signed(lin(0.9), rng)),
            9 => Op::Sharpness(signed(lin(0.9), rng)),
            10 => Op::Posterize((8.0 - (magnitude as f64 / ((num_bins - 1) as f64 / 4.0)).round()) as u32),
            11 => Op::Solarize(255.0 - lin(255.0)),
            12 => Op::AutoContrast,
            _ => Op::Equalize,
        };
        out = op.apply(&out);
        ops.push(op);
    }
    (out, ops)
}

/// `F.crop` then `F.resize` (PIL bilinear with antialiasing), as `resized_crop`.
pub fn resized_crop(img: &Rgb8, top: usize, left: usize, h: usize, w: usize, size: usize) -> Rgb8 {
    let mut data = Vec::with_capacity(w * h * 3);
    for y in top..top + h {
        data.extend_from_slice(&img.data[(y * img.width + left) * 3..(y * img.width + left + w) * 3]);
    }
    resize(&Rgb8 { width: w, height: h, data }, size, size, Filter::Bilinear)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    fn gradient(w: usize, h: usize) -> Rgb8 {
        let mut data = Vec::new();
        for y in 0..h {
            for x in 0..w {
                data.extend([(x * 255 / (w - 1)) as u8, (y * 255 / (h - 1)) as u8, ((x + y) * 7 % 256) as u8]);
            }
        }
        Rgb8 { width: w, height: h, data }
    }

    #[test]
    fn enhance_ops_match_pil_arithmetic() {
        let img = Rgb8 { width: 2, height: 1, data: vec![200, 100, 50, 10, 20, 30] };
        // Brightness 1.5: 200 * 1.5 = 300 -> 255; 100 -> 150; 50 -> 75.
        assert_eq!(brightness(&img, 1.5).data, vec![255, 150, 75, 15, 30, 45]);
        // Saturation 0: every pixel becomes its grey level.
        let g0 = luma(200, 100, 50);
        let g1 = luma(10, 20, 30);
        assert_eq!(saturation(&img, 0.0).data, vec![g0, g0, g0, g1, g1, g1]);
        // Contrast 0: the rounded mean grey level everywhere.
        let mean = ((g0 as f64 + g1 as f64) / 2.0 + 0.5) as u8;
        assert_eq!(contrast(&img, 0.0).data, vec![mean; 6]);
        assert_eq!(posterize(&img, 7).data, vec![200, 100, 50, 10, 20, 30].iter().map(|v| v & 0xfe).collect::<Vec<u8>>());
        assert_eq!(solarize(&img, 128.0).data, vec![55, 100, 50, 10, 20, 30]);
    }

    #[test]
    fn geometry_ops_keep_size_and_identity_cases() {
        let img = gradient(16, 12);
        assert_eq!(rotate(&img, 0.0), img);
        assert_eq!(Op::TranslateX(0.0).apply(&img), img);
        assert_eq!(Op::ShearX(0.0).apply(&img), img);
        // Translating right by 3 shifts columns and fills the left edge with black.
        let t = Op::TranslateX(3.0).apply(&img);
        assert_eq!(&t.data[0..9], &[0; 9]);
        assert_eq!(&t.data[9..12], &img.data[0..3]);
        // Rotating by 90 degrees four times about the centre of an even square is the identity.
        let sq = gradient(8, 8);
        let mut r = sq.clone();
        for _ in 0..4 {
            r = rotate(&r, 90.0);
        }
        assert_eq!(r, sq);
        assert_eq!(autocontrast(&img).data.iter().filter(|&&v| v == 255).count() > 0, true);
        let e = equalize(&img);
        assert_eq!((e.width, e.height), (16, 12));
    }

    #[test]
    fn rand_augment_is_seeded_and_uses_reference_magnitudes() {
        let img = gradient(32, 32);
        let a = rand_augment(&img, 1, 6, 31, &mut ChaCha8Rng::seed_from_u64(3));
        let b = rand_augment(&img, 1, 6, 31, &mut ChaCha8Rng::seed_from_u64(3));
        assert_eq!(a, b);
        let mut seen = std::collections::HashSet::new();
        let mut rng = ChaCha8Rng::seed_from_u64(0);
        for _ in 0..400 {
            let (_, ops) = rand_augment(&img, 1, 6, 31, &mut rng);
            let op = ops[0];
            seen.insert(std::mem::discriminant(&op));
            match op {
                Op::Rotate(m) => assert!((m.abs() - 6.0).abs() < 1e-12),
                Op::Posterize(b) => assert_eq!(b, 7),
                Op::Solarize(t) => assert!((t - 204.0).abs() < 1e-9),
                Op::Brightness(m) => assert!((m.abs() - 0.18).abs() < 1e-12),
                _ => {}
            }
        }
        assert_eq!(seen.len(), 14, "every operation is drawn");
    }
}

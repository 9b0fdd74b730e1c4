//! IDC's `ColorJitter` (`misc/utils.py` of IDC, copied by Minimax and IMS3): brightness,
//! contrast and saturation on float tensors after `ToTensor`, in an order shuffled per image,
//! each a blend toward a target with a factor drawn uniformly from [-var, var]:
//!
//! ```text
//! grey(x)     = (0.299 R + 0.587 G) + 0.114 B                     per pixel, all three planes
//! Brightness: x <- x + a (0 - x)                                  (torch.lerp toward black)
//! Contrast:   x <- x + a (mean(grey(x)) - x)                      one mean over the image
//! Saturation: x <- x + a (grey(x) - x)
//! ```
//!
//! No clipping and no 8-bit rounding: values may leave [0, 1] before lighting and
//! normalisation. (torchvision's PIL `ColorJitter`, which clips, rounds and uses integer luma, is
//! the other [`ColorJitterKind`].)

use rand::Rng;
use rand::seq::SliceRandom;
use rand_chacha::ChaCha8Rng;

/// Which ColorJitter the training transform applies.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ColorJitterKind {
    /// IDC's tensor version (this module): what the reference trains with.
    #[default]
    Idc,
    /// torchvision's PIL version on 8-bit images (clipped, truncated, integer luma), before
    /// `ToTensor`.
    Pil,
}

ims3_util::choice!(ColorJitterKind, "color jitter", { ColorJitterKind::Idc => "idc", ColorJitterKind::Pil => "pil" });

/// One step of IDC's ColorJitter.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum JitterOp {
    Brightness,
    Contrast,
    Saturation,
}

/// The grey level of each pixel of a planar `[3, n]` image, as IDC's in-place `Grayscale`
/// computes it in float32.
fn grey(x: &[f32], n: usize) -> Vec<f32> {
    (0..n).map(|i| (x[i] * 0.299 + 0.587 * x[n + i]) + 0.114 * x[2 * n + i]).collect()
}

/// `torch.lerp(x, target, a)` for |a| < 0.5: `x + a (target - x)`.
fn lerp(x: f32, target: f32, a: f32) -> f32 {
    x + a * (target - x)
}

/// Applies `ops` (each with its factor) in order to the planar `[3, n]` image `x`.
pub fn idc_color_jitter(x: &mut [f32], n: usize, ops: &[(JitterOp, f32)]) {
    for &(op, a) in ops {
        match op {
            JitterOp::Brightness => x.iter_mut().for_each(|v| *v = lerp(*v, 0.0, a)),
            JitterOp::Contrast => {
                // gs.fill_(gs.mean()): the mean over all 3n values of the grey image, which are
                // the grey plane three times (accumulated in f64 here; the reference's f32 sum
                // differs in the last bits).
                let g = grey(x, n);
                let mean = (g.iter().map(|&v| v as f64).sum::<f64>() / n as f64) as f32;
                x.iter_mut().for_each(|v| *v = lerp(*v, mean, a));
            }
            JitterOp::Saturation => {
                let g = grey(x, n);
                for c in 0..3 {
                    for (v, &gv) in x[c * n..(c + 1) * n].iter_mut().zip(&g) {
                        *v = lerp(*v, gv, a);
                    }
                }
            }
        }
    }
}

/// Draws one image's jitter: the ops whose strength is not 0, shuffled, then each op's factor
/// `U(-var, var)` in the order they apply (as the reference draws them, from its own RNG).
pub fn draw_idc_jitter(brightness: f64, contrast: f64, saturation: f64, rng: &mut ChaCha8Rng) -> Vec<(JitterOp, f32)> {
    let mut ops: Vec<(JitterOp, f64)> =
        [(JitterOp::Brightness, brightness), (JitterOp::Contrast, contrast), (JitterOp::Saturation, saturation)].into_iter().filter(|(_, v)| *v != 0.0).collect();
    ops.shuffle(rng);
    ops.into_iter().map(|(op, var)| (op, rng.random_range(-var..=var) as f32)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    #[test]
    fn draws_follow_the_strengths() {
        let mut rng = ChaCha8Rng::seed_from_u64(3);
        for _ in 0..200 {
            let ops = draw_idc_jitter(0.4, 0.0, 0.2, &mut rng);
            assert_eq!(ops.len(), 2);
            for (op, a) in ops {
                let var = if op == JitterOp::Brightness { 0.4 } else { 0.2 };
                assert!(op != JitterOp::Contrast && a.abs() <= var);
            }
        }
    }
}

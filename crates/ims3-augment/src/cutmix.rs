//! CutMix as the IDC/Minimax training loop applies it to every batch: `lam ~ Beta(1, 1)`, a
//! box of side `sqrt(1 - lam)` times the image's centred at a uniform pixel and clipped, the
//! box pasted from a random permutation of the batch, and the loss weighted by the areas:
//! `ratio CE(y) + (1 - ratio) CE(y[perm])` with `ratio = 1 - box area / image area`.

use rand::Rng;
use rand::seq::SliceRandom;
use rand_chacha::ChaCha8Rng;
use rand_distr::{Beta, Distribution};

/// One batch's CutMix draw.
#[derive(Clone, Debug, PartialEq)]
pub struct CutMix {
    /// Rows `r0..r1` and columns `c0..c1` of the pasted box.
    pub rows: (usize, usize),
    pub cols: (usize, usize),
    /// Sample `i` receives the box from sample `perm[i]`.
    pub perm: Vec<usize>,
    /// Weight of the original label: `1 - box area / image area`.
    pub ratio: f64,
}

/// IDC's `rand_bbox`: `(r0, r1, c0, c1)` for an `h x w` image and `lam`.
pub fn cutmix_box(h: usize, w: usize, lam: f64, rng: &mut ChaCha8Rng) -> (usize, usize, usize, usize) {
    let cut = (1.0 - lam).sqrt();
    let (ch, cw) = ((h as f64 * cut) as i64, (w as f64 * cut) as i64);
    let cy = rng.random_range(0..h as i64);
    let cx = rng.random_range(0..w as i64);
    let clip = |v: i64, hi: usize| v.clamp(0, hi as i64) as usize;
    (clip(cy - ch / 2, h), clip(cy + ch / 2, h), clip(cx - cw / 2, w), clip(cx + cw / 2, w))
}

impl CutMix {
    /// Draws the box and the partner permutation for a batch of `n` `h x w` images.
    pub fn draw(n: usize, h: usize, w: usize, beta: f64, rng: &mut ChaCha8Rng) -> Self {
        let lam = Beta::new(beta, beta).expect("beta > 0").sample(rng);
        let mut perm: Vec<usize> = (0..n).collect();
        perm.shuffle(rng);
        let (r0, r1, c0, c1) = cutmix_box(h, w, lam, rng);
        let ratio = 1.0 - ((r1 - r0) * (c1 - c0)) as f64 / (h * w) as f64;
        Self { rows: (r0, r1), cols: (c0, c1), perm, ratio }
    }

    /// Pastes the box into `batch` ([n, c, h, w], row-major) in place.
    pub fn apply(&self, batch: &mut [f32], c: usize, h: usize, w: usize) {
        let per = c * h * w;
        let src = batch.to_vec();
        for (i, &j) in self.perm.iter().enumerate() {
            for ch in 0..c {
                for y in self.rows.0..self.rows.1 {
                    let at = ch * h * w + y * w;
                    batch[i * per + at + self.cols.0..i * per + at + self.cols.1].copy_from_slice(&src[j * per + at + self.cols.0..j * per + at + self.cols.1]);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    #[test]
    fn label_weight_equals_the_pasted_area() {
        let mut rng = ChaCha8Rng::seed_from_u64(1);
        for _ in 0..200 {
            let (n, c, h, w) = (4, 2, 9, 7);
            let cm = CutMix::draw(n, h, w, 1.0, &mut rng);
            // Sample i is filled with the value i, so the pasted fraction is visible.
            let mut batch: Vec<f32> = (0..n).flat_map(|i| std::iter::repeat_n(i as f32, c * h * w)).collect();
            cm.apply(&mut batch, c, h, w);
            for i in 0..n {
                let img = &batch[i * c * h * w..(i + 1) * c * h * w];
                let j = cm.perm[i];
                if j == i {
                    continue;
                }
                let pasted = img.iter().filter(|&&v| v == j as f32).count() as f64 / (c * h * w) as f64;
                assert!((1.0 - pasted - cm.ratio).abs() < 1e-12, "pasted {pasted}, ratio {}", cm.ratio);
            }
            assert!((0.0..=1.0).contains(&cm.ratio));
        }
    }

    #[test]
    fn seeded() {
        let a = CutMix::draw(8, 32, 32, 1.0, &mut ChaCha8Rng::seed_from_u64(5));
        let b = CutMix::draw(8, 32, 32, 1.0, &mut ChaCha8Rng::seed_from_u64(5));
        assert_eq!(a, b);
    }
}

//! Pictures and measures of a distilled set, for reports.
//!
//! - [`contact_sheet`]: one row of images per class.
//! - [`Pca`]: the top principal components of feature vectors (power iteration with deflation
//!   on the covariance), for 2-D embedding plots.
//! - [`scatter_panels`]: panels of points, real ones small and pale, distilled ones large and
//!   outlined, coloured by class.
//! - [`coverage_density`]: Naeem et al. 2020 ("Reliable Fidelity and Diversity Metrics for
//!   Generative Models"), with the k-nearest-neighbour balls of the real features:
//!
//! ```text
//! r_i       = distance from real X_i to its k-th nearest other real feature
//! density   = 1 / (k M) * sum_j sum_i 1[ |Y_j - X_i| <= r_i ]      (mean balls a fake lands in, / k)
//! coverage  = 1 / N * sum_i 1[ exists j: |Y_j - X_i| <= r_i ]      (share of real balls hit)
//! ```

use ims3_images::Rgb;

/// A grid: row `r` holds `rows[r]`, left to right, each image scaled by an integer `zoom`
/// (nearest neighbour), `pad` pixels of mid grey between cells. Values stay in [-1, 1].
pub fn contact_sheet(rows: &[Vec<Rgb>], zoom: usize, pad: usize) -> Rgb {
    let zoom = zoom.max(1);
    let (ch, cw) = rows.iter().flatten().next().map_or((1, 1), |i| (i.height * zoom, i.width * zoom));
    let cols = rows.iter().map(Vec::len).max().unwrap_or(0);
    let (h, w) = (pad + rows.len() * (ch + pad), pad + cols * (cw + pad));
    let mut data = vec![0.0f32; 3 * h * w];
    for (r, row) in rows.iter().enumerate() {
        for (c, img) in row.iter().enumerate() {
            let (y0, x0) = (pad + r * (ch + pad), pad + c * (cw + pad));
            for p in 0..3 {
                for y in 0..ch.min(img.height * zoom) {
                    for x in 0..cw.min(img.width * zoom) {
                        data[(p * h + y0 + y) * w + x0 + x] = img.at(p, y / zoom, x / zoom).clamp(-1.0, 1.0);
                    }
                }
            }
        }
    }
    Rgb::new(w, h, data)
}

/// Principal axes of a point cloud.
#[derive(Clone, Debug)]
pub struct Pca {
    pub mean: Vec<f64>,
    /// Unit vectors, largest variance first.
    pub components: Vec<Vec<f64>>,
    /// Variance along each component.
    pub variances: Vec<f64>,
}

impl Pca {
    /// The top `k` components of `points` (all of one dimension, at least two points).
    pub fn fit(points: &[Vec<f64>], k: usize) -> Self {
        let d = points.first().map_or(0, Vec::len);
        let n = points.len().max(1) as f64;
        let mut mean = vec![0.0; d];
        for p in points {
            for (m, v) in mean.iter_mut().zip(p) {
                *m += v / n;
            }
        }
        let mut cov = vec![0.0; d * d];
        for p in points {
            let c: Vec<f64> = p.iter().zip(&mean).map(|(v, m)| v - m).collect();
            for i in 0..d {
                let ci = c[i] / n;
                if ci == 0.0 {
                    continue;
                }
                for (j, cj) in c.iter().enumerate() {
                    cov[i * d + j] += ci * cj;
                }
            }
        }
        let (mut components, mut variances) = (Vec::new(), Vec::new());
        for comp in 0..k.min(d) {
            // Deterministic start, then power iteration on the deflated covariance.
            let mut v: Vec<f64> = (0..d).map(|i| 1.0 + ((i * 7 + comp * 13) % 11) as f64 / 11.0).collect();
            let mut lambda = 0.0;
            for _ in 0..500 {
                let mut w = vec![0.0; d];
                for i in 0..d {
                    w[i] = (0..d).map(|j| cov[i * d + j] * v[j]).sum();
                }
                let norm = w.iter().map(|x| x * x).sum::<f64>().sqrt();
                if norm < 1e-300 {
                    break;
                }
                let next: Vec<f64> = w.iter().map(|x| x / norm).collect();
                let delta: f64 = next.iter().zip(&v).map(|(a, b)| (a - b).abs()).sum();
                v = next;
                lambda = norm;
                if delta < 1e-12 {
                    break;
                }
            }
            for i in 0..d {
                for j in 0..d {
                    cov[i * d + j] -= lambda * v[i] * v[j];
                }
            }
            // Sign convention: the largest entry positive, so reruns give the same picture.
            let big = v.iter().cloned().fold(0.0f64, |a, x| if x.abs() > a.abs() { x } else { a });
            if big < 0.0 {
                v.iter_mut().for_each(|x| *x = -*x);
            }
            components.push(v);
            variances.push(lambda);
        }
        Self { mean, components, variances }
    }

    /// Coordinates of `p` along the components.
    pub fn project(&self, p: &[f64]) -> Vec<f64> {
        self.components.iter().map(|c| c.iter().zip(p.iter().zip(&self.mean)).map(|(a, (x, m))| a * (x - m)).sum()).collect()
    }
}

/// A class-coloured point in a panel.
#[derive(Clone, Copy, Debug)]
pub struct Point {
    pub xy: [f64; 2],
    pub class: usize,
}

/// One panel: a background cloud (the real features) and the points that matter (distilled).
#[derive(Clone, Debug, Default)]
pub struct Panel {
    pub background: Vec<Point>,
    pub foreground: Vec<Point>,
}

/// matplotlib's tab10 colours, as 0..255.
pub const TAB10: [[u8; 3]; 10] = [
    [31, 119, 180], [255, 127, 14], [44, 160, 44], [214, 39, 40], [148, 103, 189],
    [140, 86, 75], [227, 119, 194], [127, 127, 127], [188, 189, 34], [23, 190, 207],
];

/// Panels side by side, each `side` pixels square on white, sharing one scale (the bounds of
/// all points of all panels) so they can be compared. Background points: 2x2 pale dots;
/// foreground: 7x7 squares in the class colour with a black outline. Returns an image in [-1, 1].
pub fn scatter_panels(panels: &[Panel], side: usize) -> Rgb {
    let gap = 8;
    let (h, w) = (side, panels.len() * side + panels.len().saturating_sub(1) * gap);
    let mut px = vec![255u8; 3 * h * w];
    let all = panels.iter().flat_map(|p| p.background.iter().chain(&p.foreground));
    let (mut lo, mut hi) = ([f64::MAX; 2], [f64::MIN; 2]);
    for p in all {
        for a in 0..2 {
            lo[a] = lo[a].min(p.xy[a]);
            hi[a] = hi[a].max(p.xy[a]);
        }
    }
    let margin = 8.0;
    let span = |a: usize| (hi[a] - lo[a]).max(1e-12);
    let mut put = |x: i64, y: i64, c: [u8; 3]| {
        if x >= 0 && y >= 0 && (x as usize) < w && (y as usize) < h {
            for (k, v) in c.iter().enumerate() {
                px[(k * h + y as usize) * w + x as usize] = *v;
            }
        }
    };
    for (i, panel) in panels.iter().enumerate() {
        let x0 = (i * (side + gap)) as f64;
        // Panel frame.
        for t in 0..side as i64 {
            for (x, y) in [(t, 0), (t, side as i64 - 1), (0, t), (side as i64 - 1, t)] {
                put(x0 as i64 + x, y, [200, 200, 200]);
            }
        }
        let at = |p: &Point| -> (i64, i64) {
            let u = margin + (p.xy[0] - lo[0]) / span(0) * (side as f64 - 2.0 * margin);
            let v = margin + (hi[1] - p.xy[1]) / span(1) * (side as f64 - 2.0 * margin);
            ((x0 + u).round() as i64, v.round() as i64)
        };
        for p in &panel.background {
            let (x, y) = at(p);
            let c = TAB10[p.class % 10].map(|v| ((v as u16 + 255) / 2) as u8);
            for (dx, dy) in [(0, 0), (1, 0), (0, 1), (1, 1)] {
                put(x + dx, y + dy, c);
            }
        }
        for p in &panel.foreground {
            let (x, y) = at(p);
            for dy in -3..=3i64 {
                for dx in -3..=3i64 {
                    let edge = dx.abs() == 3 || dy.abs() == 3;
                    put(x + dx, y + dy, if edge { [0, 0, 0] } else { TAB10[p.class % 10] });
                }
            }
        }
    }
    Rgb::new(w, h, px.iter().map(|&v| v as f32 / 127.5 - 1.0).collect())
}

fn dist(a: &[f64], b: &[f64]) -> f64 {
    a.iter().zip(b).map(|(x, y)| (x - y) * (x - y)).sum::<f64>().sqrt()
}

/// Coverage and density of `fake` against `real` with `k`-NN balls (Naeem et al. 2020).
/// Needs more than `k` real points; returns (coverage, density).
pub fn coverage_density(real: &[Vec<f64>], fake: &[Vec<f64>], k: usize) -> (f64, f64) {
    assert!(real.len() > k && k > 0, "coverage/density need more than k = {k} real points, got {}", real.len());
    let radii: Vec<f64> = real
        .iter()
        .enumerate()
        .map(|(i, x)| {
            let mut d: Vec<f64> = real.iter().enumerate().filter(|(j, _)| *j != i).map(|(_, y)| dist(x, y)).collect();
            d.select_nth_unstable_by(k - 1, f64::total_cmp);
            d[k - 1]
        })
        .collect();
    let mut hit = vec![false; real.len()];
    let mut inside = 0usize;
    for y in fake {
        for (i, x) in real.iter().enumerate() {
            if dist(x, y) <= radii[i] {
                inside += 1;
                hit[i] = true;
            }
        }
    }
    let coverage = hit.iter().filter(|&&h| h).count() as f64 / real.len() as f64;
    let density = inside as f64 / (k * fake.len().max(1)) as f64;
    (coverage, density)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pca_finds_the_long_axis() {
        // Points along (1, 1, 0) with small noise in z.
        let pts: Vec<Vec<f64>> = (0..50).map(|i| {
            let t = i as f64 - 25.0;
            vec![t + 3.0, t + 3.0, ((i * 37) % 7) as f64 * 0.01]
        }).collect();
        let pca = Pca::fit(&pts, 2);
        let c = &pca.components[0];
        let s = 1.0 / 2f64.sqrt();
        assert!((c[0] - s).abs() < 1e-6 && (c[1] - s).abs() < 1e-6 && c[2].abs() < 1e-3, "{c:?}");
        assert!(pca.variances[0] > 100.0 * pca.variances[1]);
        assert!(pca.project(&pca.mean)[0].abs() < 1e-12);
    }

    #[test]
    fn coverage_and_density_by_hand() {
        // Real points on a line at 0, 1, 2, 3, 10; k = 1: radii 1, 1, 1, 1, 7.
        let real: Vec<Vec<f64>> = [0.0, 1.0, 2.0, 3.0, 10.0].iter().map(|&v| vec![v]).collect();
        // A fake at 0.5 lies in the balls of 0 and 1 (radius 1), and of 10? |10 - 0.5| = 9.5 > 7: no.
        let (c, d) = coverage_density(&real, &[vec![0.5]], 1);
        assert_eq!((c, d), (2.0 / 5.0, 2.0));
        // A fake at 5 lies only in the ball of 10 (radius 7) and of 3? |5 - 3| = 2 > 1: no.
        let (c, d) = coverage_density(&real, &[vec![0.5], vec![5.0]], 1);
        assert_eq!((c, d), (3.0 / 5.0, 3.0 / 2.0));
        // Far away: nothing.
        assert_eq!(coverage_density(&real, &[vec![100.0]], 1), (0.0, 0.0));
    }

    #[test]
    fn sheet_and_scatter_have_the_expected_size() {
        let img = Rgb::new(2, 3, vec![0.5; 18]);
        let sheet = contact_sheet(&[vec![img.clone(), img.clone()], vec![img]], 2, 1);
        assert_eq!((sheet.width, sheet.height), (1 + 2 * (4 + 1), 1 + 2 * (6 + 1)));
        assert_eq!(sheet.at(0, 1, 1), 0.5);
        assert_eq!(sheet.at(0, 0, 0), 0.0);
        let p = Panel { background: vec![Point { xy: [0.0, 0.0], class: 0 }], foreground: vec![Point { xy: [1.0, 1.0], class: 3 }] };
        let s = scatter_panels(&[p.clone(), p], 50);
        assert_eq!((s.width, s.height), (108, 50));
        assert!(s.data.iter().any(|&v| v < 0.0));
    }
}

//! Figures, pages and measures of a run.
//!
//! - `figures.rs`: SVG charts with plotters (curves with bands, small multiples, embedding
//!   panels with class legends, line charts);
//! - `tsne.rs`: a reproducible t-SNE (the `bhtsne` crate, seeded start, one thread);
//! - `sheet.rs`: contact sheets labelled with the class names;
//! - `html.rs`: the self-contained `report.html` of a run;
//! - here: [`contact_sheet`] (the image grid no crate draws), [`Pca`] (the top principal
//!   components by power iteration with deflation on the covariance) and [`coverage_density`].
//! - [`coverage_density`]: Naeem et al. 2020 ("Reliable Fidelity and Diversity Metrics for
//!   Generative Models"), with the k-nearest-neighbour balls of the real features:
//!
//! ```text
//! r_i       = distance from real X_i to its k-th nearest other real feature
//! density   = 1 / (k M) * sum_j sum_i 1[ |Y_j - X_i| <= r_i ]      (mean balls a fake lands in, / k)
//! coverage  = 1 / N * sum_i 1[ exists j: |Y_j - X_i| <= r_i ]      (share of real balls hit)
//! ```

pub mod figures;
pub mod html;
pub mod sheet;
pub mod tsne;

pub use figures::{BandSeries, EmbeddedPoint, EmbeddingPanel, TAB10, curves_with_bands, embedding_panels, line_chart, small_multiples};
pub use html::{Figure, report_html};
pub use sheet::labelled_contact_sheet;
pub use tsne::{TsneOptions, tsne_2d};

/// Why a figure could not be made.
#[derive(Debug, thiserror::Error)]
pub enum ReportError {
    #[error("drawing failed: {0}")]
    Draw(String),
    #[error("t-SNE with perplexity {perplexity} needs more than {} points, got {points}", 3.0 * perplexity + 2.0)]
    TooFewPoints { points: usize, perplexity: f64 },
}

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
    fn sheet_has_the_expected_size() {
        let img = Rgb::new(2, 3, vec![0.5; 18]);
        let sheet = contact_sheet(&[vec![img.clone(), img.clone()], vec![img]], 2, 1);
        assert_eq!((sheet.width, sheet.height), (1 + 2 * (4 + 1), 1 + 2 * (6 + 1)));
        assert_eq!(sheet.at(0, 1, 1), 0.5);
        assert_eq!(sheet.at(0, 0, 0), 0.0);
    }

    fn texts(svg: &str) -> Vec<String> {
        svg.split("<text").skip(1).map(|t| t[t.find('>').unwrap() + 1..t.find("</text>").unwrap()].trim().to_string()).collect()
    }

    /// Every figure carries its title, axis labels and legend entries as SVG text, and the same
    /// data gives the same bytes.
    #[test]
    fn figures_carry_titles_axes_and_legends() {
        let series = vec![
            BandSeries { label: "random real subset".into(), points: vec![(25.0, 60.0, 1.0), (50.0, 65.0, 0.5), (100.0, 69.5, 0.6)] },
            BandSeries { label: "IMS3 (IM + S3)".into(), points: vec![(25.0, 50.0, 2.0), (50.0, 55.0, 1.0), (100.0, 59.6, 0.9)] },
        ];
        let a = curves_with_bands("Test top-1 vs epoch", "epoch", "test top-1 (%)", &series, (640, 400)).unwrap();
        let t = texts(&a);
        for want in ["Test top-1 vs epoch", "epoch", "test top-1 (%)", "random real subset", "IMS3 (IM + S3)"] {
            assert!(t.iter().any(|x| x == &sheet::escape(want)), "{want} missing from {t:?}");
        }
        assert_eq!(a, curves_with_bands("Test top-1 vs epoch", "epoch", "test top-1 (%)", &series, (640, 400)).unwrap());

        let panels = vec![("mse".to_string(), vec![(10.0, 0.5), (20.0, 0.4)]), ("im".to_string(), vec![(10.0, 0.9996), (20.0, 0.9995)])];
        let m = small_multiples("Fine-tuning losses", "step", &panels, 2, (300, 220)).unwrap();
        let t = texts(&m);
        for want in ["Fine-tuning losses", "step", "mse", "im"] {
            assert!(t.iter().any(|x| x == want), "{want} missing from {t:?}");
        }

        let classes: Vec<String> = (0..3).map(|c| format!("class {c}")).collect();
        let pt = |x: f64, class: usize| EmbeddedPoint { xy: [x, -x], class };
        let e = embedding_panels(
            "t-SNE of the features",
            "t-SNE",
            &[
                EmbeddingPanel { title: "DiT".into(), real: vec![pt(0.0, 0), pt(1.0, 1)], distilled: vec![pt(0.5, 2)] },
                EmbeddingPanel { title: "IMS3".into(), real: vec![pt(0.0, 0), pt(1.0, 1)], distilled: vec![pt(0.2, 0)] },
            ],
            &classes,
            300,
        )
        .unwrap();
        let t = texts(&e);
        for want in ["t-SNE of the features", "DiT", "IMS3", "t-SNE 1", "t-SNE 2", "class 0", "class 1", "class 2", "real (small dots)", "distilled (squares)"] {
            assert!(t.iter().any(|x| x == want), "{want} missing from {t:?}");
        }

        let o = line_chart("S3 objective", "sweep", "objective", &[("IMS3".into(), vec![(0.0, 1.0), (1.0, 1.5)])], (400, 300)).unwrap();
        assert!(texts(&o).iter().any(|x| x == "sweep") && texts(&o).iter().any(|x| x == "IMS3"));

        let img = Rgb::new(2, 2, vec![0.0; 12]);
        let sheet = labelled_contact_sheet("IMS3 <distilled>", &[vec![img.clone()], vec![img]], &["T-shirt/top".into(), "Trouser".into()], 4, 2).unwrap();
        let t = texts(&sheet);
        assert_eq!(t, vec!["IMS3 &lt;distilled&gt;", "T-shirt/top", "Trouser"]);
        assert!(sheet.contains("href=\"data:image/png;base64,"));

        let page = report_html("run", "# run\n\n| a | b |\n|---|---|\n| 1 | 2 |\n", &[Figure { caption: "curves".into(), svg: a }]);
        assert!(page.contains("<table>") && page.contains("<td>2</td>") && page.contains("<figcaption>curves</figcaption>") && page.contains("<svg"));
    }

    /// t-SNE separates two far clusters and repeats exactly for a seed.
    #[test]
    fn tsne_is_reproducible_and_separates_clusters() {
        let mut pts = Vec::new();
        for c in 0..2 {
            for i in 0..30 {
                let base = if c == 0 { 0.0 } else { 10.0 };
                pts.push(vec![base + (i % 5) as f64 * 0.1, base + (i / 5) as f64 * 0.1, base]);
            }
        }
        let opts = TsneOptions { perplexity: 10.0, epochs: 300, seed: 3 };
        let a = tsne_2d(&pts, &opts).unwrap();
        assert_eq!(a, tsne_2d(&pts, &opts).unwrap());
        let centre = |r: std::ops::Range<usize>| -> [f64; 2] {
            let n = r.len() as f64;
            let s = a[r].iter().fold([0.0, 0.0], |s, p| [s[0] + p[0], s[1] + p[1]]);
            [s[0] / n, s[1] / n]
        };
        let (c0, c1) = (centre(0..30), centre(30..60));
        let gap = ((c0[0] - c1[0]).powi(2) + (c0[1] - c1[1]).powi(2)).sqrt();
        let spread = a[..30].iter().map(|p| ((p[0] - c0[0]).powi(2) + (p[1] - c0[1]).powi(2)).sqrt()).fold(0.0, f64::max);
        assert!(gap > 2.0 * spread, "gap {gap}, spread {spread}");
        assert!(tsne_2d(&pts[..20], &TsneOptions::default()).is_err());
    }
}

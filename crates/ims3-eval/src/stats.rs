//! Comparisons of two methods evaluated with the same seeds: the paired difference and its 95%
//! confidence interval (Student's t with n - 1 degrees of freedom over the per-seed
//! differences). Seed s of both methods trains the same initialisation on the same batch order
//! and augmentation draws, so pairing removes the seed's share of the variance.
//!
//! ```text
//! d_s  = acc_a(s) - acc_b(s)
//! mean = (1/n) sum d_s,   sd = sqrt(sum (d_s - mean)^2 / (n - 1))
//! CI   = mean -+ t_{0.975, n-1} sd / sqrt(n)
//! ```

use serde::{Deserialize, Serialize};

use crate::report::mean_std;

/// Two-sided 95% quantiles `t_{0.975, df}` of Student's t for df = 1..=30.
const T975: [f64; 30] = [
    12.706_204_7, 4.302_652_7, 3.182_446_3, 2.776_445_1, 2.570_581_8, 2.446_911_9, 2.364_624_3, 2.306_004_1, 2.262_157_2, 2.228_138_9,
    2.200_985_2, 2.178_812_8, 2.160_368_7, 2.144_786_7, 2.131_449_5, 2.119_905_3, 2.109_815_6, 2.100_922_0, 2.093_024_1, 2.085_963_4,
    2.079_613_8, 2.073_873_1, 2.068_657_6, 2.063_898_6, 2.059_538_6, 2.055_529_4, 2.051_830_5, 2.048_407_1, 2.045_229_6, 2.042_272_5,
];

/// `t_{0.975, df}`: the table up to 30 degrees of freedom, then the Cornish-Fisher expansion
/// around the normal quantile (error below 1e-4 there).
pub fn t_975(df: usize) -> f64 {
    assert!(df >= 1, "a t quantile needs at least one degree of freedom");
    if df <= T975.len() {
        return T975[df - 1];
    }
    let (z, v) = (1.959_963_984_540_054f64, df as f64);
    z + (z.powi(3) + z) / (4.0 * v) + (5.0 * z.powi(5) + 16.0 * z.powi(3) + 3.0 * z) / (96.0 * v * v)
}

/// The paired difference of two methods' accuracies over the same seeds.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PairedDifference {
    /// Number of paired seeds.
    pub n: usize,
    /// Mean of the per-seed differences (a - b).
    pub mean: f64,
    /// Sample standard deviation of the differences.
    pub std: f64,
    /// Lower and upper end of the 95% confidence interval of the mean difference; `None` with
    /// a single seed.
    pub ci95: Option<(f64, f64)>,
}

impl PairedDifference {
    /// `a[s] - b[s]` over the seeds both have, in the given order.
    pub fn of(a: &[f64], b: &[f64]) -> Self {
        assert_eq!(a.len(), b.len(), "paired comparison of unequal seed lists");
        let d: Vec<f64> = a.iter().zip(b).map(|(x, y)| x - y).collect();
        let (mean, std) = mean_std(&d);
        let n = d.len();
        let ci95 = (n >= 2).then(|| {
            let h = t_975(n - 1) * std / (n as f64).sqrt();
            (mean - h, mean + h)
        });
        Self { n, mean, std, ci95 }
    }

    /// What the interval says: `+1` when it lies above zero, `-1` below, `0` when it holds zero
    /// (or there is none).
    pub fn sign(&self) -> i8 {
        match self.ci95 {
            Some((lo, _)) if lo > 0.0 => 1,
            Some((_, hi)) if hi < 0.0 => -1,
            _ => 0,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantiles_match_the_table_and_join_the_expansion() {
        assert_eq!(t_975(4), 2.776_445_1);
        // Beyond the table the expansion continues it: df 30 from the expansion is within 1e-3
        // of the tabled value, and df 1000 is close to the normal quantile.
        let (z, v) = (1.959_963_984_540_054f64, 30.0);
        let at30 = z + (z.powi(3) + z) / (4.0 * v) + (5.0 * z.powi(5) + 16.0 * z.powi(3) + 3.0 * z) / (96.0 * v * v);
        assert!((at30 - t_975(30)).abs() < 1e-3, "{at30}");
        assert!(t_975(31) < t_975(30) && t_975(31) > t_975(1000) && (t_975(1000) - 1.962_339).abs() < 1e-4);
    }

    #[test]
    fn paired_interval_of_known_differences() {
        // Differences 1, 2, 3, 4, 5: mean 3, sd sqrt(2.5), half-width t(4) sqrt(2.5) / sqrt(5).
        let a = [11.0, 12.0, 13.0, 14.0, 15.0];
        let b = [10.0; 5];
        let p = PairedDifference::of(&a, &b);
        let h = 2.776_445_1 * 2.5f64.sqrt() / 5f64.sqrt();
        assert_eq!((p.n, p.mean), (5, 3.0));
        let (lo, hi) = p.ci95.unwrap();
        assert!((lo - (3.0 - h)).abs() < 1e-12 && (hi - (3.0 + h)).abs() < 1e-12);
        assert_eq!(p.sign(), 1);
        assert_eq!(PairedDifference::of(&b, &a).sign(), -1);
        // A difference that changes sign across seeds is not shown.
        assert_eq!(PairedDifference::of(&[1.0, -1.0, 2.0], &[0.0; 3]).sign(), 0);
        assert_eq!(PairedDifference::of(&[1.0], &[0.0]).ci95, None);
    }
}

//! DD-Ranking's scores (NUS-HPC-AI-Lab/DD-Ranking, `ddranking/metrics/{hard_label,soft_label}.py`)
//! of a distilled set, from top-1 accuracies under one protocol:
//!
//! ```text
//! IOR   = acc(synthetic) - acc(random real, same IPC)          improvement over random
//! HLR   = acc(full training set, hard labels) - acc(synthetic, hard labels)   hard-label recovery
//! alpha = w IOR - (1 - w) HLR                                   w = 0.5
//! LRS   = (e^alpha - e^-1) / (e - e^-1)                         label-robust score
//! ```
//!
//! Accuracies enter as fractions in [0, 1] (so LRS lies in [0, 1], as DD-Ranking's README says
//! it is normalised); DD-Ranking's code feeds percentages, for which the formula leaves [0, 1].
//! Here each score is paired seed by seed where both runs have the seed.

/// DD-Ranking's default weight of IOR against HLR.
pub const LRS_WEIGHT: f64 = 0.5;

/// Improvement over random, in the accuracies' unit.
pub fn ior(synthetic: f64, random_real: f64) -> f64 {
    synthetic - random_real
}

/// Hard-label recovery, in the accuracies' unit.
pub fn hlr(full_data: f64, synthetic_hard: f64) -> f64 {
    full_data - synthetic_hard
}

/// The label-robust score of `ior` and `hlr` given as fractions, with weight `w`.
pub fn lrs(ior: f64, hlr: f64, w: f64) -> f64 {
    let alpha = w * ior - (1.0 - w) * hlr;
    (alpha.exp() - (-1f64).exp()) / (1f64.exp() - (-1f64).exp())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lrs_spans_zero_to_one() {
        // IOR and HLR of a whole 100 points each cancel (alpha 0); the extremes of alpha, 1 and
        // -1, map to 1 and 0.
        assert!((lrs(1.0, 1.0, 0.5) - (1.0 - (-1f64).exp()) / (1f64.exp() - (-1f64).exp())).abs() < 1e-15);
        assert_eq!(lrs(2.0, 0.0, 0.5), 1.0);
        assert_eq!(lrs(0.0, 2.0, 0.5), 0.0);
        assert!((lrs(0.1, 0.5, 0.5) - ((-0.2f64).exp() - (-1f64).exp()) / (1f64.exp() - (-1f64).exp())).abs() < 1e-15);
        assert_eq!((ior(41.8, 29.4), hlr(87.5, 41.8)), (41.8 - 29.4, 87.5 - 41.8));
    }
}

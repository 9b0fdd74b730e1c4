//! t-SNE (van der Maaten & Hinton 2008), as the paper's embedding figure uses, through the
//! `bhtsne` crate's exact gradient, made reproducible: the initial embedding is drawn from
//! `ChaCha8(seed)` (N(0, 1e-2^2), as the reference implementation starts) instead of the crate's
//! OS-seeded RNG, and the fit runs in a one-thread rayon pool so its parallel sums always add in
//! the same order. Same points and seed, same embedding, bit for bit.

use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, Normal};

use crate::ReportError;

/// t-SNE settings (the common defaults: perplexity 30, 1000 iterations).
#[derive(Clone, Debug, PartialEq)]
pub struct TsneOptions {
    pub perplexity: f64,
    pub epochs: usize,
    pub seed: u64,
}

impl Default for TsneOptions {
    fn default() -> Self {
        Self { perplexity: 30.0, epochs: 1000, seed: 0 }
    }
}

/// The 2-D t-SNE embedding of `points` (squared Euclidean affinities, exact gradient).
pub fn tsne_2d(points: &[Vec<f64>], opts: &TsneOptions) -> Result<Vec<[f64; 2]>, ReportError> {
    let n = points.len();
    if (n as f64) < 3.0 * opts.perplexity + 2.0 {
        return Err(ReportError::TooFewPoints { points: n, perplexity: opts.perplexity });
    }
    let mut rng = ChaCha8Rng::seed_from_u64(opts.seed);
    let normal = Normal::new(0.0, 1e-2).expect("std > 0");
    let init: Vec<f64> = (0..2 * n).map(|_| normal.sample(&mut rng)).collect();
    let pool = rayon::ThreadPoolBuilder::new().num_threads(1).build().map_err(|e| ReportError::Draw(e.to_string()))?;
    let rows: Vec<&[f64]> = points.iter().map(Vec::as_slice).collect();
    let y = pool.install(|| {
        let mut t = bhtsne::tSNE::<f64, &[f64], 2>::new(&rows);
        t.perplexity(opts.perplexity).epochs(opts.epochs).initial_embedding(init);
        t.exact(|a, b| a.iter().zip(b.iter()).map(|(x, y)| (x - y) * (x - y)).sum());
        t.embedding()
    });
    Ok(y.chunks(2).map(|c| [c[0], c[1]]).collect())
}

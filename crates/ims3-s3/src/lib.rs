//! Selective Subgroup Sampling (IMS3 `centroid.py`), the training-free selection stage.
//!
//! For C classes with G candidate subgroups each, pick `g_i` per class to maximise
//!
//! ```text
//! L = alpha * sum_i -log(d(c_{i,g_i}, r_i) + eps) + beta' * sum_{i<j} log(d(c_{i,g_i}, c_{j,g_j}) + eps)
//! d(u, v) = 1 - clamp(<u, v>, -1, 1)     (centroids are L2-normalised)
//! ```
//!
//! with `beta' = beta` in the reference code ([`Form::Reference`]) or `beta' = 2 beta / (C-1)` in
//! the paper's normalised form over i != j ([`Form::Paper`]). The search is the reference's
//! coordinate ascent: start every class at the subgroup closest to its real centroid, sweep the
//! classes in order trying every other subgroup with the rest fixed, keep the best strict
//! improvement, stop after a sweep without change or `max_sweeps` sweeps.
//!
//! Only the terms that involve class i change when class i moves. With a cached table of the
//! separation terms a trial costs O(1) and a move O(C G D), instead of the reference's
//! O(C^2 D) full re-evaluation per trial (see [`Centroids::select`]).

pub mod pipeline;

/// Which normalisation of the separation term.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Form {
    /// `beta * sum_{i<j}` as `centroid.py` computes it.
    #[default]
    Reference,
    /// `beta / (C - 1) * sum_{i != j}` as the paper writes it.
    Paper,
}

ims3_util::choice!(Form, "objective form", { Form::Reference => "reference", Form::Paper => "paper" });

/// Objective parameters. Defaults are the `centroid.py` script defaults; IMS3's `run.sh`
/// uses [`Params::run_sh`].
#[derive(Clone, Copy, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Params {
    pub alpha: f64,
    pub beta: f64,
    pub eps: f64,
    pub max_sweeps: usize,
    pub form: Form,
}

impl Default for Params {
    fn default() -> Self {
        Self { alpha: 1.0, beta: 1.0, eps: 1e-6, max_sweeps: 5, form: Form::Reference }
    }
}

impl Params {
    /// The values IMS3's `run.sh` passes: alpha 0.4, beta 0.9, eps 0.
    pub fn run_sh() -> Self {
        Self { alpha: 0.4, beta: 0.9, eps: 0.0, ..Self::default() }
    }

    fn beta_pairs(&self, classes: usize) -> f64 {
        match self.form {
            Form::Reference => self.beta,
            Form::Paper if classes > 1 => 2.0 * self.beta / (classes - 1) as f64,
            Form::Paper => 0.0,
        }
    }
}

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum S3Error {
    #[error("no classes to select from")]
    Empty,
    #[error("class {class}: {got} candidate centroids of dimension {dim} expected {want} values")]
    Shape { class: usize, got: usize, dim: usize, want: usize },
    #[error("class {0} has no candidate subgroup")]
    NoCandidates(usize),
}

/// Candidate and real centroids: `candidates[i]` holds class i's G centroids, row-major [G, D].
#[derive(Clone, Debug)]
pub struct Centroids {
    pub dim: usize,
    pub candidates: Vec<Vec<f64>>,
    pub real: Vec<Vec<f64>>,
}

/// What the selection chose.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct Selection {
    /// Chosen subgroup per class.
    pub selected: Vec<usize>,
    /// Objective of the chosen combination.
    pub objective: f64,
    /// Sweeps run (the last one may be the one without change).
    pub sweeps: usize,
    /// `d(c_i, r_i)` per class for the chosen subgroups.
    pub dist_to_real: Vec<f64>,
    /// min / mean / max of `d(c_i, c_j)` over i < j.
    pub separation: [f64; 3],
    /// The objective of the initial choice and after each sweep (the last is `objective`).
    pub trace: Vec<f64>,
}

fn dot(a: &[f64], b: &[f64]) -> f64 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

/// `d(u, v) = 1 - clamp(<u, v>, -1, 1)`.
pub fn cosine_distance(u: &[f64], v: &[f64]) -> f64 {
    1.0 - dot(u, v).clamp(-1.0, 1.0)
}

/// L2-normalised mean of L2-normalised rows (`compute_centroid`).
pub fn centroid(features: &[Vec<f64>]) -> Vec<f64> {
    let dim = features.first().map_or(0, Vec::len);
    let mut c = vec![0.0; dim];
    for f in features {
        let n = dot(f, f).sqrt().max(1e-12);
        for (acc, v) in c.iter_mut().zip(f) {
            *acc += v / n;
        }
    }
    let n = dot(&c, &c).sqrt().max(1e-12);
    c.iter().map(|v| v / n).collect()
}

impl Centroids {
    pub fn classes(&self) -> usize {
        self.real.len()
    }

    fn groups(&self, class: usize) -> usize {
        self.candidates[class].len() / self.dim.max(1)
    }

    fn cand(&self, class: usize, group: usize) -> &[f64] {
        &self.candidates[class][group * self.dim..(group + 1) * self.dim]
    }

    fn validate(&self) -> Result<(), S3Error> {
        if self.real.is_empty() || self.candidates.len() != self.real.len() {
            return Err(S3Error::Empty);
        }
        for (i, (c, r)) in self.candidates.iter().zip(&self.real).enumerate() {
            if c.is_empty() {
                return Err(S3Error::NoCandidates(i));
            }
            if c.len() % self.dim != 0 || r.len() != self.dim {
                return Err(S3Error::Shape { class: i, got: c.len(), dim: self.dim, want: self.dim });
            }
        }
        Ok(())
    }

    /// The full objective of a combination, O(C^2 D): the reference's `combined_objective`.
    pub fn objective(&self, selected: &[usize], p: &Params) -> f64 {
        let c = self.classes();
        let close: f64 = (0..c).map(|i| -(cosine_distance(self.cand(i, selected[i]), &self.real[i]) + p.eps).ln()).sum();
        let mut sep = 0.0;
        for i in 0..c {
            for j in i + 1..c {
                sep += (cosine_distance(self.cand(i, selected[i]), self.cand(j, selected[j])) + p.eps).ln();
            }
        }
        p.alpha * close + p.beta_pairs(c) * sep
    }

    /// Coordinate ascent from the closest-to-real start.
    ///
    /// Cost: one [C·G, D] x [D, C] product of float32 dot products up front, giving the table
    /// `L[i, g, j] = log(d(c_{i,g}, c_{j,sel_j}) + eps)` and its row sums `S[i, g]` over j != i.
    /// A trial of subgroup g for class i is then O(1): `alpha * close(i, g) + beta' * S[i, g]`
    /// (the terms not involving i are the same for every trial). When class k moves to a new
    /// subgroup, column k of the table is recomputed (C·G dot products) and the row sums are
    /// updated by the difference.
    pub fn select(&self, p: &Params) -> Result<Selection, S3Error> {
        self.validate()?;
        let c = self.classes();
        let d = self.dim;
        let beta = p.beta_pairs(c);
        let groups: Vec<usize> = (0..c).map(|i| self.groups(i)).collect();
        let offset: Vec<usize> = groups.iter().scan(0, |acc, g| { let o = *acc; *acc += g; Some(o) }).collect();
        let rows = offset[c - 1] + groups[c - 1];
        // Candidate centroids as float32 rows, row (i, g) at offset[i] + g.
        let cand: Vec<f32> = self.candidates.iter().flatten().map(|&v| v as f32).collect();
        let row = |r: usize| &cand[r * d..(r + 1) * d];
        let close: Vec<f64> = (0..c)
            .flat_map(|i| (0..groups[i]).map(move |g| (i, g)))
            .map(|(i, g)| -(cosine_distance(self.cand(i, g), &self.real[i]) + p.eps).ln())
            .collect();
        // Closest-to-real start (smallest distance = largest close term, first on ties).
        let mut selected: Vec<usize> = (0..c)
            .map(|i| {
                (0..groups[i])
                    .map(|g| (g, cosine_distance(self.cand(i, g), &self.real[i])))
                    .fold((0, f64::INFINITY), |best, (g, dist)| if dist < best.1 { (g, dist) } else { best })
                    .0
            })
            .collect();
        let sep = |dotv: f32| (1.0 - (dotv as f64).clamp(-1.0, 1.0) + p.eps).ln() as f32;
        let mut table = vec![0f32; rows * c];
        let mut sums = vec![0f64; rows];
        // The selected rows gathered contiguously: the initial table is a [rows, D] x [D, C]
        // product read row by row.
        let picked: Vec<f32> = (0..c).flat_map(|j| row(offset[j] + selected[j]).iter().copied()).collect();
        for i in 0..c {
            for g in 0..groups[i] {
                let r = offset[i] + g;
                for j in (0..c).filter(|&j| j != i) {
                    let v = sep(dot32(row(r), &picked[j * d..(j + 1) * d]));
                    table[r * c + j] = v;
                    sums[r] += v as f64;
                }
            }
        }
        // The objective of a choice, from the cached separation table.
        let objective_of = |selected: &[usize], table: &[f32]| -> f64 {
            let mut sep_sum = 0.0;
            for i in 0..c {
                for j in i + 1..c {
                    sep_sum += table[(offset[i] + selected[i]) * c + j] as f64;
                }
            }
            p.alpha * (0..c).map(|i| close[offset[i] + selected[i]]).sum::<f64>() + beta * sep_sum
        };
        let mut trace = vec![objective_of(&selected, &table)];
        let mut sweeps = 0;
        for _ in 0..p.max_sweeps {
            sweeps += 1;
            let mut improved = false;
            for i in 0..c {
                let cur = selected[i];
                let value = |g: usize| p.alpha * close[offset[i] + g] + beta * sums[offset[i] + g];
                let mut best_g = cur;
                let mut best = value(cur);
                for g in (0..groups[i]).filter(|&g| g != cur) {
                    let v = value(g);
                    if v > best {
                        best = v;
                        best_g = g;
                    }
                }
                if best_g != cur {
                    selected[i] = best_g;
                    improved = true;
                    let new = row(offset[i] + best_g);
                    for r in (0..rows).filter(|&r| r < offset[i] || r >= offset[i] + groups[i]) {
                        let v = sep(dot32(row(r), new));
                        sums[r] += v as f64 - table[r * c + i] as f64;
                        table[r * c + i] = v;
                    }
                }
            }
            trace.push(objective_of(&selected, &table));
            if !improved {
                break;
            }
        }
        let dist_to_real: Vec<f64> = (0..c).map(|i| cosine_distance(self.cand(i, selected[i]), &self.real[i])).collect();
        let mut pair = Vec::with_capacity(c * (c - 1) / 2);
        for i in 0..c {
            for j in i + 1..c {
                let dotv = dot32(row(offset[i] + selected[i]), row(offset[j] + selected[j]));
                pair.push(1.0 - (dotv as f64).clamp(-1.0, 1.0));
            }
        }
        let separation = if pair.is_empty() {
            [0.0; 3]
        } else {
            [
                pair.iter().copied().fold(f64::INFINITY, f64::min),
                pair.iter().sum::<f64>() / pair.len() as f64,
                pair.iter().copied().fold(f64::NEG_INFINITY, f64::max),
            ]
        };
        let objective = objective_of(&selected, &table);
        Ok(Selection { objective, selected, sweeps, dist_to_real, separation, trace })
    }
}

/// Float32 dot product with 16 independent accumulators (two AVX registers), summed in f64.
fn dot32(a: &[f32], b: &[f32]) -> f32 {
    const L: usize = 16;
    let mut acc = [0f32; L];
    let (ca, cb) = (a.chunks_exact(L), b.chunks_exact(L));
    let tail: f32 = ca.remainder().iter().zip(cb.remainder()).map(|(x, y)| x * y).sum();
    for (x, y) in ca.zip(cb) {
        let x: &[f32; L] = x.try_into().expect("chunk of L");
        let y: &[f32; L] = y.try_into().expect("chunk of L");
        for k in 0..L {
            acc[k] += x[k] * y[k];
        }
    }
    (acc.iter().map(|&v| v as f64).sum::<f64>() + tail as f64) as f32
}

#[cfg(test)]
mod tests {
    use super::*;

    fn unit(v: Vec<f64>) -> Vec<f64> {
        let n = dot(&v, &v).sqrt();
        v.into_iter().map(|x| x / n).collect()
    }

    #[test]
    fn prefers_separated_groups_over_equally_close_ones() {
        // Two classes, two groups each, all equally close to the real centroids; group 1 of
        // class 1 points away from class 0's pick, so separation decides.
        let r0 = unit(vec![1.0, 0.2, 0.0]);
        let r1 = unit(vec![1.0, -0.2, 0.0]);
        let cands0 = [unit(vec![1.0, 0.2, 0.05]), unit(vec![1.0, 0.2, -0.05])].concat();
        let cands1 = [unit(vec![1.0, -0.2, 0.05]), unit(vec![1.0, -0.2, -0.05])].concat();
        let cs = Centroids { dim: 3, candidates: vec![cands0, cands1], real: vec![r0, r1] };
        let p = Params { alpha: 1.0, beta: 1.0, eps: 1e-6, ..Params::default() };
        let s = cs.select(&p).unwrap();
        assert_ne!(s.selected[0], s.selected[1], "opposite tilts separate the classes more");
        // The result is a local optimum: no single-class change improves the objective.
        let best = cs.objective(&s.selected, &p);
        assert!((s.objective - best).abs() < 1e-5 * best.abs(), "{} vs {best}", s.objective);
        for i in 0..2 {
            for g in 0..2 {
                let mut t = s.selected.clone();
                t[i] = g;
                assert!(cs.objective(&t, &p) <= best + 1e-12);
            }
        }
    }

    /// The reference algorithm verbatim: full objective per trial.
    fn naive(cs: &Centroids, p: &Params) -> Vec<usize> {
        let c = cs.classes();
        let mut sel: Vec<usize> = (0..c)
            .map(|i| {
                (0..cs.groups(i))
                    .map(|g| (g, cosine_distance(cs.cand(i, g), &cs.real[i])))
                    .fold((0, f64::INFINITY), |b, (g, d)| if d < b.1 { (g, d) } else { b })
                    .0
            })
            .collect();
        let mut best = cs.objective(&sel, p);
        for _ in 0..p.max_sweeps {
            let mut improved = false;
            for i in 0..c {
                let cur = sel[i];
                let (mut bg, mut bv) = (cur, best);
                for g in (0..cs.groups(i)).filter(|&g| g != cur) {
                    let mut t = sel.clone();
                    t[i] = g;
                    let v = cs.objective(&t, p);
                    if v > bv {
                        bv = v;
                        bg = g;
                    }
                }
                if bg != cur {
                    sel[i] = bg;
                    best = bv;
                    improved = true;
                }
            }
            if !improved {
                break;
            }
        }
        sel
    }

    #[test]
    fn cached_search_equals_the_reference_search() {
        let mut state = 12345u64;
        let mut rnd = move || {
            state = state.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            ((state >> 33) as f64 / (1u64 << 31) as f64) - 0.5
        };
        for trial in 0..20 {
            let (c, g, d) = (3 + trial % 7, 2 + trial % 4, 8);
            let real: Vec<Vec<f64>> = (0..c).map(|_| unit((0..d).map(|_| rnd()).collect())).collect();
            let candidates = real
                .iter()
                .map(|r| (0..g).flat_map(|_| unit(r.iter().map(|v| v + 0.8 * rnd()).collect())).collect())
                .collect();
            let cs = Centroids { dim: d, candidates, real };
            for p in [Params::run_sh(), Params::default(), Params { form: Form::Paper, beta: 3.0, ..Params::default() }] {
                let fast = cs.select(&p).unwrap();
                assert_eq!(fast.selected, naive(&cs, &p), "trial {trial} {p:?}");
                let full = cs.objective(&fast.selected, &p);
                assert!((fast.objective - full).abs() <= 1e-5 * full.abs().max(1.0), "{} vs {full}", fast.objective);
            }
        }
    }

    #[test]
    fn paper_form_scales_beta() {
        let p = Params { form: Form::Paper, ..Params::default() };
        assert!((p.beta_pairs(11) - 0.2).abs() < 1e-15);
        assert_eq!(Params::default().beta_pairs(11), 1.0);
    }

    #[test]
    fn bad_shapes_are_errors() {
        let cs = Centroids { dim: 3, candidates: vec![vec![1.0; 4]], real: vec![vec![1.0; 3]] };
        assert!(matches!(cs.select(&Params::default()), Err(S3Error::Shape { class: 0, .. })));
        let cs = Centroids { dim: 3, candidates: vec![vec![]], real: vec![vec![1.0; 3]] };
        assert_eq!(cs.select(&Params::default()), Err(S3Error::NoCandidates(0)));
    }

    #[test]
    fn centroid_is_normalised_mean() {
        let c = centroid(&[vec![2.0, 0.0], vec![0.0, 3.0]]);
        assert!((c[0] - c[1]).abs() < 1e-12 && (dot(&c, &c) - 1.0).abs() < 1e-12);
    }
}

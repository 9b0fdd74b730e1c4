//! Beta schedules, the derived float64 arrays, and timestep respacing (`space_timesteps`).

use std::collections::BTreeSet;

/// The noise schedule's name as the reference spells it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NoiseSchedule {
    /// Ho et al.: betas linear in [1e-4, 0.02] x 1000/T.
    Linear,
    /// Nichol & Dhariwal's cosine schedule (`squaredcos_cap_v2`), betas capped at 0.999.
    Cosine,
}

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum ScheduleError {
    #[error("cannot respace {total} steps as '{spec}': {why}")]
    Respacing { spec: String, total: usize, why: String },
    #[error("'{spec}' is not a respacing ({why}); expected full, ddimN or section counts such as 50 or 10,20")]
    BadRespacing { spec: String, why: String },
    #[error("unknown noise schedule '{0}' (expected linear or cosine)")]
    UnknownSchedule(String),
}

impl std::str::FromStr for NoiseSchedule {
    type Err = ScheduleError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "linear" => Ok(Self::Linear),
            "cosine" | "squaredcos_cap_v2" => Ok(Self::Cosine),
            _ => Err(ScheduleError::UnknownSchedule(s.to_string())),
        }
    }
}

/// `get_named_beta_schedule(name, T)`, in float64.
pub fn named_betas(schedule: NoiseSchedule, steps: usize) -> Vec<f64> {
    match schedule {
        NoiseSchedule::Linear => {
            let scale = 1000.0 / steps as f64;
            linspace(scale * 0.0001, scale * 0.02, steps)
        }
        NoiseSchedule::Cosine => {
            let alpha_bar = |t: f64| ((t + 0.008) / 1.008 * std::f64::consts::PI / 2.0).cos().powi(2);
            (0..steps)
                .map(|i| {
                    let t1 = i as f64 / steps as f64;
                    let t2 = (i + 1) as f64 / steps as f64;
                    (1.0 - alpha_bar(t2) / alpha_bar(t1)).min(0.999)
                })
                .collect()
        }
    }
}

/// numpy's `linspace(start, stop, n)` (the same float64 formula: start + i*step, last = stop).
pub fn linspace(start: f64, stop: f64, n: usize) -> Vec<f64> {
    if n == 1 {
        return vec![start];
    }
    let step = (stop - start) / (n - 1) as f64;
    let mut v: Vec<f64> = (0..n).map(|i| start + i as f64 * step).collect();
    v[n - 1] = stop;
    v
}

/// Python's `round()` (half to even), which `space_timesteps` relies on.
pub fn round_half_even(x: f64) -> i64 {
    let r = x.round();
    if (x - x.trunc()).abs() == 0.5 {
        let f = x.floor();
        if (f as i64) % 2 == 0 { f as i64 } else { f as i64 + 1 }
    } else {
        r as i64
    }
}

/// How a schedule is respaced: the `timestep_respacing` string of the reference, parsed once.
///
/// - `""` (also `full`): every step;
/// - `"ddimN"`: a constant stride giving exactly N steps;
/// - `"a,b,c"`: T split into equal sections, that many evenly rounded steps from each (`"50"`:
///   the 50 steps IMS3 samples with).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum Respacing {
    #[default]
    Full,
    Ddim(usize),
    Sections(Vec<usize>),
}

impl std::str::FromStr for Respacing {
    type Err = ScheduleError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = |why: String| ScheduleError::BadRespacing { spec: s.to_string(), why };
        let t = s.trim();
        if t.is_empty() || t == "full" {
            return Ok(Respacing::Full);
        }
        if let Some(n) = t.strip_prefix("ddim") {
            return n.parse().map(Respacing::Ddim).map_err(|_| bad(format!("'{n}' is not a step count")));
        }
        let counts: Vec<usize> = t.split(',').map(|c| c.trim().parse::<usize>().map_err(|_| bad(format!("'{c}' is not a step count")))).collect::<Result<_, _>>()?;
        if let Some(i) = counts.iter().position(|&c| c == 0) {
            return Err(bad(format!("section {i} asks for 0 steps")));
        }
        Ok(Respacing::Sections(counts))
    }
}

impl std::fmt::Display for Respacing {
    /// The string [`FromStr`](std::str::FromStr) reads back (`full`, `ddim25`, `50`, `10,20`).
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Respacing::Full => f.write_str("full"),
            Respacing::Ddim(n) => write!(f, "ddim{n}"),
            Respacing::Sections(c) => f.write_str(&c.iter().map(usize::to_string).collect::<Vec<_>>().join(",")),
        }
    }
}

impl serde::Serialize for Respacing {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for Respacing {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// The reference's `space_timesteps(num_timesteps, section_counts)` for `total` steps.
pub fn space_timesteps(total: usize, spec: &Respacing) -> Result<BTreeSet<usize>, ScheduleError> {
    let err = |why: String| ScheduleError::Respacing { spec: spec.to_string(), total, why };
    let counts = match spec {
        Respacing::Full => return Ok((0..total).collect()),
        Respacing::Ddim(want) => {
            for stride in 1..total {
                if (0..total).step_by(stride).count() == *want {
                    return Ok((0..total).step_by(stride).collect());
                }
            }
            return Err(err(format!("no constant stride gives exactly {want} steps")));
        }
        Respacing::Sections(counts) => counts,
    };
    let sections = counts.len();
    let size_per = total / sections;
    let extra = total % sections;
    let mut start = 0usize;
    let mut all = BTreeSet::new();
    for (i, &count) in counts.iter().enumerate() {
        let size = size_per + usize::from(i < extra);
        if size < count {
            return Err(err(format!("section {i} has {size} steps, fewer than the {count} asked for")));
        }
        if count == 0 {
            return Err(err(format!("section {i} asks for 0 steps")));
        }
        let stride = if count <= 1 { 1.0 } else { (size - 1) as f64 / (count - 1) as f64 };
        let mut cur = 0.0f64;
        for _ in 0..count {
            all.insert(start + round_half_even(cur) as usize);
            cur += stride;
        }
        start += size;
    }
    Ok(all)
}

/// Every float64 array of `GaussianDiffusion.__init__`, for a (possibly respaced) schedule.
#[derive(Clone, Debug)]
pub struct Schedule {
    pub betas: Vec<f64>,
    pub alphas_cumprod: Vec<f64>,
    pub alphas_cumprod_prev: Vec<f64>,
    pub alphas_cumprod_next: Vec<f64>,
    pub sqrt_alphas_cumprod: Vec<f64>,
    pub sqrt_one_minus_alphas_cumprod: Vec<f64>,
    pub log_one_minus_alphas_cumprod: Vec<f64>,
    pub sqrt_recip_alphas_cumprod: Vec<f64>,
    pub sqrt_recipm1_alphas_cumprod: Vec<f64>,
    pub posterior_variance: Vec<f64>,
    pub posterior_log_variance_clipped: Vec<f64>,
    pub posterior_mean_coef1: Vec<f64>,
    pub posterior_mean_coef2: Vec<f64>,
    /// `log(betas)`: the upper end of the learned-range variance.
    pub log_betas: Vec<f64>,
    /// Original (1000-step) timestep of each respaced index: what the network is fed.
    pub timestep_map: Vec<usize>,
    /// Steps of the original, unspaced schedule.
    pub original_steps: usize,
}

impl Schedule {
    /// The arrays of a schedule given its betas.
    pub fn from_betas(betas: Vec<f64>, timestep_map: Vec<usize>, original_steps: usize) -> Self {
        let n = betas.len();
        let alphas: Vec<f64> = betas.iter().map(|b| 1.0 - b).collect();
        let mut alphas_cumprod = Vec::with_capacity(n);
        let mut acc = 1.0;
        for a in &alphas {
            acc *= a;
            alphas_cumprod.push(acc);
        }
        let prev: Vec<f64> = std::iter::once(1.0).chain(alphas_cumprod[..n - 1].iter().copied()).collect();
        let next: Vec<f64> = alphas_cumprod[1..].iter().copied().chain(std::iter::once(0.0)).collect();
        let map = |f: &dyn Fn(usize) -> f64| (0..n).map(f).collect::<Vec<f64>>();
        let posterior_variance = map(&|i| betas[i] * (1.0 - prev[i]) / (1.0 - alphas_cumprod[i]));
        let posterior_log_variance_clipped = if n > 1 {
            map(&|i| if i == 0 { posterior_variance[1].ln() } else { posterior_variance[i].ln() })
        } else {
            vec![]
        };
        Self {
            sqrt_alphas_cumprod: map(&|i| alphas_cumprod[i].sqrt()),
            sqrt_one_minus_alphas_cumprod: map(&|i| (1.0 - alphas_cumprod[i]).sqrt()),
            log_one_minus_alphas_cumprod: map(&|i| (1.0 - alphas_cumprod[i]).ln()),
            sqrt_recip_alphas_cumprod: map(&|i| (1.0 / alphas_cumprod[i]).sqrt()),
            sqrt_recipm1_alphas_cumprod: map(&|i| (1.0 / alphas_cumprod[i] - 1.0).sqrt()),
            posterior_mean_coef1: map(&|i| betas[i] * prev[i].sqrt() / (1.0 - alphas_cumprod[i])),
            posterior_mean_coef2: map(&|i| (1.0 - prev[i]) * alphas[i].sqrt() / (1.0 - alphas_cumprod[i])),
            log_betas: betas.iter().map(|b| b.ln()).collect(),
            posterior_variance,
            posterior_log_variance_clipped,
            alphas_cumprod_prev: prev,
            alphas_cumprod_next: next,
            alphas_cumprod,
            betas,
            timestep_map,
            original_steps,
        }
    }

    /// `SpacedDiffusion`: keep the steps `space_timesteps(T, spec)` selects and recompute the
    /// betas from the kept alpha-bars, `beta_i = 1 - abar_i / abar_prev_kept`.
    pub fn respaced(schedule: NoiseSchedule, steps: usize, spec: &Respacing) -> Result<Self, ScheduleError> {
        if steps == 0 {
            return Err(ScheduleError::Respacing { spec: spec.to_string(), total: steps, why: "T must be positive".into() });
        }
        let base = Self::from_betas(named_betas(schedule, steps), (0..steps).collect(), steps);
        let keep = space_timesteps(steps, spec)?;
        let mut last = 1.0;
        let mut betas = Vec::with_capacity(keep.len());
        let mut map = Vec::with_capacity(keep.len());
        for (i, &abar) in base.alphas_cumprod.iter().enumerate() {
            if keep.contains(&i) {
                betas.push(1.0 - abar / last);
                last = abar;
                map.push(i);
            }
        }
        Ok(Self::from_betas(betas, map, steps))
    }

    /// Number of (respaced) steps.
    pub fn len(&self) -> usize {
        self.betas.len()
    }

    pub fn is_empty(&self) -> bool {
        self.betas.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn respacing_50_matches_the_reference_rule() {
        let r = |s: &str| s.parse::<Respacing>().unwrap();
        let s = space_timesteps(1000, &r("50")).unwrap();
        let v: Vec<usize> = s.into_iter().collect();
        assert_eq!(v.len(), 50);
        assert_eq!(&v[..4], &[0, 20, 41, 61]);
        assert_eq!(*v.last().unwrap(), 999);
        let d = space_timesteps(1000, &r("ddim50")).unwrap();
        assert_eq!(d.len(), 50);
        assert_eq!(d.iter().nth(1), Some(&20));
        assert_eq!(space_timesteps(1000, &r("")).unwrap().len(), 1000);
        assert_eq!(space_timesteps(100, &r("10,20")).unwrap().len(), 30);
        for text in ["full", "ddim25", "50", "10,20"] {
            assert_eq!(r(text).to_string(), text);
        }
    }

    #[test]
    fn impossible_respacing_is_an_error_that_says_so() {
        let e = space_timesteps(1000, &"2000".parse().unwrap()).unwrap_err().to_string();
        assert!(e.contains("fewer than the 2000"), "{e}");
        assert!(space_timesteps(1000, &"ddim7000".parse().unwrap()).is_err());
        assert!("abc".parse::<Respacing>().is_err());
        assert!("10,0".parse::<Respacing>().is_err());
        assert!(Schedule::respaced(NoiseSchedule::Linear, 1000, &"1001".parse().unwrap()).is_err());
    }

    #[test]
    fn python_rounding() {
        assert_eq!(round_half_even(0.5), 0);
        assert_eq!(round_half_even(1.5), 2);
        assert_eq!(round_half_even(2.5), 2);
        assert_eq!(round_half_even(2.6), 3);
    }
}

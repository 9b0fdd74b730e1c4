//! The figures a run writes beside its numbers, from the records it keeps: accuracy curves from
//! `eval.json`'s seeds, loss curves from `metrics.jsonl`, the S3 objective from
//! `selection.json`. Drawing is `ims3-report`'s; here the records become series.

use std::path::Path;

use anyhow::{Context, Result};
use ims3_eval::SeedResult;
use ims3_report::BandSeries;

/// Which split an accuracy curve follows.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Split {
    Test,
    Validation,
}

impl Split {
    fn name(self) -> &'static str {
        match self {
            Split::Test => "test",
            Split::Validation => "validation",
        }
    }

    /// The accuracy on this split at a curve point, if it was measured.
    fn at(self, point: &(usize, Option<f64>, Option<f64>)) -> Option<f64> {
        match self {
            Split::Test => point.1,
            Split::Validation => point.2,
        }
    }

    /// The split the curves of `seeds` follow: the test split where it was read at every
    /// evaluation, else the validation split.
    pub fn of_curves(seeds: &[SeedResult]) -> Split {
        let every_test = seeds.iter().all(|s| s.curve.iter().all(|c| c.1.is_some()));
        if every_test { Split::Test } else { Split::Validation }
    }
}

/// Top-1 on `split` vs epoch over seeds: the mean and sample std at each epoch where every seed
/// has a value.
pub fn accuracy_band(label: &str, seeds: &[SeedResult], split: Split) -> BandSeries {
    let epochs: Vec<usize> = seeds.first().map(|s| s.curve.iter().map(|c| c.0).collect()).unwrap_or_default();
    let points = epochs
        .iter()
        .filter_map(|&e| {
            let at: Vec<f64> = seeds.iter().filter_map(|s| s.curve.iter().find(|c| c.0 == e).and_then(|c| split.at(c))).collect();
            (!at.is_empty() && at.len() == seeds.len()).then(|| {
                let (m, sd) = ims3_eval::mean_std(&at);
                (e as f64, m, sd)
            })
        })
        .collect();
    BandSeries { label: label.to_string(), points }
}

/// The figure of `series`: top-1 on `split` vs epoch.
pub fn accuracy_figure(title: &str, series: &[BandSeries], split: Split) -> Result<String> {
    Ok(ims3_report::curves_with_bands(title, "epoch", &format!("{} top-1 (%), mean +- std over seeds", split.name()), series, (760, 440))?)
}

/// Every loss term logged in `metrics.jsonl` (all keys but step, epoch and img_per_s) vs step.
pub fn loss_panels(metrics: &Path) -> Result<Vec<(String, Vec<(f64, f64)>)>> {
    let text = std::fs::read_to_string(metrics).with_context(|| format!("{}: cannot read", metrics.display()))?;
    let mut panels: Vec<(String, Vec<(f64, f64)>)> = Vec::new();
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        let v: serde_json::Value = serde_json::from_str(line).with_context(|| format!("{}: not JSON lines", metrics.display()))?;
        let Some(obj) = v.as_object() else { continue };
        let step = obj.get("step").and_then(|s| s.as_f64()).unwrap_or(0.0);
        for (k, val) in obj {
            if ["step", "epoch", "img_per_s"].contains(&k.as_str()) {
                continue;
            }
            let Some(x) = val.as_f64() else { continue };
            match panels.iter_mut().find(|(n, _)| n == k) {
                Some((_, pts)) => pts.push((step, x)),
                None => panels.push((k.clone(), vec![(step, x)])),
            }
        }
    }
    // The total first, then the terms in the order the trainer names them, each titled by what
    // it is.
    let order = [
        ("loss", "total loss"),
        ("mse", "MSE (noise prediction)"),
        ("vb", "VB (learned variance)"),
        ("im", "IM term"),
        ("pos", "Minimax pos (representativeness)"),
        ("neg", "Minimax neg (diversity)"),
    ];
    panels.sort_by_key(|(n, _)| order.iter().position(|o| o.0 == n).unwrap_or(order.len()));
    for (n, _) in &mut panels {
        if let Some((_, title)) = order.iter().find(|o| o.0 == n) {
            *n = title.to_string();
        }
    }
    Ok(panels)
}

/// The loss terms of a fine-tuning run as small multiples.
pub fn loss_figure(title: &str, metrics: &Path) -> Result<String> {
    let panels = loss_panels(metrics)?;
    Ok(ims3_report::small_multiples(title, "step", &panels, 3, (330, 240))?)
}

/// The S3 objective per sweep of each `(label, selection.json)`.
pub fn objective_figure(title: &str, selections: &[(String, &Path)]) -> Result<String> {
    let mut series = Vec::new();
    for (label, path) in selections {
        let v: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(path).with_context(|| format!("{}: cannot read", path.display()))?).with_context(|| format!("{}: not JSON", path.display()))?;
        let trace: Vec<(f64, f64)> = v["trace"].as_array().map(|a| a.iter().enumerate().filter_map(|(i, x)| x.as_f64().map(|x| (i as f64, x))).collect()).unwrap_or_default();
        series.push((label.clone(), trace));
    }
    Ok(ims3_report::line_chart(title, "sweep (0 = each class's subgroup closest to its real centroid)", "objective", &series, (640, 400))?)
}

/// Writes `svg` to `path` atomically.
pub fn write(path: &Path, svg: &str) -> Result<()> {
    ims3_util::atomic_write(path, svg.as_bytes()).with_context(|| format!("{}: cannot write", path.display()))
}

//! The report of an evaluation over seeds: `eval.json` and `eval.md`.

use serde::{Deserialize, Serialize};

use crate::config::EvalConfig;
use crate::data::ImageSet;
use crate::train::SeedResult;

/// Mean and sample standard deviation (n - 1; 0 for one value).
pub fn mean_std(v: &[f64]) -> (f64, f64) {
    let n = v.len() as f64;
    let m = v.iter().sum::<f64>() / n.max(1.0);
    let var = if v.len() > 1 { v.iter().map(|x| (x - m).powi(2)).sum::<f64>() / (n - 1.0) } else { 0.0 };
    (m, var.sqrt())
}

/// Everything a results table needs, written as `eval.json` and `eval.md`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct EvalReport {
    pub title: String,
    pub net: String,
    pub train_images: usize,
    pub test_images: usize,
    pub epochs: usize,
    /// Every setting of the protocol (optimiser, schedule, labels and teacher, transforms, ...).
    pub settings: serde_json::Value,
    /// Where the images came from: dataset, class order hash, folders, layout.
    #[serde(default)]
    pub data: serde_json::Value,
    pub seeds: Vec<SeedResult>,
    /// (mean, sample std) over seeds.
    pub final_top1: (f64, f64),
    /// Absent when the test split was read after the last epoch only.
    pub best_top1: Option<(f64, f64)>,
    pub val_selected_top1: Option<(f64, f64)>,
    pub command: String,
}

impl EvalReport {
    /// The report of `seeds`; `data` describes the sets (the command line knows where they came
    /// from).
    pub fn new(title: &str, cfg: &EvalConfig, train: &ImageSet, test: &ImageSet, data: serde_json::Value, seeds: Vec<SeedResult>, command: &str) -> Self {
        let pick = |f: &dyn Fn(&SeedResult) -> f64| mean_std(&seeds.iter().map(f).collect::<Vec<_>>());
        let all = |f: &dyn Fn(&SeedResult) -> Option<f64>| seeds.iter().map(f).collect::<Option<Vec<f64>>>().filter(|v| !v.is_empty()).map(|v| mean_std(&v));
        Self {
            title: title.into(),
            net: cfg.net.to_string(),
            train_images: train.len(),
            test_images: test.len(),
            epochs: cfg.epochs,
            settings: cfg.settings_json(),
            data,
            final_top1: pick(&|s| s.final_top1),
            best_top1: all(&|s| s.best_top1),
            val_selected_top1: all(&|s| s.val_selected_top1),
            seeds,
            command: command.into(),
        }
    }

    pub fn markdown(&self) -> String {
        let pm = |(m, s): (f64, f64)| format!("{m:.2} +- {s:.2}");
        let mut md = format!("# {}

{} trained on {} images for {} epochs, tested on {} real images; {} seeds.

", self.title, self.net, self.train_images, self.epochs, self.test_images, self.seeds.len());
        md.push_str("| top-1 (%) | mean +- std |\n|---|---|\n");
        md.push_str(&format!("| final epoch | {} |\n", pm(self.final_top1)));
        if let Some(b) = self.best_top1 {
            md.push_str(&format!("| best epoch (selected on the test split, as the reference reports) | {} |\n", pm(b)));
        }
        if let Some(v) = self.val_selected_top1 {
            md.push_str(&format!("| at the epoch best on held-out validation | {} |\n", pm(v)));
        }
        md.push_str("\n| seed | final | best on test (epoch) | best validation epoch | seconds |\n|---|---|---|---|---|\n");
        let or_dash = |v: Option<String>| v.unwrap_or_else(|| "-".into());
        for s in &self.seeds {
            let best = s.best_top1.zip(s.best_epoch).map(|(t, e)| format!("{t:.2} ({e})"));
            md.push_str(&format!("| {} | {:.2} | {} | {} | {:.0} |\n", s.seed, s.final_top1, or_dash(best), or_dash(s.val_best_epoch.map(|e| e.to_string())), s.seconds));
        }
        md.push_str(&format!("\nProduced by: `{}`\n", self.command));
        md
    }

    /// Writes `eval.json` and `eval.md` into `dir`, atomically.
    pub fn write(&self, dir: &std::path::Path) -> std::io::Result<()> {
        let json = serde_json::to_string_pretty(self).map_err(std::io::Error::other)?;
        ims3_util::atomic_write(&dir.join("eval.json"), json.as_bytes())?;
        ims3_util::atomic_write(&dir.join("eval.md"), self.markdown().as_bytes())
    }
}


//! The one results writer of both recipe kinds: reads the evaluation stages' `eval.json` as
//! [`EvalReport`]s and writes `results.json` and `results.md` (atomically) beside them.

use std::path::Path;

use anyhow::{Context, Result};
use ims3_eval::EvalReport;

use super::runner::Timing;

/// An evaluation stage's report.
pub fn read_eval(dir: &Path) -> Result<EvalReport> {
    let path = dir.join("eval.json");
    let text = std::fs::read_to_string(&path).with_context(|| format!("{}: cannot read", path.display()))?;
    serde_json::from_str(&text).with_context(|| format!("{}: not an eval.json of ims3 eval", path.display()))
}

/// `mean +- std` with two decimals.
pub fn pm((mean, std): (f64, f64)) -> String {
    format!("{mean:.2} +- {std:.2}")
}

/// The stage-time table of a results page.
pub fn stage_table(timings: &[Timing]) -> String {
    let mut md = String::from("\n| stage | seconds |\n|---|---|\n");
    for t in timings {
        md.push_str(&format!("| {} | {} |\n", t.stage, if t.skipped { "(done before)".to_string() } else { format!("{:.0}", t.seconds) }));
    }
    md
}

/// Writes `results.json` and `results.md` into `dir`.
pub fn write_results(dir: &Path, json: &serde_json::Value, md: &str) -> Result<()> {
    ims3_util::write_json(&dir.join("results.json"), json)?;
    ims3_util::atomic_write(&dir.join("results.md"), md.as_bytes())?;
    Ok(())
}

//! `ims3 reproduce <recipe>`: recipes end to end, as one resumable command.
//!
//! - `recipe.rs`: typed recipe settings of both kinds;
//! - `runner.rs`: the one stage runner (markers, `--from`, parallel workers, timings, manifest);
//! - `subset.rs`: the paper's ImageNet-subset pipeline; `ablation.rs`: the CPU job with its
//!   ablations and feature measures, `holdout.rs`: its validation and fine-tuning splits;
//! - `report.rs`: the results writer.
//!
//! Stages are child processes of this binary whose command lines are built from the
//! subcommands' typed `Args` (`crate::args::to_args`).

pub mod ablation;
pub mod holdout;
pub mod plan;
pub mod recipe;
pub mod report;
pub mod runner;
pub mod stages;
pub mod subset;

use std::path::PathBuf;

use anyhow::Result;
use ims3_backend::DeviceSpec;

use recipe::Recipe;
use runner::Invocation;

#[derive(clap::Args, Debug)]
pub struct Args {
    /// A recipe name (see --list) or a recipe .toml.
    pub recipe: Option<String>,
    /// List the recipes.
    #[arg(long)]
    pub list: bool,
    /// Rerun from this stage on (subset recipes: finetune, sample, select, eval; pixel-ablation
    /// recipes: data, finetune, sample, select, arms, eval, report); its outputs are removed first.
    #[arg(long)]
    pub from: Option<String>,
    /// Run a GPU recipe on the CPU anyway.
    #[arg(long)]
    pub allow_cpu: bool,
    /// Run directory (default runs/<recipe>).
    #[arg(long)]
    pub run_dir: Option<PathBuf>,
    /// Results directory (default results/<recipe>).
    #[arg(long)]
    pub results: Option<PathBuf>,
    /// Asset cache (default: $IMS3_CACHE or ~/.cache/ims3).
    #[arg(long)]
    pub cache: Option<PathBuf>,
    /// Spread sampling, S3's encoding and evaluation over these devices, one shard each
    /// (`cuda:0,cuda:1,...`); the results equal one device's. Fine-tuning runs on --device.
    #[arg(long, value_delimiter = ',')]
    pub devices: Vec<DeviceSpec>,
    /// Run only the stages of this kind and stop (a scheduler's job; see `ims3 plan`).
    #[arg(long)]
    pub only: Option<String>,
    /// With --only: of a shardable stage (sample, select, eval), only this shard `i/n`.
    #[arg(long, requires = "only")]
    pub shard: Option<ims3_util::Shard>,
}

pub fn run(a: Args, device: &DeviceSpec) -> Result<()> {
    let Some(name) = a.recipe.as_deref().filter(|_| !a.list) else {
        for n in Recipe::names() {
            let (text, origin) = Recipe::text(n)?;
            println!("{n:<22} {}", Recipe::parse(&text, &origin)?.summary());
        }
        return Ok(());
    };
    let (text, origin) = Recipe::text(name)?;
    let recipe = Recipe::parse(&text, &origin)?;
    let at = Invocation {
        recipe: name.to_string(),
        text,
        device: device.clone(),
        devices: a.devices,
        only: a.only.map(|k| (k, a.shard)),
        from: a.from,
        allow_cpu: a.allow_cpu,
        run_dir: a.run_dir.unwrap_or_else(|| PathBuf::from("runs").join(recipe.name())),
        results: a.results.unwrap_or_else(|| PathBuf::from("results").join(recipe.name())),
        cache: a.cache.unwrap_or_else(ims3_fetch::default_cache),
    };
    match recipe {
        Recipe::Subset(r) => subset::run(r, &at),
        Recipe::Ablation(r) => ablation::run(r, &at),
    }
}

//! `ims3 reproduce <recipe>`: the whole method as one resumable command (see `pipeline/`).

use std::path::PathBuf;

use anyhow::Result;
use ims3_backend::DeviceSpec;

use crate::pipeline::{self, recipe::Recipe};

#[derive(clap::Args, Debug)]
pub struct Args {
    /// A recipe name (see --list) or a recipe .toml.
    pub recipe: Option<String>,
    /// List the recipes.
    #[arg(long)]
    pub list: bool,
    /// Rerun from this stage on (subset recipes: finetune, sample, select, eval; pixel-ablation
    /// recipes: finetune, sample, select, arms, eval, report); its outputs are removed first.
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
    match Recipe::parse(&text, &origin)? {
        Recipe::Subset(r) => pipeline::subset::run(r, &text, &a, device),
        Recipe::Ablation(r) => pipeline::ablation::run(r, &text, &a, device),
    }
}

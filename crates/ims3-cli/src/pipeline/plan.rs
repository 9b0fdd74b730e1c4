//! `ims3 plan <recipe>`: the recipe as a Slurm submission script, each shardable stage a job
//! array (`ims3 reproduce <recipe> --only <stage> --shard $SLURM_ARRAY_TASK_ID/<n>`), every job
//! depending on the one before (`afterok`), and a last job that completes and writes the
//! results (`ims3 reproduce <recipe>`, which finds every finished item and skips it).
//!
//! Nothing is home-made scheduling: Slurm runs the arrays; each task is a plain `ims3`
//! invocation that could as well be run by hand.

use std::path::PathBuf;

use anyhow::{Result, bail};
use ims3_backend::DeviceSpec;

use super::recipe::{Method, Recipe};

#[derive(clap::Args, Debug)]
pub struct Args {
    /// A recipe name (see `ims3 reproduce --list`) or a recipe .toml.
    pub recipe: String,
    /// Tasks of each job array (shards of sampling, S3's encoding and evaluation).
    #[arg(long, default_value_t = 8)]
    pub shards: usize,
    /// Where the script goes.
    #[arg(long, default_value = "plan.sh")]
    pub out: PathBuf,
    /// The `ims3` binary the jobs run (default: this one).
    #[arg(long)]
    pub ims3: Option<PathBuf>,
    /// Slurm partition.
    #[arg(long)]
    pub partition: Option<String>,
    /// Wall-clock limit of each job (Slurm's --time).
    #[arg(long, default_value = "24:00:00")]
    pub time: String,
    /// CPU cores per task.
    #[arg(long, default_value_t = 8)]
    pub cpus_per_task: usize,
    /// Memory per task (Slurm's --mem).
    #[arg(long, default_value = "64G")]
    pub mem: String,
    /// Extra `ims3 reproduce` options every job gets (e.g. `--cache /data/ims3`).
    #[arg(long, default_value = "")]
    pub reproduce_args: String,
}

/// The stages of `recipe` in order: (stage kind, sharded).
fn stages(recipe: &Recipe) -> Vec<(&'static str, bool)> {
    match recipe {
        Recipe::Subset(r) => match r.method {
            Method::Diffusion => {
                let mut v = vec![];
                if r.finetune {
                    v.push(("finetune", false));
                }
                v.extend([("sample", true), ("select", true), ("select", false), ("eval", true)]);
                v
            }
            Method::RandomReal => vec![("random", false), ("eval", true)],
            Method::FullReal => vec![("eval", true)],
        },
        Recipe::Ablation(_) => vec![("data", false), ("finetune", false), ("sample", true), ("select", true), ("select", false), ("arms", false), ("eval", true)],
    }
}

pub fn run(a: Args, device: &DeviceSpec) -> Result<()> {
    if a.shards == 0 {
        bail!("--shards must be at least 1");
    }
    let (text, origin) = Recipe::text(&a.recipe)?;
    let recipe = Recipe::parse(&text, &origin)?;
    let exe = match &a.ims3 {
        Some(p) => p.clone(),
        None => std::env::current_exe()?,
    };
    let quote = |s: &str| format!("'{}'", s.replace('\'', "'\\''"));
    let mut sh = format!(
        "#!/usr/bin/env bash\n\
         # `ims3 plan {recipe}` for Slurm: run this script on the login node (`bash {out}`). Each shardable\n\
         # stage is a job array of {n} tasks, each job waits for the one before (afterok), and the last job\n\
         # writes results/{name}/. A failed task can be resubmitted alone; finished items are skipped.\n\
         set -euo pipefail\n\
         IMS3=${{IMS3:-{exe}}}\n\
         RECIPE={recipe_q}\n\
         EXTRA={extra}\n\
         OPTS=(--parsable --gres=gpu:1 --cpus-per-task={cpus} --mem={mem} --time={time}{partition})\n\
         run() {{ echo \"\\\"$IMS3\\\" --device {device} reproduce \\\"$RECIPE\\\" $EXTRA $*\"; }}\n\
         dep=()\n",
        recipe = a.recipe,
        out = a.out.display(),
        n = a.shards,
        name = recipe.name(),
        exe = quote(&exe.display().to_string()),
        recipe_q = quote(&a.recipe),
        extra = quote(&a.reproduce_args),
        cpus = a.cpus_per_task,
        mem = a.mem,
        time = a.time,
        partition = a.partition.as_ref().map(|p| format!(" --partition={p}")).unwrap_or_default(),
    );
    for (k, (stage, sharded)) in stages(&recipe).into_iter().enumerate() {
        let job = format!("ims3-{}-{k}-{stage}", recipe.name());
        if sharded {
            sh.push_str(&format!(
                "j=$(sbatch \"${{OPTS[@]}}\" \"${{dep[@]}}\" --job-name={job} --array=0-{last} --wrap \"$(run --only {stage} --shard '${{SLURM_ARRAY_TASK_ID}}'/{n})\")\n",
                last = a.shards - 1,
                n = a.shards
            ));
        } else {
            sh.push_str(&format!("j=$(sbatch \"${{OPTS[@]}}\" \"${{dep[@]}}\" --job-name={job} --wrap \"$(run --only {stage})\")\n"));
        }
        sh.push_str("dep=(--dependency=afterok:$j)\necho \"submitted $j\"\n");
    }
    sh.push_str(&format!(
        "j=$(sbatch \"${{OPTS[@]}}\" \"${{dep[@]}}\" --job-name=ims3-{}-results --wrap \"$(run)\")\necho \"submitted $j: writes results/{}/\"\n",
        recipe.name(),
        recipe.name()
    ));
    ims3_util::atomic_write(&a.out, sh.as_bytes())?;
    println!("wrote {} ({} stages, arrays of {} tasks)", a.out.display(), stages(&recipe).len() + 1, a.shards);
    Ok(())
}

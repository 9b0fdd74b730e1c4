//! The paper's pipeline on an ImageNet subset (a [`SubsetRecipe`]): each stage a child
//! process, recorded by `<run>/<stage>.done`:
//!
//! ```text
//! finetune (skipped by the recipes without IM) -> sample -> select -> eval-<net>...
//! -> results/<recipe>/results.json and results.md beside the paper's numbers
//! ```

use anyhow::{Context, Result, bail, ensure};

use super::recipe::{Recipe, SubsetRecipe};
use super::report::{pm, read_eval, write_results};
use super::runner::{Invocation, Runner, StageKind, git_revision};
use super::stages::{Shared, TestSet, TrainingSet};
use crate::args::to_args;

pub const STAGES: [StageKind; 4] = [
    StageKind { name: "finetune", outputs: &["finetune"] },
    StageKind { name: "sample", outputs: &["candidates"] },
    StageKind { name: "select", outputs: &["selected"] },
    StageKind { name: "eval", outputs: &[] },
];

pub fn run(recipe: SubsetRecipe, at: &Invocation) -> Result<()> {
    let revision = git_revision(); // before any output is written
    if recipe.gpu && at.device.is_cpu() && !at.allow_cpu {
        bail!("recipe {} needs a GPU (it fine-tunes and samples DiT-XL/2); run with --device cuda:0, or pass --allow-cpu to run it on the CPU anyway", recipe.name);
    }
    let (run_dir, results, cache) = (&at.run_dir, &at.results, &at.cache);
    let spec = ims3_datasets::DatasetSpec::get(&recipe.dataset)?;
    let archive = spec.fastai_archive.clone().unwrap_or_else(|| spec.name.clone());
    let dit = recipe.assets.dit.clone().unwrap_or_else(|| cache.join("DiT-XL-2-256x256.pt"));
    let vae = recipe.assets.vae.clone().unwrap_or_else(|| cache.join("sd-vae-ft-ema"));
    let encoder = recipe.assets.encoder.clone().unwrap_or_else(|| cache.join("resnet18-f37072fd.pth"));
    let data = recipe.assets.data.clone().unwrap_or_else(|| cache.join(&archive));
    let missing: Vec<String> = [&dit, &vae, &encoder, &data].iter().filter(|p| !p.exists()).map(|p| p.display().to_string()).collect();
    ensure!(missing.is_empty(), "missing inputs: {} (fetch them with `ims3 fetch all`, or set [assets] in the recipe)", missing.join(", "));
    let manifest = ims3_datasets::Manifest::build(&data, &spec, &["train", "val"])?;

    let mut runner = Runner::new(at, &STAGES, 1)?;
    let shared = Shared { dataset: &recipe.dataset, ipc: recipe.ipc, seed: recipe.seed, sample: &recipe.sample, select: &recipe.select };
    let finetuned = if recipe.finetune {
        let cfg_path = run_dir.join("train.toml");
        ims3_util::atomic_write(&cfg_path, Recipe::train_toml(&recipe.train, recipe.seed)?.as_bytes())?;
        let out = run_dir.join("finetune");
        let mut args = shared.finetune(&dit, TrainingSet::Latents { data: &data, vae: &vae }, &cfg_path, &out);
        args.heads = recipe.assets.heads;
        args.image_size = recipe.image_size;
        runner.child("finetune", to_args("finetune", &args))?;
        Some(ims3_im::list_checkpoints(&out.join("checkpoints"))?.pop().map(|(_, p)| p).context("fine-tuning left no checkpoint")?)
    } else {
        None
    };
    let candidates = run_dir.join("candidates");
    let mut args = shared.sample(&dit, finetuned.as_deref(), &candidates);
    args.vae = Some(vae.clone());
    args.heads = recipe.assets.heads;
    runner.child("sample", to_args("sample", &args))?;
    let selected = run_dir.join("selected");
    let mut args = shared.select(&candidates, &encoder, spec.classes.iter().map(|c| c.wnid.clone()).collect(), &selected);
    args.real = Some(data.join("train"));
    runner.child("select", to_args("select", &args))?;
    let mut rows = Vec::new();
    for net in &recipe.eval.nets {
        let out = results.join(net.id());
        let mut args = shared.eval(&selected.join("final_distilled/train"), net, TestSet::Folder(&data.join("val")), &out);
        args.size = recipe.eval.size;
        args.epochs = recipe.eval.epochs;
        args.lr = recipe.eval.lr;
        args.seeds = recipe.eval.seeds.clone();
        runner.child(&format!("eval-{}", net.id()), to_args("eval", &args))?;
        rows.push((net.id(), read_eval(&out)?));
    }

    // Results beside the paper.
    let mut md = format!(
        "# {}\n\n{} ({}), IPC {}, {}{}; {} seeds. Test split: {} real images.\n\n| network | final epoch | best epoch (selected on test) | paper |\n|---|---|---|---|\n",
        recipe.name,
        spec.name,
        manifest.layout,
        recipe.ipc,
        if recipe.finetune { "IM fine-tuned DiT" } else { "pretrained DiT" },
        if recipe.select.groups > 1 { format!(" + S3 over {} subgroups", recipe.select.groups) } else { ", no selection".into() },
        recipe.eval.seeds.len(),
        manifest.splits[1].files
    );
    for (net, rep) in &rows {
        let paper = recipe.paper.get(net).map_or("-".to_string(), |v| format!("{v:.1}"));
        md.push_str(&format!("| {} | {} | {} | {paper} |\n", rep.net, pm(rep.final_top1), pm(rep.best_top1)));
    }
    md.push_str(&format!("\nProduced by: `ims3 --device {} reproduce {}` (run directory {}).\n", at.device, at.recipe, run_dir.display()));
    let summary = serde_json::json!({
        "recipe": recipe.name,
        "dataset": spec.name,
        "layout": manifest.layout,
        "ipc": recipe.ipc,
        "results": rows.iter().map(|(n, r)| serde_json::json!({"net": n, "final_top1": r.final_top1, "best_top1": r.best_top1, "paper": recipe.paper.get(n)})).collect::<Vec<_>>(),
    });
    write_results(results, &summary, &md)?;
    let fields = serde_json::json!({
        "seeds": {"pipeline": recipe.seed, "eval": recipe.eval.seeds},
        "inputs": {"dit": dit.display().to_string(), "vae": vae.display().to_string(), "encoder": encoder.display().to_string(), "data": manifest},
    });
    runner.write_manifest(revision.as_deref(), fields, &[run_dir])?;
    print!("{md}");
    Ok(())
}

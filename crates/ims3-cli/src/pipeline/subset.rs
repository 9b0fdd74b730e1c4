//! The paper's pipeline on an ImageNet subset (a [`SubsetRecipe`]): each stage a child
//! process or a step of this one, recorded by `<run>/<stage>.done`:
//!
//! ```text
//! diffusion:    finetune (skipped by the recipes without IM) -> sample -> select -> eval-<net>...
//! random-real:  random (IPC real training images per class, seeded) -> eval-<net>...
//! full-real:    eval-<net>... on the whole training split
//! -> results/<recipe>/results.json and results.md beside the paper's numbers, with DD-Ranking's
//!    scores (IOR against the random-real recipe; HLR and LRS against the full-real one) where
//!    their results exist
//! ```

use std::path::Path;

use anyhow::{Context, Result, bail, ensure};
use ims3_eval::EvalReport;

use super::recipe::{DitLabels, Method, Recipe, SubsetRecipe};
use super::report::{pm, read_eval, write_results};
use super::runner::{Invocation, Runner, StageKind, git_revision};
use super::stages::{Shared, TestSet, TrainingSet};
use crate::args::to_args;

pub const STAGES: [StageKind; 5] = [
    StageKind { name: "finetune", outputs: &["finetune"] },
    StageKind { name: "sample", outputs: &["candidates"] },
    StageKind { name: "select", outputs: &["selected"] },
    StageKind { name: "random", outputs: &["random"] },
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
    let soft = recipe.eval.labels == crate::commands::eval::LabelKind::Soft;
    let needed = match recipe.method {
        Method::RandomReal | Method::FullReal if soft => vec![&encoder, &data],
        Method::RandomReal | Method::FullReal => vec![&data],
        Method::Diffusion => vec![&dit, &vae, &encoder, &data],
    };
    let missing: Vec<String> = needed.iter().filter(|p| !p.exists()).map(|p| p.display().to_string()).collect();
    ensure!(missing.is_empty(), "missing inputs: {} (fetch them with `ims3 fetch all`, or set [assets] in the recipe)", missing.join(", "));
    let manifest = ims3_datasets::Manifest::build(&data, &spec, &["train", "val"])?;

    let mut runner = Runner::new(at, &STAGES, 1)?;
    let shared = Shared { dataset: &recipe.dataset, ipc: recipe.ipc, seed: recipe.seed, sample: &recipe.sample, select: &recipe.select };
    // Images per class of the evaluated set (the epoch rule's input).
    let mut ipc = recipe.ipc;
    let distilled = match recipe.method {
        Method::FullReal => {
            ipc = manifest.splits[0].per_class.iter().map(|(_, n)| *n).min().unwrap_or(1);
            data.join("train")
        }
        Method::RandomReal => {
            let dir = run_dir.join("random");
            runner.local("random", || write_random_real(&spec, &data, recipe.ipc, recipe.seed, &dir))?;
            if runner.stop_after("random") {
                return Ok(());
            }
            dir
        }
        Method::Diffusion => {
            let finetuned = if recipe.finetune {
                let cfg_path = run_dir.join("train.toml");
                ims3_util::atomic_write(&cfg_path, Recipe::train_toml(&recipe.train, recipe.seed)?.as_bytes())?;
                let out = run_dir.join("finetune");
                let mut args = shared.finetune(&dit, TrainingSet::Latents { data: &data, vae: &vae }, &cfg_path, &out);
                args.heads = recipe.assets.heads;
                args.image_size = recipe.image_size;
                args.folder_index_labels = recipe.finetune_labels == DitLabels::FolderIndex;
                runner.child("finetune", to_args("finetune", &args))?;
                if runner.stop_after("finetune") {
                    return Ok(());
                }
                // The run folder: sampling takes its newest checkpoint when it starts.
                Some(out)
            } else {
                None
            };
            let candidates = run_dir.join("candidates");
            let mut args = shared.sample(&dit, finetuned.as_deref(), &candidates);
            args.vae = Some(vae.clone());
            args.heads = recipe.assets.heads;
            args.folder_index_labels = recipe.sample_labels == DitLabels::FolderIndex;
            runner.sharded(vec![("sample".into(), to_args("sample", &args))])?;
            if runner.stop_after("sample") {
                return Ok(());
            }
            let selected = run_dir.join("selected");
            let mut args = shared.select(&candidates, &encoder, spec.classes.iter().map(|c| c.wnid.clone()).collect(), &selected);
            args.real = Some(data.join("train"));
            runner.sharded(vec![("select".into(), to_args("select", &args))])?;
            if runner.stop_after("select") {
                return Ok(());
            }
            selected.join("final_distilled/train")
        }
    };
    let mut rows = Vec::new();
    for net in &recipe.eval.nets {
        let out = results.join(net.id());
        runner.clear_if_redone("eval", &out.join("seeds"))?;
        let mut args = shared.eval(&distilled, net, TestSet::Folder(&data.join("val")), &out);
        args.size = recipe.eval.size;
        args.epochs = recipe.eval.epochs;
        args.lr = recipe.eval.lr;
        args.ipc = ipc;
        args.seeds = recipe.eval.seeds.clone();
        args.labels = recipe.eval.labels;
        if soft {
            args.teacher = Some(encoder.clone());
        }
        runner.sharded(vec![(format!("eval-{}", net.id()), to_args("eval", &args))])?;
        if !runner.stop_after("eval") {
            rows.push((net.id(), read_eval(&out)?));
        }
    }
    if runner.stop_after("eval") {
        return Ok(());
    }

    // Results beside the paper, with DD-Ranking's scores against the baselines.
    let beside = |name: &Option<String>| name.as_ref().map(|b| results.parent().unwrap_or(Path::new(".")).join(b));
    let (random_dir, full_dir) = (beside(&recipe.random_baseline), beside(&recipe.full_baseline));
    let what = match recipe.method {
        Method::RandomReal => format!("random real training images (seed {})", recipe.seed),
        Method::FullReal => "the whole training split".to_string(),
        Method::Diffusion => format!(
            "{}{}{}",
            if recipe.finetune { "IM fine-tuned DiT" } else { "pretrained DiT" },
            if recipe.finetune && recipe.finetune_labels == DitLabels::FolderIndex { " (fine-tuned on folder-index labels, as run.sh)" } else { "" },
            if recipe.select.groups > 1 { format!(" + S3 over {} subgroups", recipe.select.groups) } else { ", no selection".into() }
        ),
    };
    let mut md = format!(
        "# {}\n\n{} ({}), {}, {what}, {} labels; {} seeds. Test split: {} real images.\n\n\
         | network | final epoch | best epoch (selected on test) | IOR | HLR | LRS | paper |\n|---|---|---|---|---|---|---|\n",
        recipe.name,
        spec.name,
        manifest.layout,
        if recipe.method == Method::FullReal { "all training images".to_string() } else { format!("IPC {}", recipe.ipc) },
        recipe.eval.labels,
        recipe.eval.seeds.len(),
        manifest.splits[1].files
    );
    let mut json_rows = Vec::new();
    for (net, rep) in &rows {
        let paper = recipe.paper.get(net).map_or("-".to_string(), |v| format!("{v:.1}"));
        let scores = ranking_scores(rep, random_dir.as_ref().map(|d| d.join(net)), full_dir.as_ref().map(|d| d.join(net)));
        let cell = |v: &Option<(f64, f64)>, digits: usize| v.map_or("-".to_string(), |(m, s)| format!("{m:.digits$} +- {s:.digits$}"));
        md.push_str(&format!(
            "| {} | {} | {} | {} | {} | {} | {paper} |\n",
            rep.net,
            pm(rep.final_top1),
            cell(&rep.best_top1, 2),
            cell(&scores.ior, 2),
            cell(&scores.hlr, 2),
            cell(&scores.lrs, 4)
        ));
        json_rows.push(serde_json::json!({"net": net, "final_top1": rep.final_top1, "best_top1": rep.best_top1, "scores": scores, "paper": recipe.paper.get(net)}));
    }
    md.push_str(&format!(
        "\nDD-Ranking's scores from final-epoch top-1, paired seed by seed, mean +- sample std: IOR = this set - random real images at the same IPC \
         ({}); HLR = full training set (hard labels) - this set; LRS = (e^a - e^-1) / (e - e^-1), a = 0.5 IOR - 0.5 HLR with accuracies as fractions \
         ({}). `-`: that baseline has no results yet.\n",
        recipe.random_baseline.as_deref().map_or("no random_baseline in the recipe".to_string(), |b| format!("recipe `{b}`")),
        recipe.full_baseline.as_deref().map_or("no full_baseline in the recipe".to_string(), |b| format!("recipe `{b}`")),
    ));
    md.push_str(&format!("\nProduced by: `ims3 --device {} reproduce {}` (run directory {}).\n", at.device, at.recipe, run_dir.display()));
    let summary = serde_json::json!({
        "recipe": recipe.name,
        "dataset": spec.name,
        "layout": manifest.layout,
        "ipc": recipe.ipc,
        "method": recipe.method,
        "labels": recipe.eval.labels,
        "random_baseline": recipe.random_baseline,
        "full_baseline": recipe.full_baseline,
        "results": json_rows,
    });
    write_results(results, &summary, &md)?;
    let page = write_figures_and_page(&recipe, &spec, &rows, &distilled, run_dir, results)?;
    let fields = serde_json::json!({
        "seeds": {"pipeline": recipe.seed, "eval": recipe.eval.seeds},
        "inputs": {"dit": dit.display().to_string(), "vae": vae.display().to_string(), "encoder": encoder.display().to_string(), "data": manifest},
    });
    runner.write_manifest(revision.as_deref(), fields, &[run_dir])?;
    print!("{md}");
    println!("\nreport: file://{}", std::fs::canonicalize(&page)?.display());
    Ok(())
}

/// The run's figures (test top-1 vs epoch per network, the distilled set with class names,
/// the fine-tuning losses and the S3 objective where those stages ran) and `report.html`.
fn write_figures_and_page(
    recipe: &SubsetRecipe,
    spec: &ims3_datasets::DatasetSpec,
    rows: &[(String, EvalReport)],
    distilled: &Path,
    run_dir: &Path,
    results: &Path,
) -> Result<std::path::PathBuf> {
    let mut figures = Vec::new();
    let split = crate::figures::Split::Test; // the reference's protocol tests at every evaluation
    let bands: Vec<_> = rows.iter().map(|(_, r)| crate::figures::accuracy_band(&r.net, &r.seeds, split)).collect();
    let accuracy = crate::figures::accuracy_figure(&format!("{}: test top-1 vs epoch", recipe.name), &bands, split)?;
    crate::figures::write(&results.join("accuracy.svg"), &accuracy)?;
    figures.push(ims3_report::Figure { caption: "Test top-1 vs epoch (mean and band of one std over seeds)".into(), svg: accuracy });
    let class_names: Vec<String> = spec.classes.iter().map(|c| c.name.clone()).collect();
    let images: Vec<Vec<ims3_images::Rgb>> = spec
        .classes
        .iter()
        .map(|c| -> Result<Vec<ims3_images::Rgb>> {
            ims3_images::list_images(&distilled.join(&c.wnid))?.iter().map(|f| Ok(ims3_images::read_rgb(f)?.map(|v| v * 2.0 - 1.0))).collect()
        })
        .collect::<Result<_>>()?;
    // Large images are shown at a quarter of their side.
    let big = images.iter().flatten().any(|i| i.width > 64);
    let small: Vec<Vec<ims3_images::Rgb>> = if big {
        images.iter().map(|row| row.iter().map(|i| ims3_images::resize_bilinear(i, i.height / 4, i.width / 4)).collect()).collect()
    } else {
        images
    };
    let sheet = ims3_report::labelled_contact_sheet(&format!("{}: the distilled set", recipe.name), &small, &class_names, if big { 1 } else { 2 }, 2)?;
    crate::figures::write(&results.join("contact-sheet.svg"), &sheet)?;
    figures.push(ims3_report::Figure { caption: "The distilled set, one row per class".into(), svg: sheet });
    let metrics = run_dir.join("finetune/metrics.jsonl");
    if recipe.method == Method::Diffusion && recipe.finetune && metrics.is_file() {
        let losses = crate::figures::loss_figure("IM fine-tuning: loss terms vs step", &metrics)?;
        crate::figures::write(&results.join("finetune-losses.svg"), &losses)?;
        figures.push(ims3_report::Figure { caption: "IM fine-tuning losses".into(), svg: losses });
    }
    let selection = run_dir.join("selected/selection.json");
    if recipe.method == Method::Diffusion && selection.is_file() {
        let objective = crate::figures::objective_figure("S3 objective per sweep", &[("S3".to_string(), &selection)])?;
        crate::figures::write(&results.join("s3-objective.svg"), &objective)?;
        figures.push(ims3_report::Figure { caption: "S3 objective per sweep".into(), svg: objective });
    }
    let md = std::fs::read_to_string(results.join("results.md"))?;
    let path = results.join("report.html");
    ims3_util::atomic_write(&path, ims3_report::report_html(&recipe.name, &md, &figures).as_bytes())?;
    Ok(path)
}

/// `ipc` real training images per class, drawn from the sorted file list with
/// `seeded_choice(seed, stream = class index)`, copied as they are to `out/<wnid>/NNNN.<ext>`.
fn write_random_real(spec: &ims3_datasets::DatasetSpec, data: &Path, ipc: usize, seed: u64, out: &Path) -> Result<()> {
    let scanned = ims3_datasets::scan(data, "train", spec)?;
    let tmp = out.with_extension("tmp");
    if tmp.exists() {
        std::fs::remove_dir_all(&tmp)?;
    }
    for (k, class) in scanned.classes.iter().enumerate() {
        ensure!(class.files.len() >= ipc, "{}: class {} has {} training images, fewer than {ipc}", data.display(), class.wnid, class.files.len());
        let dir = tmp.join(&class.wnid);
        std::fs::create_dir_all(&dir)?;
        for (i, f) in ims3_datasets::seeded_choice(&class.files, ipc, seed, k as u64).iter().enumerate() {
            let ext = f.extension().map(|e| e.to_string_lossy().to_ascii_lowercase()).unwrap_or_else(|| "jpg".into());
            std::fs::copy(f, dir.join(format!("{i:04}.{ext}"))).with_context(|| format!("{}: cannot copy", f.display()))?;
        }
    }
    if out.exists() {
        std::fs::remove_dir_all(out)?;
    }
    std::fs::rename(&tmp, out)?;
    Ok(())
}

/// DD-Ranking's scores of one network's report; `None` where the baseline has no results.
#[derive(serde::Serialize)]
struct Scores {
    ior: Option<(f64, f64)>,
    hlr: Option<(f64, f64)>,
    lrs: Option<(f64, f64)>,
}

/// IOR against the random-real report in `random`, HLR and LRS against the full-data report in
/// `full` (each `<dir>/eval.json`), paired by seed.
fn ranking_scores(rep: &EvalReport, random: Option<std::path::PathBuf>, full: Option<std::path::PathBuf>) -> Scores {
    let base = |dir: Option<std::path::PathBuf>| dir.and_then(|d| read_eval(&d).ok());
    let (random, full) = (base(random), base(full));
    let paired = |other: &EvalReport, f: &dyn Fn(f64, f64) -> f64| -> Option<Vec<f64>> {
        rep.seeds.iter().map(|s| other.seeds.iter().find(|o| o.seed == s.seed).map(|o| f(s.final_top1, o.final_top1))).collect()
    };
    let ior = random.as_ref().and_then(|r| paired(r, &|own, b| ims3_eval::ranking::ior(own, b)));
    let hlr = full.as_ref().and_then(|r| paired(r, &|own, b| ims3_eval::ranking::hlr(b, own)));
    let lrs = match (&ior, &hlr) {
        (Some(i), Some(h)) => Some(i.iter().zip(h).map(|(i, h)| ims3_eval::ranking::lrs(i / 100.0, h / 100.0, ims3_eval::ranking::LRS_WEIGHT)).collect::<Vec<_>>()),
        _ => None,
    };
    let summary = |v: Option<Vec<f64>>| v.filter(|v| !v.is_empty()).map(|v| ims3_eval::mean_std(&v));
    Scores { ior: summary(ior), hlr: summary(hlr), lrs: summary(lrs) }
}

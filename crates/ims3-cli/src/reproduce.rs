//! `ims3 reproduce <recipe>`: the whole method as one resumable command.
//!
//! A recipe (`recipes/<name>.toml`, or a path) names the dataset, the IPC, the fine-tuning recipe,
//! sampling, S3 and evaluation settings, and the paper's figures. Stages, each a run of this
//! binary, each recorded by `<run>/<stage>.done` so a finished stage is skipped:
//!
//! `finetune` (skipped by the recipes without IM) -> `sample` -> `select` -> `eval-<net>`...
//! -> `results/<recipe>/results.json` and `results.md` beside the paper's numbers.
//!
//! Every run writes `<run>/manifest.json`: command line, recipe, git revision, device, seeds,
//! input hashes and the time of each stage.

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context, Result, bail, ensure};
use serde::{Deserialize, Serialize};

const BUILTIN: [(&str, &str); 7] = [
    ("fashion-mnist-ipc10", include_str!("../../../recipes/fashion-mnist-ipc10.toml")),
    ("imagewoof-ipc10", include_str!("../../../recipes/imagewoof-ipc10.toml")),
    ("imagewoof-ipc10-dit", include_str!("../../../recipes/imagewoof-ipc10-dit.toml")),
    ("imagewoof-ipc10-im", include_str!("../../../recipes/imagewoof-ipc10-im.toml")),
    ("imagewoof-ipc10-s3", include_str!("../../../recipes/imagewoof-ipc10-s3.toml")),
    ("imagenette-ipc50", include_str!("../../../recipes/imagenette-ipc50.toml")),
    ("imageidc-ipc1", include_str!("../../../recipes/imageidc-ipc1.toml")),
];

pub const STAGES: [&str; 4] = ["finetune", "sample", "select", "eval"];

/// Where the inputs are; defaults are the `ims3 fetch` cache layout.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Assets {
    pub dit: Option<PathBuf>,
    pub vae: Option<PathBuf>,
    pub encoder: Option<PathBuf>,
    /// Dataset root holding train/ and val/.
    pub data: Option<PathBuf>,
    /// Head count for a non-standard DiT (tests).
    pub heads: Option<usize>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SampleSettings {
    #[serde(default = "d_cfg")]
    pub cfg_scale: f64,
    #[serde(default = "d_steps")]
    pub steps: String,
    #[serde(default = "d_batch")]
    pub batch: usize,
}
fn d_cfg() -> f64 {
    4.0
}
fn d_steps() -> String {
    "50".into()
}
fn d_batch() -> usize {
    10
}
impl Default for SampleSettings {
    fn default() -> Self {
        Self { cfg_scale: d_cfg(), steps: d_steps(), batch: d_batch() }
    }
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SelectSettings {
    /// Candidate subgroups per class (1 = no selection: the S3-free ablations).
    #[serde(default = "d_groups")]
    pub groups: usize,
    #[serde(default = "d_alpha")]
    pub alpha: f64,
    #[serde(default = "d_beta")]
    pub beta: f64,
    #[serde(default = "d_real_max")]
    pub real_max: usize,
}
fn d_groups() -> usize {
    5
}
fn d_alpha() -> f64 {
    0.4
}
fn d_beta() -> f64 {
    0.9
}
fn d_real_max() -> usize {
    200
}
impl Default for SelectSettings {
    fn default() -> Self {
        Self { groups: d_groups(), alpha: d_alpha(), beta: d_beta(), real_max: d_real_max() }
    }
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EvalSettings {
    #[serde(default = "d_nets")]
    pub nets: Vec<String>,
    #[serde(default = "d_seeds")]
    pub seeds: Vec<u64>,
    #[serde(default = "d_lr")]
    pub lr: f64,
    #[serde(default = "d_size")]
    pub size: usize,
    /// Override of the reference epoch count (tests; the reference sets it by IPC).
    #[serde(default)]
    pub epochs: Option<usize>,
}
fn d_nets() -> Vec<String> {
    vec!["resnet_ap10".into(), "resnet18".into()]
}
fn d_seeds() -> Vec<u64> {
    vec![0, 1, 2]
}
fn d_lr() -> f64 {
    0.1
}
fn d_size() -> usize {
    224
}
impl Default for EvalSettings {
    fn default() -> Self {
        Self { nets: d_nets(), seeds: d_seeds(), lr: d_lr(), size: d_size(), epochs: None }
    }
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Recipe {
    pub name: String,
    pub dataset: String,
    pub ipc: usize,
    /// Needs a GPU to finish in reasonable time; refused on CPU without --allow-cpu.
    #[serde(default = "d_true")]
    pub gpu: bool,
    /// IM fine-tuning (false: sample from the base DiT).
    #[serde(default = "d_true")]
    pub finetune: bool,
    /// `ims3 finetune --config` contents (TrainConfig keys).
    #[serde(default)]
    pub train: toml::Table,
    #[serde(default)]
    pub sample: SampleSettings,
    #[serde(default)]
    pub select: SelectSettings,
    #[serde(default)]
    pub eval: EvalSettings,
    #[serde(default)]
    pub assets: Assets,
    #[serde(default)]
    pub seed: u64,
    /// Image size fed to the VAE for fine-tuning (256 for DiT-XL/2-256).
    #[serde(default = "d_image_size")]
    pub image_size: usize,
    /// The paper's figure per evaluation network (REFERENCE.md section 7), top-1 %.
    #[serde(default)]
    pub paper: std::collections::BTreeMap<String, f64>,
}
fn d_true() -> bool {
    true
}
fn d_image_size() -> usize {
    256
}

impl Recipe {
    pub fn names() -> Vec<&'static str> {
        BUILTIN.iter().map(|(n, _)| *n).collect()
    }

    /// A recipe's text and where it came from (built-in name or path).
    pub fn text(name_or_path: &str) -> Result<(String, String)> {
        Ok(match BUILTIN.iter().find(|(n, _)| *n == name_or_path) {
            Some((_, t)) => (t.to_string(), format!("recipes/{name_or_path}.toml")),
            None if name_or_path.ends_with(".toml") => {
                (std::fs::read_to_string(name_or_path).with_context(|| format!("{name_or_path}: cannot read"))?, name_or_path.to_string())
            }
            None => bail!("unknown recipe '{name_or_path}' (known: {}; or a path to a .toml)", Self::names().join(", ")),
        })
    }

    /// The recipe's `kind` (absent: the ImageNet-subset pipeline).
    pub fn kind(text: &str) -> Option<String> {
        text.parse::<toml::Table>().ok()?.get("kind")?.as_str().map(str::to_string)
    }

    /// Parses and checks a recipe's text (`origin` names it in errors).
    pub fn parse(text: &str, origin: &str) -> Result<Self> {
        let r: Recipe = crate::parse_toml(text, origin)?;
        ensure!(r.ipc >= 1 && r.select.groups >= 1, "{origin}: ipc and select.groups must be at least 1");
        Ok(r)
    }
}

#[derive(clap::Args)]
pub struct ReproduceArgs {
    /// A recipe name (see --list) or a recipe .toml.
    pub recipe: Option<String>,
    /// List the recipes.
    #[arg(long)]
    pub list: bool,
    /// Rerun from this stage on (finetune, sample, select, eval).
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

/// Runs `ims3 --device <device> <args>` as stage `name` unless `<run_dir>/<name>.done` says it
/// finished before; writes that marker after a successful run. Returns (seconds, skipped).
///
/// `cpu_threads`: the CPU backend's worker threads for this stage (`RAYON_NUM_THREADS`), so that
/// stages running side by side share the cores instead of each taking all of them; a
/// `RAYON_NUM_THREADS` the user set wins.
pub(crate) fn run_stage(exe: &Path, device: &str, run_dir: &Path, name: &str, args: &[String], cpu_threads: Option<usize>) -> Result<(f64, bool)> {
    let marker = run_dir.join(format!("{name}.done"));
    if marker.is_file() {
        eprintln!("reproduce: {name}: done before, skipped");
        return Ok((0.0, true));
    }
    eprintln!("reproduce: {name}: ims3 {}", args.join(" "));
    let t = Instant::now();
    let mut cmd = std::process::Command::new(exe);
    cmd.arg("--device").arg(device).args(args);
    if let Some(n) = cpu_threads.filter(|_| std::env::var_os("RAYON_NUM_THREADS").is_none()) {
        cmd.env("RAYON_NUM_THREADS", n.max(1).to_string());
    }
    let status = cmd.status()?;
    ensure!(status.success(), "stage {name} failed ({status}); fix the cause and rerun the same command to continue");
    let secs = t.elapsed().as_secs_f64();
    ims3_images::atomic_write(&marker, format!("{{\"seconds\": {secs}}}\n").as_bytes())?;
    Ok((secs, false))
}

/// `HEAD`'s commit, with `-dirty` appended (as `git describe --dirty` does) when tracked files
/// outside `results/` have uncommitted changes, so a record never claims a commit it was not run
/// from. Jobs call it before they write anything (their own outputs under `results/` are
/// tracked and would otherwise mark every rerun dirty).
pub(crate) fn git_revision() -> Option<String> {
    let out = std::process::Command::new("git").args(["rev-parse", "HEAD"]).output().ok()?;
    if !out.status.success() {
        return None;
    }
    let rev = String::from_utf8_lossy(&out.stdout).trim().to_string();
    let dirty = std::process::Command::new("git")
        .args(["status", "--porcelain", "--untracked-files=no", "--", ":(top)", ":(top,exclude)results"])
        .output()
        .ok()
        .is_some_and(|o| o.status.success() && !o.stdout.is_empty());
    Some(if dirty { format!("{rev}-dirty") } else { rev })
}

pub fn run(a: ReproduceArgs, device: &str) -> Result<()> {
    if a.list || a.recipe.is_none() {
        for n in Recipe::names() {
            let (text, origin) = Recipe::text(n)?;
            if Recipe::kind(&text).is_some() {
                let r: crate::ablation::AblationRecipe = crate::parse_toml(&text, &origin)?;
                println!("{n:<22} {} IPC {}, CPU job: random real, DiT, IM, S3, IMS3 side by side", r.dataset, r.ipc);
                continue;
            }
            let r = Recipe::parse(&text, &origin)?;
            println!("{n:<22} {} IPC {}, {}{}", r.dataset, r.ipc, if r.finetune { "IM" } else { "DiT" }, if r.select.groups > 1 { " + S3" } else { "" });
        }
        return Ok(());
    }
    let name = a.recipe.as_deref().expect("checked");
    let (text, origin) = Recipe::text(name)?;
    match Recipe::kind(&text).as_deref() {
        None => {}
        Some("pixel-ablation") => {
            let r: crate::ablation::AblationRecipe = crate::parse_toml(&text, &origin)?;
            return crate::ablation::run(r, &text, &a, device);
        }
        Some(k) => bail!("{origin}: unknown recipe kind '{k}' (known: pixel-ablation, or none for the ImageNet-subset pipeline)"),
    }
    let recipe = Recipe::parse(&text, &origin)?;
    let revision = git_revision(); // before any output is written
    if recipe.gpu && !device.starts_with("cuda") && !device.starts_with("wgpu") && !a.allow_cpu {
        bail!("recipe {} needs a GPU (it fine-tunes and samples DiT-XL/2); run with --device cuda:0, or pass --allow-cpu to run it on the CPU anyway", recipe.name);
    }
    let from = match a.from.as_deref() {
        None => None,
        Some(s) => Some(STAGES.iter().position(|x| *x == s).with_context(|| format!("unknown stage '{s}' (stages: {})", STAGES.join(", ")))?),
    };
    let run_dir = a.run_dir.clone().unwrap_or_else(|| PathBuf::from("runs").join(&recipe.name));
    let results = a.results.clone().unwrap_or_else(|| PathBuf::from("results").join(&recipe.name));
    std::fs::create_dir_all(&run_dir)?;
    let cache = a.cache.clone().unwrap_or_else(ims3_fetch::default_cache);
    let spec = ims3_datasets::DatasetSpec::get(&recipe.dataset)?;
    let archive = spec.fastai_archive.clone().unwrap_or_else(|| spec.name.clone());
    let dit = recipe.assets.dit.clone().unwrap_or_else(|| cache.join("DiT-XL-2-256x256.pt"));
    let vae = recipe.assets.vae.clone().unwrap_or_else(|| cache.join("sd-vae-ft-ema"));
    let encoder = recipe.assets.encoder.clone().unwrap_or_else(|| cache.join("resnet18-f37072fd.pth"));
    let data = recipe.assets.data.clone().unwrap_or_else(|| cache.join(&archive));
    let missing: Vec<String> = [&dit, &vae, &encoder, &data].iter().filter(|p| !p.exists()).map(|p| p.display().to_string()).collect();
    ensure!(missing.is_empty(), "missing inputs: {} (fetch them with `ims3 fetch all`, or set [assets] in the recipe)", missing.join(", "));
    let manifest = ims3_datasets::Manifest::build(&data, &spec, &["train", "val"])?;

    if let Some(k) = from {
        for s in &STAGES[k..] {
            for e in std::fs::read_dir(&run_dir)?.flatten() {
                let n = e.file_name().to_string_lossy().into_owned();
                if n.starts_with(s) && n.ends_with(".done") {
                    std::fs::remove_file(e.path())?;
                }
            }
        }
    }
    let exe = std::env::current_exe()?;
    let mut timings: Vec<(String, f64, bool)> = Vec::new();
    let heads: Vec<String> = recipe.assets.heads.map(|h| vec!["--heads".into(), h.to_string()]).unwrap_or_default();
    let mut stage = |name: &str, args: Vec<String>| -> Result<()> {
        let (secs, skipped) = run_stage(&exe, device, &run_dir, name, &args, None)?;
        timings.push((name.into(), secs, skipped));
        Ok(())
    };
    let p = |x: &Path| x.display().to_string();
    let mut finetuned = None;
    if recipe.finetune {
        let cfg_path = run_dir.join("train.toml");
        let mut train = recipe.train.clone();
        train.entry("seed").or_insert(toml::Value::Integer(recipe.seed as i64));
        ims3_images::atomic_write(&cfg_path, toml::to_string(&train)?.as_bytes())?;
        let out = run_dir.join("finetune");
        let mut args = vec!["finetune".into(), "--dit".into(), p(&dit), "--vae".into(), p(&vae), "--data".into(), p(&data), "--dataset".into(), recipe.dataset.clone(), "--out".into(), p(&out), "--train-config".into(), p(&cfg_path), "--image-size".into(), recipe.image_size.to_string()];
        args.extend(heads.clone());
        stage("finetune", args)?;
        let ck = ims3_im::list_checkpoints(&out.join("checkpoints"))?.pop().map(|(_, p)| p).context("fine-tuning left no checkpoint")?;
        finetuned = Some(ck);
    }
    let cands = run_dir.join("candidates");
    let per_class = recipe.select.groups * recipe.ipc;
    let mut args = vec![
        "sample".into(), "--dit".into(), p(&dit), "--vae".into(), p(&vae), "--dataset".into(), recipe.dataset.clone(),
        "--per-class".into(), per_class.to_string(), "--cfg-scale".into(), recipe.sample.cfg_scale.to_string(),
        "--steps".into(), recipe.sample.steps.clone(), "--batch".into(), recipe.sample.batch.to_string(),
        "--seed".into(), recipe.seed.to_string(), "--out".into(), p(&cands),
    ];
    if let Some(ck) = &finetuned {
        args.extend(["--finetuned".into(), p(ck)]);
    }
    args.extend(heads.clone());
    stage("sample", args)?;
    let wnids: Vec<String> = spec.classes.iter().map(|c| c.wnid.clone()).collect();
    let selected = run_dir.join("selected");
    stage(
        "select",
        vec![
            "select".into(), "--encoder".into(), p(&encoder), "--real".into(), p(&data.join("train")), "--candidates".into(), p(&cands),
            "--out".into(), p(&selected), "--classes".into(), wnids.join(","), "--groups".into(), recipe.select.groups.to_string(),
            "--ipc".into(), recipe.ipc.to_string(), "--alpha".into(), recipe.select.alpha.to_string(), "--beta".into(),
            recipe.select.beta.to_string(), "--real-max".into(), recipe.select.real_max.to_string(), "--seed".into(), recipe.seed.to_string(),
        ],
    )?;
    let mut rows = Vec::new();
    for net in &recipe.eval.nets {
        let out = results.join(net);
        let mut args = vec![
            "eval".into(), "--distilled".into(), p(&selected.join("final_distilled/train")), "--test".into(), p(&data.join("val")),
            "--dataset".into(), recipe.dataset.clone(), "--net".into(), net.clone(), "--size".into(), recipe.eval.size.to_string(),
            "--ipc".into(), recipe.ipc.to_string(), "--lr".into(), recipe.eval.lr.to_string(),
            "--seeds".into(), recipe.eval.seeds.iter().map(u64::to_string).collect::<Vec<_>>().join(","), "--out".into(), p(&out),
        ];
        if let Some(e) = recipe.eval.epochs {
            args.extend(["--epochs".into(), e.to_string()]);
        }
        stage(&format!("eval-{net}"), args)?;
        let rep: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(out.join("eval.json"))?)?;
        rows.push((net.clone(), rep));
    }

    // Results beside the paper.
    let mut md = format!(
        "# {}\n\n{} ({}), IPC {}, {}{}; {} seeds. Test split: {} real images.\n\n| network | final epoch | best epoch (selected on test) | paper |\n|---|---|---|---|\n",
        recipe.name, spec.name, manifest.layout, recipe.ipc, if recipe.finetune { "IM fine-tuned DiT" } else { "pretrained DiT" },
        if recipe.select.groups > 1 { format!(" + S3 over {} subgroups", recipe.select.groups) } else { ", no selection".into() },
        recipe.eval.seeds.len(), manifest.splits[1].files
    );
    let pm = |v: &serde_json::Value| format!("{:.2} +- {:.2}", v[0].as_f64().unwrap_or(f64::NAN), v[1].as_f64().unwrap_or(f64::NAN));
    for (net, rep) in &rows {
        let paper = recipe.paper.get(net).map_or("-".to_string(), |v| format!("{v:.1}"));
        md.push_str(&format!("| {} | {} | {} | {paper} |\n", rep["net"].as_str().unwrap_or(net), pm(&rep["final_top1"]), pm(&rep["best_top1"])));
    }
    md.push_str(&format!("\nProduced by: `ims3 --device {device} reproduce {}` (run directory {}).\n", a.recipe.as_deref().unwrap_or_default(), run_dir.display()));
    let summary = serde_json::json!({
        "recipe": recipe.name,
        "dataset": spec.name,
        "layout": manifest.layout,
        "ipc": recipe.ipc,
        "results": rows.iter().map(|(n, r)| serde_json::json!({"net": n, "final_top1": r["final_top1"], "best_top1": r["best_top1"], "paper": recipe.paper.get(n)})).collect::<Vec<_>>(),
    });
    ims3_images::atomic_write(&results.join("results.json"), serde_json::to_string_pretty(&summary)?.as_bytes())?;
    ims3_images::atomic_write(&results.join("results.md"), md.as_bytes())?;
    let run_manifest = serde_json::json!({
        "command": std::env::args().collect::<Vec<_>>(),
        "recipe": text,
        "git_revision": revision,
        "device": device,
        "seeds": {"pipeline": recipe.seed, "eval": recipe.eval.seeds},
        "inputs": {"dit": p(&dit), "vae": p(&vae), "encoder": p(&encoder), "data": manifest},
        "stages": timings.iter().map(|(n, s, skipped)| serde_json::json!({"stage": n, "seconds": s, "skipped": skipped})).collect::<Vec<_>>(),
    });
    ims3_images::atomic_write(&run_dir.join("manifest.json"), serde_json::to_string_pretty(&run_manifest)?.as_bytes())?;
    print!("{md}");
    Ok(())
}

//! Recipes (`recipes/*.toml`, or any path): typed settings of a whole run.
//!
//! Two kinds share the stage settings ([`SampleSettings`], [`SelectSettings`], the `[train]`
//! table of `TrainConfig` keys):
//! - [`SubsetRecipe`] (no `kind` key): the ImageNet-subset pipeline of the paper with the real
//!   DiT-XL/2, SD-VAE and ResNet-18 (`subset.rs`);
//! - [`AblationRecipe`] (`kind = "pixel-ablation"`): IMS3 and its ablations side by side on a
//!   small dataset the package registries ship, on the CPU (`ablation.rs`).

use std::collections::BTreeMap;
use std::path::PathBuf;

use anyhow::{Context, Result, bail, ensure};
use ims3_diffusion::Respacing;
use ims3_eval::NetKind;
use serde::{Deserialize, Serialize};

use crate::config_file::parse_toml;

/// The built-in recipes (`recipes/*.toml`), by name.
macro_rules! builtin {
    ($($name:literal),* $(,)?) => {
        [$(($name, include_str!(concat!("../../../../recipes/", $name, ".toml")))),*]
    };
}

const BUILTIN: [(&str, &str); 25] = builtin![
    "fashion-mnist-ipc10",
    "fashion-mnist-latent-ipc10",
    "imageidc-full",
    "imageidc-ipc1",
    "imageidc-ipc1-random",
    "imagenet100-ipc10",
    "imagenet100-ipc10-random",
    "imagenet1k-ipc10",
    "imagenet1k-ipc10-random",
    "imagenette-full",
    "imagenette-ipc10",
    "imagenette-ipc10-random",
    "imagenette-ipc50",
    "imagenette-ipc50-random",
    "imagewoof-full",
    "imagewoof-ipc10",
    "imagewoof-ipc10-dit",
    "imagewoof-ipc10-im",
    "imagewoof-ipc10-random",
    "imagewoof-ipc10-reference",
    "imagewoof-ipc10-s3",
    "imagewoof-ipc20",
    "imagewoof-ipc20-random",
    "imagewoof-ipc50",
    "imagewoof-ipc50-random",
];

/// Candidate sampling (reference: CFG 4.0, 50 respaced DDPM steps, chunks of 10).
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SampleSettings {
    #[serde(default = "d_cfg")]
    pub cfg_scale: f64,
    #[serde(default = "d_steps")]
    pub steps: Respacing,
    #[serde(default = "d_batch")]
    pub batch: usize,
    /// The DiT's precision while sampling (f32, the default, or bf16).
    #[serde(default)]
    pub dtype: ims3_dit::Precision,
}
fn d_cfg() -> f64 {
    4.0
}
fn d_steps() -> Respacing {
    Respacing::Sections(vec![50])
}
fn d_batch() -> usize {
    10
}
impl Default for SampleSettings {
    fn default() -> Self {
        Self { cfg_scale: d_cfg(), steps: d_steps(), batch: d_batch(), dtype: Default::default() }
    }
}

/// S3 (run.sh: G = 5 subgroups, alpha 0.4, beta 0.9, 200 real images per class).
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

/// Where a subset recipe's inputs are; defaults are the `ims3 fetch` cache layout.
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

/// The evaluation of a subset recipe (the reference protocol; networks by their ids).
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EvalSettings {
    #[serde(default = "d_nets")]
    pub nets: Vec<NetKind>,
    #[serde(default = "d_seeds")]
    pub seeds: Vec<u64>,
    /// The learning rate (default: the protocol's, 0.1 for hard labels).
    #[serde(default)]
    pub lr: Option<f64>,
    #[serde(default = "d_size")]
    pub size: usize,
    /// Override of the reference epoch count (tests; the reference sets it by IPC).
    #[serde(default)]
    pub epochs: Option<usize>,
    /// hard (the reference's protocol) or soft (RDED's; the teacher is the S3 encoder,
    /// torchvision ResNet-18 IMAGENET1K_V1, restricted to the dataset's classes).
    #[serde(default)]
    pub labels: crate::commands::eval::LabelKind,
}
fn d_nets() -> Vec<NetKind> {
    vec![NetKind::ResnetAp10, NetKind::Resnet18]
}
fn d_seeds() -> Vec<u64> {
    vec![0, 1, 2]
}
fn d_size() -> usize {
    224
}
impl Default for EvalSettings {
    fn default() -> Self {
        Self { nets: d_nets(), seeds: d_seeds(), lr: None, size: d_size(), epochs: None, labels: Default::default() }
    }
}

/// How a subset recipe's distilled set is made.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Method {
    /// Generated by the (fine-tuned) DiT, selected by S3 when `select.groups > 1`.
    #[default]
    Diffusion,
    /// IPC real training images per class, drawn with the recipe's seed: the baseline every
    /// distilled set must beat (DD-Ranking's "random").
    RandomReal,
    /// The whole training split (the upper end of DD-Ranking's hard-label recovery, HLR);
    /// `ipc` is ignored, epochs follow the reference's rule for the split's images per class.
    FullReal,
}

/// Which class label the DiT is conditioned on.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum DitLabels {
    /// The class's ImageNet-1K index (what the DiT was pretrained with).
    #[default]
    Imagenet,
    /// The class folder's index among the sorted folders: what the reference's `run.sh`
    /// fine-tunes with by accident.
    FolderIndex,
}

/// The paper's pipeline on an ImageNet subset.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SubsetRecipe {
    pub name: String,
    pub dataset: String,
    pub ipc: usize,
    /// How the distilled set is made.
    #[serde(default)]
    pub method: Method,
    /// The label the DiT is fine-tuned with (the reference: folder indices).
    #[serde(default)]
    pub finetune_labels: DitLabels,
    /// The label candidates are sampled with (the reference: ImageNet indices).
    #[serde(default)]
    pub sample_labels: DitLabels,
    /// The random-real recipe of the same dataset, IPC and protocol: its results give the
    /// improvement over random (IOR) in this recipe's table.
    #[serde(default)]
    pub random_baseline: Option<String>,
    /// The full-data recipe of the same dataset and protocol: with it the table also gives
    /// DD-Ranking's hard-label recovery (HLR) and label-robust score (LRS).
    #[serde(default)]
    pub full_baseline: Option<String>,
    /// Needs a GPU to finish in reasonable time; refused on CPU without --allow-cpu.
    #[serde(default = "d_true")]
    pub gpu: bool,
    /// IM fine-tuning (false: sample from the base DiT).
    #[serde(default = "d_true")]
    pub finetune: bool,
    /// `ims3 finetune --train-config` contents (TrainConfig keys).
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
    /// The paper's figure per evaluation network id (REFERENCE.md section 7), top-1 %.
    #[serde(default)]
    pub paper: BTreeMap<String, f64>,
}
fn d_true() -> bool {
    true
}
fn d_image_size() -> usize {
    256
}

/// Inputs of the small-image job.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PixelAssets {
    /// The pretrained pixel-space DiT (`ims3 pretrain`), relative to the working directory.
    pub dit: PathBuf,
    /// The ConvNet encoder (`ims3 train-encoder`).
    pub encoder: PathBuf,
    /// A `train-vae` folder when the DiT works in its latents (`pretrain --vae`): fine-tuning
    /// draws the VAE's latents of the fine-tuning images and samples are decoded through it.
    /// Without it the DiT works in pixels.
    #[serde(default)]
    pub vae: Option<PathBuf>,
    /// Folder with the IDX files (default: Debian's /usr/share/datasets/fashion-mnist if
    /// present, else `<cache>/fashion-mnist` from `ims3 fetch`).
    #[serde(default)]
    pub idx: Option<PathBuf>,
}

/// The evaluation of the small-image job: one network, several seeds.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PixelEval {
    pub net: NetKind,
    pub width: usize,
    pub epochs: usize,
    pub batch: usize,
    pub lr: f64,
    pub seeds: Vec<u64>,
    /// Test every this many epochs (and after the last): the best-epoch column's grid.
    pub eval_every: usize,
    /// Independent stages (the two samplings, the two selections, the evaluations) run this
    /// many at once, each a process of its own sharing the cores.
    #[serde(default = "one")]
    pub parallel: usize,
}
fn one() -> usize {
    1
}

/// The report's feature measures.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReportSettings {
    /// Real training images per class encoded for the plot and coverage/density.
    pub real_per_class: usize,
    /// k of the k-NN balls (Naeem et al. use 5).
    pub k: usize,
}

/// A published figure, quoted with where it was found.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Literature {
    pub method: String,
    pub top1: String,
    pub source: String,
}

/// IMS3 and its ablations side by side on a small dataset, on the CPU.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AblationRecipe {
    pub name: String,
    pub kind: String,
    pub dataset: String,
    pub ipc: usize,
    #[serde(default)]
    pub seed: u64,
    pub assets: PixelAssets,
    /// How the real training split is cut (validation, fine-tuning set).
    pub data: super::holdout::Holdout,
    /// TrainConfig keys for the IM fine-tuning.
    #[serde(default)]
    pub train: toml::Table,
    #[serde(default)]
    pub sample: SampleSettings,
    #[serde(default)]
    pub select: SelectSettings,
    pub eval: PixelEval,
    pub report: ReportSettings,
    #[serde(default)]
    pub literature: Vec<Literature>,
}

/// A parsed recipe of either kind, with the text it was read from.
pub enum Recipe {
    Subset(SubsetRecipe),
    Ablation(AblationRecipe),
}

/// The `kind` of a pixel-ablation recipe.
pub const PIXEL_ABLATION: &str = "pixel-ablation";

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

    /// Parses and checks a recipe's text (`origin` names it in errors); the `kind` key picks
    /// the type.
    pub fn parse(text: &str, origin: &str) -> Result<Self> {
        let kind = text.parse::<toml::Table>().ok().and_then(|t| t.get("kind").and_then(|k| k.as_str().map(str::to_string)));
        let recipe = match kind.as_deref() {
            None => Recipe::Subset(parse_toml(text, origin)?),
            Some(PIXEL_ABLATION) => Recipe::Ablation(parse_toml(text, origin)?),
            Some(k) => bail!("{origin}: unknown recipe kind '{k}' (known: {PIXEL_ABLATION}, or none for the ImageNet-subset pipeline)"),
        };
        let (ipc, select, train) = match &recipe {
            Recipe::Subset(r) => (r.ipc, &r.select, &r.train),
            Recipe::Ablation(r) => (r.ipc, &r.select, &r.train),
        };
        ensure!(ipc >= 1 && select.groups >= 1, "{origin}: ipc and select.groups must be at least 1");
        if let Recipe::Ablation(r) = &recipe {
            ensure!(r.select.groups >= 2, "{origin}: select.groups must be at least 2 (S3 needs a choice)");
        }
        // The [train] table must be a valid TrainConfig now, not when fine-tuning starts.
        parse_toml::<ims3_im::TrainConfig>(&toml::to_string(train)?, &format!("{origin} [train]"))?;
        Ok(recipe)
    }

    /// The recipe's `name` (its run and results folders' name).
    pub fn name(&self) -> &str {
        match self {
            Recipe::Subset(r) => &r.name,
            Recipe::Ablation(r) => &r.name,
        }
    }

    /// One line for `--list`.
    pub fn summary(&self) -> String {
        match self {
            Recipe::Subset(r) if r.method == Method::RandomReal => format!("{} IPC {}, random real images (the baseline)", r.dataset, r.ipc),
            Recipe::Subset(r) if r.method == Method::FullReal => format!("{}, the whole training split (the full-data bound)", r.dataset),
            Recipe::Subset(r) => format!(
                "{} IPC {}, {}{}{}",
                r.dataset,
                r.ipc,
                if r.finetune { "IM" } else { "DiT" },
                if r.select.groups > 1 { " + S3" } else { "" },
                if r.finetune_labels == DitLabels::FolderIndex { " (fine-tuned on folder indices, as run.sh)" } else { "" }
            ),
            Recipe::Ablation(r) => format!("{} IPC {}, CPU job: random real, DiT, IM, S3, IMS3 side by side", r.dataset, r.ipc),
        }
    }

    /// The `[train]` table as the fine-tuning stage's `--train-config` file text: the recipe's
    /// keys, and its seed unless the table sets one.
    pub fn train_toml(train: &toml::Table, seed: u64) -> Result<String> {
        let mut train = train.clone();
        train.entry("seed").or_insert(toml::Value::Integer(seed as i64));
        Ok(toml::to_string(&train)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_builtin_recipe_parses() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../recipes");
        let mut files: Vec<String> = std::fs::read_dir(&dir).unwrap().flatten().filter_map(|e| e.file_name().to_str()?.strip_suffix(".toml").map(str::to_string)).collect();
        files.sort();
        let mut names: Vec<String> = Recipe::names().iter().map(|n| n.to_string()).collect();
        names.sort();
        assert_eq!(files, names, "every recipes/*.toml is built in");
        for name in Recipe::names() {
            let (text, origin) = Recipe::text(name).unwrap();
            Recipe::parse(&text, &origin).unwrap_or_else(|e| panic!("{name}: {e:#}"));
        }
        let e = Recipe::parse("name = \"x\"\ndataset = \"imagewoof\"\nipc = 10\n[eval]\nnets = [\"vgg\"]\n", "r.toml").err().unwrap();
        assert!(format!("{e:#}").contains("unknown network 'vgg'"), "{e:#}");
        let e = Recipe::parse("name = \"x\"\ndataset = \"imagewoof\"\nipc = 10\n[train]\nbatch = 3\n", "r.toml").err().unwrap();
        assert!(format!("{e:#}").contains("r.toml [train]") && format!("{e:#}").contains("batch"), "{e:#}");
    }
}

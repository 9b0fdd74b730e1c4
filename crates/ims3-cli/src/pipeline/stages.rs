//! The stage commands both recipe kinds run, built from the settings they share; each starts
//! from the subcommand's own defaults (`crate::args::with_defaults`) and a recipe kind sets
//! what is its own (the VAE, where the real images are, a head count) on the result.

use std::path::Path;

use super::recipe::{SampleSettings, SelectSettings};
use crate::args::with_defaults;
use crate::commands::{eval, finetune, sample, select};

/// What a DiT is fine-tuned on.
pub enum TrainingSet<'a> {
    /// A dataset root (`<root>/train/<wnid>/*`) encoded through the SD-VAE in `vae`.
    Latents { data: &'a Path, vae: &'a Path },
    /// An IDX folder (a pixel-space DiT).
    Idx(&'a Path),
}

/// What an evaluation tests on.
pub enum TestSet<'a> {
    /// `<dir>/<wnid>/*` real images.
    Folder(&'a Path),
    /// The `t10k-*` split of an IDX folder.
    Idx(&'a Path),
}

/// What every stage of a recipe shares.
pub struct Shared<'a> {
    pub dataset: &'a str,
    pub ipc: usize,
    pub seed: u64,
    pub sample: &'a SampleSettings,
    pub select: &'a SelectSettings,
}

impl Shared<'_> {
    /// IM fine-tuning of `dit` on `set` with the recipe file `train_config`, into `out`.
    pub fn finetune(&self, dit: &Path, set: TrainingSet, train_config: &Path, out: &Path) -> finetune::Args {
        let mut required = vec![("--dit", dit.into()), ("--out", out.into())];
        match set {
            TrainingSet::Latents { data, vae } => required.extend([("--data", data.into()), ("--vae", vae.into())]),
            TrainingSet::Idx(idx) => required.push(("--idx", idx.into())),
        }
        let mut a: finetune::Args = with_defaults("finetune", &required);
        a.dataset = self.dataset.to_string();
        a.train_config = Some(train_config.to_path_buf());
        a
    }

    /// G x IPC candidates per class from `dit` (with `finetuned` applied) into `out`.
    pub fn sample(&self, dit: &Path, finetuned: Option<&Path>, out: &Path) -> sample::Args {
        let mut a: sample::Args = with_defaults("sample", &[("--dit", dit.into()), ("--out", out.into())]);
        a.finetuned = finetuned.map(Path::to_path_buf);
        a.dataset = self.dataset.to_string();
        a.per_class = self.select.groups * self.ipc;
        a.cfg_scale = self.sample.cfg_scale;
        a.steps = self.sample.steps.clone();
        a.batch = self.sample.batch;
        a.dtype = self.sample.dtype;
        a.seed = self.seed;
        a
    }

    /// An evaluation of the distilled folder `distilled` with `net` on `test`, written to `out`.
    pub fn eval(&self, distilled: &Path, net: &ims3_eval::NetKind, test: TestSet, out: &Path) -> eval::Args {
        let test = match test {
            TestSet::Folder(dir) => ("--test", dir.into()),
            TestSet::Idx(dir) => ("--test-idx", dir.into()),
        };
        let mut a: eval::Args = with_defaults("eval", &[("--distilled", distilled.into()), ("--out", out.into()), test]);
        a.dataset = self.dataset.to_string();
        a.net = net.clone();
        a.ipc = self.ipc;
        a
    }

    /// S3 over the candidates in `candidates` with `encoder`, for `classes` in order, into `out`.
    pub fn select(&self, candidates: &Path, encoder: &Path, classes: Vec<String>, out: &Path) -> select::Args {
        let mut a: select::Args = with_defaults("select", &[("--candidates", candidates.into()), ("--out", out.into())]);
        a.encoder = Some(encoder.to_path_buf());
        a.dataset = self.dataset.to_string();
        a.classes = classes;
        a.groups = self.select.groups;
        a.ipc = self.ipc;
        a.alpha = self.select.alpha;
        a.beta = self.select.beta;
        a.real_max = self.select.real_max;
        a.seed = self.seed;
        a
    }
}

//! `ims3 eval`: the distilled-set protocol (`ims3_eval`): train an evaluation network on the
//! distilled images once per seed, test on real images; `eval.json` and `eval.md` in --out.

use std::path::PathBuf;

use anyhow::{Context, Result, bail, ensure};
use ims3_backend::DeviceSpec;
use ims3_eval::{EvalConfig, EvalReport, ImageSet, NetKind};
use ims3_nets::Norm;
use serde::Serialize;

#[derive(clap::Args, Debug, Clone, PartialEq, Serialize)]
pub struct Args {
    /// Distilled images: `<dir>/<wnid>/*` (e.g. final_distilled/train from `ims3 select`).
    #[arg(long)]
    pub distilled: PathBuf,
    /// Real test images: `<dir>/<wnid>/*` (e.g. imagewoof2/val).
    #[arg(long, required_unless_present = "test_idx")]
    pub test: Option<PathBuf>,
    /// Instead of --test: an IDX folder (Fashion-MNIST); tests on its t10k-* images with the
    /// grey protocol (one channel normalised with the train-* statistics, no colour
    /// augmentations, test images as they are). Labels map to classes through --dataset.
    #[arg(long, conflicts_with = "test")]
    pub test_idx: Option<PathBuf>,
    /// Batch size (reference 64).
    #[arg(long)]
    pub batch: Option<usize>,
    /// ConvNet width (IDC 128).
    #[arg(long)]
    pub width: Option<usize>,
    /// Optional validation images held out from the real training set, for honest epoch selection.
    #[arg(long)]
    pub val: Option<PathBuf>,
    /// Dataset spec (class order): imagewoof, imagenette, imageidc, or a spec .toml.
    #[arg(long, default_value = "imagewoof")]
    pub dataset: String,
    /// resnet_ap10, resnet18 or convnet1..6.
    #[arg(long, default_value = "resnet_ap10")]
    pub net: NetKind,
    /// Input size in pixels (reference 224).
    #[arg(long, default_value_t = 224)]
    pub size: usize,
    /// Images per class of the distilled set (sets the reference epoch count).
    #[arg(long, default_value_t = 10)]
    pub ipc: usize,
    /// Override the epoch count (reference: 3000/2000/1500/1000 by IPC).
    #[arg(long)]
    pub epochs: Option<usize>,
    /// Test every N epochs (reference: epochs / 100).
    #[arg(long)]
    pub eval_every: Option<usize>,
    /// SGD learning rate (IMS3 0.1; Minimax 0.01).
    #[arg(long, default_value_t = 0.1)]
    pub lr: f64,
    /// Training seeds, comma separated (one network per seed).
    #[arg(long, value_delimiter = ',', default_value = "0,1,2")]
    pub seeds: Vec<u64>,
    /// instance (the reference's) or batch.
    #[arg(long, default_value = "instance")]
    pub norm: Norm,
    #[arg(long)]
    pub out: PathBuf,
}

pub fn run(a: Args, device: &DeviceSpec) -> Result<()> {
    let spec = ims3_datasets::DatasetSpec::get(&a.dataset)?;
    let classes: Vec<String> = spec.classes.iter().map(|c| c.wnid.clone()).collect();
    let idx = match &a.test_idx {
        Some(dir) => Some((ims3_images::idx::IdxSplit::read(dir, "train")?, ims3_images::idx::IdxSplit::read(dir, "t10k")?)),
        None => None,
    };
    let mut cfg = match &idx {
        Some((train, _)) => {
            let (mean, std) = ims3_images::idx::grey_stats(&train.pixels);
            EvalConfig::grey(a.net.clone(), a.size, a.ipc, mean, std)
        }
        None => EvalConfig::reference(a.net.clone(), a.size, a.ipc),
    };
    if let Some(b) = a.batch {
        ensure!(b > 0, "--batch must be at least 1");
        cfg.batch_size = b;
    }
    if let Some(w) = a.width {
        cfg.convnet_width = w;
    }
    if let Some(e) = a.epochs {
        ensure!(e > 0, "--epochs must be at least 1");
        cfg = cfg.with_epochs(e);
    }
    if let Some(n) = a.eval_every {
        ensure!(n > 0, "--eval-every must be at least 1");
        cfg.eval_every = n;
    }
    cfg.lr = a.lr;
    cfg.norm = a.norm;
    let train = ImageSet::read(&a.distilled, &classes)?;
    let test = match (&idx, &a.test) {
        (Some((_, t10k)), _) => {
            let mut set = ImageSet { classes: classes.clone(), ..Default::default() };
            for i in 0..t10k.len() {
                let label = t10k.labels[i] as i64;
                let k = spec
                    .position_of_imagenet(label)
                    .with_context(|| format!("{}: test label {label} is not a class of {}", a.test_idx.as_ref().expect("matched").display(), spec.name))?;
                set.images.push(t10k.rgb8(i));
                set.labels.push(k);
            }
            set
        }
        (None, Some(dir)) => ImageSet::read(dir, &classes)?,
        (None, None) => bail!("--test or --test-idx is needed"),
    };
    let val = a.val.as_ref().map(|v| ImageSet::read(v, &classes)).transpose()?;
    let device = device.open()?;
    eprintln!("eval: {} on {} distilled images, {} test images, {} epochs x {} seeds", cfg.net, train.len(), test.len(), cfg.epochs, a.seeds.len());
    let pb = ims3_util::progress_bar((cfg.epochs * a.seeds.len()) as u64, "eval", true);
    let mut results = Vec::new();
    for &seed in &a.seeds {
        results.push(ims3_eval::train_and_eval(&train, &test, val.as_ref(), &cfg, seed, &device, Some(&pb))?);
    }
    pb.finish_and_clear();
    let title = format!("{} on {} ({} IPC)", cfg.net, spec.name, a.ipc);
    let report = EvalReport::new(&title, &cfg, &train, &test, results, &super::command_line().join(" "));
    report.write(&a.out)?;
    print!("{}", report.markdown());
    Ok(())
}

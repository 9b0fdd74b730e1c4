//! `ims3 train-encoder`: the small-image encoder of S3 (a ConvNet classifier trained on a whole
//! IDX training set, `ims3_features::fit_classifier`), tested on the IDX test split and saved
//! with its config and training record in the header.

use std::path::PathBuf;

use anyhow::{Result, ensure};
use ims3_backend::DeviceSpec;
use ims3_features::{ClassifierSpec, FitOptions, GreySet, classifier_accuracy, fit_classifier, save_classifier};
use ims3_nets::Norm;

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Folder with train-* and t10k-* IDX files (Debian: /usr/share/datasets/fashion-mnist).
    #[arg(long)]
    pub idx: PathBuf,
    /// Output .safetensors file.
    #[arg(long)]
    pub out: PathBuf,
    #[arg(long, default_value_t = 3)]
    pub depth: usize,
    #[arg(long, default_value_t = 128)]
    pub width: usize,
    #[arg(long, default_value_t = 2)]
    pub epochs: usize,
    #[arg(long, default_value_t = 128)]
    pub batch: usize,
    #[arg(long, default_value_t = 0.01)]
    pub lr: f64,
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Train on the first N images only (quick runs, tests).
    #[arg(long)]
    pub limit: Option<usize>,
}

pub fn run(a: Args, device: &DeviceSpec) -> Result<()> {
    let started = std::time::Instant::now();
    let train = ims3_images::idx::IdxSplit::read(&a.idx, "train")?;
    let test = ims3_images::idx::IdxSplit::read(&a.idx, "t10k")?;
    ensure!(train.height == train.width, "{}: images are {}x{}, square ones needed", a.idx.display(), train.height, train.width);
    let n = a.limit.unwrap_or(train.len()).min(train.len());
    let side = train.height;
    let classes = train.labels.iter().copied().max().unwrap_or(0) as usize + 1;
    // Normalisation from the training pixels used.
    let px = &train.pixels[..n * side * side];
    let (mean, std) = ims3_images::idx::grey_stats(px);
    let spec = ClassifierSpec { depth: a.depth, width: a.width, channels: 1, im_size: side, num_classes: classes, norm: Norm::Instance, mean, std };
    let opts = FitOptions { epochs: a.epochs, batch_size: a.batch, lr: a.lr, seed: a.seed, ..Default::default() };
    let device = device.open()?;
    let set = GreySet { pixels: px, labels: &train.labels[..n], side };
    eprintln!("train-encoder: ConvNet-{} width {} on {n} images {side}x{side}, {classes} classes, {} epochs", a.depth, a.width, a.epochs);
    let per_epoch = n.div_ceil(a.batch) as u64;
    let pb = ims3_util::progress_bar(per_epoch * a.epochs as u64, "encoder", true);
    let (net, losses) = fit_classifier(&spec, &set, &opts, &device, |e, l| {
        pb.set_message(format!("epoch {} loss {l:.3}", e + 1));
        pb.inc(1);
    })?;
    pb.finish_and_clear();
    let test_set = GreySet { pixels: &test.pixels, labels: &test.labels, side };
    let top1 = classifier_accuracy(&net, &spec, &test_set, &device);
    let record = serde_json::json!({
        "command": super::command_line(),
        "train_images": n,
        "options": opts,
        "epoch_losses": losses,
        "test_top1": top1,
        "test_images": test.len(),
        "seconds": started.elapsed().as_secs_f64(),
    });
    save_classifier(&net, &spec, &record, &a.out)?;
    println!("train-encoder: epoch losses {losses:.4?}; test top-1 {top1:.2}% on {} images; wrote {}", test.len(), a.out.display());
    Ok(())
}

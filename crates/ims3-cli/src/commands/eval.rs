//! `ims3 eval`: a distilled-set protocol (`ims3_eval`): train an evaluation network on the
//! distilled images once per seed, test on real images; `eval.json` and `eval.md` in --out.
//! `--labels hard` is the reference's protocol (IDC via Minimax, IMS3's changes); `--labels
//! soft` RDED's, with a frozen ImageNet ResNet-18 teacher restricted to the dataset's classes.

use std::path::PathBuf;

use anyhow::{Context, Result, bail, ensure};
use ims3_backend::DeviceSpec;
use ims3_augment::{ColorJitterKind, TestTransform};
use ims3_eval::{EvalConfig, EvalReport, EvalSets, ImageSet, NetKind, SeedResult, SoftLabels, Teacher};
use ims3_nets::Norm;
use serde::{Deserialize, Serialize};

/// Which labels the student learns from.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LabelKind {
    /// The reference's hard-label protocol.
    #[default]
    Hard,
    /// RDED's soft-label protocol (a teacher's tempered distribution; AdamW, 300 epochs).
    Soft,
}

ims3_util::choice!(LabelKind, "labels", { LabelKind::Hard => "hard", LabelKind::Soft => "soft" });

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
    /// Learning rate (hard labels: SGD 0.1 as IMS3, Minimax 0.01; soft labels: AdamW 0.001).
    #[arg(long)]
    pub lr: Option<f64>,
    /// Training seeds, comma separated (one network per seed).
    #[arg(long, value_delimiter = ',', default_value = "0,1,2")]
    pub seeds: Vec<u64>,
    /// instance or batch (default: instance for hard labels, as the reference; batch for soft).
    #[arg(long)]
    pub norm: Option<Norm>,
    /// hard (the reference's protocol) or soft (RDED's, with --teacher).
    #[arg(long, default_value = "hard")]
    pub labels: LabelKind,
    /// The soft-label teacher: torchvision `resnet18` weights (IMAGENET1K_V1,
    /// resnet18-f37072fd.pth), restricted to the dataset's ImageNet classes.
    #[arg(long)]
    pub teacher: Option<PathBuf>,
    /// Softmax temperature of the soft labels (RDED with CutMix: 20).
    #[arg(long, default_value_t = 20.0)]
    pub temperature: f64,
    /// The test transform's geometry (default: the protocol's; resize-center-crop is the
    /// reference's Resize(224) -> CenterCrop(224)).
    #[arg(long)]
    pub test_transform: Option<TestTransform>,
    /// The training ColorJitter: idc (the reference's, on floats after ToTensor, unclipped)
    /// or pil (torchvision's on 8-bit images).
    #[arg(long)]
    pub color_jitter: Option<ColorJitterKind>,
    /// When the test split is read: `every` evaluation (the reference; its best-on-test column)
    /// or only after the `final` epoch (the evaluations before read --val alone).
    #[arg(long, default_value = "every")]
    pub test_at: ims3_eval::TestAt,
    /// Train only this worker's share of the seeds (`i/n`: the k-th seed of --seeds when
    /// k mod n = i). Each seed is one work item, kept in `<out>/seeds/`; a run without
    /// --shard trains what is missing and writes the report. Results equal one worker's.
    #[arg(long)]
    pub shard: Option<ims3_util::Shard>,
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
    let mut cfg = match (&idx, a.labels) {
        (Some((train, _)), LabelKind::Hard) => {
            let (mean, std) = ims3_images::idx::grey_stats(&train.pixels);
            EvalConfig::grey(a.net.clone(), a.size, a.ipc, mean, std)
        }
        (Some(_), LabelKind::Soft) => bail!("--labels soft needs an ImageNet teacher: not for an IDX dataset"),
        (None, LabelKind::Hard) => EvalConfig::reference(a.net.clone(), a.size, a.ipc),
        (None, LabelKind::Soft) => {
            let teacher = a.teacher.clone().context("--labels soft needs --teacher <resnet18-f37072fd.pth>")?;
            let classes = spec.classes.iter().map(|c| c.imagenet as usize).collect();
            EvalConfig::soft(a.net.clone(), a.size, a.ipc, spec.classes.len(), SoftLabels { teacher, classes, temperature: a.temperature })
        }
    };
    if matches!(cfg.labels, ims3_eval::Labels::Hard) {
        // The reference's epoch rule also looks at the class count (ImageNet-100).
        cfg = cfg.with_epochs(ims3_eval::epochs_for(a.ipc, classes.len()));
    }
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
    if let Some(lr) = a.lr {
        cfg.lr = lr;
    }
    if let Some(norm) = a.norm {
        cfg.norm = norm;
    }
    if let Some(t) = a.test_transform {
        cfg.test_transform = t;
    }
    if let Some(k) = a.color_jitter {
        cfg.augment.color_jitter_kind = k;
    }
    cfg.test_at = a.test_at;
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
    let teacher = match &cfg.labels {
        ims3_eval::Labels::Soft(soft) => Some(Teacher::load(soft, &device)?),
        ims3_eval::Labels::Hard => None,
    };
    // Each seed is a work item: kept under `<out>/seeds/` with a fingerprint of the protocol
    // and the data, so a rerun skips what is done and never reuses a stale result.
    let test_source = match (&a.test, &a.test_idx) {
        (Some(dir), _) => serde_json::json!({"folder": dir.display().to_string(), "layout": dir.parent().map(|r| ims3_datasets::detect_layout(r).to_string())}),
        (None, Some(dir)) => serde_json::json!({"idx": dir.display().to_string(), "split": "t10k"}),
        (None, None) => serde_json::Value::Null,
    };
    let data = serde_json::json!({
        "dataset": spec.name,
        "class_order_sha256": spec.class_order_sha256(),
        "classes": classes,
        "distilled": a.distilled.display().to_string(),
        "test": test_source,
        "val": a.val.as_ref().map(|v| v.display().to_string()),
    });
    let fingerprint = serde_json::json!({
        "net": cfg.net, "epochs": cfg.epochs, "settings": cfg.settings_json(), "data": data,
        "train_sha256": train.sha256(), "test_images": test.len(), "val_images": val.as_ref().map(ImageSet::len),
    });
    let item = |seed: u64| a.out.join("seeds").join(format!("seed-{seed}.json"));
    let done = |seed: u64| -> Option<SeedResult> {
        let v: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(item(seed)).ok()?).ok()?;
        if v["fingerprint"] != fingerprint {
            return None;
        }
        match serde_json::from_value(v["result"].clone()) {
            Ok(r) => Some(r),
            Err(e) => {
                tracing::warn!("{}: cannot read the seed's result ({e}); training it again", item(seed).display());
                None
            }
        }
    };
    let shard = a.shard.unwrap_or(ims3_util::Shard::ALL);
    let todo: Vec<u64> = a.seeds.iter().enumerate().filter(|(k, s)| shard.owns(*k) && done(**s).is_none()).map(|(_, s)| *s).collect();
    eprintln!(
        "eval: {} on {} distilled images, {} test images, {} epochs x {} of {} seeds to run, {} labels",
        cfg.net,
        train.len(),
        test.len(),
        cfg.epochs,
        todo.len(),
        a.seeds.len(),
        a.labels
    );
    let pb = ims3_util::progress_bar((cfg.epochs * todo.len()) as u64, "eval", true);
    let sets = EvalSets { train: &train, test: &test, val: val.as_ref() };
    for &seed in &todo {
        let r = ims3_eval::train_and_eval(sets, &cfg, teacher.as_ref(), seed, &device, Some(&pb))?;
        ims3_util::write_json(&item(seed), &serde_json::json!({"fingerprint": fingerprint, "result": r}))?;
    }
    pb.finish_and_clear();
    let results: Option<Vec<SeedResult>> = a.seeds.iter().map(|&s| done(s)).collect();
    let Some(results) = results.filter(|_| a.shard.is_none()) else {
        println!("eval: shard {shard} done; run without --shard to write the report of every seed");
        return Ok(());
    };
    let title = format!("{} on {} ({} IPC{})", cfg.net, spec.name, a.ipc, if a.labels == LabelKind::Soft { ", soft labels" } else { "" });
    let report = EvalReport::new(&title, &cfg, &train, &test, data, results, &super::command_line().join(" "));
    report.write(&a.out)?;
    let split = crate::figures::Split::of_curves(&report.seeds);
    let curve = crate::figures::accuracy_figure(
        &format!("{title}: {} top-1 vs epoch", if split == crate::figures::Split::Test { "test" } else { "validation" }),
        &[crate::figures::accuracy_band(&cfg.net.to_string(), &report.seeds, split)],
        split,
    )?;
    crate::figures::write(&a.out.join("curve.svg"), &curve)?;
    print!("{}", report.markdown());
    Ok(())
}

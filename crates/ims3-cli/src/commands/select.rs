//! `ims3 select` (`distill`): S3 on files. Encode the real images and the candidate subgroups
//! (or read a previous run's centroids), select one subgroup per class, write the distilled
//! folder, `selection.json` and `centroids.safetensors`.

use std::path::PathBuf;

use anyhow::{Context, Result, bail, ensure};
use ims3_backend::DeviceSpec;
use ims3_s3::pipeline::{self, EncodeSpec, EncodedCentroids, RealImages, RealOptions, Report};
use ims3_s3::{Form, Params};
use serde::Serialize;

#[derive(clap::Args, Debug, Clone, PartialEq, Serialize)]
pub struct Args {
    /// Candidates folder: `<wnid>.safetensors` per class, tensor `images` [G*K, 3, H, W] in [-1, 1].
    #[arg(long)]
    pub candidates: PathBuf,
    /// Output folder.
    #[arg(long)]
    pub out: PathBuf,
    /// torchvision resnet18 `.pth` (IMAGENET1K_V1, resnet18-f37072fd.pth), or a ConvNet from
    /// `ims3 train-encoder` (.safetensors). Not needed with --centroids.
    #[arg(long)]
    pub encoder: Option<PathBuf>,
    /// Real training root: `<root>/<wnid>/*` images. Not needed with --centroids.
    #[arg(long)]
    pub real: Option<PathBuf>,
    /// Instead of --real: an IDX training set (Fashion-MNIST's train-* files); class ids map to
    /// IDX labels through --dataset.
    #[arg(long, conflicts_with = "real")]
    pub real_idx: Option<PathBuf>,
    /// Dataset spec for --real-idx (ids and labels).
    #[arg(long, default_value = "fashion-mnist")]
    pub dataset: String,
    /// Re-select from a previous run's centroids.safetensors (no encoding).
    #[arg(long)]
    pub centroids: Option<PathBuf>,
    /// Class ids in class order, comma separated (default: the candidate files' names, sorted).
    #[arg(long, value_delimiter = ',')]
    pub classes: Vec<String>,
    /// Candidate subgroups per class (IMS3 run.sh: 5).
    #[arg(long, default_value_t = 5)]
    pub groups: usize,
    /// Images per class (IPC), the size of a subgroup.
    #[arg(long, default_value_t = 10)]
    pub ipc: usize,
    /// Weight of the closeness-to-real term (run.sh: 0.4; centroid.py default 1).
    #[arg(long, default_value_t = 0.4)]
    pub alpha: f64,
    /// Weight of the inter-class separation term (run.sh: 0.9; centroid.py default 1).
    #[arg(long, default_value_t = 0.9)]
    pub beta: f64,
    /// Added inside the logs (run.sh: 0; centroid.py default 1e-6).
    #[arg(long, default_value_t = 0.0)]
    pub eps: f64,
    /// Coordinate-ascent sweeps at most.
    #[arg(long, default_value_t = 5)]
    pub max_sweeps: usize,
    /// Objective form: reference (beta over i<j, as centroid.py) or paper (beta/(C-1) over i!=j).
    #[arg(long, default_value = "reference")]
    pub form: Form,
    /// Real images per class for the real centroid (reference: 200).
    #[arg(long, default_value_t = 200)]
    pub real_max: usize,
    /// Seed of the shuffle that picks the real images.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Skip unreadable real images (and count them) instead of failing.
    #[arg(long)]
    pub skip_unreadable: bool,
    /// Only encode this worker's share of the classes (`i/n`: classes k with k mod n = i) into
    /// `<out>/centroids/`; a run without --shard then encodes what is missing and selects.
    /// Each class is one work item: the result equals one worker's, bit for bit.
    #[arg(long)]
    pub shard: Option<ims3_util::Shard>,
}

pub fn run(a: Args, device: &DeviceSpec) -> Result<()> {
    let params = Params { alpha: a.alpha, beta: a.beta, eps: a.eps, max_sweeps: a.max_sweeps, form: a.form };
    let classes = if a.classes.is_empty() { pipeline::candidate_classes(&a.candidates)? } else { a.classes.clone() };
    for c in &classes {
        let n = pipeline::candidate_count(&a.candidates, c)?;
        ensure!(n >= a.groups * a.ipc, "class {c}: {n} candidate images, fewer than {} groups x {} per group", a.groups, a.ipc);
    }
    let (encoded, encoder_name) = match &a.centroids {
        Some(path) => {
            let c = pipeline::load_centroids(path)?;
            ensure!(c.classes() == classes.len(), "{}: {} classes, but {} were given", path.display(), c.classes(), classes.len());
            (EncodedCentroids { centroids: c, real_images_used: vec![], real_images_skipped: vec![] }, format!("from {}", path.display()))
        }
        None => {
            let Some(enc) = &a.encoder else { bail!("--encoder is needed unless --centroids is given") };
            let encoder = ims3_features::load_encoder(enc, device.open()?)?;
            let opts = RealOptions { max_images: a.real_max, seed: a.seed, skip_unreadable: a.skip_unreadable, show_progress: true, ..Default::default() };
            let split;
            let real = match (&a.real_idx, &a.real) {
                (Some(dir), _) => {
                    split = ims3_images::idx::IdxSplit::read(dir, "train")?;
                    let spec = ims3_datasets::DatasetSpec::get(&a.dataset)?;
                    let labels = classes
                        .iter()
                        .map(|class| spec.classes.iter().find(|c| &c.wnid == class).map(|c| c.imagenet as u8).with_context(|| format!("class '{class}' is not in the {} spec", spec.name)))
                        .collect::<Result<_>>()?;
                    RealImages::Idx { split: &split, labels, name: dir.display().to_string() }
                }
                (None, Some(root)) => RealImages::Folders(root),
                (None, None) => bail!("--real or --real-idx is needed unless --centroids is given"),
            };
            let items = a.out.join("centroids");
            let spec = EncodeSpec { classes: &classes, candidates: &a.candidates, real, groups: a.groups, ipc: a.ipc, opts, items: &items };
            let shard = a.shard.unwrap_or(ims3_util::Shard::ALL);
            match pipeline::encode_centroids(encoder.as_ref(), &spec, shard)? {
                Some(encoded) if a.shard.is_none() => (encoded, encoder.name()),
                _ => {
                    println!("select: shard {shard} encoded into {}; run without --shard to select", items.display());
                    return Ok(());
                }
            }
        }
    };
    let selection = encoded.centroids.select(&params)?;
    pipeline::write_distilled(&a.out, &classes, &a.candidates, &selection, a.ipc)?;
    pipeline::save_centroids(&a.out.join("centroids.safetensors"), &encoded.centroids)?;
    let report = Report {
        classes,
        encoder: encoder_name,
        params,
        groups: a.groups,
        ipc: a.ipc,
        real_images_used: encoded.real_images_used,
        real_images_skipped: encoded.real_images_skipped,
        selection,
    };
    pipeline::write_report(&a.out, &report)?;
    let objective = crate::figures::objective_figure("S3 objective per coordinate-ascent sweep", &[("S3".to_string(), &a.out.join("selection.json"))])?;
    crate::figures::write(&a.out.join("objective.svg"), &objective)?;
    println!(
        "selected {:?} (objective {:.6}, {} sweeps); wrote {}",
        report.selection.selected,
        report.selection.objective,
        report.selection.sweeps,
        a.out.join("final_distilled/train").display()
    );
    Ok(())
}

//! `ims3 sample`: the S3 candidates. Per class of the dataset spec, `--per-class` images from
//! a (fine-tuned) DiT (`ims3_sample::generate_candidates`), written as
//! `<out>/<wnid>.safetensors` (what `ims3 select` reads) and `<out>/png/<wnid>/NNNN.png`.
//! Classes already written are skipped, so an interrupted run resumes.

use std::path::PathBuf;

use anyhow::{Context, Result};
use ims3_backend::DeviceSpec;
use ims3_diffusion::{GaussianDiffusion, Respacing, Sampler};
use ims3_dit::Precision;
use ims3_sample::{CandidateOptions, generate_candidates};
use serde::Serialize;

#[derive(clap::Args, Debug, Clone, PartialEq, Serialize)]
pub struct Args {
    /// Base DiT weights.
    #[arg(long)]
    pub dit: PathBuf,
    /// IM checkpoint from `ims3 finetune` applied to the base (its EMA unless --raw), or a
    /// fine-tuning run folder (its newest checkpoint, found when sampling starts).
    #[arg(long)]
    pub finetuned: Option<PathBuf>,
    /// Use the checkpoint's raw weights instead of their EMA (the reference samples the EMA).
    #[arg(long)]
    pub raw: bool,
    /// SD-VAE folder (config.json + weights). Without it the DiT is taken to work in pixel space
    /// (a model from `ims3 pretrain`): samples are clipped to [-1, 1] and guidance covers every
    /// eps channel.
    #[arg(long)]
    pub vae: Option<PathBuf>,
    /// Dataset spec giving the classes and their ImageNet labels.
    #[arg(long, default_value = "imagewoof")]
    pub dataset: String,
    /// Images per class (S3: groups x IPC, e.g. 5 x 10 = 50).
    #[arg(long, default_value_t = 50)]
    pub per_class: usize,
    /// Classifier-free guidance scale (reference 4.0).
    #[arg(long, default_value_t = 4.0)]
    pub cfg_scale: f64,
    /// Respaced sampling steps of `p_sample_loop` (reference 50).
    #[arg(long, default_value = "50")]
    pub steps: Respacing,
    /// Images per forward batch (reference chunk: 10).
    #[arg(long, default_value_t = 10)]
    pub batch: usize,
    /// ddpm (the reference's `p_sample_loop`, learned variance) or ddim (deterministic, eta 0).
    #[arg(long, default_value = "ddpm")]
    pub sampler: Sampler,
    /// Precision of the DiT's weights and arithmetic: f32 (the reference's) or bf16 (what the
    /// reference's GPU timings use through autocast; the sampler's own arithmetic stays f32).
    #[arg(long, default_value = "f32")]
    pub dtype: Precision,
    /// Condition on folder indices (the reference's quirk) instead of ImageNet indices.
    #[arg(long)]
    pub folder_index_labels: bool,
    #[arg(long)]
    pub heads: Option<usize>,
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// This worker's share of the classes (`i/n`: the classes k with k mod n = i), for several
    /// workers writing into the same --out; their union equals one worker's output, bit for bit
    /// (each class draws from its own noise stream).
    #[arg(long)]
    pub shard: Option<ims3_util::Shard>,
    #[arg(long)]
    pub out: PathBuf,
}

pub fn run(a: Args, device_spec: &DeviceSpec) -> Result<()> {
    let spec = ims3_datasets::DatasetSpec::get(&a.dataset)?;
    let device = device_spec.open()?;
    let (mut model, report) = ims3_dit::open_dit(&a.dit, None, a.heads, &device)?;
    if let Some(given) = &a.finetuned {
        let path = if given.is_dir() {
            ims3_im::list_checkpoints(&given.join("checkpoints"))?.pop().map(|(_, p)| p).with_context(|| format!("{}: no checkpoint in checkpoints/", given.display()))?
        } else {
            given.clone()
        };
        let ck = ims3_im::Checkpoint::read(&path)?;
        model = ck.apply_to(model, !a.raw)?;
        eprintln!("sample: applied {} (step {}, {})", path.display(), ck.step, if a.raw { "raw" } else { "EMA" });
    }
    let dtype = a.dtype.float_dtype();
    anyhow::ensure!(device.supports_dtype(dtype), "--dtype {}: device {device_spec} has no {} arithmetic", a.dtype, a.dtype);
    let model = model.to_dtype(dtype);
    let config = &report.config;
    let vae = a.vae.as_ref().map(|v| ims3_vae::load_vae_dir(v, &device)).transpose()?.map(|(v, _)| v);
    let diffusion = GaussianDiffusion::dit(&a.steps)?;
    let opts = CandidateOptions { cfg_scale: a.cfg_scale, batch: a.batch, sampler: a.sampler, seed: a.seed, show_progress: true };
    let quirk = spec.folder_index_labels();
    std::fs::create_dir_all(&a.out)?;
    let shard = a.shard.unwrap_or(ims3_util::Shard::ALL);
    for (k, class) in spec.classes.iter().enumerate().filter(|(k, _)| shard.owns(*k)) {
        let label = if a.folder_index_labels { quirk[k] } else { class.imagenet };
        if let Ok(done) = ims3_s3::pipeline::read_candidates(&a.out, &class.wnid)
            && done.len() == a.per_class
        {
            eprintln!("sample: {} already has {} images, skipped", class.wnid, done.len());
            continue;
        }
        let images = generate_candidates(&model, config, vae.as_ref(), &diffusion, label, a.per_class, &opts).with_context(|| format!("{}: class {}", a.dit.display(), class.wnid))?;
        for (i, img) in images.iter().enumerate() {
            // Candidates are held in [-1, 1]; PNG wants [0, 1].
            ims3_images::write_png(&a.out.join("png").join(&class.wnid).join(format!("{i:04}.png")), &img.clone().map(|v| (v + 1.0) * 0.5))?;
        }
        ims3_s3::pipeline::write_candidates(&a.out, &class.wnid, &images)?;
        eprintln!("sample: {} ({}) {} images", class.wnid, class.name, images.len());
    }
    Ok(())
}

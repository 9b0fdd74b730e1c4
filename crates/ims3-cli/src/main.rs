//! `ims3`: the command line of the IMS3 port.

use anyhow::Result;
use burn::prelude::*;
use clap::{Parser, Subcommand};
use std::path::PathBuf;

mod ablation;
mod reproduce;

#[derive(Parser)]
#[command(name = "ims3", version, about = "IMS3 dataset distillation (Inversion-Matching + Selective Subgroup Sampling) in Rust")]
struct Cli {
    /// Compute device: cpu (Flex), cuda[:N] or wgpu[:N|cpu], if compiled in.
    #[arg(long, global = true, default_value = "cpu")]
    device: String,
    /// Defaults for any subcommand's options from a TOML file: a table per subcommand, keys
    /// named as the long options (`[sample]` `per-class = 50`); the command line wins.
    #[arg(long, global = true)]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Inspect a DiT checkpoint (format, detected config, parameter count, missing/unused keys)
    /// or a dataset folder (layout found, files per class and split, SHA-256; with --dataset).
    Info {
        /// .pt/.pth (plain or nested state dict) or .safetensors file, or a dataset root.
        weights: PathBuf,
        /// For a dataset root: the spec to check it against.
        #[arg(long, default_value = "imagewoof")]
        dataset: String,
        /// Nested state dict to read in a training checkpoint (default: ema, then model).
        #[arg(long)]
        nested: Option<String>,
        /// Head count, for a non-standard hidden size (cannot be read off the weights).
        #[arg(long)]
        heads: Option<usize>,
        /// Print the report as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Measure the DDIM inversion drift of a DiT: invert random latents x0 -> x_T over a
    /// respaced schedule and decode them back; prints the round-trip error.
    Drift {
        weights: PathBuf,
        /// Head count, for a non-standard hidden size.
        #[arg(long)]
        heads: Option<usize>,
        /// Respacing of the 1000-step schedule (reference: 50).
        #[arg(long, default_value = "50")]
        steps: String,
        /// Number of latents.
        #[arg(long, default_value_t = 4)]
        batch: usize,
        /// Class label for all latents.
        #[arg(long, default_value_t = 0)]
        class: i64,
        #[arg(long, default_value_t = 0)]
        seed: u64,
    },
    /// S3: encode real and candidate images, select one subgroup per class, write
    /// `final_distilled/train/<wnid>/NNNN.png`, `selection.json` and `centroids.safetensors`.
    #[command(alias = "distill")]
    Select(SelectArgs),
    /// IM fine-tuning (stage 1): Difffit on a pretrained DiT with the IM and Minimax terms.
    /// Resumes from the newest checkpoint in --out; writes checkpoints of the trained
    /// parameters only, metrics.jsonl, data-manifest.json and run.json there.
    Finetune(FinetuneArgs),
    /// Class-conditional sampling with CFG (the S3 candidates): per class, `--per-class` images
    /// from a (fine-tuned) DiT through the VAE; writes `<out>/<wnid>.safetensors` (what
    /// `ims3 select` reads) and `<out>/png/<wnid>/NNNN.png`. Finished classes are skipped.
    Sample(SampleArgs),
    /// Pretrain a pixel-space class-conditional DiT from scratch on an IDX dataset (Fashion-MNIST):
    /// every parameter but pos_embed trains (plain DiT loss, no IM/Minimax), with the same
    /// checkpoints, resume and metrics as `finetune`; writes <out>/model.safetensors (EMA).
    Pretrain(PretrainArgs),
    /// Train the small-image encoder: a ConvNet classifier on a whole IDX training set
    /// (Fashion-MNIST), the stand-in for the ImageNet ResNet-18 of S3; reports its test top-1
    /// and writes one safetensors file (config and training record in the header).
    TrainEncoder(TrainEncoderArgs),
    /// Evaluate a distilled set: train ResNet-AP-10 / ResNet-18 / ConvNet on it with the
    /// reference protocol, test on real images; writes eval.json and eval.md to --out.
    Eval(EvalArgs),
    /// Download the official assets (DiT-XL/2, sd-vae-ft-ema, torchvision ResNet-18, fast.ai
    /// ImageWoof/ImageNette, Fashion-MNIST) into the cache with checksum checks; resumes
    /// partial downloads; unpacks the .tgz datasets. Without names: lists the assets.
    Fetch {
        /// Asset names (see the list), or `all`.
        names: Vec<String>,
        /// Cache directory (default: $IMS3_CACHE, else ~/.cache/ims3).
        #[arg(long)]
        cache: Option<PathBuf>,
    },
    /// The whole method from a recipe: fine-tune, sample, select, evaluate, results beside the
    /// paper. Finished stages are skipped; --from reruns; --list shows the recipes.
    Reproduce(reproduce::ReproduceArgs),
    /// Convert a checkpoint to the project's safetensors format (config in the header).
    Convert {
        weights: PathBuf,
        output: PathBuf,
        #[arg(long)]
        nested: Option<String>,
        /// Head count, for a non-standard hidden size.
        #[arg(long)]
        heads: Option<usize>,
    },
}

#[derive(clap::Args)]
struct SelectArgs {
    /// Candidates folder: `<wnid>.safetensors` per class, tensor `images` [G*K, 3, H, W] in [-1, 1].
    #[arg(long)]
    candidates: PathBuf,
    /// Output folder.
    #[arg(long)]
    out: PathBuf,
    /// torchvision resnet18 `.pth` (IMAGENET1K_V1, resnet18-f37072fd.pth), or a ConvNet from
    /// `ims3 train-encoder` (.safetensors). Not needed with --centroids.
    #[arg(long)]
    encoder: Option<PathBuf>,
    /// Real training root: `<root>/<wnid>/*` images. Not needed with --centroids.
    #[arg(long)]
    real: Option<PathBuf>,
    /// Instead of --real: an IDX training set (Fashion-MNIST's train-* files); class ids map to
    /// IDX labels through --dataset.
    #[arg(long, conflicts_with = "real")]
    real_idx: Option<PathBuf>,
    /// Dataset spec for --real-idx (ids and labels).
    #[arg(long, default_value = "fashion-mnist")]
    dataset: String,
    /// Re-select from a previous run's centroids.safetensors (no encoding).
    #[arg(long)]
    centroids: Option<PathBuf>,
    /// Class ids in class order, comma separated (default: the candidate files' names, sorted).
    #[arg(long, value_delimiter = ',')]
    classes: Vec<String>,
    /// Candidate subgroups per class (IMS3 run.sh: 5).
    #[arg(long, default_value_t = 5)]
    groups: usize,
    /// Images per class (IPC), the size of a subgroup.
    #[arg(long, default_value_t = 10)]
    ipc: usize,
    /// Weight of the closeness-to-real term (run.sh: 0.4; centroid.py default 1).
    #[arg(long, default_value_t = 0.4)]
    alpha: f64,
    /// Weight of the inter-class separation term (run.sh: 0.9; centroid.py default 1).
    #[arg(long, default_value_t = 0.9)]
    beta: f64,
    /// Added inside the logs (run.sh: 0; centroid.py default 1e-6).
    #[arg(long, default_value_t = 0.0)]
    eps: f64,
    /// Coordinate-ascent sweeps at most.
    #[arg(long, default_value_t = 5)]
    max_sweeps: usize,
    /// Objective form: reference (beta over i<j, as centroid.py) or paper (beta/(C-1) over i!=j).
    #[arg(long, default_value = "reference")]
    form: String,
    /// Real images per class for the real centroid (reference: 200).
    #[arg(long, default_value_t = 200)]
    real_max: usize,
    /// Seed of the shuffle that picks the real images.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Skip unreadable real images (and count them) instead of failing.
    #[arg(long)]
    skip_unreadable: bool,
}

#[derive(clap::Args)]
struct FinetuneArgs {
    /// Pretrained DiT (DiT-XL-2-256x256.pt or any checkpoint `ims3 info` reads).
    #[arg(long)]
    dit: PathBuf,
    /// SD-VAE folder (diffusers layout: config.json + diffusion_pytorch_model.safetensors/.bin).
    #[arg(long, required_unless_present = "idx")]
    vae: Option<PathBuf>,
    /// Dataset root holding `<split>/<wnid>/*` (fast.ai archive or a cut from ImageNet).
    #[arg(long, required_unless_present = "idx")]
    data: Option<PathBuf>,
    /// Instead of --data/--vae: an IDX training set (Fashion-MNIST's train-* files) for a
    /// pixel-space DiT from `ims3 pretrain`; the labels are the IDX labels.
    #[arg(long, conflicts_with_all = ["data", "vae"])]
    idx: Option<PathBuf>,
    /// Dataset spec: imagewoof, imagenette, imageidc, or a spec .toml.
    #[arg(long, default_value = "imagewoof")]
    dataset: String,
    #[arg(long, default_value = "train")]
    split: String,
    /// Run directory (created; resumed if it holds checkpoints).
    #[arg(long)]
    out: PathBuf,
    /// Training recipe file (TOML; keys of TrainConfig: batch_size, epochs, max_steps, ema_decay, flip,
    /// seed, checkpoint_every, keep_last, log_every, [optimizer] lr/beta1/beta2/eps/weight_decay,
    /// [loss] im/im_lambda/minimax/lambda_pos/lambda_neg/memory_size/label_dropout). Flags below
    /// override it; anything unset keeps the reference default.
    #[arg(long)]
    train_config: Option<PathBuf>,
    /// Seed of data order and every random draw (default 0).
    #[arg(long)]
    seed: Option<u64>,
    /// Batch size (reference 8).
    #[arg(long)]
    batch: Option<usize>,
    /// Epochs (reference 8).
    #[arg(long)]
    epochs: Option<usize>,
    /// Stop after this many steps in total (the reference samples the 8000-step checkpoint).
    #[arg(long)]
    steps: Option<u64>,
    /// AdamW learning rate (reference 1e-3).
    #[arg(long)]
    lr: Option<f64>,
    /// Switch off the IM term (gives the Minimax ablation).
    #[arg(long)]
    no_im: bool,
    /// Switch off Minimax's memory terms (gives the IM-only ablation).
    #[arg(long)]
    no_minimax: bool,
    /// Condition the DiT on each class folder's index among the sorted folders, as the
    /// reference's run.sh does by accident (default: the true ImageNet index from the spec).
    #[arg(long)]
    folder_index_labels: bool,
    /// Head count, for a non-standard hidden size.
    #[arg(long)]
    heads: Option<usize>,
    /// Image size fed to the VAE (reference 256).
    #[arg(long, default_value_t = 256)]
    image_size: usize,
    /// Stop this invocation after N steps (checkpointing first); rerun to continue.
    #[arg(long)]
    stop_after: Option<u64>,
}

#[derive(clap::Args)]
struct SampleArgs {
    /// Base DiT weights.
    #[arg(long)]
    dit: PathBuf,
    /// IM checkpoint from `ims3 finetune` applied to the base (its EMA unless --raw).
    #[arg(long)]
    finetuned: Option<PathBuf>,
    /// Use the checkpoint's raw weights instead of their EMA (the reference samples the EMA).
    #[arg(long)]
    raw: bool,
    /// SD-VAE folder (config.json + weights). Without it the DiT is taken to work in pixel space
    /// (a model from `ims3 pretrain`): samples are clipped to [-1, 1] and guidance covers every
    /// eps channel.
    #[arg(long)]
    vae: Option<PathBuf>,
    /// Dataset spec giving the classes and their ImageNet labels.
    #[arg(long, default_value = "imagewoof")]
    dataset: String,
    /// Images per class (S3: groups x IPC, e.g. 5 x 10 = 50).
    #[arg(long, default_value_t = 50)]
    per_class: usize,
    /// Classifier-free guidance scale (reference 4.0).
    #[arg(long, default_value_t = 4.0)]
    cfg_scale: f64,
    /// Respaced sampling steps of `p_sample_loop` (reference 50).
    #[arg(long, default_value = "50")]
    steps: String,
    /// Images per forward batch (reference chunk: 10).
    #[arg(long, default_value_t = 10)]
    batch: usize,
    /// ddpm (the reference's `p_sample_loop`, learned variance) or ddim (deterministic, eta 0).
    #[arg(long, default_value = "ddpm")]
    sampler: String,
    /// Condition on folder indices (the reference's quirk) instead of ImageNet indices.
    #[arg(long)]
    folder_index_labels: bool,
    #[arg(long)]
    heads: Option<usize>,
    #[arg(long, default_value_t = 0)]
    seed: u64,
    #[arg(long)]
    out: PathBuf,
}

#[derive(clap::Args)]
struct PretrainArgs {
    /// Folder with train-images-idx3-ubyte[.gz] and train-labels-idx1-ubyte[.gz]
    /// (Debian: /usr/share/datasets/fashion-mnist).
    #[arg(long)]
    idx: PathBuf,
    #[arg(long)]
    out: PathBuf,
    /// Width, depth, heads and patch of the DiT (input size, channels and classes come from the data).
    #[arg(long, default_value_t = 128)]
    hidden: usize,
    #[arg(long, default_value_t = 6)]
    depth: usize,
    #[arg(long, default_value_t = 4)]
    heads: usize,
    #[arg(long, default_value_t = 2)]
    patch: usize,
    #[arg(long, default_value_t = 20000)]
    steps: u64,
    #[arg(long, default_value_t = 64)]
    batch: usize,
    /// AdamW learning rate (DiT's own training: 1e-4).
    #[arg(long, default_value_t = 1e-4)]
    lr: f64,
    /// EMA decay of the weights written to model.safetensors (DiT: 0.9999, for 400k steps;
    /// a short run needs a shorter memory).
    #[arg(long, default_value_t = 0.999)]
    ema_decay: f64,
    #[arg(long, default_value_t = 0)]
    seed: u64,
    #[arg(long, default_value_t = 1000)]
    checkpoint_every: u64,
    /// Stop this invocation after N steps (checkpointing first); rerun to continue.
    #[arg(long)]
    stop_after: Option<u64>,
}

#[derive(clap::Args)]
struct TrainEncoderArgs {
    /// Folder with train-* and t10k-* IDX files (Debian: /usr/share/datasets/fashion-mnist).
    #[arg(long)]
    idx: PathBuf,
    /// Output .safetensors file.
    #[arg(long)]
    out: PathBuf,
    #[arg(long, default_value_t = 3)]
    depth: usize,
    #[arg(long, default_value_t = 128)]
    width: usize,
    #[arg(long, default_value_t = 2)]
    epochs: usize,
    #[arg(long, default_value_t = 128)]
    batch: usize,
    #[arg(long, default_value_t = 0.01)]
    lr: f64,
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Train on the first N images only (quick runs, tests).
    #[arg(long)]
    limit: Option<usize>,
}

#[derive(clap::Args)]
struct EvalArgs {
    /// Distilled images: `<dir>/<wnid>/*` (e.g. final_distilled/train from `ims3 select`).
    #[arg(long)]
    distilled: PathBuf,
    /// Real test images: `<dir>/<wnid>/*` (e.g. imagewoof2/val).
    #[arg(long, required_unless_present = "test_idx")]
    test: Option<PathBuf>,
    /// Instead of --test: an IDX folder (Fashion-MNIST); tests on its t10k-* images with the
    /// grey protocol (one channel normalised with the train-* statistics, no colour
    /// augmentations, test images as they are). Labels map to classes through --dataset.
    #[arg(long, conflicts_with = "test")]
    test_idx: Option<PathBuf>,
    /// Batch size (reference 64).
    #[arg(long)]
    batch: Option<usize>,
    /// ConvNet width (IDC 128).
    #[arg(long)]
    width: Option<usize>,
    /// Optional validation images held out from the real training set, for honest epoch selection.
    #[arg(long)]
    val: Option<PathBuf>,
    /// Dataset spec (class order): imagewoof, imagenette, imageidc, or a spec .toml.
    #[arg(long, default_value = "imagewoof")]
    dataset: String,
    /// resnet_ap10, resnet18 or convnet3..6.
    #[arg(long, default_value = "resnet_ap10")]
    net: String,
    /// Input size in pixels (reference 224).
    #[arg(long, default_value_t = 224)]
    size: usize,
    /// Images per class of the distilled set (sets the reference epoch count).
    #[arg(long, default_value_t = 10)]
    ipc: usize,
    /// Override the epoch count (reference: 3000/2000/1500/1000 by IPC).
    #[arg(long)]
    epochs: Option<usize>,
    /// Test every N epochs (reference: epochs / 100).
    #[arg(long)]
    eval_every: Option<usize>,
    /// SGD learning rate (IMS3 0.1; Minimax 0.01).
    #[arg(long, default_value_t = 0.1)]
    lr: f64,
    /// Training seeds, comma separated (one network per seed).
    #[arg(long, value_delimiter = ',', default_value = "0,1,2")]
    seeds: Vec<u64>,
    /// batch (instance norm is the reference's).
    #[arg(long, default_value = "instance")]
    norm: String,
    #[arg(long)]
    out: PathBuf,
}

fn main() {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_env("IMS3_LOG").unwrap_or_else(|_| "warn,cubecl_common=off".into()))
        .with_writer(std::io::stderr)
        .init();
    // A panic is a bug, but the user still gets one line rather than a backtrace.
    std::panic::set_hook(Box::new(|info| {
        let msg = info.payload().downcast_ref::<&str>().map(|s| s.to_string())
            .or_else(|| info.payload().downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "unknown".into());
        eprintln!("ims3: internal error: {msg} (please report this)");
    }));
    let cli = match with_config_defaults(std::env::args().collect()) {
        Ok(args) => Cli::parse_from(args),
        Err(e) => {
            eprintln!("ims3: error: {e:#}");
            std::process::exit(1);
        }
    };
    if let Err(e) = run(cli) {
        eprintln!("ims3: error: {e:#}");
        std::process::exit(1);
    }
}

fn run(cli: Cli) -> Result<()> {
    match cli.command {
        Command::Info { weights, dataset, .. } if weights.is_dir() => dataset_info(&weights, &dataset),
        Command::Info { weights, nested, heads, json, .. } => info(&weights, nested.as_deref(), heads, json),
        Command::Drift { weights, heads, steps, batch, class, seed } => {
            let device = ims3_backend::open_device(&cli.device)?;
            let (model, report) = load_model(&weights, None, heads, &device)?;
            drift(&model, &report.config, &steps, batch, class, seed, &device)
        }
        Command::Select(args) => select(args, &cli.device),
        Command::Finetune(args) => finetune(args, &cli.device),
        Command::Eval(args) => eval(args, &cli.device),
        Command::Pretrain(args) => pretrain(args, &cli.device),
        Command::TrainEncoder(args) => train_encoder(args, &cli.device),
        Command::Sample(args) => sample(args, &cli.device),
        Command::Fetch { names, cache } => fetch(&names, cache),
        Command::Reproduce(args) => reproduce::run(args, &cli.device),
        Command::Convert { weights, output, nested, heads } => {
            let device = ims3_backend::open_device(&cli.device)?;
            let (model, report) = load_model(&weights, nested.as_deref(), heads, &device)?;
            ims3_dit::save_dit(&model, &report.config, &output)?;
            println!("wrote {}", output.display());
            Ok(())
        }
    }
}

fn info(path: &std::path::Path, nested: Option<&str>, heads: Option<usize>, json: bool) -> Result<()> {
    use ims3_weights::{Checkpoint, compare_shapes};
    let ckpt = Checkpoint::open(path, nested)?;
    let cfg = ims3_dit::infer_config(&ckpt, heads)?;
    let expected = ims3_dit::expected_shapes(&cfg);
    let report = compare_shapes(&ckpt, &expected, |_| false);
    let params: usize = expected.values().map(|s| s.iter().product::<usize>()).sum();
    let gammas_missing = report.missing.iter().filter(|k| ims3_dit::load::is_gamma(k)).count();
    let other_missing: Vec<&String> = report.missing.iter().filter(|k| !ims3_dit::load::is_gamma(k)).collect();
    if json {
        let v = serde_json::json!({
            "file": path.display().to_string(),
            "format": format!("{:?}", ckpt.format),
            "nested_key": ckpt.nested_key,
            "other_nested_keys": ckpt.other_nested_keys,
            "config": cfg,
            "preset": cfg.preset_name(),
            "parameters": params,
            "tensors_in_file": ckpt.tensors.len(),
            "gammas_defaulted_to_1": gammas_missing,
            "missing": other_missing,
            "unused": report.unused,
            "mismatched": report.mismatched,
        });
        println!("{}", serde_json::to_string_pretty(&v)?);
        return Ok(());
    }
    println!("file:        {}", path.display());
    println!("format:      {:?}{}", ckpt.format, ckpt.nested_key.as_ref().map(|k| format!(" (nested state dict '{k}'; also {:?})", ckpt.other_nested_keys)).unwrap_or_default());
    println!("model:       {}", cfg.preset_name().unwrap_or_else(|| "custom DiT".into()));
    println!(
        "config:      input {} patch {} channels {} hidden {} depth {} heads {} classes {} learn_sigma {}",
        cfg.input_size, cfg.patch_size, cfg.in_channels, cfg.hidden_size, cfg.depth, cfg.num_heads, cfg.num_classes, cfg.learn_sigma
    );
    println!("parameters:  {params} ({} tensors in file)", ckpt.tensors.len());
    println!(
        "difffit:     gammas in blocks 0..{}: {}",
        cfg.gamma_blocks,
        if gammas_missing == 0 { "present".to_string() } else { format!("{gammas_missing} absent (loaded as 1)") }
    );
    println!("missing:     {}", if other_missing.is_empty() { "none".into() } else { format!("{other_missing:?}") });
    println!("unused:      {}", if report.unused.is_empty() { "none".into() } else { format!("{:?}", report.unused) });
    if !report.mismatched.is_empty() {
        println!("mismatched:\n{}", report.describe(10));
    }
    Ok(())
}

/// Loads a DiT with its config read off the file (head count from `heads` if given).
fn load_model(
    path: &std::path::Path,
    nested: Option<&str>,
    heads: Option<usize>,
    device: &Device,
) -> Result<(ims3_dit::DiT, ims3_dit::LoadReport)> {
    let ckpt = ims3_weights::Checkpoint::open(path, nested)?;
    let cfg = ims3_dit::infer_config(&ckpt, heads)?;
    Ok(ims3_dit::load_dit(path, Some(&cfg), nested, device)?)
}

fn drift(
    model: &ims3_dit::DiT,
    cfg: &ims3_dit::DiTConfig,
    steps: &str,
    batch: usize,
    class: i64,
    seed: u64,
    device: &Device,
) -> Result<()> {
    use ims3_diffusion::{GaussianDiffusion, NoiseSource};
    anyhow::ensure!((class as usize) < cfg.num_classes, "class {class} is out of range: the model has {} classes", cfg.num_classes);
    let diffusion = GaussianDiffusion::dit(steps)?;
    let mut noise = NoiseSource::new(seed);
    // Latents in the data range of the SD-VAE's scaled latents (roughly unit variance).
    let x0 = noise.normal([batch, cfg.in_channels, cfg.input_size, cfg.input_size], device);
    let y = Tensor::<1, Int>::from_ints(vec![class; batch].as_slice(), device);
    let net = |x: Tensor<4>, t: Tensor<1>| model.forward(x, t, y.clone());
    let start = std::time::Instant::now();
    let (x_t, rec) = diffusion.ddim_round_trip(&net, x0.clone(), false);
    let rms = |t: Tensor<4>| -> f64 { (t.powi_scalar(2).mean().into_scalar::<f32>() as f64).sqrt() };
    let err = rms(rec - x0.clone());
    let scale = rms(x0);
    println!(
        "ddim round trip over {} steps, batch {batch}, class {class}: rms(x0) {scale:.4}, rms(x_T) {:.4}, rms(reconstruction - x0) {err:.6} (relative {:.3e}); {:.1} s",
        diffusion.num_timesteps(),
        rms(x_t),
        err / scale.max(1e-12),
        start.elapsed().as_secs_f64()
    );
    Ok(())
}


fn select(a: SelectArgs, device_spec: &str) -> Result<()> {
    use anyhow::Context;
    use ims3_s3::pipeline::{self, RealOptions, Report};
    use ims3_s3::{Form, Params};
    let form = match a.form.as_str() {
        "reference" => Form::Reference,
        "paper" => Form::Paper,
        other => anyhow::bail!("unknown --form '{other}' (expected reference or paper)"),
    };
    let params = Params { alpha: a.alpha, beta: a.beta, eps: a.eps, max_sweeps: a.max_sweeps, form };
    let mut classes = a.classes.clone();
    if classes.is_empty() {
        let rd = std::fs::read_dir(&a.candidates).map_err(|e| anyhow::anyhow!("{}: {e}", a.candidates.display()))?;
        for e in rd {
            let p = e?.path();
            if p.extension().is_some_and(|x| x == "safetensors") {
                classes.push(p.file_stem().unwrap().to_string_lossy().into_owned());
            }
        }
        classes.sort();
        anyhow::ensure!(!classes.is_empty(), "{}: no <class>.safetensors candidate file", a.candidates.display());
    }
    let candidates: Vec<_> = classes.iter().map(|c| pipeline::read_candidates(&a.candidates, c)).collect::<Result<_, _>>()?;
    for (c, imgs) in classes.iter().zip(&candidates) {
        anyhow::ensure!(imgs.len() >= a.groups * a.ipc, "class {c}: {} candidate images, fewer than {} groups x {} per group", imgs.len(), a.groups, a.ipc);
    }
    let (centroids, encoder_name, used, skipped) = match &a.centroids {
        Some(path) => {
            let c = pipeline::load_centroids(path)?;
            anyhow::ensure!(c.classes() == classes.len(), "{}: {} classes, but {} were given", path.display(), c.classes(), classes.len());
            (c, format!("from {}", path.display()), vec![], vec![])
        }
        None => {
            let Some(enc) = &a.encoder else { anyhow::bail!("--encoder is needed unless --centroids is given") };
            anyhow::ensure!(a.real.is_some() || a.real_idx.is_some(), "--real or --real-idx is needed unless --centroids is given");
            let device = ims3_backend::open_device(device_spec)?;
            let encoder: Box<dyn ims3_features::FeatureEncoder> = if ims3_eval::classifier::is_classifier_file(enc) {
                Box::new(ims3_features::ConvNetEncoder::load(enc, device)?)
            } else {
                let model = ims3_features::load_resnet18(enc, &device)?;
                Box::new(ims3_features::ResNet18Encoder::new(model, device, "torchvision-resnet18"))
            };
            let opts = RealOptions { max_images: a.real_max, seed: a.seed, skip_unreadable: a.skip_unreadable, ..Default::default() };
            let idx = match &a.real_idx {
                Some(dir) => Some((ims3_images::idx::IdxSplit::read(dir, "train")?, ims3_datasets::DatasetSpec::get(&a.dataset)?)),
                None => None,
            };
            let pb = indicatif::ProgressBar::new(classes.len() as u64).with_style(
                indicatif::ProgressStyle::with_template("encode [{bar:30}] {pos}/{len} classes {per_sec} ETA {eta}").expect("template"),
            );
            let (mut real_c, mut cand_c, mut used, mut skipped) = (vec![], vec![], vec![], vec![]);
            for (class, imgs) in classes.iter().zip(&candidates) {
                let (r, n, s) = match (&idx, &a.real) {
                    (Some((split, spec)), _) => {
                        let label = spec.classes.iter().find(|c| &c.wnid == class).map(|c| c.imagenet).with_context(|| format!("class '{class}' is not in the {} spec", spec.name))?;
                        let (r, n) = pipeline::real_centroid_idx(encoder.as_ref(), split, label as u8, &opts);
                        anyhow::ensure!(n > 0, "{}: no training image has label {label} (class {class})", a.real_idx.as_ref().unwrap().display());
                        (r, n, 0)
                    }
                    (None, Some(real)) => pipeline::real_centroid(encoder.as_ref(), class, &real.join(class), &opts)?,
                    (None, None) => unreachable!("checked above"),
                };
                tracing::info!(class, used = n, skipped = s, "real centroid");
                real_c.push(r);
                used.push(n);
                skipped.push(s);
                cand_c.push(pipeline::candidate_centroids(encoder.as_ref(), class, imgs, a.groups, a.ipc)?);
                pb.inc(1);
            }
            pb.finish_and_clear();
            let c = ims3_s3::Centroids { dim: encoder.dim(), candidates: cand_c, real: real_c };
            (c, encoder.name(), used, skipped)
        }
    };
    let selection = centroids.select(&params)?;
    pipeline::write_distilled(&a.out, &classes, &candidates, &selection, a.ipc)?;
    pipeline::save_centroids(&a.out.join("centroids.safetensors"), &centroids)?;
    let report = Report { classes, encoder: encoder_name, params, groups: a.groups, ipc: a.ipc, real_images_used: used, real_images_skipped: skipped, selection };
    pipeline::write_report(&a.out, &report)?;
    println!(
        "selected {:?} (objective {:.6}, {} sweeps); wrote {}",
        report.selection.selected,
        report.selection.objective,
        report.selection.sweeps,
        a.out.join("final_distilled/train").display()
    );
    Ok(())
}

/// The training recipe: reference defaults, then the --config file, then the flags.
fn finetune_config(a: &FinetuneArgs) -> Result<ims3_im::TrainConfig> {
    use anyhow::Context;
    let mut cfg = match &a.train_config {
        Some(p) => {
            let text = std::fs::read_to_string(p).with_context(|| format!("{}: cannot read", p.display()))?;
            parse_toml::<ims3_im::TrainConfig>(&text, &p.display().to_string())?
        }
        None => ims3_im::TrainConfig::default(),
    };
    if let Some(v) = a.seed {
        cfg.seed = v;
    }
    if let Some(v) = a.batch {
        cfg.batch_size = v;
    }
    if let Some(v) = a.epochs {
        cfg.epochs = v;
    }
    if a.steps.is_some() {
        cfg.max_steps = a.steps;
    }
    if let Some(v) = a.lr {
        cfg.optimizer.lr = v;
    }
    if a.no_im {
        cfg.loss.im = false;
    }
    if a.no_minimax {
        cfg.loss.minimax = false;
    }
    cfg.validate().map_err(anyhow::Error::msg)?;
    Ok(cfg)
}

/// IM fine-tuning of a pixel-space DiT on an IDX training set (no VAE, no latent cache).
fn finetune_pixels(a: &FinetuneArgs, idx: &std::path::Path, cfg: ims3_im::TrainConfig, device_spec: &str) -> Result<()> {
    use anyhow::Context;
    let started = std::time::Instant::now();
    let data = read_idx_set(idx, "train")?;
    std::fs::create_dir_all(&a.out).with_context(|| format!("{}: cannot create", a.out.display()))?;
    let device = ims3_backend::open_device(device_spec)?.autodiff();
    let (model, report) = load_model(&a.dit, None, a.heads, &device)?;
    let mc = &report.config;
    anyhow::ensure!(
        [mc.in_channels, mc.input_size, mc.input_size] == data.shape,
        "{}: the DiT takes {}x{}x{} inputs but {} holds {:?} images",
        a.dit.display(), mc.in_channels, mc.input_size, mc.input_size, idx.display(), data.shape
    );
    let top = data.labels.iter().copied().max().unwrap_or(0);
    anyhow::ensure!((top as usize) < mc.num_classes, "{}: label {top} but the DiT has {} classes", idx.display(), mc.num_classes);
    let trainable = ims3_im::difffit_trainable_count(&model);
    eprintln!("finetune: pixel-space DiT on {} images {:?}; Difffit trains {trainable} parameters", data.labels.len(), data.shape);
    let inputs = serde_json::json!({ "idx": idx.display().to_string() });
    train_and_record(model, &data, &cfg, a, device_spec, mc, trainable, started, inputs)
}

/// Runs the fine-tuning loop and records it: `run.json` in --out (command, recipe, model, the
/// data `inputs`, steps done, seconds) and one summary line.
#[allow(clippy::too_many_arguments)]
fn train_and_record(
    model: ims3_dit::DiT,
    data: &dyn ims3_im::TrainData,
    cfg: &ims3_im::TrainConfig,
    a: &FinetuneArgs,
    device_spec: &str,
    mc: &ims3_dit::DiTConfig,
    trainable: usize,
    started: std::time::Instant,
    inputs: serde_json::Value,
) -> Result<()> {
    let run_opts = ims3_im::RunOptions { show_progress: true, stop_after: a.stop_after };
    let (_, out) = ims3_im::train(model, data, cfg, &a.out, &run_opts)?;
    let mut run = serde_json::json!({
        "command": std::env::args().collect::<Vec<_>>(),
        "stage": "finetune",
        "ims3_version": env!("CARGO_PKG_VERSION"),
        "git_revision": option_env!("IMS3_GIT_REV"),
        "device": device_spec,
        "config": cfg,
        "dit": a.dit.display().to_string(),
        "dit_config": mc,
        "trainable_parameters": trainable,
        "steps_done": out.steps_done,
        "total_steps": out.total_steps,
        "resumed_from": out.resumed_from,
        "last_checkpoint": out.last_checkpoint.as_ref().map(|p| p.display().to_string()),
        "seconds": started.elapsed().as_secs_f64(),
    });
    if let (Some(run), serde_json::Value::Object(extra)) = (run.as_object_mut(), inputs) {
        run.extend(extra);
    }
    ims3_images::atomic_write(&a.out.join("run.json"), serde_json::to_string_pretty(&run)?.as_bytes())?;
    println!(
        "finetune: {} of {} steps{}; checkpoint {}",
        out.steps_done,
        out.total_steps,
        out.resumed_from.map(|s| format!(" (resumed at {s})")).unwrap_or_default(),
        out.last_checkpoint.map(|p| p.display().to_string()).unwrap_or_else(|| "none".into())
    );
    Ok(())
}

fn finetune(a: FinetuneArgs, device_spec: &str) -> Result<()> {
    use anyhow::Context;
    let started = std::time::Instant::now();
    let cfg = finetune_config(&a)?;
    if let Some(idx) = &a.idx {
        return finetune_pixels(&a, idx, cfg, device_spec);
    }
    let (Some(data_root), Some(vae_dir)) = (&a.data, &a.vae) else { anyhow::bail!("--data and --vae are needed (or --idx for a pixel-space DiT)") };
    let spec = ims3_datasets::DatasetSpec::get(&a.dataset)?;
    let scanned = ims3_datasets::scan(data_root, &a.split, &spec)?;
    eprintln!("data: {} ({}), {} images in {} classes", data_root.join(&a.split).display(), scanned.layout, scanned.classes.iter().map(|c| c.files.len()).sum::<usize>(), scanned.classes.len());
    std::fs::create_dir_all(&a.out).with_context(|| format!("{}: cannot create", a.out.display()))?;
    let manifest = ims3_datasets::Manifest::build(data_root, &spec, &[a.split.as_str()])?;
    ims3_images::atomic_write(&a.out.join("data-manifest.json"), serde_json::to_string_pretty(&manifest)?.as_bytes())?;

    let device = ims3_backend::open_device(device_spec)?;
    // Labels: true ImageNet indices, or the reference's folder-index quirk.
    let quirk = spec.folder_index_labels();
    let relabel: Option<std::collections::BTreeMap<i64, i64>> =
        a.folder_index_labels.then(|| spec.classes.iter().zip(&quirk).map(|(c, &q)| (c.imagenet, q)).collect());
    let (vae, vae_cfg) = ims3_vae::load_vae_dir(vae_dir, &device)?;
    // Check the DiT against the VAE's latents before spending time on encoding.
    let dit_cfg = ims3_dit::infer_config(&ims3_weights::Checkpoint::open(&a.dit, None)?, a.heads)?;
    let side = a.image_size / vae_cfg.downscale();
    anyhow::ensure!(
        [dit_cfg.in_channels, dit_cfg.input_size] == [vae_cfg.latent_channels, side],
        "the DiT expects latents {}x{}x{} but the VAE gives {}x{side}x{side} at --image-size {}",
        dit_cfg.in_channels, dit_cfg.input_size, dit_cfg.input_size, vae_cfg.latent_channels, a.image_size
    );
    let folders: Vec<ims3_vae::ClassFolder> = scanned.classes.iter().map(|c| ims3_vae::ClassFolder { label: c.imagenet, dir: c.dir.clone() }).collect();
    let opts = ims3_vae::CacheOptions { image_size: a.image_size, ..Default::default() };
    let (cache, rebuilt) = ims3_vae::LatentCache::load_or_build(&a.out.join("latents.safetensors"), &vae, &vae_cfg, &folders, &opts, &device)?;
    eprintln!("latents: {} items {:?} ({})", cache.len(), cache.shape, if rebuilt { "encoded now" } else { "from the cache" });
    drop(vae);

    let ad = device.clone().autodiff();
    let (model, report) = load_model(&a.dit, None, a.heads, &ad)?;
    let mc = &report.config;
    anyhow::ensure!(
        [mc.in_channels, mc.input_size, mc.input_size] == cache.shape,
        "the DiT expects latents {}x{}x{} but the VAE gives {:?}",
        mc.in_channels, mc.input_size, mc.input_size, cache.shape
    );
    for c in &spec.classes {
        let l = relabel.as_ref().map_or(c.imagenet, |m| m[&c.imagenet]);
        anyhow::ensure!((l as usize) < mc.num_classes, "class {} has label {l}, but the DiT has {} classes", c.wnid, mc.num_classes);
    }
    let trainable = ims3_im::difffit_trainable_count(&model);
    eprintln!("model: {} ({} classes); Difffit trains {trainable} parameters", mc.preset_name().unwrap_or_else(|| "custom DiT".into()), mc.num_classes);
    let data = ims3_im::CachedLatents { cache: &cache, scaling_factor: vae_cfg.scaling_factor, relabel };
    let inputs = serde_json::json!({
        "vae": vae_dir.display().to_string(),
        "dataset": spec.name,
        "layout": manifest.layout,
        "data_sha256": manifest.splits[0].sha256,
        "labels": if a.folder_index_labels { "folder-index (reference quirk)" } else { "imagenet" },
    });
    train_and_record(model, &data, &cfg, &a, device_spec, mc, trainable, started, inputs)
}

/// Mean and standard deviation of 8-bit grey pixels scaled to [0, 1].
fn grey_stats(pixels: &[u8]) -> (f32, f32) {
    let n = pixels.len().max(1) as f64;
    let mean = pixels.iter().map(|&v| v as f64 / 255.0).sum::<f64>() / n;
    let var = pixels.iter().map(|&v| (v as f64 / 255.0 - mean).powi(2)).sum::<f64>() / n;
    (mean as f32, var.sqrt() as f32)
}

fn eval(a: EvalArgs, device_spec: &str) -> Result<()> {
    use anyhow::Context;
    use ims3_eval::{EvalConfig, EvalReport, ImageSet, NetKind, Norm};
    let spec = ims3_datasets::DatasetSpec::get(&a.dataset)?;
    let classes: Vec<String> = spec.classes.iter().map(|c| c.wnid.clone()).collect();
    let net: NetKind = a.net.parse().map_err(anyhow::Error::msg)?;
    let idx = match &a.test_idx {
        Some(dir) => Some((ims3_images::idx::IdxSplit::read(dir, "train")?, ims3_images::idx::IdxSplit::read(dir, "t10k")?)),
        None => None,
    };
    let mut cfg = match &idx {
        Some((train, _)) => {
            let (mean, std) = grey_stats(&train.pixels);
            EvalConfig::grey(net, a.size, a.ipc, mean, std)
        }
        None => EvalConfig::reference(net, a.size, a.ipc),
    };
    if let Some(b) = a.batch {
        anyhow::ensure!(b > 0, "--batch must be at least 1");
        cfg.batch_size = b;
    }
    if let Some(w) = a.width {
        cfg.convnet_width = w;
    }
    if let Some(e) = a.epochs {
        anyhow::ensure!(e > 0, "--epochs must be at least 1");
        cfg.epochs = e;
        cfg.eval_every = (e / 100).max(1);
    }
    if let Some(n) = a.eval_every {
        anyhow::ensure!(n > 0, "--eval-every must be at least 1");
        cfg.eval_every = n;
    }
    cfg.lr = a.lr;
    cfg.norm = match a.norm.as_str() {
        "instance" => Norm::Instance,
        "batch" => Norm::Batch,
        n => anyhow::bail!("unknown norm '{n}': expected instance or batch"),
    };
    let train = ImageSet::read(&a.distilled, &classes).map_err(anyhow::Error::msg)?;
    let test = match (&idx, &a.test) {
        (Some((_, t10k)), _) => {
            let mut set = ImageSet { classes: classes.clone(), ..Default::default() };
            for i in 0..t10k.len() {
                let label = t10k.labels[i] as i64;
                let k = spec.position_of_imagenet(label).with_context(|| format!("{}: test label {label} is not a class of {}", a.test_idx.as_ref().unwrap().display(), spec.name))?;
                set.images.push(t10k.rgb8(i));
                set.labels.push(k);
            }
            set
        }
        (None, Some(dir)) => ImageSet::read(dir, &classes).map_err(anyhow::Error::msg)?,
        (None, None) => anyhow::bail!("--test or --test-idx is needed"),
    };
    let val = a.val.as_ref().map(|v| ImageSet::read(v, &classes)).transpose().map_err(anyhow::Error::msg)?;
    let device = ims3_backend::open_device(device_spec)?;
    eprintln!("eval: {} on {} distilled images, {} test images, {} epochs x {} seeds", cfg.net, train.len(), test.len(), cfg.epochs, a.seeds.len());
    let pb = ims3_diffusion::progress_bar((cfg.epochs * a.seeds.len()) as u64, "eval", true);
    let mut results = Vec::new();
    for &seed in &a.seeds {
        results.push(ims3_eval::train_and_eval(&train, &test, val.as_ref(), &cfg, seed, &device, Some(&pb)).map_err(anyhow::Error::msg)?);
    }
    pb.finish_and_clear();
    let title = format!("{} on {} ({} IPC)", cfg.net, spec.name, a.ipc);
    let report = EvalReport::new(&title, &cfg, &train, &test, results, &std::env::args().collect::<Vec<_>>().join(" "));
    report.write(&a.out)?;
    print!("{}", report.markdown());
    Ok(())
}

fn sample(a: SampleArgs, device_spec: &str) -> Result<()> {
    use ims3_diffusion::{GaussianDiffusion, NoiseSource};
    let spec = ims3_datasets::DatasetSpec::get(&a.dataset)?;
    let device = ims3_backend::open_device(device_spec)?;
    let (mut model, report) = load_model(&a.dit, None, a.heads, &device)?;
    if let Some(ck) = &a.finetuned {
        let ck = ims3_im::Checkpoint::read(ck)?;
        model = ck.apply_to(model, !a.raw)?;
        eprintln!("sample: applied {} (step {}, {})", a.finetuned.as_ref().unwrap().display(), ck.step, if a.raw { "raw" } else { "EMA" });
    }
    let cfg = &report.config;
    let vae = a.vae.as_ref().map(|v| ims3_vae::load_vae_dir(v, &device)).transpose()?.map(|(v, _)| v);
    anyhow::ensure!(
        vae.is_some() || [1, 3].contains(&cfg.in_channels),
        "{}: a {}-channel DiT works in a latent space: give its --vae",
        a.dit.display(),
        cfg.in_channels
    );
    let (cfg_channels, clip) = if vae.is_some() { (ims3_dit::CfgChannels::FirstThree, false) } else { (ims3_dit::CfgChannels::AllEps, true) };
    anyhow::ensure!(["ddpm", "ddim"].contains(&a.sampler.as_str()), "unknown --sampler '{}' (expected ddpm or ddim)", a.sampler);
    let diffusion = GaussianDiffusion::dit(&a.steps)?;
    let quirk = spec.folder_index_labels();
    std::fs::create_dir_all(&a.out)?;
    for (k, class) in spec.classes.iter().enumerate() {
        let label = if a.folder_index_labels { quirk[k] } else { class.imagenet };
        anyhow::ensure!((label as usize) < cfg.num_classes, "class {} has label {label}, but the DiT has {} classes", class.wnid, cfg.num_classes);
        if let Ok(done) = ims3_s3::pipeline::read_candidates(&a.out, &class.wnid) {
            if done.len() == a.per_class {
                eprintln!("sample: {} already has {} images, skipped", class.wnid, done.len());
                continue;
            }
        }
        // One noise stream per class: a class's images do not depend on the others.
        let mut noise = NoiseSource::new(a.seed.wrapping_mul(1_000_003).wrapping_add(label as u64));
        let mut images = Vec::with_capacity(a.per_class);
        while images.len() < a.per_class {
            let b = a.batch.max(1).min(a.per_class - images.len());
            let z = noise.normal([b, cfg.in_channels, cfg.input_size, cfg.input_size], &device);
            let x = Tensor::cat(vec![z.clone(), z], 0);
            let labels = Tensor::<1, Int>::from_ints(vec![label; b].as_slice(), &device);
            let net = model.cfg_denoiser(labels, a.cfg_scale, cfg_channels);
            let x = match a.sampler.as_str() {
                "ddpm" => diffusion.p_sample_loop(&net, x, clip, &mut noise, true),
                _ => diffusion.ddim_sample_loop(&net, x, clip, 0.0, &mut noise, true),
            };
            let x = x.narrow(0, 0, b).narrow(1, 0, cfg.in_channels);
            match &vae {
                Some(vae) => images.extend(vae.decode_to_images(x, b, false)),
                None => images.extend(pixels_to_images(x)),
            }
        }
        for (i, img) in images.iter().enumerate() {
            // Candidates are held in [-1, 1]; PNG wants [0, 1].
            ims3_images::write_png(&a.out.join("png").join(&class.wnid).join(format!("{i:04}.png")), &img.clone().map(|v| (v + 1.0) * 0.5))?;
        }
        ims3_s3::pipeline::write_candidates(&a.out, &class.wnid, &images)?;
        eprintln!("sample: {} ({}) {} images", class.wnid, class.name, images.len());
    }
    Ok(())
}

/// Pixel-space samples `[N, C, H, W]` (C = 1 or 3) to RGB images, a grey plane repeated.
fn pixels_to_images(x: Tensor<4>) -> Vec<ims3_images::Rgb> {
    let [n, c, h, w] = x.dims();
    let v: Vec<f32> = x.into_data().convert::<f32>().try_to_vec::<f32>().expect("f32");
    let plane = h * w;
    (0..n)
        .map(|i| {
            let img = &v[i * c * plane..(i + 1) * c * plane];
            let data = if c == 1 { [img, img, img].concat() } else { img.to_vec() };
            ims3_images::Rgb::new(w, h, data)
        })
        .collect()
}

fn fetch(names: &[String], cache: Option<PathBuf>) -> Result<()> {
    let cache = cache.unwrap_or_else(ims3_fetch::default_cache);
    if names.is_empty() {
        println!("cache: {}", cache.display());
        for a in ims3_fetch::assets() {
            let have = if cache.join(&a.file).is_file() { "present" } else { "absent" };
            let check = if a.sha256.is_some() { "sha256" } else if a.md5.is_some() { "md5" } else if a.sha256_prefix.is_some() { "sha256 prefix" } else { "recorded at first download" };
            println!("{:<28} {:<8} {} ({check})", a.name, have, a.url);
        }
        return Ok(());
    }
    let wanted: Vec<ims3_fetch::Asset> = if names.iter().any(|n| n == "all") {
        ims3_fetch::assets()
    } else {
        names.iter().map(|n| ims3_fetch::asset(n)).collect::<Result<_, _>>()?
    };
    let mut failed = Vec::new();
    for a in &wanted {
        match ims3_fetch::fetch(a, &cache, true) {
            Ok((path, outcome)) => {
                let what = match outcome {
                    ims3_fetch::Outcome::AlreadyThere => "present, checksum ok".to_string(),
                    ims3_fetch::Outcome::Downloaded { resumed_from: 0 } => "downloaded, checksum ok".to_string(),
                    ims3_fetch::Outcome::Downloaded { resumed_from } => format!("resumed at byte {resumed_from}, checksum ok"),
                };
                println!("{}: {what}: {}", a.name, path.display());
                if a.file.ends_with(".tgz") {
                    let dir = ims3_fetch::extract_tgz(&path, &cache)?;
                    println!("{}: unpacked under {}", a.name, dir.display());
                }
            }
            Err(e) => {
                eprintln!("ims3: {}: {e}", a.name);
                failed.push(a.name.clone());
            }
        }
    }
    anyhow::ensure!(failed.is_empty(), "{} of {} assets not fetched: {}", failed.len(), wanted.len(), failed.join(", "));
    Ok(())
}

/// Inserts `--key value` for every key of the `--config` file's table for the chosen
/// subcommand that the command line does not already give.
fn with_config_defaults(mut args: Vec<String>) -> Result<Vec<String>> {
    let Some(i) = args.iter().position(|a| a == "--config") else { return Ok(args) };
    let path = args.get(i + 1).cloned().ok_or_else(|| anyhow::anyhow!("--config needs a file"))?;
    let text = std::fs::read_to_string(&path).map_err(|e| anyhow::anyhow!("{path}: {e}"))?;
    let table: toml::Table = text.parse().map_err(|e: toml::de::Error| anyhow::anyhow!("{path}: {}", e.message().trim()))?;
    args.drain(i..i + 2);
    let known = ["info", "drift", "finetune", "sample", "select", "distill", "eval", "fetch", "reproduce", "convert", "pretrain", "train-encoder"];
    let Some(sub_at) = args.iter().skip(1).position(|a| known.contains(&a.as_str())).map(|p| p + 1) else { return Ok(args) };
    let sub = if args[sub_at] == "distill" { "select".to_string() } else { args[sub_at].clone() };
    for key in table.keys() {
        anyhow::ensure!(known.contains(&key.as_str()), "{path}: table [{key}] is not a subcommand ({})", known.join(", "));
    }
    let Some(toml::Value::Table(opts)) = table.get(&sub) else { return Ok(args) };
    let mut extra = Vec::new();
    for (k, v) in opts {
        let flag = format!("--{}", k.replace('_', "-"));
        if args.iter().any(|a| a == &flag || a.starts_with(&format!("{flag}="))) {
            continue;
        }
        match v {
            toml::Value::Boolean(true) => extra.push(flag),
            toml::Value::Boolean(false) => {}
            toml::Value::String(s) => extra.extend([flag, s.clone()]),
            toml::Value::Array(a) => extra.extend([flag, a.iter().map(|x| x.as_str().map(str::to_string).unwrap_or_else(|| x.to_string())).collect::<Vec<_>>().join(",")]),
            other => extra.extend([flag, other.to_string()]),
        }
    }
    args.splice(sub_at + 1..sub_at + 1, extra);
    Ok(args)
}

fn dataset_info(root: &std::path::Path, dataset: &str) -> Result<()> {
    let spec = ims3_datasets::DatasetSpec::get(dataset)?;
    let splits: Vec<&str> = ["train", "val"].into_iter().filter(|s| root.join(s).is_dir()).collect();
    anyhow::ensure!(!splits.is_empty(), "{}: no train/ or val/ folder", root.display());
    let m = ims3_datasets::Manifest::build(root, &spec, &splits)?;
    println!("dataset:  {} ({} classes)", spec.name, spec.classes.len());
    println!("layout:   {}", m.layout);
    for s in &m.splits {
        println!("{:<9} {} files, sha256 {}", format!("{}:", s.split), s.files, s.sha256);
        for ((wnid, n), c) in s.per_class.iter().zip(&spec.classes) {
            println!("  {wnid} {:>6}  ImageNet {:>3}  {}", n, c.imagenet, c.name);
        }
    }
    Ok(())
}

/// Reads an IDX image/label pair as `[N, 1, H, W]` values in [-1, 1] and labels.
fn read_idx_set(dir: &std::path::Path, prefix: &str) -> Result<ims3_im::InMemoryData> {
    let split = ims3_images::idx::IdxSplit::read(dir, prefix)?;
    Ok(ims3_im::InMemoryData {
        values: split.pixels.iter().map(|&v| v as f32 / 127.5 - 1.0).collect(),
        shape: [1, split.height, split.width],
        labels: split.labels.iter().map(|&l| l as i64).collect(),
    })
}

fn pretrain(a: PretrainArgs, device_spec: &str) -> Result<()> {
    use ims3_im::TrainData;
    let data = read_idx_set(&a.idx, "train")?;
    let classes = data.labels.iter().copied().max().unwrap_or(0) as usize + 1;
    let [c, h, w] = data.shape();
    anyhow::ensure!(h == w && h % a.patch == 0, "images are {h}x{w}: square and divisible by --patch {} needed", a.patch);
    let cfg = ims3_dit::DiTConfig {
        input_size: h,
        patch_size: a.patch,
        in_channels: c,
        hidden_size: a.hidden,
        depth: a.depth,
        num_heads: a.heads,
        mlp_ratio: 4.0,
        class_dropout_prob: 0.1,
        num_classes: classes,
        learn_sigma: true,
        gamma_blocks: a.depth.min(ims3_dit::DIFFFIT_GAMMA_BLOCKS),
    };
    cfg.validate().map_err(anyhow::Error::msg)?;
    let device = ims3_backend::open_device(device_spec)?.autodiff();
    // The initial model is a function of the seed, so a resumed run rebuilds the same one.
    device.seed(a.seed);
    let model = cfg.init(&device);
    let mut train = ims3_im::TrainConfig {
        batch_size: a.batch,
        max_steps: Some(a.steps),
        seed: a.seed,
        checkpoint_every: a.checkpoint_every,
        trainable: ims3_im::Trainable::All,
        ema_decay: a.ema_decay,
        ..Default::default()
    };
    train.validate().map_err(anyhow::Error::msg)?;
    train.optimizer.lr = a.lr;
    train.loss.im = false;
    train.loss.minimax = false;
    eprintln!("pretrain: DiT hidden {} depth {} patch {} on {} images {c}x{h}x{w}, {classes} classes", a.hidden, a.depth, a.patch, data.len());
    let (_, out) = ims3_im::train(model.clone(), &data, &train, &a.out, &ims3_im::RunOptions { show_progress: true, stop_after: a.stop_after })?;
    let ck = ims3_im::Checkpoint::read(out.last_checkpoint.as_ref().ok_or_else(|| anyhow::anyhow!("no checkpoint written"))?)?;
    let ema = ck.apply_to(model, true)?;
    let path = a.out.join("model.safetensors");
    ims3_dit::save_dit(&ema, &cfg, &path)?;
    println!("pretrain: {} of {} steps; EMA weights in {}", out.steps_done, out.total_steps, path.display());
    Ok(())
}

fn train_encoder(a: TrainEncoderArgs, device_spec: &str) -> Result<()> {
    use ims3_eval::classifier::{ClassifierSpec, FitOptions, GreySet, classifier_accuracy, fit_classifier, save_classifier};
    let started = std::time::Instant::now();
    let train = ims3_images::idx::IdxSplit::read(&a.idx, "train")?;
    let test = ims3_images::idx::IdxSplit::read(&a.idx, "t10k")?;
    anyhow::ensure!(train.height == train.width, "{}: images are {}x{}, square ones needed", a.idx.display(), train.height, train.width);
    let n = a.limit.unwrap_or(train.len()).min(train.len());
    let side = train.height;
    let classes = train.labels.iter().copied().max().unwrap_or(0) as usize + 1;
    // Normalisation from the training pixels used.
    let px = &train.pixels[..n * side * side];
    let (mean, std) = grey_stats(px);
    let spec = ClassifierSpec { depth: a.depth, width: a.width, channels: 1, im_size: side, num_classes: classes, norm: "instance".into(), mean, std };
    let opts = FitOptions { epochs: a.epochs, batch_size: a.batch, lr: a.lr, seed: a.seed, ..Default::default() };
    let device = ims3_backend::open_device(device_spec)?;
    let set = GreySet { pixels: px, labels: &train.labels[..n], side };
    eprintln!("train-encoder: ConvNet-{} width {} on {n} images {side}x{side}, {classes} classes, {} epochs", a.depth, a.width, a.epochs);
    let per_epoch = n.div_ceil(a.batch) as u64;
    let pb = ims3_diffusion::progress_bar(per_epoch * a.epochs as u64, "encoder", true);
    let (net, losses) = fit_classifier(&spec, &set, &opts, &device, |e, l| {
        pb.set_message(format!("epoch {} loss {l:.3}", e + 1));
        pb.inc(1);
    })
    .map_err(anyhow::Error::msg)?;
    pb.finish_and_clear();
    let test_set = GreySet { pixels: &test.pixels, labels: &test.labels, side };
    let top1 = classifier_accuracy(&net, &spec, &test_set, &device);
    let record = serde_json::json!({
        "command": std::env::args().collect::<Vec<_>>(),
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

/// Parses a TOML file's text into `T`; an error is one line: `<origin>: line N: <message>`.
pub(crate) fn parse_toml<T: serde::de::DeserializeOwned>(text: &str, origin: &str) -> Result<T> {
    toml::from_str(text).map_err(|e| {
        let line = e.span().map(|s| text[..s.start].lines().count().max(1)).unwrap_or(0);
        anyhow::anyhow!("{origin}: line {line}: {}", e.message().trim())
    })
}

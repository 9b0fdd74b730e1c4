//! `ims3`: the command line of the IMS3 port.

use anyhow::Result;
use burn::prelude::*;
use clap::{Parser, Subcommand};
use std::path::PathBuf;

#[derive(Parser)]
#[command(name = "ims3", version, about = "IMS3 dataset distillation (Inversion-Matching + Selective Subgroup Sampling) in Rust")]
struct Cli {
    /// Compute device: cpu (Flex), cuda[:N] or wgpu[:N|cpu], if compiled in.
    #[arg(long, global = true, default_value = "cpu")]
    device: String,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Inspect a DiT checkpoint: format, detected config, parameter count, missing/unused keys.
    Info {
        /// .pt/.pth (plain or nested state dict) or .safetensors file.
        weights: PathBuf,
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
    Select(SelectArgs),
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
    /// torchvision resnet18 `.pth` (IMAGENET1K_V1, resnet18-f37072fd.pth). Not needed with --centroids.
    #[arg(long)]
    encoder: Option<PathBuf>,
    /// Real training root: `<root>/<wnid>/*` images. Not needed with --centroids.
    #[arg(long)]
    real: Option<PathBuf>,
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
    let cli = Cli::parse();
    if let Err(e) = run(cli) {
        eprintln!("ims3: error: {e:#}");
        std::process::exit(1);
    }
}

fn run(cli: Cli) -> Result<()> {
    match cli.command {
        Command::Info { weights, nested, heads, json } => info(&weights, nested.as_deref(), heads, json),
        Command::Drift { weights, heads, steps, batch, class, seed } => {
            let device = ims3_backend::open_device(&cli.device)?;
            let (model, report) = load_model(&weights, None, heads, &device)?;
            drift(&model, &report.config, &steps, batch, class, seed, &device)
        }
        Command::Select(args) => select(args, &cli.device),
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
            let (Some(enc), Some(real)) = (&a.encoder, &a.real) else {
                anyhow::bail!("--encoder and --real are needed unless --centroids is given");
            };
            let device = ims3_backend::open_device(device_spec)?;
            let model = ims3_features::load_resnet18(enc, &device)?;
            let encoder = ims3_features::ResNet18Encoder::new(model, device, "torchvision-resnet18");
            let opts = RealOptions { max_images: a.real_max, seed: a.seed, skip_unreadable: a.skip_unreadable, ..Default::default() };
            let pb = indicatif::ProgressBar::new(classes.len() as u64).with_style(
                indicatif::ProgressStyle::with_template("encode [{bar:30}] {pos}/{len} classes {per_sec} ETA {eta}").expect("template"),
            );
            let (mut real_c, mut cand_c, mut used, mut skipped) = (vec![], vec![], vec![], vec![]);
            for (class, imgs) in classes.iter().zip(&candidates) {
                let (r, n, s) = pipeline::real_centroid(&encoder, class, &real.join(class), &opts)?;
                tracing::info!(class, used = n, skipped = s, "real centroid");
                real_c.push(r);
                used.push(n);
                skipped.push(s);
                cand_c.push(pipeline::candidate_centroids(&encoder, class, imgs, a.groups, a.ipc)?);
                pb.inc(1);
            }
            pb.finish_and_clear();
            let c = ims3_s3::Centroids { dim: 512, candidates: cand_c, real: real_c };
            (c, encoder.name.clone(), used, skipped)
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

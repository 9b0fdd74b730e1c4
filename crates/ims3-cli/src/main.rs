//! `ims3`: the command line of the IMS3 port. This file parses and dispatches; each subcommand
//! is a module of `commands/` (its clap `Args` and a `run`), and `reproduce` is `pipeline/`.

use anyhow::Result;
use clap::{Parser, Subcommand};
use ims3_backend::DeviceSpec;
use std::path::PathBuf;

mod args;
mod commands;
mod config_file;
mod figures;
mod pipeline;

use commands::{convert, drift, eval, fetch, finetune, info, pretrain, sample, select, train_encoder, train_vae};

#[derive(Parser, Debug)]
#[command(name = "ims3", version, about = "IMS3 dataset distillation (Inversion-Matching + Selective Subgroup Sampling) in Rust")]
pub struct Cli {
    /// Compute device: cpu (Flex), cuda[:N] or wgpu[:N|cpu], if compiled in.
    #[arg(long, global = true, default_value = "cpu")]
    device: DeviceSpec,
    /// Defaults for any subcommand's options from a TOML file: a table per subcommand, keys
    /// named as the long options (`[sample]` `per-class = 50`); the command line wins.
    #[arg(long, global = true)]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Inspect a DiT checkpoint (format, detected config, parameter count, missing/unused keys)
    /// or a dataset folder (layout found, files per class and split, SHA-256; with --dataset).
    Info(info::Args),
    /// Convert a checkpoint to the project's safetensors format (config in the header).
    Convert(convert::Args),
    /// Measure the DDIM inversion drift of a DiT: invert random latents x0 -> x_T over a
    /// respaced schedule and decode them back; prints the round-trip error.
    Drift(drift::Args),
    /// IM fine-tuning (stage 1): Difffit on a pretrained DiT with the IM and Minimax terms.
    /// Resumes from the newest checkpoint in --out; writes checkpoints of the trained
    /// parameters only, metrics.jsonl, data-manifest.json and run.json there.
    Finetune(finetune::Args),
    /// Class-conditional sampling with CFG (the S3 candidates): per class, `--per-class` images
    /// from a (fine-tuned) DiT through the VAE; writes `<out>/<wnid>.safetensors` (what
    /// `ims3 select` reads) and `<out>/png/<wnid>/NNNN.png`. Finished classes are skipped.
    Sample(sample::Args),
    /// S3: encode real and candidate images, select one subgroup per class, write
    /// `final_distilled/train/<wnid>/NNNN.png`, `selection.json` and `centroids.safetensors`.
    #[command(alias = "distill")]
    Select(select::Args),
    /// Evaluate a distilled set: train ResNet-AP-10 / ResNet-18 / ConvNet on it with the
    /// reference protocol, test on real images; writes eval.json and eval.md to --out.
    Eval(eval::Args),
    /// Pretrain a class-conditional DiT from scratch on an IDX dataset (Fashion-MNIST), on its
    /// pixels or (--vae) on a `train-vae` VAE's latents: every parameter but pos_embed trains
    /// (plain DiT loss, no IM/Minimax), with the same checkpoints, resume and metrics as
    /// `finetune`; writes <out>/model.safetensors (EMA).
    Pretrain(pretrain::Args),
    /// Train the small-image encoder: a ConvNet classifier on a whole IDX training set
    /// (Fashion-MNIST), the stand-in for the ImageNet ResNet-18 of S3; reports its test top-1
    /// and writes one safetensors file (config and training record in the header).
    TrainEncoder(train_encoder::Args),
    /// Train a small AutoencoderKL from scratch on an IDX training set (Fashion-MNIST), the
    /// stand-in for sd-vae-ft-ema: writes a hub folder (config.json with the fitted
    /// scaling_factor, diffusion_pytorch_model.safetensors) that the latent commands read.
    TrainVae(train_vae::Args),
    /// Download the official assets (DiT-XL/2, sd-vae-ft-ema, torchvision ResNet-18, fast.ai
    /// ImageWoof/ImageNette, Fashion-MNIST) into the cache with checksum checks; resumes
    /// partial downloads; unpacks the .tgz datasets. Without names: lists the assets.
    Fetch(fetch::Args),
    /// The whole method from a recipe: fine-tune, sample, select, evaluate, results beside the
    /// paper. Finished stages are skipped; --from reruns; --list shows the recipes.
    Reproduce(pipeline::Args),
    /// Write a Slurm submission script for a recipe: one job array per shardable stage
    /// (sampling, S3's encoding, evaluation), dependencies between stages, a last job that
    /// completes and writes the results. `ims3 reproduce --devices` is the one-machine mode.
    Plan(pipeline::plan::Args),
}

fn main() {
    ims3_util::keep_freed_memory();
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_env("IMS3_LOG").unwrap_or_else(|_| "warn,cubecl_common=off".into()))
        .with_writer(std::io::stderr)
        .init();
    // A panic is a bug, but the user still gets one line rather than a backtrace.
    std::panic::set_hook(Box::new(|info| {
        let msg = info
            .payload()
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| info.payload().downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "unknown".into());
        eprintln!("ims3: internal error: {msg} (please report this)");
    }));
    let cli = match config_file::with_config_defaults(std::env::args().collect()) {
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
    let device = &cli.device;
    match cli.command {
        Command::Info(a) => info::run(a),
        Command::Convert(a) => convert::run(a, device),
        Command::Drift(a) => drift::run(a, device),
        Command::Finetune(a) => finetune::run(a, device),
        Command::Sample(a) => sample::run(a, device),
        Command::Select(a) => select::run(a, device),
        Command::Eval(a) => eval::run(a, device),
        Command::Pretrain(a) => pretrain::run(a, device),
        Command::TrainEncoder(a) => train_encoder::run(a, device),
        Command::TrainVae(a) => train_vae::run(a, device),
        Command::Fetch(a) => fetch::run(a),
        Command::Reproduce(a) => pipeline::run(a, device),
        Command::Plan(a) => pipeline::plan::run(a, device),
    }
}

//! `ims3 info`: what a checkpoint holds (format, config, parameters, missing and unused keys)
//! or what a dataset folder holds (layout, files per class and split, SHA-256).

use std::path::{Path, PathBuf};

use anyhow::{Result, ensure};

#[derive(clap::Args, Debug)]
pub struct Args {
    /// .pt/.pth (plain or nested state dict) or .safetensors file, or a dataset root.
    pub weights: PathBuf,
    /// For a dataset root: the spec to check it against.
    #[arg(long, default_value = "imagewoof")]
    pub dataset: String,
    /// Nested state dict to read in a training checkpoint (default: ema, then model).
    #[arg(long)]
    pub nested: Option<String>,
    /// Head count, for a non-standard hidden size (cannot be read off the weights).
    #[arg(long)]
    pub heads: Option<usize>,
    /// Print the report as JSON.
    #[arg(long)]
    pub json: bool,
}

pub fn run(a: Args) -> Result<()> {
    if a.weights.is_dir() { dataset_info(&a.weights, &a.dataset) } else { weights_info(&a.weights, a.nested.as_deref(), a.heads, a.json) }
}

fn weights_info(path: &Path, nested: Option<&str>, heads: Option<usize>, json: bool) -> Result<()> {
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

fn dataset_info(root: &Path, dataset: &str) -> Result<()> {
    let spec = ims3_datasets::DatasetSpec::get(dataset)?;
    let splits: Vec<&str> = ["train", "val"].into_iter().filter(|s| root.join(s).is_dir()).collect();
    ensure!(!splits.is_empty(), "{}: no train/ or val/ folder", root.display());
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

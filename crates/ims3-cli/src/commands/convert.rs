//! `ims3 convert`: a DiT checkpoint to the project's safetensors format (config in the header).

use std::path::PathBuf;

use anyhow::Result;
use ims3_backend::DeviceSpec;

#[derive(clap::Args, Debug)]
pub struct Args {
    pub weights: PathBuf,
    pub output: PathBuf,
    #[arg(long)]
    pub nested: Option<String>,
    /// Head count, for a non-standard hidden size.
    #[arg(long)]
    pub heads: Option<usize>,
}

pub fn run(a: Args, device: &DeviceSpec) -> Result<()> {
    let device = device.open()?;
    let (model, report) = ims3_dit::open_dit(&a.weights, a.nested.as_deref(), a.heads, &device)?;
    ims3_dit::save_dit(&model, &report.config, &a.output)?;
    println!("wrote {}", a.output.display());
    Ok(())
}

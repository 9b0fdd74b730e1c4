//! `cargo xtask <task>`: project chores that are more than one cargo command.
//!
//! - `ci`: what `.ci/run` runs (the README test command and the backend feature checks).

use anyhow::{Context, Result, bail};
use std::process::Command;

/// The README's test command: every crate's tests, on the default Flex backend.
pub const TEST_ARGS: &[&str] = &["test", "--workspace"];

fn cargo(args: &[&str]) -> Result<()> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    eprintln!("xtask: cargo {}", args.join(" "));
    let status = Command::new(&cargo).args(args).status().with_context(|| format!("running {cargo}"))?;
    if !status.success() {
        bail!("cargo {} failed with {status}", args.join(" "));
    }
    Ok(())
}

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        Some("ci") => {
            cargo(TEST_ARGS)?;
            cargo(&["check", "-p", "ims3-cli", "--no-default-features", "--features", "cuda"])?;
            cargo(&["check", "-p", "ims3-cli", "--no-default-features", "--features", "wgpu"])?;
            Ok(())
        }
        _ => {
            eprintln!("usage: cargo xtask <task>\n\ntasks:\n  ci    run the test suite and the cuda/wgpu feature checks");
            std::process::exit(2);
        }
    }
}

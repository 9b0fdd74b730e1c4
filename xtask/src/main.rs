//! `cargo xtask <task>`: project chores that are more than one cargo command.
//!
//! - `ci`: what `.ci/run` runs (the README test command and the backend feature checks).
//! - `reproduce <recipe> [--device d] [--from stage] [--allow-cpu] | --list`: builds `ims3` with
//!   the device's backend and runs `ims3 reproduce` (fine-tune, sample, select, evaluate).
//! - `bench --device <d> [--dtype f32|bf16] [ims3-bench options]`: builds `ims3-bench` with the
//!   device's backend and times IMS3's workloads into `results/bench/<device>.json`.
//! - `bench-cpu [--python P] [--threads 1,2] [--rounds 3] [--workloads w,..]`: IMS3's workloads
//!   (DiT forward, IM step, CFG sampling, ConvNet and ResNet-AP steps) on Flex and on PyTorch's
//!   CPU backend (`benches/torch_cpu.py`), same shapes and thread counts, alternating, into
//!   `results/bench/cpu-flex-vs-torch.json` with the ratios.
//! - `cost`: the cost per stage of `imagenet1k-ipc10` on 1, 8 and 64 GPUs from the measured
//!   per-item figures (`results/bench/imagenet1k-ipc10-cost.md`).

use anyhow::{Context, Result, bail};
use std::process::Command;

mod bench_cpu;
mod cost;

/// The README's test command: every crate's tests, on the default Flex backend.
pub const TEST_ARGS: &[&str] = &["test", "--workspace"];

pub(crate) fn cargo(args: &[&str]) -> Result<()> {
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
        Some("bench") => bench(&args[1..]),
        Some("bench-cpu") => bench_cpu::run(&args[1..]),
        Some("cost") => cost::run(),
        Some("reproduce") => reproduce(&args[1..]),
        _ => {
            eprintln!(
                "usage: cargo xtask <task>\n\ntasks:\n  ci     run the test suite and the cuda/wgpu feature checks\n  bench  --device cuda:0|wgpu|cpu [--dtype f32|bf16] [more ims3-bench options]: time IMS3's workloads into results/bench/<device>.json\n  bench-cpu [--python P] [--threads 1,2] [--rounds 3] [--workloads dit_forward,im_step,...]: IMS3's workloads on Flex vs PyTorch CPU, as ratios (results/bench/cpu-flex-vs-torch.json)\n  reproduce <recipe>|--list [--device cuda:0] [--from <stage>] [--allow-cpu]: the whole method from a recipe (recipes/*.toml)\n  cost   the cost per stage of imagenet1k-ipc10 from the measured per-item figures (results/bench/imagenet1k-ipc10-cost.md)"
            );
            std::process::exit(2);
        }
    }
}

/// `cargo xtask bench --device <d> ...`: the backend feature follows from the device; the
/// output file from the device unless `--out` is given. Other options go to `ims3-bench`.
fn bench(rest: &[String]) -> Result<()> {
    let device = rest.iter().position(|a| a == "--device").and_then(|i| rest.get(i + 1)).cloned().unwrap_or_else(|| "cuda:0".into());
    let feature = match device.split(':').next().unwrap_or("") {
        "cuda" | "gpu" => "cuda",
        "wgpu" => "wgpu",
        "cpu" | "flex" => "flex",
        other => bail!("unknown device {other}: expected cuda[:N], wgpu[:N|cpu] or cpu"),
    };
    // The dev profile builds dependencies (burn, gemm, CubeCL) optimised and without debug
    // assertions (see the workspace Cargo.toml); it shares the test build's compiled dependencies.
    let mut args: Vec<String> = ["run", "-p", "ims3-bench", "--no-default-features", "--features", feature, "--"].iter().map(|s| s.to_string()).collect();
    if !rest.iter().any(|a| a == "--device") {
        args.extend(["--device".into(), device.clone()]);
    }
    if !rest.iter().any(|a| a == "--out") {
        args.extend(["--out".into(), format!("results/bench/{}.json", device.replace(':', "-"))]);
    }
    args.extend(rest.iter().cloned());
    let refs: Vec<&str> = args.iter().map(String::as_str).collect();
    cargo(&refs)
}

/// `cargo xtask reproduce ...`: `ims3 --device <d> reproduce ...` built with the device's backend.
fn reproduce(rest: &[String]) -> Result<()> {
    let mut rest = rest.to_vec();
    let device = match rest.iter().position(|a| a == "--device") {
        Some(i) if i + 1 < rest.len() => {
            let d = rest[i + 1].clone();
            rest.drain(i..i + 2);
            d
        }
        _ => "cpu".to_string(),
    };
    let feature = match device.split(':').next().unwrap_or("") {
        "cuda" | "gpu" => "cuda",
        "wgpu" => "wgpu",
        "cpu" | "flex" => "flex",
        other => bail!("unknown device {other}: expected cuda[:N], wgpu[:N|cpu] or cpu"),
    };
    // Dev profile: dependencies optimised without debug assertions and the host-side image/S3
    // crates at opt-level 3 (see the workspace Cargo.toml), sharing compiled dependencies with
    // the other dev builds instead of a release compile of burn.
    let mut args: Vec<String> = ["run", "-p", "ims3-cli", "--no-default-features", "--features", feature, "--", "--device"].iter().map(|s| s.to_string()).collect();
    args.push(device);
    args.push("reproduce".into());
    args.extend(rest);
    let refs: Vec<&str> = args.iter().map(String::as_str).collect();
    cargo(&refs)
}

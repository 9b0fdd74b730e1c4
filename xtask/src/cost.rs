//! `cargo xtask cost`: the cost of `imagenet1k-ipc10` per stage, from the per-item figures
//! measured on the H200 (`results/bench/cuda-h200.json`, f32) and the S3 selection measured on
//! the CPU (`results/bench/s3-imagenet1k.json`), for 1, 8 and 64 GPUs. Writes
//! `results/bench/imagenet1k-ipc10-cost.md` and prints it.
//!
//! Work items are those `ims3 plan` shards: sampling one per class, evaluation one per seed;
//! fine-tuning is one item (data-parallel fine-tuning is not there yet), S3's selection runs on
//! the CPU. Where no figure was measured the row says so instead of guessing.

use anyhow::{Context, Result};
use serde_json::Value;

fn record<'a>(bench: &'a Value, workload: &str, dtype: &str, batch: u64) -> Result<&'a Value> {
    bench["records"]
        .as_array()
        .context("no records")?
        .iter()
        .find(|r| r["workload"] == workload && r["dtype"] == dtype && r["batch"] == batch)
        .with_context(|| format!("no {workload} {dtype} batch {batch} record"))
}

pub fn run() -> Result<()> {
    let gpu: Value = serde_json::from_str(&std::fs::read_to_string("results/bench/cuda-h200.json").context("results/bench/cuda-h200.json")?)?;
    let s3: Value = serde_json::from_str(&std::fs::read_to_string("results/bench/s3-imagenet1k.json").context("results/bench/s3-imagenet1k.json (cargo run --profile dev -p ims3-s3 --example s3_scale)")?)?;
    let (classes, ipc, groups, steps, seeds, epochs) = (1000.0, 10.0, 5.0, 8000.0, 3.0, 300.0);
    let step_s = record(&gpu, "im_step", "f32", 8)?["median_s"].as_f64().context("median_s")?;
    let sample_ips = record(&gpu, "sample_cfg50", "f32", 10)?["img_per_s"].as_f64().context("img_per_s")?;
    let decode_ips = record(&gpu, "vae_decode", "f32", 8)?["img_per_s"].as_f64().context("img_per_s")?;
    let train_ips = record(&gpu, "resnet_ap_step", "f32", 64)?["img_per_s"].as_f64().context("img_per_s")?;
    let select_s = s3["seconds_median_of_3"].as_f64().context("seconds_median_of_3")?;
    let per_class = groups * ipc;
    // (stage, items, seconds per item, how the item is measured)
    let rows: Vec<(&str, f64, Option<f64>, String)> = vec![
        ("IM fine-tuning (8000 steps, batch 8)", 1.0, Some(steps * step_s), format!("{step_s:.3} s per IM step (im_step f32 b8)")),
        (
            "sampling (50 candidates per class)",
            classes,
            Some(per_class / sample_ips + per_class / decode_ips),
            format!("{sample_ips:.2} img/s CFG-50 sampling (b10) + {decode_ips:.2} img/s VAE decode (b8)"),
        ),
        ("S3 encoding (50 candidates + 200 real per class, ResNet-18)", classes, None, "not measured on a GPU".into()),
        ("S3 selection (1000 x 10 x 512, CPU)", 1.0, Some(select_s), format!("{select_s:.2} s on one CPU core (s3_scale)")),
        (
            "evaluation (ResNet-18, soft labels, 300 epochs x 10,000 images)",
            seeds,
            Some(epochs * classes * ipc / train_ips),
            format!("{train_ips:.1} img/s: the ResNet-AP-10 SGD step at 224 px (b64), standing in for ResNet-18; the teacher's forward is not counted"),
        ),
    ];
    let hours = |s: f64| s / 3600.0;
    let mut md = String::from(
        "# imagenet1k-ipc10: cost per stage\n\n\
         From the per-item figures of ims3 on one H200 (`results/bench/cuda-h200.json`, f32, 2026-11-28: a build without kernel fusion and autotuning) \
         and the CPU S3 selection (`results/bench/s3-imagenet1k.json`). Wall time with n GPUs = ceil(items / n) x time per item (items are independent); \
         GPU-hours = items x time per item. Produced by `cargo xtask cost`.\n\n\
         | stage | work items | per item | GPU-hours | wall, 1 GPU | wall, 8 GPUs | wall, 64 GPUs | per-item figure |\n|---|---|---|---|---|---|---|---|\n",
    );
    let (mut total, mut walls) = (0.0, [0.0f64; 3]);
    for (stage, items, per, how) in &rows {
        match per {
            Some(s) => {
                let gpu = !stage.contains("CPU");
                let wall = |n: f64| (items / n).ceil() * s;
                let w = [wall(1.0), wall(8.0), wall(64.0)];
                if gpu {
                    total += items * s;
                }
                for (t, x) in walls.iter_mut().zip(w) {
                    *t += x;
                }
                md.push_str(&format!(
                    "| {stage} | {items} | {:.0} s | {} | {:.2} h | {:.2} h | {:.2} h | {how} |\n",
                    s,
                    if gpu { format!("{:.1}", hours(items * s)) } else { "(CPU)".into() },
                    hours(w[0]),
                    hours(w[1]),
                    hours(w[2])
                ));
            }
            None => md.push_str(&format!("| {stage} | {items} | - | - | - | - | - | {how} |\n")),
        }
    }
    md.push_str(&format!(
        "| total of the measured stages | | | {:.1} | {:.1} h | {:.1} h | {:.1} h | |\n",
        hours(total),
        hours(walls[0]),
        hours(walls[1]),
        hours(walls[2])
    ));
    md.push_str("\nEvaluation has three items (seeds), so more than three GPUs do not shorten it; fine-tuning is one item until data-parallel fine-tuning lands.\n");
    std::fs::write("results/bench/imagenet1k-ipc10-cost.md", &md)?;
    print!("{md}");
    Ok(())
}

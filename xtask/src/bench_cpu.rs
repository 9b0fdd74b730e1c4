//! `cargo xtask bench-cpu`: IMS3's workloads timed on burn's Flex backend (`ims3-bench`) and on
//! PyTorch's CPU backend (`benches/torch_cpu.py`: the same computation written out in PyTorch),
//! at the same shapes and thread counts, in one run, so a ratio is not skewed by a machine that
//! changed between two runs.
//!
//! Workloads (`--workloads`, all by default), at shapes a CPU times in seconds:
//! - `dit_forward`: DiT-S/2 eval forward, 32x32 latents (256 tokens), batch 4, 10 classes.
//! - `im_step`: the whole IMS3 fine-tuning step (both forwards, MSE + VB + IM + Minimax, backward,
//!   AdamW on the Difffit parameters, EMA), DiT-S/2 at 16x16 latents, 1000 classes, batch 8.
//! - `sample_cfg50`: 50-step DDPM sampling with CFG 4.0, DiT-S/4 at 16x16, 10 classes, batch 2.
//! - `convnet_step`: ConvNet-3 (width 128, instance norm) SGD step on 1x28x28, batch 32 (the
//!   Fashion-MNIST job's evaluation step).
//! - `resnet_ap_step`: ResNet-AP-10 (instance norm) SGD step at 224 px, batch 8.
//!
//! Each round runs PyTorch then ims3 for every workload and thread count (the order alternates
//! between rounds); each side's figure is the median over rounds of its per-round median. The
//! parameter counts of both sides (and for `im_step` the trained ones) must agree, or the run
//! stops: they are the check that both sides built the same network. Output:
//! `results/bench/cpu-flex-vs-torch.json` (written atomically) and a table.

use anyhow::{Context, Result, bail};
use serde_json::{Value, json};
use std::path::{Path, PathBuf};
use std::process::Command;

const WORKLOADS: [&str; 5] = ["dit_forward", "im_step", "sample_cfg50", "convnet_step", "resnet_ap_step"];

struct Opts {
    python: String,
    threads: Vec<usize>,
    rounds: usize,
    workloads: Vec<String>,
    iters: usize,
    warmup: usize,
    out: PathBuf,
}

/// One workload's shape, as the arguments of both sides.
struct Shape {
    what: &'static str,
    batch: usize,
    torch: Vec<String>,
    ims3: Vec<String>,
    /// Timed calls and warm-up calls (sampling loops are long: fewer).
    iters: usize,
    warmup: usize,
}

fn args(v: &[&str]) -> Vec<String> {
    v.iter().map(|s| s.to_string()).collect()
}

/// The shapes of the workloads; both sides' DiT presets are spelled out (`ims3-bench` reads the
/// same preset from `ims3-dit`, and the parameter-count check catches any disagreement).
fn shape(workload: &str, o: &Opts) -> Result<Shape> {
    // DiT-S: hidden 384, depth 12, 6 heads.
    let dit = |patch: &str, size: &str, classes: &str| args(&["--hidden", "384", "--depth", "12", "--heads", "6", "--patch", patch, "--input-size", size, "--classes", classes]);
    let (what, batch, mut torch, ims3, iters, warmup) = match workload {
        "dit_forward" => (
            "DiT-S/2 eval forward, 4x32x32 latents (256 tokens), 10 classes",
            4,
            dit("2", "32", "10"),
            args(&["--model", "DiT-S/2", "--input-size", "32", "--num-classes", "10", "--dit-batch", "4"]),
            o.iters,
            o.warmup,
        ),
        "im_step" => (
            "IMS3 step: DiT-S/2 at 4x16x16, 1000 classes; forward + no-grad reverse-DDIM forward, MSE + VB + IM + Minimax, backward, AdamW on the Difffit parameters, EMA",
            8,
            dit("2", "16", "1000"),
            args(&["--model", "DiT-S/2", "--input-size", "16", "--im-batches", "8"]),
            o.iters,
            o.warmup,
        ),
        "sample_cfg50" => (
            "50-step DDPM sampling, CFG 4.0 on 3 eps channels (2B forwards a step): DiT-S/4 at 4x16x16, 10 classes",
            2,
            dit("4", "16", "10"),
            args(&["--model", "DiT-S/4", "--input-size", "16", "--num-classes", "10", "--sample-batches", "2", "--sample-steps", "50"]),
            2,
            1,
        ),
        "convnet_step" => (
            "ConvNet-3 (width 128, instance norm) on 1x28x28: forward + CE + backward + SGD(0.9, wd 5e-4)",
            32,
            vec![],
            args(&["--convnet-batch", "32"]),
            o.iters,
            o.warmup,
        ),
        "resnet_ap_step" => (
            "ResNet-AP-10 (instance norm) at 3x224x224: forward + CE + backward + SGD(0.9, wd 5e-4)",
            8,
            vec![],
            args(&["--resnet-batch", "8"]),
            o.iters,
            o.warmup,
        ),
        other => bail!("bench-cpu: unknown workload {other} (known: {})", WORKLOADS.join(", ")),
    };
    torch.extend(args(&["--workload", workload, "--batch", &batch.to_string()]));
    let mut ims3_args = args(&["--device", "cpu", "--workloads", workload]);
    ims3_args.extend(ims3);
    Ok(Shape { what, batch, torch, ims3: ims3_args, iters, warmup })
}

fn parse(rest: &[String]) -> Result<Opts> {
    let mut o = Opts {
        python: std::env::var("IMS3_TORCH_PYTHON").unwrap_or_else(|_| "python3".into()),
        threads: vec![1, 2],
        rounds: 3,
        workloads: WORKLOADS.iter().map(|s| s.to_string()).collect(),
        iters: 5,
        warmup: 2,
        out: "results/bench/cpu-flex-vs-torch.json".into(),
    };
    let mut it = rest.iter();
    while let Some(flag) = it.next() {
        let mut val = || it.next().cloned().with_context(|| format!("{flag} needs a value"));
        let num = |v: String| v.parse::<usize>().with_context(|| format!("{flag} {v}: not a number"));
        match flag.as_str() {
            "--python" => o.python = val()?,
            "--threads" => o.threads = val()?.split(',').map(|t| t.trim().parse::<usize>().with_context(|| format!("--threads {t}"))).collect::<Result<_>>()?,
            "--rounds" => o.rounds = num(val()?)?,
            "--workloads" => o.workloads = val()?.split(',').map(|w| w.trim().to_string()).filter(|w| !w.is_empty()).collect(),
            "--iters" => o.iters = num(val()?)?,
            "--warmup" => o.warmup = num(val()?)?,
            "--out" => o.out = val()?.into(),
            other => bail!("bench-cpu: unknown option {other}"),
        }
    }
    if o.threads.is_empty() || o.threads.contains(&0) || o.rounds == 0 || o.iters == 0 || o.workloads.is_empty() {
        bail!("bench-cpu: --threads, --rounds, --iters and --workloads must be non-empty and positive");
    }
    Ok(o)
}

fn run_json(cmd: &mut Command, what: &str) -> Result<Value> {
    let out = cmd.output().with_context(|| format!("starting {what}"))?;
    if !out.status.success() {
        bail!("{what} failed ({}):\n{}", out.status, String::from_utf8_lossy(&out.stderr));
    }
    let text = String::from_utf8_lossy(&out.stdout);
    let line = text.lines().rev().find(|l| l.trim_start().starts_with('{')).with_context(|| format!("{what} printed no JSON:\n{text}"))?;
    serde_json::from_str(line).with_context(|| format!("{what}: bad JSON {line}"))
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn cpu_model() -> String {
    std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| s.lines().find(|l| l.starts_with("model name")).and_then(|l| l.split(':').nth(1)).map(|s| s.trim().to_string()))
        .unwrap_or_else(|| "unknown CPU".into())
}

pub fn run(rest: &[String]) -> Result<()> {
    let o = parse(rest)?;
    let shapes: Vec<(String, Shape)> = o.workloads.iter().map(|w| Ok((w.clone(), shape(w, &o)?))).collect::<Result<_>>()?;
    let script = Path::new("benches/torch_cpu.py");
    if !script.exists() {
        bail!("{} not found: run from the repository root", script.display());
    }
    let probe = Command::new(&o.python).args(["-c", "import torch; print(torch.__version__)"]).output();
    match probe {
        Ok(p) if p.status.success() => eprintln!("xtask: PyTorch {} from {}", String::from_utf8_lossy(&p.stdout).trim(), o.python),
        _ => bail!(
            "{} cannot import torch. Make a venv with PyPI's torch (about 5 GB with its CUDA libraries, which the CPU path loads but does not use):\n  python3 -m venv ~/.cache/ims3-torch && ~/.cache/ims3-torch/bin/pip install torch numpy\nthen pass --python ~/.cache/ims3-torch/bin/python (or set IMS3_TORCH_PYTHON)",
            o.python
        ),
    }
    crate::cargo(&["build", "-p", "ims3-bench"])?;
    let target = std::env::var("CARGO_TARGET_DIR").unwrap_or_else(|_| "target".into());
    let bin = Path::new(&target).join("debug/ims3-bench");
    let tmp = std::env::temp_dir().join(format!("ims3-bench-cpu-{}.json", std::process::id()));

    // per (workload, thread count): (ims3 medians, torch medians, ims3 record, torch record)
    let mut runs: Vec<Vec<(Vec<f64>, Vec<f64>, Value, Value)>> = shapes.iter().map(|_| o.threads.iter().map(|_| (vec![], vec![], Value::Null, Value::Null)).collect()).collect();
    for round in 0..o.rounds {
        for (wi, (w, sh)) in shapes.iter().enumerate() {
            for (ti, &n) in o.threads.iter().enumerate() {
                let torch_first = round % 2 == 0;
                for side in if torch_first { ["torch", "ims3"] } else { ["ims3", "torch"] } {
                    eprintln!("xtask: round {}/{}, {w}, {n} thread(s), {side}", round + 1, o.rounds);
                    let calls = ["--iters".to_string(), sh.iters.to_string(), "--warmup".to_string(), sh.warmup.to_string()];
                    if side == "torch" {
                        let v = run_json(
                            Command::new(&o.python).arg(script).args(&sh.torch).args(&calls).args(["--threads", &n.to_string()]).env("OMP_NUM_THREADS", n.to_string()),
                            "benches/torch_cpu.py",
                        )?;
                        runs[wi][ti].1.push(v["median_s"].as_f64().context("torch median_s")?);
                        runs[wi][ti].3 = v;
                    } else {
                        let _ = std::fs::remove_file(&tmp);
                        let st = Command::new(&bin)
                            .args(&sh.ims3)
                            .args(&calls)
                            .arg("--out")
                            .arg(&tmp)
                            .env("RAYON_NUM_THREADS", n.to_string())
                            .stdout(std::process::Stdio::null())
                            .status()
                            .with_context(|| format!("starting {}", bin.display()))?;
                        if !st.success() {
                            bail!("ims3-bench failed ({st})");
                        }
                        let v: Value = serde_json::from_str(&std::fs::read_to_string(&tmp).with_context(|| format!("reading {}", tmp.display()))?)?;
                        let r = v["records"].get(0).cloned().context("ims3-bench wrote no record")?;
                        runs[wi][ti].0.push(r["median_s"].as_f64().context("ims3 median_s")?);
                        runs[wi][ti].2 = r;
                    }
                }
            }
        }
    }
    let _ = std::fs::remove_file(&tmp);

    let mut rows = Vec::new();
    println!("ims3 (burn Flex) vs PyTorch CPU, {} on {}", std::env::consts::ARCH, cpu_model());
    println!("{:<15} {:>7} {:>6} {:>10} {:>10} {:>8}", "workload", "threads", "batch", "ims3 s", "torch s", "ratio");
    for ((w, sh), per_thread) in shapes.iter().zip(&runs) {
        for (&n, (ims3, torch, ir, tr)) in o.threads.iter().zip(per_thread) {
            for key in ["params", "trainable_params"] {
                let (pi, pt) = (ir[key].as_u64(), tr[key].as_u64());
                if pi != pt {
                    bail!("{w}: {key} differ (ims3 {pi:?}, torch {pt:?}): the two sides did not build the same network");
                }
            }
            let (mi, mt) = (median(ims3.clone()), median(torch.clone()));
            let ratio = mt / mi; // > 1: ims3 is faster
            println!("{w:<15} {n:>7} {:>6} {mi:>10.4} {mt:>10.4} {ratio:>7.2}x", sh.batch);
            rows.push(json!({
                "workload": w, "shape": sh.what, "batch": sh.batch, "threads": n,
                "ims3_median_s": mi, "torch_median_s": mt,
                "ims3_img_per_s": sh.batch as f64 / mi, "torch_img_per_s": sh.batch as f64 / mt,
                "ratio_ims3_over_torch_speed": ratio,
                "ims3_round_medians_s": ims3, "torch_round_medians_s": torch,
                "ims3_first_call_s": ir["first_call_s"], "torch_first_call_s": tr["first_call_s"],
                "params": ir["params"], "trainable_params": ir["trainable_params"], "torch": tr["framework"],
                "iters_per_round": sh.iters, "warmup_per_round": sh.warmup,
            }));
        }
    }
    let report = json!({
        "what": "IMS3's workloads (random weights), burn Flex (ims3-bench, dev profile) vs PyTorch CPU (benches/torch_cpu.py), same shapes and threads, one run",
        "command": std::iter::once("cargo xtask bench-cpu".to_string()).chain(rest.iter().cloned()).collect::<Vec<_>>().join(" "),
        "machine": { "cpu": cpu_model(), "arch": std::env::consts::ARCH, "cores": std::thread::available_parallelism().map_or(1, |n| n.get()) },
        "rounds": o.rounds,
        "ratio": "torch median / ims3 median: above 1, ims3 is faster",
        "rows": rows,
    });
    if let Some(dir) = o.out.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    let tmp_out = o.out.with_extension("json.tmp");
    std::fs::write(&tmp_out, serde_json::to_string_pretty(&report)? + "\n").with_context(|| format!("writing {}", tmp_out.display()))?;
    std::fs::rename(&tmp_out, &o.out).with_context(|| format!("renaming onto {}", o.out.display()))?;
    eprintln!("xtask: wrote {}", o.out.display());
    Ok(())
}

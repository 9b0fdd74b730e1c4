//! `cargo xtask bench-cpu`: one DiT forward shape timed on burn's Flex backend (`ims3-bench`)
//! and on PyTorch's CPU backend (`benches/torch_dit_cpu.py`), at the same thread counts, in one
//! run, so the ratio is not skewed by a machine that changed between two runs.
//!
//! Each round runs PyTorch then ims3 for every thread count (the order alternates between rounds);
//! each side's figure is the median over rounds of its per-round median. The parameter counts of
//! both networks must agree, or the run stops: they are the check that both sides built the same
//! network. Output: `results/bench/cpu-flex-vs-torch.json` (written atomically) and a table.

use anyhow::{Context, Result, bail};
use serde_json::{Value, json};
use std::path::{Path, PathBuf};
use std::process::Command;

struct Opts {
    python: String,
    threads: Vec<usize>,
    rounds: usize,
    model: String,
    input_size: usize,
    batch: usize,
    classes: usize,
    iters: usize,
    warmup: usize,
    out: PathBuf,
}

/// (hidden, depth, heads) of the paper's sizes, for the PyTorch side; `ims3-bench` reads the same
/// preset from `ims3-dit`, and the parameter-count check catches any disagreement.
fn size_of(model: &str) -> Result<(usize, usize, usize, usize)> {
    let rest = model.strip_prefix("DiT-").unwrap_or(model);
    let (size, patch) = rest.split_once('/').with_context(|| format!("model {model}: expected DiT-<S|B|L|XL>/<2|4|8>"))?;
    let patch: usize = patch.parse().with_context(|| format!("model {model}: patch size"))?;
    let (h, d, n) = match size {
        "S" => (384, 12, 6),
        "B" => (768, 12, 12),
        "L" => (1024, 24, 16),
        "XL" => (1152, 28, 16),
        other => bail!("model {model}: unknown size {other}"),
    };
    Ok((h, d, n, patch))
}

fn parse(rest: &[String]) -> Result<Opts> {
    let mut o = Opts {
        python: std::env::var("IMS3_TORCH_PYTHON").unwrap_or_else(|_| "python3".into()),
        threads: vec![1, 2],
        rounds: 3,
        model: "DiT-S/2".into(),
        input_size: 32,
        batch: 4,
        classes: 10,
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
            "--model" => o.model = val()?,
            "--input-size" => o.input_size = num(val()?)?,
            "--batch" => o.batch = num(val()?)?,
            "--classes" => o.classes = num(val()?)?,
            "--iters" => o.iters = num(val()?)?,
            "--warmup" => o.warmup = num(val()?)?,
            "--out" => o.out = val()?.into(),
            other => bail!("bench-cpu: unknown option {other}"),
        }
    }
    if o.threads.is_empty() || o.threads.contains(&0) || o.rounds == 0 || o.iters == 0 {
        bail!("bench-cpu: --threads, --rounds and --iters must be positive");
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
    let (hidden, depth, heads, patch) = size_of(&o.model)?;
    let script = Path::new("benches/torch_dit_cpu.py");
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

    // per thread count: (ims3 medians, torch medians, ims3 record, torch record)
    let mut runs: Vec<(Vec<f64>, Vec<f64>, Value, Value)> = o.threads.iter().map(|_| (vec![], vec![], Value::Null, Value::Null)).collect();
    for round in 0..o.rounds {
        for (ti, &n) in o.threads.iter().enumerate() {
            let torch_first = round % 2 == 0;
            for side in if torch_first { ["torch", "ims3"] } else { ["ims3", "torch"] } {
                eprintln!("xtask: round {}/{}, {n} thread(s), {side}", round + 1, o.rounds);
                if side == "torch" {
                    let v = run_json(
                        Command::new(&o.python).arg(script).args([
                            "--hidden", &hidden.to_string(), "--depth", &depth.to_string(), "--heads", &heads.to_string(),
                            "--patch", &patch.to_string(), "--input-size", &o.input_size.to_string(), "--classes", &o.classes.to_string(),
                            "--batch", &o.batch.to_string(), "--threads", &n.to_string(), "--iters", &o.iters.to_string(),
                            "--warmup", &o.warmup.to_string(),
                        ]).env("OMP_NUM_THREADS", n.to_string()),
                        "benches/torch_dit_cpu.py",
                    )?;
                    runs[ti].1.push(v["median_s"].as_f64().context("torch median_s")?);
                    runs[ti].3 = v;
                } else {
                    let _ = std::fs::remove_file(&tmp);
                    let st = Command::new(&bin)
                        .args([
                            "--device", "cpu", "--workloads", "dit_forward", "--model", &o.model, "--input-size", &o.input_size.to_string(),
                            "--num-classes", &o.classes.to_string(), "--dit-batch", &o.batch.to_string(), "--iters", &o.iters.to_string(),
                            "--warmup", &o.warmup.to_string(), "--out",
                        ])
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
                    runs[ti].0.push(r["median_s"].as_f64().context("ims3 median_s")?);
                    runs[ti].2 = r;
                }
            }
        }
    }
    let _ = std::fs::remove_file(&tmp);

    let mut rows = Vec::new();
    println!("DiT forward, {} at {}x{} latents, batch {}, {} classes, {} on {}", o.model, o.input_size, o.input_size, o.batch, o.classes, std::env::consts::ARCH, cpu_model());
    println!("{:>7} {:>12} {:>12} {:>10} {:>10} {:>8}", "threads", "ims3 s", "torch s", "ims3 img/s", "torch img/s", "ratio");
    for (&n, (ims3, torch, ir, tr)) in o.threads.iter().zip(&runs) {
        let (pi, pt) = (ir["params"].as_u64(), tr["params"].as_u64());
        if pi != pt {
            bail!("parameter counts differ (ims3 {pi:?}, torch {pt:?}): the two sides did not build the same network");
        }
        let (mi, mt) = (median(ims3.clone()), median(torch.clone()));
        let ratio = mt / mi; // > 1: ims3 is faster
        println!("{n:>7} {mi:>12.4} {mt:>12.4} {:>10.2} {:>10.2} {ratio:>7.2}x", o.batch as f64 / mi, o.batch as f64 / mt);
        rows.push(json!({
            "threads": n,
            "ims3_median_s": mi, "torch_median_s": mt,
            "ims3_img_per_s": o.batch as f64 / mi, "torch_img_per_s": o.batch as f64 / mt,
            "ratio_ims3_over_torch_speed": ratio,
            "ims3_round_medians_s": ims3, "torch_round_medians_s": torch,
            "ims3_first_call_s": ir["first_call_s"], "torch_first_call_s": tr["first_call_s"],
            "params": pi, "torch": tr["framework"],
        }));
    }
    let report = json!({
        "what": "DiT forward (eval mode, random weights), burn Flex vs PyTorch CPU, same shapes and threads, one run",
        "command": std::iter::once("cargo xtask bench-cpu".to_string()).chain(rest.iter().cloned()).collect::<Vec<_>>().join(" "),
        "machine": { "cpu": cpu_model(), "arch": std::env::consts::ARCH, "cores": std::thread::available_parallelism().map_or(1, |n| n.get()) },
        "model": o.model, "input_size": o.input_size, "batch": o.batch, "classes": o.classes,
        "rounds": o.rounds, "iters_per_round": o.iters, "warmup_per_round": o.warmup,
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

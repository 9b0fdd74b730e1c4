//! `ims3-bench`: times the workloads of IMS3 at their real shapes (random weights) on one
//! device and dtype, after warm-up, with the device synchronised around every timed call.
//!
//! Workloads (`--workloads`, in this order by default):
//! - `dit_forward`: DiT-XL/2 forward, 256 px (latents 4 x 32 x 32), batch `--dit-batch` (64).
//! - `im_step`: the full IM fine-tune step (diffusion-loss forward, no-grad reverse-DDIM forward,
//!   backward, AdamW on the 1,739,552 Difffit parameters, EMA), batches `--im-batches` (8, 32).
//! - `sample_cfg50`: 50-step DDPM `p_sample_loop` with CFG 4.0, batches `--sample-batches` (10, 50).
//! - `vae_decode`: SD-VAE decoder, 4 x 32 x 32 -> 3 x 256 x 256, batch 8.
//! - `resnet_ap_step`: ResNet-AP-10 (instance norm) SGD step at 224 px, batch 64.
//! - `convnet_step` (not in the default list): ConvNet-3 (width 128, instance norm) SGD step on
//!   1 x 28 x 28, batch `--convnet-batch` (32): the Fashion-MNIST job's evaluation step.
//!
//! Each record: first call (kernel compilation + autotune + run), median and mean of the timed
//! calls, images/s, and the allocator's reserved bytes after the workload (its high-water mark:
//! the pools keep their pages). Records are merged into `--out` (JSON, written atomically after
//! every workload, so a run cut short keeps what finished) and printed beside the PyTorch anchors
//! of `benches/anchors.json`.

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context, Result, bail};
use burn::module::{Module, ModuleMapper, Param};
use burn::optim::{GradientsParams, SgdConfig, decay::WeightDecayConfig, momentum::MomentumConfig};
use burn::prelude::*;
use burn::tensor::{Distribution, FloatDType};
use clap::Parser;
use serde::{Deserialize, Serialize};

#[derive(Parser, Debug)]
#[command(name = "ims3-bench", about = "Times IMS3's workloads on one device; writes JSON beside the PyTorch anchors")]
struct Args {
    /// cpu | cuda[:N] | wgpu[:N|cpu]
    #[arg(long, default_value = "cuda:0")]
    device: String,
    /// Float dtype: f32, bf16 or f16; `--cast` says of which tensors.
    #[arg(long, default_value = "f32")]
    dtype: String,
    /// What `--dtype` applies to: `device` (every tensor: the device's default float dtype) or
    /// `weights` (the DiT's weights only: `ims3 sample --dtype`'s path for dit_forward and
    /// sample_cfg50, the sampler's own arithmetic staying f32; `ims3 finetune --dtype`'s mixed
    /// precision for im_step, frozen weights bf16 and the trained parameters, AdamW and EMA f32).
    #[arg(long, default_value = "device")]
    cast: String,
    /// Comma-separated workloads (dit_forward, im_step, sample_cfg50, vae_decode, resnet_ap_step,
    /// convnet_step).
    #[arg(long, default_value = "dit_forward,im_step,sample_cfg50,vae_decode,resnet_ap_step")]
    workloads: String,
    /// DiT preset (DiT-XL/2 is the real one; smaller ones for CPU smoke runs).
    #[arg(long, default_value = "DiT-XL/2")]
    model: String,
    /// Latent side length, overriding the preset's 32 (the SD-VAE latent of a 256 px image).
    #[arg(long)]
    input_size: Option<usize>,
    /// Number of classes, overriding the preset's 1000.
    #[arg(long)]
    num_classes: Option<usize>,
    #[arg(long, default_value_t = 64)]
    dit_batch: usize,
    #[arg(long, value_delimiter = ',', default_value = "8,32")]
    im_batches: Vec<usize>,
    #[arg(long, value_delimiter = ',', default_value = "10,50")]
    sample_batches: Vec<usize>,
    #[arg(long, default_value_t = 50)]
    sample_steps: usize,
    #[arg(long, default_value_t = 8)]
    vae_batch: usize,
    #[arg(long, default_value_t = 64)]
    resnet_batch: usize,
    #[arg(long, default_value_t = 32)]
    convnet_batch: usize,
    /// Timed calls per workload (after `--warmup` untimed ones; the first of those is reported
    /// as the start-up cost).
    #[arg(long, default_value_t = 10)]
    iters: usize,
    #[arg(long, default_value_t = 2)]
    warmup: usize,
    /// JSON file the records are merged into.
    #[arg(long)]
    out: PathBuf,
    /// The PyTorch anchors.
    #[arg(long, default_value = "benches/anchors.json")]
    anchors: PathBuf,
    /// A label for the machine (default: the device string).
    #[arg(long)]
    machine: Option<String>,
    /// How inference attention is launched: auto (padded head dim on GPUs), direct or padded.
    #[arg(long, default_value = "auto")]
    attention: String,
    /// The IM step's AdamW/EMA state: flat (one buffer, the default) or per-tensor.
    #[arg(long, default_value = "flat")]
    update: String,
    /// A label for this run's records (e.g. `cold-cache`, `warm-cache`); records are replaced
    /// only by ones with the same workload, dtype, batch, model and label.
    #[arg(long, default_value = "")]
    label: String,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
struct Record {
    workload: String,
    model: String,
    dtype: String,
    batch: usize,
    first_call_s: f64,
    iters: usize,
    median_s: f64,
    mean_s: f64,
    min_s: f64,
    img_per_s: f64,
    pool_reserved_gib: Option<f64>,
    note: String,
    #[serde(default)]
    label: String,
    /// Seconds from process start until the device had run its first operation.
    #[serde(default)]
    device_ready_s: f64,
    /// Parameters of the timed network (all of them, trainable or not).
    #[serde(default)]
    params: Option<usize>,
    /// Parameters the step trains (im_step: the Difffit set).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    trainable_params: Option<usize>,
    /// CPU worker threads (Flex: rayon's pool, `RAYON_NUM_THREADS` or every core); none on GPUs.
    #[serde(default)]
    cpu_threads: Option<usize>,
    /// `--attention` of the run (inference attention's launch).
    #[serde(default)]
    attention: String,
}

#[derive(Clone, Debug, Serialize, Deserialize, Default)]
struct Report {
    machine: String,
    device: String,
    command: Vec<String>,
    records: Vec<Record>,
}

/// Adds N(0, 0.02) to every parameter: the reference init zeroes adaLN and output layers, and
/// timing on zeros can flatter the kernels.
fn jitter<M: Module>(m: M) -> M {
    struct J;
    impl ModuleMapper for J {
        fn map_float<const D: usize>(&mut self, param: Param<Tensor<D>>) -> Param<Tensor<D>> {
            let (id, t, mapper) = param.consume();
            let grad = t.is_require_grad();
            let n = t.random_like(Distribution::Normal(0.0, 0.02));
            let v = (t.detach() + n).detach();
            Param::from_mapped_value(id, if grad { v.require_grad() } else { v }, mapper)
        }
    }
    m.map(&mut J)
}

struct Timer<'a> {
    device: &'a Device,
    warmup: usize,
    iters: usize,
}

impl Timer<'_> {
    /// (first call, timed calls) in seconds, synchronising after each call.
    fn run(&self, mut f: impl FnMut()) -> Result<(f64, Vec<f64>)> {
        let mut first = 0.0;
        for i in 0..self.warmup.max(1) {
            let s = Instant::now();
            f();
            self.device.sync().map_err(|e| anyhow::anyhow!("device sync: {e:?}"))?;
            if i == 0 {
                first = s.elapsed().as_secs_f64();
            }
        }
        let mut times = Vec::with_capacity(self.iters);
        for _ in 0..self.iters.max(1) {
            let s = Instant::now();
            f();
            self.device.sync().map_err(|e| anyhow::anyhow!("device sync: {e:?}"))?;
            times.push(s.elapsed().as_secs_f64());
        }
        Ok((first, times))
    }
}

fn record(workload: &str, model: &str, dtype: &str, batch: usize, images: usize, (first, times): (f64, Vec<f64>), device: &Device, note: &str) -> Record {
    let mut sorted = times.clone();
    sorted.sort_by(f64::total_cmp);
    let median = sorted[sorted.len() / 2];
    let mean = times.iter().sum::<f64>() / times.len() as f64;
    let reserved = device.memory_pool_usage().map(|u| u.bytes_reserved as f64 / (1u64 << 30) as f64);
    Record {
        workload: workload.into(),
        model: model.into(),
        dtype: dtype.into(),
        batch,
        first_call_s: first,
        iters: times.len(),
        median_s: median,
        mean_s: mean,
        min_s: sorted[0],
        img_per_s: images as f64 / median,
        pool_reserved_gib: reserved,
        note: note.into(),
        label: String::new(),
        device_ready_s: 0.0,
        params: None,
        trainable_params: None,
        cpu_threads: None,
        attention: String::new(),
    }
}

/// The preset `--model` with the `--input-size` / `--num-classes` overrides.
fn dit_config(a: &Args) -> Result<ims3_dit::DiTConfig> {
    let name = &a.model;
    let mut cfg = ims3_dit::DiTConfig::preset(name).with_context(|| format!("unknown DiT preset {name}; known: {}", ims3_dit::DiTConfig::preset_names().join(", ")))?;
    if let Some(s) = a.input_size {
        cfg.input_size = s;
    }
    if let Some(c) = a.num_classes {
        cfg.num_classes = c;
    }
    cfg.validate().with_context(|| format!("{name} with --input-size {:?}", a.input_size))?;
    Ok(cfg)
}

fn labels(n: usize, classes: usize, device: &Device) -> Tensor<1, Int> {
    let v: Vec<i64> = (0..n).map(|i| ((i * 37) % classes) as i64).collect();
    Tensor::<1, Int>::from_ints(v.as_slice(), device)
}

/// The DiT's weights in `--dtype` when `--cast weights` (on a device left at f32).
fn weights_dtype(a: &Args, model: ims3_dit::DiT) -> Result<ims3_dit::DiT> {
    Ok(if a.cast == "weights" { model.to_dtype(float_dtype(&a.dtype)?) } else { model })
}

fn float_dtype(name: &str) -> Result<FloatDType> {
    Ok(match name {
        "f32" => FloatDType::F32,
        "bf16" => FloatDType::BF16,
        "f16" => FloatDType::F16,
        d => bail!("unknown dtype {d}: expected f32, bf16 or f16"),
    })
}

fn dit_forward(a: &Args, device: &Device, timer: &Timer) -> Result<Record> {
    let cfg = dit_config(a)?;
    let model = weights_dtype(a, jitter(cfg.init(device)))?;
    let b = a.dit_batch;
    let s = cfg.input_size;
    let x = Tensor::<4>::random([b, cfg.in_channels, s, s], Distribution::Normal(0.0, 1.0), device);
    let t = Tensor::<1>::from_floats((0..b).map(|i| ((i * 997) % 1000) as f32).collect::<Vec<_>>().as_slice(), device);
    let y = labels(b, cfg.num_classes, device);
    let times = timer.run(|| {
        let _ = model.forward(x.clone(), t.clone(), y.clone());
    })?;
    let mut r = record("dit_forward", &a.model, &a.dtype, b, b, times, device, &format!("eval-mode forward, fused attention, {s}x{s} latents, {} {}", a.dtype, cast_note(a)));
    r.params = Some(model.num_params());
    Ok(r)
}

fn im_step(a: &Args, device: &Device, timer: &Timer, b: usize) -> Result<Record> {
    use ims3_im::{StepBatch, TrainConfig, TrainState};
    let ad = device.clone().autodiff();
    let cfg = dit_config(a)?;
    // The trainer's own step (IMS3's loss, AdamW, EMA) on the reference recipe.
    let layout = match a.update.as_str() {
        "flat" => ims3_im::UpdateLayout::Flat,
        "per-tensor" => ims3_im::UpdateLayout::PerTensor,
        other => bail!("unknown --update {other}: expected flat or per-tensor"),
    };
    // `--cast weights`: `ims3 finetune --dtype`'s mixed precision (f32 or bf16).
    let dtype = if a.cast == "weights" { a.dtype.parse::<ims3_dit::Precision>().context("im_step --cast weights")? } else { ims3_dit::Precision::F32 };
    let train = TrainConfig { dtype, ..TrainConfig::default() };
    let mut state = TrainState::with_layout(jitter(cfg.init(&ad)), &train, layout);
    let s = cfg.input_size;
    let mut k = 0usize;
    let times = timer.run(|| {
        k += 1;
        let batch = StepBatch {
            x0: Tensor::<4>::random([b, cfg.in_channels, s, s], Distribution::Normal(0.0, 1.0), &ad),
            labels: (0..b).map(|i| ((i + k) % 10) as i64).collect(),
            t: (0..b).map(|i| (i * 131 + k * 17) % 1000).collect(),
            noise: Tensor::<4>::random([b, cfg.in_channels, s, s], Distribution::Normal(0.0, 1.0), &ad),
            drop_main: (0..b).map(|i| (i + k) % 10 == 0).collect(),
            drop_reverse: (0..b).map(|i| (i + 2 * k) % 10 == 0).collect(),
        };
        let _ = state.step(&batch);
    })?;
    let mut r = record("im_step", &a.model, &a.dtype, b, b, times, device, &format!("mse+vb+IM+Minimax, AdamW on Difffit params, EMA ({} update), {} {}", a.update, a.dtype, cast_note(a)));
    r.params = Some(state.model().num_params());
    r.trainable_params = Some(state.trainable_parameters());
    Ok(r)
}

fn cast_note(a: &Args) -> &'static str {
    if a.cast == "weights" { "weights (sampler, trained parameters, AdamW, EMA f32)" } else { "everywhere" }
}

fn sample_cfg(a: &Args, device: &Device, timer: &Timer, b: usize) -> Result<Record> {
    let cfg = dit_config(a)?;
    let model = weights_dtype(a, jitter(cfg.init(device)))?;
    let diffusion = ims3_diffusion::GaussianDiffusion::dit(&ims3_diffusion::Respacing::Sections(vec![a.sample_steps]))?;
    let s = cfg.input_size;
    let y = labels(b, cfg.num_classes - 1, device);
    let params = model.num_params();
    let net = model.cfg_denoiser(y, 4.0, ims3_dit::CfgChannels::FirstThree);
    let mut noise = ims3_diffusion::NoiseSource::new(0);
    let times = timer.run(|| {
        let z = Tensor::<4>::random([b, cfg.in_channels, s, s], Distribution::Normal(0.0, 1.0), device);
        let z = Tensor::cat(vec![z.clone(), z], 0);
        let _ = diffusion.p_sample_loop(&net, z, false, &mut noise, false);
    })?;
    let mut r = record("sample_cfg50", &a.model, &a.dtype, b, b, times, device, &format!("{}-step p_sample_loop, CFG 4.0 (2B forwards per step), host noise, {} {}", a.sample_steps, a.dtype, cast_note(a)));
    r.params = Some(params);
    Ok(r)
}

fn vae_decode(a: &Args, device: &Device, timer: &Timer) -> Result<Record> {
    let vae = jitter(ims3_vae::VaeConfig::sd().init(device));
    let b = a.vae_batch;
    let z = Tensor::<4>::random([b, 4, 32, 32], Distribution::Normal(0.0, 1.0), device);
    let times = timer.run(|| {
        let _ = vae.decode(z.clone());
    })?;
    Ok(record("vae_decode", "sd-vae-ft-ema", &a.dtype, b, b, times, device, "4x32x32 -> 3x256x256"))
}

/// One classifier training step as the evaluation runs it: forward, cross-entropy, backward,
/// SGD (momentum 0.9, no dampening, weight decay 5e-4, lr 0.01).
fn sgd_step<M: Module>(model: M, forward: impl Fn(&M, Tensor<4>) -> Tensor<2>, x: Tensor<4>, classes: usize, timer: &Timer) -> Result<((f64, Vec<f64>), usize)> {
    let device = x.device();
    let params = model.num_params();
    let mut model = Some(model);
    let mut opt = SgdConfig::new()
        .with_momentum(Some(MomentumConfig { momentum: 0.9, dampening: 0.0, nesterov: false }))
        .with_weight_decay(Some(WeightDecayConfig::new(5e-4)))
        .init();
    let ce = burn::nn::loss::CrossEntropyLossConfig::new().init(&device);
    let y = labels(x.dims()[0], classes, &device);
    let times = timer.run(|| {
        let _one_graph_at_a_time = ims3_util::autodiff_guard();
        let m = model.take().expect("model");
        let loss = ce.forward(forward(&m, x.clone()), y.clone());
        let grads = GradientsParams::from_grads(loss.backward(), &m);
        model = Some(opt.step(0.01, m, grads));
    })?;
    Ok((times, params))
}

fn resnet_ap_step(a: &Args, device: &Device, timer: &Timer) -> Result<Record> {
    let ad = device.clone().autodiff();
    let b = a.resnet_batch;
    let x = Tensor::<4>::random([b, 3, 224, 224], Distribution::Normal(0.0, 1.0), &ad);
    let (times, params) = sgd_step(ims3_nets::ResNetAPConfig::ap10(10, 224).init(&ad)?, |m, x| m.forward(x), x, 10, timer)?;
    let mut r = record("resnet_ap_step", "ResNet-AP-10 (instance norm)", &a.dtype, b, b, times, device, "forward + CE + backward + SGD(0.9, wd 5e-4), 224 px");
    r.params = Some(params);
    Ok(r)
}

/// The Fashion-MNIST job's evaluation step: ConvNet-3 (width 128, instance norm) on 1 x 28 x 28.
fn convnet_step(a: &Args, device: &Device, timer: &Timer) -> Result<Record> {
    let ad = device.clone().autodiff();
    let b = a.convnet_batch;
    let x = Tensor::<4>::random([b, 1, 28, 28], Distribution::Normal(0.0, 1.0), &ad);
    let (times, params) = sgd_step(ims3_nets::ConvNetConfig::new(10, 3, 1, 28).init(&ad)?, |m, x| m.forward(x), x, 10, timer)?;
    let mut r = record("convnet_step", "ConvNet-3 (width 128, instance norm)", &a.dtype, b, b, times, device, "forward + CE + backward + SGD(0.9, wd 5e-4), 1 x 28 x 28");
    r.params = Some(params);
    Ok(r)
}

#[derive(Deserialize)]
struct Anchors {
    anchors: Vec<serde_json::Value>,
}

fn print_against_anchors(records: &[Record], anchors: &Path) {
    let anchors: Vec<serde_json::Value> = std::fs::read_to_string(anchors)
        .ok()
        .and_then(|s| serde_json::from_str::<Anchors>(&s).ok())
        .map(|a| a.anchors)
        .unwrap_or_default();
    println!("{:<15} {:>5} {:>6} {:>10} {:>10} {:>9}  vs PyTorch (H200)", "workload", "dtype", "batch", "first s", "median s", "img/s");
    for r in records {
        let mut line = format!("{:<15} {:>5} {:>6} {:>10.3} {:>10.4} {:>9.2} ", r.workload, r.dtype, r.batch, r.first_call_s, r.median_s, r.img_per_s);
        for an in anchors.iter().filter(|an| an["workload"] == r.workload.as_str() && an["batch"].as_u64() == Some(r.batch as u64)) {
            if an.get("dtype").is_some_and(|d| d != r.dtype.as_str()) {
                continue;
            }
            if let Some(v) = an["img_per_s"].as_f64() {
                line.push_str(&format!(" | {:.2}x {} ({v})", r.img_per_s / v, an["pytorch"].as_str().unwrap_or("")));
            }
        }
        println!("{line}");
    }
}

fn main() -> Result<()> {
    ims3_util::keep_freed_memory();
    let started = Instant::now();
    let a = Args::parse();
    let spec: ims3_backend::DeviceSpec = a.device.parse()?;
    let mut device = spec.device()?;
    let dtype = float_dtype(&a.dtype)?;
    match a.cast.as_str() {
        "device" => {}
        "weights" => {
            if let Some(w) = a.workloads.split(',').map(str::trim).find(|w| !["dit_forward", "sample_cfg50", "im_step", ""].contains(w)) {
                bail!("--cast weights: workload {w} has no weights-only path (dit_forward, sample_cfg50 and im_step have)");
            }
        }
        other => bail!("unknown --cast {other}: expected device or weights"),
    }
    if dtype != FloatDType::F32 && !device.supports_dtype(dtype) {
        bail!("{} does not support {} arithmetic", a.device, a.dtype);
    }
    if dtype != FloatDType::F32 && a.cast == "device" {
        device.configure(burn::tensor::DeviceConfig::default().float_dtype(dtype)).map_err(|e| anyhow::anyhow!("configuring {}: {e:?}", a.dtype))?;
    }
    match a.attention.as_str() {
        "auto" => ims3_dit::AttentionKernel::Auto,
        "direct" => ims3_dit::AttentionKernel::Direct,
        "padded" => ims3_dit::AttentionKernel::PadHeadDim,
        other => bail!("unknown --attention {other}: expected auto, direct or padded"),
    }
    .set();
    let _ = Tensor::<1>::ones([4], &device).sum().into_scalar::<f32>();
    let ready_s = started.elapsed().as_secs_f64();
    eprintln!("device {} ready in {ready_s:.2} s", a.device);

    let mut report: Report = std::fs::read_to_string(&a.out).ok().and_then(|s| serde_json::from_str(&s).ok()).unwrap_or_default();
    report.machine = a.machine.clone().unwrap_or_else(|| a.device.clone());
    report.device = a.device.clone();
    report.command = std::env::args().collect();
    let cpu_threads = matches!(spec, ims3_backend::DeviceSpec::Cpu).then(|| {
        std::env::var("RAYON_NUM_THREADS").ok().and_then(|v| v.parse().ok()).filter(|&n: &usize| n > 0).unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()))
    });
    let timer = Timer { device: &device, warmup: a.warmup, iters: a.iters };
    let mut fresh = Vec::new();
    for w in a.workloads.split(',').map(str::trim).filter(|w| !w.is_empty()) {
        let recs: Vec<Record> = match w {
            "dit_forward" => vec![dit_forward(&a, &device, &timer)?],
            "im_step" => a.im_batches.iter().map(|&b| im_step(&a, &device, &timer, b)).collect::<Result<_>>()?,
            "sample_cfg50" => {
                // Full loops are long: fewer timed calls.
                let t = Timer { device: &device, warmup: 1, iters: a.iters.clamp(1, 2) };
                a.sample_batches.iter().map(|&b| sample_cfg(&a, &device, &t, b)).collect::<Result<_>>()?
            }
            "vae_decode" => vec![vae_decode(&a, &device, &timer)?],
            "resnet_ap_step" => vec![resnet_ap_step(&a, &device, &timer)?],
            "convnet_step" => vec![convnet_step(&a, &device, &timer)?],
            other => bail!("unknown workload {other}"),
        };
        for mut r in recs {
            r.label = a.label.clone();
            r.device_ready_s = ready_s;
            r.cpu_threads = cpu_threads;
            r.attention = a.attention.clone();
            eprintln!("{} {} batch {}: first {:.2} s, median {:.4} s, {:.2} img/s", r.workload, r.dtype, r.batch, r.first_call_s, r.median_s, r.img_per_s);
            report.records.retain(|o| !(o.workload == r.workload && o.dtype == r.dtype && o.batch == r.batch && o.model == r.model && o.label == r.label));
            report.records.push(r.clone());
            fresh.push(r);
            let json = serde_json::to_string_pretty(&report)?;
            ims3_util::atomic_write(&a.out, json.as_bytes()).with_context(|| format!("writing {}", a.out.display()))?;
        }
        device.memory_cleanup();
    }
    print_against_anchors(&fresh, &a.anchors);
    Ok(())
}


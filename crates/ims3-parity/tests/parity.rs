//! Parity against the official PyTorch code: every case folder under `IMS3_FIXTURES` is checked
//! by its `kind`, and prints one line per check `parity <kind> <folder> max_rel_err=<v> ok` (or
//! `... FAILED`, or `... skipped` for a kind no crate implements yet). Exits non-zero on any
//! failure or if the folder holds no case.
//!
//! The device is `IMS3_DEVICE` (default `cpu`, the Flex backend), e.g. `IMS3_DEVICE=wgpu:cpu`.

use anyhow::{Context, Result};
use burn::prelude::*;
use ims3_parity::{Case, discover, fixtures_dir, max_rel_err, to_f64};

/// Float32 forward passes: within 1e-4 of the output's max abs value (fixtures README).
const FORWARD_TOL: f64 = 1e-4;
/// The DiT with bf16 weights (`DiT::to_dtype`, the `--dtype bf16` path) against the same f32
/// oracle: bf16 keeps 8 significant bits (unit roundoff u = 2^-8 ~ 0.004); a forward of a few blocks
/// rounds every matmul's operands and outputs, a few u on its largest values (measured on the
/// fixture DiTs: 8.0e-3 at depth 3, 1.3e-2 at depth 15), so within 0.03 (~8u) of the output's
/// max abs value.
const BF16_FORWARD_TOL: f64 = 0.03;
/// The guided output `uncond + s (cond - uncond)` carries up to (1 + 2s) times the network's
/// error (s = 4: 9x) on values not much larger; measured 3.5x and 3.9x the forward's error on
/// the fixtures (2.8e-2, 5.0e-2). Within 0.1 (3.3x the forward tolerance).
const BF16_CFG_TOL: f64 = 0.1;

enum Outcome {
    Ok(f64),
    Skipped,
}

/// Errors against the oracle: f32 (forward, CFG forward, checkpoint without gammas), bf16
/// forward, bf16 CFG forward.
fn check_dit(case: &Case, device: &Device) -> Result<[Outcome; 3]> {
    use ims3_dit::{CfgChannels, DiTConfig, load_dit};
    let cfg = DiTConfig {
        input_size: case.usize("input_size")?,
        patch_size: case.usize("patch_size")?,
        in_channels: case.usize("in_channels")?,
        hidden_size: case.usize("hidden_size")?,
        depth: case.usize("depth")?,
        num_heads: case.usize("num_heads")?,
        mlp_ratio: case.config["mlp_ratio"].as_f64().unwrap_or(4.0),
        class_dropout_prob: case.f64("class_dropout_prob")?,
        num_classes: case.usize("num_classes")?,
        learn_sigma: case.config["learn_sigma"].as_bool().unwrap_or(true),
        gamma_blocks: case.usize("gamma_blocks")?,
    };
    let io = case.io()?;
    let get = |k: &str| io.get(k).with_context(|| format!("{}: io.safetensors has no '{k}'", case.name));
    // (forward error, CFG-forward error) of `model` against the oracle.
    let errors = |model: &ims3_dit::DiT| -> Result<(f64, f64)> {
        let out = model.forward(get("x")?.tensor::<4>(device), get("t")?.tensor::<1>(device), get("y")?.int_tensor(device));
        let cfg_out = model.forward_with_cfg(
            get("cfg_x")?.tensor::<4>(device),
            get("cfg_t")?.tensor::<1>(device),
            get("cfg_y")?.int_tensor(device),
            case.f64("cfg_scale")?,
            CfgChannels::FirstThree,
        );
        Ok((max_rel_err(&to_f64(out), &get("out")?.data), max_rel_err(&to_f64(cfg_out), &get("cfg_out")?.data)))
    };
    let (model, _) = load_dit(case.dir.join("weights.pt"), Some(&cfg), None, device)?;
    let (fwd, cfg_fwd) = errors(&model)?;
    let mut err = fwd.max(cfg_fwd);
    let (bf16_err, bf16_cfg_err) = errors(&model.to_dtype(burn::tensor::FloatDType::BF16))?;
    let (plain, report) = load_dit(case.dir.join("weights_nogamma.pt"), Some(&cfg), None, device)?;
    anyhow::ensure!(
        report.defaulted_gammas == 4 * cfg.gamma_blocks,
        "{}: expected {} gammas defaulted to 1, got {}",
        case.name,
        4 * cfg.gamma_blocks,
        report.defaulted_gammas
    );
    let out = plain.forward(get("x")?.tensor::<4>(device), get("t")?.tensor::<1>(device), get("y")?.int_tensor(device));
    err = err.max(max_rel_err(&to_f64(out), &get("out_nogamma")?.data));
    Ok([Outcome::Ok(err), Outcome::Ok(bf16_err), Outcome::Ok(bf16_cfg_err)])
}

/// Schedule arrays (float64) within 1e-12 of their max abs value; tensors within 1e-5.
const SCHEDULE_TOL: f64 = 1e-12;
const DIFFUSION_TOL: f64 = 1e-5;

fn check_diffusion(case: &Case, device: &Device) -> Result<Outcome> {
    use ims3_diffusion::{GaussianDiffusion, NoiseSchedule};
    let respacing = case.config["timestep_respacing"].as_str().context("timestep_respacing")?;
    let schedule: NoiseSchedule = case.config["noise_schedule"].as_str().unwrap_or("linear").parse()?;
    let learn_sigma = case.config["learn_sigma"].as_bool().unwrap_or(true);
    let diffusion = GaussianDiffusion::new(schedule, 1000, &respacing.parse()?, learn_sigma)?;
    let io = case.io()?;
    let get = |k: &str| io.get(k).with_context(|| format!("{}: io.safetensors has no '{k}'", case.name));
    let s = &diffusion.schedule;
    let map: Vec<f64> = s.timestep_map.iter().map(|&v| v as f64).collect();
    let arrays: [(&str, &[f64]); 8] = [
        ("betas", &s.betas),
        ("alphas_cumprod", &s.alphas_cumprod),
        ("alphas_cumprod_next", &s.alphas_cumprod_next),
        ("posterior_variance", &s.posterior_variance),
        ("posterior_log_variance_clipped", &s.posterior_log_variance_clipped),
        ("posterior_mean_coef1", &s.posterior_mean_coef1),
        ("posterior_mean_coef2", &s.posterior_mean_coef2),
        ("timestep_map", &map),
    ];
    for (name, ours) in arrays {
        let want = &get(name)?.data;
        anyhow::ensure!(ours.len() == want.len(), "{name}: {} values, expected {}", ours.len(), want.len());
        let e = max_rel_err(ours, want);
        anyhow::ensure!(e <= SCHEDULE_TOL, "{name}: max_rel_err {e:e} above {SCHEDULE_TOL:e}");
    }
    let x0 = get("x0")?.tensor::<4>(device);
    let noise = get("noise")?.tensor::<4>(device);
    let out = get("model_output")?.tensor::<4>(device);
    let t: Vec<usize> = get("t")?.data.iter().map(|&v| v.round() as usize).collect();
    let model = |_x: Tensor<4>, _t: Tensor<1>| out.clone();
    let xt = diffusion.q_sample(x0.clone(), &t, noise.clone());
    let p = diffusion.p_mean_variance_from_output(out.clone(), xt.clone(), &t, false);
    let pc = diffusion.p_mean_variance_from_output(out.clone(), xt.clone(), &t, true);
    let (ddim, _) = diffusion.ddim_sample(&model, xt.clone(), &t, false, 0.0, xt.zeros_like());
    let (rev, _) = diffusion.ddim_reverse_sample(&model, x0.clone(), &t, true);
    let mut checks: Vec<(&str, Tensor<4>)> = vec![
        ("q_sample", xt.clone()),
        ("p_mean", p.mean.clone()),
        ("p_log_variance", p.log_variance),
        ("p_pred_xstart", p.pred_xstart),
        ("p_mean_clipped", pc.mean),
        ("p_pred_xstart_clipped", pc.pred_xstart),
        ("ddim_sample", ddim),
        ("ddim_reverse", rev),
    ];
    if io.contains_key("x_prev") {
        checks.push(("x_prev", p.mean));
    }
    let mut worst = 0.0f64;
    for (name, got) in checks {
        let e = max_rel_err(&to_f64(got), &get(name)?.data);
        anyhow::ensure!(e <= DIFFUSION_TOL, "{name}: max_rel_err {e:e} above {DIFFUSION_TOL:e}");
        worst = worst.max(e);
    }
    if io.contains_key("loss") {
        let terms = diffusion.training_losses_from_output(out.clone(), x0, xt, &t, noise);
        for (name, got) in [("loss_mse", terms.mse), ("loss_vb", terms.vb), ("loss", terms.loss)] {
            let e = max_rel_err(&to_f64(got), &get(name)?.data);
            anyhow::ensure!(e <= DIFFUSION_TOL, "{name}: max_rel_err {e:e} above {DIFFUSION_TOL:e}");
            worst = worst.max(e);
        }
    }
    Ok(Outcome::Ok(worst))
}

/// S3: indices exactly, objective within 1e-5 (relative).
const S3_TOL: f64 = 1e-5;

fn check_s3(case: &Case) -> Result<Outcome> {
    use ims3_s3::{Centroids, Form, Params};
    let io = case.io()?;
    let cand = io.get("candidate_centroids").context("candidate_centroids")?;
    let real = io.get("real_centroids").context("real_centroids")?;
    let [c, g, d]: [usize; 3] = cand.shape.clone().try_into().map_err(|_| anyhow::anyhow!("candidate_centroids must be [C, G, D]"))?;
    let centroids = Centroids {
        dim: d,
        candidates: (0..c).map(|i| cand.data[i * g * d..(i + 1) * g * d].to_vec()).collect(),
        real: (0..c).map(|i| real.data[i * d..(i + 1) * d].to_vec()).collect(),
    };
    let params = Params {
        alpha: case.f64("alpha")?,
        beta: case.f64("beta")?,
        eps: case.f64("eps")?,
        max_sweeps: case.usize("max_iters")?,
        form: Form::Reference,
    };
    let sel = centroids.select(&params)?;
    let want: Vec<usize> = case.config["selected"]
        .as_array()
        .context("selected")?
        .iter()
        .map(|v| v.as_u64().map(|v| v as usize).context("selected holds indices"))
        .collect::<Result<_>>()?;
    anyhow::ensure!(sel.selected == want, "selected {:?}, reference {:?}", sel.selected, want);
    let objective = case.f64("objective")?;
    Ok(Outcome::Ok((sel.objective - objective).abs() / objective.abs().max(1e-12)))
}

fn check_resnet18_torchvision(case: &Case, device: &Device) -> Result<Outcome> {
    let model = ims3_nets::load_torchvision_resnet18(case.dir.join("weights.pth"), device)?;
    let io = case.io()?;
    let get = |k: &str| io.get(k).with_context(|| format!("{}: io.safetensors has no '{k}'", case.name));
    let image = get("image")?.tensor::<4>(device);
    let features = model.features(image.clone());
    let logits = model.forward(image);
    let e1 = max_rel_err(&to_f64_2(features), &get("features")?.data);
    let e2 = max_rel_err(&to_f64_2(logits), &get("logits")?.data);
    Ok(Outcome::Ok(e1.max(e2)))
}

fn to_f64_2(t: Tensor<2>) -> Vec<f64> {
    to_f64(t.unsqueeze_dim::<3>(0).unsqueeze_dim::<4>(0))
}

fn check_vae(case: &Case, device: &Device) -> Result<Outcome> {
    let (vae, config) = ims3_vae::load_vae_dir(&case.dir, device)?;
    if let Some(s) = case.config["scaling_factor"].as_f64() {
        anyhow::ensure!((config.scaling_factor - s).abs() < 1e-12, "scaling factor {} vs fixture {s}", config.scaling_factor);
    }
    let io = case.io()?;
    let get = |k: &str| io.get(k).with_context(|| format!("{}: io.safetensors has no '{k}'", case.name));
    let posterior = vae.encode(get("image")?.tensor::<4>(device));
    let e1 = max_rel_err(&to_f64(posterior.mean.clone()), &get("latent_mean")?.data);
    let e2 = max_rel_err(&to_f64(posterior.std), &get("latent_std")?.data);
    let decoded = vae.decode(get("latent_mean")?.tensor::<4>(device));
    let e3 = max_rel_err(&to_f64(decoded), &get("decoded")?.data);
    Ok(Outcome::Ok(e1.max(e2).max(e3)))
}

fn check_resnet_ap(case: &Case, device: &Device) -> Result<Outcome> {
    use ims3_nets::{Norm, ResNetAPConfig};
    let arch = case.config["arch"].as_str().unwrap_or("resnet_ap10");
    let depth: usize = arch.trim_start_matches("resnet_ap").split('_').next().unwrap_or("10").parse().unwrap_or(10);
    let norm = if case.config["norm_type"].as_str().unwrap_or("instance").starts_with("batch") { Norm::Batch } else { Norm::Instance };
    let config = ResNetAPConfig {
        depth,
        num_classes: case.usize("num_classes")?,
        input_size: case.usize("input_size")?,
        norm,
        width: 1.0,
        channels: 3,
    };
    let model = ims3_nets::load_resnet_ap(case.dir.join("weights.pt"), &config, device)?;
    let io = case.io()?;
    let get = |k: &str| io.get(k).with_context(|| format!("{}: io.safetensors has no '{k}'", case.name));
    let logits = model.forward(get("image")?.tensor::<4>(device));
    Ok(Outcome::Ok(max_rel_err(&to_f64_2(logits), &get("logits")?.data)))
}

/// IDC ResNet (`resnet_idc`): depth from `depth` or the digits of `arch` (default 18), norm from
/// `norm_type`, `image -> logits`.
fn check_resnet_idc(case: &Case, device: &Device) -> Result<Outcome> {
    use ims3_nets::{Norm, ResNetConfig};
    let arch = case.config["arch"].as_str().unwrap_or("resnet18");
    let digits: String = arch.chars().skip_while(|c| !c.is_ascii_digit()).take_while(char::is_ascii_digit).collect();
    let depth = case.config["depth"].as_u64().map(|d| d as usize).or_else(|| digits.parse().ok()).unwrap_or(18);
    let norm = if case.config["norm_type"].as_str().unwrap_or("instance").starts_with("batch") { Norm::Batch } else { Norm::Instance };
    let config = ResNetConfig { norm, ..ResNetConfig::idc(depth, case.usize("num_classes")?, case.usize("input_size")?) };
    let model = ims3_nets::load_idc_resnet(case.dir.join("weights.pt"), &config, device)?;
    let io = case.io()?;
    let get = |k: &str| io.get(k).with_context(|| format!("{}: io.safetensors has no '{k}'", case.name));
    let logits = model.forward(get("image")?.tensor::<4>(device));
    Ok(Outcome::Ok(max_rel_err(&to_f64_2(logits), &get("logits")?.data)))
}

/// Each check of a case: (what, outcome, tolerance); `what` is the kind, or the kind and a
/// variant of the path (`dit-bf16`).
fn check(case: &Case, device: &Device) -> Result<Vec<(String, Outcome, f64)>> {
    let kind = case.kind.clone();
    let one = |o: Outcome, tol: f64| Ok(vec![(kind.clone(), o, tol)]);
    match case.kind.as_str() {
        "dit" => {
            let [f32_path, bf16, bf16_cfg] = check_dit(case, device)?;
            Ok(vec![
                (kind.clone(), f32_path, FORWARD_TOL),
                (format!("{kind}-bf16"), bf16, BF16_FORWARD_TOL),
                (format!("{kind}-bf16-cfg"), bf16_cfg, BF16_CFG_TOL),
            ])
        }
        "diffusion" => one(check_diffusion(case, device)?, DIFFUSION_TOL),
        "s3" => one(check_s3(case)?, S3_TOL),
        "vae" => one(check_vae(case, device)?, FORWARD_TOL),
        "resnet_ap" => one(check_resnet_ap(case, device)?, FORWARD_TOL),
        "resnet_idc" => one(check_resnet_idc(case, device)?, FORWARD_TOL),
        "resnet18_torchvision" => one(check_resnet18_torchvision(case, device)?, FORWARD_TOL),
        _ => one(Outcome::Skipped, 0.0),
    }
}

fn main() {
    let dir = fixtures_dir();
    let spec = std::env::var("IMS3_DEVICE").unwrap_or_else(|_| "cpu".into());
    let device = match ims3_backend::open_device(&spec) {
        Ok(d) => d,
        Err(e) => {
            eprintln!("parity: {e}");
            std::process::exit(2);
        }
    };
    let cases = match discover(&dir) {
        Ok(c) if !c.is_empty() => c,
        Ok(_) => {
            eprintln!("parity: no fixture case under {}", dir.display());
            std::process::exit(1);
        }
        Err(e) => {
            eprintln!("parity: {e:#}");
            std::process::exit(1);
        }
    };
    println!("parity: {} cases in {} on {spec}", cases.len(), dir.display());
    let (mut passed, mut failed, mut skipped) = (0, 0, 0);
    for case in &cases {
        let results = match check(case, &device) {
            Ok(r) => r,
            Err(e) => {
                failed += 1;
                println!("parity {} {} FAILED: {e:#}", case.kind, case.name);
                continue;
            }
        };
        for (what, outcome, tol) in results {
            match outcome {
                Outcome::Ok(err) if err <= tol => {
                    passed += 1;
                    println!("parity {what} {} max_rel_err={err:.3e} ok", case.name);
                }
                Outcome::Ok(err) => {
                    failed += 1;
                    println!("parity {what} {} max_rel_err={err:.3e} FAILED (tolerance {tol:e})", case.name);
                }
                Outcome::Skipped => {
                    skipped += 1;
                    println!("parity {what} {} skipped", case.name);
                }
            }
        }
    }
    println!("parity: {passed} passed, {failed} failed, {skipped} skipped");
    if failed > 0 {
        std::process::exit(1);
    }
}

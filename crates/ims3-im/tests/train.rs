//! The IM fine-tuning loop on a tiny pixel-space DiT on Flex, with real images: 128
//! Fashion-MNIST training images of classes 0..3, cropped to 24 px and box-averaged to 8 x 8
//! (`data/fashion8x8.bin`, written by `data/make_fashion8x8.py` from Debian's
//! `dataset-fashion-mnist`; Fashion-MNIST is Zalando Research's, MIT licence).

use burn::prelude::*;
use ims3_dit::{DiT, DiTConfig};
use ims3_im::{
    Checkpoint, InMemoryData, LossConfig, RunOptions, StepBatch, TrainConfig, TrainError, im_step_loss, list_checkpoints,
    parameters_by_path, train,
};

/// The first `n` images with a label below `classes`, as 1 x 8 x 8 in [-1, 1].
fn fashion(n: usize, classes: i64) -> InMemoryData {
    let raw: &[u8] = include_bytes!("data/fashion8x8.bin");
    let (mut values, mut labels) = (Vec::new(), Vec::new());
    for rec in raw.chunks_exact(65) {
        if (rec[0] as i64) >= classes {
            continue;
        }
        values.extend(rec[1..].iter().map(|&v| v as f32 / 127.5 - 1.0));
        labels.push(rec[0] as i64);
        if labels.len() == n {
            break;
        }
    }
    assert_eq!(labels.len(), n, "data/fashion8x8.bin holds fewer than {n} images of classes < {classes}");
    InMemoryData { values, shape: [1, 8, 8], labels }
}

fn tiny() -> DiTConfig {
    DiTConfig {
        input_size: 8,
        patch_size: 2,
        in_channels: 1,
        hidden_size: 32,
        depth: 2,
        num_heads: 4,
        mlp_ratio: 4.0,
        class_dropout_prob: 0.1,
        num_classes: 10,
        learn_sigma: true,
        gamma_blocks: 1,
    }
}

/// A stand-in "pretrained" DiT: the reference init plus a fixed random offset (the init zeroes
/// adaLN and the output layer, which would make most gradients vanish).
fn base(device: &Device) -> DiT {
    use burn::module::{Module, ModuleMapper, Param};
    struct Jitter;
    impl ModuleMapper for Jitter {
        fn map_float<const D: usize>(&mut self, param: Param<Tensor<D>>) -> Param<Tensor<D>> {
            let (id, t, mapper) = param.consume();
            let noise = t.random_like(burn::tensor::Distribution::Normal(0.0, 0.05));
            Param::from_mapped_value(id, (t + noise).detach(), mapper)
        }
    }
    seeded(device, 7, || tiny().init(device).map(&mut Jitter))
}

/// Runs `draw` right after seeding Flex's generator. Flex has one global generator for the
/// process; the tests of this file run one at a time ([`serial`]), so no other test reseeds it
/// or draws from it in between (an unsynchronised `seed` once changed another test's "same"
/// base model).
fn seeded<T>(device: &Device, seed: u64, draw: impl FnOnce() -> T) -> T {
    device.seed(seed);
    draw()
}

/// Step `k`'s batch of 4 random 1x8x8 images: images and noise drawn from Flex's generator
/// seeded with `seed + k`, labels and timesteps a function of `k`, label drops on or off.
fn step_batch(device: &Device, seed: u64, k: usize, drops: bool) -> StepBatch {
    let normal = || {
        (
            Tensor::<4>::random([4, 1, 8, 8], burn::tensor::Distribution::Normal(0.0, 1.0), device),
            Tensor::<4>::random([4, 1, 8, 8], burn::tensor::Distribution::Normal(0.0, 1.0), device),
        )
    };
    let (x0, noise) = seeded(device, seed + k as u64, normal);
    StepBatch {
        x0,
        labels: (0..4).map(|i| ((i + k) % 10) as i64).collect(),
        t: (0..4).map(|i| (i * 211 + k * 37) % 1000).collect(),
        noise,
        drop_main: (0..4).map(|i| drops && (i + k) % 3 == 0).collect(),
        drop_reverse: (0..4).map(|i| drops && (i + 2 * k) % 3 == 0).collect(),
    }
}

fn quick(seed: u64) -> TrainConfig {
    TrainConfig {
        batch_size: 8,
        epochs: 1,
        max_steps: Some(6),
        checkpoint_every: 2,
        keep_last: 2,
        log_every: 1,
        seed,
        ..TrainConfig::default()
    }
}

fn params_of(ck: &Checkpoint) -> Vec<(String, Vec<u32>)> {
    ck.params.iter().chain(&ck.ema).map(|(k, v)| (k.clone(), v.iter().map(|x| x.to_bits()).collect())).collect()
}

#[test]
fn resume_matches_an_uninterrupted_run() {
    let _serial = serial();
    let device = Device::flex().autodiff();
    let data = fashion(32, 4);
    let cfg = quick(3);
    let straight = tempfile::tempdir().unwrap();
    let (_, out) = train(base(&device), &data, &cfg, straight.path(), &RunOptions::default()).unwrap();
    assert_eq!(out.steps_done, 6);
    let want = Checkpoint::read(out.last_checkpoint.as_ref().unwrap()).unwrap();

    let split = tempfile::tempdir().unwrap();
    let stop = RunOptions { show_progress: false, stop_after: Some(3) };
    let (_, first) = train(base(&device), &data, &cfg, split.path(), &stop).unwrap();
    assert_eq!(first.steps_done, 3);
    // A fresh process would reload the base weights: do the same.
    let (_, second) = train(base(&device), &data, &cfg, split.path(), &RunOptions::default()).unwrap();
    assert_eq!(second.resumed_from, Some(3));
    assert_eq!(second.steps_done, 6);
    let got = Checkpoint::read(second.last_checkpoint.as_ref().unwrap()).unwrap();
    assert_eq!(got.step, 6);
    assert_eq!(got.adam_t, want.adam_t);
    assert!(params_of(&got) == params_of(&want), "a resumed run must end bit-identical to an uninterrupted one");
    assert_eq!(got.memory, want.memory);

    // keep_last = 2: steps 4 and 6 remain (3 was written at the interruption, then pruned).
    let steps: Vec<u64> = list_checkpoints(&split.path().join("checkpoints")).unwrap().into_iter().map(|(s, _)| s).collect();
    assert_eq!(steps, vec![4, 6]);
    // The metrics log has exactly one line per step, with no duplicates from the interruption.
    let log = std::fs::read_to_string(split.path().join("metrics.jsonl")).unwrap();
    let logged: Vec<u64> = log.lines().map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap()["step"].as_u64().unwrap()).collect();
    assert_eq!(logged, vec![1, 2, 3, 4, 5, 6]);
}

#[test]
fn checkpoint_holds_only_the_trained_parameters_and_applies_to_the_base() {
    let _serial = serial();
    let device = Device::flex().autodiff();
    let data = fashion(16, 2);
    let dir = tempfile::tempdir().unwrap();
    let cfg = TrainConfig { max_steps: Some(2), checkpoint_every: 10, ..quick(1) };
    let start = base(&device);
    let before = parameters_by_path(&start);
    let (model, out) = train(start.clone(), &data, &cfg, dir.path(), &RunOptions::default()).unwrap();
    let ck = Checkpoint::read(out.last_checkpoint.as_ref().unwrap()).unwrap();
    // Exactly the Difffit rule's parameters, and their count.
    assert!(ck.params.keys().all(|k| ims3_dit::is_difffit_trainable(k)), "{:?}", ck.params.keys());
    assert_eq!(ck.trained_values(), ims3_im::difffit_trainable_count(&start));
    assert_eq!(out.trainable_parameters, ck.trained_values());
    // Frozen parameters did not move; base + checkpoint = the trained model.
    let after = parameters_by_path(&model);
    for ((k, a), (_, b)) in before.iter().zip(&after) {
        if !ims3_dit::is_difffit_trainable(k) {
            assert_eq!(a, b, "frozen {k} moved");
        }
    }
    let applied = ck.apply_to(base(&device), false).unwrap();
    assert_eq!(parameters_by_path(&applied), after);
    let with_ema = ck.apply_to(base(&device), true).unwrap();
    assert_ne!(parameters_by_path(&with_ema), after, "the EMA (decay 0.9999) lags the raw weights");

    // A checkpoint for another model is refused with the names that do not fit.
    let other = DiTConfig { hidden_size: 64, ..tiny() }.init(&device);
    let err = ims3_util::error_chain(&ck.apply_to(other, false).unwrap_err());
    assert!(err.contains("does not fit this DiT") && err.contains("wrong sizes"), "{err}");

    // Resuming with a different recipe is an error, not a silent mix.
    let changed = TrainConfig { batch_size: 4, ..cfg };
    match train(base(&device), &data, &changed, dir.path(), &RunOptions::default()) {
        Err(TrainError::ResumeMismatch { .. }) => {}
        other => panic!("expected a resume mismatch, got {:?}", other.map(|(_, o)| o)),
    }
}

#[test]
fn loss_falls_on_real_images() {
    let _serial = serial();
    let device = Device::flex().autodiff();
    let data = fashion(64, 4);
    let start = base(&device);
    // A fixed evaluation batch: 32 images, timesteps spread over the schedule, fixed noise.
    let diffusion = ims3_diffusion::GaussianDiffusion::dit(&Default::default()).unwrap();
    let mut noise = ims3_diffusion::NoiseSource::new(11);
    let eval = StepBatch {
        x0: Tensor::<1>::from_floats(&data.values[..32 * 64], &device).reshape([32, 1, 8, 8]),
        labels: data.labels[..32].to_vec(),
        t: (0..32).map(|i| 15 + i * 31).collect(),
        noise: noise.normal([32, 1, 8, 8], &device),
        drop_main: vec![false; 32],
        drop_reverse: vec![false; 32],
    };
    let plain = LossConfig { im: false, minimax: false, ..LossConfig::default() };
    let eval_loss = |m: &DiT| im_step_loss(m, &diffusion, None, &eval, &plain).total.into_scalar::<f64>();
    let l0 = eval_loss(&start);
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = TrainConfig { epochs: 8, max_steps: None, checkpoint_every: 1000, log_every: 8, ..quick(5) };
    cfg.optimizer.lr = 1e-2;
    let (model, out) = train(start, &data, &cfg, dir.path(), &RunOptions::default()).unwrap();
    assert_eq!(out.steps_done, 64); // 8 epochs x 64 / 8
    let l1 = eval_loss(&model);
    assert!(l1 < 0.8 * l0, "training loss on a fixed batch: {l0:.4} before, {l1:.4} after");
    // Every term of IMS3 was logged.
    let last = std::fs::read_to_string(dir.path().join("metrics.jsonl")).unwrap();
    let last: serde_json::Value = serde_json::from_str(last.lines().last().unwrap()).unwrap();
    for k in ["loss", "mse", "vb", "im", "pos", "neg", "img_per_s"] {
        assert!(last[k].is_number(), "{k} missing from {last}");
    }
}

/// Pretraining mode: every parameter but `pos_embed` trains, and the checkpoint holds them all.
#[test]
fn full_training_trains_everything_but_pos_embed() {
    let _serial = serial();
    let device = Device::flex().autodiff();
    let data = fashion(16, 2);
    let dir = tempfile::tempdir().unwrap();
    let cfg = TrainConfig {
        max_steps: Some(2),
        trainable: ims3_im::Trainable::All,
        loss: LossConfig { im: false, minimax: false, ..LossConfig::default() },
        ..quick(2)
    };
    let start = base(&device);
    let before = parameters_by_path(&start);
    let (model, out) = train(start, &data, &cfg, dir.path(), &RunOptions::default()).unwrap();
    let ck = Checkpoint::read(out.last_checkpoint.as_ref().unwrap()).unwrap();
    let total: usize = before.iter().map(|(_, v)| v.len()).sum();
    let pos: usize = before.iter().filter(|(k, _)| k == "pos_embed").map(|(_, v)| v.len()).sum();
    assert_eq!(ck.trained_values(), total - pos);
    for ((k, a), (_, b)) in before.iter().zip(parameters_by_path(&model)) {
        if k == "pos_embed" {
            assert_eq!(a, &b);
        }
    }
    assert!(!ck.params.contains_key("pos_embed"));
}

/// The flat update (one buffer for the trained parameters, the moments and the EMA) gives the
/// per-tensor update's numbers bit for bit: the same formulas in the same order per value. A
/// checkpoint written by one layout and resumed in the other continues identically, so both
/// read and write the same files. Weight decay on, so every term of AdamW is exercised.
#[test]
fn flat_update_is_bit_identical_to_the_per_tensor_update() {
    let _serial = serial();
    use ims3_im::{TrainState, UpdateLayout};
    let device = Device::flex().autodiff();
    let mut cfg = quick(5);
    cfg.optimizer.weight_decay = 0.01;
    cfg.ema_decay = 0.9;
    let batch = |k: usize| step_batch(&device, 100, k, true);
    let bits = |ck: &Checkpoint| {
        let mut v = params_of(ck);
        v.extend(ck.adam.iter().map(|(k, (m, s))| (k.clone(), m.iter().chain(s).map(|x| x.to_bits()).collect())));
        v
    };
    let mut per = TrainState::with_layout(base(&device), &cfg, UpdateLayout::PerTensor);
    let mut flat = TrainState::with_layout(base(&device), &cfg, UpdateLayout::Flat);
    for k in 0..3 {
        let b = batch(k);
        per.step(&b);
        flat.step(&b);
    }
    let (ck_per, ck_flat) = (per.checkpoint(), flat.checkpoint());
    assert_eq!(ck_per.adam_t, 3);
    assert_eq!(ck_flat.adam_t, 3);
    assert!(!ck_flat.adam.is_empty() && ck_flat.adam.len() == ck_per.adam.len());
    assert!(bits(&ck_per) == bits(&ck_flat), "flat and per-tensor updates differ after 3 steps");
    // The EMA moved away from the parameters (decay 0.9), in both.
    assert!(ck_flat.ema != ck_flat.params);

    // Cross-resume: the per-tensor checkpoint continued flat, the flat one continued per tensor.
    let mut a = TrainState::resume_with_layout(base(&device), &cfg, &ck_per, UpdateLayout::Flat).unwrap();
    let mut b = TrainState::resume_with_layout(base(&device), &cfg, &ck_flat, UpdateLayout::PerTensor).unwrap();
    for k in 3..5 {
        let x = batch(k);
        a.step(&x);
        b.step(&x);
        per.step(&x);
    }
    let want = bits(&per.checkpoint());
    assert!(bits(&a.checkpoint()) == want && bits(&b.checkpoint()) == want, "a resumed layout switch changed the numbers");
}

/// Mixed precision (`dtype = bf16`): frozen weights bf16, the trained Difffit parameters, AdamW
/// and the EMA f32. Against the f32 step on the same batches:
/// - the frozen weights are bf16 and the trained ones f32, and the checkpoint (f32, trained
///   parameters only) has the same keys and shapes;
/// - the loss terms agree within 2% of the f32 values: bf16 keeps 8 significant bits (unit
///   roundoff 2^-8 ~ 0.4%), the forward's error is a few of those (ims3-parity's dit-bf16:
///   0.8-1.3% of the output's largest value) and the losses average it over the batch;
/// - the parameter updates point the same way: after 3 AdamW steps the change of the trained
///   parameters differs from the f32 run's by under 25% of its norm (Adam divides each gradient
///   by its running RMS, so a gradient entry whose bf16 error is comparable to its size moves
///   by up to 2 lr the other way; those are a minority of entries), while a run on other
///   batches differs by far more (the test can fail).
#[test]
fn bf16_mixed_precision_step_tracks_the_f32_step() {
    let _serial = serial();
    use burn::tensor::{DType, FloatDType};
    use ims3_im::TrainState;
    let device = Device::flex().autodiff();
    let cfg = quick(5);
    let mixed = TrainConfig { dtype: ims3_dit::Precision::Bf16, ..cfg.clone() };
    let batch = |k: usize| step_batch(&device, 200, k, false);
    let run = |cfg: &TrainConfig, offset: usize| {
        let mut s = TrainState::new(base(&device), cfg);
        let losses: Vec<f64> = (0..3).map(|k| s.step(&batch(k + offset)).total.into_scalar::<f64>()).collect();
        (s, losses)
    };
    let (full, full_losses) = run(&cfg, 0);
    let (half, half_losses) = run(&mixed, 0);
    let (other, _) = run(&cfg, 10);
    let model = half.model();
    assert_eq!(model.blocks[0].attn.qkv.weight.val().dtype(), DType::BF16, "frozen weights in bf16");
    assert_eq!(model.blocks[0].attn.qkv.bias.as_ref().unwrap().val().dtype(), DType::F32, "trained biases in f32");
    assert_eq!(model.dtype(), FloatDType::BF16);
    for (a, b) in half_losses.iter().zip(&full_losses) {
        assert!((a - b).abs() <= 0.02 * b.abs(), "bf16 loss {a} vs f32 {b}");
    }
    let start = TrainState::new(base(&device), &cfg).checkpoint();
    let (ck_full, ck_half, ck_other) = (full.checkpoint(), half.checkpoint(), other.checkpoint());
    let (err, spread) = update_gaps(&start, &ck_full, &ck_half, &ck_other);
    eprintln!("bf16 update: {err:.3} of the f32 update's norm (other batches: {spread:.3}); losses {half_losses:?} vs {full_losses:?}");
    assert!(err < 0.25, "bf16 update differs by {err} of the f32 update's norm");
    assert!(spread > 2.0 * err, "other batches differ by only {spread}");
}

/// The parameter changes from `start` compared: (|d_candidate - d_reference|, |d_other -
/// d_reference|), each over |d_reference| (which must not be zero).
fn update_gaps(start: &Checkpoint, reference: &Checkpoint, candidate: &Checkpoint, other: &Checkpoint) -> (f64, f64) {
    assert!(candidate.params.keys().eq(reference.params.keys()), "same trained parameters");
    let delta = |ck: &Checkpoint| -> Vec<f64> { ck.params.iter().flat_map(|(k, v)| v.iter().zip(&start.params[k]).map(|(a, b)| (*a - *b) as f64)).collect() };
    let (dr, dc, dother) = (delta(reference), delta(candidate), delta(other));
    let dist = |x: &[f64], y: &[f64]| x.iter().zip(y).map(|(p, q)| (p - q).powi(2)).sum::<f64>().sqrt();
    let norm = dr.iter().map(|x| x * x).sum::<f64>().sqrt();
    assert!(norm > 0.0, "the reference run moved no parameter");
    (dist(&dc, &dr) / norm, dist(&dother, &dr) / norm)
}

/// The tests of this file run one at a time. burn 0.22.1's autodiff can drop a gradient when
/// one thread's backward reclaims graph nodes another thread is registering
/// (tracel-ai/burn#5573; see `ims3_util::autodiff_guard`): training steps hold that guard, but a
/// test's own setup and checks (a base model built from parameters that require gradients, a
/// forward outside a step) build graph nodes too, and one of them lost a gradient in a
/// concurrent run. Serialising the tests costs about a second.
fn serial() -> std::sync::MutexGuard<'static, ()> {
    static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

/// Step `k`'s batch of 8 random 1x8x8 images over 4 classes, each class 2 or 3 times (so
/// shards split classes), some label drops.
fn mixed_batch(device: &Device, k: usize) -> StepBatch {
    let normal = || {
        (
            Tensor::<4>::random([8, 1, 8, 8], burn::tensor::Distribution::Normal(0.0, 1.0), device),
            Tensor::<4>::random([8, 1, 8, 8], burn::tensor::Distribution::Normal(0.0, 1.0), device),
        )
    };
    let (x0, noise) = seeded(device, 300 + k as u64, normal);
    StepBatch {
        x0,
        labels: (0..8).map(|i| ((i * 3 + k) % 4) as i64).collect(),
        t: (0..8).map(|i| (i * 211 + k * 37) % 1000).collect(),
        noise,
        drop_main: (0..8).map(|i| (i + k) % 5 == 0).collect(),
        drop_reverse: (0..8).map(|i| (i + 2 * k) % 5 == 0).collect(),
    }
}

/// Every gradient of `grads` for the parameters of `model` that require one, in visit order.
fn grad_values(model: &DiT, grads: &burn::optim::GradientsParams) -> Vec<f32> {
    use burn::module::{Module, ModuleVisitor, Param};
    struct V<'a>(&'a burn::optim::GradientsParams, Vec<f32>);
    impl ModuleVisitor for V<'_> {
        fn visit_float<const D: usize>(&mut self, p: &Param<Tensor<D>>) {
            if let Some(g) = self.0.get::<D>(p.id) {
                self.1.extend(g.into_data().convert::<f32>().try_into_vec::<f32>().expect("f32"));
            }
        }
    }
    let mut v = V(grads, Vec::new());
    model.visit(&mut v);
    v.1
}

/// Data parallelism's arithmetic (`ims3_im::shard`): the step split into 2, 3 and 8 shards, each
/// with its own forward and backward and only the exchanged numbers from the others, gives the
/// unsharded step's loss terms and, summed, its gradients, with the Minimax memories filled
/// (so the representativeness/diversity extremes are decided across shards) and left equal.
/// Tolerances: the shards' matmuls run on fewer rows (different blocking, f32 rounding about
/// 1e-7 relative per operation over a few hundred operations), so 1e-5 of each quantity's
/// scale (measured: 7e-8 for the gradients). Summing the shards' own steps without the
/// exchange is off by 5e-4 of the gradient scale: small, because the coupled terms are weighted
/// 0.002-0.008 against the diffusion loss, but 50 times the tolerance (the test can fail).
#[test]
fn sharded_step_matches_the_whole_batch() {
    let _serial = serial();
    use ims3_im::{TrainState, accumulated_step_grads, shard_batch, shard_ranges};
    let device = Device::flex().autodiff();
    let cfg = quick(3);
    let state = TrainState::new(base(&device), &cfg);
    let (model, diffusion, loss_cfg) = (state.model(), state.diffusion(), &cfg.loss);
    let mut memory = ims3_im::MinimaxMemory::new(loss_cfg.memory_size);
    for k in 0..3 {
        let _ = im_step_loss(model, diffusion, Some(&mut memory), &mixed_batch(&device, k), loss_cfg);
    }
    let batch = mixed_batch(&device, 3);
    let mut mem_full = memory.clone();
    let full = im_step_loss(model, diffusion, Some(&mut mem_full), &batch, loss_cfg);
    let full_values: Vec<f64> = full.values().iter().map(|(_, v)| *v).collect();
    let g_full = grad_values(model, &burn::optim::GradientsParams::from_grads(full.total.backward(), model));
    let scale = g_full.iter().fold(0f32, |m, g| m.max(g.abs()));
    assert!(scale > 0.0 && full_values.len() == 6, "the whole-batch step has gradients and all terms");
    let max_err = |a: &[f32]| a.iter().zip(&g_full).fold(0f32, |m, (x, y)| m.max((x - y).abs())) / scale;
    let rows = |m: &ims3_im::MinimaxMemory| m.snapshot().into_values().flat_map(|(r, p)| r.into_iter().chain(p)).flatten().collect::<Vec<f32>>();
    for shards in [2, 3, 8] {
        let mut mem = memory.clone();
        let (grads, loss) = accumulated_step_grads(model, diffusion, Some(&mut mem), &batch, loss_cfg, shards);
        let values: Vec<f64> = loss.values().iter().map(|(_, v)| *v).collect();
        for (name, (a, b)) in ["loss", "mse", "vb", "im", "pos", "neg"].iter().zip(values.iter().zip(&full_values)) {
            assert!((a - b).abs() <= 1e-5 * b.abs().max(1e-3), "{shards} shards: {name} {a} vs {b}");
        }
        let err = max_err(&grad_values(model, &grads));
        eprintln!("{shards} shards: largest gradient difference {err:.2e} of the largest gradient");
        assert!(err < 1e-5, "{shards} shards: gradients differ by {err} of their scale");
        let (a, b) = (rows(&mem), rows(&mem_full));
        assert_eq!(a.len(), b.len(), "{shards} shards: memory sizes");
        assert!(a.iter().zip(&b).all(|(x, y)| (x - y).abs() <= 1e-5 * (1.0 + y.abs())), "{shards} shards: memories differ");
    }
    // Without the exchange: each shard's own step (its own IM pairs and Minimax extremes),
    // weighted by its size.
    let mut naive: Option<Vec<f32>> = None;
    for r in shard_ranges(8, 2) {
        let mut mem = memory.clone();
        let part = shard_batch(&batch, r.clone());
        let loss = im_step_loss(model, diffusion, Some(&mut mem), &part, loss_cfg);
        let g = grad_values(model, &burn::optim::GradientsParams::from_grads((loss.total * (r.len() as f64 / 8.0)).backward(), model));
        naive = Some(match naive {
            None => g,
            Some(acc) => acc.iter().zip(&g).map(|(a, b)| a + b).collect(),
        });
    }
    let naive_err = max_err(&naive.expect("two shards"));
    eprintln!("2 shards without the exchange: {naive_err:.2e}");
    assert!(naive_err > 1e-4, "summing independent shard steps should not match ({naive_err})");
}

/// `micro_batches = 4` (the trainer's gradient accumulation over shards) trains like the single
/// pass: after 3 steps on batches of 8, the parameter change within 1e-3 of the single pass's
/// change in norm (AdamW divides by each gradient's running RMS, so an entry whose gradient is
/// near zero, i.e. mostly rounding, can move by a fraction of lr either way: the largest single
/// entry differs by ~2e-3 of the largest update, the norm by far less), the logged losses within
/// 1e-5; a different micro-batch count is a different resume key.
#[test]
fn micro_batches_train_like_one_pass() {
    let _serial = serial();
    use ims3_im::TrainState;
    let device = Device::flex().autodiff();
    let cfg = quick(4);
    let split = TrainConfig { micro_batches: 4, ..cfg.clone() };
    assert_ne!(cfg.resume_key(), split.resume_key());
    assert!(TrainConfig { micro_batches: 9, ..cfg.clone() }.validate().is_err(), "more micro-batches than samples");
    let run = |cfg: &TrainConfig, offset: usize| {
        let mut s = TrainState::new(base(&device), cfg);
        let losses: Vec<f64> = (0..3).map(|k| s.step(&mixed_batch(&device, k + offset)).total.into_scalar::<f64>()).collect();
        (s.checkpoint(), losses)
    };
    let start = TrainState::new(base(&device), &cfg).checkpoint();
    let ((a, la), (b, lb), (other, _)) = (run(&cfg, 0), run(&split, 0), run(&cfg, 10));
    for (x, y) in la.iter().zip(&lb) {
        assert!((x - y).abs() <= 1e-5 * y.abs(), "losses {la:?} vs {lb:?}");
    }
    let (err, spread) = update_gaps(&start, &a, &b, &other);
    eprintln!("micro-batches: update differs by {err:.2e} of its norm (other batches: {spread:.2e})");
    assert!(err < 1e-3, "micro-batched update differs by {err} of the update's norm");
    assert!(spread > 100.0 * err, "other batches differ by only {spread}");
}

#[test]
fn a_diverged_run_stops_before_a_checkpoint_holds_it() {
    let _serial = serial();
    let device = Device::flex().autodiff();
    let mut data = fashion(32, 4);
    let cfg = TrainConfig { log_every: 10, ..quick(3) };
    let dir = tempfile::tempdir().unwrap();
    // Two clean steps (a checkpoint at step 2), then a NaN pixel in every image: step 3's loss
    // is NaN and so are the weights after it. Step 3 is neither logged nor checkpointed; step
    // 4 is a checkpoint step: the run must stop there without writing it.
    let stop = RunOptions { show_progress: false, stop_after: Some(2) };
    train(base(&device), &data, &cfg, dir.path(), &stop).unwrap();
    data.values.iter_mut().step_by(64).for_each(|v| *v = f32::NAN);
    let err = train(base(&device), &data, &cfg, dir.path(), &RunOptions::default()).unwrap_err();
    let msg = err.to_string();
    assert!(matches!(err, TrainError::Diverged { step: 4, last_good: 2, .. }), "{msg}");
    assert!(msg.contains("at step 4 the loss term `loss` is NaN") && msg.contains("step-00000002"), "{msg}");
    let steps: Vec<u64> = list_checkpoints(&dir.path().join("checkpoints")).unwrap().into_iter().map(|(s, _)| s).collect();
    assert_eq!(steps, vec![2]);
}

/// A finite loss does not prove finite weights (a NaN gradient leaves the step's own loss clean):
/// the checkpoint itself is checked. Here one class embedding the data never uses is NaN, so every
/// loss is finite, yet no checkpoint may be written and the run names the tensor.
#[test]
fn a_checkpoint_with_non_finite_state_is_refused_even_when_the_loss_is_finite() {
    use burn::module::{Module, ModuleMapper, Param};
    let _serial = serial();
    let device = Device::flex().autodiff();
    let data = fashion(32, 4);
    struct PoisonClass9;
    impl ModuleMapper for PoisonClass9 {
        fn map_float<const D: usize>(&mut self, param: Param<Tensor<D>>) -> Param<Tensor<D>> {
            let (id, t, mapper) = param.consume();
            let dims = t.dims();
            // embedding_table.weight [11, D]: row 9 (a class the data lacks; 10 is the null class).
            let t = if D == 2 && dims[0] == 11 {
                let mut v = t.clone().into_data().try_to_vec::<f32>().unwrap();
                v[9 * dims[1]..10 * dims[1]].fill(f32::NAN);
                Tensor::<D>::from_data(burn::tensor::TensorData::new(v, dims), &t.device())
            } else {
                t
            };
            Param::from_mapped_value(id, t.detach(), mapper)
        }
    }
    let poisoned = base(&device).map(&mut PoisonClass9);
    let dir = tempfile::tempdir().unwrap();
    let err = train(poisoned, &data, &quick(3), dir.path(), &RunOptions::default()).unwrap_err();
    let msg = err.to_string();
    assert!(matches!(err, TrainError::Diverged { step: 2, last_good: 0, .. }), "{msg}");
    assert!(msg.contains("at step 2 the state tensor `param/y_embedder.embedding_table.weight` is NaN"), "{msg}");
    assert!(list_checkpoints(&dir.path().join("checkpoints")).unwrap().is_empty());
    let metrics = std::fs::read_to_string(dir.path().join("metrics.jsonl")).unwrap();
    assert!(metrics.lines().count() == 2 && !metrics.contains("null"), "the losses were finite: {metrics}");
}

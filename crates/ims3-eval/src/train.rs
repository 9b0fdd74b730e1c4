//! One seed of the protocol: a fresh network trained on the distilled set and tested on real
//! images.
//!
//! ```text
//! every epoch: shuffle (ChaCha8(seed)); lr from the schedule
//!   every batch: train transform per image (ChaCha8(seed ^ salt, stream = image of the run))
//!                CutMix(Beta(1, 1)): box of side sqrt(1 - lam) W from a random partner
//!     hard labels: loss = ratio CE(y) + (1 - ratio) CE(y[perm])
//!     soft labels: p = softmax(teacher(x) / T) on the same mixed batch, q = softmax(student(x) / T)
//!                  loss = sum p (log p - log q) / B             (KLDivLoss batchmean, no T^2)
//!   test every `eval_every` epochs and after the last
//! ```

use burn::module::{Module, ModuleMapper, Param};
use burn::optim::{AdamWConfig, GradientsParams, SgdConfig, decay::WeightDecayConfig, momentum::MomentumConfig};
use burn::prelude::*;
use burn::tensor::activation::log_softmax;
use ims3_augment::{CutMix, to_tensor, train_transform};
use ims3_nets::ResNet;
use rand::SeedableRng;
use rand::seq::SliceRandom;
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use crate::EvalError;
use crate::config::{EvalConfig, Labels, Optimizer, SoftLabels, TestAt};
use crate::data::ImageSet;
use crate::net::{EvalNet, reinit_seeded};

/// The frozen teacher of the soft-label protocol: torchvision ResNet-18 restricted to the
/// dataset's classes, in inference mode (BatchNorm's running statistics).
pub struct Teacher {
    net: ResNet,
    /// The kept rows of the 1000-way classifier, in class order.
    rows: Tensor<1, Int>,
    temperature: f64,
    pub classes: Vec<usize>,
}

impl Teacher {
    /// Loads `soft.teacher` on `device` (a plain one: the teacher is never trained).
    pub fn load(soft: &SoftLabels, device: &Device) -> Result<Self, EvalError> {
        let plain = device.clone().inner();
        let net = ims3_nets::load_torchvision_resnet18(&soft.teacher, &plain)?;
        let outputs = net.fc.weight.dims()[1];
        if let Some(&bad) = soft.classes.iter().find(|&&c| c >= outputs) {
            return Err(EvalError::TeacherClass { class: bad, outputs });
        }
        let rows: Vec<i64> = soft.classes.iter().map(|&c| c as i64).collect();
        Ok(Self { net: net.valid(), rows: Tensor::<1, Int>::from_ints(rows.as_slice(), &plain), temperature: soft.temperature, classes: soft.classes.clone() })
    }

    /// `log_softmax(teacher(x)[:, classes] / T)` for a normalised batch [N, 3, H, W] -> [N, C].
    pub fn log_probs(&self, x: Tensor<4>) -> Tensor<2> {
        let logits = self.net.forward(x).select(1, self.rows.clone());
        log_softmax(logits / self.temperature, 1)
    }
}

/// `KLDivLoss(reduction="batchmean")` of the student's tempered log-probabilities against the
/// teacher's: `sum p (log p - log q) / N`, p from `teacher_log_p` (a constant).
fn soft_label_loss(student_logits: Tensor<2>, teacher_log_p: Tensor<2>, temperature: f64) -> Tensor<1> {
    let n = student_logits.dims()[0] as f64;
    let log_q = log_softmax(student_logits / temperature, 1);
    (teacher_log_p.clone().exp() * (teacher_log_p - log_q)).sum() / n
}

/// AdamW's decoupled weight decay, `p <- p (1 - lr wd)`, on the weights of two or more
/// dimensions (convolutions and linear layers; RDED leaves biases and norms undecayed).
fn decay_weights(net: EvalNet, factor: f64) -> EvalNet {
    struct Decay(f64);
    impl ModuleMapper for Decay {
        fn map_float<const D: usize>(&mut self, param: Param<Tensor<D>>) -> Param<Tensor<D>> {
            if D < 2 {
                return param;
            }
            let f = self.0;
            param.map(|t| {
                let trained = t.is_require_grad();
                let t = Tensor::from_inner(t.inner() * f);
                if trained { t.require_grad() } else { t }
            })
        }
    }
    net.map(&mut Decay(factor))
}

/// The sets of one evaluation: the distilled training set, the real test set and an optional
/// validation set held out from the real training data.
#[derive(Clone, Copy)]
pub struct EvalSets<'a> {
    pub train: &'a ImageSet,
    pub test: &'a ImageSet,
    pub val: Option<&'a ImageSet>,
}

/// Test images cropped once (the test transform's geometry): every evaluation then only
/// converts them.
fn eval_cropped(set: &ImageSet, cfg: &EvalConfig) -> ImageSet {
    ImageSet { images: set.images.iter().map(|i| cfg.test_transform.apply(i, cfg.size)).collect(), labels: set.labels.clone(), classes: set.classes.clone() }
}

/// Transforms `idx` of `set` on `threads` threads: the training transform, image `k` of the
/// batch drawing from `ChaCha8(seed, stream = stream_base + k)` so the result does not depend
/// on the threads; or, with `train = None`, `ToTensor` of images already `eval_cropped`.
fn batch_pixels(set: &ImageSet, idx: &[usize], cfg: &EvalConfig, train: Option<(u64, u64)>) -> Vec<f32> {
    let per = cfg.channels * cfg.size * cfg.size;
    let mut out = vec![0f32; idx.len() * per];
    let threads = cfg.threads.max(1).min(idx.len().max(1));
    let chunk = idx.len().div_ceil(threads);
    std::thread::scope(|s| {
        for (t, (ids, dst)) in idx.chunks(chunk.max(1)).zip(out.chunks_mut(chunk.max(1) * per)).enumerate() {
            s.spawn(move || {
                for (k, (&i, d)) in ids.iter().zip(dst.chunks_mut(per)).enumerate() {
                    let x = match train {
                        Some((seed, base)) => {
                            let mut rng = ChaCha8Rng::seed_from_u64(seed);
                            rng.set_stream(base + (t * chunk + k) as u64);
                            train_transform(&set.images[i], &cfg.augment, &mut rng)
                        }
                        None => to_tensor(&set.images[i], false),
                    };
                    let n = cfg.size * cfg.size;
                    for c in 0..cfg.channels {
                        for (o, v) in d[c * n..(c + 1) * n].iter_mut().zip(&x[c * n..(c + 1) * n]) {
                            *o = (v - cfg.mean[c]) / cfg.std[c];
                        }
                    }
                }
            });
        }
    });
    out
}

/// Top-1 accuracy (%) of `net` on `set` (test transform: resize, centre crop, normalise).
pub fn accuracy(net: &EvalNet, set: &ImageSet, cfg: &EvalConfig, device: &Device) -> f64 {
    accuracy_cropped(net, &eval_cropped(set, cfg), cfg, device)
}

fn accuracy_cropped(net: &EvalNet, set: &ImageSet, cfg: &EvalConfig, device: &Device) -> f64 {
    let net = net.valid();
    let plain = device.clone().inner();
    let mut correct = 0usize;
    let idx: Vec<usize> = (0..set.len()).collect();
    // No gradients are kept, so test batches can be larger than training ones; for small images
    // 64 at a time, whose activations stay near the cache ([64, 128, 32, 32] f32 = 32 MB): chunks
    // of 500 made every pass through memory and were ~1.25x slower on the CPU (a 2,500-image pass
    // of ConvNet-3 at 28 px, one thread). Each image's prediction does not depend on the chunk.
    let chunk = if cfg.size <= 64 { 64 } else { cfg.batch_size.max(1) * 2 };
    for ids in idx.chunks(chunk) {
        let x = batch_pixels(set, ids, cfg, None);
        let x = Tensor::<1>::from_floats(x.as_slice(), &plain).reshape([ids.len(), cfg.channels, cfg.size, cfg.size]);
        let pred: Vec<i64> = net.forward(x).argmax(1).into_data().convert::<i64>().try_to_vec::<i64>().expect("ints");
        correct += ids.iter().zip(pred).filter(|(i, p)| set.labels[**i] as i64 == *p).count();
    }
    100.0 * correct as f64 / set.len().max(1) as f64
}

/// One seed's outcome.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct SeedResult {
    pub seed: u64,
    /// Test top-1 after the last epoch.
    pub final_top1: f64,
    /// Best test top-1 over the evaluations: selected on the test split, as the reference
    /// reports (only when the test split is read at every evaluation).
    pub best_top1: Option<f64>,
    pub best_epoch: Option<usize>,
    /// Test top-1 at the epoch best on the held-out validation set (only when the test split
    /// is read at every evaluation and a validation set was given).
    pub val_selected_top1: Option<f64>,
    /// The evaluation epoch with the best validation top-1 (the first of ties).
    #[serde(default)]
    pub val_best_epoch: Option<usize>,
    /// (epoch, test top-1, validation top-1) at every evaluation; the test entry is absent where
    /// the test split was not read.
    pub curve: Vec<(usize, Option<f64>, Option<f64>)>,
    /// Mean training loss of the first and of the last epoch.
    pub first_epoch_loss: f64,
    pub last_epoch_loss: f64,
    pub seconds: f64,
}

/// Trains a fresh network on `sets.train` and tests it on `sets.test` (and `sets.val`); the
/// soft-label protocol needs its `teacher`.
pub fn train_and_eval(
    sets: EvalSets,
    cfg: &EvalConfig,
    teacher: Option<&Teacher>,
    seed: u64,
    device: &Device,
    progress: Option<&indicatif::ProgressBar>,
) -> Result<SeedResult, EvalError> {
    let EvalSets { train, test, val } = sets;
    let teacher = match (&cfg.labels, teacher) {
        (Labels::Hard, _) => None,
        (Labels::Soft(soft), Some(t)) if t.classes == soft.classes => Some((t, soft.temperature)),
        (Labels::Soft(_), _) => return Err(EvalError::NoTeacher),
    };
    if train.is_empty() {
        return Err(EvalError::EmptyTrainingSet);
    }
    if train.classes != test.classes {
        return Err(EvalError::ClassMismatch { train: train.classes.clone(), test: test.classes.clone() });
    }
    let started = std::time::Instant::now();
    let ad = device.clone().autodiff();
    let mut net = reinit_seeded(EvalNet::new(cfg, train.classes.len(), &ad)?, &cfg.net, seed);
    let mut opt = match cfg.optimizer {
        Optimizer::Sgd { momentum, weight_decay } => SgdConfig::new()
            .with_momentum(Some(MomentumConfig { momentum, dampening: 0.0, nesterov: false }))
            .with_weight_decay((weight_decay > 0.0).then(|| WeightDecayConfig::new(weight_decay as f32)))
            .init(),
        // PyTorch's betas and eps, not burn's; the decay is applied apart (`decay_weights`).
        Optimizer::AdamW { .. } => AdamWConfig::new().with_beta_1(0.9).with_beta_2(0.999).with_epsilon(1e-8).with_weight_decay(0.0).init(),
    };
    let ce = burn::nn::loss::CrossEntropyLossConfig::new().init(&ad);
    let test_cropped = eval_cropped(test, cfg);
    let val_cropped = val.map(|v| eval_cropped(v, cfg));
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut order: Vec<usize> = (0..train.len()).collect();
    let (mut curve, mut first_loss, mut last_loss) = (Vec::new(), f64::NAN, f64::NAN);
    let mut step: u64 = 0;
    for epoch in 0..cfg.epochs {
        order.shuffle(&mut rng);
        let lr = cfg.lr_at(epoch);
        let (mut loss_sum, mut batches) = (0.0, 0usize);
        for ids in order.chunks(cfg.batch_size) {
            let mut x = batch_pixels(train, ids, cfg, Some((seed ^ 0x000a_11ce, step * cfg.batch_size as u64)));
            let y: Vec<i64> = ids.iter().map(|&i| train.labels[i] as i64).collect();
            let n = ids.len();
            let yt = Tensor::<1, Int>::from_ints(y.as_slice(), &ad);
            let mix = cfg.cutmix_beta.map(|b| CutMix::draw(n, cfg.size, cfg.size, b, &mut rng));
            if let Some(m) = &mix {
                m.apply(&mut x, cfg.channels, cfg.size, cfg.size);
            }
            let _one_graph_at_a_time = ims3_util::autodiff_guard();
            let xt = Tensor::<1>::from_floats(x.as_slice(), &ad).reshape([n, cfg.channels, cfg.size, cfg.size]);
            let logits = net.forward(xt.clone());
            let loss = match (teacher, &mix) {
                // The teacher labels the very batch the student sees: augmented and mixed.
                (Some((t, temperature)), _) => soft_label_loss(logits, Tensor::from_inner(t.log_probs(xt.inner())), temperature),
                (None, Some(m)) => {
                    let yb: Vec<i64> = m.perm.iter().map(|&j| y[j]).collect();
                    let yb = Tensor::<1, Int>::from_ints(yb.as_slice(), &ad);
                    ce.forward(logits.clone(), yt) * m.ratio + ce.forward(logits, yb) * (1.0 - m.ratio)
                }
                (None, None) => ce.forward(logits, yt),
            };
            let track = epoch == 0 || epoch + 1 == cfg.epochs;
            if track {
                loss_sum += loss.clone().into_scalar::<f64>();
            }
            batches += 1;
            let grads = GradientsParams::from_grads(loss.backward(), &net);
            if let Optimizer::AdamW { weight_decay } = cfg.optimizer
                && weight_decay > 0.0
            {
                net = decay_weights(net, 1.0 - lr * weight_decay);
            }
            net = opt.step(lr, net, grads);
            step += 1;
        }
        let mean_loss = loss_sum / batches.max(1) as f64; // NaN-free only for tracked epochs

        if epoch == 0 {
            first_loss = mean_loss;
        }
        if epoch + 1 == cfg.epochs {
            last_loss = mean_loss;
        }
        let last = epoch + 1 == cfg.epochs;
        if (epoch + 1) % cfg.eval_every == 0 || last {
            let t = (last || cfg.test_at == TestAt::Every).then(|| accuracy_cropped(&net, &test_cropped, cfg, &ad));
            let v = val_cropped.as_ref().map(|v| accuracy_cropped(&net, v, cfg, &ad));
            curve.push((epoch + 1, t, v));
            if let Some(pb) = progress {
                let shown = |name: &str, a: Option<f64>| a.map(|a| format!(" {name} {a:.2}%")).unwrap_or_default();
                pb.set_message(format!("seed {seed} epoch {} loss {mean_loss:.3}{}{}", epoch + 1, shown("val", v), shown("test", t)));
            }
        }
        if let Some(pb) = progress {
            pb.inc(1);
        }
    }
    let tested: Vec<(usize, f64)> = curve.iter().filter_map(|(e, t, _)| t.map(|t| (*e, t))).collect();
    let best = (cfg.test_at == TestAt::Every).then(|| tested.iter().copied().fold((0, f64::MIN), |a, b| if b.1 > a.1 { b } else { a }));
    let val_best = curve.iter().filter_map(|(e, t, v)| v.map(|v| (*e, *t, v))).fold(None, |a: Option<(usize, Option<f64>, f64)>, b| match a {
        Some(a) if a.2 >= b.2 => Some(a),
        _ => Some(b),
    });
    Ok(SeedResult {
        seed,
        final_top1: tested.last().map_or(0.0, |c| c.1),
        best_top1: best.map(|b| b.1),
        best_epoch: best.map(|b| b.0),
        val_selected_top1: val_best.and_then(|b| b.1).filter(|_| cfg.test_at == TestAt::Every),
        val_best_epoch: val_best.map(|b| b.0),
        curve,
        first_epoch_loss: first_loss,
        last_epoch_loss: last_loss,
        seconds: started.elapsed().as_secs_f64(),
    })
}


#[cfg(test)]
mod tests {
    use super::*;

    /// PyTorch's `KLDivLoss(reduction="batchmean")(log_softmax(s / T), softmax(t / T))`, written
    /// out in f64 for two rows of three logits.
    #[test]
    fn soft_label_loss_is_kl_batchmean() {
        let device = Device::flex();
        let s = [[1.0f32, -2.0, 0.5], [0.0, 3.0, -1.0]];
        let t = [[2.0f32, 0.0, -1.0], [-0.5, 0.5, 4.0]];
        let temperature = 2.0;
        let softmax = |r: &[f32; 3]| -> Vec<f64> {
            let e: Vec<f64> = r.iter().map(|&v| (v as f64 / temperature).exp()).collect();
            let z: f64 = e.iter().sum();
            e.iter().map(|v| v / z).collect()
        };
        let mut want = 0.0;
        for (sr, tr) in s.iter().zip(&t) {
            let (q, p) = (softmax(sr), softmax(tr));
            want += p.iter().zip(&q).map(|(p, q)| p * (p.ln() - q.ln())).sum::<f64>();
        }
        want /= 2.0;
        let st = Tensor::<2>::from_floats(s, &device);
        let tt = log_softmax(Tensor::<2>::from_floats(t, &device) / temperature, 1);
        let got = soft_label_loss(st, tt, temperature).into_scalar::<f64>();
        assert!((got - want).abs() < 1e-6, "{got} vs {want}");
    }

    /// AdamW's decay scales convolution and linear weights and leaves 1-D parameters alone.
    #[test]
    fn decay_touches_only_weights_of_two_or_more_dimensions() {
        use ims3_nets::{ConvNetConfig, Norm};
        let device = Device::flex();
        let net = EvalNet::ConvNet(ConvNetConfig { norm: Norm::Instance, width: 4, ..ConvNetConfig::new(3, 1, 3, 8) }.init(&device).unwrap());
        let before = collect(&net);
        let after = collect(&decay_weights(net, 0.5));
        for ((dims, a), (_, b)) in before.iter().zip(&after) {
            for (x, y) in a.iter().zip(b) {
                let want = if *dims >= 2 { x * 0.5 } else { *x };
                assert_eq!(*y, want);
            }
        }
        assert!(before.iter().any(|(d, _)| *d >= 2) && before.iter().any(|(d, _)| *d == 1));
    }

    fn collect(net: &EvalNet) -> Vec<(usize, Vec<f32>)> {
        struct C(Vec<(usize, Vec<f32>)>);
        impl burn::module::ModuleVisitor for C {
            fn visit_float<const D: usize>(&mut self, p: &Param<Tensor<D>>) {
                self.0.push((D, p.val().into_data().convert::<f32>().try_to_vec::<f32>().unwrap()));
            }
        }
        let mut c = C(vec![]);
        net.visit(&mut c);
        c.0
    }
}

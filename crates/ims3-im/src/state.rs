//! Everything a fine-tuning run changes, in one value, and one training step over it: the
//! loop in `train.rs` and the GPU benchmark both step through [`TrainState::step`].
//!
//! ```text
//! loss   = im_step_loss(model, batch)                 mse + vb [+ IM] [+ Minimax], step.rs
//! grads  = backward(loss.total)                       only the trained parameters get one
//! model  = AdamW(model, grads)                        flat.rs (one buffer), or optim.rs per tensor
//! ema    = decay * ema + (1 - decay) * model           flat.rs, or ema.rs per tensor
//! memory: updated inside the loss (Minimax)           losses.rs
//! step  += 1
//! ```

use burn::optim::GradientsParams;
use burn::prelude::*;
use ims3_diffusion::GaussianDiffusion;
use ims3_dit::DiT;

use crate::checkpoint::{Checkpoint, CheckpointError};
use crate::config::{TrainConfig, Trainable};
use crate::difffit::{mark_all_trainable, mark_difffit_trainable, trainable_tensors};
use crate::ema::Ema;
use crate::flat::{FlatLayout, FlatUpdate};
use crate::losses::MinimaxMemory;
use crate::optim::{Moments, PathAdamW};
use crate::shard::accumulated_step_grads;
use crate::step::{StepBatch, StepLoss, im_step_loss};

pub(crate) fn host(t: &Tensor<1>) -> Vec<f32> {
    t.clone().into_data().convert::<f32>().try_to_vec::<f32>().expect("f32 values")
}

/// How AdamW and the EMA hold their state: the same numbers either way (bit-identical, tested
/// in `tests/train.rs`), the same checkpoints.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum UpdateLayout {
    /// One flat buffer each for the trained parameters, both moments and the EMA: ~15
    /// launches per step for the whole update (`flat.rs`).
    #[default]
    Flat,
    /// A tensor per trained parameter and per moment (`optim.rs`, `ema.rs`): ~15 launches per
    /// trained tensor.
    PerTensor,
}

/// AdamW's state and the EMA, in one of the two layouts.
#[derive(Clone, Debug)]
enum Update {
    Flat(FlatUpdate),
    PerTensor { optimizer: PathAdamW, ema: Ema },
}

/// The model (on an autodiff device, its trained parameters marked), its EMA, AdamW's state,
/// Minimax's memories and the number of steps taken.
pub struct TrainState {
    model: Option<DiT>,
    update: Update,
    pub memory: MinimaxMemory,
    pub step: u64,
    config: TrainConfig,
    diffusion: GaussianDiffusion,
}

impl TrainState {
    /// A fresh run: marks the parameters `cfg.trainable` names, starts the EMA at them.
    pub fn new(base: DiT, cfg: &TrainConfig) -> Self {
        Self::with_layout(base, cfg, UpdateLayout::default())
    }

    /// [`TrainState::new`] with the update's state in `layout`.
    pub fn with_layout(base: DiT, cfg: &TrainConfig, layout: UpdateLayout) -> Self {
        let model = match cfg.trainable {
            Trainable::Difffit => mark_difffit_trainable(base),
            Trainable::All => mark_all_trainable(base),
        };
        // Mixed precision (`TrainConfig::dtype`): frozen weights cast, trained ones stay f32.
        let model = model.to_dtype_frozen(cfg.dtype.float_dtype());
        let update = match layout {
            UpdateLayout::Flat => Update::Flat(FlatUpdate::new(&model, cfg.optimizer.clone(), cfg.ema_decay)),
            UpdateLayout::PerTensor => Update::PerTensor { optimizer: PathAdamW::new(cfg.optimizer.clone()), ema: Ema::new(&model, cfg.ema_decay) },
        };
        Self {
            update,
            memory: MinimaxMemory::new(cfg.loss.memory_size),
            step: 0,
            model: Some(model),
            config: cfg.clone(),
            diffusion: GaussianDiffusion::dit(&Default::default()).expect("the 1000-step schedule"),
        }
    }

    /// The state a checkpoint recorded, over the same base model.
    pub fn resume(base: DiT, cfg: &TrainConfig, ck: &Checkpoint) -> Result<Self, CheckpointError> {
        Self::resume_with_layout(base, cfg, ck, UpdateLayout::default())
    }

    /// [`TrainState::resume`] into `layout` (either layout reads any checkpoint).
    pub fn resume_with_layout(base: DiT, cfg: &TrainConfig, ck: &Checkpoint, layout: UpdateLayout) -> Result<Self, CheckpointError> {
        let mut s = Self::with_layout(base, cfg, layout);
        let device = s.model().pos_embed.val().device();
        let plain = device.clone().inner();
        s.model = Some(ck.apply_to(s.model.take().expect("set in new"), false)?);
        let tensor = |v: &Vec<f32>| Tensor::<1>::from_floats(v.as_slice(), &plain);
        let ema: std::collections::BTreeMap<String, Tensor<1>> = ck.ema.iter().map(|(k, v)| (k.clone(), tensor(v))).collect();
        let moments: std::collections::BTreeMap<String, Moments> = ck.adam.iter().map(|(k, (m, v))| (k.clone(), Moments { m: tensor(m), v: tensor(v) })).collect();
        match &mut s.update {
            Update::PerTensor { optimizer, ema: e } => {
                e.values = ema;
                optimizer.t = ck.adam_t;
                optimizer.state = moments;
            }
            Update::Flat(f) => {
                let values = trainable_tensors(s.model.as_ref().expect("set above"));
                f.layout = FlatLayout::of(&values);
                let bad = || CheckpointError::Corrupt { path: ck.path.clone().unwrap_or_default(), why: "its EMA or AdamW state does not cover the trained parameters".into() };
                f.params = f.layout.join(&values).ok_or_else(bad)?;
                f.ema = f.layout.join(&ema).ok_or_else(bad)?;
                f.t = ck.adam_t;
                f.moments = if moments.is_empty() {
                    None
                } else {
                    let m = moments.iter().map(|(k, x)| (k.clone(), x.m.clone())).collect();
                    let v = moments.into_iter().map(|(k, x)| (k, x.v)).collect();
                    Some((f.layout.join(&m).ok_or_else(bad)?, f.layout.join(&v).ok_or_else(bad)?))
                };
            }
        }
        s.memory = MinimaxMemory::restore(cfg.loss.memory_size, &ck.memory, &device);
        s.step = ck.step;
        Ok(s)
    }

    /// The EMA of the trained parameters, by module path.
    pub fn ema(&self) -> std::collections::BTreeMap<String, Tensor<1>> {
        match &self.update {
            Update::Flat(f) => f.layout.split(&f.ema),
            Update::PerTensor { ema, .. } => ema.values.clone(),
        }
    }

    pub fn model(&self) -> &DiT {
        self.model.as_ref().expect("a TrainState always holds its model")
    }

    pub fn into_model(self) -> DiT {
        self.model.expect("a TrainState always holds its model")
    }

    /// The 1000-step diffusion every step trains on.
    pub fn diffusion(&self) -> &GaussianDiffusion {
        &self.diffusion
    }

    /// Number of trained values.
    pub fn trainable_parameters(&self) -> usize {
        trainable_tensors(self.model()).values().map(|t| t.dims()[0]).sum()
    }

    /// One training step on `batch` (see the module docs); returns the step's loss terms.
    pub fn step(&mut self, batch: &StepBatch) -> StepLoss {
        let _one_graph_at_a_time = ims3_util::autodiff_guard();
        let model = self.model.take().expect("a TrainState always holds its model");
        let cfg = &self.config.loss;
        let memory = cfg.minimax.then_some(&mut self.memory);
        let (grads, loss) = if self.config.micro_batches > 1 {
            accumulated_step_grads(&model, &self.diffusion, memory, batch, cfg, self.config.micro_batches)
        } else {
            let loss = im_step_loss(&model, &self.diffusion, memory, batch, cfg);
            (GradientsParams::from_grads(loss.total.backward(), &model), loss)
        };
        let model = match &mut self.update {
            Update::Flat(f) => f.step(model, grads),
            Update::PerTensor { optimizer, ema } => {
                let model = optimizer.step(model, grads);
                ema.update(&model);
                model
            }
        };
        self.model = Some(model);
        self.step += 1;
        loss
    }

    /// The state as a checkpoint (host copies of the trained parameters, EMA, moments, memories).
    pub fn checkpoint(&self) -> Checkpoint {
        let (adam_t, ema, adam) = match &self.update {
            Update::Flat(f) => {
                let adam = match &f.moments {
                    Some((m, v)) => {
                        let (m, v) = (f.layout.split_host(m), f.layout.split_host(v));
                        m.into_iter().zip(v).map(|((k, m), (_, v))| (k, (m, v))).collect()
                    }
                    None => Default::default(),
                };
                (f.t, f.layout.split_host(&f.ema), adam)
            }
            Update::PerTensor { optimizer, ema } => (
                optimizer.t,
                ema.values.iter().map(|(k, t)| (k.clone(), host(t))).collect(),
                optimizer.state.iter().map(|(k, m)| (k.clone(), (host(&m.m), host(&m.v)))).collect(),
            ),
        };
        Checkpoint {
            path: None,
            step: self.step,
            adam_t,
            config: self.config.clone(),
            params: trainable_tensors(self.model()).iter().map(|(k, t)| (k.clone(), host(t))).collect(),
            ema,
            adam,
            memory: self.memory.snapshot(),
        }
    }
}

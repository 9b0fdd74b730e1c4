//! Everything a fine-tuning run changes, in one value, and one training step over it: the
//! loop in `train.rs` and the GPU benchmark both step through [`TrainState::step`].
//!
//! ```text
//! loss   = im_step_loss(model, batch)                 mse + vb [+ IM] [+ Minimax], step.rs
//! grads  = backward(loss.total)                       only the trained parameters get one
//! model  = AdamW(model, grads)                        optim.rs
//! ema    = decay * ema + (1 - decay) * model           ema.rs
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
use crate::losses::MinimaxMemory;
use crate::optim::{Moments, PathAdamW};
use crate::step::{StepBatch, StepLoss, im_step_loss};

fn host(t: &Tensor<1>) -> Vec<f32> {
    t.clone().into_data().convert::<f32>().try_to_vec::<f32>().expect("f32 values")
}

/// The model (on an autodiff device, its trained parameters marked), its EMA, AdamW's state,
/// Minimax's memories and the number of steps taken.
pub struct TrainState {
    model: Option<DiT>,
    pub ema: Ema,
    pub optimizer: PathAdamW,
    pub memory: MinimaxMemory,
    pub step: u64,
    config: TrainConfig,
    diffusion: GaussianDiffusion,
}

impl TrainState {
    /// A fresh run: marks the parameters `cfg.trainable` names, starts the EMA at them.
    pub fn new(base: DiT, cfg: &TrainConfig) -> Self {
        let model = match cfg.trainable {
            Trainable::Difffit => mark_difffit_trainable(base),
            Trainable::All => mark_all_trainable(base),
        };
        Self {
            ema: Ema::new(&model, cfg.ema_decay),
            optimizer: PathAdamW::new(cfg.optimizer.clone()),
            memory: MinimaxMemory::new(cfg.loss.memory_size),
            step: 0,
            model: Some(model),
            config: cfg.clone(),
            diffusion: GaussianDiffusion::dit(&Default::default()).expect("the 1000-step schedule"),
        }
    }

    /// The state a checkpoint recorded, over the same base model.
    pub fn resume(base: DiT, cfg: &TrainConfig, ck: &Checkpoint) -> Result<Self, CheckpointError> {
        let mut s = Self::new(base, cfg);
        let device = s.model().pos_embed.val().device();
        let plain = device.clone().inner();
        s.model = Some(ck.apply_to(s.model.take().expect("set in new"), false)?);
        s.ema.values = ck.ema.iter().map(|(k, v)| (k.clone(), Tensor::<1>::from_floats(v.as_slice(), &plain))).collect();
        s.optimizer.t = ck.adam_t;
        for (k, (m, v)) in &ck.adam {
            s.optimizer.state.insert(k.clone(), Moments { m: Tensor::<1>::from_floats(m.as_slice(), &plain), v: Tensor::<1>::from_floats(v.as_slice(), &plain) });
        }
        s.memory = MinimaxMemory::restore(cfg.loss.memory_size, &ck.memory, &device);
        s.step = ck.step;
        Ok(s)
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
        let model = self.model.take().expect("a TrainState always holds its model");
        let cfg = &self.config.loss;
        let loss = im_step_loss(&model, &self.diffusion, cfg.minimax.then_some(&mut self.memory), batch, cfg);
        let grads = GradientsParams::from_grads(loss.total.backward(), &model);
        let model = self.optimizer.step(model, grads);
        self.ema.update(&model);
        self.model = Some(model);
        self.step += 1;
        loss
    }

    /// The state as a checkpoint (host copies of the trained parameters, EMA, moments, memories).
    pub fn checkpoint(&self) -> Checkpoint {
        Checkpoint {
            path: None,
            step: self.step,
            adam_t: self.optimizer.t,
            config: self.config.clone(),
            params: trainable_tensors(self.model()).iter().map(|(k, t)| (k.clone(), host(t))).collect(),
            ema: self.ema.values.iter().map(|(k, t)| (k.clone(), host(t))).collect(),
            adam: self.optimizer.state.iter().map(|(k, m)| (k.clone(), (host(&m.m), host(&m.v)))).collect(),
            memory: self.memory.snapshot(),
        }
    }
}

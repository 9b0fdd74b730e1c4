//! The exponential moving average of the trained weights (`update_ema` of `train_dit.py`):
//!
//! ```text
//! ema <- decay * ema + (1 - decay) * param        for every trained parameter, after each step
//! ```
//!
//! Only trained parameters are averaged: a frozen parameter's EMA is the parameter itself, so
//! the EMA model is the base DiT with these values written over it (`Checkpoint::apply_to`).

use std::collections::BTreeMap;

use burn::prelude::*;
use ims3_dit::DiT;

use crate::difffit::trainable_tensors;

/// The EMA of a model's trained parameters, by module path, on the plain device.
#[derive(Clone, Debug)]
pub struct Ema {
    pub decay: f64,
    pub values: BTreeMap<String, Tensor<1>>,
}

impl Ema {
    /// Starts at the model's current trained parameters.
    pub fn new(model: &DiT, decay: f64) -> Self {
        Self { decay, values: trainable_tensors(model) }
    }

    /// One update from the model after an optimiser step.
    pub fn update(&mut self, model: &DiT) {
        let d = self.decay;
        let now = trainable_tensors(model);
        self.values = std::mem::take(&mut self.values)
            .into_iter()
            .map(|(k, e)| {
                let p = now[&k].clone();
                (k, e * d + p * (1.0 - d))
            })
            .collect();
    }
}

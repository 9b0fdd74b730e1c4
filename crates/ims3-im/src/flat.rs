//! The trained parameters, AdamW's moments and the EMA as flat buffers: one tensor each,
//! holding every trained parameter one after another in module-path order.
//!
//! ```text
//! g = cat(grad of each trained parameter)             [P]   one launch, P = 1,739,552 (DiT-XL/2)
//! p <- p * (1 - lr * wd)
//! m <- b1 m + (1 - b1) g            v <- b2 v + (1 - b2) g^2
//! p <- p - lr / (1 - b1^t) * m / (sqrt(v) / sqrt(1 - b2^t) + eps)
//! ema <- decay * ema + (1 - decay) * p
//! each trained parameter <- its slice of p (a view)
//! ```
//!
//! The same formulas, in the same order per value, as [`crate::optim::PathAdamW`] and
//! [`crate::ema::Ema`], which do them once per parameter tensor: here they run once over all
//! of them, so a step launches about 15 kernels for the update instead of ~15 per trained tensor
//! (DiT-XL/2 trains 202 tensors under Difffit: 5 biases per block, 4 gammas in each of the first
//! 14 blocks, the embedders' 3 biases and label table, the final layer's 2 biases). Checkpoints
//! keep the per-path layout: the flat buffers are split by path on the way out and joined on the
//! way in, so both layouts read and write the same checkpoints.

use std::collections::BTreeMap;

use burn::module::{Module, ModuleMapper, ModuleVisitor, Param};
use burn::optim::GradientsParams;
use burn::prelude::*;

use crate::config::AdamWSettings;
use crate::difffit::{PathStack, trainable_tensors};

/// Where each trained parameter lives in the flat buffers: (path, offset, length), by path.
#[derive(Clone, Debug, PartialEq)]
pub struct FlatLayout {
    slots: Vec<(String, usize, usize)>,
    len: usize,
}

impl FlatLayout {
    /// The layout of `values` (path -> flattened tensor), in path order.
    pub fn of(values: &BTreeMap<String, Tensor<1>>) -> Self {
        let mut slots = Vec::with_capacity(values.len());
        let mut len = 0;
        for (path, t) in values {
            let n = t.dims()[0];
            slots.push((path.clone(), len, n));
            len += n;
        }
        Self { slots, len }
    }

    /// Total number of values.
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// One tensor from per-path ones (each must be present, with its slot's length).
    pub fn join(&self, values: &BTreeMap<String, Tensor<1>>) -> Option<Tensor<1>> {
        let parts: Option<Vec<Tensor<1>>> = self.slots.iter().map(|(p, _, n)| values.get(p).filter(|t| t.dims()[0] == *n).cloned()).collect();
        let parts = parts?;
        if parts.is_empty() {
            return None;
        }
        Some(Tensor::cat(parts, 0))
    }

    /// Per-path views of `flat`.
    pub fn split(&self, flat: &Tensor<1>) -> BTreeMap<String, Tensor<1>> {
        self.slots.iter().map(|(p, off, n)| (p.clone(), flat.clone().narrow(0, *off, *n))).collect()
    }

    /// Per-path host copies of `flat`, read from the device once.
    pub fn split_host(&self, flat: &Tensor<1>) -> BTreeMap<String, Vec<f32>> {
        let all = flat.clone().into_data().convert::<f32>().try_to_vec::<f32>().expect("f32 values");
        self.slots.iter().map(|(p, off, n)| (p.clone(), all[*off..off + n].to_vec())).collect()
    }

    fn slot(&self, path: &str) -> Option<(usize, usize)> {
        self.slots.binary_search_by(|(p, _, _)| p.as_str().cmp(path)).ok().map(|i| (self.slots[i].1, self.slots[i].2))
    }
}

/// AdamW and the EMA over flat buffers (see the module docs).
#[derive(Clone, Debug)]
pub struct FlatUpdate {
    pub settings: AdamWSettings,
    pub decay: f64,
    /// Steps taken (PyTorch's per-parameter `step`, the same for every trained parameter).
    pub t: u64,
    pub layout: FlatLayout,
    /// The trained parameters (plain device); the model's trained parameters are views of it.
    pub params: Tensor<1>,
    /// First and second moments; `None` before the first step.
    pub moments: Option<(Tensor<1>, Tensor<1>)>,
    pub ema: Tensor<1>,
}

impl FlatUpdate {
    /// Starts at `model`'s trained parameters, the EMA equal to them, no moments.
    pub fn new<M: Module>(model: &M, settings: AdamWSettings, decay: f64) -> Self {
        let values = trainable_tensors(model);
        let layout = FlatLayout::of(&values);
        let params = layout.join(&values).expect("a model with trained parameters");
        Self { settings, decay, t: 0, layout, ema: params.clone(), params, moments: None }
    }

    /// One AdamW step of every trained parameter of `module` from `grads`, then the EMA;
    /// returns the module with its trained parameters replaced by views of the new buffer.
    /// Every trained parameter must have a gradient (all of DiT's do, every step).
    pub fn step<M: Module>(&mut self, module: M, mut grads: GradientsParams) -> M {
        self.t += 1;
        let s = self.settings.clone();
        let mut collect = CollectGrads { path: PathStack::default(), grads: &mut grads, out: BTreeMap::new() };
        module.visit(&mut collect);
        let g = self.layout.join(&collect.out).expect("a gradient for every trained parameter");
        let (m, v) = match self.moments.take() {
            Some((m, v)) => (m * s.beta1 + g.clone() * (1.0 - s.beta1), v * s.beta2 + g.powi_scalar(2) * (1.0 - s.beta2)),
            None => (g.clone() * (1.0 - s.beta1), g.powi_scalar(2) * (1.0 - s.beta2)),
        };
        let t = self.t as i32;
        let bias1 = 1.0 - s.beta1.powi(t);
        let bias2 = 1.0 - s.beta2.powi(t);
        let p = self.params.clone();
        let p = if s.weight_decay != 0.0 { p * (1.0 - s.lr * s.weight_decay) } else { p };
        let denom = v.clone().sqrt() / bias2.sqrt() + s.eps;
        let p = p - m.clone() / denom * (s.lr / bias1);
        self.moments = Some((m, v));
        self.ema = self.ema.clone() * self.decay + p.clone() * (1.0 - self.decay);
        self.params = p.clone();
        module.map(&mut WriteBack { path: PathStack::default(), layout: &self.layout, flat: p })
    }
}

struct CollectGrads<'a> {
    path: PathStack,
    grads: &'a mut GradientsParams,
    out: BTreeMap<String, Tensor<1>>,
}

impl ModuleVisitor for CollectGrads<'_> {
    fn enter_module(&mut self, name: &str, _: &str) {
        self.path.enter(name);
    }
    fn exit_module(&mut self, _: &str, _: &str) {
        self.path.exit();
    }
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
        if let Some(g) = self.grads.remove::<D>(param.id) {
            self.out.insert(self.path.path(), g.reshape([-1]));
        }
    }
}

struct WriteBack<'a> {
    path: PathStack,
    layout: &'a FlatLayout,
    flat: Tensor<1>,
}

impl ModuleMapper for WriteBack<'_> {
    fn enter_module(&mut self, name: &str, _: &str) {
        self.path.enter(name);
    }
    fn exit_module(&mut self, _: &str, _: &str) {
        self.path.exit();
    }
    fn map_float<const D: usize>(&mut self, param: Param<Tensor<D>>) -> Param<Tensor<D>> {
        let Some((off, n)) = self.layout.slot(&self.path.path()) else { return param };
        let (id, tensor, mapper) = param.consume();
        let shape = tensor.shape();
        let value: Tensor<D> = Tensor::from_inner(self.flat.clone().narrow(0, off, n).reshape(shape)).require_grad();
        Param::from_mapped_value(id, value, mapper)
    }
}

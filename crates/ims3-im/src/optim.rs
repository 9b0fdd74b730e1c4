//! AdamW over the Difffit parameters, with its state keyed by module path.
//!
//! PyTorch's `torch.optim.AdamW` (amsgrad off), which `train_dit.py` uses with lr 1e-3, weight
//! decay 0 and the default betas (0.9, 0.999) and eps 1e-8:
//!
//! ```text
//! p <- p * (1 - lr * wd)
//! m <- b1 m + (1 - b1) g            v <- b2 v + (1 - b2) g^2
//! p <- p - lr / (1 - b1^t) * m / (sqrt(v) / sqrt(1 - b2^t) + eps)
//! ```
//!
//! The state is a map from the parameter's dotted module path (the checkpoint key's words) to
//! its two moments, so a checkpoint can hold it beside the parameters it belongs to and a resumed
//! run finds it again whatever ids burn gives the reloaded parameters. Parameters that do not
//! require a gradient (Difffit's frozen ones) get none from autodiff and are left untouched.

use std::collections::BTreeMap;

use burn::module::{Module, ModuleMapper, Param};
use burn::optim::GradientsParams;
use burn::prelude::*;

use crate::config::AdamWSettings;
use crate::difffit::PathStack;

/// First and second moments of one parameter, flattened.
#[derive(Clone, Debug)]
pub struct Moments {
    pub m: Tensor<1>,
    pub v: Tensor<1>,
}

/// AdamW with path-keyed state. `t` counts the steps taken (PyTorch's per-parameter `step`,
/// equal for all parameters here since every trained parameter gets a gradient each step).
#[derive(Clone, Debug)]
pub struct PathAdamW {
    pub settings: AdamWSettings,
    pub t: u64,
    pub state: BTreeMap<String, Moments>,
}

impl PathAdamW {
    pub fn new(settings: AdamWSettings) -> Self {
        Self { settings, t: 0, state: BTreeMap::new() }
    }

    /// One update of every parameter of `module` that has a gradient in `grads`.
    pub fn step<M: Module>(&mut self, module: M, grads: GradientsParams) -> M {
        self.t += 1;
        let mut mapper = Update { opt: self, grads, path: PathStack::default() };
        module.map(&mut mapper)
    }
}

struct Update<'a> {
    opt: &'a mut PathAdamW,
    grads: GradientsParams,
    path: PathStack,
}

impl ModuleMapper for Update<'_> {
    fn enter_module(&mut self, name: &str, _: &str) {
        self.path.enter(name);
    }
    fn exit_module(&mut self, _: &str, _: &str) {
        self.path.exit();
    }
    fn map_float<const D: usize>(&mut self, param: Param<Tensor<D>>) -> Param<Tensor<D>> {
        let Some(grad) = self.grads.remove::<D>(param.id) else { return param };
        let (id, tensor, mapper) = param.consume();
        let s = self.opt.settings.clone();
        let t = self.opt.t as i32;
        let shape = tensor.shape();
        let p = tensor.inner().reshape([-1]); // [P], plain device
        let g: Tensor<1> = grad.reshape([-1]);
        let path = self.path.path();
        let prev = self.opt.state.remove(&path);
        let (m, v) = match prev {
            Some(Moments { m, v }) => (m * s.beta1 + g.clone() * (1.0 - s.beta1), v * s.beta2 + g.powi_scalar(2) * (1.0 - s.beta2)),
            None => (g.clone() * (1.0 - s.beta1), g.powi_scalar(2) * (1.0 - s.beta2)),
        };
        let bias1 = 1.0 - s.beta1.powi(t);
        let bias2 = 1.0 - s.beta2.powi(t);
        let p = if s.weight_decay != 0.0 { p * (1.0 - s.lr * s.weight_decay) } else { p };
        let denom = v.clone().sqrt() / bias2.sqrt() + s.eps;
        let p = p - m.clone() / denom * (s.lr / bias1);
        self.opt.state.insert(path, Moments { m, v });
        let updated: Tensor<D> = Tensor::from_inner(p.reshape(shape)).require_grad();
        Param::from_mapped_value(id, updated, mapper)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::nn::{Linear, LinearConfig};

    #[derive(Module, Debug)]
    struct Net {
        lin: Linear,
    }

    /// Two steps of AdamW on f(w, b) = sum((x w + b)^2), checked against the update written out
    /// in f64 by hand (PyTorch's formula, with weight decay on).
    #[test]
    fn matches_the_pytorch_formula() {
        let _one_graph_at_a_time = ims3_util::autodiff_guard();
        let device = Device::flex().autodiff();
        let s = AdamWSettings { lr: 0.1, beta1: 0.8, beta2: 0.9, eps: 1e-3, weight_decay: 0.5 };
        let mut net = Net { lin: LinearConfig::new(2, 1).init(&device) };
        let x = Tensor::<2>::from_floats([[1.0, 2.0], [-1.0, 0.5]], &device);
        let params = |net: &Net| -> Vec<f64> {
            let w = net.lin.weight.val().into_data().convert::<f64>().try_to_vec::<f64>().unwrap();
            let b = net.lin.bias.as_ref().unwrap().val().into_data().convert::<f64>().try_to_vec::<f64>().unwrap();
            [w, b].concat()
        };
        let mut want = params(&net);
        let (mut m, mut v) = (vec![0.0; 3], vec![0.0; 3]);
        let mut opt = PathAdamW::new(s.clone());
        for step in 1..=2 {
            // Gradient by hand: y_i = x_i . w + b, f = sum y_i^2, df/dw = sum 2 y_i x_i.
            let xs = [[1.0, 2.0], [-1.0, 0.5]];
            let y: Vec<f64> = xs.iter().map(|r| r[0] * want[0] + r[1] * want[1] + want[2]).collect();
            let g = [
                2.0 * (y[0] * xs[0][0] + y[1] * xs[1][0]),
                2.0 * (y[0] * xs[0][1] + y[1] * xs[1][1]),
                2.0 * (y[0] + y[1]),
            ];
            for k in 0..3 {
                want[k] *= 1.0 - s.lr * s.weight_decay;
                m[k] = s.beta1 * m[k] + (1.0 - s.beta1) * g[k];
                v[k] = s.beta2 * v[k] + (1.0 - s.beta2) * g[k] * g[k];
                let (b1, b2) = (1.0 - s.beta1.powi(step), 1.0 - s.beta2.powi(step));
                want[k] -= s.lr / b1 * m[k] / (v[k].sqrt() / b2.sqrt() + s.eps);
            }
            let loss = net.lin.forward(x.clone()).powi_scalar(2).sum();
            let grads = GradientsParams::from_grads(loss.backward(), &net);
            net = opt.step(net, grads);
        }
        let got = params(&net);
        for k in 0..3 {
            assert!((got[k] - want[k]).abs() < 1e-5, "param {k}: {} vs {}", got[k], want[k]);
        }
        assert_eq!(opt.t, 2);
        assert_eq!(opt.state.keys().cloned().collect::<Vec<_>>(), vec!["lin.bias".to_string(), "lin.weight".to_string()]);
    }
}

//! The evaluation networks, and their initialisation redrawn from the seed.

use burn::module::Module;
use burn::prelude::*;
use ims3_nets::{ConvNet, ConvNetConfig, NetError, ResNet, ResNetAP, ResNetAPConfig, ResNetConfig};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

use crate::config::{EvalConfig, NetKind};

/// One of the evaluation networks.
#[derive(Module, Debug)]
pub enum EvalNet {
    ResNetAP(ResNetAP),
    ResNet(ResNet),
    ConvNet(ConvNet),
}

impl EvalNet {
    pub fn new(cfg: &EvalConfig, classes: usize, device: &Device) -> Result<Self, NetError> {
        Ok(match cfg.net {
            NetKind::ResnetAp10 => EvalNet::ResNetAP(ResNetAPConfig { norm: cfg.norm, channels: cfg.channels, ..ResNetAPConfig::ap10(classes, cfg.size) }.init(device)?),
            NetKind::Resnet18 => EvalNet::ResNet(ResNetConfig { norm: cfg.norm, channels: cfg.channels, ..ResNetConfig::idc(18, classes, cfg.size) }.init(device)?),
            NetKind::ConvNet { depth } => EvalNet::ConvNet(ConvNetConfig { norm: cfg.norm, width: cfg.convnet_width, ..ConvNetConfig::new(classes, depth, cfg.channels, cfg.size) }.init(device)?),
        })
    }

    pub fn forward(&self, x: Tensor<4>) -> Tensor<2> {
        match self {
            EvalNet::ResNetAP(n) => n.forward(x),
            EvalNet::ResNet(n) => n.forward(x),
            EvalNet::ConvNet(n) => n.forward(x),
        }
    }
}

/// Redraws every weight from `ChaCha8(seed)` with the reference's initialisation, so a seed
/// gives the same network whatever else draws from the backend's global generator:
/// ResNet convolutions `N(0, sqrt(2 / (k k C_out)))`; ConvNet convolutions, Linear weights and
/// all biases PyTorch's default `U(-1/sqrt(fan_in), 1/sqrt(fan_in))`; norm parameters as built
/// (ones and zeros).
pub(crate) fn reinit_seeded(net: EvalNet, kind: &NetKind, seed: u64) -> EvalNet {
    use burn::module::{ModuleMapper, Param};
    use rand::Rng;
    use rand_distr::{Distribution, Normal};
    struct Reinit {
        rng: ChaCha8Rng,
        resnet: bool,
        /// (name, burn container type) of every module entered.
        path: Vec<(String, String)>,
        fan_in: std::collections::HashMap<String, usize>,
    }
    impl ModuleMapper for Reinit {
        fn enter_module(&mut self, name: &str, container_type: &str) {
            self.path.push((name.to_string(), container_type.to_string()));
        }
        fn exit_module(&mut self, _: &str, _: &str) {
            self.path.pop();
        }
        fn map_float<const D: usize>(&mut self, param: Param<Tensor<D>>) -> Param<Tensor<D>> {
            let names: Vec<&str> = self.path.iter().map(|(n, _)| n.as_str()).collect();
            let owner = names[..names.len().saturating_sub(1)].join(".");
            let leaf = names.last().map(|s| s.to_string()).unwrap_or_default();
            // The parameter's own entry carries the type of the module that holds it.
            if self.path.last().is_some_and(|(_, ty)| ims3_nets::is_norm_container(ty)) {
                return param; // GroupNorm / BatchNorm: ones and zeros
            }
            let dims = param.shape().dims::<D>().to_vec();
            let n: usize = dims.iter().product();
            let values: Vec<f32> = match (D, leaf.as_str()) {
                (4, _) => {
                    let (cout, cin, kh, kw) = (dims[0], dims[1], dims[2], dims[3]);
                    self.fan_in.insert(owner.clone(), cin * kh * kw);
                    if self.resnet {
                        let normal = Normal::new(0.0f32, (2.0 / (kh * kw * cout) as f32).sqrt()).expect("std > 0");
                        (0..n).map(|_| normal.sample(&mut self.rng)).collect()
                    } else {
                        let b = 1.0 / ((cin * kh * kw) as f32).sqrt();
                        (0..n).map(|_| self.rng.random_range(-b..b)).collect()
                    }
                }
                (2, _) => {
                    // burn's Linear weight is [in, out].
                    self.fan_in.insert(owner.clone(), dims[0]);
                    let b = 1.0 / (dims[0] as f32).sqrt();
                    (0..n).map(|_| self.rng.random_range(-b..b)).collect()
                }
                (1, "bias") => {
                    let fan_in = self.fan_in.get(&owner).copied().unwrap_or(n);
                    let b = 1.0 / (fan_in as f32).sqrt();
                    (0..n).map(|_| self.rng.random_range(-b..b)).collect()
                }
                _ => return param,
            };
            let (id, t, mapper) = param.consume();
            let grad = t.is_require_grad();
            let v: Tensor<D> = Tensor::<1>::from_floats(values.as_slice(), &t.device()).reshape(param_shape::<D>(&dims));
            Param::from_mapped_value(id, if grad { v.require_grad() } else { v }, mapper)
        }
    }
    fn param_shape<const D: usize>(dims: &[usize]) -> [usize; D] {
        let mut a = [0usize; D];
        a.copy_from_slice(dims);
        a
    }
    let resnet = !matches!(kind, NetKind::ConvNet { .. });
    net.map(&mut Reinit { rng: ChaCha8Rng::seed_from_u64(seed ^ 0x1417), resnet, path: vec![], fan_in: Default::default() })
}


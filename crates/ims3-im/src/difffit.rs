//! Difffit parameter selection and the EMA of the weights (train_dit.py).
//!
//! `mark_difffit_trainable` applies the reference's name rule
//! ([`ims3_dit::is_difffit_trainable`]: `bias`, `norm`, `gamma` or `y_embed` in the name) to
//! the module paths, which carry the same words as the checkpoint keys; everything else,
//! `pos_embed` included, stops requiring gradients, so the optimiser leaves it bit-identical.

use std::collections::BTreeMap;

use burn::module::{Module, ModuleMapper, ModuleVisitor, Param};
use burn::prelude::*;
use ims3_dit::DiT;

/// Tracks the dotted path of the parameter being visited or mapped.
#[derive(Default)]
pub(crate) struct PathStack(Vec<String>);

impl PathStack {
    pub(crate) fn enter(&mut self, name: &str) {
        self.0.push(name.to_string());
    }
    pub(crate) fn exit(&mut self) {
        self.0.pop();
    }
    pub(crate) fn path(&self) -> String {
        self.0.join(".")
    }
}

/// Sets `require_grad` on every parameter to `rule(module path)`.
fn mark_trainable_by(model: DiT, rule: fn(&str) -> bool) -> DiT {
    struct Mark(PathStack, fn(&str) -> bool);
    impl ModuleMapper for Mark {
        fn enter_module(&mut self, name: &str, _: &str) {
            self.0.enter(name);
        }
        fn exit_module(&mut self, _: &str, _: &str) {
            self.0.exit();
        }
        fn map_float<const D: usize>(&mut self, param: Param<Tensor<D>>) -> Param<Tensor<D>> {
            param.set_require_grad((self.1)(&self.0.path()))
        }
    }
    model.map(&mut Mark(PathStack::default(), rule))
}

/// Freezes every parameter that Difffit does not train.
pub fn mark_difffit_trainable(model: DiT) -> DiT {
    mark_trainable_by(model, ims3_dit::is_difffit_trainable)
}

/// Full training, as DiT's own training script: every parameter trains except the fixed sin-cos
/// `pos_embed` (a `requires_grad=False` parameter in the reference).
pub fn mark_all_trainable(model: DiT) -> DiT {
    mark_trainable_by(model, |path| path != "pos_embed")
}

/// Every float parameter by module path, as host values (for tests and reports).
pub fn parameters_by_path<M: Module>(module: &M) -> Vec<(String, Vec<f32>)> {
    struct Collect(PathStack, Vec<(String, Vec<f32>)>);
    impl ModuleVisitor for Collect {
        fn enter_module(&mut self, name: &str, _: &str) {
            self.0.enter(name);
        }
        fn exit_module(&mut self, _: &str, _: &str) {
            self.0.exit();
        }
        fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
            let v = param.val().into_data().convert::<f32>().try_to_vec::<f32>().expect("f32 values");
            self.1.push((self.0.path(), v));
        }
    }
    let mut c = Collect(PathStack::default(), Vec::new());
    module.visit(&mut c);
    c.1
}

/// Number of parameters the Difffit rule trains in `module`.
pub fn difffit_trainable_count<M: Module>(module: &M) -> usize {
    struct Count(PathStack, usize);
    impl ModuleVisitor for Count {
        fn enter_module(&mut self, name: &str, _: &str) {
            self.0.enter(name);
        }
        fn exit_module(&mut self, _: &str, _: &str) {
            self.0.exit();
        }
        fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
            if ims3_dit::is_difffit_trainable(&self.0.path()) {
                self.1 += param.shape().num_elements();
            }
        }
    }
    let mut c = Count(PathStack::default(), 0);
    module.visit(&mut c);
    c.1
}

/// The trainable parameters of `module` (those that require a gradient), by module path, as
/// flattened detached tensors on the plain (non-autodiff) device.
pub fn trainable_tensors<M: Module>(module: &M) -> BTreeMap<String, Tensor<1>> {
    struct Collect(PathStack, BTreeMap<String, Tensor<1>>);
    impl ModuleVisitor for Collect {
        fn enter_module(&mut self, name: &str, _: &str) {
            self.0.enter(name);
        }
        fn exit_module(&mut self, _: &str, _: &str) {
            self.0.exit();
        }
        fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
            if param.is_require_grad() {
                let t = param.val();
                let t = if t.device().is_autodiff() { t.inner() } else { t };
                self.1.insert(self.0.path(), t.reshape([-1]));
            }
        }
    }
    let mut c = Collect(PathStack::default(), BTreeMap::new());
    module.visit(&mut c);
    c.1
}

/// Replaces the parameters named in `values` (module path -> flattened values) and reports
/// which names matched no parameter and which had the wrong element count. The replaced
/// parameters keep their `require_grad` flag.
pub fn overwrite_parameters<M: Module>(module: M, values: &BTreeMap<String, Vec<f32>>) -> Result<M, ParameterMismatch> {
    struct Write<'a> {
        path: PathStack,
        values: &'a BTreeMap<String, Vec<f32>>,
        used: Vec<String>,
        bad: Vec<String>,
    }
    impl ModuleMapper for Write<'_> {
        fn enter_module(&mut self, name: &str, _: &str) {
            self.path.enter(name);
        }
        fn exit_module(&mut self, _: &str, _: &str) {
            self.path.exit();
        }
        fn map_float<const D: usize>(&mut self, param: Param<Tensor<D>>) -> Param<Tensor<D>> {
            let path = self.path.path();
            let Some(v) = self.values.get(&path) else { return param };
            let shape = param.shape();
            if shape.num_elements() != v.len() {
                self.bad.push(format!("{path}: {} values for shape {:?}", v.len(), shape.dims::<D>()));
                return param;
            }
            self.used.push(path);
            let (id, t, mapper) = param.consume();
            let grad = t.is_require_grad();
            let new = Tensor::<1>::from_floats(v.as_slice(), &t.device()).reshape(shape);
            let new = if grad { new.require_grad() } else { new };
            Param::from_mapped_value(id, new, mapper)
        }
    }
    let mut w = Write { path: PathStack::default(), values, used: vec![], bad: vec![] };
    let module = module.map(&mut w);
    let unknown: Vec<&String> = values.keys().filter(|k| !w.used.contains(k)).filter(|k| !w.bad.iter().any(|b| b.starts_with(k.as_str()))).collect();
    if !w.bad.is_empty() || !unknown.is_empty() {
        return Err(ParameterMismatch { wrong_sizes: w.bad, unknown: unknown.into_iter().cloned().collect() });
    }
    Ok(module)
}

/// Parameters of a checkpoint that do not fit a model.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}{}", if wrong_sizes.is_empty() { String::new() } else { format!("wrong sizes: {}; ", wrong_sizes.join(", ")) }, if unknown.is_empty() { String::new() } else { format!("no such parameter: {}", unknown.join(", ")) })]
pub struct ParameterMismatch {
    /// `path: n values for shape [..]`.
    pub wrong_sizes: Vec<String>,
    /// Names that match no parameter.
    pub unknown: Vec<String>,
}

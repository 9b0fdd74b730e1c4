//! Backend selection: `--device cpu|flex|cuda[:N]|wgpu[:N]` -> [`burn::prelude::Device`].
//!
//! Backends are compiled in through cargo features (`flex` by default, `cuda`, `wgpu`). A device
//! whose backend was not compiled in, or which does not exist on this machine, is a
//! [`DeviceError`] with one readable line, never a panic from deep inside the runtime.

use burn::prelude::*;
use std::panic::{AssertUnwindSafe, catch_unwind};

/// What a user asked for on the command line.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DeviceSpec {
    /// The pure-Rust Flex CPU backend (`cpu` or `flex`).
    Cpu,
    /// A CUDA GPU by index (`cuda` = `cuda:0`).
    Cuda(usize),
    /// A wgpu adapter: `wgpu` picks the best one, `wgpu:N` the N-th discrete GPU, `wgpu:cpu` a
    /// software adapter such as lavapipe.
    Wgpu(Option<usize>),
    WgpuCpu,
}

#[derive(Debug, thiserror::Error)]
pub enum DeviceError {
    #[error("unknown device '{0}': expected cpu, cuda[:N] or wgpu[:N|cpu]")]
    Unknown(String),
    #[error("device '{spec}' needs the `{feature}` backend, which this binary was built without (rebuild with `--features {feature}`)")]
    NotCompiled { spec: String, feature: &'static str },
    #[error("device '{spec}' is not available on this machine: {reason}")]
    Unavailable { spec: String, reason: String },
}

impl std::str::FromStr for DeviceSpec {
    type Err = DeviceError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let lower = s.trim().to_ascii_lowercase();
        let (name, index) = match lower.split_once(':') {
            Some((n, i)) => (n, Some(i)),
            None => (lower.as_str(), None),
        };
        let parse_index = |i: &str| i.parse::<usize>().map_err(|_| DeviceError::Unknown(s.to_string()));
        match (name, index) {
            ("cpu" | "flex", None) => Ok(DeviceSpec::Cpu),
            ("cuda" | "gpu", None) => Ok(DeviceSpec::Cuda(0)),
            ("cuda" | "gpu", Some(i)) => Ok(DeviceSpec::Cuda(parse_index(i)?)),
            ("wgpu", None) => Ok(DeviceSpec::Wgpu(None)),
            ("wgpu", Some("cpu")) => Ok(DeviceSpec::WgpuCpu),
            ("wgpu", Some(i)) => Ok(DeviceSpec::Wgpu(Some(parse_index(i)?))),
            _ => Err(DeviceError::Unknown(s.to_string())),
        }
    }
}

impl std::fmt::Display for DeviceSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            DeviceSpec::Cpu => write!(f, "cpu"),
            DeviceSpec::Cuda(i) => write!(f, "cuda:{i}"),
            DeviceSpec::Wgpu(None) => write!(f, "wgpu"),
            DeviceSpec::Wgpu(Some(i)) => write!(f, "wgpu:{i}"),
            DeviceSpec::WgpuCpu => write!(f, "wgpu:cpu"),
        }
    }
}

impl DeviceSpec {
    /// True for the Flex CPU backend (a GPU recipe asks before it runs there).
    pub fn is_cpu(&self) -> bool {
        matches!(self, DeviceSpec::Cpu)
    }

    /// Builds the device without touching the hardware (burn devices are lazy).
    pub fn device(&self) -> Result<Device, DeviceError> {
        match self {
            DeviceSpec::Cpu => flex_device(self),
            DeviceSpec::Cuda(i) => cuda_device(self, *i),
            DeviceSpec::Wgpu(_) | DeviceSpec::WgpuCpu => wgpu_device(self),
        }
    }

    /// Builds the device and runs one tiny operation on it, so that a missing driver or GPU is
    /// reported here as a [`DeviceError::Unavailable`] instead of a panic later.
    pub fn open(&self) -> Result<Device, DeviceError> {
        let device = self.device()?;
        probe(&device).map_err(|reason| DeviceError::Unavailable { spec: self.to_string(), reason })?;
        Ok(device)
    }
}

/// Parses and opens a device in one step: what every `--device` flag goes through.
pub fn open_device(spec: &str) -> Result<Device, DeviceError> {
    spec.parse::<DeviceSpec>()?.open()
}

/// The backends this binary was built with, for `--help` texts and error messages.
pub fn compiled_backends() -> Vec<&'static str> {
    let mut v = Vec::new();
    if cfg!(feature = "flex") {
        v.push("cpu");
    }
    if cfg!(feature = "cuda") {
        v.push("cuda");
    }
    if cfg!(feature = "wgpu") {
        v.push("wgpu");
    }
    v
}

#[cfg(feature = "flex")]
fn flex_device(_: &DeviceSpec) -> Result<Device, DeviceError> {
    Ok(Device::flex())
}
#[cfg(not(feature = "flex"))]
fn flex_device(spec: &DeviceSpec) -> Result<Device, DeviceError> {
    Err(DeviceError::NotCompiled { spec: spec.to_string(), feature: "flex" })
}

#[cfg(feature = "cuda")]
fn cuda_device(_: &DeviceSpec, index: usize) -> Result<Device, DeviceError> {
    Ok(Device::cuda(index))
}
#[cfg(not(feature = "cuda"))]
fn cuda_device(spec: &DeviceSpec, _: usize) -> Result<Device, DeviceError> {
    Err(DeviceError::NotCompiled { spec: spec.to_string(), feature: "cuda" })
}

#[cfg(feature = "wgpu")]
fn wgpu_device(spec: &DeviceSpec) -> Result<Device, DeviceError> {
    use burn::tensor::DeviceKind;
    Ok(match spec {
        DeviceSpec::Wgpu(Some(i)) => Device::wgpu(DeviceKind::DiscreteGpu(*i)),
        DeviceSpec::WgpuCpu => Device::wgpu(DeviceKind::Cpu),
        _ => Device::wgpu(DeviceKind::DefaultDevice),
    })
}
#[cfg(not(feature = "wgpu"))]
fn wgpu_device(spec: &DeviceSpec) -> Result<Device, DeviceError> {
    Err(DeviceError::NotCompiled { spec: spec.to_string(), feature: "wgpu" })
}

/// Runs `2 + 1` on the device. Runtime initialisation failures (no driver, no GPU with that index)
/// surface in burn as panics on a worker thread that reach us as a `RecvError` panic; they are
/// caught here, with the default panic message silenced, and turned into text.
fn probe(device: &Device) -> Result<(), String> {
    let previous = std::panic::take_hook();
    let message = std::sync::Arc::new(std::sync::Mutex::new(None::<String>));
    let sink = message.clone();
    std::panic::set_hook(Box::new(move |info| {
        let text = if let Some(s) = info.payload().downcast_ref::<&str>() {
            s.to_string()
        } else if let Some(s) = info.payload().downcast_ref::<String>() {
            s.clone()
        } else {
            "unknown failure".to_string()
        };
        let mut slot = sink.lock().unwrap_or_else(|e| e.into_inner());
        // Keep the first (root-cause) message; later ones are usually channel errors.
        if slot.is_none() {
            *slot = Some(text);
        }
    }));
    let result = catch_unwind(AssertUnwindSafe(|| {
        let t = Tensor::<1>::from_floats([2.0f32], device) + 1.0;
        let v: Vec<f32> = t.into_data().try_to_vec::<f32>().map_err(|e| format!("{e:?}"))?;
        if v == [3.0] { Ok(()) } else { Err(format!("probe computed {v:?} instead of [3.0]")) }
    }));
    std::panic::set_hook(previous);
    match result {
        Ok(r) => r,
        Err(_) => {
            let text = message.lock().unwrap_or_else(|e| e.into_inner()).take().unwrap_or_default();
            Err(summarise(&text))
        }
    }
}

/// One short line out of a runtime's panic text: its first line, without the list of library
/// names cudarc appends, and with a hint when the driver library itself is missing.
fn summarise(text: &str) -> String {
    let first = text.lines().next().unwrap_or("").trim();
    let first = first.split(" - searched for").next().unwrap_or(first).trim();
    if first.is_empty() {
        return "the backend failed to start".to_string();
    }
    if first.contains("dynamically load the \"cuda\" shared library") {
        return format!("{first} (no NVIDIA driver found: is libcuda.so installed and on LD_LIBRARY_PATH?)");
    }
    first.chars().take(300).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_specs() {
        assert_eq!("cpu".parse::<DeviceSpec>().unwrap(), DeviceSpec::Cpu);
        assert_eq!("CUDA:1".parse::<DeviceSpec>().unwrap(), DeviceSpec::Cuda(1));
        assert_eq!("cuda".parse::<DeviceSpec>().unwrap(), DeviceSpec::Cuda(0));
        assert_eq!("wgpu:cpu".parse::<DeviceSpec>().unwrap(), DeviceSpec::WgpuCpu);
        assert!(matches!("tpu".parse::<DeviceSpec>(), Err(DeviceError::Unknown(_))));
        assert!(matches!("cuda:x".parse::<DeviceSpec>(), Err(DeviceError::Unknown(_))));
    }

    #[test]
    fn runtime_panics_become_one_short_line() {
        let text = "Unable to dynamically load the \"cuda\" shared library - searched for library names: [\"libcuda.so\"]. Ensure that ...\nmore";
        let s = summarise(text);
        assert!(s.starts_with("Unable to dynamically load the \"cuda\" shared library (no NVIDIA driver"), "{s}");
        assert!(!s.contains("searched for") && !s.contains('\n'));
        assert_eq!(summarise(""), "the backend failed to start");
    }

    #[test]
    fn cpu_opens() {
        open_device("cpu").unwrap();
    }

    #[cfg(not(feature = "cuda"))]
    #[test]
    fn cuda_without_feature_is_a_clear_error() {
        let e = open_device("cuda:0").unwrap_err().to_string();
        assert!(e.contains("--features cuda"), "{e}");
    }
}

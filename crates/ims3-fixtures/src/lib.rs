//! The reference fixtures: cases in folders, each with `fixture.json` (`kind` + configuration)
//! and `io.safetensors` (inputs and expected outputs). See `../shared/fixtures/README.md`.
//!
//! The folder comes from `IMS3_FIXTURES` (default `../shared/fixtures` from the repository root).
//! Cases are found by their `kind`, never by folder name.

use anyhow::{Context, Result, bail};
use burn::prelude::*;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// The fixtures folder: `$IMS3_FIXTURES`, else `<repo>/../shared/fixtures`. The repository is
/// found from `CARGO_MANIFEST_DIR` as cargo sets it when running tests (read at run time, so a
/// build reused from another checkout does not point back at that checkout).
pub fn fixtures_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("IMS3_FIXTURES") {
        return PathBuf::from(dir);
    }
    let manifest = std::env::var_os("CARGO_MANIFEST_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")));
    // Every crate sits at <repo>/crates/<name>.
    manifest.join("../../../shared/fixtures")
}

/// One case folder.
#[derive(Clone, Debug)]
pub struct Case {
    pub dir: PathBuf,
    pub name: String,
    pub kind: String,
    pub config: serde_json::Value,
}

/// A tensor read from `io.safetensors`, kept in f64 so schedule arrays lose nothing.
#[derive(Clone, Debug)]
pub struct Array {
    pub shape: Vec<usize>,
    pub data: Vec<f64>,
}

impl Array {
    pub fn f32(&self) -> Vec<f32> {
        self.data.iter().map(|&v| v as f32).collect()
    }

    /// As a float tensor of rank D on `device`.
    pub fn tensor<const D: usize>(&self, device: &Device) -> Tensor<D> {
        assert_eq!(self.shape.len(), D, "fixture tensor rank");
        Tensor::<1>::from_floats(self.f32().as_slice(), device).reshape(self.dims::<D>())
    }

    /// Integer inputs (`t`, `y`) are stored as float32.
    pub fn int_tensor(&self, device: &Device) -> Tensor<1, Int> {
        let v: Vec<i64> = self.data.iter().map(|&x| x.round() as i64).collect();
        Tensor::<1, Int>::from_ints(v.as_slice(), device)
    }

    pub fn dims<const D: usize>(&self) -> [usize; D] {
        self.shape.clone().try_into().expect("rank checked")
    }
}

impl Case {
    /// Every tensor of the case's `io.safetensors`.
    pub fn io(&self) -> Result<BTreeMap<String, Array>> {
        let path = self.dir.join("io.safetensors");
        let bytes = std::fs::read(&path).with_context(|| format!("reading {}", path.display()))?;
        let st = safetensors::SafeTensors::deserialize(&bytes)
            .with_context(|| format!("parsing {}", path.display()))?;
        let mut out = BTreeMap::new();
        for (name, view) in st.tensors() {
            let raw = view.data();
            let data: Vec<f64> = match view.dtype() {
                safetensors::Dtype::F32 => raw.chunks_exact(4).map(|c| f32::from_le_bytes(c.try_into().unwrap()) as f64).collect(),
                safetensors::Dtype::F64 => raw.chunks_exact(8).map(|c| f64::from_le_bytes(c.try_into().unwrap())).collect(),
                safetensors::Dtype::I64 => raw.chunks_exact(8).map(|c| i64::from_le_bytes(c.try_into().unwrap()) as f64).collect(),
                other => bail!("{}: tensor '{name}' has unsupported dtype {other:?}", path.display()),
            };
            out.insert(name, Array { shape: view.shape().to_vec(), data });
        }
        Ok(out)
    }

    pub fn usize(&self, key: &str) -> Result<usize> {
        self.config[key].as_u64().map(|v| v as usize).with_context(|| format!("{}: fixture.json has no integer '{key}'", self.name))
    }

    pub fn f64(&self, key: &str) -> Result<f64> {
        self.config[key].as_f64().with_context(|| format!("{}: fixture.json has no number '{key}'", self.name))
    }
}

/// All cases under `dir`, sorted by folder name.
pub fn discover(dir: &Path) -> Result<Vec<Case>> {
    let entries = std::fs::read_dir(dir).with_context(|| {
        format!("fixtures folder {} cannot be read (set IMS3_FIXTURES)", dir.display())
    })?;
    let mut cases = Vec::new();
    for e in entries {
        let e = e?;
        let json = e.path().join("fixture.json");
        if !json.is_file() {
            continue;
        }
        let text = std::fs::read_to_string(&json).with_context(|| format!("reading {}", json.display()))?;
        let config: serde_json::Value =
            serde_json::from_str(&text).with_context(|| format!("{} is not valid JSON", json.display()))?;
        let kind = config["kind"].as_str().with_context(|| format!("{} has no \"kind\"", json.display()))?.to_string();
        cases.push(Case { dir: e.path(), name: e.file_name().to_string_lossy().into_owned(), kind, config });
    }
    cases.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(cases)
}

/// The first case (by folder name) of `kind` under [`fixtures_dir`]; panics with the folder
/// searched if there is none (for tests).
pub fn case_of_kind(kind: &str) -> Case {
    let dir = fixtures_dir();
    discover(&dir)
        .unwrap_or_else(|e| panic!("{e:#}"))
        .into_iter()
        .find(|c| c.kind == kind)
        .unwrap_or_else(|| panic!("no '{kind}' fixture under {}", dir.display()))
}

/// `max |got - want| / max |want|` (the fixtures README's measure), with a floor on the
/// denominator so an all-zero reference does not divide by zero.
pub fn max_rel_err(got: &[f64], want: &[f64]) -> f64 {
    assert_eq!(got.len(), want.len(), "compared arrays differ in length");
    let scale = want.iter().fold(0.0f64, |m, v| m.max(v.abs())).max(1e-12);
    let diff = got.iter().zip(want).fold(0.0f64, |m, (a, b)| {
        if a.is_nan() || b.is_nan() { f64::INFINITY } else { m.max((a - b).abs()) }
    });
    diff / scale
}

/// Reads a float tensor back to f64 values.
pub fn to_f64<const D: usize>(t: Tensor<D>) -> Vec<f64> {
    t.into_data().convert::<f32>().try_to_vec::<f32>().expect("f32 data").into_iter().map(f64::from).collect()
}

//! Checkpoint files: what is inside them, and how they get into a burn module.
//!
//! [`Checkpoint::open`] recognises the container by its bytes (PyTorch zip, legacy pickle or
//! safetensors), lists every tensor with its shape (without reading the data), and finds nested
//! state dicts (`{"model": ..., "ema": ...}` training checkpoints). Models compare that list
//! against the shapes they expect ([`compare_shapes`]) before anything is loaded, so a wrong
//! file gives one error naming the file and the first mismatching keys. [`load_into`] then hands
//! the tensors to burn-store with the key remapping the model needs, and [`save_safetensors`]
//! writes a module in PyTorch layout and naming (the project's own format) atomically.

use burn::module::Module;
use burn::store::{
    BurnToPyTorchAdapter, KeyRemapper, ModuleSnapshot, PyTorchToBurnAdapter, PytorchStore,
    SafetensorsStore,
};
use std::collections::BTreeMap;
use std::io::Read;
use std::path::{Path, PathBuf};

/// The container format of a checkpoint file, detected from its first bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    /// `torch.save` zip archive (PyTorch >= 1.6).
    PytorchZip,
    /// Legacy `torch.save` pickle stream.
    PytorchLegacy,
    Safetensors,
}

#[derive(Debug, thiserror::Error)]
pub enum WeightsError {
    #[error("{path}: cannot read the file")]
    Io { path: PathBuf, source: std::io::Error },
    #[error("{path}: not a PyTorch checkpoint or safetensors file ({why})")]
    UnknownFormat { path: PathBuf, why: String },
    #[error("{path}: corrupt or truncated checkpoint: {why}")]
    Corrupt { path: PathBuf, why: String },
    #[error("{path}: the checkpoint does not fit {target}:\n{details}")]
    Mismatch { path: PathBuf, target: String, details: String },
    #[error("{path}: {why}")]
    Other { path: PathBuf, why: String },
}

/// One tensor of a checkpoint, described but not read.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TensorInfo {
    pub shape: Vec<usize>,
    pub dtype: String,
}

/// A checkpoint's table of contents.
#[derive(Clone, Debug)]
pub struct Checkpoint {
    pub path: PathBuf,
    pub format: Format,
    /// Key prefix of the state dict that was selected inside a nested checkpoint (`"ema"`),
    /// `None` for a plain state dict.
    pub nested_key: Option<String>,
    /// Other nested state dicts found beside the selected one.
    pub other_nested_keys: Vec<String>,
    /// Tensors of the selected state dict, keys without the nested prefix.
    pub tensors: BTreeMap<String, TensorInfo>,
    /// Safetensors `__metadata__` (empty for PyTorch files).
    pub metadata: BTreeMap<String, String>,
}

/// Nested state dicts a training checkpoint may hold, in order of preference: the EMA weights
/// are what the reference samples from.
pub const NESTED_KEYS: [&str; 4] = ["ema", "model", "state_dict", "module"];

impl Checkpoint {
    /// Opens a checkpoint; in a nested one, selects `prefer` if given, else the first of
    /// [`NESTED_KEYS`] present.
    pub fn open(path: impl AsRef<Path>, prefer: Option<&str>) -> Result<Self, WeightsError> {
        let path = path.as_ref().to_path_buf();
        let format = detect_format(&path)?;
        let (all, metadata) = match format {
            Format::Safetensors => read_safetensors_header(&path)?,
            Format::PytorchZip | Format::PytorchLegacy => (read_pytorch_index(&path)?, BTreeMap::new()),
        };
        if all.is_empty() {
            return Err(WeightsError::Corrupt { path, why: "it holds no tensors".into() });
        }
        // Nested training checkpoint: every key sits under one of a few top-level names.
        let tops: std::collections::BTreeSet<&str> =
            all.keys().map(|k| k.split('.').next().unwrap_or("")).collect();
        let nested: Vec<String> = NESTED_KEYS
            .iter()
            .filter(|n| tops.contains(**n))
            .map(|s| s.to_string())
            .collect();
        let is_nested = !nested.is_empty()
            && all.keys().all(|k| {
                let top = k.split('.').next().unwrap_or("");
                nested.iter().any(|n| n == top) || !k.contains('.')
            });
        if let Some(want) = prefer
            && (!is_nested || !nested.iter().any(|n| n == want)) {
                return Err(WeightsError::Other {
                    path,
                    why: format!("asked for the nested state dict '{want}', but the file has {}",
                        if is_nested { format!("only {nested:?}") } else { "a plain state dict".into() }),
                });
            }
        if !is_nested {
            return Ok(Self { path, format, nested_key: None, other_nested_keys: vec![], tensors: all, metadata });
        }
        let chosen = prefer.map(str::to_string).unwrap_or_else(|| nested[0].clone());
        let prefix = format!("{chosen}.");
        let tensors = all
            .iter()
            .filter_map(|(k, v)| k.strip_prefix(&prefix).map(|s| (s.to_string(), v.clone())))
            .collect();
        let other_nested_keys = nested.into_iter().filter(|n| *n != chosen).collect();
        Ok(Self { path, format, nested_key: Some(chosen), other_nested_keys, tensors, metadata })
    }

    pub fn shape(&self, key: &str) -> Option<&[usize]> {
        self.tensors.get(key).map(|t| t.shape.as_slice())
    }

    pub fn num_elements(&self) -> usize {
        self.tensors.values().map(|t| t.shape.iter().product::<usize>()).sum()
    }
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> WeightsError + '_ {
    move |source| WeightsError::Io { path: path.to_path_buf(), source }
}

/// Detects the container from the first bytes.
pub fn detect_format(path: &Path) -> Result<Format, WeightsError> {
    let mut f = std::fs::File::open(path).map_err(io_err(path))?;
    let mut head = [0u8; 9];
    let n = f.read(&mut head).map_err(io_err(path))?;
    let len = f.metadata().map_err(io_err(path))?.len();
    if n >= 4 && &head[..4] == b"PK\x03\x04" {
        return Ok(Format::PytorchZip);
    }
    if n >= 2 && head[0] == 0x80 && (2..=5).contains(&head[1]) {
        return Ok(Format::PytorchLegacy);
    }
    if n == 9 && head[8] == b'{' {
        let header_len = u64::from_le_bytes(head[..8].try_into().unwrap());
        if header_len + 8 <= len {
            return Ok(Format::Safetensors);
        }
        return Err(WeightsError::Corrupt {
            path: path.to_path_buf(),
            why: format!("safetensors header claims {header_len} bytes but the file has {len}"),
        });
    }
    Err(WeightsError::UnknownFormat {
        path: path.to_path_buf(),
        why: if len == 0 { "the file is empty".into() } else { format!("first bytes {:02x?}", &head[..n]) },
    })
}

fn read_pytorch_index(path: &Path) -> Result<BTreeMap<String, TensorInfo>, WeightsError> {
    let reader = burn::store::pytorch_reader::PytorchReader::new(path).map_err(|e| {
        WeightsError::Corrupt { path: path.to_path_buf(), why: e.to_string() }
    })?;
    Ok(reader
        .tensors()
        .iter()
        .map(|(k, t)| (k.clone(), TensorInfo { shape: t.shape().to_vec(), dtype: format!("{:?}", t.dtype()) }))
        .collect())
}

/// Tensors and `__metadata__` of a safetensors header.
type Header = (BTreeMap<String, TensorInfo>, BTreeMap<String, String>);

fn read_safetensors_header(path: &Path) -> Result<Header, WeightsError> {
    let corrupt = |why: String| WeightsError::Corrupt { path: path.to_path_buf(), why };
    let mut f = std::fs::File::open(path).map_err(io_err(path))?;
    let file_len = f.metadata().map_err(io_err(path))?.len();
    let mut len = [0u8; 8];
    f.read_exact(&mut len).map_err(io_err(path))?;
    let n = u64::from_le_bytes(len);
    if n > 100 << 20 || n + 8 > file_len {
        return Err(corrupt(format!("header length {n} does not fit a {file_len}-byte file")));
    }
    let mut buf = vec![0u8; n as usize];
    f.read_exact(&mut buf).map_err(io_err(path))?;
    let json: serde_json::Value =
        serde_json::from_slice(&buf).map_err(|e| corrupt(format!("header is not JSON: {e}")))?;
    let obj = json.as_object().ok_or_else(|| corrupt("header is not a JSON object".into()))?;
    let mut tensors = BTreeMap::new();
    let mut metadata = BTreeMap::new();
    let data_len = file_len - 8 - n;
    for (k, v) in obj {
        if k == "__metadata__" {
            if let Some(m) = v.as_object() {
                for (mk, mv) in m {
                    metadata.insert(mk.clone(), mv.as_str().unwrap_or_default().to_string());
                }
            }
            continue;
        }
        let shape: Vec<usize> = v["shape"]
            .as_array()
            .ok_or_else(|| corrupt(format!("tensor '{k}' has no shape")))?
            .iter()
            .map(|d| d.as_u64().map(|d| d as usize))
            .collect::<Option<_>>()
            .ok_or_else(|| corrupt(format!("tensor '{k}' has a malformed shape")))?;
        let end = v["data_offsets"][1].as_u64().ok_or_else(|| corrupt(format!("tensor '{k}' has no data_offsets")))?;
        if end > data_len {
            return Err(corrupt(format!("tensor '{k}' ends at byte {end} but the data section has {data_len}")));
        }
        let dtype = v["dtype"].as_str().unwrap_or("?").to_string();
        tensors.insert(k.clone(), TensorInfo { shape, dtype });
    }
    Ok((tensors, metadata))
}

/// Differences between a checkpoint and the tensors a model expects (PyTorch names and layout).
#[derive(Clone, Debug, Default)]
pub struct ShapeReport {
    /// Expected keys absent from the checkpoint.
    pub missing: Vec<String>,
    /// Checkpoint keys the model does not have.
    pub unused: Vec<String>,
    /// (key, checkpoint shape, expected shape).
    pub mismatched: Vec<(String, Vec<usize>, Vec<usize>)>,
}

impl ShapeReport {
    /// Ok when the checkpoint fits exactly; else the error naming the file and the first
    /// mismatching, missing and unused keys.
    pub fn ensure_fits(&self, ckpt: &Checkpoint, target: &str) -> Result<(), WeightsError> {
        if self.mismatched.is_empty() && self.missing.is_empty() && self.unused.is_empty() {
            return Ok(());
        }
        Err(WeightsError::Mismatch { path: ckpt.path.clone(), target: target.to_string(), details: self.describe(5) })
    }

    /// Lines of at most `limit` entries per kind, for error messages and `ims3 info`.
    pub fn describe(&self, limit: usize) -> String {
        let mut s = String::new();
        let more = |n: usize| if n > limit { format!(" (and {} more)", n - limit) } else { String::new() };
        for (k, found, want) in self.mismatched.iter().take(limit) {
            s += &format!("  shape mismatch '{k}': checkpoint {found:?}, expected {want:?}\n");
        }
        if self.mismatched.len() > limit {
            s += &format!("  ...{}\n", more(self.mismatched.len()));
        }
        if !self.missing.is_empty() {
            s += &format!("  missing: {:?}{}\n", &self.missing[..self.missing.len().min(limit)], more(self.missing.len()));
        }
        if !self.unused.is_empty() {
            s += &format!("  unused: {:?}{}\n", &self.unused[..self.unused.len().min(limit)], more(self.unused.len()));
        }
        s
    }
}

/// Compares a checkpoint's table of contents against `expected` (key -> shape). Keys for which
/// `optional(key)` is true may be missing without being reported (e.g. Difffit gammas).
pub fn compare_shapes(
    ckpt: &Checkpoint,
    expected: &BTreeMap<String, Vec<usize>>,
    optional: impl Fn(&str) -> bool,
) -> ShapeReport {
    let mut r = ShapeReport::default();
    for (k, want) in expected {
        match ckpt.tensors.get(k) {
            None if optional(k) => {}
            None => r.missing.push(k.clone()),
            Some(t) if &t.shape != want => r.mismatched.push((k.clone(), t.shape.clone(), want.clone())),
            Some(_) => {}
        }
    }
    r.unused = ckpt.tensors.keys().filter(|k| !expected.contains_key(*k)).cloned().collect();
    r
}

/// Key renames between checkpoint names (PyTorch) and module paths (burn), as regex pairs
/// applied to the checkpoint names when loading. Reversed for saving.
#[derive(Clone, Debug, Default)]
pub struct KeyMap {
    pub to_module: Vec<(String, String)>,
    pub to_checkpoint: Vec<(String, String)>,
}

impl KeyMap {
    /// From `(checkpoint regex, module path)` pairs and the reverse pairs used when saving.
    pub fn new(to_module: &[(&str, &str)], to_checkpoint: &[(&str, &str)]) -> Self {
        let own = |v: &[(&str, &str)]| v.iter().map(|(a, b)| (a.to_string(), b.to_string())).collect();
        Self { to_module: own(to_module), to_checkpoint: own(to_checkpoint) }
    }

    fn remapper(pairs: &[(String, String)]) -> KeyRemapper {
        KeyRemapper::from_patterns(pairs.iter().map(|(a, b)| (a.as_str(), b.as_str())).collect())
            .expect("static key patterns are valid regexes")
    }
}

/// The tensors a module holds, by checkpoint key (PyTorch names and layout after
/// `keys.to_checkpoint`), with their shapes: what a checkpoint for it must contain.
pub fn expected_shapes_of<M: ModuleSnapshot + Module>(module: &M, keys: &KeyMap) -> BTreeMap<String, Vec<usize>> {
    let pairs: Vec<(regex::Regex, String)> = keys
        .to_checkpoint
        .iter()
        .map(|(a, b)| (regex::Regex::new(a).expect("static key pattern"), b.clone()))
        .collect();
    module
        .collect(None, Some(Box::new(BurnToPyTorchAdapter)), true)
        .into_iter()
        .filter(|t| matches!(t.dtype, burn::tensor::DType::F32 | burn::tensor::DType::F64 | burn::tensor::DType::F16 | burn::tensor::DType::BF16))
        .map(|t| {
            let mut name = t.name.clone();
            for (re, to) in &pairs {
                name = re.replace_all(&name, to.as_str()).into_owned();
            }
            (name, t.shape.iter().copied().collect())
        })
        .collect()
}

/// Loads the tensors of `ckpt` into `module` (after the caller checked the shapes). Returns the
/// module paths that the checkpoint did not provide (left at their initial values).
pub fn load_into<M: ModuleSnapshot + Module>(
    module: &mut M,
    ckpt: &Checkpoint,
    keys: &KeyMap,
) -> Result<Vec<String>, WeightsError> {
    let path = ckpt.path.clone();
    let result = match ckpt.format {
        Format::PytorchZip | Format::PytorchLegacy => {
            let mut store = PytorchStore::from_file(&path)
                .map_indices_contiguous(false)
                .allow_partial(true)
                .validate(false)
                .remap(KeyMap::remapper(&keys.to_module));
            if let Some(top) = &ckpt.nested_key {
                store = store.with_top_level_key(top.clone());
            }
            module.load_from(&mut store).map_err(|e| WeightsError::Corrupt { path: path.clone(), why: e.to_string() })?
        }
        Format::Safetensors => {
            let mut to_module = keys.to_module.clone();
            if let Some(top) = &ckpt.nested_key {
                to_module.insert(0, (format!("^{}\\.", regex::escape(top)), String::new()));
            }
            let mut store = SafetensorsStore::from_file(&path)
                .with_from_adapter(PyTorchToBurnAdapter)
                .map_indices_contiguous(false)
                .allow_partial(true)
                .validate(false)
                .remap(KeyMap::remapper(&to_module));
            module.load_from(&mut store).map_err(|e| WeightsError::Corrupt { path: path.clone(), why: e.to_string() })?
        }
    };
    if !result.errors.is_empty() {
        let details: Vec<String> = result.errors.iter().take(5).map(|e| format!("  {e}")).collect();
        return Err(WeightsError::Mismatch { path, target: "the model".into(), details: details.join("\n") });
    }
    Ok(result.missing.into_iter().map(|(p, _)| p).collect())
}

/// Errors when burn-store left any of `left` (module paths not provided by the file) at its
/// initial value.
pub fn ensure_all_loaded(left: &[String], ckpt: &Checkpoint, target: &str) -> Result<(), WeightsError> {
    if left.is_empty() {
        return Ok(());
    }
    Err(WeightsError::Mismatch { path: ckpt.path.clone(), target: target.to_string(), details: format!("  not loaded: {left:?}") })
}

/// Writes `module` as safetensors in PyTorch naming and layout, with `metadata`, atomically
/// (temp file + rename, done by burn-store).
pub fn save_safetensors<M: ModuleSnapshot + Module>(
    module: &M,
    path: &Path,
    keys: &KeyMap,
    metadata: &BTreeMap<String, String>,
) -> Result<(), WeightsError> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(io_err(path))?;
    }
    let mut store = SafetensorsStore::from_file(path)
        .with_to_adapter(BurnToPyTorchAdapter)
        .remap(KeyMap::remapper(&keys.to_checkpoint))
        .overwrite(true);
    for (k, v) in metadata {
        store = store.metadata(k.clone(), v.clone());
    }
    module
        .save_into(&mut store)
        .map_err(|e| WeightsError::Other { path: path.to_path_buf(), why: format!("cannot save: {e}") })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rejects_garbage_and_empty_files() {
        let dir = tempfile::tempdir().unwrap();
        let empty = dir.path().join("empty.pt");
        std::fs::write(&empty, b"").unwrap();
        let e = Checkpoint::open(&empty, None).unwrap_err().to_string();
        assert!(e.contains("empty.pt") && e.contains("empty"), "{e}");
        let text = dir.path().join("notes.pt");
        std::fs::write(&text, b"hello world, not a checkpoint").unwrap();
        let e = Checkpoint::open(&text, None).unwrap_err().to_string();
        assert!(e.contains("notes.pt") && e.contains("not a PyTorch"), "{e}");
        let missing = dir.path().join("absent.pt");
        let e = Checkpoint::open(&missing, None).unwrap_err().to_string();
        assert!(e.contains("absent.pt") && e.contains("cannot read"), "{e}");
    }

    #[test]
    fn truncated_safetensors_is_corrupt() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("t.safetensors");
        let header = br#"{"w":{"dtype":"F32","shape":[4],"data_offsets":[0,16]}}"#;
        let mut bytes = (header.len() as u64).to_le_bytes().to_vec();
        bytes.extend_from_slice(header);
        bytes.extend_from_slice(&[0u8; 8]); // 8 of the 16 data bytes
        std::fs::write(&p, &bytes).unwrap();
        let e = Checkpoint::open(&p, None).unwrap_err().to_string();
        assert!(e.contains("corrupt") && e.contains("'w'"), "{e}");
        bytes.extend_from_slice(&[0u8; 8]);
        std::fs::write(&p, &bytes).unwrap();
        let c = Checkpoint::open(&p, None).unwrap();
        assert_eq!(c.shape("w"), Some(&[4usize][..]));
    }

    #[test]
    fn nested_prefix_is_selected() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("n.safetensors");
        let header = br#"{"ema.w":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},"model.w":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}}"#;
        let mut bytes = (header.len() as u64).to_le_bytes().to_vec();
        bytes.extend_from_slice(header);
        bytes.extend_from_slice(&[0u8; 8]);
        std::fs::write(&p, &bytes).unwrap();
        let c = Checkpoint::open(&p, None).unwrap();
        assert_eq!(c.nested_key.as_deref(), Some("ema"));
        assert_eq!(c.other_nested_keys, vec!["model".to_string()]);
        assert!(c.tensors.contains_key("w"));
        let m = Checkpoint::open(&p, Some("model")).unwrap();
        assert_eq!(m.nested_key.as_deref(), Some("model"));
        assert!(Checkpoint::open(&p, Some("opt")).is_err());
    }
}

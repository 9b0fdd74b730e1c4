//! Dataset specs and what a run records about the data it used.
//!
//! A spec (`datasets/<name>.toml`, embedded in the binary) lists the classes in index order with
//! their wnid and ImageNet-1K index: the order fixes the labels of the distilled set, the
//! ImageNet index is the label the DiT is conditioned on. [`scan`] checks a folder
//! `<root>/<split>/<wnid>/*` against a spec (every class present and non-empty, no stray class
//! folders) and says which layout it found: the fast.ai archive (`imagewoof2`, `imagenette2`,
//! recognised by its `noisy_*.csv`) or a subset cut from ImageNet. [`Manifest`] adds the file
//! count per class and split and a SHA-256 over every file's relative path and bytes.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

const BUILTIN: [(&str, &str); 6] = [
    ("imagewoof", include_str!("../../../datasets/imagewoof.toml")),
    ("imagenette", include_str!("../../../datasets/imagenette.toml")),
    ("imageidc", include_str!("../../../datasets/imageidc.toml")),
    ("imagenet100", include_str!("../../../datasets/imagenet100.toml")),
    ("imagenet1k", include_str!("../../../datasets/imagenet1k.toml")),
    ("fashion-mnist", include_str!("../../../datasets/fashion-mnist.toml")),
];

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClassSpec {
    pub wnid: String,
    /// Index among the 1000 ImageNet-1K classes (sorted wnids): the label the DiT is
    /// conditioned on (for Fashion-MNIST, its own label 0..9).
    pub imagenet: i64,
    pub name: String,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DatasetSpec {
    pub name: String,
    /// Name of the fast.ai archive of this subset, if there is one.
    #[serde(default)]
    pub fastai_archive: Option<String>,
    pub classes: Vec<ClassSpec>,
}

#[derive(Debug, thiserror::Error)]
pub enum DatasetError {
    #[error("unknown dataset '{0}' (known: imagewoof, imagenette, imageidc, imagenet100, imagenet1k, fashion-mnist, or a path to a spec .toml)")]
    Unknown(String),
    #[error("{path}: {why}")]
    Spec { path: String, why: String },
    #[error("{path}: missing; expected <root>/<split>/<wnid>/ image folders")]
    MissingSplit { path: PathBuf },
    #[error(
        "{path}: {files} images lie directly in the split folder, none in class folders (ILSVRC's flat val/); move each image into <split>/<wnid>/ first, \
         e.g. with the labels of LOC_val_solution.csv (the first wnid of each row) or the usual valprep.sh"
    )]
    FlatSplit { path: PathBuf, files: usize },
    #[error("{root}: does not match the {dataset} spec: {why}")]
    Mismatch { root: PathBuf, dataset: String, why: String },
    #[error("{path}: cannot read")]
    Io { path: PathBuf, source: std::io::Error },
    #[error(transparent)]
    Image(#[from] ims3_images::ImageError),
}

impl DatasetSpec {
    /// A built-in spec by name, or a spec file by path.
    pub fn get(name_or_path: &str) -> Result<Self, DatasetError> {
        if let Some((_, text)) = BUILTIN.iter().find(|(n, _)| n.eq_ignore_ascii_case(name_or_path)) {
            return Self::parse(text, name_or_path);
        }
        let p = Path::new(name_or_path);
        if p.extension().is_some_and(|e| e == "toml") {
            let text = std::fs::read_to_string(p).map_err(|e| DatasetError::Spec { path: name_or_path.into(), why: e.to_string() })?;
            return Self::parse(&text, name_or_path);
        }
        Err(DatasetError::Unknown(name_or_path.into()))
    }

    pub fn builtin_names() -> Vec<&'static str> {
        BUILTIN.iter().map(|(n, _)| *n).collect()
    }

    /// Parses and validates a spec (unique wnids and indices, indices in 0..1000).
    pub fn parse(text: &str, origin: &str) -> Result<Self, DatasetError> {
        let bad = |why: String| DatasetError::Spec { path: origin.into(), why };
        let spec: Self = toml::from_str(text).map_err(|e| bad(e.to_string()))?;
        if spec.classes.is_empty() {
            return Err(bad("no classes".into()));
        }
        let mut wnids = BTreeSet::new();
        let mut idx = BTreeSet::new();
        for c in &spec.classes {
            if !wnids.insert(&c.wnid) {
                return Err(bad(format!("wnid {} listed twice", c.wnid)));
            }
            if !(0..1000).contains(&c.imagenet) || !idx.insert(c.imagenet) {
                return Err(bad(format!("ImageNet index {} of {} is out of range or repeated", c.imagenet, c.wnid)));
            }
        }
        Ok(spec)
    }

    /// Position of the class with ImageNet index `imagenet` in this spec.
    pub fn position_of_imagenet(&self, imagenet: i64) -> Option<usize> {
        self.classes.iter().position(|c| c.imagenet == imagenet)
    }

    /// The reference's label quirk: each class's index among the *sorted* class folders.
    pub fn folder_index_labels(&self) -> Vec<i64> {
        let mut sorted: Vec<&str> = self.classes.iter().map(|c| c.wnid.as_str()).collect();
        sorted.sort();
        self.classes.iter().map(|c| sorted.iter().position(|w| *w == c.wnid).expect("present") as i64).collect()
    }
}

/// `count` of `items` drawn without replacement, in the drawn order: a shuffle from
/// `ChaCha8(seed, stream)` and its first `count`. A class's random real images use its index
/// as the stream, so a class's choice does not depend on the other classes.
pub fn seeded_choice<T: Clone>(items: &[T], count: usize, seed: u64, stream: u64) -> Vec<T> {
    use rand::SeedableRng;
    use rand::seq::SliceRandom;
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    rng.set_stream(stream);
    let mut v = items.to_vec();
    v.shuffle(&mut rng);
    v.truncate(count);
    v
}

impl DatasetSpec {
    /// SHA-256 of the class order (`wnid:imagenet` per class, one per line): two runs with the
    /// same value label their images alike.
    pub fn class_order_sha256(&self) -> String {
        let mut h = Sha256::new();
        for c in &self.classes {
            h.update(format!("{}:{}\n", c.wnid, c.imagenet).as_bytes());
        }
        h.finalize().iter().map(|b| format!("{b:02x}")).collect()
    }
}

/// How the folder was made.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Layout {
    /// fast.ai's archive (imagewoof2 / imagenette2): has `noisy_<name>.csv` at its root.
    Fastai,
    /// The classes' folders cut out of ImageNet (or any other copy without fast.ai's csv).
    ImagenetSubset,
}

impl std::fmt::Display for Layout {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Layout::Fastai => "fast.ai archive",
            Layout::ImagenetSubset => "subset cut from ImageNet",
        })
    }
}

/// One class folder of a split.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ClassFiles {
    pub wnid: String,
    pub imagenet: i64,
    pub dir: PathBuf,
    pub files: Vec<PathBuf>,
}

/// A split checked against its spec.
#[derive(Clone, Debug)]
pub struct Scanned {
    pub root: PathBuf,
    pub split: String,
    pub layout: Layout,
    /// In spec order.
    pub classes: Vec<ClassFiles>,
}

/// Detects the layout of `root`.
pub fn detect_layout(root: &Path) -> Layout {
    let fastai = std::fs::read_dir(root)
        .map(|rd| rd.flatten().any(|e| {
            let n = e.file_name().to_string_lossy().to_ascii_lowercase();
            n.starts_with("noisy_") && n.ends_with(".csv")
        }))
        .unwrap_or(false);
    if fastai { Layout::Fastai } else { Layout::ImagenetSubset }
}

/// Checks `<root>/<split>` against `spec`: every class folder present and holding images, and no
/// other folder (a stray class would silently change the label set).
pub fn scan(root: &Path, split: &str, spec: &DatasetSpec) -> Result<Scanned, DatasetError> {
    let dir = root.join(split);
    if !dir.is_dir() {
        return Err(DatasetError::MissingSplit { path: dir });
    }
    let mismatch = |why: String| DatasetError::Mismatch { root: dir.clone(), dataset: spec.name.clone(), why };
    let present: BTreeSet<String> = std::fs::read_dir(&dir)
        .map_err(|source| DatasetError::Io { path: dir.clone(), source })?
        .flatten()
        .filter(|e| e.path().is_dir())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    if present.is_empty() {
        let flat = ims3_images::list_images(&dir)?.len();
        if flat > 0 {
            return Err(DatasetError::FlatSplit { path: dir, files: flat });
        }
    }
    let wanted: BTreeSet<String> = spec.classes.iter().map(|c| c.wnid.clone()).collect();
    let missing: Vec<&String> = wanted.difference(&present).collect();
    let extra: Vec<&String> = present.difference(&wanted).collect();
    if !missing.is_empty() || !extra.is_empty() {
        let mut why = Vec::new();
        if !missing.is_empty() {
            why.push(format!("missing class folders {}", missing.iter().map(|s| s.as_str()).collect::<Vec<_>>().join(", ")));
        }
        if !extra.is_empty() {
            let shown: Vec<&str> = extra.iter().take(8).map(|s| s.as_str()).collect();
            why.push(format!("folders not in the spec {}{}", shown.join(", "), if extra.len() > 8 { format!(" (+{} more)", extra.len() - 8) } else { String::new() }));
        }
        return Err(mismatch(why.join("; ")));
    }
    let mut classes = Vec::new();
    let mut empty = Vec::new();
    for c in &spec.classes {
        let d = dir.join(&c.wnid);
        let files = ims3_images::list_images(&d)?;
        if files.is_empty() {
            empty.push(c.wnid.clone());
        }
        classes.push(ClassFiles { wnid: c.wnid.clone(), imagenet: c.imagenet, dir: d, files });
    }
    if !empty.is_empty() {
        return Err(mismatch(format!("class folders without images: {}", empty.join(", "))));
    }
    Ok(Scanned { root: root.to_path_buf(), split: split.into(), layout: detect_layout(root), classes })
}

/// What a run records about its data.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Manifest {
    pub dataset: String,
    pub root: String,
    pub layout: Layout,
    pub splits: Vec<SplitManifest>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SplitManifest {
    pub split: String,
    pub files: usize,
    /// `(wnid, files)` in spec order.
    pub per_class: Vec<(String, usize)>,
    /// SHA-256 over every file's path relative to the split folder and its bytes, in spec order
    /// then path order.
    pub sha256: String,
}

impl Manifest {
    /// Scans and hashes the given splits.
    pub fn build(root: &Path, spec: &DatasetSpec, splits: &[&str]) -> Result<Self, DatasetError> {
        let mut out = Vec::new();
        let mut layout = Layout::ImagenetSubset;
        for split in splits {
            let s = scan(root, split, spec)?;
            layout = s.layout;
            let base = root.join(split);
            let mut h = Sha256::new();
            for c in &s.classes {
                for f in &c.files {
                    let bytes = std::fs::read(f).map_err(|source| DatasetError::Io { path: f.clone(), source })?;
                    h.update(f.strip_prefix(&base).unwrap_or(f).to_string_lossy().as_bytes());
                    h.update((bytes.len() as u64).to_le_bytes());
                    h.update(&bytes);
                }
            }
            out.push(SplitManifest {
                split: split.to_string(),
                files: s.classes.iter().map(|c| c.files.len()).sum(),
                per_class: s.classes.iter().map(|c| (c.wnid.clone(), c.files.len())).collect(),
                sha256: format!("{:x}", h.finalize()),
            });
        }
        Ok(Self { dataset: spec.name.clone(), root: root.display().to_string(), layout, splits: out })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// ImageNet-1K is the sorted wnid list with index = position; every other ImageNet spec's
    /// (wnid, index) pairs are rows of it; ImageNet-100 starts with ImageIDC, in IDC's order.
    #[test]
    fn imagenet_specs_agree_with_the_1k_table() {
        let k = DatasetSpec::get("imagenet1k").unwrap();
        assert_eq!(k.classes.len(), 1000);
        assert!(k.classes.iter().enumerate().all(|(i, c)| c.imagenet == i as i64));
        assert!(k.classes.windows(2).all(|w| w[0].wnid < w[1].wnid));
        assert_eq!((k.classes[0].wnid.as_str(), k.classes[999].wnid.as_str()), ("n01440764", "n15075141"));
        for name in ["imagewoof", "imagenette", "imageidc", "imagenet100"] {
            for c in DatasetSpec::get(name).unwrap().classes {
                assert_eq!(k.classes[c.imagenet as usize].wnid, c.wnid, "{name}: {} is not ImageNet index {}", c.wnid, c.imagenet);
            }
        }
        let h = DatasetSpec::get("imagenet100").unwrap();
        assert_eq!(h.classes.len(), 100);
        let idc: Vec<String> = DatasetSpec::get("imageidc").unwrap().classes.into_iter().map(|c| c.wnid).collect();
        assert_eq!(h.classes[..10].iter().map(|c| c.wnid.clone()).collect::<Vec<_>>(), idc);
    }

    /// A flat split (ILSVRC's val/) is refused with what to do about it.
    #[test]
    fn flat_val_folder_is_refused_with_the_fix() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("val")).unwrap();
        image::RgbImage::new(2, 2).save(dir.path().join("val/ILSVRC2012_val_00000001.png")).unwrap();
        let e = scan(dir.path(), "val", &DatasetSpec::get("imagenet100").unwrap()).unwrap_err().to_string();
        assert!(e.contains("directly in the split folder") && e.contains("LOC_val_solution.csv"), "{e}");
    }

    #[test]
    fn builtin_specs_parse_and_follow_the_reference_order() {
        for name in DatasetSpec::builtin_names() {
            let s = DatasetSpec::get(name).unwrap();
            let want = match name {
                "imagenet100" => 100,
                "imagenet1k" => 1000,
                _ => 10,
            };
            assert_eq!(s.classes.len(), want, "{name}");
        }
        let woof = DatasetSpec::get("imagewoof").unwrap();
        let idx: Vec<i64> = woof.classes.iter().map(|c| c.imagenet).collect();
        assert_eq!(idx, vec![193, 182, 258, 162, 155, 167, 159, 273, 207, 229]);
        let nette = DatasetSpec::get("ImageNette").unwrap();
        assert_eq!(nette.classes.iter().map(|c| c.imagenet).collect::<Vec<_>>(), vec![0, 217, 482, 491, 497, 566, 569, 571, 574, 701]);
        // The quirk: folder order is sorted wnids, so the first ImageWoof class (n02096294) is 5.
        assert_eq!(woof.folder_index_labels(), vec![5, 4, 8, 2, 0, 3, 1, 9, 6, 7]);
        assert!(matches!(DatasetSpec::get("imagefruit"), Err(DatasetError::Unknown(_))));
        // Fashion-MNIST's ids sort in label order, so folder indices are the labels.
        let fm = DatasetSpec::get("fashion-mnist").unwrap();
        assert_eq!(fm.folder_index_labels(), (0..10).collect::<Vec<i64>>());
    }

    #[test]
    fn bad_specs_are_refused() {
        let dup = "name='x'\nclasses=[{wnid='a', imagenet=1, name='a'},{wnid='a', imagenet=2, name='b'}]";
        assert!(DatasetSpec::parse(dup, "x.toml").unwrap_err().to_string().contains("listed twice"));
        let unknown = "name='x'\ncolour='red'\nclasses=[{wnid='a', imagenet=1, name='a'}]";
        assert!(DatasetSpec::parse(unknown, "x.toml").unwrap_err().to_string().contains("colour"));
        let range = "name='x'\nclasses=[{wnid='a', imagenet=1000, name='a'}]";
        assert!(DatasetSpec::parse(range, "x.toml").unwrap_err().to_string().contains("out of range"));
    }

    fn make(root: &Path, split: &str, wnids: &[&str], per_class: usize) {
        for w in wnids {
            let d = root.join(split).join(w);
            std::fs::create_dir_all(&d).unwrap();
            for i in 0..per_class {
                std::fs::write(d.join(format!("{i}.png")), format!("{w}{i}")).unwrap();
            }
        }
    }

    #[test]
    fn scan_checks_the_folder_and_names_what_is_wrong() {
        let spec = DatasetSpec::parse("name='two'\nclasses=[{wnid='n1', imagenet=5, name='a'},{wnid='n2', imagenet=3, name='b'}]", "t").unwrap();
        let dir = tempfile::tempdir().unwrap();
        make(dir.path(), "train", &["n2", "n1"], 2);
        let s = scan(dir.path(), "train", &spec).unwrap();
        assert_eq!(s.layout, Layout::ImagenetSubset);
        assert_eq!(s.classes.iter().map(|c| c.imagenet).collect::<Vec<_>>(), vec![5, 3]);
        std::fs::write(dir.path().join("noisy_two.csv"), "").unwrap();
        assert_eq!(scan(dir.path(), "train", &spec).unwrap().layout, Layout::Fastai);
        let m1 = Manifest::build(dir.path(), &spec, &["train"]).unwrap();
        assert_eq!(m1.splits[0].per_class, vec![("n1".into(), 2), ("n2".into(), 2)]);
        std::fs::write(dir.path().join("train/n1/0.png"), "changed").unwrap();
        assert_ne!(Manifest::build(dir.path(), &spec, &["train"]).unwrap().splits[0].sha256, m1.splits[0].sha256);

        make(dir.path(), "train", &["n9"], 1);
        let e = scan(dir.path(), "train", &spec).unwrap_err().to_string();
        assert!(e.contains("folders not in the spec n9"), "{e}");
        std::fs::remove_dir_all(dir.path().join("train/n9")).unwrap();
        std::fs::remove_dir_all(dir.path().join("train/n2")).unwrap();
        let e = scan(dir.path(), "train", &spec).unwrap_err().to_string();
        assert!(e.contains("missing class folders n2"), "{e}");
        std::fs::create_dir_all(dir.path().join("train/n2")).unwrap();
        let e = scan(dir.path(), "train", &spec).unwrap_err().to_string();
        assert!(e.contains("without images: n2"), "{e}");
        assert!(matches!(scan(dir.path(), "val", &spec), Err(DatasetError::MissingSplit { .. })));
    }
}

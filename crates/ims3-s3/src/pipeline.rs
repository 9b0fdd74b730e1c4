//! The S3 stage on files: real centroids from the training folders, candidate centroids from
//! the sampled candidates, selection, and the distilled folder.
//!
//! Layout:
//! - real images: `<train_root>/<wnid>/**.{png,jpg,...}`;
//! - candidates: `<candidates>/<wnid>.safetensors`, tensor `images` [G*K, 3, H, W] float32 in
//!   [-1, 1] as decoded (unclamped), groups of K consecutive images;
//! - output: `<out>/final_distilled/train/<wnid>/NNNN.png`, `<out>/selection.json`, and
//!   `<out>/centroids.safetensors` (`real_centroids` [C, D], `candidate_centroids` [C, G, D]), so
//!   a re-selection with other alpha/beta needs neither sampling nor encoding.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use ims3_features::FeatureEncoder;
use ims3_images::{Rgb, list_images, read_rgb, resize_bilinear, write_png};
use rand::SeedableRng;
use rand::seq::SliceRandom;

use crate::{Centroids, Params, Selection, centroid};

#[derive(Debug, thiserror::Error)]
pub enum PipelineError {
    #[error("class {class}: real image folder {dir} holds no image")]
    EmptyRealClass { class: String, dir: PathBuf },
    #[error("class {class}: {path}: cannot read the candidates")]
    CandidatesIo { class: String, path: PathBuf, source: std::io::Error },
    #[error("class {class}: {path}: not a candidates file")]
    CandidatesFormat { class: String, path: PathBuf, source: safetensors::SafeTensorError },
    #[error("class {class}: {path}: {why}")]
    Candidates { class: String, path: PathBuf, why: String },
    #[error("{dir}: no <class>.safetensors candidate file")]
    NoCandidates { dir: PathBuf },
    #[error("{source_name}: no training image has label {label} (class {class})")]
    NoRealImages { source_name: String, label: u8, class: String },
    #[error("class {class}: {have} candidate images, fewer than {groups} groups x {ipc} per group")]
    TooFewCandidates { class: String, have: usize, groups: usize, ipc: usize },
    #[error(transparent)]
    Image(#[from] ims3_images::ImageError),
    #[error(transparent)]
    Select(#[from] crate::S3Error),
    #[error("{path}: cannot read or write")]
    Io { path: PathBuf, source: std::io::Error },
    #[error("{path}: not a safetensors file")]
    Format { path: PathBuf, source: safetensors::SafeTensorError },
    #[error("{path}: {why}")]
    Layout { path: PathBuf, why: String },
}

/// How the real centroids are taken (reference: up to 200 images, seed 0, 256x256 bilinear).
#[derive(Clone, Debug, serde::Serialize)]
pub struct RealOptions {
    pub max_images: usize,
    pub seed: u64,
    pub size: usize,
    pub batch: usize,
    /// Skip unreadable images (counted in the report) instead of failing.
    pub skip_unreadable: bool,
    /// Show a progress bar over the classes while encoding.
    #[serde(skip)]
    pub show_progress: bool,
}

impl Default for RealOptions {
    fn default() -> Self {
        Self { max_images: 200, seed: 0, size: 256, batch: 64, skip_unreadable: false, show_progress: false }
    }
}

/// Real centroid of one class and how many images went into it (and were skipped).
pub fn real_centroid(
    encoder: &dyn FeatureEncoder,
    class: &str,
    dir: &Path,
    opts: &RealOptions,
) -> Result<(Vec<f64>, usize, usize), PipelineError> {
    let mut paths = if dir.is_dir() { list_images(dir)? } else { vec![] };
    if paths.is_empty() {
        return Err(PipelineError::EmptyRealClass { class: class.into(), dir: dir.to_path_buf() });
    }
    if paths.len() > opts.max_images {
        // Sorted list, then a seeded shuffle (the reference shuffles filesystem order).
        paths.shuffle(&mut rand_chacha::ChaCha8Rng::seed_from_u64(opts.seed));
        paths.truncate(opts.max_images);
    }
    let mut feats = Vec::with_capacity(paths.len());
    let mut skipped = 0;
    for chunk in paths.chunks(opts.batch.max(1)) {
        let mut imgs = Vec::with_capacity(chunk.len());
        for p in chunk {
            match read_rgb(p) {
                Ok(img) => imgs.push(resize_bilinear(&img, opts.size, opts.size).map(|v| v * 2.0 - 1.0)),
                Err(_) if opts.skip_unreadable => skipped += 1,
                Err(e) => return Err(e.into()),
            }
        }
        feats.extend(encoder.encode(&imgs));
    }
    if feats.is_empty() {
        return Err(PipelineError::EmptyRealClass { class: class.into(), dir: dir.to_path_buf() });
    }
    Ok((centroid(&feats), feats.len(), skipped))
}

/// Real centroid of the images with `label` in an IDX split (Fashion-MNIST): up to
/// `max_images` of them, picked by a seeded shuffle of their indices; returns how many were used.
pub fn real_centroid_idx(encoder: &dyn FeatureEncoder, split: &ims3_images::idx::IdxSplit, label: u8, opts: &RealOptions) -> (Vec<f64>, usize) {
    let mut ids = split.of_class(label);
    if ids.len() > opts.max_images {
        ids.shuffle(&mut rand_chacha::ChaCha8Rng::seed_from_u64(opts.seed));
        ids.truncate(opts.max_images);
    }
    let mut feats = Vec::with_capacity(ids.len());
    for chunk in ids.chunks(opts.batch.max(1)) {
        let imgs: Vec<Rgb> = chunk.iter().map(|&i| split.rgb(i)).collect();
        feats.extend(encoder.encode(&imgs));
    }
    if feats.is_empty() {
        return (vec![0.0; encoder.dim()], 0);
    }
    (centroid(&feats), feats.len())
}

/// Reads `<dir>/<class>.safetensors` (`images` [N, 3, H, W]).
pub fn read_candidates(dir: &Path, class: &str) -> Result<Vec<Rgb>, PipelineError> {
    let path = dir.join(format!("{class}.safetensors"));
    let err = |why: String| PipelineError::Candidates { class: class.into(), path: path.clone(), why };
    let format = |source| PipelineError::CandidatesFormat { class: class.into(), path: path.clone(), source };
    let bytes = std::fs::read(&path).map_err(|source| PipelineError::CandidatesIo { class: class.into(), path: path.clone(), source })?;
    let st = safetensors::SafeTensors::deserialize(&bytes).map_err(format)?;
    let view = st.tensor("images").map_err(format)?;
    let shape = view.shape().to_vec();
    if shape.len() != 4 || shape[1] != 3 || view.dtype() != safetensors::Dtype::F32 {
        return Err(err(format!("'images' must be float32 [N, 3, H, W], found {:?} {:?}", view.dtype(), shape)));
    }
    let (n, h, w) = (shape[0], shape[2], shape[3]);
    let data: Vec<f32> = view.data().chunks_exact(4).map(|c| f32::from_le_bytes(c.try_into().unwrap())).collect();
    let per = 3 * h * w;
    Ok((0..n).map(|i| Rgb::new(w, h, data[i * per..(i + 1) * per].to_vec())).collect())
}

/// Writes candidates in the layout [`read_candidates`] reads, atomically.
pub fn write_candidates(dir: &Path, class: &str, images: &[Rgb]) -> Result<(), PipelineError> {
    let path = dir.join(format!("{class}.safetensors"));
    let (h, w) = images.first().map_or((0, 0), |i| (i.height, i.width));
    let data: Vec<f32> = images.iter().flat_map(|i| i.data.iter().copied()).collect();
    write_f32_tensors(&path, &[("images", vec![images.len(), 3, h, w], &data)], BTreeMap::new())
}

/// Candidate centroids of one class: G groups of `ipc` consecutive images -> [G * D].
pub fn candidate_centroids(
    encoder: &dyn FeatureEncoder,
    class: &str,
    images: &[Rgb],
    groups: usize,
    ipc: usize,
) -> Result<Vec<f64>, PipelineError> {
    if images.len() < groups * ipc || ipc == 0 {
        return Err(PipelineError::TooFewCandidates { class: class.into(), have: images.len(), groups, ipc });
    }
    let mut out = Vec::with_capacity(groups * encoder.dim());
    for g in 0..groups {
        let feats = encoder.encode(&images[g * ipc..(g + 1) * ipc]);
        out.extend(centroid(&feats));
    }
    Ok(out)
}

/// Where the real images of each class come from.
pub enum RealImages<'a> {
    /// `<root>/<class>/*` image folders (the reference's training split).
    Folders(&'a Path),
    /// An IDX split (Fashion-MNIST): `labels[i]` is the IDX label of class `i`; `name` is
    /// the folder it was read from (for messages).
    Idx { split: &'a ims3_images::idx::IdxSplit, labels: Vec<u8>, name: String },
}

/// The centroids of a whole selection problem and what went into the real ones.
pub struct EncodedCentroids {
    pub centroids: Centroids,
    pub real_images_used: Vec<usize>,
    pub real_images_skipped: Vec<usize>,
}

/// One class's work item of S3's encoding: its real centroid and the centroids of its G
/// candidate subgroups (row-major [G, D]), with how many real images went in.
#[derive(Clone, Debug, PartialEq)]
pub struct ClassCentroids {
    pub real: Vec<f64>,
    pub candidates: Vec<f64>,
    pub used: usize,
    pub skipped: usize,
}

impl ClassCentroids {
    /// Writes the item as safetensors, in float64 (so a run that reads it back selects exactly
    /// as one that kept it in memory), atomically.
    pub fn save(&self, path: &Path) -> Result<(), PipelineError> {
        let format = |source| PipelineError::Format { path: path.to_path_buf(), source };
        let (r, c): (Vec<u8>, Vec<u8>) = (self.real.iter().flat_map(|v| v.to_le_bytes()).collect(), self.candidates.iter().flat_map(|v| v.to_le_bytes()).collect());
        let views = vec![
            ("real".to_string(), safetensors::tensor::TensorView::new(safetensors::Dtype::F64, vec![self.real.len()], &r).map_err(format)?),
            ("candidates".to_string(), safetensors::tensor::TensorView::new(safetensors::Dtype::F64, vec![self.candidates.len()], &c).map_err(format)?),
        ];
        let meta: std::collections::HashMap<String, String> = [("used".to_string(), self.used.to_string()), ("skipped".to_string(), self.skipped.to_string())].into();
        let bytes = ims3_util::sorted_safetensors_header(&safetensors::serialize(views, Some(meta)).map_err(format)?)
            .map_err(|source| PipelineError::Io { path: path.to_path_buf(), source })?;
        atomic_write(path, &bytes)
    }

    /// Reads an item written by [`ClassCentroids::save`].
    pub fn load(path: &Path) -> Result<Self, PipelineError> {
        let format = |source| PipelineError::Format { path: path.to_path_buf(), source };
        let layout = |why: String| PipelineError::Layout { path: path.to_path_buf(), why };
        let bytes = std::fs::read(path).map_err(|source| PipelineError::Io { path: path.to_path_buf(), source })?;
        let (_, header) = safetensors::SafeTensors::read_metadata(&bytes).map_err(format)?;
        let meta = header.metadata().clone().unwrap_or_default();
        let count = |k: &str| meta.get(k).and_then(|v| v.parse::<usize>().ok()).ok_or_else(|| layout(format!("no '{k}' count in the header")));
        let st = safetensors::SafeTensors::deserialize(&bytes).map_err(format)?;
        let read = |name: &str| -> Result<Vec<f64>, PipelineError> {
            let v = st.tensor(name).map_err(format)?;
            if v.dtype() != safetensors::Dtype::F64 {
                return Err(layout(format!("{name} must be float64")));
            }
            Ok(v.data().chunks_exact(8).map(|c| f64::from_le_bytes(c.try_into().expect("8 bytes"))).collect())
        };
        Ok(Self { real: read("real")?, candidates: read("candidates")?, used: count("used")?, skipped: count("skipped")? })
    }
}

/// What S3 encodes: the classes in order, where their candidates and real images are, the
/// subgroup layout, how the real images are taken, and the folder of the per-class items.
pub struct EncodeSpec<'a> {
    pub classes: &'a [String],
    /// `<candidates>/<class>.safetensors`.
    pub candidates: &'a Path,
    pub real: RealImages<'a>,
    pub groups: usize,
    pub ipc: usize,
    pub opts: RealOptions,
    /// `<items>/<class>.safetensors`: one [`ClassCentroids`] per class, kept so that an
    /// interrupted or sharded encoding loses only the class it was on.
    pub items: &'a Path,
}

/// Encodes class `k` of `spec`: its real centroid and its candidate subgroups' centroids.
pub fn encode_class(encoder: &dyn FeatureEncoder, spec: &EncodeSpec, k: usize) -> Result<ClassCentroids, PipelineError> {
    let class = &spec.classes[k];
    let (real, used, skipped) = match &spec.real {
        RealImages::Idx { split, labels, name } => {
            let label = labels[k];
            let (r, n) = real_centroid_idx(encoder, split, label, &spec.opts);
            if n == 0 {
                return Err(PipelineError::NoRealImages { source_name: name.clone(), label, class: class.clone() });
            }
            (r, n, 0)
        }
        RealImages::Folders(root) => real_centroid(encoder, class, &root.join(class), &spec.opts)?,
    };
    tracing::info!(class, used, skipped, "real centroid");
    let images = read_candidates(spec.candidates, class)?;
    let candidates = candidate_centroids(encoder, class, &images, spec.groups, spec.ipc)?;
    Ok(ClassCentroids { real, candidates, used, skipped })
}

/// Encodes every class `shard` owns whose item is not in `spec.items` yet (one work item per
/// class, each a function of the class alone). Returns the whole problem once every class's
/// item exists, `None` while some are missing (another shard's).
pub fn encode_centroids(encoder: &dyn FeatureEncoder, spec: &EncodeSpec, shard: ims3_util::Shard) -> Result<Option<EncodedCentroids>, PipelineError> {
    let item = |class: &str| spec.items.join(format!("{class}.safetensors"));
    let todo: Vec<usize> = (0..spec.classes.len()).filter(|&k| shard.owns(k) && !item(&spec.classes[k]).is_file()).collect();
    let pb = ims3_util::progress_bar(todo.len() as u64, "encode classes", spec.opts.show_progress);
    for &k in &todo {
        encode_class(encoder, spec, k)?.save(&item(&spec.classes[k]))?;
        pb.inc(1);
    }
    pb.finish_and_clear();
    if spec.classes.iter().any(|c| !item(c).is_file()) {
        return Ok(None);
    }
    let items: Vec<ClassCentroids> = spec.classes.iter().map(|c| ClassCentroids::load(&item(c))).collect::<Result<_, _>>()?;
    Ok(Some(EncodedCentroids {
        centroids: Centroids { dim: encoder.dim(), candidates: items.iter().map(|i| i.candidates.clone()).collect(), real: items.iter().map(|i| i.real.clone()).collect() },
        real_images_used: items.iter().map(|i| i.used).collect(),
        real_images_skipped: items.iter().map(|i| i.skipped).collect(),
    }))
}

/// The number of candidate images in `<dir>/<class>.safetensors`, from its header alone.
pub fn candidate_count(dir: &Path, class: &str) -> Result<usize, PipelineError> {
    use std::io::Read;
    let path = dir.join(format!("{class}.safetensors"));
    let io = |source| PipelineError::CandidatesIo { class: class.into(), path: path.clone(), source };
    let bad = |why: String| PipelineError::Candidates { class: class.into(), path: path.clone(), why };
    let mut f = std::fs::File::open(&path).map_err(io)?;
    let mut len = [0u8; 8];
    f.read_exact(&mut len).map_err(io)?;
    let n = u64::from_le_bytes(len);
    if n > 100_000_000 {
        return Err(bad(format!("header of {n} bytes")));
    }
    let mut header = vec![0u8; n as usize];
    f.read_exact(&mut header).map_err(io)?;
    let v: serde_json::Value = serde_json::from_slice(&header).map_err(|e| bad(e.to_string()))?;
    v["images"]["shape"][0].as_u64().map(|n| n as usize).ok_or_else(|| bad("no 'images' tensor".into()))
}

/// The class ids of a candidates folder: its `<class>.safetensors` files' stems, sorted.
pub fn candidate_classes(dir: &Path) -> Result<Vec<String>, PipelineError> {
    let io = |source| PipelineError::Io { path: dir.to_path_buf(), source };
    let mut classes = Vec::new();
    for e in std::fs::read_dir(dir).map_err(io)? {
        let p = e.map_err(io)?.path();
        if p.extension().is_some_and(|x| x == "safetensors") {
            classes.push(p.file_stem().unwrap_or_default().to_string_lossy().into_owned());
        }
    }
    classes.sort();
    if classes.is_empty() {
        return Err(PipelineError::NoCandidates { dir: dir.to_path_buf() });
    }
    Ok(classes)
}

fn write_f32_tensors(
    path: &Path,
    tensors: &[(&str, Vec<usize>, &[f32])],
    metadata: BTreeMap<String, String>,
) -> Result<(), PipelineError> {
    let format = |source| PipelineError::Format { path: path.to_path_buf(), source };
    let bytes: Vec<Vec<u8>> = tensors.iter().map(|(_, _, d)| d.iter().flat_map(|v| v.to_le_bytes()).collect()).collect();
    let views: Vec<(String, safetensors::tensor::TensorView)> = tensors
        .iter()
        .zip(&bytes)
        .map(|((name, shape, _), b)| {
            safetensors::tensor::TensorView::new(safetensors::Dtype::F32, shape.clone(), b)
                .map(|v| (name.to_string(), v))
                .map_err(format)
        })
        .collect::<Result<_, _>>()?;
    let meta: std::collections::HashMap<String, String> = metadata.into_iter().collect();
    let bytes = ims3_util::sorted_safetensors_header(&safetensors::serialize(views, Some(meta)).map_err(format)?)
        .map_err(|source| PipelineError::Io { path: path.to_path_buf(), source })?;
    atomic_write(path, &bytes)
}

/// [`ims3_util::atomic_write`] with this module's error.
fn atomic_write(path: &Path, bytes: &[u8]) -> Result<(), PipelineError> {
    ims3_util::atomic_write(path, bytes).map_err(|source| PipelineError::Io { path: path.to_path_buf(), source })
}

/// Saves the centroids in the fixtures' `s3` layout.
pub fn save_centroids(path: &Path, c: &Centroids) -> Result<(), PipelineError> {
    let classes = c.classes();
    let groups = c.candidates.first().map_or(0, |v| v.len() / c.dim.max(1));
    let real: Vec<f32> = c.real.iter().flatten().map(|&v| v as f32).collect();
    let cand: Vec<f32> = c.candidates.iter().flatten().map(|&v| v as f32).collect();
    write_f32_tensors(
        path,
        &[("real_centroids", vec![classes, c.dim], &real), ("candidate_centroids", vec![classes, groups, c.dim], &cand)],
        BTreeMap::new(),
    )
}

/// Reads centroids saved by [`save_centroids`] (or an `s3` fixture's `io.safetensors`).
pub fn load_centroids(path: &Path) -> Result<Centroids, PipelineError> {
    let layout = |why: String| PipelineError::Layout { path: path.to_path_buf(), why };
    let format = |source| PipelineError::Format { path: path.to_path_buf(), source };
    let bytes = std::fs::read(path).map_err(|source| PipelineError::Io { path: path.to_path_buf(), source })?;
    let st = safetensors::SafeTensors::deserialize(&bytes).map_err(format)?;
    let read = |name: &str| -> Result<(Vec<usize>, Vec<f64>), PipelineError> {
        let v = st.tensor(name).map_err(format)?;
        if v.dtype() != safetensors::Dtype::F32 {
            return Err(layout(format!("{name} must be float32")));
        }
        let data = v.data().chunks_exact(4).map(|c| f32::from_le_bytes(c.try_into().unwrap()) as f64).collect();
        Ok((v.shape().to_vec(), data))
    };
    let (rs, real) = read("real_centroids")?;
    let (cs, cand) = read("candidate_centroids")?;
    if rs.len() != 2 || cs.len() != 3 || rs[0] != cs[0] || rs[1] != cs[2] {
        return Err(layout(format!("real_centroids {rs:?} and candidate_centroids {cs:?} do not agree ([C, D] and [C, G, D])")));
    }
    let (c, g, d) = (cs[0], cs[1], cs[2]);
    Ok(Centroids {
        dim: d,
        candidates: (0..c).map(|i| cand[i * g * d..(i + 1) * g * d].to_vec()).collect(),
        real: (0..c).map(|i| real[i * d..(i + 1) * d].to_vec()).collect(),
    })
}

/// `selection.json`: what was chosen, why, and from what.
#[derive(Clone, Debug, serde::Serialize)]
pub struct Report {
    pub classes: Vec<String>,
    pub encoder: String,
    pub params: Params,
    pub groups: usize,
    pub ipc: usize,
    pub real_images_used: Vec<usize>,
    pub real_images_skipped: Vec<usize>,
    #[serde(flatten)]
    pub selection: Selection,
}

/// Writes the selected subgroups as `final_distilled/train/<wnid>/NNNN.png` (values mapped
/// from [-1, 1] and clamped, as `save_image(normalize=True, value_range=(-1, 1))`).
/// Each class's candidates are read from `candidates` in turn (never all at once).
pub fn write_distilled(
    out: &Path,
    classes: &[String],
    candidates: &Path,
    selection: &Selection,
    ipc: usize,
) -> Result<(), PipelineError> {
    for (i, class) in classes.iter().enumerate() {
        let g = selection.selected[i];
        let dir = out.join("final_distilled/train").join(class);
        let images = read_candidates(candidates, class)?;
        for (k, img) in images[g * ipc..(g + 1) * ipc].iter().enumerate() {
            write_png(&dir.join(format!("{k:04}.png")), &img.clone().map(|v| (v + 1.0) * 0.5))?;
        }
    }
    Ok(())
}

/// Writes `selection.json` atomically.
pub fn write_report(out: &Path, report: &Report) -> Result<(), PipelineError> {
    let json = serde_json::to_vec_pretty(report).expect("report serialises");
    atomic_write(&out.join("selection.json"), &json)
}

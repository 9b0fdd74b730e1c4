//! The latent cache: a dataset folder encoded once through the VAE, so fine-tuning does not
//! re-encode every image at every step.
//!
//! Each image goes through ADM's `center_crop_arr` to `image_size`, and is encoded as it is and
//! horizontally flipped (the reference flips at random each step), keeping the posterior's mean
//! and std, unscaled. A training step then draws `latent = (mean + std * noise) * 0.18215` as
//! the reference does. The file records the VAE config, the image size and a SHA-256 over every
//! input file's path and bytes; [`LatentCache::load_or_build`] rebuilds when any of them
//! changed.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use burn::prelude::*;
use ims3_images::pil::{center_crop_arr, read_rgb8};
use sha2::{Digest, Sha256};

use crate::model::AutoencoderKL;

/// One class folder and the label its images get (the true ImageNet index for DiT).
#[derive(Clone, Debug)]
pub struct ClassFolder {
    pub label: i64,
    pub dir: PathBuf,
}

/// Encoded dataset: `mean`/`std` are [N, 2 (plain, flipped), C, h, w].
#[derive(Clone, Debug)]
pub struct LatentCache {
    pub labels: Vec<i64>,
    pub files: Vec<String>,
    pub shape: [usize; 3],
    pub mean: Vec<f32>,
    pub std: Vec<f32>,
    pub inputs_hash: String,
    pub skipped: Vec<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum CacheError {
    #[error(transparent)]
    Image(#[from] ims3_images::ImageError),
    #[error("{path}: cannot read or write")]
    Io { path: PathBuf, source: std::io::Error },
    #[error("{path}: not a latent cache")]
    Format { path: PathBuf, source: safetensors::SafeTensorError },
    #[error("class folder {0} holds no image")]
    EmptyClass(PathBuf),
}

/// Options of the encoding pass.
#[derive(Clone, Debug)]
pub struct CacheOptions {
    pub image_size: usize,
    pub batch: usize,
    /// Skip unreadable images (listed in the cache) instead of failing on the first.
    pub skip_unreadable: bool,
    pub show_progress: bool,
}

impl Default for CacheOptions {
    fn default() -> Self {
        Self { image_size: 256, batch: 16, skip_unreadable: false, show_progress: true }
    }
}

/// SHA-256 over the sorted (relative path, bytes) of every input, plus the settings string.
pub fn inputs_hash(classes: &[ClassFolder], settings: &str) -> Result<(String, Vec<(i64, PathBuf)>), CacheError> {
    let mut h = Sha256::new();
    h.update(settings.as_bytes());
    let mut files = Vec::new();
    for class in classes {
        let list = ims3_images::list_images(&class.dir)?;
        if list.is_empty() {
            return Err(CacheError::EmptyClass(class.dir.clone()));
        }
        for p in list {
            let bytes = std::fs::read(&p).map_err(|source| CacheError::Io { path: p.clone(), source })?;
            h.update(class.label.to_le_bytes());
            h.update(p.strip_prefix(&class.dir).unwrap_or(&p).to_string_lossy().as_bytes());
            h.update((bytes.len() as u64).to_le_bytes());
            h.update(&bytes);
            files.push((class.label, p));
        }
    }
    Ok((format!("{:x}", h.finalize()), files))
}

impl LatentCache {
    /// Encodes every image of `classes` (batched, with a progress bar).
    pub fn build(vae: &AutoencoderKL, classes: &[ClassFolder], settings: &str, opts: &CacheOptions, device: &Device) -> Result<Self, CacheError> {
        let (hash, files) = inputs_hash(classes, settings)?;
        let pb = ims3_util::progress_bar(files.len() as u64, "vae-encode", opts.show_progress);
        let s = opts.image_size;
        let (mut labels, mut names, mut mean, mut std, mut skipped) = (vec![], vec![], vec![], vec![], vec![]);
        let mut shape = [0usize; 3];
        for chunk in files.chunks(opts.batch.max(1)) {
            let mut pixels: Vec<f32> = Vec::with_capacity(chunk.len() * 2 * 3 * s * s);
            let mut kept = 0;
            for (label, path) in chunk {
                match read_rgb8(path) {
                    Ok(img) => {
                        let img = center_crop_arr(&img, s);
                        pixels.extend(img.to_signed_planar().data);
                        pixels.extend(img.flip_horizontal().to_signed_planar().data);
                        labels.push(*label);
                        names.push(path.to_string_lossy().into_owned());
                        kept += 1;
                    }
                    Err(_) if opts.skip_unreadable => skipped.push(path.to_string_lossy().into_owned()),
                    Err(e) => return Err(e.into()),
                }
            }
            if kept > 0 {
                shape = encode_into(vae, &pixels, [2 * kept, 3, s, s], &mut mean, &mut std, device);
            }
            pb.inc(chunk.len() as u64);
        }
        pb.finish_and_clear();
        Ok(Self { labels, files: names, shape, mean, std, inputs_hash: hash, skipped })
    }

    /// Encodes images held in memory (e.g. an IDX split), each as it is and flipped,
    /// `opts.batch` at a time; `labels` has one label per image, `source` names them (item `i`
    /// is `<source>#<i>`) and `inputs_hash` identifies them.
    pub fn encode_images(
        vae: &AutoencoderKL,
        images: &crate::ImageSet,
        labels: Vec<i64>,
        source: &str,
        inputs_hash: String,
        opts: &CacheOptions,
        device: &Device,
    ) -> Self {
        let [c, h, w] = images.shape;
        let per = c * h * w;
        let n = labels.len();
        assert_eq!(images.len(), n, "encode_images: one label per image");
        let pb = ims3_util::progress_bar(n as u64, "vae-encode", opts.show_progress);
        let (mut mean, mut std, mut shape) = (vec![], vec![], [0usize; 3]);
        for chunk in images.values.chunks(opts.batch.max(1) * per) {
            let b = chunk.len() / per;
            let mut pixels = Vec::with_capacity(2 * chunk.len());
            for item in chunk.chunks(per) {
                pixels.extend_from_slice(item);
                for row in item.chunks(w) {
                    pixels.extend(row.iter().rev());
                }
            }
            shape = encode_into(vae, &pixels, [2 * b, c, h, w], &mut mean, &mut std, device);
            pb.inc(b as u64);
        }
        pb.finish_and_clear();
        let files = (0..n).map(|i| format!("{source}#{i}")).collect();
        Self { labels, files, shape, mean, std, inputs_hash, skipped: vec![] }
    }

    pub fn len(&self) -> usize {
        self.labels.len()
    }

    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }

    /// The scaled latent DiT trains on: `(mean + std * noise) * scaling_factor` for item `i`,
    /// plain or flipped. `noise` has the latent's shape.
    pub fn sample(&self, i: usize, flipped: bool, noise: &[f32], scaling_factor: f64) -> Vec<f32> {
        let n = self.shape.iter().product::<usize>();
        let at = (2 * i + usize::from(flipped)) * n;
        (0..n).map(|k| ((self.mean[at + k] + self.std[at + k] * noise[k]) as f64 * scaling_factor) as f32).collect()
    }

    /// Writes the cache as safetensors, atomically.
    pub fn save(&self, path: &Path, settings: &str) -> Result<(), CacheError> {
        let format = |source| CacheError::Format { path: path.to_path_buf(), source };
        let [c, h, w] = self.shape;
        let n = self.len();
        let to_bytes = |v: &[f32]| v.iter().flat_map(|x| x.to_le_bytes()).collect::<Vec<u8>>();
        let (mb, sb) = (to_bytes(&self.mean), to_bytes(&self.std));
        let lb: Vec<u8> = self.labels.iter().flat_map(|x| x.to_le_bytes()).collect();
        let views = vec![
            ("mean".to_string(), safetensors::tensor::TensorView::new(safetensors::Dtype::F32, vec![n, 2, c, h, w], &mb).map_err(format)?),
            ("std".to_string(), safetensors::tensor::TensorView::new(safetensors::Dtype::F32, vec![n, 2, c, h, w], &sb).map_err(format)?),
            ("labels".to_string(), safetensors::tensor::TensorView::new(safetensors::Dtype::I64, vec![n], &lb).map_err(format)?),
        ];
        let mut meta = std::collections::HashMap::new();
        meta.insert("ims3.kind".to_string(), "latent-cache".to_string());
        meta.insert("inputs_hash".to_string(), self.inputs_hash.clone());
        meta.insert("settings".to_string(), settings.to_string());
        meta.insert("files".to_string(), serde_json::to_string(&self.files).expect("json"));
        meta.insert("skipped".to_string(), serde_json::to_string(&self.skipped).expect("json"));
        let bytes = safetensors::serialize(views, Some(meta)).map_err(format)?;
        let bytes = ims3_util::sorted_safetensors_header(&bytes).map_err(|source| CacheError::Io { path: path.to_path_buf(), source })?;
        ims3_util::atomic_write(path, &bytes).map_err(|source| CacheError::Io { path: path.to_path_buf(), source })
    }

    /// Reads a cache; `None` if it was built from other inputs or settings.
    pub fn load_if_valid(path: &Path, inputs_hash: &str, settings: &str) -> Result<Option<Self>, CacheError> {
        let format = |source| CacheError::Format { path: path.to_path_buf(), source };
        let bytes = std::fs::read(path).map_err(|source| CacheError::Io { path: path.to_path_buf(), source })?;
        let (_, header) = safetensors::SafeTensors::read_metadata(&bytes).map_err(format)?;
        let meta: BTreeMap<String, String> = header.metadata().clone().unwrap_or_default().into_iter().collect();
        if meta.get("inputs_hash").map(String::as_str) != Some(inputs_hash) || meta.get("settings").map(String::as_str) != Some(settings) {
            return Ok(None);
        }
        let st = safetensors::SafeTensors::deserialize(&bytes).map_err(format)?;
        let f32s = |name: &str| -> Result<(Vec<usize>, Vec<f32>), CacheError> {
            let v = st.tensor(name).map_err(format)?;
            Ok((v.shape().to_vec(), v.data().chunks_exact(4).map(|c| f32::from_le_bytes(c.try_into().unwrap())).collect()))
        };
        let (shape, mean) = f32s("mean")?;
        let (_, std) = f32s("std")?;
        let labels = st
            .tensor("labels")
            .map_err(format)?
            .data()
            .chunks_exact(8)
            .map(|c| i64::from_le_bytes(c.try_into().unwrap()))
            .collect();
        let parse = |k: &str| serde_json::from_str::<Vec<String>>(meta.get(k).map(String::as_str).unwrap_or("[]")).unwrap_or_default();
        Ok(Some(Self {
            labels,
            files: parse("files"),
            shape: [shape[2], shape[3], shape[4]],
            mean,
            std,
            inputs_hash: inputs_hash.to_string(),
            skipped: parse("skipped"),
        }))
    }

    /// The cache at `path` if it matches the inputs, else a fresh encoding written there.
    /// Returns whether it was rebuilt.
    pub fn load_or_build(
        path: &Path,
        vae: &AutoencoderKL,
        vae_config: &crate::VaeConfig,
        classes: &[ClassFolder],
        opts: &CacheOptions,
        device: &Device,
    ) -> Result<(Self, bool), CacheError> {
        let settings = format!("{vae_config:?};size={}", opts.image_size);
        if path.is_file() {
            let (hash, _) = inputs_hash(classes, &settings)?;
            if let Some(c) = Self::load_if_valid(path, &hash, &settings)? {
                return Ok((c, false));
            }
            tracing::info!(path = %path.display(), "latent cache is stale: inputs or settings changed; rebuilding");
        }
        let cache = Self::build(vae, classes, &settings, opts, device)?;
        cache.save(path, &settings)?;
        Ok((cache, true))
    }
}

/// Encodes `pixels` ([N, C, H, W]) and appends the posterior's mean and std; returns the shape
/// of one latent.
fn encode_into(vae: &AutoencoderKL, pixels: &[f32], dims: [usize; 4], mean: &mut Vec<f32>, std: &mut Vec<f32>, device: &Device) -> [usize; 3] {
    let x = Tensor::<1>::from_floats(pixels, device).reshape(dims);
    let post = vae.encode(x);
    let [_, c, h, w] = post.mean.dims();
    mean.extend(post.mean.into_data().convert::<f32>().try_to_vec::<f32>().expect("f32"));
    std.extend(post.std.into_data().convert::<f32>().try_to_vec::<f32>().expect("f32"));
    [c, h, w]
}

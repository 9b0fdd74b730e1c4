//! Labelled image sets: class folders read in the dataset spec's class order.

use ims3_images::pil::Rgb8;

use crate::EvalError;

/// Images with labels `0..classes` (spec order).
#[derive(Clone, Debug, Default)]
pub struct ImageSet {
    pub images: Vec<Rgb8>,
    pub labels: Vec<usize>,
    pub classes: Vec<String>,
}

impl ImageSet {
    /// SHA-256 over the set's classes, labels and pixels, in order: two sets with the same
    /// value train alike.
    pub fn sha256(&self) -> String {
        use sha2::{Digest, Sha256};
        let mut h = Sha256::new();
        for c in &self.classes {
            h.update(c.as_bytes());
            h.update([0]);
        }
        for (img, &label) in self.images.iter().zip(&self.labels) {
            h.update((label as u64).to_le_bytes());
            h.update((img.width as u64).to_le_bytes());
            h.update((img.height as u64).to_le_bytes());
            h.update(&img.data);
        }
        h.finalize().iter().map(|b| format!("{b:02x}")).collect()
    }

    /// Reads `<root>/<class>/*` for each class name in order; a missing or empty class folder
    /// is an error naming it.
    pub fn read(root: &std::path::Path, classes: &[String]) -> Result<Self, EvalError> {
        let mut set = ImageSet { classes: classes.to_vec(), ..Default::default() };
        let mut missing = Vec::new();
        let mut empty = Vec::new();
        for (k, c) in classes.iter().enumerate() {
            let dir = root.join(c);
            if !dir.is_dir() {
                missing.push(c.clone());
                continue;
            }
            let files = ims3_images::list_images(&dir)?;
            if files.is_empty() {
                empty.push(c.clone());
            }
            for f in files {
                set.images.push(ims3_images::pil::read_rgb8(&f)?);
                set.labels.push(k);
            }
        }
        if !missing.is_empty() || !empty.is_empty() {
            return Err(EvalError::Classes { root: root.to_path_buf(), missing, empty });
        }
        let extra: Vec<String> = std::fs::read_dir(root)
            .map_err(|source| EvalError::ReadDir { root: root.to_path_buf(), source })?
            .flatten()
            .filter(|e| e.path().is_dir())
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| !classes.contains(n))
            .collect();
        if !extra.is_empty() {
            return Err(EvalError::ExtraClasses { root: root.to_path_buf(), extra });
        }
        Ok(set)
    }

    pub fn len(&self) -> usize {
        self.labels.len()
    }

    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }
}


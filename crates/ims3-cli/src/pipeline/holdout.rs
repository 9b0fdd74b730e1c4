//! The small-image job's data: the real training split cut, once and seeded, into the parts
//! the stages see (`<run>/data/`):
//!
//! ```text
//! validation/<class>/NNNN.png   `validation_per_class` images of each class, held out: every
//!                               choice is made on them, the test split is only read for the table
//! fit/{train,t10k}-*            the rest of the training split (what the random real subset, S3's
//!                               real centroids and the report's real features draw from; the
//!                               evaluation normalises with its statistics) and the test split
//! finetune/train-*              `finetune_per_class` images of each class of `fit`: the IM
//!                               fine-tuning set (ImageWoof's size, ~900 per class)
//! ```
//!
//! Each class's choice is a [`ims3_datasets::seeded_choice`] with the class's position as the
//! stream, so it does not depend on the other classes; each part keeps the file order.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, ensure};
use ims3_images::idx::IdxSplit;

/// Seeds of the two draws, apart from the random real subset's.
const VALIDATION_SALT: u64 = 0x0076_a11d;
const FINETUNE_SALT: u64 = 0x00f1_7e00;

/// How the training split is cut (the recipe's `[data]`).
#[derive(Clone, Copy, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Holdout {
    /// Training images per class held out as the validation split.
    pub validation_per_class: usize,
    /// Images per class of the rest that form the IM fine-tuning set.
    pub finetune_per_class: usize,
}

/// The folders of the cut data under `<run>/data`.
pub struct DataDirs {
    pub fit: PathBuf,
    pub finetune: PathBuf,
    pub validation: PathBuf,
}

impl DataDirs {
    pub fn under(run_dir: &Path) -> Self {
        let d = run_dir.join("data");
        Self { fit: d.join("fit"), finetune: d.join("finetune"), validation: d.join("validation") }
    }
}

/// Indices of the training split per part: (fit, finetune, validation), each ascending.
pub fn cut(train: &IdxSplit, classes: &[(String, u8)], h: &Holdout, seed: u64, source: &Path) -> Result<(Vec<usize>, Vec<usize>, Vec<usize>)> {
    let (mut fit, mut finetune, mut validation) = (Vec::new(), Vec::new(), Vec::new());
    for (k, (name, label)) in classes.iter().enumerate() {
        let ids = train.of_class(*label);
        ensure!(
            ids.len() >= h.validation_per_class + h.finetune_per_class,
            "{}: class {name} has {} training images, fewer than validation_per_class {} + finetune_per_class {}",
            source.display(),
            ids.len(),
            h.validation_per_class,
            h.finetune_per_class
        );
        let mut val = ims3_datasets::seeded_choice(&ids, h.validation_per_class, seed ^ VALIDATION_SALT, k as u64);
        val.sort_unstable();
        let rest: Vec<usize> = ids.iter().copied().filter(|i| val.binary_search(i).is_err()).collect();
        finetune.extend(ims3_datasets::seeded_choice(&rest, h.finetune_per_class, seed ^ FINETUNE_SALT, k as u64));
        fit.extend(rest);
        validation.extend(val);
    }
    for v in [&mut fit, &mut finetune, &mut validation] {
        v.sort_unstable();
    }
    Ok((fit, finetune, validation))
}

/// Writes `<run>/data` from the IDX folder `idx` (each part atomically: a temporary folder
/// renamed into place).
pub fn write(idx: &Path, classes: &[(String, u8)], h: &Holdout, seed: u64, dirs: &DataDirs) -> Result<()> {
    let train = IdxSplit::read(idx, "train")?;
    let test = IdxSplit::read(idx, "t10k")?;
    let (fit, finetune, validation) = cut(&train, classes, h, seed, idx)?;
    let into_place = |dst: &Path, fill: &dyn Fn(&Path) -> Result<()>| -> Result<()> {
        let tmp = dst.with_extension("tmp");
        if tmp.exists() {
            std::fs::remove_dir_all(&tmp)?;
        }
        std::fs::create_dir_all(&tmp)?;
        fill(&tmp)?;
        if dst.exists() {
            std::fs::remove_dir_all(dst)?;
        }
        std::fs::rename(&tmp, dst).with_context(|| format!("{}: cannot move into place", dst.display()))
    };
    into_place(&dirs.fit, &|d| {
        train.subset(&fit).write(d, "train")?;
        Ok(test.write(d, "t10k")?)
    })?;
    into_place(&dirs.finetune, &|d| Ok(train.subset(&finetune).write(d, "train")?))?;
    into_place(&dirs.validation, &|d| {
        for (name, label) in classes {
            let mine: Vec<usize> = validation.iter().copied().filter(|&i| train.labels[i] == *label).collect();
            for (j, &i) in mine.iter().enumerate() {
                ims3_images::write_png(&d.join(name).join(format!("{j:04}.png")), &train.rgb(i).map(|v| (v + 1.0) * 0.5))?;
            }
        }
        Ok(())
    })?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn split(labels: Vec<u8>) -> IdxSplit {
        IdxSplit { pixels: (0..labels.len()).map(|i| i as u8).collect(), labels, height: 1, width: 1 }
    }

    #[test]
    fn parts_are_disjoint_stratified_and_seeded() {
        let labels: Vec<u8> = (0..60).map(|i| (i % 3) as u8).collect();
        let train = split(labels.clone());
        let classes: Vec<(String, u8)> = (0..3).map(|c| (format!("c{c}"), c as u8)).collect();
        let h = Holdout { validation_per_class: 4, finetune_per_class: 5 };
        let (fit, ft, val) = cut(&train, &classes, &h, 7, Path::new("x")).unwrap();
        assert_eq!((fit.len(), ft.len(), val.len()), (48, 15, 12));
        for c in 0..3u8 {
            assert_eq!(val.iter().filter(|&&i| labels[i] == c).count(), 4);
            assert_eq!(ft.iter().filter(|&&i| labels[i] == c).count(), 5);
        }
        assert!(val.iter().all(|i| fit.binary_search(i).is_err()), "validation leaks into fit");
        assert!(ft.iter().all(|i| fit.binary_search(i).is_ok()), "finetune is drawn from fit");
        assert!(fit.windows(2).all(|w| w[0] < w[1]));
        assert_eq!(cut(&train, &classes, &h, 7, Path::new("x")).unwrap(), (fit.clone(), ft.clone(), val.clone()));
        assert_ne!(cut(&train, &classes, &h, 8, Path::new("x")).unwrap().2, val);
        let e = cut(&train, &classes, &Holdout { validation_per_class: 15, finetune_per_class: 6 }, 7, Path::new("idx/")).unwrap_err();
        assert!(e.to_string().contains("idx/: class c0 has 20 training images"), "{e}");
    }
}
